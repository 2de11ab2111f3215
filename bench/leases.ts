/**
 * Lease issue and revoke time for PostgreSQL roles (`--only leases`): Writ's
 * lease manager (store row, CREATE ROLE + GRANTs in one transaction, audit
 * record; revoke: NOLOGIN, terminate sessions, DROP OWNED + DROP ROLE, audit)
 * against the same SQL run directly on one connection, alternating op by op in
 * the same run. Needs the PostgreSQL of test/helpers/pg.ts; skipped without it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { pino } from 'pino';
import { stringify as toYaml } from 'yaml';
import { loadConfig } from '../src/core/config.js';
import { generateRoleName } from '../src/leases/postgres.js';
import { createWrit } from '../src/writ.js';
import { createTestDatabase } from '../test/helpers/pg.js';
import type { BenchKit } from './mcp.js';

const AGENT = 'spiffe://bench.local/agent/leases';

function stats(samples: number[], elapsedMs: number) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), perSecond: (samples.length / elapsedMs) * 1000, n: samples.length };
}

export async function benchLeases(kit: Pick<BenchKit, 'report' | 'scale'>): Promise<void> {
  const database = await createTestDatabase();
  if (database === undefined) {
    process.stdout.write('  leases: SKIPPED (no PostgreSQL)\n');
    return;
  }
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-bench-leases-'));
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  await admin.query('create schema shop; create table shop.orders (id int); create table shop.customers (id int)');
  const configFile = join(dataDir, 'writ.yaml');
  writeFileSync(
    configFile,
    toYaml({
      leases: {
        postgres: [
          {
            name: 'shop',
            url: database.url,
            grants: [
              { resource: 'db:orders/lines', schema: 'shop', table: 'orders', read: ['SELECT'] },
              { resource: 'db:orders/people', schema: 'shop', table: 'customers', read: ['SELECT'] },
            ],
          },
        ],
      },
    }),
  );
  const writ = await createWrit({ config: loadConfig({ configFile, env: {}, flags: { dataDir, dev: true } }), logger: pino({ level: 'silent' }), env: {} });
  try {
    const identity = await writ.registerIdentity({ id: AGENT, actorType: 'agent', owner: 'bench@example.com', environment: 'production' });
    const result = await writ.broker.requestTask(
      { identity },
      { purpose: 'bench', intent: 'customer-support', environment: 'production', ttl: 900, scopes: [{ action: 'read', resource: 'db:orders/*' }] },
    );
    if (result.status !== 'granted') throw new Error(`bench task not granted: ${result.status}`);
    const taskId = result.task.id;

    // The baseline: what a hand-written broker would send, on one open connection, no bookkeeping.
    const rawIssue = async (role: string) => {
      const who = pg.escapeIdentifier(role);
      await admin.query('BEGIN');
      await admin.query(`CREATE ROLE ${who} LOGIN PASSWORD 'x' VALID UNTIL '2100-01-01' CONNECTION LIMIT 2`);
      await admin.query(`GRANT USAGE ON SCHEMA shop TO ${who}`);
      await admin.query(`GRANT SELECT ON TABLE shop.orders TO ${who}`);
      await admin.query(`GRANT SELECT ON TABLE shop.customers TO ${who}`);
      await admin.query('COMMIT');
    };
    const rawRevoke = async (role: string) => {
      const who = pg.escapeIdentifier(role);
      await admin.query('BEGIN');
      await admin.query(`DROP OWNED BY ${who}`);
      await admin.query(`DROP ROLE ${who}`);
      await admin.query('COMMIT');
    };

    const n = Math.max(20, Math.round(300 * kit.scale));
    const warm = Math.min(20, Math.ceil(n / 5));
    const samples = { issue: [] as number[], revoke: [] as number[], rawIssue: [] as number[], rawRevoke: [] as number[] };
    const elapsed = { issue: 0, revoke: 0, rawIssue: 0, rawRevoke: 0 };
    for (let i = 0; i < warm + n; i++) {
      const record = i >= warm;
      let t = performance.now();
      const issued = await writ.leases.issue(taskId, 'shop');
      let d = performance.now() - t;
      if (record) (samples.issue.push(d * 1000), (elapsed.issue += d));
      t = performance.now();
      const revoked = await writ.leases.revoke(issued.lease.id, 'bench');
      d = performance.now() - t;
      if (revoked?.state !== 'revoked') throw new Error('bench lease not revoked');
      if (record) (samples.revoke.push(d * 1000), (elapsed.revoke += d));

      const role = generateRoleName('bench_');
      t = performance.now();
      await rawIssue(role);
      d = performance.now() - t;
      if (record) (samples.rawIssue.push(d * 1000), (elapsed.rawIssue += d));
      t = performance.now();
      await rawRevoke(role);
      d = performance.now() - t;
      if (record) (samples.rawRevoke.push(d * 1000), (elapsed.rawRevoke += d));
    }
    kit.report('lease issue (PostgreSQL role, 2 tables)', { subject: stats(samples.issue, elapsed.issue), baseline: stats(samples.rawIssue, elapsed.rawIssue) }, 'raw CREATE ROLE + GRANTs');
    kit.report('lease revoke (terminate, drop)', { subject: stats(samples.revoke, elapsed.revoke), baseline: stats(samples.rawRevoke, elapsed.rawRevoke) }, 'raw DROP OWNED + DROP ROLE');
  } finally {
    await writ.close();
    await admin.end();
    await database.drop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
