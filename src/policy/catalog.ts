/**
 * The resource catalog: what Writ knows about resources (their sensitivity),
 * kept beside the policies as `resources.yaml` and versioned with them. Policy
 * reads resource attributes from here, never from the agent's request.
 *
 * Fail closed: a resource no entry covers gets the default sensitivity
 * (`restricted` unless the catalog says otherwise), and a pattern gets the
 * highest sensitivity of anything it could match.
 */
import { z } from 'zod';
import { isPattern, isValidResource, resourceCovers, resourcesIntersect } from '../core/scope.js';
import { SENSITIVITIES, sensitivityRank, type Sensitivity } from '../core/types.js';

export const catalogSchema = z
  .object({
    default: z.object({ sensitivity: z.enum(SENSITIVITIES).default('restricted') }).strict().prefault({}),
    resources: z
      .array(
        z
          .object({
            pattern: z.string().refine(isValidResource, 'a resource like db:orders/1 or a pattern like db:orders/*'),
            sensitivity: z.enum(SENSITIVITIES),
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
}

export function createResourceCatalog(document: CatalogDocument): ResourceCatalog {
  const entries = document.resources;
  const fallback = document.default.sensitivity;
  const memo = new Map<string, Sensitivity>();
  const max = (a: Sensitivity, b: Sensitivity): Sensitivity => (sensitivityRank(a) >= sensitivityRank(b) ? a : b);

  const compute = (resource: string): Sensitivity => {
    let result: Sensitivity | undefined;
    let whollyCovered = false;
    for (const entry of entries) {
      const relevant = isPattern(resource) ? resourcesIntersect(entry.pattern, resource) : resourceCovers(entry.pattern, resource);
      if (!relevant) continue;
      result = result === undefined ? entry.sensitivity : max(result, entry.sensitivity);
      if (resourceCovers(entry.pattern, resource)) whollyCovered = true;
    }
    // Part of a pattern no entry covers is unknown, and unknown gets the default.
    if (result === undefined || !whollyCovered) return result === undefined ? fallback : max(result, fallback);
    return result;
  };

  return {
    sensitivityOf(resource) {
      let value = memo.get(resource);
      if (value === undefined) {
        value = compute(resource);
        if (memo.size > 50_000) memo.clear();
        memo.set(resource, value);
      }
      return value;
    },
  };
}
