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
  | { readonly status: 'pending_approval'; readonly task: TaskView; readonly warnings: readonly string[] };

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
  };
}
