/**
 * Identity authentication: a bearer identity token in, a registered and active
 * identity out, or a precise reason for the audit log. Trust sources are tried
 * by issuer; today the only one is Writ's dev issuer (real sources come with
 * OIDC and SPIFFE support).
 */
import type { Clock } from '../core/clock.js';
import type { WritErrorCode } from '../core/errors.js';
import type { Identity } from '../core/types.js';
import type { KeyRing } from '../tokens/key-ring.js';
import { verifyJwt } from '../tokens/jwt.js';
import { identityInactiveReason, type Registry } from './registry.js';
import { isSpiffeId } from './spiffe-id.js';

export type AuthenticationResult =
  | { readonly ok: true; readonly identity: Identity }
  | { readonly ok: false; readonly code: WritErrorCode; readonly detail: string; readonly subject?: string };

export interface IdentityAuthenticator {
  /** Never throws for a bad token; returns why it was refused. */
  authenticate(token: string): Promise<AuthenticationResult>;
}

export interface DevIssuerTrust {
  readonly ring: KeyRing;
  /** Expected `iss`. */
  readonly issuer: string;
  readonly maxTtlSeconds: number;
}

export interface IdentityAuthenticatorOptions {
  /** Undefined when the dev issuer is disabled. */
  readonly devIssuer: DevIssuerTrust | undefined;
  /** What identity tokens must name in `aud`. */
  readonly audience: string;
  readonly clockSkewSeconds: number;
  readonly registry: Registry;
  readonly clock: Clock;
}

export function createIdentityAuthenticator(options: IdentityAuthenticatorOptions): IdentityAuthenticator {
  return {
    async authenticate(token) {
      const dev = options.devIssuer;
      if (dev === undefined) return { ok: false, code: 'ERR_TOKEN_SIGNATURE', detail: 'no trust source is configured for this token' };
      const now = options.clock.now();
      const result = await verifyJwt(token, {
        ring: dev.ring,
        algorithms: ['ES256'],
        issuer: dev.issuer,
        audience: options.audience,
        now,
        clockSkewSeconds: options.clockSkewSeconds,
        requiredClaims: ['sub', 'exp', 'iat'],
        maxLifetimeSeconds: dev.maxTtlSeconds,
      });
      if (!result.ok) return result;
      const subject = result.payload.sub;
      if (typeof subject !== 'string' || !isSpiffeId(subject)) return { ok: false, code: 'ERR_TOKEN_MALFORMED', detail: 'sub is not a SPIFFE ID' };
      const identity = await options.registry.get(subject);
      if (identity === undefined) return { ok: false, code: 'ERR_IDENTITY_NOT_FOUND', detail: 'identity is not registered', subject };
      const inactive = identityInactiveReason(identity, now);
      if (inactive !== undefined) return { ok: false, code: 'ERR_IDENTITY_INACTIVE', detail: inactive, subject };
      return { ok: true, identity };
    },
  };
}
