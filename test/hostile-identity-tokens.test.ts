/**
 * Hostile identity tokens at the door where identities ask for tasks (POST
 * /v1/tasks), against real trust sources: two SPIFFE trust domains whose
 * JWT-SVID keys (P-256 and RSA) come from bundle files, and Writ's dev issuer.
 *
 * Every row is refused with the one uniform 401 (the caller learns nothing),
 * exactly one `authentication.failed` audit record carries the precise reason,
 * and no task decision is ever made. Each row differs from an accepted token
 * in one property, and the identities it names are registered and active
 * unless the row is about that, so a row passes only because of the check
 * it is named after.
 */
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createManualClock } from '../src/core/clock.js';
import { MAX_TOKEN_LENGTH, mintJwt } from '../src/tokens/jwt.js';
import { claimsOf, startHarness, supportTask, unsignedToken, type Harness } from './helpers/harness.js';

const PROD_AGENT = 'spiffe://prod.example/agent/support';
const PROD_BILLING = 'spiffe://prod.example/agent/billing';
const PROD_SUSPENDED = 'spiffe://prod.example/agent/suspended';
const PROD_STRANGER = 'spiffe://prod.example/agent/stranger';
const OTHER_AGENT = 'spiffe://other.example/agent/support';
// The dev issuer never vouches for a trust domain a configured source owns: its identities live elsewhere.
const DEV_AGENT = 'spiffe://demo.local/agent/support';
const DEV_SUSPENDED = 'spiffe://demo.local/agent/suspended';

/** The configured clock skew (tokens.clockSkew default), in seconds. */
const SKEW = 30;
/** Comfortably beyond the skew, so no row depends on scheduling. */
const BEYOND_SKEW = SKEW + 90;

type Alg = 'ES256' | 'ES384' | 'RS256' | 'HS256';

interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

function ecKey(kid: string): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { kid, privateKey, publicKey };
}

function rsaKey(kid: string): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { kid, privateKey, publicKey };
}

/** A SPIFFE bundle JWK (`use: jwt-svid`); `alg` pins the key to one algorithm when given. */
function bundleJwk(key: SigningKey, alg?: string): Record<string, unknown> {
  return { ...key.publicKey.export({ format: 'jwk' }), kid: key.kid, use: 'jwt-svid', ...(alg === undefined ? {} : { alg }) };
}

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64url');
const json = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value));

/**
 * A compact JWS over `header` and `payload` (objects, or raw JSON text to
 * build duplicate members), signed with `key` as `alg` says.
 */
function signJws(header: Record<string, unknown> | string, payload: Record<string, unknown> | string, alg: Alg, key: KeyObject | Buffer): string {
  const input = `${b64(json(header))}.${b64(json(payload))}`;
  let signature: Buffer;
  switch (alg) {
    case 'ES256':
      signature = sign('sha256', Buffer.from(input), { key: key as KeyObject, dsaEncoding: 'ieee-p1363' });
      break;
    case 'ES384':
      signature = sign('sha384', Buffer.from(input), { key: key as KeyObject, dsaEncoding: 'ieee-p1363' });
      break;
    case 'RS256':
      signature = sign('sha256', Buffer.from(input), key as KeyObject);
      break;
    case 'HS256':
      signature = createHmac('sha256', key).update(input).digest();
      break;
  }
  return `${input}.${signature.toString('base64url')}`;
}

const clock = createManualClock();
const prodEc = ecKey('prod-ec');
const prodRsa = rsaKey('prod-rsa');
const otherEc = ecKey('other-ec');
const strangerEc = ecKey('prod-ec'); // claims prod's kid, but prod never saw this key

let h: Harness;
let keyDir: string;
let taskToken: string;

before(async () => {
  keyDir = mkdtempSync(join(tmpdir(), 'writ-identity-keys-'));
  const prodBundle = join(keyDir, 'prod.example.jwt-bundle.json');
  const otherBundle = join(keyDir, 'other.example.jwt-bundle.json');
  // prod-ec states no alg (the source's allowlist decides); prod-rsa is pinned to RS256.
  writeFileSync(prodBundle, JSON.stringify({ keys: [bundleJwk(prodEc), bundleJwk(prodRsa, 'RS256')], spiffe_sequence: 1 }));
  writeFileSync(otherBundle, JSON.stringify({ keys: [bundleJwk(otherEc)], spiffe_sequence: 1 }));
  h = await startHarness({
    clock,
    config: {
      identity: {
        sources: [
          { type: 'spiffe', name: 'prod', trustDomain: 'prod.example', jwtBundle: { file: prodBundle }, algorithms: ['ES256', 'RS256'] },
          // EdDSA here lets a task token (EdDSA) past the union allowlist, so it is refused for its key.
          { type: 'spiffe', name: 'other', trustDomain: 'other.example', jwtBundle: { file: otherBundle }, algorithms: ['ES256', 'ES384', 'EdDSA'] },
        ],
      },
    },
  });
  for (const id of [PROD_AGENT, PROD_BILLING, PROD_SUSPENDED, OTHER_AGENT, DEV_AGENT, DEV_SUSPENDED]) await h.registerAgent(id);
  await h.writ.registry.transition(PROD_SUSPENDED, ['active'], 'suspended');
  await h.writ.registry.transition(DEV_SUSPENDED, ['active'], 'suspended');
  const granted = await h.post('/v1/tasks', supportTask(), await h.identityToken(DEV_AGENT));
  assert.equal(granted.status, 201, 'setup: the dev issuer gets a task');
  taskToken = granted.body.token;
});

after(async () => {
  await h.close();
  rmSync(keyDir, { recursive: true, force: true });
});

const now = () => Math.floor(clock.now() / 1000);
/** A JWT-SVID payload that prod.example would accept. */
const svid = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({ sub: PROD_AGENT, aud: ['writ'], iat: now(), exp: now() + 120, ...overrides });
const prodEs256 = (payload: Record<string, unknown> | string, header: Record<string, unknown> = {}) =>
  signJws({ alg: 'ES256', kid: prodEc.kid, typ: 'JWT', ...header }, payload, 'ES256', prodEc.privateKey);
const prodRs256 = (payload: Record<string, unknown>) => signJws({ alg: 'RS256', kid: prodRsa.kid, typ: 'JWT' }, payload, 'RS256', prodRsa.privateKey);
const otherEs256 = (payload: Record<string, unknown>, kid = otherEc.kid) => signJws({ alg: 'ES256', kid, typ: 'JWT' }, payload, 'ES256', otherEc.privateKey);
const devToken = (overrides: Record<string, unknown> = {}) =>
  mintJwt(h.writ.devIssuer!.ring.active, 'JWT', { iss: h.writ.devIssuer!.issuer, ...svid({ sub: DEV_AGENT }), ...overrides });

/** Replaces one segment of a compact JWS. */
const withSegment = (token: string, index: 0 | 1 | 2, segment: string) => {
  const parts = token.split('.');
  parts[index] = segment;
  return parts.join('.');
};

/** Appends 'A's to segment `index` until its length is 4k+1, a length no base64url encoding has. */
const to4kPlus1 = (token: string, index: 0 | 1 | 2) => {
  const parts = token.split('.');
  let segment = parts[index] ?? '';
  do segment += 'A';
  while (segment.length % 4 !== 1);
  parts[index] = segment;
  return parts.join('.');
};

/** A token prod.example accepts whose header and payload segments are 4k characters long (no base64 slack). */
function alignedProdToken(): string {
  let header = { alg: 'ES256', kid: prodEc.kid, typ: 'JWT', pad: '' };
  while (b64(JSON.stringify(header)).length % 4 !== 0) header = { ...header, pad: `${header.pad}x` };
  let jti = '';
  while (b64(JSON.stringify(svid({ jti }))).length % 4 !== 0) jti += 'x';
  return signJws(header, svid({ jti }), 'ES256', prodEc.privateKey);
}

type Row = readonly [name: string, build: () => string | Promise<string>, reason: string];

const rows: readonly Row[] = [
  // --- the algorithm ---
  ['alg none (unsigned), naming a trusted kid', () => `${b64(JSON.stringify({ alg: 'none', kid: prodEc.kid, typ: 'JWT' }))}.${b64(JSON.stringify(svid()))}.`, 'ERR_TOKEN_ALGORITHM'],
  ['alg none (unsigned), without a kid', () => unsignedToken(svid(), 'JWT'), 'ERR_TOKEN_ALGORITHM'],
  [
    'HS256 keyed with the RSA public key PEM, kid naming the RSA key',
    () => signJws({ alg: 'HS256', kid: prodRsa.kid, typ: 'JWT' }, svid(), 'HS256', Buffer.from(prodRsa.publicKey.export({ type: 'spki', format: 'pem' }))),
    'ERR_TOKEN_ALGORITHM',
  ],
  [
    "HS256 keyed with the RSA JWK's n, kid naming the RSA key",
    () => signJws({ alg: 'HS256', kid: prodRsa.kid, typ: 'JWT' }, svid(), 'HS256', Buffer.from(String(bundleJwk(prodRsa).n), 'base64url')),
    'ERR_TOKEN_ALGORITHM',
  ],
  [
    'ES256 claimed for the RSA key pinned to RS256',
    () => signJws({ alg: 'ES256', kid: prodRsa.kid, typ: 'JWT' }, svid(), 'ES256', prodEc.privateKey),
    'ERR_TOKEN_ALGORITHM',
  ],
  [
    "an alg another source allows (ES384) but the key's own source does not",
    () => signJws({ alg: 'ES384', kid: prodEc.kid, typ: 'JWT' }, svid(), 'ES384', prodEc.privateKey),
    'ERR_TOKEN_ALGORITHM',
  ],
  // --- the key ---
  ['an unknown kid', () => signJws({ alg: 'ES256', kid: 'nobody-has-this-key', typ: 'JWT' }, svid(), 'ES256', strangerEc.privateKey), 'ERR_TOKEN_UNKNOWN_KEY'],
  ['no kid at all', () => signJws({ alg: 'ES256', typ: 'JWT' }, svid(), 'ES256', prodEc.privateKey), 'ERR_TOKEN_UNKNOWN_KEY'],
  ["prod.example's kid, signed by another key", () => signJws({ alg: 'ES256', kid: prodEc.kid, typ: 'JWT' }, svid(), 'ES256', strangerEc.privateKey), 'ERR_TOKEN_SIGNATURE'],
  ["prod.example's kid, signed by other.example's key", () => otherEs256(svid(), prodEc.kid), 'ERR_TOKEN_SIGNATURE'],
  ['a payload changed after signing', () => withSegment(prodEs256(svid()), 1, b64(JSON.stringify(svid({ sub: PROD_BILLING })))), 'ERR_TOKEN_SIGNATURE'],
  [
    'a header carrying its own jwk (the signer vouching for itself)',
    () => signJws({ alg: 'ES256', kid: prodEc.kid, typ: 'JWT', jwk: strangerEc.publicKey.export({ format: 'jwk' }) }, svid(), 'ES256', strangerEc.privateKey),
    'ERR_TOKEN_SIGNATURE',
  ],
  [
    'a header pointing at a jku the signer controls',
    () => signJws({ alg: 'ES256', kid: prodEc.kid, typ: 'JWT', jku: 'https://attacker.example/jwks.json' }, svid(), 'ES256', strangerEc.privateKey),
    'ERR_TOKEN_SIGNATURE',
  ],
  ['a header with a critical extension Writ does not know', () => prodEs256(svid(), { crit: ['exp-v2'], 'exp-v2': 1 }), 'ERR_TOKEN_MALFORMED'],
  ['an unencoded payload (b64: false, RFC 7797)', () => prodEs256(svid(), { b64: false, crit: ['b64'] }), 'ERR_TOKEN_MALFORMED'],
  // --- the trust domain ---
  ["other.example's key vouching for a prod.example SPIFFE ID", () => otherEs256(svid()), 'ERR_TOKEN_TRUST_DOMAIN'],
  ["prod.example's key vouching for an other.example SPIFFE ID", () => prodEs256(svid({ sub: OTHER_AGENT })), 'ERR_TOKEN_TRUST_DOMAIN'],
  ['a sub that is not a SPIFFE ID', () => prodEs256(svid({ sub: 'alice' })), 'ERR_TOKEN_MALFORMED'],
  ['a SPIFFE ID with a query (not a valid SPIFFE ID)', () => prodEs256(svid({ sub: `${PROD_AGENT}?admin=1` })), 'ERR_TOKEN_MALFORMED'],
  // --- the pinned claims ---
  ['the dev issuer with a wrong iss', () => devToken({ iss: 'https://evil.example' }), 'ERR_TOKEN_ISSUER'],
  ['a wrong aud', () => prodEs256(svid({ aud: ['someone-else'] })), 'ERR_TOKEN_AUDIENCE'],
  ['a wrong aud from the dev issuer', () => devToken({ aud: 'writ-enforcement' }), 'ERR_TOKEN_AUDIENCE'],
  // --- time ---
  ['expired beyond the skew', () => prodEs256(svid({ iat: now() - 600, exp: now() - BEYOND_SKEW })), 'ERR_TOKEN_EXPIRED'],
  ['nbf in the future beyond the skew', () => prodEs256(svid({ nbf: now() + BEYOND_SKEW })), 'ERR_TOKEN_NOT_YET_VALID'],
  ['iat in the future beyond the skew', () => prodEs256(svid({ iat: now() + BEYOND_SKEW, exp: now() + 600 })), 'ERR_TOKEN_NOT_YET_VALID'],
  ['no exp', () => prodEs256(svid({ exp: undefined })), 'ERR_TOKEN_MALFORMED'],
  ['an exp that is not a number', () => prodEs256(svid({ exp: String(now() + 120) })), 'ERR_TOKEN_MALFORMED'],
  ['no sub', () => prodEs256(svid({ sub: undefined })), 'ERR_TOKEN_MALFORMED'],
  // --- the encoding ---
  ['an oversized token', () => prodEs256(svid({ pad: 'x'.repeat(MAX_TOKEN_LENGTH) })), 'ERR_TOKEN_MALFORMED'],
  // The aligned token's header and payload decode identically with one more character: only the length check sees it.
  ['a header segment of length 4k+1', () => to4kPlus1(alignedProdToken(), 0), 'ERR_TOKEN_MALFORMED'],
  ['a payload segment of length 4k+1', () => to4kPlus1(alignedProdToken(), 1), 'ERR_TOKEN_MALFORMED'],
  ['a signature segment of length 4k+1', () => to4kPlus1(alignedProdToken(), 2), 'ERR_TOKEN_MALFORMED'],
  ['standard base64 (+ and /) instead of base64url', () => withSegment(prodEs256(svid()), 2, `${'+/'.repeat(20)}AAAA`), 'ERR_TOKEN_MALFORMED'],
  ['base64 padding', () => `${prodEs256(svid())}==`, 'ERR_TOKEN_MALFORMED'],
  ['a tilde in a segment', () => withSegment(prodEs256(svid()), 0, `${prodEs256(svid()).split('.')[0]!.slice(0, -4)}~~~~`), 'ERR_TOKEN_MALFORMED'],
  ['two segments only', () => prodEs256(svid()).split('.').slice(0, 2).join('.'), 'ERR_TOKEN_MALFORMED'],
  ['a JWE-shaped token (five segments)', () => `${prodEs256(svid())}.AAAA.AAAA`, 'ERR_TOKEN_MALFORMED'],
  ['a header that is not JSON', () => withSegment(prodEs256(svid()), 0, b64('{"alg":"ES256","kid":"prod-ec"')), 'ERR_TOKEN_MALFORMED'],
  ['a header that is a JSON array', () => withSegment(prodEs256(svid()), 0, b64('["ES256","prod-ec"]')), 'ERR_TOKEN_MALFORMED'],
  ['a header whose alg is not a string', () => withSegment(prodEs256(svid()), 0, b64('{"alg":["ES256"],"kid":"prod-ec"}')), 'ERR_TOKEN_MALFORMED'],
  [
    'a header naming alg twice (signed by the trusted key)',
    () => signJws('{"alg":"none","alg":"ES256","kid":"prod-ec","typ":"JWT"}', svid(), 'ES256', prodEc.privateKey),
    'ERR_TOKEN_MALFORMED',
  ],
  [
    'a header naming kid twice (signed by the trusted key)',
    () => signJws('{"alg":"ES256","kid":"other-ec","kid":"prod-ec","typ":"JWT"}', svid(), 'ES256', prodEc.privateKey),
    'ERR_TOKEN_MALFORMED',
  ],
  [
    'a payload naming sub twice (signed by the trusted key)',
    () => {
      const { sub: _sub, ...rest } = svid();
      return prodEs256(`{"sub":${JSON.stringify(PROD_BILLING)},${JSON.stringify(rest).slice(1, -1)},"sub":${JSON.stringify(PROD_AGENT)}}`);
    },
    'ERR_TOKEN_MALFORMED',
  ],
  [
    'a payload naming aud twice (signed by the trusted key)',
    () => {
      const { aud: _aud, ...rest } = svid();
      return prodEs256(`{"aud":"someone-else",${JSON.stringify(rest).slice(1, -1)},"aud":"writ"}`);
    },
    'ERR_TOKEN_MALFORMED',
  ],
  [
    'a header naming kid twice, once escaped (signed by the trusted key)',
    () => signJws('{"alg":"ES256","kid":"other-ec","k\\u0069d":"prod-ec","typ":"JWT"}', svid(), 'ES256', prodEc.privateKey),
    'ERR_TOKEN_MALFORMED',
  ],
  [
    'a payload naming sub twice, once escaped (signed by the trusted key)',
    () => {
      const { sub: _sub, ...rest } = svid();
      return prodEs256(`{"sub":${JSON.stringify(PROD_BILLING)},${JSON.stringify(rest).slice(1, -1)},"s\\u0075b":${JSON.stringify(PROD_AGENT)}}`);
    },
    'ERR_TOKEN_MALFORMED',
  ],
  ['a payload that is not a JSON object', () => prodEs256('["spiffe://prod.example/agent/support"]'), 'ERR_TOKEN_MALFORMED'],
  // --- the identity ---
  ['a trusted token for an unregistered identity', () => prodEs256(svid({ sub: PROD_STRANGER })), 'ERR_IDENTITY_NOT_FOUND'],
  ['a trusted RSA token for an unregistered identity', () => prodRs256(svid({ sub: PROD_STRANGER })), 'ERR_IDENTITY_NOT_FOUND'],
  ['a trusted token for a suspended identity', () => prodEs256(svid({ sub: PROD_SUSPENDED })), 'ERR_IDENTITY_INACTIVE'],
  ['a dev-issuer token for a suspended identity', () => devToken({ sub: DEV_SUSPENDED }), 'ERR_IDENTITY_INACTIVE'],
  ['a dev-issuer token for a trust domain a configured source owns', () => devToken({ sub: PROD_AGENT }), 'ERR_TOKEN_TRUST_DOMAIN'],
  // --- the wrong kind of token ---
  ['a task token where an identity token is required', () => taskToken, 'ERR_TOKEN_UNKNOWN_KEY'],
  ['garbage', () => 'not-a-token', 'ERR_TOKEN_MALFORMED'],
];

describe('hostile identity tokens at POST /v1/tasks', () => {
  /** Each refused row's 401 body without its correlationId, by row name. */
  const bodies = new Map<string, Record<string, unknown>>();

  test('the setup accepts well-formed tokens from every source (so refusals mean something)', async () => {
    for (const [source, build] of [
      ['prod.example ES256', () => prodEs256(svid())],
      ['prod.example RS256', () => prodRs256(svid())],
      ['prod.example with a second registered identity', () => prodEs256(svid({ sub: PROD_BILLING }))],
      ['other.example ES256', () => otherEs256(svid({ sub: OTHER_AGENT }))],
      ['dev issuer', () => devToken()],
      ['prod.example expired within the skew', () => prodEs256(svid({ iat: now() - 300, exp: now() - (SKEW - 10) }))],
      ['prod.example with nbf within the skew', () => prodEs256(svid({ nbf: now() + (SKEW - 10) }))],
      ['prod.example with aud as a string', () => prodEs256(svid({ aud: 'writ' }))],
      ['prod.example with base64url segments of 4k characters', () => alignedProdToken()],
    ] as const) {
      const answer = await h.post('/v1/tasks', supportTask(), build());
      assert.equal(answer.status, 201, `${source}: ${JSON.stringify(answer.body)}`);
      assert.equal(answer.body.status, 'granted', source);
      assert.match(claimsOf(answer.body.token).sub, /^spiffe:\/\/(prod\.example|other\.example|demo\.local)\//, source);
    }
  });

  for (const [name, build, reason] of rows) {
    test(`${name}: uniform 401, ${reason} in the audit log, no task decided`, async () => {
      const candidate = await build();
      const before = await h.auditRecords();
      const answer = await h.post('/v1/tasks', supportTask(), candidate);

      assert.equal(answer.status, 401, JSON.stringify(answer.body));
      assert.equal(answer.headers.get('www-authenticate'), 'Bearer realm="writ", error="invalid_token"');
      assert.match(answer.headers.get('content-type') ?? '', /^application\/problem\+json/);
      const { correlationId, ...body } = answer.body as Record<string, unknown>;
      assert.match(String(correlationId), /^[0-9a-f-]{36}$/);
      assert.equal(body.code, 'ERR_UNAUTHENTICATED');
      assert.equal(body.status, 401);
      bodies.set(name, body);
      assert.deepEqual(body, bodies.values().next().value, 'every refused credential gets the same answer');

      const added = (await h.auditRecords()).slice(before.length);
      const failures = added.filter((r) => r.type === 'authentication.failed');
      assert.equal(failures.length, 1, `one authentication.failed record, got ${JSON.stringify(added)}`);
      const record = failures[0]!;
      assert.equal(record.reason, reason, `audit detail: ${String(record.detail)}`);
      assert.equal(typeof record.detail, 'string');
      assert.deepEqual((record.data as Record<string, unknown>).endpoint, 'POST /v1/tasks');
      assert.equal(
        added.some((r) => r.type.startsWith('task.')),
        false,
        'no task was decided for a refused credential',
      );
    });
  }

  test('no refused row got a body different from another, except its correlationId', () => {
    assert.equal(bodies.size, rows.length, 'every row was refused and recorded');
    const [first, ...rest] = [...bodies.entries()];
    assert.ok(first);
    for (const [name, body] of rest) assert.deepEqual(body, first[1], `${name} differs from ${first[0]}`);
    assert.equal(JSON.stringify(first[1]).includes('ERR_TOKEN'), false, 'the precise reason never reaches the caller');
    assert.equal(JSON.stringify(first[1]).includes('ERR_IDENTITY'), false, 'the precise reason never reaches the caller');
  });

  test('the rows cover every failure reason an identity token can have', () => {
    const covered = new Set(rows.map(([, , reason]) => reason));
    for (const reason of [
      'ERR_TOKEN_ALGORITHM',
      'ERR_TOKEN_UNKNOWN_KEY',
      'ERR_TOKEN_SIGNATURE',
      'ERR_TOKEN_TRUST_DOMAIN',
      'ERR_TOKEN_ISSUER',
      'ERR_TOKEN_AUDIENCE',
      'ERR_TOKEN_EXPIRED',
      'ERR_TOKEN_NOT_YET_VALID',
      'ERR_TOKEN_MALFORMED',
      'ERR_IDENTITY_NOT_FOUND',
      'ERR_IDENTITY_INACTIVE',
    ]) {
      assert.ok(covered.has(reason), reason);
    }
  });
});
