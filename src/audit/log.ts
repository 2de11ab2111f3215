/**
 * The audit log: every decision, grant, denial, use and revocation, appended
 * to the hash chain before the action it records is carried out.
 *
 * Appends are group-committed: calls made while a write is in flight are
 * linked and written together in the next transaction, so throughput grows
 * with concurrency while each caller still waits for its own record to be
 * committed. If the write fails, every caller in that batch gets
 * ERR_AUDIT_UNAVAILABLE and must not carry out the action.
 *
 * A record no action waits on (how an allowed tool call went, once the
 * decision to make it is on the chain) may be appended later instead: such
 * records are committed together, in one transaction, at most
 * `laterWithinMs` (50 ms) after they were appended, or at once by flush()
 * (which close() calls). A crash can lose the ones of its last 50 ms; never
 * a record appended with append().
 */
import { randomFillSync } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import type { Store } from '../store/store.js';
import { createChainVerifier, linkEntry, type ChainBreak, type ChainEntry } from './chain.js';

export type AuditEventType =
  | 'identity.registered'
  | 'identity.quarantined'
  | 'identity.claimed'
  | 'identity.suspended'
  | 'identity.reactivated'
  | 'identity.decommissioned'
  | 'identity.changed'
  | 'policy.reloaded'
  | 'policy.reload_refused'
  | 'policy.drift'
  | 'identity.token_issued'
  | 'admin.token_created'
  | 'admin.token_revoked'
  | 'admin.denied'
  | 'authentication.failed'
  | 'task.decision'
  | 'task.ended'
  | 'task.narrowed'
  | 'action.check'
  | 'tool.call'
  | 'secret.set'
  | 'secret.deleted'
  | 'approval.requested'
  | 'approval.voted'
  | 'approval.approved'
  | 'approval.denied'
  | 'approval.consumed'
  | 'approval.expired'
  | 'approval.cancelled'
  | 'task.activated'
  | 'task.delegated'
  | 'task.renewed'
  | 'break_glass.started'
  | 'break_glass.ended'
  | 'break_glass.reviewed'
  | 'notification.failed'
  | 'lease.issued'
  | 'lease.extended'
  | 'lease.revoked'
  | 'lease.failed';

export type AuditDecision = 'allow' | 'deny' | 'approval_required' | 'partial';

export interface AuditActor {
  readonly id: string;
  readonly actorType?: string;
  readonly owner?: string;
}

/** An identity as the actor of an audit record. */
export function auditActor(identity: { readonly id: string; readonly actorType?: string; readonly owner?: string | null }): AuditActor {
  return {
    id: identity.id,
    ...(identity.actorType === undefined ? {} : { actorType: identity.actorType }),
    ...(identity.owner === undefined || identity.owner === null ? {} : { owner: identity.owner }),
  };
}

/** One audit record's content: who, what, why, and the decision. */
export interface AuditEvent {
  readonly type: AuditEventType;
  readonly decision?: AuditDecision;
  /** Stable code of the reason (an ERR_ code, or a state such as `completed`). */
  readonly reason?: string;
  /** The precise, operator-only explanation. */
  readonly detail?: string;
  /** Who: the identity acting, with its actor type and accountable owner. */
  readonly actor?: AuditActor;
  /** What. */
  readonly action?: string;
  readonly resource?: string;
  readonly tier?: string;
  /** Why: the task, its purpose and intent. */
  readonly task?: { readonly id: string; readonly purpose?: string; readonly intent?: string; readonly environment?: string };
  readonly policies?: readonly string[];
  readonly policyVersion?: string;
  /** The decision was made under a break-glass grant (or is one). */
  readonly breakGlass?: true;
  readonly data?: Readonly<Record<string, unknown>>;
}

export interface AuditReceipt {
  readonly id: string;
  readonly seq: number;
  readonly hash: string;
}

export interface AuditLog {
  /**
   * Appends one record and resolves once it is committed.
   * @throws WritError ERR_AUDIT_UNAVAILABLE when it could not be written.
   */
  append(event: AuditEvent): Promise<AuditReceipt>;
  /**
   * Appends one record that nothing waits on, committed together with others
   * like it within `laterWithinMs` of this call (sooner once 500 wait, or on
   * flush()); resolves once it is committed. Its place on the chain is where
   * it is committed: after decisions made meanwhile.
   *
   * Security: a crash before that commit loses the record. Only for records
   * of what already happened, whose decision was appended with append():
   * never a decision, nor anything that must be on the chain before an action
   * is carried out.
   * @throws WritError ERR_AUDIT_UNAVAILABLE when it could not be written.
   */
  appendLater(event: AuditEvent): Promise<AuditReceipt>;
  /** Commits the records appended later at once, and resolves when every append made so far has settled. */
  flush(): Promise<void>;
}

interface Pending {
  readonly entry: ChainEntry;
  readonly resolve: (receipt: AuditReceipt) => void;
  readonly reject: (error: unknown) => void;
}

const MAX_BATCH = 500;

// Record ids have newId's shape and strength (`aud_`, 128 random bits in
// base64url), drawn from a pool the CSPRNG fills 128 ids at a time: a call
// into it per id (randomBytes) cost about 5 µs on the action check's path,
// the pool under 0.5 µs. Each byte is used once.
const ID_BYTES = 16;
const idPool = Buffer.alloc(ID_BYTES * 128);
let idOffset = idPool.length;
function recordId(): string {
  if (idOffset === idPool.length) {
    randomFillSync(idPool);
    idOffset = 0;
  }
  const id = idPool.toString('base64url', idOffset, idOffset + ID_BYTES);
  idOffset += ID_BYTES;
  return `aud_${id}`;
}

/** How long a record appended later waits, at most, for its commit: what a crash can lose. */
export const LATER_WITHIN_MS = 50;

export interface AuditLogOptions {
  readonly store: Store;
  readonly clock: Clock;
  readonly onError?: (error: unknown) => void;
  /** The bound on appendLater's wait for its commit (ms). Default LATER_WITHIN_MS. */
  readonly laterWithinMs?: number;
}

export function createAuditLog(options: AuditLogOptions): AuditLog {
  const { store, clock } = options;
  const laterWithinMs = options.laterWithinMs ?? LATER_WITHIN_MS;
  if (!(laterWithinMs >= 0 && laterWithinMs <= 1000)) throw new RangeError('laterWithinMs is 0 to 1000');
  let queue: Pending[] = [];
  let running: Promise<void> | undefined;
  // Records appended later, in order, and the timer that commits them.
  let later: Pending[] = [];
  let laterTimer: ReturnType<typeof setTimeout> | undefined;

  const drain = async (): Promise<void> => {
    while (queue.length > 0) {
      const batch = queue.length <= MAX_BATCH ? queue : queue.slice(0, MAX_BATCH);
      queue = queue.length <= MAX_BATCH ? [] : queue.slice(MAX_BATCH);
      try {
        const rows = await store.appendChained(batch.map((p) => (head) => linkEntry(head, p.entry)));
        batch.forEach((p, i) => {
          const row = rows[i];
          if (row === undefined) p.reject(new WritError('ERR_AUDIT_UNAVAILABLE', { internal: 'store returned fewer rows than appended' }));
          else p.resolve({ id: row.id, seq: row.seq, hash: row.hash });
        });
      } catch (error) {
        options.onError?.(error);
        const failure = new WritError('ERR_AUDIT_UNAVAILABLE', { internal: (error as Error)?.message, cause: error });
        for (const p of batch) p.reject(failure);
      }
    }
    running = undefined;
  };

  const entryOf = (event: AuditEvent): ChainEntry => {
    const { type, ...body } = event;
    return { id: recordId(), at: clock.now(), type, body };
  };

  /** Hands the records appended later to the writer, as one batch. */
  const commitLater = (): void => {
    if (laterTimer !== undefined) clearTimeout(laterTimer);
    laterTimer = undefined;
    if (later.length === 0) return;
    for (const p of later) queue.push(p);
    later = [];
    running ??= Promise.resolve().then(drain);
  };

  return {
    append(event) {
      const entry = entryOf(event);
      return new Promise<AuditReceipt>((resolve, reject) => {
        queue.push({ entry, resolve, reject });
        running ??= Promise.resolve().then(drain);
      });
    },
    appendLater(event) {
      const entry = entryOf(event);
      return new Promise<AuditReceipt>((resolve, reject) => {
        later.push({ entry, resolve, reject });
        // The timer is not unref'd: a process that ends on its own still commits them first.
        if (later.length >= MAX_BATCH) commitLater();
        else laterTimer ??= setTimeout(commitLater, laterWithinMs);
      });
    },
    async flush() {
      commitLater();
      while (running !== undefined) await running;
    },
  };
}

export type AuditVerification =
  | { readonly ok: true; readonly records: number; readonly headHash: string | null }
  | { readonly ok: false; readonly records: number; readonly seq: number; readonly id: string; readonly problem: ChainBreak };

/**
 * Walks the whole chain in seq order and reports the first record that was
 * changed, deleted or reordered. Reads in pages; memory stays flat.
 */
export async function verifyAuditChain(store: Store, pageSize = 2000): Promise<AuditVerification> {
  const verifier = createChainVerifier();
  let checked = 0;
  let after = 0;
  for (;;) {
    const rows = await store.readAudit(after, pageSize);
    for (const row of rows) {
      const problem = verifier.next(row);
      if (problem !== undefined) return { ok: false, records: checked, seq: row.seq, id: row.id, problem };
      checked++;
    }
    if (rows.length < pageSize) break;
    after = rows[rows.length - 1]?.seq ?? after;
  }
  return { ok: true, records: checked, headHash: verifier.head?.hash ?? null };
}
