/**
 * Identity authentication: a credential in (a bearer identity token, or a
 * client certificate over mTLS), a registered and active identity out, or a
 * precise reason for the audit log.
 *
 * Steps: the trust sources verify the credential → the registry knows the
 * identity (an unknown one is refused, or quarantined where its source says
 * so) → it is active and unexpired → the environment its token maps to, if
 * any, is the one it is registered in.
 */
import type { X509Certificate } from 'node:crypto';
import type { AuditLog } from '../audit/log.js';
import type { Clock } from '../core/clock.js';
import type { WritErrorCode } from '../core/errors.js';
import type { Identity } from '../core/types.js';
import type { Store } from '../store/store.js';
import { identityInactiveReason, type Registry } from './registry.js';
import type { CredentialResult, TrustSources, VerifiedCredential } from './trust-sources.js';

export type AuthenticationResult =
  | { readonly ok: true; readonly identity: Identity; readonly credential: VerifiedCredential }
  | { readonly ok: false; readonly code: WritErrorCode; readonly detail: string; readonly subject?: string };

export interface IdentityAuthenticator {
  /** Never throws for a bad token; returns why it was refused. `audience`: see `TrustSources.verifyToken`. */
  authenticate(token: string, audience?: string): Promise<AuthenticationResult>;
  /** The same for a client certificate chain (leaf first). */
  authenticateCertificate(chain: readonly X509Certificate[]): Promise<AuthenticationResult>;
}

export interface IdentityAuthenticatorOptions {
  readonly sources: TrustSources;
  readonly registry: Registry;
  readonly audit: AuditLog;
  readonly store: Pick<Store, 'markIdentityAudited' | 'countQuarantined'>;
  readonly clock: Clock;
}

export function createIdentityAuthenticator(options: IdentityAuthenticatorOptions): IdentityAuthenticator {
  const { registry, clock } = options;

  const quarantine = async (credential: VerifiedCredential): Promise<AuthenticationResult> => {
    // An issuer anyone can get tokens from must not grow the registry without bound.
    const held = await options.store.countQuarantined(credential.source.name);
    if (held >= credential.source.quarantineLimit) {
      return {
        ok: false,
        code: 'ERR_IDENTITY_NOT_FOUND',
        detail: `not registered, and source ${credential.source.name} already holds ${held} quarantined identities (quarantineLimit)`,
        subject: credential.identityId,
      };
    }
    const { identity, created } = await registry.quarantine({
      id: credential.identityId,
      actorType: credential.source.actorType,
      environment: credential.environment,
      labels: credential.labels,
      source: credential.source.name,
    });
    if (created) {
      // If this record cannot be written now, the identity's state stays owed and the reaper records it.
      await options.audit
        .append({
          type: 'identity.quarantined',
          decision: 'deny',
          reason: 'ERR_IDENTITY_INACTIVE',
          actor: { id: identity.id, actorType: identity.actorType },
          data: { source: credential.source.name, environment: identity.environment, labels: identity.labels },
        })
        .then((receipt) => options.store.markIdentityAudited(identity.id, receipt.id, identity.updatedAt))
        .catch(() => undefined);
    }
    return admit(identity, credential);
  };

  const admit = (identity: Identity, credential: VerifiedCredential): AuthenticationResult => {
    const subject = identity.id;
    const inactive = identityInactiveReason(identity, clock.now());
    if (inactive !== undefined) return { ok: false, code: 'ERR_IDENTITY_INACTIVE', detail: inactive, subject };
    if (credential.environment !== undefined && credential.environment !== identity.environment) {
      return {
        ok: false,
        code: 'ERR_IDENTITY_MISMATCH',
        detail: `token maps to environment ${credential.environment}, the identity is registered in ${identity.environment}`,
        subject,
      };
    }
    return { ok: true, identity, credential };
  };

  const resolve = async (verified: CredentialResult): Promise<AuthenticationResult> => {
    if (!verified.ok) return verified;
    const { credential } = verified;
    const identity = await registry.get(credential.identityId);
    if (identity !== undefined) return admit(identity, credential);
    if (credential.source.unregistered === 'quarantine') return quarantine(credential);
    return { ok: false, code: 'ERR_IDENTITY_NOT_FOUND', detail: `identity is not registered (source ${credential.source.name})`, subject: credential.identityId };
  };

  return {
    authenticate: async (token, audience) => resolve(await options.sources.verifyToken(token, audience)),
    authenticateCertificate: async (chain) => resolve(options.sources.verifyCertificate(chain)),
  };
}
