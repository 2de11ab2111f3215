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
  /** `realm` of the WWW-Authenticate challenge; default `writ`. Printable ASCII without `"` or `\\`, at most 128 characters. */
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

// RFC 6750 §2.1: `"Bearer" 1*SP b64token`, the scheme case-insensitive (RFC 9110 §11.1).
const BEARER_RE = /^Bearer +([A-Za-z0-9._~+/-]+=*)$/i;
// What a quoted-string may hold without escapes (RFC 9110 §5.6.4), so nothing can break out of the challenge.
const REALM_RE = /^[\x20\x21\x23-\x5B\x5D-\x7E]{1,128}$/;
const PROBLEM_HEADERS = { 'content-type': 'application/problem+json', 'cache-control': 'no-store' } as const;
const INTERNAL_ERROR: RefusalResponse = { status: 500, headers: PROBLEM_HEADERS, body: toProblem(new WritError('ERR_INTERNAL')) };

/** The bearer token of an Authorization header; undefined without one, '' when it is not in Bearer form. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (header === undefined || header === '') return undefined;
  if (typeof header !== 'string') return '';
  return BEARER_RE.exec(header)?.[1] ?? '';
}

/**
 * True when the request carries more than one Authorization header. Node keeps
 * only the first in `headers` and drops the rest; a proxy in front may honour
 * another one, so the request is ambiguous and refused (RFC 6750 §3.1
 * `invalid_request`), never decided on one of them.
 */
function hasRepeatedAuthorization(rawHeaders: readonly string[] | undefined): boolean {
  let seen = 0;
  for (let i = 0; i < (rawHeaders?.length ?? 0); i += 2) {
    if (rawHeaders?.[i]?.toLowerCase() === 'authorization' && ++seen > 1) return true;
  }
  return false;
}

/**
 * The answer to a refusal, or to a request without a token (`undefined`):
 * 401 with a Bearer challenge for every token failure (RFC 6750 §3), 403
 * `insufficient_scope` when no scope covers the call, 503 with Retry-After
 * when the revocation feed is not current or Writ's keys could not be loaded
 * (the token may be good; Writ is unreachable). Characters a quoted-string
 * cannot hold are dropped from `realm`.
 */
export function refusalResponse(refusal: VerifyRefusal | undefined, realm = 'writ', required?: { action: string; resource: string }): RefusalResponse {
  const challenge = `Bearer realm="${realm.replace(/[^\x20\x21\x23-\x5B\x5D-\x7E]/g, '')}"`;
  const json = (status: number, headers: Record<string, string>, error: WritError): RefusalResponse => ({
    status,
    headers: { ...PROBLEM_HEADERS, ...headers },
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
    case 'ERR_ISSUER_UNREACHABLE':
      // The JWKS never loaded (or its refresh failed and the kid is not held): a 401 would call a good token bad.
      return json(503, { 'retry-after': '5' }, new WritError('ERR_KEYS_UNAVAILABLE'));
    default:
      // Bad, expired, revoked, unknown key, wrong audience: one uniform answer.
      return json(401, { 'www-authenticate': `${challenge}, error="invalid_token"` }, new WritError('ERR_UNAUTHENTICATED'));
  }
}

type Guarded = { readonly ok: true; readonly task: VerifiedTask } | { readonly ok: false; readonly response: RefusalResponse };

async function guard<R>(verifier: WritVerifier, options: WritGuardOptions<R>, request: R, raw: IncomingMessage): Promise<Guarded> {
  const realm = options.realm ?? 'writ';
  if (hasRepeatedAuthorization(raw.rawHeaders)) {
    const error = new WritError('ERR_VALIDATION', { detail: 'send one Authorization header' });
    return { ok: false, response: { status: 400, headers: { ...PROBLEM_HEADERS, 'www-authenticate': `Bearer realm="${realm}", error="invalid_request"` }, body: toProblem(error) } };
  }
  const token = bearerToken(raw.headers.authorization);
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
 * handler with {@link verifiedTaskOf}(request). An exception thrown by
 * `action`, `resource` or `certificateThumbprint` is answered here with a
 * generic problem+json 500 (and logged with `request.log`), never handed to
 * the app's error handler, which could send its message or let the request on.
 *
 * @example app.get('/orders/:id', { preHandler: fastifyWrit(verifier, { action: 'read', resource: (r) => `db:orders/${r.params.id}` }) }, handler)
 */
export function fastifyWrit<R extends FastifyRequest = FastifyRequest>(verifier: WritVerifier, options: WritGuardOptions<R>) {
  assertGuardOptions(options);
  return async function writPreHandler(request: R, reply: FastifyReply): Promise<FastifyReply | undefined> {
    let response: RefusalResponse;
    try {
      const guarded = await guard(verifier, options, request, request.raw);
      if (guarded.ok) {
        verifiedRequests.set(request, guarded.task);
        return undefined;
      }
      response = guarded.response;
    } catch (error) {
      request.log.error({ err: error }, 'writ/verify: the guard failed; answered 500');
      response = INTERNAL_ERROR;
    }
    // Sending and returning the reply ends the request here: the handler never runs.
    return reply.code(response.status).headers(response.headers).send(response.body);
  };
}

/**
 * Plain Node middleware, `(req, res, next)` (Connect/Express shape): calls
 * `next()` only for a token that covers the call, else writes the refusal.
 * An exception thrown by `action` or `resource` is answered with a generic 500;
 * `next` is not called, so the request stops here either way. An exception
 * thrown by `next()` itself is answered with the same 500 (or, once the
 * response has begun, ends the connection): it never becomes an unhandled
 * rejection, which would stop the process.
 */
export function nodeWrit<R extends IncomingMessage = IncomingMessage>(verifier: WritVerifier, options: WritGuardOptions<R>) {
  assertGuardOptions(options);
  return function writMiddleware(req: R, res: ServerResponse, next: () => void): void {
    guard(verifier, options, req, req)
      .then((guarded) => {
        if (!guarded.ok) {
          send(res, guarded.response);
          return;
        }
        verifiedRequests.set(req, guarded.task);
        next();
      })
      .catch(() => send(res, INTERNAL_ERROR));
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
      // A handler that throws synchronously is caught too: `new Promise` turns the throw into a rejection.
      new Promise<void>((resolve) => resolve(handler(req, res, task))).catch(() => send(res, INTERNAL_ERROR));
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
  if (options.realm !== undefined && (typeof options.realm !== 'string' || !REALM_RE.test(options.realm))) {
    throw new TypeError('Writ guard: realm must be 1 to 128 printable ASCII characters, without " or \\');
  }
}
