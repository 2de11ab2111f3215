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
 *   or error. Each environment × action gets a preparsed set of the rest
 *   (compiled on the first decision that needs it; environments that add
 *   nothing for an action share one); with none left, the answer is a deny
 *   without asking Cedar. A scope the plan cannot read for certain keeps its
 *   policy, and a scope that surely holds is compiled as `action`, any.
 * - **The fields those policies read.** Context fields, principal and resource
 *   attributes and tags no policy of the slice names can change nothing, so
 *   they are not sent, and an entity nothing is read off is not sent at all
 *   (`==`, `is` and `in` read only the request's ids). The policies' JSON is
 *   walked by Cedar's grammar; anything the walk does not know, `context` used
 *   as a whole, or an attribute read off an expression it cannot trace to
 *   `principal` or `resource`, sends everything.
 * - **Request validation, done at load.** Validating each request against the
 *   schema proves that its entity types fit the action and that its entities
 *   and context have the declared shape. Writ builds every request itself from
 *   a fixed shape, so that proof is made once: the schema must be one
 *   namespace, `Writ`, that shadows none of Cedar's type names, whose action
 *   groups are all `Writ::Action`s, and that declares exactly Writ's shape,
 *   every attribute a String, Long or Bool that Writ's value already is (so
 *   the schema converts nothing, as it would a string into an `ipaddr`); and
 *   validated probes (every action, every entity type) must pass. Per request
 *   there remain only the entity types, checked against the action's
 *   `appliesTo`. A schema that does not fit keeps per-request validation, full
 *   requests and the environment's whole policy set for the whole set
 *   (`PlannedSet.perRequestValidation` says why); a slice with a policy asking
 *   for the groups of an action it names itself (`Writ::Action::"refund" in
 *   …`), which only the schema knows, is validated and sent whole too.
 *
 * Whatever a plan leaves out, a policy error still denies (see engine.ts), and
 * the engine refuses a lone surrogate in any string before planning, as Cedar
 * would refuse the whole request. test/request-plan.test.ts decides the same
 * requests both ways.
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
  /** True when some condition uses `action` (so Cedar needs its groups). */
  readonly action: boolean;
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
   * scopes that hold for this action are preparsed as `action`, any) or when
   * the request is validated (the schema then supplies the action entities).
   */
  readonly actionEntity: cedar.EntityJson | undefined;
  /** Entity types the schema lets this action apply to. */
  readonly principalTypes: ReadonlySet<string>;
  readonly resourceTypes: ReadonlySet<string>;
  readonly reads: ReadSet;
  /**
   * Why this request is validated against the schema (preparsed under the
   * set's `schemaId`) and sent whole; undefined when the load-time proof
   * covers it. Set for every plan of a set whose schema does not fit, and for
   * a slice with a policy that names an action entity (`Writ::Action::"refund"
   * in …`), whose groups only the schema knows.
   */
  readonly validated: string | undefined;
  /** Set when the slice could not be compiled: the decision is a deny with this error. */
  readonly broken?: string;
}

/** Policy text and its JSON form (cedar.policyToJson), as the loader has them. */
export interface PlannedPolicy {
  readonly id: string;
  readonly text: string;
  readonly json: cedar.PolicyJson;
}

export interface PlannedSet {
  /** The plan for `action` in `environment`, or undefined when the action is neither in a tier group nor task-level. */
  planFor(environment: string, action: string): RequestPlan | undefined;
  /**
   * Why every request of the set is validated against the schema, sent whole,
   * and decided with the environment's whole policy set, instead of the proof
   * made once at load; undefined when the schema fits Writ's shape.
   */
  readonly perRequestValidation: string | undefined;
  readonly schemaId: string;
}

export type SchemaType = {
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

/** Ids each slot's loads compiled, so a load into a reused slot can clear what the last one left. */
const compiledInSlot = new Map<string, Set<string>>();
let plannedLoads = 0;

/**
 * Empties every policy set compiled under a `compiledId` that starts with
 * `prefix` (a closing Writ's slots), so Cedar's table does not keep them.
 * An engine still deciding with one of them would then deny: call it only
 * once nothing decides with those sets.
 */
export function releaseCompiledSets(prefix: string): void {
  for (const [compiledId, ids] of compiledInSlot) {
    if (!compiledId.startsWith(prefix)) continue;
    for (const id of ids) cedar.preparsePolicySet(id, { staticPolicies: {} });
    compiledInSlot.delete(compiledId);
  }
}

/**
 * Plans every tiered action for the set's own policies and for each
 * environment with policies of its own. The schema is preparsed at once under
 * `compiledId`; each distinct slice of policies is preparsed the first time a
 * decision needs it (under `${compiledId}/<n>`), so a large set with many
 * environment folders loads in the time of one parse. Ids an earlier load
 * compiled under the same `compiledId` are cleared first.
 * @throws Error when Cedar refuses the schema the loader already validated.
 */
export function planRequests(options: {
  readonly compiledId: string;
  readonly schemaText: string;
  /** The whole schema as JSON (cedar.schemaToJson), every namespace. */
  readonly schemaJson: Readonly<Record<string, NamespaceJson>>;
  readonly actions: Iterable<string>;
  /**
   * Task-level actions (`approve`, `delegate`, `break_glass`: steps of a task's
   * life, decided on a `Task` resource). Rare, so never sliced: each is
   * validated against the schema and sent whole, with every policy of the
   * environment, the plain way.
   */
  readonly taskActions?: Iterable<string>;
  /** Entity types a resource can have (the catalog's kinds and the untyped one), unqualified. */
  readonly resourceTypes: Iterable<string>;
  /** Policies for every environment. */
  readonly everywhere: readonly PlannedPolicy[];
  /** Each environment's own policies, added to `everywhere`. */
  readonly environments: ReadonlyMap<string, readonly PlannedPolicy[]>;
  /** Declared call arguments, name → type (see policy-set.ts). */
  readonly argTypes: ReadonlyMap<string, string>;
}): PlannedSet {
  const { compiledId } = options;
  const namespace = options.schemaJson[CEDAR_NAMESPACE];
  const actions = [...options.actions];
  const resourceTypes = [...options.resourceTypes];
  for (const id of compiledInSlot.get(compiledId) ?? []) cedar.preparsePolicySet(id, { staticPolicies: {} });
  const compiled = new Set<string>();
  compiledInSlot.set(compiledId, compiled);
  // INVARIANT: slice ids carry this load's generation, so an engine of an
  // earlier load in the same slot can never compile over this one's sets.
  const generation = ++plannedLoads;
  const schema = cedar.preparseSchema(compiledId, options.schemaText);
  if (schema.type === 'failure') throw new Error(`the schema does not preparse: ${schema.errors.map((e) => e.message).join('; ')}`);
  const perRequestValidation =
    schemaMisfit(options.schemaJson, actions, resourceTypes, options.argTypes) ?? probeMisfit(compiledId, namespace, actions, resourceTypes, options.argTypes);
  compiled.add(`${compiledId}/probe`);

  // Distinct slices, by content: environments that add nothing for an action share its set.
  const slices = new Map<string, { readonly id: string; readonly policies: Record<string, cedar.Policy>; ready: boolean; broken?: string }>();
  const sliceFor = (policies: Record<string, cedar.Policy>): string => {
    const content = JSON.stringify(Object.entries(policies).map(([id, policy]) => [id, typeof policy === 'string' ? 0 : 1]));
    let slice = slices.get(content);
    if (slice === undefined) {
      slice = { id: `${compiledId}/${generation}.${slices.size}`, policies, ready: false };
      slices.set(content, slice);
    }
    return content;
  };

  const plans = new Map<string, { plan: RequestPlan; slice: string | undefined }>();
  const key = (environment: string, action: string) => `${environment}\u0000${action}`;
  const environments: [string, readonly PlannedPolicy[]][] = [['*', options.everywhere]];
  for (const [environment, own] of options.environments) environments.push([environment, [...options.everywhere, ...own]]);
  const taskActions = new Set(options.taskActions ?? []);
  for (const [environment, policies] of environments) {
    for (const action of [...actions, ...taskActions]) {
      const appliesTo = namespace?.actions?.[action]?.appliesTo;
      const types = { principalTypes: new Set((appliesTo?.principalTypes ?? []).map(qualify)), resourceTypes: new Set((appliesTo?.resourceTypes ?? []).map(qualify)) };
      let plan: Omit<RequestPlan, 'preparsedId'>;
      let members: Record<string, cedar.Policy>;
      const whole = perRequestValidation ?? (taskActions.has(action) ? 'a task-level action is validated against the schema and sent whole' : undefined);
      if (whole !== undefined) {
        // The schema is not one the plan can reason about, or the action is a task's
        // step: the plain request, every policy of the environment.
        members = Object.fromEntries([...policies].sort(byId).map((p) => [p.id, p.text]));
        plan = { action, policyIds: Object.keys(members), actionEntity: undefined, ...types, reads: EVERYTHING, validated: whole };
      } else {
        const lineage = actionLineage(namespace, action);
        const applicable = policies.filter((p) => scopeMatch(p.json.action, lineage) !== 'never').sort(byId);
        // A scope that surely holds for this action is written `action` (any), so
        // Cedar needs the action's groups only where a policy still asks for them.
        // INVARIANT: only a policy whose JSON form is exact is sent as JSON. A
        // literal past 2^53 does not survive JSON.parse, so that one keeps its text.
        const sliced: cedar.Policy[] = applicable.map((p) =>
          scopeMatch(p.json.action, lineage) === 'always' && (p.json.action as ScopeJson).op !== 'All' && numbersAreExact(p.json) && depthOf(p.json) <= MAX_JSON_DEPTH
            ? { ...p.json, action: { op: 'All' } }
            : p.text,
        );
        members = Object.fromEntries(applicable.map((p, i) => [p.id, sliced[i]!]));
        const reads = readSetOf(applicable);
        const namesAction = applicable.some((p) => namesActionEntity(p.json));
        const asksForAction = reads.action || applicable.some((p, i) => typeof sliced[i] === 'string' && (p.json.action as ScopeJson).op !== 'All');
        plan = {
          action,
          policyIds: applicable.map((p) => p.id),
          ...types,
          // Only the schema knows the groups of an action named in a policy: that slice is validated and sent whole.
          reads: namesAction ? EVERYTHING : reads,
          validated: namesAction ? 'a policy of this slice names an action entity, whose groups only the schema knows' : undefined,
          actionEntity:
            asksForAction && !namesAction ? { uid: { type: ACTION_TYPE, id: action }, attrs: {}, parents: [...lineage].filter((a) => a !== action).sort().map((id) => ({ type: ACTION_TYPE, id })) } : undefined,
        };
      }
      const slice = Object.keys(members).length === 0 ? undefined : sliceFor(members);
      plans.set(key(environment, action), { plan: { ...plan, preparsedId: slice === undefined ? undefined : slices.get(slice)!.id }, slice });
    }
  }

  const own = new Set(options.environments.keys());
  return {
    planFor: (environment, action) => {
      const found = plans.get(key(own.has(environment) ? environment : '*', action));
      if (found === undefined) return undefined;
      // A later load took this slot (or the Writ closed): this set's compiled
      // sets are emptied, so it decides nothing more. Only a retired engine gets here.
      if (compiledInSlot.get(compiledId) !== compiled) return { ...found.plan, broken: 'this policy set was replaced while deciding; ask again' };
      if (found.slice === undefined) return found.plan;
      const slice = slices.get(found.slice)!;
      if (!slice.ready) {
        slice.ready = true;
        let loaded: ReturnType<typeof cedar.preparsePolicySet>;
        try {
          loaded = cedar.preparsePolicySet(slice.id, { staticPolicies: slice.policies });
        } catch (error) {
          loaded = { type: 'failure', errors: [{ message: (error as Error).message } as never] };
        }
        compiled.add(slice.id);
        if (loaded.type === 'failure') slice.broken = `the policies for ${action} could not be compiled: ${loaded.errors.map((e) => e.message).join('; ')}`;
      }
      // INVARIANT: a slice that did not compile denies every decision that needs it.
      return slice.broken === undefined ? found.plan : { ...found.plan, broken: slice.broken };
    },
    perRequestValidation,
    schemaId: compiledId,
  };
}

/** Schema JSON types that are not a reference to a common type. */
const STRUCTURAL_TYPES = new Set(['Record', 'Set', 'Entity', 'Extension', 'String', 'Long', 'Boolean']);

const byId = (a: { id: string }, b: { id: string }): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Builtin type names: a schema that declares a type of one of these names shadows the builtin, and leaves the fast path. */
const BUILTIN_TYPES = new Set(['String', 'Long', 'Bool', 'Boolean', 'Set', 'Record', 'Entity', 'Extension', 'ipaddr', 'decimal', 'datetime', 'duration']);

const EVERYTHING: ReadSet = { context: undefined, principal: undefined, resource: undefined, tags: true, action: true };

function qualify(type: string): string {
  return type.includes('::') ? type : `${CEDAR_NAMESPACE}::${type}`;
}

/** The action and every action group it is in, directly or through other groups (the schema fits: every group is a Writ action). */
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

/**
 * Deepest a policy's JSON may nest to be compiled from JSON: Cedar's JSON
 * reader stops at 128 levels, while its text parser takes deeper conditions
 * (a long `&&` chain nests one level per term). Deeper ones keep their text.
 */
const MAX_JSON_DEPTH = 96;

function depthOf(node: unknown, depth = 0): number {
  if (typeof node !== 'object' || node === null || depth > MAX_JSON_DEPTH) return depth;
  let deepest = depth;
  for (const value of Object.values(node)) deepest = Math.max(deepest, depthOf(value, depth + 1));
  return deepest;
}

/** True when every number in `node` is a safe integer, so JSON held it exactly. */
function numbersAreExact(node: unknown): boolean {
  if (typeof node === 'number') return Number.isSafeInteger(node);
  if (typeof node !== 'object' || node === null) return true;
  return Object.values(node).every(numbersAreExact);
}

/**
 * True when the policy asks for the groups of an action entity it names
 * itself (`Writ::Action::"refund" in Writ::Action::"write"`): the left side of
 * an `in` holds an action literal. Only the schema knows that action's groups;
 * the plan sends the groups of the request's action alone. A literal elsewhere
 * (the right of `in`, `==`, `contains`) is compared by its id.
 */
function namesActionEntity(policy: cedar.PolicyJson): boolean {
  const isActionType = (type: unknown) => typeof type === 'string' && (type === 'Action' || type.endsWith('::Action'));
  const holdsActionLiteral = (node: unknown): boolean => {
    if (Array.isArray(node)) return node.some(holdsActionLiteral);
    if (typeof node !== 'object' || node === null) return false;
    const entity = (node as { __entity?: { type?: unknown } }).__entity;
    if (entity !== undefined && isActionType(entity.type)) return true;
    return Object.values(node).some(holdsActionLiteral);
  };
  const walk = (node: unknown): boolean => {
    if (Array.isArray(node)) return node.some(walk);
    if (typeof node !== 'object' || node === null) return false;
    const record = node as { in?: { left?: unknown }; is?: { left?: unknown; in?: unknown } };
    // `A in B`, and `A is T in B`: the groups of A are read.
    const inside = record.in;
    if (inside !== undefined && typeof inside === 'object' && inside !== null && 'left' in inside && holdsActionLiteral(inside.left)) return true;
    const typed = record.is;
    if (typed !== undefined && typeof typed === 'object' && typed !== null && typed.in !== undefined && holdsActionLiteral(typed.left)) return true;
    return Object.values(node).some(walk);
  };
  return walk(policy.conditions ?? []);
}

/** Binary operators of Cedar's policy JSON: `{op: {left, right}}`. */
const BINARY = new Set(['==', '!=', 'in', '<', '<=', '>', '>=', '&&', '||', '+', '-', '*', 'contains', 'containsAll', 'containsAny', 'getTag', 'hasTag']);
/** Unary operators: `{op: {arg}}`. */
const UNARY = new Set(['!', 'neg', 'isEmpty']);

/**
 * What the policies read off `context`, `principal` and `resource`, walking
 * each condition by the grammar of Cedar's policy JSON (an operator and its
 * operands; a record's keys are names, never operators). Anything the walk
 * does not know reads everything.
 */
export function readSetOf(policies: readonly PlannedPolicy[]): ReadSet {
  const context = new Set<string>();
  const principal = new Set<string>();
  const resource = new Set<string>();
  let wholeContext = false;
  let anyEntity = false;
  let tags = false;
  let action = false;
  const everything = (): void => {
    wholeContext = true;
    anyEntity = true;
    tags = true;
    action = true;
  };
  const expression = (node: unknown, accessed: boolean): void => {
    if (typeof node !== 'object' || node === null || Array.isArray(node)) return everything();
    const keys = Object.keys(node);
    if (keys.length !== 1) return everything();
    const op = keys[0]!;
    const body = (node as Record<string, unknown>)[op];
    const operands = (body ?? {}) as Record<string, unknown>;
    if (op === 'Value') return; // a literal: an entity named in it carries no data here (see namesActionEntity for actions)
    if (op === 'Var') {
      if (body === 'context' && !accessed) wholeContext = true;
      if (body === 'action') action = true;
      return;
    }
    if (op === '.' || op === 'has') {
      // `context has args.destination` is `has` with the path ["args", "destination"]: the first step is what is read.
      const attr = typeof operands.attr === 'string' ? operands.attr : Array.isArray(operands.attr) && typeof operands.attr[0] === 'string' ? operands.attr[0] : undefined;
      const variable = (operands.left as { Var?: unknown } | undefined)?.Var;
      if (attr === undefined) return everything();
      if (variable === 'context') context.add(attr);
      else if (variable === 'principal') principal.add(attr);
      else if (variable === 'resource') resource.add(attr);
      else if (!isContextPath(operands.left)) anyEntity = true; // an entity from anywhere else: read every attribute
      return expression(operands.left, true);
    }
    if (BINARY.has(op)) {
      if (op === 'getTag' || op === 'hasTag') tags = true;
      expression(operands.left, false);
      return expression(operands.right, false);
    }
    if (UNARY.has(op)) return expression(operands.arg, false);
    if (op === 'like') return expression(operands.left, false);
    if (op === 'is') {
      expression(operands.left, false);
      return operands.in === undefined ? undefined : expression(operands.in, false);
    }
    if (op === 'if-then-else') {
      for (const part of [operands.if, operands.then, operands.else]) expression(part, false);
      return;
    }
    if (op === 'Set') return Array.isArray(body) ? body.forEach((item) => expression(item, false)) : everything();
    if (op === 'Record') {
      if (typeof body !== 'object' || body === null || Array.isArray(body)) return everything();
      for (const value of Object.values(body)) expression(value, false);
      return;
    }
    // An extension function or method (`ip(...)`, `.isLoopback()`): its arguments.
    if (Array.isArray(body)) return body.forEach((item) => expression(item, false));
    return everything(); // Slot, Unknown, or an operator this walk does not know
  };
  for (const policy of policies) {
    const conditions = policy.json.conditions ?? [];
    if (!Array.isArray(conditions)) everything();
    else for (const condition of conditions) expression((condition as { body?: unknown }).body, false);
  }
  return {
    context: wholeContext ? undefined : context,
    principal: anyEntity ? undefined : principal,
    resource: anyEntity ? undefined : resource,
    tags,
    action,
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
 * Reading types of the `Writ` namespace of a schema's JSON as Cedar resolves
 * names inside it: `__cedar::X` is the builtin X; `X` or `Writ::X` is the
 * common type X, else the entity type X (`Entity`), else the builtin X. A
 * name in another namespace is an `Entity`. `primitive` gives the resolved
 * type's name, `Boolean` spelled `Bool`.
 */
export function schemaTypes(namespace: NamespaceJson | undefined): {
  resolve(type: SchemaType | undefined): SchemaType | undefined;
  primitive(type: SchemaType | undefined): string | undefined;
} {
  const resolve = (type: SchemaType | undefined, depth = 0): SchemaType | undefined => {
    if (type === undefined || depth > 8) return undefined;
    // A reference is `{type: "EntityOrCommon", name}` or the common type's name itself as `type`.
    const name = type.type === 'EntityOrCommon' || type.type === 'CommonType' ? type.name : STRUCTURAL_TYPES.has(type.type) ? undefined : type.type;
    if (name === undefined) return type;
    if (name.startsWith('__cedar::')) return { type: name.slice('__cedar::'.length) };
    const bare = name.startsWith(`${CEDAR_NAMESPACE}::`) ? name.slice(CEDAR_NAMESPACE.length + 2) : name;
    if (bare.includes('::')) return { type: 'Entity' };
    if (namespace?.commonTypes !== undefined && Object.hasOwn(namespace.commonTypes, bare)) return resolve(namespace.commonTypes[bare], depth + 1);
    if (namespace?.entityTypes !== undefined && Object.hasOwn(namespace.entityTypes, bare)) return { type: 'Entity' };
    return { type: bare };
  };
  const primitive = (type: SchemaType | undefined): string | undefined => {
    const resolved = resolve(type)?.type;
    return resolved === 'Boolean' ? 'Bool' : resolved;
  };
  return { resolve: (type) => resolve(type), primitive };
}

/**
 * Why the schema does not declare exactly the shape Writ sends, or undefined
 * when it does: for each action, principal types among Agent/Service/Human
 * with owner, environment and actorType Strings and String tags; resource
 * types with kind, sensitivity and tier Strings; the context exactly
 * CONTEXT_FIELDS, its `args` a record of optional Long/String/Bool.
 */
function schemaMisfit(schemaJson: Readonly<Record<string, NamespaceJson>>, actions: readonly string[], resourceTypes: readonly string[], argTypes: ReadonlyMap<string, string>): string | undefined {
  const namespace = schemaJson[CEDAR_NAMESPACE];
  if (namespace === undefined) return `the schema has no ${CEDAR_NAMESPACE} namespace`;
  // One namespace keeps name resolution and action groups simple enough to prove here.
  const others = Object.keys(schemaJson).filter((name) => name !== CEDAR_NAMESPACE);
  if (others.length > 0) return `the schema declares ${others.map((n) => (n === '' ? 'names outside any namespace' : `namespace ${n}`)).join(', ')}; only ${CEDAR_NAMESPACE} is planned`;
  for (const name of [...Object.keys(namespace.commonTypes ?? {}), ...Object.keys(namespace.entityTypes ?? {})]) {
    if (BUILTIN_TYPES.has(name)) return `the schema declares a type named ${name}, which shadows Cedar's own`;
  }
  for (const [name, declared] of Object.entries(namespace.actions ?? {})) {
    for (const parent of declared.memberOf ?? []) {
      if (parent.type !== undefined && parent.type !== ACTION_TYPE) return `action ${name} is in a group of type ${parent.type}; only ${ACTION_TYPE} groups are planned`;
    }
  }
  const { resolve, primitive } = schemaTypes(namespace);
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
    const covered = new Set<string>();
    for (const action of actions) {
      const appliesTo = namespace?.actions?.[action]?.appliesTo;
      const principalTypes = (appliesTo?.principalTypes ?? []).map(qualify).filter((t) => ours.has(t));
      const resourceTypesHere = (appliesTo?.resourceTypes ?? []).map(qualify).filter((t) => resources.has(t));
      // Nothing Writ sends fits this action: every request for it is denied on its entity types.
      if (principalTypes.length === 0 || resourceTypesHere.length === 0) continue;
      // Each action's context with and without arguments, and every entity type at least once.
      const probes: [string, string, Record<string, cedar.CedarValueJson>][] = [
        [principalTypes[0]!, resourceTypesHere[0]!, allArgs],
        [principalTypes[0]!, resourceTypesHere[0]!, {}],
      ];
      const pairs = Math.max(principalTypes.length, resourceTypesHere.length);
      for (let i = 0; i < pairs; i++) {
        const principalType = principalTypes[i % principalTypes.length]!;
        const resourceType = resourceTypesHere[i % resourceTypesHere.length]!;
        if (covered.has(principalType) && covered.has(resourceType)) continue;
        probes.push([principalType, resourceType, allArgs]);
      }
      for (const [principalType, resourceType, args] of probes) {
        covered.add(principalType).add(resourceType);
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
        if (answer.type === 'failure') return `a request for ${action} (${principalType}, ${resourceType}) does not validate: ${answer.errors.map((e) => e.message).join('; ')}`;
      }
    }
  } catch (error) {
    return `the probe threw: ${(error as Error).message}`;
  }
  return undefined;
}
