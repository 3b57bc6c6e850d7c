//! The guard's hot path, each figure next to the same-run floor: one bare
//! ES256 signature verification.
//!
//! Run with `cargo bench -p stepup-guard --bench guard`. After criterion's
//! own output, a table of medians and ratios is printed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group};
use http::HeaderMap;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::json;
use stepup_core::access_token::ClaimsRules;
use stepup_core::jwk::{Algorithm, Jwks};
use stepup_core::jws::{SigningHeader, SigningKey, VerificationPolicy, sign_compact};
use stepup_core::{Policy, TokenFacts, UnixTime};
use stepup_guard::{Clock, Guard, JwtVerifier, KeySource, TokenVerifier};

const NOW: i64 = 1_800_000_000;

struct FixedClock;
impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        UnixTime(NOW)
    }
}

/// A policy of 100 routes over 20 services, as a mid-sized API would have.
fn policy_100() -> Policy {
    let mut src = String::from(
        "levels = [{ name = \"pwd\", acr = \"urn:stepup:acr:pwd\" }, { name = \"mfa\", acr = \"urn:stepup:acr:mfa\" }]\n[default]\nacr = [\"pwd\"]\n",
    );
    for svc in 0..20 {
        for (i, (method, tail)) in [
            ("GET", "/items"),
            ("POST", "/items"),
            ("GET", "/items/{id}"),
            ("DELETE", "/items/{id}"),
            ("POST", "/items/{id}/approve"),
        ]
        .iter()
        .enumerate()
        {
            let acr = if i % 2 == 0 { "pwd" } else { "mfa" };
            src.push_str(&format!(
                "[[route]]\nmethods = [\"{method}\"]\npath = \"/svc{svc}{tail}\"\nacr = [\"{acr}\"]\nmax_age = 300\nscope = [\"svc{svc}\"]\n"
            ));
        }
    }
    let policy = Policy::from_toml("bench.toml", &src).unwrap();
    assert_eq!(policy.routes().len(), 100);
    policy
}

struct Fixture {
    token: String,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    public_key: Vec<u8>,
    policy: Arc<Policy>,
    jwks: Jwks,
}

fn fixture() -> Fixture {
    let rng = SystemRandom::new();
    let key = SigningKey::generate_es256(&rng).unwrap();
    let jwk = key.public_jwk(Some("k1"));
    let claims = json!({
        "iss": "https://as.example", "sub": "alice", "aud": "https://api.example",
        "exp": NOW + 600, "iat": NOW - 10, "jti": "b3f1c9", "client_id": "bank-web",
        "scope": "openid svc10 svc11", "acr": "urn:stepup:acr:mfa", "amr": ["pwd", "otp"],
        "auth_time": NOW - 30,
    });
    let token = sign_compact(
        &SigningHeader::new().typ("at+jwt").kid("k1"),
        claims.to_string().as_bytes(),
        &key,
        &rng,
    )
    .unwrap();
    let (signing_input, sig) = token.rsplit_once('.').unwrap();
    let x = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let y = URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap();
    let mut public_key = vec![4u8];
    public_key.extend_from_slice(&x);
    public_key.extend_from_slice(&y);
    Fixture {
        signing_input: signing_input.as_bytes().to_vec(),
        signature: URL_SAFE_NO_PAD.decode(sig).unwrap(),
        token,
        public_key,
        policy: Arc::new(policy_100()),
        jwks: Jwks::from_json(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap(),
    }
}

fn verifier(f: &Fixture) -> JwtVerifier {
    JwtVerifier::new(
        KeySource::fixed(f.jwks.clone()),
        ClaimsRules {
            issuer: "https://as.example".into(),
            audience: "https://api.example".into(),
            leeway_seconds: 30,
        },
        VerificationPolicy::access_token([Algorithm::ES256]),
    )
}

fn guard(f: &Fixture, cache: usize) -> Guard {
    Guard::builder(Arc::clone(&f.policy), TokenVerifier::Jwt(Arc::new(verifier(f))))
        .clock(Arc::new(FixedClock))
        .cache_capacity(cache)
        .build()
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let mut g = c.benchmark_group("guard");

    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, f.public_key.clone());
    g.bench_function("bare_es256_verify", |b| {
        b.iter(|| {
            key.verify(black_box(&f.signing_input), black_box(&f.signature))
                .unwrap()
        })
    });

    let facts = TokenFacts {
        acr: Some("urn:stepup:acr:mfa"),
        auth_time: Some(UnixTime(NOW - 30)),
        scope: Some("openid svc10 svc11"),
    };
    g.bench_function("decide_100_routes", |b| {
        b.iter(|| {
            let d = f
                .policy
                .decide(
                    black_box("POST"),
                    black_box("/svc11/items/8812/approve"),
                    &facts,
                    UnixTime(NOW),
                )
                .unwrap();
            black_box(d.verdict);
        })
    });

    let v = verifier(&f);
    g.bench_function("verify_and_decide", |b| {
        b.iter(|| {
            let token = v.verify_offline(black_box(&f.token), UnixTime(NOW)).unwrap();
            let d = f
                .policy
                .decide("POST", "/svc11/items/8812/approve", &token.facts(), UnixTime(NOW))
                .unwrap();
            black_box(d.verdict);
        })
    });

    let mut headers = HeaderMap::new();
    headers.insert("authorization", format!("Bearer {}", f.token).parse().unwrap());
    let cold = guard(&f, 0);
    g.bench_function("guard_check_cold", |b| {
        b.iter(|| poll_ready(cold.check("POST", "/svc11/items/8812/approve", black_box(&headers))).unwrap())
    });
    let cached = guard(&f, 10_000);
    g.bench_function("guard_check_cached", |b| {
        b.iter(|| poll_ready(cached.check("POST", "/svc11/items/8812/approve", black_box(&headers))).unwrap())
    });
    g.finish();
}

/// Polls a future that must complete without waiting (fixed keys, no I/O),
/// as the layer's future is polled inside a server's task: no runtime
/// overhead is added to the figure.
fn poll_ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("the guard waited on I/O with fixed keys"),
    }
}

criterion_group!(guard_benches, benches);

/// Reads criterion's median estimate (ns) for one benchmark of this run.
fn median_ns(name: &str) -> Option<f64> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target"));
    let path = dir
        .join("criterion")
        .join("guard")
        .join(name)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn report() {
    let Some(floor) = median_ns("bare_es256_verify") else {
        eprintln!("(no criterion estimates found: was a filter given?)");
        return;
    };
    println!("\nmedian per call, ratio to one bare ES256 verification (same run):");
    println!("{:<22} {:>12} {:>10}", "benchmark", "median", "× floor");
    for name in [
        "bare_es256_verify",
        "decide_100_routes",
        "verify_and_decide",
        "guard_check_cold",
        "guard_check_cached",
    ] {
        if let Some(ns) = median_ns(name) {
            let shown = if ns >= 1000.0 {
                format!("{:.2} µs", ns / 1000.0)
            } else {
                format!("{ns:.0} ns")
            };
            println!("{name:<22} {shown:>12} {:>10.4}", ns / floor);
        }
    }
    if let (Some(cold), Some(cached)) = (median_ns("guard_check_cold"), median_ns("guard_check_cached")) {
        println!("cached path is {:.0}× faster than cold", cold / cached);
    }
}

fn main() {
    guard_benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
