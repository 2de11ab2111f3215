/**
 * Security review of delegation (RFC 8693 token exchange) and renewal at
 * checkpoints. Every test here reproduces a weakness found in review and
 * FAILS until it is fixed; each name carries its severity.
 *
 * Setting: a planner's root task, a worker's child delegated from it at
 * /oauth/token, a helper below that. The invariants under test are the ones
 * the issue promises: a child never holds a scope or a lifetime its parent
 * lacks, a child never outlives its parent's authority, and policy decides
 * the child (delegation included) as it decides any grant.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createManualClock } from '../src/core/clock.js';
import { MAX_TOKEN_LENGTH } from '../src/tokens/jwt.js';
import { claimsOf, startHarness, supportTask, type Harness, type HttpAnswer } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';

const PLANNER = 'spiffe://demo.local/agent/planner';
const WORKER = 'spiffe://demo.local/agent/worker';
const HELPER = 'spiffe://demo.local/agent/helper';
const OUTSIDER = 'spiffe://demo.local/agent/outsider';
/** A planner whose registration lapses two minutes into the run. */
const TEMP_PLANNER = 'spiffe://demo.local/agent/temp-planner';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

// Only the worker may write order rows: what the planner could never get on its own.
const WORKER_WRITES_ORDERS = `@id("review-worker-writes-orders")
permit (principal == Writ::Agent::"${WORKER}", action == Writ::Action::"write", resource)
when { resource.kind == "db" && context.intent == "customer-support" };
`;

function exchangeForm(subject: string, actor: string, scope: string, extra: Record<string, string> = {}): Record<string, string> {
  return { grant_type: EXCHANGE, subject_token: subject, subject_token_type: ACCESS, actor_token: actor, actor_token_type: JWT, scope, ...extra };
}

describe('review: delegation and renewal', () => {
  let h: Harness;
  const clock = createManualClock(Date.parse('2026-11-24T10:00:00Z'));
  const dir = policyFolder({ 'zz-review-worker.cedar': WORKER_WRITES_ORDERS, 'zz-review-drift.cedar': '' });
  before(async () => {
    h = await startHarness({ clock, config: { policy: { dir } } });
    for (const id of [PLANNER, WORKER, HELPER, OUTSIDER]) await h.registerAgent(id);
  });
  after(() => h.close());

  const exchange = (form: Record<string, string>): Promise<HttpAnswer> =>
    h.post('/oauth/token', new URLSearchParams(form).toString(), undefined, { 'content-type': 'application/x-www-form-urlencoded' });
  const plannerTask = async (overrides: Record<string, unknown> = {}, who = PLANNER) => {
    const answer = await h.post(
      '/v1/tasks',
      supportTask({ scopes: [{ action: 'read', resource: 'db:orders/*' }, { action: 'read', resource: 'tickets:*' }, { action: 'write', resource: 'tickets:T-1042' }], ...overrides }),
      await h.identityToken(who),
    );
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return { id: answer.body.task.id as string, token: answer.body.token as string };
  };
  /** An identity token made for one exchange (aud delegation.actorAudience), as the fix for the HIGH finding requires. */
  const actorToken = async (id: string) => (await h.writ.issueIdentityToken(id, undefined, { forExchange: true })).token;
  const delegate = async (subject: string, to: string, scope: string, extra: Record<string, string> = {}) => exchange(exchangeForm(subject, await actorToken(to), scope, extra));
  const delegated = async (subject: string, to: string, scope: string, extra: Record<string, string> = {}) => {
    const answer = await delegate(subject, to, scope, extra);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return { id: answer.body.task_id as string, token: answer.body.access_token as string };
  };
  const renew = (id: string, token: string, body: Record<string, unknown> = { checkpoint: 'stage done' }) => h.post(`/v1/tasks/${id}/renew`, body, token);
  const check = (token: string, action: string, resource: string) => h.writ.authorize(token, { action, resource });

  test('MEDIUM: a parent that gives up a scope at renewal leaves its delegates holding it (child scopes stop being a subset of the parent\'s)', async () => {
    const parent = await plannerTask();
    const child = await delegated(parent.token, WORKER, 'read:tickets:T-1042');
    assert.equal((await check(child.token, 'read', 'tickets:T-1042')).allowed, true, 'precondition: the child reads the ticket');

    // Checkpoint: the planner is done with tickets and renews keeping only the order reads.
    const renewed = await renew(parent.id, parent.token, { checkpoint: 'tickets done', scopes: [{ action: 'read', resource: 'db:orders/*' }] });
    if (renewed.status === 200) {
      assert.equal((await check(renewed.body.token, 'read', 'tickets:T-1042')).reason, 'ERR_SCOPE_NOT_GRANTED', 'precondition: the planner no longer reads tickets');
    }
    // The worker's child (and anything it hands on) still reads tickets its parent no longer holds.
    const afterward = await check(child.token, 'read', 'tickets:T-1042');
    const onward = await delegate(child.token, HELPER, 'read:tickets:T-1042');
    assert.ok(
      renewed.status !== 200 || (afterward.allowed === false && onward.status !== 200),
      `a child must never hold a scope its parent no longer holds: parent renewed ${renewed.status}, child check ${JSON.stringify(afterward.reason)}, onward delegation ${onward.status}`,
    );
  });

  test('LOW: a parent renewed to a shorter ttl leaves its child with a later expiry than its own (exp claim seen by JWKS verifiers; the revocation list prunes assuming the opposite)', async () => {
    const parent = await plannerTask({ ttl: 300 });
    const child = await delegated(parent.token, WORKER, 'read:db:orders/*', { ttl: '4m' });
    // The planner renews at a checkpoint for one more minute: its expiry moves earlier than its child's.
    const renewed = await renew(parent.id, parent.token, { checkpoint: 'nearly done', ttl: 60 });
    assert.equal(renewed.status === 200 || renewed.status === 403 || renewed.status === 409, true, `the renewal is answered: ${JSON.stringify(renewed.body)}`);
    const parentExp = renewed.status === 200 ? (claimsOf(renewed.body.token).exp as number) : (claimsOf(parent.token).exp as number);
    const childExp = claimsOf(child.token).exp as number;
    const childNow = await check(child.token, 'read', 'db:orders/42');

    clock.advance(100_000); // past the parent's new expiry and the clock skew, before a reaper pass
    const parentLater = await check(renewed.status === 200 ? renewed.body.token : parent.token, 'read', 'db:orders/42');
    const childLater = await check(child.token, 'read', 'db:orders/42');
    assert.ok(
      childExp <= parentExp || childNow.allowed === false,
      `child expiry ${childExp} is ${childExp - parentExp}s past its parent's ${parentExp} (issue 7: child expiry ≤ parent expiry); ` +
        `after the parent's expiry: parent ${JSON.stringify(parentLater.reason)}, child ${childLater.allowed ? 'allowed' : JSON.stringify(childLater.reason)}`,
    );
  });

  test('MEDIUM: a delegator whose identity expires stops acting, but its delegates keep acting, renewing and delegating on its behalf', async () => {
    await h.writ.registerIdentity({ id: TEMP_PLANNER, actorType: 'agent', owner: 'alice@example.com', environment: 'production', expiresAt: clock.now() + 600_000 });
    const parent = await plannerTask({ ttl: 300 }, TEMP_PLANNER);
    const child = await delegated(parent.token, WORKER, 'read:db:orders/*', { ttl: '4m' });
    // No grant outlives its identity when it is made; here the planner's registration is cut short afterwards.
    assert.ok(await h.writ.store.updateIdentity(TEMP_PLANNER, ['active'], 'active', { at: clock.now(), expiresAt: clock.now() + 120_000 }), 'the planner\'s expiry is moved earlier');
    clock.advance(150_000); // the planner's registration has lapsed; both tasks are unexpired
    await h.writ.broker.reapExpired();
    await h.writ.settled();
    assert.equal((await check(parent.token, 'read', 'db:orders/42')).allowed, false, 'precondition: the planner itself is refused');

    const childCheck = await check(child.token, 'read', 'db:orders/42');
    const onward = await delegate(child.token, HELPER, 'read:db:orders/42');
    const childRenewal = await renew(child.id, child.token, { checkpoint: 'still going', ttl: 60 });
    assert.ok(
      childCheck.allowed === false && onward.status !== 200 && childRenewal.status !== 200,
      `a grant delegated from an identity that no longer holds any authority still works: child check ${JSON.stringify(childCheck.reason)}, onward delegation ${onward.status}, renewal ${childRenewal.status}`,
    );
  });

  test('MEDIUM: a policy change that forbids a delegation leaves existing delegated tasks running (drift re-decides the worker\'s grant, never the delegation)', async () => {
    const parent = await plannerTask();
    const child = await delegated(parent.token, WORKER, 'read:tickets:T-1042');
    writeFileSync(join(dir, 'zz-review-drift.cedar'), '@id("review-no-delegation")\nforbid (principal, action == Writ::Action::"delegate", resource);\n');
    try {
      const reload = await h.writ.reloadPolicy('review');
      assert.ok(reload.ok, `the reload is valid: ${JSON.stringify(reload)}`);
      await h.writ.settled();
      // The new set refuses the very same delegation, and refuses the child's renewal...
      assert.equal((await delegate(parent.token, WORKER, 'read:tickets:T-1042')).body.code, 'ERR_POLICY_DENIED', 'precondition: policy now forbids this delegation');
      // ...yet the child delegated under the old set keeps acting until it expires.
      const childCheck = await check(child.token, 'read', 'tickets:T-1042');
      assert.equal(childCheck.allowed, false, `a grant policy no longer allows stands after the re-decision: ${JSON.stringify(childCheck)}`);
    } finally {
      writeFileSync(join(dir, 'zz-review-drift.cedar'), '');
      await h.writ.reloadPolicy('review');
    }
  });

  test('HIGH: the actor_token the exchange needs is the worker\'s general identity credential: the planner who made the exchange replays it and acts as the worker', async () => {
    const parent = await plannerTask();
    // Precondition: the planner cannot get order writes on its own.
    const own = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'write', resource: 'db:orders/42' }] }), await h.identityToken(PLANNER));
    assert.notEqual(own.status, 201, `precondition: the planner holds no order writes: ${JSON.stringify(own.body)}`);

    // The exchange: the planner (whose subject token may be bound to its own certificate, so it must be the one
    // calling) is handed the worker's identity token to present as actor_token.
    const workerIdentityToken = await actorToken(WORKER);
    const handed = await exchange(exchangeForm(parent.token, workerIdentityToken, 'read:tickets:T-1042'));

    // The same token, replayed by the planner at the task API: a grant of the worker's, for the planner.
    const replayed = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'write', resource: 'db:orders/42' }] }), workerIdentityToken);
    assert.ok(
      !(handed.status === 200 && replayed.status === 201),
      `the credential the exchange took as actor_token (exchange ${handed.status}) is also the worker's bearer identity: the planner got ${JSON.stringify(replayed.body?.task?.identity)} ${JSON.stringify(replayed.body?.task?.grantedScopes)}`,
    );
  });

  test('LOW: may_act is not attenuated: a restricted child may hand on a grandchild naming anyone, or no one, as may_act', async () => {
    const parent = await plannerTask();
    const child = await delegated(parent.token, WORKER, 'read:db:orders/*', { may_act: HELPER });
    // The planner said only HELPER may act below the worker; the worker widens that for HELPER's task.
    const widened = await delegate(child.token, HELPER, 'read:db:orders/42', { may_act: OUTSIDER });
    const dropped = await delegate(child.token, HELPER, 'read:db:orders/42');
    const droppedClaims = dropped.status === 200 ? claimsOf(dropped.body.access_token) : {};
    assert.ok(
      widened.status !== 200 && (dropped.status !== 200 || droppedClaims.may_act !== undefined),
      `a child's may_act must stay within its parent's: widened ${widened.status}, omitted → ${JSON.stringify(droppedClaims.may_act)}`,
    );
  });

  test('LOW: a task past its expiry (inside the clock-skew window, before the reaper runs) is revived by renewal', async () => {
    const task = await plannerTask({ ttl: 120 });
    clock.advance(125_000); // expired 5 s ago; the token is still accepted for the 30 s skew
    const revived = await renew(task.id, task.token, { checkpoint: 'after the end' });
    assert.notEqual(revived.status, 200, `an expired task renewed: ${JSON.stringify(revived.body?.task?.state ?? revived.body)}`);
  });

  test('LOW: the exchange mints a token Writ itself refuses (may_act of 16 long ids): a task is created that nothing can use', async () => {
    const parent = await plannerTask();
    const ids = Array.from({ length: 16 }, (_, i) => `spiffe://demo.local/agent/${String(i).padStart(4, '0')}${'x'.repeat(600)}`);
    const answer = await delegate(parent.token, WORKER, 'read:db:orders/42', { may_act: ids.join(' ') });
    const length = typeof answer.body?.access_token === 'string' ? answer.body.access_token.length : 0;
    assert.ok(
      answer.status !== 200 || length <= MAX_TOKEN_LENGTH,
      `a ${length}-character token (limit ${MAX_TOKEN_LENGTH}) was issued: ${answer.status}; its check says ${length > 0 ? (await check(answer.body.access_token, 'read', 'db:orders/42')).reason : 'n/a'}`,
    );
  });
});
