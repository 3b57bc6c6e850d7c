//! What each subject has been doing lately: request rate, distinct client
//! addresses, refused step-ups, and the speed implied by where the last
//! request came from. These feed the risk signals `request_rate`,
//! `distinct_ips`, `failed_step_ups`, `anomaly_score`, `travel_speed_kmh`
//! and `impossible_travel`.
//!
//! The in-memory store answers from this process alone. For several guard
//! instances, `RedisActivity` shares the counters
//! through Redis without making any decision wait for it.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;

/// Baselines and limits of activity, and the sliding window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivityOptions {
    /// The window counters cover, in seconds (60 by default).
    pub window_seconds: i64,
    /// A usual number of requests per window (the anomaly score is 1 at it).
    pub baseline_requests: f64,
    /// A usual number of distinct client addresses per window.
    pub baseline_distinct_ips: f64,
    /// A usual number of refused step-ups per window.
    pub baseline_failed_step_ups: f64,
    /// Above this speed between two requests, travel is impossible (km/h).
    pub max_speed_kmh: f64,
    /// Moves shorter than this are geolocation noise, not travel (km).
    pub min_travel_km: f64,
    /// Subjects kept at most; the least recently seen go first.
    pub max_subjects: usize,
}

impl Default for ActivityOptions {
    fn default() -> Self {
        Self {
            window_seconds: 60,
            baseline_requests: 120.0,
            baseline_distinct_ips: 2.0,
            baseline_failed_step_ups: 2.0,
            max_speed_kmh: 1000.0,
            min_travel_km: 100.0,
            max_subjects: 100_000,
        }
    }
}

/// One request as the activity store sees it.
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    /// The token's subject.
    pub subject: &'a str,
    /// The client address, if known.
    pub ip: Option<IpAddr>,
    /// Where it geolocates, if known.
    pub coordinates: Option<(f64, f64)>,
    /// When (seconds since the epoch).
    pub at: i64,
}

/// A subject's recent activity, this request included.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Activity {
    /// Requests in the window.
    pub requests: f64,
    /// Distinct client addresses in the window.
    pub distinct_ips: f64,
    /// Refused step-ups in the window.
    pub failed_step_ups: f64,
    /// Speed implied by the previous located request and this one, km/h.
    pub travel_speed_kmh: Option<f64>,
}

impl Activity {
    /// How far above usual the subject is: the largest of the counters'
    /// ratios to their baselines (1.0: at the baseline).
    pub fn anomaly_score(&self, options: &ActivityOptions) -> f64 {
        let ratio = |value: f64, baseline: f64| if baseline > 0.0 { value / baseline } else { 0.0 };
        ratio(self.requests, options.baseline_requests)
            .max(ratio(self.distinct_ips, options.baseline_distinct_ips))
            .max(ratio(self.failed_step_ups, options.baseline_failed_step_ups))
    }

    /// Whether the implied travel is faster than possible.
    pub fn impossible_travel(&self, options: &ActivityOptions) -> Option<bool> {
        self.travel_speed_kmh.map(|s| s > options.max_speed_kmh)
    }
}

/// Keeps subjects' activity.
pub trait ActivityStore: Send + Sync {
    /// Records a request and returns the subject's activity with it.
    fn record(&self, sighting: &Sighting<'_>) -> Activity;
    /// Records that a request of `subject` was refused for a step-up.
    fn record_failed_step_up(&self, subject: &str, at: i64);
    /// The options the store counts with.
    fn options(&self) -> &ActivityOptions;
}

/// Great-circle distance in km (haversine, mean Earth radius).
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h =
        ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

#[derive(Debug, Default)]
pub(crate) struct SubjectWindow {
    /// Request times and address hashes, oldest first, within the window.
    requests: VecDeque<(i64, u64)>,
    /// How many of those requests came from each address.
    addresses: HashMap<u64, u32>,
    failed: VecDeque<i64>,
    last_located: Option<((f64, f64), i64)>,
    last_seen: i64,
}

/// Requests kept per subject: beyond, the oldest are counted as a total.
const MAX_KEPT: usize = 4096;

impl SubjectWindow {
    fn forget_oldest(&mut self) {
        if let Some((_, hash)) = self.requests.pop_front()
            && let Some(n) = self.addresses.get_mut(&hash)
        {
            *n -= 1;
            if *n == 0 {
                self.addresses.remove(&hash);
            }
        }
    }

    fn expire(&mut self, now: i64, window: i64) {
        while self.requests.front().is_some_and(|(t, _)| *t <= now - window) {
            self.forget_oldest();
        }
        while self.failed.front().is_some_and(|t| *t <= now - window) {
            self.failed.pop_front();
        }
    }

    pub(crate) fn record(&mut self, s: &Sighting<'_>, ip_hash: u64, options: &ActivityOptions) -> Activity {
        self.expire(s.at, options.window_seconds);
        if self.requests.len() == MAX_KEPT {
            self.forget_oldest();
        }
        self.requests.push_back((s.at, ip_hash));
        if ip_hash != 0 {
            *self.addresses.entry(ip_hash).or_default() += 1;
        }
        self.last_seen = s.at;
        let mut travel = None;
        if let Some(here) = s.coordinates {
            if let Some((there, then)) = self.last_located {
                let km = distance_km(here, there);
                travel = Some(if km < options.min_travel_km {
                    0.0
                } else {
                    // At least a second apart: requests in the same second
                    // from far apart are as impossible as they get.
                    km / ((s.at - then).max(1) as f64 / 3600.0)
                });
            }
            self.last_located = Some((here, s.at));
        }
        Activity {
            requests: self.requests.len() as f64,
            distinct_ips: self.addresses.len() as f64,
            failed_step_ups: self.failed.len() as f64,
            travel_speed_kmh: travel,
        }
    }

    pub(crate) fn failed(&mut self, at: i64, window: i64) {
        self.expire(at, window);
        if self.failed.len() < MAX_KEPT {
            self.failed.push_back(at);
        }
    }
}

/// Activity of this process's requests, in memory.
#[derive(Debug)]
pub struct MemoryActivity {
    options: ActivityOptions,
    subjects: Mutex<HashMap<String, SubjectWindow>>,
    hasher: std::collections::hash_map::RandomState,
}

impl MemoryActivity {
    /// An empty store.
    pub fn new(options: ActivityOptions) -> Self {
        Self {
            options,
            subjects: Mutex::default(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    pub(crate) fn ip_hash(&self, ip: Option<IpAddr>) -> u64 {
        ip.map_or(0, |ip| self.hasher.hash_one(ip).max(1))
    }

    fn with_subject<T>(&self, subject: &str, at: i64, f: impl FnOnce(&mut SubjectWindow) -> T) -> T {
        let mut subjects = match self.subjects.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !subjects.contains_key(subject) && subjects.len() >= self.options.max_subjects {
            // Forget the subjects idle the longest (a tenth at a time, so
            // the sweep is rare).
            let mut idle: Vec<(i64, String)> =
                subjects.iter().map(|(k, v)| (v.last_seen, k.clone())).collect();
            idle.sort_unstable();
            for (_, k) in idle.into_iter().take((self.options.max_subjects / 10).max(1)) {
                subjects.remove(&k);
            }
        }
        let window = subjects.entry(subject.to_owned()).or_default();
        window.last_seen = window.last_seen.max(at);
        f(window)
    }
}

impl ActivityStore for MemoryActivity {
    fn record(&self, s: &Sighting<'_>) -> Activity {
        let hash = self.ip_hash(s.ip);
        let options = self.options;
        self.with_subject(s.subject, s.at, |w| w.record(s, hash, &options))
    }

    fn record_failed_step_up(&self, subject: &str, at: i64) {
        let window = self.options.window_seconds;
        self.with_subject(subject, at, |w| w.failed(at, window));
    }

    fn options(&self) -> &ActivityOptions {
        &self.options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(ip: &str, coordinates: Option<(f64, f64)>, at: i64) -> Sighting<'static> {
        Sighting {
            subject: "alice",
            ip: Some(ip.parse().unwrap()),
            coordinates,
            at,
        }
    }

    const PARIS: (f64, f64) = (48.8566, 2.3522);
    const SAO_PAULO: (f64, f64) = (-23.5505, -46.6333);
    const VERSAILLES: (f64, f64) = (48.8049, 2.1204);

    #[test]
    fn distances() {
        let d = distance_km(PARIS, SAO_PAULO);
        assert!((9_350.0..9_450.0).contains(&d), "{d}");
        assert!(distance_km(PARIS, PARIS) < 1e-9);
    }

    #[test]
    fn rates_addresses_and_failures_in_a_sliding_window() {
        let store = MemoryActivity::new(ActivityOptions::default());
        for i in 0..10 {
            store.record(&sighting("192.0.2.1", None, 1_000 + i));
        }
        let a = store.record(&sighting("192.0.2.2", None, 1_010));
        assert_eq!((a.requests, a.distinct_ips), (11.0, 2.0));
        store.record_failed_step_up("alice", 1_011);
        let a = store.record(&sighting("192.0.2.2", None, 1_012));
        assert_eq!(a.failed_step_ups, 1.0);
        // A minute later the window has moved on.
        let a = store.record(&sighting("192.0.2.3", None, 1_075));
        assert_eq!((a.requests, a.distinct_ips, a.failed_step_ups), (1.0, 1.0, 0.0));
        // Another subject is counted apart.
        let bob = store.record(&Sighting {
            subject: "bob",
            ..sighting("192.0.2.1", None, 1_075)
        });
        assert_eq!(bob.requests, 1.0);
    }

    #[test]
    fn bursts_raise_the_anomaly_score() {
        let options = ActivityOptions::default();
        let store = MemoryActivity::new(options);
        let mut last = Activity::default();
        for i in 0..240 {
            last = store.record(&sighting("192.0.2.1", None, 2_000 + i / 10));
        }
        assert!((last.anomaly_score(&options) - 2.0).abs() < 1e-9, "{last:?}");
        let calm = MemoryActivity::new(options).record(&sighting("192.0.2.1", None, 2_000));
        assert!(calm.anomaly_score(&options) < 1.0);
    }

    #[test]
    fn impossible_travel_between_two_requests() {
        let options = ActivityOptions::default();
        let store = MemoryActivity::new(options);
        let first = store.record(&sighting("203.0.113.1", Some(PARIS), 10_000));
        assert_eq!(first.travel_speed_kmh, None, "nothing to compare with yet");
        // Versailles an hour later: within the noise radius.
        let near = store.record(&sighting("203.0.113.2", Some(VERSAILLES), 13_600));
        assert_eq!(near.impossible_travel(&options), Some(false));
        // São Paulo ten minutes later: some 56,000 km/h.
        let far = store.record(&sighting("198.51.100.1", Some(SAO_PAULO), 14_200));
        assert_eq!(far.impossible_travel(&options), Some(true));
        assert!(far.travel_speed_kmh.unwrap() > 50_000.0);
        // Back in Paris twelve hours later by plane: possible.
        let back = store.record(&sighting("203.0.113.1", Some(PARIS), 14_200 + 12 * 3600));
        assert_eq!(back.impossible_travel(&options), Some(false));
    }

    #[test]
    fn the_number_of_subjects_is_bounded() {
        let options = ActivityOptions {
            max_subjects: 10,
            ..ActivityOptions::default()
        };
        let store = MemoryActivity::new(options);
        for i in 0..25 {
            let subject = format!("s{i}");
            store.record(&Sighting {
                subject: &subject,
                ip: None,
                coordinates: None,
                at: i,
            });
        }
        let kept = store.subjects.lock().unwrap().len();
        assert!(kept <= 10, "{kept}");
        assert!(store.subjects.lock().unwrap().contains_key("s24"));
    }
}
