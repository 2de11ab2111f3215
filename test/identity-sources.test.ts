/**
 * Workload identity from real trust sources, end to end over HTTP: OIDC
 * access tokens from a real third-party provider (oidc-provider), SPIFFE
 * JWT-SVIDs checked against bundle files, and the registry and admin API that
 * decide who those identities are and who may change them.
 *
 * Callers only ever see the uniform 401 ERR_UNAUTHENTICATED; every refusal
 * here is also checked for its precise reason in the audit log.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import type { Clock } from '../src/core/clock.js';
import { claimsOf, startHarness, supportTask, type Harness, type HttpAnswer } from './helpers/harness.js';
import { startOidcIssuer, type OidcIssuer } from './helpers/oidc-issuer.js';

type AuditRecord = Record<string, any> & { seq: number; type: string };

async function lastSeq(h: Harness): Promise<number> {
  return (await h.auditRecords()).at(-1)?.seq ?? 0;
}

/** Audit records written after `seq`. */
async function recordsAfter(h: Harness, seq: number): Promise<AuditRecord[]> {
  return (await h.auditRecords()).filter((r) => r.seq > seq);
}

/**
 * Runs `attempt`, asserts the caller got the uniform 401, and returns the one
 * `authentication.failed` record it left (which must not contain the token).
 */
async function refusal(h: Harness, attempt: () => Promise<HttpAnswer>, token?: string): Promise<AuditRecord> {
  const before = await lastSeq(h);
  const answer = await attempt();
  assert.equal(answer.status, 401);
  assert.equal(answer.body.code, 'ERR_UNAUTHENTICATED');
  const failures = (await recordsAfter(h, before)).filter((r) => r.type === 'authentication.failed');
  assert.equal(failures.length, 1, 'exactly one refusal is audited');
  const failure = failures[0]!;
  if (token !== undefined) assert.ok(!JSON.stringify(failure).includes(token), 'the audit record holds a digest, never the token');
  return failure;
}

/** The audited reason a task request with `token` was refused for. */
async function taskRefusalReason(h: Harness, token: string): Promise<string> {
  const failure = await refusal(h, () => h.post('/v1/tasks', supportTask(), token), token);
  assert.equal(failure.data.endpoint, 'POST /v1/tasks');
  assert.match(String(failure.data.tokenDigest), /^sha256:[0-9a-f]{32}$/);
  return String(failure.reason);
}

async function grantedTask(h: Harness, token: string): Promise<HttpAnswer> {
  const answer = await h.post('/v1/tasks', supportTask(), token);
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  assert.equal(answer.body.status, 'granted');
  return answer;
}

/** `token`'s claims re-signed with a key no issuer has, under header kid `kid`. */
async function resignedWithUnknownKey(token: string, key: KeyObject, kid: string): Promise<string> {
  return new SignJWT(claimsOf(token)).setProtectedHeader({ alg: 'RS256', kid, typ: 'at+jwt' }).sign(key);
}

/** A bare JWKS endpoint on loopback, for a source whose signing key the test holds. */
async function serveJwks(jwks: unknown): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(jwks));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Real time plus an offset the test moves forward: tokens from the real issuer stay valid, rate limits are stepped over on purpose. */
function offsetClock(): Clock & { advance(ms: number): void } {
  let offset = 0;
  return {
    now: () => Date.now() + offset,
    advance: (ms) => {
      offset += ms;
    },
  };
}

describe('OIDC trust source: access tokens from a real oidc-provider', () => {
  let idp: OidcIssuer;
  let partnerIdp: OidcIssuer;
  let labJwks: { url: string; close(): Promise<void> };
  let h: Harness;
  const labKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const id = (client: string) => `${idp.issuer}#${client}`;

  before(async () => {
    idp = await startOidcIssuer({
      audience: 'writ',
      clients: [
        { clientId: 'payments-agent', clientSecret: 's-payments', extraClaims: { namespace: 'payments', team: 'payments' } },
        { clientId: 'drifted-agent', clientSecret: 's-drifted', extraClaims: { namespace: 'payments-staging' } },
        { clientId: 'stranger', clientSecret: 's-stranger', extraClaims: { namespace: 'payments' } },
      ],
    });
    partnerIdp = await startOidcIssuer({
      audience: 'writ',
      alg: 'ES256',
      clients: [{ clientId: 'newcomer', clientSecret: 's-newcomer', extraClaims: { namespace: 'payments', team: 'partners' } }],
    });
    labJwks = await serveJwks({ keys: [{ ...labKey.publicKey.export({ format: 'jwk' }), kid: 'lab-1', alg: 'ES256', use: 'sig' }] });
    h = await startHarness({
      config: {
        identity: {
          sources: [
            { type: 'oidc', name: 'lab-idp', issuer: 'https://lab.example', jwksUri: labJwks.url, unregistered: 'deny', actorType: 'agent' },
            {
              type: 'oidc',
              name: 'corp-idp',
              issuer: idp.issuer,
              environment: { claim: 'namespace', map: { payments: 'production', 'payments-staging': 'staging' } },
              labels: { team: 'team' },
              unregistered: 'deny',
              actorType: 'agent',
            },
            {
              type: 'oidc',
              name: 'partner-idp',
              issuer: partnerIdp.issuer,
              environment: { claim: 'namespace', map: { payments: 'production' } },
              labels: { team: 'team' },
              unregistered: 'quarantine',
              actorType: 'agent',
            },
          ],
        },
      },
    });
    await h.registerAgent(id('payments-agent'), { environment: 'production' });
    await h.registerAgent(id('drifted-agent'), { environment: 'production' });
  });
  after(async () => {
    await h?.close();
    await idp?.close();
    await partnerIdp?.close();
    await labJwks?.close();
  });

  test('a registered OIDC workload gets a task with its client-credentials access token', async () => {
    const token = await idp.token('payments-agent');
    const granted = await grantedTask(h, token);
    assert.equal(granted.body.task.identity, id('payments-agent'));
    assert.equal(claimsOf(granted.body.token).sub, id('payments-agent'), 'the task token names the issuer-qualified identity');
    const check = await h.post('/v1/authorize', { token: granted.body.token, action: 'read', resource: 'db:orders/1042' });
    assert.equal(check.body.allowed, true);
  });

  test('a token whose claims map to another environment than the registered one is refused (ERR_IDENTITY_MISMATCH)', async () => {
    const token = await idp.token('drifted-agent');
    assert.equal(await taskRefusalReason(h, token), 'ERR_IDENTITY_MISMATCH');
  });

  test('a workload nobody registered, on a deny source, is refused (ERR_IDENTITY_NOT_FOUND) and not recorded', async () => {
    const token = await idp.token('stranger');
    assert.equal(await taskRefusalReason(h, token), 'ERR_IDENTITY_NOT_FOUND');
    const lookup = await h.get(`/v1/identities/${encodeURIComponent(id('stranger'))}`, await h.adminToken());
    assert.equal(lookup.status, 404);
    assert.equal(lookup.body.code, 'ERR_IDENTITY_NOT_FOUND');
  });

  test('a token for another audience is refused (ERR_TOKEN_AUDIENCE)', async () => {
    const token = await idp.token('payments-agent', { resource: 'billing' });
    assert.equal(claimsOf(token).aud, 'billing');
    assert.equal(await taskRefusalReason(h, token), 'ERR_TOKEN_AUDIENCE');
  });

  test("one issuer's key cannot mint tokens in another issuer's name (ERR_TOKEN_ISSUER)", async () => {
    const claims = claimsOf(await idp.token('payments-agent'));
    assert.equal(claims.iss, idp.issuer);
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'lab-1', typ: 'at+jwt' }).sign(labKey.privateKey);
    assert.equal(await taskRefusalReason(h, forged), 'ERR_TOKEN_ISSUER');
  });

  test('an unregistered workload on a quarantine source is quarantined without an owner, and gets a task once claimed', async () => {
    const admin = await h.adminToken();
    const newcomer = `${partnerIdp.issuer}#newcomer`;
    const path = `/v1/identities/${encodeURIComponent(newcomer)}`;
    const firstToken = await partnerIdp.token('newcomer');
    const before = await lastSeq(h);
    assert.equal(await taskRefusalReason(h, firstToken), 'ERR_IDENTITY_INACTIVE');

    const listed = await h.get('/v1/identities', admin);
    assert.equal(listed.status, 200);
    const quarantined = listed.body.identities.find((i: { id: string }) => i.id === newcomer);
    assert.ok(quarantined, 'the quarantined identity is listed');
    assert.equal(quarantined.state, 'quarantined');
    assert.equal(quarantined.owner, null);
    assert.equal(quarantined.environment, 'production', 'the environment comes from the claim mapping');
    assert.deepEqual(quarantined.labels, { team: 'partners' });
    assert.equal(quarantined.source, 'partner-idp');
    const records = await recordsAfter(h, before);
    const event = records.filter((r) => r.type === 'identity.quarantined');
    assert.equal(event.length, 1);
    assert.equal(event[0]!.actor.id, newcomer);

    // Asking again does not quarantine it twice, and still gets nothing.
    const again = await lastSeq(h);
    assert.equal(await taskRefusalReason(h, await partnerIdp.token('newcomer')), 'ERR_IDENTITY_INACTIVE');
    assert.equal((await recordsAfter(h, again)).filter((r) => r.type === 'identity.quarantined').length, 0);

    const claimed = await h.post(`${path}/claim`, { owner: 'bob@example.com' }, admin);
    assert.equal(claimed.status, 200);
    assert.equal(claimed.body.identity.state, 'active');
    assert.equal(claimed.body.identity.owner, 'bob@example.com');
    const granted = await grantedTask(h, await partnerIdp.token('newcomer'));
    assert.equal(granted.body.task.identity, newcomer);

    const claimTwice = await h.post(`${path}/claim`, { owner: 'mallory@example.com' }, admin);
    assert.equal(claimTwice.status, 409, 'only a quarantined identity can be claimed');
    assert.equal(claimTwice.body.code, 'ERR_IDENTITY_STATE_CONFLICT');
    assert.equal((await h.get(path, admin)).body.identity.owner, 'bob@example.com');
  });
});

describe('OIDC trust source: key caching, rotation and outages', () => {
  const MIN_REFRESH_MS = 10_000;
  const MAX_AGE_MS = 60_000;
  let idp: OidcIssuer;
  let h: Harness;
  const clock = offsetClock();
  const forger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const agent = () => `${idp.issuer}#payments-agent`;

  before(async () => {
    idp = await startOidcIssuer({ audience: 'writ', clients: [{ clientId: 'payments-agent', clientSecret: 's-payments' }] });
    h = await startHarness({
      clock,
      config: {
        identity: {
          // One remote source only: an unreachable verdict needs every remote source unreachable.
          sources: [
            {
              type: 'oidc',
              name: 'corp-idp',
              issuer: idp.issuer,
              unregistered: 'deny',
              actorType: 'agent',
              fetch: { refreshInterval: `${MAX_AGE_MS / 1000}s`, minRefreshInterval: `${MIN_REFRESH_MS / 1000}s` },
            },
          ],
        },
      },
    });
    await h.registerAgent(agent(), { environment: 'production' });
  });
  after(async () => {
    await h?.close();
    await idp?.close();
  });

  test('keys fetched at start serve every later token: no JWKS fetch per token or per request', async () => {
    assert.equal(idp.jwksRequests(), 1, 'one fetch at start-up');
    const first = await idp.token('payments-agent');
    await grantedTask(h, first);
    await grantedTask(h, first);
    for (let i = 0; i < 5; i++) await grantedTask(h, await idp.token('payments-agent'));
    assert.equal(idp.jwksRequests(), 1);
  });

  test('a rotated signing key is picked up by exactly one refresh, and the dropped key stops working', async () => {
    const oldToken = await idp.token('payments-agent'); // never presented before the rotation
    await idp.rotateKeys();
    const fetches = idp.jwksRequests();
    clock.advance(MIN_REFRESH_MS);
    const rotated = await idp.token('payments-agent');
    assert.notEqual(JSON.parse(Buffer.from(rotated.split('.')[0]!, 'base64url').toString()).kid, JSON.parse(Buffer.from(oldToken.split('.')[0]!, 'base64url').toString()).kid);
    await grantedTask(h, rotated);
    assert.equal(idp.jwksRequests(), fetches + 1);
    await grantedTask(h, await idp.token('payments-agent'));
    assert.equal(idp.jwksRequests(), fetches + 1, 'the new key is cached too');
    assert.equal(await taskRefusalReason(h, oldToken), 'ERR_TOKEN_UNKNOWN_KEY');
    assert.equal(idp.jwksRequests(), fetches + 1, 'no refresh inside minRefreshInterval');
  });

  test('a burst of tokens with random unknown kids costs at most one JWKS fetch per minRefreshInterval', async () => {
    clock.advance(MIN_REFRESH_MS);
    const template = await idp.token('payments-agent');
    const fetches = idp.jwksRequests();
    const forged = await Promise.all(Array.from({ length: 20 }, () => resignedWithUnknownKey(template, forger, randomUUID())));
    const before = await lastSeq(h);
    const answers = await Promise.all(forged.map((token) => h.post('/v1/tasks', supportTask(), token)));
    assert.deepEqual(
      answers.map((a) => a.status),
      forged.map(() => 401),
    );
    for (const token of forged.slice(0, 5)) assert.equal(await taskRefusalReason(h, token), 'ERR_TOKEN_UNKNOWN_KEY');
    const reasons = (await recordsAfter(h, before)).filter((r) => r.type === 'authentication.failed').map((r) => r.reason);
    assert.equal(reasons.length, 25);
    assert.ok(reasons.every((r) => r === 'ERR_TOKEN_UNKNOWN_KEY'));
    assert.equal(idp.jwksRequests(), fetches + 1, 'concurrent and later misses share one refresh');
    await grantedTask(h, await idp.token('payments-agent'));
  });

  test('keys older than refreshInterval are refreshed: a key the issuer removed stops verifying', async () => {
    const signedByRemovedKey = await idp.token('payments-agent'); // never presented
    await idp.rotateKeys();
    const fetches = idp.jwksRequests();
    clock.advance(MAX_AGE_MS);
    assert.equal(await taskRefusalReason(h, signedByRemovedKey), 'ERR_TOKEN_UNKNOWN_KEY');
    assert.equal(idp.jwksRequests(), fetches + 1, 'one refresh of the stale key set');
    await grantedTask(h, await idp.token('payments-agent'));
  });

  test('while the issuer is down, tokens signed by cached keys verify; an unknown kid is refused as ERR_ISSUER_UNREACHABLE', async () => {
    const mintedBeforeOutage = await idp.token('payments-agent'); // never presented
    const template = await idp.token('payments-agent');
    await idp.stop();
    try {
      clock.advance(MAX_AGE_MS); // stale and past the rate limit: the next lookup tries the issuer
      await grantedTask(h, mintedBeforeOutage);
      const unknownKid = await resignedWithUnknownKey(template, forger, randomUUID());
      assert.equal(await taskRefusalReason(h, unknownKid), 'ERR_ISSUER_UNREACHABLE');
    } finally {
      await idp.start();
    }
    clock.advance(MIN_REFRESH_MS);
    const unknownKid = await resignedWithUnknownKey(template, forger, randomUUID());
    assert.equal(await taskRefusalReason(h, unknownKid), 'ERR_TOKEN_UNKNOWN_KEY', 'once the issuer answers, an unknown kid is unknown again');
    await grantedTask(h, await idp.token('payments-agent'));
  });
});

describe('SPIFFE trust source: JWT-SVIDs against bundle files', () => {
  const PROD = 'spiffe://prod.example/agent/x';
  const OTHER = 'spiffe://other.example/agent/y';
  let dir: string;
  let h: Harness;
  const prodKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  // other.example also publishes a key under prod.example's kid: kids are not unique across trust domains.
  const otherShadowKey = generateKeyPairSync('ec', { namedCurve: 'P-256' });

  const bundle = (entries: Array<{ key: KeyObject; kid: string }>) =>
    JSON.stringify({ keys: entries.map(({ key, kid }) => ({ ...key.export({ format: 'jwk' }), kid, use: 'jwt-svid' })), spiffe_refresh_hint: 300 });

  const svid = (claims: { sub: string; aud?: string[] }, key: KeyObject, kid: string) => {
    const jwt = new SignJWT({ ...(claims.aud === undefined ? {} : { aud: claims.aud }) })
      .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
      .setSubject(claims.sub)
      .setIssuedAt()
      .setExpirationTime('5m');
    return jwt.sign(key);
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-spiffe-'));
    writeFileSync(join(dir, 'prod.json'), bundle([{ key: prodKey.publicKey, kid: 'prod-1' }]));
    writeFileSync(
      join(dir, 'other.json'),
      bundle([
        { key: otherKey.publicKey, kid: 'other-1' },
        { key: otherShadowKey.publicKey, kid: 'prod-1' },
      ]),
    );
    h = await startHarness({
      config: {
        identity: {
          sources: [
            { type: 'spiffe', name: 'prod', trustDomain: 'prod.example', jwtBundle: { file: join(dir, 'prod.json') }, unregistered: 'deny', actorType: 'agent' },
            { type: 'spiffe', name: 'other', trustDomain: 'other.example', jwtBundle: { file: join(dir, 'other.json') }, unregistered: 'deny', actorType: 'agent' },
          ],
        },
      },
    });
    await h.registerAgent(PROD, { environment: 'production' });
    await h.registerAgent(OTHER, { environment: 'production' });
  });
  after(async () => {
    await h?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test('a registered workload gets a task with its JWT-SVID', async () => {
    const granted = await grantedTask(h, await svid({ sub: PROD, aud: ['writ'] }, prodKey.privateKey, 'prod-1'));
    assert.equal(granted.body.task.identity, PROD);
    const other = await grantedTask(h, await svid({ sub: OTHER, aud: ['writ', 'elsewhere'] }, otherKey.privateKey, 'other-1'));
    assert.equal(other.body.task.identity, OTHER);
  });

  test("a trust domain's key cannot vouch for an identity in another trust domain (ERR_TOKEN_TRUST_DOMAIN)", async () => {
    const prodSigningForOther = await svid({ sub: OTHER, aud: ['writ'] }, prodKey.privateKey, 'prod-1');
    assert.equal(await taskRefusalReason(h, prodSigningForOther), 'ERR_TOKEN_TRUST_DOMAIN');
    const otherSigningForProd = await svid({ sub: PROD, aud: ['writ'] }, otherKey.privateKey, 'other-1');
    assert.equal(await taskRefusalReason(h, otherSigningForProd), 'ERR_TOKEN_TRUST_DOMAIN');
  });

  test('a kid held by two trust domains is settled by the signature, and the signer still decides the trust domain', async () => {
    const shadowForOther = await svid({ sub: OTHER, aud: ['writ'] }, otherShadowKey.privateKey, 'prod-1');
    assert.equal((await grantedTask(h, shadowForOther)).body.task.identity, OTHER);
    const shadowForProd = await svid({ sub: PROD, aud: ['writ'] }, otherShadowKey.privateKey, 'prod-1');
    assert.equal(await taskRefusalReason(h, shadowForProd), 'ERR_TOKEN_TRUST_DOMAIN');
  });

  test('a JWT-SVID whose aud does not name writ is refused (ERR_TOKEN_AUDIENCE)', async () => {
    assert.equal(await taskRefusalReason(h, await svid({ sub: PROD, aud: ['billing'] }, prodKey.privateKey, 'prod-1')), 'ERR_TOKEN_AUDIENCE');
    assert.equal(await taskRefusalReason(h, await svid({ sub: PROD }, prodKey.privateKey, 'prod-1')), 'ERR_TOKEN_AUDIENCE', 'a JWT-SVID must carry aud');
  });

  test('a JWT-SVID signed by a key in no bundle is refused (ERR_TOKEN_UNKNOWN_KEY)', async () => {
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    assert.equal(await taskRefusalReason(h, await svid({ sub: PROD, aud: ['writ'] }, stranger, 'stranger-1')), 'ERR_TOKEN_UNKNOWN_KEY');
    assert.equal(await taskRefusalReason(h, await svid({ sub: PROD, aud: ['writ'] }, stranger, 'prod-1')), 'ERR_TOKEN_SIGNATURE');
  });
});

describe('registry and admin API', () => {
  const OPS = 'spiffe://demo.local/agent/ops';
  let sso: OidcIssuer;
  let h: Harness;
  let admin: string;
  const alice = () => `${sso.issuer}#ops-alice`;

  before(async () => {
    sso = await startOidcIssuer({
      audience: 'writ',
      clients: [
        { clientId: 'ops-alice', clientSecret: 's-alice' },
        { clientId: 'ops-dave', clientSecret: 's-dave' },
      ],
    });
    h = await startHarness({
      config: { identity: { sources: [{ type: 'oidc', name: 'staff-sso', issuer: sso.issuer, unregistered: 'deny', actorType: 'human' }] } },
    });
    admin = await h.adminToken();
  });
  after(async () => {
    await h?.close();
    await sso?.close();
  });

  test('the admin API refuses a request without a credential (401) and one without the scope (403, audited)', async () => {
    const none = await h.get('/v1/identities');
    assert.equal(none.status, 401);
    assert.equal(none.body.code, 'ERR_UNAUTHENTICATED');
    const garbage = await h.get('/v1/identities', 'writ_admin_not-a-real-token');
    assert.equal(garbage.status, 401);

    const { token: reader, record } = await h.writ.createAdminToken({ name: 'reader', scopes: ['identities:read'] }, { id: 'test' });
    assert.equal((await h.get('/v1/identities', reader)).status, 200);
    const before = await lastSeq(h);
    const write = await h.post('/v1/identities', { id: OPS, actorType: 'agent', owner: 'carol@example.com' }, reader);
    assert.equal(write.status, 403);
    assert.equal(write.body.code, 'ERR_FORBIDDEN');
    const denied = (await recordsAfter(h, before)).filter((r) => r.type === 'admin.denied');
    assert.equal(denied.length, 1);
    assert.equal(denied[0]!.reason, 'ERR_FORBIDDEN');
    assert.equal(denied[0]!.actor.id, record.id);
    assert.equal(denied[0]!.data.endpoint, 'POST /v1/identities');
    assert.equal((await h.get(`/v1/identities/${encodeURIComponent(OPS)}`, admin)).status, 404, 'the refused write did not happen');
  });

  test('identities are registered over the API; bad input is refused with ERR_VALIDATION', async () => {
    const created = await h.post('/v1/identities', { id: OPS, actorType: 'agent', owner: 'carol@example.com', environment: 'production' }, admin);
    assert.equal(created.status, 201);
    assert.equal(created.body.identity.state, 'active');
    assert.equal(created.body.identity.source, 'api');
    const fetched = await h.get(`/v1/identities/${encodeURIComponent(OPS)}`, admin);
    assert.equal(fetched.status, 200);
    assert.equal(fetched.body.identity.owner, 'carol@example.com');

    const cases: Array<[string, unknown, number, string]> = [
      ['an agent without an owner', { id: 'spiffe://demo.local/agent/orphan', actorType: 'agent' }, 400, 'ERR_VALIDATION'],
      ['an agent holding admin scopes', { id: 'spiffe://demo.local/agent/x', actorType: 'agent', owner: 'a@example.com', adminScopes: ['identities:write'] }, 400, 'ERR_VALIDATION'],
      ['an id that is neither SPIFFE nor issuer#subject', { id: 'payments-agent', actorType: 'agent', owner: 'a@example.com' }, 400, 'ERR_VALIDATION'],
      ['an unknown field', { id: 'spiffe://demo.local/agent/y', actorType: 'agent', owner: 'a@example.com', state: 'active' }, 400, 'ERR_VALIDATION'],
      ['an identity registered twice', { id: OPS, actorType: 'agent', owner: 'carol@example.com' }, 409, 'ERR_IDENTITY_EXISTS'],
    ];
    for (const [name, body, status, code] of cases) {
      const answer = await h.post('/v1/identities', body, admin);
      assert.equal(answer.status, status, name);
      assert.equal(answer.body.code, code, name);
    }
  });

  test('suspending an identity revokes its active task at once and refuses its identity token; reactivation restores it', async () => {
    const path = `/v1/identities/${encodeURIComponent(OPS)}`;
    const identityToken = await h.identityToken(OPS);
    const granted = await grantedTask(h, identityToken);
    const taskToken: string = granted.body.token;
    const call = { token: taskToken, action: 'read', resource: 'db:orders/1042' };
    assert.equal((await h.post('/v1/authorize', call)).body.allowed, true);

    const suspended = await h.post(`${path}/suspend`, { note: 'investigating' }, admin);
    assert.equal(suspended.status, 200);
    assert.equal(suspended.body.identity.state, 'suspended');
    assert.equal(suspended.body.revokedTasks, 1);
    const check = await h.post('/v1/authorize', call);
    assert.equal(check.status, 200);
    assert.equal(check.body.allowed, false);
    assert.equal(check.body.reason, 'ERR_TOKEN_REVOKED', 'the task ended with the suspension');
    assert.equal((await h.get(`/v1/tasks/${granted.body.task.id}`, admin)).status, 401, 'an admin token is no task credential');
    assert.equal(await taskRefusalReason(h, identityToken), 'ERR_IDENTITY_INACTIVE');

    const reactivated = await h.post(`${path}/reactivate`, {}, admin);
    assert.equal(reactivated.status, 200);
    assert.equal(reactivated.body.identity.state, 'active');
    assert.equal(reactivated.body.revokedTasks, 0);
    assert.equal((await h.post('/v1/authorize', call)).body.allowed, false, 'a revoked task stays revoked');
    await grantedTask(h, identityToken);
  });

  test('a decommissioned identity is final: reactivation is refused with 409', async () => {
    const path = `/v1/identities/${encodeURIComponent(OPS)}`;
    const identityToken = await h.identityToken(OPS);
    const decommissioned = await h.post(`${path}/decommission`, {}, admin);
    assert.equal(decommissioned.status, 200);
    assert.equal(decommissioned.body.identity.state, 'decommissioned');
    const reactivate = await h.post(`${path}/reactivate`, {}, admin);
    assert.equal(reactivate.status, 409);
    assert.equal(reactivate.body.code, 'ERR_IDENTITY_STATE_CONFLICT');
    assert.equal(await taskRefusalReason(h, identityToken), 'ERR_IDENTITY_INACTIVE');
    const unknown = await h.post(`/v1/identities/${encodeURIComponent('spiffe://demo.local/agent/nobody')}/suspend`, {}, admin);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.code, 'ERR_IDENTITY_NOT_FOUND');
  });

  test('a revoked admin token is refused at once', async () => {
    const created = await h.post('/v1/admin/tokens', { name: 'ci', scopes: ['identities:read'] }, admin);
    assert.equal(created.status, 201);
    const token: string = created.body.token;
    assert.equal((await h.get('/v1/identities', token)).status, 200);
    const listed = await h.get('/v1/admin/tokens', admin);
    assert.ok(!JSON.stringify(listed.body).includes(token), 'the token is shown once, never listed');
    const revoked = await h.post(`/v1/admin/tokens/${created.body.adminToken.id}/revoke`, {}, admin);
    assert.equal(revoked.status, 200);
    const refused = await h.get('/v1/identities', token);
    assert.equal(refused.status, 401);
    assert.equal(refused.body.code, 'ERR_UNAUTHENTICATED');
  });

  test('a human with admin scopes signs in with an OIDC token and is held to those scopes; agents and scopeless humans get 401', async () => {
    await h.writ.registerIdentity({ id: alice(), actorType: 'human', adminScopes: ['identities:read'] });
    await h.writ.registerIdentity({ id: `${sso.issuer}#ops-dave`, actorType: 'human' });
    const aliceToken = await sso.token('ops-alice');
    const listed = await h.get('/v1/identities', aliceToken);
    assert.equal(listed.status, 200);
    assert.ok(listed.body.identities.some((i: { id: string }) => i.id === alice()));
    const before = await lastSeq(h);
    const write = await h.post('/v1/identities', { id: 'spiffe://demo.local/agent/z', actorType: 'agent', owner: 'a@example.com' }, aliceToken);
    assert.equal(write.status, 403);
    assert.equal(write.body.code, 'ERR_FORBIDDEN');
    const denied = (await recordsAfter(h, before)).find((r) => r.type === 'admin.denied');
    assert.deepEqual(denied?.actor, { id: alice(), actorType: 'human' });

    assert.equal((await h.get('/v1/identities', await sso.token('ops-dave'))).status, 401, 'a human without admin scopes');
    await h.registerAgent('spiffe://demo.local/agent/helper');
    assert.equal((await h.get('/v1/identities', await h.identityToken('spiffe://demo.local/agent/helper'))).status, 401, 'an agent identity token');

    const suspended = await h.post(`/v1/identities/${encodeURIComponent(alice())}/suspend`, {}, admin);
    assert.equal(suspended.status, 200);
    assert.equal((await h.get('/v1/identities', aliceToken)).status, 401, 'a suspended admin loses the admin API at once');
  });
});
