/** The commented writ.yaml that `writ init` writes. Every value shown is the default. */
export const WRIT_YAML_TEMPLATE = `# writ.yaml: configuration for Writ, the zero-standing-privilege access broker.
# Every value below is the default; delete what you do not change.
# Environment variables override this file, and command-line flags override both:
#   WRIT_PORT, WRIT_HOST, WRIT_DATA_DIR, WRIT_DATABASE_URL, WRIT_LOG_LEVEL, WRIT_MASTER_KEY

server:
  host: 127.0.0.1        # listen on loopback only; configure tls before exposing Writ
  port: 8750
  bodyLimit: 65536       # bytes; larger request bodies get 413 ERR_BODY_TOO_LARGE
  # Serve HTTPS; with clientCertificates, agents authenticate with X.509-SVIDs
  # (checked against the spiffe sources' x509BundleFile) and their task tokens
  # are bound to the certificate.
  # tls:
  #   certFile: ./tls/writ.crt
  #   keyFile: ./tls/writ.key
  #   clientCertificates: optional    # off | optional | required

# SQLite database and master key file live here (relative to this file).
dataDir: ./.writ

database:
  # Set a PostgreSQL URL to run several Writ nodes on one database:
  # url: postgres://writ@db.internal:5432/writ
  # SQLite durability: normal survives a crash of Writ; full also survives
  # power loss, at the cost of a disk flush on every decision.
  sqliteSynchronous: normal

# The iss of task tokens. An identifier; it need not resolve.
issuer: http://127.0.0.1:8750

tokens:
  audience: writ-enforcement   # aud of task tokens; enforcement points require it
  defaultTtl: 5m               # a task's lifetime when the request names none
  maxTtl: 15m                  # hard maximum; longer requests are cut to this (never days)
  clockSkew: 30s               # tolerated clock difference when checking exp and nbf
  maxLifetime: 8h              # longest a task lasts from its request, renewals at checkpoints included (at most 24h)

identity:
  audience: writ               # identity tokens must name this in aud
  # Where identities are verified from; several at once. See docs/identity.md.
  sources: []
  #  - name: spire
  #    type: spiffe
  #    trustDomain: prod.example.org
  #    jwtBundle: { url: https://spire-server.internal:8443 }   # or { file: ./bundle.json }
  #    x509BundleFile: ./spire-bundle.pem
  #  - name: k8s
  #    type: oidc
  #    issuer: https://kubernetes.default.svc.cluster.local
  #    environment: { claim: /kubernetes.io/namespace, map: { payments: production } }
  #    unregistered: quarantine   # deny (default) | quarantine
  devIssuer:
    enabled: false             # Writ's local issuer for laptops and demos; writ serve --dev turns it on
    maxTtl: 5m

admin:
  bootstrapToken: true         # print an all-scopes admin token once, at the first start of a store
  bootstrapTtl: 24h            # make lasting, narrower ones with writ admin token create

policy:
  # Folder with schema.cedarschema, *.cedar policies, environments/<env>/*.cedar
  # (policies for one environment only) and resources.yaml.
  # Unset: the example policies bundled with Writ.
  # dir: ./policies
  environments: [development, sandbox, staging, production]
  # The risk score every decision gets (context.risk), see docs/policy.md.
  risk:
    weights:                   # points each signal gives at full strength, 0-100 (0 turns it off)
      environment: 20
      tier: 25
      sensitivity: 20
      identityAge: 10
      unusualResource: 10
      callRate: 10
      delegationDepth: 10
      offHours: 5
      breakGlass: 25
    environmentFactors: { production: 1, staging: 0.5, development: 0.2, sandbox: 0 }  # unlisted: 1
    newIdentityDays: 7         # identityAge falls from full to nothing over this many days
    saturatingCallsPerMinute: 60
    saturatingDelegationDepth: 3
    businessHours: { start: 8, end: 18, weekdays: [1, 2, 3, 4, 5] }  # UTC; offHours counts outside
    thresholds: { medium: 25, high: 50, critical: 75 }
    renewalLimit: critical     # a renewal whose fresh decision scores this level or more is refused (medium | high | critical)
  # A candidate policy folder decided beside the enforced one and recorded
  # ("would deny/allow") on every decision's audit record, never enforced.
  # shadow:
  #   dir: ./policies-next
  #   environments: [production]   # default: every environment

# The MCP gateway (/mcp, writ gateway, writ mcp): agents reach these MCP servers
# through Writ, each call checked and audited. See docs/gateway.md.
gateway:
  upstreams: []
  # - name: tickets              # tools appear as tickets__<tool>
  #   command: node              # a stdio server, started on first use (or url: https://.../mcp)
  #   args: [tickets-server.mjs]
  #   inject:                    # secrets from the vault (writ secret set tickets-api-key)
  #     - { secret: tickets-api-key, env: TICKETS_API_KEY }   # or header: Authorization, prefix: "Bearer "
  #   tools:                     # action and resource per tool; default from its annotations
  #     get_ticket: { resource: "tickets:{ticketId}" }
  #     create_refund: { action: refund, resource: "payments:refunds/{ticketId}" }
  #   expose: all                # all | listed
  callTimeout: 30s
  connectTimeout: 10s
  maxSessions: 1000
  maxSessionsPerIdentity: 16
  sessionIdleTimeout: 15m
  # resourceUrl: https://writ.example/mcp   # default <issuer>/mcp (RFC 9728 metadata)
  allowedOrigins: []           # browser origins allowed to call /mcp; agents send none
  maxRequestBytes: 4194304

# The HTTP proxy (/proxy on writ serve, or writ proxy alone): agents call HTTP
# APIs through Writ with their task token; each request is checked, audited,
# and sent on with the API's own credential. See docs/proxy.md.
proxy:
  mount: /proxy                # routes are served under it
  timeout: 30s                 # longest the upstream may stay silent
  routes: []
  # - name: shop
  #   prefix: /shop              # /proxy/shop/... goes to the upstream
  #   upstream: https://shop.internal/api
  #   inject:                    # secrets from the vault (writ secret set shop-api-key)
  #     - { secret: shop-api-key, header: Authorization, prefix: "Bearer " }
  #   methods: {}                # over GET/HEAD: read, POST/PUT/PATCH: write, DELETE: delete; false refuses one
  #   paths:                     # first match wins; a path matching none is refused
  #     - { pattern: "/orders/{id}", resource: "db:orders/{id}" }
  #     - { pattern: "/orders/{id}/refund", resource: "payments:refunds/{id}", methods: { POST: refund } }

# Human approval of one exact action (@approval("required") permits). See docs/approvals.md.
approvals:
  ttl: 10m                     # how long a request waits for its approvers
  required: 1                  # distinct approvers each request needs (N of M)
  allowSelfApproval: false     # the requester (or its delegation chain) approving its own action
  environments: {}             # per environment, e.g. { production: { required: 2 } }
  maxWait: 5m                  # longest an MCP client may have a call held for its approval

# Break-glass: emergency grants decided by their own policy set. See docs/break-glass.md.
breakGlass:
  # dir: ./policies/break-glass   # default: break-glass/ in policy.dir; without it, break-glass is off
  defaultDuration: 1h
  maxDuration: 1h              # longer requests are refused; at most 4h

# Signed webhooks on every approval and break-glass state change. See docs/webhooks.md.
notifications:
  webhooks: []
  # - name: ops
  #   url: https://hooks.example/writ
  #   secret: ops-webhook-secret   # in the vault: writ secret set ops-webhook-secret
  #   format: json                 # json | slack
  #   events: [approval.requested, break_glass.started]   # default: every event

# Planner→worker delegation by token exchange at /oauth/token. See docs/delegation.md.
delegation:
  maxDepth: 3                  # how many times a grant may be handed on (at most 8)

# Credential providers: a PostgreSQL role per task, dropped when the task ends. See docs/leases.md.
leases:
  postgres: []
  # - name: shop                       # POST /v1/tasks/{id}/leases {"provider": "shop"}
  #   urlSecret: shop-admin-dsn        # admin DSN in the vault: writ secret set shop-admin-dsn
  #   connectionLimit: 2
  #   rolePrefix: writ_
  #   grants:
  #     - { resource: "db:orders/*", schema: shop, read: [SELECT] }
  #     - { resource: "db:orders/lines", schema: shop, table: order_lines, read: [SELECT], write: [INSERT, UPDATE] }

reaper:
  intervalMs: 5000             # how often tasks past their expiry are moved to expired, and leases of ended tasks revoked

revocation:
  syncIntervalMs: 1000         # how often task ends made by other processes or nodes on the same store are picked up

log:
  level: info                  # fatal | error | warn | info | debug | trace | silent
`;
