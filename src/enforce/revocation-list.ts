/**
 * The set of ended tasks whose tokens have not yet expired: what an
 * enforcement point checks, in memory, on every call. Filled from the store at
 * start-up and kept current by `task.ended` events; an entry is dropped once
 * the token it guards against has expired on its own.
 */
import type { EventBus } from '../events/bus.js';

export interface RevocationList {
  isRevoked(taskId: string): boolean;
  add(taskId: string, expiresAt: number): void;
  /** Drops entries whose tokens are past expiry (plus skew). */
  prune(now: number): void;
  readonly size: number;
}

export function createRevocationList(options: { bus: EventBus; clockSkewMs: number }): RevocationList {
  const ended = new Map<string, number>();
  const list: RevocationList = {
    isRevoked: (taskId) => ended.has(taskId),
    add: (taskId, expiresAt) => {
      ended.set(taskId, expiresAt);
    },
    prune(now) {
      for (const [taskId, expiresAt] of ended) if (expiresAt + options.clockSkewMs < now) ended.delete(taskId);
    },
    get size() {
      return ended.size;
    },
  };
  options.bus.subscribe((event) => {
    if (event.type === 'task.ended') list.add(event.taskId, event.expiresAt);
  });
  return list;
}
