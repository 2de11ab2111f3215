/**
 * A REAL third-party OpenID provider for tests: `oidc-provider` (panva) on
 * loopback, issuing client-credentials access tokens in JWT format
 * (RFC 9068, `typ: at+jwt`) for one resource/audience. Lets the identity
 * tests verify tokens from an issuer nobody in this project wrote.
 *
 * How it is wired, and why:
 * - One `node:http` server on 127.0.0.1 for the fixture's whole life; it
 *   delegates to the current provider's `callback()`. The port is picked
 *   first (listen on :0), then the Provider is built with
 *   issuer `http://127.0.0.1:PORT` (oidc-provider accepts http issuers; it
 *   only asserts a valid web URI). stop()/start() close and re-listen on the
 *   SAME port, so the issuer URL never changes.
 * - rotateKeys() builds a new Provider with a new keystore (oidc-provider
 *   fixes its keystore at construction) and swaps it in; access tokens are
 *   stateless JWTs, so nothing is lost.
 * - RFC 8707 resource indicators must be absolute URIs, but audiences here
 *   are bare names like 'writ'. A non-URI audience is therefore sent as the
 *   resource `urn:oidc-issuer-fixture:audience:<name>` and
 *   getResourceServerInfo maps it back to `aud: '<name>'`. An audience that
 *   already is an absolute URI is used as the resource verbatim. Any
 *   resource is accepted, so tests can ask for a token for another audience.
 * - The resource server grants whatever scope was requested (the
 *   client_credentials grant intersects requested scopes with it).
 * - oidc-provider prints NOTICE/WARNING lines (unsupported Node 20 runtime at
 *   import, dev-only memory adapter, default-function notices). The import
 *   warning is filtered, a small in-memory adapter replaces the dev one, the
 *   defaults it would nag about are configured, and Koa's error logging is
 *   silenced (`provider.silent = true`).
 */
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface OidcIssuer {
  /** The provider's issuer URL, e.g. http://127.0.0.1:PORT (no trailing slash). Discovery at `${issuer}/.well-known/openid-configuration`. */
  readonly issuer: string;
  readonly jwksUri: string;
  /** Gets an access token (compact JWT) via a real POST to the token endpoint with grant_type=client_credentials, client_secret_basic auth. `resource` (RFC 8707) selects the audience; default the fixture's audience.
   * `clientSecret` overrides the configured secret (to provoke invalid_client). Rejects with
   * `token endpoint answered <status>: <body>` on any non-2xx answer. */
  token(clientId: string, options?: { resource?: string; scope?: string; clientSecret?: string }): Promise<string>;
  /** Number of HTTP requests the provider has received for its JWKS endpoint (to assert caching / refresh rate limits). */
  jwksRequests(): number;
  /**
   * Replace the signing keys with a freshly generated set (key rotation: new kid).
   * With `{ keepPrevious: true }` the old public key stays published in the JWKS
   * (new tokens are still signed with the new key).
   */
  rotateKeys(options?: { keepPrevious?: boolean }): Promise<void>;
  /** Stop accepting connections (issuer unreachable), and start again on the SAME port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface OidcIssuerOptions {
  /** Resource indicator / `aud` of access tokens, e.g. 'writ'. */
  audience: string;
  /** extraClaims land in the access token (via oidc-provider's extraTokenClaims). They cannot override iss/aud/sub/jti/iat/exp/client_id/scope. */
  clients: Array<{ clientId: string; clientSecret: string; extraClaims?: Record<string, unknown> }>;
  /** Signing alg of access tokens (default RS256). */
  alg?: 'RS256' | 'ES256' | 'EdDSA';
  /** Default 300. */
  accessTokenTtlSeconds?: number;
}

type Alg = NonNullable<OidcIssuerOptions['alg']>;
type Jwk = Record<string, unknown> & { kid: string };
type Listener = (req: IncomingMessage, res: ServerResponse) => void;

/** The bits of oidc-provider's Provider (a Koa app) this fixture uses; the package ships no types. */
interface ProviderInstance {
  silent: boolean;
  callback(): Listener;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
}
type ProviderClass = new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance;

const RESOURCE_PREFIX = 'urn:oidc-issuer-fixture:audience:';
const JWKS_PATH = '/jwks';
const TOKEN_PATH = '/token';

let providerClass: Promise<ProviderClass> | undefined;

function loadProvider(): Promise<ProviderClass> {
  providerClass ??= (async () => {
    // The package warns at import time that Node 20 is unsupported; drop only that line.
    const warn = console.warn;
    console.warn = (...args: unknown[]) => {
      if (typeof args[0] === 'string' && args[0].startsWith('oidc-provider WARNING: Unsupported runtime')) return;
      warn(...args);
    };
    try {
      // A non-literal specifier: oidc-provider has no type declarations.
      const specifier: string = 'oidc-provider';
      const mod = (await import(specifier)) as { default: ProviderClass };
      return mod.default;
    } finally {
      console.warn = warn;
    }
  })();
  return providerClass;
}

function isAbsoluteUri(value: string): boolean {
  return URL.canParse(value) && !value.includes('#');
}

/** RFC 8707 resource indicator for an audience (see module comment). */
export function resourceIndicatorFor(audience: string): string {
  return isAbsoluteUri(audience) ? audience : RESOURCE_PREFIX + encodeURIComponent(audience);
}

function audienceFor(resource: string): string {
  return resource.startsWith(RESOURCE_PREFIX) ? decodeURIComponent(resource.slice(RESOURCE_PREFIX.length)) : resource;
}

function generateSigningKey(alg: Alg): Jwk {
  const { privateKey } =
    alg === 'RS256'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : alg === 'ES256'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('ed25519');
  return { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomUUID()}`, alg, use: 'sig' };
}

/** Minimal in-memory adapter (the built-in one prints a dev-only warning). */
function memoryAdapter(): new (model: string) => unknown {
  const store = new Map<string, { payload: Record<string, unknown>; expiresAt: number | undefined }>();
  const live = (key: string) => {
    const entry = store.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry.payload;
  };
  return class {
    constructor(private readonly model: string) {}
    private key(id: string) {
      return `${this.model}:${id}`;
    }
    async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number) {
      store.set(this.key(id), { payload, expiresAt: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined });
    }
    async find(id: string) {
      return live(this.key(id));
    }
    async findByUserCode(userCode: string) {
      for (const [key, { payload }] of store) if (key.startsWith(`${this.model}:`) && payload.userCode === userCode) return live(key);
      return undefined;
    }
    async findByUid(uid: string) {
      for (const [key, { payload }] of store) if (key.startsWith(`${this.model}:`) && payload.uid === uid) return live(key);
      return undefined;
    }
    async consume(id: string) {
      const payload = live(this.key(id));
      if (payload !== undefined) payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string) {
      store.delete(this.key(id));
    }
    async revokeByGrantId(grantId: string) {
      for (const [key, { payload }] of store) if (payload.grantId === grantId) store.delete(key);
    }
  };
}

export async function startOidcIssuer(options: OidcIssuerOptions): Promise<OidcIssuer> {
  const Provider = await loadProvider();
  const alg: Alg = options.alg ?? 'RS256';
  const ttl = options.accessTokenTtlSeconds ?? 300;
  const defaultResource = resourceIndicatorFor(options.audience);
  const secrets = new Map(options.clients.map((c) => [c.clientId, c.clientSecret]));
  const extraClaims = new Map(options.clients.map((c) => [c.clientId, c.extraClaims]));
  const Adapter = memoryAdapter();
  const cookieKeys = [randomBytes(32).toString('base64url')];

  let jwksCount = 0;
  let current: Listener = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const server: Server = createServer((req, res) => {
    if (new URL(req.url ?? '/', 'http://x').pathname === JWKS_PATH) jwksCount += 1;
    current(req, res);
  });

  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  let listening = false;
  await listen(0);
  listening = true;
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;

  const build = (keys: Jwk[]) => {
    const provider = new Provider(issuer, {
      adapter: Adapter,
      clients: options.clients.map((c) => ({
        client_id: c.clientId,
        client_secret: c.clientSecret,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: 'client_secret_basic',
      })),
      clientDefaults: { id_token_signed_response_alg: alg },
      jwks: { keys },
      cookies: { keys: cookieKeys },
      routes: { jwks: JWKS_PATH, token: TOKEN_PATH },
      clientBasedCORS: () => false,
      ttl: { ClientCredentials: ttl, AccessToken: ttl },
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => defaultResource,
          useGrantedResource: () => true,
          getResourceServerInfo: (ctx: { oidc: { params: { scope?: string } } }, resource: string) => ({
            scope: ctx.oidc.params.scope ?? '',
            audience: audienceFor(resource),
            accessTokenFormat: 'jwt',
            accessTokenTTL: ttl,
            jwt: { sign: { alg } },
          }),
        },
      },
      extraTokenClaims: (_ctx: unknown, token: { clientId?: string }) =>
        token.clientId === undefined ? undefined : extraClaims.get(token.clientId),
    });
    provider.silent = true; // Koa would console.error unexpected errors
    return provider;
  };

  let signingKeys: Jwk[] = [generateSigningKey(alg)];
  current = build(signingKeys).callback();

  const stop = async () => {
    if (!listening) return;
    listening = false;
    await new Promise<void>((resolve, reject) => {
      server.close((err) => (err ? reject(err) : resolve()));
      server.closeAllConnections();
    });
  };

  return {
    issuer,
    jwksUri: `${issuer}${JWKS_PATH}`,
    async token(clientId, tokenOptions = {}) {
      const secret = tokenOptions.clientSecret ?? secrets.get(clientId) ?? 'no-such-client';
      const body = new URLSearchParams({ grant_type: 'client_credentials' });
      body.set('resource', tokenOptions.resource === undefined ? defaultResource : resourceIndicatorFor(tokenOptions.resource));
      if (tokenOptions.scope !== undefined) body.set('scope', tokenOptions.scope);
      // RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
      const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64');
      const res = await fetch(`${issuer}${TOKEN_PATH}`, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
        body,
      });
      const text = await res.text();
      if (!res.ok) throw new Error(`token endpoint answered ${res.status}: ${text}`);
      const json = JSON.parse(text) as { access_token?: unknown };
      if (typeof json.access_token !== 'string') throw new Error(`token endpoint answered without access_token: ${text}`);
      return json.access_token;
    },
    jwksRequests: () => jwksCount,
    async rotateKeys(rotateOptions = {}) {
      const fresh = generateSigningKey(alg);
      // The keystore signs with the first matching key, so the fresh one goes first.
      signingKeys = rotateOptions.keepPrevious ? [fresh, ...signingKeys] : [fresh];
      current = build(signingKeys).callback();
    },
    stop,
    async start() {
      if (listening) return;
      await listen(port);
      listening = true;
    },
    close: stop,
  };
}
