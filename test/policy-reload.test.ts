/**
 * Hot reload: a valid policy set replaces the one deciding at once; an invalid
 * one is refused and the old one keeps serving; both are on the record.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { PACKAGE_ROOT } from '../src/core/config.js';
import { startHarness, supportTask, type Harness } from './helpers/harness.js';

// At the call only: a forbid that also held at the grant stage would narrow the
// task's grant on reload (drift, test/policy-drift.test.ts), and a narrowed grant
// never widens back. These tests are about the next call's decision.
const FORBID_TICKET_WRITES = `@id("freeze-tickets")
forbid (principal, action in Writ::Action::"write", resource) when { context.stage == "call" && resource.kind == "tickets" };
`;

let h: Harness;
let dir: string;
let token: string;
let admin: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'writ-reload-'));
  cpSync(join(PACKAGE_ROOT, 'policies'), dir, { recursive: true });
  h = await startHarness({ config: { policy: { dir } } });
  await h.registerAgent();
  token = (await h.post('/v1/tasks', supportTask(), await h.identityToken())).body.token;
  admin = await h.adminToken(['policy:write']);
});
after(async () => {
  await h.close();
  rmSync(dir, { recursive: true, force: true });
});

const writeTicket = () => h.post('/v1/authorize', { token, action: 'write', resource: 'tickets:T-1042' });

describe('policy reload', () => {
  test('a reload with nothing changed keeps the version', async () => {
    const answer = await h.post('/v1/admin/policy/reload', {}, admin);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.changed, false);
    assert.equal(answer.body.version, h.writ.policy().version);
  });

  test('a valid change decides the very next call, and is on the record with both versions', async () => {
    assert.equal((await writeTicket()).body.allowed, true);
    const before = h.writ.policy().version;
    writeFileSync(join(dir, 'freeze.cedar'), FORBID_TICKET_WRITES);
    const answer = await h.post('/v1/admin/policy/reload', {}, admin);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.deepEqual([answer.body.changed, answer.body.previous], [true, before]);
    assert.notEqual(answer.body.version, before);
    const denied = await writeTicket();
    assert.deepEqual([denied.body.allowed, denied.body.reason, denied.body.policies, denied.body.policyVersion], [false, 'ERR_POLICY_DENIED', ['freeze-tickets'], answer.body.version]);
    const record = (await h.auditRecords()).filter((r) => r.type === 'policy.reloaded').at(-1);
    assert.equal(record?.policyVersion, answer.body.version);
    assert.equal((record?.data as { previous?: string })?.previous, before);
    rmSync(join(dir, 'freeze.cedar'));
    assert.equal((await h.post('/v1/admin/policy/reload', {}, admin)).body.changed, true);
    assert.equal((await writeTicket()).body.allowed, true, 'and back');
  });

  test('an invalid set is refused with file and line, the old set keeps deciding, and the refusal is on the record', async () => {
    const serving = h.writ.policy().version;
    writeFileSync(join(dir, 'broken.cedar'), '@id("broken")\npermit (principal, action, resource) when { context.nope.nope };\nthis is not cedar\n');
    try {
      const answer = await h.post('/v1/admin/policy/reload', {}, admin);
      assert.equal(answer.status, 422);
      assert.equal(answer.body.code, 'ERR_POLICY_INVALID');
      assert.equal(answer.body.version, serving);
      assert.ok(answer.body.problems.some((p: { file: string; line?: number }) => p.file.endsWith('broken.cedar') && typeof p.line === 'number'), JSON.stringify(answer.body.problems));
      assert.equal(h.writ.policy().version, serving);
      assert.equal((await writeTicket()).body.allowed, true, 'decisions still come from the old set');
      const record = (await h.auditRecords()).filter((r) => r.type === 'policy.reload_refused').at(-1);
      assert.equal(record?.reason, 'ERR_POLICY_INVALID');
      assert.equal(record?.policyVersion, serving);
    } finally {
      rmSync(join(dir, 'broken.cedar'));
    }
  });

  test('reloading needs the policy:write admin scope', async () => {
    const reader = await h.adminToken(['identities:read']);
    assert.equal((await h.post('/v1/admin/policy/reload', {}, reader)).status, 403);
    assert.equal((await h.post('/v1/admin/policy/reload', {})).status, 401);
  });

  test('with the background work started, a change on disk is picked up without a call', async () => {
    h.writ.startReaper();
    const before = h.writ.policy().version;
    writeFileSync(join(dir, 'freeze.cedar'), FORBID_TICKET_WRITES);
    try {
      const deadline = Date.now() + 10_000;
      while (h.writ.policy().version === before && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      assert.notEqual(h.writ.policy().version, before, 'the file change was reloaded');
      assert.equal((await writeTicket()).body.reason, 'ERR_POLICY_DENIED');
    } finally {
      rmSync(join(dir, 'freeze.cedar'));
    }
  });

  test('a change inside an environment folder is picked up too (the folder is watched recursively)', async () => {
    h.writ.startReaper();
    // Let the previous test's removal settle into its own reload first.
    await waitFor(async () => (await writeTicket()).body.allowed === true);
    const before = h.writ.policy().version;
    const file = join(dir, 'environments', 'production', 'freeze.cedar');
    writeFileSync(file, FORBID_TICKET_WRITES);
    try {
      await waitFor(async () => h.writ.policy().version !== before);
      assert.equal(h.writ.policy().set.policies.get('freeze-tickets')?.environment, 'production');
      assert.equal((await writeTicket()).body.reason, 'ERR_POLICY_DENIED');
    } finally {
      rmSync(file);
    }
  });
});

async function waitFor(condition: () => Promise<boolean> | boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
