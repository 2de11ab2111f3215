/**
 * The composition root: builds one Writ from configuration. The server, the
 * CLI and in-process embedders all start here, so they share one wiring.
 *
 * Start-up order matters and is fail-closed: the store is opened and migrated,
 * the master key opens the signing keys (or start-up stops), the policy set
 * parses and validates (or start-up stops), ended-but-unexpired tasks are
 * loaded into the revocation list, and overdue tasks are expired, all before
 * the first request can be answered.
 */
import type { Logger } from 'pino';
import { createAuditLog, type AuditLog } from './audit/log.js';
import { createBroker, type Broker } from './broker/broker.js';
import { systemClock, type Clock } from './core/clock.js';
import { loadConfig, type WritConfig } from './core/config.js';
import { WritError } from './core/errors.js';
import type { Identity } from './core/types.js';
import { createActionCheck, type ActionCheck } from './enforce/action-check.js';
import { createRevocationList, type RevocationList } from './enforce/revocation-list.js';
import { createEventBus, type EventBus } from './events/bus.js';
import { createIdentityAuthenticator } from './identity/authenticate.js';
import { devIssuerId, mintIdentityToken } from './identity/dev-issuer.js';
import { createRegistry, type RegisterIdentityInput, type Registry } from './identity/registry.js';
import { createPolicyEngine, type PolicyEngine } from './policy/engine.js';
import { loadPolicySet } from './policy/policy-set.js';
import { loadMasterKey } from './secrets/master-key.js';
import { openStore } from './store/open.js';
import type { Store } from './store/store.js';
import { loadKeyRing, type KeyRing } from './tokens/key-ring.js';
import { createTaskTokenVerifier } from './tokens/task-token.js';

export interface Writ {
  readonly config: WritConfig;
  readonly clock: Clock;
  readonly store: Store;
  readonly registry: Registry;
  readonly broker: Broker;
  readonly audit: AuditLog;
  readonly bus: EventBus;
  readonly revocations: RevocationList;
  readonly taskKeys: KeyRing;
  /** Undefined when the dev issuer is disabled. */
  readonly devIssuer: { readonly ring: KeyRing; readonly issuer: string } | undefined;
  /** True when this start generated the master key file. */
  readonly masterKeyCreated: boolean;
  /**
   * The action check, in process: the same answer `POST /v1/authorize` gives
   * for the same inputs. Never throws for a bad token or request; denies.
   */
  readonly authorize: ActionCheck;
  /** The policy engine currently deciding. */
  policy(): PolicyEngine;
  /**
   * Registers an identity and audits it.
   * @throws WritError ERR_VALIDATION, ERR_IDENTITY_EXISTS, ERR_AUDIT_UNAVAILABLE
   */
  registerIdentity(input: RegisterIdentityInput): Promise<Identity>;
  /**
   * Mints a dev-issuer identity token (JWT-SVID shape) for a registered, active identity.
   * @throws WritError ERR_IDENTITY_NOT_FOUND, ERR_IDENTITY_INACTIVE, ERR_CONFIG_INVALID (dev issuer off)
   */
  issueIdentityToken(id: string, ttlSeconds?: number): Promise<{ token: string; expiresAt: number }>;
  /**
   * Reads task ends made by other processes or nodes sharing the store into
   * this process's revocation list. Runs every `revocation.syncIntervalMs`
   * once started; callable directly.
   */
  syncRevocations(): Promise<number>;
  /**
   * Starts the background work: the reaper (every `reaper.intervalMs`, also
   * writing audit records owed for task ends) and the revocation sync.
   */
  startReaper(): void;
  /** Stops the reaper, flushes the audit log and closes the store. */
  close(): Promise<void>;
}

export interface CreateWritOptions {
  readonly config?: WritConfig;
  readonly clock?: Clock;
  readonly logger?: Logger;
  readonly env?: NodeJS.ProcessEnv;
}

export async function createWrit(options: CreateWritOptions = {}): Promise<Writ> {
  const config = options.config ?? loadConfig({ env: options.env });
  const clock = options.clock ?? systemClock;
  const logger = options.logger;
  const store = await openStore({ databaseUrl: config.database.url, dataDir: config.paths.dataDir, sqliteSynchronous: config.database.sqliteSynchronous });
  try {
    return await assemble(config, clock, store, logger, options.env);
  } catch (error) {
    await store.close().catch(() => undefined);
    throw error;
  }
}

async function assemble(config: WritConfig, clock: Clock, store: Store, logger: Logger | undefined, env: NodeJS.ProcessEnv | undefined): Promise<Writ> {
  const masterKey = loadMasterKey({ env: env ?? process.env, dataDir: config.paths.dataDir });
  const taskKeys = await loadKeyRing(store, masterKey.bytes, 'task', clock.now());
  const devRing = config.identity.devIssuer.enabled ? await loadKeyRing(store, masterKey.bytes, 'identity-dev', clock.now()) : undefined;
  const devIssuer = devRing && { ring: devRing, issuer: devIssuerId(config.issuer) };

  const engine = createPolicyEngine(loadPolicySet(config.paths.policyDir));
  const bus = createEventBus((error, event) => logger?.error({ err: error, event: event.type }, 'event handler failed'));
  const audit = createAuditLog({ store, clock, onError: (error) => logger?.error({ err: error }, 'audit append failed') });
  const registry = createRegistry({ store, clock });
  const skewMs = config.tokens.clockSkew * 1000;
  const revocations = createRevocationList({ bus, clockSkewMs: skewMs });
  // Tokens are accepted until exp + skew, so ended tasks are remembered that long too.
  for (const task of await store.listEndedUnexpiredTasks(clock.now() - skewMs)) revocations.add(task.id, task.expiresAt);

  const taskTokens = createTaskTokenVerifier({
    ring: taskKeys,
    issuer: config.issuer,
    audience: config.tokens.audience,
    clockSkewSeconds: config.tokens.clockSkew,
  });
  const authenticator = createIdentityAuthenticator({
    devIssuer: devIssuer && { ...devIssuer, maxTtlSeconds: config.identity.devIssuer.maxTtl },
    audience: config.identity.audience,
    clockSkewSeconds: config.tokens.clockSkew,
    registry,
    clock,
  });
  const policy = () => engine;
  const broker = createBroker({
    registry,
    authenticator,
    policy,
    taskKeys,
    taskTokens,
    store,
    audit,
    bus,
    clock,
    settings: {
      issuer: config.issuer,
      audience: config.tokens.audience,
      defaultTtlSeconds: config.tokens.defaultTtl,
      maxTtlSeconds: config.tokens.maxTtl,
      environments: config.policy.environments,
    },
  });
  const authorize = createActionCheck({ verifier: taskTokens, revocations, registry, policy, audit, clock });

  // Other nodes' clocks may lag ours: look back well past one sync interval.
  const syncWindowMs = 2 * config.revocation.syncIntervalMs + 60_000;
  const syncRevocations = async (): Promise<number> => {
    const now = clock.now();
    const ended = await store.listTasksEndedSince(now - syncWindowMs);
    let added = 0;
    for (const task of ended) {
      if (task.expiresAt + skewMs >= now && !revocations.isRevoked(task.id)) {
        revocations.add(task.id, task.expiresAt);
        added++;
      }
    }
    return added;
  };

  // Tasks that passed their expiry while Writ was down are expired, and records
  // owed from before, written, before anything is served.
  await broker.reapExpired();
  await broker.flushEndRecords();

  let reaper: NodeJS.Timeout | undefined;
  let revocationSync: NodeJS.Timeout | undefined;
  let closed = false;
  return {
    config,
    clock,
    store,
    registry,
    broker,
    audit,
    bus,
    revocations,
    taskKeys,
    devIssuer,
    masterKeyCreated: masterKey.created,
    authorize,
    policy,
    async registerIdentity(input) {
      const identity = await registry.register(input);
      try {
        await audit.append({
          type: 'identity.registered',
          decision: 'allow',
          actor: { id: identity.id, actorType: identity.actorType, owner: identity.owner },
          data: { environment: identity.environment, labels: identity.labels, expiresAt: identity.expiresAt },
        });
      } catch (error) {
        // An identity whose registration is not on the record gets nothing.
        await registry.setState(identity.id, 'suspended').catch(() => undefined);
        throw error;
      }
      return identity;
    },
    async issueIdentityToken(id, ttlSeconds) {
      if (devIssuer === undefined) throw new WritError('ERR_CONFIG_INVALID', { detail: 'the dev issuer is disabled (identity.devIssuer.enabled)' });
      const identity = await registry.get(id);
      if (identity === undefined) throw new WritError('ERR_IDENTITY_NOT_FOUND', { detail: `${id} is not registered` });
      const maxTtl = config.identity.devIssuer.maxTtl;
      const minted = mintIdentityToken(devIssuer.ring, {
        issuer: devIssuer.issuer,
        audience: config.identity.audience,
        identity,
        ttlSeconds: ttlSeconds ?? maxTtl,
        maxTtlSeconds: maxTtl,
        now: clock.now(),
      });
      await audit.append({
        type: 'identity.token_issued',
        decision: 'allow',
        actor: { id: identity.id, actorType: identity.actorType, owner: identity.owner },
        data: { issuer: devIssuer.issuer, expiresAt: minted.expiresAt },
      });
      return minted;
    },
    syncRevocations,
    startReaper() {
      if (reaper !== undefined || closed) return;
      reaper = setInterval(() => {
        revocations.prune(clock.now());
        broker
          .reapExpired()
          .then(() => broker.flushEndRecords())
          .catch((error: unknown) => logger?.error({ err: error }, 'reaper failed'));
      }, config.reaper.intervalMs);
      reaper.unref();
      revocationSync = setInterval(() => {
        syncRevocations().catch((error: unknown) => logger?.error({ err: error }, 'revocation sync failed'));
      }, config.revocation.syncIntervalMs);
      revocationSync.unref();
    },
    async close() {
      if (closed) return;
      closed = true;
      if (reaper !== undefined) clearInterval(reaper);
      if (revocationSync !== undefined) clearInterval(revocationSync);
      await audit.flush();
      await store.close();
    },
  };
}
