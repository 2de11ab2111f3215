/**
 * `writ policy lint`: standing privilege found before a policy ships. The pure
 * `lintPolicySet` over small real policy sets (the bundled schema and catalog
 * plus one .cedar per case, loaded and validated as Writ loads them), then the
 * built CLI as an operator runs it.
 */
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { PACKAGE_ROOT } from '../src/core/config.js';
import { lintPolicySet, type LintFinding, type LintOptions } from '../src/policy/lint.js';
import { loadPolicySet } from '../src/policy/policy-set.js';
import { runWrit, tempDirs } from './helpers/cli.js';

const EXAMPLES = join(PACKAGE_ROOT, 'policies');
const tempDir = tempDirs('writ-policy-lint-');

/** The bundled schema and catalog with `policies` as the only policy file. */
function policyDir(policies: string): string {
  const dir = tempDir();
  copyFileSync(join(EXAMPLES, 'schema.cedarschema'), join(dir, 'schema.cedarschema'));
  copyFileSync(join(EXAMPLES, 'resources.yaml'), join(dir, 'resources.yaml'));
  writeFileSync(join(dir, 'case.cedar'), policies);
  return dir;
}

function lint(policies: string, options: LintOptions = {}): LintFinding[] {
  return lintPolicySet(loadPolicySet(policyDir(policies)), options);
}

/** `rule severity` of each finding, for compact assertions. */
function summary(findings: readonly LintFinding[]): string[] {
  return findings.map((f) => `${f.rule} ${f.severity}`);
}

const AGENT = 'principal is Writ::Agent';
const READ = 'action == Writ::Action::"read"';
const WRITE = 'action == Writ::Action::"write"';

describe('lintPolicySet: standing privilege', () => {
  test('a permit with no environment, time or task condition is standing privilege (medium for read only)', () => {
    const findings = lint(`@id("p")\npermit (${AGENT}, ${READ}, resource) when { resource.kind == "tickets" };\n`);
    assert.deepEqual(summary(findings), ['standing-privilege medium']);
    assert.equal(findings[0]?.policy, 'p');
    assert.deepEqual(findings[0]?.references.map((r) => r.id), ['NHI5', 'ASI03']);
  });

  test('standing privilege over a write or riskier action is high', () => {
    const findings = lint(`@id("p")\npermit (${AGENT}, ${WRITE}, resource) when { resource.kind == "tickets" };\n`);
    assert.deepEqual(summary(findings), ['standing-privilege high', 'unapproved-in-production medium']);
  });

  for (const condition of ['context.intent == "customer-support"', 'context.environment == "sandbox"', 'context.hour >= 9 && context.hour < 17', 'context.weekday != 0']) {
    test(`a permit conditioned on ${condition} is not standing privilege`, () => {
      const findings = lint(`@id("p")\npermit (${AGENT}, ${READ}, resource) when { resource.kind == "tickets" && ${condition} };\n`);
      assert.deepEqual(summary(findings).filter((s) => s.startsWith('standing-privilege')), []);
    });
  }

  test('an unless clause constrains as well as a when clause', () => {
    assert.deepEqual(lint(`@id("p")\npermit (${AGENT}, ${READ}, resource) when { resource.kind == "tickets" } unless { context.intent == "bulk-export" };\n`), []);
  });

  test('an approval-gated permit without constraints is low: every use waits for a human', () => {
    const findings = lint(`@id("p")\n@approval("required")\npermit (${AGENT}, ${WRITE}, resource) when { resource.kind == "tickets" };\n`);
    assert.deepEqual(summary(findings), ['standing-privilege low']);
  });

  test('forbids never produce findings, however broad', () => {
    assert.deepEqual(lint('@id("f1")\nforbid (principal, action, resource);\n@id("f2")\nforbid (principal, action in Writ::Action::"admin", resource) when { resource.kind == "x" };\n'), []);
  });
});

describe('lintPolicySet: write, delete, export and admin without approval in production', () => {
  test('a write permit that can apply in production is medium; delete, export and admin are high', () => {
    const intent = 'when { resource.kind == "tickets" && context.intent == "customer-support" }';
    assert.deepEqual(summary(lint(`@id("p")\npermit (${AGENT}, ${WRITE}, resource) ${intent};\n`)), ['unapproved-in-production medium']);
    for (const tier of ['delete', 'export', 'admin']) {
      const findings = lint(`@id("p")\npermit (${AGENT}, action == Writ::Action::"${tier}", resource) ${intent};\n`);
      assert.deepEqual(summary(findings), ['unapproved-in-production high'], tier);
      assert.deepEqual(findings[0]?.references.map((r) => r.id), ['NHI5', 'ASI02']);
    }
  });

  test('a limit on the call\'s arguments lowers it one level, only when no call without arguments passes', () => {
    const base = 'resource.kind == "tickets" && context.intent == "cleanup"';
    const limited = lint(`@id("p")\npermit (${AGENT}, action == Writ::Action::"delete", resource) when { ${base} && (context.stage == "grant" || (context.args has rows && context.args.rows <= 10)) };\n`);
    assert.deepEqual(summary(limited), ['unapproved-in-production medium']);
    assert.match(limited[0]?.message ?? '', /within limits on the call's arguments/);
    // Mentions the arguments, limits nothing: a call without them still passes.
    for (const condition of ['context.args has rows || context.intent == "cleanup"', '(context.args has rows && context.args.rows <= 10) || context.hour >= 0', 'context.stage == "call" || context.args has rows']) {
      const findings = lint(`@id("p")\npermit (${AGENT}, action == Writ::Action::"delete", resource) when { ${base} && (${condition}) };\n`);
      assert.deepEqual(summary(findings), ['unapproved-in-production high'], condition);
    }
  });

  test('@approval("required") answers it', () => {
    assert.deepEqual(lint(`@id("p")\n@approval("required")\npermit (${AGENT}, action == Writ::Action::"delete", resource) when { resource.kind == "tickets" && context.intent == "cleanup" };\n`), []);
  });

  for (const condition of [
    'when { context.environment == "sandbox" }',
    'when { ["sandbox", "staging"].contains(context.environment) }',
    'when { context.environment like "sand*" }',
    'unless { context.environment == "production" }',
    'when { context.intent == "cleanup" && !(context.environment == "production") }',
    'when { context.environment != "production" || context.intent == "never" && false }',
  ]) {
    test(`a condition that excludes production answers it: ${condition}`, () => {
      assert.deepEqual(lint(`@id("p")\npermit (${AGENT}, action == Writ::Action::"delete", resource) when { resource.kind == "tickets" } ${condition};\n`), []);
    });
  }

  for (const condition of ['context.environment != "sandbox"', 'context.environment like "prod*"', '["production", "sandbox"].contains(context.environment)', 'principal.environment == "sandbox"']) {
    test(`a condition that still admits production does not: ${condition}`, () => {
      const findings = lint(`@id("p")\npermit (${AGENT}, action == Writ::Action::"delete", resource) when { resource.kind == "tickets" && context.intent == "cleanup" && ${condition} };\n`);
      assert.deepEqual(summary(findings), ['unapproved-in-production high']);
    });
  }

  test('an action group covers every action inside it: `in write` allows refund too', () => {
    const findings = lint(`@id("p")\npermit (${AGENT}, action in Writ::Action::"write", resource) when { resource.kind == "tickets" && context.intent == "customer-support" };\n`);
    assert.deepEqual(summary(findings), ['unapproved-in-production medium']);
    assert.match(findings[0]?.message ?? '', /write-tier refund, write in production/);
  });

  test('a context.tier condition narrows what the permit covers', () => {
    const read = 'when { context.tier == "read" && resource.kind == "tickets" && context.intent == "x" }';
    assert.deepEqual(lint(`@id("p")\npermit (${AGENT}, action, resource) ${read};\n`), []);
    const findings = lint(`@id("p")\npermit (${AGENT}, action, resource) when { context.tier != "read" && resource.kind == "tickets" && context.intent == "x" };\n`);
    assert.deepEqual(summary(findings), ['unapproved-in-production high']);
    assert.doesNotMatch(findings[0]?.message ?? '', /read-tier/);
  });

  test('which environments are production is an option', () => {
    const policy = `@id("p")\npermit (${AGENT}, ${WRITE}, resource) when { resource.kind == "tickets" && context.environment == "prod" };\n`;
    assert.deepEqual(lint(policy), []);
    assert.deepEqual(summary(lint(policy, { productionEnvironments: ['prod', 'live'] })), ['unapproved-in-production medium']);
  });
});

describe('lintPolicySet: wildcard principals and resources in production', () => {
  const scoped = 'when { resource.kind == "tickets" && context.intent == "customer-support" }';

  test('an unconstrained principal that can apply in production is high', () => {
    const findings = lint(`@id("p")\npermit (principal, ${READ}, resource) ${scoped};\n`);
    assert.deepEqual(summary(findings), ['wildcard-principal high']);
    assert.deepEqual(findings[0]?.references.map((r) => r.id), ['NHI5', 'ASI03']);
  });

  test('a condition on principal.* does not make an unconstrained scope constrained', () => {
    assert.deepEqual(summary(lint(`@id("p")\npermit (principal, ${READ}, resource) when { principal.owner == "team" && resource.kind == "tickets" && context.intent == "x" };\n`)), ['wildcard-principal high']);
  });

  test('a principal type, a sandbox-only permit or an approval answer the wildcard principal', () => {
    assert.deepEqual(lint(`@id("p")\npermit (principal is Writ::Service, ${READ}, resource) ${scoped};\n`), []);
    assert.deepEqual(lint(`@id("p")\npermit (principal, ${READ}, resource) ${scoped} unless { context.environment != "sandbox" };\n`), []);
    assert.deepEqual(summary(lint(`@id("p")\n@approval("required")\npermit (principal, ${READ}, resource) ${scoped};\n`)), ['wildcard-principal medium']);
  });

  test('an unconstrained resource with no resource condition is medium for reads, high for unapproved writes', () => {
    const read = lint(`@id("p")\npermit (${AGENT}, ${READ}, resource) when { context.intent == "x" && context.sensitivity != "restricted" };\n`);
    assert.deepEqual(summary(read), ['wildcard-resource medium']);
    assert.deepEqual(read[0]?.references.map((r) => r.id), ['NHI5', 'ASI02']);
    const write = lint(`@id("p")\npermit (${AGENT}, ${WRITE}, resource) when { context.intent == "x" };\n`);
    assert.deepEqual(summary(write), ['wildcard-resource high', 'unapproved-in-production medium']);
    const typed = lint(`@id("p")\npermit (${AGENT}, ${READ}, resource is Writ::Resource) when { context.intent == "x" };\n`);
    assert.deepEqual(summary(typed), ['wildcard-resource medium'], '`resource is Writ::Resource` alone names every resource');
  });

  test('a resource condition, a named resource or a sandbox-only permit answer the wildcard resource', () => {
    assert.deepEqual(lint(`@id("p")\npermit (${AGENT}, ${READ}, resource) when { context.intent == "x" && resource.sensitivity == "public" };\n`), []);
    assert.deepEqual(lint(`@id("p")\npermit (${AGENT}, ${READ}, resource == Writ::Resource::"tickets:T-1") when { context.intent == "x" };\n`), []);
    assert.deepEqual(lint(`@id("p")\npermit (${AGENT}, ${READ}, resource) when { context.intent == "x" && context.environment == "sandbox" };\n`), []);
  });

  test('a permit open to everything in production collects every rule, most severe first', () => {
    const findings = lint('@id("everything")\npermit (principal, action, resource);\n');
    assert.deepEqual(summary(findings), ['standing-privilege high', 'unapproved-in-production high', 'wildcard-principal high', 'wildcard-resource high']);
    assert.match(findings[1]?.message ?? '', /admin-tier admin; export-tier export; delete-tier delete; write-tier refund, write/);
  });
});

describe('lintPolicySet: maximum TTL', () => {
  test('a tokens.maxTtl above the threshold (default 1h) is a finding tied to no policy', () => {
    const set = loadPolicySet(policyDir('@id("f")\nforbid (principal, action, resource);\n'));
    const findings = lintPolicySet(set, { tokenMaxTtlSeconds: 7200, configFile: '/etc/writ/writ.yaml' });
    assert.deepEqual(summary(findings), ['long-max-ttl medium']);
    assert.equal(findings[0]?.policy, null);
    assert.equal(findings[0]?.file, '/etc/writ/writ.yaml');
    assert.match(findings[0]?.message ?? '', /tokens\.maxTtl is 2h, above 1h/);
    assert.deepEqual(findings[0]?.references.map((r) => r.id), ['NHI7', 'ASI03']);
    assert.deepEqual(lintPolicySet(set, { tokenMaxTtlSeconds: 3600 }), [], 'exactly the threshold is fine');
    assert.deepEqual(lintPolicySet(set, {}), [], 'no TTL given, no TTL rule');
    assert.deepEqual(summary(lintPolicySet(set, { tokenMaxTtlSeconds: 900, ttlThresholdSeconds: 600 })), ['long-max-ttl medium']);
  });
});

describe('lintPolicySet: positions', () => {
  test('findings carry the line the policy starts on when the sources are given', () => {
    const text = '// two identical policies\n\npermit (principal is Writ::Agent, action == Writ::Action::"read", resource) when { resource.kind == "t" };\n\npermit (principal is Writ::Agent, action == Writ::Action::"read", resource) when { resource.kind == "t" };\n';
    const dir = policyDir(text);
    const set = loadPolicySet(dir);
    const located = lintPolicySet(set, { sources: { 'case.cedar': text } });
    assert.deepEqual(located.map((f) => `${f.policy} ${f.file}:${f.line}`), ['case.cedar#1 case.cedar:3', 'case.cedar#2 case.cedar:5']);
    assert.deepEqual(lintPolicySet(set).map((f) => f.line), [null, null]);
  });
});

/** Runs the built CLI in a clean environment. */
const writ = (args: string[], cwd = tempDir()) => runWrit(args, cwd);

describe('writ policy lint', async () => {
  const CLEAN = `@id("clean")\npermit (${AGENT}, ${READ}, resource) when { resource.kind == "tickets" && context.intent == "customer-support" };\n`;
  const MEDIUM = `\n@id("writes")\npermit (${AGENT}, ${WRITE}, resource) when { resource.kind == "tickets" && context.intent == "customer-support" };\n`;

  test('the bundled set has nothing at the default --fail-on high (exit 0)', async () => {
    const answer = await writ(['policy', 'lint']);
    assert.equal(answer.code, 0, answer.stdout + answer.stderr);
    assert.match(answer.stdout, /; 0 at or above --fail-on high\n$/);
  });

  test('a clean set exits 0 even at --fail-on low', async () => {
    const answer = await writ(['policy', 'lint', '--policy-dir', policyDir(CLEAN), '--fail-on', 'low']);
    assert.equal(answer.code, 0, answer.stdout + answer.stderr);
    assert.match(answer.stdout, /^no findings \(policy set sha256:[0-9a-f]{32}\); 0 at or above --fail-on low\n$/);
  });

  test('a finding prints one line with severity, rule, policy, file:line and references; exit 4 only at or above --fail-on', async () => {
    const dir = policyDir(CLEAN + MEDIUM);
    const lenient = await writ(['policy', 'lint', '--policy-dir', dir]);
    assert.equal(lenient.code, 0, lenient.stdout + lenient.stderr);
    const [line] = lenient.stdout.split('\n');
    assert.equal(
      line,
      `medium unapproved-in-production writes ${join(dir, 'case.cedar')}:4: can allow write-tier write in production without @approval("required") [NHI5, ASI02]`,
    );
    assert.match(lenient.stdout, /\n1 finding: 0 high, 1 medium, 0 low \(policy set sha256:[0-9a-f]{32}\); 0 at or above --fail-on high\n$/);
    const strict = await writ(['policy', 'lint', '--policy-dir', dir, '--fail-on', 'medium']);
    assert.equal(strict.code, 4, strict.stdout + strict.stderr);
    assert.match(strict.stdout, /; 1 at or above --fail-on medium\n$/);
  });

  test('--json prints the findings array, and the exit code still follows --fail-on', async () => {
    const answer = await writ(['policy', 'lint', '--policy-dir', policyDir(CLEAN + MEDIUM), '--json', '--fail-on', 'low']);
    assert.equal(answer.code, 4, answer.stderr);
    const findings = JSON.parse(answer.stdout) as LintFinding[];
    assert.equal(findings.length, 1);
    assert.deepEqual(
      { rule: findings[0]?.rule, severity: findings[0]?.severity, policy: findings[0]?.policy, file: findings[0]?.file, line: findings[0]?.line },
      { rule: 'unapproved-in-production', severity: 'medium', policy: 'writes', file: 'case.cedar', line: 4 },
    );
    assert.deepEqual(findings[0]?.references, [
      { id: 'NHI5', title: 'Overprivileged NHI', list: 'OWASP Top 10 Non-Human Identities Risks 2025' },
      { id: 'ASI02', title: 'Tool Misuse and Exploitation', list: 'OWASP Top 10 for Agentic Applications 2026' },
    ]);
  });

  test('the configuration\'s tokens.maxTtl is checked: above 1h is a finding on the configuration file', async () => {
    const cwd = tempDir();
    writeFileSync(join(cwd, 'writ.yaml'), 'tokens:\n  maxTtl: 2h\n');
    const answer = await writ(['policy', 'lint', '--policy-dir', policyDir(CLEAN), '--json'], cwd);
    assert.equal(answer.code, 0, answer.stderr);
    const findings = JSON.parse(answer.stdout) as LintFinding[];
    assert.deepEqual(findings.map((f) => [f.rule, f.policy, f.file]), [['long-max-ttl', null, join(cwd, 'writ.yaml')]]);
    const text = await writ(['policy', 'lint', '--policy-dir', policyDir(CLEAN), '--fail-on', 'medium'], cwd);
    assert.equal(text.code, 4);
    assert.match(text.stdout, /^medium long-max-ttl - writ\.yaml: tokens\.maxTtl is 2h, above 1h/);
  });

  test('an invalid set exits 3 with its problems; a bad --fail-on or a stray argument exits 2', async () => {
    const invalid = await writ(['policy', 'lint', '--policy-dir', policyDir('@id("broken")\npermit (principal, action, resource) when { oops };\n')]);
    assert.equal(invalid.code, 3);
    assert.equal(invalid.stdout, '');
    assert.match(invalid.stderr, /case\.cedar:2:\d+: .*\n.*ERR_POLICY_INVALID/);
    const usage = await writ(['policy', 'lint', '--fail-on', 'critical']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--fail-on: one of low, medium, high, got critical/);
    assert.equal((await writ(['policy', 'lint', 'extra'])).code, 2);
  });
});
