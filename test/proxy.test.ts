/**
 * The HTTP proxy enforcement point against a real upstream HTTP server on
 * loopback: what the upstream sees (the injected credential, never the
 * agent's token, no hop-by-hop headers), what is refused before it is ever
 * called, and bodies streaming both ways.
 */
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { stringify as toYaml } from 'yaml';
import { createManualClock } from '../src/core/clock.js';
import { loadConfig } from '../src/core/config.js';
import { verifyAuditChain } from '../src/audit/log.js';
import { createHttpProxy } from '../src/gateway/http/proxy.js';
import { agentResponseHeaders, upstreamRequestHeaders } from '../src/gateway/http/hop-headers.js';
import { decodeSegments } from '../src/gateway/http/route-table.js';
import { createProxyServer } from '../src/gateway/http/server.js';
import { refreshTlsMaterial } from '../src/server/app.js';
import { AGENT, claimsOf, resignTaskToken, startHarness, supportTask, tokenFromUnknownKey, type Harness } from './helpers/harness.js';
import { startWrit } from './helpers/cli.js';
import { createCa, issueServerCert, writeMtlsFiles } from './helpers/pki.js';

const SECRET = 'shop-key-7f3a9c1e5b2d4f60';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly bodyBytes: number;
  readonly bodyDigest: string;
}

/** A real upstream: records every request it gets; a few paths behave specially. */
function startUpstream(): Promise<{ server: Server; port: number; seen: Seen[]; releaseStream: () => void; streamStarted: Promise<void> }> {
  const seen: Seen[] = [];
  let releaseStream!: () => void;
  const streamGate = new Promise<void>((resolveGate) => (releaseStream = resolveGate));
  let markStarted!: () => void;
  const streamStarted = new Promise<void>((resolveStarted) => (markStarted = resolveStarted));
  const server = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyBytes: bytes, bodyDigest: hash.digest('hex') });
      if (req.url === '/api/orders/stream') {
        // First chunk now; the last only once the test has read the first through the proxy.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first-chunk;');
        markStarted();
        void streamGate.then(() => res.end('last-chunk'));
        return;
      }
      if (req.url === '/api/orders/hop') {
        res.writeHead(200, { connection: 'x-up-hop', 'x-up-hop': 'secret-hop', 'keep-alive': 'timeout=99', 'proxy-authenticate': 'Basic realm="up"', 'x-kept': 'yes', 'content-type': 'application/json' });
        res.end('{}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'shop' });
      res.end(JSON.stringify({ method: req.method, url: req.url, bytes, digest: seen.at(-1)?.bodyDigest }));
    });
  });
  return new Promise((resolveUp) => server.listen(0, '127.0.0.1', () => resolveUp({ server, port: (server.address() as AddressInfo).port, seen, releaseStream, streamStarted })));
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createHttpServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

interface RawAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly text: string;
}

/** A request with the path exactly as given (fetch would normalize `..` and `%2e%2e` away). */
function raw(base: string, method: string, path: string, headers: OutgoingHttpHeaders = {}, body?: Buffer): Promise<RawAnswer> {
  const url = new URL(base);
  return new Promise((resolveAnswer, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolveAnswer({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined && req.getHeader('content-length') === undefined) req.setHeader('content-length', body.length);
    req.end(body);
  });
}

const json = (answer: RawAnswer): any => JSON.parse(answer.text);

describe('HTTP proxy enforcement point', () => {
  let h: Harness;
  let up: Awaited<ReturnType<typeof startUpstream>>;
  let token: string;
  let taskId: string;

  const routesFor = (upPort: number, downPort: number) => [
    {
      name: 'shop',
      prefix: '/shop',
      upstream: `http://127.0.0.1:${upPort}/api`,
      inject: [{ secret: 'shop-api-key', header: 'Authorization', prefix: 'Bearer ' }],
      paths: [
        { pattern: '/orders', resource: 'db:orders/*' },
        { pattern: '/orders/{id}', resource: 'db:orders/{id}' },
        { pattern: '/tickets/{id}', resource: 'tickets:{id}' },
        { pattern: '/admin/{thing}', resource: 'db:admin/{thing}' },
      ],
    },
    { name: 'down', prefix: '/down', upstream: `http://127.0.0.1:${downPort}/api`, paths: [{ pattern: '/orders/{id}', resource: 'db:orders/{id}' }] },
  ];

  before(async () => {
    up = await startUpstream();
    h = await startHarness({ config: { proxy: { routes: routesFor(up.port, await closedPort()) } } });
    await h.writ.vault.put('shop-api-key', SECRET, { id: 'test' });
    await h.registerAgent();
    const granted = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    assert.equal(granted.status, 201, 'the support task is granted');
    token = granted.body.token as string;
    taskId = granted.body.task.id as string;
  });
  after(async () => {
    up.releaseStream();
    await h.close();
    await new Promise<void>((r) => up.server.close(() => r()));
  });

  const auth = () => ({ authorization: `Bearer ${token}` });

  test('an allowed request reaches the upstream with the injected credential and never the task token', async () => {
    const before = up.seen.length;
    const answer = await raw(h.url, 'GET', '/proxy/shop/orders/42?expand=items', { ...auth(), 'x-request-note': 'hi' });
    assert.equal(answer.status, 200, answer.text);
    assert.equal(answer.headers['x-upstream'], 'shop', "the upstream's own headers come back");
    assert.equal(up.seen.length, before + 1, 'the upstream was called once');
    const seen = up.seen.at(-1) as Seen;
    assert.equal(seen.url, '/api/orders/42?expand=items', 'the path under the route is appended to the upstream base, query as sent');
    assert.equal(seen.headers.authorization, `Bearer ${SECRET}`, 'the upstream sees the injected credential');
    assert.ok(!JSON.stringify(seen.headers).includes(token), "the agent's task token never reaches the upstream");
    assert.ok(!JSON.stringify(seen.headers).includes(token.split('.')[2] as string), "not even the token's signature");
    assert.equal(seen.headers['x-request-note'], 'hi', 'end-to-end headers pass');
    assert.equal(seen.headers.host, `127.0.0.1:${up.port}`, 'Host is the upstream');
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1', 'X-Forwarded-For is the agent address');
    assert.equal(seen.headers['x-forwarded-proto'], 'http', 'X-Forwarded-Proto is added');
  });

  test('the agent cannot choose the forwarding headers nor override the injected one', async () => {
    await raw(h.url, 'GET', '/proxy/shop/orders/42', { ...auth(), 'x-forwarded-for': '10.9.9.9', forwarded: 'for=10.9.9.9' });
    const seen = up.seen.at(-1) as Seen;
    assert.equal(seen.headers['x-forwarded-for'], '127.0.0.1', 'the agent-sent X-Forwarded-For is replaced');
    assert.equal(seen.headers.forwarded, undefined, 'the agent-sent Forwarded is dropped');
  });

  test('every proxied request is decided and audited by the action check; the secret is in no audit record', async () => {
    await raw(h.url, 'GET', '/proxy/shop/orders/77', auth());
    await raw(h.url, 'DELETE', '/proxy/shop/orders/77', auth());
    const records = await h.auditRecords();
    const checks = records.filter((r) => r.type === 'action.check' && (r.task as { id: string } | undefined)?.id === taskId);
    assert.ok(checks.some((r) => r.decision === 'allow' && r.action === 'read' && r.resource === 'db:orders/77'), 'the allowed GET is an allow record for read db:orders/77');
    assert.ok(checks.some((r) => r.decision === 'deny' && r.action === 'delete' && r.resource === 'db:orders/77'), 'the DELETE is a deny record for delete db:orders/77');
    assert.ok(!JSON.stringify(records).includes(SECRET), 'no audit record carries the secret');
  });

  test('an encoded but plain segment is decided and forwarded in its canonical form', async () => {
    const answer = await raw(h.url, 'GET', '/proxy/shop/orders/%34%32', auth());
    assert.equal(answer.status, 200, answer.text);
    assert.equal(up.seen.at(-1)?.url, '/api/orders/42', 'the upstream is asked for exactly the decided path');
  });

  test('out-of-scope paths and methods are refused and never reach the upstream', async () => {
    const before = up.seen.length;
    const cases: [string, string, number, string][] = [
      ['POST', '/proxy/shop/orders/42', 403, 'ERR_SCOPE_NOT_GRANTED'], // write db:orders/42: not granted
      ['DELETE', '/proxy/shop/orders/42', 403, 'ERR_SCOPE_NOT_GRANTED'],
      ['GET', '/proxy/shop/admin/users', 403, 'ERR_SCOPE_NOT_GRANTED'], // read db:admin/users
      ['POST', '/proxy/shop/tickets/T-9', 403, 'ERR_SCOPE_NOT_GRANTED'], // write tickets:T-9 (only T-1042 is granted)
      ['OPTIONS', '/proxy/shop/orders/42', 403, 'ERR_FORBIDDEN'], // a method no action is mapped to
    ];
    for (const [method, path, status, code] of cases) {
      const answer = await raw(h.url, method, path, { ...auth(), 'content-type': 'application/json' }, Buffer.from('{}'));
      assert.equal(answer.status, status, `${method} ${path}: ${answer.text}`);
      assert.equal(answer.headers['content-type'], 'application/problem+json', `${method} ${path} is problem+json`);
      assert.equal(json(answer).code, code, `${method} ${path}`);
    }
    assert.equal(up.seen.length, before, 'the upstream was never called');
  });

  test('a write the task holds goes through, with its body', async () => {
    const body = Buffer.from(JSON.stringify({ status: 'solved' }));
    const answer = await raw(h.url, 'POST', '/proxy/shop/tickets/T-1042', { ...auth(), 'content-type': 'application/json', 'content-length': String(body.length) }, body);
    assert.equal(answer.status, 200, answer.text);
    assert.equal(up.seen.at(-1)?.bodyDigest, createHash('sha256').update(body).digest('hex'), 'the upstream got the body as sent');
  });

  test('a path matching no route or pattern is refused', async () => {
    const before = up.seen.length;
    for (const path of ['/proxy/shopping/orders/42', '/proxy/shop/nothing/here', '/proxy/shop', '/proxy/shop/orders/42/items', '/proxy', '/proxy/nowhere']) {
      const answer = await raw(h.url, 'GET', path, auth());
      assert.equal(answer.status, 404, `${path}: ${answer.text}`);
      assert.equal(json(answer).code, 'ERR_NOT_FOUND', path);
    }
    assert.equal(up.seen.length, before, 'the upstream was never called');
  });

  test('path traversal and encoded-slash tricks never reach a resource the pattern did not match', async () => {
    const before = up.seen.length;
    const tricks = [
      '/proxy/shop/orders/..%2fadmin',
      '/proxy/shop/orders/..%2Fadmin%2Fusers',
      '/proxy/shop/orders/42%2f..%2f..%2fadmin',
      '/proxy/shop/orders/%2e%2e/admin/users',
      '/proxy/shop/orders/%2E%2E',
      '/proxy/shop/orders/../admin/users',
      '/proxy/shop/orders/./42',
      '/proxy/shop/../shop/admin/users',
      '/proxy/shop//orders/42',
      '/proxy//shop/orders/42',
      '/proxy/shop/orders/42%5c..%5cadmin',
      '/proxy/shop/orders/4%002',
      '/proxy/shop/orders/%zz',
      '/proxy/shop/orders/%2e',
    ];
    for (const path of tricks) {
      const answer = await raw(h.url, 'GET', path, auth());
      assert.ok(answer.status === 400 || answer.status === 404, `${path} is refused (got ${answer.status})`);
      // Bad percent-encoding is refused by Fastify's router before the proxy sees it (its own 400).
      if (path !== '/proxy/shop/orders/%zz') assert.equal(answer.headers['content-type'], 'application/problem+json', `${path} is problem+json`);
    }
    assert.equal(up.seen.length, before, 'no trick reached the upstream');
    assert.equal(decodeSegments('/a/..%2fb').ok, false, 'the pure reader refuses an encoded slash');
  });

  test('a missing, malformed, forged, expired or non-task token is one uniform 401 with a challenge', async () => {
    const before = up.seen.length;
    const claims = claimsOf(token);
    const now = Math.floor(Date.now() / 1000);
    const bad: [string, OutgoingHttpHeaders][] = [
      ['missing', {}],
      ['not bearer', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
      ['forged', { authorization: `Bearer ${tokenFromUnknownKey(claims)}` }],
      ['expired', { authorization: `Bearer ${resignTaskToken(h.writ, { ...claims, iat: now - 900, nbf: now - 900, exp: now - 600 })}` }],
      ['identity token', { authorization: `Bearer ${await h.identityToken()}` }],
      ['garbage', { authorization: 'Bearer not-a-token' }],
    ];
    for (const [name, headers] of bad) {
      const answer = await raw(h.url, 'GET', '/proxy/shop/orders/42', headers);
      assert.equal(answer.status, 401, `${name}: ${answer.text}`);
      assert.equal(json(answer).code, 'ERR_UNAUTHENTICATED', name);
      assert.ok(String(answer.headers['www-authenticate']).startsWith('Bearer'), `${name} carries a Bearer challenge`);
    }
    assert.equal(up.seen.length, before, 'the upstream was never called');
  });

  test('without a live task token the route table cannot be mapped: an unrouted path is the same 401 as a routed one', async () => {
    const claims = claimsOf(token);
    const credentials: [string, OutgoingHttpHeaders][] = [
      ['garbage', { authorization: 'Bearer not-a-token' }],
      ['forged', { authorization: `Bearer ${tokenFromUnknownKey(claims)}` }],
      ['identity token', { authorization: `Bearer ${await h.identityToken()}` }],
    ];
    const probes: [string, string][] = [['GET', '/proxy/shop/orders/42'], ['GET', '/proxy/nowhere'], ['GET', '/proxy/shop/nothing/here'], ['OPTIONS', '/proxy/shop/orders/42'], ['GET', '/proxy/shop/orders/%2e%2e/admin']];
    for (const [name, headers] of credentials) {
      const answers = await Promise.all(probes.map(([method, path]) => raw(h.url, method, path, headers)));
      assert.deepEqual(answers.map((a) => [a.status, json(a).code, a.headers['www-authenticate']]), probes.map(() => [401, 'ERR_UNAUTHENTICATED', 'Bearer realm="writ-proxy", error="invalid_token"']), name);
    }
  });

  test('a task token learns why an unrouted request is refused, and the refusal is on the chain with its task', async () => {
    const path = "/proxy/shop/nothing/here'; DROP TABLE audit_records; --";
    const answer = await raw(h.url, 'GET', path.replace(/ /g, '%20'), auth());
    assert.equal(answer.status, 404, answer.text);
    assert.equal(json(answer).code, 'ERR_NOT_FOUND');
    const records = (await h.auditRecords()).filter((r) => r.type === 'action.check' && r.reason === 'ERR_NOT_FOUND');
    const record = records.at(-1) as any;
    assert.ok(record !== undefined, 'the refusal is audited');
    assert.equal(record.decision, 'deny');
    assert.equal(record.task.id, taskId);
    assert.equal(record.actor.id, AGENT);
    assert.equal(record.data.path, path.replace(/ /g, '%20'), 'the path as asked, as data');
    assert.equal((await verifyAuditChain(h.writ.store)).ok, true, 'the chain holds');
  });

  test('writ proxy serves the routes alone, on the same mount: a request decided and forwarded, no REST API beside it', async () => {
    const proxy = await startWrit(['proxy', '--config', join(h.dataDir, 'writ.yaml'), '--data-dir', h.dataDir, '--port', '0']);
    const url = proxy.url;
    try {
      const before = up.seen.length;
      const answer = await raw(url, 'GET', '/proxy/shop/orders/42', auth());
      assert.equal(answer.status, 200, answer.text);
      assert.equal(up.seen.length, before + 1, 'the upstream was called once');
      assert.equal(up.seen.at(-1)?.headers.authorization, `Bearer ${SECRET}`, 'with the injected secret');
      assert.equal((await raw(url, 'GET', '/proxy/shop/orders/42', { authorization: 'Bearer not-a-token' })).status, 401);
      assert.equal((await raw(url, 'GET', '/healthz', {})).status, 200);
      assert.equal((await raw(url, 'GET', '/v1/identities', auth())).status, 404, 'the REST API is not served');
    } finally {
      await proxy.stop();
    }
  });

  test('a streamed answer reaches the agent chunk by chunk, not buffered whole', async () => {
    const url = new URL(h.url);
    const firstChunk = await new Promise<{ first: string; rest: Promise<string> }>((resolveFirst, reject) => {
      const req = httpRequest({ host: url.hostname, port: url.port, path: '/proxy/shop/orders/stream', headers: auth() }, (res) => {
        assert.equal(res.statusCode, 200, 'the stream is allowed');
        res.setEncoding('utf8');
        let text = '';
        res.once('data', (chunk: string) => {
          text += chunk;
          const rest = new Promise<string>((resolveRest) => {
            res.on('data', (more: string) => (text += more));
            res.on('end', () => resolveRest(text));
          });
          resolveFirst({ first: chunk, rest });
        });
      });
      req.on('error', reject);
      req.end();
    });
    // The upstream has not sent its last chunk: it waits for this release.
    assert.equal(firstChunk.first, 'first-chunk;', 'the first chunk arrived before the upstream sent the last');
    up.releaseStream();
    assert.equal(await firstChunk.rest, 'first-chunk;last-chunk', 'the rest follows');
  });

  test('a large request body streams through (far above server.bodyLimit, never parsed)', async () => {
    const body = Buffer.alloc(8 * 1024 * 1024, 'x');
    const answer = await raw(h.url, 'PUT', '/proxy/shop/tickets/T-1042', { ...auth(), 'content-type': 'application/octet-stream', 'content-length': String(body.length) }, body);
    assert.equal(answer.status, 200, answer.text);
    const seen = up.seen.at(-1) as Seen;
    assert.equal(seen.bodyBytes, body.length, 'every byte arrived');
    assert.equal(seen.bodyDigest, createHash('sha256').update(body).digest('hex'), 'unchanged');
  });

  test('hop-by-hop headers are removed both ways', async () => {
    const answer = await raw(h.url, 'GET', '/proxy/shop/orders/hop', { ...auth(), connection: 'keep-alive, x-agent-hop', 'x-agent-hop': 'secret', te: 'trailers', 'keep-alive': 'timeout=77', 'proxy-authorization': 'Basic eDp5' });
    assert.equal(answer.status, 200, answer.text);
    const seen = up.seen.at(-1) as Seen;
    assert.equal(seen.headers['x-agent-hop'], undefined, 'a header the agent named in Connection stops at the proxy');
    assert.equal(seen.headers.te, undefined, 'TE stops at the proxy');
    assert.equal(seen.headers['proxy-authorization'], undefined, 'Proxy-Authorization stops at the proxy');
    assert.notEqual(seen.headers['keep-alive'], 'timeout=77', "the agent's Keep-Alive stops at the proxy");
    assert.equal(answer.headers['x-up-hop'], undefined, 'a header the upstream named in Connection stops at the proxy');
    assert.equal(answer.headers['proxy-authenticate'], undefined, 'Proxy-Authenticate stops at the proxy');
    assert.notEqual(answer.headers['keep-alive'], 'timeout=99', "the upstream's Keep-Alive stops at the proxy");
    assert.equal(answer.headers['x-kept'], 'yes', 'end-to-end response headers pass');
    // The rest of the hop-by-hop set, on the pure functions (Upgrade would switch protocols on a live socket).
    const out = upstreamRequestHeaders({ upgrade: 'websocket', trailer: 'x', 'transfer-encoding': 'chunked', 'proxy-connection': 'keep-alive', expect: '100-continue', host: 'agent.example', 'x-end': '1' }, new Set());
    assert.deepEqual(Object.keys(out), ['x-end'], 'only end-to-end headers go upstream');
    assert.deepEqual(Object.keys(agentResponseHeaders({ upgrade: 'h2c', trailer: 'x', 'transfer-encoding': 'chunked', 'x-end': '1' })), ['x-end'], 'only end-to-end headers come back');
  });

  test('an upstream that is down is 502 ERR_UPSTREAM_UNAVAILABLE', async () => {
    const answer = await raw(h.url, 'GET', '/proxy/down/orders/42', auth());
    assert.equal(answer.status, 502, answer.text);
    assert.equal(json(answer).code, 'ERR_UPSTREAM_UNAVAILABLE');
  });

  test('the secret is in no log line, at any level, of allowed, refused and failed requests', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    });
    const proxy = createHttpProxy({ writ: h.writ, logger: pino({ level: 'trace' }, sink) });
    const server = createHttpServer((req, res) => void proxy.handle(req, res));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      assert.equal((await raw(base, 'GET', '/proxy/shop/orders/42', auth())).status, 200, 'allowed on a plain node:http server too');
      assert.equal((await raw(base, 'GET', '/proxy/down/orders/42', auth())).status, 502, 'upstream down');
      assert.equal((await raw(base, 'GET', '/proxy/shop/orders/..%2fadmin', auth())).status, 400, 'traversal');
      assert.equal((await raw(base, 'POST', '/proxy/shop/orders/42', auth())).status, 403, 'out of scope');
    } finally {
      proxy.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
    assert.ok(lines.length > 0, 'the proxy logged something to check');
    assert.ok(!lines.join('').includes(SECRET), 'no log line carries the secret');
    assert.ok(!lines.join('').includes(token), 'no log line carries the task token');
  });

  test('a task that ended is refused at once: its token no longer passes', async () => {
    const granted = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    const other = granted.body.token as string;
    assert.equal((await raw(h.url, 'GET', '/proxy/shop/orders/42', { authorization: `Bearer ${other}` })).status, 200, 'allowed while the task runs');
    assert.equal((await h.post(`/v1/tasks/${granted.body.task.id}/revoke`, { note: 'done with it' }, await h.identityToken())).status, 200, 'revoked');
    const before = up.seen.length;
    const answer = await raw(h.url, 'GET', '/proxy/shop/orders/42', { authorization: `Bearer ${other}` });
    assert.equal(answer.status, 401, answer.text);
    assert.equal(up.seen.length, before, 'the upstream was not called');
    const records = await h.auditRecords();
    assert.ok(records.some((r) => r.type === 'action.check' && r.decision === 'deny' && r.reason === 'ERR_TOKEN_REVOKED'), 'the precise reason is in the audit log');
  });
});

describe('proxy configuration', () => {
  const load = (proxy: unknown) => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-proxy-config-'));
    try {
      writeFileSync(join(dir, 'writ.yaml'), toYaml({ proxy }));
      return loadConfig({ configFile: join(dir, 'writ.yaml'), env: {} });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  const route = (overrides: Record<string, unknown> = {}) => ({ name: 'shop', prefix: '/shop', upstream: 'https://shop.example/api', paths: [{ pattern: '/orders/{id}', resource: 'db:orders/{id}' }], ...overrides });
  const refused = (proxy: unknown) => {
    try {
      load(proxy);
    } catch (error) {
      return (error as { code?: string }).code;
    }
    return 'accepted';
  };

  test('the defaults: mounted at /proxy, no routes', () => {
    const config = load(undefined);
    assert.equal(config.proxy.mount, '/proxy');
    assert.deepEqual(config.proxy.routes, []);
    assert.equal(config.proxy.timeout, 30);
  });

  test('a well-formed route loads, frozen', () => {
    const config = load({ routes: [route({ inject: [{ secret: 'shop-api-key', header: 'Authorization', prefix: 'Bearer ' }], methods: { DELETE: false } })] });
    assert.equal(config.proxy.routes[0]?.inject[0]?.prefix, 'Bearer ');
    assert.ok(Object.isFrozen(config.proxy.routes[0]), 'configuration is frozen after loading');
  });

  test('routes that could leak or mis-decide are refused at start', () => {
    const cases: [string, unknown][] = [
      ['plain http beyond loopback', { routes: [route({ upstream: 'http://shop.example/api' })] }],
      ['credentials in the upstream URL', { routes: [route({ upstream: 'https://user:pw@shop.example/api' })] }],
      ['a resource placeholder the pattern lacks', { routes: [route({ paths: [{ pattern: '/orders/{id}', resource: 'db:orders/{other}' }] })] }],
      ['two routes with one prefix', { routes: [route(), route({ name: 'again' })] }],
      ['a prefix with a dot segment', { routes: [route({ prefix: '/shop/..' })] }],
      ['no paths', { routes: [route({ paths: [] })] }],
      ['an injected secret with an env target', { routes: [route({ inject: [{ secret: 'k', env: 'K' }] })] }],
    ];
    for (const [name, proxy] of cases) assert.equal(refused(proxy), 'ERR_CONFIG_INVALID', name);
  });
});

describe('HTTP proxy over mTLS', () => {
  for (const mode of ['optional', 'required'] as const) test(`a certificate-bound task token passes the proxy only with its certificate (clientCertificates: ${mode})`, async () => {
    const agent = 'spiffe://prod.example/agent/support';
    const clock = createManualClock();
    const files = await writeMtlsFiles(clock.now(), agent);
    const { serverCa, svid } = files;
    const up = await startUpstream();
    const h = await startHarness({
      clock,
      config: {
        ...files.config(mode),
        proxy: { routes: [{ name: 'shop', prefix: '/shop', upstream: `http://127.0.0.1:${up.port}/api`, paths: [{ pattern: '/orders/{id}', resource: 'db:orders/{id}' }] }] },
      },
    });
    try {
      await h.registerAgent(agent);
      const port = (h.app.server.address() as AddressInfo).port;
      const call = (method: string, path: string, o: { bearer?: string; cert: boolean; body?: unknown }) => files.request(port, method, path, o);
      const granted = await call('POST', '/v1/tasks', { cert: true, body: supportTask() });
      assert.equal(granted.status, 201, granted.text);
      const bound = JSON.parse(granted.text).token as string;
      assert.ok(typeof claimsOf(bound).cnf?.['x5t#S256'] === 'string', 'the task token is bound to the certificate');
      const withCert = await call('GET', '/proxy/shop/orders/42', { bearer: bound, cert: true });
      assert.equal(withCert.status, 200, withCert.text);
      assert.equal(up.seen.at(-1)?.headers['x-forwarded-proto'], 'https', 'X-Forwarded-Proto says https');
      const before = up.seen.length;
      const without = await call('GET', '/proxy/shop/orders/42', { bearer: bound, cert: false });
      assert.equal(without.status, 401, without.text);
      assert.equal(up.seen.length, before, 'the copied token without its certificate never reached the upstream');
      const records = await h.auditRecords();
      const reason = mode === 'required' ? 'ERR_CERT_INVALID' : 'ERR_TOKEN_BINDING';
      assert.ok(records.some((r) => r.decision === 'deny' && r.reason === reason), `the refusal is on the record (${reason})`);
    } finally {
      up.releaseStream();
      await h.close();
      await new Promise<void>((r) => up.server.close(() => r()));
      files.remove();
    }
  });
});

describe('writ proxy over TLS', () => {
  test('a rotated server certificate is served to new connections without a restart, as on writ serve', async () => {
    const clock = createManualClock();
    const validity = { notBefore: new Date(clock.now() - 86_400_000), notAfter: new Date(clock.now() + 86_400_000) };
    const serverCa = await createCa({ name: 'srv', ...validity });
    const first = await issueServerCert(serverCa, ['127.0.0.1']);
    const dir = mkdtempSync(join(tmpdir(), 'writ-proxy-tls-'));
    writeFileSync(join(dir, 'server.crt'), first.chainPem);
    writeFileSync(join(dir, 'server.key'), first.keyPem);
    const h = await startHarness({ clock, config: { server: { tls: { certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key') } } } });
    const proxy = createProxyServer(h.writ, { logger: pino({ level: 'silent' }) });
    try {
      await proxy.listen({ port: 0, host: '127.0.0.1' });
      const port = (proxy.server.address() as AddressInfo).port;
      const served = () =>
        new Promise<string>((resolve, reject) => {
          const socket = tlsConnect({ host: '127.0.0.1', port, ca: serverCa.certPem }, () => {
            resolve(socket.getPeerCertificate().fingerprint256);
            socket.end();
          });
          socket.on('error', reject);
        });
      const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;
      assert.equal(await served(), fingerprint(first.certPem));
      assert.equal(refreshTlsMaterial(proxy), false, 'nothing changed yet');
      const renewed = await issueServerCert(serverCa, ['127.0.0.1']);
      writeFileSync(join(dir, 'server.crt'), renewed.chainPem);
      writeFileSync(join(dir, 'server.key'), renewed.keyPem);
      assert.equal(refreshTlsMaterial(proxy), true, 'the proxy listener took the new certificate');
      assert.equal(await served(), fingerprint(renewed.certPem), 'new connections get the renewed certificate');
    } finally {
      await proxy.close();
      await h.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
