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
  /**
   * The tasks this one was delegated from, root first; empty for a task asked
   * for directly. Its delegation depth is the length, its parent the last.
   */
  readonly lineage: readonly string[];
  /** The identity of each task in `lineage`, root first: who delegated, in order. */
  readonly delegators: readonly string[];
  /** The only identities this task may be delegated to (its token's `may_act`); null: any policy allows. */
  readonly mayAct: readonly string[] | null;
  /** How many times the task was renewed at a checkpoint. */
  readonly renewals: number;
  /** jti of the current task token, if one was issued. */
  readonly tokenId: string | null;
  readonly createdAt: number;
  readonly expiresAt: number;
  readonly endedAt: number | null;
  /** Why the task ended (`completed`, `failed: <note>`, `revoked: <reason>`, `expired`). */
  readonly endReason: string | null;
}

/**
 * The life of an approval request:
 *
 *   pending ──> approved ──> consumed      (the approved action ran, once)
 *      │            └──────> expired | cancelled
 *      └──> denied | expired | cancelled   (cancelled: its task ended first)
 */
export const APPROVAL_REQUEST_STATES = ['pending', 'approved', 'denied', 'consumed', 'expired', 'cancelled'] as const;
export type ApprovalRequestState = (typeof APPROVAL_REQUEST_STATES)[number];

/** One approver's answer to an approval request. */
export interface ApprovalVote {
  /** The approver's identity id (a human). */
  readonly approver: string;
  readonly decision: 'approve' | 'deny';
  readonly at: number;
  /** The approver is the requester or in its delegation chain, and a knob allowed it. */
  readonly selfApproval: boolean;
  readonly note: string | null;
}

/**
 * A human's yes asked for one exact action: bound to a task, the identity that
 * asked, the action, the resource and the digest of the call's canonical
 * arguments. Single use, short-lived.
 */
export interface ApprovalRequest {
  readonly id: string;
  readonly state: ApprovalRequestState;
  /** `grant`: a scope of a task request; `call`: one call under a grant. */
  readonly stage: 'grant' | 'call';
  readonly taskId: string;
  /** The requester. */
  readonly identityId: string;
  readonly action: string;
  readonly resource: string;
  /** `sha256:<hex>` of the call's canonical (RFC 8785) arguments; null for a grant. */
  readonly argsDigest: string | null;
  /**
   * The arguments as canonical JSON, for approvers to read, kept only while
   * the request is pending or approved (erased when it ends); null when there
   * were none, or too many to keep (`argsDigest` still binds them).
   */
  readonly arguments: string | null;
  readonly environment: string;
  readonly intent: string;
  readonly purpose: string;
  /** The requester's accountable owner. */
  readonly owner: string | null;
  readonly tier: Tier;
  /** The risk score of the decision that asked for it (`riskRecord`). */
  readonly risk: Readonly<Record<string, unknown>>;
  /** The policies that required the approval. */
  readonly policies: readonly string[];
  readonly policyVersion: string;
  /** How many distinct approvers must approve (N of M). */
  readonly requiredApprovals: number;
  /** The audit record of the decision that asked for it. */
  readonly requestRecord: string;
  readonly createdAt: number;
  readonly expiresAt: number;
  /** When it became approved, denied, expired or cancelled. */
  readonly decidedAt: number | null;
  readonly consumedAt: number | null;
  readonly votes: readonly ApprovalVote[];
}

/**
 * An emergency grant: a human broke the glass for a task (its own, or an
 * agent's it owns), with a reason and an incident, time-boxed, decided by the
 * separate break-glass policy set, loud, and reviewed afterwards.
 */
export interface BreakGlass {
  readonly id: string;
  readonly taskId: string;
  /** Who the grant is for: the human itself, or an agent it owns. */
  readonly identityId: string;
  /** The human who broke the glass. */
  readonly requestedBy: string;
  readonly reason: string;
  /** The incident reference, e.g. INC-4521. */
  readonly incident: string;
  readonly environment: string;
  /** The scopes granted under it. */
  readonly scopes: readonly Scope[];
  readonly createdAt: number;
  readonly expiresAt: number;
  /** When its task ended (expired, completed, revoked); null while it runs. */
  readonly endedAt: number | null;
  /** The task's end state. */
  readonly endState: string | null;
  readonly reviewedAt: number | null;
  readonly reviewedBy: string | null;
  readonly reviewNote: string | null;
  /**
   * What was used under it, sorted, each once: `secret:<name>` for a credential
   * Writ injected on its behalf (to rotate), `<action> <resource>` for an
   * allowed action.
   */
  readonly used: readonly string[];
}
