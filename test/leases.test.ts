/**
 * PostgreSQL leases against the real local PostgreSQL: a role per task that
 * can do exactly what its scopes map to, dropped (sessions cut) when the task
 * ends, revoked idempotently, and no input reaching SQL unquoted.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { loadConfig } from '../src/core/config.js';
import { isWritError } from '../src/core/errors.js';
import { createPgLeaseProvider, generateRoleName, planPgGrants } from '../src/leases/postgres.js';
import { openPostgresStore, openSqliteStore } from '../src/store/kysely-store.js';
import type { Store } from '../src/store/store.js';
import { tempDirs } from './helpers/cli.js';
import { AGENT, delegated, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { policyFolder } from './helpers/policy-folder.js';

const WEIRD_TABLE = 'we"ird\'; DROP TABLE shop.orders; --';

// Support agents may also write order lines here (the example set lets them read db:* only).
const policies = policyFolder({
  'leases-test.cedar': `@id("test-writes-orders")
permit (principal is Writ::Agent, action == Writ::Action::"write", resource)
when { resource.kind == "db" && context.intent == "customer-support" };
`,
});

const tempDir = tempDirs('writ-leases-config-');
let shop: TestDatabase | undefined;
let h: Harness;

const grants = [
  { resource: 'db:orders/lines', schema: 'shop', table: 'orders', read: ['SELECT'], write: ['INSERT', 'UPDATE'] },
  { resource: 'db:customers/list', schema: 'shop', table: 'customers', read: ['SELECT'] },
  { resource: 'db:orders/weird', schema: 'shop', table: WEIRD_TABLE, read: ['SELECT'] },
  { resource: 'db:orders/archive/*', schema: 'archive', read: ['SELECT'] },
  { resource: 'db:orders/notes', schema: 'shop', table: 'notes', write: ['INSERT'] },
];

async function admin<T>(work: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: shop!.url });
  await client.connect();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

async function roleExists(role: string): Promise<boolean> {
  return admin(async (c) => ((await c.query('select 1 from pg_roles where rolname = $1', [role])).rowCount ?? 0) > 0);
}

/** A client connected as the lease's role, with the password it was handed. */
async function connectAs(connection: Record<string, any>): Promise<pg.Client> {
  const client = new pg.Client({ host: connection.host, port: connection.port, database: connection.database, user: connection.user, password: connection.password });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function sqlState(work: Promise<unknown>): Promise<string | undefined> {
  try {
    await work;
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code ?? (error as Error).message;
  }
}

async function taskWith(scopes: { action: string; resource: string }[]): Promise<{ id: string; token: string }> {
  const identityToken = await h.identityToken();
  const answer = await h.post('/v1/tasks', supportTask({ scopes }), identityToken);
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return { id: answer.body.task.id, token: answer.body.token };
}

async function lease(task: { id: string; token: string }, provider = 'shop') {
  return h.post(`/v1/tasks/${task.id}/leases`, { provider }, task.token);
}

before(async () => {
  shop = await createTestDatabase();
  if (shop === undefined) return;
  await admin(async (c) => {
    await c.query('create schema shop; create schema archive');
    await c.query('create table shop.orders (id int primary key, total int)');
    await c.query('create table shop.customers (id int primary key, name text)');
    await c.query(`create table shop.${pg.escapeIdentifier(WEIRD_TABLE)} (id int)`);
    await c.query('create table archive.orders_2020 (id int)');
    await c.query('insert into shop.orders values (1, 100), (2, 250)');
    await c.query('create table shop.notes (id serial primary key, tag bigserial, body text)');
    await c.query('create sequence shop.unrelated');
  });
  h = await startHarness({
    config: {
      policy: { dir: policies },
      reaper: { intervalMs: 200 },
      leases: { postgres: [{ name: 'shop', url: shop.url, grants, connectionLimit: 3 }] },
    },
  });
  await h.registerAgent();
});

after(async () => {
  if (shop === undefined) return;
  await h.close();
  await shop.drop();
});

describe('PostgreSQL leases', () => {
  test("a task's role can do exactly what its scopes map to and nothing else", async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const answer = await lease(task);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal(answer.headers.get('cache-control'), 'no-store');
    const { connection } = answer.body;
    assert.match(connection.user, /^writ_[a-z0-9]{20}$/);
    assert.ok(typeof connection.password === 'string' && connection.password.length >= 32, 'a long random password is handed out');
    const role = await admin(async (c) => (await c.query('select * from pg_roles where rolname = $1', [connection.user])).rows[0]);
    assert.equal(role.rolconnlimit, 3);
    assert.equal(role.rolsuper, false);
    assert.equal(role.rolcreaterole, false);
    assert.ok(role.rolvaliduntil instanceof Date && Math.abs(role.rolvaliduntil.getTime() - Date.parse(connection.expiresAt)) < 1000, 'VALID UNTIL is the task expiry');

    const client = await connectAs(connection);
    try {
      const rows = await client.query('select id, total from shop.orders order by id');
      assert.deepEqual(rows.rows, [{ id: 1, total: 100 }, { id: 2, total: 250 }]);
      assert.equal(await sqlState(client.query('insert into shop.orders values (3, 1)')), '42501', 'INSERT is refused (read scope only)');
      assert.equal(await sqlState(client.query('select * from shop.customers')), '42501', 'another table is refused');
      assert.equal(await sqlState(client.query('select * from archive.orders_2020')), '42501', 'another schema is refused');
      assert.equal(await sqlState(client.query('create table shop.mine (id int)')), '42501', 'no CREATE in the schema');
    } finally {
      await client.end();
    }

    // The password is nowhere but the response: not the store, not the audit chain.
    const stored = await h.writ.store.listLeasesOfTask(task.id);
    assert.equal(stored.length, 1);
    assert.equal(stored[0]?.state, 'active');
    assert.ok(!JSON.stringify(stored).includes(connection.password), 'the store never holds the password');
    const rows = await h.auditRows();
    assert.ok(!rows.some((row) => row.record.includes(connection.password)), 'no audit record carries the password');
    const issued = (await h.auditRecords()).filter((r) => r.type === 'lease.issued');
    assert.equal(issued.length, 1);
    assert.equal((issued[0] as any).data.leaseId, stored[0]?.id);
    assert.equal((issued[0] as any).data.role, connection.user);
    assert.equal((issued[0] as any).task.id, task.id);
  });

  test('a write scope gets what write maps to; a schema pattern maps to every table of the schema', async () => {
    const task = await taskWith([
      { action: 'write', resource: 'db:orders/lines' },
      { action: 'read', resource: 'db:orders/archive/*' },
    ]);
    const answer = await lease(task);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const client = await connectAs(answer.body.connection);
    try {
      await client.query('insert into shop.orders values (10, 5)');
      assert.equal(await sqlState(client.query('select * from shop.orders')), '42501', 'tiers are not cumulative: write does not read');
      assert.equal(await sqlState(client.query('delete from shop.orders where id = 10')), '42501', 'DELETE is not mapped');
      assert.deepEqual((await client.query('select count(*)::int as n from archive.orders_2020')).rows, [{ n: 0 }]);
    } finally {
      await client.end();
    }
  });

  test("INSERT into a table with serial columns works: USAGE on the sequences it owns, and on no other", async () => {
    const task = await taskWith([{ action: 'write', resource: 'db:orders/notes' }]);
    const answer = await lease(task);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const client = await connectAs(answer.body.connection);
    try {
      await client.query("insert into shop.notes (body) values ('called the customer')");
      assert.equal(await sqlState(client.query("select nextval('shop.unrelated')")), '42501', 'a sequence the table does not own is refused');
      assert.equal(await sqlState(client.query('select * from shop.notes')), '42501', 'INSERT does not read');
    } finally {
      await client.end();
    }
    const [stored] = await h.writ.store.listLeasesOfTask(task.id);
    assert.equal((await h.writ.leases.revoke(stored!.id, 'test'))?.state, 'revoked');
    assert.equal(await roleExists(answer.body.connection.user), false, 'the sequence grants go with the role');
  });

  test('completing the task drops the role and cuts a session that was connected and mid-transaction', async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const answer = await lease(task);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const { connection } = answer.body;
    const client = await connectAs(connection);
    await client.query('begin');
    assert.equal((await client.query('select count(*)::int as n from shop.orders')).rows[0].n >= 2, true);

    const completed = await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
    assert.equal(completed.status, 200, JSON.stringify(completed.body));
    await h.writ.settled();

    const state = await sqlState(client.query('select count(*) from shop.orders'));
    assert.ok(state === '57P01' || /terminat|Connection/i.test(String(state)), `the open session is cut (got ${state})`);
    await client.end().catch(() => undefined);
    assert.equal(await roleExists(connection.user), false, 'the role no longer exists');
    const [stored] = await h.writ.store.listLeasesOfTask(task.id);
    assert.equal(stored?.state, 'revoked');
    assert.ok(stored?.revokedAt !== null, 'revokedAt is set');
    const revoked = (await h.auditRecords()).filter((r) => r.type === 'lease.revoked' && (r as any).data.leaseId === stored?.id);
    assert.equal(revoked.length, 1);
    // A new session cannot be opened either.
    assert.notEqual(await sqlState(connectAs(connection).then((c) => c.end())), undefined);
  });

  test('revoke is idempotent: twice, concurrently, or with the role already gone', async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const first = await lease(task);
    const second = await lease(task);
    assert.equal(first.status, 201);
    assert.equal(second.status, 201);
    const [a, b] = await h.writ.store.listLeasesOfTask(task.id);
    // Concurrent revokes of one lease: one revoked lease, one record.
    const results = await Promise.all([h.writ.leases.revoke(a!.id, 'test'), h.writ.leases.revoke(a!.id, 'test'), h.writ.leases.revoke(a!.id, 'test')]);
    assert.deepEqual(results.map((r) => r?.state), ['revoked', 'revoked', 'revoked']);
    assert.equal(await roleExists(first.body.connection.user), false);
    assert.equal((await h.writ.leases.revoke(a!.id, 'again'))?.state, 'revoked');
    // A role someone dropped by hand counts as revoked.
    const manual = pg.escapeIdentifier(second.body.connection.user);
    await admin((c) => c.query(`drop owned by ${manual}; drop role ${manual}`));
    assert.equal((await h.writ.leases.revoke(b!.id, 'test'))?.state, 'revoked');
    assert.equal((await h.writ.leases.state(b!.id))?.downstream, 'absent');
    const records = (await h.auditRecords()).filter((r) => r.type === 'lease.revoked' && [a!.id, b!.id].includes((r as any).data.leaseId));
    assert.equal(records.length, 2, 'one lease.revoked record per lease, however many revokes');
  });

  test('the sweep revokes a lease whose task ended where no event was heard, and keeps an active one', async () => {
    const ended = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const kept = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const endedLease = await lease(ended);
    const keptLease = await lease(kept);
    // Ended behind Writ's back (as another node, or a crash, would leave it): no task.ended event here.
    await h.writ.store.transitionTask(ended.id, ['active'], 'revoked', { at: Date.now(), endReason: 'revoked: elsewhere' });
    assert.equal(await h.writ.leases.sweep(), 1);
    assert.equal(await roleExists(endedLease.body.connection.user), false, 'the ended task loses its role');
    assert.equal(await roleExists(keptLease.body.connection.user), true, 'the active task keeps its role');
  });

  test('a renewal is a new decision the lease follows: extended to the new expiry, its session and password kept', async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const answer = await lease(task);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const { connection } = answer.body;
    const session = await connectAs(connection);
    try {
      const renewed = await h.post(`/v1/tasks/${task.id}/renew`, { checkpoint: 'orders read', ttl: '20m' }, task.token);
      assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
      const expiresAt = Date.parse(renewed.body.task.expiresAt);
      assert.ok(expiresAt > Date.parse(connection.expiresAt) + 60_000, 'the renewal moved the task expiry later');
      await h.writ.settled();
      const validUntil = await admin(async (c) => (await c.query('select rolvaliduntil from pg_roles where rolname = $1', [connection.user])).rows[0]?.rolvaliduntil as Date);
      assert.ok(Math.abs(validUntil.getTime() - expiresAt) < 1000, `VALID UNTIL follows the renewed expiry (${validUntil.toISOString()} vs ${renewed.body.task.expiresAt})`);
      const [stored] = await h.writ.store.listLeasesOfTask(task.id);
      assert.equal(stored?.state, 'active');
      assert.equal(stored?.expiresAt, expiresAt);
      const records = (await h.auditRecords()).filter((r) => r.type === 'lease.extended' && (r as any).data.leaseId === stored?.id);
      assert.equal(records.length, 1, 'one lease.extended record');
      assert.equal((records[0] as any).data.previousExpiresAt, Date.parse(connection.expiresAt));
      assert.equal(JSON.stringify(records[0]).includes(connection.password), false, 'the password is not on the record');
      assert.ok((await session.query('select count(*)::int as n from shop.orders')).rows[0].n >= 2, 'the open session goes on');
      await (await connectAs(connection)).end();
      // Heard again (another node's sync): nothing moves twice.
      assert.equal(await h.writ.leases.follow(task.id), 0);
    } finally {
      await session.end();
    }
  });

  test('a renewal that keeps less revokes a lease holding more, and extends one it still covers whole', async () => {
    // Both tables read and written; the renewal keeps the reads.
    const wider = await taskWith([{ action: 'read', resource: 'db:orders/lines' }, { action: 'write', resource: 'db:orders/lines' }]);
    const widerLease = await lease(wider);
    assert.equal(widerLease.status, 201, JSON.stringify(widerLease.body));
    // Orders read and a ticket written; the renewal drops the ticket, which this provider maps to nothing.
    const other = await taskWith([{ action: 'read', resource: 'db:orders/lines' }, { action: 'write', resource: 'tickets:T-1042' }]);
    const otherLease = await lease(other);
    assert.equal(otherLease.status, 201, JSON.stringify(otherLease.body));
    const session = await connectAs(widerLease.body.connection);

    const keepRead = { checkpoint: 'stage 1 done', ttl: '20m', scopes: [{ action: 'read', resource: 'db:orders/lines' }] };
    const widerRenewed = await h.post(`/v1/tasks/${wider.id}/renew`, keepRead, wider.token);
    assert.equal(widerRenewed.status, 200, JSON.stringify(widerRenewed.body));
    const renewed = await h.post(`/v1/tasks/${other.id}/renew`, keepRead, other.token);
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    await h.writ.settled();

    assert.equal(await roleExists(widerLease.body.connection.user), false, 'the role holding INSERT and UPDATE is dropped');
    const state = await sqlState(session.query('select 1'));
    assert.ok(state === '57P01' || /terminat|Connection/i.test(String(state)), `its open session is cut (got ${state})`);
    await session.end().catch(() => undefined);
    const [revoked] = await h.writ.store.listLeasesOfTask(wider.id);
    assert.equal(revoked?.state, 'revoked');
    // The task asks again for what it keeps, and gets exactly that.
    const again = await lease({ id: wider.id, token: widerRenewed.body.token });
    assert.equal(again.status, 201, JSON.stringify(again.body));
    const narrower = await connectAs(again.body.connection);
    try {
      assert.equal((await narrower.query('select count(*)::int as n from shop.orders')).rows[0].n >= 2, true);
      assert.equal(await sqlState(narrower.query('insert into shop.orders values (99, 1)')), '42501', 'the new role reads, and no more');
    } finally {
      await narrower.end();
    }

    assert.equal(await roleExists(otherLease.body.connection.user), true, 'the role the renewal still covers is kept');
    const [kept] = await h.writ.store.listLeasesOfTask(other.id);
    assert.equal(kept?.state, 'active');
    assert.equal(kept?.expiresAt, Date.parse(renewed.body.task.expiresAt), 'and follows the renewed expiry');
  });

  test("a planner's renewal that keeps less reaches its worker's lease: the slice the planner no longer holds is revoked", async () => {
    const worker = 'spiffe://demo.local/agent/worker';
    await h.registerAgent(worker);
    const planner = await taskWith([{ action: 'read', resource: 'db:orders/lines' }, { action: 'read', resource: 'db:customers/list' }]);
    const child = await delegated(h, planner.token, worker, 'read:db:orders/lines');
    const childLease = await lease(child);
    assert.equal(childLease.status, 201, JSON.stringify(childLease.body));

    // The planner keeps the customers and lets the orders go.
    const renewed = await h.post(`/v1/tasks/${planner.id}/renew`, { checkpoint: 'orders done', scopes: [{ action: 'read', resource: 'db:customers/list' }] }, planner.token);
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    await h.writ.settled();
    assert.equal(await roleExists(childLease.body.connection.user), false, "the worker's role on orders is dropped");
    assert.equal((await h.writ.store.listLeasesOfTask(child.id))[0]?.state, 'revoked');
    assert.equal((await lease(child)).body.code, 'ERR_LEASE_NO_GRANTS', 'and the worker cannot mint another for what its planner let go');
  });

  test('a policy change that narrows a task revokes the lease it no longer covers, and keeps one it does', async () => {
    // Both hold orders; one also holds customers (on its lease), the other a ticket (on no lease).
    const both = await taskWith([{ action: 'read', resource: 'db:orders/lines' }, { action: 'read', resource: 'db:customers/list' }]);
    const bothLease = await lease(both);
    assert.equal(bothLease.status, 201, JSON.stringify(bothLease.body));
    const withTicket = await taskWith([{ action: 'read', resource: 'db:orders/lines' }, { action: 'write', resource: 'tickets:T-1042' }]);
    const ticketLease = await lease(withTicket);
    assert.equal(ticketLease.status, 201, JSON.stringify(ticketLease.body));
    const freeze = join(policies, 'freeze.cedar');
    writeFileSync(freeze, `@id("freeze-customers-and-ticket")
forbid (principal, action in Writ::Action::"read", resource == Writ::Database::"db:customers/list");
@id("freeze-ticket-writes")
forbid (principal, action == Writ::Action::"write", resource) when { resource.kind == "tickets" };
`);
    try {
      const reload = await h.writ.reloadPolicy('test');
      assert.ok(reload.ok && reload.changed, JSON.stringify(reload));
      await h.writ.settled();
      assert.deepEqual((await h.writ.store.getTask(both.id))?.grantedScopes, [{ action: 'read', resource: 'db:orders/lines' }], 'narrowed to orders');
      assert.equal(await roleExists(bothLease.body.connection.user), false, 'the role on customers is dropped');
      assert.equal(await roleExists(ticketLease.body.connection.user), true, 'the role on orders alone is kept: the narrowing took a ticket, not anything it holds');
      assert.equal((await h.writ.store.listLeasesOfTask(withTicket.id))[0]?.state, 'active');
    } finally {
      rmSync(freeze);
      await h.writ.reloadPolicy('test');
    }
  });

  test('the sweep catches up on a renewal no lease followed (heard nowhere): extended, or revoked if it holds more', async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const answer = await lease(task);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const narrowed = await taskWith([{ action: 'read', resource: 'db:orders/lines' }, { action: 'read', resource: 'db:customers/list' }]);
    const narrowedLease = await lease(narrowed);
    assert.equal(narrowedLease.status, 201, JSON.stringify(narrowedLease.body));
    // Renewed behind Writ's back (another node, or a crash before the lease followed): no event here.
    const renewBehind = async (id: string, keep?: { action: string; resource: string }[]) => {
      const current = (await h.writ.store.getTask(id))!;
      const renewed = await h.writ.store.renewTask(id, {
        previousTokenId: current.tokenId!, previousExpiresAt: current.expiresAt, tokenId: `jti_elsewhere_${id}`, expiresAt: current.expiresAt + 30 * 60_000,
        grantedScopes: keep ?? current.grantedScopes, policyVersion: current.policyVersion, at: Date.now(), narrowed: keep !== undefined,
      });
      assert.ok(renewed !== undefined, 'renewed in the store');
      return renewed.expiresAt;
    };
    const expiresAt = await renewBehind(task.id);
    await renewBehind(narrowed.id, [{ action: 'read', resource: 'db:customers/list' }]);
    assert.deepEqual((await h.writ.store.listLeasesToExtend(Date.now(), 100)).map((l) => l.taskId).filter((id) => id === task.id || id === narrowed.id).sort(), [task.id, narrowed.id].sort());
    await h.writ.leases.sweep();
    assert.equal(await roleExists(narrowedLease.body.connection.user), false, 'the lease holding orders, which the renewal dropped, is revoked');
    const validUntil = await admin(async (c) => (await c.query('select rolvaliduntil from pg_roles where rolname = $1', [answer.body.connection.user])).rows[0]?.rolvaliduntil as Date);
    assert.ok(Math.abs(validUntil.getTime() - expiresAt) < 1000, 'VALID UNTIL follows the renewed expiry');
    assert.equal((await h.writ.store.listLeasesOfTask(task.id))[0]?.expiresAt, expiresAt);
    assert.equal((await h.writ.store.listLeasesToExtend(Date.now(), 100)).some((l) => l.taskId === task.id), false, 'nothing left to extend');
  });

  test('at start, the sweep also catches up on a narrowing no lease followed (its event lost in a crash)', async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }, { action: 'read', resource: 'db:customers/list' }]);
    const answer = await lease(task);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const current = (await h.writ.store.getTask(task.id))!;
    // Narrowed in the store behind Writ's back: no event, and the task's expiry unchanged.
    const narrowed = await h.writ.store.updateGrant(task.id, current, { grantedScopes: [{ action: 'read', resource: 'db:customers/list' }], refusedScopes: current.refusedScopes, policyVersion: current.policyVersion, narrowedAt: Date.now() });
    assert.ok(narrowed !== undefined, 'narrowed in the store');
    await h.writ.leases.sweep();
    assert.equal(await roleExists(answer.body.connection.user), true, 'a tick does not re-check every lease');
    await h.writ.leases.sweep({ recheck: true });
    assert.equal(await roleExists(answer.body.connection.user), false, 'the start-up sweep revokes the lease holding orders, which the task no longer holds');
    assert.equal((await h.writ.store.listLeasesOfTask(task.id))[0]?.state, 'revoked');
  });

  test("a lease of a provider this node does not configure is left to a node that does, not marked revoking", async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const now = Date.now();
    await h.writ.store.createLease({ id: 'lease_elsewhere', taskId: task.id, provider: 'elsewhere', details: { role: generateRoleName('writ_'), grants: [] }, createdAt: now, expiresAt: now + 1000 });
    await h.writ.store.transitionLease('lease_elsewhere', ['issuing'], 'active', { at: now });
    await h.writ.leases.sweep({ recheck: true });
    await h.writ.leases.follow(task.id);
    const lease = await h.writ.store.getLease('lease_elsewhere');
    assert.deepEqual([lease?.state, lease?.expiresAt], ['active', now + 1000], 'neither revoked nor extended here');
    await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
    await h.writ.settled();
    assert.equal((await h.writ.store.getLease('lease_elsewhere'))?.state, 'revoking', 'its task ended: this node starts the revoke a configured node finishes');
  });

  test('no lease outlives its task by more than the reaper interval: a task that expires while Writ runs loses its role', async () => {
    const task = await h.post('/v1/tasks', supportTask({ ttl: 1, scopes: [{ action: 'read', resource: 'db:orders/lines' }] }), await h.identityToken());
    assert.equal(task.status, 201, JSON.stringify(task.body));
    const answer = await lease({ id: task.body.task.id, token: task.body.token });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    h.writ.startReaper();
    const expiresAt = Date.parse(task.body.task.expiresAt);
    // reaper.intervalMs is 200 here; allow a few ticks for a loaded machine.
    const deadline = expiresAt + 200 * 10;
    while ((await roleExists(answer.body.connection.user)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(await roleExists(answer.body.connection.user), false, 'the role is dropped within a few reaper ticks of the expiry');
    const [stored] = await h.writ.store.listLeasesOfTask(task.body.task.id);
    assert.equal(stored?.state, 'revoked');
    assert.ok((stored?.revokedAt ?? Infinity) - expiresAt < 200 * 10, `revoked ${(stored?.revokedAt ?? 0) - expiresAt} ms after the expiry`);
  });

  test('a task lists its leases (state and expiry, never a password); another identity cannot', async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const issued = await lease(task);
    assert.equal(issued.status, 201, JSON.stringify(issued.body));
    const listed = await h.get(`/v1/tasks/${task.id}/leases`, task.token);
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    assert.deepEqual(listed.body.leases.map((l: any) => [l.id, l.provider, l.state, l.expiresAt]), [[issued.body.lease.id, 'shop', 'active', issued.body.connection.expiresAt]]);
    assert.equal(JSON.stringify(listed.body).includes(issued.body.connection.password), false, 'no password');
    assert.equal(JSON.stringify(listed.body).includes(issued.body.connection.user), false, 'no role name either');
    assert.equal((await h.get(`/v1/tasks/${task.id}/leases`, await h.identityToken())).status, 200, 'its identity sees them');
    await h.registerAgent('spiffe://demo.local/agent/stranger');
    const stranger = await h.get(`/v1/tasks/${task.id}/leases`, await h.identityToken('spiffe://demo.local/agent/stranger'));
    assert.equal(stranger.status, 404, JSON.stringify(stranger.body));
    assert.equal((await h.get(`/v1/tasks/${task.id}/leases`)).status, 401);
    await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
    await h.writ.settled();
    assert.equal((await h.get(`/v1/tasks/${task.id}/leases`, await h.identityToken())).body.leases[0].state, 'revoked');
  });

  test('the operator is warned of the databases a task role could log in to beside its own', async () => {
    const warnings = await h.writ.leases.configurationWarnings();
    // The shared test server leaves PUBLIC's CONNECT on its databases (postgres, test, …), as a new cluster does.
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.match(warnings[0]!, /task roles of lease provider shop can log in to databases? .*postgres.*where PUBLIC holds CONNECT/);
    assert.equal(warnings[0]!.includes(new URL(shop!.url).pathname.slice(1) + ','), false, 'its own database is not listed');
  });

  test('a lease is asked for with the task token of that very task, for a configured provider, for something mapped', async () => {
    const task = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const other = await taskWith([{ action: 'read', resource: 'db:orders/lines' }]);
    const byOther = await h.post(`/v1/tasks/${task.id}/leases`, { provider: 'shop' }, other.token);
    assert.equal(byOther.body.code, 'ERR_FORBIDDEN');
    const byIdentity = await h.post(`/v1/tasks/${task.id}/leases`, { provider: 'shop' }, await h.identityToken());
    assert.equal(byIdentity.body.code, 'ERR_FORBIDDEN');
    assert.equal((await h.post(`/v1/tasks/${task.id}/leases`, { provider: 'shop' })).status, 401);
    assert.equal((await lease(task, 'nope')).body.code, 'ERR_LEASE_PROVIDER_NOT_FOUND');
    assert.equal((await h.post(`/v1/tasks/${task.id}/leases`, { provider: 'shop', role: 'postgres' }, task.token)).body.code, 'ERR_VALIDATION');
    const tickets = await taskWith([{ action: 'read', resource: 'tickets:T-1' }]);
    assert.equal((await lease(tickets)).body.code, 'ERR_LEASE_NO_GRANTS');
    assert.equal((await h.writ.store.listLeasesOfTask(tickets.id)).length, 0, 'nothing is written when nothing maps');
    // An ended task's token gets nothing.
    await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
    assert.equal((await lease(task)).status, 401);
  });

  test('hostile values never reach SQL unquoted', async () => {
    // A configured table name full of SQL is one quoted identifier: it grants on that table, and shop.orders stands.
    const task = await taskWith([{ action: 'read', resource: 'db:orders/weird' }]);
    const answer = await lease(task);
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const client = await connectAs(answer.body.connection);
    try {
      assert.deepEqual((await client.query(`select count(*)::int as n from shop.${pg.escapeIdentifier(WEIRD_TABLE)}`)).rows, [{ n: 0 }]);
    } finally {
      await client.end();
    }
    assert.equal(await admin(async (c) => (await c.query("select to_regclass('shop.orders') is not null as ok")).rows[0].ok), true, 'shop.orders was not dropped');

    // Hostile provider names from the request are names looked up, never SQL.
    for (const provider of ["shop'; DROP ROLE postgres; --", 'shop"', '\u0000']) {
      assert.equal((await lease(task, provider)).body.code, 'ERR_LEASE_PROVIDER_NOT_FOUND', provider);
    }

    // Configuration that would put SQL text anywhere is refused at load.
    const base = { name: 'x', url: 'postgres://a@127.0.0.1/x', grants: [{ resource: 'db:x/y', schema: 's', read: ['SELECT'] }] };
    const hostile: Record<string, unknown>[] = [
      { ...base, rolePrefix: 'writ"; DROP ROLE postgres; --' },
      { ...base, rolePrefix: 'W' },
      { ...base, grants: [{ resource: 'db:x/y', schema: 's', read: ['SELECT; DROP TABLE x'] }] },
      { ...base, grants: [{ resource: 'db:x/y', schema: 's', read: ['ALL PRIVILEGES'] }] },
      { ...base, grants: [{ resource: "db:x/y'; --", schema: 's', read: ['SELECT'] }] },
      { ...base, grants: [{ resource: 'db:x/y', schema: 's\u0000t', read: ['SELECT'] }] },
      { ...base, grants: [{ resource: 'db:x/y', schema: 's', admin: ['SELECT'] }] },
      { ...base, connectionLimit: '2; DROP ROLE postgres' },
      { ...base, url: 'postgres://admin:hunter2@127.0.0.1/x' },
      { name: 'x', grants: base.grants },
    ];
    for (const provider of hostile) {
      assert.throws(
        () => loadConfig({ env: {}, ignoreDefaultFile: true, flags: {}, cwd: process.cwd(), ...withConfig({ leases: { postgres: [provider] } }) }),
        (error: unknown) => isWritError(error, 'ERR_CONFIG_INVALID'),
        JSON.stringify(provider),
      );
    }
    // A role name comes from the generator alone.
    for (let i = 0; i < 200; i++) assert.match(generateRoleName('writ_'), /^writ_[a-z0-9]{20}$/);
  });
});

describe('planPgGrants (pure)', () => {
  const tierOf = (action: string) => (({ read: 'read', write: 'write', refund: 'write', purge: 'delete', sudo: 'admin' }) as Record<string, any>)[action];
  const config = [
    { resource: 'db:shop/orders', schema: 'shop', table: 'orders', read: ['SELECT' as const], write: ['INSERT' as const, 'UPDATE' as const] },
    { resource: 'db:shop/*', schema: 'shop', read: ['SELECT' as const] },
  ];

  test('a scope gets a grant only when it covers the whole of its resource', () => {
    assert.deepEqual(planPgGrants(config, [{ action: 'read', resource: 'db:shop/orders' }], tierOf), [{ schema: 'shop', table: 'orders', privileges: ['SELECT'] }]);
    assert.deepEqual(
      planPgGrants(config, [{ action: 'read', resource: 'db:shop/*' }], tierOf).map((g) => g.table),
      [null, 'orders'],
    );
    assert.deepEqual(planPgGrants(config, [{ action: 'read', resource: 'db:shop/orders/1' }], tierOf), []);
  });

  test("the scope's tier picks the privileges; admin and untiered actions map to nothing", () => {
    assert.deepEqual(planPgGrants(config, [{ action: 'refund', resource: 'db:shop/orders' }], tierOf), [{ schema: 'shop', table: 'orders', privileges: ['INSERT', 'UPDATE'] }]);
    assert.deepEqual(planPgGrants(config, [{ action: 'sudo', resource: 'db:*' }], tierOf), []);
    assert.deepEqual(planPgGrants(config, [{ action: 'unknown', resource: 'db:*' }], tierOf), []);
    assert.deepEqual(planPgGrants(config, [{ action: 'purge', resource: 'db:*' }], tierOf), []);
  });
});

describe('whether a renewed task still holds a PostgreSQL lease (pure)', () => {
  const provider = createPgLeaseProvider({ config: { name: 'shop', url: 'postgres://unused', grants, connectionLimit: 3, rolePrefix: 'writ_', statementTimeout: 5 } as never, adminUrl: async () => 'postgres://unused' });
  const tierOf = (action: string) => (['read', 'write', 'delete', 'export'].includes(action) ? (action as 'read') : undefined);
  const leaseFor = (scopes: { action: string; resource: string }[]) => provider.plan(scopes, tierOf)!.details;

  test('a lease is held while the scopes map to every privilege it grants, on the same objects', () => {
    const readWrite = leaseFor([{ action: 'read', resource: 'db:orders/lines' }, { action: 'write', resource: 'db:orders/lines' }]);
    assert.equal(provider.holds(readWrite, [{ action: 'read', resource: 'db:orders/lines' }, { action: 'write', resource: 'db:orders/lines' }], tierOf), true);
    assert.equal(provider.holds(readWrite, [{ action: 'read', resource: 'db:*' }, { action: 'write', resource: 'db:orders/*' }], tierOf), true, 'wider scopes hold it');
    assert.equal(provider.holds(readWrite, [{ action: 'read', resource: 'db:orders/lines' }], tierOf), false, 'the write privileges are no longer covered');
    assert.equal(provider.holds(readWrite, [], tierOf), false);
    const archive = leaseFor([{ action: 'read', resource: 'db:orders/archive/*' }]);
    assert.equal(provider.holds(archive, [{ action: 'read', resource: 'db:orders/archive/2020' }], tierOf), false, 'a schema-wide grant is not held by a narrower resource');
    assert.equal(provider.holds(archive, [{ action: 'write', resource: 'db:orders/archive/*' }], tierOf), false, 'nor by another tier');
  });

  test('details naming no role Writ made are refused, not trusted', () => {
    assert.throws(() => provider.holds({ role: 'postgres', grants: [] }, [], tierOf));
  });
});

describe('lease store (SQLite and PostgreSQL)', () => {
  const backends: [string, () => Promise<{ store: Store; close: () => Promise<void> } | undefined>][] = [
    ['sqlite', async () => {
      const store = await openSqliteStore({ filename: ':memory:' });
      return { store, close: () => store.close() };
    }],
    ['postgres', async () => {
      const db = await createTestDatabase();
      if (db === undefined) return undefined;
      const store = await openPostgresStore({ url: db.url });
      return { store, close: async () => { await store.close(); await db.drop(); } };
    }],
  ];
  for (const [name, open] of backends) {
    test(`${name}: state changes are compare-and-set, and the sweep lists leases of tasks no longer active, and of renewed ones`, async () => {
      const opened = await open();
      if (opened === undefined) return;
      const { store } = opened;
      try {
        const now = Date.now();
        const task = (id: string, state: 'active' | 'completed', expiresAt: number) =>
          store.createTask({
            id, identityId: AGENT, purpose: 'p', intent: 'i', environment: 'production', requestedScopes: [], grantedScopes: [], refusedScopes: [],
            state, policyVersion: 'v', parentTaskId: null, lineage: [], delegators: [], mayAct: null, renewals: 0, tokenId: null, createdAt: now, expiresAt,
          } as never);
        await task('task_live', 'active', now + 60_000);
        await task('task_done', 'completed', now + 60_000);
        await task('task_late', 'active', now - 1);
        for (const [id, taskId] of [['l1', 'task_live'], ['l2', 'task_done'], ['l3', 'task_late'], ['l4', 'task_gone']] as const) {
          await store.createLease({ id, taskId, provider: 'shop', details: { role: 'writ_x' }, createdAt: now, expiresAt: now + 60_000 });
        }
        assert.equal((await store.getLease('l1'))?.state, 'issuing');
        assert.equal((await store.transitionLease('l1', ['issuing'], 'active', { at: now }))?.state, 'active');
        assert.equal(await store.transitionLease('l1', ['issuing'], 'active', { at: now }), undefined, 'a second move from issuing finds it moved');
        assert.deepEqual((await store.listLeasesToRevoke(now, 10)).map((l) => l.id).sort(), ['l2', 'l3', 'l4']);
        const revoked = await store.transitionLease('l2', ['issuing', 'active', 'revoking'], 'revoked', { at: now + 5, lastError: null });
        assert.equal(revoked?.revokedAt, now + 5);
        await store.noteLeaseError('l3', 'unreachable');
        assert.equal((await store.getLease('l3'))?.lastError, 'unreachable');
        assert.deepEqual((await store.listLeasesToRevoke(now, 10)).map((l) => l.id).sort(), ['l3', 'l4']);
        assert.deepEqual((await store.listLeasesOfTask('task_live')).map((l) => l.id), ['l1']);
        // A lease whose task lives longer than it (a renewal it has not followed) is listed to extend; only later, only active.
        assert.deepEqual((await store.listLeasesToExtend(now, 10)).map((l) => l.id), [], 'l1 expires with its task');
        await store.createLease({ id: 'l5', taskId: 'task_live', provider: 'shop', details: { role: 'writ_y' }, createdAt: now, expiresAt: now + 30_000 });
        await store.transitionLease('l5', ['issuing'], 'active', { at: now });
        await store.createLease({ id: 'l6', taskId: 'task_live', provider: 'shop', details: { role: 'writ_z' }, createdAt: now, expiresAt: now + 30_000 });
        assert.deepEqual((await store.listLeasesToExtend(now, 10)).map((l) => l.id), ['l5'], 'an issuing lease is not extended');
        assert.deepEqual((await store.listLeasesToExtend(now + 60_000, 10)).map((l) => l.id), [], 'nor one whose task is past its expiry');
        assert.equal(await store.extendLease('l5', now + 20_000), undefined, 'never earlier');
        assert.equal((await store.extendLease('l5', now + 60_000))?.expiresAt, now + 60_000);
        assert.equal(await store.extendLease('l5', now + 60_000), undefined, 'a second extension to the same expiry finds it moved');
        assert.equal(await store.extendLease('l6', now + 60_000), undefined, 'an issuing lease is not extended');
        assert.deepEqual((await store.listLeasesToExtend(now, 10)).map((l) => l.id), []);
      } finally {
        await opened.close();
      }
    });
  }
});

/** loadConfig options for a config given as an object (written to a temp file). */
function withConfig(config: Record<string, unknown>): { configFile: string } {
  const file = join(tempDir(), 'writ.yaml');
  writeFileSync(file, JSON.stringify(config));
  return { configFile: file };
}
