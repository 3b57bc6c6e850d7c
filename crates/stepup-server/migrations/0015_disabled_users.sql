-- An administrator can disable an account: it signs in no more, its
-- sessions end and no token is issued for it, until enabled again.
ALTER TABLE users ADD COLUMN disabled_at BIGINT
