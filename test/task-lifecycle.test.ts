/**
 * The task state machine as users meet it: legal ends, illegal transitions as
 * 409, other identities' tasks invisible, and the reaper expiring tasks on a
 * frozen clock.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TASK_TRANSITIONS, canTransition, isTerminal, statesLeadingTo } from '../src/broker/task-states.js';
import { createManualClock } from '../src/core/clock.js';
import { createWrit } from '../src/writ.js';
import { TASK_STATES } from '../src/core/types.js';
import { startHarness, supportTask, type Harness } from './helpers/harness.js';
import { execSql } from './helpers/sql.js';

describe('the state machine table', () => {
  test('terminal states have no way out, and every non-terminal state can be ended', () => {
    for (const state of TASK_STATES) {
      assert.equal(isTerminal(state), TASK_TRANSITIONS[state].length === 0);
      if (!isTerminal(state)) assert.ok(canTransition(state, 'revoked') && canTransition(state, 'expired'), state);
    }
    assert.deepEqual(statesLeadingTo('completed'), ['active']);
    assert.deepEqual(statesLeadingTo('revoked'), ['pending_approval', 'active']);
    assert.equal(canTransition('completed', 'active'), false);
    assert.equal(canTransition('expired', 'active'), false);
    assert.equal(canTransition('denied', 'active'), false);
  });
});

describe('ending tasks over HTTP', () => {
  let h: Harness;
  const clock = createManualClock(Date.parse('2026-11-23T10:00:00Z'));
  before(async () => {
    h = await startHarness({ clock });
    await h.registerAgent();
    await h.registerAgent('spiffe://demo.local/agent/other');
  });
  after(() => h.close());

  const grant = async (overrides: Record<string, unknown> = {}) => {
    const answer = await h.post('/v1/tasks', supportTask(overrides), await h.identityToken());
    assert.ok(answer.status === 201 || answer.status === 202, JSON.stringify(answer.body));
    return { id: answer.body.task.id as string, token: answer.body.token as string | undefined };
  };

  test('an illegal transition is a 409 naming the current state, and changes nothing', async () => {
    const identityToken = await h.identityToken();
    const task = await grant();
    assert.equal((await h.post(`/v1/tasks/${task.id}/fail`, { note: 'upstream 500' }, identityToken)).status, 200);
    for (const verb of ['complete', 'fail', 'revoke']) {
      const answer = await h.post(`/v1/tasks/${task.id}/${verb}`, {}, identityToken);
      assert.equal(answer.status, 409, verb);
      assert.equal(answer.body.code, 'ERR_TASK_STATE_CONFLICT');
      assert.equal(answer.body.state, 'failed');
    }
    const stored = await h.writ.store.getTask(task.id);
    assert.equal(stored?.state, 'failed');
    assert.equal(stored?.endReason, 'failed: upstream 500');
  });

  test('a pending task can be revoked but not completed', async () => {
    const identityToken = await h.identityToken();
    const pending = await grant({ scopes: [{ action: 'export', resource: 'db:orders/7' }] });
    assert.equal(pending.token, undefined);
    assert.equal((await h.post(`/v1/tasks/${pending.id}/complete`, {}, identityToken)).status, 409);
    const revoked = await h.post(`/v1/tasks/${pending.id}/revoke`, {}, identityToken);
    assert.equal(revoked.status, 200);
    assert.equal(revoked.body.task.state, 'revoked');
  });

  test("another identity's task looks exactly like a missing one", async () => {
    const task = await grant();
    const otherToken = await h.identityToken('spiffe://demo.local/agent/other');
    const other = await h.post(`/v1/tasks/${task.id}/revoke`, {}, otherToken);
    const missing = await h.post(`/v1/tasks/task_AAAAAAAAAAAAAAAAAAAAAA/revoke`, {}, otherToken);
    const junk = await h.post(`/v1/tasks/${encodeURIComponent("x' or 1=1 --")}/revoke`, {}, otherToken);
    for (const answer of [other, missing, junk]) {
      assert.equal(answer.status, 404);
      assert.equal(answer.body.code, 'ERR_TASK_NOT_FOUND');
    }
    assert.equal((await h.get(`/v1/tasks/${task.id}`, otherToken)).status, 404);
    assert.equal((await h.writ.store.getTask(task.id))?.state, 'active');
  });

  test("a task token reaches only its own task", async () => {
    const first = await grant();
    const second = await grant();
    assert.equal((await h.get(`/v1/tasks/${second.id}`, first.token)).status, 404);
    assert.equal((await h.post(`/v1/tasks/${second.id}/revoke`, {}, first.token)).status, 404);
    const own = await h.get(`/v1/tasks/${first.id}`, first.token);
    assert.equal(own.status, 200);
    assert.equal(own.body.task.state, 'active');
  });

  test('the reaper expires tasks past their TTL, and their tokens are refused', async () => {
    const short = await grant({ ttl: 60 });
    const long = await grant({ ttl: 600 });
    assert.equal((await h.writ.authorize(short.token!, { action: 'read', resource: 'db:orders/1' })).allowed, true);
    clock.advance(61_000);
    assert.equal(await h.writ.broker.reapExpired(), 1);
    assert.equal((await h.writ.store.getTask(short.id))?.state, 'expired');
    assert.equal((await h.writ.store.getTask(long.id))?.state, 'active');
    assert.equal(h.writ.revocations.isRevoked(short.id), true);
    // Within the clock-skew window the token's own exp still holds; revocation refuses it.
    assert.equal((await h.writ.authorize(short.token!, { action: 'read', resource: 'db:orders/1' })).reason, 'ERR_TOKEN_REVOKED');
    clock.advance(60_000);
    assert.equal((await h.writ.authorize(short.token!, { action: 'read', resource: 'db:orders/1' })).reason, 'ERR_TOKEN_EXPIRED');
    assert.equal((await h.writ.authorize(long.token!, { action: 'read', resource: 'db:orders/1' })).allowed, true);
    const ended = (await h.auditRecords()).filter((r) => r.type === 'task.ended' && (r.task as { id: string }).id === short.id);
    assert.equal(ended.length, 1);
    assert.equal(ended[0]?.reason, 'expired');
    assert.equal(await h.writ.broker.reapExpired(), 0, 'a second pass finds nothing');
  });

  /** What a freshly started Writ on the same store answers for `token`. */
  const reasonAfterRestart = async (token: string) => {
    const restarted = await createWrit({ config: h.writ.config, clock, env: {} });
    try {
      return (await restarted.authorize(token, { action: 'read', resource: 'db:orders/1' })).reason;
    } finally {
      await restarted.close();
    }
  };

  test('ended tasks are refused after a restart too', async () => {
    const task = await grant();
    await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
    assert.equal(await reasonAfterRestart(task.token!), 'ERR_TOKEN_REVOKED');
  });

  test('a task that ended and expired moments ago stays refused across a restart, within the clock-skew window', async () => {
    const task = await grant({ ttl: 60 });
    await h.post(`/v1/tasks/${task.id}/complete`, {}, task.token);
    clock.advance(65_000); // past exp, but inside the 30 s skew the token itself is still accepted
    assert.equal(await reasonAfterRestart(task.token!), 'ERR_TOKEN_REVOKED');
  });

  test('a check that fails while deciding is an audited deny, never a throw', async () => {
    const task = await grant();
    clock.advance(10_000); // let the registry's identity cache lapse so the check must read the store
    await execSql(h, 'alter table identities rename to identities_gone');
    try {
      const decision = await h.writ.authorize(task.token!, { action: 'read', resource: 'db:orders/1' });
      assert.equal(decision.allowed, false);
      assert.equal(decision.reason, 'ERR_INTERNAL');
      const record = (await h.auditRecords()).find((r) => r.id === decision.auditId);
      assert.equal(record?.reason, 'ERR_INTERNAL');
    } finally {
      await execSql(h, 'alter table identities_gone rename to identities');
    }
  });
});
