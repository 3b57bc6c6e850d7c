-- Passkeys (WebAuthn credentials) of users, and the state of WebAuthn
-- ceremonies between the page that starts one and the form that ends it.
CREATE TABLE passkeys (
    credential_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    -- The credential as webauthn-rs keeps it (public key, counter), JSON.
    credential TEXT NOT NULL,
    -- The signature counter, apart so that it only ever moves forward
    -- (a conditional update), even under concurrent sign-ins.
    counter BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX passkeys_by_user ON passkeys (user_id);
-- Each ceremony is used once: taking it deletes it.
CREATE TABLE webauthn_ceremonies (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    -- What the ceremony is bound to: the pending request of a sign-in, or
    -- the user registering a passkey.
    bound_to TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX webauthn_ceremonies_by_expiry ON webauthn_ceremonies (expires_at);
