/**
 * Offline verification of Writ task tokens, for resource servers: the signature
 * against Writ's JWKS (pulled and cached), `typ`, `iss`, `aud`, `exp`/`nbf`,
 * the token's shape, revocation (Writ's feed, pulled; and pushes), the
 * certificate binding, and that a scope covers the call and was not taken
 * away by a policy change (narrowed grants, from the feed) — the same checks and
 * the same containment rule Writ applies at `/v1/authorize`, without a round
 * trip to Writ per call.
 *
 * This module and everything it imports are pure or do outbound HTTP only: no
 * store, no database driver, no Fastify (test/verify.test.ts checks the import
 * graph).
 */
import type { KeyObject } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import { findCoveringScope, isValidAction, isValidResource, parseScopeClaim } from '../core/scope.js';
import type { Scope } from '../core/types.js';
import { createKeySet, type KeySet } from '../identity/key-set.js';
import { fetchJson } from '../identity/fetch-json.js';
import { verifyJwt, type KeyResolver, type TokenFailureCode } from '../tokens/jwt.js';
import { actorsOf, MAX_ACT_DEPTH, TASK_TOKEN_CHECKS, type TaskTokenClaims } from '../tokens/task-token.js';
import { createRevocationState, revocationFeedSchema, type Revocation, type RevocationFeed } from './revocations.js';

/** Every code `verify` can answer with. Stable: switch on it, never on `detail`. */
export type VerifyFailureCode = TokenFailureCode | 'ERR_TOKEN_REVOKED' | 'ERR_TOKEN_BINDING' | 'ERR_SCOPE_NOT_GRANTED' | 'ERR_REVOCATIONS_STALE';

/** What a resource server is about to do with the token: one action on one resource (`kind:path`, canonical). */
export interface VerifyRequest {
  readonly action: string;
  readonly resource: string;
  /**
   * `x5t#S256` of the verified mTLS client certificate the request came over.
   * A token bound to a certificate (`cnf`) is refused without the same one.
   */
  readonly certificateThumbprint?: string;
}

export interface VerifiedTask {
  readonly ok: true;
  readonly claims: TaskTokenClaims;
  readonly taskId: string;
  /** Who acts with the token: `act.sub` when delegated, else `sub`. */
  readonly actor: string;
  /** Every scope the token carries. */
  readonly scopes: readonly Scope[];
  /** The scope that covers this request. */
  readonly scope: Scope;
  /** The task's ancestors, root first (empty unless delegated). */
  readonly lineage: readonly string[];
  /** Expiry, epoch ms. */
  readonly expiresAt: number;
  /**
   * An emergency grant (`task.breakGlass`). Writ decides every call under one by
   * its break-glass set and records each use for the grant's review; this
   * verifier does neither, so log the call where your security team will see it.
   */
  readonly breakGlass: boolean;
}

export interface VerifyRefusal {
  readonly ok: false;
  readonly code: VerifyFailureCode;
  /** For the resource server's log, not for the caller: it may name what was wrong with the token. */
  readonly detail: string;
}

export type VerifyOutcome = VerifiedTask | VerifyRefusal;

export interface WritVerifier {
  /**
   * Verifies `token` for `request`. Never throws for a bad token, an
   * unreachable Writ or a stale feed: every refusal is a {@link VerifyRefusal}.
   */
  verify(token: string, request: VerifyRequest): Promise<VerifyOutcome>;
  /** Resolves once the JWKS and (when configured) the revocation feed have loaded; rejects when either fails. */
  ready(): Promise<void>;
  /** Pulls the revocation feed now (joins a pull in flight). Rejects when the pull fails. */
  sync(): Promise<void>;
  /** Push: refuse a task's tokens (and its delegated children's), or one superseded token, until `expiresAt` (epoch ms). */
  revoke(revocation: Revocation): void;
  /** Push: merge a feed document (the shape of `GET /v1/revocations`). Does not count as a pull for freshness. */
  applyRevocations(feed: unknown): void;
  /** Stops polling. Verifications after close keep working until the feed goes stale. */
  close(): void;
}

const DEFAULT_POLL_INTERVAL_MS = 5_000;
const DEFAULT_CLOCK_SKEW_SECONDS = 30;
/**
 * Each pull asks from the previous answer's `now` minus this: an end committed
 * by a slower transaction, or written by a Writ node whose clock is behind,
 * still lands in the window. Entries seen twice are harmless.
 */
export const FEED_OVERLAP_MS = 10_000;
const JWKS_MAX_BYTES = 256 * 1024;
const FEED_MAX_BYTES = 16 * 1024 * 1024;
const DEFAULT_CACHE_SIZE = 10_000;
/**
 * Writ refuses a `tokens.maxTtl` over 24 h (src/core/config.ts), so no task
 * token it mints lives longer: one that claims to was not minted as Writ is
 * configured, and would otherwise pass (and stay cached) for as long as it says.
 */
const MAX_TOKEN_LIFETIME_SECONDS = 86_400;

const optionsSchema = z
  .object({
    issuer: z.string().min(1),
    audience: z.string().min(1),
    jwksUrl: z.string().min(1),
    revocationsUrl: z.string().min(1).nullable(),
    pollIntervalMs: z.number().int().min(100).max(3_600_000).default(DEFAULT_POLL_INTERVAL_MS),
    maxStalenessMs: z.number().int().positive().optional(),
    clockSkewSeconds: z.number().int().min(0).max(300).default(DEFAULT_CLOCK_SKEW_SECONDS),
    jwksMinRefreshIntervalMs: z.number().int().min(0).default(30_000),
    jwksMaxAgeMs: z.number().int().positive().default(5 * 60_000),
    timeoutMs: z.number().int().positive().max(60_000).default(5_000),
    ca: z.string().optional(),
    allowInsecureHttp: z.boolean().default(false),
    cacheSize: z.number().int().min(0).default(DEFAULT_CACHE_SIZE),
    clock: z.custom<{ now(): number }>((v) => typeof (v as { now?: unknown } | undefined)?.now === 'function').optional(),
    onError: z.custom<(error: Error) => void>((v) => typeof v === 'function').optional(),
  })
  .strict();

export interface WritVerifierOptions {
  /** Writ's `issuer` (writ.yaml `issuer`): tokens with another `iss` are refused. */
  readonly issuer: string;
  /** The task token audience (writ.yaml `tokens.audience`, default `writ-enforcement`). */
  readonly audience: string;
  /** `<issuer>/.well-known/jwks.json`. */
  readonly jwksUrl: string;
  /**
   * `<issuer>/v1/revocations`, polled every `pollIntervalMs`. `null` turns pulling
   * off: revocation then rests on `revoke`/`applyRevocations` alone, and a token
   * whose task ended stays valid here until its `exp` unless you push the end.
   * Required so that turning it off is a decision, not an omission.
   */
  readonly revocationsUrl: string | null;
  /** Default 5000. */
  readonly pollIntervalMs?: number;
  /**
   * Tokens are refused (ERR_REVOCATIONS_STALE) when the last successful pull is
   * older than this, and before the first. Default 3 × pollIntervalMs. This is
   * the longest a task's end can go unnoticed while Writ is unreachable.
   */
  readonly maxStalenessMs?: number;
  /** Tolerance for `exp`/`nbf`/`iat`, default 30 s (Writ's default `tokens.clockSkew`). */
  readonly clockSkewSeconds?: number;
  /** An unknown kid refetches the JWKS at most once per this interval (default 30 s). */
  readonly jwksMinRefreshIntervalMs?: number;
  /** Keys are refetched when older than this (default 5 min). */
  readonly jwksMaxAgeMs?: number;
  /** Per fetch, connect to last byte (default 5 s). */
  readonly timeoutMs?: number;
  /** Extra PEM CA(s) for Writ's https certificate. Trusted for these fetches only. */
  readonly ca?: string;
  /**
   * Allow `http:` URLs to non-loopback hosts. Off by default: whoever can
   * answer the JWKS fetch can mint tokens this verifier accepts.
   */
  readonly allowInsecureHttp?: boolean;
  /** Tokens kept verified in memory (default 10 000; 0 turns the cache off). Only signature and shape are cached. */
  readonly cacheSize?: number;
  /** Milliseconds since the epoch; default `Date.now`. */
  readonly clock?: { now(): number };
  /** Told of every failed JWKS fetch and feed pull (for your log). */
  readonly onError?: (error: Error) => void;
}

/** A token whose signature and shape verified; time, revocation, binding and scope are checked per call. */
interface CheckedToken {
  readonly claims: TaskTokenClaims;
  readonly scopes: readonly Scope[];
  readonly lineage: readonly string[];
  readonly actor: string;
}

/** A cached verdict, and the key that signed the token: the verdict holds only while the key set still holds that key. */
interface CachedToken {
  readonly checked: CheckedToken;
  readonly kid: string;
  readonly key: KeyObject;
}

/**
 * Creates a verifier and starts loading the JWKS and pulling the feed.
 * Await {@link WritVerifier.ready} before serving if you want the first
 * requests not to be refused while they load.
 *
 * Security: the verifier fails closed. Before the first successful pull, and
 * whenever the last one is older than `maxStalenessMs`, every token is refused
 * with ERR_REVOCATIONS_STALE. Only `EdDSA` is accepted, with `typ: task+jwt`.
 *
 * @throws TypeError on invalid options (missing issuer/audience/URLs, an
 *   `http:` URL to a non-loopback host without `allowInsecureHttp`, bad numbers).
 */
export function createWritVerifier(input: WritVerifierOptions): WritVerifier {
  const parsed = optionsSchema.safeParse(input);
  if (!parsed.success) throw new TypeError(`createWritVerifier: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(options)'}: ${i.message}`).join('; ')}`);
  const options = Object.freeze(parsed.data);
  assertFetchUrl(options.jwksUrl, 'jwksUrl', options.allowInsecureHttp);
  if (options.revocationsUrl !== null) assertFetchUrl(options.revocationsUrl, 'revocationsUrl', options.allowInsecureHttp);
  const clock = options.clock ?? { now: () => Date.now() };
  const skewMs = options.clockSkewSeconds * 1000;
  const maxStalenessMs = options.maxStalenessMs ?? 3 * options.pollIntervalMs;
  const report = (error: unknown) => {
    try {
      options.onError?.(error instanceof Error ? error : new Error(String(error)));
    } catch {
      // A throwing logger must not break verification.
    }
  };
  const fetchOptions = { timeoutMs: options.timeoutMs, ...(options.ca === undefined ? {} : { ca: options.ca }) };

  const keys: KeySet = createKeySet({
    location: { kind: 'jwks', url: options.jwksUrl },
    use: 'sig',
    clock,
    fetch: { ...fetchOptions, maxBytes: JWKS_MAX_BYTES },
    maxAgeMs: options.jwksMaxAgeMs,
    minRefreshIntervalMs: options.jwksMinRefreshIntervalMs,
    onRefreshError: report,
  });
  const resolveKey: KeyResolver = async (header) => {
    const found = await keys.lookup(header.kid);
    if (!found.ok) return { ok: false, code: found.reason === 'unknown_kid' ? 'ERR_TOKEN_UNKNOWN_KEY' : 'ERR_ISSUER_UNREACHABLE', detail: found.detail };
    // A JWK that names its alg is used for that alg only (RFC 7517 §4.4).
    if (found.key.alg !== undefined && found.key.alg !== header.alg) return { ok: false, code: 'ERR_TOKEN_ALGORITHM', detail: `the key is for ${found.key.alg}` };
    return { ok: true, key: found.key.key, kid: found.key.kid };
  };

  const revocations = createRevocationState({ clockSkewMs: skewMs });
  let lastServerNow: number | undefined;
  let syncedAt: number | undefined;
  let pulling: Promise<void> | undefined;

  const pull = async (): Promise<void> => {
    if (options.revocationsUrl === null) return;
    const startedAt = clock.now();
    const url = new URL(options.revocationsUrl);
    if (lastServerNow !== undefined) url.searchParams.set('since', String(Math.max(0, lastServerNow - FEED_OVERLAP_MS)));
    const document = await fetchJson(url.href, { ...fetchOptions, maxBytes: FEED_MAX_BYTES });
    const feed = revocationFeedSchema.safeParse(document);
    if (!feed.success) throw new Error(`the revocation feed at ${options.revocationsUrl} is not a feed document`);
    revocations.merge(feed.data);
    revocations.prune(clock.now());
    lastServerNow = feed.data.now;
    // INVARIANT: freshness counts from when the pull began, never from when it ended.
    syncedAt = Math.max(syncedAt ?? startedAt, startedAt);
  };
  const sync = (): Promise<void> => {
    if (pulling !== undefined) return pulling;
    pulling = pull().finally(() => {
      pulling = undefined;
    });
    return pulling;
  };

  let timer: NodeJS.Timeout | undefined;
  if (options.revocationsUrl !== null) {
    sync().catch(report);
    timer = setInterval(() => sync().catch(report), options.pollIntervalMs);
    timer.unref();
  }
  keys.refresh().catch(() => undefined); // reported through onRefreshError

  const cache = new Map<string, CachedToken>();

  /**
   * Signature, registered claims and the task token's shape; cached per token
   * for as long as the key set holds the key that verified it: a key withdrawn
   * from Writ's JWKS (rotated out after a compromise) takes the tokens it
   * signed with it at the next refresh, cached or not.
   */
  const checkToken = async (token: string, now: number): Promise<CheckedToken | VerifyRefusal> => {
    const hit = cache.get(token);
    if (hit !== undefined) {
      const held = keys.cached(hit.kid)?.key;
      if (held === hit.key) return hit.checked;
      // A refresh loads new KeyObjects: the same key material keeps the verdict (and the fast path above from now on).
      if (held?.equals(hit.key) === true) {
        cache.set(token, { ...hit, key: held });
        return hit.checked;
      }
      cache.delete(token);
    }
    let signer: KeyObject | undefined;
    const result = await verifyJwt<TaskTokenClaims & Record<string, unknown>>(token, {
      keys: async (header) => {
        const resolved = await resolveKey(header);
        signer = resolved.ok ? resolved.key : undefined;
        return resolved;
      },
      ...TASK_TOKEN_CHECKS,
      issuer: options.issuer,
      audience: options.audience,
      now,
      clockSkewSeconds: options.clockSkewSeconds,
      maxLifetimeSeconds: MAX_TOKEN_LIFETIME_SECONDS,
      rejectDuplicateClaims: true,
    });
    if (!result.ok) return refuse(result.code, result.detail);
    const checked = checkShape(result.payload);
    if (checked === undefined) return refuse('ERR_TOKEN_MALFORMED', 'task token claims have the wrong shape');
    if (options.cacheSize > 0 && signer !== undefined) {
      if (cache.size >= options.cacheSize) {
        const oldest = cache.keys().next();
        if (oldest.done !== true) cache.delete(oldest.value);
      }
      cache.set(token, { checked, kid: result.kid, key: signer });
    }
    return checked;
  };

  return {
    async verify(token, request) {
      const now = clock.now();
      const checked = await checkToken(String(token), now);
      if ('ok' in checked) return checked;
      const { claims } = checked;
      // exp and nbf move with the clock: checked on every call, cached or not.
      if (now >= claims.exp * 1000 + skewMs) {
        cache.delete(token);
        return refuse('ERR_TOKEN_EXPIRED', 'exp has passed');
      }
      if (claims.nbf * 1000 > now + skewMs) return refuse('ERR_TOKEN_NOT_YET_VALID', 'nbf is in the future');

      if (options.revocationsUrl !== null) {
        if (syncedAt === undefined) return refuse('ERR_REVOCATIONS_STALE', 'the revocation feed has not been read yet');
        const age = now - syncedAt;
        if (age > maxStalenessMs || age < -maxStalenessMs) return refuse('ERR_REVOCATIONS_STALE', `the revocation feed was last read ${age} ms ago (bound ${maxStalenessMs} ms)`);
      }
      const revoked = revocations.refusal({ jti: claims.jti, taskId: claims.task.id, lineage: checked.lineage });
      if (revoked !== undefined) return refuse('ERR_TOKEN_REVOKED', revoked);

      const bound = claims.cnf?.['x5t#S256'];
      if (bound !== undefined && bound !== request.certificateThumbprint) return refuse('ERR_TOKEN_BINDING', 'the token is bound to another client certificate');

      const { action, resource } = request;
      // The resource usually comes from the request path: a name that is not canonical is covered by nothing.
      if (typeof action !== 'string' || typeof resource !== 'string' || !isValidAction(action) || !isValidResource(resource)) {
        return refuse('ERR_SCOPE_NOT_GRANTED', 'the requested action or resource is not a valid, canonical name');
      }
      const revocable = { jti: claims.jti, taskId: claims.task.id, lineage: checked.lineage };
      const scope = findCoveringScope(checked.scopes, { action, resource });
      if (scope === undefined) return refuse('ERR_SCOPE_NOT_GRANTED', `no scope covers ${action}:${resource}`);
      // A policy change may have narrowed the grant (or an ancestor's) since the token was minted.
      if (findCoveringScope(revocations.keptOf(revocable, checked.scopes), { action, resource }) === undefined) {
        return refuse('ERR_SCOPE_NOT_GRANTED', `a policy change narrowed the grant: ${action}:${resource} is no longer held`);
      }
      return {
        ok: true,
        claims,
        taskId: claims.task.id,
        actor: checked.actor,
        scopes: checked.scopes,
        scope,
        lineage: checked.lineage,
        expiresAt: claims.exp * 1000,
        breakGlass: claims.task.breakGlass === true,
      };
    },
    async ready() {
      await Promise.all([keys.refresh(), sync()]);
    },
    sync,
    revoke(revocation) {
      const id = 'taskId' in revocation ? revocation.taskId : (revocation as { jti?: unknown }).jti;
      if (typeof id !== 'string' || id.length === 0 || !Number.isFinite(revocation.expiresAt)) throw new TypeError('revoke: { taskId | jti, expiresAt (epoch ms) }');
      revocations.add(revocation);
    },
    applyRevocations(feed: unknown) {
      const parsedFeed = revocationFeedSchema.safeParse(feed);
      if (!parsedFeed.success) throw new TypeError('applyRevocations: not a revocation feed document');
      revocations.merge(parsedFeed.data satisfies RevocationFeed);
    },
    close() {
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    },
  };
}

function refuse(code: VerifyFailureCode, detail: string): VerifyRefusal {
  return { ok: false, code, detail };
}

/**
 * The task token's own claims, checked as Writ checks them
 * (src/tokens/task-token.ts): undefined when anything has the wrong shape.
 */
function checkShape(claims: TaskTokenClaims & Record<string, unknown>): CheckedToken | undefined {
  const scopes = typeof claims.scope === 'string' ? parseScopeClaim(claims.scope) : undefined;
  const task = claims.task as unknown;
  if (scopes === undefined || typeof task !== 'object' || task === null || Array.isArray(task)) return undefined;
  const { id, lineage = [], breakGlass } = task as { id?: unknown; lineage?: unknown; breakGlass?: unknown };
  const actors = claims.act === undefined ? [] : actorsOf(claims.act);
  if (
    typeof id !== 'string' ||
    id.length === 0 ||
    typeof claims.sub !== 'string' ||
    typeof claims.jti !== 'string' ||
    typeof claims.env !== 'string' ||
    (breakGlass !== undefined && breakGlass !== true) ||
    // A delegated token names one actor per ancestor task: `act` and `task.lineage` agree, or nothing is trusted.
    actors === undefined ||
    !Array.isArray(lineage) ||
    lineage.length > MAX_ACT_DEPTH ||
    lineage.length !== actors.length ||
    !lineage.every((ancestor) => typeof ancestor === 'string' && ancestor.length > 0) ||
    !validConfirmation(claims.cnf)
  ) {
    return undefined;
  }
  return { claims, scopes, lineage: lineage as string[], actor: actors.at(-1) ?? claims.sub };
}

function validConfirmation(cnf: unknown): boolean {
  if (cnf === undefined) return true;
  if (typeof cnf !== 'object' || cnf === null || Array.isArray(cnf)) return false;
  const keys = Object.keys(cnf);
  // A confirmation method this verifier does not know is refused rather than ignored.
  return keys.length === 1 && keys[0] === 'x5t#S256' && typeof (cnf as Record<string, unknown>)['x5t#S256'] === 'string';
}

function assertFetchUrl(value: string, name: string, allowInsecureHttp: boolean): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`createWritVerifier: ${name} is not a URL`);
  }
  if (url.username !== '' || url.password !== '') throw new TypeError(`createWritVerifier: ${name} carries user info`);
  if (url.protocol === 'https:') return;
  if (url.protocol !== 'http:') throw new TypeError(`createWritVerifier: ${name} must be https`);
  if (!allowInsecureHttp && !isLoopback(url.hostname)) throw new TypeError(`createWritVerifier: ${name} is http to ${url.hostname}; use https, or allowInsecureHttp`);
}

function isLoopback(hostname: string): boolean {
  const host = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}
