//! Verifying access tokens: JWTs against the issuer's keys (RFC 9068,
//! RFC 7515), or opaque tokens through introspection (RFC 7662).

use std::sync::Arc;

use serde::Deserialize;
use stepup_core::access_token::{AccessTokenClaims, Audience, ClaimsError, ClaimsRules, Confirmation};
use stepup_core::jwk::Algorithm;
use stepup_core::jws::{JwsError, VerificationPolicy, verify_compact};
use stepup_core::{ClientSecret, TokenFacts, UnixTime};
use thiserror::Error;

use crate::fetch::{FetchError, HttpFetcher};
use crate::jwks::KeySource;

/// What the guard learned from a valid token; handlers read it through the
/// [`crate::VerifiedClaims`] extractor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifiedToken {
    /// `iss`.
    pub issuer: Option<String>,
    /// `sub`.
    pub subject: Option<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// Space-delimited scopes.
    pub scope: Option<String>,
    /// `acr`.
    pub acr: Option<String>,
    /// `amr`.
    pub amr: Vec<String>,
    /// `auth_time`.
    pub auth_time: Option<i64>,
    /// `exp`.
    pub expires_at: Option<i64>,
    /// `jti`.
    pub token_id: Option<String>,
    /// `cnf`.
    pub confirmation: Option<Confirmation>,
    /// `auth_country`: where the user authenticated.
    pub auth_country: Option<String>,
    /// `device_id`: the device the token was issued to.
    pub device_id: Option<String>,
    /// `authorization_details`: the transaction the token was approved for.
    pub authorization_details: Option<stepup_core::json::Json>,
}

impl VerifiedToken {
    /// The thumbprint of the key the token is bound to (`cnf.jkt`).
    pub fn bound_jkt(&self) -> Option<&str> {
        self.confirmation.as_ref().and_then(|c| c.jkt.as_deref())
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

impl From<AccessTokenClaims> for VerifiedToken {
    fn from(c: AccessTokenClaims) -> Self {
        Self {
            issuer: Some(c.iss),
            subject: Some(c.sub.as_str().to_owned()),
            client_id: Some(c.client_id.as_str().to_owned()),
            scope: c.scope,
            acr: c.acr,
            amr: c.amr.unwrap_or_default(),
            auth_time: c.auth_time,
            expires_at: Some(c.exp),
            token_id: Some(c.jti),
            confirmation: c.cnf,
            auth_country: c.auth_country,
            device_id: c.device_id,
            authorization_details: c.authorization_details,
        }
    }
}

/// Why a token was not accepted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Signature, header or key problems.
    #[error("invalid token: {0}")]
    Jws(#[from] JwsError),
    /// Claims missing, malformed, expired, for another audience...
    #[error("invalid token: {0}")]
    Claims(#[from] ClaimsError),
    /// The introspection endpoint says the token is not active.
    #[error("token is not active")]
    Inactive,
    /// The token is bound to a key (`cnf`, RFC 7800) but came as a plain
    /// bearer token: RFC 9449 §7.2 forbids accepting it so.
    #[error("sender-constrained token presented without proof of possession")]
    SenderConstrained,
    /// Introspection says this is not an access token (e.g. a refresh token).
    #[error("not an access token (token_type {0:?})")]
    NotAnAccessToken(String),
    /// The keys or the introspection endpoint could not be reached: not the
    /// client's fault, answered with 503 rather than `invalid_token`.
    #[error("token verification unavailable: {0}")]
    Unavailable(#[from] FetchError),
}

impl VerifyError {
    /// Whether the token itself is at fault (as opposed to our dependencies).
    pub fn is_token_fault(&self) -> bool {
        !matches!(self, VerifyError::Unavailable(_))
    }

    /// A description safe to send to the client.
    pub fn public_description(&self) -> String {
        match self {
            VerifyError::Jws(JwsError::UnknownKey { .. }) => "token signed with an unknown key".into(),
            VerifyError::Jws(_) => "token signature or header invalid".into(),
            VerifyError::Claims(e) => e.to_string(),
            VerifyError::Inactive => "token is not active".into(),
            VerifyError::SenderConstrained => {
                "the token is bound to a key (cnf); present it with proof of possession".into()
            }
            VerifyError::NotAnAccessToken(_) => "not an access token".into(),
            VerifyError::Unavailable(_) => "token verification temporarily unavailable".into(),
        }
    }
}

/// Verifies JWT access tokens with keys from a JWKS.
#[derive(Debug)]
pub struct JwtVerifier {
    keys: KeySource,
    rules: ClaimsRules,
    jws: VerificationPolicy,
}

impl JwtVerifier {
    /// A verifier for tokens of `rules.issuer` for `rules.audience`, with
    /// `typ` `at+jwt` required (RFC 9068 §4) and the given algorithms allowed.
    pub fn new(keys: KeySource, rules: ClaimsRules, jws: VerificationPolicy) -> Self {
        Self { keys, rules, jws }
    }

    /// A verifier for an issuer found by discovery (RFC 8414, then OpenID
    /// Connect Discovery), with its `jwks_uri` refetched at most once a
    /// minute on an unknown `kid`, every asymmetric algorithm stepup supports
    /// allowed, `typ` `at+jwt` required, and 30 s of clock leeway.
    pub async fn from_issuer(issuer: &str, audience: &str, http: HttpFetcher) -> Result<Self, FetchError> {
        let verifier = Self::for_issuer(issuer, audience, http);
        verifier.load_keys().await?;
        Ok(verifier)
    }

    /// [`JwtVerifier::from_issuer`] without I/O: discovery and the key set
    /// are fetched by the first token, or by [`JwtVerifier::load_keys`].
    /// Until then tokens are refused as unverifiable (the guard answers
    /// 503, not 401: the token may be good).
    pub fn for_issuer(issuer: &str, audience: &str, http: HttpFetcher) -> Self {
        let keys = KeySource::discovered(issuer, http, std::time::Duration::from_secs(60));
        Self::with_keys(keys, issuer, audience)
    }

    /// [`JwtVerifier::for_issuer`] with the key set at `jwks_uri` (no
    /// discovery), fetched by the first token or [`JwtVerifier::load_keys`].
    pub fn for_jwks_uri(jwks_uri: &str, issuer: &str, audience: &str, http: HttpFetcher) -> Self {
        let keys = KeySource::at_url(jwks_uri, http, std::time::Duration::from_secs(60));
        Self::with_keys(keys, issuer, audience)
    }

    fn with_keys(keys: KeySource, issuer: &str, audience: &str) -> Self {
        let rules = ClaimsRules {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_seconds: 30,
        };
        Self::new(keys, rules, VerificationPolicy::access_token(Algorithm::ALL))
    }

    /// Fetches the signing keys now (discovering the issuer first if needed).
    pub async fn load_keys(&self) -> Result<(), FetchError> {
        self.keys.load().await
    }

    /// Whether signing keys were fetched.
    pub fn keys_loaded(&self) -> bool {
        self.keys.is_loaded()
    }

    /// Verifies a token's signature and claims at `now`.
    pub async fn verify(&self, token: &str, now: UnixTime) -> Result<VerifiedToken, VerifyError> {
        self.keys.refresh_if_stale().await;
        let jwks = self.keys.current();
        let verified = match verify_compact(token, &jwks, &self.jws) {
            Err(JwsError::UnknownKey { .. }) => {
                // The issuer may have rotated its keys: refetch (rate-limited) and retry once.
                let refreshed = self.keys.refresh_for_unknown_key().await?;
                verify_compact(token, &refreshed, &self.jws)?
            }
            other => other?,
        };
        let claims = AccessTokenClaims::from_json(verified.payload())?;
        self.rules.validate(&claims, now)?;
        Ok(claims.into())
    }

    /// The verification for an already-fetched key set, without any I/O.
    pub fn verify_offline(&self, token: &str, now: UnixTime) -> Result<VerifiedToken, VerifyError> {
        let verified = verify_compact(token, &self.keys.current(), &self.jws)?;
        let claims = AccessTokenClaims::from_json(verified.payload())?;
        self.rules.validate(&claims, now)?;
        Ok(claims.into())
    }
}

/// Client credentials for the introspection endpoint (`client_secret_basic`).
#[derive(Debug)]
pub struct IntrospectionClient {
    /// The resource server's client id at the authorization server.
    pub client_id: String,
    secret: ClientSecret,
}

impl IntrospectionClient {
    /// Credentials for HTTP Basic authentication at the endpoint.
    pub fn new(client_id: impl Into<String>, secret: ClientSecret) -> Self {
        Self {
            client_id: client_id.into(),
            secret,
        }
    }
}

/// An RFC 7662 introspection response (the members the guard uses).
#[derive(Debug, Deserialize)]
struct IntrospectionResponse {
    active: bool,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    acr: Option<String>,
    #[serde(default)]
    amr: Option<Vec<String>>,
    #[serde(default)]
    auth_time: Option<i64>,
    #[serde(default)]
    cnf: Option<Confirmation>,
    #[serde(default)]
    auth_country: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    authorization_details: Option<stepup_core::json::Json>,
}

/// Verifies opaque tokens at an RFC 7662 introspection endpoint.
#[derive(Debug)]
pub struct Introspector {
    endpoint: String,
    client: IntrospectionClient,
    rules: ClaimsRules,
    http: HttpFetcher,
    /// Longest time a positive answer is reused, in seconds: the window in
    /// which a revoked token can still pass.
    pub max_cache_seconds: i64,
    in_flight: tokio::sync::Semaphore,
}

/// Longer opaque tokens are refused without asking the authorization server.
pub const MAX_INTROSPECTED_TOKEN_LEN: usize = 4096;

/// Introspection calls allowed in flight at once; more get 503.
pub const MAX_INTROSPECTIONS_IN_FLIGHT: usize = 64;

impl Introspector {
    /// An introspector for `endpoint`.
    pub fn new(
        endpoint: impl Into<String>,
        client: IntrospectionClient,
        rules: ClaimsRules,
        http: HttpFetcher,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            client,
            rules,
            http,
            max_cache_seconds: 30,
            in_flight: tokio::sync::Semaphore::new(MAX_INTROSPECTIONS_IN_FLIGHT),
        }
    }

    /// Asks the authorization server about a token.
    pub async fn verify(&self, token: &str, now: UnixTime) -> Result<VerifiedToken, VerifyError> {
        // Every unknown token costs a call to the authorization server: refuse
        // absurd ones before that, and bound how many calls are in flight.
        if token.len() > MAX_INTROSPECTED_TOKEN_LEN {
            return Err(ClaimsError::Malformed("token too long".into()).into());
        }
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| FetchError::BadResponse("too many introspection requests in flight".into()))?;
        let body = self
            .http
            .post_form(
                &self.endpoint,
                (&self.client.client_id, self.client.secret.expose_secret()),
                &[("token", token), ("token_type_hint", "access_token")],
            )
            .await?;
        let r: IntrospectionResponse = serde_json::from_slice(&body)
            .map_err(|e| FetchError::BadResponse(format!("introspection response: {e}")))?;
        if !r.active {
            return Err(VerifyError::Inactive);
        }
        // RFC 7662 makes most members optional; check those present against
        // the same rules as a JWT, and require the ones the guard relies on.
        if r.iss.as_deref().is_some_and(|iss| iss != self.rules.issuer) {
            return Err(ClaimsError::WrongIssuer.into());
        }
        // RFC 7662 makes `aud` optional, but a token without one could be for
        // any resource server of the same issuer: require it, as RFC 9068
        // does for JWTs.
        if !r
            .aud
            .as_ref()
            .is_some_and(|aud| aud.contains(&self.rules.audience))
        {
            return Err(ClaimsError::WrongAudience.into());
        }
        if let Some(kind) = r
            .token_type
            .as_deref()
            .filter(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(VerifyError::NotAnAccessToken(kind.chars().take(40).collect()));
        }
        let leeway = i64::from(self.rules.leeway_seconds);
        let Some(exp) = r.exp else {
            return Err(ClaimsError::Malformed("introspection response without exp".into()).into());
        };
        if exp.saturating_add(leeway) <= now.seconds() {
            return Err(ClaimsError::Expired.into());
        }
        if r.nbf
            .is_some_and(|nbf| nbf > now.seconds().saturating_add(leeway))
        {
            return Err(ClaimsError::NotYetValid.into());
        }
        if r.auth_time
            .is_some_and(|t| t > now.seconds().saturating_add(leeway))
        {
            return Err(ClaimsError::AuthTimeInFuture.into());
        }
        Ok(VerifiedToken {
            issuer: r.iss,
            subject: r.sub,
            client_id: r.client_id,
            scope: r.scope,
            acr: r.acr,
            amr: r.amr.unwrap_or_default(),
            auth_time: r.auth_time,
            expires_at: Some(exp),
            token_id: r.jti,
            confirmation: r.cnf,
            auth_country: r.auth_country,
            device_id: r.device_id,
            authorization_details: r.authorization_details,
        })
    }
}

/// How the guard verifies tokens.
#[derive(Debug, Clone)]
pub enum TokenVerifier {
    /// JWT access tokens checked locally against the issuer's JWKS.
    Jwt(Arc<JwtVerifier>),
    /// Opaque tokens checked by introspection.
    Introspection(Arc<Introspector>),
}

impl TokenVerifier {
    /// Verifies a token at `now`.
    pub async fn verify(&self, token: &str, now: UnixTime) -> Result<VerifiedToken, VerifyError> {
        let verified = match self {
            TokenVerifier::Jwt(v) => v.verify(token, now).await?,
            TokenVerifier::Introspection(v) => v.verify(token, now).await?,
        };
        // A key-bound token is checked with its DPoP proof by the guard,
        // which refuses it as a bearer token (RFC 9449 §7.2).
        Ok(verified)
    }

    /// Until when a verified result may be reused.
    pub(crate) fn cache_until(&self, verified: &VerifiedToken, now: UnixTime) -> i64 {
        let exp = verified.expires_at.unwrap_or(now.seconds());
        match self {
            TokenVerifier::Jwt(_) => exp,
            TokenVerifier::Introspection(v) => exp.min(now.seconds().saturating_add(v.max_cache_seconds)),
        }
    }
}
