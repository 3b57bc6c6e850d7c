//! ID tokens (OpenID Connect Core §2, §3.1.3.7): what a relying party checks
//! before it believes who signed in.
//!
//! A client that keeps tokens for one account reads `sub` from the ID token
//! of every sign-in and step-up: a step-up that comes back for another
//! account (the browser was signed in as someone else, by the user or by a
//! login CSRF) is refused instead of mixed with the account's tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, SHA384, SHA512, digest};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::access_token::{Audience, numeric_date, optional_numeric_date};
use crate::jwk::{Algorithm, Jwks};
use crate::jws::{AlgorithmSet, JwsError, VerificationPolicy, verify_compact};

/// What the client expects of an ID token.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenExpectations<'a> {
    /// The issuer identifier, exactly (§3.1.3.7 step 2).
    pub issuer: &'a str,
    /// This client's id, which `aud` must contain (step 3).
    pub client_id: &'a str,
    /// The `nonce` sent in the authorization request, if one was (step 11).
    /// `None` on a refresh, whose ID token need not carry one.
    pub nonce: Option<&'a str>,
    /// The access token of the same response: `at_hash`, when present,
    /// must be its hash (§3.1.3.8, §3.3.2.9).
    pub access_token: Option<&'a str>,
    /// Now, in seconds since the epoch.
    pub now: i64,
    /// Tolerated clock difference, in seconds.
    pub leeway_seconds: i64,
}

/// What a verified ID token says of the sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdToken {
    /// Who signed in, as the issuer names them (unique within the issuer).
    pub subject: String,
    /// The level reached, if said.
    pub acr: Option<String>,
    /// How the user authenticated, if said.
    pub amr: Vec<String>,
    /// When the user authenticated, if said.
    pub auth_time: Option<i64>,
}

/// Why an ID token is not believed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// The signature, header or algorithm is not acceptable.
    #[error("ID token: {0}")]
    Jws(#[from] JwsError),
    /// The header names a type an ID token does not have (an access token
    /// or a DPoP proof passed off as one: RFC 8725 §3.11).
    #[error("ID token: typ {0:?} is not JWT")]
    WrongType(String),
    /// The claims are missing or malformed.
    #[error("ID token: malformed claims: {0}")]
    Malformed(String),
    /// `iss` is another issuer.
    #[error("ID token: issued by {0:?}")]
    WrongIssuer(String),
    /// `aud` does not name this client, or `azp` names another.
    #[error("ID token: not issued to this client")]
    WrongAudience,
    /// `exp` has passed.
    #[error("ID token: expired")]
    Expired,
    /// `iat` is in the future.
    #[error("ID token: issued in the future")]
    IssuedInFuture,
    /// `nonce` is missing or is not the one sent.
    #[error("ID token: its nonce is not the one sent")]
    WrongNonce,
    /// `at_hash` is not the hash of the access token it came with.
    #[error("ID token: at_hash does not match the access token")]
    WrongAccessTokenHash,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    #[serde(deserialize_with = "numeric_date")]
    exp: i64,
    #[serde(deserialize_with = "numeric_date")]
    iat: i64,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    at_hash: Option<String>,
    #[serde(default)]
    acr: Option<String>,
    #[serde(default)]
    amr: Vec<String>,
    #[serde(default, deserialize_with = "optional_numeric_date")]
    auth_time: Option<i64>,
}

/// Verifies `token` with the issuer's `keys`, signed with one of
/// `algorithms`, against `expected` (OpenID Connect Core §3.1.3.7).
pub fn verify(
    token: &str,
    keys: &Jwks,
    algorithms: AlgorithmSet,
    expected: &IdTokenExpectations<'_>,
) -> Result<IdToken, IdTokenError> {
    let verified = verify_compact(token, keys, &VerificationPolicy::new(algorithms.iter(), None))?;
    let (header, payload) = verified.into_parts();
    if let Some(typ) = header.typ()
        && !typ.eq_ignore_ascii_case("JWT")
        && !typ.eq_ignore_ascii_case("application/jwt")
    {
        return Err(IdTokenError::WrongType(typ.to_owned()));
    }
    let claims: Claims =
        serde_json::from_slice(&payload).map_err(|e| IdTokenError::Malformed(e.to_string()))?;
    if claims.iss != expected.issuer {
        return Err(IdTokenError::WrongIssuer(claims.iss));
    }
    if !claims.aud.contains(expected.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    // Several audiences: `azp` says which party it was issued to (§2).
    let several = matches!(&claims.aud, Audience::Many(list) if list.len() > 1);
    match claims.azp.as_deref() {
        Some(azp) if azp != expected.client_id => return Err(IdTokenError::WrongAudience),
        None if several => return Err(IdTokenError::WrongAudience),
        _ => {}
    }
    if claims.exp.saturating_add(expected.leeway_seconds) <= expected.now {
        return Err(IdTokenError::Expired);
    }
    if claims.iat > expected.now.saturating_add(expected.leeway_seconds) {
        return Err(IdTokenError::IssuedInFuture);
    }
    if let Some(sent) = expected.nonce {
        let got = claims.nonce.as_deref().unwrap_or_default();
        if !bool::from(got.as_bytes().ct_eq(sent.as_bytes())) {
            return Err(IdTokenError::WrongNonce);
        }
    }
    if let (Some(hash), Some(access_token)) = (&claims.at_hash, expected.access_token)
        && !bool::from(
            hash.as_bytes()
                .ct_eq(at_hash(header.alg(), access_token).as_bytes()),
        )
    {
        return Err(IdTokenError::WrongAccessTokenHash);
    }
    if claims.sub.is_empty() {
        return Err(IdTokenError::Malformed("sub is empty".to_owned()));
    }
    Ok(IdToken {
        subject: claims.sub,
        acr: claims.acr,
        amr: claims.amr,
        auth_time: claims.auth_time,
    })
}

/// `at_hash` (OpenID Connect Core §3.1.3.6): the left half of the hash of
/// the access token, with the hash of the ID token's algorithm (SHA-512
/// for Ed25519, as the OpenID Foundation's suite does).
pub fn at_hash(alg: Algorithm, access_token: &str) -> String {
    let hash = match alg {
        Algorithm::EdDSA => &SHA512,
        Algorithm::ES384 => &SHA384,
        Algorithm::ES256 | Algorithm::RS256 | Algorithm::PS256 => &SHA256,
    };
    let d = digest(hash, access_token.as_bytes());
    let bytes = d.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwk::Jwk;
    use crate::jws::{SigningHeader, SigningKey, sign_compact};
    use ring::rand::SystemRandom;
    use serde_json::{Value, json};

    /// OpenID Connect Core §A.3: the at_hash of its example access token.
    #[test]
    fn at_hash_of_the_oidc_example() {
        assert_eq!(
            at_hash(Algorithm::ES256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(at_hash(Algorithm::ES384, "x").len(), 32, "half of SHA-384");
        assert_eq!(at_hash(Algorithm::EdDSA, "x").len(), 43, "half of SHA-512");
    }

    struct Issuer {
        key: SigningKey,
        keys: Jwks,
        rng: SystemRandom,
    }

    impl Issuer {
        fn new() -> Self {
            let rng = SystemRandom::new();
            let key = SigningKey::generate_es256(&rng).unwrap();
            let jwk = Jwk::from_json_value(&key.public_jwk(Some("k1"))).unwrap();
            Self {
                key,
                keys: Jwks::from_keys(vec![jwk]),
                rng,
            }
        }

        fn sign(&self, typ: &str, claims: &Value) -> String {
            let header = SigningHeader::new().typ(typ).kid("k1");
            sign_compact(&header, claims.to_string().as_bytes(), &self.key, &self.rng).unwrap()
        }
    }

    fn claims() -> Value {
        json!({
            "iss": "https://as.example",
            "sub": "alice",
            "aud": "cli",
            "exp": 2_000,
            "iat": 1_000,
            "nonce": "n-0S6",
            "acr": "urn:stepup:acr:mfa",
            "amr": ["pwd", "otp"],
            "auth_time": 990,
            "at_hash": at_hash(Algorithm::ES256, "the-access-token"),
        })
    }

    fn expected() -> IdTokenExpectations<'static> {
        IdTokenExpectations {
            issuer: "https://as.example",
            client_id: "cli",
            nonce: Some("n-0S6"),
            access_token: Some("the-access-token"),
            now: 1_100,
            leeway_seconds: 30,
        }
    }

    fn check(
        issuer: &Issuer,
        typ: &str,
        claims: &Value,
        expected: &IdTokenExpectations<'_>,
    ) -> Result<IdToken, IdTokenError> {
        verify(
            &issuer.sign(typ, claims),
            &issuer.keys,
            AlgorithmSet::all(),
            expected,
        )
    }

    #[test]
    fn a_good_id_token_names_who_signed_in() {
        let issuer = Issuer::new();
        let token = check(&issuer, "JWT", &claims(), &expected()).unwrap();
        assert_eq!(token.subject, "alice");
        assert_eq!(token.acr.as_deref(), Some("urn:stepup:acr:mfa"));
        assert_eq!(token.amr, ["pwd", "otp"]);
        assert_eq!(token.auth_time, Some(990));
        // A refresh: no nonce expected, none checked.
        let mut c = claims();
        c.as_object_mut().unwrap().remove("nonce");
        let refresh = IdTokenExpectations {
            nonce: None,
            ..expected()
        };
        assert!(check(&issuer, "JWT", &c, &refresh).is_ok());
        // Two audiences, with azp naming this client.
        let mut c = claims();
        c["aud"] = json!(["cli", "other"]);
        c["azp"] = json!("cli");
        assert!(check(&issuer, "JWT", &c, &expected()).is_ok());
    }

    #[test]
    fn each_check_refuses_what_it_is_for() {
        let issuer = Issuer::new();
        let refused = |edit: &dyn Fn(&mut Value), typ: &str, expected: &IdTokenExpectations<'_>| {
            let mut c = claims();
            edit(&mut c);
            check(&issuer, typ, &c, expected).unwrap_err()
        };
        let e = expected();
        assert_eq!(
            refused(&|c| c["iss"] = json!("https://evil.example"), "JWT", &e),
            IdTokenError::WrongIssuer("https://evil.example".into())
        );
        assert_eq!(
            refused(&|c| c["aud"] = json!("other"), "JWT", &e),
            IdTokenError::WrongAudience
        );
        assert_eq!(
            refused(&|c| c["aud"] = json!(["cli", "other"]), "JWT", &e),
            IdTokenError::WrongAudience,
            "several audiences and no azp"
        );
        assert_eq!(
            refused(&|c| c["azp"] = json!("other"), "JWT", &e),
            IdTokenError::WrongAudience
        );
        assert_eq!(
            refused(&|c| c["exp"] = json!(1_070), "JWT", &e),
            IdTokenError::Expired
        );
        assert_eq!(
            refused(&|c| c["iat"] = json!(1_131), "JWT", &e),
            IdTokenError::IssuedInFuture
        );
        assert_eq!(
            refused(&|c| c["nonce"] = json!("other"), "JWT", &e),
            IdTokenError::WrongNonce
        );
        assert_eq!(
            refused(&|c| drop(c.as_object_mut().unwrap().remove("nonce")), "JWT", &e),
            IdTokenError::WrongNonce
        );
        assert_eq!(
            refused(
                &|c| c["at_hash"] = json!(at_hash(Algorithm::ES256, "another")),
                "JWT",
                &e
            ),
            IdTokenError::WrongAccessTokenHash
        );
        assert_eq!(
            refused(&|_| {}, "at+jwt", &e),
            IdTokenError::WrongType("at+jwt".into()),
            "an access token is not an ID token"
        );
        assert!(matches!(
            refused(&|c| c["sub"] = json!(""), "JWT", &e),
            IdTokenError::Malformed(_)
        ));
        assert!(matches!(
            refused(&|c| drop(c.as_object_mut().unwrap().remove("sub")), "JWT", &e),
            IdTokenError::Malformed(_)
        ));
        // Signed by another key, or with an algorithm not allowed.
        let other = Issuer::new();
        let token = other.sign("JWT", &claims());
        assert!(matches!(
            verify(&token, &issuer.keys, AlgorithmSet::all(), &e),
            Err(IdTokenError::Jws(_))
        ));
        let token = issuer.sign("JWT", &claims());
        let only_eddsa = AlgorithmSet::empty().with(Algorithm::EdDSA);
        assert!(matches!(
            verify(&token, &issuer.keys, only_eddsa, &e),
            Err(IdTokenError::Jws(_))
        ));
    }
}
