/**
 * Compact JWTs: minting with cached node:crypto keys, verifying with jose.
 *
 * Verification order is fixed and security-relevant: size limit, then the
 * signature (jose verifies it before reading any claim), then claims. Each
 * failure maps to one of a few stable reasons; the free-text detail is for the
 * audit log only.
 */
import { errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { WritErrorCode } from '../core/errors.js';
import { signBytes, type KeyRing, type SigningAlg, type SigningKey } from './key-ring.js';

/** Longest token Writ will look at. Checked before any parsing. */
export const MAX_TOKEN_LENGTH = 8192;

export type TokenFailureCode = Extract<
  WritErrorCode,
  'ERR_TOKEN_MALFORMED' | 'ERR_TOKEN_SIGNATURE' | 'ERR_TOKEN_EXPIRED' | 'ERR_TOKEN_AUDIENCE'
>;

export type VerifyResult<P> =
  | { readonly ok: true; readonly payload: P; readonly kid: string }
  | { readonly ok: false; readonly code: TokenFailureCode; readonly detail: string };

export interface VerifyJwtOptions {
  readonly ring: KeyRing;
  readonly algorithms: readonly SigningAlg[];
  /** Required `typ` header (explicit typing, RFC 8725 §3.11); undefined accepts any. */
  readonly typ?: string;
  readonly issuer: string;
  readonly audience: string;
  /** Current time in ms (from the injected clock). */
  readonly now: number;
  readonly clockSkewSeconds: number;
  readonly requiredClaims: readonly string[];
  /** Refuse tokens whose `exp - iat` exceeds this many seconds. */
  readonly maxLifetimeSeconds?: number;
}

/** Mints a compact JWS over `payload` with `key`. */
export function mintJwt(key: SigningKey, typ: string, payload: Record<string, unknown>): string {
  const header = Buffer.from(JSON.stringify({ alg: key.alg, kid: key.kid, typ })).toString('base64url');
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  const signingInput = `${header}.${body}`;
  return `${signingInput}.${signBytes(key, Buffer.from(signingInput)).toString('base64url')}`;
}

class UnknownKeyError extends Error {}

/**
 * Verifies a compact JWT against a key ring. Never throws for a bad token;
 * returns the reason instead.
 */
export async function verifyJwt<P extends JWTPayload>(token: string, options: VerifyJwtOptions): Promise<VerifyResult<P>> {
  if (token.length > MAX_TOKEN_LENGTH) return fail('ERR_TOKEN_MALFORMED', `token is ${token.length} characters, limit ${MAX_TOKEN_LENGTH}`);
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) return fail('ERR_TOKEN_MALFORMED', 'not a compact JWS');
  let kid = '';
  try {
    const result = await jwtVerify<P>(
      token,
      (header) => {
        if (typeof header.kid !== 'string') throw new UnknownKeyError('no kid');
        const key = options.ring.verificationKey(header.kid);
        if (key === undefined || key.alg !== header.alg) throw new UnknownKeyError(`unknown kid ${header.kid.slice(0, 64)}`);
        kid = key.kid;
        return key.publicKey;
      },
      {
        algorithms: [...options.algorithms],
        ...(options.typ === undefined ? {} : { typ: options.typ }),
        issuer: options.issuer,
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
      return fail('ERR_TOKEN_EXPIRED', 'iat is in the future');
    }
    return { ok: true, payload: result.payload, kid };
  } catch (error) {
    return classify(error);
  }
}

function classify(error: unknown): VerifyResult<never> {
  if (error instanceof UnknownKeyError) return fail('ERR_TOKEN_SIGNATURE', error.message);
  if (error instanceof joseErrors.JWTExpired) return fail('ERR_TOKEN_EXPIRED', 'exp has passed');
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    if (error.claim === 'aud') return fail('ERR_TOKEN_AUDIENCE', 'aud does not name this audience');
    if (error.claim === 'nbf' || error.claim === 'iat') return fail('ERR_TOKEN_EXPIRED', `${error.claim}: ${error.reason}`);
    return fail('ERR_TOKEN_MALFORMED', `claim ${error.claim}: ${error.reason}`);
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed || error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return fail('ERR_TOKEN_SIGNATURE', error.message);
  }
  if (error instanceof joseErrors.JOSEError) return fail('ERR_TOKEN_MALFORMED', `${error.code}: ${error.message}`);
  // Key type mismatches and the like surface as TypeError from the crypto layer: still a bad token.
  return fail('ERR_TOKEN_SIGNATURE', error instanceof Error ? error.message : 'verification failed');
}

function fail(code: TokenFailureCode, detail: string): VerifyResult<never> {
  return { ok: false, code, detail };
}
