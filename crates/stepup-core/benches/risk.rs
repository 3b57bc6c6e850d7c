//! Decisions with risk rules, each figure next to baselines measured in
//! the same run: the same decision without risk rules, and one bare ES256
//! signature verification.
//!
//! Run with `cargo bench -p stepup-core --bench risk`. Each call is timed
//! on its own (the timer's own cost, some 20-30 ns, is included), in
//! alternating rounds so that the machine's drift hits every figure alike;
//! the table gives medians and 99th percentiles, and the heap allocations
//! of one call. The figures, with the quartiles of the per-round medians,
//! go to `$CARGO_TARGET_DIR/stepup-bench/risk.json` (read by
//! `bench-report`; this crate cannot use `stepup-benchkit`, which depends
//! on it, so the summary lines are written here in the same form).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use stepup_core::risk::Signals;
use stepup_core::{Policy, TokenFacts, UnixTime};

const ROUNDS: usize = 21;
const CALLS_PER_ROUND: usize = 20_000;
const VERIFICATIONS_PER_ROUND: usize = 200;

struct Figure {
    name: &'static str,
    samples: Vec<u64>,
    /// The median of each round (ns).
    round_medians: Vec<f64>,
}

impl Figure {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            samples: Vec::new(),
            round_medians: Vec::new(),
        }
    }

    /// One round of `calls` timed calls.
    fn time(&mut self, calls: usize, mut f: impl FnMut()) {
        let mut round = Vec::with_capacity(calls);
        for _ in 0..calls {
            let start = Instant::now();
            f();
            round.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        round.sort_unstable();
        self.round_medians.push(round[round.len() / 2] as f64);
        self.samples.extend(round);
    }

    /// First and third quartiles of the round medians.
    fn spread(&self) -> [f64; 2] {
        let mut m = self.round_medians.clone();
        m.sort_by(f64::total_cmp);
        let at = |q: f64| m[((m.len() - 1) as f64 * q).round() as usize];
        [at(0.25), at(0.75)]
    }

    fn percentile(&mut self, p: f64) -> u64 {
        self.samples.sort_unstable();
        let i = ((self.samples.len() - 1) as f64 * p).round() as usize;
        self.samples[i]
    }
}

fn decide(policy: &Policy, signals: &Signals<'_>, token: &TokenFacts<'_>) -> bool {
    let d = policy
        .decide_with(
            black_box("POST"),
            black_box("/svc7/items/42/approve"),
            token,
            signals,
            UnixTime(1_100),
        )
        .unwrap();
    black_box(d.verdict == stepup_core::Verdict::Allow)
}

fn main() {
    let plain = common::policy_with_risk(false);
    let risky = common::policy_with_risk(true);
    let token = TokenFacts {
        acr: Some("urn:stepup:acr:mfa"),
        auth_time: Some(UnixTime(1_000)),
        scope: Some("svc7 svc3"),
    };
    let trusted = common::trusted();
    let suspicious = common::suspicious();
    assert!(decide(&risky, &trusted, &token), "a trusted call passes");
    assert!(
        !decide(&risky, &suspicious, &token),
        "a suspicious one is refused"
    );

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let message = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9";
    let signature = key.sign(&rng, message).unwrap();
    let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref().to_vec());

    let mut verify = Figure::new("one bare ES256 verification");
    let mut bare = Figure::new("decide, 100 routes, no risk rules");
    let mut trusted_fig = Figure::new("decide + 20 risk rules, trusted call (none fires)");
    let mut suspicious_fig = Figure::new("decide + 20 risk rules, suspicious call (3 fire)");
    eprintln!("{ROUNDS} alternating rounds of {CALLS_PER_ROUND} timed calls per figure...");
    for round in 0..ROUNDS {
        verify.time(VERIFICATIONS_PER_ROUND, || {
            black_box(
                public
                    .verify(black_box(message), black_box(signature.as_ref()))
                    .is_ok(),
            );
        });
        bare.time(CALLS_PER_ROUND, || {
            decide(&plain, &Signals::NONE, &token);
        });
        trusted_fig.time(CALLS_PER_ROUND, || {
            decide(&risky, &trusted, &token);
        });
        suspicious_fig.time(CALLS_PER_ROUND, || {
            decide(&risky, &suspicious, &token);
        });
        if round % 5 == 4 {
            eprintln!("  round {}/{ROUNDS}", round + 1);
        }
    }
    let allocations = |signals: &Signals<'_>| {
        allocation_counter::measure(|| {
            decide(&risky, signals, &token);
        })
        .count_total
    };
    let (trusted_allocs, suspicious_allocs) = (allocations(&trusted), allocations(&suspicious));

    let floor = verify.percentile(0.5) as f64;
    let base = bare.percentile(0.5) as f64;
    println!();
    println!(
        "| path | median | p99 | × decide without risk rules | × one ES256 verification | heap allocations |"
    );
    println!("|---|---|---|---|---|---|");
    let row = |f: &mut Figure, allocs: Option<u64>| {
        let (median, p99) = (f.percentile(0.5), f.percentile(0.99));
        println!(
            "| {} | {} | {} | {:.2} | {:.4} | {} |",
            f.name,
            human(median),
            human(p99),
            median as f64 / base,
            median as f64 / floor,
            allocs.map_or("—".to_owned(), |a| a.to_string())
        );
    };
    row(&mut verify, None);
    row(&mut bare, None);
    row(&mut trusted_fig, Some(trusted_allocs));
    row(&mut suspicious_fig, Some(suspicious_allocs));

    let headline = |figure: &str, value: f64, unit: &str, spread: Option<[f64; 2]>, at_most: f64| {
        serde_json::json!({
            "figure": figure, "value": value, "unit": unit, "spread": spread,
            "target": format!("≤ {at_most}{}", if unit.is_empty() { String::new() } else { format!(" {unit}") }),
            "bound": { "at_most": at_most },
            "met": value <= at_most,
        })
    };
    let trusted_median = trusted_fig.percentile(0.5) as f64;
    let figures = serde_json::json!({
        "bench": "risk",
        "rounds": ROUNDS,
        "calls_per_round": CALLS_PER_ROUND,
        "median_ns": {
            "bare_es256_verify": floor,
            "decide_no_risk_rules": base,
            "decide_20_rules_trusted": trusted_median,
            "decide_20_rules_suspicious": suspicious_fig.percentile(0.5),
        },
        "p99_ns": {
            "decide_20_rules_trusted": trusted_fig.percentile(0.99),
            "decide_20_rules_suspicious": suspicious_fig.percentile(0.99),
        },
        "allocations": { "trusted": trusted_allocs, "suspicious": suspicious_allocs },
        "headlines": [
            headline("risk: decide + 20 risk rules, trusted call", trusted_median, "ns", Some(trusted_fig.spread()), 1000.0),
            headline("risk: decide + 20 risk rules, trusted call, p99", trusted_fig.percentile(0.99) as f64, "ns", None, 5000.0),
            headline("risk: decide + 20 risk rules, suspicious call", suspicious_fig.percentile(0.5) as f64, "ns", Some(suspicious_fig.spread()), 1000.0),
            headline("risk: heap allocations of a trusted call", trusted_allocs as f64, "", None, 0.0),
        ],
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    let path = target.join("stepup-bench").join("risk.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&figures).unwrap() + "\n").unwrap();
    eprintln!("figures written to {}", path.display());
}

fn human(ns: u64) -> String {
    if ns >= 1_000 {
        format!("{:.2} µs", ns as f64 / 1_000.0)
    } else {
        format!("{ns} ns")
    }
}
