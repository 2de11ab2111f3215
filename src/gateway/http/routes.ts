/**
 * The HTTP proxy's routes on a Fastify server: every method under
 * `proxy.mount` (default `/proxy`), the body left unread so it streams to
 * the upstream, the answer written by the proxy itself.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Writ } from '../../writ.js';
import { createHttpProxy } from './proxy.js';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/**
 * Mounts the proxy on `app` (in its own encapsulated scope, so the body
 * parsers it turns off stay off only here) and closes its upstream
 * connections when `app` closes. With no route configured nothing is mounted.
 * @throws Error when a route is not well formed (at start).
 */
export function registerProxyRoutes(app: FastifyInstance, writ: Writ, options: { readonly logger?: Logger | undefined } = {}): void {
  if (writ.config.proxy.routes.length === 0) return;
  const proxy = createHttpProxy({ writ, logger: options.logger });
  app.addHook('onClose', async () => proxy.close());
  void app.register(async (scope) => {
    // INVARIANT: nothing here reads the body; the proxy pipes it upstream as it arrives.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null));
    const handler = async (request: { raw: Parameters<typeof proxy.handle>[0] }, reply: { hijack(): void; raw: Parameters<typeof proxy.handle>[1] }): Promise<void> => {
      reply.hijack();
      await proxy.handle(request.raw, reply.raw);
    };
    scope.route({ method: METHODS, url: proxy.mount, handler });
    scope.route({ method: METHODS, url: `${proxy.mount}/*`, handler });
  });
}
