-- Users, browser sessions, pending authorization requests, codes and
-- refresh token families.
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    totp_seed TEXT,
    totp_last_step BIGINT,
    failed_attempts BIGINT NOT NULL,
    locked_until BIGINT,
    created_at BIGINT NOT NULL
);
-- One row per browser session; the cookie carries a secret whose SHA-256 is
-- the id. Each factor remembers when it was last proven.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    pwd_at BIGINT,
    otp_at BIGINT,
    hwk_at BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- An authorization request waiting for the user to authenticate.
CREATE TABLE pending_requests (
    id TEXT PRIMARY KEY,
    params TEXT NOT NULL,
    csrf TEXT NOT NULL,
    user_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- Authorization codes, by SHA-256; used_at makes them one-time.
CREATE TABLE codes (
    id TEXT PRIMARY KEY,
    grant_data TEXT NOT NULL,
    family_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
-- Refresh tokens, by SHA-256, grouped in families (one per code).
CREATE TABLE refresh_tokens (
    id TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    grant_data TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE TABLE token_families (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
-- Access tokens issued within a family, so that revoking the family
-- revokes them too (for introspection).
CREATE TABLE family_access_tokens (
    jti TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
)
