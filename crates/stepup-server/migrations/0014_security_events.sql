-- What happened to an account that its user, and the operator, should
-- know: sign-ins that failed, lockouts and unlocks, factors added or
-- removed, password changes. Shown to the user, written as audit events,
-- kept until expires_at.
CREATE TABLE security_events (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    client_address TEXT,
    country TEXT,
    user_agent TEXT,
    detail TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX security_events_by_user ON security_events (user_id, at);
CREATE INDEX security_events_by_expiry ON security_events (expires_at)
