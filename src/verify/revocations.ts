/**
 * What a resource server knows of Writ's revocations: ended tasks and
 * superseded tokens, each until its tokens would have expired anyway. Pure
 * state, no I/O: the verifier fills it from the pulled feed and from pushes.
 * The same rule as Writ's own enforcement (src/enforce/revocation-list.ts): a
 * token is refused when its task ended, when any ancestor in `task.lineage`
 * ended, or when a renewal replaced its jti.
 */
import { z } from 'zod';

/** Most entries one feed document may carry; a larger one is refused, not truncated. */
export const MAX_FEED_ENTRIES = 100_000;

const idSchema = z.string().min(1).max(256);
const expirySchema = z.number().int().nonnegative();

/** `GET /v1/revocations` as read from the wire. Unknown members are ignored (newer Writs may add some). */
export const revocationFeedSchema = z.object({
  now: z.number().int().nonnegative(),
  tasks: z.array(z.object({ id: idSchema, expiresAt: expirySchema })).max(MAX_FEED_ENTRIES),
  tokens: z.array(z.object({ jti: idSchema, expiresAt: expirySchema })).max(MAX_FEED_ENTRIES),
});

/** A revocation feed document: see docs/verify.md. Times are epoch ms. */
export interface RevocationFeed {
  readonly now: number;
  readonly tasks: readonly { readonly id: string; readonly expiresAt: number }[];
  readonly tokens: readonly { readonly jti: string; readonly expiresAt: number }[];
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
  add(revocation: Revocation): void;
  merge(feed: RevocationFeed): void;
  /** Drops entries whose tokens are past `expiresAt + skewMs` at `now`. */
  prune(now: number, skewMs: number): void;
  readonly size: number;
}

export function createRevocationState(): RevocationState {
  // Keys are token-supplied strings: Maps, never plain objects.
  const ended = new Map<string, number>();
  const superseded = new Map<string, number>();
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
    add(revocation) {
      if ('taskId' in revocation) put(ended, revocation.taskId, revocation.expiresAt);
      else put(superseded, revocation.jti, revocation.expiresAt);
    },
    merge(feed) {
      for (const task of feed.tasks) put(ended, task.id, task.expiresAt);
      for (const token of feed.tokens) put(superseded, token.jti, token.expiresAt);
    },
    prune(now, skewMs) {
      // An ancestor's entry outlives every descendant's token: a child never expires after its parent.
      for (const [key, expiresAt] of ended) if (expiresAt + skewMs < now) ended.delete(key);
      for (const [key, expiresAt] of superseded) if (expiresAt + skewMs < now) superseded.delete(key);
    },
    get size() {
      return ended.size + superseded.size;
    },
  };
}
