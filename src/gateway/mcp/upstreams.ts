/**
 * The MCP servers behind the gateway. Each is connected the first time it is
 * needed, with the official SDK client: a stdio command Writ starts itself, or
 * a Streamable HTTP URL. Credentials come from the vault at connect time and go
 * into the child's environment or the request headers; they are never in the
 * configuration, and never in a log (an upstream's stderr is logged with every
 * injected value masked).
 *
 * An upstream that dies is started again on next use, after a backoff that
 * doubles per consecutive failure (250 ms up to 30 s); inside the backoff, calls
 * fail at once with ERR_UPSTREAM_UNAVAILABLE rather than hammering it. A
 * stdio child gets a minimal environment (the SDK's safe defaults: PATH, HOME...,
 * plus what the configuration gives it), never Writ's own: WRIT_MASTER_KEY stays here.
 */
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { Client, StreamableHTTPClientTransport, type CallToolResult, type StandardSchemaV1, type Tool } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import type { Logger } from 'pino';
import { resolveConfigPath, type UpstreamConfig, type WritConfig } from '../../core/config.js';
import { WritError } from '../../core/errors.js';
import { WRIT_VERSION } from '../../core/version.js';
import type { Vault } from '../../leases/vault.js';

const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 30_000;

export interface UpstreamListing {
  readonly upstream: UpstreamConfig;
  /**
   * Its tools: those it listed last while it is down (calls to them are refused
   * with ERR_UPSTREAM_UNAVAILABLE, not as unknown tools); undefined when it was never reached.
   */
  readonly tools: readonly Tool[] | undefined;
}

export interface UpstreamPool {
  readonly configs: readonly UpstreamConfig[];
  /** Every upstream's tools, connecting those not connected yet (in parallel). */
  listings(): Promise<UpstreamListing[]>;
  /**
   * Calls `tool` on `upstream` with `args`; the upstream's own result, tool errors included.
   * @throws WritError ERR_UPSTREAM_UNAVAILABLE (not reachable, died mid-call, timed out)
   * @throws the upstream's protocol error (unknown tool, invalid params), as the SDK raised it
   */
  call(upstream: string, tool: string, args: Record<string, unknown>, signal?: AbortSignal): Promise<CallToolResult>;
  /** Called when an upstream's tools may have changed (it said so, it came up, it went away). */
  onToolsChanged(listener: (upstream: string) => void): () => void;
  close(): Promise<void>;
}

/**
 * The SDK client, checking a `tools/call` result exactly as its own `request()`
 * does (the negotiated era's wire schema), with a check built once. Asked
 * without a schema, `request()` first probes its registry for the method by
 * parsing `undefined` and formatting that error, on every call: about 15 µs,
 * more than the check itself.
 */
class UpstreamClient extends Client {
  readonly callToolResult: StandardSchemaV1<unknown, CallToolResult> = {
    '~standard': {
      version: 1,
      vendor: 'writ',
      validate: (value) => {
        const outcome = this._wireCodec().validateResult('tools/call', value);
        if (outcome.ok) return { value: outcome.value as CallToolResult };
        return { issues: [{ message: outcome.reason === 'invalid' ? outcome.message : 'not-in-era: tools/call' }] };
      },
    },
  };
}

interface Connection {
  readonly client: UpstreamClient;
  tools: Tool[] | undefined;
}

interface UpstreamState {
  readonly config: UpstreamConfig;
  connection: Connection | undefined;
  connecting: Promise<Connection> | undefined;
  failures: number;
  retryAt: number;
  lastError: string | undefined;
  /** What it listed last, kept while it is down. */
  lastTools: Tool[] | undefined;
}

export interface UpstreamPoolOptions {
  readonly config: WritConfig;
  readonly vault: Vault;
  readonly logger?: Logger | undefined;
  readonly now?: () => number;
}

export function createUpstreamPool(options: UpstreamPoolOptions): UpstreamPool {
  const { config, vault, logger } = options;
  const now = options.now ?? Date.now;
  const callTimeoutMs = config.gateway.callTimeout * 1000;
  const connectTimeoutMs = config.gateway.connectTimeout * 1000;
  const listeners = new Set<(upstream: string) => void>();
  const states = new Map<string, UpstreamState>(
    config.gateway.upstreams.map((u) => [u.name, { config: u, connection: undefined, connecting: undefined, failures: 0, retryAt: 0, lastError: undefined, lastTools: undefined }]),
  );
  let closed = false;

  const changed = (upstream: string): void => {
    for (const listener of listeners) {
      try {
        listener(upstream);
      } catch (error) {
        logger?.error({ err: error, upstream }, 'tools-changed listener failed');
      }
    }
  };

  const unavailable = (state: UpstreamState, detail: string): WritError =>
    new WritError('ERR_UPSTREAM_UNAVAILABLE', { detail: `upstream ${state.config.name} is unavailable`, internal: detail });

  const failed = (state: UpstreamState, error: unknown): void => {
    state.failures += 1;
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (state.failures - 1));
    state.retryAt = now() + backoff;
    state.lastError = error instanceof Error ? error.message : String(error);
    logger?.warn({ upstream: state.config.name, failures: state.failures, retryInMs: backoff, err: state.lastError }, 'upstream MCP server unavailable');
  };

  const connect = async (state: UpstreamState): Promise<Connection> => {
    const u = state.config;
    const secrets: string[] = [];
    const injected: Record<string, string> = {};
    for (const injection of u.inject) {
      const value = await vault.reveal(injection.secret);
      secrets.push(value);
      injected[injection.env ?? injection.header ?? ''] = `${injection.prefix}${value}`;
    }
    const client = new UpstreamClient({ name: 'writ-gateway', version: WRIT_VERSION });
    const connection: Connection = { client, tools: undefined };
    client.setNotificationHandler('notifications/tools/list_changed', () => {
      connection.tools = undefined;
      changed(u.name);
    });
    let transport: StdioClientTransport | StreamableHTTPClientTransport;
    if (u.command !== undefined) {
      const stdio = new StdioClientTransport({
        command: u.command,
        args: [...u.args],
        ...(u.cwd === undefined ? {} : { cwd: resolveConfigPath(config, u.cwd) }),
        env: { ...u.env, ...injected },
        stderr: 'pipe',
      });
      transport = stdio;
      logStderr(stdio.stderr as Readable | null, u.name, secrets);
    } else {
      transport = new StreamableHTTPClientTransport(new URL(u.url as string), { requestInit: { headers: { ...u.headers, ...injected } } });
    }
    client.onclose = () => {
      if (state.connection !== connection) return;
      state.connection = undefined;
      if (closed) return;
      failed(state, new Error('the upstream closed its connection'));
      changed(u.name);
    };
    try {
      await client.connect(transport, { timeout: connectTimeoutMs });
      connection.tools = await listAll(client, connectTimeoutMs);
    } catch (error) {
      await client.close().catch(() => undefined);
      throw error;
    }
    return connection;
  };

  const connected = async (state: UpstreamState): Promise<Connection> => {
    if (closed) throw unavailable(state, 'the gateway is closing');
    if (state.connection !== undefined) return state.connection;
    if (state.connecting !== undefined) return state.connecting;
    if (now() < state.retryAt) throw unavailable(state, `backing off after ${state.failures} failure(s): ${state.lastError ?? ''}`);
    const attempt = connect(state).then(
      (connection) => {
        state.connecting = undefined;
        if (closed) {
          void connection.client.close();
          throw unavailable(state, 'the gateway is closing');
        }
        const recovered = state.failures > 0;
        state.connection = connection;
        state.lastTools = connection.tools;
        state.failures = 0;
        state.lastError = undefined;
        logger?.info({ upstream: state.config.name, tools: connection.tools?.length ?? 0 }, 'upstream MCP server connected');
        if (recovered) changed(state.config.name);
        return connection;
      },
      (error: unknown) => {
        state.connecting = undefined;
        if (isWritError(error, 'ERR_SECRET_NOT_FOUND')) {
          failed(state, error);
          throw error;
        }
        failed(state, error);
        throw unavailable(state, error instanceof Error ? error.message : String(error));
      },
    );
    state.connecting = attempt;
    return attempt;
  };

  const stateOf = (name: string): UpstreamState => {
    const state = states.get(name);
    if (state === undefined) throw new WritError('ERR_NOT_FOUND', { detail: `no upstream named ${name}` });
    return state;
  };

  return {
    configs: config.gateway.upstreams,

    async listings() {
      return Promise.all(
        [...states.values()].map(async (state): Promise<UpstreamListing> => {
          try {
            const connection = await connected(state);
            connection.tools ??= await listAll(connection.client, callTimeoutMs);
            state.lastTools = connection.tools;
            return { upstream: state.config, tools: connection.tools };
          } catch {
            return { upstream: state.config, tools: state.lastTools };
          }
        }),
      );
    },

    async call(upstream, tool, args, signal) {
      const state = stateOf(upstream);
      const connection = await connected(state);
      try {
        // The plain request, not callTool: the result passes through to the agent's own client, which
        // validates it against the tool's output schema itself.
        const { client } = connection;
        return await client.request({ method: 'tools/call', params: { name: tool, arguments: args } }, client.callToolResult, { timeout: callTimeoutMs, ...(signal === undefined ? {} : { signal }) });
      } catch (error) {
        // A protocol error is the upstream's answer (unknown tool, bad params); anything else is the connection.
        if (isProtocolError(error)) throw error;
        throw unavailable(state, error instanceof Error ? error.message : String(error));
      }
    },

    onToolsChanged(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    async close() {
      closed = true;
      await Promise.all(
        [...states.values()].map(async (state) => {
          const connection = state.connection ?? (await state.connecting?.catch(() => undefined));
          state.connection = undefined;
          await connection?.client.close().catch(() => undefined);
        }),
      );
    },
  };

  function logStderr(stream: Readable | null, upstream: string, secrets: readonly string[]): void {
    if (stream === null) return;
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    // Masked before anything is cut; a line holding the start or the end of a
    // secret (one split over two lines, say) is withheld whole.
    const pieces = secrets.filter((s) => s.length >= 8).flatMap((s) => [s.slice(0, 8), s.slice(-8)]);
    lines.on('line', (line) => {
      let text = line;
      for (const secret of secrets) if (secret.length > 0) text = text.split(secret).join('[secret]');
      if (pieces.some((piece) => text.includes(piece))) text = '[line withheld: it held part of an injected secret]';
      logger?.debug({ upstream, stderr: text.length > 2000 ? `${text.slice(0, 2000)}…` : text }, 'upstream stderr');
    });
    lines.on('error', () => undefined);
  }
}

async function listAll(client: Client, timeoutMs: number): Promise<Tool[]> {
  const result = await client.listTools(undefined, { timeout: timeoutMs });
  return result.tools;
}

function isWritError(error: unknown, code: string): boolean {
  return error instanceof WritError && error.code === code;
}

/** An error the upstream answered with (a JSON-RPC error object), as opposed to a broken connection or timeout. */
function isProtocolError(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { name?: unknown }).name === 'ProtocolError';
}
