/**
 * One conformance suite for every store implementation. The race tests run
 * the contenders in separate processes, each with its own connection, because
 * that is where SQLite's locks and a cluster's nodes actually meet.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createChainVerifier, linkEntry } from '../src/audit/chain.js';
import type { Task } from '../src/core/types.js';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { openPostgresStore, openSqliteStore } from '../src/store/kysely-store.js';
import type { NewTask, Store } from '../src/store/store.js';
import { createTestDatabase, type TestDatabase } from './helpers/pg.js';

const WORKER = fileURLToPath(new URL('./fixtures/store-worker.ts', import.meta.url));

interface Worker {
  send(command: Record<string, unknown>): Promise<any>;
  close(): Promise<void>;
}

async function startWorker(target: string, name: string): Promise<Worker> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', WORKER, target, name], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Interface = createInterface({ input: child.stdout! });
  const pending: ((value: any) => void)[] = [];
  lines.on('line', (line) => pending.shift()?.(JSON.parse(line)));
  const next = () => new Promise<any>((resolve) => pending.push(resolve));
  const ready = await next();
  assert.equal(ready.ready, true);
  return {
    send(command) {
      const answer = next();
      child.stdin!.write(`${JSON.stringify(command)}\n`);
      return answer;
    },
    async close() {
      child.stdin!.write(`${JSON.stringify({ op: 'exit' })}\n`);
      await new Promise((resolve) => child.once('exit', resolve));
    },
  };
}

function newTask(id: string, overrides: Partial<NewTask> = {}): NewTask {
  const now = Date.now();
  return {
    id,
    identityId: 'spiffe://demo.local/agent/a',
    purpose: 'conformance',
    intent: 'testing',
    environment: 'development',
    requestedScopes: [{ action: 'read', resource: 'db:x/*' }],
    grantedScopes: [{ action: 'read', resource: 'db:x/*' }],
    refusedScopes: [],
    state: 'active',
    policyVersion: 'sha256:0000000000000000',
    parentTaskId: null,
    tokenId: 'jti_1',
    createdAt: now,
    expiresAt: now + 60_000,
    ...overrides,
  };
}

const backends = {
  sqlite: async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-store-'));
    const filename = join(dir, 'writ.db');
    return { target: filename, open: () => openSqliteStore({ filename }), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
  },
  postgres: async () => {
    const database: TestDatabase | undefined = await createTestDatabase();
    if (database === undefined) return undefined;
    return { target: database.url, open: () => openPostgresStore({ url: database.url }), cleanup: () => database.drop() };
  },
};

for (const [backend, setup] of Object.entries(backends)) {
  describe(`store conformance (${backend})`, () => {
    let env: Awaited<ReturnType<(typeof backends)['sqlite']>> | undefined;
    let store: Store;
    before(async () => {
      env = await setup();
      if (env !== undefined) store = await env.open();
    });
    after(async () => {
      if (env === undefined) return;
      await store.close();
      await env.cleanup();
    });
    const maybe = (name: string, fn: () => Promise<void>) =>
      test(name, async (t) => {
        if (env === undefined) return t.skip('PostgreSQL not available');
        await fn();
      });

    maybe('identities: created once, read back exactly, a second create with the same id writes nothing', async () => {
      const identity = {
        id: 'spiffe://demo.local/agent/a',
        actorType: 'agent' as const,
        owner: 'alice@example.com',
        environment: 'production',
        labels: { team: 'support' },
        state: 'active' as const,
        source: 'cli',
        adminScopes: [],
        createdAt: 1_700_000_000_000,
        expiresAt: null,
      };
      assert.equal(await store.createIdentity(identity), true);
      assert.equal(await store.createIdentity({ ...identity, owner: 'mallory@example.com' }), false);
      const read = await store.getIdentity(identity.id);
      assert.deepEqual(read, { ...identity, updatedAt: identity.createdAt, lastSeenAt: null });
      await store.touchIdentity(identity.id, 1_700_000_000_500);
      assert.equal((await store.getIdentity(identity.id))?.lastSeenAt, 1_700_000_000_500);
      assert.equal(await store.updateIdentity(identity.id, ['quarantined'], 'active', { at: 1_700_000_000_900 }), undefined, 'wrong from-state changes nothing');
      const suspended = await store.updateIdentity(identity.id, ['active'], 'suspended', { at: 1_700_000_001_000 });
      assert.equal(suspended?.state, 'suspended');
      assert.equal(suspended?.updatedAt, 1_700_000_001_000);
      assert.equal(await store.updateIdentity('spiffe://demo.local/agent/nobody', ['active'], 'suspended', { at: 1 }), undefined);
      assert.equal(await store.getIdentity('spiffe://demo.local/agent/nobody'), undefined);
      assert.deepEqual((await store.listIdentities()).map((i) => i.id), [identity.id]);
      assert.deepEqual(await store.listIdentitiesChangedSince(1_700_000_001_000), [identity.id]);
      assert.deepEqual(await store.listIdentitiesChangedSince(1_700_000_001_001), []);
    });

    maybe('identities: a quarantined one has no owner until claimed, and a claim sets owner and attributes at once', async () => {
      const id = 'https://issuer.example#repo:acme/app:ref:refs/heads/main';
      const base = { id, actorType: 'service' as const, owner: null, environment: 'development', labels: { repo: 'acme/app' }, state: 'quarantined' as const, source: 'github', adminScopes: [], createdAt: 10, expiresAt: null };
      assert.equal(await store.createIdentity(base), true);
      assert.equal((await store.getIdentity(id))?.owner, null);
      assert.equal(await store.countQuarantined('github'), 1);
      assert.equal(await store.countQuarantined('gitlab'), 0);
      const claimed = await store.updateIdentity(id, ['quarantined'], 'active', { at: 20, owner: 'platform@example.com', environment: 'production', labels: {}, adminScopes: [] });
      assert.deepEqual(
        { owner: claimed?.owner, state: claimed?.state, environment: claimed?.environment, labels: claimed?.labels, source: claimed?.source },
        { owner: 'platform@example.com', state: 'active', environment: 'production', labels: {}, source: 'github' },
      );
      assert.equal(await store.updateIdentity(id, ['quarantined'], 'active', { at: 30, owner: 'mallory@example.com' }), undefined, 'a second claim loses');
    });

    maybe('identities: every change owes its audit record until marked, and changes in one millisecond stay distinct', async () => {
      const id = 'spiffe://demo.local/agent/owed';
      await store.createIdentity({ id, actorType: 'agent', owner: 'a@example.com', environment: 'production', labels: {}, state: 'active', source: 'cli', adminScopes: [], createdAt: 100, expiresAt: null });
      const owed = async (before: number) => (await store.listIdentitiesAwaitingAudit(before, 100)).map((i) => i.id).filter((i) => i === id);
      assert.deepEqual(await owed(100), [id], 'a new identity owes its record');
      await store.markIdentityAudited(id, 'rec_1', 100);
      assert.deepEqual(await owed(1000), []);
      const suspended = await store.updateIdentity(id, ['active'], 'suspended', { at: 100 });
      assert.equal(suspended?.updatedAt, 101, 'a change in the same millisecond as the last moves updated_at forward');
      const reactivated = await store.updateIdentity(id, ['suspended'], 'active', { at: 100 });
      assert.equal(reactivated?.updatedAt, 102);
      await store.markIdentityAudited(id, 'rec_2', 101);
      assert.deepEqual(await owed(1000), [id], 'the record of an older change does not settle a newer one');
      await store.markIdentityAudited(id, 'rec_3', 102);
      assert.deepEqual(await owed(1000), []);
    });

    maybe('identities: every non-terminal task of an identity ends in one call, exactly once', async () => {
      const mine = ['task_id_a', 'task_id_b'].map((id) => ({ ...newTask(id), identityId: 'spiffe://demo.local/agent/x' }));
      const other = { ...newTask('task_id_c'), identityId: 'spiffe://demo.local/agent/y' };
      for (const task of [...mine, other]) await store.createTask(task);
      await store.transitionTask('task_id_b', ['active'], 'completed', { at: 5 });
      const ended = await store.endTasksOfIdentity('spiffe://demo.local/agent/x', 'revoked', { at: 50, endReason: 'revoked: identity suspended' });
      assert.deepEqual(ended.map((t) => [t.id, t.state, t.endReason]), [['task_id_a', 'revoked', 'revoked: identity suspended']]);
      assert.deepEqual(await store.endTasksOfIdentity('spiffe://demo.local/agent/x', 'revoked', { at: 60 }), [], 'nothing left to end');
      assert.equal((await store.getTask('task_id_c'))?.state, 'active', 'another identity\'s task is untouched');
    });

    maybe('admin tokens: found by hash, revoked once; a one-time fact is claimed by one caller only', async () => {
      const record = { id: 'adm_1', name: 'ci', tokenHash: 'a'.repeat(64), scopes: ['identities:read' as const], createdBy: 'cli:root', createdAt: 1, expiresAt: null, revokedAt: null, lastUsedAt: null };
      await store.createAdminToken(record);
      assert.deepEqual(await store.findAdminToken('a'.repeat(64)), record);
      assert.equal(await store.findAdminToken('b'.repeat(64)), undefined);
      await store.touchAdminToken('adm_1', 5);
      assert.equal((await store.revokeAdminToken('adm_1', 9))?.revokedAt, 9);
      assert.equal(await store.revokeAdminToken('adm_1', 10), undefined, 'already revoked');
      assert.deepEqual((await store.listAdminTokens()).map((t) => [t.id, t.lastUsedAt, t.revokedAt]), [['adm_1', 5, 9]]);
      const claims = await Promise.all([1, 2, 3].map((n) => store.claimFact('bootstrap_admin_token', `caller ${n}`, n)));
      assert.deepEqual(claims.filter(Boolean).length, 1);
    });

    maybe('secrets: stored sealed text read back exactly, replaced in place, listed without the value, deleted once', async () => {
      assert.equal(await store.putSecret('tickets-key', 'v1.sealed-a', 100), true, 'new');
      assert.equal(await store.putSecret('tickets-key', 'v1.sealed-b', 200), false, 'replaced');
      assert.deepEqual(await store.getSecret('tickets-key'), { name: 'tickets-key', sealed: 'v1.sealed-b', createdAt: 100, updatedAt: 200 });
      await store.putSecret("o'neil; drop table secrets --", 'v1.x', 300);
      assert.deepEqual((await store.listSecrets()).map((s) => [s.name, s.createdAt, s.updatedAt, 'sealed' in s]), [
        ["o'neil; drop table secrets --", 300, 300, false],
        ['tickets-key', 100, 200, false],
      ]);
      assert.equal(await store.deleteSecret('tickets-key'), true);
      assert.equal(await store.deleteSecret('tickets-key'), false);
      assert.equal(await store.getSecret('tickets-key'), undefined);
    });

    maybe('tasks: read back exactly; a transition only happens from an allowed state', async () => {
      const task = newTask('task_roundtrip');
      await store.createTask(task);
      assert.deepEqual(await store.getTask(task.id), { ...task, endedAt: null, endReason: null } satisfies Task);
      assert.equal(await store.transitionTask(task.id, ['pending_approval'], 'active', { at: 1 }), undefined, 'wrong from-state changes nothing');
      assert.equal((await store.getTask(task.id))?.state, 'active');
      const ended = await store.transitionTask(task.id, ['active'], 'completed', { at: 1234, endReason: 'completed: done' });
      assert.equal(ended?.state, 'completed');
      assert.equal(ended?.endedAt, 1234);
      assert.equal(ended?.endReason, 'completed: done');
      assert.equal(await store.transitionTask(task.id, ['active'], 'revoked', { at: 1 }), undefined, 'an ended task stays ended');
      assert.equal(await store.transitionTask('task_missing', ['active'], 'revoked', { at: 1 }), undefined);
    });

    maybe('ended tasks whose tokens could still be valid are listed for the revocation list', async () => {
      const now = Date.now();
      await store.createTask(newTask('task_ended_fresh'));
      await store.createTask(newTask('task_ended_stale', { expiresAt: now - 1000 }));
      await store.createTask(newTask('task_still_active'));
      await store.transitionTask('task_ended_fresh', ['active'], 'revoked', { at: now });
      await store.transitionTask('task_ended_stale', ['active'], 'revoked', { at: now });
      const listed = (await store.listEndedUnexpiredTasks(now)).map((t) => t.id);
      assert.ok(listed.includes('task_ended_fresh'));
      assert.ok(!listed.includes('task_ended_stale'));
      assert.ok(!listed.includes('task_still_active'));
    });

    maybe('task ends are listed for other nodes, and an end owes its audit record until marked', async () => {
      const now = Date.now();
      await store.createTask(newTask('task_end_listed'));
      await store.transitionTask('task_end_listed', ['active'], 'failed', { at: now - 10_000 });
      const since = (await store.listTasksEndedSince(now - 20_000)).map((t) => t.id);
      assert.ok(since.includes('task_end_listed'));
      assert.ok(!(await store.listTasksEndedSince(now - 5_000)).some((t) => t.id === 'task_end_listed'));
      const owed = async (before: number) => (await store.listTasksAwaitingEndAudit(before, 1000)).map((t) => t.id);
      assert.ok((await owed(now)).includes('task_end_listed'));
      assert.ok(!(await owed(now - 15_000)).includes('task_end_listed'), 'only ends older than the cut-off');
      assert.ok(!(await owed(now)).includes('task_still_active'), 'an active task owes nothing');
      await store.markTaskEndAudited('task_end_listed', 'aud_x');
      assert.ok(!(await owed(now)).includes('task_end_listed'));
    });

    maybe('active tasks are listed for re-decision page by page, filtered by the policy version that decided them', async () => {
      const v1 = 'sha256:drift-list-v1';
      const v2 = 'sha256:drift-list-v2';
      const ids = Array.from({ length: 7 }, (_, i) => `task_drift_list_${i}`);
      for (const [i, id] of ids.entries()) await store.createTask(newTask(id, { policyVersion: i < 5 ? v1 : v2 }));
      await store.createTask(newTask('task_drift_list_pending', { policyVersion: v1, state: 'pending_approval', tokenId: null }));
      await store.createTask(newTask('task_drift_list_ended', { policyVersion: v1 }));
      await store.transitionTask('task_drift_list_ended', ['active'], 'revoked', { at: 1 });
      const pages: string[][] = [];
      let afterId: string | undefined;
      for (;;) {
        const page = await store.listActiveTasks({ policyVersionIn: [v1], limit: 2, ...(afterId === undefined ? {} : { afterId }) });
        if (page.length === 0) break;
        pages.push(page.map((t) => t.id));
        afterId = page.at(-1)!.id;
      }
      assert.deepEqual(pages, [ids.slice(0, 2), ids.slice(2, 4), ids.slice(4, 5)], 'only active tasks of v1, in id order, two at a time');
      const notV2 = (await store.listActiveTasks({ policyVersionNot: v2, limit: 1000 })).map((t) => t.id);
      assert.ok(ids.slice(0, 5).every((id) => notV2.includes(id)));
      assert.ok(!notV2.some((id) => ids.slice(5).includes(id)), 'tasks decided by v2 are not listed');
      assert.ok(!notV2.includes('task_drift_list_pending') && !notV2.includes('task_drift_list_ended'));
      assert.deepEqual(await store.listActiveTasks({ policyVersionIn: [], limit: 10 }), [], 'no versions, no tasks');
      const both = await store.listActiveTasks({ policyVersionIn: [v1, v2], limit: 1000 });
      assert.deepEqual(both.map((t) => t.id), ids);
      assert.deepEqual(both[0], { ...newTask(ids[0]!, { policyVersion: v1, createdAt: both[0]!.createdAt, expiresAt: both[0]!.expiresAt }), endedAt: null, endReason: null }, 'read back whole');
    });

    maybe('a re-decided grant is written only over the grant it was decided on, and only while the task is active', async () => {
      const read = { action: 'read', resource: 'db:orders/*' };
      const write = { action: 'write', resource: 'tickets:T-1' };
      const refund = { action: 'refund', resource: 'payments:refunds/*' };
      const base = { grantedScopes: [read, write, refund], policyVersion: 'sha256:grant-v1' };
      await store.createTask(newTask('task_grant_cas', { ...base, requestedScopes: base.grantedScopes }));
      const dropped = { ...refund, outcome: 'deny' as const, policies: ['freeze'], reason: 'ERR_POLICY_DENIED' };
      assert.equal(
        await store.updateGrant('task_grant_cas', { ...base, policyVersion: 'sha256:other' }, { grantedScopes: [read], refusedScopes: [], policyVersion: 'sha256:grant-v2', narrowedAt: 10 }),
        undefined,
        'another policy version than the one read changes nothing',
      );
      const narrowed = await store.updateGrant('task_grant_cas', base, { grantedScopes: [read, write], refusedScopes: [dropped], policyVersion: 'sha256:grant-v2', narrowedAt: 10 });
      assert.deepEqual([narrowed?.grantedScopes, narrowed?.refusedScopes, narrowed?.policyVersion, narrowed?.state], [[read, write], [dropped], 'sha256:grant-v2', 'active']);
      assert.equal(
        await store.updateGrant('task_grant_cas', base, { grantedScopes: [read, write, refund], refusedScopes: [], policyVersion: 'sha256:grant-v3' }),
        undefined,
        'a stale re-decision cannot widen the grant back',
      );
      assert.deepEqual((await store.getTask('task_grant_cas'))?.grantedScopes, [read, write]);
      // Two re-decisions racing from the same grant: exactly one lands.
      const current = { grantedScopes: [read, write], policyVersion: 'sha256:grant-v2' };
      const racers = await Promise.all([
        store.updateGrant('task_grant_cas', current, { grantedScopes: [read], refusedScopes: [], policyVersion: 'sha256:grant-v3', narrowedAt: 20 }),
        store.updateGrant('task_grant_cas', current, { grantedScopes: [write], refusedScopes: [], policyVersion: 'sha256:grant-v4', narrowedAt: 20 }),
      ]);
      assert.equal(racers.filter((r) => r !== undefined).length, 1);
      await store.transitionTask('task_grant_cas', ['active'], 'revoked', { at: 30 });
      const ended = (await store.getTask('task_grant_cas'))!;
      assert.equal(await store.updateGrant('task_grant_cas', ended, { grantedScopes: [], refusedScopes: [], policyVersion: 'sha256:grant-v5' }), undefined, 'an ended task keeps its grant');
    });

    maybe('narrowed tasks are listed for other nodes, and those whose tokens are unexpired for a start', async () => {
      const now = Date.now();
      const read = { action: 'read', resource: 'db:x/*' };
      const write = { action: 'write', resource: 'db:x/1' };
      const grant = { grantedScopes: [read, write], policyVersion: 'sha256:narrow-v1' };
      await store.createTask(newTask('task_narrowed_fresh', grant));
      await store.createTask(newTask('task_narrowed_old', { ...grant, expiresAt: now - 1000 }));
      await store.createTask(newTask('task_kept', grant));
      const change = { grantedScopes: [read], refusedScopes: [], policyVersion: 'sha256:narrow-v2' };
      await store.updateGrant('task_narrowed_fresh', grant, { ...change, narrowedAt: now - 10_000 });
      await store.updateGrant('task_narrowed_old', grant, { ...change, narrowedAt: now - 10_000 });
      // Ended, so the reaper tests of this suite do not see an overdue task.
      await store.transitionTask('task_narrowed_old', ['active'], 'completed', { at: now });
      assert.ok(await store.updateGrant('task_kept', grant, change), 'kept whole: a new version, no narrowing');
      const listed = (await store.listTasksNarrowedSince(now - 20_000)).filter((t) => t.id.startsWith('task_narrowed_') || t.id === 'task_kept');
      assert.deepEqual(
        listed.sort((a, b) => (a.id < b.id ? -1 : 1)).map((t) => [t.id, t.grantedScopes]),
        [['task_narrowed_fresh', [read]], ['task_narrowed_old', [read]]],
      );
      assert.ok(!(await store.listTasksNarrowedSince(now - 5_000)).some((t) => t.id === 'task_narrowed_fresh'), 'only narrowings since the cut-off');
      const unexpired = await store.listNarrowedUnexpiredTasks(now);
      assert.deepEqual(unexpired.filter((t) => t.id.startsWith('task_narrowed_') || t.id === 'task_kept').map((t) => [t.id, t.grantedScopes, t.expiresAt]), [
        ['task_narrowed_fresh', [read], (await store.getTask('task_narrowed_fresh'))!.expiresAt],
      ]);
    });

    maybe('a chained append is all or nothing', async () => {
      const head = await store.auditHead();
      await assert.rejects(
        store.appendChained([
          (h) => linkEntry(h, { id: 'aud_atomic_1', at: 1, type: 't', body: {} }),
          () => {
            throw new Error('linker failed');
          },
        ]),
      );
      assert.deepEqual(await store.auditHead(), head);
      await assert.rejects(
        store.appendChained([
          (h) => linkEntry(h, { id: 'aud_atomic_2', at: 1, type: 't', body: {} }),
          (h) => linkEntry(h, { id: 'aud_atomic_2', at: 1, type: 't', body: {} }),
        ]),
        'a duplicate id aborts the whole batch',
      );
      assert.deepEqual(await store.auditHead(), head);
    });

    maybe('concurrent appenders in separate processes build one unbroken chain', async () => {
      const workers = await Promise.all([1, 2, 3].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        const before = (await store.auditHead())?.seq ?? 0;
        const results = await Promise.all(workers.map((w) => w.send({ op: 'append', n: 40 })));
        const written = results.reduce((sum, r) => sum + (r.written as number), 0);
        const perWorker = Array.from({ length: 40 }, (_, i) => 1 + (i % 3)).reduce((a, b) => a + b, 0);
        assert.equal(written, 3 * perWorker, JSON.stringify(results));
        const rows = await store.readAudit(0, 100_000);
        assert.equal(rows.length, before + written);
        const verifier = createChainVerifier();
        for (const row of rows) assert.equal(verifier.next(row), undefined, `row ${row.seq}`);
        assert.deepEqual(
          rows.map((r) => r.seq),
          rows.map((_, i) => i + 1),
        );
        assert.deepEqual(await store.auditHead(), { seq: rows.at(-1)!.seq, hash: rows.at(-1)!.hash });
        const page = await store.readAudit(5, 3);
        assert.deepEqual(page.map((r) => r.seq), [6, 7, 8]);
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    });

    maybe('racing transitions on one task: exactly one wins', async () => {
      const workers = await Promise.all([1, 2, 3, 4].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        for (let round = 0; round < 5; round++) {
          const id = `task_race_${round}`;
          await store.createTask(newTask(id));
          const answers = await Promise.all(workers.map((w, i) => w.send({ op: 'transition', taskId: id, to: i % 2 === 0 ? 'completed' : 'revoked' })));
          assert.equal(answers.filter((a) => a.won === true).length, 1, JSON.stringify(answers));
          const task = await store.getTask(id);
          const winner = answers.findIndex((a) => a.won === true);
          assert.equal(task?.state, winner % 2 === 0 ? 'completed' : 'revoked');
          assert.equal(task?.endReason, `w${winner + 1}`);
        }
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    });

    maybe('racing reapers expire each overdue task exactly once', async () => {
      const now = Date.now();
      const overdue = Array.from({ length: 30 }, (_, i) => `task_overdue_${i}`);
      for (const id of overdue) await store.createTask(newTask(id, { expiresAt: now - 1 }));
      await store.createTask(newTask('task_not_due', { expiresAt: now + 600_000 }));
      await store.createTask(newTask('task_pending_due', { state: 'pending_approval', expiresAt: now - 1, tokenId: null }));
      const workers = await Promise.all([1, 2, 3].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        const answers = await Promise.all(workers.map((w) => w.send({ op: 'expire', now })));
        const all = answers.flatMap((a) => a.expired as string[]);
        assert.equal(new Set(all).size, all.length, 'no task reported twice');
        assert.deepEqual(new Set(all), new Set([...overdue, 'task_pending_due']));
        assert.equal((await store.getTask('task_not_due'))?.state, 'active');
        assert.equal((await store.getTask('task_overdue_0'))?.state, 'expired');
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    });

    maybe('concurrent first starts agree on one active signing key', async () => {
      const workers = await Promise.all([1, 2, 3, 4].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        const answers = await Promise.all(workers.map((w) => w.send({ op: 'key' })));
        assert.equal(new Set(answers.map((a) => a.kid)).size, 1, JSON.stringify(answers));
        const keys = await store.listSigningKeys('task');
        assert.equal(keys.filter((k) => k.state === 'active').length, 1);
        assert.equal(keys[0]?.kid, answers[0].kid);
        assert.deepEqual(await store.listSigningKeys('identity-dev'), []);
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    });
  });
}

describe('PostgreSQL connections', () => {
  test('a connection the server kills, idle or inside a transaction, does not end the process; the next query opens another', async (t) => {
    const database = await createTestDatabase();
    if (database === undefined) return t.skip('PostgreSQL not available');
    const idleErrors: Error[] = [];
    const store = await openPostgresStore({ url: database.url, onIdleError: (error) => idleErrors.push(error) });
    try {
      assert.equal(await store.getIdentity('nobody'), undefined);
      const admin = new pg.Client({ connectionString: database.url });
      await admin.connect();
      try {
        const killed = await admin.query('select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()');
        assert.ok(killed.rowCount !== null && killed.rowCount >= 1, 'the store held an idle connection');
      } finally {
        await admin.end();
      }
      // The pool hears of the dead connection as an 'error' event: handled, not thrown.
      for (let i = 0; i < 50 && idleErrors.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(idleErrors.length >= 1, true, 'the idle error was reported');
      assert.equal(await store.getIdentity('nobody'), undefined, 'the next query works on a new connection');

      // Killed while checked out, inside a transaction: the transaction fails for its caller, the process lives on.
      const { db } = store as unknown as { db: Kysely<Record<string, never>> };
      const inTransaction = db
        .transaction()
        .execute(async (trx) => {
          await sql`select pg_sleep(2)`.execute(trx);
        })
        .then(
          () => undefined,
          (error: unknown) => error,
        );
      const killer = new pg.Client({ connectionString: database.url });
      await killer.connect();
      try {
        for (let i = 0; i < 50; i++) {
          const sleeping = await killer.query("select pid from pg_stat_activity where datname = current_database() and query like 'select pg_sleep%' and pid <> pg_backend_pid()");
          if (sleeping.rowCount) {
            await killer.query('select pg_terminate_backend($1)', [sleeping.rows[0].pid]);
            break;
          }
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      } finally {
        await killer.end();
      }
      assert.match(String(await inTransaction), /terminat/i, 'the transaction failed for its caller');
      assert.equal(await store.getIdentity('nobody'), undefined, 'and the next query works again');
    } finally {
      await store.close();
      await database.drop();
    }
  });
});
