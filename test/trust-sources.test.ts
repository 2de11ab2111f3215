/** Trust sources as a unit: claim mapping, subject templates and the verified-token cache. */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { createManualClock } from '../src/core/clock.js';
import { configSchema } from '../src/core/config.js';
import { claimString, createTrustSources, renderTemplate } from '../src/identity/trust-sources.js';

const dir = mkdtempSync(join(tmpdir(), 'writ-trust-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('claim mapping', () => {
  const claims = { sub: 'system:serviceaccount:payments:refund', 'kubernetes.io': { namespace: 'payments', 'a/b': 'slash', 'c~d': 'tilde' }, n: 7, t: true, blank: '', ctl: 'a\u0000b', obj: { x: 1 } };

  test('top-level names and JSON Pointers (with ~1 and ~0 escapes) read strings, numbers and booleans', () => {
    assert.equal(claimString(claims, 'sub'), 'system:serviceaccount:payments:refund');
    assert.equal(claimString(claims, '/kubernetes.io/namespace'), 'payments');
    assert.equal(claimString(claims, '/kubernetes.io/a~1b'), 'slash');
    assert.equal(claimString(claims, '/kubernetes.io/c~0d'), 'tilde');
    assert.equal(claimString(claims, 'n'), '7');
    assert.equal(claimString(claims, 't'), 'true');
  });

  test('missing, empty, structured, control-character and inherited values read as absent', () => {
    for (const ref of ['missing', '/kubernetes.io/missing', 'blank', 'ctl', 'obj', '/obj', 'toString', '/constructor/name', '/__proto__']) {
      assert.equal(claimString(claims, ref), undefined, ref);
    }
  });

  test('a subject template is filled from claims, and refused when a claim is missing or holds whitespace', () => {
    assert.equal(renderTemplate('{/kubernetes.io/namespace}/{sub}', claims), 'payments/system:serviceaccount:payments:refund');
    assert.equal(renderTemplate('{missing}', claims), undefined);
    assert.equal(renderTemplate('{sub}', { sub: 'two words' }), undefined);
  });
});

describe('the verified-token cache', () => {
  test('holds at most cacheEntries tokens, evicting the oldest, and an evicted token verifies again', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const file = join(dir, 'bundle.json');
    writeFileSync(file, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'jwt-svid' }] }));
    const config = configSchema.parse({ identity: { sources: [{ type: 'spiffe', name: 'spire', trustDomain: 'prod.example', jwtBundle: { file } }] } });
    const clock = createManualClock(Date.now());
    const sources = createTrustSources({ sources: config.identity.sources, devIssuer: undefined, audience: 'writ', clockSkewSeconds: 30, clock, resolvePath: (p) => p, cacheEntries: 10 });
    await sources.warm();
    const tokens = await Promise.all(
      Array.from({ length: 25 }, (_, i) =>
        new SignJWT({ sub: `spiffe://prod.example/agent/${i}`, aud: 'writ' }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuedAt().setExpirationTime('5m').sign(privateKey),
      ),
    );
    for (const token of tokens) assert.equal((await sources.verifyToken(token)).ok, true);
    const again = await sources.verifyToken(tokens[0]!);
    assert.equal(again.ok && again.credential.identityId, 'spiffe://prod.example/agent/0');
    clock.advance(10 * 60 * 1000);
    const expired = await sources.verifyToken(tokens[24]!);
    assert.equal(!expired.ok && expired.code, 'ERR_TOKEN_EXPIRED', 'a cached token is not accepted past its expiry');
  });
});
