/**
 * Policy decisions with Cedar. Three outcomes:
 *
 * - `allow`: some permit applies and no forbid does.
 * - `approval_required`: allowed, but only by permits annotated
 *   `@approval("required")`: a human must approve the exact action.
 * - `deny`: a forbid applies, or no permit does, or any policy failed to
 *   evaluate. Cedar itself skips an erroring policy, which would turn a broken
 *   forbid into no forbid at all, so an error anywhere denies; a failed call
 *   (bad request shape) is a deny too, never an allow.
 *
 * Every decision sees the request's context fresh: the task (environment,
 * intent, purpose, delegation depth, break-glass), the resource as the catalog
 * knows it (entity type, sensitivity, tier), the risk score of this very
 * request, the approval state, the UTC time and, at a call, the arguments the
 * schema declares. What crosses into wasm is the request plan's
 * (request-plan.ts): per environment and action, the preparsed policies that
 * can apply and only the fields they read, decided exactly as Cedar asked
 * the plain way would decide; `cedarRequestFor` shows that call.
 */
import { cedar } from './cedar.js';
import { resourceKind } from '../core/scope.js';
import { sensitivityRank, tierRank, type Identity, type Scope, type Sensitivity, type Tier } from '../core/types.js';
import { type PolicySet } from './policy-set.js';
import { ACTION_TYPE, CEDAR_NAMESPACE, PRINCIPAL_TYPES } from './request-plan.js';
import { riskSettingsSchema, scoreRisk, type RiskScore, type RiskSettings } from './risk.js';

export type PolicyOutcome = 'allow' | 'deny' | 'approval_required';

/** Where a decision is made: a task asking for a scope, or one call under a granted scope. */
export type DecisionStage = 'grant' | 'call';
export const APPROVAL_STATES = ['none', 'approved'] as const;
export type ApprovalState = (typeof APPROVAL_STATES)[number];

export interface PolicyDecision {
  readonly outcome: PolicyOutcome;
  /** Policies that determined the outcome (the permits that allowed, or the forbids that denied). */
  readonly policies: readonly string[];
  /** Evaluation errors, for the audit log. Non-empty errors never turn a deny into an allow. */
  readonly errors: readonly string[];
  readonly policyVersion: string;
  /** The action's tier, raised to the resource's tier floor from the catalog. */
  readonly tier: Tier;
  readonly sensitivity: Sensitivity;
  /** The risk score this request was decided with, and the signals that made it. */
  readonly risk: RiskScore;
}

/** What the engine cannot see for itself: this identity's recent behaviour. */
export interface RiskObservations {
  /** This identity's calls in the last minute (this process's count). */
  readonly callsLastMinute: number;
  /** True when this identity has not been granted this kind of resource before. */
  readonly unusualResource: boolean;
}

export interface DecisionInput {
  readonly principal: Identity;
  readonly action: string;
  /** A concrete resource, or a pattern when deciding a requested scope. */
  readonly resource: string;
  readonly environment: string;
  readonly intent: string;
  /** The task's purpose (free text). Default empty. */
  readonly purpose?: string;
  /** Default `grant`. */
  readonly stage?: DecisionStage;
  /** Decision time in epoch ms; gives `context.hour` and `context.weekday` (UTC). */
  readonly now: number;
  /** 0 when acting directly (default), 1 for a task delegated once, and so on. */
  readonly delegationDepth?: number;
  readonly breakGlass?: boolean;
  /** Default `none`. */
  readonly approval?: ApprovalState;
  /** The call's arguments, where the enforcement point has them; only those the schema declares reach policy. */
  readonly args?: Readonly<Record<string, unknown>>;
  /** Risk inputs from outside the request. Absent ones count as the riskiest (an unknown history is a first use). */
  readonly observed?: RiskObservations;
}

/**
 * A step of a task's life decided on the task itself (`approve`, `delegate`,
 * `break_glass`): the principal is who takes the step (an approver, a
 * delegating planner), the resource is the task, `Writ::Task::"<id>"`, with
 * its intent, purpose, environment, delegation depth, and the sensitivity and
 * tier of the most sensitive and highest-tier scope it holds.
 */
export interface TaskActionInput {
  readonly principal: Identity;
  /** A task-level action of the schema (`PolicySet.taskActions`). */
  readonly action: string;
  readonly task: {
    readonly id: string;
    readonly intent: string;
    readonly purpose: string;
    readonly environment: string;
    readonly delegationDepth: number;
    /** The scopes the step is about (the task's grant, or what a delegation asks for). */
    readonly scopes: readonly Scope[];
  };
  readonly now: number;
  readonly breakGlass?: boolean;
  readonly approval?: ApprovalState;
  readonly observed?: RiskObservations;
}

export interface PolicyEngine {
  readonly version: string;
  readonly set: PolicySet;
  /** The action's tier, or undefined when the schema does not declare it in a tier group. */
  tierOf(action: string): Tier | undefined;
  /** The tier an action on this resource counts as: the action's, raised to the catalog's tier floor. */
  tierFor(action: string, resource: string): Tier | undefined;
  /** Decides one request. Never throws: an error is a deny with `errors` filled in. */
  decide(input: DecisionInput): PolicyDecision;
  /**
   * Decides a task-level action, the plain way: validated against the schema,
   * every policy of the task's environment, every field. Never cached (these
   * steps are rare and each is its own decision). Never throws.
   */
  decideTaskAction(input: TaskActionInput): PolicyDecision;
  /**
   * The exact call `decide` makes to Cedar for `input` (its plan: the slice's
   * preparsed set, only the fields it reads), or undefined when it decides
   * without asking Cedar. For explaining and benchmarking; it decides nothing.
   */
  cedarRequestFor(input: DecisionInput): cedar.StatefulAuthorizationCall | undefined;
}


export interface PolicyEngineOptions {
  /** Decisions remembered (0 turns the cache off). Default 10 000. */
  readonly cacheEntries?: number;
  /** Risk score settings (`policy.risk` in the configuration). Default: the defaults. */
  readonly risk?: RiskSettings;
}

/** Longest string argument that reaches policy; a longer one denies the call. */
const MAX_ARG_STRING = 1024;

/**
 * The decision cache. An engine is one policy version, so a cached decision
 * never outlives its policies. The key is every input that reaches Cedar: the
 * principal (id, actor type, owner, environment, labels); the action; the
 * resource; the task's environment, intent, purpose, delegation depth and
 * break-glass flag; the stage; the approval state; the risk score (an integer:
 * the signals behind it are recomputed for every request, so a rising call
 * rate reaches policy at once); the arguments the schema declares; and the UTC
 * hour and weekday (so a time-of-day policy is decided afresh each hour). It
 * may reuse nothing else: the identity's state, the task's liveness, the grant
 * and the token are checked outside the engine on every call, never cached
 * here. A decision where Cedar itself threw is never cached.
 */
function decisionKey(input: DecisionInput, args: Readonly<Record<string, unknown>>, risk: number, date: Date): string {
  const p = input.principal;
  const labels = Object.keys(p.labels).length === 0 ? 0 : Object.entries(p.labels).sort(([a], [b]) => (a < b ? -1 : 1));
  return JSON.stringify([
    p.id, p.actorType, p.owner, p.environment, labels,
    input.action, input.resource, input.environment, input.intent, input.purpose ?? '',
    input.stage ?? 'grant', input.delegationDepth ?? 0, input.breakGlass === true, input.approval ?? 'none',
    risk, args, date.getUTCHours(), date.getUTCDay(),
  ]);
}

export function createPolicyEngine(set: PolicySet, options: PolicyEngineOptions = {}): PolicyEngine {
  const cacheEntries = options.cacheEntries ?? 10_000;
  const riskSettings = options.risk ?? riskSettingsSchema.parse({});
  const cache = new Map<string, PolicyDecision>();
  const requiresApproval = new Set<string>();
  for (const policy of set.policies.values()) {
    if (policy.effect === 'permit' && policy.annotations.approval === 'required') requiresApproval.add(policy.id);
  }

  /** The risk score of a request; what is not observed counts as the riskiest. */
  const riskOf = (
    input: Pick<DecisionInput, 'principal' | 'now' | 'observed' | 'breakGlass'>,
    environment: string,
    tier: Tier,
    sensitivity: Sensitivity,
    delegationDepth: number,
  ): RiskScore =>
    scoreRisk(
      {
        environment,
        tier,
        sensitivity,
        identityCreatedAt: input.principal.createdAt,
        now: input.now,
        unusualResource: input.observed?.unusualResource ?? true,
        callsLastMinute: input.observed?.callsLastMinute ?? Number.NaN,
        delegationDepth,
        breakGlass: input.breakGlass === true,
      },
      riskSettings,
    );

  const tierFor = (action: string, resource: string): Tier | undefined => {
    const tier = set.actionTiers.get(action);
    if (tier === undefined) return undefined;
    const floor = set.catalog.tierFloorOf(resource);
    return tierRank(floor) > tierRank(tier) ? floor : tier;
  };

  type Base = Pick<PolicyDecision, 'policyVersion' | 'sensitivity' | 'tier' | 'risk'>;
  type Prepared = { readonly date: Date; readonly base: Base; readonly args: Record<string, unknown> };
  /** What every decision computes before asking Cedar (tier, sensitivity, risk, arguments), or the deny when it cannot ask. */
  const prepare = (input: DecisionInput): Prepared | PolicyDecision => {
    const date = new Date(input.now);
    const tier = tierFor(input.action, input.resource);
    const sensitivity = set.catalog.sensitivityOf(input.resource);
    const risk = riskOf(input, input.environment, tier ?? 'admin', sensitivity, input.delegationDepth ?? 0);
    const base = { policyVersion: set.version, sensitivity, tier: tier ?? 'admin', risk } as const;
    if (tier === undefined) return { ...base, outcome: 'deny', policies: [], errors: [`action ${input.action} is not in a tier group`] };
    let args: Record<string, unknown> | string;
    try {
      args = declaredArgs(input.args ?? {});
    } catch (error) {
      args = `args could not be read: ${(error as Error)?.message ?? String(error)}`;
    }
    if (typeof args === 'string') return { ...base, outcome: 'deny', policies: [], errors: [args] };
    // INVARIANT: Cedar cannot take a lone surrogate and throws; a plan that does
    // not send the field must not turn that deny into an answer.
    if (!wellFormed(input, args)) return { ...base, outcome: 'deny', policies: [], errors: ['a string in the request is not well-formed Unicode (a lone surrogate)'] };
    return { date, base, args };
  };

  const decide = (input: DecisionInput): PolicyDecision => {
    const prepared = prepare(input);
    if ('outcome' in prepared) return prepared;
    const { date, base, args } = prepared;
    if (cacheEntries === 0) return evaluate(input, date, base, args).decision;
    const { risk } = base;
    const key = decisionKey(input, args, risk.score, date);
    const hit = cache.get(key);
    // A hit shares the Cedar answer; the risk signals are this request's own.
    if (hit !== undefined) return hit.risk === risk ? hit : { ...hit, risk };
    const { decision, cacheable } = evaluate(input, date, base, args);
    if (cacheable) {
      if (cache.size >= cacheEntries) {
        // Oldest first; drop a tenth at once so eviction is rare.
        const keep = Math.floor(cacheEntries * 0.9);
        for (const k of cache.keys()) {
          if (cache.size <= keep) break;
          cache.delete(k);
        }
      }
      cache.set(key, decision);
    }
    return decision;
  };

  /** The arguments the schema declares, type-checked; a message when one has the wrong type. */
  const declaredArgs = (given: Readonly<Record<string, unknown>>): Record<string, unknown> | string => {
    const args: Record<string, unknown> = {};
    if (typeof given !== 'object' || given === null || Array.isArray(given)) return 'args must be an object';
    for (const [name, type] of set.argTypes) {
      if (!Object.hasOwn(given, name)) continue;
      const value = given[name];
      if (value === undefined || value === null) continue;
      const ok =
        type === 'Long' ? Number.isSafeInteger(value)
          : type === 'String' ? typeof value === 'string' && value.length <= MAX_ARG_STRING
            : type === 'Bool' ? typeof value === 'boolean'
              : true; // other types: Cedar's request validation checks them
      if (!ok) return `args.${name} must be a ${type}${type === 'String' ? ` of at most ${MAX_ARG_STRING} characters` : type === 'Long' ? ' (a whole number)' : ''}`;
      args[name] = value;
    }
    return args;
  };

  /** The call to Cedar for a prepared request, or the decision when the plan decides without one. */
  const cedarCall = (input: DecisionInput, date: Date, base: Base, args: Record<string, unknown>): cedar.StatefulAuthorizationCall | { decision: PolicyDecision; cacheable: boolean } => {
    // INVARIANT: decide() only gets here for an action in a tier group, which always has a plan.
    const plan = set.planFor(input.environment, input.action)!;
    const principal = { type: PRINCIPAL_TYPES[input.principal.actorType], id: input.principal.id };
    const kind = resourceKind(input.resource);
    const resource = { type: `${CEDAR_NAMESPACE}::${set.catalog.entityTypeOf(kind)}`, id: input.resource };
    // What validating the request against the schema would refuse (see request-plan.ts).
    if (!plan.principalTypes.has(principal.type)) return refused(base, `${principal.type} is not a principal of action ${input.action} in the schema`);
    if (!plan.resourceTypes.has(resource.type)) return refused(base, `${resource.type} is not a resource of action ${input.action} in the schema`);
    if (plan.broken !== undefined) return { decision: { ...base, outcome: 'deny', policies: [], errors: [plan.broken] }, cacheable: false };
    if (plan.preparsedId === undefined) return { decision: { ...base, outcome: 'deny', policies: [], errors: [] }, cacheable: true };

    const { reads } = plan;
    const context = decisionContext(input.stage ?? 'grant', input, input.principal, base, date, args);
    const principalAttrs: Record<string, string> = { owner: input.principal.owner ?? '', environment: input.principal.environment, actorType: input.principal.actorType };
    const resourceAttrs: Record<string, string> = { kind, sensitivity: base.sensitivity, tier: set.catalog.tierFloorOf(input.resource) };
    // An entity no policy reads anything off adds nothing: `==`, `is` and `in`
    // (it has no parents) read the request's uids alone.
    const entities: cedar.EntityJson[] = [];
    if (reads.tags || reads.principal === undefined || reads.principal.size > 0) {
      entities.push({ uid: principal, attrs: only(principalAttrs, reads.principal), parents: [], ...(reads.tags ? { tags: { ...input.principal.labels } } : {}) });
    }
    if (reads.tags || reads.resource === undefined || reads.resource.size > 0) entities.push({ uid: resource, attrs: only(resourceAttrs, reads.resource), parents: [] });
    const validated = plan.validated !== undefined;
    // Without the schema, Cedar learns the action's groups from its entity.
    if (!validated && plan.actionEntity !== undefined) entities.push(plan.actionEntity);
    return {
      principal,
      action: { type: ACTION_TYPE, id: input.action },
      resource,
      context: only(context, reads.context),
      entities,
      preparsedPolicySetId: plan.preparsedId,
      ...(validated ? { preparsedSchemaName: set.compiledId, validateRequest: true } : {}),
    };
  };

  const evaluate = (input: DecisionInput, date: Date, base: Base, args: Record<string, unknown>): { decision: PolicyDecision; cacheable: boolean } => {
    const call = cedarCall(input, date, base, args);
    if ('decision' in call) return call;
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized(call);
    } catch (error) {
      return { decision: { ...base, outcome: 'deny', policies: [], errors: [`cedar threw: ${(error as Error).message}`] }, cacheable: false };
    }
    return { decision: outcomeOf(answer, base, input.approval), cacheable: true };
  };

  /** Cedar's answer as Writ's decision. */
  const outcomeOf = (answer: cedar.AuthorizationAnswer, base: Base, approval: ApprovalState | undefined): PolicyDecision => {
    if (answer.type === 'failure') return { ...base, outcome: 'deny', policies: [], errors: answer.errors.map((e) => e.message) };
    const { decision, diagnostics } = answer.response;
    // Cedar returns the deciding policies as a set, in no fixed order; records and tests want one.
    const reason = [...diagnostics.reason].sort();
    const errors = diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`);
    // INVARIANT: Cedar skips a policy whose evaluation errors, so an erroring forbid
    // would silently stop forbidding. Any evaluation error denies, naming the policies.
    if (errors.length > 0) return { ...base, outcome: 'deny', policies: [...new Set(diagnostics.errors.map((e) => e.policyId))].sort(), errors };
    if (decision === 'deny') return { ...base, outcome: 'deny', policies: reason, errors };
    // Approval outranks nothing: any unconditional permit allows outright. An
    // approved action (context.approval) is allowed by its approval permit.
    const unconditional = approval === 'approved' || reason.some((id) => !requiresApproval.has(id));
    return { ...base, outcome: unconditional ? 'allow' : 'approval_required', policies: reason, errors };
  };

  const cedarRequestFor = (input: DecisionInput): cedar.StatefulAuthorizationCall | undefined => {
    const prepared = prepare(input);
    if ('outcome' in prepared) return undefined;
    const call = cedarCall(input, prepared.date, prepared.base, prepared.args);
    return 'decision' in call ? undefined : call;
  };

  const decideTaskAction = (input: TaskActionInput): PolicyDecision => {
    const { task } = input;
    // The task is as sensitive, and at as high a tier, as the most of what it holds.
    let sensitivity: Sensitivity = 'public';
    let tier: Tier = 'read';
    for (const scope of task.scopes) {
      const s = set.catalog.sensitivityOf(scope.resource);
      if (sensitivityRank(s) > sensitivityRank(sensitivity)) sensitivity = s;
      const t = tierFor(scope.action, scope.resource) ?? 'admin';
      if (tierRank(t) > tierRank(tier)) tier = t;
    }
    const risk = riskOf(input, task.environment, tier, sensitivity, task.delegationDepth);
    const base = { policyVersion: set.version, sensitivity, tier, risk } as const;
    const deny = (error: string): PolicyDecision => ({ ...base, outcome: 'deny', policies: [], errors: [error] });
    if (!set.taskActions.has(input.action)) return deny(`${input.action} is not a task-level action of the schema`);
    const plan = set.planFor(task.environment, input.action);
    if (plan === undefined) return deny(`${input.action} has no plan`);
    if (plan.broken !== undefined) return deny(plan.broken);
    if (plan.preparsedId === undefined) return { ...base, outcome: 'deny', policies: [], errors: [] };
    const p = input.principal;
    const strings = [p.id, p.owner ?? '', p.environment, p.actorType, task.id, task.intent, task.purpose, task.environment, input.approval ?? ''];
    for (const [name, value] of Object.entries(p.labels)) strings.push(name, value);
    if (strings.some((s) => LONE_SURROGATE.test(s))) return deny('a string in the request is not well-formed Unicode (a lone surrogate)');
    const date = new Date(input.now);
    const principal = { type: PRINCIPAL_TYPES[p.actorType], id: p.id };
    const resource = { type: `${CEDAR_NAMESPACE}::Task`, id: task.id };
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized({
        principal,
        action: { type: ACTION_TYPE, id: input.action },
        resource,
        context: decisionContext('task', { ...task, breakGlass: input.breakGlass, approval: input.approval }, p, base, date, {}),
        entities: [
          { uid: principal, attrs: { owner: p.owner ?? '', environment: p.environment, actorType: p.actorType }, parents: [], tags: { ...p.labels } },
          {
            uid: resource,
            attrs: { kind: 'task', sensitivity, tier, intent: task.intent, purpose: task.purpose, environment: task.environment, delegationDepth: task.delegationDepth },
            parents: [],
          },
        ],
        preparsedPolicySetId: plan.preparsedId,
        preparsedSchemaName: set.compiledId,
        validateRequest: true,
      });
    } catch (error) {
      return deny(`cedar threw: ${(error as Error).message}`);
    }
    return outcomeOf(answer, base, input.approval);
  };

  return { version: set.version, set, tierOf: (action) => set.actionTiers.get(action), tierFor, decide, decideTaskAction, cedarRequestFor };
}

/** The `DecisionContext` of the schema: what every decision sees, tiered or task-level. */
function decisionContext(
  stage: string,
  request: { readonly environment: string; readonly intent: string; readonly purpose?: string; readonly delegationDepth?: number; readonly breakGlass?: boolean | undefined; readonly approval?: ApprovalState | undefined },
  principal: Identity,
  base: Pick<PolicyDecision, 'sensitivity' | 'tier' | 'risk'>,
  date: Date,
  args: Record<string, unknown>,
): Record<string, cedar.CedarValueJson> {
  return {
    stage,
    environment: request.environment,
    actorType: principal.actorType,
    intent: request.intent,
    purpose: request.purpose ?? '',
    sensitivity: base.sensitivity,
    tier: base.tier,
    risk: base.risk.score,
    riskLevel: base.risk.level,
    delegationDepth: request.delegationDepth ?? 0,
    breakGlass: request.breakGlass === true,
    approval: request.approval ?? 'none',
    hour: date.getUTCHours(),
    weekday: date.getUTCDay(),
    args: args as Record<string, cedar.CedarValueJson>,
  };
}

const ANY_SURROGATE = /[\uD800-\uDFFF]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * True when no string that the plain request would carry holds a lone
 * surrogate: the principal's, the request's, and the declared arguments (the
 * others never reach Cedar, planned or not).
 */
function wellFormed(input: DecisionInput, args: Readonly<Record<string, unknown>>): boolean {
  const p = input.principal;
  const strings = [p.id, p.owner ?? '', p.environment, p.actorType, input.action, input.resource, input.environment, input.intent, input.purpose ?? '', input.stage ?? '', input.approval ?? ''];
  for (const [name, value] of Object.entries(p.labels)) strings.push(name, value);
  for (const value of Object.values(args)) if (typeof value === 'string') strings.push(value);
  // Most strings hold no surrogate at all: the plain class test is the cheap first look.
  return !strings.some((text) => typeof text === 'string' && ANY_SURROGATE.test(text) && LONE_SURROGATE.test(text));
}

/** `record` with only the fields in `names` (all of them when `names` is undefined). */
function only<T>(record: Record<string, T>, names: ReadonlySet<string> | undefined): Record<string, T> {
  if (names === undefined) return record;
  const picked: Record<string, T> = {};
  for (const name of names) if (Object.hasOwn(record, name)) picked[name] = record[name]!;
  return picked;
}

/** A deny for a request the schema would not take; cached like any deny of this version. */
function refused(base: Pick<PolicyDecision, 'policyVersion' | 'sensitivity' | 'tier' | 'risk'>, error: string): { decision: PolicyDecision; cacheable: boolean } {
  return { decision: { ...base, outcome: 'deny', policies: [], errors: [error] }, cacheable: true };
}

/** What a shadow (candidate) policy set would have decided, recorded beside the enforced decision. */
export interface ShadowDecision {
  readonly policyVersion: string;
  readonly outcome: PolicyOutcome;
  readonly policies: readonly string[];
  /** True when the shadow set would have decided differently from the enforced one. */
  readonly differs: boolean;
  readonly errors?: readonly string[];
}

/** Decides `input` with the shadow engine, if any, for the record. Never enforced, never throws. */
export function decideShadow(shadow: PolicyEngine | undefined, input: DecisionInput, enforced: PolicyDecision): ShadowDecision | undefined {
  if (shadow === undefined) return undefined;
  let would: PolicyDecision;
  try {
    would = shadow.decide(input);
  } catch (error) {
    // INVARIANT: a shadow set can only ever add to the record, never change or stop a decision.
    return { policyVersion: shadow.version, outcome: 'deny', policies: [], differs: enforced.outcome !== 'deny', errors: [`shadow decision threw: ${(error as Error)?.message ?? String(error)}`] };
  }
  return {
    policyVersion: would.policyVersion,
    outcome: would.outcome,
    policies: would.policies,
    differs: would.outcome !== enforced.outcome,
    ...(would.errors.length > 0 ? { errors: would.errors } : {}),
  };
}

/** A risk score as audit records carry it: score, level and each contributing signal's points. */
export function riskRecord(risk: RiskScore): { score: number; level: string; signals: Record<string, number> } {
  return { score: risk.score, level: risk.level, signals: Object.fromEntries(risk.signals.map((s) => [s.name, s.points])) };
}
