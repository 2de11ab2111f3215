/**
 * The composition root: builds one Writ from configuration. The server, the
 * CLI and in-process embedders all start here, so they share one wiring.
 *
 * Start-up order matters and is fail-closed: the store is opened and migrated,
 * the master key opens the signing keys (or start-up stops), the policy set
 * parses and validates (or start-up stops), ended-but-unexpired tasks are
 * loaded into the revocation list (and narrowed ones into the narrowing
 * list), and overdue tasks are expired, all before the first request can be
 * answered.
 */
import { watch, type FSWatcher } from 'node:fs';
import { relative } from 'node:path';
import { pino, type Logger } from 'pino';
import { auditActor, createAuditLog, type AuditActor, type AuditEvent, type AuditEventType, type AuditLog } from './audit/log.js';
import { createBroker, type Broker } from './broker/broker.js';
import { createDelegation, type Delegation } from './broker/delegation.js';
import { createDrift, type DriftSummary } from './broker/drift.js';
import { systemClock, type Clock } from './core/clock.js';
import { loadConfig, resolveConfigPath, type WritConfig } from './core/config.js';
import { isWritError, WritError, type WritErrorCode } from './core/errors.js';
import type { AdminScope, Identity, IdentityState, Task } from './core/types.js';
import { createActionCheck, type ActionCheck } from './enforce/action-check.js';
import { createNarrowingList, keptScopes, type NarrowingList } from './enforce/narrowing-list.js';
import { createRevocationList, type RevocationList } from './enforce/revocation-list.js';
import { createEventBus, type EventBus } from './events/bus.js';
import {
  createAdminTokens,
  identityPrincipal,
  looksLikeAdminToken,
  type AdminPrincipal,
  requireGrantable,
  createAdminTokenSchema,
  type AdminTokens,
  type CreateAdminTokenInput,
} from './identity/admin-tokens.js';
import { createIdentityAuthenticator, type IdentityAuthenticator } from './identity/authenticate.js';
import { devIssuerId, mintIdentityToken } from './identity/dev-issuer.js';
import { claimIdentitySchema, createRegistry, parseOrThrow, registerIdentitySchema, type ClaimIdentityInput, type RegisterIdentityInput, type Registry } from './identity/registry.js';
import { createTrustSources, type TrustSources } from './identity/trust-sources.js';
import { createPolicyEngine, type PolicyEngine } from './policy/engine.js';
import { createObservations } from './policy/observations.js';
import { loadPolicySet, type PolicyProblem, type PolicySet } from './policy/policy-set.js';
import { releaseCompiledSets } from './policy/request-plan.js';
import { createVault, type Vault } from './leases/vault.js';
import { createLeaseManager, type LeaseManager } from './leases/manager.js';
import { createPgLeaseProvider } from './leases/postgres.js';
import { createApprovals, type Approvals } from './broker/approvals.js';
import { createBreakGlass, type BreakGlassService } from './broker/break-glass.js';
import { createNotifier } from './events/webhooks.js';
import { loadMasterKey } from './secrets/master-key.js';
import { openStore } from './store/open.js';
import type { AdminTokenRecord, Store } from './store/store.js';
import { loadKeyRing, type KeyRing } from './tokens/key-ring.js';
import { createTaskTokenVerifier, type TaskTokenVerifier } from './tokens/task-token.js';

export interface Writ {
  readonly config: WritConfig;
  readonly clock: Clock;
  readonly store: Store;
  readonly registry: Registry;
  readonly broker: Broker;
  /** Planner→worker delegation: RFC 8693 token exchange. */
  readonly delegation: Delegation;
  readonly audit: AuditLog;
  readonly bus: EventBus;
  readonly revocations: RevocationList;
  /** Tasks whose grant a policy change narrowed after their token was minted, and the scopes they keep. */
  readonly narrowings: NarrowingList;
  readonly taskKeys: KeyRing;
  /** Verifies task tokens (signature, expiry, audience), with a cache of recent ones. */
  readonly taskTokens: TaskTokenVerifier;
  /** Undefined when the dev issuer is disabled. */
  readonly devIssuer: { readonly ring: KeyRing; readonly issuer: string } | undefined;
  readonly trustSources: TrustSources;
  readonly authenticator: IdentityAuthenticator;
  readonly adminTokens: AdminTokens;
  /** Downstream credentials, sealed under the master key, injected by enforcement points and never shown to agents. */
  readonly vault: Vault;
  /** Downstream credentials minted per task (PostgreSQL roles), revoked when the task ends (docs/leases.md). */
  readonly leases: LeaseManager;
  /** Human approvals of exact actions: listed, answered, waited for. */
  readonly approvals: Approvals;
  /** Emergency grants: started, ended, reviewed. */
  readonly breakGlass: BreakGlassService;
  /** The break-glass policy set's engine; undefined when break-glass is off. */
  breakGlassPolicy(): PolicyEngine | undefined;
  /** True when this start generated the master key file. */
  readonly masterKeyCreated: boolean;
  /**
   * The action check, in process: the same answer `POST /v1/authorize` gives
   * for the same inputs. Never throws for a bad token or request; denies.
   */
  readonly authorize: ActionCheck;
  /** The policy engine currently deciding. */
  policy(): PolicyEngine;
  /** The shadow (candidate) engine, when `policy.shadow` is configured and its set loaded: recorded, never enforced. */
  shadowPolicy(): PolicyEngine | undefined;
  /**
   * Loads the policy folder again. A valid set with a new version replaces the
   * one deciding (at once, for every later decision), then every active grant
   * is decided again by it (drift: narrowed or revoked where it no longer
   * holds; see broker/drift.ts) before this resolves; an invalid set is refused,
   * the old one keeps serving and nothing is decided again. All of it is
   * audited. Reloads run one at a time.
   */
  reloadPolicy(trigger: string): Promise<PolicyReload>;
  /**
   * Registers an identity and audits it. Admin scopes for a human need a
   * `grantor` holding them and `admin:tokens` (undefined: a local operator).
   * @throws WritError ERR_VALIDATION, ERR_IDENTITY_EXISTS, ERR_FORBIDDEN, ERR_AUDIT_UNAVAILABLE
   */
  registerIdentity(input: RegisterIdentityInput, actor?: AuditActor, grantor?: AdminPrincipal): Promise<Identity>;
  /**
   * Gives a quarantined identity an accountable owner and makes it active.
   * @throws WritError ERR_VALIDATION, ERR_IDENTITY_NOT_FOUND, ERR_IDENTITY_STATE_CONFLICT
   */
  claimIdentity(id: string, input: ClaimIdentityInput, actor: AuditActor): Promise<Identity>;
  /**
   * Suspends (reversible) or decommissions (final) an identity, or reactivates
   * a suspended one. Suspending and decommissioning revoke its tasks at once.
   * @throws WritError ERR_IDENTITY_NOT_FOUND, ERR_IDENTITY_STATE_CONFLICT
   */
  changeIdentityState(id: string, change: IdentityStateChange, actor: AuditActor, note?: string): Promise<{ identity: Identity; revokedTasks: number }>;
  /**
   * The admin principal behind a bearer credential: an admin token, or the
   * identity token of an active human holding admin scopes. Otherwise the
   * precise reason, for the audit log.
   */
  authenticateAdmin(bearer: string | undefined): Promise<AdminAuthentication>;
  /**
   * Mints an admin token and audits it; the token is in the result only. Its
   * scopes must be among the `grantor`'s (undefined: a local operator).
   * @throws WritError ERR_VALIDATION, ERR_FORBIDDEN, ERR_AUDIT_UNAVAILABLE
   */
  createAdminToken(input: CreateAdminTokenInput, actor: AuditActor, grantor?: AdminPrincipal): Promise<{ token: string; record: AdminTokenRecord }>;
  /** @throws WritError ERR_NOT_FOUND */
  revokeAdminToken(id: string, actor: AuditActor): Promise<AdminTokenRecord>;
  /** At the first start of a store: the bootstrap admin token, audited; undefined ever after. */
  bootstrapAdminToken(): Promise<{ token: string; record: AdminTokenRecord } | undefined>;
  /**
   * Mints a dev-issuer identity token (JWT-SVID shape) for a registered, active identity.
   * @throws WritError ERR_IDENTITY_NOT_FOUND, ERR_IDENTITY_INACTIVE, ERR_CONFIG_INVALID (dev issuer off)
   */
  issueIdentityToken(id: string, ttlSeconds?: number, options?: { /** For one token exchange only: `aud` is `delegation.actorAudience`. */ readonly forExchange?: boolean }): Promise<{ token: string; expiresAt: number }>;
  /**
   * Reads task ends and grant narrowings made by other processes or nodes
   * sharing the store into this process's revocation and narrowing lists.
   * Runs every `revocation.syncIntervalMs` once started (followed by the drift
   * sweep); callable directly. Returns how many tasks it newly revoked or narrowed.
   */
  syncRevocations(): Promise<number>;
  /**
   * Writes the audit records still owed (task ends and identity changes whose
   * record could not be written when they happened). The reaper runs this; returns how many.
   */
  flushOwedRecords(): Promise<number>;
  /**
   * Starts the background work: the reaper (every `reaper.intervalMs`, also
   * writing audit records owed for task ends), the revocation sync and, after
   * each sync, the drift sweep of grants a replaced policy version decided.
   */
  startReaper(): void;
  /**
   * Resolves once the background work started so far has settled: what a
   * task's end sets off (its delegated tasks' cascade, its approval requests
   * cancelled, a break-glass grant's end recorded), and what that sets off in turn.
   */
  settled(): Promise<void>;
  /** Stops the reaper, flushes the audit log and closes the store. */
  close(): Promise<void>;
}

export type IdentityStateChange = 'suspend' | 'decommission' | 'reactivate';

export type PolicyReload =
  | {
    readonly ok: true;
    readonly changed: boolean;
    readonly version: string;
    readonly previous: string;
    /** When the version changed: what deciding every active grant again did. */
    readonly drift?: DriftSummary;
  }
  | { readonly ok: false; readonly version: string; readonly problems: readonly PolicyProblem[] };

/** Writ instances created in this process, to give each its own compiled-set slots. */
let instances = 0;

/**
 * Hands out slot names from a ring of four (`<role>-0` … `<role>-3`),
 * never the one given (the serving set's): a reload compiles into a slot the
 * serving engine does not use, and memory stays bounded however often it runs.
 */
function slotRing(role: string, start = 0): (serving: string | undefined) => string {
  let next = start;
  return (serving) => {
    for (;;) {
      const slot = `${role}-${next++ % 4}`;
      if (slot !== serving) return slot;
    }
  };
}

function problemsOf(error: unknown, dir: string): PolicyProblem[] {
  return isWritError(error, 'ERR_POLICY_INVALID')
    ? ((error.extensions.problems as PolicyProblem[] | undefined) ?? [])
    : [{ file: dir, message: (error as Error)?.message ?? String(error) }];
}

/** The shadow engine at start-up, or none (logged) when its folder does not load yet. */
function loadShadow(dir: string, slot: string, engineOf: (set: PolicySet) => PolicyEngine, logger: Logger | undefined): PolicyEngine | undefined {
  try {
    return engineOf(loadPolicySet(dir, { slot }));
  } catch (error) {
    logger?.error({ dir, problems: problemsOf(error, dir).slice(0, 20) }, 'shadow policy set refused: it is invalid; nothing is trialled until it loads');
    return undefined;
  }
}

/** How long delivered or failed webhook messages (without their bodies) are kept, for operators to look into. */
const SETTLED_MESSAGE_RETENTION_MS = 7 * 86_400_000;

/** Quiet time after the last change in the policy folder before it is reloaded (editors write in bursts). */
const POLICY_RELOAD_DEBOUNCE_MS = 300;

export type AdminAuthentication =
  | { readonly ok: true; readonly principal: AdminPrincipal }
  | { readonly ok: false; readonly code: WritErrorCode; readonly detail: string; readonly subject?: string };

const STATE_CHANGES: Record<IdentityStateChange, { from: readonly IdentityState[]; to: IdentityState; event: AuditEventType }> = {
  suspend: { from: ['active', 'quarantined'], to: 'suspended', event: 'identity.suspended' },
  decommission: { from: ['active', 'quarantined', 'suspended'], to: 'decommissioned', event: 'identity.decommissioned' },
  reactivate: { from: ['suspended'], to: 'active', event: 'identity.reactivated' },
};

/** An admin principal as the actor of an audit record. */
export function adminActor(principal: AdminPrincipal): AuditActor {
  return { id: principal.id, actorType: principal.kind === 'token' ? 'admin-token' : 'human' };
}

/** How old an unrecorded identity change must be before the flush records it (a fresh one may still be recording). */
const OWED_RECORD_GRACE_MS = 5000;

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
  const store = await openStore({
    databaseUrl: config.database.url,
    dataDir: config.paths.dataDir,
    sqliteSynchronous: config.database.sqliteSynchronous,
    onIdleError: (error) => logger?.warn({ err: error }, 'a database connection failed; it is discarded, and the next query opens another'),
  });
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

  const engineOf = (set: PolicySet): PolicyEngine => {
    // A folder for an environment no task may name applies nowhere: most likely a typo.
    const unknown = set.environments.filter((env) => !config.policy.environments.includes(env));
    if (unknown.length > 0) logger?.warn({ dir: set.dir, unknown, environments: config.policy.environments }, 'policy folders for environments not in policy.environments apply to no task');
    return createPolicyEngine(set, { risk: config.policy.risk });
  };
  // Sets compile into a small ring of slots per role, never the serving one's,
  // so reloads do not grow Cedar's table of preparsed sets without bound.
  // Slots are this instance's own: Cedar's table of compiled sets is one per
  // thread, and two Writs in one process (tests, an embedder) must never
  // compile over each other's sets.
  const slotPrefix = `writ-${++instances}`;
  const enforcedSlot = slotRing(`${slotPrefix}/enforced`);
  const shadowSlot = slotRing(`${slotPrefix}/shadow`, 1);
  let engine = engineOf(loadPolicySet(config.paths.policyDir, { slot: enforcedSlot(undefined) }));
  const shadowDir = config.policy.shadow === undefined ? undefined : resolveConfigPath(config, config.policy.shadow.dir);
  const shadowEnvironments = config.policy.shadow?.environments;
  // An invalid shadow set never stops Writ: it is trialled once it loads.
  let shadowEngine = shadowDir === undefined ? undefined : loadShadow(shadowDir, `${slotPrefix}/shadow-0`, engineOf, logger);
  // The break-glass set: its own slots, the schema and catalog of the policy folder. An
  // invalid one stops the start, like the enforced set: an emergency is no time to find out.
  const breakGlassDir = config.paths.breakGlassDir;
  const breakGlassSlot = slotRing(`${slotPrefix}/break-glass`);
  let breakGlassEngine = breakGlassDir === null ? undefined : engineOf(loadPolicySet(breakGlassDir, { slot: breakGlassSlot(undefined), inherit: config.paths.policyDir }));
  const bus = createEventBus((error, event) => logger?.error({ err: error, event: event.type }, 'event handler failed'));
  const audit = createAuditLog({ store, clock, onError: (error) => logger?.error({ err: error }, 'audit append failed') });
  const registry = createRegistry({ store, clock });

  /**
   * Appends the record of an identity's current state and marks it recorded.
   * If the append fails, the state stands and its record is owed: the reaper
   * writes it late (`flushIdentityRecords`), so no change goes unrecorded.
   */
  const recordIdentity = async (identity: Identity, event: AuditEvent): Promise<void> => {
    const receipt = await audit.append(event);
    await store.markIdentityAudited(identity.id, receipt.id, identity.updatedAt);
  };

  const flushIdentityRecords = async (): Promise<number> => {
    const owed = await store.listIdentitiesAwaitingAudit(clock.now() - OWED_RECORD_GRACE_MS, 500);
    for (const identity of owed) {
      await recordIdentity(identity, {
        type: 'identity.changed',
        decision: identity.state === 'active' ? 'allow' : 'deny',
        reason: identity.state,
        detail: 'recorded late: the record of this change could not be written when it happened',
        actor: auditActor(identity),
        data: { identity: auditActor(identity), state: identity.state, environment: identity.environment, updatedAt: identity.updatedAt },
      });
    }
    return owed.length;
  };

  const skewMs = config.tokens.clockSkew * 1000;
  const revocations = createRevocationList({ bus, clockSkewMs: skewMs });
  // Tokens are accepted until exp + skew, so ended tasks are remembered that long too.
  for (const task of await store.listEndedUnexpiredTasks(clock.now() - skewMs)) revocations.add(task.id, task.expiresAt);
  // And tokens a renewal replaced, until they would have expired.
  for (const token of await store.listSupersededUnexpiredTokens(clock.now() - skewMs)) revocations.supersede(token.jti, token.expiresAt);
  // Likewise the grants a policy change narrowed: their tokens still carry the dropped scopes.
  const narrowings = createNarrowingList({ clockSkewMs: skewMs, onNarrowed: (taskId) => bus.publish({ type: 'task.narrowed', taskId }) });
  for (const task of await store.listNarrowedUnexpiredTasks(clock.now() - skewMs)) narrowings.narrow(task.id, task.grantedScopes, task.expiresAt);

  const taskTokens = createTaskTokenVerifier({
    ring: taskKeys,
    issuer: config.issuer,
    audience: config.tokens.audience,
    clockSkewSeconds: config.tokens.clockSkew,
  });
  const trustSources = createTrustSources({
    sources: config.identity.sources,
    devIssuer: devIssuer && { ...devIssuer, maxTtlSeconds: config.identity.devIssuer.maxTtl },
    audience: config.identity.audience,
    clockSkewSeconds: config.tokens.clockSkew,
    clock,
    resolvePath: (path) => resolveConfigPath(config, path),
    onKeyRefreshError: (source, error) => logger?.warn({ source, err: error.message }, 'trust source keys could not be refreshed'),
  });
  const authenticator = createIdentityAuthenticator({ sources: trustSources, registry, audit, store, clock });
  const adminTokens = createAdminTokens({ store, clock });
  const vault = createVault({ store, masterKey: masterKey.bytes, audit, clock });
  const leases = createLeaseManager({
    store,
    audit,
    clock,
    logger,
    tierOf: (action) => engine.tierOf(action),
    heldScopes: (task) => keptScopes(narrowings, task),
    providers: config.leases.postgres.map((provider) =>
      createPgLeaseProvider({
        config: provider,
        // The admin DSN is read from the vault when first needed, never kept in config.
        adminUrl: async () => (provider.urlSecret === undefined ? (provider.url as string) : vault.reveal(provider.urlSecret)),
        onError: (error) => logger?.warn({ err: error, provider: provider.name }, 'a lease provider connection failed; the next use opens another'),
      }),
    ),
  });
  const policy = () => engine;
  const shadow = (environment: string): PolicyEngine | undefined =>
    shadowEnvironments === undefined || shadowEnvironments.includes(environment) ? shadowEngine : undefined;
  const observations = createObservations({ history: (id, limit) => store.listGrantedScopesOf(id, limit) });
  const drift = createDrift({
    store,
    observations,
    audit,
    bus,
    clock,
    narrowings,
    // A grant the replaced set decided can live at most the longest TTL (plus skew) after the swap.
    retireMs: config.tokens.maxTtl * 1000 + skewMs,
    onError: (error, what, taskId) => logger?.error({ err: error, ...(taskId === undefined ? {} : { taskId }) }, `policy drift: ${what}`),
  });

  /**
   * Reloads a set that serves beside the enforced one (the shadow set, the
   * break-glass set): the new engine when its files changed and are valid;
   * the current one when unchanged or invalid (refused on the record).
   */
  const reloadBeside = async (role: 'shadow' | 'breakGlass', dir: string, current: PolicyEngine | undefined, slot: string, trigger: string, inherit?: string): Promise<PolicyEngine | undefined> => {
    const name = role === 'shadow' ? 'shadow' : 'break-glass';
    try {
      const set = loadPolicySet(dir, { slot, ...(inherit === undefined ? {} : { inherit }) });
      if (set.version === current?.version) return current;
      logger?.info({ trigger, [role]: set.version }, role === 'shadow' ? 'shadow policy set loaded; its decisions are recorded, not enforced' : 'break-glass policy set loaded');
      await audit.append({ type: 'policy.reloaded', decision: 'allow', policyVersion: set.version, data: { trigger, [role]: true, policies: set.policies.size } }).catch(() => undefined);
      return engineOf(set);
    } catch (error) {
      const problems = problemsOf(error, dir);
      logger?.error({ trigger, problems: problems.slice(0, 20) }, `${name} policy set refused: it is invalid; the previous one (if any) stays`);
      await audit
        .append({ type: 'policy.reload_refused', decision: 'deny', reason: 'ERR_POLICY_INVALID', detail: `${name} set: ${problems.length} problem(s)`, data: { trigger, [role]: true, problems: problems.slice(0, 20) } })
        .catch(() => undefined);
      return current;
    }
  };
  const reloadShadow = async (trigger: string): Promise<void> => {
    if (shadowDir !== undefined) shadowEngine = await reloadBeside('shadow', shadowDir, shadowEngine, shadowSlot(shadowEngine?.set.compiledId), trigger);
  };
  const reloadBreakGlass = async (trigger: string): Promise<void> => {
    if (breakGlassDir !== null) {
      breakGlassEngine = await reloadBeside('breakGlass', breakGlassDir, breakGlassEngine, breakGlassSlot(breakGlassEngine?.set.compiledId), trigger, config.paths.policyDir);
    }
  };

  const loadAndSwap = async (trigger: string): Promise<PolicyReload> => {
    await reloadShadow(trigger);
    await reloadBreakGlass(trigger);
    const previous = engine.version;
    let set: PolicySet;
    try {
      set = loadPolicySet(config.paths.policyDir, { slot: enforcedSlot(engine.set.compiledId) });
    } catch (error) {
      const problems = problemsOf(error, config.paths.policyDir);
      logger?.error({ trigger, problems: problems.slice(0, 20), serving: previous }, 'policy reload refused: the set is invalid; the previous one keeps serving');
      await audit
        .append({
          type: 'policy.reload_refused',
          decision: 'deny',
          reason: 'ERR_POLICY_INVALID',
          detail: `${problems.length} problem(s); still serving ${previous}`,
          policyVersion: previous,
          data: { trigger, problems: problems.slice(0, 20) },
        })
        .catch(() => undefined);
      return { ok: false, version: previous, problems };
    }
    if (set.version === previous) return { ok: true, changed: false, version: previous, previous };
    const next = engineOf(set);
    engine = next;
    logger?.info({ trigger, from: previous, to: set.version }, 'policy set reloaded');
    await audit
      .append({ type: 'policy.reloaded', decision: 'allow', policyVersion: set.version, data: { trigger, previous, policies: set.policies.size } })
      .catch((error: unknown) => logger?.error({ err: error }, 'the record of a policy reload could not be written'));
    // Every active grant is decided again by the set now serving; never throws.
    const summary = await drift.redecide(next, previous, trigger);
    logger?.info(summary, 'active grants decided again under the new policy set');
    return { ok: true, changed: true, version: set.version, previous, drift: summary };
  };
  // One reload at a time: a burst of triggers never interleaves two swaps.
  let reloading: Promise<unknown> = Promise.resolve();
  const reloadPolicy = (trigger: string): Promise<PolicyReload> => {
    const next = reloading.then(() => loadAndSwap(trigger));
    reloading = next.catch(() => undefined);
    return next;
  };
  // Webhooks: state changes of approvals (and break-glass) go to a durable outbox; any node delivers them.
  const notifier = createNotifier({ store, vault, webhooks: config.notifications.webhooks, audit, clock, logger: logger ?? pino({ level: 'silent' }) });
  const approvals = createApprovals({
    notify: (event) => notifier.notify(event),
    store,
    audit,
    clock,
    policy,
    registry,
    observations,
    settings: {
      ttlSeconds: config.approvals.ttl,
      required: config.approvals.required,
      allowSelfApproval: config.approvals.allowSelfApproval,
      environments: config.approvals.environments,
    },
  });
  /** Who signs task tokens and for whom: the same for every part of Writ that mints one. */
  const minting = { issuer: config.issuer, audience: config.tokens.audience };
  const broker = createBroker({
    approvals,
    registry,
    authenticator,
    policy,
    shadow,
    observations,
    taskKeys,
    taskTokens,
    revocations,
    narrowings,
    store,
    audit,
    bus,
    clock,
    settings: {
      ...minting,
      defaultTtlSeconds: config.tokens.defaultTtl,
      maxTtlSeconds: config.tokens.maxTtl,
      environments: config.policy.environments,
      maxLifetimeSeconds: config.tokens.maxLifetime,
      maxDelegationDepth: config.delegation.maxDepth,
      renewalRiskLimit: config.policy.risk.renewalLimit,
    },
  });
  const delegation = createDelegation({
    broker,
    store,
    policy,
    shadow,
    observations,
    narrowings,
    taskKeys,
    audit,
    bus,
    clock,
    settings: {
      ...minting,
      defaultTtlSeconds: config.tokens.defaultTtl,
      maxDepth: config.delegation.maxDepth,
      actorAudience: config.delegation.actorAudience,
    },
  });
  const breakGlass = createBreakGlass({
    store,
    audit,
    bus,
    clock,
    registry,
    observations,
    policy: () => breakGlassEngine,
    mainPolicy: policy,
    taskKeys,
    notify: (event) => notifier.notify(event),
    warn: (message, fields) => logger?.warn(fields, message),
    settings: {
      ...minting,
      defaultDurationSeconds: config.breakGlass.defaultDuration,
      maxDurationSeconds: config.breakGlass.maxDuration,
      environments: config.policy.environments,
    },
  });
  const authorize = createActionCheck({
    verifier: taskTokens,
    revocations,
    narrowings,
    registry,
    policy,
    shadow,
    observations,
    audit,
    clock,
    approvals,
    breakGlassPolicy: () => breakGlassEngine,
    onBreakGlassUse: (taskId, item) => background(breakGlass.use(taskId, [item]).catch((error: unknown) => logger?.warn({ err: error, taskId }, 'could not record a use under a break-glass grant'))),
  });

  // Other nodes' clocks may lag ours: look back well past one sync interval,
  // from the start of the last sync that succeeded (the start-up load counts as
  // one). A node cut off from the store for a while reads everything it missed
  // when it is back, not only the last window.
  const syncWindowMs = 2 * config.revocation.syncIntervalMs + 60_000;
  let lastSyncedAt = clock.now();
  const syncRevocations = async (): Promise<number> => {
    await registry.sync();
    const now = clock.now();
    const since = Math.min(now, lastSyncedAt) - syncWindowMs;
    const ended = await store.listTasksEndedSince(since);
    let added = 0;
    for (const task of ended) {
      if (task.expiresAt + skewMs >= now && !revocations.isRevoked(task.id)) {
        // Through the bus, like an end in this process: the revocation list and every enforcement point hear it.
        bus.publish({ type: 'task.ended', taskId: task.id, expiresAt: task.expiresAt });
        added++;
      }
    }
    for (const token of await store.listTokensSupersededSince(since)) {
      if (token.expiresAt + skewMs >= now && !revocations.isSuperseded(token.jti)) {
        bus.publish({ type: 'token.superseded', taskId: token.taskId, jti: token.jti, expiresAt: token.expiresAt });
        added++;
      }
    }
    for (const task of await store.listTasksNarrowedSince(since)) {
      if (task.expiresAt + skewMs >= now && narrowings.narrow(task.id, task.grantedScopes, task.expiresAt)) added++;
    }
    lastSyncedAt = now;
    return added;
  };

  // Remote keys are fetched now so the first request does not wait; an issuer
  // that is down is logged, and its tokens are refused until it answers.
  for (const failure of await trustSources.warm()) logger?.warn({ source: failure.name, err: failure.error }, 'trust source unreachable at start');

  // Work started by a timer or a watcher, awaited by close() so no query outlives the store.
  const inFlight = new Set<Promise<unknown>>();
  const background = (work: Promise<unknown>): void => {
    const settled = work.then(
      () => undefined,
      () => undefined,
    );
    inFlight.add(settled);
    void settled.then(() => inFlight.delete(settled));
  };
  // A task that ends takes its unanswered approval requests with it, and a
  // break-glass grant's end is recorded with what to rotate (here or on any
  // node: the sync publishes those ends too; the store records each once).
  bus.subscribe((event) => {
    if (event.type !== 'task.ended') return;
    background(approvals.cancelOfTask(event.taskId).catch((error: unknown) => logger?.warn({ err: error, taskId: event.taskId }, 'cancelling the approval requests of an ended task failed')));
    background(breakGlass.ended(event.taskId).catch((error: unknown) => logger?.warn({ err: error, taskId: event.taskId }, 'recording the end of a break-glass grant failed')));
    // Its leases are destroyed (never throws; what fails is left to the reaper's lease sweep).
    background(leases.revokeOfTask(event.taskId, `task ${event.state ?? 'ended'}`));
    // Every task delegated from it goes with it (its tokens are refused already: they name it in their lineage).
    background(broker.endDescendants(event.taskId).catch((error: unknown) => logger?.warn({ err: error, taskId: event.taskId }, 'ending the tasks delegated from an ended task failed; the reaper finishes it')));
  });

  // A narrowing (a policy change, or a renewal keeping less) or a renewal is a new decision: the task's
  // leases, and those of tasks delegated from it, follow it (revoked if they hold more than it keeps now,
  // extended to a renewed expiry otherwise).
  bus.subscribe((event) => {
    if (event.type === 'task.narrowed' || event.type === 'token.superseded') background(leases.follow(event.taskId));
  });

  // Tasks that passed their expiry while Writ was down are expired, and records
  // owed from before, written, before anything is served (the ends heard above,
  // so a break-glass grant that ran out meanwhile is ended on the record too).
  await broker.reapExpired();
  await broker.flushEndRecords();
  await flushIdentityRecords();
  await breakGlass.sweep();
  // Leases of tasks that ended or expired while Writ was down (or whose end was
  // heard by no one) are revoked before anything is served; those of active tasks
  // are kept, in line with what each task holds now (a renewal or narrowing that
  // no lease followed is caught up: extended, or revoked if it holds more).
  await leases.sweep({ recheck: true });
  // What in the databases' own configuration weakens the leases is told to the operator, without holding up the start.
  if (config.leases.postgres.length > 0) background(leases.configurationWarnings());

  /** Refuses, on the record, an admin handing out scopes it does not hold. */
  const grantOrDeny = async (grantor: AdminPrincipal | undefined, actor: AuditActor | undefined, scopes: readonly AdminScope[], what: string): Promise<void> => {
    try {
      requireGrantable(grantor, scopes);
    } catch (error) {
      await audit.append({ type: 'admin.denied', decision: 'deny', reason: 'ERR_FORBIDDEN', ...(actor === undefined ? {} : { actor }), detail: `${what}: ${(error as WritError).detail}` }).catch(() => undefined);
      throw error;
    }
  };

  const recordAdminToken = (record: AdminTokenRecord, actor: AuditActor) =>
    audit.append({
      type: 'admin.token_created',
      decision: 'allow',
      actor,
      data: { tokenId: record.id, name: record.name, scopes: record.scopes, expiresAt: record.expiresAt },
    });

  let reaper: NodeJS.Timeout | undefined;
  let revocationSync: NodeJS.Timeout | undefined;
  const policyWatchers: FSWatcher[] = [];
  let reloadDebounce: NodeJS.Timeout | undefined;
  let closed = false;
  return {
    config,
    clock,
    store,
    registry,
    broker,
    delegation,
    audit,
    bus,
    revocations,
    narrowings,
    taskKeys,
    taskTokens,
    devIssuer,
    trustSources,
    authenticator,
    adminTokens,
    vault,
    leases,
    approvals,
    breakGlass,
    breakGlassPolicy: () => breakGlassEngine,
    masterKeyCreated: masterKey.created,
    authorize,
    policy,
    reloadPolicy,
    shadowPolicy: () => shadowEngine,
    async registerIdentity(input, actor, grantor) {
      const value = parseOrThrow(registerIdentitySchema, input);
      if (value.adminScopes.length > 0) await grantOrDeny(grantor, actor, [...value.adminScopes, 'admin:tokens'], `register ${value.id}`);
      const identity = await registry.register(value, actor === undefined ? 'cli' : 'api');
      try {
        await recordIdentity(identity, {
          type: 'identity.registered',
          decision: 'allow',
          actor: actor ?? auditActor(identity),
          data: {
            identity: auditActor(identity),
            environment: identity.environment,
            labels: identity.labels,
            expiresAt: identity.expiresAt,
            ...(identity.adminScopes.length > 0 ? { adminScopes: identity.adminScopes } : {}),
          },
        });
      } catch (error) {
        // An identity whose registration is not on the record gets nothing.
        await registry.transition(identity.id, ['active'], 'suspended').catch(() => undefined);
        throw error;
      }
      return identity;
    },
    async claimIdentity(id, input, actor) {
      const value = parseOrThrow(claimIdentitySchema, input);
      const current = await registry.get(id);
      if (current === undefined) throw new WritError('ERR_IDENTITY_NOT_FOUND', { detail: `${id} is not registered` });
      const actorType = value.actorType ?? current.actorType;
      const claimed = await registry.transition(id, ['quarantined'], 'active', {
        owner: value.owner,
        actorType,
        ...(value.environment === undefined ? {} : { environment: value.environment }),
        ...(value.labels === undefined ? {} : { labels: value.labels }),
        ...(value.expiresAt === undefined ? {} : { expiresAt: value.expiresAt }),
      });
      try {
        await recordIdentity(claimed, { type: 'identity.claimed', decision: 'allow', actor, data: { identity: auditActor(claimed), environment: claimed.environment } });
      } catch (error) {
        // A claim that is not on the record does not stand, nor does anything granted in the meantime.
        await registry.transition(id, ['active'], 'quarantined').catch(() => undefined);
        await broker.revokeTasksOf(id, 'claim not recorded').catch(() => undefined);
        throw error;
      }
      return claimed;
    },
    async changeIdentityState(id, change, actor, note) {
      const rule = STATE_CHANGES[change];
      // An identity nobody has claimed goes back to quarantine, never straight to active.
      const before = change === 'reactivate' ? await registry.get(id) : undefined;
      const to: IdentityState = before !== undefined && before.owner === null ? 'quarantined' : rule.to;
      const identity = await registry.transition(id, rule.from, to);
      // INVARIANT: the identity is refused from here on; its tasks end before anything that can fail.
      // On reactivation too: a task granted while a suspension raced it must not come back.
      let revoked: Task[] = [];
      let revokeError: unknown;
      try {
        revoked = await broker.revokeTasksOf(id, `identity ${change === 'reactivate' ? 'reactivated (tasks from before do not survive)' : to}`);
      } catch (error) {
        // The tasks are ended regardless (their records are owed); the identity's own record is still written.
        revokeError = error;
      }
      try {
        await recordIdentity(identity, {
          type: rule.event,
          decision: to === 'active' ? 'allow' : 'deny',
          actor,
          ...(note === undefined ? {} : { detail: note }),
          data: { identity: auditActor(identity), state: identity.state, revokedTasks: revoked.map((t) => t.id) },
        });
      } catch (error) {
        // A reactivation that is not on the record does not stand; a suspension stands either way.
        if (change === 'reactivate') await registry.transition(id, [to], 'suspended').catch(() => undefined);
        throw error;
      }
      if (revokeError !== undefined) throw revokeError;
      return { identity, revokedTasks: revoked.length };
    },
    async authenticateAdmin(bearer) {
      if (bearer === undefined || bearer.length === 0) return { ok: false, code: 'ERR_UNAUTHENTICATED', detail: 'no admin credential' };
      if (looksLikeAdminToken(bearer)) {
        const result = await adminTokens.authenticate(bearer);
        return 'refused' in result ? { ok: false, code: result.refused, detail: 'admin token refused' } : { ok: true, principal: result };
      }
      const result = await authenticator.authenticate(bearer);
      if (!result.ok) return result;
      const principal = identityPrincipal(result.identity);
      return principal === undefined
        ? { ok: false, code: 'ERR_FORBIDDEN', detail: 'identity is not a human holding admin scopes', subject: result.identity.id }
        : { ok: true, principal };
    },
    async createAdminToken(input, actor, grantor) {
      const value = parseOrThrow(createAdminTokenSchema, input);
      await grantOrDeny(grantor, actor, value.scopes, `create admin token ${JSON.stringify(value.name)}`);
      const created = await adminTokens.create(value, actor.id);
      try {
        await recordAdminToken(created.record, actor);
      } catch (error) {
        // A credential whose creation is not on the record must not work.
        await adminTokens.revoke(created.record.id).catch(() => undefined);
        throw error;
      }
      return created;
    },
    async revokeAdminToken(id, actor) {
      const record = await adminTokens.revoke(id);
      await audit.append({ type: 'admin.token_revoked', decision: 'deny', actor, data: { tokenId: record.id, name: record.name } });
      return record;
    },
    async bootstrapAdminToken() {
      if (!config.admin.bootstrapToken) return undefined;
      const minted = await adminTokens.bootstrap(config.admin.bootstrapTtl);
      if (minted === undefined) return undefined;
      try {
        await recordAdminToken(minted.record, { id: 'bootstrap', actorType: 'writ' });
      } catch (error) {
        await adminTokens.revoke(minted.record.id).catch(() => undefined);
        throw error;
      }
      return minted;
    },
    async issueIdentityToken(id, ttlSeconds, issueOptions = {}) {
      if (devIssuer === undefined) throw new WritError('ERR_CONFIG_INVALID', { detail: 'the dev issuer is disabled (identity.devIssuer.enabled)' });
      const identity = await registry.get(id);
      if (identity === undefined) throw new WritError('ERR_IDENTITY_NOT_FOUND', { detail: `${id} is not registered` });
      const maxTtl = config.identity.devIssuer.maxTtl;
      const minted = mintIdentityToken(devIssuer.ring, {
        issuer: devIssuer.issuer,
        audience: issueOptions.forExchange === true ? config.delegation.actorAudience : config.identity.audience,
        identity,
        ttlSeconds: ttlSeconds ?? maxTtl,
        maxTtlSeconds: maxTtl,
        now: clock.now(),
      });
      await audit.append({
        type: 'identity.token_issued',
        decision: 'allow',
        actor: auditActor(identity),
        data: { issuer: devIssuer.issuer, expiresAt: minted.expiresAt, ...(issueOptions.forExchange === true ? { audience: config.delegation.actorAudience } : {}) },
      });
      return minted;
    },
    syncRevocations,
    flushOwedRecords: async () => (await broker.flushEndRecords()) + (await flushIdentityRecords()),
    startReaper() {
      if (reaper !== undefined || closed) return;
      reaper = setInterval(() => {
        // On its own, so a failure elsewhere in the reaper never keeps a lease past its task by more than a tick.
        background(leases.sweep().catch((error: unknown) => logger?.error({ err: error }, 'lease sweep failed')));
        revocations.prune(clock.now());
        narrowings.prune(clock.now());
        background(
          broker
            .reapExpired()
            .then(() => broker.flushEndRecords())
            .then(() => flushIdentityRecords())
            .then(() => approvals.expire())
            .then(() => breakGlass.sweep())
            .then(() => store.deleteSettledMessages(clock.now() - SETTLED_MESSAGE_RETENTION_MS))
            .catch((error: unknown) => logger?.error({ err: error }, 'reaper failed')),
        );
      }, config.reaper.intervalMs);
      reaper.unref();
      notifier.start();
      revocationSync = setInterval(() => {
        background(syncRevocations().catch((error: unknown) => logger?.error({ err: error }, 'revocation sync failed')));
        // Serialized with reloads' re-decisions inside drift.
        background(drift.sweep(policy).catch((error: unknown) => logger?.error({ err: error }, 'policy drift sweep failed')));
      }, config.revocation.syncIntervalMs);
      revocationSync.unref();
      // Policy files changed on disk are reloaded (valid sets only) after a short quiet time.
      try {
        const changed = (): void => {
          if (reloadDebounce !== undefined) clearTimeout(reloadDebounce);
          if (closed) return;
          reloadDebounce = setTimeout(() => {
            reloadDebounce = undefined;
            if (closed) return;
            background(reloadPolicy('file change').catch((error: unknown) => logger?.error({ err: error }, 'policy reload failed')));
          }, POLICY_RELOAD_DEBOUNCE_MS);
          reloadDebounce.unref();
        };
        // Recursive: environments/<env>/ holds policies too.
        const watched = [config.paths.policyDir, ...(shadowDir === undefined ? [] : [shadowDir])];
        if (breakGlassDir !== null && relative(config.paths.policyDir, breakGlassDir).startsWith('..')) watched.push(breakGlassDir);
        for (const dir of watched) {
          const watcher = watch(dir, { recursive: true }, changed);
          watcher.on('error', (error) => logger?.warn({ err: error, dir }, 'watching a policy folder failed; reload through the admin API'));
          watcher.unref();
          policyWatchers.push(watcher);
        }
      } catch (error) {
        logger?.warn({ err: error, dir: config.paths.policyDir }, 'cannot watch the policy folder; reload through the admin API');
      }
    },
    async settled() {
      // Work settling may start more (a cascade's ends cascade): until none is left.
      while (inFlight.size > 0) await Promise.all(inFlight);
    },
    async close() {
      if (closed) return;
      closed = true;
      if (reaper !== undefined) clearInterval(reaper);
      if (revocationSync !== undefined) clearInterval(revocationSync);
      if (reloadDebounce !== undefined) clearTimeout(reloadDebounce);
      for (const watcher of policyWatchers) watcher.close();
      // A reload and its re-decision, a sync or a reap in flight finish before the store closes under them.
      await Promise.all(inFlight);
      await reloading;
      await drift.idle();
      await notifier.stop();
      await leases.close();
      await audit.flush();
      await store.close();
      releaseCompiledSets(`${slotPrefix}/`);
    },
  };
}
