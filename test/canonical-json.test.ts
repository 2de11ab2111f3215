/**
 * RFC 8785 (JSON Canonicalization Scheme): the bytes the audit chain and the
 * approval argument digests hash. The same value must always give the same
 * text, whatever order its members were written in.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { canonicalize } from '../src/core/canonical-json.js';

describe('RFC 8785 examples', () => {
  test('the §3.2.2 sample is serialized byte for byte as the RFC prints it', () => {
    // Parsed from JSON text so the numbers are the doubles the RFC's input denotes.
    const input = JSON.parse(
      '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],' +
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",' +
        ' "literals": [null, true, false]}',
    );
    assert.equal(
      canonicalize(input),
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });

  test('members are sorted by UTF-16 code units, as in the §3.2.3 example', () => {
    const input = {
      '\u20ac': 'Euro Sign',
      '\r': 'Carriage Return',
      '\ufb33': 'Hebrew Letter Dalet With Dagesh',
      '1': 'One',
      '\ud83d\ude00': 'Emoji: Grinning Face',
      '\u0080': 'Control',
      '\u00f6': 'Latin Small Letter O With Diaeresis',
    };
    // §3.2.3: \r (000d) < 1 (0031) < \u0080 < \u00f6 < \u20ac < \ud83d (the emoji's
    // high surrogate) < \ufb33. The emoji sorts before U+FB33 although its code
    // point (U+1F600) is larger: the comparison is on UTF-16 code units.
    const expected =
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
      '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}';
    assert.equal(canonicalize(input), expected);
  });

  test('integer-like keys sort as strings, not in the engine\'s numeric property order', () => {
    // Object.keys lists "2" before "10"; JCS wants "10" < "2" < "a".
    assert.equal(canonicalize({ a: 3, 2: 2, 10: 1 }), '{"10":1,"2":2,"a":3}');
  });

  test('numbers are serialized as ECMAScript does (RFC 8785 §3.2.2.3 and appendix B)', () => {
    const table: [number, string][] = [
      [0, '0'],
      [-0, '0'],
      [1, '1'],
      [-1, '-1'],
      [4.5, '4.5'],
      [Number('4.50'), '4.5'],
      [2e-3, '0.002'],
      [0.000001, '0.000001'],
      [1e-7, '1e-7'],
      [0.0000001, '1e-7'],
      [1e21, '1e+21'],
      [1e20, '100000000000000000000'],
      [1e23, '1e+23'],
      [333333333.33333329, '333333333.3333333'],
      [9007199254740992, '9007199254740992'],
      [295147905179352830000, '295147905179352830000'],
      [5e-324, '5e-324'],
      [-5e-324, '-5e-324'],
      [1.7976931348623157e308, '1.7976931348623157e+308'],
      [-1.7976931348623157e308, '-1.7976931348623157e+308'],
    ];
    for (const [value, expected] of table) assert.equal(canonicalize(value), expected, `serializing ${expected}`);
  });
});

describe('strings', () => {
  test('control characters are escaped as lowercase \\u00xx, except the short forms', () => {
    assert.equal(canonicalize('\u001f'), '"\\u001f"');
    assert.equal(canonicalize('\u0000'), '"\\u0000"');
    assert.equal(canonicalize('\u000f'), '"\\u000f"');
    assert.equal(canonicalize('\n'), '"\\n"');
    assert.equal(canonicalize('\r'), '"\\r"');
    assert.equal(canonicalize('\t'), '"\\t"');
    assert.equal(canonicalize('\b'), '"\\b"');
    assert.equal(canonicalize('\f'), '"\\f"');
    assert.equal(canonicalize('"'), '"\\""');
    assert.equal(canonicalize('\\'), '"\\\\"');
  });

  test('characters outside the control range are written as themselves', () => {
    // JSON.stringify leaves U+2028/U+2029, DEL, "/" and non-ASCII unescaped; so must JCS.
    assert.equal(canonicalize('\u2028\u2029'), '"\u2028\u2029"');
    assert.equal(canonicalize('\u007f'), '"\u007f"');
    assert.equal(canonicalize('/'), '"/"');
    assert.equal(canonicalize('é€😀'), '"é€😀"');
  });

  test('member names are escaped like string values', () => {
    assert.equal(canonicalize({ 'a\nb': 1, 'q"': 2 }), '{"a\\nb":1,"q\\"":2}');
  });
});

describe('structure', () => {
  test('nested objects and arrays are canonicalized at every depth, with no whitespace', () => {
    const value = { z: [3, { y: 1, x: [true, null, 'b'] }], a: { d: { c: 1, b: 2 } } };
    assert.equal(canonicalize(value), '{"a":{"d":{"b":2,"c":1}},"z":[3,{"x":[true,null,"b"],"y":1}]}');
  });

  test('array order is kept, never sorted', () => {
    assert.equal(canonicalize([3, 1, 2]), '[3,1,2]');
    assert.equal(canonicalize(['b', 'a']), '["b","a"]');
  });

  test('empty containers and literals', () => {
    assert.equal(canonicalize({}), '{}');
    assert.equal(canonicalize([]), '[]');
    assert.equal(canonicalize(null), 'null');
    assert.equal(canonicalize(true), 'true');
    assert.equal(canonicalize(false), 'false');
    assert.equal(canonicalize(''), '""');
  });

  test('undefined members are omitted, wherever they sit', () => {
    assert.equal(canonicalize({ a: undefined, b: 1, c: undefined }), '{"b":1}');
    assert.equal(canonicalize({ only: undefined }), '{}');
    assert.equal(canonicalize({ n: { a: undefined } }), '{"n":{}}');
  });

  test('a value with toJSON is serialized as what toJSON returns', () => {
    assert.equal(canonicalize({ when: new Date(0) }), '{"when":"1970-01-01T00:00:00.000Z"}');
  });

  test('a null-prototype object serializes like a plain one', () => {
    const bare = Object.create(null) as Record<string, unknown>;
    bare.b = 1;
    bare.a = 2;
    assert.equal(canonicalize(bare), canonicalize({ a: 2, b: 1 }));
  });
});

describe('values JSON cannot carry are refused', () => {
  const hostile: [string, unknown][] = [
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
    ['a bigint', 10n],
    ['a function', () => 1],
    ['a symbol', Symbol('s')],
    ['undefined at the top', undefined],
    ['undefined in an array', [1, undefined, 2]],
    ['a hole in a sparse array', [1, , 2]],
    ['NaN nested in an object', { a: { b: NaN } }],
    ['a bigint nested in an array', [[1n]]],
    ['a function as a member', { f: () => 1 }],
  ];
  for (const [name, value] of hostile) {
    test(`${name} throws a TypeError rather than being silently dropped or rewritten`, () => {
      assert.throws(() => canonicalize(value), TypeError);
    });
  }
});

describe('properties', () => {
  const samples: unknown[] = [
    { b: 1, a: [1, 2, { d: 'x', c: null }], e: { '\u20ac': true, '\r': false } },
    [0.1, 1e21, -0, 5e-324, 333333333.33333329, 'x\u0000y', '\u2028'],
    { '': 0, ' ': 1, 'a b': [[], {}], nested: { deeper: { deepest: [1, [2, [3]]] } } },
    'just a string with "quotes" and \\ backslashes and \ud83d\ude00',
    { 10: 'ten', 2: 'two', '01': 'zero-one', a: undefined },
    { __proto__: null, x: 1 },
    JSON.parse('{"__proto__": {"polluted": true}, "k": 1}'),
    [null, true, false, '', 0, {}],
  ];

  test('canonical output parses back to a value with the same canonical form', () => {
    for (const value of samples) {
      const once = canonicalize(value);
      assert.equal(canonicalize(JSON.parse(once)), once);
    }
  });

  test('canonical output is valid JSON denoting the same data', () => {
    for (const value of samples) {
      const once = canonicalize(value);
      assert.deepEqual(JSON.parse(once), JSON.parse(JSON.stringify(value)));
    }
  });

  test('the order members were written in never changes the output', () => {
    const reversed = (value: unknown): unknown => {
      if (Array.isArray(value)) return value.map(reversed);
      if (value !== null && typeof value === 'object') {
        const out: Record<string, unknown> = {};
        for (const key of Object.keys(value).reverse()) {
          // defineProperty, not assignment: a "__proto__" member must stay a member.
          Object.defineProperty(out, key, { value: reversed((value as Record<string, unknown>)[key]), enumerable: true, writable: true, configurable: true });
        }
        return out;
      }
      return value;
    };
    for (const value of samples) assert.equal(canonicalize(reversed(value)), canonicalize(value));
    const a = { x: 1, y: { p: 1, q: 2 }, z: [1] };
    const b = { z: [1], y: { q: 2, p: 1 }, x: 1 };
    assert.equal(canonicalize(a), canonicalize(b));
  });

  test('different data never gives the same text', () => {
    const distinct = [{ a: 1 }, { a: '1' }, { a: [1] }, { a: null }, { b: 1 }, [1], '1', 1, { a: 1, b: undefined, c: 2 }];
    const texts = distinct.map((v) => canonicalize(v));
    assert.equal(new Set(texts).size, texts.length);
  });
});
