//! Browsers where a user signed in before (OWASP's "device cookies").
//!
//! Anyone can send wrong passwords at a user name, so the per-account limit
//! and lock alone let a flood of guesses from many addresses keep the real
//! user out. A browser that proved the user's password once gets a cookie
//! (256 random bits; the store keeps their SHA-256, as for sessions): its
//! password attempts for that user are then counted per browser, in a
//! bucket and a lock of its own, and the account's lock does not apply to
//! them. A remembered browser that fails `max_failures` times is locked
//! by itself and counts as unknown meanwhile, so a stolen cookie buys a
//! guesser no more than a few attempts. The cookie names one user: signing
//! in as another on the same browser replaces it.

use http::HeaderMap;

use crate::authorize::secure;
use crate::server::ServerState;
use crate::session;
use crate::store::{StoredDevice, StoredUser};

/// A remembered browser: as stored, and the secret its cookie holds.
pub(crate) struct KnownDevice {
    pub(crate) stored: StoredDevice,
    secret: String,
}

/// The cookie's name: with an https issuer the `__Host-` prefix keeps
/// sibling subdomains and plain-http pages from planting one.
pub(crate) fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-stepup_device"
    } else {
        "stepup_device"
    }
}

/// The remembered browser of `user` that sent `headers`, when it is
/// remembered for that user and not locked at `now`.
pub(crate) async fn recognised(
    state: &ServerState,
    headers: &HeaderMap,
    user: &StoredUser,
    now: i64,
) -> Option<KnownDevice> {
    let secret = session::cookie(headers, cookie_name(secure(state)))?;
    let stored = state
        .store
        .device(&session::secret_id(secret), now)
        .await
        .ok()??;
    let unlocked = stored.locked_until.is_none_or(|until| until <= now);
    (stored.user_id == user.id && unlocked).then(|| KnownDevice {
        stored,
        secret: secret.to_owned(),
    })
}

/// After `user` proved their password: renews the browser's memory, or
/// remembers a new browser. Returns the `Set-Cookie` value.
pub(crate) async fn remember(
    state: &ServerState,
    user: &StoredUser,
    device: Option<&KnownDevice>,
    now: i64,
) -> Option<String> {
    let login = &state.config.login;
    let expires_at = now + login.known_device_seconds;
    let secret = match device {
        Some(device) => {
            state
                .store
                .device_signed_in(&device.stored.id, expires_at)
                .await
                .ok()?;
            device.secret.clone()
        }
        None => {
            let secret = session::new_secret(&state.rng)?;
            let stored = StoredDevice {
                id: session::secret_id(&secret),
                user_id: user.id.clone(),
                failed_attempts: 0,
                locked_until: None,
                created_at: now,
                expires_at,
            };
            state.store.insert_device(&stored).await.ok()?;
            secret
        }
    };
    Some(session::set_cookie(
        cookie_name(secure(state)),
        &secret,
        secure(state),
        login.known_device_seconds,
    ))
}
