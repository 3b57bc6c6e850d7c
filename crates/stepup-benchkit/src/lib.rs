//! What stepup's HTTP benchmarks share: an in-process load generator that
//! keeps N keep-alive connections (HTTP/1.1 or HTTP/2) busy with requests
//! sent back to back, latency percentiles, and the figures file.
//!
//! Every response's status is checked: a target that answers anything else
//! than what the benchmark expects aborts the run, so a broken server
//! cannot look fast.

#![forbid(unsafe_code)]

pub mod headline;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::serve::ListenerExt;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The benchmarked route of [`policy_100`], and a path it matches.
pub const BALANCE_ROUTE: &str = "/accounts/{id}/balance";
/// A request path of [`BALANCE_ROUTE`].
pub const BALANCE_PATH: &str = "/accounts/42/balance";

/// The step-up policy (TOML) of the HTTP benchmarks: 100 routes, 19
/// services of 5 routes plus the 5 routes of an accounts service, one of
/// which is the benchmarked balance route (pwd or better, fresh within
/// 300 s, scope `accounts:read`).
pub fn policy_100() -> String {
    let mut src = String::from(
        "levels = [{ name = \"pwd\", acr = \"urn:stepup:acr:pwd\" }, { name = \"mfa\", acr = \"urn:stepup:acr:mfa\" }]\n[default]\nacr = [\"pwd\"]\n",
    );
    let mut route = |method: &str, path: &str, acr: &str, scope: &str| {
        src.push_str(&format!(
            "[[route]]\nmethods = [\"{method}\"]\npath = \"{path}\"\nacr = [\"{acr}\"]\nmax_age = 300\nscope = [\"{scope}\"]\n"
        ));
    };
    for svc in 0..19 {
        for (i, (method, tail)) in [
            ("GET", "/items"),
            ("POST", "/items"),
            ("GET", "/items/{id}"),
            ("DELETE", "/items/{id}"),
            ("POST", "/items/{id}/approve"),
        ]
        .into_iter()
        .enumerate()
        {
            let acr = if i % 2 == 0 { "pwd" } else { "mfa" };
            route(method, &format!("/svc{svc}{tail}"), acr, &format!("svc{svc}"));
        }
    }
    route("GET", "/accounts/{id}", "pwd", "accounts:read");
    route("GET", BALANCE_ROUTE, "pwd", "accounts:read");
    route("POST", "/accounts/{id}/payees", "mfa", "payments:write");
    route("POST", "/accounts/{id}/transfers", "mfa", "payments:write");
    route("DELETE", "/accounts/{id}/payees/{payee}", "mfa", "payments:write");
    src
}

/// The issuer of [`verifier_and_token`]'s token.
pub const ISSUER: &str = "https://as.example";
/// Its audience.
pub const AUDIENCE: &str = "https://api.example";

/// A verifier of fresh ES256 keys (fixed JWKS) and an RFC 9068 access token
/// it accepts, issued at `now - 10`, valid for `lifetime` seconds after `now`, of
/// alice at `mfa` authenticated 30 s before `now`, with scope
/// `accounts:read` (what the balance route of [`policy_100`] asks).
pub fn verifier_and_token(now: i64, lifetime: i64) -> Result<(stepup_guard::TokenVerifier, String)> {
    use stepup_core::access_token::ClaimsRules;
    use stepup_core::jwk::{Algorithm, Jwks};
    use stepup_core::jws::{SigningHeader, SigningKey, VerificationPolicy, sign_compact};

    let rng = ring::rand::SystemRandom::new();
    let key = SigningKey::generate_es256(&rng).map_err(|e| format!("ES256 key: {e}"))?;
    let jwks = Jwks::from_json(
        json!({ "keys": [key.public_jwk(Some("k1"))] })
            .to_string()
            .as_bytes(),
    )
    .map_err(|e| format!("JWK Set: {e}"))?;
    let claims = json!({
        "iss": ISSUER, "sub": "alice", "aud": AUDIENCE,
        "exp": now + lifetime, "iat": now - 10, "jti": "b3f1c9", "client_id": "bank-web",
        "scope": "openid accounts:read", "acr": "urn:stepup:acr:mfa", "amr": ["pwd", "otp"],
        "auth_time": now - 30,
    });
    let header = SigningHeader::new().typ("at+jwt").kid("k1");
    let token = sign_compact(&header, claims.to_string().as_bytes(), &key, &rng)
        .map_err(|e| format!("signing: {e}"))?;
    let verifier = stepup_guard::JwtVerifier::new(
        stepup_guard::KeySource::fixed(jwks),
        ClaimsRules {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway_seconds: 30,
        },
        VerificationPolicy::access_token([Algorithm::ES256]),
    );
    Ok((
        stepup_guard::TokenVerifier::Jwt(std::sync::Arc::new(verifier)),
        token,
    ))
}

/// Errors of a benchmark run, as messages: a run either completes or says why not.
pub type Result<T> = std::result::Result<T, String>;

/// A positive number from the environment, or `default` when unset.
pub fn env_setting<T: std::str::FromStr + PartialOrd + Default>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => match text.trim().parse::<T>() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err(format!("{name}={text:?}: expected a positive integer")),
        },
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median (mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[mid],
        _ => (sorted[mid - 1] + sorted[mid]) / 2.0,
    }
}

/// `61234.6` as `61,235`.
pub fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `x` rounded to `decimals` places.
pub fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// `$CARGO_TARGET_DIR/stepup-bench/FILE`, or under the workspace's `target/`.
pub fn output_path(file: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")));
    target.join("stepup-bench").join(file)
}

/// Writes `figures` as pretty JSON to [`output_path`]`(file)`.
pub fn write_figures(file: &str, figures: &Value) -> Result<PathBuf> {
    let path = output_path(file);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
        std::fs::write(&path, serde_json::to_string_pretty(figures)? + "\n")
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

/// Serves `app` on an ephemeral loopback port in the background, with
/// `TCP_NODELAY` (small responses go out at once, as requests do).
pub async fn serve(app: Router) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local address: {e}"))?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// The HTTP version a load connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 with prior knowledge (cleartext), one request at a time per
    /// connection, like the HTTP/1.1 case.
    Http2,
}

impl Protocol {
    /// `HTTP/1.1` or `HTTP/2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }
}

enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// One keep-alive client connection.
pub struct Connection {
    addr: SocketAddr,
    sender: Sender,
}

impl Connection {
    /// Connects to `addr` and shakes hands in `protocol`.
    pub async fn open(addr: SocketAddr, protocol: Protocol) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let io = TokioIo::new(stream);
        let handshake = |e: hyper::Error| format!("handshake with {addr}: {e}");
        // The connection tasks run until the sender is dropped; failures
        // show up in `get`.
        let sender = match protocol {
            Protocol::Http1 => {
                let (sender, connection) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(handshake)?;
                tokio::spawn(connection);
                Sender::Http1(sender)
            }
            Protocol::Http2 => {
                let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(handshake)?;
                tokio::spawn(connection);
                Sender::Http2(sender)
            }
        };
        Ok(Self { addr, sender })
    }

    /// `GET path` with `headers`; the whole response body is read.
    pub async fn get(
        &mut self,
        path: &Uri,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<(StatusCode, Bytes)> {
        let failed = |e: hyper::Error| format!("GET {path} on {}: {e}", self.addr);
        let mut request = Request::get(path.clone());
        match self.sender {
            Sender::Http1(_) => request = request.header(HOST, HeaderValue::from_static("127.0.0.1")),
            // HTTP/2 wants the authority in the URI (:authority).
            Sender::Http2(_) => {
                let uri = format!("http://{}{}", self.addr, path);
                request = request.uri(uri);
            }
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Empty::new()).map_err(|e| format!("request: {e}"))?;
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await.map_err(failed)?;
                sender.send_request(request).await.map_err(failed)?
            }
            Sender::Http2(sender) => {
                sender.ready().await.map_err(failed)?;
                sender.send_request(request).await.map_err(failed)?
            }
        };
        let status = response.status();
        let body = response.into_body().collect().await.map_err(failed)?.to_bytes();
        Ok((status, body))
    }
}

/// What a load round sends and expects.
#[derive(Debug, Clone)]
pub struct Load {
    /// The target's label, for messages.
    pub target: String,
    /// Where.
    pub addr: SocketAddr,
    /// How.
    pub protocol: Protocol,
    /// The request path.
    pub path: Uri,
    /// Its headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The status every response must have.
    pub expect: StatusCode,
    /// Concurrent connections.
    pub connections: usize,
    /// Time before measuring.
    pub warm_up: Duration,
    /// Time measured.
    pub measured: Duration,
}

/// One round: the latencies (µs) of the responses completed in the
/// measured window, over all connections.
pub async fn round(load: &Load) -> Result<Vec<u32>> {
    let start = Instant::now() + load.warm_up;
    let end = start + load.measured;
    let mut connections = JoinSet::new();
    for _ in 0..load.connections {
        let load = load.clone();
        connections.spawn(async move { drive(&load, start, end).await });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = connections.join_next().await {
        let mut connection = joined.map_err(|e| format!("load connection: {e}"))??;
        latencies.append(&mut connection);
    }
    Ok(latencies)
}

/// Requests back to back on one connection until `end`.
async fn drive(load: &Load, start: Instant, end: Instant) -> Result<Vec<u32>> {
    let mut connection = Connection::open(load.addr, load.protocol).await?;
    let mut latencies = Vec::with_capacity(1 << 16);
    loop {
        let sent = Instant::now();
        if sent >= end {
            return Ok(latencies);
        }
        let (status, body) = connection.get(&load.path, &load.headers).await?;
        let done = Instant::now();
        if status != load.expect {
            return Err(format!(
                "{} ({}) answered {status}, expected {}: {}",
                load.target,
                load.addr,
                load.expect,
                String::from_utf8_lossy(&body)
            ));
        }
        if done >= start && done < end {
            latencies.push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
        }
    }
}

/// The rounds of one target.
#[derive(Debug, Clone)]
pub struct Series {
    /// The target's label.
    pub name: String,
    /// Requests per second of each round.
    pub rates: Vec<f64>,
    /// Every measured latency (µs), sorted once [`Series::finish`] ran.
    pub latencies: Vec<u32>,
}

impl Series {
    /// An empty series.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            rates: Vec::new(),
            latencies: Vec::new(),
        }
    }

    /// Adds a round measured over `measured`; prints it to stderr (progress).
    pub fn push_round(&mut self, label: &str, mut latencies: Vec<u32>, measured: Duration) {
        let rate = latencies.len() as f64 / measured.as_secs_f64();
        latencies.sort_unstable();
        eprintln!(
            "{label} {}: {} req/s (p50 {} µs, p99 {} µs)",
            self.name,
            thousands(rate),
            thousands(f64::from(percentile(&latencies, 0.50))),
            thousands(f64::from(percentile(&latencies, 0.99))),
        );
        self.rates.push(rate);
        self.latencies.append(&mut latencies);
    }

    /// Sorts the latencies of all rounds, for percentiles.
    pub fn finish(&mut self) {
        self.latencies.sort_unstable();
    }

    /// The median rate over rounds.
    pub fn median_rate(&self) -> f64 {
        median(&self.rates)
    }

    /// A latency percentile over every measured request (after [`Series::finish`]).
    pub fn percentile(&self, p: f64) -> u32 {
        percentile(&self.latencies, p)
    }

    /// The median of the ratios of this series' rounds to `baseline`'s
    /// round of the same index: what drift on a shared machine disturbs
    /// least when rounds alternate.
    pub fn paired_ratio(&self, baseline: &Series) -> f64 {
        median(&self.paired_ratios(baseline))
    }

    /// The ratio of each round's rate to `baseline`'s round of the same index.
    pub fn paired_ratios(&self, baseline: &Series) -> Vec<f64> {
        self.rates
            .iter()
            .zip(&baseline.rates)
            .map(|(a, b)| a / b)
            .collect()
    }

    /// The figures of the series.
    pub fn json(&self) -> Value {
        json!({
            "req_per_s_median": self.median_rate().round() as u64,
            "req_per_s_rounds": self.rates.iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
            "p50_us": self.percentile(0.50),
            "p99_us": self.percentile(0.99),
            "requests_measured": self.latencies.len(),
        })
    }
}

/// Reads from `stream` until the server closes it (or `within` passes):
/// what it sent, and whether it closed. For tests that talk raw TCP, as
/// a slow or hostile client would.
pub async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_medians_and_numbers() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.50), 50);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&sorted, 1.0), 100);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(thousands(61234.6), "61,235");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(round_to(0.87654, 2), 0.88);
        let mut a = Series::new("a");
        a.rates = vec![90.0, 80.0, 100.0];
        let mut b = Series::new("b");
        b.rates = vec![100.0, 100.0, 100.0];
        assert!((a.paired_ratio(&b) - 0.9).abs() < 1e-9);
    }
}
