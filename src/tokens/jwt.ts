/**
 * Compact JWTs: minting with cached node:crypto keys, verifying with jose.
 *
 * Verification order is fixed and security-relevant: size limit, then the
 * signature (jose verifies it before reading any claim), then claims. Each
 * failure maps to one of a few stable reasons; the free-text detail is for the
 * audit log only.
 */
import type { KeyObject } from 'node:crypto';
import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { WritErrorCode } from '../core/errors.js';
import { findDuplicateKey } from '../core/strict-json.js';
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
  const { alg, kid, typ } = header as Record<string, unknown>;
  if (typeof alg !== 'string') return fail('ERR_TOKEN_MALFORMED', 'header has no alg');
  if (kid !== undefined && (typeof kid !== 'string' || kid.length === 0 || kid.length > 256)) return fail('ERR_TOKEN_MALFORMED', 'kid is not a short string');
  if (typ !== undefined && typeof typ !== 'string') return fail('ERR_TOKEN_MALFORMED', 'typ is not a string');
  return { ok: true, header: { alg, kid, typ } };
}

class KeyRefused extends Error {
  constructor(readonly failure: Extract<KeyResolution, { ok: false }>) {
    super(failure.detail);
  }
}

/**
 * Verifies a compact JWT. Never throws for a bad token; returns the reason.
 * Order: header (size, shape, alg allowlist, kid) → key → signature (jose
 * verifies it before reading any claim) → claims → duplicate claim names.
 */
export async function verifyJwt<P extends JWTPayload>(token: string, options: VerifyJwtOptions): Promise<VerifyResult<P>> {
  const read = readJwsHeader(token);
  if (!read.ok) return read;
  const { header } = read;
  if (!options.algorithms.includes(header.alg)) return fail('ERR_TOKEN_ALGORITHM', `alg ${printable(header.alg)} is not allowed`);
  if (header.kid === undefined) return fail('ERR_TOKEN_UNKNOWN_KEY', 'header has no kid');
  const headerWithKid = { ...header, kid: header.kid };
  let kid = '';
  try {
    const result = await jwtVerify<P>(
      token,
      async () => {
        const resolved = await options.keys(headerWithKid);
        if (!resolved.ok) throw new KeyRefused(resolved);
        kid = resolved.kid;
        return resolved.key;
      },
      {
        algorithms: [...options.algorithms],
        ...(options.typ === undefined ? {} : { typ: options.typ }),
        ...(options.issuer === undefined ? {} : { issuer: options.issuer }),
        audience: options.audience,
        currentDate: new Date(options.now),
        clockTolerance: options.clockSkewSeconds,
        requiredClaims: [...options.requiredClaims],
      },
    );
    const { exp, iat } = result.payload;
    if (options.maxLifetimeSeconds !== undefined && typeof exp === 'number' && typeof iat === 'number' && exp - iat > options.maxLifetimeSeconds) {
      return fail('ERR_TOKEN_MALFORMED', `lifetime ${exp - iat}s exceeds ${options.maxLifetimeSeconds}s`);
    }
    if (typeof iat === 'number' && iat * 1000 > options.now + options.clockSkewSeconds * 1000) {
      return fail('ERR_TOKEN_NOT_YET_VALID', 'iat is in the future');
    }
    if (options.rejectDuplicateClaims === true) {
      const payloadText = Buffer.from(token.slice(token.indexOf('.') + 1, token.lastIndexOf('.')), 'base64url').toString('utf8');
      const duplicate = findDuplicateKey(payloadText);
      if (duplicate !== undefined) return fail('ERR_TOKEN_MALFORMED', `payload names ${printable(duplicate)} twice`);
    }
    return { ok: true, payload: result.payload, kid };
  } catch (error) {
    return classify(error);
  }
}

function classify(error: unknown): VerifyResult<never> {
  if (error instanceof KeyRefused) return error.failure;
  if (error instanceof joseErrors.JWTExpired) return fail('ERR_TOKEN_EXPIRED', 'exp has passed');
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.reason === 'missing') return fail('ERR_TOKEN_MALFORMED', `claim ${error.claim} is missing`);
    if (error.claim === 'aud') return fail('ERR_TOKEN_AUDIENCE', 'aud does not name this audience');
    if (error.claim === 'iss') return fail('ERR_TOKEN_ISSUER', 'iss is not the pinned issuer');
    if (error.claim === 'nbf') return fail('ERR_TOKEN_NOT_YET_VALID', 'nbf is in the future');
    return fail('ERR_TOKEN_MALFORMED', `claim ${error.claim}: ${error.reason}`);
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed) return fail('ERR_TOKEN_ALGORITHM', error.message);
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return fail('ERR_TOKEN_SIGNATURE', 'signature does not verify');
  if (error instanceof joseErrors.JOSEError) return fail('ERR_TOKEN_MALFORMED', `${error.code}: ${error.message}`);
  // Key type mismatches and the like surface as TypeError from the crypto layer: still a bad token.
  return fail('ERR_TOKEN_SIGNATURE', error instanceof Error ? error.message : 'verification failed');
}

function fail(code: TokenFailureCode, detail: string): { ok: false; code: TokenFailureCode; detail: string } {
  return { ok: false, code, detail };
}

/** A token-supplied string made safe and short for an audit detail. */
export function printable(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}
