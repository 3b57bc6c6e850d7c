-- The user of a token family, so that changing a credential revokes what
-- was issued on the old one.
ALTER TABLE token_families ADD COLUMN user_id TEXT
