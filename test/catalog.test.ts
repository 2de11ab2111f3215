/**
 * The resource catalog: sensitivity comes from here, never from the request,
 * and whatever the catalog does not know is treated as the default (fail closed).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { catalogSchema, createResourceCatalog } from '../src/policy/catalog.js';
import { SENSITIVITIES, sensitivityRank } from '../src/core/types.js';

const catalogOf = (document: unknown) => createResourceCatalog(catalogSchema.parse(document));

const shop = catalogOf({
  resources: [
    { pattern: 'tickets:*', sensitivity: 'internal' },
    { pattern: 'db:orders/*', sensitivity: 'confidential' },
    { pattern: 'db:customers/*', sensitivity: 'confidential' },
    { pattern: 'db:customers/pii/*', sensitivity: 'restricted' },
    { pattern: 'db:public/*', sensitivity: 'public' },
    { pattern: 'db:public/motd', sensitivity: 'internal' },
  ],
});

describe('createResourceCatalog', () => {
  test('a resource no entry covers gets restricted when the catalog names no default', () => {
    assert.equal(shop.sensitivityOf('db:unknown/1'), 'restricted');
    assert.equal(shop.sensitivityOf('files:report.pdf'), 'restricted');
    assert.equal(catalogOf({}).sensitivityOf('tickets:T-1'), 'restricted');
  });

  test('an unlisted resource gets the catalog\'s own default', () => {
    const lenient = catalogOf({ default: { sensitivity: 'internal' }, resources: [{ pattern: 'db:x/*', sensitivity: 'public' }] });
    assert.equal(lenient.sensitivityOf('db:y/1'), 'internal');
    assert.equal(lenient.sensitivityOf('db:x/1'), 'public');
  });

  test('a concrete resource gets the highest sensitivity of the entries covering it', () => {
    assert.equal(shop.sensitivityOf('db:customers/c1'), 'confidential');
    assert.equal(shop.sensitivityOf('db:customers/pii/x'), 'restricted');
    assert.equal(shop.sensitivityOf('db:orders/42'), 'confidential');
    assert.equal(shop.sensitivityOf('tickets:T-1042'), 'internal');
    assert.equal(shop.sensitivityOf('db:public/motd'), 'internal', 'a concrete entry raises a pattern');
    assert.equal(shop.sensitivityOf('db:public/faq'), 'public');
  });

  test('entry order does not matter: the maximum wins, not the first match', () => {
    const reversed = catalogOf({
      resources: [
        { pattern: 'db:customers/pii/*', sensitivity: 'restricted' },
        { pattern: 'db:customers/*', sensitivity: 'confidential' },
      ],
    });
    const forward = catalogOf({
      resources: [
        { pattern: 'db:customers/*', sensitivity: 'confidential' },
        { pattern: 'db:customers/pii/*', sensitivity: 'restricted' },
      ],
    });
    for (const resource of ['db:customers/*', 'db:customers/c1', 'db:customers/pii/x', 'db:customers/pii/*']) {
      assert.equal(reversed.sensitivityOf(resource), forward.sensitivityOf(resource), resource);
    }
  });

  test('a pattern gets the highest sensitivity of anything it could match', () => {
    assert.equal(shop.sensitivityOf('db:customers/*'), 'restricted', 'it could match pii rows');
    assert.equal(shop.sensitivityOf('db:customers/pii/*'), 'restricted');
    assert.equal(shop.sensitivityOf('db:orders/*'), 'confidential');
    assert.equal(shop.sensitivityOf('db:orders/2024/*'), 'confidential', 'wholly inside one entry');
    assert.equal(shop.sensitivityOf('db:public/*'), 'internal', 'it could match the motd');
    assert.equal(shop.sensitivityOf('tickets:*'), 'internal');
  });

  test('a pattern no single entry covers also gets the default', () => {
    assert.equal(shop.sensitivityOf('db:*'), 'restricted');
    const lenient = catalogOf({
      default: { sensitivity: 'internal' },
      resources: [
        { pattern: 'db:public/*', sensitivity: 'public' },
        { pattern: 'db:open/*', sensitivity: 'public' },
      ],
    });
    assert.equal(lenient.sensitivityOf('db:*'), 'internal', 'parts of db:* are unknown');
    assert.equal(lenient.sensitivityOf('db:p*'), 'internal', 'db:p* reaches beyond db:public/');
    assert.equal(lenient.sensitivityOf('db:public/*'), 'public');
    const strictDefaultLow = catalogOf({
      default: { sensitivity: 'public' },
      resources: [{ pattern: 'db:vault/*', sensitivity: 'restricted' }],
    });
    assert.equal(strictDefaultLow.sensitivityOf('db:*'), 'restricted', 'the default never lowers what an entry says');
  });

  test('a pattern touching no entry gets the default', () => {
    const lenient = catalogOf({ default: { sensitivity: 'confidential' }, resources: [{ pattern: 'db:x/*', sensitivity: 'public' }] });
    assert.equal(lenient.sensitivityOf('files:*'), 'confidential');
    assert.equal(lenient.sensitivityOf('db:y*'), 'confidential');
  });

  test('a concrete entry does not make a pattern request known', () => {
    const catalog = catalogOf({ default: { sensitivity: 'confidential' }, resources: [{ pattern: 'db:x', sensitivity: 'public' }] });
    assert.equal(catalog.sensitivityOf('db:x'), 'public');
    assert.equal(catalog.sensitivityOf('db:x*'), 'confidential');
  });

  test('asking again gives the same answer (the memo never changes a result)', () => {
    const catalog = catalogOf({ default: { sensitivity: 'internal' }, resources: [{ pattern: 'db:x/*', sensitivity: 'public' }] });
    const resources = ['db:x/*', 'db:x/1', 'db:*', 'db:y'];
    const expected = ['public', 'public', 'internal', 'internal'];
    for (let round = 0; round < 3; round++) assert.deepEqual(resources.map((r) => catalog.sensitivityOf(r)), expected, `round ${round}`);
  });

  test('a pattern is never rated lower than any concrete resource it matches', () => {
    const requests = ['db:*', 'db:customers/*', 'db:customers/p*', 'db:customers/pii/*', 'db:public/*', 'db:public/m*', 'tickets:*', 'db:orders/*'];
    const concretes = ['db:customers/c1', 'db:customers/pii/x', 'db:customers/px', 'db:public/motd', 'db:public/faq', 'db:orders/1', 'db:other', 'tickets:T-1'];
    for (const pattern of requests) {
      const stem = pattern.slice(0, -1);
      for (const concrete of concretes) {
        if (!concrete.startsWith(stem)) continue;
        assert.ok(
          sensitivityRank(shop.sensitivityOf(pattern)) >= sensitivityRank(shop.sensitivityOf(concrete)),
          `${pattern} (${shop.sensitivityOf(pattern)}) vs ${concrete} (${shop.sensitivityOf(concrete)})`,
        );
      }
    }
  });
});

describe('catalogSchema', () => {
  test('an empty document is a catalog with a restricted default and no entries', () => {
    assert.deepEqual(catalogSchema.parse({}), { kinds: {}, default: { sensitivity: 'restricted' }, resources: [] });
    assert.deepEqual(catalogSchema.parse({ default: {} }), { kinds: {}, default: { sensitivity: 'restricted' }, resources: [] });
  });

  test('every sensitivity level is accepted for entries and the default', () => {
    for (const sensitivity of SENSITIVITIES) {
      const parsed = catalogSchema.parse({ default: { sensitivity }, resources: [{ pattern: 'db:x/*', sensitivity, description: 'x' }] });
      assert.equal(parsed.default.sensitivity, sensitivity);
      assert.equal(parsed.resources[0]?.sensitivity, sensitivity);
    }
  });

  const invalid: [string, unknown][] = [
    ['an inner star', { resources: [{ pattern: 'db:or*ders', sensitivity: 'public' }] }],
    ['a bare star', { resources: [{ pattern: '*', sensitivity: 'public' }] }],
    ['a pattern without kind', { resources: [{ pattern: 'orders/*', sensitivity: 'public' }] }],
    ['whitespace in a pattern', { resources: [{ pattern: 'db:or ders', sensitivity: 'public' }] }],
    ['an unknown sensitivity', { resources: [{ pattern: 'db:x', sensitivity: 'secret' }] }],
    ['a capitalized sensitivity', { resources: [{ pattern: 'db:x', sensitivity: 'Public' }] }],
    ['an unknown default sensitivity', { default: { sensitivity: 'top-secret' } }],
    ['an entry without sensitivity', { resources: [{ pattern: 'db:x' }] }],
    ['an entry without pattern', { resources: [{ sensitivity: 'public' }] }],
    ['an unknown key in an entry', { resources: [{ pattern: 'db:x', sensitivity: 'public', owner: 'me' }] }],
    ['an unknown key in the default', { default: { sensitivity: 'public', level: 1 } }],
    ['an unknown top-level key', { resources: [], extra: true }],
    ['a misspelled top-level key', { resource: [] }],
    ['a description over 500 characters', { resources: [{ pattern: 'db:x', sensitivity: 'public', description: 'x'.repeat(501) }] }],
    ['resources that are not a list', { resources: { pattern: 'db:x', sensitivity: 'public' } }],
  ];
  for (const [name, document] of invalid) {
    test(`a catalog with ${name} is refused`, () => {
      assert.equal(catalogSchema.safeParse(document).success, false);
    });
  }
});

describe('the folder a pattern names', () => {
  test('X is as sensitive, and at as high a tier, as X/*: a bare name never escapes its entry', () => {
    const catalog = catalogOf({
      default: { sensitivity: 'internal' },
      resources: [
        { pattern: 'payments:*', sensitivity: 'confidential' },
        { pattern: 'payments:payouts/*', sensitivity: 'restricted', tier: 'admin' },
      ],
    });
    assert.equal(catalog.sensitivityOf('payments:payouts'), 'restricted');
    assert.equal(catalog.tierFloorOf('payments:payouts'), 'admin');
    assert.equal(catalog.tierFloorOf('payments:payouts/p1'), 'admin');
    assert.equal(catalog.tierFloorOf('payments:payouts-report'), 'read', 'only the folder itself, not every name sharing its prefix');
    assert.equal(catalog.sensitivityOf('payments:payouts-report'), 'confidential');
  });
});
