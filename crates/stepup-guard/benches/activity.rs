//! Risk decisions with activity signals: the policy decision alone, then
//! with the subject's activity recorded in memory, then in the Redis-shared
//! store (answered locally too), and, apart, the round trip the Redis store
//! adds in the background (one sync of a batch of requests).
//!
//! Run with `cargo bench -p stepup-guard --bench activity` (Redis on
//! 127.0.0.1:6379, or STEPUP_BENCH_REDIS_URL).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../stepup-core/tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use stepup_core::risk::Signals;
use stepup_core::{Policy, TokenFacts, UnixTime, Verdict};
use stepup_guard::activity::{Activity, ActivityOptions, ActivityStore, MemoryActivity, Sighting};
use stepup_guard::redis_activity::RedisActivity;

const ROUNDS: usize = 11;
const CALLS: usize = 20_000;

struct Figure {
    name: &'static str,
    samples: Vec<u64>,
}

impl Figure {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            samples: Vec::new(),
        }
    }

    fn time(&mut self, calls: usize, mut f: impl FnMut(usize)) {
        for i in 0..calls {
            let start = Instant::now();
            f(i);
            self.samples
                .push(u64::try_from(start.elapsed().as_nanos()).unwrap());
        }
    }

    fn percentile(&mut self, p: f64) -> u64 {
        self.samples.sort_unstable();
        self.samples[((self.samples.len() - 1) as f64 * p).round() as usize]
    }
}

/// One decision as the guard makes it: record the sighting, build the
/// signals, decide.
fn decide(policy: &Policy, store: Option<&dyn ActivityStore>, subject: &str, at: i64) -> bool {
    let token = TokenFacts {
        acr: Some("urn:stepup:acr:mfa"),
        auth_time: Some(UnixTime(at - 100)),
        scope: Some("svc7"),
    };
    let activity: Option<Activity> = store.map(|s| {
        s.record(&Sighting {
            subject,
            ip: Some("192.0.2.1".parse().unwrap()),
            coordinates: Some((48.85, 2.35)),
            at,
        })
    });
    let options = ActivityOptions::default();
    let signals = Signals {
        request_rate: activity.map(|a| a.requests),
        distinct_ips: activity.map(|a| a.distinct_ips),
        anomaly_score: activity.map(|a| a.anomaly_score(&options)),
        impossible_travel: activity.and_then(|a| a.impossible_travel(&options)),
        ..common::trusted()
    };
    let d = policy
        .decide_with("POST", "/svc7/items/42/approve", &token, &signals, UnixTime(at))
        .unwrap();
    black_box(d.verdict == Verdict::Allow)
}

fn human(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = std::env::var("STEPUP_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("stepup-bench:{}", std::process::id());
    let redis = runtime
        .block_on(RedisActivity::connect(
            &url,
            &prefix,
            ActivityOptions::default(),
            Duration::from_secs(3600),
        ))
        .expect("Redis for the benchmark");
    let memory = MemoryActivity::new(ActivityOptions::default());
    let policy = common::policy_with_risk(true);
    // 1,000 subjects, each calling about once a second.
    let subjects: Vec<String> = (0..1000).map(|i| format!("user{i}")).collect();
    let at = |i: usize| 1_800_000_000 + i64::try_from(i / 1000).unwrap();

    let mut bare = Figure::new("decide, signals in memory, no activity store");
    let mut local = Figure::new("record in memory + decide");
    let mut shared = Figure::new("record in the Redis-shared store + decide (no wait)");
    let mut sync = Figure::new("background sync, 1,000 requests of 1,000 subjects");
    eprintln!("{ROUNDS} alternating rounds of {CALLS} calls per figure, and one sync per round...");
    let mut offset = 0;
    for round in 0..ROUNDS {
        bare.time(CALLS, |i| {
            decide(&policy, None, &subjects[i % 1000], at(offset + i));
        });
        local.time(CALLS, |i| {
            decide(&policy, Some(&memory), &subjects[i % 1000], at(offset + i));
        });
        shared.time(CALLS, |i| {
            decide(&policy, Some(&*redis), &subjects[i % 1000], at(offset + i));
        });
        // Sync what the last round left (this drains it), then time a sync
        // of a fresh batch of 1,000 requests.
        runtime.block_on(redis.sync()).unwrap();
        for (i, subject) in subjects.iter().enumerate() {
            decide(&policy, Some(&*redis), subject, at(offset + CALLS + i));
        }
        let start = Instant::now();
        runtime.block_on(redis.sync()).unwrap();
        sync.samples
            .push(u64::try_from(start.elapsed().as_nanos()).unwrap());
        offset += CALLS + 1000;
        eprintln!("  round {}/{ROUNDS}", round + 1);
    }
    let base = bare.percentile(0.5) as f64;
    println!();
    println!("| path | median | p99 | × decide without activity |");
    println!("|---|---|---|---|");
    for f in [&mut bare, &mut local, &mut shared] {
        let (median, p99) = (f.percentile(0.5), f.percentile(0.99));
        println!(
            "| {} | {} | {} | {:.2} |",
            f.name,
            human(median),
            human(p99),
            median as f64 / base
        );
    }
    let (median, max) = (sync.percentile(0.5), sync.percentile(1.0));
    println!(
        "| {} (off the decision path) | {} | max {} | — |",
        sync.name,
        human(median),
        human(max)
    );
}
