/**
 * The store contract. Every operation that must not race is one call here, and
 * the implementation makes it atomic: callers never read-then-write.
 *
 * One conformance suite (test/store-conformance.test.ts) runs against every
 * implementation; SQLite (default) and PostgreSQL (clusters) both pass it.
 */
import type { AdminScope, ApprovalRequest, BreakGlass, ApprovalRequestState, ApprovalVote, Identity, IdentityState, RefusedScope, Scope, Task, TaskState } from '../core/types.js';

/** What a new identity needs. */
export interface NewIdentity {
  readonly id: string;
  readonly actorType: Identity['actorType'];
  /** null only for a quarantined identity. */
  readonly owner: string | null;
  readonly environment: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly state: Extract<IdentityState, 'active' | 'quarantined'>;
  readonly source: string;
  readonly adminScopes: readonly AdminScope[];
  readonly createdAt: number;
  readonly expiresAt: number | null;
}

/** Fields an identity update may change besides the state. */
export interface IdentityChange {
  readonly at: number;
  readonly owner?: string;
  readonly actorType?: Identity['actorType'];
  readonly environment?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly adminScopes?: readonly AdminScope[];
  readonly expiresAt?: number | null;
}

/** An operator credential as stored: never the token, only its SHA-256. */
export interface AdminTokenRecord {
  readonly id: string;
  readonly name: string;
  readonly tokenHash: string;
  readonly scopes: readonly AdminScope[];
  /** Who created it: an admin token id, a human identity, `bootstrap` or `cli`. */
  readonly createdBy: string;
  readonly createdAt: number;
  readonly expiresAt: number | null;
  readonly revokedAt: number | null;
  readonly lastUsedAt: number | null;
}

/** A task as first written. */
export type NewTask = Omit<Task, 'endedAt' | 'endReason'>;

/** Fields a transition may set besides the state. */
export interface TaskTransition {
  readonly at: number;
  /** Set for terminal states. */
  readonly endReason?: string;
  readonly tokenId?: string;
}

/** The grant a pending task becomes active with (see `Store.activateTask`). */
export interface TaskActivation {
  readonly grantedScopes: readonly Scope[];
  readonly refusedScopes: readonly RefusedScope[];
  readonly policyVersion: string;
  readonly tokenId: string;
}

/** Which active tasks to list for re-decision (see `Store.listActiveTasks`). */
export interface ActiveTaskQuery {
  /** Only tasks decided by a policy version other than this one. */
  readonly policyVersionNot?: string;
  /** Only tasks decided by one of these policy versions (none listed: no task). */
  readonly policyVersionIn?: readonly string[];
  /** Only tasks whose id sorts after this one: the last id of the previous page. */
  readonly afterId?: string;
  readonly limit: number;
}

/** A grant decided again under a new policy version (see `Store.updateGrant`). */
export interface GrantChange {
  /** A subset of the scopes the grant held: a grant is narrowed, never widened. */
  readonly grantedScopes: readonly Scope[];
  readonly refusedScopes: readonly RefusedScope[];
  readonly policyVersion: string;
  /** Set when scopes were dropped: the moment of the narrowing, listed for other nodes. */
  readonly narrowedAt?: number;
}

/** A renewal: the task's new token and grant (see `Store.renewTask`). */
export interface TaskRenewal {
  /** The token being replaced, and its expiry: the renewal happens only while they are still the task's. */
  readonly previousTokenId: string;
  readonly previousExpiresAt: number;
  readonly tokenId: string;
  readonly expiresAt: number;
  /** What the renewal decided: the scopes the task keeps (a subset of what it held). */
  readonly grantedScopes: readonly Scope[];
  readonly policyVersion: string;
  readonly at: number;
  /** It keeps less than it held: listed as a narrowing (at `at`) for other nodes, so its delegates are held to it. */
  readonly narrowed?: boolean;
}

/** A task token replaced by a renewal before it expired: refused from then on. */
export interface SupersededToken {
  readonly jti: string;
  readonly taskId: string;
  /** When the token would have expired on its own. */
  readonly expiresAt: number;
}

/** A task whose grant was narrowed after its token was minted. */
export interface NarrowedTask {
  readonly id: string;
  /** The scopes the task keeps; the token's other scopes must be refused. */
  readonly grantedScopes: readonly Scope[];
  readonly expiresAt: number;
}

/**
 * The life of a lease (see leases/manager.ts):
 *
 *   issuing ──> active ──> revoking ──> revoked
 *      │                      ^
 *      └──────────────────────┘   (a task that ends, or an issue that fails, mid-issue)
 *
 * `issuing` is written before the credential exists downstream, so a crash
 * anywhere leaves a row the sweep can find and revoke.
 */
export const LEASE_STATES = ['issuing', 'active', 'revoking', 'revoked'] as const;
export type LeaseState = (typeof LEASE_STATES)[number];

/** A lease as stored. `details` is what revoking needs and what the audit may tell: never a secret. */
export interface Lease {
  readonly id: string;
  readonly taskId: string;
  /** The configured provider's name (`leases.postgres[].name`). */
  readonly provider: string;
  readonly state: LeaseState;
  readonly details: Readonly<Record<string, unknown>>;
  readonly createdAt: number;
  /** When the credential stops working downstream by itself (a role's VALID UNTIL). */
  readonly expiresAt: number;
  readonly revokedAt: number | null;
  /** Why the last attempt to revoke (or issue) failed; the sweep tries again. */
  readonly lastError: string | null;
}

export type NewLease = Omit<Lease, 'state' | 'revokedAt' | 'lastError'>;

/** Fields a lease transition may set besides the state. */
export interface LeaseTransition {
  readonly at: number;
  /** null clears it. */
  readonly lastError?: string | null;
}

/** A secret as stored: sealed under the master key (see secrets/vault.ts); the store never sees plaintext. */
export interface SealedSecret {
  readonly name: string;
  readonly sealed: string;
  readonly createdAt: number;
  readonly updatedAt: number;
}

/** An approval request as first written: pending, with no votes. */
export type NewApprovalRequest = Omit<ApprovalRequest, 'state' | 'decidedAt' | 'consumedAt' | 'votes'>;

/** What an approval is bound to: the exact action it lets through once. */
export interface ApprovalBinding {
  readonly stage: ApprovalRequest['stage'];
  readonly taskId: string;
  readonly identityId: string;
  readonly action: string;
  readonly resource: string;
  /** null for a grant-stage approval (no arguments). */
  readonly argsDigest: string | null;
}

/** Which approval requests to list. */
export interface ApprovalQuery {
  /** Only these states (none given: every state). */
  readonly states?: readonly ApprovalRequestState[];
  readonly taskId?: string;
  /**
   * Only requests listed after this one: the last id of the previous page.
   * An id that is not stored gives an empty page.
   */
  readonly beforeId?: string;
  readonly limit: number;
}

/** The result of `castApprovalVote`. */
export type VoteResult =
  /** The vote counts; `approval` is the request after it (still pending, or now approved or denied). */
  | { readonly outcome: 'recorded'; readonly approval: ApprovalRequest }
  /** This approver already voted on it; nothing changed. */
  | { readonly outcome: 'duplicate'; readonly approval: ApprovalRequest }
  /** The request is no longer pending (or its time ran out); nothing changed. */
  | { readonly outcome: 'closed'; readonly approval: ApprovalRequest }
  | { readonly outcome: 'not_found' };

/** A webhook delivery waiting in the outbox (delivered by whichever node claims it). */
export interface OutboxMessage {
  readonly id: string;
  /** The configured webhook's name. */
  readonly target: string;
  /** What happened, e.g. `approval.requested`. */
  readonly event: string;
  /** The request body exactly as it will be sent (and signed). */
  readonly body: string;
  readonly createdAt: number;
  /** Delivery attempts started so far (a claim starts one). */
  readonly attempts: number;
  readonly nextAttemptAt: number;
  readonly state: 'pending' | 'delivered' | 'failed';
  readonly lastError: string | null;
  /** When it was delivered, or given up on. */
  readonly settledAt: number | null;
}

export type NewOutboxMessage = Pick<OutboxMessage, 'id' | 'target' | 'event' | 'body' | 'createdAt'>;

/** How a claimed delivery attempt ended. */
export type OutboxSettlement =
  | { readonly state: 'delivered'; readonly at: number }
  | { readonly state: 'pending'; readonly nextAttemptAt: number; readonly error: string }
  | { readonly state: 'failed'; readonly at: number; readonly error: string };

/** A break-glass grant as first written: running, unreviewed, nothing used yet. */
export type NewBreakGlass = Omit<BreakGlass, 'endedAt' | 'endState' | 'reviewedAt' | 'reviewedBy' | 'reviewNote' | 'used'>;

/** Which break-glass grants to list. */
export interface BreakGlassQuery {
  /**
   * true: only reviewed ones; false: only those still owed a review (not yet
   * reviewed, running ones included: they owe it once they end); absent: all.
   */
  readonly reviewed?: boolean;
  /**
   * Only grants listed after this one (newest first): the last id of the
   * previous page. An id that is not stored gives an empty page.
   */
  readonly beforeId?: string;
  readonly limit: number;
}

export type SigningKeyUse = 'task' | 'identity-dev';

export interface StoredSigningKey {
  readonly kid: string;
  readonly use: SigningKeyUse;
  readonly alg: string;
  /** Public JWK as JSON text. */
  readonly publicJwk: string;
  /** Private key sealed under the master key (see secrets/sealed-box.ts). */
  readonly privateSealed: string;
  readonly state: 'active' | 'retired';
  readonly createdAt: number;
}

/** The last record of the audit chain, or null for an empty chain. */
export interface ChainHead {
  readonly seq: number;
  readonly hash: string;
}

export interface AuditRow {
  readonly seq: number;
  readonly id: string;
  readonly at: number;
  readonly type: string;
  /** The record as canonical JSON (RFC 8785); the hash covers exactly these bytes. */
  readonly record: string;
  readonly prevHash: string;
  readonly hash: string;
}

/** Builds the next chain row from the current head. Pure; called inside the store's lock. */
export type ChainLinker = (head: ChainHead | null) => AuditRow;

export interface Store {
  readonly dialect: 'sqlite' | 'postgres';

  /** Creates an identity. Returns false, writing nothing, when the id is taken. */
  createIdentity(identity: NewIdentity): Promise<boolean>;
  getIdentity(id: string): Promise<Identity | undefined>;
  listIdentities(): Promise<Identity[]>;
  /**
   * Atomic compare-and-set: moves the identity to `to` (applying `change`) only
   * if its state is one of `from`, and marks the new state's audit record owed.
   * Returns the updated identity, or undefined when it is absent or in another state.
   */
  updateIdentity(id: string, from: readonly IdentityState[], to: IdentityState, change: IdentityChange): Promise<Identity | undefined>;
  /**
   * Records that the identity's state as of `updatedAt` is on the audit chain as
   * record `auditId`. A later change (another `updatedAt`) stays owed.
   */
  markIdentityAudited(id: string, auditId: string, updatedAt: number): Promise<void>;
  /** Up to `limit` identities changed at or before `changedBefore` whose current state is not yet audited. */
  listIdentitiesAwaitingAudit(changedBefore: number, limit: number): Promise<Identity[]>;
  /** How many identities first seen through `source` are still quarantined. */
  countQuarantined(source: string): Promise<number>;
  /** Ids of identities changed at or after `since` (any process or node). */
  listIdentitiesChangedSince(since: number): Promise<string[]>;
  /** Records that the identity authenticated at `at`. */
  touchIdentity(id: string, at: number): Promise<void>;

  createTask(task: NewTask): Promise<void>;
  getTask(id: string): Promise<Task | undefined>;
  /**
   * Atomic compare-and-set: moves the task to `to` only if its state is one of
   * `from`. Returns the updated task, or undefined when the task is absent or
   * was in another state (someone else moved it first).
   */
  transitionTask(id: string, from: readonly TaskState[], to: TaskState, change: TaskTransition): Promise<Task | undefined>;
  /**
   * Atomic compare-and-set: a `pending_approval` task becomes `active` with the
   * grant decided when its approvals were answered. Returns the updated task,
   * or undefined when it is absent or no longer pending (it expired, was
   * revoked, or another activation won).
   */
  activateTask(id: string, change: TaskActivation): Promise<Task | undefined>;
  /**
   * Atomically moves every non-terminal task whose `expiresAt <= now` to
   * `expired` and returns exactly the tasks this call moved. Two reapers never
   * both report the same task.
   */
  expireTasks(now: number): Promise<Task[]>;
  /** Tasks that ended but whose tokens would otherwise still be valid at `now`. */
  listEndedUnexpiredTasks(now: number): Promise<Task[]>;
  /**
   * Atomically ends every non-terminal task of `identityId` as `to` and returns
   * exactly the tasks this call moved.
   */
  endTasksOfIdentity(identityId: string, to: TaskState, change: TaskTransition): Promise<Task[]>;
  /**
   * Atomically revokes every non-terminal task whose identity's own expiry
   * has passed at `now` (`change.at`), and returns exactly the tasks this call
   * moved.
   */
  revokeTasksOfExpiredIdentities(now: number, change: TaskTransition): Promise<Task[]>;
  /** The granted scopes of the identity's `limit` most recent tasks that were granted anything, newest first. */
  listGrantedScopesOf(identityId: string, limit: number): Promise<Scope[][]>;
  /** Ids and expiries of tasks that ended at or after `since` (any node, any process). */
  listTasksEndedSince(since: number): Promise<{ id: string; expiresAt: number }[]>;
  /**
   * A page of tasks in state `active`, in id order, filtered by the policy
   * version that decided them: what a policy change must decide again.
   * Break-glass grants are never listed: the normal set does not decide them. Paging
   * by id is stable while the pages are being re-decided (a narrowed task stays,
   * a revoked one drops out, neither moves).
   */
  listActiveTasks(query: ActiveTaskQuery): Promise<Task[]>;
  /**
   * Atomic compare-and-set of a re-decided grant: only while the task is
   * `active` and still holds exactly the grant the caller decided on
   * (`expected`: its granted scopes and policy version, as read from this
   * store), sets the grant to `change`. Returns the updated task, or undefined
   * when the task ended or another re-decision changed its grant first (read it
   * again and decide again). Narrowing is the caller's duty: the store does not
   * check that `change.grantedScopes` is a subset.
   */
  updateGrant(id: string, expected: Pick<Task, 'grantedScopes' | 'policyVersion'>, change: GrantChange): Promise<Task | undefined>;
  /** Tasks whose grant was narrowed at or after `since` (any node, any process), as they now stand. */
  listTasksNarrowedSince(since: number): Promise<NarrowedTask[]>;
  /** Narrowed tasks whose tokens would otherwise still be valid at `now`. */
  listNarrowedUnexpiredTasks(now: number): Promise<NarrowedTask[]>;
  /**
   * Atomic, in one transaction: while the task is `active` and its token is
   * still `previousTokenId` expiring at `previousExpiresAt`, gives it the new
   * token, expiry and grant, counts the renewal, and lists the previous token
   * as superseded. Returns the renewed task, or undefined when the task ended
   * or another renewal won (one token is never renewed twice).
   */
  renewTask(id: string, change: TaskRenewal): Promise<Task | undefined>;
  /** Tokens superseded at or after `since` (any node, any process). */
  listTokensSupersededSince(since: number): Promise<SupersededToken[]>;
  /** Superseded tokens that would otherwise still be valid at `now`. */
  listSupersededUnexpiredTokens(now: number): Promise<SupersededToken[]>;
  /**
   * Atomically ends every non-terminal task delegated, directly or not, from
   * `taskId` (its `lineage` names it) and returns exactly the tasks this call moved.
   */
  endDescendants(taskId: string, to: TaskState, change: TaskTransition): Promise<Task[]>;
  /** The non-terminal tasks delegated, directly or not, from `taskId`. */
  listDescendants(taskId: string): Promise<Task[]>;
  /** Up to `limit` non-terminal tasks whose parent task has ended (a cascade that did not finish). */
  listOrphanedTasks(limit: number): Promise<Task[]>;
  /** Records that the task's end is on the audit chain as record `auditId`. */
  markTaskEndAudited(id: string, auditId: string): Promise<void>;
  /** Up to `limit` tasks that ended at or before `endedBefore` and whose end is not yet audited. */
  listTasksAwaitingEndAudit(endedBefore: number, limit: number): Promise<Task[]>;

  /**
   * Inserts `key` unless an active key for the same use exists, then returns the
   * active key for that use (the caller's or the one that won a race).
   */
  ensureActiveSigningKey(key: StoredSigningKey): Promise<StoredSigningKey>;
  /** Every key for `use`, active and retired (retired keys still verify). */
  listSigningKeys(use: SigningKeyUse): Promise<StoredSigningKey[]>;

  createAdminToken(token: AdminTokenRecord): Promise<void>;
  /** The token whose hash is `tokenHash`, revoked or not; undefined when none. */
  findAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined>;
  listAdminTokens(): Promise<AdminTokenRecord[]>;
  /** Revokes a token; returns it, or undefined when absent or already revoked. */
  revokeAdminToken(id: string, at: number): Promise<AdminTokenRecord | undefined>;
  touchAdminToken(id: string, at: number): Promise<void>;
  /** Creates or replaces the secret `name`; returns true when it was new. */
  putSecret(name: string, sealed: string, at: number): Promise<boolean>;
  getSecret(name: string): Promise<SealedSecret | undefined>;
  /** Names and times only, in name order. */
  listSecrets(): Promise<Omit<SealedSecret, 'sealed'>[]>;
  /** Returns true when it existed. */
  deleteSecret(name: string): Promise<boolean>;

  /**
   * Opens an approval request for `request`'s binding, atomically: if a pending,
   * unexpired request with exactly the same binding (stage, task, identity,
   * action, resource, argsDigest) exists, returns it (`created: false`) and
   * writes nothing; otherwise inserts `request`. Two concurrent opens of one
   * binding, in any process or node, yield one request. Pending requests of
   * the binding whose time ran out (`expiresAt <= now`) are moved to `expired`
   * first and returned in `expired`, for the caller to record.
   */
  openApproval(request: NewApprovalRequest, now: number): Promise<{ approval: ApprovalRequest; created: boolean; expired: ApprovalRequest[] }>;
  getApproval(id: string): Promise<ApprovalRequest | undefined>;
  /** Newest first (by `createdAt`, then id, both descending: ids are random). Votes included. */
  listApprovals(query: ApprovalQuery): Promise<ApprovalRequest[]>;
  /**
   * Casts one approver's vote, atomically against every other voter and
   * consumer: only while the request is `pending` and `now < expiresAt`, and
   * only once per approver (distinct approvers, whatever else races). A `deny`
   * vote moves the request to `denied`; the approve vote that brings the count
   * of distinct approvers to `requiredApprovals` moves it to `approved`. Either
   * move sets `decidedAt`; `denied` erases `arguments`.
   */
  castApprovalVote(id: string, vote: ApprovalVote, now: number): Promise<VoteResult>;
  /**
   * Consumes the one approval covering `binding`, atomically: an `approved`
   * request with exactly this binding and `now < expiresAt` moves to `consumed`
   * (`consumedAt = now`, `arguments` erased) and is returned. However many
   * callers race, exactly one gets it; the others get undefined.
   */
  consumeApproval(binding: ApprovalBinding, now: number): Promise<ApprovalRequest | undefined>;
  /**
   * Atomic compare-and-set: moves the request to `to` only if its state is one
   * of `from` (sets `decidedAt`, erases `arguments`). Returns it, or undefined
   * when absent or in another state.
   */
  closeApproval(id: string, from: readonly ApprovalRequestState[], to: Extract<ApprovalRequestState, 'expired' | 'cancelled'>, at: number): Promise<ApprovalRequest | undefined>;
  /**
   * Atomically moves every `pending` or `approved` request with
   * `expiresAt <= now` to `expired` and returns exactly the requests this call
   * moved. Two reapers never both report the same one.
   */
  expireApprovals(now: number): Promise<ApprovalRequest[]>;

  /** Queues webhook deliveries, all or none. */
  enqueueMessages(messages: readonly NewOutboxMessage[]): Promise<void>;
  /**
   * Claims up to `limit` pending messages due at `now` (`nextAttemptAt <= now`),
   * oldest first, atomically: each moves its `nextAttemptAt` to `now + leaseMs`
   * and counts one more attempt, so no other claimer (process or node) gets it
   * until the lease runs out. Returns them as claimed.
   */
  claimMessages(now: number, limit: number, leaseMs: number): Promise<OutboxMessage[]>;
  /**
   * Records how a claimed attempt ended. Only a `pending` message changes: one
   * already settled (by a claimer whose lease outlived another's) stays as it is.
   * A settled message (delivered or failed) keeps no body: what it said (an
   * approval's arguments) is not kept once it is sent or given up.
   */
  settleMessage(id: string, settlement: OutboxSettlement): Promise<void>;
  /** Deletes messages settled at or before `settledBefore`; returns how many. */
  deleteSettledMessages(settledBefore: number): Promise<number>;
  getMessage(id: string): Promise<OutboxMessage | undefined>;

  /** Writes a new grant; throws if its id is taken or its task already has one. */
  createBreakGlass(grant: NewBreakGlass): Promise<void>;
  getBreakGlass(id: string): Promise<BreakGlass | undefined>;
  /** The break-glass grant a task was made for, if it was one. */
  getBreakGlassOfTask(taskId: string): Promise<BreakGlass | undefined>;
  /** Newest first (createdAt, then id); `used` included. */
  listBreakGlass(query: BreakGlassQuery): Promise<BreakGlass[]>;
  /**
   * Adds what was used under the grant of task `taskId` (each item kept once,
   * however many callers race); nothing when the task is no break-glass grant.
   */
  recordBreakGlassUse(taskId: string, items: readonly string[]): Promise<void>;
  /**
   * Atomic: marks the grant of task `taskId` ended (`endedAt`, `endState`)
   * only if it has not ended; returns it then (with `used`), else undefined.
   * Of racing callers (every node hears a task end) exactly one gets it.
   */
  endBreakGlass(taskId: string, endState: string, at: number): Promise<BreakGlass | undefined>;
  /**
   * Atomic: closes the grant's review only if it has ended and is not yet
   * reviewed. Returns it then; undefined when absent, still running, or
   * already reviewed (read it to tell which).
   */
  reviewBreakGlass(id: string, review: { readonly by: string; readonly note: string; readonly at: number }): Promise<BreakGlass | undefined>;

  /** Writes a lease in state `issuing`; throws if its id is taken. */
  createLease(lease: NewLease): Promise<void>;
  getLease(id: string): Promise<Lease | undefined>;
  /** Every lease of the task, oldest first. */
  listLeasesOfTask(taskId: string): Promise<Lease[]>;
  /**
   * Atomic compare-and-set: moves the lease to `to` only if its state is one
   * of `from` (`revoked` sets `revokedAt`). Returns the updated lease, or
   * undefined when absent or in another state (someone else moved it first).
   */
  transitionLease(id: string, from: readonly LeaseState[], to: LeaseState, change: LeaseTransition): Promise<Lease | undefined>;
  /** Records why an attempt on the lease failed, leaving its state as it is. */
  noteLeaseError(id: string, error: string): Promise<void>;
  /**
   * Up to `limit` leases not yet `revoked` whose task is no longer active:
   * ended, expired, past its expiry at `now` (whether or not a reaper has
   * marked it), or absent. What the sweep must revoke.
   */
  listLeasesToRevoke(now: number, limit: number): Promise<Lease[]>;
  /**
   * Moves an `active` lease's expiry to `expiresAt`, only later, never
   * earlier. Returns the updated lease, or undefined when it is not active
   * (a revoker moved it first) or already expires at or after `expiresAt`.
   */
  extendLease(id: string, expiresAt: number): Promise<Lease | undefined>;
  /**
   * Up to `limit` `active` leases whose task is still active at `now` and
   * expires later than the lease: a renewal moved the task's expiry and the
   * lease has not followed (the renewal was heard nowhere, or the extension
   * failed). What the sweep must extend, or revoke if the renewal kept less.
   */
  listLeasesToExtend(now: number, limit: number): Promise<Lease[]>;
  /** Up to `limit` `active` leases of `active` tasks, in id order, with ids after `afterId` (a page of all of them). */
  listActiveLeases(afterId: string, limit: number): Promise<Lease[]>;

  /**
   * Records a one-time fact (`name` → `value`) unless it is already recorded.
   * Returns true only for the one caller, in any process or node, that recorded it.
   */
  claimFact(name: string, value: string, at: number): Promise<boolean>;

  /**
   * Appends records to the hash chain atomically: under a lock that serializes
   * every appender (across processes and nodes), reads the head, calls each
   * linker with the head the previous one produced, and inserts the rows in one
   * transaction. Either every row lands or none does.
   */
  appendChained(linkers: readonly ChainLinker[]): Promise<AuditRow[]>;
  /** Up to `limit` rows with `seq > afterSeq`, in seq order. */
  readAudit(afterSeq: number, limit: number): Promise<AuditRow[]>;
  auditHead(): Promise<ChainHead | null>;

  close(): Promise<void>;
}
