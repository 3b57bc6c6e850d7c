//! The guard's hot path, each figure next to the same-run floor: one bare
//! ES256 signature verification.
//!
//! Run with `cargo bench -p stepup-guard --bench guard`. After criterion's
//! own output, a table of medians and ratios is printed.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

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

/// Everything the measured calls need, built once.
struct Prepared {
    f: Fixture,
    key: UnparsedPublicKey<Vec<u8>>,
    verifier: JwtVerifier,
    headers: HeaderMap,
    cold: Guard,
    cached: Guard,
}

const ROUTE: &str = "/svc11/items/8812/approve";

/// The floor first, then the measured paths.
const NAMES: [&str; 5] = [
    "bare_es256_verify",
    "decide_100_routes",
    "verify_and_decide",
    "guard_check_cold",
    "guard_check_cached",
];

impl Prepared {
    fn new() -> Self {
        let f = fixture();
        let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, f.public_key.clone());
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {}", f.token).parse().unwrap());
        Self {
            key,
            verifier: verifier(&f),
            headers,
            cold: guard(&f, 0),
            cached: guard(&f, 10_000),
            f,
        }
    }

    /// One call of the named path.
    fn run(&self, name: &str) {
        let f = &self.f;
        match name {
            "bare_es256_verify" => {
                self.key
                    .verify(black_box(&f.signing_input), black_box(&f.signature))
                    .unwrap();
            }
            "decide_100_routes" => {
                let facts = TokenFacts {
                    acr: Some("urn:stepup:acr:mfa"),
                    auth_time: Some(UnixTime(NOW - 30)),
                    scope: Some("openid svc10 svc11"),
                };
                let d = f
                    .policy
                    .decide(black_box("POST"), black_box(ROUTE), &facts, UnixTime(NOW))
                    .unwrap();
                black_box(d.verdict);
            }
            "verify_and_decide" => {
                let token = self
                    .verifier
                    .verify_offline(black_box(&f.token), UnixTime(NOW))
                    .unwrap();
                let d = f
                    .policy
                    .decide("POST", ROUTE, &token.facts(), UnixTime(NOW))
                    .unwrap();
                black_box(d.verdict);
            }
            "guard_check_cold" => {
                black_box(poll_ready(self.cold.check("POST", ROUTE, black_box(&self.headers))).unwrap());
            }
            "guard_check_cached" => {
                black_box(poll_ready(self.cached.check("POST", ROUTE, black_box(&self.headers))).unwrap());
            }
            other => panic!("unknown benchmark {other}"),
        }
    }
}

fn benches(c: &mut Criterion) {
    let p = Prepared::new();
    let mut g = c.benchmark_group("guard");
    for name in NAMES {
        g.bench_function(name, |b| b.iter(|| p.run(name)));
    }
    g.finish();
}

/// Seconds per call of `name`, over a batch of `n` calls.
fn time_batch(p: &Prepared, name: &str, n: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        p.run(name);
    }
    start.elapsed().as_secs_f64() / f64::from(n)
}

/// Calls per batch so that a batch lasts about 2 ms.
fn batch_size(p: &Prepared, name: &str) -> u32 {
    let per_call = time_batch(p, name, 200).max(1e-9);
    ((2e-3 / per_call) as u32).clamp(1, 1_000_000)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alternates batches of `floor` and `subject` and returns the medians of
/// (subject per call, floor per call, subject / floor) over the rounds.
/// Pairing cancels the drift of a shared machine, which separate
/// measurements minutes apart do not.
fn paired(p: &Prepared, floor: &str, subject: &str, rounds: usize) -> (f64, f64, f64) {
    let (nf, ns) = (batch_size(p, floor), batch_size(p, subject));
    let mut subject_times = Vec::with_capacity(rounds);
    let mut floor_times = Vec::with_capacity(rounds);
    let mut ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let tf = time_batch(p, floor, nf);
        let ts = time_batch(p, subject, ns);
        floor_times.push(tf);
        subject_times.push(ts);
        ratios.push(ts / tf);
    }
    (median(subject_times), median(floor_times), median(ratios))
}

fn show(seconds: f64) -> String {
    let ns = seconds * 1e9;
    if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
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

fn report() {
    const ROUNDS: usize = 101;
    let p = Prepared::new();
    eprintln!("\npaired measurement: {ROUNDS} alternating rounds of ~2 ms batches per figure...");
    println!("\nmedian per call, and ratio to one bare ES256 verification measured in alternation with it:");
    println!(
        "{:<22} {:>12} {:>12} {:>10}",
        "path", "median", "floor", "× floor"
    );
    for name in &NAMES[1..] {
        let (subject, floor, ratio) = paired(&p, NAMES[0], name, ROUNDS);
        println!(
            "{name:<22} {:>12} {:>12} {ratio:>10.4}",
            show(subject),
            show(floor)
        );
    }
    let (cached, cold, ratio) = paired(&p, "guard_check_cold", "guard_check_cached", ROUNDS);
    println!(
        "guard_check_cached {} vs guard_check_cold {}: cached path {:.0}× faster",
        show(cached),
        show(cold),
        1.0 / ratio
    );
}

fn main() {
    guard_benches();
    Criterion::default().configure_from_args().final_summary();
    report();
}
