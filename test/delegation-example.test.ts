/**
 * The delegation example (`npm run example:delegation`) runs from a clean data
 * folder and tells the story the README and docs/delegation.md promise.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runExample } from './helpers/cli.js';

/** The value `show()` printed for `label` in the section starting `section.` (the example's step number). */
function shown(out: string, section: number, label: string): string {
  const start = out.indexOf(`\n${section}. `);
  assert.ok(start >= 0, `step ${section} is printed`);
  const end = out.indexOf(`\n${section + 1}. `, start);
  const match = new RegExp(`^  ${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s+(.*)$`, 'm').exec(out.slice(start, end < 0 ? undefined : end));
  assert.ok(match, `step ${section} shows ${label}`);
  return match[1] as string;
}

test('npm run example:delegation: a read-only slice handed to a worker, seen and used through the gateway, escalations refused, ended with the planner, chain OK', async () => {
  const { code, out, err } = await runExample('delegation');
  assert.equal(code, 0, err);

  const plannerTask = shown(out, 2, 'task');
  assert.match(plannerTask, /^task_[A-Za-z0-9_-]{22}$/);
  assert.equal(shown(out, 2, 'status'), 'granted');

  // The worker's actor token is made for the exchange alone (its everyday identity token is refused there).
  assert.equal(shown(out, 3, 'aud'), '["writ-token-exchange"]');
  // The child token: acting for the planner's run, by the worker, one level down, the slice alone, within the planner's time.
  assert.equal(shown(out, 3, 'sub'), 'spiffe://demo.local/agent/planner');
  assert.equal(shown(out, 3, 'act'), '{"sub":"spiffe://demo.local/agent/worker"}');
  assert.equal(shown(out, 3, 'task.lineage'), JSON.stringify([plannerTask]));
  assert.equal(shown(out, 3, 'txn'), plannerTask);
  assert.match(out, /^ {2}scope\s+read:tickets:T-1042$/m);
  const exp = /^ {2}exp\s+(\S+) \(the planner's: (\S+)\)$/m.exec(out);
  assert.ok(exp, 'the child\'s expiry is shown beside the planner\'s');
  assert.ok(Date.parse(exp[1] as string) <= Date.parse(exp[2] as string), 'the child never outlives its planner');

  // The worker sees its slice only: the read tool, no write, and no request_access (a task token cannot ask for more).
  const tools = JSON.parse(shown(out, 4, 'tools')) as string[];
  assert.deepEqual(tools.filter((name) => name.includes('__')), ['tickets__get_ticket']);
  assert.ok(!tools.includes('request_access'), tools.join(','));
  assert.equal(shown(out, 4, 'tickets__get_ticket'), 'Refund for a damaged parcel');
  assert.match(shown(out, 4, 'answer'), /^Writ refused this call \(ERR_SCOPE_NOT_GRANTED\)/);

  // Escalations: more than the worker holds, and a write the planner holds but policy keeps.
  assert.match(out, /HTTP 403 ERR_SCOPE_EXCEEDS_PARENT \(OAuth error invalid_scope\): .*write:tickets:T-1042/);
  assert.match(out, /HTTP 403 ERR_POLICY_DENIED \(OAuth error invalid_scope\): policy does not let spiffe:\/\/demo\.local\/agent\/planner delegate/);

  // The cascade: the planner completes, and the worker is told, refused, and its task revoked naming the parent.
  assert.equal(shown(out, 6, 'planner task'), 'completed');
  assert.match(out, /tools\/list refused: HTTP 401 ERR_UNAUTHENTICATED/, 'the worker is told its tools changed, and can list none');
  assert.match(out, /Worker: reads the ticket again\n {2}answer\s+HTTP 401 ERR_UNAUTHENTICATED\n/);
  assert.equal(shown(out, 6, 'state'), 'revoked');
  assert.equal(shown(out, 6, 'endReason'), `revoked: ${plannerTask}, which it was delegated from, ended`);

  assert.match(out, /audit chain OK/);
  assert.doesNotMatch(out, /sk_live_tickets_example_key/, 'the upstream key never shows');
  assert.doesNotMatch(out, /eyJ[A-Za-z0-9_-]{10,}/, 'no token is printed');
});
