-- Client public keys for private_key_jwt, and the assertion ids already
-- used (RFC 7523 §3: an assertion is accepted once).
ALTER TABLE clients ADD COLUMN jwks TEXT;
CREATE TABLE used_assertions (
    id TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
)
