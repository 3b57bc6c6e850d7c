//! Browsers where a user signed in before (OWASP's "device cookies").
//!
//! Anyone can send wrong passwords at a user name, so the per-account limit
//! and lock alone let a flood of guesses from many addresses keep the real
//! user out. A browser that proves the user's password gets a cookie for
//! that account (256 random bits; the store keeps their SHA-256, as for
//! sessions; a new secret at every sign-in): its password attempts for the
//! account are then counted per browser, in a bucket of their own, and the
//! account's lock does not apply to them. A remembered browser that fails
//! `max_failures` times in a row is forgotten, so a stolen cookie buys a
//! guesser that many attempts once, and is worth nothing after the user's
//! next sign-in there. Each account has its own cookie: people sharing a
//! browser do not replace each other's. An account has 16 remembered
//! browsers at most, and none is pushed out for a new one by a password
//! alone: a thief holding the password could otherwise sign in 16 times,
//! push out the user's own browsers, and then lock the account with a
//! flood. A sign-in with the account's second factor (a code or a passkey)
//! marks its browser strong, and at a full account forgets the browsers
//! remembered by a password alone, so the thief cannot keep the user's new
//! browsers out either.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use ring::hmac;

use crate::authorize::secure;
use crate::server::ServerState;
use crate::session;
use crate::store::{StoredDevice, StoredUser};

/// The most browsers remembered for one account; beyond, a new one is not
/// remembered (none is pushed out).
const PER_ACCOUNT: i64 = 16;

/// A remembered browser, as stored.
pub(crate) struct KnownDevice {
    pub(crate) stored: StoredDevice,
}

/// The cookie's name for the account `username` (as typed: user names are
/// matched exactly): a short MAC of it under the server's `key`, so the
/// name tells nothing, not even to someone testing guessed user names
/// against it (an unkeyed hash would). With an https issuer the `__Host-`
/// prefix keeps sibling subdomains and plain-http pages from planting one.
pub(crate) fn cookie_name(secure: bool, key: &hmac::Key, username: &str) -> String {
    let mac = URL_SAFE_NO_PAD.encode(hmac::sign(key, username.as_bytes()));
    let prefix = if secure { "__Host-" } else { "" };
    format!("{prefix}stepup_device_{}", &mac[..12])
}

/// The remembered browser of the account `username` that sent `headers`,
/// when `user` is that account. The cookie is looked up whether or not the
/// account exists, so that sending one tells nothing about the name.
pub(crate) async fn recognised(
    state: &ServerState,
    headers: &HeaderMap,
    username: &str,
    user: Option<&StoredUser>,
    now: i64,
) -> Option<KnownDevice> {
    let secret = session::cookie(
        headers,
        &cookie_name(secure(state), &state.device_cookie_key, username),
    )?;
    let stored = state
        .store
        .device(&session::secret_id(secret), now)
        .await
        .ok()??;
    (Some(stored.user_id.as_str()) == user.map(|u| u.id.as_str())).then_some(KnownDevice { stored })
}

/// After `user` proved their second factor (a code, or a passkey) in the
/// browser that sent `headers`: it is remembered as strong (its cookie for
/// the account, if any, gets a new secret). Returns the `Set-Cookie` value.
pub(crate) async fn second_factor_proven(
    state: &ServerState,
    headers: &HeaderMap,
    user: &StoredUser,
    now: i64,
) -> Option<String> {
    let known = recognised(state, headers, &user.username, Some(user), now).await;
    if known.as_ref().is_some_and(|k| k.stored.strong) {
        return None;
    }
    remember(state, user, known.as_ref(), true, now).await
}

/// After `user` proved `password_hash`'s password: remembers the browser
/// under a new secret (the old one, if any, is forgotten: a copy taken
/// earlier stops counting). Nothing is remembered when the password changed
/// meanwhile. Returns the `Set-Cookie` value.
pub(crate) async fn remember(
    state: &ServerState,
    user: &StoredUser,
    replaced: Option<&KnownDevice>,
    strong: bool,
    now: i64,
) -> Option<String> {
    let login = &state.config.login;
    let secret = session::new_secret(&state.rng)?;
    let stored = StoredDevice {
        id: session::secret_id(&secret),
        user_id: user.id.clone(),
        failed_attempts: 0,
        created_at: now,
        expires_at: now + login.known_device_seconds,
        // Only a sign-in that proved the second factor itself: a copied
        // cookie of a strong browser, with the password, must not make a
        // strong one (which forgets the others at a full account).
        strong,
    };
    let inserted = state
        .store
        .insert_device(
            &stored,
            &user.password_hash,
            PER_ACCOUNT,
            replaced.map(|old| old.stored.id.as_str()),
        )
        .await;
    match inserted {
        Ok(true) => {}
        Ok(false) => {
            if replaced.is_none() {
                tracing::info!(
                    user = %user.id,
                    "a browser was not remembered: the account has {PER_ACCOUNT} already, or its password changed"
                );
            }
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "a browser was not remembered");
            return None;
        }
    }
    Some(session::set_cookie(
        &cookie_name(secure(state), &state.device_cookie_key, &user.username),
        &secret,
        secure(state),
        login.known_device_seconds,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_account_has_a_cookie_of_its_own_named_under_the_server_key() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"a server's secret");
        let alice = cookie_name(false, &key, "alice");
        assert!(alice.starts_with("stepup_device_") && alice.len() == "stepup_device_".len() + 12);
        assert_ne!(alice, cookie_name(false, &key, "Alice"));
        assert_eq!(cookie_name(true, &key, "alice"), format!("__Host-{alice}"));
        // Another server's key names it otherwise: the name cannot be
        // computed from a guessed user name without the key.
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another server's secret");
        assert_ne!(cookie_name(false, &other, "alice"), alice);
    }
}
