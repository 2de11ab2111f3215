/**
 * Secrets at rest: the master key (from WRIT_MASTER_KEY or a 0600 key file)
 * and the AES-256-GCM sealed box it opens. Anything malformed, foreign or
 * altered is refused with ERR_MASTER_KEY.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { WritError } from '../src/core/errors.js';
import { MASTER_KEY_FILE, decodeMasterKey, loadMasterKey } from '../src/secrets/master-key.js';
import { open, seal } from '../src/secrets/sealed-box.js';

const made: string[] = [];
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'writ-secrets-'));
  made.push(dir);
  return dir;
}

const isMasterKeyError = (error: unknown): boolean => error instanceof WritError && error.code === 'ERR_MASTER_KEY';
const posix = process.platform !== 'win32';

describe('loadMasterKey from a key file', () => {
  test('the first call generates a 32-byte key file readable only by its owner', () => {
    const dataDir = join(tempDir(), 'data');
    const key = loadMasterKey({ env: {}, dataDir });
    const path = join(dataDir, MASTER_KEY_FILE);
    assert.equal(key.created, true);
    assert.equal(key.source, path);
    assert.equal(key.bytes.length, 32);
    assert.ok(existsSync(path));
    if (posix) assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(decodeMasterKey(readFileSync(path, 'utf8')), key.bytes);
  });

  test('the second call reads the same key and creates nothing', () => {
    const dataDir = tempDir();
    const first = loadMasterKey({ env: {}, dataDir });
    const second = loadMasterKey({ env: {}, dataDir });
    assert.equal(second.created, false);
    assert.deepEqual(second.bytes, first.bytes);
  });

  test('two data dirs get two different keys', () => {
    assert.notDeepEqual(loadMasterKey({ env: {}, dataDir: tempDir() }).bytes, loadMasterKey({ env: {}, dataDir: tempDir() }).bytes);
  });

  test('a key file readable by others is refused', { skip: !posix && 'file modes are POSIX' }, () => {
    for (const mode of [0o644, 0o640, 0o604, 0o660, 0o606]) {
      const dataDir = tempDir();
      loadMasterKey({ env: {}, dataDir });
      chmodSync(join(dataDir, MASTER_KEY_FILE), mode);
      assert.throws(() => loadMasterKey({ env: {}, dataDir }), isMasterKeyError, mode.toString(8));
    }
  });

  test('an existing key file with mode 0400 is accepted', { skip: !posix && 'file modes are POSIX' }, () => {
    const dataDir = tempDir();
    const first = loadMasterKey({ env: {}, dataDir });
    chmodSync(join(dataDir, MASTER_KEY_FILE), 0o400);
    assert.deepEqual(loadMasterKey({ env: {}, dataDir }).bytes, first.bytes);
  });

  test('a key file that does not hold 32 bytes is refused', () => {
    for (const content of ['', 'junk\n', `${randomBytes(31).toString('base64url')}\n`]) {
      const dataDir = tempDir();
      writeFileSync(join(dataDir, MASTER_KEY_FILE), content, { mode: 0o600 });
      assert.throws(() => loadMasterKey({ env: {}, dataDir }), isMasterKeyError, JSON.stringify(content));
    }
  });

  test('WRIT_MASTER_KEY wins over the key file and writes nothing', () => {
    const dataDir = join(tempDir(), 'untouched');
    const bytes = randomBytes(32);
    const key = loadMasterKey({ env: { WRIT_MASTER_KEY: bytes.toString('hex') }, dataDir });
    assert.deepEqual(key.bytes, bytes);
    assert.equal(key.created, false);
    assert.equal(key.source, 'env WRIT_MASTER_KEY');
    assert.equal(existsSync(dataDir), false);
  });

  test('an empty WRIT_MASTER_KEY falls back to the key file', () => {
    const dataDir = tempDir();
    const key = loadMasterKey({ env: { WRIT_MASTER_KEY: '' }, dataDir });
    assert.equal(key.source, join(dataDir, MASTER_KEY_FILE));
  });
});

describe('WRIT_MASTER_KEY encodings', () => {
  const bytes = randomBytes(32);
  const accepted: [string, string][] = [
    ['64 lowercase hex characters', bytes.toString('hex')],
    ['64 uppercase hex characters', bytes.toString('hex').toUpperCase()],
    ['padded base64', bytes.toString('base64')],
    ['unpadded base64url', bytes.toString('base64url')],
    ['hex with surrounding whitespace', `  ${bytes.toString('hex')}\n`],
  ];
  for (const [name, text] of accepted) {
    test(`${name} of 32 bytes is accepted as that key`, () => {
      assert.deepEqual(loadMasterKey({ env: { WRIT_MASTER_KEY: text }, dataDir: tempDir() }).bytes, bytes);
    });
  }

  const refused: [string, string][] = [
    ['31 bytes as hex', randomBytes(31).toString('hex')],
    ['33 bytes as hex', randomBytes(33).toString('hex')],
    ['63 hex characters', bytes.toString('hex').slice(1)],
    ['31 bytes as base64', randomBytes(31).toString('base64')],
    ['33 bytes as base64', randomBytes(33).toString('base64')],
    ['31 bytes as base64url', randomBytes(31).toString('base64url')],
    ['33 bytes as base64url', randomBytes(33).toString('base64url')],
    ['64 bytes as base64', randomBytes(64).toString('base64')],
    ['junk', 'not-a-key'],
    ['a passphrase', 'correct horse battery staple'],
    ['hex with a non-hex character', `${bytes.toString('hex').slice(0, 63)}g`],
    ['base64 with an inner space', `${bytes.toString('base64').slice(0, 20)} ${bytes.toString('base64').slice(20)}`],
    ['base64 with a stray character', `${bytes.toString('base64url')}!`],
  ];
  for (const [name, text] of refused) {
    test(`${name} is refused`, () => {
      assert.throws(() => loadMasterKey({ env: { WRIT_MASTER_KEY: text }, dataDir: tempDir() }), isMasterKeyError);
      assert.throws(() => decodeMasterKey(text), isMasterKeyError);
    });
  }
});

describe('sealed box', () => {
  const key = randomBytes(32);
  const plaintext = Buffer.from('-----BEGIN PRIVATE KEY----- secret bytes \u0000\u00ff', 'utf8');
  const ad = 'signing-key:kid_123';

  test('what is sealed opens to the same bytes under the same key and associated data', () => {
    const sealed = seal(key, plaintext, ad);
    assert.deepEqual(open(key, sealed, ad), plaintext);
    assert.deepEqual(open(key, seal(key, Buffer.alloc(0), ad), ad), Buffer.alloc(0));
  });

  test('the sealed form is v1 and four base64url parts, with no plaintext in it', () => {
    const sealed = seal(key, plaintext, ad);
    assert.match(sealed, /^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    const [, nonce, , tag] = sealed.split('.');
    assert.equal(Buffer.from(nonce!, 'base64url').length, 12);
    assert.equal(Buffer.from(tag!, 'base64url').length, 16);
    assert.equal(sealed.includes('secret'), false);
  });

  test('two seals of the same plaintext differ (a fresh nonce each time)', () => {
    const a = seal(key, plaintext, ad);
    const b = seal(key, plaintext, ad);
    assert.notEqual(a, b);
    assert.notEqual(a.split('.')[1], b.split('.')[1]);
    assert.deepEqual(open(key, a, ad), open(key, b, ad));
  });

  test('a different key does not open it', () => {
    assert.throws(() => open(randomBytes(32), seal(key, plaintext, ad), ad), isMasterKeyError);
  });

  test('a sealed value moved to another name (different associated data) does not open', () => {
    const sealed = seal(key, plaintext, ad);
    for (const other of ['signing-key:kid_124', '', `${ad} `, ad.toUpperCase()]) {
      assert.throws(() => open(key, sealed, other), isMasterKeyError, JSON.stringify(other));
    }
  });

  test('flipping any single bit of the nonce, ciphertext or tag makes it refuse to open', () => {
    const sealed = seal(key, plaintext, ad);
    const parts = sealed.split('.');
    for (const index of [1, 2, 3]) {
      const raw = Buffer.from(parts[index]!, 'base64url');
      for (let bit = 0; bit < raw.length * 8; bit += 7) {
        const flipped = Buffer.from(raw);
        flipped[bit >> 3]! ^= 1 << (bit & 7);
        const altered = parts.map((p, i) => (i === index ? flipped.toString('base64url') : p)).join('.');
        assert.throws(() => open(key, altered, ad), isMasterKeyError, `part ${index} bit ${bit}`);
      }
    }
  });

  test('truncated, extended or unknown formats are refused', () => {
    const sealed = seal(key, plaintext, ad);
    const parts = sealed.split('.');
    const malformed = [
      '',
      'v1',
      parts.slice(0, 3).join('.'),
      `${sealed}.extra`,
      `v2.${parts.slice(1).join('.')}`,
      `V1.${parts.slice(1).join('.')}`,
      [parts[0], parts[1], parts[2]!.slice(0, -2), parts[3]].join('.'),
      [parts[0], '', parts[2], parts[3]].join('.'),
      [parts[0], parts[1], parts[2], ''].join('.'),
      'not a sealed value at all',
    ];
    for (const value of malformed) assert.throws(() => open(key, value, ad), isMasterKeyError, JSON.stringify(value));
  });

  test(
    'a sealed value whose tag was cut short does not open',
    () => {
      const parts = seal(key, plaintext, ad).split('.');
      const tag = Buffer.from(parts[3]!, 'base64url');
      for (const length of [15, 14, 13, 12, 8, 4]) {
        const cut = [parts[0], parts[1], parts[2], tag.subarray(0, length).toString('base64url')].join('.');
        assert.throws(() => open(key, cut, ad), isMasterKeyError, `${length}-byte tag`);
      }
    },
  );

  test('a key of the wrong length is refused with ERR_MASTER_KEY when opening', () => {
    const sealed = seal(key, plaintext, ad);
    assert.throws(() => open(key.subarray(0, 16), sealed, ad), isMasterKeyError);
  });
});
