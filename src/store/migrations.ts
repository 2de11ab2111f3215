/**
 * Schema migrations, in code so they ship inside the package. Portable across
 * SQLite and PostgreSQL: timestamps are epoch milliseconds in `bigint`, JSON is
 * text (canonical where it is hashed), booleans are not used.
 * Never edit a migration that has shipped; add the next one.
 */
import { sql, type Kysely, type Migration, type MigrationProvider } from 'kysely';

const migrations: Record<string, Migration> = {
  '0001_spine': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('identities')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('actor_type', 'text', (c) => c.notNull())
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('environment', 'text', (c) => c.notNull())
        .addColumn('labels', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('last_seen_at', 'bigint')
        .addColumn('expires_at', 'bigint')
        .execute();

      await db.schema
        .createTable('tasks')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('identity_id', 'text', (c) => c.notNull())
        .addColumn('purpose', 'text', (c) => c.notNull())
        .addColumn('intent', 'text', (c) => c.notNull())
        .addColumn('environment', 'text', (c) => c.notNull())
        .addColumn('requested_scopes', 'text', (c) => c.notNull())
        .addColumn('granted_scopes', 'text', (c) => c.notNull())
        .addColumn('refused_scopes', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('policy_version', 'text', (c) => c.notNull())
        .addColumn('parent_task_id', 'text')
        .addColumn('token_id', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('ended_at', 'bigint')
        .addColumn('end_reason', 'text')
        // The audit record of the task's end; null while that record is still owed.
        .addColumn('end_audit_id', 'text')
        .execute();
      await db.schema.createIndex('tasks_state_expires').on('tasks').columns(['state', 'expires_at']).execute();
      await db.schema.createIndex('tasks_identity').on('tasks').column('identity_id').execute();
      await db.schema.createIndex('tasks_ended').on('tasks').columns(['ended_at', 'expires_at']).execute();
      await db.schema.createIndex('tasks_end_unaudited').on('tasks').column('ended_at').where(sql.ref('end_audit_id'), 'is', null).execute();

      await db.schema
        .createTable('signing_keys')
        .addColumn('kid', 'text', (c) => c.primaryKey())
        .addColumn('use', 'text', (c) => c.notNull())
        .addColumn('alg', 'text', (c) => c.notNull())
        .addColumn('public_jwk', 'text', (c) => c.notNull())
        .addColumn('private_sealed', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      // INVARIANT: at most one active key per use, so concurrent first starts agree on one.
      await db.schema
        .createIndex('signing_keys_one_active')
        .on('signing_keys')
        .column('use')
        .unique()
        .where(sql.ref('state'), '=', 'active')
        .execute();

      await db.schema
        .createTable('audit_records')
        .addColumn('seq', 'bigint', (c) => c.primaryKey())
        .addColumn('id', 'text', (c) => c.notNull().unique())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('type', 'text', (c) => c.notNull())
        .addColumn('record', 'text', (c) => c.notNull())
        .addColumn('prev_hash', 'text', (c) => c.notNull())
        .addColumn('hash', 'text', (c) => c.notNull())
        .execute();
    },
  },

  '0002_identity_sources': {
    async up(db: Kysely<unknown>) {
      // An unclaimed (quarantined) identity has no owner: stored as '' because
      // SQLite cannot drop NOT NULL in place; the store maps '' to null.
      await db.schema.alterTable('identities').addColumn('source', 'text', (c) => c.notNull().defaultTo('cli')).execute();
      await db.schema.alterTable('identities').addColumn('admin_scopes', 'text', (c) => c.notNull().defaultTo('[]')).execute();
      await db.schema.alterTable('identities').addColumn('updated_at', 'bigint', (c) => c.notNull().defaultTo(0)).execute();
      // The audit record of the identity's current state; null while that record is
      // still owed (written late by the reaper). Identities from before were recorded.
      await db.schema.alterTable('identities').addColumn('state_audit_id', 'text').execute();
      await sql`update identities set updated_at = created_at, state_audit_id = 'recorded-before-0002'`.execute(db);
      await db.schema.createIndex('identities_state_unaudited').on('identities').column('updated_at').where(sql.ref('state_audit_id'), 'is', null).execute();
      await db.schema.createIndex('identities_updated').on('identities').column('updated_at').execute();

      // Operator credentials for the admin API. Only a hash of each token is kept.
      await db.schema
        .createTable('admin_tokens')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('token_hash', 'text', (c) => c.notNull().unique())
        .addColumn('scopes', 'text', (c) => c.notNull())
        .addColumn('created_by', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint')
        .addColumn('revoked_at', 'bigint')
        .addColumn('last_used_at', 'bigint')
        .execute();

      // One-time facts, claimed atomically (the bootstrap admin token is issued once per store).
      await db.schema
        .createTable('store_facts')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('value', 'text', (c) => c.notNull())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },

  '0003_grant_drift': {
    async up(db: Kysely<unknown>) {
      // When a policy change last narrowed the task's grant (its token still carries
      // the scopes it was minted with); null when never narrowed. Other nodes read
      // narrowings since their last sync, and every node the unexpired ones at start.
      await db.schema.alterTable('tasks').addColumn('narrowed_at', 'bigint').execute();
      await db.schema.createIndex('tasks_narrowed').on('tasks').columns(['narrowed_at', 'expires_at']).where(sql.ref('narrowed_at'), 'is not', null).execute();
      // Re-decision pages through active tasks of given policy versions in id order.
      await db.schema.createIndex('tasks_state_version').on('tasks').columns(['state', 'policy_version', 'id']).execute();
    },
  },
  '0004_secrets': {
    async up(db: Kysely<unknown>) {
      // Downstream credentials Writ injects for enforcement points (an upstream
      // MCP server's API key, say), sealed under the master key with the name as
      // associated data. The plaintext is never stored and never leaves Writ.
      await db.schema
        .createTable('secrets')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('sealed', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },

  '0005_approvals': {
    async up(db: Kysely<unknown>) {
      // A human's yes to one exact action. `binding_key` is the sha256 (hex) of the
      // canonical JSON array [stage, task_id, identity_id, action, resource,
      // args_digest]: never null, unlike args_digest, so a unique index on it holds
      // for grant-stage requests too (NULLs are distinct in unique indexes).
      await db.schema
        .createTable('approvals')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('stage', 'text', (c) => c.notNull())
        .addColumn('binding_key', 'text', (c) => c.notNull())
        .addColumn('task_id', 'text', (c) => c.notNull())
        .addColumn('identity_id', 'text', (c) => c.notNull())
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('resource', 'text', (c) => c.notNull())
        .addColumn('args_digest', 'text')
        // Kept only while pending or approved: every move to an end state erases it.
        .addColumn('arguments', 'text')
        .addColumn('environment', 'text', (c) => c.notNull())
        .addColumn('intent', 'text', (c) => c.notNull())
        .addColumn('purpose', 'text', (c) => c.notNull())
        .addColumn('owner', 'text')
        .addColumn('tier', 'text', (c) => c.notNull())
        .addColumn('risk', 'text', (c) => c.notNull())
        .addColumn('policies', 'text', (c) => c.notNull())
        .addColumn('policy_version', 'text', (c) => c.notNull())
        .addColumn('required_approvals', 'integer', (c) => c.notNull())
        .addColumn('request_record', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('decided_at', 'bigint')
        .addColumn('consumed_at', 'bigint')
        .execute();
      await db.schema.createIndex('approvals_binding').on('approvals').columns(['binding_key', 'state', 'created_at']).execute();
      // INVARIANT: at most one pending request per binding, so concurrent opens on any node agree on one.
      await db.schema
        .createIndex('approvals_one_pending')
        .on('approvals')
        .column('binding_key')
        .unique()
        .where(sql.ref('state'), '=', 'pending')
        .execute();
      await db.schema.createIndex('approvals_state_expires').on('approvals').columns(['state', 'expires_at']).execute();
      await db.schema.createIndex('approvals_task').on('approvals').column('task_id').execute();
      await db.schema.createIndex('approvals_created').on('approvals').columns(['created_at', 'id']).execute();

      // One vote per approver per request: the primary key is what makes approvers distinct.
      await db.schema
        .createTable('approval_votes')
        .addColumn('approval_id', 'text', (c) => c.notNull().references('approvals.id'))
        .addColumn('approver', 'text', (c) => c.notNull())
        .addColumn('decision', 'text', (c) => c.notNull())
        .addColumn('at', 'bigint', (c) => c.notNull())
        // 1 when the approver is the requester or in its delegation chain (allowed by a knob), else 0.
        .addColumn('self_approval', 'integer', (c) => c.notNull())
        .addColumn('note', 'text')
        .addPrimaryKeyConstraint('approval_votes_pk', ['approval_id', 'approver'])
        .execute();

      // Webhook deliveries, written with the change they tell of and delivered by
      // whichever node claims them (a claim is a lease on next_attempt_at).
      await db.schema
        .createTable('outbox')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('target', 'text', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('body', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull())
        .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('last_error', 'text')
        .addColumn('settled_at', 'bigint')
        .execute();
      await db.schema.createIndex('outbox_due').on('outbox').columns(['state', 'next_attempt_at']).execute();
    },
  },

  '0006_break_glass': {
    async up(db: Kysely<unknown>) {
      // An emergency grant, one per task (the task carries the grant; this row
      // carries why, what was used under it, how it ended and its review).
      await db.schema
        .createTable('break_glass')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('task_id', 'text', (c) => c.notNull().unique())
        .addColumn('identity_id', 'text', (c) => c.notNull())
        .addColumn('requested_by', 'text', (c) => c.notNull())
        .addColumn('reason', 'text', (c) => c.notNull())
        .addColumn('incident', 'text', (c) => c.notNull())
        .addColumn('environment', 'text', (c) => c.notNull())
        .addColumn('scopes', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('ended_at', 'bigint')
        .addColumn('end_state', 'text')
        .addColumn('reviewed_at', 'bigint')
        .addColumn('reviewed_by', 'text')
        .addColumn('review_note', 'text')
        .execute();
      // Listing those still owed a review (reviewed_at is null), newest first; and all, newest first.
      await db.schema.createIndex('break_glass_review').on('break_glass').columns(['reviewed_at', 'created_at', 'id']).execute();
      await db.schema.createIndex('break_glass_created').on('break_glass').columns(['created_at', 'id']).execute();

      // What was used under a grant, each item once: the primary key is what keeps
      // racing recorders (every node records its own uses) from duplicating one.
      await db.schema
        .createTable('break_glass_uses')
        .addColumn('break_glass_id', 'text', (c) => c.notNull().references('break_glass.id'))
        .addColumn('item', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('break_glass_uses_pk', ['break_glass_id', 'item'])
        .execute();
    },
  },

  '0007_delegation': {
    async up(db: Kysely<unknown>) {
      // Delegation: the tasks a task was delegated from (root first) and who
      // delegated each; the identities it may be delegated to; renewals.
      await db.schema.alterTable('tasks').addColumn('lineage', 'text', (c) => c.notNull().defaultTo('[]')).execute();
      await db.schema.alterTable('tasks').addColumn('delegators', 'text', (c) => c.notNull().defaultTo('[]')).execute();
      await db.schema.alterTable('tasks').addColumn('may_act', 'text').execute();
      await db.schema.alterTable('tasks').addColumn('renewals', 'integer', (c) => c.notNull().defaultTo(0)).execute();
      // The root of the task's delegation tree (itself for a task asked for directly): a cascade reads one tree.
      await db.schema.alterTable('tasks').addColumn('root_task_id', 'text').execute();
      await sql`update tasks set root_task_id = id`.execute(db);
      await db.schema.createIndex('tasks_root').on('tasks').columns(['root_task_id', 'state']).execute();
      await db.schema.createIndex('tasks_parent').on('tasks').column('parent_task_id').where(sql.ref('parent_task_id'), 'is not', null).execute();

      // Tokens a renewal replaced before they expired: refused everywhere until they would have expired.
      await db.schema
        .createTable('superseded_tokens')
        .addColumn('jti', 'text', (c) => c.primaryKey())
        .addColumn('task_id', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('superseded_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('superseded_tokens_at').on('superseded_tokens').column('superseded_at').execute();
      await db.schema.createIndex('superseded_tokens_expiry').on('superseded_tokens').column('expires_at').execute();
    },
  },

  '0008_leases': {
    async up(db: Kysely<unknown>) {
      // Downstream credentials minted for a task (a PostgreSQL role...): written
      // before anything is handed out, so a crash never leaves one unaccounted
      // for. `details` is what revoking needs (the role's name, what was
      // granted); never a password.
      await db.schema
        .createTable('leases')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('task_id', 'text', (c) => c.notNull())
        .addColumn('provider', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('details', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('revoked_at', 'bigint')
        .addColumn('last_error', 'text')
        .execute();
      await db.schema.createIndex('leases_task').on('leases').column('task_id').execute();
      // The sweep reads the leases not yet revoked: few, whatever the history.
      await db.schema.createIndex('leases_live').on('leases').columns(['state', 'task_id']).execute();
    },
  },
};

export const migrationProvider: MigrationProvider = {
  getMigrations: () => Promise.resolve(migrations),
};
