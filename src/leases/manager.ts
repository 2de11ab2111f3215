/**
 * The lease manager: mints a task's downstream credentials through its
 * providers and destroys them with the task.
 *
 * INVARIANT: a lease is written to the store (`issuing`) before its
 * credential exists downstream, and its credential is handed out only once
 * it is `active` and its issue is on the audit chain. So whatever crashes
 * where, the store names every credential that may exist, and the sweep
 * (at start, before anything is served, and on every reaper tick) revokes
 * each one whose task is no longer active.
 *
 * A renewal or a narrowing is a new decision, and each lease follows it: one
 * holding more than its task now does is revoked, one whose renewed task
 * still maps to all of it is extended to the new expiry (the sweep catches
 * up on renewals no event reached).
 *
 * Revocation is the safe direction: it is carried out first and recorded
 * after (a record that cannot be written is logged, never a reason to keep
 * a credential alive). Issue is the other way round: a credential whose
 * issue cannot be recorded is revoked, not handed out.
 */
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/log.js';
import type { Clock } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import { isTier, type Scope, type Task } from '../core/types.js';
import type { Lease, Store } from '../store/store.js';
import type { LeaseCredential, LeaseProvider, TierOf } from './provider.js';

export interface IssuedLease {
  readonly lease: Lease;
  /** Returned once, to the task; never stored, logged or audited. */
  readonly credential: LeaseCredential;
}

export interface LeaseManager {
  /** The configured provider names. */
  readonly providers: readonly string[];
  /**
   * Mints a credential for the active task `taskId` from `provider`, for what
   * its granted scopes map to there.
   * @throws WritError ERR_LEASE_PROVIDER_NOT_FOUND, ERR_TASK_NOT_FOUND, ERR_TASK_STATE_CONFLICT (not active),
   *   ERR_LEASE_NO_GRANTS, ERR_LEASE_FAILED (downstream refused; nothing left behind), ERR_AUDIT_UNAVAILABLE
   */
  issue(taskId: string, provider: string): Promise<IssuedLease>;
  /**
   * Revokes one lease: idempotent (a revoked lease is returned as it is) and
   * safe against racing revokers (one audit record). Returns the lease as it
   * stands after; still `revoking` (with `lastError`) when the downstream
   * system could not be reached: the sweep tries again.
   */
  revoke(leaseId: string, reason: string): Promise<Lease | undefined>;
  /** Revokes every lease of the task; never throws (failures are logged and left to the sweep). */
  revokeOfTask(taskId: string, reason: string): Promise<number>;
  /**
   * Brings the leases of `taskId`, and of every task delegated from it, in
   * line with what each task holds now (after a renewal, or a narrowing of it
   * or of an ancestor): a lease holding more than its task now maps to is
   * revoked; one its task still maps to, whose task was renewed, is extended
   * to the new expiry (downstream first, then the store, then the record).
   * Returns how many were extended; never throws (failures are logged and
   * left to the sweep).
   */
  follow(taskId: string): Promise<number>;
  /**
   * Revokes every lease whose task is no longer active (ended, expired, past
   * its expiry, or unknown), then extends (or revokes, as follow) every lease
   * of a renewed task. With `recheck` (at start), also brings every other
   * active lease in line with what its task holds, as follow does: a
   * narrowing whose event was lost in a crash is caught up before anything
   * is served. Returns how many were revoked; never throws for one lease's
   * failure (it is logged, kept, and tried again next sweep).
   */
  sweep(options?: { readonly recheck?: boolean }): Promise<number>;
  /**
   * What in each provider's downstream configuration weakens its leases
   * (a PostgreSQL cluster whose other databases let any role connect),
   * logged as warnings and returned. Never throws: a provider that cannot be
   * reached is a warning too.
   */
  configurationWarnings(): Promise<string[]>;
  /** A lease and whether its credential exists downstream (`unknown` when its provider is not configured or unreachable). */
  state(leaseId: string): Promise<{ lease: Lease; downstream: 'present' | 'absent' | 'unknown' } | undefined>;
  close(): Promise<void>;
}

export interface LeaseManagerOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly providers: readonly LeaseProvider[];
  /** The tier of an action under the policy deciding now. */
  readonly tierOf: TierOf;
  /** What a task holds now: its grant less what a narrowing (its own or an ancestor's) took. Default: its grant. */
  readonly heldScopes?: (task: Task) => readonly Scope[];
  readonly logger?: Logger | undefined;
}

const SWEEP_PAGE = 100;
const LIVE = ['issuing', 'active', 'revoking'] as const;

export function createLeaseManager(options: LeaseManagerOptions): LeaseManager {
  const { store, audit, clock, logger } = options;
  const providers = new Map(options.providers.map((p) => [p.name, p]));
  // An action the policy does not tier, but named after a tier (`read`), counts as that tier.
  const tierOf: TierOf = (action) => options.tierOf(action) ?? (isTier(action) ? action : undefined);
  const heldScopes = options.heldScopes ?? ((task: Task) => task.grantedScopes);

  const describe = (lease: Lease) => ({ leaseId: lease.id, provider: lease.provider, ...lease.details, expiresAt: lease.expiresAt });
  const message = (error: unknown): string => ((error as Error)?.message ?? String(error)).slice(0, 500);

  /** Records a failure once per distinct error (the sweep retries every tick; the chain is not a log). */
  const recordFailure = async (lease: Lease, stage: 'issue' | 'extend' | 'revoke', error: unknown): Promise<void> => {
    const text = message(error);
    const changed = lease.lastError !== text;
    await store.noteLeaseError(lease.id, text).catch(() => undefined);
    logger?.error({ err: error, leaseId: lease.id, provider: lease.provider, taskId: lease.taskId }, `lease ${stage} failed`);
    if (!changed) return;
    await audit
      .append({ type: 'lease.failed', decision: 'deny', reason: stage, detail: text, task: { id: lease.taskId }, resource: `lease:${lease.provider}`, data: describe(lease) })
      .catch((e: unknown) => logger?.error({ err: e, leaseId: lease.id }, 'the record of a lease failure could not be written'));
  };

  const revokeLease = async (lease: Lease, reason: string): Promise<Lease | undefined> => {
    if (lease.state === 'revoked') return lease;
    const moving = await store.transitionLease(lease.id, LIVE, 'revoking', { at: clock.now() });
    if (moving === undefined) return store.getLease(lease.id);
    const provider = providers.get(moving.provider);
    try {
      if (provider === undefined) throw new Error(`lease provider ${moving.provider} is not configured: its credential cannot be revoked from here`);
      await provider.revoke(moving.details);
    } catch (error) {
      await recordFailure(moving, 'revoke', error);
      return store.getLease(lease.id);
    }
    const revoked = await store.transitionLease(lease.id, ['revoking'], 'revoked', { at: clock.now(), lastError: null });
    // Of racing revokers, the one that marks it revoked records it.
    if (revoked !== undefined) {
      await audit
        .append({ type: 'lease.revoked', decision: 'deny', reason, task: { id: revoked.taskId }, resource: `lease:${revoked.provider}`, data: describe(revoked) })
        .catch((error: unknown) => logger?.error({ err: error, leaseId: lease.id }, 'the record of a lease revocation could not be written'));
    }
    return revoked ?? store.getLease(lease.id);
  };

  /** Destroys a credential an issue made but must not hand out; the lease row goes to revoked when it can. */
  const undo = async (lease: Lease, reason: string): Promise<void> => {
    const after = await revokeLease(lease, reason).catch(() => undefined);
    // Another revoker may have marked it revoked before this issue created the role: drop it again.
    if (after?.state === 'revoked') await providers.get(lease.provider)?.revoke(lease.details).catch((error: unknown) => recordFailure(lease, 'revoke', error));
  };

  /**
   * Brings one active lease in line with its active task: revoked if the
   * task no longer maps to all it holds, extended to the task's expiry if the
   * task was renewed. True when this call extended it.
   */
  const followTask = async (lease: Lease, task: Task): Promise<boolean> => {
    if (lease.state !== 'active' || task.state !== 'active') return false;
    const provider = providers.get(lease.provider);
    // Not configured on this node: left to a node that can judge and reach it (its task's end is swept anywhere).
    if (provider === undefined) return false;
    // A renewal or a narrowing is a new decision: a lease it no longer covers goes, and the task asks again for what it keeps.
    if (!provider.holds(lease.details, heldScopes(task), tierOf)) {
      await revokeLease(lease, 'task no longer holds all the lease grants');
      return false;
    }
    if (lease.expiresAt >= task.expiresAt) return false;
    let outcome: 'extended' | 'absent';
    try {
      outcome = await provider.extend(lease.details, task.expiresAt);
    } catch (error) {
      await recordFailure(lease, 'extend', error);
      return false;
    }
    // Gone downstream, or a revoke has begun there: it is not brought back.
    if (outcome === 'absent') {
      await revokeLease(lease, 'credential no longer present downstream');
      return false;
    }
    const extended = await store.extendLease(lease.id, task.expiresAt);
    // Of racing extenders, the one that moves the row records it; a revoker that moved it first wins.
    if (extended === undefined) return false;
    await audit
      .append({ type: 'lease.extended', decision: 'allow', reason: 'task renewed', actor: { id: task.identityId }, task: { id: task.id }, resource: `lease:${extended.provider}`, data: { ...describe(extended), previousExpiresAt: lease.expiresAt } })
      .catch((error: unknown) => logger?.error({ err: error, leaseId: lease.id }, 'the record of a lease extension could not be written'));
    return true;
  };

  return {
    providers: [...providers.keys()],

    async issue(taskId, name) {
      const provider = providers.get(name);
      if (provider === undefined) throw new WritError('ERR_LEASE_PROVIDER_NOT_FOUND', { detail: `no lease provider named ${JSON.stringify(name.slice(0, 64))}` });
      const task = await store.getTask(taskId);
      if (task === undefined) throw new WritError('ERR_TASK_NOT_FOUND');
      const now = clock.now();
      if (task.state !== 'active' || task.expiresAt <= now) throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: `task is ${task.expiresAt <= now ? 'expired' : task.state}` });
      const plan = provider.plan(heldScopes(task), tierOf);
      if (plan === undefined) throw new WritError('ERR_LEASE_NO_GRANTS', { detail: `none of the task's scopes maps to a privilege of ${name}` });

      // INVARIANT: on the store before it exists downstream.
      const id = newId('lease');
      await store.createLease({ id, taskId, provider: name, details: plan.details, createdAt: now, expiresAt: task.expiresAt });
      const lease = (await store.getLease(id)) as Lease;
      let credential: LeaseCredential;
      try {
        credential = await provider.issue(plan.details, task.expiresAt);
      } catch (error) {
        await recordFailure(lease, 'issue', error);
        await undo(lease, 'issue failed');
        throw new WritError('ERR_LEASE_FAILED', { internal: message(error) });
      }
      const active = await store.transitionLease(id, ['issuing'], 'active', { at: clock.now() });
      // The task ended meanwhile (a sweep moved the lease), or it ends now: nothing is handed out.
      const current = await store.getTask(taskId);
      if (active === undefined || current === undefined || current.state !== 'active' || current.expiresAt <= clock.now()) {
        await undo(active ?? lease, 'task ended while the lease was issued');
        throw new WritError('ERR_TASK_STATE_CONFLICT', { detail: 'the task ended while its lease was issued' });
      }
      try {
        await audit.append({
          type: 'lease.issued',
          decision: 'allow',
          actor: { id: task.identityId },
          task: { id: task.id, purpose: task.purpose, intent: task.intent, environment: task.environment },
          resource: `lease:${name}`,
          data: describe(active),
        });
      } catch (error) {
        // A credential whose issue is not on the record is never handed out.
        await undo(active, 'issue not recorded');
        throw error;
      }
      return { lease: active, credential };
    },

    async revoke(leaseId, reason) {
      const lease = await store.getLease(leaseId);
      return lease && revokeLease(lease, reason);
    },

    async revokeOfTask(taskId, reason) {
      let revoked = 0;
      for (const lease of await store.listLeasesOfTask(taskId)) {
        if (lease.state === 'revoked') continue;
        const after = await revokeLease(lease, reason).catch((error: unknown) => logger?.error({ err: error, leaseId: lease.id }, 'revoking a lease failed; the sweep tries again'));
        if (after?.state === 'revoked') revoked++;
      }
      return revoked;
    },

    async follow(taskId) {
      let extended = 0;
      try {
        const task = await store.getTask(taskId);
        // Ended meanwhile: its end revokes the leases (and its descendants end with it).
        if (task === undefined || task.state !== 'active') return 0;
        for (const each of [task, ...(await store.listDescendants(taskId))]) {
          for (const lease of await store.listLeasesOfTask(each.id)) {
            const moved = await followTask(lease, each).catch((error: unknown) => logger?.error({ err: error, leaseId: lease.id }, 'a lease could not follow its task; the sweep tries again'));
            if (moved === true) extended++;
          }
        }
      } catch (error) {
        logger?.error({ err: error, taskId }, 'the leases of a changed task could not be brought in line; the sweep tries again');
      }
      return extended;
    },

    async sweep(options) {
      let revoked = 0;
      const seen = new Set<string>();
      for (;;) {
        const page = (await store.listLeasesToRevoke(clock.now(), SWEEP_PAGE)).filter((l) => !seen.has(l.id));
        if (page.length === 0) break;
        for (const lease of page) {
          seen.add(lease.id);
          const after = await revokeLease(lease, 'task no longer active').catch((error: unknown) => logger?.error({ err: error, leaseId: lease.id }, 'revoking a lease failed; the sweep tries again'));
          if (after?.state === 'revoked') revoked++;
        }
      }
      const follow = async (lease: Lease): Promise<void> => {
        seen.add(lease.id);
        const task = await store.getTask(lease.taskId);
        if (task === undefined) return;
        const after = await followTask(lease, task).then(
          () => store.getLease(lease.id),
          (error: unknown) => logger?.error({ err: error, leaseId: lease.id }, 'a lease could not follow its task; the sweep tries again'),
        );
        if (after?.state === 'revoked') revoked++;
      };
      // Renewals no lease followed (heard nowhere, or the extension failed): revoking first means none of these has ended.
      for (;;) {
        const page = (await store.listLeasesToExtend(clock.now(), SWEEP_PAGE)).filter((l) => !seen.has(l.id));
        if (page.length === 0) break;
        for (const lease of page) await follow(lease);
      }
      if (options?.recheck === true) {
        let afterId = '';
        for (;;) {
          const page = await store.listActiveLeases(afterId, SWEEP_PAGE);
          if (page.length === 0) break;
          for (const lease of page) if (!seen.has(lease.id)) await follow(lease);
          afterId = page[page.length - 1]!.id;
        }
      }
      return revoked;
    },

    async configurationWarnings() {
      const warnings: string[] = [];
      for (const provider of providers.values()) {
        try {
          warnings.push(...(await provider.configurationWarnings()));
        } catch (error) {
          warnings.push(`lease provider ${provider.name} could not be checked: ${message(error)}`);
        }
      }
      for (const warning of warnings) logger?.warn(warning);
      return warnings;
    },

    async state(leaseId) {
      const lease = await store.getLease(leaseId);
      if (lease === undefined) return undefined;
      const provider = providers.get(lease.provider);
      const downstream = provider === undefined ? 'unknown' : await provider.state(lease.details).catch(() => 'unknown' as const);
      return { lease, downstream };
    },

    async close() {
      await Promise.all([...providers.values()].map((p) => p.close()));
    },
  };
}
