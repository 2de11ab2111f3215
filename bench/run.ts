/**
 * `npm run bench`: Writ's hot paths against baselines run side by side in the
 * same process, alternating in blocks so machine noise hits both alike.
 * Reports medians (p50), p99 and operations per second, and the ratio of
 * medians. Figures for the record go in docs/benchmarks.md.
 *
 *   npm run bench              all benchmarks, SQLite
 *   npm run bench -- --quick   fewer iterations (a smoke run)
 *   npm run bench -- --only authorize,grant,audit,http,identity,decision,mcp
 *
 * A raw cedar-wasm baseline is only fair when it is asked exactly what Writ's
 * engine asks Cedar: test/helpers/cedar-request.ts rebuilds that request, and each
 * baseline is checked against the engine's decision before it is timed. A
 * baseline that disagrees aborts the run.
 */
import { createHash, generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import Fastify from 'fastify';
import { importJWK, jwtVerify, SignJWT } from 'jose';
import { stringify as toYaml } from 'yaml';
import { pino } from 'pino';
import { loadConfig } from '../src/core/config.js';
import { cedar } from '../src/policy/cedar.js';
import { createPolicyEngine, type DecisionInput, type PolicyDecision, type PolicyEngine, type PolicyOutcome } from '../src/policy/engine.js';
import { createObservations } from '../src/policy/observations.js';
import { loadPolicySet, type PolicySet } from '../src/policy/policy-set.js';
import { loadPolicyTests } from '../src/policy/policy-tests.js';
import { riskSettingsSchema, type RiskSettings } from '../src/policy/risk.js';
import { createServer } from '../src/server/app.js';
import { createWrit, type Writ } from '../src/writ.js';
import { checkSameDecision, checkSameRequest, mirrorCedarRequest, policyTextsFor, preparsedBaseline, type CedarRequest } from '../test/helpers/cedar-request.js';
import { buildDecisionMix, VARIANTS_PER_CASE } from '../test/helpers/decision-mix.js';
import { benchMcpGateway } from './mcp.js';
import { benchHttpProxy } from './proxy.js';
import { benchLeases } from './leases.js';

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
  process.stdout.write(`  ${name}: p50 ${f(result.subject.p50)}, p99 ${f(result.subject.p99)}, ${Math.round(result.subject.perSecond)}/s | ${baselineName}: p50 ${f(result.baseline.p50)}, p99 ${f(result.baseline.p99)} | ratio ${ratio.toFixed(2)}x ${target ?? ''}\n`);
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
  // What Writ's action check hands the engine for a write of tickets:T-1042
  // under the bench task: the identity (registered just now, so its age
  // counts), the call stage, the task's intent and purpose, a kind it was
  // granted before, and a call rate past saturation (this section makes
  // thousands of calls a minute, so Writ's own count is past it at once).
  const writeInput: DecisionInput = {
    principal: identity,
    action: 'write',
    resource: 'tickets:T-1042',
    environment: taskRequest.environment,
    intent: taskRequest.intent,
    purpose: taskRequest.purpose,
    stage: 'call',
    now: Date.now(),
    observed: { callsLastMinute: 60, unusualResource: false },
  };
  const uncachedEngine = createPolicyEngine(policySet, { cacheEntries: 0, risk: writ.config.policy.risk });
  const writeCall = checkedBaseline('authorize write', policySet, uncachedEngine, writeInput, writ.config.policy.risk, 'allow');
  const checkAuthorize = await writ.authorize(token, { action: 'write', resource: 'tickets:T-1042' });
  if (checkAuthorize.decision !== 'allow') throw new Error(`bench: writ.authorize of the write was ${checkAuthorize.decision}, not allow`);
  report(
    'authorize write (policy re-evaluated, decision cached)',
    await sideBySide(
      () => writ.authorize(token, { action: 'write', resource: 'tickets:T-1042' }),
      () => cedar.isAuthorized({ ...writeCall, policies: { staticPolicies: policyTextsFor(policySet, writeInput.environment) }, schema: policySet.schemaText, validateRequest: true }),
      Math.round(10_000 * scale),
    ),
    'raw cedar-wasm isAuthorized, same request',
    'target ≤ 300 µs p50',
  );
  const preparsedWrite = { ...writeCall, ...preparsedBaseline(policySet)(writeInput.environment) };
  report(
    'policy decision alone (Writ engine, no cache)',
    await sideBySide(
      () => uncachedEngine.decide({ ...writeInput, now: Date.now() }),
      () => cedar.statefulIsAuthorized(preparsedWrite),
      Math.round(10_000 * scale),
    ),
    'cedar-wasm statefulIsAuthorized (preparsed)',
  );
  report(
    'policy decision, cache hit (same inputs, same hour)',
    await sideBySide(
      () => writ.policy().decide({ ...writeInput, now: Date.now() }),
      () => cedar.statefulIsAuthorized(preparsedWrite),
      Math.round(10_000 * scale),
    ),
    'cedar-wasm statefulIsAuthorized (preparsed)',
    'target ≤ 10 µs p50',
  );

  }

  if (runs('decision')) await benchDecisions();

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

  if (runs('mcp')) await benchMcpGateway({ sideBySide, report, scale });
  if (runs('proxy')) await benchHttpProxy({ sideBySide, report, scale });
  if (runs('leases')) await benchLeases({ report, scale });

  await writ.close();
  await new Promise((resolve) => trust.server.close(resolve));
  rmSync(dataDir, { recursive: true, force: true });

  process.stdout.write('\n| what | p50 | p99 | per second | baseline (same run) | baseline p50 | ratio | target |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n');
  for (const row of rows) process.stdout.write(`| ${row.join(' | ')} |\n`);
}

/**
 * The Cedar request Writ's engine sends for `input`, once it has been seen to
 * be exactly what the engine sends, and raw cedar-wasm to decide it as the
 * engine does both ways a baseline calls it (`isAuthorized` with the policy
 * text, `statefulIsAuthorized` preparsed), with the `expected` outcome when
 * given. Throws otherwise: a baseline that asks Cedar something else (a
 * request that fails validation is fast) measures nothing.
 */
function checkedBaseline(label: string, set: PolicySet, engine: PolicyEngine, input: DecisionInput, settings: RiskSettings, expected?: PolicyOutcome): CedarRequest {
  const mirrored = mirrorCedarRequest(set, input, settings);
  const decision = engine.decide(input);
  if (mirrored === undefined) throw new Error(`bench baseline "${label}": the engine decides this request without asking Cedar (${decision.errors.join('; ')})`);
  if (expected !== undefined && decision.outcome !== expected) throw new Error(`bench baseline "${label}": the engine says ${decision.outcome}, the bench expects ${expected} (${decision.errors.join('; ')})`);
  checkSameRequest(label, set, input, mirrored, settings);
  const stateful = cedar.statefulIsAuthorized({ ...mirrored.request, ...preparsedBaseline(set)(input.environment) });
  checkSameDecision(`${label}, statefulIsAuthorized`, set, input, mirrored, decision, stateful);
  const plain = cedar.isAuthorized({ ...mirrored.request, policies: { staticPolicies: policyTextsFor(set, input.environment) }, schema: set.schemaText, validateRequest: true });
  checkSameDecision(`${label}, isAuthorized`, set, input, mirrored, decision, plain);
  return mirrored.request;
}

const mark = (met: boolean) => (met ? '✔' : '✘');

/**
 * Runs `subject` and `baseline` each in a tight sequential loop (one op in
 * flight: one core, node being single-threaded), alternating in `slices`
 * slices per side over `totalMs` per side. Returns operations per second.
 */
async function tightLoops(subject: Op, baseline: Op, totalMs: number, slices = 4): Promise<{ subject: number; baseline: number }> {
  const done = { subject: 0, baseline: 0 };
  const elapsed = { subject: 0, baseline: 0 };
  for (let slice = 0; slice < slices; slice++) {
    for (const which of ['subject', 'baseline'] as const) {
      const op = which === 'subject' ? subject : baseline;
      const start = performance.now();
      const until = start + totalMs / slices;
      while (performance.now() < until) {
        for (let i = 0; i < 50; i++) await op();
        done[which] += 50;
      }
      elapsed[which] += performance.now() - start;
    }
  }
  return { subject: (done.subject / elapsed.subject) * 1000, baseline: (done.baseline / elapsed.baseline) * 1000 };
}

/**
 * `--only decision`: full Writ decisions with the example sets (policies/)
 * over a mix of requests grown from their tests, against raw cedar-wasm asked
 * the very same requests in the same run. A full decision is what the action
 * check does per call: count the call, read the identity's observations
 * (call rate, resource history), then the engine with its cache off (risk
 * score, catalog lookups, entities, context, Cedar, the outcome).
 */
async function benchDecisions(): Promise<void> {
  const dir = fileURLToPath(new URL('../policies/', import.meta.url));
  const set = loadPolicySet(dir);
  const settings = riskSettingsSchema.parse({});
  const mix = buildDecisionMix(loadPolicyTests(dir));
  // Every identity's history holds grants of tickets and orders, so other kinds count as unusual.
  const history = [[{ action: 'read', resource: 'tickets:*' }, { action: 'read', resource: 'db:orders/*' }]];
  const observations = createObservations({ history: async () => history });
  const engine = createPolicyEngine(set, { cacheEntries: 0, risk: settings });
  const cachedEngine = createPolicyEngine(set, { risk: settings });

  // The call-rate window runs on the bench's own clock, always forward (cases
  // at different hours share identities); each decision is made at its case's
  // time, which gives the hour, weekday and off-hours signal. Before each timed
  // row every identity is topped up past the saturating call rate, so its risk
  // score, and with it the request, is the one checked.
  const clockStart = Date.now();
  const started = performance.now();
  const clock = () => clockStart + (performance.now() - started);
  const identityIds = [...new Set(mix.map((input) => input.principal.id))];
  const saturate = () => {
    const now = clock();
    for (const id of identityIds) for (let i = 0; i < settings.saturatingCallsPerMinute; i++) observations.recordCall(id, now);
  };
  saturate();

  interface Prepared {
    /** As the test case gives it; a full decision observes for itself. */
    readonly input: DecisionInput;
    /** With the observations seen when checked; for the cache hits. */
    readonly observedInput: DecisionInput;
    /** The engine's decision when checked. */
    readonly checked: PolicyDecision;
    readonly isAuthorized: Parameters<typeof cedar.isAuthorized>[0];
    readonly statefulIsAuthorized: Parameters<typeof cedar.statefulIsAuthorized>[0];
    /** The call the engine's plan makes (its slice, only the fields it reads): Cedar's share of a decision. */
    readonly planned: Parameters<typeof cedar.statefulIsAuthorized>[0];
  }
  const prepared: Prepared[] = [];
  const outcomes: Record<PolicyOutcome, number> = { allow: 0, deny: 0, approval_required: 0 };
  let withoutCedar = 0;
  for (const input of mix) {
    const observedInput = { ...input, observed: await observations.observe(input.principal.id, input.resource, clock()) };
    const mirrored = mirrorCedarRequest(set, observedInput, settings);
    if (mirrored === undefined) {
      // Decided before Cedar (an action in no tier group): nothing for a raw baseline to do.
      withoutCedar++;
      continue;
    }
    const request = checkedBaseline('decision mix', set, engine, observedInput, settings);
    const checked = engine.decide(observedInput);
    outcomes[checked.outcome]++;
    const planned = engine.cedarRequestFor(observedInput);
    if (planned === undefined) throw new Error('bench: the engine asks Cedar for this request, but gives no planned call');
    const plannedAnswer = cedar.statefulIsAuthorized(planned);
    const plannedReason = plannedAnswer.type === 'success' ? [...plannedAnswer.response.diagnostics.reason].sort().join() : 'failure';
    if (plannedAnswer.type === 'success' && plannedAnswer.response.diagnostics.errors.length === 0 && plannedReason !== checked.policies.join()) {
      throw new Error(`bench: the planned call decides with ${plannedReason}, the engine with ${checked.policies.join()}`);
    }
    prepared.push({
      input,
      observedInput,
      checked,
      isAuthorized: { ...request, policies: { staticPolicies: policyTextsFor(set, input.environment) }, schema: set.schemaText, validateRequest: true },
      statefulIsAuthorized: { ...request, ...preparsedBaseline(set)(input.environment) },
      planned,
    });
  }
  const resources = new Set(prepared.map((p) => p.input.resource)).size;
  process.stdout.write(
    `\nfull policy decisions, the example sets (policies/): ${prepared.length} requests grown from ${mix.length / VARIANTS_PER_CASE} test cases ` +
      `(${identityIds.length} identities, ${resources} resources; ${outcomes.allow} allow, ${outcomes.deny} deny, ${outcomes.approval_required} approval_required; ` +
      `${withoutCedar} decided without Cedar left out), each checked against raw cedar-wasm\n`,
  );

  // Subject and baselines walk the mix in step: the same request in the same position of their blocks.
  const cycle = <T>(make: (p: Prepared) => T): (() => T) => {
    let i = 0;
    return () => make(prepared[i++ % prepared.length]!);
  };
  const fullDecision = () =>
    cycle(async (p) => {
      const id = p.input.principal.id;
      const now = clock();
      observations.recordCall(id, now);
      const observing = observations.observe(id, p.input.resource, now);
      const observed = observing instanceof Promise ? await observing : observing;
      return engine.decide({ ...p.input, observed });
    });
  const rawStateful = () => cycle((p) => cedar.statefulIsAuthorized(p.statefulIsAuthorized));
  const rawPlain = () => cycle((p) => cedar.isAuthorized(p.isAuthorized));
  const rawPlanned = () => cycle((p) => cedar.statefulIsAuthorized(p.planned));
  const statefulName = 'cedar-wasm statefulIsAuthorized (preparsed), same requests';

  // V8 moves cedar-wasm's hot functions to its optimizing compiler over the first
  // seconds of steady calls (single calls run ~1.6x slower until then): warm both up first.
  saturate();
  await tightLoops(fullDecision(), rawStateful(), quick ? 600 : 3000, 2);
  saturate();
  const full = await sideBySide(fullDecision(), rawStateful(), Math.round(20_000 * scale));
  const fullTarget = `target ≤ 150 µs p50 ${mark(full.subject.p50 <= 150)}, ≤ 500 µs p99 ${mark(full.subject.p99 <= 500)}`;
  report('full decision (observations, risk, entities, context, Cedar; no cache)', full, statefulName, fullTarget);
  // The timed decisions were the checked ones: the same risk score, so the same request, and the same outcome.
  const decideFully = fullDecision();
  for (const p of prepared) {
    const decision = await decideFully();
    if (decision.risk.score !== p.checked.risk.score || decision.outcome !== p.checked.outcome) {
      throw new Error(`bench: a timed decision drifted from its checked one (risk ${decision.risk.score} against ${p.checked.risk.score}, ${decision.outcome} against ${p.checked.outcome})`);
    }
  }
  saturate();
  report(
    'full decision, against the policy text per call',
    await sideBySide(fullDecision(), rawPlain(), Math.round(2000 * scale), 50),
    'raw cedar-wasm isAuthorized (policy and schema text), same requests',
  );
  report(
    'engine.decide alone (observations given, no cache)',
    await sideBySide(cycle((p) => engine.decide(p.observedInput)), rawStateful(), Math.round(20_000 * scale)),
    statefulName,
  );
  saturate();
  report(
    'full decision, against Cedar asked only the planned call',
    await sideBySide(fullDecision(), rawPlanned(), Math.round(20_000 * scale)),
    "cedar-wasm statefulIsAuthorized, the engine's planned call (the rest is Writ's share)",
  );
  saturate();
  const floor = await tightLoops(rawPlanned(), rawStateful(), quick ? 400 : 2000);
  saturate();
  const loops = await tightLoops(fullDecision(), rawStateful(), quick ? 400 : 2000);
  const perSecond = (n: number) => Math.round(n).toLocaleString('en-US');
  const loopRow = (name: string, result: { subject: number; baseline: number }, target: string) =>
    rows.push([name, '', '', perSecond(result.subject), `${statefulName}, tight loop`, `${perSecond(result.baseline)}/s`, `${(result.baseline / result.subject).toFixed(2)}x`, target]);
  loopRow('full decisions, tight loop over the mix (one core)', loops, `target ≥ 8,000/s ${mark(loops.subject >= 8000)}`);
  loopRow("cedar-wasm alone on the engine's planned calls, tight loop (Writ's floor)", floor, '');
  process.stdout.write(`  full decisions, tight loop: ${perSecond(loops.subject)}/s | statefulIsAuthorized tight loop: ${perSecond(loops.baseline)}/s | planned calls alone: ${perSecond(floor.subject)}/s\n`);

  // Every request of the mix again, same inputs (observations held): each from the cache.
  for (const p of prepared) cachedEngine.decide(p.observedInput);
  const hits = await sideBySide(cycle((p) => cachedEngine.decide(p.observedInput)), rawStateful(), Math.round(20_000 * scale));
  report('decision, cache hit (the mix again, same inputs)', hits, statefulName, `target ≤ 10 µs p50 ${mark(hits.subject.p50 <= 10)}`);
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
