/**
 * PostgreSQL for tests, real and throwaway. In order:
 *   1. WRIT_TEST_PG_URL when set;
 *   2. the local server on 127.0.0.1:5432 (user postgres, trust auth), as in CI;
 *   3. a private cluster started with initdb/pg_ctl when those binaries exist
 *      (not as root: initdb refuses);
 *   4. otherwise the caller skips, loudly; with CI=true it fails instead.
 * Each call gets a fresh database, dropped when the test file ends.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const LOCAL_URL = 'postgres://postgres@127.0.0.1:5432/postgres';
let serverUrl: Promise<string | undefined> | undefined;

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function startThrowawayCluster(): string | undefined {
  if (process.getuid?.() === 0) return undefined;
  if (spawnSync('initdb', ['--version']).status !== 0) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'writ-pg-'));
  const port = 20000 + Math.floor(Math.random() * 20000);
  execFileSync('initdb', ['-D', join(dir, 'data'), '-U', 'postgres', '--auth=trust', '-E', 'UTF8'], { stdio: 'ignore' });
  execFileSync('pg_ctl', ['-D', join(dir, 'data'), '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`, '-w', 'start', '-l', join(dir, 'log')], {
    stdio: 'ignore',
  });
  process.once('exit', () => {
    spawnSync('pg_ctl', ['-D', join(dir, 'data'), '-m', 'immediate', 'stop'], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });
  return `postgres://postgres@127.0.0.1:${port}/postgres`;
}

async function findServer(): Promise<string | undefined> {
  if (process.env.WRIT_TEST_PG_URL) return process.env.WRIT_TEST_PG_URL;
  if (await reachable(LOCAL_URL)) return LOCAL_URL;
  return startThrowawayCluster();
}

export interface TestDatabase {
  readonly url: string;
  drop(): Promise<void>;
}

/**
 * A fresh, empty database, or undefined (after a loud message) when no
 * PostgreSQL can be had here. Throws under CI, where PostgreSQL must run.
 */
export async function createTestDatabase(): Promise<TestDatabase | undefined> {
  serverUrl ??= findServer();
  const base = await serverUrl;
  if (base === undefined) {
    const message = 'PostgreSQL tests SKIPPED: no WRIT_TEST_PG_URL, no server on 127.0.0.1:5432, and no initdb to start one';
    if (process.env.CI) throw new Error(`${message} (CI=true: PostgreSQL is required)`);
    process.stderr.write(`\n*** ${message} ***\n\n`);
    return undefined;
  }
  const name = `writ_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: base });
      await client.connect();
      await client.query(`drop database if exists ${name} with (force)`);
      await client.end();
    },
  };
}

export interface PrivateCluster {
  /** The superuser `postgres` over TCP (trusted from loopback). */
  readonly adminUrl: string;
  readonly port: number;
  /** The server's log (stderr), for tests of what it writes there. */
  readonly logFile: string;
  stop(): void;
}

/**
 * A private PostgreSQL cluster of its own, for what the shared server cannot
 * show (it trusts every loopback login): `hba` lines after a trusted
 * `postgres` superuser, `settings` as `-c` options. As root it runs as the
 * `postgres` user (initdb refuses root). Undefined, loudly, when initdb or
 * that user is missing; under CI=true it throws instead.
 */
export function startPrivateCluster(options: { readonly hba: readonly string[]; readonly settings?: Readonly<Record<string, string>> }): PrivateCluster | undefined {
  const asRoot = process.getuid?.() === 0;
  const postgresUser = asRoot ? spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }) : undefined;
  const runnable = spawnSync('initdb', ['--version']).status === 0 && (!asRoot || (postgresUser?.status === 0 && spawnSync('runuser', ['--help']).status === 0));
  if (!runnable) {
    const message = 'PostgreSQL private-cluster tests SKIPPED: no initdb (or, as root, no postgres user and runuser)';
    if (process.env.CI) throw new Error(`${message} (CI=true: they are required)`);
    process.stderr.write(`\n*** ${message} ***\n\n`);
    return undefined;
  }
  const dir = mkdtempSync(join(tmpdir(), 'writ-pg-private-'));
  const run = (command: string, args: string[]) => execFileSync(asRoot ? 'runuser' : command, asRoot ? ['-u', 'postgres', '--', command, ...args] : args, { stdio: 'ignore' });
  if (asRoot) execFileSync('chown', ['postgres', dir]);
  const data = join(dir, 'data');
  const logFile = join(dir, 'log');
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8']);
  writeFileSync(join(data, 'pg_hba.conf'), ['local all postgres trust', 'host all postgres 127.0.0.1/32 trust', ...options.hba, ''].join('\n'));
  const port = 20000 + Math.floor(Math.random() * 20000);
  const settings = Object.entries({ listen_addresses: '127.0.0.1', ...options.settings }).map(([k, v]) => `-c ${k}=${v}`).join(' ');
  run('pg_ctl', ['-D', data, '-o', `-p ${port} -k ${dir} ${settings}`, '-w', 'start', '-l', logFile]);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    spawnSync(asRoot ? 'runuser' : 'pg_ctl', [...(asRoot ? ['-u', 'postgres', '--', 'pg_ctl'] : []), '-D', data, '-m', 'immediate', 'stop'], { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  return { adminUrl: `postgres://postgres@127.0.0.1:${port}/postgres`, port, logFile, stop };
}
