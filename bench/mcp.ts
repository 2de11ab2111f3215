/**
 * The MCP gateway's cost per tools/call, one run, one machine, one upstream
 * (examples/mcp-gateway/tickets-server.mjs, the official SDK), one client (the
 * official v2 SDK client over Streamable HTTP, a 2025-era session):
 *
 *   direct      client → the tickets server over HTTP
 *   mcp-proxy   client → mcp-proxy (npm, no authorization) → tickets over stdio
 *   Writ        client → `writ serve` /mcp → tickets over stdio, with the full
 *               action check (token, revocation, identity, scope; policy with
 *               risk above read) and two audit records per call
 *
 * Every server is its own process, as in production; the client is this one.
 *
 * WRIT_BENCH_AGAINST=<another checkout, built> adds Writ against that Writ,
 * side by side: both serve a copy of the same data (keys, task, token), each
 * its own database, so a change is measured against its parent in the same
 * minutes rather than across runs (on a shared VM, runs differ by more than
 * most changes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { pino } from 'pino';
import { stringify as toYaml } from 'yaml';
import { loadConfig, PACKAGE_ROOT } from '../src/core/config.js';
import { createWrit } from '../src/writ.js';
import { freePort, waitForPort } from '../test/helpers/net.js';

type Op = () => unknown | Promise<unknown>;
interface Stats {
  readonly p50: number;
  readonly p99: number;
  readonly perSecond: number;
  readonly n: number;
}
export interface BenchKit {
  readonly sideBySide: (subject: Op, baseline: Op, iterations: number, block?: number) => Promise<{ subject: Stats; baseline: Stats }>;
  readonly report: (name: string, result: { subject: Stats; baseline: Stats }, baselineName: string, target?: string) => void;
  readonly scale: number;
}

const TICKETS = join(PACKAGE_ROOT, 'examples', 'mcp-gateway', 'tickets-server.mjs');
const WRIT_BIN = join(PACKAGE_ROOT, 'bin', 'writ.js');
const MCP_PROXY = join(PACKAGE_ROOT, 'node_modules', 'mcp-proxy', 'dist', 'bin', 'mcp-proxy.mjs');
const API_KEY = 'sk_bench_tickets';
const AGENT = 'spiffe://bench.local/agent/support';

export async function benchMcpGateway(kit: BenchKit): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'writ-bench-mcp-'));
  const otherDir = `${dir}-against`;
  const children: ChildProcess[] = [];
  const clients: Client[] = [];
  try {
    // The upstream over HTTP, for the direct path.
    const direct = spawn(process.execPath, [TICKETS, '--http', '0'], { env: { ...process.env, TICKETS_API_KEY: API_KEY }, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(direct);
    const directPort = (JSON.parse(await firstLine(direct)) as { port: number }).port;

    // mcp-proxy in front of the same server over stdio.
    const proxyPort = await freePort();
    const proxy = spawn(process.execPath, [MCP_PROXY, '--port', String(proxyPort), '--host', '127.0.0.1', '--no-eventStore', '--', process.execPath, TICKETS], {
      env: { ...process.env, TICKETS_API_KEY: API_KEY },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    children.push(proxy);
    await waitForPort(proxyPort);

    // Writ with the same server over stdio, its key from the vault.
    const configFile = join(dir, 'writ.yaml');
    const writPort = await freePort();
    const writConfig = (port: number) =>
      toYaml({
        server: { port },
        log: { level: 'warn' },
        gateway: {
          upstreams: [
            {
              name: 'tickets',
              command: process.execPath,
              args: [TICKETS],
              inject: [{ secret: 'tickets-api-key', env: 'TICKETS_API_KEY' }],
              tools: { get_ticket: { resource: 'tickets:{ticketId}' }, add_comment: { resource: 'tickets:{ticketId}' } },
            },
          ],
        },
      });
    writeFileSync(configFile, writConfig(writPort));
    const env = { WRIT_MASTER_KEY: Buffer.alloc(32, 7).toString('base64url') };
    const setup = await createWrit({ config: loadConfig({ configFile, env, flags: { dataDir: dir, dev: true } }), env, logger: pino({ level: 'silent' }) });
    await setup.vault.put('tickets-api-key', API_KEY, { id: 'bench' });
    const identity = await setup.registerIdentity({ id: AGENT, actorType: 'agent', owner: 'bench@example.com', environment: 'production' });
    const grant = await setup.broker.requestTask(
      { identity },
      { purpose: 'benchmark', intent: 'customer-support', environment: 'production', ttl: 900, scopes: [{ action: 'read', resource: 'tickets:*' }, { action: 'write', resource: 'tickets:*' }] },
    );
    await setup.close();
    if (grant.status !== 'granted') throw new Error(`bench grant was ${grant.status}`);
    // The other Writ, if asked for: the same data copied before either server writes to it.
    const against = process.env.WRIT_BENCH_AGAINST === undefined ? undefined : resolve(process.env.WRIT_BENCH_AGAINST);
    let otherPort: number | undefined;
    if (against !== undefined) {
      const otherBin = join(against, 'bin', 'writ.js');
      if (!existsSync(join(against, 'dist', 'cli', 'main.js'))) throw new Error(`WRIT_BENCH_AGAINST: ${against} is not a built checkout (npm run build there)`);
      cpSync(dir, otherDir, { recursive: true });
      otherPort = await freePort();
      writeFileSync(join(otherDir, 'writ.yaml'), writConfig(otherPort));
      children.push(spawn(process.execPath, [otherBin, 'serve', '--config', join(otherDir, 'writ.yaml'), '--data-dir', otherDir], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'ignore'] }));
    }
    const writ = spawn(process.execPath, [...(process.env.WRIT_BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.WRIT_BENCH_PROFILE] : []), WRIT_BIN, 'serve', '--config', configFile, '--data-dir', dir], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'ignore'] });
    children.push(writ);
    await waitForPort(writPort);
    if (otherPort !== undefined) await waitForPort(otherPort);

    const connect = async (url: string, bearer: string): Promise<Client> => {
      const client = new Client({ name: 'bench-agent', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${bearer}` } } }));
      clients.push(client);
      return client;
    };
    const toDirect = await connect(`http://127.0.0.1:${directPort}/mcp`, API_KEY);
    const toProxy = await connect(`http://127.0.0.1:${proxyPort}/mcp`, 'unused');
    const toWrit = await connect(`http://127.0.0.1:${writPort}/mcp`, grant.token);
    const toOther = otherPort === undefined ? undefined : await connect(`http://127.0.0.1:${otherPort}/mcp`, grant.token);

    const call = (client: Client, name: string, args: Record<string, unknown>): Op => async () => {
      const result = await client.callTool({ name, arguments: args });
      if (result.isError === true) throw new Error(`bench call failed: ${JSON.stringify(result.content)}`);
    };
    const read = { ticketId: 'T-1042' };
    const write = { ticketId: 'T-1043', text: 'benchmark comment' };
    const n = Math.round(3000 * kit.scale);
    // Every path is warmed alike before anything is timed. A server's first
    // few thousand calls run code V8 has not finished optimizing: measured
    // cold, a path looks up to a quarter slower than the same build warm.
    const paths: Op[] = [call(toDirect, 'get_ticket', read), call(toDirect, 'add_comment', write), call(toProxy, 'get_ticket', read), call(toWrit, 'tickets__get_ticket', read), call(toWrit, 'tickets__add_comment', write)];
    if (toOther !== undefined) paths.push(call(toOther, 'tickets__get_ticket', read), call(toOther, 'tickets__add_comment', write));
    for (let i = Math.round(3000 * kit.scale); i > 0; i--) for (const path of paths) await path();
    process.stdout.write('\nMCP gateway: tools/call, official v2 SDK client over Streamable HTTP, upstream examples/mcp-gateway/tickets-server.mjs\n');
    kit.report('tools/call read through mcp-proxy', await kit.sideBySide(call(toProxy, 'get_ticket', read), call(toDirect, 'get_ticket', read), n, 50), 'direct to the upstream');
    kit.report(
      'tools/call read through Writ (check, audit ×2)',
      await kit.sideBySide(call(toWrit, 'tickets__get_ticket', read), call(toDirect, 'get_ticket', read), n, 50),
      'direct to the upstream',
      'target: adds ≤ 0.5 ms p50',
    );
    kit.report('tools/call read through Writ, against mcp-proxy', await kit.sideBySide(call(toWrit, 'tickets__get_ticket', read), call(toProxy, 'get_ticket', read), n, 50), 'mcp-proxy', 'target: no slower');
    kit.report(
      'tools/call write through Writ (+ policy with risk)',
      await kit.sideBySide(call(toWrit, 'tickets__add_comment', write), call(toDirect, 'add_comment', write), n, 50),
      'direct to the upstream',
      'target: adds ≤ 0.5 ms p50',
    );
    if (toOther !== undefined) {
      const other = `Writ at ${against}`;
      kit.report('tools/call read through Writ, against another Writ', await kit.sideBySide(call(toWrit, 'tickets__get_ticket', read), call(toOther, 'tickets__get_ticket', read), n, 50), other);
      kit.report('tools/call write through Writ, against another Writ', await kit.sideBySide(call(toWrit, 'tickets__add_comment', write), call(toOther, 'tickets__add_comment', write), n, 50), other);
    }
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((c) => new Promise((r) => (c.exitCode !== null ? r(undefined) : c.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
    rmSync(otherDir, { recursive: true, force: true });
  }
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\n');
      if (end >= 0) resolve(text.slice(0, end));
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code} before it was ready`)));
  });
}


