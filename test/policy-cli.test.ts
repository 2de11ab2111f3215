/**
 * The policy lifecycle before a change ships: `writ policy validate|test|explain`
 * as an operator runs them (the built bin, real processes), and the test-case
 * runner and loader underneath, in process.
 */
import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { PACKAGE_ROOT } from '../src/core/config.js';
import { isWritError } from '../src/core/errors.js';
import { createPolicyEngine } from '../src/policy/engine.js';
import { loadPolicySet } from '../src/policy/policy-set.js';
import { loadPolicyTests, parsePolicyTests, runPolicyTests, toPrincipal, type PolicyTestCase, type PolicyTestProblem } from '../src/policy/policy-tests.js';
import { runWrit, tempDirs } from './helpers/cli.js';

const EXAMPLES = join(PACKAGE_ROOT, 'policies');
const tempDir = tempDirs('writ-policy-cli-');

/** A copy of the example set with `extra` files added or replaced. */
function policyDir(extra: Record<string, string> = {}): string {
  const dir = tempDir();
  cpSync(EXAMPLES, dir, { recursive: true });
  for (const [name, text] of Object.entries(extra)) writeFileSync(join(dir, name), text);
  return dir;
}

const writ = (args: string[], options: { cwd?: string } = {}) => runWrit(args, options.cwd ?? tempDir());

async function exitCodeOf(args: string[], options: { cwd?: string } = {}): Promise<number | null> {
  return (await writ(args, options)).code;
}

const AGENT = 'spiffe://demo.local/agent/support';
const explainArgs = (overrides: Record<string, string> = {}): string[] => {
  const flags: Record<string, string> = {
    principal: AGENT,
    'actor-type': 'agent',
    action: 'read',
    resource: 'db:orders/42',
    environment: 'production',
    intent: 'customer-support',
    at: '2026-11-23T10:00:00Z',
    ...overrides,
  };
  return ['policy', 'explain', ...Object.entries(flags).flatMap(([flag, value]) => [`--${flag}`, value])];
};

const SYNTAX_ERROR = '// a comment with ünïcode before the error\n\n@id("broken")\npermit (principal, action, resource) when { oops };\n';
const TYPE_ERROR = '@id("typo")\npermit (principal, action, resource)\n  when { context.enviroment == "production" };\n';

describe('writ policy validate', async () => {
  test('the bundled set is valid, and its break-glass set: version, policy and action counts', async () => {
    const answer = await writ(['policy', 'validate']);
    assert.equal(answer.code, 0, answer.stderr);
    assert.match(answer.stdout, /^policy set OK: sha256:[0-9a-f]{32}, \d+ policies, \d+ actions\n\nbreak-glass set \(.*break-glass\):\npolicy set OK: sha256:[0-9a-f]{32}, 4 policies, \d+ actions\n$/);
    assert.equal(answer.stdout, (await writ(['policy', 'validate', '--policy-dir', EXAMPLES])).stdout, 'the default is the configured (bundled) folder');
  });

  test('a broken break-glass set is caught like the normal one (exit 3), with its file and line', async () => {
    const answer = await writ(['policy', 'validate', '--policy-dir', policyDir({ 'break-glass/typo.cedar': TYPE_ERROR })]);
    assert.equal(answer.code, 3, answer.stdout + answer.stderr);
    assert.match(answer.stderr, /break-glass\/typo\.cedar:3:\d+: /);
  });

  test('a syntax error exits 3 with file:line:column, the column counted in characters', async () => {
    const dir = policyDir({ 'broken.cedar': SYNTAX_ERROR });
    const answer = await writ(['policy', 'validate', '--policy-dir', dir]);
    assert.equal(answer.code, 3);
    assert.equal(answer.stdout, '');
    assert.match(answer.stderr, new RegExp(`^${join(dir, 'broken.cedar').replaceAll('/', '\\/')}:4:45: invalid variable: oops`, 'm'));
  });

  test('a policy that does not type-check against the schema exits 3 pointing at the typo, with Cedar\'s suggestion', async () => {
    const dir = policyDir({ 'typo.cedar': TYPE_ERROR });
    const answer = await writ(['policy', 'validate', '--policy-dir', dir]);
    assert.equal(answer.code, 3);
    const lines = answer.stderr.trimEnd().split('\n');
    const problems = lines.filter((line) => line.includes('typo.cedar'));
    assert.ok(problems.length > 0, answer.stderr);
    for (const line of problems) assert.match(line, /typo\.cedar:3:10: typo: .*`enviroment`.*did you mean `environment`\?/);
    assert.match(lines.at(-1) ?? '', /ERR_POLICY_INVALID/);
  });

  test('a broken schema and a bad catalog entry are placed too', async () => {
    const schema = await writ(['policy', 'validate', '--policy-dir', policyDir({ 'schema.cedarschema': 'namespace Writ {\n  entity A;\n  action "read" appliesTo { principal: [B], resource: [A] };\n}\n' })]);
    assert.equal(schema.code, 3);
    assert.match(schema.stderr, /schema\.cedarschema:3:41: failed to resolve type: B/);
    const catalog = await writ(['policy', 'validate', '--policy-dir', policyDir({ 'resources.yaml': 'resources:\n  - pattern: "db:*"\n    sensitivity: secret\n' })]);
    assert.equal(catalog.code, 3);
    assert.match(catalog.stderr, /resources\.yaml:3:18: resources\.0\.sensitivity: /);
  });

  test('without --policy-dir, the folder configured in writ.yaml (or --config) is validated', async () => {
    const cwd = tempDir();
    cpSync(policyDir({ 'broken.cedar': SYNTAX_ERROR }), join(cwd, 'mine'), { recursive: true });
    writeFileSync(join(cwd, 'writ.yaml'), 'policy:\n  dir: ./mine\n');
    const answer = await writ(['policy', 'validate'], { cwd });
    assert.equal(answer.code, 3);
    assert.match(answer.stderr, /^mine\/broken\.cedar:4:45: /m, 'shown relative to the working folder');
    const elsewhere = tempDir();
    assert.equal(await exitCodeOf(['policy', 'validate', '--config', join(cwd, 'writ.yaml')], { cwd: elsewhere }), 3);
    assert.equal(await exitCodeOf(['policy', 'validate', '--config', join(cwd, 'writ.yaml'), '--policy-dir', EXAMPLES], { cwd: elsewhere }), 0, '--policy-dir wins');
  });

  test('a missing folder is an invalid set, and stray arguments are usage errors', async () => {
    assert.equal(await exitCodeOf(['policy', 'validate', '--policy-dir', join(tempDir(), 'nope')]), 3);
    assert.equal(await exitCodeOf(['policy', 'validate', 'extra']), 2);
    assert.equal(await exitCodeOf(['policy']), 2);
    assert.equal(await exitCodeOf(['policy', 'lint-everything']), 2);
  });
});

describe('writ policy test', async () => {
  test('the bundled cases pass (exit 0), one line per case and a summary', async () => {
    const answer = await writ(['policy', 'test']);
    assert.equal(answer.code, 0, answer.stdout + answer.stderr);
    const cases = answer.stdout.split('\n').filter((line) => /^ {2}[✔✖] /.test(line));
    assert.ok(cases.length >= 20, answer.stdout);
    assert.ok(cases.every((line) => line.startsWith('  ✔ ')));
    const [main, breakGlass] = answer.stdout.split('\nbreak-glass set');
    const count = (text = '') => text.split('\n').filter((line) => /^ {2}✔ /.test(line)).length;
    assert.match(main ?? '', new RegExp(`\\n${count(main)} cases: ${count(main)} passed, 0 failed \\(policy set sha256:[0-9a-f]{32}\\)\\n$`));
    assert.match(breakGlass ?? '', new RegExp(`\\n${count(breakGlass)} cases: ${count(breakGlass)} passed, 0 failed \\(policy set sha256:[0-9a-f]{32}\\)\\n$`));
    assert.ok(count(breakGlass) >= 5, 'the break-glass set has cases of its own');
    assert.match(answer.stdout, /baseline\.tests\.yaml\n/);
    assert.match(answer.stdout, /support-agent\.tests\.yaml\n/);
  });

  test('a case whose expectation is wrong fails the run (exit 2), showing expected and actual', async () => {
    const text = readFileSync(join(EXAMPLES, 'support-agent.tests.yaml'), 'utf8');
    const flipped = text.replace(/(name: exporting a customer's orders needs a human's approval\n(?: {4}.*\n)*? {4}expect: )approval_required/, '$1allow');
    assert.notEqual(flipped, text);
    const answer = await writ(['policy', 'test', '--policy-dir', policyDir({ 'support-agent.tests.yaml': flipped })]);
    assert.equal(answer.code, 2);
    assert.match(answer.stdout, /✖ exporting a customer's orders needs a human's approval\n {6}expected allow by \[order-exports-need-approval\]\n {6}actual {3}approval_required by \[order-exports-need-approval\]\n/);
    assert.match(answer.stdout, /cases: \d+ passed, 1 failed/);
  });

  test('a case naming the wrong deciding policy fails, and a policy the set lacks is pointed out', async () => {
    const dir = policyDir({
      'extra.tests.yaml': `cases:
  - name: reading an order is decided by the ticket policy
    principal: { id: ${AGENT}, actorType: agent, environment: production }
    action: read
    resource: db:orders/42
    context: { environment: production, intent: customer-support, at: "2026-11-23T10:00:00Z" }
    expect: allow
    policies: [agents-read-everything]
`,
    });
    const answer = await writ(['policy', 'test', '--policy-dir', dir]);
    assert.equal(answer.code, 2);
    assert.match(answer.stdout, /actual {3}allow by \[agents-read-non-restricted\]\n {6}note {5}the set has no policy "agents-read-everything"/);
  });

  test('a malformed test file exits 1 naming the file, line and case, and runs nothing', async () => {
    const dir = policyDir({
      'bad.tests.yaml': `cases:
  - name: a robot reads
    principal: { id: ${AGENT}, actorType: robot, environment: production }
    action: read
    resource: db:orders/42
    context: { environment: production, intent: customer-support, at: "2026-11-23T10:00:00Z" }
    expect: allow
`,
    });
    const answer = await writ(['policy', 'test', '--policy-dir', dir]);
    assert.equal(answer.code, 1);
    assert.equal(answer.stdout, '');
    assert.match(answer.stderr, /bad\.tests\.yaml:3:68: case 1 "a robot reads": principal\.actorType: /);
    assert.equal(await exitCodeOf(['policy', 'test', '--policy-dir', policyDir({ 'bad.tests.yaml': 'cases: [\n' })]), 1, 'a YAML syntax error');
  });

  test('an invalid set exits 3 before any case runs; a folder without cases exits 1', async () => {
    const invalid = await writ(['policy', 'test', '--policy-dir', policyDir({ 'typo.cedar': TYPE_ERROR })]);
    assert.equal(invalid.code, 3);
    assert.equal(invalid.stdout, '');
    const empty = policyDir();
    for (const file of readdirSync(empty, { recursive: true, encoding: 'utf8' }).filter((name) => name.endsWith('.tests.yaml'))) rmSync(join(empty, file));
    const none = await writ(['policy', 'test', '--policy-dir', empty]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /nothing to test/);
  });
});

describe('writ policy explain', async () => {
  test('an allowed read: outcome, deciding permit, tier and sensitivity from the catalog', async () => {
    const answer = await writ(explainArgs());
    assert.equal(answer.code, 0, answer.stderr);
    assert.match(answer.stdout, /^outcome {6}allow$/m);
    assert.match(answer.stdout, /^policies {5}agents-read-non-restricted \(permit, support-agent\.cedar\)$/m);
    assert.match(answer.stdout, /^tier {9}read$/m);
    assert.match(answer.stdout, /^sensitivity {2}confidential$/m);
    assert.match(answer.stdout, /^errors {7}none$/m);
  });

  test('a denied export of restricted data names the forbid, and still exits 0', async () => {
    const answer = await writ(explainArgs({ action: 'export', resource: 'db:customers/pii/*' }));
    assert.equal(answer.code, 0, answer.stderr);
    assert.match(answer.stdout, /^outcome {6}deny$/m);
    assert.match(answer.stdout, /^policies {5}no-export-of-restricted \(forbid, baseline\.cedar\)$/m);
    assert.match(answer.stdout, /^sensitivity {2}restricted$/m);
  });

  test('a principal registered for another environment is denied by the forbid', async () => {
    const answer = await writ(explainArgs({ 'principal-env': 'sandbox' }));
    assert.match(answer.stdout, /^outcome {6}deny$/m);
    assert.match(answer.stdout, /^policies {5}environment-must-match /m);
  });

  test('an export requires approval; --json is the decision for scripts', async () => {
    const text = await writ(explainArgs({ action: 'export', resource: 'db:orders/42' }));
    assert.match(text.stdout, /^outcome {6}approval_required$/m);
    const answer = await writ([...explainArgs({ action: 'export', resource: 'db:orders/42' }), '--json']);
    assert.equal(answer.code, 0, answer.stderr);
    const json = JSON.parse(answer.stdout);
    assert.equal(json.outcome, 'approval_required');
    assert.deepEqual(json.policies, ['order-exports-need-approval']);
    assert.deepEqual(json.deciding, [{ id: 'order-exports-need-approval', effect: 'permit', file: 'support-agent.cedar', approval: true }]);
    assert.equal(json.tier, 'export');
    assert.equal(json.sensitivity, 'confidential');
    assert.deepEqual(json.errors, []);
    assert.match(json.policyVersion, /^sha256:[0-9a-f]{32}$/);
    assert.equal(json.request.at, '2026-11-23T10:00:00.000Z');
    assert.equal(json.request.principal.id, AGENT);
  });

  test('an invalid set exits 3; a missing or bad flag is a usage error (exit 2)', async () => {
    assert.equal(await exitCodeOf([...explainArgs(), '--policy-dir', policyDir({ 'broken.cedar': SYNTAX_ERROR })]), 3);
    assert.equal(await exitCodeOf(explainArgs().filter((arg, i, all) => arg !== '--intent' && all[i - 1] !== '--intent')), 2);
    assert.equal(await exitCodeOf(explainArgs({ 'actor-type': 'robot' })), 2);
    assert.equal(await exitCodeOf(explainArgs({ at: 'yesterday' })), 2);
    assert.equal(await exitCodeOf(explainArgs({ resource: 'db:orders/../customers/pii/1' })), 2);
  });
});

describe('policy test cases (in process)', () => {
  const engine = createPolicyEngine(loadPolicySet(EXAMPLES));
  const base = {
    principal: { id: AGENT, actorType: 'agent', environment: 'production' },
    context: { environment: 'production', intent: 'customer-support', at: '2026-11-23T10:00:00Z' },
  };
  const file = (cases: unknown[], defaults?: unknown) => JSON.stringify({ ...(defaults === undefined ? {} : { defaults }), cases });
  const problemsOf = (text: string): PolicyTestProblem[] => {
    try {
      parsePolicyTests('t.tests.yaml', text);
    } catch (error) {
      assert.ok(isWritError(error, 'ERR_VALIDATION'), String(error));
      return error.extensions.problems as PolicyTestProblem[];
    }
    assert.fail('the file parsed');
  };
  const oneCase = (overrides: Record<string, unknown>): PolicyTestCase => {
    const [parsed] = parsePolicyTests('t.tests.yaml', file([{ name: 'c', ...base, action: 'read', resource: 'db:orders/42', expect: 'allow', ...overrides }]));
    assert.ok(parsed);
    return parsed;
  };

  test('runPolicyTests: a case passes only when the outcome, and the deciding policies when named, are the expected ones', () => {
    const results = runPolicyTests(engine, [
      oneCase({}),
      oneCase({ policies: ['agents-read-non-restricted'] }),
      oneCase({ expect: 'deny' }),
      oneCase({ policies: [] }),
      oneCase({ expect: 'deny', policies: ['no-such-policy'] }),
    ]);
    assert.deepEqual(
      results.map((r) => [r.passed, r.mismatches, r.unknownPolicies]),
      [
        [true, [], []],
        [true, [], []],
        [false, ['outcome'], []],
        [false, ['policies'], []],
        [false, ['outcome', 'policies'], ['no-such-policy']],
      ],
    );
    assert.equal(results[2]?.decision.outcome, 'allow');
  });

  test('runPolicyTests: deciding policies compare in any order', () => {
    const [result] = runPolicyTests(engine, [
      oneCase({ action: 'admin', resource: 'tickets:T-1', context: { ...base.context, environment: 'staging' }, expect: 'deny', policies: ['environment-must-match', 'agents-never-admin'] }),
    ]);
    assert.equal(result?.passed, true, JSON.stringify(result?.decision));
  });

  test('defaults fill a case field by field; the case wins', () => {
    const [parsed] = parsePolicyTests(
      't.tests.yaml',
      file([{ name: 'c', principal: { environment: 'sandbox', owner: 'bob@example.com' }, action: 'read', resource: 'db:orders/42', context: { intent: 'x' }, expect: 'deny' }], base),
    );
    assert.deepEqual(parsed?.request.principal, toPrincipal({ id: AGENT, actorType: 'agent', environment: 'sandbox', owner: 'bob@example.com' }));
    assert.equal(parsed?.request.environment, 'production');
    assert.equal(parsed?.request.intent, 'x');
    assert.equal(parsed?.request.now, Date.parse('2026-11-23T10:00:00Z'));
  });

  const malformed: [string, Record<string, unknown>, RegExp][] = [
    ['a misspelt key (a check that would silently not run)', { polices: ['x'] }, /Unrecognized key/],
    ['an unknown outcome', { expect: 'allowed' }, /^case 1 "c": expect: /],
    ['an unknown actor type', { principal: { ...base.principal, actorType: 'robot' } }, /principal\.actorType/],
    ['no decision time', { context: { environment: 'production', intent: 'customer-support' } }, /context\.at/],
    ['a time without a zone', { context: { ...base.context, at: '2026-11-23T10:00:00' } }, /context\.at: an ISO 8601 time/],
    ['a non-canonical resource', { resource: 'db:orders/../customers/pii/1' }, /resource: /],
    ['a context field policies do not see', { context: { ...base.context, risk: 10 } }, /Unrecognized key/],
  ];
  for (const [what, overrides, message] of malformed) {
    test(`a test file with ${what} is refused, naming the file and the case`, () => {
      const [problem] = problemsOf(file([{ name: 'c', ...base, action: 'read', resource: 'db:orders/42', expect: 'allow', ...overrides }]));
      assert.equal(problem?.file, 't.tests.yaml');
      assert.equal(problem?.case, 1);
      assert.match(problem?.message ?? '', message);
    });
  }

  test('duplicate case names, no cases, a YAML error and a non-mapping are refused', () => {
    const valid = { name: 'same', ...base, action: 'read', resource: 'db:orders/42', expect: 'allow' };
    const [duplicate] = problemsOf(file([valid, valid]));
    assert.equal(duplicate?.case, 2);
    assert.match(duplicate?.message ?? '', /another case has this name/);
    assert.match(problemsOf('cases: []\n')[0]?.message ?? '', /at least one case/);
    assert.deepEqual(problemsOf('cases:\n  - name: x\n  - name: x\n    name: y\n').map((p) => [p.line, p.message]), [[4, 'Map keys must be unique']]);
    assert.equal(problemsOf('- just a list\n').length, 1);
  });

  test('loadPolicyTests names every problem of every file', () => {
    const dir = policyDir({ 'a.tests.yaml': 'cases: []\n', 'b.tests.yaml': 'nonsense: true\n' });
    try {
      loadPolicyTests(dir);
      assert.fail('loaded');
    } catch (error) {
      assert.ok(isWritError(error, 'ERR_VALIDATION'));
      const files = (error.extensions.problems as PolicyTestProblem[]).map((p) => p.file);
      assert.ok(files.includes('a.tests.yaml') && files.includes('b.tests.yaml'), String(files));
    }
  });

  test('test files are not part of the policy set: adding or breaking one leaves the version alone', () => {
    assert.equal(loadPolicySet(policyDir({ 'extra.tests.yaml': 'not: [valid\n' })).version, engine.version);
  });

  test('every bundled break-glass policy is named by a case, and those cases fail once the policy is removed', () => {
    const bgDir = join(EXAMPLES, 'break-glass');
    const bgEngine = createPolicyEngine(loadPolicySet(bgDir, { inherit: EXAMPLES }));
    const cases = loadPolicyTests(bgDir);
    assert.ok(runPolicyTests(bgEngine, cases).every((r) => r.passed));
    for (const policy of bgEngine.set.policies.values()) {
      const naming = cases.filter((c) => c.policies?.includes(policy.id));
      assert.ok(naming.length > 0, `no case names ${policy.id}`);
      const dir = policyDir();
      const path = join(dir, 'break-glass', policy.file);
      writeFileSync(path, readFileSync(path, 'utf8').replace(policy.text, ''));
      const without = createPolicyEngine(loadPolicySet(join(dir, 'break-glass'), { inherit: dir }));
      for (const result of runPolicyTests(without, naming)) assert.equal(result.passed, false, `${result.case.name} passes without ${policy.id}`);
    }
  });

  test('every bundled policy is named by a case, and those cases fail once the policy is removed', () => {
    const cases = loadPolicyTests(EXAMPLES);
    assert.ok(runPolicyTests(engine, cases).every((r) => r.passed));
    for (const policy of engine.set.policies.values()) {
      const naming = cases.filter((c) => c.policies?.includes(policy.id));
      assert.ok(naming.length > 0, `no case names ${policy.id}`);
      const dir = policyDir();
      const path = join(dir, policy.file);
      writeFileSync(path, readFileSync(path, 'utf8').replace(policy.text, ''));
      const without = createPolicyEngine(loadPolicySet(dir));
      for (const result of runPolicyTests(without, naming)) assert.equal(result.passed, false, `${result.case.name} passes without ${policy.id}`);
    }
  });

  test('the example in the README parses and passes against the bundled set', () => {
    const readme = readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('### Policy lifecycle'));
    const example = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(example, 'README has a yaml example under Policy lifecycle');
    const results = runPolicyTests(engine, parsePolicyTests('README.md', example));
    assert.ok(results.length > 0 && results.every((r) => r.passed));
  });
});
