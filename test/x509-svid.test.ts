import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import {
  certificateThumbprint,
  parsePemCertificates,
  peerCertificateChain,
  verifyX509Svid,
  type X509SvidResult,
} from '../src/identity/x509-svid.js';
import { createCa, createSelfSignedSvid, ExtKeyUsage, issueServerCert, issueSvid, KeyUsage, type IssuedCert, type TestCa } from './helpers/pki.js';

const A = 'a.example';
const B = 'b.example';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

interface Fixtures {
  readonly now: number;
  readonly rootA: TestCa;
  readonly intA: TestCa;
  readonly rootB: TestCa;
  readonly intB: TestCa;
  /** Another key that calls itself "Root A". */
  readonly impostorA: TestCa;
  readonly bundles: ReadonlyMap<string, readonly X509Certificate[]>;
}

let fixtures: Fixtures;

before(async () => {
  const now = Date.now();
  // CAs outlive every leaf on both sides, so only the certificate under test decides validity.
  const validity = { notBefore: new Date(now - 7 * DAY), notAfter: new Date(now + 7 * DAY) };
  const rootA = await createCa({ name: 'Root A', ...validity });
  const rootB = await createCa({ name: 'Root B', ...validity });
  fixtures = {
    now,
    rootA,
    intA: await createCa({ name: 'Intermediate A', parent: rootA, ...validity }),
    rootB,
    intB: await createCa({ name: 'Intermediate B', parent: rootB, ...validity }),
    impostorA: await createCa({ name: 'Root A', ...validity }),
    bundles: new Map([
      [A, [rootA.cert]],
      [B, [rootB.cert]],
    ]),
  };
});

const pemChain = (issued: IssuedCert): X509Certificate[] => parsePemCertificates(issued.chainPem);

function assertRefused(result: X509SvidResult, code: string): void {
  assert.equal(result.ok, false, `expected ${code}, got ${JSON.stringify(result)}`);
  if (!result.ok) assert.equal(result.code, code, `expected ${code}, got ${result.code}: ${result.detail}`);
}

function assertAccepted(result: X509SvidResult, spiffeId: string): void {
  assert.equal(result.ok, true, `expected ok, got ${JSON.stringify(result)}`);
  if (result.ok) assert.equal(result.spiffeId, spiffeId);
}

interface Case {
  readonly name: string;
  readonly expect: 'ok' | 'ERR_CERT_INVALID' | 'ERR_CERT_UNTRUSTED' | 'ERR_CERT_EXPIRED';
  /** The presented chain and optionally other bundles. */
  readonly build: (f: Fixtures) => Promise<{ chain: X509Certificate[]; bundles?: ReadonlyMap<string, readonly X509Certificate[]> }>;
}

const cases: Case[] = [
  {
    name: 'a leaf issued directly by the trust domain root is accepted',
    expect: 'ok',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.rootA, `spiffe://${A}/workload`)) }),
  },
  {
    name: 'a leaf issued by a presented intermediate is accepted',
    expect: 'ok',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/workload`)) }),
  },
  {
    name: 'a chain that also presents the root, an unrelated cert and reversed order is accepted',
    expect: 'ok',
    build: async (f) => {
      const leaf = await issueSvid(f.intA, `spiffe://${A}/workload`);
      return { chain: [leaf.cert, f.rootA.cert, f.rootB.cert, f.intA.cert] };
    },
  },
  {
    name: 'a leaf with DNS SANs next to its one SPIFFE URI SAN is accepted',
    expect: 'ok',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.rootA, `spiffe://${A}/w`, { dnsNames: ['w.a.example'] })) }),
  },
  {
    name: 'a leaf without key usage or extended key usage extensions is accepted',
    expect: 'ok',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.rootA, `spiffe://${A}/w`, { keyUsage: null, extKeyUsage: null })) }),
  },
  {
    name: 'an anchor that is itself an intermediate (not self-signed) is accepted, presented or not',
    expect: 'ok',
    build: async (f) => {
      const leaf = await issueSvid(f.intA, `spiffe://${A}/w`);
      return { chain: pemChain(leaf), bundles: new Map([[A, [f.intA.cert]]]) };
    },
  },
  {
    name: 'of two paths, the one whose intermediate is still valid is chosen',
    expect: 'ok',
    build: async (f) => {
      const expired = await createCa({ name: 'Intermediate R', parent: f.rootA, notBefore: new Date(f.now - 2 * DAY), notAfter: new Date(f.now - DAY) });
      const renewed = await createCa({ name: 'Intermediate R', parent: f.rootA, reuseKeyFrom: expired });
      const leaf = await issueSvid(expired, `spiffe://${A}/w`);
      return { chain: [leaf.cert, expired.cert, renewed.cert] };
    },
  },
  {
    name: 'a leaf claiming trust domain A but issued by B\'s root is untrusted',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.rootB, `spiffe://${A}/workload`)) }),
  },
  {
    name: 'a leaf claiming trust domain A under B\'s presented intermediate is untrusted',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intB, `spiffe://${A}/workload`)) }),
  },
  {
    name: 'a SPIFFE ID of a trust domain without a bundle is untrusted',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.rootA, 'spiffe://c.example/workload')) }),
  },
  {
    name: 'a trust domain with an empty bundle trusts nothing',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.rootA, `spiffe://${A}/w`)), bundles: new Map([[A, []]]) }),
  },
  {
    name: 'a self-signed leaf with the root\'s subject name is untrusted (the signature check refuses it)',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => {
      const leaf = await createSelfSignedSvid(f.rootA.subject, `spiffe://${A}/w`);
      assert.equal(leaf.cert.checkIssued(f.rootA.cert), true, 'precondition: names alone would pass');
      return { chain: [leaf.cert] };
    },
  },
  {
    name: 'a leaf issued by another key under the root\'s subject name is untrusted',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => {
      const leaf = await issueSvid(f.impostorA, `spiffe://${A}/w`);
      assert.equal(leaf.cert.checkIssued(f.rootA.cert), true, 'precondition: names alone would pass');
      return { chain: [leaf.cert, f.impostorA.cert] };
    },
  },
  {
    name: 'an intermediate forged under the root\'s subject name is untrusted',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => {
      const forged = await createCa({ name: 'Intermediate A', parent: f.impostorA });
      return { chain: pemChain(await issueSvid(forged, `spiffe://${A}/w`)) };
    },
  },
  {
    name: 'a non-CA certificate cannot act as an intermediate',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => {
      const notCa = await createCa({ name: 'Not A CA', parent: f.rootA, isCa: false });
      return { chain: pemChain(await issueSvid(notCa, `spiffe://${A}/w`)) };
    },
  },
  {
    name: 'an intermediate whose key usage lacks keyCertSign cannot sign',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => {
      const noSign = await createCa({ name: 'No Sign', parent: f.rootA, keyUsage: KeyUsage.digitalSignature });
      return { chain: pemChain(await issueSvid(noSign, `spiffe://${A}/w`)) };
    },
  },
  {
    name: 'a root path length constraint of 0 refuses an intermediate below it',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => {
      const root = await createCa({ name: 'Root P0', pathLength: 0 });
      const int = await createCa({ name: 'Int P0', parent: root });
      return { chain: pemChain(await issueSvid(int, `spiffe://${A}/w`)), bundles: new Map([[A, [root.cert]]]) };
    },
  },
  {
    name: 'a root path length constraint of 1 allows one intermediate',
    expect: 'ok',
    build: async (f) => {
      const root = await createCa({ name: 'Root P1', pathLength: 1 });
      const int = await createCa({ name: 'Int P1', parent: root });
      void f;
      return { chain: pemChain(await issueSvid(int, `spiffe://${A}/w`)), bundles: new Map([[A, [root.cert]]]) };
    },
  },
  {
    name: 'an expired leaf is refused as expired',
    expect: 'ERR_CERT_EXPIRED',
    build: async (f) => ({
      chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/w`, { notBefore: new Date(f.now - 2 * HOUR), notAfter: new Date(f.now - HOUR) })),
    }),
  },
  {
    name: 'a not-yet-valid leaf is refused as expired',
    expect: 'ERR_CERT_EXPIRED',
    build: async (f) => ({
      chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/w`, { notBefore: new Date(f.now + HOUR), notAfter: new Date(f.now + 2 * HOUR) })),
    }),
  },
  {
    name: 'an expired intermediate is refused as expired',
    expect: 'ERR_CERT_EXPIRED',
    build: async (f) => {
      const int = await createCa({ name: 'Old Int', parent: f.rootA, notBefore: new Date(f.now - 2 * DAY), notAfter: new Date(f.now - DAY) });
      return { chain: pemChain(await issueSvid(int, `spiffe://${A}/w`)) };
    },
  },
  {
    name: 'an expired root in the bundle is refused as expired',
    expect: 'ERR_CERT_EXPIRED',
    build: async (f) => {
      const root = await createCa({ name: 'Old Root', notBefore: new Date(f.now - 2 * DAY), notAfter: new Date(f.now - DAY) });
      return { chain: pemChain(await issueSvid(root, `spiffe://${A}/w`)), bundles: new Map([[A, [root.cert]]]) };
    },
  },
  {
    name: 'an untrusted leaf that is also expired is reported untrusted (signature before validity)',
    expect: 'ERR_CERT_UNTRUSTED',
    build: async (f) => ({
      chain: pemChain(await issueSvid(f.rootB, `spiffe://${A}/w`, { notBefore: new Date(f.now - 2 * HOUR), notAfter: new Date(f.now - HOUR) })),
    }),
  },
  {
    name: 'a leaf that is a CA is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/w`, { isCa: true, keyUsage: null })) }),
  },
  {
    // Node's `cert.ca` is false here (OpenSSL's X509_check_ca wants keyCertSign), so basicConstraints is read directly.
    name: 'a leaf with basicConstraints cA=true is not an SVID even when its key usage cannot sign certificates',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => {
      const leaf = await issueSvid(f.intA, `spiffe://${A}/w`, { isCa: true, keyUsage: KeyUsage.digitalSignature });
      assert.equal(leaf.cert.ca, false, 'precondition: Node does not call it a CA');
      return { chain: pemChain(leaf) };
    },
  },
  {
    name: 'a leaf without a URI SAN is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, [], { dnsNames: ['w.a.example'] })) }),
  },
  {
    name: 'a leaf without any SAN is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, [])) }),
  },
  {
    name: 'a leaf with two SPIFFE URI SANs is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, [`spiffe://${A}/one`, `spiffe://${A}/two`])) }),
  },
  {
    name: 'a leaf with a SPIFFE URI SAN and an https URI SAN is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, [`spiffe://${A}/one`, 'https://a.example/'])) }),
  },
  {
    name: 'a leaf whose URI SAN is not a SPIFFE ID is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, 'https://a.example/workload')) }),
  },
  {
    name: 'a leaf whose URI SAN is a bare trust domain is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `spiffe://${A}`)) }),
  },
  {
    name: 'a URI SAN with a comma cannot smuggle a second SPIFFE ID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `https://x.example/, URI:spiffe://${A}/evil`)) }),
  },
  {
    name: 'a DNS SAN with a comma cannot smuggle a SPIFFE ID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, [], { dnsNames: [`x.example, URI:spiffe://${A}/evil`] })) }),
  },
  {
    name: 'a leaf whose key usage allows keyCertSign is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/w`, { keyUsage: KeyUsage.digitalSignature | KeyUsage.keyCertSign })) }),
  },
  {
    name: 'a leaf whose key usage allows cRLSign is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/w`, { keyUsage: KeyUsage.digitalSignature | KeyUsage.cRLSign })) }),
  },
  {
    name: 'a leaf whose key usage lacks digitalSignature is not an SVID',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/w`, { keyUsage: KeyUsage.keyEncipherment })) }),
  },
  {
    name: 'a leaf whose extended key usage excludes clientAuth cannot authenticate a client',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/w`, { extKeyUsage: [ExtKeyUsage.serverAuth] })) }),
  },
  {
    name: 'a leaf with an unrecognised critical extension is refused',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => ({ chain: pemChain(await issueSvid(f.intA, `spiffe://${A}/w`, { criticalExtensionOid: '1.3.6.1.4.1.55555.1' })) }),
  },
  {
    name: 'an empty chain is invalid',
    expect: 'ERR_CERT_INVALID',
    build: async () => ({ chain: [] }),
  },
  {
    name: 'a chain of more than 8 certificates is invalid',
    expect: 'ERR_CERT_INVALID',
    build: async (f) => {
      const leaf = await issueSvid(f.intA, `spiffe://${A}/w`);
      return { chain: [leaf.cert, ...Array.from({ length: 8 }, () => f.intA.cert)] };
    },
  },
];

describe('verifyX509Svid', () => {
  for (const c of cases) {
    test(c.name, async () => {
      const { chain, bundles } = await c.build(fixtures);
      const result = verifyX509Svid(chain, bundles ?? fixtures.bundles, fixtures.now);
      if (c.expect === 'ok') assert.equal(result.ok, true, `expected ok, got ${JSON.stringify(result)}`);
      else assertRefused(result, c.expect);
    });
  }

  test('success carries the SPIFFE ID, trust domain, leaf thumbprint and notAfter', async () => {
    const leaf = await issueSvid(fixtures.intA, `spiffe://${A}/ns/prod/sa/agent`);
    const result = verifyX509Svid(pemChain(leaf), fixtures.bundles, fixtures.now);
    assertAccepted(result, `spiffe://${A}/ns/prod/sa/agent`);
    assert.ok(result.ok);
    assert.equal(result.trustDomain, A);
    assert.equal(result.notAfter, Date.parse(leaf.cert.validTo));
    const body = /-----BEGIN CERTIFICATE-----([^-]+)-----END CERTIFICATE-----/.exec(leaf.certPem)?.[1] ?? '';
    const independent = createHash('sha256').update(Buffer.from(body.replace(/\s+/g, ''), 'base64')).digest('base64url');
    assert.equal(result.thumbprint, independent);
    assert.equal(certificateThumbprint(leaf.cert), independent);
    assert.match(independent, /^[A-Za-z0-9_-]{43}$/);
  });

  test('an untrusted leaf reports its SPIFFE ID as the subject', async () => {
    const result = verifyX509Svid(pemChain(await issueSvid(fixtures.rootA, 'spiffe://c.example/w')), fixtures.bundles, fixtures.now);
    assertRefused(result, 'ERR_CERT_UNTRUSTED');
    assert.equal(!result.ok && result.subject, 'spiffe://c.example/w');
  });

  test('validity bounds are inclusive to the second and nothing beyond', async () => {
    const notBefore = new Date(Math.floor(fixtures.now / 1000) * 1000 - HOUR);
    const notAfter = new Date(notBefore.getTime() + 2 * HOUR);
    const chain = pemChain(await issueSvid(fixtures.rootA, `spiffe://${A}/w`, { notBefore, notAfter }));
    assert.equal(verifyX509Svid(chain, fixtures.bundles, notBefore.getTime()).ok, true);
    assert.equal(verifyX509Svid(chain, fixtures.bundles, notAfter.getTime()).ok, true);
    assertRefused(verifyX509Svid(chain, fixtures.bundles, notBefore.getTime() - 1), 'ERR_CERT_EXPIRED');
    assertRefused(verifyX509Svid(chain, fixtures.bundles, notAfter.getTime() + 1), 'ERR_CERT_EXPIRED');
  });

  test('a path of 8 certificates is accepted and one of 9 is not', async () => {
    const root = await createCa({ name: 'Deep Root' });
    const cas: TestCa[] = [root];
    for (let i = 1; i <= 7; i += 1) cas.push(await createCa({ name: `Deep ${i}`, parent: cas[cas.length - 1] }));
    const bundles = new Map([[A, [root.cert]]]);
    // leaf + 6 intermediates + root = 8
    const eight = pemChain(await issueSvid(cas[6]!, `spiffe://${A}/w`));
    assert.equal(eight.length, 7);
    assert.equal(verifyX509Svid(eight, bundles, fixtures.now).ok, true);
    // leaf + 7 intermediates + root = 9
    const nine = pemChain(await issueSvid(cas[7]!, `spiffe://${A}/w`));
    assert.equal(nine.length, 8);
    assertRefused(verifyX509Svid(nine, bundles, fixtures.now), 'ERR_CERT_UNTRUSTED');
  });

  test('roots of other trust domains never anchor, even when they sit in every bundle but the right one', async () => {
    const leaf = await issueSvid(fixtures.rootB, `spiffe://${A}/w`);
    const bundles = new Map([
      [A, [fixtures.rootA.cert]],
      [B, [fixtures.rootB.cert]],
      ['c.example', [fixtures.rootB.cert]],
    ]);
    assertRefused(verifyX509Svid([leaf.cert, fixtures.rootB.cert], bundles, fixtures.now), 'ERR_CERT_UNTRUSTED');
  });
});

describe('parsePemCertificates', () => {
  test('reads several certificates, ignoring explanatory text and CRLF', () => {
    const text = `subject=CN=Root A\r\n${fixtures.rootA.certPem.replaceAll('\n', '\r\n')}\nsome comment\n${fixtures.rootB.certPem}`;
    const certs = parsePemCertificates(text);
    assert.equal(certs.length, 2);
    assert.ok(certs[0]?.raw.equals(fixtures.rootA.cert.raw));
    assert.ok(certs[1]?.raw.equals(fixtures.rootB.cert.raw));
  });

  const hostile: Array<[string, () => string]> = [
    ['empty text', () => ''],
    ['text without a block', () => 'not a certificate'],
    ['a private key block', () => fixtures.rootA.certPem + fixtures.rootA.keyPem],
    ['an unterminated block', () => fixtures.rootA.certPem.replace('-----END CERTIFICATE-----', '')],
    ['invalid base64', () => '-----BEGIN CERTIFICATE-----\nnot*base64!\n-----END CERTIFICATE-----\n'],
    ['base64 that is not a certificate', () => `-----BEGIN CERTIFICATE-----\n${Buffer.from('hello world, not DER').toString('base64')}\n-----END CERTIFICATE-----\n`],
    [
      'a certificate followed by trailing bytes',
      () => `-----BEGIN CERTIFICATE-----\n${Buffer.concat([fixtures.rootA.cert.raw, Buffer.from([0, 0, 0])]).toString('base64')}\n-----END CERTIFICATE-----\n`,
    ],
    ['mismatched END', () => fixtures.rootA.certPem.replace('-----END CERTIFICATE-----', '-----END PRIVATE KEY-----')],
  ];
  for (const [name, pem] of hostile) {
    test(`refuses ${name}`, () => {
      assert.throws(() => parsePemCertificates(pem()), Error);
    });
  }
});

describe('mTLS handshake', () => {
  let server: https.Server;
  let port: number;
  let serverCa: TestCa;

  before(async () => {
    serverCa = await createCa({ name: 'Server Root' });
    const serverCert = await issueServerCert(serverCa, ['127.0.0.1', 'localhost']);
    server = https.createServer(
      {
        key: serverCert.keyPem,
        cert: serverCert.chainPem,
        ca: [fixtures.rootA.certPem, fixtures.rootB.certPem],
        requestCert: true,
        rejectUnauthorized: false,
      },
      (req, res) => {
        const chain = peerCertificateChain(req.socket as TLSSocket);
        const result = verifyX509Svid(chain, fixtures.bundles, Date.now());
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ result, chainLength: chain.length }));
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  function call(client?: { certPem: string; keyPem: string }): Promise<{ result: X509SvidResult; chainLength: number }> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: '127.0.0.1',
          port,
          path: '/',
          method: 'GET',
          ca: serverCa.certPem,
          agent: false,
          ...(client ? { cert: client.certPem, key: client.keyPem } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            try {
              resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as { result: X509SvidResult; chainLength: number });
            } catch (err) {
              reject(err);
            }
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  test('a client presenting a valid SVID chain is identified by its SPIFFE ID and thumbprint', async () => {
    const svid = await issueSvid(fixtures.intA, `spiffe://${A}/agent/tls`);
    const { result, chainLength } = await call({ certPem: svid.chainPem, keyPem: svid.keyPem });
    assertAccepted(result, `spiffe://${A}/agent/tls`);
    assert.ok(result.ok);
    assert.equal(result.trustDomain, A);
    assert.equal(result.thumbprint, certificateThumbprint(svid.cert));
    assert.ok(chainLength >= 2, 'the intermediate reached the server');
  });

  test('a client whose certificate chains to an unknown CA completes the handshake and is refused as untrusted', async () => {
    const rogue = await createCa({ name: 'Rogue Root' });
    const svid = await issueSvid(rogue, `spiffe://${A}/agent/tls`);
    const { result } = await call({ certPem: svid.chainPem, keyPem: svid.keyPem });
    assertRefused(result, 'ERR_CERT_UNTRUSTED');
  });

  test('a client with an expired SVID completes the handshake and is refused as expired', async () => {
    const svid = await issueSvid(fixtures.intA, `spiffe://${A}/agent/tls`, {
      notBefore: new Date(Date.now() - 2 * HOUR),
      notAfter: new Date(Date.now() - HOUR),
    });
    const { result } = await call({ certPem: svid.chainPem, keyPem: svid.keyPem });
    assertRefused(result, 'ERR_CERT_EXPIRED');
  });

  test('a client without a certificate is refused as invalid', async () => {
    const { result, chainLength } = await call();
    assert.equal(chainLength, 0);
    assertRefused(result, 'ERR_CERT_INVALID');
  });
});
