//! Prometheus metrics, in the text exposition format (version 0.0.4).
//!
//! Counters and histograms are atomics: a trusted call touches a handful
//! of them and takes no lock. Only refusals, which are rare and already
//! slow (a challenge is built), take the lock of the per-rule counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The guard let it through and the upstream answered.
    Allowed,
    /// A step-up was asked (`insufficient_user_authentication` or
    /// `insufficient_scope`).
    StepUp,
    /// Refused for another reason (no token, bad token, bad request).
    Denied,
    /// The guard could not decide (keys or introspection unavailable).
    Unavailable,
    /// Let through, but the upstream failed (502), timed out (504), or the
    /// body was too long (413).
    UpstreamError,
    /// Passed to a public upstream (no guard) and answered by it.
    Public,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Allowed,
        Outcome::StepUp,
        Outcome::Denied,
        Outcome::Unavailable,
        Outcome::UpstreamError,
        Outcome::Public,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::StepUp => "step_up",
            Outcome::Denied => "denied",
            Outcome::Unavailable => "unavailable",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Public => "public",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the latency buckets, in microseconds: 50 µs to 10 s.
const BUCKETS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 10_000_000,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_MICROS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        // Non-cumulative here; made cumulative when rendered.
        if let Some(i) = BUCKETS_MICROS.iter().position(|&b| micros <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS_MICROS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", seconds(*bound));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

fn seconds(micros: u64) -> String {
    format!("{}", micros as f64 / 1e6)
}

/// Label values are user-controlled text (policy rule names): escape them
/// as the exposition format requires.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Every metric of a gateway.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; Outcome::ALL.len()],
    /// Decisions by outcome and policy route (route names; `[default]` for
    /// the default rule).
    decisions: Mutex<BTreeMap<(Outcome, String), u64>>,
    /// Step-ups asked, by the rule that asked (route or risk rule).
    step_ups: Mutex<BTreeMap<String, u64>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// Requests sent to another instance after one failed them.
    retries: AtomicU64,
    /// From the request's arrival to the guard's verdict.
    pub decision_latency: Histogram,
    /// From sending to the upstream to its response headers.
    pub upstream_latency: Histogram,
    /// From the request's arrival to the response headers.
    pub request_latency: Histogram,
}

impl Metrics {
    /// Counts a request's outcome, and the decision of its route.
    pub fn count(&self, outcome: Outcome, route: &str) {
        self.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut decisions) = self.decisions.lock() {
            *decisions.entry((outcome, route.to_owned())).or_default() += 1;
        }
    }

    /// Counts a request's outcome only (the per-route count is kept by the
    /// caller, see [`RouteCounters`]).
    pub fn count_outcome(&self, outcome: Outcome) {
        self.requests[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a step-up asked by `rule`.
    pub fn step_up(&self, rule: &str) {
        if let Ok(mut step_ups) = self.step_ups.lock() {
            *step_ups.entry(rule.to_owned()).or_default() += 1;
        }
    }

    /// Counts a request sent on to another instance of its upstream.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a policy reload.
    pub fn reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `routes` adds the allowed calls counted per route.
    pub fn render(&self, routes: &RouteCounters) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP stepup_gateway_requests_total Requests by outcome.\n");
        out.push_str("# TYPE stepup_gateway_requests_total counter\n");
        for outcome in Outcome::ALL {
            let n = self.requests[outcome.index()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "stepup_gateway_requests_total{{outcome=\"{}\"}} {n}",
                outcome.as_str()
            );
        }
        out.push_str("# HELP stepup_gateway_decisions_total Guard decisions by outcome and policy route.\n");
        out.push_str("# TYPE stepup_gateway_decisions_total counter\n");
        let mut decisions = self.decisions.lock().map(|d| d.clone()).unwrap_or_default();
        for (route, n) in routes.snapshot() {
            *decisions.entry((Outcome::Allowed, route)).or_default() += n;
        }
        for ((outcome, route), n) in &decisions {
            let _ = writeln!(
                out,
                "stepup_gateway_decisions_total{{outcome=\"{}\",route=\"{}\"}} {n}",
                outcome.as_str(),
                escape_label(route)
            );
        }
        out.push_str("# HELP stepup_gateway_step_ups_total Step-ups asked, by the rule that asked.\n");
        out.push_str("# TYPE stepup_gateway_step_ups_total counter\n");
        if let Ok(step_ups) = self.step_ups.lock() {
            for (rule, n) in step_ups.iter() {
                let _ = writeln!(
                    out,
                    "stepup_gateway_step_ups_total{{rule=\"{}\"}} {n}",
                    escape_label(rule)
                );
            }
        }
        out.push_str("# HELP stepup_gateway_policy_reloads_total Policy reloads by result.\n");
        out.push_str("# TYPE stepup_gateway_policy_reloads_total counter\n");
        let _ = writeln!(
            out,
            "stepup_gateway_policy_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "stepup_gateway_policy_reloads_total{{result=\"error\"}} {}",
            self.reloads_failed.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP stepup_gateway_upstream_retries_total Requests sent to another instance after one could not take them.\n",
        );
        out.push_str("# TYPE stepup_gateway_upstream_retries_total counter\n");
        let _ = writeln!(
            out,
            "stepup_gateway_upstream_retries_total {}",
            self.retries.load(Ordering::Relaxed)
        );
        self.decision_latency.render(
            &mut out,
            "stepup_gateway_decision_duration_seconds",
            "From a request's arrival to the guard's verdict.",
        );
        self.upstream_latency.render(
            &mut out,
            "stepup_gateway_upstream_duration_seconds",
            "From forwarding to the upstream's response headers.",
        );
        self.request_latency.render(
            &mut out,
            "stepup_gateway_request_duration_seconds",
            "From a request's arrival to the response headers.",
        );
        out
    }
}

/// Allowed calls per policy route, without a lock: one atomic per route of
/// the policy in force. A reload carries the counts over by route name.
#[derive(Debug)]
pub struct RouteCounters {
    names: Vec<String>,
    counts: Vec<AtomicU64>,
}

/// The label of calls that no route matched (the policy's `[default]`).
pub const DEFAULT_ROUTE: &str = "[default]";

impl RouteCounters {
    /// Counters for `names` (the policy's routes, in order), starting from
    /// the counts of `previous` for the routes it shares.
    pub fn new(names: Vec<String>, previous: Option<&RouteCounters>) -> Self {
        let mut names = names;
        names.push(DEFAULT_ROUTE.to_owned());
        let counts = names
            .iter()
            .map(|name| AtomicU64::new(previous.map_or(0, |p| p.get(name))))
            .collect();
        Self { names, counts }
    }

    fn get(&self, name: &str) -> u64 {
        self.names
            .iter()
            .position(|n| n == name)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    /// Counts one allowed call of route `index` (`None`: the default).
    pub fn allowed(&self, index: Option<usize>) {
        let i = index.unwrap_or(self.counts.len() - 1).min(self.counts.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The name of route `index` (`None`: the default).
    pub fn name(&self, index: Option<usize>) -> &str {
        let i = index.unwrap_or(self.names.len() - 1).min(self.names.len() - 1);
        &self.names[i]
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        self.names
            .iter()
            .zip(&self.counts)
            .map(|(n, c)| (n.clone(), c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_carry_over_reloads() {
        let metrics = Metrics::default();
        metrics.decision_latency.observe(Duration::from_micros(40));
        metrics.decision_latency.observe(Duration::from_micros(700));
        metrics.decision_latency.observe(Duration::from_secs(60));
        let old = RouteCounters::new(vec!["read balance".into(), "gone".into()], None);
        old.allowed(Some(0));
        old.allowed(Some(1));
        old.allowed(None);
        let new = RouteCounters::new(vec!["read balance".into(), "say \"hi\"".into()], Some(&old));
        new.allowed(Some(0));
        new.allowed(Some(1));
        metrics.count(Outcome::StepUp, "add payee");
        metrics.step_up("add payee");
        let text = metrics.render(&new);
        assert!(text.contains("stepup_gateway_decision_duration_seconds_bucket{le=\"0.00005\"} 1\n"));
        assert!(text.contains("stepup_gateway_decision_duration_seconds_bucket{le=\"0.001\"} 2\n"));
        assert!(text.contains("stepup_gateway_decision_duration_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("stepup_gateway_decision_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("stepup_gateway_decision_duration_seconds_count 3\n"));
        assert!(
            text.contains("stepup_gateway_decisions_total{outcome=\"allowed\",route=\"read balance\"} 2\n")
        );
        assert!(text.contains("stepup_gateway_decisions_total{outcome=\"allowed\",route=\"[default]\"} 1\n"));
        assert!(text.contains("route=\"say \\\"hi\\\"\"} 1\n"));
        assert!(!text.contains("route=\"gone\""));
        assert!(text.contains("stepup_gateway_decisions_total{outcome=\"step_up\",route=\"add payee\"} 1\n"));
        assert!(text.contains("stepup_gateway_step_ups_total{rule=\"add payee\"} 1\n"));
        assert!(text.contains("stepup_gateway_requests_total{outcome=\"step_up\"} 1\n"));
    }
}
