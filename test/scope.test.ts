/**
 * Scopes and prefix patterns. Containment here is what stops a task token from
 * reaching beyond its grant, so it is checked against a brute-force model as
 * well as by example.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  MAX_ACTION_LENGTH,
  MAX_RESOURCE_LENGTH,
  findCoveringScope,
  formatScope,
  formatScopeClaim,
  isPattern,
  isValidAction,
  isValidResource,
  parseScopeClaim,
  resourceCovers,
  resourceKind,
  resourcesIntersect,
  scopeCovers,
} from '../src/core/scope.js';
import type { Scope } from '../src/core/types.js';

describe('isValidAction', () => {
  test('lowercase names with digits and underscores are actions', () => {
    for (const action of ['read', 'write', 'delete', 'export_csv', 'a', 'a1', 'x'.repeat(MAX_ACTION_LENGTH)]) {
      assert.equal(isValidAction(action), true, action);
    }
  });

  test('anything else is not an action', () => {
    const bad = ['', 'Read', '1read', '_read', 'read-all', 'read all', 'read:', 'rea*', 'read\n', ' read', 'é', 'x'.repeat(MAX_ACTION_LENGTH + 1)];
    for (const action of bad) assert.equal(isValidAction(action), false, JSON.stringify(action));
  });
});

describe('isValidResource', () => {
  test('kind:path names and trailing-star patterns are resources', () => {
    const good = [
      'db:orders/123',
      'db:orders/*',
      'db:*',
      'tickets:T-42',
      'k8s-pods:ns/app',
      'api:example.com/a/b',
      'x:a.b_c~d:e/f@g+i=j,k-l',
      'db:orders.v2/..x',
      `${'k'.repeat(32)}:x`,
    ];
    for (const resource of good) assert.equal(isValidResource(resource), true, resource);
  });

  test('a resource of exactly the maximum length is accepted and one more character is refused', () => {
    const atLimit = `db:${'a'.repeat(MAX_RESOURCE_LENGTH - 3)}`;
    assert.equal(atLimit.length, MAX_RESOURCE_LENGTH);
    assert.equal(isValidResource(atLimit), true);
    assert.equal(isValidResource(`${atLimit}a`), false);
    assert.equal(isValidResource(`${atLimit.slice(0, -1)}*`), true);
    assert.equal(isValidResource(`${atLimit}*`), false);
  });

  test('hostile or malformed names are refused', () => {
    const bad: [string, string][] = [
      ['bare star', '*'],
      ['empty path', 'db:'],
      ['a .. segment', 'db:orders/../customers/pii/42'],
      ['a leading .. segment', 'db:../customers'],
      ['a trailing .. segment', 'db:orders/..'],
      ['a . segment', 'db:orders/./1'],
      ['an empty segment', 'db:orders//1'],
      ['a trailing slash', 'db:orders/'],
      ['a leading slash', 'db:/orders'],
      ['percent-encoding', 'db:orders/%2e%2e/customers'],
      ['a .. segment before a star', 'db:orders/../*'],
      ['an empty segment before a star', 'db:orders//*'],
      ['inner star', 'db:or*ders'],
      ['two stars', 'db:orders/**'],
      ['star in the kind', 'd*:x'],
      ['missing kind', ':orders'],
      ['no colon', 'orders'],
      ['empty', ''],
      ['uppercase kind', 'DB:orders'],
      ['kind starting with a digit', '1db:x'],
      ['kind too long', `${'k'.repeat(33)}:x`],
      ['space', 'db:orders 1'],
      ['tab', 'db:orders\t1'],
      ['trailing newline', 'db:orders/1\n'],
      ['leading space', ' db:orders'],
      ['double quote', 'db:"orders"'],
      ['single quote', "db:o'rders"],
      ['backslash', 'db:orders\\1'],
      ['NUL', 'db:orders\u00001'],
      ['escape', 'db:\u001b[31m'],
      ['DEL', 'db:\u007f'],
      ['non-ASCII', 'db:ordérs'],
      ['line separator', 'db:a\u2028b'],
      ['over the length limit', `db:${'a'.repeat(MAX_RESOURCE_LENGTH)}`],
    ];
    for (const [name, resource] of bad) assert.equal(isValidResource(resource), false, name);
  });
});

describe('isPattern and resourceKind', () => {
  test('a resource is a pattern exactly when it ends in a star', () => {
    assert.equal(isPattern('db:orders/*'), true);
    assert.equal(isPattern('db:*'), true);
    assert.equal(isPattern('db:orders/1'), false);
    assert.equal(isPattern('db:'), false);
  });

  test('the kind is what comes before the first colon', () => {
    assert.equal(resourceKind('db:orders/1'), 'db');
    assert.equal(resourceKind('url:https://x'), 'url');
    assert.equal(resourceKind('db:*'), 'db');
    assert.equal(resourceKind('nocolon'), '');
  });
});

describe('resourceCovers', () => {
  const table: [outer: string, inner: string, covers: boolean][] = [
    // pattern over concrete
    ['db:orders/*', 'db:orders/1', true],
    ['db:orders/*', 'db:orders/1/items/2', true],
    ['db:orders/*', 'db:orders/', true],
    ['db:orders/*', 'db:orders', false],
    ['db:orders/*', 'db:ordersx/1', false],
    ['db:orders/*', 'db:customers/1', false],
    ['db:orders/*', 'dbx:orders/1', false],
    ['db:*', 'dbx:orders/1', false],
    ['db:*', 'db:', true],
    // the `orders*` / `orders/*` edge
    ['db:orders*', 'db:orders', true],
    ['db:orders*', 'db:orders/1', true],
    ['db:orders*', 'db:orders_archive/1', true],
    ['db:orders*', 'db:orders/*', true],
    ['db:orders/*', 'db:orders*', false],
    // pattern over pattern
    ['db:*', 'db:orders/*', true],
    ['db:orders/*', 'db:orders/*', true],
    ['db:orders/*', 'db:orders/2024/*', true],
    ['db:orders/2024/*', 'db:orders/*', false],
    ['db:orders/*', 'db:customers/*', false],
    ['db:orders/*', 'db:*', false],
    // concrete over anything
    ['db:orders/1', 'db:orders/1', true],
    ['db:orders/1', 'db:orders/2', false],
    ['db:orders/1', 'db:orders/1*', false],
    ['db:orders/1', 'db:orders/*', false],
    ['db:orders/', 'db:orders/*', false],
  ];
  for (const [outer, inner, covers] of table) {
    test(`${outer} ${covers ? 'covers' : 'does not cover'} ${inner}`, () => {
      assert.equal(resourceCovers(outer, inner), covers);
    });
  }

  test('a concrete resource never covers a pattern, not even its own prefix', () => {
    for (const concrete of ['db:orders', 'db:orders/', 'db:', 'db:x']) {
      assert.equal(resourceCovers(concrete, `${concrete}*`), false, concrete);
    }
  });

  test('every resource covers itself', () => {
    for (const resource of ['db:orders/1', 'db:orders/*', 'db:*', 'db:', 'tickets:T-1']) {
      assert.equal(resourceCovers(resource, resource), true, resource);
    }
  });
});

describe('resourcesIntersect', () => {
  const table: [a: string, b: string, intersect: boolean][] = [
    ['db:orders/*', 'db:orders/1', true],
    ['db:orders/*', 'db:orders/*', true],
    ['db:orders/*', 'db:*', true],
    ['db:orders/*', 'db:orders/2024/*', true],
    ['db:orders*', 'db:orders/*', true],
    ['db:orders*', 'db:orders', true],
    ['db:orders/*', 'db:orders', false],
    ['db:orders/*', 'db:customers/*', false],
    ['db:orders/*', 'db:customers/1', false],
    ['db:orders/*', 'dbx:orders/*', false],
    ['db:*', 'tickets:*', false],
    ['db:orders/1', 'db:orders/1', true],
    ['db:orders/1', 'db:orders/2', false],
    ['db:orders/1', 'db:orders/1*', true],
    ['db:orders/12', 'db:orders/1*', true],
    ['db:orders/', 'db:orders/1*', false],
  ];
  for (const [a, b, intersect] of table) {
    test(`${a} and ${b} ${intersect ? 'share' : 'share no'} resources, whichever is named first`, () => {
      assert.equal(resourcesIntersect(a, b), intersect);
      assert.equal(resourcesIntersect(b, a), intersect);
    });
  }

  test('covering implies intersecting, for every pair in the tables', () => {
    const all = [...new Set(table.flatMap(([a, b]) => [a, b]))];
    for (const a of all) {
      for (const b of all) {
        if (resourceCovers(a, b)) assert.equal(resourcesIntersect(a, b), true, `${a} ${b}`);
      }
    }
  });
});

describe('brute-force model of prefix patterns', () => {
  // Model: a concrete resource matches only itself; `p*` matches every string
  // that starts with p. Concrete paths in the items have length <= N, pattern
  // stems have paths of length <= N. The universe holds every path of length
  // <= N + 1 under two kinds, which makes the enumerated checks exact:
  //  - covers(P, Q), both patterns: if Q's stem q does not start with p, then q
  //    itself (length <= N) is matched by Q and not by P.
  //  - covers(c, Q), c concrete: Q matches q+'a' and q+'b' (length <= N + 1),
  //    two different strings, so they cannot both equal c; the model says false
  //    and so must the function.
  //  - intersects(P, Q): the longer stem (length <= N) is a common match if any.
  //  - a pair with a concrete side: that concrete resource is the only witness.
  // Kinds `d` and `db` check that a kind never bleeds into a longer kind.
  const ALPHABET = ['a', 'b', '/'];
  const KINDS = ['d', 'db'];
  const N = 3;

  const pathsUpTo = (length: number): string[] => {
    const out = [''];
    let frontier = [''];
    for (let i = 0; i < length; i++) {
      frontier = frontier.flatMap((prefix) => ALPHABET.map((c) => prefix + c));
      out.push(...frontier);
    }
    return out;
  };
  const universe = KINDS.flatMap((kind) => pathsUpTo(N + 1).map((path) => `${kind}:${path}`));
  const concretes = KINDS.flatMap((kind) => pathsUpTo(N).map((path) => `${kind}:${path}`));
  const patterns = concretes.map((stem) => `${stem}*`);
  const items = [...concretes, ...patterns];

  const matches = (resource: string, candidate: string): boolean =>
    resource.endsWith('*') ? candidate.startsWith(resource.slice(0, -1)) : candidate === resource;
  const matchedBy = new Map(items.map((item) => [item, universe.filter((u) => matches(item, u))]));

  // The model works on strings; only canonical names (no empty path, no empty
  // segment) are valid resources, and the functions must be right on both.
  const canonical = (resource: string): boolean => {
    const path = resource.slice(resource.indexOf(':') + 1);
    return path.length > 0 && path.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..');
  };

  test('an enumerated item is a valid resource exactly when it is canonical', () => {
    for (const item of items) assert.equal(isValidResource(item), canonical(item), item);
  });

  test('a resource covers another exactly when everything the inner one matches, the outer one matches', () => {
    let checked = 0;
    for (const outer of items) {
      for (const inner of items) {
        const model = matchedBy.get(inner)!.every((u) => matches(outer, u));
        assert.equal(resourceCovers(outer, inner), model, `resourceCovers(${outer}, ${inner})`);
        checked++;
      }
    }
    assert.equal(checked, items.length ** 2);
  });

  test('two resources intersect exactly when some resource is matched by both', () => {
    for (const a of items) {
      for (const b of items) {
        const model = matchedBy.get(a)!.some((u) => matches(b, u));
        assert.equal(resourcesIntersect(a, b), model, `resourcesIntersect(${a}, ${b})`);
      }
    }
  });

  test('a pattern never covers a resource outside its prefix', () => {
    for (const pattern of patterns) {
      const stem = pattern.slice(0, -1);
      for (const u of universe) {
        if (!u.startsWith(stem)) assert.equal(resourceCovers(pattern, u), false, `${pattern} ${u}`);
      }
    }
  });

  test('coverage is transitive: a grant covering a pattern covers everything the pattern covers', () => {
    for (const a of items) {
      for (const b of items) {
        if (!resourceCovers(a, b)) continue;
        for (const u of matchedBy.get(b)!) assert.equal(resourceCovers(a, u), true, `${a} ⊇ ${b} ∋ ${u}`);
      }
    }
  });
});

describe('scopes', () => {
  const grant: Scope[] = [
    { action: 'read', resource: 'db:orders/*' },
    { action: 'write', resource: 'tickets:T-1042' },
    { action: 'read', resource: 'db:*' },
  ];

  test('a scope covers another only for the very same action', () => {
    assert.equal(scopeCovers({ action: 'read', resource: 'db:*' }, { action: 'read', resource: 'db:x' }), true);
    assert.equal(scopeCovers({ action: 'read', resource: 'db:*' }, { action: 'write', resource: 'db:x' }), false);
    assert.equal(scopeCovers({ action: 'read', resource: 'db:*' }, { action: 'reads', resource: 'db:x' }), false);
    assert.equal(scopeCovers({ action: 'read', resource: 'db:*' }, { action: 'rea', resource: 'db:x' }), false);
    assert.equal(scopeCovers({ action: 'admin', resource: 'db:*' }, { action: 'read', resource: 'db:x' }), false);
  });

  test('a scope covers another only when its resource covers the other\'s resource', () => {
    assert.equal(scopeCovers({ action: 'read', resource: 'db:orders/1' }, { action: 'read', resource: 'db:orders/*' }), false);
    assert.equal(scopeCovers({ action: 'read', resource: 'db:orders/*' }, { action: 'read', resource: 'db:customers/1' }), false);
  });

  test('findCoveringScope returns the first granted scope that covers the request', () => {
    assert.deepEqual(findCoveringScope(grant, { action: 'read', resource: 'db:orders/7' }), grant[0]);
    assert.deepEqual(findCoveringScope(grant, { action: 'read', resource: 'db:customers/7' }), grant[2]);
    assert.deepEqual(findCoveringScope(grant, { action: 'write', resource: 'tickets:T-1042' }), grant[1]);
  });

  test('findCoveringScope finds nothing for another action, another resource or an empty grant', () => {
    assert.equal(findCoveringScope(grant, { action: 'write', resource: 'db:orders/7' }), undefined);
    assert.equal(findCoveringScope(grant, { action: 'write', resource: 'tickets:T-1043' }), undefined);
    assert.equal(findCoveringScope(grant, { action: 'write', resource: 'tickets:*' }), undefined);
    assert.equal(findCoveringScope([], { action: 'read', resource: 'db:orders/7' }), undefined);
  });
});

describe('scope claims', () => {
  test('a formatted claim parses back to the same scopes', () => {
    const lists: Scope[][] = [
      [],
      [{ action: 'read', resource: 'db:orders/*' }],
      [
        { action: 'read', resource: 'db:orders/*' },
        { action: 'write', resource: 'tickets:T-1042' },
        { action: 'export_csv', resource: 'api:x.example/a:b' },
        { action: 'read', resource: 'db:*' },
      ],
    ];
    for (const scopes of lists) assert.deepEqual(parseScopeClaim(formatScopeClaim(scopes)), scopes);
  });

  test('the claim is space-delimited action:resource entries', () => {
    assert.equal(formatScope({ action: 'read', resource: 'db:orders/*' }), 'read:db:orders/*');
    assert.equal(
      formatScopeClaim([
        { action: 'read', resource: 'db:orders/*' },
        { action: 'write', resource: 'tickets:T-1' },
      ]),
      'read:db:orders/* write:tickets:T-1',
    );
  });

  test('the action ends at the first colon; the resource keeps the rest', () => {
    assert.deepEqual(parseScopeClaim('read:api:a:b/c'), [{ action: 'read', resource: 'api:a:b/c' }]);
  });

  test('a claim with any unreadable entry grants nothing', () => {
    const bad: [string, string][] = [
      ['double space', 'read:db:x  write:db:y'],
      ['leading space', ' read:db:x'],
      ['trailing space', 'read:db:x '],
      ['a lone space', ' '],
      ['missing colon', 'read'],
      ['empty action', ':db:x'],
      ['action only', 'read:'],
      ['resource without kind', 'read:orders'],
      ['bare star', 'read:*'],
      ['inner star', 'read:db:a*b'],
      ['invalid action', 'Read:db:x'],
      ['tab separator', 'read:db:x\twrite:db:y'],
      ['newline separator', 'read:db:x\nwrite:db:y'],
      ['one bad among good', 'read:db:x write:DB:y read:db:z'],
    ];
    for (const [name, claim] of bad) assert.equal(parseScopeClaim(claim), undefined, name);
  });

  test('an empty claim is an empty list of scopes', () => {
    assert.deepEqual(parseScopeClaim(''), []);
  });
});
