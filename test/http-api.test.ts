/**
 * The HTTP edge: the same check in process and over HTTP gives the same
 * answer; bad input gets a stable problem+json and changes nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startHarness, supportTask, type Harness } from './helpers/harness.js';

let h: Harness;
let token: string;
let identityToken: string;
before(async () => {
  h = await startHarness({ config: { server: { bodyLimit: 4096 } } });
  await h.registerAgent();
  identityToken = await h.identityToken();
  token = (await h.post('/v1/tasks', supportTask(), identityToken)).body.token;
});
after(() => h.close());

describe('one action check, two entry points', () => {
  test('in-process authorize and POST /v1/authorize answer the same for the same inputs', async () => {
    const calls: [string, string, string][] = [
      [token, 'read', 'db:orders/1'],
      [token, 'read', 'db:orders/*'],
      [token, 'write', 'tickets:T-1042'],
      [token, 'write', 'tickets:T-1043'],
      [token, 'export', 'db:orders/1'],
      [token, 'frobnicate', 'db:orders/1'],
      [token, 'read', 'not a resource'],
      ['garbage', 'read', 'db:orders/1'],
      ['x'.repeat(3_500), 'read', 'db:orders/1'],
      [token, 'r'.repeat(300), 'db:orders/1'],
      [token, 'read', `db:${'a'.repeat(2000)}`],
      [`${token}x`, 'read', 'db:orders/1'],
    ];
    const strip = ({ auditId, ...rest }: Record<string, unknown>) => {
      assert.match(String(auditId), /^aud_/);
      return rest;
    };
    for (const [candidate, action, resource] of calls) {
      const inProcess = await h.writ.authorize(candidate, { action, resource });
      const overHttp = await h.post('/v1/authorize', { token: candidate, action, resource });
      assert.equal(overHttp.status, 200);
      assert.deepEqual(strip(overHttp.body), strip({ ...inProcess }), `${action} ${resource}`);
    }
  });

  test('a write is decided by policy again, with fresh context, on every call', async () => {
    const first = await h.writ.authorize(token, { action: 'write', resource: 'tickets:T-1042' });
    assert.equal(first.allowed, true);
    assert.deepEqual(first.policies, ['support-writes-tickets']);
    assert.equal(first.policyVersion, h.writ.policy().version);
    const read = await h.writ.authorize(token, { action: 'read', resource: 'db:orders/1' });
    assert.deepEqual(read.policies, [], 'a read within scope is not re-evaluated');
  });

  test('call arguments are audited as a digest, never stored', async () => {
    const answer = await h.writ.authorize(token, { action: 'read', resource: 'db:orders/1', context: { query: 'select * from orders', secret: 'hunter2' } });
    const record = (await h.auditRecords()).find((r) => r.id === answer.auditId);
    assert.match(String((record?.data as { argsDigest: string }).argsDigest), /^sha256:[0-9a-f]{64}$/);
    assert.ok(!JSON.stringify(record).includes('hunter2'));
    const rejected = await h.writ.authorize(token, { action: 'read', resource: 'db:orders/1', context: { big: 'x'.repeat(20_000) } });
    assert.equal(rejected.reason, 'ERR_VALIDATION');
  });
});

describe('bad input', () => {
  const problems: [string, () => Promise<{ status: number; body: any }>, number, string][] = [
    ['malformed JSON', () => h.post('/v1/tasks', '{"purpose": ', identityToken), 400, 'ERR_MALFORMED_JSON'],
    ['a __proto__ key', () => h.post('/v1/tasks', '{"__proto__": {"admin": true}, "purpose": "x"}', identityToken), 400, 'ERR_MALFORMED_JSON'],
    ['a constructor.prototype key', () => h.post('/v1/authorize', '{"constructor": {"prototype": {"x": 1}}}'), 400, 'ERR_MALFORMED_JSON'],
    ['a body over the limit', () => h.post('/v1/tasks', supportTask({ purpose: 'x'.repeat(5000) }), identityToken), 413, 'ERR_BODY_TOO_LARGE'],
    ['text/plain', () => h.post('/v1/authorize', 'token=x', undefined, { 'content-type': 'text/plain' }), 415, 'ERR_UNSUPPORTED_MEDIA_TYPE'],
    ['a form body', () => h.post('/v1/authorize', 'token=x', undefined, { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'ERR_UNSUPPORTED_MEDIA_TYPE'],
    ['an unknown route', () => h.get('/v1/nothing-here'), 404, 'ERR_NOT_FOUND'],
    ['authorize without a token', () => h.post('/v1/authorize', { action: 'read', resource: 'db:orders/1' }), 400, 'ERR_VALIDATION'],
    ['authorize with an extra field', () => h.post('/v1/authorize', { token, action: 'read', resource: 'db:orders/1', admin: true }), 400, 'ERR_VALIDATION'],
    ['a task without scopes', () => h.post('/v1/tasks', supportTask({ scopes: [] }), identityToken), 400, 'ERR_VALIDATION'],
    ['a task with an unknown field', () => h.post('/v1/tasks', supportTask({ role: 'admin' }), identityToken), 400, 'ERR_VALIDATION'],
    ['a scope with a wildcard in the middle', () => h.post('/v1/tasks', supportTask({ scopes: [{ action: 'read', resource: 'db:*/orders' }] }), identityToken), 400, 'ERR_VALIDATION'],
    ['a scope over everything', () => h.post('/v1/tasks', supportTask({ scopes: [{ action: 'read', resource: '*' }] }), identityToken), 400, 'ERR_VALIDATION'],
    ['an environment not configured', () => h.post('/v1/tasks', supportTask({ environment: 'moon' }), identityToken), 400, 'ERR_VALIDATION'],
    ['a purpose with control characters', () => h.post('/v1/tasks', supportTask({ purpose: 'ok\n{"forged":"log line"}' }), identityToken), 400, 'ERR_VALIDATION'],
    // JSON.stringify writes it as the escape \ud800; parsed, it is half a character, which Cedar would refuse whole.
    ['a purpose with a lone surrogate', () => h.post('/v1/tasks', supportTask({ purpose: 'refund \uD800 now' }), identityToken), 400, 'ERR_VALIDATION'],
    ['a TTL that is not a duration', () => h.post('/v1/tasks', supportTask({ ttl: '5 minutes' }), identityToken), 400, 'ERR_VALIDATION'],
    ['an intent with SQL in it', () => h.post('/v1/tasks', supportTask({ intent: "x'; drop table tasks; --" }), identityToken), 400, 'ERR_VALIDATION'],
    ['a JSON array body', () => h.post('/v1/tasks', '[1,2,3]', identityToken), 400, 'ERR_VALIDATION'],
  ];

  for (const [name, send, status, code] of problems) {
    test(`${name}: ${status} ${code} as problem+json`, async () => {
      const answer = await send();
      assert.equal(answer.status, status, JSON.stringify(answer.body));
      assert.equal(answer.body.code, code);
      assert.equal(answer.body.type, `urn:writ:problem:${code}`);
      assert.equal(answer.body.status, status);
      assert.equal(typeof answer.body.title, 'string');
      assert.equal(typeof answer.body.detail, 'string');
    });
  }

  test('validation errors name each field', async () => {
    const answer = await h.post('/v1/tasks', { purpose: '', intent: 'Bad Intent', scopes: [{ action: 'read', resource: 'nope' }], environment: 'production' }, identityToken);
    assert.equal(answer.status, 400);
    assert.deepEqual([...new Set(answer.body.errors.map((e: { field: string }) => e.field))].sort(), ['intent', 'purpose', 'scopes.0.resource']);
  });

  test('refused requests leave no task behind', async () => {
    const before = (await h.auditRecords()).filter((r) => r.type === 'task.decision').length;
    await h.post('/v1/tasks', supportTask({ scopes: [] }), identityToken);
    await h.post('/v1/tasks', '{"purpose": ', identityToken);
    const afterCount = (await h.auditRecords()).filter((r) => r.type === 'task.decision').length;
    assert.equal(afterCount, before);
  });

  test('responses are never cached and the error body never leaks internals', async () => {
    const answer = await h.post('/v1/tasks', supportTask(), 'forged.token.here');
    assert.equal(answer.headers.get('cache-control'), 'no-store');
    assert.equal(answer.headers.get('x-content-type-options'), 'nosniff');
    assert.deepEqual(Object.keys(answer.body).sort(), ['code', 'correlationId', 'detail', 'status', 'title', 'type']);
  });
});

describe('discovery', () => {
  test('the index, health and both JWKS documents are served', async () => {
    const index = await h.get('/');
    assert.equal(index.status, 200);
    assert.ok(index.body.endpoints.includes('POST /v1/authorize'));
    assert.equal((await h.get('/healthz')).body.status, 'ok');
    const jwks = await h.get('/.well-known/jwks.json');
    assert.deepEqual(Object.keys(jwks.body.keys[0]).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x']);
    assert.equal(jwks.body.keys[0].alg, 'EdDSA');
    assert.equal(jwks.body.keys[0].d, undefined, 'no private part');
    const dev = await h.get('/dev-issuer/jwks.json');
    assert.equal(dev.body.keys[0].alg, 'ES256');
    assert.equal(dev.body.keys[0].d, undefined);
  });
});

describe('refused credentials are audited with their precise reason', () => {
  const lastFailure = async () => (await h.auditRecords()).filter((r) => r.type === 'authentication.failed').at(-1);

  test('an Authorization header that is not a Bearer token is a malformed credential, not a missing one', async () => {
    for (const header of ['Basic YWxpY2U6aHVudGVyMg==', 'Bearer a!b', 'Bearer']) {
      const answer = await h.post('/v1/tasks', supportTask(), undefined, { authorization: header });
      assert.equal(answer.status, 401, header);
      assert.equal(answer.body.code, 'ERR_UNAUTHENTICATED');
      assert.equal((await lastFailure())?.reason, 'ERR_TOKEN_MALFORMED', header);
    }
  });

  test('the admin API says why an admin credential was refused: unknown, revoked, expired, malformed, or not an admin', async () => {
    const unknown = `writ_admin_${'A'.repeat(43)}`;
    const created = await h.writ.createAdminToken({ name: 'short', scopes: ['identities:read'], ttlSeconds: 60 }, { id: 'test' });
    const revoked = await h.writ.createAdminToken({ name: 'revoked', scopes: ['identities:read'] }, { id: 'test' });
    await h.writ.revokeAdminToken(revoked.record.id, { id: 'test' });
    const cases: [string, string][] = [
      [unknown, 'ERR_UNAUTHENTICATED'],
      [revoked.token, 'ERR_TOKEN_REVOKED'],
      ['writ_admin_short', 'ERR_TOKEN_MALFORMED'],
      [identityToken, 'ERR_FORBIDDEN'],
    ];
    for (const [credential, reason] of cases) {
      const answer = await h.get('/v1/identities', credential);
      assert.equal(answer.status, 401, reason);
      assert.equal((await lastFailure())?.reason, reason);
    }
    assert.equal((await h.get('/v1/identities', created.token)).status, 200);
  });
});
