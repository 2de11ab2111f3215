/**
 * What every decision sees, and where it is recorded: the risk score and its
 * signals (from the identity's call rate and history), typed resources and
 * tier floors from the catalog, labels as tags, the call's arguments as the
 * schema declares them, policies per environment, and a shadow set that is
 * decided and recorded beside the enforced one but never enforced.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Identity } from '../src/core/types.js';
import { createPolicyEngine, type DecisionInput } from '../src/policy/engine.js';
import { createObservations } from '../src/policy/observations.js';
import { loadPolicySet, type PolicyProblem } from '../src/policy/policy-set.js';
import { toPrincipal } from '../src/policy/policy-tests.js';
import { riskSettingsSchema } from '../src/policy/risk.js';
import { AGENT, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { EXAMPLE_POLICIES, policyFolder } from './helpers/policy-folder.js';

const EXAMPLES = EXAMPLE_POLICIES;
const folder = policyFolder;

function problemsOf(dir: string): PolicyProblem[] {
  try {
    loadPolicySet(dir);
  } catch (error) {
    return ((error as { extensions: { problems: PolicyProblem[] } }).extensions.problems) ?? [];
  }
  assert.fail('the set loaded');
}

const agent: Identity = toPrincipal({ id: AGENT, actorType: 'agent', environment: 'production', owner: 'support-team@example.com' });
const at = Date.parse('2026-11-23T10:00:00Z');
const input = (overrides: Partial<DecisionInput> = {}): DecisionInput => ({
  principal: agent,
  action: 'write',
  resource: 'tickets:T-1',
  environment: 'production',
  intent: 'customer-support',
  now: at,
  observed: { callsLastMinute: 0, unusualResource: false },
  ...overrides,
});

describe('the risk score in decisions', () => {
  const engine = createPolicyEngine(loadPolicySet(EXAMPLES));

  test('each decision carries its score and the signals that made it, adding up to the score', () => {
    const decision = engine.decide(input({ observed: { callsLastMinute: 30, unusualResource: true } }));
    assert.equal(decision.outcome, 'allow');
    const names = decision.risk.signals.map((s) => s.name).sort();
    assert.deepEqual(names, ['callRate', 'environment', 'sensitivity', 'tier', 'unusualResource']);
    const sum = decision.risk.signals.reduce((total, s) => total + s.points, 0);
    assert.equal(decision.risk.score, Math.round(sum));
  });

  test('an unknown history counts as the riskiest: no observations is a first use at full call rate', () => {
    const known = engine.decide(input());
    const unknown = engine.decide(input({ observed: undefined }));
    assert.equal(unknown.risk.score, known.risk.score + 20);
  });

  test('policy reads the score: the production guardrail denies the same write once the risk is critical, and only in production', () => {
    const fresh = { ...agent, createdAt: at - 3_600_000 };
    const risky = { principal: fresh, delegationDepth: 3, now: Date.parse('2026-11-23T03:00:00Z'), observed: { callsLastMinute: 60, unusualResource: true } };
    const denied = engine.decide(input(risky));
    assert.ok(denied.risk.score >= 75, String(denied.risk.score));
    assert.deepEqual([denied.outcome, denied.policies], ['deny', ['production-refuses-critical-risk']]);
    const staging = engine.decide(input({ ...risky, principal: { ...fresh, environment: 'staging' }, environment: 'staging' }));
    assert.deepEqual([staging.outcome, staging.policies], ['allow', ['support-writes-tickets']]);
  });

  test('the cache key holds the score: a rising call rate is decided afresh, not served from a calm decision', () => {
    const cached = createPolicyEngine(loadPolicySet(EXAMPLES));
    const fresh = { ...agent, createdAt: at - 3_600_000 };
    const calm = cached.decide(input({ principal: fresh, delegationDepth: 3, now: Date.parse('2026-11-23T03:00:00Z'), observed: { callsLastMinute: 0, unusualResource: true } }));
    assert.equal(calm.outcome, 'allow', `score ${calm.risk.score}`);
    const hot = cached.decide(input({ principal: fresh, delegationDepth: 3, now: Date.parse('2026-11-23T03:00:00Z'), observed: { callsLastMinute: 600, unusualResource: true } }));
    assert.equal(hot.outcome, 'deny', `score ${hot.risk.score}`);
  });

  test('the configured weights are the ones used', () => {
    const defaults = riskSettingsSchema.parse({});
    const quiet = createPolicyEngine(loadPolicySet(EXAMPLES), { risk: { ...defaults, weights: { ...defaults.weights, environment: 0, tier: 0, sensitivity: 0 } } });
    assert.equal(quiet.decide(input()).risk.score, 0);
    assert.ok(createPolicyEngine(loadPolicySet(EXAMPLES)).decide(input()).risk.score > 0);
  });
});

describe('resources as the catalog knows them', () => {
  test('a resource gets the entity type of its kind; a kind the catalog does not type is a plain Resource', () => {
    const dir = folder({
      'typed.cedar': `@id("databases-only") permit (principal, action == Writ::Action::"delete", resource is Writ::Database) when { context.environment == "sandbox" };`,
    });
    const engine = createPolicyEngine(loadPolicySet(dir));
    const sandboxed = (resource: string) => engine.decide(input({ action: 'delete', resource, environment: 'sandbox', principal: { ...agent, environment: 'sandbox' } }));
    assert.equal(sandboxed('db:orders/1').outcome, 'allow');
    assert.equal(sandboxed('tickets:T-1').outcome, 'deny', 'tickets are an Api');
    assert.equal(sandboxed('crm:accounts/1').outcome, 'deny', 'crm is untyped');
  });

  test('a kinds entry naming a type the schema lacks is refused, at its line', () => {
    const problems = problemsOf(folder({ 'resources.yaml': 'kinds:\n  db: Databse\nresources: []\n' }));
    assert.equal(problems.length, 1);
    assert.equal(problems[0]?.file, 'resources.yaml');
    assert.equal(problems[0]?.line, 2);
    assert.match(problems[0]?.message ?? '', /Databse is not an entity type of the schema/);
  });

  test('a tier floor raises every action on the resource, a pattern gets the highest floor it could reach', () => {
    const engine = createPolicyEngine(loadPolicySet(EXAMPLES));
    assert.equal(engine.tierFor('read', 'payments:payouts/P-1'), 'admin');
    assert.equal(engine.tierFor('read', 'payments:*'), 'admin');
    assert.equal(engine.tierFor('read', 'payments:refunds/R-1'), 'read');
    assert.equal(engine.tierFor('export', 'payments:refunds/R-1'), 'export');
    assert.equal(engine.tierFor('frobnicate', 'payments:refunds/R-1'), undefined);
    const read = engine.decide(input({ action: 'read', resource: 'payments:payouts/P-1' }));
    assert.deepEqual([read.tier, read.outcome, read.policies], ['admin', 'deny', ['agents-never-admin']]);
  });

  test("labels reach policy as the principal's tags", () => {
    const dir = folder({
      'labels.cedar': `@id("team-support-deletes") permit (principal is Writ::Agent, action == Writ::Action::"delete", resource) when { principal.hasTag("team") && principal.getTag("team") == "support" && context.intent == "customer-support" && resource.kind == "tickets" };`,
    });
    const engine = createPolicyEngine(loadPolicySet(dir));
    assert.equal(engine.decide(input({ action: 'delete', principal: { ...agent, labels: { team: 'support' } } })).outcome, 'allow');
    assert.equal(engine.decide(input({ action: 'delete', principal: { ...agent, labels: { team: 'billing' } } })).outcome, 'deny');
    assert.equal(engine.decide(input({ action: 'delete' })).outcome, 'deny');
  });
});

describe('call arguments', () => {
  const engine = createPolicyEngine(loadPolicySet(EXAMPLES));
  const refund = (args: Record<string, unknown>) => engine.decide(input({ action: 'refund', resource: 'payments:refunds/R-1', stage: 'call', args }));

  test('declared arguments reach policy; undeclared ones are dropped before Cedar', () => {
    assert.equal(refund({ amountCents: 100 }).outcome, 'allow');
    assert.equal(refund({ amountCents: 100, amount: 10_000_000, __proto__: { amountCents: 1 } }).outcome, 'allow');
    assert.equal(refund({ amountCents: 20_000 }).outcome, 'approval_required');
  });

  test('a declared argument of the wrong type denies, saying which', () => {
    for (const amountCents of ['100', 1.5, Number.MAX_SAFE_INTEGER + 2, true, [100], { n: 100 }]) {
      const decision = refund({ amountCents });
      assert.equal(decision.outcome, 'deny', JSON.stringify(amountCents));
      assert.match(decision.errors.join(), /args\.amountCents must be a Long/);
    }
    const long = refund({ amountCents: 1, destination: 'x'.repeat(1025) });
    assert.deepEqual([long.outcome, long.errors], ['deny', ['args.destination must be a String of at most 1024 characters']]);
  });

  test('arguments that are not an object deny', () => {
    assert.equal(engine.decide(input({ stage: 'call', args: [1, 2] as never })).outcome, 'deny');
    assert.equal(engine.decide(input({ stage: 'call', args: 'amountCents=1' as never })).outcome, 'deny');
  });
});

describe('policies per environment', () => {
  test('a policy under environments/<env>/ decides for tasks in that environment only', () => {
    const set = loadPolicySet(EXAMPLES);
    assert.deepEqual(set.environments, ['production', 'sandbox']);
    assert.equal(set.policies.get('production-refuses-critical-risk')?.environment, 'production');
    assert.equal(set.policies.get('data-agent-writes-sandbox-scratch')?.file, 'environments/sandbox/data-agent.cedar');
    assert.notEqual(set.planFor('staging', 'write')?.preparsedId, set.planFor('sandbox', 'write')?.preparsedId);
    assert.equal(set.planFor('staging', 'write')?.preparsedId, set.planFor('qa', 'write')?.preparsedId, 'environments without a folder share the set');
    assert.ok(set.planFor('sandbox', 'write')?.policyIds.includes('data-agent-writes-sandbox-scratch'));
    assert.ok(!set.planFor('staging', 'write')?.policyIds.includes('data-agent-writes-sandbox-scratch'));
  });

  test('a change in an environment folder changes the version', () => {
    const a = loadPolicySet(folder());
    const b = loadPolicySet(folder({ 'environments/staging/extra.cedar': '@id("staging-extra") forbid (principal, action, resource) when { context.hour == 3 };' }));
    assert.notEqual(a.version, b.version);
    assert.deepEqual(b.environments, ['production', 'sandbox', 'staging']);
  });

  test('ids are unique across the whole folder, environments included', () => {
    const problems = problemsOf(folder({ 'environments/staging/dup.cedar': '@id("agents-never-admin") forbid (principal, action, resource);' }));
    assert.match(problems.map((p) => p.message).join(), /duplicate policy id "agents-never-admin"/);
  });

  test('a policy file loose in environments/ or a badly named environment folder is refused', () => {
    assert.match(problemsOf(folder({ 'environments/loose.cedar': 'forbid (principal, action, resource);' }))[0]?.message ?? '', /belongs to no environment/);
    assert.match(problemsOf(folder({ 'environments/Prod/x.cedar': 'forbid (principal, action, resource);' }))[0]?.message ?? '', /named like an environment/);
  });
});

describe('policy versions and compiled sets', () => {
  test('the same bytes split differently across files give different versions', () => {
    const forbid = '@id("deny-all") forbid (principal, action, resource);';
    const a = loadPolicySet(folder({ 'zz.cedar': `//\u0000environments/aa/x.cedar\u0000\n${forbid}\n` }));
    const b = loadPolicySet(folder({ 'zz.cedar': '//', 'environments/aa/x.cedar': `\n${forbid}\n` }));
    assert.notEqual(a.version, b.version);
    assert.match(a.version, /^sha256:[0-9a-f]{32}$/);
  });

  test('every load compiles apart: loading the same folder again never touches an engine already deciding', () => {
    const dir = folder({ 'deny.cedar': '@id("deny-all") forbid (principal, action, resource);' });
    const first = loadPolicySet(dir);
    const serving = createPolicyEngine(first, { cacheEntries: 0 });
    rmSync(join(dir, 'deny.cedar'));
    writeFileSync(join(dir, 'deny.cedar'), '// gone\n');
    const second = loadPolicySet(dir);
    assert.notEqual(first.compiledId, second.compiledId);
    assert.deepEqual(serving.decide(input()).policies, ['deny-all'], 'the serving engine still decides with its own set');
    assert.equal(createPolicyEngine(second).decide(input()).outcome, 'allow');
  });

  test('a symlinked environment folder is followed, not silently skipped; a folder named like a policy file is a problem', (t) => {
    const target = mkdtempSync(join(tmpdir(), 'writ-context-env-'));
    t.after(() => rmSync(target, { recursive: true, force: true }));
    writeFileSync(join(target, 'guard.cedar'), '@id("staging-guard") forbid (principal, action, resource) when { context.hour == 3 };');
    const dir = folder();
    symlinkSync(target, join(dir, 'environments', 'staging'));
    const set = loadPolicySet(dir);
    assert.deepEqual(set.environments, ['production', 'sandbox', 'staging']);
    assert.equal(set.policies.get('staging-guard')?.environment, 'staging');
    mkdirSync(join(dir, 'odd.cedar'));
    assert.match(problemsOf(dir)[0]?.message ?? '', /named like a policy file but not a file/);
  });
});

describe('observations: call rate and resource history', () => {
  test('calls are counted over the last minute, per identity', () => {
    const observations = createObservations({ history: async () => [] });
    const t0 = Date.parse('2026-11-23T10:00:00Z');
    for (let i = 0; i < 5; i++) observations.recordCall('a', t0 + i * 1000);
    observations.recordCall('b', t0);
    assert.equal(observations.callsLastMinute('a', t0 + 5000), 5);
    assert.equal(observations.callsLastMinute('b', t0 + 5000), 1);
    assert.equal(observations.callsLastMinute('a', t0 + 61_000), 3, 'the first two fell out of the window');
    assert.equal(observations.callsLastMinute('a', t0 + 120_000), 0);
    assert.equal(observations.callsLastMinute('nobody', t0), 0);
  });

  test('the history is read once per identity; a grant recorded while it loads is kept', async () => {
    let reads = 0;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const observations = createObservations({
      history: async (id) => {
        reads++;
        await gate;
        return id === 'a' ? [[{ action: 'read', resource: 'db:orders/*' }]] : [];
      },
    });
    const pending = observations.kindsOf('a');
    observations.recordGrant('a', [{ action: 'write', resource: 'tickets:T-1' }]);
    release();
    assert.deepEqual([...(await pending)].sort(), ['db', 'tickets']);
    assert.deepEqual([...(await observations.kindsOf('a'))].sort(), ['db', 'tickets']);
    assert.equal(reads, 1);
    const seen = await observations.observe('a', 'db:orders/1', 0);
    const unseen = await observations.observe('a', 'warehouse:sales/x', 0);
    assert.deepEqual([seen.unusualResource, unseen.unusualResource], [false, true]);
  });

  test('an unreadable history counts as a first use, and is read again next time', async () => {
    let fail = true;
    const observations = createObservations({
      history: async () => {
        if (fail) throw new Error('store down');
        return [[{ action: 'read', resource: 'db:orders/*' }]];
      },
    });
    assert.equal((await observations.observe('a', 'db:orders/1', 0)).unusualResource, true);
    fail = false;
    assert.equal((await observations.observe('a', 'db:orders/1', 0)).unusualResource, false);
  });

  test('at most maxIdentities are tracked, the least recently used dropped first', () => {
    const observations = createObservations({ history: async () => [], maxIdentities: 2 });
    observations.recordCall('a', 0);
    observations.recordCall('b', 0);
    observations.recordCall('a', 0);
    observations.recordCall('c', 0);
    assert.deepEqual(['a', 'b', 'c'].map((id) => observations.callsLastMinute(id, 0)), [2, 0, 1]);
  });
});

describe('decisions on the record (HTTP)', () => {
  let h: Harness;
  let shadowDir: string;
  before(async () => {
    // The shadow set trials a freeze on ticket writes, and an extra permit for deletes.
    shadowDir = folder({
      'freeze.cedar': '@id("shadow-freeze-tickets") forbid (principal, action == Writ::Action::"write", resource) when { resource.kind == "tickets" };',
      'deletes.cedar': '@id("shadow-allows-deletes") permit (principal, action == Writ::Action::"delete", resource) when { context.intent == "customer-support" };',
    });
    h = await startHarness({ config: { policy: { shadow: { dir: shadowDir, environments: ['production'] } } } });
    await h.registerAgent();
  });
  after(async () => {
    await h.close();
  });

  test('a task decision records, per scope, tier, sensitivity, risk and its signals', async () => {
    const answer = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const record = (await h.auditRecords()).find((r) => r.type === 'task.decision' && (r.task as { id: string }).id === answer.body.task.id);
    const decisions = (record?.data as { decisions: { scope: string; tier: string; sensitivity: string; risk: { score: number; level: string; signals: Record<string, number> } }[] }).decisions;
    assert.deepEqual(decisions.map((d) => [d.scope, d.tier, d.sensitivity]), [
      ['read:db:orders/*', 'read', 'confidential'],
      ['write:tickets:T-1042', 'write', 'internal'],
    ]);
    // A new identity, never granted anything: identity age and first use both count.
    assert.ok(decisions[0]!.risk.signals.identityAge! > 9, JSON.stringify(decisions[0]));
    assert.equal(decisions[0]!.risk.signals.unusualResource, 10);
    assert.equal(decisions[0]!.risk.score, Math.round(Object.values(decisions[0]!.risk.signals).reduce((a, b) => a + b, 0)));
  });

  test('after a grant the kind is known: the next task scores no first use for it', async () => {
    const answer = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    const record = (await h.auditRecords()).find((r) => r.type === 'task.decision' && (r.task as { id: string }).id === answer.body.task.id);
    const decisions = (record?.data as { decisions: { risk: { signals: Record<string, number> } }[] }).decisions;
    assert.equal(decisions[0]!.risk.signals.unusualResource, undefined);
  });

  test('the shadow set enforces nothing: its freeze does not stop the write, its extra permit grants nothing', async () => {
    const answer = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'write', resource: 'tickets:T-1042' }, { action: 'delete', resource: 'tickets:T-1042' }] }), await h.identityToken());
    assert.equal(answer.status, 201);
    assert.deepEqual(answer.body.task.grantedScopes, [{ action: 'write', resource: 'tickets:T-1042' }]);
    const checked = await h.post('/v1/authorize', { token: answer.body.token, action: 'write', resource: 'tickets:T-1042' });
    assert.equal(checked.body.allowed, true);

    const records = await h.auditRecords();
    const decision = records.find((r) => r.type === 'task.decision' && (r.task as { id: string }).id === answer.body.task.id);
    const shadow = (decision?.data as { shadow: { scope: string; outcome: string; policies: string[]; differs: boolean; policyVersion: string }[] }).shadow;
    assert.deepEqual(shadow.map((s) => [s.scope, s.outcome, s.policies, s.differs]), [
      ['write:tickets:T-1042', 'deny', ['shadow-freeze-tickets'], true],
      ['delete:tickets:T-1042', 'allow', ['shadow-allows-deletes'], true],
    ]);
    assert.equal(shadow[0]?.policyVersion, h.writ.shadowPolicy()?.version);
    assert.notEqual(h.writ.shadowPolicy()?.version, h.writ.policy().version);
    const check = records.find((r) => r.id === checked.body.auditId);
    assert.equal(check?.decision, 'allow');
    assert.deepEqual((check?.data as { shadow: unknown }).shadow, {
      policyVersion: h.writ.shadowPolicy()?.version,
      outcome: 'deny',
      policies: ['shadow-freeze-tickets'],
      differs: true,
    });
  });

  test('the shadow set logs every decision the enforced set makes in its environments, agreeing ones too, and none elsewhere', async () => {
    const agreeing = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'read', resource: 'db:orders/*' }] }), await h.identityToken());
    const records = await h.auditRecords();
    const shadow = (records.find((r) => r.type === 'task.decision' && (r.task as { id: string }).id === agreeing.body.task.id)?.data as { shadow?: { differs: boolean }[] }).shadow;
    assert.deepEqual(shadow?.map((s) => s.differs), [false]);

    await h.registerAgent('spiffe://demo.local/agent/staging', { environment: 'staging' });
    const staging = await h.post('/v1/tasks', supportTask({ environment: 'staging' }), await h.identityToken('spiffe://demo.local/agent/staging'));
    const stagingRecord = (await h.auditRecords()).find((r) => r.type === 'task.decision' && (r.task as { id: string }).id === staging.body.task.id);
    assert.equal((stagingRecord?.data as { shadow?: unknown }).shadow, undefined, 'the shadow set trials production only');
  });

  test('an invalid shadow set is refused on reload and on the record; the enforced set and the old shadow keep deciding', async () => {
    const before = h.writ.shadowPolicy()?.version;
    writeFileSync(join(shadowDir, 'broken.cedar'), 'permit (principal, action, resource) when { context.nope };');
    try {
      const reload = await h.writ.reloadPolicy('test');
      assert.equal(reload.ok, true, 'the enforced set is fine');
      assert.equal(h.writ.shadowPolicy()?.version, before);
      const refused = (await h.auditRecords()).filter((r) => r.type === 'policy.reload_refused').at(-1);
      assert.equal((refused?.data as { shadow?: boolean }).shadow, true);
    } finally {
      rmSync(join(shadowDir, 'broken.cedar'));
    }
  });

  test('the call context is read once: the digest and both decisions see the same copy, and a throwing getter cannot turn the shadow into a deny', async () => {
    const answer = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    let reads = 0;
    const context = {
      get comment() {
        reads++;
        if (reads > 1) throw new Error('read twice');
        return 'hello';
      },
    };
    const checked = await h.writ.authorize(answer.body.token, { action: 'write', resource: 'tickets:T-1042', context });
    assert.deepEqual([checked.allowed, checked.reason, reads], [true, null, 1]);
  });

  test('an agent cannot approve its own call: approval, stage or risk sent in the call context never reach those fields', async () => {
    const answer = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'refund', resource: 'payments:refunds/*' }] }), await h.identityToken());
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    const call = (context: Record<string, unknown>) => h.post('/v1/authorize', { token: answer.body.token, action: 'refund', resource: 'payments:refunds/R-9', context });
    const forged = await call({ amountCents: 25_000, approval: 'approved', stage: 'grant', risk: 0, args: { amountCents: 1 } });
    assert.deepEqual([forged.body.allowed, forged.body.reason], [false, 'ERR_APPROVAL_REQUIRED']);
    assert.equal((await call({ amountCents: 500 })).body.allowed, true);
  });

  test('the action check records the risk of each re-decided call, and reads are not re-decided', async () => {
    const answer = await h.post('/v1/tasks', supportTask(), await h.identityToken());
    const write = await h.post('/v1/authorize', { token: answer.body.token, action: 'write', resource: 'tickets:T-1042', context: { comment: 'hello' } });
    const read = await h.post('/v1/authorize', { token: answer.body.token, action: 'read', resource: 'db:orders/1' });
    const records = await h.auditRecords();
    const writeRecord = records.find((r) => r.id === write.body.auditId);
    const data = writeRecord?.data as { risk: { score: number; signals: Record<string, number> }; argsDigest: string };
    assert.match(data.argsDigest, /^sha256:/);
    assert.ok(data.risk.score > 0);
    assert.ok(data.risk.signals.callRate! > 0, 'this identity has been calling');
    assert.equal((records.find((r) => r.id === read.body.auditId)?.data as { risk?: unknown } | undefined)?.risk, undefined);
  });
});
