//! What the gateway costs: requests per second and latency of one upstream
//! endpoint over loopback, called directly and through the gateway, by the
//! same in-process load generator, in HTTP/1.1 and in HTTP/2.
//!
//! - `upstream` is an axum server answering `GET /accounts/{id}/balance`
//!   with a small JSON body naming the `X-Stepup-Subject` it was given;
//! - `gateway` is a [`Gateway`] in front of it with the 100-route policy of
//!   the HTTP benchmarks, fixed ES256 keys and a pooled keep-alive client.
//!
//! The load is a trusted call: a token that meets the route, sent again and
//! again, so the guard takes its cached path (no signature check after the
//! first). Every response must be 200 (and through the gateway, the
//! preflight checks that the upstream received the verified subject), or
//! the run aborts. Rounds alternate direct and gateway to cancel drift.
//!
//! Run with `cargo bench -p stepup-gateway --bench proxy`. Settings:
//! `STEPUP_BENCH_CONNECTIONS` (default 32), `STEPUP_BENCH_SECONDS`
//! (measured seconds per round, default 2), `STEPUP_BENCH_ROUNDS` (default
//! 5). The table goes to stdout, progress to stderr, the figures to
//! `$CARGO_TARGET_DIR/stepup-bench/gateway.json`.
//!
//! Two placements, one after the other in the same run. *Shared cores*:
//! load generator, upstream and proxy on one multi-thread runtime over every
//! core, so the proxy's own work (a second TCP hop, parsing, guarding)
//! competes with the upstream for CPU and a saturated machine serves about
//! as many fewer calls as the proxy takes CPU. *Own core*: load generator
//! and upstream on a current-thread runtime bound to core 0, the gateway on
//! another bound to core 1 (nginx: one worker bound to core 1), as when a
//! gateway runs on cores of its own. To tell the cost of any proxy from the
//! cost of this one, the run also measures nginx (`proxy_pass` with
//! upstream keep-alive, no authentication) in front of the same upstream
//! when an `nginx` binary is installed (Debian: `nginx-light`).

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use serde_json::{Value, json};
use stepup_benchkit::{
    BALANCE_PATH, BALANCE_ROUTE, Connection, Load, Protocol, Result, Series, env_setting, policy_100, round,
    round_to, serve, thousands, write_figures,
};
use stepup_gateway::{Gateway, GatewayConfig};
use stepup_guard::TokenVerifier;

const WARM_UP: Duration = Duration::from_secs(1);
use stepup_benchkit::headline::{Headline, Target, headlines_json};
use stepup_benchkit::{AUDIENCE, ISSUER};

struct Settings {
    connections: usize,
    seconds: u64,
    rounds: usize,
}

async fn balance(Path(account): Path<String>, headers: HeaderMap) -> Json<Value> {
    let subject = headers
        .get("x-stepup-subject")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    Json(json!({ "account": account, "currency": "EUR", "available": "1250.00", "subject": subject }))
}

/// Keys, a verifier of them, and a token for the balance route.
fn verifier_and_token() -> (TokenVerifier, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // The gateway uses the system clock: the token must outlive the run.
    let (verifier, token) = stepup_benchkit::verifier_and_token(now, 3600).unwrap();
    (verifier, token)
}

/// A gateway in front of `upstream`, its policy in a temporary file.
async fn start_gateway(upstream: SocketAddr, verifier: TokenVerifier) -> Result<SocketAddr> {
    let dir = std::env::temp_dir().join(format!("stepup-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, policy_100()).map_err(|e| format!("{}: {e}", policy.display()))?;
    let config = format!(
        "listen = \"127.0.0.1:0\"\npolicy = {policy:?}\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\n[[upstream]]\nprefix = \"/\"\nurl = \"http://{upstream}\"\n"
    );
    let config = GatewayConfig::from_toml("bench gateway", &config).map_err(|e| e.to_string())?;
    let gateway = Gateway::with_verifier(config, verifier).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    // Served as `stepup gateway` serves it: with the connection limits and
    // their watchdog (TCP_NODELAY set there).
    tokio::spawn(async move { gateway.serve(listener, std::future::pending()).await });
    Ok(addr)
}

/// Before loading: the gateway refuses a call without a token and passes the
/// token's subject to the upstream; the upstream answers directly.
async fn preflight(upstream: SocketAddr, gateway: SocketAddr, authorization: &HeaderValue) -> Result<()> {
    let path = Uri::from_static(BALANCE_PATH);
    let with_token = [(AUTHORIZATION, authorization.clone())];
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let (status, _) = Connection::open(upstream, protocol)
            .await?
            .get(&path, &with_token)
            .await?;
        if status != StatusCode::OK {
            return Err(format!("upstream answered {status} in {}", protocol.as_str()));
        }
        let mut connection = Connection::open(gateway, protocol).await?;
        let (status, _) = connection.get(&path, &[]).await?;
        if status != StatusCode::UNAUTHORIZED {
            return Err(format!("gateway answered {status} to a call without a token"));
        }
        let (status, body) = connection.get(&path, &with_token).await?;
        let body: Value = serde_json::from_slice(&body).map_err(|e| format!("gateway's body: {e}"))?;
        if status != StatusCode::OK || body["subject"] != "alice" {
            return Err(format!("gateway answered {status}: {body}"));
        }
    }
    Ok(())
}

/// A running nginx, stopped when dropped.
struct Nginx {
    child: std::process::Child,
    http1: SocketAddr,
    http2: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// nginx as a plain reverse proxy in front of `upstream`, if installed.
async fn start_nginx(upstream: SocketAddr, placement: Placement) -> Result<Option<Nginx>> {
    let Some(binary) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("nginx not installed (apt-get install nginx-light): no plain-proxy baseline in this run");
        return Ok(None);
    };
    let dir = std::env::temp_dir().join(format!(
        "stepup-gateway-bench-nginx-{}-{}",
        placement.key(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (http1, http2) = (free_port()?, free_port()?);
    let d = dir.display();
    let workers = match placement {
        Placement::Shared => "worker_processes auto;",
        Placement::OwnCore => "worker_processes 1;\nworker_cpu_affinity 10;",
    };
    let config = format!(
        "{workers}\ndaemon off;\nmaster_process on;\nuser root;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream api {{ server {upstream}; keepalive 256; keepalive_requests 100000000; }}\n\
         server {{\n    listen {http1};\n    listen {http2} http2;\n\
         location / {{ proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_set_header X-Stepup-Subject alice; }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let child = std::process::Command::new(binary)
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting nginx: {e}"))?;
    let nginx = Nginx { child, http1, http2 };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(http2).await.is_ok()
            && tokio::net::TcpStream::connect(http1).await.is_ok()
        {
            return Ok(Some(nginx));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("nginx did not start; see {d}/error.log"))
}

/// Where the processes run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Load generator, upstream and proxy on one multi-thread runtime over
    /// every core (nginx: one worker per core).
    Shared,
    /// Load generator and upstream on core 0, the proxy alone on core 1
    /// (nginx: one worker, bound to core 1).
    OwnCore,
}

impl Placement {
    fn describe(self, cores: usize) -> String {
        match self {
            Placement::Shared => format!("{cores} cores shared by all"),
            Placement::OwnCore => {
                "load generator and upstream on core 0, the proxy alone on core 1".to_owned()
            }
        }
    }

    fn short(self) -> &'static str {
        match self {
            Placement::Shared => "shared cores",
            Placement::OwnCore => "gateway on its own core",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Placement::Shared => "shared_cores",
            Placement::OwnCore => "own_core",
        }
    }
}

/// The loads of a run: direct and through the gateway, both protocols,
/// and through nginx when there is one.
fn loads(
    settings: &Settings,
    authorization: &HeaderValue,
    upstream: SocketAddr,
    gateway: SocketAddr,
    nginx: Option<&Nginx>,
) -> Vec<Load> {
    let load = |target: &str, addr: SocketAddr, protocol: Protocol| Load {
        target: target.to_owned(),
        addr,
        protocol,
        path: Uri::from_static(BALANCE_PATH),
        headers: vec![(AUTHORIZATION, authorization.clone())],
        expect: StatusCode::OK,
        connections: settings.connections,
        warm_up: WARM_UP,
        measured: Duration::from_secs(settings.seconds),
    };
    let mut loads = vec![
        load("direct HTTP/1.1", upstream, Protocol::Http1),
        load("gateway HTTP/1.1", gateway, Protocol::Http1),
        load("direct HTTP/2", upstream, Protocol::Http2),
        load("gateway HTTP/2", gateway, Protocol::Http2),
    ];
    if let Some(nginx) = nginx {
        loads.push(load("nginx HTTP/1.1", nginx.http1, Protocol::Http1));
        loads.push(load("nginx HTTP/2", nginx.http2, Protocol::Http2));
    }
    loads
}

/// Alternating rounds of every load.
async fn measure(settings: &Settings, placement: Placement, loads: &[Load]) -> Result<Vec<Series>> {
    let measured = Duration::from_secs(settings.seconds);
    let mut series: Vec<Series> = loads.iter().map(|l| Series::new(l.target.clone())).collect();
    for r in 1..=settings.rounds {
        for (s, load) in series.iter_mut().zip(loads) {
            let latencies = round(load).await?;
            let label = format!("[{}] round {r}/{}", placement.key(), settings.rounds);
            s.push_round(&label, latencies, measured);
        }
    }
    for s in &mut series {
        s.finish();
    }
    Ok(series)
}

/// Prints the table and the ratios; returns the figures.
fn report(settings: &Settings, placement: Placement, series: &[Series]) -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "Gateway vs direct, trusted call, loopback, {} connections, {} s x {} rounds each, same load generator; {}",
        settings.connections,
        settings.seconds,
        settings.rounds,
        placement.describe(cores)
    );
    println!(
        "{:<18} {:>15} {:>8} {:>8}",
        "target", "req/s (median)", "p50 µs", "p99 µs"
    );
    for s in series {
        println!(
            "{:<18} {:>15} {:>8} {:>8}",
            s.name,
            thousands(s.median_rate()),
            thousands(f64::from(s.percentile(0.50))),
            thousands(f64::from(s.percentile(0.99))),
        );
    }
    let mut comparisons = Vec::new();
    let mut headlines = Vec::new();
    let mut pairs = vec![(&series[0], &series[1]), (&series[2], &series[3])];
    if series.len() == 6 {
        pairs.extend([
            (&series[0], &series[4]),
            (&series[2], &series[5]),
            (&series[4], &series[1]),
            (&series[5], &series[3]),
        ]);
    }
    for (baseline, target) in pairs {
        let ratio = target.median_rate() / baseline.median_rate();
        let paired = target.paired_ratio(baseline);
        let added_p50 = i64::from(target.percentile(0.50)) - i64::from(baseline.percentile(0.50));
        let added_p99 = i64::from(target.percentile(0.99)) - i64::from(baseline.percentile(0.99));
        println!(
            "{} / {} = {ratio:.2} (ratio of medians), {paired:.2} (median of round pairs); latency p50 {added_p50:+} µs, p99 {added_p99:+} µs",
            target.name, baseline.name
        );
        if target.name.starts_with("gateway") && baseline.name.starts_with("direct") {
            let place = placement.short();
            headlines.push(
                Headline::from_rounds(
                    format!(
                        "gateway: {} / {}, throughput ({place})",
                        target.name, baseline.name
                    ),
                    &target.paired_ratios(baseline),
                    "×",
                )
                .target(Target::AtLeast(0.85)),
            );
            headlines.push(
                Headline::single(
                    format!("gateway: {} − {}, p99 ({place})", target.name, baseline.name),
                    added_p99 as f64,
                    "µs",
                )
                .target(Target::AtMost(1000.0)),
            );
        }
        comparisons.push(json!({
            "target": target.name,
            "baseline": baseline.name,
            "throughput_ratio": round_to(ratio, 3),
            "throughput_ratio_paired_median": round_to(paired, 3),
            "added_p50_us": added_p50,
            "added_p99_us": added_p99,
        }));
    }
    json!({
        "placement": placement.describe(cores),
        "cores": cores,
        "names": series.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "series": series.iter().map(Series::json).collect::<Vec<_>>(),
        "comparisons": comparisons,
        "headlines": headlines_json(&headlines),
    })
}

/// Everything on one multi-thread runtime.
async fn run_shared(settings: &Settings) -> Result<Value> {
    let (verifier, token) = verifier_and_token();
    let upstream = serve(Router::new().route(BALANCE_ROUTE, get(balance))).await?;
    let gateway = start_gateway(upstream, verifier).await?;
    let authorization =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| format!("header: {e}"))?;
    preflight(upstream, gateway, &authorization).await?;
    let nginx = start_nginx(upstream, Placement::Shared).await?;
    let loads = loads(settings, &authorization, upstream, gateway, nginx.as_ref());
    let series = measure(settings, Placement::Shared, &loads).await?;
    Ok(report(settings, Placement::Shared, &series))
}

/// Runs `task` on a current-thread runtime of a new thread bound to `core`.
fn on_core<T: Send + 'static>(
    name: &str,
    core: usize,
    task: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let spawned = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            return Err(format!("cannot bind a thread to core {core}"));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        Ok(runtime.block_on(task()))
    });
    spawned.unwrap_or_else(|e| std::thread::spawn(move || Err(format!("spawning a thread: {e}"))))
}

/// Load generator and upstream on core 0, the proxy on core 1.
fn run_own_core(settings: Settings) -> Result<Value> {
    let (verifier, token) = verifier_and_token();
    let (upstream_tx, upstream_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (gateway_tx, gateway_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let client = on_core("load+upstream", 0, move || {
        Box::pin(async move {
            let upstream = serve(Router::new().route(BALANCE_ROUTE, get(balance))).await?;
            upstream_tx.send(upstream).map_err(|e| e.to_string())?;
            let gateway = gateway_rx
                .await
                .map_err(|_| "the gateway did not start".to_owned())?;
            let authorization =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| format!("header: {e}"))?;
            preflight(upstream, gateway, &authorization).await?;
            let nginx = start_nginx(upstream, Placement::OwnCore).await?;
            let loads = loads(&settings, &authorization, upstream, gateway, nginx.as_ref());
            let series = measure(&settings, Placement::OwnCore, &loads).await?;
            Ok::<_, String>(report(&settings, Placement::OwnCore, &series))
        })
    });
    let upstream = upstream_rx
        .recv()
        .map_err(|_| "the upstream did not start".to_owned())?;
    // The gateway's thread serves until the process exits.
    let _gateway = on_core("gateway", 1, move || {
        Box::pin(async move {
            match start_gateway(upstream, verifier).await {
                Ok(addr) => {
                    let _ = gateway_tx.send(addr);
                    std::future::pending::<()>().await;
                }
                Err(e) => eprintln!("gateway: {e}"),
            }
        })
    });
    client
        .join()
        .map_err(|_| "the load generator's thread panicked".to_owned())??
}

fn main() {
    // Command-line arguments (cargo bench passes `--bench`) are ignored.
    let outcome = (|| {
        let settings = || -> Result<Settings> {
            Ok(Settings {
                connections: env_setting("STEPUP_BENCH_CONNECTIONS", 32)?,
                seconds: env_setting("STEPUP_BENCH_SECONDS", 2)?,
                rounds: env_setting("STEPUP_BENCH_ROUNDS", 5)?,
            })
        };
        let shared = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?
            .block_on(run_shared(&settings()?))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let own_core = if cores >= 2 {
            Some(run_own_core(settings()?)?)
        } else {
            eprintln!("one core only: no run with the proxy on a core of its own");
            None
        };
        let s = settings()?;
        // The summary lines of both placements.
        let headlines: Vec<Value> = [&shared, own_core.as_ref().unwrap_or(&Value::Null)]
            .iter()
            .filter_map(|placement| placement["headlines"].as_array())
            .flatten()
            .cloned()
            .collect();
        let figures = json!({
            "bench": "gateway",
            "request": format!("GET {BALANCE_PATH}"),
            "connections": s.connections,
            "warm_up_s": WARM_UP.as_secs(),
            "measured_s_per_round": s.seconds,
            "rounds_each": s.rounds,
            "policy_routes": 100,
            "headlines": headlines,
            "shared_cores": shared,
            "own_core": own_core,
        });
        let path = write_figures("gateway.json", &figures)?;
        eprintln!("figures written to {}", path.display());
        Ok::<_, String>(())
    })();
    if let Err(message) = outcome {
        eprintln!("gateway bench aborted: {message}");
        std::process::exit(1);
    }
}
