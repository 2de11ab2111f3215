/** JWS signature checks with node:crypto: every algorithm Writ accepts verifies, and a key that does not fit its algorithm is refused. */
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { describe, test } from 'node:test';
import { checkSignature, isSupportedAlgorithm } from '../src/tokens/jws-signature.js';

const ec = (namedCurve: string) => generateKeyPairSync('ec', { namedCurve });
const keys = {
  rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }),
  rsaSmall: generateKeyPairSync('rsa', { modulusLength: 1024 }),
  p256: ec('P-256'),
  p384: ec('P-384'),
  p521: ec('P-521'),
  ed25519: generateKeyPairSync('ed25519'),
};
const input = Buffer.from('eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0');

function signWith(alg: string, privateKey: KeyObject): Buffer {
  const hash = alg === 'EdDSA' ? null : `sha${alg.slice(2)}`;
  if (alg.startsWith('ES')) return sign(hash, input, { key: privateKey, dsaEncoding: 'ieee-p1363' });
  if (alg.startsWith('PS')) return sign(hash, input, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
  return sign(hash, input, privateKey);
}

describe('checkSignature', () => {
  const valid: [string, keyof typeof keys][] = [
    ['RS256', 'rsa'], ['RS384', 'rsa'], ['RS512', 'rsa'], ['PS256', 'rsa'], ['PS384', 'rsa'], ['PS512', 'rsa'],
    ['ES256', 'p256'], ['ES384', 'p384'], ['ES512', 'p521'], ['EdDSA', 'ed25519'],
  ];
  for (const [alg, key] of valid) {
    test(`${alg} with a ${key} key verifies, and a flipped bit does not`, () => {
      const signature = signWith(alg, keys[key].privateKey);
      assert.equal(checkSignature(alg, keys[key].publicKey, input, signature), 'valid');
      const tampered = Buffer.from(input);
      tampered[5] = tampered[5]! ^ 1;
      assert.equal(checkSignature(alg, keys[key].publicKey, tampered, signature), 'invalid');
    });
  }

  const mismatched: [string, keyof typeof keys, string][] = [
    ['ES256', 'p384', 'an ES256 token with a P-384 key'],
    ['ES384', 'p256', 'an ES384 token with a P-256 key'],
    ['RS256', 'p256', 'an RSA algorithm with an EC key'],
    ['ES256', 'rsa', 'an EC algorithm with an RSA key'],
    ['EdDSA', 'p256', 'EdDSA with an EC key'],
    ['RS256', 'rsaSmall', 'RSA under 2048 bits'],
  ];
  for (const [alg, key, what] of mismatched) {
    test(`refuses ${what}`, () => {
      assert.equal(checkSignature(alg, keys[key].publicKey, input, Buffer.alloc(64)), 'key_mismatch');
    });
  }

  test('refuses none, HMAC and unknown algorithms, and a private key in place of a public one', () => {
    for (const alg of ['none', 'HS256', 'HS512', 'RS1', '__proto__', 'constructor']) {
      assert.equal(isSupportedAlgorithm(alg), false, alg);
      assert.equal(checkSignature(alg, keys.rsa.publicKey, input, Buffer.alloc(256)), 'key_mismatch', alg);
    }
    assert.equal(checkSignature('ES256', keys.p256.privateKey, input, signWith('ES256', keys.p256.privateKey)), 'key_mismatch');
  });

  test('an ECDSA signature of the wrong length (DER instead of R||S) is invalid, not an error', () => {
    const der = sign('sha256', input, keys.p256.privateKey);
    assert.equal(checkSignature('ES256', keys.p256.publicKey, input, der), 'invalid');
  });
});
