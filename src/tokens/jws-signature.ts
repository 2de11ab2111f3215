/**
 * JWS signature checks (RFC 7518 §3) with node:crypto, synchronously. jose's
 * verifier goes through WebCrypto, whose async round trip costs more than the
 * ECDSA arithmetic itself; identity tokens are checked on every task request,
 * so Writ checks signatures here and keeps the claim rules in jwt.ts.
 *
 * The key must fit the algorithm exactly: RSA (at least 2048 bits) for RS*
 * and PS*, the named curve for each ES*, Ed25519/Ed448 for EdDSA. Anything
 * else, and any HMAC or `none`, is refused before a byte is verified.
 */
import { constants, verify, type KeyObject } from 'node:crypto';

interface AlgorithmSpec {
  readonly hash: string | null;
  readonly keyTypes: readonly string[];
  readonly curve?: string;
  /** ECDSA: the fixed R||S signature length (RFC 7518 §3.4). */
  readonly signatureLength?: number;
  readonly pss?: boolean;
}

const ALGORITHMS: Readonly<Record<string, AlgorithmSpec>> = {
  RS256: { hash: 'sha256', keyTypes: ['rsa'] },
  RS384: { hash: 'sha384', keyTypes: ['rsa'] },
  RS512: { hash: 'sha512', keyTypes: ['rsa'] },
  PS256: { hash: 'sha256', keyTypes: ['rsa', 'rsa-pss'], pss: true },
  PS384: { hash: 'sha384', keyTypes: ['rsa', 'rsa-pss'], pss: true },
  PS512: { hash: 'sha512', keyTypes: ['rsa', 'rsa-pss'], pss: true },
  ES256: { hash: 'sha256', keyTypes: ['ec'], curve: 'prime256v1', signatureLength: 64 },
  ES384: { hash: 'sha384', keyTypes: ['ec'], curve: 'secp384r1', signatureLength: 96 },
  ES512: { hash: 'sha512', keyTypes: ['ec'], curve: 'secp521r1', signatureLength: 132 },
  EdDSA: { hash: null, keyTypes: ['ed25519', 'ed448'] },
};

export type SignatureCheck = 'valid' | 'invalid' | 'key_mismatch';

/** True for the asymmetric algorithms this module verifies. */
export function isSupportedAlgorithm(alg: string): boolean {
  return Object.hasOwn(ALGORITHMS, alg);
}

/**
 * Checks `signature` over `signingInput` with `key` for `alg`. Never throws:
 * a key that does not fit the algorithm is `key_mismatch`.
 */
export function checkSignature(alg: string, key: KeyObject, signingInput: Buffer, signature: Buffer): SignatureCheck {
  const spec = Object.hasOwn(ALGORITHMS, alg) ? ALGORITHMS[alg] : undefined;
  if (spec === undefined || key.type !== 'public' || !spec.keyTypes.includes(key.asymmetricKeyType ?? '')) return 'key_mismatch';
  const details = key.asymmetricKeyDetails ?? {};
  if (spec.curve !== undefined && details.namedCurve !== spec.curve) return 'key_mismatch';
  if (spec.keyTypes[0] === 'rsa' && (details.modulusLength ?? 0) < 2048) return 'key_mismatch';
  if (spec.signatureLength !== undefined && signature.length !== spec.signatureLength) return 'invalid';
  try {
    const ok = verify(
      spec.hash,
      signingInput,
      spec.signatureLength !== undefined
        ? { key, dsaEncoding: 'ieee-p1363' }
        : spec.pss === true
          ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
          : key,
      signature,
    );
    return ok ? 'valid' : 'invalid';
  } catch {
    return 'invalid';
  }
}
