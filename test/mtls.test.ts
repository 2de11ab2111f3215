/**
 * Writ over a real mTLS listener: an X.509-SVID authenticates an identity with
 * no bearer token, the task token it gets is bound to that certificate (RFC
 * 8705 `cnf.x5t#S256`), and a bound token is refused over any connection that
 * does not present that certificate. Hostile certificates get the uniform 401
 * with the precise reason in the audit log. With `clientCertificates:
 * required`, nothing under /v1 answers without a certificate.
 *
 * Real parts only: certificates from a throwaway PKI, a real TLS handshake per
 * request (`agent: false`), Writ's own HTTPS listener.
 */
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import tls from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { createManualClock } from '../src/core/clock.js';
import { refreshTlsMaterial } from '../src/server/app.js';
import { claimsOf, startHarness, supportTask, type Harness } from './helpers/harness.js';
import { createCa, issueServerCert, issueSvid, type IssuedCert, type TestCa } from './helpers/pki.js';

const AGENT_A = 'spiffe://prod.example/agent/support';
const AGENT_B = 'spiffe://prod.example/agent/billing';
const SUSPENDED = 'spiffe://prod.example/agent/suspended';
const STRANGER = 'spiffe://prod.example/agent/stranger';
const FOREIGN = 'spiffe://other.example/agent/support';
const HOUR = 3_600_000;
const WWW_AUTHENTICATE = 'Bearer realm="writ", error="invalid_token"';

/** A client certificate (leaf first, then intermediates) and its key. */
type ClientCert = Pick<IssuedCert, 'chainPem' | 'keyPem'>;

interface Answer {
  readonly status: number;
  readonly body: any;
  readonly headers: Record<string, string | string[] | undefined>;
}

interface Pki {
  readonly serverCa: TestCa;
  readonly svidA: IssuedCert;
  readonly svidB: IssuedCert;
  readonly svidSuspended: IssuedCert;
  readonly svidStranger: IssuedCert;
  /** A's SPIFFE ID from a CA that is not in the bundle. */
  readonly rogueA: IssuedCert;
  /** A's SPIFFE ID, from the trusted intermediate, expired an hour ago. */
  readonly expiredA: IssuedCert;
  /** A SPIFFE ID of a trust domain Writ has no bundle for, from the trusted intermediate. */
  readonly foreign: IssuedCert;
  /** A TLS server certificate: chains to nothing trusted, has no SPIFFE ID. */
  readonly notAnSvid: IssuedCert;
}

const clock = createManualClock();
let pki: Pki;
let dir: string;

// Bearer identities for prod.example come from its own JWT bundle: Writ's dev
// issuer never vouches for a trust domain a configured source owns.
const jwtSigner = generateKeyPairSync('ec', { namedCurve: 'P-256' });
/** A JWT-SVID for `id` from prod.example's JWT signing key. */
function svidToken(id: string): Promise<string> {
  const iat = Math.floor(clock.now() / 1000);
  return new SignJWT({ sub: id, aud: ['writ'] }).setProtectedHeader({ alg: 'ES256', kid: 'prod-jwt-1', typ: 'JWT' }).setIssuedAt(iat).setExpirationTime(iat + 300).sign(jwtSigner.privateKey);
}

/** The `x5t#S256` of a PEM certificate, from its DER, without Writ's code. */
function thumbprintOf(certPem: string): string {
  const body = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(certPem)?.[1] ?? '';
  return createHash('sha256').update(Buffer.from(body.replace(/\s+/g, ''), 'base64')).digest('base64url');
}

/** One HTTPS request, on its own TLS connection unless `agent` is given, presenting `client` when given. */
function request(
  port: number,
  method: 'GET' | 'POST',
  path: string,
  options: { body?: unknown; bearer?: string; client?: ClientCert; agent?: https.Agent } = {},
): Promise<Answer> {
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        ca: pki.serverCa.certPem,
        agent: options.agent ?? false,
        ...(options.client === undefined ? {} : { cert: options.client.chainPem, key: options.client.keyPem }),
        headers: {
          ...(payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) }),
          ...(options.bearer === undefined ? {} : { authorization: `Bearer ${options.bearer}` }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          try {
            body = text.length > 0 ? JSON.parse(text) : undefined;
          } catch {
            // leave as text
          }
          resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** A Writ serving HTTPS with client certificates `mode`, trusting prod.example's X.509 bundle. */
async function startTlsWrit(mode: 'optional' | 'required'): Promise<{ h: Harness; port: number }> {
  const h = await startHarness({
    clock,
    config: {
      server: { tls: { certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key'), clientCertificates: mode } },
      identity: {
        sources: [
          {
            type: 'spiffe',
            name: 'prod',
            trustDomain: 'prod.example',
            x509BundleFile: join(dir, 'prod.example.bundle.pem'),
            jwtBundle: { file: join(dir, 'prod.example.jwt-bundle.json') },
          },
        ],
      },
    },
  });
  await h.registerAgent(AGENT_A);
  await h.registerAgent(AGENT_B);
  await h.registerAgent(SUSPENDED);
  await h.writ.registry.transition(SUSPENDED, ['active'], 'suspended');
  return { h, port: (h.app.server.address() as AddressInfo).port };
}

before(async () => {
  const now = clock.now();
  const validity = { notBefore: new Date(now - 24 * HOUR), notAfter: new Date(now + 24 * HOUR) };
  const root = await createCa({ name: 'prod.example root', ...validity });
  const intermediate = await createCa({ name: 'prod.example intermediate', parent: root, ...validity });
  const rogue = await createCa({ name: 'rogue root', ...validity });
  const serverCa = await createCa({ name: 'writ server ca', ...validity });
  const server = await issueServerCert(serverCa, ['127.0.0.1']);
  pki = {
    serverCa,
    svidA: await issueSvid(intermediate, AGENT_A),
    svidB: await issueSvid(intermediate, AGENT_B),
    svidSuspended: await issueSvid(intermediate, SUSPENDED),
    svidStranger: await issueSvid(intermediate, STRANGER),
    rogueA: await issueSvid(rogue, AGENT_A),
    expiredA: await issueSvid(intermediate, AGENT_A, { notBefore: new Date(now - 2 * HOUR), notAfter: new Date(now - HOUR) }),
    foreign: await issueSvid(intermediate, FOREIGN),
    notAnSvid: await issueServerCert(serverCa, ['agent.prod.example'], { extKeyUsage: ['1.3.6.1.5.5.7.3.2'] }),
  };
  dir = mkdtempSync(join(tmpdir(), 'writ-mtls-'));
  writeFileSync(join(dir, 'server.crt'), server.chainPem);
  writeFileSync(join(dir, 'server.key'), server.keyPem);
  writeFileSync(join(dir, 'prod.example.bundle.pem'), root.certPem);
  writeFileSync(join(dir, 'prod.example.jwt-bundle.json'), JSON.stringify({ keys: [{ ...jwtSigner.publicKey.export({ format: 'jwk' }), kid: 'prod-jwt-1', use: 'jwt-svid' }] }));
});

after(() => rmSync(dir, { recursive: true, force: true }));

/** Asserts the uniform 401 and returns its body without the correlationId. */
function assertUniform401(answer: Answer): Record<string, unknown> {
  assert.equal(answer.status, 401, JSON.stringify(answer.body));
  assert.equal(answer.headers['www-authenticate'], WWW_AUTHENTICATE);
  const { correlationId, ...body } = answer.body as Record<string, unknown>;
  assert.match(String(correlationId), /^[0-9a-f-]{36}$/);
  assert.equal(body.code, 'ERR_UNAUTHENTICATED');
  return body;
}

/** The audit records appended by `act`. */
async function auditedDuring(h: Harness, act: () => Promise<Answer>): Promise<{ answer: Answer; added: Awaited<ReturnType<Harness['auditRecords']>> }> {
  const before = (await h.auditRecords()).length;
  const answer = await act();
  return { answer, added: (await h.auditRecords()).slice(before) };
}

describe('mTLS with clientCertificates: optional', () => {
  let h: Harness;
  let port: number;
  let boundToken: string;
  let boundTaskId: string;
  /** The 401 body of a plain bad bearer token, to hold certificate refusals against. */
  let reference: Record<string, unknown>;

  before(async () => {
    ({ h, port } = await startTlsWrit('optional'));
    reference = assertUniform401(await request(port, 'POST', '/v1/tasks', { body: supportTask(), bearer: 'not-a-token' }));
  });
  after(() => h.close());

  test('an X.509-SVID alone (no bearer) gets a task, its token bound to that certificate', async () => {
    const { answer, added } = await auditedDuring(h, () => request(port, 'POST', '/v1/tasks', { body: supportTask(), client: pki.svidA }));
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.equal(answer.body.task.identity, AGENT_A);
    boundToken = answer.body.token;
    boundTaskId = answer.body.task.id;
    const claims = claimsOf(boundToken);
    assert.equal(claims.sub, AGENT_A);
    assert.deepEqual(claims.cnf, { 'x5t#S256': thumbprintOf(pki.svidA.chainPem) });
    assert.notEqual(claims.cnf['x5t#S256'], thumbprintOf(pki.svidB.chainPem));
    assert.equal(added.filter((r) => r.type === 'authentication.failed').length, 0);
  });

  test('the bound token is allowed at the action check over a connection presenting that certificate', async () => {
    const answer = await request(port, 'POST', '/v1/authorize', { body: { token: boundToken, action: 'read', resource: 'db:orders/1' }, client: pki.svidA });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.allowed, true, JSON.stringify(answer.body));
  });

  for (const [name, client] of [
    ['another valid SVID', () => pki.svidB],
    ['no client certificate', () => undefined],
    ['an untrusted certificate with the same SPIFFE ID', () => pki.rogueA],
  ] as const) {
    test(`the bound token is refused (ERR_TOKEN_BINDING) at the action check over ${name}`, async () => {
      const presented = client();
      const { answer, added } = await auditedDuring(h, () =>
        request(port, 'POST', '/v1/authorize', {
          body: { token: boundToken, action: 'read', resource: 'db:orders/1' },
          ...(presented === undefined ? {} : { client: presented }),
        }),
      );
      assert.equal(answer.status, 200);
      assert.equal(answer.body.allowed, false);
      assert.equal(answer.body.reason, 'ERR_TOKEN_BINDING');
      const record = added.find((r) => r.id === answer.body.auditId);
      assert.equal(record?.type, 'action.check');
      assert.equal(record?.reason, 'ERR_TOKEN_BINDING');
    });
  }

  test('the bound token reads its task only over a connection presenting that certificate', async () => {
    const own = await request(port, 'GET', `/v1/tasks/${boundTaskId}`, { bearer: boundToken, client: pki.svidA });
    assert.equal(own.status, 200, JSON.stringify(own.body));
    assert.equal(own.body.task.id, boundTaskId);
    for (const client of [undefined, pki.svidB]) {
      const { answer, added } = await auditedDuring(h, () =>
        request(port, 'GET', `/v1/tasks/${boundTaskId}`, { bearer: boundToken, ...(client === undefined ? {} : { client }) }),
      );
      assert.deepEqual(assertUniform401(answer), reference);
      const failures = added.filter((r) => r.type === 'authentication.failed');
      assert.equal(failures.length, 1);
      assert.equal(failures[0]?.reason, 'ERR_TOKEN_BINDING');
      assert.equal((failures[0]?.data as Record<string, unknown>).endpoint, 'GET /v1/tasks/{id}');
    }
  });

  const hostile: readonly (readonly [name: string, client: () => ClientCert, bearer: (() => Promise<string>) | undefined, reason: string])[] = [
    ['a certificate that does not chain to the bundle (another CA)', () => pki.rogueA, undefined, 'ERR_CERT_UNTRUSTED'],
    ['an untrusted certificate even with a valid bearer for the same identity', () => pki.rogueA, () => svidToken(AGENT_A), 'ERR_CERT_UNTRUSTED'],
    ['an expired certificate', () => pki.expiredA, undefined, 'ERR_CERT_EXPIRED'],
    ['an SVID of a trust domain without a bundle', () => pki.foreign, undefined, 'ERR_CERT_UNTRUSTED'],
    ['a certificate that is not an X.509-SVID', () => pki.notAnSvid, undefined, 'ERR_CERT_INVALID'],
    ['the SVID of an unregistered identity', () => pki.svidStranger, undefined, 'ERR_IDENTITY_NOT_FOUND'],
    ['the SVID of a suspended identity', () => pki.svidSuspended, undefined, 'ERR_IDENTITY_INACTIVE'],
    ["A's certificate with a JWT-SVID bearer for B", () => pki.svidA, () => svidToken(AGENT_B), 'ERR_IDENTITY_MISMATCH'],
  ];

  for (const [name, client, bearer, reason] of hostile) {
    test(`${name}: uniform 401 at POST /v1/tasks, ${reason} in the audit log, no task decided`, async () => {
      const token = bearer === undefined ? undefined : await bearer();
      const { answer, added } = await auditedDuring(h, () =>
        request(port, 'POST', '/v1/tasks', { body: supportTask(), client: client(), ...(token === undefined ? {} : { bearer: token }) }),
      );
      assert.deepEqual(assertUniform401(answer), reference, 'a refused certificate gets the same answer as a refused token');
      const failures = added.filter((r) => r.type === 'authentication.failed');
      assert.equal(failures.length, 1, JSON.stringify(added));
      assert.equal(failures[0]?.reason, reason, String(failures[0]?.detail));
      assert.equal(
        added.some((r) => r.type.startsWith('task.')),
        false,
        'no task was decided',
      );
    });
  }

  test("A's certificate with B's task token is refused at GET /v1/tasks/{id} (ERR_IDENTITY_MISMATCH)", async () => {
    const granted = await request(port, 'POST', '/v1/tasks', { body: supportTask(), bearer: await svidToken(AGENT_B) });
    assert.equal(granted.status, 201, JSON.stringify(granted.body));
    const path = `/v1/tasks/${granted.body.task.id}`;
    assert.equal((await request(port, 'GET', path, { bearer: granted.body.token })).status, 200, 'B reads its task without a certificate');
    const { answer, added } = await auditedDuring(h, () => request(port, 'GET', path, { bearer: granted.body.token, client: pki.svidA }));
    assert.deepEqual(assertUniform401(answer), reference);
    const failures = added.filter((r) => r.type === 'authentication.failed');
    assert.equal(failures.length, 1, JSON.stringify(added));
    assert.equal(failures[0]?.reason, 'ERR_IDENTITY_MISMATCH');
  });

  test('a client that resumes TLS sessions keeps authenticating with an SVID issued by an intermediate', async () => {
    // Node's https agents cache TLS sessions; every request here opens a new connection that may resume one.
    const agent = new https.Agent({ keepAlive: false, maxCachedSessions: 10 });
    try {
      for (let attempt = 1; attempt <= 3; attempt++) {
        const { answer, added } = await auditedDuring(h, () => request(port, 'POST', '/v1/tasks', { body: supportTask(), client: pki.svidA, agent }));
        assert.equal(answer.status, 201, `connection ${attempt}: ${JSON.stringify(added.filter((r) => r.type === 'authentication.failed'))}`);
        assert.deepEqual(claimsOf(answer.body.token).cnf, { 'x5t#S256': thumbprintOf(pki.svidA.chainPem) });
      }
    } finally {
      agent.destroy();
    }
  });

  test('a certificate and a bearer token naming the same identity get a task bound to the certificate', async () => {
    const answer = await request(port, 'POST', '/v1/tasks', { body: supportTask(), bearer: await svidToken(AGENT_A), client: pki.svidA });
    assert.equal(answer.status, 201, JSON.stringify(answer.body));
    assert.deepEqual(claimsOf(answer.body.token).cnf, { 'x5t#S256': thumbprintOf(pki.svidA.chainPem) });
  });

  test('a token issued for a bearer without a certificate is not bound, and keeps working without one', async () => {
    const granted = await request(port, 'POST', '/v1/tasks', { body: supportTask(), bearer: await svidToken(AGENT_A) });
    assert.equal(granted.status, 201, JSON.stringify(granted.body));
    const token: string = granted.body.token;
    assert.equal(claimsOf(token).cnf, undefined, 'no confirmation claim without a certificate');
    const check = { token, action: 'read', resource: 'db:orders/1' };
    for (const client of [undefined, pki.svidA, pki.svidB]) {
      const answer = await request(port, 'POST', '/v1/authorize', { body: check, ...(client === undefined ? {} : { client }) });
      assert.equal(answer.body.allowed, true, JSON.stringify(answer.body));
    }
    const read = await request(port, 'GET', `/v1/tasks/${granted.body.task.id}`, { bearer: token });
    assert.equal(read.status, 200, JSON.stringify(read.body));
  });
});

describe('mTLS with clientCertificates: required', () => {
  let h: Harness;
  let port: number;
  /** The 401 body of a bad bearer token over a valid certificate, to hold the gate's refusals against. */
  let reference: Record<string, unknown>;

  before(async () => {
    ({ h, port } = await startTlsWrit('required'));
    reference = assertUniform401(await request(port, 'POST', '/v1/tasks', { body: supportTask(), bearer: 'not-a-token', client: pki.svidA }));
  });
  after(() => h.close());

  test('a valid bearer without a client certificate is refused: uniform 401, ERR_CERT_INVALID in the audit log', async () => {
    const { answer, added } = await auditedDuring(h, async () => request(port, 'POST', '/v1/tasks', { body: supportTask(), bearer: await svidToken(AGENT_A) }));
    assert.deepEqual(assertUniform401(answer), reference);
    const failures = added.filter((r) => r.type === 'authentication.failed');
    assert.equal(failures.length, 1, JSON.stringify(added));
    assert.equal(failures[0]?.reason, 'ERR_CERT_INVALID');
    assert.equal((failures[0]?.data as Record<string, unknown>).endpoint, 'POST /v1/tasks');
    assert.equal(
      added.some((r) => r.type.startsWith('task.')),
      false,
      'no task was decided',
    );
  });

  test('every /v1 endpoint, the action check included, is refused without a client certificate', async () => {
    for (const [method, path, body] of [
      ['POST', '/v1/authorize', { token: 'x', action: 'read', resource: 'db:orders/1' }],
      ['GET', '/v1/tasks/task_00000000000000000000000000', undefined],
      ['GET', '/v1/identities', undefined],
    ] as const) {
      const answer = await request(port, method, path, body === undefined ? {} : { body });
      assert.deepEqual(assertUniform401(answer), reference);
    }
  });

  test('a certificate that does not verify does not satisfy the requirement, at the action check and admin endpoints too', async () => {
    const granted = await request(port, 'POST', '/v1/tasks', { body: supportTask(), client: pki.svidA });
    assert.equal(granted.status, 201, JSON.stringify(granted.body));
    const check = { token: granted.body.token, action: 'read', resource: 'db:orders/1' };
    const admin = await h.adminToken();
    for (const [client, reason] of [
      [pki.rogueA, 'ERR_CERT_UNTRUSTED'],
      [pki.expiredA, 'ERR_CERT_EXPIRED'],
      [pki.notAnSvid, 'ERR_CERT_INVALID'],
    ] as const) {
      for (const call of [
        () => request(port, 'POST', '/v1/authorize', { body: check, client }),
        () => request(port, 'GET', '/v1/identities', { bearer: admin, client }),
      ]) {
        const { answer, added } = await auditedDuring(h, call);
        assert.deepEqual(assertUniform401(answer), reference);
        const failures = added.filter((r) => r.type === 'authentication.failed');
        assert.equal(failures.length, 1, JSON.stringify(added));
        assert.equal(failures[0]?.reason, reason);
        assert.equal(added.some((r) => r.type === 'action.check'), false, 'the action check never ran');
      }
    }
    // The same calls with a valid certificate pass, so the refusals above are the certificate's.
    assert.equal((await request(port, 'POST', '/v1/authorize', { body: check, client: pki.svidA })).body.allowed, true);
    assert.equal((await request(port, 'GET', '/v1/identities', { bearer: admin, client: pki.svidB })).status, 200);
  });

  test('an encoded or absolute-form request target does not slip past the requirement', async () => {
    const admin = await h.adminToken();
    for (const path of ['/%761/identities', '/v%31/identities', 'https://127.0.0.1/v1/identities']) {
      const { answer, added } = await auditedDuring(h, () => request(port, 'GET', path, { bearer: admin }));
      assert.deepEqual(assertUniform401(answer), reference);
      assert.equal(added.filter((r) => r.type === 'authentication.failed').at(-1)?.reason, 'ERR_CERT_INVALID', path);
    }
    const { answer, added } = await auditedDuring(h, async () => request(port, 'POST', '/%761/tasks', { body: supportTask(), bearer: await svidToken(AGENT_A) }));
    assert.deepEqual(assertUniform401(answer), reference);
    assert.equal(added.filter((r) => r.type === 'authentication.failed').at(-1)?.reason, 'ERR_CERT_INVALID');
    assert.equal(added.some((r) => r.type.startsWith('task.')), false, 'no task was decided');
  });

  test('/healthz still answers without a client certificate', async () => {
    const answer = await request(port, 'GET', '/healthz');
    assert.equal(answer.status, 200);
    assert.equal(answer.body.status, 'ok');
  });

  test('a valid X.509-SVID gets a task, and a bad one is refused with its reason', async () => {
    const granted = await request(port, 'POST', '/v1/tasks', { body: supportTask(), client: pki.svidA });
    assert.equal(granted.status, 201, JSON.stringify(granted.body));
    assert.deepEqual(claimsOf(granted.body.token).cnf, { 'x5t#S256': thumbprintOf(pki.svidA.chainPem) });
    const allowed = await request(port, 'POST', '/v1/authorize', { body: { token: granted.body.token, action: 'read', resource: 'db:orders/1' }, client: pki.svidA });
    assert.equal(allowed.body.allowed, true);

    const { answer, added } = await auditedDuring(h, () => request(port, 'POST', '/v1/tasks', { body: supportTask(), client: pki.rogueA }));
    assert.deepEqual(assertUniform401(answer), reference);
    assert.equal(added.filter((r) => r.type === 'authentication.failed').at(-1)?.reason, 'ERR_CERT_UNTRUSTED');
  });
});

describe('TLS material rotates without a restart', () => {
  test('a renewed server certificate and a rotated client trust bundle are taken up by new connections', async () => {
    const rotationDir = mkdtempSync(join(tmpdir(), 'writ-mtls-rotate-'));
    try {
      const now = clock.now();
      const validity = { notBefore: new Date(now - HOUR), notAfter: new Date(now + 24 * HOUR) };
      const first = await issueServerCert(pki.serverCa, ['127.0.0.1']);
      const oldRoot = await createCa({ name: 'prod.example old root', ...validity });
      const newRoot = await createCa({ name: 'prod.example new root', ...validity });
      const svidFromNewRoot = await issueSvid(newRoot, AGENT_A);
      writeFileSync(join(rotationDir, 'server.crt'), first.chainPem);
      writeFileSync(join(rotationDir, 'server.key'), first.keyPem);
      writeFileSync(join(rotationDir, 'bundle.pem'), oldRoot.certPem);
      const h = await startHarness({
        clock,
        config: {
          server: { tls: { certFile: join(rotationDir, 'server.crt'), keyFile: join(rotationDir, 'server.key'), clientCertificates: 'optional' } },
          identity: { sources: [{ type: 'spiffe', name: 'prod', trustDomain: 'prod.example', x509BundleFile: join(rotationDir, 'bundle.pem') }] },
        },
      });
      try {
        await h.registerAgent(AGENT_A);
        const port = (h.app.server.address() as AddressInfo).port;
        const servedCertificate = () =>
          new Promise<string>((resolve, reject) => {
            const socket = tls.connect({ host: '127.0.0.1', port, ca: pki.serverCa.certPem }, () => {
              resolve(socket.getPeerCertificate().fingerprint256);
              socket.end();
            });
            socket.on('error', reject);
          });
        const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;
        assert.equal(await servedCertificate(), fingerprint(first.certPem));
        assertUniform401(await request(port, 'POST', '/v1/tasks', { body: supportTask(), client: svidFromNewRoot }));
        assert.equal(refreshTlsMaterial(h.app), false, 'nothing changed yet');

        const renewed = await issueServerCert(pki.serverCa, ['127.0.0.1']);
        writeFileSync(join(rotationDir, 'server.crt'), renewed.chainPem);
        writeFileSync(join(rotationDir, 'server.key'), renewed.keyPem);
        writeFileSync(join(rotationDir, 'bundle.pem'), `${oldRoot.certPem}${newRoot.certPem}`);
        clock.advance(11_000); // the bundle file is re-checked at most every 10 s
        assert.equal(refreshTlsMaterial(h.app), true);
        assert.equal(await servedCertificate(), fingerprint(renewed.certPem), 'new connections get the renewed certificate');
        const granted = await request(port, 'POST', '/v1/tasks', { body: supportTask(), client: svidFromNewRoot });
        assert.equal(granted.status, 201, 'an SVID from the rotated-in root is trusted');
      } finally {
        await h.close();
      }
    } finally {
      rmSync(rotationDir, { recursive: true, force: true });
    }
  });
});
