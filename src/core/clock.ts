/**
 * The clock, injectable so tests can freeze and move time. Every decision that
 * depends on time (expiry, reaper, policy `hour`/`weekday`) reads it from here.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock tests can set and advance. */
export interface ManualClock extends Clock {
  set(ms: number): void;
  advance(ms: number): void;
}

export function createManualClock(start = Date.now()): ManualClock {
  let current = start;
  return {
    now: () => current,
    set: (ms) => {
      current = ms;
    },
    advance: (ms) => {
      current += ms;
    },
  };
}

/** Whole seconds since the epoch, as JWT `iat`/`exp` use. */
export function epochSeconds(ms: number): number {
  return Math.floor(ms / 1000);
}

/** An epoch-ms time as ISO 8601, or null: how API views show optional times. */
export function isoOrNull(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}
