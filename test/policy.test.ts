/**
 * The policy engine and loader: outcomes over the example set, forbid beats
 * permit, errors deny, an invalid set is refused whole with file and line.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { PACKAGE_ROOT } from '../src/core/config.js';
import { isWritError } from '../src/core/errors.js';
import type { Identity } from '../src/core/types.js';
import { createPolicyEngine, type DecisionInput } from '../src/policy/engine.js';
import { loadPolicySet, type PolicyProblem } from '../src/policy/policy-set.js';

const EXAMPLES = join(PACKAGE_ROOT, 'policies');
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A copy of the example set with `extra` files added or replaced. */
function policyDir(extra: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'writ-policy-'));
  dirs.push(dir);
  cpSync(EXAMPLES, dir, { recursive: true });
  for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, name), text);
  return dir;
}

const agent: Identity = {
  id: 'spiffe://demo.local/agent/support',
  actorType: 'agent',
  owner: 'alice@example.com',
  environment: 'production',
  labels: {},
  state: 'active',
  source: 'cli',
  adminScopes: [],
  createdAt: 0,
  updatedAt: 0,
  lastSeenAt: null,
  expiresAt: null,
};
const input = (overrides: Partial<DecisionInput>): DecisionInput => ({
  principal: agent,
  action: 'read',
  resource: 'db:orders/1',
  environment: 'production',
  intent: 'customer-support',
  now: Date.parse('2026-11-23T12:00:00Z'),
  observed: { callsLastMinute: 0, unusualResource: false },
  ...overrides,
});

function problemsOf(dir: string): PolicyProblem[] {
  try {
    loadPolicySet(dir);
  } catch (error) {
    assert.ok(isWritError(error, 'ERR_POLICY_INVALID'), String(error));
    return (error as unknown as { extensions: { problems: PolicyProblem[] } }).extensions.problems;
  }
  assert.fail('the set loaded');
}

describe('the example policy set', () => {
  const engine = createPolicyEngine(loadPolicySet(EXAMPLES));
  const table: [Partial<DecisionInput>, string, string[]][] = [
    [{}, 'allow', ['agents-read-non-restricted']],
    [{ resource: 'db:orders/*' }, 'allow', ['agents-read-non-restricted']],
    [{ resource: 'db:customers/*' }, 'deny', []],
    [{ resource: 'db:customers/pii/9' }, 'deny', []],
    [{ resource: 'unlisted:thing' }, 'deny', []],
    [{ intent: 'marketing' }, 'deny', []],
    [{ environment: 'staging' }, 'deny', ['environment-must-match']],
    [{ action: 'write', resource: 'tickets:T-1' }, 'allow', ['support-writes-tickets']],
    [{ action: 'write', resource: 'db:orders/1' }, 'deny', []],
    [{ action: 'export', resource: 'db:orders/1' }, 'approval_required', ['order-exports-need-approval']],
    // A refund scope is granted; each refund call is decided on its amount.
    [{ action: 'refund', resource: 'payments:refunds/*' }, 'allow', ['refunds-up-to-limit']],
    [{ action: 'refund', resource: 'payments:refunds/R-1', stage: 'call', args: { amountCents: 9_999 } }, 'allow', ['refunds-up-to-limit']],
    [{ action: 'refund', resource: 'payments:refunds/R-1', stage: 'call', args: { amountCents: 10_001 } }, 'approval_required', ['refunds-over-limit-need-approval']],
    [{ action: 'refund', resource: 'payments:refunds/R-1', stage: 'call', args: { amountCents: 10_001 }, approval: 'approved' }, 'allow', ['refunds-over-limit-need-approval']],
    [{ action: 'refund', resource: 'payments:refunds/R-1', stage: 'call' }, 'deny', []],
    [{ action: 'refund', resource: 'payments:refunds/R-1', stage: 'call', args: { amountCents: 1.5 } }, 'deny', []],
    // The catalog puts payouts at the admin tier, whatever the action.
    [{ action: 'refund', resource: 'payments:payouts/P-1' }, 'deny', ['agents-never-admin']],
    // Refund is in the write group, but the ticket-write permit names the write action itself.
    [{ action: 'refund', resource: 'tickets:T-1' }, 'deny', []],
    [{ action: 'export', resource: 'db:customers/pii/*' }, 'deny', ['no-export-of-restricted']],
    [{ action: 'admin', resource: 'tickets:T-1' }, 'deny', ['agents-never-admin']],
    [{ action: 'delete', resource: 'tickets:T-1' }, 'deny', []],
    [{ action: 'frobnicate', resource: 'tickets:T-1' }, 'deny', []],
  ];
  for (const [overrides, outcome, policies] of table) {
    test(`${overrides.action ?? 'read'} ${overrides.resource ?? 'db:orders/1'} ${JSON.stringify({ ...overrides, action: undefined, resource: undefined })} → ${outcome}`, () => {
      const decision = engine.decide(input(overrides));
      assert.equal(decision.outcome, outcome);
      assert.deepEqual([...decision.policies].sort(), policies);
      assert.equal(decision.policyVersion, engine.version);
    });
  }

  test('tiers come from the schema: refund is a write, undeclared actions have none', () => {
    assert.equal(engine.tierOf('refund'), 'write');
    assert.equal(engine.tierOf('read'), 'read');
    assert.equal(engine.tierOf('frobnicate'), undefined);
  });

  test('the version changes when any file of the set changes, the catalog included', () => {
    const changed = policyDir({ 'resources.yaml': 'resources:\n  - pattern: "tickets:*"\n    sensitivity: public\n' });
    assert.notEqual(loadPolicySet(changed).version, engine.version);
    assert.equal(loadPolicySet(policyDir({})).version, engine.version);
  });
});

describe('fail closed', () => {
  test('forbid beats permit', () => {
    const dir = policyDir({ 'freeze.cedar': '@id("freeze") forbid (principal, action in Writ::Action::"write", resource) when { resource.kind == "tickets" };' });
    const decision = createPolicyEngine(loadPolicySet(dir)).decide(input({ action: 'write', resource: 'tickets:T-1' }));
    assert.equal(decision.outcome, 'deny');
    assert.deepEqual(decision.policies, ['freeze']);
  });

  test('a forbid that errors at evaluation still denies, naming the policy that failed', () => {
    // Valid against the schema, but overflows a 64-bit integer whenever it runs.
    const dir = policyDir({
      'freeze.cedar': '@id("change-freeze") forbid (principal, action in Writ::Action::"write", resource) when { context.hour + 9223372036854775807 >= 0 };',
    });
    const engine = createPolicyEngine(loadPolicySet(dir));
    const decision = engine.decide(input({ action: 'write', resource: 'tickets:T-1' }));
    assert.equal(decision.outcome, 'deny');
    assert.deepEqual(decision.policies, ['change-freeze']);
    assert.match(decision.errors[0] ?? '', /^change-freeze: /);
  });

  test('a permit that errors never allows', () => {
    const dir = policyDir({
      'broken.cedar': '@id("broken-permit") permit (principal, action in Writ::Action::"delete", resource) when { context.hour * 9223372036854775807 * 2 > 0 };',
    });
    const decision = createPolicyEngine(loadPolicySet(dir)).decide(input({ action: 'delete', resource: 'tickets:T-1' }));
    assert.equal(decision.outcome, 'deny');
  });
});

describe('loading refuses an invalid set whole', () => {
  test('a syntax error names the file and line', () => {
    const problems = problemsOf(policyDir({ 'bad.cedar': '// first\n\n@id("x")\npermit (principal, action, resource) when { oops };\n' }));
    assert.equal(problems[0]?.file, 'bad.cedar');
    assert.equal(problems[0]?.line, 4);
  });

  test('a policy nested deeper than Cedar can read is refused by file, and the serving engine keeps deciding', () => {
    const serving = createPolicyEngine(loadPolicySet(policyDir({})), { cacheEntries: 0 });
    const request = input({ action: 'write', resource: 'tickets:T-1' });
    const before = serving.decide(request);
    for (const terms of [1000, 5000]) {
      const chain = Array.from({ length: terms }, (_, i) => `resource != Writ::Resource::"r${i}"`).join(' && ');
      const problems = problemsOf(policyDir({ 'deep.cedar': `@id("deep") forbid (principal, action, resource) when { ${chain} };` }));
      assert.equal(problems[0]?.file, 'deep.cedar', String(terms));
      assert.match(problems[0]?.message ?? '', /nests too deeply/);
    }
    assert.deepEqual(serving.decide(request), before, 'Cedar still answers in this process');
  });

  test('a policy that does not validate against the schema names its file', () => {
    const problems = problemsOf(policyDir({ 'typo.cedar': '@id("typo") permit (principal, action, resource) when { context.enviroment == "production" };' }));
    assert.equal(problems[0]?.file, 'typo.cedar');
    assert.match(problems[0]?.message ?? '', /^typo: /);
  });

  test('duplicate policy ids are refused', () => {
    const problems = problemsOf(policyDir({ 'dup.cedar': '@id("agents-never-admin") forbid (principal, action, resource);' }));
    assert.match(problems[0]?.message ?? '', /duplicate policy id/);
  });

  for (const annotation of ['@approval', '@approval("Required")', '@approval("yes")', '@Approval("required")', '@APPROVAL("required")']) {
    test(`a mistyped approval annotation (${annotation}) is refused rather than read as a plain permit`, () => {
      const problems = problemsOf(policyDir({ 'approval.cedar': `@id("wire") ${annotation} permit (principal, action == Writ::Action::"refund", resource);` }));
      assert.equal(problems[0]?.file, 'approval.cedar');
      assert.match(problems[0]?.message ?? '', /@approval\("required"\)/);
    });
  }

  test('an approval annotation on a forbid is refused', () => {
    const problems = problemsOf(policyDir({ 'approval.cedar': '@id("odd") @approval("required") forbid (principal, action, resource);' }));
    assert.match(problems[0]?.message ?? '', /belongs on a permit/);
  });

  test('a catalog entry with an unknown sensitivity or a non-canonical pattern is refused', () => {
    assert.equal(problemsOf(policyDir({ 'resources.yaml': 'resources:\n  - pattern: "db:*"\n    sensitivity: secret\n' }))[0]?.file, 'resources.yaml');
    assert.equal(problemsOf(policyDir({ 'resources.yaml': 'resources:\n  - pattern: "db:a/../b"\n    sensitivity: public\n' }))[0]?.file, 'resources.yaml');
  });

  test('a missing schema is refused', () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-policy-'));
    dirs.push(dir);
    assert.equal(problemsOf(dir)[0]?.file, 'schema.cedarschema');
  });
});

describe('the decision cache', () => {
  test('a cached decision is the decision: the same answers as an engine without a cache, over the example table and repeats', () => {
    const cached = createPolicyEngine(loadPolicySet(EXAMPLES));
    const uncached = createPolicyEngine(loadPolicySet(EXAMPLES), { cacheEntries: 0 });
    const requests: Partial<DecisionInput>[] = [
      {},
      { resource: 'db:customers/pii/9' },
      { action: 'export', resource: 'db:customers/*' },
      { action: 'refund', resource: 'payments:refund/1042' },
      { action: 'write', resource: 'tickets:T-1' },
      { intent: 'other' },
      { principal: { ...agent, actorType: 'service' } },
      { environment: 'sandbox' },
    ];
    for (let round = 0; round < 3; round++) {
      for (const request of requests) {
        const a = cached.decide(input(request));
        const b = uncached.decide(input(request));
        assert.deepEqual({ outcome: a.outcome, policies: a.policies, errors: a.errors }, { outcome: b.outcome, policies: b.policies, errors: b.errors }, JSON.stringify(request));
      }
    }
  });

  test('the key holds every input that reaches Cedar: another hour, weekday, owner or principal environment is decided afresh', () => {
    const dir = policyDir({
      'office-hours.cedar': `@id("office-hours-only")
forbid (principal, action, resource) when { context.hour < 8 || context.hour >= 18 || context.weekday == 0 || context.weekday == 6 };
@id("no-owner-mallory")
forbid (principal, action, resource) when { principal.owner == "mallory@example.com" };`,
    });
    const engine = createPolicyEngine(loadPolicySet(dir));
    const monday = (hour: number) => Date.parse(`2026-11-23T${String(hour).padStart(2, '0')}:30:00Z`);
    assert.equal(engine.decide(input({ now: monday(12) })).outcome, 'allow');
    assert.equal(engine.decide(input({ now: monday(12) + 60_000 })).outcome, 'allow', 'same hour: served from the cache');
    assert.equal(engine.decide(input({ now: monday(19) })).outcome, 'deny', 'another hour is decided afresh');
    assert.equal(engine.decide(input({ now: monday(12) + 5 * 86_400_000 })).outcome, 'deny', 'Saturday noon: another weekday');
    assert.equal(engine.decide(input({ now: monday(12), principal: { ...agent, owner: 'mallory@example.com' } })).outcome, 'deny', 'another owner');
    assert.equal(engine.decide(input({ now: monday(12) })).outcome, 'allow');
  });
});
