/**
 * `writ/sdk`: a small client for agents and orchestrators, over the REST API
 * only. Errors from Writ arrive as `WritApiError` with the problem's stable
 * `code`; switch on that, never on the message.
 *
 * `holdTask` keeps a task and its current token together: a planner hands
 * workers slices of it (`delegate`), and at checkpoints it marks (`checkpoint`)
 * the token is renewed when it nears its expiry. Never on a timer: a task that
 * stops reaching checkpoints runs out.
 */

export interface Scope {
  readonly action: string;
  readonly resource: string;
}

export interface RefusedScope extends Scope {
  readonly outcome: 'deny' | 'approval_required';
  readonly policies: readonly string[];
  readonly reason: string;
}

export interface TaskView {
  readonly id: string;
  readonly state: 'pending_approval' | 'active' | 'completed' | 'failed' | 'revoked' | 'expired' | 'denied';
  readonly identity: string;
  readonly purpose: string;
  readonly intent: string;
  readonly environment: string;
  readonly requestedScopes: readonly Scope[];
  readonly grantedScopes: readonly Scope[];
  readonly refusedScopes: readonly RefusedScope[];
  readonly policyVersion: string;
  /** The task it was delegated from; null for a task asked for directly. */
  readonly parentTaskId: string | null;
  /** The tasks it was delegated from, root first. */
  readonly lineage: readonly string[];
  /** Who delegated, in the order of `lineage`. */
  readonly delegators: readonly string[];
  /** The only identities it may be delegated to; null: any policy allows. */
  readonly mayAct: readonly string[] | null;
  /** How many times it was renewed at a checkpoint. */
  readonly renewals: number;
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly endedAt: string | null;
  readonly endReason: string | null;
}

export interface TaskRequest {
  readonly purpose: string;
  readonly intent: string;
  readonly scopes: readonly Scope[];
  readonly environment: string;
  /** Seconds or a duration such as `5m`. */
  readonly ttl?: number | string;
}

export type TaskGrant =
  | {
      readonly status: 'granted' | 'partial';
      readonly task: TaskView;
      readonly token: string;
      readonly tokenType: 'Bearer';
      readonly expiresIn: number;
      readonly warnings: readonly string[];
    }
  /** Scopes wait for a human: answer `approvals`, then `activateTask`. */
  | { readonly status: 'pending_approval'; readonly task: TaskView; readonly approvals: readonly ApprovalView[]; readonly warnings: readonly string[] };

/** An approval request: one exact action a human answers (docs/approvals.md). */
export interface ApprovalView {
  readonly id: string;
  readonly state: 'pending' | 'approved' | 'denied' | 'consumed' | 'expired' | 'cancelled';
  readonly stage: 'grant' | 'call';
  readonly task: string;
  readonly identity: string;
  readonly owner: string | null;
  readonly action: string;
  readonly resource: string;
  readonly tier: string;
  /** The call's arguments while the request is live; null once it ended, or when too large to keep. */
  readonly arguments: unknown;
  readonly argsDigest: string | null;
  readonly environment: string;
  readonly intent: string;
  readonly purpose: string;
  readonly risk: Readonly<Record<string, unknown>>;
  readonly policies: readonly string[];
  readonly policyVersion: string;
  readonly requiredApprovals: number;
  readonly votes: readonly { readonly approver: string; readonly decision: 'approve' | 'deny'; readonly at: string; readonly selfApproval: boolean; readonly note: string | null }[];
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly decidedAt: string | null;
  readonly consumedAt: string | null;
}

/** An emergency grant (docs/break-glass.md). */
export interface BreakGlassView {
  readonly id: string;
  readonly task: string;
  readonly identity: string;
  readonly requestedBy: string;
  readonly reason: string;
  readonly incident: string;
  readonly environment: string;
  readonly scopes: readonly Scope[];
  readonly state: 'running' | 'review_owed' | 'reviewed';
  readonly createdAt: string;
  readonly expiresAt: string;
  readonly endedAt: string | null;
  readonly endState: string | null;
  readonly renewable: false;
  readonly used: readonly string[];
  /** Credentials Writ injected under it: rotate them. */
  readonly rotate: readonly string[];
  readonly reviewedAt: string | null;
  readonly reviewedBy: string | null;
  readonly reviewNote: string | null;
}

export interface BreakGlassRequest {
  readonly reason: string;
  readonly incident: string;
  readonly environment: string;
  readonly scopes: readonly Scope[];
  /** Seconds or a duration such as `30m`. */
  readonly duration?: number | string;
  /** An agent the caller owns; default the caller. */
  readonly identity?: string;
}

/** A renewal at a checkpoint (`POST /v1/tasks/{id}/renew`). */
export interface RenewalRequest {
  /** What was done since the task began or was last renewed: on the record. 1 to 500 characters. */
  readonly checkpoint: string;
  /** Seconds or a duration such as `5m`; default Writ's default TTL. Never past the task's maximum lifetime. */
  readonly ttl?: number | string;
  /** Keep only these (each one the task holds); default everything it holds. */
  readonly scopes?: readonly Scope[];
}

export interface TaskRenewal {
  readonly task: TaskView;
  /** The new token; the one that asked is refused from now on. */
  readonly token: string;
  readonly tokenType: 'Bearer';
  readonly expiresIn: number;
  readonly warnings: readonly string[];
}

/** What a planner hands a worker (RFC 8693 token exchange). */
export interface DelegationRequest {
  /** The slice, each within what the planner's task holds: scopes, or `action:resource` entries separated by spaces. */
  readonly scopes: readonly Scope[] | string;
  /** Seconds or a duration such as `2m`; default as long as Writ's default allows, within the planner's expiry. */
  readonly ttl?: number | string;
  /** The worker's part of the work; default the planner's purpose. */
  readonly purpose?: string;
  /** The only identities the worker may hand its slice on to. */
  readonly mayAct?: readonly string[];
}

/** A worker's task, delegated from the planner's. */
export interface Delegation {
  /** The worker's task token; give it to the worker, never to anyone else. */
  readonly token: string;
  readonly tokenType: 'Bearer';
  readonly taskId: string;
  readonly expiresIn: number;
  readonly scopes: readonly Scope[];
}

/** Anything that carries a task token and how long it lives: a grant, a renewal, a delegation, a break-glass answer. */
export type TaskTokenSource = { readonly token: string; readonly expiresIn: number } & ({ readonly task: { readonly id: string } } | { readonly taskId: string });

export interface HoldTaskOptions {
  /**
   * A checkpoint renews when the token has fewer than this many seconds left.
   * Default: a third of the token's lifetime.
   */
  readonly renewWithin?: number;
  /** Epoch milliseconds now; default `Date.now`. The expiry is counted from when the token arrived, so a skewed clock does not matter. */
  readonly now?: () => number;
}

export interface CheckpointOptions {
  /** For this checkpoint's renewal: seconds or a duration such as `5m`. */
  readonly ttl?: number | string;
  /** For this checkpoint's renewal: keep only these scopes. */
  readonly scopes?: readonly Scope[];
  /** Overrides the holder's `renewWithin` for this checkpoint (seconds). */
  readonly renewWithin?: number;
}

export type CheckpointResult =
  /** This checkpoint renewed the task: its note is on the record, and the holder uses the new token. */
  | { readonly renewed: true; readonly task: TaskView; readonly expiresIn: number; readonly warnings: readonly string[] }
  /**
   * Nothing was asked of Writ and the note is not recorded: the token has life
   * enough (`not_due`: a checkpoint renews in `dueIn` seconds), or a checkpoint
   * running at the same time renewed it (`renewed_concurrently`).
   */
  | { readonly renewed: false; readonly reason: 'not_due' | 'renewed_concurrently'; readonly expiresIn: number; readonly dueIn: number };

/**
 * A task and its current token. After a renewal every method uses the new
 * token; one called while a renewal is under way waits for it first.
 */
export interface HeldTask {
  readonly id: string;
  /** The current token. A renewal replaces it: read it again rather than keep it. */
  readonly token: string;
  /** Seconds the current token has left, by the holder's clock. */
  expiresIn(): number;
  /**
   * Marks a checkpoint: when the token has less than `renewWithin` left, renews
   * the task with `note` as what was done, and holds the new token; otherwise
   * does nothing, and says so. Two checkpoints at once make one renewal.
   * @throws TypeError when `note` is not 1 to 500 characters of plain text (whether or not a renewal is due)
   * @throws WritApiError of the renewal: ERR_MAX_LIFETIME_REACHED, ERR_NOT_RENEWABLE (break-glass),
   *   ERR_POLICY_DENIED, ERR_APPROVAL_REQUIRED, ERR_SCOPE_NOT_GRANTED, ERR_TASK_STATE_CONFLICT,
   *   ERR_UNAUTHENTICATED (the token expired, or was replaced elsewhere). The current token is left as it was.
   */
  checkpoint(note: string, options?: CheckpointOptions): Promise<CheckpointResult>;
  authorize(call: ActionCall): Promise<AuthorizeAnswer>;
  authorizeWithApproval(call: ActionCall, options: { readonly waitMs: number; readonly pollMs?: number; readonly signal?: AbortSignal }): Promise<AuthorizeAnswer>;
  /** Hands the worker whose `actorToken` is given a slice of this task; see `WritClient.delegate`. */
  delegate(actorToken: string, request: DelegationRequest): Promise<Delegation>;
  get(): Promise<TaskView>;
  complete(note?: string): Promise<TaskView>;
  fail(note?: string): Promise<TaskView>;
}

export interface ActionCall {
  readonly action: string;
  readonly resource: string;
  readonly context?: Readonly<Record<string, unknown>>;
}

export interface AuthorizeAnswer {
  readonly allowed: boolean;
  readonly decision: 'allow' | 'deny' | 'approval_required';
  readonly reason: string | null;
  readonly taskId: string | null;
  readonly identityId: string | null;
  readonly tier: string | null;
  readonly policies: readonly string[];
  readonly policyVersion: string | null;
  readonly auditId: string | null;
  /** The approval request to answer (`pending`), or the one this call used (`consumed`). */
  readonly approval?: { readonly id: string; readonly state: 'pending' | 'consumed'; readonly expiresAt?: number };
  /** Decided under a break-glass grant. */
  readonly breakGlass?: true;
}

export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: string;
  readonly correlationId?: string;
  readonly [extension: string]: unknown;
}

/** An error answer from Writ (RFC 9457 problem details). */
export class WritApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly problem: Problem;

  constructor(problem: Problem) {
    super(`${problem.code}: ${problem.detail}`);
    this.name = 'WritApiError';
    this.status = problem.status;
    this.code = problem.code;
    this.problem = problem;
  }
}

export interface WritClientOptions {
  /** Writ's base URL, e.g. `http://127.0.0.1:8750`. */
  readonly baseUrl: string;
  /** Per-request timeout in ms (default 10 s). */
  readonly timeoutMs?: number;
  readonly fetch?: typeof fetch;
}

export interface WritClient {
  /** Asks for access for one task. Throws WritApiError ERR_POLICY_DENIED when nothing is granted. */
  requestTask(identityToken: string, request: TaskRequest): Promise<TaskGrant>;
  /** Asks whether `taskToken` allows one call. Denials are answers, not errors. */
  authorize(taskToken: string, call: ActionCall): Promise<AuthorizeAnswer>;
  getTask(bearer: string, taskId: string): Promise<TaskView>;
  completeTask(bearer: string, taskId: string, note?: string): Promise<TaskView>;
  failTask(bearer: string, taskId: string, note?: string): Promise<TaskView>;
  revokeTask(bearer: string, taskId: string, note?: string): Promise<TaskView>;
  /** The task-token signing keys (for offline verification). */
  jwks(): Promise<{ keys: Record<string, unknown>[] }>;
  /** A task whose scopes waited for approval: its grant once they are answered (still `pending_approval` before). */
  activateTask(identityToken: string, taskId: string): Promise<TaskGrant>;
  getApproval(bearer: string, id: string): Promise<ApprovalView>;
  /** Requests the caller may answer (a human) or asked for; default state pending. */
  listApprovals(bearer: string, query?: { readonly state?: readonly ApprovalView['state'][]; readonly task?: string; readonly limit?: number }): Promise<ApprovalView[]>;
  approve(humanToken: string, id: string, note?: string): Promise<ApprovalView>;
  deny(humanToken: string, id: string, note?: string): Promise<ApprovalView>;
  /**
   * Polls the request until it is answered (no longer pending), `timeoutMs`
   * passes, or `signal` aborts; returns it as it then stands.
   */
  waitForApproval(bearer: string, id: string, options?: { readonly timeoutMs?: number; readonly pollMs?: number; readonly signal?: AbortSignal }): Promise<ApprovalView>;
  /**
   * `authorize`, and when the call needs a human's approval, waits for the
   * answer (up to `waitMs`) and asks again: an approved call is allowed once.
   */
  authorizeWithApproval(taskToken: string, call: ActionCall, options: { readonly waitMs: number; readonly pollMs?: number; readonly signal?: AbortSignal }): Promise<AuthorizeAnswer>;
  /** An emergency grant for the caller (a human) or an agent it owns; returns its task token. */
  breakGlass(humanToken: string, request: BreakGlassRequest): Promise<{ readonly breakGlass: BreakGlassView; readonly task: TaskView; readonly token: string; readonly expiresIn: number }>;
  /**
   * Renews a task with its current token, whatever it has left: a fresh
   * decision of what it keeps, a new token, and `taskToken` refused from then
   * on. At checkpoints, prefer `HeldTask.checkpoint`, which renews only when due.
   * @throws WritApiError ERR_MAX_LIFETIME_REACHED, ERR_NOT_RENEWABLE, ERR_POLICY_DENIED, ERR_APPROVAL_REQUIRED,
   *   ERR_SCOPE_NOT_GRANTED, ERR_TASK_STATE_CONFLICT, ERR_FORBIDDEN (not the task's token), ERR_VALIDATION
   */
  renewTask(taskToken: string, taskId: string, request: RenewalRequest): Promise<TaskRenewal>;
  /**
   * The planner's side of a delegation (RFC 8693 token exchange at
   * `/oauth/token`): a child task for the worker, holding `request.scopes`,
   * each within what `taskToken`'s task holds now, and never outliving it.
   * Nothing is cut silently: a slice Writ would not hand on whole is refused whole.
   * `actorToken` is the worker's identity token made for one exchange (audience
   * `delegation.actorAudience`; `writ identity token --for-exchange` in
   * development): the worker hands it to its planner, who can do nothing else
   * with it, and it is spent here. A general identity token is refused.
   * @throws WritApiError ERR_SCOPE_EXCEEDS_PARENT, ERR_LIFETIME_EXCEEDS_PARENT, ERR_ACTOR_NOT_ALLOWED
   *   (also an actor token spent already), ERR_DELEGATION_TOO_DEEP, ERR_POLICY_DENIED, ERR_APPROVAL_REQUIRED,
   *   ERR_VALIDATION, ERR_UNAUTHENTICATED; its `problem` carries OAuth's `error` and `error_description` too
   */
  delegate(taskToken: string, actorToken: string, request: DelegationRequest): Promise<Delegation>;
  /**
   * Holds a granted task and its token (from `requestTask`, `activateTask`,
   * `delegate`, `breakGlass`, or one given to this process with its lifetime),
   * for checkpoints that renew it and calls that always use its current token.
   */
  holdTask(source: TaskTokenSource, options?: HoldTaskOptions): HeldTask;
}

const TOKEN_EXCHANGE_FORM = {
  grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
  subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
  actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
} as const;

export function createWritClient(options: WritClientOptions): WritClient {
  const base = options.baseUrl.replace(/\/+$/, '');
  const doFetch = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? 10_000;

  /** `body` as JSON, or form-encoded when it is URLSearchParams (the OAuth token endpoint's only). */
  const call = async <T>(method: 'GET' | 'POST', path: string, bearer?: string, body?: unknown): Promise<T> => {
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json' };
    if (bearer !== undefined) headers.authorization = `Bearer ${bearer}`;
    const form = body instanceof URLSearchParams;
    if (body !== undefined) headers['content-type'] = form ? 'application/x-www-form-urlencoded' : 'application/json';
    const response = await doFetch(`${base}${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body: form ? body.toString() : JSON.stringify(body) }),
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    const parsed: unknown = text.length > 0 ? JSON.parse(text) : undefined;
    if (!response.ok) {
      const problem = parsed as Partial<Problem> | undefined;
      throw new WritApiError({
        type: problem?.type ?? 'about:blank',
        title: problem?.title ?? response.statusText,
        status: response.status,
        detail: problem?.detail ?? response.statusText,
        code: problem?.code ?? 'ERR_HTTP',
        ...(problem ?? {}),
      });
    }
    return parsed as T;
  };
  const approvalPath = (id: string, verb?: string) => `/v1/approvals/${encodeURIComponent(id)}${verb === undefined ? '' : `/${verb}`}`;
  const vote = async (verb: 'approve' | 'deny', bearer: string, id: string, note?: string) =>
    (await call<{ approval: ApprovalView }>('POST', approvalPath(id, verb), bearer, note === undefined ? {} : { note })).approval;
  const waitFor = async (bearer: string, id: string, deadline: number, pollMs: number, signal?: AbortSignal): Promise<ApprovalView> => {
    for (;;) {
      const approval = (await call<{ approval: ApprovalView }>('GET', approvalPath(id), bearer)).approval;
      if (approval.state !== 'pending' || Date.now() >= deadline || signal?.aborted === true) return approval;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(pollMs, Math.max(0, deadline - Date.now())));
        function done() {
          clearTimeout(timer);
          signal?.removeEventListener('abort', done);
          resolve();
        }
        signal?.addEventListener('abort', done, { once: true });
      });
    }
  };
  const taskPath = (id: string, verb?: string) => `/v1/tasks/${encodeURIComponent(id)}${verb === undefined ? '' : `/${verb}`}`;
  const end = async (verb: string, bearer: string, taskId: string, note?: string) =>
    (await call<{ task: TaskView }>('POST', taskPath(taskId, verb), bearer, note === undefined ? {} : { note })).task;

  const renewTask = (taskToken: string, taskId: string, request: RenewalRequest) => call<TaskRenewal>('POST', taskPath(taskId, 'renew'), taskToken, request);
  const delegate = async (taskToken: string, actorToken: string, request: DelegationRequest): Promise<Delegation> => {
    const form = new URLSearchParams({
      ...TOKEN_EXCHANGE_FORM,
      subject_token: taskToken,
      actor_token: actorToken,
      scope: typeof request.scopes === 'string' ? request.scopes : request.scopes.map((s) => `${s.action}:${s.resource}`).join(' '),
    });
    if (request.ttl !== undefined) form.set('ttl', String(request.ttl));
    if (request.purpose !== undefined) form.set('purpose', request.purpose);
    if (request.mayAct !== undefined) form.set('may_act', request.mayAct.join(' '));
    const answer = await call<{ access_token: string; token_type: 'Bearer'; expires_in: number; scope: string; task_id: string }>('POST', '/oauth/token', undefined, form);
    return { token: answer.access_token, tokenType: answer.token_type, taskId: answer.task_id, expiresIn: answer.expires_in, scopes: parseScopes(answer.scope) };
  };

  const client: WritClient = {
    requestTask: (identityToken, request) => call<TaskGrant>('POST', '/v1/tasks', identityToken, request),
    authorize: (taskToken, actionCall) => call<AuthorizeAnswer>('POST', '/v1/authorize', undefined, { token: taskToken, ...actionCall }),
    getTask: async (bearer, taskId) => (await call<{ task: TaskView }>('GET', taskPath(taskId), bearer)).task,
    completeTask: (bearer, taskId, note) => end('complete', bearer, taskId, note),
    failTask: (bearer, taskId, note) => end('fail', bearer, taskId, note),
    revokeTask: (bearer, taskId, note) => end('revoke', bearer, taskId, note),
    jwks: () => call('GET', '/.well-known/jwks.json'),
    activateTask: (identityToken, taskId) => call<TaskGrant>('POST', taskPath(taskId, 'activate'), identityToken, {}),
    getApproval: async (bearer, id) => (await call<{ approval: ApprovalView }>('GET', approvalPath(id), bearer)).approval,
    async listApprovals(bearer, query = {}) {
      const params = new URLSearchParams();
      if (query.state !== undefined) params.set('state', query.state.join(','));
      if (query.task !== undefined) params.set('task', query.task);
      if (query.limit !== undefined) params.set('limit', String(query.limit));
      const search = params.size === 0 ? '' : `?${params.toString()}`;
      return (await call<{ approvals: ApprovalView[] }>('GET', `/v1/approvals${search}`, bearer)).approvals;
    },
    approve: (humanToken, id, note) => vote('approve', humanToken, id, note),
    deny: (humanToken, id, note) => vote('deny', humanToken, id, note),
    waitForApproval: (bearer, id, waitOptions = {}) => waitFor(bearer, id, Date.now() + (waitOptions.timeoutMs ?? 60_000), waitOptions.pollMs ?? 1000, waitOptions.signal),
    async authorizeWithApproval(taskToken, actionCall, waitOptions) {
      const first = await call<AuthorizeAnswer>('POST', '/v1/authorize', undefined, { token: taskToken, ...actionCall });
      if (first.approval?.state !== 'pending') return first;
      const answered = await waitFor(taskToken, first.approval.id, Date.now() + waitOptions.waitMs, waitOptions.pollMs ?? 1000, waitOptions.signal);
      if (answered.state !== 'approved') return first;
      return call<AuthorizeAnswer>('POST', '/v1/authorize', undefined, { token: taskToken, ...actionCall });
    },
    breakGlass: (humanToken, request) => call('POST', '/v1/break-glass', humanToken, request),
    renewTask,
    delegate,
    holdTask: (source, holdOptions = {}) => createHeldTask(client, source, holdOptions),
  };
  return client;
}

/**
 * True when a checkpoint renews: the token has less than `renewWithinMs` left,
 * or (by default) less than a third of its lifetime. Pure; the gateway keeps
 * the same rule.
 */
function renewalDue(token: { readonly receivedAt: number; readonly expiresAt: number }, now: number, renewWithinMs?: number): boolean {
  return token.expiresAt - now < (renewWithinMs ?? (token.expiresAt - token.receivedAt) / 3);
}

/** What a checkpoint note may be: what the renewal endpoint accepts. */
const PLAIN_NOTE = /^[^\p{Cc}\p{Cf}\p{Cs}]{1,500}$/u;

function createHeldTask(client: WritClient, source: TaskTokenSource, options: HoldTaskOptions): HeldTask {
  const now = options.now ?? Date.now;
  const id = 'taskId' in source ? source.taskId : source.task.id;
  const received = (token: string, expiresIn: number) => {
    const at = now();
    return { token, receivedAt: at, expiresAt: at + expiresIn * 1000 };
  };
  let current = received(source.token, source.expiresIn);
  // INVARIANT: set synchronously by the checkpoint that starts a renewal, so a second one sees it and joins.
  let renewing: Promise<TaskRenewal> | undefined;
  const secondsLeft = () => Math.max(0, Math.floor((current.expiresAt - now()) / 1000));
  /** The token to use now: the one a renewal under way is about to hand over, once it has. */
  const tokenNow = async (): Promise<string> => {
    if (renewing !== undefined) await renewing.catch(() => undefined);
    return current.token;
  };

  return {
    id,
    get token() {
      return current.token;
    },
    expiresIn: secondsLeft,

    async checkpoint(note, checkpointOptions = {}) {
      if (typeof note !== 'string' || !PLAIN_NOTE.test(note)) throw new TypeError('a checkpoint note is 1 to 500 characters, without control or format characters');
      const within = checkpointOptions.renewWithin ?? options.renewWithin;
      const withinMs = within === undefined ? undefined : within * 1000;
      const dueIn = () => Math.max(0, Math.ceil((current.expiresAt - (withinMs ?? (current.expiresAt - current.receivedAt) / 3) - now()) / 1000));
      if (renewing !== undefined) {
        // One renewal at a time: this checkpoint shares its outcome (a refusal too) rather than ask again.
        await renewing;
        return { renewed: false, reason: 'renewed_concurrently', expiresIn: secondsLeft(), dueIn: dueIn() };
      }
      if (!renewalDue(current, now(), withinMs)) return { renewed: false, reason: 'not_due', expiresIn: secondsLeft(), dueIn: dueIn() };
      const request: RenewalRequest = {
        checkpoint: note,
        ...(checkpointOptions.ttl === undefined ? {} : { ttl: checkpointOptions.ttl }),
        ...(checkpointOptions.scopes === undefined ? {} : { scopes: checkpointOptions.scopes }),
      };
      const renewal = client.renewTask(current.token, id, request).then((answer) => {
        current = received(answer.token, answer.expiresIn);
        return answer;
      });
      renewing = renewal;
      try {
        const answer = await renewal;
        return { renewed: true, task: answer.task, expiresIn: answer.expiresIn, warnings: answer.warnings };
      } finally {
        renewing = undefined;
      }
    },
    authorize: async (actionCall) => client.authorize(await tokenNow(), actionCall),
    authorizeWithApproval: async (actionCall, waitOptions) => client.authorizeWithApproval(await tokenNow(), actionCall, waitOptions),
    delegate: async (actorToken, request) => client.delegate(await tokenNow(), actorToken, request),
    get: async () => client.getTask(await tokenNow(), id),
    complete: async (note) => client.completeTask(await tokenNow(), id, note),
    fail: async (note) => client.failTask(await tokenNow(), id, note),
  };
}

/** `action:resource` entries separated by spaces (an OAuth `scope`); the action never holds a colon. */
function parseScopes(text: string): Scope[] {
  return text
    .split(' ')
    .filter((entry) => entry.length > 0)
    .map((entry) => {
      const colon = entry.indexOf(':');
      return { action: entry.slice(0, colon), resource: entry.slice(colon + 1) };
    });
}
