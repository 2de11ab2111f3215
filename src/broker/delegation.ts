/**
 * Delegation: a planner hands a worker a slice of its task, by OAuth 2.0 Token
 * Exchange (RFC 8693). The planner's task token is the `subject_token`, the
 * worker's identity token the `actor_token`; the result is a child task and
 * its token, whose `act` claim names the worker with every earlier actor
 * nested, and whose `sub` is the identity the run began with (RFC 8693 §4.1).
 *
 * A delegation only narrows (`attenuate`: child scopes ⊆ what the parent holds
 * now, expiry ≤ the parent's, depth ≤ `delegation.maxDepth`), and policy
 * decides it twice: the delegator may `delegate` this slice
 * (`context.delegationDepth` is the child's depth), and the worker may hold
 * each scope, decided as its own grant at that depth. Every refusal is whole,
 * audited with its stable code, and nothing is cut silently.
 */
import { auditActor, type AuditLog } from '../audit/log.js';
import type { Clock } from '../core/clock.js';
import { parseDurationSeconds } from '../core/config.js';
import { WritError, type WritErrorCode } from '../core/errors.js';
import { newId } from '../core/ids.js';
import { attenuate, formatScope, formatScopeClaim, parseScopeClaim } from '../core/scope.js';
import type { Identity, Scope, Task } from '../core/types.js';
import { keptScopes, type NarrowingList } from '../enforce/narrowing-list.js';
import type { EventBus } from '../events/bus.js';
import { identityInactiveReason } from '../identity/registry.js';
import type { PolicyEngine } from '../policy/engine.js';
import { observeScopes, type Observations } from '../policy/observations.js';
import type { Store } from '../store/store.js';
import { MAX_TOKEN_LENGTH } from '../tokens/jwt.js';
import type { KeyRing } from '../tokens/key-ring.js';
import { mintTaskToken, TASK_TOKEN_TYP, type TaskRun } from '../tokens/task-token.js';
import { decideGrant, peekTyp, tokenDigest, type Broker, type Credentials } from './broker.js';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const SUBJECT_TOKEN_TYPES = new Set([ACCESS_TOKEN_TYPE, JWT_TYPE]);
const ACTOR_TOKEN_TYPES = new Set([JWT_TYPE, ID_TOKEN_TYPE, ACCESS_TOKEN_TYPE]);
const MAX_SCOPES = 32;
const MAX_MAY_ACT = 8;
const PLAIN_TEXT = /^[^\p{Cc}\p{Cf}\p{Cs}]+$/u;

/** The RFC 8693 §2.2.1 response (with the child task's id, which RFC 6749 §5.1 lets a server add). */
export interface TokenExchangeResponse {
  readonly access_token: string;
  readonly issued_token_type: typeof ACCESS_TOKEN_TYPE;
  readonly token_type: 'Bearer';
  readonly expires_in: number;
  readonly scope: string;
  readonly task_id: string;
}

export interface Delegation {
  /**
   * Answers a token exchange. `form` is the request's parameters, each given
   * once (a repeated one is the caller's to refuse, RFC 6749 §3.2); parameters
   * Writ does not know are ignored (RFC 6749 §3.2), never read as a grant.
   * @throws WritError ERR_UNSUPPORTED_GRANT_TYPE, ERR_VALIDATION, ERR_UNAUTHENTICATED,
   *   ERR_ACTOR_NOT_ALLOWED, ERR_DELEGATION_TOO_DEEP, ERR_SCOPE_EXCEEDS_PARENT,
   *   ERR_LIFETIME_EXCEEDS_PARENT, ERR_FORBIDDEN, ERR_POLICY_DENIED, ERR_APPROVAL_REQUIRED,
   *   ERR_AUDIT_UNAVAILABLE
   */
  exchange(form: Readonly<Record<string, string>>, credentials: Pick<Credentials, 'certificateChain'>): Promise<TokenExchangeResponse>;
}

export interface DelegationOptions {
  readonly broker: Pick<Broker, 'authenticate'>;
  readonly store: Store;
  readonly policy: () => PolicyEngine;
  readonly shadow?: (environment: string) => PolicyEngine | undefined;
  readonly observations: Observations;
  readonly narrowings: NarrowingList;
  readonly taskKeys: KeyRing;
  readonly audit: AuditLog;
  readonly bus: EventBus;
  readonly clock: Clock;
  readonly settings: {
    readonly issuer: string;
    readonly audience: string;
    readonly defaultTtlSeconds: number;
    readonly maxDepth: number;
    /** The `aud` an actor token must name (`delegation.actorAudience`). */
    readonly actorAudience: string;
  };
}

/** What a refusal records: the stable code, and what the caller may read. */
interface Refusal {
  readonly code: WritErrorCode;
  readonly detail: string;
  readonly extensions?: Record<string, unknown>;
}

export function createDelegation(options: DelegationOptions): Delegation {
  const { store, audit, clock, settings } = options;

  /** Every refusal past authentication is on the record: an escalation attempt is evidence. */
  const refuse = async (refusal: Refusal, parent: Task | undefined, actor: Identity | undefined, data: Record<string, unknown>): Promise<never> => {
    await audit
      .append({
        type: 'task.delegated',
        decision: 'deny',
        reason: refusal.code,
        detail: refusal.detail,
        ...(actor === undefined ? {} : { actor: auditActor(actor) }),
        ...(parent === undefined ? {} : { task: { id: parent.id, purpose: parent.purpose, intent: parent.intent, environment: parent.environment } }),
        data,
      })
      .catch(() => undefined);
    throw new WritError(refusal.code, { detail: refusal.detail, ...(refusal.extensions === undefined ? {} : { extensions: refusal.extensions }) });
  };

  return {
    async exchange(form, credentials) {
      if (form.grant_type !== TOKEN_EXCHANGE_GRANT) {
        throw new WritError('ERR_UNSUPPORTED_GRANT_TYPE', { detail: `grant_type must be ${TOKEN_EXCHANGE_GRANT}` });
      }
      const request = parseExchange(form, settings.audience);

      // The subject: a planner's task token, presented as its holder would (a certificate-bound one only with its certificate).
      const planner = await options.broker.authenticate(
        { bearer: request.subjectToken, certificateChain: credentials.certificateChain },
        { allowTaskToken: true, endpoint: 'POST /oauth/token (subject_token)' },
      );
      if (planner.taskId === undefined) throw new WritError('ERR_VALIDATION', { detail: 'subject_token must be a task token: the grant being delegated' });
      const parent = await store.getTask(planner.taskId);
      if (parent === undefined) throw new WritError('ERR_UNAUTHENTICATED', { internal: 'ERR_TOKEN_REVOKED: task is gone' });
      const base = { subjectTokenDigest: tokenDigest(request.subjectToken), actorTokenDigest: tokenDigest(request.actorToken), requested: request.scopeText };

      // The actor: a worker's identity token. A task token here is someone presenting a grant as an identity.
      if (peekTyp(request.actorToken) === TASK_TOKEN_TYP) {
        return refuse({ code: 'ERR_ACTOR_NOT_ALLOWED', detail: 'actor_token must be the worker\'s identity token, not a task token' }, parent, planner.identity, base);
      }
      // An identity token made for this: its `aud` is the exchange's alone, so whoever carries it to the
      // exchange (the planner, usually) cannot use it anywhere else, and it is spent here, once.
      const worker = (
        await options.broker.authenticate({ bearer: request.actorToken }, { allowTaskToken: false, endpoint: 'POST /oauth/token (actor_token)', audience: settings.actorAudience })
      ).identity;
      const data = { ...base, worker: worker.id, parent: parent.id };
      if (!(await store.claimFact(`token-exchange.actor:${base.actorTokenDigest}`, parent.id, clock.now()))) {
        return refuse({ code: 'ERR_ACTOR_NOT_ALLOWED', detail: 'this actor_token was already used: each exchange needs a fresh one' }, parent, planner.identity, data);
      }
      const chain = [...parent.delegators, parent.identityId];
      if (chain.includes(worker.id)) {
        return refuse({ code: 'ERR_ACTOR_NOT_ALLOWED', detail: `${worker.id} is already in this task's delegation chain: a grant is never handed back or to oneself` }, parent, planner.identity, data);
      }
      if (parent.mayAct !== null && !parent.mayAct.includes(worker.id)) {
        return refuse({ code: 'ERR_ACTOR_NOT_ALLOWED', detail: `the parent task's may_act does not name ${worker.id}` }, parent, planner.identity, data);
      }
      // may_act narrows down the chain too: within the parent's where it has one, and inherited when not given.
      const mayAct = request.mayAct === null ? parent.mayAct : request.mayAct;
      const beyond = parent.mayAct === null || request.mayAct === null ? [] : request.mayAct.filter((id) => !(parent.mayAct as readonly string[]).includes(id));
      if (beyond.length > 0) {
        return refuse({ code: 'ERR_ACTOR_NOT_ALLOWED', detail: `may_act may only narrow the parent's: ${beyond.join(' ')}` }, parent, planner.identity, data);
      }
      if ((await store.getBreakGlassOfTask(parent.id)) !== undefined) {
        return refuse({ code: 'ERR_FORBIDDEN', detail: 'a break-glass grant is not delegated: it is for the human who asked for it' }, parent, planner.identity, data);
      }

      const now = clock.now();
      // What the parent holds now: its grant, less what was taken from it, or from a task it was delegated from, since.
      const kept = keptScopes(options.narrowings, parent);
      const ttlSeconds = request.ttlSeconds ?? settings.defaultTtlSeconds;
      // No ttl asked: as long as the default allows, within the parent's. One asked for is held to, or refused.
      // Either way never past the worker identity's own expiry (the planner's bounds the parent already).
      const expiresAt = Math.min(request.ttlSeconds === undefined ? Math.min(now + ttlSeconds * 1000, parent.expiresAt) : now + ttlSeconds * 1000, worker.expiresAt ?? Number.POSITIVE_INFINITY);
      const attenuated = attenuate(
        { scopes: request.scopes, expiresAt },
        { parentScopes: kept, parentExpiresAt: parent.expiresAt, parentDepth: parent.lineage.length, maxDepth: settings.maxDepth },
      );
      if (!attenuated.ok) {
        const extensions = attenuated.scopes.length > 0 ? { scopes: attenuated.scopes.map(formatScope) } : undefined;
        return refuse({ code: attenuated.code, detail: attenuated.detail, ...(extensions === undefined ? {} : { extensions }) }, parent, planner.identity, data);
      }
      if (expiresAt - now < 1000) {
        return refuse({ code: 'ERR_LIFETIME_EXCEEDS_PARENT', detail: 'the parent task expires within a second: nothing is left to delegate' }, parent, planner.identity, data);
      }

      // Policy decides the step (may the delegator hand on this slice?) and the grant (may the worker hold each scope?).
      const engine = options.policy();
      const childId = newId('task');
      const depth = attenuated.depth;
      const purpose = request.purpose ?? parent.purpose;
      const delegate = engine.decideTaskAction({
        principal: planner.identity,
        action: 'delegate',
        task: { id: childId, intent: parent.intent, purpose, environment: parent.environment, delegationDepth: depth, scopes: attenuated.scopes },
        now,
        observed: await observeScopes(options.observations, planner.identity.id, attenuated.scopes, now),
      });
      const lineage = [...parent.lineage, parent.id];
      const context = { environment: parent.environment, intent: parent.intent, purpose, lineage };
      const decided = await decideGrant(engine, options.shadow?.(parent.environment), options.observations, worker, context, attenuated.scopes, now);
      const policies = [...new Set([...delegate.policies, ...decided.deciding])].sort();
      const decisionData = {
        ...data,
        depth,
        scopes: attenuated.scopes.map(formatScope),
        delegate: { outcome: delegate.outcome, policies: delegate.policies, risk: delegate.risk, ...(delegate.errors.length > 0 ? { errors: delegate.errors } : {}) },
        decisions: decided.decisions,
      };
      if (delegate.outcome !== 'allow') {
        const code = delegate.outcome === 'approval_required' ? 'ERR_APPROVAL_REQUIRED' : 'ERR_POLICY_DENIED';
        return refuse({ code, detail: `policy does not let ${planner.identity.id} delegate this slice at depth ${depth}`, extensions: { policies: delegate.policies } }, parent, planner.identity, decisionData);
      }
      if (decided.refused.length > 0) {
        // Whole, like attenuation: a worker is never handed less than the planner was told it gets.
        const code = decided.refused.every((r) => r.outcome === 'approval_required') ? 'ERR_APPROVAL_REQUIRED' : 'ERR_POLICY_DENIED';
        return refuse(
          { code, detail: `policy does not let ${worker.id} hold ${decided.refused.map(formatScope).join(' ')}`, extensions: { policies: [...decided.deciding].sort(), refusedScopes: decided.refused.map((r) => ({ scope: formatScope(r), outcome: r.outcome })) } },
          parent,
          planner.identity,
          decisionData,
        );
      }

      const root = parent.lineage.length === 0 ? parent : await store.getTask(parent.lineage[0] as string);
      if (root === undefined) return refuse({ code: 'ERR_TOKEN_REVOKED', detail: 'the run\'s root task is gone' }, parent, planner.identity, decisionData);
      const run: TaskRun = {
        root: { id: root.id, identityId: root.identityId, purpose: root.purpose, intent: root.intent, environment: root.environment },
        lineage,
        delegators: chain,
      };
      const minted = mintTaskToken(options.taskKeys, {
        issuer: settings.issuer,
        audience: settings.audience,
        identityId: worker.id,
        task: { id: childId, purpose, intent: parent.intent },
        scopes: attenuated.scopes,
        environment: parent.environment,
        issuedAt: now,
        expiresAt,
        run,
        mayAct,
      });
      if (minted.token.length > MAX_TOKEN_LENGTH) {
        return refuse({ code: 'ERR_VALIDATION', detail: `the child's token would be ${minted.token.length} characters, over the ${MAX_TOKEN_LENGTH} any enforcement point accepts: shorten purpose or may_act` }, parent, planner.identity, decisionData);
      }
      const child: Task = {
        id: childId,
        identityId: worker.id,
        purpose,
        intent: parent.intent,
        environment: parent.environment,
        requestedScopes: attenuated.scopes,
        grantedScopes: attenuated.scopes,
        refusedScopes: [],
        state: 'active',
        policyVersion: engine.version,
        parentTaskId: parent.id,
        lineage,
        delegators: chain,
        mayAct: mayAct === null ? null : [...mayAct],
        renewals: 0,
        tokenId: minted.jti,
        createdAt: now,
        expiresAt,
        endedAt: null,
        endReason: null,
      };
      await store.createTask(child);

      // INVARIANT: no child outlives a parent end (or a worker suspension) that raced it. Both are read
      // again after the child's row exists: an end committed before this read is seen here, and the
      // cascade of one committed after it finds the child.
      const [parentNow, workerNow] = await Promise.all([store.getTask(parent.id), store.getIdentity(worker.id)]);
      const gone = parentNow?.state !== 'active' ? `the parent task is ${parentNow?.state ?? 'gone'}` : workerNow === undefined ? 'the worker is no longer registered' : identityInactiveReason(workerNow, clock.now());
      const revokeChild = async (reason: string): Promise<void> => {
        const ended = await store.transitionTask(childId, ['active'], 'revoked', { at: clock.now(), endReason: `revoked: ${reason}` }).catch(() => undefined);
        if (ended !== undefined) options.bus.publish({ type: 'task.ended', taskId: ended.id, state: ended.state, expiresAt: ended.expiresAt });
      };
      if (gone !== undefined) {
        await revokeChild(gone);
        return refuse({ code: 'ERR_TOKEN_REVOKED', detail: `changed while delegating: ${gone}` }, parent, planner.identity, decisionData);
      }

      try {
        await audit.append({
          type: 'task.delegated',
          decision: 'allow',
          actor: auditActor(worker),
          task: { id: childId, purpose, intent: parent.intent, environment: parent.environment },
          policies,
          policyVersion: engine.version,
          data: { ...decisionData, delegator: planner.identity.id, lineage, delegators: chain, expiresAt, jti: minted.jti, ...(mayAct === null ? {} : { mayAct }) },
        });
      } catch (error) {
        // The token never left this function; make sure the child cannot be used either.
        await revokeChild('audit_unavailable');
        throw error;
      }
      options.observations.recordGrant(worker.id, attenuated.scopes);
      return {
        access_token: minted.token,
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: 'Bearer',
        expires_in: Math.max(1, Math.floor((expiresAt - now) / 1000)),
        scope: formatScopeClaim(attenuated.scopes),
        task_id: childId,
      };
    },
  };
}

interface ExchangeRequest {
  readonly subjectToken: string;
  readonly actorToken: string;
  readonly scopes: Scope[];
  readonly scopeText: string;
  readonly ttlSeconds: number | undefined;
  readonly purpose: string | undefined;
  readonly mayAct: string[] | null;
}

/** The request's parameters, checked; ERR_VALIDATION naming each one that is wrong. */
function parseExchange(form: Readonly<Record<string, string>>, audience: string): ExchangeRequest {
  const errors: { field: string; message: string }[] = [];
  const token = (name: string, types: ReadonlySet<string>): string => {
    const value = form[name];
    const type = form[`${name}_type`];
    if (value === undefined || value.length === 0) errors.push({ field: name, message: 'required' });
    else if (value.length > MAX_TOKEN_LENGTH) errors.push({ field: name, message: `at most ${MAX_TOKEN_LENGTH} characters` });
    if (type === undefined || !types.has(type)) errors.push({ field: `${name}_type`, message: `one of ${[...types].join(', ')}` });
    return value ?? '';
  };
  const subjectToken = token('subject_token', SUBJECT_TOKEN_TYPES);
  const actorToken = token('actor_token', ACTOR_TOKEN_TYPES);

  // RFC 8693 makes scope optional; Writ does not: a worker gets what is asked for by name, never "the rest".
  const scopeText = form.scope ?? '';
  const parsed = scopeText.length > 0 && scopeText.length <= 8192 ? parseScopeClaim(scopeText) : undefined;
  if (parsed === undefined || parsed.length === 0) errors.push({ field: 'scope', message: 'space-separated action:resource entries, e.g. read:db:orders/42' });
  else if (parsed.length > MAX_SCOPES) errors.push({ field: 'scope', message: `at most ${MAX_SCOPES} entries` });

  let ttlSeconds: number | undefined;
  if (form.ttl !== undefined) {
    const seconds = parseDurationSeconds(/^\d+$/.test(form.ttl) ? Number(form.ttl) : form.ttl);
    if (seconds === undefined || seconds < 1) errors.push({ field: 'ttl', message: 'seconds (at least 1) or a duration like 5m' });
    else ttlSeconds = seconds;
  }
  const purpose = form.purpose;
  if (purpose !== undefined && (purpose.length === 0 || purpose.length > 500 || !PLAIN_TEXT.test(purpose))) {
    errors.push({ field: 'purpose', message: '1 to 500 characters, no control or format characters' });
  }
  let mayAct: string[] | null = null;
  if (form.may_act !== undefined) {
    mayAct = [...new Set(form.may_act.split(' '))];
    if (mayAct.length > MAX_MAY_ACT || mayAct.some((id) => id.length === 0 || id.length > 2048 || !PLAIN_TEXT.test(id))) {
      errors.push({ field: 'may_act', message: `space-separated identity ids, at most ${MAX_MAY_ACT}` });
    }
  }
  // Writ issues tokens for its own enforcement points only (RFC 8693 §2.2.2: invalid_target otherwise).
  for (const name of ['audience', 'resource'] as const) {
    if (form[name] !== undefined && form[name] !== audience) errors.push({ field: name, message: `Writ issues task tokens for ${audience} only` });
  }
  if (form.requested_token_type !== undefined && !SUBJECT_TOKEN_TYPES.has(form.requested_token_type)) {
    errors.push({ field: 'requested_token_type', message: `one of ${[...SUBJECT_TOKEN_TYPES].join(', ')}` });
  }
  if (errors.length > 0) {
    throw new WritError('ERR_VALIDATION', { detail: errors.map((e) => `${e.field}: ${e.message}`).join('; '), extensions: { errors } });
  }
  return { subjectToken, actorToken, scopes: parsed as Scope[], scopeText, ttlSeconds, purpose, mayAct };
}
