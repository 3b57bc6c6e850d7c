//! The client against the real thing: the stepup authorization server and
//! an API behind the stepup guard, over loopback HTTP. A programmatic user
//! agent fills the server's login pages as a user would.

#![allow(
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::response::IntoResponse;
use axum::routing::{get, post};
use ring::rand::SystemRandom;
use stepup_client::{
    AuthorizationCallback, AuthorizationRequest, BoxFuture, ClientConfig, ClientError, FnUserAgent, Provider,
    StepUpClient, UserAgent, UserAgentError,
};
use stepup_core::resource_metadata::ResourceMetadata;
use stepup_core::totp::TotpSecret;
use stepup_core::{Clock, Policy, Scope, UnixTime};
use stepup_guard::{Guard, HttpFetcher, JwtVerifier, TokenVerifier, VerifiedClaims};
use stepup_server::client::{AuthMethod, Registration, register};
use stepup_server::{Config, ServerState, Store, router, users};
use url::Url;

const NOW: i64 = 1_800_000_000;
const PASSWORD: &str = "correct horse battery";
/// Registered without a port; the agent uses one (RFC 8252 §7.3).
const REDIRECT: &str = "http://127.0.0.1:9/callback";

#[derive(Debug)]
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

const POLICY: &str = r#"
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
acr = ["pwd"]

[[route]]
name = "add payee"
methods = ["POST"]
path = "/accounts/{id}/payees"
acr = ["mfa"]
max_age = 300

[[route]]
name = "close account"
methods = ["DELETE"]
path = "/accounts/{id}"
acr = ["mfa"]
scope = ["accounts:close"]

[[route]]
name = "transfer"
methods = ["POST"]
path = "/accounts/{id}/transfers"
acr = ["mfa"]

[[route]]
name = "unreachable"
methods = ["POST"]
path = "/vault"
acr = ["mfa"]
"#;

struct World {
    issuer: String,
    api: String,
    clock: Arc<TestClock>,
    totp: TotpSecret,
    state: Arc<ServerState>,
}

async fn world() -> World {
    world_with(false).await
}

/// With `dpop`, the server and the API both ask for DPoP nonces.
async fn world_with(dpop: bool) -> World {
    let dir = std::env::temp_dir().join(format!(
        "stepup-client-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    // The API's identifier is its URL: the resource the client asks
    // tokens for (RFC 8707) and the audience the guard checks.
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", api_listener.local_addr().unwrap());
    let config = format!(
        r#"
issuer = "{issuer}"
database_url = "sqlite://{}/stepup.db"
audiences = ["{api_url}"]

[[level]]
name = "pwd"
acr = "urn:stepup:acr:pwd"
factors = [["pwd"]]

[[level]]
name = "mfa"
acr = "urn:stepup:acr:mfa"
factors = [["pwd", "otp"]]

[authorization_details.payment_initiation]
fields = ["amount", "creditor"]
level = "mfa"
token_seconds = 120
{}"#,
        dir.display(),
        if dpop {
            "\n[dpop]\nnonce_secret = \"an-authorization-server-nonce-secret\"\n"
        } else {
            ""
        }
    );
    let config = Config::from_toml("test.toml", &config).unwrap();
    let store = Store::connect(&config.database_url).await.unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(NOW)));
    let state = ServerState::new(config, store, clock.clone()).await.unwrap();
    let rng = SystemRandom::new();
    register(
        &state.store,
        Registration {
            client_id: "cli".into(),
            auth_method: AuthMethod::None,
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scopes: vec![
                Scope::new("accounts:read").unwrap(),
                Scope::new("accounts:close").unwrap(),
            ],
            require_par: false,
            require_dpop: false,
            jwks: None,
            audiences: Vec::new(),
        },
        NOW,
        &rng,
    )
    .await
    .unwrap();
    users::add_user(&state.store, "alice", PASSWORD, NOW, &rng)
        .await
        .unwrap();
    let totp = users::enroll_totp(&state.store, "alice", &rng).await.unwrap();
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The API: answers with the acr of the token it was called with, and
    // the body it got.
    let verifier = JwtVerifier::from_issuer(&issuer, &api_url, HttpFetcher::new().unwrap())
        .await
        .unwrap();
    let policy = Policy::from_toml("policy.toml", POLICY).unwrap();
    let listener = api_listener;
    let metadata = ResourceMetadata {
        resource: api_url.clone(),
        authorization_servers: vec![issuer.clone()],
        scopes_supported: policy.scopes(),
        bearer_methods_supported: vec!["header".into()],
        dpop_signing_alg_values_supported: vec![],
        authorization_details_types_supported: vec!["payment_initiation".into()],
        resource_name: Some("test bank".into()),
    };
    let mut guard = Guard::builder(Arc::new(policy), TokenVerifier::Jwt(Arc::new(verifier)))
        .clock(clock.clone())
        .resource_metadata(&metadata)
        .unwrap();
    if dpop {
        let nonces = stepup_guard::dpop::NonceSource::new(&[3u8; 32], 60).unwrap();
        guard = guard.dpop(stepup_guard::dpop::DpopOptions::new(api_url.clone()).nonces(nonces));
    }
    let rule = stepup_guard::transaction::TransactionRule {
        route: "transfer".into(),
        details_type: "payment_initiation".into(),
        fields: vec![
            ("amount".into(), "/amount".into()),
            ("creditor".into(), "/to".into()),
        ],
        amount_fields: vec!["amount".into()],
        max_token_seconds: 300,
    };
    let guard = guard
        .transactions(stepup_guard::transaction::TransactionOptions::new(
            vec![rule],
            Arc::new(stepup_guard::dpop::MemoryReplayCache::new(100)),
        ))
        .build();
    async fn echo(claims: VerifiedClaims, body: String) -> String {
        format!("{} {body}", claims.0.acr.as_deref().unwrap_or("-"))
    }
    let api = axum::Router::new()
        .route("/accounts/{id}/balance", get(echo))
        .route("/accounts/{id}/payees", post(echo))
        .route("/accounts/{id}", axum::routing::delete(echo))
        .route("/vault", post(echo))
        .route("/accounts/{id}/transfers", post(echo))
        // An open redirect, as real APIs have them.
        .route(
            "/r",
            get(
                |q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [("location", q.get("to").cloned().unwrap_or_default())],
                    )
                },
            ),
        )
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(listener, api).await.unwrap() });
    World {
        issuer,
        api: api_url,
        clock,
        totp,
        state,
    }
}

/// A user at a browser, scripted: signs in with the password and, when
/// asked, the current TOTP code. Records what it was asked.
struct ScriptedUser {
    http: reqwest::Client,
    clock: Arc<TestClock>,
    totp: TotpSecret,
    username: &'static str,
    runs: AtomicUsize,
    asked: Mutex<Vec<String>>,
    /// The authorization URLs it was taken to.
    opened: Mutex<Vec<Url>>,
    /// Replaces the callback before it is returned (attacks).
    tamper: Option<Box<dyn Fn(Url) -> Url + Send + Sync>>,
}

impl ScriptedUser {
    fn new(w: &World) -> Self {
        Self {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            clock: w.clock.clone(),
            totp: w.totp.clone(),
            username: "alice",
            runs: AtomicUsize::new(0),
            asked: Mutex::new(Vec::new()),
            opened: Mutex::new(Vec::new()),
            tamper: None,
        }
    }

    fn hidden(body: &str, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            + marker.len();
        body[start..start + body[start..].find('"').unwrap()].to_owned()
    }

    async fn run(&self, url: Url) -> Result<Url, UserAgentError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.opened.lock().unwrap().push(url.clone());
        let base =
            format!("{}://{}", url.scheme(), url.host_str().unwrap()) + &format!(":{}", url.port().unwrap());
        let mut response = self.http.get(url).send().await.unwrap();
        for _ in 0..5 {
            if let Some(location) = response.headers().get("location") {
                let location = Url::parse(location.to_str().unwrap()).unwrap();
                return Ok(match &self.tamper {
                    Some(f) => f(location),
                    None => location,
                });
            }
            let body = response.text().await.unwrap();
            let request = Self::hidden(&body, "request");
            let csrf = Self::hidden(&body, "csrf");
            let (path, field, value) = if body.contains("name=\"password\"") {
                ("/login/password", "password", PASSWORD.to_owned())
            } else if body.contains("name=\"code\"") {
                let now = UnixTime(self.clock.0.load(Ordering::SeqCst));
                ("/login/otp", "code", self.totp.code_at(now))
            } else if body.contains("action=\"/authorize/approve\"") {
                // The transaction shown: the user approves it.
                ("/authorize/approve", "decision", "approve".to_owned())
            } else {
                return Err(UserAgentError::Other(format!("unexpected page: {body}")));
            };
            if field != "decision" {
                self.asked.lock().unwrap().push(field.to_owned());
            }
            response = self
                .http
                .post(format!("{base}{path}"))
                .form(&[
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("username", self.username),
                    (field, value.as_str()),
                ])
                .send()
                .await
                .unwrap();
        }
        Err(UserAgentError::Other("too many pages".into()))
    }

    fn asked(&self) -> Vec<String> {
        std::mem::take(&mut self.asked.lock().unwrap())
    }
}

impl UserAgent for ScriptedUser {
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizationRequest<'_>,
    ) -> BoxFuture<'a, Result<AuthorizationCallback, UserAgentError>> {
        Box::pin(async move {
            let url = self.run(request.url(REDIRECT).await?).await?;
            Ok(AuthorizationCallback {
                redirect_uri: REDIRECT.to_owned(),
                url,
            })
        })
    }
}

async fn client(w: &World, user: Arc<dyn UserAgent>) -> StepUpClient {
    let http = reqwest::Client::new();
    let provider = Provider::discover(&http, &w.issuer).await.unwrap();
    StepUpClient::new(
        http,
        provider,
        ClientConfig::public("cli", ["accounts:read"]),
        user,
    )
    .with_clock(w.clock.clone())
}

/// The balance, read with the client's token: status and body.
async fn read_balance(c: &StepUpClient, w: &World) -> (u16, String) {
    call(
        c,
        reqwest::Method::GET,
        format!("{}/accounts/42/balance", w.api),
        "",
    )
    .await
    .unwrap()
}

async fn call(
    c: &StepUpClient,
    method: reqwest::Method,
    url: String,
    body: &str,
) -> Result<(u16, String), ClientError> {
    let request = reqwest::Client::new()
        .request(method, url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .build()
        .unwrap();
    let response = c.execute(request).await?;
    Ok((response.status().as_u16(), response.text().await.unwrap()))
}

#[tokio::test]
async fn reads_with_the_base_token_and_steps_up_once_for_a_payee() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let c = client(&w, user.clone()).await;
    let balance = format!("{}/accounts/42/balance", w.api);
    let payees = format!("{}/accounts/42/payees", w.api);

    // First call: sign in with the password, then the call goes through.
    let got = call(&c, reqwest::Method::GET, balance.clone(), "").await.unwrap();
    assert_eq!(got, (200, "urn:stepup:acr:pwd ".to_owned()));
    assert_eq!(user.asked(), ["password"]);

    // Adding a payee: the API challenges (mfa, max_age 300); the client
    // steps up (the session is reused: only the code is asked) and sends
    // the same request, body included, again.
    w.clock.0.fetch_add(60, Ordering::SeqCst);
    let got = call(&c, reqwest::Method::POST, payees.clone(), r#"{"iban":"DE89"}"#)
        .await
        .unwrap();
    assert_eq!(got, (200, r#"urn:stepup:acr:mfa {"iban":"DE89"}"#.to_owned()));
    assert_eq!(user.asked(), ["code"]);
    assert_eq!(user.runs.load(Ordering::SeqCst), 2);

    // Reading goes on with the base token; a second payee within max_age
    // uses the elevated token, without asking the user.
    let got = call(&c, reqwest::Method::GET, balance.clone(), "").await.unwrap();
    assert_eq!(got.1, "urn:stepup:acr:pwd ");
    let got = call(&c, reqwest::Method::POST, payees.clone(), "second")
        .await
        .unwrap();
    assert_eq!(got, (200, "urn:stepup:acr:mfa second".to_owned()));
    assert_eq!(user.runs.load(Ordering::SeqCst), 2);
    assert_eq!(c.tokens().await.elevated_count(), 1);

    // Past max_age the elevated token is dropped without being sent; the
    // API's challenge leads to a new step-up.
    w.clock.0.fetch_add(301, Ordering::SeqCst);
    let got = call(&c, reqwest::Method::POST, payees, "third").await.unwrap();
    assert_eq!(got, (200, "urn:stepup:acr:mfa third".to_owned()));
    assert_eq!(user.runs.load(Ordering::SeqCst), 3);
    // Every request was pushed (PAR): the browser's URL names only the
    // client and the pushed request, not `state` nor the PKCE challenge.
    for url in user.opened.lock().unwrap().iter() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(keys, ["client_id", "request_uri"], "{url}");
    }
}

#[tokio::test]
async fn an_insufficient_scope_answer_also_steps_up() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let http = reqwest::Client::new();
    let provider = Provider::discover(&http, &w.issuer).await.unwrap();
    // The user configured accounts:close as a scope a step-up may add.
    let config = ClientConfig::public("cli", ["accounts:read"])
        .allow_step_up_scopes(Url::parse(&w.api).unwrap(), ["accounts:close"]);
    let c = StepUpClient::new(http, provider, config, user.clone()).with_clock(w.clock.clone());
    // The token lacks accounts:close: 403 insufficient_scope. The client
    // asks for the scope (the session answers without the user); the API
    // then wants mfa too. That second refusal is returned, not chased: one
    // step-up per call, never a loop.
    let err = call(&c, reqwest::Method::DELETE, format!("{}/accounts/42", w.api), "")
        .await
        .unwrap_err();
    let ClientError::StillChallenged(challenge) = err else {
        panic!("{err}");
    };
    assert_eq!(
        challenge.error.as_ref().map(|e| e.as_str()),
        Some("insufficient_user_authentication")
    );
    assert_eq!(
        user.runs.load(Ordering::SeqCst),
        2,
        "sign-in, one step-up, no loop"
    );
}

#[tokio::test]
async fn a_body_that_cannot_be_replayed_is_a_clear_error() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let c = client(&w, user.clone()).await;
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes_of("streamed"))]);
    let request = reqwest::Client::new()
        .post(format!("{}/accounts/42/payees", w.api))
        .body(reqwest::Body::wrap_stream(stream))
        .build()
        .unwrap();
    let err = c.execute(request).await.unwrap_err();
    assert!(matches!(err, ClientError::BodyNotReplayable(_)), "{err}");
    assert!(err.to_string().contains("buffer the body"), "{err}");
}

fn bytes_of(s: &'static str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[tokio::test]
async fn a_level_the_user_cannot_reach_is_refused_by_the_server() {
    let w = world().await;
    // Bob has no TOTP: mfa is out of his reach, and the server says so
    // (RFC 9470 §5) instead of issuing a weaker token.
    users::add_user(&w.state.store, "bob", PASSWORD, NOW, &SystemRandom::new())
        .await
        .unwrap();
    let mut bob = ScriptedUser::new(&w);
    bob.username = "bob";
    let bob = Arc::new(bob);
    let c = client(&w, bob.clone()).await;
    let err = call(&c, reqwest::Method::POST, format!("{}/vault", w.api), "")
        .await
        .unwrap_err();
    let ClientError::Authorization { error, description } = err else {
        panic!("{err}");
    };
    assert_eq!(error, "unmet_authentication_requirements");
    assert!(description.is_some());
    assert_eq!(bob.asked(), ["password"], "signed in; the step-up asked nothing");

    // Alice can reach it: she gets in.
    let alice = Arc::new(ScriptedUser::new(&w));
    let c = client(&w, alice.clone()).await;
    let got = call(&c, reqwest::Method::POST, format!("{}/vault", w.api), "x")
        .await
        .unwrap();
    assert_eq!(got, (200, "urn:stepup:acr:mfa x".to_owned()));
}

/// The URL with one query parameter's value replaced.
fn replace_param(url: &Url, name: &str, value: &str) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

#[tokio::test]
async fn a_response_for_another_request_or_issuer_is_refused() {
    let w = world().await;
    let mut forged_state = ScriptedUser::new(&w);
    forged_state.tamper = Some(Box::new(|url: Url| replace_param(&url, "state", "forged")));
    let c = client(&w, Arc::new(forged_state)).await;
    let err = call(
        &c,
        reqwest::Method::GET,
        format!("{}/accounts/1/balance", w.api),
        "",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::BadAuthorizationResponse(_)), "{err}");

    // RFC 9207: a response naming another issuer (a mix-up) is refused
    // before anything else is read from it.
    let mut mixed_up = ScriptedUser::new(&w);
    mixed_up.tamper = Some(Box::new(|url: Url| {
        replace_param(&url, "iss", "https://evil.example")
    }));
    let c = client(&w, Arc::new(mixed_up)).await;
    let err = call(
        &c,
        reqwest::Method::GET,
        format!("{}/accounts/1/balance", w.api),
        "",
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::IssuerMismatch { .. }), "{err}");

    // RFC 9207 §2.4: the server says it always sends `iss`; a response
    // without it is refused too.
    let mut no_iss = ScriptedUser::new(&w);
    no_iss.tamper = Some(Box::new(|url: Url| {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "iss")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut out = url.clone();
        out.query_pairs_mut().clear().extend_pairs(pairs);
        out
    }));
    let c = client(&w, Arc::new(no_iss)).await;
    let err = read_balance_err(&c, &w).await;
    assert!(
        matches!(&err, ClientError::IssuerMismatch { got, .. } if got.is_empty()),
        "{err}"
    );
}

/// The error of reading the balance.
async fn read_balance_err(c: &StepUpClient, w: &World) -> ClientError {
    call(
        c,
        reqwest::Method::GET,
        format!("{}/accounts/42/balance", w.api),
        "",
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn a_refusal_by_the_user_is_a_typed_error() {
    let w = world().await;
    // The user declines at the authorization server: the redirect carries
    // error=access_denied with the request's state.
    let issuer = w.issuer.clone();
    let agent = FnUserAgent::new(
        REDIRECT,
        Arc::new(move |url: Url| {
            let issuer = issuer.clone();
            Box::pin(async move {
                let state = url
                    .query_pairs()
                    .find(|(k, _)| k == "state")
                    .unwrap()
                    .1
                    .into_owned();
                let mut back = Url::parse(REDIRECT).unwrap();
                back.query_pairs_mut()
                    .append_pair("error", "access_denied")
                    .append_pair("error_description", "the user said no")
                    .append_pair("state", &state)
                    .append_pair("iss", &issuer);
                Ok(back)
            })
        }),
    );
    let http = reqwest::Client::new();
    let mut provider = Provider::discover(&http, &w.issuer).await.unwrap();
    // The parameters in the URL (no PAR), where this agent reads `state`.
    provider.pushed_authorization_request_endpoint = None;
    let c = StepUpClient::new(
        http,
        provider,
        ClientConfig::public("cli", ["accounts:read"]),
        Arc::new(agent),
    );
    let err = call(
        &c,
        reqwest::Method::GET,
        format!("{}/accounts/1/balance", w.api),
        "",
    )
    .await
    .unwrap_err();
    let ClientError::Authorization { error, description } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        (error.as_str(), description.as_deref()),
        ("access_denied", Some("the user said no"))
    );
    assert_eq!(
        err.to_string(),
        "authorization refused: access_denied (the user said no)"
    );
}

#[tokio::test]
async fn dpop_bound_tokens_step_up_and_follow_nonces() {
    let w = world_with(true).await;
    let user = Arc::new(ScriptedUser::new(&w));
    let http = reqwest::Client::new();
    let provider = Provider::discover(&http, &w.issuer).await.unwrap();
    let key = stepup_core::jws::SigningKey::generate_es256(&SystemRandom::new()).unwrap();
    let c = StepUpClient::new(
        http,
        provider,
        ClientConfig::public("cli", ["accounts:read"]),
        user.clone(),
    )
    .with_clock(w.clock.clone())
    .with_dpop(key);
    // Both servers ask for their nonce first; the client follows.
    let got = read_balance(&c, &w).await;
    assert_eq!(got, (200, "urn:stepup:acr:pwd ".to_owned()));
    assert!(
        c.tokens().await.base(&w.api).unwrap().dpop,
        "the token is bound to the key"
    );
    // The step-up works the same with bound tokens.
    w.clock.0.fetch_add(30, Ordering::SeqCst);
    let got = call(
        &c,
        reqwest::Method::POST,
        format!("{}/accounts/42/payees", w.api),
        "p",
    )
    .await
    .unwrap();
    assert_eq!(got, (200, "urn:stepup:acr:mfa p".to_owned()));
    assert_eq!(user.asked(), ["password", "code"]);
}

#[tokio::test]
async fn a_transaction_is_approved_for_itself_and_the_token_is_not_kept() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let c = client(&w, user.clone()).await;
    let url = format!("{}/accounts/42/transfers", w.api);
    let body = r#"{"amount": 5000, "to": "Ada"}"#;
    // A plain step-up gives mfa, but not for this transaction: refused.
    let err = call(&c, reqwest::Method::POST, url.clone(), body)
        .await
        .unwrap_err();
    let ClientError::StillChallenged(challenge) = err else {
        panic!("{err}");
    };
    assert!(
        challenge
            .error_description
            .as_deref()
            .unwrap_or_default()
            .contains("approved for this transaction"),
        "{challenge:?}"
    );
    // Approved for the transaction: it goes through.
    let details = serde_json::json!([{"type": "payment_initiation", "amount": "5000", "creditor": "Ada"}]);
    let request = reqwest::Client::new()
        .post(url.clone())
        .header("content-type", "application/json")
        .body(body)
        .build()
        .unwrap();
    let response = c.execute_transaction(request, details.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        format!("urn:stepup:acr:mfa {body}")
    );
    // The next transaction is approved anew (the token was used up and
    // not kept): the user is asked again (the session answers for the
    // factors, the user approves the page).
    let before = user.runs.load(Ordering::SeqCst);
    let request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .build()
        .unwrap();
    let response = c.execute_transaction(request, details).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(user.runs.load(Ordering::SeqCst), before + 1);
}

/// What a rogue resource server publishes about itself.
#[derive(Clone, Copy, Debug)]
enum Rogue {
    /// No metadata: only a challenge for the strongest level and a
    /// payments scope.
    NoMetadata,
    /// The bank API's own metadata, served as its own, and a challenge
    /// naming the bank API's metadata address.
    BanksMetadata,
    /// Metadata of its own, naming the bank's authorization server.
    ItsOwn,
}

/// A rogue resource server on loopback: it records every credential it
/// is sent and answers every call with a step-up challenge.
async fn rogue(w: &World, kind: Rogue) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (bank, issuer, own) = (w.api.clone(), w.issuer.clone(), url.clone());
    let bank_metadata_url = format!("{bank}/.well-known/oauth-protected-resource");
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (record, bank, issuer, own, bank_metadata_url) = (
            record.clone(),
            bank.clone(),
            issuer.clone(),
            own.clone(),
            bank_metadata_url.clone(),
        );
        async move {
            for name in ["authorization", "dpop"] {
                if let Some(v) = request.headers().get(name) {
                    record
                        .lock()
                        .unwrap()
                        .push(format!("{name}: {}", v.to_str().unwrap()));
                }
            }
            let metadata = |resource: &str| {
                serde_json::json!({"resource": resource, "authorization_servers": [issuer],
                    "scopes_supported": ["payments:write"]})
                .to_string()
            };
            let path = request.uri().path();
            let json = [("content-type", "application/json")];
            if path == "/.well-known/oauth-protected-resource" {
                return match kind {
                    Rogue::NoMetadata => axum::http::StatusCode::NOT_FOUND.into_response(),
                    Rogue::BanksMetadata => (json, metadata(&bank)).into_response(),
                    Rogue::ItsOwn => (json, metadata(&own)).into_response(),
                };
            }
            let mut challenge = r#"Bearer error="insufficient_user_authentication", acr_values="urn:stepup:acr:mfa", max_age=0, scope="payments:write""#.to_owned();
            if matches!(kind, Rogue::BanksMetadata) {
                challenge.push_str(&format!(r#", resource_metadata="{bank_metadata_url}""#));
            }
            (
                axum::http::StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
            )
                .into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Issue 17 §1: `stepup call http://evil.example/x` handed the stored token
/// to any URL, and followed any server's challenge at the real
/// authorization server. A token now goes only to the resource it was
/// issued for, over https (http on loopback only), and a challenge is
/// followed only for a resource whose metadata checks out.
#[tokio::test]
async fn a_rogue_resource_gets_no_token_and_no_step_up() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let c = client(&w, user.clone()).await;
    // The user holds a token for the bank API.
    let got = read_balance(&c, &w).await;
    assert_eq!(got.0, 200);
    assert_eq!(user.asked(), ["password"]);

    // Plain http off loopback: nothing is sent at all.
    let err = call(&c, reqwest::Method::POST, "http://evil.example/x".into(), "")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InsecureTransport(_)), "{err}");

    for kind in [Rogue::NoMetadata, Rogue::BanksMetadata, Rogue::ItsOwn] {
        let (evil, seen) = rogue(&w, kind).await;
        let err = call(&c, reqwest::Method::POST, format!("{evil}/payees"), "{}")
            .await
            .unwrap_err();
        match kind {
            Rogue::NoMetadata | Rogue::BanksMetadata => {
                assert!(
                    matches!(err, ClientError::UntrustedResource { .. }),
                    "{kind:?}: {err}"
                );
            }
            // Its metadata is its own and names the bank's authorization
            // server: the server refuses a token for a resource it does
            // not serve (RFC 8707), before the user signs in.
            Rogue::ItsOwn => {
                let ClientError::Authorization { error, .. } = &err else {
                    panic!("{kind:?}: {err}");
                };
                assert_eq!(error, "invalid_target");
            }
        }
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            &[] as &[String],
            "{kind:?}: the rogue server saw a credential"
        );
        assert!(user.asked().is_empty(), "{kind:?}: the user was asked to sign in");
    }
    // The request for the rogue resource was pushed (PAR) and refused
    // there: no browser opened for it.
    assert_eq!(user.runs.load(Ordering::SeqCst), 1, "the first sign-in only");
    // The bank API's token still serves the bank API.
    let got = read_balance(&c, &w).await;
    assert_eq!(got, (200, "urn:stepup:acr:pwd ".to_owned()));
    let mut kept = c.tokens().await;
    kept.prune(NOW);
    assert_eq!(kept.resources().collect::<Vec<_>>(), [w.api.as_str()]);
}

/// A challenge that asks for a scope the user did not configure is not
/// followed without asking: the notice says which resource asks for what,
/// and the step-up goes on only if it says so.
#[tokio::test]
async fn a_challenge_widening_scopes_is_asked_of_the_user() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let close = format!("{}/accounts/42", w.api);
    // No one to ask: declined, the browser never opens for it.
    let c = client(&w, user.clone()).await;
    let err = call(&c, reqwest::Method::DELETE, close.clone(), "")
        .await
        .unwrap_err();
    let ClientError::StepUpDeclined {
        resource,
        unconfigured_scopes,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(
        (resource.as_str(), unconfigured_scopes.as_slice()),
        (w.api.as_str(), &["accounts:close".to_owned()][..])
    );
    assert_eq!(user.runs.load(Ordering::SeqCst), 1, "the sign-in only");
    // Allowed for another resource only: the same.
    let http = reqwest::Client::new();
    let provider = Provider::discover(&http, &w.issuer).await.unwrap();
    let elsewhere = ClientConfig::public("cli", ["accounts:read"])
        .allow_step_up_scopes(Url::parse("https://partner.example").unwrap(), ["accounts:close"]);
    let c2 = StepUpClient::new(http, provider, elsewhere, user.clone()).with_clock(w.clock.clone());
    let err = call(&c2, reqwest::Method::DELETE, close.clone(), "")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::StepUpDeclined { .. }), "{err}");
    assert_eq!(
        user.runs.load(Ordering::SeqCst),
        2,
        "and a sign-in for that client"
    );

    // The user is asked, and says no, then yes.
    let asked = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (log, yes) = (asked.clone(), answer.clone());
    let c = client(&w, user.clone())
        .await
        .on_step_up(Arc::new(move |step: &stepup_client::StepUp| {
            log.lock().unwrap().push(step.clone());
            yes.load(Ordering::SeqCst)
        }));
    let err = call(&c, reqwest::Method::DELETE, close.clone(), "")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::StepUpDeclined { .. }), "{err}");
    let step = asked.lock().unwrap()[0].clone();
    assert_eq!(step.resource, w.api);
    assert_eq!(step.resource_name.as_deref(), Some("test bank"));
    assert_eq!(step.requirement.scope, ["accounts:close"]);
    assert_eq!(step.unconfigured_scopes, ["accounts:close"]);
    assert!(
        step.route.starts_with("DELETE http://127.0.0.1:"),
        "{}",
        step.route
    );
    answer.store(true, Ordering::SeqCst);
    let err = call(&c, reqwest::Method::DELETE, close, "").await.unwrap_err();
    // Followed now (then the API wants mfa as well: one step-up per call).
    assert!(matches!(err, ClientError::StillChallenged(_)), "{err}");
}

/// The resource's own open redirect: the token was sent along (reqwest
/// keeps `Authorization` on a same-host redirect, plain http included),
/// and the rogue server's answer passed for the resource's challenge. No
/// redirect is followed with a token now: the 307 is the answer.
#[tokio::test]
async fn a_redirect_is_never_followed_with_a_token() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let c = client(&w, user.clone()).await;
    let (evil, seen) = rogue(&w, Rogue::BanksMetadata).await;
    for to in [format!("{evil}/payees"), "/accounts/42/balance".to_owned()] {
        let url = format!(
            "{}/r?to={}",
            w.api,
            url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        );
        let response = c
            .execute(reqwest::Client::new().get(url).build().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 307, "{to}");
        assert_eq!(response.headers()["location"], to.as_str());
    }
    assert_eq!(seen.lock().unwrap().as_slice(), &[] as &[String]);
    assert_eq!(
        user.runs.load(Ordering::SeqCst),
        1,
        "the sign-in only: no step-up for the rogue server"
    );

    // A caller's client that follows redirects: the answer is refused.
    let c = client(&w, user.clone())
        .await
        .with_resource_http(reqwest::Client::new());
    let url = format!("{}/r?to=/accounts/42/balance", w.api);
    let err = c
        .execute(reqwest::Client::new().get(url).build().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must not follow redirects"), "{err}");
}

/// Two calls that need the same step-up at once: one browser step-up, and
/// both calls go through with its token.
#[tokio::test]
async fn concurrent_calls_share_one_step_up() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let c = client(&w, user.clone()).await;
    assert_eq!(read_balance(&c, &w).await.0, 200);
    let payees = format!("{}/accounts/42/payees", w.api);
    let (a, b) = tokio::join!(
        call(&c, reqwest::Method::POST, payees.clone(), "a"),
        call(&c, reqwest::Method::POST, payees.clone(), "b")
    );
    assert_eq!(a.unwrap(), (200, "urn:stepup:acr:mfa a".to_owned()));
    assert_eq!(b.unwrap(), (200, "urn:stepup:acr:mfa b".to_owned()));
    assert_eq!(user.runs.load(Ordering::SeqCst), 2, "the sign-in and one step-up");
}

/// Another user of the bank, with a password and TOTP, at a browser of
/// their own.
async fn mallory(w: &World) -> Arc<ScriptedUser> {
    let rng = SystemRandom::new();
    users::add_user(&w.state.store, "mallory", PASSWORD, NOW, &rng)
        .await
        .unwrap();
    let totp = users::enroll_totp(&w.state.store, "mallory", &rng).await.unwrap();
    Arc::new(ScriptedUser {
        username: "mallory",
        totp,
        ..ScriptedUser::new(w)
    })
}

/// A browser signed in as one account for the first sign-in, and as
/// another for every later one (the user switched accounts in it, or an
/// attacker signed it in to theirs with a login CSRF).
struct SwitchedBrowser {
    first: Arc<ScriptedUser>,
    then: Arc<ScriptedUser>,
    runs: AtomicUsize,
}

impl UserAgent for SwitchedBrowser {
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizationRequest<'_>,
    ) -> BoxFuture<'a, Result<AuthorizationCallback, UserAgentError>> {
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            self.first.authorize(request)
        } else {
            self.then.authorize(request)
        }
    }
}

#[tokio::test]
async fn a_step_up_that_comes_back_for_another_account_is_refused() {
    let w = world().await;
    let alice = Arc::new(ScriptedUser::new(&w));
    let mallory = mallory(&w).await;
    let browser = Arc::new(SwitchedBrowser {
        first: alice.clone(),
        then: mallory.clone(),
        runs: AtomicUsize::new(0),
    });
    let c = client(&w, browser).await;

    // Alice signs in: the client learns whose tokens it holds (from the ID
    // token, asked with every sign-in of an OpenID provider).
    assert_eq!(read_balance(&c, &w).await.0, 200);
    let alice_sub = c.tokens().await.subject().map(str::to_owned);
    assert!(alice_sub.is_some(), "the ID token named the account");

    // The step-up runs in a browser signed in as mallory: the mfa token
    // that comes back is mallory's, and is neither used nor kept.
    let payees = format!("{}/accounts/42/payees", w.api);
    let err = call(&c, reqwest::Method::POST, payees.clone(), r#"{"iban":"XX00"}"#)
        .await
        .unwrap_err();
    let ClientError::AccountChanged { held, signed_in } = &err else {
        panic!("{err}");
    };
    assert_eq!(Some(held.clone()), alice_sub);
    assert_ne!(Some(held), signed_in.as_ref());
    assert_eq!(mallory.asked(), ["password", "code"], "mallory's sign-in ran");
    let tokens = c.tokens().await;
    assert_eq!(tokens.elevated_count(), 0, "mallory's token is not kept");
    assert_eq!(tokens.subject().map(str::to_owned), alice_sub);

    // Nor is a transaction approved by mallory used for alice's call.
    let details = serde_json::json!([{"type": "payment_initiation", "amount": "5000", "creditor": "Ada"}]);
    let request = reqwest::Client::new()
        .post(format!("{}/accounts/42/transfers", w.api))
        .header("content-type", "application/json")
        .body(r#"{"amount": 5000, "to": "Ada"}"#)
        .build()
        .unwrap();
    let err = c.execute_transaction(request, details).await.unwrap_err();
    assert!(matches!(err, ClientError::AccountChanged { .. }), "{err}");

    // Alice's own reads go on with her token.
    assert_eq!(read_balance(&c, &w).await.0, 200);
}

#[tokio::test]
async fn the_account_is_kept_across_refreshes() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let c = client(&w, user.clone()).await;
    assert_eq!(read_balance(&c, &w).await.0, 200);
    let subject = c.tokens().await.subject().map(str::to_owned);
    assert!(subject.is_some());
    // The access token lapses: the refresh (its ID token checked) keeps
    // the account, without the user.
    w.clock.0.fetch_add(3_600, Ordering::SeqCst);
    assert_eq!(read_balance(&c, &w).await.0, 200);
    assert_eq!(
        user.runs.load(Ordering::SeqCst),
        1,
        "refreshed, not signed in again"
    );
    let tokens = c.tokens().await;
    assert_eq!(tokens.subject().map(str::to_owned), subject);
    let resource = tokens.resources().next().unwrap().to_owned();
    assert_eq!(tokens.base(&resource).unwrap().subject, subject);
}

/// Tokens shared by two clients as two runs of a CLI share a file.
struct MemoryStore(Arc<tokio::sync::Mutex<stepup_client::Tokens>>);

struct LockedMemory(tokio::sync::OwnedMutexGuard<stepup_client::Tokens>);

impl stepup_client::SharedTokens for MemoryStore {
    fn lock(&self) -> Result<Box<dyn stepup_client::LockedTokens>, String> {
        Ok(Box::new(LockedMemory(Arc::clone(&self.0).blocking_lock_owned())))
    }
}

impl stepup_client::LockedTokens for LockedMemory {
    fn tokens(&self) -> &stepup_client::Tokens {
        &self.0
    }

    fn keep(&mut self, before: &stepup_client::Tokens, after: &stepup_client::Tokens) -> Result<(), String> {
        self.0.merge_changes(before, after).map_err(|e| e.to_string())
    }
}

#[tokio::test]
async fn two_runs_sharing_tokens_never_spend_one_refresh_token_twice() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let first = client(&w, user.clone()).await;
    assert_eq!(read_balance(&first, &w).await.0, 200);
    let file = Arc::new(tokio::sync::Mutex::new(first.tokens().await));
    let run = |tokens: stepup_client::Tokens| {
        let (w, user, file) = (&w, user.clone(), Arc::clone(&file));
        async move {
            client(w, user)
                .await
                .with_tokens(tokens)
                .with_shared_tokens(Arc::new(MemoryStore(file)))
        }
    };
    // Two runs start with the same tokens; the access token has expired.
    let a = run(file.lock().await.clone()).await;
    let b = run(file.lock().await.clone()).await;
    w.clock.0.fetch_add(3_600, Ordering::SeqCst);
    // A refreshes (the refresh token rotates) and keeps the result at
    // once; B then finds it renewed and takes it, instead of spending the
    // rotated refresh token (which the server takes for a theft, and
    // revokes every token of the sign-in).
    assert_eq!(read_balance(&a, &w).await.0, 200);
    assert_eq!(read_balance(&b, &w).await.0, 200);
    assert_eq!(user.runs.load(Ordering::SeqCst), 1, "no one signed in again");
    // The sign-in's tokens still live: the next refresh works, for both.
    w.clock.0.fetch_add(3_600, Ordering::SeqCst);
    assert_eq!(read_balance(&b, &w).await.0, 200);
    assert_eq!(read_balance(&a, &w).await.0, 200);
    assert_eq!(user.runs.load(Ordering::SeqCst), 1, "no one signed in again");
    // What a run keeps at its end counts from what it kept last: A's end
    // does not bring back the refresh token B has rotated since.
    let mut kept = file.lock().await.clone();
    let before_end = kept.clone();
    kept.merge_changes(&a.kept_tokens(), &a.tokens().await).unwrap();
    let resource = kept.resources().next().unwrap().to_owned();
    assert_eq!(kept.base(&resource), before_end.base(&resource));
}

#[tokio::test]
async fn a_refused_token_does_not_let_another_account_in() {
    let w = world().await;
    let alice = Arc::new(ScriptedUser::new(&w));
    let mallory = mallory(&w).await;
    let browser = Arc::new(SwitchedBrowser {
        first: alice,
        then: mallory.clone(),
        runs: AtomicUsize::new(0),
    });
    let c = client(&w, browser).await;
    assert_eq!(read_balance(&c, &w).await.0, 200);
    let alice_sub = c.tokens().await.subject().unwrap().to_owned();
    // The API refuses alice's access token (revoked, say): the client
    // forgets it, and its refresh token with it. The sign-in that follows
    // runs in a browser signed in to mallory's account.
    let mut held = serde_json::to_value(c.tokens().await).unwrap();
    held["resources"][0]["base"]["access_token"] = serde_json::json!("revoked");
    let c = c.with_tokens(serde_json::from_value(held).unwrap());
    let err = read_balance_err(&c, &w).await;
    let ClientError::AccountChanged { held, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(held, &alice_sub);
    assert_eq!(mallory.asked(), ["password"], "mallory's sign-in ran");
    assert_eq!(c.tokens().await.subject(), Some(alice_sub.as_str()));
}

#[tokio::test]
async fn a_refresh_that_fails_after_it_was_made_leaves_no_spent_token_behind() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let first = client(&w, user.clone()).await;
    assert_eq!(read_balance(&first, &w).await.0, 200);
    let file = Arc::new(tokio::sync::Mutex::new(first.tokens().await));
    let resource = file.lock().await.resources().next().unwrap().to_owned();
    // A run whose clock is two hours ahead: the token has expired for it,
    // the server refreshes it (the refresh token rotates), and the ID
    // token that comes back has expired for it too: refused.
    let ahead = Arc::new(TestClock(AtomicI64::new(NOW + 7_200)));
    let skewed = client(&w, user.clone())
        .await
        .with_clock(ahead)
        .with_tokens(file.lock().await.clone())
        .with_shared_tokens(Arc::new(MemoryStore(Arc::clone(&file))));
    let err = read_balance_err(&skewed, &w).await;
    assert!(matches!(err, ClientError::BadIdToken(_)), "{err}");
    // The spent refresh token is gone from the store: no run spends it
    // again (which would revoke every token of the sign-in).
    assert!(file.lock().await.base(&resource).is_none());
}

#[tokio::test]
async fn a_run_takes_the_account_another_run_bound_the_store_to() {
    let w = world().await;
    let mallory = mallory(&w).await;
    // Both runs start from an empty store; one signs in as alice and
    // keeps her tokens first.
    let file = Arc::new(tokio::sync::Mutex::new(stepup_client::Tokens::default()));
    let alice_run = client(&w, Arc::new(ScriptedUser::new(&w))).await;
    assert_eq!(read_balance(&alice_run, &w).await.0, 200);
    file.lock()
        .await
        .merge_changes(&stepup_client::Tokens::default(), &alice_run.tokens().await)
        .unwrap();
    // The other's browser is signed in to mallory's account: its sign-in
    // is refused before any call is made with it.
    let other = client(&w, mallory.clone())
        .await
        .with_shared_tokens(Arc::new(MemoryStore(Arc::clone(&file))));
    let err = read_balance_err(&other, &w).await;
    assert!(matches!(err, ClientError::AccountChanged { .. }), "{err}");
    assert_eq!(mallory.asked(), ["password"]);
}

#[tokio::test]
async fn a_token_another_run_took_out_of_the_store_is_not_refreshed() {
    let w = world().await;
    let user = Arc::new(ScriptedUser::new(&w));
    let first = client(&w, user.clone()).await;
    assert_eq!(read_balance(&first, &w).await.0, 200);
    let held = first.tokens().await;
    let resource = held.resources().next().unwrap().to_owned();
    // Another run took the token out (its refresh failed once made, or
    // it forgot everything): the store holds no token for the resource.
    let mut taken = held.clone();
    taken
        .merge_changes(&held, &stepup_client::Tokens::default())
        .unwrap();
    assert!(taken.base(&resource).is_none());
    let file = Arc::new(tokio::sync::Mutex::new(taken));
    let run = client(&w, user.clone())
        .await
        .with_tokens(held)
        .with_shared_tokens(Arc::new(MemoryStore(Arc::clone(&file))));
    w.clock.0.fetch_add(3_600, Ordering::SeqCst);
    // The run signs in again rather than spend the refresh token.
    assert_eq!(read_balance(&run, &w).await.0, 200);
    assert_eq!(user.runs.load(Ordering::SeqCst), 2);
    // The refresh token was not spent: it still refreshes (a second use
    // would have revoked every token of that sign-in).
    assert_eq!(read_balance(&first, &w).await.0, 200);
    assert_eq!(
        user.runs.load(Ordering::SeqCst),
        2,
        "refreshed, not signed in again"
    );
}
