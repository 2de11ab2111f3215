/**
 * Lease routes: a task obtains a downstream credential for itself.
 *
 *   POST /v1/tasks/{id}/leases  {"provider": "shop"}   (the task's own task token)
 *   → 201 { lease: {id, provider, state, expiresAt}, connection: {host, port, database, user, password, expiresAt} }
 *   GET /v1/tasks/{id}/leases   (whoever may read the task)
 *   → 200 { leases: [{id, provider, state, createdAt, expiresAt, revokedAt}] }
 *
 * The password is in this one response and nowhere else: not stored, not
 * logged, not audited (`Cache-Control: no-store`). Asking again mints another
 * role; every one goes when the task ends.
 */
import type { X509Certificate } from 'node:crypto';
import { TLSSocket } from 'node:tls';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { validationError, type Credentials } from '../broker/broker.js';
import { isoOrNull as iso } from '../core/clock.js';
import { WritError } from '../core/errors.js';
import { peerCertificateChain } from '../identity/x509-svid.js';
import type { Lease } from '../store/store.js';
import type { Writ } from '../writ.js';

const leaseBodySchema = z.object({ provider: z.string().min(1).max(64) }).strict();

const BEARER_RE = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/i;

function credentialsOf(request: FastifyRequest): Credentials {
  const header = request.headers.authorization;
  const bearer = typeof header !== 'string' || header.length === 0 ? undefined : (BEARER_RE.exec(header)?.[1] ?? header);
  const socket = request.raw.socket;
  const certificateChain: X509Certificate[] = socket instanceof TLSSocket ? peerCertificateChain(socket) : [];
  return { bearer, certificateChain };
}

/** A lease as the API shows it: no details beyond what the task needs to know. */
export function leaseView(lease: Lease) {
  return { id: lease.id, provider: lease.provider, state: lease.state, createdAt: iso(lease.createdAt), expiresAt: iso(lease.expiresAt), revokedAt: iso(lease.revokedAt) };
}

/** Registers `POST /v1/tasks/:id/leases` and `GET /v1/tasks/:id/leases`. */
export function registerLeaseRoutes(app: FastifyInstance, writ: Writ): void {
  // Whoever may see the task sees its leases: their state and expiry, never a password or a role's grants.
  app.get<{ Params: { id: string } }>('/v1/tasks/:id/leases', async (request) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'GET /v1/tasks/{id}/leases' });
    const task = await writ.broker.getTask(caller, request.params.id);
    return { leases: (await writ.store.listLeasesOfTask(task.id)).map(leaseView) };
  });

  app.post<{ Params: { id: string } }>('/v1/tasks/:id/leases', async (request, reply) => {
    const caller = await writ.broker.authenticate(credentialsOf(request), { allowTaskToken: true, endpoint: 'POST /v1/tasks/{id}/leases' });
    // Only the task itself, by its own token: not its identity, not another task of it.
    if (caller.taskId !== request.params.id) throw new WritError('ERR_FORBIDDEN', { detail: 'a lease is asked for with the task token of that very task' });
    const body = leaseBodySchema.safeParse(request.body ?? {});
    if (!body.success) throw validationError(body.error.issues);
    const issued = await writ.leases.issue(caller.taskId, body.data.provider);
    return reply.code(201).header('cache-control', 'no-store').send({ lease: leaseView(issued.lease), connection: issued.credential });
  });
}
