/**
 * Break-glass over the HTTP API: refused without a reason or incident, beyond
 * the maximum duration, for someone else's agent, or by a human the
 * break-glass set does not name; decided by that set alone, at the grant and
 * at every call; loud (webhooks, flagged records); revoked at its expiry or
 * when ended; reviewed afterwards by someone else, once.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createManualClock } from '../src/core/clock.js';
import { AGENT, claimsOf, resignTaskToken, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { createTestDatabase } from './helpers/pg.js';
import { policyFolder } from './helpers/policy-folder.js';

const OLGA = 'spiffe://demo.local/human/olga'; // on call for production; owns the support agent
const CAROL = 'spiffe://demo.local/human/carol'; // an approver: reviews
const ERIN = 'spiffe://demo.local/human/erin'; // neither
const OTHER_AGENT = 'spiffe://demo.local/agent/billing';

const emergency = (overrides: Record<string, unknown> = {}) => ({
  reason: 'Checkout is failing for every customer; the support agent must fix stuck orders by hand',
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

async function people(h: Harness): Promise<{ olga: string; carol: string; erin: string; agent: string }> {
  await h.registerAgent();
  await h.registerAgent(OTHER_AGENT, { owner: 'billing-team@example.com' });
  const human = (id: string, labels: Record<string, string>) => h.writ.registerIdentity({ id, actorType: 'human', environment: 'production', labels });
  await human(OLGA, { 'on-call': 'production', email: 'alice@example.com' });
  await human(CAROL, { approver: 'production' });
  await human(ERIN, {});
  return { olga: await h.identityToken(OLGA), carol: await h.identityToken(CAROL), erin: await h.identityToken(ERIN), agent: await h.identityToken() };
}

const pgDatabase = await createTestDatabase();
const backends = pgDatabase === undefined ? (['sqlite'] as const) : (['sqlite', 'postgres'] as const);

for (const backend of backends) {
  describe(`break-glass (${backend})`, () => {
    let h: Harness;
    let t: Awaited<ReturnType<typeof people>>;
    const clock = createManualClock();
    const hooks: { type: string; summary: string }[] = [];
    const receiver = createHttpServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c: string) => (body += c));
      req.on('end', () => {
        hooks.push(JSON.parse(body) as { type: string; summary: string });
        res.writeHead(204).end();
      });
    });
    before(async () => {
      await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
      const { port } = receiver.address() as AddressInfo;
      h = await startHarness({
        clock,
        ...(backend === 'postgres' && pgDatabase !== undefined ? { backend, database: pgDatabase } : {}),
        config: { breakGlass: { maxDuration: '2h' }, notifications: { webhooks: [{ name: 'ops', url: `http://127.0.0.1:${port}/`, secret: 'ops-hook' }] } },
      });
      await h.writ.vault.put('ops-hook', 'a-webhook-signing-secret', { id: 'test' });
      t = await people(h);
    });
    after(async () => {
      await h.close();
      receiver.close();
    });

    test('refused without a reason or an incident, and beyond the maximum duration', async () => {
      for (const [body, field] of [
        [emergency({ reason: undefined }), 'reason'],
        [emergency({ reason: 'because' }), 'reason'],
        [emergency({ reason: 'stuck orders\u202eevil' }), 'reason'],
        [emergency({ incident: undefined }), 'incident'],
        [emergency({ incident: "INC-1' or 1=1--" }), 'incident'],
        [emergency({ duration: '3h' }), 'duration'],
        [emergency({ duration: 2 * 3600 + 1 }), 'duration'],
      ] as const) {
        const answer = await h.post('/v1/break-glass', body, t.olga);
        assert.equal(answer.status, 400, `${field}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.code, 'ERR_VALIDATION');
        assert.ok(answer.body.errors.some((e: { field: string }) => e.field === field), `${field}: ${JSON.stringify(answer.body.errors)}`);
      }
      assert.equal((await h.post('/v1/break-glass', emergency({ duration: '2h' }), t.olga)).status, 201, 'exactly the maximum is allowed');
    });

    test('who may break it: a human the break-glass set names, for itself or an agent it owns', async () => {
      const byAgent = await h.post('/v1/break-glass', emergency({ identity: undefined }), t.agent);
      assert.equal(byAgent.body.code, 'ERR_FORBIDDEN');
      const notOnCall = await h.post('/v1/break-glass', emergency(), t.erin);
      assert.equal(notOnCall.status, 403);
      assert.equal(notOnCall.body.code, 'ERR_FORBIDDEN', 'erin owns no agent');
      const erinForHerself = await h.post('/v1/break-glass', emergency({ identity: undefined }), t.erin);
      assert.equal(erinForHerself.body.code, 'ERR_POLICY_DENIED', 'erin is not on call');
      const notHers = await h.post('/v1/break-glass', emergency({ identity: OTHER_AGENT }), t.olga);
      assert.equal(notHers.body.code, 'ERR_FORBIDDEN', 'olga does not own the billing agent');
      const granted = await h.post('/v1/tasks', supportTask(), t.agent);
      assert.equal((await h.post('/v1/break-glass', emergency(), granted.body.token)).body.code, 'ERR_FORBIDDEN', 'never with a task token');
      const refusals = (await h.auditRecords()).filter((r) => r.type === 'break_glass.started' && r.decision === 'deny');
      assert.ok(refusals.some((r) => (r.actor as { id: string }).id === ERIN), 'the refused attempt is on the record');
    });

    test('decided by the break-glass set alone, at the grant and every call; every record flagged; webhooks told at once', async () => {
      hooks.length = 0;
      const started = await h.post('/v1/break-glass', emergency({ scopes: [...emergency().scopes, { action: 'export', resource: 'db:orders/*' }] }), t.olga);
      assert.equal(started.status, 201, JSON.stringify(started.body));
      const token = started.body.token as string;
      const claims = claimsOf(token);
      assert.equal(claims.sub, AGENT);
      assert.equal(claims.task.breakGlass, true);
      assert.equal(claims.exp - claims.iat, 30 * 60);
      assert.deepEqual(started.body.task.grantedScopes.map((s: { action: string }) => s.action).sort(), ['delete', 'write']);
      assert.equal(started.body.task.refusedScopes[0].action, 'export', 'even break-glass never exports');
      assert.equal(started.body.breakGlass.renewable, false);

      // The normal set gives an agent no delete on tickets; the break-glass set does.
      const normal = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'delete', resource: 'tickets:T-1042' }] }), t.agent);
      assert.equal(normal.body.code, 'ERR_POLICY_DENIED');
      const call = await h.post('/v1/authorize', { token, action: 'delete', resource: 'tickets:T-1042' });
      assert.equal(call.body.allowed, true, JSON.stringify(call.body));
      assert.equal(call.body.breakGlass, true);
      assert.equal(call.body.policyVersion, h.writ.breakGlassPolicy()?.version);
      assert.notEqual(call.body.policyVersion, h.writ.policy().version);

      const records = await h.auditRecords();
      const check = records.find((r) => r.id === call.body.auditId);
      assert.equal(check?.breakGlass, true);
      const start = records.find((r) => r.type === 'break_glass.started' && (r.data as { breakGlassId?: string }).breakGlassId === started.body.breakGlass.id);
      assert.equal(start?.breakGlass, true);
      assert.equal((start?.data as { incident: string }).incident, 'INC-4521');
      assert.equal((start?.actor as { id: string }).id, OLGA);

      for (let i = 0; i < 100 && !hooks.some((e) => e.type === 'break_glass.started'); i += 1) await new Promise((r) => setTimeout(r, 20));
      const hook = hooks.find((e) => e.type === 'break_glass.started');
      assert.ok(hook, 'the webhook heard it');
      assert.match(hook.summary, /BREAK-GLASS.*INC-4521/);
    });

    test('its expiry revokes it; the end is recorded with what was used; a review is owed until someone else closes it, once', async () => {
      const started = await h.post('/v1/break-glass', emergency({ duration: '10m' }), t.olga);
      const id = started.body.breakGlass.id as string;
      const token = started.body.token as string;
      assert.equal((await h.post('/v1/authorize', { token, action: 'write', resource: 'db:orders/77' })).body.allowed, true);

      const early = await h.post(`/v1/break-glass/${id}/review`, { note: 'looked at it' }, t.carol);
      assert.equal(early.status, 409, 'not while it runs');

      clock.advance(10 * 60_000 + 1);
      await h.writ.broker.reapExpired();
      // Identity tokens live 5 minutes: everyone signs in again.
      t = { olga: await h.identityToken(OLGA), carol: await h.identityToken(CAROL), erin: await h.identityToken(ERIN), agent: await h.identityToken() };
      const refused = await h.post('/v1/authorize', { token, action: 'write', resource: 'db:orders/77' });
      assert.equal(refused.body.allowed, false);
      let ended;
      for (let i = 0; i < 100; i += 1) {
        ended = (await h.get(`/v1/break-glass/${id}`, t.carol)).body.breakGlass;
        if (ended?.endedAt !== null) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(ended.state, 'review_owed');
      assert.equal(ended.endState, 'expired');
      assert.deepEqual(ended.used, ['write db:orders/77']);
      const endRecord = (await h.auditRecords()).find((r) => r.type === 'break_glass.ended' && (r.data as { breakGlassId: string }).breakGlassId === id);
      assert.equal(endRecord?.reason, 'expired');

      assert.ok((await h.get('/v1/break-glass', t.carol)).body.breakGlass.some((g: { id: string }) => g.id === id), 'listed as owed');
      assert.equal((await h.post(`/v1/break-glass/${id}/review`, { note: 'mine' }, t.olga)).body.code, 'ERR_FORBIDDEN', 'not by who broke it');
      assert.equal((await h.post(`/v1/break-glass/${id}/review`, { note: 'x' }, t.erin)).body.code, 'ERR_NOT_FOUND');
      assert.equal((await h.post(`/v1/break-glass/${id}/review`, {}, t.carol)).body.code, 'ERR_VALIDATION', 'a note is required');
      const reviewed = await h.post(`/v1/break-glass/${id}/review`, { note: 'Orders 77 fixed by hand; access justified; nothing else touched.' }, t.carol);
      assert.equal(reviewed.status, 200, JSON.stringify(reviewed.body));
      assert.equal(reviewed.body.breakGlass.state, 'reviewed');
      assert.equal(reviewed.body.breakGlass.reviewedBy, CAROL);
      assert.equal((await h.post(`/v1/break-glass/${id}/review`, { note: 'again' }, t.carol)).status, 409, 'reviewed once');
      assert.ok(!(await h.get('/v1/break-glass', t.carol)).body.breakGlass.some((g: { id: string }) => g.id === id), 'no longer owed');
      assert.ok((await h.get('/v1/break-glass?reviewed=true', t.carol)).body.breakGlass.some((g: { id: string }) => g.id === id));
    });

    test('ended early by who broke it: the token is refused at once', async () => {
      const started = await h.post('/v1/break-glass', emergency(), t.olga);
      const token = started.body.token as string;
      const ended = await h.post(`/v1/break-glass/${started.body.breakGlass.id}/end`, { note: 'incident resolved' }, t.olga);
      assert.equal(ended.status, 200, JSON.stringify(ended.body));
      const refused = await h.post('/v1/authorize', { token, action: 'write', resource: 'db:orders/1' });
      assert.equal(refused.body.reason, 'ERR_TOKEN_REVOKED');
      assert.equal((await h.post(`/v1/break-glass/${started.body.breakGlass.id}/end`, {}, t.olga)).status, 409);
    });
  });
}

describe('break-glass off', () => {
  test('without a break-glass policy folder nothing is granted, and its tokens are refused', async () => {
    const dir = policyFolder();
    rmSync(join(dir, 'break-glass'), { recursive: true });
    const h = await startHarness({ config: { policy: { dir } } });
    try {
      const t = await people(h);
      const answer = await h.post('/v1/break-glass', emergency(), t.olga);
      assert.equal(answer.status, 403);
      assert.equal(answer.body.code, 'ERR_BREAK_GLASS_OFF');
      // A break-glass token (signed by this Writ) finds no set to decide it, and is refused.
      const normal = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'write', resource: 'tickets:T-1042' }] }), t.agent);
      const claims = claimsOf(normal.body.token);
      const forged = resignTaskToken(h.writ, { ...claims, task: { ...claims.task, breakGlass: true } });
      const call = await h.post('/v1/authorize', { token: forged, action: 'write', resource: 'tickets:T-1042' });
      assert.equal(call.body.allowed, false);
      assert.equal(call.body.reason, 'ERR_POLICY_DENIED');
      assert.equal(call.body.breakGlass, true);
      const plain = await h.post('/v1/authorize', { token: normal.body.token, action: 'write', resource: 'tickets:T-1042' });
      assert.equal(plain.body.allowed, true, 'the same call without the flag passes: the flag alone refused it');
    } finally {
      await h.close();
    }
  });
});
