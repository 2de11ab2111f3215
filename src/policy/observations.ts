/**
 * What the risk score needs to know about an identity's recent behaviour and
 * the request cannot tell: how fast it is calling, and whether it has been
 * granted this kind of resource before.
 *
 * - Call rate: every task request and every action check counts one call, in
 *   one-second buckets over the last minute. Counts are this process's own:
 *   with several nodes behind a balancer, each sees its share (a rate spread
 *   over N nodes scores about 1/N; weigh `callRate` accordingly).
 * - Resource kinds: the kinds of every scope the identity was granted. Read
 *   once from the store per identity (its most recent grants), then kept up
 *   to date by this process's grants. A kind granted on another node since is
 *   seen at the next read after eviction; until then it scores as unusual,
 *   which errs towards more risk, never less.
 *
 * Memory is bounded: at most `maxIdentities` identities are tracked, least
 * recently used dropped first.
 */
import { resourceKind } from '../core/scope.js';
import type { Scope } from '../core/types.js';
import type { RiskObservations } from './engine.js';

/** Recent grants read per identity to learn the kinds it uses. */
const HISTORY_TASKS = 200;
const WINDOW_SECONDS = 60;

export interface Observations {
  /** Counts one call by the identity at `now` (epoch ms). */
  recordCall(identityId: string, now: number): void;
  /** Calls by the identity in the minute up to `now`. */
  callsLastMinute(identityId: string, now: number): number;
  /** The kinds the identity has been granted, read from its history on first use. */
  kindsOf(identityId: string): Promise<ReadonlySet<string>>;
  /** Remembers the kinds of scopes just granted. */
  recordGrant(identityId: string, scopes: readonly Scope[]): void;
  /**
   * The risk inputs for one request, from what is known now: at once when the
   * identity's history is already read, else once it is (a history that
   * cannot be read counts as a first use). Never rejects.
   */
  observe(identityId: string, resource: string, now: number): RiskObservations | Promise<RiskObservations>;
}

export interface ObservationsOptions {
  /** The identity's recent grants, newest first (store.listGrantedScopesOf). */
  readonly history: (identityId: string, limit: number) => Promise<Scope[][]>;
  readonly maxIdentities?: number;
}

interface Tracked {
  /** Calls per second, a ring indexed by epoch second mod 60. */
  readonly counts: Uint32Array;
  /** The epoch second each slot of `counts` belongs to. */
  readonly seconds: Float64Array;
  kinds: Set<string> | undefined;
  loading: Promise<Set<string>> | undefined;
}

export function createObservations(options: ObservationsOptions): Observations {
  const maxIdentities = options.maxIdentities ?? 100_000;
  const tracked = new Map<string, Tracked>();

  const entry = (identityId: string): Tracked => {
    let t = tracked.get(identityId);
    if (t === undefined) {
      if (tracked.size >= maxIdentities) {
        const oldest = tracked.keys().next().value;
        if (oldest !== undefined) tracked.delete(oldest);
      }
      t = { counts: new Uint32Array(WINDOW_SECONDS), seconds: new Float64Array(WINDOW_SECONDS).fill(-1), kinds: undefined, loading: undefined };
    } else tracked.delete(identityId);
    tracked.set(identityId, t); // most recently used last
    return t;
  };

  const callsLastMinute = (identityId: string, now: number): number => {
    const t = tracked.get(identityId);
    if (t === undefined) return 0;
    const second = Math.floor(now / 1000);
    let total = 0;
    for (let i = 0; i < WINDOW_SECONDS; i++) {
      const at = t.seconds[i] ?? -1;
      if (at > second - WINDOW_SECONDS && at <= second) total += t.counts[i] ?? 0;
    }
    return total;
  };

  const kindsOf = async (identityId: string): Promise<ReadonlySet<string>> => {
    const t = entry(identityId);
    if (t.loading !== undefined) return t.loading;
    if (t.kinds !== undefined) return t.kinds;
    t.loading = options.history(identityId, HISTORY_TASKS).then(
      (grants) => {
        const kinds = new Set(grants.flatMap((scopes) => scopes.map((s) => resourceKind(s.resource))));
        // Grants recorded while the history was loading are kept.
        for (const kind of t.kinds ?? []) kinds.add(kind);
        t.kinds = kinds;
        t.loading = undefined;
        return kinds;
      },
      (error: unknown) => {
        t.loading = undefined;
        throw error;
      },
    );
    return t.loading;
  };

  return {
    recordCall(identityId, now) {
      const t = entry(identityId);
      const second = Math.floor(now / 1000);
      const slot = ((second % WINDOW_SECONDS) + WINDOW_SECONDS) % WINDOW_SECONDS;
      if (t.seconds[slot] !== second) {
        t.seconds[slot] = second;
        t.counts[slot] = 0;
      }
      t.counts[slot] = (t.counts[slot] ?? 0) + 1;
    },
    callsLastMinute,
    kindsOf,
    recordGrant(identityId, scopes) {
      const t = entry(identityId);
      // Before the history is read, the kinds wait in `kinds`; the load merges them.
      t.kinds ??= t.loading === undefined ? undefined : new Set();
      for (const scope of scopes) t.kinds?.add(resourceKind(scope.resource));
    },
    observe(identityId, resource, now) {
      // Once the history is read (every call but an identity's first), no promise and no wait.
      const t = tracked.get(identityId);
      if (t?.kinds !== undefined && t.loading === undefined) {
        return { callsLastMinute: callsLastMinute(identityId, now), unusualResource: !t.kinds.has(resourceKind(resource)) };
      }
      return kindsOf(identityId).then(
        (kinds) => ({ callsLastMinute: callsLastMinute(identityId, now), unusualResource: !kinds.has(resourceKind(resource)) }),
        // An unreadable history counts as a first use: more risk, never less.
        () => ({ callsLastMinute: callsLastMinute(identityId, now), unusualResource: true }),
      );
    },
  };
}

/**
 * What a task-level step (a delegation) by `identityId` over `scopes` is
 * scored with: the identity's call rate, and a first use when any scope's
 * resource kind is new to it. Without it, a step would score both signals at
 * their worst (unknown counts as risky), so a delegation of what the
 * delegator already holds would be refused by the hour of the day.
 */
export async function observeScopes(observations: Observations, identityId: string, scopes: readonly Scope[], now: number): Promise<RiskObservations> {
  if (scopes.length === 0) return observations.observe(identityId, 'task', now);
  const seen = await Promise.all(scopes.map((scope) => observations.observe(identityId, scope.resource, now)));
  return { callsLastMinute: Math.max(...seen.map((o) => o.callsLastMinute)), unusualResource: seen.some((o) => o.unusualResource) };
}
