/**
 * The vocabulary of DESIGN.md as types. These words mean the same thing in
 * code, API, CLI, docs and audit records.
 */

/** How dangerous an action is, least to most. Order matters: compare with `tierRank`. */
export const TIERS = ['read', 'write', 'delete', 'export', 'admin'] as const;
export type Tier = (typeof TIERS)[number];

export function tierRank(tier: Tier): number {
  return TIERS.indexOf(tier);
}

export function isTier(value: string): value is Tier {
  return (TIERS as readonly string[]).includes(value);
}

export const ACTOR_TYPES = ['agent', 'service', 'human'] as const;
export type ActorType = (typeof ACTOR_TYPES)[number];

export const SENSITIVITIES = ['public', 'internal', 'confidential', 'restricted'] as const;
export type Sensitivity = (typeof SENSITIVITIES)[number];

export function sensitivityRank(value: Sensitivity): number {
  return SENSITIVITIES.indexOf(value);
}

/**
 * `quarantined`: authenticated by a trust source but never registered; gets
 * nothing until an owner claims it. `decommissioned` is final.
 */
export const IDENTITY_STATES = ['active', 'quarantined', 'suspended', 'decommissioned'] as const;
export type IdentityState = (typeof IDENTITY_STATES)[number];

/** What an operator credential may do on the admin API. */
export const ADMIN_SCOPES = ['identities:read', 'identities:write', 'policy:write', 'admin:tokens'] as const;
export type AdminScope = (typeof ADMIN_SCOPES)[number];

/** A verified workload identity: the only standing thing. */
export interface Identity {
  /** SPIFFE ID (`spiffe://td/path`) or `iss#sub` for OIDC identities. */
  readonly id: string;
  readonly actorType: ActorType;
  /** Accountable human or team; required for agents and services; null only while quarantined. */
  readonly owner: string | null;
  readonly environment: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly state: IdentityState;
  /** The trust source it was first seen through (`cli`/`api` when registered by hand). */
  readonly source: string;
  /** Admin API operations this identity may perform (humans only). */
  readonly adminScopes: readonly AdminScope[];
  readonly createdAt: number;
  /** When state, owner or attributes last changed (epoch ms). */
  readonly updatedAt: number;
  readonly lastSeenAt: number | null;
  /** Epoch ms after which the identity gets nothing; null = no expiry. */
  readonly expiresAt: number | null;
}

/** One (action, resource) pair. `resource` may end in `*` (a prefix pattern). */
export interface Scope {
  readonly action: string;
  readonly resource: string;
}

export const TASK_STATES = [
  'pending_approval',
  'active',
  'completed',
  'failed',
  'revoked',
  'expired',
  'denied',
] as const;
export type TaskState = (typeof TASK_STATES)[number];

/** A scope that policy refused, and which policies decided that. */
export interface RefusedScope extends Scope {
  readonly outcome: 'deny' | 'approval_required';
  readonly policies: readonly string[];
  readonly reason: string;
}

/** A bounded unit of work an identity asked access for, and the grant on it. */
export interface Task {
  readonly id: string;
  readonly identityId: string;
  readonly purpose: string;
  readonly intent: string;
  readonly environment: string;
  readonly requestedScopes: readonly Scope[];
  /** The grant: scopes allowed (empty unless active or once active). */
  readonly grantedScopes: readonly Scope[];
  readonly refusedScopes: readonly RefusedScope[];
  readonly state: TaskState;
  readonly policyVersion: string;
  readonly parentTaskId: string | null;
  /** jti of the current task token, if one was issued. */
  readonly tokenId: string | null;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly endedAt: number | null;
  /** Why the task ended (`completed`, `failed: <note>`, `revoked: <reason>`, `expired`). */
  readonly endReason: string | null;
}
