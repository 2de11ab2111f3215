/**
 * How the MCP gateway sees an upstream tool: its name as agents see it, the
 * action and resource each call is decided as, and whether a task's grant
 * shows it at all. Pure functions, no I/O.
 *
 * A call is decided as (action, resource):
 *   - action: from the operator's config, else from the tool's annotations,
 *     read with the MCP spec's defaults for what they leave out: a tool is
 *     `read` only if it says it is read-only AND closed-world; an unannotated
 *     tool is `export` (the spec's defaults: destructive, open world). The
 *     hints are the upstream's own claims; an operator who does not trust them
 *     names the action (or exposes only the tools it listed).
 *   - resource: from the config's template, `{arg}` placeholders filled from the
 *     call's own arguments (`payments:refunds/{ticketId}`), else
 *     `tool:<upstream>/<tool>`. An argument that cannot be a resource name
 *     segment denies the call; nothing an agent sends can walk out of the
 *     template (`/`, `..`, `*` and `:` are refused).
 */
import { isValidAction, isValidResource, resourcesIntersect } from '../../core/scope.js';
import type { Scope } from '../../core/types.js';
import type { ToolMappingConfig } from '../../core/config.js';

/** Separates an upstream's name from its tool's: `tickets__create_refund`. */
export const TOOL_SEPARATOR = '__';
/** Tool names as the MCP spec allows them (1-128 of A-Z a-z 0-9 _ - .). */
export const MCP_TOOL_NAME_RE = /^[A-Za-z0-9_.-]{1,128}$/;
/** A placeholder's value: one resource path segment. */
const SEGMENT_RE = /^[A-Za-z0-9._~@+=,-]{1,128}$/;
const PLACEHOLDER_RE = /\{([A-Za-z_][A-Za-z0-9_]{0,63})\}/g;

/** What an upstream says about a tool (MCP `ToolAnnotations`), as far as the gateway reads it. */
export interface ToolHints {
  readonly readOnlyHint?: unknown;
  readonly destructiveHint?: unknown;
  readonly openWorldHint?: unknown;
}

/** A tool as the gateway offers it. */
export interface MappedTool {
  /** `<upstream>__<tool>`. */
  readonly name: string;
  readonly upstream: string;
  /** The upstream's own name for it. */
  readonly tool: string;
  readonly action: string;
  /** Where the action came from. */
  readonly actionFrom: 'config' | 'annotations';
  /** The resource template (placeholders not yet filled). */
  readonly resource: string;
  /** The resources any call could name: the template up to its first placeholder, as a pattern. */
  readonly reach: string;
}

export function gatewayToolName(upstream: string, tool: string): string {
  return `${upstream}${TOOL_SEPARATOR}${tool}`;
}

/** `{upstream, tool}` of a gateway tool name, or undefined when it is not one. */
export function splitToolName(name: string): { readonly upstream: string; readonly tool: string } | undefined {
  const at = name.indexOf(TOOL_SEPARATOR);
  if (at <= 0) return undefined;
  const tool = name.slice(at + TOOL_SEPARATOR.length);
  return tool.length === 0 ? undefined : { upstream: name.slice(0, at), tool };
}

/** The operator's mapping of `tool`, by own key only: a tool named `constructor` is not configured by Object.prototype. */
export function configuredMapping(tools: Readonly<Record<string, ToolMappingConfig>>, tool: string): ToolMappingConfig | undefined {
  return Object.hasOwn(tools, tool) ? tools[tool] : undefined;
}

/** The action a tool's annotations imply, with the MCP spec's defaults for what they leave out. */
export function actionFromHints(hints: ToolHints | undefined): 'read' | 'write' | 'delete' | 'export' {
  const readOnly = hints?.readOnlyHint === true;
  const destructive = !readOnly && hints?.destructiveHint !== false;
  const openWorld = hints?.openWorldHint !== false;
  if (openWorld) return 'export';
  if (destructive) return 'delete';
  return readOnly ? 'read' : 'write';
}

/**
 * How the gateway offers `tool` of `upstream`, or the reason it does not: a
 * name agents could not call, a hidden or (with `expose: listed`) unlisted tool,
 * or a mapping that is not well formed.
 */
export function mapTool(
  upstream: string,
  tool: { readonly name: string; readonly annotations?: ToolHints | undefined },
  mapping: ToolMappingConfig | undefined,
  expose: 'all' | 'listed',
): { readonly ok: true; readonly tool: MappedTool } | { readonly ok: false; readonly reason: string } {
  const name = gatewayToolName(upstream, tool.name);
  if (!MCP_TOOL_NAME_RE.test(tool.name) || !MCP_TOOL_NAME_RE.test(name)) return { ok: false, reason: 'its name is not a valid MCP tool name once prefixed' };
  if (mapping?.hidden === true) return { ok: false, reason: 'hidden by configuration' };
  if (mapping === undefined && expose === 'listed') return { ok: false, reason: 'not listed under tools (expose: listed)' };
  const action = mapping?.action ?? actionFromHints(tool.annotations);
  if (!isValidAction(action)) return { ok: false, reason: `action ${action} is not an action name` };
  const resource = mapping?.resource ?? `tool:${upstream}/${tool.name}`;
  const reach = reachOf(resource);
  if (reach === undefined) return { ok: false, reason: `resource ${resource} is not a resource name with {arg} placeholders` };
  return { ok: true, tool: { name, upstream, tool: tool.name, action, actionFrom: mapping?.action === undefined ? 'annotations' : 'config', resource, reach } };
}

/** The pattern of every resource a template can produce; undefined when the template is malformed. */
export function reachOf(template: string): string | undefined {
  const open = template.indexOf('{');
  if (open < 0) return isValidResource(template) && !template.endsWith('*') ? template : undefined;
  // Every placeholder must be a whole `{name}`, and filling each with a valid segment must give a valid resource.
  const probe = template.replace(PLACEHOLDER_RE, 'x');
  if (probe.includes('{') || probe.includes('}') || !isValidResource(probe) || probe.endsWith('*')) return undefined;
  const stem = template.slice(0, open);
  return stem.includes(':') ? `${stem}*` : undefined;
}

/**
 * The resource one call is decided on: the template with each `{arg}` replaced
 * by that top-level argument (a string or an integer). Refused when an argument
 * is missing or is not a single safe path segment.
 */
export function resourceForCall(template: string, args: Readonly<Record<string, unknown>>): { readonly ok: true; readonly resource: string } | { readonly ok: false; readonly detail: string } {
  let problem: string | undefined;
  const resource = template.replace(PLACEHOLDER_RE, (_whole, key: string) => {
    const value = Object.hasOwn(args, key) ? args[key] : undefined;
    const text = typeof value === 'string' ? value : typeof value === 'number' && Number.isSafeInteger(value) ? String(value) : undefined;
    if (text === undefined) {
      problem ??= `argument ${key} (a string or an integer) names the resource and is missing`;
      return 'x';
    }
    if (!SEGMENT_RE.test(text) || text === '.' || text === '..') {
      problem ??= `argument ${key} must be one resource name segment (letters, digits, . _ ~ @ + = , -)`;
      return 'x';
    }
    return text;
  });
  if (problem !== undefined) return { ok: false, detail: problem };
  if (!isValidResource(resource) || resource.endsWith('*')) return { ok: false, detail: 'the call names no valid resource' };
  return { ok: true, resource };
}

/** True when some scope the task holds could cover a call of `tool`: it is listed to the task. */
export function grantShows(scopes: readonly Scope[], tool: Pick<MappedTool, 'action' | 'reach'>): boolean {
  return scopes.some((scope) => scope.action === tool.action && resourcesIntersect(scope.resource, tool.reach));
}
