/**
 * The HTTP proxy enforcement point: an agent calls an HTTP API through Writ
 * with its task token; Writ decides the request, swaps the token for the
 * API's own credential, and streams the request and the answer through.
 *
 * One request is these steps:
 *
 *   1. bearer    the task token from `Authorization: Bearer` (none: 401)
 *   2. resolve   the route and the (action, resource) the request is decided
 *                as, from the path read once (route-table.ts); a path outside
 *                the table, or not plain segments, is refused, on the audit
 *                chain, and only to a live task token (anything else: 401)
 *   3. check     the action check (writ.authorize), with the mTLS client
 *                certificate as presenter; it audits the decision. With
 *                `server.tls.clientCertificates: required`, a request without
 *                a valid client certificate is refused first (audited)
 *   4. inject    the route's secrets from the vault, as request headers
 *   5. forward   hop-by-hop headers removed both ways, the agent's token
 *                never sent, bodies piped without buffering
 *
 * Refusals are RFC 9457 problem+json with a code. A bad, expired, revoked or
 * forged token gets one uniform 401; the precise reason is in the audit log.
 * An upstream that cannot be reached, or fails before it answers, is 502
 * ERR_UPSTREAM_UNAVAILABLE. No secret value is ever logged or audited.
 */
import type { X509Certificate } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { pipeline } from 'node:stream';
import { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { errorCatalog, isWritError, toProblem, WritError, type WritErrorCode } from '../../core/errors.js';
import type { ActionDecision, Presenter } from '../../enforce/action-check.js';
import { auditActor } from '../../audit/log.js';
import { peerCertificateChain } from '../../identity/x509-svid.js';
import type { Writ } from '../../writ.js';
import { agentResponseHeaders, upstreamRequestHeaders } from './hop-headers.js';
import { compileRouteTable, resolveProxyTarget, type ProxyTarget, type RouteTable } from './route-table.js';

const BEARER_RE = /^Bearer +([A-Za-z0-9._~+/=-]+)$/i;

export interface HttpProxy {
  /** Where the routes are mounted (`/proxy`). */
  readonly mount: string;
  /**
   * Serves one request. The request body must not have been read: it is
   * piped to the upstream as it arrives. Never throws; every failure is an answer.
   */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Closes idle upstream connections. */
  close(): void;
}

/**
 * Creates the proxy over `writ.config.proxy`.
 * @throws Error when a route's action or resource is not well formed (at start, never on a request).
 */
export function createHttpProxy(options: { readonly writ: Writ; readonly logger?: Logger | undefined }): HttpProxy {
  const { writ, logger } = options;
  const settings = writ.config.proxy;
  const table: RouteTable = compileRouteTable(settings.mount, settings.routes);
  const timeoutMs = settings.timeout * 1000;
  // Connections to upstreams are kept and reused; the agent's connection is its own.
  const httpAgent = new HttpAgent({ keepAlive: true });
  const httpsAgent = new HttpsAgent({ keepAlive: true });
  const realm = `Bearer realm="writ-proxy"`;

  const unauthorized = (res: ServerResponse, presented: boolean): void =>
    sendProblem(res, 'ERR_UNAUTHENTICATED', presented ? 'the bearer credential was not accepted' : 'present a task token as a Bearer credential', {
      'www-authenticate': presented ? `${realm}, error="invalid_token"` : realm,
    });

  /** The presenter of an mTLS request: the thumbprint of a client certificate the trust sources verify. */
  const presenterOf = (req: IncomingMessage): Presenter => {
    const socket = req.socket;
    if (!(socket instanceof TLSSocket)) return {};
    const chain: X509Certificate[] = peerCertificateChain(socket);
    if (chain.length === 0) return {};
    const verified = writ.trustSources.verifyCertificate(chain);
    return verified.ok ? { certificateThumbprint: verified.credential.certificateThumbprint } : {};
  };
  // `server.tls.clientCertificates: required` covers the proxy as it covers /v1 and /mcp.
  const certificateRequired = writ.config.server.tls?.clientCertificates === 'required';
  const recordMissingCertificate = (req: IncomingMessage): Promise<void> =>
    writ.audit
      .append({ type: 'authentication.failed', decision: 'deny', reason: 'ERR_CERT_INVALID', detail: 'no valid client certificate (server.tls.clientCertificates: required)', data: { endpoint: `${req.method ?? ''} ${settings.mount}` } })
      .then(
        () => undefined,
        () => undefined,
      );

  /** The refusal the agent sees for a decision that did not allow. */
  const refuse = (res: ServerResponse, decision: ActionDecision): void => {
    const reason = decision.reason ?? 'ERR_POLICY_DENIED';
    const status = errorCatalog[reason].status;
    // What the caller sees is not what the operator sees: every credential failure is the same 401.
    if (status === 401) return unauthorized(res, true);
    const extensions: Record<string, unknown> = { decisionId: decision.auditId };
    if (decision.approval !== undefined) extensions.approvalId = decision.approval.id;
    sendProblem(res, reason, DENIAL_SENTENCES[reason] ?? 'Writ refused this request', {}, extensions);
  };

  /**
   * A request the route table refuses (outside it, a method the path does not
   * take, not plain segments). Only a caller holding a live task token learns
   * why, and the refusal is on the chain with its task; anyone else gets the
   * same 401 as on a routed path, so the table cannot be mapped without a
   * token.
   */
  const refuseUnresolved = async (req: IncomingMessage, res: ServerResponse, bearer: string, resolved: { readonly code: WritErrorCode; readonly detail: string }): Promise<void> => {
    const socket = req.socket;
    let caller;
    try {
      caller = await writ.broker.authenticate({ bearer, certificateChain: socket instanceof TLSSocket ? peerCertificateChain(socket) : [] }, { allowTaskToken: true, endpoint: `${(req.method ?? '').slice(0, 16)} ${settings.mount}` });
    } catch (error) {
      // Why the credential failed is audited by authenticate; the caller sees one 401.
      if (isWritError(error) && error.status === 401) return unauthorized(res, true);
      throw error;
    }
    if (caller.taskId === undefined) return unauthorized(res, true);
    await writ.audit.append({
      type: 'action.check',
      decision: 'deny',
      reason: resolved.code,
      detail: resolved.detail,
      actor: auditActor(caller.identity),
      task: { id: caller.taskId },
      data: { endpoint: settings.mount, method: (req.method ?? '').slice(0, 16), path: (req.url ?? '').slice(0, 512) },
    });
    sendProblem(res, resolved.code, resolved.detail);
  };

  /** The route's secrets as headers; undefined when one cannot be opened (logged by name, never by value). */
  const injectedHeaders = async (target: ProxyTarget): Promise<OutgoingHttpHeaders | undefined> => {
    const headers: OutgoingHttpHeaders = {};
    for (const inject of target.route.inject) {
      try {
        headers[inject.header.toLowerCase()] = `${inject.prefix}${await writ.vault.reveal(inject.secret)}`;
      } catch (error) {
        logger?.error({ route: target.route.name, secret: inject.secret, code: (error as { code?: string }).code }, 'could not open a secret the proxy injects');
        return undefined;
      }
    }
    return headers;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, target: ProxyTarget, injected: OutgoingHttpHeaders): Promise<void> =>
    new Promise<void>((resolveDone) => {
      const injectedNames = new Set(Object.keys(injected));
      const headers: OutgoingHttpHeaders = {
        ...upstreamRequestHeaders(req.headers, injectedNames),
        ...injected,
        'x-forwarded-for': req.socket.remoteAddress ?? '',
        'x-forwarded-proto': req.socket instanceof TLSSocket ? 'https' : 'http',
      };
      // INVARIANT: the upstream reads exactly the body the agent's request framed, framed again here, never
      // raw bytes: Node writes an unframed body on GET/HEAD/DELETE/OPTIONS, which a pooled upstream
      // connection would read as a further request nobody decided (request smuggling).
      const chunked = req.headers['transfer-encoding'] !== undefined;
      const hasBody = chunked || req.headers['content-length'] !== undefined;
      if (chunked) {
        delete headers['content-length'];
        headers['transfer-encoding'] = 'chunked';
      }
      const https = target.url.protocol === 'https:';
      const started = performance.now();
      const upstream = (https ? httpsRequest : httpRequest)(target.url, { method: req.method, headers, agent: https ? httpsAgent : httpAgent });
      upstream.setTimeout(timeoutMs, () => upstream.destroy(new Error(`the upstream was silent for ${settings.timeout}s`)));
      let answered = false;
      const done = (status: number | 'failed'): void => {
        logger?.debug({ route: target.route.name, method: req.method, path: target.path, status, ms: Math.round(performance.now() - started) }, 'proxied');
        resolveDone();
      };
      upstream.on('response', (answer) => {
        answered = true;
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, agentResponseHeaders(answer.headers));
        // Streamed as it comes: a chunk reaches the agent before the next is read.
        pipeline(answer, res, (error) => {
          if (error !== undefined && error !== null) upstream.destroy();
          done(answer.statusCode ?? 502);
        });
      });
      upstream.on('error', (error) => {
        if (answered) return;
        logger?.warn({ route: target.route.name, err: { message: error.message } }, 'proxy upstream failed');
        if (!res.headersSent) sendProblem(res, 'ERR_UPSTREAM_UNAVAILABLE', `the upstream of route ${target.route.name} could not be reached or failed`);
        else res.destroy();
        done('failed');
      });
      // The agent going away ends the upstream request too.
      res.on('close', () => {
        if (!res.writableFinished) upstream.destroy();
      });
      if (hasBody) pipeline(req, upstream, () => undefined);
      else {
        // No body by HTTP/1.1's rules: whatever else arrives on the agent's connection is not forwarded.
        req.resume();
        upstream.end();
      }
    });

  return {
    mount: settings.mount,

    async handle(req, res) {
      try {
        const authorization = req.headers.authorization;
        if (authorization === undefined || authorization === '') return unauthorized(res, false);
        const bearer = BEARER_RE.exec(authorization)?.[1];
        if (bearer === undefined) return unauthorized(res, true);
        const presenter = presenterOf(req);
        if (certificateRequired && presenter.certificateThumbprint === undefined) {
          await recordMissingCertificate(req);
          return unauthorized(res, true);
        }
        const resolved = resolveProxyTarget(table, req.method ?? 'GET', req.url ?? '');
        if (!resolved.ok) return await refuseUnresolved(req, res, bearer, resolved);
        const { target } = resolved;
        const decision = await writ.authorize(bearer, { action: target.action, resource: target.resource }, presenter);
        if (!decision.allowed) return refuse(res, decision);
        const injected = await injectedHeaders(target);
        if (injected === undefined) return sendProblem(res, 'ERR_UPSTREAM_UNAVAILABLE', `the credential of route ${target.route.name} is not available`);
        await forward(req, res, target, injected);
      } catch (error) {
        logger?.error({ err: error }, 'proxy request failed');
        if (!res.headersSent) sendProblem(res, 'ERR_INTERNAL', 'the request could not be served');
        else res.destroy();
      }
    },

    close() {
      httpAgent.destroy();
      httpsAgent.destroy();
    },
  };
}

/** One sentence per refusal the agent can act on; never policy internals. */
const DENIAL_SENTENCES: Partial<Record<WritErrorCode, string>> = {
  ERR_SCOPE_NOT_GRANTED: 'the task does not hold this action on this resource',
  ERR_POLICY_DENIED: 'policy does not allow this request now',
  ERR_APPROVAL_REQUIRED: "this request needs a human's approval of exactly this request; make it again once approved",
  ERR_IDENTITY_INACTIVE: 'the identity acting is not active',
  ERR_UNKNOWN_ACTION: 'the route maps this method to an action the policy schema does not know',
  ERR_VALIDATION: 'the request is not one Writ can decide',
  ERR_AUDIT_UNAVAILABLE: 'the decision could not be recorded, so it is not carried out',
};

function sendProblem(res: ServerResponse, code: WritErrorCode, detail: string, headers: Record<string, string> = {}, extensions: Record<string, unknown> = {}): void {
  const problem = { ...toProblem(new WritError(code, { detail })), ...extensions };
  res.writeHead(problem.status, { 'content-type': 'application/problem+json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(problem));
}
