//! Users: passwords (argon2id), TOTP enrolment, lockout after failures.

use crate::events::{self, EventKind};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SecureRandom;
use stepup_core::totp::TotpSecret;
use thiserror::Error;

use crate::store::{Store, StoreError, StoredUser};

/// Why a user operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UserError {
    /// A value that makes no sense, with what was expected.
    #[error("{0}")]
    Invalid(String),
    /// No such user.
    #[error("no user named {0:?}")]
    NotFound(String),
    /// The user has no such passkey.
    #[error("{0}")]
    NoPasskey(String),
    /// Storage failed (or the name is taken).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed.
    #[error("password hashing failed")]
    Hashing,
}

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;

fn random_bytes<const N: usize>(rng: &dyn SecureRandom) -> Result<[u8; N], UserError> {
    let mut bytes = [0u8; N];
    rng.fill(&mut bytes).map_err(|_| UserError::Hashing)?;
    Ok(bytes)
}

/// Hashes a password with argon2id (the `argon2` crate's defaults: 19 MiB,
/// 2 passes, the OWASP recommendation).
pub fn hash_password(password: &str, rng: &dyn SecureRandom) -> Result<String, UserError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(UserError::Invalid(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    let salt = SaltString::encode_b64(&random_bytes::<16>(rng)?).map_err(|_| UserError::Hashing)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| UserError::Hashing)
}

/// Checks a password against a stored hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Adds a user with a password.
pub async fn add_user(
    store: &Store,
    username: &str,
    password: &str,
    now: i64,
    rng: &dyn SecureRandom,
) -> Result<StoredUser, UserError> {
    let ok = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@".contains(c));
    if !ok {
        return Err(UserError::Invalid(format!(
            "user name {username:?}: expected 1 to 64 letters, digits, '-', '_', '.' or '@'"
        )));
    }
    let user = StoredUser {
        id: URL_SAFE_NO_PAD.encode(random_bytes::<16>(rng)?),
        username: username.to_owned(),
        password_hash: hash_password(password, rng)?,
        totp_seed: None,
        totp_last_step: None,
        failed_attempts: 0,
        locked_until: None,
        otp_locked_until: None,
        created_at: now,
        disabled_at: None,
        passkeys: 0,
    };
    store.insert_user(&user).await?;
    Ok(user)
}

/// Replaces a user's password (and unlocks the account).
pub async fn set_password(
    store: &Store,
    username: &str,
    password: &str,
    rng: &dyn SecureRandom,
) -> Result<(), UserError> {
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
    store
        .set_password_hash(&user.id, &hash_password(password, rng)?)
        .await?;
    events::record(store, &user.id, EventKind::PasswordChanged, "", now_seconds()).await;
    // A changed credential ends the sessions proven with the old one, and
    // what was issued on them; browsers remembered for the old password
    // are forgotten.
    store.delete_user_sessions(&user.id).await?;
    store.delete_user_devices(&user.id).await?;
    store.revoke_user_families(&user.id, now_seconds()).await?;
    Ok(())
}

/// Enrols a new TOTP seed (160 random bits, RFC 4226 §4) for a user.
pub async fn enroll_totp(
    store: &Store,
    username: &str,
    rng: &dyn SecureRandom,
) -> Result<TotpSecret, UserError> {
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
    let seed = random_bytes::<20>(rng)?;
    store.set_totp_seed(&user.id, &STANDARD.encode(seed)).await?;
    events::record(
        store,
        &user.id,
        EventKind::FactorAdded,
        "authenticator app (TOTP), replacing any before",
        now_seconds(),
    )
    .await;
    store.delete_user_sessions(&user.id).await?;
    store.revoke_user_families(&user.id, now_seconds()).await?;
    Ok(TotpSecret::new(seed.to_vec()))
}

/// Removes a user's passkeys: the one whose credential id is given, or
/// all. Sessions and tokens of the user end, as for any changed
/// credential: a session proven with a lost passkey must not outlive it.
/// Returns how many passkeys went; removing none is [`UserError::NoPasskey`].
pub async fn remove_passkeys(
    store: &Store,
    username: &str,
    credential_id: Option<&str>,
) -> Result<u64, UserError> {
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
    let removed = match credential_id {
        Some(id) => u64::from(store.delete_passkey(&user.id, id).await?),
        None => store.delete_passkeys_of(&user.id).await?,
    };
    if removed == 0 {
        return Err(UserError::NoPasskey(match credential_id {
            Some(id) => format!("{username} has no passkey with credential id {id}"),
            None => format!("{username} has no passkey"),
        }));
    }
    let detail = match credential_id {
        Some(id) => format!("passkey {id}"),
        None => format!("all passkeys ({removed})"),
    };
    events::record(store, &user.id, EventKind::FactorRemoved, &detail, now_seconds()).await;
    store.delete_user_sessions(&user.id).await?;
    store.revoke_user_families(&user.id, now_seconds()).await?;
    Ok(removed)
}

/// Disables (`disabled`) or enables a user's account at `now`. Disabled,
/// it signs in no more and no token is issued for it; its sessions end and
/// its refresh tokens are revoked at once.
pub async fn set_disabled(store: &Store, username: &str, disabled: bool, now: i64) -> Result<(), UserError> {
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
    store.set_user_disabled(&user.id, disabled.then_some(now)).await?;
    if disabled {
        store.delete_user_sessions(&user.id).await?;
        store.delete_user_devices(&user.id).await?;
        store.revoke_user_families(&user.id, now).await?;
    }
    let kind = if disabled {
        EventKind::Disabled
    } else {
        EventKind::Enabled
    };
    events::record(store, &user.id, kind, "by an administrator", now).await;
    Ok(())
}

/// Deletes a user's account at `now`: its tokens are revoked, then the
/// user and everything kept of them goes (passkeys, sessions, remembered
/// browsers, security events). The deletion itself is an audit event.
pub async fn delete(store: &Store, username: &str, now: i64) -> Result<(), UserError> {
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
    store.revoke_user_families(&user.id, now).await?;
    store.delete_user(&user.id).await?;
    tracing::info!(target: "stepup::audit", event = "deleted", user = %user.id, "account deleted");
    Ok(())
}

/// Unlocks a user's sign-in at `now` (failure counts cleared; the
/// password stays).
pub async fn unlock(store: &Store, username: &str, now: i64) -> Result<(), UserError> {
    let user = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
    store.unlock_user(&user.id).await?;
    events::record(store, &user.id, EventKind::Unlocked, "", now).await;
    Ok(())
}

/// The user's TOTP secret, if enrolled.
pub fn totp_secret(user: &StoredUser) -> Option<TotpSecret> {
    let seed = STANDARD.decode(user.totp_seed.as_deref()?).ok()?;
    Some(TotpSecret::new(seed))
}

/// Administrative changes are stamped with the system clock.
fn now_seconds() -> i64 {
    stepup_core::Clock::now(&stepup_core::SystemClock).seconds()
}

/// RFC 4648 base32 without padding, as authenticator apps read seeds.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The `otpauth://` URI an authenticator app scans (Key URI Format).
pub fn otpauth_uri(issuer: &str, username: &str, secret: &TotpSecret) -> String {
    let enc = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&period={}",
        enc(issuer),
        enc(username),
        base32(secret.expose_seed()),
        enc(issuer),
        secret.algorithm.name(),
        secret.digits,
        secret.step
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), expected, "{input}");
        }
    }

    #[test]
    fn passwords_hash_and_verify() {
        let rng = SystemRandom::new();
        let hash = hash_password("correct horse", &rng).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horsE"));
        assert!(!verify_password("not a hash", "x"));
        assert!(matches!(hash_password("short", &rng), Err(UserError::Invalid(_))));
    }

    #[test]
    fn otpauth_uri_names_issuer_and_user() {
        let s = TotpSecret::new(b"12345678901234567890".to_vec());
        let uri = otpauth_uri("stepup demo", "alice", &s);
        assert_eq!(
            uri,
            "otpauth://totp/stepup%20demo:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=stepup%20demo&algorithm=SHA1&digits=6&period=30"
        );
    }
}
