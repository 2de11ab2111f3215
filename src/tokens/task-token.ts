/**
 * Task tokens: the credential that carries a grant. A JWT signed by Writ
 * (EdDSA), audience-bound, minutes long, naming the task and its scopes.
 *
 * The verifier caches tokens whose signature and claims verified, keyed by the
 * token itself, so an enforcement point pays for the signature once per token;
 * expiry and audience are re-checked on every call, revocation by the caller.
 */
import { epochSeconds } from '../core/clock.js';
import { newId } from '../core/ids.js';
import { formatScopeClaim, parseScopeClaim } from '../core/scope.js';
import type { Scope } from '../core/types.js';
import type { KeyRing } from './key-ring.js';
import { mintJwt, ringKeys, verifyJwt, type TokenFailureCode } from './jwt.js';

export const TASK_TOKEN_TYP = 'task+jwt';

/**
 * How a task token is checked wherever it is verified, by Writ itself and by
 * resource servers (writ/verify) alike: EdDSA only, its own `typ`, and every
 * claim Writ mints required.
 */
export const TASK_TOKEN_CHECKS = {
  algorithms: ['EdDSA'],
  typ: TASK_TOKEN_TYP,
  requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'task', 'scope', 'env'],
} as const;

/** Most levels of `act` a task token may carry (a configured delegation depth is at most this). */
export const MAX_ACT_DEPTH = 8;

/**
 * The actor claim of RFC 8693 §4.1: who acts now, and (nested) who acted
 * before it, most recent outermost. On a delegated task's token `sub` is the
 * identity the run began with, and `act.sub` the worker that holds the token.
 */
export interface ActorClaim {
  readonly sub: string;
  readonly act?: ActorClaim;
}

export interface TaskTokenClaims {
  readonly iss: string;
  /** The identity the grant is for (a SPIFFE ID). */
  readonly sub: string;
  readonly aud: string;
  readonly iat: number;
  readonly nbf: number;
  readonly exp: number;
  readonly jti: string;
  /**
   * `breakGlass`: the task is a break-glass grant, decided (at every call too) by the break-glass policy set.
   * `lineage`: a delegated task's ancestors, root first; a token is refused once any of them has ended.
   */
  readonly task: { readonly id: string; readonly purpose: string; readonly intent: string; readonly breakGlass?: true; readonly lineage?: readonly string[] };
  /** On a delegated task's token: the worker that acts, with every earlier actor nested (RFC 8693 §4.1). */
  readonly act?: ActorClaim;
  /** Who alone this task may be delegated to (RFC 8693 §4.4): one `{sub}`, or a list of them. */
  readonly may_act?: { readonly sub: string } | readonly { readonly sub: string }[];
  /** The whole run's id, shared by every task of one delegation tree: the root task's (Transaction Tokens draft). */
  readonly txn?: string;
  /** The run's declared purpose: its intent. */
  readonly purp?: string;
  /** Immutable context of the run, set by its root task and copied to every delegated one. */
  readonly tctx?: { readonly environment: string; readonly intent: string; readonly purpose: string; readonly requester: string };
  /** Space-separated `action:resource` entries (RFC 8693 §4.2 shape). */
  readonly scope: string;
  readonly env: string;
  /** Sender constraint (RFC 8705 §3.1): the client certificate the token is bound to. */
  readonly cnf?: { readonly 'x5t#S256': string };
}

/** A task token that verified, with its scopes parsed once. */
export interface VerifiedTaskToken {
  readonly claims: TaskTokenClaims;
  readonly scopes: readonly Scope[];
  /** Expiry in epoch ms. */
  readonly expiresAt: number;
  /** The identity acting with the token: `act.sub` when delegated, else `sub`. */
  readonly actor: string;
  /** The task's ancestors, root first (empty unless delegated). */
  readonly lineage: readonly string[];
  /** Who delegated, root first: the identity of each ancestor (`sub`, then every earlier actor). */
  readonly delegators: readonly string[];
}

/** Where a task sits in its run: see `MintTaskTokenInput.run`. */
export interface TaskRun {
  /** The run's root task, and what it was asked for: `txn`, `purp`, `tctx`. */
  readonly root: { readonly id: string; readonly identityId: string; readonly purpose: string; readonly intent: string; readonly environment: string };
  /** A delegated task's ancestors and their identities, root first (empty for a root task). */
  readonly lineage: readonly string[];
  readonly delegators: readonly string[];
}

export interface MintTaskTokenInput {
  readonly issuer: string;
  readonly audience: string;
  readonly identityId: string;
  readonly task: TaskTokenClaims['task'];
  readonly scopes: readonly Scope[];
  readonly environment: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
  /** `x5t#S256` of the mTLS client certificate the task was asked for over; binds the token to it. */
  readonly certificateThumbprint?: string;
  /** The task's run; default: the task is its own root, asked for directly by `identityId`. */
  readonly run?: TaskRun;
  /** Who alone the task may be delegated to. */
  readonly mayAct?: readonly string[] | null;
}

export interface MintedTaskToken {
  readonly token: string;
  readonly jti: string;
  readonly claims: TaskTokenClaims;
}

/** Signs a task token with the ring's active key. */
export function mintTaskToken(ring: KeyRing, input: MintTaskTokenInput): MintedTaskToken {
  const iat = epochSeconds(input.issuedAt);
  const run = input.run ?? {
    root: { id: input.task.id, identityId: input.identityId, purpose: input.task.purpose, intent: input.task.intent, environment: input.environment },
    lineage: [],
    delegators: [],
  };
  if (run.lineage.length !== run.delegators.length || run.lineage.length > MAX_ACT_DEPTH) throw new RangeError('a run names one delegator per ancestor, at most 8');
  const delegated = run.lineage.length > 0;
  const mayAct = input.mayAct ?? [];
  const claims: TaskTokenClaims = {
    iss: input.issuer,
    // A delegated task acts for the identity its run began with (RFC 8693 §4.1): `act` names the worker.
    sub: delegated ? (run.delegators[0] as string) : input.identityId,
    aud: input.audience,
    iat,
    nbf: iat,
    exp: epochSeconds(input.expiresAt),
    jti: newId('jti'),
    task: delegated ? { ...input.task, lineage: [...run.lineage] } : input.task,
    scope: formatScopeClaim(input.scopes),
    env: input.environment,
    ...(delegated ? { act: actorChain([...run.delegators.slice(1), input.identityId]) } : {}),
    ...(mayAct.length === 0 ? {} : { may_act: mayAct.length === 1 ? { sub: mayAct[0] as string } : mayAct.map((sub) => ({ sub })) }),
    txn: run.root.id,
    purp: run.root.intent,
    tctx: { environment: run.root.environment, intent: run.root.intent, purpose: run.root.purpose, requester: run.root.identityId },
    ...(input.certificateThumbprint === undefined ? {} : { cnf: { 'x5t#S256': input.certificateThumbprint } }),
  };
  return { token: mintJwt(ring.active, TASK_TOKEN_TYP, { ...claims }), jti: claims.jti, claims };
}

export type TaskTokenCheck =
  | { readonly ok: true; readonly token: VerifiedTaskToken }
  | { readonly ok: false; readonly code: TokenFailureCode; readonly detail: string };

export interface TaskTokenVerifier {
  /** Verifies `token` at time `now` (ms). Never throws for a bad token. */
  verify(token: string, now: number): Promise<TaskTokenCheck>;
  /** Synchronous fast path: the result for a token verified before, else undefined. */
  verifyCached(token: string, now: number): TaskTokenCheck | undefined;
}

export interface TaskTokenVerifierOptions {
  readonly ring: KeyRing;
  readonly issuer: string;
  readonly audience: string;
  readonly clockSkewSeconds: number;
  /** Most tokens kept verified in memory (oldest evicted first). */
  readonly cacheSize?: number;
}

/** The `act` claim naming `actors` in order: the last acts now (outermost), the first acted first (innermost). */
function actorChain(actors: readonly string[]): ActorClaim {
  let chain: ActorClaim | undefined;
  for (const sub of actors) chain = chain === undefined ? { sub } : { sub, act: chain };
  if (chain === undefined) throw new RangeError('an actor chain names at least one actor');
  return chain;
}

/**
 * The actors an `act` claim names, earliest first (the last acts now), or
 * undefined when it is not a chain of `{sub}` objects (nothing else is
 * accepted: an unknown member might mean something Writ does not enforce).
 */
export function actorsOf(act: unknown): string[] | undefined {
  const actors: string[] = [];
  let level = act;
  while (level !== undefined) {
    if (typeof level !== 'object' || level === null || Array.isArray(level) || actors.length >= MAX_ACT_DEPTH) return undefined;
    const { sub, act: inner, ...rest } = level as { sub?: unknown; act?: unknown };
    if (typeof sub !== 'string' || sub.length === 0 || Object.keys(rest).length > 0) return undefined;
    actors.unshift(sub);
    level = inner;
  }
  return actors;
}

/** The certificate a token is bound to, or undefined for a bearer token. */
export function boundCertificate(claims: TaskTokenClaims): string | undefined {
  return claims.cnf?.['x5t#S256'];
}

function validConfirmation(cnf: unknown): boolean {
  if (cnf === undefined) return true;
  if (typeof cnf !== 'object' || cnf === null || Array.isArray(cnf)) return false;
  const keys = Object.keys(cnf);
  // A confirmation method Writ does not know is refused rather than ignored.
  return keys.length === 1 && keys[0] === 'x5t#S256' && typeof (cnf as Record<string, unknown>)['x5t#S256'] === 'string';
}

export function createTaskTokenVerifier(options: TaskTokenVerifierOptions): TaskTokenVerifier {
  const keys = ringKeys(options.ring);
  const cache = new Map<string, VerifiedTaskToken>();
  const cacheSize = options.cacheSize ?? 10_000;
  const skewMs = options.clockSkewSeconds * 1000;

  // exp and nbf are time-dependent, so they are checked on every call, cached or not.
  const checkTime = (verified: VerifiedTaskToken, now: number): TaskTokenCheck => {
    if (now >= verified.expiresAt + skewMs) return { ok: false, code: 'ERR_TOKEN_EXPIRED', detail: 'exp has passed' };
    if (verified.claims.nbf * 1000 > now + skewMs) return { ok: false, code: 'ERR_TOKEN_NOT_YET_VALID', detail: 'nbf is in the future' };
    return { ok: true, token: verified };
  };

  const verifyCached = (token: string, now: number): TaskTokenCheck | undefined => {
    const hit = cache.get(token);
    if (hit === undefined) return undefined;
    const result = checkTime(hit, now);
    if (!result.ok) cache.delete(token);
    return result;
  };

  return {
    verifyCached,
    async verify(token, now) {
      const cached = verifyCached(token, now);
      if (cached !== undefined) return cached;
      const result = await verifyJwt<TaskTokenClaims & Record<string, unknown>>(token, {
        keys,
        ...TASK_TOKEN_CHECKS,
        issuer: options.issuer,
        audience: options.audience,
        now,
        clockSkewSeconds: options.clockSkewSeconds,
      });
      if (!result.ok) return result;
      const claims = result.payload;
      const scopes = typeof claims.scope === 'string' ? parseScopeClaim(claims.scope) : undefined;
      const task = claims.task as unknown;
      const lineage = (task as { lineage?: unknown } | null)?.lineage ?? [];
      const actors = claims.act === undefined ? [] : actorsOf(claims.act);
      if (
        scopes === undefined ||
        // A delegated token names one actor per ancestor task: `act` and `task.lineage` agree, or nothing is trusted.
        actors === undefined ||
        !Array.isArray(lineage) ||
        lineage.length !== actors.length ||
        !lineage.every((id) => typeof id === 'string' && id.length > 0) ||
        typeof task !== 'object' ||
        task === null ||
        typeof (task as { id?: unknown }).id !== 'string' ||
        ((task as { breakGlass?: unknown }).breakGlass !== undefined && (task as { breakGlass?: unknown }).breakGlass !== true) ||
        typeof claims.env !== 'string' ||
        typeof claims.jti !== 'string' ||
        !validConfirmation(claims.cnf)
      ) {
        return { ok: false, code: 'ERR_TOKEN_MALFORMED', detail: 'task token claims have the wrong shape' };
      }
      const delegators = actors.length === 0 ? [] : [claims.sub, ...actors.slice(0, -1)];
      const verified: VerifiedTaskToken = { claims, scopes, expiresAt: claims.exp * 1000, actor: actors.at(-1) ?? claims.sub, lineage: lineage as string[], delegators };
      if (cache.size >= cacheSize) {
        const oldest = cache.keys().next();
        if (oldest.done !== true) cache.delete(oldest.value);
      }
      cache.set(token, verified);
      return checkTime(verified, now);
    },
  };
}
