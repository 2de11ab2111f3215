/**
 * The PostgreSQL credential provider: a role per task.
 *
 * Issue, in one transaction on the admin connection:
 *   CREATE ROLE <prefix><random> LOGIN PASSWORD <the SCRAM verifier of a random password> VALID UNTIL <task expiry>
 *     CONNECTION LIMIT n (and no superuser, createdb, createrole, replication, bypassrls, inherit)
 *   GRANT USAGE ON SCHEMA s; GRANT <privileges> ON s.t (or ON ALL TABLES IN SCHEMA s)
 *   with INSERT, GRANT USAGE ON SEQUENCE for each sequence a column of s.t owns (serial)
 * Revoke: NOLOGIN first (no new session), then every session of the role is
 * terminated (`pg_terminate_backend`) and waited out, then DROP OWNED BY
 * (every privilege in this database) and DROP ROLE. A role that is already
 * gone is revoked.
 * Extend (the task was renewed): ALTER ROLE … VALID UNTIL the new expiry,
 * unless a revoke has begun (NOLOGIN) or the role is gone.
 *
 * Which privileges a task gets is decided by `planPgGrants`, a pure function
 * of the task's granted scopes and the configured grants. Role names and
 * passwords are generated here, never taken from input; every identifier and
 * literal that reaches SQL is quoted all the same (escapeIdentifier,
 * escapeLiteral), configured schema and table names included.
 */
import { createHash, createHmac, pbkdf2, randomBytes } from 'node:crypto';
import pg from 'pg';
import { PG_TABLE_PRIVILEGES, type PgGrantConfig, type PgLeaseProviderConfig } from '../core/config.js';
import { resourceCovers } from '../core/scope.js';
import type { Scope, Tier } from '../core/types.js';
import type { LeaseCredential, LeasePlan, LeaseProvider, TierOf } from './provider.js';

type Privilege = (typeof PG_TABLE_PRIVILEGES)[number];
const GRANTABLE_TIERS = ['read', 'write', 'delete', 'export'] as const satisfies readonly Tier[];
type GrantableTier = (typeof GRANTABLE_TIERS)[number];

/** One object of the database and what a role may do on it. `table` null: every table of the schema. */
export interface PgObjectGrant {
  readonly schema: string;
  readonly table: string | null;
  readonly privileges: readonly Privilege[];
}

/** A PostgreSQL lease's stored details: no secret. */
export interface PgLeaseDetails {
  readonly role: string;
  readonly grants: readonly PgObjectGrant[];
}

/**
 * The privileges a task's scopes map to: for each configured grant whose
 * resource the scope covers whole (a task holding `db:shop/orders` gets the
 * grant for `db:shop/orders`, never the one for `db:shop/*`; `db:shop/*`
 * gets both), the privileges its configuration lists under the scope's tier.
 * Tiers are not cumulative: `write` gives what `write:` lists, nothing of
 * `read:`. An action whose tier the policy does not declare, and the admin
 * tier, map to nothing. Pure; the result is sorted and deduplicated.
 */
export function planPgGrants(grants: readonly PgGrantConfig[], scopes: readonly Scope[], tierOf: TierOf): PgObjectGrant[] {
  const byObject = new Map<string, { schema: string; table: string | null; privileges: Set<Privilege> }>();
  for (const scope of scopes) {
    const tier = tierOf(scope.action);
    if (tier === undefined || !(GRANTABLE_TIERS as readonly string[]).includes(tier)) continue;
    for (const grant of grants) {
      if (!resourceCovers(scope.resource, grant.resource)) continue;
      const privileges = grant[tier as GrantableTier] ?? [];
      if (privileges.length === 0) continue;
      const table = grant.table ?? null;
      const key = JSON.stringify([grant.schema, table]);
      const entry = byObject.get(key) ?? { schema: grant.schema, table, privileges: new Set<Privilege>() };
      for (const privilege of privileges) entry.privileges.add(privilege);
      byObject.set(key, entry);
    }
  }
  return [...byObject.values()]
    .map((e) => ({ schema: e.schema, table: e.table, privileges: PG_TABLE_PRIVILEGES.filter((p) => e.privileges.has(p)) }))
    .sort((a, b) => (a.schema === b.schema ? (a.table ?? '').localeCompare(b.table ?? '') : a.schema.localeCompare(b.schema)));
}

/** A role name no input chose: the prefix and 20 random lowercase letters and digits (~103 bits). */
export function generateRoleName(prefix: string): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(40);
  let name = '';
  // Rejection sampling keeps every character uniform (252 = 7 × 36).
  for (const byte of bytes) {
    if (byte < 252) name += alphabet[byte % 36];
    if (name.length === 20) break;
  }
  if (name.length < 20) return generateRoleName(prefix);
  return `${prefix}${name}`;
}

/** The GRANT statements for one object, quoted. */
export function grantStatements(role: string, grant: PgObjectGrant): string[] {
  const who = pg.escapeIdentifier(role);
  const schema = pg.escapeIdentifier(grant.schema);
  const on = grant.table === null ? `ALL TABLES IN SCHEMA ${schema}` : `TABLE ${schema}.${pg.escapeIdentifier(grant.table)}`;
  return [`GRANT USAGE ON SCHEMA ${schema} TO ${who}`, `GRANT ${grant.privileges.join(', ')} ON ${on} TO ${who}`];
}

const SCRAM_ITERATIONS = 4096;

/**
 * The SCRAM-SHA-256 verifier PostgreSQL keeps for `password` (RFC 5802,
 * RFC 7677; the form of pg_authid.rolpassword): given this instead of the
 * password, the server stores it as it is, so the password itself never
 * reaches the server, its statement log or pg_stat_statements. A random
 * base64url password is its own SASLprep normalization.
 */
export async function scramVerifier(password: string, salt: Buffer = randomBytes(16), iterations = SCRAM_ITERATIONS): Promise<string> {
  const salted = await new Promise<Buffer>((resolve, reject) => pbkdf2(password, salt, iterations, 32, 'sha256', (error, key) => (error ? reject(error) : resolve(key))));
  const hmac = (key: Buffer, text: string) => createHmac('sha256', key).update(text).digest();
  const storedKey = createHash('sha256').update(hmac(salted, 'Client Key')).digest();
  const serverKey = hmac(salted, 'Server Key');
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** Where agents connect, from the admin DSN and the overrides. */
function endpointOf(dsn: string, config: PgLeaseProviderConfig): { host: string; port: number; database: string } {
  const url = new URL(dsn);
  const database = decodeURIComponent(url.pathname.replace(/^\//, '')) || decodeURIComponent(url.username) || 'postgres';
  return {
    host: config.connectHost ?? (url.hostname.replace(/^\[|\]$/g, '') || 'localhost'),
    port: config.connectPort ?? (url.port === '' ? 5432 : Number(url.port)),
    database,
  };
}

function detailsOf(details: LeasePlan['details']): PgLeaseDetails {
  const role = details.role;
  // INVARIANT: only roles this provider named are ever dropped, whatever a row says.
  if (typeof role !== 'string' || !/^[a-z_][a-z0-9_]{0,15}[a-z0-9]{20}$/.test(role)) throw new Error('lease details name no role Writ made');
  return { role, grants: (details.grants as PgObjectGrant[] | undefined) ?? [] };
}

const UNDEFINED_OBJECT = '42704';

/**
 * The sequences owned by a column (serial, `OWNED BY`) of table $2 in schema
 * $1 (every table of it when $2 is null), each as a quoted qualified name.
 * Identity columns need no grant of their own and are not listed.
 */
const OWNED_SEQUENCES = `
  SELECT DISTINCT quote_ident(sn.nspname) || '.' || quote_ident(s.relname) AS sequence
    FROM pg_class s
    JOIN pg_namespace sn ON sn.oid = s.relnamespace
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
    JOIN pg_class t ON t.oid = d.refobjid
    JOIN pg_namespace tn ON tn.oid = t.relnamespace
   WHERE s.relkind = 'S' AND tn.nspname = $1 AND ($2::text IS NULL OR t.relname = $2)
   ORDER BY 1`;

export interface PgLeaseProviderOptions {
  readonly config: PgLeaseProviderConfig;
  /** The admin DSN: `config.url`, or the vault secret `config.urlSecret`, read when first needed. */
  readonly adminUrl: () => Promise<string>;
  /** Told of an error on an idle admin connection. */
  readonly onError?: (error: Error) => void;
}

/** Creates the provider; connects on first use (a database that is down does not stop Writ starting). */
export function createPgLeaseProvider(options: PgLeaseProviderOptions): LeaseProvider {
  const { config } = options;
  let pool: Promise<{ pool: pg.Pool; dsn: string }> | undefined;
  const connect = (): Promise<{ pool: pg.Pool; dsn: string }> => {
    pool ??= options.adminUrl().then((dsn) => {
      const created = new pg.Pool({
        connectionString: dsn,
        max: 2,
        connectionTimeoutMillis: config.statementTimeout * 1000,
        statement_timeout: config.statementTimeout * 1000,
        application_name: 'writ-leases',
      });
      created.on('error', (error) => options.onError?.(error));
      return { pool: created, dsn };
    });
    // A DSN that could not be read (vault) is read again next time.
    pool.catch(() => (pool = undefined));
    return pool;
  };

  const inTransaction = async <T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> => {
    const { pool: p } = await connect();
    const client = await p.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  };

  const roleExists = async (client: pg.ClientBase, role: string): Promise<boolean> =>
    ((await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount ?? 0) > 0;

  /**
   * Runs `work` holding the role's advisory lock on an admin connection:
   * racing revokers and extenders (the task's end, its renewal, the sweep,
   * another node) take turns, as concurrent DROPs of one role collide.
   */
  const withRoleLock = async <T>(role: string, work: (client: pg.PoolClient, dsn: string) => Promise<T>): Promise<T> => {
    const { pool: p, dsn } = await connect();
    const client = await p.connect();
    await client.query('SELECT pg_advisory_lock(hashtext($1))', [role]);
    try {
      return await work(client, dsn);
    } finally {
      // A connection whose unlock failed is discarded (its lock goes with it), never returned to the pool holding it.
      await client.query('SELECT pg_advisory_unlock(hashtext($1))', [role]).then(
        () => client.release(),
        (error: Error) => client.release(error),
      );
    }
  };

  return {
    name: config.name,
    kind: 'postgres',

    plan(scopes, tierOf) {
      const grants = planPgGrants(config.grants, scopes, tierOf);
      if (grants.length === 0) return undefined;
      const details: PgLeaseDetails = { role: generateRoleName(config.rolePrefix), grants };
      return { details: details as unknown as Record<string, unknown> };
    },

    async issue(raw, expiresAt): Promise<LeaseCredential> {
      const { role, grants } = detailsOf(raw);
      const password = randomBytes(24).toString('base64url');
      const verifier = await scramVerifier(password);
      const validUntil = new Date(expiresAt).toISOString();
      await inTransaction(async (client) => {
        const who = pg.escapeIdentifier(role);
        // Security: the statement carries the SCRAM verifier, never the password, so a server logging DDL
        // (log_statement) writes nothing a login can use; PostgreSQL stores a verifier as it is given.
        await client.query(
          `CREATE ROLE ${who} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT ` +
            `CONNECTION LIMIT ${Number(config.connectionLimit)} PASSWORD ${pg.escapeLiteral(verifier)} VALID UNTIL ${pg.escapeLiteral(validUntil)}`,
        );
        for (const grant of grants) {
          for (const statement of grantStatements(role, grant)) await client.query(statement);
          // A serial column's default is nextval() on a sequence the table owns: INSERT works only with USAGE on it.
          if (grant.privileges.includes('INSERT')) {
            const owned = await client.query<{ sequence: string }>(OWNED_SEQUENCES, [grant.schema, grant.table]);
            for (const { sequence } of owned.rows) await client.query(`GRANT USAGE ON SEQUENCE ${sequence} TO ${who}`);
          }
        }
      });
      const { dsn } = await connect();
      return { ...endpointOf(dsn, config), user: role, password, expiresAt: validUntil };
    },

    async revoke(raw) {
      const { role } = detailsOf(raw);
      await withRoleLock(role, async (client, dsn) => {
        if (!(await roleExists(client, role))) return;
        const who = pg.escapeIdentifier(role);
        try {
          // No new session from here on; then every open one is cut and waited out.
          await client.query(`ALTER ROLE ${who} NOLOGIN`);
          for (let attempt = 0; attempt < 50; attempt++) {
            const live = await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()', [role]);
            if ((live.rowCount ?? 0) === 0) break;
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
          // What it owns or was granted in the cluster's other databases (a large object, a temp table's
          // leftovers): DROP OWNED reaches only the database it runs in, and DROP ROLE fails while any is left.
          const elsewhere = await client.query<{ datname: string }>(
            `SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
              WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1) AND d.datname <> current_database()`,
            [role],
          );
          for (const { datname } of elsewhere.rows) await dropOwnedIn(dsn, datname, who, config.statementTimeout);
          await client.query('BEGIN');
          // Every privilege (and anything it created) in this database, then the role itself.
          await client.query(`DROP OWNED BY ${who}`);
          await client.query(`DROP ROLE IF EXISTS ${who}`);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          // Another revoker dropped it first: revoked all the same.
          if ((error as { code?: string }).code === UNDEFINED_OBJECT && !(await roleExists(client, role))) return;
          throw error;
        }
      });
    },

    holds(raw, scopes, tierOf) {
      const { grants } = detailsOf(raw);
      const current = planPgGrants(config.grants, scopes, tierOf);
      return grants.every((held) => {
        const mapped = current.find((g) => g.schema === held.schema && g.table === held.table);
        return mapped !== undefined && held.privileges.every((p) => mapped.privileges.includes(p));
      });
    },

    async extend(raw, expiresAt) {
      const { role } = detailsOf(raw);
      return withRoleLock(role, async (client) => {
        // A role a revoke has begun on (NOLOGIN) or finished is not brought back.
        const row = (await client.query<{ rolcanlogin: boolean }>('SELECT rolcanlogin FROM pg_roles WHERE rolname = $1', [role])).rows[0];
        if (row === undefined || !row.rolcanlogin) return 'absent';
        await client.query(`ALTER ROLE ${pg.escapeIdentifier(role)} VALID UNTIL ${pg.escapeLiteral(new Date(expiresAt).toISOString())}`);
        return 'extended';
      });
    },

    async configurationWarnings() {
      const { pool: p } = await connect();
      // PUBLIC holds CONNECT on a new database, and no role can be denied what PUBLIC holds: a task role logs in there too.
      const open = await p.query<{ datname: string }>(
        `SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate AND datname <> current_database()
            AND has_database_privilege('public', oid, 'CONNECT') ORDER BY datname`,
      );
      if (open.rows.length === 0) return [];
      const names = open.rows.map((r) => r.datname);
      return [
        `task roles of lease provider ${config.name} can log in to ${names.length === 1 ? 'database' : 'databases'} ${names.join(', ')}, where PUBLIC holds CONNECT: ` +
          'REVOKE CONNECT ON DATABASE … FROM PUBLIC there, or reject the role prefix in pg_hba.conf (docs/leases.md)',
      ];
    },

    async state(raw) {
      const { role } = detailsOf(raw);
      const { pool: p } = await connect();
      return ((await p.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount ?? 0) > 0 ? 'present' : 'absent';
    },

    async close() {
      const current = pool;
      pool = undefined;
      if (current !== undefined) await current.then((c) => c.pool.end()).catch(() => undefined);
    },
  };
}

/** DROP OWNED BY `who` (an escaped identifier) in database `datname` of the cluster `dsn` names, as its admin. */
async function dropOwnedIn(dsn: string, datname: string, who: string, statementTimeoutSeconds: number): Promise<void> {
  const url = new URL(dsn);
  url.pathname = `/${encodeURIComponent(datname)}`;
  const client = new pg.Client({ connectionString: url.href, connectionTimeoutMillis: statementTimeoutSeconds * 1000, statement_timeout: statementTimeoutSeconds * 1000, application_name: 'writ-leases' });
  await client.connect();
  try {
    await client.query(`DROP OWNED BY ${who}`);
  } finally {
    await client.end().catch(() => undefined);
  }
}
