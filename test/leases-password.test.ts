/**
 * PostgreSQL leases where passwords matter. The shared server trusts every
 * loopback login, so it cannot show that a handed-out password works, that a
 * wrong one or one past VALID UNTIL does not, or what a server logging DDL
 * writes: this file starts a private cluster that asks task roles for
 * SCRAM-SHA-256 and logs every DDL statement.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { scramVerifier } from '../src/leases/postgres.js';
import { startHarness, supportTask, type Harness } from './helpers/harness.js';
import { startPrivateCluster, type PrivateCluster } from './helpers/pg.js';
import { policyFolder } from './helpers/policy-folder.js';

let cluster: PrivateCluster | undefined;
let h: Harness;

async function connectAs(connection: Record<string, any>, password = connection.password as string): Promise<pg.Client> {
  const client = new pg.Client({ host: connection.host, port: connection.port, database: connection.database, user: connection.user, password });
  client.on('error', () => undefined);
  await client.connect();
  return client;
}

async function loginState(connection: Record<string, any>, password?: string): Promise<string | undefined> {
  try {
    await (await connectAs(connection, password)).end();
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code ?? (error as Error).message;
  }
}

async function leasedTask(ttl: number): Promise<{ id: string; token: string; connection: Record<string, any> }> {
  const task = await h.post('/v1/tasks', supportTask({ ttl, scopes: [{ action: 'read', resource: 'db:orders/lines' }] }), await h.identityToken());
  assert.equal(task.status, 201, JSON.stringify(task.body));
  const lease = await h.post(`/v1/tasks/${task.body.task.id}/leases`, { provider: 'private' }, task.body.token);
  assert.equal(lease.status, 201, JSON.stringify(lease.body));
  return { id: task.body.task.id, token: task.body.token, connection: lease.body.connection };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

before(async () => {
  cluster = startPrivateCluster({ hba: ['host all all 127.0.0.1/32 scram-sha-256'], settings: { log_statement: 'ddl', password_encryption: 'scram-sha-256' } });
  if (cluster === undefined) return;
  const admin = new pg.Client({ connectionString: cluster.adminUrl });
  await admin.connect();
  await admin.query('create schema shop; create table shop.orders (id int primary key); insert into shop.orders values (1)');
  await admin.end();
  h = await startHarness({
    config: {
      policy: { dir: policyFolder() },
      leases: { postgres: [{ name: 'private', url: cluster.adminUrl, grants: [{ resource: 'db:orders/lines', schema: 'shop', table: 'orders', read: ['SELECT'] }] }] },
    },
  });
  await h.registerAgent();
});

after(async () => {
  if (cluster === undefined) return;
  await h.close();
  cluster.stop();
});

describe('PostgreSQL lease passwords (a private cluster asking for SCRAM-SHA-256)', () => {
  test('the handed-out password logs in; a wrong one does not', async (t) => {
    if (cluster === undefined) return t.skip('no private cluster');
    const { connection } = await leasedTask(300);
    const client = await connectAs(connection);
    try {
      assert.deepEqual((await client.query('select id from shop.orders')).rows, [{ id: 1 }]);
    } finally {
      await client.end();
    }
    assert.equal(await loginState(connection, `${connection.password}x`), '28P01', 'a wrong password is refused');
  });

  test('a server logging DDL never sees the password: CREATE ROLE carries its SCRAM verifier', async (t) => {
    if (cluster === undefined) return t.skip('no private cluster');
    const { connection } = await leasedTask(300);
    const log = readFileSync(cluster.logFile, 'utf8');
    const created = log.split('\n').filter((line) => line.includes('CREATE ROLE') && line.includes(connection.user));
    assert.equal(created.length, 1, 'the server logged the CREATE ROLE (log_statement = ddl)');
    assert.match(created[0]!, /PASSWORD 'SCRAM-SHA-256\$4096:/, 'with a verifier');
    assert.equal(log.includes(connection.password), false, 'and the password appears nowhere in the log');
  });

  test('VALID UNTIL is the task expiry: past it, the password no longer logs in', async (t) => {
    if (cluster === undefined) return t.skip('no private cluster');
    const { connection } = await leasedTask(1);
    assert.equal(await loginState(connection), undefined, 'logs in before the expiry');
    await sleep(Math.max(0, Date.parse(connection.expiresAt) - Date.now()) + 300);
    // No reaper runs here: the role is still there, and only VALID UNTIL stands in the way.
    assert.equal(await loginState(connection), '28P01', 'refused after it');
  });

  test('a renewal moves VALID UNTIL: the same password logs in past the first expiry', async (t) => {
    if (cluster === undefined) return t.skip('no private cluster');
    const task = await leasedTask(2);
    const renewed = await h.post(`/v1/tasks/${task.id}/renew`, { checkpoint: 'first pass done', ttl: '5m' }, task.token);
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    await h.writ.settled();
    await sleep(Math.max(0, Date.parse(task.connection.expiresAt) - Date.now()) + 300);
    assert.equal(await loginState(task.connection), undefined, 'logs in after the first expiry, within the renewed one');
  });
});

describe('configuration warnings (the private cluster)', () => {
  test('a database any role may connect to is named until PUBLIC loses CONNECT there', async (t) => {
    if (cluster === undefined) return t.skip('no private cluster');
    assert.deepEqual(await h.writ.leases.configurationWarnings(), [], 'templates and its own database are not warned of');
    const admin = new pg.Client({ connectionString: cluster.adminUrl });
    await admin.connect();
    try {
      await admin.query('create database other');
      const warnings = await h.writ.leases.configurationWarnings();
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      assert.match(warnings[0]!, /can log in to database other, where PUBLIC holds CONNECT/);
      const { connection } = await leasedTask(300);
      assert.equal(await loginState({ ...connection, database: 'other' }), undefined, 'as it says: the task role logs in there');
      await admin.query('revoke connect on database other from public');
      assert.deepEqual(await h.writ.leases.configurationWarnings(), []);
      assert.equal(await loginState({ ...connection, database: 'other' }), '42501', 'and now it cannot');
    } finally {
      await admin.query('drop database if exists other with (force)');
      await admin.end();
    }
  });
});

describe('scramVerifier', () => {
  test('is the RFC 7677 verifier: the example exchange checks out against it', async () => {
    // RFC 7677 section 3: user "user", password "pencil", salt and iterations from the server-first message.
    const verifier = await scramVerifier('pencil', Buffer.from('W22ZaJ0SNY7soEsUEjb6gQ==', 'base64'), 4096);
    const [, keys] = verifier.split('$').slice(1);
    const [storedKey, serverKey] = (keys ?? '').split(':').map((k) => Buffer.from(k, 'base64'));
    const { createHash, createHmac } = await import('node:crypto');
    const authMessage =
      'n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0';
    // The server's signature in the RFC's server-final message, from ServerKey.
    assert.equal(createHmac('sha256', serverKey!).update(authMessage).digest('base64'), '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=');
    // The client's proof in the RFC's client-final message checks against StoredKey: SHA-256(proof XOR signature) = StoredKey.
    const proof = Buffer.from('dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=', 'base64');
    const signature = createHmac('sha256', storedKey!).update(authMessage).digest();
    const clientKey = Buffer.from(proof.map((b, i) => b ^ signature[i]!));
    assert.deepEqual(createHash('sha256').update(clientKey).digest(), storedKey, 'StoredKey matches the proof');
    assert.match(verifier, /^SCRAM-SHA-256\$4096:W22ZaJ0SNY7soEsUEjb6gQ==\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
  });
});
