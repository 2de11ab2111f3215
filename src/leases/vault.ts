/**
 * The vault: downstream credentials Writ keeps for its enforcement points (an
 * upstream MCP server's API key, a database password), sealed at rest under the
 * master key. An enforcement point asks for a secret by name at the moment it
 * injects it (a header, an environment variable); the agent never sees it, and
 * no log line or audit record ever carries it: records name the secret only.
 *
 * Each sealed value is bound to its name (the associated data), so a row copied
 * under another name does not open.
 */
import { auditActor, type AuditActor, type AuditLog } from '../audit/log.js';
import type { Clock } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import type { Store } from '../store/store.js';
import { open, seal } from '../secrets/sealed-box.js';

/** Lowercase letters, digits, `.`, `_`, `-`; starts with a letter; at most 64. */
export const SECRET_NAME_RE = /^[a-z][a-z0-9._-]{0,63}$/;
/** Largest secret accepted, in bytes of UTF-8. */
export const MAX_SECRET_BYTES = 16 * 1024;

export interface SecretInfo {
  readonly name: string;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface Vault {
  /**
   * Seals and stores `value` under `name`, replacing any value it had; audited (name only).
   * @throws WritError ERR_VALIDATION (bad name, empty or oversized value), ERR_AUDIT_UNAVAILABLE
   */
  put(name: string, value: string, actor: AuditActor): Promise<{ readonly created: boolean }>;
  /**
   * The plaintext, for an enforcement point about to inject it. Never return it to a caller.
   * @throws WritError ERR_SECRET_NOT_FOUND, ERR_MASTER_KEY (it does not open)
   */
  reveal(name: string): Promise<string>;
  list(): Promise<SecretInfo[]>;
  /** @throws WritError ERR_SECRET_NOT_FOUND, ERR_AUDIT_UNAVAILABLE */
  delete(name: string, actor: AuditActor): Promise<void>;
}

export function createVault(options: { readonly store: Store; readonly masterKey: Buffer; readonly audit: AuditLog; readonly clock: Clock }): Vault {
  const { store, masterKey, audit, clock } = options;
  const associatedData = (name: string): string => `writ-secret:${name}`;
  const checkName = (name: unknown): string => {
    if (typeof name !== 'string' || !SECRET_NAME_RE.test(name)) {
      throw new WritError('ERR_VALIDATION', { detail: 'a secret name is lowercase letters, digits, ".", "_" and "-", starting with a letter, at most 64' });
    }
    return name;
  };

  return {
    async put(name, value, actor) {
      checkName(name);
      if (typeof value !== 'string' || value.length === 0) throw new WritError('ERR_VALIDATION', { detail: 'a secret value cannot be empty' });
      const bytes = Buffer.from(value, 'utf8');
      if (bytes.length > MAX_SECRET_BYTES) throw new WritError('ERR_VALIDATION', { detail: `a secret value is at most ${MAX_SECRET_BYTES} bytes` });
      // Recorded first: a secret nobody can account for is never stored.
      const existed = (await store.getSecret(name)) !== undefined;
      await audit.append({ type: 'secret.set', actor: auditActor(actor), resource: `secret:${name}`, data: { replaced: existed } });
      const created = await store.putSecret(name, seal(masterKey, bytes, associatedData(name)), clock.now());
      return { created };
    },

    async reveal(name) {
      const stored = SECRET_NAME_RE.test(name) ? await store.getSecret(name) : undefined;
      if (stored === undefined) throw new WritError('ERR_SECRET_NOT_FOUND', { detail: `no secret named ${JSON.stringify(name.slice(0, 64))}` });
      return open(masterKey, stored.sealed, associatedData(name)).toString('utf8');
    },

    list: () => store.listSecrets(),

    async delete(name, actor) {
      checkName(name);
      if ((await store.getSecret(name)) === undefined) throw new WritError('ERR_SECRET_NOT_FOUND', { detail: `no secret named ${name}` });
      await audit.append({ type: 'secret.deleted', actor: auditActor(actor), resource: `secret:${name}` });
      await store.deleteSecret(name);
    },
  };
}
