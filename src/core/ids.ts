import { randomBytes } from 'node:crypto';

/**
 * A new random identifier: `prefix_` followed by 128 bits of randomness in
 * base64url (22 characters). Unguessable, so safe to use as a capability-free
 * handle in URLs and logs; never derived from input.
 */
export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(16).toString('base64url')}`;
}

/** Shape of ids made by `newId`: used to reject junk before it reaches the store. */
export function looksLikeId(prefix: string, value: string): boolean {
  return value.length === prefix.length + 23 && value.startsWith(`${prefix}_`) && /^[A-Za-z0-9_-]+$/.test(value);
}
