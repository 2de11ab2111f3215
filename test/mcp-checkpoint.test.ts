/**
 * The gateway's `checkpoint` meta-tool with the official MCP SDK client, on a
 * manual clock, in front of the example tickets server: a connection renews
 * its task only at a checkpoint the agent marks and only in the last third of
 * its token's life; once renewed, every later call is checked with the new
 * token (the old one is refused everywhere), whether the connection got its
 * task in the session or presented the token itself, on either protocol era.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client, StreamableHTTPClientTransport, type CallToolResult } from '@modelcontextprotocol/client';
import { createManualClock } from '../src/core/clock.js';
import { PACKAGE_ROOT } from '../src/core/config.js';
import { renewalDue } from '../src/gateway/mcp/gateway.js';
import { startHarness, supportTask, type Harness } from './helpers/harness.js';

const TICKETS_SERVER = join(PACKAGE_ROOT, 'examples', 'mcp-gateway', 'tickets-server.mjs');
const ticketsUpstream = {
  name: 'tickets',
  command: process.execPath,
  args: [TICKETS_SERVER],
  inject: [{ secret: 'tickets-api-key', env: 'TICKETS_API_KEY' }],
  tools: { get_ticket: { resource: 'tickets:{ticketId}' }, list_tickets: { resource: 'tickets:list' }, add_comment: { resource: 'tickets:{ticketId}' } },
};
const STATELESS = { versionNegotiation: { mode: { pin: '2026-07-28' } } } as const;

const names = (tools: readonly { name: string }[]) => tools.map((t) => t.name).sort();
const structured = (result: unknown) => (result as CallToolResult).structuredContent as Record<string, any>;
const textOf = (result: unknown) => ((result as CallToolResult).content[0] as { text: string }).text;

/** An MCP client whose bearer credential is whatever `bearer()` says at each request (a fresh identity token, a renewed task token). */
async function connect(h: Harness, bearer: () => string, options: ConstructorParameters<typeof Client>[1] = {}): Promise<Client> {
  const client = new Client({ name: 'checkpoint-agent', version: '1.0.0' }, options);
  const transport = new StreamableHTTPClientTransport(new URL(`${h.url}/mcp`), {
    fetch: (url, init) => fetch(url, { ...init, headers: { ...Object.fromEntries(new Headers(init?.headers).entries()), authorization: `Bearer ${bearer()}` } }),
  });
  await client.connect(transport);
  return client;
}

describe('MCP gateway: checkpoint', () => {
  let h: Harness;
  const clock = createManualClock(Date.parse('2026-11-24T10:00:00Z'));
  before(async () => {
    // Tasks may live 15 minutes in all, so a few renewals reach the limit.
    h = await startHarness({ clock, config: { gateway: { upstreams: [ticketsUpstream] }, tokens: { maxLifetime: 900 } } });
    await h.writ.vault.put('tickets-api-key', 'sk_test_tickets_9f8e7d6c5b4a', { id: 'test' });
    await h.registerAgent();
  });
  after(() => h.close());

  /** A task token for the support agent (ttl 300 s), as a client would present it. */
  const taskToken = async (scopes = [{ action: 'read', resource: 'tickets:*' }]) => {
    const answer = await h.post('/v1/tasks', supportTask({ scopes }), await h.identityToken());
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    return { token: answer.body.token as string, taskId: answer.body.task.id as string };
  };
  /** A session on an identity token that asks for access to get_ticket (ttl 300 s); `refresh()` gives it a fresh identity token. */
  const sessionWithTask = async () => {
    let bearer = await h.identityToken();
    const client = await connect(h, () => bearer);
    const granted = await client.callTool({ name: 'request_access', arguments: { purpose: 'Answer ticket T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'] } });
    assert.equal(structured(granted).status, 'granted', textOf(granted));
    return { client, taskId: structured(granted).taskId as string, refresh: async () => void (bearer = await h.identityToken()) };
  };
  const checkpoint = (client: Client, note: string, ttl?: string) => client.callTool({ name: 'checkpoint', arguments: { note, ...(ttl === undefined ? {} : { ttl }) } });
  const getTicket = (client: Client) => client.callTool({ name: 'tickets__get_ticket', arguments: { ticketId: 'T-1042' } });
  const renewalsOf = async (taskId: string) => (await h.auditRecords()).filter((r) => r.type === 'task.renewed' && (r.task as { id: string }).id === taskId);

  test('the rule: a token is renewed in the last third of its life, not before', () => {
    const token = { issuedAt: 0, expiresAt: 300_000 };
    assert.equal(renewalDue(token, 199_999), false);
    assert.equal(renewalDue(token, 200_001), true);
    assert.equal(renewalDue(token, 400_000), true, 'an expired one is due (and refused when asked)');
  });

  test('checkpoint is offered beside task_status and complete_task, to a connection that holds a task', async () => {
    const bearer = await h.identityToken();
    const client = await connect(h, () => bearer);
    try {
      assert.deepEqual(names((await client.listTools()).tools), ['request_access']);
      const refused = await checkpoint(client, 'nothing yet');
      assert.equal(structured(refused).code, 'ERR_TASK_NOT_FOUND');
      await client.callTool({ name: 'request_access', arguments: { purpose: 'Answer ticket T-1042', intent: 'customer-support', tools: ['tickets__get_ticket'] } });
      assert.deepEqual(names((await client.listTools()).tools), ['checkpoint', 'complete_task', 'task_status', 'tickets__get_ticket', 'tickets__list_tickets']);
      const tool = (await client.listTools()).tools.find((t) => t.name === 'checkpoint');
      assert.deepEqual(tool?.inputSchema.required, ['note']);
    } finally {
      await client.close();
    }
  });

  test('far from expiry, a checkpoint renews nothing and says until when the access runs; nothing on the record', async () => {
    const { client, taskId } = await sessionWithTask();
    try {
      clock.advance(60_000);
      const answer = await checkpoint(client, 'read the ticket');
      assert.equal(answer.isError, undefined, textOf(answer));
      const task = await h.writ.store.getTask(taskId);
      assert.deepEqual(structured(answer), { renewed: false, reason: 'not_due', taskId, expiresAt: new Date(task?.expiresAt ?? 0).toISOString(), expiresIn: 240, dueIn: 140 });
      assert.match(textOf(answer), /No renewal needed/);
      assert.deepEqual(await renewalsOf(taskId), []);
      assert.equal((await h.writ.store.getTask(taskId))?.renewals, 0);
    } finally {
      await client.close();
    }
  });

  test('in the last third, a checkpoint renews the task and later calls go through with the new token, past the old one\'s expiry too', async () => {
    const { client, taskId, refresh } = await sessionWithTask();
    try {
      assert.equal((await getTicket(client)).isError, undefined);
      const before = await h.writ.store.getTask(taskId);
      clock.advance(210_000);
      await refresh();
      const answer = await checkpoint(client, 'stage 1 of 3 done: ticket read');
      assert.equal(answer.isError, undefined, textOf(answer));
      assert.equal(structured(answer).renewed, true);
      assert.equal(structured(answer).expiresIn, 300);
      assert.equal(answer._meta?.['dev.writ/taskToken'], undefined, 'a task granted in the session: its token never leaves Writ');
      const after = await h.writ.store.getTask(taskId);
      assert.notEqual(after?.tokenId, before?.tokenId, 'a new token');
      assert.equal(h.writ.revocations.isSuperseded(before?.tokenId ?? ''), true, 'the old one is refused from now on');

      const records = await renewalsOf(taskId);
      assert.equal(records.length, 1, 'one task.renewed record, the broker\'s');
      assert.equal((records[0]?.data as { checkpoint: string }).checkpoint, 'stage 1 of 3 done: ticket read');
      const toolRecords = (await h.auditRecords()).filter((r) => r.type === 'tool.call' && (r.task as { id: string } | undefined)?.id === taskId && (r.data as { tool?: string }).tool === 'checkpoint');
      assert.deepEqual(toolRecords, [], 'the gateway adds no record of its own for a renewal');

      // The old token is refused by the action check; the connection's calls still pass, so they use the new one.
      const ticket = await getTicket(client);
      assert.equal(ticket.isError, undefined, textOf(ticket));
      clock.advance(120_000); // 330 s: the first token would have expired
      await refresh();
      const later = await getTicket(client);
      assert.equal(later.isError, undefined, textOf(later));
      assert.equal(JSON.parse(textOf(later)).id, 'T-1042');
      const status = await client.callTool({ name: 'task_status', arguments: {} });
      assert.equal(structured(status).expiresAt, new Date(after?.expiresAt ?? 0).toISOString());
    } finally {
      await client.close();
    }
  });

  test('a task token the client presented: the renewal hands the new one back in _meta (never in the content), and the session goes on with it', async () => {
    const { token, taskId } = await taskToken();
    let bearer = token;
    const client = await connect(h, () => bearer);
    try {
      clock.advance(210_000);
      const answer = await checkpoint(client, 'half done');
      assert.equal(structured(answer).renewed, true, textOf(answer));
      const handed = answer._meta?.['dev.writ/taskToken'];
      assert.equal(typeof handed, 'string');
      assert.notEqual(handed, token);
      assert.ok(!textOf(answer).includes(handed as string) && !JSON.stringify(structured(answer)).includes(handed as string), 'the token is not in what a model reads');
      assert.equal((await h.writ.authorize(token, { action: 'read', resource: 'tickets:T-1042' })).reason, 'ERR_TOKEN_REVOKED', 'the presented token is refused from now on');
      assert.equal((await h.writ.authorize(handed as string, { action: 'read', resource: 'tickets:T-1042' })).allowed, true);
      assert.equal((await getTicket(client)).isError, undefined, 'the session\'s calls use the new token');

      // Past the old token's expiry the session needs the new one: the old one no longer opens it.
      clock.advance(120_000);
      await assert.rejects(getTicket(client), /401|invalid_token|Unauthorized/i, 'a session never outlives the credential presented on it');
      bearer = handed as string;
      const later = await getTicket(client);
      assert.equal(later.isError, undefined, textOf(later));
      assert.equal((await renewalsOf(taskId)).length, 1);
    } finally {
      await client.close();
    }
  });

  test('the 2026 stateless revision: the renewed token comes back in _meta and the next request presents it', async () => {
    const { token } = await taskToken();
    let bearer = token;
    const client = await connect(h, () => bearer, STATELESS as never);
    try {
      assert.equal(client.getNegotiatedProtocolVersion(), '2026-07-28');
      clock.advance(250_000);
      const answer = await checkpoint(client, 'most of it done');
      assert.equal(structured(answer).renewed, true, textOf(answer));
      const handed = answer._meta?.['dev.writ/taskToken'];
      assert.equal(typeof handed, 'string');
      await assert.rejects(getTicket(client), /401|invalid_token|Unauthorized/i, 'each request authenticates on its own: the old token is refused');
      bearer = handed as string;
      assert.equal((await getTicket(client)).isError, undefined);
      assert.equal(structured(await checkpoint(client, 'checking again')).reason, 'not_due');
    } finally {
      await client.close();
    }
  });

  test('two checkpoints at once on a connection make one renewal; a call made meanwhile waits for the new token', async () => {
    const { client, taskId, refresh } = await sessionWithTask();
    // Forces the race: the first renewal is held in the broker until the other requests are surely in.
    const broker = h.writ.broker as { renewTask: typeof h.writ.broker.renewTask };
    const renewTask = broker.renewTask;
    let entered = 0;
    broker.renewTask = async (...args) => {
      entered += 1;
      if (entered === 1) await new Promise((resolve) => setTimeout(resolve, 300));
      return renewTask(...args);
    };
    try {
      clock.advance(250_000);
      await refresh();
      const settled: string[] = [];
      const first = checkpoint(client, 'branch A done').then((r) => (settled.push('checkpoint'), r));
      while (entered === 0) await new Promise((resolve) => setTimeout(resolve, 5));
      const [a, b, ticket] = await Promise.all([first, checkpoint(client, 'branch B done'), getTicket(client).then((r) => (settled.push('call'), r))]);
      assert.deepEqual([structured(a).renewed, structured(b).renewed, structured(b).reason], [true, false, 'renewed_concurrently'], JSON.stringify([textOf(a), textOf(b)]));
      assert.equal(entered, 1, 'the broker was asked once');
      assert.equal(ticket.isError, undefined, textOf(ticket));
      assert.deepEqual(settled, ['checkpoint', 'call'], 'the call waited for the renewal under way');
      assert.equal((await renewalsOf(taskId)).length, 1);
      assert.equal((await h.writ.store.getTask(taskId))?.renewals, 1);
    } finally {
      broker.renewTask = renewTask;
      await client.close();
    }
  });

  test('a connection whose token a renewal elsewhere replaced renews nothing; presenting the new token carries it on', async () => {
    const { token, taskId } = await taskToken();
    let bearer = token;
    const client = await connect(h, () => bearer);
    try {
      clock.advance(210_000);
      const elsewhere = await h.post(`/v1/tasks/${taskId}/renew`, { checkpoint: 'renewed over REST' }, token);
      assert.equal(elsewhere.status, 200, JSON.stringify(elsewhere.body));
      const answer = await checkpoint(client, 'renew me too');
      assert.equal(answer.isError, true);
      assert.equal(structured(answer).code, 'ERR_TOKEN_REVOKED', textOf(answer));
      assert.equal((await h.writ.store.getTask(taskId))?.renewals, 1, 'the replaced token renewed nothing');
      assert.equal(structured(await getTicket(client)).code, 'ERR_TOKEN_REVOKED', 'the session\'s token was replaced');
      bearer = elsewhere.body.token as string;
      const ticket = await getTicket(client);
      assert.equal(ticket.isError, undefined, `the session takes up the token it is shown: ${textOf(ticket)}`);
    } finally {
      await client.close();
    }
  });

  test('refusals are tool errors with their code: a bad note, and a task at its maximum lifetime; the task keeps its token', async () => {
    const { client, taskId, refresh } = await sessionWithTask();
    try {
      for (const args of [{ note: '' }, { note: 'x'.repeat(501) }, { note: 'ok', ttl: 'forever' }, { note: 'ok', scopes: [] }, {}]) {
        const bad = await client.callTool({ name: 'checkpoint', arguments: args });
        assert.equal(bad.isError, true, JSON.stringify(args));
        assert.equal(structured(bad).code, 'ERR_VALIDATION', JSON.stringify(args));
      }
      // 210 s, 420 s, 630 s: renewed (the last cut to the 900 s lifetime); then nothing more.
      for (let i = 1; i <= 3; i += 1) {
        clock.advance(210_000);
        await refresh();
        const renewed = await checkpoint(client, `stage ${i} done`);
        assert.equal(structured(renewed).renewed, true, textOf(renewed));
        if (i === 3) assert.match(structured(renewed).warnings.join(' '), /maximum lifetime/);
      }
      clock.advance(269_500);
      await refresh();
      const refused = await checkpoint(client, 'one more stage');
      assert.equal(refused.isError, true);
      assert.equal(structured(refused).code, 'ERR_MAX_LIFETIME_REACHED', textOf(refused));
      assert.equal((await getTicket(client)).isError, undefined, 'the current token still works until it runs out');
      const records = await renewalsOf(taskId);
      assert.deepEqual(records.map((r) => r.decision), ['allow', 'allow', 'allow', 'deny']);
    } finally {
      await client.close();
    }
  });
});
