//! The tokens a client holds: one for ordinary calls, and the elevated ones
//! obtained by step-ups, each kept for the route that asked for it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A token value: never printed, zeroed when dropped.
#[derive(Clone)]
pub(crate) struct Secret(Zeroizing<String>);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// Tokens from one token response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub(crate) access_token: Secret,
    pub(crate) refresh_token: Option<Secret>,
    /// When the access token expires (seconds since the epoch), if said.
    pub expires_at: Option<i64>,
    /// The scopes granted.
    pub scope: Vec<String>,
    /// When the tokens were obtained: about when the user authenticated
    /// for a step-up, which `max_age` counts from.
    pub obtained_at: i64,
    /// Whether the access token is bound to the client's DPoP key (sent
    /// with the `DPoP` scheme and a proof).
    #[serde(default)]
    pub dpop: bool,
}

/// Tokens are taken as expired a little early, so a call does not reach
/// the API just as its token lapses.
const EXPIRY_MARGIN_SECONDS: i64 = 5;

impl TokenSet {
    /// Whether the access token is still worth presenting.
    pub fn is_fresh(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| now < e - EXPIRY_MARGIN_SECONDS)
    }

    /// Whether a refresh token came with it.
    pub fn can_refresh(&self) -> bool {
        self.refresh_token.is_some()
    }
}

/// What a step-up challenge asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// Acceptable levels, in the API's order.
    pub acr_values: Vec<String>,
    /// How recent the authentication must be.
    pub max_age: Option<u64>,
    /// Scopes the API needs beyond the base ones.
    pub scope: Vec<String>,
    /// The transaction to approve (RFC 9396 `authorization_details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Elevated {
    /// `METHOD scheme://host:port/path` of the call that asked for it.
    route: String,
    requirement: Requirement,
    tokens: TokenSet,
}

impl Elevated {
    fn usable(&self, now: i64) -> bool {
        let within_max_age = self
            .requirement
            .max_age
            .is_none_or(|m| now < self.tokens.obtained_at.saturating_add_unsigned(m));
        self.tokens.is_fresh(now) && within_max_age
    }
}

/// All the tokens of a client; serialisable, so a CLI can keep them
/// between runs (in a file only its user can read).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tokens {
    base: Option<TokenSet>,
    #[serde(default)]
    elevated: Vec<Elevated>,
}

impl Tokens {
    /// The tokens for ordinary calls.
    pub fn base(&self) -> Option<&TokenSet> {
        self.base.as_ref()
    }

    pub(crate) fn set_base(&mut self, tokens: TokenSet) {
        self.base = Some(tokens);
    }

    pub(crate) fn clear_base(&mut self) {
        self.base = None;
    }

    /// The elevated token kept for `route`, while usable.
    pub(crate) fn elevated_for(&self, route: &str, now: i64) -> Option<&TokenSet> {
        self.elevated
            .iter()
            .find(|e| e.route == route && e.usable(now))
            .map(|e| &e.tokens)
    }

    /// Keeps an elevated token for `route` (replacing the previous one).
    pub(crate) fn set_elevated(&mut self, route: String, requirement: Requirement, tokens: TokenSet) {
        self.elevated.retain(|e| e.route != route);
        self.elevated.push(Elevated {
            route,
            requirement,
            tokens,
        });
    }

    /// Forgets elevated tokens that expired or outlived their `max_age`.
    pub fn prune(&mut self, now: i64) {
        self.elevated.retain(|e| e.usable(now));
    }

    /// How many elevated tokens are kept.
    pub fn elevated_count(&self) -> usize {
        self.elevated.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(expires_at: Option<i64>, obtained_at: i64) -> TokenSet {
        TokenSet {
            access_token: Secret::new("at".into()),
            refresh_token: None,
            expires_at,
            scope: vec![],
            obtained_at,
            dpop: false,
        }
    }

    #[test]
    fn elevated_tokens_serve_their_route_while_fresh_and_within_max_age() {
        let mut tokens = Tokens::default();
        let requirement = Requirement {
            acr_values: vec!["mfa".into()],
            max_age: Some(60),
            scope: vec![],
            authorization_details: None,
        };
        tokens.set_elevated("POST https://api/p".into(), requirement, set(Some(1_300), 1_000));
        assert!(tokens.elevated_for("POST https://api/p", 1_000).is_some());
        assert!(
            tokens.elevated_for("GET https://api/p", 1_000).is_none(),
            "another route"
        );
        assert!(tokens.elevated_for("POST https://api/p", 1_059).is_some());
        assert!(
            tokens.elevated_for("POST https://api/p", 1_060).is_none(),
            "max_age passed"
        );
        tokens.prune(1_060);
        assert_eq!(tokens.elevated_count(), 0);

        tokens.set_elevated(
            "POST https://api/p".into(),
            Requirement::default(),
            set(Some(1_300), 1_000),
        );
        assert!(tokens.elevated_for("POST https://api/p", 1_294).is_some());
        assert!(
            tokens.elevated_for("POST https://api/p", 1_295).is_none(),
            "expiry, with margin"
        );
    }

    #[test]
    fn tokens_are_never_printed() {
        let t = set(None, 0);
        assert!(!format!("{t:?}").contains("\"at\""));
        let json = serde_json::to_string(&t).unwrap();
        let back: TokenSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.access_token.expose(), "at");
    }
}
