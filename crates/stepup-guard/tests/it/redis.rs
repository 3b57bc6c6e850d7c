//! The shared activity store against the real Redis on 127.0.0.1:6379
//! (STEPUP_TEST_REDIS_URL overrides), each test under its own key prefix:
//! two instances see each other's requests after a sync, and decisions
//! never wait for Redis.

use std::time::{Duration, Instant};

use stepup_guard::activity::{ActivityOptions, ActivityStore, Sighting};
use stepup_guard::redis_activity::RedisActivity;

fn url() -> String {
    std::env::var("STEPUP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix(test: &str) -> String {
    format!(
        "stepup-test:{test}:{}:{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn pair(test: &str) -> (std::sync::Arc<RedisActivity>, std::sync::Arc<RedisActivity>) {
    let prefix = prefix(test);
    // A long interval: the tests sync by hand.
    let every = Duration::from_secs(3600);
    let a = RedisActivity::connect(&url(), &prefix, ActivityOptions::default(), every)
        .await
        .expect("Redis on 127.0.0.1:6379");
    let b = RedisActivity::connect(&url(), &prefix, ActivityOptions::default(), every)
        .await
        .unwrap();
    (a, b)
}

fn seen(subject: &str, ip: &str, coordinates: Option<(f64, f64)>, at: i64) -> Sighting<'static> {
    Sighting {
        subject: Box::leak(subject.to_owned().into_boxed_str()),
        ip: Some(ip.parse().unwrap()),
        coordinates,
        at,
    }
}

const NOW: i64 = 1_800_000_000;

#[tokio::test]
async fn a_burst_split_across_instances_is_counted_after_a_sync() {
    let (a, b) = pair("burst").await;
    for i in 0..15 {
        a.record(&seen("alice", "192.0.2.1", None, NOW + i));
    }
    for i in 0..10 {
        b.record(&seen("alice", "192.0.2.2", None, NOW + i));
    }
    // Before any sync each instance knows only its own part.
    assert_eq!(
        b.record(&seen("alice", "192.0.2.2", None, NOW + 20)).requests,
        11.0
    );
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    let on_a = a.record(&seen("alice", "192.0.2.1", None, NOW + 21));
    assert!(on_a.requests >= 27.0, "{on_a:?}");
    assert_eq!(
        on_a.distinct_ips, 2.0,
        "the same address counts once across instances"
    );
    // Refused step-ups too.
    b.record_failed_step_up("alice", NOW + 22);
    b.sync().await.unwrap();
    a.sync().await.unwrap();
    assert_eq!(
        a.record(&seen("alice", "192.0.2.1", None, NOW + 23))
            .failed_step_ups,
        1.0
    );
    // Another subject is apart.
    assert_eq!(a.record(&seen("bob", "192.0.2.1", None, NOW + 23)).requests, 1.0);
}

#[tokio::test]
async fn impossible_travel_across_instances() {
    let (a, b) = pair("travel").await;
    a.record(&seen("alice", "203.0.113.1", Some((48.8566, 2.3522)), NOW));
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    // b has never seen alice itself; b's first request for her is followed
    // only if b syncs her (subjects are followed once seen): record, sync, record.
    b.record(&seen("alice", "198.51.100.1", None, NOW + 100));
    b.sync().await.unwrap();
    let far = b.record(&seen(
        "alice",
        "198.51.100.1",
        Some((-23.5505, -46.6333)),
        NOW + 300,
    ));
    let options = *b.options();
    assert_eq!(far.impossible_travel(&options), Some(true), "{far:?}");
}

#[tokio::test]
async fn decisions_do_not_wait_for_redis() {
    // An address where nothing answers quickly: connecting fails fast...
    let err = RedisActivity::connect(
        "redis://127.0.0.1:1",
        "x",
        ActivityOptions::default(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot use Redis at redis://127.0.0.1:1"),
        "{err}"
    );
    // ...and with a live store, recording is a local operation: ten thousand
    // take far less than one round trip each would.
    let (a, _) = pair("local").await;
    let start = Instant::now();
    for i in 0..10_000 {
        a.record(&seen("carol", "192.0.2.9", None, NOW + i / 1000));
    }
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_dpop_proof_used_at_one_instance_is_refused_at_another() {
    use stepup_guard::dpop::{RedisReplayCache, ReplayCache};
    let prefix = prefix("replay");
    let a = RedisReplayCache::connect(&url(), &prefix).await.unwrap();
    let b = RedisReplayCache::connect(&url(), &prefix).await.unwrap();
    assert!(a.first_use("jkt:jti-1", 60, NOW).await.unwrap());
    assert!(
        !b.first_use("jkt:jti-1", 60, NOW).await.unwrap(),
        "replayed at the other instance"
    );
    assert!(!a.first_use("jkt:jti-1", 60, NOW).await.unwrap());
    assert!(b.first_use("jkt:jti-2", 60, NOW).await.unwrap());
    let err = RedisReplayCache::connect("redis://127.0.0.1:1", "x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("replay cache is unavailable"), "{err}");
}
