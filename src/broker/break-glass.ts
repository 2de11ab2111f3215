/**
 * Break-glass: an emergency grant, legitimate but loud.
 *
 * A human asks for it (for itself, or for an agent it owns) with a reason and
 * an incident reference. It is decided by the break-glass policy set, never
 * the normal one: the human must be allowed the task-level `break_glass`
 * action, and each scope is decided with `context.breakGlass`. It lasts at
 * most `breakGlass.maxDuration` (4 h at most); a longer request is refused,
 * not cut. Every call under it is decided by the same set and flagged
 * `breakGlass` on its audit record.
 *
 * Loud: its start goes to every webhook at once, and is logged as a warning.
 * When its task ends (expiry, completion, revocation) the end is recorded
 * with what was used under it, the credentials Writ injected first: those are
 * to be rotated. Its grant is never renewed. Afterwards a human other than
 * the one who broke the glass (and other than the agent it was for) closes a
 * review with a note; until then it is listed as owed.
 */
import { z } from 'zod';
import { auditActor, type AuditLog } from '../audit/log.js';
import { isoOrNull as iso, type Clock } from '../core/clock.js';
import { parseDurationSeconds } from '../core/config.js';
import { WritError } from '../core/errors.js';
import { looksLikeId, newId } from '../core/ids.js';
import { formatScope } from '../core/scope.js';
import type { BreakGlass, Identity, RefusedScope, Scope, Task } from '../core/types.js';
import type { EventBus } from '../events/bus.js';
import type { NotificationInput } from '../events/webhooks.js';
import { identityInactiveReason, type Registry } from '../identity/registry.js';
import { riskRecord, type PolicyEngine } from '../policy/engine.js';
import type { Observations } from '../policy/observations.js';
import type { Store } from '../store/store.js';
import type { KeyRing } from '../tokens/key-ring.js';
import { mintTaskToken } from '../tokens/task-token.js';
import { dedupeScopes, durationSchema, grantDecisionInput, plainText, recordTaskEnd, scopesSchema, slug, validationError, type Caller } from './broker.js';
import { isTerminal } from './task-states.js';

export const breakGlassRequestSchema = z
  .object({
    /** Why, in a sentence a reviewer will read. */
    reason: plainText(500).refine((r) => r.trim().length >= 10, 'a reason a reviewer can read: at least 10 characters'),
    /** The incident it is for: INC-4521, PD-Q1W2E3, JIRA-123. */
    incident: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:#/-]{0,63}$/, 'an incident reference such as INC-4521'),
    environment: slug,
    scopes: scopesSchema,
    /** Seconds or a duration such as `30m`; at most breakGlass.maxDuration. */
    duration: durationSchema.optional(),
    /** The agent the grant is for (one the caller owns); default: the caller itself. */
    identity: z.string().min(1).max(2048).optional(),
    /** Default `break-glass`. */
    intent: slug.optional(),
  })
  .strict();

export type BreakGlassRequest = z.input<typeof breakGlassRequestSchema>;

export interface BreakGlassStarted {
  readonly grant: BreakGlass;
  readonly task: Task;
  readonly token: string;
  readonly expiresIn: number;
  readonly refused: readonly RefusedScope[];
}

export interface BreakGlassOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly bus: EventBus;
  readonly clock: Clock;
  readonly registry: Registry;
  readonly observations: Observations;
  /** The break-glass engine; undefined when break-glass is off (no break-glass folder). */
  readonly policy: () => PolicyEngine | undefined;
  /** The normal engine: who reviews is who may approve in the environment. */
  readonly mainPolicy: () => PolicyEngine;
  readonly taskKeys: KeyRing;
  readonly notify?: (event: NotificationInput) => Promise<unknown>;
  /** Said loudly where operators look. */
  readonly warn?: (message: string, fields: Record<string, unknown>) => void;
  readonly settings: {
    readonly issuer: string;
    readonly audience: string;
    readonly defaultDurationSeconds: number;
    readonly maxDurationSeconds: number;
    readonly environments: readonly string[];
  };
}

export interface BreakGlassQuery {
  /** false (default): only grants still owed a review; true: only reviewed ones; undefined: all. */
  readonly reviewed?: boolean | undefined;
  readonly limit?: number;
}

export interface BreakGlassService {
  /**
   * Breaks the glass. Returns the task token (for the caller, or the agent it owns).
   * @throws WritError ERR_VALIDATION (no reason or incident, over the maximum
   *   duration), ERR_FORBIDDEN (not a human, not the agent's owner, a task
   *   token), ERR_BREAK_GLASS_OFF, ERR_POLICY_DENIED, ERR_AUDIT_UNAVAILABLE
   */
  start(caller: Caller, request: unknown): Promise<BreakGlassStarted>;
  /** For the human who broke the glass, the identity it was for, or a reviewer. @throws WritError ERR_NOT_FOUND */
  get(caller: Caller, id: string): Promise<BreakGlass>;
  /** Grants the caller may see, newest first. */
  list(caller: Caller, query?: BreakGlassQuery): Promise<BreakGlass[]>;
  /**
   * Ends a running grant now (its task is revoked everywhere).
   * @throws WritError ERR_NOT_FOUND, ERR_TASK_STATE_CONFLICT (already ended)
   */
  end(caller: Caller, id: string, note?: string): Promise<BreakGlass>;
  /**
   * Closes the post-incident review of an ended grant.
   * @throws WritError ERR_NOT_FOUND, ERR_FORBIDDEN (the one who broke it, or the identity it was for), ERR_TASK_STATE_CONFLICT (still running, or reviewed)
   */
  review(caller: Caller, id: string, note: string): Promise<BreakGlass>;
  /** Records what was used under task `taskId`'s grant (a no-op for other tasks). */
  use(taskId: string, items: readonly string[]): Promise<void>;
  /** The task ended: records the grant's end with what to rotate, once (every node hears it). */
  ended(taskId: string): Promise<BreakGlass | undefined>;
  /**
   * Records the end of every grant whose task ended without it being recorded
   * (it ran out while Writ was down, or a node stopped between the two).
   * Returns how many. The reaper runs it.
   */
  sweep(): Promise<number>;
}

export function createBreakGlass(options: BreakGlassOptions): BreakGlassService {
  const { store, audit, bus, clock, registry, settings } = options;
  /** Who ended a grant here, for the record of its end (heard through the bus right after). */
  const endedBy = new Map<string, Pick<Identity, 'id'> & Partial<Identity>>();

  const notify = async (type: string, grant: BreakGlass, summary: string, extra: Record<string, unknown> = {}): Promise<void> => {
    await options.notify?.({ type, at: clock.now(), summary, fields: fieldsOf(grant), data: { breakGlass: breakGlassView(grant), ...extra } }).catch(() => undefined);
  };

  /** A human `identity` may act for `target`: itself, or an agent or service whose owner it is (its id, or its email label). */
  const owns = (human: Identity, target: Identity): boolean =>
    target.id === human.id || (target.owner !== null && (target.owner === human.id || (human.labels.email !== undefined && target.owner === human.labels.email)));

  /**
   * Who reviews: a human the normal policy lets approve in the grant's
   * environment, never its requester or the identity it was for, nor another
   * identity of the same person (the same `email` label).
   */
  const mayReview = async (caller: Caller, grant: BreakGlass): Promise<boolean> => {
    const human = caller.identity;
    if (caller.taskId !== undefined || human.actorType !== 'human' || (await conflicted(human, grant))) return false;
    if (identityInactiveReason(human, clock.now()) !== undefined) return false;
    const decision = options.mainPolicy().decideTaskAction({
      principal: human,
      action: 'approve',
      task: { id: grant.taskId, intent: 'break-glass', purpose: grant.reason, environment: grant.environment, delegationDepth: 0, scopes: grant.scopes },
      now: clock.now(),
      observed: await options.observations.observe(human.id, grant.scopes[0]?.resource ?? 'task', clock.now()),
    });
    return decision.outcome === 'allow';
  };

  /** The human is, or is the same person as, who broke the glass or who it was for. */
  const conflicted = async (human: Identity, grant: BreakGlass): Promise<boolean> => {
    if (human.id === grant.requestedBy || human.id === grant.identityId) return true;
    const email = human.labels.email;
    if (email === undefined) return false;
    const [requester, target] = await Promise.all([registry.get(grant.requestedBy), registry.get(grant.identityId)]);
    return requester?.labels.email === email || target?.labels.email === email || target?.owner === email;
  };

  const involved = (caller: Caller, grant: BreakGlass): boolean =>
    caller.identity.id === grant.requestedBy || (caller.identity.id === grant.identityId && (caller.taskId === undefined || caller.taskId === grant.taskId));

  const find = async (caller: Caller, id: string): Promise<BreakGlass> => {
    const grant = looksLikeId('brk', id) ? await store.getBreakGlass(id) : undefined;
    if (grant === undefined || !(involved(caller, grant) || (await mayReview(caller, grant)))) throw new WritError('ERR_NOT_FOUND', { detail: 'no such break-glass grant visible to the caller' });
    return grant;
  };

  return {
    async start(caller, raw) {
      const parsed = breakGlassRequestSchema.safeParse(raw);
      if (!parsed.success) throw validationError(parsed.error.issues);
      const request = parsed.data;
      if (!settings.environments.includes(request.environment)) throw validationError([{ path: ['environment'], message: `one of ${settings.environments.join(', ')}` }]);
      const seconds = request.duration === undefined ? settings.defaultDurationSeconds : (parseDurationSeconds(request.duration) ?? 0);
      if (seconds > settings.maxDurationSeconds) {
        throw validationError([{ path: ['duration'], message: `at most ${settings.maxDurationSeconds}s (breakGlass.maxDuration): break-glass is time-boxed` }]);
      }
      if (caller.taskId !== undefined) throw new WritError('ERR_FORBIDDEN', { detail: 'break the glass with your own identity token, not a task token' });
      const human = caller.identity;
      if (human.actorType !== 'human') throw new WritError('ERR_FORBIDDEN', { detail: 'only a human breaks the glass, for itself or for an agent it owns' });
      const engine = options.policy();
      if (engine === undefined) throw new WritError('ERR_BREAK_GLASS_OFF');

      let target = human;
      if (request.identity !== undefined && request.identity !== human.id) {
        const agent = await registry.get(request.identity);
        // An identity the caller does not own is reported like a missing one.
        if (agent === undefined || !owns(human, agent)) throw new WritError('ERR_FORBIDDEN', { detail: 'break the glass only for yourself or an identity you own' });
        const inactive = identityInactiveReason(agent, clock.now());
        if (inactive !== undefined) throw new WritError('ERR_IDENTITY_INACTIVE', { detail: inactive });
        target = agent;
      }

      const now = clock.now();
      const taskId = newId('task');
      const intent = request.intent ?? 'break-glass';
      const purpose = `break-glass ${request.incident}: ${request.reason}`.slice(0, 500);
      const scopes = dedupeScopes(request.scopes);
      const taskFacts = { environment: request.environment, intent, purpose };

      // Who may break it: the break-glass set's `break_glass` action, never the normal set.
      const allowed = engine.decideTaskAction({
        principal: human,
        action: 'break_glass',
        task: { id: taskId, intent, purpose, environment: request.environment, delegationDepth: target.id === human.id ? 0 : 1, scopes },
        now,
        breakGlass: true,
        observed: await options.observations.observe(human.id, scopes[0]?.resource ?? 'task', now),
      });
      const granted: Scope[] = [];
      const refused: RefusedScope[] = [];
      const decisions: Record<string, unknown>[] = [];
      const deciding = new Set(allowed.policies);
      if (allowed.outcome === 'allow') {
        for (const scope of scopes) {
          if (engine.tierOf(scope.action) === undefined) {
            refused.push({ ...scope, outcome: 'deny', policies: [], reason: 'ERR_UNKNOWN_ACTION' });
            continue;
          }
          const decision = engine.decide({ ...(await grantDecisionInput(options.observations, target, taskFacts, scope, now)), breakGlass: true });
          decisions.push({ scope: formatScope(scope), outcome: decision.outcome, tier: decision.tier, risk: riskRecord(decision.risk) });
          decision.policies.forEach((p) => deciding.add(p));
          // No approval inside an emergency grant: what needs one is not in it.
          if (decision.outcome === 'allow') granted.push(scope);
          else refused.push({ ...scope, outcome: 'deny', policies: decision.policies, reason: decision.outcome === 'approval_required' ? 'ERR_APPROVAL_REQUIRED' : 'ERR_POLICY_DENIED' });
        }
      }
      const base = {
        actor: auditActor(human),
        task: { id: taskId, purpose, intent, environment: request.environment },
        policies: [...deciding].sort(),
        policyVersion: engine.version,
        breakGlass: true,
      } as const;
      if (granted.length === 0) {
        await audit
          .append({
            type: 'break_glass.started',
            decision: 'deny',
            reason: 'ERR_POLICY_DENIED',
            detail: allowed.outcome === 'allow' ? 'the break-glass set allows none of the scopes' : `${human.id} may not break the glass here`,
            ...base,
            data: { for: target.id, reason: request.reason, incident: request.incident, refused: refused.map(formatScope), decisions },
          })
          .catch(() => undefined);
        throw new WritError('ERR_POLICY_DENIED', { detail: 'the break-glass policy set refused this', extensions: { policies: [...deciding].sort() } });
      }

      // Never past the identity's own expiry, like every grant.
      const expiresAt = Math.min(now + seconds * 1000, target.expiresAt ?? Number.POSITIVE_INFINITY);
      const minted = mintTaskToken(options.taskKeys, {
        issuer: settings.issuer,
        audience: settings.audience,
        identityId: target.id,
        task: { id: taskId, purpose, intent, breakGlass: true },
        scopes: granted,
        environment: request.environment,
        issuedAt: now,
        expiresAt,
        // Bound to the caller's certificate only when the grant is for the caller.
        ...(target.id === human.id && caller.certificateThumbprint !== undefined ? { certificateThumbprint: caller.certificateThumbprint } : {}),
      });
      const task: Task = {
        id: taskId,
        identityId: target.id,
        purpose,
        intent,
        environment: request.environment,
        requestedScopes: scopes,
        grantedScopes: granted,
        refusedScopes: refused,
        state: 'active',
        policyVersion: engine.version,
        parentTaskId: null,
        lineage: [],
        delegators: [],
        mayAct: null,
        renewals: 0,
        tokenId: minted.jti,
        createdAt: now,
        expiresAt,
        endedAt: null,
        endReason: null,
      };
      await store.createTask(task);
      const id = newId('brk');
      await store.createBreakGlass({ id, taskId, identityId: target.id, requestedBy: human.id, reason: request.reason, incident: request.incident, environment: request.environment, scopes: granted, createdAt: now, expiresAt });
      try {
        await audit.append({
          type: 'break_glass.started',
          decision: refused.length > 0 ? 'partial' : 'allow',
          detail: `${human.id} broke the glass for ${request.incident}`,
          ...base,
          data: {
            breakGlassId: id,
            for: target.id,
            reason: request.reason,
            incident: request.incident,
            granted: granted.map(formatScope),
            refused: refused.map((r) => ({ scope: formatScope(r), reason: r.reason, policies: r.policies })),
            expiresAt,
            jti: minted.jti,
            renewable: false,
            decisions,
          },
        });
      } catch (error) {
        // The token never left: make sure the task cannot be used either.
        const ended = await store.transitionTask(taskId, ['active'], 'revoked', { at: clock.now(), endReason: 'audit_unavailable' }).catch(() => undefined);
        if (ended) bus.publish({ type: 'task.ended', taskId, state: ended.state, expiresAt });
        throw error;
      }
      const grant = (await store.getBreakGlass(id)) ?? { id, taskId, identityId: target.id, requestedBy: human.id, reason: request.reason, incident: request.incident, environment: request.environment, scopes: granted, createdAt: now, expiresAt, endedAt: null, endState: null, reviewedAt: null, reviewedBy: null, reviewNote: null, used: [] };
      options.warn?.('break-glass grant started', { breakGlassId: id, by: human.id, for: target.id, incident: request.incident, until: new Date(expiresAt).toISOString() });
      await notify('break_glass.started', grant, `BREAK-GLASS: ${human.id} broke the glass for ${request.incident} (${target.id}, ${request.environment}, until ${new Date(expiresAt).toISOString()})`);
      return { grant, task, token: minted.token, expiresIn: seconds, refused };
    },

    get: find,

    async list(caller, query = {}) {
      const limit = Math.min(Math.max(query.limit ?? 50, 1), 200);
      const reviewed = 'reviewed' in query ? query.reviewed : false;
      const visible: BreakGlass[] = [];
      let beforeId: string | undefined;
      for (let page = 0; page < 20 && visible.length < limit; page += 1) {
        const rows = await store.listBreakGlass({ ...(reviewed === undefined ? {} : { reviewed }), ...(beforeId === undefined ? {} : { beforeId }), limit: 200 });
        for (const grant of rows) {
          if (involved(caller, grant) || (await mayReview(caller, grant))) visible.push(grant);
          if (visible.length === limit) break;
        }
        if (rows.length < 200) break;
        beforeId = rows[rows.length - 1]?.id;
      }
      return visible;
    },

    async end(caller, id, note) {
      const grant = await find(caller, id);
      const ended = await store.transitionTask(grant.taskId, ['active'], 'revoked', { at: clock.now(), endReason: `revoked: break-glass ended${note === undefined ? '' : `: ${note}`}` });
      if (ended === undefined) throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: 'the break-glass grant has already ended' });
      // The record of its end names who ended it, whichever path records it first.
      endedBy.set(ended.id, caller.identity);
      // INVARIANT: refused in memory before anything that can fail.
      bus.publish({ type: 'task.ended', taskId: ended.id, state: ended.state, expiresAt: ended.expiresAt });
      await recordTaskEnd({ audit, store }, ended, caller.identity, note ?? 'break-glass ended');
      return (await this.ended(ended.id)) ?? (await store.getBreakGlass(id)) ?? grant;
    },

    async review(caller, id, note) {
      const text = plainText(2000).safeParse(note);
      if (!text.success) throw validationError(text.error.issues.map((i) => ({ ...i, path: ['note'] })));
      const grant = looksLikeId('brk', id) ? await store.getBreakGlass(id) : undefined;
      if (grant === undefined) throw new WritError('ERR_NOT_FOUND', { detail: 'no such break-glass grant visible to the caller' });
      if (!(await mayReview(caller, grant))) {
        if (involved(caller, grant) || (await conflicted(caller.identity, grant))) throw new WritError('ERR_FORBIDDEN', { detail: 'who broke the glass (or was given it) does not review it' });
        throw new WritError('ERR_NOT_FOUND', { detail: 'no such break-glass grant visible to the caller' });
      }
      const reviewed = await store.reviewBreakGlass(id, { by: caller.identity.id, note: text.data, at: clock.now() });
      if (reviewed === undefined) {
        const now = await store.getBreakGlass(id);
        throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: now?.reviewedAt != null ? 'already reviewed' : 'still running: end it first, then review it' });
      }
      await audit.append({
        type: 'break_glass.reviewed',
        decision: 'allow',
        actor: auditActor(caller.identity),
        task: { id: reviewed.taskId, environment: reviewed.environment },
        breakGlass: true,
        data: { breakGlassId: id, note: text.data, incident: reviewed.incident, used: reviewed.used },
      });
      await notify('break_glass.reviewed', reviewed, `Break-glass ${reviewed.incident} reviewed by ${caller.identity.id}`);
      return reviewed;
    },

    async sweep() {
      let recorded = 0;
      for (const grant of await store.listBreakGlass({ reviewed: false, limit: 200 })) {
        if (grant.endedAt !== null) continue;
        const task = await store.getTask(grant.taskId);
        if (task !== undefined && isTerminal(task.state) && (await this.ended(grant.taskId)) !== undefined) recorded += 1;
      }
      return recorded;
    },

    async use(taskId, items) {
      if (items.length > 0) await store.recordBreakGlassUse(taskId, items);
    },

    async ended(taskId) {
      const task = await store.getTask(taskId);
      if (task === undefined || !isTerminal(task.state)) return undefined;
      const grant = await store.endBreakGlass(taskId, task.state, task.endedAt ?? clock.now());
      const by = endedBy.get(taskId);
      endedBy.delete(taskId);
      if (grant === undefined) return undefined;
      const rotate = grant.used.filter((u) => u.startsWith('secret:')).map((u) => u.slice('secret:'.length));
      await audit
        .append({
          type: 'break_glass.ended',
          decision: 'deny',
          reason: task.state,
          detail: rotate.length > 0 ? `rotate: ${rotate.join(', ')}` : 'no injected credential was used',
          // Who ended it here; otherwise it ran out or was revoked elsewhere, and its requester answers for it.
          actor: by === undefined ? { id: grant.requestedBy } : auditActor(by),
          task: { id: taskId, purpose: task.purpose, intent: task.intent, environment: task.environment },
          breakGlass: true,
          data: { breakGlassId: grant.id, for: grant.identityId, incident: grant.incident, state: task.state, used: grant.used, rotate, reviewOwed: true },
        })
        .catch(() => undefined);
      options.warn?.('break-glass grant ended; review owed', { breakGlassId: grant.id, state: task.state, rotate });
      await notify('break_glass.ended', grant, `Break-glass ${grant.incident} ended (${task.state}); ${rotate.length > 0 ? `rotate ${rotate.join(', ')}` : 'no injected credential used'}; review owed`, { rotate });
      return grant;
    },
  };
}

/** The JSON shape of a break-glass grant in API responses, the CLI and webhooks. */
export function breakGlassView(grant: BreakGlass) {
  return {
    id: grant.id,
    task: grant.taskId,
    identity: grant.identityId,
    requestedBy: grant.requestedBy,
    reason: grant.reason,
    incident: grant.incident,
    environment: grant.environment,
    scopes: grant.scopes,
    state: grant.endedAt === null ? 'running' : grant.reviewedAt === null ? 'review_owed' : 'reviewed',
    createdAt: iso(grant.createdAt),
    expiresAt: iso(grant.expiresAt),
    endedAt: iso(grant.endedAt),
    endState: grant.endState,
    renewable: false,
    used: grant.used,
    rotate: grant.used.filter((u) => u.startsWith('secret:')).map((u) => u.slice('secret:'.length)),
    reviewedAt: iso(grant.reviewedAt),
    reviewedBy: grant.reviewedBy,
    reviewNote: grant.reviewNote,
  };
}

function fieldsOf(grant: BreakGlass): { label: string; value: string }[] {
  return [
    { label: 'Incident', value: grant.incident },
    { label: 'Reason', value: grant.reason },
    { label: 'Broken by', value: grant.requestedBy },
    { label: 'For', value: grant.identityId },
    { label: 'Environment', value: grant.environment },
    { label: 'Scopes', value: grant.scopes.map(formatScope).join(', ') },
    { label: 'Until', value: new Date(grant.expiresAt).toISOString() },
    ...(grant.used.length > 0 ? [{ label: 'Used', value: grant.used.join(', ') }] : []),
    { label: 'Grant', value: grant.id },
  ];
}
