import { join } from 'node:path';
import { openPostgresStore, openSqliteStore } from './kysely-store.js';
import type { Store } from './store.js';

export type { Store } from './store.js';

/** Where a store lives: a PostgreSQL URL for clusters, else a SQLite file in the data dir. */
export interface StoreLocation {
  readonly databaseUrl?: string | undefined;
  readonly dataDir: string;
  readonly sqliteSynchronous?: 'normal' | 'full';
  /** PostgreSQL: told when a pooled connection fails, idle or in use (it is discarded). */
  readonly onIdleError?: (error: Error) => void;
}

/** Opens and migrates the store the configuration names. */
export function openStore(location: StoreLocation): Promise<Store> {
  if (location.databaseUrl !== undefined) return openPostgresStore({ url: location.databaseUrl, ...(location.onIdleError ? { onIdleError: location.onIdleError } : {}) });
  return openSqliteStore({ filename: join(location.dataDir, 'writ.db'), ...(location.sqliteSynchronous ? { synchronous: location.sqliteSynchronous } : {}) });
}

/** Human-readable location for logs; never includes a password. */
export function describeStore(location: StoreLocation): string {
  if (location.databaseUrl === undefined) return `sqlite:${join(location.dataDir, 'writ.db')}`;
  try {
    const url = new URL(location.databaseUrl);
    url.password = '';
    url.username = url.username ? url.username : '';
    return url.toString();
  } catch {
    return 'postgres (unparseable URL)';
  }
}
