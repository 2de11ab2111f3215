#!/usr/bin/env node
/**
 * "tickets": a small MCP server a support agent would use, written with the
 * official MCP SDK. It is the upstream of the gateway example, the gateway's
 * tests and its benchmark, with a tool at every tier:
 *
 *   get_ticket, list_tickets      read-only, closed world        → read
 *   add_comment                   writes, not destructive        → write
 *   delete_comment                destructive                    → delete
 *   export_customer_data          sends data out (open world)    → export
 *   create_refund                 writes; writ.yaml maps it to the `refund` action
 *   rotate_api_keys               writ.yaml maps it to `admin`
 *   whoami                        what reached this server: a fingerprint of its
 *                                 API key and the request headers (never a value)
 *
 * It needs TICKETS_API_KEY (Writ injects it from its vault) and refuses to start
 * without it, like a real integration. `--http <port>` serves Streamable HTTP on
 * 127.0.0.1 instead of stdio, and then requires `Authorization: Bearer <key>`.
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { McpServer } from '@modelcontextprotocol/server';
import { StdioServerTransport } from '@modelcontextprotocol/server/stdio';
import { NodeStreamableHTTPServerTransport } from '@modelcontextprotocol/node';
import { z } from 'zod';

const apiKey = process.env.TICKETS_API_KEY;
if (!apiKey) {
  process.stderr.write('tickets: TICKETS_API_KEY is not set\n');
  process.exit(78);
}
const fingerprint = (value) => createHash('sha256').update(value).digest('hex').slice(0, 16);

const tickets = new Map([
  ['T-1042', { id: 'T-1042', customer: 'C-7', subject: 'Refund for a damaged parcel', comments: [] }],
  ['T-1043', { id: 'T-1043', customer: 'C-9', subject: 'Where is my order?', comments: [] }],
]);
const refunds = [];
const text = (value) => ({ content: [{ type: 'text', text: typeof value === 'string' ? value : JSON.stringify(value) }] });

function build(seenHeaders) {
  const server = new McpServer({ name: 'tickets', version: '1.0.0' });
  const ticketId = z.string().regex(/^T-\d+$/).describe('A ticket id such as T-1042');
  server.registerTool(
    'get_ticket',
    { description: 'Read one ticket', inputSchema: z.object({ ticketId }), annotations: { readOnlyHint: true, openWorldHint: false } },
    async ({ ticketId: id }) => {
      const ticket = tickets.get(id);
      return ticket ? text(ticket) : { isError: true, ...text(`no ticket ${id}`) };
    },
  );
  server.registerTool('list_tickets', { description: 'List open tickets', annotations: { readOnlyHint: true, openWorldHint: false } }, async () =>
    text([...tickets.values()].map((t) => ({ id: t.id, subject: t.subject }))),
  );
  server.registerTool(
    'add_comment',
    {
      description: 'Add a comment to a ticket',
      inputSchema: z.object({ ticketId, text: z.string().min(1).max(10_000) }),
      annotations: { readOnlyHint: false, destructiveHint: false, openWorldHint: false },
    },
    async ({ ticketId: id, text: body }) => {
      const ticket = tickets.get(id);
      if (!ticket) return { isError: true, ...text(`no ticket ${id}`) };
      ticket.comments.push(body);
      return text({ ticketId: id, commentId: ticket.comments.length });
    },
  );
  server.registerTool(
    'delete_comment',
    {
      description: 'Delete a comment from a ticket',
      inputSchema: z.object({ ticketId, commentId: z.number().int().min(1) }),
      annotations: { readOnlyHint: false, destructiveHint: true, openWorldHint: false },
    },
    async ({ ticketId: id, commentId }) => text({ deleted: Boolean(tickets.get(id)?.comments.splice(commentId - 1, 1).length) }),
  );
  server.registerTool(
    'export_customer_data',
    {
      description: "Send a customer's data to an outside destination",
      inputSchema: z.object({ customerId: z.string(), destination: z.string() }),
      annotations: { readOnlyHint: true, openWorldHint: true },
    },
    async ({ customerId, destination }) => text({ exported: customerId, to: destination }),
  );
  server.registerTool(
    'create_refund',
    {
      description: 'Refund a customer through the payment provider',
      inputSchema: z.object({ ticketId, amountCents: z.number().int().min(1) }),
      annotations: { readOnlyHint: false, destructiveHint: false, openWorldHint: true },
    },
    async ({ ticketId: id, amountCents }) => {
      refunds.push({ ticketId: id, amountCents });
      return text({ refunded: amountCents, ticketId: id, refundId: `R-${refunds.length}` });
    },
  );
  server.registerTool('rotate_api_keys', { description: 'Rotate every API key of the ticket system', annotations: { destructiveHint: true } }, async () =>
    text({ rotated: true }),
  );
  server.registerTool('whoami', { description: 'What reached this server', annotations: { readOnlyHint: true, openWorldHint: false } }, async () =>
    text({
      pid: process.pid,
      apiKeyFingerprint: fingerprint(apiKey),
      writEnvironment: Object.keys(process.env).filter((k) => k.startsWith('WRIT')),
      headers: seenHeaders?.() ?? null,
    }),
  );
  return server;
}

const httpFlag = process.argv.indexOf('--http');
if (httpFlag < 0) {
  await build(undefined).connect(new StdioServerTransport());
} else {
  const port = Number(process.argv[httpFlag + 1] ?? 0);
  const sessions = new Map();
  let lastHeaders = {};
  const http = createServer(async (req, res) => {
    if (req.headers.authorization !== `Bearer ${apiKey}`) {
      res.writeHead(401).end();
      return;
    }
    lastHeaders = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, k === 'authorization' ? `Bearer <${fingerprint(String(v).slice(7))}>` : v]));
    const sid = req.headers['mcp-session-id'];
    let transport = typeof sid === 'string' ? sessions.get(sid) : undefined;
    if (!transport) {
      transport = new NodeStreamableHTTPServerTransport({
        sessionIdGenerator: () => crypto.randomUUID(),
        enableJsonResponse: true,
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      await build(() => lastHeaders).connect(transport);
    }
    await transport.handleRequest(req, res);
  });
  http.listen(port, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: http.address().port })}\n`));
}
