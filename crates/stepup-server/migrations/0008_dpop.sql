-- Clients that must bind their tokens to a key with DPoP (RFC 9449).
ALTER TABLE clients ADD COLUMN require_dpop BIGINT NOT NULL DEFAULT 0
