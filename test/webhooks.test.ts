/**
 * Webhooks: signed deliveries from a durable outbox, retried with backoff,
 * given up (and audited) when they cannot succeed, and Slack messages that
 * hostile values cannot turn into pings or disguised links. Real SQLite, a
 * real HTTP receiver on 127.0.0.1, a frozen clock the tests move.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { pino } from 'pino';
import { createAuditLog, type AuditLog } from '../src/audit/log.js';
import { createManualClock, type ManualClock } from '../src/core/clock.js';
import type { WebhookConfig } from '../src/core/config.js';
import { WRIT_VERSION } from '../src/core/version.js';
import {
  classifyResponse,
  createNotifier,
  formatJsonEvent,
  formatSlackMessage,
  parseRetryAfter,
  retryDelayMs,
  settlementFor,
  signWebhook,
  SLACK_FIELD_VALUE_MAX,
  verifyWebhook,
  webhookSigningKey,
  webhookWants,
  type NotificationEvent,
  type Notifier,
  type NotifierOptions,
} from '../src/events/webhooks.js';
import { createVault, type Vault } from '../src/leases/vault.js';
import { openSqliteStore } from '../src/store/kysely-store.js';
import type { NewOutboxMessage, Store } from '../src/store/store.js';

const START = Date.UTC(2031, 4, 6, 9, 30, 0);
const SECRET = 'a-shared-secret-for-the-ops-hook-0f9e';

function sampleEvent(overrides: Partial<NotificationEvent> = {}): NotificationEvent {
  return {
    id: 'ntf_sample00000000000000000',
    type: 'approval.requested',
    at: START,
    summary: 'support-bot asks to refund payments:refunds/R-1 (25000 cents) in production',
    fields: [
      { label: 'Action', value: 'refund' },
      { label: 'Resource', value: 'payments:refunds/R-1' },
      { label: 'Purpose', value: 'Customer was charged twice' },
    ],
    data: { approvalId: 'apr_1', arguments: { amount: 25000 } },
    ...overrides,
  };
}

// ---------------------------------------------------------------------------
// Pure parts

describe('webhook signatures (Standard Webhooks)', () => {
  test('signing reproduces the Standard Webhooks reference vector', () => {
    const key = webhookSigningKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
    assert.equal(signWebhook(key, 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}'), 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });

  test('a whsec_ secret is the base64 of the key; any other secret is its own UTF-8 bytes', () => {
    const bytes = randomBytes(32);
    assert.deepEqual(webhookSigningKey(`whsec_${bytes.toString('base64')}`), bytes);
    assert.deepEqual(webhookSigningKey('plain ünïcode'), Buffer.from('plain ünïcode', 'utf8'));
    assert.throws(() => webhookSigningKey('whsec_not base64!'), RangeError);
    assert.throws(() => webhookSigningKey('whsec_'), RangeError);
    assert.throws(() => webhookSigningKey(''), RangeError);
  });

  test('an id with a dot is refused when signing (the signed content would be ambiguous)', () => {
    assert.throws(() => signWebhook(Buffer.from('k'), 'msg.1', 1, '{}'), RangeError);
    assert.throws(() => signWebhook(Buffer.from('k'), 'msg_1', 1.5, '{}'), RangeError);
  });

  const now = START;
  const seconds = Math.floor(now / 1000);
  const body = '{"type":"approval.requested"}';
  const signed = (secret = SECRET, ts = seconds, b = body, id = 'msg_abc') => ({
    'webhook-id': id,
    'webhook-timestamp': String(ts),
    'webhook-signature': signWebhook(webhookSigningKey(secret), id, ts, b),
  });

  test('verifyWebhook accepts a genuine delivery, header names in any case', () => {
    assert.equal(verifyWebhook(SECRET, signed(), body, now), true);
    const upper = Object.fromEntries(Object.entries(signed()).map(([k, v]) => [k.toUpperCase(), v]));
    assert.equal(verifyWebhook(SECRET, upper, body, now), true);
    assert.equal(verifyWebhook(SECRET, signed(SECRET, seconds - 299), body, now), true);
  });

  test('verifyWebhook refuses a wrong secret, a changed body, a changed id, and an old or future timestamp', () => {
    assert.equal(verifyWebhook('another-secret', signed(), body, now), false);
    assert.equal(verifyWebhook(SECRET, signed(), body.replace('requested', 'approved'), now), false);
    assert.equal(verifyWebhook(SECRET, { ...signed(), 'webhook-id': 'msg_abd' }, body, now), false);
    assert.equal(verifyWebhook(SECRET, signed(SECRET, seconds - 301), body, now), false, 'a replay older than the tolerance');
    assert.equal(verifyWebhook(SECRET, signed(SECRET, seconds + 301), body, now), false, 'a timestamp from the future');
    assert.equal(verifyWebhook(SECRET, signed(SECRET, seconds - 30), body, now, 10), false, 'a tighter tolerance');
    // The timestamp is signed: moving it forward to pass the window breaks the signature.
    assert.equal(verifyWebhook(SECRET, { ...signed(SECRET, seconds - 3600), 'webhook-timestamp': String(seconds) }, body, now), false);
  });

  test('verifyWebhook refuses missing, duplicated or malformed headers', () => {
    for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const headers: Record<string, string | string[] | undefined> = signed();
      delete headers[name];
      assert.equal(verifyWebhook(SECRET, headers, body, now), false, `without ${name}`);
      assert.equal(verifyWebhook(SECRET, { ...signed(), [name]: undefined }, body, now), false, `${name} undefined`);
      assert.equal(verifyWebhook(SECRET, { ...signed(), [name]: [String(signed()[name as keyof ReturnType<typeof signed>]), 'x'] }, body, now), false, `${name} twice`);
    }
    assert.equal(verifyWebhook(SECRET, { ...signed(), 'webhook-timestamp': `${seconds}.0` }, body, now), false);
    assert.equal(verifyWebhook(SECRET, { ...signed(), 'webhook-timestamp': `-${seconds}` }, body, now), false);
    assert.equal(verifyWebhook(SECRET, { ...signed(), 'webhook-signature': '' }, body, now), false);
    assert.equal(verifyWebhook('whsec_%%%', signed(), body, now), false, 'an unusable secret refuses, never throws');
  });

  test('verifyWebhook accepts any one of several v1 signatures (key rotation) and ignores other schemes', () => {
    const genuine = signed()['webhook-signature'];
    const stale = signWebhook(webhookSigningKey('the-old-secret'), 'msg_abc', seconds, body);
    assert.equal(verifyWebhook(SECRET, { ...signed(), 'webhook-signature': `${stale} ${genuine}` }, body, now), true);
    assert.equal(verifyWebhook('the-old-secret', { ...signed(), 'webhook-signature': `${stale} ${genuine}` }, body, now), true);
    assert.equal(verifyWebhook(SECRET, { ...signed(), 'webhook-signature': `${stale} v1,AAAA` }, body, now), false);
    assert.equal(verifyWebhook(SECRET, { ...signed(), 'webhook-signature': genuine.replace('v1,', 'v1a,') }, body, now), false);
    assert.equal(verifyWebhook(SECRET, { ...signed(), 'webhook-signature': genuine.replace('v1,', '') }, body, now), false);
  });
});

describe('webhook retries', () => {
  test('backoff doubles from the base, is capped, and is jittered down by at most 20%', () => {
    const settings = { baseMs: 1000, maxMs: 600_000 };
    assert.deepEqual([1, 2, 3, 4].map((n) => retryDelayMs(n, settings, () => 0)), [1000, 2000, 4000, 8000]);
    assert.equal(retryDelayMs(3, settings, () => 1), 3200);
    assert.equal(retryDelayMs(30, settings, () => 0), 600_000);
    assert.equal(retryDelayMs(5000, settings, () => 0), 600_000);
  });

  test('Retry-After is read as seconds or an HTTP date', () => {
    assert.equal(parseRetryAfter('120', START), 120_000);
    assert.equal(parseRetryAfter(new Date(START + 30_000).toUTCString(), START), 30_000);
    assert.equal(parseRetryAfter(new Date(START - 30_000).toUTCString(), START), 0);
    for (const junk of [null, undefined, '', '-5', '1.5', 'soon', '12 34']) assert.equal(parseRetryAfter(junk, START), undefined, String(junk));
  });

  test('2xx is delivered; 408, 425, 429, 5xx and 3xx are retried; any other status fails at once', () => {
    for (const status of [200, 201, 202, 204, 299]) assert.equal(classifyResponse(status, null, START).kind, 'delivered', String(status));
    for (const status of [301, 302, 307, 308, 408, 425, 429, 500, 502, 503, 504, 599]) assert.equal(classifyResponse(status, null, START).kind, 'retry', String(status));
    for (const status of [400, 401, 403, 404, 405, 410, 413, 422]) assert.equal(classifyResponse(status, null, START).kind, 'fail', String(status));
  });

  test('Retry-After counts on 429 and 503 only, and never beyond the cap', () => {
    const settings = { baseMs: 1000, maxMs: 600_000 };
    const at = (status: number, retryAfter: string) => settlementFor(classifyResponse(status, retryAfter, START), 1, 8, START, settings, () => 0);
    assert.deepEqual(at(429, '120'), { state: 'pending', nextAttemptAt: START + 120_000, error: 'HTTP 429' });
    assert.deepEqual(at(503, '120'), { state: 'pending', nextAttemptAt: START + 120_000, error: 'HTTP 503' });
    assert.deepEqual(at(500, '120'), { state: 'pending', nextAttemptAt: START + 1000, error: 'HTTP 500' });
    assert.deepEqual(at(429, '86400'), { state: 'pending', nextAttemptAt: START + 600_000, error: 'HTTP 429' });
  });

  test('a retryable failure on the last allowed attempt fails', () => {
    const outcome = classifyResponse(503, null, START);
    assert.equal(settlementFor(outcome, 7, 8, START).state, 'pending');
    assert.equal(settlementFor(outcome, 8, 8, START).state, 'failed');
    assert.equal(settlementFor(classifyResponse(400, null, START), 1, 8, START).state, 'failed');
  });
});

describe('webhook formats', () => {
  test('json: id, type, ISO time, summary, fields and data', () => {
    const event = sampleEvent({ links: [{ label: 'Review', url: 'https://writ.example/approvals/apr_1' }] });
    assert.deepEqual(formatJsonEvent(event), {
      id: event.id,
      type: 'approval.requested',
      at: '2031-05-06T09:30:00.000Z',
      summary: event.summary,
      fields: event.fields,
      data: event.data,
      links: event.links,
    });
  });

  test('an events filter selects exact event types; no filter takes every event', () => {
    assert.equal(webhookWants({}, 'approval.requested'), true);
    assert.equal(webhookWants({ events: ['break_glass.started'] }, 'break_glass.started'), true);
    assert.equal(webhookWants({ events: ['break_glass.started'] }, 'break_glass.ended'), false);
    assert.equal(webhookWants({ events: ['break_glass.started'] }, 'break_glass'), false);
  });

  test('slack: a header, the summary, fields in sections of at most 10, links and a context line', () => {
    const fields = Array.from({ length: 25 }, (_, i) => ({ label: `Field ${i}`, value: `value ${i}` }));
    const message = formatSlackMessage(sampleEvent({ type: 'break_glass.started', fields, links: [{ label: 'Review', url: 'https://writ.example/bg/1?a=1&b=2' }] })) as any;
    assert.match(message.text, /^:rotating_light: Break-glass access started: support-bot asks to refund/);
    assert.deepEqual(message.blocks[0], { type: 'header', text: { type: 'plain_text', text: ':rotating_light: Break-glass access started', emoji: true } });
    assert.deepEqual(message.blocks[1], { type: 'section', text: { type: 'mrkdwn', text: sampleEvent().summary, verbatim: true } });
    const sections = message.blocks.filter((b: any) => b.fields !== undefined);
    assert.deepEqual(sections.map((s: any) => s.fields.length), [10, 10, 5]);
    assert.deepEqual(sections[0].fields[0], { type: 'mrkdwn', text: '*Field 0*\nvalue 0', verbatim: true });
    assert.ok(message.blocks.some((b: any) => b.text?.text === '<https://writ.example/bg/1?a=1&amp;b=2|Review>'));
    const context = message.blocks.at(-1);
    assert.equal(context.type, 'context');
    assert.equal(context.elements[0].text, '`break_glass.started`  ·  ntf_sample00000000000000000  ·  2031-05-06T09:30:00.000Z');
    assert.ok(message.blocks.length <= 50);
    assert.ok(!JSON.stringify(message).includes('apr_1'), 'data is never put in a Slack message');
  });

  test('slack: hostile values cannot ping, hide a link, draw a fake field or reorder text', () => {
    const hostile = [
      '<!channel> urgent',
      '<!here|here>',
      '<@U024BE7LH>',
      '<https://evil.example|https://writ.example/approve>',
      'Tom & Jerry <b>',
      'refund\n*Risk*\nlow',
      'abc\u202Eevil\u202C',
      '&lt;!channel&gt;',
    ];
    const message = formatSlackMessage(
      sampleEvent({
        summary: hostile.join(' '),
        fields: hostile.map((value, i) => ({ label: i === 0 ? '<!everyone>' : `Purpose ${i}`, value })),
        links: [
          { label: 'click', url: 'javascript:alert(1)' },
          { label: 'x|<!channel>', url: 'https://writ.example/a|b>' },
        ],
      }),
    ) as any;
    const texts: string[] = [message.text];
    for (const block of message.blocks) {
      if (block.text?.type === 'mrkdwn') texts.push(block.text.text);
      for (const field of block.fields ?? []) texts.push(field.text);
      for (const element of block.elements ?? []) texts.push(element.text);
    }
    for (const text of texts) {
      // The only `<` left is the one link Writ built itself.
      const controls = text.match(/<[^>]*>/g) ?? [];
      assert.ok(controls.every((c) => c.startsWith('<https://writ.example/a%7Cb%3E|')), `${JSON.stringify(text)} holds ${controls.join(', ')}`);
      assert.ok(!/[\u202A-\u202E\u2066-\u2069]/.test(text), 'no bidi controls');
    }
    const purposeField = (i: number) => message.blocks.flatMap((b: any) => b.fields ?? [])[i].text as string;
    assert.equal(purposeField(0), '*&lt;!everyone&gt;*\n&lt;!channel&gt; urgent');
    assert.equal(purposeField(3), '*Purpose 3*\n&lt;https://evil.example|https://writ.example/approve&gt;');
    assert.equal(purposeField(4), '*Purpose 4*\nTom &amp; Jerry &lt;b&gt;');
    assert.equal(purposeField(5), '*Purpose 5*\nrefund *Risk* low', 'a line break cannot start a fake field');
    assert.equal(purposeField(7), '*Purpose 7*\n&amp;lt;!channel&amp;gt;', 'already-escaped text is escaped again, not passed through');
    assert.ok(!JSON.stringify(message).includes('javascript:'));
    assert.ok(message.blocks.some((b: any) => b.text?.text === '<https://writ.example/a%7Cb%3E|x|&lt;!channel&gt;>'));
  });

  test('slack: long values are cut with an ellipsis, never inside an escape', () => {
    const message = formatSlackMessage(sampleEvent({ summary: '&'.repeat(5000), fields: [{ label: 'Arguments', value: '<'.repeat(5000) }, { label: 'Exact', value: 'x'.repeat(SLACK_FIELD_VALUE_MAX) }] })) as any;
    const summary: string = message.blocks[1].text.text;
    assert.ok(summary.length <= 3000 && summary.endsWith('&amp;…'), `${summary.length}`);
    const value = (message.blocks[2].fields[0].text as string).split('\n')[1]!;
    assert.ok(value.length <= SLACK_FIELD_VALUE_MAX && /^(&lt;)+…$/.test(value), value.slice(-12));
    assert.equal((message.blocks[2].fields[1].text as string).split('\n')[1], 'x'.repeat(SLACK_FIELD_VALUE_MAX), 'a value exactly at the cap is kept whole');
  });
});

// ---------------------------------------------------------------------------
// Delivery, against a real receiver and a real SQLite store

interface Received {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** What the receiver answers: a status (and headers), or 'hang' (never answers). */
type Answer = { status: number; headers?: Record<string, string>; delayMs?: number } | 'hang';

interface Receiver {
  readonly url: string;
  readonly received: Received[];
  /** Answers for the next requests, in order; afterwards 200. */
  readonly answers: Answer[];
  close(): Promise<void>;
}

async function startReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  const answers: Answer[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({ path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const answer = answers.shift() ?? { status: 200 };
      if (answer === 'hang') return;
      setTimeout(() => {
        res.writeHead(answer.status, answer.headers ?? {});
        res.end('a body the notifier does not need to read');
      }, answer.delayMs ?? 0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  return {
    url: `http://127.0.0.1:${address.port}`,
    received,
    answers,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

interface Env {
  readonly dir: string;
  readonly store: Store;
  readonly clock: ManualClock;
  readonly audit: AuditLog;
  readonly vault: Vault;
  readonly receiver: Receiver;
  /** Every log line the notifiers wrote, as JSON text. */
  readonly logs: string[];
  /** Message ids passed to enqueueMessages, in order. */
  readonly enqueued: NewOutboxMessage[];
  readonly enqueueCalls: { count: number };
  readonly notifiers: Notifier[];
  readonly stores: Store[];
  webhook(overrides?: Partial<WebhookConfig>): WebhookConfig;
  notifier(webhooks: readonly WebhookConfig[], overrides?: Partial<NotifierOptions>): Notifier;
  /** Another handle on the same database file, as another process would open it. */
  openAnotherStore(): Promise<Store>;
  failedRecords(): Promise<Record<string, any>[]>;
}

const operator = { id: 'cli:test', actorType: 'local-operator' };

async function setUp(): Promise<Env> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-webhooks-'));
  const filename = join(dir, 'writ.db');
  const store = await openSqliteStore({ filename });
  const clock = createManualClock(START);
  const audit = createAuditLog({ store, clock });
  const vault = createVault({ store, masterKey: randomBytes(32), audit, clock });
  await vault.put('ops-hook', SECRET, operator);
  const receiver = await startReceiver();
  const logs: string[] = [];
  const enqueued: NewOutboxMessage[] = [];
  const enqueueCalls = { count: 0 };
  const notifiers: Notifier[] = [];
  const stores: Store[] = [store];
  // The real store, with its enqueues recorded (to learn message ids the receiver never saw).
  const recording = new Proxy(store, {
    get(target, property, receiverObject) {
      if (property === 'enqueueMessages') {
        return async (messages: readonly NewOutboxMessage[]) => {
          enqueueCalls.count++;
          enqueued.push(...messages);
          return target.enqueueMessages(messages);
        };
      }
      const value = Reflect.get(target, property, receiverObject);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  const logger = pino(
    { level: 'debug' },
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        logs.push(chunk.toString('utf8'));
        callback();
      },
    }),
  );
  return {
    dir,
    store,
    clock,
    audit,
    vault,
    receiver,
    logs,
    enqueued,
    enqueueCalls,
    notifiers,
    stores,
    webhook: (overrides = {}) => ({ name: 'ops', url: `${receiver.url}/hooks/ops`, secret: 'ops-hook', format: 'json', timeout: 5, maxAttempts: 8, ...overrides }),
    notifier(webhooks, overrides = {}) {
      const notifier = createNotifier({ store: recording, vault, webhooks, audit, clock, logger, ...overrides });
      notifiers.push(notifier);
      return notifier;
    },
    async openAnotherStore() {
      const other = await openSqliteStore({ filename });
      stores.push(other);
      return other;
    },
    async failedRecords() {
      await audit.flush();
      return (await store.readAudit(0, 10_000)).map((row) => JSON.parse(row.record) as Record<string, any>).filter((r) => r.type === 'notification.failed');
    },
  };
}

async function tearDown(env: Env): Promise<void> {
  for (const notifier of env.notifiers) await notifier.stop();
  await env.receiver.close();
  await env.audit.flush();
  for (const store of env.stores) await store.close();
  rmSync(env.dir, { recursive: true, force: true });
}

/** Waits (real time) until `check` holds; fails after `ms`. */
async function eventually(check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('webhook delivery', () => {
  let env: Env;
  beforeEach(async () => {
    env = await setUp();
  });
  afterEach(() => tearDown(env));

  test('a delivery is signed: the receiver verifies it with the shared secret, and refuses it with another secret, a changed body or an old timestamp', async () => {
    const notifier = env.notifier([env.webhook()]);
    const event = await notifier.notify(sampleEvent({ id: undefined }));
    assert.match(event.id, /^ntf_[A-Za-z0-9_-]{22}$/);
    assert.equal(await notifier.drain(), 1);
    assert.equal(env.receiver.received.length, 1);
    const [delivery] = env.receiver.received;
    assert.ok(delivery);
    assert.equal(delivery.path, '/hooks/ops');
    assert.equal(delivery.headers['content-type'], 'application/json');
    assert.equal(delivery.headers['user-agent'], `writ/${WRIT_VERSION}`);
    assert.equal(delivery.headers['webhook-timestamp'], String(Math.floor(START / 1000)));
    const messageId = delivery.headers['webhook-id'] as string;
    assert.equal(messageId, env.enqueued[0]?.id);
    assert.deepEqual(JSON.parse(delivery.body), { ...formatJsonEvent({ ...sampleEvent(), id: event.id }) });

    assert.equal(verifyWebhook(SECRET, delivery.headers, delivery.body, env.clock.now()), true);
    assert.equal(verifyWebhook('not-the-secret', delivery.headers, delivery.body, env.clock.now()), false);
    assert.equal(verifyWebhook(SECRET, delivery.headers, delivery.body.replace('25000', '99999'), env.clock.now()), false);
    assert.equal(verifyWebhook(SECRET, delivery.headers, delivery.body, env.clock.now() + 301_000), false, 'replayed six minutes later');

    const stored = await env.store.getMessage(messageId);
    assert.equal(stored?.state, 'delivered');
    assert.equal(stored?.attempts, 1);
    assert.equal(stored?.settledAt, START);
    assert.equal(await notifier.drain(), 0, 'a delivered message is not sent again');
    assert.equal(env.receiver.received.length, 1);
  });

  test('a whsec_ secret signs with its decoded bytes', async () => {
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    await env.vault.put('std-hook', secret, operator);
    const notifier = env.notifier([env.webhook({ secret: 'std-hook' })]);
    await notifier.notify(sampleEvent());
    await notifier.drain();
    const [delivery] = env.receiver.received;
    assert.ok(delivery);
    assert.equal(verifyWebhook(secret, delivery.headers, delivery.body, env.clock.now()), true);
    assert.equal(verifyWebhook(secret.slice('whsec_'.length), delivery.headers, delivery.body, env.clock.now()), false, 'the base64 text itself is not the key');
  });

  test('a slack webhook receives a Block Kit message with hostile values escaped', async () => {
    const notifier = env.notifier([env.webhook({ format: 'slack' })]);
    await notifier.notify(sampleEvent({ fields: [{ label: 'Purpose', value: '<!channel> refund now & <https://evil|click>' }] }));
    await notifier.drain();
    const [delivery] = env.receiver.received;
    assert.ok(delivery);
    assert.equal(verifyWebhook(SECRET, delivery.headers, delivery.body, env.clock.now()), true);
    const message = JSON.parse(delivery.body);
    assert.equal(message.blocks[0].type, 'header');
    assert.deepEqual(message.blocks[2].fields, [{ type: 'mrkdwn', text: '*Purpose*\n&lt;!channel&gt; refund now &amp; &lt;https://evil|click&gt;', verbatim: true }]);
    assert.ok(!delivery.body.includes('<!channel>'));
  });

  test('a receiver answering 500 twice then 200 gets the message on the third attempt, after a doubling backoff', async () => {
    env.receiver.answers.push({ status: 500 }, { status: 500 });
    const notifier = env.notifier([env.webhook()]);
    await notifier.notify(sampleEvent());
    const id = env.enqueued[0]!.id;

    await notifier.drain();
    let stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'pending');
    assert.equal(stored?.attempts, 1);
    assert.equal(stored?.lastError, 'HTTP 500');
    const firstDelay = stored!.nextAttemptAt - env.clock.now();
    assert.ok(firstDelay >= 800 && firstDelay <= 1000, `first delay ${firstDelay}`);

    await notifier.drain();
    assert.equal(env.receiver.received.length, 1, 'not retried before its time');

    env.clock.advance(firstDelay);
    await notifier.drain();
    stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'pending');
    assert.equal(stored?.attempts, 2);
    const secondDelay = stored!.nextAttemptAt - env.clock.now();
    assert.ok(secondDelay >= 1600 && secondDelay <= 2000, `second delay ${secondDelay}`);

    env.clock.advance(secondDelay);
    await notifier.drain();
    stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'delivered');
    assert.equal(stored?.attempts, 3);
    assert.equal(env.receiver.received.length, 3);
    assert.ok(env.receiver.received.every((r) => r.headers['webhook-id'] === id && r.body === env.enqueued[0]!.body), 'the same id and body every time');
    const last = env.receiver.received[2]!;
    assert.equal(last.headers['webhook-timestamp'], String(Math.floor(env.clock.now() / 1000)), 'each attempt carries its own timestamp');
    assert.equal(verifyWebhook(SECRET, last.headers, last.body, env.clock.now()), true);
    assert.deepEqual(await env.failedRecords(), []);
  });

  test('a 400 fails at once and the failure is audited', async () => {
    env.receiver.answers.push({ status: 400 });
    const notifier = env.notifier([env.webhook()]);
    await notifier.notify(sampleEvent());
    const id = env.enqueued[0]!.id;
    await notifier.drain();
    const stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'failed');
    assert.equal(stored?.lastError, 'HTTP 400');
    env.clock.advance(24 * 3600_000);
    await notifier.drain();
    assert.equal(env.receiver.received.length, 1, 'never sent again');
    await eventually(async () => (await env.failedRecords()).length === 1);
    const [record] = await env.failedRecords();
    assert.equal(record?.reason, '400');
    assert.equal(record?.resource, 'webhook:ops');
    assert.equal(record?.decision, undefined);
    assert.deepEqual(record?.data, { messageId: id, target: 'ops', event: 'approval.requested', attempts: 1 });
  });

  test('when the attempts run out the message fails and the failure is audited', async () => {
    env.receiver.answers.push({ status: 503 }, { status: 503 }, { status: 503 }, { status: 200 });
    const notifier = env.notifier([env.webhook({ maxAttempts: 3 })]);
    await notifier.notify(sampleEvent({ type: 'break_glass.started' }));
    const id = env.enqueued[0]!.id;
    for (let i = 0; i < 5; i++) {
      await notifier.drain();
      env.clock.advance(10 * 60_000);
    }
    const stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'failed');
    assert.equal(stored?.attempts, 3);
    assert.equal(env.receiver.received.length, 3, 'no fourth attempt');
    await eventually(async () => (await env.failedRecords()).length === 1);
    const [record] = await env.failedRecords();
    assert.equal(record?.reason, '503');
    assert.deepEqual(record?.data, { messageId: id, target: 'ops', event: 'break_glass.started', attempts: 3 });
  });

  test('a 429 waits as long as its Retry-After asks', async () => {
    env.receiver.answers.push({ status: 429, headers: { 'retry-after': '120' } });
    const notifier = env.notifier([env.webhook()]);
    await notifier.notify(sampleEvent());
    await notifier.drain();
    const stored = await env.store.getMessage(env.enqueued[0]!.id);
    assert.equal(stored?.nextAttemptAt, START + 120_000);
    env.clock.advance(119_000);
    await notifier.drain();
    assert.equal(env.receiver.received.length, 1);
    env.clock.advance(1000);
    await notifier.drain();
    assert.equal((await env.store.getMessage(env.enqueued[0]!.id))?.state, 'delivered');
  });

  test('a redirect is not followed; the message waits for a retry', async () => {
    env.receiver.answers.push({ status: 302, headers: { location: '/elsewhere' } });
    const notifier = env.notifier([env.webhook()]);
    await notifier.notify(sampleEvent());
    await notifier.drain();
    assert.deepEqual(env.receiver.received.map((r) => r.path), ['/hooks/ops']);
    const stored = await env.store.getMessage(env.enqueued[0]!.id);
    assert.equal(stored?.state, 'pending');
    assert.match(stored?.lastError ?? '', /HTTP 302/);
  });

  test('an events filter sends each webhook only the events it asked for', async () => {
    const notifier = env.notifier([
      env.webhook({ name: 'everything', url: `${env.receiver.url}/all` }),
      env.webhook({ name: 'pager', url: `${env.receiver.url}/pager`, events: ['break_glass.started'] }),
    ]);
    await notifier.notify(sampleEvent({ type: 'approval.requested' }));
    await notifier.drain();
    assert.deepEqual(env.receiver.received.map((r) => r.path), ['/all']);
    await notifier.notify(sampleEvent({ type: 'break_glass.started' }));
    await notifier.drain();
    assert.deepEqual(env.receiver.received.map((r) => r.path).sort(), ['/all', '/all', '/pager']);
    assert.equal(env.enqueueCalls.count, 2, 'one write per event, all webhooks at once');
  });

  test('with no webhook that wants the event, notify writes nothing', async () => {
    await env.notifier([]).notify(sampleEvent());
    await env.notifier([env.webhook({ events: ['break_glass.started'] })]).notify(sampleEvent({ type: 'approval.requested' }));
    assert.equal(env.enqueueCalls.count, 0);
  });

  test('a notification outlives the process that queued it: another process delivers it', async () => {
    const crashed = env.notifier([env.webhook()]);
    await crashed.notify(sampleEvent());
    await crashed.stop(); // before its own drain could start
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(env.receiver.received.length, 0);
    const other = createNotifier({
      store: await env.openAnotherStore(),
      vault: env.vault,
      webhooks: [env.webhook()],
      audit: env.audit,
      clock: env.clock,
      logger: pino({ level: 'silent' }),
    });
    env.notifiers.push(other);
    assert.equal(await other.drain(), 1);
    assert.equal(env.receiver.received[0]?.headers['webhook-id'], env.enqueued[0]?.id);
  });

  test('two notifiers draining one outbox at once deliver each message exactly once', async () => {
    const a = env.notifier([env.webhook()]);
    const b = createNotifier({ store: await env.openAnotherStore(), vault: env.vault, webhooks: [env.webhook()], audit: env.audit, clock: env.clock, logger: pino({ level: 'silent' }) });
    env.notifiers.push(b);
    for (let i = 0; i < 45; i++) await a.notify(sampleEvent({ summary: `event ${i}` }));
    const counts = await Promise.all([a.drain(), b.drain(), a.drain(), b.drain()]);
    await a.stop();
    await b.stop();
    const ids = env.receiver.received.map((r) => r.headers['webhook-id']);
    assert.equal(ids.length, 45, `counts ${counts.join(',')}`);
    assert.equal(new Set(ids).size, 45, 'no message twice');
    for (const message of env.enqueued) assert.equal((await env.store.getMessage(message.id))?.state, 'delivered');
  });

  test('a signing secret missing from the vault is retried, and delivered once the operator adds it', async () => {
    const notifier = env.notifier([env.webhook({ secret: 'not-yet-set' })]);
    await notifier.notify(sampleEvent());
    const id = env.enqueued[0]!.id;
    await notifier.drain();
    assert.equal(env.receiver.received.length, 0, 'nothing unsigned is sent');
    let stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'pending');
    assert.match(stored?.lastError ?? '', /not-yet-set/);
    assert.ok(env.logs.some((line) => JSON.parse(line).level === 40 && line.includes('secret_unavailable')), 'logged at warn');

    await env.vault.put('not-yet-set', 'added-later-4d2c', operator);
    env.clock.advance(stored!.nextAttemptAt - env.clock.now());
    await notifier.drain();
    stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'delivered');
    const [delivery] = env.receiver.received;
    assert.ok(delivery);
    assert.equal(verifyWebhook('added-later-4d2c', delivery.headers, delivery.body, env.clock.now()), true);
  });

  test('an attempt that times out is retried', async () => {
    env.receiver.answers.push('hang');
    const notifier = env.notifier([env.webhook({ timeout: 1 })]);
    await notifier.notify(sampleEvent());
    const id = env.enqueued[0]!.id;
    await notifier.drain();
    let stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'pending');
    assert.match(stored?.lastError ?? '', /no answer within 1000 ms/);
    env.clock.advance(stored!.nextAttemptAt - env.clock.now());
    await notifier.drain();
    stored = await env.store.getMessage(id);
    assert.equal(stored?.state, 'delivered');
    assert.equal(env.receiver.received.length, 2);
  });

  test('a receiver that is down is retried (network error)', async () => {
    const notifier = env.notifier([env.webhook({ url: 'http://127.0.0.1:9/unreachable' })]);
    await notifier.notify(sampleEvent());
    await notifier.drain();
    const stored = await env.store.getMessage(env.enqueued[0]!.id);
    assert.equal(stored?.state, 'pending');
    assert.match(stored?.lastError ?? '', /fetch failed/);
  });

  test('a message for a webhook no longer configured fails and is audited', async () => {
    const before = env.notifier([env.webhook({ name: 'retired' })]);
    await before.notify(sampleEvent());
    await before.stop();
    const after = env.notifier([env.webhook({ name: 'current' })]);
    await after.drain();
    assert.equal(env.receiver.received.length, 0);
    const stored = await env.store.getMessage(env.enqueued[0]!.id);
    assert.equal(stored?.state, 'failed');
    assert.equal(stored?.lastError, 'webhook no longer configured');
    await eventually(async () => (await env.failedRecords()).length === 1);
    assert.equal((await env.failedRecords())[0]?.reason, 'not_configured');
  });

  test('a node without webhooks claims nothing, leaving its peers their messages', async () => {
    const peer = env.notifier([env.webhook()]);
    await peer.notify(sampleEvent());
    await peer.stop();
    assert.equal(await env.notifier([]).drain(), 0);
    assert.equal((await env.store.getMessage(env.enqueued[0]!.id))?.attempts, 0);
  });

  test('the logs name the message and the webhook, never the secret, the body or the URL', async () => {
    env.receiver.answers.push({ status: 500 }, { status: 400 });
    const notifier = env.notifier([env.webhook()]);
    await notifier.notify(sampleEvent({ summary: 'marker-body-71be' }));
    await notifier.drain();
    env.clock.advance(10 * 60_000);
    await notifier.drain();
    await notifier.drain();
    const text = env.logs.join('');
    assert.ok(env.logs.length >= 2);
    assert.ok(text.includes(env.enqueued[0]!.id));
    assert.ok(!text.includes(SECRET), 'no secret');
    assert.ok(!text.includes('marker-body-71be'), 'no body');
    assert.ok(!text.includes(env.receiver.url), 'no URL (a Slack webhook URL is itself a credential)');
  });

  test('start drains on its own; stop waits for the drain in flight', async () => {
    const notifier = env.notifier([env.webhook()], { pollIntervalMs: 20 });
    const body = JSON.stringify({ queued: 'by another node' });
    await env.store.enqueueMessages([{ id: 'msg_fromanothernode00000000', target: 'ops', event: 'approval.requested', body, createdAt: START }]);
    notifier.start();
    await eventually(() => env.receiver.received.length === 1);
    await notifier.stop();
    assert.equal((await env.store.getMessage('msg_fromanothernode00000000'))?.state, 'delivered');
    assert.equal(env.receiver.received[0]?.body, body);
  });

  test('stop waits for a delivery in flight to be recorded', async () => {
    env.receiver.answers.push({ status: 200, delayMs: 300 });
    const notifier = env.notifier([env.webhook()], { pollIntervalMs: 20 });
    await env.store.enqueueMessages([{ id: 'msg_slowreceiver0000000000', target: 'ops', event: 'approval.requested', body: '{}', createdAt: START }]);
    notifier.start();
    await eventually(() => env.receiver.received.length === 1);
    assert.equal((await env.store.getMessage('msg_slowreceiver0000000000'))?.state, 'pending', 'the receiver has not answered yet');
    await notifier.stop();
    assert.equal((await env.store.getMessage('msg_slowreceiver0000000000'))?.state, 'delivered');
  });
});
