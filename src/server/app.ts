/**
 * The HTTP API. Each route reads as its steps: authenticate, validate, decide,
 * answer; the work happens in the broker and the action check. Errors leave as
 * RFC 9457 problem+json with a stable code; anything unexpected is a generic
 * 500 with a correlation id that finds it in the log.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { z } from 'zod';
import { WritError, toProblem } from '../core/errors.js';
import { WRIT_VERSION } from '../core/version.js';
import type { Task } from '../core/types.js';
import type { EndState } from '../broker/broker.js';
import type { Writ } from '../writ.js';

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

const endBodySchema = z
  .object({ note: z.string().max(500).regex(/^[^\p{Cc}\p{Cf}]*$/u, 'no control characters').optional() })
  .strict();

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
    createdAt: new Date(task.createdAt).toISOString(),
    expiresAt: new Date(task.expiresAt).toISOString(),
    endedAt: task.endedAt === null ? null : new Date(task.endedAt).toISOString(),
    endReason: task.endReason,
  };
}

export interface ServerOptions {
  readonly logger: Logger;
}

export function createServer(writ: Writ, options: ServerOptions): FastifyInstance {
  const app = Fastify({
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
      'POST /v1/authorize',
      'GET /.well-known/jwks.json',
      ...(writ.devIssuer ? ['GET /dev-issuer/jwks.json'] : []),
      'GET /healthz',
    ],
  }));

  app.get('/healthz', async () => ({ status: 'ok', policyVersion: writ.policy().version }));

  app.get('/.well-known/jwks.json', async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300');
    return writ.taskKeys.jwks();
  });

  if (writ.devIssuer !== undefined) {
    const devIssuer = writ.devIssuer;
    app.get('/dev-issuer/jwks.json', async () => devIssuer.ring.jwks());
  }

  app.post('/v1/tasks', async (request, reply) => {
    const caller = await writ.broker.authenticate(bearerOf(request), { allowTaskToken: false, endpoint: 'POST /v1/tasks' });
    const result = await writ.broker.requestTask(caller, request.body);
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
        return reply.code(202).send({ status: result.status, task: taskView(result.task), warnings: result.warnings });
      case 'denied':
        throw new WritError('ERR_POLICY_DENIED', {
          detail: 'policy refused every requested scope',
          extensions: { taskId: result.task.id, policies: result.policies, refusedScopes: result.task.refusedScopes },
        });
    }
  });

  app.get<{ Params: { id: string } }>('/v1/tasks/:id', async (request) => {
    const caller = await writ.broker.authenticate(bearerOf(request), { allowTaskToken: true, endpoint: 'GET /v1/tasks/{id}' });
    return { task: taskView(await writ.broker.getTask(caller, request.params.id)) };
  });

  const endRoute = (verb: 'complete' | 'fail' | 'revoke', state: EndState) => {
    app.post<{ Params: { id: string } }>(`/v1/tasks/:id/${verb}`, async (request) => {
      const caller = await writ.broker.authenticate(bearerOf(request), { allowTaskToken: true, endpoint: `POST /v1/tasks/{id}/${verb}` });
      const body = endBodySchema.safeParse(request.body ?? {});
      if (!body.success) throw new WritError('ERR_VALIDATION', { detail: body.error.issues.map((i) => i.message).join('; ') });
      return { task: taskView(await writ.broker.endTask(caller, request.params.id, state, body.data.note)) };
    });
  };
  endRoute('complete', 'completed');
  endRoute('fail', 'failed');
  endRoute('revoke', 'revoked');

  app.post('/v1/authorize', async (request) => {
    const body = authorizeBodySchema.safeParse(request.body);
    if (!body.success) {
      const errors = body.error.issues.map((i) => ({ field: i.path.map(String).join('.'), message: i.message }));
      throw new WritError('ERR_VALIDATION', { detail: errors.map((e) => `${e.field || '(body)'}: ${e.message}`).join('; '), extensions: { errors } });
    }
    const { token, ...call } = body.data;
    return writ.authorize(token, call);
  });

  return app;
}

const BEARER_RE = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i;

/** The bearer token of a request, or undefined when absent or not in Bearer form. */
function bearerOf(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return undefined;
  return BEARER_RE.exec(header)?.[1];
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
