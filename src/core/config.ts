/**
 * Configuration: one schema, validated once at start-up, then frozen.
 *
 * Precedence, lowest to highest: built-in defaults, `writ.yaml` (from
 * `--config`, else `./writ.yaml` when present), environment variables
 * (`WRIT_*`), command-line flags.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { WritError } from './errors.js';

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

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8750),
        /** Largest request body accepted, in bytes. */
        bodyLimit: z.number().int().min(1024).max(10 * 1024 * 1024).default(64 * 1024),
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
      })
      .strict()
      .prefault({}),
    identity: z
      .object({
        /** What identity tokens must name in `aud` to be accepted by Writ. */
        audience: z.string().min(1).default('writ'),
        devIssuer: z
          .object({
            enabled: z.boolean().default(true),
            /** Longest identity token the dev issuer mints (JWT-SVIDs are short-lived). */
            maxTtl: duration(300),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    policy: z
      .object({
        /** Folder with schema.cedarschema, *.cedar and resources.yaml. Default: the bundled examples. */
        dir: z.string().min(1).optional(),
        /** Environments a task may name. */
        environments: z.array(slug).min(1).default(['development', 'sandbox', 'staging', 'production']),
      })
      .strict()
      .prefault({}),
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
    if (config.tokens.clockSkew > 300 || config.tokens.clockSkew > config.tokens.maxTtl) {
      ctx.addIssue({ code: 'custom', path: ['tokens', 'clockSkew'], message: 'at most 5m and at most tokens.maxTtl (skew extends every token)' });
    }
    if (config.identity.devIssuer.maxTtl > 300) {
      ctx.addIssue({ code: 'custom', path: ['identity', 'devIssuer', 'maxTtl'], message: 'identity tokens live at most 5 minutes' });
    }
  });

export type WritConfig = z.output<typeof configSchema> & {
  /** Absolute paths, resolved at load time. */
  readonly paths: { readonly dataDir: string; readonly policyDir: string; readonly configFile: string | null };
};

/** The folder this package is installed in (holds `policies/`). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface LoadConfigOptions {
  /** Path given with `--config`; missing file is an error. */
  readonly configFile?: string | undefined;
  /** Overrides from command-line flags, in config shape. */
  readonly flags?: { port?: number | undefined; host?: string | undefined; dataDir?: string | undefined };
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
  return deepFreeze({ ...result.data, paths: { dataDir, policyDir, configFile } });
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
