/**
 * The resource catalog: what Writ knows about resources, kept beside the
 * policies as `resources.yaml` and versioned with them. Policy reads resource
 * attributes from here, never from the agent's request:
 *
 *   kinds        resource kind (the name before the first colon) → entity type
 *                (Tool, Dataset, Api, Database); an untyped kind is `Resource`
 *   sensitivity  per pattern; public < internal < confidential < restricted
 *   tier         per pattern, optional: the lowest tier any action on the
 *                resource counts as (a `call` of a shell tool counts as admin)
 *
 * Fail closed: a resource no entry covers gets the default sensitivity
 * (`restricted` unless the catalog says otherwise), and a pattern gets the
 * highest sensitivity and tier of anything it could match.
 */
import { z } from 'zod';
import { isPattern, isValidResource, resourceCovers, resourcesIntersect } from '../core/scope.js';
import { SENSITIVITIES, TIERS, sensitivityRank, tierRank, type Sensitivity, type Tier } from '../core/types.js';

/** The entity type of a resource whose kind the catalog does not type. */
export const UNTYPED_RESOURCE = 'Resource';

export const catalogSchema = z
  .object({
    /** Resource kind → Cedar entity type (declared in the schema, checked when the set loads). */
    kinds: z
      .record(z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, 'a resource kind such as db or tickets'), z.string().regex(/^[A-Z][A-Za-z0-9_]{0,63}$/, 'an entity type such as Database'))
      .default(() => ({})),
    default: z.object({ sensitivity: z.enum(SENSITIVITIES).default('restricted') }).strict().prefault({}),
    resources: z
      .array(
        z
          .object({
            pattern: z.string().refine(isValidResource, 'a resource like db:orders/1 or a pattern like db:orders/*'),
            sensitivity: z.enum(SENSITIVITIES),
            tier: z.enum(TIERS).optional(),
            description: z.string().max(500).optional(),
          })
          .strict(),
      )
      .default([]),
  })
  .strict();

export type CatalogDocument = z.output<typeof catalogSchema>;

export interface ResourceCatalog {
  /** Sensitivity of a resource or of everything a pattern may match. */
  sensitivityOf(resource: string): Sensitivity;
  /** The lowest tier an action on the resource counts as (the highest of anything a pattern may match); read when none is set. */
  tierFloorOf(resource: string): Tier;
  /** The Cedar entity type (without namespace) of a resource kind. */
  entityTypeOf(kind: string): string;
  /** The entity types `kinds` names, to check against the schema. */
  readonly entityTypes: ReadonlySet<string>;
}

export function createResourceCatalog(document: CatalogDocument): ResourceCatalog {
  const entries = document.resources;
  const fallback = document.default.sensitivity;
  const max = (a: Sensitivity, b: Sensitivity): Sensitivity => (sensitivityRank(a) >= sensitivityRank(b) ? a : b);

  const maxTier = (a: Tier, b: Tier): Tier => (tierRank(a) >= tierRank(b) ? a : b);
  const computeTier = (resource: string): Tier => {
    let result: Tier = 'read';
    for (const entry of entries) {
      if (entry.tier === undefined) continue;
      const relevant = isPattern(resource) ? resourcesIntersect(entry.pattern, resource) : covers(entry.pattern, resource);
      if (relevant) result = maxTier(result, entry.tier);
    }
    return result;
  };
  const kinds = new Map(Object.entries(document.kinds));

  const compute = (resource: string): Sensitivity => {
    let result: Sensitivity | undefined;
    let whollyCovered = false;
    for (const entry of entries) {
      const relevant = isPattern(resource) ? resourcesIntersect(entry.pattern, resource) : covers(entry.pattern, resource);
      if (!relevant) continue;
      result = result === undefined ? entry.sensitivity : max(result, entry.sensitivity);
      if (covers(entry.pattern, resource)) whollyCovered = true;
    }
    // Part of a pattern no entry covers is unknown, and unknown gets the default.
    if (result === undefined || !whollyCovered) return result === undefined ? fallback : max(result, fallback);
    return result;
  };

  return {
    sensitivityOf: memoize(compute),
    tierFloorOf: memoize(computeTier),
    entityTypeOf: (kind) => kinds.get(kind) ?? UNTYPED_RESOURCE,
    entityTypes: new Set([...kinds.values(), UNTYPED_RESOURCE]),
  };
}

/**
 * Whether a catalog entry speaks for `resource`: it covers it, or the entry is
 * `X/*` and the resource is `X` itself. The folder a pattern describes is as
 * sensitive as what is in it: `payments:payouts` must not escape the admin
 * floor of `payments:payouts/*`.
 */
function covers(pattern: string, resource: string): boolean {
  return resourceCovers(pattern, resource) || (pattern.endsWith('/*') && resource === pattern.slice(0, -2));
}

/** `compute` remembered per resource name; at most 50 000 names, then forgotten all at once. */
function memoize<T>(compute: (resource: string) => T): (resource: string) => T {
  const memo = new Map<string, T>();
  return (resource) => {
    let value = memo.get(resource);
    if (value === undefined) {
      value = compute(resource);
      if (memo.size > 50_000) memo.clear();
      memo.set(resource, value);
    }
    return value;
  };
}
