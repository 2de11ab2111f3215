/**
 * Thin HTTP adapters around {@link WritVerifier.verify}: a Fastify preHandler
 * and a plain Node `(req, res, next)` middleware. Both answer RFC 9457
 * problem+json; what the caller sees is uniform (one 401 for every bad,
 * expired, revoked or unknown token), the precise code goes to `onRefusal`
 * for your log. Fastify is not imported at runtime.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { toProblem, WritError, type ProblemDetails } from '../core/errors.js';
import { isValidAction, isValidResource } from '../core/scope.js';
import type { VerifiedTask, VerifyRefusal, WritVerifier } from './verifier.js';

export interface WritGuardOptions<R> {
  /** The action the route performs, or how to read it from the request. */
  readonly action: string | ((request: R) => string);
  /** The resource (`kind:path`) the request touches, e.g. `(req) => \`db:orders/${req.params.id}\``. */
  readonly resource: (request: R) => string;
  /** The verified client certificate's `x5t#S256`, for certificate-bound tokens. */
  readonly certificateThumbprint?: (request: R) => string | undefined;
  /** `realm` of the WWW-Authenticate challenge; default `writ`. */
  readonly realm?: string;
  /** Told every refusal with its precise code and detail (log it; never send it). */
  readonly onRefusal?: (refusal: VerifyRefusal, request: R) => void;
}

/** An HTTP answer to a refused request. */
export interface RefusalResponse {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: ProblemDetails;
}

const verifiedRequests = new WeakMap<object, VerifiedTask>();

/** The verified task token of a request that passed a Writ guard (a Fastify request, or a Node `IncomingMessage`), else undefined. */
export function verifiedTaskOf(request: object): VerifiedTask | undefined {
  return verifiedRequests.get(request) ?? verifiedRequests.get((request as { raw?: object }).raw ?? request);
}

// RFC 6750 §2.1: the b64token syntax.
const BEARER_RE = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i;

/** The bearer token of an Authorization header; undefined without one, '' when it is not in Bearer form. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (header === undefined || header === '') return undefined;
  if (typeof header !== 'string') return '';
  return BEARER_RE.exec(header)?.[1] ?? '';
}

/**
 * The answer to a refusal, or to a request without a token (`undefined`):
 * 401 with a Bearer challenge for every token failure (RFC 6750 §3), 403
 * `insufficient_scope` when no scope covers the call, 503 with Retry-After
 * when the revocation feed is not current.
 */
export function refusalResponse(refusal: VerifyRefusal | undefined, realm = 'writ', required?: { action: string; resource: string }): RefusalResponse {
  const challenge = `Bearer realm="${realm.replace(/["\\]/g, '')}"`;
  const json = (status: number, headers: Record<string, string>, error: WritError): RefusalResponse => ({
    status,
    headers: { 'content-type': 'application/problem+json', 'cache-control': 'no-store', ...headers },
    body: toProblem(error),
  });
  if (refusal === undefined) return json(401, { 'www-authenticate': challenge }, new WritError('ERR_UNAUTHENTICATED'));
  switch (refusal.code) {
    case 'ERR_SCOPE_NOT_GRANTED': {
      // Named only when it is a valid scope (no quote, backslash or space can reach the header).
      const scope = required !== undefined && isValidAction(required.action) && isValidResource(required.resource) ? `, scope="${required.action}:${required.resource}"` : '';
      return json(403, { 'www-authenticate': `${challenge}, error="insufficient_scope"${scope}` }, new WritError('ERR_SCOPE_NOT_GRANTED'));
    }
    case 'ERR_REVOCATIONS_STALE':
      return json(503, { 'retry-after': '5' }, new WritError('ERR_REVOCATIONS_STALE'));
    default:
      // Bad, expired, revoked, unknown key, wrong audience: one uniform answer.
      return json(401, { 'www-authenticate': `${challenge}, error="invalid_token"` }, new WritError('ERR_UNAUTHENTICATED'));
  }
}

type Guarded = { readonly ok: true; readonly task: VerifiedTask } | { readonly ok: false; readonly response: RefusalResponse };

async function guard<R>(verifier: WritVerifier, options: WritGuardOptions<R>, request: R, authorization: string | string[] | undefined): Promise<Guarded> {
  const realm = options.realm ?? 'writ';
  const token = bearerToken(authorization);
  if (token === undefined) return { ok: false, response: refusalResponse(undefined, realm) };
  const action = typeof options.action === 'string' ? options.action : options.action(request);
  const resource = options.resource(request);
  const thumbprint = options.certificateThumbprint?.(request);
  const outcome = await verifier.verify(token, { action, resource, ...(thumbprint === undefined ? {} : { certificateThumbprint: thumbprint }) });
  if (outcome.ok) return { ok: true, task: outcome };
  try {
    options.onRefusal?.(outcome, request);
  } catch {
    // A throwing logger does not turn a refusal into anything else.
  }
  return { ok: false, response: refusalResponse(outcome, realm, { action, resource }) };
}

/**
 * A Fastify `preHandler` that lets a request through only with a task token
 * that covers `action` on `resource(request)`. Read the verified token in the
 * handler with {@link verifiedTaskOf}(request).
 *
 * @example app.get('/orders/:id', { preHandler: fastifyWrit(verifier, { action: 'read', resource: (r) => `db:orders/${r.params.id}` }) }, handler)
 */
export function fastifyWrit<R extends FastifyRequest = FastifyRequest>(verifier: WritVerifier, options: WritGuardOptions<R>) {
  assertGuardOptions(options);
  return async function writPreHandler(request: R, reply: FastifyReply): Promise<FastifyReply | undefined> {
    const guarded = await guard(verifier, options, request, request.headers.authorization);
    if (guarded.ok) {
      verifiedRequests.set(request, guarded.task);
      return undefined;
    }
    // Sending and returning the reply ends the request here: the handler never runs.
    return reply.code(guarded.response.status).headers(guarded.response.headers).send(guarded.response.body);
  };
}

/**
 * Plain Node middleware, `(req, res, next)` (Connect/Express shape): calls
 * `next()` only for a token that covers the call, else writes the refusal.
 * An exception thrown by `action` or `resource` is answered with a generic 500;
 * `next` is not called, so the request stops here either way.
 */
export function nodeWrit<R extends IncomingMessage = IncomingMessage>(verifier: WritVerifier, options: WritGuardOptions<R>) {
  assertGuardOptions(options);
  return function writMiddleware(req: R, res: ServerResponse, next: () => void): void {
    guard(verifier, options, req, req.headers.authorization).then(
      (guarded) => {
        if (guarded.ok) {
          verifiedRequests.set(req, guarded.task);
          next();
          return;
        }
        send(res, guarded.response);
      },
      () => send(res, { status: 500, headers: { 'content-type': 'application/problem+json', 'cache-control': 'no-store' }, body: toProblem(new WritError('ERR_INTERNAL')) }),
    );
  };
}

/** `http.createServer(withWrit(verifier, options, handler))`: `handler` runs only for a request whose token covers the call. */
export function withWrit<R extends IncomingMessage = IncomingMessage>(
  verifier: WritVerifier,
  options: WritGuardOptions<R>,
  handler: (req: R, res: ServerResponse, task: VerifiedTask) => void | Promise<void>,
) {
  const middleware = nodeWrit(verifier, options);
  return (req: R, res: ServerResponse): void => {
    middleware(req, res, () => {
      const task = verifiedRequests.get(req);
      if (task === undefined) return;
      Promise.resolve(handler(req, res, task)).catch(() => {
        if (!res.headersSent) send(res, { status: 500, headers: { 'content-type': 'application/problem+json' }, body: toProblem(new WritError('ERR_INTERNAL')) });
        else res.destroy();
      });
    });
  };
}

function send(res: ServerResponse, response: RefusalResponse): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(response.status, response.headers);
  res.end(JSON.stringify(response.body));
}

function assertGuardOptions(options: WritGuardOptions<never>): void {
  if (typeof options !== 'object' || options === null) throw new TypeError('Writ guard: options { action, resource } are required');
  if (typeof options.action !== 'string' && typeof options.action !== 'function') throw new TypeError('Writ guard: action must be a string or a function');
  if (typeof options.resource !== 'function') throw new TypeError('Writ guard: resource must be a function of the request');
}
