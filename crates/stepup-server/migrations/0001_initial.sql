-- stepup-server schema, version 1. Portable between SQLite and PostgreSQL:
-- times are BIGINT seconds since the epoch, flags are BIGINT 0/1, lists are
-- JSON text.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    pkcs8 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);
CREATE TABLE clients (
    client_id TEXT PRIMARY KEY,
    secret_sha256 TEXT,
    auth_method TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    scopes TEXT NOT NULL,
    require_par BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
