/**
 * The in-memory revocation list forgets a task only once its token can no
 * longer pass on its own (expiry plus clock skew); forgetting earlier would
 * let a revoked token through.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRevocationList } from '../src/enforce/revocation-list.js';
import { createEventBus } from '../src/events/bus.js';

test('a revoked task stays revoked until its token is past expiry plus skew, and only then is forgotten', () => {
  const bus = createEventBus();
  const list = createRevocationList({ bus, clockSkewMs: 30_000 });
  const expiresAt = 1_000_000;
  bus.publish({ type: 'task.ended', taskId: 'task_a', state: 'revoked', expiresAt });
  assert.equal(list.isRevoked('task_a'), true, 'a published end revokes at once');
  list.prune(expiresAt);
  list.prune(expiresAt + 30_000);
  assert.equal(list.isRevoked('task_a'), true, 'still inside exp + skew, where the token itself would pass');
  list.prune(expiresAt + 30_001);
  assert.equal(list.isRevoked('task_a'), false);
  assert.equal(list.size, 0);
});

test('pruning one task never forgets another that can still pass', () => {
  const bus = createEventBus();
  const list = createRevocationList({ bus, clockSkewMs: 0 });
  list.add('task_old', 100);
  list.add('task_new', 10_000);
  list.prune(5_000);
  assert.equal(list.isRevoked('task_old'), false);
  assert.equal(list.isRevoked('task_new'), true);
});
