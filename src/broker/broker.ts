/**
 * The broker: the task lifecycle. An authenticated identity asks for access
 * for one task; policy decides each requested scope now, with context; a grant
 * becomes a short-lived task token; ending the task (complete, fail, revoke,
 * expiry) refuses that token everywhere at once. Every step is audited, and a
 * step whose audit record cannot be written does not happen.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import { z } from 'zod';
import { auditActor, type AuditDecision, type AuditLog } from '../audit/log.js';
import type { Clock } from '../core/clock.js';
import { parseDurationSeconds } from '../core/config.js';
import { WritError, type WritErrorCode } from '../core/errors.js';
import { looksLikeId, newId } from '../core/ids.js';
import { attenuate, DEFAULT_MAX_DELEGATION_DEPTH, findCoveringScope, formatScope, isValidAction, isValidResource } from '../core/scope.js';
import type { ApprovalRequest, Identity, RefusedScope, Scope, Task, TaskState } from '../core/types.js';
import type { EventBus } from '../events/bus.js';
import type { IdentityAuthenticator } from '../identity/authenticate.js';
import { identityInactiveReason, inactiveDelegator, type Registry } from '../identity/registry.js';
import { decideShadow, riskRecord, type DecisionInput, type PolicyDecision, type PolicyEngine, type ShadowDecision } from '../policy/engine.js';
import { observeScopes, type Observations } from '../policy/observations.js';
import type { Store } from '../store/store.js';
import { MAX_TOKEN_LENGTH } from '../tokens/jwt.js';
import type { KeyRing } from '../tokens/key-ring.js';
import { boundCertificate, mintTaskToken, TASK_TOKEN_TYP, type TaskTokenVerifier } from '../tokens/task-token.js';
import { keptScopes, type NarrowingList } from '../enforce/narrowing-list.js';
import type { RevocationList } from '../enforce/revocation-list.js';
import { RISK_LEVELS, type RiskLevel } from '../policy/risk.js';
import type { Approvals, GrantApprovalInput } from './approvals.js';
import { isTerminal, statesLeadingTo } from './task-states.js';

/** How old an unrecorded task end must be before the flush records it (a fresh one may still be recording). */
const END_RECORD_GRACE_MS = 5000;

export const slug = z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, 'lowercase letters, digits and dashes, at most 64');

/** Free text a person reads (a purpose, a reason): no control or format characters, no lone surrogates. */
export const plainText = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[^\p{Cc}\p{Cf}\p{Cs}]+$/u, 'no control or format characters');

/** The scopes a task asks for: 1 to 32 (action, resource) pairs. */
export const scopesSchema = z
  .array(
    z
      .object({
        action: z.string().refine(isValidAction, 'an action name like read or refund'),
        resource: z.string().refine(isValidResource, 'a resource like db:orders/42 or a pattern like db:orders/*'),
      })
      .strict(),
  )
  .min(1)
  .max(32);

/** Seconds, or a duration such as `5m`. */
export const durationSchema = z
  .union([z.number(), z.string()])
  .refine((v) => (parseDurationSeconds(v) ?? 0) >= 1, 'seconds (at least 1) or a duration like 5m');

export const taskRequestSchema = z
  .object({
    purpose: plainText(500),
    intent: slug,
    scopes: scopesSchema,
    ttl: durationSchema.optional(),
    environment: slug,
  })
  .strict();

export type TaskRequest = z.input<typeof taskRequestSchema>;

/** Who is calling: always an identity, sometimes through one of its task tokens. */
export interface Caller {
  readonly identity: Identity;
  /** Set when the caller authenticated with a task token: the task it is bound to. */
  readonly taskId?: string;
  /** With `taskId`: the `jti` of the task token it presented (what a renewal replaces, and only that). */
  readonly tokenId?: string;
  /** `x5t#S256` of the verified X.509-SVID the caller presented over mTLS; task tokens are bound to it. */
  readonly certificateThumbprint?: string;
  /**
   * When the credential that authenticated the caller expires (epoch ms): the
   * token's `exp`, or the certificate's notAfter. Set by `authenticate`; a
   * connection that outlives a request (the MCP gateway's) asks for nothing new after it.
   */
  readonly credentialExpiresAt?: number;
}

/** What a request carried to prove who it is. */
export interface Credentials {
  /** The bearer token of the Authorization header. */
  readonly bearer?: string | undefined;
  /** The client certificate chain of an mTLS connection, leaf first; empty or absent without one. */
  readonly certificateChain?: readonly X509Certificate[] | undefined;
}

export type TaskRequestResult =
  | { readonly status: 'granted' | 'partial'; readonly task: Task; readonly token: string; readonly expiresIn: number; readonly warnings: readonly string[] }
  /** `approvals`: the requests a human must answer, one per scope waiting; then `activateTask`. */
  | { readonly status: 'pending_approval'; readonly task: Task; readonly approvals: readonly ApprovalRequest[]; readonly warnings: readonly string[] }
  | { readonly status: 'denied'; readonly task: Task; readonly policies: readonly string[]; readonly warnings: readonly string[] };

export const renewalRequestSchema = z
  .object({
    /** What was done since the task began or was last renewed ("stage 2 done"): on the record. */
    checkpoint: plainText(500),
    ttl: durationSchema.optional(),
    /** Keep only these (each one the task holds); default: everything it holds. */
    scopes: scopesSchema.optional(),
  })
  .strict();

export interface RenewalResult {
  readonly task: Task;
  readonly token: string;
  readonly expiresIn: number;
  readonly warnings: readonly string[];
}

export type EndState = Extract<TaskState, 'completed' | 'failed' | 'revoked'>;

export interface Broker {
  /**
   * Authenticates a bearer credential: an identity token, or (when `allowTaskToken`)
   * a task token of a task that has not ended. Failures are audited with their
   * precise reason and surface as one uniform error.
   * @throws WritError ERR_UNAUTHENTICATED
   */
  authenticate(credentials: Credentials, options: { allowTaskToken: boolean; endpoint: string; /** The `aud` an identity token must name, when not Writ's own (`identity.audience`). */ audience?: string }): Promise<Caller>;
  /**
   * Decides a task request. Never throws for a policy outcome (see the result's
   * status); throws for bad input and for audit failure.
   * @throws WritError ERR_VALIDATION, ERR_AUDIT_UNAVAILABLE
   */
  requestTask(caller: Caller, request: unknown): Promise<TaskRequestResult>;
  /**
   * Turns a task whose scopes waited for approval into a grant, once every
   * request is answered: each scope is decided again now, an approved one
   * with its approval (consumed here), and the task becomes active with what
   * is allowed, or denied when nothing is. While a request is still pending,
   * returns `pending_approval` and changes nothing.
   * @throws WritError ERR_TASK_NOT_FOUND, ERR_TASK_STATE_CONFLICT, ERR_FORBIDDEN (a task token), ERR_AUDIT_UNAVAILABLE
   */
  activateTask(caller: Caller, taskId: string): Promise<TaskRequestResult>;
  /**
   * Renews a task at a checkpoint its holder names: a fresh decision of every
   * scope it keeps (and, for a delegated task, of the delegation) under the
   * current policy and risk, a new token, and the old token refused from then
   * on. Asked with the task's current token. Never past the task's maximum
   * lifetime (`tokens.maxLifetime` from its request) nor its parent's expiry.
   * A refusal changes nothing: the current token runs out on its own.
   * @throws WritError ERR_VALIDATION, ERR_FORBIDDEN (not with the task's token), ERR_TASK_NOT_FOUND,
   *   ERR_TASK_STATE_CONFLICT, ERR_NOT_RENEWABLE, ERR_MAX_LIFETIME_REACHED, ERR_SCOPE_NOT_GRANTED,
   *   ERR_SCOPE_EXCEEDS_PARENT, ERR_POLICY_DENIED, ERR_APPROVAL_REQUIRED, ERR_AUDIT_UNAVAILABLE
   */
  renewTask(caller: Caller, taskId: string, request: unknown): Promise<RenewalResult>;
  /** @throws WritError ERR_TASK_NOT_FOUND (also for another identity's task) */
  getTask(caller: Caller, taskId: string): Promise<Task>;
  /**
   * Ends a task; from this instant its token is refused in this process.
   * @throws WritError ERR_TASK_NOT_FOUND, ERR_TASK_STATE_CONFLICT, ERR_AUDIT_UNAVAILABLE
   */
  endTask(caller: Caller, taskId: string, to: EndState, note?: string): Promise<Task>;
  /**
   * Revokes every task of an identity that has not ended (it was suspended or
   * decommissioned): refused in this process at once, elsewhere at the next sync.
   */
  revokeTasksOf(identityId: string, reason: string): Promise<Task[]>;
  /**
   * Revokes every task delegated, directly or not, from `taskId` (which has
   * ended): refused in this process at once, recorded, and each one's own end
   * heard by everything that listens for ends. Returns how many it ended.
   */
  endDescendants(taskId: string): Promise<number>;
  /**
   * Moves overdue tasks to `expired`, revokes and audits them, and revokes
   * delegated tasks whose parent ended without its cascade finishing (a crash
   * in between). Returns how many tasks it ended.
   */
  reapExpired(): Promise<number>;
  /** Writes the audit records still owed for tasks that ended while the audit log was unavailable. Returns how many. */
  flushEndRecords(): Promise<number>;
}

export interface BrokerOptions {
  readonly registry: Registry;
  readonly approvals: Approvals;
  readonly authenticator: IdentityAuthenticator;
  readonly policy: () => PolicyEngine;
  /** The shadow (candidate) engine trialled for tasks in `environment`, if any: decided and recorded, never enforced. */
  readonly shadow?: (environment: string) => PolicyEngine | undefined;
  /** Call rates and resource history, for the risk score. */
  readonly observations: Observations;
  readonly taskKeys: KeyRing;
  readonly taskTokens: TaskTokenVerifier;
  /** What enforcement points refuse: a task token whose ancestor ended is refused here too. */
  readonly revocations?: RevocationList;
  readonly store: Store;
  readonly audit: AuditLog;
  readonly bus: EventBus;
  readonly clock: Clock;
  /** Tasks whose grant a policy change narrowed: a renewal keeps no more than what is left. */
  readonly narrowings?: NarrowingList;
  readonly settings: {
    readonly issuer: string;
    readonly audience: string;
    readonly defaultTtlSeconds: number;
    readonly maxTtlSeconds: number;
    readonly environments: readonly string[];
    /** The longest a task lasts from its request, renewals included. Default 8h. */
    readonly maxLifetimeSeconds?: number;
    /** Delegation depth limit, applied again when a delegated task renews. Default 3. */
    readonly maxDelegationDepth?: number;
    /** A renewal whose fresh decision scores this risk level or more is refused, whatever policy says. Default critical. */
    readonly renewalRiskLimit?: RiskLevel;
  };
}

export function createBroker(options: BrokerOptions): Broker {
  const { registry, audit, bus, clock, store, settings } = options;

  const unauthenticated = async (endpoint: string, code: WritErrorCode, detail: string, token?: string, subject?: string): Promise<never> => {
    // The audit record is best effort here: the request is refused either way.
    await audit
      .append({
        type: 'authentication.failed',
        decision: 'deny',
        reason: code,
        detail,
        ...(subject === undefined ? {} : { actor: { id: subject } }),
        data: { endpoint, ...(token === undefined ? {} : { tokenDigest: tokenDigest(token) }) },
      })
      .catch(() => undefined);
    throw new WritError('ERR_UNAUTHENTICATED', { internal: `${code}: ${detail}` });
  };

  const visibleTask = async (caller: Caller, taskId: string): Promise<Task> => {
    const task = looksLikeId('task', taskId) ? await store.getTask(taskId) : undefined;
    // Another identity's task is reported exactly like a missing one.
    if (task === undefined || task.identityId !== caller.identity.id || (caller.taskId !== undefined && caller.taskId !== task.id)) {
      throw new WritError('ERR_TASK_NOT_FOUND');
    }
    return task;
  };

  const announceEnd = (task: Task): void => {
    bus.publish({ type: 'task.ended', taskId: task.id, state: task.state, expiresAt: task.expiresAt });
  };

  /**
   * Tasks a batch operation ended: refused in memory first, then recorded. The
   * tasks stay ended if a record fails; it is owed and flushed later.
   */
  const announceAndRecord = async (ended: readonly Task[], note: string): Promise<number> => {
    // INVARIANT: revoke in memory before anything that can fail.
    for (const task of ended) announceEnd(task);
    const recorded = await Promise.allSettled(ended.map((task) => recordEnd(task, { id: task.identityId }, note)));
    const failed = recorded.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
    return ended.length;
  };

  /** See `recordTaskEnd`. */
  const recordEnd = (task: Task, actor: Pick<Identity, 'id'> & Partial<Identity>, note?: string): Promise<void> => recordTaskEnd({ audit, store }, task, actor, note);

  /** The rest of `activateTask`, once this call holds the task's one activation. */
  const activateClaimed = async (caller: Caller, task: Task, latest: ReadonlyMap<string, ApprovalRequest>, now: number): Promise<TaskRequestResult> => {
    const approved = new Set([...latest.values()].filter((a) => a.state === 'approved' && a.expiresAt > now).map(formatScope));

    const engine = options.policy();
    const identity = caller.identity;
    const decided = await decideGrant(engine, options.shadow?.(task.environment), options.observations, identity, task, task.requestedScopes, now, approved);
    const granted: Scope[] = [];
    const refused = [...decided.refused];
    const used: string[] = [];
    for (const scope of decided.granted) {
      if (!approved.has(formatScope(scope))) {
        granted.push(scope);
        continue;
      }
      // Each approval lets its scope in once: a concurrent activation gets none.
      const approval = await options.approvals.consumeGrant({ taskId: task.id, identityId: identity.id, action: scope.action, resource: scope.resource });
      // Spent or expired since it was read: this scope is not approved after all.
      if (approval === undefined) refused.push({ ...scope, outcome: 'approval_required', policies: [], reason: 'ERR_APPROVAL_CLOSED' });
      else {
        granted.push(scope);
        used.push(approval.id);
      }
    }

    const recordActivation = (decision: AuditDecision, state: TaskState, jti?: string) =>
      audit.append({
        type: 'task.activated',
        decision,
        actor: auditActor(identity),
        task: { id: task.id, purpose: task.purpose, intent: task.intent, environment: task.environment },
        policies: [...decided.deciding].sort(),
        policyVersion: engine.version,
        data: {
          state,
          granted: granted.map(formatScope),
          refused: refused.map((r) => ({ scope: formatScope(r), outcome: r.outcome, policies: r.policies, reason: r.reason })),
          approvals: used,
          expiresAt: task.expiresAt,
          ...(jti === undefined ? {} : { jti }),
          decisions: decided.decisions,
          ...(decided.shadowed.length > 0 ? { shadow: decided.shadowed } : {}),
        },
      });

    if (granted.length === 0) {
      const ended = await store.transitionTask(task.id, ['pending_approval'], 'denied', { at: clock.now(), endReason: 'denied: no scope approved' });
      if (ended === undefined) throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: 'task is no longer waiting for approval' });
      announceEnd(ended);
      const receipt = await recordActivation('deny', 'denied');
      await store.markTaskEndAudited(ended.id, receipt.id);
      return { status: 'denied', task: ended, policies: [...decided.deciding].sort(), warnings: [] };
    }

    const minted = mintTaskToken(options.taskKeys, {
      issuer: settings.issuer,
      audience: settings.audience,
      identityId: identity.id,
      task: { id: task.id, purpose: task.purpose, intent: task.intent },
      scopes: granted,
      environment: task.environment,
      issuedAt: now,
      // The TTL runs from the request: waiting for approval does not lengthen it.
      expiresAt: task.expiresAt,
      ...(caller.certificateThumbprint === undefined ? {} : { certificateThumbprint: caller.certificateThumbprint }),
    });
    const active = await store.activateTask(task.id, { grantedScopes: granted, refusedScopes: refused, policyVersion: engine.version, tokenId: minted.jti });
    if (active === undefined) throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: 'task is no longer waiting for approval' });
    try {
      await recordActivation(refused.length > 0 ? 'partial' : 'allow', 'active', minted.jti);
    } catch (error) {
      // The token never left this function; make sure the task cannot be used either.
      const ended = await store.transitionTask(task.id, ['active'], 'revoked', { at: clock.now(), endReason: 'audit_unavailable' }).catch(() => undefined);
      if (ended) announceEnd(ended);
      throw error;
    }
    options.observations.recordGrant(identity.id, granted);
    return { status: refused.length > 0 ? 'partial' : 'granted', task: active, token: minted.token, expiresIn: Math.max(1, Math.floor((task.expiresAt - now) / 1000)), warnings: [] };
  };

  return {
    async authenticate({ bearer, certificateChain }, { allowTaskToken, endpoint, audience }) {
      const hasCertificate = certificateChain !== undefined && certificateChain.length > 0;
      if ((bearer === undefined || bearer.length === 0) && !hasCertificate) throw new WritError('ERR_UNAUTHENTICATED');
      if (bearer !== undefined && bearer.length > MAX_TOKEN_LENGTH) return unauthenticated(endpoint, 'ERR_TOKEN_MALFORMED', 'oversized bearer token');

      // A presented certificate must verify, even when a bearer token comes with it.
      let certified: { identity: Identity; thumbprint: string; expiresAt: number } | undefined;
      if (hasCertificate) {
        const result = await options.authenticator.authenticateCertificate(certificateChain);
        if (!result.ok) return unauthenticated(endpoint, result.code, result.detail, undefined, result.subject);
        certified = { identity: result.identity, thumbprint: result.credential.certificateThumbprint ?? '', expiresAt: result.credential.expiresAt };
      }
      const sameIdentity = async (identity: Identity, token: string): Promise<void> => {
        if (certified !== undefined && certified.identity.id !== identity.id) {
          await unauthenticated(endpoint, 'ERR_IDENTITY_MISMATCH', `certificate is ${certified.identity.id}, token is ${identity.id}`, token, identity.id);
        }
      };

      if (bearer === undefined || bearer.length === 0) {
        if (certified === undefined) throw new WritError('ERR_UNAUTHENTICATED');
        await registry.touch(certified.identity.id).catch(() => undefined);
        return { identity: certified.identity, certificateThumbprint: certified.thumbprint, credentialExpiresAt: certified.expiresAt };
      }
      const now = clock.now();
      if (allowTaskToken && peekTyp(bearer) === TASK_TOKEN_TYP) {
        const checked = await options.taskTokens.verify(bearer, now);
        if (!checked.ok) return unauthenticated(endpoint, checked.code, checked.detail, bearer);
        const { claims } = checked.token;
        const bound = boundCertificate(claims);
        if (bound !== undefined && certified?.thumbprint !== bound) {
          return unauthenticated(endpoint, 'ERR_TOKEN_BINDING', 'token is bound to a client certificate this request did not present', bearer, checked.token.actor);
        }
        const actor = checked.token.actor;
        const task = await store.getTask(claims.task.id);
        if (task === undefined || isTerminal(task.state)) {
          return unauthenticated(endpoint, 'ERR_TOKEN_REVOKED', `task is ${task?.state ?? 'unknown'}`, bearer, actor);
        }
        // Only the task's current token: one a renewal replaced is refused, as is one whose ancestor ended.
        const revoked = task.tokenId !== claims.jti ? 'token was replaced by a renewal' : options.revocations?.refusal(checked.token);
        if (revoked !== undefined) return unauthenticated(endpoint, 'ERR_TOKEN_REVOKED', revoked, bearer, actor);
        const identity = await registry.get(actor);
        if (identity === undefined) return unauthenticated(endpoint, 'ERR_IDENTITY_INACTIVE', 'identity is not registered', bearer, actor);
        const inactive = identityInactiveReason(identity, now);
        if (inactive !== undefined) return unauthenticated(endpoint, 'ERR_IDENTITY_INACTIVE', inactive, bearer, actor);
        const delegatorGone = await inactiveDelegator(registry, checked.token.delegators, now);
        if (delegatorGone !== undefined) return unauthenticated(endpoint, 'ERR_IDENTITY_INACTIVE', delegatorGone, bearer, actor);
        await sameIdentity(identity, bearer);
        return { identity, taskId: task.id, tokenId: claims.jti, credentialExpiresAt: checked.token.expiresAt, ...(certified === undefined ? {} : { certificateThumbprint: certified.thumbprint }) };
      }
      const result = await options.authenticator.authenticate(bearer, audience);
      if (!result.ok) return unauthenticated(endpoint, result.code, result.detail, bearer, result.subject);
      await sameIdentity(result.identity, bearer);
      await registry.touch(result.identity.id).catch(() => undefined);
      return { identity: result.identity, credentialExpiresAt: result.credential.expiresAt, ...(certified === undefined ? {} : { certificateThumbprint: certified.thumbprint }) };
    },

    async requestTask(caller, rawRequest) {
      const parsed = taskRequestSchema.safeParse(rawRequest);
      if (!parsed.success) throw validationError(parsed.error.issues);
      const request = parsed.data;
      if (!settings.environments.includes(request.environment)) {
        throw validationError([{ path: ['environment'], message: `one of ${settings.environments.join(', ')}` }]);
      }
      if (caller.taskId !== undefined) throw new WritError('ERR_FORBIDDEN', { detail: 'ask for a task with an identity token, not a task token' });

      const engine = options.policy();
      const shadow = options.shadow?.(request.environment);
      const now = clock.now();
      const identity = caller.identity;
      const warnings: string[] = [];
      options.observations.recordCall(identity.id, now);
      let ttl = request.ttl === undefined ? settings.defaultTtlSeconds : (parseDurationSeconds(request.ttl) ?? settings.defaultTtlSeconds);
      if (ttl > settings.maxTtlSeconds) {
        warnings.push(`ttl reduced from ${ttl}s to the maximum of ${settings.maxTtlSeconds}s`);
        ttl = settings.maxTtlSeconds;
      }

      const scopes = dedupeScopes(request.scopes);
      const { granted, pending, refused, deciding, policyErrors, decisions, shadowed } = await decideGrant(engine, shadow, options.observations, identity, request, scopes, now);

      const state: TaskState = pending.length > 0 ? 'pending_approval' : granted.length > 0 ? 'active' : 'denied';
      const taskId = newId('task');
      let expiresAt = now + ttl * 1000;
      // INVARIANT: no grant outlives the identity it is for, so the identity's expiry ends its tokens for
      // resource servers verifying offline too (its expiry is checked by Writ, but is not in any revocation feed).
      if (identity.expiresAt !== null && expiresAt > identity.expiresAt) {
        expiresAt = identity.expiresAt;
        warnings.push(`expiry cut to ${new Date(expiresAt).toISOString()}: the identity's own expiry`);
      }
      const minted =
        state === 'active'
          ? mintTaskToken(options.taskKeys, {
              issuer: settings.issuer,
              audience: settings.audience,
              identityId: identity.id,
              task: { id: taskId, purpose: request.purpose, intent: request.intent },
              scopes: granted,
              environment: request.environment,
              issuedAt: now,
              expiresAt,
              ...(caller.certificateThumbprint === undefined ? {} : { certificateThumbprint: caller.certificateThumbprint }),
            })
          : undefined;
      const task: Task = {
        id: taskId,
        identityId: identity.id,
        purpose: request.purpose,
        intent: request.intent,
        environment: request.environment,
        requestedScopes: scopes,
        grantedScopes: granted,
        refusedScopes: refused,
        state,
        policyVersion: engine.version,
        parentTaskId: null,
        lineage: [],
        delegators: [],
        mayAct: null,
        renewals: 0,
        tokenId: minted?.jti ?? null,
        createdAt: now,
        expiresAt,
        endedAt: state === 'denied' ? now : null,
        endReason: state === 'denied' ? 'denied' : null,
      };
      await store.createTask(task);
      if (state !== 'denied') {
        // INVARIANT: no grant outlives a suspension that raced it. The identity is
        // read again, uncached, after the task row exists: a suspension committed
        // before this read is seen here, and one committed after it ends this task.
        const current = await store.getIdentity(identity.id);
        const inactive = current === undefined ? 'identity is no longer registered' : identityInactiveReason(current, clock.now());
        if (inactive !== undefined) {
          const ended = await store.transitionTask(taskId, ['active', 'pending_approval'], 'revoked', { at: clock.now(), endReason: `revoked: ${inactive}` });
          if (ended) announceEnd(ended);
          throw new WritError('ERR_UNAUTHENTICATED', { internal: `ERR_IDENTITY_INACTIVE: ${inactive} (changed while the task was being granted)` });
        }
      }

      const auditDecision: AuditDecision =
        state === 'denied' ? 'deny' : state === 'pending_approval' ? 'approval_required' : refused.length > 0 ? 'partial' : 'allow';
      let decisionRecord: string;
      try {
        ({ id: decisionRecord } = await audit.append({
          type: 'task.decision',
          decision: auditDecision,
          actor: auditActor(identity),
          task: { id: taskId, purpose: request.purpose, intent: request.intent, environment: request.environment },
          policies: [...deciding].sort(),
          policyVersion: engine.version,
          data: {
            state,
            granted: granted.map(formatScope),
            refused: refused.map((r) => ({ scope: formatScope(r), outcome: r.outcome, policies: r.policies, reason: r.reason })),
            ttl,
            expiresAt,
            ...(minted ? { jti: minted.jti } : {}),
            ...(policyErrors.length > 0 ? { policyErrors } : {}),
            decisions,
            ...(shadowed.length > 0 ? { shadow: shadowed } : {}),
          },
        }));
      } catch (error) {
        // The token never left this function; make sure the task cannot be used either.
        const ended = await store.transitionTask(taskId, ['active', 'pending_approval'], 'revoked', { at: clock.now(), endReason: 'audit_unavailable' }).catch(() => undefined);
        if (ended) announceEnd(ended);
        throw error;
      }

      if (state === 'active') options.observations.recordGrant(identity.id, granted);
      if (state === 'denied') {
        // A denied task is born ended; its decision record is the record of that end.
        await store.markTaskEndAudited(taskId, decisionRecord);
        return { status: 'denied', task, policies: [...deciding].sort(), warnings };
      }
      if (state === 'pending_approval') {
        let approvals: ApprovalRequest[];
        try {
          approvals = await options.approvals.openForGrant(pending.map(({ scope, decision }) => ({ task, identity, action: scope.action, resource: scope.resource, decision, requestRecord: decisionRecord })));
        } catch (error) {
          // A pending task nobody can be asked to approve is no task.
          const ended = await store.transitionTask(taskId, ['pending_approval'], 'revoked', { at: clock.now(), endReason: 'revoked: its approval requests could not be opened' }).catch(() => undefined);
          if (ended) {
            announceEnd(ended);
            await recordEnd(ended, identity, 'its approval requests could not be opened').catch(() => undefined);
          }
          throw error;
        }
        return { status: 'pending_approval', task, approvals, warnings };
      }
      if (minted === undefined) throw new Error('active task without a token');
      return { status: refused.length > 0 ? 'partial' : 'granted', task, token: minted.token, expiresIn: ttl, warnings };
    },

    async activateTask(caller, taskId) {
      if (caller.taskId !== undefined) throw new WritError('ERR_FORBIDDEN', { detail: 'activate a task with an identity token, not a task token' });
      const task = await visibleTask(caller, taskId);
      const now = clock.now();
      if (task.state !== 'pending_approval' || task.expiresAt <= now) {
        throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: `task is ${task.expiresAt <= now ? 'expired' : task.state}; only a task waiting for approval activates`, extensions: { state: task.state } });
      }
      // The newest request of each scope that waited is the one that counts.
      const latest = new Map<string, ApprovalRequest>();
      for (const approval of await options.approvals.ofTask(task.id)) {
        const key = formatScope(approval);
        if (approval.stage === 'grant' && !latest.has(key)) latest.set(key, approval);
      }
      const waiting = [...latest.values()].filter((a) => a.state === 'pending' && a.expiresAt > now);
      if (waiting.length > 0) return { status: 'pending_approval', task, approvals: waiting, warnings: [] };
      // One activation per task: the first to claim it decides; a concurrent one (a retry) is told so.
      const conflict = () => new WritError('ERR_TASK_STATE_CONFLICT', { detail: 'another activation of this task is under way' });
      if (!(await store.claimFact(`task.activation:${task.id}`, newId('act'), now))) throw conflict();
      try {
        return await activateClaimed(caller, task, latest, now);
      } catch (error) {
        // The claim is spent: a task this activation could not finish is ended, never left half-done.
        const ended = await store.transitionTask(task.id, ['pending_approval'], 'revoked', { at: clock.now(), endReason: 'revoked: its activation failed' }).catch(() => undefined);
        if (ended) {
          announceEnd(ended);
          await recordEnd(ended, caller.identity, 'its activation failed').catch(() => undefined);
        }
        throw error;
      }
    },

    getTask: visibleTask,

    async renewTask(caller, taskId, rawRequest) {
      const parsed = renewalRequestSchema.safeParse(rawRequest);
      if (!parsed.success) throw validationError(parsed.error.issues);
      const request = parsed.data;
      const task = await visibleTask(caller, taskId);
      // The holder renews, with the token being replaced: its binding (a client certificate) carries over.
      if (caller.taskId !== task.id) throw new WritError('ERR_FORBIDDEN', { detail: 'renew a task with its current task token' });
      // INVARIANT: a renewal replaces the token it was asked with. Two asked with one token race on the store's
      // compare-and-set of that token: one wins; the other finds it replaced, even when it reads the task after.
      const previousTokenId = caller.tokenId;
      if (previousTokenId === undefined || task.tokenId !== previousTokenId) throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: 'the token this renewal was asked with is no longer the task\'s: another renewal replaced it' });
      if (task.state !== 'active') {
        throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: `task is ${task.state}; only an active task renews`, extensions: { state: task.state } });
      }
      const now = clock.now();
      // Past its expiry (inside the clock skew, before the reaper): it is over, not renewable.
      if (task.expiresAt <= now) throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: 'task has expired; only an active task renews', extensions: { state: 'expired' } });
      const identity = caller.identity;
      const engine = options.policy();
      const warnings: string[] = [];
      const record = async (decision: AuditDecision, data: Record<string, unknown>, policies: readonly string[], refusal?: { code: WritErrorCode; detail: string }) =>
        audit.append({
          type: 'task.renewed',
          decision,
          ...(refusal === undefined ? {} : { reason: refusal.code, detail: refusal.detail }),
          actor: auditActor(identity),
          task: { id: task.id, purpose: task.purpose, intent: task.intent, environment: task.environment },
          policies: [...policies],
          policyVersion: engine.version,
          data: { checkpoint: request.checkpoint, renewals: task.renewals, previousJti: task.tokenId, ...data },
        });
      /** A refused renewal is a decision too: recorded, then thrown; the task is left as it was. */
      const refuse = async (code: WritErrorCode, detail: string, data: Record<string, unknown> = {}, extensions: Record<string, unknown> = {}, policies: readonly string[] = []): Promise<never> => {
        await record('deny', data, policies, { code, detail });
        throw new WritError(code, { detail, extensions });
      };

      if ((await store.getBreakGlassOfTask(task.id)) !== undefined) {
        return refuse('ERR_NOT_RENEWABLE', 'a break-glass grant is never renewed: ask for a new one, on the record');
      }
      const delegatorGone = await inactiveDelegator(registry, task.delegators, now);
      if (delegatorGone !== undefined) return refuse('ERR_NOT_RENEWABLE', delegatorGone);
      const parent = task.parentTaskId === null ? undefined : await store.getTask(task.parentTaskId);
      if (task.parentTaskId !== null && parent?.state !== 'active') return refuse('ERR_NOT_RENEWABLE', `the task it was delegated from is ${parent?.state ?? 'gone'}`);

      // How long: asked for (or the default), cut to the maximum TTL, and never past the task's lifetime or its parent.
      let ttl = request.ttl === undefined ? settings.defaultTtlSeconds : (parseDurationSeconds(request.ttl) ?? settings.defaultTtlSeconds);
      if (ttl > settings.maxTtlSeconds) {
        warnings.push(`ttl reduced from ${ttl}s to the maximum of ${settings.maxTtlSeconds}s`);
        ttl = settings.maxTtlSeconds;
      }
      const lifetimeEnds = task.createdAt + (settings.maxLifetimeSeconds ?? 28_800) * 1000;
      // Never past the task's lifetime, the task it was delegated from, or the identity it is for.
      const limits: [number, string, string][] = [
        [lifetimeEnds, 'the task has reached its maximum lifetime', "the task's maximum lifetime"],
        [parent?.expiresAt ?? Number.POSITIVE_INFINITY, 'the task it was delegated from expires now', 'the expiry of the task it was delegated from'],
        [identity.expiresAt ?? Number.POSITIVE_INFINITY, 'the identity it is for expires now', "the identity's own expiry"],
      ];
      const [limit, limitReached, limitName] = limits.reduce((earliest, each) => (each[0] < earliest[0] ? each : earliest));
      if (limit - now < 1000) return refuse('ERR_MAX_LIFETIME_REACHED', limitReached);
      let expiresAt = now + ttl * 1000;
      if (expiresAt > limit) {
        expiresAt = limit;
        warnings.push(`expiry cut to ${new Date(limit).toISOString()}: ${limitName}`);
      }

      // What it keeps: what it holds now (less any narrowing), or the part of it the request names.
      const held = options.narrowings === undefined ? task.grantedScopes : keptScopes(options.narrowings, task);
      const scopes = request.scopes === undefined ? [...held] : dedupeScopes(request.scopes);
      const notHeld = scopes.filter((scope) => findCoveringScope(held, scope) === undefined);
      if (notHeld.length > 0) {
        return refuse('ERR_SCOPE_NOT_GRANTED', `a renewal keeps what the task holds, never more: ${notHeld.map(formatScope).join(' ')}`, {}, { scopes: notHeld.map(formatScope) });
      }
      if (parent !== undefined) {
        // A delegated task is held to its parent as it stands now, as when it was delegated.
        const attenuated = attenuate(
          { scopes, expiresAt },
          { parentScopes: options.narrowings === undefined ? parent.grantedScopes : keptScopes(options.narrowings, parent), parentExpiresAt: parent.expiresAt, parentDepth: parent.lineage.length, maxDepth: settings.maxDelegationDepth ?? DEFAULT_MAX_DELEGATION_DEPTH },
        );
        if (!attenuated.ok) return refuse(attenuated.code, attenuated.detail, {}, attenuated.scopes.length > 0 ? { scopes: attenuated.scopes.map(formatScope) } : {});
      }

      // The fresh decision: every scope as a grant now, and a delegated task's delegation again.
      const decided = await decideGrant(engine, options.shadow?.(task.environment), options.observations, identity, task, scopes, now);
      const deciding = new Set(decided.deciding);
      if (parent !== undefined) {
        const delegator = await registry.get(parent.identityId);
        const delegate = delegator === undefined
          ? undefined
          : engine.decideTaskAction({
              principal: delegator,
              action: 'delegate',
              task: { id: task.id, intent: task.intent, purpose: task.purpose, environment: task.environment, delegationDepth: task.lineage.length, scopes },
              now,
              observed: await observeScopes(options.observations, delegator.id, scopes, now),
            });
        delegate?.policies.forEach((p) => deciding.add(p));
        if (delegate?.outcome !== 'allow') {
          return refuse('ERR_POLICY_DENIED', `policy no longer lets ${parent.identityId} delegate this slice`, { decisions: decided.decisions }, {}, [...deciding].sort());
        }
      }
      if (decided.refused.length > 0) {
        const code: WritErrorCode = decided.refused.every((r) => r.outcome === 'approval_required') ? 'ERR_APPROVAL_REQUIRED' : 'ERR_POLICY_DENIED';
        const refused = decided.refused.map((r) => ({ scope: formatScope(r), outcome: r.outcome }));
        return refuse(code, `policy no longer allows ${refused.map((r) => r.scope).join(' ')}`, { decisions: decided.decisions, refused }, { refusedScopes: refused, policies: [...deciding].sort() }, [...deciding].sort());
      }
      const limitRank = RISK_LEVELS.indexOf(settings.renewalRiskLimit ?? 'critical');
      const risky = decided.decisions.filter((d) => RISK_LEVELS.indexOf((d.risk as { level: RiskLevel }).level) >= limitRank);
      if (risky.length > 0) {
        return refuse('ERR_POLICY_DENIED', `risk has risen to ${settings.renewalRiskLimit ?? 'critical'} or more: ${risky.map((d) => String(d.scope)).join(' ')}`, { decisions: decided.decisions }, {}, [...deciding].sort());
      }

      // No task delegated from this one may outlive it: a shorter renewal is lengthened to cover them.
      const latestDescendant = Math.max(0, ...(await store.listDescendants(task.id)).map((d) => d.expiresAt));
      if (latestDescendant > expiresAt) {
        expiresAt = latestDescendant;
        warnings.push(`expiry kept until ${new Date(latestDescendant).toISOString()}: a task delegated from this one runs until then`);
      }
      const root = task.lineage.length === 0 ? task : await store.getTask(task.lineage[0] as string);
      if (root === undefined) return refuse('ERR_NOT_RENEWABLE', 'the run\'s root task is gone');
      const minted = mintTaskToken(options.taskKeys, {
        issuer: settings.issuer,
        audience: settings.audience,
        identityId: identity.id,
        task: { id: task.id, purpose: task.purpose, intent: task.intent },
        scopes,
        environment: task.environment,
        issuedAt: now,
        expiresAt,
        run: { root: { id: root.id, identityId: root.identityId, purpose: root.purpose, intent: root.intent, environment: root.environment }, lineage: task.lineage, delegators: task.delegators },
        mayAct: task.mayAct,
        ...(caller.certificateThumbprint === undefined ? {} : { certificateThumbprint: caller.certificateThumbprint }),
      });
      // A renewal that keeps less narrows the task: what was delegated from it is held to what it keeps.
      const narrowed = held.some((scope) => findCoveringScope(scopes, scope) === undefined);
      const renewed = await store.renewTask(task.id, { previousTokenId, previousExpiresAt: task.expiresAt, tokenId: minted.jti, expiresAt, grantedScopes: scopes, policyVersion: engine.version, at: now, narrowed });
      if (renewed === undefined) throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: 'the task ended, or another renewal replaced this token first' });
      if (narrowed) options.narrowings?.narrow(task.id, scopes, expiresAt);
      // INVARIANT: the replaced token is refused here before anything that can fail.
      bus.publish({ type: 'token.superseded', taskId: task.id, jti: previousTokenId, expiresAt: task.expiresAt });
      try {
        await record('allow', { jti: minted.jti, granted: scopes.map(formatScope), expiresAt, decisions: decided.decisions }, [...deciding].sort());
      } catch (error) {
        // The new token never left this function, and the old one is replaced: end the task rather than leave it unrecorded.
        const ended = await store.transitionTask(task.id, ['active'], 'revoked', { at: clock.now(), endReason: 'audit_unavailable' }).catch(() => undefined);
        if (ended) announceEnd(ended);
        throw error;
      }
      options.observations.recordGrant(identity.id, scopes);
      return { task: renewed, token: minted.token, expiresIn: Math.max(1, Math.floor((expiresAt - now) / 1000)), warnings };
    },


    async endTask(caller, taskId, to, note) {
      const current = await visibleTask(caller, taskId);
      const ended = await store.transitionTask(current.id, statesLeadingTo(to), to, {
        at: clock.now(),
        endReason: note === undefined ? to : `${to}: ${note}`,
      });
      if (ended === undefined) {
        const latest = (await store.getTask(current.id)) ?? current;
        throw new WritError('ERR_TASK_STATE_CONFLICT', {
          detail: `task is ${latest.state}; it cannot become ${to}`,
          extensions: { state: latest.state },
        });
      }
      // INVARIANT: revoke in memory before anything that can fail, so the token is refused from here on.
      announceEnd(ended);
      await recordEnd(ended, caller.identity, note);
      return ended;
    },

    async revokeTasksOf(identityId, reason) {
      const ended = await store.endTasksOfIdentity(identityId, 'revoked', { at: clock.now(), endReason: `revoked: ${reason}` });
      await announceAndRecord(ended, reason);
      return ended;
    },

    async endDescendants(taskId) {
      const ended = await store.endDescendants(taskId, 'revoked', { at: clock.now(), endReason: `revoked: ${taskId}, which it was delegated from, ended` });
      return announceAndRecord(ended, `${taskId}, which it was delegated from, ended`);
    },

    async reapExpired() {
      const expired = await store.expireTasks(clock.now());
      let count = await announceAndRecord(expired, 'ttl elapsed');
      // An identity whose own expiry passed (shortened after its tasks were granted: a grant never outlives it
      // otherwise) takes its tasks with it, as an end everyone hears: resource servers read it from the feed.
      const now = clock.now();
      count += await announceAndRecord(await store.revokeTasksOfExpiredIdentities(now, { at: now, endReason: 'revoked: identity expired' }), 'identity expired');
      // A cascade cut short (the process stopped between a parent's end and its children's) finishes here.
      for (const orphan of await store.listOrphanedTasks(500)) {
        const ended = await store.transitionTask(orphan.id, ['active', 'pending_approval'], 'revoked', { at: clock.now(), endReason: `revoked: ${orphan.parentTaskId ?? 'its parent'}, which it was delegated from, ended` });
        if (ended !== undefined) count += await announceAndRecord([ended], `${orphan.parentTaskId ?? 'its parent'}, which it was delegated from, ended`);
      }
      return count;
    },

    async flushEndRecords() {
      // Only ends older than a few seconds: a fresh one may still be recording on its own.
      const owed = await store.listTasksAwaitingEndAudit(clock.now() - END_RECORD_GRACE_MS, 500);
      for (const task of owed) await recordEnd(task, { id: task.identityId }, `recorded late: ${task.endReason ?? task.state}`);
      return owed.length;
    },
  };
}

/** What a grant-stage decision needs to know of its task: what a request asks for, or what a task holds. */
export interface GrantContext {
  readonly environment: string;
  readonly intent: string;
  readonly purpose: string;
  /** A delegated task's ancestors: its delegation depth is how many. */
  readonly lineage?: readonly string[];
}

/**
 * The input policy decides one scope of a grant with. The broker deciding a
 * request and drift deciding an active grant again after a policy change both
 * build it here, so the two can never decide a grant on different inputs.
 */
export async function grantDecisionInput(observations: Observations, principal: Identity, task: GrantContext, scope: Scope, now: number): Promise<DecisionInput> {
  return {
    principal,
    action: scope.action,
    resource: scope.resource,
    environment: task.environment,
    intent: task.intent,
    purpose: task.purpose,
    stage: 'grant',
    now,
    delegationDepth: task.lineage?.length ?? 0,
    observed: await observations.observe(principal.id, scope.resource, now),
  };
}

export interface GrantDecisions {
  readonly granted: Scope[];
  /** Allowed only with a human's approval (and not approved). */
  readonly pending: { readonly scope: Scope; readonly decision: PolicyDecision }[];
  /** Everything not granted, pending ones included, with why. */
  readonly refused: RefusedScope[];
  readonly deciding: Set<string>;
  readonly policyErrors: string[];
  readonly decisions: Record<string, unknown>[];
  readonly shadowed: (ShadowDecision & { scope: string })[];
}

/**
 * Decides each scope of a grant. `approved` holds the scopes (`formatScope`)
 * a human approved: they are decided with `approval: approved`, and allowed
 * only if policy then allows them.
 */
export async function decideGrant(
  engine: PolicyEngine,
  shadow: PolicyEngine | undefined,
  observations: Observations,
  identity: Identity,
  task: GrantContext,
  scopes: readonly Scope[],
  now: number,
  approved: ReadonlySet<string> = new Set(),
): Promise<GrantDecisions> {
  const result: GrantDecisions = { granted: [], pending: [], refused: [], deciding: new Set(), policyErrors: [], decisions: [], shadowed: [] };
  for (const scope of scopes) {
    if (engine.tierOf(scope.action) === undefined) {
      result.refused.push({ ...scope, outcome: 'deny', policies: [], reason: 'ERR_UNKNOWN_ACTION' });
      continue;
    }
    const base = await grantDecisionInput(observations, identity, task, scope, now);
    const input: DecisionInput = approved.has(formatScope(scope)) ? { ...base, approval: 'approved' } : base;
    const decision = engine.decide(input);
    result.decisions.push({ scope: formatScope(scope), outcome: decision.outcome, tier: decision.tier, sensitivity: decision.sensitivity, risk: riskRecord(decision.risk), ...(input.approval === undefined ? {} : { approval: input.approval }) });
    const would = decideShadow(shadow, input, decision);
    if (would !== undefined) result.shadowed.push({ scope: formatScope(scope), ...would });
    decision.policies.forEach((p) => result.deciding.add(p));
    result.policyErrors.push(...decision.errors);
    if (decision.outcome === 'allow') result.granted.push(scope);
    else if (decision.outcome === 'approval_required') {
      result.pending.push({ scope, decision });
      result.refused.push({ ...scope, outcome: 'approval_required', policies: decision.policies, reason: 'ERR_APPROVAL_REQUIRED' });
    } else result.refused.push({ ...scope, outcome: 'deny', policies: decision.policies, reason: 'ERR_POLICY_DENIED' });
  }
  return result;
}

/**
 * Appends a task's end to the audit chain and marks it recorded. If the
 * append fails the task stays ended (safe) and owes its record, which the
 * broker's `flushEndRecords` writes later: an end is never silently unrecorded.
 * `decidedBy` names the policy version and policies that ended it, when policy did
 * (drift); otherwise the record carries the version that granted the task.
 * @throws WritError ERR_AUDIT_UNAVAILABLE (the record is then owed)
 */
export async function recordTaskEnd(
  deps: { readonly audit: AuditLog; readonly store: Store },
  task: Task,
  actor: Pick<Identity, 'id'> & Partial<Identity>,
  note?: string,
  decidedBy?: { readonly policyVersion: string; readonly policies: readonly string[] },
): Promise<void> {
  const receipt = await deps.audit.append({
    type: 'task.ended',
    decision: 'deny',
    reason: task.state,
    ...(note === undefined ? {} : { detail: note }),
    actor: auditActor(actor),
    task: { id: task.id, purpose: task.purpose, intent: task.intent, environment: task.environment },
    ...(decidedBy === undefined ? { policyVersion: task.policyVersion } : { policies: decidedBy.policies, policyVersion: decidedBy.policyVersion }),
    ...(task.endedAt === null ? {} : { data: { endedAt: task.endedAt } }),
  });
  await deps.store.markTaskEndAudited(task.id, receipt.id);
}

export function dedupeScopes(scopes: readonly Scope[]): Scope[] {
  const seen = new Set<string>();
  const result: Scope[] = [];
  for (const scope of scopes) {
    const key = formatScope(scope);
    if (!seen.has(key)) {
      seen.add(key);
      result.push({ action: scope.action, resource: scope.resource });
    }
  }
  return result;
}

/** ERR_VALIDATION naming each field that failed (`errors`). */
export function validationError(issues: readonly { path: readonly PropertyKey[]; message: string }[]): WritError {
  const errors = issues.map((i) => ({ field: i.path.map(String).join('.'), message: i.message }));
  return new WritError('ERR_VALIDATION', {
    detail: errors.map((e) => `${e.field || '(body)'}: ${e.message}`).join('; '),
    extensions: { errors },
  });
}

/** The `typ` header of a compact JWS, read without trusting it (only to pick a verifier). */
export function peekTyp(token: string): string | undefined {
  const dot = token.indexOf('.');
  if (dot <= 0 || dot > 1024) return undefined;
  try {
    const header = JSON.parse(Buffer.from(token.slice(0, dot), 'base64url').toString('utf8')) as unknown;
    return typeof header === 'object' && header !== null && typeof (header as { typ?: unknown }).typ === 'string'
      ? (header as { typ: string }).typ
      : undefined;
  } catch {
    return undefined;
  }
}

/** A short, non-reversible handle for a token in audit records. */
export function tokenDigest(token: string): string {
  return `sha256:${createHash('sha256').update(token).digest('hex').slice(0, 32)}`;
}
