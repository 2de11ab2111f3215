/**
 * Writ's OAuth token endpoint: RFC 8693 token exchange for planner→worker
 * delegation (broker/delegation.ts), and its RFC 8414 metadata.
 *
 * The endpoint speaks OAuth: form-encoded requests (RFC 6749 §3.2, and only
 * here: a form is a request a browser sends cross-site without asking, so no
 * other route parses one), each parameter at most once, unknown ones ignored.
 * Errors are RFC 9457 problem details with Writ's stable `code`, and carry the
 * RFC 6749 §5.2 `error` and `error_description` members too, so an OAuth client
 * reads them as it would any token endpoint's.
 */
import type { X509Certificate } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { WritError, type WritErrorCode } from '../core/errors.js';
import { TOKEN_EXCHANGE_GRANT } from '../broker/delegation.js';
import type { Writ } from '../writ.js';

export const TOKEN_PATH = '/oauth/token';
const FORM = 'application/x-www-form-urlencoded';
/** A token exchange carries two tokens and a few short parameters. */
const MAX_FORM_BYTES = 64 * 1024;

/** The RFC 6749 §5.2 / RFC 8693 §2.2.2 error of each refusal. */
const OAUTH_ERRORS: Partial<Record<WritErrorCode, string>> = {
  ERR_UNSUPPORTED_GRANT_TYPE: 'unsupported_grant_type',
  ERR_SCOPE_EXCEEDS_PARENT: 'invalid_scope',
  ERR_POLICY_DENIED: 'invalid_scope',
  ERR_APPROVAL_REQUIRED: 'invalid_scope',
  ERR_BODY_TOO_LARGE: 'invalid_request',
};

export function registerOAuthRoutes(app: FastifyInstance, writ: Writ, certificateChainOf: (request: FastifyRequest) => X509Certificate[]): void {
  app.get('/.well-known/oauth-authorization-server', async () => ({
    issuer: writ.config.issuer,
    token_endpoint: new URL(TOKEN_PATH, writ.config.issuer).href,
    jwks_uri: new URL('/.well-known/jwks.json', writ.config.issuer).href,
    grant_types_supported: [TOKEN_EXCHANGE_GRANT],
    // The exchange is authenticated by the tokens it carries (and a client certificate, where the subject token is bound to one).
    token_endpoint_auth_methods_supported: ['none'],
  }));

  // Encapsulated: the form parser exists for this route alone.
  void app.register(async (scope) => {
    scope.addContentTypeParser(FORM, { parseAs: 'string', bodyLimit: MAX_FORM_BYTES }, (_request, body, done) => {
      done(null, parseForm(body as string));
    });
    scope.post(TOKEN_PATH, async (request) => {
      try {
        if (!(request.headers['content-type'] ?? '').toLowerCase().startsWith(FORM)) {
          throw new WritError('ERR_UNSUPPORTED_MEDIA_TYPE', { detail: `send ${FORM} (RFC 6749 §3.2)` });
        }
        const { form, repeated } = request.body as ParsedForm;
        if (repeated !== undefined) {
          throw new WritError('ERR_VALIDATION', { detail: `${repeated}: given more than once`, extensions: { errors: [{ field: repeated, message: 'given more than once' }] } });
        }
        return await writ.delegation.exchange(form, { certificateChain: certificateChainOf(request) });
      } catch (error) {
        if (!(error instanceof WritError)) throw error;
        const target = error.code === 'ERR_VALIDATION' && /(^|; )(audience|resource):/.test(error.detail);
        throw new WritError(error.code, {
          detail: error.detail,
          ...(error.internal === undefined ? {} : { internal: error.internal }),
          extensions: { ...error.extensions, error: target ? 'invalid_target' : (OAUTH_ERRORS[error.code as WritErrorCode] ?? 'invalid_request'), error_description: error.detail },
        });
      }
    });
  });
}

interface ParsedForm {
  readonly form: Record<string, string>;
  /** A parameter given more than once (RFC 6749 §3.2 forbids it): the request is refused. */
  readonly repeated: string | undefined;
}

function parseForm(body: string): ParsedForm {
  const form: Record<string, string> = Object.create(null) as Record<string, string>;
  let repeated: string | undefined;
  for (const [name, value] of new URLSearchParams(body)) {
    if (Object.prototype.hasOwnProperty.call(form, name)) repeated ??= name;
    form[name] = value;
  }
  return { form, repeated };
}
