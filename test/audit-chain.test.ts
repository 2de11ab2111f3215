/**
 * The audit hash chain as pure functions: every kind of tampering with stored
 * rows is named at the first row that no longer holds.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { GENESIS_HASH, createChainVerifier, linkEntry, sha256Hex, type ChainBreak, type ChainEntry } from '../src/audit/chain.js';
import { canonicalize } from '../src/core/canonical-json.js';
import type { AuditRow, ChainHead } from '../src/store/store.js';

const ROWS = 20;
const T0 = 1_700_000_000_000;

function entry(i: number): ChainEntry {
  return {
    id: `aud_${String(i).padStart(4, '0')}`,
    at: T0 + i * 1000,
    type: i % 3 === 0 ? 'task.decision' : 'action.check',
    body: {
      actor: `spiffe://demo.local/agent/${i % 4}`,
      decision: i % 5 === 0 ? 'deny' : 'allow',
      scope: { action: 'read', resource: `db:orders/${i}` },
      reasons: ['baseline', `policy-${i}`],
      note: i === 7 ? 'unicode € \u2028 and "quotes"' : null,
    },
  };
}

function buildChain(count = ROWS): AuditRow[] {
  const rows: AuditRow[] = [];
  let head: ChainHead | null = null;
  for (let i = 1; i <= count; i++) {
    const row = linkEntry(head, entry(i));
    rows.push(row);
    head = { seq: row.seq, hash: row.hash };
  }
  return rows;
}

/** Feeds rows to a fresh verifier; the first break and the index of the row it was found at. */
function verify(rows: readonly AuditRow[]): { index: number; problem: ChainBreak } | undefined {
  const verifier = createChainVerifier();
  for (const [index, row] of rows.entries()) {
    const problem = verifier.next(row);
    if (problem !== undefined) return { index, problem };
  }
  return undefined;
}

/** A copy of row i whose record body is changed, with record and hash made consistent again. */
function rewriteRecord(row: AuditRow, change: (record: Record<string, unknown>) => void): AuditRow {
  const parsed = JSON.parse(row.record) as Record<string, unknown>;
  change(parsed);
  const record = canonicalize(parsed);
  return { ...row, record, hash: sha256Hex(record) };
}

describe('linkEntry', () => {
  const rows = buildChain();

  test('sequence numbers start at 1 and increase by one', () => {
    assert.deepEqual(
      rows.map((r) => r.seq),
      Array.from({ length: ROWS }, (_, i) => i + 1),
    );
  });

  test('the first row links to the genesis hash and every later row to its predecessor', () => {
    assert.equal(GENESIS_HASH, '0'.repeat(64));
    assert.equal(rows[0]!.prevHash, GENESIS_HASH);
    for (let i = 1; i < rows.length; i++) assert.equal(rows[i]!.prevHash, rows[i - 1]!.hash);
  });

  test('the hash is SHA-256 hex over exactly the record text', () => {
    for (const row of rows) {
      assert.match(row.hash, /^[0-9a-f]{64}$/);
      assert.equal(row.hash, createHash('sha256').update(Buffer.from(row.record, 'utf8')).digest('hex'));
    }
  });

  test('the record is canonical JSON holding the columns and the body', () => {
    for (const [i, row] of rows.entries()) {
      const source = entry(i + 1);
      assert.equal(canonicalize(JSON.parse(row.record)), row.record);
      assert.deepEqual(JSON.parse(row.record), {
        ...source.body,
        seq: row.seq,
        id: source.id,
        at: source.at,
        type: source.type,
        prevHash: row.prevHash,
      });
      assert.equal(row.id, source.id);
      assert.equal(row.at, source.at);
      assert.equal(row.type, source.type);
    }
  });

  test('a body cannot override the chain fields it is linked with', () => {
    const head = { seq: 41, hash: 'a'.repeat(64) };
    const row = linkEntry(head, {
      id: 'aud_real',
      at: 5,
      type: 'task.ended',
      body: { seq: 1, id: 'aud_fake', at: 0, type: 'forged', prevHash: GENESIS_HASH },
    });
    const record = JSON.parse(row.record) as Record<string, unknown>;
    assert.deepEqual(
      { seq: record.seq, id: record.id, at: record.at, type: record.type, prevHash: record.prevHash },
      { seq: 42, id: 'aud_real', at: 5, type: 'task.ended', prevHash: 'a'.repeat(64) },
    );
    assert.equal(row.seq, 42);
  });

  test('the same entry after the same head always gives the same row', () => {
    const head = { seq: 3, hash: 'b'.repeat(64) };
    assert.deepEqual(linkEntry(head, entry(4)), linkEntry(head, entry(4)));
    assert.notEqual(linkEntry(head, entry(4)).hash, linkEntry({ seq: 3, hash: 'c'.repeat(64) }, entry(4)).hash);
  });
});

describe('createChainVerifier', () => {
  test('an untouched chain verifies to the end, and the head is the last row', () => {
    const rows = buildChain();
    const verifier = createChainVerifier();
    assert.equal(verifier.head, null);
    for (const row of rows) assert.equal(verifier.next(row), undefined);
    assert.deepEqual(verifier.head, { seq: ROWS, hash: rows[ROWS - 1]!.hash });
  });

  test('the verifier does not advance past a broken row', () => {
    const rows = buildChain(3);
    const verifier = createChainVerifier();
    assert.equal(verifier.next(rows[0]!), undefined);
    assert.equal(verifier.next(rows[2]!), 'sequence-gap');
    assert.deepEqual(verifier.head, { seq: 1, hash: rows[0]!.hash });
    assert.equal(verifier.next(rows[1]!), undefined, 'the right next row is still accepted');
  });

  const tamperings: [name: string, tamper: (rows: AuditRow[]) => AuditRow[], index: number, problem: ChainBreak][] = [
    [
      'a record rewritten with its own hash recomputed breaks the link from the next row',
      (rows) => rows.map((r, i) => (i === 9 ? rewriteRecord(r, (rec) => void (rec.decision = 'allow-forged')) : r)),
      10,
      'prev-hash-mismatch',
    ],
    [
      'a record changed without recomputing its hash fails its own hash',
      (rows) => rows.map((r, i) => (i === 9 ? { ...r, record: r.record.replace('"decision":"deny"', '"decision":"allow"') } : r)),
      9,
      'hash-mismatch',
    ],
    ['a deleted middle row leaves a sequence gap', (rows) => rows.filter((_, i) => i !== 9), 9, 'sequence-gap'],
    ['a deleted first row leaves a sequence gap at the start', (rows) => rows.slice(1), 0, 'sequence-gap'],
    [
      'two swapped rows break the sequence at the earlier position',
      (rows) => {
        const out = [...rows];
        [out[4], out[12]] = [out[12]!, out[4]!];
        return out;
      },
      4,
      'sequence-gap',
    ],
    [
      'a duplicated row breaks the sequence at the copy',
      (rows) => [...rows.slice(0, 6), rows[5]!, ...rows.slice(6)],
      6,
      'sequence-gap',
    ],
    [
      'a record re-serialized non-canonically, with its hash recomputed, is refused as non-canonical',
      (rows) =>
        rows.map((r, i) => {
          if (i !== 9) return r;
          const record = JSON.stringify(JSON.parse(r.record), null, 1);
          return { ...r, record, hash: sha256Hex(record) };
        }),
      9,
      'record-not-canonical',
    ],
    [
      'a record with its members reordered, with its hash recomputed, is refused as non-canonical',
      (rows) =>
        rows.map((r, i) => {
          if (i !== 9) return r;
          const parsed = JSON.parse(r.record) as Record<string, unknown>;
          const reordered: Record<string, unknown> = {};
          for (const key of Object.keys(parsed).reverse()) reordered[key] = parsed[key];
          const record = JSON.stringify(reordered);
          return { ...r, record, hash: sha256Hex(record) };
        }),
      9,
      'record-not-canonical',
    ],
    [
      'a record with a duplicated member, with its hash recomputed, is refused as non-canonical',
      (rows) =>
        rows.map((r, i) => {
          if (i !== 9) return r;
          const record = `${r.record.slice(0, -1)},"decision":"allow"}`;
          return { ...r, record, hash: sha256Hex(record) };
        }),
      9,
      'record-not-canonical',
    ],
    [
      'a record that is not JSON, with its hash recomputed, is unreadable',
      (rows) => rows.map((r, i) => (i === 9 ? { ...r, record: 'not json', hash: sha256Hex('not json') } : r)),
      9,
      'record-unreadable',
    ],
    ['a changed type column no longer matches its record', (rows) => rows.map((r, i) => (i === 9 ? { ...r, type: 'task.ended' } : r)), 9, 'column-mismatch'],
    ['a changed id column no longer matches its record', (rows) => rows.map((r, i) => (i === 9 ? { ...r, id: 'aud_other' } : r)), 9, 'column-mismatch'],
    ['a changed at column no longer matches its record', (rows) => rows.map((r, i) => (i === 9 ? { ...r, at: r.at + 1 } : r)), 9, 'column-mismatch'],
    [
      'a record whose seq was rewritten, with its hash recomputed, no longer matches its column',
      (rows) => rows.map((r, i) => (i === 9 ? rewriteRecord(r, (rec) => void (rec.seq = 99)) : r)),
      9,
      'column-mismatch',
    ],
    [
      'renumbered rows after a deletion break the link to the deleted row',
      (rows) => rows.filter((_, i) => i !== 9).map((r, i) => (i >= 9 ? { ...r, seq: i + 1 } : r)),
      9,
      'prev-hash-mismatch',
    ],
    [
      'a row relinked to genesis in the middle of the chain is refused',
      (rows) => rows.map((r, i) => (i === 9 ? { ...r, prevHash: GENESIS_HASH } : r)),
      9,
      'prev-hash-mismatch',
    ],
    [
      'a hash column edited to anything else fails the hash check',
      (rows) => rows.map((r, i) => (i === 9 ? { ...r, hash: 'f'.repeat(64) } : r)),
      9,
      'hash-mismatch',
    ],
  ];

  for (const [name, tamper, index, problem] of tamperings) {
    test(name, () => {
      const original = buildChain();
      assert.equal(verify(original), undefined, 'the untouched chain verifies');
      assert.deepEqual(verify(tamper(original)), { index, problem });
    });
  }

  test('a rewritten last row verifies on its own, but the head no longer matches the one recorded before', () => {
    // The chain cannot see a consistent rewrite of its newest row; comparing the
    // head with one kept elsewhere can. This pins that limit down.
    const rows = buildChain();
    const originalHead = { seq: ROWS, hash: rows[ROWS - 1]!.hash };
    const tampered = rows.map((r, i) => (i === ROWS - 1 ? rewriteRecord(r, (rec) => void (rec.decision = 'forged')) : r));
    const verifier = createChainVerifier();
    for (const row of tampered) assert.equal(verifier.next(row), undefined);
    assert.notDeepEqual(verifier.head, originalHead);
  });

  test('a chain that does not start at seq 1 is refused at its first row', () => {
    const rows = buildChain();
    const relinked = { ...rows[3]!, prevHash: GENESIS_HASH };
    assert.equal(createChainVerifier().next(relinked), 'sequence-gap');
  });

  test(
    'a record that is valid JSON but not an object is reported as a break, not thrown',
    () => {
      for (const record of ['null', '1', '"text"', '[]', 'true']) {
        const row: AuditRow = { seq: 1, id: 'aud_x', at: T0, type: 'x', record, prevHash: GENESIS_HASH, hash: sha256Hex(record) };
        let problem: ChainBreak | undefined;
        assert.doesNotThrow(() => {
          problem = createChainVerifier().next(row);
        }, record);
        assert.equal(problem, 'record-unreadable', record);
      }
    },
  );
});
