/**
 * Raw SQL against a harness's database from outside Writ: how tests play the
 * attacker who edits rows, or the disk that refuses writes.
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import type { Harness } from './harness.js';

export async function execSql(harness: Harness, statements: string): Promise<void> {
  const url = harness.writ.config.database.url;
  if (url === undefined) {
    const db = new Database(join(harness.writ.config.paths.dataDir, 'writ.db'));
    try {
      db.pragma('busy_timeout = 5000');
      db.exec(statements);
    } finally {
      db.close();
    }
    return;
  }
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(statements);
  } finally {
    await client.end();
  }
}

/** Makes every insert into the audit table fail, as a full or broken disk would. */
export function breakAuditWrites(harness: Harness): Promise<void> {
  return harness.writ.store.dialect === 'sqlite'
    ? execSql(harness, `create trigger audit_refuses before insert on audit_records begin select raise(abort, 'disk says no'); end;`)
    : execSql(
        harness,
        `create function audit_refuses() returns trigger language plpgsql as $$ begin raise exception 'disk says no'; end $$;
         create trigger audit_refuses before insert on audit_records for each row execute function audit_refuses();`,
      );
}

export function repairAuditWrites(harness: Harness): Promise<void> {
  return harness.writ.store.dialect === 'sqlite'
    ? execSql(harness, 'drop trigger audit_refuses;')
    : execSql(harness, 'drop trigger audit_refuses on audit_records; drop function audit_refuses();');
}
