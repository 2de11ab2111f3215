/**
 * Crash safety of leases, with the built `writ` (run `npm run build` first):
 * a real `writ serve` holding two tasks with PostgreSQL leases is killed with
 * SIGKILL; one task expires while it is down; on restart (same data dir) the
 * expired task's role is dropped, and its open session cut, before the first
 * request is answered, while the still-active task keeps its role.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { stringify as toYaml } from 'yaml';
import { BIN, cleanEnv, runWrit, tempDirs } from './helpers/cli.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';
import { freePort } from './helpers/net.js';

const AGENT = 'spiffe://demo.local/agent/crash';
const tempDir = tempDirs('writ-leases-crash-');
let shop: TestDatabase | undefined;
const children = new Set<ChildProcess>();


/** Starts `writ serve` in `cwd`. `listening` resolves once it logs that it listens. */
function startServe(cwd: string, port: number) {
  const child = spawn(process.execPath, [BIN, 'serve'], { cwd, env: cleanEnv({ WRIT_PORT: String(port) }), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const listening = new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('Writ listening')) resolve();
    });
  });
  return { child, listening, stderr: () => stderr };
}

async function roleExists(role: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: shop!.url });
  await client.connect();
  try {
    return ((await client.query('select 1 from pg_roles where rolname = $1', [role])).rowCount ?? 0) > 0;
  } finally {
    await client.end();
  }
}

async function post(base: string, path: string, body: unknown, bearer: string): Promise<{ status: number; body: any }> {
  const response = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${bearer}` }, body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}

before(async () => {
  shop = await createTestDatabase();
  if (shop === undefined) return;
  const client = new pg.Client({ connectionString: shop.url });
  await client.connect();
  await client.query('create schema shop; create table shop.orders (id int); insert into shop.orders values (1)');
  await client.end();
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await shop?.drop();
});

test("after kill -9, a restart drops the role of a task that expired meanwhile before answering anything, and keeps an active task's", async () => {
  if (shop === undefined) return;
  const cwd = tempDir();
  const dataDir = join(cwd, '.writ');
  writeFileSync(
    join(cwd, 'writ.yaml'),
    toYaml({
      identity: { devIssuer: { enabled: true } },
      reaper: { intervalMs: 5000 },
      leases: { postgres: [{ name: 'shop', url: shop.url, grants: [{ resource: 'db:orders/lines', schema: 'shop', table: 'orders', read: ['SELECT'] }] }] },
    }),
  );
  const registered = await runWrit(['identity', 'register', '--spiffe-id', AGENT, '--owner', 'alice@example.com', '--environment', 'production', '--data-dir', dataDir], cwd);
  assert.equal(registered.code, 0, registered.stderr);
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;

  const first = startServe(cwd, port);
  await first.listening;
  const identityToken = (await runWrit(['identity', 'token', AGENT, '--data-dir', dataDir], cwd)).stdout.trim();
  assert.match(identityToken, /^ey/, 'an identity token from the dev issuer');
  const ask = async (ttl: number) => {
    const task = await post(base, '/v1/tasks', { purpose: 'crash test', intent: 'customer-support', environment: 'production', ttl, scopes: [{ action: 'read', resource: 'db:orders/lines' }] }, identityToken);
    assert.equal(task.status, 201, JSON.stringify(task.body));
    const lease = await post(base, `/v1/tasks/${task.body.task.id}/leases`, { provider: 'shop' }, task.body.token);
    assert.equal(lease.status, 201, JSON.stringify(lease.body));
    return { taskId: task.body.task.id as string, expiresAt: Date.parse(task.body.task.expiresAt), connection: lease.body.connection };
  };
  const doomed = await ask(3);
  const kept = await ask(600);

  // A session of the doomed task's role, open and mid-transaction when Writ dies.
  const session = new pg.Client({ ...doomed.connection, host: doomed.connection.host, port: doomed.connection.port });
  session.on('error', () => undefined);
  await session.connect();
  await session.query('begin');
  await session.query('select * from shop.orders');

  const killed = new Promise((resolve) => first.child.once('exit', (_code, signal) => resolve(signal)));
  first.child.kill('SIGKILL');
  assert.equal(await killed, 'SIGKILL');

  // The task expires while Writ is down; nothing revokes its role meanwhile.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, doomed.expiresAt - Date.now()) + 500));
  assert.equal(await roleExists(doomed.connection.user), true, 'the role outlives its task while Writ is down');

  const second = startServe(cwd, port);
  try {
    // Ask from the moment it starts: whatever it answers first, the role is already gone by then.
    let firstAnswer: Response | undefined;
    while (firstAnswer === undefined) {
      firstAnswer = await fetch(`${base}/healthz`).catch(() => undefined);
      if (firstAnswer === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(firstAnswer.status, 200);
    assert.equal(await roleExists(doomed.connection.user), false, 'the expired task’s role is dropped before the first request is answered');
    assert.equal(await roleExists(kept.connection.user), true, 'the active task’s role is kept');
    const cut = await session.query('select 1').then(
      () => undefined,
      (error: { code?: string; message: string }) => error.code ?? error.message,
    );
    assert.ok(cut !== undefined, 'the session opened before the crash is cut');
    await session.end().catch(() => undefined);

    // The kept role still works, and its task can still end it.
    const client = new pg.Client({ ...kept.connection });
    await client.connect();
    assert.deepEqual((await client.query('select id from shop.orders')).rows, [{ id: 1 }]);
    await client.end();
  } finally {
    const exited = new Promise((resolve) => second.child.once('exit', resolve));
    second.child.kill('SIGTERM');
    await exited;
  }
});
