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
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use http::header::AUTHORIZATION;
use http::{HeaderValue, StatusCode, Uri};
use serde_json::{Value, json};
use stepup_benchkit::headline::{Headline, Target, headlines_json};
use stepup_benchkit::{
    Connection, Load, Protocol, Result, Series, env_setting, round, round_to, serve, thousands, write_figures,
};
use stepup_core::{Policy, UnixTime};
use stepup_guard::{Clock, Guard, VerifiedClaims};

const NOW: i64 = 1_800_000_000;
use stepup_benchkit::{BALANCE_PATH as REQUEST_PATH, BALANCE_ROUTE as ROUTE};
const WARM_UP: Duration = Duration::from_secs(1);

/// Quoted from issue #2, not measured here: Node 20, `node:http` and `jose`
/// verifying an ES256 token on each request, on this kind of machine.
const NODE_REFERENCE: &str = "Node 20 node:http + jose ES256";
const NODE_REFERENCE_RPS: f64 = 10_200.0;

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

// ---------------------------------------------------------------------------
// The servers

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        UnixTime(NOW)
    }
}

/// The 100-route policy of the HTTP benchmarks (see
/// [`stepup_benchkit::policy_100`]).
fn policy_100() -> Policy {
    let policy = Policy::from_toml("http-bench.toml", &stepup_benchkit::policy_100()).unwrap();
    assert_eq!(policy.routes().len(), 100);
    policy
}

/// A guard with fixed keys, a fixed clock and the default token cache, and
/// an access token it accepts on the benchmarked route.
fn guard_and_token() -> (Guard, String) {
    let (verifier, token) = stepup_benchkit::verifier_and_token(NOW, 600).unwrap();
    let guard = Guard::builder(Arc::new(policy_100()), verifier)
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

// ---------------------------------------------------------------------------
// Checks before loading

/// Checks both servers once before loading them: the unguarded one answers
/// 200; the guarded one answers 401 without the token and 200 with it, with
/// the token's subject in the body.
async fn preflight(unguarded: SocketAddr, guarded: SocketAddr, authorization: &HeaderValue) -> Result<()> {
    let path = Uri::from_static(REQUEST_PATH);
    let with_token = [(AUTHORIZATION, authorization.clone())];
    let (status, body) = Connection::open(unguarded, Protocol::Http1)
        .await?
        .get(&path, &with_token)
        .await?;
    if status != StatusCode::OK {
        return Err(format!(
            "unguarded server answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let mut connection = Connection::open(guarded, Protocol::Http1).await?;
    let (status, _) = connection.get(&path, &[]).await?;
    if status != StatusCode::UNAUTHORIZED {
        return Err(format!(
            "guarded server answered {status} to a request without a token"
        ));
    }
    let (status, body) = connection.get(&path, &with_token).await?;
    let body: Value = serde_json::from_slice(&body).map_err(|e| format!("guarded server's body: {e}"))?;
    if status != StatusCode::OK || body["subject"] != "alice" {
        return Err(format!("guarded server answered {status}: {body}"));
    }
    Ok(())
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

    let load = |target: &str, addr: SocketAddr| Load {
        target: format!("{target} server"),
        addr,
        protocol: Protocol::Http1,
        path: Uri::from_static(REQUEST_PATH),
        headers: vec![(AUTHORIZATION, authorization.clone())],
        expect: StatusCode::OK,
        connections: settings.connections,
        warm_up: WARM_UP,
        measured: settings.measured(),
    };
    let loads = [load("unguarded", unguarded), load("guarded", guarded)];
    let mut targets = [Series::new("unguarded"), Series::new("guarded")];
    for r in 1..=settings.rounds {
        for (target, load) in targets.iter_mut().zip(&loads) {
            let latencies = round(load).await?;
            target.push_round(
                &format!("round {r}/{}", settings.rounds),
                latencies,
                settings.measured(),
            );
        }
    }
    for target in &mut targets {
        target.finish();
    }
    let [unguarded, guarded] = &targets;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let ratio = guarded.median_rate() / unguarded.median_rate();
    // Each guarded round against the unguarded round just before it.
    let paired_ratio = guarded.paired_ratio(unguarded);
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
        "headlines": headlines_json(&[Headline::from_rounds(
            "guard layer: guarded / unguarded axum endpoint, throughput",
            &guarded.paired_ratios(unguarded),
            "×",
        )
        .target(Target::AtLeast(0.9))]),
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
    let path = write_figures("http.json", &figures)?;
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
