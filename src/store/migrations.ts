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
};

export const migrationProvider: MigrationProvider = {
  getMigrations: () => Promise.resolve(migrations),
};
