/**
 * A real Writ for tests: its own data dir, a real HTTP server on an ephemeral
 * port, SQLite by default or a fresh PostgreSQL database.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { stringify as toYaml } from 'yaml';
import type { Clock } from '../../src/core/clock.js';
import { loadConfig } from '../../src/core/config.js';
import { ADMIN_SCOPES, type AdminScope, type Identity } from '../../src/core/types.js';
import { createServer } from '../../src/server/app.js';
import type { AuditRow } from '../../src/store/store.js';
import { mintJwt } from '../../src/tokens/jwt.js';
import { createWrit, type Writ } from '../../src/writ.js';
import { createTestDatabase, type TestDatabase } from './pg.js';

export const AGENT = 'spiffe://demo.local/agent/support';

export interface Harness {
  readonly writ: Writ;
  readonly app: FastifyInstance;
  readonly url: string;
  readonly dataDir: string;
  /** POSTs JSON; returns status, parsed body and headers. */
  post(path: string, body: unknown, bearer?: string, headers?: Record<string, string>): Promise<HttpAnswer>;
  get(path: string, bearer?: string): Promise<HttpAnswer>;
  registerAgent(id?: string, overrides?: Partial<Parameters<Writ['registerIdentity']>[0]>): Promise<Identity>;
  identityToken(id?: string): Promise<string>;
  /** A fresh admin token with `scopes` (default all). */
  adminToken(scopes?: readonly AdminScope[]): Promise<string>;
  /** Every audit record, parsed. */
  auditRecords(): Promise<(Record<string, unknown> & { seq: number; type: string })[]>;
  auditRows(): Promise<AuditRow[]>;
  close(): Promise<void>;
}

export interface HttpAnswer {
  readonly status: number;
  readonly body: any;
  readonly headers: Headers;
}

export interface HarnessOptions {
  /** Extra writ.yaml content (deep keys such as { tokens: { maxTtl: 60 } }). */
  readonly config?: Record<string, unknown>;
  readonly clock?: Clock;
  readonly backend?: 'sqlite' | 'postgres';
  /** For postgres: a fresh database to use (dropped on close) instead of creating one. */
  readonly database?: TestDatabase;
  /** Run the dev issuer (`writ serve --dev`); default true. */
  readonly dev?: boolean;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-test-'));
  let database: TestDatabase | undefined;
  const yaml: Record<string, unknown> = { ...(options.config ?? {}), server: { port: 0, ...((options.config?.server as object) ?? {}) } };
  if (options.backend === 'postgres') {
    database = options.database ?? (await createTestDatabase());
    if (database === undefined) throw new Error('no PostgreSQL');
    yaml.database = { url: database.url };
  }
  const configFile = join(dataDir, 'writ.yaml');
  writeFileSync(configFile, toYaml(yaml));
  const config = loadConfig({ configFile, env: {}, flags: { dataDir, dev: options.dev ?? true } });
  const logger = pino({ level: 'silent' });
  const writ = await createWrit({ config, logger, env: {}, ...(options.clock ? { clock: options.clock } : {}) });
  const app = createServer(writ, { logger });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  const url = `http://127.0.0.1:${address.port}`;

  const request = async (method: string, path: string, body: unknown, bearer?: string, headers: Record<string, string> = {}): Promise<HttpAnswer> => {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }),
        ...headers,
      },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text.length > 0 ? JSON.parse(text) : undefined;
    } catch {
      // leave as text
    }
    return { status: response.status, body: parsed, headers: response.headers };
  };

  const auditRows = async () => writ.store.readAudit(0, 1_000_000);
  return {
    writ,
    app,
    url,
    dataDir,
    post: (path, body, bearer, headers) => request('POST', path, body, bearer, headers),
    get: (path, bearer) => request('GET', path, undefined, bearer),
    registerAgent: (id = AGENT, overrides = {}) =>
      writ.registerIdentity({ id, actorType: 'agent', owner: 'alice@example.com', environment: 'production', ...overrides }),
    identityToken: async (id = AGENT) => (await writ.issueIdentityToken(id)).token,
    adminToken: async (scopes = ADMIN_SCOPES) => (await writ.createAdminToken({ name: 'test', scopes: [...scopes] }, { id: 'test' })).token,
    auditRows,
    auditRecords: async () => {
      await writ.audit.flush();
      return (await auditRows()).map((row) => JSON.parse(row.record) as Record<string, unknown> & { seq: number; type: string });
    },
    async close() {
      await app.close();
      await writ.close();
      if (database !== undefined) await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The support task the tests ask for, unless they say otherwise. */
export function supportTask(overrides: Record<string, unknown> = {}) {
  return {
    purpose: 'Answer ticket T-1042',
    intent: 'customer-support',
    environment: 'production',
    ttl: 300,
    scopes: [
      { action: 'read', resource: 'db:orders/*' },
      { action: 'write', resource: 'tickets:T-1042' },
    ],
    ...overrides,
  };
}

/** Decodes a JWT's payload without verifying it (tests only). */
export function claimsOf(token: string): Record<string, any> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, any>;
}

/** Re-signs `payload` with Writ's real task key, to build tokens that differ in one claim only. */
export function resignTaskToken(writ: Writ, payload: Record<string, unknown>, typ = 'task+jwt'): string {
  return mintJwt(writ.taskKeys.active, typ, payload);
}

/** A token signed by a key Writ never had. */
export function tokenFromUnknownKey(payload: Record<string, unknown>): string {
  const { privateKey } = generateKeyPairSync('ed25519');
  const header = Buffer.from(JSON.stringify({ alg: 'EdDSA', kid: 'attacker-key', typ: 'task+jwt' })).toString('base64url');
  const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
  return `${header}.${body}.${sign(null, Buffer.from(`${header}.${body}`), privateKey).toString('base64url')}`;
}

/** An unsigned token (`alg: none`). */
export function unsignedToken(payload: Record<string, unknown>, typ = 'task+jwt'): string {
  const header = Buffer.from(JSON.stringify({ alg: 'none', typ })).toString('base64url');
  return `${header}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.`;
}

/**
 * RFC 8693 token exchange at /oauth/token: the holder of `subjectToken` hands
 * `scope` (space-separated `action:resource`) to `worker`, whose actor token
 * is minted here. The answer as it came; use `delegated` for one that must pass.
 */
export async function exchangeFor(h: Harness, subjectToken: string, worker: string, scope: string, extra: Record<string, string> = {}): Promise<HttpAnswer> {
  const actor = (await h.writ.issueIdentityToken(worker, undefined, { forExchange: true })).token;
  const form = new URLSearchParams({
    grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
    subject_token: subjectToken,
    subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    actor_token: actor,
    actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
    scope,
    ...extra,
  });
  return h.post('/oauth/token', form.toString(), undefined, { 'content-type': 'application/x-www-form-urlencoded' });
}

/** `exchangeFor` that must be granted: the child task's id and token. */
export async function delegated(h: Harness, subjectToken: string, worker: string, scope: string, extra: Record<string, string> = {}): Promise<{ id: string; token: string }> {
  const answer = await exchangeFor(h, subjectToken, worker, scope, extra);
  if (answer.status !== 200) throw new Error(`delegation to ${worker} refused: ${answer.status} ${JSON.stringify(answer.body)}`);
  return { id: answer.body.task_id as string, token: answer.body.access_token as string };
}
