//! JWT access-token claims (RFC 9068 §2.2) and their validation
//! (RFC 9068 §4, RFC 7519 §4.1), plus the authentication facts the policy
//! reads (`acr`, `amr`, `auth_time`: RFC 9068 §2.2.1, OpenID Connect Core §2).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::time::UnixTime;

/// The `sub` claim: who the token is about.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    /// Wraps a subject identifier.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({})", self.0)
    }
}

/// The `client_id` claim: the client the token was issued to.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    /// Wraps a client identifier.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", self.0)
    }
}

/// The `aud` claim: one audience or several (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience string.
    One(String),
    /// An array of audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `wanted` is one of the audiences.
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(list) => list.iter().any(|a| a == wanted),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::One(a) => Ok(Audience::One(a)),
            Raw::Many(list) if list.is_empty() => {
                Err(serde::de::Error::custom("aud must not be an empty array"))
            }
            Raw::Many(list) => Ok(Audience::Many(list)),
        }
    }
}

/// The `cnf` claim (RFC 7800), as used by DPoP (RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// SHA-256 JWK thumbprint of the key the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
}

/// The claims of a JWT access token (RFC 9068 §2.2).
///
/// Deserialising fails when a claim RFC 9068 requires is missing
/// (`iss`, `exp`, `aud`, `sub`, `client_id`, `iat`, `jti`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: Subject,
    /// Audience(s).
    pub aud: Audience,
    /// Expiry.
    #[serde(deserialize_with = "numeric_date")]
    pub exp: i64,
    /// Issued at.
    #[serde(deserialize_with = "numeric_date")]
    pub iat: i64,
    /// Not before.
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    /// Token identifier.
    pub jti: String,
    /// The client the token was issued to.
    pub client_id: ClientId,
    /// Space-delimited scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Authentication context class reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// Authentication methods references.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<Vec<String>>,
    /// When the user authenticated.
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub auth_time: Option<i64>,
    /// Key confirmation (sender-constrained tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// The country where the user authenticated (ISO 3166-1 alpha-2), as
    /// the authorization server saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_country: Option<String>,
    /// The device the token was issued to, when it is not bound by `cnf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The transaction the token was issued for (RFC 9396 §9.1), read
    /// exactly: its numbers as written, to be compared with a request's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<crate::json::Json>,
}

/// RFC 7519 §2 allows non-integer NumericDates; whole seconds are all the
/// rules need, so fractions are truncated toward the past.
pub(crate) fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    number_to_seconds(&n)
        .ok_or_else(|| serde::de::Error::custom("expected a NumericDate (seconds since the epoch)"))
}

pub(crate) fn optional_numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    numeric_date(d).map(Some)
}

fn number_to_seconds(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // Reject values beyond the range of i64 rather than saturating silently.
    if f.is_finite() && f.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        Some(f.floor() as i64)
    } else {
        None
    }
}

/// Why a token's claims are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The payload is not a JSON object with the required claims.
    #[error("malformed claims: {0}")]
    Malformed(String),
    /// `iss` is not the configured issuer.
    #[error("token issued by an unexpected issuer")]
    WrongIssuer,
    /// `aud` does not include this resource server.
    #[error("token not intended for this audience")]
    WrongAudience,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future.
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `auth_time` is in the future.
    #[error("authentication time is in the future")]
    AuthTimeInFuture,
}

/// What a resource server expects of every access token.
#[derive(Debug, Clone)]
pub struct ClaimsRules {
    /// The exact `iss` value (RFC 9068 §4: MUST match).
    pub issuer: String,
    /// This resource server's identifier, which `aud` must contain.
    pub audience: String,
    /// Tolerated clock difference, in seconds, for `exp`, `nbf`, `iat` and `auth_time`.
    pub leeway_seconds: u32,
}

impl AccessTokenClaims {
    /// Parses a JWT payload.
    pub fn from_json(payload: &[u8]) -> Result<Self, ClaimsError> {
        serde_json::from_slice(payload).map_err(|e| ClaimsError::Malformed(e.to_string()))
    }

    /// The facts the policy decides on.
    pub fn facts(&self) -> TokenFacts<'_> {
        TokenFacts {
            acr: self.acr.as_deref(),
            auth_time: self.auth_time.map(UnixTime),
            scope: self.scope.as_deref(),
        }
    }
}

impl ClaimsRules {
    /// Checks issuer, audience and the time claims at `now`.
    pub fn validate(&self, claims: &AccessTokenClaims, now: UnixTime) -> Result<(), ClaimsError> {
        if claims.iss != self.issuer {
            return Err(ClaimsError::WrongIssuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(ClaimsError::WrongAudience);
        }
        let leeway = i64::from(self.leeway_seconds);
        let now = now.seconds();
        if claims.exp.saturating_add(leeway) <= now {
            return Err(ClaimsError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(ClaimsError::NotYetValid);
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(ClaimsError::IssuedInFuture);
        }
        if claims.auth_time.is_some_and(|t| t > now.saturating_add(leeway)) {
            return Err(ClaimsError::AuthTimeInFuture);
        }
        Ok(())
    }
}

/// The parts of a verified token the policy looks at, whatever the token's
/// form (JWT claims or an introspection response).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenFacts<'a> {
    /// The `acr` the user authenticated at.
    pub acr: Option<&'a str>,
    /// When the user authenticated.
    pub auth_time: Option<UnixTime>,
    /// Space-delimited granted scopes.
    pub scope: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_json() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://as.example",
            "sub": "alice",
            "aud": "https://api.example",
            "exp": 2000,
            "iat": 1000,
            "jti": "j1",
            "client_id": "web",
            "scope": "openid accounts:read",
            "acr": "urn:stepup:acr:mfa",
            "amr": ["pwd", "otp"],
            "auth_time": 990,
            "cnf": {"jkt": "abc"}
        })
    }

    fn rules() -> ClaimsRules {
        ClaimsRules {
            issuer: "https://as.example".into(),
            audience: "https://api.example".into(),
            leeway_seconds: 30,
        }
    }

    fn parse(v: &serde_json::Value) -> Result<AccessTokenClaims, ClaimsError> {
        AccessTokenClaims::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn parses_rfc9068_claims() {
        let c = parse(&claims_json()).unwrap();
        assert_eq!(c.sub.as_str(), "alice");
        assert_eq!(c.facts().acr, Some("urn:stepup:acr:mfa"));
        assert_eq!(c.facts().auth_time, Some(UnixTime(990)));
        assert_eq!(c.cnf.unwrap().jkt.as_deref(), Some("abc"));
        assert!(
            rules()
                .validate(&parse(&claims_json()).unwrap(), UnixTime(1500))
                .is_ok()
        );
    }

    #[test]
    fn each_required_claim_is_required() {
        for missing in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"] {
            let mut v = claims_json();
            v.as_object_mut().unwrap().remove(missing);
            let err = parse(&v).unwrap_err();
            assert!(
                matches!(err, ClaimsError::Malformed(ref m) if m.contains(missing)),
                "{missing}: {err}"
            );
        }
    }

    #[test]
    fn malformed_values_are_rejected() {
        for (k, bad) in [
            ("exp", serde_json::json!("2000")),
            ("aud", serde_json::json!([])),
            ("aud", serde_json::json!(5)),
            ("iat", serde_json::json!(1e300)),
            ("amr", serde_json::json!("pwd")),
        ] {
            let mut v = claims_json();
            v[k] = bad;
            assert!(parse(&v).is_err(), "{k}");
        }
        assert!(AccessTokenClaims::from_json(b"[1]").is_err());
        assert!(AccessTokenClaims::from_json(b"not json").is_err());
    }

    #[test]
    fn fractional_dates_and_audience_arrays() {
        let mut v = claims_json();
        v["exp"] = serde_json::json!(2000.9);
        v["aud"] = serde_json::json!(["other", "https://api.example"]);
        let c = parse(&v).unwrap();
        assert_eq!(c.exp, 2000);
        assert!(rules().validate(&c, UnixTime(1500)).is_ok());
    }

    #[test]
    fn validation_checks_each_rule() {
        let base = parse(&claims_json()).unwrap();
        let r = rules();
        let mut c = base.clone();
        c.iss = "https://evil.example".into();
        assert_eq!(r.validate(&c, UnixTime(1500)), Err(ClaimsError::WrongIssuer));
        let mut c = base.clone();
        c.aud = Audience::One("https://other.example".into());
        assert_eq!(r.validate(&c, UnixTime(1500)), Err(ClaimsError::WrongAudience));
        // Expiry honours the leeway, and expires exactly at exp + leeway.
        assert!(r.validate(&base, UnixTime(2029)).is_ok());
        assert_eq!(r.validate(&base, UnixTime(2030)), Err(ClaimsError::Expired));
        let mut c = base.clone();
        c.nbf = Some(1600);
        assert_eq!(r.validate(&c, UnixTime(1500)), Err(ClaimsError::NotYetValid));
        assert!(r.validate(&c, UnixTime(1570)).is_ok());
        assert_eq!(r.validate(&base, UnixTime(960)), Err(ClaimsError::IssuedInFuture));
        let mut c = base;
        c.auth_time = Some(1600);
        assert_eq!(r.validate(&c, UnixTime(1500)), Err(ClaimsError::AuthTimeInFuture));
    }
}
