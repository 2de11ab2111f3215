/**
 * `npm run bench`: Writ's hot paths against baselines run side by side in the
 * same process, alternating in blocks so machine noise hits both alike.
 * Reports medians (p50), p99 and operations per second, and the ratio of
 * medians. Figures for the record go in docs/benchmarks.md.
 *
 *   npm run bench              all benchmarks, SQLite
 *   npm run bench -- --quick   fewer iterations (a smoke run)
 *   npm run bench -- --only authorize,grant,audit,http
 */
import { generateKeyPairSync, verify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import Database from 'better-sqlite3';
import Fastify from 'fastify';
import { importJWK, SignJWT } from 'jose';
import { pino } from 'pino';
import { loadConfig } from '../src/core/config.js';
import { createServer } from '../src/server/app.js';
import { createWrit, type Writ } from '../src/writ.js';

const quick = process.argv.includes('--quick');
const onlyIndex = process.argv.indexOf('--only');
const only = onlyIndex > 0 ? new Set((process.argv[onlyIndex + 1] ?? '').split(',')) : undefined;
/** True when the named section should run (`--only authorize,grant,audit,http`). */
const runs = (section: string) => only === undefined || only.has(section);
const scale = quick ? 0.1 : 1;

interface Stats {
  readonly p50: number;
  readonly p99: number;
  readonly perSecond: number;
  readonly n: number;
}

function stats(samples: number[], elapsedMs: number): Stats {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99), perSecond: (samples.length / elapsedMs) * 1000, n: samples.length };
}

type Op = () => unknown | Promise<unknown>;

/**
 * Runs `subject` and `baseline` alternately in blocks, sequentially (one op in
 * flight), and returns per-op latency in microseconds for each.
 */
async function sideBySide(subject: Op, baseline: Op, iterations: number, block = 100): Promise<{ subject: Stats; baseline: Stats }> {
  const warm = Math.min(2000, Math.ceil(iterations / 5));
  for (let i = 0; i < warm; i++) {
    await subject();
    await baseline();
  }
  const samples: { subject: number[]; baseline: number[] } = { subject: [], baseline: [] };
  const elapsed = { subject: 0, baseline: 0 };
  for (let done = 0; done < iterations; done += block) {
    for (const which of ['subject', 'baseline'] as const) {
      const op = which === 'subject' ? subject : baseline;
      const blockStart = performance.now();
      for (let i = 0; i < block; i++) {
        const start = performance.now();
        await op();
        samples[which].push((performance.now() - start) * 1000);
      }
      elapsed[which] += performance.now() - blockStart;
    }
  }
  return { subject: stats(samples.subject, elapsed.subject), baseline: stats(samples.baseline, elapsed.baseline) };
}

const rows: string[][] = [];
function report(name: string, result: { subject: Stats; baseline: Stats }, baselineName: string, target?: string): void {
  const f = (n: number) => (n >= 1000 ? `${(n / 1000).toFixed(2)} ms` : `${n.toFixed(1)} µs`);
  const ratio = result.subject.p50 / result.baseline.p50;
  rows.push([name, f(result.subject.p50), f(result.subject.p99), Math.round(result.subject.perSecond).toLocaleString('en-US'), baselineName, f(result.baseline.p50), `${ratio.toFixed(2)}x`, target ?? '']);
  process.stdout.write(`  ${name}: p50 ${f(result.subject.p50)}, p99 ${f(result.subject.p99)}, ${Math.round(result.subject.perSecond)}/s | ${baselineName}: p50 ${f(result.baseline.p50)} | ratio ${ratio.toFixed(2)}x ${target ?? ''}\n`);
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-bench-'));
  const config = loadConfig({ env: {}, ignoreDefaultFile: true, flags: { dataDir, port: 0 } });
  const logger = pino({ level: 'silent' });
  const writ: Writ = await createWrit({ config, logger, env: {} });
  process.stdout.write(`writ bench: node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, SQLite in ${dataDir}${quick ? ' (quick)' : ''}\n`);

  const identity = await writ.registerIdentity({ id: 'spiffe://bench.local/agent/a', actorType: 'agent', owner: 'bench@example.com', environment: 'production' });
  const caller = { identity };
  const taskRequest = {
    purpose: 'benchmark',
    intent: 'customer-support',
    environment: 'production',
    ttl: 300,
    scopes: [
      { action: 'read', resource: 'db:orders/*' },
      { action: 'write', resource: 'tickets:T-1042' },
    ],
  };
  const grant = await writ.broker.requestTask(caller, taskRequest);
  if (grant.status !== 'granted') throw new Error(`bench grant was ${grant.status}`);
  const token = grant.token;

  // Baselines built from the same material Writ uses.
  const { privateKey } = generateKeyPairSync('ed25519');
  const [h64, p64, s64] = token.split('.') as [string, string, string];
  const signingInput = Buffer.from(`${h64}.${p64}`);
  const signature = Buffer.from(s64, 'base64url');
  const taskPublic = writ.taskKeys.active.publicKey;
  const privateJwk = privateKey.export({ format: 'jwk' });

  if (runs('authorize')) {
  process.stdout.write('\naction check, in process (token already seen)\n');
  report(
    'authorize read',
    await sideBySide(
      () => writ.authorize(token, { action: 'read', resource: 'db:orders/1042' }),
      () => verify(null, signingInput, taskPublic, signature),
      Math.round(20_000 * scale),
    ),
    'Ed25519 verify of the token (node:crypto)',
    'target ≤ 50 µs p50',
  );

  const policySet = writ.policy().set;
  const staticPolicies = Object.fromEntries([...policySet.policies.values()].map((p) => [p.id, p.text]));
  const writeCall = {
    principal: { type: 'Writ::Agent', id: identity.id },
    action: { type: 'Writ::Action', id: 'write' },
    resource: { type: 'Writ::Resource', id: 'tickets:T-1042' },
    context: { environment: 'production', actorType: 'agent', intent: 'customer-support', sensitivity: 'internal', tier: 'write', hour: 12, weekday: 1 },
    entities: [
      { uid: { type: 'Writ::Agent', id: identity.id }, attrs: { owner: identity.owner, environment: 'production', actorType: 'agent' }, parents: [] },
      { uid: { type: 'Writ::Resource', id: 'tickets:T-1042' }, attrs: { kind: 'tickets', sensitivity: 'internal' }, parents: [] },
    ] as cedar.Entities,
  };
  report(
    'authorize write (policy re-evaluated)',
    await sideBySide(
      () => writ.authorize(token, { action: 'write', resource: 'tickets:T-1042' }),
      () => cedar.isAuthorized({ ...writeCall, policies: { staticPolicies }, schema: policySet.schemaText }),
      Math.round(10_000 * scale),
    ),
    'raw cedar-wasm isAuthorized, same request',
    'target ≤ 300 µs p50',
  );
  report(
    'policy decision alone (Writ engine)',
    await sideBySide(
      () => writ.policy().decide({ principal: identity, action: 'write', resource: 'tickets:T-1042', environment: 'production', intent: 'customer-support', now: Date.now() }),
      () => cedar.statefulIsAuthorized({ ...writeCall, preparsedPolicySetId: policySet.version, preparsedSchemaName: policySet.version }),
      Math.round(10_000 * scale),
    ),
    'cedar-wasm statefulIsAuthorized (preparsed)',
  );

  }

  if (runs('grant')) {
  process.stdout.write('\ntask grant, in process (identity already authenticated)\n');
  const joseKey = await importJWK(privateJwk as never, 'EdDSA');
  report(
    'task grant issued',
    await sideBySide(
      () => writ.broker.requestTask(caller, taskRequest),
      () => new SignJWT({ task: { id: 'x' }, scope: 'read:db:orders/*' }).setProtectedHeader({ alg: 'EdDSA' }).setExpirationTime('5m').sign(joseKey),
      Math.round(3000 * scale),
      50,
    ),
    'jose SignJWT alone (no policy, store or audit)',
    'target ≤ 3 ms p50',
  );

  }

  if (runs('audit')) {
  process.stdout.write('\naudit appends\n');
  const raw = new Database(join(dataDir, 'baseline.db'));
  raw.pragma('journal_mode = WAL');
  raw.pragma('synchronous = NORMAL');
  raw.exec('create table a (seq integer primary key, record text, hash text)');
  const insert = raw.prepare('insert into a (record, hash) values (?, ?)');
  const event = { type: 'action.check' as const, decision: 'allow' as const, actor: { id: identity.id }, action: 'read', resource: 'db:orders/1', policies: [] };
  report(
    'audit append, one at a time',
    await sideBySide(() => writ.audit.append(event), () => insert.run('{"type":"action.check"}', 'h'), Math.round(10_000 * scale)),
    'raw better-sqlite3 insert (no chain)',
  );
  for (const inFlight of [16, 128]) {
    const total = Math.round(20_000 * scale);
    const start = performance.now();
    for (let done = 0; done < total; done += inFlight) await Promise.all(Array.from({ length: inFlight }, () => writ.audit.append(event)));
    const perSecond = (total / (performance.now() - start)) * 1000;
    rows.push([`audit append, ${inFlight} in flight (group commit)`, '', '', Math.round(perSecond).toLocaleString('en-US'), '', '', '', '']);
    process.stdout.write(`  audit append, ${inFlight} in flight: ${Math.round(perSecond)}/s\n`);
  }

  raw.close();
  }

  if (runs('http')) {
  process.stdout.write('\nover HTTP (loopback, keep-alive)\n');
  const app = createServer(writ, { logger });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const plain = Fastify();
  plain.post('/noop', async () => ({ allowed: true }));
  await plain.listen({ host: '127.0.0.1', port: 0 });
  const port = (s: typeof app) => (s.server.address() as { port: number }).port;
  const body = JSON.stringify({ token, action: 'read', resource: 'db:orders/1042' });
  const post = (url: string, payload: string, headers: Record<string, string> = {}) =>
    fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: payload }).then((r) => r.text());
  report(
    'POST /v1/authorize (read)',
    await sideBySide(
      () => post(`http://127.0.0.1:${port(app)}/v1/authorize`, body),
      () => post(`http://127.0.0.1:${port(plain)}/noop`, body),
      Math.round(5000 * scale),
    ),
    'POST to an empty Fastify route',
  );
  const identityToken = (await writ.issueIdentityToken(identity.id)).token;
  const taskBody = JSON.stringify(taskRequest);
  report(
    'POST /v1/tasks (grant, with identity verification)',
    await sideBySide(
      () => post(`http://127.0.0.1:${port(app)}/v1/tasks`, taskBody, { authorization: `Bearer ${identityToken}` }),
      () => post(`http://127.0.0.1:${port(plain)}/noop`, taskBody),
      Math.round(2000 * scale),
      50,
    ),
    'POST to an empty Fastify route',
    'target ≤ 3 ms p50 (in process)',
  );
  await app.close();
  await plain.close();
  }
  await writ.close();
  rmSync(dataDir, { recursive: true, force: true });

  process.stdout.write('\n| what | p50 | p99 | per second | baseline (same run) | baseline p50 | ratio | target |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n');
  for (const row of rows) process.stdout.write(`| ${row.join(' | ')} |\n`);
}

await main();
