/**
 * The risk score: a number 0–100 for one request, made of named signals an
 * operator can read back. A pure function: the clock, the identity's history
 * and its call rate are inputs, gathered by the broker or the enforcement point.
 *
 * Each signal's points are `weight × factor`, the weight (0–100) from settings
 * and the factor in [0, 1] from the request. The score is the plain sum of the
 * points, capped at 100 and rounded once, at the end, to an integer; signals
 * that gave nothing are left out, so the listed signals add up to the score
 * (before the cap). Points are kept to hundredths, so the score can be
 * recomputed exactly from what the audit record holds.
 *
 * The signals, and why each matters for an agent (OWASP Top 10 for Agentic
 * Applications 2026, ASInn; OWASP Non-Human Identities Top 10 2025, NHIn):
 *
 * - `environment`: the environment's factor from `environmentFactors`
 *   (production 1, staging 0.5, development 0.2, sandbox 0). Production is
 *   where a mistake or a hijacked goal does real damage (NHI8, environment
 *   isolation). An environment not in the map counts as production.
 * - `tier`: read 0, write ¼, delete ½, export ¾, admin 1. What the action can
 *   break or leak is the strongest single signal (ASI02 tool misuse, NHI5
 *   overprivileged identities).
 * - `sensitivity`: public 0, internal ⅓, confidential ⅔, restricted 1. What a
 *   manipulated agent could exfiltrate (ASI01 goal hijack).
 * - `identityAge`: 1 for an identity created now, falling linearly to 0 at
 *   `newIdentityDays`. A fresh identity has no track record and may have been
 *   registered by whoever wants to abuse it (ASI03 identity and privilege abuse,
 *   ASI10 rogue agents).
 * - `unusualResource`: 1 when this identity has never touched this kind of
 *   resource before. An agent wandering off its usual ground is the visible
 *   trace of a changed goal (ASI01, ASI10).
 * - `callRate`: calls in the last minute over `saturatingCallsPerMinute`, at
 *   most 1. Agents act at machine speed: a runaway loop or a bulk exfiltration
 *   shows up as a rate first (ASI08 cascading failures).
 * - `delegationDepth`: depth over `saturatingDelegationDepth`, at most 1. Each
 *   hop of agent-to-agent delegation moves the action further from the identity
 *   that was vetted and the human who is accountable (ASI03, ASI07 insecure
 *   inter-agent communication).
 * - `offHours`: 1 outside business hours (UTC). Agents legitimately work at
 *   night, so the default weight is small; but fewer people are watching alerts
 *   and approvals then (ASI09 human-agent trust exploitation).
 * - `breakGlass`: 1 for a break-glass grant. It exists to bypass the usual
 *   controls, so every use must stand out.
 *
 * Hostile or broken input never throws and never yields NaN. Numbers are
 * clamped into their range (a negative rate is 0, an infinite one saturates);
 * a value that cannot be read at all (NaN, a string where a number belongs, an
 * unknown tier or sensitivity, an invalid business-hours override, a missing
 * `unusualResource`) counts as the riskiest value. A caller's bug can raise a
 * score, never lower it.
 */
import { z } from 'zod';
import { SENSITIVITIES, TIERS, isTier, sensitivityRank, tierRank, type Sensitivity, type Tier } from '../core/types.js';

/** The signals, in the order used to break ties between equal points. */
export const RISK_SIGNALS = [
  'environment',
  'tier',
  'sensitivity',
  'identityAge',
  'unusualResource',
  'callRate',
  'delegationDepth',
  'offHours',
  'breakGlass',
] as const;
export type RiskSignalName = (typeof RISK_SIGNALS)[number];

export const RISK_LEVELS = ['low', 'medium', 'high', 'critical'] as const;
export type RiskLevel = (typeof RISK_LEVELS)[number];

const DAY_MS = 86_400_000;
const WEEKDAY_NAMES = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const;

const weight = (fallback: number) => z.number().int().min(0).max(100).default(fallback);

/**
 * Business hours in UTC: from hour `start` (inclusive) to hour `end`
 * (exclusive) on each of `weekdays` (0 = Sunday … 6 = Saturday). When `start`
 * is after `end` the window runs past midnight (22 → 6), and the hours after
 * midnight belong to the weekday the window opened on.
 */
export const businessHoursSchema = z
  .object({
    start: z.number().int().min(0).max(23),
    end: z.number().int().min(1).max(24),
    weekdays: z.array(z.number().int().min(0).max(6)).max(7),
  })
  .strict()
  .refine((hours) => hours.start !== hours.end, { message: 'start and end must differ (use 0 and 24 for the whole day)', path: ['end'] });
export type BusinessHours = z.output<typeof businessHoursSchema>;

/**
 * Settings of the risk score, ready to sit in the configuration as `policy.risk`.
 * Every field has a default; `riskSettingsSchema.parse({})` gives the defaults.
 */
export const riskSettingsSchema = z
  .object({
    /**
     * Points each signal gives at full strength, 0–100. The defaults add up to
     * more than 100 on purpose: no single signal reaches `critical`, several
     * together do. A weight of 0 turns a signal off.
     */
    weights: z
      .object({
        environment: weight(20),
        tier: weight(25),
        sensitivity: weight(20),
        identityAge: weight(10),
        unusualResource: weight(10),
        callRate: weight(10),
        delegationDepth: weight(10),
        offHours: weight(5),
        breakGlass: weight(25),
      })
      .strict()
      .prefault({}),
    /**
     * The environment factor, 0–1, per environment. Replaces the default map
     * as a whole; an environment it does not name counts as 1 (production).
     */
    environmentFactors: z
      .record(z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, 'lowercase letters, digits and dashes'), z.number().min(0).max(1))
      .default(() => ({ production: 1, staging: 0.5, development: 0.2, sandbox: 0 })),
    /** Days over which a new identity's `identityAge` signal falls from full to nothing. */
    newIdentityDays: z.number().positive().max(365).default(7),
    /** Calls per minute at which `callRate` counts in full. Nothing is refused at this rate; it only scores. */
    saturatingCallsPerMinute: z.number().int().min(1).max(1_000_000).default(60),
    /** Delegation depth at which `delegationDepth` counts in full (0 = acting directly). */
    saturatingDelegationDepth: z.number().int().min(1).max(32).default(3),
    /** Business hours, UTC; `offHours` counts outside them. Default 08–18 Monday to Friday. */
    businessHours: businessHoursSchema.default(() => ({ start: 8, end: 18, weekdays: [1, 2, 3, 4, 5] })),
    /**
     * A renewal at a checkpoint is refused when the fresh decision of any scope
     * it keeps scores this level or more, whatever policy allows: risk that has
     * risen this far ends the run at its next checkpoint.
     */
    renewalLimit: z.enum(['medium', 'high', 'critical']).default('critical'),
    /** The lowest score of each level; below `medium` is `low`. Must increase strictly. */
    thresholds: z
      .object({
        medium: z.number().int().min(1).max(100).default(25),
        high: z.number().int().min(1).max(100).default(50),
        critical: z.number().int().min(1).max(100).default(75),
      })
      .strict()
      .prefault({})
      .refine((t) => t.medium < t.high && t.high < t.critical, { message: 'thresholds must increase: medium < high < critical' }),
  })
  .strict();
export type RiskSettings = z.output<typeof riskSettingsSchema>;

export interface RiskInput {
  /** The environment the task acts in; weighed by `environmentFactors`. */
  readonly environment: string;
  readonly tier: Tier;
  readonly sensitivity: Sensitivity;
  /** When the identity was created, epoch ms. */
  readonly identityCreatedAt: number;
  /** The decision time, epoch ms (UTC). */
  readonly now: number;
  /** True when this identity has not touched this kind of resource before. */
  readonly unusualResource: boolean;
  /** This identity's calls in the last minute. */
  readonly callsLastMinute: number;
  /** 0 when acting directly, 1 for a task delegated once, and so on. */
  readonly delegationDepth: number;
  /** Business hours for this request (the owner's schedule), instead of the settings'. */
  readonly businessHours?: BusinessHours | undefined;
  readonly breakGlass?: boolean | undefined;
}

export interface RiskSignal {
  readonly name: RiskSignalName;
  /** `weight × factor`, to hundredths; always > 0 in a score. */
  readonly points: number;
  /** One line for people: what was seen. */
  readonly detail: string;
}

export interface RiskScore {
  /** An integer 0–100: the signals' points added up, capped at 100, rounded once. */
  readonly score: number;
  readonly level: RiskLevel;
  /** The signals that contributed, most points first (ties in `RISK_SIGNALS` order). */
  readonly signals: readonly RiskSignal[];
}

/**
 * Scores one request. Pure and deterministic: the same input and settings give
 * the same score, with no clock or I/O of its own.
 *
 * Never throws and never returns NaN, whatever the input holds: unreadable
 * values count as the riskiest (see the module comment). `settings` must come
 * from `riskSettingsSchema`; they are not validated again here. Should they
 * still produce a non-number, the score is 100: a risk that cannot be computed
 * is treated as the highest.
 */
export function scoreRisk(request: RiskInput, settings: RiskSettings): RiskScore {
  // A missing input (a JavaScript caller's bug) scores as if every field were unreadable.
  const input: Partial<RiskInput> = request ?? {};
  const { weights } = settings;
  const measured: Array<readonly [RiskSignalName, number, string]> = [
    ['environment', ...environmentFactor(input.environment, settings.environmentFactors)],
    ['tier', ...tierFactor(input.tier)],
    ['sensitivity', ...sensitivityFactor(input.sensitivity)],
    ['identityAge', ...identityAgeFactor(input.identityCreatedAt, input.now, settings.newIdentityDays)],
    ['unusualResource', ...unusualResourceFactor(input.unusualResource)],
    ['callRate', ...saturating(input.callsLastMinute, settings.saturatingCallsPerMinute, 'calls in the last minute')],
    ['delegationDepth', ...saturating(input.delegationDepth, settings.saturatingDelegationDepth, 'delegation depth')],
    ['offHours', ...offHoursFactor(input.now, input.businessHours, settings.businessHours)],
    ['breakGlass', ...breakGlassFactor(input.breakGlass)],
  ];

  const signals: RiskSignal[] = [];
  let total = 0;
  for (const [name, factor, detail] of measured) {
    const points = Math.round(weights[name] * factor * 100) / 100;
    if (Number.isNaN(points)) total = Number.NaN; // only from settings that bypassed the schema
    if (!(points > 0)) continue;
    total += points;
    signals.push(Object.freeze({ name, points, detail }));
  }
  signals.sort((a, b) => b.points - a.points || RISK_SIGNALS.indexOf(a.name) - RISK_SIGNALS.indexOf(b.name));

  // INVARIANT: the score is a finite integer in [0, 100]; a NaN would compare
  // false against every threshold and read as low risk, so it becomes 100.
  const score = Number.isFinite(total) ? Math.round(Math.min(100, Math.max(0, total))) : 100;
  return Object.freeze({ score, level: levelOf(score, settings.thresholds), signals: Object.freeze(signals) });
}

type Factor = readonly [factor: number, detail: string];

function levelOf(score: number, thresholds: RiskSettings['thresholds']): RiskLevel {
  if (score >= thresholds.critical) return 'critical';
  if (score >= thresholds.high) return 'high';
  if (score >= thresholds.medium) return 'medium';
  return 'low';
}

function environmentFactor(environment: unknown, factors: RiskSettings['environmentFactors']): Factor {
  // INVARIANT: the map is keyed by input; own keys only, so `constructor` or
  // `__proto__` is an unknown environment, not a property of Object.prototype.
  if (typeof environment === 'string' && Object.hasOwn(factors, environment)) {
    const factor = factors[environment];
    if (typeof factor === 'number' && factor >= 0 && factor <= 1) return [factor, `environment ${environment}`];
  }
  return [1, `environment ${show(environment)} is not in environmentFactors, counted as production`];
}

function tierFactor(tier: unknown): Factor {
  if (typeof tier === 'string' && isTier(tier)) return [tierRank(tier) / (TIERS.length - 1), `${tier} tier`];
  return [1, `tier ${show(tier)} is unknown, counted as admin`];
}

function sensitivityFactor(sensitivity: unknown): Factor {
  if (typeof sensitivity === 'string' && (SENSITIVITIES as readonly string[]).includes(sensitivity)) {
    return [sensitivityRank(sensitivity as Sensitivity) / (SENSITIVITIES.length - 1), `${sensitivity} data`];
  }
  return [1, `sensitivity ${show(sensitivity)} is unknown, counted as restricted`];
}

function identityAgeFactor(createdAt: unknown, now: unknown, newIdentityDays: number): Factor {
  if (typeof createdAt !== 'number' || typeof now !== 'number' || !Number.isFinite(createdAt) || !Number.isFinite(now)) {
    return [1, 'identity age unknown, counted as new'];
  }
  // A creation time in the future is clamped to "created now".
  const days = Math.max(0, now - createdAt) / DAY_MS;
  return [clamp01(1 - days / newIdentityDays), `identity ${days.toFixed(1)} days old (new until ${newIdentityDays} days)`];
}

function unusualResourceFactor(unusual: unknown): Factor {
  if (unusual === false) return [0, 'resource kind used before'];
  if (unusual === true) return [1, 'first use of this resource kind by this identity'];
  return [1, 'resource history unknown, counted as a first use'];
}

function saturating(value: unknown, saturation: number, what: string): Factor {
  if (typeof value !== 'number' || Number.isNaN(value)) return [1, `${what} unknown, counted in full`];
  const clamped = Math.max(0, value);
  return [clamp01(clamped / saturation), `${what}: ${Number.isFinite(clamped) ? clamped : 'unbounded'} (full at ${saturation})`];
}

function offHoursFactor(now: unknown, override: unknown, configured: BusinessHours): Factor {
  let hours = configured;
  if (override !== undefined) {
    const parsed = businessHoursSchema.safeParse(override);
    if (!parsed.success) return [1, 'business hours given are invalid, counted as off-hours'];
    hours = parsed.data;
  }
  const date = new Date(typeof now === 'number' ? now : Number.NaN);
  if (Number.isNaN(date.getTime())) return [1, 'time unknown, counted as off-hours'];
  const weekday = date.getUTCDay();
  const hour = date.getUTCHours();
  const minute = date.getUTCMinutes();
  const at = `${WEEKDAY_NAMES[weekday] ?? '?'} ${pad(hour)}:${pad(minute)} UTC`;
  const window = describeWindow(hours);
  return isBusinessTime(weekday, hour, hours) ? [0, `${at}, within ${window}`] : [1, `${at}, outside ${window}`];
}

const windows = new WeakMap<BusinessHours, string>();

/** `business hours 09–17 UTC on Mon,…`, written once per settings object. */
function describeWindow(hours: BusinessHours): string {
  let text = windows.get(hours);
  if (text === undefined) {
    text = `business hours ${pad(hours.start)}–${pad(hours.end)} UTC on ${hours.weekdays.map((d) => WEEKDAY_NAMES[d] ?? '?').join(',') || 'no day'}`;
    windows.set(hours, text);
  }
  return text;
}

function isBusinessTime(weekday: number, hour: number, hours: BusinessHours): boolean {
  if (hours.start < hours.end) return hour >= hours.start && hour < hours.end && hours.weekdays.includes(weekday);
  // The window runs past midnight: before `end` it opened the day before.
  if (hour >= hours.start) return hours.weekdays.includes(weekday);
  if (hour < hours.end) return hours.weekdays.includes((weekday + 6) % 7);
  return false;
}

function breakGlassFactor(breakGlass: unknown): Factor {
  if (breakGlass === undefined || breakGlass === false) return [0, 'not break-glass'];
  return [1, breakGlass === true ? 'break-glass grant' : 'break-glass flag unreadable, counted as break-glass'];
}

function clamp01(value: number): number {
  return Number.isNaN(value) ? 1 : Math.min(1, Math.max(0, value));
}

function pad(value: number): string {
  return String(value).padStart(2, '0');
}

/** A short, printable rendering of an unexpected value (input may be hostile: bounded length, no control characters). */
function show(value: unknown): string {
  if (typeof value !== 'string') return value === null ? 'null' : typeof value;
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}
