/**
 * Loading a policy set from a folder kept in git:
 *
 *   schema.cedarschema           Cedar schema: entity types, actions grouped by tier
 *   *.cedar                      policies for every environment; `@id("...")`
 *                                names a policy, else `file.cedar#N`
 *   environments/<env>/*.cedar   policies only for tasks in <env> (production
 *                                stricter than sandbox), added to the ones above
 *   resources.yaml               the resource catalog (kinds, sensitivity, tier)
 *
 * The set is parsed, validated against the schema (strict mode) and given a
 * version: a hash over every file, so each grant and audit record can name
 * the exact policies that decided it. An invalid set is refused whole. Policy
 * ids are unique across the whole folder, so an id in an audit record names
 * one policy whatever the environment.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cedar } from './cedar.js';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { WritError } from '../core/errors.js';
import { isValidAction } from '../core/scope.js';
import { isTier, tierRank, type Tier } from '../core/types.js';
import { catalogSchema, createResourceCatalog, UNTYPED_RESOURCE, type ResourceCatalog } from './catalog.js';
import { CEDAR_NAMESPACE, planRequests, schemaTypes, type NamespaceJson, type PlannedPolicy, type RequestPlan } from './request-plan.js';

export { CEDAR_NAMESPACE };
export const SCHEMA_FILE = 'schema.cedarschema';
export const CATALOG_FILE = 'resources.yaml';
export const ENVIRONMENTS_DIR = 'environments';

export interface LoadedPolicy {
  readonly id: string;
  readonly file: string;
  readonly text: string;
  readonly effect: 'permit' | 'forbid';
  readonly annotations: Readonly<Record<string, string>>;
  /** Set for a policy under `environments/<env>/`: it applies only to tasks in that environment. */
  readonly environment?: string;
}

export interface PolicySet {
  /** `sha256:` + 32 hex characters (128 bits) over every file of the set: each file's name and the SHA-256 of its bytes. */
  readonly version: string;
  readonly dir: string;
  readonly schemaText: string;
  readonly policies: ReadonlyMap<string, LoadedPolicy>;
  /** Tier of every action a scope may name (actions reachable from a tier group). */
  readonly actionTiers: ReadonlyMap<string, Tier>;
  /**
   * Task-level actions: in no tier group, applying to the `Task` resource type
   * (`approve`, `delegate`, `break_glass` in the default schema). Decided by
   * `engine.decideTaskAction`, never held as a scope.
   */
  readonly taskActions: ReadonlySet<string>;
  readonly catalog: ResourceCatalog;
  /**
   * The call arguments the schema declares (`context.args`), name → Cedar type
   * (`Long`, `String`, `Bool`, or another type Cedar checks itself). Only these
   * reach policy; empty when the schema declares no `args`.
   */
  readonly argTypes: ReadonlyMap<string, string>;
  /** Environments with policies of their own (a folder under `environments/`). */
  readonly environments: readonly string[];
  /** The id this load's policy sets and schema were preparsed under (its schema's id). */
  readonly compiledId: string;
  /**
   * What a decision for `action` by a task in `environment` sends Cedar (see
   * request-plan.ts): the policies that can apply and the fields they read.
   * Undefined for an action in no tier group.
   */
  planFor(environment: string, action: string): RequestPlan | undefined;
  /**
   * Undefined when the schema declares exactly the request shape Writ sends,
   * so requests are proven valid once, at load. Otherwise why not: each
   * request is then validated against the schema and sent whole.
   */
  readonly perRequestValidation: string | undefined;
}

/** A problem in one file, with a 1-based line and column (in characters) when known. */
export interface PolicyProblem {
  readonly file: string;
  readonly line?: number;
  readonly column?: number;
  readonly message: string;
  /** Cedar's suggestion, when it has one (`did you mean ...?`). */
  readonly help?: string;
}

export interface LoadOptions {
  /**
   * Where to compile the set in Cedar's preparsed-set table (ids `slot`,
   * `slot/<env>`), replacing what an earlier load put there. A long-running
   * process reloading its folder passes a small ring of slots so memory stays
   * bounded; the caller must not reuse a slot an engine still decides with.
   * Default: a new id per load (fine for short-lived processes and tests).
   */
  readonly slot?: string;
  /**
   * A folder whose schema.cedarschema and resources.yaml are used when `dir`
   * has none of its own: the break-glass set decides over the same schema and
   * catalog as the set beside it, with policies of its own.
   */
  readonly inherit?: string;
}

let loads = 0;
/** At most this many environment folders: each is compiled as a set of its own. */
const MAX_ENVIRONMENT_FOLDERS = 32;

/**
 * Loads and validates the set in `dir`.
 * @throws WritError ERR_POLICY_INVALID with `extensions.problems` (file, line, message).
 */
export function loadPolicySet(dir: string, options: LoadOptions = {}): PolicySet {
  const problems: PolicyProblem[] = [];
  const sharedFile = (name: string) => (options.inherit !== undefined && !existsSync(join(dir, name)) ? join(options.inherit, name) : join(dir, name));
  const schemaPath = sharedFile(SCHEMA_FILE);
  if (!existsSync(schemaPath)) throw invalid([{ file: SCHEMA_FILE, message: `missing ${schemaPath}` }]);
  const schemaText = readFileSync(schemaPath, 'utf8');
  // checkParseSchema places errors in the schema text; schemaToJson's may point at offset 0.
  const schemaCheck = cedar.checkParseSchema(schemaText);
  if (schemaCheck.type === 'failure') {
    throw invalid(schemaCheck.errors.map((e) => ({ file: SCHEMA_FILE, ...positionAtByte(schemaText, e.sourceLocations?.[0]?.start), ...describe(e) })));
  }
  const schemaJson = cedar.schemaToJson(schemaText);
  if (schemaJson.type === 'failure') {
    throw invalid(schemaJson.errors.map((e) => ({ file: SCHEMA_FILE, ...positionAtByte(schemaText, e.sourceLocations?.[0]?.start), ...describe(e) })));
  }

  const files = policyFiles(dir, problems);
  const policies = new Map<string, LoadedPolicy>();
  const planned = new Map<string, PlannedPolicy>();
  // Where each policy starts in its file (a character index), to place validation errors.
  const starts = new Map<string, number>();
  // Each file enters the version as its name and the SHA-256 of its bytes, so no
  // split of the same bytes across other files gives the same version.
  const hash = createHash('sha256');
  const addFile = (name: string, text: string): void => {
    hash.update(`${JSON.stringify(name)} ${createHash('sha256').update(text, 'utf8').digest('hex')}\n`);
  };
  addFile(SCHEMA_FILE, schemaText);
  for (const { file, environment } of files) {
    const text = readFileSync(join(dir, file), 'utf8');
    addFile(file, text);
    const parts = tooDeep(() => cedar.policySetTextToParts(text));
    if (parts === undefined) {
      problems.push({ file, message: TOO_DEEP });
      continue;
    }
    if (parts.type === 'failure') {
      for (const e of parts.errors) problems.push({ file, ...positionAtByte(text, e.sourceLocations?.[0]?.start), ...describe(e) });
      continue;
    }
    if (parts.policy_templates.length > 0) problems.push({ file, message: 'templates are not supported; write static policies' });
    let cursor = 0;
    parts.policies.forEach((policyText, index) => {
      // Cedar hands back each policy as a slice of the file, in order.
      const found = text.indexOf(policyText, cursor);
      const start = found < 0 ? undefined : found;
      if (start !== undefined) cursor = start + policyText.length;
      const at = positionAtIndex(text, start);
      const json = tooDeep(() => cedar.policyToJson(policyText));
      if (json === undefined) {
        problems.push({ file, ...at, message: TOO_DEEP });
        return;
      }
      if (json.type === 'failure') {
        problems.push({ file, ...at, message: json.errors.map((e) => e.message).join('; ') });
        return;
      }
      const annotations = json.json.annotations ?? {};
      const id = annotations.id ?? `${file}#${index + 1}`;
      const approvalProblem = checkApprovalAnnotation(json.json.effect, annotations);
      if (approvalProblem !== undefined) problems.push({ file, ...at, message: `${id}: ${approvalProblem}` });
      if (policies.has(id)) {
        problems.push({ file, ...at, message: `duplicate policy id ${JSON.stringify(id)}` });
        return;
      }
      policies.set(id, { id, file, text: policyText, effect: json.json.effect, annotations, ...(environment === undefined ? {} : { environment }) });
      planned.set(id, { id, text: policyText, json: json.json });
      if (start !== undefined) starts.set(id, start);
    });
  }

  const catalogPath = sharedFile(CATALOG_FILE);
  let catalogDocument: unknown = {};
  let catalogYaml: YamlWithPositions | undefined;
  if (existsSync(catalogPath)) {
    const text = readFileSync(catalogPath, 'utf8');
    addFile(CATALOG_FILE, text);
    catalogYaml = parseYamlWithPositions(text);
    if (catalogYaml.problems.length > 0) problems.push(...catalogYaml.problems.map((p) => ({ file: CATALOG_FILE, ...p })));
    else catalogDocument = catalogYaml.value ?? {};
  }
  const catalog = catalogSchema.safeParse(catalogDocument);
  if (!catalog.success) {
    for (const issue of catalog.error.issues) {
      problems.push({ file: CATALOG_FILE, ...catalogYaml?.positionOf(issue.path), message: `${issue.path.join('.')}: ${issue.message}` });
    }
  }
  if (catalog.success) {
    const schemaEntityTypes = new Set(Object.keys(schemaJson.json[CEDAR_NAMESPACE]?.entityTypes ?? {}));
    for (const [kind, type] of Object.entries(catalog.data.kinds)) {
      if (!schemaEntityTypes.has(type)) problems.push({ file: CATALOG_FILE, ...catalogYaml?.positionOf(['kinds', kind]), message: `kinds.${kind}: ${type} is not an entity type of the schema` });
    }
    if (!schemaEntityTypes.has(UNTYPED_RESOURCE)) problems.push({ file: SCHEMA_FILE, message: `the schema must declare entity ${UNTYPED_RESOURCE}, the type of resources whose kind the catalog does not type` });
  }
  if (problems.length > 0) throw invalid(problems);

  const staticPolicies = Object.fromEntries([...policies.values()].map((p) => [p.id, p.text]));
  const validation = tooDeep(() => cedar.validate({ schema: schemaText, policies: { staticPolicies }, validationSettings: { mode: 'strict' } }));
  if (validation === undefined) {
    // Which ones: each policy alone (only on this failure path).
    const deep = [...policies.values()].filter((p) => tooDeep(() => cedar.validate({ schema: schemaText, policies: { staticPolicies: { [p.id]: p.text } }, validationSettings: { mode: 'strict' } })) === undefined);
    throw invalid(deep.length === 0 ? [{ file: '?', message: TOO_DEEP }] : deep.map((p) => ({ file: p.file, ...positionAtIndex(readFileSync(join(dir, p.file), 'utf8'), starts.get(p.id)), message: `${p.id}: ${TOO_DEEP}` })));
  }
  if (validation.type === 'failure') {
    throw invalid(validation.errors.map((e) => ({ file: SCHEMA_FILE, ...positionAtByte(schemaText, e.sourceLocations?.[0]?.start), ...describe(e) })));
  }
  for (const e of validation.validationErrors) {
    const policy = policies.get(e.policyId);
    problems.push({
      file: policy?.file ?? '?',
      ...(policy ? locate(dir, policy, starts.get(policy.id), e.error.sourceLocations?.[0]?.start) : {}),
      ...describe(e.error),
      message: `${e.policyId}: ${e.error.message}`,
    });
  }
  if (problems.length > 0) throw invalid(problems);

  const version = `sha256:${hash.digest('hex').slice(0, 32)}`;
  const actionTiers = deriveActionTiers(schemaJson.json[CEDAR_NAMESPACE]?.actions ?? {});
  const taskActions = deriveTaskActions(schemaJson.json[CEDAR_NAMESPACE]?.actions ?? {}, actionTiers);
  // INVARIANT: Cedar keeps preparsed sets in one table per thread, by id. Each
  // load compiles under an id of its own (or its caller's slot, reused only
  // once that slot's engine is retired), so loading a set never changes what an
  // engine already serving evaluates, even one with the same version.
  const compiled = options.slot ?? `load-${++loads}`;
  const environments = [...new Set(files.flatMap((f) => (f.environment === undefined ? [] : [f.environment])))].sort();
  const inEnvironment = (environment: string | undefined) => [...policies.values()].filter((p) => p.environment === environment).map((p) => planned.get(p.id)!);
  const namespace = schemaJson.json[CEDAR_NAMESPACE] as NamespaceJson | undefined;
  const resourceCatalog = createResourceCatalog(catalog.data as NonNullable<typeof catalog.data>);
  const argTypes = declaredArgs(namespace);
  let plans: ReturnType<typeof planRequests>;
  try {
    plans = planRequests({
      compiledId: compiled,
      schemaText,
      schemaJson: schemaJson.json as Record<string, NamespaceJson>,
      actions: actionTiers.keys(),
      taskActions,
      resourceTypes: resourceCatalog.entityTypes,
      everywhere: inEnvironment(undefined),
      environments: new Map(environments.map((environment) => [environment, inEnvironment(environment)])),
      argTypes,
    });
  } catch (error) {
    throw invalid([{ file: '?', message: (error as Error).message }]);
  }

  return {
    version,
    dir,
    schemaText,
    policies,
    actionTiers,
    taskActions,
    catalog: resourceCatalog,
    argTypes,
    environments,
    compiledId: compiled,
    planFor: plans.planFor,
    perRequestValidation: plans.perRequestValidation,
  };
}


/** The attributes of `context.args` in the read action's context, with their types. */
function declaredArgs(namespace: NamespaceJson | undefined): Map<string, string> {
  const { resolve, primitive } = schemaTypes(namespace);
  const context = resolve(namespace?.actions?.read?.appliesTo?.context);
  const args = resolve(context?.attributes?.args);
  const result = new Map<string, string>();
  for (const [name, type] of Object.entries(args?.attributes ?? {})) result.set(name, primitive(type) ?? 'unknown');
  return result;
}

/** The `*.cedar` files of one folder, sorted; a `.cedar` entry that is not a file is a problem. */
function cedarFiles(dir: string, where: string, problems: PolicyProblem[]): string[] {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.cedar'))
    .sort()
    .filter((name) => {
      if (statSync(join(dir, name)).isFile()) return true;
      problems.push({ file: where === '' ? name : `${where}/${name}`, message: 'named like a policy file but not a file' });
      return false;
    });
}

/**
 * The policy files of a folder: `*.cedar` at the top (every environment) and
 * under `environments/<env>/` (that environment only), sorted so that the
 * version hash does not depend on the order the file system lists them in.
 */
function policyFiles(dir: string, problems: PolicyProblem[]): { file: string; environment?: string }[] {
  const files: { file: string; environment?: string }[] = cedarFiles(dir, '', problems).map((file) => ({ file }));
  const environmentsDir = join(dir, ENVIRONMENTS_DIR);
  if (!existsSync(environmentsDir)) return files;
  let folders = 0;
  for (const name of readdirSync(environmentsDir).sort()) {
    const where = `${ENVIRONMENTS_DIR}/${name}`;
    // Followed, not skipped: a symlinked environment folder is as much part of the set.
    if (!statSync(join(environmentsDir, name)).isDirectory()) {
      if (name.endsWith('.cedar')) problems.push({ file: where, message: `a policy file directly under ${ENVIRONMENTS_DIR}/ belongs to no environment; put it in ${ENVIRONMENTS_DIR}/<environment>/` });
      continue;
    }
    if (!/^[a-z][a-z0-9-]{0,63}$/.test(name)) {
      problems.push({ file: where, message: 'an environment folder is named like an environment: lowercase letters, digits and dashes' });
      continue;
    }
    if (++folders > MAX_ENVIRONMENT_FOLDERS) {
      problems.push({ file: where, message: `at most ${MAX_ENVIRONMENT_FOLDERS} environment folders` });
      break;
    }
    for (const file of cedarFiles(join(environmentsDir, name), where, problems)) files.push({ file: `${where}/${file}`, environment: name });
  }
  return files;
}

/**
 * An action's tier is the highest tier group it belongs to, directly or
 * through other groups. Actions outside every tier group cannot be scoped.
 */
/** Actions in no tier group whose `appliesTo` names the `Task` resource type. */
function deriveTaskActions(actions: Record<string, { appliesTo?: { resourceTypes?: string[] } }>, tiers: ReadonlyMap<string, Tier>): Set<string> {
  const found = new Set<string>();
  for (const [name, action] of Object.entries(actions)) {
    if (tiers.has(name)) continue;
    const types = action.appliesTo?.resourceTypes ?? [];
    if (types.some((t) => t === 'Task' || t === `${CEDAR_NAMESPACE}::Task`)) found.add(name);
  }
  return found;
}

function deriveActionTiers(actions: Record<string, { memberOf?: { id: string; type?: string }[] }>): Map<string, Tier> {
  const tiers = new Map<string, Tier>();
  const resolve = (name: string, seen: Set<string>): Tier | undefined => {
    if (seen.has(name)) return undefined;
    seen.add(name);
    let best: Tier | undefined = isTier(name) ? name : undefined;
    for (const parent of actions[name]?.memberOf ?? []) {
      const tier = resolve(parent.id, seen);
      if (tier !== undefined && (best === undefined || tierRank(tier) > tierRank(best))) best = tier;
    }
    return best;
  };
  for (const name of Object.keys(actions)) {
    const tier = resolve(name, new Set());
    if (tier !== undefined && isValidAction(name)) tiers.set(name, tier);
  }
  return tiers;
}

/**
 * `@approval("required")` turns a permit into "allowed only with a human's
 * approval". A near miss (`@approval`, `@Approval(...)`, another value) would
 * silently make the permit unconditional, so anything but the exact form is
 * refused, as is the annotation on a forbid, where it means nothing.
 */
function checkApprovalAnnotation(effect: 'permit' | 'forbid', annotations: Readonly<Record<string, string>>): string | undefined {
  for (const [key, value] of Object.entries(annotations)) {
    if (key.toLowerCase() !== 'approval') continue;
    if (key !== 'approval' || value !== 'required') return `write the approval annotation exactly as @approval("required"), not @${key}(${JSON.stringify(value)})`;
    if (effect === 'forbid') return '@approval("required") belongs on a permit; a forbid always denies';
  }
  return undefined;
}

const TOO_DEEP = 'a policy nests too deeply for Cedar to read (its parser ran out of stack); split the condition into several policies or shorter expressions';

/** `read()`, or undefined when Cedar ran out of stack on a deeply nested policy (a RangeError out of wasm). */
function tooDeep<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch (error) {
    if (error instanceof RangeError) return undefined;
    throw error;
  }
}

/** The message and Cedar's help of an error, without empty help. */
function describe(error: { message: string; help: string | null }): { message: string; help?: string } {
  return error.help === null || error.help === '' ? { message: error.message } : { message: error.message, help: error.help };
}

/** 1-based line and column (in characters) of a character index into `text`. */
function positionAtIndex(text: string, index: number | undefined): SourcePosition {
  if (index === undefined || index < 0 || index > text.length) return {};
  const before = text.slice(0, index);
  const lineStart = before.lastIndexOf('\n') + 1;
  return { line: before.split('\n').length, column: [...before.slice(lineStart)].length + 1 };
}

// Cedar's source locations are UTF-8 byte offsets, not JavaScript string indexes.
function positionAtByte(text: string, byteOffset: number | undefined): SourcePosition {
  if (byteOffset === undefined || byteOffset < 0) return {};
  const bytes = Buffer.from(text, 'utf8');
  if (byteOffset > bytes.length) return {};
  return positionAtIndex(text, bytes.subarray(0, byteOffset).toString('utf8').length);
}

// Validation offsets are relative to the policy's own text; map them into its file.
function locate(dir: string, policy: LoadedPolicy, start: number | undefined, byteOffset: number | undefined): SourcePosition {
  const fileText = readFileSync(join(dir, policy.file), 'utf8');
  const policyStart = start ?? fileText.indexOf(policy.text);
  if (policyStart < 0) return {};
  const inPolicy = byteOffset === undefined ? 0 : Buffer.from(policy.text, 'utf8').subarray(0, byteOffset).toString('utf8').length;
  return positionAtIndex(fileText, policyStart + inPolicy);
}

/** A 1-based line and column (in characters); absent when unknown. */
export interface SourcePosition {
  readonly line?: number;
  readonly column?: number;
}

export interface YamlWithPositions {
  /** The document as plain data; undefined when `problems` is not empty. */
  readonly value: unknown;
  /** Syntax errors (duplicate keys included), each with its position. */
  readonly problems: readonly (SourcePosition & { readonly message: string })[];
  /** Where the node at `path` starts, or its nearest existing ancestor (a missing key points at its parent). */
  positionOf(path: readonly PropertyKey[]): SourcePosition;
}

/**
 * Parses a YAML file of the policy folder (core schema, so no custom tags; at
 * most 10 aliases, against alias bombs) keeping positions, so that a schema
 * issue at a path can name its line. Never throws: errors come back as problems.
 */
export function parseYamlWithPositions(text: string): YamlWithPositions {
  const lineCounter = new LineCounter();
  const document = parseDocument(text, { schema: 'core', lineCounter, uniqueKeys: true });
  const toPosition = (offset: number): SourcePosition => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const problems: (SourcePosition & { message: string })[] = document.errors.map((e) => ({
    ...toPosition(e.pos[0]),
    // The rest of yaml's message repeats the position and quotes the source.
    message: (e.message.split('\n')[0] ?? e.message).replace(/ at line \d+, column \d+:?$/, ''),
  }));
  let value: unknown;
  if (problems.length === 0) {
    try {
      value = document.toJS({ maxAliasCount: 10 });
    } catch (error) {
      problems.push({ message: (error as Error).message });
    }
  }
  const positionOf = (path: readonly PropertyKey[]): SourcePosition => {
    // The deepest node the path reaches: a missing key points at its parent.
    for (let length = path.length; length >= 0; length--) {
      const node = document.getIn(path.slice(0, length) as unknown[], true);
      if (isNode(node) && node.range) return toPosition(node.range[0]);
    }
    return {};
  };
  return { value, problems, positionOf };
}

function invalid(problems: PolicyProblem[]): WritError {
  const detail = problems.map((p) => `${p.file}${p.line === undefined ? '' : `:${p.line}`}${p.column === undefined ? '' : `:${p.column}`}: ${p.message}`).join('\n');
  return new WritError('ERR_POLICY_INVALID', { detail, extensions: { problems } });
}
