/**
 * The MCP gateway: an enforcement point between an agent and its MCP servers.
 * The agent connects to Writ as to any MCP server; Writ connects to the
 * upstreams with credentials the agent never sees.
 *
 * One connection acts for one identity, and, once it holds a task, for that
 * task: presented as a task token, or granted in the connection through the
 * `request_access` meta-tool. Then:
 *
 *   tools/list   the meta-tools, and the upstream tools some scope of the task
 *                could cover (a narrowed grant shows less; an ended one nothing)
 *   tools/call   the action check (token, revocation, identity, scope, policy
 *                with the call's arguments above `read`, audit) before the
 *                upstream sees anything; a deny is a tool error with a stable
 *                code and no policy internals; after the call, a `tool.call`
 *                record with the upstream's latency and the result's status
 *
 * A connection renews its task only at a checkpoint the agent marks (the
 * `checkpoint` meta-tool), and only in the last third of its token's life:
 * never on a timer, so a task whose agent stops working runs out.
 *
 * When a task's grant changes (narrowed by a policy change, granted or ended
 * in the connection) its connections get `notifications/tools/list_changed`;
 * when it ends anywhere else, its connections are closed.
 */
import { createHash } from 'node:crypto';
import { Server, ProtocolError, type CallToolResult, type Tool } from '@modelcontextprotocol/server';
import type { Logger } from 'pino';
import { auditActor } from '../../audit/log.js';
import { canonicalize } from '../../core/canonical-json.js';
import { isWritError } from '../../core/errors.js';
import { isValidResource, resourceCovers } from '../../core/scope.js';
import type { Identity, Scope } from '../../core/types.js';
import { WRIT_VERSION } from '../../core/version.js';
import { renewalRequestSchema, validationError, type Caller, type TaskRequestResult } from '../../broker/broker.js';
import { identityInactiveReason } from '../../identity/registry.js';
import type { Presenter } from '../../enforce/action-check.js';
import { boundCertificate } from '../../tokens/task-token.js';
import type { Writ } from '../../writ.js';
import { configuredMapping, grantShows, mapTool, resourceForCall, splitToolName, type MappedTool } from './tool-map.js';
import type { UpstreamPool } from './upstreams.js';

/** JSON-RPC "invalid params", which the MCP spec uses for an unknown tool. */
const INVALID_PARAMS = -32602;


/** The task a connection acts for. */
export interface BoundTask {
  readonly id: string;
  readonly token: string;
  /** The scopes of its token; the narrowing list may keep fewer. */
  readonly scopes: readonly Scope[];
  /** When its token was issued (epoch ms): a checkpoint renews in the last third of the token's life. */
  readonly issuedAt: number;
  readonly expiresAt: number;
}

/**
 * One MCP connection's view of who it acts for: a 2025-era session, a stdio
 * connection, or (2026 revision) one request. Mutable: `request_access` binds a
 * task, `complete_task` unbinds it.
 */
export interface Connection {
  /** The identity as it was when the connection authenticated; fetched again before anything is granted. */
  readonly identity: Identity;
  /** When the credential the connection authenticated with expires (epoch ms): no new task after it. A fresh token moves it. */
  credentialExpiresAt: number;
  /** True when the connection authenticated with an identity token: it may ask for tasks. */
  readonly mayRequestAccess: boolean;
  /**
   * True when the client presents the task token itself (over HTTP, with a task
   * token): a renewal at a checkpoint hands it the new token, in
   * `_meta["dev.writ/taskToken"]`, as the old one is refused from then on.
   */
  readonly presentsTaskToken?: boolean;
  /** Whether a task granted here can stay bound to the connection (false per request: the token is handed back instead). */
  readonly holdsTasks: boolean;
  readonly presenter: Presenter;
  task: BoundTask | undefined;
  /** A task asked for here that waits for approvals; `task_status` activates it once they are answered. */
  pendingTaskId?: string | undefined;
  /**
   * True when the bound task was granted in this connection: its token never
   * left Writ, so the task ends when the connection does (no grant outlives
   * the only thing that could use it).
   */
  ownsTask?: boolean;
  /** Tells the client its tool list changed. */
  notifyToolsChanged(): void;
  /** Ends the connection (its task ended elsewhere). */
  close(reason: string): void;
}

export interface McpGateway {
  /**
   * Who a bearer credential is, for a new connection: a task token (bound to its
   * task) or an identity token (meta-tools only until it asks for access).
   * @throws WritError ERR_UNAUTHENTICATED (the precise reason is audited)
   */
  authenticate(bearer: string | undefined, certificateChain?: Parameters<Writ['broker']['authenticate']>[0]['certificateChain']): Promise<Caller>;
  /** Until when a caller may ask for new tasks: its credential's expiry, plus the clock skew tokens are allowed. */
  credentialExpiry(caller: Caller): number;
  /** The task a caller's task token is bound to; undefined for an identity token. */
  boundTaskOf(caller: Caller, bearer: string): Promise<BoundTask | undefined>;
  /** A new SDK server answering for `connection`. */
  serverFor(connection: Connection): Server;
  /** Registers a connection holding a task, so grant changes reach it; returns the unregister function. */
  track(connection: Connection): () => void;
  /** The connection is going away: a task it owns (granted in it) is revoked. Never throws. */
  release(connection: Connection, reason: string): Promise<void>;
  close(): Promise<void>;
}

export interface McpGatewayOptions {
  readonly writ: Writ;
  readonly pool: UpstreamPool;
  readonly logger?: Logger | undefined;
}

interface CatalogEntry {
  readonly mapped: MappedTool;
  readonly tool: Tool;
}

export function createMcpGateway(options: McpGatewayOptions): McpGateway {
  const { writ, pool, logger } = options;
  const connections = new Set<Connection>();
  // The tools on offer: the last complete listing, served while a newer one is
  // built, so one slow upstream never holds up calls to the others.
  let catalog: Map<string, CatalogEntry> | undefined;
  let refreshing: Promise<Map<string, CatalogEntry>> | undefined;
  let again = false;

  const buildCatalog = (): Promise<Map<string, CatalogEntry>> =>
    pool.listings().then((listings) => {
      const entries = new Map<string, CatalogEntry>();
      for (const { upstream, tools } of listings) {
        for (const tool of tools ?? []) {
          const mapped = mapTool(upstream.name, tool, configuredMapping(upstream.tools, tool.name), upstream.expose);
          if (!mapped.ok) {
            logger?.debug({ upstream: upstream.name, tool: tool.name, reason: mapped.reason }, 'upstream tool not offered');
            continue;
          }
          entries.set(mapped.tool.name, { mapped: mapped.tool, tool });
        }
      }
      return entries;
    });

  /** A listing that starts after this call; one build at a time, changes during it give one more. */
  const refreshCatalog = (): Promise<Map<string, CatalogEntry>> => {
    if (refreshing !== undefined) {
      again = true;
      return refreshing;
    }
    const next = buildCatalog().then((entries) => {
      catalog = entries;
      return entries;
    });
    refreshing = next;
    void next
      .catch(() => undefined)
      .finally(() => {
        refreshing = undefined;
        if (again) {
          again = false;
          void refreshCatalog().then(notifyAll, () => undefined);
        }
      });
    return next;
  };
  const currentCatalog = async (): Promise<Map<string, CatalogEntry>> => catalog ?? refreshCatalog();

  const notifyAll = (): void => {
    for (const connection of connections) if (connection.task !== undefined) connection.notifyToolsChanged();
  };
  // Clients hear of a change once the new listing is ready: a burst of changes is one notification.
  const stopWatchingPool = pool.onToolsChanged(() => void refreshCatalog().then(notifyAll, () => undefined));

  const stopWatchingBus = writ.bus.subscribe((event) => {
    for (const connection of connections) {
      if (connection.task?.id !== event.taskId) continue;
      if (event.type === 'task.narrowed') connection.notifyToolsChanged();
      else if (event.type === 'task.ended') {
        connection.task = undefined;
        connection.notifyToolsChanged();
        connection.close(`task ${event.state ?? 'ended'}`);
      }
    }
  });

  /** The scopes a task keeps now: none once ended, the narrowed ones after a policy change. */
  const keptScopes = (task: BoundTask): readonly Scope[] => {
    if (writ.revocations.isRevoked(task.id)) return [];
    return writ.narrowings.remainingOf(task.id) ?? task.scopes;
  };

  const metaTools = (connection: Connection, offered: readonly string[]): Tool[] => {
    const tools: Tool[] = [];
    if (connection.mayRequestAccess && connection.task === undefined) {
      tools.push({
        name: 'request_access',
        title: 'Request access for a task',
        description:
          'Ask Writ for access to tools for one task. State what you are doing (purpose) and why (intent); policy decides now, ' +
          'per tool, and the tools granted then appear in your tool list. Access is short-lived and ends with complete_task.',
        inputSchema: {
          type: 'object',
          properties: {
            purpose: { type: 'string', minLength: 1, maxLength: 500, description: 'What the task is, e.g. "Answer ticket T-1042"' },
            intent: { type: 'string', pattern: '^[a-z][a-z0-9-]{0,63}$', description: 'The declared class of work, e.g. customer-support' },
            tools: { type: 'array', minItems: 1, maxItems: 32, uniqueItems: true, items: offered.length > 0 ? { type: 'string', enum: [...offered] } : { type: 'string' } },
            resources: {
              type: 'object',
              description:
                'Optional, per tool: the one resource (or prefix ending in *) the task needs it for, e.g. {"tickets__get_ticket": "tickets:T-1042"}. ' +
                'Narrower than the tool\'s whole reach; it must lie within it.',
              additionalProperties: { type: 'string', maxLength: 256 },
            },
            environment: { type: 'string', description: `Default: ${connection.identity.environment}` },
            ttl: { type: ['string', 'integer'], description: 'How long, e.g. 5m (capped by Writ)' },
          },
          required: ['purpose', 'intent', 'tools'],
          additionalProperties: false,
        },
        annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
      });
    }
    if (connection.task !== undefined) {
      tools.push(
        {
          name: 'task_status',
          title: 'Status of the current task',
          description: 'The current task: its state, when it expires, and the scopes it holds.',
          inputSchema: { type: 'object', properties: {}, additionalProperties: false },
          annotations: { readOnlyHint: true, openWorldHint: false },
        },
        {
          name: 'checkpoint',
          title: 'Mark a checkpoint of the current task',
          description:
            'Say what you have done so far. When the task\'s access is close to expiring (its last third), Writ decides it again under ' +
            'current policy and renews it, with your note on the record; otherwise nothing changes and you are told when it expires. ' +
            'Access is never renewed except here.',
          inputSchema: {
            type: 'object',
            properties: {
              note: { type: 'string', minLength: 1, maxLength: 500, description: 'What was done since the task began or was last renewed, e.g. "stage 2 of 3 done"' },
              ttl: { type: ['string', 'integer'], description: 'How long a renewal lasts, e.g. 5m (capped by Writ)' },
            },
            required: ['note'],
            additionalProperties: false,
          },
          annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
        },
        {
          name: 'complete_task',
          title: 'End the current task',
          description: 'End the current task when its work is done (or failed). Its access ends at once, everywhere.',
          inputSchema: {
            type: 'object',
            properties: {
              outcome: { type: 'string', enum: ['completed', 'failed'], default: 'completed' },
              note: { type: 'string', maxLength: 500 },
            },
            additionalProperties: false,
          },
          annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
        },
      );
    }
    return tools;
  };

  const listTools = async (connection: Connection): Promise<Tool[]> => {
    const entries = await currentCatalog();
    const scopes = connection.task === undefined ? [] : keptScopes(connection.task);
    const granted: Tool[] = [];
    for (const { mapped, tool } of entries.values()) {
      if (grantShows(scopes, mapped)) granted.push({ ...tool, name: mapped.name });
    }
    return [...metaTools(connection, [...entries.keys()]), ...granted];
  };

  /**
   * A refusal the action check did not decide (no task, an unknown tool, a bad
   * argument, a meta-tool turned down), recorded like every other deny. The
   * refusal stands even if the record cannot be written.
   */
  const deny = async (connection: Connection, tool: string, code: string, detail: string, data: Record<string, unknown> = {}): Promise<CallToolResult> => {
    const split = splitToolName(tool);
    await writ.audit
      .append({
        type: 'tool.call',
        decision: 'deny',
        reason: code,
        detail,
        actor: auditActor(connection.identity),
        ...(connection.task === undefined ? {} : { task: { id: connection.task.id } }),
        ...(typeof data.action === 'string' ? { action: data.action } : {}),
        data: { ...data, tool: (split?.tool ?? tool).slice(0, 128), ...(split === undefined ? {} : { upstream: split.upstream.slice(0, 64) }) },
      })
      .catch((error: unknown) => logger?.error({ err: error }, 'could not audit a refused tool call'));
    return refusal(code, detail);
  };

  const callerOf = (connection: Connection): Caller => ({
    identity: connection.identity,
    ...(connection.task === undefined ? {} : { taskId: connection.task.id }),
    ...(connection.presenter.certificateThumbprint === undefined ? {} : { certificateThumbprint: connection.presenter.certificateThumbprint }),
  });

  const requestAccess = async (connection: Connection, args: Record<string, unknown>): Promise<CallToolResult> => {
    if (!connection.mayRequestAccess) return deny(connection, 'request_access', 'ERR_FORBIDDEN', 'this connection presented a task token; it acts for that task only');
    if (connection.task !== undefined) return deny(connection, 'request_access', 'ERR_TASK_STATE_CONFLICT', 'this connection already holds a task; end it with complete_task first');
    const now = writ.clock.now();
    if (now >= connection.credentialExpiresAt) return deny(connection, 'request_access', 'ERR_UNAUTHENTICATED', 'the identity token this connection started with has expired; connect again with a fresh one');
    // A connection can outlive a suspension: the identity is read again before anything is granted.
    const identity = await writ.registry.get(connection.identity.id);
    const inactive = identity === undefined ? 'identity is no longer registered' : identityInactiveReason(identity, now);
    if (identity === undefined || inactive !== undefined) return deny(connection, 'request_access', 'ERR_IDENTITY_INACTIVE', inactive ?? 'identity is not active');
    const entries = await currentCatalog();
    const names = Array.isArray(args.tools) ? args.tools : [];
    if (names.length === 0 || names.length > 32) return deny(connection, 'request_access', 'ERR_VALIDATION', 'tools names 1 to 32 offered tools');
    const unknown = names.filter((n) => typeof n !== 'string' || !entries.has(n));
    if (unknown.length > 0) {
      const shown = unknown.slice(0, 5).map((n) => JSON.stringify(typeof n === 'string' ? n.slice(0, 64) : typeof n));
      return deny(connection, 'request_access', 'ERR_VALIDATION', `tools must name offered tools; unknown: ${shown.join(', ')}`);
    }
    // Each tool's scope is its whole reach, or the narrower resource the agent names for it.
    const narrower = args.resources === undefined ? {} : args.resources;
    if (typeof narrower !== 'object' || narrower === null || Array.isArray(narrower)) return deny(connection, 'request_access', 'ERR_VALIDATION', 'resources maps tool names to resources');
    const wanted: Scope[] = [];
    for (const name of names as string[]) {
      const { mapped } = entries.get(name)!;
      const given = Object.hasOwn(narrower, name) ? (narrower as Record<string, unknown>)[name] : undefined;
      if (given === undefined) {
        wanted.push({ action: mapped.action, resource: mapped.reach });
        continue;
      }
      if (typeof given !== 'string' || !isValidResource(given) || !resourceCovers(mapped.reach, given)) {
        return deny(connection, 'request_access', 'ERR_VALIDATION', `resources.${name.slice(0, 64)} must be a resource within ${mapped.reach}`);
      }
      wanted.push({ action: mapped.action, resource: given });
    }
    for (const key of Object.keys(narrower)) {
      if (!(names as string[]).includes(key)) return deny(connection, 'request_access', 'ERR_VALIDATION', `resources names ${JSON.stringify(key.slice(0, 64))}, which tools does not`);
    }
    const scopes = [...new Map(wanted.map((s) => [`${s.action} ${s.resource}`, s])).values()];
    let result;
    try {
      result = await writ.broker.requestTask({ ...callerOf(connection), identity }, {
        purpose: args.purpose,
        intent: args.intent,
        environment: args.environment ?? identity.environment,
        scopes,
        ...(args.ttl === undefined ? {} : { ttl: args.ttl }),
      });
    } catch (error) {
      if (isWritError(error)) return deny(connection, 'request_access', error.code, error.detail);
      throw error;
    }
    return answerTaskResult(connection, result, entries);
  };

  /** A task request's (or activation's) result as the agent sees it; a grant is bound to the connection that holds tasks. */
  const answerTaskResult = (connection: Connection, result: TaskRequestResult, entries: ReadonlyMap<string, CatalogEntry>): CallToolResult => {
    const toolsOf = (scopes: readonly Scope[]) =>
      [...entries.values()].filter(({ mapped }) => grantShows(scopes, mapped)).map(({ mapped }) => mapped.name);
    const grantedTools = toolsOf(result.task.grantedScopes);
    const summary: Record<string, unknown> = {
      status: result.status,
      taskId: result.task.id,
      grantedTools,
      refusedTools: toolsOf(result.task.requestedScopes).filter((n) => !grantedTools.includes(n)),
      ...(result.status === 'granted' || result.status === 'partial' ? { expiresIn: result.expiresIn } : {}),
      ...(result.status === 'pending_approval'
        ? { approvals: result.approvals.map((a) => ({ id: a.id, action: a.action, resource: a.resource, expiresAt: new Date(a.expiresAt).toISOString() })) }
        : {}),
    };
    connection.pendingTaskId = result.status === 'pending_approval' && connection.holdsTasks ? result.task.id : undefined;
    if (result.status === 'granted' || result.status === 'partial') {
      const bound: BoundTask = { id: result.task.id, token: result.token, scopes: result.task.grantedScopes, issuedAt: writ.clock.now(), expiresAt: result.task.expiresAt };
      if (connection.holdsTasks) {
        connection.task = bound;
        connection.ownsTask = true;
        track(connection);
        connection.notifyToolsChanged();
      }
      return {
        content: [{ type: 'text', text: `Access ${result.status === 'granted' ? 'granted' : 'partly granted'} for task ${result.task.id}: ${JSON.stringify(summary)}` }],
        structuredContent: summary,
        // Stateless (2026) requests hold no task: the client presents this token from now on. Never in content, which a model reads.
        ...(connection.holdsTasks ? {} : { _meta: { 'dev.writ/taskToken': result.token } }),
      };
    }
    if (result.status === 'pending_approval') {
      const ids = result.approvals.map((a) => a.id).join(', ');
      const next = connection.holdsTasks ? 'Call task_status once they are answered to receive the grant.' : `Activate it with POST /v1/tasks/${result.task.id}/activate once they are answered.`;
      return { content: [{ type: 'text', text: `Task ${result.task.id} waits for a human's approval (requests ${ids}). ${next}` }], structuredContent: summary };
    }
    return refusal('ERR_POLICY_DENIED', 'policy refused every requested tool', summary);
  };

  const taskStatus = async (connection: Connection): Promise<CallToolResult> => {
    const bound = connection.task;
    if (bound === undefined && connection.pendingTaskId !== undefined) {
      // The task waited for approvals: activate it if they are answered (it stays pending otherwise).
      const result = await writ.broker.activateTask({ ...callerOf(connection), identity: connection.identity }, connection.pendingTaskId);
      return answerTaskResult(connection, result, await currentCatalog());
    }
    if (bound === undefined) return deny(connection, 'task_status', 'ERR_TASK_NOT_FOUND', 'this connection holds no task');
    const task = await writ.broker.getTask(callerOf(connection), bound.id);
    const entries = await currentCatalog();
    const scopes = keptScopes(bound);
    const summary = {
      taskId: task.id,
      state: task.state,
      purpose: task.purpose,
      intent: task.intent,
      environment: task.environment,
      expiresAt: new Date(task.expiresAt).toISOString(),
      scopes: scopes.map((s) => `${s.action} ${s.resource}`),
      tools: [...entries.values()].filter(({ mapped }) => grantShows(scopes, mapped)).map(({ mapped }) => mapped.name),
    };
    return { content: [{ type: 'text', text: JSON.stringify(summary) }], structuredContent: summary };
  };

  const completeTask = async (connection: Connection, args: Record<string, unknown>): Promise<CallToolResult> => {
    const bound = connection.task;
    if (bound === undefined) return deny(connection, 'complete_task', 'ERR_TASK_NOT_FOUND', 'this connection holds no task');
    const outcome = args.outcome === undefined ? 'completed' : args.outcome;
    if (outcome !== 'completed' && outcome !== 'failed') return deny(connection, 'complete_task', 'ERR_VALIDATION', 'outcome is completed or failed');
    if (args.note !== undefined && (typeof args.note !== 'string' || args.note.length > 500 || !/^[^\p{Cc}\p{Cf}\p{Cs}]*$/u.test(args.note))) {
      return deny(connection, 'complete_task', 'ERR_VALIDATION', 'note is text of at most 500 characters, without control or format characters');
    }
    // Unbound first, so the end event does not close this connection: it stays, with its meta-tools.
    connection.task = undefined;
    const owned = connection.ownsTask === true;
    connection.ownsTask = false;
    try {
      const task = await writ.broker.endTask({ identity: connection.identity, taskId: bound.id }, bound.id, outcome, args.note as string | undefined);
      connection.notifyToolsChanged();
      const summary = { taskId: task.id, state: task.state };
      return { content: [{ type: 'text', text: `Task ${task.id} ${task.state}; its access has ended.` }], structuredContent: summary };
    } catch (error) {
      connection.task = bound;
      connection.ownsTask = owned;
      if (isWritError(error)) return deny(connection, 'complete_task', error.code, error.detail);
      throw error;
    }
  };

  /** Renewals under way, by task: a checkpoint that finds one joins it, so two checkpoints at once make one renewal. */
  const renewals = new Map<string, Promise<RenewalOutcome>>();

  /**
   * The caller a renewal is asked as: the holder of the task's current token,
   * proved as the action check proves it (signature and expiry, certificate
   * binding, not ended nor replaced by a renewal, the identity active) and
   * matched against the task's current token id. The broker renews for
   * whoever holds the task, so a connection whose token a renewal elsewhere
   * replaced must not get a new one here.
   */
  const holderOf = async (connection: Connection, bound: BoundTask): Promise<Caller | { readonly code: string; readonly detail: string }> => {
    const now = writ.clock.now();
    const checked = writ.taskTokens.verifyCached(bound.token, now) ?? (await writ.taskTokens.verify(bound.token, now));
    if (!checked.ok) return { code: checked.code, detail: checked.code === 'ERR_TOKEN_EXPIRED' ? 'the task has expired; request access again' : 'the task token is no longer valid' };
    const certificate = boundCertificate(checked.token.claims);
    if (certificate !== undefined && connection.presenter.certificateThumbprint !== certificate) return { code: 'ERR_TOKEN_BINDING', detail: 'the task token is bound to a client certificate this connection did not present' };
    const revoked = writ.revocations.refusal(checked.token);
    if (revoked !== undefined) return { code: 'ERR_TOKEN_REVOKED', detail: revoked };
    const identity = await writ.registry.get(checked.token.actor);
    const inactive = identity === undefined ? 'identity is no longer registered' : identityInactiveReason(identity, now);
    if (identity === undefined || inactive !== undefined) return { code: 'ERR_IDENTITY_INACTIVE', detail: inactive ?? 'identity is not active' };
    const caller: Caller = { identity, taskId: bound.id, tokenId: checked.token.claims.jti, ...(connection.presenter.certificateThumbprint === undefined ? {} : { certificateThumbprint: connection.presenter.certificateThumbprint }) };
    // Another node's renewal reaches this node's revocation list only at its next sync; the task's record knows at once.
    if ((await writ.broker.getTask(caller, bound.id)).tokenId !== checked.token.claims.jti) return { code: 'ERR_TOKEN_REVOKED', detail: 'token was replaced by a renewal' };
    return caller;
  };

  /** Renews `bound` for its holder, then moves every connection that held its token onto the new one. */
  const renew = async (connection: Connection, bound: BoundTask, request: { readonly checkpoint: string; readonly ttl?: string | number }): Promise<RenewalOutcome> => {
    const holder = await holderOf(connection, bound);
    if (!('identity' in holder)) {
      await deny(connection, 'checkpoint', holder.code, holder.detail);
      return { ok: false, ...holder };
    }
    const issuedAt = writ.clock.now();
    let renewed;
    try {
      renewed = await writ.broker.renewTask(holder, bound.id, request);
    } catch (error) {
      // A refused renewal is on the record already (task.renewed, deny).
      if (isWritError(error)) return { ok: false, code: error.code, detail: error.detail };
      throw error;
    }
    const next: BoundTask = { id: bound.id, token: renewed.token, scopes: renewed.task.grantedScopes, issuedAt, expiresAt: renewed.task.expiresAt };
    for (const held of new Set([connection, ...connections])) adoptRenewal(held, bound.token, next);
    return { ok: true, replaced: bound.token, next, expiresIn: renewed.expiresIn, warnings: renewed.warnings };
  };

  /** Moves `connection` onto a renewed token when it held the one replaced; true when it did. */
  const adoptRenewal = (connection: Connection, replaced: string, next: BoundTask): boolean => {
    const held = connection.task;
    if (held?.token !== replaced) return false;
    connection.task = next;
    const key = (scopes: readonly Scope[]) => scopes.map((s) => `${s.action} ${s.resource}`).sort().join('\n');
    if (key(held.scopes) !== key(next.scopes)) connection.notifyToolsChanged();
    return true;
  };

  const checkpoint = async (connection: Connection, args: Record<string, unknown>): Promise<CallToolResult> => {
    const bound = connection.task;
    if (bound === undefined) return deny(connection, 'checkpoint', 'ERR_TASK_NOT_FOUND', 'this connection holds no task');
    const unknown = Object.keys(args).filter((key) => key !== 'note' && key !== 'ttl');
    if (unknown.length > 0) return deny(connection, 'checkpoint', 'ERR_VALIDATION', `checkpoint takes note and ttl only, not ${unknown.slice(0, 5).map((k) => JSON.stringify(k.slice(0, 64))).join(', ')}`);
    // The renewal's own rules, checked whether or not this checkpoint renews: a bad note fails now, not when time is short.
    const parsed = renewalRequestSchema.safeParse({ checkpoint: args.note, ...(args.ttl === undefined ? {} : { ttl: args.ttl }) });
    if (!parsed.success) {
      const issues = parsed.error.issues.map((issue) => ({ ...issue, path: issue.path[0] === 'checkpoint' ? ['note', ...issue.path.slice(1)] : issue.path }));
      return deny(connection, 'checkpoint', 'ERR_VALIDATION', validationError(issues).detail);
    }
    const request = { checkpoint: parsed.data.checkpoint, ...(parsed.data.ttl === undefined ? {} : { ttl: parsed.data.ttl }) };

    const joined = renewals.get(bound.id);
    if (joined === undefined && !renewalDue(bound, writ.clock.now())) return checkpointAnswer(bound, { renewed: false, reason: 'not_due' });
    let renewal = joined;
    if (renewal === undefined) {
      // INVARIANT: registered before the first await, so a checkpoint arriving meanwhile joins this renewal.
      renewal = renew(connection, bound, request);
      renewals.set(bound.id, renewal);
      void renewal.finally(() => renewals.delete(bound.id)).catch(() => undefined);
    }
    const outcome = await renewal;
    if (!outcome.ok) return refusal(outcome.code, outcome.detail);
    // A client that presents the task token needs the new one, as the old one is refused from now on.
    const handBack = connection.presentsTaskToken === true;
    if (joined === undefined) return checkpointAnswer(outcome.next, { renewed: true, expiresIn: outcome.expiresIn, warnings: outcome.warnings }, handBack);
    // A connection of its own per request (2026 revision) is not tracked: it moves here, if it held the token replaced.
    const moved = adoptRenewal(connection, outcome.replaced, outcome.next) || connection.task?.token === outcome.next.token;
    return checkpointAnswer(moved ? outcome.next : bound, { renewed: false, reason: 'renewed_concurrently' }, moved && handBack);
  };

  /** What a checkpoint tells the agent: renewed or not, and until when its access runs. */
  const checkpointAnswer = (
    bound: BoundTask,
    result: { readonly renewed: true; readonly expiresIn: number; readonly warnings: readonly string[] } | { readonly renewed: false; readonly reason: 'not_due' | 'renewed_concurrently' },
    handBack = false,
  ): CallToolResult => {
    const now = writ.clock.now();
    const expiresAt = new Date(bound.expiresAt).toISOString();
    const expiresIn = Math.max(0, Math.floor((bound.expiresAt - now) / 1000));
    const dueAt = bound.expiresAt - (bound.expiresAt - bound.issuedAt) / 3;
    const summary = result.renewed
      ? { renewed: true, taskId: bound.id, expiresAt, expiresIn: result.expiresIn, warnings: result.warnings }
      : { renewed: false, reason: result.reason, taskId: bound.id, expiresAt, expiresIn, dueIn: Math.max(0, Math.ceil((dueAt - now) / 1000)) };
    const text = result.renewed
      ? `Task ${bound.id} renewed at this checkpoint: its access now runs until ${expiresAt}.${result.warnings.length > 0 ? ` ${result.warnings.join('; ')}.` : ''}`
      : result.reason === 'not_due'
        ? `No renewal needed: the task's access runs until ${expiresAt} (${expiresIn}s); a checkpoint renews it from ${new Date(dueAt).toISOString()}.`
        : `Task ${bound.id} was renewed by another checkpoint just now: its access runs until ${expiresAt}.`;
    // The token for the client, never in content, which a model reads.
    return { content: [{ type: 'text', text }], structuredContent: summary, ...(handBack ? { _meta: { 'dev.writ/taskToken': bound.token } } : {}) };
  };

  const callUpstreamTool = async (connection: Connection, name: string, args: Record<string, unknown>, request: CallContext): Promise<CallToolResult> => {
    const { signal } = request;
    // The listing in hand, without awaiting a promise of it.
    let entry = (catalog ?? (await refreshCatalog())).get(name);
    // A tool not seen yet may belong to an upstream that has just come up.
    if (entry === undefined && splitToolName(name) !== undefined) entry = (await refreshCatalog()).get(name);
    if (entry === undefined) {
      await deny(connection, name, 'ERR_NOT_FOUND', 'no such tool is offered');
      throw new ProtocolError(INVALID_PARAMS, `Unknown tool: ${name.slice(0, 140)}`);
    }
    const { mapped } = entry;
    let task = connection.task;
    if (task === undefined) return deny(connection, name, 'ERR_SCOPE_NOT_GRANTED', 'no task holds this tool; call request_access first');
    // A checkpoint renewing the task is about to replace its token: the call waits for the new one.
    const renewing = renewals.size === 0 ? undefined : renewals.get(task.id);
    if (renewing !== undefined) {
      await renewing.catch(() => undefined);
      task = connection.task;
      if (task === undefined) return deny(connection, name, 'ERR_SCOPE_NOT_GRANTED', 'no task holds this tool; call request_access first');
    }
    const taskId = task.id;

    const argumentsDigest = digestOf(args);
    const resource = resourceForCall(mapped.resource, args);
    if (!resource.ok) return deny(connection, name, 'ERR_VALIDATION', resource.detail, { action: mapped.action, argsDigest: argumentsDigest });
    // Policy sees the arguments its schema declares; the record keeps the digest of all of them.
    const declared = writ.policy().set.argTypes;
    const context: Record<string, unknown> = {};
    for (const key of declared.keys()) if (Object.hasOwn(args, key)) context[key] = args[key];
    const call = { action: mapped.action, resource: resource.resource, context, argumentsDigest, arguments: args };
    let decision = await writ.authorize(task.token, call, connection.presenter);
    const pending = decision.approval?.state === 'pending' ? decision.approval : undefined;
    const waitMs = pending === undefined ? 0 : approvalWaitMs(request.meta, writ.config.approvals.maxWait);
    if (pending !== undefined && waitMs > 0) {
      // The client asked to wait: hold the call until a human answers (or the bound), then decide it again.
      const progress = request.progress;
      const waiting = `waiting for a human to answer approval request ${pending.id}`;
      await progress?.(waiting);
      // Progress keeps a client that resets its timeout on progress from giving up first.
      const ticker = progress === undefined ? undefined : setInterval(() => void progress(waiting), APPROVAL_PROGRESS_MS);
      let answered;
      try {
        answered = await writ.approvals.waitFor(pending.id, Math.min(writ.clock.now() + waitMs, pending.expiresAt ?? Infinity), signal);
      } finally {
        if (ticker !== undefined) clearInterval(ticker);
      }
      // The token as it is now: a checkpoint may have renewed the task while the call waited.
      const current = connection.task?.id === task.id ? connection.task : task;
      if (answered?.state === 'approved') decision = await writ.authorize(current.token, call, connection.presenter);
      else if (answered?.state === 'denied') return refusal('ERR_POLICY_DENIED', 'a human denied this call', { approvalId: pending.id, decisionId: decision.auditId });
    }
    if (!decision.allowed) {
      if (decision.decision === 'approval_required') {
        const approval = decision.approval;
        const asked = approval === undefined ? 'no approval request could be opened; try again' : `approval request ${approval.id}${approval.expiresAt === undefined ? '' : `, open until ${new Date(approval.expiresAt).toISOString()}`}`;
        return {
          isError: true,
          content: [{ type: 'text', text: `This call needs a human's approval of exactly this call (${asked}). Once it is approved, make the same call again with the same arguments; it goes through once.` }],
          structuredContent: {
            decision: 'approval_required',
            code: 'ERR_APPROVAL_REQUIRED',
            decisionId: decision.auditId,
            ...(approval === undefined ? {} : { approvalId: approval.id, ...(approval.expiresAt === undefined ? {} : { expiresAt: new Date(approval.expiresAt).toISOString() }) }),
          },
        };
      }
      return refusal(decision.reason ?? 'ERR_POLICY_DENIED', denialSentence(decision.reason), { decisionId: decision.auditId });
    }

    if (decision.breakGlass === true) {
      // The credentials Writ injects for this upstream are touched under break-glass: listed for rotation when it ends.
      const injected = writ.config.gateway.upstreams.find((u) => u.name === mapped.upstream)?.inject.map((i) => `secret:${i.secret}`) ?? [];
      void writ.breakGlass.use(taskId, injected).catch((error: unknown) => logger?.warn({ err: error, taskId }, 'could not record the credentials used under a break-glass grant'));
    }
    const started = performance.now();
    let status: 'ok' | 'tool_error' | 'upstream_error' = 'upstream_error';
    try {
      const result = await pool.call(mapped.upstream, mapped.tool, args, signal);
      status = result.isError === true ? 'tool_error' : 'ok';
      return result;
    } catch (error) {
      if (error instanceof ProtocolError) {
        status = 'tool_error';
        throw error;
      }
      if (isWritError(error)) return refusal(error.code, error.detail);
      throw error;
    } finally {
      const latencyMs = Math.round((performance.now() - started) * 1000) / 1000;
      // The decision is already on the chain. This record of how the call went is
      // made after the answer has left, and committed with others like it within
      // 50 ms (appendLater: SQLite commits synchronously, and one commit per call
      // would hold answers back); a failure is logged, not turned into a failed
      // call that in fact ran.
      setImmediate(() => void writ.audit
        .appendLater({
          type: 'tool.call',
          decision: 'allow',
          reason: status,
          actor: auditActor(connection.identity),
          task: { id: taskId },
          action: mapped.action,
          resource: resource.resource,
          ...(decision.tier === null ? {} : { tier: decision.tier }),
          policies: decision.policies,
          ...(decision.policyVersion === null ? {} : { policyVersion: decision.policyVersion }),
          data: { tool: mapped.tool, upstream: mapped.upstream, checkId: decision.auditId, argsDigest: argumentsDigest, latencyMs, status },
        })
        .catch((error: unknown) => logger?.error({ err: error, tool: mapped.name }, 'could not audit a completed tool call')));
    }
  };

  const release = async (connection: Connection, reason: string): Promise<void> => {
    const task = connection.task;
    if (task === undefined || connection.ownsTask !== true) return;
    connection.task = undefined;
    connection.ownsTask = false;
    try {
      await writ.broker.endTask({ identity: connection.identity, taskId: task.id }, task.id, 'revoked', `the MCP connection that held it ended (${reason})`);
    } catch (error) {
      // Ended already (completed, expired, revoked elsewhere) is fine; anything else is logged, and the task still expires.
      if (!isWritError(error, 'ERR_TASK_STATE_CONFLICT', 'ERR_TASK_NOT_FOUND')) logger?.error({ err: error, task: task.id }, 'could not revoke the task of a closed MCP connection');
    }
  };

  const track = (connection: Connection): (() => void) => {
    connections.add(connection);
    return () => connections.delete(connection);
  };

  return {
    async authenticate(bearer, certificateChain) {
      return writ.broker.authenticate({ bearer, certificateChain }, { allowTaskToken: true, endpoint: '/mcp' });
    },

    credentialExpiry: (caller) => (caller.credentialExpiresAt ?? 0) + writ.config.tokens.clockSkew * 1000,

    async boundTaskOf(caller, bearer) {
      if (caller.taskId === undefined) return undefined;
      const now = writ.clock.now();
      const verified = writ.taskTokens.verifyCached(bearer, now) ?? (await writ.taskTokens.verify(bearer, now));
      // Authenticated a moment ago; a token that no longer verifies holds nothing (every call is checked again anyway).
      if (!verified.ok) return { id: caller.taskId, token: bearer, scopes: [], issuedAt: 0, expiresAt: 0 };
      return { id: caller.taskId, token: bearer, scopes: verified.token.scopes, issuedAt: verified.token.claims.iat * 1000, expiresAt: verified.token.expiresAt };
    },

    serverFor(connection) {
      const server = new Server({ name: 'writ', title: 'Writ MCP gateway', version: WRIT_VERSION }, { capabilities: { tools: { listChanged: true } } });
      server.setRequestHandler('tools/list', async () => ({ tools: await listTools(connection) }));
      server.setRequestHandler('tools/call', async (request, ctx) => {
        const name = request.params.name;
        const given = request.params.arguments ?? {};
        if (typeof given !== 'object' || given === null || Array.isArray(given)) throw new ProtocolError(INVALID_PARAMS, 'arguments must be an object');
        const args = given as Record<string, unknown>;
        try {
          switch (name) {
            case 'request_access':
              return await requestAccess(connection, args);
            case 'task_status':
              return await taskStatus(connection);
            case 'complete_task':
              return await completeTask(connection, args);
            case 'checkpoint':
              return await checkpoint(connection, args);
            default:
              return await callUpstreamTool(connection, name, args, {
                signal: ctx.mcpReq.signal,
                meta: ctx.mcpReq._meta,
                progress: progressOf(ctx.mcpReq._meta?.progressToken, (notification) => ctx.mcpReq.notify(notification)),
              });
          }
        } catch (error) {
          if (error instanceof ProtocolError) throw error;
          if (isWritError(error)) return deny(connection, name, error.code, error.detail);
          logger?.error({ err: error, tool: name.slice(0, 140) }, 'MCP tool call failed');
          return deny(connection, name, 'ERR_INTERNAL', 'Writ could not complete this call');
        }
      });
      return server;
    },

    track,
    release,

    async close() {
      stopWatchingBus();
      stopWatchingPool();
      await Promise.all([...connections].map((connection) => release(connection, 'the gateway is closing')));
      for (const connection of connections) connection.close('gateway closing');
      connections.clear();
      await pool.close();
    },
  };
}

/** A tool error an agent (and the model reading it) can act on: a stable code and one sentence, never policy internals. */
export function refusal(code: string, sentence: string, extra: Record<string, unknown> = {}): CallToolResult {
  return {
    isError: true,
    content: [{ type: 'text', text: `Writ refused this call (${code}): ${sentence}` }],
    structuredContent: { decision: 'deny', code, ...extra },
  };
}

/** What an agent is told for each deny reason of the action check. */
function denialSentence(reason: string | null): string {
  switch (reason) {
    case 'ERR_SCOPE_NOT_GRANTED':
      return 'the task does not hold this tool for this resource';
    case 'ERR_POLICY_DENIED':
      return 'policy does not allow this call';
    case 'ERR_TOKEN_REVOKED':
      return 'the task has ended';
    case 'ERR_TOKEN_EXPIRED':
      return 'the task has expired; request access again';
    case 'ERR_IDENTITY_INACTIVE':
      return 'the identity is not active';
    case 'ERR_UNKNOWN_ACTION':
      return 'the tool is mapped to an action the policy schema does not know';
    case 'ERR_AUDIT_UNAVAILABLE':
      return 'the audit log is unavailable, so nothing is allowed';
    default:
      return 'the call was not allowed';
  }
}

/**
 * True when a checkpoint renews the task: its token has less than a third of
 * its lifetime left (the SDK's `checkpoint` keeps the same rule).
 */
export function renewalDue(task: Pick<BoundTask, 'issuedAt' | 'expiresAt'>, now: number): boolean {
  return task.expiresAt - now < (task.expiresAt - task.issuedAt) / 3;
}

/** A renewal at a checkpoint, as every checkpoint that joined it sees it. */
type RenewalOutcome =
  | { readonly ok: true; readonly replaced: string; readonly next: BoundTask; readonly expiresIn: number; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly code: string; readonly detail: string };

function digestOf(args: Record<string, unknown>): string {
  return `sha256:${createHash('sha256').update(canonicalize(args)).digest('hex')}`;
}


/** What a tool call carries besides its name and arguments. */
interface CallContext {
  readonly signal: AbortSignal | undefined;
  /** The request's `_meta`. */
  readonly meta: Readonly<Record<string, unknown>> | undefined;
  /** Sends a progress notification, when the client asked for them. */
  readonly progress?: ((message: string) => Promise<void>) | undefined;
}

/** How often a held call tells its client it is still waiting. */
const APPROVAL_PROGRESS_MS = 10_000;

/** The `_meta` key a client sets (seconds) to have an approval-required call held until a human answers. */
export const APPROVAL_WAIT_META = 'dev.writ/approvalWait';

/** How long to hold a call for its approval: what the client asked, at most `maxSeconds`; 0 when it did not ask. */
export function approvalWaitMs(meta: Readonly<Record<string, unknown>> | undefined, maxSeconds: number): number {
  const asked = meta?.[APPROVAL_WAIT_META];
  if (typeof asked !== 'number' || !Number.isFinite(asked) || asked <= 0) return 0;
  return Math.min(asked, maxSeconds) * 1000;
}

/** A progress sender for the request's progress token, or undefined without one. */
function progressOf(token: unknown, notify: (notification: { method: 'notifications/progress'; params: Record<string, unknown> }) => Promise<void>) {
  if (typeof token !== 'string' && typeof token !== 'number') return undefined;
  let progress = 0;
  return (message: string) => notify({ method: 'notifications/progress', params: { progressToken: token, progress: ++progress, message } }).catch(() => undefined);
}
