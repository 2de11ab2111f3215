/**
 * How the gateway maps upstream tools to (action, resource): annotations only
 * ever raise a tier, templates cannot be walked out of, and a task sees a tool
 * only when some scope it holds could cover a call.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { actionFromHints, configuredMapping, grantShows, mapTool, reachOf, resourceForCall, splitToolName } from '../src/gateway/mcp/tool-map.js';

describe('annotations → action', () => {
  test('the MCP spec defaults apply to what a tool leaves out, so hints only ever raise the tier', () => {
    const table: [Parameters<typeof actionFromHints>[0], string][] = [
      [undefined, 'export'],
      [{}, 'export'],
      [{ readOnlyHint: true }, 'export'],
      [{ readOnlyHint: true, openWorldHint: false }, 'read'],
      [{ readOnlyHint: true, destructiveHint: true, openWorldHint: false }, 'read'],
      [{ openWorldHint: false }, 'delete'],
      [{ destructiveHint: false, openWorldHint: false }, 'write'],
      [{ destructiveHint: true, openWorldHint: true }, 'export'],
      // Not booleans: not hints at all.
      [{ readOnlyHint: 'true', openWorldHint: 'false' }, 'export'],
      [{ readOnlyHint: 1, openWorldHint: 0 }, 'export'],
    ];
    for (const [hints, action] of table) assert.equal(actionFromHints(hints), action, JSON.stringify(hints));
  });

  test('configuration wins over annotations; a tool can be hidden or left unlisted', () => {
    const tool = { name: 'create_refund', annotations: { readOnlyHint: true, openWorldHint: false } };
    const configured = mapTool('tickets', tool, { action: 'refund', resource: 'payments:refunds/{ticketId}', hidden: false }, 'all');
    assert.ok(configured.ok);
    assert.deepEqual(configured.tool, {
      name: 'tickets__create_refund',
      upstream: 'tickets',
      tool: 'create_refund',
      action: 'refund',
      actionFrom: 'config',
      resource: 'payments:refunds/{ticketId}',
      reach: 'payments:refunds/*',
    });
    const hinted = mapTool('tickets', tool, undefined, 'all');
    assert.ok(hinted.ok && hinted.tool.action === 'read' && hinted.tool.resource === 'tool:tickets/create_refund');
    assert.equal(mapTool('tickets', tool, { hidden: true }, 'all').ok, false);
    assert.equal(mapTool('tickets', tool, undefined, 'listed').ok, false);
    assert.ok(mapTool('tickets', tool, { hidden: false }, 'listed').ok);
  });

  test('only tools the operator named are configured: Object.prototype names none (expose: listed holds)', () => {
    const tools = { ping: { hidden: false } };
    for (const name of ['constructor', 'toString', 'valueOf', 'hasOwnProperty', '__proto__', 'isPrototypeOf']) {
      assert.equal(configuredMapping(tools, name), undefined, name);
      assert.equal(mapTool('up', { name }, configuredMapping(tools, name), 'listed').ok, false, name);
    }
    assert.deepEqual(configuredMapping(tools, 'ping'), { hidden: false });
  });

  test('names agents could not call, and malformed templates, are not offered', () => {
    for (const name of ['has space', 'slash/tool', '', 'x'.repeat(121), 'ünï']) {
      assert.equal(mapTool('tickets', { name }, undefined, 'all').ok, false, name);
    }
    for (const resource of ['payments:{a', 'payments:refunds/{a}*', '{kind}:x', 'payments:refunds/{a b}', 'payments:{a}/../x']) {
      assert.equal(mapTool('tickets', { name: 't' }, { resource, hidden: false }, 'all').ok, false, resource);
    }
  });
});

describe('resources of a call', () => {
  test('placeholders take one safe segment from the call\'s own arguments', () => {
    assert.deepEqual(resourceForCall('payments:refunds/{ticketId}', { ticketId: 'T-1042' }), { ok: true, resource: 'payments:refunds/T-1042' });
    assert.deepEqual(resourceForCall('db:{table}/{id}', { table: 'orders', id: 42 }), { ok: true, resource: 'db:orders/42' });
    assert.deepEqual(resourceForCall('tool:tickets/list', {}), { ok: true, resource: 'tool:tickets/list' });
  });

  test('nothing an agent sends walks out of the template', () => {
    const hostile: unknown[] = ['..', '.', 'a/b', '../customers/pii', '*', 'T-1*', 'x:y', '', 'a b', 'a\nb', "1' or '1'='1", '%2e%2e', 'ü', 1.5, -0.5, 2 ** 60, true, null, ['T-1'], { id: 'T-1' }];
    for (const value of hostile) {
      const result = resourceForCall('payments:refunds/{ticketId}', { ticketId: value });
      assert.equal(result.ok, false, JSON.stringify(value));
    }
    assert.equal(resourceForCall('payments:refunds/{ticketId}', {}).ok, false, 'missing');
    // An inherited property is not an argument.
    assert.equal(resourceForCall('payments:refunds/{toString}', {}).ok, false);
  });

  test('reach: the pattern of every resource a template can name', () => {
    assert.equal(reachOf('payments:refunds/{ticketId}'), 'payments:refunds/*');
    assert.equal(reachOf('db:{table}/{id}'), 'db:*');
    assert.equal(reachOf('tool:tickets/list'), 'tool:tickets/list');
    assert.equal(reachOf('tool:tickets/*'), undefined, 'a template names resources, not patterns');
  });
});

describe('what a grant shows', () => {
  const refund = { action: 'refund', reach: 'payments:refunds/*' };
  test('a tool is listed when a scope with its action could cover some call of it', () => {
    assert.equal(grantShows([{ action: 'refund', resource: 'payments:refunds/T-1042' }], refund), true);
    assert.equal(grantShows([{ action: 'refund', resource: 'payments:*' }], refund), true);
    assert.equal(grantShows([{ action: 'write', resource: 'payments:refunds/*' }], refund), false, 'another action');
    assert.equal(grantShows([{ action: 'refund', resource: 'payments:payouts/*' }], refund), false, 'another resource');
    assert.equal(grantShows([], refund), false);
  });

  test('gateway names split back into upstream and tool', () => {
    assert.deepEqual(splitToolName('tickets__create_refund'), { upstream: 'tickets', tool: 'create_refund' });
    assert.deepEqual(splitToolName('a__b__c'), { upstream: 'a', tool: 'b__c' });
    for (const name of ['request_access', '__x', 'tickets__', '']) assert.equal(splitToolName(name), undefined, name);
  });
});
