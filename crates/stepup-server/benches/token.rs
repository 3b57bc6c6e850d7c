//! What the token endpoint delivers over HTTP: tokens per second and latency
//! of `POST /token` for `client_credentials`, rotating `refresh_token` and
//! `authorization_code` (after an SSO `GET /authorize`), next to the bare
//! cost of one ES256 signature measured in the same run.
//!
//! One process holds everything:
//!
//! - the baseline: one thread signs a typical RFC 9068 access token claim
//!   set with `stepup_core::jws::sign_compact` (ES256) back to back for
//!   about 2 s, before anything else runs: the tokens one core could sign
//!   if signing were all the server did;
//! - the server: `stepup_server::router` on 127.0.0.1 (ephemeral port) on a
//!   multi-thread tokio runtime, over a fresh SQLite database in a temporary
//!   directory, with the configuration of `tests/it/fixtures.rs` and a fixed
//!   clock; a confidential client `svc` (`client_secret_basic`,
//!   `client_credentials`), a public client `web` (`authorization_code`,
//!   `refresh_token`) and a user `alice` with a password;
//! - the load generator, on the same runtime: N keep-alive HTTP/1.1
//!   connections, each sending requests back to back.
//!
//! The paths, each warmed up for 1 s and then measured:
//!
//! 1. `client_credentials`: `POST /token` with Basic credentials;
//! 2. `refresh_token (rotating)`: each connection starts from a refresh
//!    token of its own (from one code exchange) and always presents the one
//!    the previous response returned;
//! 3. `authorize (SSO) + code exchange`: alice signs in once through the
//!    `/authorize` and `/login/password` pages (argon2id makes that slow, so
//!    it is done once); then each iteration sends `GET /authorize` with the
//!    session cookie, which is answered at once by a 303 carrying a code, and
//!    exchanges the code with its PKCE verifier at `POST /token`.
//!
//! Only 200 responses (303 for `/authorize`) count; anything else aborts the
//! run with the server's answer. Latencies are per operation (one request,
//! or the authorize + token pair). The user paths sign two JWTs per
//! operation (access token and ID token: the scope has `openid`).
//!
//! Run with `cargo bench -p stepup-server --bench token` (command-line
//! arguments, such as cargo's `--bench`, are ignored). Settings:
//! `STEPUP_BENCH_CONNECTIONS` (default 16), `STEPUP_BENCH_SECONDS` (measured
//! seconds per path, default 5), `STEPUP_BENCH_DB_DIR` (where the temporary
//! database directory is made; default the system's temporary directory).
//! Progress goes to stderr, the table to stdout and the figures to
//! `$CARGO_TARGET_DIR/stepup-bench/token.json` (`target/` of the workspace
//! when the variable is unset).
//!
//! Server, database and load generator share the machine's cores: the
//! figures compare the paths with each other and with the signing ceiling,
//! they are not a capacity claim.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use stepup_core::jws::{SigningHeader, SigningKey, sign_compact};
use stepup_core::pkce::CodeChallenge;
use stepup_core::{Clock, Scope, UnixTime};
use stepup_server::client::{AuthMethod, Registration, register};
use stepup_server::{Config, ServerState, Store, router, users};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const NOW: i64 = 1_800_000_000;
const API: &str = "https://api.example";
const WARM_UP: Duration = Duration::from_secs(1);
const BASELINE: Duration = Duration::from_secs(2);

const SERVICE: &str = "svc";
const WEB: &str = "web";
const REDIRECT: &str = "https://app.example/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
const CLIENT_CREDENTIALS_FORM: &str = "grant_type=client_credentials&scope=accounts%3Aread";

/// Quoted from issue #3, not measured here: npm `oidc-provider` issuing
/// ES256 client-credentials tokens on this kind of machine.
const REFERENCE: &str = "npm oidc-provider";
const REFERENCE_PER_S: f64 = 4_600.0;

use stepup_benchkit::{Result, env_setting, percentile, round_to, thousands, write_figures};

struct Settings {
    connections: usize,
    seconds: u64,
    db_dir: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        Ok(Self {
            connections: env_setting("STEPUP_BENCH_CONNECTIONS", 16)?,
            seconds: env_setting("STEPUP_BENCH_SECONDS", 5)?,
            db_dir: std::env::var_os("STEPUP_BENCH_DB_DIR").map(PathBuf::from),
        })
    }

    fn measured(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

// ---------------------------------------------------------------------------
// The baseline

/// ES256 signatures of a typical access token per second, on this thread.
fn signing_ceiling() -> Result<(f64, u64)> {
    let rng = SystemRandom::new();
    let key = SigningKey::generate_es256(&rng).map_err(|e| format!("ES256 key: {e}"))?;
    let kid = "es256-1800000000-Qm9uam91cg";
    // The claims `mint_access_token` puts in a user's token (RFC 9068 §2.2).
    let claims = json!({
        "iss": "http://127.0.0.1:8080",
        "sub": "q1Bv2cXoTgQWm8yJr6Lk0A",
        "aud": API,
        "exp": NOW + 600,
        "iat": NOW,
        "jti": "b8rJc1yHfQ0x3oXK7u2n5w",
        "client_id": WEB,
        "scope": "openid profile",
        "acr": "urn:stepup:acr:pwd",
        "amr": ["pwd"],
        "auth_time": NOW,
    });
    let payload = serde_json::to_vec(&claims).map_err(|e| e.to_string())?;
    let header = SigningHeader::new().typ("at+jwt").kid(kid);
    let mut signed: u64 = 0;
    let mut bytes = 0usize;
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            let token = sign_compact(&header, &payload, &key, &rng).map_err(|e| format!("signing: {e}"))?;
            bytes = bytes.wrapping_add(token.len());
            signed += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= BASELINE {
            std::hint::black_box(bytes);
            return Ok((signed as f64 / elapsed.as_secs_f64(), signed));
        }
    }
}

// ---------------------------------------------------------------------------
// The server

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        UnixTime(NOW)
    }
}

/// The configuration of `tests/it/fixtures.rs`.
fn config_toml(issuer: &str, database_url: &str) -> String {
    format!(
        r#"
issuer = "{issuer}"
database_url = "{database_url}"
audiences = ["{API}", "https://other-api.example"]

[[level]]
name = "pwd"
acr = "urn:stepup:acr:pwd"
factors = [["pwd"]]

[[level]]
name = "mfa"
acr = "urn:stepup:acr:mfa"
factors = [["pwd", "otp"], ["hwk"]]

[scopes]
"payments:write" = {{ level = "mfa", max_age = 300 }}
"#
    )
}

/// A fresh directory for the database.
fn database_dir(parent: Option<&Path>) -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let dir = parent.join(format!("stepup-token-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

struct Server {
    addr: SocketAddr,
    base: String,
    /// The Basic credentials of the confidential client.
    service_authorization: HeaderValue,
}

/// Starts the server over a new SQLite database in `dir`, with its clients and user.
async fn start_server(dir: &Path) -> Result<Server> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local address: {e}"))?;
    let base = format!("http://{addr}");
    let database_url = format!("sqlite://{}", dir.join("stepup.db").display());
    let config = Config::from_toml("bench.toml", &config_toml(&base, &database_url))
        .map_err(|e| format!("configuration: {e}"))?;
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| format!("database: {e}"))?;
    let state = ServerState::new(config, store, Arc::new(FixedClock))
        .await
        .map_err(|e| format!("server state: {e}"))?;
    let rng = SystemRandom::new();
    let scopes = |names: &[&str]| -> Vec<Scope> { names.iter().map(|s| Scope::new(*s).unwrap()).collect() };
    let registration = |id: &str, auth_method, grants: &[&str], scope_names: &[&str]| Registration {
        client_id: id.into(),
        auth_method,
        redirect_uris: vec![REDIRECT.into()],
        grant_types: grants.iter().map(|g| g.to_string()).collect(),
        scopes: scopes(scope_names),
        require_par: false,
        require_dpop: false,
        jwks: None,
    };
    let (_, secret) = register(
        &state.store,
        registration(
            SERVICE,
            AuthMethod::ClientSecretBasic,
            &["client_credentials"],
            &["accounts:read"],
        ),
        NOW,
        &rng,
    )
    .await
    .map_err(|e| format!("registering {SERVICE}: {e}"))?;
    let secret = secret.ok_or("a confidential client without a secret")?;
    register(
        &state.store,
        registration(
            WEB,
            AuthMethod::None,
            &["authorization_code", "refresh_token"],
            &["profile", "payments:write"],
        ),
        NOW,
        &rng,
    )
    .await
    .map_err(|e| format!("registering {WEB}: {e}"))?;
    users::add_user(&state.store, USER, PASSWORD, NOW, &rng)
        .await
        .map_err(|e| format!("adding {USER}: {e}"))?;

    let listener = listener.tap_io(|tcp| {
        // Small responses go out at once, as the client's requests do.
        let _ = tcp.set_nodelay(true);
    });
    let app = router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Both parts are form-encoded first (RFC 6749 §2.3.1); these need no escaping.
    let basic = STANDARD.encode(format!("{SERVICE}:{}", secret.expose_secret()));
    let service_authorization =
        HeaderValue::from_str(&format!("Basic {basic}")).map_err(|e| format!("header: {e}"))?;
    Ok(Server {
        addr,
        base,
        service_authorization,
    })
}

/// The authorization request of `web`, as a query string.
fn authorize_query() -> Result<String> {
    let challenge = CodeChallenge::from_verifier(VERIFIER).map_err(|e| format!("PKCE: {e}"))?;
    Ok(url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", WEB),
            ("redirect_uri", REDIRECT),
            ("scope", "openid profile"),
            ("state", "st-1"),
            ("nonce", "n-1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .finish())
}

/// The value of a hidden input of a login page.
fn hidden(page: &str, name: &str) -> Result<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .ok_or_else(|| format!("no {name} on the login page: {page}"))?
        + marker.len();
    let end = page[start..]
        .find('"')
        .ok_or_else(|| format!("unterminated {name} on the login page"))?;
    Ok(page[start..start + end].to_owned())
}

/// Signs alice in once, in a cookie-keeping browser, through the login
/// page; returns the session cookie (`stepup_session=…`) and the code the
/// login ended with.
async fn browser_login(base: &str, query: &str) -> Result<(HeaderValue, String)> {
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("browser: {e}"))?;
    let failed = |e: reqwest::Error| format!("browser login: {e}");
    let page = browser
        .get(format!("{base}/authorize?{query}"))
        .send()
        .await
        .map_err(failed)?;
    let status = page.status();
    let page = page.text().await.map_err(failed)?;
    if status != StatusCode::OK || !page.contains("name=\"password\"") {
        return Err(format!(
            "GET /authorize without a session answered {status}, not the password page: {page}"
        ));
    }
    let form = [
        ("request", hidden(&page, "request")?),
        ("csrf", hidden(&page, "csrf")?),
        ("username", USER.to_owned()),
        ("password", PASSWORD.to_owned()),
    ];
    let done = browser
        .post(format!("{base}/login/password"))
        .form(&form)
        .send()
        .await
        .map_err(failed)?;
    let status = done.status();
    let cookie = done
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("stepup_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let location = done
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = done.text().await.map_err(failed)?;
    if status != StatusCode::SEE_OTHER {
        return Err(format!("POST /login/password answered {status}: {body}"));
    }
    let cookie = cookie.ok_or("the login set no session cookie")?;
    let code = code_of(location.as_deref())?;
    let cookie = HeaderValue::from_str(&cookie).map_err(|e| format!("cookie: {e}"))?;
    Ok((cookie, code))
}

/// The `code` of a redirect to the client.
fn code_of(location: Option<&str>) -> Result<String> {
    let location = location.ok_or("a 303 without Location")?;
    let url = url::Url::parse(location).map_err(|e| format!("Location {location:?}: {e}"))?;
    url.query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| format!("no code in the redirect {location}"))
}

// ---------------------------------------------------------------------------
// The load generator

/// A response, whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn expect(self, status: StatusCode, what: &str) -> Result<Self> {
        if self.status == status {
            Ok(self)
        } else {
            Err(format!(
                "{what} answered {}, expected {status}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        }
    }
}

/// One keep-alive HTTP/1.1 client connection.
struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        // Runs until the sender is dropped; failures show up in `send`.
        tokio::spawn(connection);
        Ok(Self { addr, sender })
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Reply> {
        let target = format!("{} {}", request.method(), request.uri().path());
        let failed = |e: hyper::Error| format!("{target} on {}: {e}", self.addr);
        self.sender.ready().await.map_err(failed)?;
        let response = self.sender.send_request(request).await.map_err(failed)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(failed)?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `POST /token` with a form body.
    async fn token(&mut self, form: Bytes, authorization: Option<&HeaderValue>) -> Result<Reply> {
        let mut request = Request::post("/token")
            .header(HOST, HeaderValue::from_static("127.0.0.1"))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let request = request
            .body(Full::new(form))
            .map_err(|e| format!("request: {e}"))?;
        self.send(request).await
    }

    /// `GET /authorize` with the session cookie: the code of the 303.
    async fn authorize(&mut self, path_and_query: &str, cookie: &HeaderValue) -> Result<String> {
        let request = Request::get(path_and_query)
            .header(HOST, HeaderValue::from_static("127.0.0.1"))
            .header(COOKIE, cookie.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("request: {e}"))?;
        let reply = self
            .send(request)
            .await?
            .expect(StatusCode::SEE_OTHER, "GET /authorize with a live session")?;
        code_of(reply.headers.get(LOCATION).and_then(|v| v.to_str().ok()))
    }

    /// `POST /token` with `grant_type=authorization_code`: the token response.
    async fn exchange(&mut self, code: &str) -> Result<Bytes> {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", WEB),
            ])
            .finish();
        let reply = self
            .token(Bytes::from(form), None)
            .await?
            .expect(StatusCode::OK, "POST /token (authorization_code)")?;
        Ok(reply.body)
    }

    /// `POST /token` with `grant_type=refresh_token`: the token response.
    async fn refresh(&mut self, refresh_token: &str) -> Result<Bytes> {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", WEB),
            ])
            .finish();
        let reply = self
            .token(Bytes::from(form), None)
            .await?
            .expect(StatusCode::OK, "POST /token (refresh_token)")?;
        Ok(reply.body)
    }
}

/// A string member of a token response, found without parsing all of it
/// (serde_json writes `"name":"value"`, and token values need no escapes).
fn string_member(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let marker = format!("\"{name}\":\"");
    let start = text.find(&marker)? + marker.len();
    let end = text[start..].find('"')?;
    Some(text[start..start + end].to_owned())
}

/// What one connection does, over and over.
enum Job {
    ClientCredentials {
        authorization: HeaderValue,
    },
    Refresh {
        token: String,
    },
    Code {
        path_and_query: Arc<str>,
        cookie: HeaderValue,
    },
}

impl Job {
    async fn once(&mut self, connection: &mut Connection) -> Result<()> {
        match self {
            Job::ClientCredentials { authorization } => {
                connection
                    .token(
                        Bytes::from_static(CLIENT_CREDENTIALS_FORM.as_bytes()),
                        Some(authorization),
                    )
                    .await?
                    .expect(StatusCode::OK, "POST /token (client_credentials)")?;
            }
            Job::Refresh { token } => {
                let body = connection.refresh(token).await?;
                *token = string_member(&body, "refresh_token").ok_or_else(|| {
                    format!(
                        "a refresh without a new refresh token: {}",
                        String::from_utf8_lossy(&body)
                    )
                })?;
            }
            Job::Code {
                path_and_query,
                cookie,
            } => {
                let code = connection.authorize(path_and_query, cookie).await?;
                connection.exchange(&code).await?;
            }
        }
        Ok(())
    }
}

/// Operations back to back on one connection until `end`; returns the
/// latency (µs) of each one completed in `[start, end)`.
async fn drive(addr: SocketAddr, mut job: Job, start: Instant, end: Instant) -> Result<Vec<u32>> {
    let mut connection = Connection::open(addr).await?;
    let mut latencies = Vec::with_capacity(1 << 15);
    loop {
        let sent = Instant::now();
        if sent >= end {
            return Ok(latencies);
        }
        job.once(&mut connection).await?;
        let done = Instant::now();
        if done >= start && done < end {
            latencies.push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
        }
    }
}

/// The figures of one path.
struct Measured {
    name: &'static str,
    key: &'static str,
    /// JWTs signed per operation.
    signatures: u32,
    per_s: f64,
    /// Sorted.
    latencies: Vec<u32>,
}

impl Measured {
    fn json(&self, ceiling: f64) -> Value {
        json!({
            "per_s": self.per_s.round() as u64,
            "p50_us": percentile(&self.latencies, 0.50),
            "p99_us": percentile(&self.latencies, 0.99),
            "operations_measured": self.latencies.len(),
            "jwts_signed_per_operation": self.signatures,
            "over_signing_ceiling": round_to(self.per_s / ceiling, 3),
        })
    }
}

/// One path: every connection runs its job through the warm-up and the
/// measured window.
async fn measure(
    name: &'static str,
    key: &'static str,
    signatures: u32,
    addr: SocketAddr,
    jobs: Vec<Job>,
    settings: &Settings,
) -> Result<Measured> {
    eprintln!(
        "{name}: {} connections, {} s warm-up, {} s measured",
        jobs.len(),
        WARM_UP.as_secs(),
        settings.seconds
    );
    let start = Instant::now() + WARM_UP;
    let end = start + settings.measured();
    let mut connections = JoinSet::new();
    for job in jobs {
        connections.spawn(drive(addr, job, start, end));
    }
    let mut latencies = Vec::new();
    while let Some(joined) = connections.join_next().await {
        let mut connection = joined.map_err(|e| format!("load connection: {e}"))??;
        latencies.append(&mut connection);
    }
    latencies.sort_unstable();
    let per_s = latencies.len() as f64 / settings.measured().as_secs_f64();
    eprintln!(
        "{name}: {}/s (p50 {} µs, p99 {} µs)",
        thousands(per_s),
        thousands(f64::from(percentile(&latencies, 0.50))),
        thousands(f64::from(percentile(&latencies, 0.99))),
    );
    Ok(Measured {
        name,
        key,
        signatures,
        per_s,
        latencies,
    })
}

// ---------------------------------------------------------------------------
// Figures

// ---------------------------------------------------------------------------
// The run

/// Checks the paths once before loading them: an ES256 `at+jwt` from
/// `client_credentials`, the login code exchanged for access, ID and refresh
/// tokens, and an SSO authorization answered with a code.
async fn preflight(
    server: &Server,
    path_and_query: &str,
    login_code: &str,
    cookie: &HeaderValue,
) -> Result<()> {
    let mut connection = Connection::open(server.addr).await?;
    let reply = connection
        .token(
            Bytes::from_static(CLIENT_CREDENTIALS_FORM.as_bytes()),
            Some(&server.service_authorization),
        )
        .await?
        .expect(StatusCode::OK, "POST /token (client_credentials)")?;
    let token = string_member(&reply.body, "access_token").ok_or("client_credentials: no access_token")?;
    let header = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .unwrap_or(Value::Null);
    if header["alg"] != "ES256" || header["typ"] != "at+jwt" {
        return Err(format!(
            "the access token's header is {header}, expected ES256 at+jwt"
        ));
    }
    let body = connection.exchange(login_code).await?;
    for member in ["access_token", "id_token", "refresh_token"] {
        if string_member(&body, member).is_none() {
            return Err(format!(
                "the code exchange returned no {member}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    let code = connection.authorize(path_and_query, cookie).await?;
    connection.exchange(&code).await?;
    Ok(())
}

async fn run(settings: Settings) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("baseline: signing ES256 access tokens on one thread for ~2 s");
    let (ceiling, signed) = signing_ceiling()?;
    eprintln!("baseline: {} tokens/s ({signed} signed)", thousands(ceiling));

    let dir = database_dir(settings.db_dir.as_deref())?;
    eprintln!("server: SQLite in {}", dir.display());
    let server = start_server(&dir).await?;
    let query = authorize_query()?;
    let path_and_query: Arc<str> = Arc::from(format!("/authorize?{query}"));
    let login_started = Instant::now();
    let (cookie, login_code) = browser_login(&server.base, &query).await?;
    eprintln!(
        "server: {} on {}, {USER} signed in through the login page in {} ms",
        server.base,
        server.addr,
        login_started.elapsed().as_millis()
    );
    preflight(&server, &path_and_query, &login_code, &cookie).await?;

    let mut results = Vec::new();
    let jobs = (0..settings.connections)
        .map(|_| Job::ClientCredentials {
            authorization: server.service_authorization.clone(),
        })
        .collect();
    results.push(
        measure(
            "client_credentials",
            "client_credentials",
            1,
            server.addr,
            jobs,
            &settings,
        )
        .await?,
    );

    // One refresh token per connection, each from its own code exchange.
    let mut jobs = Vec::with_capacity(settings.connections);
    let mut setup = Connection::open(server.addr).await?;
    for _ in 0..settings.connections {
        let code = setup.authorize(&path_and_query, &cookie).await?;
        let body = setup.exchange(&code).await?;
        let token = string_member(&body, "refresh_token").ok_or("a code exchange without a refresh token")?;
        jobs.push(Job::Refresh { token });
    }
    drop(setup);
    results.push(
        measure(
            "refresh_token (rotating)",
            "refresh_token",
            2,
            server.addr,
            jobs,
            &settings,
        )
        .await?,
    );

    let jobs = (0..settings.connections)
        .map(|_| Job::Code {
            path_and_query: Arc::clone(&path_and_query),
            cookie: cookie.clone(),
        })
        .collect();
    results.push(
        measure(
            "authorize (SSO) + code exchange",
            "authorize_and_code_exchange",
            2,
            server.addr,
            jobs,
            &settings,
        )
        .await?,
    );

    let client_credentials = results[0].per_s;
    let over_reference = client_credentials / REFERENCE_PER_S;
    println!(
        "token endpoint over HTTP on loopback, {} connections, {} s each, SQLite, {cores} cores shared by server and load",
        settings.connections, settings.seconds
    );
    println!(
        "{:<33} {:>10} {:>8} {:>8}   × one-core signing ceiling",
        "path", "per second", "p50 µs", "p99 µs"
    );
    println!(
        "{:<33} {:>10} {:>8} {:>8}   {:.2}",
        "baseline: ES256 sign (1 core)",
        thousands(ceiling),
        "-",
        "-",
        1.0
    );
    for m in &results {
        println!(
            "{:<33} {:>10} {:>8} {:>8}   {:.2}",
            m.name,
            thousands(m.per_s),
            thousands(f64::from(percentile(&m.latencies, 0.50))),
            thousands(f64::from(percentile(&m.latencies, 0.99))),
            m.per_s / ceiling,
        );
    }
    println!("(refresh_token and code exchange each sign two JWTs: access token and ID token, scope openid)");
    println!(
        "reference (issue #3, quoted, not measured here): {REFERENCE} ≈ {} ES256 client-credentials tokens/s on this kind of machine; client_credentials / that = {over_reference:.1}x",
        thousands(REFERENCE_PER_S)
    );

    let mut figures = json!({
        "bench": "token",
        "transport": "HTTP/1.1 keep-alive on loopback, in-process server and load generator",
        "database": "SQLite",
        "database_dir": dir.display().to_string(),
        "connections": settings.connections,
        "warm_up_s": WARM_UP.as_secs(),
        "measured_s": settings.seconds,
        "cores": cores,
        "baseline_es256_sign": {
            "per_s": ceiling.round() as u64,
            "threads": 1,
            "measured_s": BASELINE.as_secs(),
            "signed": signed,
        },
        "reference": {
            "measured_here": false,
            "source": "issue #3 (quoted)",
            "setup": REFERENCE,
            "client_credentials_per_s": REFERENCE_PER_S as u64,
            "client_credentials_over_reference": round_to(over_reference, 2),
        },
    });
    for m in &results {
        figures[m.key] = m.json(ceiling);
    }
    let path = write_figures("token.json", &figures)?;
    eprintln!("figures written to {}", path.display());
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        eprintln!("could not remove {}: {e}", dir.display());
    }
    Ok(())
}

fn main() {
    // Command-line arguments (cargo bench passes `--bench`) are ignored.
    let outcome = Settings::from_env().and_then(|settings| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?
            .block_on(run(settings))
    });
    if let Err(message) = outcome {
        eprintln!("token bench aborted: {message}");
        std::process::exit(1);
    }
}
