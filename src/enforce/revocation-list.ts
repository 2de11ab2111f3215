/**
 * What an enforcement point refuses, in memory, on every call: the tokens of
 * ended tasks (and of every task delegated from them), and tokens a renewal
 * replaced, until they would have expired anyway. Filled from the store at
 * start-up and kept current by `task.ended` and `token.superseded` events (this
 * process's, and other nodes' read at each sync); an entry is dropped once the
 * token it guards against has expired on its own.
 */
import type { EventBus } from '../events/bus.js';

/** What of a verified token the list checks. */
export interface RevocableToken {
  readonly claims: { readonly jti: string; readonly task: { readonly id: string } };
  /** The task's ancestors: a delegated token dies with any of them. */
  readonly lineage: readonly string[];
}

export interface RevocationList {
  isRevoked(taskId: string): boolean;
  add(taskId: string, expiresAt: number): void;
  /** True when a renewal replaced the token `jti` before it expired. */
  isSuperseded(jti: string): boolean;
  supersede(jti: string, expiresAt: number): void;
  /**
   * Why `token` is refused: its task ended, an ancestor of a delegated task
   * ended (refused the moment the ancestor's end is known here, before the
   * cascade reaches the task's own record), or a renewal replaced it; undefined
   * when none of these.
   */
  refusal(token: RevocableToken): string | undefined;
  /** Drops entries whose tokens are past expiry (plus skew). */
  prune(now: number): void;
  readonly size: number;
}

export function createRevocationList(options: { bus: EventBus; clockSkewMs: number }): RevocationList {
  const ended = new Map<string, number>();
  const superseded = new Map<string, number>();
  const list: RevocationList = {
    isRevoked: (taskId) => ended.has(taskId),
    add: (taskId, expiresAt) => {
      ended.set(taskId, expiresAt);
    },
    isSuperseded: (jti) => superseded.has(jti),
    supersede: (jti, expiresAt) => {
      superseded.set(jti, expiresAt);
    },
    refusal(token) {
      if (ended.has(token.claims.task.id)) return 'task has ended';
      for (const ancestor of token.lineage) if (ended.has(ancestor)) return `task was delegated from ${ancestor}, which has ended`;
      if (superseded.has(token.claims.jti)) return 'token was replaced by a renewal';
      return undefined;
    },
    prune(now) {
      // An ancestor's entry outlives every descendant's token: a child never expires after its parent.
      for (const [taskId, expiresAt] of ended) if (expiresAt + options.clockSkewMs < now) ended.delete(taskId);
      for (const [jti, expiresAt] of superseded) if (expiresAt + options.clockSkewMs < now) superseded.delete(jti);
    },
    get size() {
      return ended.size + superseded.size;
    },
  };
  options.bus.subscribe((event) => {
    if (event.type === 'task.ended') list.add(event.taskId, event.expiresAt);
    else if (event.type === 'token.superseded') list.supersede(event.jti, event.expiresAt);
  });
  return list;
}
