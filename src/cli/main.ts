/**
 * The `writ` command. Exit codes: 0 success, 1 the command failed (for
 * `audit verify`: the chain is broken), 2 usage error (and for `policy test`:
 * a case did not get its expected outcome), 3 the policy set is invalid, 4
 * `policy lint` found something at or above `--fail-on`.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { pino, type Logger } from 'pino';
import { verifyAuditChain, type AuditActor } from '../audit/log.js';
import { loadConfig, parseDurationSeconds, type WritConfig } from '../core/config.js';
import { isWritError } from '../core/errors.js';
import { WRIT_VERSION } from '../core/version.js';
import { ACTOR_TYPES, ADMIN_SCOPES, APPROVAL_REQUEST_STATES, type ActorType, type AdminScope, type ApprovalRequest, type ApprovalRequestState, type Scope } from '../core/types.js';
import { approvalView, isApprovalState, noticeOf } from '../broker/approvals.js';
import { breakGlassView } from '../broker/break-glass.js';
import { formatScope, parseScopeClaim } from '../core/scope.js';
import { createMcpGateway } from '../gateway/mcp/gateway.js';
import { serveGatewayStdio } from '../gateway/mcp/stdio.js';
import { createUpstreamPool } from '../gateway/mcp/upstreams.js';
import { createProxyServer } from '../gateway/http/server.js';
import { createServer } from '../server/app.js';
import { describeStore, openStore } from '../store/open.js';
import { createWrit, type IdentityStateChange, type Writ } from '../writ.js';
import { runDemo } from './demo.js';
import { WRIT_YAML_TEMPLATE } from './init-template.js';
import { runPolicyCommand } from './policy-command.js';

export const HELP = `writ ${WRIT_VERSION}: zero-standing-privilege access broker for AI agents

Usage: writ <command> [options]

Commands:
  serve                      start the Writ server (default 127.0.0.1:8750)
      --dev                    also run Writ's dev issuer (local identity tokens; never in production)
  gateway                    run only the MCP gateway (/mcp over Streamable HTTP), same options as serve
  proxy                      run only the HTTP proxy (proxy.routes under proxy.mount), same options as serve
  mcp                        serve the MCP gateway on stdin/stdout, for clients that start servers as
                             commands; the credential is WRIT_TOKEN (a task or identity token)
      --identity <id>          or, with --dev, act as this registered identity (dev issuer; laptops only)
  init [--force]             write a commented writ.yaml in the current folder
  identity register          register an identity
      --spiffe-id <id>         SPIFFE ID, e.g. spiffe://demo.local/agent/support
      --id <id>                or any identity id, e.g. https://issuer.example#subject (one of the two)
      --owner <owner>          accountable owner (required for agents and services)
      --actor-type <type>      agent | service | human (default agent)
      --environment <env>      environment the identity acts in (default development)
      --label <key=value>      a label; repeat for more
      --admin-scope <scope>    an admin API scope for a human; repeat for more
      --expires-in <duration>  identity lifetime, e.g. 90d, or never (default 90d)
  identity list [--json]     list identities with their state and owner
  identity claim <id>        give a quarantined identity an owner and make it active
      --owner <owner>          accountable owner (required)
  identity suspend <id>      suspend an identity and revoke its tasks at once
  identity reactivate <id>   make a suspended identity active again
  identity decommission <id> retire an identity for good and revoke its tasks
      --note <text>            why (for suspend, reactivate, decommission; audited)
  identity token <id>        print a dev-issuer identity token (JWT-SVID shape)
      --ttl <duration>         lifetime, at most 5m (default 5m)
      --for-exchange           for one token exchange only: the actor_token a planner
                               hands on to delegate to this identity (aud delegation.actorAudience)
  admin token create         mint an admin API token (printed once)
      --name <name>            what it is for (required)
      --scope <scope>          identities:read, identities:write, policy:write or
                               admin:tokens; repeat for more (required)
      --ttl <duration>         lifetime, e.g. 30d (default: no expiry)
  admin token list           list admin tokens (never the tokens themselves)
  admin token revoke <id>    revoke an admin token
  secret set <name>          store a downstream credential (read from stdin, never argv),
                             sealed under the master key; gateway upstreams inject it by name
  secret list                list secret names and when they changed (never the values)
  secret delete <name>       delete a secret
  approvals list             approval requests you may answer (or asked for), newest first
      --state <s,...>          pending (default), approved, denied, consumed, expired, cancelled
      --task <id>              only this task's
  approvals show <id>        the exact action, its arguments, purpose, agent, owner, risk, votes
  approvals approve <id>     approve that one action, once (policy decides who may)
  approvals deny <id>        deny it
      --note <text>            why (audited)
                             The approver is WRIT_TOKEN (a human's identity token), or with
                             --dev, --identity <id> (dev issuer; laptops only)
  break-glass                an emergency grant, decided by the break-glass policy set; prints its
                             task token. Loud: webhooks told at once, every decision flagged,
                             never renewed, credentials it touched listed for rotation, review owed
      --reason <text>          why (required)
      --incident <ref>         the incident, e.g. INC-4521 (required)
      --environment <env>      (required)
      --scope <action:resource> e.g. read:db:orders/*; repeat for more (required)
      --duration <duration>    default breakGlass.defaultDuration (1h); more than breakGlass.maxDuration is refused
      --for <identity>         an agent you own (default: yourself)
                             As WRIT_TOKEN (a human's identity token), or --dev --identity <id>
  break-glass end <id>       end a break-glass grant now (who broke it, who it is for, or a reviewer)
  review break-glass         break-glass grants owed a post-incident review (--all: every one)
  review break-glass <id>    close a review (not by who broke the glass, nor who it was for)
      --note <text>            what was done and found (required)
  audit verify               check the audit hash chain; exit 1 naming the first bad record
  policy validate            parse the policy set and check it against its schema;
                             exit 3 with one file:line:column: problem line each
  policy test                run the cases of every *.tests.yaml beside the policies;
                             exit 2 on a mismatch, 1 on a malformed test file, 3 on an invalid set
  policy lint                find standing privilege: permits with no environment, time or
                             task constraint; write, delete, export or admin without approval,
                             wildcard principals or resources, in production; tokens.maxTtl
                             over 1h. One line per finding with its OWASP NHI / Agentic
                             Top 10 references; exit 4 on a finding at or above --fail-on
      --fail-on <severity>     low | medium | high (default high)
      --json                   print the findings as JSON
  policy explain             decide one request: outcome, deciding policies, tier, sensitivity, risk
      --principal <id>         the principal's identity id (required)
      --actor-type <type>      agent | service | human (required)
      --owner <owner>          the principal's owner (default unspecified)
      --principal-env <env>    the principal's registered environment (default: --environment)
      --label <key=value>      a principal label; repeat for more
      --action <action>        e.g. read or refund (required)
      --resource <resource>    e.g. db:orders/42, or a pattern db:orders/* (required)
      --environment <env>      the task's environment (required)
      --intent <intent>        the task's declared intent, e.g. customer-support (required)
      --at <time>              decision time, ISO 8601 (default now)
      --purpose <text>         the task's purpose (default empty)
      --stage <stage>          grant (default) | call
      --args <json>            the call's arguments, e.g. '{"amountCents":25000}'
      --delegation-depth <n>   0 when acting directly (default)
      --break-glass            decide as a break-glass task
      --approval <state>       none (default) | approved
      --calls-per-minute <n>   the identity's call rate, for the risk score (default 0)
      --first-use              the identity has never been granted this kind of resource
      --registered <time>      when the identity was registered, ISO 8601 (default long ago)
      --json                   print the decision as JSON
  demo                       run a scripted agent against a Writ it starts, and print the transcript

Options for every command:
  --data-dir <dir>           state folder (default ./.writ; env WRIT_DATA_DIR)
  --config <file>            configuration file (default ./writ.yaml when present)
  -h, --help                 show this help
  -v, --version              print the version

Options for serve:
  --port <port>              listen port (env WRIT_PORT; 0 picks a free port)
  --host <host>              listen address (env WRIT_HOST)

Options for policy:
  --policy-dir <dir>         the policy folder (default: policy.dir from the configuration)
`;

const OPTIONS = {
  'data-dir': { type: 'string' },
  config: { type: 'string' },
  port: { type: 'string' },
  host: { type: 'string' },
  force: { type: 'boolean' },
  dev: { type: 'boolean' },
  'spiffe-id': { type: 'string' },
  identity: { type: 'string' },
  id: { type: 'string' },
  'admin-scope': { type: 'string', multiple: true },
  note: { type: 'string' },
  name: { type: 'string' },
  scope: { type: 'string', multiple: true },
  owner: { type: 'string' },
  'actor-type': { type: 'string' },
  environment: { type: 'string' },
  label: { type: 'string', multiple: true },
  'expires-in': { type: 'string' },
  ttl: { type: 'string' },
  json: { type: 'boolean' },
  'fail-on': { type: 'string' },
  'policy-dir': { type: 'string' },
  principal: { type: 'string' },
  'principal-env': { type: 'string' },
  action: { type: 'string' },
  resource: { type: 'string' },
  intent: { type: 'string' },
  at: { type: 'string' },
  purpose: { type: 'string' },
  stage: { type: 'string' },
  args: { type: 'string' },
  'delegation-depth': { type: 'string' },
  'break-glass': { type: 'boolean' },
  approval: { type: 'string' },
  'calls-per-minute': { type: 'string' },
  'first-use': { type: 'boolean' },
  'for-exchange': { type: 'boolean' },
  registered: { type: 'string' },
  state: { type: 'string' },
  task: { type: 'string' },
  reason: { type: 'string' },
  incident: { type: 'string' },
  duration: { type: 'string' },
  for: { type: 'string' },
  all: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const satisfies ParseArgsConfig['options'];

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>['values'];

class UsageError extends Error {}

export async function main(argv: readonly string[]): Promise<number> {
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    process.stderr.write(`writ: ${(error as Error).message}\nRun writ --help for usage.\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.version === true) {
    process.stdout.write(`${WRIT_VERSION}\n`);
    return 0;
  }
  const [command, sub, ...rest] = positionals;
  if (values.help === true || command === undefined || command === 'help') {
    process.stdout.write(HELP);
    return 0;
  }
  try {
    switch (command) {
      case 'serve':
        return await serve(values, 'all');
      case 'gateway':
        return await serve(values, 'gateway');
      case 'proxy':
        return await serve(values, 'proxy');
      case 'mcp':
        return await mcpStdio(values);
      case 'init':
        return init(values);
      case 'identity':
        return await identity(sub, rest, values);
      case 'admin':
        return await adminCommand(sub, rest, values);
      case 'secret':
        return await secretCommand(sub, rest, values);
      case 'approvals':
        return await approvalsCommand(sub, rest, values);
      case 'break-glass':
        return await breakGlassCommand(sub, rest, values);
      case 'review':
        if (sub !== 'break-glass') throw new UsageError('usage: writ review break-glass [<id> --note <text>] [--all]');
        return await reviewBreakGlassCommand(rest, values);
      case 'audit':
        if (sub !== 'verify') throw new UsageError('usage: writ audit verify');
        return await auditVerify(values);
      case 'demo':
        return await runDemo();
      case 'policy':
        return runPolicyCommand(sub, rest, values);
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`writ: ${error.message}\nRun writ --help for usage.\n`);
      return 2;
    }
    if (isWritError(error)) {
      process.stderr.write(`writ: ${error.code}: ${error.detail}\n`);
      return 1;
    }
    process.stderr.write(`writ: unexpected error: ${(error as Error)?.stack ?? String(error)}\n`);
    return 1;
  }
}

function configFrom(values: Values): WritConfig {
  let port: number | undefined;
  if (values.port !== undefined) {
    if (!/^\d{1,5}$/.test(values.port) || Number(values.port) > 65535) throw new UsageError(`--port: expected 0-65535, got ${values.port}`);
    port = Number(values.port);
  }
  return loadConfig({ configFile: values.config, flags: { port, host: values.host, dataDir: values['data-dir'], dev: values.dev } });
}

/** The local operator running the CLI, as the actor of audit records. */
function cliActor(): AuditActor {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // No passwd entry (a container): keep 'unknown'.
  }
  return { id: `cli:${user}`, actorType: 'local-operator' };
}

function parseDuration(flag: string, value: string): number {
  const seconds = parseDurationSeconds(value);
  if (seconds === undefined || seconds <= 0) throw new UsageError(`${flag}: a duration such as 300, 5m, 12h or 90d`);
  return seconds;
}

function createLogger(config: WritConfig, destination: 1 | 2 = 1): Logger {
  return pino({ level: config.log.level, base: { service: 'writ' }, redact: ['req.headers.authorization', 'token'] }, pino.destination(destination));
}

/**
 * Who a command acts as: WRIT_TOKEN (an identity or task token from a trust
 * source), or with --dev, --identity <id> (a dev-issuer token minted here; laptops only).
 */
function credentialFrom(values: Values, command: string): { identity: string | undefined; bearer: (writ: Writ) => Promise<string> } {
  const identityId = values.identity;
  const envToken = process.env.WRIT_TOKEN;
  if ((identityId === undefined) === (envToken === undefined || envToken === '')) throw new UsageError(`${command} needs exactly one credential: WRIT_TOKEN, or --identity <id> with --dev`);
  if (identityId !== undefined && values.dev !== true) throw new UsageError('--identity mints a dev-issuer identity token: pass --dev too (laptops only)');
  return {
    identity: identityId,
    bearer: async (writ) => (identityId === undefined ? (envToken as string) : (await writ.issueIdentityToken(identityId)).token),
  };
}

/**
 * `writ approvals`: a human lists, reads and answers approval requests, as
 * the identity of its credential; policy decides which it may answer.
 */
async function approvalsCommand(sub: string | undefined, rest: string[], values: Values): Promise<number> {
  const id = rest[0];
  const usage = 'usage: writ approvals list [--state <s,...>] [--task <id>] | show <id> | approve <id> [--note <text>] | deny <id> [--note <text>]';
  if (sub === 'list' ? rest.length > 0 : !['show', 'approve', 'deny'].includes(sub ?? '') || id === undefined || rest.length > 1) throw new UsageError(usage);
  const credential = credentialFrom(values, `writ approvals ${sub}`);
  const writ = await createWrit({ config: configFrom(values) });
  try {
    const caller = await writ.broker.authenticate({ bearer: await credential.bearer(writ) }, { allowTaskToken: false, endpoint: `cli approvals ${sub}` });
    if (sub === 'list') {
      const states = values.state?.split(',');
      if (states !== undefined && !states.every(isApprovalState)) throw new UsageError(`--state: comma-separated states: ${APPROVAL_REQUEST_STATES.join(', ')}`);
      const approvals = await writ.approvals.list(caller, { ...(states === undefined ? {} : { states: states as ApprovalRequestState[] }), ...(values.task === undefined ? {} : { taskId: values.task }) });
      if (values.json === true) process.stdout.write(`${JSON.stringify(approvals.map(approvalView), null, 2)}\n`);
      else if (approvals.length === 0) process.stdout.write('no approval requests\n');
      else for (const a of approvals) process.stdout.write(`${approvalLine(a)}\n`);
      return 0;
    }
    if (sub === 'show') {
      const approval = await writ.approvals.get(caller, id as string);
      process.stdout.write(values.json === true ? `${JSON.stringify(approvalView(approval), null, 2)}\n` : describeApproval(approval));
      return 0;
    }
    const after = await writ.approvals.vote(caller, id as string, sub as 'approve' | 'deny', values.note);
    const approvals = after.votes.filter((v) => v.decision === 'approve').length;
    process.stdout.write(`${after.id} is ${after.state} (${approvals} of ${after.requiredApprovals} approvals)\n`);
    return 0;
  } finally {
    await writ.close();
  }
}

/**
 * `writ break-glass`: a human asks for an emergency grant, for itself or for
 * an agent it owns (--for). Prints the task token on stdout, and says loudly
 * on stderr what follows from it.
 */
async function breakGlassCommand(sub: string | undefined, rest: string[], values: Values): Promise<number> {
  if (sub === 'end') {
    const [id, ...extra] = rest;
    if (id === undefined || extra.length > 0) throw new UsageError('usage: writ break-glass end <id> [--note <text>]');
    const credential = credentialFrom(values, 'writ break-glass end');
    const writ = await createWrit({ config: configFrom(values) });
    try {
      const caller = await writ.broker.authenticate({ bearer: await credential.bearer(writ) }, { allowTaskToken: false, endpoint: 'cli break-glass end' });
      const ended = breakGlassView(await writ.breakGlass.end(caller, id, values.note));
      process.stdout.write(`${ended.id} ended; review owed${ended.rotate.length > 0 ? `; rotate ${ended.rotate.join(', ')}` : ''}\n`);
      return 0;
    } finally {
      await writ.close();
    }
  }
  if (sub !== undefined || rest.length > 0) throw new UsageError('usage: writ break-glass --reason <text> --incident <ref> --environment <env> --scope <action:resource>... [--duration 1h] [--for <identity>] | writ break-glass end <id>');
  const scopes = (values.scope ?? []).map((entry) => {
    const parsed = parseScopeClaim(entry);
    if (parsed === undefined || parsed.length !== 1) throw new UsageError(`--scope: action:resource, e.g. read:db:orders/*, got ${JSON.stringify(entry)}`);
    return parsed[0] as Scope;
  });
  const credential = credentialFrom(values, 'writ break-glass');
  const writ = await createWrit({ config: configFrom(values) });
  try {
    const caller = await writ.broker.authenticate({ bearer: await credential.bearer(writ) }, { allowTaskToken: false, endpoint: 'cli break-glass' });
    const started = await writ.breakGlass.start(caller, {
      ...(values.reason === undefined ? {} : { reason: values.reason }),
      ...(values.incident === undefined ? {} : { incident: values.incident }),
      ...(values.environment === undefined ? {} : { environment: values.environment }),
      scopes,
      ...(values.duration === undefined ? {} : { duration: values.duration }),
      ...(values.for === undefined ? {} : { identity: values.for }),
    });
    const grant = started.grant;
    process.stderr.write(
      `BREAK-GLASS ${grant.id} for ${grant.identityId} (${grant.incident}), until ${new Date(grant.expiresAt).toISOString()}:\n` +
        `  granted: ${grant.scopes.map(formatScope).join(', ')}\n` +
        (started.refused.length > 0 ? `  refused: ${started.refused.map(formatScope).join(', ')}\n` : '') +
        `  every webhook has been told; every decision under it is flagged; it is never renewed;\n` +
        `  when it ends the credentials it touched are listed for rotation, and a review is owed (writ review break-glass).\n` +
        `Task token (shown once):\n`,
    );
    process.stdout.write(`${started.token}\n`);
    return 0;
  } finally {
    await writ.close();
  }
}

/** `writ review break-glass`: lists grants owed a review (or all), or closes one with a note. */
async function reviewBreakGlassCommand(rest: string[], values: Values): Promise<number> {
  const id = rest[0];
  if (rest.length > 1 || (id !== undefined && values.note === undefined)) throw new UsageError('usage: writ review break-glass [--all] | writ review break-glass <id> --note <text>');
  const credential = credentialFrom(values, 'writ review break-glass');
  const writ = await createWrit({ config: configFrom(values) });
  try {
    const caller = await writ.broker.authenticate({ bearer: await credential.bearer(writ) }, { allowTaskToken: false, endpoint: 'cli review break-glass' });
    if (id !== undefined) {
      const reviewed = await writ.breakGlass.review(caller, id, values.note as string);
      process.stdout.write(`${reviewed.id} reviewed by ${reviewed.reviewedBy}\n`);
      return 0;
    }
    const grants = await writ.breakGlass.list(caller, { reviewed: values.all === true ? undefined : false });
    if (values.json === true) process.stdout.write(`${JSON.stringify(grants.map(breakGlassView), null, 2)}\n`);
    else if (grants.length === 0) process.stdout.write(values.all === true ? 'no break-glass grants\n' : 'no break-glass grant is owed a review\n');
    else {
      for (const g of grants) {
        const view = breakGlassView(g);
        const lines = [
          `${g.id}  ${view.state}  ${g.incident}  by ${g.requestedBy} for ${g.identityId}  ${g.environment}  ${new Date(g.createdAt).toISOString()}..${new Date(g.endedAt ?? g.expiresAt).toISOString()}`,
          `    reason: ${g.reason}`,
          `    used: ${g.used.join(', ') || 'nothing'}`,
          ...(view.rotate.length > 0 ? [`    rotate: ${view.rotate.join(', ')}`] : []),
        ];
        process.stdout.write(`${lines.map(terminalSafe).join('\n')}\n`);
      }
    }
    return 0;
  } finally {
    await writ.close();
  }
}

/** One line per request: id, state, who asks to do what, where, until when. */
function approvalLine(a: ApprovalRequest): string {
  const approvals = a.votes.filter((v) => v.decision === 'approve').length;
  return terminalSafe(`${a.id}  ${a.state}  ${a.identityId} ${a.action} ${a.resource}  ${a.environment}  ${approvals}/${a.requiredApprovals}  expires=${new Date(a.expiresAt).toISOString()}`);
}

/** Everything an approver must read before answering, each line as it will run: no character can hide or reorder another. */
function describeApproval(a: ApprovalRequest): string {
  const lines = noticeOf('approval.requested', a, a.createdAt).fields.map((f) => `${f.label.padEnd(12)} ${f.value}`);
  const votes = a.votes.map((v) => `${''.padEnd(12)} ${v.decision} by ${v.approver} at ${new Date(v.at).toISOString()}${v.selfApproval ? ' (self-approval)' : ''}${v.note === null ? '' : `: ${v.note}`}`);
  const all = [`${a.id} (${a.state}, ${a.stage} stage)`, ...lines, `Task         ${a.taskId}`, `Policies     ${a.policies.join(', ') || 'none'}`, ...(votes.length > 0 ? ['Votes', ...votes] : [])];
  return `${all.map(terminalSafe).join('\n')}\n`;
}

/**
 * A line safe to show in a terminal: control, format (bidi overrides,
 * zero-width) and separator characters are shown as \uXXXX escapes, so what
 * an approver reads is what the agent sent.
 */
function terminalSafe(line: string): string {
  return line.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (c) => `\\u${(c.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`);
}

/** `writ mcp`: the gateway on stdio. stdout carries MCP messages only; logs go to stderr. */
async function mcpStdio(values: Values): Promise<number> {
  const config = configFrom(values);
  const logger = createLogger(config, 2);
  const credential = credentialFrom(values, 'writ mcp');
  const writ = await createWrit({ config, logger });
  const pool = createUpstreamPool({ config, vault: writ.vault, logger });
  const gateway = createMcpGateway({ writ, pool, logger });
  const identityId = credential.identity;
  try {
    const bearer = await credential.bearer(writ);
    writ.startReaper();
    // With --identity the process mints its own token (the local operator's dev issuer), so its expiry does not end the connection.
    const served = await serveGatewayStdio({ gateway, bearer, logger, ...(identityId === undefined ? {} : { credentialExpiresAt: Number.POSITIVE_INFINITY }) });
    const stop = () => void served.close();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    await served.closed;
    return 0;
  } finally {
    await gateway.close();
    await writ.close();
  }
}

async function serve(values: Values, routes: 'all' | 'gateway' | 'proxy'): Promise<number> {
  const config = configFrom(values);
  const logger = createLogger(config);
  const writ = await createWrit({ config, logger });
  const app = routes === 'proxy' ? createProxyServer(writ, { logger }) : createServer(writ, { logger, routes });
  if (routes === 'proxy' && config.proxy.routes.length === 0) logger.warn('proxy.routes is empty: the proxy refuses every request (see docs/proxy.md)');
  if (writ.masterKeyCreated) logger.warn({ path: resolve(config.paths.dataDir, 'master.key') }, 'generated a new master key; back it up, or set WRIT_MASTER_KEY');
  if (writ.devIssuer !== undefined) logger.warn({ issuer: writ.devIssuer.issuer }, 'the dev issuer is on: anyone who can run writ identity token here can mint identities; never in production');
  await printBootstrapToken(writ);
  await app.listen({ host: config.server.host, port: config.server.port });
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.server.port;
  const host = config.server.host.includes(':') ? `[${config.server.host}]` : config.server.host;
  const url = `${config.server.tls === undefined ? 'http' : 'https'}://${host}:${port}`;
  if (config.server.tls === undefined && !['127.0.0.1', 'localhost', '::1'].includes(config.server.host)) {
    logger.warn('listening beyond loopback over plain HTTP: configure server.tls or put TLS in front of Writ before agents use it');
  }
  writ.startReaper();
  logger.info(
    {
      url,
      store: describeStore({ databaseUrl: config.database.url, dataDir: config.paths.dataDir }),
      policyDir: config.paths.policyDir,
      policyVersion: writ.policy().version,
      trustSources: writ.trustSources.names,
      clientCertificates: config.server.tls?.clientCertificates ?? 'off',
    },
    `Writ listening on ${url}`,
  );
  if (writ.devIssuer !== undefined) {
    logger.info(
      `Try it: writ identity register --spiffe-id spiffe://demo.local/agent/support --owner you@example.com --environment production` +
        ` --data-dir ${config.paths.dataDir}; then writ identity token spiffe://demo.local/agent/support and POST ${url}/v1/tasks (see README), or run npm run demo`,
    );
  } else if (writ.trustSources.names.length === 0) {
    logger.warn('no trust source is configured and the dev issuer is off: no identity can authenticate (see docs/identity.md, or run writ serve --dev)');
  }

  await new Promise<void>((resolveStop) => {
    const stop = (signal: string) => {
      logger.info({ signal }, 'shutting down');
      resolveStop();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await app.close();
  await writ.close();
  return 0;
}

/**
 * At the first start of a store, mints the bootstrap admin token and prints it
 * once, to the terminal and never to the log (logs are shipped and kept).
 */
async function printBootstrapToken(writ: Writ): Promise<void> {
  const minted = await writ.bootstrapAdminToken();
  if (minted === undefined) return;
  const expires = minted.record.expiresAt === null ? 'never' : new Date(minted.record.expiresAt).toISOString();
  process.stderr.write(
    `\nBootstrap admin token (shown once; all admin scopes; expires ${expires}):\n\n  ${minted.token}\n\n` +
      `Use it as 'Authorization: Bearer <token>' on /v1/identities and /v1/admin/tokens.\n` +
      `Make lasting, narrower ones with: writ admin token create --name <name> --scope <scope>\n\n`,
  );
}

async function secretCommand(sub: string | undefined, rest: string[], values: Values): Promise<number> {
  const [name, ...extra] = rest;
  if (sub === 'list' ? rest.length > 0 : sub !== 'set' && sub !== 'delete') throw new UsageError('usage: writ secret set <name> | list | delete <name>');
  if (sub !== 'list' && (name === undefined || extra.length > 0)) throw new UsageError(`usage: writ secret ${sub} <name>`);
  const writ = await createWrit({ config: configFrom(values) });
  try {
    if (sub === 'list') {
      const secrets = await writ.vault.list();
      if (values.json === true) process.stdout.write(`${JSON.stringify(secrets.map((s) => ({ name: s.name, createdAt: new Date(s.createdAt).toISOString(), updatedAt: new Date(s.updatedAt).toISOString() })))}\n`);
      else for (const s of secrets) process.stdout.write(`${s.name}\tupdated ${new Date(s.updatedAt).toISOString()}\n`);
      return 0;
    }
    if (sub === 'delete') {
      await writ.vault.delete(name as string, cliActor());
      process.stdout.write(`deleted secret ${name}\n`);
      return 0;
    }
    if (process.stdin.isTTY) process.stderr.write(`Type the value of ${name}, then Ctrl-D:\n`);
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    // One trailing newline is how `echo` and terminals end input, not part of the secret.
    const value = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
    const { created } = await writ.vault.put(name as string, value, cliActor());
    process.stdout.write(`${created ? 'stored' : 'replaced'} secret ${name} (sealed under the master key)\n`);
    return 0;
  } finally {
    await writ.close();
  }
}

function init(values: Values): number {
  const path = resolve(values.config ?? 'writ.yaml');
  if (existsSync(path) && values.force !== true) throw new UsageError(`${path} exists; pass --force to overwrite it`);
  writeFileSync(path, WRIT_YAML_TEMPLATE, { mode: 0o644 });
  process.stdout.write(`wrote ${path}\n`);
  return 0;
}

async function identity(sub: string | undefined, rest: string[], values: Values): Promise<number> {
  const subcommands = ['register', 'list', 'token', 'claim', 'suspend', 'reactivate', 'decommission'];
  if (sub === undefined || !subcommands.includes(sub)) throw new UsageError(`usage: writ identity ${subcommands.join('|')}`);
  // Minting dev identity tokens needs the dev issuer's key ring, whatever the server runs with.
  const config = configFrom(sub === 'token' ? { ...values, dev: true } : values);
  const writ = await createWrit({ config });
  try {
    if (sub === 'register') {
      if (values['spiffe-id'] !== undefined && values.id !== undefined) throw new UsageError('give --spiffe-id or --id, not both');
      const spiffeId = values['spiffe-id'] ?? values.id;
      if (spiffeId === undefined) throw new UsageError('identity register needs --spiffe-id (or --id)');
      const adminScopes = values['admin-scope'] ?? [];
      for (const scope of adminScopes) {
        if (!(ADMIN_SCOPES as readonly string[]).includes(scope)) throw new UsageError(`--admin-scope: one of ${ADMIN_SCOPES.join(', ')}`);
      }
      const actorType = values['actor-type'] ?? 'agent';
      if (!(ACTOR_TYPES as readonly string[]).includes(actorType)) throw new UsageError(`--actor-type: one of ${ACTOR_TYPES.join(', ')}`);
      const expiresIn = values['expires-in'] ?? '90d';
      let expiresAt: number | null = null;
      if (expiresIn !== 'never') {
        const seconds = parseDurationSeconds(expiresIn);
        if (seconds === undefined || seconds <= 0) throw new UsageError('--expires-in: a duration such as 90d or 12h, or never');
        expiresAt = writ.clock.now() + seconds * 1000;
      }
      const labels: Record<string, string> = {};
      for (const label of values.label ?? []) {
        const eq = label.indexOf('=');
        if (eq <= 0) throw new UsageError(`--label: expected key=value, got ${label}`);
        labels[label.slice(0, eq)] = label.slice(eq + 1);
      }
      const registered = await writ.registerIdentity({
        id: spiffeId,
        actorType: actorType as ActorType,
        ...(values.owner === undefined ? {} : { owner: values.owner }),
        ...(values.environment === undefined ? {} : { environment: values.environment }),
        labels,
        expiresAt,
        adminScopes: adminScopes as AdminScope[],
      });
      process.stdout.write(
        `registered ${registered.id} (${registered.actorType}, owner ${registered.owner}, environment ${registered.environment}, ` +
          `expires ${registered.expiresAt === null ? 'never' : new Date(registered.expiresAt).toISOString()})\n`,
      );
      return 0;
    }
    if (sub === 'list') {
      const identities = await writ.registry.list();
      if (values.json === true) {
        process.stdout.write(`${JSON.stringify(identities, null, 2)}\n`);
        return 0;
      }
      if (identities.length === 0) process.stdout.write('no identities registered\n');
      for (const i of identities) {
        process.stdout.write(
          `${i.id}  ${i.actorType}  owner=${i.owner ?? '(unclaimed)'}  env=${i.environment}  ${i.state}  source=${i.source}  ` +
            `expires=${i.expiresAt === null ? 'never' : new Date(i.expiresAt).toISOString()}\n`,
        );
      }
      return 0;
    }
    if (sub !== 'token') {
      const id = rest[0];
      if (id === undefined || rest.length > 1) throw new UsageError(`usage: writ identity ${sub} <id>`);
      if (sub === 'claim') {
        if (values.owner === undefined) throw new UsageError('identity claim needs --owner');
        const actorType = values['actor-type'];
        if (actorType !== undefined && !(ACTOR_TYPES as readonly string[]).includes(actorType)) throw new UsageError(`--actor-type: one of ${ACTOR_TYPES.join(', ')}`);
        const claimed = await writ.claimIdentity(
          id,
          {
            owner: values.owner,
            ...(actorType === undefined ? {} : { actorType: actorType as ActorType }),
            ...(values.environment === undefined ? {} : { environment: values.environment }),
          },
          cliActor(),
        );
        process.stdout.write(`claimed ${claimed.id} (${claimed.actorType}, owner ${claimed.owner}, environment ${claimed.environment}): active\n`);
        return 0;
      }
      const result = await writ.changeIdentityState(id, sub as IdentityStateChange, cliActor(), values.note);
      process.stdout.write(`${result.identity.id} is ${result.identity.state}; ${result.revokedTasks} active task(s) revoked\n`);
      return 0;
    }
    const id = rest[0];
    if (id === undefined || rest.length > 1) throw new UsageError('usage: writ identity token <spiffe-id> [--ttl 5m] [--for-exchange]');
    let ttl: number | undefined;
    if (values.ttl !== undefined) {
      ttl = parseDurationSeconds(values.ttl);
      if (ttl === undefined || ttl <= 0) throw new UsageError('--ttl: a duration such as 300 or 5m');
    }
    const minted = await writ.issueIdentityToken(id, ttl, { forExchange: values['for-exchange'] === true });
    process.stdout.write(`${minted.token}\n`);
    return 0;
  } finally {
    await writ.close();
  }
}

async function adminCommand(sub: string | undefined, rest: string[], values: Values): Promise<number> {
  const [verb, ...args] = rest;
  if (sub !== 'token' || (verb !== 'create' && verb !== 'list' && verb !== 'revoke')) throw new UsageError('usage: writ admin token create|list|revoke');
  const config = configFrom(values);
  const writ = await createWrit({ config });
  try {
    if (verb === 'create') {
      if (values.name === undefined) throw new UsageError('admin token create needs --name');
      const scopes = values.scope ?? [];
      if (scopes.length === 0) throw new UsageError(`admin token create needs --scope (${ADMIN_SCOPES.join(', ')})`);
      const created = await writ.createAdminToken(
        { name: values.name, scopes: scopes as AdminScope[], ...(values.ttl === undefined ? {} : { ttlSeconds: parseDuration('--ttl', values.ttl) }) },
        cliActor(),
      );
      process.stderr.write(`admin token ${created.record.id} (${created.record.scopes.join(' ')}); shown once:\n`);
      process.stdout.write(`${created.token}\n`);
      return 0;
    }
    if (verb === 'list') {
      const tokens = await writ.adminTokens.list();
      if (values.json === true) {
        process.stdout.write(`${JSON.stringify(tokens.map(({ tokenHash: _hash, ...rest }) => rest), null, 2)}\n`);
        return 0;
      }
      if (tokens.length === 0) process.stdout.write('no admin tokens\n');
      const iso = (ms: number | null) => (ms === null ? 'never' : new Date(ms).toISOString());
      for (const t of tokens) {
        const state = t.revokedAt !== null ? 'revoked' : t.expiresAt !== null && t.expiresAt <= writ.clock.now() ? 'expired' : 'active';
        process.stdout.write(`${t.id}  ${JSON.stringify(t.name)}  ${t.scopes.join(',')}  ${state}  expires=${iso(t.expiresAt)}  lastUsed=${iso(t.lastUsedAt)}\n`);
      }
      return 0;
    }
    const id = args[0];
    if (id === undefined || args.length > 1) throw new UsageError('usage: writ admin token revoke <id>');
    const record = await writ.revokeAdminToken(id, cliActor());
    process.stdout.write(`revoked ${record.id}\n`);
    return 0;
  } finally {
    await writ.close();
  }
}

async function auditVerify(values: Values): Promise<number> {
  const config = configFrom(values);
  const store = await openStore({ databaseUrl: config.database.url, dataDir: config.paths.dataDir });
  try {
    const result = await verifyAuditChain(store);
    if (result.ok) {
      process.stdout.write(`audit chain OK: ${result.records} records, head ${result.headHash ?? '(empty)'}\n`);
      return 0;
    }
    process.stderr.write(
      `writ: ERR_AUDIT_CHAIN_BROKEN: first bad record seq ${result.seq} (id ${result.id}): ${result.problem}; ` +
        `${result.records} records before it verified\n`,
    );
    return 1;
  } finally {
    await store.close();
  }
}
