-- Secrets every instance of the server shares, made once at the first
-- start (random), never shown: the key under which remembered browsers'
-- cookie names are derived from user names, so that a name seen in a
-- browser or a proxy log cannot be tested against guessed user names.
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
