/**
 * Compact JWTs: minting and verifying with node:crypto keys.
 *
 * Verification order is fixed and security-relevant: size limit, then the
 * signature (nothing in the payload is read before it verifies), then claims. Each
 * failure maps to one of a few stable reasons; the free-text detail is for the
 * audit log only.
 */
import type { KeyObject } from 'node:crypto';
import type { WritErrorCode } from '../core/errors.js';
import { findDuplicateKey } from '../core/strict-json.js';
import { checkSignature, isSupportedAlgorithm } from './jws-signature.js';
import { signBytes, type KeyRing, type SigningKey } from './key-ring.js';

/** Longest token Writ will look at. Checked before any parsing. */
export const MAX_TOKEN_LENGTH = 8192;

export type TokenFailureCode = Extract<
  WritErrorCode,
  | 'ERR_TOKEN_MALFORMED'
  | 'ERR_TOKEN_SIGNATURE'
  | 'ERR_TOKEN_EXPIRED'
  | 'ERR_TOKEN_NOT_YET_VALID'
  | 'ERR_TOKEN_AUDIENCE'
  | 'ERR_TOKEN_ISSUER'
  | 'ERR_TOKEN_ALGORITHM'
  | 'ERR_TOKEN_UNKNOWN_KEY'
  | 'ERR_ISSUER_UNREACHABLE'
>;

export type VerifyResult<P> =
  | { readonly ok: true; readonly payload: P; readonly kid: string }
  | { readonly ok: false; readonly code: TokenFailureCode; readonly detail: string };

/** The protected header of a compact JWS, read without trusting it: only to pick a key. */
export interface JwsHeader {
  readonly alg: string;
  readonly kid: string | undefined;
  readonly typ: string | undefined;
  /** True when the header lists critical extensions (`crit`). */
  readonly crit: boolean;
}

export type KeyResolution =
  | { readonly ok: true; readonly key: KeyObject; readonly kid: string }
  | { readonly ok: false; readonly code: TokenFailureCode; readonly detail: string };

/** Finds the verification key for a token's header; may fetch (a remote JWKS). */
export type KeyResolver = (header: JwsHeader & { readonly kid: string }) => KeyResolution | Promise<KeyResolution>;

export interface VerifyJwtOptions {
  readonly keys: KeyResolver;
  readonly algorithms: readonly string[];
  /** Required `typ` header (explicit typing, RFC 8725 §3.11); undefined accepts any. */
  readonly typ?: string;
  /** Expected `iss`; undefined leaves the check to the caller (it must then pin it). */
  readonly issuer: string | undefined;
  readonly audience: string;
  /** Current time in ms (from the injected clock). */
  readonly now: number;
  readonly clockSkewSeconds: number;
  readonly requiredClaims: readonly string[];
  /** Refuse tokens whose `exp - iat` exceeds this many seconds. */
  readonly maxLifetimeSeconds?: number;
  /** Refuse a payload with a duplicated member name (tokens from issuers Writ did not write). */
  readonly rejectDuplicateClaims?: boolean;
}

/** Mints a compact JWS over `payload` with `key`. */
export function mintJwt(key: SigningKey, typ: string, payload: Record<string, unknown>): string {
  const header = Buffer.from(JSON.stringify({ alg: key.alg, kid: key.kid, typ })).toString('base64url');
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const signingInput = `${header}.${body}`;
  return `${signingInput}.${signBytes(key, Buffer.from(signingInput)).toString('base64url')}`;
}

/** Keys from one of Writ's own rings. */
export function ringKeys(ring: KeyRing): KeyResolver {
  return (header) => {
    const key = ring.verificationKey(header.kid);
    if (key === undefined) return fail('ERR_TOKEN_UNKNOWN_KEY', `unknown kid ${printable(header.kid)}`);
    if (key.alg !== header.alg) return fail('ERR_TOKEN_ALGORITHM', `kid ${key.kid} is an ${key.alg} key, token says ${printable(header.alg)}`);
    return { ok: true, key: key.publicKey, kid: key.kid };
  };
}

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * Reads the protected header of a compact JWS, defensively: size limit first,
 * strict base64url in every segment, a JSON object without duplicate names,
 * `alg` a string. Nothing here is trusted; it only selects a key.
 */
export function readJwsHeader(token: string): { ok: true; header: JwsHeader } | { ok: false; code: TokenFailureCode; detail: string } {
  if (token.length > MAX_TOKEN_LENGTH) return fail('ERR_TOKEN_MALFORMED', `token is ${token.length} characters, limit ${MAX_TOKEN_LENGTH}`);
  if (!COMPACT_JWS.test(token)) return fail('ERR_TOKEN_MALFORMED', 'not a compact JWS');
  const first = token.indexOf('.');
  const second = token.indexOf('.', first + 1);
  // A base64url segment is never 1 more than a multiple of 4 characters long.
  if (first % 4 === 1 || (second - first - 1) % 4 === 1 || (token.length - second - 1) % 4 === 1) {
    return fail('ERR_TOKEN_MALFORMED', 'a segment is not valid base64url');
  }
  const text = Buffer.from(token.slice(0, first), 'base64url').toString('utf8');
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch {
    return fail('ERR_TOKEN_MALFORMED', 'header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return fail('ERR_TOKEN_MALFORMED', 'header is not a JSON object');
  const duplicate = findDuplicateKey(text);
  if (duplicate !== undefined) return fail('ERR_TOKEN_MALFORMED', `header names ${printable(duplicate)} twice`);
  const { alg, kid, typ, crit } = header as Record<string, unknown>;
  if (typeof alg !== 'string') return fail('ERR_TOKEN_MALFORMED', 'header has no alg');
  if (kid !== undefined && (typeof kid !== 'string' || kid.length === 0 || kid.length > 256)) return fail('ERR_TOKEN_MALFORMED', 'kid is not a short string');
  if (typ !== undefined && typeof typ !== 'string') return fail('ERR_TOKEN_MALFORMED', 'typ is not a string');
  return { ok: true, header: { alg, kid, typ, crit: crit !== undefined } };
}

/** The claims Writ reads; anything else passes through untyped. */
export interface JwtPayload {
  readonly iss?: string;
  readonly sub?: string;
  readonly aud?: string | string[];
  readonly exp?: number;
  readonly nbf?: number;
  readonly iat?: number;
  readonly jti?: string;
  readonly [claim: string]: unknown;
}

/**
 * Verifies a compact JWT. Never throws for a bad token; returns the reason.
 * Order: header (size, shape, alg allowlist, kid, no `crit`) → key → signature
 * → only then the payload is decoded → duplicate names → claims (typ, iss,
 * aud, exp, nbf, iat, required, lifetime).
 */
export async function verifyJwt<P extends JwtPayload>(token: string, options: VerifyJwtOptions): Promise<VerifyResult<P>> {
  const read = readJwsHeader(token);
  if (!read.ok) return read;
  const { header } = read;
  if (!options.algorithms.includes(header.alg) || !isSupportedAlgorithm(header.alg)) return fail('ERR_TOKEN_ALGORITHM', `alg ${printable(header.alg)} is not allowed`);
  if (header.kid === undefined) return fail('ERR_TOKEN_UNKNOWN_KEY', 'header has no kid');
  if (header.crit) return fail('ERR_TOKEN_MALFORMED', 'header has crit extensions Writ does not understand');
  if (options.typ !== undefined && header.typ !== options.typ) return fail('ERR_TOKEN_MALFORMED', `typ is ${printable(header.typ ?? '(none)')}, expected ${options.typ}`);

  const resolved = await options.keys({ ...header, kid: header.kid });
  if (!resolved.ok) return resolved;
  const lastDot = token.lastIndexOf('.');
  const signature = Buffer.from(token.slice(lastDot + 1), 'base64url');
  const checked = checkSignature(header.alg, resolved.key, Buffer.from(token.slice(0, lastDot)), signature);
  if (checked === 'key_mismatch') return fail('ERR_TOKEN_ALGORITHM', `key ${printable(resolved.kid)} does not fit alg ${header.alg}`);
  if (checked !== 'valid') return fail('ERR_TOKEN_SIGNATURE', 'signature does not verify');

  // The signature verified: the payload may now be read.
  const payloadText = Buffer.from(token.slice(token.indexOf('.') + 1, lastDot), 'base64url').toString('utf8');
  let payload: unknown;
  try {
    payload = JSON.parse(payloadText);
  } catch {
    return fail('ERR_TOKEN_MALFORMED', 'payload is not JSON');
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return fail('ERR_TOKEN_MALFORMED', 'payload is not a JSON object');
  if (options.rejectDuplicateClaims === true) {
    const duplicate = findDuplicateKey(payloadText);
    if (duplicate !== undefined) return fail('ERR_TOKEN_MALFORMED', `payload names ${printable(duplicate)} twice`);
  }
  const claims = payload as JwtPayload;
  const problem = checkClaims(claims, options);
  if (problem !== undefined) return problem;
  return { ok: true, payload: claims as P, kid: resolved.kid };
}

/** The registered claims (RFC 7519 §4.1) against the options; undefined when they hold. */
function checkClaims(claims: JwtPayload, options: VerifyJwtOptions): { ok: false; code: TokenFailureCode; detail: string } | undefined {
  for (const name of options.requiredClaims) {
    if (!Object.hasOwn(claims, name)) return fail('ERR_TOKEN_MALFORMED', `claim ${name} is missing`);
  }
  const { iss, aud, exp, nbf, iat } = claims;
  for (const [name, value] of [['exp', exp], ['nbf', nbf], ['iat', iat]] as const) {
    if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value))) return fail('ERR_TOKEN_MALFORMED', `claim ${name} is not a number`);
  }
  if (options.issuer !== undefined && iss !== options.issuer) return fail('ERR_TOKEN_ISSUER', 'iss is not the pinned issuer');
  const audiences = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : undefined;
  if (audiences === undefined || !audiences.includes(options.audience)) return fail('ERR_TOKEN_AUDIENCE', 'aud does not name this audience');
  const skewMs = options.clockSkewSeconds * 1000;
  if (typeof exp === 'number' && options.now >= exp * 1000 + skewMs) return fail('ERR_TOKEN_EXPIRED', 'exp has passed');
  if (typeof nbf === 'number' && nbf * 1000 > options.now + skewMs) return fail('ERR_TOKEN_NOT_YET_VALID', 'nbf is in the future');
  if (typeof iat === 'number' && iat * 1000 > options.now + skewMs) return fail('ERR_TOKEN_NOT_YET_VALID', 'iat is in the future');
  if (options.maxLifetimeSeconds !== undefined && typeof exp === 'number' && typeof iat === 'number' && exp - iat > options.maxLifetimeSeconds) {
    return fail('ERR_TOKEN_MALFORMED', `lifetime ${exp - iat}s exceeds ${options.maxLifetimeSeconds}s`);
  }
  return undefined;
}

function fail(code: TokenFailureCode, detail: string): { ok: false; code: TokenFailureCode; detail: string } {
  return { ok: false, code, detail };
}

/** A token-supplied string made safe and short for an audit detail. */
export function printable(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}
