/**
 * The Cedar request Writ's engine sends for a decision, rebuilt outside the
 * engine so the benchmark can time raw cedar-wasm on exactly that request.
 *
 * This mirrors `evaluate` and `decide` in src/policy/engine.ts rule for rule:
 * the principal's entity type from its actor type, its labels as tags; the
 * resource's entity type from the catalog's `kinds`, with kind, sensitivity
 * and tier floor as attributes; the context with the tier raised to the
 * catalog's floor, the risk score of this very request, the UTC hour and
 * weekday, and only the arguments the schema declares. It is a copy, so it can
 * drift, and two checks run before anything is timed, the benchmark aborting
 * on the first difference: `checkSameRequest` has the engine decide against a
 * policy that permits exactly the mirrored request and nothing else (entity
 * types and ids, every attribute and tag, the whole context record), and
 * `checkSameDecision` compares raw Cedar's answer to the mirrored request with
 * the engine's decision on the real set (outcome, deciding policies, risk,
 * tier, sensitivity).
 */
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cedar } from '../../src/policy/cedar.js';
import { resourceKind } from '../../src/core/scope.js';
import { tierRank, type Sensitivity, type Tier } from '../../src/core/types.js';
import { createPolicyEngine, type DecisionInput, type PolicyDecision, type PolicyOutcome } from '../../src/policy/engine.js';
import { CATALOG_FILE, CEDAR_NAMESPACE, loadPolicySet, SCHEMA_FILE, type PolicySet } from '../../src/policy/policy-set.js';
import { scoreRisk, type RiskScore, type RiskSettings } from '../../src/policy/risk.js';

/** The request fields common to `isAuthorized` and `statefulIsAuthorized`. */
export interface CedarRequest {
  readonly principal: cedar.EntityUid;
  readonly action: cedar.EntityUid;
  readonly resource: cedar.EntityUid;
  readonly context: cedar.Context;
  readonly entities: cedar.Entities;
}

export interface MirroredRequest {
  readonly request: CedarRequest;
  /** What the engine must report for the same input. */
  readonly tier: Tier;
  readonly sensitivity: Sensitivity;
  readonly risk: RiskScore;
}

const PRINCIPAL_TYPES = { agent: 'Agent', service: 'Service', human: 'Human' } as const;
const MAX_ARG_STRING = 1024;

/**
 * The request the engine would send to Cedar for `input`, or undefined where
 * the engine denies before asking Cedar (an action in no tier group, a
 * declared argument of the wrong type). `settings` must be the engine's.
 */
export function mirrorCedarRequest(set: PolicySet, input: DecisionInput, settings: RiskSettings): MirroredRequest | undefined {
  const actionTier = set.actionTiers.get(input.action);
  if (actionTier === undefined) return undefined;
  const floor = set.catalog.tierFloorOf(input.resource);
  const tier = tierRank(floor) > tierRank(actionTier) ? floor : actionTier;
  const sensitivity = set.catalog.sensitivityOf(input.resource);
  const risk = scoreRisk(
    {
      environment: input.environment,
      tier,
      sensitivity,
      identityCreatedAt: input.principal.createdAt,
      now: input.now,
      unusualResource: input.observed?.unusualResource ?? true,
      callsLastMinute: input.observed?.callsLastMinute ?? Number.NaN,
      delegationDepth: input.delegationDepth ?? 0,
      breakGlass: input.breakGlass === true,
    },
    settings,
  );
  const args = declaredArgs(set, input.args ?? {});
  if (args === undefined) return undefined;

  const date = new Date(input.now);
  const principal = { type: `${CEDAR_NAMESPACE}::${PRINCIPAL_TYPES[input.principal.actorType]}`, id: input.principal.id };
  const kind = resourceKind(input.resource);
  const resource = { type: `${CEDAR_NAMESPACE}::${set.catalog.entityTypeOf(kind)}`, id: input.resource };
  return {
    tier,
    sensitivity,
    risk,
    request: {
      principal,
      action: { type: `${CEDAR_NAMESPACE}::Action`, id: input.action },
      resource,
      context: {
        stage: input.stage ?? 'grant',
        environment: input.environment,
        actorType: input.principal.actorType,
        intent: input.intent,
        purpose: input.purpose ?? '',
        sensitivity,
        tier,
        risk: risk.score,
        riskLevel: risk.level,
        delegationDepth: input.delegationDepth ?? 0,
        breakGlass: input.breakGlass === true,
        approval: input.approval ?? 'none',
        hour: date.getUTCHours(),
        weekday: date.getUTCDay(),
        args,
      },
      entities: [
        {
          uid: principal,
          attrs: { owner: input.principal.owner ?? '', environment: input.principal.environment, actorType: input.principal.actorType },
          parents: [],
          tags: { ...input.principal.labels },
        },
        { uid: resource, attrs: { kind, sensitivity, tier: floor }, parents: [] },
      ],
    },
  };
}

/** The declared arguments, or undefined when one has the wrong type (the engine denies those before Cedar). */
function declaredArgs(set: PolicySet, given: Readonly<Record<string, unknown>>): Record<string, cedar.CedarValueJson> | undefined {
  const args: Record<string, cedar.CedarValueJson> = {};
  for (const [name, type] of set.argTypes) {
    if (!Object.hasOwn(given, name)) continue;
    const value = given[name];
    if (value === undefined || value === null) continue;
    const ok =
      type === 'Long' ? Number.isSafeInteger(value)
        : type === 'String' ? typeof value === 'string' && value.length <= MAX_ARG_STRING
          : type === 'Bool' ? typeof value === 'boolean'
            : true;
    if (!ok) return undefined;
    args[name] = value as cedar.CedarValueJson;
  }
  return args;
}

/** The policy texts that decide for tasks in `environment`: the set's own and that environment's. */
export function policyTextsFor(set: PolicySet, environment: string): Record<string, string> {
  return Object.fromEntries([...set.policies.values()].filter((p) => p.environment === undefined || p.environment === environment).map((p) => [p.id, p.text]));
}

/** The fields of a `statefulIsAuthorized` call that name what it decides with. */
export interface PreparsedCall {
  readonly preparsedPolicySetId: string;
  readonly preparsedSchemaName: string;
  readonly validateRequest: true;
}

const preparsedBaselines = new WeakMap<PolicySet, (environment: string) => PreparsedCall>();

/**
 * The set's schema and policies preparsed for a raw `statefulIsAuthorized`
 * baseline under the bench's own ids (Writ's ids are its own business), once
 * per set: the call fields for a task in `environment`, which decides with the
 * set's policies for every environment and that environment's own.
 */
export function preparsedBaseline(set: PolicySet): (environment: string) => PreparsedCall {
  let forEnvironment = preparsedBaselines.get(set);
  if (forEnvironment !== undefined) return forEnvironment;
  const base = `writ-bench:${set.version}`;
  const schema = cedar.preparseSchema(base, set.schemaText);
  if (schema.type === 'failure') throw new Error(`bench: the schema does not preparse: ${schema.errors.map((e) => e.message).join('; ')}`);
  for (const environment of ['', ...set.environments]) {
    const loaded = cedar.preparsePolicySet(environment === '' ? base : `${base}/${environment}`, { staticPolicies: policyTextsFor(set, environment) });
    if (loaded.type === 'failure') throw new Error(`bench: the policies do not preparse: ${loaded.errors.map((e) => e.message).join('; ')}`);
  }
  const own = new Set(set.environments);
  forEnvironment = (environment) => ({ preparsedPolicySetId: own.has(environment) ? `${base}/${environment}` : base, preparsedSchemaName: base, validateRequest: true });
  preparsedBaselines.set(set, forEnvironment);
  return forEnvironment;
}

/**
 * Throws unless Cedar's `answer` to the mirrored request means the same as
 * the engine's `decision`: a successful evaluation without errors, the same
 * outcome (approval permits read as the engine reads them), the same deciding
 * policies, and the same risk, tier and sensitivity in the context.
 */
export function checkSameDecision(label: string, set: PolicySet, input: DecisionInput, mirrored: MirroredRequest, decision: PolicyDecision, answer: cedar.AuthorizationAnswer): void {
  const fail = (what: string) => {
    throw new Error(`bench baseline "${label}" does not match Writ's engine: ${what}\n  input: ${JSON.stringify({ ...input, principal: input.principal.id })}`);
  };
  if (answer.type === 'failure') fail(`cedar refused the request: ${answer.errors.map((e) => e.message).join('; ')}`);
  else {
    const { decision: cedarDecision, diagnostics } = answer.response;
    if (diagnostics.errors.length > 0) fail(`evaluation errors: ${diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`).join('; ')}`);
    const approvalOnly = (id: string) => {
      const policy = set.policies.get(id);
      return policy?.effect === 'permit' && policy.annotations.approval === 'required';
    };
    const outcome: PolicyOutcome =
      cedarDecision === 'deny' ? 'deny' : input.approval === 'approved' || diagnostics.reason.some((id) => !approvalOnly(id)) ? 'allow' : 'approval_required';
    if (outcome !== decision.outcome) fail(`raw cedar says ${outcome}, the engine ${decision.outcome} (${decision.errors.join('; ')})`);
    const sorted = (ids: readonly string[]) => JSON.stringify([...ids].sort());
    if (sorted(diagnostics.reason) !== sorted(decision.policies)) fail(`deciding policies ${sorted(diagnostics.reason)} against the engine's ${sorted(decision.policies)}`);
  }
  if (mirrored.risk.score !== decision.risk.score || mirrored.risk.level !== decision.risk.level) fail(`risk ${mirrored.risk.score} against the engine's ${decision.risk.score}`);
  if (mirrored.tier !== decision.tier || mirrored.sensitivity !== decision.sensitivity) fail(`tier/sensitivity ${mirrored.tier}/${mirrored.sensitivity} against the engine's ${decision.tier}/${decision.sensitivity}`);
}

/**
 * Throws unless Writ's engine sends Cedar exactly `mirrored.request` for
 * `input`. The engine decides `input` against the set's schema and catalog
 * with one policy in place of its policies, loaded as any set is (a folder
 * in the temp directory), whose permit holds only for that request: principal,
 * action and resource by entity type and id, each entity's every attribute
 * and tag, and every context field and declared argument (so a missing or
 * retyped field fails, and an argument the mirror has and the engine drops). The probe reads every field, so the engine sends every
 * field; that it sends only what a set reads is checked by `checkSameDecision`
 * against Cedar asked the whole request. An extra tag on the principal is the
 * one difference it cannot see.
 */
export function checkSameRequest(label: string, set: PolicySet, input: DecisionInput, mirrored: MirroredRequest, settings: RiskSettings): void {
  const dir = probeFolder(set);
  writeFileSync(join(dir, 'probe.cedar'), `@id("${PROBE_POLICY_ID}")\n${probePolicy(mirrored.request, set.argTypes.keys())}\n`);
  // One slot for every probe: each load replaces the last one's compiled sets.
  const probe = createPolicyEngine(loadPolicySet(dir, { slot: 'writ-bench-probe' }), { cacheEntries: 0, risk: settings });
  const decision = probe.decide(input);
  if (decision.outcome !== 'allow' || decision.policies.join() !== PROBE_POLICY_ID) {
    throw new Error(
      `bench baseline "${label}": Writ's engine does not send Cedar the mirrored request (${decision.errors.join('; ') || 'the probe policy did not match'})\n` +
        `  mirrored: ${JSON.stringify(mirrored.request)}`,
    );
  }
}

const PROBE_POLICY_ID = 'mirror-matches';
const probeFolders = new WeakMap<PolicySet, string>();

/** A temporary policy folder with the set's schema and catalog and no policies yet; removed when the process exits. */
function probeFolder(set: PolicySet): string {
  let dir = probeFolders.get(set);
  if (dir !== undefined) return dir;
  const made = mkdtempSync(join(tmpdir(), 'writ-bench-probe-'));
  process.once('exit', () => rmSync(made, { recursive: true, force: true }));
  writeFileSync(join(made, SCHEMA_FILE), set.schemaText);
  if (existsSync(join(set.dir, CATALOG_FILE))) copyFileSync(join(set.dir, CATALOG_FILE), join(made, CATALOG_FILE));
  probeFolders.set(set, made);
  dir = made;
  return dir;
}

/** A permit for exactly this request (see checkSameRequest). */
function probePolicy(request: CedarRequest, argNames: Iterable<string>): string {
  const uid = (entity: cedar.EntityUid) => {
    const { type, id } = entity as cedar.TypeAndId;
    return `${type}::${literal(id)}`;
  };
  // Field by field: strict validation refuses a whole-record literal against the declared record type.
  const conditions: string[] = [];
  for (const [name, value] of Object.entries(request.context as Record<string, cedar.CedarValueJson>)) {
    if (name !== 'args') {
      conditions.push(`context[${literal(name)}] == ${literal(value)}`);
      continue;
    }
    const given = value as Record<string, cedar.CedarValueJson>;
    for (const arg of argNames) conditions.push(Object.hasOwn(given, arg) ? `context.args has ${arg} && context.args.${arg} == ${literal(given[arg]!)}` : `!(context.args has ${arg})`);
  }
  for (const [variable, entity] of [['principal', request.entities[0]], ['resource', request.entities[1]]] as const) {
    if (entity === undefined) throw new Error('bench: a mirrored request has a principal and a resource entity');
    for (const [name, value] of Object.entries(entity.attrs ?? {})) conditions.push(`${variable}[${literal(name)}] == ${literal(value)}`);
    for (const [name, value] of Object.entries(entity.tags ?? {})) conditions.push(`${variable}.hasTag(${literal(name)}) && ${variable}.getTag(${literal(name)}) == ${literal(value)}`);
  }
  return `permit (principal == ${uid(request.principal)}, action == ${uid(request.action)}, resource == ${uid(request.resource)})\nwhen { ${conditions.join(' && ')} };`;
}

/** A Cedar literal for a value the mirror builds: strings, whole numbers, booleans, sets and records of them. */
function literal(value: cedar.CedarValueJson): string {
  if (typeof value === 'string') {
    // INVARIANT: no control characters, so escaping \ and " is all a Cedar string needs.
    if (/[\u0000-\u001f\u007f]/.test(value)) throw new Error(`bench: cannot write ${JSON.stringify(value)} as a Cedar literal`);
    return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  }
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
  if (typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return `[${value.map(literal).join(', ')}]`;
  if (typeof value === 'object' && value !== null && !('__entity' in value) && !('__extn' in value)) {
    return `{${Object.entries(value).map(([name, v]) => `${literal(name)}: ${literal(v)}`).join(', ')}}`;
  }
  throw new Error(`bench: cannot write ${JSON.stringify(value)} as a Cedar literal`);
}
