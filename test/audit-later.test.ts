/**
 * Records appended later (appendLater: how an allowed tool call went) are
 * group-committed within a bound, and never stand in for a decision: the
 * action check's record is committed before its allow is returned, so the
 * upstream a call goes to can already read it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client, StreamableHTTPClientTransport, type CallToolResult } from '@modelcontextprotocol/client';
import { createAuditLog, LATER_WITHIN_MS, verifyAuditChain, type AuditEvent, type AuditLog } from '../src/audit/log.js';
import { openSqliteStore } from '../src/store/kysely-store.js';
import type { Store } from '../src/store/store.js';
import { AGENT, startHarness, supportTask, type Harness } from './helpers/harness.js';

const event = (n: number): AuditEvent => ({ type: 'tool.call', decision: 'allow', reason: 'ok', data: { n } });
const types = async (store: Store) => (await store.readAudit(0, 10_000)).map((row) => JSON.parse(row.record) as { type: string; data?: { n?: number } });
/** Lets pending microtasks and I/O callbacks run (setImmediate is not mocked). */
const turn = () => new Promise((resolve) => setImmediate(resolve));

describe('audit records appended later', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'writ-audit-later-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const open = async (name: string) => {
    store = await openSqliteStore({ filename: join(dir, `${name}.db`) });
    return store;
  };

  test('the default bound is 50 ms, and a bound past a second is refused', async () => {
    assert.equal(LATER_WITHIN_MS, 50);
    const s = await open('bound');
    assert.throws(() => createAuditLog({ store: s, clock: { now: Date.now }, laterWithinMs: 5000 }), RangeError);
    await s.close();
  });

  test('a record appended later is committed once its bound has passed, with no flush, and not before', async (t) => {
    const s = await open('timer');
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const audit = createAuditLog({ store: s, clock: { now: Date.now }, laterWithinMs: 50 });
    let committed = false;
    const receipt = audit.appendLater(event(1)).then((r) => {
      committed = true;
      return r;
    });
    t.mock.timers.tick(49);
    await turn();
    assert.equal(committed, false);
    assert.deepEqual(await types(s), [], 'nothing is written before the bound');
    t.mock.timers.tick(1);
    const { seq } = await receipt;
    assert.equal(seq, 1);
    assert.deepEqual((await types(s)).map((r) => r.data?.n), [1], 'committed at the bound');
    t.mock.timers.reset();
    await s.close();
  });

  test('records appended later share one commit, keep their order, and the chain verifies', async (t) => {
    const s = await open('group');
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const audit = createAuditLog({ store: s, clock: { now: Date.now }, laterWithinMs: 50 });
    const receipts = [1, 2, 3, 4, 5].map((n) => audit.appendLater(event(n)));
    t.mock.timers.tick(50);
    const seqs = (await Promise.all(receipts)).map((r) => r.seq);
    assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
    assert.deepEqual((await types(s)).map((r) => r.data?.n), [1, 2, 3, 4, 5]);
    assert.deepEqual(await verifyAuditChain(s), { ok: true, records: 5, headHash: (await s.auditHead())?.hash });
    t.mock.timers.reset();
    await s.close();
  });

  test('a decision appended meanwhile is committed at once, ahead of records still waiting', async (t) => {
    const s = await open('order');
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const audit = createAuditLog({ store: s, clock: { now: Date.now }, laterWithinMs: 50 });
    const later = audit.appendLater(event(1));
    const decision = await audit.append({ type: 'action.check', decision: 'allow' });
    assert.equal(decision.seq, 1, 'the decision did not wait for the timer');
    assert.deepEqual((await types(s)).map((r) => r.type), ['action.check']);
    t.mock.timers.tick(50);
    assert.equal((await later).seq, 2);
    t.mock.timers.reset();
    await s.close();
  });

  test('flush() (and so close) commits records appended later at once', async () => {
    const s = await open('flush');
    const audit: AuditLog = createAuditLog({ store: s, clock: { now: Date.now }, laterWithinMs: 1000 });
    const receipt = audit.appendLater(event(7));
    await audit.flush();
    assert.deepEqual((await types(s)).map((r) => r.data?.n), [7]);
    assert.equal((await receipt).seq, 1);
    await s.close();
  });

  test('500 records waiting are committed without waiting for the bound', async (t) => {
    const s = await open('full');
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const audit = createAuditLog({ store: s, clock: { now: Date.now }, laterWithinMs: 1000 });
    const receipts = Array.from({ length: 500 }, (_, i) => audit.appendLater(event(i)));
    const last = await receipts[499];
    assert.equal(last?.seq, 500);
    assert.equal((await types(s)).length, 500);
    t.mock.timers.reset();
    await s.close();
  });

  test('a failed commit rejects every record of the batch with ERR_AUDIT_UNAVAILABLE', async () => {
    const s = await open('failed');
    const audit = createAuditLog({ store: s, clock: { now: Date.now }, laterWithinMs: 1000 });
    await s.close();
    const receipt = audit.appendLater(event(1));
    await audit.flush();
    await assert.rejects(receipt, (error: unknown) => (error as { code?: string }).code === 'ERR_AUDIT_UNAVAILABLE');
  });
});

// An upstream that, when called, reads Writ's database (another process, as an
// auditor would) and says whether the decision allowing this very call is there.
const WITNESS = `
import { readFileSync } from 'node:fs';
import Database from ${JSON.stringify(import.meta.resolve('better-sqlite3'))};
import { McpServer } from ${JSON.stringify(import.meta.resolve('@modelcontextprotocol/server'))};
import { StdioServerTransport } from ${JSON.stringify(import.meta.resolve('@modelcontextprotocol/server/stdio'))};
import { z } from ${JSON.stringify(import.meta.resolve('zod'))};
// Where Writ's database is, written once Writ is up (it makes its own data directory).
let rows;
const read = () => {
  rows ??= new Database(readFileSync(process.argv[2], 'utf8'), { readonly: true, fileMustExist: true }).prepare("select record from audit_records where type in ('action.check', 'tool.call') order by seq desc limit 200");
  return rows.all();
};
const server = new McpServer({ name: 'witness', version: '1.0.0' });
server.registerTool('look', { inputSchema: z.object({ nonce: z.string() }), annotations: { readOnlyHint: true, openWorldHint: false } }, async ({ nonce }) => {
  const records = read().map((r) => JSON.parse(r.record)).filter((r) => r.resource === 'tickets:' + nonce);
  const seen = { decisions: records.filter((r) => r.type === 'action.check' && r.decision === 'allow').length, calls: records.filter((r) => r.type === 'tool.call').length };
  return { content: [{ type: 'text', text: JSON.stringify(seen) }], structuredContent: seen };
});
await server.connect(new StdioServerTransport());
`;

describe('the MCP gateway: decisions before calls, call records later', () => {
  let h: Harness;
  let client: Client;
  let scripts: string;
  before(async () => {
    scripts = mkdtempSync(join(tmpdir(), 'writ-witness-'));
    const script = join(scripts, 'witness.mjs');
    const pointer = join(scripts, 'database');
    writeFileSync(script, WITNESS);
    h = await startHarness({
      config: { gateway: { upstreams: [{ name: 'witness', command: process.execPath, args: [script, pointer], tools: { look: { resource: 'tickets:{nonce}' } } }] } },
    });
    writeFileSync(pointer, join(h.dataDir, 'writ.db'));
    await h.registerAgent();
    const answer = await h.post('/v1/tasks', supportTask({ scopes: [{ action: 'read', resource: 'tickets:*' }] }), await h.identityToken(AGENT));
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    client = new Client({ name: 'test-agent', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${h.url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${answer.body.token}` } } }));
  });
  after(async () => {
    await client?.close();
    await h?.close();
    rmSync(scripts, { recursive: true, force: true });
  });

  test('the upstream can already read the action.check record that allowed its call; the tool.call record follows within the bound, unflushed', async () => {
    for (let i = 0; i < 5; i++) {
      const nonce = `W-${process.pid}-${i}`;
      const result = (await client.callTool({ name: 'witness__look', arguments: { nonce } })) as CallToolResult;
      assert.notEqual(result.isError, true, JSON.stringify(result.content));
      assert.deepEqual(result.structuredContent, { decisions: 1, calls: 0 }, 'the decision is committed before the call goes upstream; the call record is not');
      const until = Date.now() + 2000;
      for (;;) {
        // Read straight from the store: no flush.
        const rows = (await h.auditRows()).map((row) => JSON.parse(row.record) as { type: string; resource?: string; data?: { status?: string } });
        const call = rows.find((r) => r.type === 'tool.call' && r.resource === `tickets:${nonce}`);
        if (call !== undefined) {
          assert.equal(call.data?.status, 'ok');
          break;
        }
        assert.ok(Date.now() < until, 'the tool.call record landed without a flush');
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  });
});
