/**
 * Task-level actions (approve, delegate, break_glass) decided on the task
 * itself, a `Writ::Task` resource: validated against the schema and sent
 * whole with every policy of the task's environment. Approvals and delegation
 * build on these decisions.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Identity } from '../src/core/types.js';
import { createPolicyEngine, type TaskActionInput } from '../src/policy/engine.js';
import { loadPolicySet } from '../src/policy/policy-set.js';
import { policyFolder } from './helpers/policy-folder.js';

// The approver policy is the bundled one (policies/approvers.cedar); these add the other steps.
const TASK_POLICIES = `
// A planner hands read-only work to workers, at most three hops deep.
@id("planners-delegate-reads")
permit (principal is Writ::Agent, action == Writ::Action::"delegate", resource is Writ::Task)
when { resource.tier == "read" && context.delegationDepth < 3 };

// Break-glass in production needs a human.
@id("humans-break-glass")
permit (principal is Writ::Human, action == Writ::Action::"break_glass", resource is Writ::Task)
when { resource.environment == "production" };
`;

const now = Date.UTC(2026, 10, 24, 10, 0, 0);
function identity(id: string, actorType: Identity['actorType'], labels: Record<string, string> = {}, environment = 'production'): Identity {
  return { id, actorType, owner: 'owner@example.com', environment, labels, state: 'active', source: 'test', adminScopes: [], createdAt: now - 90 * 86_400_000, updatedAt: now, lastSeenAt: null, expiresAt: null };
}
const approver = identity('https://idp.example#alice', 'human', { approver: 'production' });
const planner = identity('spiffe://demo.local/agent/planner', 'agent');
const task = (overrides: Partial<TaskActionInput['task']> = {}): TaskActionInput['task'] => ({
  id: 'task_abc',
  intent: 'customer-support',
  purpose: 'Answer ticket T-1042',
  environment: 'production',
  delegationDepth: 0,
  scopes: [{ action: 'read', resource: 'tickets:*' }],
  ...overrides,
});

describe('task-level actions', () => {
  const set = loadPolicySet(policyFolder({ 'task-steps.cedar': TASK_POLICIES }));
  const engine = createPolicyEngine(set);
  const decide = (input: Omit<TaskActionInput, 'now'>) => engine.decideTaskAction({ ...input, now });

  test('the schema\'s task-level actions are known; tiered actions are not among them', () => {
    assert.deepEqual([...set.taskActions].sort(), ['approve', 'break_glass', 'delegate']);
    assert.equal(set.taskActions.has('refund'), false);
  });

  test('an outcome table over principals, tasks and steps', () => {
    const table: [string, Omit<TaskActionInput, 'now'>, 'allow' | 'deny', string[]][] = [
      ['an approver of production approves a production task', { principal: approver, action: 'approve', task: task() }, 'allow', ['approvers-approve-in-their-environment']],
      ['…not a sandbox task: the label names production', { principal: { ...approver, environment: 'sandbox', labels: { approver: 'production' } }, action: 'approve', task: task({ environment: 'sandbox' }) }, 'deny', []],
      ['a human without the approver label', { principal: identity('https://idp.example#bob', 'human'), action: 'approve', task: task() }, 'deny', []],
      ['an approver registered elsewhere (the baseline forbid)', { principal: { ...approver, environment: 'sandbox' }, action: 'approve', task: task() }, 'deny', ['environment-must-match']],
      // The bundled policies/delegation.cedar allows it too.
      ['a planner delegates a read-only task', { principal: planner, action: 'delegate', task: task() }, 'allow', ['delegate-read-only-slices', 'planners-delegate-reads']],
      ['…not one that writes', { principal: planner, action: 'delegate', task: task({ scopes: [{ action: 'read', resource: 'tickets:*' }, { action: 'write', resource: 'tickets:T-1' }] }) }, 'deny', []],
      ['…not three hops deep', { principal: planner, action: 'delegate', task: task({ delegationDepth: 3 }) }, 'deny', []],
      ['…never one at the admin tier (the baseline forbid)', { principal: planner, action: 'delegate', task: task({ scopes: [{ action: 'read', resource: 'payments:payouts/1' }] }) }, 'deny', ['agents-never-admin', 'production-refuses-critical-risk']],
      ['a human breaks glass in production', { principal: { ...approver, labels: {} }, action: 'break_glass', task: task() }, 'allow', ['humans-break-glass']],
    ];
    for (const [name, input, outcome, policies] of table) {
      const decision = decide(input);
      assert.equal(decision.outcome, outcome, `${name}: ${JSON.stringify(decision)}`);
      assert.deepEqual(decision.policies, policies, name);
    }
  });

  test('what the schema refuses is a deny with the reason: an agent approving, a tiered action as a task step', () => {
    const agentApproves = decide({ principal: planner, action: 'approve', task: task() });
    assert.equal(agentApproves.outcome, 'deny');
    assert.ok(agentApproves.errors.length > 0, 'the request does not validate: approve is for humans');
    const tiered = decide({ principal: approver, action: 'refund', task: task() });
    assert.equal(tiered.outcome, 'deny');
    assert.match(tiered.errors[0] ?? '', /not a task-level action/);
  });

  test('the task resource carries the most sensitive and highest tier of what it holds', () => {
    const decision = decide({ principal: approver, action: 'approve', task: task({ scopes: [{ action: 'read', resource: 'tickets:*' }, { action: 'export', resource: 'db:customers/pii/*' }] }) });
    assert.equal(decision.sensitivity, 'restricted');
    assert.equal(decision.tier, 'export');
  });

  test('a lone surrogate anywhere is a deny, never an answer', () => {
    for (const input of [
      { principal: approver, action: 'approve', task: task({ purpose: 'refund \uD800' }) },
      { principal: { ...approver, labels: { approver: 'production', x: '\uDC00' } }, action: 'approve', task: task() },
    ]) {
      const decision = decide(input);
      assert.equal(decision.outcome, 'deny');
      assert.match(decision.errors.join(' '), /surrogate/);
    }
  });
});
