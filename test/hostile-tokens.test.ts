/**
 * Forged, expired, replayed, forwarded, oversized and confused tokens, at both
 * doors: the action check (POST /v1/authorize) and authentication (POST
 * /v1/tasks). Every one is refused, the protected action never runs, and the
 * precise reason is in the audit log while the caller sees one uniform answer.
 */
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, sign } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { mintJwt } from '../src/tokens/jwt.js';
import { AGENT, claimsOf, resignTaskToken, startHarness, supportTask, tokenFromUnknownKey, unsignedToken, type Harness } from './helpers/harness.js';

let h: Harness;
let token: string;
let claims: Record<string, any>;
let protectedRuns = 0;

/** An enforcement point guarding a tool: the tool runs only on allow. */
async function callProtectedTool(candidate: string, action: string, resource: string) {
  const answer = await h.post('/v1/authorize', { token: candidate, action, resource });
  assert.equal(answer.status, 200);
  if (answer.body.allowed === true) protectedRuns++;
  return answer.body as { allowed: boolean; reason: string | null; auditId: string };
}

before(async () => {
  h = await startHarness();
  await h.registerAgent();
  await h.registerAgent('spiffe://demo.local/agent/suspended');
  await h.writ.registry.transition('spiffe://demo.local/agent/suspended', ['active'], 'suspended');
  await h.registerAgent('spiffe://demo.local/agent/retired', { expiresAt: Date.now() + 50 });
  const granted = await h.post('/v1/tasks', supportTask(), await h.identityToken());
  token = granted.body.token;
  claims = claimsOf(token);
});
after(() => h.close());

describe('task tokens at the action check', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const cases: [string, () => string | Promise<string>, string][] = [
    ['a token for another audience', () => resignTaskToken(h.writ, { ...claims, aud: 'payments-api' }), 'ERR_TOKEN_AUDIENCE'],
    ['an expired token', () => resignTaskToken(h.writ, { ...claims, iat: now() - 900, nbf: now() - 900, exp: now() - 600 }), 'ERR_TOKEN_EXPIRED'],
    ['a token not valid yet', () => resignTaskToken(h.writ, { ...claims, iat: now(), nbf: now() + 600, exp: now() + 900 }), 'ERR_TOKEN_NOT_YET_VALID'],
    ['a token from the future', () => resignTaskToken(h.writ, { ...claims, iat: now() + 600, nbf: now() - 10, exp: now() + 900 }), 'ERR_TOKEN_NOT_YET_VALID'],
    ['a token signed by an unknown key', () => tokenFromUnknownKey(claims), 'ERR_TOKEN_UNKNOWN_KEY'],
    ['a token with alg none', () => unsignedToken(claims), 'ERR_TOKEN_ALGORITHM'],
    [
      'a token HMAC-signed with the public key as secret',
      () => {
        const jwk = h.writ.taskKeys.jwks().keys[0]!;
        const header = Buffer.from(JSON.stringify({ alg: 'HS256', kid: jwk.kid, typ: 'task+jwt' })).toString('base64url');
        const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
        const mac = createHmac('sha256', Buffer.from(String(jwk.x), 'base64url')).update(`${header}.${body}`).digest('base64url');
        return `${header}.${body}.${mac}`;
      },
      'ERR_TOKEN_ALGORITHM',
    ],
    [
      'a token whose scope was widened after signing',
      () => {
        const [header, , signature] = token.split('.');
        const body = Buffer.from(JSON.stringify({ ...claims, scope: 'read:db:* export:db:*' })).toString('base64url');
        return `${header}.${body}.${signature}`;
      },
      'ERR_TOKEN_SIGNATURE',
    ],
    ['an oversized token', () => resignTaskToken(h.writ, { ...claims, pad: 'x'.repeat(9000) }), 'ERR_TOKEN_MALFORMED'],
    ['something that is not a JWT', () => 'definitely-not-a-token', 'ERR_TOKEN_MALFORMED'],
    ['a token of the wrong type', () => resignTaskToken(h.writ, claims, 'JWT'), 'ERR_TOKEN_MALFORMED'],
    ['a token from another issuer', () => resignTaskToken(h.writ, { ...claims, iss: 'https://evil.example' }), 'ERR_TOKEN_ISSUER'],
    ['a token missing its task', () => resignTaskToken(h.writ, { ...claims, task: undefined }), 'ERR_TOKEN_MALFORMED'],
    ['a token with an unreadable scope', () => resignTaskToken(h.writ, { ...claims, scope: 'read db:*' }), 'ERR_TOKEN_MALFORMED'],
    ['an identity token presented as a task token', () => h.identityToken(), 'ERR_TOKEN_ALGORITHM'],
    [
      'a task token for an identity that is suspended',
      () => resignTaskToken(h.writ, { ...claims, sub: 'spiffe://demo.local/agent/suspended' }),
      'ERR_IDENTITY_INACTIVE',
    ],
  ];

  for (const [name, build, reason] of cases) {
    test(`${name} is refused with ${reason}, and the tool never runs`, async () => {
      const before = protectedRuns;
      const candidate = await build();
      const answer = await callProtectedTool(candidate, 'read', 'db:orders/1');
      assert.equal(answer.allowed, false);
      assert.equal(answer.reason, reason);
      assert.equal(protectedRuns, before);
      const record = (await h.auditRecords()).find((r) => r.id === answer.auditId);
      assert.equal(record?.type, 'action.check');
      assert.equal(record?.reason, reason, 'the audit log holds the precise reason');
    });
  }

  test('a scope the token does not hold is refused, and the tool never runs', async () => {
    const before = protectedRuns;
    for (const [action, resource] of [
      ['read', 'db:customers/1'],
      ['write', 'db:orders/1'],
      ['write', 'tickets:T-10420'],
      ['read', 'db:orders'],
      ['read', 'db:*'],
      ['delete', 'tickets:T-1042'],
    ] as const) {
      const answer = await callProtectedTool(token, action, resource);
      assert.equal(answer.reason, 'ERR_SCOPE_NOT_GRANTED', `${action} ${resource}`);
    }
    assert.equal(protectedRuns, before);
  });

  test('a call with injection or path traversal in its fields is refused without reaching a query', async () => {
    for (const resource of [
      "db:orders/1' OR '1'='1",
      'db:orders/1;drop table tasks',
      'db:orders/1\n{"forged":true}',
      'db:orders/$(reboot)',
      'db:orders/../customers/pii/42',
      'db:orders/%2e%2e/customers/pii/42',
      'db:orders/./..//customers/pii/42',
    ]) {
      const answer = await callProtectedTool(token, 'read', resource);
      assert.equal(answer.reason, 'ERR_VALIDATION', resource);
    }
    const answer = await callProtectedTool(token, "read'--", 'db:orders/1');
    assert.equal(answer.reason, 'ERR_VALIDATION');
    assert.equal((await h.writ.store.getTask(claims.task.id))?.state, 'active', 'the store is untouched');
  });

  test('a replayed token of an ended task is refused everywhere in the process at once', async () => {
    const granted = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    const replayed: string = granted.body.token;
    assert.equal((await callProtectedTool(replayed, 'read', 'db:orders/1')).allowed, true);
    await h.post(`/v1/tasks/${granted.body.task.id}/revoke`, { note: 'drifted' }, replayed);
    const before = protectedRuns;
    assert.equal((await callProtectedTool(replayed, 'read', 'db:orders/1')).reason, 'ERR_TOKEN_REVOKED');
    assert.equal((await h.writ.authorize(replayed, { action: 'read', resource: 'db:orders/1' })).reason, 'ERR_TOKEN_REVOKED');
    assert.equal(protectedRuns, before);
  });
});

describe('identity tokens at authentication', () => {
  const devToken = (payload: Record<string, unknown>) => mintJwt(h.writ.devIssuer!.ring.active, 'JWT', payload);
  const issuer = () => h.writ.devIssuer!.issuer;
  const now = () => Math.floor(Date.now() / 1000);
  const base = () => ({ iss: issuer(), sub: AGENT, aud: ['writ'], iat: now(), exp: now() + 120 });
  const foreignEs256 = (payload: Record<string, unknown>) => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const header = Buffer.from(JSON.stringify({ alg: 'ES256', kid: h.writ.devIssuer!.ring.active.kid, typ: 'JWT' })).toString('base64url');
    const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
    return `${header}.${body}.${sign('sha256', Buffer.from(`${header}.${body}`), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  };

  const cases: [string, () => string | Promise<string>, string][] = [
    ['garbage', () => 'garbage', 'ERR_TOKEN_MALFORMED'],
    ['alg none', () => unsignedToken(base(), 'JWT'), 'ERR_TOKEN_ALGORITHM'],
    ['a signature from another key claiming the dev kid', () => foreignEs256(base()), 'ERR_TOKEN_SIGNATURE'],
    ['an expired identity token', () => devToken({ ...base(), iat: now() - 400, exp: now() - 100 }), 'ERR_TOKEN_EXPIRED'],
    ['an identity token for another audience', () => devToken({ ...base(), aud: ['someone-else'] }), 'ERR_TOKEN_AUDIENCE'],
    ['an identity token without exp', () => devToken({ ...base(), exp: undefined }), 'ERR_TOKEN_MALFORMED'],
    ['an identity token living longer than 5 minutes', () => devToken({ ...base(), exp: now() + 3600 }), 'ERR_TOKEN_MALFORMED'],
    ['an identity token whose sub is not a SPIFFE ID', () => devToken({ ...base(), sub: 'alice' }), 'ERR_TOKEN_MALFORMED'],
    ['an unregistered identity', () => devToken({ ...base(), sub: 'spiffe://demo.local/agent/stranger' }), 'ERR_IDENTITY_NOT_FOUND'],
    ['a suspended identity', () => devToken({ ...base(), sub: 'spiffe://demo.local/agent/suspended' }), 'ERR_IDENTITY_INACTIVE'],
    ['an expired identity', () => devToken({ ...base(), sub: 'spiffe://demo.local/agent/retired' }), 'ERR_IDENTITY_INACTIVE'],
    ['a task token (only identities ask for tasks)', () => token, 'ERR_TOKEN_ALGORITHM'],
    ['an oversized token', () => devToken({ ...base(), pad: 'x'.repeat(9000) }), 'ERR_TOKEN_MALFORMED'],
  ];

  let reference: Record<string, unknown> | undefined;
  for (const [name, build, reason] of cases) {
    test(`${name}: uniform 401, precise reason ${reason} in the audit log`, async () => {
      const candidate = await build();
      const answer = await h.post('/v1/tasks', supportTask(), candidate);
      assert.equal(answer.status, 401);
      assert.equal(answer.headers.get('www-authenticate'), 'Bearer realm="writ", error="invalid_token"');
      const { correlationId, ...body } = answer.body;
      assert.match(correlationId, /^[0-9a-f-]{36}$/);
      reference ??= body;
      assert.deepEqual(body, reference, 'every refused credential gets the same answer');
      assert.equal(answer.body.code, 'ERR_UNAUTHENTICATED');
      const failures = (await h.auditRecords()).filter((r) => r.type === 'authentication.failed');
      assert.equal(failures.at(-1)?.reason, reason);
    });
  }

  test('a missing or non-Bearer Authorization header gets the same 401', async () => {
    for (const headers of [{} as Record<string, string>, { authorization: 'Basic YWxpY2U6c2VjcmV0' }, { authorization: 'Bearer' }, { authorization: 'Bearer a b' }]) {
      const answer = await h.post('/v1/tasks', supportTask(), undefined, headers);
      assert.equal(answer.status, 401);
      assert.equal(answer.body.code, 'ERR_UNAUTHENTICATED');
    }
  });

  test('a token replayed to another Writ data dir (forwarded) is refused: keys are per installation', async () => {
    const other = await startHarness();
    try {
      await other.registerAgent();
      const answer = await other.post('/v1/tasks', supportTask(), await h.identityToken());
      assert.equal(answer.status, 401);
      const check = await other.post('/v1/authorize', { token, action: 'read', resource: 'db:orders/1' });
      assert.equal(check.body.reason, 'ERR_TOKEN_UNKNOWN_KEY');
    } finally {
      await other.close();
    }
  });
});
