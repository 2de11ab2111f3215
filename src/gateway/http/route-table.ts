/**
 * How the HTTP proxy sees a request: which route it is for, the (action,
 * resource) the action check decides it as, and the exact upstream URL it
 * goes to. Pure functions over the configuration, no I/O.
 *
 * A path is read once, here, segment by segment: each segment is
 * percent-decoded and must then be a plain segment. A decoded `/` or `\`
 * (`..%2fadmin`), a `.` or `..` segment (`%2e%2e` included), an empty segment
 * (`//`), a NUL or control character, or bad percent-encoding refuses the
 * request. The decoded segments are what the patterns match and what the
 * resource is built from, and the path sent upstream is those same segments
 * encoded again: the upstream can only ever be asked for the path that was
 * decided.
 */
import { isValidAction, isValidResource } from '../../core/scope.js';
import type { ProxyRouteConfig } from '../../core/config.js';

/** GET, HEAD: read; POST, PUT, PATCH: write; DELETE: delete. Other methods only where configured. */
export const DEFAULT_METHOD_ACTIONS: Readonly<Record<string, string>> = Object.freeze({ GET: 'read', HEAD: 'read', POST: 'write', PUT: 'write', PATCH: 'write', DELETE: 'delete' });

/** A placeholder's value: one resource name segment (as the MCP gateway's tool arguments). */
const SEGMENT_RE = /^[A-Za-z0-9._~@+=,-]{1,128}$/;
const PLACEHOLDER_RE = /^\{([A-Za-z_][A-Za-z0-9_]{0,63})\}$/;
/** RFC 3986 pchar minus pct-encoded: left as is when a segment is encoded again. */
const PCHAR_RE = /[A-Za-z0-9\-._~!$&'()*+,;=:@]/;

type PatternPart = { readonly literal: string } | { readonly placeholder: string };

interface CompiledPath {
  readonly parts: readonly PatternPart[];
  readonly resource: string;
  readonly methods: Readonly<Record<string, string>>;
}

export interface CompiledRoute {
  readonly name: string;
  readonly prefix: readonly string[];
  readonly upstream: URL;
  readonly inject: ProxyRouteConfig['inject'];
  readonly paths: readonly CompiledPath[];
}

export interface RouteTable {
  /** The mount's segments (`/proxy` → ['proxy']). */
  readonly mount: readonly string[];
  readonly routes: readonly CompiledRoute[];
}

/** A request the table accepts: what it is decided as and where it goes. */
export interface ProxyTarget {
  readonly route: CompiledRoute;
  readonly action: string;
  readonly resource: string;
  /** The upstream URL: base path, the canonical rest of the path, the query as sent. */
  readonly url: URL;
  /** The canonical path that was decided (after the mount), for logs. */
  readonly path: string;
}

export type ProxyRefusal = {
  readonly ok: false;
  /** ERR_VALIDATION: a path that is not plain segments; ERR_NOT_FOUND: outside the table; ERR_FORBIDDEN: a method the path does not take. */
  readonly code: 'ERR_VALIDATION' | 'ERR_NOT_FOUND' | 'ERR_FORBIDDEN';
  readonly detail: string;
};

/**
 * Compiles the configured routes.
 * @throws Error naming the route and path whose action or resource is not well formed (config is checked at start, not on a request).
 */
export function compileRouteTable(mount: string, routes: readonly ProxyRouteConfig[]): RouteTable {
  const compiled = routes.map((route): CompiledRoute => {
    const routeMethods = mergeMethods(DEFAULT_METHOD_ACTIONS, route.methods);
    const paths = route.paths.map((path): CompiledPath => {
      const parts = path.pattern
        .split('/')
        .slice(1)
        .map((segment): PatternPart => {
          const placeholder = PLACEHOLDER_RE.exec(segment)?.[1];
          return placeholder === undefined ? { literal: segment } : { placeholder };
        });
      const methods = mergeMethods(routeMethods, path.methods);
      for (const action of Object.values(methods)) if (!isValidAction(action)) throw new Error(`proxy route ${route.name}, ${path.pattern}: ${action} is not an action name`);
      const probe = path.resource.replace(/\{[A-Za-z_][A-Za-z0-9_]*\}/g, 'x');
      const templated = probe !== path.resource;
      if (!isValidResource(probe) || (templated && probe.includes('*'))) throw new Error(`proxy route ${route.name}, ${path.pattern}: ${path.resource} is not a resource name`);
      return { parts, resource: path.resource, methods };
    });
    return { name: route.name, prefix: route.prefix.split('/').slice(1), upstream: new URL(route.upstream), inject: route.inject, paths };
  });
  return { mount: mount.split('/').slice(1), routes: compiled };
}

/**
 * What `method` on `rawTarget` (the request target as received, path and
 * query) is decided as and forwarded to; a refusal when the path is not
 * plain segments, lies outside every route and pattern, or the method is
 * not one the matched path takes.
 */
export function resolveProxyTarget(table: RouteTable, method: string, rawTarget: string): { readonly ok: true; readonly target: ProxyTarget } | ProxyRefusal {
  if (!rawTarget.startsWith('/')) return { ok: false, code: 'ERR_VALIDATION', detail: 'the request target must be a path' };
  const queryAt = rawTarget.indexOf('?');
  const rawPath = queryAt < 0 ? rawTarget : rawTarget.slice(0, queryAt);
  const query = queryAt < 0 ? '' : rawTarget.slice(queryAt);
  const segments = decodeSegments(rawPath);
  if (!segments.ok) return { ok: false, code: 'ERR_VALIDATION', detail: segments.detail };
  const decoded = segments.segments;
  if (!startsWith(decoded, table.mount)) return { ok: false, code: 'ERR_NOT_FOUND', detail: 'no proxy route serves this path' };
  const afterMount = decoded.slice(table.mount.length);
  const route = table.routes.find((r) => startsWith(afterMount, r.prefix));
  if (route === undefined) return { ok: false, code: 'ERR_NOT_FOUND', detail: 'no proxy route serves this path' };
  const rest = afterMount.slice(route.prefix.length);
  for (const path of route.paths) {
    const values = matchPattern(path.parts, rest);
    if (values === undefined) continue;
    const action = Object.hasOwn(path.methods, method) ? path.methods[method] : undefined;
    if (action === undefined) return { ok: false, code: 'ERR_FORBIDDEN', detail: `this path does not take ${method.slice(0, 16)}` };
    const resource = path.resource.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_whole, name: string) => values.get(name) ?? '');
    if (!isValidResource(resource)) return { ok: false, code: 'ERR_VALIDATION', detail: 'the path names no valid resource' };
    const base = route.upstream.pathname.replace(/\/+$/, '');
    const canonical = rest.map(encodePathSegment).join('/');
    const url = new URL(route.upstream.href);
    url.pathname = rest.length === 0 ? route.upstream.pathname : `${base}/${canonical}`;
    url.search = query;
    return { ok: true, target: { route, action, resource, url, path: `/${[...route.prefix, ...rest.map(encodePathSegment)].join('/')}` } };
  }
  return { ok: false, code: 'ERR_NOT_FOUND', detail: 'no path pattern of this proxy route matches' };
}

/**
 * The percent-decoded segments of a raw path (without its leading `/`), or
 * why it is refused: an empty segment other than a trailing one, a `.` or
 * `..` segment, a decoded `/`, `\`, NUL or control character, or bad encoding.
 */
export function decodeSegments(rawPath: string): { readonly ok: true; readonly segments: string[] } | { readonly ok: false; readonly detail: string } {
  const raw = rawPath.split('/').slice(1);
  const segments: string[] = [];
  for (const [index, segment] of raw.entries()) {
    if (segment === '' && index !== raw.length - 1) return { ok: false, detail: 'empty path segments (//) are refused' };
    let text: string;
    try {
      text = decodeURIComponent(segment);
    } catch {
      return { ok: false, detail: 'bad percent-encoding in the path' };
    }
    if (text === '.' || text === '..') return { ok: false, detail: 'dot segments (. and ..) are refused, encoded or not' };
    // eslint-disable-next-line no-control-regex
    if (/[/\\\u0000-\u001f\u007f]/.test(text)) return { ok: false, detail: 'a path segment may not hold an encoded slash, backslash or control character' };
    segments.push(text);
  }
  return { ok: true, segments };
}

/** A decoded segment encoded again for the upstream: pchar left as is, everything else percent-encoded (UTF-8). */
export function encodePathSegment(segment: string): string {
  let out = '';
  for (const char of segment) out += PCHAR_RE.test(char) ? char : encodeURIComponent(char);
  return out;
}

function matchPattern(parts: readonly PatternPart[], segments: readonly string[]): Map<string, string> | undefined {
  if (parts.length !== segments.length) return undefined;
  const values = new Map<string, string>();
  for (const [index, part] of parts.entries()) {
    const segment = segments[index] as string;
    if ('literal' in part) {
      if (part.literal !== segment) return undefined;
    } else {
      // A placeholder fills a resource name: one safe segment, never a dot segment.
      if (!SEGMENT_RE.test(segment) || segment === '.' || segment === '..') return undefined;
      values.set(part.placeholder, segment);
    }
  }
  return values;
}

function startsWith(segments: readonly string[], prefix: readonly string[]): boolean {
  return prefix.length <= segments.length && prefix.every((p, i) => segments[i] === p);
}

function mergeMethods(base: Readonly<Record<string, string>>, overrides: Readonly<Record<string, string | false>>): Record<string, string> {
  const merged: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [method, action] of Object.entries(base)) merged[method] = action;
  for (const [method, action] of Object.entries(overrides)) {
    if (action === false) delete merged[method];
    else merged[method] = action;
  }
  return merged;
}
