/**
 * The audit log: every decision, grant, denial, use and revocation, appended
 * to the hash chain before the action it records is carried out.
 *
 * Appends are group-committed: calls made while a write is in flight are
 * linked and written together in the next transaction, so throughput grows
 * with concurrency while each caller still waits for its own record to be
 * committed. If the write fails, every caller in that batch gets
 * ERR_AUDIT_UNAVAILABLE and must not carry out the action.
 */
import type { Clock } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import { newId } from '../core/ids.js';
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
  | 'break_glass.started'
  | 'break_glass.ended'
  | 'break_glass.reviewed'
  | 'notification.failed';

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
  /** Resolves when every append made so far has settled. */
  flush(): Promise<void>;
}

interface Pending {
  readonly entry: ChainEntry;
  readonly resolve: (receipt: AuditReceipt) => void;
  readonly reject: (error: unknown) => void;
}

const MAX_BATCH = 500;

export function createAuditLog(options: { store: Store; clock: Clock; onError?: (error: unknown) => void }): AuditLog {
  const { store, clock } = options;
  let queue: Pending[] = [];
  let running: Promise<void> | undefined;

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

  return {
    append(event) {
      const { type, ...body } = event;
      const entry: ChainEntry = { id: newId('aud'), at: clock.now(), type, body };
      return new Promise<AuditReceipt>((resolve, reject) => {
        queue.push({ entry, resolve, reject });
        running ??= Promise.resolve().then(drain);
      });
    },
    async flush() {
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
