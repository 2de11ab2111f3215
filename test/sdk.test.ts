/**
 * The `writ/sdk` client against a real Writ over HTTP: a task, a checked call,
 * a call held for a human's approval and let through once, a task that waits
 * for approval and activates, break-glass, and errors as stable codes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createWritClient, WritApiError, type WritClient } from '../src/sdk/index.js';
import { AGENT, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';

const CAROL = 'spiffe://demo.local/human/carol';
const OLGA = 'spiffe://demo.local/human/olga';

describe('writ/sdk', () => {
  let h: Harness;
  let client: WritClient;
  before(async () => {
    // Deleting a ticket is granted only with a human's approval (a grant-stage request).
    const dir = policyFolder({
      'deletes.cedar': '@id("ticket-deletes-need-approval")\n@approval("required")\npermit (principal is Writ::Agent, action == Writ::Action::"delete", resource is Writ::Api)\nwhen { resource.kind == "tickets" && context.intent == "customer-support" };\n',
    });
    h = await startHarness({ config: { policy: { dir } } });
    await h.registerAgent();
    await h.writ.registerIdentity({ id: CAROL, actorType: 'human', environment: 'production', labels: { approver: 'production' } });
    await h.writ.registerIdentity({ id: OLGA, actorType: 'human', environment: 'production', labels: { 'on-call': 'production', email: 'alice@example.com' } });
    client = createWritClient({ baseUrl: h.url });
  });
  after(() => h.close());

  test('a task, a checked call, the end of the task; a refusal is a WritApiError with its code', async () => {
    const grant = await client.requestTask(await h.identityToken(), supportTask());
    if (grant.status !== 'granted') assert.fail(`granted expected, got ${grant.status}`);
    assert.equal((await client.authorize(grant.token, { action: 'read', resource: 'db:orders/42' })).allowed, true);
    assert.equal((await client.completeTask(grant.token, grant.task.id)).state, 'completed');
    await assert.rejects(client.requestTask(await h.identityToken(), supportTask({ scopes: [{ action: 'admin', resource: 'tickets:admin' }] })), (error: unknown) => error instanceof WritApiError && error.code === 'ERR_POLICY_DENIED');
  });

  test('authorizeWithApproval holds a call until a human approves it, then it goes through once', async () => {
    const grant = await client.requestTask(await h.identityToken(), supportTask({ scopes: [{ action: 'refund', resource: 'payments:refunds/*' }] }));
    if (grant.status === 'pending_approval') assert.fail('granted expected');
    const call = { action: 'refund', resource: 'payments:refunds/R-1', context: { amountCents: 25_000 } };
    const held = client.authorizeWithApproval(grant.token, call, { waitMs: 20_000, pollMs: 50 });
    const carol = await h.identityToken(CAROL);
    let pending;
    for (let i = 0; i < 200 && pending === undefined; i += 1) {
      [pending] = await client.listApprovals(carol);
      if (pending === undefined) await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(pending, 'the request appeared');
    assert.deepEqual(pending.arguments, { amountCents: 25_000 });
    assert.equal((await client.approve(carol, pending.id, 'ok')).state, 'approved');
    const answer = await held;
    assert.equal(answer.allowed, true);
    assert.deepEqual(answer.approval, { id: pending.id, state: 'consumed' });
    const again = await client.authorize(grant.token, call);
    assert.equal(again.decision, 'approval_required', 'once only');
    const waited = await client.waitForApproval(grant.token, again.approval?.id ?? '', { timeoutMs: 200, pollMs: 50 });
    assert.equal(waited.state, 'pending', 'an unanswered wait ends at its timeout with the request as it stands');
  });

  test('a task that waits for approval stays pending until answered; denied, its activation is refused', async () => {
    const agent = await h.identityToken();
    const pending = await client.requestTask(agent, supportTask({ scopes: [{ action: 'delete', resource: 'tickets:T-1042' }] }));
    assert.equal(pending.status, 'pending_approval');
    if (pending.status !== 'pending_approval') return;
    const [request] = pending.approvals;
    assert.equal((await client.activateTask(agent, pending.task.id)).status, 'pending_approval');
    await client.deny(await h.identityToken(CAROL), request?.id ?? '', 'not this one');
    await assert.rejects(client.activateTask(agent, pending.task.id), (error: unknown) => error instanceof WritApiError && error.code === 'ERR_POLICY_DENIED');
  });

  test('break-glass for an agent the human owns', async () => {
    const started = await client.breakGlass(await h.identityToken(OLGA), {
      reason: 'Checkout down; fix stuck orders by hand',
      incident: 'INC-9',
      environment: 'production',
      scopes: [{ action: 'write', resource: 'db:orders/*' }],
      duration: '5m',
      identity: AGENT,
    });
    assert.equal(started.breakGlass.state, 'running');
    const answer = await client.authorize(started.token, { action: 'write', resource: 'db:orders/9' });
    assert.equal(answer.allowed, true);
    assert.equal(answer.breakGlass, true);
  });
});
