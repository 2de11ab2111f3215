/**
 * Writ's error codes are public API. Every error a caller can see carries one
 * of these codes; `docs/errors.md` lists the same table and a test keeps the two
 * in sync. Tests assert on codes, never on messages.
 *
 * What a caller sees is not what an operator sees: `detail` is safe to return,
 * `internal` (the precise reason, e.g. "signature did not verify") goes only to
 * the audit log and the server log.
 */

export interface ErrorSpec {
  /** HTTP status when the error ends a request. */
  readonly status: number;
  /** Short, stable, human title (RFC 9457 `title`). */
  readonly title: string;
  /** One sentence for docs/errors.md: when it happens and what to do. */
  readonly description: string;
}

export const errorCatalog = {
  ERR_UNAUTHENTICATED: {
    status: 401,
    title: 'Authentication required',
    description:
      'The bearer credential is missing, malformed, forged, expired, revoked or unknown. The reason is never told to the caller; it is in the audit log.',
  },
  ERR_VALIDATION: {
    status: 400,
    title: 'Invalid request',
    description: 'The request body or parameters do not match the schema; `errors` lists each field.',
  },
  ERR_MALFORMED_JSON: {
    status: 400,
    title: 'Malformed JSON',
    description: 'The body is not valid JSON, or uses a forbidden key such as `__proto__`.',
  },
  ERR_BODY_TOO_LARGE: {
    status: 413,
    title: 'Request body too large',
    description: 'The body exceeds the configured limit (`server.bodyLimit`).',
  },
  ERR_UNSUPPORTED_MEDIA_TYPE: {
    status: 415,
    title: 'Unsupported media type',
    description: 'Send `Content-Type: application/json`.',
  },
  ERR_NOT_FOUND: {
    status: 404,
    title: 'Not found',
    description: 'No route, or no resource with that id visible to the caller.',
  },
  ERR_FORBIDDEN: {
    status: 403,
    title: 'Forbidden',
    description: 'The caller is authenticated but may not act on this resource (for example another identity\'s task).',
  },
  ERR_POLICY_DENIED: {
    status: 403,
    title: 'Denied by policy',
    description: 'Policy refused every requested scope, or the action. `policies` names the deciding policy ids.',
  },
  ERR_APPROVAL_REQUIRED: {
    status: 403,
    title: 'Approval required',
    description: 'Policy allows this only with a human approval of the exact action.',
  },
  ERR_APPROVAL_NOT_FOUND: {
    status: 404,
    title: 'Approval request not found',
    description: 'No approval request with that id is visible to the caller (its requester, or a human policy lets approve it).',
  },
  ERR_APPROVAL_CLOSED: {
    status: 409,
    title: 'Approval request closed',
    description: 'The approval request is no longer pending: it was approved, denied, consumed, expired or cancelled (its task ended). A new call asks anew.',
  },
  ERR_APPROVAL_ALREADY_VOTED: {
    status: 409,
    title: 'Already voted',
    description: 'This approver has already answered this approval request; N-of-M approvals count distinct approvers.',
  },
  ERR_SELF_APPROVAL: {
    status: 403,
    title: 'Self-approval refused',
    description: 'The approver is the requester, or in its delegation chain; nobody approves their own action unless `approvals.allowSelfApproval` says so.',
  },
  ERR_BREAK_GLASS_OFF: {
    status: 403,
    title: 'Break-glass is off',
    description: 'No break-glass policy set is configured (breakGlass.dir, or break-glass/ in the policy folder), so no emergency grant can be decided.',
  },
  ERR_DELEGATION_TOO_DEEP: {
    status: 403,
    title: 'Delegation too deep',
    description: 'A delegation would make the chain longer than `delegation.maxDepth` (default 3); a worker cannot hand on what it was handed beyond that.',
  },
  ERR_SCOPE_EXCEEDS_PARENT: {
    status: 403,
    title: "Scope exceeds the parent's",
    description: "A delegated task asked for a scope, or a whole pattern, that no scope its parent holds now covers; `scopes` names each one. Delegation only narrows; nothing is cut silently.",
  },
  ERR_LIFETIME_EXCEEDS_PARENT: {
    status: 403,
    title: "Lifetime exceeds the parent's",
    description: "A delegated task would outlive its parent task; ask for a shorter ttl.",
  },
  ERR_ACTOR_NOT_ALLOWED: {
    status: 403,
    title: "Actor not allowed",
    description: "The token exchange's actor may not act for this task: the parent's `may_act` does not name it, it is already in the delegation chain, or its actor token is not an identity token.",
  },
  ERR_NOT_RENEWABLE: {
    status: 403,
    title: 'Not renewable',
    description: 'The task cannot be renewed: a break-glass grant never is (ask for a new one, on the record), and only an active task with its current token is.',
  },
  ERR_MAX_LIFETIME_REACHED: {
    status: 403,
    title: "Maximum lifetime reached",
    description: "The task has reached its maximum lifetime (`tokens.maxLifetime`, default 8h) or its parent's expiry; a renewal cannot take it further. Ask for a new task.",
  },
  ERR_UNSUPPORTED_GRANT_TYPE: {
    status: 400,
    title: 'Unsupported grant type',
    description: 'The token endpoint serves only `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693).',
  },
  ERR_UNKNOWN_ACTION: {
    status: 400,
    title: 'Unknown action',
    description: 'The action is not declared in the Cedar schema, so nothing can allow it.',
  },
  ERR_TASK_NOT_FOUND: {
    status: 404,
    title: 'Task not found',
    description: 'No task with that id is visible to the caller.',
  },
  ERR_SECRET_NOT_FOUND: {
    status: 404,
    title: 'Secret not found',
    description: 'No secret with that name is in the vault; store it with `writ secret set <name>` (configuration names secrets, never holds them).',
  },
  ERR_UPSTREAM_UNAVAILABLE: {
    status: 502,
    title: 'Upstream unavailable',
    description: 'An upstream tool server of the MCP gateway could not be reached or failed mid-call; Writ retries it with backoff. Nothing was done on its behalf.',
  },
  ERR_LEASE_PROVIDER_NOT_FOUND: {
    status: 404,
    title: 'Lease provider not found',
    description: 'No credential provider with that name is configured (`leases.postgres[].name`).',
  },
  ERR_LEASE_NO_GRANTS: {
    status: 403,
    title: 'Nothing to lease',
    description: 'None of the task\'s granted scopes maps to a privilege of that provider (`leases.postgres[].grants`), so no credential is minted.',
  },
  ERR_LEASE_FAILED: {
    status: 502,
    title: 'Lease failed',
    description: 'The downstream system refused or could not be reached while the credential was minted; whatever was made is revoked and nothing was handed out. The reason is in the server log.',
  },
  ERR_TASK_STATE_CONFLICT: {
    status: 409,
    title: 'Illegal task transition',
    description: 'The task is not in a state from which this transition is allowed (see docs/tasks.md).',
  },
  ERR_IDENTITY_EXISTS: {
    status: 409,
    title: 'Identity already registered',
    description: 'An identity with this id is already in the registry.',
  },
  ERR_IDENTITY_STATE_CONFLICT: {
    status: 409,
    title: 'Identity state conflict',
    description: 'The identity is not in a state that allows this change (a decommissioned identity stays decommissioned; only a quarantined one can be claimed).',
  },
  ERR_IDENTITY_NOT_FOUND: {
    status: 404,
    title: 'Identity not found',
    description: 'No identity with this id is registered.',
  },
  ERR_IDENTITY_INACTIVE: {
    status: 403,
    title: 'Identity not active',
    description: 'The identity is expired, quarantined, suspended or decommissioned and gets nothing.',
  },
  ERR_TOKEN_MALFORMED: {
    status: 401,
    title: 'Malformed token',
    description: 'Authorize reason: the token is not a compact JWS of the expected type, or is oversized.',
  },
  ERR_TOKEN_SIGNATURE: {
    status: 401,
    title: 'Bad token signature',
    description: 'Authorize reason: the signature does not verify, the key is unknown, or the algorithm is not allowed.',
  },
  ERR_TOKEN_EXPIRED: {
    status: 401,
    title: 'Token expired',
    description: 'Authorize reason: `exp` has passed (or `nbf` is in the future) beyond the allowed clock skew.',
  },
  ERR_TOKEN_AUDIENCE: {
    status: 401,
    title: 'Wrong audience',
    description: 'Authorize reason: the token was issued for another audience.',
  },
  ERR_TOKEN_ISSUER: {
    status: 401,
    title: 'Unknown issuer',
    description: 'Authentication reason: `iss` is not the issuer pinned for the trust source whose key signed the token.',
  },
  ERR_TOKEN_NOT_YET_VALID: {
    status: 401,
    title: 'Token not yet valid',
    description: 'Authentication reason: `nbf` or `iat` is in the future beyond the allowed clock skew.',
  },
  ERR_TOKEN_UNKNOWN_KEY: {
    status: 401,
    title: 'Unknown signing key',
    description: 'Authentication reason: no trust source holds a key with the token\'s `kid`, even after refreshing (rate-limited).',
  },
  ERR_TOKEN_ALGORITHM: {
    status: 401,
    title: 'Algorithm not allowed',
    description: 'Authentication reason: the token\'s `alg` is not on the trust source\'s allowlist (`none` and HMAC never are).',
  },
  ERR_TOKEN_TRUST_DOMAIN: {
    status: 401,
    title: 'Wrong trust domain',
    description: 'Authentication reason: the JWT-SVID\'s `sub` is not a SPIFFE ID in the trust domain whose bundle signed it.',
  },
  ERR_TOKEN_CLAIMS: {
    status: 401,
    title: 'Required claim missing',
    description: 'Authentication reason: a claim the trust source requires (`require`) is missing or has another value.',
  },
  ERR_TOKEN_BINDING: {
    status: 401,
    title: 'Token bound to another certificate',
    description: 'Authentication reason: the task token is bound to a client certificate (`cnf.x5t#S256`) that this request did not present.',
  },
  ERR_ISSUER_UNREACHABLE: {
    status: 401,
    title: 'Issuer unreachable',
    description: 'Authentication reason: the trust source\'s keys could not be fetched and no cached key applies; Writ fails closed.',
  },
  ERR_CERT_INVALID: {
    status: 401,
    title: 'Invalid client certificate',
    description: 'Authentication reason: no client certificate, or it is not an X.509-SVID (one SPIFFE URI SAN, not a CA).',
  },
  ERR_CERT_UNTRUSTED: {
    status: 401,
    title: 'Untrusted client certificate',
    description: 'Authentication reason: the client certificate does not chain to the bundle of its SPIFFE ID\'s trust domain.',
  },
  ERR_CERT_EXPIRED: {
    status: 401,
    title: 'Client certificate expired',
    description: 'Authentication reason: a certificate on the client\'s chain is expired or not yet valid.',
  },
  ERR_IDENTITY_MISMATCH: {
    status: 401,
    title: 'Identities disagree',
    description: 'Authentication reason: the client certificate and the bearer token name different identities, or the token\'s mapped environment differs from the registry\'s.',
  },
  ERR_TOKEN_REVOKED: {
    status: 401,
    title: 'Token revoked',
    description: 'Authorize reason: the task has ended (completed, failed, revoked or expired).',
  },
  ERR_SCOPE_NOT_GRANTED: {
    status: 403,
    title: 'Scope not granted',
    description: 'Authorize reason: no scope in the task token covers this action on this resource, or a policy change narrowed the grant (policy drift) and the scope is no longer held.',
  },
  ERR_REVOCATIONS_STALE: {
    status: 503,
    title: 'Revocations not current',
    description: 'writ/verify reason: the resource server has not read Writ\'s revocation feed yet, or not within its staleness bound, so it cannot tell whether the token was revoked; it fails closed. Retry later.',
  },
  ERR_KEYS_UNAVAILABLE: {
    status: 503,
    title: 'Keys not loaded',
    description: 'writ/verify reason: the resource server could not load Writ\'s signing keys (JWKS) and holds none for the token\'s key id, so it cannot verify the token; it fails closed. Retry later.',
  },
  ERR_AUDIT_UNAVAILABLE: {
    status: 503,
    title: 'Audit log unavailable',
    description: 'The audit record could not be written, so the action was not carried out. Retry later.',
  },
  ERR_CONFIG_INVALID: {
    status: 500,
    title: 'Invalid configuration',
    description: 'writ.yaml, an environment variable or a flag is invalid; the message names the field.',
  },
  ERR_POLICY_INVALID: {
    status: 422,
    title: 'Invalid policy set',
    description: 'The Cedar policies or schema do not parse or validate; the set is refused.',
  },
  ERR_MASTER_KEY: {
    status: 500,
    title: 'Master key unusable',
    description: 'WRIT_MASTER_KEY or the master key file is malformed, or does not open the stored signing keys.',
  },
  ERR_AUDIT_CHAIN_BROKEN: {
    status: 500,
    title: 'Audit chain broken',
    description: '`writ audit verify` found a record that was changed, deleted or reordered.',
  },
  ERR_OVER_CAPACITY: {
    status: 503,
    title: 'Over capacity',
    description: 'Writ holds as many of these as it is configured to (for example `gateway.maxSessions` open MCP sessions); try again later.',
  },
  ERR_INTERNAL: {
    status: 500,
    title: 'Internal error',
    description: 'Something unexpected failed. The response carries a correlation id to find it in the server log.',
  },
} as const satisfies Record<string, ErrorSpec>;

export type WritErrorCode = keyof typeof errorCatalog;

export interface WritErrorOptions {
  /** Safe, caller-facing explanation. Defaults to the title. */
  readonly detail?: string;
  /** Operator-only reason: written to the audit and server log, never returned. */
  readonly internal?: string;
  /** Extra RFC 9457 members safe to return (e.g. `policies`, `errors`). */
  readonly extensions?: Readonly<Record<string, unknown>>;
  readonly cause?: unknown;
}

/**
 * The one error type Writ throws on purpose. `code` is stable; switch on it.
 */
export class WritError<C extends WritErrorCode = WritErrorCode> extends Error {
  readonly code: C;
  readonly status: number;
  readonly detail: string;
  readonly internal: string | undefined;
  readonly extensions: Readonly<Record<string, unknown>>;

  constructor(code: C, options: WritErrorOptions = {}) {
    const spec: ErrorSpec = errorCatalog[code];
    super(options.detail ?? spec.title, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WritError';
    this.code = code;
    this.status = spec.status;
    this.detail = options.detail ?? spec.title;
    this.internal = options.internal;
    this.extensions = options.extensions ?? {};
  }
}

/** True when `value` is a WritError, optionally with one of `codes`. */
export function isWritError(value: unknown, ...codes: WritErrorCode[]): value is WritError {
  return value instanceof WritError && (codes.length === 0 || codes.includes(value.code));
}

/** An RFC 9457 problem details object as Writ returns it. */
export interface ProblemDetails {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: WritErrorCode;
  readonly correlationId?: string;
  readonly [extension: string]: unknown;
}

/** Stable problem `type` URI for a code. */
export function problemType(code: WritErrorCode): string {
  return `urn:writ:problem:${code}`;
}

/**
 * The caller-facing problem document for an error. Never includes `internal`.
 * Anything that is not a WritError becomes a generic ERR_INTERNAL.
 */
export function toProblem(error: unknown, correlationId?: string): ProblemDetails {
  const err: WritError = error instanceof WritError ? (error as WritError) : new WritError('ERR_INTERNAL');
  const spec: ErrorSpec = errorCatalog[err.code];
  return {
    ...err.extensions,
    type: problemType(err.code),
    title: spec.title,
    status: err.status,
    detail: err.detail,
    code: err.code,
    ...(correlationId === undefined ? {} : { correlationId }),
  };
}
