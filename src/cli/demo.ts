/**
 * `writ demo` (`npm run demo`): a scripted agent against a Writ this command
 * starts itself, in a throwaway data dir, printing a transcript of the whole
 * loop. Every step checks what it expects and the demo exits 1 if any does
 * not hold, so it doubles as a smoke test of a fresh install.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PACKAGE_ROOT } from '../core/config.js';
import { createWritClient, WritApiError, type AuthorizeAnswer, type Scope } from '../sdk/index.js';

const BIN = join(PACKAGE_ROOT, 'bin', 'writ.js');
const AGENT = 'spiffe://demo.local/agent/support';

class DemoFailure extends Error {}

const out = (line = '') => process.stdout.write(`${line}\n`);
const expect = (condition: boolean, what: string) => {
  if (!condition) throw new DemoFailure(what);
};

export async function runDemo(): Promise<number> {
  const dataDir = mkdtempSync(join(tmpdir(), 'writ-demo-'));
  // The demo owns its state: ignore any Writ settings in the caller's environment or folder.
  const env: NodeJS.ProcessEnv = { ...process.env, WRIT_LOG_LEVEL: 'info' };
  for (const name of ['WRIT_DATABASE_URL', 'WRIT_PORT', 'WRIT_HOST', 'WRIT_DATA_DIR']) delete env[name];
  const cli = (args: string[]) => {
    out(`  $ writ ${args.map((a) => (/[\s"]/.test(a) ? JSON.stringify(a) : a)).join(' ')}`);
    const result = spawnSync(process.execPath, [BIN, ...args, '--data-dir', dataDir], { cwd: dataDir, env, encoding: 'utf8' });
    return { code: result.status ?? 1, stdout: result.stdout.trim(), stderr: result.stderr.trim() };
  };

  let server: ChildProcess | undefined;
  try {
    out('Writ demo: one agent, one task, end to end');
    out(`  state in ${dataDir} (SQLite, generated keys, the bundled example policies)`);
    const started = await startServer(dataDir, env);
    server = started.child;
    out(`  Writ is listening on ${started.url}`);
    const writ = createWritClient({ baseUrl: started.url });

    out('\n1. The agent has a workload identity, with an accountable owner');
    const registered = cli(['identity', 'register', '--spiffe-id', AGENT, '--owner', 'alice@example.com', '--actor-type', 'agent', '--environment', 'production']);
    expect(registered.code === 0, `identity register failed: ${registered.stderr}`);
    out(`  ${registered.stdout}`);
    const minted = cli(['identity', 'token', AGENT]);
    expect(minted.code === 0, `identity token failed: ${minted.stderr}`);
    const identityToken = minted.stdout;
    const svid = decodePayload(identityToken);
    out(`  JWT-SVID from the dev issuer: sub=${String(svid.sub)} aud=${JSON.stringify(svid.aud)} expires in ${Number(svid.exp) - Math.floor(Date.now() / 1000)}s`);

    out('\n2. It asks for access for one task (POST /v1/tasks); Cedar decides each scope now');
    const scopes: Scope[] = [
      { action: 'read', resource: 'db:orders/*' },
      { action: 'write', resource: 'tickets:T-1042' },
      { action: 'refund', resource: 'payments:refunds/*' },
      { action: 'export', resource: 'db:customers/*' },
    ];
    out('  purpose: "Answer ticket T-1042: order 1042 arrived damaged"');
    out('  intent: customer-support   environment: production   ttl: 5m');
    out(`  asks for: ${scopes.map((s) => `${s.action} ${s.resource}`).join(', ')}`);
    const grant = await writ.requestTask(identityToken, {
      purpose: 'Answer ticket T-1042: order 1042 arrived damaged',
      intent: 'customer-support',
      environment: 'production',
      ttl: '5m',
      scopes,
    });
    expect(grant.status === 'partial', `expected a partial grant, got ${grant.status}`);
    if (grant.status !== 'partial') return 1;
    const token = grant.token;
    const claims = decodePayload(token);
    out(`  -> ${grant.status} grant: task ${grant.task.id}, task token expires in ${grant.expiresIn}s (jti ${String(claims.jti)})`);
    out(`     granted: ${grant.task.grantedScopes.map((s) => `${s.action} ${s.resource}`).join(', ')}`);
    for (const refused of grant.task.refusedScopes) {
      out(`     refused: ${refused.action} ${refused.resource} (${refused.reason}${refused.policies.length > 0 ? `, by ${refused.policies.join(', ')}` : ', no permit applies'})`);
    }

    const check = async (label: string, action: string, resource: string, allowed: boolean, reason: string | null, context?: Record<string, unknown>) => {
      out(`\n${label}: ${action} ${resource}${context === undefined ? '' : ` ${JSON.stringify(context)}`}  (POST /v1/authorize)`);
      const answer: AuthorizeAnswer = await writ.authorize(token, { action, resource, ...(context === undefined ? {} : { context }) });
      out(`  -> ${answer.decision}${answer.reason === null ? '' : ` ${answer.reason}`}${answer.policies.length > 0 ? ` (policy re-evaluated: ${answer.policies.join(', ')})` : ''}`);
      expect(answer.allowed === allowed && answer.reason === reason, `${action} ${resource}: expected ${allowed ? 'allow' : reason}, got ${answer.reason ?? 'allow'}`);
    };
    await check('3. An allowed read', 'read', 'db:orders/1042', true, null);
    await check('4. An allowed write (tier above read: policy decides again, fresh)', 'write', 'tickets:T-1042', true, null);
    await check('5. A refund within the $100 limit (decided on its amount, at the call)', 'refund', 'payments:refunds/R-1042', true, null, { amountCents: 4500 });
    await check('6. A refund over the limit waits for a human to approve that refund', 'refund', 'payments:refunds/R-1043', false, 'ERR_APPROVAL_REQUIRED', { amountCents: 25000 });
    await check('7. Out of scope: another ticket', 'write', 'tickets:T-9999', false, 'ERR_SCOPE_NOT_GRANTED');
    await check('8. Out of scope: restricted customer data', 'read', 'db:customers/pii/c-77', false, 'ERR_SCOPE_NOT_GRANTED');

    out(`\n9. The task is done (POST /v1/tasks/${grant.task.id}/complete)`);
    const completed = await writ.completeTask(token, grant.task.id, 'replied to the customer');
    expect(completed.state === 'completed', `expected completed, got ${completed.state}`);
    out(`  -> task ${completed.state} at ${completed.endedAt ?? '?'}`);

    await check('10. The same token, a moment later', 'read', 'db:orders/1042', false, 'ERR_TOKEN_REVOKED');
    try {
      await writ.getTask(token, grant.task.id);
      expect(false, 'an ended task token still authenticates');
    } catch (error) {
      expect(error instanceof WritApiError && error.status === 401, 'expected 401 for the ended task token');
      out(`  and as a credential: ${(error as WritApiError).status} ${(error as WritApiError).code} (the reason is in the audit log only)`);
    }

    out('\n11. A second task; then its owner suspends the agent (writ identity suspend, another process)');
    const second = await writ.requestTask(identityToken, {
      purpose: 'Follow up on ticket T-1042',
      intent: 'customer-support',
      environment: 'production',
      ttl: '5m',
      scopes: [{ action: 'read', resource: 'db:orders/*' }],
    });
    expect('token' in second, `expected a second grant, got ${second.status}`);
    const secondToken = 'token' in second ? second.token : '';
    expect((await writ.authorize(secondToken, { action: 'read', resource: 'db:orders/1042' })).allowed, 'the second task token should work before the suspension');
    out(`  task ${second.task.id} granted; its token works`);
    const suspended = cli(['identity', 'suspend', AGENT, '--note', 'demo: the agent is acting strangely']);
    expect(suspended.code === 0, `identity suspend failed: ${suspended.stderr}`);
    out(`  ${suspended.stdout}`);
    // The server learns of changes made by other processes from the store, every revocation.syncIntervalMs (1 s).
    const since = Date.now();
    let refusal: AuthorizeAnswer | undefined;
    while (Date.now() - since < 10_000) {
      const answer = await writ.authorize(secondToken, { action: 'read', resource: 'db:orders/1042' });
      if (!answer.allowed) {
        refusal = answer;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    // Revoked task, or inactive identity: whichever of the two the server learned first.
    expect(
      refusal?.reason === 'ERR_TOKEN_REVOKED' || refusal?.reason === 'ERR_IDENTITY_INACTIVE',
      `expected the suspended agent's token to be refused, got ${refusal?.reason ?? 'allowed for 10 s'}`,
    );
    out(`  -> the server refuses that token ${Date.now() - since} ms later: ${refusal?.reason ?? ''}`);
    try {
      await writ.requestTask(identityToken, { purpose: 'One more', intent: 'customer-support', environment: 'production', scopes: [{ action: 'read', resource: 'db:orders/*' }] });
      expect(false, 'a suspended identity got a task');
    } catch (error) {
      expect(error instanceof WritApiError && error.status === 401, 'expected 401 for the suspended identity');
      out(`  and the agent can ask for nothing: ${(error as WritApiError).status} ${(error as WritApiError).code}`);
    }

    out('\n12. The audit chain proves every step');
    const verified = cli(['audit', 'verify']);
    expect(verified.code === 0, `audit verify failed: ${verified.stderr}`);
    out(`  ${verified.stdout}`);
    out('\nDemo OK.');
    return 0;
  } catch (error) {
    out(`\nDemo FAILED: ${error instanceof DemoFailure ? error.message : ((error as Error)?.stack ?? String(error))}`);
    return 1;
  } finally {
    server?.kill('SIGTERM');
    if (server !== undefined) await new Promise((resolveExit) => server?.once('exit', resolveExit));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function startServer(dataDir: string, env: NodeJS.ProcessEnv): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [BIN, 'serve', '--dev', '--port', '0', '--data-dir', dataDir], { cwd: dataDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  return new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => reject(new DemoFailure(`server did not start within 30 s: ${stderr}`)), 30_000);
    child.once('exit', (code) => reject(new DemoFailure(`server exited with ${code}: ${stderr}`)));
    lines.on('line', (line) => {
      try {
        const record = JSON.parse(line) as { url?: string; msg?: string };
        if (typeof record.url === 'string' && record.msg?.startsWith('Writ listening')) {
          clearTimeout(timer);
          resolveStart({ child, url: record.url });
        }
      } catch {
        // not a log line
      }
    });
  });
}

function decodePayload(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}
