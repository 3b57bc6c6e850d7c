-- Pushed authorization requests (RFC 9126), validated, used once.
CREATE TABLE pushed_requests (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    params TEXT NOT NULL,
    expires_at BIGINT NOT NULL
)
