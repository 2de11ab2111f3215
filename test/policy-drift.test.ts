/**
 * Drift: when the policy changes, every active grant is decided again. Grants
 * that no longer hold at all are revoked (`revoked: policy_drift`), grants that
 * partly hold are narrowed, and the token's dropped scopes are refused at once
 * here and, after one sync, on every other node. Reads are the sharp case: a
 * `read` call is not decided by policy again, so only the narrowing stands
 * between a dropped read scope and the data.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { verifyAuditChain } from '../src/audit/log.js';
import { createDrift, DRIFT_END_REASON, sortRedecision } from '../src/broker/drift.js';
import { createManualClock, type Clock } from '../src/core/clock.js';
import { PACKAGE_ROOT } from '../src/core/config.js';
import { newId } from '../src/core/ids.js';
import type { Scope } from '../src/core/types.js';
import { createNarrowingList } from '../src/enforce/narrowing-list.js';
import { createPolicyEngine, type PolicyDecision } from '../src/policy/engine.js';
import { createObservations } from '../src/policy/observations.js';
import { loadPolicySet } from '../src/policy/policy-set.js';
import { mintTaskToken } from '../src/tokens/task-token.js';
import { createWrit } from '../src/writ.js';
import { AGENT, startHarness, type Harness } from './helpers/harness.js';
import { createTestDatabase } from './helpers/pg.js';
import { breakAuditWrites, repairAuditWrites } from './helpers/sql.js';

const FREEZE_DB_READS = `@id("freeze-db-reads")
forbid (principal, action in Writ::Action::"read", resource) when { resource.kind == "db" };
`;

const READ_ORDERS = { action: 'read', resource: 'db:orders/*' };
const WRITE_TICKET = { action: 'write', resource: 'tickets:T-1042' };
const READ_TICKET = { action: 'read', resource: 'tickets:T-1042' };

interface Granted {
  readonly id: string;
  readonly token: string;
}

interface DriftHarness {
  readonly h: Harness;
  readonly dir: string;
  grant(scopes: readonly Scope[]): Promise<Granted>;
  check(token: string, scope: Scope): ReturnType<Harness['writ']['authorize']>;
  close(): Promise<void>;
}

async function startDriftHarness(options: { backend?: 'sqlite' | 'postgres'; clock?: Clock; config?: Record<string, unknown> } = {}): Promise<DriftHarness | undefined> {
  const database = options.backend === 'postgres' ? await createTestDatabase() : undefined;
  if (options.backend === 'postgres' && database === undefined) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'writ-drift-'));
  cpSync(join(PACKAGE_ROOT, 'policies'), dir, { recursive: true });
  const h = await startHarness({
    config: { ...(options.config ?? {}), policy: { dir } },
    ...(options.backend ? { backend: options.backend } : {}),
    ...(database ? { database } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  await h.registerAgent();
  const identityToken = await h.identityToken();
  return {
    h,
    dir,
    async grant(scopes) {
      const answer = await h.post('/v1/tasks', { purpose: 'Answer ticket T-1042', intent: 'customer-support', environment: 'production', ttl: 300, scopes }, identityToken);
      assert.equal(answer.status, 201, JSON.stringify(answer.body));
      assert.equal(answer.body.status, 'granted');
      return { id: answer.body.task.id, token: answer.body.token };
    },
    check: (token, scope) => h.writ.authorize(token, scope),
    async close() {
      await h.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Three tasks: one whose grant no longer holds, one that partly holds, one that wholly holds. */
async function grantThree(d: DriftHarness) {
  const revoked = await d.grant([READ_ORDERS]);
  const narrowed = await d.grant([READ_ORDERS, WRITE_TICKET]);
  const untouched = await d.grant([READ_TICKET, WRITE_TICKET]);
  for (const [task, scope] of [[revoked, READ_ORDERS], [narrowed, READ_ORDERS], [narrowed, WRITE_TICKET], [untouched, READ_TICKET], [untouched, WRITE_TICKET]] as const) {
    assert.equal((await d.check(task.token, concrete(scope))).allowed, true, `before the change, ${scope.action} ${scope.resource} is allowed`);
  }
  return { revoked, narrowed, untouched };
}

/** A concrete resource inside a scope's pattern. */
function concrete(scope: Scope): Scope {
  return { action: scope.action, resource: scope.resource.endsWith('*') ? `${scope.resource.slice(0, -1)}42` : scope.resource };
}

const records = async (h: Harness, type: string, taskId?: string) =>
  (await h.auditRecords()).filter((r) => r.type === type && (taskId === undefined || (r.task as { id?: string } | undefined)?.id === taskId));

describe('policy drift', () => {
  test('drift revokes exactly the grants that no longer hold, narrows exactly those that partly hold, and leaves the rest', async () => {
    const d = (await startDriftHarness())!;
    try {
      const { h } = d;
      const { revoked, narrowed, untouched } = await grantThree(d);
      const before = h.writ.policy().version;
      writeFileSync(join(d.dir, 'freeze.cedar'), FREEZE_DB_READS);
      const reload = await h.writ.reloadPolicy('test');
      assert.ok(reload.ok && reload.changed, JSON.stringify(reload));
      const after = reload.version;
      assert.deepEqual(
        reload.drift && { ...reload.drift },
        { trigger: 'test', previous: before, version: after, redecided: 3, kept: 1, narrowed: 1, revoked: 1, failed: 0, complete: true },
      );

      // The grant that no longer holds at all: revoked, on the record with the policy that ended it.
      const revokedTask = await h.writ.store.getTask(revoked.id);
      assert.deepEqual([revokedTask?.state, revokedTask?.endReason], ['revoked', DRIFT_END_REASON]);
      assert.equal((await d.check(revoked.token, concrete(READ_ORDERS))).reason, 'ERR_TOKEN_REVOKED');
      assert.equal((await h.get(`/v1/tasks/${revoked.id}`, revoked.token)).status, 401, 'its token no longer authenticates either');
      const ended = await records(h, 'task.ended', revoked.id);
      assert.equal(ended.length, 1);
      assert.deepEqual([ended[0]?.reason, ended[0]?.policyVersion, ended[0]?.policies], ['revoked', after, ['freeze-db-reads']]);
      assert.match(String(ended[0]?.detail), /^policy_drift: /);

      // The grant that partly holds: narrowed in the store, and the token's dropped scope refused at once.
      const narrowedTask = await h.writ.store.getTask(narrowed.id);
      assert.deepEqual([narrowedTask?.state, narrowedTask?.grantedScopes, narrowedTask?.policyVersion], ['active', [WRITE_TICKET], after]);
      assert.deepEqual(
        narrowedTask?.refusedScopes.map((r) => [r.action, r.resource, r.outcome, r.policies]),
        [[READ_ORDERS.action, READ_ORDERS.resource, 'deny', ['freeze-db-reads']]],
      );
      const refused = await h.post('/v1/authorize', { token: narrowed.token, ...concrete(READ_ORDERS) });
      assert.deepEqual([refused.body.allowed, refused.body.reason], [false, 'ERR_SCOPE_NOT_GRANTED']);
      const refusal = (await h.auditRecords()).find((r) => r.id === refused.body.auditId);
      assert.match(String(refusal?.detail), /narrowed by policy drift/);
      assert.equal((await d.check(narrowed.token, concrete(WRITE_TICKET))).allowed, true, 'the kept scope still works');
      const view = await h.get(`/v1/tasks/${narrowed.id}`, narrowed.token);
      assert.deepEqual([view.status, view.body.task.grantedScopes, view.body.task.policyVersion], [200, [WRITE_TICKET], after]);
      const narrowings = await records(h, 'task.narrowed', narrowed.id);
      assert.equal(narrowings.length, 1);
      assert.deepEqual(
        [narrowings[0]?.reason, narrowings[0]?.policies, narrowings[0]?.policyVersion, (narrowings[0]?.data as any)?.previousVersion],
        ['policy_drift', ['freeze-db-reads'], after, before],
      );
      assert.deepEqual((narrowings[0]?.data as any)?.dropped.map((x: { scope: string }) => x.scope), ['read:db:orders/*']);
      assert.deepEqual((narrowings[0]?.data as any)?.kept, ['write:tickets:T-1042']);

      // The grant that wholly holds: untouched, and now carries the version that decided it again.
      const untouchedTask = await h.writ.store.getTask(untouched.id);
      assert.deepEqual([untouchedTask?.state, untouchedTask?.grantedScopes, untouchedTask?.policyVersion], ['active', [READ_TICKET, WRITE_TICKET], after]);
      assert.equal((await d.check(untouched.token, READ_TICKET)).allowed, true);
      assert.equal((await d.check(untouched.token, WRITE_TICKET)).allowed, true);

      // Exactly these: no other task was narrowed or ended, and the summary is on the record.
      assert.deepEqual((await records(h, 'task.narrowed')).map((r) => (r.task as { id: string }).id), [narrowed.id]);
      assert.deepEqual((await records(h, 'task.ended')).map((r) => (r.task as { id: string }).id), [revoked.id]);
      const summaries = await records(h, 'policy.drift');
      assert.equal(summaries.length, 1);
      assert.deepEqual(
        [summaries[0]?.reason, summaries[0]?.policyVersion, (summaries[0]?.data as any)?.previous, (summaries[0]?.data as any)?.revokedTasks, (summaries[0]?.data as any)?.narrowedTasks],
        ['policy_drift', after, before, [revoked.id], [narrowed.id]],
      );
      assert.equal((await verifyAuditChain(h.writ.store)).ok, true);

      // A second reload of the same set decides nothing again.
      const again = await h.writ.reloadPolicy('test');
      assert.ok(again.ok && !again.changed && again.drift === undefined);
      assert.equal((await records(h, 'policy.drift')).length, 1);
    } finally {
      await d.close();
    }
  });

  test('an invalid reload decides nothing again: every grant, token and record stays as it was', async () => {
    const d = (await startDriftHarness())!;
    try {
      const { h } = d;
      const { revoked, narrowed, untouched } = await grantThree(d);
      const serving = h.writ.policy().version;
      writeFileSync(join(d.dir, 'freeze.cedar'), FREEZE_DB_READS);
      writeFileSync(join(d.dir, 'broken.cedar'), 'this is not cedar\n');
      const admin = await h.adminToken(['policy:write']);
      const answer = await h.post('/v1/admin/policy/reload', {}, admin);
      assert.equal(answer.status, 422);
      for (const task of [revoked, narrowed, untouched]) {
        const stored = await h.writ.store.getTask(task.id);
        assert.deepEqual([stored?.state, stored?.policyVersion], ['active', serving]);
      }
      assert.deepEqual((await h.writ.store.getTask(narrowed.id))?.grantedScopes, [READ_ORDERS, WRITE_TICKET]);
      assert.equal((await d.check(narrowed.token, concrete(READ_ORDERS))).allowed, true);
      assert.equal((await d.check(revoked.token, concrete(READ_ORDERS))).allowed, true);
      assert.equal(h.writ.narrowings.size, 0);
      assert.equal((await records(h, 'policy.drift')).length, 0);
      assert.equal((await records(h, 'task.narrowed')).length, 0);
      assert.equal((await records(h, 'task.ended')).length, 0);
    } finally {
      await d.close();
    }
  });

  test('a node that could not sync for longer than the window reads everything it missed when it is back', async () => {
    const clock = createManualClock();
    const d = (await startDriftHarness({ clock }))!;
    const other = await createWrit({ config: d.h.writ.config, logger: pino({ level: 'silent' }), env: {}, clock });
    try {
      const ended = await d.grant([READ_TICKET]);
      const narrowed = await d.grant([READ_ORDERS, WRITE_TICKET]);
      assert.equal(await other.syncRevocations(), 0);
      clock.advance(10_000);
      // While the other node is cut off: one task ends, one grant is narrowed.
      assert.equal((await d.h.post(`/v1/tasks/${ended.id}/complete`, {}, ended.token)).status, 200);
      writeFileSync(join(d.dir, 'freeze.cedar'), FREEZE_DB_READS);
      assert.equal((await d.h.writ.reloadPolicy('test')).ok, true);
      // Back two minutes later: far past one look-back window.
      clock.advance(120_000);
      assert.equal(await other.syncRevocations(), 2);
      assert.equal((await other.authorize(ended.token, READ_TICKET)).reason, 'ERR_TOKEN_REVOKED');
      assert.equal((await other.authorize(narrowed.token, concrete(READ_ORDERS))).reason, 'ERR_SCOPE_NOT_GRANTED');
    } finally {
      await other.close();
      await d.close();
    }
  });

  for (const backend of ['sqlite', 'postgres'] as const) {
    test(`a grant narrowed on one node is narrowed on another after one sync, and on a node started later at once (${backend})`, async (t) => {
      const d = await startDriftHarness({ backend });
      if (d === undefined) return t.skip('PostgreSQL not available');
      const nodes: Awaited<ReturnType<typeof createWrit>>[] = [];
      try {
        const { h } = d;
        const other = await createWrit({ config: h.writ.config, logger: pino({ level: 'silent' }), env: {} });
        nodes.push(other);
        const { revoked, narrowed, untouched } = await grantThree(d);
        assert.equal((await other.authorize(narrowed.token, concrete(READ_ORDERS))).allowed, true, 'the other node allows the read before the change');

        writeFileSync(join(d.dir, 'freeze.cedar'), FREEZE_DB_READS);
        const admin = await h.adminToken(['policy:write']);
        const answer = await h.post('/v1/admin/policy/reload', {}, admin);
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.equal(answer.body.changed, true);

        // The other node has not reloaded (it serves the old set) and has not synced yet.
        assert.equal(other.policy().version, answer.body.previous);
        assert.equal((await other.authorize(narrowed.token, concrete(READ_ORDERS))).allowed, true, 'before its sync the other node does not know');
        assert.equal(await other.syncRevocations(), 2, 'one revocation, one narrowing');
        const refused = await other.authorize(narrowed.token, concrete(READ_ORDERS));
        assert.deepEqual([refused.allowed, refused.reason], [false, 'ERR_SCOPE_NOT_GRANTED']);
        assert.equal((await other.authorize(narrowed.token, concrete(WRITE_TICKET))).allowed, true);
        assert.equal((await other.authorize(revoked.token, concrete(READ_ORDERS))).reason, 'ERR_TOKEN_REVOKED');
        assert.equal((await other.authorize(untouched.token, READ_TICKET)).allowed, true);
        assert.equal(await other.syncRevocations(), 0, 'nothing new the second time');

        const later = await createWrit({ config: h.writ.config, logger: pino({ level: 'silent' }), env: {} });
        nodes.push(later);
        assert.equal((await later.authorize(narrowed.token, concrete(READ_ORDERS))).reason, 'ERR_SCOPE_NOT_GRANTED', 'loaded at start');
        assert.equal((await later.authorize(narrowed.token, concrete(WRITE_TICKET))).allowed, true);
      } finally {
        for (const node of nodes) await node.close();
        await d.close();
      }
    });
  }

  test('a narrowing that cannot be put on the record is a revocation instead, and its end is recorded late', async () => {
    const clock = createManualClock();
    const d = (await startDriftHarness({ clock }))!;
    try {
      const { h } = d;
      const { revoked, narrowed, untouched } = await grantThree(d);
      writeFileSync(join(d.dir, 'freeze.cedar'), FREEZE_DB_READS);
      await breakAuditWrites(h);
      let reload;
      try {
        reload = await h.writ.reloadPolicy('test');
      } finally {
        await repairAuditWrites(h);
      }
      assert.ok(reload.ok && reload.changed, 'the reload stands though nothing could be recorded');
      assert.deepEqual([reload.drift?.narrowed, reload.drift?.revoked, reload.drift?.kept], [0, 2, 1]);
      for (const task of [revoked, narrowed]) {
        const stored = await h.writ.store.getTask(task.id);
        assert.deepEqual([stored?.state, stored?.endReason], ['revoked', DRIFT_END_REASON]);
        assert.equal((await d.check(task.token, concrete(WRITE_TICKET))).allowed, false);
      }
      assert.equal((await d.check(untouched.token, WRITE_TICKET)).allowed, true);
      assert.equal((await records(h, 'task.narrowed')).length, 0);
      clock.advance(6000);
      assert.equal(await h.writ.broker.flushEndRecords(), 2);
      const late = await records(h, 'task.ended');
      assert.deepEqual(late.map((r) => (r.task as { id: string }).id).sort(), [revoked.id, narrowed.id].sort());
      assert.ok(late.every((r) => /^recorded late: revoked: policy_drift/.test(String(r.detail))), JSON.stringify(late.map((r) => r.detail)));
    } finally {
      await d.close();
    }
  });

  test('a grant that cannot be decided again is revoked, failing closed', async () => {
    const clock = createManualClock();
    const d = (await startDriftHarness({ clock }))!;
    try {
      const { h } = d;
      const expiring = 'spiffe://demo.local/agent/expiring';
      await h.registerAgent(expiring, { expiresAt: clock.now() + 60_000 });
      const identityToken = await h.identityToken(expiring);
      const answer = await h.post('/v1/tasks', { purpose: 'Answer ticket T-1042', intent: 'customer-support', environment: 'production', ttl: 300, scopes: [READ_TICKET] }, identityToken);
      assert.equal(answer.status, 201);
      const kept = await d.grant([READ_TICKET]);
      clock.advance(61_000);
      writeFileSync(join(d.dir, 'freeze.cedar'), FREEZE_DB_READS);
      const reload = await h.writ.reloadPolicy('test');
      assert.ok(reload.ok);
      assert.deepEqual([reload.drift?.failed, reload.drift?.revoked, reload.drift?.kept], [1, 1, 1]);
      const stored = await h.writ.store.getTask(answer.body.task.id);
      assert.deepEqual([stored?.state, stored?.endReason], ['revoked', DRIFT_END_REASON]);
      const ended = await records(h, 'task.ended', answer.body.task.id);
      assert.match(String(ended[0]?.detail), /^policy_drift: could not be decided again .*identity has expired.*failing closed$/);
      assert.equal((await h.writ.store.getTask(kept.id))?.state, 'active');
    } finally {
      await d.close();
    }
  });

  test('a grant the replaced set decided, written after the re-decision passed it, is decided again by the next sweep', async () => {
    const d = (await startDriftHarness({ config: { revocation: { syncIntervalMs: 100 } } }))!;
    try {
      const { h } = d;
      writeFileSync(join(d.dir, 'freeze.cedar'), FREEZE_DB_READS);
      const reload = await h.writ.reloadPolicy('test');
      assert.ok(reload.ok && reload.changed);
      // What a request decided by the old set, in flight during the swap, writes afterwards.
      const now = h.writ.clock.now();
      const id = newId('task');
      const minted = mintTaskToken(h.writ.taskKeys, {
        issuer: h.writ.config.issuer,
        audience: h.writ.config.tokens.audience,
        identityId: AGENT,
        task: { id, purpose: 'Answer ticket T-1042', intent: 'customer-support' },
        scopes: [READ_ORDERS, WRITE_TICKET],
        environment: 'production',
        issuedAt: now,
        expiresAt: now + 300_000,
      });
      await h.writ.store.createTask({
        id,
        identityId: AGENT,
        purpose: 'Answer ticket T-1042',
        intent: 'customer-support',
        environment: 'production',
        requestedScopes: [READ_ORDERS, WRITE_TICKET],
        grantedScopes: [READ_ORDERS, WRITE_TICKET],
        refusedScopes: [],
        state: 'active',
        policyVersion: reload.previous,
        parentTaskId: null,
        lineage: [],
        delegators: [],
        mayAct: null,
        renewals: 0,
        tokenId: minted.jti,
        createdAt: now,
        expiresAt: now + 300_000,
      });
      assert.equal((await d.check(minted.token, concrete(READ_ORDERS))).allowed, true, 'the straggler passes until it is decided again');
      h.writ.startReaper();
      const deadline = Date.now() + 10_000;
      while ((await h.writ.store.getTask(id))?.policyVersion !== reload.version && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual((await h.writ.store.getTask(id))?.grantedScopes, [WRITE_TICKET]);
      assert.equal((await d.check(minted.token, concrete(READ_ORDERS))).reason, 'ERR_SCOPE_NOT_GRANTED');
      assert.equal((await d.check(minted.token, concrete(WRITE_TICKET))).allowed, true);
      const sweeps = (await records(h, 'policy.drift')).filter((r) => (r.data as { trigger?: string }).trigger === 'sweep');
      assert.equal(sweeps.length, 1, 'one sweep record, for the one straggler; empty sweeps are not recorded');
      assert.deepEqual((sweeps[0]?.data as any)?.narrowedTasks, [id]);
    } finally {
      await d.close();
    }
  });
});

describe('drift, paged', () => {
  test('a re-decision pages through every active task: none is skipped at a page boundary while others drop out', async () => {
    const d = (await startDriftHarness())!;
    try {
      const { h } = d;
      const narrowed = [];
      const revoked = [];
      for (let i = 0; i < 5; i++) narrowed.push(await d.grant([READ_ORDERS, WRITE_TICKET]));
      for (let i = 0; i < 4; i++) revoked.push(await d.grant([READ_ORDERS]));
      writeFileSync(join(d.dir, 'freeze.cedar'), FREEZE_DB_READS);
      const engine = createPolicyEngine(loadPolicySet(d.dir));
      const drift = createDrift({
        store: h.writ.store,
        observations: createObservations({ history: (id, limit) => h.writ.store.listGrantedScopesOf(id, limit) }),
        audit: h.writ.audit,
        bus: h.writ.bus,
        clock: h.writ.clock,
        narrowings: h.writ.narrowings,
        retireMs: 60_000,
        pageSize: 2,
      });
      const summary = await drift.redecide(engine, h.writ.policy().version, 'paged');
      assert.deepEqual([summary.redecided, summary.narrowed, summary.revoked, summary.complete], [9, 5, 4, true]);
      for (const task of narrowed) {
        assert.deepEqual((await h.writ.store.getTask(task.id))?.grantedScopes, [WRITE_TICKET]);
        assert.equal((await d.check(task.token, concrete(READ_ORDERS))).reason, 'ERR_SCOPE_NOT_GRANTED');
      }
      for (const task of revoked) assert.equal((await h.writ.store.getTask(task.id))?.state, 'revoked');
      assert.equal((await drift.redecide(engine, h.writ.policy().version, 'paged')).redecided, 0, 'decided once: the second pass finds nothing left');
    } finally {
      await d.close();
    }
  });
});

describe('drift, the pure parts', () => {
  const decision = (outcome: PolicyDecision['outcome'], policies: string[], errors: string[] = []) => ({ outcome, policies, errors }) as unknown as PolicyDecision;

  test('only allow keeps a scope: deny and approval_required drop it, naming the deciding policies', () => {
    const scopes = [READ_ORDERS, WRITE_TICKET, READ_TICKET, { action: 'refund', resource: 'payments:refunds/*' }];
    const sorted = sortRedecision(scopes, [
      decision('allow', ['agents-read-non-restricted']),
      decision('deny', ['freeze-tickets']),
      decision('allow', ['agents-read-non-restricted']),
      decision('approval_required', ['refunds-need-approval']),
    ]);
    assert.deepEqual(sorted.kept, [READ_ORDERS, READ_TICKET]);
    assert.deepEqual(
      sorted.dropped.map((d) => [d.action, d.outcome, d.reason, d.policies]),
      [
        ['write', 'deny', 'ERR_POLICY_DENIED', ['freeze-tickets']],
        ['refund', 'approval_required', 'ERR_APPROVAL_REQUIRED', ['refunds-need-approval']],
      ],
    );
    assert.deepEqual(sorted.policies, ['freeze-tickets', 'refunds-need-approval']);
  });

  test('a scope without a decision, or with evaluation errors, is dropped: errors never keep a scope', () => {
    const sorted = sortRedecision([READ_ORDERS, WRITE_TICKET], [decision('deny', ['broken'], ['broken: type error'])]);
    assert.deepEqual(sorted.kept, []);
    assert.deepEqual(sorted.dropped.map((d) => [d.action, d.outcome, d.errors]), [['read', 'deny', ['broken: type error']], ['write', 'deny', undefined]]);
  });

  test('a narrowing never widens, whatever order narrowings arrive in, and is forgotten only past expiry plus skew', () => {
    const list = createNarrowingList({ clockSkewMs: 30_000 });
    assert.equal(list.remainingOf('task_a'), undefined, 'never narrowed');
    assert.equal(list.narrow('task_a', [READ_ORDERS, WRITE_TICKET], 1_000_000), true);
    assert.equal(list.narrow('task_a', [WRITE_TICKET], 1_000_000), true);
    assert.equal(list.narrow('task_a', [READ_ORDERS, WRITE_TICKET], 1_000_000), false, 'an older, wider narrowing read late changes nothing');
    assert.deepEqual(list.remainingOf('task_a'), [WRITE_TICKET]);
    assert.equal(list.narrow('task_a', [READ_ORDERS], 1_000_000), true);
    assert.deepEqual(list.remainingOf('task_a'), [], 'two narrowings that keep different scopes keep nothing');
    list.prune(1_030_000);
    assert.deepEqual(list.remainingOf('task_a'), []);
    list.prune(1_030_001);
    assert.equal(list.remainingOf('task_a'), undefined);
    assert.equal(list.size, 0);
  });
});
