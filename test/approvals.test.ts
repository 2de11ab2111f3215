/**
 * Approvals end to end over the HTTP API: a human approves one exact action,
 * once. Replays, other arguments, other resources, expiry, self-approval,
 * N-of-M, racing approvers and racing consumers, grant-stage approvals and
 * the audit trail of every state change. SQLite and PostgreSQL alike.
 */
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import { createManualClock } from '../src/core/clock.js';
import { verifyWebhook } from '../src/events/webhooks.js';
import { AGENT, startHarness, supportTask, type Harness, type HarnessOptions } from './helpers/harness.js';
import { createTestDatabase } from './helpers/pg.js';
import { policyFolder } from './helpers/policy-folder.js';

const CAROL = 'spiffe://demo.local/human/carol';
const DAVE = 'spiffe://demo.local/human/dave';
const ERIN = 'spiffe://demo.local/human/erin';
const REFUND = { action: 'refund', resource: 'payments:refunds/R-1043' };

interface World {
  readonly h: Harness;
  /** A task token holding the refund scope. */
  readonly token: string;
  readonly taskId: string;
  readonly carol: string;
  readonly dave: string;
  readonly erin: string;
}

async function world(options: HarnessOptions = {}): Promise<World> {
  const h = await startHarness(options);
  await h.registerAgent();
  const human = (id: string, labels: Record<string, string>) => h.writ.registerIdentity({ id, actorType: 'human', environment: 'production', labels });
  await human(CAROL, { approver: 'production' });
  await human(DAVE, { approver: 'production' });
  // Erin is a human, but no approver.
  await human(ERIN, {});
  const granted = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'refund', resource: 'payments:refunds/*' }, { action: 'read', resource: 'tickets:*' }] }), await h.identityToken());
  assert.equal(granted.status, 201, JSON.stringify(granted.body));
  return { h, token: granted.body.token, taskId: granted.body.task.id, carol: await h.identityToken(CAROL), dave: await h.identityToken(DAVE), erin: await h.identityToken(ERIN) };
}

const refund = (w: World, amountCents: number, resource = REFUND.resource, extra: Record<string, unknown> = {}) =>
  w.h.post('/v1/authorize', { token: w.token, action: 'refund', resource, context: { amountCents, ...extra } });

// PostgreSQL runs where it can be had (always in CI); createTestDatabase says loudly when it is skipped.
const pgDatabase = await createTestDatabase();
const backends = pgDatabase === undefined ? (['sqlite'] as const) : (['sqlite', 'postgres'] as const);

for (const backend of backends) {
  describe(`approvals (${backend})`, () => {
    let w: World;
    before(async () => {
      w = await world(backend === 'postgres' && pgDatabase !== undefined ? { backend, database: pgDatabase } : {});
    });
    after(() => w.h.close());
    // Each test starts with no request waiting: a task may have only a few at once.
    afterEach(async () => {
      for (const a of await w.h.writ.store.listApprovals({ taskId: w.taskId, states: ['pending'], limit: 200 })) await w.h.writ.store.closeApproval(a.id, ['pending'], 'cancelled', Date.now());
    });

    test('an approved call goes through once; the same call again asks anew (no replay)', async () => {
      const first = await refund(w, 25_000);
      assert.equal(first.body.decision, 'approval_required');
      assert.equal(first.body.reason, 'ERR_APPROVAL_REQUIRED');
      assert.equal(first.body.approval.state, 'pending');
      const id = first.body.approval.id as string;
      assert.match(id, /^apr_/);

      // The same call while pending reuses the one request: approvers are asked once.
      const again = await refund(w, 25_000);
      assert.equal(again.body.approval.id, id);

      // The approver reads exactly what it approves.
      const shown = await w.h.get(`/v1/approvals/${id}`, w.carol);
      assert.equal(shown.status, 200, JSON.stringify(shown.body));
      const approval = shown.body.approval;
      assert.deepEqual(approval.arguments, { amountCents: 25_000 });
      assert.equal(approval.action, 'refund');
      assert.equal(approval.resource, REFUND.resource);
      assert.equal(approval.identity, AGENT);
      assert.equal(approval.owner, 'alice@example.com');
      assert.equal(approval.purpose, 'Answer ticket T-1042');
      assert.equal(approval.task, w.taskId);
      assert.match(approval.argsDigest, /^sha256:[0-9a-f]{64}$/);
      assert.deepEqual(approval.policies, ['refunds-over-limit-need-approval']);
      assert.equal(typeof approval.risk.score, 'number');

      const listed = await w.h.get('/v1/approvals', w.carol);
      assert.ok(listed.body.approvals.some((a: { id: string }) => a.id === id));

      const approved = await w.h.post(`/v1/approvals/${id}/approve`, { note: 'customer verified by phone' }, w.carol);
      assert.equal(approved.status, 200, JSON.stringify(approved.body));
      assert.equal(approved.body.approval.state, 'approved');

      const goes = await refund(w, 25_000);
      assert.equal(goes.body.allowed, true, JSON.stringify(goes.body));
      assert.deepEqual(goes.body.approval, { id, state: 'consumed' });

      const replay = await refund(w, 25_000);
      assert.equal(replay.body.allowed, false);
      assert.equal(replay.body.decision, 'approval_required');
      assert.notEqual(replay.body.approval.id, id, 'a consumed approval covers nothing more');
      const consumed = await w.h.get(`/v1/approvals/${id}`, w.carol);
      assert.equal(consumed.body.approval.state, 'consumed');
      assert.equal(consumed.body.approval.arguments, null, 'arguments are not kept once the request is over');
    });

    test('an approval covers only its own arguments and resource', async () => {
      const asked = await refund(w, 30_000, REFUND.resource, { reason: 'damaged' });
      const id = asked.body.approval.id as string;
      assert.equal((await w.h.post(`/v1/approvals/${id}/approve`, {}, w.carol)).status, 200);

      const more = await refund(w, 30_001, REFUND.resource, { reason: 'damaged' });
      assert.equal(more.body.decision, 'approval_required');
      assert.notEqual(more.body.approval.id, id);
      const elsewhere = await refund(w, 30_000, 'payments:refunds/R-9999', { reason: 'damaged' });
      // Arguments policy never reads are bound all the same.
      const otherReason = await refund(w, 30_000, REFUND.resource, { reason: 'lost' });
      assert.equal(otherReason.body.decision, 'approval_required');
      assert.notEqual(otherReason.body.approval.id, id);
      assert.equal(elsewhere.body.decision, 'approval_required');
      assert.notEqual(elsewhere.body.approval.id, id);
      // Arguments are compared canonically: the same values in another key order are the same call.
      const same = await w.h.post('/v1/authorize', { token: w.token, action: 'refund', resource: REFUND.resource, context: { reason: 'damaged', amountCents: 30_000 } });
      assert.equal(same.body.allowed, true);
      assert.equal(same.body.approval.id, id);
    });

    test('who may answer: a human policy names; not the requester, not another human, not an agent', async () => {
      const asked = await refund(w, 40_000);
      const id = asked.body.approval.id as string;
      // Erin is not an approver: for her the request does not exist.
      const byErin = await w.h.post(`/v1/approvals/${id}/approve`, {}, w.erin);
      assert.equal(byErin.status, 404);
      assert.equal(byErin.body.code, 'ERR_APPROVAL_NOT_FOUND');
      assert.equal((await w.h.get(`/v1/approvals/${id}`, w.erin)).status, 404);
      assert.ok(!(await w.h.get('/v1/approvals', w.erin)).body.approvals.some((a: { id: string }) => a.id === id));
      // The requesting agent sees its request, and may not answer it.
      assert.equal((await w.h.get(`/v1/approvals/${id}`, w.token)).status, 200);
      const byAgent = await w.h.post(`/v1/approvals/${id}/approve`, {}, await w.h.identityToken());
      assert.equal(byAgent.status, 403);
      assert.equal(byAgent.body.code, 'ERR_SELF_APPROVAL');
      // A task token never answers anything.
      assert.equal((await w.h.post(`/v1/approvals/${id}/approve`, {}, w.token)).body.code, 'ERR_FORBIDDEN');
      // No credential, a forged one: 401.
      assert.equal((await w.h.post(`/v1/approvals/${id}/approve`, {})).status, 401);
      assert.equal((await w.h.post(`/v1/approvals/${id}/approve`, {}, `${w.carol.slice(0, -4)}AAAA`)).status, 401);
      assert.equal((await w.h.get(`/v1/approvals/${id}`, w.carol)).body.approval.state, 'pending', 'nothing above changed it');

      const refusals = (await w.h.auditRecords()).filter((r) => r.type === 'approval.voted' && r.decision === 'deny' && (r.data as { approvalId?: string }).approvalId === id);
      assert.deepEqual(refusals.map((r) => r.reason).sort(), ['ERR_APPROVAL_NOT_FOUND', 'ERR_SELF_APPROVAL']);
    });

    test('a deny denies; the call stays refused; answering twice or after the end is refused', async () => {
      const asked = await refund(w, 50_000);
      const id = asked.body.approval.id as string;
      const denied = await w.h.post(`/v1/approvals/${id}/deny`, { note: 'no such order' }, w.dave);
      assert.equal(denied.body.approval.state, 'denied');
      assert.equal(denied.body.approval.arguments, null);
      const late = await w.h.post(`/v1/approvals/${id}/approve`, {}, w.carol);
      assert.equal(late.status, 409);
      assert.equal(late.body.code, 'ERR_APPROVAL_CLOSED');
      const call = await refund(w, 50_000);
      assert.equal(call.body.allowed, false);
      assert.notEqual(call.body.approval.id, id);
    });

    test('a task cannot flood its approvers: past ten calls waiting, a call asks for no more', async () => {
      const asked = await Promise.all(Array.from({ length: 10 }, (_, i) => refund(w, 20_000 + i)));
      assert.equal(new Set(asked.map((a) => a.body.approval?.id)).size, 10);
      const more = await refund(w, 29_999);
      assert.equal(more.body.decision, 'approval_required');
      assert.equal(more.body.approval, undefined, 'no request opened');
      const same = await refund(w, 20_000);
      assert.equal(same.body.approval.id, asked[0]?.body.approval.id, 'a call already waiting still finds its request');
    });

    test('bad input: junk ids, states, notes with control characters', async () => {
      assert.equal((await w.h.get('/v1/approvals/apr_nope', w.carol)).body.code, 'ERR_APPROVAL_NOT_FOUND');
      assert.equal((await w.h.get("/v1/approvals/apr_'%20or%201=1--", w.carol)).body.code, 'ERR_APPROVAL_NOT_FOUND');
      const badState = await w.h.get('/v1/approvals?state=pending,bogus', w.carol);
      assert.equal(badState.status, 400);
      assert.equal(badState.body.code, 'ERR_VALIDATION');
      assert.equal((await w.h.get("/v1/approvals?task=x'--", w.carol)).body.code, 'ERR_VALIDATION');
      const asked = await refund(w, 60_000);
      const note = await w.h.post(`/v1/approvals/${asked.body.approval.id}/approve`, { note: 'ok\u001b[2Jlooks fine' }, w.carol);
      assert.equal(note.status, 400);
      assert.equal(note.body.code, 'ERR_VALIDATION');
      assert.equal((await w.h.post(`/v1/approvals/${asked.body.approval.id}/approve`, { note: 'x', extra: 1 }, w.carol)).body.code, 'ERR_VALIDATION');
    });

    test('two approvers racing on a 1-of-1 request: one answer counts; racing calls consume it exactly once', async () => {
      for (let round = 0; round < 5; round += 1) {
        const asked = await refund(w, 70_000 + round);
        const id = asked.body.approval.id as string;
        const answers = await Promise.all([w.h.post(`/v1/approvals/${id}/approve`, {}, w.carol), w.h.post(`/v1/approvals/${id}/approve`, {}, w.dave)]);
        const statuses = answers.map((a) => a.status).sort();
        assert.deepEqual(statuses, [200, 409], JSON.stringify(answers.map((a) => a.body)));
        assert.equal(answers.find((a) => a.status === 409)?.body.code, 'ERR_APPROVAL_CLOSED');
        const approval = (await w.h.get(`/v1/approvals/${id}`, w.carol)).body.approval;
        assert.equal(approval.state, 'approved');
        assert.equal(approval.votes.length, 1);

        const calls = await Promise.all(Array.from({ length: 6 }, () => refund(w, 70_000 + round)));
        assert.equal(calls.filter((c) => c.body.allowed === true).length, 1, JSON.stringify(calls.map((c) => c.body)));
      }
      const records = await w.h.auditRecords();
      const approvedRecords = records.filter((r) => r.type === 'approval.approved');
      const consumedRecords = records.filter((r) => r.type === 'approval.consumed');
      const ids = (rs: typeof records) => rs.map((r) => (r.data as { approvalId: string }).approvalId);
      assert.equal(new Set(ids(approvedRecords)).size, ids(approvedRecords).length, 'each request approved once on the record');
      assert.equal(new Set(ids(consumedRecords)).size, ids(consumedRecords).length, 'each request consumed once on the record');
    });

    test('every state change is on the audit chain', async () => {
      const asked = await refund(w, 80_000);
      const id = asked.body.approval.id as string;
      await w.h.post(`/v1/approvals/${id}/approve`, { note: 'fine' }, w.carol);
      const call = await refund(w, 80_000);
      assert.equal(call.body.allowed, true);
      const records = (await w.h.auditRecords()).filter((r) => (r.data as { approvalId?: string } | undefined)?.approvalId === id || (r.data as { approval?: string } | undefined)?.approval === id);
      assert.deepEqual(records.map((r) => r.type), ['approval.requested', 'approval.voted', 'approval.approved', 'approval.consumed', 'action.check']);
      const [requested, voted, approved] = records;
      assert.equal(requested?.actor && (requested.actor as { id: string }).id, AGENT);
      assert.equal((voted?.actor as { id: string }).id, CAROL);
      assert.equal((voted?.data as { note: string }).note, 'fine');
      assert.deepEqual((approved?.data as { approvers: string[] }).approvers, [CAROL]);
      // The request record points at the decision that asked for it.
      const check = (await w.h.auditRecords()).find((r) => r.id === (requested?.data as { requestRecord: string }).requestRecord);
      assert.equal(check?.type, 'action.check');
      assert.equal(check?.decision, 'approval_required');
    });

    test('a task that ends cancels its open requests', async () => {
      const granted = await w.h.post('/v1/tasks', supportTask({ scopes: [REFUND] }), await w.h.identityToken());
      const token = granted.body.token as string;
      const asked = await w.h.post('/v1/authorize', { token, action: 'refund', resource: REFUND.resource, context: { amountCents: 90_000 } });
      const id = asked.body.approval.id as string;
      assert.equal((await w.h.post(`/v1/tasks/${granted.body.task.id}/complete`, {}, token)).status, 200);
      // Cancelled when the end is heard (at once in this process), and in any case when someone answers.
      const answer = await w.h.post(`/v1/approvals/${id}/approve`, {}, w.carol);
      assert.equal(answer.body.code, 'ERR_APPROVAL_CLOSED');
      assert.equal((await w.h.get(`/v1/approvals/${id}?`, w.carol)).body.approval.state, 'cancelled');
    });
  });
}

describe('approvals: expiry, N-of-M, self-approval, grant stage', () => {
  test('an approval expires unanswered, or approved but unused: the call then asks anew', async () => {
    const clock = createManualClock();
    const w = await world({ clock, config: { approvals: { ttl: 60 } } });
    try {
      const asked = await refund(w, 25_000);
      const id = asked.body.approval.id as string;
      assert.equal(new Date(asked.body.approval.expiresAt).getTime(), clock.now() + 60_000);
      await w.h.post(`/v1/approvals/${id}/approve`, {}, w.carol);
      clock.advance(61_000);
      const late = await refund(w, 25_000);
      assert.equal(late.body.allowed, false, 'an approval past its expiry lets nothing through');
      assert.notEqual(late.body.approval.id, id);
      assert.equal(await w.h.writ.approvals.expire(), 1);
      const expired = await w.h.get(`/v1/approvals/${id}`, w.carol);
      assert.equal(expired.body.approval.state, 'expired');
      const unanswered = late.body.approval.id as string;
      clock.advance(61_000);
      const tooLate = await w.h.post(`/v1/approvals/${unanswered}/approve`, {}, await w.h.identityToken(CAROL));
      assert.equal(tooLate.body.code, 'ERR_APPROVAL_CLOSED');
      assert.equal(await w.h.writ.approvals.expire(), 1);
      const records = (await w.h.auditRecords()).filter((r) => r.type === 'approval.expired').map((r) => (r.data as { approvalId: string }).approvalId);
      assert.deepEqual(records.sort(), [id, unanswered].sort());
    } finally {
      await w.h.close();
    }
  });

  test('N of M: production needs two distinct approvers', async () => {
    const w = await world({ config: { approvals: { environments: { production: { required: 2 } } } } });
    try {
      const asked = await refund(w, 25_000);
      const id = asked.body.approval.id as string;
      const one = await w.h.post(`/v1/approvals/${id}/approve`, {}, w.carol);
      assert.equal(one.body.approval.state, 'pending');
      assert.equal(one.body.approval.requiredApprovals, 2);
      const twice = await w.h.post(`/v1/approvals/${id}/approve`, {}, await w.h.identityToken(CAROL));
      assert.equal(twice.status, 409);
      assert.equal(twice.body.code, 'ERR_APPROVAL_ALREADY_VOTED');
      assert.equal((await refund(w, 25_000)).body.allowed, false, 'one approval of two lets nothing through');
      const two = await w.h.post(`/v1/approvals/${id}/approve`, {}, w.dave);
      assert.equal(two.body.approval.state, 'approved');
      assert.deepEqual(two.body.approval.votes.map((v: { approver: string }) => v.approver).sort(), [CAROL, DAVE].sort());
      assert.equal((await refund(w, 25_000)).body.allowed, true);
    } finally {
      await w.h.close();
    }
  });

  // A human acting through Writ (a human may hold a task too): its own refund needs another human.
  const HUMAN_REFUNDS = `
@id("humans-refund-with-approval")
@approval("required")
permit (principal is Writ::Human, action == Writ::Action::"refund", resource is Writ::Api)
when { resource.kind == "payments" && context.intent == "customer-support" };
`;

  for (const allowSelfApproval of [false, true]) {
    test(`self-approval is refused${allowSelfApproval ? ', unless the knob allows it (and then the record says so)' : ''}`, async () => {
      const dir = policyFolder({ 'humans.cedar': HUMAN_REFUNDS });
      const h = await startHarness({ config: { policy: { dir }, approvals: { allowSelfApproval } } });
      try {
        await h.writ.registerIdentity({ id: CAROL, actorType: 'human', environment: 'production', labels: { approver: 'production' } });
        const carol = await h.identityToken(CAROL);
        const pending = await h.post('/v1/tasks', supportTask({ scopes: [REFUND] }), carol);
        assert.equal(pending.status, 202, JSON.stringify(pending.body));
        assert.equal(pending.body.status, 'pending_approval');
        const [approval] = pending.body.approvals as { id: string; stage: string }[];
        assert.equal(approval?.stage, 'grant');
        const answer = await h.post(`/v1/approvals/${approval?.id}/approve`, {}, carol);
        if (!allowSelfApproval) {
          assert.equal(answer.status, 403);
          assert.equal(answer.body.code, 'ERR_SELF_APPROVAL');
          const refused = (await h.auditRecords()).find((r) => r.type === 'approval.voted');
          assert.equal(refused?.reason, 'ERR_SELF_APPROVAL');
          return;
        }
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.equal(answer.body.approval.votes[0].selfApproval, true);
        const voted = (await h.auditRecords()).find((r) => r.type === 'approval.voted');
        assert.equal(voted?.reason, 'self_approval');
        assert.equal((voted?.data as { selfApproval: boolean }).selfApproval, true);
      } finally {
        await h.close();
      }
    });
  }

  // Deleting a ticket is granted to a task only with a human's approval.
  const TICKET_DELETES = `
@id("ticket-deletes-need-approval")
@approval("required")
permit (principal is Writ::Agent, action == Writ::Action::"delete", resource is Writ::Api)
when { resource.kind == "tickets" && context.intent == "customer-support" };
`;
  const DELETE = { action: 'delete', resource: 'tickets:T-1042' };

  test('grant stage: a task waits, activates once its scope is approved, with that scope; once', async () => {
    const w = await world({ config: { policy: { dir: policyFolder({ 'deletes.cedar': TICKET_DELETES }) } } });
    try {
      const agent = await w.h.identityToken();
      const pending = await w.h.post('/v1/tasks', supportTask({ scopes: [DELETE, { action: 'read', resource: 'tickets:*' }] }), agent);
      assert.equal(pending.status, 202, JSON.stringify(pending.body));
      const taskId = pending.body.task.id as string;
      const [approval] = pending.body.approvals as { id: string; action: string; resource: string; arguments: unknown }[];
      assert.equal(approval?.action, 'delete');
      assert.equal(approval?.resource, DELETE.resource);
      assert.equal(approval?.arguments, null);

      const early = await w.h.post(`/v1/tasks/${taskId}/activate`, {}, agent);
      assert.equal(early.status, 202);
      assert.equal(early.body.status, 'pending_approval');
      assert.equal(early.body.token, undefined);

      await w.h.post(`/v1/approvals/${approval?.id}/approve`, {}, w.carol);
      const active = await w.h.post(`/v1/tasks/${taskId}/activate`, {}, agent);
      assert.equal(active.status, 201, JSON.stringify(active.body));
      assert.deepEqual(active.body.task.grantedScopes.map((s: { action: string }) => s.action).sort(), ['delete', 'read']);
      const used = await w.h.post('/v1/authorize', { token: active.body.token, action: 'read', resource: 'tickets:T-1' });
      assert.equal(used.body.allowed, true);

      const twice = await w.h.post(`/v1/tasks/${taskId}/activate`, {}, agent);
      assert.equal(twice.status, 409);
      assert.equal(twice.body.code, 'ERR_TASK_STATE_CONFLICT');
      assert.equal((await w.h.get(`/v1/approvals/${approval?.id}`, w.carol)).body.approval.state, 'consumed');
      // Another identity cannot activate it, and a task token cannot.
      assert.equal((await w.h.post(`/v1/tasks/${taskId}/activate`, {}, w.carol)).body.code, 'ERR_TASK_NOT_FOUND');
    } finally {
      await w.h.close();
    }
  });

  test('grant stage: a denied scope is refused at activation; with nothing else the task is denied', async () => {
    const w = await world({ config: { policy: { dir: policyFolder({ 'deletes.cedar': TICKET_DELETES }) } } });
    try {
      const agent = await w.h.identityToken();
      const pending = await w.h.post('/v1/tasks', supportTask({ scopes: [DELETE] }), agent);
      const taskId = pending.body.task.id as string;
      await w.h.post(`/v1/approvals/${pending.body.approvals[0].id}/deny`, {}, w.carol);
      const denied = await w.h.post(`/v1/tasks/${taskId}/activate`, {}, agent);
      assert.equal(denied.status, 403);
      assert.equal(denied.body.code, 'ERR_POLICY_DENIED');
      assert.equal((await w.h.get(`/v1/tasks/${taskId}`, agent)).body.task.state, 'denied');
    } finally {
      await w.h.close();
    }
  });
});

describe('approvals: webhooks', () => {
  test('every state change reaches the webhook, signed, with what an approver must see', async () => {
    const received: { headers: IncomingHttpHeaders; body: string }[] = [];
    const receiver = createHttpServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c: string) => (body += c));
      req.on('end', () => {
        received.push({ headers: req.headers, body });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const { port } = receiver.address() as AddressInfo;
    const secret = 'whsec_' + Buffer.from('approvals-webhook-test-secret-32b').toString('base64');
    const w = await world({ config: { notifications: { webhooks: [{ name: 'ops', url: `http://127.0.0.1:${port}/hook`, secret: 'ops-webhook' }] } } });
    try {
      await w.h.writ.vault.put('ops-webhook', secret, { id: 'test' });
      const asked = await refund(w, 25_000);
      const id = asked.body.approval.id as string;
      await w.h.post(`/v1/approvals/${id}/approve`, {}, w.carol);
      assert.equal((await refund(w, 25_000)).body.allowed, true);
      for (let i = 0; i < 100 && received.length < 3; i += 1) await new Promise((r) => setTimeout(r, 50));
      const events = received.map((r) => JSON.parse(r.body) as { type: string; summary: string; fields: { label: string; value: string }[]; data: { approval: { id: string } } });
      assert.deepEqual(events.map((e) => e.type).sort(), ['approval.approved', 'approval.consumed', 'approval.requested']);
      for (const r of received) assert.equal(verifyWebhook(secret, r.headers as Record<string, string>, r.body, Date.now()), true, 'signed with the vault secret');
      assert.equal(verifyWebhook(`whsec_${Buffer.from('another-secret-entirely-32-bytes!').toString('base64')}`, received[0]!.headers as Record<string, string>, received[0]!.body, Date.now()), false);
      const requested = events.find((e) => e.type === 'approval.requested')!;
      assert.equal(requested.data.approval.id, id);
      const field = (label: string) => requested.fields.find((f) => f.label === label)?.value;
      assert.equal(field('Arguments'), '{"amountCents":25000}');
      assert.equal(field('Purpose'), 'Answer ticket T-1042');
      assert.equal(field('Agent'), AGENT);
      assert.equal(field('Owner'), 'alice@example.com');
      assert.match(field('Risk') ?? '', /^\d+(\.\d+)? \((low|medium|high|critical)\)/);
    } finally {
      await w.h.close();
      receiver.close();
    }
  });
});
