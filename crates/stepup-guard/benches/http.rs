//! What the guard costs an HTTP service: requests per second and latency of
//! one axum endpoint over loopback, served without the guard and behind
//! `guard.layer()`, driven by the same in-process load generator.
//!
//! Two servers run on 127.0.0.1 in this process, on one multi-thread tokio
//! runtime:
//!
//! - `unguarded` serves `GET /accounts/{id}/balance` (a small JSON body);
//! - `guarded` serves the same route behind a guard with a 100-route policy,
//!   fixed ES256 keys, a fixed clock and the default verified-token cache;
//!   its handler takes [`VerifiedClaims`] and returns the subject.
//!
//! The load generator keeps N keep-alive HTTP/1.1 connections busy, each
//! sending requests back to back with the same bearer token (the unguarded
//! server ignores it), so the guarded figure is the guard's cached path:
//! header parsing, cache lookup, policy decision, claims extension. Each round
//! warms up for 1 s, then counts the 200 responses completed in the measured
//! window; any other status aborts the run, so a broken guard cannot look
//! fast. Rounds alternate unguarded, guarded, unguarded, ... to cancel drift.
//!
//! Run with `cargo bench -p stepup-guard --bench http` (command-line
//! arguments, such as cargo's `--bench`, are ignored). Settings:
//! `STEPUP_BENCH_CONNECTIONS` (default 32), `STEPUP_BENCH_SECONDS` (measured
//! seconds per round, default 2), `STEPUP_BENCH_ROUNDS` (rounds per target,
//! default 7). Progress goes to stderr, the table to stdout and the figures to
//! `$CARGO_TARGET_DIR/stepup-bench/http.json` (`target/` of the workspace
//! when the variable is unset).
//!
//! Servers and load generator share the machine's cores: the figures are a
//! comparison between the two targets, not a capacity claim.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use axum::serve::ListenerExt;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use serde_json::{Value, json};
use stepup_core::access_token::ClaimsRules;
use stepup_core::jwk::{Algorithm, Jwks};
use stepup_core::jws::{SigningHeader, SigningKey, VerificationPolicy, sign_compact};
use stepup_core::{Policy, UnixTime};
use stepup_guard::{Clock, Guard, JwtVerifier, KeySource, TokenVerifier, VerifiedClaims};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const NOW: i64 = 1_800_000_000;
const ROUTE: &str = "/accounts/{id}/balance";
const REQUEST_PATH: &str = "/accounts/42/balance";
const WARM_UP: Duration = Duration::from_secs(1);

/// Quoted from issue #2, not measured here: Node 20, `node:http` and `jose`
/// verifying an ES256 token on each request, on this kind of machine.
const NODE_REFERENCE: &str = "Node 20 node:http + jose ES256";
const NODE_REFERENCE_RPS: f64 = 10_200.0;

type Result<T> = std::result::Result<T, String>;

struct Settings {
    connections: usize,
    seconds: u64,
    rounds: usize,
}

impl Settings {
    fn from_env() -> Result<Self> {
        Ok(Self {
            connections: env_setting("STEPUP_BENCH_CONNECTIONS", 32)?,
            seconds: env_setting("STEPUP_BENCH_SECONDS", 2)?,
            rounds: env_setting("STEPUP_BENCH_ROUNDS", 7)?,
        })
    }

    fn measured(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

/// A positive integer from the environment, or `default` when unset.
fn env_setting<T: std::str::FromStr + PartialOrd + Default>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => match text.trim().parse::<T>() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err(format!("{name}={text:?}: expected a positive integer")),
        },
    }
}

// ---------------------------------------------------------------------------
// The servers

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        UnixTime(NOW)
    }
}

/// The 100-route shape of `benches/guard.rs`: 19 services of 5 routes, plus
/// the 5 routes of the accounts service, one of which is the benchmarked
/// balance route (pwd or better, fresh within 300 s, scope `accounts:read`).
fn policy_100() -> Policy {
    let mut src = String::from(
        "levels = [{ name = \"pwd\", acr = \"urn:stepup:acr:pwd\" }, { name = \"mfa\", acr = \"urn:stepup:acr:mfa\" }]\n[default]\nacr = [\"pwd\"]\n",
    );
    let mut route = |method: &str, path: &str, acr: &str, scope: &str| {
        src.push_str(&format!(
            "[[route]]\nmethods = [\"{method}\"]\npath = \"{path}\"\nacr = [\"{acr}\"]\nmax_age = 300\nscope = [\"{scope}\"]\n"
        ));
    };
    for svc in 0..19 {
        for (i, (method, tail)) in [
            ("GET", "/items"),
            ("POST", "/items"),
            ("GET", "/items/{id}"),
            ("DELETE", "/items/{id}"),
            ("POST", "/items/{id}/approve"),
        ]
        .into_iter()
        .enumerate()
        {
            let acr = if i % 2 == 0 { "pwd" } else { "mfa" };
            route(method, &format!("/svc{svc}{tail}"), acr, &format!("svc{svc}"));
        }
    }
    route("GET", "/accounts/{id}", "pwd", "accounts:read");
    route("GET", ROUTE, "pwd", "accounts:read");
    route("POST", "/accounts/{id}/payees", "mfa", "payments:write");
    route("POST", "/accounts/{id}/transfers", "mfa", "payments:write");
    route("DELETE", "/accounts/{id}/payees/{payee}", "mfa", "payments:write");
    let policy = Policy::from_toml("http-bench.toml", &src).unwrap();
    assert_eq!(policy.routes().len(), 100);
    policy
}

/// A guard with fixed keys, a fixed clock and the default token cache, and
/// an access token it accepts on the benchmarked route.
fn guard_and_token() -> (Guard, String) {
    let rng = SystemRandom::new();
    let key = SigningKey::generate_es256(&rng).unwrap();
    let jwks = Jwks::from_json(
        json!({ "keys": [key.public_jwk(Some("k1"))] })
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let claims = json!({
        "iss": "https://as.example", "sub": "alice", "aud": "https://api.example",
        "exp": NOW + 600, "iat": NOW - 10, "jti": "b3f1c9", "client_id": "bank-web",
        "scope": "openid accounts:read", "acr": "urn:stepup:acr:mfa", "amr": ["pwd", "otp"],
        "auth_time": NOW - 30,
    });
    let token = sign_compact(
        &SigningHeader::new().typ("at+jwt").kid("k1"),
        claims.to_string().as_bytes(),
        &key,
        &rng,
    )
    .unwrap();
    let verifier = JwtVerifier::new(
        KeySource::fixed(jwks),
        ClaimsRules {
            issuer: "https://as.example".into(),
            audience: "https://api.example".into(),
            leeway_seconds: 30,
        },
        VerificationPolicy::access_token([Algorithm::ES256]),
    );
    let guard = Guard::builder(Arc::new(policy_100()), TokenVerifier::Jwt(Arc::new(verifier)))
        .clock(Arc::new(FixedClock))
        .build();
    (guard, token)
}

async fn balance(Path(account): Path<String>) -> Json<Value> {
    Json(json!({ "account": account, "currency": "EUR", "available": "1250.00" }))
}

async fn balance_for(Path(account): Path<String>, claims: VerifiedClaims) -> Json<Value> {
    Json(json!({
        "account": account, "currency": "EUR", "available": "1250.00", "subject": claims.subject,
    }))
}

/// Serves `app` on an ephemeral loopback port, in the background.
async fn serve(app: Router) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local address: {e}"))?;
    let listener = listener.tap_io(|tcp| {
        // Small responses go out at once, as the client's requests do.
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

// ---------------------------------------------------------------------------
// The load generator

/// One keep-alive HTTP/1.1 client connection.
struct Connection {
    addr: SocketAddr,
    sender: SendRequest<Empty<Bytes>>,
    uri: Uri,
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
        // Runs until the sender is dropped; failures show up in `get`.
        tokio::spawn(connection);
        Ok(Self {
            addr,
            sender,
            uri: Uri::from_static(REQUEST_PATH),
        })
    }

    /// `GET /accounts/42/balance`, the whole response body read.
    async fn get(&mut self, authorization: Option<&HeaderValue>) -> Result<(StatusCode, Bytes)> {
        let mut request = Request::get(self.uri.clone()).header(HOST, HeaderValue::from_static("127.0.0.1"));
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let request = request.body(Empty::new()).map_err(|e| format!("request: {e}"))?;
        let failed = |e: hyper::Error| format!("GET {REQUEST_PATH} on {}: {e}", self.addr);
        self.sender.ready().await.map_err(failed)?;
        let response = self.sender.send_request(request).await.map_err(failed)?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(failed)?.to_bytes();
        Ok((status, body))
    }
}

/// Requests back to back on one connection until `end`; returns the latency
/// (µs) of each 200 response completed in `[start, end)`.
async fn drive(
    target: &'static str,
    addr: SocketAddr,
    authorization: HeaderValue,
    start: Instant,
    end: Instant,
) -> Result<Vec<u32>> {
    let mut connection = Connection::open(addr).await?;
    let mut latencies = Vec::with_capacity(1 << 16);
    loop {
        let sent = Instant::now();
        if sent >= end {
            return Ok(latencies);
        }
        let (status, body) = connection.get(Some(&authorization)).await?;
        let done = Instant::now();
        if status != StatusCode::OK {
            return Err(format!(
                "{target} server ({addr}) answered {status}, expected 200: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        if done >= start && done < end {
            latencies.push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
        }
    }
}

/// One round against one server: the latencies of the 200 responses
/// completed in the measured window, over all connections.
async fn round(target: &Target, authorization: &HeaderValue, settings: &Settings) -> Result<Vec<u32>> {
    let start = Instant::now() + WARM_UP;
    let end = start + settings.measured();
    let mut connections = JoinSet::new();
    for _ in 0..settings.connections {
        connections.spawn(drive(target.name, target.addr, authorization.clone(), start, end));
    }
    let mut latencies = Vec::new();
    while let Some(joined) = connections.join_next().await {
        let mut connection = joined.map_err(|e| format!("load connection: {e}"))??;
        latencies.append(&mut connection);
    }
    Ok(latencies)
}

/// Checks both servers once before loading them: the unguarded one answers
/// 200; the guarded one answers 401 without the token and 200 with it, with
/// the token's subject in the body.
async fn preflight(unguarded: SocketAddr, guarded: SocketAddr, authorization: &HeaderValue) -> Result<()> {
    let (status, body) = Connection::open(unguarded)
        .await?
        .get(Some(authorization))
        .await?;
    if status != StatusCode::OK {
        return Err(format!(
            "unguarded server answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let mut connection = Connection::open(guarded).await?;
    let (status, _) = connection.get(None).await?;
    if status != StatusCode::UNAUTHORIZED {
        return Err(format!(
            "guarded server answered {status} to a request without a token"
        ));
    }
    let (status, body) = connection.get(Some(authorization)).await?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| format!("guarded server's body: {e}"))?;
    if status != StatusCode::OK || body["subject"] != "alice" {
        return Err(format!("guarded server answered {status}: {body}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Figures

/// The rounds of one server.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    rates: Vec<f64>,
    latencies: Vec<u32>,
}

impl Target {
    fn new(name: &'static str, addr: SocketAddr) -> Self {
        Self {
            name,
            addr,
            rates: Vec::new(),
            latencies: Vec::new(),
        }
    }

    fn median_rate(&self) -> f64 {
        let mut rates = self.rates.clone();
        rates.sort_by(f64::total_cmp);
        let mid = rates.len() / 2;
        if rates.len() % 2 == 1 {
            rates[mid]
        } else {
            (rates[mid - 1] + rates[mid]) / 2.0
        }
    }

    /// Latency percentile over every measured request of every round
    /// (latencies sorted).
    fn percentile(&self, p: f64) -> u32 {
        percentile(&self.latencies, p)
    }

    fn json(&self) -> Value {
        json!({
            "req_per_s_median": self.median_rate().round() as u64,
            "req_per_s_rounds": self.rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
            "p50_us": self.percentile(0.50),
            "p99_us": self.percentile(0.99),
            "requests_measured": self.latencies.len(),
        })
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `61234.5` as `61,235`.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// `$CARGO_TARGET_DIR/stepup-bench/http.json`, or under the workspace's `target/`.
fn output_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    target.join("stepup-bench").join("http.json")
}

// ---------------------------------------------------------------------------
// The run

async fn run(settings: Settings) -> Result<()> {
    let (guard, token) = guard_and_token();
    let unguarded = serve(Router::new().route(ROUTE, get(balance))).await?;
    let guarded = serve(Router::new().route(ROUTE, get(balance_for)).layer(guard.layer())).await?;
    let authorization =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| format!("header: {e}"))?;
    preflight(unguarded, guarded, &authorization).await?;

    let mut targets = [
        Target::new("unguarded", unguarded),
        Target::new("guarded", guarded),
    ];
    for r in 1..=settings.rounds {
        for target in &mut targets {
            let mut latencies = round(target, &authorization, &settings).await?;
            let rate = latencies.len() as f64 / settings.measured().as_secs_f64();
            latencies.sort_unstable();
            eprintln!(
                "round {r}/{} {}: {} req/s (p50 {} µs, p99 {} µs)",
                settings.rounds,
                target.name,
                thousands(rate),
                thousands(f64::from(percentile(&latencies, 0.50))),
                thousands(f64::from(percentile(&latencies, 0.99))),
            );
            target.rates.push(rate);
            target.latencies.append(&mut latencies);
        }
    }

    for target in &mut targets {
        target.latencies.sort_unstable();
    }
    let [unguarded, guarded] = &targets;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ratio = guarded.median_rate() / unguarded.median_rate();
    // Each guarded round against the unguarded round just before it: the
    // median of these pairs is what drift on a shared machine disturbs least.
    let mut pairs: Vec<f64> = guarded
        .rates
        .iter()
        .zip(&unguarded.rates)
        .map(|(g, u)| g / u)
        .collect();
    pairs.sort_by(f64::total_cmp);
    let paired_ratio = pairs[pairs.len() / 2];
    let over_node = guarded.median_rate() / NODE_REFERENCE_RPS;

    println!(
        "HTTP on loopback, {} connections, {} s x {} rounds each, same load generator, {cores} cores shared by all",
        settings.connections, settings.seconds, settings.rounds
    );
    println!(
        "{:<12} {:>16} {:>8} {:>8}",
        "target", "req/s (median)", "p50 µs", "p99 µs"
    );
    for target in &targets {
        println!(
            "{:<12} {:>16} {:>8} {:>8}",
            target.name,
            thousands(target.median_rate()),
            thousands(f64::from(target.percentile(0.50))),
            thousands(f64::from(target.percentile(0.99))),
        );
    }
    println!(
        "guarded / unguarded = {ratio:.2} (ratio of medians); {paired_ratio:.2} (median of round pairs)"
    );
    println!(
        "reference (issue #2, quoted, not measured here): {NODE_REFERENCE} ≈ {} req/s on this kind of machine; guarded / that = {over_node:.1}x",
        thousands(NODE_REFERENCE_RPS)
    );

    let figures = json!({
        "bench": "http",
        "request": format!("GET {REQUEST_PATH}"),
        "connections": settings.connections,
        "warm_up_s": WARM_UP.as_secs(),
        "measured_s_per_round": settings.seconds,
        "rounds_each": settings.rounds,
        "cores": cores,
        "policy_routes": 100,
        "unguarded": unguarded.json(),
        "guarded": guarded.json(),
        "guarded_over_unguarded": round_to(ratio, 3),
        "guarded_over_unguarded_paired_median": round_to(paired_ratio, 3),
        "reference": {
            "measured_here": false,
            "source": "issue #2 (quoted)",
            "setup": NODE_REFERENCE,
            "req_per_s": NODE_REFERENCE_RPS as u64,
            "guarded_over_reference": round_to(over_node, 2),
        },
    });
    let path = output_path();
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
        std::fs::write(&path, serde_json::to_string_pretty(&figures)? + "\n")
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("figures written to {}", path.display());
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
        eprintln!("http bench aborted: {message}");
        std::process::exit(1);
    }
}
