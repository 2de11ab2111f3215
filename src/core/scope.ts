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
