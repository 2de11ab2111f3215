/**
 * The HTTP proxy's added latency per request, one run, one machine, one
 * upstream (a node:http server answering a small JSON body), one client
 * (node:http with a keep-alive agent, one request in flight):
 *
 *   direct      client → the upstream
 *   plain       client → a plain Node reverse proxy (node:http piping, keep-alive
 *               to the upstream, hop-by-hop headers removed, no checks) → upstream
 *   Writ        client → `writ proxy` → upstream, with the full action check
 *               (token, revocation, identity, scope; policy with risk above
 *               read), its audit record, and the secret opened from the vault
 *
 * Every server is its own process, as in production; the client is this one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { stringify as toYaml } from 'yaml';
import { loadConfig, PACKAGE_ROOT } from '../src/core/config.js';
import { createWrit } from '../src/writ.js';
import type { BenchKit } from './mcp.js';
import { freePort, waitForPort } from '../test/helpers/net.js';

type Op = () => Promise<void>;

const WRIT_BIN = join(PACKAGE_ROOT, 'bin', 'writ.js');
const AGENT = 'spiffe://bench.local/agent/support';

/** The upstream: a small JSON answer to anything, after reading the body. */
const UPSTREAM = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => { res.writeHead(200, { 'content-type': 'application/json' }); res.end('{"id":"42","status":"open","total":1299}'); });
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
`;

/** A plain reverse proxy: what any Node proxy does, and nothing Writ adds. */
const PLAIN_PROXY = `
const http = require('node:http');
const upstreamPort = Number(process.argv[1]);
const agent = new http.Agent({ keepAlive: true });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);
const strip = (h) => { const o = {}; for (const [k, v] of Object.entries(h)) if (!HOP.has(k)) o[k] = v; return o; };
const server = http.createServer((req, res) => {
  const up = http.request({ host: '127.0.0.1', port: upstreamPort, method: req.method, path: req.url.replace(/^\\/plain/, '/api'), headers: strip(req.headers), agent }, (answer) => {
    res.writeHead(answer.statusCode, strip(answer.headers));
    answer.pipe(res);
  });
  up.on('error', () => { res.writeHead(502); res.end(); });
  req.pipe(up);
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(JSON.stringify({ port: server.address().port })));
`;

export async function benchHttpProxy(kit: BenchKit): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-proxy-'));
  const children: ChildProcess[] = [];
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const upstream = spawn(process.execPath, ['-e', UPSTREAM], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(upstream);
    const upstreamPort = (JSON.parse(await firstLine(upstream)) as { port: number }).port;
    const plain = spawn(process.execPath, ['-e', PLAIN_PROXY, String(upstreamPort)], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(plain);
    const plainPort = (JSON.parse(await firstLine(plain)) as { port: number }).port;

    const configFile = join(dir, 'writ.yaml');
    const writPort = await freePort();
    writeFileSync(
      configFile,
      toYaml({
        server: { port: writPort },
        log: { level: 'warn' },
        proxy: {
          routes: [
            {
              name: 'shop',
              prefix: '/shop',
              upstream: `http://127.0.0.1:${upstreamPort}/api`,
              inject: [{ secret: 'shop-api-key', header: 'Authorization', prefix: 'Bearer ' }],
              paths: [
                { pattern: '/orders/{id}', resource: 'db:orders/{id}' },
                { pattern: '/tickets/{id}', resource: 'tickets:{id}' },
              ],
            },
          ],
        },
      }),
    );
    const env = { WRIT_MASTER_KEY: Buffer.alloc(32, 7).toString('base64url') };
    const setup = await createWrit({ config: loadConfig({ configFile, env, flags: { dataDir: dir, dev: true } }), env, logger: pino({ level: 'silent' }) });
    await setup.vault.put('shop-api-key', 'sk_bench_shop', { id: 'bench' });
    const identity = await setup.registerIdentity({ id: AGENT, actorType: 'agent', owner: 'bench@example.com', environment: 'production' });
    const grant = await setup.broker.requestTask(
      { identity },
      { purpose: 'benchmark', intent: 'customer-support', environment: 'production', ttl: 900, scopes: [{ action: 'read', resource: 'db:orders/*' }, { action: 'write', resource: 'tickets:*' }] },
    );
    await setup.close();
    if (grant.status !== 'granted') throw new Error(`bench grant was ${grant.status}`);
    const writ = spawn(process.execPath, [WRIT_BIN, 'proxy', '--config', configFile, '--data-dir', dir], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'ignore'] });
    children.push(writ);
    await waitForPort(writPort);

    const body = Buffer.from('{"status":"solved","note":"benchmark"}');
    const call = (port: number, method: 'GET' | 'POST', path: string, bearer?: string): Op => () =>
      new Promise<void>((resolveCall, reject) => {
        const headers: Record<string, string> = { ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }), ...(method === 'POST' ? { 'content-type': 'application/json', 'content-length': String(body.length) } : {}) };
        const req = request({ host: '127.0.0.1', port, method, path, headers, agent }, (res) => {
          if (res.statusCode !== 200) reject(new Error(`bench ${method} ${path} on ${port}: ${res.statusCode}`));
          res.resume();
          res.on('end', () => resolveCall());
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end(method === 'POST' ? body : undefined);
      });
    const direct = { read: call(upstreamPort, 'GET', '/api/orders/42'), write: call(upstreamPort, 'POST', '/api/tickets/T-1042') };
    const viaPlain = { read: call(plainPort, 'GET', '/plain/orders/42'), write: call(plainPort, 'POST', '/plain/tickets/T-1042') };
    const viaWrit = { read: call(writPort, 'GET', '/proxy/shop/orders/42', grant.token), write: call(writPort, 'POST', '/proxy/shop/tickets/T-1042', grant.token) };

    // Every path warmed alike before anything is timed (V8 optimizes each server's hot path).
    const paths = [direct.read, direct.write, viaPlain.read, viaPlain.write, viaWrit.read, viaWrit.write];
    for (let i = Math.round(3000 * kit.scale); i > 0; i--) for (const path of paths) await path();
    const n = Math.round(5000 * kit.scale);
    process.stdout.write('\nHTTP proxy: one keep-alive node:http client, upstream a node:http server (small JSON), each server its own process\n');
    kit.report('GET through a plain Node reverse proxy', await kit.sideBySide(viaPlain.read, direct.read, n, 50), 'direct to the upstream');
    kit.report('GET through writ proxy (check, audit, secret)', await kit.sideBySide(viaWrit.read, direct.read, n, 50), 'direct to the upstream');
    kit.report('GET through writ proxy, against the plain proxy', await kit.sideBySide(viaWrit.read, viaPlain.read, n, 50), 'plain Node reverse proxy');
    kit.report('POST through writ proxy (+ policy with risk)', await kit.sideBySide(viaWrit.write, direct.write, n, 50), 'direct to the upstream');
    kit.report('POST through writ proxy, against the plain proxy', await kit.sideBySide(viaWrit.write, viaPlain.write, n, 50), 'plain Node reverse proxy');
  } finally {
    agent.destroy();
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(undefined) : c.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  }
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolveLine, reject) => {
    let text = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\n');
      if (end >= 0) resolveLine(text.slice(0, end));
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code} before it was ready`)));
  });
}


