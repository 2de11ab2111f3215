/**
 * SPIFFE IDs (SPIFFE-ID spec §2): `spiffe://<trust-domain>/<path>`.
 * The trust domain is lowercase letters, digits, `.`, `-` and `_`; path
 * segments are non-empty, never `.` or `..`, and use letters, digits, `.`,
 * `-` and `_`. No query, fragment, port or user info. At most 2048 bytes.
 */
const SPIFFE_RE = /^spiffe:\/\/([a-z0-9._-]+)((?:\/[A-Za-z0-9._-]+)+)$/;

export interface SpiffeId {
  readonly trustDomain: string;
  readonly path: string;
}

/** Parses a SPIFFE ID with a non-empty path (a workload, not a bare trust domain). */
export function parseSpiffeId(value: string): SpiffeId | undefined {
  // Claims are untyped JSON: an array holding one ID must not pass as the ID.
  if (typeof value !== 'string' || value.length > 2048) return undefined;
  const match = SPIFFE_RE.exec(value);
  if (!match) return undefined;
  const path = match[2] ?? '';
  if (path.split('/').some((segment) => segment === '.' || segment === '..')) return undefined;
  return { trustDomain: match[1] ?? '', path };
}

export function isSpiffeId(value: unknown): boolean {
  return typeof value === 'string' && parseSpiffeId(value) !== undefined;
}
