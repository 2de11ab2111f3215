/**
 * A throwaway PKI for tests: root and intermediate CAs, SPIFFE X.509-SVIDs and
 * TLS server certificates, all ECDSA P-256, generated in-process with
 * @peculiar/x509 over node:crypto's WebCrypto. Private keys are PKCS#8 PEM so
 * node:tls accepts them as they are.
 *
 * Certificates carry no subject/authority key identifiers on purpose: without
 * them a forged certificate that copies a CA's subject name passes
 * `checkIssued` and only the signature check can refuse it, which is what the
 * verification tests need to exercise.
 */
import { isIP } from 'node:net';
import { X509Certificate, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import type * as PeculiarX509 from '@peculiar/x509';

/** RFC 5280 §4.2.1.3 key usage bits, in @peculiar/x509's flag encoding. */
export const KeyUsage = {
  digitalSignature: 1,
  nonRepudiation: 2,
  keyEncipherment: 4,
  dataEncipherment: 8,
  keyAgreement: 16,
  keyCertSign: 32,
  cRLSign: 64,
} as const;

/** RFC 5280 §4.2.1.12 extended key usage OIDs. */
export const ExtKeyUsage = {
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  codeSigning: '1.3.6.1.5.5.7.3.3',
} as const;

export interface TestCa {
  readonly name: string;
  /** Subject DN, `CN=<name>`. */
  readonly subject: string;
  readonly certPem: string;
  /** PKCS#8 PEM. */
  readonly keyPem: string;
  readonly cert: X509Certificate;
  /** This CA and its parents up to, not including, the root; '' for a root. */
  readonly intermediatesPem: string;
  readonly parent?: TestCa;
  /** @internal WebCrypto keys used to sign what this CA issues. */
  readonly keys: webcrypto.CryptoKeyPair;
}

export interface IssuedCert {
  readonly certPem: string;
  /** PKCS#8 PEM. */
  readonly keyPem: string;
  readonly cert: X509Certificate;
  /** Leaf, then the issuing CA's intermediates up to, not including, the root. */
  readonly chainPem: string;
}

export interface CreateCaOptions {
  /** Common name; the subject is `CN=<name>`. */
  readonly name: string;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Issuing CA; absent for a self-signed root. */
  readonly parent?: TestCa;
  /** basicConstraints pathLenConstraint; absent = unlimited. */
  readonly pathLength?: number;
  /** Key usage flags (see `KeyUsage`); default keyCertSign | cRLSign; null omits the extension. */
  readonly keyUsage?: number | null;
  /** basicConstraints cA; default true. False makes a non-CA certificate that can still sign (a misuse). */
  readonly isCa?: boolean;
  /** Reuse this CA's key pair (a re-issued or cross-signed CA: same name and key, another certificate). */
  readonly reuseKeyFrom?: TestCa;
}

export interface IssueSvidOptions {
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** Sets basicConstraints cA=true on the leaf (a misissued SVID). */
  readonly isCa?: boolean;
  /** Key usage flags (see `KeyUsage`); default digitalSignature; null omits the extension. */
  readonly keyUsage?: number | null;
  /** Extended key usage OIDs; default clientAuth and serverAuth; null omits the extension. */
  readonly extKeyUsage?: readonly string[] | null;
  /** Subject DN; default `CN=svid`. */
  readonly subject?: string;
  /** Extra DNS SANs next to the URI SANs. */
  readonly dnsNames?: readonly string[];
  /** Extra critical extension with this OID (to test unknown critical extensions). */
  readonly criticalExtensionOid?: string;
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const HOUR = 3_600_000;

let loaded: Promise<typeof PeculiarX509> | undefined;

/**
 * Loads @peculiar/x509 once. Its DI container (tsyringe) insists on a Reflect
 * metadata API at import time; no polyfill package is installed, and the
 * library only needs get/define, so a WeakMap-backed stand-in is enough.
 */
function lib(): Promise<typeof PeculiarX509> {
  loaded ??= (async () => {
    installReflectMetadata();
    const x509 = await import('@peculiar/x509');
    x509.cryptoProvider.set(webcrypto);
    return x509;
  })();
  return loaded;
}

function installReflectMetadata(): void {
  const reflect = Reflect as unknown as Record<string, unknown>;
  if (typeof reflect['getMetadata'] === 'function') return;
  const store = new WeakMap<object, Map<string, Map<unknown, unknown>>>();
  const own = (target: object, property: unknown, create: boolean): Map<unknown, unknown> | undefined => {
    let byProperty = store.get(target);
    if (!byProperty && create) store.set(target, (byProperty = new Map()));
    const key = String(property);
    let metadata = byProperty?.get(key);
    if (!metadata && create && byProperty) byProperty.set(key, (metadata = new Map()));
    return metadata;
  };
  const getOwnMetadata = (key: unknown, target: object, property?: unknown): unknown => own(target, property, false)?.get(key);
  const getMetadata = (key: unknown, target: object, property?: unknown): unknown => {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t) as object | null) {
      const metadata = own(t, property, false);
      if (metadata?.has(key)) return metadata.get(key);
    }
    return undefined;
  };
  const defineMetadata = (key: unknown, value: unknown, target: object, property?: unknown): void => {
    own(target, property, true)?.set(key, value);
  };
  Object.assign(reflect, {
    getOwnMetadata,
    getMetadata,
    defineMetadata,
    hasOwnMetadata: (key: unknown, target: object, property?: unknown) => own(target, property, false)?.has(key) ?? false,
    hasMetadata: (key: unknown, target: object, property?: unknown) => getMetadata(key, target, property) !== undefined,
    metadata: (key: unknown, value: unknown) => (target: object, property?: unknown) => defineMetadata(key, value, target, property),
  });
}

async function generateKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

async function pkcs8Pem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  const lines = der.toString('base64').match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${lines.join('\n')}\n-----END PRIVATE KEY-----\n`;
}

function toNode(cert: PeculiarX509.X509Certificate): { pem: string; cert: X509Certificate } {
  const pem = `${cert.toString('pem').trim()}\n`;
  return { pem, cert: new X509Certificate(pem) };
}

/** A root CA (self-signed) or, with `parent`, an intermediate CA. */
export async function createCa(options: CreateCaOptions): Promise<TestCa> {
  const x509 = await lib();
  const keys = options.reuseKeyFrom?.keys ?? (await generateKeys());
  const name = `CN=${options.name}`;
  const isCa = options.isCa ?? true;
  const extensions: PeculiarX509.Extension[] = [new x509.BasicConstraintsExtension(isCa, isCa ? options.pathLength : undefined, true)];
  const keyUsage = options.keyUsage === undefined ? KeyUsage.keyCertSign | KeyUsage.cRLSign : options.keyUsage;
  if (keyUsage !== null) extensions.push(new x509.KeyUsagesExtension(keyUsage, true));
  const notBefore = options.notBefore ?? new Date(Date.now() - HOUR);
  const notAfter = options.notAfter ?? new Date(Date.now() + 24 * HOUR);
  const parent = options.parent;
  const generated = parent
    ? await x509.X509CertificateGenerator.create({
        subject: name,
        issuer: parent.subject,
        notBefore,
        notAfter,
        signingAlgorithm: ALG,
        publicKey: keys.publicKey,
        signingKey: parent.keys.privateKey,
        extensions,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({ name, notBefore, notAfter, signingAlgorithm: ALG, keys, extensions });
  const { pem, cert } = toNode(generated);
  return {
    name: options.name,
    subject: name,
    certPem: pem,
    keyPem: await pkcs8Pem(keys.privateKey),
    cert,
    intermediatesPem: parent ? pem + parent.intermediatesPem : '',
    ...(parent ? { parent } : {}),
    keys,
  };
}

async function issueLeaf(
  ca: TestCa | undefined,
  subject: string,
  sans: PeculiarX509.JsonGeneralNames,
  options: IssueSvidOptions & { readonly defaultExtKeyUsage: readonly string[] },
): Promise<IssuedCert> {
  const x509 = await lib();
  const keys = await generateKeys();
  const extensions: PeculiarX509.Extension[] = [new x509.BasicConstraintsExtension(options.isCa ?? false, undefined, true)];
  const keyUsage = options.keyUsage === undefined ? KeyUsage.digitalSignature : options.keyUsage;
  if (keyUsage !== null) extensions.push(new x509.KeyUsagesExtension(keyUsage, true));
  const extKeyUsage = options.extKeyUsage === undefined ? options.defaultExtKeyUsage : options.extKeyUsage;
  if (extKeyUsage !== null) extensions.push(new x509.ExtendedKeyUsageExtension([...extKeyUsage], false));
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans, false));
  if (options.criticalExtensionOid) {
    // An extension value must be DER; an empty SEQUENCE will do.
    extensions.push(new x509.Extension(options.criticalExtensionOid, true, new Uint8Array([0x30, 0x00])));
  }
  const params = {
    notBefore: options.notBefore ?? new Date(Date.now() - HOUR),
    notAfter: options.notAfter ?? new Date(Date.now() + HOUR),
    signingAlgorithm: ALG,
    extensions,
  };
  const generated = ca
    ? await x509.X509CertificateGenerator.create({
        ...params,
        subject,
        issuer: ca.subject,
        publicKey: keys.publicKey,
        signingKey: ca.keys.privateKey,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({ ...params, name: subject, keys });
  const { pem, cert } = toNode(generated);
  return {
    certPem: pem,
    keyPem: await pkcs8Pem(keys.privateKey),
    cert,
    chainPem: pem + (ca?.intermediatesPem ?? ''),
  };
}

function uriSans(spiffeId: string | readonly string[]): PeculiarX509.JsonGeneralNames {
  const ids = typeof spiffeId === 'string' ? [spiffeId] : spiffeId;
  return ids.map((value) => ({ type: 'url' as const, value }));
}

/**
 * An X.509-SVID issued by `ca`: one URI SAN per entry of `spiffeId` (pass []
 * for none), key usage digitalSignature, EKU clientAuth + serverAuth, cA=false,
 * valid from an hour ago for an hour unless overridden.
 */
export async function issueSvid(ca: TestCa, spiffeId: string | readonly string[], options: IssueSvidOptions = {}): Promise<IssuedCert> {
  const sans = [...uriSans(spiffeId), ...(options.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value }))];
  return issueLeaf(ca, options.subject ?? 'CN=svid', sans, {
    ...options,
    defaultExtKeyUsage: [ExtKeyUsage.clientAuth, ExtKeyUsage.serverAuth],
  });
}

/** A self-signed certificate that looks like an SVID, with subject (and so issuer) `subject`. */
export async function createSelfSignedSvid(subject: string, spiffeId: string | readonly string[], options: IssueSvidOptions = {}): Promise<IssuedCert> {
  return issueLeaf(undefined, subject, uriSans(spiffeId), {
    ...options,
    defaultExtKeyUsage: [ExtKeyUsage.clientAuth, ExtKeyUsage.serverAuth],
  });
}

/** A TLS server certificate for `hosts` (IP literals become IP SANs, the rest DNS SANs), EKU serverAuth. */
export async function issueServerCert(ca: TestCa, hosts: readonly string[], options: Omit<IssueSvidOptions, 'dnsNames'> = {}): Promise<IssuedCert> {
  const sans = hosts.map((host) => ({ type: isIP(host) === 0 ? ('dns' as const) : ('ip' as const), value: host }));
  return issueLeaf(ca, options.subject ?? `CN=${hosts[0] ?? 'server'}`, sans, {
    ...options,
    defaultExtKeyUsage: [ExtKeyUsage.serverAuth],
  });
}

/** A Writ serving mTLS, on disk: its server certificate, and an SVID for `agent` from the SPIFFE bundle it trusts. */
export interface MtlsFiles {
  /** The CA that signed the server certificate: what a client trusts. */
  readonly serverCa: TestCa;
  /** The agent's X.509-SVID (chain and key), from a root in the bundle (through an intermediate if asked). */
  readonly svid: IssuedCert;
  /** The `server.tls` and `identity.sources` of the Writ's config. */
  config(clientCertificates: 'optional' | 'required'): Record<string, unknown>;
  /**
   * One HTTPS request to a Writ on `port` serving these files: the server's CA
   * trusted, the SVID presented when `cert`, `body` sent as JSON.
   */
  request(port: number, method: string, path: string, options?: MtlsRequestOptions): Promise<{ status: number; text: string; headers: Record<string, unknown> }>;
  /** Removes the files. */
  remove(): void;
}

export interface MtlsRequestOptions {
  readonly body?: unknown;
  readonly bearer?: string;
  readonly cert?: boolean;
  readonly headers?: Readonly<Record<string, string>>;
}

/** Writes server.crt, server.key and bundle.pem (trust domain prod.example) to a temp folder, valid a day either side of `now`. */
export async function writeMtlsFiles(now: number, agent: string, options: { readonly intermediate?: boolean } = {}): Promise<MtlsFiles> {
  const validity = { notBefore: new Date(now - 86_400_000), notAfter: new Date(now + 86_400_000) };
  const root = await createCa({ name: 'root', ...validity });
  const issuer = options.intermediate === true ? await createCa({ name: 'int', parent: root, ...validity }) : root;
  const serverCa = await createCa({ name: 'srv', ...validity });
  const server = await issueServerCert(serverCa, ['127.0.0.1']);
  const svid = await issueSvid(issuer, agent);
  const dir = mkdtempSync(join(tmpdir(), 'writ-mtls-'));
  writeFileSync(join(dir, 'server.crt'), server.chainPem);
  writeFileSync(join(dir, 'server.key'), server.keyPem);
  writeFileSync(join(dir, 'bundle.pem'), root.certPem);
  return {
    serverCa,
    svid,
    config: (clientCertificates) => ({
      server: { tls: { certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key'), clientCertificates } },
      identity: { sources: [{ type: 'spiffe', name: 'prod', trustDomain: 'prod.example', x509BundleFile: join(dir, 'bundle.pem') }] },
    }),
    request: (port, method, path, o = {}) =>
      new Promise((resolve, reject) => {
        const payload = o.body === undefined ? undefined : JSON.stringify(o.body);
        const r = httpsRequest(
          {
            host: '127.0.0.1',
            port,
            method,
            path,
            ca: serverCa.certPem,
            agent: false,
            ...(o.cert === true ? { cert: svid.chainPem, key: svid.keyPem } : {}),
            headers: {
              ...(payload === undefined ? {} : { 'content-type': 'application/json' }),
              ...(o.bearer === undefined ? {} : { authorization: `Bearer ${o.bearer}` }),
              ...(o.headers ?? {}),
            },
          },
          (res) => {
            let text = '';
            res.on('data', (c: Buffer) => (text += c.toString('utf8')));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: res.headers }));
          },
        );
        r.on('error', reject);
        r.end(payload);
      }),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
