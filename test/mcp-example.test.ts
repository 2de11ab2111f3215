/**
 * The MCP gateway example (`npm run example:mcp`) runs from a clean data folder
 * and tells the story the README promises.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runExample } from './helpers/cli.js';

test('npm run example:mcp: tools listed, access partly granted, export denied, a refund held until writ approvals approve, then once only, task completed, chain OK', async () => {
  const { code, out, err } = await runExample('mcp-gateway');
  assert.equal(code, 0, err);
  assert.match(out, /tools\s+\["request_access"\]/);
  assert.match(out, /decision\s+partial/);
  assert.match(out, /refused\s+\["tickets__export_customer_data","tickets__rotate_api_keys"\]/);
  assert.match(out, /Writ refused this call \(ERR_SCOPE_NOT_GRANTED\)/);
  assert.match(out, /Amount|amountCents/);
  assert.match(out, /Arguments\s+\{"amountCents":25000,"ticketId":"T-1042"\}/, 'the approver reads the exact arguments');
  assert.match(out, /apr_[A-Za-z0-9_-]{22} is approved \(1 of 1 approvals\)/);
  assert.match(out, /"refunded":25000/);
  assert.match(out, /needs a human's approval of exactly this call \(approval request apr_/, 'the same refund again asks anew');
  assert.match(out, /"state":"completed"/);
  assert.match(out, /audit chain OK/);
  assert.doesNotMatch(out, /sk_live_tickets_example_key/, 'the upstream key never shows');
});
