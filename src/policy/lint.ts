/**
 * `writ policy lint`: finds standing privilege in a policy set before it ships.
 *
 * A pure function over a loaded (so already valid) set: it reads each permit's
 * JSON form (cedar-wasm `policyToJson`), its scope and its `when`/`unless`
 * trees, and the schema's action groups for tiers. Forbids never produce a
 * finding. Rules, and the severity each gives:
 *
 *   standing-privilege   a permit whose conditions read none of
 *                        context.environment, context.hour, context.weekday,
 *                        context.intent: it holds whenever the identity exists.
 *                        high when it covers a write/delete/export/admin action,
 *                        medium for read only, low with @approval("required")
 *                        (every use then waits for a human).
 *   unapproved-in-production
 *                        a permit without @approval("required") that can allow
 *                        a write/delete/export/admin action in production.
 *                        high for delete/export/admin, medium for write; one
 *                        level lower when the permit reads the call's
 *                        arguments and cannot apply to a call without them
 *                        (a per-call limit such as a refund amount), since
 *                        every call is then decided on what it actually does.
 *   wildcard-principal   a permit that can apply in production with an
 *                        unconstrained `principal` in its scope. high; medium
 *                        with @approval("required").
 *   wildcard-resource    a permit that can apply in production with an
 *                        unconstrained `resource` in its scope (or only `resource
 *                        is <type>`) and no condition on `resource`. high when it can allow a write or higher
 *                        action without approval, else medium.
 *   long-max-ttl         the configuration's tokens.maxTtl is above a threshold
 *                        (default 1 hour); tied to no policy. medium.
 *
 * How far the analysis goes, and where it stops (it leans towards reporting):
 *
 * - "Can apply in production" evaluates each condition in three-valued logic
 *   (true, false, unknown) with context.environment bound to a production
 *   environment name and context.tier to the tier of each action the scope
 *   covers; everything else is unknown. A permit is out of production only when
 *   a `when` is certainly false or an `unless` certainly true there. So
 *   `context.environment == "sandbox"` and `["sandbox", "dev"].contains(
 *   context.environment)` exclude production, `context.environment != "sandbox"`
 *   does not. Exclusion through anything else is not seen: a condition on
 *   `principal.environment` (the identity's registered environment, which a
 *   forbid may tie to the task's; lint assumes no such forbid), an entity
 *   hierarchy, or a forbid.
 * - Forbids are not weighed against permits: a permit that a forbid always
 *   overrides is still reported. A finding says what the permit can allow on
 *   its own, not what the set as a whole decides.
 * - standing-privilege looks for references only: `context.intent != ""`
 *   counts as a task constraint, though it constrains almost nothing.
 * - wildcard-resource accepts any condition that mentions `resource` (Writ's
 *   resources have no parents, so conditions on `resource.kind` or
 *   `resource.sensitivity` are how a permit narrows them), however weak; a
 *   context.sensitivity condition does not count (it narrows by class, and the
 *   rule asks which resources). wildcard-principal looks at the scope only:
 *   `principal is Writ::Agent` is constrained, a condition on `principal.*` does
 *   not make an unconstrained scope constrained.
 * - A policy under `environments/<env>/` applies only there: it is in
 *   production exactly when <env> is a production environment, and its folder
 *   is its environment constraint.
 * - Actions in no tier group are skipped: the engine denies them.
 */
import { cedar, type ActionConstraint, type CedarValueJson, type Clause, type EntityUidJson, type Expr, type PolicyJson } from './cedar.js';
import { tierRank, type Tier } from '../core/types.js';
import { CEDAR_NAMESPACE, type PolicySet } from './policy-set.js';

export const LINT_SEVERITIES = ['low', 'medium', 'high'] as const;
export type LintSeverity = (typeof LINT_SEVERITIES)[number];

export function isLintSeverity(value: string): value is LintSeverity {
  return (LINT_SEVERITIES as readonly string[]).includes(value);
}

export function severityRank(severity: LintSeverity): number {
  return LINT_SEVERITIES.indexOf(severity);
}

export type LintRuleId = 'standing-privilege' | 'unapproved-in-production' | 'wildcard-principal' | 'wildcard-resource' | 'long-max-ttl';

/** An entry of a public OWASP list a finding relates to. */
export interface LintReference {
  readonly id: string;
  readonly title: string;
  readonly list: string;
}

const NHI_LIST = 'OWASP Top 10 Non-Human Identities Risks 2025';
const ASI_LIST = 'OWASP Top 10 for Agentic Applications 2026';
export const LINT_REFERENCES = {
  NHI5: { id: 'NHI5', title: 'Overprivileged NHI', list: NHI_LIST },
  NHI7: { id: 'NHI7', title: 'Long-Lived Secrets', list: NHI_LIST },
  ASI02: { id: 'ASI02', title: 'Tool Misuse and Exploitation', list: ASI_LIST },
  ASI03: { id: 'ASI03', title: 'Identity and Privilege Abuse', list: ASI_LIST },
} as const satisfies Record<string, LintReference>;

const RULE_REFERENCES: Record<LintRuleId, readonly LintReference[]> = {
  'standing-privilege': [LINT_REFERENCES.NHI5, LINT_REFERENCES.ASI03],
  'unapproved-in-production': [LINT_REFERENCES.NHI5, LINT_REFERENCES.ASI02],
  'wildcard-principal': [LINT_REFERENCES.NHI5, LINT_REFERENCES.ASI03],
  'wildcard-resource': [LINT_REFERENCES.NHI5, LINT_REFERENCES.ASI02],
  'long-max-ttl': [LINT_REFERENCES.NHI7, LINT_REFERENCES.ASI03],
};

export interface LintFinding {
  readonly rule: LintRuleId;
  readonly severity: LintSeverity;
  /** The permit's id; null for a finding about the configuration. */
  readonly policy: string | null;
  /** The policy's file (relative to the set's folder), or the configuration file; null when unknown. */
  readonly file: string | null;
  /** 1-based line where the policy starts; null when unknown. */
  readonly line: number | null;
  readonly message: string;
  readonly references: readonly LintReference[];
}

export interface LintOptions {
  /** The configuration's tokens.maxTtl in seconds; the TTL rule is skipped without it. */
  readonly tokenMaxTtlSeconds?: number;
  /** A longer tokens.maxTtl is a finding. Default 3600 (1 hour). */
  readonly ttlThresholdSeconds?: number;
  /** Where tokens.maxTtl was set, for the finding's file. */
  readonly configFile?: string | null;
  /** Environment names that are production. Default ["production"]; compared exactly. */
  readonly productionEnvironments?: readonly string[];
  /** Each policy file's text, by file name, to give findings a line; without it lines are null. */
  readonly sources?: Readonly<Record<string, string>>;
}

const DEFAULT_TTL_THRESHOLD = 3600;
const TIME_OR_TASK_ATTRIBUTES = new Set(['environment', 'hour', 'weekday', 'intent']);
const CALL_ARGUMENTS = new Set(['args']);
/** A binding for `context.args` meaning "a record with no attributes": every `has` on it is false. */
const NO_ARGUMENTS = '\u0000no arguments';
const ACTION_TYPE = `${CEDAR_NAMESPACE}::Action`;

/**
 * Lints `set` and returns its findings, most severe first, then in policy order.
 * Never throws for a set `loadPolicySet` accepted. A clean result is not a
 * proof of least privilege: see the limits in this module's header.
 */
export function lintPolicySet(set: PolicySet, options: LintOptions = {}): LintFinding[] {
  const productionEnvironments = options.productionEnvironments ?? ['production'];
  const actions = actionGroups(set);
  const lines = policyLines(set, options.sources);
  const findings: LintFinding[] = [];

  for (const policy of set.policies.values()) {
    if (policy.effect !== 'permit') continue;
    const parsed = cedar.policyToJson(policy.text);
    // A loaded set parsed every policy already; should that ever fail, say so rather than skip it silently.
    if (parsed.type === 'failure') throw new Error(`policy ${policy.id} no longer parses: ${parsed.errors.map((e) => e.message).join('; ')}`);
    const json = parsed.json;
    const approval = policy.annotations.approval === 'required';
    const at = { policy: policy.id, file: policy.file, line: lines.get(policy.id) ?? null };
    const add = (rule: LintRuleId, severity: LintSeverity, message: string) => findings.push({ rule, severity, ...at, message, references: RULE_REFERENCES[rule] });

    const covered = coveredActions(json.action, actions).filter((a) => set.actionTiers.has(a));
    // Actions the conditions can allow anywhere, and in production.
    const anywhere = covered.filter((a) => canApply(json.conditions, { 'context.tier': tierOf(set, a) }));
    // A policy of an environment's own folder applies to tasks in that environment only.
    const environments = policy.environment === undefined ? productionEnvironments : productionEnvironments.filter((env) => env === policy.environment);
    const inProduction = covered.filter((a) =>
      environments.some((env) => canApply(json.conditions, { 'context.environment': env, 'context.tier': tierOf(set, a) })),
    );
    if (anywhere.length === 0) continue;

    if (policy.environment === undefined && !readsAny(json.conditions, 'context', TIME_OR_TASK_ATTRIBUTES)) {
      const severity: LintSeverity = approval ? 'low' : anywhere.some((a) => tierOf(set, a) !== 'read') ? 'high' : 'medium';
      add(
        'standing-privilege',
        severity,
        `permits ${describeActions(set, anywhere)} with no environment, time or task constraint (no condition reads context.environment, context.hour, context.weekday or context.intent)`,
      );
    }

    const risky = inProduction.filter((a) => tierOf(set, a) !== 'read');
    if (!approval && risky.length > 0) {
      // Limited: it cannot apply to a call that carries no arguments, so every call is bounded by what it says.
      const limited =
        readsAny(json.conditions, 'context', CALL_ARGUMENTS) &&
        !environments.some((env) =>
          risky.some((a) => canApply(json.conditions, { 'context.environment': env, 'context.tier': tierOf(set, a), 'context.stage': 'call', 'context.args': NO_ARGUMENTS })),
        );
      const severity: LintSeverity = risky.some((a) => tierOf(set, a) !== 'write') ? (limited ? 'medium' : 'high') : limited ? 'low' : 'medium';
      add(
        'unapproved-in-production',
        severity,
        `can allow ${describeActions(set, risky)} in production without @approval("required")${limited ? ', within limits on the call\'s arguments' : ''}`,
      );
    }

    if (inProduction.length === 0) continue;
    if (json.principal.op === 'All') {
      add('wildcard-principal', approval ? 'medium' : 'high', `any principal, in production: the scope names no principal type or entity`);
    }
    // `resource is <type>` alone narrows little: every database, every API. Resources have no parents.
    const anyResource = json.resource.op === 'All' || (json.resource.op === 'is' && json.resource.in === undefined);
    if (anyResource && !mentionsVar(json.conditions, 'resource')) {
      const severity: LintSeverity = !approval && risky.length > 0 ? 'high' : 'medium';
      add('wildcard-resource', severity, `any resource, in production, for ${describeActions(set, inProduction)}: neither the scope nor a condition narrows the resource`);
    }
  }

  const threshold = options.ttlThresholdSeconds ?? DEFAULT_TTL_THRESHOLD;
  if (options.tokenMaxTtlSeconds !== undefined && options.tokenMaxTtlSeconds > threshold) {
    findings.push({
      rule: 'long-max-ttl',
      severity: 'medium',
      policy: null,
      file: options.configFile ?? null,
      line: null,
      message: `tokens.maxTtl is ${formatSeconds(options.tokenMaxTtlSeconds)}, above ${formatSeconds(threshold)}: a task token can outlive its task by that much`,
      references: RULE_REFERENCES['long-max-ttl'],
    });
  }

  // Stable: most severe first, then policy order.
  return findings
    .map((finding, index) => ({ finding, index }))
    .sort((a, b) => severityRank(b.finding.severity) - severityRank(a.finding.severity) || a.index - b.index)
    .map(({ finding }) => finding);
}

function tierOf(set: PolicySet, action: string): Tier {
  // INVARIANT: callers pass only actions with a tier (filtered on set.actionTiers).
  return set.actionTiers.get(action) ?? 'admin';
}

/** "write-tier refund, write; admin-tier admin", most dangerous tier first. */
function describeActions(set: PolicySet, names: readonly string[]): string {
  const byTier = new Map<Tier, string[]>();
  for (const name of names) {
    const tier = tierOf(set, name);
    byTier.set(tier, [...(byTier.get(tier) ?? []), name]);
  }
  return [...byTier.entries()]
    .sort(([a], [b]) => tierRank(b) - tierRank(a))
    .map(([tier, list]) => `${tier}-tier ${[...list].sort().join(', ')}`)
    .join('; ');
}

function formatSeconds(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

// ---- actions -----------------------------------------------------------

/** Every action of the schema with the actions directly inside it. */
interface ActionGroups {
  readonly all: readonly string[];
  readonly children: ReadonlyMap<string, readonly string[]>;
}

function actionGroups(set: PolicySet): ActionGroups {
  const schema = cedar.schemaToJson(set.schemaText);
  if (schema.type === 'failure') throw new Error(`the schema of a loaded set no longer parses: ${schema.errors.map((e) => e.message).join('; ')}`);
  const declared = schema.json[CEDAR_NAMESPACE]?.actions ?? {};
  const children = new Map<string, string[]>();
  for (const [name, action] of Object.entries(declared)) {
    for (const parent of action.memberOf ?? []) {
      if (parent.type !== undefined && parent.type !== 'Action' && parent.type !== ACTION_TYPE) continue;
      children.set(parent.id, [...(children.get(parent.id) ?? []), name]);
    }
  }
  return { all: Object.keys(declared), children };
}

/** The actions an action scope covers: `in` takes the group and everything inside it, transitively. */
function coveredActions(scope: ActionConstraint, groups: ActionGroups): string[] {
  if (scope.op === 'All') return [...groups.all];
  if (scope.op === '==') return 'entity' in scope ? [actionId(scope.entity)] : [];
  const roots = 'entities' in scope ? scope.entities.map(actionId) : [actionId(scope.entity)];
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    for (const child of groups.children.get(name) ?? []) visit(child);
  };
  roots.forEach(visit);
  return [...seen];
}

function actionId(uid: EntityUidJson): string {
  return '__entity' in uid ? uid.__entity.id : uid.id;
}

// ---- conditions --------------------------------------------------------

/** A value the analysis knows, or undefined for "unknown". Entities and records are always unknown. */
type Known = string | number | boolean | readonly Known[];
/** Attribute paths (`context.environment`) bound to a known value. */
type Bindings = Readonly<Record<string, Known>>;

/** False only when some clause certainly keeps the permit from applying under `bindings`. */
function canApply(conditions: readonly Clause[], bindings: Bindings): boolean {
  for (const clause of conditions) {
    const value = evaluate(clause.body, bindings);
    if (clause.kind === 'when' && value === false) return false;
    if (clause.kind === 'unless' && value === true) return false;
  }
  return true;
}

/**
 * Three-valued evaluation: a known value, or undefined when the result
 * depends on something unbound. An expression Cedar would reject with an
 * error is unknown too (an erroring permit allows nothing, so "unknown" only
 * ever makes the analysis report more).
 */
function evaluate(expr: Expr, bindings: Bindings): Known | undefined {
  const node = expr as Record<string, unknown>;
  const key = Object.keys(node)[0];
  const operand = (e: unknown) => evaluate(e as Expr, bindings);
  const pair = () => {
    const { left, right } = node[key as string] as { left: Expr; right: Expr };
    return [evaluate(left, bindings), evaluate(right, bindings)] as const;
  };
  switch (key) {
    case 'Value':
      return literal(node.Value as CedarValueJson);
    case '.': {
      const { left, attr } = node['.'] as { left: Expr; attr: string };
      const v = (left as { Var?: string }).Var;
      return v === undefined ? undefined : bindings[`${v}.${attr}`];
    }
    case 'has': {
      const { left } = node.has as { left: Expr };
      const access = (left as Record<string, unknown>)['.'] as { left: { Var?: string }; attr: string } | undefined;
      if (access !== undefined && bindings[`${access.left.Var ?? ''}.${access.attr}`] === NO_ARGUMENTS) return false;
      return undefined;
    }
    case '!': {
      const arg = operand((node['!'] as { arg: Expr }).arg);
      return typeof arg === 'boolean' ? !arg : undefined;
    }
    case '&&': {
      const [l, r] = pair();
      if (l === false || r === false) return false;
      return l === true && r === true ? true : undefined;
    }
    case '||': {
      const [l, r] = pair();
      if (l === true || r === true) return true;
      return l === false && r === false ? false : undefined;
    }
    case '==':
    case '!=': {
      const [l, r] = pair();
      if (l === undefined || r === undefined) return undefined;
      return equal(l, r) === (key === '==');
    }
    case '<':
    case '<=':
    case '>':
    case '>=': {
      const [l, r] = pair();
      if (typeof l !== 'number' || typeof r !== 'number') return undefined;
      return key === '<' ? l < r : key === '<=' ? l <= r : key === '>' ? l > r : l >= r;
    }
    case 'contains': {
      const { left, right } = node.contains as { left: Expr; right: Expr };
      const needle = evaluate(right, bindings);
      if (needle === undefined) return undefined;
      return setContains(left, bindings, needle);
    }
    case 'containsAny':
    case 'containsAll': {
      const [l, r] = pair();
      if (!Array.isArray(l) || !Array.isArray(r)) return undefined;
      const has = (x: Known) => l.some((y) => equal(x, y));
      return key === 'containsAll' ? r.every(has) : r.some(has);
    }
    case 'like': {
      const { left, pattern } = node.like as { left: Expr; pattern: ('Wildcard' | { Literal: string })[] };
      const text = evaluate(left, bindings);
      if (typeof text !== 'string') return undefined;
      const source = pattern.map((p) => (p === 'Wildcard' ? '[\\s\\S]*' : p.Literal.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('');
      return new RegExp(`^${source}$`, 'u').test(text);
    }
    case 'if-then-else': {
      const { if: test, then, else: otherwise } = node['if-then-else'] as { if: Expr; then: Expr; else: Expr };
      const c = evaluate(test, bindings);
      if (c === true) return evaluate(then, bindings);
      if (c === false) return evaluate(otherwise, bindings);
      const a = evaluate(then, bindings);
      const b = evaluate(otherwise, bindings);
      return a !== undefined && b !== undefined && equal(a, b) ? a : undefined;
    }
    case 'Set': {
      const items = (node.Set as Expr[]).map((e) => evaluate(e, bindings));
      return items.every((i) => i !== undefined) ? (items as Known[]) : undefined;
    }
    default:
      return undefined;
  }
}

/** `[a, b].contains(x)`: true when a known member equals x, false only when every member is known and none does. */
function setContains(set: Expr, bindings: Bindings, needle: Known): boolean | undefined {
  const members = (set as { Set?: Expr[] }).Set;
  if (members === undefined) {
    const value = evaluate(set, bindings);
    return Array.isArray(value) ? value.some((m) => equal(m, needle)) : undefined;
  }
  let unknown = false;
  for (const member of members) {
    const value = evaluate(member, bindings);
    if (value === undefined) unknown = true;
    else if (equal(value, needle)) return true;
  }
  return unknown ? undefined : false;
}

function literal(value: CedarValueJson): Known | undefined {
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value;
  if (Array.isArray(value)) {
    const items = value.map(literal);
    return items.every((i) => i !== undefined) ? (items as Known[]) : undefined;
  }
  return undefined;
}

function equal(a: Known, b: Known): boolean {
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b)) return false;
    // Cedar sets: equal when each holds every member of the other.
    return a.every((x) => b.some((y) => equal(x, y))) && b.every((y) => a.some((x) => equal(x, y)));
  }
  return a === b;
}

/** Whether a condition reads `<variable>.<attribute>` for one of `attributes`. */
function readsAny(conditions: readonly Clause[], variable: string, attributes: ReadonlySet<string>): boolean {
  return conditions.some((c) =>
    someNode(c.body, (node) => {
      const access = node['.'] as { left: { Var?: string }; attr: string } | undefined;
      return access !== undefined && access.left.Var === variable && attributes.has(access.attr);
    }),
  );
}

/** Whether a condition mentions the variable at all (`resource.kind`, `resource has x`, `resource in ...`). */
function mentionsVar(conditions: readonly Clause[], variable: string): boolean {
  return conditions.some((c) => someNode(c.body, (node) => node.Var === variable));
}

/** Depth-first search over an expression tree (any JSON object below it). */
function someNode(root: unknown, predicate: (node: Record<string, unknown>) => boolean): boolean {
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const node = stack.pop();
    if (node === null || typeof node !== 'object') continue;
    if (Array.isArray(node)) {
      stack.push(...node);
      continue;
    }
    const record = node as Record<string, unknown>;
    if (predicate(record)) return true;
    // A literal value is data, not an expression: `{ "Value": { "Var": "resource" } }` is a record.
    for (const [key, child] of Object.entries(record)) if (key !== 'Value') stack.push(child);
  }
  return false;
}

// ---- positions ---------------------------------------------------------

/**
 * The 1-based line each policy starts on. Policies sit in `set.policies` in
 * file order, so a cursor per file finds repeated identical texts in turn.
 */
function policyLines(set: PolicySet, sources: Readonly<Record<string, string>> | undefined): Map<string, number> {
  const lines = new Map<string, number>();
  if (sources === undefined) return lines;
  const cursors = new Map<string, number>();
  for (const policy of set.policies.values()) {
    const text = Object.hasOwn(sources, policy.file) ? sources[policy.file] : undefined;
    if (text === undefined) continue;
    const found = text.indexOf(policy.text, cursors.get(policy.file) ?? 0);
    if (found < 0) continue;
    cursors.set(policy.file, found + policy.text.length);
    lines.set(policy.id, text.slice(0, found).split('\n').length);
  }
  return lines;
}
