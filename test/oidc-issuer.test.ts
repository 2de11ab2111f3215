/**
 * The oidc-provider fixture itself: a real third-party issuer whose
 * client-credentials JWT access tokens verify with jose against its JWKS.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { startOidcIssuer, type OidcIssuer } from './helpers/oidc-issuer.js';

const CLIENTS = [
  { clientId: 'payments-agent', clientSecret: 's3cret-payments', extraClaims: { namespace: 'payments', environment: 'production' } },
  { clientId: 'plain-agent', clientSecret: 's3cret-plain' },
];

async function discovery(issuer: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${issuer}/.well-known/openid-configuration`);
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, unknown>;
}

describe('oidc-provider fixture (RS256 default)', () => {
  let op: OidcIssuer;
  before(async () => {
    op = await startOidcIssuer({ audience: 'writ', clients: CLIENTS });
  });
  after(() => op.close());

  it('serves a discovery document with issuer and jwks_uri', async () => {
    assert.match(op.issuer, /^http:\/\/127\.0\.0\.1:\d+$/);
    const doc = await discovery(op.issuer);
    assert.equal(doc.issuer, op.issuer);
    assert.equal(doc.jwks_uri, op.jwksUri);
    assert.ok((doc.grant_types_supported as string[]).includes('client_credentials'));
  });

  it('issues a JWT access token that verifies with jose against the remote JWKS', async () => {
    const token = await op.token('payments-agent');
    const jwks = createRemoteJWKSet(new URL(op.jwksUri));
    const { payload, protectedHeader } = await jwtVerify(token, jwks, {
      issuer: op.issuer,
      audience: 'writ',
      typ: 'at+jwt',
    });
    assert.equal(protectedHeader.alg, 'RS256');
    assert.equal(typeof protectedHeader.kid, 'string');
    assert.equal(payload.iss, op.issuer);
    assert.equal(payload.aud, 'writ');
    assert.equal(payload.sub, 'payments-agent');
    assert.equal(payload.client_id, 'payments-agent');
    assert.equal(typeof payload.jti, 'string');
    assert.equal(typeof payload.iat, 'number');
    assert.equal(payload.exp, payload.iat! + 300);
    assert.equal(payload.namespace, 'payments');
    assert.equal(payload.environment, 'production');
  });

  it('clients without extraClaims get none; scope is carried when asked for', async () => {
    const token = await op.token('plain-agent', { scope: 'read write' });
    const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(op.jwksUri)), { issuer: op.issuer, audience: 'writ' });
    assert.equal(payload.sub, 'plain-agent');
    assert.equal(payload.scope, 'read write');
    assert.equal(payload.namespace, undefined);
  });

  it('resource selects another audience', async () => {
    const token = await op.token('plain-agent', { resource: 'someone-else' });
    const jwks = createRemoteJWKSet(new URL(op.jwksUri));
    const { payload } = await jwtVerify(token, jwks, { issuer: op.issuer, audience: 'someone-else' });
    assert.equal(payload.aud, 'someone-else');
    await assert.rejects(jwtVerify(token, jwks, { issuer: op.issuer, audience: 'writ' }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
    const uriToken = await op.token('plain-agent', { resource: 'https://api.example.test/' });
    assert.equal((await jwtVerify(uriToken, jwks)).payload.aud, 'https://api.example.test/');
  });

  it('rejects a wrong client secret and an unknown client', async () => {
    await assert.rejects(op.token('payments-agent', { clientSecret: 'not-the-secret' }), /answered 401: .*invalid_client/);
    await assert.rejects(op.token('nobody'), /answered 401: .*invalid_client/);
  });

  it('counts JWKS requests', async () => {
    const base = op.jwksRequests();
    await fetch(op.jwksUri);
    await fetch(op.jwksUri);
    await fetch(`${op.issuer}/.well-known/openid-configuration`);
    assert.equal(op.jwksRequests(), base + 2);
    // A fresh jose key set fetches once and then caches.
    const jwks = createRemoteJWKSet(new URL(op.jwksUri));
    await jwtVerify(await op.token('plain-agent'), jwks);
    await jwtVerify(await op.token('plain-agent'), jwks);
    assert.equal(op.jwksRequests(), base + 3);
  });

  it('rotateKeys publishes a new kid and signs with it', async () => {
    const oldToken = await op.token('plain-agent');
    const oldKid = decodeProtectedHeader(oldToken).kid;
    const oldKeys = (await (await fetch(op.jwksUri)).json()) as { keys: Array<{ kid: string }> };
    assert.deepEqual(oldKeys.keys.map((k) => k.kid), [oldKid]);

    await op.rotateKeys();
    const newToken = await op.token('plain-agent');
    const newKid = decodeProtectedHeader(newToken).kid;
    assert.notEqual(newKid, oldKid);
    const newKeys = (await (await fetch(op.jwksUri)).json()) as { keys: Array<{ kid: string; d?: string }> };
    assert.deepEqual(newKeys.keys.map((k) => k.kid), [newKid]);
    assert.equal(newKeys.keys[0]!.d, undefined, 'JWKS must not leak private key material');

    const jwks = createRemoteJWKSet(new URL(op.jwksUri));
    await jwtVerify(newToken, jwks, { issuer: op.issuer, audience: 'writ' });
    await assert.rejects(jwtVerify(oldToken, jwks), { code: 'ERR_JWKS_NO_MATCHING_KEY' });

    await op.rotateKeys({ keepPrevious: true });
    const newest = await op.token('plain-agent');
    const both = (await (await fetch(op.jwksUri)).json()) as { keys: Array<{ kid: string }> };
    assert.deepEqual(both.keys.map((k) => k.kid), [decodeProtectedHeader(newest).kid, newKid]);
    const jwks2 = createRemoteJWKSet(new URL(op.jwksUri));
    await jwtVerify(newToken, jwks2);
    await jwtVerify(newest, jwks2);
  });

  it('stop() makes the issuer unreachable; start() restores it on the same port', async () => {
    await op.stop();
    await assert.rejects(fetch(`${op.issuer}/.well-known/openid-configuration`));
    await op.start();
    const doc = await discovery(op.issuer);
    assert.equal(doc.issuer, op.issuer);
    await op.token('plain-agent');
  });
});

for (const alg of ['ES256', 'EdDSA'] as const) {
  describe(`oidc-provider fixture (${alg})`, () => {
    let op: OidcIssuer;
    before(async () => {
      op = await startOidcIssuer({ audience: 'writ', clients: CLIENTS, alg, accessTokenTtlSeconds: 60 });
    });
    after(() => op.close());

    it(`signs access tokens with ${alg}`, async () => {
      const token = await op.token('payments-agent');
      const { payload, protectedHeader } = await jwtVerify(token, createRemoteJWKSet(new URL(op.jwksUri)), {
        issuer: op.issuer,
        audience: 'writ',
        algorithms: [alg],
      });
      assert.equal(protectedHeader.alg, alg);
      assert.equal(protectedHeader.typ, 'at+jwt');
      assert.equal(payload.exp, payload.iat! + 60);
      assert.equal(payload.namespace, 'payments');
    });
  });
}
