//! The demo's web app: a page and its script, and the backend that holds
//! the tokens. The script calls `/api/…`; the backend calls the banking
//! API with the right token and, when the API asks for a step-up, tells
//! the page why and where to go (`/login?acr_values=…`). After the
//! step-up the page repeats the action once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::{Value, json};
use stepup_client::Provider;
use stepup_core::challenge::{BearerChallenge, ErrorCode, parse_www_authenticate};
use stepup_core::dpop::{ProofClaims, sign_proof};
use stepup_core::jwk::Jwk;
use stepup_core::jws::SigningKey;
use stepup_core::pkce::CodeChallenge;
use stepup_core::{Clock, SystemClock};

use super::APP_CLIENT;

const COOKIE: &str = "stepup_demo_app";
/// The header the page's script sends with every API call: a cross-site
/// form cannot set it, and a cross-site script cannot without CORS.
const CALL_HEADER: &str = "x-stepup-demo";

/// The web app's backend.
pub(crate) struct App {
    http: reqwest::Client,
    provider: Provider,
    api_url: String,
    redirect_uri: String,
    rng: SystemRandom,
    sessions: Mutex<HashMap<String, Session>>,
    /// The key the app's tokens are bound to (DPoP, RFC 9449): a token
    /// that leaks from the app is useless without it.
    dpop_key: SigningKey,
    dpop_jkt: String,
}

#[derive(Default)]
struct Session {
    base: Option<Token>,
    /// Tokens from step-ups, per route (`METHOD /path`).
    elevated: HashMap<String, Token>,
    pending: Option<Pending>,
}

struct Token {
    value: String,
    /// Usable until then: the token's expiry, and for a step-up also its
    /// `max_age`.
    until: i64,
}

struct Pending {
    state: String,
    verifier: String,
    /// The route a step-up is for; `None` for the first sign-in.
    route: Option<String>,
    max_age: Option<u64>,
}

fn now() -> i64 {
    SystemClock.now().seconds()
}

impl App {
    pub(crate) async fn new(issuer: &str, api_url: &str, app_url: &str) -> Result<Arc<Self>> {
        let http = reqwest::Client::new();
        let provider = Provider::discover(&http, issuer)
            .await
            .context("the web app cannot read the server's metadata")?;
        let rng = SystemRandom::new();
        let dpop_key = SigningKey::generate_es256(&rng).map_err(|e| anyhow::anyhow!("DPoP key: {e}"))?;
        let dpop_jkt = Jwk::from_json_value(&dpop_key.public_jwk(None))
            .map_err(|e| anyhow::anyhow!("DPoP key: {e}"))?
            .thumbprint_sha256();
        Ok(Arc::new(Self {
            http,
            provider,
            api_url: api_url.to_owned(),
            redirect_uri: format!("{app_url}/callback"),
            rng,
            sessions: Mutex::default(),
            dpop_key,
            dpop_jkt,
        }))
    }

    /// A DPoP proof for a request (a fresh `jti` each time).
    fn proof(&self, method: &str, uri: &str, access_token: Option<&str>) -> Option<String> {
        let jti = self.random()?;
        let claims = ProofClaims {
            method,
            uri,
            access_token,
            nonce: None,
            jti: &jti,
            iat: now(),
        };
        sign_proof(&self.dpop_key, &claims, &self.rng).ok()
    }

    fn random(&self) -> Option<String> {
        let mut bytes = [0u8; 32];
        self.rng.fill(&mut bytes).ok()?;
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    fn with_session<T>(&self, id: &str, f: impl FnOnce(&mut Session) -> T) -> T {
        let mut sessions = match self.sessions.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(sessions.entry(id.to_owned()).or_default())
    }
}

/// The web app's routes.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/session", get(session_info))
        .route("/logout", post(logout))
        .route("/api/{*path}", any(api))
        .with_state(app)
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn index() -> Response {
    with_security_headers(Html(include_str!("index.html")).into_response())
}

async fn script() -> Response {
    with_security_headers(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            include_str!("app.js"),
        )
            .into_response(),
    )
}

async fn style() -> Response {
    with_security_headers(
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            include_str!("app.css"),
        )
            .into_response(),
    )
}

/// The session id from the cookie, or a new one (with its `Set-Cookie`).
fn session_id(app: &App, headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    let existing = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == COOKIE)
        .map(|(_, v)| v.to_owned());
    match existing {
        Some(id) => (id, None),
        None => {
            let id = app.random().unwrap_or_default();
            let cookie =
                HeaderValue::from_str(&format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax")).ok();
            (id, cookie)
        }
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    acr_values: Option<String>,
    max_age: Option<u64>,
    scope: Option<String>,
    route: Option<String>,
    authorization_details: Option<String>,
}

/// `GET /login`: starts an authorization request (PKCE, state); with
/// `acr_values`/`max_age`/`scope`, a step-up for `route`.
async fn login(State(app): State<Arc<App>>, headers: HeaderMap, Query(q): Query<LoginQuery>) -> Response {
    let (id, cookie) = session_id(&app, &headers);
    let (Some(state), Some(verifier)) = (app.random(), app.random()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(challenge) = CodeChallenge::from_verifier(&verifier) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut scope = vec!["openid", "accounts:read"];
    for extra in q
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        if !scope.contains(&extra) {
            scope.push(extra);
        }
    }
    let mut url = app.provider.authorization_endpoint.clone();
    {
        let mut pairs = url.query_pairs_mut();
        pairs
            .append_pair("response_type", "code")
            .append_pair("client_id", APP_CLIENT)
            .append_pair("redirect_uri", &app.redirect_uri)
            .append_pair("scope", &scope.join(" "))
            .append_pair("state", &state)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256")
            .append_pair("dpop_jkt", &app.dpop_jkt);
        if let Some(acr) = q.acr_values.as_deref().filter(|a| !a.is_empty()) {
            pairs.append_pair("acr_values", acr);
        }
        if let Some(max_age) = q.max_age {
            pairs.append_pair("max_age", &max_age.to_string());
        }
        if let Some(details) = q.authorization_details.as_deref().filter(|d| !d.is_empty()) {
            pairs.append_pair("authorization_details", details);
        }
    }
    app.with_session(&id, |s| {
        s.pending = Some(Pending {
            state,
            verifier,
            route: q.route,
            max_age: q.max_age,
        });
    });
    let mut response = Redirect::to(url.as_str()).into_response();
    if let Some(c) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    response
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<i64>,
}

/// `GET /callback`: the authorization response; exchanges the code and
/// keeps the token (for the route of a step-up), then back to the page.
async fn callback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (id, _) = session_id(&app, &headers);
    let Some(pending) = app.with_session(&id, |s| s.pending.take()) else {
        return (StatusCode::BAD_REQUEST, "No sign-in was started here.").into_response();
    };
    if q.get("iss").is_some_and(|iss| iss != &app.provider.issuer) || q.get("state") != Some(&pending.state) {
        return (
            StatusCode::BAD_REQUEST,
            "This answer is not for the sign-in started here.",
        )
            .into_response();
    }
    if let Some(error) = q.get("error") {
        let description = q.get("error_description").map(String::as_str).unwrap_or("");
        let to = format!(
            "/?error={}",
            url::form_urlencoded::byte_serialize(format!("{error}: {description}").as_bytes())
                .collect::<String>()
        );
        return Redirect::to(&to).into_response();
    }
    let Some(code) = q.get("code") else {
        return (StatusCode::BAD_REQUEST, "The answer carries no code.").into_response();
    };
    let Some(proof) = app.proof("POST", app.provider.token_endpoint.as_str(), None) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let exchanged = app
        .http
        .post(app.provider.token_endpoint.clone())
        .header("dpop", proof)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &app.redirect_uri),
            ("code_verifier", &pending.verifier),
            ("client_id", APP_CLIENT),
        ])
        .send()
        .await;
    let token = match exchanged {
        Ok(r) if r.status().is_success() => r.json::<TokenResponse>().await.ok(),
        _ => None,
    };
    let Some(token) = token else {
        return (
            StatusCode::BAD_GATEWAY,
            "The authorization server refused the code.",
        )
            .into_response();
    };
    let now = now();
    let expires = now + token.expires_in.unwrap_or(300);
    let stepped_up = pending.route.is_some();
    app.with_session(&id, |s| match pending.route {
        Some(route) => {
            let max_age = pending
                .max_age
                .map_or(i64::MAX, |m| now.saturating_add_unsigned(m));
            s.elevated.insert(
                route,
                Token {
                    value: token.access_token,
                    until: expires.min(max_age),
                },
            );
        }
        None => {
            s.base = Some(Token {
                value: token.access_token,
                until: expires,
            });
        }
    });
    Redirect::to(if stepped_up { "/?stepped_up=1" } else { "/" }).into_response()
}

async fn session_info(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let (id, _) = session_id(&app, &headers);
    let signed_in = app.with_session(&id, |s| s.base.as_ref().is_some_and(|t| t.until > now()));
    with_security_headers(axum::Json(json!({"signed_in": signed_in})).into_response())
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if headers.get(CALL_HEADER).is_none() {
        return StatusCode::FORBIDDEN.into_response();
    }
    let (id, _) = session_id(&app, &headers);
    app.with_session(&id, |s| *s = Session::default());
    StatusCode::NO_CONTENT.into_response()
}

/// What the page is told when the API refuses for want of assurance.
fn step_up_answer(route: &str, challenge: &BearerChallenge, details: Option<&Value>) -> Value {
    let acr_values: Vec<&str> = challenge.acr_values.iter().map(|a| a.as_str()).collect();
    let mut login = url::form_urlencoded::Serializer::new(String::new());
    login.append_pair("route", route);
    if let Some(d) = details {
        login.append_pair("authorization_details", &d.to_string());
    }
    if !acr_values.is_empty() {
        login.append_pair("acr_values", &acr_values.join(" "));
    }
    if let Some(m) = challenge.max_age {
        login.append_pair("max_age", &m.to_string());
    }
    if let Some(s) = &challenge.scope {
        login.append_pair("scope", s);
    }
    json!({
        "step_up": {
            "error": challenge.error.as_ref().map(ErrorCode::as_str),
            "reason": challenge.error_description,
            "acr_values": acr_values,
            "max_age": challenge.max_age,
            "scope": challenge.scope,
            "transaction": details,
        },
        "login": format!("/login?{}", login.finish()),
    })
}

/// The transaction a call is, for the routes the API binds to one (RFC
/// 9396): a large transfer is approved for its amount and creditor only.
fn transaction_of(route: &str, body: &[u8]) -> Option<Value> {
    let large_transfer = route.starts_with("POST /accounts/") && route.ends_with("/transfers/large");
    if !large_transfer {
        return None;
    }
    // Exactly as the guard will compare it: never through a float.
    let body = stepup_core::json::Json::from_slice(body).ok()?;
    let amount = body.get("amount")?.amount()?.ok()?;
    Some(json!([{
        "type": "payment_initiation",
        "amount": format!("{amount:.2}"),
        "currency": body.get("currency").and_then(stepup_core::json::Json::as_str).unwrap_or("EUR"),
        "creditor": body.get("to")?.as_str()?,
    }]))
}

/// `/api/{path}`: calls the banking API with the session's token for
/// that route.
async fn api(
    State(app): State<Arc<App>>,
    method: Method,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if headers.get(CALL_HEADER).is_none() {
        return (StatusCode::FORBIDDEN, "calls come from the app's page").into_response();
    }
    let (id, _) = session_id(&app, &headers);
    let route = format!("{method} /{path}");
    let now = now();
    let token = app.with_session(&id, |s| {
        s.elevated.retain(|_, t| t.until > now);
        s.elevated
            .get(&route)
            .or(s.base.as_ref().filter(|t| t.until > now))
            .map(|t| t.value.clone())
    });
    let Some(token) = token else {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"sign_in": "/login"}))).into_response();
    };
    let transaction = transaction_of(&route, &body);
    let url = format!("{}/{path}", app.api_url);
    let Some(proof) = app.proof(method.as_str(), &url, Some(&token)) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut request = app
        .http
        .request(method.clone(), &url)
        .header(header::AUTHORIZATION, format!("DPoP {token}"))
        .header("dpop", proof);
    if !body.is_empty() {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    if transaction.is_some() {
        // A transaction token is good for one call: whatever the answer,
        // the next transaction is approved anew.
        app.with_session(&id, |s| s.elevated.remove(&route));
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({"error": e.to_string()})),
            )
                .into_response();
        }
    };
    let status = response.status();
    let challenge = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| parse_www_authenticate([v]).ok())
        .flatten()
        .find_map(|c| BearerChallenge::from_challenge(&c).ok());
    let text = response.bytes().await.unwrap_or_default();
    if let Some(challenge) = challenge {
        match challenge.error {
            Some(ErrorCode::InsufficientUserAuthentication | ErrorCode::InsufficientScope) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(step_up_answer(&route, &challenge, transaction.as_ref())),
                )
                    .into_response();
            }
            Some(ErrorCode::InvalidToken) => {
                app.with_session(&id, |s| s.base = None);
                return (StatusCode::UNAUTHORIZED, axum::Json(json!({"sign_in": "/login"}))).into_response();
            }
            _ => {}
        }
    }
    let body: Value =
        serde_json::from_slice(&text).unwrap_or_else(|_| json!({"body": String::from_utf8_lossy(&text)}));
    (status, axum::Json(body)).into_response()
}
