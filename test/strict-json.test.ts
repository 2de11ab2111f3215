/** Duplicate member names are found however they are spelled, at any depth, and only within one object. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findDuplicateKey } from '../src/core/strict-json.js';

test('finds a name used twice in one object, plain or escaped, at any depth', () => {
  assert.equal(findDuplicateKey('{"alg":"ES256","alg":"none"}'), 'alg');
  assert.equal(findDuplicateKey('{"kid":"a","k\\u0069d":"b"}'), 'kid');
  assert.equal(findDuplicateKey('{"a":{"b":1,"b":2}}'), 'b');
  assert.equal(findDuplicateKey('{"a":[{"x":1},{"y":1,"y":2}]}'), 'y');
  assert.equal(findDuplicateKey('{"a\\"b":1,"a\\"b":2}'), 'a"b');
});

test('the same name in sibling or nested objects, or as a string value, is not a duplicate', () => {
  assert.equal(findDuplicateKey('{"a":{"x":1},"b":{"x":1}}'), undefined);
  assert.equal(findDuplicateKey('{"x":{"x":{"x":1}}}'), undefined);
  assert.equal(findDuplicateKey('{"sub":"sub","aud":["sub","sub"]}'), undefined);
  assert.equal(findDuplicateKey('{"a":"{\\"a\\":1,\\"a\\":2}"}'), undefined, 'JSON inside a string is a string');
  assert.equal(findDuplicateKey('[{"a":1},{"a":1}]'), undefined);
});
