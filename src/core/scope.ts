/**
 * Scopes and resource patterns: pure functions, no I/O.
 *
 * A resource is `kind:path`, for example `db:orders/123` or `tickets:T-42`.
 * A resource *pattern* ends in a single `*` and means "every resource whose
 * name starts with what comes before the star": `db:orders/*`. A star anywhere
 * else is refused. Keeping patterns to prefixes makes containment exact and
 * cheap (a string prefix test), which is what attenuation and scope checks need
 * to be provably right; glob languages with inner wildcards are not.
 */
import type { Scope } from './types.js';

export const MAX_RESOURCE_LENGTH = 256;
export const MAX_ACTION_LENGTH = 64;

// Characters allowed in a resource name. No whitespace, quotes, backslashes,
// percent-encoding or control characters: resources reach logs, SQL parameters,
// Cedar entity ids, and (through enforcement points) paths and URLs.
const RESOURCE_RE = /^[a-z][a-z0-9-]{0,31}:[A-Za-z0-9._~:/@+=,-]*\*?$/;
const ACTION_RE = /^[a-z][a-z0-9_]{0,63}$/;

/** True when `action` is a syntactically valid action name. */
export function isValidAction(action: string): boolean {
  return ACTION_RE.test(action);
}

/**
 * True when `resource` is a valid resource name or prefix pattern, in
 * canonical form: a non-empty path whose `/`-separated segments are never
 * empty, `.` or `..`. Only canonical names can be compared by prefix:
 * `db:orders/../customers/1` would otherwise sit inside `db:orders/*`.
 */
export function isValidResource(resource: string): boolean {
  if (resource.length > MAX_RESOURCE_LENGTH || !RESOURCE_RE.test(resource)) return false;
  const path = resource.slice(resource.indexOf(':') + 1);
  if (path.length === 0) return false;
  for (const segment of path.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') return false;
  }
  return true;
}

/** True when `resource` is a pattern (ends in `*`), false when it names one resource. */
export function isPattern(resource: string): boolean {
  return resource.endsWith('*');
}

/** The kind of a resource: `db` for `db:orders/1`. */
export function resourceKind(resource: string): string {
  const colon = resource.indexOf(':');
  return colon < 0 ? '' : resource.slice(0, colon);
}

/**
 * True when every resource matched by `inner` is matched by `outer`.
 * Both may be concrete names or patterns. `covers('db:orders/*', 'db:orders/1')`
 * and `covers('db:*', 'db:orders/*')` are true; `covers('db:orders/1', 'db:orders/*')`
 * is false.
 */
export function resourceCovers(outer: string, inner: string): boolean {
  if (!isPattern(outer)) return outer === inner;
  const prefix = outer.slice(0, -1);
  const innerStem = isPattern(inner) ? inner.slice(0, -1) : inner;
  return innerStem.startsWith(prefix);
}

/** True when some resource is matched by both `a` and `b`. */
export function resourcesIntersect(a: string, b: string): boolean {
  const aStem = isPattern(a) ? a.slice(0, -1) : a;
  const bStem = isPattern(b) ? b.slice(0, -1) : b;
  if (isPattern(a) && isPattern(b)) return aStem.startsWith(bStem) || bStem.startsWith(aStem);
  if (isPattern(a)) return bStem.startsWith(aStem);
  if (isPattern(b)) return aStem.startsWith(bStem);
  return a === b;
}

/** True when `granted` allows everything `requested` asks for. */
export function scopeCovers(granted: Scope, requested: Scope): boolean {
  return granted.action === requested.action && resourceCovers(granted.resource, requested.resource);
}

/** The first scope in `granted` that covers `requested`, if any. */
export function findCoveringScope(granted: readonly Scope[], requested: Scope): Scope | undefined {
  for (const scope of granted) if (scopeCovers(scope, requested)) return scope;
  return undefined;
}

/** `read:db:orders/*`: the form a scope takes in a token's space-separated `scope` claim. */
export function formatScope(scope: Scope): string {
  return `${scope.action}:${scope.resource}`;
}

/** The `scope` claim for a list of scopes (RFC 8693 §4.2: space-delimited). */
export function formatScopeClaim(scopes: readonly Scope[]): string {
  return scopes.map(formatScope).join(' ');
}

/**
 * Parses a `scope` claim. Returns undefined when any entry is invalid: a token
 * with a scope Writ cannot read grants nothing.
 */
export function parseScopeClaim(claim: string): Scope[] | undefined {
  if (claim.length === 0) return [];
  const scopes: Scope[] = [];
  for (const entry of claim.split(' ')) {
    const colon = entry.indexOf(':');
    if (colon <= 0) return undefined;
    const scope = { action: entry.slice(0, colon), resource: entry.slice(colon + 1) };
    if (!isValidAction(scope.action) || !isValidResource(scope.resource)) return undefined;
    scopes.push(scope);
  }
  return scopes;
}

/** How many times a task may be delegated onward when configuration does not say: root (0) → 1 → 2 → 3. */
export const DEFAULT_MAX_DELEGATION_DEPTH = 3;

/** What a planner asks to hand a worker: the child task's scopes and expiry (epoch ms). */
export interface AttenuationRequest {
  readonly scopes: readonly Scope[];
  readonly expiresAt: number;
}

/**
 * What the parent task holds, from its verified token, and the configured
 * ceiling. Depth counts delegations: 0 for a task acting directly.
 */
export interface AttenuationLimits {
  readonly parentScopes: readonly Scope[];
  readonly parentExpiresAt: number;
  readonly parentDepth: number;
  readonly maxDepth: number;
}

export type AttenuationRefusalCode = 'ERR_DELEGATION_TOO_DEEP' | 'ERR_VALIDATION' | 'ERR_SCOPE_EXCEEDS_PARENT' | 'ERR_LIFETIME_EXCEEDS_PARENT';

export type Attenuation =
  | {
      readonly ok: true;
      /** The requested scopes, exact duplicates removed, in request order; each covered by one parent scope. */
      readonly scopes: Scope[];
      /** The requested expiry, never later than the parent's. */
      readonly expiresAt: number;
      /** The child's delegation depth: parentDepth + 1, never above maxDepth. */
      readonly depth: number;
    }
  | {
      readonly ok: false;
      readonly code: AttenuationRefusalCode;
      readonly detail: string;
      /**
       * The offending scopes: the malformed ones (ERR_VALIDATION) or those no
       * parent scope covers (ERR_SCOPE_EXCEEDS_PARENT); empty for the other codes.
       */
      readonly scopes: Scope[];
    };

/**
 * Decides whether a parent task may delegate `request` to a child task, and
 * what the child gets. Delegation can only narrow; the child is accepted only
 * when all of these hold, checked in this order (the first failure is the
 * answer):
 *
 * 1. `ERR_DELEGATION_TOO_DEEP`: parentDepth + 1 ≤ maxDepth.
 * 2. `ERR_VALIDATION`: every requested scope is a valid action and a valid,
 *    canonical resource (`isValidAction`, `isValidResource`). Prefix
 *    containment is only meaningful between canonical names:
 *    `db:orders/../customers/1` starts with `db:orders/`.
 * 3. `ERR_SCOPE_EXCEEDS_PARENT`: every requested scope is covered, by
 *    `scopeCovers`, by one well-formed parent scope. This is the very relation
 *    enforcement applies to each call (`findCoveringScope`), so a child can
 *    never be allowed a call its parent would be refused. A pattern must be
 *    covered as a whole pattern: `db:orders/*` is not covered by
 *    `db:orders/4*`, nor by `db:orders/4*` and `db:orders/5*` together.
 * 4. `ERR_LIFETIME_EXCEEDS_PARENT`: expiresAt ≤ parentExpiresAt (not a
 *    number, or later, is refused).
 *
 * Refusals are whole, never cuts: a request for one scope too many is refused
 * outright and the refusal names every offending scope, because silently
 * dropping scopes or shortening a lifetime would hide an escalation attempt
 * from the audit log and hand the worker less than it was told it has.
 *
 * Conservative by design: a scope covered only by the union of several parent
 * scopes is refused, and a parent scope that is not well formed grants
 * nothing. An empty scope list is a subset of anything and is accepted;
 * whether a task may ask for nothing is the caller's decision, as is any
 * lower bound on expiresAt (this function has no clock).
 *
 * @throws RangeError when parentDepth or maxDepth is not a non-negative safe
 *   integer: limits come from Writ's own records and configuration, so a bad
 *   one is a bug, and no answer is safer than a guessed one.
 */
export function attenuate(request: AttenuationRequest, limits: AttenuationLimits): Attenuation {
  const { parentDepth, maxDepth, parentExpiresAt } = limits;
  if (!isDepth(parentDepth) || !isDepth(maxDepth)) {
    throw new RangeError(`delegation depths must be non-negative integers, got parentDepth ${parentDepth} and maxDepth ${maxDepth}`);
  }

  const depth = parentDepth + 1;
  if (depth > maxDepth) {
    return refuse('ERR_DELEGATION_TOO_DEEP', `a delegation at depth ${depth} exceeds the maximum depth ${maxDepth}`);
  }

  const malformed = request.scopes.filter((scope) => !isWellFormedScope(scope));
  if (malformed.length > 0) {
    return refuse('ERR_VALIDATION', `${malformed.length} requested scope(s) are not well formed`, malformed);
  }

  const scopes = dedupeScopes(request.scopes);
  // INVARIANT: a parent scope Writ cannot read grants nothing, as in parseScopeClaim.
  const held = limits.parentScopes.filter(isWellFormedScope);
  const exceeding = scopes.filter((scope) => findCoveringScope(held, scope) === undefined);
  if (exceeding.length > 0) {
    return refuse('ERR_SCOPE_EXCEEDS_PARENT', `not covered by the parent's scopes: ${formatScopeClaim(exceeding)}`, exceeding);
  }

  const { expiresAt } = request;
  // Written so that NaN on either side refuses.
  if (!(typeof expiresAt === 'number' && expiresAt <= parentExpiresAt)) {
    return refuse('ERR_LIFETIME_EXCEEDS_PARENT', `the child's expiry ${String(expiresAt)} is not within its parent's (${String(parentExpiresAt)})`);
  }

  return { ok: true, scopes, expiresAt, depth };
}

function refuse(code: AttenuationRefusalCode, detail: string, scopes: Scope[] = []): Attenuation {
  return { ok: false, code, detail, scopes };
}

function isDepth(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

function isWellFormedScope(scope: Scope): boolean {
  return (
    typeof scope === 'object' &&
    scope !== null &&
    typeof scope.action === 'string' &&
    typeof scope.resource === 'string' &&
    isValidAction(scope.action) &&
    isValidResource(scope.resource)
  );
}

/** Plain copies, so a caller's object with extra properties never rides along into a token. */
function copyScope(scope: Scope): Scope {
  return { action: scope.action, resource: scope.resource };
}

function dedupeScopes(scopes: readonly Scope[]): Scope[] {
  const seen = new Set<string>();
  const out: Scope[] = [];
  for (const scope of scopes) {
    // An action has no colon, so `action:resource` names one scope unambiguously.
    const key = formatScope(scope);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(copyScope(scope));
  }
  return out;
}
