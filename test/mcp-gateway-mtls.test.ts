/**
 * The MCP gateway under mTLS: a task token bound to a client certificate
 * (`cnf.x5t#S256`) is worth nothing on a session without that certificate, on
 * every request, not only the first; and `clientCertificates: required` covers
 * /mcp as it covers /v1.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { createManualClock } from '../src/core/clock.js';
import { PACKAGE_ROOT } from '../src/core/config.js';
import { claimsOf, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { writeMtlsFiles, type MtlsRequestOptions } from './helpers/pki.js';

const AGENT = 'spiffe://prod.example/agent/support';
const TICKETS = join(PACKAGE_ROOT, 'examples', 'mcp-gateway', 'tickets-server.mjs');
const initialize = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } };

async function setUp(mode: 'optional' | 'required') {
  const clock = createManualClock();
  const files = await writeMtlsFiles(clock.now(), AGENT, { intermediate: true });
  const { serverCa, svid } = files;
  const h = await startHarness({
    clock,
    config: {
      ...files.config(mode),
      gateway: { upstreams: [{ name: 'tickets', command: process.execPath, args: [TICKETS], inject: [{ secret: 'k', env: 'TICKETS_API_KEY' }], tools: { add_comment: { resource: 'tickets:{ticketId}' } } }] },
    },
  });
  await h.writ.vault.put('k', 'sk_test', { id: 'test' });
  await h.registerAgent(AGENT);
  const port = (h.app.server.address() as AddressInfo).port;
  // The gateway answers JSON or an event stream; the SDK's clients accept both.
  const request = async (method: string, path: string, o: MtlsRequestOptions = {}) => {
    const answer = await files.request(port, method, path, { ...o, headers: { accept: 'application/json, text/event-stream', ...(o.headers ?? {}) } });
    return { status: answer.status, body: answer.text, headers: answer.headers };
  };
  return { h, request, cleanup: async () => { await h.close(); files.remove(); } };
}

describe('MCP gateway with client certificates', () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const c of cleanups) await c();
  });

  test('a certificate-bound session refuses a request that does not present the certificate, whatever it copied', async () => {
    const { request, cleanup } = await setUp('optional');
    cleanups.push(cleanup);
    const granted = await request('POST', '/v1/tasks', { cert: true, body: supportTask({ scopes: [{ action: 'write', resource: 'tickets:*' }] }) });
    assert.equal(granted.status, 201, granted.body);
    const token = JSON.parse(granted.body).token as string;
    assert.ok(claimsOf(token).cnf?.['x5t#S256'], 'the token is bound to the certificate');
    assert.equal((await request('POST', '/mcp', { bearer: token, body: initialize })).status, 401, 'no session without the certificate');
    const opened = await request('POST', '/mcp', { bearer: token, cert: true, body: initialize });
    assert.equal(opened.status, 200, opened.body);
    const headers = { 'mcp-session-id': String(opened.headers['mcp-session-id']), 'mcp-protocol-version': '2025-11-25' };
    await request('POST', '/mcp', { bearer: token, cert: true, headers, body: { jsonrpc: '2.0', method: 'notifications/initialized' } });
    const call = { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'tickets__add_comment', arguments: { ticketId: 'T-1042', text: 'hello' } } };
    const stolen = await request('POST', '/mcp', { bearer: token, headers, body: call });
    assert.equal(stolen.status, 401, `bearer and session id without the key: ${stolen.body}`);
    const owner = await request('POST', '/mcp', { bearer: token, cert: true, headers, body: call });
    assert.equal(owner.status, 200);
    assert.match(owner.body, /commentId/);
  });

  test('clientCertificates: required covers /mcp: no certificate, no session', async () => {
    const { h, request, cleanup } = await setUp('required');
    cleanups.push(cleanup);
    const identityToken = await h.identityToken(AGENT).catch(() => undefined);
    const answer = await request('POST', '/mcp', { ...(identityToken === undefined ? {} : { bearer: identityToken }), body: initialize });
    assert.equal(answer.status, 401);
    assert.equal(JSON.parse(answer.body).code, 'ERR_UNAUTHENTICATED');
  });
});
