//! Security events: what happened to an account that its user, and the
//! operator, should know. Each is kept with the account (shown to the user
//! and by `stepup admin user events`) and written as an audit event
//! (`stepup::audit`), with the client's address, country and user agent
//! when a request caused it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;

use crate::store::{Store, StoredEvent};

/// How long an event is kept: long enough to look back over a year.
pub const EVENT_DAYS: i64 = 400;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A factor was refused at sign-in (a wrong password or code).
    SignInFailed,
    /// Too many refusals: the account (or its codes) locked.
    Locked,
    /// An administrator unlocked the account.
    Unlocked,
    /// A factor was bound to the account.
    FactorAdded,
    /// A factor was taken from the account.
    FactorRemoved,
    /// The password was replaced.
    PasswordChanged,
    /// An administrator disabled the account.
    Disabled,
    /// An administrator enabled the account again.
    Enabled,
    /// A sign-in from a country the user had not signed in from.
    NewCountry,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 9] = [
        EventKind::SignInFailed,
        EventKind::Locked,
        EventKind::Unlocked,
        EventKind::FactorAdded,
        EventKind::FactorRemoved,
        EventKind::PasswordChanged,
        EventKind::Disabled,
        EventKind::Enabled,
        EventKind::NewCountry,
    ];

    /// The name it is stored and logged under.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SignInFailed => "sign_in_failed",
            EventKind::Locked => "locked",
            EventKind::Unlocked => "unlocked",
            EventKind::FactorAdded => "factor_added",
            EventKind::FactorRemoved => "factor_removed",
            EventKind::PasswordChanged => "password_changed",
            EventKind::Disabled => "disabled",
            EventKind::Enabled => "enabled",
            EventKind::NewCountry => "new_country",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// What it means, for the account's user.
    pub fn describe(self) -> &'static str {
        match self {
            EventKind::SignInFailed => "A sign-in failed",
            EventKind::Locked => "Sign-in locked after failed attempts",
            EventKind::Unlocked => "Unlocked by an administrator",
            EventKind::FactorAdded => "Sign-in method added",
            EventKind::FactorRemoved => "Sign-in method removed",
            EventKind::PasswordChanged => "Password changed",
            EventKind::Disabled => "Account disabled by an administrator",
            EventKind::Enabled => "Account enabled again by an administrator",
            EventKind::NewCountry => "Signed in from a new country",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long refused sign-ins are kept (they are many, and old ones say
/// little).
pub const REFUSAL_DAYS: i64 = 30;

/// Keeps an event of `user_id`'s account at `now`, caused by the current
/// request's client if any, and writes it as an audit event. Refused
/// sign-ins are kept as one event per account, address, refusal and hour
/// (counted), for [`REFUSAL_DAYS`]: anyone can cause them. A store failure
/// does not fail what caused the event: it is logged, with the event, as
/// an error.
pub async fn record(store: &Store, user_id: &str, kind: EventKind, detail: &str, now: i64) {
    let client = crate::geo::client();
    let address = client.address.map(|a| a.to_string());
    tracing::info!(
        target: "stepup::audit",
        event = kind.as_str(),
        user = user_id,
        client = address.as_deref().unwrap_or("-"),
        country = client.country.as_deref().unwrap_or("-"),
        detail,
        "security event"
    );
    let refused = kind == EventKind::SignInFailed;
    let id = if refused {
        let key = format!(
            "{user_id}\n{}\n{detail}\n{}",
            address.as_deref().unwrap_or("-"),
            now.div_euclid(3_600)
        );
        URL_SAFE_NO_PAD.encode(digest(&SHA256, key.as_bytes()))
    } else {
        match crate::session::new_secret(&SystemRandom::new()) {
            Some(random) => random,
            None => {
                tracing::error!(
                    event = kind.as_str(),
                    user = user_id,
                    "no randomness: the security event is not kept"
                );
                return;
            }
        }
    };
    let days = if refused { REFUSAL_DAYS } else { EVENT_DAYS };
    let event = StoredEvent {
        id,
        user_id: user_id.to_owned(),
        kind: kind.as_str().to_owned(),
        at: now,
        client_address: address,
        country: client.country,
        user_agent: client.user_agent,
        detail: detail.to_owned(),
        expires_at: now.saturating_add(days * 86_400),
        count: 1,
        seq: next_sequence(),
    };
    if let Err(e) = store.insert_event(&event).await {
        tracing::error!(error = %e, event = kind.as_str(), user = user_id, "the security event is not kept");
    }
}

/// The write a refused sign-in's event makes, made for a name no account
/// has (on a row of no account), so that the answer takes the same time.
pub async fn decoy(store: &Store, now: i64) {
    let event = StoredEvent {
        id: "timing-decoy".to_owned(),
        user_id: "timing-decoy".to_owned(),
        kind: EventKind::SignInFailed.as_str().to_owned(),
        at: now,
        client_address: None,
        country: None,
        user_agent: None,
        detail: String::new(),
        expires_at: now.saturating_add(REFUSAL_DAYS * 86_400),
        count: 1,
        seq: next_sequence(),
    };
    if let Err(e) = store.insert_event(&event).await {
        tracing::error!(error = %e, "the decoy event was not written");
    }
}

/// A number larger than the last one this process gave: the time in
/// microseconds, or one more than the last when the clock did not move.
fn next_sequence() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}
