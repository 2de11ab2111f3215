/**
 * A resource server behind Writ task tokens, with plain node:http: the same
 * orders API as fastify.mjs, no framework. `withWrit` verifies the bearer
 * token offline (JWKS, audience, expiry, revocation feed, scope) and calls the
 * handler only when a scope covers the call; otherwise it answers RFC 9457
 * problem+json: 401 (with WWW-Authenticate), 403 (insufficient_scope) or 503
 * (the revocation feed is not current: it fails closed).
 *
 *   writ serve --dev                                 # Writ on 127.0.0.1:8750
 *   node examples/resource-server/node.mjs           # this server on 127.0.0.1:3000
 *   curl -H "authorization: Bearer $TOKEN" http://127.0.0.1:3000/orders/42
 *
 * For Connect or Express, `nodeWrit(verifier, options)` is the same check as
 * `(req, res, next)` middleware. See docs/verify.md.
 */
import { createServer } from 'node:http';
import { createWritVerifier, withWrit } from 'writ/verify';

const writ = process.env.WRIT_URL ?? 'http://127.0.0.1:8750';

const verifier = createWritVerifier({
  issuer: process.env.WRIT_ISSUER ?? writ,
  audience: process.env.WRIT_AUDIENCE ?? 'writ-enforcement',
  jwksUrl: `${writ}/.well-known/jwks.json`,
  revocationsUrl: `${writ}/v1/revocations`,
});

const ORDER_PATH = /^\/orders\/([A-Za-z0-9-]{1,64})$/;
// Read-only API: every other method has no action, so no scope covers it (403). Never map "anything but GET" to
// one action: DELETE would then pass with a write scope, below the tier it needs.
const ACTIONS = { GET: 'read', HEAD: 'read' };

/** The order a request names, read one way for both the check and the handler, or undefined. */
const orderIdOf = (req) => ORDER_PATH.exec(new URL(req.url ?? '/', 'http://localhost').pathname)?.[1];

const server = createServer(
  withWrit(
    verifier,
    {
      action: (req) => ACTIONS[req.method] ?? '',
      // Any other path maps to '', which is not a resource: no scope covers it, so it is refused (403).
      resource: (req) => {
        const id = orderIdOf(req);
        return id === undefined ? '' : `db:orders/${id}`;
      },
      onRefusal: (refusal) => process.stderr.write(`writ refused: ${refusal.code} ${refusal.detail}\n`),
    },
    (req, res, task) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ order: orderIdOf(req), readBy: task.actor, task: task.taskId }));
    },
  ),
);

await verifier.ready();
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => process.stdout.write(`orders API on http://127.0.0.1:${server.address().port}\n`));
process.on('SIGINT', () => {
  verifier.close();
  server.close();
});
