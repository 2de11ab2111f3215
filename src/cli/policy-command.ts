/**
 * `writ policy validate|test|explain|lint`: the policy lifecycle before a
 * change ships. Nothing here opens the store or needs a running Writ; the commands
 * read the policy folder (`--policy-dir`, else `policy.dir` from the
 * configuration) and decide with the same engine the server uses.
 *
 * Exit codes: 0 success (explain: whatever the outcome), 1 the command failed
 * (test: a malformed test file, or no cases at all), 2 usage error or, for
 * `policy test`, a case whose outcome differs from its expectation, 3 the
 * policy set is invalid (one `file:line:column: message` line per problem on
 * stderr), 4 (`policy lint`) a finding at or above `--fail-on`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { z } from 'zod';
import { loadConfig } from '../core/config.js';
import { isWritError } from '../core/errors.js';
import { isValidAction, isValidResource } from '../core/scope.js';
import { ACTOR_TYPES, type ActorType } from '../core/types.js';
import { APPROVAL_STATES, createPolicyEngine, type ApprovalState, type DecisionInput, type PolicyEngine } from '../policy/engine.js';
import type { RiskSettings } from '../policy/risk.js';
import { loadPolicySet, type PolicyProblem } from '../policy/policy-set.js';
import { isLintSeverity, lintPolicySet, LINT_SEVERITIES, severityRank, type LintFinding, type LintSeverity } from '../policy/lint.js';
import { formatPosition, loadPolicyTests, POLICY_TESTS_SUFFIX, runPolicyTests, toPrincipal, type PolicyTestResult } from '../policy/policy-tests.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_TEST_MISMATCH = 2;
export const EXIT_POLICY_INVALID = 3;
export const EXIT_LINT_FINDINGS = 4;

/** The flags the policy commands read, as main's parseArgs table yields them. */
export interface PolicyCommandOptions {
  readonly config?: string | undefined;
  readonly 'policy-dir'?: string | undefined;
  readonly principal?: string | undefined;
  readonly 'actor-type'?: string | undefined;
  readonly owner?: string | undefined;
  readonly 'principal-env'?: string | undefined;
  readonly label?: string[] | undefined;
  readonly action?: string | undefined;
  readonly resource?: string | undefined;
  readonly environment?: string | undefined;
  readonly intent?: string | undefined;
  readonly at?: string | undefined;
  readonly purpose?: string | undefined;
  readonly stage?: string | undefined;
  readonly args?: string | undefined;
  readonly 'delegation-depth'?: string | undefined;
  readonly 'break-glass'?: boolean | undefined;
  readonly approval?: string | undefined;
  readonly 'calls-per-minute'?: string | undefined;
  readonly 'first-use'?: boolean | undefined;
  readonly registered?: string | undefined;
  readonly json?: boolean | undefined;
  readonly 'fail-on'?: string | undefined;
}

class UsageError extends Error {}

const SUBCOMMANDS = ['validate', 'test', 'explain', 'lint'] as const;
const isoTime = z.iso.datetime({ offset: true });

/**
 * Runs `writ policy <sub>` and returns the exit code. Writes the report to
 * stdout and problems to stderr.
 * @throws WritError ERR_CONFIG_INVALID when the configuration cannot be loaded (main exits 1).
 */
export function runPolicyCommand(sub: string | undefined, rest: readonly string[], options: PolicyCommandOptions): number {
  try {
    if (sub === undefined || !(SUBCOMMANDS as readonly string[]).includes(sub)) throw new UsageError(`usage: writ policy ${SUBCOMMANDS.join('|')}`);
    if (rest.length > 0) throw new UsageError(`writ policy ${sub} takes no arguments, got ${JSON.stringify(rest[0])}`);
    if (sub === 'explain') return explain(options);
    if (sub === 'lint') return lint(options);
    const config = loadConfig({ configFile: options.config });
    const dir = options['policy-dir'] === undefined ? config.paths.policyDir : resolve(options['policy-dir']);
    // The break-glass set beside it: break-glass/ in the folder given, or the configured one.
    const breakGlassDir = options['policy-dir'] === undefined ? config.paths.breakGlassDir : existsSync(join(dir, 'break-glass')) ? join(dir, 'break-glass') : null;
    // Cases decide with the configured risk settings: the weights that will be deployed.
    const code = sub === 'validate' ? validate(dir, config.policy.environments) : test(dir, config.policy.risk);
    if (code !== EXIT_OK || breakGlassDir === null) return code;
    // The break-glass set is checked as strictly: an emergency is no time to find it broken.
    process.stdout.write(`\nbreak-glass set (${displayPath(dir, relative(dir, breakGlassDir) || '.')}):\n`);
    return sub === 'validate' ? validate(breakGlassDir, config.policy.environments, dir) : test(breakGlassDir, config.policy.risk, dir, true);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`writ: ${error.message}\nRun writ --help for usage.\n`);
      return EXIT_USAGE;
    }
    throw error;
  }
}

/** Loads the set and builds its engine, or prints every problem and gives the exit code. */
function loadEngine(dir: string, risk?: RiskSettings, inherit?: string): PolicyEngine | number {
  try {
    return createPolicyEngine(loadPolicySet(dir, inherit === undefined ? {} : { inherit }), risk === undefined ? {} : { risk });
  } catch (error) {
    if (!isWritError(error, 'ERR_POLICY_INVALID')) throw error;
    const problems = (error.extensions.problems ?? []) as PolicyProblem[];
    for (const p of problems) {
      const help = p.help === undefined ? '' : ` (${p.help})`;
      process.stderr.write(`${formatPosition(displayPath(dir, p.file), p)}: ${p.message}${help}\n`);
    }
    process.stderr.write(`writ: ERR_POLICY_INVALID: the policy set in ${displayPath(dir, '.')} is invalid (${plural(problems.length, 'problem')})\n`);
    return EXIT_POLICY_INVALID;
  }
}

/** `inherit`: the folder whose schema and catalog a break-glass set shares. */
function validate(dir: string, environments: readonly string[], inherit?: string): number {
  const engine = loadEngine(dir, undefined, inherit);
  if (typeof engine === 'number') return engine;
  const { set } = engine;
  process.stdout.write(`policy set OK: ${set.version}, ${plural(set.policies.size, 'policy', 'policies')}, ${plural(set.actionTiers.size, 'action')}\n`);
  for (const env of set.environments.filter((e) => !environments.includes(e))) {
    process.stderr.write(`warning: environments/${env}/ applies to no task: ${env} is not in policy.environments (${environments.join(', ')})\n`);
  }
  return EXIT_OK;
}

/** `optional`: a folder without test files passes (the break-glass set's tests are welcome, not required). */
function test(dir: string, risk: RiskSettings, inherit?: string, optional = false): number {
  const engine = loadEngine(dir, risk, inherit);
  if (typeof engine === 'number') return engine;
  let cases;
  try {
    cases = loadPolicyTests(dir);
  } catch (error) {
    if (!isWritError(error, 'ERR_VALIDATION')) throw error;
    const problems = (error.extensions.problems ?? []) as { file: string; line?: number; column?: number; message: string }[];
    for (const p of problems) process.stderr.write(`${formatPosition(displayPath(dir, p.file), p)}: ${p.message}\n`);
    process.stderr.write(`writ: malformed policy test file (${plural(problems.length, 'problem')}); no case was run\n`);
    return EXIT_FAILED;
  }
  if (cases.length === 0) {
    if (optional) {
      process.stdout.write(`no *${POLICY_TESTS_SUFFIX} files: nothing to test\n`);
      return EXIT_OK;
    }
    process.stderr.write(`writ: no *${POLICY_TESTS_SUFFIX} files in ${displayPath(dir, '.')}: nothing to test\n`);
    return EXIT_FAILED;
  }

  const results = runPolicyTests(engine, cases);
  let file: string | undefined;
  for (const result of results) {
    if (result.case.file !== file) {
      file = result.case.file;
      process.stdout.write(`${displayPath(dir, file)}\n`);
    }
    process.stdout.write(`  ${result.passed ? '✔' : '✖'} ${result.case.name}\n`);
    if (!result.passed) process.stdout.write(describeMismatch(result));
  }
  const failed = results.filter((r) => !r.passed).length;
  process.stdout.write(
    `\n${plural(results.length, 'case')}: ${results.length - failed} passed, ${failed} failed (policy set ${engine.version})\n`,
  );
  return failed === 0 ? EXIT_OK : EXIT_TEST_MISMATCH;
}

function describeMismatch(result: PolicyTestResult): string {
  const { decision } = result;
  const expected = `${result.case.expect}${result.case.policies === undefined ? '' : ` by [${result.case.policies.join(', ')}]`}`;
  let text = `      expected ${expected}\n      actual   ${decision.outcome} by [${decision.policies.join(', ')}]\n`;
  if (decision.errors.length > 0) text += `      errors   ${decision.errors.join('; ')}\n`;
  if (result.unknownPolicies.length > 0) text += `      note     the set has no policy ${result.unknownPolicies.map((id) => JSON.stringify(id)).join(', ')}\n`;
  return text;
}

function explain(options: PolicyCommandOptions): number {
  const required = (flag: 'principal' | 'actor-type' | 'action' | 'resource' | 'environment' | 'intent'): string => {
    const value = options[flag];
    if (value === undefined || value === '') throw new UsageError(`policy explain needs --${flag}`);
    return value;
  };
  const principalId = required('principal');
  const actorType = required('actor-type');
  if (!(ACTOR_TYPES as readonly string[]).includes(actorType)) throw new UsageError(`--actor-type: one of ${ACTOR_TYPES.join(', ')}`);
  const action = required('action');
  if (!isValidAction(action)) throw new UsageError(`--action: an action name such as read or refund, got ${action}`);
  const resource = required('resource');
  if (!isValidResource(resource)) throw new UsageError(`--resource: a resource like db:orders/42 or a pattern like db:orders/*, got ${resource}`);
  const environment = required('environment');
  const intent = required('intent');
  let now = Date.now();
  if (options.at !== undefined) {
    if (!isoTime.safeParse(options.at).success) throw new UsageError(`--at: an ISO 8601 time with a zone, e.g. 2026-11-23T10:00:00Z, got ${options.at}`);
    now = Date.parse(options.at);
  }
  const labels: Record<string, string> = {};
  for (const label of options.label ?? []) {
    const eq = label.indexOf('=');
    if (eq <= 0) throw new UsageError(`--label: expected key=value, got ${label}`);
    labels[label.slice(0, eq)] = label.slice(eq + 1);
  }
  if (options.registered !== undefined && !isoTime.safeParse(options.registered).success) {
    throw new UsageError(`--registered: an ISO 8601 time with a zone, got ${options.registered}`);
  }
  const principal = toPrincipal({
    id: principalId,
    actorType: actorType as ActorType,
    environment: options['principal-env'] ?? environment,
    owner: options.owner,
    labels,
    registered: options.registered,
  });
  const stage = options.stage ?? 'grant';
  if (stage !== 'grant' && stage !== 'call') throw new UsageError(`--stage: grant or call, got ${stage}`);
  const approval = options.approval ?? 'none';
  if (!(APPROVAL_STATES as readonly string[]).includes(approval)) throw new UsageError(`--approval: one of ${APPROVAL_STATES.join(', ')}, got ${approval}`);
  let args: Record<string, unknown> | undefined;
  if (options.args !== undefined) {
    try {
      args = JSON.parse(options.args) as Record<string, unknown>;
    } catch {
      args = undefined;
    }
    if (typeof args !== 'object' || args === null || Array.isArray(args)) throw new UsageError(`--args: a JSON object, e.g. '{"amountCents":25000}'`);
  }
  const count = (flag: 'delegation-depth' | 'calls-per-minute'): number => {
    const value = options[flag];
    if (value === undefined) return 0;
    if (!/^\d{1,9}$/.test(value)) throw new UsageError(`--${flag}: a whole number, got ${value}`);
    return Number(value);
  };
  const input: DecisionInput = {
    principal,
    action,
    resource,
    environment,
    intent,
    purpose: options.purpose ?? '',
    stage,
    now,
    delegationDepth: count('delegation-depth'),
    breakGlass: options['break-glass'] === true,
    approval: approval as ApprovalState,
    ...(args === undefined ? {} : { args }),
    observed: { callsLastMinute: count('calls-per-minute'), unusualResource: options['first-use'] === true },
  };

  const config = loadConfig({ configFile: options.config });
  const engine = loadEngine(options['policy-dir'] === undefined ? config.paths.policyDir : resolve(options['policy-dir']), config.policy.risk);
  if (typeof engine === 'number') return engine;
  const decision = engine.decide(input);
  const deciding = decision.policies.map((id) => {
    const policy = engine.set.policies.get(id);
    return { id, effect: policy?.effect ?? null, file: policy?.file ?? null, approval: policy?.annotations.approval === 'required' };
  });
  const request = {
    principal: { id: principal.id, actorType: principal.actorType, owner: principal.owner, environment: principal.environment, labels: principal.labels },
    action,
    resource,
    environment,
    intent,
    at: new Date(now).toISOString(),
    purpose: input.purpose,
    stage,
    delegationDepth: input.delegationDepth,
    breakGlass: input.breakGlass,
    approval,
    ...(args === undefined ? {} : { args }),
    observed: input.observed,
  };

  if (options.json === true) {
    process.stdout.write(`${JSON.stringify({ request, ...decision, deciding }, null, 2)}\n`);
    return EXIT_OK;
  }
  const none = decision.outcome === 'deny' && decision.errors.length === 0 ? 'none (no permit applies)' : 'none';
  const lines = [
    ['request', `${principal.actorType} ${principal.id} (environment ${principal.environment}) ${action} ${resource}`],
    [
      'context',
      `stage ${stage}, environment ${environment}, intent ${intent}, at ${request.at}` +
        `${input.delegationDepth ? `, delegation depth ${input.delegationDepth}` : ''}${input.breakGlass ? ', break-glass' : ''}` +
        `${approval === 'approved' ? ', approved' : ''}${args === undefined ? '' : `, args ${JSON.stringify(args)}`}`,
    ],
    ['outcome', decision.outcome],
    [
      'policies',
      deciding.length === 0
        ? none
        : deciding.map((p) => `${p.id} (${p.effect ?? 'unknown'}${p.approval ? ', @approval("required")' : ''}${p.file === null ? '' : `, ${p.file}`})`).join('\n             '),
    ],
    ['tier', engine.tierOf(action) === undefined ? `${decision.tier} (the schema puts ${action} in no tier group)` : decision.tier],
    ['sensitivity', decision.sensitivity],
    [
      'risk',
      `${decision.risk.score} (${decision.risk.level})` +
        decision.risk.signals.map((signal) => `\n             ${String(signal.points).padStart(6)}  ${signal.name}: ${signal.detail}`).join(''),
    ],
    ['errors', decision.errors.length === 0 ? 'none' : decision.errors.join('\n             ')],
    ['version', decision.policyVersion],
  ] as const;
  for (const [label, value] of lines) process.stdout.write(`${label.padEnd(12)} ${value}\n`);
  return EXIT_OK;
}

/**
 * Lints the set against standing privilege. Needs the configuration too:
 * the TTL rule reads its tokens.maxTtl.
 */
function lint(options: PolicyCommandOptions): number {
  const failOn = options['fail-on'] ?? 'high';
  if (!isLintSeverity(failOn)) throw new UsageError(`--fail-on: one of ${LINT_SEVERITIES.join(', ')}, got ${failOn}`);
  const config = loadConfig({ configFile: options.config });
  const dir = options['policy-dir'] === undefined ? config.paths.policyDir : resolve(options['policy-dir']);
  const engine = loadEngine(dir);
  if (typeof engine === 'number') return engine;
  const { set } = engine;
  const findings = lintPolicySet(set, {
    tokenMaxTtlSeconds: config.tokens.maxTtl,
    configFile: config.paths.configFile,
    sources: readPolicySources(dir, set.policies.values()),
  });
  const failing = findings.filter((f) => severityRank(f.severity) >= severityRank(failOn));
  const code = failing.length === 0 ? EXIT_OK : EXIT_LINT_FINDINGS;
  if (options.json === true) {
    process.stdout.write(`${JSON.stringify(findings, null, 2)}\n`);
    return code;
  }
  for (const f of findings) process.stdout.write(`${formatFinding(dir, f)}\n`);
  const count = (severity: LintSeverity) => findings.filter((f) => f.severity === severity).length;
  const summary =
    findings.length === 0
      ? 'no findings'
      : `${plural(findings.length, 'finding')}: ${count('high')} high, ${count('medium')} medium, ${count('low')} low`;
  process.stdout.write(`${findings.length === 0 ? '' : '\n'}${summary} (policy set ${set.version}); ${failing.length} at or above --fail-on ${failOn}\n`);
  return code;
}

/** `severity rule-id policy-id file:line: message [refs]`; `-` for what a finding has none of. */
function formatFinding(dir: string, f: LintFinding): string {
  const where = f.file === null ? '(configuration)' : `${displayPath(dir, f.file)}${f.line === null ? '' : `:${f.line}`}`;
  return `${f.severity} ${f.rule} ${f.policy ?? '-'} ${where}: ${f.message} [${f.references.map((r) => r.id).join(', ')}]`;
}

/** The text of every policy file, for finding lines; a file that cannot be read again just gets no line. */
function readPolicySources(dir: string, policies: Iterable<{ readonly file: string }>): Record<string, string> {
  const sources: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const { file } of policies) {
    if (Object.hasOwn(sources, file)) continue;
    try {
      sources[file] = readFileSync(join(dir, file), 'utf8');
    } catch {
      // Removed or unreadable since loading: findings of its policies carry no line.
    }
  }
  return sources;
}

/** A path to show the operator: relative to the working folder when under it. */
function displayPath(dir: string, file: string): string {
  const absolute = resolve(dir, file);
  const fromHere = relative(process.cwd(), absolute);
  if (fromHere === '') return '.';
  return fromHere.startsWith('..') || isAbsolute(fromHere) ? absolute : join(fromHere);
}

function plural(count: number, one: string, many = `${one}s`): string {
  return `${count} ${count === 1 ? one : many}`;
}
