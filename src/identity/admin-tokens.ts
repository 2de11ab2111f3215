/**
 * Operator credentials for the admin API. Two kinds of admin exist: an admin
 * token (opaque, scoped to operations, expiring, revocable; only its SHA-256 is
 * stored), and a registered human identity holding admin scopes, signed in
 * through a trust source (an OIDC issuer). There is no open admin endpoint:
 * the first start of a store mints one bootstrap token and prints it once.
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Clock } from '../core/clock.js';
import { WritError, type WritErrorCode } from '../core/errors.js';
import { newId } from '../core/ids.js';
import { ADMIN_SCOPES, type AdminScope, type Identity } from '../core/types.js';
import type { AdminTokenRecord, Store } from '../store/store.js';
import { parseOrThrow } from './registry.js';

const TOKEN_PREFIX = 'writ_admin_';
const TOKEN_RE = /^writ_admin_[A-Za-z0-9_-]{43}$/;

/** Why an admin token was refused, as an audit reason code. */
export type AdminTokenRefusal = Extract<WritErrorCode, 'ERR_TOKEN_MALFORMED' | 'ERR_UNAUTHENTICATED' | 'ERR_TOKEN_REVOKED' | 'ERR_TOKEN_EXPIRED'>;

/** Who is calling the admin API. */
export interface AdminPrincipal {
  readonly kind: 'token' | 'identity';
  /** The admin token id, or the human identity's id. */
  readonly id: string;
  readonly scopes: readonly AdminScope[];
}

export const createAdminTokenSchema = z
  .object({
    name: z
      .string()
      .min(1)
      .max(128)
      .regex(/^[^\p{Cc}\p{Cf}\p{Cs}]+$/u, 'no control or format characters'),
    scopes: z.array(z.enum(ADMIN_SCOPES)).min(1).max(ADMIN_SCOPES.length),
    /** Lifetime in seconds; absent = no expiry. */
    ttlSeconds: z.number().int().min(60).max(366 * 86_400).optional(),
  })
  .strict();

export type CreateAdminTokenInput = z.input<typeof createAdminTokenSchema>;

export interface AdminTokens {
  /**
   * Mints a token. The token itself is returned once and never stored.
   * @throws WritError ERR_VALIDATION
   */
  create(input: CreateAdminTokenInput, createdBy: string): Promise<{ token: string; record: AdminTokenRecord }>;
  /** The principal for a bearer admin token, or why there is none. */
  authenticate(bearer: string): Promise<AdminPrincipal | { refused: AdminTokenRefusal }>;
  list(): Promise<AdminTokenRecord[]>;
  /** @throws WritError ERR_NOT_FOUND when absent or already revoked. */
  revoke(id: string): Promise<AdminTokenRecord>;
  /**
   * Mints the all-scopes bootstrap token if this store never had one. Returns
   * it only to the one caller (in any process or node) that minted it.
   */
  bootstrap(ttlSeconds: number): Promise<{ token: string; record: AdminTokenRecord } | undefined>;
}

/** True when `bearer` has the shape of an admin token (never a JWT). */
export function looksLikeAdminToken(bearer: string): boolean {
  return bearer.startsWith(TOKEN_PREFIX);
}

/** A human identity's admin principal, or undefined when it holds no admin scopes. */
export function identityPrincipal(identity: Identity): AdminPrincipal | undefined {
  if (identity.actorType !== 'human' || identity.state !== 'active' || identity.adminScopes.length === 0) return undefined;
  return { kind: 'identity', id: identity.id, scopes: identity.adminScopes };
}

/** @throws WritError ERR_FORBIDDEN when `principal` lacks `scope`. */
export function requireScope(principal: AdminPrincipal, scope: AdminScope): void {
  if (!principal.scopes.includes(scope)) throw new WritError('ERR_FORBIDDEN', { detail: `needs the ${scope} admin scope` });
}

/**
 * An admin can hand out only what it holds: the scopes of a new admin token, or
 * the admin scopes of a human it registers, must be among its own. A local
 * operator (undefined: the CLI against the store) holds every scope.
 * @throws WritError ERR_FORBIDDEN
 */
export function requireGrantable(grantor: AdminPrincipal | undefined, scopes: readonly AdminScope[]): void {
  if (grantor === undefined) return;
  const missing = scopes.filter((scope) => !grantor.scopes.includes(scope));
  if (missing.length > 0) throw new WritError('ERR_FORBIDDEN', { detail: `cannot hand out admin scopes it does not hold: ${missing.join(', ')}` });
}

export function createAdminTokens(options: { store: Store; clock: Clock }): AdminTokens {
  const { store, clock } = options;
  const hash = (token: string) => createHash('sha256').update(token).digest('hex');

  const mint = async (name: string, scopes: readonly AdminScope[], ttlSeconds: number | undefined, createdBy: string) => {
    const token = `${TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;
    const now = clock.now();
    const record: AdminTokenRecord = {
      id: newId('adm'),
      name,
      tokenHash: hash(token),
      scopes: [...scopes],
      createdBy,
      createdAt: now,
      expiresAt: ttlSeconds === undefined ? null : now + ttlSeconds * 1000,
      revokedAt: null,
      lastUsedAt: null,
    };
    await store.createAdminToken(record);
    return { token, record };
  };

  return {
    async create(input, createdBy) {
      const value = parseOrThrow(createAdminTokenSchema, input);
      return mint(value.name, value.scopes, value.ttlSeconds, createdBy);
    },
    async authenticate(bearer) {
      // The lookup is by hash: no comparison ever touches the secret itself.
      if (!TOKEN_RE.test(bearer)) return { refused: 'ERR_TOKEN_MALFORMED' };
      const record = await store.findAdminToken(hash(bearer));
      const now = clock.now();
      if (record === undefined) return { refused: 'ERR_UNAUTHENTICATED' };
      if (record.revokedAt !== null) return { refused: 'ERR_TOKEN_REVOKED' };
      if (record.expiresAt !== null && record.expiresAt <= now) return { refused: 'ERR_TOKEN_EXPIRED' };
      await store.touchAdminToken(record.id, now).catch(() => undefined);
      return { kind: 'token', id: record.id, scopes: record.scopes };
    },
    list: () => store.listAdminTokens(),
    async revoke(id) {
      const record = await store.revokeAdminToken(id, clock.now());
      if (record === undefined) throw new WritError('ERR_NOT_FOUND', { detail: 'no such active admin token' });
      return record;
    },
    async bootstrap(ttlSeconds) {
      if (!(await store.claimFact('bootstrap_admin_token', 'issued', clock.now()))) return undefined;
      return mint('bootstrap', ADMIN_SCOPES, ttlSeconds, 'bootstrap');
    },
  };
}
