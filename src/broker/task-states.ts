/**
 * The task state machine, written down once. Every state change goes through
 * the store's compare-and-set with the `from` states this table allows, so an
 * illegal or racing transition changes nothing and is reported as a conflict.
 *
 *   (request) ──> active ──> completed | failed | revoked | expired
 *       │            ^
 *       ├──> pending_approval ──> active | denied | revoked | expired
 *       └──> denied
 */
import type { TaskState } from '../core/types.js';

export const TASK_TRANSITIONS: Readonly<Record<TaskState, readonly TaskState[]>> = {
  pending_approval: ['active', 'denied', 'revoked', 'expired'],
  active: ['completed', 'failed', 'revoked', 'expired'],
  completed: [],
  failed: [],
  revoked: [],
  expired: [],
  denied: [],
};

/** True when a task in `from` may move to `to`. */
export function canTransition(from: TaskState, to: TaskState): boolean {
  return TASK_TRANSITIONS[from].includes(to);
}

/** Every state from which `to` may be reached. */
export function statesLeadingTo(to: TaskState): TaskState[] {
  return (Object.keys(TASK_TRANSITIONS) as TaskState[]).filter((from) => canTransition(from, to));
}

/** True for states a task never leaves. */
export function isTerminal(state: TaskState): boolean {
  return TASK_TRANSITIONS[state].length === 0;
}
