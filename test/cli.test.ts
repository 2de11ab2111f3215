/**
 * The `writ` command as a user runs it: the built bin, real processes, a data
 * dir shared between commands and a running server.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { HELP } from '../src/cli/main.js';
import { WRIT_YAML_TEMPLATE } from '../src/cli/init-template.js';
import { loadConfig } from '../src/core/config.js';
import { BIN, cleanEnv, tempDirs } from './helpers/cli.js';
import { claimsOf } from './helpers/harness.js';
import { freePort } from './helpers/net.js';

const README = new URL('../README.md', import.meta.url).pathname;
const tempDir = tempDirs('writ-cli-');

function writ(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}) {
  const result = spawnSync(process.execPath, [BIN, ...args], { cwd: options.cwd ?? tempDir(), env: cleanEnv(options.env), encoding: 'utf8' });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function register(dataDir: string, id: string, extra: string[] = []) {
  return writ(['identity', 'register', '--spiffe-id', id, '--owner', 'alice@example.com', '--environment', 'production', '--data-dir', dataDir, ...extra]);
}

describe('help and usage', () => {
  test('--help prints the usage the README shows', () => {
    const answer = writ(['--help']);
    assert.equal(answer.code, 0);
    assert.equal(answer.stdout, HELP);
    assert.ok(readFileSync(README, 'utf8').includes(HELP.trimEnd()), 'README.md carries the current `writ --help` output');
  });

  test('an unknown command or flag is a usage error (exit 2)', () => {
    assert.equal(writ(['launch']).code, 2);
    assert.equal(writ(['serve', '--no-such-flag']).code, 2);
    assert.equal(writ(['serve', '--port', 'eighty']).code, 2);
  });
});

describe('writ init', () => {
  test('writes a writ.yaml whose values are exactly the defaults, and will not overwrite it', () => {
    const cwd = tempDir();
    assert.equal(writ(['init'], { cwd }).code, 0);
    const written = readFileSync(join(cwd, 'writ.yaml'), 'utf8');
    assert.equal(written, WRIT_YAML_TEMPLATE);
    const fromFile = loadConfig({ configFile: join(cwd, 'writ.yaml'), env: {}, cwd });
    const defaults = loadConfig({ env: {}, cwd, ignoreDefaultFile: true });
    assert.deepEqual({ ...fromFile, paths: undefined }, { ...defaults, paths: undefined });
    assert.equal(fromFile.paths.dataDir, defaults.paths.dataDir);
    assert.equal(writ(['init'], { cwd }).code, 2, 'refuses to overwrite');
    writeFileSync(join(cwd, 'writ.yaml'), '# mine\n');
    assert.equal(writ(['init', '--force'], { cwd }).code, 0);
    assert.equal(readFileSync(join(cwd, 'writ.yaml'), 'utf8'), WRIT_YAML_TEMPLATE);
  });
});

describe('writ identity', () => {
  const dataDir = tempDir();
  const agent = 'spiffe://demo.local/agent/support';

  test('register, list, and a second register of the same id fails', () => {
    const first = register(dataDir, agent, ['--label', 'team=support']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /registered spiffe:\/\/demo.local\/agent\/support \(agent, owner alice@example.com, environment production/);
    const again = register(dataDir, agent);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /ERR_IDENTITY_EXISTS/);
    const list = writ(['identity', 'list', '--json', '--data-dir', dataDir]);
    const [identity] = JSON.parse(list.stdout);
    assert.equal(identity.id, agent);
    assert.deepEqual(identity.labels, { team: 'support' });
    assert.equal(identity.state, 'active');
    assert.ok(identity.expiresAt > Date.now() + 89 * 86_400_000, 'agents expire in 90 days by default');
  });

  test('every agent has an owner, and ids must be SPIFFE IDs', () => {
    const ownerless = writ(['identity', 'register', '--spiffe-id', 'spiffe://demo.local/agent/orphan', '--data-dir', dataDir]);
    assert.equal(ownerless.code, 1);
    assert.match(ownerless.stderr, /ERR_VALIDATION/);
    for (const id of ['https://evil.example/agent', 'spiffe://Demo.Local/agent', 'spiffe://demo.local', 'spiffe://demo.local/a/../b', "spiffe://demo.local/a'--"]) {
      const answer = register(dataDir, id);
      assert.equal(answer.code, 1, id);
      assert.match(answer.stderr, /ERR_VALIDATION/);
    }
  });

  test('identity token prints a short-lived ES256 JWT-SVID for a registered identity only', () => {
    const answer = writ(['identity', 'token', agent, '--data-dir', dataDir, '--ttl', '10m']);
    assert.equal(answer.code, 0, answer.stderr);
    const token = answer.stdout.trim();
    const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString());
    assert.equal(header.alg, 'ES256');
    const claims = claimsOf(token);
    assert.equal(claims.sub, agent);
    assert.deepEqual(claims.aud, ['writ']);
    assert.equal(claims.exp - claims.iat, 300, 'capped at 5 minutes');
    const stranger = writ(['identity', 'token', 'spiffe://demo.local/agent/stranger', '--data-dir', dataDir]);
    assert.equal(stranger.code, 1);
    assert.equal(stranger.stdout, '', 'an unregistered identity gets nothing');
    assert.match(stranger.stderr, /ERR_IDENTITY_NOT_FOUND/);
  });

  test('an expired identity gets no token', async () => {
    assert.equal(register(dataDir, 'spiffe://demo.local/agent/brief', ['--expires-in', '1s']).code, 0);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const answer = writ(['identity', 'token', 'spiffe://demo.local/agent/brief', '--data-dir', dataDir]);
    assert.equal(answer.code, 1);
    assert.equal(answer.stdout, '');
    assert.match(answer.stderr, /ERR_IDENTITY_INACTIVE/);
  });

  test('WRIT_DATA_DIR and --data-dir name the same state', () => {
    const list = writ(['identity', 'list'], { env: { WRIT_DATA_DIR: dataDir } });
    assert.match(list.stdout, /spiffe:\/\/demo.local\/agent\/support/);
  });
});

describe('writ audit verify', () => {
  function prepared(): { dataDir: string; db: () => Database.Database } {
    const dataDir = tempDir();
    for (const n of [1, 2, 3]) assert.equal(register(dataDir, `spiffe://demo.local/agent/a${n}`).code, 0);
    assert.equal(writ(['identity', 'token', 'spiffe://demo.local/agent/a1', '--data-dir', dataDir]).code, 0);
    return { dataDir, db: () => new Database(join(dataDir, 'writ.db')) };
  }
  const verify = (dataDir: string) => writ(['audit', 'verify', '--data-dir', dataDir]);

  test('an intact chain verifies (exit 0)', () => {
    const { dataDir } = prepared();
    const answer = verify(dataDir);
    assert.equal(answer.code, 0, answer.stderr);
    assert.match(answer.stdout, /audit chain OK: 4 records, head [0-9a-f]{64}/);
  });

  test('a changed record is caught and named', () => {
    const { dataDir, db } = prepared();
    const conn = db();
    conn.prepare(`update audit_records set record = replace(record, 'alice@example.com', 'mallory@example.com') where seq = 2`).run();
    conn.close();
    const answer = verify(dataDir);
    assert.equal(answer.code, 1);
    assert.match(answer.stderr, /ERR_AUDIT_CHAIN_BROKEN: first bad record seq 2 \(id aud_[^)]+\): hash-mismatch/);
  });

  test('a record rewritten with a recomputed hash is still caught by the next link', () => {
    const { dataDir, db } = prepared();
    const conn = db();
    const row = conn.prepare('select record from audit_records where seq = 2').get() as { record: string };
    const forged = row.record.replace('alice@example.com', 'mallory@example.com');
    conn.prepare('update audit_records set record = ?, hash = ? where seq = 2').run(forged, createHash('sha256').update(forged).digest('hex'));
    conn.close();
    const answer = verify(dataDir);
    assert.equal(answer.code, 1);
    assert.match(answer.stderr, /first bad record seq 3 .*prev-hash-mismatch/);
  });

  test('a deleted record is caught', () => {
    const { dataDir, db } = prepared();
    const conn = db();
    conn.prepare('delete from audit_records where seq = 2').run();
    conn.close();
    const answer = verify(dataDir);
    assert.equal(answer.code, 1);
    assert.match(answer.stderr, /first bad record seq 3 .*sequence-gap/);
  });

  test('reordered records are caught', () => {
    const { dataDir, db } = prepared();
    const conn = db();
    conn.exec(`
      update audit_records set seq = -2 where seq = 2;
      update audit_records set seq = 2 where seq = 3;
      update audit_records set seq = 3 where seq = -2;`);
    conn.close();
    const answer = verify(dataDir);
    assert.equal(answer.code, 1);
    assert.match(answer.stderr, /first bad record seq 2 /);
  });
});

describe('writ identity lifecycle and writ admin token', () => {
  const dataDir = tempDir();
  const run = (...args: string[]) => writ([...args, '--data-dir', dataDir]);
  const stateOf = (id: string) => (JSON.parse(run('identity', 'list', '--json').stdout) as { id: string; state: string }[]).find((i) => i.id === id)?.state;

  test('suspend, reactivate and decommission move the state, say how many tasks were revoked, and decommission is final', () => {
    const agent = 'spiffe://demo.local/agent/lifecycle';
    assert.equal(register(dataDir, agent).code, 0);
    const suspended = run('identity', 'suspend', agent, '--note', 'investigating');
    assert.equal(suspended.code, 0, suspended.stderr);
    assert.match(suspended.stdout, /is suspended; 0 active task\(s\) revoked/);
    assert.equal(stateOf(agent), 'suspended');
    assert.equal(run('identity', 'reactivate', agent).code, 0);
    assert.equal(stateOf(agent), 'active');
    assert.equal(run('identity', 'decommission', agent).code, 0);
    const again = run('identity', 'reactivate', agent);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /ERR_IDENTITY_STATE_CONFLICT/);
    assert.equal(stateOf(agent), 'decommissioned');
    const nobody = run('identity', 'suspend', 'spiffe://demo.local/agent/nobody');
    assert.match(nobody.stderr, /ERR_IDENTITY_NOT_FOUND/);
    assert.equal(run('identity', 'suspend').code, 2, 'usage error without an id');
  });

  test('only a quarantined identity can be claimed; OIDC-style ids register with --id; only humans hold admin scopes', () => {
    const claim = run('identity', 'claim', 'spiffe://demo.local/agent/lifecycle', '--owner', 'bob@example.com');
    assert.equal(claim.code, 1);
    assert.match(claim.stderr, /ERR_IDENTITY_STATE_CONFLICT/);
    assert.equal(run('identity', 'claim', 'spiffe://demo.local/agent/x').code, 2, 'claim needs --owner');
    const ci = run('identity', 'register', '--id', 'https://token.actions.githubusercontent.com#acme/deployer@refs/heads/main', '--actor-type', 'service', '--owner', 'platform@example.com');
    assert.equal(ci.code, 0, ci.stderr);
    const agentAdmin = run('identity', 'register', '--spiffe-id', 'spiffe://demo.local/agent/sneaky', '--owner', 'x@example.com', '--admin-scope', 'admin:tokens');
    assert.equal(agentAdmin.code, 1);
    assert.match(agentAdmin.stderr, /ERR_VALIDATION/);
    assert.equal(run('identity', 'register', '--id', 'https://login.example.com#alice', '--actor-type', 'human', '--admin-scope', 'identities:read').code, 0);
    assert.equal(run('identity', 'register', '--id', 'https://login.example.com#bob', '--actor-type', 'human', '--admin-scope', 'root').code, 2);
  });

  test('admin token create prints the token once; list never shows it; revoke ends it', () => {
    const created = run('admin', 'token', 'create', '--name', 'ci reader', '--scope', 'identities:read', '--ttl', '30d');
    assert.equal(created.code, 0, created.stderr);
    const token = created.stdout.trim();
    assert.match(token, /^writ_admin_[A-Za-z0-9_-]{43}$/);
    const listed = run('admin', 'token', 'list', '--json');
    assert.ok(!listed.stdout.includes(token), 'the token is never listed');
    const [record] = JSON.parse(listed.stdout) as { id: string; name: string; scopes: string[]; tokenHash?: string }[];
    assert.deepEqual([record?.name, record?.scopes, record?.tokenHash], ['ci reader', ['identities:read'], undefined]);
    assert.match(run('admin', 'token', 'list').stdout, /active/);
    assert.equal(run('admin', 'token', 'revoke', record!.id).code, 0);
    assert.match(run('admin', 'token', 'list').stdout, /revoked/);
    assert.match(run('admin', 'token', 'revoke', record!.id).stderr, /ERR_NOT_FOUND/);
    assert.equal(run('admin', 'token', 'create', '--name', 'x').code, 2, 'needs --scope');
    assert.equal(run('admin', 'token', 'create', '--name', 'x', '--scope', 'everything').code, 1);
    assert.equal(run('admin', 'nope').code, 2);
  });

  test('every change is on the audit chain with the local operator as actor', () => {
    const verified = run('audit', 'verify');
    assert.equal(verified.code, 0, verified.stderr);
  });
});

describe('writ demo', () => {
  test('runs the whole loop against a Writ it starts, and says Demo OK', () => {
    const result = spawnSync(process.execPath, [BIN, 'demo'], { cwd: tempDir(), env: cleanEnv(), encoding: 'utf8', timeout: 60_000 });
    assert.equal(result.status, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /Demo OK\./);
    assert.match(result.stdout, /is suspended; 1 active task\(s\) revoked/);
  });
});

describe('writ serve', () => {

  /** Starts `writ serve` in `cwd`; resolves once it logs that it listens. */
  async function startServe(cwd: string, port: number, args: string[] = []) {
    const child = spawn(process.execPath, [BIN, 'serve', ...args], { cwd, env: cleanEnv({ WRIT_PORT: String(port) }), stdio: ['ignore', 'pipe', 'pipe'] });
    const logs: Record<string, unknown>[] = [];
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const listening = new Promise<Record<string, unknown>>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${stderr}`)));
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const record = JSON.parse(line) as Record<string, unknown>;
        logs.push(record);
        if (String(record.msg).startsWith('Writ listening')) resolve(record);
      });
    });
    const record = await listening;
    const stop = async () => {
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      return exited;
    };
    return { record, logs, stderr: () => stderr, stop };
  }

  test('starts on the embedded default, logs where it listens, prints the bootstrap admin token once, and stops cleanly on SIGTERM', async () => {
    const cwd = tempDir();
    const port = await freePort();
    const first = await startServe(cwd, port, ['--dev']);
    try {
      assert.equal(first.record.url, `http://127.0.0.1:${port}`);
      assert.match(String(first.record.store), /^sqlite:.*\.writ\/writ\.db$/);
      assert.equal(statSync(join(cwd, '.writ', 'master.key')).mode & 0o777, 0o600, 'generated master key is private');
      assert.ok(first.logs.some((l) => String(l.msg).startsWith('Try it')), 'tells the user how to try it');
      assert.ok(first.logs.some((l) => String(l.msg).includes('dev issuer is on')), 'warns loudly that the dev issuer is on');
      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.equal(health.status, 200);

      const token = /writ_admin_[A-Za-z0-9_-]{43}/.exec(first.stderr())?.[0];
      assert.ok(token !== undefined, 'the bootstrap admin token is printed on the terminal');
      assert.ok(!JSON.stringify(first.logs).includes(token), 'and never logged');
      const open = await fetch(`http://127.0.0.1:${port}/v1/identities`);
      assert.equal(open.status, 401, 'no open admin endpoint');
      const listed = await fetch(`http://127.0.0.1:${port}/v1/identities`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(listed.status, 200);
    } finally {
      assert.equal(await first.stop(), 0);
    }
    assert.ok(!JSON.stringify(first.logs).includes(readFileSync(join(cwd, '.writ', 'master.key'), 'utf8').trim()), 'the master key is never logged');

    const second = await startServe(cwd, port);
    try {
      assert.doesNotMatch(second.stderr(), /writ_admin_/, 'the bootstrap token is printed at the first start only');
      assert.ok(second.logs.some((l) => String(l.msg).includes('no trust source is configured')), 'without --dev or a source, says nobody can authenticate');
      assert.ok(!second.logs.some((l) => String(l.msg).startsWith('Try it')));
    } finally {
      assert.equal(await second.stop(), 0);
    }
  });

  test('refuses to start when the master key file is readable by others', () => {
    const dataDir = tempDir();
    assert.equal(register(dataDir, 'spiffe://demo.local/agent/x').code, 0);
    const keyFile = join(dataDir, 'master.key');
    chmodSync(keyFile, 0o644);
    const answer = writ(['identity', 'list', '--data-dir', dataDir]);
    assert.equal(answer.code, 1);
    assert.match(answer.stderr, /ERR_MASTER_KEY/);
  });

  test('a different master key does not open the stored signing keys', () => {
    const dataDir = tempDir();
    assert.equal(register(dataDir, 'spiffe://demo.local/agent/x').code, 0);
    const answer = writ(['identity', 'token', 'spiffe://demo.local/agent/x', '--data-dir', dataDir], { env: { WRIT_MASTER_KEY: 'a'.repeat(64) } });
    assert.equal(answer.code, 1);
    assert.match(answer.stderr, /ERR_MASTER_KEY/);
    assert.equal(answer.stdout, '');
  });
});

describe('writ break-glass and writ review break-glass', () => {
  const dataDir = tempDir();
  const human = (id: string, labels: string[]) =>
    writ(['identity', 'register', '--spiffe-id', id, '--actor-type', 'human', '--environment', 'production', ...labels.flatMap((l) => ['--label', l]), '--data-dir', dataDir]);
  const as = (id: string) => ['--dev', '--identity', id, '--data-dir', dataDir];
  const OLGA = 'spiffe://demo.local/human/olga';
  const CAROL = 'spiffe://demo.local/human/carol';

  test('a human on call breaks the glass for an agent it owns; the token is printed once; a review is owed; ended, someone else closes it', () => {
    assert.equal(register(dataDir, 'spiffe://demo.local/agent/support').code, 0);
    assert.equal(human(OLGA, ['on-call=production', 'email=alice@example.com']).code, 0);
    assert.equal(human(CAROL, ['approver=production']).code, 0);
    const args = ['break-glass', '--reason', 'Checkout down; fix stuck orders by hand', '--incident', 'INC-4521', '--environment', 'production', '--scope', 'write:db:orders/*', '--duration', '15m', '--for', 'spiffe://demo.local/agent/support'];

    const noReason = writ([...args.filter((a, i) => a !== '--reason' && args[i - 1] !== '--reason'), ...as(OLGA)]);
    assert.equal(noReason.code, 1);
    assert.match(noReason.stderr, /ERR_VALIDATION: reason/);
    const tooLong = writ([...args.map((a) => (a === '15m' ? '5h' : a)), ...as(OLGA)]);
    assert.equal(tooLong.code, 1);
    assert.match(tooLong.stderr, /ERR_VALIDATION: duration/);
    assert.equal(writ([...args, '--scope', 'not-a-scope', ...as(OLGA)]).code, 2);
    assert.equal(writ(args.concat('--data-dir', dataDir)).code, 2, 'no credential: usage error');

    const started = writ([...args, ...as(OLGA)]);
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stderr, /BREAK-GLASS brk_[A-Za-z0-9_-]{22} for spiffe:\/\/demo.local\/agent\/support \(INC-4521\)/);
    const claims = claimsOf(started.stdout.trim());
    assert.equal(claims.task.breakGlass, true);
    assert.equal(claims.exp - claims.iat, 15 * 60);

    const owed = writ(['review', 'break-glass', '--json', ...as(CAROL)]);
    assert.equal(owed.code, 0, owed.stderr);
    const [grant] = JSON.parse(owed.stdout);
    assert.equal(grant.state, 'running');
    assert.equal(grant.incident, 'INC-4521');
    const early = writ(['review', 'break-glass', grant.id, '--note', 'fine', ...as(CAROL)]);
    assert.equal(early.code, 1);
    assert.match(early.stderr, /ERR_TASK_STATE_CONFLICT/);

    const ended = writ(['break-glass', 'end', grant.id, '--note', 'incident resolved', ...as(OLGA)]);
    assert.equal(ended.code, 0, ended.stderr);
    assert.match(ended.stdout, /ended; review owed/);
    const own = writ(['review', 'break-glass', grant.id, '--note', 'all good', ...as(OLGA)]);
    assert.equal(own.code, 1);
    assert.match(own.stderr, /ERR_FORBIDDEN/, 'who broke the glass does not review it');
    const reviewed = writ(['review', 'break-glass', grant.id, '--note', 'Orders fixed; access justified', ...as(CAROL)]);
    assert.equal(reviewed.code, 0, reviewed.stderr);
    assert.match(reviewed.stdout, new RegExp(`${grant.id} reviewed by ${CAROL}`));
    assert.match(writ(['review', 'break-glass', ...as(CAROL)]).stdout, /no break-glass grant is owed a review/);
  });
});
