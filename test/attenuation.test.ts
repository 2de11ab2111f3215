/**
 * Delegation only narrows. `attenuate` decides what a planner may hand a
 * worker; these tests check it by example and, with fast-check, against a
 * model of what a scope means that shares no code with src/core/scope.ts:
 * no generated child request ever yields a scope, resource, lifetime or depth
 * its parent lacked.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  DEFAULT_MAX_DELEGATION_DEPTH,
  attenuate,
  resourceCovers,
  type Attenuation,
  type AttenuationLimits,
} from '../src/core/scope.js';
import type { Scope } from '../src/core/types.js';

const NUM_RUNS = 2000;
// Every assert.ok here carries a message. Without one, node:assert rebuilds the
// failed expression by parsing the file on disk at the call site's position,
// which under tsx is a position in the transformed code: it quotes the wrong
// expression, and in this file it spun for minutes instead of failing.

// ---------------------------------------------------------------------------
// The model. A concrete resource matches only itself; `p*` matches every
// string that starts with p. Containment is decided by witnesses, not by
// comparing stems: a pattern with stem q matches q, q+'\u0001' and q+'\u0002'
// (characters no generator produces). If a concrete outer matched all three it
// would equal two different strings; if a pattern outer `p*` matches q, q
// starts with p and so does every extension of q. So "outer matches every
// witness of inner" is exact containment.
// ---------------------------------------------------------------------------

const matches = (resource: string, concrete: string): boolean =>
  resource.endsWith('*') ? concrete.startsWith(resource.slice(0, -1)) : concrete === resource;

const witnesses = (resource: string): string[] => {
  if (!resource.endsWith('*')) return [resource];
  const stem = resource.slice(0, -1);
  return [stem, `${stem}\u0001`, `${stem}\u0002`];
};

const modelCovers = (outer: Scope, inner: Scope): boolean =>
  outer.action === inner.action && witnesses(inner.resource).every((w) => matches(outer.resource, w));

/** Whether any scope in `scopes` lets `action` reach the concrete `resource`. */
const reaches = (scopes: readonly Scope[], action: string, resource: string): boolean =>
  scopes.some((scope) => scope.action === action && matches(scope.resource, resource));

// A well-formed resource per DESIGN.md, restated here rather than imported.
const wellFormed = (resource: string): boolean => {
  const m = /^([a-z][a-z0-9-]{0,31}):([A-Za-z0-9._~:/@+=,-]*)\*?$/.exec(resource);
  if (m === null || resource.length > 256) return false;
  const path = resource.slice(resource.indexOf(':') + 1);
  return path.length > 0 && path.split('/').every((s) => s !== '' && s !== '.' && s !== '..');
};
const wellFormedScope = (scope: Scope): boolean => /^[a-z][a-z0-9_]{0,63}$/.test(scope.action) && wellFormed(scope.resource);

// ---------------------------------------------------------------------------
// Generators: a small adversarial alphabet, so that prefix relations
// (`db:orders/1` and `db:orders/10`), kind bleed (`d:` and `db:`), case,
// `.`/`..` segments and empty segments come up all the time.
// ---------------------------------------------------------------------------

const ACTIONS = ['read', 'reads', 'write'] as const;
const KINDS = ['d', 'db', 'dbx'] as const;
const PIECES = ['o', '1', '0', 'O', '/', '.'] as const;
const NAMED = [
  'db:orders',
  'db:orders/1',
  'db:orders/10',
  'db:orders/*',
  'db:orders*',
  'db:orders/1*',
  'db:orders/4*',
  'db:orders/../customers/1',
  'db:orders/',
  'db:*',
  'd:*',
  'dbx:orders/1',
  'db:Orders/1',
] as const;

const pathArb = fc.array(fc.constantFrom(...PIECES), { maxLength: 5 }).map((pieces) => pieces.join(''));
const suffixArb = fc.array(fc.constantFrom(...PIECES), { maxLength: 3 }).map((pieces) => pieces.join(''));
const rawResourceArb = fc.oneof(
  fc.tuple(fc.constantFrom(...KINDS), pathArb, fc.boolean()).map(([kind, path, star]) => `${kind}:${path}${star ? '*' : ''}`),
  fc.constantFrom(...NAMED),
);
const actionArb = fc.constantFrom(...ACTIONS);
const rawScopeArb: fc.Arbitrary<Scope> = fc.record({ action: actionArb, resource: rawResourceArb });
const scopeArb: fc.Arbitrary<Scope> = rawScopeArb.filter(wellFormedScope);

/**
 * A child scope built from a parent's: kept, narrowed, widened, re-actioned,
 * or unrelated. Weighted so that about half of generated delegations are
 * accepted: soundness is only exercised by accepted ones.
 */
const childScopeArb = (parent: readonly Scope[]): fc.Arbitrary<Scope> => {
  if (parent.length === 0) return rawScopeArb;
  const from = fc.constantFrom(...parent);
  return fc.oneof(
    { weight: 4, arbitrary: from },
    {
      // Narrowed (or, from a concrete name, turned into a pattern: an escalation).
      weight: 4,
      arbitrary: fc.tuple(from, suffixArb, fc.boolean()).map(([p, suffix, star]) => ({
        action: p.action,
        resource: `${p.resource.endsWith('*') ? p.resource.slice(0, -1) : p.resource}${suffix}${star ? '*' : ''}`,
      })),
    },
    {
      // Widened: a shorter stem as a pattern, most often by one or two characters (`db:orders/*` to `db:orders*`).
      weight: 2,
      arbitrary: fc.tuple(from, fc.oneof({ weight: 3, arbitrary: fc.integer({ min: 1, max: 2 }) }, { weight: 1, arbitrary: fc.nat() })).map(([p, cut]) => {
        const stem = p.resource.endsWith('*') ? p.resource.slice(0, -1) : p.resource;
        return { action: p.action, resource: `${stem.slice(0, stem.length - (cut % (stem.length + 1)))}*` };
      }),
    },
    { weight: 1, arbitrary: fc.tuple(from, actionArb).map(([p, action]) => ({ action, resource: p.resource })) },
    { weight: 1, arbitrary: rawScopeArb },
  );
};

/** Depths that mostly leave room for a step or two, sometimes not. */
const depthsArb = fc.oneof(
  { weight: 3, arbitrary: fc.record({ parentDepth: fc.integer({ min: 0, max: 1 }), maxDepth: fc.integer({ min: 2, max: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ parentDepth: fc.integer({ min: 0, max: 5 }), maxDepth: fc.integer({ min: 0, max: 5 }) }) },
);

const limitsArb: fc.Arbitrary<AttenuationLimits> = fc
  .tuple(fc.array(scopeArb, { minLength: 1, maxLength: 4 }), fc.integer({ min: 1_700_000_000_000, max: 1_700_000_100_000 }), depthsArb)
  .map(([parentScopes, parentExpiresAt, depths]) => ({ parentScopes, parentExpiresAt, ...depths }));

/** An expiry at, before or after the parent's, mostly not after. */
const expiryNear = (parentExpiresAt: number): fc.Arbitrary<number> =>
  fc
    .oneof({ weight: 2, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.integer({ min: -5_000, max: -1 }) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 5_000 }) })
    .map((delta) => parentExpiresAt + delta);

const caseArb = limitsArb.chain((limits) =>
  fc.record({
    limits: fc.constant(limits),
    request: fc.record({ scopes: fc.array(childScopeArb(limits.parentScopes), { maxLength: 3 }), expiresAt: expiryNear(limits.parentExpiresAt) }),
    probes: fc.array(fc.tuple(actionArb, rawResourceArb.map((r) => (r.endsWith('*') ? r.slice(0, -1) : r))), { maxLength: 8 }),
  }),
);

/** Concrete names a granted scope reaches: its own name or stem, and a few extensions. */
const derivedProbes = (scopes: readonly Scope[]): [string, string][] =>
  scopes.flatMap((scope) => {
    const stem = scope.resource.endsWith('*') ? scope.resource.slice(0, -1) : scope.resource;
    return ['', '1', '0', '/', '/1', 'x', '.', '..'].map((suffix): [string, string] => [scope.action, stem + suffix]);
  });

const key = (scope: Scope): string => `${scope.action} ${scope.resource}`;
const dedupe = (scopes: readonly Scope[]): Scope[] => [...new Map(scopes.map((s) => [key(s), { action: s.action, resource: s.resource }])).values()];

function expectOk(result: Attenuation): Extract<Attenuation, { ok: true }> {
  assert.equal(result.ok, true, result.ok ? '' : `${result.code}: ${result.detail}`);
  return result as Extract<Attenuation, { ok: true }>;
}

function expectRefused(result: Attenuation, code: string): Extract<Attenuation, { ok: false }> {
  assert.equal(result.ok, false, 'expected a refusal');
  const refused = result as Extract<Attenuation, { ok: false }>;
  assert.equal(refused.code, code);
  return refused;
}

// ---------------------------------------------------------------------------

describe('attenuation properties (fast-check)', () => {
  test('the covering function agrees with the set model of prefix patterns', () => {
    fc.assert(
      fc.property(rawResourceArb, rawResourceArb, (outer, inner) => {
        assert.equal(resourceCovers(outer, inner), modelCovers({ action: 'a', resource: outer }, { action: 'a', resource: inner }), `${outer} ⊇ ${inner}`);
      }),
      { numRuns: NUM_RUNS * 5 },
    );
  });

  test('soundness: a delegated child never reaches an action or resource its parent could not', () => {
    let accepted = 0;
    fc.assert(
      fc.property(caseArb, ({ limits, request, probes }) => {
        const result = attenuate(request, limits);
        if (!result.ok) return;
        accepted++;
        // Each granted scope is contained, as a whole, in one parent scope.
        for (const scope of result.scopes) {
          assert.ok(wellFormedScope(scope), `granted a malformed scope ${key(scope)}`);
          assert.ok(limits.parentScopes.some((p) => modelCovers(p, scope)), `granted ${key(scope)} beyond the parent`);
        }
        // And, concretely: anything the child reaches, the parent reaches.
        for (const [action, resource] of [...probes, ...derivedProbes(result.scopes)]) {
          if (reaches(result.scopes, action, resource)) assert.ok(reaches(limits.parentScopes, action, resource), `child reaches ${action} ${resource}`);
        }
        // Nothing granted that was not asked for.
        for (const scope of result.scopes) assert.ok(request.scopes.some((r) => key(r) === key(scope)), `granted unrequested ${key(scope)}`);
      }),
      { numRuns: NUM_RUNS },
    );
    // A property that never reaches its assertions proves nothing.
    assert.ok(accepted > NUM_RUNS / 5, `only ${accepted} of ${NUM_RUNS} generated delegations were accepted`);
  });

  test('lifetime and depth: an accepted child expires no later than its parent and sits one level deeper, within the maximum', () => {
    fc.assert(
      fc.property(caseArb, ({ limits, request }) => {
        const result = attenuate(request, limits);
        if (!result.ok) return;
        assert.ok(result.expiresAt <= limits.parentExpiresAt, 'the child outlives its parent');
        assert.equal(result.expiresAt, request.expiresAt);
        assert.equal(result.depth, limits.parentDepth + 1);
        assert.ok(result.depth <= limits.maxDepth, 'the child is deeper than the maximum');
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test('completeness: a subset of the parent\'s own scopes, within its lifetime and depth, is accepted as asked', () => {
    const arb = limitsArb
      .filter((limits) => limits.parentDepth < limits.maxDepth)
      .chain((limits) =>
        fc.record({
          limits: fc.constant(limits),
          scopes: fc.subarray([...limits.parentScopes]).chain((subset) => fc.shuffledSubarray([...subset, ...subset], { minLength: subset.length })),
          earlier: fc.nat({ max: 5_000 }),
        }),
      );
    fc.assert(
      fc.property(arb, ({ limits, scopes, earlier }) => {
        const result = expectOk(attenuate({ scopes, expiresAt: limits.parentExpiresAt - earlier }, limits));
        assert.deepEqual(result.scopes, dedupe(scopes));
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test('completeness: a well-formed narrowing of a parent scope is accepted', () => {
    // Appending to a pattern's stem (with or without a star) only narrows it.
    const arb = limitsArb
      .filter((limits) => limits.parentDepth < limits.maxDepth && limits.parentScopes.some((s) => s.resource.endsWith('*')))
      .chain((limits) => {
        const patterns = limits.parentScopes.filter((s) => s.resource.endsWith('*'));
        const narrowed = fc
          .tuple(fc.constantFrom(...patterns), suffixArb, fc.boolean())
          .map(([p, suffix, star]): Scope => ({ action: p.action, resource: `${p.resource.slice(0, -1)}${suffix}${star ? '*' : ''}` }))
          .filter(wellFormedScope);
        return fc.record({ limits: fc.constant(limits), scopes: fc.array(narrowed, { minLength: 1, maxLength: 4 }) });
      });
    fc.assert(
      fc.property(arb, ({ limits, scopes }) => {
        expectOk(attenuate({ scopes, expiresAt: limits.parentExpiresAt }, limits));
      }),
      { numRuns: NUM_RUNS },
    );
  });

  test('transitivity: along a three-level chain, the grandchild never regains what an ancestor lacked', () => {
    let chains = 0;
    const arb = limitsArb.chain((root) =>
      fc
        .record({ scopes: fc.array(childScopeArb(root.parentScopes), { maxLength: 3 }), expiresAt: expiryNear(root.parentExpiresAt) })
        .chain((middle) => {
          // The grandchild asks from what the middle asked and what the root held.
          const pool = [...middle.scopes, ...root.parentScopes];
          return fc.record({
            root: fc.constant(root),
            middle: fc.constant(middle),
            leaf: fc.record({ scopes: fc.array(childScopeArb(pool), { maxLength: 3 }), expiresAt: expiryNear(middle.expiresAt) }),
            probes: fc.array(fc.tuple(actionArb, rawResourceArb), { maxLength: 8 }),
          });
        }),
    );
    fc.assert(
      fc.property(arb, ({ root, middle, leaf, probes }) => {
        const second = attenuate(middle, root);
        if (!second.ok) return;
        const third = attenuate(leaf, { parentScopes: second.scopes, parentExpiresAt: second.expiresAt, parentDepth: second.depth, maxDepth: root.maxDepth });
        if (!third.ok) return;
        chains++;
        for (const scope of third.scopes) {
          assert.ok(second.scopes.some((p) => modelCovers(p, scope)), `grandchild ${key(scope)} beyond its parent`);
          assert.ok(root.parentScopes.some((p) => modelCovers(p, scope)), `grandchild ${key(scope)} beyond the root`);
        }
        for (const [action, resource] of [...probes, ...derivedProbes(third.scopes)]) {
          if (reaches(third.scopes, action, resource)) {
            assert.ok(reaches(second.scopes, action, resource), `grandchild reaches ${action} ${resource}, its parent does not`);
            assert.ok(reaches(root.parentScopes, action, resource), `grandchild reaches ${action} ${resource}, the root does not`);
          }
        }
        assert.ok(third.expiresAt <= second.expiresAt && second.expiresAt <= root.parentExpiresAt, 'a descendant outlives an ancestor');
        assert.equal(third.depth, root.parentDepth + 2);
        assert.ok(third.depth <= root.maxDepth, 'the grandchild is deeper than the maximum');
      }),
      { numRuns: NUM_RUNS },
    );
    assert.ok(chains > NUM_RUNS / 25, `only ${chains} of ${NUM_RUNS} generated chains were accepted twice`);
  });

  test('a refusal names exactly the offending scopes, and any other refusal code names none', () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(caseArb, ({ limits, request }) => {
        const result = attenuate(request, limits);
        if (result.ok) return;
        seen.add(result.code);
        switch (result.code) {
          case 'ERR_VALIDATION':
            assert.deepEqual(result.scopes.map(key), request.scopes.filter((s) => !wellFormedScope(s)).map(key));
            assert.ok(result.scopes.length > 0, 'a validation refusal names no scope');
            break;
          case 'ERR_SCOPE_EXCEEDS_PARENT': {
            const uncovered = dedupe(request.scopes).filter((s) => !limits.parentScopes.some((p) => modelCovers(p, s)));
            assert.deepEqual(result.scopes, uncovered);
            assert.ok(result.scopes.length > 0, 'a scope refusal names no scope');
            break;
          }
          case 'ERR_DELEGATION_TOO_DEEP':
            assert.ok(limits.parentDepth + 1 > limits.maxDepth, 'refused as too deep within the maximum');
            assert.deepEqual(result.scopes, []);
            break;
          case 'ERR_LIFETIME_EXCEEDS_PARENT':
            assert.ok(request.expiresAt > limits.parentExpiresAt, 'refused a lifetime within the parent\'s');
            assert.deepEqual(result.scopes, []);
            break;
          default:
            assert.fail(`unexpected code ${String((result as { code: unknown }).code)}`);
        }
      }),
      { numRuns: NUM_RUNS },
    );
    assert.deepEqual([...seen].sort(), ['ERR_DELEGATION_TOO_DEEP', 'ERR_LIFETIME_EXCEEDS_PARENT', 'ERR_SCOPE_EXCEEDS_PARENT', 'ERR_VALIDATION']);
  });
});

// ---------------------------------------------------------------------------

describe('attenuate by example', () => {
  const planner = (parentScopes: Scope[], overrides: Partial<AttenuationLimits> = {}): AttenuationLimits => ({
    parentScopes,
    parentExpiresAt: 1_700_000_060_000,
    parentDepth: 0,
    maxDepth: DEFAULT_MAX_DELEGATION_DEPTH,
    ...overrides,
  });
  const read = (resource: string): Scope => ({ action: 'read', resource });
  const inOneMinute = 1_700_000_060_000;

  test('a worker may get exactly the planner\'s scopes, or a narrower pattern, or one concrete name', () => {
    const limits = planner([read('db:orders/*'), { action: 'write', resource: 'tickets:T-1042' }]);
    const result = expectOk(attenuate({ scopes: [read('db:orders/2024/*'), read('db:orders/7'), { action: 'write', resource: 'tickets:T-1042' }], expiresAt: inOneMinute }, limits));
    assert.deepEqual(result.scopes, [read('db:orders/2024/*'), read('db:orders/7'), { action: 'write', resource: 'tickets:T-1042' }]);
    assert.equal(result.depth, 1);
    assert.equal(result.expiresAt, inOneMinute);
  });

  test('a pattern must be covered as a whole: db:orders/* is not inside db:orders/4*, nor inside db:orders/4* and db:orders/5* together', () => {
    expectRefused(attenuate({ scopes: [read('db:orders/*')], expiresAt: inOneMinute }, planner([read('db:orders/4*')])), 'ERR_SCOPE_EXCEEDS_PARENT');
    expectRefused(attenuate({ scopes: [read('db:orders/*')], expiresAt: inOneMinute }, planner([read('db:orders/4*'), read('db:orders/5*')])), 'ERR_SCOPE_EXCEEDS_PARENT');
    expectOk(attenuate({ scopes: [read('db:orders/4*'), read('db:orders/42')], expiresAt: inOneMinute }, planner([read('db:orders/*')])));
  });

  test('prefix look-alikes grant nothing: db:orders/1 is not db:orders/10, db:orders/* does not reach db:orders_archive', () => {
    const cases: [parent: string, child: string][] = [
      ['db:orders/1', 'db:orders/10'],
      ['db:orders/1', 'db:orders/1*'],
      ['db:orders/*', 'db:orders*'],
      ['db:orders/*', 'db:orders_archive/1'],
      ['db:orders/*', 'db:orders'],
      ['db:*', 'dbx:orders/1'],
      ['db:orders/*', 'db:Orders/1'],
      ['db:orders/*', 'db:*'],
    ];
    for (const [parent, child] of cases) {
      const refused = expectRefused(attenuate({ scopes: [read(child)], expiresAt: inOneMinute }, planner([read(parent)])), 'ERR_SCOPE_EXCEEDS_PARENT');
      assert.deepEqual(refused.scopes, [read(child)], `${parent} ⊉ ${child}`);
    }
  });

  test('the same resource under another action is not delegable', () => {
    const refused = expectRefused(attenuate({ scopes: [{ action: 'write', resource: 'db:orders/1' }], expiresAt: inOneMinute }, planner([read('db:orders/*')])), 'ERR_SCOPE_EXCEEDS_PARENT');
    assert.deepEqual(refused.scopes, [{ action: 'write', resource: 'db:orders/1' }]);
  });

  test('one scope too many refuses the whole delegation and names only that scope', () => {
    const refused = expectRefused(
      attenuate({ scopes: [read('db:orders/1'), read('db:customers/1'), read('db:orders/2'), read('db:customers/1')], expiresAt: inOneMinute }, planner([read('db:orders/*')])),
      'ERR_SCOPE_EXCEEDS_PARENT',
    );
    assert.deepEqual(refused.scopes, [read('db:customers/1')]);
  });

  test('a path that climbs out of the parent\'s pattern is refused as malformed, though its string starts with the prefix', () => {
    for (const resource of ['db:orders/../customers/1', 'db:orders//1', 'db:orders/./1', 'db:orders/%2e%2e/customers', 'db:orders/1\n', 'db:ordérs/1']) {
      const refused = expectRefused(attenuate({ scopes: [read('db:orders/1'), read(resource)], expiresAt: inOneMinute }, planner([read('db:orders/*')])), 'ERR_VALIDATION');
      assert.deepEqual(refused.scopes, [read(resource)], JSON.stringify(resource));
    }
  });

  test('a parent scope that is not well formed grants nothing, not even what its string prefix would cover', () => {
    expectRefused(attenuate({ scopes: [read('db:orders/1')], expiresAt: inOneMinute }, planner([read('*')])), 'ERR_SCOPE_EXCEEDS_PARENT');
    expectRefused(attenuate({ scopes: [read('db:orders/1')], expiresAt: inOneMinute }, planner([{ action: 'Read', resource: 'db:*' }, read('db:')])), 'ERR_SCOPE_EXCEEDS_PARENT');
  });

  test('a longer lifetime is refused, not cut; the parent\'s own expiry or an earlier one is accepted', () => {
    const limits = planner([read('db:orders/*')]);
    expectRefused(attenuate({ scopes: [read('db:orders/1')], expiresAt: inOneMinute + 1 }, limits), 'ERR_LIFETIME_EXCEEDS_PARENT');
    expectRefused(attenuate({ scopes: [read('db:orders/1')], expiresAt: Number.NaN }, limits), 'ERR_LIFETIME_EXCEEDS_PARENT');
    expectRefused(attenuate({ scopes: [read('db:orders/1')], expiresAt: Number.POSITIVE_INFINITY }, limits), 'ERR_LIFETIME_EXCEEDS_PARENT');
    expectRefused(attenuate({ scopes: [read('db:orders/1')], expiresAt: inOneMinute }, { ...limits, parentExpiresAt: Number.NaN }), 'ERR_LIFETIME_EXCEEDS_PARENT');
    assert.equal(expectOk(attenuate({ scopes: [read('db:orders/1')], expiresAt: inOneMinute }, limits)).expiresAt, inOneMinute);
    assert.equal(expectOk(attenuate({ scopes: [read('db:orders/1')], expiresAt: inOneMinute - 1 }, limits)).expiresAt, inOneMinute - 1);
  });

  test('delegation stops at the maximum depth, three by default', () => {
    assert.equal(DEFAULT_MAX_DELEGATION_DEPTH, 3);
    const request = { scopes: [read('db:orders/1')], expiresAt: inOneMinute };
    assert.equal(expectOk(attenuate(request, planner([read('db:orders/*')], { parentDepth: 2 }))).depth, 3);
    expectRefused(attenuate(request, planner([read('db:orders/*')], { parentDepth: 3 })), 'ERR_DELEGATION_TOO_DEEP');
    expectRefused(attenuate(request, planner([read('db:orders/*')], { parentDepth: 0, maxDepth: 0 })), 'ERR_DELEGATION_TOO_DEEP');
  });

  test('depth is checked first: a too-deep delegation is refused whatever it asks for', () => {
    const refused = expectRefused(attenuate({ scopes: [read('db:*')], expiresAt: inOneMinute + 1 }, planner([read('db:orders/*')], { parentDepth: 3 })), 'ERR_DELEGATION_TOO_DEEP');
    assert.deepEqual(refused.scopes, []);
  });

  test('limits that are not non-negative integers throw rather than guess', () => {
    const request = { scopes: [read('db:orders/1')], expiresAt: inOneMinute };
    for (const overrides of [{ parentDepth: -1 }, { parentDepth: 0.5 }, { parentDepth: Number.NaN }, { maxDepth: Number.NaN }, { maxDepth: Number.POSITIVE_INFINITY }, { maxDepth: -1 }]) {
      assert.throws(() => attenuate(request, planner([read('db:orders/*')], overrides)), RangeError, JSON.stringify(overrides));
    }
  });

  test('duplicates are removed and the child gets plain copies, never the caller\'s objects', () => {
    const asked = { action: 'read', resource: 'db:orders/1', extra: 'rides along?' } as Scope;
    const result = expectOk(attenuate({ scopes: [asked, read('db:orders/1'), read('db:orders/2')], expiresAt: inOneMinute }, planner([read('db:orders/*')])));
    assert.deepEqual(result.scopes, [read('db:orders/1'), read('db:orders/2')]);
    assert.notEqual(result.scopes[0], asked);
  });

  test('an empty request is a subset of anything and is accepted', () => {
    assert.deepEqual(expectOk(attenuate({ scopes: [], expiresAt: inOneMinute }, planner([]))).scopes, []);
  });
});
