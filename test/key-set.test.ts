/**
 * Trust-source key fetching against real local HTTP(S) servers serving JWKS
 * documents made from real keys: hostile responses are refused, refreshes are
 * rate-limited and shared, and an unreachable issuer never yields a key it
 * did not serve while cached keys keep working.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createManualClock, type ManualClock } from '../src/core/clock.js';
import { FetchJsonError, fetchJson, parseUntrustedJson, type FetchJsonErrorCode, type FetchJsonOptions } from '../src/identity/fetch-json.js';
import { KeySetError, createKeySet, parseKeyDocument, type KeySetErrorCode, type KeySetLocation, type KeySetOptions } from '../src/identity/key-set.js';

const T0 = 1_700_000_000_000;
const FETCH: FetchJsonOptions = { timeoutMs: 2000, maxBytes: 64 * 1024 };

// ---------------------------------------------------------------- fixtures

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

interface TestServer {
  readonly origin: string;
  readonly routes: Map<string, Handler>;
  hits(path: string): number;
  close(): Promise<void>;
}

async function startServer(routes: Record<string, Handler>, tls?: { key: string; cert: string }): Promise<TestServer> {
  const table = new Map(Object.entries(routes));
  const counts = new Map<string, number>();
  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const handler = table.get(path);
    if (handler === undefined) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    handler(req, res);
  };
  const server: Server = tls === undefined ? createHttpServer(handle) : createHttpsServer(tls, handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let closed = false;
  return {
    origin: `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    routes: table,
    hits: (path) => counts.get(path) ?? 0,
    async close() {
      if (closed) return;
      closed = true;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function json(body: unknown, contentType = 'application/json', delayMs = 0): Handler {
  return (_req, res) => {
    const text = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const send = () => res.writeHead(200, { 'content-type': contentType }).end(text);
    if (delayMs > 0) setTimeout(send, delayMs);
    else send();
  };
}

/** A handler serving whatever `current()` returns at request time. */
function live(current: () => unknown): Handler {
  return (req, res) => json(current())(req, res);
}

type KeyKind = 'ec' | 'rsa' | 'ed25519';

function keyPair(kind: KeyKind, rsaBits = 2048) {
  if (kind === 'ec') return generateKeyPairSync('ec', { namedCurve: 'P-256' });
  if (kind === 'rsa') return generateKeyPairSync('rsa', { modulusLength: rsaBits });
  return generateKeyPairSync('ed25519');
}

const ALG: Record<KeyKind, string> = { ec: 'ES256', rsa: 'RS256', ed25519: 'EdDSA' };

/** A public JWK of a fresh key, with kid and any extra members. */
function publicJwk(kind: KeyKind, kid: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { ...keyPair(kind).publicKey.export({ format: 'jwk' }), kid, alg: ALG[kind], use: 'sig', ...extra };
}

function jwks(...keys: unknown[]): { keys: unknown[] } {
  return { keys };
}

function keySet(location: KeySetLocation, clock: ManualClock, overrides: Partial<KeySetOptions> = {}) {
  const errors: Error[] = [];
  const set = createKeySet({
    location,
    use: 'sig',
    clock,
    fetch: FETCH,
    maxAgeMs: 300_000,
    minRefreshIntervalMs: 30_000,
    onRefreshError: (error) => errors.push(error),
    ...overrides,
  });
  return { set, errors };
}

function codeOf(error: unknown): FetchJsonErrorCode | KeySetErrorCode | undefined {
  return error instanceof FetchJsonError || error instanceof KeySetError ? error.code : undefined;
}

async function rejectsWith(promise: Promise<unknown>, code: FetchJsonErrorCode | KeySetErrorCode): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    assert.equal(codeOf(error), code, `expected ${code}, got ${String(error)}`);
    return error;
  }
  assert.fail(`expected rejection with ${code}`);
}

// ---------------------------------------------------------------- fetchJson

describe('fetchJson refuses hostile responses', () => {
  let server: TestServer;
  const good = jwks(publicJwk('ec', 'good'));
  before(async () => {
    server = await startServer({
      '/good': json(good),
      '/jwk-set': json(good, 'application/jwk-set+json; charset=utf-8'),
      '/redirect': (_req, res) => res.writeHead(301, { location: '/good', 'content-type': 'application/json' }).end('{}'),
      '/found': (_req, res) => res.writeHead(302, { location: '/good' }).end(),
      '/error': (_req, res) => res.writeHead(500, { 'content-type': 'application/json' }).end('{}'),
      '/html': json(good, 'text/html'),
      '/no-type': (_req, res) => res.writeHead(200).end(JSON.stringify(good)),
      '/gzip': (_req, res) => res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' }).end(JSON.stringify(good)),
      '/not-json': json('<html>keys</html>'),
      '/not-utf8': json(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d])),
      '/big-declared': json({ pad: 'x'.repeat(4096) }),
      '/big-chunked': (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"pad":"');
        const chunk = 'x'.repeat(512);
        const timer = setInterval(() => {
          if (!res.write(chunk) || res.destroyed) clearInterval(timer);
        }, 1);
        res.on('close', () => clearInterval(timer));
      },
      '/silent': () => {
        // Never answers.
      },
      '/dribble': (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"keys": [');
        // Headers and part of the body, then nothing: the timeout covers the body too.
      },
      '/proto': json('{"keys": [], "__proto__": {"polluted": true}}'),
      '/proto-nested': json('{"keys": [{"kid": "a", "\\u005f_proto__": {"polluted": true}}]}'),
      '/constructor': json('{"keys": [], "constructor": {"prototype": {"polluted": true}}}'),
    });
  });
  after(() => server.close());

  test('a 200 JSON body parses; application/*+json with parameters is JSON', async () => {
    assert.deepEqual(await fetchJson(`${server.origin}/good`, FETCH), good);
    assert.deepEqual(await fetchJson(`${server.origin}/jwk-set`, FETCH), good);
  });

  test('a redirect is refused, never followed, even to a good JWKS', async () => {
    const before = server.hits('/good');
    const error = await rejectsWith(fetchJson(`${server.origin}/redirect`, FETCH), 'redirect');
    assert.equal((error as FetchJsonError).status, 301);
    await rejectsWith(fetchJson(`${server.origin}/found`, FETCH), 'redirect');
    assert.equal(server.hits('/good'), before);
  });

  test('a non-200 status is refused', async () => {
    const error = await rejectsWith(fetchJson(`${server.origin}/error`, FETCH), 'http_status');
    assert.equal((error as FetchJsonError).status, 500);
  });

  test('a non-JSON content-type, a missing one or a compressed body is refused', async () => {
    await rejectsWith(fetchJson(`${server.origin}/html`, FETCH), 'content_type');
    await rejectsWith(fetchJson(`${server.origin}/no-type`, FETCH), 'content_type');
    await rejectsWith(fetchJson(`${server.origin}/gzip`, FETCH), 'content_type');
  });

  test('a body that is not JSON or not UTF-8 is refused', async () => {
    await rejectsWith(fetchJson(`${server.origin}/not-json`, FETCH), 'malformed_json');
    await rejectsWith(fetchJson(`${server.origin}/not-utf8`, FETCH), 'malformed_json');
  });

  test('a body over maxBytes is refused, declared or streamed', async () => {
    const small = { ...FETCH, maxBytes: 1024 };
    await rejectsWith(fetchJson(`${server.origin}/big-declared`, small), 'too_large');
    await rejectsWith(fetchJson(`${server.origin}/big-chunked`, small), 'too_large');
  });

  test('a server that never answers fails with timeout within about timeoutMs', async () => {
    const options = { ...FETCH, timeoutMs: 300 };
    for (const path of ['/silent', '/dribble']) {
      const started = Date.now();
      await rejectsWith(fetchJson(`${server.origin}${path}`, options), 'timeout');
      const took = Date.now() - started;
      assert.ok(took >= 250 && took < 1500, `${path} took ${took} ms`);
    }
  });

  test('__proto__ and constructor.prototype payloads are refused and pollute nothing', async () => {
    for (const path of ['/proto', '/proto-nested', '/constructor']) {
      await rejectsWith(fetchJson(`${server.origin}${path}`, FETCH), 'malformed_json');
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted'), false);
  });

  test('only absolute http(s) URLs without user info are fetched', async () => {
    for (const url of ['file:///etc/passwd', 'ftp://127.0.0.1/keys', 'data:application/json,{}', 'not a url', `http://user:pw@127.0.0.1/keys`]) {
      await rejectsWith(fetchJson(url, FETCH), 'invalid_url');
    }
  });

  test('the error names the URL without query or user info', async () => {
    const error = (await rejectsWith(fetchJson(`${server.origin}/error?token=s3cret#frag`, FETCH), 'http_status')) as FetchJsonError;
    assert.equal(error.url, `${server.origin}/error`);
    assert.equal(error.message.includes('s3cret'), false);
  });
});

describe('parseUntrustedJson', () => {
  test('forbidden members are refused wherever they are, escaped or not', () => {
    for (const text of [
      '{"__proto__": {"x": 1}}',
      '{"a": [{"__proto__": null}]}',
      '{"\\u005f\\u005fproto\\u005f\\u005f": {}}',
      '{"constructor": {"prototype": {"x": 1}}}',
    ]) {
      assert.throws(() => parseUntrustedJson(text), SyntaxError, text);
    }
  });

  test('ordinary documents, including a constructor member without prototype, parse', () => {
    assert.deepEqual(parseUntrustedJson('{"constructor": "x", "proto": 1, "keys": []}'), { constructor: 'x', proto: 1, keys: [] });
  });
});

// ---------------------------------------------------------------- key selection

describe('parseKeyDocument skips keys that must not verify, without failing the set', () => {
  test('private, symmetric, kid-less, wrong-use, duplicated, weak and unimportable keys are skipped', () => {
    const ecPrivate = { ...keyPair('ec').privateKey.export({ format: 'jwk' }), kid: 'private-ec', use: 'sig' };
    const rsaPrivate = { ...keyPair('rsa').privateKey.export({ format: 'jwk' }), kid: 'private-rsa' };
    const document = jwks(
      publicJwk('ec', 'ec'),
      publicJwk('rsa', 'rsa'),
      publicJwk('ed25519', 'ed'),
      { ...publicJwk('ec', 'no-use'), use: undefined },
      ecPrivate,
      rsaPrivate,
      { kty: 'oct', k: 'c2VjcmV0', kid: 'oct', alg: 'HS256' },
      { ...publicJwk('ec', 'x'), kid: undefined },
      { ...publicJwk('ec', 'x'), kid: '' },
      publicJwk('ec', 'enc', { use: 'enc' }),
      publicJwk('ec', 'dup'),
      publicJwk('ec', 'dup'),
      publicJwk('ec', 'bad-x', { x: 'AAAA' }),
      { ...keyPair('rsa', 1024).publicKey.export({ format: 'jwk' }), kid: 'rsa-1024' },
      publicJwk('ec', 'hs-alg', { alg: 'HS256' }),
      publicJwk('ec', 'none-alg', { alg: 'none' }),
      publicJwk('ec', 'encrypt-only', { key_ops: ['encrypt'] }),
      publicJwk('ec', 'verify-op', { key_ops: ['verify'] }),
      'not a key',
      null,
      [1, 2],
    );
    const { keys } = parseKeyDocument(document, 'sig');
    assert.deepEqual([...keys.keys()].sort(), ['ec', 'ed', 'no-use', 'rsa', 'verify-op']);
    assert.equal(keys.get('ec')?.key.asymmetricKeyType, 'ec');
    assert.equal(keys.get('rsa')?.key.asymmetricKeyType, 'rsa');
    assert.equal(keys.get('ed')?.key.asymmetricKeyType, 'ed25519');
    assert.equal(keys.get('ec')?.key.type, 'public');
    assert.equal(keys.get('ec')?.alg, 'ES256');
    assert.equal(keys.get('no-use')?.alg, 'ES256');
  });

  test('a duplicated kid is dropped even when one copy would not import', () => {
    const { keys } = parseKeyDocument(jwks(publicJwk('ec', 'dup'), publicJwk('ec', 'dup', { x: 'AAAA' })), 'sig');
    assert.equal(keys.size, 0);
  });

  test('a document that is not {keys: [...]} or has more than 100 keys is a failure', () => {
    for (const document of [null, [], 'keys', {}, { keys: {} }, { keys: 'x' }, { keys: Array.from({ length: 101 }, (_, i) => ({ kid: `k${i}` })) }]) {
      assert.throws(
        () => parseKeyDocument(document, 'sig'),
        (error: unknown) => codeOf(error) === 'invalid_jwks',
      );
    }
    assert.equal(parseKeyDocument({ keys: [] }, 'sig').keys.size, 0);
  });
});

// ---------------------------------------------------------------- key sets over HTTP

describe('OIDC discovery', () => {
  test('discovery finds jwks_uri and its keys', async () => {
    const key = publicJwk('ec', 'k1');
    const server = await startServer({});
    try {
      const issuer = `${server.origin}/tenant`;
      server.routes.set('/tenant/.well-known/openid-configuration', json({ issuer, jwks_uri: `${server.origin}/keys` }));
      server.routes.set('/keys', json(jwks(key)));
      const { set } = keySet({ kind: 'oidc-discovery', issuer }, createManualClock(T0));
      const found = await set.lookup('k1');
      assert.equal(found.ok, true);
      assert.equal(found.ok && found.key.kid, 'k1');
      assert.equal(found.ok && found.key.alg, 'ES256');
      assert.deepEqual(set.kids(), ['k1']);
      assert.equal(server.hits('/keys'), 1);
    } finally {
      await server.close();
    }
  });

  test('an issuer with a trailing slash has it removed before the well-known path, and must match exactly', async () => {
    const server = await startServer({});
    try {
      const issuer = `${server.origin}/tenant/`;
      server.routes.set('/tenant/.well-known/openid-configuration', json({ issuer, jwks_uri: `${server.origin}/keys` }));
      server.routes.set('/keys', json(jwks(publicJwk('ec', 'k1'))));
      const { set } = keySet({ kind: 'oidc-discovery', issuer }, createManualClock(T0));
      await set.refresh();
      assert.deepEqual(set.kids(), ['k1']);
    } finally {
      await server.close();
    }
  });

  test('a discovery document naming another issuer is refused and its keys never fetched', async () => {
    const server = await startServer({});
    try {
      const issuer = `${server.origin}/tenant`;
      for (const stated of [`${issuer}/`, `${server.origin}/other`, issuer.toUpperCase(), undefined]) {
        server.routes.set('/tenant/.well-known/openid-configuration', json({ issuer: stated, jwks_uri: `${server.origin}/keys` }));
        server.routes.set('/keys', json(jwks(publicJwk('ec', 'k1'))));
        const { set, errors } = keySet({ kind: 'oidc-discovery', issuer }, createManualClock(T0));
        await rejectsWith(set.refresh(), stated === undefined ? 'invalid_discovery' : 'issuer_mismatch');
        const found = await set.lookup('k1');
        assert.equal(found.ok === false && found.reason, 'unreachable');
        assert.ok(errors.length >= 1);
      }
      assert.equal(server.hits('/keys'), 0);
    } finally {
      await server.close();
    }
  });

  test('a jwks_uri that is not http(s) is refused', async () => {
    const server = await startServer({});
    try {
      const issuer = `${server.origin}/tenant`;
      server.routes.set('/tenant/.well-known/openid-configuration', json({ issuer, jwks_uri: 'file:///etc/passwd' }));
      const { set } = keySet({ kind: 'oidc-discovery', issuer }, createManualClock(T0));
      await rejectsWith(set.refresh(), 'invalid_jwks_uri');
    } finally {
      await server.close();
    }
  });
});

describe('refresh rate limit and sharing', () => {
  test('an unknown kid triggers exactly one refresh; a burst of 50 in the window causes at most one fetch', async () => {
    const clock = createManualClock(T0);
    const server = await startServer({ '/jwks': json(jwks(publicJwk('ec', 'k1'))) });
    try {
      const { set } = keySet({ kind: 'jwks', url: `${server.origin}/jwks` }, clock);
      await set.refresh();
      assert.equal(server.hits('/jwks'), 1);

      // Within the window right after the warm load: no I/O at all.
      const early = await set.lookup('unknown-0');
      assert.equal(early.ok === false && early.reason, 'unknown_kid');
      assert.equal(server.hits('/jwks'), 1);

      clock.advance(30_000);
      const burst = await Promise.all(Array.from({ length: 50 }, () => set.lookup(randomUUID())));
      assert.ok(burst.every((r) => r.ok === false && r.reason === 'unknown_kid'));
      assert.equal(server.hits('/jwks'), 2);

      for (let i = 0; i < 50; i++) {
        clock.advance(500);
        const result = await set.lookup(randomUUID());
        assert.equal(result.ok === false && result.reason, 'unknown_kid');
      }
      assert.equal(server.hits('/jwks'), 2);
      assert.equal((await set.lookup('k1')).ok, true);

      clock.advance(5_000);
      await set.lookup(randomUUID());
      assert.equal(server.hits('/jwks'), 3);
    } finally {
      await server.close();
    }
  });

  test('concurrent lookups on a cold set share one fetch', async () => {
    const server = await startServer({ '/jwks': json(jwks(publicJwk('ec', 'k1')), 'application/json', 50) });
    try {
      const { set } = keySet({ kind: 'jwks', url: `${server.origin}/jwks` }, createManualClock(T0));
      const results = await Promise.all([...Array.from({ length: 20 }, () => set.lookup('k1')), set.refresh().then(() => set.lookup('k1'))]);
      assert.ok(results.every((r) => r.ok));
      assert.equal(server.hits('/jwks'), 1);
    } finally {
      await server.close();
    }
  });

  test('a stale set is refreshed on lookup, once per max age', async () => {
    const clock = createManualClock(T0);
    const server = await startServer({ '/jwks': json(jwks(publicJwk('ec', 'k1'))) });
    try {
      const { set } = keySet({ kind: 'jwks', url: `${server.origin}/jwks` }, clock, { maxAgeMs: 60_000 });
      assert.equal((await set.lookup('k1')).ok, true);
      clock.advance(59_999);
      assert.equal((await set.lookup('k1')).ok, true);
      assert.equal(server.hits('/jwks'), 1);
      clock.advance(1);
      assert.equal((await set.lookup('k1')).ok, true);
      assert.equal(server.hits('/jwks'), 2);
    } finally {
      await server.close();
    }
  });
});

describe('rotation and outages', () => {
  test('a new kid on the server is picked up on lookup, and a removed kid is dropped', async () => {
    const clock = createManualClock(T0);
    const a = publicJwk('ec', 'a');
    const b = publicJwk('ed25519', 'b');
    let served = jwks(a);
    const server = await startServer({ '/jwks': live(() => served) });
    try {
      const { set } = keySet({ kind: 'jwks', url: `${server.origin}/jwks` }, clock);
      await set.refresh();
      served = jwks(a, b);
      clock.advance(30_000);
      const found = await set.lookup('b');
      assert.equal(found.ok && found.key.key.asymmetricKeyType, 'ed25519');
      assert.deepEqual(set.kids().sort(), ['a', 'b']);

      served = jwks(b);
      clock.advance(300_000);
      const removed = await set.lookup('a');
      assert.equal(removed.ok === false && removed.reason, 'unknown_kid');
      assert.equal(set.cached('a'), undefined);
    } finally {
      await server.close();
    }
  });

  test('issuer down after a warm load: the cached kid still resolves, an unknown kid is unreachable', async () => {
    const clock = createManualClock(T0);
    const server = await startServer({ '/jwks': json(jwks(publicJwk('rsa', 'k1'))) });
    const url = `${server.origin}/jwks`;
    const { set, errors } = keySet({ kind: 'jwks', url }, clock);
    try {
      await set.refresh();
    } finally {
      await server.close();
    }
    clock.advance(600_000); // past max age and the rate-limit window
    const cached = await set.lookup('k1');
    assert.equal(cached.ok, true);
    assert.equal(errors.length, 1);
    assert.equal(codeOf(errors[0]), 'network');

    const unknown = await set.lookup('other');
    assert.equal(unknown.ok === false && unknown.reason, 'unreachable');
    clock.advance(30_000);
    const again = await set.lookup('other');
    assert.equal(again.ok === false && again.reason, 'unreachable');
    assert.equal(errors.length, 2);
    await rejectsWith(set.refresh(), 'network');
    assert.equal((await set.lookup('k1')).ok, true);
  });

  test('a refresh that returns garbage keeps the keys already held', async () => {
    const clock = createManualClock(T0);
    let served: unknown = jwks(publicJwk('ec', 'k1'));
    const server = await startServer({ '/jwks': live(() => served) });
    try {
      const { set } = keySet({ kind: 'jwks', url: `${server.origin}/jwks` }, clock);
      await set.refresh();
      served = { keys: 'none' };
      await rejectsWith(set.refresh(), 'invalid_jwks');
      assert.deepEqual(set.kids(), ['k1']);
      assert.equal((await set.lookup('k1')).ok, true);
    } finally {
      await server.close();
    }
  });

  test('never loaded and the issuer down: unreachable, and a lookup never throws', async () => {
    const server = await startServer({});
    const url = `${server.origin}/jwks`;
    await server.close();
    const { set, errors } = keySet({ kind: 'jwks', url }, createManualClock(T0), {
      onRefreshError: () => {
        throw new Error('a broken logger');
      },
    });
    const result = await set.lookup('k1');
    assert.equal(result.ok === false && result.reason, 'unreachable');
    assert.equal(errors.length, 0);
    await rejectsWith(set.refresh(), 'network');
    assert.deepEqual(set.kids(), []);
  });
});

describe('SPIFFE bundles and files', () => {
  function bundle(hint: number | undefined) {
    return {
      ...(hint === undefined ? {} : { spiffe_refresh_hint: hint }),
      spiffe_sequence: 1,
      keys: [
        publicJwk('ec', 'jwt-1', { use: 'jwt-svid' }),
        publicJwk('ec', 'x509-1', { use: 'x509-svid' }),
        publicJwk('ec', 'sig-1', { use: 'sig' }),
        publicJwk('ec', 'no-use', { use: undefined }),
      ],
    };
  }

  test('only jwt-svid keys are kept, and spiffe_refresh_hint shortens the max age', async () => {
    const clock = createManualClock(T0);
    const server = await startServer({ '/bundle': json(bundle(60)) });
    try {
      const { set } = createKeySetFor({ kind: 'spiffe-bundle', url: `${server.origin}/bundle` }, clock);
      assert.equal((await set.lookup('jwt-1')).ok, true);
      assert.deepEqual(set.kids(), ['jwt-1']);
      clock.advance(59_000);
      assert.equal((await set.lookup('jwt-1')).ok, true);
      assert.equal(server.hits('/bundle'), 1);
      clock.advance(1_000);
      assert.equal((await set.lookup('jwt-1')).ok, true);
      assert.equal(server.hits('/bundle'), 2);
    } finally {
      await server.close();
    }
  });

  test('a refresh hint longer than maxAgeMs does not lengthen it', async () => {
    const clock = createManualClock(T0);
    const server = await startServer({ '/bundle': json(bundle(86_400)) });
    try {
      const { set } = createKeySetFor({ kind: 'spiffe-bundle', url: `${server.origin}/bundle` }, clock);
      await set.lookup('jwt-1');
      clock.advance(300_000);
      await set.lookup('jwt-1');
      assert.equal(server.hits('/bundle'), 2);
    } finally {
      await server.close();
    }
  });

  test('a spiffe-bundle location needs use jwt-svid', () => {
    assert.throws(() => keySet({ kind: 'spiffe-bundle', url: 'https://example.test/bundle' }, createManualClock(T0)), TypeError);
  });

  test('a file location is re-read on refresh', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'writ-keyset-'));
    try {
      const path = join(dir, 'bundle.json');
      const clock = createManualClock(T0);
      writeFileSync(path, JSON.stringify(jwks(publicJwk('ec', 'a', { use: 'jwt-svid' }))));
      const { set, errors } = createKeySetFor({ kind: 'file', path }, clock);
      assert.equal((await set.lookup('a')).ok, true);

      writeFileSync(path, JSON.stringify(jwks(publicJwk('ec', 'b', { use: 'jwt-svid' }))));
      clock.advance(30_000);
      assert.equal((await set.lookup('b')).ok, true);
      assert.deepEqual(set.kids(), ['b']);

      writeFileSync(path, '{"keys": [], "__proto__": {}}');
      await rejectsWith(set.refresh(), 'file_malformed');
      writeFileSync(path, JSON.stringify({ pad: 'x'.repeat(FETCH.maxBytes) }));
      await rejectsWith(set.refresh(), 'file_too_large');
      rmSync(path);
      await rejectsWith(set.refresh(), 'file_unreadable');
      assert.deepEqual(set.kids(), ['b']);
      assert.equal(errors.length, 3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  function createKeySetFor(location: KeySetLocation, clock: ManualClock) {
    return keySet(location, clock, { use: 'jwt-svid' });
  }
});

describe('https with a private CA', () => {
  let dir: string;
  let tls: { key: string; cert: string };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'writ-keyset-tls-'));
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-days', '1',
        '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    tls = { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('keys are fetched when the ca is given, refused without it', async () => {
    const server = await startServer({ '/jwks': json(jwks(publicJwk('ec', 'k1'))) }, tls);
    try {
      const location: KeySetLocation = { kind: 'jwks', url: `${server.origin}/jwks` };
      const trusted = keySet(location, createManualClock(T0), { fetch: { ...FETCH, ca: tls.cert } });
      assert.equal((await trusted.set.lookup('k1')).ok, true);

      const untrusted = keySet(location, createManualClock(T0));
      const result = await untrusted.set.lookup('k1');
      assert.equal(result.ok === false && result.reason, 'unreachable');
      assert.equal(codeOf(untrusted.errors[0]), 'network');
      assert.equal(((untrusted.errors[0] as FetchJsonError).cause as NodeJS.ErrnoException).code, 'DEPTH_ZERO_SELF_SIGNED_CERT');
      assert.equal(server.hits('/jwks'), 1);
    } finally {
      await server.close();
    }
  });
});

describe('createKeySet validates its options up front', () => {
  test('bad locations and intervals throw at construction', () => {
    const clock = createManualClock(T0);
    const bad: Partial<KeySetOptions>[] = [
      { location: { kind: 'jwks', url: 'ftp://example.test/keys' } },
      { location: { kind: 'jwks', url: 'not a url' } },
      { location: { kind: 'oidc-discovery', issuer: 'file:///etc' } },
      { location: { kind: 'file', path: '' } },
      { maxAgeMs: 0 },
      { minRefreshIntervalMs: -1 },
      { fetch: { timeoutMs: 0, maxBytes: 1024 } },
      { fetch: { timeoutMs: 1000, maxBytes: 0.5 } },
    ];
    for (const overrides of bad) {
      assert.throws(() => keySet({ kind: 'jwks', url: 'https://example.test/keys' }, clock, overrides), Error, JSON.stringify(overrides));
    }
  });
});
