/**
 * The master key: 32 bytes that seal every secret Writ keeps at rest (signing
 * keys now, upstream credentials later). From `WRIT_MASTER_KEY` (base64 or hex)
 * when set, which is what a cluster uses so every node holds the same key;
 * otherwise a key file in the data dir, generated on first start with 0600
 * permissions and refused if anyone else can read it.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { WritError } from '../core/errors.js';

export const MASTER_KEY_FILE = 'master.key';
const KEY_BYTES = 32;

export interface MasterKey {
  readonly bytes: Buffer;
  /** Where it came from, for logs: `env` or the file path. */
  readonly source: string;
  /** True when this call generated a new key file. */
  readonly created: boolean;
}

/** Decodes a master key given as 64 hex characters or base64/base64url of 32 bytes. */
export function decodeMasterKey(text: string): Buffer {
  const trimmed = text.trim();
  const bytes = /^[0-9a-fA-F]{64}$/.test(trimmed) ? Buffer.from(trimmed, 'hex') : Buffer.from(trimmed, 'base64');
  if (bytes.length !== KEY_BYTES || (!/^[0-9a-fA-F]{64}$/.test(trimmed) && !/^[A-Za-z0-9+/_-]{43}=?$/.test(trimmed))) {
    throw new WritError('ERR_MASTER_KEY', { detail: 'the master key must be 32 bytes, as 64 hex characters or base64' });
  }
  return bytes;
}

/**
 * Loads the master key, creating the key file when there is none.
 * @throws WritError ERR_MASTER_KEY when the key is malformed or the file is readable by others.
 */
export function loadMasterKey(options: { env?: NodeJS.ProcessEnv; dataDir: string }): MasterKey {
  const fromEnv = (options.env ?? process.env).WRIT_MASTER_KEY;
  if (fromEnv !== undefined && fromEnv !== '') return { bytes: decodeMasterKey(fromEnv), source: 'env WRIT_MASTER_KEY', created: false };

  const path = join(options.dataDir, MASTER_KEY_FILE);
  mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  let created = false;
  if (!existsSync(path)) {
    // Write the key to a private temporary file, then link it into place: link()
    // fails if the key file exists, so two processes starting at once never both
    // create one, and nobody ever reads a key file that is still being written.
    const temporary = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
    writeFileSync(temporary, `${randomBytes(KEY_BYTES).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    try {
      linkSync(temporary, path);
      created = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    } finally {
      unlinkSync(temporary);
    }
  }
  if (process.platform !== 'win32') {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new WritError('ERR_MASTER_KEY', {
        detail: `${path} is readable by other users (mode ${mode.toString(8)}); run: chmod 600 ${path}`,
      });
    }
  }
  return { bytes: decodeMasterKey(readFileSync(path, 'utf8')), source: path, created };
}
