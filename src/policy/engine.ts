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
 * Only the entities a request needs cross into wasm (the principal and the
 * resource); the policy set and schema are preparsed once per version.
 */
import { cedar } from './cedar.js';
import { resourceKind } from '../core/scope.js';
import type { Identity, Sensitivity, Tier } from '../core/types.js';
import { CEDAR_NAMESPACE, type PolicySet } from './policy-set.js';

export type PolicyOutcome = 'allow' | 'deny' | 'approval_required';

export interface PolicyDecision {
  readonly outcome: PolicyOutcome;
  /** Policies that determined the outcome (the permits that allowed, or the forbids that denied). */
  readonly policies: readonly string[];
  /** Evaluation errors, for the audit log. Non-empty errors never turn a deny into an allow. */
  readonly errors: readonly string[];
  readonly policyVersion: string;
  readonly tier: Tier;
  readonly sensitivity: Sensitivity;
}

export interface DecisionInput {
  readonly principal: Identity;
  readonly action: string;
  /** A concrete resource, or a pattern when deciding a requested scope. */
  readonly resource: string;
  readonly environment: string;
  readonly intent: string;
  /** Decision time in epoch ms; gives `context.hour` and `context.weekday` (UTC). */
  readonly now: number;
}

export interface PolicyEngine {
  readonly version: string;
  readonly set: PolicySet;
  /** The action's tier, or undefined when the schema does not declare it in a tier group. */
  tierOf(action: string): Tier | undefined;
  /** Decides one request. Never throws: an error is a deny with `errors` filled in. */
  decide(input: DecisionInput): PolicyDecision;
}

const PRINCIPAL_TYPES: Record<Identity['actorType'], string> = {
  agent: `${CEDAR_NAMESPACE}::Agent`,
  service: `${CEDAR_NAMESPACE}::Service`,
  human: `${CEDAR_NAMESPACE}::Human`,
};
const ACTION_TYPE = `${CEDAR_NAMESPACE}::Action`;
const RESOURCE_TYPE = `${CEDAR_NAMESPACE}::Resource`;

export interface PolicyEngineOptions {
  /** Decisions remembered (0 turns the cache off). Default 10 000. */
  readonly cacheEntries?: number;
}

/**
 * The decision cache. An engine is one policy version, so a cached decision
 * never outlives its policies. The key is every input that reaches Cedar: the
 * principal's id, actor type, owner and environment; the action; the resource;
 * the task's environment and intent; and the UTC hour and weekday (so a
 * time-of-day policy is decided afresh each hour). It may not reuse anything
 * decided from inputs outside that key (call rate, approvals, request
 * arguments): those never reach Cedar here. A decision where Cedar itself threw
 * is never cached.
 */
function decisionKey(input: DecisionInput, date: Date): string {
  const p = input.principal;
  return JSON.stringify([p.id, p.actorType, p.owner, p.environment, input.action, input.resource, input.environment, input.intent, date.getUTCHours(), date.getUTCDay()]);
}

export function createPolicyEngine(set: PolicySet, options: PolicyEngineOptions = {}): PolicyEngine {
  const cacheEntries = options.cacheEntries ?? 10_000;
  const cache = new Map<string, PolicyDecision>();
  const requiresApproval = new Set<string>();
  for (const policy of set.policies.values()) {
    if (policy.effect === 'permit' && policy.annotations.approval === 'required') requiresApproval.add(policy.id);
  }

  const decide = (input: DecisionInput): PolicyDecision => {
    if (cacheEntries === 0) return decideNow(input, new Date(input.now)).decision;
    const date = new Date(input.now);
    const key = decisionKey(input, date);
    const hit = cache.get(key);
    if (hit !== undefined) return hit;
    const { decision, cacheable } = decideNow(input, date);
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

  const decideNow = (input: DecisionInput, date: Date): { decision: PolicyDecision; cacheable: boolean } => {
    const decision = evaluate(input, date);
    return { decision, cacheable: !decision.errors.some((e) => e.startsWith('cedar threw')) };
  };

  const evaluate = (input: DecisionInput, date: Date): PolicyDecision => {
    const tier = set.actionTiers.get(input.action);
    const sensitivity = set.catalog.sensitivityOf(input.resource);
    const base = { policyVersion: set.version, sensitivity, tier: tier ?? 'admin' };
    if (tier === undefined) return { ...base, outcome: 'deny', policies: [], errors: [`action ${input.action} is not in a tier group`] };

    const principal = { type: PRINCIPAL_TYPES[input.principal.actorType], id: input.principal.id };
    const resource = { type: RESOURCE_TYPE, id: input.resource };
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized({
        principal,
        action: { type: ACTION_TYPE, id: input.action },
        resource,
        context: {
          environment: input.environment,
          actorType: input.principal.actorType,
          intent: input.intent,
          sensitivity,
          tier,
          hour: date.getUTCHours(),
          weekday: date.getUTCDay(),
        },
        entities: [
          {
            uid: principal,
            attrs: { owner: input.principal.owner, environment: input.principal.environment, actorType: input.principal.actorType },
            parents: [],
          },
          { uid: resource, attrs: { kind: resourceKind(input.resource), sensitivity }, parents: [] },
        ],
        preparsedPolicySetId: set.version,
        preparsedSchemaName: set.version,
        validateRequest: true,
      });
    } catch (error) {
      return { ...base, outcome: 'deny', policies: [], errors: [`cedar threw: ${(error as Error).message}`] };
    }
    if (answer.type === 'failure') return { ...base, outcome: 'deny', policies: [], errors: answer.errors.map((e) => e.message) };

    const { decision, diagnostics } = answer.response;
    const errors = diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`);
    // INVARIANT: Cedar skips a policy whose evaluation errors, so an erroring forbid
    // would silently stop forbidding. Any evaluation error denies, naming the policies.
    if (errors.length > 0) return { ...base, outcome: 'deny', policies: diagnostics.errors.map((e) => e.policyId), errors };
    if (decision === 'deny') return { ...base, outcome: 'deny', policies: diagnostics.reason, errors };
    const unconditional = diagnostics.reason.some((id) => !requiresApproval.has(id));
    return { ...base, outcome: unconditional ? 'allow' : 'approval_required', policies: diagnostics.reason, errors };
  };

  return { version: set.version, set, tierOf: (action) => set.actionTiers.get(action), decide };
}
