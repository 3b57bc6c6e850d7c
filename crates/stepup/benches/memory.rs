//! Resident memory of the processes a deployment runs: `stepup serve` (the
//! authorization server, SQLite) and `stepup gateway` (the guard as a
//! reverse proxy), idle and under load.
//!
//! Both are the release binary, started as their own processes, and read
//! from `/proc/PID/status`: `VmRSS` idle (2 s after start, the gateway with
//! its issuer's keys loaded), `VmHWM` (the peak) after the load, and
//! `VmRSS` again 2 s after it. The load, from this process: `STEPUP_BENCH_CONNECTIONS`
//! (default 32) keep-alive connections through the gateway with a repeat
//! token to an in-process upstream, and 16 concurrent client-credentials
//! token requests to the server, for `STEPUP_BENCH_SECONDS` (default 5).
//!
//! Run with `cargo bench -p stepup --bench memory`; the figures go to
//! `$CARGO_TARGET_DIR/stepup-bench/memory.json`. Linux only (`/proc`).

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

// `stepup admin` and free ports, as the tests run them.
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use http::{HeaderName, HeaderValue, StatusCode, Uri};
use serde_json::{Value, json};
use stepup_benchkit::headline::{Headline, Target, headlines_json};
use stepup_benchkit::{Load, Protocol, Result, env_setting, round, serve, write_figures};
use support::{Killed, admin, free_port};

/// A child process, killed when dropped.
struct Process {
    name: &'static str,
    child: Killed,
}

impl Process {
    /// A `/proc/PID/status` member, in MiB.
    fn status_mib(&self, member: &str) -> Result<f64> {
        let path = format!("/proc/{}/status", self.child.0.id());
        let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(member))
            .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no {member} in {path}"))?;
        Ok(kib / 1024.0)
    }
}

/// Starts `stepup ARGS` and waits for the line that says it listens.
fn start(name: &'static str, args: &[&str], config: &Path, ready_line: &str) -> Result<Process> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let process = Process {
        name,
        child: Killed(child),
    };
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("{name}: {e}"))?;
    if !line.starts_with(ready_line) {
        return Err(format!("{name} did not start: {line:?}"));
    }
    Ok(process)
}

/// A client-credentials token of `svc`.
async fn token(http: &reqwest::Client, issuer: &str, secret: &str) -> Result<String> {
    let response = http
        .post(format!("{issuer}/token"))
        .basic_auth("svc", Some(secret))
        .form(&[("grant_type", "client_credentials"), ("scope", "accounts:read")])
        .send()
        .await
        .map_err(|e| format!("token request: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("token response: {e}"))?;
    body["access_token"]
        .as_str()
        .filter(|_| status == StatusCode::OK)
        .map(str::to_owned)
        .ok_or_else(|| format!("token request answered {status}: {body}"))
}

/// Client-credentials requests back to back on `tasks` tasks until `end`;
/// how many were answered 200.
async fn token_load(issuer: &str, secret: &str, tasks: usize, end: Instant) -> Result<u64> {
    let http = reqwest::Client::new();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (http, issuer, secret) = (http.clone(), issuer.to_owned(), secret.to_owned());
        set.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                token(&http, &issuer, &secret).await?;
                n += 1;
            }
            Ok::<u64, String>(n)
        });
    }
    let mut total = 0;
    while let Some(joined) = set.join_next().await {
        total += joined.map_err(|e| e.to_string())??;
    }
    Ok(total)
}

async fn run() -> Result<()> {
    let connections: usize = env_setting("STEPUP_BENCH_CONNECTIONS", 32)?;
    let seconds: u64 = env_setting("STEPUP_BENCH_SECONDS", 5)?;
    let dir = std::env::temp_dir().join(format!("stepup-bench-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (server_port, gateway_port) = (free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{server_port}");
    let server_config = dir.join("server.toml");
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        &server_config,
        support::server_config(
            &issuer,
            &format!("sqlite://{}", dir.join("stepup.db").display()),
            "https://api.example",
            &format!("listen = \"127.0.0.1:{server_port}\""),
        ),
    )?;
    let added = admin(
        &server_config,
        &[
            "client",
            "add",
            "svc",
            "--grant",
            "client_credentials",
            "--scope",
            "accounts:read",
        ],
        "",
    );
    let secret = added
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .map(|s| s.trim().to_owned())
        .ok_or("stepup admin client add printed no client_secret")?;

    eprintln!("starting stepup serve and stepup gateway (release binaries)...");
    let server = start("server", &["serve"], &server_config, "stepup-server listening")?;
    let upstream =
        serve(Router::new().route("/accounts/{id}/balance", get(|| async { "{\"balance\":1}" }))).await?;
    write(
        &dir.join("policy.toml"),
        "levels = [{ name = \"pwd\", acr = \"urn:stepup:acr:pwd\" }]\n[default]\nacr = []\n\
         [[route]]\nmethods = [\"GET\"]\npath = \"/accounts/{id}/balance\"\nscope = [\"accounts:read\"]\n"
            .to_owned(),
    )?;
    let gateway_config = dir.join("gateway.toml");
    write(
        &gateway_config,
        format!(
            "listen = \"127.0.0.1:{gateway_port}\"\npolicy = \"policy.toml\"\nissuer = \"{issuer}\"\n\
             audience = \"https://api.example\"\n[[upstream]]\nprefix = \"/\"\nurl = \"http://{upstream}\"\n"
        ),
    )?;
    let gateway = start(
        "gateway",
        &["gateway"],
        &gateway_config,
        "stepup-gateway listening",
    )?;
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{gateway_port}/-/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK);
        if ready {
            break;
        }
        if Instant::now() > deadline {
            return Err("the gateway never loaded its issuer's keys".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let access_token = token(&http, &issuer, &secret).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = [
        (&server, server.status_mib("VmRSS")?),
        (&gateway, gateway.status_mib("VmRSS")?),
    ];
    for (p, mib) in &idle {
        eprintln!("{} idle: {mib:.1} MiB", p.name);
    }

    eprintln!("load: {connections} connections through the gateway and 16 token requesters, {seconds} s...");
    let load = Load {
        target: "gateway".into(),
        addr: format!("127.0.0.1:{gateway_port}")
            .parse()
            .map_err(|e| format!("{e}"))?,
        protocol: Protocol::Http1,
        path: Uri::from_static("/accounts/42/balance"),
        headers: vec![(
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(&format!("Bearer {access_token}")).map_err(|e| e.to_string())?,
        )],
        expect: StatusCode::OK,
        connections,
        warm_up: Duration::from_millis(500),
        measured: Duration::from_secs(seconds),
    };
    let end = Instant::now() + Duration::from_millis(500) + Duration::from_secs(seconds);
    let (calls, tokens) = tokio::join!(round(&load), token_load(&issuer, &secret, 16, end));
    let (calls, tokens) = (calls?.len(), tokens?);
    eprintln!("  {calls} calls through the gateway, {tokens} tokens issued");
    let peak = [server.status_mib("VmHWM")?, gateway.status_mib("VmHWM")?];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = [server.status_mib("VmRSS")?, gateway.status_mib("VmRSS")?];

    println!();
    println!("| process | idle | peak under load | 2 s after the load |");
    println!("|---|---|---|---|");
    for (i, (p, mib)) in idle.iter().enumerate() {
        println!(
            "| stepup {} | {mib:.1} MiB | {:.1} MiB | {:.1} MiB |",
            p.name, peak[i], after[i]
        );
    }
    let headlines = [
        Headline::single("memory: gateway resident, idle", idle[1].1, "MiB").target(Target::AtMost(20.0)),
        Headline::single("memory: gateway resident, peak under load", peak[1], "MiB"),
        Headline::single("memory: server resident, idle", idle[0].1, "MiB"),
        Headline::single("memory: server resident, peak under load", peak[0], "MiB"),
    ];
    let figures = json!({
        "bench": "memory",
        "load": {
            "gateway_connections": connections,
            "token_requesters": 16,
            "seconds": seconds,
            "gateway_calls": calls,
            "tokens_issued": tokens,
        },
        "server_mib": { "idle": idle[0].1, "peak": peak[0], "after": after[0] },
        "gateway_mib": { "idle": idle[1].1, "peak": peak[1], "after": after[1] },
        "headlines": headlines_json(&headlines),
    });
    let path = write_figures("memory.json", &figures)?;
    eprintln!("figures written to {}", path.display());
    drop((server, gateway));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    // Command-line arguments (cargo bench passes `--bench`) are ignored.
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
        .and_then(|runtime| runtime.block_on(run()));
    if let Err(message) = outcome {
        eprintln!("memory bench aborted: {message}");
        std::process::exit(1);
    }
}
