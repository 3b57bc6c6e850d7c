-- Wrong TOTP codes in a row, across temporary locks: a lock that expires
-- starts its own count again, this one goes on until a right code (or an
-- unlock), and past login.max_code_failures codes are refused for good.
ALTER TABLE users ADD COLUMN otp_consecutive_failures BIGINT NOT NULL DEFAULT 0;
-- A row written instead of a user's counters when a sign-in names no
-- user, so that unknown and known names cost the same writes.
CREATE TABLE timing_decoy (id BIGINT PRIMARY KEY, attempts BIGINT NOT NULL);
INSERT INTO timing_decoy (id, attempts) VALUES (1, 0)
