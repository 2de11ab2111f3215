/**
 * A realistic mix of decision requests for the benchmark, grown from the
 * example policies' test cases (policies/*.tests.yaml) so that it is not one
 * request repeated: each case, then variants of it with another resource of
 * the same place in the catalog (`db:orders/42` → `db:orders/42-3`), another
 * identity of the same kind, registry labels, the call stage with arguments
 * (declared and not), a purpose, one hop of delegation, and an approved refund.
 *
 * Variants keep what the example policies look at (actor type, environment,
 * intent, the resource's kind and catalog entry), so most decide like their
 * case; the benchmark does not rely on it, it checks every request's raw
 * Cedar answer against the engine's decision instead.
 */
import type { Identity } from '../../src/core/types.js';
import type { DecisionInput } from '../../src/policy/engine.js';
import type { PolicyTestCase } from '../../src/policy/policy-tests.js';

/** Variants per test case, the case itself included. */
export const VARIANTS_PER_CASE = 8;

const PURPOSES = ['answer ticket T-1001', 'weekly revenue report', 'refund order 42 after a damaged delivery', 'churn model features'];

/** The test cases' requests and their variants, in a fixed order (case by case). */
export function buildDecisionMix(cases: readonly PolicyTestCase[]): DecisionInput[] {
  const mix: DecisionInput[] = [];
  for (const testCase of cases) {
    for (let v = 0; v < VARIANTS_PER_CASE; v++) mix.push(vary(testCase.request, v));
  }
  return mix;
}

function vary(request: DecisionInput, v: number): DecisionInput {
  if (v === 0) return request;
  const principal: Identity = {
    ...request.principal,
    id: `${request.principal.id}-${v % 4}`,
    labels: v % 2 === 1 ? { team: 'support', 'cost-center': `cc-${v}` } : request.principal.labels,
  };
  const concrete = !request.resource.endsWith('*');
  const call = v % 2 === 0 && concrete;
  return {
    ...request,
    principal,
    resource: concrete ? `${request.resource}-${v}` : request.resource,
    purpose: PURPOSES[v % PURPOSES.length] ?? '',
    ...(v === 3 ? { delegationDepth: 1 } : {}),
    ...(call ? { stage: 'call' as const, args: argsFor(request.action, v) } : {}),
    ...(v === 4 && request.action === 'refund' ? { approval: 'approved' as const } : {}),
  };
}

/** Arguments an enforcement point would pass with a call; `ticket` is not declared by the schema and never reaches policy. */
function argsFor(action: string, v: number): Record<string, unknown> {
  if (action === 'refund') return { amountCents: 1250 * v, ticket: `T-${1000 + v}` };
  if (action === 'export') return { rows: 10_000 * v, destination: 's3://exports/weekly' };
  return { rows: 50 * v, ticket: `T-${1000 + v}` };
}
