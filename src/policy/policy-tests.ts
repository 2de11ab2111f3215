/**
 * Policy tests: requests and the outcome the policies must give them, kept
 * beside the policies as `*.tests.yaml` and run by `writ policy test` before a
 * change ships. The policy set loader never reads them, so they are not part of
 * the set's version.
 *
 * A test file:
 *
 *   defaults:                 # optional; merged into every case, field by field
 *     principal: { id: spiffe://demo.local/agent/support, actorType: agent, environment: production }
 *     context: { environment: production, intent: customer-support, at: "2026-11-23T10:00:00Z" }
 *   cases:
 *     - name: support agent reads an order while working a ticket   # unique in the file
 *       principal: { owner: alice@example.com }   # id, actorType, environment; owner, labels optional
 *       action: read                              # any action name; one outside the schema is denied
 *       resource: db:orders/42                    # a resource or a pattern (db:orders/*)
 *       context: { intent: customer-support }     # environment, intent, at (ISO 8601 with offset); see below
 *       expect: allow                             # allow | deny | approval_required
 *       policies: [agents-read-non-restricted]    # optional: the deciding policies, in any order
 *
 * A task-level step (`approve`, `delegate`, `break_glass`) is decided on the
 * task, not on a resource: the case names instead what the step is about,
 *
 *     - name: an approver of production approves a refund there
 *       principal: { id: https://idp.example#carol, actorType: human, labels: { approver: production } }
 *       action: approve
 *       about: [{ action: refund, resource: payments:refunds/R-1 }]   # the task's scopes at that step
 *       expect: allow
 *
 * and the task's environment, intent, purpose and delegation depth come from `context`.
 * `at` is required (from the case or the defaults) so that a case decides the
 * same way every day: it gives the policies `context.hour` and `context.weekday`.
 * The rest of `context` is optional:
 *
 *   stage: call                 grant (default) | call
 *   purpose: refund order 42    default empty
 *   args: { amountCents: 5000 } the call's arguments (stage call)
 *   delegationDepth: 1          default 0
 *   breakGlass: true            default false
 *   approval: approved          none (default) | approved
 *   callsLastMinute: 120        the identity's call rate, for the risk score (default 0)
 *   firstUse: true              first time the identity touches this kind (default false)
 *
 * and the principal may say when it was `registered` (ISO 8601; default long
 * ago, so identity age adds no risk).
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { WritError } from '../core/errors.js';
import { isValidAction, isValidResource } from '../core/scope.js';
import { ACTOR_TYPES, type ActorType, type Identity, type Scope } from '../core/types.js';
import { APPROVAL_STATES, type DecisionInput, type PolicyDecision, type PolicyEngine, type PolicyOutcome, type TaskActionInput } from './engine.js';
import { ENVIRONMENTS_DIR, parseYamlWithPositions, type SourcePosition } from './policy-set.js';

export const POLICY_TESTS_SUFFIX = '.tests.yaml';
export const POLICY_OUTCOMES = ['allow', 'deny', 'approval_required'] as const satisfies readonly PolicyOutcome[];
/** The owner a test principal has when the case names none. */
export const UNSPECIFIED_OWNER = 'unspecified';

const MAX_TEST_FILE_BYTES = 1024 * 1024;

const principalFields = {
  id: z.string().min(1).max(2048),
  actorType: z.enum(ACTOR_TYPES),
  environment: z.string().min(1).max(64),
  owner: z.string().min(1).max(256),
  labels: z.record(z.string().min(1).max(64), z.string().max(256)),
  registered: z.iso.datetime({ offset: true, error: 'an ISO 8601 time with a zone' }),
};
const contextFields = {
  environment: z.string().min(1).max(64),
  intent: z.string().min(1).max(128),
  at: z.iso.datetime({ offset: true, error: 'an ISO 8601 time with a zone, e.g. 2026-11-23T10:00:00Z' }),
  stage: z.enum(['grant', 'call']),
  purpose: z.string().max(500),
  args: z.record(z.string().min(1).max(64), z.unknown()),
  delegationDepth: z.number().int().min(0).max(32),
  breakGlass: z.boolean(),
  approval: z.enum(APPROVAL_STATES),
  callsLastMinute: z.number().int().min(0),
  firstUse: z.boolean(),
};
const optionalContext = ['stage', 'purpose', 'args', 'delegationDepth', 'breakGlass', 'approval', 'callsLastMinute', 'firstUse'] as const;

const caseSchema = z
  .object({
    name: z.string().min(1).max(200),
    principal: z
      .object({ ...principalFields, owner: principalFields.owner.optional(), labels: principalFields.labels.optional(), registered: principalFields.registered.optional() })
      .strict(),
    action: z.string().refine(isValidAction, 'an action name such as read or refund'),
    resource: z.string().refine(isValidResource, 'a resource like db:orders/42 or a pattern like db:orders/*').optional(),
    /** A task-level step: the scopes it is about (instead of `resource`). */
    about: z
      .array(z.object({ action: z.string().refine(isValidAction, 'an action name'), resource: z.string().refine(isValidResource, 'a resource or pattern') }).strict())
      .min(1)
      .max(32)
      .optional(),
    context: z.object(contextFields).partial(Object.fromEntries(optionalContext.map((k) => [k, true])) as { [K in (typeof optionalContext)[number]]: true }).strict(),
    expect: z.enum(POLICY_OUTCOMES),
    policies: z.array(z.string().min(1)).optional(),
  })
  .strict()
  .refine((c) => (c.resource === undefined) !== (c.about === undefined), { message: 'give resource (an action on a resource) or about (a task-level step), not both', path: ['resource'] });

const fileSchema = z
  .object({
    defaults: z
      .object({
        principal: z.object(principalFields).partial().strict().optional(),
        context: z.object(contextFields).partial().strict().optional(),
      })
      .strict()
      .optional(),
    cases: z.array(z.unknown()).min(1, 'a test file has at least one case'),
  })
  .strict();

/** One case: a request and the outcome the policies must give it. */
export interface PolicyTestCase {
  /** The test file, relative to the policy folder. */
  readonly file: string;
  readonly name: string;
  readonly request: DecisionInput;
  /** A task-level step (`approve`...): the scopes it is about; decided on the task, `request.resource` unused. */
  readonly about?: readonly Scope[];
  readonly expect: PolicyOutcome;
  /** When given, the deciding policies must be exactly these (in any order). */
  readonly policies?: readonly string[];
}

/** A problem in a test file; `case` is the 1-based case number when it is about one case. */
export interface PolicyTestProblem extends SourcePosition {
  readonly file: string;
  readonly case?: number;
  readonly message: string;
}

export interface PolicyTestResult {
  readonly case: PolicyTestCase;
  readonly passed: boolean;
  readonly decision: PolicyDecision;
  /** What differed from the expectation: the outcome, the deciding policies, or both. */
  readonly mismatches: readonly ('outcome' | 'policies')[];
  /** Policy ids the case expects that the set does not have: such a case can never pass. */
  readonly unknownPolicies: readonly string[];
}

/** The principal of a test or explained request, as the engine sees a registered identity. */
export function toPrincipal(fields: {
  id: string;
  actorType: ActorType;
  environment: string;
  owner?: string | undefined;
  labels?: Readonly<Record<string, string>> | undefined;
  /** ISO 8601; default the epoch (an established identity). */
  registered?: string | undefined;
}): Identity {
  return {
    id: fields.id,
    actorType: fields.actorType,
    owner: fields.owner ?? UNSPECIFIED_OWNER,
    environment: fields.environment,
    labels: { ...fields.labels },
    state: 'active',
    source: 'policy-test',
    adminScopes: [],
    createdAt: fields.registered === undefined ? 0 : Date.parse(fields.registered),
    updatedAt: 0,
    lastSeenAt: null,
    expiresAt: null,
  };
}

/**
 * Parses one test file's text. Pure.
 * @throws WritError ERR_VALIDATION whose detail has one `file:line:column: case N "name": problem`
 *   line per problem, and `extensions.problems` (PolicyTestProblem[]).
 */
export function parsePolicyTests(file: string, text: string): PolicyTestCase[] {
  const problems: PolicyTestProblem[] = [];
  const yaml = parseYamlWithPositions(text);
  if (yaml.problems.length > 0) throw invalidTests(yaml.problems.map((p) => ({ file, ...p })));
  const document = fileSchema.safeParse(yaml.value ?? {});
  if (!document.success) {
    throw invalidTests(document.error.issues.map((issue) => ({ file, ...yaml.positionOf(issuePath(issue)), message: issueMessage(issue) })));
  }

  const defaults = document.data.defaults ?? {};
  const cases: PolicyTestCase[] = [];
  const names = new Set<string>();
  document.data.cases.forEach((raw, index) => {
    const merged = isRecord(raw)
      ? { ...raw, principal: mergeDefaults(defaults.principal, raw.principal), context: mergeDefaults(defaults.context, raw.context) }
      : raw;
    const parsed = caseSchema.safeParse(merged);
    const number = index + 1;
    const name = isRecord(raw) && typeof raw.name === 'string' ? raw.name : undefined;
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        problems.push({ file, case: number, ...yaml.positionOf(['cases', index, ...issuePath(issue)]), message: withCase(number, name, issueMessage(issue)) });
      }
      return;
    }
    const { data } = parsed;
    if (names.has(data.name)) {
      problems.push({ file, case: number, ...yaml.positionOf(['cases', index, 'name']), message: withCase(number, name, 'another case has this name') });
      return;
    }
    names.add(data.name);
    cases.push({
      file,
      name: data.name,
      request: {
        principal: toPrincipal(data.principal),
        action: data.action,
        resource: data.resource ?? 'task:policy-test',
        environment: data.context.environment,
        intent: data.context.intent,
        now: Date.parse(data.context.at),
        ...(data.context.stage === undefined ? {} : { stage: data.context.stage }),
        ...(data.context.purpose === undefined ? {} : { purpose: data.context.purpose }),
        ...(data.context.args === undefined ? {} : { args: data.context.args }),
        ...(data.context.delegationDepth === undefined ? {} : { delegationDepth: data.context.delegationDepth }),
        ...(data.context.breakGlass === undefined ? {} : { breakGlass: data.context.breakGlass }),
        ...(data.context.approval === undefined ? {} : { approval: data.context.approval }),
        observed: { callsLastMinute: data.context.callsLastMinute ?? 0, unusualResource: data.context.firstUse ?? false },
      },
      ...(data.about === undefined ? {} : { about: data.about }),
      expect: data.expect,
      ...(data.policies === undefined ? {} : { policies: data.policies }),
    });
  });
  if (problems.length > 0) throw invalidTests(problems);
  return cases;
}

/**
 * Reads every `*.tests.yaml` in `dir` and in its `environments/<env>/`
 * folders, in name order.
 * @throws WritError ERR_VALIDATION naming every problem of every file (see parsePolicyTests).
 */
export function loadPolicyTests(dir: string): PolicyTestCase[] {
  const files = readdirSync(dir).filter((f) => f.endsWith(POLICY_TESTS_SUFFIX)).sort();
  const environmentsDir = join(dir, ENVIRONMENTS_DIR);
  if (existsSync(environmentsDir)) {
    for (const env of readdirSync(environmentsDir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort()) {
      files.push(...readdirSync(join(environmentsDir, env)).filter((f) => f.endsWith(POLICY_TESTS_SUFFIX)).sort().map((f) => `${ENVIRONMENTS_DIR}/${env}/${f}`));
    }
  }
  const cases: PolicyTestCase[] = [];
  const problems: PolicyTestProblem[] = [];
  for (const file of files) {
    const path = join(dir, file);
    if (statSync(path).size > MAX_TEST_FILE_BYTES) {
      problems.push({ file, message: `larger than ${MAX_TEST_FILE_BYTES} bytes; split it` });
      continue;
    }
    try {
      cases.push(...parsePolicyTests(file, readFileSync(path, 'utf8')));
    } catch (error) {
      const found = problemsOf(error);
      if (found === undefined) throw error;
      problems.push(...found);
    }
  }
  if (problems.length > 0) throw invalidTests(problems);
  return cases;
}

/**
 * Decides every case with `engine` and compares. Pure apart from the engine.
 * A case passes when the outcome is the expected one and, if the case names
 * deciding policies, exactly those policies decided.
 */
export function runPolicyTests(engine: PolicyEngine, cases: readonly PolicyTestCase[]): PolicyTestResult[] {
  return cases.map((testCase) => {
    const decision = testCase.about === undefined ? engine.decide(testCase.request) : engine.decideTaskAction(taskStepOf(testCase.request, testCase.about));
    const mismatches: ('outcome' | 'policies')[] = [];
    if (decision.outcome !== testCase.expect) mismatches.push('outcome');
    if (testCase.policies !== undefined && !sameMembers(testCase.policies, decision.policies)) mismatches.push('policies');
    const unknownPolicies = (testCase.policies ?? []).filter((id) => !engine.set.policies.has(id));
    return { case: testCase, passed: mismatches.length === 0, decision, mismatches, unknownPolicies };
  });
}

/** A test case's request as a task-level step on a task made for the test. */
function taskStepOf(request: DecisionInput, about: readonly Scope[]): TaskActionInput {
  return {
    principal: request.principal,
    action: request.action,
    task: { id: 'task_policy_test', intent: request.intent, purpose: request.purpose ?? '', environment: request.environment, delegationDepth: request.delegationDepth ?? 0, scopes: about },
    now: request.now,
    ...(request.breakGlass === undefined ? {} : { breakGlass: request.breakGlass }),
    ...(request.approval === undefined ? {} : { approval: request.approval }),
    ...(request.observed === undefined ? {} : { observed: request.observed }),
  };
}

function sameMembers(a: readonly string[], b: readonly string[]): boolean {
  const left = [...new Set(a)].sort();
  const right = [...new Set(b)].sort();
  return left.length === right.length && left.every((value, i) => value === right[i]);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

// A case's own fields win over the defaults; a case without the block takes the defaults whole.
function mergeDefaults(defaults: Record<string, unknown> | undefined, own: unknown): unknown {
  if (defaults === undefined) return own;
  if (own === undefined) return { ...defaults };
  return isRecord(own) ? { ...defaults, ...own } : own;
}

// An unknown key is reported on its object; point at the key itself.
function issuePath(issue: z.core.$ZodIssue): PropertyKey[] {
  return issue.code === 'unrecognized_keys' && issue.keys[0] !== undefined ? [...issue.path, issue.keys[0]] : issue.path;
}

function issueMessage(issue: z.core.$ZodIssue): string {
  return issue.path.length === 0 ? issue.message : `${issue.path.join('.')}: ${issue.message}`;
}

function withCase(number: number, name: string | undefined, message: string): string {
  return `case ${number}${name === undefined ? '' : ` ${JSON.stringify(name)}`}: ${message}`;
}

function problemsOf(error: unknown): PolicyTestProblem[] | undefined {
  if (!(error instanceof WritError) || error.code !== 'ERR_VALIDATION') return undefined;
  const problems = error.extensions.problems;
  return Array.isArray(problems) ? (problems as PolicyTestProblem[]) : undefined;
}

// There is no error code of its own for a test file: it is input that does not
// match its schema, which is what ERR_VALIDATION means.
function invalidTests(problems: PolicyTestProblem[]): WritError {
  const detail = problems.map((p) => `${formatPosition(p.file, p)}: ${p.message}`).join('\n');
  return new WritError('ERR_VALIDATION', { detail, extensions: { problems } });
}

/** `file`, `file:line` or `file:line:column`, as editors and CI annotations read them. */
export function formatPosition(file: string, position: SourcePosition): string {
  if (position.line === undefined) return file;
  return `${file}:${position.line}${position.column === undefined ? '' : `:${position.column}`}`;
}
