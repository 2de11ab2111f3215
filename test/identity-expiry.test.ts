/**
 * An identity's own expiry bounds every grant for it. Writ's action check
 * refuses an expired identity, but a resource server verifying task tokens
 * offline sees only the token's `exp` and the revocation feed: so no task
 * outlives its identity (grant, renewal, delegation), and an identity whose
 * expiry is moved earlier than its tasks' takes them with it, as an end the
 * feed carries.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createManualClock } from '../src/core/clock.js';
import { claimsOf, delegated, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';

const SHORT_LIVED = 'spiffe://demo.local/agent/short-lived';
const PLANNER = 'spiffe://demo.local/agent/planner';
const WORKER = 'spiffe://demo.local/agent/worker';

describe("an identity's expiry bounds its grants", () => {
  let h: Harness;
  // Off business hours, so risk stays where these tests expect it whatever the hour of the run.
  const clock = createManualClock(Date.parse('2026-11-24T22:00:00Z'));
  const minutes = (n: number) => n * 60_000;

  before(async () => {
    h = await startHarness({ clock, config: { policy: { dir: policyFolder() } } });
    await h.registerAgent(PLANNER);
  });
  after(() => h.close());

  const ask = async (id: string, ttl: number, scopes = [{ action: 'read', resource: 'db:orders/*' }]) => {
    const answer = await h.post('/v1/tasks', supportTask({ ttl, scopes }), await h.identityToken(id));
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return answer.body;
  };

  test("a task asked for longer than its identity lives is cut to the identity's expiry, token and all", async () => {
    const identityEnds = clock.now() + minutes(3);
    await h.registerAgent(SHORT_LIVED, { expiresAt: identityEnds });
    const granted = await ask(SHORT_LIVED, 900);
    assert.equal(Date.parse(granted.task.expiresAt), identityEnds);
    assert.equal(claimsOf(granted.token).exp, Math.floor(identityEnds / 1000), "the token's exp is the identity's expiry");
    assert.ok(granted.warnings.some((w: string) => /the identity's own expiry/.test(w)), JSON.stringify(granted.warnings));
    // One asked for less is left alone.
    const shorter = await ask(SHORT_LIVED, 60);
    assert.equal(Date.parse(shorter.task.expiresAt), clock.now() + 60_000);
  });

  test("a renewal is cut to the identity's expiry, and refused once it is reached", async () => {
    const identityEnds = clock.now() + minutes(4);
    const renewing = 'spiffe://demo.local/agent/renewing';
    await h.registerAgent(renewing, { expiresAt: identityEnds });
    const granted = await ask(renewing, 60);
    const renewed = await h.post(`/v1/tasks/${granted.task.id}/renew`, { checkpoint: 'half way', ttl: '15m' }, granted.token);
    assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
    assert.equal(Date.parse(renewed.body.task.expiresAt), identityEnds);
    assert.ok(renewed.body.warnings.some((w: string) => /the identity's own expiry/.test(w)), JSON.stringify(renewed.body.warnings));
    clock.advance(identityEnds - clock.now() - 500);
    const again = await h.post(`/v1/tasks/${granted.task.id}/renew`, { checkpoint: 'nearly out', ttl: '15m' }, renewed.body.token);
    assert.equal(again.status, 403, JSON.stringify(again.body));
    assert.equal(again.body.code, 'ERR_MAX_LIFETIME_REACHED');
    assert.match(again.body.detail, /the identity it is for expires now/);
  });

  test("a slice delegated to a worker ends no later than the worker's identity", async () => {
    const workerEnds = clock.now() + minutes(2);
    await h.registerAgent(WORKER, { expiresAt: workerEnds });
    const parent = await ask(PLANNER, 900);
    const child = await delegated(h, parent.token, WORKER, 'read:db:orders/42');
    assert.equal(claimsOf(child.token).exp, Math.floor(workerEnds / 1000));
    assert.equal((await h.writ.store.getTask(child.id))?.expiresAt, workerEnds);
  });

  test('an identity whose expiry is moved before its tasks end takes them with it, and the revocation feed says so', async () => {
    const later = 'spiffe://demo.local/agent/moved-expiry';
    await h.registerAgent(later, { expiresAt: clock.now() + minutes(60) });
    const granted = await ask(later, 900);
    const since = String(clock.now() - 1000);
    // Its end brought forward to one minute from now, after the grant (as in the store, by any node).
    assert.ok(await h.writ.store.updateIdentity(later, ['active'], 'active', { at: clock.now(), expiresAt: clock.now() + minutes(1) }), 'the identity is changed');
    await h.writ.broker.reapExpired();
    assert.equal((await h.writ.store.getTask(granted.task.id))?.state, 'active', 'not before the identity expires');
    clock.advance(minutes(1));
    assert.ok((await h.writ.broker.reapExpired()) >= 1, 'the reaper ends it (and whatever else ran out meanwhile)');
    const task = await h.writ.store.getTask(granted.task.id);
    assert.deepEqual([task?.state, task?.endReason], ['revoked', 'revoked: identity expired']);
    const feed = await h.get(`/v1/revocations?since=${since}`);
    assert.equal(feed.status, 200, JSON.stringify(feed.body));
    assert.ok(JSON.stringify(feed.body).includes(granted.task.id), `the feed lists the task: ${JSON.stringify(feed.body)}`);
    const ended = (await h.auditRecords()).filter((r) => r.type === 'task.ended' && (r as any).task?.id === granted.task.id);
    assert.equal(ended.length, 1, 'its end is on the record once');
    // Reaping again moves nothing.
    assert.equal(await h.writ.broker.reapExpired(), 0);
  });
});
