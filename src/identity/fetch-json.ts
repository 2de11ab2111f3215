/**
 * One hostile-input-safe JSON GET, for trust-source keys (OIDC discovery,
 * JWKS, SPIFFE bundle endpoints). Built on node:http(s) `request` rather than
 * global fetch because we need a per-request `ca`, a hard byte cap enforced
 * while reading, and no redirect handling at all.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { rootCertificates } from 'node:tls';

export interface FetchJsonOptions {
  /** The whole request: connect, TLS, headers and body. */
  readonly timeoutMs: number;
  /** Body cap in bytes; the request is aborted as soon as it is exceeded. */
  readonly maxBytes: number;
  /**
   * Extra PEM CA certificate(s) trusted for https, in addition to Node's
   * bundled Mozilla roots (e.g. a private SPIRE bundle endpoint). They are
   * trusted for every host this fetch reaches, so pass only CAs you would
   * trust for that endpoint's name.
   */
  readonly ca?: string;
}

export type FetchJsonErrorCode =
  /** Not an absolute http(s) URL, or it carries user info. */
  | 'invalid_url'
  /** DNS, TCP or TLS failure (including an untrusted certificate), or the connection dropped. */
  | 'network'
  | 'timeout'
  /** Any 3xx: redirects are never followed. */
  | 'redirect'
  /** Any status other than 200 and 3xx. */
  | 'http_status'
  /** Missing or non-JSON content-type, or a content-encoding other than identity. */
  | 'content_type'
  | 'too_large'
  /** Not UTF-8, not JSON, or JSON with a `__proto__` / `constructor.prototype` member. */
  | 'malformed_json';

/**
 * A failed fetch. `url` and the message name the URL without user info, query
 * or fragment, since those may carry secrets and the message goes to logs.
 */
export class FetchJsonError extends Error {
  override readonly name = 'FetchJsonError';
  readonly code: FetchJsonErrorCode;
  readonly url: string;
  /** The HTTP status for 'redirect' and 'http_status'. */
  readonly status: number | undefined;

  constructor(code: FetchJsonErrorCode, url: string, message: string, options?: { status?: number; cause?: unknown }) {
    super(`${message} (${url})`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.url = url;
    this.status = options?.status;
  }
}

/**
 * GETs `url` and returns its parsed JSON body.
 *
 * Promises: only http: and https:; status 200 exactly (any 3xx is an error,
 * never followed); `content-type` is `application/json` or `application/*+json`
 * (no leniency: every OIDC provider and SPIRE serve one of these, and a
 * text/html error page must not parse as keys); no cookies or credentials sent;
 * `accept-encoding: identity`; at most `maxBytes` read, then the socket is
 * destroyed; the whole exchange within `timeoutMs`, then the socket is
 * destroyed; JSON parsed with {@link parseUntrustedJson}.
 *
 * @throws FetchJsonError with a {@link FetchJsonErrorCode}.
 * @throws RangeError when `timeoutMs` or `maxBytes` is not a positive number.
 */
export async function fetchJson(url: string, options: FetchJsonOptions): Promise<unknown> {
  assertFetchOptions(options);
  let target: URL;
  try {
    target = new URL(url);
  } catch (error) {
    throw new FetchJsonError('invalid_url', '(unparseable URL)', 'not a URL', { cause: error });
  }
  const shown = redactUrl(target);
  if (target.protocol !== 'http:' && target.protocol !== 'https:') throw new FetchJsonError('invalid_url', shown, `unsupported protocol ${target.protocol}`);
  if (target.username !== '' || target.password !== '') throw new FetchJsonError('invalid_url', shown, 'URL carries user info');

  const body = await get(target, shown, options);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch (error) {
    throw new FetchJsonError('malformed_json', shown, 'body is not UTF-8', { cause: error });
  }
  try {
    return parseUntrustedJson(text);
  } catch (error) {
    throw new FetchJsonError('malformed_json', shown, 'body is not acceptable JSON', { cause: error });
  }
}

/**
 * `JSON.parse` that refuses prototype-poisoning members anywhere in the
 * document: a `__proto__` key, or a `constructor` whose value has a
 * `prototype` member. `JSON.parse` itself creates them as plain own
 * properties, but a later spread or merge would not; refusing the whole
 * document is the fail-closed choice for key material.
 *
 * @throws SyntaxError on invalid JSON or a forbidden member.
 */
export function parseUntrustedJson(text: string): unknown {
  return JSON.parse(text, function reviver(this: unknown, key: string, value: unknown) {
    // The reviver sees keys after unescaping, so "\u005f_proto__" is caught too.
    if (key === '__proto__') throw new SyntaxError('forbidden member __proto__');
    if (key === 'constructor' && typeof value === 'object' && value !== null && Object.hasOwn(value, 'prototype')) {
      throw new SyntaxError('forbidden member constructor.prototype');
    }
    return value;
  });
}

/** Checks fetch options once (callers may do it at construction). */
export function assertFetchOptions(options: FetchJsonOptions): void {
  if (!Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0) throw new RangeError('fetch timeoutMs must be a positive number');
  if (!Number.isSafeInteger(options.maxBytes) || options.maxBytes <= 0) throw new RangeError('fetch maxBytes must be a positive integer');
}

const JSON_MEDIA_TYPE = /^application\/(?:json|[a-z0-9!#$&^_.-]+\+json)$/;

function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  const mediaType = (header.split(';')[0] ?? '').trim().toLowerCase();
  return JSON_MEDIA_TYPE.test(mediaType);
}

function redactUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** The raw 200 body, with every check that needs the response itself. */
function get(target: URL, shown: string, options: FetchJsonOptions): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    let settled = false;
    const headers = { accept: 'application/json', 'accept-encoding': 'identity', 'user-agent': 'writ' };
    const req =
      target.protocol === 'https:'
        ? httpsRequest(target, {
            method: 'GET',
            headers,
            agent: false,
            // Explicit, so NODE_TLS_REJECT_UNAUTHORIZED=0 cannot turn verification off.
            rejectUnauthorized: true,
            ...(options.ca === undefined ? {} : { ca: [...rootCertificates, options.ca] }),
          })
        : httpRequest(target, { method: 'GET', headers, agent: false });

    const fail = (error: FetchJsonError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      // INVARIANT: a failed fetch leaves no socket behind, whatever the peer does.
      req.destroy();
      reject(error);
    };
    const timer = setTimeout(() => fail(new FetchJsonError('timeout', shown, `no complete response within ${options.timeoutMs} ms`)), options.timeoutMs);

    req.on('error', (error) => fail(new FetchJsonError('network', shown, `request failed: ${error.message}`, { cause: error })));
    req.on('response', (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400) return fail(new FetchJsonError('redirect', shown, `redirect ${status} refused`, { status }));
      if (status !== 200) return fail(new FetchJsonError('http_status', shown, `status ${status}`, { status }));
      if (!isJsonContentType(res.headers['content-type'])) return fail(new FetchJsonError('content_type', shown, 'content-type is not JSON'));
      const encoding = res.headers['content-encoding'];
      if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') return fail(new FetchJsonError('content_type', shown, 'content-encoding is not identity'));
      const declared = Number(res.headers['content-length'] ?? 0);
      if (declared > options.maxBytes) return fail(new FetchJsonError('too_large', shown, `body exceeds ${options.maxBytes} bytes`));

      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > options.maxBytes) return fail(new FetchJsonError('too_large', shown, `body exceeds ${options.maxBytes} bytes`));
        chunks.push(chunk);
      });
      res.on('error', (error) => fail(new FetchJsonError('network', shown, `response failed: ${error.message}`, { cause: error })));
      // 'close' after 'end' is a no-op; before it, the peer cut the body short.
      res.on('close', () => fail(new FetchJsonError('network', shown, 'connection closed before the body ended')));
      res.on('end', () => {
        if (settled) return;
        if (!res.complete) return fail(new FetchJsonError('network', shown, 'response ended early'));
        settled = true;
        clearTimeout(timer);
        resolve(Buffer.concat(chunks, size));
      });
    });
    req.end();
  });
}
