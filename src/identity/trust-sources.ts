/**
 * Trust sources: where identities are verified from. An identity token is
 * routed to a source by the key that signed it (its `kid`), never by a claim:
 * nothing in the payload is read before the signature has verified. Then the
 * source's own rules apply: the pinned issuer and audience, the alg allowlist,
 * for SPIFFE the trust domain of `sub`, and the claim mapping that gives the
 * identity's id, environment and labels.
 *
 * An X.509-SVID presented over mTLS is routed by its SPIFFE ID's trust domain
 * and must chain to that domain's bundle.
 *
 * Verified tokens are remembered until they expire, keyed by a hash of the
 * token, so a busy agent pays for one signature check per token, not per call.
 */
import { createHash, type X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { JWTPayload } from 'jose';
import type { Clock } from '../core/clock.js';
import type { OidcSourceConfig, SpiffeSourceConfig, TrustSourceConfig } from '../core/config.js';
import type { WritErrorCode } from '../core/errors.js';
import type { ActorType } from '../core/types.js';
import type { KeyRing } from '../tokens/key-ring.js';
import { printable, readJwsHeader, ringKeys, verifyJwt, type JwsHeader, type KeyResolution, type KeyResolver, type TokenFailureCode } from '../tokens/jwt.js';
import type { FetchJsonOptions } from './fetch-json.js';
import { createKeySet, type KeySet, type KeySetLocation, type VerificationKey } from './key-set.js';
import { parseSpiffeId } from './spiffe-id.js';
import { parsePemCertificates, verifyX509Svid } from './x509-svid.js';

/** Where an identity came from, as recorded on it and in audit records. */
export interface SourceInfo {
  readonly name: string;
  readonly type: 'oidc' | 'spiffe' | 'dev';
  readonly unregistered: 'deny' | 'quarantine';
  readonly quarantineLimit: number;
  readonly actorType: ActorType;
}

/** What a verified credential says about its identity. */
export interface VerifiedCredential {
  readonly source: SourceInfo;
  readonly identityId: string;
  /** From the source's environment mapping; undefined when it has none. */
  readonly environment: string | undefined;
  readonly labels: Readonly<Record<string, string>>;
  /** Epoch ms after which the credential is no longer accepted. */
  readonly expiresAt: number;
  /** `x5t#S256` of the client certificate, for mTLS credentials. */
  readonly certificateThumbprint?: string;
}

export type CredentialFailureCode = TokenFailureCode | Extract<WritErrorCode, 'ERR_TOKEN_TRUST_DOMAIN' | 'ERR_TOKEN_CLAIMS' | 'ERR_CERT_INVALID' | 'ERR_CERT_UNTRUSTED' | 'ERR_CERT_EXPIRED'>;

export type CredentialResult =
  | { readonly ok: true; readonly credential: VerifiedCredential }
  | { readonly ok: false; readonly code: CredentialFailureCode; readonly detail: string; readonly subject?: string };

export interface TrustSources {
  /**
   * Verifies a bearer identity token. Never throws for a bad token.
   * `audience`: the `aud` it must name instead of its source's (a token made
   * for one use, such as being the actor of a token exchange).
   */
  verifyToken(token: string, audience?: string): Promise<CredentialResult>;
  /** Verifies a client certificate chain (leaf first) as an X.509-SVID. */
  verifyCertificate(chain: readonly X509Certificate[]): CredentialResult;
  /** Every X.509 root of every spiffe source, for the TLS listener's `ca`. */
  x509Roots(): X509Certificate[];
  /** Fetches every remote key set once; reports (does not throw) the ones that failed. */
  warm(): Promise<{ name: string; error: string }[]>;
  readonly names: readonly string[];
}

export interface DevIssuerSource {
  readonly ring: KeyRing;
  readonly issuer: string;
  readonly maxTtlSeconds: number;
}

export interface TrustSourcesOptions {
  readonly sources: readonly TrustSourceConfig[];
  readonly devIssuer: DevIssuerSource | undefined;
  /** Default `aud` identity tokens must name. */
  readonly audience: string;
  readonly clockSkewSeconds: number;
  readonly clock: Clock;
  /** Resolves a path from the configuration. */
  readonly resolvePath: (path: string) => string;
  readonly onKeyRefreshError?: (source: string, error: Error) => void;
  /** Verified tokens remembered at most (default 10 000). */
  readonly cacheEntries?: number;
}

/** One JWT-verifying source. */
interface JwtSource {
  readonly info: SourceInfo;
  readonly algorithms: readonly string[];
  /** Cached key without I/O; undefined when this source does not hold the kid. */
  cached(header: JwsHeader & { readonly kid: string }): KeyResolution | undefined;
  /** Key lookup that may refresh (rate-limited). */
  readonly keys: KeyResolver;
  /** Undefined for sources that never fetch. */
  readonly keySet: KeySet | undefined;
  readonly issuer: string | undefined;
  readonly audience: string;
  readonly requiredClaims: readonly string[];
  readonly maxLifetimeSeconds: number | undefined;
  /** Source rules after the signature and standard claims verified. */
  identify(payload: JWTPayload): CredentialResult;
}

export function createTrustSources(options: TrustSourcesOptions): TrustSources {
  const { clock } = options;
  const jwtSources: JwtSource[] = [];
  const x509Bundles = new Map<string, { info: SourceInfo; bundle: ReloadingBundle }>();

  // The dev issuer never vouches for a trust domain a real source owns.
  const ownedDomains = new Set(options.sources.flatMap((s) => (s.type === 'spiffe' ? [s.trustDomain] : [])));
  if (options.devIssuer !== undefined) jwtSources.push(devSource(options.devIssuer, options.audience, ownedDomains));
  for (const config of options.sources) {
    const info: SourceInfo = { name: config.name, type: config.type, unregistered: config.unregistered, quarantineLimit: config.quarantineLimit, actorType: config.actorType };
    const fetch: FetchJsonOptions = {
      timeoutMs: config.fetch.timeoutMs,
      maxBytes: config.fetch.maxBytes,
      ...(config.fetch.caFile === undefined ? {} : { ca: readFileSync(options.resolvePath(config.fetch.caFile), 'utf8') }),
    };
    const keySetFor = (location: KeySetLocation, use: 'sig' | 'jwt-svid'): KeySet =>
      createKeySet({
        location,
        use,
        clock,
        fetch,
        maxAgeMs: config.fetch.refreshInterval * 1000,
        minRefreshIntervalMs: config.fetch.minRefreshInterval * 1000,
        onRefreshError: (error) => options.onKeyRefreshError?.(config.name, error),
      });
    if (config.type === 'oidc') {
      const location: KeySetLocation = config.jwksUri === undefined ? { kind: 'oidc-discovery', issuer: config.issuer } : { kind: 'jwks', url: config.jwksUri };
      jwtSources.push(oidcSource(config, info, keySetFor(location, 'sig'), options.audience));
    } else {
      if (config.jwtBundle !== undefined) {
        const location: KeySetLocation =
          config.jwtBundle.url !== undefined ? { kind: 'spiffe-bundle', url: config.jwtBundle.url } : { kind: 'file', path: options.resolvePath(config.jwtBundle.file ?? '') };
        jwtSources.push(spiffeSource(config, info, keySetFor(location, 'jwt-svid'), options.audience));
      }
      if (config.x509BundleFile !== undefined) {
        x509Bundles.set(config.trustDomain, { info, bundle: reloadingBundle(options.resolvePath(config.x509BundleFile), clock) });
      }
    }
  }
  const allAlgorithms = new Set(jwtSources.flatMap((s) => s.algorithms));
  const cache = createVerifiedTokenCache(options.cacheEntries ?? 10_000);

  const verifyWith = async (source: JwtSource, token: string, key: KeyResolution, audience: string | undefined): Promise<CredentialResult> => {
    const result = await verifyJwt(token, {
      // The key was found while routing; a second lookup would only repeat it.
      keys: () => key,
      algorithms: source.algorithms,
      issuer: source.issuer,
      audience: audience ?? source.audience,
      now: clock.now(),
      clockSkewSeconds: options.clockSkewSeconds,
      requiredClaims: source.requiredClaims,
      ...(source.maxLifetimeSeconds === undefined ? {} : { maxLifetimeSeconds: source.maxLifetimeSeconds }),
      rejectDuplicateClaims: true,
    });
    if (!result.ok) return result;
    return source.identify(result.payload);
  };

  return {
    names: [...jwtSources.map((s) => s.info.name), ...[...x509Bundles.values()].map((b) => b.info.name)],

    async verifyToken(token, audience) {
      const now = clock.now();
      // A token verified for one audience is remembered for that audience only.
      const digest = audience === undefined ? cache.digest(token) : `${cache.digest(token)} ${audience}`;
      const hit = cache.get(digest, now);
      if (hit !== undefined) return { ok: true, credential: hit };

      const read = readJwsHeader(token);
      if (!read.ok) return read;
      const { alg, kid } = read.header;
      if (!allAlgorithms.has(alg)) return { ok: false, code: 'ERR_TOKEN_ALGORITHM', detail: `alg ${printable(alg)} is not allowed by any trust source` };
      if (kid === undefined) return { ok: false, code: 'ERR_TOKEN_UNKNOWN_KEY', detail: 'header has no kid' };
      const header = { ...read.header, kid };

      /** Verifies with each candidate; the first success, or the most precise failure. */
      const tryCandidates = async (candidates: readonly { source: JwtSource; key: KeyResolution }[]): Promise<CredentialResult | undefined> => {
        let first: CredentialResult | undefined;
        for (const { source, key } of candidates) {
          const result = await verifyWith(source, token, key, audience);
          if (result.ok) {
            // Remembered only while the key that verified it is still trusted.
            cache.set(digest, result.credential, now, () => source.cached(header)?.ok === true);
            return result;
          }
          // Another source with the same kid may hold the right key; any other
          // failure is final, and it is the precise reason: that source's key verified the signature.
          if (result.code !== 'ERR_TOKEN_SIGNATURE' && result.code !== 'ERR_TOKEN_ALGORITHM') return result;
          first ??= result;
        }
        return first;
      };

      // Route by the signing key: first the sources already holding this kid. A
      // holder still looks the kid up, so a key set past its max age is refreshed
      // (rate-limited; the cached key answers while the issuer is down) and a key
      // the issuer removed stops verifying.
      const holders = jwtSources.filter((source) => source.cached(header) !== undefined);
      const held = (await Promise.all(holders.map(async (source) => ({ source, key: await source.keys(header) })))).filter(
        (c) => c.key.ok || c.key.code === 'ERR_TOKEN_ALGORITHM',
      );
      const fromHolders = await tryCandidates(held);
      if (fromHolders?.ok === true || (fromHolders !== undefined && fromHolders.code !== 'ERR_TOKEN_SIGNATURE' && fromHolders.code !== 'ERR_TOKEN_ALGORITHM')) {
        return fromHolders;
      }
      // No holder verified it: the other sources refresh (rate-limited) and look
      // again; two issuers may publish the same kid.
      const others = jwtSources.filter((source) => !holders.includes(source));
      const looked = await Promise.all(others.map(async (source) => ({ source, key: await source.keys(header) })));
      const fromOthers = await tryCandidates(looked.filter((c) => c.key.ok));
      if (fromOthers !== undefined && (fromOthers.ok || fromHolders === undefined)) return fromOthers;
      if (fromHolders !== undefined) return fromHolders;
      const remote = looked.filter((c) => c.source.keySet !== undefined);
      const unreachable = remote.length > 0 && remote.every((c) => !c.key.ok && c.key.code === 'ERR_ISSUER_UNREACHABLE');
      return unreachable
        ? { ok: false, code: 'ERR_ISSUER_UNREACHABLE', detail: `no cached key ${printable(kid)} and no trust source could be reached` }
        : { ok: false, code: 'ERR_TOKEN_UNKNOWN_KEY', detail: `no trust source has a key ${printable(kid)}` };
    },

    verifyCertificate(chain) {
      const now = clock.now();
      const bundles = new Map<string, readonly X509Certificate[]>();
      for (const [domain, { bundle }] of x509Bundles) bundles.set(domain, bundle.roots());
      const result = verifyX509Svid(chain, bundles, now);
      if (!result.ok) return result;
      const entry = x509Bundles.get(result.trustDomain);
      if (entry === undefined) return { ok: false, code: 'ERR_CERT_UNTRUSTED', detail: `no bundle for ${result.trustDomain}`, subject: result.spiffeId };
      return {
        ok: true,
        credential: {
          source: entry.info,
          identityId: result.spiffeId,
          environment: undefined,
          labels: {},
          expiresAt: result.notAfter,
          certificateThumbprint: result.thumbprint,
        },
      };
    },

    x509Roots: () => [...x509Bundles.values()].flatMap((b) => b.bundle.roots()),

    async warm() {
      const failures: { name: string; error: string }[] = [];
      await Promise.all(
        jwtSources.map(async (source) => {
          if (source.keySet === undefined) return;
          try {
            await source.keySet.refresh();
          } catch (error) {
            failures.push({ name: source.info.name, error: (error as Error).message });
          }
        }),
      );
      return failures;
    },
  };
}

function keySetResolver(keySet: KeySet, sourceName: string): { cached: JwtSource['cached']; keys: KeyResolver } {
  const accept = (header: { alg: string }, key: VerificationKey): KeyResolution =>
    key.alg !== undefined && key.alg !== header.alg
      ? { ok: false, code: 'ERR_TOKEN_ALGORITHM', detail: `${sourceName} key ${printable(key.kid)} is for ${key.alg}, token says ${printable(header.alg)}` }
      : { ok: true, key: key.key, kid: key.kid };
  return {
    cached: (header) => {
      const key = keySet.cached(header.kid);
      return key === undefined ? undefined : accept(header, key);
    },
    keys: async (header) => {
      const found = await keySet.lookup(header.kid);
      if (found.ok) return accept(header, found.key);
      return found.reason === 'unreachable'
        ? { ok: false, code: 'ERR_ISSUER_UNREACHABLE', detail: `${sourceName}: ${found.detail}` }
        : { ok: false, code: 'ERR_TOKEN_UNKNOWN_KEY', detail: `${sourceName}: ${found.detail}` };
    },
  };
}

function devSource(dev: DevIssuerSource, audience: string, ownedDomains: ReadonlySet<string>): JwtSource {
  const info: SourceInfo = { name: 'dev-issuer', type: 'dev', unregistered: 'deny', quarantineLimit: 0, actorType: 'agent' };
  const keys = ringKeys(dev.ring);
  return {
    info,
    algorithms: ['ES256'],
    cached: (header) => (dev.ring.verificationKey(header.kid) === undefined ? undefined : keys(header)) as KeyResolution | undefined,
    keys,
    keySet: undefined,
    issuer: dev.issuer,
    audience,
    requiredClaims: ['sub', 'exp', 'iat'],
    maxLifetimeSeconds: dev.maxTtlSeconds,
    identify(payload) {
      const sub = payload.sub ?? '';
      const id = parseSpiffeId(sub);
      if (id === undefined) return { ok: false, code: 'ERR_TOKEN_MALFORMED', detail: 'sub is not a SPIFFE ID' };
      if (ownedDomains.has(id.trustDomain)) {
        return { ok: false, code: 'ERR_TOKEN_TRUST_DOMAIN', detail: `the dev issuer does not vouch for ${id.trustDomain}, which a configured source owns`, subject: sub };
      }
      return { ok: true, credential: { source: info, identityId: sub, environment: undefined, labels: {}, expiresAt: (payload.exp ?? 0) * 1000 } };
    },
  };
}

/** A source whose keys come from a key set: the parts every OIDC and SPIFFE source shares. */
function remoteSource(
  config: TrustSourceConfig,
  info: SourceInfo,
  keySet: KeySet,
  rules: Pick<JwtSource, 'issuer' | 'audience' | 'maxLifetimeSeconds' | 'identify'>,
): JwtSource {
  return { info, algorithms: config.algorithms, ...keySetResolver(keySet, config.name), keySet, requiredClaims: ['sub', 'exp'], ...rules };
}

function oidcSource(config: OidcSourceConfig, info: SourceInfo, keySet: KeySet, audience: string): JwtSource {
  return remoteSource(config, info, keySet, {
    issuer: config.issuer,
    audience: config.audience ?? audience,
    maxLifetimeSeconds: config.maxTokenLifetime === 0 ? undefined : config.maxTokenLifetime,
    identify(payload) {
      const subject = renderTemplate(config.subject, payload);
      if (subject === undefined) return { ok: false, code: 'ERR_TOKEN_MALFORMED', detail: `claims do not fill the subject template ${config.subject}` };
      return mapped(info, config, `${config.issuer}#${subject}`, payload);
    },
  });
}

function spiffeSource(config: SpiffeSourceConfig, info: SourceInfo, keySet: KeySet, audience: string): JwtSource {
  return remoteSource(config, info, keySet, {
    // JWT-SVIDs need not carry iss: the trust domain is pinned by the bundle and by sub.
    issuer: undefined,
    audience,
    maxLifetimeSeconds: undefined,
    identify(payload) {
      const sub = payload.sub ?? '';
      const id = parseSpiffeId(sub);
      if (id === undefined) return { ok: false, code: 'ERR_TOKEN_MALFORMED', detail: 'sub is not a SPIFFE ID' };
      if (id.trustDomain !== config.trustDomain) {
        return { ok: false, code: 'ERR_TOKEN_TRUST_DOMAIN', detail: `sub is in ${printable(id.trustDomain)}, the signing key is ${config.trustDomain}'s`, subject: sub };
      }
      return mapped(info, config, sub, payload);
    },
  });
}

/** Applies the source's required claims, then its environment and label mapping. */
function mapped(info: SourceInfo, config: TrustSourceConfig, identityId: string, payload: JWTPayload): CredentialResult {
  for (const [claim, expected] of Object.entries(config.require)) {
    if (claimString(payload, claim) !== expected) {
      return { ok: false, code: 'ERR_TOKEN_CLAIMS', detail: `claim ${claim} is not ${JSON.stringify(expected)}`, subject: identityId };
    }
  }
  let environment: string | undefined;
  if (config.environment !== undefined) {
    const value = claimString(payload, config.environment.claim);
    const fromMap = value !== undefined && config.environment.map !== undefined ? config.environment.map[value] : undefined;
    environment = config.environment.map === undefined ? value : fromMap;
    environment ??= config.environment.default;
    if (environment === undefined || !/^[a-z][a-z0-9-]{0,63}$/.test(environment)) {
      return { ok: false, code: 'ERR_TOKEN_MALFORMED', detail: `claim ${config.environment.claim} gives no known environment`, subject: identityId };
    }
  }
  const labels: Record<string, string> = {};
  for (const [label, claim] of Object.entries(config.labels)) {
    const value = claimString(payload, claim);
    if (value !== undefined) labels[label] = value;
  }
  return { ok: true, credential: { source: info, identityId, environment, labels, expiresAt: (payload.exp ?? 0) * 1000 } };
}

/** A claim's value as a printable string of at most 256 characters, or undefined. */
export function claimString(payload: JWTPayload, ref: string): string | undefined {
  let value: unknown = payload;
  if (ref.startsWith('/')) {
    for (const raw of ref.slice(1).split('/')) {
      const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~');
      if (typeof value !== 'object' || value === null || Array.isArray(value) || !Object.hasOwn(value, segment)) return undefined;
      value = (value as Record<string, unknown>)[segment];
    }
  } else {
    value = Object.hasOwn(payload, ref) ? (payload as Record<string, unknown>)[ref] : undefined;
  }
  if (typeof value === 'number' || typeof value === 'boolean') value = String(value);
  if (typeof value !== 'string' || value.length === 0 || value.length > 256 || /[\p{Cc}\p{Cf}\p{Cs}]/u.test(value)) return undefined;
  return value;
}

/** Fills `{claim}` placeholders; undefined when a claim is missing or unusable. */
export function renderTemplate(template: string, payload: JWTPayload): string | undefined {
  let missing = false;
  const rendered = template.replace(/\{([^{}]+)\}/g, (_whole, ref: string) => {
    const value = claimString(payload, ref);
    if (value === undefined || /\s/.test(value)) missing = true;
    return value ?? '';
  });
  return missing || rendered.length === 0 ? undefined : rendered;
}

interface ReloadingBundle {
  roots(): X509Certificate[];
}

/** A PEM bundle file, re-read when it changes (SPIRE rotates its CA), checked at most every 10 s. */
function reloadingBundle(path: string, clock: Clock): ReloadingBundle {
  const load = () => ({ roots: parsePemCertificates(readFileSync(path, 'utf8')), mtimeMs: statSync(path).mtimeMs });
  let current = load();
  let checkedAt = clock.now();
  return {
    roots() {
      const now = clock.now();
      if (now - checkedAt >= 10_000) {
        checkedAt = now;
        try {
          if (statSync(path).mtimeMs !== current.mtimeMs) current = load();
        } catch {
          // An unreadable or half-written bundle keeps the last good one.
        }
      }
      return current.roots;
    },
  };
}

/**
 * Verified credentials by SHA-256 of the token, oldest evicted first. An entry
 * answers until the token expires, for at most a minute (then the token is
 * verified again, which also lets its key set refresh), and only while the key
 * that verified it is still in its source's set.
 */
function createVerifiedTokenCache(maxEntries: number) {
  const entries = new Map<string, { credential: VerifiedCredential; until: number; keyTrusted: () => boolean }>();
  return {
    digest: (token: string) => createHash('sha256').update(token).digest('base64url'),
    get(digest: string, now: number): VerifiedCredential | undefined {
      const hit = entries.get(digest);
      if (hit === undefined) return undefined;
      if (hit.until <= now || !hit.keyTrusted()) {
        entries.delete(digest);
        return undefined;
      }
      return hit.credential;
    },
    set(digest: string, credential: VerifiedCredential, now: number, keyTrusted: () => boolean): void {
      const until = Math.min(credential.expiresAt, now + VERIFIED_TOKEN_TTL_MS);
      if (until <= now) return;
      if (entries.size >= maxEntries) {
        // Oldest first (insertion order); drop a tenth at once so eviction is rare.
        const keep = Math.floor(maxEntries * 0.9);
        for (const key of entries.keys()) {
          if (entries.size <= keep) break;
          entries.delete(key);
        }
      }
      entries.set(digest, { credential, until, keyTrusted });
    },
  };
}

/** Longest a verified token is trusted without verifying it again. */
const VERIFIED_TOKEN_TTL_MS = 60_000;
