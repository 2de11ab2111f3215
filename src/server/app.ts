/**
 * The HTTP API. Each route reads as its steps: authenticate, validate, decide,
 * answer; the work happens in the broker and the action check. Errors leave as
 * RFC 9457 problem+json with a stable code; anything unexpected is a generic
 * 500 with a correlation id that finds it in the log.
 */
import { isoOrNull as iso } from '../core/clock.js';
import { constants, randomUUID, type X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { Server as HttpsServer } from 'node:https';
import { TLSSocket } from 'node:tls';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { resolveConfigPath } from '../core/config.js';
import { WritError, toProblem } from '../core/errors.js';
import { WRIT_VERSION } from '../core/version.js';
import { APPROVAL_REQUEST_STATES, type AdminScope, type ApprovalRequestState, type Identity, type Task } from '../core/types.js';
import { approvalView, isApprovalState } from '../broker/approvals.js';
import { breakGlassView } from '../broker/break-glass.js';
import { validationError, type Credentials, type EndState, type TaskRequestResult } from '../broker/broker.js';
import { requireScope, type AdminPrincipal } from '../identity/admin-tokens.js';
import type { CredentialResult } from '../identity/trust-sources.js';
import { peerCertificateChain } from '../identity/x509-svid.js';
import type { AdminTokenRecord } from '../store/store.js';
import { createMcpGateway } from '../gateway/mcp/gateway.js';
import { createMcpHttpFront, MCP_PATH } from '../gateway/mcp/http.js';
import { createUpstreamPool } from '../gateway/mcp/upstreams.js';
import { registerOAuthRoutes, TOKEN_PATH } from './oauth.js';
import { registerLeaseRoutes } from './leases.js';
import { registerProxyRoutes } from '../gateway/http/routes.js';
import { registerRevocationRoutes } from './revocations.js';
import { adminActor, type IdentityStateChange, type Writ } from '../writ.js';

// Only the shape is checked here; sizes and syntax are the action check's to
// judge, so the answer over HTTP is the answer in process (server.bodyLimit caps the body).
const authorizeBodySchema = z
  .object({
    token: z.string(),
    action: z.string(),
    resource: z.string(),
    context: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

const approvalQuerySchema = z
  .object({
    /** Comma-separated states; default pending. */
    state: z
      .string()
      .max(100)
      .refine((v) => v.split(',').every(isApprovalState), `comma-separated states: ${APPROVAL_REQUEST_STATES.join(', ')}`)
      .optional(),
    task: z.string().max(64).regex(/^task_[A-Za-z0-9_-]{22}$/, 'a task id').optional(),
    limit: z.coerce.number().int().min(1).max(200).optional(),
  })
  .strict();

const breakGlassQuerySchema = z
  .object({
    /** false (default): grants owed a review; true: reviewed; all. */
    reviewed: z.enum(['false', 'true', 'all']).optional(),
    limit: z.coerce.number().int().min(1).max(200).optional(),
  })
  .strict();

/** A review's note is required: it is the post-incident record. */
const reviewBodySchema = z.object({ note: z.string().min(1).max(2000).regex(/^[^\p{Cc}\p{Cf}\p{Cs}]+$/u, 'no control or format characters') }).strict();

const endBodySchema = z
  .object({ note: z.string().max(500).regex(/^[^\p{Cc}\p{Cf}\p{Cs}]*$/u, 'no control characters').optional() })
  .strict();

/** The JSON shape of an identity in API responses. */
export function identityView(identity: Identity) {
  return {
    id: identity.id,
    actorType: identity.actorType,
    owner: identity.owner,
    environment: identity.environment,
    labels: identity.labels,
    state: identity.state,
    source: identity.source,
    adminScopes: identity.adminScopes,
    createdAt: iso(identity.createdAt),
    updatedAt: iso(identity.updatedAt),
    lastSeenAt: iso(identity.lastSeenAt),
    expiresAt: iso(identity.expiresAt),
  };
}

/** An admin token as the API shows it: never its hash. */
export function adminTokenView(record: AdminTokenRecord) {
  return {
    id: record.id,
    name: record.name,
    scopes: record.scopes,
    createdBy: record.createdBy,
    createdAt: iso(record.createdAt),
    expiresAt: iso(record.expiresAt),
    revokedAt: iso(record.revokedAt),
    lastUsedAt: iso(record.lastUsedAt),
  };
}

/** The JSON shape of a task in API responses. */
export function taskView(task: Task) {
  return {
    id: task.id,
    state: task.state,
    identity: task.identityId,
    purpose: task.purpose,
    intent: task.intent,
    environment: task.environment,
    requestedScopes: task.requestedScopes,
    grantedScopes: task.grantedScopes,
    refusedScopes: task.refusedScopes,
    policyVersion: task.policyVersion,
    parentTaskId: task.parentTaskId,
    lineage: task.lineage,
    delegators: task.delegators,
    mayAct: task.mayAct,
    renewals: task.renewals,
    createdAt: new Date(task.createdAt).toISOString(),
    expiresAt: new Date(task.expiresAt).toISOString(),
    endedAt: task.endedAt === null ? null : new Date(task.endedAt).toISOString(),
    endReason: task.endReason,
  };
}

export interface ServerOptions {
  readonly logger: Logger;
  /** `gateway`: only the MCP gateway (and health, JWKS), as `writ gateway` runs it. Default: everything. */
  readonly routes?: 'all' | 'gateway';
}

export function createServer(writ: Writ, options: ServerOptions): FastifyInstance {
  const tls = writ.config.server.tls;
  const clientCertificates = tls?.clientCertificates ?? 'off';
  const app = Fastify({
    ...(tls === undefined ? {} : { https: httpsOptions(writ) }),
    loggerInstance: options.logger as FastifyBaseLogger,
    bodyLimit: writ.config.server.bodyLimit,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    requestIdHeader: false,
    genReqId: () => randomUUID(),
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  app.removeContentTypeParser('text/plain');

  app.addHook('onSend', async (_request, reply) => {
    reply.header('cache-control', 'no-store');
    reply.header('x-content-type-options', 'nosniff');
  });
  app.addHook('onResponse', async (request, reply) => {
    request.log.debug({ method: request.method, url: request.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
  });

  app.setErrorHandler((error, request, reply) => sendProblem(request, reply, asWritError(error, request)));

  // A request's certificate is verified at most once, however many steps ask.
  const certificateChecks = new WeakMap<FastifyRequest, CredentialResult | undefined>();
  /** The trust sources' verdict on the request's client certificate; undefined without one. */
  const verifiedCertificateOf = (request: FastifyRequest): CredentialResult | undefined => {
    if (certificateChecks.has(request)) return certificateChecks.get(request);
    const chain = certificateChainOf(request);
    const verified = chain.length === 0 ? undefined : writ.trustSources.verifyCertificate(chain);
    certificateChecks.set(request, verified);
    return verified;
  };

  /** What the request carries to prove who it is: its bearer token and its client certificate chain. */
  const credentialsOf = (request: FastifyRequest): Credentials => ({ bearer: bearerOf(request), certificateChain: certificateChainOf(request) });

  if (clientCertificates === 'required') {
    app.addHook('onRequest', async (request) => {
      // Gate on the matched route, not the raw target: `/%761/tasks` and the
      // absolute form `https://host/v1/tasks` route to /v1 too.
      const route = request.routeOptions.url ?? request.url;
      // The MCP gateway hands out tasks too (request_access): the same gate.
      if (!route.startsWith('/v1/') && route !== MCP_PATH && route !== TOKEN_PATH) return;
      // `required` means a valid X.509-SVID, not just any certificate.
      const verified = verifiedCertificateOf(request);
      if (verified?.ok === true) return;
      const reason = verified === undefined ? 'ERR_CERT_INVALID' : verified.code;
      const detail = verified === undefined ? 'no client certificate' : verified.detail;
      await writ.audit
        .append({
          type: 'authentication.failed',
          decision: 'deny',
          reason,
          detail,
          ...(verified?.subject === undefined ? {} : { actor: { id: verified.subject } }),
          data: { endpoint: `${request.method} ${request.routeOptions.url ?? request.url.slice(0, 100)}` },
        })
        .catch(() => undefined);
      throw new WritError('ERR_UNAUTHENTICATED', { internal: `${reason}: ${detail}` });
    });
  }

  /** The admin principal of a request, or a refusal (401 without one, 403 without the scope), audited. */
  const admin = async (request: FastifyRequest, scope: AdminScope, endpoint: string): Promise<AdminPrincipal> => {
    const authentication = await writ.authenticateAdmin(bearerOf(request));
    if (!authentication.ok) {
      await writ.audit
        .append({
          type: 'authentication.failed',
          decision: 'deny',
          reason: authentication.code,
          detail: `admin API: ${authentication.detail}`,
          ...(authentication.subject === undefined ? {} : { actor: { id: authentication.subject } }),
          data: { endpoint },
        })
        .catch(() => undefined);
      throw new WritError('ERR_UNAUTHENTICATED', { internal: `${authentication.code}: ${authentication.detail}` });
    }
    const { principal } = authentication;
    try {
      requireScope(principal, scope);
    } catch (error) {
      await writ.audit.append({ type: 'admin.denied', decision: 'deny', reason: 'ERR_FORBIDDEN', actor: adminActor(principal), detail: `needs ${scope}`, data: { endpoint } }).catch(() => undefined);
      throw error;
    }
    return principal;
  };
  app.setNotFoundHandler((request, reply) => sendProblem(request, reply, new WritError('ERR_NOT_FOUND')));

  app.get('/', async () => ({
    name: 'writ',
    version: WRIT_VERSION,
    policyVersion: writ.policy().version,
    endpoints: [
      'POST /v1/tasks',
      'GET /v1/tasks/{id}',
      'POST /v1/tasks/{id}/complete',
      'POST /v1/tasks/{id}/fail',
      'POST /v1/tasks/{id}/revoke',
      'POST /v1/tasks/{id}/activate',
      'POST /v1/tasks/{id}/renew',
      'POST /oauth/token',
      'GET /.well-known/oauth-authorization-server',
      'POST /v1/authorize',
      'GET /v1/approvals',
      'GET /v1/approvals/{id}',
      'POST /v1/approvals/{id}/approve',
      'POST /v1/approvals/{id}/deny',
      'POST /v1/break-glass',
      'GET /v1/break-glass',
      'GET /v1/break-glass/{id}',
      'POST /v1/break-glass/{id}/end',
      'POST /v1/break-glass/{id}/review',
      'GET /v1/identities',
      'POST /v1/identities',
      'GET /v1/identities/{id}',
      'POST /v1/identities/{id}/claim',
      'POST /v1/identities/{id}/suspend',
      'POST /v1/identities/{id}/reactivate',
      'POST /v1/identities/{id}/decommission',
      'POST /v1/admin/policy/reload',
      'GET /v1/admin/tokens',
      'POST /v1/admin/tokens',
      'POST /v1/admin/tokens/{id}/revoke',
      'GET /.well-known/jwks.json',
      'GET /v1/revocations',
      'POST|GET|DELETE /mcp',
      'GET /.well-known/oauth-protected-resource/mcp',
      ...(writ.devIssuer ? ['GET /dev-issuer/jwks.json'] : []),
      'GET /healthz',
    ],
  }));


  // The MCP gateway: agents' tool calls, checked per call (gateway/mcp/).
  const upstreams = createUpstreamPool({ config: writ.config, vault: writ.vault, logger: options.logger });
  const gateway = createMcpGateway({ writ, pool: upstreams, logger: options.logger });
  const mcp = createMcpHttpFront({ writ, gateway, logger: options.logger });
  // Before the server stops listening: open MCP streams would otherwise hold the close forever.
  app.addHook('preClose', async () => {
    await mcp.close();
    await gateway.close();
  });
  app.get(mcp.metadataPath, async () => mcp.metadata);
  app.get('/healthz', async () => ({ status: 'ok', policyVersion: writ.policy().version, mcpSessions: mcp.sessionCount }));
  app.route({
    method: ['GET', 'POST', 'DELETE'],
    url: MCP_PATH,
    bodyLimit: writ.config.gateway.maxRequestBytes,
    handler: async (request, reply) => {
      // The MCP SDK writes the response (JSON or an event stream) itself.
      reply.hijack();
      await mcp.handle(request.raw, reply.raw, { parsedBody: request.body, certificateChain: certificateChainOf(request) });
    },
  });
  if (options.routes === 'gateway') return app;

  app.get('/.well-known/jwks.json', async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300');
    return writ.taskKeys.jwks();
  });

  if (writ.devIssuer !== undefined) {
    const devIssuer = writ.devIssuer;
    app.get('/dev-issuer/jwks.json', async () => devIssuer.ring.jwks());
  }

  registerOAuthRoutes(app, writ, certificateChainOf);
  registerLeaseRoutes(app, writ);
  registerProxyRoutes(app, writ, { logger: options.logger });
  registerRevocationRoutes(app, writ);

  const sendTaskResult = (reply: FastifyReply, result: TaskRequestResult) => {
    switch (result.status) {
      case 'granted':
      case 'partial':
        return reply.code(201).send({
          status: result.status,
          task: taskView(result.task),
          token: result.token,
          tokenType: 'Bearer',
          expiresIn: result.expiresIn,
          warnings: result.warnings,
        });
      case 'pending_approval':
        return reply.code(202).send({ status: result.status, task: taskView(result.task), approvals: result.approvals.map(approvalView), warnings: result.warnings });
      case 'denied':
        throw new WritError('ERR_POLICY_DENIED', {
          detail: 'policy refused every requested scope',
          extensions: { taskId: result.task.id, policies: result.policies, refusedScopes: result.task.refusedScopes },
        });
    }
  };

  app.post('/v1/tasks', async (request, reply) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: false, endpoint: 'POST /v1/tasks' });
    return sendTaskResult(reply, await writ.broker.requestTask(caller, request.body));
  });

  app.post<{ Params: { id: string } }>('/v1/tasks/:id/activate', async (request, reply) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: false, endpoint: 'POST /v1/tasks/{id}/activate' });
    return sendTaskResult(reply, await writ.broker.activateTask(caller, request.params.id));
  });

  app.get<{ Querystring: Record<string, unknown> }>('/v1/approvals', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'GET /v1/approvals' });
    const query = approvalQuerySchema.safeParse(request.query ?? {});
    if (!query.success) throw validationError(query.error.issues);
    const { state, task, limit } = query.data;
    const approvals = await writ.approvals.list(caller, { ...(state === undefined ? {} : { states: state.split(',') as ApprovalRequestState[] }), ...(task === undefined ? {} : { taskId: task }), ...(limit === undefined ? {} : { limit }) });
    return { approvals: approvals.map(approvalView) };
  });

  app.get<{ Params: { id: string } }>('/v1/approvals/:id', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'GET /v1/approvals/{id}' });
    return { approval: approvalView(await writ.approvals.get(caller, request.params.id)) };
  });

  const voteRoute = (verb: 'approve' | 'deny') => {
    app.post<{ Params: { id: string } }>(`/v1/approvals/:id/${verb}`, async (request) => {
      const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: `POST /v1/approvals/{id}/${verb}` });
      const body = endBodySchema.safeParse(request.body ?? {});
      if (!body.success) throw validationError(body.error.issues);
      return { approval: approvalView(await writ.approvals.vote(caller, request.params.id, verb, body.data.note)) };
    });
  };
  voteRoute('approve');
  voteRoute('deny');

  app.post('/v1/break-glass', async (request, reply) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'POST /v1/break-glass' });
    const started = await writ.breakGlass.start(caller, request.body);
    return reply.code(201).send({
      breakGlass: breakGlassView(started.grant),
      task: taskView(started.task),
      token: started.token,
      tokenType: 'Bearer',
      expiresIn: started.expiresIn,
      warnings: ['break-glass: every webhook has been told; every decision under it is flagged; a review is owed when it ends'],
    });
  });

  app.get<{ Querystring: Record<string, unknown> }>('/v1/break-glass', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'GET /v1/break-glass' });
    const query = breakGlassQuerySchema.safeParse(request.query ?? {});
    if (!query.success) throw validationError(query.error.issues);
    const reviewed = query.data.reviewed ?? 'false';
    const grants = await writ.breakGlass.list(caller, { reviewed: reviewed === 'all' ? undefined : reviewed === 'true', ...(query.data.limit === undefined ? {} : { limit: query.data.limit }) });
    return { breakGlass: grants.map(breakGlassView) };
  });

  app.get<{ Params: { id: string } }>('/v1/break-glass/:id', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'GET /v1/break-glass/{id}' });
    return { breakGlass: breakGlassView(await writ.breakGlass.get(caller, request.params.id)) };
  });

  app.post<{ Params: { id: string } }>('/v1/break-glass/:id/end', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'POST /v1/break-glass/{id}/end' });
    const body = endBodySchema.safeParse(request.body ?? {});
    if (!body.success) throw validationError(body.error.issues);
    return { breakGlass: breakGlassView(await writ.breakGlass.end(caller, request.params.id, body.data.note)) };
  });

  app.post<{ Params: { id: string } }>('/v1/break-glass/:id/review', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'POST /v1/break-glass/{id}/review' });
    const body = reviewBodySchema.safeParse(request.body ?? {});
    if (!body.success) throw validationError(body.error.issues);
    return { breakGlass: breakGlassView(await writ.breakGlass.review(caller, request.params.id, body.data.note)) };
  });

  app.post<{ Params: { id: string } }>('/v1/tasks/:id/renew', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'POST /v1/tasks/{id}/renew' });
    const renewed = await writ.broker.renewTask(caller, request.params.id, request.body ?? {});
    return { task: taskView(renewed.task), token: renewed.token, tokenType: 'Bearer', expiresIn: renewed.expiresIn, warnings: renewed.warnings };
  });

  app.get<{ Params: { id: string } }>('/v1/tasks/:id', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'GET /v1/tasks/{id}' });
    return { task: taskView(await writ.broker.getTask(caller, request.params.id)) };
  });

  const endRoute = (verb: 'complete' | 'fail' | 'revoke', state: EndState) => {
    app.post<{ Params: { id: string } }>(`/v1/tasks/:id/${verb}`, async (request) => {
      const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: `POST /v1/tasks/{id}/${verb}` });
      const body = endBodySchema.safeParse(request.body ?? {});
      if (!body.success) throw validationError(body.error.issues);
      return { task: taskView(await writ.broker.endTask(caller, request.params.id, state, body.data.note)) };
    });
  };
  endRoute('complete', 'completed');
  endRoute('fail', 'failed');
  endRoute('revoke', 'revoked');

  app.post('/v1/authorize', async (request) => {
    const body = authorizeBodySchema.safeParse(request.body);
    if (!body.success) throw validationError(body.error.issues);
    const { token, ...call } = body.data;
    // A certificate-bound token passes only over a connection presenting that (verified) certificate.
    const verified = verifiedCertificateOf(request);
    return writ.authorize(token, call, { certificateThumbprint: verified?.ok === true ? verified.credential.certificateThumbprint : undefined });
  });

  app.get('/v1/identities', async (request) => {
    await admin(request, 'identities:read', 'GET /v1/identities');
    return { identities: (await writ.registry.list()).map(identityView) };
  });

  app.post('/v1/identities', async (request, reply) => {
    const principal = await admin(request, 'identities:write', 'POST /v1/identities');
    const identity = await writ.registerIdentity(request.body as never, adminActor(principal), principal);
    return reply.code(201).send({ identity: identityView(identity) });
  });

  app.get<{ Params: { id: string } }>('/v1/identities/:id', async (request) => {
    await admin(request, 'identities:read', 'GET /v1/identities/{id}');
    const identity = await writ.registry.get(request.params.id);
    if (identity === undefined) throw new WritError('ERR_IDENTITY_NOT_FOUND');
    return { identity: identityView(identity) };
  });

  app.post<{ Params: { id: string } }>('/v1/identities/:id/claim', async (request) => {
    const principal = await admin(request, 'identities:write', 'POST /v1/identities/{id}/claim');
    return { identity: identityView(await writ.claimIdentity(request.params.id, (request.body ?? {}) as never, adminActor(principal))) };
  });

  const stateRoute = (verb: IdentityStateChange) => {
    app.post<{ Params: { id: string } }>(`/v1/identities/:id/${verb}`, async (request) => {
      const principal = await admin(request, 'identities:write', `POST /v1/identities/{id}/${verb}`);
      const body = endBodySchema.safeParse(request.body ?? {});
      if (!body.success) throw validationError(body.error.issues);
      const result = await writ.changeIdentityState(request.params.id, verb, adminActor(principal), body.data.note);
      return { identity: identityView(result.identity), revokedTasks: result.revokedTasks };
    });
  };
  stateRoute('suspend');
  stateRoute('reactivate');
  stateRoute('decommission');

  app.post('/v1/admin/policy/reload', async (request) => {
    const principal = await admin(request, 'policy:write', 'POST /v1/admin/policy/reload');
    const result = await writ.reloadPolicy(`api: ${principal.id}`);
    if (!result.ok) {
      throw new WritError('ERR_POLICY_INVALID', { detail: `the policy set is invalid; ${result.version} keeps serving`, extensions: { problems: result.problems, version: result.version } });
    }
    const drift = result.drift === undefined ? {} : { drift: { redecided: result.drift.redecided, kept: result.drift.kept, narrowed: result.drift.narrowed, revoked: result.drift.revoked, failed: result.drift.failed, complete: result.drift.complete } };
    return { version: result.version, previous: result.previous, changed: result.changed, ...drift };
  });

  app.get('/v1/admin/tokens', async (request) => {
    await admin(request, 'admin:tokens', 'GET /v1/admin/tokens');
    return { tokens: (await writ.adminTokens.list()).map(adminTokenView) };
  });

  app.post('/v1/admin/tokens', async (request, reply) => {
    const principal = await admin(request, 'admin:tokens', 'POST /v1/admin/tokens');
    const created = await writ.createAdminToken(request.body as never, adminActor(principal), principal);
    return reply.code(201).send({ token: created.token, adminToken: adminTokenView(created.record) });
  });

  app.post<{ Params: { id: string } }>('/v1/admin/tokens/:id/revoke', async (request) => {
    const principal = await admin(request, 'admin:tokens', 'POST /v1/admin/tokens/{id}/revoke');
    const record = await writ.revokeAdminToken(request.params.id, adminActor(principal));
    return { adminToken: adminTokenView(record) };
  });

  watchTlsMaterial(app, writ);

  return app;
}

/** How often the TLS files and trust bundles are checked for changes. */
const TLS_REFRESH_MS = 15_000;

const tlsRefreshers = new WeakMap<FastifyInstance, () => boolean>();

/**
 * With `server.tls`, checks its files and the client trust bundles every
 * TLS_REFRESH_MS and hands changed ones to the listener: a rotated
 * certificate is served to new connections without a restart. For every
 * listener Writ runs (`serve`, `gateway`, `proxy`).
 */
export function watchTlsMaterial(app: FastifyInstance, writ: Writ): void {
  if (writ.config.server.tls === undefined) return;
  let stamp = tlsMaterialStamp(writ);
  const refreshTls = (): boolean => {
    const next = tlsMaterialStamp(writ);
    if (next === stamp) return false;
    try {
      (app.server as HttpsServer).setSecureContext(httpsOptions(writ));
      stamp = next;
      app.log.info('TLS certificate or client trust bundle changed; new connections use the new one');
      return true;
    } catch (error) {
      // A half-written file: keep serving with the old context and try again next time.
      app.log.warn({ err: error }, 'TLS material changed but could not be loaded; keeping the previous one');
      return false;
    }
  };
  tlsRefreshers.set(app, refreshTls);
  const refresh = setInterval(refreshTls, TLS_REFRESH_MS);
  refresh.unref();
  app.addHook('onClose', async () => clearInterval(refresh));
}

/** Checks the TLS files and trust bundles now (as the timer does); true when the listener took new ones. */
export function refreshTlsMaterial(app: FastifyInstance): boolean {
  return tlsRefreshers.get(app)?.() ?? false;
}

const BEARER_RE = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i;

/**
 * The bearer token of a request, or undefined without an Authorization header.
 * A header not in Bearer form is passed on whole, so it is refused (and
 * audited) as a malformed credential rather than treated as none.
 */
function bearerOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header !== 'string' || header.length === 0) return undefined;
  return BEARER_RE.exec(header)?.[1] ?? header;
}

/** The verified-or-not client certificate chain of an mTLS request, leaf first; [] without one. */
function certificateChainOf(request: FastifyRequest): X509Certificate[] {
  const socket = request.raw.socket;
  if (!(socket instanceof TLSSocket)) return [];
  const cached = socketChains.get(socket);
  if (cached !== undefined) return cached;
  const chain = peerCertificateChain(socket);
  socketChains.set(socket, chain);
  return chain;
}

// A TLS connection's peer chain does not change: parse it once per connection.
const socketChains = new WeakMap<TLSSocket, X509Certificate[]>();

/**
 * HTTPS options. Client certificates are requested but not rejected during the
 * handshake: a bad one is refused with the uniform 401 and its precise reason
 * audited, after Writ's own per-trust-domain chain check.
 *
 * With client certificates, TLS session resumption is off: a resumed session
 * yields the peer's leaf without the intermediates it sent, so an SVID issued
 * by an intermediate would fail the chain check on every resumed connection
 * (Node's https agents resume by default). Every connection thus presents,
 * and Writ checks, the client's current certificate.
 */
export function httpsOptions(writ: Writ) {
  const tls = writ.config.server.tls;
  if (tls === undefined) throw new Error('no TLS configuration');
  const read = (path: string) => readFileSync(resolveConfigPath(writ.config, path));
  const requestCert = tls.clientCertificates !== 'off';
  return {
    cert: read(tls.certFile),
    key: read(tls.keyFile),
    minVersion: 'TLSv1.2' as const,
    requestCert,
    rejectUnauthorized: false,
    // No renegotiation either: the chain checked is the one the connection began with.
    ...(requestCert
      ? { ca: writ.trustSources.x509Roots().map((c) => c.toString()), secureOptions: constants.SSL_OP_NO_TICKET | constants.SSL_OP_NO_RENEGOTIATION }
      : {}),
  };
}

/**
 * What the TLS context is built from: the server certificate and key files
 * and the trust bundles' roots. When it changes (cert-manager renews the
 * certificate, SPIRE rotates its CA), the listener takes a new context.
 */
function tlsMaterialStamp(writ: Writ): string {
  const tls = writ.config.server.tls;
  if (tls === undefined) return '';
  const mtime = (path: string) => {
    try {
      return statSync(resolveConfigPath(writ.config, path)).mtimeMs;
    } catch {
      return -1;
    }
  };
  const roots = tls.clientCertificates === 'off' ? [] : writ.trustSources.x509Roots().map((c) => c.fingerprint256);
  return JSON.stringify([mtime(tls.certFile), mtime(tls.keyFile), roots]);
}

function asWritError(error: unknown, request: FastifyRequest): WritError {
  if (error instanceof WritError) return error;
  const code = (error as { code?: unknown }).code;
  const status = (error as { statusCode?: unknown }).statusCode;
  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new WritError('ERR_BODY_TOO_LARGE');
  if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return new WritError('ERR_UNSUPPORTED_MEDIA_TYPE');
  if (error instanceof SyntaxError || code === 'FST_ERR_CTP_INVALID_JSON_BODY' || code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || code === 'FST_ERR_CTP_INVALID_CONTENT_LENGTH') {
    return new WritError('ERR_MALFORMED_JSON');
  }
  if (typeof status === 'number' && status >= 400 && status < 500) return new WritError('ERR_VALIDATION', { detail: 'the request is not acceptable' });
  request.log.error({ err: error }, 'unexpected error');
  return new WritError('ERR_INTERNAL');
}

function sendProblem(request: FastifyRequest, reply: FastifyReply, error: WritError): FastifyReply {
  if (error.internal !== undefined) request.log.info({ code: error.code, reason: error.internal }, 'request refused');
  if (error.status === 401) reply.header('www-authenticate', 'Bearer realm="writ", error="invalid_token"');
  return reply.code(error.status).type('application/problem+json').send(toProblem(error, request.id));
}
