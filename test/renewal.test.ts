/**
 * Renewal at a checkpoint: never a silent extension. Each one is a fresh
 * decision under the policy and risk of that moment, gives a new token and
 * refuses the old one everywhere, and stops at the task's maximum lifetime,
 * its parent's expiry, a break-glass grant, or a policy that no longer allows.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { createManualClock } from '../src/core/clock.js';
import { createWrit } from '../src/writ.js';
import { createTestDatabase } from './helpers/pg.js';
import { claimsOf, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';

const AGENT = 'spiffe://demo.local/agent/support';
const WORKER = 'spiffe://demo.local/agent/worker';
const OLGA = 'spiffe://demo.local/human/olga';
// Grants are refused from 20:00 UTC: the renewal at 20:01 of a task granted at 19:58 meets it, its grant never did.
const EVENING_FREEZE = `@id("no-new-grants-after-eight")
forbid (principal, action, resource) when { context.stage == "grant" && context.hour >= 20 };
`;

const pgDatabase = await createTestDatabase();
const backends = pgDatabase === undefined ? (['sqlite'] as const) : (['sqlite', 'postgres'] as const);

for (const backend of backends) {
  describe(`renewal (${backend})`, () => {
    let h: Harness;
    const clock = createManualClock(Date.parse('2026-11-24T10:00:00Z'));
    before(async () => {
      h = await startHarness({
        clock,
        config: { policy: { dir: policyFolder({ 'zz-evening.cedar': EVENING_FREEZE }) }, tokens: { maxLifetime: '15m' } },
        ...(backend === 'postgres' && pgDatabase !== undefined ? { backend, database: pgDatabase } : {}),
      });
      await h.registerAgent();
      await h.registerAgent(WORKER);
      await h.writ.registerIdentity({ id: OLGA, actorType: 'human', environment: 'production', labels: { 'on-call': 'production', email: 'alice@example.com' } });
    });
    after(() => h.close());

    const grant = async (overrides: Record<string, unknown> = {}) => {
      const answer = await h.post('/v1/tasks', supportTask(overrides), await h.identityToken());
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      return { id: answer.body.task.id as string, token: answer.body.token as string };
    };
    const renew = (id: string, token: string, body: Record<string, unknown> = { checkpoint: 'stage 1 done' }) => h.post(`/v1/tasks/${id}/renew`, body, token);
    const check = (token: string, resource = 'db:orders/42') => h.writ.authorize(token, { action: 'read', resource });

    test('a renewal is a new decision and a new token; the old token is refused from that instant, everywhere', async () => {
      const task = await grant();
      clock.advance(60_000);
      const renewed = await renew(task.id, task.token, { checkpoint: 'stage 1 done: order looked up', ttl: '4m' });
      assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
      assert.equal(renewed.body.expiresIn, 240);
      assert.equal(renewed.body.task.renewals, 1);
      assert.notEqual(claimsOf(renewed.body.token).jti, claimsOf(task.token).jti);
      assert.equal(renewed.body.task.id, task.id, 'the same task, renewed');

      const old = await check(task.token);
      assert.equal(old.reason, 'ERR_TOKEN_REVOKED', JSON.stringify(old));
      assert.equal((await check(renewed.body.token)).allowed, true);
      assert.equal((await h.get(`/v1/tasks/${task.id}`, task.token)).status, 401, 'the old token authenticates nothing');
      assert.equal((await renew(task.id, task.token)).status, 401, 'nor renews again');

      // Another node on the same store refuses the old token once it syncs.
      const other = await createWrit({ config: h.writ.config, logger: pino({ level: 'silent' }), env: {}, clock });
      try {
        await other.syncRevocations();
        assert.equal((await other.authorize(task.token, { action: 'read', resource: 'db:orders/42' })).reason, 'ERR_TOKEN_REVOKED');
        assert.equal((await other.authorize(renewed.body.token, { action: 'read', resource: 'db:orders/42' })).allowed, true);
      } finally {
        await other.close();
      }

      const [record] = (await h.auditRecords()).filter((r) => r.type === 'task.renewed' && (r.task as { id: string }).id === task.id);
      assert.equal(record?.decision, 'allow');
      assert.equal((record?.data as { checkpoint: string }).checkpoint, 'stage 1 done: order looked up');
      assert.equal((record?.data as { previousJti: string }).previousJti, claimsOf(task.token).jti);
      assert.ok((record?.policies as string[]).length > 0, 'the deciding policies are on the record');
    });

    test('only with the task\'s current token, and a checkpoint note', async () => {
      const task = await grant();
      assert.equal((await renew(task.id, await h.identityToken())).body.code, 'ERR_FORBIDDEN');
      for (const body of [{}, { checkpoint: '' }, { checkpoint: 'x'.repeat(501) }, { checkpoint: 'done\u202e' }, { checkpoint: 'done', extra: 1 }, { checkpoint: 'done', ttl: 0 }]) {
        const answer = await renew(task.id, task.token, body);
        assert.equal(answer.body.code, 'ERR_VALIDATION', JSON.stringify(body));
      }
      const other = await grant();
      assert.equal((await renew(other.id, task.token)).body.code, 'ERR_TASK_NOT_FOUND', 'one task\'s token renews no other');
    });

    test('a renewal keeps what the task holds or less, never more', async () => {
      const task = await grant();
      const narrower = await renew(task.id, task.token, { checkpoint: 'only reading from here', scopes: [{ action: 'read', resource: 'db:orders/42' }] });
      assert.equal(narrower.status, 200, JSON.stringify(narrower.body));
      assert.equal(claimsOf(narrower.body.token).scope, 'read:db:orders/42');
      assert.equal((await h.writ.authorize(narrower.body.token, { action: 'write', resource: 'tickets:T-1042' })).reason, 'ERR_SCOPE_NOT_GRANTED');
      const wider = await renew(task.id, narrower.body.token, { checkpoint: 'writing again', scopes: [{ action: 'write', resource: 'tickets:T-1042' }] });
      assert.equal(wider.body.code, 'ERR_SCOPE_NOT_GRANTED', JSON.stringify(wider.body));
      assert.deepEqual(wider.body.scopes, ['write:tickets:T-1042']);
      assert.equal((await check(narrower.body.token)).allowed, true, 'a refused renewal leaves the task as it was');
    });

    test('denied when policy no longer allows: the grant at 19:58 held, the renewal at 20:01 does not', async () => {
      clock.set(Date.parse('2026-11-24T19:58:00Z'));
      const task = await grant();
      clock.advance(3 * 60_000);
      const refused = await renew(task.id, task.token);
      assert.equal(refused.status, 403, JSON.stringify(refused.body));
      assert.equal(refused.body.code, 'ERR_POLICY_DENIED');
      assert.ok(refused.body.policies.includes('no-new-grants-after-eight'), JSON.stringify(refused.body));
      assert.equal((await check(task.token)).allowed, true, 'the current token runs out on its own');
      const [record] = (await h.auditRecords()).filter((r) => r.type === 'task.renewed' && (r.task as { id: string }).id === task.id);
      assert.equal(record?.decision, 'deny', 'a refused renewal is a decision on the record');
      clock.set(Date.parse('2026-11-25T10:00:00Z'));
    });

    test('never past the maximum lifetime (tokens.maxLifetime from the request)', async () => {
      const start = clock.now();
      let task = await grant({ ttl: 300 });
      for (const at of [4, 8]) {
        clock.set(start + at * 60_000);
        const renewed = await renew(task.id, task.token, { checkpoint: `minute ${at}`, ttl: 300 });
        assert.equal(renewed.status, 200, JSON.stringify(renewed.body));
        task = { id: task.id, token: renewed.body.token };
      }
      clock.set(start + 12 * 60_000);
      const cut = await renew(task.id, task.token, { checkpoint: 'minute 12', ttl: 300 });
      assert.equal(cut.status, 200);
      assert.equal(claimsOf(cut.body.token).exp * 1000, start + 15 * 60_000, 'cut to the lifetime');
      assert.match(cut.body.warnings.join(' '), /maximum lifetime/);
      clock.set(start + 15 * 60_000 - 500);
      const refused = await renew(task.id, cut.body.token, { checkpoint: 'one more' });
      assert.equal(refused.body.code, 'ERR_MAX_LIFETIME_REACHED', JSON.stringify(refused.body));
      clock.advance(60_000);
    });

    test('a renewal whose fresh decision reaches the risk limit is refused', async () => {
      const strict = await startHarness({ clock, config: { policy: { risk: { renewalLimit: 'medium' } } } });
      try {
        await strict.registerAgent();
        const answer = await strict.post('/v1/tasks', supportTask(), await strict.identityToken());
        assert.equal(answer.status, 201);
        const refused = await strict.post(`/v1/tasks/${answer.body.task.id}/renew`, { checkpoint: 'stage 1 done' }, answer.body.token);
        assert.equal(refused.body.code, 'ERR_POLICY_DENIED', JSON.stringify(refused.body));
        assert.match(refused.body.detail, /risk has risen/);
      } finally {
        await strict.close();
      }
    });

    test('a break-glass grant is never renewed', async () => {
      const started = await h.post(
        '/v1/break-glass',
        { reason: 'Checkout is failing for every customer; fix stuck orders by hand', incident: 'INC-4521', environment: 'production', scopes: [{ action: 'write', resource: 'db:orders/*' }], duration: '30m', identity: AGENT },
        await h.identityToken(OLGA),
      );
      assert.equal(started.status, 201, JSON.stringify(started.body));
      const refused = await renew(started.body.task.id, started.body.token, { checkpoint: 'still on fire' });
      assert.equal(refused.body.code, 'ERR_NOT_RENEWABLE', JSON.stringify(refused.body));
      await h.post(`/v1/break-glass/${started.body.breakGlass.id}/end`, { note: 'fixed' }, await h.identityToken(OLGA));
    });

    test('two renewals racing with one token: exactly one wins', async () => {
      const task = await grant();
      const answers = await Promise.all([renew(task.id, task.token, { checkpoint: 'a' }), renew(task.id, task.token, { checkpoint: 'b' }), renew(task.id, task.token, { checkpoint: 'c' })]);
      const won = answers.filter((a) => a.status === 200);
      assert.equal(won.length, 1, JSON.stringify(answers.map((a) => [a.status, a.body.code])));
      for (const lost of answers.filter((a) => a.status !== 200)) assert.ok(['ERR_TASK_STATE_CONFLICT', 'ERR_UNAUTHENTICATED'].includes(lost.body.code), JSON.stringify(lost.body));
      assert.equal((await h.writ.store.getTask(task.id))?.renewals, 1);
      assert.equal((await check(won[0]!.body.token)).allowed, true);
    });

    test('a renewal asked with a token authenticated just before another renewal replaced it does not renew again', async () => {
      const task = await grant();
      // Both authenticated with the same, then current, token.
      const caller = await h.writ.broker.authenticate({ bearer: task.token }, { allowTaskToken: true, endpoint: 'test' });
      const late = await h.writ.broker.authenticate({ bearer: task.token }, { allowTaskToken: true, endpoint: 'test' });
      await h.writ.broker.renewTask(caller, task.id, { checkpoint: 'first' });
      await assert.rejects(h.writ.broker.renewTask(late, task.id, { checkpoint: 'second, with the replaced token' }), (error: { code?: string }) => error.code === 'ERR_TASK_STATE_CONFLICT');
      assert.equal((await h.writ.store.getTask(task.id))?.renewals, 1);
    });

    test('a delegated task renews within its parent: cut to the parent\'s expiry, further once the parent renews, never after the parent ends', async () => {
      const parent = await grant({ ttl: 300 });
      const form = new URLSearchParams({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: parent.token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        actor_token: (await h.writ.issueIdentityToken(WORKER, undefined, { forExchange: true })).token,
        actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        scope: 'read:db:orders/42',
        ttl: '2m',
      });
      const exchanged = await h.post('/oauth/token', form.toString(), undefined, { 'content-type': 'application/x-www-form-urlencoded' });
      assert.equal(exchanged.status, 200, JSON.stringify(exchanged.body));
      const child = { id: exchanged.body.task_id as string, token: exchanged.body.access_token as string };
      const parentExp = claimsOf(parent.token).exp;

      clock.advance(60_000);
      const cut = await renew(child.id, child.token, { checkpoint: 'half the orders read', ttl: 600 });
      assert.equal(cut.status, 200, JSON.stringify(cut.body));
      assert.equal(claimsOf(cut.body.token).exp, parentExp, 'no later than its parent');
      assert.deepEqual(claimsOf(cut.body.token).act, { sub: WORKER }, 'still the worker, for the planner');

      const parentRenewed = await renew(parent.id, parent.token, { checkpoint: 'workers running', ttl: 600 });
      assert.equal(parentRenewed.status, 200);
      const further = await renew(child.id, cut.body.token, { checkpoint: 'three quarters read', ttl: 400 });
      assert.equal(further.status, 200, JSON.stringify(further.body));
      assert.ok(claimsOf(further.body.token).exp > parentExp, 'the parent\'s renewal made room');

      assert.equal((await h.post(`/v1/tasks/${parent.id}/complete`, {}, parentRenewed.body.token)).status, 200);
      assert.equal((await renew(child.id, further.body.token)).status, 401, 'its parent ended: nothing to renew');
    });
  });
}
