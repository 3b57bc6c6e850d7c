//! What the gateway's test binaries share: an issuer with real keys, an
//! upstream that echoes what it gets, and a gateway in front of it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::any;
use http::Request;
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use stepup_core::access_token::ClaimsRules;
use stepup_core::jwk::{Algorithm, Jwks};
use stepup_core::jws::{SigningHeader, SigningKey, VerificationPolicy, sign_compact};
use stepup_gateway::{Gateway, GatewayConfig};
use stepup_guard::{JwtVerifier, KeySource, TokenVerifier};
use tokio::net::TcpListener;

pub const ISSUER: &str = "https://as.example";
pub const AUDIENCE: &str = "https://api.example";
pub const PWD: &str = "urn:stepup:acr:pwd";
pub const MFA: &str = "urn:stepup:acr:mfa";

pub const POLICY: &str = r#"
levels = [
  { name = "pwd", acr = "urn:stepup:acr:pwd" },
  { name = "mfa", acr = "urn:stepup:acr:mfa" },
]
[default]
acr = ["pwd"]

[[route]]
name = "read balance"
methods = ["GET"]
path = "/accounts/{id}/balance"

[[route]]
name = "add payee"
methods = ["POST"]
path = "/accounts/{id}/payees"
acr = ["mfa"]
max_age = 300

[[route]]
name = "transfer"
methods = ["POST"]
path = "/accounts/{id}/transfers"

[[risk]]
name = "large amount"
when = "amount > 1000"
routes = ["transfer"]
require = { acr = ["mfa"], max_age = 60 }
reason = "Large transfers need you to confirm it is you, just now."
"#;

/// A `[[transaction]]` binding the policy's transfer route to approved
/// payments (amount and creditor), as the gateway's configuration writes it.
pub const LARGE_TRANSFER: &str = r#"
[[transaction]]
route = "transfer"
type = "payment_initiation"
fields = { amount = "/amount", creditor = "/to" }
max_token_seconds = 120
"#;

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub struct Issuer {
    pub key: SigningKey,
    pub rng: SystemRandom,
}

impl Issuer {
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let key = SigningKey::generate_es256(&rng).unwrap();
        Self { key, rng }
    }

    pub fn verifier(&self) -> TokenVerifier {
        let jwks = json!({ "keys": [self.key.public_jwk(Some("k1"))] });
        let jwks = Jwks::from_json(jwks.to_string().as_bytes()).unwrap();
        TokenVerifier::Jwt(Arc::new(JwtVerifier::new(
            KeySource::fixed(jwks),
            ClaimsRules {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                leeway_seconds: 5,
            },
            VerificationPolicy::access_token([Algorithm::ES256]),
        )))
    }

    /// An access token of alice at `acr`, signed in `auth_age` seconds ago.
    pub fn token(&self, acr: &str, auth_age: i64) -> String {
        self.token_with(acr, auth_age, json!({}))
    }

    /// The same with more claims.
    pub fn token_with(&self, acr: &str, auth_age: i64, extra: Value) -> String {
        let now = now();
        let mut claims = json!({
            "iss": ISSUER, "sub": "alice", "aud": AUDIENCE,
            "exp": now + 600, "iat": now - 1, "jti": format!("{acr}-{auth_age}-{}", rand_suffix()),
            "client_id": "bank-web", "scope": "accounts:read payments:write",
            "acr": acr, "amr": ["pwd"], "auth_time": now - auth_age,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let header = SigningHeader::new().typ("at+jwt").kid("k1");
        sign_compact(&header, claims.to_string().as_bytes(), &self.key, &self.rng).unwrap()
    }
}

pub fn rand_suffix() -> u64 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst) as u64
}

/// An upstream that answers with what it received, and counts calls.
#[derive(Clone, Default)]
pub struct Upstream {
    pub calls: Arc<AtomicUsize>,
}

pub async fn echo(State(upstream): State<Upstream>, request: Request<Body>) -> axum::response::Response {
    upstream.calls.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    if parts.uri.path() == "/slow" {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    if parts.uri.path() == "/drain" {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").into()))
        .collect();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body.len(),
        "body": String::from_utf8_lossy(&body[..body.len().min(200)]),
    }))
    .into_response_with_header()
}

pub trait WithHeader {
    fn into_response_with_header(self) -> axum::response::Response;
}

impl<T: axum::response::IntoResponse> WithHeader for T {
    fn into_response_with_header(self) -> axum::response::Response {
        let mut response = self.into_response();
        // A hop-by-hop header the gateway must not pass back.
        response
            .headers_mut()
            .insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
        response
    }
}

pub struct World {
    pub issuer: Issuer,
    pub upstream: Upstream,
    pub gateway: Gateway,
    pub url: String,
    pub policy_path: PathBuf,
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub served: tokio::task::JoinHandle<std::io::Result<()>>,
    pub http: reqwest::Client,
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepup-gateway-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub async fn world(name: &str, extra_config: &str) -> World {
    world_with(name, extra_config, "").await
}

pub async fn world_with(name: &str, extra_config: &str, tables: &str) -> World {
    let upstream = Upstream::default();
    let upstream_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream_listener.local_addr().unwrap();
    let app = Router::new().fallback(any(echo)).with_state(upstream.clone());
    tokio::spawn(async move { axum::serve(upstream_listener, app).await });

    // A port with nothing listening: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();

    let dir = temp_dir(name);
    let policy_path = dir.join("policy.toml");
    std::fs::write(&policy_path, POLICY).unwrap();
    let config = format!(
        r#"
listen = "127.0.0.1:0"
policy = "policy.toml"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
max_body_bytes = 100000
{extra_config}

[amount]
amount_pointer = "/amount"
{tables}

[[upstream]]
prefix = "/"
url = "http://{upstream_addr}"
timeout_seconds = 1

# The same upstream, patient: for what must fail before the upstream's
# own timeout.
[[upstream]]
prefix = "/patient/"
url = "http://{upstream_addr}"
timeout_seconds = 30

[[upstream]]
prefix = "/down/"
url = "http://{closed}"

[[upstream]]
prefix = "/"
host = "down.example"
url = "http://{closed}"
"#
    );
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config).unwrap();
    let config = GatewayConfig::load(&config_path).unwrap();
    let issuer = Issuer::new();
    let gateway = Gateway::with_verifier(config, issuer.verifier()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let serving = gateway.clone();
    let served = tokio::spawn(async move {
        serving
            .serve(listener, async move {
                let _ = stop.await;
            })
            .await
    });
    World {
        issuer,
        upstream,
        gateway,
        url,
        policy_path,
        shutdown: Some(shutdown),
        served,
        http: reqwest::Client::new(),
    }
}

impl World {
    pub fn calls(&self) -> usize {
        self.upstream.calls.load(Ordering::SeqCst)
    }

    /// A request to the gateway.
    pub fn at(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// A request without a body, with a bearer token if given.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.at(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }
}

/// Whether `check` comes true within about 2 s, asked every 20 ms: for what
/// a background task (the policy watcher, a request in flight) does.
pub async fn eventually<F, Fut>(check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(Duration::from_secs(2), check).await
}

/// Whether `check` comes true within `limit`, asked every 20 ms.
pub async fn eventually_within<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if started.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
