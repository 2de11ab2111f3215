/**
 * `writ proxy`: the HTTP proxy alone (and /healthz), on server.host:port with
 * server.tls, as `writ gateway` runs the MCP gateway alone. The routes are at
 * the same mount as on `writ serve`, so an agent's URLs do not change.
 */
import { constants, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { resolveConfigPath } from '../core/config.js';
import { toProblem, WritError } from '../core/errors.js';
import type { Writ } from '../writ.js';
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
  return app;
}

/**
 * The same TLS listener as `writ serve` (server/app.ts keeps its own copy,
 * which also reloads renewed material): client certificates are requested,
 * never rejected in the handshake, and checked by the trust sources when a
 * certificate-bound token is presented.
 */
function httpsOptions(writ: Writ) {
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
    ...(requestCert ? { ca: writ.trustSources.x509Roots().map((c) => c.toString()), secureOptions: constants.SSL_OP_NO_TICKET | constants.SSL_OP_NO_RENEGOTIATION } : {}),
  };
}
