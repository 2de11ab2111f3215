/**
 * The tasks whose grant a policy change narrowed after their token was minted:
 * the token still carries every scope it was minted with, so an enforcement
 * point also checks, in memory, the scopes the task keeps. Filled from the
 * store at start-up and at each sync (narrowings made by other nodes), and at
 * once by this process's own re-decisions; an entry is dropped once the token
 * it guards against has expired on its own.
 */
import { findCoveringScope, formatScope } from '../core/scope.js';
import type { Scope } from '../core/types.js';

export interface NarrowingList {
  /** The scopes a narrowed task keeps, or undefined when its grant was never narrowed. */
  remainingOf(taskId: string): readonly Scope[] | undefined;
  /**
   * From now on the task keeps only `scopes`. A narrowing never widens: scopes
   * an earlier narrowing dropped stay dropped, whatever order narrowings arrive
   * in (from this process and from the store). Returns true when the list changed.
   */
  narrow(taskId: string, scopes: readonly Scope[], expiresAt: number): boolean;
  /** Drops entries whose tokens are past expiry (plus skew). */
  prune(now: number): void;
  readonly size: number;
}

export function createNarrowingList(options: { clockSkewMs: number; /** Told after each change, e.g. to tell enforcement points. */ onNarrowed?: (taskId: string) => void }): NarrowingList {
  const narrowed = new Map<string, { scopes: readonly Scope[]; expiresAt: number }>();
  return {
    remainingOf: (taskId) => narrowed.get(taskId)?.scopes,
    narrow(taskId, scopes, expiresAt) {
      const earlier = narrowed.get(taskId);
      // INVARIANT: the kept scopes are always a subset of every narrowing seen.
      const kept = earlier === undefined ? scopes : intersect(earlier.scopes, scopes);
      if (earlier !== undefined && kept.length === earlier.scopes.length) return false;
      narrowed.set(taskId, { scopes: kept.map((s) => ({ action: s.action, resource: s.resource })), expiresAt });
      options.onNarrowed?.(taskId);
      return true;
    },
    prune(now) {
      for (const [taskId, entry] of narrowed) if (entry.expiresAt + options.clockSkewMs < now) narrowed.delete(taskId);
    },
    get size() {
      return narrowed.size;
    },
  };
}

/**
 * What `task` holds now: its grant less what a policy change or a narrowing
 * renewal took from it, and less what was taken from any task it was
 * delegated from (a scope an ancestor no longer keeps is refused at every call).
 */
export function keptScopes(narrowings: NarrowingList, task: { readonly id: string; readonly grantedScopes: readonly Scope[]; readonly lineage: readonly string[] }): Scope[] {
  const own = narrowings.remainingOf(task.id) ?? task.grantedScopes;
  return own.filter((scope) =>
    task.lineage.every((ancestor) => {
      const kept = narrowings.remainingOf(ancestor);
      return kept === undefined || findCoveringScope(kept, scope) !== undefined;
    }),
  );
}

/** The scopes of `a` that `b` holds too, compared exactly (both are subsets of one token's scopes). */
function intersect(a: readonly Scope[], b: readonly Scope[]): readonly Scope[] {
  const inB = new Set(b.map(formatScope));
  return a.filter((s) => inB.has(formatScope(s)));
}
