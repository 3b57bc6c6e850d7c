-- Codes lock apart from passwords: a flood of wrong passwords at a user
-- name (from anyone) must not also refuse the codes of the user who has
-- passed the password; only wrong codes lock codes.
ALTER TABLE users ADD COLUMN otp_locked_until BIGINT;
-- Locks taken before, by passwords or codes, go on holding codes.
UPDATE users SET otp_locked_until = locked_until WHERE locked_until IS NOT NULL;
-- Browsers where a user signed in before (the secret of their cookie,
-- hashed): their password attempts are counted per browser, not per
-- account, so a flood at the account from elsewhere neither slows nor
-- locks them out; a browser that fails too often is forgotten.
CREATE TABLE known_devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX known_devices_by_user ON known_devices (user_id);
CREATE INDEX known_devices_by_expiry ON known_devices (expires_at)
