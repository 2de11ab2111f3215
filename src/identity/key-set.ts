/**
 * A trust source's verification keys: fetched from an OIDC issuer, a JWKS
 * URL, a SPIFFE bundle endpoint or a file; cached; refreshed when stale or
 * when an unknown kid shows up, at most once per interval; and failing
 * closed: a key set never yields a key it did not load from its location.
 *
 * Availability choice: when a refresh fails, keys loaded earlier keep being
 * served (even past their max age), so an issuer outage does not lock out
 * tokens signed by keys we already hold. A key removed at the issuer is
 * dropped at the first successful refresh after it was removed.
 */
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { Clock } from '../core/clock.js';
import { assertFetchOptions, fetchJson, parseUntrustedJson, type FetchJsonOptions } from './fetch-json.js';

export type KeySetLocation =
  /** `${issuer without one trailing /}/.well-known/openid-configuration`, then its `jwks_uri`. */
  | { readonly kind: 'oidc-discovery'; readonly issuer: string }
  | { readonly kind: 'jwks'; readonly url: string }
  /** SPIFFE bundle endpoint (https_web profile): a JWKS whose keys say `use: "jwt-svid"` or `"x509-svid"`. */
  | { readonly kind: 'spiffe-bundle'; readonly url: string }
  /** A JWKS or SPIFFE bundle JSON file, re-read on every refresh. */
  | { readonly kind: 'file'; readonly path: string };

export interface VerificationKey {
  readonly kid: string;
  readonly key: KeyObject;
  /** The JWK's `alg` when it states one; the verifier must then refuse any other alg. */
  readonly alg: string | undefined;
}

export type KeyLookup =
  | { readonly ok: true; readonly key: VerificationKey }
  | { readonly ok: false; readonly reason: 'unknown_kid' | 'unreachable'; readonly detail: string };

export interface KeySetOptions {
  readonly location: KeySetLocation;
  /** 'jwt-svid': only keys with `use: "jwt-svid"` (SPIFFE bundles). 'sig': keys with `use: "sig"` or no `use`. */
  readonly use: 'sig' | 'jwt-svid';
  readonly clock: Clock;
  readonly fetch: FetchJsonOptions;
  /** Keys older than this are refreshed on the next lookup (default 5 min; a smaller `spiffe_refresh_hint` wins). */
  readonly maxAgeMs?: number;
  /** At most one lookup-triggered refresh per this interval (default 30 s), so random kids cannot make Writ hammer the issuer. */
  readonly minRefreshIntervalMs?: number;
  /** Called on every refresh failure (lookup-triggered or forced) so the caller can log it. */
  readonly onRefreshError?: (error: Error) => void;
}

export interface KeySet {
  /**
   * The key for `kid`. From the cache when the set is fresh; on a miss or a
   * stale set, one refresh (rate-limited, shared by concurrent lookups), then
   * a second look. Never throws. Reason 'unreachable' when the set has never
   * loaded or its last refresh failed; otherwise 'unknown_kid'.
   */
  lookup(kid: string): Promise<KeyLookup>;
  /** The cached key without any I/O or freshness check, or undefined. */
  cached(kid: string): VerificationKey | undefined;
  /** Refreshes now, ignoring the rate limit (start-up warm-up); joins a refresh in flight. Rejects with the error when it fails; cached keys are kept then. */
  refresh(): Promise<void>;
  /** The kids currently held. */
  kids(): string[];
}

export type KeySetErrorCode =
  /** The discovery document is not an object with string `issuer` and `jwks_uri`. */
  | 'invalid_discovery'
  /** Discovery `issuer` is not exactly the configured issuer (OpenID Connect Discovery §4.3). */
  | 'issuer_mismatch'
  /** `jwks_uri` is not http(s), or is http for an https issuer. */
  | 'invalid_jwks_uri'
  /** The document is not `{ "keys": [...] }` with at most {@link MAX_KEYS} entries. */
  | 'invalid_jwks'
  | 'file_unreadable'
  | 'file_too_large'
  | 'file_malformed';

/** A refresh failure that is not a fetch failure (those are FetchJsonError). */
export class KeySetError extends Error {
  override readonly name = 'KeySetError';
  readonly code: KeySetErrorCode;
  constructor(code: KeySetErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }
}

/** Entries a key document may hold; more is a refresh failure, not a truncation. */
export const MAX_KEYS = 100;
const DEFAULT_MAX_AGE_MS = 5 * 60_000;
const DEFAULT_MIN_REFRESH_INTERVAL_MS = 30_000;
/** Members that only private or symmetric JWKs carry (RFC 7518 §6.2.2, §6.3.2, §6.4.1). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;
const MIN_RSA_BITS = 2048;

/** What one successful load produced. */
export interface LoadedKeys {
  readonly keys: ReadonlyMap<string, VerificationKey>;
  /** `spiffe_refresh_hint` in ms, when the document gave a usable one. */
  readonly refreshHintMs: number | undefined;
}

/**
 * Creates a key set. Nothing is fetched until the first lookup or refresh.
 *
 * @throws RangeError / TypeError on invalid options (bad URL, non-http(s)
 *   location, negative intervals, a SPIFFE bundle without use 'jwt-svid').
 */
export function createKeySet(options: KeySetOptions): KeySet {
  const { clock, location, use } = options;
  const maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS;
  const minRefreshIntervalMs = options.minRefreshIntervalMs ?? DEFAULT_MIN_REFRESH_INTERVAL_MS;
  if (!Number.isFinite(maxAgeMs) || maxAgeMs <= 0) throw new RangeError('maxAgeMs must be a positive number');
  if (!Number.isFinite(minRefreshIntervalMs) || minRefreshIntervalMs < 0) throw new RangeError('minRefreshIntervalMs must be a non-negative number');
  assertFetchOptions(options.fetch);
  assertLocation(location);
  // SPIFFE bundle JWKs always carry `use` (SPIFFE Trust Domain and Bundle §4.2.1), never 'sig'.
  if (location.kind === 'spiffe-bundle' && use !== 'jwt-svid') throw new TypeError("a spiffe-bundle location needs use 'jwt-svid'");
  const fetchOptions: FetchJsonOptions = Object.freeze({ ...options.fetch });

  let keys: ReadonlyMap<string, VerificationKey> = new Map();
  let loadedAt: number | undefined;
  let effectiveMaxAgeMs = maxAgeMs;
  let lastAttemptAt: number | undefined;
  let lastFailed = false;
  let inFlight: Promise<void> | undefined;

  // A clock that went backwards counts as "long ago": refresh rather than trust stale state.
  const atLeast = (then: number | undefined, now: number, interval: number): boolean => {
    if (then === undefined) return true;
    const elapsed = now - then;
    return elapsed < 0 || elapsed >= interval;
  };

  const report = (error: Error): void => {
    try {
      options.onRefreshError?.(error);
    } catch {
      // A throwing logger must not turn a refresh failure into something else.
    }
  };

  const refresh = (): Promise<void> => {
    if (inFlight !== undefined) return inFlight;
    lastAttemptAt = clock.now();
    const attempt = load(location, use, fetchOptions).then(
      (loaded) => {
        keys = loaded.keys;
        loadedAt = clock.now();
        effectiveMaxAgeMs = loaded.refreshHintMs === undefined ? maxAgeMs : Math.min(maxAgeMs, loaded.refreshHintMs);
        lastFailed = false;
      },
      (error: unknown) => {
        lastFailed = true;
        const failure = error instanceof Error ? error : new Error(String(error));
        report(failure);
        throw failure;
      },
    );
    inFlight = attempt.finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  // The kid is attacker-chosen, so it stays out of `detail`; the caller knows it.
  const miss = (): KeyLookup =>
    loadedAt === undefined || lastFailed
      ? { ok: false, reason: 'unreachable', detail: `kid not cached and the key set ${loadedAt === undefined ? 'has never loaded' : 'could not be refreshed'}` }
      : { ok: false, reason: 'unknown_kid', detail: 'kid not in the key set' };

  return {
    async lookup(kid) {
      const now = clock.now();
      const hit = keys.get(kid);
      const stale = atLeast(loadedAt, now, effectiveMaxAgeMs);
      if (hit !== undefined && !stale) return { ok: true, key: hit };
      // INVARIANT: I/O only when joining a refresh in flight (free) or when the
      // last attempt is at least minRefreshIntervalMs old.
      if (inFlight !== undefined || atLeast(lastAttemptAt, now, minRefreshIntervalMs)) {
        try {
          await refresh();
        } catch {
          // Reported through onRefreshError; the cached keys still answer.
        }
      }
      const found = keys.get(kid);
      return found === undefined ? miss() : { ok: true, key: found };
    },
    cached: (kid) => keys.get(kid),
    refresh,
    kids: () => [...keys.keys()],
  };
}

function assertLocation(location: KeySetLocation): void {
  switch (location.kind) {
    case 'oidc-discovery':
      assertHttpUrl(location.issuer, 'issuer');
      return;
    case 'jwks':
    case 'spiffe-bundle':
      assertHttpUrl(location.url, 'url');
      return;
    case 'file':
      if (typeof location.path !== 'string' || location.path.length === 0) throw new TypeError('file location needs a path');
      return;
    default:
      throw new TypeError(`unknown key set location ${(location as { kind: unknown }).kind as string}`);
  }
}

function assertHttpUrl(value: string, what: string): void {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`${what} is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`${what} must be http(s)`);
}

/** One load from the location: the keys it holds now, or a thrown FetchJsonError / KeySetError. */
async function load(location: KeySetLocation, use: KeySetOptions['use'], fetch: FetchJsonOptions): Promise<LoadedKeys> {
  switch (location.kind) {
    case 'oidc-discovery':
      // Discovery runs on every refresh rather than caching jwks_uri: one more
      // GET per (rate-limited) refresh buys an issuer check each time and picks
      // up a moved jwks_uri without a restart.
      return parseKeyDocument(await fetchJson(await discoverJwksUri(location.issuer, fetch), fetch), use);
    case 'jwks':
    case 'spiffe-bundle':
      return parseKeyDocument(await fetchJson(location.url, fetch), use);
    case 'file':
      return parseKeyDocument(await readJsonFile(location.path, fetch.maxBytes), use);
  }
}

/** The issuer's `jwks_uri`, after checking the discovery document names exactly this issuer. */
async function discoverJwksUri(issuer: string, fetch: FetchJsonOptions): Promise<string> {
  // OpenID Connect Discovery §4: remove a terminating "/" before appending.
  const base = issuer.endsWith('/') ? issuer.slice(0, -1) : issuer;
  const document = await fetchJson(`${base}/.well-known/openid-configuration`, fetch);
  if (!isObject(document)) throw new KeySetError('invalid_discovery', 'discovery document is not an object');
  const { issuer: stated, jwks_uri: jwksUri } = document;
  if (typeof stated !== 'string' || typeof jwksUri !== 'string') throw new KeySetError('invalid_discovery', 'discovery document lacks issuer or jwks_uri');
  // Discovery §4.3: exact string equality, no normalisation (trailing slash, case).
  if (stated !== issuer) throw new KeySetError('issuer_mismatch', 'discovery document names a different issuer');
  let url: URL;
  try {
    url = new URL(jwksUri);
  } catch {
    throw new KeySetError('invalid_jwks_uri', 'jwks_uri is not a URL');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new KeySetError('invalid_jwks_uri', 'jwks_uri is not http(s)');
  // An https issuer must not send us to plain http for its keys.
  if (issuer.startsWith('https:') && url.protocol !== 'https:') throw new KeySetError('invalid_jwks_uri', 'jwks_uri downgrades an https issuer to http');
  return url.href;
}

/** Reads at most maxBytes (one more to detect excess) of a JSON file. */
async function readJsonFile(path: string, maxBytes: number): Promise<unknown> {
  const buffer = Buffer.alloc(maxBytes + 1);
  let size = 0;
  try {
    const handle = await open(path, 'r');
    try {
      for (;;) {
        const { bytesRead } = await handle.read(buffer, size, buffer.length - size, null);
        if (bytesRead === 0 || size + bytesRead > maxBytes) {
          size += bytesRead;
          break;
        }
        size += bytesRead;
      }
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw new KeySetError('file_unreadable', `key file cannot be read: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { cause: error });
  }
  if (size > maxBytes) throw new KeySetError('file_too_large', `key file exceeds ${maxBytes} bytes`);
  try {
    return parseUntrustedJson(new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, size)));
  } catch (error) {
    throw new KeySetError('file_malformed', 'key file is not UTF-8 JSON without forbidden members', { cause: error });
  }
}

/**
 * The usable keys of a JWKS / SPIFFE bundle document. The document must be
 * `{ keys: [...] }` with at most MAX_KEYS entries; within it, entries are
 * skipped (never failing the set) when they: are not objects; have no kid or
 * a `use` other than wanted; share their kid with another wanted entry (all
 * copies dropped: ambiguous); carry private or symmetric material; state
 * `key_ops` without "verify"; state a symmetric or "none" alg; do not import;
 * are RSA under 2048 bits.
 *
 * @throws KeySetError 'invalid_jwks'.
 */
export function parseKeyDocument(document: unknown, use: KeySetOptions['use']): LoadedKeys {
  if (!isObject(document) || !Array.isArray(document.keys)) throw new KeySetError('invalid_jwks', 'key document is not {"keys": [...]}');
  const entries: unknown[] = document.keys;
  if (entries.length > MAX_KEYS) throw new KeySetError('invalid_jwks', `key document has more than ${MAX_KEYS} keys`);

  const wanted = entries.filter((entry): entry is Record<string, unknown> & { kid: string } => {
    if (!isObject(entry) || typeof entry.kid !== 'string' || entry.kid.length === 0) return false;
    return use === 'jwt-svid' ? entry.use === 'jwt-svid' : entry.use === undefined || entry.use === 'sig';
  });
  const seen = new Map<string, number>();
  for (const entry of wanted) seen.set(entry.kid, (seen.get(entry.kid) ?? 0) + 1);

  const keys = new Map<string, VerificationKey>();
  for (const entry of wanted) {
    if (seen.get(entry.kid) !== 1) continue;
    const key = importPublicJwk(entry);
    if (key !== undefined) keys.set(entry.kid, Object.freeze({ kid: entry.kid, key, alg: entry.alg as string | undefined }));
  }
  return { keys, refreshHintMs: refreshHint(document.spiffe_refresh_hint) };
}

/** The public key of a JWK, or undefined when the entry must be skipped. */
function importPublicJwk(entry: Record<string, unknown>): KeyObject | undefined {
  if (PRIVATE_MEMBERS.some((member) => Object.hasOwn(entry, member))) return undefined;
  const { kty, alg, key_ops: keyOps } = entry;
  if (kty !== 'RSA' && kty !== 'EC' && kty !== 'OKP') return undefined;
  if (alg !== undefined && (typeof alg !== 'string' || alg === 'none' || alg.startsWith('HS'))) return undefined;
  if (keyOps !== undefined && !(Array.isArray(keyOps) && keyOps.includes('verify'))) return undefined;
  // Only the public members reach the importer.
  const jwk: JsonWebKey = { kty };
  for (const member of ['crv', 'x', 'y', 'n', 'e'] as const) {
    const value = entry[member];
    if (value === undefined) continue;
    if (typeof value !== 'string') return undefined;
    jwk[member] = value;
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: jwk, format: 'jwk' });
  } catch {
    return undefined;
  }
  if (key.type !== 'public') return undefined;
  if (key.asymmetricKeyType === 'rsa' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) return undefined;
  return key;
}

/** `spiffe_refresh_hint` (seconds) in ms when it is a positive number; anything else is ignored. */
function refreshHint(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? value * 1000 : undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
