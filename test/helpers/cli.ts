/**
 * Running the built `writ` as an operator does, from tests: real processes, a
 * clean environment (no WRIT_* settings leak in from the machine), and temp
 * folders removed when the test file ends.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';

export const BIN = new URL('../../bin/writ.js', import.meta.url).pathname;

export interface CliAnswer {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A temp-folder maker whose folders are removed after the calling test file. */
export function tempDirs(prefix: string): () => string {
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  return () => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
}

/** The process environment without any WRIT_* setting, plus `extra`. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('WRIT_')) env[k] = v;
  return { ...env, ...extra };
}

/** Runs the built CLI; asynchronous so that the tests of a suite can run side by side. */
export function runWrit(args: readonly string[], cwd: string, env: Record<string, string> = {}): Promise<CliAnswer> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs `examples/<name>/run.mjs` as `npm run example:<name>` does, in a clean environment: its exit code and output. */
export async function runExample(name: string): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn(process.execPath, [new URL(`../../examples/${name}/run.mjs`, import.meta.url).pathname], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  return { code, out, err };
}

/** A `writ` server process started by `startWrit`. */
export interface RunningWrit {
  /** Where it listens, from its `Writ listening on` log line. */
  readonly url: string;
  /** Stops it (SIGTERM) and resolves once it has exited. */
  stop(): Promise<void>;
}

/** Starts `writ <args>` (serve, gateway, proxy) with only PATH in its environment; resolves once it logs where it listens. */
export async function startWrit(args: readonly string[]): Promise<RunningWrit> {
  const child = spawn(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  };
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        out += chunk;
        const match = /Writ listening on (https?:\/\/[^"\s]+)/.exec(out);
        if (match) resolve(match[1]!);
      });
      child.once('exit', (code) => reject(new Error(`writ ${args[0] ?? ''} exited ${code} before it listened: ${out}`)));
    });
    return { url, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
