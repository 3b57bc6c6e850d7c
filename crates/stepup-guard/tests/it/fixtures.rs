//! Keys, tokens and a guarded axum app, built with real keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, Response};
use http_body_util::BodyExt;
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use stepup_core::access_token::ClaimsRules;
use stepup_core::jwk::{Algorithm, Jwks};
use stepup_core::jws::{SigningHeader, SigningKey, VerificationPolicy, sign_compact};
use stepup_core::{Policy, UnixTime};
use stepup_guard::{Clock, Guard, JwtVerifier, KeySource, TokenVerifier, VerifiedClaims};
use tower::ServiceExt;

pub const ISSUER: &str = "https://as.example";
pub const AUDIENCE: &str = "https://api.example";
pub const NOW: i64 = 1_800_000_000;
pub const PWD: &str = "urn:stepup:acr:pwd";
pub const MFA: &str = "urn:stepup:acr:mfa";
pub const PHR: &str = "urn:stepup:acr:phr";

pub const POLICY: &str = r#"
levels = [
  { name = "pwd", acr = "urn:stepup:acr:pwd" },
  { name = "mfa", acr = "urn:stepup:acr:mfa" },
  { name = "phr", acr = "urn:stepup:acr:phr" },
]
[default]
acr = ["pwd"]

[[route]]
name = "read balance"
methods = ["GET"]
path = "/accounts/{id}/balance"
scope = ["accounts:read"]

[[route]]
name = "add payee"
methods = ["POST"]
path = "/accounts/{id}/payees"
acr = ["mfa"]
max_age = 300
scope = ["payments:write"]

[[route]]
name = "large transfer"
methods = ["POST"]
path = "/accounts/{id}/transfers/large"
acr = ["phr"]
max_age = 60
"#;

/// A clock tests can move.
#[derive(Debug, Default)]
pub struct TestClock(pub AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

pub struct Issuer {
    pub key: SigningKey,
    pub kid: String,
    pub rng: SystemRandom,
}

impl Issuer {
    pub fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let key = SigningKey::generate_es256(&rng).unwrap();
        Self {
            key,
            kid: kid.into(),
            rng,
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let key = SigningKey::generate_ed25519(&rng).unwrap();
        Self {
            key,
            kid: kid.into(),
            rng,
        }
    }

    pub fn jwks_json(&self) -> Value {
        json!({ "keys": [self.key.public_jwk(Some(&self.kid))] })
    }

    pub fn jwks(&self) -> Jwks {
        Jwks::from_json(self.jwks_json().to_string().as_bytes()).unwrap()
    }

    /// Signs claims as an RFC 9068 access token.
    pub fn mint(&self, claims: &Value) -> String {
        self.mint_with(claims, Some("at+jwt"), Some(&self.kid))
    }

    pub fn mint_with(&self, claims: &Value, typ: Option<&str>, kid: Option<&str>) -> String {
        let mut header = SigningHeader::new();
        if let Some(t) = typ {
            header = header.typ(t);
        }
        if let Some(k) = kid {
            header = header.kid(k);
        }
        sign_compact(&header, claims.to_string().as_bytes(), &self.key, &self.rng).unwrap()
    }
}

/// Claims of a token issued at NOW - 10 after a login at `auth_age` seconds ago.
pub fn claims(acr: &str, auth_age: i64, scope: &str) -> Value {
    json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": AUDIENCE,
        "exp": NOW + 600,
        "iat": NOW - 10,
        "jti": format!("jti-{acr}-{auth_age}-{scope}"),
        "client_id": "bank-web",
        "scope": scope,
        "acr": acr,
        "amr": ["pwd"],
        "auth_time": NOW - auth_age,
    })
}

pub fn rules() -> ClaimsRules {
    ClaimsRules {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_seconds: 5,
    }
}

pub fn policy() -> Arc<Policy> {
    Arc::new(Policy::from_toml("test-policy.toml", POLICY).unwrap())
}

pub fn jwt_verifier(keys: KeySource) -> TokenVerifier {
    TokenVerifier::Jwt(Arc::new(JwtVerifier::new(
        keys,
        rules(),
        VerificationPolicy::access_token([Algorithm::ES256, Algorithm::EdDSA]),
    )))
}

pub fn guard_for(issuer: &Issuer, clock: Arc<TestClock>) -> Guard {
    Guard::builder(policy(), jwt_verifier(KeySource::fixed(issuer.jwks())))
        .clock(clock)
        .realm("bank")
        .build()
}

async fn whoami(claims: VerifiedClaims) -> String {
    format!(
        "{} {}",
        claims.subject.as_deref().unwrap_or("-"),
        claims.acr.as_deref().unwrap_or("-")
    )
}

/// Three sensitivities: default (pwd), balance (pwd + scope), payee (mfa, 300 s), large transfer (phr, 60 s).
pub fn app(guard: &Guard) -> Router {
    Router::new()
        .route("/accounts/{id}", get(whoami))
        .route("/accounts/{id}/balance", get(whoami))
        .route("/accounts/{id}/payees", post(whoami))
        .route("/accounts/{id}/transfers/large", post(whoami))
        .layer(guard.layer())
}

pub struct Answer {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub dpop_nonce: Option<String>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

pub async fn call(app: &Router, method: &str, path: &str, authorization: &[&str]) -> Answer {
    let headers: Vec<(&str, &str)> = authorization.iter().map(|a| ("authorization", *a)).collect();
    call_with(app, method, path, &headers, &[]).await
}

/// A request with these headers and `DPoP` proof headers.
pub async fn call_with(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    proofs: &[&str],
) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    for p in proofs {
        request = request.header("dpop", *p);
    }
    let response: Response<Body> = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let dpop_nonce = response
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        www_authenticate,
        dpop_nonce,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn clock() -> Arc<TestClock> {
    Arc::new(TestClock(AtomicI64::new(NOW)))
}
