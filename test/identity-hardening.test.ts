/**
 * Findings of the security review of workload identity, each kept as a test of
 * the guarantee that now holds (each failed before its fix).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { pino } from 'pino';
import { createManualClock } from '../src/core/clock.js';
import { configSchema, loadConfig } from '../src/core/config.js';
import { createTrustSources } from '../src/identity/trust-sources.js';
import { loadMasterKey } from '../src/secrets/master-key.js';
import { mintJwt } from '../src/tokens/jwt.js';
import { loadKeyRing } from '../src/tokens/key-ring.js';
import { createWrit } from '../src/writ.js';
import { AGENT, startHarness, supportTask } from './helpers/harness.js';
import { breakAuditWrites, repairAuditWrites } from './helpers/sql.js';

const dir = mkdtempSync(join(tmpdir(), 'writ-review-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('an admin hands out only the scopes it holds', () => {
  test('an identities:write-only admin cannot register a human holding admin:tokens (and through it mint an all-scopes token)', async () => {
    const h = await startHarness();
    try {
      const writer = await h.adminToken(['identities:write']);
      const mallory = 'spiffe://demo.local/human/mallory';
      const registered = await h.post('/v1/identities', { id: mallory, actorType: 'human', adminScopes: ['identities:read', 'identities:write', 'admin:tokens'] }, writer);
      // Escalation step 2 (dev issuer stands in for any source the attacker controls: an OIDC login, a CI job, a SPIFFE workload).
      if (registered.status === 201) {
        const asHuman = await h.identityToken(mallory);
        const minted = await h.post('/v1/admin/tokens', { name: 'pwn', scopes: ['identities:read', 'identities:write', 'admin:tokens'] }, asHuman);
        assert.notEqual(minted.status, 201, 'identities:write escalated to admin:tokens with every scope');
      }
      assert.equal(registered.status, 403, 'granting admin scopes the caller does not hold must be forbidden');
    } finally {
      await h.close();
    }
  });

  test('an admin:tokens-only admin cannot mint a token with scopes it does not hold', async () => {
    const h = await startHarness();
    try {
      const tokenAdmin = await h.adminToken(['admin:tokens']);
      const minted = await h.post('/v1/admin/tokens', { name: 'wider', scopes: ['identities:write'] }, tokenAdmin);
      assert.equal(minted.status, 403, 'a token was minted with a scope its creator lacks');
    } finally {
      await h.close();
    }
  });
});

describe('only a claim makes a quarantined identity active', () => {
  test('a never-claimed (ownerless) identity must not become active through reactivate', async () => {
    const h = await startHarness();
    try {
      // As a quarantine source would on first sight of an unregistered workload.
      await h.writ.registry.quarantine({ id: AGENT, actorType: 'agent', environment: 'production', labels: {}, source: 'partner-idp' });
      const admin = await h.adminToken(['identities:write']);
      const id = encodeURIComponent(AGENT);
      assert.equal((await h.post(`/v1/identities/${id}/suspend`, {}, admin)).status, 200);
      const reactivated = await h.post(`/v1/identities/${id}/reactivate`, {}, admin);
      const task = await h.post('/v1/tasks', supportTask(), await h.identityToken(AGENT).catch(() => 'none'));
      assert.notEqual(
        reactivated.status === 200 && reactivated.body.identity.state === 'active' && reactivated.body.identity.owner === null,
        true,
        `ownerless identity became active (task request answered ${task.status} ${task.body?.code ?? task.body?.type ?? ""} ${task.body?.detail ?? ""})`,
      );
    } finally {
      await h.close();
    }
  });
});

describe('no grant outlives a suspension that raced it', () => {
  test('suspended by another process (CLI / another node) while this node still has the identity cached: no task is granted, and none comes back on reactivate', async () => {
    const h = await startHarness();
    try {
      await h.registerAgent();
      const identityToken = await h.identityToken();
      // Warm this node's registry cache with the active identity.
      assert.equal((await h.post('/v1/tasks', supportTask(), identityToken)).status, 201);

      const config = loadConfig({ configFile: join(h.dataDir, 'writ.yaml'), env: {}, flags: { dataDir: h.dataDir, dev: true } });
      const cli = await createWrit({ config, logger: pino({ level: 'silent' }), env: {} });
      try {
        await cli.changeIdentityState(AGENT, 'suspend', { id: 'cli:ops' }, 'prompt injection suspected');
        const during = await h.post('/v1/tasks', supportTask(), identityToken);
        await cli.changeIdentityState(AGENT, 'reactivate', { id: 'cli:ops' });
        await h.writ.syncRevocations();
        if (during.status === 201) {
          const check = await h.writ.authorize(during.body.token, { action: 'read', resource: 'db:orders/1' });
          assert.equal(check.allowed, false, 'a task granted while the identity was suspended is usable after reactivation');
        }
        assert.notEqual(during.status, 201, 'a suspended identity got a new task');
      } finally {
        await cli.close();
      }
    } finally {
      await h.close();
    }
  });
});

describe('an identity change whose record could not be written is recorded late', () => {
  test('the suspension stands, and once the audit log is back the reaper writes the owed record', async () => {
    const clock = createManualClock();
    const h = await startHarness({ clock });
    try {
      await h.registerAgent();
      assert.equal((await h.post('/v1/tasks', supportTask(), await h.identityToken())).status, 201);
      const admin = await h.adminToken(['identities:write']);
      await breakAuditWrites(h);
      const suspended = await h.post(`/v1/identities/${encodeURIComponent(AGENT)}/suspend`, {}, admin);
      await repairAuditWrites(h);
      const identity = await h.writ.store.getIdentity(AGENT);
      assert.equal(identity?.state, 'suspended', `(answer was ${suspended.status})`);
      assert.equal(suspended.status, 503, 'the caller learns the audit log was unavailable');
      assert.deepEqual((await h.writ.store.listIdentitiesAwaitingAudit(clock.now() + 1000, 10)).map((i) => i.id), [AGENT], 'its record is owed');
      clock.advance(10_000);
      assert.equal(await h.writ.flushOwedRecords(), 2, 'the owed task end and identity change are written');
      const records = await h.auditRecords();
      const late = records.filter((r) => r.type === 'identity.changed');
      assert.equal(late.length, 1);
      assert.equal((late[0]?.data as { state?: string })?.state, 'suspended');
      assert.deepEqual(await h.writ.store.listIdentitiesAwaitingAudit(clock.now() + 1000, 10), [], 'nothing owed any more');
    } finally {
      await h.close();
    }
  });
});

describe('the verified-token cache follows key removal', () => {
  test('a token verified once stops verifying when its key is removed from the bundle', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const file = join(dir, 'bundle-f5.json');
    writeFileSync(file, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'jwt-svid' }] }));
    const config = configSchema.parse({ identity: { sources: [{ type: 'spiffe', name: 'spire', trustDomain: 'prod.example', jwtBundle: { file } }] } });
    const clock = createManualClock(Date.now());
    const sources = createTrustSources({ sources: config.identity.sources, devIssuer: undefined, audience: 'writ', clockSkewSeconds: 30, clock, resolvePath: (p) => p });
    await sources.warm();
    const sign = (sub: string) =>
      new SignJWT({ sub, aud: 'writ' }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuedAt(Math.floor(clock.now() / 1000)).setExpirationTime(Math.floor(clock.now() / 1000) + 86_400).sign(privateKey);
    const cachedToken = await sign('spiffe://prod.example/agent/a');
    assert.equal((await sources.verifyToken(cachedToken)).ok, true);
    // The operator removes the (compromised) key; refresh windows pass.
    writeFileSync(file, JSON.stringify({ keys: [] }));
    clock.advance(10 * 60_000);
    const fresh = await sources.verifyToken(await sign('spiffe://prod.example/agent/b'));
    assert.equal(fresh.ok, false, 'the removed key no longer verifies a new token');
    const again = await sources.verifyToken(cachedToken);
    assert.equal(again.ok, false, 'a cached token signed by the removed key is still accepted');
  });
});

describe('a SPIFFE sub is a string', () => {
  test('a JWT-SVID whose sub is an array is refused, not turned into an identity id that is not a string', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const file = join(dir, 'bundle-f6.json');
    writeFileSync(file, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'jwt-svid' }] }));
    const config = configSchema.parse({ identity: { sources: [{ type: 'spiffe', name: 'spire', trustDomain: 'prod.example', jwtBundle: { file } }] } });
    const clock = createManualClock(Date.now());
    const sources = createTrustSources({ sources: config.identity.sources, devIssuer: undefined, audience: 'writ', clockSkewSeconds: 30, clock, resolvePath: (p) => p });
    await sources.warm();
    const token = await new SignJWT({ sub: ['spiffe://prod.example/agent/a'] as unknown as string, aud: 'writ' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
    const result = await sources.verifyToken(token);
    assert.equal(result.ok && typeof result.credential.identityId, false, `identity id of type ${result.ok ? typeof result.credential.identityId : '-'}`);
  });
});

describe('two sources may publish the same kid', () => {
  test('when the source holding a kid does not verify the token, the other sources are asked (after a refresh)', async () => {
    const a = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const b = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const fileA = join(dir, 'bundle-f7a.json');
    const fileB = join(dir, 'bundle-f7b.json');
    writeFileSync(fileA, JSON.stringify({ keys: [{ ...a.publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'jwt-svid' }] }));
    writeFileSync(fileB, JSON.stringify({ keys: [] }));
    const config = configSchema.parse({
      identity: {
        sources: [
          { type: 'spiffe', name: 'a', trustDomain: 'a.example', jwtBundle: { file: fileA } },
          { type: 'spiffe', name: 'b', trustDomain: 'b.example', jwtBundle: { file: fileB } },
        ],
      },
    });
    const clock = createManualClock(Date.now());
    const sources = createTrustSources({ sources: config.identity.sources, devIssuer: undefined, audience: 'writ', clockSkewSeconds: 30, clock, resolvePath: (p) => p });
    await sources.warm();
    // Trust domain b rotates in a key whose kid happens to equal one a holds.
    writeFileSync(fileB, JSON.stringify({ keys: [{ ...b.publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'jwt-svid' }] }));
    clock.advance(60 * 60_000);
    const token = await new SignJWT({ sub: 'spiffe://b.example/agent/x', aud: 'writ' }).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).setIssuedAt(Math.floor(clock.now() / 1000)).setExpirationTime(Math.floor(clock.now() / 1000) + 300).sign(b.privateKey);
    const result = await sources.verifyToken(token);
    assert.equal(result.ok, true, `b's valid token refused: ${result.ok ? '' : `${result.code} ${result.detail}`}`);
  });
});

describe('the dev issuer never vouches for a trust domain a real source owns', () => {
  test('with a spiffe source for demo.local, a dev-issuer token for spiffe://demo.local/... is refused (ERR_TOKEN_TRUST_DOMAIN)', async () => {
    const bundle = join(dir, 'demo-local-bundle.json');
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    writeFileSync(bundle, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'spire-1', use: 'jwt-svid' }] }));
    const h = await startHarness({ config: { identity: { sources: [{ type: 'spiffe', name: 'spire', trustDomain: 'demo.local', jwtBundle: { file: bundle } }] } } });
    try {
      await h.registerAgent();
      const answer = await h.post('/v1/tasks', supportTask(), await h.identityToken());
      assert.equal(answer.status, 401);
      assert.equal((await h.auditRecords()).filter((r) => r.type === 'authentication.failed').at(-1)?.reason, 'ERR_TOKEN_TRUST_DOMAIN');
    } finally {
      await h.close();
    }
  });
});

describe('a source can require claims (pin a shared issuer to your organisation)', () => {
  test('a token without the required value is refused with ERR_TOKEN_CLAIMS and never quarantined', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const bundle = join(dir, 'require-bundle.json');
    writeFileSync(bundle, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'req-1', use: 'jwt-svid' }] }));
    const config = configSchema.parse({
      identity: { sources: [{ type: 'spiffe', name: 'spire', trustDomain: 'prod.example', jwtBundle: { file: bundle }, require: { '/org/name': 'acme' }, unregistered: 'quarantine' }] },
    });
    const sources = createTrustSources({ sources: config.identity.sources, devIssuer: undefined, audience: 'writ', clockSkewSeconds: 30, clock: createManualClock(), resolvePath: (p) => p });
    const sign = (org: unknown) =>
      new SignJWT({ sub: 'spiffe://prod.example/agent/x', aud: 'writ', ...(org === undefined ? {} : { org }) })
        .setProtectedHeader({ alg: 'ES256', kid: 'req-1' })
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(privateKey);
    assert.equal((await sources.verifyToken(await sign({ name: 'acme' }))).ok, true);
    for (const org of [{ name: 'evil' }, undefined, { name: ['acme'] }]) {
      const result = await sources.verifyToken(await sign(org));
      assert.equal(!result.ok && result.code, 'ERR_TOKEN_CLAIMS', JSON.stringify(org));
    }
  });
});

describe('quarantine is bounded per source', () => {
  test('past quarantineLimit, an unknown identity is refused and not recorded', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const bundle = join(dir, 'quarantine-bundle.json');
    writeFileSync(bundle, JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'q-1', use: 'jwt-svid' }] }));
    const h = await startHarness({
      config: { identity: { sources: [{ type: 'spiffe', name: 'open', trustDomain: 'open.example', jwtBundle: { file: bundle }, unregistered: 'quarantine', quarantineLimit: 2 }] } },
    });
    try {
      const token = (n: number) =>
        new SignJWT({ sub: `spiffe://open.example/agent/${n}`, aud: 'writ' }).setProtectedHeader({ alg: 'ES256', kid: 'q-1' }).setIssuedAt().setExpirationTime('5m').sign(privateKey);
      for (const n of [1, 2, 3]) assert.equal((await h.post('/v1/tasks', supportTask(), await token(n))).status, 401);
      const states = (await h.writ.registry.list()).filter((i) => i.source === 'open').map((i) => [i.id, i.state]);
      assert.deepEqual(states, [
        ['spiffe://open.example/agent/1', 'quarantined'],
        ['spiffe://open.example/agent/2', 'quarantined'],
      ]);
      const reasons = (await h.auditRecords()).filter((r) => r.type === 'authentication.failed').map((r) => r.reason);
      assert.deepEqual(reasons.slice(-3), ['ERR_IDENTITY_INACTIVE', 'ERR_IDENTITY_INACTIVE', 'ERR_IDENTITY_NOT_FOUND']);
    } finally {
      await h.close();
    }
  });
});

describe('credentials that lapse', () => {
  test('an expired admin token is refused on the admin API, with ERR_TOKEN_EXPIRED on the record', async () => {
    const clock = createManualClock();
    const h = await startHarness({ clock });
    try {
      const { token } = await h.writ.createAdminToken({ name: 'short', scopes: ['identities:read'], ttlSeconds: 60 }, { id: 'test' });
      assert.equal((await h.get('/v1/identities', token)).status, 200);
      clock.advance(61_000);
      assert.equal((await h.get('/v1/identities', token)).status, 401);
      assert.equal((await h.auditRecords()).filter((r) => r.type === 'authentication.failed').at(-1)?.reason, 'ERR_TOKEN_EXPIRED');
    } finally {
      await h.close();
    }
  });

  test('without --dev, a token signed by this installation\'s own dev-issuer key is refused', async () => {
    const h = await startHarness({ dev: false });
    try {
      assert.equal(h.writ.devIssuer, undefined);
      assert.equal((await h.get('/dev-issuer/jwks.json')).status, 404);
      await h.registerAgent();
      // The key exists in the store (as after an earlier `serve --dev`); the server must not trust it.
      const ring = await loadKeyRing(h.writ.store, loadMasterKey({ env: {}, dataDir: h.dataDir }).bytes, 'identity-dev', Date.now());
      const now = Math.floor(Date.now() / 1000);
      const token = mintJwt(ring.active, 'JWT', { iss: 'http://127.0.0.1:8750/dev-issuer', sub: AGENT, aud: ['writ'], iat: now, exp: now + 120 });
      assert.equal((await h.post('/v1/tasks', supportTask(), token)).status, 401);
      const reason = (await h.auditRecords()).filter((r) => r.type === 'authentication.failed').at(-1)?.reason;
      assert.ok(reason === 'ERR_TOKEN_ALGORITHM' || reason === 'ERR_TOKEN_UNKNOWN_KEY', String(reason));
    } finally {
      await h.close();
    }
  });
});
