/**
 * The identity registry: who may ask for access at all. Every agent and
 * service has an accountable owner. Identities are read on every task request
 * and on every sensitive action check, so reads are cached briefly; changes
 * made through this registry update the cache at once.
 */
import { z } from 'zod';
import type { Clock } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import { ACTOR_TYPES, ADMIN_SCOPES, type Identity, type IdentityState } from '../core/types.js';
import type { IdentityChange } from '../store/store.js';
import type { Store } from '../store/store.js';
import { isSpiffeId } from './spiffe-id.js';

const printable = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[^\p{Cc}\p{Cf}\p{Cs}]+$/u, 'no control or format characters');

/**
 * An identity id: a SPIFFE ID, or `<issuer>#<subject>` for identities from an
 * OIDC source (the issuer an https URL, http only on loopback).
 */
export function isIdentityId(value: string): boolean {
  if (isSpiffeId(value)) return true;
  if (value.length > 2048 || /[\s\p{Cc}\p{Cf}\p{Cs}]/u.test(value)) return false;
  const hash = value.indexOf('#');
  if (hash <= 0 || hash === value.length - 1) return false;
  try {
    const issuer = new URL(value.slice(0, hash));
    return issuer.protocol === 'https:' || (issuer.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(issuer.hostname));
  } catch {
    return false;
  }
}

const environmentSchema = z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, 'lowercase letters, digits and dashes');
const labelsSchema = z
  .record(z.string().regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'label keys are lowercase'), printable(256))
  .refine((labels) => Object.keys(labels).length <= 32, 'at most 32 labels');

export const registerIdentitySchema = z
  .object({
    id: z.string().refine(isIdentityId, 'a SPIFFE ID (spiffe://trust-domain/path) or <oidc issuer>#<subject>'),
    actorType: z.enum(ACTOR_TYPES),
    owner: printable(256).optional(),
    environment: environmentSchema.default('development'),
    labels: labelsSchema.default({}),
    /** Epoch ms; null or absent = no expiry. */
    expiresAt: z.number().int().positive().nullable().default(null),
    /** Admin API operations (humans only). */
    adminScopes: z.array(z.enum(ADMIN_SCOPES)).max(ADMIN_SCOPES.length).default([]),
  })
  .strict()
  .refine((input) => input.actorType === 'human' || input.owner !== undefined, {
    message: 'agents and services need an accountable owner',
    path: ['owner'],
  })
  .refine((input) => input.actorType === 'human' || input.adminScopes.length === 0, {
    message: 'only humans hold admin scopes',
    path: ['adminScopes'],
  });

export type RegisterIdentityInput = z.input<typeof registerIdentitySchema>;

/** Claiming a quarantined identity: an accountable owner, and what it is. */
export const claimIdentitySchema = z
  .object({
    owner: printable(256),
    actorType: z.enum(ACTOR_TYPES).optional(),
    environment: environmentSchema.optional(),
    labels: labelsSchema.optional(),
    expiresAt: z.number().int().positive().nullable().optional(),
  })
  .strict();

export type ClaimIdentityInput = z.input<typeof claimIdentitySchema>;

/** What a trust source saw of an identity nobody registered. */
export interface QuarantineInput {
  readonly id: string;
  readonly actorType: Identity['actorType'];
  readonly environment: string | undefined;
  readonly labels: Readonly<Record<string, string>>;
  readonly source: string;
}

export interface Registry {
  /**
   * Registers an identity.
   * @throws WritError ERR_VALIDATION (bad input, missing owner), ERR_IDENTITY_EXISTS.
   */
  register(input: RegisterIdentityInput, source?: string): Promise<Identity>;
  /**
   * Records an authenticated, unregistered identity as quarantined. Returns the
   * identity as it now stands (someone may have registered it meanwhile).
   */
  quarantine(input: QuarantineInput): Promise<{ identity: Identity; created: boolean }>;
  get(id: string): Promise<Identity | undefined>;
  /** The cached identity if read within the cache window, without I/O. */
  getCached(id: string): Identity | undefined;
  list(): Promise<Identity[]>;
  /**
   * Moves an identity from one of `from` to `to`, atomically.
   * @throws WritError ERR_IDENTITY_NOT_FOUND, ERR_IDENTITY_STATE_CONFLICT
   */
  transition(id: string, from: readonly IdentityState[], to: IdentityState, change?: Omit<IdentityChange, 'at'>): Promise<Identity>;
  /** Forgets cached identities that another process or node changed; returns how many. */
  sync(): Promise<number>;
  touch(id: string): Promise<void>;
}

export function createRegistry(options: { store: Store; clock: Clock; cacheMs?: number }): Registry {
  const { store, clock } = options;
  const cacheMs = options.cacheMs ?? 5000;
  const cache = new Map<string, { identity: Identity; readAt: number }>();
  let syncedAt = clock.now();

  const remember = (identity: Identity): Identity => {
    cache.set(identity.id, { identity, readAt: clock.now() });
    return identity;
  };

  return {
    async register(input, source = 'cli') {
      const value = parseOrThrow(registerIdentitySchema, input);
      const now = clock.now();
      const created = await store.createIdentity({
        id: value.id,
        actorType: value.actorType,
        owner: value.owner ?? value.id,
        environment: value.environment,
        labels: value.labels,
        state: 'active',
        source,
        adminScopes: value.adminScopes,
        createdAt: now,
        expiresAt: value.expiresAt,
      });
      if (!created) throw new WritError('ERR_IDENTITY_EXISTS', { detail: `${value.id} is already registered` });
      const identity = await store.getIdentity(value.id);
      if (identity === undefined) throw new Error('identity vanished after insert');
      return remember(identity);
    },
    async quarantine(input) {
      const created = await store.createIdentity({
        id: input.id,
        actorType: input.actorType,
        owner: null,
        environment: input.environment ?? 'development',
        labels: input.labels,
        state: 'quarantined',
        source: input.source,
        adminScopes: [],
        createdAt: clock.now(),
        expiresAt: null,
      });
      const identity = await store.getIdentity(input.id);
      if (identity === undefined) throw new Error('identity vanished after insert');
      return { identity: remember(identity), created };
    },
    async get(id) {
      const hit = cache.get(id);
      if (hit !== undefined && clock.now() - hit.readAt < cacheMs) return hit.identity;
      const identity = await store.getIdentity(id);
      if (identity === undefined) {
        cache.delete(id);
        return undefined;
      }
      return remember(identity);
    },
    getCached(id) {
      const hit = cache.get(id);
      return hit !== undefined && clock.now() - hit.readAt < cacheMs ? hit.identity : undefined;
    },
    list: () => store.listIdentities(),
    async transition(id, from, to, change = {}) {
      const identity = await store.updateIdentity(id, from, to, { ...change, at: clock.now() });
      if (identity !== undefined) return remember(identity);
      cache.delete(id);
      const current = await store.getIdentity(id);
      if (current === undefined) throw new WritError('ERR_IDENTITY_NOT_FOUND', { detail: `${id} is not registered` });
      throw new WritError('ERR_IDENTITY_STATE_CONFLICT', { detail: `identity is ${current.state}; it cannot become ${to}`, extensions: { state: current.state } });
    },
    async sync() {
      const now = clock.now();
      // Other nodes' clocks may lag ours: look back well past one sync interval.
      const changed = await store.listIdentitiesChangedSince(syncedAt - 60_000);
      syncedAt = now;
      let forgotten = 0;
      for (const id of changed) if (cache.delete(id)) forgotten++;
      return forgotten;
    },
    touch: (id) => store.touchIdentity(id, clock.now()),
  };
}

/** Parses input with a schema or throws ERR_VALIDATION listing each field. */
export function parseOrThrow<T extends z.ZodType>(schema: T, input: unknown): z.output<T> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => ({ field: i.path.map(String).join('.'), message: i.message }));
  throw new WritError('ERR_VALIDATION', { detail: issues.map((i) => `${i.field || '(body)'}: ${i.message}`).join('; '), extensions: { errors: issues } });
}

/** Why an identity may not act right now, or undefined when it may. */
export function identityInactiveReason(identity: Identity, now: number): string | undefined {
  if (identity.state === 'quarantined') return 'identity is quarantined until an owner claims it';
  if (identity.state !== 'active') return `identity is ${identity.state}`;
  if (identity.expiresAt !== null && identity.expiresAt <= now) return 'identity has expired';
  return undefined;
}

/**
 * Why a delegated grant may not be used right now because of who handed it
 * down: the first of `delegators` (root first) no longer registered or
 * active, or undefined when every one still is. A grant stands only while
 * everyone it came from could still act.
 */
export async function inactiveDelegator(registry: Pick<Registry, 'get' | 'getCached'>, delegators: readonly string[], now: number): Promise<string | undefined> {
  for (const id of delegators) {
    const identity = registry.getCached(id) ?? (await registry.get(id));
    const gone = identity === undefined ? 'identity is no longer registered' : identityInactiveReason(identity, now);
    if (gone !== undefined) return `delegator ${id}: ${gone}`;
  }
  return undefined;
}
