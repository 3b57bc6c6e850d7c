-- A remembered browser where the account's second factor (a code or a
-- passkey) was proven: such a sign-in at an account whose places are all
-- taken forgets the browsers remembered by a password alone, so that a
-- thief holding only the password cannot keep the user's new browsers out.
ALTER TABLE known_devices ADD COLUMN strong BIGINT NOT NULL DEFAULT 0;
-- Browsers remembered before their cookie names were keyed (migration
-- 0012) can no longer be found by any cookie: their places are freed.
DELETE FROM known_devices
