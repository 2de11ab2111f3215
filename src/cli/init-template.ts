/** The commented writ.yaml that `writ init` writes. Every value shown is the default. */
export const WRIT_YAML_TEMPLATE = `# writ.yaml: configuration for Writ, the zero-standing-privilege access broker.
# Every value below is the default; delete what you do not change.
# Environment variables override this file, and command-line flags override both:
#   WRIT_PORT, WRIT_HOST, WRIT_DATA_DIR, WRIT_DATABASE_URL, WRIT_LOG_LEVEL, WRIT_MASTER_KEY

server:
  host: 127.0.0.1        # listen on loopback only; put TLS in front before exposing Writ
  port: 8750
  bodyLimit: 65536       # bytes; larger request bodies get 413 ERR_BODY_TOO_LARGE

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

identity:
  audience: writ               # identity tokens must name this in aud
  devIssuer:
    enabled: true              # Writ's local issuer for laptops and demos (writ identity token)
    maxTtl: 5m

policy:
  # Folder with schema.cedarschema, *.cedar policies and resources.yaml.
  # Unset: the example policies bundled with Writ.
  # dir: ./policies
  environments: [development, sandbox, staging, production]

reaper:
  intervalMs: 5000             # how often tasks past their expiry are moved to expired

revocation:
  syncIntervalMs: 1000         # how often task ends made by other processes or nodes on the same store are picked up

log:
  level: info                  # fatal | error | warn | info | debug | trace | silent
`;
