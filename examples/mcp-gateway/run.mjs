#!/usr/bin/env node
/**
 * `npm run example:mcp`: the MCP gateway, end to end, in one command.
 *
 *   1. starts Writ (`writ serve --dev`) with writ.yaml beside this file, in a
 *      throwaway data folder;
 *   2. stores the tickets server's API key in Writ's vault, registers a
 *      support agent, and gets it an identity token (Writ's dev issuer);
 *   3. runs a scripted agent with the official MCP SDK client against
 *      Writ's /mcp: it lists its tools, asks for access for one task, reads a
 *      ticket, is denied an export, and asks for a large refund, which Writ
 *      holds until a human, Bob, reads it and runs `writ approvals approve`;
 *      then it notes the refund on the ticket and completes its task;
 *   4. checks the audit chain.
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { say, show, startWrit } from '../lib/writ-example.mjs';

const AGENT = 'spiffe://demo.local/agent/support';
const APPROVER = 'spiffe://demo.local/human/bob';

const { url, writ, stop, log } = await startWrit('mcp');

let client;
let failed = false;
try {
  say(`Writ is up at ${url}, with the tickets MCP server behind /mcp.`);
  await writ(['secret', 'set', 'tickets-api-key'], 'sk_live_tickets_example_key\n');
  say('Stored the tickets server\'s API key in Writ\'s vault (the agent never sees it).');
  await writ(['identity', 'register', '--spiffe-id', AGENT, '--owner', 'alice@example.com', '--environment', 'production']);
  const identityToken = await writ(['identity', 'token', AGENT]);
  say(`Registered ${AGENT} (owner alice@example.com) and got it an identity token.`);
  await writ(['identity', 'register', '--spiffe-id', APPROVER, '--actor-type', 'human', '--environment', 'production', '--label', 'approver=production']);
  say(`Registered ${APPROVER}, a human who approves production actions (policies/approvers.cedar).`);
  say();

  client = new Client({ name: 'support-agent', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${identityToken}` } } }));
  const list = async () => (await client.listTools()).tools.map((t) => t.name);
  const call = async (name, args, meta) => {
    const result = await client.callTool({ name, arguments: args, ...(meta === undefined ? {} : { _meta: meta }) });
    return { result, text: result.content?.[0]?.text ?? '' };
  };

  say('Agent: connects with its identity token and lists its tools');
  show('tools', await list());

  say('Agent: request_access for ticket work (and, greedily, an export and key rotation)');
  const { result: access } = await call('request_access', {
    purpose: 'Answer ticket T-1042: damaged parcel, customer wants a refund',
    intent: 'customer-support',
    tools: ['tickets__get_ticket', 'tickets__add_comment', 'tickets__create_refund', 'tickets__export_customer_data', 'tickets__rotate_api_keys'],
    ttl: '10m',
  });
  show('decision', access.structuredContent.status);
  show('granted', access.structuredContent.grantedTools);
  show('refused', access.structuredContent.refusedTools);
  show('tools now', await list());

  say('Agent: reads the ticket');
  show('tickets__get_ticket', JSON.parse((await call('tickets__get_ticket', { ticketId: 'T-1042' })).text).subject);

  say('Agent: tries to export the customer\'s payment details anyway');
  const exported = await call('tickets__export_customer_data', { customerId: 'C-7', destination: 'https://paste.example' });
  show('answer', exported.text);

  say('Agent: refunds $250, over the $100 it may refund alone, and asks Writ to hold the call for an approval (up to 60 s)');
  const held = call('tickets__create_refund', { ticketId: 'T-1042', amountCents: 25000 }, { 'dev.writ/approvalWait': 60 });
  // Meanwhile, Bob, at a terminal: the request is there, with exactly what the agent wants to do.
  const bob = ['--dev', '--identity', APPROVER];
  let request;
  for (let tries = 0; request === undefined; tries++) {
    [request] = JSON.parse(await writ(['approvals', 'list', '--json', ...bob]));
    if (request === undefined) {
      if (tries > 100) throw new Error('no approval request appeared');
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  say(`Bob: writ approvals list, then writ approvals show ${request.id}`);
  for (const line of (await writ(['approvals', 'show', request.id, ...bob])).split('\n')) say(`    ${line}`);
  say(`Bob: writ approvals approve ${request.id}`);
  show('answer', await writ(['approvals', 'approve', request.id, '--note', 'damage confirmed from the photos', ...bob]));
  say('Agent: its held call goes through, once');
  show('tickets__create_refund', (await held).text);
  say('Agent: the same refund again is a new request (an approval is spent once)');
  show('answer', (await call('tickets__create_refund', { ticketId: 'T-1042', amountCents: 25000 })).text);

  say('Agent: notes it on the ticket and completes its task');
  show('tickets__add_comment', (await call('tickets__add_comment', { ticketId: 'T-1042', text: 'Refunded $250 for the damaged parcel (approved by Bob).' })).text);
  show('complete_task', (await call('complete_task', { note: 'refund issued' })).result.structuredContent);
  show('tools now', await list());
  say();
  say(await writ(['audit', 'verify']));
} catch (error) {
  failed = true;
  process.stderr.write(`example failed: ${error?.stack ?? error}\n${log()}\n`);
} finally {
  await client?.close().catch(() => undefined);
  await stop();
}
process.exitCode = failed ? 1 : 0;
