/**
 * SPIFFE X.509-SVID verification for the mTLS listener (SPIFFE X509-SVID spec
 * §4, §5; RFC 5280 where the spec defers to it).
 *
 * The TLS layer only asks for a client certificate (`rejectUnauthorized:
 * false`); this module decides. The leaf names its trust domain through its one
 * SPIFFE URI SAN, and only that trust domain's bundle may anchor it: a root
 * from another domain's bundle never counts. Verification is a fixed list of
 * steps, each failing closed with a stable code and a precise `detail` for the
 * audit log: read the SPIFFE ID, check the leaf's shape, pick the bundle, build
 * a signature-verified path, then check constraints and validity on that path.
 * Signatures are checked before validity, so an untrusted certificate is
 * reported as untrusted even when it is also expired.
 *
 * Node's X509Certificate does not expose key usage, path length or
 * criticality, so a tiny DER reader walks the extensions of `cert.raw`.
 * Pure functions, no I/O; the clock comes in as `now`.
 */
import { createHash, X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import { parseSpiffeId } from './spiffe-id.js';

export type X509SvidFailureCode = 'ERR_CERT_UNTRUSTED' | 'ERR_CERT_EXPIRED' | 'ERR_CERT_INVALID';

export type X509SvidResult =
  | { readonly ok: true; readonly spiffeId: string; readonly trustDomain: string; readonly thumbprint: string; readonly notAfter: number }
  | { readonly ok: false; readonly code: X509SvidFailureCode; readonly detail: string; readonly subject?: string };

type Failure = Extract<X509SvidResult, { ok: false }>;

/** Most certificates on a path, leaf and trust anchor included; also the most a peer may present. */
const MAX_PATH_LENGTH = 8;

/**
 * Verifies a peer's X.509-SVID.
 *
 * `chain` is the leaf first, then whatever the peer presented (intermediates,
 * possibly a root; order and extras do not matter). `bundles` maps a trust
 * domain name to its trust anchors; only the bundle of the leaf's own trust
 * domain is consulted. `now` is epoch ms. Never throws; every failure is a
 * result with one of three codes:
 * - ERR_CERT_INVALID: no certificate, or the leaf is not an X.509-SVID (not
 *   exactly one SPIFFE URI SAN, a CA, wrong key usage, unknown critical
 *   extension), or the chain is longer than MAX_PATH_LENGTH.
 * - ERR_CERT_UNTRUSTED: no bundle for the trust domain, or no signature-checked
 *   path of at most MAX_PATH_LENGTH certificates to one of its anchors.
 * - ERR_CERT_EXPIRED: a certificate on the path is expired or not yet valid.
 */
export function verifyX509Svid(chain: readonly X509Certificate[], bundles: ReadonlyMap<string, readonly X509Certificate[]>, now: number): X509SvidResult {
  const leaf = chain[0];
  if (leaf === undefined) return fail('ERR_CERT_INVALID', 'no client certificate');
  if (chain.length > MAX_PATH_LENGTH) return fail('ERR_CERT_INVALID', `chain of ${chain.length} certificates exceeds ${MAX_PATH_LENGTH}`);

  const identity = readSpiffeId(leaf);
  if (!identity.ok) return identity;
  const { spiffeId, trustDomain } = identity;

  const shapeProblem = checkLeafShape(leaf);
  if (shapeProblem !== undefined) return fail('ERR_CERT_INVALID', shapeProblem, spiffeId);

  const anchors = bundles.get(trustDomain);
  if (anchors === undefined || anchors.length === 0) return fail('ERR_CERT_UNTRUSTED', `no bundle for trust domain ${trustDomain}`, spiffeId);

  let firstRefusal: Failure | undefined;
  for (const path of signedPaths(leaf, chain.slice(1), anchors)) {
    const refusal = checkPath(path, now, spiffeId);
    if (refusal === undefined) {
      return { ok: true, spiffeId, trustDomain, thumbprint: certificateThumbprint(leaf), notAfter: Date.parse(leaf.validTo) };
    }
    firstRefusal ??= refusal;
  }
  return firstRefusal ?? fail('ERR_CERT_UNTRUSTED', `does not chain to the bundle of ${trustDomain}`, spiffeId);
}

/** RFC 8705 §3.1 `x5t#S256`: base64url (no padding) SHA-256 of the certificate's DER. */
export function certificateThumbprint(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('base64url');
}

/**
 * Parses the text of a PEM file holding one or more certificates (RFC 7468).
 * Explanatory text between blocks is ignored, as OpenSSL writes it.
 * @throws Error naming the problem: no certificate, a block of another type
 *   (a private key in a bundle file is refused rather than skipped), an
 *   unterminated block, bad base64, or DER that is not exactly one certificate.
 */
export function parsePemCertificates(pem: string): X509Certificate[] {
  const certs: X509Certificate[] = [];
  let body: string[] | undefined;
  let lineNumber = 0;
  for (const rawLine of pem.split(/\r?\n/)) {
    lineNumber += 1;
    const line = rawLine.trim();
    const begin = /^-----BEGIN ([A-Z0-9 ]+)-----$/.exec(line);
    const end = /^-----END ([A-Z0-9 ]+)-----$/.exec(line);
    if (begin) {
      if (body !== undefined) throw new Error(`PEM line ${lineNumber}: BEGIN inside an unterminated block`);
      if (begin[1] !== 'CERTIFICATE') throw new Error(`PEM line ${lineNumber}: expected only CERTIFICATE blocks, found ${begin[1]}`);
      body = [];
    } else if (end) {
      if (body === undefined || end[1] !== 'CERTIFICATE') throw new Error(`PEM line ${lineNumber}: unexpected END ${end[1]}`);
      certs.push(certificateFromBase64(body.join(''), certs.length + 1));
      body = undefined;
    } else if (body !== undefined) {
      body.push(line);
    }
  }
  if (body !== undefined) throw new Error('PEM ends inside a CERTIFICATE block');
  if (certs.length === 0) throw new Error('PEM holds no CERTIFICATE block');
  return certs;
}

/**
 * The peer's certificate chain from a TLS socket, leaf first, following
 * `issuerCertificate` from `getPeerCertificate(true)` until a certificate
 * repeats (a self-signed root is its own issuer). [] when the peer sent none.
 * The chain is whatever Node assembled; it is not verified here.
 */
export function peerCertificateChain(socket: TLSSocket): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  let current: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  while (current?.raw !== undefined && current.raw.length > 0) {
    const der = current.raw.toString('base64');
    if (seen.has(der)) break;
    seen.add(der);
    chain.push(new X509Certificate(current.raw));
    current = current.issuerCertificate;
  }
  return chain;
}

function fail(code: X509SvidFailureCode, detail: string, subject?: string): Failure {
  return subject === undefined ? { ok: false, code, detail } : { ok: false, code, detail, subject };
}

function certificateFromBase64(body: string, index: number): X509Certificate {
  if (body.length === 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0) {
    throw new Error(`PEM certificate ${index}: invalid base64`);
  }
  const der = Buffer.from(body, 'base64');
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(der);
  } catch {
    throw new Error(`PEM certificate ${index}: not a valid X.509 certificate`);
  }
  if (!cert.raw.equals(der)) throw new Error(`PEM certificate ${index}: trailing data after the certificate`);
  return cert;
}

// --- Step 1: the SPIFFE ID -------------------------------------------------

/** X509-SVID §2: exactly one URI SAN, and it is a SPIFFE ID. Other SAN types are allowed. */
function readSpiffeId(leaf: X509Certificate): { ok: true; spiffeId: string; trustDomain: string } | Failure {
  const names = parseSubjectAltName(leaf.subjectAltName ?? '');
  if (names === undefined) return fail('ERR_CERT_INVALID', 'unparseable subjectAltName');
  const uris = names.filter((name) => name.type === 'URI').map((name) => name.value);
  if (uris.length !== 1) return fail('ERR_CERT_INVALID', `leaf has ${uris.length} URI SANs, expected exactly one`);
  const spiffeId = uris[0] ?? '';
  const parsed = parseSpiffeId(spiffeId);
  if (parsed === undefined) return fail('ERR_CERT_INVALID', 'leaf URI SAN is not a SPIFFE ID');
  return { ok: true, spiffeId, trustDomain: parsed.trustDomain };
}

/**
 * Splits Node's `subjectAltName` text into entries. Node writes
 * `TYPE:value, TYPE:value`; any value holding a comma, quote, backslash or
 * non-ASCII character is a JSON string (`URI:"a\u002c b"`; CVE-2021-44532), so
 * a crafted value cannot smuggle in a second entry. Anything else fails closed.
 */
function parseSubjectAltName(text: string): Array<{ type: string; value: string }> | undefined {
  const entry = /([A-Za-z][A-Za-z ]*):("(?:[^"\\]|\\.)*"|[^",]*)(?:, (?=.)|$)/y;
  const names: Array<{ type: string; value: string }> = [];
  let offset = 0;
  while (offset < text.length) {
    entry.lastIndex = offset;
    const match = entry.exec(text);
    if (!match) return undefined;
    const [whole, type = '', raw = ''] = match;
    let value = raw;
    if (raw.startsWith('"')) {
      try {
        value = JSON.parse(raw) as string;
      } catch {
        return undefined;
      }
    }
    names.push({ type, value });
    offset += whole.length;
  }
  return names;
}

// --- Step 2: the leaf's shape ----------------------------------------------

const OID = {
  keyUsage: '551d0f', // 2.5.29.15
  subjectAltName: '551d11', // 2.5.29.17
  basicConstraints: '551d13', // 2.5.29.19
  extKeyUsage: '551d25', // 2.5.29.37
  subjectKeyIdentifier: '551d0e', // 2.5.29.14
  authorityKeyIdentifier: '551d23', // 2.5.29.35
  clientAuth: '2b06010505070302', // 1.3.6.1.5.5.7.3.2
  anyExtendedKeyUsage: '551d2500', // 2.5.29.37.0
} as const;

/** Extensions this module understands; RFC 5280 §4.2 requires refusing a certificate with any other critical one. */
const UNDERSTOOD = new Set<string>([
  OID.keyUsage,
  OID.subjectAltName,
  OID.basicConstraints,
  OID.extKeyUsage,
  OID.subjectKeyIdentifier,
  OID.authorityKeyIdentifier,
]);

/** X509-SVID §4.1, §4.3: a leaf is not a CA, may sign, may not sign certificates or CRLs; it must be usable for client auth. */
function checkLeafShape(leaf: X509Certificate): string | undefined {
  if (leaf.ca) return 'leaf is a CA certificate';
  const extensions = readExtensions(leaf);
  if (typeof extensions === 'string') return extensions;
  // Node's `ca` is false for cA=true without keyCertSign; the spec forbids cA=true on a leaf outright.
  const basicConstraints = readBasicConstraints(extensions);
  if (basicConstraints === undefined) return 'malformed basic constraints extension';
  if (basicConstraints.ca) return 'leaf basic constraints has cA=true';
  const critical = unknownCritical(extensions);
  if (critical !== undefined) return `leaf has an unrecognised critical extension ${critical}`;
  const keyUsage = extensions.get(OID.keyUsage);
  if (keyUsage !== undefined) {
    const bits = readKeyUsage(keyUsage.value);
    if (bits === undefined) return 'malformed key usage extension';
    if (!bits.digitalSignature) return 'leaf key usage lacks digitalSignature';
    if (bits.keyCertSign || bits.cRLSign) return 'leaf key usage allows keyCertSign or cRLSign';
  }
  const extKeyUsage = extensions.get(OID.extKeyUsage);
  if (extKeyUsage !== undefined) {
    const purposes = readObjectIds(extKeyUsage.value);
    if (purposes === undefined) return 'malformed extended key usage extension';
    if (!purposes.includes(OID.clientAuth) && !purposes.includes(OID.anyExtendedKeyUsage)) return 'leaf extended key usage lacks clientAuth';
  }
  return undefined;
}

// --- Step 3: signature-checked paths to the bundle -------------------------

/**
 * Every path leaf → presented CAs → anchor of `anchors` in which each
 * certificate was issued by the next (`checkIssued`, which also compares key
 * identifiers and the issuer's key usage, and a verified signature). A
 * presented certificate identical to an anchor ends the path there. Lazy, so
 * the caller stops at the first acceptable path. Bounded by MAX_PATH_LENGTH,
 * and each signature is checked at most once.
 */
function* signedPaths(
  leaf: X509Certificate,
  presented: readonly X509Certificate[],
  anchors: readonly X509Certificate[],
): Generator<X509Certificate[]> {
  const issuedBy = memoizedIssuance();
  const isAnchor = (cert: X509Certificate) => anchors.some((anchor) => anchor.raw.equals(cert.raw));
  const signers = presented.filter(canSignCertificates);
  const usableAnchors = anchors.filter(canSignCertificates);

  function* extend(path: X509Certificate[]): Generator<X509Certificate[]> {
    const current = path[path.length - 1];
    if (current === undefined) return;
    if (path.length > 1 && isAnchor(current)) {
      yield path;
      return;
    }
    if (path.length >= MAX_PATH_LENGTH) return;
    for (const anchor of usableAnchors) {
      if (issuedBy(current, anchor)) yield [...path, anchor];
    }
    for (const signer of signers) {
      if (!path.includes(signer) && issuedBy(current, signer)) yield* extend([...path, signer]);
    }
  }
  yield* extend([leaf]);
}

function memoizedIssuance(): (child: X509Certificate, parent: X509Certificate) => boolean {
  const results = new Map<X509Certificate, Map<X509Certificate, boolean>>();
  return (child, parent) => {
    let byParent = results.get(child);
    if (byParent === undefined) results.set(child, (byParent = new Map()));
    let issued = byParent.get(parent);
    if (issued === undefined) {
      try {
        issued = child.checkIssued(parent) && child.verify(parent.publicKey);
      } catch {
        issued = false;
      }
      byParent.set(parent, issued);
    }
    return issued;
  };
}

/**
 * X509-SVID §4.1, §4.3: a signing certificate has basicConstraints cA=true
 * and, when key usage is present, keyCertSign. Version 1 certificates (no
 * extensions) never sign.
 */
function canSignCertificates(cert: X509Certificate): boolean {
  if (!cert.ca) return false;
  const extensions = readExtensions(cert);
  if (typeof extensions === 'string' || unknownCritical(extensions) !== undefined) return false;
  if (readBasicConstraints(extensions)?.ca !== true) return false;
  const keyUsage = extensions.get(OID.keyUsage);
  return keyUsage === undefined || readKeyUsage(keyUsage.value)?.keyCertSign === true;
}

// --- Step 4: constraints and validity on the path ---------------------------

/** RFC 5280 §4.2.1.9 path length, then every certificate valid at `now` (leaf first, so its detail is precise). */
function checkPath(path: readonly X509Certificate[], now: number, spiffeId: string): Failure | undefined {
  for (const [index, cert] of path.entries()) {
    if (index < 2) continue;
    const limit = pathLengthLimit(cert);
    // INVARIANT: index - 1 intermediates sit between this CA and the leaf.
    if (limit !== undefined && index - 1 > limit) {
      return fail('ERR_CERT_UNTRUSTED', `path length constraint ${limit} of ${describe(cert)} exceeded`, spiffeId);
    }
  }
  for (const [index, cert] of path.entries()) {
    const role = index === 0 ? 'leaf' : index === path.length - 1 ? 'root' : 'intermediate';
    const notBefore = Date.parse(cert.validFrom);
    const notAfter = Date.parse(cert.validTo);
    if (Number.isNaN(notBefore) || Number.isNaN(notAfter)) return fail('ERR_CERT_INVALID', `${role} has an unreadable validity period`, spiffeId);
    if (now < notBefore) return fail('ERR_CERT_EXPIRED', `${role} ${describe(cert)} is not yet valid (notBefore ${cert.validFrom})`, spiffeId);
    if (now > notAfter) return fail('ERR_CERT_EXPIRED', `${role} ${describe(cert)} expired (notAfter ${cert.validTo})`, spiffeId);
  }
  return undefined;
}

/** The CA's pathLenConstraint; undefined = unlimited; 0 when unreadable (fail closed). */
function pathLengthLimit(cert: X509Certificate): number | undefined {
  const extensions = readExtensions(cert);
  const constraints = typeof extensions === 'string' ? undefined : readBasicConstraints(extensions);
  return constraints === undefined ? 0 : constraints.pathLength;
}

function describe(cert: X509Certificate): string {
  return JSON.stringify(cert.subject.replaceAll('\n', ', '));
}

/**
 * RFC 5280 §4.2.1.9: BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE,
 * pathLenConstraint INTEGER OPTIONAL }. Absent extension = not a CA, no limit;
 * undefined when malformed. A limit beyond 2^32 counts as none.
 */
function readBasicConstraints(extensions: ReadonlyMap<string, RawExtension>): { ca: boolean; pathLength?: number } | undefined {
  const extension = extensions.get(OID.basicConstraints);
  if (extension === undefined) return { ca: false };
  const { value } = extension;
  try {
    const sequence = readTlv(value, 0);
    if (sequence.tag !== TAG.sequence || sequence.end !== value.length) return undefined;
    const fields = readChildren(value, sequence);
    const ca = fields[0]?.tag === TAG.boolean ? fields.shift() : undefined;
    const pathLength = fields.shift();
    if (fields.length > 0 || (pathLength !== undefined && pathLength.tag !== TAG.integer)) return undefined;
    if (ca !== undefined && ca.end - ca.start !== 1) return undefined;
    const isCa = ca !== undefined && byteAt(value, ca.start) !== 0;
    if (pathLength === undefined) return { ca: isCa };
    const bytes = value.subarray(pathLength.start, pathLength.end);
    if (bytes.length === 0 || (byteAt(bytes, 0) & 0x80) !== 0) return undefined;
    if (bytes.length > 4) return { ca: isCa };
    return { ca: isCa, pathLength: bytes.reduce((n, byte) => n * 256 + byte, 0) };
  } catch {
    return undefined;
  }
}

// --- A tiny DER reader -------------------------------------------------------

const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  objectId: 0x06,
  sequence: 0x30,
  extensions: 0xa3, // [3] EXPLICIT in TBSCertificate
} as const;

interface Tlv {
  readonly tag: number;
  /** Content bytes are [start, end). */
  readonly start: number;
  readonly end: number;
}

interface RawExtension {
  readonly critical: boolean;
  /** The DER inside the extension's OCTET STRING. */
  readonly value: Uint8Array;
}

function byteAt(der: Uint8Array, offset: number): number {
  const value = der[offset];
  if (value === undefined) throw new Error('DER truncated');
  return value;
}

/** One DER TLV at `offset`, within `limit`. Low tag numbers and definite lengths only, as DER requires of certificates. */
function readTlv(der: Uint8Array, offset: number, limit = der.length): Tlv {
  const tag = byteAt(der, offset);
  if ((tag & 0x1f) === 0x1f) throw new Error('DER high tag number');
  let length = byteAt(der, offset + 1);
  let start = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new Error('DER length form');
    length = 0;
    for (let i = 0; i < count; i += 1) length = length * 256 + byteAt(der, start + i);
    start += count;
  }
  const end = start + length;
  if (end > limit) throw new Error('DER overrun');
  return { tag, start, end };
}

function readChildren(der: Uint8Array, parent: Tlv): Tlv[] {
  const children: Tlv[] = [];
  for (let offset = parent.start; offset < parent.end; ) {
    const child = readTlv(der, offset, parent.end);
    children.push(child);
    offset = child.end;
  }
  return children;
}

/**
 * The extensions of a certificate by OID (hex of the OID's content bytes).
 * Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { ..., [3] { SEQUENCE OF
 * Extension } }, ... }; Extension ::= SEQUENCE { OID, BOOLEAN DEFAULT FALSE,
 * OCTET STRING }. Returns a problem string when malformed or duplicated
 * (RFC 5280 §4.2: at most one instance of an extension).
 */
function readExtensions(cert: X509Certificate): Map<string, RawExtension> | string {
  const der = new Uint8Array(cert.raw.buffer, cert.raw.byteOffset, cert.raw.byteLength);
  const extensions = new Map<string, RawExtension>();
  try {
    const certificate = readTlv(der, 0);
    const tbs = readChildren(der, certificate)[0];
    if (tbs === undefined || tbs.tag !== TAG.sequence) return 'malformed certificate';
    const wrapper = readChildren(der, tbs).find((field) => field.tag === TAG.extensions);
    if (wrapper === undefined) return extensions;
    const list = readChildren(der, wrapper)[0];
    if (list === undefined || list.tag !== TAG.sequence) return 'malformed extensions';
    for (const extension of readChildren(der, list)) {
      const fields = readChildren(der, extension);
      const [oid, second, third] = fields;
      const criticalField = third === undefined ? undefined : second;
      const valueField = third ?? second;
      if (oid?.tag !== TAG.objectId || valueField?.tag !== TAG.octetString || fields.length > 3) return 'malformed extension';
      if (criticalField !== undefined && (criticalField.tag !== TAG.boolean || criticalField.end - criticalField.start !== 1)) {
        return 'malformed extension';
      }
      const key = Buffer.from(der.subarray(oid.start, oid.end)).toString('hex');
      if (extensions.has(key)) return `duplicate extension ${key}`;
      extensions.set(key, {
        critical: criticalField !== undefined && byteAt(der, criticalField.start) !== 0,
        value: der.subarray(valueField.start, valueField.end),
      });
    }
    return extensions;
  } catch (err) {
    return `malformed certificate DER: ${(err as Error).message}`;
  }
}

function unknownCritical(extensions: ReadonlyMap<string, RawExtension>): string | undefined {
  for (const [oid, extension] of extensions) {
    if (extension.critical && !UNDERSTOOD.has(oid)) return oid;
  }
  return undefined;
}

/** RFC 5280 §4.2.1.3: KeyUsage ::= BIT STRING; bit 0 digitalSignature, 5 keyCertSign, 6 cRLSign. */
function readKeyUsage(value: Uint8Array): { digitalSignature: boolean; keyCertSign: boolean; cRLSign: boolean } | undefined {
  try {
    const bits = readTlv(value, 0);
    if (bits.tag !== TAG.bitString || bits.end !== value.length || bits.end - bits.start < 1) return undefined;
    const first = bits.end - bits.start > 1 ? byteAt(value, bits.start + 1) : 0;
    return { digitalSignature: (first & 0x80) !== 0, keyCertSign: (first & 0x04) !== 0, cRLSign: (first & 0x02) !== 0 };
  } catch {
    return undefined;
  }
}

/** SEQUENCE OF OBJECT IDENTIFIER (extended key usage), each as hex of its content bytes. */
function readObjectIds(value: Uint8Array): string[] | undefined {
  try {
    const sequence = readTlv(value, 0);
    if (sequence.tag !== TAG.sequence || sequence.end !== value.length) return undefined;
    const ids: string[] = [];
    for (const child of readChildren(value, sequence)) {
      if (child.tag !== TAG.objectId) return undefined;
      ids.push(Buffer.from(value.subarray(child.start, child.end)).toString('hex'));
    }
    return ids;
  } catch {
    return undefined;
  }
}
