/**
 * Approvals: a human's yes to one exact action, never to a session.
 *
 * A request is opened when policy allows something only with an approval
 * (`@approval("required")`): a call at the action check, or a scope of a task
 * request. It is bound to the task, the identity that asked, the action, the
 * resource and the digest of the call's canonical arguments; it expires
 * (`approvals.ttl`) and is consumed once, by the call it approves. A call
 * that differs in any of these asks anew.
 *
 * Who approves is policy's to say: the `approve` action on the task
 * (`Writ::Action::"approve"`, principal a `Writ::Human`). The requester and
 * its delegation chain never approve their own action unless the
 * `allowSelfApproval` knob says so, and then the vote's record says it was a
 * self-approval. N-of-M counts distinct approvers; one deny denies.
 *
 * Every state change is on the audit chain (requested, voted, approved,
 * denied, consumed, expired, cancelled) and sent to the webhooks. A change
 * whose record cannot be written does not stand: the request is cancelled
 * rather than left approvable without a record.
 */
import { auditActor, type AuditEventType, type AuditLog } from '../audit/log.js';
import { isoOrNull as iso, type Clock } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import { looksLikeId, newId } from '../core/ids.js';
import type { ApprovalRequest, ApprovalRequestState, Identity, Task } from '../core/types.js';
import { APPROVAL_REQUEST_STATES } from '../core/types.js';
import type { ApprovalCall, ApprovalGate } from '../enforce/action-check.js';
import type { NotificationInput } from '../events/webhooks.js';
import { identityInactiveReason, type Registry } from '../identity/registry.js';
import { riskRecord, type PolicyDecision, type PolicyEngine } from '../policy/engine.js';
import type { Observations } from '../policy/observations.js';
import type { ApprovalBinding, NewApprovalRequest, Store } from '../store/store.js';
import type { Caller } from './broker.js';
import { isTerminal } from './task-states.js';

/** How far up a delegation chain self-approval is looked for (deeper chains are refused outright). */
const MAX_CHAIN_DEPTH = 16;
/** Most calls one task may have waiting for an answer at once. */
const MAX_PENDING_CALLS_PER_TASK = 10;
/** How often a waiter reads the request's state (any node may answer it). */
const WAIT_POLL_MS = 250;

export interface ApprovalSettings {
  readonly ttlSeconds: number;
  readonly required: number;
  readonly allowSelfApproval: boolean;
  readonly environments: Readonly<Record<string, { readonly required?: number | undefined; readonly allowSelfApproval?: boolean | undefined }>>;
}

export interface ApprovalsOptions {
  readonly store: Store;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly policy: () => PolicyEngine;
  readonly registry: Registry;
  /** The approver's call rate and history, for the risk score of its answer (a human answering at machine speed is a signal). */
  readonly observations: Observations;
  readonly settings: ApprovalSettings;
  /** Sends a state change to the webhooks; durable once it resolves. */
  readonly notify?: (notice: NotificationInput) => Promise<unknown>;
}

/** A scope of a task request that policy allows only with an approval. */
export interface GrantApprovalInput {
  readonly task: Task;
  readonly identity: Identity;
  readonly action: string;
  readonly resource: string;
  readonly decision: PolicyDecision;
  /** The audit record of the task's decision. */
  readonly requestRecord: string;
}

export interface ApprovalQuery {
  /** Default: pending. */
  readonly states?: readonly ApprovalRequestState[];
  readonly taskId?: string;
  /** Default 50, at most 200. */
  readonly limit?: number;
}

export interface Approvals extends ApprovalGate {
  /** Opens the requests for the scopes of a task request that wait for approval. */
  openForGrant(inputs: readonly GrantApprovalInput[]): Promise<ApprovalRequest[]>;
  /** Consumes the approved grant-stage request for one scope of a pending task, once. */
  consumeGrant(binding: Omit<ApprovalBinding, 'stage' | 'argsDigest'>): Promise<ApprovalRequest | undefined>;
  /**
   * One request, for its requester or a human policy lets approve it.
   * @throws WritError ERR_APPROVAL_NOT_FOUND (also when the caller may not see it)
   */
  get(caller: Caller, id: string): Promise<ApprovalRequest>;
  /** Requests the caller may answer (a human) or asked for (anyone), newest first. */
  list(caller: Caller, query?: ApprovalQuery): Promise<ApprovalRequest[]>;
  /** The requests of one task, newest first, for its broker. */
  ofTask(taskId: string): Promise<ApprovalRequest[]>;
  /**
   * One approver's answer. Returns the request after it.
   * @throws WritError ERR_FORBIDDEN (a task token), ERR_APPROVAL_NOT_FOUND,
   *   ERR_SELF_APPROVAL, ERR_APPROVAL_ALREADY_VOTED, ERR_APPROVAL_CLOSED,
   *   ERR_AUDIT_UNAVAILABLE
   */
  vote(caller: Caller, id: string, decision: 'approve' | 'deny', note?: string): Promise<ApprovalRequest>;
  /**
   * Waits until the request is no longer pending, or `deadline` (epoch ms), or
   * `signal` aborts; returns it as it then stands (undefined when it is gone).
   */
  waitFor(id: string, deadline: number, signal?: AbortSignal): Promise<ApprovalRequest | undefined>;
  /** Moves requests whose time ran out to `expired`, records them. Returns how many. */
  expire(): Promise<number>;
  /** Cancels the open requests of a task that ended. Returns how many. */
  cancelOfTask(taskId: string): Promise<number>;
}

export function createApprovals(options: ApprovalsOptions): Approvals {
  const { store, audit, clock, registry, settings } = options;

  const settingsFor = (environment: string) => {
    const own = settings.environments[environment];
    return { required: own?.required ?? settings.required, allowSelfApproval: own?.allowSelfApproval ?? settings.allowSelfApproval };
  };

  const notify = async (type: string, approval: ApprovalRequest, extra: Record<string, unknown> = {}): Promise<void> => {
    if (options.notify === undefined) return;
    // A notice that cannot be queued never undoes the change; the audit record stands.
    await options.notify(noticeOf(type, approval, clock.now(), extra)).catch(() => undefined);
  };

  const record = (type: Extract<AuditEventType, `approval.${string}`>, approval: ApprovalRequest, actor: Pick<Identity, 'id'> & Partial<Identity>, fields: { decision?: 'allow' | 'deny'; reason?: string; detail?: string; data?: Record<string, unknown> } = {}) =>
    audit.append({
      type,
      ...(fields.decision === undefined ? {} : { decision: fields.decision }),
      ...(fields.reason === undefined ? {} : { reason: fields.reason }),
      ...(fields.detail === undefined ? {} : { detail: fields.detail }),
      actor: auditActor(actor),
      action: approval.action,
      resource: approval.resource,
      tier: approval.tier,
      task: { id: approval.taskId, purpose: approval.purpose, intent: approval.intent, environment: approval.environment },
      policies: approval.policies,
      policyVersion: approval.policyVersion,
      data: { approvalId: approval.id, stage: approval.stage, ...(approval.argsDigest === null ? {} : { argsDigest: approval.argsDigest }), ...fields.data },
    });

  /** Records and announces requests whose time ran out (best effort: they are expired either way). */
  const recordExpired = async (expired: readonly ApprovalRequest[]): Promise<void> => {
    for (const approval of expired) {
      await record('approval.expired', approval, { id: approval.identityId }, { reason: 'expired' }).catch(() => undefined);
      await notify('approval.expired', approval);
    }
  };

  /** Opens a request, or finds the one open for its binding; a new one is recorded and announced. */
  const open = async (request: NewApprovalRequest, requester: Identity): Promise<ApprovalRequest> => {
    const now = clock.now();
    if (request.stage === 'call') {
      // A task cannot flood its approvers with calls: past a few open requests it asks for
      // no more (the call stays refused). A task request's scopes are bounded by the request.
      const waiting = (await store.listApprovals({ taskId: request.taskId, states: ['pending'], limit: MAX_PENDING_CALLS_PER_TASK + 1 })).filter((a) => a.stage === 'call' && a.expiresAt > now);
      const same = waiting.find((a) => a.action === request.action && a.resource === request.resource && a.argsDigest === request.argsDigest && a.identityId === request.identityId);
      if (same !== undefined) return same;
      if (waiting.length >= MAX_PENDING_CALLS_PER_TASK) {
        throw new WritError('ERR_APPROVAL_REQUIRED', { detail: `the task already has ${MAX_PENDING_CALLS_PER_TASK} calls waiting for an answer` });
      }
    }
    const { approval, created, expired } = await store.openApproval(request, now);
    await recordExpired(expired);
    if (!created) return approval;
    try {
      await record('approval.requested', approval, requester, {
        decision: 'deny',
        reason: 'ERR_APPROVAL_REQUIRED',
        data: { requiredApprovals: approval.requiredApprovals, expiresAt: approval.expiresAt, requestRecord: approval.requestRecord, risk: approval.risk },
      });
    } catch (error) {
      // Never an approvable request without its record.
      await store.closeApproval(approval.id, ['pending'], 'cancelled', clock.now()).catch(() => undefined);
      throw error;
    }
    await notify('approval.requested', approval);
    return approval;
  };

  const newRequest = (fields: Omit<NewApprovalRequest, 'id' | 'requiredApprovals' | 'createdAt' | 'expiresAt'>, notAfter: number): NewApprovalRequest => {
    const now = clock.now();
    return {
      ...fields,
      id: newId('apr'),
      requiredApprovals: settingsFor(fields.environment).required,
      createdAt: now,
      // Never longer than what it would let through.
      expiresAt: Math.min(now + settings.ttlSeconds * 1000, notAfter),
    };
  };

  const consumed = async (approval: ApprovalRequest | undefined): Promise<ApprovalRequest | undefined> => {
    if (approval === undefined) return undefined;
    // Spent either way; without its record the call does not go through (the caller sees the throw).
    await record('approval.consumed', approval, { id: approval.identityId }, { decision: 'allow', data: { approvers: approversOf(approval) } });
    await notify('approval.consumed', approval);
    return approval;
  };

  /** The identities of the task and every task it was delegated from, nearest first. */
  const chainOf = async (taskId: string): Promise<{ identities: Set<string>; depth: number }> => {
    const identities = new Set<string>();
    let depth = 0;
    let task = await store.getTask(taskId);
    while (task !== undefined) {
      identities.add(task.identityId);
      if (task.parentTaskId === null) break;
      depth += 1;
      if (depth > MAX_CHAIN_DEPTH) throw new WritError('ERR_FORBIDDEN', { detail: 'the delegation chain is too deep to check for self-approval' });
      task = await store.getTask(task.parentTaskId);
    }
    return { identities, depth };
  };

  /** Policy's answer to "may `identity` approve this request". */
  const approveDecision = async (identity: Identity, approval: ApprovalRequest, depth: number): Promise<PolicyDecision> =>
    options.policy().decideTaskAction({
      observed: await options.observations.observe(identity.id, approval.resource, clock.now()),
      principal: identity,
      action: 'approve',
      task: {
        id: approval.taskId,
        intent: approval.intent,
        purpose: approval.purpose,
        environment: approval.environment,
        delegationDepth: depth,
        scopes: [{ action: approval.action, resource: approval.resource }],
      },
      now: clock.now(),
    });

  const mayApprove = async (identity: Identity, approval: ApprovalRequest, depth: number): Promise<boolean> =>
    identity.actorType === 'human' && identityInactiveReason(identity, clock.now()) === undefined && (await approveDecision(identity, approval, depth)).outcome === 'allow';

  const isRequester = (caller: Caller, approval: ApprovalRequest): boolean =>
    caller.identity.id === approval.identityId && (caller.taskId === undefined || caller.taskId === approval.taskId);

  const find = async (id: string): Promise<ApprovalRequest> => {
    const approval = looksLikeId('apr', id) ? await store.getApproval(id) : undefined;
    if (approval === undefined) throw new WritError('ERR_APPROVAL_NOT_FOUND');
    return approval;
  };

  /**
   * Whether the approver is on the asking side: the requester or an identity
   * up its delegation chain, the accountable owner of one of them (four eyes
   * means someone other than who answers for the agent), or another identity
   * of the same person (the same `email` label).
   */
  const isOwnAction = async (approver: Identity, approval: ApprovalRequest, chain: ReadonlySet<string>): Promise<boolean> => {
    if (chain.has(approver.id) || approval.identityId === approver.id) return true;
    const person = new Set([approver.id, ...(approver.labels.email === undefined ? [] : [approver.labels.email])]);
    for (const id of new Set([approval.identityId, ...chain])) {
      const asker = await registry.get(id);
      if (asker === undefined) continue;
      if ((asker.owner !== null && person.has(asker.owner)) || (asker.labels.email !== undefined && person.has(asker.labels.email))) return true;
    }
    return false;
  };

  /** Another identity of a person who already voted on the request (the same `email` label). */
  const alreadyVotedAs = async (approver: Identity, approval: ApprovalRequest): Promise<boolean> => {
    const email = approver.labels.email;
    if (email === undefined) return false;
    for (const vote of approval.votes) {
      if (vote.approver === approver.id) continue;
      if ((await registry.get(vote.approver))?.labels.email === email) return true;
    }
    return false;
  };

  /** Ends a request whose task ended before it was answered. */
  const cancel = async (approval: ApprovalRequest, why: string): Promise<boolean> => {
    const cancelled = await store.closeApproval(approval.id, ['pending', 'approved'], 'cancelled', clock.now());
    if (cancelled === undefined) return false;
    await record('approval.cancelled', cancelled, { id: cancelled.identityId }, { reason: 'cancelled', detail: why }).catch(() => undefined);
    await notify('approval.cancelled', cancelled, { why });
    return true;
  };

  return {
    async open(call: ApprovalCall) {
      const approval = await open(
        newRequest(
          {
            stage: 'call',
            taskId: call.taskId,
            identityId: call.identityId,
            action: call.action,
            resource: call.resource,
            argsDigest: call.argsDigest,
            arguments: call.arguments,
            environment: call.task.environment,
            intent: call.task.intent,
            purpose: call.task.purpose,
            owner: call.identity.owner,
            tier: call.tier,
            risk: riskRecord(call.risk),
            policies: [...call.policies],
            policyVersion: call.policyVersion,
            requestRecord: call.requestRecord,
          },
          call.notAfter,
        ),
        call.identity,
      );
      return { id: approval.id, expiresAt: approval.expiresAt };
    },

    async consume(binding) {
      return consumed(await store.consumeApproval(binding, clock.now()));
    },

    async openForGrant(inputs) {
      const opened: ApprovalRequest[] = [];
      for (const input of inputs) {
        const { task, identity, decision } = input;
        opened.push(
          await open(
            newRequest(
              {
                stage: 'grant',
                taskId: task.id,
                identityId: identity.id,
                action: input.action,
                resource: input.resource,
                argsDigest: null,
                arguments: null,
                environment: task.environment,
                intent: task.intent,
                purpose: task.purpose,
                owner: identity.owner,
                tier: decision.tier ?? 'admin',
                risk: riskRecord(decision.risk),
                policies: [...decision.policies],
                policyVersion: decision.policyVersion,
                requestRecord: input.requestRecord,
              },
              task.expiresAt,
            ),
            identity,
          ),
        );
      }
      return opened;
    },

    async consumeGrant(binding) {
      return consumed(await store.consumeApproval({ ...binding, stage: 'grant', argsDigest: null }, clock.now()));
    },

    async get(caller, id) {
      const approval = await find(id);
      if (isRequester(caller, approval)) return approval;
      if (caller.taskId === undefined) {
        const { depth } = await chainOf(approval.taskId).catch(() => ({ depth: MAX_CHAIN_DEPTH }));
        if (await mayApprove(caller.identity, approval, depth)) return approval;
      }
      throw new WritError('ERR_APPROVAL_NOT_FOUND');
    },

    async list(caller, query = {}) {
      const limit = Math.min(Math.max(query.limit ?? 50, 1), 200);
      const states = query.states ?? ['pending'];
      const visible: ApprovalRequest[] = [];
      let beforeId: string | undefined;
      // Read in pages and keep what the caller may see, up to `limit`.
      for (let page = 0; page < 20 && visible.length < limit; page += 1) {
        const rows = await store.listApprovals({ states, ...(query.taskId === undefined ? {} : { taskId: query.taskId }), ...(beforeId === undefined ? {} : { beforeId }), limit: 200 });
        for (const approval of rows) {
          if (isRequester(caller, approval) || (caller.taskId === undefined && caller.identity.actorType === 'human' && await mayApprove(caller.identity, approval, (await chainOf(approval.taskId).catch(() => ({ depth: MAX_CHAIN_DEPTH }))).depth))) {
            visible.push(approval);
            if (visible.length === limit) break;
          }
        }
        if (rows.length < 200) break;
        beforeId = rows[rows.length - 1]?.id;
      }
      return visible;
    },

    async ofTask(taskId) {
      return store.listApprovals({ taskId, limit: 200 });
    },

    async vote(caller, id, decision, note) {
      if (caller.taskId !== undefined) throw new WritError('ERR_FORBIDDEN', { detail: 'answer an approval with your own identity token, not a task token' });
      const approver = caller.identity;
      const approval = await find(id);
      const { identities: chain, depth } = await chainOf(approval.taskId);
      const own = await isOwnAction(approver, approval, chain);
      const refuse = async (code: 'ERR_SELF_APPROVAL' | 'ERR_APPROVAL_NOT_FOUND', detail: string, policies: readonly string[] = []): Promise<never> => {
        await audit
          .append({
            type: 'approval.voted',
            decision: 'deny',
            reason: code,
            detail,
            actor: auditActor(approver),
            action: approval.action,
            resource: approval.resource,
            task: { id: approval.taskId, environment: approval.environment },
            policies,
            data: { approvalId: approval.id, vote: decision },
          })
          .catch(() => undefined);
        throw new WritError(code);
      };
      options.observations.recordCall(approver.id, clock.now());
      const allowed = await approveDecision(approver, approval, depth);
      const eligible = approver.actorType === 'human' && identityInactiveReason(approver, clock.now()) === undefined && allowed.outcome === 'allow';
      if (!eligible) {
        // The requester learns why; anyone else learns nothing about the request.
        if (own) return refuse('ERR_SELF_APPROVAL', 'the requester (or its delegation chain) is not an approver of its own action');
        return refuse('ERR_APPROVAL_NOT_FOUND', `policy does not let ${approver.id} approve this`, allowed.policies);
      }
      const selfApproval = own;
      if (selfApproval && !settingsFor(approval.environment).allowSelfApproval) {
        return refuse('ERR_SELF_APPROVAL', 'the approver is the requester or in its delegation chain');
      }

      // N of M counts people: a second identity of someone who voted is not a second approver.
      if (await alreadyVotedAs(approver, approval)) throw new WritError('ERR_APPROVAL_ALREADY_VOTED', { detail: 'another identity of this approver (the same email) has answered it' });

      const task = await store.getTask(approval.taskId);
      if (task === undefined || isTerminal(task.state)) {
        await cancel(approval, `task is ${task?.state ?? 'gone'}`);
        throw new WritError('ERR_APPROVAL_CLOSED', { detail: `its task is ${task?.state ?? 'gone'}` });
      }

      const cast = await store.castApprovalVote(approval.id, { approver: approver.id, decision, at: clock.now(), selfApproval, note: note ?? null }, clock.now());
      switch (cast.outcome) {
        case 'not_found':
          throw new WritError('ERR_APPROVAL_NOT_FOUND');
        case 'duplicate':
          throw new WritError('ERR_APPROVAL_ALREADY_VOTED');
        case 'closed':
          throw new WritError('ERR_APPROVAL_CLOSED', { detail: `it is ${cast.approval.state === 'pending' ? 'past its expiry' : cast.approval.state}`, extensions: { state: cast.approval.state } });
        case 'recorded':
          break;
      }
      const after = cast.approval;
      const approvals = after.votes.filter((v) => v.decision === 'approve').length;
      try {
        await audit.append({
          type: 'approval.voted',
          decision: decision === 'approve' ? 'allow' : 'deny',
          ...(selfApproval ? { reason: 'self_approval', detail: 'the approver is the requester or in its delegation chain; allowed by approvals.allowSelfApproval' } : {}),
          actor: auditActor(approver),
          action: after.action,
          resource: after.resource,
          tier: after.tier,
          task: { id: after.taskId, purpose: after.purpose, intent: after.intent, environment: after.environment },
          policies: allowed.policies,
          policyVersion: allowed.policyVersion,
          data: { approvalId: after.id, vote: decision, selfApproval, approvals, requiredApprovals: after.requiredApprovals, ...(note === undefined ? {} : { note }) },
        });
        if (after.state === 'approved' || after.state === 'denied') {
          await record(after.state === 'approved' ? 'approval.approved' : 'approval.denied', after, approver, { decision: after.state === 'approved' ? 'allow' : 'deny', data: { approvers: approversOf(after), requiredApprovals: after.requiredApprovals } });
        }
      } catch (error) {
        // An answer without its record does not stand.
        await store.closeApproval(after.id, ['pending', 'approved'], 'cancelled', clock.now()).catch(() => undefined);
        throw error;
      }
      // A vote that leaves an N-of-M request pending is news too: the next approver is wanted.
      await notify(after.state === 'approved' || after.state === 'denied' ? `approval.${after.state}` : 'approval.voted', after, { by: approver.id });
      return after;
    },

    async waitFor(id, deadline, signal) {
      for (;;) {
        const approval = await store.getApproval(id);
        if (approval === undefined || approval.state !== 'pending') return approval;
        const left = deadline - clock.now();
        if (left <= 0 || signal?.aborted === true) return approval;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(WAIT_POLL_MS, left));
          function done() {
            clearTimeout(timer);
            signal?.removeEventListener('abort', done);
            resolve();
          }
          signal?.addEventListener('abort', done, { once: true });
        });
      }
    },

    async expire() {
      const expired = await store.expireApprovals(clock.now());
      await recordExpired(expired);
      return expired.length;
    },

    async cancelOfTask(taskId) {
      let cancelled = 0;
      for (const approval of await store.listApprovals({ taskId, states: ['pending', 'approved'], limit: 200 })) {
        if (await cancel(approval, 'its task ended')) cancelled += 1;
      }
      return cancelled;
    },
  };
}

/** Who approved, in the order they did. */
function approversOf(approval: ApprovalRequest): string[] {
  return approval.votes.filter((v) => v.decision === 'approve').map((v) => v.approver);
}

export function isApprovalState(value: string): value is ApprovalRequestState {
  return (APPROVAL_REQUEST_STATES as readonly string[]).includes(value);
}

/** The JSON shape of an approval request in API responses, the CLI and webhooks. */
export function approvalView(approval: ApprovalRequest) {
  return {
    id: approval.id,
    state: approval.state,
    stage: approval.stage,
    task: approval.taskId,
    identity: approval.identityId,
    owner: approval.owner,
    action: approval.action,
    resource: approval.resource,
    tier: approval.tier,
    arguments: approval.arguments === null ? null : (JSON.parse(approval.arguments) as unknown),
    argsDigest: approval.argsDigest,
    environment: approval.environment,
    intent: approval.intent,
    purpose: approval.purpose,
    risk: approval.risk,
    policies: approval.policies,
    policyVersion: approval.policyVersion,
    requiredApprovals: approval.requiredApprovals,
    votes: approval.votes.map((v) => ({ approver: v.approver, decision: v.decision, at: iso(v.at), selfApproval: v.selfApproval, note: v.note })),
    createdAt: iso(approval.createdAt),
    expiresAt: iso(approval.expiresAt),
    decidedAt: iso(approval.decidedAt),
    consumedAt: iso(approval.consumedAt),
  };
}

/** What a webhook says of a state change: one line, the fields an approver needs, the request itself. */
export function noticeOf(type: string, approval: ApprovalRequest, at: number, extra: Record<string, unknown> = {}): NotificationInput {
  const what = `${approval.action} ${approval.resource}`;
  const summaries: Record<string, string> = {
    'approval.requested': `${approval.identityId} asks for approval to ${what} in ${approval.environment}`,
    'approval.approved': `Approved: ${approval.identityId} may ${what} once`,
    'approval.denied': `Denied: ${approval.identityId} may not ${what}`,
    'approval.consumed': `Used: ${approval.identityId} did ${what} under its approval`,
    'approval.expired': `Expired unanswered: ${approval.identityId}'s request to ${what}`,
    'approval.cancelled': `Cancelled (its task ended): ${approval.identityId}'s request to ${what}`,
  };
  const risk = approval.risk as { score?: unknown; level?: unknown; signals?: Record<string, unknown> };
  const signals = Object.entries(risk.signals ?? {})
    .filter(([, points]) => typeof points === 'number' && points > 0)
    .map(([name, points]) => `${name} +${String(points)}`)
    .join(', ');
  const approvals = approval.votes.filter((v) => v.decision === 'approve').length;
  const fields = [
    { label: 'Action', value: `${approval.action} (${approval.tier})` },
    { label: 'Resource', value: approval.resource },
    { label: 'Arguments', value: approval.arguments ?? (approval.argsDigest === null ? 'none' : `not kept; digest ${approval.argsDigest}`) },
    { label: 'Purpose', value: approval.purpose },
    { label: 'Intent', value: approval.intent },
    { label: 'Agent', value: approval.identityId },
    { label: 'Owner', value: approval.owner ?? 'none' },
    { label: 'Environment', value: approval.environment },
    { label: 'Risk', value: `${String(risk.score ?? '?')} (${String(risk.level ?? '?')})${signals === '' ? '' : `: ${signals}`}` },
    { label: 'Approvals', value: `${approvals} of ${approval.requiredApprovals}; expires ${new Date(approval.expiresAt).toISOString()}` },
    { label: 'Request', value: approval.id },
  ];
  return { type, at, summary: summaries[type] ?? `${type}: ${what}`, fields, data: { approval: approvalView(approval), ...extra } };
}
