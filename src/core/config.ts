/**
 * Configuration: one schema, validated once at start-up, then frozen.
 *
 * Precedence, lowest to highest: built-in defaults, `writ.yaml` (from
 * `--config`, else `./writ.yaml` when present), environment variables
 * (`WRIT_*`), command-line flags.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { riskSettingsSchema } from '../policy/risk.js';
import { WritError } from './errors.js';
import { isValidResource } from './scope.js';

const DURATION_RE = /^(\d+)(ms|s|m|h|d)$/;
const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/**
 * Parses a duration: a number of seconds, or a string such as `90s`, `5m`, `1h`.
 * Returns whole seconds, or undefined when the input is not a duration.
 */
export function parseDurationSeconds(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  if (/^\d+$/.test(value)) return Number(value);
  const match = DURATION_RE.exec(value);
  if (!match) return undefined;
  return Math.floor(Number(match[1]) * (UNIT_SECONDS[match[2] ?? 's'] ?? 1));
}

const duration = (fallback: number) =>
  z
    .union([z.number(), z.string()])
    .transform((value, ctx) => {
      const seconds = parseDurationSeconds(value);
      if (seconds === undefined) {
        ctx.addIssue({ code: 'custom', message: 'expected seconds or a duration like 30s, 5m, 1h' });
        return z.NEVER;
      }
      return seconds;
    })
    .default(fallback);

const slug = z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, 'lowercase letters, digits and dashes');

/** Asymmetric JWS algorithms only: never `none`, never HMAC (a public key must never act as a shared secret). */
export const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** An https URL, or http on loopback only (tests, a sidecar on the same host). */
const fetchUrl = z
  .string()
  .url()
  .refine((value) => {
    const url = new URL(value);
    if (url.username !== '' || url.password !== '' || url.hash !== '') return false;
    return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
  }, 'an https:// URL (http:// only on loopback), without credentials or fragment');

/** A claim: a top-level name (`sub`) or a JSON Pointer into the claims (`/kubernetes.io/namespace`). */
const claimRef = z.string().min(1).max(256).regex(/^(\/|[A-Za-z_])/, 'a claim name or a JSON Pointer starting with /');

const sourceCommon = {
  /** Names the source in logs and audit records. */
  name: slug,
  /** What happens to an authenticated identity nobody registered: refuse it, or record it as quarantined (no grants until an owner claims it). */
  unregistered: z.enum(['deny', 'quarantine']).default('deny'),
  /** Most identities this source may hold in quarantine; past it, unknown identities are refused, not recorded (a soft cap). */
  quarantineLimit: z.number().int().min(1).max(100_000).default(1000),
  /** actorType given to identities quarantined from this source. */
  actorType: z.enum(['agent', 'service', 'human']).default('agent'),
  /** Where an identity's environment comes from in its token: a claim, optionally mapped (a Kubernetes namespace → an environment). */
  environment: z
    .object({
      claim: claimRef,
      map: z.record(z.string(), slug).optional(),
      /** Used when the claim is absent or (with a map) not in it; without a default such a token is refused. */
      default: slug.optional(),
    })
    .strict()
    .optional(),
  /**
   * Claims a token must carry with exactly these values (claim → value), checked
   * right after the signature: on a shared issuer such as GitHub's, pin it to your
   * organisation (`repository_owner: acme`) so strangers' tokens are refused,
   * never quarantined.
   */
  require: z.record(claimRef, z.string().min(1).max(256)).default({}),
  /** Labels read from token claims: label name → claim. */
  labels: z.record(z.string().regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'label keys are lowercase'), claimRef).default({}),
  /** How keys are fetched. */
  fetch: z
    .object({
      timeoutMs: z.number().int().min(100).max(60_000).default(5000),
      maxBytes: z.number().int().min(1024).max(4 * 1024 * 1024).default(512 * 1024),
      /** PEM file of CA certificates for https fetches to a private endpoint. */
      caFile: z.string().min(1).optional(),
      /** Refresh keys at least this often. */
      refreshInterval: duration(300),
      /** At most one refresh per this interval caused by an unknown kid. */
      minRefreshInterval: duration(30),
    })
    .strict()
    .prefault({}),
};

const oidcSourceSchema = z
  .object({
    type: z.literal('oidc'),
    ...sourceCommon,
    /** Pinned `iss`; keys come from its discovery document unless jwksUri is given. */
    issuer: fetchUrl,
    /** Skip discovery and read keys here. */
    jwksUri: fetchUrl.optional(),
    /** Pinned `aud`; default identity.audience. */
    audience: z.string().min(1).optional(),
    algorithms: z.array(z.enum(ASYMMETRIC_ALGS)).min(1).default(['RS256', 'ES256', 'PS256', 'EdDSA']),
    /** The identity's name under the issuer: `{claim}` or `{/json/pointer}` placeholders. The identity id is `<issuer>#<subject>`. */
    subject: z
      .string()
      .min(1)
      .max(256)
      .regex(/^(?:[A-Za-z0-9._:@\/-]|\{[^{}]+\})+$/, 'literal characters A-Z a-z 0-9 . _ : @ / - and {claim} placeholders')
      .default('{sub}'),
    /** Refuse tokens whose exp - iat is longer; 0 accepts any lifetime the issuer chose. */
    maxTokenLifetime: duration(0),
  })
  .strict();

const spiffeSourceSchema = z
  .object({
    type: z.literal('spiffe'),
    ...sourceCommon,
    trustDomain: z.string().regex(/^[a-z0-9._-]{1,255}$/, 'a SPIFFE trust domain such as prod.example.org'),
    /** Keys for JWT-SVIDs: a SPIFFE bundle endpoint (https_web) or a JWKS / SPIFFE bundle file. */
    jwtBundle: z
      .object({ url: fetchUrl.optional(), file: z.string().min(1).optional() })
      .strict()
      .refine((b) => (b.url === undefined) !== (b.file === undefined), 'give exactly one of url or file')
      .optional(),
    /** CA certificates for X.509-SVIDs: a PEM file (`spire-server bundle show -format pem`). */
    x509BundleFile: z.string().min(1).optional(),
    algorithms: z.array(z.enum(ASYMMETRIC_ALGS)).min(1).default(['ES256', 'ES384', 'RS256', 'PS256']),
  })
  .strict()
  .refine((s) => s.jwtBundle !== undefined || s.x509BundleFile !== undefined, 'a spiffe source needs jwtBundle, x509BundleFile or both');

/** An upstream's name: the prefix of its tools (`tickets__create_refund`), so never two underscores. */
const upstreamName = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,31}$/, 'lowercase letters, digits and dashes, at most 32 (it prefixes tool names)');

/** A secret from the vault, injected into an upstream's environment (stdio) or request headers (HTTP). */
const injection = z
  .object({
    /** Name of the secret in the vault (`writ secret set <name>`). */
    secret: z.string().regex(/^[a-z][a-z0-9._-]{0,63}$/, 'a secret name'),
    /** Environment variable of a stdio upstream. */
    env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an environment variable name').optional(),
    /** Request header of an HTTP upstream. */
    header: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'a header name').optional(),
    /** Put before the secret, e.g. `Bearer `. */
    prefix: z.string().max(64).regex(/^[\x20-\x7e]*$/, 'printable ASCII').default(''),
  })
  .strict()
  .refine((i) => (i.env === undefined) !== (i.header === undefined), 'give exactly one of env or header');

/** How one upstream tool is checked: the action and resource its calls are decided as. */
const toolMapping = z
  .object({
    /** An action of the Cedar schema (`read`, `refund`...). Default: from the tool's annotations. */
    action: z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, 'an action name').optional(),
    /**
     * The resource, with `{arg}` placeholders filled from the call's top-level
     * arguments: `payments:refunds/{ticketId}`. Default: `tool:<upstream>/<tool>`.
     */
    resource: z.string().min(3).max(256).regex(/^[a-z][a-z0-9-]{0,31}:[A-Za-z0-9._~:/@+=,{}-]*$/, 'a resource name, optionally with {arg} placeholders').optional(),
    /** Hide the tool from agents altogether. */
    hidden: z.boolean().default(false),
  })
  .strict();

const upstreamSchema = z
  .object({
    name: upstreamName,
    /** A stdio upstream: the command Writ starts (lazily, restarted with backoff when it dies). */
    command: z.string().min(1).max(1024).optional(),
    args: z.array(z.string().max(4096)).max(64).default([]),
    /** Working directory of the command, relative to the config file. */
    cwd: z.string().min(1).optional(),
    /** Plain environment variables for the command (secrets go in `inject`). */
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/), z.string().max(4096)).default({}),
    /** A Streamable HTTP upstream. */
    url: z.string().url().optional(),
    /** Plain request headers for an HTTP upstream (secrets go in `inject`). */
    headers: z.record(z.string().regex(/^[A-Za-z0-9-]{1,64}$/), z.string().max(4096)).default({}),
    inject: z.array(injection).max(16).default([]),
    /** Per tool (the upstream's own name): action, resource, hidden. */
    tools: z.record(z.string().min(1).max(128), toolMapping).default({}),
    /** `listed`: only tools named under `tools` are offered; `all`: every tool the upstream lists. */
    expose: z.enum(['all', 'listed']).default('all'),
  })
  .strict()
  .superRefine((u, ctx) => {
    if ((u.command === undefined) === (u.url === undefined)) ctx.addIssue({ code: 'custom', message: 'give exactly one of command (stdio) or url (Streamable HTTP)' });
    if (u.url !== undefined) {
      const url = new URL(u.url);
      if (url.username !== '' || url.password !== '') ctx.addIssue({ code: 'custom', path: ['url'], message: 'no credentials in the URL; inject them from a secret' });
      if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname))) {
        ctx.addIssue({ code: 'custom', path: ['url'], message: 'an https:// URL (http:// only on loopback)' });
      }
    }
    u.inject.forEach((i, index) => {
      if (i.env !== undefined && u.command === undefined) ctx.addIssue({ code: 'custom', path: ['inject', index, 'env'], message: 'env injection is for stdio upstreams (command)' });
      if (i.header !== undefined && u.url === undefined) ctx.addIssue({ code: 'custom', path: ['inject', index, 'header'], message: 'header injection is for HTTP upstreams (url)' });
    });
  });

/** A proxy path never holds a `.` or `..` segment: requests with one are refused, so such a path could never match. */
const noDotSegment = (path: string): boolean => path.split('/').every((segment) => segment !== '.' && segment !== '..');

/** An HTTP method's action on a proxy route; `false` refuses the method there. */
const proxyMethods = z.record(z.string().regex(/^[A-Z]{1,16}$/, 'an HTTP method in capitals'), z.union([z.string().regex(/^[a-z][a-z0-9_]{0,63}$/, 'an action name'), z.literal(false)]));

/** A path under a proxy route and the resource its requests are decided on. */
const proxyPath = z
  .object({
    /** Segments after the route's prefix; `{name}` stands for one whole segment: `/orders/{id}`. */
    pattern: z.string().min(1).max(256).regex(/^(?:\/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]+|\{[A-Za-z_][A-Za-z0-9_]{0,63}\})?)+$/, 'a path of literal segments and {name} placeholders, starting with /').refine(noDotSegment, 'no . or .. segments'),
    /** The resource, with the pattern's `{name}` placeholders: `db:orders/{id}`. Without placeholders it may be a pattern (`db:orders/*`). */
    resource: z.string().min(3).max(256).regex(/^[a-z][a-z0-9-]{0,31}:[A-Za-z0-9._~:/@+=,{}*-]*$/, 'a resource name, optionally with {name} placeholders'),
    /** Overrides the route's methods for this path only: `{ POST: refund }`. */
    methods: proxyMethods.default({}),
  })
  .strict();

/** One route of the HTTP proxy: a path prefix, its upstream, the credential Writ injects, and how requests are decided. */
const proxyRouteSchema = z
  .object({
    /** Names the route in logs. */
    name: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'lowercase letters, digits and dashes, at most 32'),
    /** Under the proxy's mount: `/shop` serves `/proxy/shop/...`. */
    prefix: z.string().regex(/^(?:\/[A-Za-z0-9._~-]+)+$/, 'literal path segments such as /shop').refine(noDotSegment, 'no . or .. segments'),
    /** Base URL the rest of the path is appended to; https://, or http:// on loopback. */
    upstream: z.string().url(),
    /** Secrets from the vault, sent as request headers; never seen by the agent. */
    inject: z
      .array(
        z
          .object({
            secret: z.string().regex(/^[a-z][a-z0-9._-]{0,63}$/, 'a secret name'),
            header: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, 'a header name'),
            prefix: z.string().max(64).regex(/^[\x20-\x7e]*$/, 'printable ASCII').default(''),
          })
          .strict(),
      )
      .max(8)
      .default([]),
    /** Over the defaults (GET, HEAD: read; POST, PUT, PATCH: write; DELETE: delete). */
    methods: proxyMethods.default({}),
    /** First match wins; a path matching none is refused. */
    paths: z.array(proxyPath).min(1).max(256),
  })
  .strict()
  .superRefine((r, ctx) => {
    const url = new URL(r.upstream);
    if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') ctx.addIssue({ code: 'custom', path: ['upstream'], message: 'no credentials, query or fragment in the URL; inject credentials from a secret' });
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname))) {
      ctx.addIssue({ code: 'custom', path: ['upstream'], message: 'an https:// URL (http:// only on loopback)' });
    }
    r.paths.forEach((p, index) => {
      const names = new Set([...p.pattern.matchAll(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => m[1]));
      for (const m of p.resource.matchAll(/\{([^{}]*)\}/g)) {
        if (!names.has(m[1])) ctx.addIssue({ code: 'custom', path: ['paths', index, 'resource'], message: `{${m[1] ?? ''}} is not a placeholder of the pattern` });
      }
    });
  });

export type ProxyRouteConfig = z.output<typeof proxyRouteSchema>;

/**
 * A webhook: every approval and break-glass state change is POSTed to it as
 * JSON, signed with HMAC-SHA256 under a secret from the vault, and retried
 * with backoff until it answers 2xx or the attempts run out.
 */
const webhookSchema = z
  .object({
    name: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'lowercase letters, digits and dashes, at most 32'),
    url: z.string().url(),
    /** Name of the signing secret in the vault (`writ secret set <name>`). */
    secret: z.string().regex(/^[a-z][a-z0-9._-]{0,63}$/, 'a secret name'),
    /** `json`: Writ's event; `slack`: a Slack-compatible message (incoming webhooks, Block Kit). */
    format: z.enum(['json', 'slack']).default('json'),
    /** Only these events (default: every one). */
    events: z.array(z.string().regex(/^[a-z_]+\.[a-z_]+$/, 'an event such as approval.requested')).min(1).max(32).optional(),
    /** Longest one delivery attempt may take. */
    timeout: duration(10),
    /** Attempts before a delivery is given up (and the failure audited). */
    maxAttempts: z.number().int().min(1).max(50).default(8),
  })
  .strict()
  .superRefine((w, ctx) => {
    const url = new URL(w.url);
    if (url.username !== '' || url.password !== '') ctx.addIssue({ code: 'custom', path: ['url'], message: 'no credentials in the URL' });
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname))) {
      ctx.addIssue({ code: 'custom', path: ['url'], message: 'an https:// URL (http:// only on loopback)' });
    }
  });

/** An identifier of the downstream database (schema, table). Writ quotes it; NUL never reaches SQL. */
const pgIdentifier = z.string().min(1).max(63).regex(/^[^\0]+$/, 'a PostgreSQL identifier (at most 63 characters, no NUL)');
/** Table privileges a lease may carry: a closed list, so configuration never holds SQL text. */
export const PG_TABLE_PRIVILEGES = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'] as const;
const pgPrivileges = z.array(z.enum(PG_TABLE_PRIVILEGES)).max(PG_TABLE_PRIVILEGES.length).optional();

/**
 * One resource of Writ mapped to one object of the database: a task whose
 * granted scopes cover `resource` gets, for each scope's tier, the privileges
 * listed under that tier on `schema.table` (every table of `schema` when no
 * table is named).
 */
const pgGrantSchema = z
  .object({
    /** A resource name or prefix pattern (`db:shop/orders`, `db:shop/*`). */
    resource: z.string().refine(isValidResource, 'a resource name or prefix pattern such as db:shop/orders or db:shop/*'),
    schema: pgIdentifier,
    table: pgIdentifier.optional(),
    read: pgPrivileges,
    write: pgPrivileges,
    delete: pgPrivileges,
    export: pgPrivileges,
  })
  .strict();

const pgLeaseProviderSchema = z
  .object({
    /** The name a task asks for (`POST /v1/tasks/{id}/leases {"provider": name}`). */
    name: slug,
    /** The vault secret holding the admin DSN (`postgres://admin:pw@host:5432/db`): the admin credential never in config. */
    urlSecret: z.string().regex(/^[a-z][a-z0-9._-]{0,63}$/, 'a secret name').optional(),
    /** Or the admin DSN itself, without a password (trust, peer or PGPASSWORD); a password belongs in urlSecret. */
    url: z.string().url().optional(),
    /** How agents reach the database when not at the admin DSN's host and port. */
    connectHost: z.string().min(1).max(253).optional(),
    connectPort: z.number().int().min(1).max(65535).optional(),
    grants: z.array(pgGrantSchema).min(1).max(256),
    /** CONNECTION LIMIT of each task's role. */
    connectionLimit: z.number().int().min(1).max(100).default(2),
    /** Start of every role Writ makes; roles are `<prefix><random>`. */
    rolePrefix: z.string().regex(/^[a-z_][a-z0-9_]{0,15}$/, 'lowercase letters, digits and _, at most 16').default('writ_'),
    /** Longest a statement against the database may take. */
    statementTimeout: duration(10),
  })
  .strict()
  .superRefine((p, ctx) => {
    if ((p.url === undefined) === (p.urlSecret === undefined)) ctx.addIssue({ code: 'custom', path: ['urlSecret'], message: 'give exactly one of urlSecret or url' });
    if (p.url !== undefined) {
      const url = new URL(p.url);
      if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') ctx.addIssue({ code: 'custom', path: ['url'], message: 'a postgres:// URL' });
      if (url.password !== '') ctx.addIssue({ code: 'custom', path: ['url'], message: 'no password in config: put the DSN in the vault and name it in urlSecret' });
    }
  });

export type PgLeaseProviderConfig = z.output<typeof pgLeaseProviderSchema>;
export type PgGrantConfig = z.output<typeof pgGrantSchema>;

export type WebhookConfig = z.output<typeof webhookSchema>;

export type UpstreamConfig = z.output<typeof upstreamSchema>;
export type ToolMappingConfig = z.output<typeof toolMapping>;

export type OidcSourceConfig = z.output<typeof oidcSourceSchema>;
export type SpiffeSourceConfig = z.output<typeof spiffeSourceSchema>;
export type TrustSourceConfig = OidcSourceConfig | SpiffeSourceConfig;

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8750),
        /** Largest request body accepted, in bytes. */
        bodyLimit: z.number().int().min(1024).max(10 * 1024 * 1024).default(64 * 1024),
        /** Serve HTTPS. With clientCertificates, clients present X.509-SVIDs checked against the spiffe sources' x509 bundles. */
        tls: z
          .object({
            certFile: z.string().min(1),
            keyFile: z.string().min(1),
            /** `optional`: a presented SVID authenticates the caller; `required`: every /v1 request must present a valid one. */
            clientCertificates: z.enum(['off', 'optional', 'required']).default('off'),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /** Where the SQLite database and the master key file live. */
    dataDir: z.string().min(1).default('./.writ'),
    database: z
      .object({
        /** `postgres://...` for a cluster; unset means SQLite in dataDir. */
        url: z.string().regex(/^postgres(ql)?:\/\//, 'a postgres:// URL').optional(),
        /**
         * SQLite durability. `normal` (WAL): a committed record survives a crash
         * of Writ, but a power loss may drop the last commits. `full`: fsync on
         * every commit, so also power loss, at the cost of a disk flush per decision.
         */
        sqliteSynchronous: z.enum(['normal', 'full']).default('normal'),
      })
      .strict()
      .prefault({}),
    /** `iss` of task tokens. An identifier; it need not be reachable. */
    issuer: z.string().min(1).default('http://127.0.0.1:8750'),
    tokens: z
      .object({
        /** Default `aud` of task tokens, and what enforcement points expect. */
        audience: z.string().min(1).default('writ-enforcement'),
        defaultTtl: duration(300),
        /** Hard maximum task TTL; longer requests are cut to this. */
        maxTtl: duration(900),
        /** Allowed clock skew when checking `exp` and `nbf`. */
        clockSkew: duration(30),
        /**
         * The longest a task lasts from its request, counting every renewal at
         * a checkpoint: a renewal never takes it past this. At most 24h.
         */
        maxLifetime: duration(28_800),
      })
      .strict()
      .prefault({}),
    identity: z
      .object({
        /** What identity tokens must name in `aud` to be accepted by Writ. */
        audience: z.string().min(1).default('writ'),
        /** Where identities are verified from; several at once. */
        sources: z.array(z.discriminatedUnion('type', [oidcSourceSchema, spiffeSourceSchema])).max(32).default([]),
        /** Writ's own issuer for laptops and demos; `writ serve --dev` turns it on. */
        devIssuer: z
          .object({
            enabled: z.boolean().default(false),
            /** Longest identity token the dev issuer mints (JWT-SVIDs are short-lived). */
            maxTtl: duration(300),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    admin: z
      .object({
        /** Mint an all-scopes admin token at the first start of a store and print it once. */
        bootstrapToken: z.boolean().default(true),
        /** How long the bootstrap token lives; make lasting ones with `writ admin token create`. */
        bootstrapTtl: duration(86_400),
      })
      .strict()
      .prefault({}),
    policy: z
      .object({
        /** Folder with schema.cedarschema, *.cedar and resources.yaml. Default: the bundled examples. */
        dir: z.string().min(1).optional(),
        /** Environments a task may name. */
        environments: z.array(slug).min(1).default(['development', 'sandbox', 'staging', 'production']),
        /** The risk score: signal weights, environment factors, business hours, level thresholds. */
        risk: riskSettingsSchema.prefault({}),
        /**
         * A candidate policy folder decided beside the enforced one and never
         * enforced: its decisions are recorded ("would allow/deny") in every
         * audit record of a decision, to trial a change on real traffic.
         */
        shadow: z
          .object({
            dir: z.string().min(1),
            /** Trial it only for tasks in these environments (default: all). */
            environments: z.array(slug).min(1).optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    /** The MCP gateway: agents reach their tool servers through Writ (`/mcp`, `writ gateway`, `writ mcp`). */
    gateway: z
      .object({
        upstreams: z.array(upstreamSchema).max(64).default([]),
        /** Longest an upstream call may take before it fails. */
        callTimeout: duration(30),
        /** Longest an upstream may take to start and answer its handshake. */
        connectTimeout: duration(10),
        /** Most open MCP sessions (2025-era clients) at once; past it new sessions are refused. */
        maxSessions: z.number().int().min(1).max(100_000).default(1000),
        /** Most open MCP sessions one identity may hold (so one agent cannot take them all); its least recently used makes way. */
        maxSessionsPerIdentity: z.number().int().min(1).max(10_000).default(16),
        /** A session nobody used for this long is closed. */
        sessionIdleTimeout: duration(900),
        /**
         * The gateway's URL as agents reach it: the `resource` of its RFC 9728
         * metadata and of the 401 challenge. Default: `<issuer>/mcp`.
         */
        resourceUrl: z.string().url().optional(),
        /**
         * Browser origins allowed to call /mcp. A request with any other Origin
         * header is refused (DNS rebinding); agents send none.
         */
        allowedOrigins: z.array(z.string().url()).max(32).default([]),
        /** Largest MCP request body, in bytes (tool arguments can be large; the REST API keeps server.bodyLimit). */
        maxRequestBytes: z.number().int().min(1024).max(32 * 1024 * 1024).default(4 * 1024 * 1024),
      })
      .strict()
      .prefault({}),
    /** The HTTP proxy: agents reach HTTP APIs through Writ, each request checked, its credential injected (docs/proxy.md). */
    proxy: z
      .object({
        /** Where the routes are mounted, on `writ serve` and `writ proxy` alike. */
        mount: z.string().regex(/^(?:\/[A-Za-z0-9._~-]+)+$/, 'literal path segments such as /proxy').refine(noDotSegment, 'no . or .. segments').default('/proxy'),
        /** Longest the upstream may stay silent (connecting, answering, streaming) before the request fails. */
        timeout: duration(30),
        routes: z.array(proxyRouteSchema).max(64).default([]),
      })
      .strict()
      .prefault({}),
    /** Human approval of one exact action (`@approval("required")` permits). */
    approvals: z
      .object({
        /** How long a request waits for its approvers before it expires. */
        ttl: duration(600),
        /** Distinct approvers each request needs (N of M), unless its environment says otherwise. */
        required: z.number().int().min(1).max(10).default(1),
        /**
         * Let the requester, or an identity in its delegation chain, approve its
         * own action. Off by default; when on, the vote's audit record says so.
         */
        allowSelfApproval: z.boolean().default(false),
        /** Per environment: `production: { required: 2 }`. */
        environments: z
          .record(slug, z.object({ required: z.number().int().min(1).max(10).optional(), allowSelfApproval: z.boolean().optional() }).strict())
          .default({}),
        /** Longest an MCP client may ask the gateway to hold a call while its approval is pending. */
        maxWait: duration(300),
      })
      .strict()
      .prefault({}),
    /**
     * Break-glass: an emergency grant a human asks for with a reason and an
     * incident, decided by its own policy set (never the normal one), time-boxed,
     * announced to every webhook at once, and reviewed afterwards.
     */
    breakGlass: z
      .object({
        /**
         * The break-glass policy folder: *.cedar files (and environments/<env>/),
         * with the schema and catalog of policy.dir unless it has its own.
         * Default: break-glass/ inside policy.dir; without it, break-glass is off.
         */
        dir: z.string().min(1).optional(),
        /** How long a grant lasts when the request names no duration. */
        defaultDuration: duration(3600),
        /** The longest a grant may last; a request for more is refused, not cut. At most 4h. */
        maxDuration: duration(3600),
      })
      .strict()
      .prefault({}),
    /** Where state changes of approvals and break-glass grants are sent. */
    notifications: z
      .object({
        webhooks: z.array(webhookSchema).max(16).default([]),
      })
      .strict()
      .prefault({}),
    /** Planner→worker delegation (RFC 8693 token exchange at /oauth/token). */
    delegation: z
      .object({
        /** How many times a grant may be handed on: a root task is depth 0, its worker's task depth 1. At most 8. */
        maxDepth: z.number().int().min(0).max(8).default(3),
        /**
         * The `aud` a worker's identity token must name to be the actor of a
         * token exchange, and no other: a token made for one exchange, used
         * once, that authenticates nothing else (never `identity.audience`).
         */
        actorAudience: z.string().min(1).max(256).default('writ-token-exchange'),
      })
      .strict()
      .prefault({}),
    /** Credential providers: ephemeral downstream credentials minted per task and destroyed with it (docs/leases.md). */
    leases: z
      .object({
        postgres: z.array(pgLeaseProviderSchema).max(32).default([]),
      })
      .strict()
      .prefault({})
      .superRefine((l, ctx) => {
        const names = new Set<string>();
        l.postgres.forEach((p, index) => {
          if (names.has(p.name)) ctx.addIssue({ code: 'custom', path: ['postgres', index, 'name'], message: `two lease providers are named ${p.name}` });
          names.add(p.name);
        });
      }),
    reaper: z
      .object({
        intervalMs: z.number().int().min(100).max(3_600_000).default(5000),
      })
      .strict()
      .prefault({}),
    revocation: z
      .object({
        /**
         * How often this process reads task ends written by other processes or
         * nodes sharing its store: the bound on how long a token ended elsewhere
         * can still pass here. Ends in this process apply at once.
         */
        syncIntervalMs: z.number().int().min(100).max(60_000).default(1000),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    if (config.tokens.defaultTtl > config.tokens.maxTtl) {
      ctx.addIssue({ code: 'custom', path: ['tokens', 'defaultTtl'], message: 'must not exceed tokens.maxTtl' });
    }
    if (config.tokens.maxTtl > 86_400) {
      ctx.addIssue({ code: 'custom', path: ['tokens', 'maxTtl'], message: 'task tokens live minutes, never days (max 24h)' });
    }
    if (config.delegation.actorAudience === config.identity.audience) {
      ctx.addIssue({ code: 'custom', path: ['delegation', 'actorAudience'], message: 'must differ from identity.audience: a token handed to a planner for one exchange must authenticate nothing else' });
    }
    if (config.tokens.maxLifetime > 86_400) {
      ctx.addIssue({ code: 'custom', path: ['tokens', 'maxLifetime'], message: 'at most 24h (renewals are fresh decisions, never standing access)' });
    }
    if (config.tokens.clockSkew > 300 || config.tokens.clockSkew > config.tokens.maxTtl) {
      ctx.addIssue({ code: 'custom', path: ['tokens', 'clockSkew'], message: 'at most 5m and at most tokens.maxTtl (skew extends every token)' });
    }
    const names = new Set<string>();
    const issuers = new Set<string>();
    const domains = new Set<string>();
    config.identity.sources.forEach((source, index) => {
      const at = ['identity', 'sources', index];
      if (names.has(source.name)) ctx.addIssue({ code: 'custom', path: [...at, 'name'], message: `two sources are named ${source.name}` });
      names.add(source.name);
      if (source.type === 'oidc') {
        if (issuers.has(source.issuer)) ctx.addIssue({ code: 'custom', path: [...at, 'issuer'], message: 'two sources pin the same issuer' });
        issuers.add(source.issuer);
      } else {
        if (domains.has(source.trustDomain)) ctx.addIssue({ code: 'custom', path: [...at, 'trustDomain'], message: 'two sources name the same trust domain' });
        domains.add(source.trustDomain);
      }
    });
    if (config.server.tls !== undefined && config.server.tls.clientCertificates !== 'off' && !config.identity.sources.some((s) => s.type === 'spiffe' && s.x509BundleFile !== undefined)) {
      ctx.addIssue({ code: 'custom', path: ['server', 'tls', 'clientCertificates'], message: 'needs a spiffe source with x509BundleFile to check client certificates against' });
    }
    const upstreams = new Set<string>();
    config.gateway.upstreams.forEach((u, index) => {
      if (upstreams.has(u.name)) ctx.addIssue({ code: 'custom', path: ['gateway', 'upstreams', index, 'name'], message: `two upstreams are named ${u.name}` });
      upstreams.add(u.name);
    });
    const proxyPrefixes = new Set<string>();
    config.proxy.routes.forEach((r, index) => {
      if (proxyPrefixes.has(r.prefix)) ctx.addIssue({ code: 'custom', path: ['proxy', 'routes', index, 'prefix'], message: `two proxy routes have the prefix ${r.prefix}` });
      proxyPrefixes.add(r.prefix);
    });
    if (config.breakGlass.maxDuration > 4 * 3600) {
      ctx.addIssue({ code: 'custom', path: ['breakGlass', 'maxDuration'], message: 'break-glass is time-boxed: at most 4h' });
    }
    if (config.breakGlass.defaultDuration > config.breakGlass.maxDuration) {
      ctx.addIssue({ code: 'custom', path: ['breakGlass', 'defaultDuration'], message: 'must not exceed breakGlass.maxDuration' });
    }
    const hooks = new Set<string>();
    config.notifications.webhooks.forEach((w, index) => {
      if (hooks.has(w.name)) ctx.addIssue({ code: 'custom', path: ['notifications', 'webhooks', index, 'name'], message: `two webhooks are named ${w.name}` });
      hooks.add(w.name);
    });
    for (const environment of Object.keys(config.approvals.environments)) {
      if (!config.policy.environments.includes(environment)) {
        ctx.addIssue({ code: 'custom', path: ['approvals', 'environments', environment], message: `not one of policy.environments (${config.policy.environments.join(', ')})` });
      }
    }
    if (config.identity.devIssuer.maxTtl > 300) {
      ctx.addIssue({ code: 'custom', path: ['identity', 'devIssuer', 'maxTtl'], message: 'identity tokens live at most 5 minutes' });
    }
  });

export type WritConfig = z.output<typeof configSchema> & {
  /** Absolute paths, resolved at load time. */
  readonly paths: {
    readonly dataDir: string;
    readonly policyDir: string;
    /** The break-glass policy folder; null when there is none (break-glass is then off). */
    readonly breakGlassDir: string | null;
    readonly configFile: string | null;
    readonly base: string;
  };
};

/** The folder this package is installed in (holds `policies/`). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface LoadConfigOptions {
  /** Path given with `--config`; missing file is an error. */
  readonly configFile?: string | undefined;
  /** Overrides from command-line flags, in config shape. */
  readonly flags?: { port?: number | undefined; host?: string | undefined; dataDir?: string | undefined; dev?: boolean | undefined };
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Skip looking for ./writ.yaml (tests). */
  readonly ignoreDefaultFile?: boolean;
}

/**
 * Loads, validates and freezes the configuration.
 * @throws WritError ERR_CONFIG_INVALID naming the first bad field.
 */
export function loadConfig(options: LoadConfigOptions = {}): WritConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  let configFile: string | null = null;
  if (options.configFile !== undefined) {
    configFile = resolve(cwd, options.configFile);
    if (!existsSync(configFile)) throw configError(`config file not found: ${configFile}`);
  } else if (!options.ignoreDefaultFile && existsSync(resolve(cwd, 'writ.yaml'))) {
    configFile = resolve(cwd, 'writ.yaml');
  }

  let raw: Record<string, unknown> = {};
  if (configFile !== null) {
    let parsed: unknown;
    try {
      parsed = parseYaml(readFileSync(configFile, 'utf8'), { schema: 'core', maxAliasCount: 10 });
    } catch (error) {
      throw configError(`${configFile}: ${(error as Error).message}`);
    }
    if (parsed !== null && parsed !== undefined) {
      if (typeof parsed !== 'object' || Array.isArray(parsed)) throw configError(`${configFile}: expected a mapping at the top level`);
      // A section left with only comments (`database:`) parses as null: treat it as absent.
      raw = Object.fromEntries(Object.entries(parsed).filter(([, value]) => value !== null));
    }
  }

  const merged = structuredClone(raw) as Record<string, Record<string, unknown>>;
  const section = (name: string): Record<string, unknown> => {
    const existing = merged[name];
    if (existing !== undefined && (typeof existing !== 'object' || existing === null)) throw configError(`${name}: expected a mapping`);
    merged[name] ??= {};
    return merged[name];
  };
  if (env.WRIT_PORT !== undefined) section('server').port = parseIntStrict(env.WRIT_PORT, 'WRIT_PORT');
  if (env.WRIT_HOST !== undefined) section('server').host = env.WRIT_HOST;
  if (env.WRIT_DATA_DIR !== undefined) (merged as Record<string, unknown>).dataDir = env.WRIT_DATA_DIR;
  if (env.WRIT_DATABASE_URL !== undefined && env.WRIT_DATABASE_URL !== '') section('database').url = env.WRIT_DATABASE_URL;
  if (env.WRIT_LOG_LEVEL !== undefined) section('log').level = env.WRIT_LOG_LEVEL;
  if (options.flags?.port !== undefined) section('server').port = options.flags.port;
  if (options.flags?.host !== undefined) section('server').host = options.flags.host;
  if (options.flags?.dataDir !== undefined) (merged as Record<string, unknown>).dataDir = options.flags.dataDir;
  if (options.flags?.dev === true) {
    const identity = section('identity');
    const dev = identity.devIssuer;
    if (dev !== undefined && (typeof dev !== 'object' || dev === null)) throw configError('identity.devIssuer: expected a mapping');
    identity.devIssuer = { ...(dev as Record<string, unknown> | undefined), enabled: true };
  }

  const result = configSchema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : '(top level)';
    throw configError(`${configFile ?? 'configuration'}: ${where}: ${issue?.message ?? 'invalid'}`);
  }
  const base = configFile === null ? cwd : dirname(configFile);
  const dataDirFromFlagOrEnv = options.flags?.dataDir !== undefined || env.WRIT_DATA_DIR !== undefined;
  const dataDir = resolve(dataDirFromFlagOrEnv ? cwd : base, result.data.dataDir);
  const policyDir =
    result.data.policy.dir === undefined
      ? resolve(PACKAGE_ROOT, 'policies')
      : isAbsolute(result.data.policy.dir)
        ? result.data.policy.dir
        : resolve(base, result.data.policy.dir);
  const breakGlassDir =
    result.data.breakGlass.dir === undefined
      ? existsSync(join(policyDir, 'break-glass'))
        ? join(policyDir, 'break-glass')
        : null
      : resolve(base, result.data.breakGlass.dir);
  return deepFreeze({ ...result.data, paths: { dataDir, policyDir, breakGlassDir, configFile, base } });
}

/** A path from the configuration, resolved against the config file's folder (or the working folder). */
export function resolveConfigPath(config: WritConfig, path: string): string {
  return isAbsolute(path) ? path : resolve(config.paths.base, path);
}

function parseIntStrict(value: string, name: string): number {
  if (!/^\d{1,5}$/.test(value)) throw configError(`${name}: expected a port number, got ${JSON.stringify(value.slice(0, 20))}`);
  return Number(value);
}

function configError(detail: string): WritError {
  return new WritError('ERR_CONFIG_INVALID', { detail });
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const member of Object.values(value as Record<string, unknown>)) deepFreeze(member);
  }
  return value;
}
