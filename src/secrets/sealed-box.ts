/**
 * Authenticated encryption of secrets at rest: AES-256-GCM under the master
 * key, a fresh 96-bit nonce per seal, and associated data that binds the
 * ciphertext to what it is (a key id, a secret name) so a sealed value moved
 * to another row does not open.
 *
 * Format: `v1.<nonce>.<ciphertext>.<tag>`, each part base64url.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { WritError } from '../core/errors.js';

const NONCE_BYTES = 12;
const TAG_BYTES = 16;

export function seal(key: Buffer, plaintext: Buffer, associatedData: string): string {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.from(associatedData, 'utf8'));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return ['v1', nonce, ciphertext, cipher.getAuthTag()].map((part) => (typeof part === 'string' ? part : part.toString('base64url'))).join('.');
}

/**
 * Opens a sealed value.
 * @throws WritError ERR_MASTER_KEY when the format is wrong, the key differs, or
 *   the value or its associated data was altered.
 */
export function open(key: Buffer, sealed: string, associatedData: string): Buffer {
  const parts = sealed.split('.');
  if (parts.length !== 4 || parts[0] !== 'v1') throw new WritError('ERR_MASTER_KEY', { detail: 'sealed value has an unknown format' });
  const [, nonce, ciphertext, tag] = parts.map((p) => Buffer.from(p, 'base64url')) as [Buffer, Buffer, Buffer, Buffer];
  // GCM would accept a truncated tag (down to 4 bytes); only the full 16 bytes Writ writes are accepted.
  if (nonce.length !== NONCE_BYTES || tag.length !== TAG_BYTES) throw new WritError('ERR_MASTER_KEY', { detail: 'sealed value has a malformed nonce or tag' });
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(associatedData, 'utf8'));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch (error) {
    throw new WritError('ERR_MASTER_KEY', {
      detail: 'a stored secret does not open with this master key (wrong WRIT_MASTER_KEY or master.key, or tampered data)',
      cause: error,
    });
  }
}
