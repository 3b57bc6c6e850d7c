-- TOTP failures are counted apart from password failures: a correct
-- password must not reset the count of wrong codes.
ALTER TABLE users ADD COLUMN otp_failed_attempts BIGINT NOT NULL DEFAULT 0
