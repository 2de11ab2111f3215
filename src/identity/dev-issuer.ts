/**
 * Writ's dev issuer: a local trust source that mints JWT-SVID-shaped identity
 * tokens (ES256, `sub` = SPIFFE ID, `aud`, `exp` at most 5 minutes away) for
 * registered, active identities. For laptops and demos; real deployments point
 * Writ at SPIRE or an OIDC issuer instead.
 */
import { epochSeconds } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type { Identity } from '../core/types.js';
import type { KeyRing } from '../tokens/key-ring.js';
import { mintJwt } from '../tokens/jwt.js';
import { identityInactiveReason } from './registry.js';

/** The dev issuer's `iss`, derived from Writ's issuer so it cannot be mistaken for it. */
export function devIssuerId(writIssuer: string): string {
  return `${writIssuer.replace(/\/+$/, '')}/dev-issuer`;
}

export interface MintIdentityTokenInput {
  readonly issuer: string;
  readonly audience: string;
  readonly identity: Identity;
  readonly ttlSeconds: number;
  readonly maxTtlSeconds: number;
  readonly now: number;
}

/**
 * Mints an identity token for `identity`.
 * @throws WritError ERR_IDENTITY_INACTIVE when the identity is not active or has expired:
 *   unregistered or expired identities get nothing.
 */
export function mintIdentityToken(ring: KeyRing, input: MintIdentityTokenInput): { token: string; expiresAt: number } {
  const { identity, now } = input;
  const inactive = identityInactiveReason(identity, now);
  if (inactive !== undefined) throw new WritError('ERR_IDENTITY_INACTIVE', { detail: inactive });
  const ttl = Math.min(input.ttlSeconds, input.maxTtlSeconds);
  const iat = epochSeconds(now);
  const exp = iat + ttl;
  const token = mintJwt(ring.active, 'JWT', { iss: input.issuer, sub: identity.id, aud: [input.audience], iat, exp, jti: newId('svid') });
  return { token, expiresAt: exp * 1000 };
}
