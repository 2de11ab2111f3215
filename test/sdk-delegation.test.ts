/**
 * The `writ/sdk` side of delegation and renewal against a real Writ over HTTP,
 * on a manual clock: a planner hands a worker a slice (RFC 8693 token
 * exchange), and a held task renews at the checkpoints its holder marks, only
 * when its token nears expiry, once however many checkpoints arrive together,
 * and with every refusal surfacing as a WritApiError with its stable code.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createManualClock } from '../src/core/clock.js';
import { createWritClient, WritApiError, type HeldTask, type WritClient } from '../src/sdk/index.js';
import { AGENT, claimsOf, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';

const PLANNER = 'spiffe://demo.local/agent/planner';
const WORKER = 'spiffe://demo.local/agent/worker';
const HELPER = 'spiffe://demo.local/agent/helper';
const OLGA = 'spiffe://demo.local/human/olga';

/** `error` is a WritApiError with `code`. */
const withCode = (code: string) => (error: unknown) => error instanceof WritApiError && error.code === code;

describe('writ/sdk: delegation and checkpoints', () => {
  let h: Harness;
  let client: WritClient;
  const clock = createManualClock(Date.parse('2026-11-24T10:00:00Z'));
  const now = () => clock.now();
  before(async () => {
    // A short maximum lifetime (15 min), so a few renewals reach it.
    h = await startHarness({ clock, config: { policy: { dir: policyFolder() }, tokens: { maxLifetime: 900 } } });
    for (const id of [AGENT, PLANNER, WORKER, HELPER]) await h.registerAgent(id);
    await h.writ.registerIdentity({ id: OLGA, actorType: 'human', environment: 'production', labels: { 'on-call': 'production', email: 'alice@example.com' } });
    client = createWritClient({ baseUrl: h.url });
  });
  after(() => h.close());

  /** A granted support task for `identity` (ttl 300 s), held on the test's clock. */
  const holdSupportTask = async (identity = AGENT, overrides: Record<string, unknown> = {}, renewWithin?: number): Promise<HeldTask> => {
    const grant = await client.requestTask(await h.identityToken(identity), supportTask(overrides) as Parameters<WritClient['requestTask']>[1]);
    if (grant.status !== 'granted') assert.fail(`granted expected, got ${grant.status}`);
    return client.holdTask(grant, { now, ...(renewWithin === undefined ? {} : { renewWithin }) });
  };
  /** What a worker hands its planner to be delegated to: an identity token for one exchange. */
  const actorToken = async (id: string) => (await h.writ.issueIdentityToken(id, undefined, { forExchange: true })).token;
  const renewalsOf = async (taskId: string) =>
    (await h.auditRecords()).filter((r) => r.type === 'task.renewed' && (r.task as { id: string }).id === taskId);

  test('a planner hands a worker a slice: scopes as objects or as a string, the worker acts within it and nothing more', async () => {
    const planner = await holdSupportTask(PLANNER, { scopes: [{ action: 'read', resource: 'db:orders/*' }, { action: 'read', resource: 'tickets:*' }] });
    const worker = await client.delegate(planner.token, await actorToken(WORKER), {
      scopes: [{ action: 'read', resource: 'db:orders/42' }],
      ttl: '2m',
      purpose: 'Look up the order on ticket T-1042',
    });
    assert.equal(worker.tokenType, 'Bearer');
    assert.equal(worker.expiresIn, 120);
    assert.deepEqual(worker.scopes, [{ action: 'read', resource: 'db:orders/42' }]);
    assert.match(worker.taskId, /^task_/);
    const claims = claimsOf(worker.token);
    assert.deepEqual(claims.act, { sub: WORKER }, 'the token names the worker as the actor');
    assert.equal(claims.task.id, worker.taskId);
    assert.deepEqual(claims.task.lineage, [planner.id]);
    assert.equal(claims.task.purpose, 'Look up the order on ticket T-1042');
    assert.equal((await client.authorize(worker.token, { action: 'read', resource: 'db:orders/42' })).allowed, true);
    assert.equal((await client.authorize(worker.token, { action: 'read', resource: 'db:orders/43' })).reason, 'ERR_SCOPE_NOT_GRANTED');

    // The held task delegates with its current token; scopes as OAuth writes them, and who may act next.
    const second = await planner.delegate(await actorToken(WORKER), { scopes: 'read:db:orders/* read:tickets:T-1042', mayAct: [HELPER] });
    assert.deepEqual(second.scopes, [{ action: 'read', resource: 'db:orders/*' }, { action: 'read', resource: 'tickets:T-1042' }]);
    assert.deepEqual(claimsOf(second.token).may_act, { sub: HELPER });
    await assert.rejects(client.delegate(second.token, await actorToken(PLANNER), { scopes: 'read:db:orders/42' }), withCode('ERR_ACTOR_NOT_ALLOWED'), 'may_act holds');
  });

  test('a refused delegation is a WritApiError with its code, the offending scopes, and OAuth\'s error', async () => {
    const planner = await holdSupportTask(PLANNER, { scopes: [{ action: 'read', resource: 'db:orders/*' }] });
    const refused = await client.delegate(planner.token, await actorToken(WORKER), { scopes: 'read:db:orders/42 read:db:customers/42' }).then(
      () => assert.fail('the delegation was refused'),
      (error: unknown) => error,
    );
    assert.ok(refused instanceof WritApiError, `a WritApiError, got ${String(refused)}`);
    assert.equal(refused.code, 'ERR_SCOPE_EXCEEDS_PARENT');
    assert.equal(refused.status, 403);
    assert.deepEqual(refused.problem.scopes, ['read:db:customers/42']);
    assert.equal(refused.problem.error, 'invalid_scope');
    await assert.rejects(planner.delegate(await actorToken(WORKER), { scopes: 'read:db:orders/42', ttl: '10m' }), withCode('ERR_LIFETIME_EXCEEDS_PARENT'));
    await assert.rejects(client.delegate('not-a-token', await actorToken(WORKER), { scopes: 'read:db:orders/42' }), withCode('ERR_UNAUTHENTICATED'));
    await assert.rejects(planner.delegate(await h.identityToken(WORKER), { scopes: 'read:db:orders/42' }), withCode('ERR_UNAUTHENTICATED'), 'a general identity token is no actor token');
  });

  test('a checkpoint far from expiry renews nothing and says when it would; nothing goes on the record', async () => {
    const held = await holdSupportTask();
    const token = held.token;
    clock.advance(60_000);
    const result = await held.checkpoint('read the ticket');
    assert.deepEqual(result, { renewed: false, reason: 'not_due', expiresIn: 240, dueIn: 140 }, 'a third of 300 s: due from 200 s on');
    assert.equal(held.token, token);
    assert.deepEqual(await renewalsOf(held.id), []);
    assert.equal((await held.get()).renewals, 0);
  });

  test('a checkpoint in the last third renews: the note on the record, the new token used for everything after, the old one refused', async () => {
    const held = await holdSupportTask();
    const old = held.token;
    clock.advance(210_000);
    const result = await held.checkpoint('stage 1 of 3 done: order found');
    assert.equal(result.renewed, true, JSON.stringify(result));
    if (!result.renewed) return;
    assert.equal(result.expiresIn, 300);
    assert.equal(result.task.renewals, 1);
    assert.notEqual(held.token, old, 'the holder holds the new token');
    assert.equal(held.expiresIn(), 300);

    const [record] = await renewalsOf(held.id);
    assert.ok(record, 'the renewal is on the record');
    assert.equal(record.decision, 'allow');
    assert.equal((record.data as { checkpoint: string }).checkpoint, 'stage 1 of 3 done: order found');

    assert.equal((await client.authorize(old, { action: 'read', resource: 'db:orders/42' })).reason, 'ERR_TOKEN_REVOKED', 'the replaced token is refused');
    assert.equal((await held.authorize({ action: 'read', resource: 'db:orders/42' })).allowed, true);
    // Past the old token's expiry, the new one still works.
    clock.advance(120_000);
    assert.equal((await held.authorize({ action: 'read', resource: 'db:orders/42' })).allowed, true);
    assert.deepEqual(await held.checkpoint('stage 2 of 3 done'), { renewed: false, reason: 'not_due', expiresIn: 180, dueIn: 80 }, 'fresh: not due again');
    assert.equal((await held.complete('answered')).state, 'completed');
  });

  test('two checkpoints at once make one renewal; the other says it was renewed concurrently', async () => {
    const held = await holdSupportTask();
    clock.advance(250_000);
    const results = await Promise.all([held.checkpoint('branch A done'), held.checkpoint('branch B done'), held.checkpoint('branch C done')]);
    assert.deepEqual(results.map((r) => r.renewed), [true, false, false]);
    for (const result of results.slice(1)) assert.deepEqual(result, { renewed: false, reason: 'renewed_concurrently', expiresIn: 300, dueIn: 200 });
    const records = await renewalsOf(held.id);
    assert.equal(records.length, 1, `one renewal on the record, not ${records.length}`);
    assert.equal((await held.get()).renewals, 1);
  });

  test('a call made while a renewal is under way waits for it and goes out with the new token', async () => {
    const held = await holdSupportTask();
    clock.advance(250_000);
    const settled: string[] = [];
    const [renewed, answer] = await Promise.all([
      held.checkpoint('stage done').then((r) => (settled.push('checkpoint'), r)),
      held.authorize({ action: 'read', resource: 'db:orders/42' }).then((a) => (settled.push('authorize'), a)),
    ]);
    assert.equal(renewed.renewed, true);
    assert.deepEqual(settled, ['checkpoint', 'authorize'], 'the call waited for the renewal');
    assert.equal(answer.allowed, true, JSON.stringify(answer));
  });

  test('renewWithin (seconds) sets the threshold, for the holder or one checkpoint', async () => {
    const held = await holdSupportTask(AGENT, {}, 250);
    clock.advance(40_000);
    assert.deepEqual(await held.checkpoint('early'), { renewed: false, reason: 'not_due', expiresIn: 260, dueIn: 10 });
    clock.advance(20_000);
    assert.equal((await held.checkpoint('due under the holder\'s threshold')).renewed, true);
    const other = await holdSupportTask();
    clock.advance(30_000);
    assert.equal((await other.checkpoint('not due by default')).renewed, false);
    assert.equal((await other.checkpoint('due under this checkpoint\'s threshold', { renewWithin: 280, ttl: '4m' })).renewed, true);
    assert.equal(other.expiresIn(), 240, 'the ttl asked for');
  });

  test('a refused renewal surfaces its code and leaves the holder on its current token', async () => {
    const held = await holdSupportTask();
    const token = held.token;
    clock.advance(250_000);
    await assert.rejects(held.checkpoint('more than held', { scopes: [{ action: 'write', resource: 'tickets:T-9999' }] }), withCode('ERR_SCOPE_NOT_GRANTED'));
    assert.equal(held.token, token);
    assert.equal((await held.authorize({ action: 'read', resource: 'db:orders/42' })).allowed, true, 'the current token still works');
    const [record] = await renewalsOf(held.id);
    assert.equal(record?.decision, 'deny', 'the refusal is on the record');
    assert.equal(record?.reason, 'ERR_SCOPE_NOT_GRANTED');

    // Every checkpoint joined to a refused renewal is refused with it.
    const joined = await Promise.allSettled([held.checkpoint('a', { scopes: [{ action: 'admin', resource: 'tickets:admin' }] }), held.checkpoint('b')]);
    assert.deepEqual(joined.map((r) => r.status === 'rejected' && (r.reason as WritApiError).code), ['ERR_SCOPE_NOT_GRANTED', 'ERR_SCOPE_NOT_GRANTED']);
    assert.equal((await renewalsOf(held.id)).length, 2, 'one more renewal asked, not two');
  });

  test('renewals stop at the task\'s maximum lifetime: the last one is cut with a warning, the next is ERR_MAX_LIFETIME_REACHED', async () => {
    const held = await holdSupportTask();
    for (const at of [210_000, 210_000]) {
      clock.advance(at);
      assert.equal((await held.checkpoint('another stage done')).renewed, true);
    }
    clock.advance(210_000); // 630 s into a task that may live 900 s
    const cut = await held.checkpoint('last stage started');
    assert.equal(cut.renewed, true);
    if (!cut.renewed) return;
    assert.equal(cut.expiresIn, 270);
    assert.match(cut.warnings.join(' '), /maximum lifetime/);
    clock.advance(269_500);
    await assert.rejects(held.checkpoint('one more, please'), withCode('ERR_MAX_LIFETIME_REACHED'));
  });

  test('a break-glass grant is never renewed: ERR_NOT_RENEWABLE', async () => {
    const started = await client.breakGlass(await h.identityToken(OLGA), {
      reason: 'Checkout down; fix stuck orders by hand',
      incident: 'INC-12',
      environment: 'production',
      scopes: [{ action: 'write', resource: 'db:orders/*' }],
      duration: '5m',
      identity: AGENT,
    });
    const held = client.holdTask(started, { now });
    clock.advance(250_000);
    await assert.rejects(held.checkpoint('still fixing'), withCode('ERR_NOT_RENEWABLE'));
  });

  test('a worker renews its delegated task at its own checkpoint, never past its planner\'s expiry', async () => {
    const planner = await holdSupportTask(PLANNER, { scopes: [{ action: 'read', resource: 'db:orders/*' }] });
    clock.advance(100_000);
    const worker = client.holdTask(await planner.delegate(await actorToken(WORKER), { scopes: 'read:db:orders/42', ttl: 120 }), { now });
    clock.advance(90_000);
    const renewed = await worker.checkpoint('order 42 read');
    assert.equal(renewed.renewed, true);
    if (!renewed.renewed) return;
    assert.equal(renewed.expiresIn, 110, 'cut to the planner\'s expiry');
    assert.match(renewed.warnings.join(' '), /delegated from/);
    assert.equal((await worker.authorize({ action: 'read', resource: 'db:orders/42' })).allowed, true);
  });

  test('a checkpoint note is checked at once, even when no renewal is due', async () => {
    const held = await holdSupportTask();
    for (const note of ['', 'x'.repeat(501), 'line\nbreak']) {
      await assert.rejects(held.checkpoint(note), TypeError, JSON.stringify(note.slice(0, 20)));
    }
    assert.deepEqual(await renewalsOf(held.id), []);
  });
});
