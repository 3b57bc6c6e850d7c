//! The guard's hot path, each figure next to the same-run floor: one bare
//! signature verification of the same algorithm (EdDSA, ES256, RS256).
//!
//! Run with `cargo bench -p stepup-guard --bench guard`. After criterion's
//! own output (ES256 only; `STEPUP_BENCH_REPORT_ONLY=1` skips it), a table
//! of medians and ratios is printed, each ratio the median of 101 rounds in
//! which the figure and its floor alternate (the quartiles of the rounds
//! are the spread), and the figures go to
//! `$CARGO_TARGET_DIR/stepup-bench/guard.json`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group};
use http::HeaderMap;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde_json::json;
use stepup_benchkit::headline::{Headline, Target, headlines_json, quartiles};
use stepup_benchkit::{round_to, write_figures};
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

/// One algorithm's key, token and verifier inputs.
struct Fixture {
    alg: Algorithm,
    token: String,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
    /// The raw public key as ring takes it (Ed25519 bytes, an uncompressed
    /// P-256 point, or the RSA modulus and exponent).
    public_key: PublicKey,
    policy: Arc<Policy>,
    jwks: Jwks,
}

enum PublicKey {
    Ed25519(Vec<u8>),
    P256(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicKey {
    fn verify(&self, message: &[u8], signature: &[u8]) {
        let ok = match self {
            PublicKey::Ed25519(key) => UnparsedPublicKey::new(&ED25519, key).verify(message, signature),
            PublicKey::P256(key) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key).verify(message, signature)
            }
            PublicKey::Rsa { n, e } => {
                RsaPublicKeyComponents { n, e }.verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
            }
        };
        ok.unwrap();
    }
}

/// The RFC 7515 A.2 RSA key (2048 bits), from the project's test vectors.
fn rsa_key() -> SigningKey {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../stepup-core/tests/vectors/rfc7515.json")).unwrap();
    let b64 = |obj: &serde_json::Value, member: &str| {
        URL_SAFE_NO_PAD.decode(obj[member].as_str().unwrap()).unwrap()
    };
    let (public, private) = (&vectors["A.2"]["public_jwk"], &vectors["A.2"]["private_members"]);
    let components = ring::rsa::KeyPairComponents {
        public_key: ring::rsa::PublicKeyComponents {
            n: b64(public, "n"),
            e: b64(public, "e"),
        },
        d: b64(private, "d"),
        p: b64(private, "p"),
        q: b64(private, "q"),
        dP: b64(private, "dp"),
        dQ: b64(private, "dq"),
        qInv: b64(private, "qi"),
    };
    SigningKey::rsa_from_components(Algorithm::RS256, &components).unwrap()
}

fn fixture(alg: Algorithm) -> Fixture {
    let rng = SystemRandom::new();
    let key = match alg {
        Algorithm::EdDSA => SigningKey::generate_ed25519(&rng).unwrap(),
        Algorithm::ES256 => SigningKey::generate_es256(&rng).unwrap(),
        Algorithm::RS256 => rsa_key(),
        other => panic!("no fixture for {other:?}"),
    };
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
    let member = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    let public_key = match alg {
        Algorithm::EdDSA => PublicKey::Ed25519(member("x")),
        Algorithm::ES256 => {
            let mut point = vec![4u8];
            point.extend_from_slice(&member("x"));
            point.extend_from_slice(&member("y"));
            PublicKey::P256(point)
        }
        _ => PublicKey::Rsa {
            n: member("n"),
            e: member("e"),
        },
    };
    Fixture {
        alg,
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
        VerificationPolicy::access_token([f.alg]),
    )
}

fn guard(f: &Fixture, cache: usize) -> Guard {
    Guard::builder(Arc::clone(&f.policy), TokenVerifier::Jwt(Arc::new(verifier(f))))
        .clock(Arc::new(FixedClock))
        .cache_capacity(cache)
        .build()
}

/// Everything the measured calls of one algorithm need, built once.
struct Prepared {
    f: Fixture,
    verifier: JwtVerifier,
    headers: HeaderMap,
    cold: Guard,
    cached: Guard,
}

const ROUTE: &str = "/svc11/items/8812/approve";

/// The floor first, then the measured paths.
const NAMES: [&str; 5] = [
    "bare_verify",
    "decide_100_routes",
    "verify_and_decide",
    "guard_check_cold",
    "guard_check_cached",
];

impl Prepared {
    fn new(alg: Algorithm) -> Self {
        let f = fixture(alg);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {}", f.token).parse().unwrap());
        Self {
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
            "bare_verify" => {
                f.public_key
                    .verify(black_box(&f.signing_input), black_box(&f.signature));
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
    let p = Prepared::new(Algorithm::ES256);
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

/// Per-call seconds of `subject` and `floor` in each of `rounds`
/// alternating rounds. Pairing cancels the drift of a shared machine,
/// which separate measurements minutes apart do not.
struct Paired {
    subject: Vec<f64>,
    floor: Vec<f64>,
}

impl Paired {
    fn measure(p: &Prepared, floor: &str, subject: &str, rounds: usize) -> Self {
        let (nf, ns) = (batch_size(p, floor), batch_size(p, subject));
        let mut paired = Paired {
            subject: Vec::with_capacity(rounds),
            floor: Vec::with_capacity(rounds),
        };
        for _ in 0..rounds {
            paired.floor.push(time_batch(p, floor, nf));
            paired.subject.push(time_batch(p, subject, ns));
        }
        paired
    }

    /// subject / floor, round by round.
    fn ratios(&self) -> Vec<f64> {
        self.subject.iter().zip(&self.floor).map(|(s, f)| s / f).collect()
    }

    fn subject_median(&self) -> f64 {
        median(self.subject.clone())
    }

    fn floor_median(&self) -> f64 {
        median(self.floor.clone())
    }
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

fn report() -> Result<(), String> {
    const ROUNDS: usize = 101;
    eprintln!("\npaired measurement: {ROUNDS} alternating rounds of ~2 ms batches per figure...");
    println!(
        "\nmedian per call, and ratio to one bare verification of the same algorithm measured in alternation with it:"
    );
    println!(
        "{:<6} {:<20} {:>12} {:>12} {:>10} {:>19}",
        "alg", "path", "median", "floor", "× floor", "quartiles of rounds"
    );
    let mut headlines = Vec::new();
    let mut by_alg = serde_json::Map::new();
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let p = Prepared::new(alg);
        let name_of = format!("{alg:?}");
        let mut figures = serde_json::Map::new();
        for name in &NAMES[1..] {
            let paired = Paired::measure(&p, NAMES[0], name, ROUNDS);
            let ratios = paired.ratios();
            let (q1, ratio, q3) = quartiles(&ratios);
            println!(
                "{name_of:<6} {name:<20} {:>12} {:>12} {ratio:>10.4} {:>19}",
                show(paired.subject_median()),
                show(paired.floor_median()),
                format!("{q1:.4}–{q3:.4}")
            );
            figures.insert(
                (*name).to_owned(),
                json!({
                    "median_ns": round_to(paired.subject_median() * 1e9, 1),
                    "floor_median_ns": round_to(paired.floor_median() * 1e9, 1),
                    "over_floor": round_to(ratio, 5),
                    "over_floor_quartiles": [round_to(q1, 5), round_to(q3, 5)],
                }),
            );
            let per_call_ns: Vec<f64> = paired.subject.iter().map(|s| s * 1e9).collect();
            match *name {
                "decide_100_routes" => {
                    headlines.push(
                        Headline::from_rounds(
                            format!("guard: decide alone, 100 routes ({name_of} run)"),
                            &per_call_ns,
                            "ns",
                        )
                        .target(Target::AtMost(1000.0)),
                    );
                    headlines.push(
                        Headline::from_rounds(format!("guard: decide / bare {name_of} verify"), &ratios, "×")
                            .target(Target::AtMost(0.05)),
                    );
                }
                "verify_and_decide" => headlines.push(
                    Headline::from_rounds(
                        format!("guard: verify + decide / bare {name_of} verify"),
                        &ratios,
                        "×",
                    )
                    .target(Target::AtMost(1.15)),
                ),
                _ => {}
            }
        }
        let paired = Paired::measure(&p, "guard_check_cached", "guard_check_cold", ROUNDS);
        let speedups = paired.ratios();
        let (q1, speedup, q3) = quartiles(&speedups);
        println!(
            "{name_of:<6} cached {} vs cold {}: the cached path is {speedup:.0}× faster (quartiles {q1:.0}–{q3:.0})",
            show(paired.floor_median()),
            show(paired.subject_median()),
        );
        figures.insert(
            "cold_over_cached".into(),
            json!({"median": round_to(speedup, 2), "quartiles": [round_to(q1, 2), round_to(q3, 2)]}),
        );
        headlines.push(
            Headline::from_rounds(
                format!("guard: cold check / cached check ({name_of})"),
                &speedups,
                "×",
            )
            .target(Target::AtLeast(10.0)),
        );
        by_alg.insert(name_of, serde_json::Value::Object(figures));
    }
    let figures = json!({
        "bench": "guard",
        "rounds": ROUNDS,
        "policy_routes": 100,
        "algorithms": by_alg,
        "headlines": headlines_json(&headlines),
    });
    let path = write_figures("guard.json", &figures)?;
    eprintln!("figures written to {}", path.display());
    Ok(())
}

fn main() {
    if std::env::var_os("STEPUP_BENCH_REPORT_ONLY").is_none() {
        guard_benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if let Err(message) = report() {
        eprintln!("guard bench aborted: {message}");
        std::process::exit(1);
    }
}
