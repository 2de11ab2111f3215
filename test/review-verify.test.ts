/**
 * Security review of writ/verify and the revocation feed: each test names a
 * property the review found missing, against a real Writ on loopback and real
 * Fastify and node:http servers.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { connect } from 'node:net';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import Fastify, { type FastifyRequest } from 'fastify';
import { createWritVerifier, fastifyWrit, nodeWrit, withWrit, type WritVerifier, type WritVerifierOptions } from '../src/verify/index.js';
import { claimsOf, delegated, resignTaskToken, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';
import { testVerifiers } from './helpers/verifiers.js';

const READ_ORDER = { action: 'read', resource: 'db:orders/42' } as const;

/** One raw HTTP/1.1 exchange, so that a request can carry what fetch never sends (a header twice). */
function rawRequest(port: number, head: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(`${head}\r\n\r\n`));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
    });
  });
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

describe('review: writ/verify', () => {
  let h: Harness;
  const verifiers = testVerifiers(() => h);
  /** A verifier for `h`, closed when the file ends. */
  const verifierFor = verifiers.create;
  const grant = async () => {
    const answer = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return { id: answer.body.task.id as string, token: answer.body.token as string };
  };

  before(async () => {
    // At the wall time (its verifiers check tokens on the wall clock): its two-hop delegation passes at any hour
    // since the delegate step is scored on the delegator's own activity (checked with libfaketime at weekday 22:00
    // and Sunday 03:00 UTC; before, off hours it scored 75, critical, and was refused).
    h = await startHarness({ config: { policy: { dir: policyFolder() } } });
    await h.registerAgent();
  });
  after(async () => {
    verifiers.closeAll();
    await h.close();
  });

  describe('the feed cursor', () => {
    test('an end written by a Writ node whose clock lags 30 s still reaches a verifier that already pulled past it', async () => {
      const verifier = verifierFor();
      await verifier.ready();
      const task = await grant();
      assert.ok((await verifier.verify(task.token, READ_ORDER)).ok, 'passes while the task is active');
      // Another node of the cluster, its clock 30 s behind this one, ends the task in the shared store.
      const ended = await h.writ.store.transitionTask(task.id, ['active'], 'completed', { at: Date.now() - 30_000, endReason: 'completed' });
      assert.ok(ended !== undefined, 'the lagging node ended the task');
      await verifier.sync();
      const outcome = await verifier.verify(task.token, READ_ORDER);
      assert.equal(outcome.ok ? 'ok' : outcome.code, 'ERR_TOKEN_REVOKED', 'the end is delivered although its time is before the last answer\'s now');
    });

    test('a since ahead of Writ\'s clock (an answer from a node whose clock runs ahead) still lists what ended just now', async () => {
      const task = await grant();
      await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
      const ahead = await h.get(`/v1/revocations?since=${Date.now() + 3_600_000}`);
      assert.equal(ahead.status, 200);
      assert.ok(ahead.body.tasks.some((t: { id: string }) => t.id === task.id), 'a since in the future is read as now (less the look-back)');
    });
  });

  describe('middleware', () => {
    let verifier: WritVerifier;
    before(async () => {
      verifier = verifierFor();
      await verifier.ready();
    });

    test('Fastify: an exception in resource() is a generic problem+json 500 that does not carry its message', async () => {
      const app = Fastify();
      let ran = false;
      app.get('/orders/:id', { preHandler: fastifyWrit<FastifyRequest>(verifier, { action: 'read', resource: () => { throw new Error('db password is hunter2'); } }) }, async () => {
        ran = true;
        return {};
      });
      after(() => app.close());
      const task = await grant();
      const answer = await app.inject({ url: '/orders/42', headers: { authorization: `Bearer ${task.token}` } });
      assert.equal(answer.statusCode, 500);
      assert.match(String(answer.headers['content-type']), /^application\/problem\+json/, 'problem+json');
      assert.equal(answer.json().code, 'ERR_INTERNAL');
      assert.ok(!answer.body.includes('hunter2'), `the exception's message never reaches the caller: ${answer.body}`);
      assert.equal(ran, false, 'the handler never ran');
    });

    test('plain Node: a handler that throws synchronously is a 500, and the server keeps serving', async () => {
      const server = createHttpServer(
        withWrit(verifier, { action: 'read', resource: () => 'db:orders/42' }, () => {
          throw new Error('sync failure');
        }),
      );
      const port = await listen(server);
      after(() => new Promise<void>((resolve) => server.close(() => resolve())));
      const task = await grant();
      for (const attempt of [1, 2]) {
        const answer = await fetch(`http://127.0.0.1:${port}/`, { headers: { authorization: `Bearer ${task.token}` }, signal: AbortSignal.timeout(3_000) });
        assert.equal(answer.status, 500, `attempt ${attempt}`);
        assert.equal(((await answer.json()) as { code: string }).code, 'ERR_INTERNAL', `attempt ${attempt}`);
      }
    });

    test('plain Node: a next() that throws is a 500, not an unhandled rejection', async () => {
      const middleware = nodeWrit(verifier, { action: 'read', resource: () => 'db:orders/42' });
      const server = createHttpServer((req, res) =>
        middleware(req, res, () => {
          throw new Error('next failed');
        }),
      );
      const port = await listen(server);
      after(() => new Promise<void>((resolve) => server.close(() => resolve())));
      const task = await grant();
      const answer = await fetch(`http://127.0.0.1:${port}/`, { headers: { authorization: `Bearer ${task.token}` }, signal: AbortSignal.timeout(3_000) });
      assert.equal(answer.status, 500);
    });

    test('two Authorization headers are refused (400 invalid_request), by both adapters, whatever the first one holds', async () => {
      const task = await grant();
      let ran = 0;
      const node = createHttpServer(
        withWrit(verifier, { action: 'read', resource: () => 'db:orders/42' }, (_req, res) => {
          ran++;
          res.end('ok');
        }),
      );
      const nodePort = await listen(node);
      after(() => new Promise<void>((resolve) => node.close(() => resolve())));
      const app = Fastify();
      app.get('/orders/42', { preHandler: fastifyWrit<FastifyRequest>(verifier, { action: 'read', resource: () => 'db:orders/42' }) }, async () => {
        ran++;
        return 'ok';
      });
      await app.listen({ host: '127.0.0.1', port: 0 });
      after(() => app.close());
      const fastifyPort = (app.server.address() as AddressInfo).port;

      for (const [name, port] of [['node', nodePort], ['fastify', fastifyPort]] as const) {
        const twice = await rawRequest(port, `GET /orders/42 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${task.token}\r\nAuthorization: Bearer other`);
        assert.equal(twice.status, 400, `${name}: ${twice.text}`);
        assert.match(twice.text, /www-authenticate: Bearer realm="writ", error="invalid_request"/i, `${name}: the challenge says invalid_request`);
        const once = await rawRequest(port, `GET /orders/42 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer ${task.token}`);
        assert.equal(once.status, 200, `${name}: one header passes: ${once.text}`);
      }
      assert.equal(ran, 2, 'the handlers ran only for the requests with one header');
    });

    test('Bearer followed by more than one space is read (RFC 6750 §2.1: 1*SP), and the scheme is case-insensitive', async () => {
      const app = Fastify();
      app.get('/orders/42', { preHandler: fastifyWrit<FastifyRequest>(verifier, { action: 'read', resource: () => 'db:orders/42' }) }, async () => 'ok');
      after(() => app.close());
      const task = await grant();
      for (const header of [`Bearer  ${task.token}`, `bearer ${task.token}`, `BEARER   ${task.token}`]) {
        const answer = await app.inject({ url: '/orders/42', headers: { authorization: header } });
        assert.equal(answer.statusCode, 200, `${header.slice(0, 12)}…: ${answer.body}`);
      }
      for (const header of [`Bearer\t${task.token}`, `Bearer${task.token}`, ` Bearer ${task.token} x`]) {
        const answer = await app.inject({ url: '/orders/42', headers: { authorization: header } });
        assert.equal(answer.statusCode, 401, `${JSON.stringify(header.slice(0, 12))}… is not Bearer form`);
      }
    });

    test('a realm that could break the WWW-Authenticate header is refused when the guard is made', () => {
      for (const realm of ['a\r\nset-cookie: x=1', 'caf\u00e9\u2603', '']) {
        assert.throws(() => fastifyWrit<FastifyRequest>(verifier, { action: 'read', resource: () => 'db:orders/42', realm }), TypeError, JSON.stringify(realm));
        assert.throws(() => nodeWrit(verifier, { action: 'read', resource: () => 'db:orders/42', realm }), TypeError, JSON.stringify(realm));
      }
    });

    test('keys that cannot be loaded are a 503 with Retry-After (Writ is unreachable), not a 401 that calls a good token bad', async () => {
      const unreachable = verifierFor({ jwksUrl: 'http://127.0.0.1:1/.well-known/jwks.json', timeoutMs: 500 });
      await unreachable.sync();
      const app = Fastify();
      let ran = false;
      app.get('/orders/42', { preHandler: fastifyWrit<FastifyRequest>(unreachable, { action: 'read', resource: () => 'db:orders/42' }) }, async () => {
        ran = true;
        return 'ok';
      });
      after(() => app.close());
      const task = await grant();
      const answer = await app.inject({ url: '/orders/42', headers: { authorization: `Bearer ${task.token}` } });
      assert.equal(answer.statusCode, 503, answer.body);
      assert.equal(answer.headers['retry-after'], '5');
      assert.equal(answer.json().code, 'ERR_KEYS_UNAVAILABLE');
      assert.equal(ran, false, 'the handler never ran');
    });
  });

  describe('what a revocation covers, as Writ\'s own action check sees it', () => {
    const PLANNER = 'spiffe://demo.local/agent/planner';
    const WORKER = 'spiffe://demo.local/agent/worker';
    const HELPER = 'spiffe://demo.local/agent/helper';
    const delegate = (subject: string, to: string, scope: string) => delegated(h, subject, to, scope);
    /** The verifier's answer and Writ's, side by side: 'ok' or the refusal code. */
    const both = async (verifier: WritVerifier, token: string) => {
      const offline = await verifier.verify(token, READ_ORDER);
      const online = await h.writ.authorize(token, READ_ORDER);
      return { offline: offline.ok ? 'ok' : offline.code, online: online.decision === 'allow' ? 'ok' : online.reason };
    };

    before(async () => {
      for (const id of [PLANNER, WORKER, HELPER]) await h.registerAgent(id);
    });

    test('a task, every task delegated from it (two levels down) and a renewed token are refused offline exactly when Writ refuses them', async () => {
      const verifier = verifierFor();
      await verifier.ready();
      const root = await (async () => {
        const answer = await h.post('/v1/tasks', supportTask(), await h.identityToken(PLANNER));
        assert.equal(answer.status, 201, JSON.stringify(answer.body));
        return { id: answer.body.task.id as string, token: answer.body.token as string };
      })();
      const child = await delegate(root.token, WORKER, 'read:db:orders/*');
      const grandchild = await delegate(child.token, HELPER, 'read:db:orders/42');
      for (const token of [root.token, child.token, grandchild.token]) assert.deepEqual(await both(verifier, token), { offline: 'ok', online: 'ok' }, 'all pass while the run is live');

      const renewed = await h.post(`/v1/tasks/${grandchild.id}/renew`, { checkpoint: 'half way' }, grandchild.token);
      assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
      await verifier.sync();
      assert.deepEqual(await both(verifier, grandchild.token), { offline: 'ERR_TOKEN_REVOKED', online: 'ERR_TOKEN_REVOKED' }, 'the token a renewal replaced');
      const current = renewed.body.token as string;
      assert.deepEqual(await both(verifier, current), { offline: 'ok', online: 'ok' }, 'its renewal');

      // Only the root's end is known to this verifier: its descendants are refused by their lineage.
      const lineageOnly = verifierFor();
      await lineageOnly.ready();
      lineageOnly.revoke({ taskId: root.id, expiresAt: claimsOf(root.token).exp * 1000 });
      for (const token of [child.token, current]) assert.equal(await lineageOnly.verify(token, READ_ORDER).then((o) => (o.ok ? 'ok' : o.code)), 'ERR_TOKEN_REVOKED', 'refused by lineage');

      await h.post(`/v1/tasks/${root.id}/complete`, {}, root.token);
      await verifier.sync();
      for (const token of [root.token, child.token, current]) {
        assert.deepEqual(await both(verifier, token), { offline: 'ERR_TOKEN_REVOKED', online: 'ERR_TOKEN_REVOKED' }, 'the run ended');
      }
    });
  });

  describe('hostile headers and confirmation claims', () => {
    test('crit, typ variants, an embedded jwk, RS256/ES256 under Writ\'s kid and cnf methods the verifier does not know are refused; a certificate-bound token is never a bearer token', async () => {
      const verifier = verifierFor();
      await verifier.ready();
      const claims = claimsOf((await grant()).token);
      const kid = h.writ.taskKeys.active.kid;
      const { privateKey: attacker, publicKey: attackerPublic } = generateKeyPairSync('ed25519');
      const { privateKey: rsa } = generateKeyPairSync('rsa', { modulusLength: 2048 });
      const { privateKey: ec } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const signed = (header: Record<string, unknown>, body: Record<string, unknown>, signer: (input: Buffer) => Buffer) => {
        const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(body)).toString('base64url')}`;
        return `${input}.${signer(Buffer.from(input)).toString('base64url')}`;
      };
      const writKey = (input: Buffer) => sign(null, input, h.writ.taskKeys.active.privateKey);
      const cases: [string, string, string][] = [
        ['crit', signed({ alg: 'EdDSA', kid, typ: 'task+jwt', crit: ['exp'], exp: 1 }, claims, writKey), 'ERR_TOKEN_MALFORMED'],
        ['typ JWT', resignTaskToken(h.writ, claims, 'JWT'), 'ERR_TOKEN_MALFORMED'],
        ['typ in upper case', resignTaskToken(h.writ, claims, 'TASK+JWT'), 'ERR_TOKEN_MALFORMED'],
        ['typ as a media type', resignTaskToken(h.writ, claims, 'application/task+jwt'), 'ERR_TOKEN_MALFORMED'],
        ['an embedded jwk of the attacker\'s under Writ\'s kid', signed({ alg: 'EdDSA', kid, typ: 'task+jwt', jwk: attackerPublic.export({ format: 'jwk' }) }, claims, (input) => sign(null, input, attacker)), 'ERR_TOKEN_SIGNATURE'],
        ['RS256 under Writ\'s kid', signed({ alg: 'RS256', kid, typ: 'task+jwt' }, claims, (input) => sign('sha256', input, rsa)), 'ERR_TOKEN_ALGORITHM'],
        ['ES256 under Writ\'s kid', signed({ alg: 'ES256', kid, typ: 'task+jwt' }, claims, (input) => sign('sha256', input, { key: ec, dsaEncoding: 'ieee-p1363' })), 'ERR_TOKEN_ALGORITHM'],
        ['no kid', signed({ alg: 'EdDSA', typ: 'task+jwt' }, claims, writKey), 'ERR_TOKEN_UNKNOWN_KEY'],
        ['DPoP-bound (cnf.jkt)', resignTaskToken(h.writ, { ...claims, cnf: { jkt: 'abc' } }), 'ERR_TOKEN_MALFORMED'],
        ['cnf with two methods', resignTaskToken(h.writ, { ...claims, cnf: { 'x5t#S256': 'abc', jkt: 'abc' } }), 'ERR_TOKEN_MALFORMED'],
        ['certificate-bound, presented as a bearer token', resignTaskToken(h.writ, { ...claims, cnf: { 'x5t#S256': 'abc' } }), 'ERR_TOKEN_BINDING'],
      ];
      for (const [name, token, code] of cases) {
        const outcome = await verifier.verify(token, READ_ORDER);
        assert.equal(outcome.ok ? 'ok' : outcome.code, code, name);
      }
      const bound = resignTaskToken(h.writ, { ...claims, cnf: { 'x5t#S256': 'abc' } });
      assert.equal(await verifier.verify(bound, { ...READ_ORDER, certificateThumbprint: 'abd' }).then((o) => (o.ok ? 'ok' : o.code)), 'ERR_TOKEN_BINDING', 'another certificate');
      assert.ok((await verifier.verify(bound, { ...READ_ORDER, certificateThumbprint: 'abc' })).ok, 'with its certificate, the bound token passes');
    });
  });

  describe('keys and the token cache', () => {
    /** A JWKS on loopback that publishes `published()`, and a signer for key `k1` of it. */
    const ownJwks = async (published: () => boolean) => {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const jwk = { ...(publicKey.export({ format: 'jwk' }) as Record<string, unknown>), kid: 'k1', alg: 'EdDSA', use: 'sig' };
      const server = createHttpServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published() ? [jwk] : [] })));
      const port = await listen(server);
      after(() => new Promise<void>((resolve) => server.close(() => resolve())));
      const signWith = (claims: Record<string, unknown>) => {
        const input = `${Buffer.from(JSON.stringify({ alg: 'EdDSA', kid: 'k1', typ: 'task+jwt' })).toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
        return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
      };
      return { url: `http://127.0.0.1:${port}/jwks.json`, signWith };
    };

    test('a token verified before its key left the JWKS is refused once the keys are refreshed, cached or not', async () => {
      let published = true;
      const jwks = await ownJwks(() => published);
      const verifier = verifierFor({ jwksUrl: jwks.url, jwksMinRefreshIntervalMs: 0 });
      await verifier.ready();
      const token = jwks.signWith(claimsOf((await grant()).token));
      assert.ok((await verifier.verify(token, READ_ORDER)).ok, 'passes while k1 is published (and is now cached)');
      // The key is withdrawn (rotated out after a compromise): the next refresh drops it.
      published = false;
      await verifier.ready();
      const outcome = await verifier.verify(token, READ_ORDER);
      assert.equal(outcome.ok ? 'ok' : outcome.code, 'ERR_TOKEN_UNKNOWN_KEY', 'the cached verdict does not outlive the key');
    });

    test('a token that claims to live longer than Writ ever mints (exp - iat over 24 h) is refused', async () => {
      const claims = claimsOf((await grant()).token);
      const now = Math.floor(Date.now() / 1000);
      const verifier = verifierFor();
      await verifier.ready();
      const forever = resignTaskToken(h.writ, { ...claims, iat: now, nbf: now, exp: now + 2 * 86_400 });
      const outcome = await verifier.verify(forever, READ_ORDER);
      assert.equal(outcome.ok ? 'ok' : outcome.code, 'ERR_TOKEN_MALFORMED', 'tokens.maxTtl is at most 24 h: a longer token was not minted by Writ as configured');
      const day = resignTaskToken(h.writ, { ...claims, iat: now, nbf: now, exp: now + 86_400 });
      assert.ok((await verifier.verify(day, READ_ORDER)).ok, 'exactly 24 h is within the bound');
    });
  });

  describe('what the verifier tells the resource server', () => {
    test('a break-glass grant is marked on the verified task, so the resource server can log its use loudly', async () => {
      const verifier = verifierFor();
      await verifier.ready();
      const task = await grant();
      const claims = claimsOf(task.token);
      const normal = await verifier.verify(task.token, READ_ORDER);
      assert.ok(normal.ok, 'a normal grant passes');
      assert.equal(normal.breakGlass, false, 'a normal grant is not marked');
      const emergency = resignTaskToken(h.writ, { ...claims, task: { ...claims.task, breakGlass: true } });
      const outcome = await verifier.verify(emergency, READ_ORDER);
      assert.ok(outcome.ok, `a break-glass token passes: ${JSON.stringify(outcome)}`);
      assert.equal(outcome.breakGlass, true, 'and says so');
    });
  });
});
