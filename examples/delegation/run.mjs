#!/usr/bin/env node
/**
 * `npm run example:delegation`: a planner agent hands a worker agent a
 * read-only slice of its task, end to end, in one command.
 *
 *   1. starts Writ (`writ serve --dev`) with the MCP gateway example's writ.yaml
 *      and tickets server (../mcp-gateway), in a throwaway data folder; stores
 *      the tickets API key, registers a planner, a worker and a helper agent,
 *      and gets the planner and the worker an identity token (Writ's dev issuer);
 *   2. the planner asks for a task over REST: read every ticket, write T-1042;
 *   3. the worker gives the planner an actor token made for one exchange, and
 *      the planner delegates read:tickets:T-1042 to the worker by OAuth 2.0
 *      Token Exchange (RFC 8693) at /oauth/token; we read the child token;
 *   4. the worker connects to Writ's /mcp with the child token (the official
 *      MCP SDK client): it sees the read tool only, reads the ticket, and is
 *      refused a comment;
 *   5. the worker tries to hand on more than it holds, and the planner tries
 *      to hand on its write: both refused;
 *   6. the planner completes its task, and the worker's task ends with it: its
 *      MCP session is told its tools changed, and its token is refused;
 *   7. checks the audit chain.
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { claimsOf, say, show, startWrit } from '../lib/writ-example.mjs';

const PLANNER = 'spiffe://demo.local/agent/planner';
const WORKER = 'spiffe://demo.local/agent/worker';
const HELPER = 'spiffe://demo.local/agent/helper';
const TICKET = 'T-1042';

const { url, writ, stop, log } = await startWrit('delegation');

/** Writ's REST API, as the planner's framework would call it. */
async function api(method, path, token, body) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: await response.json() };
}

/**
 * OAuth 2.0 Token Exchange (RFC 8693 §2.1): `subject` (a task token) hands
 * `scope` to whoever `actor` (an identity token) proves to be. A plain form
 * POST: any OAuth client library that speaks token exchange does the same.
 */
async function exchange(subject, actor, scope, extra = {}) {
  const response = await fetch(`${url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: subject,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      actor_token: actor,
      actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope,
      ...extra,
    }),
  });
  return { status: response.status, body: await response.json() };
}

/** An MCP request Writ refused at the HTTP layer, as the SDK reports it: the status and Writ's code. */
const failure = (error) => (typeof error?.status === 'number' ? `HTTP ${error.status} ${/"code":"(\w+)"/.exec(error.message)?.[1] ?? ''}`.trimEnd() : String(error?.message ?? error));
const refusal = ({ status, body }) => `HTTP ${status} ${body.code} (OAuth error ${body.error}): ${body.detail}`;

let worker;
let failed = false;
try {
  say(`1. Writ is up at ${url}, with the tickets MCP server (examples/mcp-gateway) behind /mcp.`);
  await writ(['secret', 'set', 'tickets-api-key'], 'sk_live_tickets_example_key\n');
  say('   Stored the tickets server\'s API key in Writ\'s vault (no agent ever sees it).');
  for (const agent of [PLANNER, WORKER, HELPER]) {
    await writ(['identity', 'register', '--spiffe-id', agent, '--owner', 'alice@example.com', '--environment', 'production']);
  }
  const identityTokens = { [PLANNER]: await writ(['identity', 'token', PLANNER]), [WORKER]: await writ(['identity', 'token', WORKER]) };
  say(`   Registered ${PLANNER}, ${WORKER} and ${HELPER}`);
  say('   (owner alice@example.com, production), and got the planner and the worker an identity token.');
  say();

  say('2. Planner: POST /v1/tasks with its identity token: read every ticket, write one');
  const asked = await api('POST', '/v1/tasks', identityTokens[PLANNER], {
    purpose: `Answer ticket ${TICKET}: damaged parcel, customer wants a refund`,
    intent: 'customer-support',
    environment: 'production',
    ttl: '10m',
    scopes: [
      { action: 'read', resource: 'tickets:*' },
      { action: 'write', resource: `tickets:${TICKET}` },
    ],
  });
  if (asked.status !== 201) throw new Error(`the planner's task was not granted: ${JSON.stringify(asked.body)}`);
  const plannerTask = { id: asked.body.task.id, token: asked.body.token };
  show('status', asked.body.status);
  show('task', plannerTask.id);
  show('granted', asked.body.task.grantedScopes);
  say();

  say(`3. Worker: gives the planner an actor token made for one exchange (writ identity token --for-exchange)`);
  // Not its everyday identity token, which the exchange refuses as actor: this one names the exchange alone
  // as its audience, so the planner that carries it can use it for nothing else, and it is spent once.
  const workerActorToken = await writ(['identity', 'token', WORKER, '--for-exchange']);
  show('aud', claimsOf(workerActorToken).aud);
  say(`   Planner: hands the worker a read-only slice (read:tickets:${TICKET}) by token exchange at /oauth/token`);
  const handed = await exchange(plannerTask.token, workerActorToken, `read:tickets:${TICKET}`, { ttl: '5m', purpose: `Summarise ticket ${TICKET} for the planner` });
  if (handed.status !== 200) throw new Error(`the delegation was refused: ${JSON.stringify(handed.body)}`);
  const workerTask = { id: handed.body.task_id, token: handed.body.access_token };
  show('issued_token_type', handed.body.issued_token_type);
  show('scope', handed.body.scope);
  show('expires_in', `${handed.body.expires_in} s`);
  show('task_id', workerTask.id);
  const claims = claimsOf(workerTask.token);
  say('   The child token\'s claims:');
  show('sub', claims.sub);
  show('act', claims.act);
  show('task.lineage', claims.task.lineage);
  show('txn', claims.txn);
  show('scope', claims.scope);
  show('exp', `${new Date(claims.exp * 1000).toISOString()} (the planner's: ${new Date(claimsOf(plannerTask.token).exp * 1000).toISOString()})`);
  say();

  say('4. Worker: connects to /mcp with the child token and lists its tools');
  // What the worker is told when its tool list changes: the SDK lists its tools again, and says how that went.
  const told = [];
  worker = new Client(
    { name: 'worker-agent', version: '1.0.0' },
    { listChanged: { tools: { debounceMs: 0, onChanged: (error, tools) => told.push(error ? `tools/list refused: ${failure(error)}` : `tools/list: ${JSON.stringify(tools.map((t) => t.name))}`) } } },
  );
  await worker.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${workerTask.token}` } } }));
  const list = async () => (await worker.listTools()).tools.map((t) => t.name);
  const call = async (name, args) => {
    const result = await worker.callTool({ name, arguments: args });
    return { result, text: result.content?.[0]?.text ?? '' };
  };
  show('tools', await list());
  say('   Worker: reads the ticket');
  show('tickets__get_ticket', JSON.parse((await call('tickets__get_ticket', { ticketId: TICKET })).text).subject);
  say('   Worker: comments on it anyway (tickets__add_comment is not in its list)');
  show('answer', (await call('tickets__add_comment', { ticketId: TICKET, text: 'Looks like a refund to me.' })).text);
  say();

  say(`5. Worker: hands ${HELPER} a write it does not hold (its own task token as subject_token)`);
  show('answer', refusal(await exchange(workerTask.token, await writ(['identity', 'token', HELPER, '--for-exchange']), `write:tickets:${TICKET}`)));
  say(`   Planner: hands the worker its write to ${TICKET} (it holds that one)`);
  show('answer', refusal(await exchange(plannerTask.token, await writ(['identity', 'token', WORKER, '--for-exchange']), `write:tickets:${TICKET}`)));
  say();

  say(`6. Planner: POST /v1/tasks/${plannerTask.id}/complete with its task token`);
  const completed = await api('POST', `/v1/tasks/${plannerTask.id}/complete`, plannerTask.token, { note: 'answered the customer' });
  show('planner task', completed.body.task.state);
  for (let tries = 0; told.length === 0 && tries < 100; tries++) await new Promise((r) => setTimeout(r, 50));
  say('   Worker: is told its tool list changed (notifications/tools/list_changed) and lists its tools again');
  show('answer', told[0] ?? 'no notification within 5 s');
  say('   Worker: reads the ticket again');
  try {
    show('answer', (await call('tickets__get_ticket', { ticketId: TICKET })).text);
  } catch (error) {
    show('answer', failure(error));
  }
  say('   (one uniform 401, as for any credential Writ does not accept; the precise reason, ERR_TOKEN_REVOKED, goes to the audit log)');
  say('   Worker: GET /v1/tasks/{its task} with its identity token');
  const seen = await api('GET', `/v1/tasks/${workerTask.id}`, identityTokens[WORKER]);
  show('state', seen.body.task?.state ?? JSON.stringify(seen.body));
  show('endReason', seen.body.task?.endReason ?? '');
  say();

  say('7. writ audit verify');
  say(await writ(['audit', 'verify']));
} catch (error) {
  failed = true;
  process.stderr.write(`example failed: ${error?.stack ?? error}\n${log()}\n`);
} finally {
  await worker?.close().catch(() => undefined);
  await stop();
}
process.exitCode = failed ? 1 : 0;
