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
import type { ApprovalVote, BreakGlass, Task } from '../src/core/types.js';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { openPostgresStore, openSqliteStore } from '../src/store/kysely-store.js';
import type { ApprovalBinding, NewApprovalRequest, NewBreakGlass, NewOutboxMessage, NewTask, Store } from '../src/store/store.js';
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
    lineage: [],
    delegators: [],
    mayAct: null,
    renewals: 0,
    tokenId: 'jti_1',
    createdAt: now,
    expiresAt: now + 60_000,
    ...overrides,
  };
}

const DIGEST_A = `sha256:${'a'.repeat(64)}`;
const DIGEST_B = `sha256:${'b'.repeat(64)}`;

function newApproval(id: string, at: number, overrides: Partial<NewApprovalRequest> = {}): NewApprovalRequest {
  return {
    id,
    stage: 'call',
    taskId: 'task_approval',
    identityId: 'spiffe://demo.local/agent/a',
    action: 'refund',
    resource: 'payments:refunds/R-1',
    argsDigest: DIGEST_A,
    arguments: '{"amount":120,"note":"caf\u00e9 \"quoted\""}',
    environment: 'production',
    intent: 'refund order 1',
    purpose: 'support',
    owner: 'alice@example.com',
    tier: 'write',
    risk: { score: 72, factors: [{ name: 'amount', weight: 0.5 }] },
    policies: ['refunds-need-approval', 'large-amounts'],
    policyVersion: 'sha256:policy-v1',
    requiredApprovals: 1,
    requestRecord: 'aud_request',
    createdAt: at,
    expiresAt: at + 60_000,
    ...overrides,
  };
}

function bindingOf(request: NewApprovalRequest): ApprovalBinding {
  const { stage, taskId, identityId, action, resource, argsDigest } = request;
  return { stage, taskId, identityId, action, resource, argsDigest };
}

function voteOf(approver: string, at: number, decision: ApprovalVote['decision'] = 'approve'): ApprovalVote {
  return { approver, decision, at, selfApproval: false, note: null };
}

function newMessage(id: string, createdAt: number): NewOutboxMessage {
  return { id, target: 'ops-hook', event: 'approval.requested', body: `{"id":"${id}"}`, createdAt };
}

function newBreakGlass(id: string, taskId: string, at: number, overrides: Partial<NewBreakGlass> = {}): NewBreakGlass {
  return {
    id,
    taskId,
    identityId: 'spiffe://demo.local/agent/a',
    requestedBy: 'human:alice@example.com',
    reason: 'orders table locked; caf\u00e9 "quoted"; drop table break_glass --',
    incident: 'INC-4521',
    environment: 'production',
    scopes: [{ action: 'write', resource: 'db:orders/*' }, { action: 'use', resource: 'secrets:db-admin' }],
    createdAt: at,
    expiresAt: at + 900_000,
    ...overrides,
  };
}

/** A grant as it reads back right after it was written. */
function runningGrant(grant: NewBreakGlass): BreakGlass {
  return { ...grant, endedAt: null, endState: null, reviewedAt: null, reviewedBy: null, reviewNote: null, used: [] };
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

    maybe("identities: the non-terminal tasks of every identity past its own expiry are revoked in one call, exactly once", async () => {
      const identity = (id: string, expiresAt: number | null) => ({ id, actorType: 'agent' as const, owner: 'a@example.com', environment: 'production', labels: {}, state: 'active' as const, source: 'cli', adminScopes: [], createdAt: 1, expiresAt });
      await store.createIdentity(identity('spiffe://demo.local/agent/gone', 100));
      await store.createIdentity(identity('spiffe://demo.local/agent/later', 1000));
      await store.createIdentity(identity('spiffe://demo.local/agent/forever', null));
      await store.createTask({ ...newTask('task_exp_a'), identityId: 'spiffe://demo.local/agent/gone' });
      await store.createTask({ ...newTask('task_exp_b'), identityId: 'spiffe://demo.local/agent/gone', state: 'pending_approval' });
      await store.createTask({ ...newTask('task_exp_c'), identityId: 'spiffe://demo.local/agent/later' });
      await store.createTask({ ...newTask('task_exp_d'), identityId: 'spiffe://demo.local/agent/forever' });
      await store.createTask({ ...newTask('task_exp_e'), identityId: 'spiffe://demo.local/agent/gone' });
      await store.transitionTask('task_exp_e', ['active'], 'completed', { at: 5 });
      const revoked = await store.revokeTasksOfExpiredIdentities(100, { at: 100, endReason: 'revoked: identity expired' });
      assert.deepEqual(revoked.map((t) => [t.id, t.state, t.endReason, t.endedAt]).sort(), [
        ['task_exp_a', 'revoked', 'revoked: identity expired', 100],
        ['task_exp_b', 'revoked', 'revoked: identity expired', 100],
      ]);
      assert.deepEqual(await store.revokeTasksOfExpiredIdentities(100, { at: 101 }), [], 'nothing left to end');
      assert.deepEqual([(await store.getTask('task_exp_c'))?.state, (await store.getTask('task_exp_d'))?.state, (await store.getTask('task_exp_e'))?.state], ['active', 'active', 'completed']);
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

    maybe('activateTask: a pending task becomes active with its grant, exactly once, and nothing else is activated', async () => {
      const pending = newTask('task_activate', { state: 'pending_approval', grantedScopes: [], tokenId: null, policyVersion: 'sha256:act-v1' });
      await store.createTask(pending);
      const refused = { action: 'delete', resource: 'db:x/1', outcome: 'deny' as const, policies: ['no-deletes'], reason: 'ERR_POLICY_DENIED' };
      // Keys in the other order: stored as {action, resource}, so a later re-decision compares it as text.
      const change = { grantedScopes: [{ resource: 'db:x/*', action: 'read' }], refusedScopes: [refused], policyVersion: 'sha256:act-v2', tokenId: 'jti_activated' };
      const activated = await store.activateTask(pending.id, change);
      const expected: Task = { ...pending, state: 'active', grantedScopes: [{ action: 'read', resource: 'db:x/*' }], refusedScopes: [refused], policyVersion: 'sha256:act-v2', tokenId: 'jti_activated', endedAt: null, endReason: null };
      assert.deepEqual(activated, expected);
      assert.deepEqual(await store.getTask(pending.id), expected);
      assert.equal(await store.activateTask(pending.id, { ...change, tokenId: 'jti_second' }), undefined, 'a second activation changes nothing');
      assert.equal((await store.getTask(pending.id))?.tokenId, 'jti_activated');
      assert.ok(await store.updateGrant(pending.id, { grantedScopes: [{ action: 'read', resource: 'db:x/*' }], policyVersion: 'sha256:act-v2' }, { grantedScopes: [], refusedScopes: [], policyVersion: 'sha256:act-v3' }), 'stored in the same encoding as every grant');

      await store.createTask(newTask('task_activate_active'));
      assert.equal(await store.activateTask('task_activate_active', change), undefined, 'an active task is not re-activated');
      await store.createTask(newTask('task_activate_revoked', { state: 'pending_approval', tokenId: null }));
      await store.transitionTask('task_activate_revoked', ['pending_approval'], 'revoked', { at: 1 });
      assert.equal(await store.activateTask('task_activate_revoked', change), undefined, 'an ended task stays ended');
      assert.equal((await store.getTask('task_activate_revoked'))?.state, 'revoked');
      assert.equal(await store.activateTask('task_missing', change), undefined);

      await store.createTask(newTask('task_activate_race', { state: 'pending_approval', tokenId: null }));
      const racers = await Promise.all(Array.from({ length: 8 }, (_, i) => store.activateTask('task_activate_race', { ...change, tokenId: `jti_race_${i}` })));
      const winners = racers.filter((t) => t !== undefined);
      assert.equal(winners.length, 1);
      assert.equal((await store.getTask('task_activate_race'))?.tokenId, winners[0]?.tokenId);
    });

    maybe('approvals: read back exactly; opening the same binding again returns the pending request and writes nothing', async () => {
      const at = Date.now();
      const request = newApproval('apr_reuse_1', at, { taskId: 'task_apr_reuse' });
      const first = await store.openApproval(request, at);
      assert.deepEqual(first, { approval: { ...request, state: 'pending', decidedAt: null, consumedAt: null, votes: [] }, created: true, expired: [] });
      assert.deepEqual(await store.getApproval(request.id), first.approval);
      const again = await store.openApproval({ ...request, id: 'apr_reuse_2', intent: 'another intent', expiresAt: at + 999_999 }, at + 1);
      assert.deepEqual(again, { approval: first.approval, created: false, expired: [] });
      assert.equal(await store.getApproval('apr_reuse_2'), undefined, 'nothing written');
      assert.equal(await store.getApproval('apr_missing'), undefined);

      // A grant-stage request has no digest: its binding is still one request.
      const grant = newApproval('apr_reuse_grant_1', at, { taskId: 'task_apr_reuse', stage: 'grant', argsDigest: null, arguments: null, owner: null });
      const grantOpened = await store.openApproval(grant, at);
      assert.equal(grantOpened.created, true);
      assert.deepEqual(grantOpened.approval, { ...grant, state: 'pending', decidedAt: null, consumedAt: null, votes: [] });
      const grantAgain = await store.openApproval({ ...grant, id: 'apr_reuse_grant_2' }, at);
      assert.deepEqual([grantAgain.created, grantAgain.approval.id], [false, grant.id]);
    });

    maybe('approvals: a different stage, task, identity, action, resource or argsDigest is a different request', async () => {
      const at = Date.now();
      const base = newApproval('apr_bind_base', at, { taskId: 'task_apr_bind', action: 'ab', resource: 'c' });
      assert.equal((await store.openApproval(base, at)).created, true);
      const variants: Partial<NewApprovalRequest>[] = [
        { argsDigest: DIGEST_B },
        { stage: 'grant', argsDigest: null },
        { argsDigest: null },
        { stage: 'grant' },
        { taskId: 'task_apr_bind_other' },
        { identityId: 'spiffe://demo.local/agent/b' },
        { action: 'a', resource: 'bc' },
        { resource: 'c2' },
        { action: 'ab","c', resource: '' },
      ];
      for (const [i, variant] of variants.entries()) {
        const request = { ...base, ...variant, id: `apr_bind_${i}` };
        const opened = await store.openApproval(request, at);
        assert.deepEqual([opened.created, opened.approval.id], [true, request.id], JSON.stringify(variant));
        const again = await store.openApproval({ ...request, id: `apr_bind_${i}_again` }, at);
        assert.deepEqual([again.created, again.approval.id], [false, request.id], `reopened: ${JSON.stringify(variant)}`);
      }
      const reopened = await store.openApproval({ ...base, id: 'apr_bind_base_again' }, at);
      assert.deepEqual([reopened.created, reopened.approval.id], [false, base.id]);
    });

    maybe('approvals: a pending request whose time ran out is expired, reported once, and a new one opens', async () => {
      const at = Date.now();
      const old = newApproval('apr_stale_1', at, { taskId: 'task_apr_stale', expiresAt: at + 10 });
      await store.openApproval(old, at);
      const fresh = newApproval('apr_stale_2', at + 10, { taskId: 'task_apr_stale' });
      const before = await store.openApproval({ ...fresh, id: 'apr_stale_early' }, at + 9);
      assert.deepEqual([before.created, before.approval.id, before.expired], [false, old.id, []], 'one millisecond before its end it still counts');
      const opened = await store.openApproval(fresh, at + 10);
      assert.deepEqual([opened.created, opened.approval.id], [true, fresh.id]);
      assert.deepEqual(opened.expired, [{ ...old, arguments: null, state: 'expired', decidedAt: at + 10, consumedAt: null, votes: [] }]);
      const third = await store.openApproval({ ...fresh, id: 'apr_stale_3' }, at + 11);
      assert.deepEqual([third.created, third.approval.id, third.expired], [false, fresh.id, []], 'reported once');
      assert.equal((await store.getApproval(old.id))?.state, 'expired');
    });

    maybe('concurrent opens of one binding yield one request, in one process and across processes', async () => {
      const at = Date.now();
      const request = newApproval('apr_open_race', at, { taskId: 'task_apr_open_race' });
      const opened = await Promise.all(Array.from({ length: 20 }, (_, i) => store.openApproval({ ...request, id: `apr_open_race_${i}` }, at)));
      assert.equal(new Set(opened.map((o) => o.approval.id)).size, 1);
      assert.equal(opened.filter((o) => o.created).length, 1);
      assert.equal((await store.listApprovals({ taskId: request.taskId, limit: 100 })).length, 1);

      const workers = await Promise.all([1, 2, 3].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        for (let round = 0; round < 3; round++) {
          const shared = newApproval(`apr_open_xrace_${round}`, at, { taskId: `task_apr_open_xrace_${round}` });
          const answers = await Promise.all(workers.map((w) => w.send({ op: 'open', request: shared, now: at, n: 5 })));
          const ids = answers.flatMap((a) => (a.ids ?? []) as string[]);
          assert.equal(ids.length, 15, JSON.stringify(answers));
          assert.equal(new Set(ids).size, 1, JSON.stringify(answers));
          assert.equal(answers.reduce((sum, a) => sum + (a.created as number), 0), 1, JSON.stringify(answers));
          assert.deepEqual((await store.listApprovals({ taskId: shared.taskId, limit: 100 })).map((a) => a.id), [ids[0]]);
        }
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    });

    maybe('votes: one approve of one required approves; a deny denies and erases the arguments; an unknown request is not found', async () => {
      const at = Date.now();
      const one = newApproval('apr_vote_one', at, { taskId: 'task_apr_vote' });
      await store.openApproval(one, at);
      const yes = { ...voteOf('human:alice', at + 5), note: 'looks right' };
      assert.deepEqual(await store.castApprovalVote(one.id, yes, at + 5), {
        outcome: 'recorded',
        approval: { ...one, state: 'approved', decidedAt: at + 5, consumedAt: null, votes: [yes] },
      }, 'approved keeps the arguments for the approved call');
      const late = await store.castApprovalVote(one.id, voteOf('human:bob', at + 6), at + 6);
      assert.equal(late.outcome, 'closed');
      assert.deepEqual(late.outcome === 'closed' && late.approval.votes, [yes], 'a vote after the decision is not recorded');

      const two = newApproval('apr_vote_deny', at, { taskId: 'task_apr_vote', resource: 'payments:refunds/R-2', requiredApprovals: 2 });
      await store.openApproval(two, at);
      const first = voteOf('human:alice', at + 6);
      const pending = await store.castApprovalVote(two.id, first, at + 6);
      assert.deepEqual(pending.outcome === 'recorded' && [pending.approval.state, pending.approval.arguments, pending.approval.decidedAt], ['pending', two.arguments, null]);
      const no: ApprovalVote = { approver: 'human:bob', decision: 'deny', at: at + 7, selfApproval: true, note: 'not this one' };
      assert.deepEqual(await store.castApprovalVote(two.id, no, at + 7), {
        outcome: 'recorded',
        approval: { ...two, state: 'denied', arguments: null, decidedAt: at + 7, consumedAt: null, votes: [first, no] },
      });
      assert.deepEqual(await store.getApproval(two.id), { ...two, state: 'denied', arguments: null, decidedAt: at + 7, consumedAt: null, votes: [first, no] });
      assert.equal((await store.castApprovalVote(two.id, voteOf('human:carol', at + 8), at + 8)).outcome, 'closed');
      assert.deepEqual(await store.castApprovalVote('apr_missing', yes, at), { outcome: 'not_found' });
    });

    maybe('votes: approvers are distinct: the same approver twice is a duplicate and does not count toward N of M', async () => {
      const at = Date.now();
      const request = newApproval('apr_vote_distinct', at, { taskId: 'task_apr_distinct', requiredApprovals: 2 });
      await store.openApproval(request, at);
      const alice = voteOf('human:alice', at + 1);
      assert.equal((await store.castApprovalVote(request.id, alice, at + 1)).outcome, 'recorded');
      for (const again of [voteOf('human:alice', at + 2), voteOf('human:alice', at + 3, 'deny')]) {
        const answer = await store.castApprovalVote(request.id, again, again.at);
        assert.equal(answer.outcome, 'duplicate', `${again.decision} again`);
        assert.deepEqual(answer.outcome === 'duplicate' && [answer.approval.state, answer.approval.votes], ['pending', [alice]]);
      }
      assert.deepEqual(await store.getApproval(request.id), { ...request, state: 'pending', decidedAt: null, consumedAt: null, votes: [alice] }, 'nothing changed');
      const bob = voteOf('human:bob', at + 4);
      const approved = await store.castApprovalVote(request.id, bob, at + 4);
      assert.deepEqual(approved, { outcome: 'recorded', approval: { ...request, state: 'approved', decidedAt: at + 4, consumedAt: null, votes: [alice, bob] } });

      // Votes are listed by time, then approver.
      const three = newApproval('apr_vote_order', at, { taskId: 'task_apr_distinct', resource: 'payments:refunds/R-3', requiredApprovals: 3 });
      await store.openApproval(three, at);
      const zed = voteOf('human:zed', at + 1);
      const amy = { ...voteOf('human:amy', at + 1), selfApproval: true };
      const Bob = voteOf('human:Bob', at);
      for (const vote of [zed, amy, Bob]) await store.castApprovalVote(three.id, vote, at + 2);
      assert.deepEqual((await store.getApproval(three.id))?.votes, [Bob, amy, zed]);
      assert.equal((await store.getApproval(three.id))?.state, 'approved');
    });

    maybe('votes: a request whose time ran out takes no vote, though no reaper has moved it yet', async () => {
      const at = Date.now();
      const request = newApproval('apr_vote_late', at, { taskId: 'task_apr_late', expiresAt: at + 100 });
      await store.openApproval(request, at);
      const late = await store.castApprovalVote(request.id, voteOf('human:alice', at + 100), at + 100);
      assert.deepEqual(late, { outcome: 'closed', approval: { ...request, state: 'pending', decidedAt: null, consumedAt: null, votes: [] } });
      const inTime = await store.castApprovalVote(request.id, voteOf('human:alice', at + 99), at + 99);
      assert.deepEqual(inTime.outcome === 'recorded' && inTime.approval.state, 'approved', 'one millisecond before its end it still takes a vote');
    });

    maybe('racing approvers: of two on one-of-one exactly one vote approves; on two-of-two neither vote is lost', async () => {
      const at = Date.now();
      const workers = await Promise.all([1, 2].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        for (let round = 0; round < 5; round++) {
          const oneOfOne = newApproval(`apr_race_one_${round}`, at, { taskId: 'task_apr_vote_race', resource: `one/${round}` });
          await store.openApproval(oneOfOne, at);
          const answers = await Promise.all(workers.map((w, i) => w.send({ op: 'vote', id: oneOfOne.id, vote: voteOf(`human:${i}`, at + 1), now: at + 1 })));
          assert.deepEqual(answers.map((a) => `${a.outcome}/${a.state}/${a.votes}`).sort(), ['closed/approved/1', 'recorded/approved/1'], JSON.stringify(answers));
          const decided = await store.getApproval(oneOfOne.id);
          assert.deepEqual([decided?.state, decided?.votes.length], ['approved', 1]);

          const twoOfTwo = newApproval(`apr_race_two_${round}`, at, { taskId: 'task_apr_vote_race', resource: `two/${round}`, requiredApprovals: 2 });
          await store.openApproval(twoOfTwo, at);
          const both = await Promise.all(workers.map((w, i) => w.send({ op: 'vote', id: twoOfTwo.id, vote: voteOf(`human:${i}`, at + 1), now: at + 1 })));
          assert.deepEqual(both.map((a) => `${a.outcome}/${a.state}/${a.votes}`).sort(), ['recorded/approved/2', 'recorded/pending/1'], JSON.stringify(both));
          const approved = await store.getApproval(twoOfTwo.id);
          assert.deepEqual([approved?.state, approved?.votes.length], ['approved', 2]);
        }
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }

      // In one process: five approvers on three-of-five.
      const threeOfFive = newApproval('apr_race_local', at, { taskId: 'task_apr_vote_race', resource: 'local', requiredApprovals: 3 });
      await store.openApproval(threeOfFive, at);
      const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => store.castApprovalVote(threeOfFive.id, voteOf(`human:local${i}`, at + 1), at + 1)));
      assert.deepEqual(answers.map((a) => a.outcome).sort(), ['closed', 'closed', 'recorded', 'recorded', 'recorded']);
      assert.equal(answers.filter((a) => a.outcome === 'recorded' && a.approval.state === 'approved').length, 1, 'exactly one vote decides');
      const decided = await store.getApproval(threeOfFive.id);
      assert.deepEqual([decided?.state, decided?.votes.length], ['approved', 3]);
    });

    maybe('an approval is consumed once: of many racing consumers, in one process and across processes, exactly one gets it', async () => {
      const at = Date.now();
      const request = newApproval('apr_consume_race', at, { taskId: 'task_apr_consume_race' });
      await store.openApproval(request, at);
      const yes = voteOf('human:alice', at + 1);
      await store.castApprovalVote(request.id, yes, at + 1);
      const got = await Promise.all(Array.from({ length: 20 }, () => store.consumeApproval(bindingOf(request), at + 2)));
      const winners = got.filter((a) => a !== undefined);
      assert.equal(winners.length, 1);
      assert.deepEqual(winners[0], { ...request, state: 'consumed', arguments: null, decidedAt: at + 1, consumedAt: at + 2, votes: [yes] });
      assert.deepEqual(await store.getApproval(request.id), winners[0]);

      const workers = await Promise.all([1, 2, 3].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        for (let round = 0; round < 3; round++) {
          const shared = newApproval(`apr_consume_xrace_${round}`, at, { taskId: 'task_apr_consume_race', resource: `x/${round}` });
          await store.openApproval(shared, at);
          await store.castApprovalVote(shared.id, yes, at + 1);
          const answers = await Promise.all(workers.map((w) => w.send({ op: 'consume', binding: bindingOf(shared), now: at + 2, n: 5 })));
          assert.deepEqual(answers.flatMap((a) => a.consumed ?? [a.error]), [shared.id], JSON.stringify(answers));
          assert.equal((await store.getApproval(shared.id))?.state, 'consumed');
        }
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    });

    maybe('an approval cannot be used for different arguments, another resource, before it is approved, after its time, or twice', async () => {
      const at = Date.now();
      const request = newApproval('apr_consume_bound', at, { taskId: 'task_apr_consume_bound', expiresAt: at + 100 });
      await store.openApproval(request, at);
      const binding = bindingOf(request);
      assert.equal(await store.consumeApproval(binding, at + 1), undefined, 'pending: not yet approved');
      await store.castApprovalVote(request.id, voteOf('human:alice', at + 1), at + 1);
      const others: Partial<ApprovalBinding>[] = [
        { argsDigest: DIGEST_B },
        { argsDigest: null },
        { resource: 'payments:refunds/R-2' },
        { resource: 'payments:refunds/*' },
        { action: 'refund.bulk' },
        { identityId: 'spiffe://demo.local/agent/b' },
        { taskId: 'task_other' },
        { stage: 'grant' },
      ];
      for (const other of others) assert.equal(await store.consumeApproval({ ...binding, ...other }, at + 2), undefined, JSON.stringify(other));
      assert.equal(await store.consumeApproval(binding, at + 100), undefined, 'its time ran out');
      assert.equal((await store.getApproval(request.id))?.state, 'approved', 'the refusals changed nothing');
      assert.equal((await store.consumeApproval(binding, at + 99))?.id, request.id);
      assert.equal(await store.consumeApproval(binding, at + 99), undefined, 'single use');

      const grant = newApproval('apr_consume_grant', at, { taskId: 'task_apr_consume_bound', stage: 'grant', argsDigest: null, arguments: null });
      await store.openApproval(grant, at);
      await store.castApprovalVote(grant.id, voteOf('human:alice', at + 1), at + 1);
      assert.equal(await store.consumeApproval({ ...bindingOf(grant), argsDigest: DIGEST_A }, at + 2), undefined);
      assert.equal((await store.consumeApproval(bindingOf(grant), at + 2))?.id, grant.id, 'a grant-stage approval binds no digest');
    });

    maybe('closeApproval moves a request only from the states named, once, and erases its arguments', async () => {
      const at = Date.now();
      const request = newApproval('apr_close', at, { taskId: 'task_apr_close' });
      await store.openApproval(request, at);
      assert.equal(await store.closeApproval(request.id, ['approved'], 'expired', at + 1), undefined, 'wrong from-state changes nothing');
      assert.equal(await store.closeApproval(request.id, [], 'cancelled', at + 1), undefined);
      assert.deepEqual(await store.getApproval(request.id), { ...request, state: 'pending', decidedAt: null, consumedAt: null, votes: [] });
      const cancelled = await store.closeApproval(request.id, ['pending'], 'cancelled', at + 2);
      assert.deepEqual(cancelled, { ...request, state: 'cancelled', arguments: null, decidedAt: at + 2, consumedAt: null, votes: [] });
      assert.equal(await store.closeApproval(request.id, ['pending'], 'cancelled', at + 3), undefined, 'once');
      assert.equal(await store.closeApproval('apr_missing', ['pending'], 'cancelled', at + 3), undefined);

      const approved = newApproval('apr_close_approved', at, { taskId: 'task_apr_close', resource: 'payments:refunds/R-9' });
      await store.openApproval(approved, at);
      await store.castApprovalVote(approved.id, voteOf('human:alice', at + 1), at + 1);
      const racers = await Promise.all([
        store.closeApproval(approved.id, ['pending', 'approved'], 'cancelled', at + 2),
        store.closeApproval(approved.id, ['pending', 'approved'], 'expired', at + 2),
        store.consumeApproval(bindingOf(approved), at + 2),
      ]);
      assert.equal(racers.filter((r) => r !== undefined).length, 1, 'a close and a consume race: one wins');
      const after = await store.getApproval(approved.id);
      assert.deepEqual([after?.arguments, after?.votes.length], [null, 1]);
    });

    maybe('racing reapers expire each overdue request once, pending or approved, and leave the rest', async () => {
      const at = Date.now();
      const open = async (id: string, overrides: Partial<NewApprovalRequest>) => {
        const request = newApproval(id, at - 100, { taskId: 'task_apr_reap', resource: id, ...overrides });
        await store.openApproval(request, at - 100);
        return request;
      };
      const overdue = Array.from({ length: 12 }, (_, i) => `apr_reap_pending_${i}`);
      for (const id of overdue) await open(id, { expiresAt: at });
      const approved = Array.from({ length: 6 }, (_, i) => `apr_reap_approved_${i}`);
      for (const id of approved) {
        await open(id, { expiresAt: at - 1 });
        await store.castApprovalVote(id, voteOf('human:alice', at - 50), at - 50);
      }
      await open('apr_reap_consumed', { expiresAt: at - 1 });
      await store.castApprovalVote('apr_reap_consumed', voteOf('human:alice', at - 50), at - 50);
      await store.consumeApproval(bindingOf(newApproval('apr_reap_consumed', at - 100, { taskId: 'task_apr_reap', resource: 'apr_reap_consumed' })), at - 40);
      await open('apr_reap_denied', { expiresAt: at - 1 });
      await store.castApprovalVote('apr_reap_denied', voteOf('human:alice', at - 50, 'deny'), at - 50);
      await open('apr_reap_not_due', { expiresAt: at + 1 });

      const workers = await Promise.all([1, 2, 3].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        const answers = await Promise.all(workers.map((w) => w.send({ op: 'expireApprovals', now: at })));
        const all = answers.flatMap((a) => (a.expired ?? [a.error]) as string[]);
        assert.equal(new Set(all).size, all.length, `no request reported twice: ${JSON.stringify(answers)}`);
        assert.deepEqual(new Set(all.filter((id) => id.startsWith('apr_reap_'))), new Set([...overdue, ...approved]));
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
      const expired = await store.getApproval('apr_reap_approved_0');
      assert.deepEqual([expired?.state, expired?.arguments, expired?.decidedAt, expired?.votes.length], ['expired', null, at, 1]);
      assert.equal((await store.getApproval('apr_reap_consumed'))?.state, 'consumed');
      assert.equal((await store.getApproval('apr_reap_denied'))?.state, 'denied');
      assert.equal((await store.getApproval('apr_reap_not_due'))?.state, 'pending');
      assert.deepEqual(await store.expireApprovals(at), [], 'nothing left to expire');
    });

    maybe('approvals are listed newest first, with their votes, filtered by state and task, page by page', async () => {
      const at = Date.now();
      // Ids deliberately out of creation order: the listing follows time, not id.
      const order: [string, number][] = [['apr_list_3', 0], ['apr_list_1', 1], ['apr_list_4', 2], ['apr_list_0', 3], ['apr_list_2', 4], ['apr_list_5', 5], ['apr_list_6', 5]];
      for (const [id, offset] of order) await store.openApproval(newApproval(id, at + offset, { taskId: 'task_apr_list', resource: id }), at + offset);
      await store.openApproval(newApproval('apr_list_elsewhere', at + 9, { taskId: 'task_apr_list_other' }), at + 9);
      const yes = voteOf('human:alice', at + 6);
      await store.castApprovalVote('apr_list_4', yes, at + 6);
      const newestFirst = ['apr_list_6', 'apr_list_5', 'apr_list_2', 'apr_list_0', 'apr_list_4', 'apr_list_1', 'apr_list_3'];
      assert.deepEqual((await store.listApprovals({ taskId: 'task_apr_list', limit: 100 })).map((a) => a.id), newestFirst);
      const pages: string[][] = [];
      let beforeId: string | undefined;
      for (;;) {
        const page = await store.listApprovals({ taskId: 'task_apr_list', limit: 3, ...(beforeId === undefined ? {} : { beforeId }) });
        if (page.length === 0) break;
        pages.push(page.map((a) => a.id));
        beforeId = page.at(-1)!.id;
      }
      assert.deepEqual(pages, [newestFirst.slice(0, 3), newestFirst.slice(3, 6), newestFirst.slice(6)]);
      const approved = await store.listApprovals({ taskId: 'task_apr_list', states: ['approved'], limit: 100 });
      assert.deepEqual(approved.map((a) => [a.id, a.state, a.votes]), [['apr_list_4', 'approved', [yes]]]);
      assert.deepEqual(await store.listApprovals({ taskId: 'task_apr_list', states: [], limit: 100 }), [], 'no states, no requests');
      assert.deepEqual(await store.listApprovals({ taskId: 'task_apr_list', beforeId: 'apr_missing', limit: 100 }), [], 'an unknown cursor gives nothing');
      const everywhere = (await store.listApprovals({ states: ['pending'], limit: 10_000 })).map((a) => a.id);
      assert.ok(everywhere.includes('apr_list_elsewhere') && everywhere.includes('apr_list_6') && !everywhere.includes('apr_list_4'));
    });

    maybe('outbox: a message waits until claimed; a claim leases it and counts an attempt; a settled message is never claimed again', async () => {
      const at = Date.now();
      const messages = [newMessage('msg_1', at), newMessage('msg_2', at + 1), newMessage('msg_3', at + 2), newMessage('msg_4', at + 1000)];
      await store.enqueueMessages(messages);
      await store.enqueueMessages([]);
      assert.deepEqual(await store.getMessage('msg_1'), { ...messages[0], attempts: 0, nextAttemptAt: at, state: 'pending', lastError: null, settledAt: null });
      const claim = async (now: number, limit = 10) => (await store.claimMessages(now, limit, 1000)).map((m) => [m.id, m.attempts, m.nextAttemptAt]);
      assert.deepEqual(await claim(at + 10, 2), [['msg_1', 1, at + 1010], ['msg_2', 1, at + 1010]], 'oldest first, up to the limit');
      assert.deepEqual(await claim(at + 10), [['msg_3', 1, at + 1010]], 'a leased message is hidden; one not yet due waits');
      assert.deepEqual(await claim(at + 500), []);
      await store.settleMessage('msg_1', { state: 'delivered', at: at + 20 });
      assert.deepEqual(await store.getMessage('msg_1'), { ...messages[0], body: '', attempts: 1, nextAttemptAt: at + 1010, state: 'delivered', lastError: null, settledAt: at + 20 }, 'a delivered message keeps no body');
      await store.settleMessage('msg_2', { state: 'pending', nextAttemptAt: at + 2000, error: 'HTTP 503' });
      assert.deepEqual(await store.getMessage('msg_2'), { ...messages[1], attempts: 1, nextAttemptAt: at + 2000, state: 'pending', lastError: 'HTTP 503', settledAt: null });
      assert.deepEqual(await claim(at + 1010), [['msg_3', 2, at + 2010], ['msg_4', 1, at + 2010]], 'a lease that ran out frees the message; a retry waits for its time');
      await store.settleMessage('msg_3', { state: 'failed', at: at + 1020, error: 'gave up' });
      assert.deepEqual(await store.getMessage('msg_3'), { ...messages[2], body: '', attempts: 2, nextAttemptAt: at + 2010, state: 'failed', lastError: 'gave up', settledAt: at + 1020 }, 'nor does a failed one');
      assert.deepEqual(await claim(at + 5000), [['msg_2', 2, at + 6000], ['msg_4', 2, at + 6000]], 'delivered and failed messages are never claimed again');
      await store.settleMessage('msg_1', { state: 'failed', at: at + 5001, error: 'late' });
      assert.equal((await store.getMessage('msg_1'))?.state, 'delivered', 'a settled message stays settled');
      for (const id of ['msg_2', 'msg_4']) await store.settleMessage(id, { state: 'delivered', at: at + 5002 });
      assert.deepEqual(await claim(at + 100_000), []);
      assert.equal(await store.deleteSettledMessages(at + 1020), 2, 'settled by then: msg_1 and msg_3');
      assert.equal(await store.getMessage('msg_1'), undefined);
      assert.equal((await store.getMessage('msg_2'))?.state, 'delivered', 'settled later: kept');

      await assert.rejects(store.enqueueMessages([newMessage('msg_5', at), newMessage('msg_5', at)]), 'a duplicate id fails the batch');
      assert.equal(await store.getMessage('msg_5'), undefined, 'all or none');
      assert.equal(await store.getMessage('msg_missing'), undefined);
    });

    maybe('racing claimers get disjoint messages, in one process and across processes', async () => {
      const at = Date.now();
      const settleAll = async (ids: readonly string[]) => {
        for (const id of ids) await store.settleMessage(id, { state: 'delivered', at });
      };
      const local = Array.from({ length: 30 }, (_, i) => newMessage(`msg_race_${String(i).padStart(2, '0')}`, at + i));
      await store.enqueueMessages(local);
      const claims = await Promise.all(Array.from({ length: 10 }, () => store.claimMessages(at + 100, 5, 60_000)));
      const claimed = claims.flat().map((m) => m.id);
      assert.equal(new Set(claimed).size, claimed.length, 'no message claimed twice');
      const rest = (await store.claimMessages(at + 100, 100, 60_000)).map((m) => m.id);
      assert.deepEqual(new Set([...claimed, ...rest]), new Set(local.map((m) => m.id)));
      assert.equal(claimed.length + rest.length, local.length);
      await settleAll(local.map((m) => m.id));

      const shared = Array.from({ length: 30 }, (_, i) => newMessage(`msg_xrace_${String(i).padStart(2, '0')}`, at + i));
      await store.enqueueMessages(shared);
      const workers = await Promise.all([1, 2, 3].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        const answers = await Promise.all(workers.map((w) => w.send({ op: 'claim', now: at + 100, limit: 5, leaseMs: 60_000, n: 4 })));
        const all = answers.flatMap((a) => (a.claimed ?? [a.error]) as string[]);
        assert.equal(new Set(all).size, all.length, `no message claimed twice: ${JSON.stringify(answers)}`);
        const sweep = (await store.claimMessages(at + 100, 100, 60_000)).map((m) => m.id);
        assert.deepEqual(new Set([...all, ...sweep]), new Set(shared.map((m) => m.id)));
        assert.equal(all.length + sweep.length, shared.length);
        assert.ok(all.every((id) => id.startsWith('msg_xrace_')));
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
      await settleAll(shared.map((m) => m.id));
      for (const message of [...local, ...shared]) assert.equal((await store.getMessage(message.id))?.attempts, 1, `${message.id} claimed once`);
    });

    maybe('break-glass: a grant reads back exactly, by id and by its task; a task has at most one', async () => {
      const at = Date.now();
      const grant = newBreakGlass('bg_read', 'task_bg_read', at);
      await store.createBreakGlass(grant);
      assert.deepEqual(await store.getBreakGlass('bg_read'), runningGrant(grant));
      assert.deepEqual(await store.getBreakGlassOfTask('task_bg_read'), runningGrant(grant));
      assert.equal(await store.getBreakGlass('bg_missing'), undefined);
      assert.equal(await store.getBreakGlassOfTask('task_not_break_glass'), undefined);
      await assert.rejects(store.createBreakGlass({ ...grant, id: 'bg_read_again' }), 'a second grant for the same task');
      await assert.rejects(store.createBreakGlass({ ...grant, taskId: 'task_bg_read_other' }), 'a taken id');
      assert.equal(await store.getBreakGlass('bg_read_again'), undefined);
      assert.equal(await store.getBreakGlassOfTask('task_bg_read_other'), undefined);
      assert.deepEqual(await store.getBreakGlass('bg_read'), runningGrant(grant), 'the refusals changed nothing');
    });

    maybe('break-glass: what was used is kept once each, sorted by code unit; nothing is recorded for a task that is no grant', async () => {
      const at = Date.now();
      await store.createBreakGlass(newBreakGlass('bg_use', 'task_bg_use', at));
      await store.createBreakGlass(newBreakGlass('bg_use_other', 'task_bg_use_other', at));
      await store.recordBreakGlassUse('task_bg_use', ['write db:orders/1', 'secret:db-admin', 'write db:orders/1']);
      await store.recordBreakGlassUse('task_bg_use', ['secret:db-admin', 'read db:orders/2', 'secret:Zeta']);
      await store.recordBreakGlassUse('task_bg_use', []);
      // 'Z' before 'd' (code units), whatever the database's collation says.
      const used = ['read db:orders/2', 'secret:Zeta', 'secret:db-admin', 'write db:orders/1'];
      assert.deepEqual((await store.getBreakGlass('bg_use'))?.used, used);
      assert.deepEqual((await store.getBreakGlassOfTask('task_bg_use'))?.used, used);
      assert.deepEqual((await store.getBreakGlass('bg_use_other'))?.used, [], "another grant's uses are its own");

      await store.recordBreakGlassUse('task_bg_none', ['secret:bg-none-marker']);
      const { db } = store as unknown as { db: Kysely<Record<string, never>> };
      const { rows } = await sql<{ n: number | string }>`select count(*) as n from break_glass_uses where item = ${'secret:bg-none-marker'}`.execute(db);
      assert.equal(Number(rows[0]?.n), 0, 'a task that is no grant records nothing');
    });

    maybe('break-glass: racing recorders of overlapping uses, in one process and across processes, keep each item exactly once', async () => {
      const at = Date.now();
      const { db } = store as unknown as { db: Kysely<Record<string, never>> };
      const stored = async (id: string) => Number((await sql<{ n: number | string }>`select count(*) as n from break_glass_uses where break_glass_id = ${id}`.execute(db)).rows[0]?.n);
      const items = Array.from({ length: 12 }, (_, i) => `write db:orders/${String(i).padStart(2, '0')}`);

      await store.createBreakGlass(newBreakGlass('bg_use_race', 'task_bg_use_race', at));
      // Sixteen recorders, each a window of six items starting elsewhere: every item is in several, in different orders.
      await Promise.all(
        Array.from({ length: 16 }, (_, i) => store.recordBreakGlassUse('task_bg_use_race', Array.from({ length: 6 }, (_, j) => items[(i * 5 + j) % items.length]!).reverse())),
      );
      assert.deepEqual((await store.getBreakGlass('bg_use_race'))?.used, items);
      assert.equal(await stored('bg_use_race'), items.length);

      await store.createBreakGlass(newBreakGlass('bg_use_xrace', 'task_bg_use_xrace', at));
      const shared = [...items, 'secret:db-admin', 'secret:stripe'];
      const workers = await Promise.all([1, 2, 3].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        const answers = await Promise.all(workers.map((w) => w.send({ op: 'recordBreakGlassUse', taskId: 'task_bg_use_xrace', items: shared, n: 4 })));
        assert.deepEqual(answers, [{ recorded: true }, { recorded: true }, { recorded: true }], JSON.stringify(answers));
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
      assert.deepEqual((await store.getBreakGlass('bg_use_xrace'))?.used, [...shared].sort());
      assert.equal(await stored('bg_use_xrace'), shared.length);
    });

    maybe('break-glass: a grant ends once: of many racing enders, in one process and across processes, exactly one gets it, with what was used', async () => {
      const at = Date.now();
      const grant = newBreakGlass('bg_end', 'task_bg_end', at);
      await store.createBreakGlass(grant);
      await store.recordBreakGlassUse('task_bg_end', ['secret:db-admin']);
      const got = await Promise.all(Array.from({ length: 20 }, (_, i) => store.endBreakGlass('task_bg_end', i % 2 === 0 ? 'expired' : 'revoked', at + 10 + i)));
      const winners = got.filter((g) => g !== undefined);
      assert.equal(winners.length, 1);
      const winner = got.findIndex((g) => g !== undefined);
      const ended = { ...runningGrant(grant), endedAt: at + 10 + winner, endState: winner % 2 === 0 ? 'expired' : 'revoked', used: ['secret:db-admin'] };
      assert.deepEqual(winners[0], ended);
      assert.deepEqual(await store.getBreakGlass('bg_end'), ended);
      assert.equal(await store.endBreakGlass('task_bg_end', 'completed', at + 100), undefined, 'an ended grant stays ended');
      assert.deepEqual(await store.getBreakGlass('bg_end'), ended);
      assert.equal(await store.endBreakGlass('task_not_break_glass', 'completed', at), undefined);

      const workers = await Promise.all([1, 2, 3].map((i) => startWorker(env!.target, `w${i}`)));
      try {
        for (let round = 0; round < 3; round++) {
          const shared = newBreakGlass(`bg_end_xrace_${round}`, `task_bg_end_xrace_${round}`, at);
          await store.createBreakGlass(shared);
          await store.recordBreakGlassUse(shared.taskId, ['write db:orders/1']);
          const answers = await Promise.all(workers.map((w) => w.send({ op: 'endBreakGlass', taskId: shared.taskId, now: at + 10, n: 5 })));
          const all = answers.flatMap((a) => a.ended ?? [a.error]);
          assert.equal(all.length, 1, JSON.stringify(answers));
          const endedBy = answers.findIndex((a) => a.ended?.length === 1);
          assert.deepEqual(all[0], { id: shared.id, endState: `w${endedBy + 1}`, used: ['write db:orders/1'] });
          const stored = await store.getBreakGlass(shared.id);
          assert.deepEqual([stored?.endedAt, stored?.endState], [at + 10, `w${endedBy + 1}`]);
        }
      } finally {
        await Promise.all(workers.map((w) => w.close()));
      }
    });

    maybe('break-glass: a review is refused while the grant runs, taken once after it ends, and a second review is refused', async () => {
      const at = Date.now();
      const grant = newBreakGlass('bg_review', 'task_bg_review', at);
      await store.createBreakGlass(grant);
      const review = { by: 'human:bob@example.com', note: 'rotated db-admin; nothing else touched', at: at + 50 };
      assert.equal(await store.reviewBreakGlass('bg_review', review), undefined, 'still running');
      assert.deepEqual(await store.getBreakGlass('bg_review'), runningGrant(grant), 'the refusal changed nothing');
      await store.endBreakGlass('task_bg_review', 'completed', at + 20);
      const reviewed = await store.reviewBreakGlass('bg_review', review);
      const expected = { ...runningGrant(grant), endedAt: at + 20, endState: 'completed', reviewedAt: at + 50, reviewedBy: 'human:bob@example.com', reviewNote: review.note };
      assert.deepEqual(reviewed, expected);
      assert.equal(await store.reviewBreakGlass('bg_review', { by: 'human:mallory@example.com', note: 'nothing to see', at: at + 60 }), undefined, 'reviewed once');
      assert.deepEqual(await store.getBreakGlass('bg_review'), expected, 'the first review stands');
      assert.equal(await store.reviewBreakGlass('bg_missing', review), undefined);

      const racing = newBreakGlass('bg_review_race', 'task_bg_review_race', at);
      await store.createBreakGlass(racing);
      await store.endBreakGlass(racing.taskId, 'revoked', at + 20);
      const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => store.reviewBreakGlass(racing.id, { by: `human:r${i}`, note: `note ${i}`, at: at + 30 + i })));
      assert.equal(answers.filter((a) => a !== undefined).length, 1, 'of racing reviewers exactly one reviews');
      const by = answers.findIndex((a) => a !== undefined);
      const stored = await store.getBreakGlass(racing.id);
      assert.deepEqual([stored?.reviewedBy, stored?.reviewNote, stored?.reviewedAt], [`human:r${by}`, `note ${by}`, at + 30 + by]);
    });

    maybe('break-glass grants are listed newest first, with their uses, filtered by whether they were reviewed, page by page', async () => {
      // Far in the future, so these are the newest grants whatever else this suite stored.
      const base = 4_000_000_000_000;
      // Ids deliberately out of creation order: the listing follows time, then id.
      const order: [string, number][] = [['bg_list_3', 0], ['bg_list_1', 1], ['bg_list_4', 2], ['bg_list_0', 3], ['bg_list_2', 4], ['bg_list_5', 5], ['bg_list_6', 5]];
      for (const [id, offset] of order) await store.createBreakGlass(newBreakGlass(id, `task_${id}`, base + offset));
      for (const id of ['bg_list_4', 'bg_list_5']) {
        await store.endBreakGlass(`task_${id}`, 'expired', base + 10);
        await store.reviewBreakGlass(id, { by: 'human:bob@example.com', note: 'ok', at: base + 20 });
      }
      await store.endBreakGlass('task_bg_list_0', 'revoked', base + 10);
      await store.recordBreakGlassUse('task_bg_list_2', ['secret:db-admin']);
      const ids = (grants: readonly BreakGlass[]) => grants.map((g) => g.id);
      const mine = (grants: readonly BreakGlass[]) => ids(grants).filter((id) => id.startsWith('bg_list_'));

      const newestFirst = ['bg_list_6', 'bg_list_5', 'bg_list_2', 'bg_list_0', 'bg_list_4', 'bg_list_1', 'bg_list_3'];
      const all = await store.listBreakGlass({ limit: 10_000 });
      assert.deepEqual(ids(all).slice(0, 7), newestFirst);
      assert.deepEqual(mine(all), newestFirst);
      assert.deepEqual(all[2]?.used, ['secret:db-admin'], 'uses included');
      assert.deepEqual(ids(await store.listBreakGlass({ limit: 2 })), newestFirst.slice(0, 2));

      const reviewed = await store.listBreakGlass({ reviewed: true, limit: 10_000 });
      assert.deepEqual(mine(reviewed), ['bg_list_5', 'bg_list_4']);
      assert.ok(reviewed.every((g) => g.reviewedAt !== null));
      const owed = await store.listBreakGlass({ reviewed: false, limit: 10_000 });
      assert.deepEqual(mine(owed), ['bg_list_6', 'bg_list_2', 'bg_list_0', 'bg_list_1', 'bg_list_3'], 'ended and running ones alike');
      assert.ok(owed.every((g) => g.reviewedAt === null));
      assert.equal(reviewed.length + owed.length, all.length);

      const pageThrough = async (reviewed?: boolean) => {
        const pages: string[][] = [];
        let beforeId: string | undefined;
        for (;;) {
          const page = await store.listBreakGlass({ limit: 3, ...(reviewed === undefined ? {} : { reviewed }), ...(beforeId === undefined ? {} : { beforeId }) });
          if (page.length === 0) return pages;
          pages.push(ids(page));
          beforeId = page.at(-1)!.id;
        }
      };
      for (const [filter, whole] of [[undefined, all], [true, reviewed], [false, owed]] as const) {
        const pages = await pageThrough(filter);
        assert.deepEqual(pages.flat(), ids(whole), `paged like listed whole (reviewed: ${filter})`);
        assert.ok(pages.slice(0, -1).every((p) => p.length === 3));
      }
      assert.deepEqual((await pageThrough()).slice(0, 2), [newestFirst.slice(0, 3), newestFirst.slice(3, 6)]);
      assert.deepEqual(mine(await store.listBreakGlass({ reviewed: false, beforeId: 'bg_list_5', limit: 10_000 })), ['bg_list_2', 'bg_list_0', 'bg_list_1', 'bg_list_3'], 'a cursor of the other kind still marks a place');
      assert.deepEqual(await store.listBreakGlass({ beforeId: 'bg_missing', limit: 100 }), [], 'an unknown cursor gives nothing');
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

describe('the public revocation feed reads by index', () => {
  test('SQLite: ended, unexpired tasks are an index search, not a scan of every task that ever ended', async () => {
    const store = await openSqliteStore({ filename: ':memory:' });
    try {
      type Statement = { all(...params: unknown[]): { detail: string }[] };
      const database = (store as unknown as { sqlite: { prepare(sql: string): Statement } }).sqlite;
      // The SQL the store itself sends, caught on its way to better-sqlite3, then planned by SQLite.
      const asked: string[] = [];
      const prepare = database.prepare.bind(database);
      database.prepare = (text: string) => {
        asked.push(text);
        return prepare(text);
      };
      await store.listEndedUnexpiredTasks(0);
      database.prepare = prepare;
      const query = asked.find((text) => /from "tasks"/.test(text));
      assert.ok(query !== undefined, `the store read tasks (asked: ${JSON.stringify(asked)})`);
      const params = [...query.matchAll(/\?/g)].map((_, i, all) => (i === all.length - 1 ? 0 : 'completed'));
      const plan = prepare(`explain query plan ${query}`).all(...params).map((row) => row.detail);
      assert.deepEqual(plan, ['SEARCH tasks USING INDEX tasks_state_expires (state=? AND expires_at>?)']);
    } finally {
      await store.close();
    }
  });
});
