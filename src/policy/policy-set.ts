/**
 * Loading a policy set from a folder kept in git:
 *
 *   schema.cedarschema   Cedar schema: entity types, actions grouped by tier
 *   *.cedar              policies; `@id("...")` names a policy, else `file.cedar#N`
 *   resources.yaml       the resource catalog (sensitivity by pattern)
 *
 * The set is parsed, validated against the schema (strict mode) and given a
 * version: a hash over every file, so each grant and audit record can name
 * the exact policy that decided it. An invalid set is refused whole.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cedar } from './cedar.js';
import { parse as parseYaml } from 'yaml';
import { WritError } from '../core/errors.js';
import { isValidAction } from '../core/scope.js';
import { isTier, tierRank, type Tier } from '../core/types.js';
import { catalogSchema, createResourceCatalog, type ResourceCatalog } from './catalog.js';

export const CEDAR_NAMESPACE = 'Writ';
export const SCHEMA_FILE = 'schema.cedarschema';
export const CATALOG_FILE = 'resources.yaml';

export interface LoadedPolicy {
  readonly id: string;
  readonly file: string;
  readonly text: string;
  readonly effect: 'permit' | 'forbid';
  readonly annotations: Readonly<Record<string, string>>;
}

export interface PolicySet {
  /** `sha256:` + 16 hex characters over every file of the set. */
  readonly version: string;
  readonly dir: string;
  readonly schemaText: string;
  readonly policies: ReadonlyMap<string, LoadedPolicy>;
  /** Tier of every action a scope may name (actions reachable from a tier group). */
  readonly actionTiers: ReadonlyMap<string, Tier>;
  readonly catalog: ResourceCatalog;
}

/** A problem in one file, with a 1-based line when known. */
export interface PolicyProblem {
  readonly file: string;
  readonly line?: number;
  readonly message: string;
}

/**
 * Loads and validates the set in `dir`.
 * @throws WritError ERR_POLICY_INVALID with `extensions.problems` (file, line, message).
 */
export function loadPolicySet(dir: string): PolicySet {
  const problems: PolicyProblem[] = [];
  const schemaPath = join(dir, SCHEMA_FILE);
  if (!existsSync(schemaPath)) throw invalid([{ file: SCHEMA_FILE, message: `missing ${schemaPath}` }]);
  const schemaText = readFileSync(schemaPath, 'utf8');
  const schemaJson = cedar.schemaToJson(schemaText);
  if (schemaJson.type === 'failure') {
    throw invalid(schemaJson.errors.map((e) => ({ file: SCHEMA_FILE, ...lineOf(schemaText, e.sourceLocations?.[0]?.start), message: e.message })));
  }

  const files = readdirSync(dir).filter((f) => f.endsWith('.cedar')).sort();
  const policies = new Map<string, LoadedPolicy>();
  const hash = createHash('sha256');
  hash.update(`${SCHEMA_FILE}\0${schemaText}\0`);
  for (const file of files) {
    const text = readFileSync(join(dir, file), 'utf8');
    hash.update(`${file}\0${text}\0`);
    const parts = cedar.policySetTextToParts(text);
    if (parts.type === 'failure') {
      for (const e of parts.errors) problems.push({ file, ...lineOf(text, e.sourceLocations?.[0]?.start), message: e.message });
      continue;
    }
    if (parts.policy_templates.length > 0) problems.push({ file, message: 'templates are not supported; write static policies' });
    parts.policies.forEach((policyText, index) => {
      const json = cedar.policyToJson(policyText);
      if (json.type === 'failure') {
        problems.push({ file, message: json.errors.map((e) => e.message).join('; ') });
        return;
      }
      const annotations = json.json.annotations ?? {};
      const id = annotations.id ?? `${file}#${index + 1}`;
      const approvalProblem = checkApprovalAnnotation(json.json.effect, annotations);
      if (approvalProblem !== undefined) problems.push({ file, message: `${id}: ${approvalProblem}` });
      if (policies.has(id)) {
        problems.push({ file, ...lineOf(text, text.indexOf(policyText.slice(0, 40))), message: `duplicate policy id ${JSON.stringify(id)}` });
        return;
      }
      policies.set(id, { id, file, text: policyText, effect: json.json.effect, annotations });
    });
  }

  const catalogPath = join(dir, CATALOG_FILE);
  let catalogDocument: unknown = {};
  if (existsSync(catalogPath)) {
    const text = readFileSync(catalogPath, 'utf8');
    hash.update(`${CATALOG_FILE}\0${text}\0`);
    try {
      catalogDocument = parseYaml(text, { schema: 'core', maxAliasCount: 10 }) ?? {};
    } catch (error) {
      problems.push({ file: CATALOG_FILE, message: (error as Error).message });
    }
  }
  const catalog = catalogSchema.safeParse(catalogDocument);
  if (!catalog.success) {
    for (const issue of catalog.error.issues) problems.push({ file: CATALOG_FILE, message: `${issue.path.join('.')}: ${issue.message}` });
  }
  if (problems.length > 0) throw invalid(problems);

  const staticPolicies = Object.fromEntries([...policies.values()].map((p) => [p.id, p.text]));
  const validation = cedar.validate({ schema: schemaText, policies: { staticPolicies }, validationSettings: { mode: 'strict' } });
  if (validation.type === 'failure') throw invalid(validation.errors.map((e) => ({ file: SCHEMA_FILE, message: e.message })));
  for (const e of validation.validationErrors) {
    const policy = policies.get(e.policyId);
    problems.push({
      file: policy?.file ?? '?',
      ...(policy ? lineOf(readFileSync(join(dir, policy.file), 'utf8'), locate(dir, policy, e.error.sourceLocations?.[0]?.start)) : {}),
      message: `${e.policyId}: ${e.error.message}`,
    });
  }
  if (problems.length > 0) throw invalid(problems);

  const version = `sha256:${hash.digest('hex').slice(0, 16)}`;
  const actionTiers = deriveActionTiers(schemaJson.json[CEDAR_NAMESPACE]?.actions ?? {});
  // INVARIANT: the preparsed ids are the version, so an engine can only evaluate the set it was built for.
  const preparsed = cedar.preparsePolicySet(version, { staticPolicies });
  if (preparsed.type === 'failure') throw invalid(preparsed.errors.map((e) => ({ file: '?', message: e.message })));
  const preparsedSchema = cedar.preparseSchema(version, schemaText);
  if (preparsedSchema.type === 'failure') throw invalid(preparsedSchema.errors.map((e) => ({ file: SCHEMA_FILE, message: e.message })));

  return { version, dir, schemaText, policies, actionTiers, catalog: createResourceCatalog(catalog.data as NonNullable<typeof catalog.data>) };
}

/**
 * An action's tier is the highest tier group it belongs to, directly or
 * through other groups. Actions outside every tier group cannot be scoped.
 */
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

function lineOf(text: string, offset: number | undefined): { line?: number } {
  if (offset === undefined || offset < 0) return {};
  return { line: text.slice(0, offset).split('\n').length };
}

// Validation offsets are relative to the policy's own text; map them into its file.
function locate(dir: string, policy: LoadedPolicy, offset: number | undefined): number | undefined {
  const fileText = readFileSync(join(dir, policy.file), 'utf8');
  const start = fileText.indexOf(policy.text);
  if (start < 0) return offset;
  return start + (offset ?? 0);
}

function invalid(problems: PolicyProblem[]): WritError {
  const detail = problems.map((p) => `${p.file}${p.line === undefined ? '' : `:${p.line}`}: ${p.message}`).join('\n');
  return new WritError('ERR_POLICY_INVALID', { detail, extensions: { problems } });
}
