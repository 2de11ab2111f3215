/**
 * `writ/sdk`: a small client for agents and orchestrators, over the REST API
 * only. Errors from Writ arrive as `WritApiError` with the problem's stable
 * `code`; switch on that, never on the message.
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
}

export function createWritClient(options: WritClientOptions): WritClient {
  const base = options.baseUrl.replace(/\/+$/, '');
  const doFetch = options.fetch ?? fetch;
  const timeoutMs = options.timeoutMs ?? 10_000;

  const call = async <T>(method: 'GET' | 'POST', path: string, bearer?: string, body?: unknown): Promise<T> => {
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json' };
    if (bearer !== undefined) headers.authorization = `Bearer ${bearer}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await doFetch(`${base}${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
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

  return {
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
  };
}
