/**
 * writ/verify against a real Writ on loopback: the verifier pulls the JWKS and
 * the revocation feed over HTTP, and every refusal has a stable code. The
 * middleware is exercised through real Fastify and node:http servers, and the
 * import graph of writ/verify is checked in a child process.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import Fastify from 'fastify';
import { createManualClock } from '../src/core/clock.js';
import { createWritVerifier, fastifyWrit, verifiedTaskOf, withWrit, type WritVerifier, type WritVerifierOptions } from '../src/verify/index.js';
import { claimsOf, delegated, resignTaskToken, startHarness, supportTask, tokenFromUnknownKey, unsignedToken, type Harness } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';
import { testVerifiers } from './helpers/verifiers.js';

const PLANNER = 'spiffe://demo.local/agent/planner';
const WORKER = 'spiffe://demo.local/agent/worker';
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A compact JWS over `payload` with any header, signed by `signer` (or unsigned). */
function jws(header: Record<string, unknown>, payload: Record<string, unknown>, signer: (input: Buffer) => Buffer): string {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  return `${input}.${signer(Buffer.from(input)).toString('base64url')}`;
}

/** A loopback HTTP server answering JSON from `answer` (null: 500), counting requests. */
async function jsonServer(answer: (path: string) => unknown): Promise<{ url: string; hits: string[]; close(): Promise<void> }> {
  const hits: string[] = [];
  const server: Server = createHttpServer((req, res) => {
    hits.push(req.url ?? '');
    const body = answer(req.url ?? '');
    if (body === null) {
      res.writeHead(500).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, hits, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('writ/verify against a real Writ', () => {
  let h: Harness;
  const verifiers = testVerifiers(() => h);
  /** A verifier for `h`, closed when the file ends. */
  const verifierFor = verifiers.create;

  before(async () => {
    h = await startHarness({ config: { policy: { dir: policyFolder() }, tokens: { maxLifetime: '15m' } } });
    for (const id of [PLANNER, WORKER]) await h.registerAgent(id);
  });
  after(async () => {
    verifiers.closeAll();
    await h.close();
  });

  const grant = async (id = PLANNER) => {
    const answer = await h.post(
      '/v1/tasks',
      supportTask({ scopes: [{ action: 'read', resource: 'db:orders/*' }, { action: 'read', resource: 'tickets:*' }, { action: 'write', resource: 'tickets:T-1042' }] }),
      await h.identityToken(id),
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return { id: answer.body.task.id as string, token: answer.body.token as string };
  };
  const delegate = (subject: string, to: string, scope: string) => delegated(h, subject, to, scope);
  const complete = async (task: { id: string; token: string }) => {
    const answer = await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  };
  const READ_ORDER = { action: 'read', resource: 'db:orders/42' } as const;

  test('a valid task token passes offline, with its task, actor and the scope that covers the call', async () => {
    const verifier = verifierFor();
    await verifier.ready();
    const task = await grant();
    const outcome = await verifier.verify(task.token, READ_ORDER);
    assert.ok(outcome.ok, `a fresh token for read:db:orders/42 passes: ${JSON.stringify(outcome)}`);
    assert.equal(outcome.taskId, task.id);
    assert.equal(outcome.actor, PLANNER);
    assert.deepEqual(outcome.scope, { action: 'read', resource: 'db:orders/*' });
    assert.equal(outcome.claims.jti, claimsOf(task.token).jti);
    const cached = await verifier.verify(task.token, { action: 'write', resource: 'tickets:T-1042' });
    assert.ok(cached.ok, 'the same token passes again (from the cache) for another covered call');
  });

  test('hostile and foreign tokens are refused with stable codes', async () => {
    const verifier = verifierFor({ jwksMinRefreshIntervalMs: 0 });
    await verifier.ready();
    const task = await grant();
    const claims = claimsOf(task.token);
    const kid = JSON.parse(Buffer.from(task.token.split('.')[0] ?? '', 'base64url').toString('utf8')).kid as string;
    const nowSeconds = Math.floor(Date.now() / 1000);
    const { privateKey: attackerKey } = generateKeyPairSync('ed25519');
    const writPublic = h.writ.taskKeys.verificationKey(kid)?.publicKey as KeyObject;
    const [header, , signature] = task.token.split('.');
    const cases: [string, string, string][] = [
      ['wrong audience', resignTaskToken(h.writ, { ...claims, aud: 'another-service' }), 'ERR_TOKEN_AUDIENCE'],
      ['wrong issuer', resignTaskToken(h.writ, { ...claims, iss: 'https://evil.example' }), 'ERR_TOKEN_ISSUER'],
      ['expired', resignTaskToken(h.writ, { ...claims, iat: nowSeconds - 3600, nbf: nowSeconds - 3600, exp: nowSeconds - 600 }), 'ERR_TOKEN_EXPIRED'],
      ['not yet valid', resignTaskToken(h.writ, { ...claims, nbf: nowSeconds + 600 }), 'ERR_TOKEN_NOT_YET_VALID'],
      ['payload changed under a valid signature', `${header}.${Buffer.from(JSON.stringify({ ...claims, scope: 'read:db:*' })).toString('base64url')}.${signature}`, 'ERR_TOKEN_SIGNATURE'],
      ['signed by another key under Writ\'s kid', jws({ alg: 'EdDSA', kid, typ: 'task+jwt' }, claims, (input) => sign(null, input, attackerKey)), 'ERR_TOKEN_SIGNATURE'],
      ['unknown kid', tokenFromUnknownKey(claims), 'ERR_TOKEN_UNKNOWN_KEY'],
      ['alg none', unsignedToken(claims), 'ERR_TOKEN_ALGORITHM'],
      ['HS256 keyed with the public key', jws({ alg: 'HS256', kid, typ: 'task+jwt' }, claims, (input) => createHmac('sha256', writPublic.export({ format: 'pem', type: 'spki' })).update(input).digest()), 'ERR_TOKEN_ALGORITHM'],
      ['oversized', resignTaskToken(h.writ, { ...claims, padding: 'x'.repeat(9000) }), 'ERR_TOKEN_MALFORMED'],
      ['wrong typ', resignTaskToken(h.writ, claims, 'JWT'), 'ERR_TOKEN_MALFORMED'],
      ['an identity token (not a task token)', await h.identityToken(PLANNER), 'ERR_TOKEN_ALGORITHM'],
      ['scope claim Writ cannot read', resignTaskToken(h.writ, { ...claims, scope: 'read:db:orders/../customers/*' }), 'ERR_TOKEN_MALFORMED'],
      ['act without lineage', resignTaskToken(h.writ, { ...claims, act: { sub: WORKER } }), 'ERR_TOKEN_MALFORMED'],
      ['not a JWS', 'not-a-token', 'ERR_TOKEN_MALFORMED'],
    ];
    for (const [name, token, code] of cases) {
      const outcome = await verifier.verify(token, READ_ORDER);
      assert.equal(outcome.ok, false, `${name}: refused`);
      assert.equal(outcome.ok ? undefined : outcome.code, code, `${name}: ${JSON.stringify(outcome)}`);
    }
  });

  test('a scope that does not cover the call is refused, by the same containment rule as Writ', async () => {
    const verifier = verifierFor();
    await verifier.ready();
    const { token } = await grant();
    const refusals: [string, string][] = [
      ['write', 'db:orders/42'],
      ['read', 'db:customers/1'],
      ['write', 'tickets:T-1043'],
      ['read', 'db:orders/../customers/1'],
      ['read', 'db:*'],
      ['Read', 'db:orders/42'],
    ];
    for (const [action, resource] of refusals) {
      const outcome = await verifier.verify(token, { action, resource });
      assert.equal(outcome.ok ? 'ok' : outcome.code, 'ERR_SCOPE_NOT_GRANTED', `${action}:${resource} is not covered`);
    }
    const pattern = await verifier.verify(token, { action: 'read', resource: 'db:orders/2026/*' });
    assert.ok(pattern.ok, 'a narrower pattern inside db:orders/* is covered');
  });

  test('a task completed at Writ is refused after the next poll, without a call to Writ per request', async () => {
    const verifier = verifierFor({ pollIntervalMs: 100 });
    await verifier.ready();
    const task = await grant();
    assert.ok((await verifier.verify(task.token, READ_ORDER)).ok, 'passes while the task is active');
    await complete(task);
    await waitFor('the poll to bring the end', async () => {
      const outcome = await verifier.verify(task.token, READ_ORDER);
      return !outcome.ok && outcome.code === 'ERR_TOKEN_REVOKED';
    });
  });

  test('a pushed revocation is refused immediately, before any poll', async () => {
    const verifier = verifierFor();
    await verifier.ready();
    const task = await grant();
    await complete(task);
    // The verifier has not polled since: offline, it cannot know yet.
    assert.ok((await verifier.verify(task.token, READ_ORDER)).ok, 'before the push and the next poll, the end is not known here');
    verifier.revoke({ taskId: task.id, expiresAt: claimsOf(task.token).exp * 1000 });
    const outcome = await verifier.verify(task.token, READ_ORDER);
    assert.equal(outcome.ok ? 'ok' : outcome.code, 'ERR_TOKEN_REVOKED');

    const other = await grant();
    await complete(other);
    const feed = await h.get('/v1/revocations');
    assert.equal(feed.status, 200);
    verifier.applyRevocations(feed.body);
    const pushedFeed = await verifier.verify(other.token, READ_ORDER);
    assert.equal(pushedFeed.ok ? 'ok' : pushedFeed.code, 'ERR_TOKEN_REVOKED', 'a pushed feed document revokes too');
    assert.throws(() => verifier.applyRevocations({ tasks: 'all' }), TypeError);
  });

  test("a renewed task's old token is refused; the new one passes", async () => {
    const verifier = verifierFor();
    await verifier.ready();
    const task = await grant();
    const renewed = await h.post(`/v1/tasks/${task.id}/renew`, { checkpoint: 'stage 1 done' }, task.token);
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    await verifier.sync();
    const old = await verifier.verify(task.token, READ_ORDER);
    assert.equal(old.ok ? 'ok' : old.code, 'ERR_TOKEN_REVOKED', 'the replaced token');
    assert.ok((await verifier.verify(renewed.body.token as string, READ_ORDER)).ok, 'the renewal token');
  });

  test('a delegated child is refused once its parent ended: from the feed, and by lineage alone', async () => {
    const verifier = verifierFor();
    await verifier.ready();
    const parent = await grant();
    const child = await delegate(parent.token, WORKER, 'read:db:orders/42');
    const passed = await verifier.verify(child.token, READ_ORDER);
    assert.ok(passed.ok, `the child passes within its slice: ${JSON.stringify(passed)}`);
    assert.equal(passed.actor, WORKER, 'the worker acts');
    assert.deepEqual(passed.lineage, [parent.id]);
    assert.equal((await verifier.verify(child.token, { action: 'read', resource: 'db:orders/43' })).ok, false, 'outside its slice');

    // Lineage alone: only the parent's end is known here, not the child's own.
    const lineageOnly = verifierFor();
    await lineageOnly.ready();
    lineageOnly.revoke({ taskId: parent.id, expiresAt: claimsOf(parent.token).exp * 1000 });
    const byLineage = await lineageOnly.verify(child.token, READ_ORDER);
    assert.equal(byLineage.ok ? 'ok' : byLineage.code, 'ERR_TOKEN_REVOKED');
    assert.match(byLineage.ok ? '' : byLineage.detail, /delegated from/);

    await complete(parent);
    await verifier.sync();
    const fromFeed = await verifier.verify(child.token, READ_ORDER);
    assert.equal(fromFeed.ok ? 'ok' : fromFeed.code, 'ERR_TOKEN_REVOKED');
  });

  test('key rotation: an unknown kid refetches the JWKS, at most once per interval', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const rotated = { ...(publicKey.export({ format: 'jwk' }) as Record<string, unknown>), kid: 'rotated-1', alg: 'EdDSA', use: 'sig' };
    let published = false;
    const writJwks = (await h.get('/.well-known/jwks.json')).body as { keys: unknown[] };
    const jwks = await jsonServer(() => ({ keys: published ? [...writJwks.keys, rotated] : writJwks.keys }));
    after(() => jwks.close());
    const clock = createManualClock(Date.now());
    const verifier = verifierFor({ jwksUrl: `${jwks.url}/jwks.json`, jwksMinRefreshIntervalMs: 30_000, clock });
    await verifier.ready();
    const task = await grant();
    const token = jws({ alg: 'EdDSA', kid: 'rotated-1', typ: 'task+jwt' }, claimsOf(task.token), (input) => sign(null, input, privateKey));

    const before = jwks.hits.length;
    const unknown = await verifier.verify(token, READ_ORDER);
    assert.equal(unknown.ok ? 'ok' : unknown.code, 'ERR_TOKEN_UNKNOWN_KEY', 'a kid Writ has not published');
    published = true;
    const again = await verifier.verify(token, READ_ORDER);
    assert.equal(again.ok ? 'ok' : again.code, 'ERR_TOKEN_UNKNOWN_KEY', 'within the interval the JWKS is not fetched again');
    assert.equal(jwks.hits.length, before, 'a fresh key set is not refetched for an unknown kid within the interval');
    clock.advance(31_000);
    const rotatedIn = await verifier.verify(token, READ_ORDER);
    assert.ok(rotatedIn.ok, `after the interval, the unknown kid refetches and the new key verifies: ${JSON.stringify(rotatedIn)}`);
    assert.equal(jwks.hits.length, before + 1, 'exactly one refetch');
    assert.ok((await verifier.verify(task.token, READ_ORDER)).ok, 'the old key still verifies');
  });

  test('fail closed: no token passes before the first pull, nor when the feed is stale', async () => {
    let feedUp = false;
    const feed = await jsonServer(() => (feedUp ? { now: Date.now(), tasks: [], tokens: [] } : null));
    after(() => feed.close());
    const clock = createManualClock(Date.now());
    // A long poll interval: the timer stays out of the way, the test pulls by hand.
    const verifier = verifierFor({ revocationsUrl: `${feed.url}/v1/revocations`, pollIntervalMs: 60_000, clock });
    const task = await grant();
    await assert.rejects(verifier.sync(), 'the feed is down');
    const before = await verifier.verify(task.token, READ_ORDER);
    assert.equal(before.ok ? 'ok' : before.code, 'ERR_REVOCATIONS_STALE', 'never read: refused');

    feedUp = true;
    await verifier.sync();
    assert.ok((await verifier.verify(task.token, READ_ORDER)).ok, 'read: passes');
    clock.advance(179_999);
    assert.ok((await verifier.verify(task.token, READ_ORDER)).ok, 'within the default bound (3 × poll interval)');
    feedUp = false;
    await assert.rejects(verifier.sync(), 'the feed is down again');
    clock.advance(2);
    const stale = await verifier.verify(task.token, READ_ORDER);
    assert.equal(stale.ok ? 'ok' : stale.code, 'ERR_REVOCATIONS_STALE', 'past the bound: refused');

    // A document that is not a feed does not count as a pull.
    const garbage = await jsonServer(() => ({ now: 'soon', tasks: [] }));
    after(() => garbage.close());
    const misled = verifierFor({ revocationsUrl: `${garbage.url}/v1/revocations` });
    await assert.rejects(misled.sync(), 'a malformed feed is a failed pull');
    const outcome = await misled.verify(task.token, READ_ORDER);
    assert.equal(outcome.ok ? 'ok' : outcome.code, 'ERR_REVOCATIONS_STALE');
  });

  test('options are checked when the verifier is created', () => {
    const base = { issuer: 'https://writ.example', audience: 'writ-enforcement', jwksUrl: 'https://writ.example/.well-known/jwks.json', revocationsUrl: 'https://writ.example/v1/revocations' };
    assert.throws(() => createWritVerifier({ ...base, jwksUrl: 'http://writ.example/.well-known/jwks.json' }), TypeError, 'plain http to a remote host');
    assert.throws(() => createWritVerifier({ ...base, revocationsUrl: 'http://writ.example/v1/revocations' }), TypeError);
    assert.throws(() => createWritVerifier({ ...base, audience: '' }), TypeError);
    assert.throws(() => createWritVerifier({ ...base, revocationsUrl: undefined } as unknown as WritVerifierOptions), TypeError, 'turning pulls off must be said (null)');
    const pushOnly = createWritVerifier({ ...base, revocationsUrl: null });
    pushOnly.close();
  });

  test('the feed: ended tasks and superseded tokens, since a time, and nothing else', async () => {
    const task = await grant();
    const start = (await h.get('/v1/revocations')).body as { now: number };
    await complete(task);
    const all = await h.get('/v1/revocations');
    assert.equal(all.status, 200);
    assert.deepEqual(Object.keys(all.body).sort(), ['narrowed', 'now', 'tasks', 'tokens']);
    assert.ok(all.body.tasks.some((t: { id: string }) => t.id === task.id), 'the ended task is listed');
    const entry = all.body.tasks.find((t: { id: string }) => t.id === task.id);
    assert.deepEqual(Object.keys(entry).sort(), ['expiresAt', 'id'], 'an entry names the task and its expiry, nothing more');
    const since = await h.get(`/v1/revocations?since=${start.now}`);
    assert.ok(since.body.tasks.some((t: { id: string }) => t.id === task.id), 'ended after `since`: listed');
    const old = await h.get('/v1/revocations?since=0');
    assert.ok(old.body.tasks.some((t: { id: string }) => t.id === task.id), 'a `since` long ago is answered with everything in force');
    // Writ reaches back before `since` (feedLookBackMs: another node's clock may lag), and no further.
    const later = await h.get(`/v1/revocations?since=${(since.body.now as number) + 1}`);
    assert.ok(later.body.tasks.some((t: { id: string }) => t.id === task.id), 'ended just before `since`: listed (the look-back)');
    const longAgo = await grant();
    await h.writ.store.transitionTask(longAgo.id, ['active'], 'completed', { at: Date.now() - 5 * 60_000, endReason: 'completed' });
    const recent = await h.get(`/v1/revocations?since=${Date.now()}`);
    assert.ok(!recent.body.tasks.some((t: { id: string }) => t.id === longAgo.id), 'ended minutes before `since`: not listed');
    assert.ok((await h.get('/v1/revocations')).body.tasks.some((t: { id: string }) => t.id === longAgo.id), 'but listed without `since`');
    const bads = ['since=abc', 'since=-1', 'since=1&since=2', 'since=99999999999999999', 'until=1', 'since=', 'since=1e3', 'since=0x10', 'since=%20', 'since=1.5', 'since[]=1', 'since=12345678901234567'];
    for (const bad of bads) {
      const answer = await h.get(`/v1/revocations?${bad}`);
      assert.equal(answer.status, 400, bad);
      assert.match(answer.headers.get('content-type') ?? '', /^application\/problem\+json/, `${bad}: problem+json`);
      assert.equal(answer.body.code, 'ERR_VALIDATION', bad);
    }
  });

  describe('middleware', () => {
    let verifier: WritVerifier;
    before(async () => {
      verifier = verifierFor();
      await verifier.ready();
    });

    test('Fastify: 401 with a Bearer challenge, 403 insufficient_scope, and the handler runs only for a covering token', async () => {
      const app = Fastify();
      const ran: string[] = [];
      app.get<{ Params: { id: string } }>(
        '/orders/:id',
        { preHandler: fastifyWrit(verifier, { action: 'read', resource: (request) => `db:orders/${(request.params as { id: string }).id}` }) },
        async (request) => {
          ran.push(request.params.id);
          return { order: request.params.id, task: verifiedTaskOf(request)?.taskId };
        },
      );
      app.get<{ Params: { id: string } }>('/customers/:id', { preHandler: fastifyWrit(verifier, { action: 'read', resource: (request) => `db:customers/${(request.params as { id: string }).id}` }) }, async (request) => {
        ran.push(`customer ${request.params.id}`);
        return {};
      });
      after(() => app.close());
      const task = await grant();

      const none = await app.inject({ url: '/orders/42' });
      assert.equal(none.statusCode, 401);
      assert.equal(none.headers['www-authenticate'], 'Bearer realm="writ"');
      assert.match(String(none.headers['content-type']), /^application\/problem\+json/);
      assert.equal(none.json().code, 'ERR_UNAUTHENTICATED');

      const forged = await app.inject({ url: '/orders/42', headers: { authorization: `Bearer ${tokenFromUnknownKey(claimsOf(task.token))}` } });
      assert.equal(forged.statusCode, 401);
      assert.equal(forged.headers['www-authenticate'], 'Bearer realm="writ", error="invalid_token"');
      assert.equal(forged.json().code, 'ERR_UNAUTHENTICATED', 'the caller is not told why');

      const outside = await app.inject({ url: '/customers/1', headers: { authorization: `Bearer ${task.token}` } });
      assert.equal(outside.statusCode, 403);
      assert.equal(outside.headers['www-authenticate'], 'Bearer realm="writ", error="insufficient_scope", scope="read:db:customers/1"');
      assert.equal(outside.json().code, 'ERR_SCOPE_NOT_GRANTED');
      assert.deepEqual(ran, [], 'no refused request reached a handler');

      const ok = await app.inject({ url: '/orders/42', headers: { authorization: `Bearer ${task.token}` } });
      assert.equal(ok.statusCode, 200, ok.body);
      assert.deepEqual(ok.json(), { order: '42', task: task.id });
      assert.deepEqual(ran, ['42']);
    });

    test('plain Node: withWrit answers problem+json and runs the handler only for a covering token; a stale feed is a 503', async () => {
      const ran: string[] = [];
      const refusals: string[] = [];
      const serve = (v: WritVerifier) =>
        createHttpServer(
          withWrit(v, { action: 'read', resource: (req) => `db:${(req.url ?? '/').slice(1)}`, onRefusal: (refusal) => refusals.push(refusal.code) }, (req, res, task) => {
            ran.push(req.url ?? '');
            res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ task: task.taskId }));
          }),
        );
      const server = serve(verifier);
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      after(() => new Promise<void>((resolve) => server.close(() => resolve())));
      const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const task = await grant();

      const none = await fetch(`${base}/orders/42`);
      assert.equal(none.status, 401);
      assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="writ"');
      assert.equal(none.headers.get('content-type'), 'application/problem+json');
      const expired = resignTaskToken(h.writ, { ...claimsOf(task.token), exp: Math.floor(Date.now() / 1000) - 600 });
      const refused = await fetch(`${base}/orders/42`, { headers: { authorization: `Bearer ${expired}` } });
      assert.equal(refused.status, 401);
      assert.equal(((await refused.json()) as { code: string }).code, 'ERR_UNAUTHENTICATED');
      const outside = await fetch(`${base}/customers/1`, { headers: { authorization: `Bearer ${task.token}` } });
      assert.equal(outside.status, 403);
      assert.deepEqual(ran, [], 'no refused request reached the handler');
      assert.deepEqual(refusals, ['ERR_TOKEN_EXPIRED', 'ERR_SCOPE_NOT_GRANTED'], 'the precise reasons go to onRefusal');
      const ok = await fetch(`${base}/orders/42`, { headers: { authorization: `Bearer ${task.token}` } });
      assert.equal(ok.status, 200);
      assert.deepEqual(await ok.json(), { task: task.id });

      const staleVerifier = verifierFor({ revocationsUrl: 'http://127.0.0.1:1/v1/revocations', timeoutMs: 500 });
      const staleServer = serve(staleVerifier);
      await new Promise<void>((resolve) => staleServer.listen(0, '127.0.0.1', resolve));
      after(() => new Promise<void>((resolve) => staleServer.close(() => resolve())));
      const stale = await fetch(`http://127.0.0.1:${(staleServer.address() as AddressInfo).port}/orders/42`, { headers: { authorization: `Bearer ${task.token}` } });
      assert.equal(stale.status, 503);
      assert.equal(stale.headers.get('retry-after'), '5');
      assert.equal(((await stale.json()) as { code: string }).code, 'ERR_REVOCATIONS_STALE');
      assert.deepEqual(ran, ['/orders/42'], 'the stale verifier let nothing through');
    });
  });
});

describe('writ/verify and policy drift', () => {
  test('a scope a policy change took from a live grant is refused after the next pull; the scope it keeps still passes', async () => {
    const dir = policyFolder();
    const h = await startHarness({ config: { policy: { dir } } });
    const verifiers = testVerifiers(() => h);
    const verifier = verifiers.create();
    try {
      await h.registerAgent();
      await verifier.ready();
      const answer = await h.post('/v1/tasks', supportTask(), await h.identityToken());
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      const token = answer.body.token as string;
      const read = { action: 'read', resource: 'db:orders/42' };
      const write = { action: 'write', resource: 'tickets:T-1042' };
      assert.ok((await verifier.verify(token, read)).ok, 'read db:orders/42 passes before the change');

      writeFileSync(join(dir, 'freeze.cedar'), '@id("freeze-db-reads")\nforbid (principal, action in Writ::Action::"read", resource) when { resource.kind == "db" };\n');
      const reload = await h.writ.reloadPolicy('test');
      assert.ok(reload.ok && reload.changed, JSON.stringify(reload));
      const feed = await h.get('/v1/revocations');
      assert.deepEqual(
        feed.body.narrowed.map((n: { id: string; scope: string }) => [n.id, n.scope]),
        [[answer.body.task.id, 'write:tickets:T-1042']],
        'the feed names the narrowed task and the scope it keeps',
      );

      await verifier.sync();
      const refused = await verifier.verify(token, read);
      assert.equal(refused.ok ? 'ok' : refused.code, 'ERR_SCOPE_NOT_GRANTED', 'the dropped read is refused although the token still carries it');
      assert.ok((await verifier.verify(token, write)).ok, 'the kept write still passes');
    } finally {
      verifiers.closeAll();
      await h.close();
    }
  });
});

describe('the writ/verify import graph', () => {
  const forbidden = /\/node_modules\/(?:better-sqlite3|pg|pg-pool|kysely|fastify|@cedar-policy)\/|\/src\/(?:store|broker|server|policy)\//;

  /** Every module URL node resolves while importing `entry`, and the CommonJS modules it required. */
  const loadedBy = (entry: string, loaderArgs: string[]): string[] => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-verify-graph-'));
    try {
      const trace = join(dir, 'trace.txt');
      writeFileSync(join(dir, 'hooks.mjs'), `import { appendFileSync } from 'node:fs';\nexport async function resolve(specifier, context, next) { const r = await next(specifier, context); appendFileSync(${JSON.stringify(trace)}, r.url + '\\n'); return r; }\n`);
      writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`);
      writeFileSync(trace, '');
      const script = `import { createRequire } from 'node:module'; const m = await import(${JSON.stringify(pathToFileURL(entry).href)}); if (typeof m.createWritVerifier !== 'function') process.exit(3); process.stdout.write(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)));`;
      const out = execFileSync(process.execPath, [...loaderArgs, '--import', pathToFileURL(join(dir, 'register.mjs')).href, '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
      return [...readFileSync(trace, 'utf8').split('\n').filter(Boolean), ...(JSON.parse(out) as string[])];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  test('importing writ/verify (source) loads no store, database driver, Fastify or Cedar', () => {
    const loaded = loadedBy(join(ROOT, 'src/verify/index.ts'), ['--import', 'tsx']);
    assert.ok(loaded.some((url) => url.includes('/src/verify/verifier.ts')), 'the trace saw the verifier itself');
    const offending = loaded.filter((url) => forbidden.test(url));
    assert.deepEqual(offending, [], 'nothing server-side is loaded');
  });

  test('the built writ/verify (package.json exports) loads no store, database driver, Fastify or Cedar', (t) => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, { default: string; types: string }> };
    assert.deepEqual(pkg.exports['./verify'], { types: './dist/verify/index.d.ts', default: './dist/verify/index.js' });
    const built = join(ROOT, 'dist/verify/index.js');
    if (!existsSync(built)) {
      t.skip('dist/ is not built (npm run build)');
      return;
    }
    const loaded = loadedBy(built, []);
    assert.ok(loaded.some((url) => url.endsWith('/dist/verify/verifier.js')), 'the trace saw the built verifier');
    assert.deepEqual(loaded.filter((url) => forbidden.test(url)), [], 'nothing server-side is loaded');
  });
});
