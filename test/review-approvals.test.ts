/**
 * Review of approvals and break-glass: each test names a property the code
 * under review should have, and fails while the finding it proves stands.
 * Real parts only: a real Writ over HTTP (SQLite), the real store, policy and
 * audit chain; the in-process action check where the finding lives there.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { canonicalize } from '../src/core/canonical-json.js';
import { createManualClock } from '../src/core/clock.js';
import { loadConfig } from '../src/core/config.js';
import { createWrit } from '../src/writ.js';
import { main as cliMain } from '../src/cli/main.js';
import { AGENT, startHarness, supportTask, type Harness, type HarnessOptions } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';

const CAROL = 'spiffe://demo.local/human/carol'; // an approver in production
const DAVE = 'spiffe://demo.local/human/dave'; // another approver in production
const OLGA = 'spiffe://demo.local/human/olga'; // on call for production; her email label makes her the support agent's owner
const ALICE = 'spiffe://demo.local/human/alice'; // the support agent's owner (its owner field is alice@example.com), an approver
const REFUND = { action: 'refund', resource: 'payments:refunds/R-1043' };

/** The agent (owner alice@example.com), approvers Carol and Dave, Olga on call; a task token holding the refund scope. */
async function world(options: HarnessOptions = {}) {
  const h = await startHarness(options);
  await h.registerAgent();
  const human = (id: string, labels: Record<string, string>) => h.writ.registerIdentity({ id, actorType: 'human', environment: 'production', labels });
  await human(CAROL, { approver: 'production' });
  await human(DAVE, { approver: 'production' });
  await human(OLGA, { 'on-call': 'production', email: 'alice@example.com' });
  const granted = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'refund', resource: 'payments:refunds/*' }] }), await h.identityToken());
  assert.equal(granted.status, 201, JSON.stringify(granted.body));
  return { h, token: granted.body.token as string, taskId: granted.body.task.id as string, human };
}

const emergency = (overrides: Record<string, unknown> = {}) => ({
  reason: 'Checkout is failing for every customer; fix stuck orders by hand',
  incident: 'INC-4521',
  environment: 'production',
  scopes: [
    { action: 'delete', resource: 'tickets:T-1042' },
    { action: 'write', resource: 'db:orders/*' },
  ],
  duration: '30m',
  identity: AGENT,
  ...overrides,
});

describe('review: approvals', () => {
  test('an approval binds the arguments its approver was shown: a call with other arguments does not consume it (in-process arguments and argumentsDigest)', async () => {
    const w = await world();
    try {
      const carol = await w.h.identityToken(CAROL);
      // An embedder's enforcement point passes what policy reads as `context` and
      // the whole call as `arguments` (shown to the approver), as ActionRequest invites.
      const shown = { amountCents: 25_000, destination: 'acct-of-the-customer' };
      const asked = await w.h.writ.authorize(w.token, { ...REFUND, context: { amountCents: 25_000 }, arguments: shown });
      assert.equal(asked.decision, 'approval_required');
      const id = asked.approval?.id as string;
      const seen = await w.h.get(`/v1/approvals/${id}`, carol);
      assert.deepEqual(seen.body.approval.arguments, shown, 'the approver reads these arguments');
      assert.equal((await w.h.post(`/v1/approvals/${id}/approve`, {}, carol)).status, 200);

      // Same amount (all policy reads), another destination: not the call that was approved.
      const other = await w.h.writ.authorize(w.token, { ...REFUND, context: { amountCents: 25_000 }, arguments: { amountCents: 25_000, destination: 'acct-of-the-attacker' } });
      assert.equal(other.allowed, false, `a call the approver never saw went through on ${id}: ${JSON.stringify(other)}`);
      assert.notEqual(other.approval?.id, id);

      // The same with a digest that is not the digest of the arguments shown.
      const asked2 = await w.h.writ.authorize(w.token, {
        ...REFUND,
        context: { amountCents: 26_000 },
        arguments: { amountCents: 26_000, destination: 'acct-of-the-customer' },
        argumentsDigest: `sha256:${'0'.repeat(64)}`,
      });
      if (asked2.decision === 'approval_required' && asked2.approval !== undefined) {
        const id2 = asked2.approval.id;
        const seen2 = (await w.h.get(`/v1/approvals/${id2}`, carol)).body.approval;
        assert.equal(seen2.argsDigest, `sha256:${createHashHex(seen2.arguments)}`, 'the digest an approval binds is the digest of the arguments its approver reads');
      } else {
        assert.equal(asked2.reason, 'ERR_VALIDATION', 'a digest that disagrees with the arguments is refused');
      }
    } finally {
      await w.h.close();
    }
  });

  test('the owner of the requesting agent does not approve its action (ERR_SELF_APPROVAL), by owner id or by email label', async () => {
    const w = await world();
    try {
      await w.human(ALICE, { approver: 'production', email: 'alice@example.com' });
      const alice = await w.h.identityToken(ALICE);
      const asked = await w.h.post('/v1/authorize', { token: w.token, ...REFUND, context: { amountCents: 25_000 } });
      const id = asked.body.approval.id as string;
      const answer = await w.h.post(`/v1/approvals/${id}/approve`, {}, alice);
      assert.equal(answer.status, 403, `the agent's own owner approved its refund: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.code, 'ERR_SELF_APPROVAL');

      // Owner named by id.
      const BOT = 'spiffe://demo.local/agent/alices-bot';
      await w.h.registerAgent(BOT, { owner: ALICE });
      const granted = await w.h.post('/v1/tasks', supportTask({ scopes: [{ action: 'refund', resource: 'payments:refunds/*' }] }), await w.h.identityToken(BOT));
      const asked2 = await w.h.post('/v1/authorize', { token: granted.body.token, ...REFUND, context: { amountCents: 25_000 } });
      const answer2 = await w.h.post(`/v1/approvals/${asked2.body.approval.id}/approve`, {}, await w.h.identityToken(ALICE));
      assert.equal(answer2.body.code, 'ERR_SELF_APPROVAL', JSON.stringify(answer2.body));
    } finally {
      await w.h.close();
    }
  });

  test('an approval\'s arguments are not kept in the webhook outbox once the request has ended', async () => {
    const receiver = createHttpServer((req, res) => {
      req.resume().on('end', () => res.writeHead(204).end());
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const { port } = receiver.address() as AddressInfo;
    const w = await world({ config: { notifications: { webhooks: [{ name: 'ops', url: `http://127.0.0.1:${port}/`, secret: 'ops-hook' }] } } });
    try {
      await w.h.writ.vault.put('ops-hook', 'a-webhook-signing-secret', { id: 'test' });
      const marker = 'customer-iban-DE89370400440532013000';
      const asked = await w.h.post('/v1/authorize', { token: w.token, ...REFUND, context: { amountCents: 25_000, note: marker } });
      const id = asked.body.approval.id as string;
      await w.h.post(`/v1/approvals/${id}/approve`, {}, await w.h.identityToken(CAROL));
      assert.equal((await w.h.post('/v1/authorize', { token: w.token, ...REFUND, context: { amountCents: 25_000, note: marker } })).body.allowed, true);
      const carol = await w.h.get(`/v1/approvals/${id}`, await w.h.identityToken(CAROL));
      assert.equal(carol.body.approval.arguments, null, 'the request itself has erased them');
      // Everything delivered.
      for (let i = 0; i < 100; i += 1) {
        if ((await outboxRows(w.h)).every((r) => r.state !== 'pending')) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const keeping = (await outboxRows(w.h)).filter((r) => r.body.includes(marker));
      assert.deepEqual(keeping.map((r) => `${r.event} (${r.state})`), [], 'the arguments live on in the outbox after the request ended');
    } finally {
      await w.h.close();
      receiver.close();
    }
  });
});

describe('review: approvals (grant stage, channels)', () => {
  // Deleting a ticket is granted to a task only with a human's approval.
  const TICKET_DELETES = `
@id("ticket-deletes-need-approval")
@approval("required")
permit (principal is Writ::Agent, action == Writ::Action::"delete", resource is Writ::Api)
when { resource.kind == "tickets" && context.intent == "customer-support" };
`;

  test('a repeated activation (a client retry, a second task_status) never denies a task whose approval was given: one activation wins, the task is active', async () => {
    const w = await world({ config: { policy: { dir: policyFolder({ 'deletes.cedar': TICKET_DELETES }) } } });
    try {
      const carol = await w.h.identityToken(CAROL);
      for (let round = 0; round < 3; round += 1) {
        const agent = await w.h.identityToken();
        const pending = await w.h.post('/v1/tasks', supportTask({ scopes: [{ action: 'delete', resource: `tickets:T-${round}` }] }), agent);
        assert.equal(pending.status, 202, JSON.stringify(pending.body));
        const taskId = pending.body.task.id as string;
        assert.equal((await w.h.post(`/v1/approvals/${pending.body.approvals[0].id}/approve`, {}, carol)).status, 200);
        // The broker's activateTask, as POST /v1/tasks/{id}/activate and the gateway's task_status call it, twice at once.
        const caller = await w.h.writ.broker.authenticate({ bearer: agent }, { allowTaskToken: false, endpoint: 'test' });
        const answers = await Promise.allSettled([w.h.writ.broker.activateTask(caller, taskId), w.h.writ.broker.activateTask(caller, taskId)]);
        const outcomes = answers.map((a) => (a.status === 'fulfilled' ? a.value.status : (a.reason as { code?: string }).code));
        const state = (await w.h.writ.store.getTask(taskId))?.state;
        assert.equal(state, 'active', `round ${round}: a human approved the only scope, yet the task is ${state} (${outcomes.join(', ')})`);
        assert.deepEqual(outcomes.sort(), ['ERR_TASK_STATE_CONFLICT', 'granted']);
      }
    } finally {
      await w.h.close();
    }
  });

  test('writ approvals show prints an agent\'s arguments without bidi or invisible characters (what the approver reads is what runs)', async () => {
    const w = await world();
    try {
      // The account reads "...-1234" on screen; the bytes are "...-4321".
      const asked = await w.h.post('/v1/authorize', { token: w.token, ...REFUND, context: { amountCents: 25_000, account: 'DE-acct-\u202e4321\u202c\u200b' } });
      const id = asked.body.approval.id as string;
      const out = await captureStdout(() => cliMain(['approvals', 'show', id, '--dev', '--identity', CAROL, '--config', join(w.h.dataDir, 'writ.yaml'), '--data-dir', w.h.dataDir]));
      assert.equal(out.code, 0, out.text);
      assert.match(out.text, /Arguments/);
      const hidden = [...out.text].filter((c) => /[\p{Cf}\u0080-\u009f]/u.test(c)).map((c) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`);
      assert.deepEqual(hidden, [], 'format (bidi, zero-width) or C1 control characters reach the approver\'s terminal as they are');
    } finally {
      await w.h.close();
    }
  });

  test('a vote that does not decide an N-of-M request reaches the webhooks as approval.voted (docs/webhooks.md lists it)', async () => {
    const w = await world({ config: { approvals: { environments: { production: { required: 2 } } }, notifications: { webhooks: [{ name: 'ops', url: 'http://127.0.0.1:9/', secret: 'ops-hook', events: ['approval.voted'] }] } } });
    try {
      const asked = await w.h.post('/v1/authorize', { token: w.token, ...REFUND, context: { amountCents: 25_000 } });
      const one = await w.h.post(`/v1/approvals/${asked.body.approval.id}/approve`, {}, await w.h.identityToken(CAROL));
      assert.equal(one.body.approval.state, 'pending');
      const queued = (await outboxRows(w.h)).map((r) => r.event);
      assert.deepEqual(queued, ['approval.voted'], 'the first of two approvals is told to nobody');
    } finally {
      await w.h.close();
    }
  });
});

describe('review: break-glass', () => {
  test('a break-glass grant is not revoked when the normal policy set is reloaded (drift never re-decides it with the normal set)', async () => {
    const dir = policyFolder();
    const h = await startHarness({ config: { policy: { dir } } });
    try {
      await h.registerAgent();
      await h.writ.registerIdentity({ id: OLGA, actorType: 'human', environment: 'production', labels: { 'on-call': 'production', email: 'alice@example.com' } });
      const started = await h.post('/v1/break-glass', emergency(), await h.identityToken(OLGA));
      assert.equal(started.status, 201, JSON.stringify(started.body));
      const token = started.body.token as string;
      assert.equal((await h.post('/v1/authorize', { token, action: 'delete', resource: 'tickets:T-1042' })).body.allowed, true);

      // Someone fixes an unrelated policy during the incident.
      writeFileSync(join(dir, 'unrelated.cedar'), '@id("unrelated-fix")\nforbid (principal, action, resource) when { context.intent == "never-used-intent" };\n');
      const reload = await h.writ.reloadPolicy('test: an edit during the incident');
      assert.equal(reload.ok && reload.changed, true);

      const after = await h.post('/v1/authorize', { token, action: 'delete', resource: 'tickets:T-1042' });
      assert.equal(after.body.allowed, true, `the emergency grant did not survive an unrelated reload: ${JSON.stringify(after.body)}`);
      const task = await h.writ.store.getTask(started.body.task.id);
      assert.equal(task?.state, 'active');
    } finally {
      await h.close();
    }
  });

  test('a break-glass grant that expired while Writ was down is ended and recorded at the next start, so its review can be closed', async () => {
    const clock = createManualClock();
    const h = await startHarness({ clock });
    let restarted: Awaited<ReturnType<typeof createWrit>> | undefined;
    try {
      await h.registerAgent();
      await h.writ.registerIdentity({ id: OLGA, actorType: 'human', environment: 'production', labels: { 'on-call': 'production', email: 'alice@example.com' } });
      await h.writ.registerIdentity({ id: CAROL, actorType: 'human', environment: 'production', labels: { approver: 'production' } });
      const started = await h.post('/v1/break-glass', emergency({ duration: '10m' }), await h.identityToken(OLGA));
      assert.equal(started.status, 201, JSON.stringify(started.body));
      const id = started.body.breakGlass.id as string;
      assert.equal((await h.post('/v1/authorize', { token: started.body.token, action: 'write', resource: 'db:orders/77' })).body.allowed, true);

      // Writ stops; the grant's time runs out meanwhile; Writ starts again on the same store.
      await h.app.close();
      await h.writ.close();
      clock.advance(15 * 60_000);
      const config = loadConfig({ configFile: join(h.dataDir, 'writ.yaml'), env: {}, flags: { dataDir: h.dataDir, dev: true } });
      restarted = await createWrit({ config, logger: pino({ level: 'silent' }), env: {}, clock });
      assert.equal((await restarted.store.getTask(started.body.task.id))?.state, 'expired', 'the start-up reaper expired the task');

      let grant;
      for (let i = 0; i < 50; i += 1) {
        grant = await restarted.store.getBreakGlass(id);
        if (grant?.endedAt !== null) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.notEqual(grant?.endedAt, null, 'the grant is still "running" although its task expired: no break_glass.ended, no rotate list, and its review can never be closed');
      const caller = await restarted.broker.authenticate({ bearer: (await restarted.issueIdentityToken(CAROL)).token }, { allowTaskToken: false, endpoint: 'test' });
      const reviewed = await restarted.breakGlass.review(caller, id, 'Orders fixed by hand; access justified.');
      assert.notEqual(reviewed.reviewedAt, null);
    } finally {
      await restarted?.close();
      rmSync(h.dataDir, { recursive: true, force: true });
    }
  });

  test('a second identity of the human who broke the glass (the same email label) does not review it', async () => {
    const h = await startHarness();
    try {
      await h.registerAgent();
      await h.writ.registerIdentity({ id: OLGA, actorType: 'human', environment: 'production', labels: { 'on-call': 'production', email: 'alice@example.com' } });
      // The same person, signed in through another trust source, an approver there.
      const OLGA_SSO = 'spiffe://demo.local/human/olga-sso';
      await h.writ.registerIdentity({ id: OLGA_SSO, actorType: 'human', environment: 'production', labels: { approver: 'production', email: 'alice@example.com' } });
      const started = await h.post('/v1/break-glass', emergency({ identity: undefined, scopes: [{ action: 'write', resource: 'db:orders/*' }] }), await h.identityToken(OLGA));
      assert.equal(started.status, 201, JSON.stringify(started.body));
      const id = started.body.breakGlass.id as string;
      assert.equal((await h.post(`/v1/break-glass/${id}/end`, {}, await h.identityToken(OLGA))).status, 200);
      const review = await h.post(`/v1/break-glass/${id}/review`, { note: 'All fine, I checked my own work.' }, await h.identityToken(OLGA_SSO));
      assert.equal(review.status, 403, `the human who broke the glass reviewed it under a second identity: ${JSON.stringify(review.body)}`);
      assert.equal(review.body.code, 'ERR_FORBIDDEN');
    } finally {
      await h.close();
    }
  });

  test('break_glass.ended names who ended the grant, not who broke it', async () => {
    const h = await startHarness();
    try {
      await h.registerAgent();
      await h.writ.registerIdentity({ id: OLGA, actorType: 'human', environment: 'production', labels: { 'on-call': 'production', email: 'alice@example.com' } });
      await h.writ.registerIdentity({ id: CAROL, actorType: 'human', environment: 'production', labels: { approver: 'production' } });
      const started = await h.post('/v1/break-glass', emergency(), await h.identityToken(OLGA));
      const id = started.body.breakGlass.id as string;
      // Carol, a reviewer, cuts the emergency grant short.
      const ended = await h.post(`/v1/break-glass/${id}/end`, { note: 'out of scope of the incident' }, await h.identityToken(CAROL));
      assert.equal(ended.status, 200, JSON.stringify(ended.body));
      const records = await h.auditRecords();
      const record = records.find((r) => r.type === 'break_glass.ended' && (r.data as { breakGlassId?: string }).breakGlassId === id);
      assert.ok(record, 'recorded');
      assert.equal((record.actor as { id: string }).id, CAROL, 'the record says Olga ended it; Carol did');
    } finally {
      await h.close();
    }
  });
});

async function outboxRows(h: Harness): Promise<{ event: string; state: string; body: string }[]> {
  // The store's own connection (KyselyStore#db): the Store contract has no way to list the outbox.
  const db = (h.writ.store as unknown as { db: { selectFrom(t: string): { selectAll(): { execute(): Promise<{ event: string; state: string; body: string }[]> } } } }).db;
  return db.selectFrom('outbox').selectAll().execute();
}

/** The hex SHA-256 of `value`'s canonical JSON (what an approval's argsDigest should be for the arguments it shows). */
function createHashHex(value: unknown): string {
  return createHash('sha256').update(canonicalize(value)).digest('hex');
}

/** Runs `run` with process.stdout captured (the CLI writes there). */
async function captureStdout(run: () => Promise<number>): Promise<{ code: number; text: string }> {
  const write = process.stdout.write.bind(process.stdout);
  let text = '';
  process.stdout.write = ((chunk: string | Uint8Array) => {
    text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  }) as typeof process.stdout.write;
  try {
    return { code: await run(), text };
  } finally {
    process.stdout.write = write;
  }
}
