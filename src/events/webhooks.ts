/**
 * Webhooks: approvals and break-glass grants reach people where they are.
 *
 * `notify` formats an event once per matching webhook and writes one row per
 * webhook to the store's outbox, all in one call; delivery happens afterwards,
 * on whichever process or node claims the row (`drain`). A process that dies
 * right after `notify` therefore still has its notification delivered, and a
 * webhook that is down gets it later, with backoff, until it answers 2xx or
 * the attempts run out (then the failure is audited).
 *
 * Every request is signed as Standard Webhooks 1.0 specifies
 * (https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md):
 * `webhook-id`, `webhook-timestamp` (seconds, of the attempt) and
 * `webhook-signature: v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">`,
 * under a secret from the vault revealed at delivery time. `verifyWebhook` is
 * the receiver's side.
 *
 * Delivery is at least once: a receiver must use `webhook-id` as an
 * idempotency key (a lease that runs out mid-attempt, or a settle that fails
 * after a 2xx, sends the same message again).
 *
 * The pure parts (formatting, signing, verifying, backoff, classifying an
 * answer) are exported functions over plain data; `createNotifier` wires them
 * to the store, the vault, fetch and the clock.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/log.js';
import type { Clock } from '../core/clock.js';
import type { WebhookConfig } from '../core/config.js';
import { newId } from '../core/ids.js';
import { WRIT_VERSION } from '../core/version.js';
import type { Vault } from '../leases/vault.js';
import type { NewOutboxMessage, OutboxMessage, OutboxSettlement, Store } from '../store/store.js';

// ---------------------------------------------------------------------------
// Events

/** One line an approver must see: action, resource, arguments, purpose, agent, owner, risk... */
export interface NotificationField {
  readonly label: string;
  readonly value: string;
}

export interface NotificationLink {
  readonly label: string;
  /** http(s) only; other schemes are dropped from Slack messages. */
  readonly url: string;
}

/** A state change of an approval or a break-glass grant, as webhooks receive it. */
export interface NotificationEvent {
  /** `ntf_…`; the same for every webhook the event goes to. */
  readonly id: string;
  /** `approval.requested`, `break_glass.started`... (the audit record's type). */
  readonly type: string;
  /** When it happened, epoch ms. */
  readonly at: number;
  /** One human line: "support-bot asks to refund payments:refunds/R-1 (25000 cents) in production". */
  readonly summary: string;
  readonly fields: readonly NotificationField[];
  /** The machine-readable event (JSON webhooks only; never put in Slack messages). */
  readonly data: Readonly<Record<string, unknown>>;
  readonly links?: readonly NotificationLink[];
}

/** What `notify` accepts: an event whose id is made (`ntf_…`) when not given. */
export type NotificationInput = Omit<NotificationEvent, 'id'> & { readonly id?: string };

/** True when `webhook` wants `eventType` (no `events` filter: every event). */
export function webhookWants(webhook: Pick<WebhookConfig, 'events'>, eventType: string): boolean {
  return webhook.events === undefined || webhook.events.includes(eventType);
}

// ---------------------------------------------------------------------------
// Formats

/** The request body for `format`, exactly as it will be signed and sent. */
export function formatWebhookBody(format: WebhookConfig['format'], event: NotificationEvent): string {
  return JSON.stringify(format === 'slack' ? formatSlackMessage(event) : formatJsonEvent(event));
}

/** The `json` format: Writ's event, `at` as ISO 8601. */
export function formatJsonEvent(event: NotificationEvent): Record<string, unknown> {
  return {
    id: event.id,
    type: event.type,
    at: new Date(event.at).toISOString(),
    summary: event.summary,
    fields: event.fields.map((f) => ({ label: f.label, value: f.value })),
    data: event.data,
    ...(event.links === undefined || event.links.length === 0 ? {} : { links: event.links.map((l) => ({ label: l.label, url: l.url })) }),
  };
}

/** Slack's limits (Block Kit): section text 3,000 characters, 10 fields per section, a header 150, 50 blocks per message. */
const SLACK_SECTION_MAX = 3000;
const SLACK_HEADER_MAX = 150;
const SLACK_FIELDS_PER_SECTION = 10;
/** Fields beyond this are counted, not shown (keeps a message far below 50 blocks). */
const SLACK_MAX_FIELDS = 40;
const SLACK_MAX_LINKS = 5;
/** A field's value is cut here: an approver needs to see it, not scroll it. */
export const SLACK_FIELD_VALUE_MAX = 1000;
const SLACK_LABEL_MAX = 100;

const TITLES: Readonly<Record<string, string>> = {
  'approval.requested': 'Approval requested',
  'approval.voted': 'Approval vote recorded',
  'approval.approved': 'Approval granted',
  'approval.denied': 'Approval denied',
  'approval.expired': 'Approval expired',
  'approval.consumed': 'Approved action carried out',
  'approval.cancelled': 'Approval cancelled',
  'break_glass.started': ':rotating_light: Break-glass access started',
  'break_glass.ended': 'Break-glass access ended',
  'break_glass.reviewed': 'Break-glass access reviewed',
};

/**
 * The `slack` format: a message for a Slack incoming webhook (Block Kit), with
 * `text` as the notification fallback.
 *
 * Security: every value that comes from the event (summary, labels, values,
 * link labels) is escaped (`&`, `<`, `>`) and its text object is `verbatim`,
 * so an agent-supplied purpose such as `<!channel>` or `<https://evil|click>`
 * can neither ping a channel nor hide a link; line breaks and Unicode
 * control, format and bidi characters are flattened to spaces so a value
 * cannot draw a fake field or reorder what the approver reads. `data` is never
 * put in the message. The header is Writ's own text, chosen by event type.
 */
export function formatSlackMessage(event: NotificationEvent): Record<string, unknown> {
  const title = flatten(TITLES[event.type] ?? event.type) || 'Writ notification';
  const summary = slackText(event.summary, SLACK_SECTION_MAX) || slackText(title, SLACK_SECTION_MAX);
  const blocks: Record<string, unknown>[] = [
    { type: 'header', text: { type: 'plain_text', text: truncate(title, SLACK_HEADER_MAX), emoji: true } },
    { type: 'section', text: mrkdwn(summary) },
  ];
  const shown = event.fields.slice(0, SLACK_MAX_FIELDS);
  for (let i = 0; i < shown.length; i += SLACK_FIELDS_PER_SECTION) {
    blocks.push({
      type: 'section',
      fields: shown.slice(i, i + SLACK_FIELDS_PER_SECTION).map((f) => mrkdwn(`*${slackText(f.label, SLACK_LABEL_MAX) || '-'}*\n${slackText(f.value, SLACK_FIELD_VALUE_MAX) || '-'}`)),
    });
  }
  const links = (event.links ?? []).flatMap((l) => {
    const href = slackLinkUrl(l.url);
    return href === undefined ? [] : [`<${href}|${slackText(l.label, 75) || 'link'}>`];
  });
  if (links.length > 0) blocks.push({ type: 'section', text: mrkdwn(links.slice(0, SLACK_MAX_LINKS).join('  ·  ')) });
  const context = [`\`${slackText(event.type, 64)}\``, slackText(event.id, 64), new Date(event.at).toISOString()];
  if (event.fields.length > shown.length) context.push(`${event.fields.length - shown.length} more fields not shown`);
  blocks.push({ type: 'context', elements: [mrkdwn(context.join('  ·  '))] });
  return { text: `${slackText(title, SLACK_HEADER_MAX)}: ${summary}`, blocks };
}

/**
 * Escapes Slack's three control characters (https://docs.slack.dev/messaging/formatting-message-text#escaping)
 * after flattening, and cuts the result to at most `max` characters with an
 * ellipsis, never inside an escape sequence.
 */
export function slackText(raw: string, max: number): string {
  const escape = (text: string): string => text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
  const text = flatten(raw);
  const whole = escape(text);
  if (whole.length <= max) return whole;
  let out = '';
  for (const char of text) {
    const piece = escape(char);
    if (out.length + piece.length > max - 1) break;
    out += piece;
  }
  return `${out}…`;
}

/** Line breaks, tabs, and control, format (bidi overrides, zero-width) and separator characters become one space. */
function flatten(text: string): string {
  return text.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]+/gu, ' ').trim();
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function mrkdwn(text: string): { type: 'mrkdwn'; text: string; verbatim: true } {
  return { type: 'mrkdwn', text, verbatim: true };
}

/** An http(s) URL made safe inside `<url|label>`, or undefined. */
function slackLinkUrl(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') return undefined;
  const href = parsed.href.replaceAll('|', '%7C');
  return href.length > SLACK_SECTION_MAX / 2 ? undefined : href.replaceAll('&', '&amp;').replaceAll('<', '%3C').replaceAll('>', '%3E');
}

// ---------------------------------------------------------------------------
// Signing (Standard Webhooks)

const SECRET_PREFIX = 'whsec_';
const BASE64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The HMAC key of a signing secret: for `whsec_<base64>` (Standard Webhooks'
 * serialization) the decoded bytes, for anything else its UTF-8 bytes.
 * @throws RangeError when the secret is empty or a `whsec_` secret is not base64.
 */
export function webhookSigningKey(secret: string): Buffer {
  if (secret.startsWith(SECRET_PREFIX)) {
    const encoded = secret.slice(SECRET_PREFIX.length);
    if (!BASE64_RE.test(encoded)) throw new RangeError('a whsec_ secret must be followed by base64');
    return Buffer.from(encoded, 'base64');
  }
  if (secret.length === 0) throw new RangeError('an empty signing secret');
  return Buffer.from(secret, 'utf8');
}

/**
 * The `webhook-signature` value for one key: `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`.
 * @throws RangeError when `id` contains `.` (it would make the signed content ambiguous) or `timestamp` is not whole seconds.
 */
export function signWebhook(key: Buffer, id: string, timestampSeconds: number, body: string): string {
  if (id.length === 0 || id.includes('.')) throw new RangeError('a webhook id is non-empty and has no "."');
  if (!Number.isSafeInteger(timestampSeconds) || timestampSeconds < 0) throw new RangeError('a webhook timestamp is whole seconds');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampSeconds}.${body}`, 'utf8').digest('base64')}`;
}

/** The headers of one delivery attempt. */
export function webhookHeaders(key: Buffer, id: string, timestampSeconds: number, body: string): Record<string, string> {
  return {
    'content-type': 'application/json',
    'user-agent': `writ/${WRIT_VERSION}`,
    'webhook-id': id,
    'webhook-timestamp': String(timestampSeconds),
    'webhook-signature': signWebhook(key, id, timestampSeconds, body),
  };
}

/** Signatures looked at in one header, at most (a rotation needs two or three). */
const MAX_SIGNATURES = 8;

/**
 * A receiver's check of a delivery, before it reads anything in the body.
 *
 * Promises true only when the three Standard Webhooks headers are present
 * once each; `webhook-timestamp` is whole seconds within `toleranceSeconds`
 * of `now` (either way: an old one is a replay, a future one a pre-signed
 * replay); and one of the space-separated `v1,` signatures (several during a
 * key rotation; other schemes such as `v1a,` are skipped) is the HMAC of
 * `"<id>.<timestamp>.<body>"` under `secret`, compared in constant time.
 * `body` must be the raw bytes as received, not JSON parsed and serialized again.
 * Never throws: an unusable secret, like any other problem, gives false.
 *
 * Header names are matched case-insensitively (pass Node's `req.headers` or an
 * object built from a fetch `Headers`). A receiver should also refuse a
 * `webhook-id` it has already processed.
 */
export function verifyWebhook(
  secret: string,
  headers: Readonly<Record<string, string | string[] | undefined>>,
  body: string,
  now: number,
  toleranceSeconds = 300,
): boolean {
  const id = singleHeader(headers, 'webhook-id');
  const timestamp = singleHeader(headers, 'webhook-timestamp');
  const signatures = singleHeader(headers, 'webhook-signature');
  if (id === undefined || timestamp === undefined || signatures === undefined) return false;
  if (!/^\d{1,15}$/.test(timestamp) || id.length === 0 || id.length > 256 || id.includes('.')) return false;
  const seconds = Number(timestamp);
  if (Math.abs(now / 1000 - seconds) > toleranceSeconds) return false;
  let key: Buffer;
  try {
    key = webhookSigningKey(secret);
  } catch {
    return false;
  }
  const expected = Buffer.from(signWebhook(key, id, seconds, body), 'utf8');
  let matched = false;
  for (const candidate of signatures.split(' ').filter((s) => s.length > 0).slice(0, MAX_SIGNATURES)) {
    if (!candidate.startsWith('v1,')) continue;
    const given = Buffer.from(candidate, 'utf8');
    // INVARIANT: every candidate of the right length is compared (no early exit on a match), in constant time.
    if (given.length === expected.length && timingSafeEqual(given, expected)) matched = true;
  }
  return matched;
}

function singleHeader(headers: Readonly<Record<string, string | string[] | undefined>>, name: string): string | undefined {
  let found: string | undefined;
  let count = 0;
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== name || value === undefined) continue;
    const values = Array.isArray(value) ? value : [value];
    count += values.length;
    found = values[0];
  }
  return count === 1 ? found?.trim() : undefined;
}

// ---------------------------------------------------------------------------
// Retries

export interface RetrySettings {
  /** Delay after the first failed attempt; doubled after each further one. */
  readonly baseMs: number;
  /** Longest delay between two attempts (also caps Retry-After). */
  readonly maxMs: number;
}

export const DEFAULT_RETRY: RetrySettings = { baseMs: 1000, maxMs: 10 * 60_000 };

/**
 * The delay before the next attempt after `attempts` failed ones:
 * `baseMs × 2^(attempts−1)`, capped at `maxMs`, then jittered down by up to
 * 20% so retries of many messages do not arrive in step.
 */
export function retryDelayMs(attempts: number, settings: RetrySettings = DEFAULT_RETRY, random: () => number = Math.random): number {
  const exponential = settings.baseMs * 2 ** Math.min(Math.max(attempts - 1, 0), 40);
  const capped = Math.min(exponential, settings.maxMs);
  return Math.round(capped * (1 - 0.2 * random()));
}

/** A Retry-After value (delay seconds, or an HTTP date) as milliseconds from `now`, or undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now: number): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d{1,10}$/.test(text)) return Number(text) * 1000;
  if (!/[A-Za-z]/.test(text)) return undefined;
  const date = Date.parse(text);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** How one attempt ended, before the attempt count is weighed. */
export type AttemptOutcome =
  | { readonly kind: 'delivered'; readonly status: number }
  /** Worth another attempt: 408, 425, 429, 5xx, 3xx, a timeout, a network error, a secret not (yet) in the vault. */
  | { readonly kind: 'retry'; readonly reason: string; readonly error: string; readonly retryAfterMs?: number }
  /** Will not get better by sending the same bytes again: any other 4xx, a webhook no longer configured. */
  | { readonly kind: 'fail'; readonly reason: string; readonly error: string };

const RETRYABLE_STATUS = new Set([408, 425, 429]);

/**
 * Classifies an HTTP answer. 2xx delivered. 408, 425, 429 and 5xx retried
 * (Retry-After honoured on 429 and 503). A 3xx is retried, never followed: the
 * URL is read from configuration at each attempt, so an operator who points
 * the webhook at its new address gets the pending messages there, and a lost
 * break-glass alert costs more than a few extra attempts. Any other status
 * fails at once (a bad payload or a refused signature does not get better).
 */
export function classifyResponse(status: number, retryAfter: string | null, now: number): AttemptOutcome {
  if (status >= 200 && status <= 299) return { kind: 'delivered', status };
  const reason = String(status);
  if (status >= 300 && status <= 399) return { kind: 'retry', reason, error: `HTTP ${status}: redirects are not followed; update the webhook URL` };
  if (RETRYABLE_STATUS.has(status) || (status >= 500 && status <= 599)) {
    const retryAfterMs = status === 429 || status === 503 ? parseRetryAfter(retryAfter, now) : undefined;
    return { kind: 'retry', reason, error: `HTTP ${status}`, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
  }
  return { kind: 'fail', reason, error: `HTTP ${status}` };
}

/**
 * What to record after an attempt. A retryable outcome becomes `failed` once
 * `attempts` (this one included) reaches `maxAttempts`; otherwise it waits the
 * larger of the backoff and Retry-After, capped at `settings.maxMs`.
 */
export function settlementFor(
  outcome: AttemptOutcome,
  attempts: number,
  maxAttempts: number,
  now: number,
  settings: RetrySettings = DEFAULT_RETRY,
  random: () => number = Math.random,
): OutboxSettlement {
  if (outcome.kind === 'delivered') return { state: 'delivered', at: now };
  if (outcome.kind === 'fail') return { state: 'failed', at: now, error: outcome.error };
  if (attempts >= maxAttempts) return { state: 'failed', at: now, error: `${outcome.error} (attempt ${attempts} of ${maxAttempts})` };
  const delay = Math.min(Math.max(retryDelayMs(attempts, settings, random), outcome.retryAfterMs ?? 0), settings.maxMs);
  return { state: 'pending', nextAttemptAt: now + delay, error: outcome.error };
}

// ---------------------------------------------------------------------------
// The notifier

export interface NotifierOptions {
  readonly store: Pick<Store, 'enqueueMessages' | 'claimMessages' | 'settleMessage'>;
  readonly vault: Pick<Vault, 'reveal'>;
  /** Validated configuration (`notifications.webhooks`); names are unique. */
  readonly webhooks: readonly WebhookConfig[];
  readonly audit: Pick<AuditLog, 'append'>;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Default `globalThis.fetch`. */
  readonly fetch?: typeof fetch;
  /** How often `start()` drains; default 1000. */
  readonly pollIntervalMs?: number;
  /** Backoff; default 1 s doubling to 10 min. */
  readonly retry?: RetrySettings;
}

export interface Notifier {
  /**
   * Queues `event` for every webhook that wants it: one outbox row per webhook,
   * all written in one call, then a drain is started soon without waiting for
   * it. Resolves once the rows are durable; with no matching webhook, writes
   * nothing. Returns the event as queued (with its id).
   * @throws whatever the store throws when the rows could not be written.
   */
  notify(event: NotificationInput): Promise<NotificationEvent>;
  /**
   * Delivers every message due now (claimed from the shared outbox, so also
   * rows queued by other processes), until none is left; settles each.
   * Never overlaps another drain of this notifier: a call made while one runs
   * waits for it and then drains again. Resolves with the number of messages
   * this call attempted. A message whose webhook this notifier does not know is
   * failed ("webhook no longer configured"), so every node should share one
   * webhook configuration; a notifier with no webhooks at all claims nothing.
   * @throws when the store cannot be read (delivery failures never throw).
   */
  drain(): Promise<number>;
  /** Drains every `pollIntervalMs` (an unref'd timer) until `stop()`. */
  start(): void;
  /** Stops the timer and the drains `notify` starts, and waits for the drain in flight. */
  stop(): Promise<void>;
}

const CLAIM_LIMIT = 20;
/** Lease beyond the webhook timeout: reveal, sign, settle. Past it another node may send the message again. */
const LEASE_MARGIN_MS = 15_000;

/** Creates the notifier. @throws RangeError on duplicate webhook names or a bad poll interval. */
export function createNotifier(options: NotifierOptions): Notifier {
  const { store, vault, audit, clock, logger } = options;
  const send = options.fetch ?? globalThis.fetch;
  const retry = options.retry ?? DEFAULT_RETRY;
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  if (!Number.isInteger(pollIntervalMs) || pollIntervalMs < 10) throw new RangeError('pollIntervalMs is a whole number of milliseconds, at least 10');
  const webhooks = new Map<string, WebhookConfig>();
  for (const webhook of options.webhooks) {
    if (webhooks.has(webhook.name)) throw new RangeError(`two webhooks are named ${webhook.name}`);
    webhooks.set(webhook.name, webhook);
  }
  // One lease for a claim of mixed targets: the slowest webhook's timeout.
  const leaseMs = Math.max(0, ...[...webhooks.values()].map(timeoutMs)) + LEASE_MARGIN_MS;

  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let inFlight: Promise<number> | undefined;
  let queued: Promise<number> | undefined;

  const drain = (): Promise<number> => {
    if (inFlight === undefined) {
      inFlight = drainDue().finally(() => {
        inFlight = undefined;
      });
      return inFlight;
    }
    queued ??= inFlight
      .catch(() => 0)
      .then(() => {
        queued = undefined;
        return drain();
      });
    return queued;
  };

  const drainInBackground = (): void => {
    if (stopped) return;
    drain().catch((error: unknown) => logger.error({ err: errorText(error) }, 'webhook outbox could not be drained'));
  };

  /** Claims and delivers until nothing is due. The secrets it reveals live only as long as this call. */
  async function drainDue(): Promise<number> {
    // A node configured without webhooks claims nothing: it would otherwise fail
    // as "no longer configured" the rows its peers queued (a rolling config change).
    if (webhooks.size === 0) return 0;
    const keys = new Map<string, Promise<Buffer>>();
    let attempted = 0;
    try {
      for (;;) {
        const claimed = await store.claimMessages(clock.now(), CLAIM_LIMIT, leaseMs);
        await Promise.all(claimed.map((message) => deliver(message, keys)));
        attempted += claimed.length;
        if (claimed.length < CLAIM_LIMIT) return attempted;
      }
    } finally {
      for (const key of keys.values()) key.then((k) => k.fill(0)).catch(() => undefined);
    }
  }

  function revealKey(secretName: string, keys: Map<string, Promise<Buffer>>): Promise<Buffer> {
    let key = keys.get(secretName);
    if (key === undefined) {
      key = vault.reveal(secretName).then(webhookSigningKey);
      key.catch(() => undefined);
      keys.set(secretName, key);
    }
    return key;
  }

  /** One attempt of one claimed message, settled and logged; never throws. */
  async function deliver(message: OutboxMessage, keys: Map<string, Promise<Buffer>>): Promise<void> {
    const webhook = webhooks.get(message.target);
    const outcome: AttemptOutcome =
      webhook === undefined ? { kind: 'fail', reason: 'not_configured', error: 'webhook no longer configured' } : await attempt(message, webhook, keys);
    const now = clock.now();
    const settlement = settlementFor(outcome, message.attempts, webhook?.maxAttempts ?? 1, now, retry);
    const logged = { messageId: message.id, target: message.target, event: message.event, attempts: message.attempts, reason: outcome.kind === 'delivered' ? String(outcome.status) : outcome.reason };
    try {
      await store.settleMessage(message.id, settlement);
    } catch (error) {
      // The lease runs out and the message is attempted again (receivers deduplicate by webhook-id).
      logger.error({ ...logged, err: errorText(error) }, 'webhook delivery could not be recorded');
      return;
    }
    if (settlement.state === 'delivered') {
      logger.debug(logged, 'webhook delivered');
      return;
    }
    if (settlement.state === 'pending') {
      logger.warn({ ...logged, error: settlement.error, nextAttemptAt: settlement.nextAttemptAt }, 'webhook delivery failed; will retry');
      return;
    }
    logger.warn({ ...logged, error: settlement.error }, 'webhook delivery given up');
    audit
      .append({
        type: 'notification.failed',
        reason: outcome.kind === 'delivered' ? 'unknown' : outcome.reason,
        detail: settlement.error,
        resource: `webhook:${message.target}`,
        data: { messageId: message.id, target: message.target, event: message.event, attempts: message.attempts },
      })
      .catch((error: unknown) => logger.error({ ...logged, err: errorText(error) }, 'a failed webhook delivery could not be audited'));
  }

  async function attempt(message: OutboxMessage, webhook: WebhookConfig, keys: Map<string, Promise<Buffer>>): Promise<AttemptOutcome> {
    let key: Buffer;
    try {
      key = await revealKey(webhook.secret, keys);
    } catch (error) {
      // The operator may still add or fix it: retried, loudly.
      return { kind: 'retry', reason: 'secret_unavailable', error: `signing secret ${webhook.secret} unavailable: ${errorText(error)}` };
    }
    const headers = webhookHeaders(key, message.id, Math.floor(clock.now() / 1000), message.body);
    let response: Response;
    try {
      response = await send(webhook.url, { method: 'POST', headers, body: message.body, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs(webhook)) });
    } catch (error) {
      const timedOut = error instanceof DOMException && (error.name === 'TimeoutError' || error.name === 'AbortError');
      return timedOut
        ? { kind: 'retry', reason: 'timeout', error: `no answer within ${timeoutMs(webhook)} ms` }
        : { kind: 'retry', reason: 'network', error: errorText(error) };
    }
    // The answer's body is never read: nothing in it changes the outcome, and it is the receiver's to size.
    await response.body?.cancel().catch(() => undefined);
    return classifyResponse(response.status, response.headers.get('retry-after'), clock.now());
  }

  return {
    async notify(input) {
      const event: NotificationEvent = { ...input, id: input.id ?? newId('ntf') };
      const createdAt = clock.now();
      const messages: NewOutboxMessage[] = [];
      for (const webhook of webhooks.values()) {
        if (!webhookWants(webhook, event.type)) continue;
        messages.push({ id: newId('msg'), target: webhook.name, event: event.type, body: formatWebhookBody(webhook.format, event), createdAt });
      }
      if (messages.length === 0) return event;
      await store.enqueueMessages(messages);
      setImmediate(drainInBackground).unref();
      return event;
    },

    drain,

    start() {
      if (timer !== undefined) return;
      stopped = false;
      timer = setInterval(drainInBackground, pollIntervalMs);
      timer.unref();
    },

    async stop() {
      stopped = true;
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      while (inFlight !== undefined || queued !== undefined) await (queued ?? inFlight)?.catch(() => 0);
    },
  };
}

/** A webhook's per-attempt deadline. A configured 0 (a duration under a second, floored) would abort every attempt: at least 1 s. */
function timeoutMs(webhook: Pick<WebhookConfig, 'timeout'>): number {
  return Math.max(1, webhook.timeout) * 1000;
}

/** A short, log-safe description of an error: its code and message, never a request or a secret. */
function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error).slice(0, 200);
  const code = (error as { code?: unknown }).code;
  const cause = (error as { cause?: unknown }).cause;
  const causeCode = cause instanceof Error ? ((cause as { code?: unknown }).code ?? cause.message) : undefined;
  const parts = [typeof code === 'string' ? code : undefined, error.message, typeof causeCode === 'string' ? causeCode : undefined].filter((p) => p !== undefined);
  return parts.join(': ').slice(0, 200);
}
