/**
 * The gateway over stdio (`writ mcp`), for local MCP clients that start their
 * servers as commands. The process is one connection: it authenticates once,
 * at start, with the credential it was given (a task token, or an identity
 * token that may then ask for tasks with `request_access`), and every tool call
 * is checked and audited exactly as over HTTP. The task's end anywhere ends the
 * connection; stdout carries only MCP messages (logs go to stderr).
 */
import { serveStdio } from '@modelcontextprotocol/server/stdio';
import type { Server } from '@modelcontextprotocol/server';
import type { Logger } from 'pino';
import type { Connection, McpGateway } from './gateway.js';

export interface StdioGateway {
  /** Resolves when the connection has ended (the client closed stdin, or the task ended). */
  readonly closed: Promise<void>;
  close(): Promise<void>;
}

/**
 * Serves MCP on this process's stdin/stdout for the holder of `bearer`.
 * @throws WritError ERR_UNAUTHENTICATED when the credential is not accepted (audited)
 */
export async function serveGatewayStdio(options: {
  readonly gateway: McpGateway;
  readonly bearer: string;
  /** Until when the connection may ask for tasks; default: the credential's own expiry. */
  readonly credentialExpiresAt?: number;
  readonly logger?: Logger | undefined;
}): Promise<StdioGateway> {
  const { gateway, bearer, logger } = options;
  const caller = await gateway.authenticate(bearer);
  const bound = await gateway.boundTaskOf(caller, bearer);
  let finish: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => {
    finish = resolve;
  });
  let current: Server | undefined;
  let handle: { close(): Promise<void> } | undefined;
  const connection: Connection = {
    identity: caller.identity,
    credentialExpiresAt: options.credentialExpiresAt ?? gateway.credentialExpiry(caller),
    mayRequestAccess: caller.taskId === undefined,
    holdsTasks: true,
    presenter: {},
    task: bound,
    notifyToolsChanged: () => void current?.sendToolListChanged().catch(() => undefined),
    close: (reason) => {
      logger?.info({ reason }, 'MCP stdio connection closing');
      void handle?.close().finally(finish);
    },
  };
  const untrack = gateway.track(connection);
  // The connection's end ends a task granted in it, before `closed` resolves.
  let ending: Promise<void> | undefined;
  const end = (reason: string): Promise<void> => {
    ending ??= (async () => {
      untrack();
      await gateway.release(connection, reason);
      finish();
    })();
    return ending;
  };
  handle = serveStdio(
    () => {
      current = gateway.serverFor(connection);
      current.onclose = () => void end('the client closed the connection');
      return current;
    },
    { onerror: (error) => logger?.debug({ err: error }, 'MCP stdio message refused') },
  );
  process.stdin.once('end', () => void end('stdin ended'));
  return {
    closed,
    async close() {
      await handle?.close();
      await end('closed');
    },
  };
}
