/**
 * The vault: secrets sealed under the master key, bound to their names,
 * audited by name only, and refused when malformed or moved.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WritError } from '../src/core/errors.js';
import { startHarness, type Harness } from './helpers/harness.js';

const codeOf = (error: unknown): string | undefined => (error instanceof WritError ? error.code : undefined);

describe('vault', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());
  const operator = { id: 'cli:test', actorType: 'local-operator' };

  test('a secret opens to exactly what was stored; the store holds only sealed text', async () => {
    const value = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc ünïcode';
    assert.deepEqual(await h.writ.vault.put('tickets-api-key', value, operator), { created: true });
    assert.equal(await h.writ.vault.reveal('tickets-api-key'), value);
    const stored = await h.writ.store.getSecret('tickets-api-key');
    assert.ok(stored !== undefined && stored.sealed.startsWith('v1.') && !stored.sealed.includes('sk_live'));
    assert.deepEqual(await h.writ.vault.put('tickets-api-key', 'rotated', operator), { created: false });
    assert.equal(await h.writ.vault.reveal('tickets-api-key'), 'rotated');
    assert.deepEqual((await h.writ.vault.list()).map((s) => s.name), ['tickets-api-key']);
  });

  test('a sealed value copied under another name does not open', async () => {
    await h.writ.vault.put('original', 'the-value', operator);
    const stored = await h.writ.store.getSecret('original');
    await h.writ.store.putSecret('copy', stored!.sealed, 1);
    await assert.rejects(h.writ.vault.reveal('copy'), (e) => codeOf(e) === 'ERR_MASTER_KEY');
  });

  test('bad names, empty and oversized values are refused; unknown names are not found', async () => {
    for (const name of ['', 'Upper', '1starts-with-digit', 'has space', 'x'.repeat(65), "o'neil", '../etc/passwd']) {
      await assert.rejects(h.writ.vault.put(name, 'v', operator), (e) => codeOf(e) === 'ERR_VALIDATION', name);
    }
    await assert.rejects(h.writ.vault.put('empty', '', operator), (e) => codeOf(e) === 'ERR_VALIDATION');
    await assert.rejects(h.writ.vault.put('huge', 'x'.repeat(16 * 1024 + 1), operator), (e) => codeOf(e) === 'ERR_VALIDATION');
    await assert.rejects(h.writ.vault.reveal('never-stored'), (e) => codeOf(e) === 'ERR_SECRET_NOT_FOUND');
    await assert.rejects(h.writ.vault.reveal("x' or 1=1 --"), (e) => codeOf(e) === 'ERR_SECRET_NOT_FOUND');
    await assert.rejects(h.writ.vault.delete('never-stored', operator), (e) => codeOf(e) === 'ERR_SECRET_NOT_FOUND');
  });

  test('set and delete are audited by name; no record carries a value', async () => {
    await h.writ.vault.put('audited', 'do-not-log-me-7f3a', operator);
    await h.writ.vault.delete('audited', operator);
    await assert.rejects(h.writ.vault.reveal('audited'), (e) => codeOf(e) === 'ERR_SECRET_NOT_FOUND');
    const rows = await h.auditRows();
    assert.ok(!rows.some((row) => row.record.includes('do-not-log-me') || row.record.includes('sk_live') || row.record.includes('the-value')));
    const records = (await h.auditRecords()).filter((r) => r.resource === 'secret:audited');
    assert.deepEqual(records.map((r) => r.type), ['secret.set', 'secret.deleted']);
    assert.deepEqual((records[0] as any).actor, operator);
  });
});
