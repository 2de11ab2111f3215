/**
 * The audit hash chain, as pure functions.
 *
 * Each record is canonical JSON (RFC 8785) holding its own sequence number and
 * the previous record's hash; its hash is SHA-256 over exactly those bytes.
 * Changing a record changes its hash; deleting or reordering records breaks the
 * sequence or the links. `verifyChain` walks rows in order and names the first
 * one that does not hold.
 */
import { createHash } from 'node:crypto';
import { canonicalize } from '../core/canonical-json.js';
import type { AuditRow, ChainHead } from '../store/store.js';

export const GENESIS_HASH = '0'.repeat(64);

export interface ChainEntry {
  readonly id: string;
  readonly at: number;
  readonly type: string;
  /** Everything else the record says (who, what, why, decision). */
  readonly body: Readonly<Record<string, unknown>>;
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex');
}

/** The row that appends `entry` after `head`. */
export function linkEntry(head: ChainHead | null, entry: ChainEntry): AuditRow {
  const seq = (head?.seq ?? 0) + 1;
  const prevHash = head?.hash ?? GENESIS_HASH;
  const record = canonicalize({ ...entry.body, seq, id: entry.id, at: entry.at, type: entry.type, prevHash });
  return { seq, id: entry.id, at: entry.at, type: entry.type, record, prevHash, hash: sha256Hex(record) };
}

export type ChainBreak =
  | 'sequence-gap'
  | 'prev-hash-mismatch'
  | 'hash-mismatch'
  | 'record-unreadable'
  | 'record-not-canonical'
  | 'column-mismatch';

export interface ChainVerifier {
  /** Checks the next row. Returns the break found, or undefined when the row holds. */
  next(row: AuditRow): ChainBreak | undefined;
  readonly head: ChainHead | null;
}

/** A stateful walker over rows in ascending seq order, starting at genesis. */
export function createChainVerifier(): ChainVerifier {
  let head: ChainHead | null = null;
  return {
    get head() {
      return head;
    },
    next(row) {
      const expectedSeq = (head?.seq ?? 0) + 1;
      if (row.seq !== expectedSeq) return 'sequence-gap';
      if (row.prevHash !== (head?.hash ?? GENESIS_HASH)) return 'prev-hash-mismatch';
      if (sha256Hex(row.record) !== row.hash) return 'hash-mismatch';
      let parsed: unknown;
      try {
        parsed = JSON.parse(row.record);
      } catch {
        return 'record-unreadable';
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'record-unreadable';
      if (canonicalize(parsed) !== row.record) return 'record-not-canonical';
      const fields = parsed as Record<string, unknown>;
      if (fields.seq !== row.seq || fields.prevHash !== row.prevHash || fields.id !== row.id || fields.at !== row.at || fields.type !== row.type) {
        return 'column-mismatch';
      }
      head = { seq: row.seq, hash: row.hash };
      return undefined;
    },
  };
}
