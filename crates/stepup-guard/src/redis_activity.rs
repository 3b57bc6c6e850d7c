//! Activity shared by several guard instances through Redis.
//!
//! Decisions never wait for Redis: each instance answers from its own
//! in-memory window, combined with the shared view it last fetched, and a
//! background task exchanges both ways every `sync_interval` (sorted sets
//! per subject, scored by time: requests, client addresses, refused
//! step-ups; a hash for the last location). The trade: what other
//! instances saw reaches a decision up to one interval late (a burst split
//! across instances is noticed within about a second, not on its first
//! request), and if Redis is down each instance goes on alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use thiserror::Error;

use crate::activity::{Activity, ActivityOptions, ActivityStore, MemoryActivity, Sighting, distance_km};

/// Why the shared store cannot start.
#[derive(Debug, Error)]
#[error("cannot use Redis at {url}: {reason}")]
pub struct RedisActivityError {
    url: String,
    reason: String,
}

/// What all instances together saw of a subject, as of the last sync.
#[derive(Debug, Clone, Copy, Default)]
struct Shared {
    requests: f64,
    distinct_ips: f64,
    failed_step_ups: f64,
    last_located: Option<((f64, f64), i64)>,
}

/// Something to tell the other instances.
#[derive(Debug, Clone)]
enum Event {
    Request {
        subject: String,
        at: i64,
        ip: Option<std::net::IpAddr>,
        coordinates: Option<(f64, f64)>,
    },
    Failed {
        subject: String,
        at: i64,
    },
}

/// An [`ActivityStore`] shared through Redis.
pub struct RedisActivity {
    local: MemoryActivity,
    prefix: String,
    /// Unique per instance, so request members never collide.
    instance: String,
    sequence: AtomicU64,
    pending: Mutex<Vec<Event>>,
    shared: Mutex<HashMap<String, Shared>>,
    connection: ConnectionManager,
}

impl std::fmt::Debug for RedisActivity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisActivity")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Events buffered at most between syncs; more are dropped (the local
/// window still counts them).
const MAX_PENDING: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl RedisActivity {
    /// Connects to `url` (`redis://127.0.0.1:6379`), keeps keys under
    /// `prefix`, and syncs every `sync_interval` in the background until
    /// the store is dropped.
    pub async fn connect(
        url: &str,
        prefix: &str,
        options: ActivityOptions,
        sync_interval: Duration,
    ) -> Result<Arc<Self>, RedisActivityError> {
        let fail = |reason: String| RedisActivityError {
            url: url.to_owned(),
            reason,
        };
        let client = redis::Client::open(url).map_err(|e| fail(e.to_string()))?;
        // Few retries and short timeouts: a sync that cannot reach Redis is
        // skipped, and the next one tries again.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut id = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
            .map_err(|_| fail("no randomness for the instance id".into()))?;
        let store = Arc::new(Self {
            local: MemoryActivity::new(options),
            prefix: prefix.to_owned(),
            instance: id.iter().map(|b| format!("{b:02x}")).collect(),
            sequence: AtomicU64::new(0),
            pending: Mutex::default(),
            shared: Mutex::default(),
            connection,
        });
        let weak: Weak<Self> = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(sync_interval);
            // The first tick is immediate, and there is nothing to sync yet.
            // (It also raced a caller's own first `sync`: this task took the
            // events and that `sync` returned before they reached Redis.)
            every.tick().await;
            loop {
                every.tick().await;
                let Some(store) = weak.upgrade() else { break };
                if let Err(e) = store.sync().await {
                    tracing::warn!(error = %e, "syncing activity with Redis failed; deciding on local activity");
                }
            }
        });
        Ok(store)
    }

    fn key(&self, kind: &str, subject: &str) -> String {
        format!("{}:{kind}:{subject}", self.prefix)
    }

    /// Pushes what this instance saw and fetches what all saw, now (the
    /// background task does it every interval).
    pub async fn sync(&self) -> Result<(), redis::RedisError> {
        let events = std::mem::take(&mut *lock(&self.pending));
        let window = self.local.options().window_seconds;
        let ttl = window.max(1) * 2;
        let mut pipe = redis::pipe();
        let mut subjects: Vec<(String, i64)> = Vec::new();
        for event in &events {
            match event {
                Event::Request {
                    subject,
                    at,
                    ip,
                    coordinates,
                } => {
                    let n = self.sequence.fetch_add(1, Ordering::Relaxed);
                    let requests = self.key("req", subject);
                    pipe.zadd(&requests, format!("{}:{n}", self.instance), *at)
                        .ignore();
                    pipe.expire(&requests, ttl).ignore();
                    if let Some(ip) = ip {
                        let ips = self.key("ips", subject);
                        pipe.zadd(&ips, self.address_member(*ip), *at).ignore();
                        pipe.expire(&ips, ttl).ignore();
                    }
                    if let Some((lat, lon)) = coordinates {
                        let at_key = self.key("loc", subject);
                        // Keep the newest location only.
                        pipe.cmd("EVAL")
                            .arg(NEWER_LOCATION)
                            .arg(1)
                            .arg(&at_key)
                            .arg(*at)
                            .arg(*lat)
                            .arg(*lon)
                            .arg(ttl * 60)
                            .ignore();
                    }
                    if !subjects.iter().any(|(s, _)| s == subject) {
                        subjects.push((subject.clone(), *at));
                    }
                }
                Event::Failed { subject, at } => {
                    let n = self.sequence.fetch_add(1, Ordering::Relaxed);
                    let failed = self.key("fail", subject);
                    pipe.zadd(&failed, format!("{}:{n}", self.instance), *at).ignore();
                    pipe.expire(&failed, ttl).ignore();
                }
            }
        }
        // Subjects seen here recently keep their shared view fresh.
        let known: Vec<String> = lock(&self.shared).keys().cloned().collect();
        let now = events
            .iter()
            .map(|e| match e {
                Event::Request { at, .. } | Event::Failed { at, .. } => *at,
            })
            .max()
            .unwrap_or_else(|| stepup_core::Clock::now(&stepup_core::SystemClock).seconds());
        for subject in known {
            if !subjects.iter().any(|(s, _)| *s == subject) {
                subjects.push((subject, now));
            }
        }
        for (subject, _) in &subjects {
            for kind in ["req", "ips", "fail"] {
                let key = self.key(kind, subject);
                pipe.zrembyscore(&key, "-inf", now - window).ignore();
                pipe.zcard(&key);
            }
            pipe.cmd("HMGET")
                .arg(self.key("loc", subject))
                .arg("at")
                .arg("lat")
                .arg("lon");
        }
        if subjects.is_empty() && events.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let replies: Vec<redis::Value> = pipe.query_async(&mut connection).await?;
        let mut shared = lock(&self.shared);
        for ((subject, _), chunk) in subjects.iter().zip(replies.chunks(4)) {
            let count = |v: &redis::Value| redis::from_redis_value::<f64>(v.clone()).unwrap_or(0.0);
            let location = chunk
                .get(3)
                .and_then(|v| redis::from_redis_value::<Vec<Option<f64>>>(v.clone()).ok())
                .and_then(|v| match v.as_slice() {
                    [Some(at), Some(lat), Some(lon)] => Some(((*lat, *lon), *at as i64)),
                    _ => None,
                });
            let entry = Shared {
                requests: chunk.first().map_or(0.0, count),
                distinct_ips: chunk.get(1).map_or(0.0, count),
                failed_step_ups: chunk.get(2).map_or(0.0, count),
                last_located: location,
            };
            shared.insert(subject.clone(), entry);
        }
        // Subjects not seen for a window are no longer followed.
        shared.retain(|s, v| v.requests > 0.0 || subjects.iter().any(|(x, _)| x == s));
        Ok(())
    }

    /// The same for every instance, and not the address itself.
    fn address_member(&self, ip: std::net::IpAddr) -> String {
        let text = format!("{}\0{ip}", self.prefix);
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn push(&self, event: Event) {
        let mut pending = lock(&self.pending);
        if pending.len() < MAX_PENDING {
            pending.push(event);
        }
    }
}

/// Sets the location hash only if it is newer than the stored one.
const NEWER_LOCATION: &str = r"
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if tonumber(ARGV[1]) >= at then
  redis.call('HSET', KEYS[1], 'at', ARGV[1], 'lat', ARGV[2], 'lon', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return 0
";

impl ActivityStore for RedisActivity {
    fn record(&self, s: &Sighting<'_>) -> Activity {
        let mut activity = self.local.record(s);
        let options = *self.local.options();
        if let Some(shared) = lock(&self.shared).get(s.subject).copied() {
            // The shared view includes what this instance pushed before;
            // the local window is fresher: the larger of the two counts.
            activity.requests = activity.requests.max(shared.requests + 1.0);
            activity.distinct_ips = activity.distinct_ips.max(shared.distinct_ips);
            activity.failed_step_ups = activity.failed_step_ups.max(shared.failed_step_ups);
            if let (Some(here), Some((there, then))) = (s.coordinates, shared.last_located)
                && then < s.at
            {
                let km = distance_km(here, there);
                let speed = if km < options.min_travel_km {
                    0.0
                } else {
                    km / ((s.at - then).max(1) as f64 / 3600.0)
                };
                activity.travel_speed_kmh = Some(activity.travel_speed_kmh.map_or(speed, |l| l.max(speed)));
            }
        }
        self.push(Event::Request {
            subject: s.subject.to_owned(),
            at: s.at,
            ip: s.ip,
            coordinates: s.coordinates,
        });
        activity
    }

    fn record_failed_step_up(&self, subject: &str, at: i64) {
        self.local.record_failed_step_up(subject, at);
        self.push(Event::Failed {
            subject: subject.to_owned(),
            at,
        });
    }

    fn options(&self) -> &ActivityOptions {
        self.local.options()
    }
}
