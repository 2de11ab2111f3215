/**
 * Signing keys: generated on first start, kept in the store with the private
 * half sealed under the master key, published as a JWKS. One ring per use
 * (task tokens, the dev identity issuer). Retired keys stay in the ring so
 * tokens they signed still verify until they expire.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { WritError } from '../core/errors.js';
import { open, seal } from '../secrets/sealed-box.js';
import type { SigningKeyUse, Store, StoredSigningKey } from '../store/store.js';

export type SigningAlg = 'EdDSA' | 'ES256';

export interface SigningKey {
  readonly kid: string;
  readonly alg: SigningAlg;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export interface VerificationKey {
  readonly kid: string;
  readonly alg: SigningAlg;
  readonly publicKey: KeyObject;
  readonly jwk: JWK;
}

export interface KeyRing {
  readonly use: SigningKeyUse;
  /** The key new tokens are signed with. */
  readonly active: SigningKey;
  /** The public key for `kid`, or undefined for a kid this ring never had. */
  verificationKey(kid: string): VerificationKey | undefined;
  /** Public keys as a JWKS document (RFC 7517 §5). */
  jwks(): { keys: JWK[] };
}

const ALG_FOR_USE: Record<SigningKeyUse, SigningAlg> = { task: 'EdDSA', 'identity-dev': 'ES256' };

/**
 * Loads the ring for `use`, generating and storing its first key when the store
 * has none. Concurrent first starts converge on one active key (the store's
 * `ensureActiveSigningKey` is atomic).
 * @throws WritError ERR_MASTER_KEY when a stored private key does not open with `masterKey`.
 */
export async function loadKeyRing(store: Store, masterKey: Buffer, use: SigningKeyUse, now: number): Promise<KeyRing> {
  let stored = await store.listSigningKeys(use);
  if (!stored.some((k) => k.state === 'active')) {
    await store.ensureActiveSigningKey(await generateStoredKey(masterKey, use, now));
    stored = await store.listSigningKeys(use);
  }
  const activeRow = stored.find((k) => k.state === 'active');
  if (activeRow === undefined) throw new Error(`no active ${use} signing key after generation`);

  const verification = new Map<string, VerificationKey>();
  for (const row of stored) {
    const jwk = JSON.parse(row.publicJwk) as JWK;
    verification.set(row.kid, {
      kid: row.kid,
      alg: row.alg as SigningAlg,
      publicKey: createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' }),
      jwk: { ...jwk, kid: row.kid, alg: row.alg, use: 'sig' },
    });
  }
  const privateKey = createPrivateKey({ key: open(masterKey, activeRow.privateSealed, sealedKeyContext(activeRow)), format: 'der', type: 'pkcs8' });
  const activeVerification = verification.get(activeRow.kid);
  if (activeVerification === undefined) throw new Error('active key missing from ring');
  // A sealed private key swapped for another row's would open only if its AAD matched; check the pair anyway.
  assertKeyPair(privateKey, activeVerification.publicKey, activeRow.kid);

  const active: SigningKey = { kid: activeRow.kid, alg: activeRow.alg as SigningAlg, privateKey, publicKey: activeVerification.publicKey };
  const keys = [...verification.values()].map((k) => k.jwk);
  return {
    use,
    active,
    verificationKey: (kid) => verification.get(kid),
    jwks: () => ({ keys }),
  };
}

async function generateStoredKey(masterKey: Buffer, use: SigningKeyUse, now: number): Promise<StoredSigningKey> {
  const alg = ALG_FOR_USE[use];
  const pair = alg === 'EdDSA' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const publicJwk = pair.publicKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
  const partial = { kid, use, alg, state: 'active' as const, createdAt: now };
  const der = pair.privateKey.export({ format: 'der', type: 'pkcs8' });
  return { ...partial, publicJwk: JSON.stringify(publicJwk), privateSealed: seal(masterKey, der, sealedKeyContext(partial)) };
}

/** Associated data binding a sealed private key to its kid, use and algorithm. */
function sealedKeyContext(key: Pick<StoredSigningKey, 'kid' | 'use' | 'alg'>): string {
  return `writ.signing-key.v1|${key.use}|${key.alg}|${key.kid}`;
}

function assertKeyPair(privateKey: KeyObject, publicKey: KeyObject, kid: string): void {
  const derivedPublic = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  if (!derivedPublic.equals(publicKey.export({ format: 'der', type: 'spki' }))) {
    throw new WritError('ERR_MASTER_KEY', { detail: `signing key ${kid}: private and public halves do not match` });
  }
}

/** Signs `data` with `key` as a JWS signature (RFC 7518 §3.4 raw R||S for ES256). */
export function signBytes(key: SigningKey, data: Buffer): Buffer {
  return key.alg === 'EdDSA' ? sign(null, data, key.privateKey) : sign('sha256', data, { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
}
