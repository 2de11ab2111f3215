/**
 * The revocation feed: what a resource server verifying task tokens offline
 * (`writ/verify`) must refuse although the signature and `exp` still verify —
 * tasks that ended and tokens a renewal replaced, for as long as their tokens
 * would otherwise be valid.
 *
 * `GET /v1/revocations?since=<epoch ms>` answers
 * `{ now, tasks: [{id, expiresAt}], tokens: [{jti, expiresAt}], narrowed: [{id, scope, expiresAt}] }`
 * (times in epoch ms). Without `since`: everything currently in force. With it:
 * what ended, was superseded or was narrowed at or after `since` less a
 * look-back (see {@link feedLookBackMs}), still unexpired. A reader passes the
 * previous answer's `now` (minus an overlap, see docs/verify.md) as the next
 * `since`. `narrowed` carries the scopes a task
 * keeps after a policy change narrowed its grant (src/enforce/narrowing-list.ts):
 * its token's other scopes must be refused.
 *
 * Who may read it: anyone, like the JWKS next to it and like a CA's CRL. It
 * names random task ids and jtis and when they expire, and for narrowed tasks
 * the scopes they keep: no identities, purposes or credentials. Requiring a
 * credential would give every resource server a standing secret, which is what
 * Writ exists to remove. The reasoning and its costs are in docs/verify.md.
 */
import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { validationError } from '../broker/broker.js';
import { formatScopeClaim } from '../core/scope.js';
import type { Writ } from '../writ.js';

export const REVOCATIONS_PATH = '/v1/revocations';

/**
 * A `since` older than this is answered with everything in force instead (a
 * superset of what was asked: readers merge, so that is always correct), so
 * that no `since` makes Writ scan every task that ever ended.
 */
const SINCE_WINDOW_MS = 60 * 60_000;

/**
 * How far before `since` an answer reaches back: the look-back every Writ node
 * uses to read other nodes' ends (`syncRevocations` in src/writ.ts).
 *
 * INVARIANT: a record's time (`ended_at`, `superseded_at`, `narrowed_at`) is
 * the clock of the node that wrote it, read before its transaction committed,
 * while `since` comes from the clock of whichever node answered the reader
 * last. An end written by a node whose clock lags, or committed late, carries
 * a time before a `since` the reader already holds: without the look-back it
 * would be in no answer at all, and its token would pass a resource server
 * until `exp`. Readers merge, so the entries seen twice are harmless.
 */
export function feedLookBackMs(writ: Pick<Writ, 'config'>): number {
  return 2 * writ.config.revocation.syncIntervalMs + 60_000;
}

const revocationsQuerySchema = z
  .object({
    since: z
      .string()
      .max(16)
      .regex(/^\d+$/, 'epoch milliseconds')
      .transform(Number)
      .refine((n) => Number.isSafeInteger(n), 'epoch milliseconds')
      .optional(),
  })
  .strict();

/** The feed document, as `writ/verify` reads it. */
export interface RevocationFeed {
  /** Writ's clock when the answer was read, epoch ms: the next `since` (minus an overlap). */
  readonly now: number;
  /** Ended tasks whose tokens (and their delegated children's) are refused until `expiresAt`. */
  readonly tasks: { readonly id: string; readonly expiresAt: number }[];
  /** Tokens a renewal replaced, refused until `expiresAt`. */
  readonly tokens: { readonly jti: string; readonly expiresAt: number }[];
  /** Tasks whose grant a policy change narrowed: `scope` (space-separated, as in a token) is what they keep. */
  readonly narrowed: { readonly id: string; readonly scope: string; readonly expiresAt: number }[];
}

/**
 * Reads the feed from the store (every node's ends, renewals and narrowings,
 * not only this process's). An entry is kept while its token could still pass an `exp` check
 * somewhere: until `expiresAt` plus the configured clock skew.
 */
export async function readRevocationFeed(writ: Writ, since: number | undefined): Promise<RevocationFeed> {
  const now = writ.clock.now();
  const horizon = now - writ.config.tokens.clockSkew * 1000;
  // A `since` ahead of this node's clock (the last answer came from a node whose clock runs ahead) counts from now.
  const from = since === undefined ? undefined : Math.min(since, now) - feedLookBackMs(writ);
  const [tasks, tokens, narrowed] =
    from === undefined || from < now - SINCE_WINDOW_MS
      ? await Promise.all([writ.store.listEndedUnexpiredTasks(horizon), writ.store.listSupersededUnexpiredTokens(horizon), writ.store.listNarrowedUnexpiredTasks(horizon)])
      : await Promise.all([writ.store.listTasksEndedSince(from), writ.store.listTokensSupersededSince(from), writ.store.listTasksNarrowedSince(from)]);
  return {
    now,
    tasks: tasks.filter((t) => t.expiresAt > horizon).map((t) => ({ id: t.id, expiresAt: t.expiresAt })),
    tokens: tokens.filter((t) => t.expiresAt > horizon).map((t) => ({ jti: t.jti, expiresAt: t.expiresAt })),
    narrowed: narrowed.filter((t) => t.expiresAt > horizon).map((t) => ({ id: t.id, scope: formatScopeClaim(t.grantedScopes), expiresAt: t.expiresAt })),
  };
}

export function registerRevocationRoutes(app: FastifyInstance, writ: Writ): void {
  app.get<{ Querystring: Record<string, unknown> }>(REVOCATIONS_PATH, async (request) => {
    const query = revocationsQuerySchema.safeParse(request.query ?? {});
    if (!query.success) throw validationError(query.error.issues);
    return readRevocationFeed(writ, query.data.since);
  });
}
