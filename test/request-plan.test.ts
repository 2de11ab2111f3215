/**
 * Request plans (src/policy/request-plan.ts) change what Writ sends Cedar:
 * only the policies whose action scope can match, only the fields they read,
 * and the schema's request shape proven once at load instead of per request.
 * None of that may change a decision. These tests decide the same requests
 * both ways, Writ's engine against raw cedar-wasm asked the plain way (every
 * policy of the environment, the whole context, every attribute and tag, the
 * request validated against the schema), over the example sets and over a set
 * written to trip the plan up.
 */
import assert from 'node:assert/strict';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { Identity } from '../src/core/types.js';
import { cedar } from '../src/policy/cedar.js';
import { createPolicyEngine, type DecisionInput, type PolicyOutcome } from '../src/policy/engine.js';
import { loadPolicySet, type PolicySet } from '../src/policy/policy-set.js';
import { loadPolicyTests, toPrincipal } from '../src/policy/policy-tests.js';
import { readSetOf } from '../src/policy/request-plan.js';
import { riskSettingsSchema } from '../src/policy/risk.js';
import { mirrorCedarRequest, policyTextsFor } from './helpers/cedar-request.js';
import { buildDecisionMix } from './helpers/decision-mix.js';
import { EXAMPLE_POLICIES, policyFolder } from './helpers/policy-folder.js';

const EXAMPLES = EXAMPLE_POLICIES;
const settings = riskSettingsSchema.parse({});
const folder = policyFolder;

/**
 * What Writ's rules make of raw Cedar's answer to the plain request: a refused
 * request or any evaluation error denies (naming the erroring policies), an
 * allow only by approval permits needs approval unless approved.
 */
function plainDecision(set: PolicySet, input: DecisionInput): { outcome: PolicyOutcome; policies: string[] } | undefined {
  const mirrored = mirrorCedarRequest(set, input, settings);
  if (mirrored === undefined) return undefined;
  const answer = cedar.isAuthorized({ ...mirrored.request, policies: { staticPolicies: policyTextsFor(set, input.environment) }, schema: set.schemaText, validateRequest: true });
  if (answer.type === 'failure') return { outcome: 'deny', policies: [] };
  const { decision, diagnostics } = answer.response;
  if (diagnostics.errors.length > 0) return { outcome: 'deny', policies: [...new Set(diagnostics.errors.map((e) => e.policyId))].sort() };
  const reason = [...diagnostics.reason].sort();
  if (decision === 'deny') return { outcome: 'deny', policies: reason };
  const approvalOnly = (id: string) => set.policies.get(id)?.annotations.approval === 'required';
  return { outcome: input.approval === 'approved' || reason.some((id) => !approvalOnly(id)) ? 'allow' : 'approval_required', policies: reason };
}

/** Decides every input both ways and returns how many of each outcome; throws on the first difference. */
function assertSameDecisions(set: PolicySet, inputs: readonly DecisionInput[]): Record<PolicyOutcome, number> {
  const engine = createPolicyEngine(set, { cacheEntries: 0, risk: settings });
  const outcomes: Record<PolicyOutcome, number> = { allow: 0, deny: 0, approval_required: 0 };
  for (const input of inputs) {
    const expected = plainDecision(set, input);
    const decision = engine.decide(input);
    if (expected === undefined) continue; // decided before Cedar, the same both ways
    assert.deepEqual(
      { outcome: decision.outcome, policies: [...decision.policies] },
      expected,
      `the plan decided differently from the plain request: ${JSON.stringify({ ...input, principal: input.principal.id, action: input.action, args: input.args })} (${decision.errors.join('; ')})`,
    );
    outcomes[decision.outcome]++;
  }
  return outcomes;
}

describe('a request plan decides exactly as the plain request', () => {
  test('the example sets: every test case and its variants (stage, arguments, labels, delegation, approval)', () => {
    const set = loadPolicySet(EXAMPLES);
    assert.equal(set.perRequestValidation, undefined, 'the default schema fits the shape Writ sends');
    const mix = buildDecisionMix(loadPolicyTests(EXAMPLES));
    const observed = [
      { callsLastMinute: 0, unusualResource: false },
      { callsLastMinute: 1_000, unusualResource: true },
    ];
    const outcomes = assertSameDecisions(set, mix.flatMap((input) => observed.map((o) => ({ ...input, observed: o }))));
    // INVARIANT: a comparison that only ever saw denies would prove little.
    assert.ok(outcomes.allow > 50 && outcomes.deny > 50 && outcomes.approval_required > 5, JSON.stringify(outcomes));
  });

  test('a set written to trip the plan: action lists and groups, action in a condition, tags, has, like, an entity through if-then-else, big literals, scopes on ids', () => {
    const set = loadPolicySet(folder({ 'tricky.cedar': TRICKY_POLICIES }));
    assert.equal(set.perRequestValidation, undefined);
    // refund is in write: the list scope applies to it, and the condition on `action in` needs its group.
    assert.ok(set.planFor('production', 'refund')?.policyIds.includes('t-action-list'));
    assert.ok(set.planFor('production', 'refund')?.actionEntity !== undefined);
    assert.ok(!set.planFor('production', 'read')?.policyIds.includes('t-action-list'));
    assert.equal(set.planFor('production', 'export')?.reads.principal, undefined, 'an entity read through if-then-else sends every attribute');
    const outcomes = assertSameDecisions(set, trickyRequests());
    assert.ok(outcomes.allow > 20 && outcomes.deny > 20 && outcomes.approval_required > 0, JSON.stringify(outcomes));
  });

  test('a schema that does not fit Writ\'s shape keeps per-request validation, and decides as before', () => {
    const schema = (edit: (text: string) => string) => edit(loadPolicySet(EXAMPLES).schemaText);
    const cases: [string, string, RegExp][] = [
      ['a context without purpose', schema((t) => t.replace(/\n\s*purpose: String,[^\n]*/, '')), /context of .* declares/],
      ['an argument of a type Writ does not check', schema((t) => t.replace('destination?: String', 'destination?: Set<String>')), /argument destination is a Set/],
      ['an extension-typed attribute (a string would be converted)', schema((t) => t.replace('entity Tool, Dataset, Api, Database, Resource { kind: String', 'entity Tool, Dataset, Api, Database, Resource { kind: ipaddr')), /kind is ipaddr|kind is Extension/],
      ['an open context record', schema((t) => t.replace('type DecisionContext = {', 'type DecisionContext = {\n    extra?: String,')), /extra is not something Writ sends|declares/],
    ];
    for (const [what, text, reason] of cases) {
      const dir = bareFolder({ 'schema.cedarschema': text, 'policies.cedar': '@id("p") permit (principal, action in Writ::Action::"read", resource) when { context.tier == "read" };' });
      const set = loadPolicySet(dir);
      assert.match(set.perRequestValidation ?? '', reason, what);
      const inputs = trickyRequests().filter((input) => input.environment !== 'sandbox');
      assertSameDecisions(set, inputs);
    }
  });

  test('types are read as Cedar resolves them: __cedar::Long is Long, and the schema still fits', () => {
    const text = loadPolicySet(EXAMPLES).schemaText.replace('amountCents?: Long', 'amountCents?: __cedar::Long');
    const set = loadPolicySet(folder({ 'schema.cedarschema': text }));
    assert.equal(set.argTypes.get('amountCents'), 'Long');
    assert.equal(set.perRequestValidation, undefined);
    assert.equal(createPolicyEngine(set, { cacheEntries: 0 }).decide({ ...trickyRequests()[0]!, stage: 'call', args: { amountCents: '12' } }).outcome, 'deny', 'a string for a Long is still refused');
  });

  test('an entity type the schema does not let the action apply to is denied, as request validation would', () => {
    const text = loadPolicySet(EXAMPLES).schemaText.replace(
      'action "admin" appliesTo { principal: [Agent, Service, Human]',
      'action "admin" appliesTo { principal: [Human]',
    );
    const set = loadPolicySet(folder({ 'schema.cedarschema': text, 'open.cedar': '@id("humans-admin") permit (principal, action == Writ::Action::"admin", resource);' }));
    assert.equal(set.perRequestValidation, undefined);
    const engine = createPolicyEngine(set, { cacheEntries: 0 });
    const request = trickyRequests().find((input) => input.action === 'admin' && input.principal.actorType === 'agent')!;
    const decision = engine.decide(request);
    assert.equal(decision.outcome, 'deny');
    assert.match(decision.errors.join(), /Writ::Agent is not a principal of action admin/);
    assertSameDecisions(set, trickyRequests().filter((input) => input.action === 'admin'));
  });
});

/** The example schema and catalog with `files` and no example policies. */
function bareFolder(files: Record<string, string>): string {
  const dir = folder(files);
  // The example set's schema and catalog only: none of its policies, whatever they are.
  for (const file of readdirSync(dir)) if (file.endsWith('.cedar') && files[file] === undefined) rmSync(join(dir, file), { force: true });
  rmSync(join(dir, 'environments'), { recursive: true, force: true });
  return dir;
}

describe('what a security review found, each now decided as the plain request', () => {
  const OPEN = '@id("open") permit (principal, action, resource);\n';
  const cases: [string, string][] = [
    ['has with an attribute path (`context has args.destination`) sends args', '@id("f") forbid (principal, action, resource) when { context has args.destination };'],
    ['a record whose key is named Value hides no tag read', '@id("f") forbid (principal, action, resource) when { {Value: principal.hasTag("team")}.Value };'],
    ['a record whose key is named Var hides no context read', '@id("f") forbid (principal, action, resource) when { {Var: context}.Var has risk };'],
    ['a record whose key is named Var hides no use of action', '@id("f") forbid (principal, action, resource) when { {Var: action}.Var in Writ::Action::"write" };'],
    ['a record hides no has on the principal', '@id("f") forbid (principal, action, resource) when { {Value: principal has owner} == {Value: true} };'],
    ['an action named in a policy has the groups the schema gives it', '@id("f") forbid (principal, action, resource) when { Writ::Action::"refund" in Writ::Action::"write" };'],
    ['an action named on the left of is … in has them too', '@id("f") forbid (principal, action, resource) when { Writ::Action::"refund" is Writ::Action in Writ::Action::"write" };'],
    [
      'a condition too deep for Cedar\'s JSON reader keeps its text',
      `@id("deep") forbid (principal, action in Writ::Action::"read", resource) when { ${Array.from({ length: 70 }, (_, i) => `resource != Writ::Resource::"r${i}"`).join(' && ')} };`,
    ],
  ];
  for (const [what, policy] of cases) {
    test(what, () => {
      const set = loadPolicySet(bareFolder({ 'x.cedar': OPEN + policy }));
      const outcomes = assertSameDecisions(set, trickyRequests());
      assert.ok(outcomes.deny > 0, JSON.stringify(outcomes));
    });
  }

  const schemaCases: [string, (text: string) => string, string, RegExp][] = [
    [
      'an action group in another namespace',
      (t) => t.replace('action "refund" in ["write"]', 'action "grp";\n  action "y" in [Other::Action::"grp"];\n  action "refund" in ["write", "y"]') + '\nnamespace Other { action "grp"; }\n',
      '@id("grp") permit (principal, action in Writ::Action::"grp", resource);',
      /namespace Other/,
    ],
    [
      'an action group outside any namespace',
      (t) => t.replace('action "refund" in ["write"]', 'action "refund" in ["write", Action::"frozen"]') + '\naction "frozen";\n',
      OPEN + '@id("frozen") forbid (principal, action in Action::"frozen", resource);',
      /outside any namespace/,
    ],
    [
      'a common type named like an extension type',
      (t) => t.replace('entity Tool, Dataset, Api, Database, Resource { kind: String', 'type ipaddr = String;\n  entity Tool, Dataset, Api, Database, Resource { kind: __cedar::ipaddr'),
      OPEN,
      /type named ipaddr/,
    ],
    [
      'an entity type named String',
      (t) =>
        t
          .replace(/entity (Agent|Service|Human) \{ owner: String, environment: String, actorType: String \} tags String;/g, 'entity $1 { owner: __cedar::String, environment: __cedar::String, actorType: __cedar::String } tags __cedar::String;')
          .replace('namespace Writ {', 'namespace Writ {\n  entity String;'),
      OPEN,
      /type named String/,
    ],
  ];
  for (const [what, edit, policies, reason] of schemaCases) {
    test(`a schema with ${what} is validated per request, and decides as the plain request`, () => {
      const set = loadPolicySet(bareFolder({ 'schema.cedarschema': edit(loadPolicySet(EXAMPLES).schemaText), 'x.cedar': policies }));
      assert.match(set.perRequestValidation ?? '', reason);
      assertSameDecisions(set, trickyRequests());
    });
  }

  test('an engine whose slot a later load took denies instead of compiling over the serving set', () => {
    const dir = bareFolder({ 'x.cedar': OPEN + '@id("no-read") forbid (principal, action in Writ::Action::"read", resource) when { false };' });
    const slot = `plan-test-slot-${Date.now()}`;
    const retired = createPolicyEngine(loadPolicySet(dir, { slot }), { cacheEntries: 0 });
    writeFileSync(join(dir, 'x.cedar'), OPEN + '@id("no-read") forbid (principal, action in Writ::Action::"read", resource);');
    const serving = createPolicyEngine(loadPolicySet(dir, { slot }), { cacheEntries: 0 });
    const read = trickyRequests().find((input) => input.action === 'read' && input.principal.environment === input.environment)!;
    assert.deepEqual(serving.decide(read).policies, ['no-read']);
    const late = retired.decide(read);
    assert.equal(late.outcome, 'deny');
    assert.match(late.errors.join(), /replaced while deciding/);
    assert.deepEqual([serving.decide(read).outcome, serving.decide(read).policies], ['deny', ['no-read']], 'the serving set is untouched');
  });

  test('a lone surrogate in any string is a deny, whether or not a policy reads it', () => {
    const set = loadPolicySet(bareFolder({ 'x.cedar': OPEN }));
    const engine = createPolicyEngine(set, { cacheEntries: 0 });
    const request = trickyRequests()[0]!;
    assert.equal(engine.decide(request).outcome, 'allow');
    for (const bad of [{ purpose: 'refund \uD800 now' }, { intent: '\uDC00' }, { args: { destination: 'x\uD800' } }, { principal: { ...request.principal, labels: { team: '\uDBFF' } } }]) {
      const decision = engine.decide({ ...request, stage: 'call', ...bad });
      assert.equal(decision.outcome, 'deny', JSON.stringify(bad));
      assert.match(decision.errors.join(), /lone surrogate/);
    }
    assert.equal(engine.decide({ ...request, purpose: 'a pair is fine: \uD83D\uDE00' }).outcome, 'allow');
    // An argument the schema does not declare never reaches Cedar, planned or plain.
    const undeclared = { ...request, stage: 'call' as const, args: { ticket: 'T-\uD800' } };
    assert.equal(engine.decide(undeclared).outcome, 'allow');
    assertSameDecisions(set, [undeclared]);
  });
});

describe('what a plan reads', () => {
  const policy = (body: unknown) => ({ id: 'p', text: '', json: { effect: 'permit', principal: { op: 'All' }, action: { op: 'All' }, resource: { op: 'All' }, conditions: [{ kind: 'when', body }] } as cedar.PolicyJson });
  const get = (left: unknown, attr: string) => ({ '.': { left, attr } });

  test('fields read by name, including through has and nested context records', () => {
    const reads = readSetOf([policy({ '&&': { left: { has: { left: get({ Var: 'context' }, 'args'), attr: 'rows' } }, right: { '==': { left: get({ Var: 'principal' }, 'owner'), right: get({ Var: 'resource' }, 'kind') } } } })]);
    assert.deepEqual([...(reads.context ?? [])], ['args']);
    assert.deepEqual([...(reads.principal ?? [])], ['owner']);
    assert.deepEqual([...(reads.resource ?? [])], ['kind']);
    assert.equal(reads.tags, false);
  });

  test('context used as a whole sends the whole context', () => {
    assert.equal(readSetOf([policy({ '==': { left: { Var: 'context' }, right: { Record: {} } } })]).context, undefined);
    assert.equal(readSetOf([policy({ contains: { left: { Set: [{ Var: 'context' }] }, right: { Record: {} } } })]).context, undefined);
  });

  test('an attribute read off anything but principal, resource or context sends every entity attribute', () => {
    const reads = readSetOf([policy(get({ 'if-then-else': { if: { Value: true }, then: { Var: 'principal' }, else: { Var: 'resource' } } }, 'owner'))]);
    assert.equal(reads.principal, undefined);
    assert.equal(reads.resource, undefined);
  });

  test('a tag read anywhere sends the tags', () => {
    assert.equal(readSetOf([policy({ hasTag: { left: { Var: 'principal' }, right: { Value: 'team' } } })]).tags, true);
  });
});

/** Policies that each give the plan something to get wrong (all valid against the default schema). */
const TRICKY_POLICIES = `
@id("t-action-list")
forbid (principal, action in [Writ::Action::"delete", Writ::Action::"write"], resource)
when { context.risk > 60 };

@id("t-action-in-condition")
permit (principal is Writ::Human, action, resource)
when { action in Writ::Action::"write" && principal.hasTag("team") && principal.getTag("team") == "payments" };

@id("t-owner")
permit (principal is Writ::Service, action in Writ::Action::"read", resource)
when { principal has owner && principal.owner like "*@example.com" && resource.tier == "read" };

@id("t-if-entity")
forbid (principal, action == Writ::Action::"export", resource)
when { (if context.risk > 50 then principal else principal).actorType == "agent" && context.delegationDepth > 0 };

@id("t-break-glass")
permit (principal, action == Writ::Action::"admin", resource)
when { context.breakGlass && context.weekday == 1 && context.hour < 12 };

@id("t-rows")
forbid (principal, action == Writ::Action::"export", resource)
when { context.args has rows && context.args.rows > 100000 };

@id("t-destination")
forbid (principal, action == Writ::Action::"export", resource)
when { context.args has destination && !(context.args.destination like "s3://exports/*") };

@id("t-purpose")
@approval("required")
permit (principal is Writ::Human, action == Writ::Action::"delete", resource)
when { context.purpose like "*incident*" && context.riskLevel != "critical" && context.actorType == "human" };

@id("t-bigint")
forbid (principal, action == Writ::Action::"delete", resource)
when { context.risk > 9007199254740993 };

@id("t-resource-in")
permit (principal, action in Writ::Action::"read", resource in Writ::Dataset::"warehouse:shared")
when { context.approval == "none" };

@id("t-principal-eq")
permit (principal == Writ::Agent::"spiffe://example.org/agent/support-bot", action == Writ::Action::"call", resource)
when { resource.sensitivity == "internal" };
`;

/** A deterministic spread of requests over the tricky set: every action, actor type, several resources, environments, stages and arguments. */
function trickyRequests(): DecisionInput[] {
  const identity = (id: string, actorType: Identity['actorType'], labels: Record<string, string> = {}, owner = 'ops@example.com'): Identity => ({
    ...toPrincipal({ id, actorType, environment: 'production', owner }),
    labels,
  });
  const principals = [
    identity('spiffe://example.org/agent/support-bot', 'agent', { team: 'support' }),
    identity('spiffe://example.org/svc/billing', 'service', {}, 'billing@example.com'),
    identity('spiffe://example.org/svc/other', 'service', {}, 'someone@elsewhere.net'),
    identity('alice@example.com', 'human', { team: 'payments' }),
    identity('bob@example.com', 'human', { team: 'support' }),
  ];
  const resources = ['tickets:T-1', 'payments:refunds/9', 'payments:payouts/1', 'warehouse:shared', 'db:orders/42', 'tool:shell', 'scratch:notes'];
  const actions = ['read', 'write', 'delete', 'export', 'admin', 'refund', 'call'];
  const calls: Partial<DecisionInput>[] = [
    {},
    { stage: 'call', args: { amountCents: 500, rows: 10 } },
    { stage: 'call', args: { amountCents: 50_000, rows: 500_000, destination: 's3://elsewhere/x' } },
    { stage: 'call', args: { destination: 's3://exports/weekly', ticket: 'T-9' } },
    { breakGlass: true, delegationDepth: 1, purpose: 'incident 4711' },
    { approval: 'approved', purpose: 'incident review' },
    { purpose: 'incident 4712 cleanup' },
  ];
  const monday = Date.parse('2026-11-23T09:00:00Z');
  const requests: DecisionInput[] = [];
  let n = 0;
  for (const principal of principals) {
    for (const action of actions) {
      for (const resource of resources) {
        const extra = calls[n % calls.length]!;
        const environment = ['production', 'sandbox', 'staging'][n % 3]!;
        requests.push({
          principal: { ...principal, environment: n % 7 === 0 ? 'sandbox' : environment },
          action,
          resource,
          environment,
          intent: ['customer-support', 'data-analysis', 'incident-response'][n % 3]!,
          now: monday + (n % 5) * 3_600_000,
          observed: { callsLastMinute: (n * 37) % 200, unusualResource: n % 2 === 0 },
          ...extra,
        });
        n++;
      }
    }
  }
  return requests;
}
