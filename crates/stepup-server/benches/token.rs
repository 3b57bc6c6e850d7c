//! What the authorization server delivers over HTTP: tokens per second and
//! latency of `POST /token` for `client_credentials`, rotating
//! `refresh_token` and `authorization_code` (after an SSO `GET /authorize`),
//! RFC 7662 introspection, and the latency of a whole step-up; next to the
//! bare cost of one ES256 signature measured in the same run, and against
//! the npm `oidc-provider` (node-oidc-provider) serving the same flows,
//! measured in alternation with stepup in the same run.
//!
//! One process holds everything but node:
//!
//! - the baseline: one thread signs a typical RFC 9068 access token claim
//!   set with `stepup_core::jws::sign_compact` (ES256) back to back for
//!   about 2 s, before anything else runs: the tokens one core could sign
//!   if signing were all the server did;
//! - stepup's server: `stepup_server::router` on 127.0.0.1 (ephemeral port)
//!   on a multi-thread tokio runtime, over a fresh SQLite database in a
//!   temporary directory, with the configuration of `tests/it/fixtures.rs`
//!   (plus a 30 s lifetime for the `mfa` level) and a clock the bench sets;
//!   a confidential client `svc` (`client_secret_basic`,
//!   `client_credentials`), a resource server `rs` (`client_secret_basic`,
//!   calls `/introspect`), a public client `web` (`authorization_code` with
//!   PKCE, `refresh_token`), a user `alice` with a password and a user `bob`
//!   with a password and TOTP;
//! - the comparison: `node bench/oidc-provider/server.mjs` (the npm
//!   `oidc-provider`, version pinned in that directory's `package-lock.json`;
//!   `npm ci` runs there first when `node_modules` is missing), started by
//!   the bench on an ephemeral loopback port and killed at the end,
//!   configured the same way: one ES256 key, RFC 9068 JWT access tokens for
//!   the API (resource indicator, `accessTokenFormat: 'jwt'`), the same
//!   clients (PKCE S256 required, refresh tokens rotated at every use, as
//!   stepup does), `alice` signed in once through a login page, then SSO
//!   `/authorize` answered at once with a code (`loadExistingGrant`); its
//!   routes are renamed to stepup's (`/authorize`, `/token`, `/introspect`)
//!   so that both get the very same requests;
//! - the load generator, on the bench's runtime: N keep-alive HTTP/1.1
//!   connections, each sending requests back to back.
//!
//! The flows, each measured in R alternating rounds (stepup, then
//! oidc-provider, then stepup…), each round warmed up for 0.5 s on fresh
//! connections and then measured:
//!
//! 1. `client_credentials`: `POST /token` with Basic credentials;
//! 2. `refresh_token (rotating)`: each connection starts from a refresh
//!    token of its own (from one code exchange) and always presents the one
//!    the previous response returned (across rounds too);
//! 3. `authorize (SSO) + code exchange`: `alice` signs in once through the
//!    login page (argon2id makes that slow at stepup, so it is done once);
//!    then each iteration sends `GET /authorize` with the session cookie,
//!    which is answered at once by a 303 carrying a code, and exchanges the
//!    code with its PKCE verifier at `POST /token`;
//! 4. `introspection`: `POST /introspect` with the resource server's Basic
//!    credentials, of one valid access token of `svc`, again and again, as
//!    a resource server asks about the token of a client calling it: at
//!    stepup an ES256 JWT (its signature checked at the first request, then
//!    remembered by the key ring; a revocation look-up in the database at
//!    every request); at oidc-provider an opaque token of the same client (a
//!    look-up in memory), because oidc-provider refuses to introspect JWTs
//!    ("Structured JWT Tokens cannot be introspected"): the two do different
//!    work for the same request, and the row says so.
//!
//! The ratio stepup / oidc-provider of a flow is the median, over rounds, of
//! stepup's round divided by oidc-provider's round just after it (drift on a
//! shared machine disturbs paired rounds least); the spread is the min and
//! max of those round ratios. Issue #10's target is ≥ 5× for every flow.
//!
//! Then, on the idle server, the step-up round trip (stepup only: the npm
//! package has no step-up): `bob` holds a password session (signed in once,
//! through the login page); each round trip asks `GET /authorize` with
//! `acr_values=urn:stepup:acr:mfa` and the session cookie, gets the code page
//! only (the session's password counts; the page asking for a password
//! aborts the run), posts the current TOTP code to `/login/otp`, gets the
//! 303 with the authorization code, and exchanges it at `POST /token` (its
//! access token must say `acr` mfa). The figure is the sum of the three
//! requests' times, each from sending the request to the end of the
//! response body on a keep-alive loopback connection (the bench's own work
//! between them, parsing the page and computing the code, is not counted):
//! server time plus three loopback round trips. A TOTP code works once per
//! 30 s step, and an `mfa` session keeps its level for 30 s here: before
//! each round trip the bench moves the server's clock 31 s ahead, so each
//! round trip meets a session whose `mfa` has lapsed and whose password
//! still counts, and types a code of a new step: the real work of a
//! step-up, nothing skipped. Issue #10's target: ≤ 10 ms.
//!
//! Only the expected answers count (200, 303 for `/authorize`, `active:
//! true` for introspection); anything else aborts the run with the server's
//! answer. Latencies are per operation (one request, or the authorize +
//! token pair). The user paths sign two JWTs per operation at both servers
//! (access token and ID token: the scope has `openid`).
//!
//! Fairness, read before quoting a ratio:
//!
//! - storage: stepup commits every code, refresh token rotation and session
//!   change to SQLite (each commit waits for the disk's fsync), while
//!   oidc-provider's default adapter keeps everything in process memory
//!   (an LRU of 1,000 entries) and writes nothing: a restart loses all of
//!   it. `STEPUP_BENCH_DB_DIR=/dev/shm` puts stepup's database on tmpfs,
//!   which takes the disk out of stepup's figures (still SQLite, still
//!   durable against a process crash, not against a power cut); the
//!   figures file records the file system the database was on;
//! - cores: node runs oidc-provider's JavaScript on one thread, while
//!   stepup's runtime uses both cores; the load generator shares the same
//!   2 cores with whichever server runs (node's idle while stepup runs, and
//!   the other way round);
//! - introspection: see above, a remembered signature check and a database
//!   read against an in-memory look-up;
//! - oidc-provider's rounds of a writing flow slow down a little from round
//!   to round (refresh: about 1,150/s in the first round, 900/s in the
//!   fifth, in one run), which fits its in-memory adapter walking the
//!   grant's whole list of tokens at every save (all of alice's codes and
//!   refresh tokens belong to one grant, as a session's do); not
//!   investigated further. Its first round of the first flow is also slower
//!   (JIT warm-up): the min–max spread of the ratios shows both;
//! - oidc-provider 9 says it wants node 22 or later; on node 20 it runs, with
//!   a warning.
//!
//! Run with `cargo bench -p stepup-server --bench token` (command-line
//! arguments, such as cargo's `--bench`, are ignored). Settings:
//! `STEPUP_BENCH_CONNECTIONS` (default 16, the same for both servers),
//! `STEPUP_BENCH_SECONDS` (measured seconds per round, default 2),
//! `STEPUP_BENCH_ROUNDS` (rounds per flow and server, default 5),
//! `STEPUP_BENCH_STEP_UPS` (step-up round trips, default 200, at most
//! 1,000), `STEPUP_BENCH_DB_DIR` (where the temporary database directory is
//! made; default the system's temporary directory), `STEPUP_BENCH_FLOWS`
//! (a comma-separated list of the flows to measure, by their keys in the
//! figures file, for profiling one of them; default all). Without `node` or `npm`
//! (or when `npm ci` or the server fails to start), the bench says why,
//! measures stepup alone and marks the comparison as not measured.
//! Progress goes to stderr, the tables to stdout and the figures to
//! `$CARGO_TARGET_DIR/stepup-bench/token.json` (`target/` of the workspace
//! when the variable is unset).
//!
//! Servers, database and load generator share the machine's cores: the
//! figures compare the paths with each other, with the signing ceiling and
//! with oidc-provider on the same machine at the same time; they are not a
//! capacity claim.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
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
use reqwest::cookie::CookieStore;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use stepup_core::jws::{SigningHeader, SigningKey, sign_compact};
use stepup_core::pkce::CodeChallenge;
use stepup_core::totp::TotpSecret;
use stepup_core::{Clock, Scope, UnixTime};
use stepup_server::client::{AuthMethod, Registration, register};
use stepup_server::{Config, ServerState, Store, router, users};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use stepup_benchkit::headline::{Headline, Target as Goal, headlines_json};
use stepup_benchkit::{Result, Series, env_setting, median, percentile, round_to, thousands, write_figures};

const NOW: i64 = 1_800_000_000;
const API: &str = "https://api.example";
/// Each round's warm-up, on fresh connections.
const WARM_UP: Duration = Duration::from_millis(500);
const BASELINE: Duration = Duration::from_secs(2);

const SERVICE: &str = "svc";
const RESOURCE_SERVER: &str = "rs";
const WEB: &str = "web";
const REDIRECT: &str = "https://app.example/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const USER: &str = "alice";
const STEP_UP_USER: &str = "bob";
const PASSWORD: &str = "correct horse battery";
const MFA: &str = "urn:stepup:acr:mfa";
const CLIENT_CREDENTIALS_FORM: &str = "grant_type=client_credentials&scope=accounts%3Aread";

/// How long an `mfa` session keeps its level in the bench's configuration,
/// and how far the clock moves before each step-up (a new TOTP step too).
const MFA_LIFETIME_S: i64 = 30;
const STEP_UP_CLOCK_STEP_S: i64 = MFA_LIFETIME_S + 1;
/// Sessions last 12 h (the default): the clock may move that far at most.
const MAX_STEP_UPS: usize = 1_000;

/// Issue #10's targets.
const TARGET_OVER_OIDC_PROVIDER: f64 = 5.0;
const TARGET_STEP_UP_US: u32 = 10_000;

/// The comparison's directory, with `package.json`, `package-lock.json` and `server.mjs`.
const OIDC_PROVIDER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/oidc-provider");
/// `client_credentials` for the resource whose tokens oidc-provider issues
/// opaque (`urn:bench:opaque`), for introspection.
const OPAQUE_CLIENT_CREDENTIALS_FORM: &str =
    "grant_type=client_credentials&scope=accounts%3Aread&resource=urn%3Abench%3Aopaque";
/// How long node may take to say it serves.
const NODE_START: Duration = Duration::from_secs(30);

struct Settings {
    connections: usize,
    seconds: u64,
    rounds: usize,
    step_ups: usize,
    db_dir: Option<PathBuf>,
    flows: Vec<Flow>,
}

impl Settings {
    fn from_env() -> Result<Self> {
        let settings = Self {
            connections: env_setting("STEPUP_BENCH_CONNECTIONS", 16)?,
            seconds: env_setting("STEPUP_BENCH_SECONDS", 2)?,
            rounds: env_setting("STEPUP_BENCH_ROUNDS", 5)?,
            step_ups: env_setting("STEPUP_BENCH_STEP_UPS", 200)?,
            db_dir: std::env::var_os("STEPUP_BENCH_DB_DIR").map(PathBuf::from),
            flows: match std::env::var("STEPUP_BENCH_FLOWS") {
                Ok(list) => list
                    .split(',')
                    .map(|key| {
                        FLOWS.into_iter().find(|f| f.key() == key.trim()).ok_or_else(|| {
                            let keys: Vec<_> = FLOWS.iter().map(|f| f.key()).collect();
                            format!(
                                "STEPUP_BENCH_FLOWS: unknown flow {key:?} (flows: {})",
                                keys.join(", ")
                            )
                        })
                    })
                    .collect::<Result<_>>()?,
                Err(_) => FLOWS.to_vec(),
            },
        };
        if settings.step_ups > MAX_STEP_UPS {
            return Err(format!(
                "STEPUP_BENCH_STEP_UPS={}: at most {MAX_STEP_UPS} (each moves the clock {STEP_UP_CLOCK_STEP_S} s; sessions last 12 h)",
                settings.step_ups
            ));
        }
        Ok(settings)
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
// stepup's server

/// The server's clock: fixed, moved only by the step-up round trips.
struct BenchClock(AtomicI64);

impl Clock for BenchClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::Relaxed))
    }
}

impl BenchClock {
    /// Moves the clock `seconds` ahead; the new time.
    fn advance(&self, seconds: i64) -> UnixTime {
        UnixTime(self.0.fetch_add(seconds, Ordering::Relaxed) + seconds)
    }
}

/// The configuration of `tests/it/fixtures.rs`, with a lifetime for `mfa`.
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
acr = "{MFA}"
factors = [["pwd", "otp"], ["hwk"]]
lifetime_seconds = {MFA_LIFETIME_S}

[scopes]
"payments:write" = {{ level = "mfa", max_age = 300 }}

# The load comes from one address on purpose: the figures are the
# endpoint's own, never a rate limit's refusals.
[rate_limit]
enabled = false
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

/// The type of the file system `path` is on (`/proc/mounts`), or `unknown`.
fn file_system_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/mounts")
        .ok()
        .and_then(|mounts| {
            mounts
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split_whitespace().skip(1);
                    Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
                })
                .filter(|(mount, _)| path.starts_with(mount))
                .max_by_key(|(mount, _)| mount.len())
                .map(|(_, kind)| kind)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `Basic base64(id:secret)`; both parts are form-encoded first (RFC 6749
/// §2.3.1), and these need no escaping.
fn basic(id: &str, secret: &str) -> Result<HeaderValue> {
    let encoded = STANDARD.encode(format!("{id}:{secret}"));
    HeaderValue::from_str(&format!("Basic {encoded}")).map_err(|e| format!("header: {e}"))
}

struct Server {
    addr: SocketAddr,
    base: String,
    clock: Arc<BenchClock>,
    /// The Basic credentials of the confidential client.
    service_authorization: HeaderValue,
    /// The Basic credentials of the resource server.
    resource_server_authorization: HeaderValue,
    /// The TOTP secret of the step-up user.
    step_up_totp: TotpSecret,
}

/// Starts the server over a new SQLite database in `dir`, with its clients and users.
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
    let clock = Arc::new(BenchClock(AtomicI64::new(NOW)));
    let state = ServerState::new(config, store, Arc::clone(&clock) as Arc<dyn Clock>)
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
        audiences: Vec::new(),
    };
    let mut secrets = Vec::new();
    for id in [SERVICE, RESOURCE_SERVER] {
        let (_, secret) = register(
            &state.store,
            registration(
                id,
                AuthMethod::ClientSecretBasic,
                &["client_credentials"],
                &["accounts:read"],
            ),
            NOW,
            &rng,
        )
        .await
        .map_err(|e| format!("registering {id}: {e}"))?;
        let secret = secret.ok_or("a confidential client without a secret")?;
        secrets.push(basic(id, secret.expose_secret())?);
    }
    let resource_server_authorization = secrets.pop().ok_or("no resource server")?;
    let service_authorization = secrets.pop().ok_or("no service client")?;
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
    for user in [USER, STEP_UP_USER] {
        users::add_user(&state.store, user, PASSWORD, NOW, &rng)
            .await
            .map_err(|e| format!("adding {user}: {e}"))?;
    }
    let step_up_totp = users::enroll_totp(&state.store, STEP_UP_USER, &rng)
        .await
        .map_err(|e| format!("TOTP for {STEP_UP_USER}: {e}"))?;

    let listener = listener.tap_io(|tcp| {
        // Small responses go out at once, as the client's requests do.
        let _ = tcp.set_nodelay(true);
    });
    let app = router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Server {
        addr,
        base,
        clock,
        service_authorization,
        resource_server_authorization,
        step_up_totp,
    })
}

/// The authorization request of `web`, as a query string, with
/// `acr_values` when given.
fn authorize_query(acr_values: Option<&str>) -> Result<String> {
    let challenge = CodeChallenge::from_verifier(VERIFIER).map_err(|e| format!("PKCE: {e}"))?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.extend_pairs([
        ("response_type", "code"),
        ("client_id", WEB),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    if let Some(acr) = acr_values {
        query.append_pair("acr_values", acr);
    }
    Ok(query.finish())
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

/// Signs `user` in once at stepup, in a cookie-keeping browser, through
/// the login page; returns the session cookie (`stepup_session=…`) and the
/// code the login ended with.
async fn browser_login(base: &str, query: &str, user: &str) -> Result<(HeaderValue, String)> {
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
        ("username", user.to_owned()),
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
// The npm oidc-provider

/// `node server.mjs`, killed when dropped.
struct NodeServer {
    child: Child,
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the comparison ran on.
struct OidcProvider {
    /// Keeps node running.
    _node: NodeServer,
    addr: SocketAddr,
    base: String,
    node_version: String,
    package_version: String,
    service_authorization: HeaderValue,
    resource_server_authorization: HeaderValue,
}

/// The first line `program args` prints, or why it could not run.
fn version_of(program: &str) -> Result<String> {
    let output = Command::new(program).arg("--version").output().map_err(|e| {
        format!("`{program} --version` did not run ({e}): is {program} installed and on PATH?")
    })?;
    if !output.status.success() {
        return Err(format!("`{program} --version` failed: {}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A random secret for a client of the comparison.
fn random_secret(rng: &SystemRandom) -> Result<String> {
    let mut bytes = [0u8; 24];
    rng.fill(&mut bytes).map_err(|_| "random bytes")?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Installs (when needed) and starts oidc-provider; waits until it serves.
async fn start_oidc_provider() -> Result<OidcProvider> {
    let dir = Path::new(OIDC_PROVIDER_DIR);
    let node_version = version_of("node")?;
    if !dir.join("node_modules").join("oidc-provider").is_dir() {
        let npm_version = version_of("npm")?;
        eprintln!("oidc-provider: npm ci in {} (npm {npm_version})", dir.display());
        let dir = dir.to_path_buf();
        let status = tokio::task::spawn_blocking(move || {
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::from(std::io::stderr()))
                .status()
        })
        .await
        .map_err(|e| format!("npm ci: {e}"))?
        .map_err(|e| format!("npm ci did not run: {e}"))?;
        if !status.success() {
            return Err(format!("npm ci in {OIDC_PROVIDER_DIR} failed: {status}"));
        }
    }
    let package: Value = std::fs::read(dir.join("node_modules/oidc-provider/package.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    let package_version = package["version"].as_str().unwrap_or("unknown").to_owned();

    let rng = SystemRandom::new();
    let (service_secret, resource_server_secret) = (random_secret(&rng)?, random_secret(&rng)?);
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(dir)
        .env("BENCH_API", API)
        .env("BENCH_REDIRECT", REDIRECT)
        .env("BENCH_USER", USER)
        .env("BENCH_PASSWORD", PASSWORD)
        .env("BENCH_SVC_SECRET", &service_secret)
        .env("BENCH_RS_SECRET", &resource_server_secret)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("node server.mjs did not start: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout from node")?;
    let node = NodeServer { child };
    // The first line says where it serves; the rest goes to stderr.
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = sender.send(lines.next());
        for line in lines.map_while(std::result::Result::ok) {
            eprintln!("oidc-provider: {line}");
        }
    });
    let first = tokio::time::timeout(NODE_START, receiver)
        .await
        .map_err(|_| format!("node server.mjs said nothing in {} s", NODE_START.as_secs()))?
        .map_err(|_| "node server.mjs ended before serving".to_owned())?
        .ok_or("node server.mjs ended before serving")?
        .map_err(|e| format!("reading node's output: {e}"))?;
    let ready: Value = serde_json::from_str(&first)
        .map_err(|e| format!("node server.mjs printed {first:?}, not its issuer: {e}"))?;
    let base = ready["issuer"]
        .as_str()
        .ok_or_else(|| format!("node server.mjs printed {first:?}, without an issuer"))?
        .to_owned();
    let addr = base
        .strip_prefix("http://")
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .ok_or_else(|| format!("issuer {base}: expected http://127.0.0.1:port"))?;
    Ok(OidcProvider {
        _node: node,
        addr,
        base,
        node_version,
        package_version,
        service_authorization: basic(SERVICE, &service_secret)?,
        resource_server_authorization: basic(RESOURCE_SERVER, &resource_server_secret)?,
    })
}

/// Signs alice in once at oidc-provider through its login page; returns
/// its session cookies and the code the login ended with.
async fn oidc_provider_login(base: &str, query: &str) -> Result<(HeaderValue, String)> {
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(Arc::clone(&jar))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("browser: {e}"))?;
    let failed = |e: reqwest::Error| format!("oidc-provider login: {e}");
    let mut url = format!("{base}/authorize?{query}");
    let mut response = browser.get(&url).send().await.map_err(failed)?;
    let mut code = None;
    for _ in 0..6 {
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let (true, Some(location)) = (status.is_redirection(), location) {
            if location.starts_with(REDIRECT) {
                code = Some(code_of(Some(&location))?);
                break;
            }
            url = if location.starts_with('/') {
                format!("{base}{location}")
            } else {
                location
            };
            response = browser.get(&url).send().await.map_err(failed)?;
            continue;
        }
        let body = response.text().await.map_err(failed)?;
        if status != StatusCode::OK || !body.contains("name=\"password\"") {
            return Err(format!("oidc-provider: {url} answered {status}: {body}"));
        }
        response = browser
            .post(&url)
            .form(&[("username", USER), ("password", PASSWORD)])
            .send()
            .await
            .map_err(failed)?;
    }
    let code = code.ok_or("oidc-provider: the login did not end with a code")?;
    let session_url = url::Url::parse(&format!("{base}/authorize")).map_err(|e| format!("{base}: {e}"))?;
    let cookies = jar
        .cookies(&session_url)
        .ok_or("oidc-provider: the login set no session cookie")?;
    let cookie = HeaderValue::from_bytes(cookies.as_bytes()).map_err(|e| format!("cookie: {e}"))?;
    Ok((cookie, code))
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
        self.post("/token", form, authorization, None).await
    }

    /// `POST path` with a form body, and the given credentials and cookies.
    async fn post(
        &mut self,
        path: &str,
        form: Bytes,
        authorization: Option<&HeaderValue>,
        cookie: Option<&HeaderValue>,
    ) -> Result<Reply> {
        let mut request = Request::post(path)
            .header(HOST, HeaderValue::from_static("127.0.0.1"))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        if let Some(value) = cookie {
            request = request.header(COOKIE, value.clone());
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

    /// `POST /introspect` of the token in `form`, which must be active.
    async fn introspect(&mut self, form: Bytes, authorization: &HeaderValue) -> Result<()> {
        let reply = self
            .post("/introspect", form, Some(authorization), None)
            .await?
            .expect(StatusCode::OK, "POST /introspect")?;
        let active = b"\"active\":true";
        if !reply.body.windows(active.len()).any(|w| w == active) {
            return Err(format!(
                "POST /introspect of a valid token answered {}",
                String::from_utf8_lossy(&reply.body)
            ));
        }
        Ok(())
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
/// (serde_json and node write `"name":"value"`, and token values need no
/// escapes).
fn string_member(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let marker = format!("\"{name}\":\"");
    let start = text.find(&marker)? + marker.len();
    let end = text[start..].find('"')?;
    Some(text[start..start + end].to_owned())
}

/// The JSON of a JWT's header (0) or payload (1); `null` if it is no JWT.
fn jwt_part(token: &str, part: usize) -> Value {
    token
        .split('.')
        .nth(part)
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .unwrap_or(Value::Null)
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
    Introspect {
        authorization: HeaderValue,
        form: Bytes,
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
            Job::Introspect { authorization, form } => {
                connection.introspect(form.clone(), authorization).await?
            }
        }
        Ok(())
    }
}

/// Operations back to back on one connection until `end`; returns the job
/// (a refresh job carries its latest token into the next round) and the
/// latency (µs) of each operation completed in `[start, end)`.
async fn drive(addr: SocketAddr, mut job: Job, start: Instant, end: Instant) -> Result<(Job, Vec<u32>)> {
    let mut connection = Connection::open(addr).await?;
    let mut latencies = Vec::with_capacity(1 << 15);
    loop {
        let sent = Instant::now();
        if sent >= end {
            return Ok((job, latencies));
        }
        job.once(&mut connection).await?;
        let done = Instant::now();
        if done >= start && done < end {
            latencies.push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
        }
    }
}

/// One round of one flow at one server: every connection runs its job
/// through the warm-up and the measured window.
async fn round(addr: SocketAddr, jobs: Vec<Job>, measured: Duration) -> Result<(Vec<Job>, Vec<u32>)> {
    let start = Instant::now() + WARM_UP;
    let end = start + measured;
    let mut connections = JoinSet::new();
    for job in jobs {
        connections.spawn(drive(addr, job, start, end));
    }
    let mut jobs = Vec::new();
    let mut latencies = Vec::new();
    while let Some(joined) = connections.join_next().await {
        let (job, mut connection) = joined.map_err(|e| format!("load connection: {e}"))??;
        jobs.push(job);
        latencies.append(&mut connection);
    }
    Ok((jobs, latencies))
}

/// The flows measured at both servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    ClientCredentials,
    Refresh,
    Code,
    Introspection,
}

const FLOWS: [Flow; 4] = [
    Flow::ClientCredentials,
    Flow::Refresh,
    Flow::Code,
    Flow::Introspection,
];

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::ClientCredentials => "client_credentials",
            Flow::Refresh => "refresh_token (rotating)",
            Flow::Code => "authorize (SSO) + code exchange",
            Flow::Introspection => "introspection",
        }
    }

    /// Its key in the figures file.
    fn key(self) -> &'static str {
        match self {
            Flow::ClientCredentials => "client_credentials",
            Flow::Refresh => "refresh_token",
            Flow::Code => "authorize_and_code_exchange",
            Flow::Introspection => "introspection",
        }
    }

    /// JWTs signed per operation.
    fn signatures(self) -> u32 {
        match self {
            Flow::ClientCredentials => 1,
            Flow::Refresh | Flow::Code => 2,
            Flow::Introspection => 0,
        }
    }
}

/// A server under load, signed in and checked.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    /// `GET /authorize?…` of `web`.
    path_and_query: Arc<str>,
    /// alice's session cookie(s).
    cookie: HeaderValue,
    service_authorization: HeaderValue,
    resource_server_authorization: HeaderValue,
    /// `token=…`: a valid access token of `svc`, for introspection.
    introspection_form: Bytes,
    /// The `client_credentials` request of the introspected tokens.
    introspected_token_form: &'static str,
}

/// The body of `POST /introspect` for `token`.
fn introspection_form_of(token: &str) -> Bytes {
    Bytes::from(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .finish(),
    )
}

impl Target {
    /// The connections' jobs for `flow`.
    async fn jobs(&self, flow: Flow, connections: usize) -> Result<Vec<Job>> {
        let mut jobs = Vec::with_capacity(connections);
        if flow == Flow::Refresh {
            // One refresh token per connection, each from its own code exchange.
            let mut setup = Connection::open(self.addr).await?;
            for _ in 0..connections {
                let code = setup.authorize(&self.path_and_query, &self.cookie).await?;
                let body = setup.exchange(&code).await?;
                let token =
                    string_member(&body, "refresh_token").ok_or("a code exchange without a refresh token")?;
                jobs.push(Job::Refresh { token });
            }
            return Ok(jobs);
        }
        let mut introspection_form = self.introspection_form.clone();
        if flow == Flow::Introspection {
            // A token issued now: oidc-provider's in-memory store is an LRU
            // of 1,000 entries, which the other flows' codes and refresh
            // tokens have long pushed the first one out of.
            let mut setup = Connection::open(self.addr).await?;
            let reply = setup
                .token(
                    Bytes::from(self.introspected_token_form.to_owned()),
                    Some(&self.service_authorization),
                )
                .await?
                .expect(StatusCode::OK, "POST /token (client_credentials, to introspect)")?;
            let token =
                string_member(&reply.body, "access_token").ok_or("client_credentials: no access_token")?;
            introspection_form = introspection_form_of(&token);
            setup
                .introspect(introspection_form.clone(), &self.resource_server_authorization)
                .await?;
        }
        for _ in 0..connections {
            jobs.push(match flow {
                Flow::ClientCredentials => Job::ClientCredentials {
                    authorization: self.service_authorization.clone(),
                },
                Flow::Code => Job::Code {
                    path_and_query: Arc::clone(&self.path_and_query),
                    cookie: self.cookie.clone(),
                },
                Flow::Introspection | Flow::Refresh => Job::Introspect {
                    authorization: self.resource_server_authorization.clone(),
                    form: introspection_form.clone(),
                },
            });
        }
        Ok(jobs)
    }
}

/// Checks every path once before loading it: ES256 `at+jwt` access tokens
/// from `client_credentials` and from the code exchange (with ID and
/// refresh tokens), an SSO authorization answered with a code, and an
/// active introspection; returns the introspection form (a token of `svc`
/// got with the target's `introspected_token_form`).
async fn preflight(target: &Target, login_code: &str) -> Result<Bytes> {
    let name = target.name;
    let es256 = |token: &str, what: &str| -> Result<()> {
        let header = jwt_part(token, 0);
        if header["alg"] != "ES256" || header["typ"] != "at+jwt" {
            return Err(format!(
                "{name}: the access token of {what} has the header {header}, expected ES256 at+jwt"
            ));
        }
        Ok(())
    };
    let mut connection = Connection::open(target.addr).await?;
    let reply = connection
        .token(
            Bytes::from_static(CLIENT_CREDENTIALS_FORM.as_bytes()),
            Some(&target.service_authorization),
        )
        .await?
        .expect(StatusCode::OK, "POST /token (client_credentials)")?;
    let token = string_member(&reply.body, "access_token").ok_or("client_credentials: no access_token")?;
    es256(&token, "client_credentials")?;
    let body = connection.exchange(login_code).await?;
    for member in ["access_token", "id_token", "refresh_token"] {
        if string_member(&body, member).is_none() {
            return Err(format!(
                "{name}: the code exchange returned no {member}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    es256(
        &string_member(&body, "access_token").unwrap_or_default(),
        "the code exchange",
    )?;
    let code = connection
        .authorize(&target.path_and_query, &target.cookie)
        .await?;
    connection.exchange(&code).await?;
    let reply = connection
        .token(
            Bytes::from(target.introspected_token_form.to_owned()),
            Some(&target.service_authorization),
        )
        .await?
        .expect(StatusCode::OK, "POST /token (client_credentials, to introspect)")?;
    let token = string_member(&reply.body, "access_token").ok_or("client_credentials: no access_token")?;
    let form = introspection_form_of(&token);
    connection
        .introspect(form.clone(), &target.resource_server_authorization)
        .await?;
    Ok(form)
}

// ---------------------------------------------------------------------------
// The step-up round trip

/// The cookies a browser keeps for the server (one path, one host).
#[derive(Default)]
struct Cookies(Vec<(String, String)>);

impl Cookies {
    /// Takes the `Set-Cookie` headers of a response: new values replace
    /// old ones, empty values remove them.
    fn absorb(&mut self, headers: &HeaderMap) {
        for set in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let Some((name, value)) = set.split(';').next().and_then(|pair| pair.split_once('=')) else {
                continue;
            };
            self.0.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    fn header(&self) -> Result<HeaderValue> {
        let joined: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        HeaderValue::from_str(&joined.join("; ")).map_err(|e| format!("cookie: {e}"))
    }
}

/// The times (µs) of the three requests of each step-up round trip.
struct StepUps {
    authorize: Vec<u32>,
    otp: Vec<u32>,
    token: Vec<u32>,
    total: Vec<u32>,
}

impl StepUps {
    fn sort(&mut self) {
        for v in [
            &mut self.authorize,
            &mut self.otp,
            &mut self.token,
            &mut self.total,
        ] {
            v.sort_unstable();
        }
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// `bob`, signed in with his password, steps up to mfa `count` times, one
/// round trip after the other, the clock moved 31 s before each.
async fn step_ups(server: &Server, count: usize) -> Result<StepUps> {
    let query = authorize_query(Some(MFA))?;
    let path_and_query = format!("/authorize?{query}");
    let (session, _) = browser_login(&server.base, &authorize_query(None)?, STEP_UP_USER).await?;
    let mut cookies = Cookies::default();
    let mut session_headers = HeaderMap::new();
    session_headers.insert(SET_COOKIE, session);
    cookies.absorb(&session_headers);
    let mut connection = Connection::open(server.addr).await?;
    let mut times = StepUps {
        authorize: Vec::with_capacity(count),
        otp: Vec::with_capacity(count),
        token: Vec::with_capacity(count),
        total: Vec::with_capacity(count),
    };
    for _ in 0..count {
        let now = server.clock.advance(STEP_UP_CLOCK_STEP_S);
        // 1. The client asks for mfa; the session's password counts.
        let request = Request::get(path_and_query.as_str())
            .header(HOST, HeaderValue::from_static("127.0.0.1"))
            .header(COOKIE, cookies.header()?)
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("request: {e}"))?;
        let sent = Instant::now();
        let page = connection.send(request).await?;
        let authorize = sent.elapsed();
        let page = page.expect(
            StatusCode::OK,
            "GET /authorize (acr_values mfa) with a password session",
        )?;
        cookies.absorb(&page.headers);
        let body = String::from_utf8_lossy(&page.body);
        if body.contains("name=\"password\"") || !body.contains("name=\"code\"") {
            return Err(format!(
                "GET /authorize (acr_values mfa) with a password session: expected the code page alone, got {body}"
            ));
        }
        // 2. The TOTP code of this step.
        let form = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("request", hidden(&body, "request")?.as_str()),
                ("csrf", hidden(&body, "csrf")?.as_str()),
                ("username", STEP_UP_USER),
                ("code", server.step_up_totp.code_at(now).as_str()),
            ])
            .finish();
        let cookie = cookies.header()?;
        let sent = Instant::now();
        let done = connection
            .post("/login/otp", Bytes::from(form), None, Some(&cookie))
            .await?;
        let otp = sent.elapsed();
        let done = done.expect(StatusCode::SEE_OTHER, "POST /login/otp")?;
        cookies.absorb(&done.headers);
        let code = code_of(done.headers.get(LOCATION).and_then(|v| v.to_str().ok()))?;
        // 3. The code for tokens at mfa.
        let sent = Instant::now();
        let body = connection.exchange(&code).await?;
        let token = sent.elapsed();
        let access = string_member(&body, "access_token").unwrap_or_default();
        let acr = jwt_part(&access, 1)["acr"].clone();
        if acr != MFA {
            return Err(format!(
                "the step-up's access token has acr {acr}, expected {MFA}"
            ));
        }
        times.authorize.push(micros(authorize));
        times.otp.push(micros(otp));
        times.token.push(micros(token));
        times.total.push(micros(authorize + otp + token));
    }
    times.sort();
    Ok(times)
}

// ---------------------------------------------------------------------------
// The run

/// stepup as a target: alice signed in, every path checked once.
async fn stepup_target(server: &Server) -> Result<Target> {
    let query = authorize_query(None)?;
    let login_started = Instant::now();
    let (cookie, login_code) = browser_login(&server.base, &query, USER).await?;
    eprintln!(
        "stepup: {}, {USER} signed in through the login page in {} ms",
        server.base,
        login_started.elapsed().as_millis()
    );
    let mut target = Target {
        name: "stepup",
        addr: server.addr,
        path_and_query: Arc::from(format!("/authorize?{query}")),
        cookie,
        service_authorization: server.service_authorization.clone(),
        resource_server_authorization: server.resource_server_authorization.clone(),
        introspection_form: Bytes::new(),
        introspected_token_form: CLIENT_CREDENTIALS_FORM,
    };
    target.introspection_form = preflight(&target, &login_code).await?;
    Ok(target)
}

/// oidc-provider as a target: started, alice signed in, every path checked once.
async fn oidc_provider_target() -> Result<(OidcProvider, Target)> {
    let provider = start_oidc_provider().await?;
    let query = authorize_query(None)?;
    let (cookie, login_code) = oidc_provider_login(&provider.base, &query).await?;
    eprintln!(
        "oidc-provider {} on node {}: {}, {USER} signed in through its login page",
        provider.package_version, provider.node_version, provider.base
    );
    let mut target = Target {
        name: "oidc-provider",
        addr: provider.addr,
        path_and_query: Arc::from(format!("/authorize?{query}")),
        cookie,
        service_authorization: provider.service_authorization.clone(),
        resource_server_authorization: provider.resource_server_authorization.clone(),
        introspection_form: Bytes::new(),
        introspected_token_form: OPAQUE_CLIENT_CREDENTIALS_FORM,
    };
    target.introspection_form = preflight(&target, &login_code).await?;
    Ok((provider, target))
}

/// The rounds of one flow at each target.
struct Measured {
    flow: Flow,
    /// Per target, in the order of the targets.
    series: Vec<Series>,
}

/// The ratios of stepup's rounds to the comparison's rounds.
fn round_ratios(stepup: &Series, other: &Series) -> Vec<f64> {
    stepup
        .rates
        .iter()
        .zip(&other.rates)
        .map(|(a, b)| a / b)
        .collect()
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// Every flow, in alternating rounds over the targets.
async fn measure_flows(targets: &[Target], settings: &Settings) -> Result<Vec<Measured>> {
    let mut results = Vec::new();
    for &flow in &settings.flows {
        eprintln!(
            "{}: {} rounds × ({} ms warm-up + {} s) at each of {} server(s), {} connections",
            flow.name(),
            settings.rounds,
            WARM_UP.as_millis(),
            settings.seconds,
            targets.len(),
            settings.connections
        );
        let mut jobs = Vec::new();
        let mut series = Vec::new();
        for target in targets {
            jobs.push(Some(target.jobs(flow, settings.connections).await?));
            series.push(Series::new(format!("{} {}", target.name, flow.name())));
        }
        for r in 0..settings.rounds {
            let label = format!("round {}/{}", r + 1, settings.rounds);
            for (i, target) in targets.iter().enumerate() {
                let these = jobs[i].take().ok_or("jobs lost")?;
                let (these, latencies) = round(target.addr, these, settings.measured())
                    .await
                    .map_err(|e| format!("{}: {e}", target.name))?;
                jobs[i] = Some(these);
                series[i].push_round(&label, latencies, settings.measured());
            }
        }
        for s in &mut series {
            s.finish();
        }
        results.push(Measured { flow, series });
    }
    Ok(results)
}

async fn run(settings: Settings) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("baseline: signing ES256 access tokens on one thread for ~2 s");
    let (ceiling, signed) = signing_ceiling()?;
    eprintln!("baseline: {} tokens/s ({signed} signed)", thousands(ceiling));

    let dir = database_dir(settings.db_dir.as_deref())?;
    let file_system = file_system_of(&dir);
    eprintln!("stepup: SQLite in {} ({file_system})", dir.display());
    let server = start_server(&dir).await?;
    let mut targets = vec![stepup_target(&server).await?];
    let (provider, not_measured) = match oidc_provider_target().await {
        Ok((provider, target)) => {
            targets.push(target);
            (Some(provider), None)
        }
        Err(reason) => {
            eprintln!("oidc-provider: NOT MEASURED: {reason}");
            (None, Some(reason))
        }
    };

    let results = measure_flows(&targets, &settings).await?;
    let comparison = provider
        .as_ref()
        .map(|p| (p.package_version.clone(), p.node_version.clone()));
    // The step-up round trips run on the idle server.
    drop(provider);
    eprintln!(
        "step-up round trip: {} times, one after the other, clock +{STEP_UP_CLOCK_STEP_S} s before each",
        settings.step_ups
    );
    let step_up = step_ups(&server, settings.step_ups).await?;

    let report = Report {
        settings,
        dir,
        file_system,
        cores,
        ceiling,
        signed,
        results,
        step_up,
        comparison,
        not_measured,
    };
    report.print();
    let figures = report.json();
    let path = write_figures("token.json", &figures)?;
    eprintln!("figures written to {}", path.display());
    if let Err(e) = std::fs::remove_dir_all(&report.dir) {
        eprintln!("could not remove {}: {e}", report.dir.display());
    }
    Ok(())
}

fn verdict(met: bool, yes: &'static str, no: &'static str) -> &'static str {
    if met { yes } else { no }
}

/// Everything a run measured.
struct Report {
    settings: Settings,
    dir: PathBuf,
    file_system: String,
    cores: usize,
    ceiling: f64,
    signed: u64,
    results: Vec<Measured>,
    step_up: StepUps,
    /// oidc-provider's and node's versions, when measured.
    comparison: Option<(String, String)>,
    /// Why oidc-provider was not measured.
    not_measured: Option<String>,
}

impl Report {
    /// The tables, on stdout.
    fn print(&self) {
        let us = |sorted: &[u32], p: f64| thousands(f64::from(percentile(sorted, p)));
        println!(
            "authorization server over HTTP on loopback, {} connections, {} rounds × {} s per flow and server, SQLite on {} ({}), {} cores shared by server and load",
            self.settings.connections,
            self.settings.rounds,
            self.settings.seconds,
            self.file_system,
            self.dir.display(),
            self.cores
        );
        println!(
            "{:<38} {:>10} {:>8} {:>8}   × one-core signing ceiling",
            "stepup path", "per second", "p50 µs", "p99 µs"
        );
        println!(
            "{:<38} {:>10} {:>8} {:>8}   {:.2}",
            "baseline: ES256 sign (1 core)",
            thousands(self.ceiling),
            "-",
            "-",
            1.0
        );
        for m in &self.results {
            let s = &m.series[0];
            println!(
                "{:<38} {:>10} {:>8} {:>8}   {:.2}",
                m.flow.name(),
                thousands(s.median_rate()),
                thousands(f64::from(s.percentile(0.50))),
                thousands(f64::from(s.percentile(0.99))),
                s.median_rate() / self.ceiling,
            );
        }
        println!(
            "{:<38} {:>10} {:>8} {:>8}   target ≤ {} µs: {}",
            format!("step-up round trip ({} of them)", self.step_up.total.len()),
            "-",
            us(&self.step_up.total, 0.50),
            us(&self.step_up.total, 0.99),
            thousands(f64::from(TARGET_STEP_UP_US)),
            verdict(
                percentile(&self.step_up.total, 0.99) <= TARGET_STEP_UP_US,
                "met at p99",
                "missed at p99"
            ),
        );
        println!(
            "{:<38} {:>10} {:>8} {:>8}",
            "  of which GET /authorize (code page)",
            "-",
            us(&self.step_up.authorize, 0.50),
            us(&self.step_up.authorize, 0.99)
        );
        println!(
            "{:<38} {:>10} {:>8} {:>8}",
            "  of which POST /login/otp",
            "-",
            us(&self.step_up.otp, 0.50),
            us(&self.step_up.otp, 0.99)
        );
        println!(
            "{:<38} {:>10} {:>8} {:>8}",
            "  of which POST /token (code)",
            "-",
            us(&self.step_up.token, 0.50),
            us(&self.step_up.token, 0.99)
        );
        println!(
            "(per second: median of the rounds; refresh_token and code exchange each sign two JWTs: access token and ID token, scope openid; introspection checks one, once per token; step-up: the sum of its three requests' times, each on loopback, idle server)"
        );

        println!();
        match (&self.comparison, &self.not_measured) {
            (Some((package, node)), _) => {
                println!(
                    "stepup against npm oidc-provider {package} (node {node}, default in-memory adapter, one JS thread) on the same machine, alternating rounds, same {} connections",
                    self.settings.connections
                );
                println!(
                    "{:<34} {:>9} {:>14} {:>16} {:>16}   {:<24} target ≥ {TARGET_OVER_OIDC_PROVIDER:.0}×",
                    "flow",
                    "stepup/s",
                    "oidc-prov./s",
                    "stepup p50/p99",
                    "oidc-p. p50/p99",
                    "stepup/oidc (min–max)"
                );
                for m in &self.results {
                    let (s, o) = (&m.series[0], &m.series[1]);
                    let ratios = round_ratios(s, o);
                    let (lo, hi) = min_max(&ratios);
                    let ratio = median(&ratios);
                    println!(
                        "{:<34} {:>9} {:>14} {:>16} {:>16}   {:<24} {}",
                        m.flow.name(),
                        thousands(s.median_rate()),
                        thousands(o.median_rate()),
                        format!(
                            "{}/{}",
                            thousands(f64::from(s.percentile(0.50))),
                            thousands(f64::from(s.percentile(0.99)))
                        ),
                        format!(
                            "{}/{}",
                            thousands(f64::from(o.percentile(0.50))),
                            thousands(f64::from(o.percentile(0.99)))
                        ),
                        format!("{ratio:.2} ({lo:.2}–{hi:.2})"),
                        verdict(ratio >= TARGET_OVER_OIDC_PROVIDER, "met", "missed"),
                    );
                }
                println!(
                    "(ratio: median over rounds of stepup's round / oidc-provider's round after it; oidc-provider keeps its state in memory, stepup commits to SQLite on {}; introspection: a JWT checked once + a database read each time at stepup, an opaque token looked up in memory at oidc-provider, which does not introspect JWTs)",
                    self.file_system
                );
            }
            (None, Some(reason)) => {
                println!("stepup against npm oidc-provider: NOT MEASURED ({reason})");
            }
            (None, None) => {}
        }
    }
}
impl Report {
    /// The figures file.
    fn json(&self) -> Value {
        let s = &self.settings;
        let mut figures = json!({
            "bench": "token",
            "transport": "HTTP/1.1 keep-alive on loopback, in-process stepup server and load generator",
            "database": "SQLite",
            "database_dir": self.dir.display().to_string(),
            "database_file_system": self.file_system,
            "connections": s.connections,
            "rounds": s.rounds,
            "warm_up_ms_per_round": WARM_UP.as_millis() as u64,
            "measured_s_per_round": s.seconds,
            "cores": self.cores,
            "baseline_es256_sign": {
                "per_s": self.ceiling.round() as u64,
                "threads": 1,
                "measured_s": BASELINE.as_secs(),
                "signed": self.signed,
            },
        });
        // stepup's figures per flow, under the flow's key.
        for m in &self.results {
            let stepup = &m.series[0];
            figures[m.flow.key()] = json!({
                "per_s": stepup.median_rate().round() as u64,
                "per_s_rounds": stepup.rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
                "p50_us": stepup.percentile(0.50),
                "p99_us": stepup.percentile(0.99),
                "operations_measured": stepup.latencies.len(),
                "jwts_signed_per_operation": m.flow.signatures(),
                "over_signing_ceiling": round_to(stepup.median_rate() / self.ceiling, 3),
            });
        }
        let step_up = &self.step_up;
        let p50 = percentile(&step_up.total, 0.50);
        let p99 = percentile(&step_up.total, 0.99);
        let part = |sorted: &[u32]| json!({ "p50_us": percentile(sorted, 0.50), "p99_us": percentile(sorted, 0.99) });
        figures["step_up_round_trip"] = json!({
            "what": "a password session asks for acr mfa: GET /authorize (code page), POST /login/otp (303 with code), POST /token; sum of the three request times on loopback, one round trip at a time on the idle server",
            "round_trips": step_up.total.len(),
            "p50_us": p50,
            "p99_us": p99,
            "max_us": step_up.total.last().copied().unwrap_or(0),
            "authorize_page": part(&step_up.authorize),
            "login_otp": part(&step_up.otp),
            "code_exchange": part(&step_up.token),
            "clock_step_s": STEP_UP_CLOCK_STEP_S,
            "mfa_lifetime_s": MFA_LIFETIME_S,
            "target_us": TARGET_STEP_UP_US,
            "target_met_at_p50": p50 <= TARGET_STEP_UP_US,
            "target_met_at_p99": p99 <= TARGET_STEP_UP_US,
        });
        match &self.comparison {
            Some((package, node)) => {
                let mut flows = json!({});
                let mut ratios = json!({});
                for m in &self.results {
                    let (stepup, other) = (&m.series[0], &m.series[1]);
                    flows[m.flow.key()] = json!({
                        "per_s": other.median_rate().round() as u64,
                        "per_s_rounds": other.rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
                        "p50_us": other.percentile(0.50),
                        "p99_us": other.percentile(0.99),
                        "operations_measured": other.latencies.len(),
                    });
                    let rounds = round_ratios(stepup, other);
                    let (lo, hi) = min_max(&rounds);
                    let ratio = median(&rounds);
                    ratios[m.flow.key()] = json!({
                        "median": round_to(ratio, 3),
                        "min": round_to(lo, 3),
                        "max": round_to(hi, 3),
                        "rounds": rounds.iter().map(|r| round_to(*r, 3)).collect::<Vec<_>>(),
                        "target": TARGET_OVER_OIDC_PROVIDER,
                        "target_met": ratio >= TARGET_OVER_OIDC_PROVIDER,
                    });
                }
                flows["introspection"]["token"] = json!("opaque (oidc-provider does not introspect JWTs)");
                figures["oidc_provider"] = json!({
                    "measured": true,
                    "package": "npm oidc-provider",
                    "version": package,
                    "node": node,
                    "adapter": "default in-memory (nothing written to disk)",
                    "threads": "one JavaScript thread",
                    "flows": flows,
                });
                figures["stepup_over_oidc_provider"] = ratios;
            }
            None => {
                figures["oidc_provider"] = json!({
                    "measured": false,
                    "reason": self.not_measured.as_deref().unwrap_or("not run"),
                });
                figures["stepup_over_oidc_provider"] = Value::Null;
            }
        }
        figures["headlines"] = headlines_json(&self.headlines());
        figures
    }

    /// The suite's summary lines: stepup over oidc-provider per flow, and
    /// the step-up round trip.
    fn headlines(&self) -> Vec<Headline> {
        let on = &self.file_system;
        let mut headlines = Vec::new();
        if self.comparison.is_some() {
            for m in &self.results {
                headlines.push(
                    Headline::from_rounds(
                        format!(
                            "server: stepup / oidc-provider, {} per second (SQLite on {on})",
                            m.flow.name()
                        ),
                        &round_ratios(&m.series[0], &m.series[1]),
                        "×",
                    )
                    .target(Goal::AtLeast(TARGET_OVER_OIDC_PROVIDER)),
                );
            }
        }
        for (label, p) in [("p50", 0.50), ("p99", 0.99)] {
            headlines.push(
                Headline::single(
                    format!("server: step-up round trip (code page, TOTP, code exchange), {label} (SQLite on {on})"),
                    f64::from(percentile(&self.step_up.total, p)),
                    "µs",
                )
                .target(Goal::AtMost(f64::from(TARGET_STEP_UP_US))),
            );
        }
        headlines
    }
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
