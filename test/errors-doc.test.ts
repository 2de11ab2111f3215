/** docs/errors.md lists exactly the codes the code can return, with the same status and title. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { errorCatalog, toProblem, WritError, type WritErrorCode } from '../src/core/errors.js';

const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');

test('docs/errors.md has one row per error code, with its status, title and description', () => {
  const rows = [...doc.matchAll(/^\| `(ERR_[A-Z_]+)` \| (\d{3}) \| ([^|]+) \| ([^|]+) \|$/gm)].map((m) => ({
    code: m[1]!,
    status: Number(m[2]),
    title: m[3]!.trim(),
    description: m[4]!.trim(),
  }));
  const expected = Object.entries(errorCatalog).map(([code, spec]) => ({ code, status: spec.status, title: spec.title, description: spec.description }));
  assert.deepEqual(rows, expected);
});

test('a problem never carries the operator-only reason', () => {
  for (const code of Object.keys(errorCatalog) as WritErrorCode[]) {
    const problem = toProblem(new WritError(code, { internal: 'kid abc did not verify' }), 'corr-1');
    assert.equal(problem.code, code);
    assert.equal(problem.status, errorCatalog[code].status);
    assert.ok(!JSON.stringify(problem).includes('kid abc'), code);
  }
  const unexpected = toProblem(new Error('database password is hunter2'));
  assert.equal(unexpected.code, 'ERR_INTERNAL');
  assert.ok(!JSON.stringify(unexpected).includes('hunter2'));
});
