/**
 * Drift: when the policy set changes, every active grant is decided again by
 * the new set, scope by scope, with the same grant-stage input the broker
 * decides a request with (`grantDecisionInput`, fresh context). Only `allow`
 * keeps a scope; `deny` and `approval_required` drop it.
 *
 * - every scope kept: the grant stands and now carries the new policy version;
 * - some dropped: the grant is narrowed. The token still carries every scope it
 *   was minted with, so the narrowing list refuses the dropped ones in this
 *   process at once and other nodes read the narrowing at their next sync;
 *   a `task.narrowed` record names the dropped scopes and the deciding policies;
 * - none kept: the task is revoked (`revoked: policy_drift`), like any task end.
 *
 * Fail closed: a task that cannot be decided again (an error, its identity
 * gone) is revoked; a narrowing that cannot be recorded becomes a revocation;
 * a revocation the store cannot take narrows the task to nothing in this
 * process. Nothing here throws: a reload is never undone by its re-decision.
 *
 * A request decided by the old set while the new one was swapped in may write
 * its task after the re-decision has passed it. `sweep` closes that gap: it
 * decides again active grants that still carry a version this process has
 * replaced, for as long as such a grant's token could live.
 */
import { auditActor, type AuditLog } from '../audit/log.js';
import type { Clock } from '../core/clock.js';
import { formatScope } from '../core/scope.js';
import type { Identity, RefusedScope, Scope, Task } from '../core/types.js';
import type { NarrowingList } from '../enforce/narrowing-list.js';
import type { EventBus } from '../events/bus.js';
import { identityInactiveReason } from '../identity/registry.js';
import type { DecisionInput, PolicyDecision, PolicyEngine } from '../policy/engine.js';
import { observeScopes, type Observations } from '../policy/observations.js';
import type { Store } from '../store/store.js';
import { grantDecisionInput, recordTaskEnd } from './broker.js';

/** The end reason of a task revoked because policy no longer allows any of its scopes. */
export const DRIFT_END_REASON = 'revoked: policy_drift';

/** What one re-decision did. `revoked` includes `failed`. */
export interface DriftSummary {
  readonly trigger: string;
  /** The policy version the new set replaced. */
  readonly previous: string;
  readonly version: string;
  readonly redecided: number;
  readonly kept: number;
  readonly narrowed: number;
  readonly revoked: number;
  /** Tasks that could not be decided again and were revoked (fail closed), or left refused in this process. */
  readonly failed: number;
  /** False when the active tasks could not all be listed; the next sweep decides the rest. */
  readonly complete: boolean;
}

export interface Drift {
  /**
   * Decides again, with `engine`, every active grant another policy version
   * decided; appends a `policy.drift` summary. Never throws.
   */
  redecide(engine: PolicyEngine, previous: string, trigger: string): Promise<DriftSummary>;
  /**
   * Decides again, with the engine `policy` returns when the sweep runs
   * (ticks wait behind a reload's pass), active grants still carrying a version this
   * process replaced within `retireMs` (written by a request decided by the old
   * set while the re-decision ran), and finishes a re-decision that could not
   * list every task. Undefined when there was nothing to decide. Never throws.
   */
  sweep(policy: () => PolicyEngine): Promise<DriftSummary | undefined>;
  /** Resolves once every re-decision and sweep started so far has settled. */
  idle(): Promise<void>;
}

export interface DriftOptions {
  readonly store: Store;
  readonly observations: Observations;
  readonly audit: AuditLog;
  readonly bus: EventBus;
  readonly clock: Clock;
  readonly narrowings: NarrowingList;
  /** How long a replaced version's grants are swept for: the longest task TTL plus the clock skew. */
  readonly retireMs: number;
  /** Active tasks read per page. Default 200. */
  readonly pageSize?: number;
  /** Told about every failure: what it meant (`what`), and the task, if one. */
  readonly onError?: (error: unknown, what: string, taskId?: string) => void;
}

/** A grant decided again, scope by scope. */
export interface Redecision {
  readonly kept: readonly Scope[];
  readonly dropped: readonly (RefusedScope & { readonly errors?: readonly string[] })[];
  /** The policies that dropped scopes (forbids, or the approval permits), sorted. */
  readonly policies: readonly string[];
}

/**
 * Sorts a grant's scopes by their new decisions: only `allow` keeps a scope.
 * Pure; `decisions[i]` is the decision on `scopes[i]`.
 */
export function sortRedecision(scopes: readonly Scope[], decisions: readonly PolicyDecision[]): Redecision {
  const kept: Scope[] = [];
  const dropped: (RefusedScope & { errors?: readonly string[] })[] = [];
  const policies = new Set<string>();
  scopes.forEach((scope, i) => {
    const decision = decisions[i];
    if (decision?.outcome === 'allow') {
      kept.push({ action: scope.action, resource: scope.resource });
      return;
    }
    const outcome = decision?.outcome ?? 'deny';
    decision?.policies.forEach((p) => policies.add(p));
    dropped.push({
      action: scope.action,
      resource: scope.resource,
      outcome,
      policies: decision?.policies ?? [],
      reason: outcome === 'approval_required' ? 'ERR_APPROVAL_REQUIRED' : 'ERR_POLICY_DENIED',
      ...(decision !== undefined && decision.errors.length > 0 ? { errors: decision.errors } : {}),
    });
  });
  return { kept, dropped, policies: [...policies].sort() };
}

type TaskOutcome = 'kept' | 'narrowed' | 'revoked' | 'failed' | 'skipped';

const CONCURRENCY = 8;
/** Re-reads of a grant that changed under us before the task is given up on (and revoked). */
const ATTEMPTS = 3;
/** Task ids named in a summary record; the counts are always whole. */
const SUMMARY_IDS = 100;

export function createDrift(options: DriftOptions): Drift {
  const { store, audit, bus, clock, narrowings } = options;
  const pageSize = options.pageSize ?? 200;
  /** Versions this process replaced, and when: their grants are swept until `retireMs` has passed. */
  const retired = new Map<string, number>();
  /** A re-decision that could not list every task: the next sweep runs it again. */
  let unfinished: { previous: string; trigger: string } | undefined;
  /** The sweep waiting to run, if any: ticks that come meanwhile join it rather than queue up behind a long pass. */
  let sweeping: Promise<DriftSummary | undefined> | undefined;
  // One re-decision at a time; a sweep never interleaves with a reload's pass.
  let queue: Promise<unknown> = Promise.resolve();
  const serially = <T>(work: () => Promise<T>): Promise<T> => {
    const next = queue.then(work);
    queue = next.catch(() => undefined);
    return next;
  };

  /**
   * Ends the task as `revoked: policy_drift`: refused in this process at once,
   * elsewhere at the next sync, recorded (or owed). False when it had already ended.
   */
  const revoke = async (task: Task, engine: PolicyEngine, note: string, policies: readonly string[]): Promise<boolean> => {
    const ended = await store.transitionTask(task.id, ['active'], 'revoked', { at: clock.now(), endReason: DRIFT_END_REASON });
    if (ended === undefined) return false;
    // INVARIANT: revoke in memory before anything that can fail.
    bus.publish({ type: 'task.ended', taskId: ended.id, state: ended.state, expiresAt: ended.expiresAt });
    // An end whose record cannot be written stands; its record is owed and flushed by the reaper.
    await recordTaskEnd({ audit, store }, ended, { id: ended.identityId }, note, { policyVersion: engine.version, policies }).catch((error: unknown) =>
      options.onError?.(error, 'the end of a task revoked by drift could not be recorded; its record is owed', ended.id),
    );
    return true;
  };

  const recordNarrowing = (task: Task, previousVersion: string, engine: PolicyEngine, decided: Redecision, identity: Identity) =>
    audit.append({
      type: 'task.narrowed',
      decision: 'partial',
      reason: 'policy_drift',
      detail: `${decided.dropped.length} of ${decided.dropped.length + decided.kept.length} scopes no longer hold under ${engine.version}`,
      actor: auditActor(identity),
      task: { id: task.id, purpose: task.purpose, intent: task.intent, environment: task.environment },
      policies: decided.policies,
      policyVersion: engine.version,
      data: {
        previousVersion,
        kept: decided.kept.map(formatScope),
        dropped: decided.dropped.map((d) => ({ scope: formatScope(d), outcome: d.outcome, policies: d.policies, ...(d.errors ? { errors: d.errors } : {}) })),
        expiresAt: task.expiresAt,
      },
    });

  /** Decides one task again. Throws only for errors, which the caller turns into a revocation. */
  const redecideTask = async (first: Task, engine: PolicyEngine, identities: Map<string, Promise<Identity | undefined>>): Promise<TaskOutcome> => {
    let task: Task | undefined = first;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (task === undefined || task.state !== 'active') return 'skipped';
      // Another pass (here or on another node) already decided it with this very set.
      if (task.policyVersion === engine.version) return 'skipped';
      let pending = identities.get(task.identityId);
      if (pending === undefined) {
        pending = store.getIdentity(task.identityId);
        identities.set(task.identityId, pending);
      }
      const identity = await pending;
      const now = clock.now();
      const inactive = identity === undefined ? 'identity is no longer registered' : identityInactiveReason(identity, now);
      if (identity === undefined || inactive !== undefined) throw new Error(`cannot decide the grant again: ${inactive}`);
      const current: Task = task;
      const inputs: DecisionInput[] = [];
      for (const scope of current.grantedScopes) inputs.push(await grantDecisionInput(options.observations, identity, current, scope, now));
      const decided = sortRedecision(current.grantedScopes, inputs.map((input) => engine.decide(input)));

      // A delegated task stands on two decisions: the worker's grant (above) and its delegator's `delegate` step.
      const delegatorId = current.delegators.at(-1);
      if (delegatorId !== undefined) {
        let delegating = identities.get(delegatorId);
        if (delegating === undefined) {
          delegating = store.getIdentity(delegatorId);
          identities.set(delegatorId, delegating);
        }
        const delegator = await delegating;
        const scopes = decided.kept.length > 0 ? decided.kept : current.grantedScopes;
        const step =
          delegator === undefined
            ? undefined
            : engine.decideTaskAction({
                principal: delegator,
                action: 'delegate',
                task: { id: current.id, intent: current.intent, purpose: current.purpose, environment: current.environment, delegationDepth: current.lineage.length, scopes },
                now,
                observed: await observeScopes(options.observations, delegator.id, scopes, now),
              });
        if (step?.outcome !== 'allow') {
          const note = `policy_drift: the delegation from ${delegatorId} no longer holds under ${engine.version}`;
          if (await revoke(current, engine, note, step?.policies ?? [])) return 'revoked';
          task = await store.getTask(current.id);
          continue;
        }
      }

      if (decided.dropped.length === 0) {
        const updated = await store.updateGrant(current.id, current, { grantedScopes: current.grantedScopes, refusedScopes: current.refusedScopes, policyVersion: engine.version });
        if (updated !== undefined) return 'kept';
      } else if (decided.kept.length === 0) {
        const note = `policy_drift: no granted scope holds under ${engine.version} (${decided.dropped.map(formatScope).join(', ')})`;
        if (await revoke(current, engine, note, decided.policies)) return 'revoked';
      } else {
        // INVARIANT: refuse the dropped scopes in memory before anything that can fail.
        // If the write below loses a race, this stays: stricter, never wider.
        narrowings.narrow(current.id, decided.kept, current.expiresAt);
        const updated = await store.updateGrant(current.id, current, {
          grantedScopes: decided.kept,
          refusedScopes: [...current.refusedScopes, ...decided.dropped.map(({ errors: _errors, ...refused }) => refused)],
          policyVersion: engine.version,
          narrowedAt: now,
        });
        if (updated !== undefined) {
          try {
            await recordNarrowing(updated, current.policyVersion, engine, decided, identity);
          } catch (error) {
            // A narrowing that is not on the record does not stand: the task is revoked instead (recorded, or owed).
            options.onError?.(error, 'a narrowing could not be recorded; the task is revoked instead', current.id);
            await revoke(updated, engine, `policy_drift: narrowed under ${engine.version}, but the narrowing could not be recorded`, decided.policies);
            return 'revoked';
          }
          return 'narrowed';
        }
      }
      // The grant changed or the task ended meanwhile: read it again and decide again.
      task = await store.getTask(current.id);
    }
    throw new Error('the grant kept changing while it was decided again');
  };

  /** Decides one task again; an error revokes it (fail closed). */
  const settle = async (task: Task, engine: PolicyEngine, identities: Map<string, Promise<Identity | undefined>>): Promise<TaskOutcome> => {
    try {
      return await redecideTask(task, engine, identities);
    } catch (error) {
      options.onError?.(error, 'a task could not be decided again; it is revoked (fail closed)', task.id);
      const note = `policy_drift: could not be decided again under ${engine.version} (${(error as Error)?.message ?? String(error)}); revoked, failing closed`;
      try {
        return (await revoke(task, engine, note, [])) ? 'failed' : 'skipped';
      } catch (revokeError) {
        // The store would not take the revocation: at least this process refuses every scope.
        options.onError?.(revokeError, 'a task that could not be decided again could not be revoked either; this process refuses all its scopes', task.id);
        narrowings.narrow(task.id, [], task.expiresAt);
        return 'failed';
      }
    }
  };

  const pass = async (engine: PolicyEngine, previous: string, trigger: string, versions: readonly string[] | undefined): Promise<DriftSummary> => {
    const counts: Record<TaskOutcome, number> = { kept: 0, narrowed: 0, revoked: 0, failed: 0, skipped: 0 };
    const named = { narrowed: [] as string[], revoked: [] as string[] };
    const identities = new Map<string, Promise<Identity | undefined>>();
    let complete = true;
    let afterId: string | undefined;
    try {
      for (;;) {
        const page = await store.listActiveTasks({
          ...(versions === undefined ? { policyVersionNot: engine.version } : { policyVersionIn: versions }),
          ...(afterId === undefined ? {} : { afterId }),
          limit: pageSize,
        });
        for (let i = 0; i < page.length; i += CONCURRENCY) {
          const chunk = page.slice(i, i + CONCURRENCY);
          const outcomes = await Promise.all(chunk.map((task) => settle(task, engine, identities)));
          outcomes.forEach((outcome, j) => {
            counts[outcome]++;
            const id = chunk[j]!.id;
            if (outcome === 'narrowed' && named.narrowed.length < SUMMARY_IDS) named.narrowed.push(id);
            if ((outcome === 'revoked' || outcome === 'failed') && named.revoked.length < SUMMARY_IDS) named.revoked.push(id);
          });
        }
        if (page.length < pageSize) break;
        afterId = page.at(-1)!.id;
      }
    } catch (error) {
      // The tasks could not be listed: those not reached are decided by the next sweep.
      options.onError?.(error, 'the active tasks could not be listed; the next sweep decides the rest');
      complete = false;
    }
    const summary: DriftSummary = {
      trigger,
      previous,
      version: engine.version,
      redecided: counts.kept + counts.narrowed + counts.revoked + counts.failed,
      kept: counts.kept,
      narrowed: counts.narrowed,
      revoked: counts.revoked + counts.failed,
      failed: counts.failed,
      complete,
    };
    if (versions === undefined || summary.redecided > 0 || !complete) {
      await audit
        .append({
          type: 'policy.drift',
          reason: 'policy_drift',
          ...(complete ? {} : { detail: 'the active tasks could not all be listed; the rest are decided at the next sweep' }),
          policyVersion: engine.version,
          data: { ...summary, narrowedTasks: named.narrowed, revokedTasks: named.revoked },
        })
        .catch((error: unknown) => options.onError?.(error, 'the drift summary could not be recorded'));
    }
    return summary;
  };

  return {
    redecide: (engine, previous, trigger) =>
      serially(async () => {
        const now = clock.now();
        retired.delete(previous);
        retired.set(previous, now);
        // A version serving again (a rollback) is no longer a replaced one.
        retired.delete(engine.version);
        const summary = await pass(engine, previous, trigger, undefined);
        unfinished = summary.complete ? undefined : { previous, trigger };
        return summary;
      }),
    sweep(policy) {
      sweeping ??= serially(async () => {
        sweeping = undefined;
        const engine = policy();
        if (unfinished !== undefined) {
          const { previous, trigger } = unfinished;
          const summary = await pass(engine, previous, `${trigger} (finished by a sweep)`, undefined);
          if (summary.complete) unfinished = undefined;
          return summary;
        }
        const now = clock.now();
        for (const [version, at] of retired) if (at + options.retireMs < now || version === engine.version) retired.delete(version);
        if (retired.size === 0) return undefined;
        const versions = [...retired.keys()];
        const summary = await pass(engine, versions.at(-1)!, 'sweep', versions);
        return summary.redecided > 0 || !summary.complete ? summary : undefined;
      });
      return sweeping;
    },
    idle: () => queue.then(() => undefined),
  };
}
