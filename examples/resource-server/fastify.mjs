/**
 * A resource server behind Writ task tokens, with Fastify: the orders API of a
 * shop. Every request is checked here, offline (no call to Writ per request):
 * the token's signature against Writ's JWKS, its audience and expiry, that its
 * task has not ended (Writ's revocation feed, polled), and that one of its
 * scopes covers `read` on `db:orders/<id>`.
 *
 *   writ serve --dev                                    # Writ on 127.0.0.1:8750
 *   node examples/resource-server/fastify.mjs           # this server on 127.0.0.1:3000
 *   TOKEN=...   # a task token with read:db:orders/* (docs/tasks.md shows how to ask for one)
 *   curl -H "authorization: Bearer $TOKEN" http://127.0.0.1:3000/orders/42
 *
 * WRIT_URL, WRIT_ISSUER, WRIT_AUDIENCE and PORT change the defaults. See docs/verify.md.
 */
import Fastify from 'fastify';
import { createWritVerifier, fastifyWrit, verifiedTaskOf } from 'writ/verify';

const writ = process.env.WRIT_URL ?? 'http://127.0.0.1:8750';

const verifier = createWritVerifier({
  issuer: process.env.WRIT_ISSUER ?? writ, // writ.yaml `issuer`
  audience: process.env.WRIT_AUDIENCE ?? 'writ-enforcement', // writ.yaml `tokens.audience`
  jwksUrl: `${writ}/.well-known/jwks.json`,
  revocationsUrl: `${writ}/v1/revocations`, // polled every 5 s; tokens are refused (503) if it goes stale
  onError: (error) => app.log.warn({ err: error }, 'writ: JWKS or revocation feed fetch failed'),
});

const app = Fastify({ logger: true });

app.get(
  '/orders/:id',
  {
    // Validation runs before the preHandler: an id such as `*` never becomes the pattern `db:orders/*`.
    schema: { params: { type: 'object', properties: { id: { type: 'string', pattern: '^[A-Za-z0-9-]{1,64}$' } }, required: ['id'] } },
    // The route's action and the resource this request touches. The handler runs only if a scope covers it.
    preHandler: fastifyWrit(verifier, {
      action: 'read',
      resource: (request) => `db:orders/${request.params.id}`,
      // The precise reason (ERR_TOKEN_EXPIRED, ERR_TOKEN_REVOKED, ...) is logged, never sent.
      onRefusal: (refusal, request) => request.log.info({ code: refusal.code, detail: refusal.detail }, 'writ refused'),
    }),
  },
  async (request) => {
    const task = verifiedTaskOf(request);
    // task.actor is who acts (the worker, for a delegated task); task.taskId is the grant.
    return { order: request.params.id, status: 'shipped', readBy: task.actor, task: task.taskId };
  },
);

app.addHook('onClose', async () => verifier.close());

// Load the keys and the first revocation feed before taking traffic: until then every token is refused.
await verifier.ready();
await app.listen({ host: '127.0.0.1', port: Number(process.env.PORT ?? 3000) });
