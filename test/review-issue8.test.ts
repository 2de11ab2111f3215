/**
 * Security review of issue 8 (leases, HTTP proxy, writ/verify). Each test
 * reproduces one finding and FAILS while the weakness is there.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { startHarness, supportTask, type Harness } from './helpers/harness.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { policyFolder } from './helpers/policy-folder.js';

const SECRET = 'shop-key-7f3a9c1e5b2d4f60';
interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** A keep-alive upstream recording every request it parses (method, url, headers, body). */
function startUpstream(): Promise<{ server: Server; port: number; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('latin1') });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, url: req.url }));
    });
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r({ server, port: (server.address() as AddressInfo).port, seen })));
}

/** Writes `text` as is on a fresh TCP connection and collects what comes back for `waitMs`. */
function rawSocket(base: string, text: string, waitMs = 800): Promise<string> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const s = connect(Number(url.port), url.hostname, () => s.write(text));
    let out = '';
    s.on('data', (d) => (out += d.toString('latin1')));
    s.on('error', reject);
    setTimeout(() => {
      s.destroy();
      resolve(out);
    }, waitMs);
  });
}

const chunked = (payload: string): string => `${Buffer.byteLength(payload).toString(16)}\r\n${payload}\r\n0\r\n\r\n`;

describe('review issue 8: HTTP proxy', () => {
  let h: Harness;
  let up: Awaited<ReturnType<typeof startUpstream>>;
  let token: string;
  before(async () => {
    up = await startUpstream();
    h = await startHarness({
      config: {
        proxy: {
          routes: [
            {
              name: 'shop',
              prefix: '/shop',
              upstream: `http://127.0.0.1:${up.port}/api`,
              inject: [{ secret: 'shop-api-key', header: 'X-Api-Key' }],
              paths: [
                { pattern: '/orders/{id}', resource: 'db:orders/{id}' },
                { pattern: '/admin/{thing}', resource: 'db:admin/{thing}' },
                { pattern: '/tickets/{id}', resource: 'tickets:{id}' },
              ],
            },
          ],
        },
      },
    });
    await h.writ.vault.put('shop-api-key', SECRET, { id: 'test' });
    await h.registerAgent();
    // read db:orders/*, write tickets:T-1042: nothing on db:admin/*, no delete anywhere.
    const granted = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    assert.equal(granted.status, 201, 'the support task is granted');
    token = granted.body.token as string;
  });
  after(async () => {
    await h.close();
    await new Promise<void>((r) => up.server.close(() => r()));
  });

  test('HIGH request smuggling: a chunked body on an allowed GET reaches the upstream as a second, undecided request (DELETE /admin)', async () => {
    const smuggled = 'DELETE /api/admin/users HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n';
    await rawSocket(h.url, `GET /proxy/shop/orders/42 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(smuggled)}`);
    const hits = up.seen.filter((s) => s.url.startsWith('/api/admin'));
    assert.ok(hits.length === 0, `the upstream must never be asked for a path the action check did not allow; it served ${JSON.stringify(hits.map((s) => `${s.method} ${s.url}`))}`);
  });

  test("HIGH request smuggling: a smuggled prefix captures the next proxied request, injected secret included, as a body the agent controls", async () => {
    // A write the task does hold, left open for 400 bytes: the next request on the pooled upstream connection becomes its body.
    const prefix = 'POST /api/tickets/T-1042 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 400\r\n\r\n';
    await rawSocket(h.url, `GET /proxy/shop/orders/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(prefix)}`, 300);
    // Any later proxied request (here the same agent's; in production any agent's) reuses the pooled connection.
    for (let i = 0; i < 3; i++) {
      await rawSocket(h.url, `GET /proxy/shop/orders/${100 + i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Length: 0\r\nX-Pad: ${'p'.repeat(300)}\r\n\r\n`, 300);
    }
    const captured = up.seen.filter((s) => s.body.includes(SECRET));
    assert.ok(captured.length === 0, `the injected secret must never land in a request body the agent wrote (it did in ${JSON.stringify(captured.map((s) => `${s.method} ${s.url}`))})`);
  });

  test('MEDIUM method override headers pass through: a GET decided as read reaches the upstream with X-HTTP-Method-Override: DELETE', async () => {
    const before = up.seen.length;
    const answer = await rawSocket(
      h.url,
      `GET /proxy/shop/orders/7 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nX-HTTP-Method-Override: DELETE\r\nX-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
    );
    assert.match(answer, /^HTTP\/1\.1 200/, 'the read of db:orders/7 is allowed');
    const seen = up.seen.slice(before).find((s) => s.url === '/api/orders/7');
    assert.ok(seen !== undefined, 'the upstream got the request');
    const overrides = ['x-http-method-override', 'x-method-override', 'x-http-method'].filter((n) => seen.headers[n] !== undefined);
    assert.ok(overrides.length === 0, `a request decided as "read" must not carry a method override to the upstream (got ${overrides.join(', ')})`);
  });
});

// ---------------------------------------------------------------- leases

const policies = policyFolder({
  'review-leases.cedar': `@id("review-writes-orders")
permit (principal is Writ::Agent, action == Writ::Action::"write", resource)
when { resource.kind == "db" && context.intent == "customer-support" };
`,
});

describe('review issue 8: PostgreSQL leases', () => {
  let shop: TestDatabase | undefined;
  let other: TestDatabase | undefined;
  let h: Harness;

  const admin = async <T>(url: string, work: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return await work(c);
    } finally {
      await c.end();
    }
  };
  const connectAs = async (connection: Record<string, any>, database?: string): Promise<pg.Client> => {
    const c = new pg.Client({ host: connection.host, port: connection.port, database: database ?? connection.database, user: connection.user, password: connection.password });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  const taskAndLease = async (): Promise<{ id: string; token: string; connection: Record<string, any> }> => {
    const answer = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'read', resource: 'db:orders/lines' }] }), await h.identityToken());
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const task = { id: answer.body.task.id as string, token: answer.body.token as string };
    const leased = await h.post(`/v1/tasks/${task.id}/leases`, { provider: 'shop' }, task.token);
    assert.equal(leased.status, 201, JSON.stringify(leased.body));
    return { ...task, connection: leased.body.connection };
  };

  before(async () => {
    shop = await createTestDatabase();
    other = await createTestDatabase();
    if (shop === undefined || other === undefined) return;
    await admin(shop.url, async (c) => {
      await c.query('create schema shop');
      await c.query('create table shop.orders (id int primary key, total int)');
    });
    await admin(other.url, async (c) => c.query('create table secrets_of_other_app (v text)'));
    h = await startHarness({
      config: {
        policy: { dir: policies },
        reaper: { intervalMs: 200 },
        leases: { postgres: [{ name: 'shop', url: shop.url, grants: [{ resource: 'db:orders/lines', schema: 'shop', table: 'orders', read: ['SELECT'] }] }] },
      },
    });
    await h.registerAgent();
  });
  after(async () => {
    if (shop === undefined || other === undefined) return;
    await h.close();
    await shop.drop();
    await other.drop();
  });

  // Not a test: a task role can still connect to the cluster's other databases, because PostgreSQL grants
  // CONNECT and TEMP on every database to PUBLIC and no role can be denied what PUBLIC holds. Only the
  // cluster's operator can take that away; docs/leases.md makes it a deployment requirement.

  test('MEDIUM a lease outlives its task: an object the role creates in another database makes DROP ROLE fail, the role stays behind forever', async (t) => {
    if (other === undefined || shop === undefined) return t.skip('no PostgreSQL');
    const task = await taskAndLease();
    const otherDb = decodeURIComponent(new URL(other.url).pathname.slice(1));
    const c = await connectAs(task.connection, otherDb);
    // Any role may create a large object; DROP OWNED BY on the lease database does not reach this one.
    await c.query('select lo_from_bytea(0, $1::bytea)', [Buffer.from('exfil')]);
    await c.end();
    const completed = await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
    assert.equal(completed.status, 200, JSON.stringify(completed.body));
    let exists = true;
    for (let i = 0; i < 30 && exists; i++) {
      await new Promise((r) => setTimeout(r, 200));
      exists = await admin(shop.url, async (a) => ((await a.query('select 1 from pg_roles where rolname = $1', [task.connection.user])).rowCount ?? 0) > 0);
    }
    // Cleanup so the test databases can be dropped.
    if (exists) await admin(other.url, async (a) => a.query(`reassign owned by ${pg.escapeIdentifier(task.connection.user)} to current_user`));
    assert.ok(!exists, `the role ${task.connection.user} of a completed task must be dropped within a few reaper ticks`);
  });
});
