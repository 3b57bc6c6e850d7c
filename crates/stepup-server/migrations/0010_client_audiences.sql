-- The audiences (RFC 8707 resources) a client may get tokens for, a JSON
-- array; NULL: only the server's default audience (the first configured).
ALTER TABLE clients ADD COLUMN audiences TEXT
