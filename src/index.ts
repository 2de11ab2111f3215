/**
 * `writ`: the broker, embeddable in process.
 *
 *   const writ = await createWrit();              // config from writ.yaml / WRIT_* / defaults
 *   const decision = await writ.authorize(taskToken, { action: 'read', resource: 'db:orders/42' });
 *
 * `writ.authorize` is the same action check `POST /v1/authorize` runs.
 */
export { createWrit, type CreateWritOptions, type Writ } from './writ.js';
export { loadConfig, type LoadConfigOptions, type WritConfig } from './core/config.js';
export { WritError, errorCatalog, isWritError, toProblem, type ProblemDetails, type WritErrorCode } from './core/errors.js';
export type { ActionCheck, ActionDecision, ActionReason, ActionRequest } from './enforce/action-check.js';
export type { ActorType, Identity, RefusedScope, Scope, Task, TaskState, Tier } from './core/types.js';
export { canonicalize } from './core/canonical-json.js';
export { createServer } from './server/app.js';
export { verifyAuditChain, type AuditVerification } from './audit/log.js';
export { verifyWebhook } from './events/webhooks.js';
