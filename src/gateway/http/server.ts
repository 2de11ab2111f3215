/**
 * `writ proxy`: the HTTP proxy alone (and /healthz), on server.host:port with
 * server.tls, as `writ gateway` runs the MCP gateway alone. The routes are at
 * the same mount as on `writ serve`, so an agent's URLs do not change.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { toProblem, WritError } from '../../core/errors.js';
import { httpsOptions, watchTlsMaterial } from '../../server/app.js';
import type { Writ } from '../../writ.js';
import { registerProxyRoutes } from './routes.js';

/** A server with only the proxy's routes and /healthz. */
export function createProxyServer(writ: Writ, options: { readonly logger: Logger }): FastifyInstance {
  const tls = writ.config.server.tls;
  const app = Fastify({
    ...(tls === undefined ? {} : { https: httpsOptions(writ) }),
    loggerInstance: options.logger as FastifyBaseLogger,
    requestIdHeader: false,
    genReqId: () => randomUUID(),
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  app.setNotFoundHandler((request, reply) => reply.code(404).type('application/problem+json').send(toProblem(new WritError('ERR_NOT_FOUND'), request.id)));
  app.get('/healthz', async () => ({ status: 'ok', policyVersion: writ.policy().version, proxyRoutes: writ.config.proxy.routes.length }));
  registerProxyRoutes(app, writ, { logger: options.logger });
  // A rotated certificate is picked up as on `writ serve`.
  watchTlsMaterial(app, writ);
  return app;
}

