/**
 * What a resource server knows of Writ's revocations: ended tasks,
 * superseded tokens and narrowed grants, each until its tokens would have
 * expired anyway. Pure state, no I/O: the verifier fills it from the pulled
 * feed and from pushes. The same rules as Writ's own enforcement:
 * src/enforce/revocation-list.ts (a token is refused when its task ended, when
 * any ancestor in `task.lineage` ended, or when a renewal replaced its jti)
 * and src/enforce/narrowing-list.ts (a scope the task, or any ancestor, no
 * longer keeps is refused), the latter reused as is.
 */
import { z } from 'zod';
import { findCoveringScope, parseScopeClaim } from '../core/scope.js';
import type { Scope } from '../core/types.js';
import { createNarrowingList, keptScopes } from '../enforce/narrowing-list.js';

/** Most entries one feed document may carry; a larger one is refused, not truncated. */
export const MAX_FEED_ENTRIES = 100_000;

const idSchema = z.string().min(1).max(256);
const expirySchema = z.number().int().nonnegative();

/** `GET /v1/revocations` as read from the wire. Unknown members are ignored (newer Writs may add some). */
export const revocationFeedSchema = z.object({
  now: z.number().int().nonnegative(),
  tasks: z.array(z.object({ id: idSchema, expiresAt: expirySchema })).max(MAX_FEED_ENTRIES),
  tokens: z.array(z.object({ jti: idSchema, expiresAt: expirySchema })).max(MAX_FEED_ENTRIES),
  // Absent from Writs older than the verifier: nothing narrowed.
  narrowed: z.array(z.object({ id: idSchema, scope: z.string().max(16_384), expiresAt: expirySchema })).max(MAX_FEED_ENTRIES).default([]),
});

/** A revocation feed document: see docs/verify.md. Times are epoch ms. */
export interface RevocationFeed {
  readonly now: number;
  readonly tasks: readonly { readonly id: string; readonly expiresAt: number }[];
  readonly tokens: readonly { readonly jti: string; readonly expiresAt: number }[];
  /** Tasks a policy change narrowed: `scope` (space-separated) is what each keeps. */
  readonly narrowed?: readonly { readonly id: string; readonly scope: string; readonly expiresAt: number }[];
}

/** One revocation pushed to the verifier (from a webhook, a message bus, an operator). */
export type Revocation =
  | { readonly taskId: string; readonly expiresAt: number }
  | { readonly jti: string; readonly expiresAt: number };

/** What of a token the revocation state checks. */
export interface RevocableClaims {
  readonly jti: string;
  readonly taskId: string;
  /** The task's ancestors, root first. */
  readonly lineage: readonly string[];
}

export interface RevocationState {
  /** Why the token is refused, or undefined when nothing revokes it. */
  refusal(token: RevocableClaims): string | undefined;
  /**
   * The token's scopes less what a narrowing of its task or of any ancestor
   * took away (never more than the token carries).
   */
  keptOf(token: RevocableClaims, scopes: readonly Scope[]): readonly Scope[];
  add(revocation: Revocation): void;
  merge(feed: RevocationFeed): void;
  /** Drops entries whose tokens are past `expiresAt + skewMs` at `now`. */
  prune(now: number): void;
  readonly size: number;
}

export function createRevocationState(options: { clockSkewMs: number }): RevocationState {
  // Keys are token-supplied strings: Maps, never plain objects.
  const ended = new Map<string, number>();
  const superseded = new Map<string, number>();
  const narrowings = createNarrowingList({ clockSkewMs: options.clockSkewMs });
  // A later expiry wins: an entry must guard as long as the longest token it names.
  const put = (map: Map<string, number>, key: string, expiresAt: number) => {
    const held = map.get(key);
    if (held === undefined || held < expiresAt) map.set(key, expiresAt);
  };
  return {
    refusal(token) {
      if (ended.has(token.taskId)) return 'task has ended';
      for (const ancestor of token.lineage) if (ended.has(ancestor)) return `task was delegated from ${ancestor}, which has ended`;
      if (superseded.has(token.jti)) return 'token was replaced by a renewal';
      return undefined;
    },
    keptOf(token, scopes) {
      const kept = keptScopes(narrowings, { id: token.taskId, grantedScopes: scopes, lineage: token.lineage });
      // INVARIANT: never wider than the token: a narrowing names what the task keeps, not what this token carries.
      return kept.filter((scope) => findCoveringScope(scopes, scope) !== undefined);
    },
    add(revocation) {
      if ('taskId' in revocation) put(ended, revocation.taskId, revocation.expiresAt);
      else put(superseded, revocation.jti, revocation.expiresAt);
    },
    merge(feed) {
      for (const task of feed.tasks) put(ended, task.id, task.expiresAt);
      for (const token of feed.tokens) put(superseded, token.jti, token.expiresAt);
      // A kept-scope list this verifier cannot read keeps nothing (fail closed).
      for (const task of feed.narrowed ?? []) narrowings.narrow(task.id, parseScopeClaim(task.scope) ?? [], task.expiresAt);
    },
    prune(now) {
      const skewMs = options.clockSkewMs;
      // An ancestor's entry outlives every descendant's token: a child never expires after its parent.
      for (const [key, expiresAt] of ended) if (expiresAt + skewMs < now) ended.delete(key);
      for (const [key, expiresAt] of superseded) if (expiresAt + skewMs < now) superseded.delete(key);
      narrowings.prune(now);
    },
    get size() {
      return ended.size + superseded.size + narrowings.size;
    },
  };
}
