-- gate store schema, version 2. Portable SQL: the same tables can live in PostgreSQL for a cluster.
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

-- The box key pair of a gate server (a cluster shares one; profiles carry its public half).
CREATE TABLE IF NOT EXISTS server_keys (
    name TEXT PRIMARY KEY,
    box_secret BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- revision (version 2): raised past every other client's by each write to this client, so a
-- reader that saw up to N reads only what changed since (WHERE revision > N).
CREATE TABLE IF NOT EXISTS clients (
    name TEXT PRIMARY KEY,
    token BLOB NOT NULL UNIQUE,
    hmac_secret BLOB NOT NULL,
    box_public BLOB NOT NULL,
    rsa_public BLOB NOT NULL,          -- SPKI DER
    created_at INTEGER NOT NULL,       -- Unix seconds
    revoked_at INTEGER,                -- NULL while enrolled
    revision INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS client_gates (
    client TEXT NOT NULL REFERENCES clients (name) ON DELETE CASCADE,
    gate TEXT NOT NULL,
    PRIMARY KEY (client, gate)
);

-- Nonces of authenticated requests, kept until expires_at (at least twice the window).
CREATE TABLE IF NOT EXISTS nonces (
    token BLOB NOT NULL,
    nonce BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    host TEXT NOT NULL,
    PRIMARY KEY (token, nonce)
) WITHOUT ROWID; -- one b-tree, not a table and an index (PostgreSQL: drop the clause)
CREATE INDEX IF NOT EXISTS nonces_by_expiry ON nonces (expires_at);

-- Addresses a gate was opened for, so revoking a client can close them.
CREATE TABLE IF NOT EXISTS grants (
    client TEXT NOT NULL,
    gate TEXT NOT NULL,
    address TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    host TEXT NOT NULL,
    PRIMARY KEY (client, gate, address, host)
);
CREATE INDEX IF NOT EXISTS grants_by_address ON grants (gate, address);
-- No index on expires_at here or below: the purge scans once a minute, approvals write less.

-- One-time tokens binding a VPN session to its approval; only a digest is kept.
CREATE TABLE IF NOT EXISTS session_tokens (
    digest BLOB PRIMARY KEY,
    client TEXT NOT NULL,
    gate TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    host TEXT NOT NULL
);

-- The OpenVPN PKI: the CA (one per cluster) and every certificate it issued.
CREATE TABLE IF NOT EXISTS pki_ca (
    name TEXT PRIMARY KEY,
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS certificates (
    serial INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,               -- 'server' or 'client'
    name TEXT NOT NULL,               -- server name or client name (the certificate's CN)
    cert_pem TEXT NOT NULL,
    key_pem TEXT,                     -- server certificates only; clients keep their own key
    issued_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS certificates_by_name ON certificates (kind, name);

-- Monotonic numbers: certificate serials, CRL numbers.
CREATE TABLE IF NOT EXISTS sequences (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- Self-shutdown states per part (www, web, vpn), from notifications and from the operator
-- (the operator's wins while it is set), and the last notification accepted.
CREATE TABLE IF NOT EXISTS shutdown (
    part TEXT NOT NULL,
    source TEXT NOT NULL,             -- 'notification' or 'operator'
    state TEXT NOT NULL,              -- 'ok' or 'disabled'
    message TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    host TEXT NOT NULL,
    PRIMARY KEY (part, source, host)
);

CREATE TABLE IF NOT EXISTS notifications_accepted (
    host TEXT PRIMARY KEY,
    serial INTEGER NOT NULL,
    accepted_at INTEGER NOT NULL
);

-- Each daemon's heartbeat, written every few seconds while it runs, for `gatectl cluster
-- status`. A table no other reads or refers to, added without a schema version of its own: a
-- build that lacks it ignores it, so hosts can be upgraded one at a time.
CREATE TABLE IF NOT EXISTS hosts (
    host TEXT PRIMARY KEY,
    instance INTEGER NOT NULL,        -- random at each start: two daemons under one name differ
    version TEXT NOT NULL,            -- the daemon's
    started_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL,         -- its last heartbeat, by its own clock
    stopped_at INTEGER,               -- set by a clean stop, NULL while it runs
    leases INTEGER,                   -- live leases its last sweep counted (NULL: none yet)
    approvals INTEGER NOT NULL,       -- since started_at
    refusals INTEGER NOT NULL
);

-- The audit trail (`gatectl audit`): every lease opened or closed and why, every enrollment,
-- revocation, shutdown change and notification accepted, with the time, the host and who did
-- it. Appended to; rows older than the daemon's audit.keep are purged. A table no other reads
-- or refers to, added without a schema version (as hosts): a build that lacks it ignores it.
CREATE TABLE IF NOT EXISTS audit (
    at INTEGER NOT NULL,              -- Unix seconds
    host TEXT NOT NULL,               -- where it happened
    event TEXT NOT NULL,              -- lease_opened, lease_closed, enrolled, revoked, shutdown_set, ...
    cause TEXT NOT NULL,              -- approval, allow, revoke, revocation, expiry, ...
    actor TEXT NOT NULL,              -- the client (approvals), the local user (gatectl), the daemon
    client TEXT,
    gate TEXT,
    address TEXT,
    detail TEXT NOT NULL
);
-- Only by time (the purge, --since): every index is a write on the approval path, and the
-- trail is read by hand (--client and --address scan what the retention keeps).
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at);
