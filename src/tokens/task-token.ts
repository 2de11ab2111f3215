/**
 * Task tokens: the credential that carries a grant. A JWT signed by Writ
 * (EdDSA), audience-bound, minutes long, naming the task and its scopes.
 *
 * The verifier caches tokens whose signature and claims verified, keyed by the
 * token itself, so an enforcement point pays for the signature once per token;
 * expiry and audience are re-checked on every call, revocation by the caller.
 */
import { epochSeconds } from '../core/clock.js';
import { newId } from '../core/ids.js';
import { formatScopeClaim, parseScopeClaim } from '../core/scope.js';
import type { Scope } from '../core/types.js';
import type { KeyRing } from './key-ring.js';
import { mintJwt, ringKeys, verifyJwt, type TokenFailureCode } from './jwt.js';

export const TASK_TOKEN_TYP = 'task+jwt';

export interface TaskTokenClaims {
  readonly iss: string;
  /** The identity the grant is for (a SPIFFE ID). */
  readonly sub: string;
  readonly aud: string;
  readonly iat: number;
  readonly nbf: number;
  readonly exp: number;
  readonly jti: string;
  /** `breakGlass`: the task is a break-glass grant, decided (at every call too) by the break-glass policy set. */
  readonly task: { readonly id: string; readonly purpose: string; readonly intent: string; readonly breakGlass?: true };
  /** Space-separated `action:resource` entries (RFC 8693 §4.2 shape). */
  readonly scope: string;
  readonly env: string;
  /** Sender constraint (RFC 8705 §3.1): the client certificate the token is bound to. */
  readonly cnf?: { readonly 'x5t#S256': string };
}

/** A task token that verified, with its scopes parsed once. */
export interface VerifiedTaskToken {
  readonly claims: TaskTokenClaims;
  readonly scopes: readonly Scope[];
  /** Expiry in epoch ms. */
  readonly expiresAt: number;
}

export interface MintTaskTokenInput {
  readonly issuer: string;
  readonly audience: string;
  readonly identityId: string;
  readonly task: TaskTokenClaims['task'];
  readonly scopes: readonly Scope[];
  readonly environment: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** `x5t#S256` of the mTLS client certificate the task was asked for over; binds the token to it. */
  readonly certificateThumbprint?: string;
}

export interface MintedTaskToken {
  readonly token: string;
  readonly jti: string;
  readonly claims: TaskTokenClaims;
}

/** Signs a task token with the ring's active key. */
export function mintTaskToken(ring: KeyRing, input: MintTaskTokenInput): MintedTaskToken {
  const iat = epochSeconds(input.issuedAt);
  const claims: TaskTokenClaims = {
    iss: input.issuer,
    sub: input.identityId,
    aud: input.audience,
    iat,
    nbf: iat,
    exp: epochSeconds(input.expiresAt),
    jti: newId('jti'),
    task: input.task,
    scope: formatScopeClaim(input.scopes),
    env: input.environment,
    ...(input.certificateThumbprint === undefined ? {} : { cnf: { 'x5t#S256': input.certificateThumbprint } }),
  };
  return { token: mintJwt(ring.active, TASK_TOKEN_TYP, { ...claims }), jti: claims.jti, claims };
}

export type TaskTokenCheck =
  | { readonly ok: true; readonly token: VerifiedTaskToken }
  | { readonly ok: false; readonly code: TokenFailureCode; readonly detail: string };

export interface TaskTokenVerifier {
  /** Verifies `token` at time `now` (ms). Never throws for a bad token. */
  verify(token: string, now: number): Promise<TaskTokenCheck>;
  /** Synchronous fast path: the result for a token verified before, else undefined. */
  verifyCached(token: string, now: number): TaskTokenCheck | undefined;
}

export interface TaskTokenVerifierOptions {
  readonly ring: KeyRing;
  readonly issuer: string;
  readonly audience: string;
  readonly clockSkewSeconds: number;
  /** Most tokens kept verified in memory (oldest evicted first). */
  readonly cacheSize?: number;
}

/** The certificate a token is bound to, or undefined for a bearer token. */
export function boundCertificate(claims: TaskTokenClaims): string | undefined {
  return claims.cnf?.['x5t#S256'];
}

function validConfirmation(cnf: unknown): boolean {
  if (cnf === undefined) return true;
  if (typeof cnf !== 'object' || cnf === null || Array.isArray(cnf)) return false;
  const keys = Object.keys(cnf);
  // A confirmation method Writ does not know is refused rather than ignored.
  return keys.length === 1 && keys[0] === 'x5t#S256' && typeof (cnf as Record<string, unknown>)['x5t#S256'] === 'string';
}

export function createTaskTokenVerifier(options: TaskTokenVerifierOptions): TaskTokenVerifier {
  const keys = ringKeys(options.ring);
  const cache = new Map<string, VerifiedTaskToken>();
  const cacheSize = options.cacheSize ?? 10_000;
  const skewMs = options.clockSkewSeconds * 1000;

  // exp and nbf are time-dependent, so they are checked on every call, cached or not.
  const checkTime = (verified: VerifiedTaskToken, now: number): TaskTokenCheck => {
    if (now >= verified.expiresAt + skewMs) return { ok: false, code: 'ERR_TOKEN_EXPIRED', detail: 'exp has passed' };
    if (verified.claims.nbf * 1000 > now + skewMs) return { ok: false, code: 'ERR_TOKEN_NOT_YET_VALID', detail: 'nbf is in the future' };
    return { ok: true, token: verified };
  };

  const verifyCached = (token: string, now: number): TaskTokenCheck | undefined => {
    const hit = cache.get(token);
    if (hit === undefined) return undefined;
    const result = checkTime(hit, now);
    if (!result.ok) cache.delete(token);
    return result;
  };

  return {
    verifyCached,
    async verify(token, now) {
      const cached = verifyCached(token, now);
      if (cached !== undefined) return cached;
      const result = await verifyJwt<TaskTokenClaims & Record<string, unknown>>(token, {
        keys,
        algorithms: ['EdDSA'],
        typ: TASK_TOKEN_TYP,
        issuer: options.issuer,
        audience: options.audience,
        now,
        clockSkewSeconds: options.clockSkewSeconds,
        requiredClaims: ['sub', 'exp', 'iat', 'nbf', 'jti', 'task', 'scope', 'env'],
      });
      if (!result.ok) return result;
      const claims = result.payload;
      const scopes = typeof claims.scope === 'string' ? parseScopeClaim(claims.scope) : undefined;
      const task = claims.task as unknown;
      if (
        scopes === undefined ||
        typeof task !== 'object' ||
        task === null ||
        typeof (task as { id?: unknown }).id !== 'string' ||
        ((task as { breakGlass?: unknown }).breakGlass !== undefined && (task as { breakGlass?: unknown }).breakGlass !== true) ||
        typeof claims.env !== 'string' ||
        typeof claims.jti !== 'string' ||
        !validConfirmation(claims.cnf)
      ) {
        return { ok: false, code: 'ERR_TOKEN_MALFORMED', detail: 'task token claims have the wrong shape' };
      }
      const verified: VerifiedTaskToken = { claims, scopes, expiresAt: claims.exp * 1000 };
      if (cache.size >= cacheSize) {
        const oldest = cache.keys().next();
        if (oldest.done !== true) cache.delete(oldest.value);
      }
      cache.set(token, verified);
      return checkTime(verified, now);
    },
  };
}
