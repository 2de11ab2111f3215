/**
 * What every example needs around its story: a Writ server (`writ serve
 * --dev`) with the MCP gateway example's writ.yaml and tickets server, in a
 * throwaway data folder; the `writ` command line against it; and printing.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const examples = join(dirname(fileURLToPath(import.meta.url)), '..');
const WRIT = join(examples, '..', 'bin', 'writ.js');
/** The folder of the tickets MCP server and the writ.yaml that puts it behind Writ's /mcp. */
export const GATEWAY_EXAMPLE = join(examples, 'mcp-gateway');

export const say = (line = '') => process.stdout.write(`${line}\n`);
export const show = (label, value) => say(`  ${label.padEnd(22)} ${typeof value === 'string' ? value : JSON.stringify(value)}`);

/** A JWT's claims, read without verifying it: for showing only (Writ verifies every token it is handed). */
export const claimsOf = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));

/**
 * Starts Writ and waits until it answers (up to 30 s: on a busy machine, the
 * whole test suite at once say, it can take a while). Returns its URL, `writ`
 * (the command line against the same data and configuration, resolving to its
 * output) and `stop` (which also removes the data folder).
 */
export async function startWrit(name) {
  const dataDir = mkdtempSync(join(tmpdir(), `writ-${name}-example-`));
  const configFile = join(dataDir, 'writ.yaml');
  // The gateway example's writ.yaml, with its tickets server found in that folder.
  const yaml = readFileSync(join(GATEWAY_EXAMPLE, 'writ.yaml'), 'utf8');
  writeFileSync(configFile, yaml.replace('cwd: .', `cwd: ${JSON.stringify(GATEWAY_EXAMPLE)}`).replace('command: node', `command: ${JSON.stringify(process.execPath)}`));
  const env = { ...process.env, WRIT_DATA_DIR: dataDir };
  for (const key of Object.keys(env)) if (key.startsWith('WRIT_') && key !== 'WRIT_DATA_DIR') delete env[key];

  const writ = (args, input) =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [WRIT, ...args, '--config', configFile], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (c) => (out += c));
      child.stderr.on('data', (c) => (err += c));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`writ ${args.join(' ')} exited ${code}: ${err.trim()}`))));
      child.stdin.end(input ?? '');
    });

  const port = await new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address();
      probe.close(() => resolve(free));
    });
  });
  const server = spawn(process.execPath, [WRIT, 'serve', '--dev', '--config', configFile, '--port', String(port)], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  server.stderr.on('data', (c) => (log += c));
  const stop = async () => {
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode !== null ? r() : server.once('exit', r)));
    rmSync(dataDir, { recursive: true, force: true });
  };
  const url = `http://127.0.0.1:${port}`;
  try {
    for (const deadline = Date.now() + 30_000; ; ) {
      try {
        if ((await fetch(`${url}/healthz`)).ok) break;
      } catch {
        if (server.exitCode !== null || Date.now() > deadline) throw new Error(`Writ did not start:\n${log}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { url, writ, stop, log: () => log };
}
