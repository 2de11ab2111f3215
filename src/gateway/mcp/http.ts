/**
 * The gateway over MCP Streamable HTTP at `/mcp`, both protocol eras the SDK
 * speaks on one endpoint:
 *
 *   2025 revisions (2025-11-25, -06-18, -03-26): sessions. `initialize` with a
 *     bearer credential opens one (Mcp-Session-Id); every later request on it
 *     must present the same identity; a GET holds the stream that carries
 *     `notifications/tools/list_changed`; the task's end closes it.
 *   2026-07-28 (stateless): each request authenticates on its own and is
 *     served by a handler per task (or per identity, for the meta-tools), whose
 *     `subscriptions/listen` streams carry list_changed for that task alone; the
 *     task's end closes the handler and every stream it holds.
 *
 * No credential, or a bad one: 401 with `WWW-Authenticate: Bearer
 * resource_metadata=…` pointing at the RFC 9728 document, as the MCP
 * authorization spec asks. A request with an Origin header Writ was not told
 * to trust is refused (DNS rebinding), and the agent's token is never passed on.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { X509Certificate } from 'node:crypto';
import { NodeStreamableHTTPServerTransport, toNodeHandler, toWebRequest } from '@modelcontextprotocol/node';
import { createMcpHandler, isInitializeRequest, isLegacyRequest, type AuthInfo, type McpHttpHandler } from '@modelcontextprotocol/server';
import type { Logger } from 'pino';
import type { Caller } from '../../broker/broker.js';
import { isWritError, toProblem, WritError, type WritErrorCode } from '../../core/errors.js';
import type { Writ } from '../../writ.js';
import type { BoundTask, Connection, McpGateway } from './gateway.js';

export const MCP_PATH = '/mcp';

export interface McpHttpFront {
  /** The RFC 9728 protected-resource metadata document. */
  readonly metadata: Readonly<Record<string, unknown>>;
  /** Where that document is served (a path on this server). */
  readonly metadataPath: string;
  /** Serves one request to /mcp. `parsedBody` is the JSON body already read (Fastify's). */
  handle(req: IncomingMessage, res: ServerResponse, options: { readonly parsedBody?: unknown; readonly certificateChain?: readonly X509Certificate[] }): Promise<void>;
  /** Open 2025-era sessions. */
  readonly sessionCount: number;
  close(): Promise<void>;
}

interface Session {
  readonly id: string;
  readonly connection: Connection;
  readonly transport: NodeStreamableHTTPServerTransport;
  bearer: string;
  /** When `bearer` expires: a session never outlives the credential it is used with. */
  bearerExpiresAt: number;
  lastUsed: number;
  untrack: () => void;
}

interface TaskHandler {
  readonly handler: McpHttpHandler;
  readonly connection: Connection;
  untrack: () => void;
  lastUsed: number;
}

export function createMcpHttpFront(options: { readonly writ: Writ; readonly gateway: McpGateway; readonly logger?: Logger | undefined }): McpHttpFront {
  const { writ, gateway, logger } = options;
  const settings = writ.config.gateway;
  const resourceUrl = settings.resourceUrl ?? `${writ.config.issuer.replace(/\/+$/, '')}${MCP_PATH}`;
  const resource = new URL(resourceUrl);
  const metadataPath = `/.well-known/oauth-protected-resource${resource.pathname === '/' ? '' : resource.pathname}`;
  const metadataUrl = `${resource.origin}${metadataPath}`;
  const metadata = {
    resource: resourceUrl,
    authorization_servers: [writ.config.issuer],
    bearer_methods_supported: ['header'],
    resource_name: 'Writ MCP gateway',
  };
  const allowedOrigins = new Set(settings.allowedOrigins.map((o) => new URL(o).origin));
  const sessions = new Map<string, Session>();
  const handlers = new Map<string, TaskHandler>();

  const sweep = setInterval(() => {
    const idleBefore = writ.clock.now() - settings.sessionIdleTimeout * 1000;
    for (const session of sessions.values()) if (session.lastUsed < idleBefore) void closeSession(session, 'idle');
    for (const entry of handlers.values()) if (entry.lastUsed < idleBefore) entry.connection.close('idle');
  }, Math.min(60_000, settings.sessionIdleTimeout * 1000));
  sweep.unref();

  const closeSession = async (session: Session, reason: string): Promise<void> => {
    if (!sessions.delete(session.id)) return;
    session.untrack();
    await gateway.release(session.connection, reason);
    logger?.debug({ session: session.id, reason }, 'MCP session closed');
    await session.transport.close().catch(() => undefined);
  };

  /** A refusal of a request Writ could authenticate (a session that is not its own): on the record. */
  const recordRefusal = (actorId: string | undefined, detail: string): Promise<void> =>
    writ.audit
      .append({ type: 'authentication.failed', decision: 'deny', reason: 'ERR_FORBIDDEN', detail, ...(actorId === undefined ? {} : { actor: { id: actorId } }), data: { endpoint: MCP_PATH } })
      .then(
        () => undefined,
        () => undefined,
      );

  const unauthorized = (res: ServerResponse, presented: boolean): void => {
    const challenge = presented ? `Bearer error="invalid_token", resource_metadata="${metadataUrl}"` : `Bearer resource_metadata="${metadataUrl}"`;
    sendProblem(res, 'ERR_UNAUTHENTICATED', presented ? 'the bearer credential was not accepted' : 'present a task token or an identity token as a Bearer credential', { 'www-authenticate': challenge });
  };

  const authenticate = async (res: ServerResponse, bearer: string | undefined, certificateChain: readonly X509Certificate[] | undefined): Promise<{ caller: Caller; bound: BoundTask | undefined } | undefined> => {
    if (bearer === undefined) {
      unauthorized(res, false);
      return undefined;
    }
    try {
      const caller = await gateway.authenticate(bearer, certificateChain === undefined ? undefined : [...certificateChain]);
      return { caller, bound: await gateway.boundTaskOf(caller, bearer) };
    } catch (error) {
      if (isWritError(error) && error.code === 'ERR_UNAUTHENTICATED') {
        unauthorized(res, true);
        return undefined;
      }
      throw error;
    }
  };

  const connectionFor = (caller: Caller, bound: BoundTask | undefined, holdsTasks: boolean, notify: () => void, close: (reason: string) => void): Connection => ({
    identity: caller.identity,
    credentialExpiresAt: gateway.credentialExpiry(caller),
    mayRequestAccess: caller.taskId === undefined,
    presentsTaskToken: caller.taskId !== undefined,
    holdsTasks,
    presenter: { certificateThumbprint: caller.certificateThumbprint },
    task: bound,
    notifyToolsChanged: notify,
    close,
  });

  /** A 2025-era request: on its session, or an `initialize` opening one. */
  const serveLegacy = async (req: IncomingMessage, res: ServerResponse, bearer: string | undefined, parsedBody: unknown, chain: readonly X509Certificate[] | undefined): Promise<void> => {
    const sessionId = headerOf(req, 'mcp-session-id');
    if (sessionId !== undefined) {
      if (bearer === undefined) return unauthorized(res, false);
      const session = sessions.get(sessionId);
      // The fast path: the session's own credential, unexpired, and no certificate to check
      // again. A certificate-bound session proves its certificate on every request, or a
      // copied bearer and session id would do without the private key.
      const bound = session?.connection.presenter.certificateThumbprint;
      if (session !== undefined && bound === undefined && sameSecret(bearer, session.bearer) && writ.clock.now() < session.bearerExpiresAt) {
        session.lastUsed = writ.clock.now();
        return session.transport.handleRequest(req, res, parsedBody);
      }
      // Anything else authenticates first: whether a session exists is not told to a stranger.
      const authenticated = await authenticate(res, bearer, chain);
      if (authenticated === undefined) return;
      if (session === undefined) return sendProblem(res, 'ERR_NOT_FOUND', 'no such MCP session (it ended, or expired); initialize a new one');
      const { caller } = authenticated;
      const refuse = async (detail: string): Promise<void> => {
        await recordRefusal(caller.identity.id, detail);
        sendProblem(res, 'ERR_FORBIDDEN', detail);
      };
      if (caller.identity.id !== session.connection.identity.id) return refuse('this session belongs to another identity');
      if (caller.taskId !== undefined && caller.taskId !== session.connection.task?.id) return refuse('this session acts for another task');
      if (bound !== undefined && caller.certificateThumbprint !== bound) return refuse('this session is bound to a client certificate this request did not present');
      // A task token that authenticates is the task's current one: a renewal (at a checkpoint here, or
      // over the REST API) replaced the one the session held, and its calls go on with the new one.
      const held = session.connection.task;
      const presented = authenticated.bound;
      if (held !== undefined && presented !== undefined && presented.token !== held.token && presented.issuedAt >= held.issuedAt) session.connection.task = presented;
      session.bearer = bearer;
      session.bearerExpiresAt = gateway.credentialExpiry(caller);
      session.connection.credentialExpiresAt = Math.max(session.connection.credentialExpiresAt, caller.taskId === undefined ? session.bearerExpiresAt : 0);
      session.lastUsed = writ.clock.now();
      return session.transport.handleRequest(req, res, parsedBody);
    }
    // Who asks comes first: an unauthenticated request learns nothing, whatever it sent.
    const authenticated = await authenticate(res, bearer, chain);
    if (authenticated === undefined) return;
    if (req.method !== 'POST' || !isInitializeRequest(parsedBody)) {
      return sendProblem(res, 'ERR_VALIDATION', 'a request without Mcp-Session-Id must be an initialize request');
    }
    if (sessions.size >= settings.maxSessions) return sendProblem(res, 'ERR_OVER_CAPACITY', 'too many open MCP sessions; try again later');
    // Clients rarely end their sessions (the SDK's close() sends no DELETE): past its
    // share, an identity's least recently used session makes way for its new one.
    const identityId = authenticated.caller.identity.id;
    const own = [...sessions.values()].filter((s) => s.connection.identity.id === identityId).sort((x, y) => x.lastUsed - y.lastUsed);
    for (const stale of own.slice(0, Math.max(0, own.length - settings.maxSessionsPerIdentity + 1))) await closeSession(stale, 'the identity opened more sessions than it may hold');
    let session: Session | undefined;
    const transport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: true,
      onsessioninitialized: (id) => {
        if (session !== undefined) return;
        session = { id, connection, transport, bearer: bearer as string, bearerExpiresAt: gateway.credentialExpiry(authenticated.caller), lastUsed: writ.clock.now(), untrack: () => undefined };
        sessions.set(id, session);
        session.untrack = gateway.track(connection);
      },
      onsessionclosed: (id) => {
        const closing = sessions.get(id);
        if (closing !== undefined) void closeSession(closing, 'client ended it');
      },
    });
    const connection = connectionFor(
      authenticated.caller,
      authenticated.bound,
      true,
      () => void server.sendToolListChanged().catch(() => undefined),
      (reason) => {
        if (session !== undefined) void closeSession(session, reason);
      },
    );
    const server = gateway.serverFor(connection);
    await server.connect(transport);
    await transport.handleRequest(req, res, parsedBody);
  };

  /** A 2026-07-28 request: authenticated on its own, served by its task's (or identity's) handler. */
  const serveModern = async (req: IncomingMessage & { auth?: AuthInfo }, res: ServerResponse, bearer: string | undefined, parsedBody: unknown, chain: readonly X509Certificate[] | undefined): Promise<void> => {
    const authenticated = await authenticate(res, bearer, chain);
    if (authenticated === undefined) return;
    const { caller, bound } = authenticated;
    const key = bound === undefined ? `identity:${caller.identity.id}` : `task:${bound.id}`;
    let entry = handlers.get(key);
    if (entry === undefined) {
      // The same shares as sessions: past its share an identity's least recently used handler makes way; past the total, none is made.
      if (handlers.size >= settings.maxSessions) return sendProblem(res, 'ERR_OVER_CAPACITY', 'too many open MCP handlers; try again later');
      const own = [...handlers.values()].filter((h) => h.connection.identity.id === caller.identity.id).sort((x, y) => x.lastUsed - y.lastUsed);
      for (const stale of own.slice(0, Math.max(0, own.length - settings.maxSessionsPerIdentity + 1))) stale.connection.close('the identity opened more handlers than it may hold');
      const connection = connectionFor(
        caller,
        bound,
        false,
        () => created.handler.notify.toolsChanged(),
        () => {
          if (handlers.get(key) !== created) return;
          handlers.delete(key);
          created.untrack();
          void created.handler.close().catch(() => undefined);
        },
      );
      const handler = createMcpHandler(
        (ctx) => {
          // Each request's own caller (its certificate, its token), on the task's handler.
          const extra = ctx.authInfo?.extra as { caller: Caller; bound: BoundTask | undefined } | undefined;
          return gateway.serverFor(extra === undefined ? connection : connectionFor(extra.caller, extra.bound, false, connection.notifyToolsChanged, connection.close));
        },
        { legacy: 'reject', onerror: (error) => logger?.debug({ err: error }, 'MCP request refused') },
      );
      const created: TaskHandler = { handler, connection, untrack: () => undefined, lastUsed: writ.clock.now() };
      created.untrack = bound === undefined ? () => undefined : gateway.track(connection);
      handlers.set(key, created);
      entry = created;
    }
    entry.lastUsed = writ.clock.now();
    req.auth = { token: bearer as string, clientId: caller.identity.id, scopes: [], extra: { caller, bound } };
    await toNodeHandler(entry.handler)(req, res, parsedBody);
  };

  return {
    metadata,
    metadataPath,
    get sessionCount() {
      return sessions.size;
    },

    async handle(req, res, { parsedBody, certificateChain }) {
      res.setHeader('cache-control', 'no-store');
      res.setHeader('x-content-type-options', 'nosniff');
      const origin = headerOf(req, 'origin');
      if (origin !== undefined && !allowedOrigins.has(origin)) {
        await recordRefusal(undefined, `a request from Origin ${JSON.stringify(origin.slice(0, 200))}, which gateway.allowedOrigins does not list`);
        return sendProblem(res, 'ERR_FORBIDDEN', 'this Origin may not call the MCP gateway');
      }
      const bearer = bearerOf(req);
      try {
        const onSession = headerOf(req, 'mcp-session-id') !== undefined;
        const legacy = onSession || (await isLegacyRequest(await toWebRequest(req, parsedBody), parsedBody));
        if (legacy) await serveLegacy(req, res, bearer, parsedBody, certificateChain);
        else await serveModern(req, res, bearer, parsedBody, certificateChain);
      } catch (error) {
        logger?.error({ err: error }, 'MCP request failed');
        if (!res.headersSent) sendProblem(res, isWritError(error) ? error.code : 'ERR_INTERNAL', isWritError(error) ? error.detail : 'the MCP request could not be served');
        else res.end();
      }
    },

    async close() {
      clearInterval(sweep);
      await Promise.all([...sessions.values()].map((s) => closeSession(s, 'gateway closing')));
      await Promise.all(
        [...handlers.values()].map(async (h) => {
          h.untrack();
          await h.handler.close().catch(() => undefined);
        }),
      );
      handlers.clear();
    },
  };
}

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return typeof value === 'string' && value.length > 0 ? value : undefined;
}

function bearerOf(req: IncomingMessage): string | undefined {
  const header = headerOf(req, 'authorization');
  const match = header === undefined ? null : /^Bearer +([A-Za-z0-9._~+/=-]+)$/i.exec(header);
  return match?.[1];
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function sendProblem(res: ServerResponse, code: WritErrorCode, detail: string, headers: Record<string, string> = {}): void {
  const problem = toProblem(new WritError(code, { detail }));
  res.writeHead(problem.status, { 'content-type': 'application/problem+json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(problem));
}
