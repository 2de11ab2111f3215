/**
 * `npm run bench`: Writ's hot paths against baselines run side by side in the
 * same process, alternating in blocks so machine noise hits both alike.
 * Reports medians (p50), p99 and operations per second, and the ratio of
 * medians. Figures for the record go in docs/benchmarks.md.
 *
 *   npm run bench              all benchmarks, SQLite
 *   npm run bench -- --quick   fewer iterations (a smoke run)
 *   npm run bench -- --only authorize,grant,audit,http,identity
 */
import { createHash, generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import Database from 'better-sqlite3';
import Fastify from 'fastify';
import { importJWK, jwtVerify, SignJWT } from 'jose';
import { stringify as toYaml } from 'yaml';
import { pino } from 'pino';
import { loadConfig } from '../src/core/config.js';
import { createPolicyEngine } from '../src/policy/engine.js';
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
  // Two real trust sources: a SPIFFE JWT bundle file (ES256 JWT-SVIDs) and an
  // OIDC issuer on loopback (discovery + JWKS over HTTP, RS256 tokens).
  const trust = await startTrustFixtures(dataDir);
  const configFile = join(dataDir, 'writ.yaml');
  writeFileSync(configFile, toYaml({ identity: { sources: trust.sources } }));
  const config = loadConfig({ configFile, env: {}, flags: { dataDir, port: 0, dev: true } });
  const logger = pino({ level: 'silent' });
  const writ: Writ = await createWrit({ config, logger, env: {} });
  process.stdout.write(`writ bench: node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, SQLite in ${dataDir}${quick ? ' (quick)' : ''}\n`);

  const identity = await writ.registerIdentity({ id: 'spiffe://bench.local/agent/a', actorType: 'agent', owner: 'bench@example.com', environment: 'production' });
  await writ.registerIdentity({ id: `${trust.issuer}#bench-client`, actorType: 'service', owner: 'bench@example.com', environment: 'production' });
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
  const uncachedEngine = createPolicyEngine(policySet, { cacheEntries: 0 });
  const writeDecision = { principal: identity, action: 'write', resource: 'tickets:T-1042', environment: 'production', intent: 'customer-support' };
  report(
    'policy decision alone (Writ engine, no cache)',
    await sideBySide(
      () => uncachedEngine.decide({ ...writeDecision, now: Date.now() }),
      () => cedar.statefulIsAuthorized({ ...writeCall, preparsedPolicySetId: policySet.version, preparsedSchemaName: policySet.version }),
      Math.round(10_000 * scale),
    ),
    'cedar-wasm statefulIsAuthorized (preparsed)',
  );
  report(
    'policy decision, cache hit (same inputs, same hour)',
    await sideBySide(
      () => writ.policy().decide({ ...writeDecision, now: Date.now() }),
      () => cedar.statefulIsAuthorized({ ...writeCall, preparsedPolicySetId: policySet.version, preparsedSchemaName: policySet.version }),
      Math.round(10_000 * scale),
    ),
    'cedar-wasm statefulIsAuthorized (preparsed)',
    'target ≤ 10 µs p50',
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
  if (runs('identity')) {
    process.stdout.write('\nidentity token verification, warm key sets (each token new to Writ unless said)\n');
    const n = Math.round(3000 * scale);
    const svid = (i: number) =>
      new SignJWT({ sub: 'spiffe://bench.local/agent/a', aud: ['writ'], n: i })
        .setProtectedHeader({ alg: 'ES256', kid: 'bench-ec', typ: 'JWT' })
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(trust.ec);
    const oidc = (i: number) =>
      new SignJWT({ sub: 'bench-client', aud: 'writ', n: i })
        .setProtectedHeader({ alg: 'RS256', kid: 'bench-rsa', typ: 'at+jwt' })
        .setIssuer(trust.issuer)
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(trust.rsa);
    const many = async (count: number, make: (i: number) => Promise<string>) => Promise.all(Array.from({ length: count }, (_, i) => make(i)));
    const warmups = Math.min(2000, Math.ceil(n / 5));
    const total = n + warmups;
    for (const [label, make, key, alg] of [
      ['JWT-SVID ES256 (SPIFFE bundle)', svid, trust.ecPublic, 'ES256'],
      ['OIDC RS256 (JWKS over HTTP)', oidc, trust.rsaPublic, 'RS256'],
    ] as const) {
      const ours = await many(total, make);
      const theirs = await many(total, (i) => make(i + total));
      const jose = await many(total, (i) => make(i + 2 * total));
      const ours2 = await many(total, (i) => make(i + 3 * total));
      let a = 0;
      let b = 0;
      let c = 0;
      let tokens = ours;
      const writVerify = async () => {
        const result = await writ.trustSources.verifyToken(tokens[a++]!);
        if (!result.ok) throw new Error(`bench token refused: ${result.code}`);
      };
      // The floor: the signature check alone, node:crypto, key in hand.
      const signatureOnly = () => {
        const token = theirs[b++]!;
        const dot = token.lastIndexOf('.');
        const options = alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' as const } : key;
        if (!verify('sha256', Buffer.from(token.slice(0, dot)), options, Buffer.from(token.slice(dot + 1), 'base64url'))) throw new Error('bad bench signature');
      };
      report(`verify identity token, ${label}`, await sideBySide(writVerify, signatureOnly, n), 'node:crypto verify of the signature alone', 'target ≤ 100 µs p50');
      // Fresh tokens again: every one is new to Writ's verified-token cache.
      tokens = ours2;
      a = 0;
      report(
        `verify identity token, ${label} (again, other baseline)`,
        await sideBySide(writVerify, () => jwtVerify(jose[c++]!, key, { algorithms: [alg], audience: 'writ' }), Math.floor(n / 2)),
        'jose jwtVerify, key in hand',
      );
    }
    const repeated = await svid(0);
    report(
      'verify identity token, cache hit (same token again)',
      await sideBySide(
        async () => {
          const result = await writ.trustSources.verifyToken(repeated);
          if (!result.ok) throw new Error('bench token refused');
        },
        () => createHash('sha256').update(repeated).digest('base64url'),
        Math.round(20000 * scale),
      ),
      'SHA-256 of the token',
      'target ≤ 5 µs p50',
    );
    const fresh = await many(total, svid);
    const fresh2 = await many(total, svid);
    let c = 0;
    let d = 0;
    report(
      'authenticate (verify + registry), JWT-SVID ES256',
      await sideBySide(
        async () => {
          const result = await writ.authenticator.authenticate(fresh[c++]!);
          if (!result.ok) throw new Error(`bench authentication refused: ${result.code}`);
        },
        async () => {
          const result = await writ.trustSources.verifyToken(fresh2[d++]!);
          if (!result.ok) throw new Error(`bench token refused: ${result.code}`);
        },
        n,
      ),
      'Writ verify alone (trust sources)',
    );
  }

  await writ.close();
  await new Promise((resolve) => trust.server.close(resolve));
  rmSync(dataDir, { recursive: true, force: true });

  process.stdout.write('\n| what | p50 | p99 | per second | baseline (same run) | baseline p50 | ratio | target |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n');
  for (const row of rows) process.stdout.write(`| ${row.join(' | ')} |\n`);
}

/** A SPIFFE JWT bundle file and a loopback OIDC issuer serving discovery and JWKS. */
async function startTrustFixtures(dir: string): Promise<{
  sources: unknown[];
  issuer: string;
  server: Server;
  ec: KeyObject;
  ecPublic: KeyObject;
  rsa: KeyObject;
  rsaPublic: KeyObject;
}> {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const bundleFile = join(dir, 'bench-bundle.json');
  writeFileSync(bundleFile, JSON.stringify({ keys: [{ ...ec.publicKey.export({ format: 'jwk' }), kid: 'bench-ec', use: 'jwt-svid' }], spiffe_refresh_hint: 300 }));
  let issuer = '';
  const server = createHttpServer((request, response) => {
    const body =
      request.url === '/.well-known/openid-configuration'
        ? { issuer, jwks_uri: `${issuer}/jwks` }
        : request.url === '/jwks'
          ? { keys: [{ ...rsa.publicKey.export({ format: 'jwk' }), kid: 'bench-rsa', use: 'sig', alg: 'RS256' }] }
          : undefined;
    response.writeHead(body === undefined ? 404 : 200, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body ?? {}));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    sources: [
      { type: 'spiffe', name: 'bench-spire', trustDomain: 'bench.local', jwtBundle: { file: bundleFile } },
      { type: 'oidc', name: 'bench-oidc', issuer, algorithms: ['RS256'] },
    ],
    issuer,
    server,
    ec: ec.privateKey,
    ecPublic: ec.publicKey,
    rsa: rsa.privateKey,
    rsaPublic: rsa.publicKey,
  };
}

await main();
