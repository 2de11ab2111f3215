/**
 * Which headers cross the proxy, each way. Pure functions over Node's header
 * objects, no I/O.
 *
 * RFC 9110 §7.6.1: a proxy removes Connection, every header Connection names,
 * and the hop-by-hop headers (Keep-Alive, Proxy-Connection, TE, Trailer,
 * Transfer-Encoding, Upgrade); Proxy-Authenticate and Proxy-Authorization
 * are for this hop too. Towards the upstream the proxy also removes what is
 * its own to set: the agent's Authorization (the task token never leaves
 * Writ), Host, the forwarding headers (an agent cannot choose the address it
 * appears to come from), Expect, the method-override headers (the method
 * decided is the method run), and every header Writ injects.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
const SET_BY_PROXY = new Set([
  'authorization', 'host', 'forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'expect',
  // The method was decided as sent: an upstream that honours an override would run another action than the one decided.
  'x-http-method-override', 'x-method-override', 'x-http-method',
]);

/** The names Connection lists (lowercase), which are hop-by-hop for this message. */
export function connectionListed(headers: IncomingHttpHeaders): Set<string> {
  const value = headers.connection;
  const listed = new Set<string>();
  for (const line of Array.isArray(value) ? value : value === undefined ? [] : [value]) {
    for (const name of line.split(',')) {
      const trimmed = name.trim().toLowerCase();
      if (trimmed !== '') listed.add(trimmed);
    }
  }
  return listed;
}

/**
 * The agent's request headers as the upstream gets them, before Writ adds its
 * own: hop-by-hop headers, the names Connection lists, Authorization, Host,
 * forwarding headers, Expect, and every name in `injected` (lowercase) removed.
 */
export function upstreamRequestHeaders(headers: IncomingHttpHeaders, injected: ReadonlySet<string>): OutgoingHttpHeaders {
  const listed = connectionListed(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || SET_BY_PROXY.has(name) || listed.has(name) || injected.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** The upstream's response headers as the agent gets them: hop-by-hop headers and the names Connection lists removed. */
export function agentResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const listed = connectionListed(headers);
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || listed.has(name)) continue;
    out[name] = value;
  }
  return out;
}
