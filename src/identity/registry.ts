/**
 * The identity registry: who may ask for access at all. Every agent and
 * service has an accountable owner. Identities are read on every task request
 * and on every sensitive action check, so reads are cached briefly; changes
 * made through this registry update the cache at once.
 */
import { z } from 'zod';
import type { Clock } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import { ACTOR_TYPES, type Identity, type IdentityState } from '../core/types.js';
import type { Store } from '../store/store.js';
import { isSpiffeId } from './spiffe-id.js';

const printable = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(/^[^\p{Cc}\p{Cf}]+$/u, 'no control or format characters');

export const registerIdentitySchema = z
  .object({
    id: z.string().refine(isSpiffeId, 'a SPIFFE ID: spiffe://trust-domain/path'),
    actorType: z.enum(ACTOR_TYPES),
    owner: printable(256).optional(),
    environment: z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, 'lowercase letters, digits and dashes').default('development'),
    labels: z
      .record(z.string().regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'label keys are lowercase'), printable(256))
      .refine((labels) => Object.keys(labels).length <= 32, 'at most 32 labels')
      .default({}),
    /** Epoch ms; null or absent = no expiry. */
    expiresAt: z.number().int().positive().nullable().default(null),
  })
  .strict()
  .refine((input) => input.actorType === 'human' || input.owner !== undefined, {
    message: 'agents and services need an accountable owner',
    path: ['owner'],
  });

export type RegisterIdentityInput = z.input<typeof registerIdentitySchema>;

export interface Registry {
  /**
   * Registers an identity.
   * @throws WritError ERR_VALIDATION (bad input, missing owner), ERR_IDENTITY_EXISTS.
   */
  register(input: RegisterIdentityInput): Promise<Identity>;
  get(id: string): Promise<Identity | undefined>;
  /** The cached identity if read within the cache window, without I/O. */
  getCached(id: string): Identity | undefined;
  list(): Promise<Identity[]>;
  setState(id: string, state: IdentityState): Promise<Identity>;
  touch(id: string): Promise<void>;
}

export function createRegistry(options: { store: Store; clock: Clock; cacheMs?: number }): Registry {
  const { store, clock } = options;
  const cacheMs = options.cacheMs ?? 5000;
  const cache = new Map<string, { identity: Identity; readAt: number }>();

  const remember = (identity: Identity): Identity => {
    cache.set(identity.id, { identity, readAt: clock.now() });
    return identity;
  };

  return {
    async register(input) {
      const parsed = registerIdentitySchema.safeParse(input);
      if (!parsed.success) {
        const issues = parsed.error.issues.map((i) => ({ field: i.path.join('.'), message: i.message }));
        throw new WritError('ERR_VALIDATION', { detail: issues.map((i) => `${i.field}: ${i.message}`).join('; '), extensions: { errors: issues } });
      }
      const value = parsed.data;
      const now = clock.now();
      const created = await store.createIdentity({
        id: value.id,
        actorType: value.actorType,
        owner: value.owner ?? value.id,
        environment: value.environment,
        labels: value.labels,
        createdAt: now,
        expiresAt: value.expiresAt,
      });
      if (!created) throw new WritError('ERR_IDENTITY_EXISTS', { detail: `${value.id} is already registered` });
      const identity = await store.getIdentity(value.id);
      if (identity === undefined) throw new Error('identity vanished after insert');
      return remember(identity);
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
    async setState(id, state) {
      const identity = await store.setIdentityState(id, state);
      if (identity === undefined) throw new WritError('ERR_IDENTITY_NOT_FOUND');
      return remember(identity);
    },
    touch: (id) => store.touchIdentity(id, clock.now()),
  };
}

/** Why an identity may not act right now, or undefined when it may. */
export function identityInactiveReason(identity: Identity, now: number): string | undefined {
  if (identity.state !== 'active') return `identity is ${identity.state}`;
  if (identity.expiresAt !== null && identity.expiresAt <= now) return 'identity has expired';
  return undefined;
}
