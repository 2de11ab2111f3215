/**
 * Request plans: what a decision sends Cedar, worked out once per policy set
 * for each environment and action instead of on every request.
 *
 * A plan holds three things, each exactly equivalent to the plain way of
 * asking Cedar (every policy, the whole context, every attribute, the request
 * validated against the schema):
 *
 * - **The policies that can apply.** A policy whose action scope cannot match
 *   the action (`action == Writ::Action::"read"` for a `write`) is never
 *   satisfied and never evaluated past its scope, so it cannot permit, forbid
 *   or error. Each environment × action gets a preparsed set of the rest; with
 *   none left, the answer is a deny without asking Cedar. A scope the plan
 *   cannot read for certain keeps its policy.
 * - **The fields those policies read.** Context fields, principal and resource
 *   attributes and tags no policy of the slice names can change nothing, so
 *   they are not sent. A policy that uses `context` as a whole, or reads an
 *   attribute off an expression the plan cannot trace to `principal` or
 *   `resource`, gets everything.
 * - **Request validation, done at load.** Validating each request against the
 *   schema proves that its entity types fit the action and that its entities
 *   and context have the declared shape. Writ builds every request itself from
 *   a fixed shape, so that proof is made once: the schema must declare exactly
 *   Writ's shape, every attribute a String, Long or Bool that Writ's value
 *   already is (so the schema converts nothing, as it would a string into an
 *   `ipaddr`), and one validated probe per action must pass. Per request there
 *   remain only the entity types, checked against the action's `appliesTo`.
 *   A schema that does not fit keeps per-request validation, and full requests,
 *   for the whole set (`PlannedSet.perRequestValidation` says why).
 *
 * Whatever a plan leaves out, a policy error still denies (see engine.ts).
 */
import { cedar } from './cedar.js';

export const CEDAR_NAMESPACE = 'Writ';
export const ACTION_TYPE = `${CEDAR_NAMESPACE}::Action`;

/** Cedar's primitive types as Writ sends them; `Args` is the record of declared call arguments. */
type FieldType = 'String' | 'Long' | 'Bool' | 'Args';

/** Every context field Writ sends, with its type: the schema's `DecisionContext` must be exactly this. */
export const CONTEXT_FIELDS: Readonly<Record<string, FieldType>> = {
  stage: 'String',
  environment: 'String',
  actorType: 'String',
  intent: 'String',
  purpose: 'String',
  sensitivity: 'String',
  tier: 'String',
  risk: 'Long',
  riskLevel: 'String',
  delegationDepth: 'Long',
  breakGlass: 'Bool',
  approval: 'String',
  hour: 'Long',
  weekday: 'Long',
  args: 'Args',
};
/** Attributes of a principal entity (all strings); its registry labels are its tags. */
export const PRINCIPAL_ATTRIBUTES = ['owner', 'environment', 'actorType'] as const;
/** Attributes of a resource entity (all strings). */
export const RESOURCE_ATTRIBUTES = ['kind', 'sensitivity', 'tier'] as const;
export const PRINCIPAL_TYPES = { agent: `${CEDAR_NAMESPACE}::Agent`, service: `${CEDAR_NAMESPACE}::Service`, human: `${CEDAR_NAMESPACE}::Human` } as const;

/** What the policies of one slice read; `undefined` means everything. */
export interface ReadSet {
  readonly context: ReadonlySet<string> | undefined;
  readonly principal: ReadonlySet<string> | undefined;
  readonly resource: ReadonlySet<string> | undefined;
  /** True when some policy reads a tag (`hasTag`, `getTag`). */
  readonly tags: boolean;
}

export interface RequestPlan {
  readonly action: string;
  /** The preparsed policy set to decide with, or undefined when no policy can apply (a deny without Cedar). */
  readonly preparsedId: string | undefined;
  /** The policies of the slice, sorted. */
  readonly policyIds: readonly string[];
  /**
   * The action entity with every action group it is in, directly or not, for
   * Cedar's `action in`; undefined when no policy of the slice asks (its
   * scopes that hold for this action are preparsed as `action`, any).
   */
  readonly actionEntity: cedar.EntityJson | undefined;
  /** Entity types the schema lets this action apply to. */
  readonly principalTypes: ReadonlySet<string>;
  readonly resourceTypes: ReadonlySet<string>;
  readonly reads: ReadSet;
}

/** Policy text and its JSON form (cedar.policyToJson), as the loader has them. */
export interface PlannedPolicy {
  readonly id: string;
  readonly text: string;
  readonly json: cedar.PolicyJson;
}

export interface PlannedSet {
  /** The plan for `action` in `environment`, or undefined when the action is in no tier group. */
  planFor(environment: string, action: string): RequestPlan | undefined;
  /**
   * Why each request is validated against the schema, and sent whole, instead
   * of the proof made once at load; undefined when the schema fits Writ's shape.
   * INVARIANT: when set, the engine validates every request (preparsed schema
   * `schemaId`) and sends every field.
   */
  readonly perRequestValidation: string | undefined;
  readonly schemaId: string;
}

type SchemaType = {
  type: string;
  name?: string;
  attributes?: Record<string, SchemaType & { required?: boolean }>;
  additionalAttributes?: boolean;
  element?: SchemaType;
};
interface ActionJson {
  memberOf?: { id: string; type?: string }[];
  appliesTo?: { principalTypes?: string[]; resourceTypes?: string[]; context?: SchemaType };
}
export interface NamespaceJson {
  commonTypes?: Record<string, SchemaType>;
  entityTypes?: Record<string, { shape?: SchemaType; tags?: SchemaType; memberOfTypes?: string[]; enum?: string[] }>;
  actions?: Record<string, ActionJson>;
}

/**
 * Plans every tiered action for the set's own policies and for each
 * environment with policies of its own, preparsing one Cedar set per slice
 * under `${compiledId}/<environment or "*">/<action>` and the schema under
 * `compiledId`.
 * @throws Error when Cedar refuses to preparse what the loader already validated.
 */
export function planRequests(options: {
  readonly compiledId: string;
  readonly schemaText: string;
  readonly namespace: NamespaceJson | undefined;
  readonly actions: Iterable<string>;
  /** Entity types a resource can have (the catalog's kinds and the untyped one), unqualified. */
  readonly resourceTypes: Iterable<string>;
  /** Policies for every environment. */
  readonly everywhere: readonly PlannedPolicy[];
  /** Each environment's own policies, added to `everywhere`. */
  readonly environments: ReadonlyMap<string, readonly PlannedPolicy[]>;
  /** Declared call arguments, name → type (see policy-set.ts). */
  readonly argTypes: ReadonlyMap<string, string>;
}): PlannedSet {
  const { compiledId, namespace } = options;
  const actions = [...options.actions];
  const schema = cedar.preparseSchema(compiledId, options.schemaText);
  if (schema.type === 'failure') throw new Error(`the schema does not preparse: ${schema.errors.map((e) => e.message).join('; ')}`);
  const perRequestValidation =
    schemaMisfit(namespace, actions, [...options.resourceTypes], options.argTypes) ?? probeMisfit(compiledId, namespace, actions, [...options.resourceTypes], options.argTypes);

  const plans = new Map<string, RequestPlan>();
  const key = (environment: string, action: string) => `${environment}\u0000${action}`;
  const slices: [string, readonly PlannedPolicy[]][] = [['*', options.everywhere]];
  for (const [environment, own] of options.environments) slices.push([environment, [...options.everywhere, ...own]]);
  for (const [environment, policies] of slices) {
    for (const action of actions) {
      const lineage = actionLineage(namespace, action);
      const applicable = policies.filter((p) => scopeMatch(p.json.action, lineage) !== 'never').sort((a, b) => (a.id < b.id ? -1 : 1));
      // A scope that surely holds for this action is written `action` (any), so
      // Cedar needs the action's groups only where a policy still asks for them.
      // INVARIANT: only a policy whose JSON form is exact is sent as JSON. A
      // literal past 2^53 does not survive JSON.parse, so that one keeps its text.
      const sliced: cedar.Policy[] = applicable.map((p) =>
        scopeMatch(p.json.action, lineage) === 'always' && (p.json.action as ScopeJson).op !== 'All' && numbersAreExact(p.json) ? { ...p.json, action: { op: 'All' } } : p.text,
      );
      const asksForAction = applicable.some((p, i) => typeof sliced[i] === 'string' && (p.json.action as ScopeJson).op !== 'All') || mentionsVariable(applicable.map((p) => p.json), 'action');
      let preparsedId: string | undefined;
      if (applicable.length > 0) {
        preparsedId = `${compiledId}/${environment}/${action}`;
        const loaded = cedar.preparsePolicySet(preparsedId, { staticPolicies: Object.fromEntries(applicable.map((p, i) => [p.id, sliced[i]!])) });
        if (loaded.type === 'failure') throw new Error(`policies do not preparse: ${loaded.errors.map((e) => e.message).join('; ')}`);
      }
      const appliesTo = namespace?.actions?.[action]?.appliesTo;
      plans.set(key(environment, action), {
        action,
        preparsedId,
        policyIds: applicable.map((p) => p.id),
        actionEntity: asksForAction ? { uid: { type: ACTION_TYPE, id: action }, attrs: {}, parents: [...lineage].filter((a) => a !== action).sort().map((id) => ({ type: ACTION_TYPE, id })) } : undefined,
        principalTypes: new Set((appliesTo?.principalTypes ?? []).map(qualify)),
        resourceTypes: new Set((appliesTo?.resourceTypes ?? []).map(qualify)),
        reads: perRequestValidation === undefined ? readSetOf(applicable) : EVERYTHING,
      });
    }
  }
  const own = new Set(options.environments.keys());
  return {
    planFor: (environment, action) => plans.get(key(own.has(environment) ? environment : '*', action)),
    perRequestValidation,
    schemaId: compiledId,
  };
}

/** Schema JSON types that are not a reference to a common type. */
const STRUCTURAL_TYPES = new Set(['Record', 'Set', 'Entity', 'Extension', 'String', 'Long', 'Boolean']);

const EVERYTHING: ReadSet = { context: undefined, principal: undefined, resource: undefined, tags: true };

function qualify(type: string): string {
  return type.includes('::') ? type : `${CEDAR_NAMESPACE}::${type}`;
}

/** The action and every action group it is in, directly or through other groups. */
function actionLineage(namespace: NamespaceJson | undefined, action: string): ReadonlySet<string> {
  const lineage = new Set<string>();
  const visit = (name: string): void => {
    if (lineage.has(name)) return;
    lineage.add(name);
    for (const parent of namespace?.actions?.[name]?.memberOf ?? []) visit(parent.id);
  };
  visit(action);
  return lineage;
}

type ScopeJson = { op: string; entity?: { type?: string; id?: string }; entities?: { type?: string; id?: string }[] };

/**
 * Whether an action scope holds for the head of `lineage`: `always`, `never`,
 * or `maybe` when the plan cannot tell for certain (the policy is kept as written).
 */
function scopeMatch(scope: unknown, lineage: ReadonlySet<string>): 'always' | 'never' | 'maybe' {
  const { op, entity, entities } = (scope ?? {}) as ScopeJson;
  const named = (uid: { type?: string; id?: string } | undefined): string | undefined => (uid?.type === ACTION_TYPE && typeof uid.id === 'string' ? uid.id : undefined);
  if (op === 'All') return 'always';
  if (op === '==') {
    const id = named(entity);
    if (id === undefined) return 'maybe';
    // INVARIANT: the head of the lineage is the action itself (insertion order).
    return id === lineage.values().next().value ? 'always' : 'never';
  }
  if (op === 'in') {
    const ids = (entities ?? (entity === undefined ? [] : [entity])).map(named);
    if (ids.some((id) => id !== undefined && lineage.has(id))) return 'always';
    return ids.every((id) => id !== undefined) ? 'never' : 'maybe';
  }
  return 'maybe';
}

/** True when every number in `node` is a safe integer, so JSON held it exactly. */
function numbersAreExact(node: unknown): boolean {
  if (typeof node === 'number') return Number.isSafeInteger(node);
  if (typeof node !== 'object' || node === null) return true;
  return Object.values(node).every(numbersAreExact);
}

/** True when some policy's conditions use the variable `name`. */
function mentionsVariable(policies: readonly cedar.PolicyJson[], name: string): boolean {
  const walk = (node: unknown): boolean => {
    if (Array.isArray(node)) return node.some(walk);
    if (typeof node !== 'object' || node === null) return false;
    return Object.entries(node).some(([key, value]) => (key === 'Var' ? value === name : key !== 'Value' && walk(value)));
  };
  return policies.some((policy) => walk(policy.conditions ?? []));
}

/** What the policies read off `context`, `principal` and `resource` (see the module comment). */
export function readSetOf(policies: readonly PlannedPolicy[]): ReadSet {
  const context = new Set<string>();
  const principal = new Set<string>();
  const resource = new Set<string>();
  let wholeContext = false;
  let anyEntity = false;
  let tags = false;
  const walk = (node: unknown, underAccess: boolean): void => {
    if (Array.isArray(node)) {
      for (const item of node) walk(item, false);
      return;
    }
    if (typeof node !== 'object' || node === null) return;
    const record = node as Record<string, unknown>;
    for (const [op, value] of Object.entries(record)) {
      if (op === 'Var') {
        if (value === 'context' && !underAccess) wholeContext = true;
        continue;
      }
      if (op === 'Value') continue; // a literal: entity references in it carry no attributes
      if (op === 'hasTag' || op === 'getTag') tags = true;
      if ((op === '.' || op === 'has') && typeof value === 'object' && value !== null) {
        const { left, attr } = value as { left?: unknown; attr?: unknown };
        const variable = (left as { Var?: unknown } | undefined)?.Var;
        if (typeof attr !== 'string') anyEntity = true;
        else if (variable === 'context') context.add(attr);
        else if (variable === 'principal') principal.add(attr);
        else if (variable === 'resource') resource.add(attr);
        else if (!isContextPath(left)) anyEntity = true; // an entity from anywhere else: read every attribute
        walk(left, true);
        continue;
      }
      walk(value, false);
    }
  };
  for (const policy of policies) {
    walk(policy.json.conditions ?? [], false);
  }
  return {
    context: wholeContext ? undefined : context,
    principal: anyEntity ? undefined : principal,
    resource: anyEntity ? undefined : resource,
    tags,
  };
}

/** True for `context.a.b…`: Writ's context holds no entities, so reading off it reads no entity. */
function isContextPath(node: unknown): boolean {
  const access = (node as { '.'?: { left?: unknown } } | undefined)?.['.'];
  if (access === undefined) return false;
  const left = access.left as { Var?: unknown } | undefined;
  return left?.Var === 'context' || isContextPath(left);
}

/**
 * Why the schema does not declare exactly the shape Writ sends, or undefined
 * when it does: for each action, principal types among Agent/Service/Human
 * with owner, environment and actorType Strings and String tags; resource
 * types with kind, sensitivity and tier Strings; the context exactly
 * CONTEXT_FIELDS, its `args` a record of optional Long/String/Bool.
 */
function schemaMisfit(namespace: NamespaceJson | undefined, actions: readonly string[], resourceTypes: readonly string[], argTypes: ReadonlyMap<string, string>): string | undefined {
  if (namespace === undefined) return `the schema has no ${CEDAR_NAMESPACE} namespace`;
  const resolve = (type: SchemaType | undefined, depth = 0): SchemaType | undefined => {
    if (type === undefined || depth > 8) return undefined;
    // A reference is `{type: "EntityOrCommon", name}` or the common type's name itself as `type`.
    const name = type.type === 'EntityOrCommon' || type.type === 'CommonType' ? type.name : STRUCTURAL_TYPES.has(type.type) ? undefined : type.type;
    if (name === undefined) return type;
    const bare = name.replace(/^(__cedar|Writ)::/, '');
    if (namespace.commonTypes !== undefined && Object.hasOwn(namespace.commonTypes, bare)) return resolve(namespace.commonTypes[bare], depth + 1);
    return { type: bare };
  };
  const primitive = (type: SchemaType | undefined): string | undefined => {
    const resolved = resolve(type)?.type;
    return resolved === 'Boolean' ? 'Bool' : resolved;
  };
  const recordOf = (type: SchemaType | undefined, expected: Readonly<Record<string, string>>, optional: boolean, what: string): string | undefined => {
    const record = resolve(type);
    if (record?.type !== 'Record' || record.additionalAttributes === true) return `${what} is not a closed record`;
    const attributes = record.attributes ?? {};
    const names = Object.keys(attributes).sort();
    const wanted = Object.keys(expected).sort();
    if (!optional && names.join() !== wanted.join()) return `${what} declares ${names.join(', ') || 'nothing'}, Writ sends ${wanted.join(', ')}`;
    for (const name of names) {
      const attribute = attributes[name]!;
      if (optional !== (attribute.required === false)) return `${what}.${name} must be ${optional ? 'optional' : 'required'}`;
      const want = expected[name];
      if (want === undefined) return `${what}.${name} is not something Writ sends`;
      if (want === 'Args') {
        const argsProblem = recordOf(attribute, Object.fromEntries(argTypes), true, `${what}.args`);
        if (argsProblem !== undefined) return argsProblem;
      } else if (primitive(attribute) !== want) return `${what}.${name} is ${primitive(attribute) ?? 'unknown'}, Writ sends a ${want}`;
    }
    return undefined;
  };
  for (const [name, type] of argTypes) {
    if (type !== 'Long' && type !== 'String' && type !== 'Bool') return `argument ${name} is a ${type}; Writ checks Long, String and Bool arguments itself`;
  }
  const strings = (names: readonly string[]) => Object.fromEntries(names.map((n) => [n, 'String']));
  const entityProblem = (type: string, attributes: readonly string[], tagged: boolean): string | undefined => {
    const declared = namespace.entityTypes?.[type];
    if (declared === undefined || declared.enum !== undefined) return `${type} is not a declared entity type with attributes`;
    const shapeProblem = recordOf(declared.shape ?? { type: 'Record', attributes: {} }, strings(attributes), false, type);
    if (shapeProblem !== undefined) return shapeProblem;
    if (tagged && primitive(declared.tags) !== 'String') return `${type} must have String tags (the identity's labels)`;
    if (!tagged && declared.tags !== undefined) return `${type} has tags, Writ sends none`;
    return undefined;
  };
  const checked = new Set<string>();
  for (const action of actions) {
    const declared = namespace.actions?.[action];
    for (const parent of declared?.memberOf ?? []) {
      if (parent.type !== undefined && qualify(parent.type) !== ACTION_TYPE) return `action ${action} is in an action group of another type (${parent.type})`;
    }
    const appliesTo = declared?.appliesTo;
    if (appliesTo === undefined) return `action ${action} applies to nothing`;
    const contextProblem = recordOf(appliesTo.context, CONTEXT_FIELDS, false, `the context of ${action}`);
    if (contextProblem !== undefined) return contextProblem;
    for (const type of appliesTo.principalTypes ?? []) {
      const bare = type.replace(/^Writ::/, '');
      if (!Object.values(PRINCIPAL_TYPES).includes(qualify(bare) as never)) continue; // Writ never sends it: the type check denies
      if (!checked.has(bare)) {
        checked.add(bare);
        const problem = entityProblem(bare, PRINCIPAL_ATTRIBUTES, true);
        if (problem !== undefined) return problem;
      }
    }
  }
  for (const type of resourceTypes) {
    const problem = entityProblem(type, RESOURCE_ATTRIBUTES, false);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/**
 * One validated request per action, with every field and argument, then none
 * of the arguments: Cedar's own word that the schema takes Writ's shape.
 */
function probeMisfit(schemaId: string, namespace: NamespaceJson | undefined, actions: readonly string[], resourceTypes: readonly string[], argTypes: ReadonlyMap<string, string>): string | undefined {
  const probeSet = `${schemaId}/probe`;
  const loaded = cedar.preparsePolicySet(probeSet, { staticPolicies: {} });
  if (loaded.type === 'failure') return `the probe set does not preparse: ${loaded.errors.map((e) => e.message).join('; ')}`;
  const sample: Record<FieldType, cedar.CedarValueJson> = { String: 'probe', Long: 1, Bool: false, Args: {} };
  const allArgs = Object.fromEntries([...argTypes].map(([name, type]) => [name, sample[type as FieldType]]));
  try {
    const ours = new Set<string>(Object.values(PRINCIPAL_TYPES));
    const resources = new Set(resourceTypes.map(qualify));
    for (const action of actions) {
      const appliesTo = namespace?.actions?.[action]?.appliesTo;
      const principalType = (appliesTo?.principalTypes ?? []).map(qualify).find((t) => ours.has(t));
      const resourceType = (appliesTo?.resourceTypes ?? []).map(qualify).find((t) => resources.has(t));
      // Nothing Writ sends fits this action: every request for it is denied on its entity types.
      if (principalType === undefined || resourceType === undefined) continue;
      for (const args of [allArgs, {}]) {
        const context = Object.fromEntries(Object.entries(CONTEXT_FIELDS).map(([name, type]) => [name, type === 'Args' ? args : sample[type]]));
        const principal = { type: principalType, id: 'probe' };
        const resource = { type: resourceType, id: 'probe:x' };
        const answer = cedar.statefulIsAuthorized({
          principal,
          action: { type: ACTION_TYPE, id: action },
          resource,
          context,
          entities: [
            { uid: principal, attrs: Object.fromEntries(PRINCIPAL_ATTRIBUTES.map((a) => [a, 'probe'])), parents: [], tags: { probe: 'probe' } },
            { uid: resource, attrs: Object.fromEntries(RESOURCE_ATTRIBUTES.map((a) => [a, 'probe'])), parents: [] },
          ],
          preparsedPolicySetId: probeSet,
          preparsedSchemaName: schemaId,
          validateRequest: true,
        });
        if (answer.type === 'failure') return `a request for ${action} does not validate: ${answer.errors.map((e) => e.message).join('; ')}`;
      }
    }
  } catch (error) {
    return `the probe threw: ${(error as Error).message}`;
  }
  return undefined;
}
