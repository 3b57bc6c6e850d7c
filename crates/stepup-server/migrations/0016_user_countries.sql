-- The countries a user signed in from, so that a sign-in from a new one
-- is a security event of the account.
CREATE TABLE user_countries (
    user_id TEXT NOT NULL,
    country TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    PRIMARY KEY (user_id, country)
)
