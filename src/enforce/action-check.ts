/**
 * The action check every enforcement point runs before a call goes through:
 *
 *   1. token     signature, expiry, audience (signature cached per token);
 *                a certificate-bound token only with that certificate
 *   2. revoked   the task has not ended, nor any task it was delegated
 *                from, and no renewal replaced the token (in-memory list)
 *   3. identity  the identity acting (a delegated token's `act.sub`) is
 *                still registered and active
 *   4. scope     a granted scope covers (action, resource), and one the task
 *                (and each task it was delegated from) still keeps if a policy
 *                change narrowed its grant since the token was minted
 *                (in-memory narrowing list)
 *   5. policy    above `read` (the action's tier, raised by the resource's
 *                tier floor), policy is decided again with fresh context: the
 *                call's arguments, its risk score, the time
 *   6. approval  when policy allows the call only with a human's approval,
 *                an approved request bound to exactly this call (task,
 *                identity, action, resource, arguments digest) is consumed,
 *                once; without one, a pending request is opened (or the
 *                open one for this same call reused) and its id returned
 *   7. audit     the decision is appended to the audit chain
 *
 * The first failing step decides, with a stable reason code. Nothing here
 * throws for a bad request; every error is a deny. An allow is returned only
 * after its audit record is committed.
 */
import { createHash } from 'node:crypto';
import { auditActor, type AuditLog } from '../audit/log.js';
import { canonicalize } from '../core/canonical-json.js';
import type { Clock } from '../core/clock.js';
import type { WritErrorCode } from '../core/errors.js';
import { findCoveringScope, isValidAction, isValidResource } from '../core/scope.js';
import type { Identity, Tier } from '../core/types.js';
import type { Registry } from '../identity/registry.js';
import { identityInactiveReason, inactiveDelegator } from '../identity/registry.js';
import { decideShadow, riskRecord, type PolicyEngine, type ShadowDecision } from '../policy/engine.js';
import type { Observations } from '../policy/observations.js';
import type { RiskScore } from '../policy/risk.js';
import type { TokenFailureCode } from '../tokens/jwt.js';
import { boundCertificate, type TaskTokenVerifier, type VerifiedTaskToken } from '../tokens/task-token.js';
import type { NarrowingList } from './narrowing-list.js';
import type { RevocationList } from './revocation-list.js';

export interface ActionRequest {
  readonly action: string;
  /** A concrete resource (`db:orders/42`) or a pattern the grant must cover whole. */
  readonly resource: string;
  /** What the enforcement point knows of the call (arguments). Audited as a digest, never stored. */
  readonly context?: Readonly<Record<string, unknown>>;
  /**
   * In process only: the call's whole arguments, when `context` carries only
   * the part policy reads (the MCP gateway's calls may carry megabytes no
   * policy looks at). Their digest is recorded, and an approval binds them and
   * shows them to its approver. Default: `context`.
   */
  readonly arguments?: unknown;
  /**
   * In process only, with `arguments`: their `sha256:` digest, when the caller
   * has it already (it is then not computed again on every call). An approval
   * is opened or used only when it is the digest of `arguments`: a caller
   * cannot show an approver one thing and bind another.
   */
  readonly argumentsDigest?: string;
}

/** One exact call, as an approval binds it. */
export interface ApprovalBinding {
  readonly stage: 'call';
  readonly taskId: string;
  readonly identityId: string;
  readonly action: string;
  readonly resource: string;
  /** `sha256:` digest of the call's canonical arguments; null for a call without any. */
  readonly argsDigest: string | null;
}

/** A call policy allows only with a human's approval: what its approvers see. */
export interface ApprovalCall extends ApprovalBinding {
  readonly identity: Identity;
  readonly task: { readonly purpose: string; readonly intent: string; readonly environment: string };
  /** The arguments as canonical JSON, or null (none, or too large to show: the digest still binds them). */
  readonly arguments: string | null;
  readonly tier: Tier;
  readonly risk: RiskScore;
  readonly policies: readonly string[];
  readonly policyVersion: string;
  /** The audit record of the decision that asked for it. */
  readonly requestRecord: string;
  /** The approval cannot outlive the token (epoch ms). */
  readonly notAfter: number;
}

/** Where approvals live (the broker's): the action check consumes and opens them. */
export interface ApprovalGate {
  /** Consumes the approved request bound to exactly this call, once; undefined when there is none. */
  consume(binding: ApprovalBinding): Promise<{ readonly id: string } | undefined>;
  /** Opens a pending request for this call, or returns the one already open for it. */
  open(call: ApprovalCall): Promise<{ readonly id: string; readonly expiresAt: number }>;
}

export type ActionReason =
  | TokenFailureCode
  | Extract<
  WritErrorCode,
  | 'ERR_TOKEN_BINDING'
  | 'ERR_TOKEN_REVOKED'
  | 'ERR_IDENTITY_INACTIVE'
  | 'ERR_VALIDATION'
  | 'ERR_UNKNOWN_ACTION'
  | 'ERR_SCOPE_NOT_GRANTED'
  | 'ERR_POLICY_DENIED'
  | 'ERR_APPROVAL_REQUIRED'
  | 'ERR_AUDIT_UNAVAILABLE'
  | 'ERR_INTERNAL'
>;

/** Who presented the token, as the enforcement point saw it. */
export interface Presenter {
  /** `x5t#S256` of the verified mTLS client certificate, if the caller presented one. */
  readonly certificateThumbprint?: string | undefined;
}

export interface ActionDecision {
  readonly allowed: boolean;
  readonly decision: 'allow' | 'deny' | 'approval_required';
  /** Null when allowed. */
  readonly reason: ActionReason | null;
  readonly taskId: string | null;
  readonly identityId: string | null;
  readonly tier: Tier | null;
  /** Policies that decided (empty when no policy was evaluated). */
  readonly policies: readonly string[];
  readonly policyVersion: string | null;
  /** The audit record of this decision; null only when it could not be written. */
  readonly auditId: string | null;
  /**
   * The approval request: the one this allowed call consumed, or (approval
   * required) the pending one a human must answer before the same call is
   * made again. Absent when none is involved or it could not be opened.
   */
  readonly approval?: { readonly id: string; readonly state: 'consumed' | 'pending'; readonly expiresAt?: number };
  /** Decided under a break-glass grant, by the break-glass set. */
  readonly breakGlass?: true;
}

export type ActionCheck = (token: string, request: ActionRequest, presenter?: Presenter) => Promise<ActionDecision>;

export interface ActionCheckOptions {
  readonly verifier: TaskTokenVerifier;
  readonly revocations: RevocationList;
  /** Tasks whose grant a policy change narrowed: their tokens carry scopes they no longer hold. */
  readonly narrowings: NarrowingList;
  readonly registry: Registry;
  /** The current policy engine; read per call so reloads apply at once. */
  readonly policy: () => PolicyEngine;
  /** The shadow (candidate) engine for tasks in `environment`, if any: decided and recorded, never enforced. */
  readonly shadow?: (environment: string) => PolicyEngine | undefined;
  /** Call rates and resource history, for the risk score. */
  readonly observations: Observations;
  readonly audit: AuditLog;
  readonly clock: Clock;
  /** Approval requests; without them an approval-required call is refused with no request to answer. */
  readonly approvals?: ApprovalGate;
  /**
   * The break-glass engine: it alone decides calls under a break-glass token
   * (undefined: break-glass is off, and such a token is refused).
   */
  readonly breakGlassPolicy?: () => PolicyEngine | undefined;
  /** Told of each allowed call under a break-glass token (`<action> <resource>`), for its end and review. */
  readonly onBreakGlassUse?: (taskId: string, item: string) => void;
}

const MAX_CONTEXT_BYTES = 16 * 1024;
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
/** Arguments larger than this are bound by their digest but not kept for approvers to read. */
const MAX_SHOWN_ARGUMENTS_BYTES = 64 * 1024;

interface Outcome {
  readonly decision: ActionDecision['decision'];
  readonly reason: ActionReason | null;
  readonly detail?: string;
  readonly token?: VerifiedTaskToken;
  readonly identity?: Identity;
  readonly tier?: Tier;
  readonly policies?: readonly string[];
  readonly policyVersion?: string;
  readonly risk?: RiskScore;
  readonly shadow?: ShadowDecision;
  /** Allowed by consuming this approval. */
  readonly consumed?: string;
  /** Decided under a break-glass grant. */
  readonly breakGlass?: true;
}

export function createActionCheck(options: ActionCheckOptions): ActionCheck {
  const { verifier, revocations, narrowings, registry, audit, clock } = options;

  const deny = (reason: ActionReason, detail: string, partial: Partial<Outcome> = {}): Outcome => ({ decision: 'deny', reason, detail, ...partial });

  /**
   * `approvalArgs`: what an approval of this call binds and shows, worked out
   * only when an approval is involved (see `approvalArguments`).
   */
  const decide = async (token: string, request: ActionRequest, argsDigest: string | null, approvalArgs: () => ApprovalArguments, presenter: Presenter | undefined, now: number): Promise<Outcome> => {
    const checked = verifier.verifyCached(token, now) ?? (await verifier.verify(token, now));
    if (!checked.ok) return deny(checked.code, checked.detail);
    const verified = checked.token;
    const taskId = verified.claims.task.id;
    const bound = boundCertificate(verified.claims);
    if (bound !== undefined && presenter?.certificateThumbprint !== bound) {
      return deny('ERR_TOKEN_BINDING', presenter?.certificateThumbprint === undefined ? 'token is bound to a client certificate; none was presented' : 'token is bound to another client certificate', { token: verified });
    }

    const revoked = revocations.refusal(verified);
    if (revoked !== undefined) return deny('ERR_TOKEN_REVOKED', revoked, { token: verified });

    // The identity acting: on a delegated task's token, the worker (`act`), not the run's first identity (`sub`).
    const actor = verified.actor;
    options.observations.recordCall(actor, now);
    const identity = registry.getCached(actor) ?? (await registry.get(actor));
    if (identity === undefined) return deny('ERR_IDENTITY_INACTIVE', 'identity is no longer registered', { token: verified });
    const inactive = identityInactiveReason(identity, now);
    if (inactive !== undefined) return deny('ERR_IDENTITY_INACTIVE', inactive, { token: verified });
    // A delegated grant stands only while everyone it was handed down from could still act.
    const delegatorGone = verified.delegators.length === 0 ? undefined : await inactiveDelegator(registry, verified.delegators, now);
    if (delegatorGone !== undefined) return deny('ERR_IDENTITY_INACTIVE', delegatorGone, { token: verified, identity });

    const breakGlass = verified.claims.task.breakGlass === true ? ({ breakGlass: true } as const) : {};
    if (!isValidAction(request.action) || !isValidResource(request.resource)) {
      return deny('ERR_VALIDATION', 'action or resource is not well formed', { token: verified, identity, ...breakGlass });
    }
    // A break-glass grant is decided by the break-glass set, never the normal one.
    const engine = 'breakGlass' in breakGlass ? options.breakGlassPolicy?.() : options.policy();
    if (engine === undefined) return deny('ERR_POLICY_DENIED', 'break-glass is off: no break-glass policy set decides this token', { token: verified, identity, ...breakGlass });
    const tier = engine.tierFor(request.action, request.resource);
    if (tier === undefined) return deny('ERR_UNKNOWN_ACTION', `action ${request.action} is not in the schema`, { token: verified, identity, ...breakGlass });
    if (findCoveringScope(verified.scopes, request) === undefined) {
      return deny('ERR_SCOPE_NOT_GRANTED', 'no granted scope covers this action and resource', { token: verified, identity, tier, ...breakGlass });
    }
    // A delegated task holds no more than its ancestors keep now: one narrowed by policy drift narrows its whole subtree.
    const narrowedIn = narrowedAway(narrowings, request, taskId) ? taskId : verified.lineage.find((id) => narrowedAway(narrowings, request, id));
    if (narrowedIn !== undefined) {
      const whose = narrowedIn === taskId ? '' : ` (of ${narrowedIn}, which this task was delegated from)`;
      return deny('ERR_SCOPE_NOT_GRANTED', `narrowed by policy drift${whose}: the token's scope covers this, the grant no longer does`, { token: verified, identity, tier, ...breakGlass });
    }
    if (tier === 'read') return { decision: 'allow', reason: null, token: verified, identity, tier, ...breakGlass };

    const observing = options.observations.observe(identity.id, request.resource, now);
    const input = {
      principal: identity,
      action: request.action,
      resource: request.resource,
      environment: verified.claims.env,
      intent: verified.claims.task.intent,
      purpose: verified.claims.task.purpose,
      stage: 'call' as const,
      now,
      delegationDepth: verified.lineage.length,
      ...(request.context === undefined ? {} : { args: request.context }),
      // Not awaited when already known: the hot path stays synchronous.
      observed: observing instanceof Promise ? await observing : observing,
      ...breakGlass,
    };
    const decision = engine.decide(input);
    // The shadow set trials changes to the normal set: a break-glass decision is not one of its.
    const shadow = 'breakGlass' in breakGlass ? undefined : decideShadow(options.shadow?.(verified.claims.env), input, decision);
    const decided = { token: verified, identity, tier, policies: decision.policies, policyVersion: decision.policyVersion, risk: decision.risk, ...(shadow === undefined ? {} : { shadow }), ...breakGlass };
    if (decision.outcome === 'allow') return { decision: 'allow', reason: null, ...decided };
    if (decision.outcome === 'approval_required') {
      // An approval counts only if policy, asked again now with it, allows the
      // call: it is spent only on a call that then goes through.
      const approved = options.approvals === undefined ? undefined : engine.decide({ ...input, approval: 'approved' });
      // INVARIANT: an approval binds exactly the arguments its approver is shown.
      if (options.approvals !== undefined && !approvalArgs().ok) {
        return deny('ERR_VALIDATION', 'the call\'s arguments do not match its arguments digest: no approval can bind them', decided);
      }
      if (approved?.outcome === 'allow') {
        const binding = { stage: 'call', taskId, identityId: identity.id, action: request.action, resource: request.resource, argsDigest } as const;
        const consumed = await options.approvals?.consume(binding);
        if (consumed !== undefined) return { decision: 'allow', reason: null, ...decided, policies: approved.policies, consumed: consumed.id };
      }
      return { decision: 'approval_required', reason: 'ERR_APPROVAL_REQUIRED', detail: 'policy requires a human approval of this exact call', ...decided };
    }
    return deny('ERR_POLICY_DENIED', decision.errors.length > 0 ? `policy errors: ${decision.errors.join('; ')}` : 'policy denied', decided);
  };

  return async (token, request, presenter) => {
    const now = clock.now();
    const shapeOk =
      typeof token === 'string' &&
      typeof request === 'object' &&
      request !== null &&
      typeof request.action === 'string' &&
      typeof request.resource === 'string';
    // INVARIANT: the context is read once, here; the digest on the record and
    // every decision (enforced and shadow) see the same copy, whatever getters
    // an in-process caller's object has.
    const givenDigest = shapeOk ? request.argumentsDigest : undefined;
    const wholeDigest = typeof givenDigest === 'string' && DIGEST_RE.test(givenDigest) ? givenDigest : undefined;
    // The call's whole arguments, when an in-process caller gives them: they are what is recorded and bound.
    const whole: unknown = shapeOk ? request.arguments : undefined;
    // The context's own digest is computed only when it is the one recorded.
    const context = shapeOk ? copyContext(request.context, wholeDigest === undefined && whole === undefined) : undefined;
    const argsDigest = wholeDigest ?? (whole === undefined ? context?.digest : digestOfArguments(whole));
    const call = shapeOk && context !== null ? { action: request.action, resource: request.resource, ...(context === undefined ? {} : { context: context.copy }) } : undefined;
    // Read once, and only on the rare path where an approval is involved.
    let boundArguments: ApprovalArguments | undefined;
    const bound = (): ApprovalArguments => (boundArguments ??= approvalArguments(whole, context?.copy, argsDigest ?? null));
    let outcome: Outcome;
    if (!shapeOk || context === null) outcome = deny('ERR_VALIDATION', 'request is not {action, resource, context?}');
    else {
      try {
        outcome = await decide(token, call as ActionRequest, argsDigest ?? null, bound, presenter, now);
      } catch (error) {
        // A failure while deciding (the store unreachable, say) is a deny, audited like any other.
        outcome = deny('ERR_INTERNAL', `check failed: ${(error as Error)?.message ?? String(error)}`);
      }
    }

    const claims = outcome.token?.claims;
    const base = {
      taskId: claims?.task.id ?? null,
      identityId: outcome.token?.actor ?? null,
      tier: outcome.tier ?? null,
      policies: outcome.policies ?? [],
      policyVersion: outcome.policyVersion ?? null,
    };
    try {
      const receipt = await audit.append({
        type: 'action.check',
        decision: outcome.decision,
        ...(outcome.reason === null ? {} : { reason: outcome.reason }),
        ...(outcome.detail === undefined ? {} : { detail: outcome.detail }),
        ...(claims === undefined
          ? {}
          : {
              actor: auditActor(outcome.identity ?? { id: outcome.token?.actor ?? claims.sub }),
              task: { id: claims.task.id, purpose: claims.task.purpose, intent: claims.task.intent, environment: claims.env },
            }),
        ...(shapeOk ? { action: request.action.slice(0, 128), resource: request.resource.slice(0, 300) } : {}),
        ...(outcome.tier === undefined ? {} : { tier: outcome.tier }),
        policies: base.policies,
        ...(outcome.policyVersion === undefined ? {} : { policyVersion: outcome.policyVersion }),
        ...(outcome.breakGlass === undefined ? {} : { breakGlass: true }),
        ...(argsDigest || outcome.risk || outcome.shadow || outcome.consumed
          ? {
              data: {
                ...(argsDigest ? { argsDigest } : {}),
                ...(outcome.risk ? { risk: riskRecord(outcome.risk) } : {}),
                ...(outcome.shadow ? { shadow: outcome.shadow } : {}),
                ...(outcome.consumed === undefined ? {} : { approval: outcome.consumed }),
              },
            }
          : {}),
      });
      const decided = { allowed: outcome.decision === 'allow', decision: outcome.decision, reason: outcome.reason, ...base, auditId: receipt.id, ...(outcome.breakGlass === undefined ? {} : { breakGlass: true as const }) };
      if (outcome.breakGlass !== undefined && decided.allowed && base.taskId !== null && call !== undefined) options.onBreakGlassUse?.(base.taskId, `${call.action} ${call.resource}`);
      if (outcome.consumed !== undefined) return { ...decided, approval: { id: outcome.consumed, state: 'consumed' } };
      if (outcome.decision !== 'approval_required' || options.approvals === undefined || call === undefined) return decided;
      const shown = bound();
      const pending = shown.ok ? await openApproval(options.approvals, outcome, call, argsDigest ?? null, shown.shown, receipt.id) : undefined;
      return pending === undefined ? decided : { ...decided, approval: { id: pending.id, state: 'pending', expiresAt: pending.expiresAt } };
    } catch {
      // INVARIANT: a decision that could not be audited is not carried out.
      return { allowed: false, decision: 'deny', reason: 'ERR_AUDIT_UNAVAILABLE', ...base, auditId: null };
    }
  };
}

/** True when a policy change narrowed task `taskId`'s grant and what it keeps does not cover `request`. */
function narrowedAway(narrowings: NarrowingList, request: ActionRequest, taskId: string): boolean {
  const kept = narrowings.remainingOf(taskId);
  return kept !== undefined && findCoveringScope(kept, request) === undefined;
}

/** Opens (or finds) the approval request for a call policy allows only with one; undefined when it could not. */
async function openApproval(
  gate: ApprovalGate,
  outcome: Outcome,
  call: ActionRequest,
  argsDigest: string | null,
  shown: string | null,
  requestRecord: string,
): Promise<{ id: string; expiresAt: number } | undefined> {
  const { token, identity, tier, risk } = outcome;
  if (token === undefined || identity === undefined || tier === undefined || risk === undefined) return undefined;
  const { claims } = token;
  try {
    return await gate.open({
      stage: 'call',
      taskId: claims.task.id,
      identityId: identity.id,
      action: call.action,
      resource: call.resource,
      argsDigest,
      identity,
      task: { purpose: claims.task.purpose, intent: claims.task.intent, environment: claims.env },
      arguments: shown,
      tier,
      risk,
      policies: outcome.policies ?? [],
      policyVersion: outcome.policyVersion ?? '',
      requestRecord,
      notAfter: token.expiresAt,
    });
  } catch {
    // The call is refused either way; without a request there is just nothing to approve.
    return undefined;
  }
}

/**
 * What an approval of a call binds and what its approver reads: the call's
 * whole arguments (in process), else its context. `ok` only when their digest
 * is the one recorded and bound, so an in-process caller cannot show an
 * approver one thing and bind another. `shown` is the canonical JSON, or null
 * when there are none or they are too large to keep (the digest still binds them).
 */
/** The digest of arguments given whole; undefined when they cannot be canonicalized (nothing can then bind them). */
function digestOfArguments(whole: unknown): string | undefined {
  try {
    return `sha256:${createHash('sha256').update(canonicalize(whole)).digest('hex')}`;
  } catch {
    return undefined;
  }
}

type ApprovalArguments = { readonly ok: true; readonly shown: string | null } | { readonly ok: false };

function approvalArguments(whole: unknown, context: Readonly<Record<string, unknown>> | undefined, recorded: string | null): ApprovalArguments {
  const value = whole !== undefined ? whole : context;
  if (value === undefined) return recorded === null ? { ok: true, shown: null } : { ok: false };
  try {
    const text = canonicalize(value);
    if (`sha256:${createHash('sha256').update(text).digest('hex')}` !== recorded) return { ok: false };
    return { ok: true, shown: Buffer.byteLength(text) > MAX_SHOWN_ARGUMENTS_BYTES ? null : text };
  } catch {
    return { ok: false };
  }
}

/**
 * A plain copy of the context and (when `withDigest`) the SHA-256 of its
 * canonical form; undefined when absent, null when unusable.
 */
function copyContext(context: unknown, withDigest: boolean): { copy: Record<string, unknown>; digest: string | undefined } | undefined | null {
  if (context === undefined) return undefined;
  if (typeof context !== 'object' || context === null || Array.isArray(context)) return null;
  try {
    const text = canonicalize(context);
    if (text.length > MAX_CONTEXT_BYTES) return null;
    return { copy: JSON.parse(text) as Record<string, unknown>, digest: withDigest ? `sha256:${createHash('sha256').update(text).digest('hex')}` : undefined };
  } catch {
    return null;
  }
}
