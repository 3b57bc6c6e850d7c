//! What the rate limits cost each request they count: `RateLimits::check`
//! in this instance (`governor`'s keyed GCRA) and shared through Redis (one
//! Lua script per request), next to one bare ES256 signature measured in
//! the same run (what each token the server issues costs at least).
//!
//! Run with `cargo bench -p stepup-server --bench rate_limit` (the Redis
//! row needs Redis on `STEPUP_BENCH_REDIS_URL`, default
//! `redis://127.0.0.1:6379`, and is left out without it). Each call is
//! timed on its own, in alternating rounds; keys cycle through 10 000
//! client addresses, and the limits are set so high that nothing is
//! refused: the figures are the counting, not refusals.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use stepup_core::SystemClock;
use stepup_server::config::{Rate, RateLimitConfig};
use stepup_server::rate_limit::{Limit, RateLimits};

const ROUNDS: usize = 15;
const LOCAL_CALLS: usize = 20_000;
const REDIS_CALLS: usize = 500;
const SIGNATURES: usize = 200;
const ADDRESSES: usize = 10_000;

/// Each round's median, and every sample (ns).
#[derive(Default)]
struct Figure {
    samples: Vec<u64>,
    round_medians: Vec<f64>,
}

impl Figure {
    async fn time<F: std::future::Future<Output = ()>>(
        &mut self,
        calls: usize,
        mut f: impl FnMut(usize) -> F,
    ) {
        let mut round = Vec::with_capacity(calls);
        for i in 0..calls {
            let start = Instant::now();
            f(i).await;
            round.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        round.sort_unstable();
        self.round_medians.push(round[round.len() / 2] as f64);
        self.samples.extend(round);
    }

    fn percentile(&mut self, p: f64) -> f64 {
        self.samples.sort_unstable();
        self.samples[((self.samples.len() - 1) as f64 * p).round() as usize] as f64
    }
}

fn limits(redis_url: Option<String>) -> RateLimits {
    let never = Rate {
        burst: 100_000,
        per_minute: 1_000_000,
    };
    let config = RateLimitConfig {
        enabled: true,
        redis_url,
        redis_prefix: format!("stepup-bench-{}", std::process::id()),
        token: never,
        ..RateLimitConfig::default()
    };
    RateLimits::new(&config, Arc::new(SystemClock))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let addresses: Vec<String> = (0..ADDRESSES)
        .map(|i| format!("198.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256))
        .collect();
    let local = limits(None);
    let redis_url =
        std::env::var("STEPUP_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let shared = limits(Some(redis_url.clone()));
    let redis_ok = redis_answers(&redis_url).await;
    if redis_ok {
        // The first check connects.
        assert!(shared.check(Limit::Token, "warm-up").await.is_ok());
    } else {
        eprintln!("Redis at {redis_url} does not answer: its row is left out");
    }

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let message = b"eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9";

    let (mut sign, mut in_instance, mut through_redis) =
        (Figure::default(), Figure::default(), Figure::default());
    eprintln!("{ROUNDS} alternating rounds...");
    for round in 0..ROUNDS {
        sign.time(SIGNATURES, |_| {
            black_box(key.sign(&rng, black_box(message)).unwrap());
            async {}
        })
        .await;
        in_instance
            .time(LOCAL_CALLS, |i| {
                let (local, key) = (&local, &addresses[i % ADDRESSES]);
                async move { assert!(local.check(Limit::Token, black_box(key)).await.is_ok()) }
            })
            .await;
        if redis_ok {
            through_redis
                .time(REDIS_CALLS, |i| {
                    let (shared, key) = (&shared, &addresses[i % ADDRESSES]);
                    async move { assert!(shared.check(Limit::Token, black_box(key)).await.is_ok()) }
                })
                .await;
        }
        eprintln!("  round {}/{ROUNDS}", round + 1);
    }
    let floor = sign.percentile(0.5);
    println!();
    println!("| per request | median | p99 | × one ES256 signature |");
    println!("|---|---|---|---|");
    let row = |name: &str, f: &mut Figure| {
        let (median, p99) = (f.percentile(0.5), f.percentile(0.99));
        println!(
            "| {name} | {} | {} | {:.3} |",
            human(median),
            human(p99),
            median / floor
        );
    };
    row("one bare ES256 signature (baseline)", &mut sign);
    row("rate limit, counted in this instance", &mut in_instance);
    if redis_ok {
        row("rate limit, shared through Redis", &mut through_redis);
    }
}

async fn redis_answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let ping = async {
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), ping)
        .await
        .ok()
        .flatten()
        .is_some()
}

fn human(ns: f64) -> String {
    if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.0} ns")
    }
}
