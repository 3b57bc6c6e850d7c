-- Refused sign-ins are kept as one event per account, address, refusal
-- and hour, with how many there were (count), so that anyone who knows a
-- user name cannot fill the table or push the account's other events out
-- of sight; seq orders events kept in the same second.
ALTER TABLE security_events ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE security_events ADD COLUMN seq BIGINT NOT NULL DEFAULT 0
