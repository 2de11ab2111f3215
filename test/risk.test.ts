/**
 * The risk score: a table of requests and their explained scores, monotonicity
 * in every signal, the cap, business hours across midnight and weekends,
 * identity-age decay, hostile input (never throws, never NaN, never lowers a
 * score), the settings schema, and determinism. Clocks are fixed instants.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SENSITIVITIES, TIERS } from '../src/core/types.js';
import { RISK_SIGNALS, riskSettingsSchema, scoreRisk, type RiskInput, type RiskScore, type RiskSettings } from '../src/policy/risk.js';

const DAY = 86_400_000;
const WEDNESDAY_NOON = Date.parse('2025-01-15T12:00:00Z');
const SATURDAY_NOON = Date.parse('2025-01-18T12:00:00Z');
const DEFAULTS = riskSettingsSchema.parse({});

/** A request that scores 0 with the default settings: sandbox, read, public, old identity, business hours. */
const quiet: RiskInput = {
  environment: 'sandbox',
  tier: 'read',
  sensitivity: 'public',
  identityCreatedAt: WEDNESDAY_NOON - 30 * DAY,
  now: WEDNESDAY_NOON,
  unusualResource: false,
  callsLastMinute: 0,
  delegationDepth: 0,
};
const request = (overrides: Partial<RiskInput>): RiskInput => ({ ...quiet, ...overrides });
/** The riskiest request there is. */
const loud = request({
  environment: 'production',
  tier: 'admin',
  sensitivity: 'restricted',
  identityCreatedAt: SATURDAY_NOON,
  now: SATURDAY_NOON,
  unusualResource: true,
  callsLastMinute: 1000,
  delegationDepth: 5,
  breakGlass: true,
});
const settings = (overrides: Record<string, unknown>): RiskSettings => riskSettingsSchema.parse(overrides);
const zeroWeights = Object.fromEntries(RISK_SIGNALS.map((name) => [name, 0]));
/** Settings where only `name` counts, with weight `points`. */
const only = (name: string, points: number): RiskSettings => settings({ weights: { ...zeroWeights, [name]: points } });
const pointsOf = (result: RiskScore) => Object.fromEntries(result.signals.map((s) => [s.name, s.points]));
const sumOf = (result: RiskScore) => result.signals.reduce((total, s) => total + s.points, 0);

test('the fixed instants are the weekdays the tests say', () => {
  assert.equal(new Date(WEDNESDAY_NOON).getUTCDay(), 3);
  assert.equal(new Date(SATURDAY_NOON).getUTCDay(), 6);
});

describe('scores with the default settings', () => {
  const cases: Array<{ name: string; input: RiskInput; score: number; level: string; signals: Record<string, number> }> = [
    { name: 'a read of public data in the sandbox scores nothing', input: quiet, score: 0, level: 'low', signals: {} },
    {
      name: 'a read of internal data in production is medium',
      input: request({ environment: 'production', sensitivity: 'internal' }),
      score: 27,
      level: 'medium',
      signals: { environment: 20, sensitivity: 6.67 },
    },
    {
      name: 'admin on restricted data in production is high',
      input: request({ environment: 'production', tier: 'admin', sensitivity: 'restricted' }),
      score: 65,
      level: 'high',
      signals: { tier: 25, environment: 20, sensitivity: 20 },
    },
    {
      name: 'a half-new identity, half the saturating rate, one delegation hop in staging',
      input: request({
        environment: 'staging',
        tier: 'write',
        sensitivity: 'confidential',
        identityCreatedAt: WEDNESDAY_NOON - 3.5 * DAY,
        callsLastMinute: 30,
        delegationDepth: 1,
      }),
      score: 43,
      level: 'medium',
      signals: { sensitivity: 13.33, environment: 10, tier: 6.25, identityAge: 5, callRate: 5, delegationDepth: 3.33 },
    },
    {
      name: 'an export of confidential data from development, a new resource kind, on a Saturday',
      input: request({ environment: 'development', tier: 'export', sensitivity: 'confidential', unusualResource: true, now: SATURDAY_NOON, identityCreatedAt: SATURDAY_NOON - 30 * DAY }),
      score: 51,
      level: 'high',
      signals: { tier: 18.75, sensitivity: 13.33, unusualResource: 10, offHours: 5, environment: 4 },
    },
    {
      name: 'break-glass alone lifts a harmless read to medium',
      input: request({ breakGlass: true }),
      score: 25,
      level: 'medium',
      signals: { breakGlass: 25 },
    },
    {
      name: 'everything at once is capped at 100',
      input: loud,
      score: 100,
      level: 'critical',
      signals: { environment: 20, tier: 25, sensitivity: 20, identityAge: 10, unusualResource: 10, callRate: 10, delegationDepth: 10, offHours: 5, breakGlass: 25 },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const result = scoreRisk(c.input, DEFAULTS);
      assert.equal(result.score, c.score);
      assert.equal(result.level, c.level);
      assert.deepEqual(pointsOf(result), c.signals);
    });
  }

  test('signals are listed most points first, ties in RISK_SIGNALS order, and only those that gave points', () => {
    for (const c of cases) {
      const { signals } = scoreRisk(c.input, DEFAULTS);
      for (const signal of signals) assert.ok(signal.points > 0 && signal.detail.length > 0, signal.name);
      for (let i = 1; i < signals.length; i++) {
        const [a, b] = [signals[i - 1]!, signals[i]!];
        assert.ok(a.points > b.points || (a.points === b.points && RISK_SIGNALS.indexOf(a.name) < RISK_SIGNALS.indexOf(b.name)), `${a.name} before ${b.name}`);
      }
    }
    assert.deepEqual(
      scoreRisk(request({ environment: 'production', tier: 'admin', sensitivity: 'restricted' }), DEFAULTS).signals.map((s) => s.name),
      ['tier', 'environment', 'sensitivity'],
    );
  });
});

/** A spread of requests to check properties over. */
function* grid(): Generator<RiskInput> {
  for (const environment of ['sandbox', 'development', 'staging', 'production']) {
    for (const tier of TIERS) {
      for (const sensitivity of SENSITIVITIES) {
        for (const [calls, depth, age, unusual, now] of [
          [0, 0, 30, false, WEDNESDAY_NOON],
          [45, 2, 1, true, SATURDAY_NOON],
        ] as const) {
          yield request({ environment, tier, sensitivity, callsLastMinute: calls, delegationDepth: depth, identityCreatedAt: now - age * DAY, unusualResource: unusual, now });
        }
      }
    }
  }
}

test('the score is the signals added up, capped at 100 and rounded once: an audit record can be rechecked', () => {
  for (const s of [DEFAULTS, settings({ weights: { tier: 100, sensitivity: 100 } }), settings({ weights: { environment: 7, callRate: 33 } })]) {
    for (const input of grid()) {
      const result = scoreRisk(input, s);
      assert.equal(result.score, Math.round(Math.min(100, sumOf(result))));
      assert.ok(Number.isInteger(result.score) && result.score >= 0 && result.score <= 100);
    }
  }
});

describe('raising a signal never lowers the score', () => {
  const ladders: Array<[string, ReadonlyArray<Partial<RiskInput>>]> = [
    ['tier', TIERS.map((tier) => ({ tier }))],
    ['sensitivity', SENSITIVITIES.map((sensitivity) => ({ sensitivity }))],
    ['environment', ['sandbox', 'development', 'staging', 'production'].map((environment) => ({ environment }))],
    ['call rate', [-5, 0, 1, 10, 59, 60, 61, 1000, Infinity].map((callsLastMinute) => ({ callsLastMinute }))],
    ['delegation depth', [0, 1, 2, 3, 4, 10].map((delegationDepth) => ({ delegationDepth }))],
    ['unusual resource', [{ unusualResource: false }, { unusualResource: true }]],
    ['break-glass', [{ breakGlass: false }, { breakGlass: true }]],
  ];
  for (const [name, ladder] of ladders) {
    test(name, () => {
      for (const base of grid()) {
        let previous = -1;
        for (const step of ladder) {
          const { score } = scoreRisk({ ...base, ...step }, DEFAULTS);
          assert.ok(score >= previous, `${name} ${JSON.stringify(step)} lowered ${previous} to ${score}`);
          previous = score;
        }
      }
    });
  }

  test('a younger identity', () => {
    for (const base of grid()) {
      let previous = -1;
      for (const days of [400, 30, 7, 6, 3.5, 1, 0.01, 0, -3]) {
        const { score } = scoreRisk({ ...base, identityCreatedAt: base.now - days * DAY }, DEFAULTS);
        assert.ok(score >= previous, `age ${days} days lowered ${previous} to ${score}`);
        previous = score;
      }
    }
  });

  test('each signal alone grows strictly with its input where it is not saturated', () => {
    const tiers = TIERS.map((tier) => scoreRisk(request({ tier }), only('tier', 100)).score);
    assert.deepEqual(tiers, [0, 25, 50, 75, 100]);
    const sensitivities = SENSITIVITIES.map((sensitivity) => scoreRisk(request({ sensitivity }), only('sensitivity', 100)).score);
    assert.deepEqual(sensitivities, [0, 33, 67, 100]);
    const rates = [0, 15, 30, 60, 120].map((callsLastMinute) => scoreRisk(request({ callsLastMinute }), only('callRate', 100)).score);
    assert.deepEqual(rates, [0, 25, 50, 100, 100]);
    const depths = [0, 1, 2, 3, 7].map((delegationDepth) => scoreRisk(request({ delegationDepth }), only('delegationDepth', 100)).score);
    assert.deepEqual(depths, [0, 33, 67, 100, 100]);
  });
});

test('zero weights score every request 0, low, with no signals', () => {
  const none = settings({ weights: zeroWeights });
  for (const input of [...grid(), loud]) {
    assert.deepEqual(scoreRisk(input, none), { score: 0, level: 'low', signals: [] });
  }
});

test('the score is capped at 100 while every signal is still listed with its full points', () => {
  const all100 = settings({ weights: Object.fromEntries(RISK_SIGNALS.map((name) => [name, 100])) });
  const result = scoreRisk(loud, all100);
  assert.equal(result.score, 100);
  assert.equal(result.level, 'critical');
  assert.equal(result.signals.length, RISK_SIGNALS.length);
  assert.equal(sumOf(result), 900);
});

test('levels follow the thresholds, each threshold being the lowest score of its level', () => {
  const levelAt = (score: number, thresholds?: Record<string, number>) =>
    scoreRisk(request({ unusualResource: true }), settings({ weights: { ...zeroWeights, unusualResource: score }, ...(thresholds ? { thresholds } : {}) })).level;
  const expected: Array<[number, string]> = [[0, 'low'], [24, 'low'], [25, 'medium'], [49, 'medium'], [50, 'high'], [74, 'high'], [75, 'critical'], [100, 'critical']];
  for (const [score, level] of expected) assert.equal(levelAt(score), level, `score ${score}`);
  assert.equal(levelAt(10, { medium: 10, high: 20, critical: 30 }), 'medium');
  assert.equal(levelAt(29, { medium: 10, high: 20, critical: 30 }), 'high');
  assert.equal(levelAt(30, { medium: 10, high: 20, critical: 30 }), 'critical');
});

describe('off-hours', () => {
  const at = (iso: string, businessHours?: RiskInput['businessHours'], s: RiskSettings = only('offHours', 100)) => {
    const now = Date.parse(iso);
    return scoreRisk(request({ now, identityCreatedAt: now - 30 * DAY, businessHours }), s).score === 100;
  };

  test('default business hours are 08–18 UTC Monday to Friday; Saturday noon is off-hours', () => {
    const table: Array<[string, boolean]> = [
      ['2025-01-15T12:00:00Z', false], // Wednesday noon
      ['2025-01-17T17:59:59Z', false], // Friday, last minute of the day
      ['2025-01-17T18:00:00Z', true], // Friday, closing time
      ['2025-01-18T12:00:00Z', true], // Saturday noon
      ['2025-01-19T23:59:59Z', true], // Sunday, before midnight
      ['2025-01-20T00:00:00Z', true], // Monday, midnight
      ['2025-01-20T07:59:59Z', true], // Monday, before opening
      ['2025-01-20T08:00:00Z', false], // Monday, opening
    ];
    for (const [iso, off] of table) assert.equal(at(iso), off, iso);
  });

  test('a window past midnight belongs to the weekday it opened on', () => {
    const night = { start: 22, end: 6, weekdays: [1, 2, 3, 4, 5] };
    const table: Array<[string, boolean]> = [
      ['2025-01-20T23:00:00Z', false], // Monday night
      ['2025-01-21T03:00:00Z', false], // Tuesday 03:00: Monday's shift
      ['2025-01-20T03:00:00Z', true], // Monday 03:00: Sunday's shift, not worked
      ['2025-01-18T02:00:00Z', false], // Saturday 02:00: Friday's shift
      ['2025-01-18T06:00:00Z', true], // Saturday 06:00: Friday's shift has ended
      ['2025-01-18T23:00:00Z', true], // Saturday night
      ['2025-01-15T12:00:00Z', true], // Wednesday noon, outside a night shift
    ];
    for (const [iso, off] of table) {
      assert.equal(at(iso, night), off, `override ${iso}`);
      assert.equal(at(iso, undefined, settings({ weights: { ...zeroWeights, offHours: 100 }, businessHours: night })), off, `settings ${iso}`);
    }
  });

  test('an always-open window is never off-hours and an empty week always is', () => {
    for (const iso of ['2025-01-18T00:00:00Z', '2025-01-18T23:59:59Z', '2025-01-15T12:00:00Z']) {
      assert.equal(at(iso, { start: 0, end: 24, weekdays: [0, 1, 2, 3, 4, 5, 6] }), false, iso);
      assert.equal(at(iso, { start: 0, end: 24, weekdays: [] }), true, iso);
    }
  });

  test('invalid business hours in the request count as off-hours, never as business hours', () => {
    const bad: unknown[] = [{ start: 8, end: 8, weekdays: [3] }, { start: -1, end: 18, weekdays: [3] }, { start: 8, end: 25, weekdays: [3] }, { start: Number.NaN, end: 18, weekdays: [3] }, { start: 8, end: 18, weekdays: [9] }, { start: 8, end: 18 }, null, 'always', { start: 8, end: 18, weekdays: [3], extra: 1 }];
    for (const hours of bad) assert.equal(at('2025-01-15T12:00:00Z', hours as RiskInput['businessHours']), true, JSON.stringify(hours));
  });
});

test('a new identity counts in full and fades linearly to nothing over newIdentityDays', () => {
  const ageScore = (days: number, s = only('identityAge', 100)) => scoreRisk(request({ identityCreatedAt: WEDNESDAY_NOON - days * DAY }), s).score;
  assert.deepEqual([0, 1.75, 3.5, 5.25, 7, 8, 365].map((days) => ageScore(days)), [100, 75, 50, 25, 0, 0, 0]);
  assert.equal(ageScore(-2), 100, 'a creation time in the future is a brand-new identity');
  const thirty = settings({ weights: { ...zeroWeights, identityAge: 100 }, newIdentityDays: 30 });
  assert.deepEqual([0, 15, 29, 30].map((days) => ageScore(days, thirty)), [100, 50, 3, 0]);
  assert.equal(scoreRisk(request({ identityCreatedAt: WEDNESDAY_NOON - 7 * DAY }), DEFAULTS).signals.length, 0, 'an identity of exactly newIdentityDays contributes nothing');
});

describe('hostile input never throws, never gives NaN, and never lowers a score', () => {
  const hostile: unknown[] = [Number.NaN, -1, -Infinity, Infinity, 1e308, '5', '', null, undefined, {}, [], true, Symbol('x'), 2 ** 53];
  const fields = ['environment', 'tier', 'sensitivity', 'identityCreatedAt', 'now', 'unusualResource', 'callsLastMinute', 'delegationDepth', 'businessHours', 'breakGlass'] as const;

  test('every field, every bad value', () => {
    for (const field of fields) {
      for (const value of hostile) {
        for (const base of [quiet, loud]) {
          const result = scoreRisk({ ...base, [field]: value } as RiskInput, DEFAULTS);
          assert.ok(Number.isInteger(result.score) && result.score >= 0 && result.score <= 100, `${field}=${String(value)}: ${result.score}`);
          for (const signal of result.signals) assert.ok(Number.isFinite(signal.points) && signal.points > 0, `${field}=${String(value)} ${signal.name}`);
        }
      }
    }
  });

  test('an unreadable value counts as the riskiest one', () => {
    const full = (name: string, overrides: Record<string, unknown>) =>
      assert.equal(scoreRisk(request(overrides as Partial<RiskInput>), only(name, 100)).score, 100, `${name} ${JSON.stringify(overrides)}`);
    full('tier', { tier: 'superuser' });
    full('tier', { tier: undefined });
    full('sensitivity', { sensitivity: 'secret' });
    full('environment', { environment: 'prod' });
    full('environment', { environment: 42 });
    full('identityAge', { identityCreatedAt: Number.NaN });
    full('identityAge', { identityCreatedAt: '2020-01-01' });
    full('identityAge', { now: Number.NaN });
    full('offHours', { now: Number.NaN });
    full('offHours', { now: 9e15 }); // beyond the range of Date
    full('unusualResource', { unusualResource: undefined });
    full('unusualResource', { unusualResource: 'no' });
    full('callRate', { callsLastMinute: Number.NaN });
    full('callRate', { callsLastMinute: '3' });
    full('delegationDepth', { delegationDepth: Number.NaN });
    full('breakGlass', { breakGlass: 'false' });
  });

  test('numbers out of range are clamped into it', () => {
    assert.equal(scoreRisk(request({ callsLastMinute: -100 }), only('callRate', 100)).score, 0);
    assert.equal(scoreRisk(request({ delegationDepth: -4 }), only('delegationDepth', 100)).score, 0);
    assert.equal(scoreRisk(request({ callsLastMinute: Infinity }), only('callRate', 100)).score, 100);
  });

  test('environment names that are properties of Object.prototype are unknown environments', () => {
    for (const environment of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      assert.equal(scoreRisk(request({ environment }), only('environment', 100)).score, 100, environment);
    }
  });

  test('a missing input scores as every signal unreadable', () => {
    const result = scoreRisk(undefined as unknown as RiskInput, DEFAULTS);
    assert.equal(result.score, 100);
    assert.deepEqual(new Set(result.signals.map((s) => s.name)), new Set(RISK_SIGNALS.filter((name) => name !== 'breakGlass')));
  });

  test('a weight that bypassed the schema and is not a number scores 100, never low', () => {
    const broken = { ...DEFAULTS, weights: { ...DEFAULTS.weights, tier: Number.NaN } } as RiskSettings;
    assert.equal(scoreRisk(quiet, broken).score, 100);
    assert.equal(scoreRisk(quiet, broken).level, 'critical');
  });

  test('details stay short even when the input is long', () => {
    const result = scoreRisk(request({ environment: 'x'.repeat(10_000) }), DEFAULTS);
    assert.ok(result.signals.every((s) => s.detail.length < 200));
  });
});

describe('settings', () => {
  test('the defaults', () => {
    assert.deepEqual(riskSettingsSchema.parse({}), {
      weights: { environment: 20, tier: 25, sensitivity: 20, identityAge: 10, unusualResource: 10, callRate: 10, delegationDepth: 10, offHours: 5, breakGlass: 25 },
      environmentFactors: { production: 1, staging: 0.5, development: 0.2, sandbox: 0 },
      newIdentityDays: 7,
      renewalLimit: 'critical',
      saturatingCallsPerMinute: 60,
      saturatingDelegationDepth: 3,
      businessHours: { start: 8, end: 18, weekdays: [1, 2, 3, 4, 5] },
      thresholds: { medium: 25, high: 50, critical: 75 },
    });
  });

  test('a partial section keeps the defaults of the fields it does not name', () => {
    const parsed = settings({ weights: { tier: 60 }, thresholds: { critical: 90 } });
    assert.equal(parsed.weights.tier, 60);
    assert.equal(parsed.weights.environment, 20);
    assert.deepEqual(parsed.thresholds, { medium: 25, high: 50, critical: 90 });
  });

  test('defaults are fresh objects: changing one parse cannot change the next', () => {
    const first = riskSettingsSchema.parse({});
    first.businessHours.weekdays.push(6);
    first.environmentFactors.sandbox = 1;
    assert.deepEqual(riskSettingsSchema.parse({}).businessHours.weekdays, [1, 2, 3, 4, 5]);
    assert.equal(riskSettingsSchema.parse({}).environmentFactors.sandbox, 0);
  });

  test('bad settings are refused, naming the field', () => {
    const refused: Array<[unknown, string]> = [
      [{ weights: { tier: -1 } }, 'weights.tier'],
      [{ weights: { tier: 101 } }, 'weights.tier'],
      [{ weights: { tier: 2.5 } }, 'weights.tier'],
      [{ weights: { tier: Number.NaN } }, 'weights.tier'],
      [{ weights: { tier: '10' } }, 'weights.tier'],
      [{ weights: { tier: null } }, 'weights.tier'],
      [{ weights: { luck: 10 } }, 'weights'],
      [{ weights: 10 }, 'weights'],
      [{ environmentFactors: { production: 1.5 } }, 'environmentFactors.production'],
      [{ environmentFactors: { production: -0.1 } }, 'environmentFactors.production'],
      [{ environmentFactors: { Production: 1 } }, 'environmentFactors.Production'],
      [{ newIdentityDays: 0 }, 'newIdentityDays'],
      [{ saturatingCallsPerMinute: 0 }, 'saturatingCallsPerMinute'],
      [{ saturatingDelegationDepth: 0 }, 'saturatingDelegationDepth'],
      [{ businessHours: { start: 8, end: 8, weekdays: [1] } }, 'businessHours.end'],
      [{ businessHours: { start: 24, end: 6, weekdays: [1] } }, 'businessHours.start'],
      [{ businessHours: { start: 8, end: 18, weekdays: [7] } }, 'businessHours.weekdays.0'],
      [{ thresholds: { medium: 50, high: 50 } }, 'thresholds'],
      [{ thresholds: { medium: 60 } }, 'thresholds'],
      [{ thresholds: { critical: 0 } }, 'thresholds.critical'],
      [{ riskiness: 'high' }, ''],
    ];
    for (const [input, path] of refused) {
      const result = riskSettingsSchema.safeParse(input);
      assert.equal(result.success, false, JSON.stringify(input));
      assert.equal(result.error?.issues[0]?.path.join('.'), path, JSON.stringify(input));
    }
  });
});

test('the same request and settings always give the same score', () => {
  for (const input of [...grid(), loud]) {
    const first = scoreRisk(input, DEFAULTS);
    const again = scoreRisk(structuredClone(input), riskSettingsSchema.parse({}));
    assert.deepEqual(again, first);
    assert.ok(Object.isFrozen(first) && Object.isFrozen(first.signals) && first.signals.every((s) => Object.isFrozen(s)));
  }
});
