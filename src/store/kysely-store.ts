/**
 * The store over Kysely: one implementation for SQLite (better-sqlite3, WAL)
 * and PostgreSQL (pg). Where the two differ (how a transaction takes its
 * locks: BEGIN IMMEDIATE against row locks, advisory locks and SKIP LOCKED)
 * the difference is named and local.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { CompiledQuery, Kysely, Migrator, PostgresDialect, SqliteDialect, sql } from 'kysely';
import pg from 'pg';
import { canonicalize } from '../core/canonical-json.js';
import { TASK_STATES, type AdminScope, type ApprovalRequest, type ApprovalRequestState, type ApprovalVote, type BreakGlass, type Identity, type IdentityState, type RefusedScope, type Scope, type Task, type TaskState, type Tier } from '../core/types.js';
import { migrationProvider } from './migrations.js';
import type {
  ActiveTaskQuery,
  AdminTokenRecord,
  ApprovalBinding,
  ApprovalQuery,
  AuditRow,
  BreakGlassQuery,
  ChainHead,
  ChainLinker,
  GrantChange,
  IdentityChange,
  Lease,
  LeaseState,
  LeaseTransition,
  NewIdentity,
  NewLease,
  NarrowedTask,
  NewApprovalRequest,
  NewBreakGlass,
  NewOutboxMessage,
  NewTask,
  OutboxMessage,
  OutboxSettlement,
  SealedSecret,
  SigningKeyUse,
  Store,
  StoredSigningKey,
  SupersededToken,
  TaskActivation,
  TaskRenewal,
  TaskTransition,
  VoteResult,
} from './store.js';

interface IdentityTable {
  id: string;
  actor_type: string;
  owner: string;
  environment: string;
  labels: string;
  state: string;
  source: string;
  admin_scopes: string;
  state_audit_id: string | null;
  created_at: number;
  updated_at: number;
  last_seen_at: number | null;
  expires_at: number | null;
}

interface AdminTokenTable {
  id: string;
  name: string;
  token_hash: string;
  scopes: string;
  created_by: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

interface StoreFactTable {
  name: string;
  value: string;
  at: number;
}

interface TaskTable {
  id: string;
  identity_id: string;
  purpose: string;
  intent: string;
  environment: string;
  requested_scopes: string;
  granted_scopes: string;
  refused_scopes: string;
  state: string;
  policy_version: string;
  parent_task_id: string | null;
  token_id: string | null;
  created_at: number;
  expires_at: number;
  ended_at: number | null;
  end_reason: string | null;
  end_audit_id: string | null;
  narrowed_at: number | null;
  lineage: string;
  delegators: string;
  may_act: string | null;
  renewals: number;
  root_task_id: string | null;
}

interface SupersededTokenTable {
  jti: string;
  task_id: string;
  expires_at: number;
  superseded_at: number;
}

interface SigningKeyTable {
  kid: string;
  use: string;
  alg: string;
  public_jwk: string;
  private_sealed: string;
  state: string;
  created_at: number;
}

interface AuditTable {
  seq: number;
  id: string;
  at: number;
  type: string;
  record: string;
  prev_hash: string;
  hash: string;
}

interface SecretTable {
  name: string;
  sealed: string;
  created_at: number;
  updated_at: number;
}

interface ApprovalTable {
  id: string;
  state: string;
  stage: string;
  binding_key: string;
  task_id: string;
  identity_id: string;
  action: string;
  resource: string;
  args_digest: string | null;
  arguments: string | null;
  environment: string;
  intent: string;
  purpose: string;
  owner: string | null;
  tier: string;
  risk: string;
  policies: string;
  policy_version: string;
  required_approvals: number;
  request_record: string;
  created_at: number;
  expires_at: number;
  decided_at: number | null;
  consumed_at: number | null;
}

interface ApprovalVoteTable {
  approval_id: string;
  approver: string;
  decision: string;
  at: number;
  self_approval: number;
  note: string | null;
}

interface OutboxTable {
  id: string;
  target: string;
  event: string;
  body: string;
  created_at: number;
  attempts: number;
  next_attempt_at: number;
  state: string;
  last_error: string | null;
  settled_at: number | null;
}

interface BreakGlassTable {
  id: string;
  task_id: string;
  identity_id: string;
  requested_by: string;
  reason: string;
  incident: string;
  environment: string;
  scopes: string;
  created_at: number;
  expires_at: number;
  ended_at: number | null;
  end_state: string | null;
  reviewed_at: number | null;
  reviewed_by: string | null;
  review_note: string | null;
}

interface BreakGlassUseTable {
  break_glass_id: string;
  item: string;
}

interface LeaseTable {
  id: string;
  task_id: string;
  provider: string;
  state: string;
  details: string;
  created_at: number;
  expires_at: number;
  revoked_at: number | null;
  last_error: string | null;
}

interface Tables {
  identities: IdentityTable;
  tasks: TaskTable;
  signing_keys: SigningKeyTable;
  audit_records: AuditTable;
  admin_tokens: AdminTokenTable;
  store_facts: StoreFactTable;
  secrets: SecretTable;
  approvals: ApprovalTable;
  approval_votes: ApprovalVoteTable;
  outbox: OutboxTable;
  break_glass: BreakGlassTable;
  break_glass_uses: BreakGlassUseTable;
  superseded_tokens: SupersededTokenTable;
  leases: LeaseTable;
}

const NON_TERMINAL: readonly TaskState[] = ['active', 'pending_approval'];
const TERMINAL: TaskState[] = TASK_STATES.filter((state) => !NON_TERMINAL.includes(state));
// Arbitrary constant naming Writ's audit-append advisory lock in PostgreSQL ('writ' in ASCII).
const AUDIT_LOCK_KEY = 0x77726974;
const BEGIN_IMMEDIATE = CompiledQuery.raw('begin immediate');
const COMMIT = CompiledQuery.raw('commit');
const ROLLBACK = CompiledQuery.raw('rollback');

export interface SqliteStoreOptions {
  /** Path of the database file, or ':memory:'. */
  readonly filename: string;
  /** `normal` survives a crash of the process; `full` also survives power loss (a flush per commit). */
  readonly synchronous?: 'normal' | 'full';
}

export interface PostgresStoreOptions {
  /** Told of an error on a pooled connection, idle or in use (it is discarded; a query on it fails for its caller). */
  readonly onIdleError?: (error: Error) => void;
  readonly url: string;
  readonly maxConnections?: number;
}

/** Opens (creating if needed) a SQLite store and migrates it to the latest schema. */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<Store> {
  if (options.filename !== ':memory:') mkdirSync(dirname(options.filename), { recursive: true, mode: 0o700 });
  const database = new Database(options.filename);
  database.pragma('journal_mode = WAL');
  database.pragma(`synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
  database.pragma('busy_timeout = 5000');
  database.pragma('foreign_keys = ON');
  const db = new Kysely<Tables>({ dialect: new SqliteDialect({ database }) });
  return migrated(new KyselyStore(db, 'sqlite', database));
}

/** Opens a PostgreSQL store and migrates it to the latest schema. */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.maxConnections ?? 10,
    // int8 (bigint) columns hold epoch milliseconds and sequence numbers: safe as JS numbers.
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === 20 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
    },
  });
  // An idle connection the server drops (a restart, a failover, an administrator)
  // is an 'error' event on the pool; unheard, it would end the process. The pool
  // discards that client and the next query opens a new one.
  pool.on('error', (error) => options.onIdleError?.(error));
  // A connection killed while checked out (mid-transaction) errors on the
  // client itself: its query rejects for the caller, and this keeps the event
  // from ending the process. The pool drops the broken client on release.
  pool.on('connect', (client) => client.on('error', (error) => options.onIdleError?.(error)));
  const db = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });
  return migrated(new KyselyStore(db, 'postgres'));
}

async function migrated(store: KyselyStore): Promise<Store> {
  const migrator = new Migrator({ db: store.db, provider: migrationProvider });
  const { error } = await migrator.migrateToLatest();
  if (error !== undefined) {
    await store.close();
    throw error instanceof Error ? error : new Error(String(error));
  }
  return store;
}

class KyselyStore implements Store {
  private syncAppend: ((linkers: readonly ChainLinker[]) => AuditRow[]) | undefined;

  constructor(
    readonly db: Kysely<Tables>,
    readonly dialect: 'sqlite' | 'postgres',
    private readonly sqlite?: Database.Database,
  ) {
    this.auditHeadQuery = db.selectFrom('audit_records').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).compile();
  }

  async createIdentity(identity: NewIdentity): Promise<boolean> {
    const inserted = await this.db
      .insertInto('identities')
      .values({
        id: identity.id,
        actor_type: identity.actorType,
        owner: identity.owner ?? '',
        environment: identity.environment,
        labels: JSON.stringify(identity.labels),
        state: identity.state,
        source: identity.source,
        admin_scopes: JSON.stringify(identity.adminScopes),
        state_audit_id: null,
        created_at: identity.createdAt,
        updated_at: identity.createdAt,
        last_seen_at: null,
        expires_at: identity.expiresAt,
      })
      .onConflict((oc) => oc.doNothing())
      .returning('id')
      .executeTakeFirst();
    return inserted !== undefined;
  }

  async getIdentity(id: string): Promise<Identity | undefined> {
    const row = await this.db.selectFrom('identities').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toIdentity(row);
  }

  async listIdentities(): Promise<Identity[]> {
    const rows = await this.db.selectFrom('identities').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map(toIdentity);
  }

  async updateIdentity(id: string, from: readonly IdentityState[], to: IdentityState, change: IdentityChange): Promise<Identity | undefined> {
    if (from.length === 0) return undefined;
    const row = await this.db
      .updateTable('identities')
      .set({
        state: to,
        // Strictly increasing, so each change (and its owed record) is told apart from the last.
        updated_at: sql<number>`case when updated_at >= ${change.at} then updated_at + 1 else ${change.at} end`,
        state_audit_id: null,
        ...(change.owner === undefined ? {} : { owner: change.owner }),
        ...(change.actorType === undefined ? {} : { actor_type: change.actorType }),
        ...(change.environment === undefined ? {} : { environment: change.environment }),
        ...(change.labels === undefined ? {} : { labels: JSON.stringify(change.labels) }),
        ...(change.adminScopes === undefined ? {} : { admin_scopes: JSON.stringify(change.adminScopes) }),
        ...(change.expiresAt === undefined ? {} : { expires_at: change.expiresAt }),
      })
      .where('id', '=', id)
      .where('state', 'in', [...from])
      .returningAll()
      .executeTakeFirst();
    return row && toIdentity(row);
  }

  async countQuarantined(source: string): Promise<number> {
    const row = await this.db
      .selectFrom('identities')
      .select((eb) => eb.fn.countAll<number | string>().as('n'))
      .where('source', '=', source)
      .where('state', '=', 'quarantined')
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async markIdentityAudited(id: string, auditId: string, updatedAt: number): Promise<void> {
    await this.db.updateTable('identities').set({ state_audit_id: auditId }).where('id', '=', id).where('updated_at', '=', updatedAt).execute();
  }

  async listIdentitiesAwaitingAudit(changedBefore: number, limit: number): Promise<Identity[]> {
    const rows = await this.db
      .selectFrom('identities')
      .selectAll()
      .where('state_audit_id', 'is', null)
      .where('updated_at', '<=', changedBefore)
      .orderBy('updated_at')
      .limit(limit)
      .execute();
    return rows.map(toIdentity);
  }

  async listIdentitiesChangedSince(since: number): Promise<string[]> {
    const rows = await this.db.selectFrom('identities').select('id').where('updated_at', '>=', since).execute();
    return rows.map((r) => r.id);
  }

  async touchIdentity(id: string, at: number): Promise<void> {
    await this.db.updateTable('identities').set({ last_seen_at: at }).where('id', '=', id).execute();
  }

  async createTask(task: NewTask): Promise<void> {
    await this.db
      .insertInto('tasks')
      .values({
        id: task.id,
        identity_id: task.identityId,
        purpose: task.purpose,
        intent: task.intent,
        environment: task.environment,
        requested_scopes: JSON.stringify(task.requestedScopes),
        granted_scopes: JSON.stringify(task.grantedScopes.map(scopeRow)),
        refused_scopes: JSON.stringify(task.refusedScopes),
        state: task.state,
        policy_version: task.policyVersion,
        parent_task_id: task.parentTaskId,
        token_id: task.tokenId,
        created_at: task.createdAt,
        expires_at: task.expiresAt,
        ended_at: task.state === 'denied' ? task.createdAt : null,
        end_reason: task.state === 'denied' ? 'denied' : null,
        end_audit_id: null,
        narrowed_at: null,
        lineage: JSON.stringify(task.lineage),
        delegators: JSON.stringify(task.delegators),
        may_act: task.mayAct === null ? null : JSON.stringify(task.mayAct),
        renewals: task.renewals,
        root_task_id: task.lineage[0] ?? task.id,
      })
      .execute();
  }

  async getTask(id: string): Promise<Task | undefined> {
    const row = await this.db.selectFrom('tasks').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toTask(row);
  }

  async transitionTask(id: string, from: readonly TaskState[], to: TaskState, change: TaskTransition): Promise<Task | undefined> {
    if (from.length === 0) return undefined;
    const terminal = !NON_TERMINAL.includes(to);
    const row = await this.db
      .updateTable('tasks')
      .set({
        state: to,
        ...(terminal ? { ended_at: change.at, end_reason: change.endReason ?? to } : {}),
        ...(change.tokenId === undefined ? {} : { token_id: change.tokenId }),
      })
      .where('id', '=', id)
      .where('state', 'in', [...from])
      .returningAll()
      .executeTakeFirst();
    return row && toTask(row);
  }

  async activateTask(id: string, change: TaskActivation): Promise<Task | undefined> {
    const row = await this.db
      .updateTable('tasks')
      .set({
        state: 'active',
        granted_scopes: JSON.stringify(change.grantedScopes.map(scopeRow)),
        refused_scopes: JSON.stringify(change.refusedScopes),
        policy_version: change.policyVersion,
        token_id: change.tokenId,
      })
      .where('id', '=', id)
      .where('state', '=', 'pending_approval')
      .returningAll()
      .executeTakeFirst();
    return row && toTask(row);
  }

  async expireTasks(now: number): Promise<Task[]> {
    const rows = await this.db
      .updateTable('tasks')
      .set({ state: 'expired', ended_at: now, end_reason: 'expired' })
      .where('state', 'in', [...NON_TERMINAL])
      .where('expires_at', '<=', now)
      .returningAll()
      .execute();
    return rows.map(toTask);
  }

  async revokeTasksOfExpiredIdentities(now: number, change: TaskTransition): Promise<Task[]> {
    const rows = await this.db
      .updateTable('tasks')
      .set({ state: 'revoked', ended_at: change.at, end_reason: change.endReason ?? 'revoked' })
      .where('state', 'in', [...NON_TERMINAL])
      .where('identity_id', 'in', (eb) => eb.selectFrom('identities').select('id').where('expires_at', 'is not', null).where('expires_at', '<=', now))
      .returningAll()
      .execute();
    return rows.map(toTask);
  }

  async endTasksOfIdentity(identityId: string, to: TaskState, change: TaskTransition): Promise<Task[]> {
    const rows = await this.db
      .updateTable('tasks')
      .set({ state: to, ended_at: change.at, end_reason: change.endReason ?? to })
      .where('identity_id', '=', identityId)
      .where('state', 'in', [...NON_TERMINAL])
      .returningAll()
      .execute();
    return rows.map(toTask);
  }

  async listEndedUnexpiredTasks(now: number): Promise<Task[]> {
    // By state (a task has ended_at exactly when its state is terminal), so that tasks_state_expires
    // serves it with one range per state: `ended_at is not null` scanned every task that ever ended.
    const rows = await this.db
      .selectFrom('tasks')
      .selectAll()
      .where('state', 'in', TERMINAL)
      .where('expires_at', '>', now)
      .execute();
    return rows.map(toTask);
  }

  async listGrantedScopesOf(identityId: string, limit: number): Promise<Scope[][]> {
    const rows = await this.db
      .selectFrom('tasks')
      .select('granted_scopes')
      .where('identity_id', '=', identityId)
      .where('granted_scopes', '!=', '[]')
      .orderBy('created_at', 'desc')
      .limit(limit)
      .execute();
    return rows.map((r) => JSON.parse(r.granted_scopes) as Scope[]);
  }

  async listTasksEndedSince(since: number): Promise<{ id: string; expiresAt: number }[]> {
    const rows = await this.db.selectFrom('tasks').select(['id', 'expires_at']).where('ended_at', '>=', since).execute();
    return rows.map((r) => ({ id: r.id, expiresAt: r.expires_at }));
  }

  async listActiveTasks(query: ActiveTaskQuery): Promise<Task[]> {
    if (query.policyVersionIn !== undefined && query.policyVersionIn.length === 0) return [];
    let select = this.db
      .selectFrom('tasks')
      .selectAll()
      .where('state', '=', 'active')
      // A break-glass grant is decided by the break-glass set, never re-decided by the normal one.
      .where('id', 'not in', (sub) => sub.selectFrom('break_glass').select('task_id'));
    if (query.policyVersionNot !== undefined) select = select.where('policy_version', '!=', query.policyVersionNot);
    if (query.policyVersionIn !== undefined) select = select.where('policy_version', 'in', [...query.policyVersionIn]);
    if (query.afterId !== undefined) select = select.where('id', '>', query.afterId);
    const rows = await select.orderBy('id').limit(query.limit).execute();
    return rows.map(toTask);
  }

  async updateGrant(id: string, expected: Pick<Task, 'grantedScopes' | 'policyVersion'>, change: GrantChange): Promise<Task | undefined> {
    const row = await this.db
      .updateTable('tasks')
      .set({
        granted_scopes: JSON.stringify(change.grantedScopes.map(scopeRow)),
        refused_scopes: JSON.stringify(change.refusedScopes),
        policy_version: change.policyVersion,
        ...(change.narrowedAt === undefined ? {} : { narrowed_at: change.narrowedAt }),
      })
      .where('id', '=', id)
      .where('state', '=', 'active')
      // INVARIANT: the grant is the one the caller decided on; a grant another
      // re-decision changed meanwhile is never overwritten (which could widen it back).
      .where('granted_scopes', '=', JSON.stringify(expected.grantedScopes.map(scopeRow)))
      .where('policy_version', '=', expected.policyVersion)
      .returningAll()
      .executeTakeFirst();
    return row && toTask(row);
  }

  async renewTask(id: string, change: TaskRenewal): Promise<Task | undefined> {
    return this.atomically(async (trx) => {
      const row = await trx
        .updateTable('tasks')
        .set({
          token_id: change.tokenId,
          expires_at: change.expiresAt,
          granted_scopes: JSON.stringify(change.grantedScopes.map(scopeRow)),
          policy_version: change.policyVersion,
          renewals: sql<number>`renewals + 1`,
          ...(change.narrowed === true ? { narrowed_at: change.at } : {}),
        })
        .where('id', '=', id)
        .where('state', '=', 'active')
        // INVARIANT: one token is renewed once; a renewal that lost the race changes nothing.
        .where('token_id', '=', change.previousTokenId)
        .where('expires_at', '=', change.previousExpiresAt)
        .returningAll()
        .executeTakeFirst();
      if (row === undefined) return undefined;
      await trx
        .insertInto('superseded_tokens')
        .values({ jti: change.previousTokenId, task_id: id, expires_at: change.previousExpiresAt, superseded_at: change.at })
        .execute();
      return toTask(row);
    });
  }

  async listTokensSupersededSince(since: number): Promise<SupersededToken[]> {
    const rows = await this.db.selectFrom('superseded_tokens').selectAll().where('superseded_at', '>=', since).execute();
    return rows.map(toSupersededToken);
  }

  async listSupersededUnexpiredTokens(now: number): Promise<SupersededToken[]> {
    const rows = await this.db.selectFrom('superseded_tokens').selectAll().where('expires_at', '>', now).execute();
    return rows.map(toSupersededToken);
  }

  async listDescendants(taskId: string): Promise<Task[]> {
    const task = await this.getTask(taskId);
    if (task === undefined) return [];
    // One tree, read whole (a tree is small: its depth is bounded); the lineage names every ancestor.
    const tree = await this.db.selectFrom('tasks').selectAll().where('root_task_id', '=', task.lineage[0] ?? task.id).where('state', 'in', [...NON_TERMINAL]).execute();
    return tree.map(toTask).filter((t) => t.lineage.includes(taskId));
  }

  async endDescendants(taskId: string, to: TaskState, change: TaskTransition): Promise<Task[]> {
    const ids = (await this.listDescendants(taskId)).map((t) => t.id);
    if (ids.length === 0) return [];
    const rows = await this.db
      .updateTable('tasks')
      .set({ state: to, ended_at: change.at, end_reason: change.endReason ?? to })
      .where('id', 'in', ids)
      .where('state', 'in', [...NON_TERMINAL])
      .returningAll()
      .execute();
    return rows.map(toTask);
  }

  async listOrphanedTasks(limit: number): Promise<Task[]> {
    const rows = await this.db
      .selectFrom('tasks as child')
      .innerJoin('tasks as parent', 'parent.id', 'child.parent_task_id')
      .selectAll('child')
      .where('child.state', 'in', [...NON_TERMINAL])
      .where('parent.state', 'not in', [...NON_TERMINAL])
      .orderBy('child.id')
      .limit(limit)
      .execute();
    return rows.map(toTask);
  }

  async listTasksNarrowedSince(since: number): Promise<NarrowedTask[]> {
    const rows = await this.db
      .selectFrom('tasks')
      .select(['id', 'granted_scopes', 'expires_at'])
      .where('narrowed_at', 'is not', null)
      .where('narrowed_at', '>=', since)
      .execute();
    return rows.map(toNarrowedTask);
  }

  async listNarrowedUnexpiredTasks(now: number): Promise<NarrowedTask[]> {
    const rows = await this.db
      .selectFrom('tasks')
      .select(['id', 'granted_scopes', 'expires_at'])
      .where('narrowed_at', 'is not', null)
      .where('expires_at', '>', now)
      .execute();
    return rows.map(toNarrowedTask);
  }

  async markTaskEndAudited(id: string, auditId: string): Promise<void> {
    await this.db.updateTable('tasks').set({ end_audit_id: auditId }).where('id', '=', id).execute();
  }

  async listTasksAwaitingEndAudit(endedBefore: number, limit: number): Promise<Task[]> {
    const rows = await this.db
      .selectFrom('tasks')
      .selectAll()
      .where('end_audit_id', 'is', null)
      .where('ended_at', '<=', endedBefore)
      .orderBy('ended_at')
      .limit(limit)
      .execute();
    return rows.map(toTask);
  }

  async createAdminToken(token: AdminTokenRecord): Promise<void> {
    await this.db
      .insertInto('admin_tokens')
      .values({
        id: token.id,
        name: token.name,
        token_hash: token.tokenHash,
        scopes: JSON.stringify(token.scopes),
        created_by: token.createdBy,
        created_at: token.createdAt,
        expires_at: token.expiresAt,
        revoked_at: token.revokedAt,
        last_used_at: token.lastUsedAt,
      })
      .execute();
  }

  async findAdminToken(tokenHash: string): Promise<AdminTokenRecord | undefined> {
    const row = await this.db.selectFrom('admin_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    return row && toAdminToken(row);
  }

  async listAdminTokens(): Promise<AdminTokenRecord[]> {
    const rows = await this.db.selectFrom('admin_tokens').selectAll().orderBy('created_at').orderBy('id').execute();
    return rows.map(toAdminToken);
  }

  async revokeAdminToken(id: string, at: number): Promise<AdminTokenRecord | undefined> {
    const row = await this.db
      .updateTable('admin_tokens')
      .set({ revoked_at: at })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    return row && toAdminToken(row);
  }

  async touchAdminToken(id: string, at: number): Promise<void> {
    await this.db.updateTable('admin_tokens').set({ last_used_at: at }).where('id', '=', id).execute();
  }

  async putSecret(name: string, sealed: string, at: number): Promise<boolean> {
    const row = await this.db
      .insertInto('secrets')
      .values({ name, sealed, created_at: at, updated_at: at })
      .onConflict((oc) => oc.column('name').doUpdateSet({ sealed, updated_at: at }))
      .returning('created_at')
      .executeTakeFirstOrThrow();
    return Number(row.created_at) === at;
  }

  async getSecret(name: string): Promise<SealedSecret | undefined> {
    const row = await this.db.selectFrom('secrets').selectAll().where('name', '=', name).executeTakeFirst();
    return row && { name: row.name, sealed: row.sealed, createdAt: Number(row.created_at), updatedAt: Number(row.updated_at) };
  }

  async listSecrets(): Promise<Omit<SealedSecret, 'sealed'>[]> {
    const rows = await this.db.selectFrom('secrets').select(['name', 'created_at', 'updated_at']).orderBy('name').execute();
    return rows.map((row) => ({ name: row.name, createdAt: Number(row.created_at), updatedAt: Number(row.updated_at) }));
  }

  async deleteSecret(name: string): Promise<boolean> {
    const result = await this.db.deleteFrom('secrets').where('name', '=', name).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  async openApproval(request: NewApprovalRequest, now: number): Promise<{ approval: ApprovalRequest; created: boolean; expired: ApprovalRequest[] }> {
    const key = bindingKey(request);
    return this.atomically(async (trx) => {
      const expired: ApprovalRequest[] = [];
      // PostgreSQL: another node may move the pending request of this binding
      // between our statements (a vote approves it, a reaper expires it); each
      // pass sees what was committed before it, and the unique index makes the
      // insert wait for, then yield to, a racing insert. SQLite: one pass.
      for (let pass = 0; pass < 5; pass++) {
        const stale = await trx
          .updateTable('approvals')
          .set({ state: 'expired', decided_at: now, arguments: null })
          .where('binding_key', '=', key)
          .where('state', '=', 'pending')
          .where('expires_at', '<=', now)
          .returningAll()
          .execute();
        expired.push(...(await withVotes(trx, stale)));
        const inserted = await trx
          .insertInto('approvals')
          .values(approvalRow(request, key))
          .onConflict((oc) => oc.column('binding_key').where('state', '=', sql.lit('pending')).doNothing())
          .returningAll()
          .executeTakeFirst();
        if (inserted !== undefined) return { approval: toApproval(inserted, []), created: true, expired };
        const pending = await trx.selectFrom('approvals').selectAll().where('binding_key', '=', key).where('state', '=', 'pending').executeTakeFirst();
        if (pending !== undefined && pending.expires_at > now) {
          const [approval] = await withVotes(trx, [pending]);
          return { approval: approval!, created: false, expired };
        }
      }
      throw new Error(`approval binding ${key} kept changing under openApproval`);
    });
  }

  async getApproval(id: string): Promise<ApprovalRequest | undefined> {
    const row = await this.db.selectFrom('approvals').selectAll().where('id', '=', id).executeTakeFirst();
    return row && (await withVotes(this.db, [row]))[0];
  }

  async listApprovals(query: ApprovalQuery): Promise<ApprovalRequest[]> {
    if (query.states !== undefined && query.states.length === 0) return [];
    let select = this.db.selectFrom('approvals').selectAll();
    if (query.states !== undefined) select = select.where('state', 'in', [...query.states]);
    if (query.taskId !== undefined) select = select.where('task_id', '=', query.taskId);
    if (query.beforeId !== undefined) {
      const beforeId = query.beforeId;
      const cursor = await this.db.selectFrom('approvals').select('created_at').where('id', '=', beforeId).executeTakeFirst();
      if (cursor === undefined) return [];
      select = select.where((eb) =>
        eb.or([eb('created_at', '<', cursor.created_at), eb.and([eb('created_at', '=', cursor.created_at), eb('id', '<', beforeId)])]),
      );
    }
    const rows = await select.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(query.limit).execute();
    return withVotes(this.db, rows);
  }

  async castApprovalVote(id: string, vote: ApprovalVote, now: number): Promise<VoteResult> {
    return this.atomically(async (trx) => {
      // INVARIANT: the request's row is locked (PostgreSQL) or the database is
      // (SQLite) from this read to the commit, so votes on it count one at a time.
      const row = await trx
        .selectFrom('approvals')
        .selectAll()
        .where('id', '=', id)
        .$if(this.dialect === 'postgres', (q) => q.forUpdate())
        .executeTakeFirst();
      if (row === undefined) return { outcome: 'not_found' };
      if (row.state !== 'pending' || now >= row.expires_at) return { outcome: 'closed', approval: (await withVotes(trx, [row]))[0]! };
      const cast = await trx
        .insertInto('approval_votes')
        .values({ approval_id: id, approver: vote.approver, decision: vote.decision, at: vote.at, self_approval: vote.selfApproval ? 1 : 0, note: vote.note })
        .onConflict((oc) => oc.columns(['approval_id', 'approver']).doNothing())
        .returning('approver')
        .executeTakeFirst();
      if (cast === undefined) return { outcome: 'duplicate', approval: (await withVotes(trx, [row]))[0]! };
      let after = row;
      if (vote.decision === 'deny') {
        after = await trx.updateTable('approvals').set({ state: 'denied', decided_at: now, arguments: null }).where('id', '=', id).returningAll().executeTakeFirstOrThrow();
      } else {
        const { n } = await trx
          .selectFrom('approval_votes')
          .select((eb) => eb.fn.countAll<number | string>().as('n'))
          .where('approval_id', '=', id)
          .where('decision', '=', 'approve')
          .executeTakeFirstOrThrow();
        if (Number(n) >= row.required_approvals) {
          after = await trx.updateTable('approvals').set({ state: 'approved', decided_at: now }).where('id', '=', id).returningAll().executeTakeFirstOrThrow();
        }
      }
      return { outcome: 'recorded', approval: (await withVotes(trx, [after]))[0]! };
    });
  }

  async consumeApproval(binding: ApprovalBinding, now: number): Promise<ApprovalRequest | undefined> {
    const row = await this.db
      .updateTable('approvals')
      .set({ state: 'consumed', consumed_at: now, arguments: null })
      .where('id', '=', (eb) =>
        eb
          .selectFrom('approvals')
          .select('id')
          .where('binding_key', '=', bindingKey(binding))
          .where('state', '=', 'approved')
          .where('expires_at', '>', now)
          .orderBy('created_at')
          .limit(1)
          .$if(this.dialect === 'postgres', (q) => q.forUpdate().skipLocked()),
      )
      // INVARIANT: re-checked on the row itself, so of racing consumers only the first to write it wins.
      .where('state', '=', 'approved')
      .returningAll()
      .executeTakeFirst();
    return row && (await withVotes(this.db, [row]))[0];
  }

  async closeApproval(id: string, from: readonly ApprovalRequestState[], to: 'expired' | 'cancelled', at: number): Promise<ApprovalRequest | undefined> {
    if (from.length === 0) return undefined;
    const row = await this.db
      .updateTable('approvals')
      .set({ state: to, decided_at: at, arguments: null })
      .where('id', '=', id)
      .where('state', 'in', [...from])
      .returningAll()
      .executeTakeFirst();
    return row && (await withVotes(this.db, [row]))[0];
  }

  async expireApprovals(now: number): Promise<ApprovalRequest[]> {
    const rows = await this.db
      .updateTable('approvals')
      .set({ state: 'expired', decided_at: now, arguments: null })
      .where('state', 'in', ['pending', 'approved'])
      .where('expires_at', '<=', now)
      .returningAll()
      .execute();
    return withVotes(this.db, rows);
  }

  async enqueueMessages(messages: readonly NewOutboxMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const rows = messages.map((m) => ({
      id: m.id,
      target: m.target,
      event: m.event,
      body: m.body,
      created_at: m.createdAt,
      attempts: 0,
      next_attempt_at: m.createdAt,
      state: 'pending',
      last_error: null,
      settled_at: null,
    }));
    await this.atomically(async (trx) => {
      // SQLite caps bound parameters per statement; 10 per row keeps 500 rows well under it.
      for (let i = 0; i < rows.length; i += 500) await trx.insertInto('outbox').values(rows.slice(i, i + 500)).execute();
    });
  }

  async claimMessages(now: number, limit: number, leaseMs: number): Promise<OutboxMessage[]> {
    const due = this.db
      .selectFrom('outbox')
      .select('id')
      .where('state', '=', 'pending')
      .where('next_attempt_at', '<=', now)
      .orderBy('created_at')
      .orderBy('id')
      .limit(limit);
    const rows = await this.db
      .updateTable('outbox')
      .set((eb) => ({ next_attempt_at: now + leaseMs, attempts: eb('attempts', '+', 1) }))
      // PostgreSQL: `= any(array(…))` runs the locking subquery exactly once
      // (an `in (…)` may be rescanned), and SKIP LOCKED lets racing claimers
      // take disjoint rows instead of queueing on the same ones.
      .$if(this.dialect === 'postgres', (q) => q.where(sql<boolean>`id = any(array(${due.forUpdate().skipLocked()}))`))
      .$if(this.dialect === 'sqlite', (q) => q.where('id', 'in', due))
      // INVARIANT: re-checked on the row itself, so a row another claimer leased meanwhile is not claimed again.
      .where('state', '=', 'pending')
      .where('next_attempt_at', '<=', now)
      .returningAll()
      .execute();
    return rows.map(toOutboxMessage).sort((a, b) => a.createdAt - b.createdAt || compareText(a.id, b.id));
  }

  async settleMessage(id: string, settlement: OutboxSettlement): Promise<void> {
    const change =
      settlement.state === 'delivered'
        ? { state: 'delivered', settled_at: settlement.at, body: '' }
        : settlement.state === 'failed'
          ? { state: 'failed', settled_at: settlement.at, last_error: settlement.error, body: '' }
          : { next_attempt_at: settlement.nextAttemptAt, last_error: settlement.error };
    // A message already settled (by a claimer whose lease outlived ours) stays as it is.
    await this.db.updateTable('outbox').set(change).where('id', '=', id).where('state', '=', 'pending').execute();
  }

  async deleteSettledMessages(settledBefore: number): Promise<number> {
    const rows = await this.db.deleteFrom('outbox').where('state', '!=', 'pending').where('settled_at', '<=', settledBefore).returning('id').execute();
    return rows.length;
  }

  async getMessage(id: string): Promise<OutboxMessage | undefined> {
    const row = await this.db.selectFrom('outbox').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toOutboxMessage(row);
  }

  async createLease(lease: NewLease): Promise<void> {
    await this.db
      .insertInto('leases')
      .values({
        id: lease.id,
        task_id: lease.taskId,
        provider: lease.provider,
        state: 'issuing',
        details: JSON.stringify(lease.details),
        created_at: lease.createdAt,
        expires_at: lease.expiresAt,
        revoked_at: null,
        last_error: null,
      })
      .execute();
  }

  async getLease(id: string): Promise<Lease | undefined> {
    const row = await this.db.selectFrom('leases').selectAll().where('id', '=', id).executeTakeFirst();
    return row && toLease(row);
  }

  async listLeasesOfTask(taskId: string): Promise<Lease[]> {
    const rows = await this.db.selectFrom('leases').selectAll().where('task_id', '=', taskId).orderBy('created_at').orderBy('id').execute();
    return rows.map(toLease);
  }

  async transitionLease(id: string, from: readonly LeaseState[], to: LeaseState, change: LeaseTransition): Promise<Lease | undefined> {
    if (from.length === 0) return undefined;
    const row = await this.db
      .updateTable('leases')
      .set({
        state: to,
        ...(to === 'revoked' ? { revoked_at: change.at } : {}),
        ...(change.lastError === undefined ? {} : { last_error: change.lastError }),
      })
      .where('id', '=', id)
      // INVARIANT: the state is re-checked on the row itself, so of racing callers only one moves it.
      .where('state', 'in', [...from])
      .returningAll()
      .executeTakeFirst();
    return row && toLease(row);
  }

  async noteLeaseError(id: string, error: string): Promise<void> {
    await this.db.updateTable('leases').set({ last_error: error.slice(0, 1000) }).where('id', '=', id).execute();
  }

  async listLeasesToRevoke(now: number, limit: number): Promise<Lease[]> {
    const rows = await this.db
      .selectFrom('leases')
      .leftJoin('tasks', 'tasks.id', 'leases.task_id')
      .selectAll('leases')
      .where('leases.state', '!=', 'revoked')
      .where((eb) => eb.or([eb('tasks.id', 'is', null), eb('tasks.state', 'not in', [...NON_TERMINAL]), eb('tasks.expires_at', '<=', now)]))
      .orderBy('leases.created_at')
      .orderBy('leases.id')
      .limit(limit)
      .execute();
    return rows.map(toLease);
  }

  async extendLease(id: string, expiresAt: number): Promise<Lease | undefined> {
    const row = await this.db
      .updateTable('leases')
      .set({ expires_at: expiresAt })
      .where('id', '=', id)
      .where('state', '=', 'active')
      .where('expires_at', '<', expiresAt)
      .returningAll()
      .executeTakeFirst();
    return row && toLease(row);
  }

  /** Active leases of active tasks: the ones that follow their task's renewals and narrowings. */
  private activeLeasesOfActiveTasks() {
    return this.db.selectFrom('leases').innerJoin('tasks', 'tasks.id', 'leases.task_id').selectAll('leases').where('leases.state', '=', 'active').where('tasks.state', '=', 'active');
  }

  async listLeasesToExtend(now: number, limit: number): Promise<Lease[]> {
    const rows = await this.activeLeasesOfActiveTasks()
      .where('tasks.expires_at', '>', now)
      .whereRef('tasks.expires_at', '>', 'leases.expires_at')
      .orderBy('leases.created_at')
      .orderBy('leases.id')
      .limit(limit)
      .execute();
    return rows.map(toLease);
  }

  async listActiveLeases(afterId: string, limit: number): Promise<Lease[]> {
    const rows = await this.activeLeasesOfActiveTasks()
      .where('leases.id', '>', afterId)
      .orderBy('leases.id')
      .limit(limit)
      .execute();
    return rows.map(toLease);
  }

  async createBreakGlass(grant: NewBreakGlass): Promise<void> {
    await this.db
      .insertInto('break_glass')
      .values({
        id: grant.id,
        task_id: grant.taskId,
        identity_id: grant.identityId,
        requested_by: grant.requestedBy,
        reason: grant.reason,
        incident: grant.incident,
        environment: grant.environment,
        scopes: JSON.stringify(grant.scopes.map(scopeRow)),
        created_at: grant.createdAt,
        expires_at: grant.expiresAt,
        ended_at: null,
        end_state: null,
        reviewed_at: null,
        reviewed_by: null,
        review_note: null,
      })
      .execute();
  }

  async getBreakGlass(id: string): Promise<BreakGlass | undefined> {
    const row = await this.db.selectFrom('break_glass').selectAll().where('id', '=', id).executeTakeFirst();
    return row && (await withUses(this.db, [row]))[0];
  }

  async getBreakGlassOfTask(taskId: string): Promise<BreakGlass | undefined> {
    const row = await this.db.selectFrom('break_glass').selectAll().where('task_id', '=', taskId).executeTakeFirst();
    return row && (await withUses(this.db, [row]))[0];
  }

  async listBreakGlass(query: BreakGlassQuery): Promise<BreakGlass[]> {
    let select = this.db.selectFrom('break_glass').selectAll();
    if (query.reviewed !== undefined) select = select.where('reviewed_at', query.reviewed ? 'is not' : 'is', null);
    if (query.beforeId !== undefined) {
      const beforeId = query.beforeId;
      const cursor = await this.db.selectFrom('break_glass').select('created_at').where('id', '=', beforeId).executeTakeFirst();
      if (cursor === undefined) return [];
      select = select.where((eb) =>
        eb.or([eb('created_at', '<', cursor.created_at), eb.and([eb('created_at', '=', cursor.created_at), eb('id', '<', beforeId)])]),
      );
    }
    const rows = await select.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(query.limit).execute();
    return withUses(this.db, rows);
  }

  async recordBreakGlassUse(taskId: string, items: readonly string[]): Promise<void> {
    if (items.length === 0) return;
    // The grant's id and task never change once written, so reading it apart from the insert races with nothing.
    const grant = await this.db.selectFrom('break_glass').select('id').where('task_id', '=', taskId).executeTakeFirst();
    if (grant === undefined) return;
    // Sorted, so racing inserts of overlapping items take their keys in one
    // order (PostgreSQL: a conflicting insert waits on the other's, and two
    // taking the same keys in opposite orders would deadlock).
    const rows = [...new Set(items)].sort(compareText).map((item) => ({ break_glass_id: grant.id, item }));
    // INVARIANT: the primary key (break_glass_id, item) keeps each item once
    // however many recorders race; a conflicting insert waits for, then yields to, the first.
    // SQLite caps bound parameters per statement; 2 per row keeps 500 rows well under it.
    for (let i = 0; i < rows.length; i += 500) {
      await this.db
        .insertInto('break_glass_uses')
        .values(rows.slice(i, i + 500))
        .onConflict((oc) => oc.columns(['break_glass_id', 'item']).doNothing())
        .execute();
    }
  }

  async endBreakGlass(taskId: string, endState: string, at: number): Promise<BreakGlass | undefined> {
    const row = await this.db
      .updateTable('break_glass')
      .set({ ended_at: at, end_state: endState })
      .where('task_id', '=', taskId)
      // INVARIANT: re-checked on the row itself, so of racing enders (every node hears the end) only the first to write it wins.
      .where('ended_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    return row && (await withUses(this.db, [row]))[0];
  }

  async reviewBreakGlass(id: string, review: { readonly by: string; readonly note: string; readonly at: number }): Promise<BreakGlass | undefined> {
    const row = await this.db
      .updateTable('break_glass')
      .set({ reviewed_at: review.at, reviewed_by: review.by, review_note: review.note })
      .where('id', '=', id)
      // INVARIANT: only an ended grant is reviewed, and only once; a racing second review finds it reviewed.
      .where('ended_at', 'is not', null)
      .where('reviewed_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    return row && (await withUses(this.db, [row]))[0];
  }

  async claimFact(name: string, value: string, at: number): Promise<boolean> {
    const inserted = await this.db
      .insertInto('store_facts')
      .values({ name, value, at })
      .onConflict((oc) => oc.doNothing())
      .returning('name')
      .executeTakeFirst();
    return inserted !== undefined;
  }

  async ensureActiveSigningKey(key: StoredSigningKey): Promise<StoredSigningKey> {
    await this.db
      .insertInto('signing_keys')
      .values({
        kid: key.kid,
        use: key.use,
        alg: key.alg,
        public_jwk: key.publicJwk,
        private_sealed: key.privateSealed,
        state: 'active',
        created_at: key.createdAt,
      })
      .onConflict((oc) => oc.doNothing())
      .execute();
    const row = await this.db
      .selectFrom('signing_keys')
      .selectAll()
      .where('use', '=', key.use)
      .where('state', '=', 'active')
      .executeTakeFirstOrThrow();
    return toSigningKey(row);
  }

  async listSigningKeys(use: SigningKeyUse): Promise<StoredSigningKey[]> {
    const rows = await this.db.selectFrom('signing_keys').selectAll().where('use', '=', use).orderBy('created_at').execute();
    return rows.map(toSigningKey);
  }

  // The audit append is on every action check's path, so its SQL is compiled
  // once (per batch size) instead of built per call.
  private readonly auditHeadQuery: CompiledQuery;
  private readonly auditInsertSql = new Map<number, string>();

  private auditInsert(rows: readonly AuditRow[]): CompiledQuery {
    let text = this.auditInsertSql.get(rows.length);
    if (text === undefined) {
      text = this.db
        .insertInto('audit_records')
        .values(rows.map(() => ({ seq: 0, id: '', at: 0, type: '', record: '', prev_hash: '', hash: '' })))
        .compile().sql;
      this.auditInsertSql.set(rows.length, text);
    }
    return CompiledQuery.raw(
      text,
      rows.flatMap((r) => [r.seq, r.id, r.at, r.type, r.record, r.prevHash, r.hash]),
    );
  }

  /**
   * SQLite fast path for the audit append, which every action check waits on:
   * one synchronous BEGIN IMMEDIATE … COMMIT on the same connection through
   * better-sqlite3's prepared statements. With no await inside, nothing else in
   * this process can interleave with it. It runs only when no transaction is
   * open on the connection (Kysely's transactions span awaits); otherwise the
   * append queues behind Kysely's connection lock like any other query.
   */
  private appendSqliteNow(linkers: readonly ChainLinker[]): AuditRow[] | undefined {
    const database = this.sqlite;
    if (database === undefined || database.inTransaction) return undefined;
    if (this.syncAppend === undefined) {
      const headStatement = database.prepare<[], { seq: number; hash: string }>('select seq, hash from audit_records order by seq desc limit 1');
      const insert = database.prepare('insert into audit_records (seq, id, at, type, record, prev_hash, hash) values (?, ?, ?, ?, ?, ?, ?)');
      const append = database.transaction((batch: readonly ChainLinker[]) => {
        const headRow = headStatement.get();
        let head: ChainHead | null = headRow ? { seq: headRow.seq, hash: headRow.hash } : null;
        const rows: AuditRow[] = [];
        for (const link of batch) {
          const row = link(head);
          insert.run(row.seq, row.id, row.at, row.type, row.record, row.prevHash, row.hash);
          rows.push(row);
          head = { seq: row.seq, hash: row.hash };
        }
        return rows;
      });
      this.syncAppend = (batch) => append.immediate(batch);
    }
    return this.syncAppend(linkers);
  }

  async appendChained(linkers: readonly ChainLinker[]): Promise<AuditRow[]> {
    if (linkers.length === 0) return [];
    const appended = this.appendSqliteNow(linkers);
    if (appended !== undefined) return appended;
    const write = async (conn: Kysely<Tables>): Promise<AuditRow[]> => {
      const headRow = (await conn.executeQuery<Pick<AuditTable, 'seq' | 'hash'>>(this.auditHeadQuery)).rows[0];
      let head: ChainHead | null = headRow ? { seq: Number(headRow.seq), hash: headRow.hash } : null;
      const rows: AuditRow[] = [];
      for (const link of linkers) {
        const row = link(head);
        rows.push(row);
        head = { seq: row.seq, hash: row.hash };
      }
      // SQLite caps bound parameters per statement; 7 per row keeps 500 rows well under it.
      for (let i = 0; i < rows.length; i += 500) await conn.executeQuery(this.auditInsert(rows.slice(i, i + 500)));
      return rows;
    };

    return this.atomically(async (trx) => {
      // INVARIANT: every appender on every node takes this lock before reading the head.
      // (SQLite: BEGIN IMMEDIATE already holds the database's one write lock.)
      if (this.dialect === 'postgres') await sql`select pg_advisory_xact_lock(${AUDIT_LOCK_KEY})`.execute(trx);
      return write(trx);
    });
  }

  /**
   * Runs `work` as one transaction. PostgreSQL: READ COMMITTED, so `work` takes
   * the row locks it needs (`select … for update`) and each statement sees what
   * others committed before it. SQLite: BEGIN IMMEDIATE on the one connection,
   * which takes the database's write lock before the first read, so nothing in
   * this process (Kysely holds the connection) or another (the CLI beside a
   * running server) interleaves. `work` must use only the handle it is given.
   */
  private atomically<T>(work: (db: Kysely<Tables>) => Promise<T>): Promise<T> {
    if (this.dialect === 'postgres') return this.db.transaction().execute(work);
    return this.db.connection().execute(async (conn) => {
      await conn.executeQuery(BEGIN_IMMEDIATE);
      try {
        const result = await work(conn);
        await conn.executeQuery(COMMIT);
        return result;
      } catch (error) {
        await conn.executeQuery(ROLLBACK).catch(() => undefined);
        throw error;
      }
    });
  }

  async readAudit(afterSeq: number, limit: number): Promise<AuditRow[]> {
    const rows = await this.db
      .selectFrom('audit_records')
      .selectAll()
      .where('seq', '>', afterSeq)
      .orderBy('seq')
      .limit(limit)
      .execute();
    return rows.map((r) => ({ seq: r.seq, id: r.id, at: r.at, type: r.type, record: r.record, prevHash: r.prev_hash, hash: r.hash }));
  }

  async auditHead(): Promise<ChainHead | null> {
    const row = await this.db.selectFrom('audit_records').select(['seq', 'hash']).orderBy('seq', 'desc').limit(1).executeTakeFirst();
    return row ? { seq: row.seq, hash: row.hash } : null;
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}

function toIdentity(row: IdentityTable): Identity {
  return {
    id: row.id,
    actorType: row.actor_type as Identity['actorType'],
    owner: row.owner === '' ? null : row.owner,
    environment: row.environment,
    labels: JSON.parse(row.labels) as Record<string, string>,
    state: row.state as IdentityState,
    source: row.source,
    adminScopes: JSON.parse(row.admin_scopes) as AdminScope[],
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    lastSeenAt: row.last_seen_at,
    expiresAt: row.expires_at,
  };
}

function toAdminToken(row: AdminTokenTable): AdminTokenRecord {
  return {
    id: row.id,
    name: row.name,
    tokenHash: row.token_hash,
    scopes: JSON.parse(row.scopes) as AdminScope[],
    createdBy: row.created_by,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
  };
}

function toTask(row: TaskTable): Task {
  return {
    id: row.id,
    identityId: row.identity_id,
    purpose: row.purpose,
    intent: row.intent,
    environment: row.environment,
    requestedScopes: JSON.parse(row.requested_scopes) as Scope[],
    grantedScopes: JSON.parse(row.granted_scopes) as Scope[],
    refusedScopes: JSON.parse(row.refused_scopes) as RefusedScope[],
    state: row.state as TaskState,
    policyVersion: row.policy_version,
    parentTaskId: row.parent_task_id,
    lineage: JSON.parse(row.lineage) as string[],
    delegators: JSON.parse(row.delegators) as string[],
    mayAct: row.may_act === null ? null : (JSON.parse(row.may_act) as string[]),
    renewals: Number(row.renewals),
    tokenId: row.token_id,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    endedAt: row.ended_at,
    endReason: row.end_reason,
  };
}

/** A scope as stored: exactly `{action, resource}` in that order, so stored grants compare as text. */
function scopeRow(scope: Scope): Scope {
  return { action: scope.action, resource: scope.resource };
}

function toSupersededToken(row: SupersededTokenTable): SupersededToken {
  return { jti: row.jti, taskId: row.task_id, expiresAt: Number(row.expires_at) };
}

function toNarrowedTask(row: Pick<TaskTable, 'id' | 'granted_scopes' | 'expires_at'>): NarrowedTask {
  return { id: row.id, grantedScopes: JSON.parse(row.granted_scopes) as Scope[], expiresAt: row.expires_at };
}

/**
 * The key an approval is found by: sha256 (hex) of the canonical JSON array of
 * its binding. Never null (a grant's argsDigest is), so it can carry the
 * unique index of pending requests.
 */
function bindingKey(binding: ApprovalBinding): string {
  const parts = [binding.stage, binding.taskId, binding.identityId, binding.action, binding.resource, binding.argsDigest];
  return createHash('sha256').update(canonicalize(parts)).digest('hex');
}

function approvalRow(request: NewApprovalRequest, key: string): ApprovalTable {
  return {
    id: request.id,
    state: 'pending',
    stage: request.stage,
    binding_key: key,
    task_id: request.taskId,
    identity_id: request.identityId,
    action: request.action,
    resource: request.resource,
    args_digest: request.argsDigest,
    arguments: request.arguments,
    environment: request.environment,
    intent: request.intent,
    purpose: request.purpose,
    owner: request.owner,
    tier: request.tier,
    risk: JSON.stringify(request.risk),
    policies: JSON.stringify(request.policies),
    policy_version: request.policyVersion,
    required_approvals: request.requiredApprovals,
    request_record: request.requestRecord,
    created_at: request.createdAt,
    expires_at: request.expiresAt,
    decided_at: null,
    consumed_at: null,
  };
}

/** The requests with their votes, in the order given; votes by time, then approver. */
async function withVotes(db: Kysely<Tables>, rows: readonly ApprovalTable[]): Promise<ApprovalRequest[]> {
  if (rows.length === 0) return [];
  const votes = await db
    .selectFrom('approval_votes')
    .selectAll()
    .where('approval_id', 'in', rows.map((r) => r.id))
    .execute();
  const byApproval = new Map<string, ApprovalVoteTable[]>();
  for (const vote of votes) {
    const list = byApproval.get(vote.approval_id);
    if (list === undefined) byApproval.set(vote.approval_id, [vote]);
    else list.push(vote);
  }
  // Sorted here, not in SQL, so the order does not depend on the database's collation.
  return rows.map((row) => toApproval(row, (byApproval.get(row.id) ?? []).sort((a, b) => a.at - b.at || compareText(a.approver, b.approver))));
}

function toApproval(row: ApprovalTable, votes: readonly ApprovalVoteTable[]): ApprovalRequest {
  return {
    id: row.id,
    state: row.state as ApprovalRequestState,
    stage: row.stage as ApprovalRequest['stage'],
    taskId: row.task_id,
    identityId: row.identity_id,
    action: row.action,
    resource: row.resource,
    argsDigest: row.args_digest,
    arguments: row.arguments,
    environment: row.environment,
    intent: row.intent,
    purpose: row.purpose,
    owner: row.owner,
    tier: row.tier as Tier,
    risk: JSON.parse(row.risk) as Record<string, unknown>,
    policies: JSON.parse(row.policies) as string[],
    policyVersion: row.policy_version,
    requiredApprovals: row.required_approvals,
    requestRecord: row.request_record,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    decidedAt: row.decided_at,
    consumedAt: row.consumed_at,
    votes: votes.map((v) => ({
      approver: v.approver,
      decision: v.decision as ApprovalVote['decision'],
      at: v.at,
      selfApproval: v.self_approval === 1,
      note: v.note,
    })),
  };
}

/** The grants with what was used under each, in the order given; `used` sorted, each once. */
function toLease(row: LeaseTable): Lease {
  return {
    id: row.id,
    taskId: row.task_id,
    provider: row.provider,
    state: row.state as LeaseState,
    details: JSON.parse(row.details) as Record<string, unknown>,
    createdAt: Number(row.created_at),
    expiresAt: Number(row.expires_at),
    revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
    lastError: row.last_error,
  };
}

async function withUses(db: Kysely<Tables>, rows: readonly BreakGlassTable[]): Promise<BreakGlass[]> {
  if (rows.length === 0) return [];
  const uses = await db
    .selectFrom('break_glass_uses')
    .select(['break_glass_id', 'item'])
    .where('break_glass_id', 'in', rows.map((r) => r.id))
    .execute();
  const byGrant = new Map<string, string[]>();
  for (const use of uses) {
    const list = byGrant.get(use.break_glass_id);
    if (list === undefined) byGrant.set(use.break_glass_id, [use.item]);
    else list.push(use.item);
  }
  // Sorted here, not in SQL, so the order does not depend on the database's collation.
  return rows.map((row) => toBreakGlass(row, (byGrant.get(row.id) ?? []).sort(compareText)));
}

function toBreakGlass(row: BreakGlassTable, used: readonly string[]): BreakGlass {
  return {
    id: row.id,
    taskId: row.task_id,
    identityId: row.identity_id,
    requestedBy: row.requested_by,
    reason: row.reason,
    incident: row.incident,
    environment: row.environment,
    scopes: JSON.parse(row.scopes) as Scope[],
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    endedAt: row.ended_at,
    endState: row.end_state,
    reviewedAt: row.reviewed_at,
    reviewedBy: row.reviewed_by,
    reviewNote: row.review_note,
    used,
  };
}

function toOutboxMessage(row: OutboxTable): OutboxMessage {
  return {
    id: row.id,
    target: row.target,
    event: row.event,
    body: row.body,
    createdAt: row.created_at,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    state: row.state as OutboxMessage['state'],
    lastError: row.last_error,
    settledAt: row.settled_at,
  };
}

/** Orders strings by UTF-16 code units, as SQLite does and unlike a PostgreSQL locale. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function toSigningKey(row: SigningKeyTable): StoredSigningKey {
  return {
    kid: row.kid,
    use: row.use as SigningKeyUse,
    alg: row.alg,
    publicJwk: row.public_jwk,
    privateSealed: row.private_sealed,
    state: row.state as 'active' | 'retired',
    createdAt: row.created_at,
  };
}
