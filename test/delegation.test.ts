/**
 * Planner→worker delegation over HTTP, as an agent framework would drive it:
 * RFC 8693 token exchange at /oauth/token, the child's token and its claims,
 * every way a worker might try to get more than its planner holds (each
 * refused with a stable code, on the record), and the cascade that takes a
 * whole tree down when its root ends.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createManualClock } from '../src/core/clock.js';
import { createTestDatabase } from './helpers/pg.js';
import { claimsOf, delegated, exchangeFor, startHarness, supportTask, type Harness, type HttpAnswer } from './helpers/harness.js';
import { policyFolder } from './helpers/policy-folder.js';

const PLANNER = 'spiffe://demo.local/agent/planner';
const WORKER = 'spiffe://demo.local/agent/worker';
const HELPER = 'spiffe://demo.local/agent/helper';
const OUTSIDER = 'spiffe://demo.local/agent/outsider';
const EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const JWT = 'urn:ietf:params:oauth:token-type:jwt';

/** A token-exchange form: `subject` hands `scope` to whoever `actor` proves to be. */
function exchangeForm(subject: string, actor: string, scope: string, extra: Record<string, string> = {}): Record<string, string> {
  return { grant_type: EXCHANGE, subject_token: subject, subject_token_type: ACCESS, actor_token: actor, actor_token_type: JWT, scope, ...extra };
}

async function exchange(h: Harness, form: Record<string, string> | string, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  const body = typeof form === 'string' ? form : new URLSearchParams(form).toString();
  return h.post('/oauth/token', body, undefined, { 'content-type': 'application/x-www-form-urlencoded', ...headers });
}

const pgDatabase = await createTestDatabase();
const backends = pgDatabase === undefined ? (['sqlite'] as const) : (['sqlite', 'postgres'] as const);

for (const backend of backends) {
  describe(`delegation (${backend})`, () => {
    let h: Harness;
    // A fixed instant (Tuesday 10:00 UTC), so every run decides alike; the same tests pass at 22:00 too, and the
    // off-hours case has its own test below.
    const clock = createManualClock(Date.parse('2026-11-24T10:00:00Z'));
    const dir = policyFolder();
    before(async () => {
      h = await startHarness({ clock, config: { policy: { dir } }, ...(backend === 'postgres' && pgDatabase !== undefined ? { backend, database: pgDatabase } : {}) });
      for (const id of [PLANNER, WORKER, HELPER, OUTSIDER]) await h.registerAgent(id);
    });
    after(() => h.close());

    /** A root task for the planner: reads of orders and tickets, a write to one ticket. */
    const plannerTask = async (overrides: Record<string, unknown> = {}) => {
      const answer = await h.post(
        '/v1/tasks',
        supportTask({ scopes: [{ action: 'read', resource: 'db:orders/*' }, { action: 'read', resource: 'tickets:*' }, { action: 'write', resource: 'tickets:T-1042' }], ...overrides }),
        await h.identityToken(PLANNER),
      );
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      return { id: answer.body.task.id as string, token: answer.body.token as string };
    };
    /** What a worker hands its planner to be delegated to: an identity token for one exchange. */
    const actorToken = async (id: string) => (await h.writ.issueIdentityToken(id, undefined, { forExchange: true })).token;
    const delegate = async (subject: string, to: string, scope: string, extra: Record<string, string> = {}) => exchange(h, exchangeForm(subject, await actorToken(to), scope, extra));
    const delegated = async (subject: string, to: string, scope: string, extra: Record<string, string> = {}) => {
      const answer = await delegate(subject, to, scope, extra);
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      return { id: answer.body.task_id as string, token: answer.body.access_token as string };
    };
    const check = (token: string, action: string, resource: string) => h.writ.authorize(token, { action, resource });
    const records = async (type: string) => (await h.auditRecords()).filter((r) => r.type === type);

    test('a planner hands a worker a read-only slice: an RFC 8693 answer, a child task, and a token naming every delegator', async () => {
      const parent = await plannerTask();
      const answer = await delegate(parent.token, WORKER, 'read:db:orders/42 read:tickets:T-1042', { ttl: '2m', purpose: 'Look up the order on ticket T-1042' });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.headers.get('cache-control'), 'no-store');
      assert.equal(answer.body.issued_token_type, ACCESS);
      assert.equal(answer.body.token_type, 'Bearer');
      assert.equal(answer.body.expires_in, 120);
      assert.equal(answer.body.scope, 'read:db:orders/42 read:tickets:T-1042');

      const claims = claimsOf(answer.body.access_token);
      assert.equal(claims.sub, PLANNER, 'the token acts for the identity the run began with (RFC 8693 §4.1)');
      assert.deepEqual(claims.act, { sub: WORKER }, 'and names the worker as the actor');
      assert.deepEqual(claims.task.lineage, [parent.id]);
      assert.equal(claims.txn, parent.id, 'the run is the root task');
      assert.equal(claims.purp, 'customer-support');
      assert.deepEqual(claims.tctx, { environment: 'production', intent: 'customer-support', purpose: 'Answer ticket T-1042', requester: PLANNER });
      assert.equal(claims.task.purpose, 'Look up the order on ticket T-1042');
      assert.equal(claims.exp - claims.iat, 120);

      const child = await h.writ.store.getTask(answer.body.task_id);
      assert.equal(child?.identityId, WORKER);
      assert.equal(child?.parentTaskId, parent.id);
      assert.deepEqual(child?.delegators, [PLANNER]);

      // The worker acts as itself, within the slice.
      const allowed = await check(answer.body.access_token, 'read', 'db:orders/42');
      assert.equal(allowed.allowed, true, JSON.stringify(allowed));
      assert.equal(allowed.identityId, WORKER);
      assert.equal((await check(answer.body.access_token, 'read', 'db:orders/43')).reason, 'ERR_SCOPE_NOT_GRANTED');
      assert.equal((await check(answer.body.access_token, 'write', 'tickets:T-1042')).reason, 'ERR_SCOPE_NOT_GRANTED', 'the planner\'s write was not handed on');

      const [record] = (await records('task.delegated')).filter((r) => r.decision === 'allow' && (r.task as { id: string }).id === child?.id);
      assert.ok(record, 'the delegation is on the record');
      assert.equal((record.actor as { id: string }).id, WORKER);
      assert.equal((record.data as { delegator: string }).delegator, PLANNER);
      assert.deepEqual((record.policies as string[]).includes('delegate-read-only-slices'), true);
    });

    test('escalation: more scopes, another resource, a longer ttl, a deeper chain: each refused whole, with a stable code, on the record', async () => {
      const parent = await plannerTask({ ttl: 300 });
      const cases: [string, Record<string, string>, number, string][] = [
        ['a scope the planner lacks', { scope: 'read:db:orders/42 read:db:customers/42' }, 403, 'ERR_SCOPE_EXCEEDS_PARENT'],
        ['another resource', { scope: 'read:payments:refunds/R-1' }, 403, 'ERR_SCOPE_EXCEEDS_PARENT'],
        ['a wider pattern than the planner\'s', { scope: 'read:db:*' }, 403, 'ERR_SCOPE_EXCEEDS_PARENT'],
        ['a higher tier on a resource it reads', { scope: 'write:db:orders/42' }, 403, 'ERR_SCOPE_EXCEEDS_PARENT'],
        ['a longer ttl than the planner has left', { scope: 'read:db:orders/42', ttl: '10m' }, 403, 'ERR_LIFETIME_EXCEEDS_PARENT'],
        ['a write the planner holds but policy does not let it hand on', { scope: 'write:tickets:T-1042' }, 403, 'ERR_POLICY_DENIED'],
        ['a path that climbs out of the planner\'s pattern', { scope: 'read:db:orders/../customers/1' }, 400, 'ERR_VALIDATION'],
      ];
      for (const [name, extra, status, code] of cases) {
        const answer = await delegate(parent.token, WORKER, extra.scope as string, extra);
        assert.equal(answer.status, status, `${name}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.code, code, name);
        assert.equal(answer.headers.get('content-type'), 'application/problem+json; charset=utf-8', name);
        assert.ok(typeof answer.body.error === 'string' && answer.body.error_description === answer.body.detail, `${name}: an OAuth error too`);
        assert.equal(answer.body.access_token, undefined, name);
      }
      const exceeding = await delegate(parent.token, WORKER, 'read:db:orders/42 read:db:customers/42 read:db:*');
      assert.deepEqual(exceeding.body.scopes, ['read:db:customers/42', 'read:db:*'], 'the refusal names exactly the offending scopes');
      assert.equal(exceeding.body.error, 'invalid_scope');
      const refused = (await records('task.delegated')).filter((r) => r.decision === 'deny' && (r.task as { id: string }).id === parent.id);
      assert.ok(refused.length >= cases.length - 1, `every refusal past validation is on the record (${refused.length})`);
      const children = (await h.writ.store.listActiveTasks({ limit: 1000 })).filter((t) => t.parentTaskId === parent.id);
      assert.deepEqual(children, [], 'no refused delegation left a task behind');
    });

    test('a deeper chain: depth is checked by Writ (delegation.maxDepth) and by policy; the act chain nests every actor', async () => {
      const root = await plannerTask();
      const level1 = await delegated(root.token, WORKER, 'read:db:orders/*');
      const level2 = await delegated(level1.token, HELPER, 'read:db:orders/42');
      const claims = claimsOf(level2.token);
      assert.equal(claims.sub, PLANNER);
      assert.deepEqual(claims.act, { sub: HELPER, act: { sub: WORKER } }, 'the helper acts now; the worker acted before it');
      assert.deepEqual(claims.task.lineage, [root.id, level1.id]);
      assert.equal(claims.txn, root.id);
      assert.equal((await check(level2.token, 'read', 'db:orders/42')).allowed, true);
      // Depth 3: the example policy stops at 2 (policy decides the child too).
      const tooDeep = await delegate(level2.token, OUTSIDER, 'read:db:orders/42');
      assert.equal(tooDeep.body.code, 'ERR_POLICY_DENIED', JSON.stringify(tooDeep.body));
      // A grant is never handed back up its own chain, nor to oneself.
      for (const [subject, to] of [[level2.token, WORKER], [level2.token, PLANNER], [level1.token, WORKER]] as const) {
        const cycle = await delegate(subject, to, 'read:db:orders/42');
        assert.equal(cycle.body.code, 'ERR_ACTOR_NOT_ALLOWED', `${to}: ${JSON.stringify(cycle.body)}`);
      }
    });

    test('the actor must be an identity: the parent\'s own task token as actor_token is refused, and so is a token typed wrong', async () => {
      const parent = await plannerTask();
      const asActor = await exchange(h, exchangeForm(parent.token, parent.token, 'read:db:orders/42'));
      assert.equal(asActor.body.code, 'ERR_ACTOR_NOT_ALLOWED', JSON.stringify(asActor.body));
      const worker = await delegated(parent.token, WORKER, 'read:db:orders/42');
      const childAsActor = await exchange(h, exchangeForm(parent.token, worker.token, 'read:db:orders/42'));
      assert.equal(childAsActor.body.code, 'ERR_ACTOR_NOT_ALLOWED');
      // An identity token is not a grant: as the subject it delegates nothing.
      const identityAsSubject = await exchange(h, exchangeForm(await h.identityToken(PLANNER), await actorToken(WORKER), 'read:db:orders/42'));
      assert.equal(identityAsSubject.body.code, 'ERR_VALIDATION');
      // Forged and garbage tokens, on either side.
      const forged = `${parent.token.slice(0, -4)}AAAA`;
      for (const form of [exchangeForm(forged, await actorToken(WORKER), 'read:db:orders/42'), exchangeForm(parent.token, 'not-a-token', 'read:db:orders/42')]) {
        const answer = await exchange(h, form);
        assert.equal(answer.status, 401, JSON.stringify(answer.body));
        assert.equal(answer.body.code, 'ERR_UNAUTHENTICATED');
        assert.equal(answer.body.error, 'invalid_request');
      }
    });

    test('the actor token is made for one exchange: a general identity token is refused there, it is refused everywhere else, and it is spent once', async () => {
      const parent = await plannerTask();
      const general = await exchange(h, exchangeForm(parent.token, await h.identityToken(WORKER), 'read:db:orders/42'));
      assert.equal(general.status, 401, JSON.stringify(general.body));
      const forExchange = await actorToken(WORKER);
      // Whoever carries it to the exchange (the planner) cannot act as the worker with it.
      const elsewhere = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'read', resource: 'db:orders/42' }] }), forExchange);
      assert.equal(elsewhere.status, 401, 'an exchange token asks for no task');
      assert.equal((await exchange(h, exchangeForm(parent.token, forExchange, 'read:db:orders/42'))).status, 200);
      const replayed = await exchange(h, exchangeForm(parent.token, forExchange, 'read:db:orders/42'));
      assert.equal(replayed.body.code, 'ERR_ACTOR_NOT_ALLOWED', `a replayed actor token: ${JSON.stringify(replayed.body)}`);
    });

    test('may_act restricts who the child may be handed to, and narrows down the chain', async () => {
      const parent = await plannerTask();
      const child = await delegated(parent.token, WORKER, 'read:db:orders/*', { may_act: HELPER });
      assert.deepEqual(claimsOf(child.token).may_act, { sub: HELPER });
      const outsider = await delegate(child.token, OUTSIDER, 'read:db:orders/42');
      assert.equal(outsider.body.code, 'ERR_ACTOR_NOT_ALLOWED');
      const helper = await delegated(child.token, HELPER, 'read:db:orders/42');
      assert.deepEqual(claimsOf(helper.token).may_act, { sub: HELPER }, 'inherited when not given');
      const wider = await delegate(child.token, HELPER, 'read:db:orders/42', { may_act: OUTSIDER });
      assert.equal(wider.body.code, 'ERR_ACTOR_NOT_ALLOWED', 'never wider than the parent\'s');
      const oversized = await delegate((await plannerTask()).token, WORKER, 'read:db:orders/42', { may_act: Array.from({ length: 8 }, (_, i) => `spiffe://demo.local/agent/${'x'.repeat(1000)}${i}`).join(' ') });
      assert.equal(oversized.body.code, 'ERR_VALIDATION', 'a token no enforcement point would accept is never minted');
    });

    test('the endpoint speaks OAuth: form bodies only, each parameter once, one grant type', async () => {
      const parent = await plannerTask();
      const worker = await actorToken(WORKER);
      const asJson = await h.post('/oauth/token', exchangeForm(parent.token, worker, 'read:db:orders/42'));
      assert.equal(asJson.body.code, 'ERR_UNSUPPORTED_MEDIA_TYPE');
      const twice = `${new URLSearchParams(exchangeForm(parent.token, worker, 'read:db:orders/42')).toString()}&scope=read:db:orders/*`;
      assert.equal((await exchange(h, twice)).body.code, 'ERR_VALIDATION');
      const wrongGrant = await exchange(h, { ...exchangeForm(parent.token, worker, 'read:db:orders/42'), grant_type: 'client_credentials' });
      assert.equal(wrongGrant.body.code, 'ERR_UNSUPPORTED_GRANT_TYPE');
      assert.equal(wrongGrant.body.error, 'unsupported_grant_type');
      const elsewhere = await exchange(h, { ...exchangeForm(parent.token, worker, 'read:db:orders/42'), audience: 'https://payments.example' });
      assert.equal(elsewhere.body.error, 'invalid_target');
      const noScope = await exchange(h, { ...exchangeForm(parent.token, worker, ''), scope: '' });
      assert.equal(noScope.body.code, 'ERR_VALIDATION', 'a worker gets what is named, never "the rest"');
      const oversized = await exchange(h, exchangeForm(parent.token, worker, 'read:db:orders/42', { purpose: 'x'.repeat(70_000) }));
      assert.equal(oversized.status, 413);
      // A form is accepted nowhere else (a browser posts one cross-site without asking).
      const formElsewhere = await h.post('/v1/authorize', new URLSearchParams({ token: parent.token, action: 'read', resource: 'db:orders/42' }).toString(), undefined, { 'content-type': 'application/x-www-form-urlencoded' });
      assert.equal(formElsewhere.status, 415);
      const metadata = await h.get('/.well-known/oauth-authorization-server');
      assert.deepEqual(metadata.body.grant_types_supported, [EXCHANGE]);
    });

    test('cascade: revoking the root of a three-level tree refuses every descendant token at once, and ends their tasks', async () => {
      const root = await plannerTask();
      const child = await delegated(root.token, WORKER, 'read:db:orders/*');
      const grandchild = await delegated(child.token, HELPER, 'read:db:orders/42');
      const sibling = await delegated(root.token, OUTSIDER, 'read:tickets:*');
      for (const token of [child.token, grandchild.token, sibling.token]) assert.equal((await check(token, 'read', token === sibling.token ? 'tickets:T-1' : 'db:orders/42')).allowed, true);

      const revoked = await h.post(`/v1/tasks/${root.id}/revoke`, { note: 'planner went off the rails' }, await h.identityToken(PLANNER));
      assert.equal(revoked.status, 200);
      // At once: the very next check, before any background work has run.
      for (const token of [root.token, child.token, grandchild.token, sibling.token]) {
        const answer = await check(token, 'read', token === sibling.token ? 'tickets:T-1' : 'db:orders/42');
        assert.equal(answer.reason, 'ERR_TOKEN_REVOKED', JSON.stringify(answer));
      }
      // And for anything the tokens authenticate: a revoked parent delegates nothing, nor does a worker delegate on.
      assert.equal((await delegate(root.token, OUTSIDER, 'read:db:orders/42')).status, 401);
      assert.equal((await delegate(child.token, OUTSIDER, 'read:db:orders/42')).status, 401);
      await h.writ.settled();
      for (const id of [child.id, grandchild.id, sibling.id]) {
        const task = await h.writ.store.getTask(id);
        assert.equal(task?.state, 'revoked', id);
        assert.match(task?.endReason ?? '', /which it was delegated from, ended/);
      }
      const ends = (await records('task.ended')).filter((r) => [child.id, grandchild.id, sibling.id].includes((r.task as { id: string }).id));
      assert.equal(ends.length, 3, 'each descendant\'s end is recorded once');
    });

    test('a node that has only heard of the root\'s end (its cascade not yet run anywhere) refuses every descendant token', async () => {
      const root = await plannerTask();
      const child = await delegated(root.token, WORKER, 'read:db:orders/*');
      const grandchild = await delegated(child.token, HELPER, 'read:db:orders/42');
      // What the revocation sync does on hearing of another node's end: the list alone, no store change here.
      h.writ.revocations.add(root.id, clock.now() + 300_000);
      for (const token of [child.token, grandchild.token]) assert.equal((await check(token, 'read', 'db:orders/42')).reason, 'ERR_TOKEN_REVOKED');
      assert.equal((await h.writ.store.getTask(grandchild.id))?.state, 'active', 'the refusal came from the token\'s lineage, not the task\'s row');
      assert.equal((await delegate(grandchild.token, OUTSIDER, 'read:db:orders/42')).status, 401, 'nor does it authenticate');
    });

    test('ending a middle task takes its subtree, not its parent or siblings; a child never outlives its parent\'s expiry', async () => {
      const root = await plannerTask({ ttl: 120 });
      const child = await delegated(root.token, WORKER, 'read:db:orders/*');
      assert.ok(claimsOf(child.token).exp <= claimsOf(root.token).exp, 'no ttl asked: cut to the parent\'s');
      const grandchild = await delegated(child.token, HELPER, 'read:db:orders/42');
      const sibling = await delegated(root.token, OUTSIDER, 'read:db:orders/7');
      assert.equal((await h.post(`/v1/tasks/${child.id}/complete`, {}, child.token)).status, 200);
      assert.equal((await check(grandchild.token, 'read', 'db:orders/42')).reason, 'ERR_TOKEN_REVOKED');
      assert.equal((await check(root.token, 'read', 'db:orders/42')).allowed, true);
      assert.equal((await check(sibling.token, 'read', 'db:orders/7')).allowed, true);
      // The root expires: the reaper ends it and, with it, the sibling.
      clock.advance(121_000);
      await h.writ.broker.reapExpired();
      await h.writ.settled();
      assert.equal((await h.writ.store.getTask(sibling.id))?.state !== 'active', true);
    });

    test('a cascade cut short (the children of an ended parent still active) is finished by the reaper', async () => {
      const root = await plannerTask();
      const child = await delegated(root.token, WORKER, 'read:db:orders/*');
      // As if the process stopped between the parent's end and its children's: end the parent's row alone.
      await h.writ.store.transitionTask(root.id, ['active'], 'revoked', { at: clock.now(), endReason: 'revoked: by hand' });
      assert.equal((await h.writ.store.getTask(child.id))?.state, 'active');
      await h.writ.broker.reapExpired();
      assert.equal((await h.writ.store.getTask(child.id))?.state, 'revoked');
      assert.equal((await check(child.token, 'read', 'db:orders/42')).reason, 'ERR_TOKEN_REVOKED');
    });

    test('a narrowing of the parent by policy drift narrows the child at once', async () => {
      const root = await plannerTask();
      const child = await delegated(root.token, WORKER, 'read:db:orders/42 read:tickets:T-1042');
      writeFileSync(join(dir, 'zz-freeze.cedar'), '@id("freeze-order-reads")\nforbid (principal, action in Writ::Action::"read", resource) when { resource.kind == "db" };\n');
      try {
        const reload = await h.writ.reloadPolicy('test');
        assert.ok(reload.ok, JSON.stringify(reload));
        const answer = await check(child.token, 'read', 'db:orders/42');
        assert.equal(answer.allowed, false);
        assert.equal((await check(child.token, 'read', 'tickets:T-1042')).allowed, true);
      } finally {
        writeFileSync(join(dir, 'zz-freeze.cedar'), '');
        await h.writ.reloadPolicy('test');
      }
    });
  });
}

describe('delegation risk is scored on what the delegator does, not assumed', () => {
  // Off hours on a weekday: the hour adds to every score, and a step scored without the delegator's
  // activity (unknown call rate, first use of everything) went critical in production at two hops.
  const clock = createManualClock(Date.parse('2026-11-24T22:00:00Z'));
  let h: Harness;
  before(async () => {
    h = await startHarness({ clock, config: { policy: { dir: policyFolder() } } });
    for (const id of [PLANNER, WORKER, HELPER]) await h.registerAgent(id);
  });
  after(() => h.close());

  test('two hops of an orders read the planner holds are handed on off hours, by identities registered today', async () => {
    const planner = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'read', resource: 'db:orders/*' }] }), await h.identityToken(PLANNER));
    assert.equal(planner.status, 201, JSON.stringify(planner.body));
    const child = await delegated(h, planner.body.token, WORKER, 'read:db:orders/*');
    const grandchild = await exchangeFor(h, child.token, HELPER, 'read:db:orders/42');
    assert.equal(grandchild.status, 200, JSON.stringify(grandchild.body));
    const records = (await h.auditRecords()).filter((r) => r.type === 'task.delegated' && r.decision === 'allow');
    assert.equal(records.length, 2, 'both hops are on the record');
    const steps = records.map((r) => (r.data as { delegate: { risk: { score: number; level: string; signals: { name: string }[] } } }).delegate.risk);
    assert.ok(steps.every((risk) => risk.level !== 'critical'), `no hop scores critical: ${JSON.stringify(steps.map((r) => r.score))}`);
    // The delegators hold what they hand on, and have just acted: neither signal is assumed at its worst.
    for (const risk of steps) assert.equal(risk.signals.some((s) => s.name === 'unusualResource'), false, `a held resource is not a first use: ${JSON.stringify(risk.signals)}`);
  });
});
