/**
 * The credential provider contract: what every kind of lease (a PostgreSQL
 * role today) offers the lease manager. A provider mints a downstream
 * credential for a task's scopes, moves its expiry when the task is renewed,
 * destroys it (idempotently), and tells whether it still exists downstream. It keeps no state of its own: what
 * revoking needs is in the lease's `details`, written to the store before the
 * credential exists.
 */
import type { Scope, Tier } from '../core/types.js';

/** The tier of an action as the deciding policy declares it; undefined when it declares none. */
export type TierOf = (action: string) => Tier | undefined;

/** What a provider will mint for a task: safe to store and to audit, never a secret. */
export interface LeasePlan {
  /** The store's `details`: what revoking needs, and what the audit record tells. */
  readonly details: Readonly<Record<string, unknown>>;
}

/**
 * A credential handed to the task once, in the response that minted it.
 * Security: it carries the password; it is never stored, logged or audited.
 */
export type LeaseCredential = Readonly<Record<string, unknown>> & { readonly expiresAt: string };

export interface LeaseProvider {
  /** The configured name a task asks for. */
  readonly name: string;
  /** `postgres`. */
  readonly kind: string;
  /**
   * Decides, without I/O, what a lease for `scopes` would hold; undefined
   * when none of them maps to anything this provider grants.
   */
  plan(scopes: readonly Scope[], tierOf: TierOf): LeasePlan | undefined;
  /**
   * Mints the credential `details` describes, valid until `expiresAt` (epoch
   * ms), all or nothing.
   * @throws when the downstream system refuses or cannot be reached (nothing is left behind).
   */
  issue(details: LeasePlan['details'], expiresAt: number): Promise<LeaseCredential>;
  /**
   * Destroys the credential and cuts every session opened with it.
   * Idempotent: a credential that is already gone is revoked. Racing calls are safe.
   * @throws when the downstream system cannot be reached; call again.
   */
  revoke(details: LeasePlan['details']): Promise<void>;
  /**
   * Whether `scopes` still map to everything `details` grants (a renewal that
   * kept less, or a configuration that maps less now, does not). Pure.
   */
  holds(details: LeasePlan['details'], scopes: readonly Scope[], tierOf: TierOf): boolean;
  /**
   * Moves the credential's own expiry to `expiresAt` (the task was renewed).
   * `absent` when it no longer exists downstream or is being revoked: nothing
   * is extended then. Idempotent; racing a revoke, the revoke wins.
   * @throws when the downstream system cannot be reached; call again.
   */
  extend(details: LeasePlan['details'], expiresAt: number): Promise<'extended' | 'absent'>;
  /** Whether the credential exists downstream right now. */
  state(details: LeasePlan['details']): Promise<'present' | 'absent'>;
  /**
   * What in the downstream system's own configuration weakens the leases it
   * mints, each as a sentence for the operator (empty when nothing does).
   * @throws when the downstream system cannot be reached
   */
  configurationWarnings(): Promise<string[]>;
  /** Releases connections. */
  close(): Promise<void>;
}
