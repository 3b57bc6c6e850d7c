//! `kill -9` of the authorization server under load, then a restart on the
//! same database: nothing committed is lost, nothing consumed comes back.
//! Codes exchanged stay used, rotated refresh tokens stay dead and the last
//! one handed out still works, sessions survive, and a TOTP code used before
//! the crash stays used. On SQLite and on PostgreSQL.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SecureRandom as _;
use serde_json::Value;
use stepup_client::{FormUser, LOOPBACK_REDIRECT};
use stepup_core::totp::TotpSecret;
use url::Url;

mod support;

use support::{Killed, admin, enrol, free_port, server_config};

const MFA: &str = "urn:stepup:acr:mfa";
const CLIENT: &str = "stepup-cli";

/// An instance listening on `listen` for the issuer of port `issuer_port`.
fn instance_config(issuer_port: u16, listen: u16, database_url: &str) -> String {
    server_config(
        &format!("http://127.0.0.1:{issuer_port}"),
        database_url,
        "https://api.example",
        &format!("listen = \"127.0.0.1:{listen}\""),
    )
}

/// A user with a password and TOTP, and the secret.
fn add_user(config: &Path, name: &str, password: &str) -> TotpSecret {
    TotpSecret::from_base32(&enrol(config, name, password)).unwrap()
}

/// The public client of the load: code + PKCE, refresh tokens.
fn add_cli_client(config: &Path) {
    admin(
        config,
        &[
            "client",
            "add",
            CLIENT,
            "--public",
            "--grant",
            "authorization_code",
            "--grant",
            "refresh_token",
            "--redirect-uri",
            "http://127.0.0.1/callback",
            "--scope",
            "openid",
            "--scope",
            "accounts:read",
        ],
        "",
    );
}

/// `stepup COMMAND --config CONFIG`, and the first line it prints (empty
/// if it exited first).
fn spawn(command: &str, config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args([command, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    (child, line)
}

/// `stepup serve` on a free port, which `config(port)` writes into its
/// configuration at `path`. A port is picked free and then bound by the
/// child: another test may take it in between, so another is tried.
fn serve_on_free_port(path: &Path, config: impl Fn(u16) -> String) -> (Killed, u16) {
    for _ in 0..5 {
        let port = free_port();
        std::fs::write(path, config(port)).unwrap();
        let (child, line) = spawn("serve", path);
        let child = Killed(child);
        if line.starts_with("stepup-server listening") {
            return (child, port);
        }
    }
    panic!("stepup serve found no free port in 5 tries");
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).unwrap();
    let verifier = B64.encode(bytes);
    let challenge = B64.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
    Pkce { verifier, challenge }
}

/// An instance of the server, by its address (not its issuer: several
/// instances share one issuer).
struct Server {
    base: String,
    http: reqwest::Client,
}

impl Server {
    fn authorize_url(&self, pkce: &Pkce, extra: &[(&str, &str)]) -> Url {
        let mut url = Url::parse(&format!("{}/authorize", self.base)).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", CLIENT)
            .append_pair("redirect_uri", LOOPBACK_REDIRECT)
            .append_pair("scope", "openid accounts:read")
            .append_pair("state", "s")
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .extend_pairs(extra);
        url
    }

    async fn code(&self, user: &FormUser, extra: &[(&str, &str)]) -> Result<(String, Pkce), String> {
        let pkce = pkce();
        let back = user.sign_in(self.authorize_url(&pkce, extra)).await?;
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| format!("no code: {back}"))?;
        Ok((code, pkce))
    }

    async fn token(&self, form: &[(&str, &str)]) -> Result<(u16, Value), String> {
        let response = self
            .http
            .post(format!("{}/token", self.base))
            .form(form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn exchange(&self, code: &str, verifier: &str) -> Result<(u16, Value), String> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", LOOPBACK_REDIRECT),
            ("client_id", CLIENT),
            ("code_verifier", verifier),
        ])
        .await
    }

    async fn refresh(&self, token: &str) -> Result<(u16, Value), String> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", CLIENT),
        ])
        .await
    }
}

/// What one load task saw before the crash.
#[derive(Default, Debug)]
struct Seen {
    /// Codes exchanged (answered 200).
    exchanged: Vec<(String, String)>,
    /// Refresh tokens used up by a rotation that answered 200.
    rotated_away: Vec<String>,
    /// The last refresh token handed out.
    latest: Option<String>,
    /// A rotation was in flight when the server died (its outcome unknown).
    in_flight: bool,
}

/// Signs in, exchanges codes and rotates refresh tokens until `stop`.
async fn load(server: Arc<Server>, user: Arc<FormUser>, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let Ok((code, pkce)) = server.code(&user, &[]).await else {
            break;
        };
        match server.exchange(&code, &pkce.verifier).await {
            Ok((200, body)) => {
                seen.exchanged.push((code, pkce.verifier));
                seen.latest = body["refresh_token"].as_str().map(str::to_owned);
                seen.rotated_away.clear();
            }
            _ => break,
        }
        for _ in 0..5 {
            let Some(current) = seen.latest.clone() else { break };
            match server.refresh(&current).await {
                Ok((200, body)) => {
                    seen.rotated_away.push(current);
                    seen.latest = body["refresh_token"].as_str().map(str::to_owned);
                }
                Ok(_) => return seen,
                Err(_) => {
                    seen.in_flight = true;
                    return seen;
                }
            }
        }
    }
    seen
}

async fn crash_and_restart(name: &str, database_url: String, dir: PathBuf) {
    let config = dir.join("stepup.toml");
    // Accounts first (the port does not matter to them), then the server on
    // a port it could bind.
    std::fs::write(&config, instance_config(0, 0, &database_url)).unwrap();
    let alice_totp = add_user(&config, "alice", "alice-password-1");
    let bob_totp = add_user(&config, "bob", "bob-password-1");
    add_cli_client(&config);
    let (mut serving, port) = serve_on_free_port(&config, |port| instance_config(port, port, &database_url));
    let server = Arc::new(Server {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    });

    // Before the load: bob uses a TOTP code; alice has a session.
    let bob = FormUser::new("bob", "bob-password-1", bob_totp);
    server.code(&bob, &[("acr_values", MFA)]).await.unwrap();
    let bob_code = bob.last_code().expect("bob typed a code");
    let alice = Arc::new(FormUser::new("alice", "alice-password-1", alice_totp));
    // A family rotated twice before the load and left alone: whatever the
    // crash interrupts, its last token must survive.
    let (code, first) = server.code(&alice, &[]).await.unwrap();
    let (_, body) = server.exchange(&code, &first.verifier).await.unwrap();
    let mut settled = Seen {
        exchanged: vec![(code, first.verifier)],
        latest: body["refresh_token"].as_str().map(str::to_owned),
        ..Seen::default()
    };
    for _ in 0..2 {
        let current = settled.latest.clone().unwrap();
        let (status, body) = server.refresh(&current).await.unwrap();
        assert_eq!(status, 200, "{body}");
        settled.rotated_away.push(current);
        settled.latest = body["refresh_token"].as_str().map(str::to_owned);
    }
    alice.take_sign_ins();

    // Load, and kill -9 in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load(Arc::clone(&server), Arc::clone(&alice), Arc::clone(&stop))))
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    serving.0.kill().unwrap(); // SIGKILL: no shutdown, no flush
    serving.0.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut seen = vec![settled];
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    let exchanged: usize = seen.iter().map(|s| s.exchanged.len()).sum();
    let rotated: usize = seen.iter().map(|s| s.rotated_away.len()).sum();
    assert!(
        exchanged >= 4,
        "{name}: the load did too little before the crash: {seen:?}"
    );
    eprintln!(
        "{name}: killed after {:?}: {exchanged} codes exchanged, {rotated} rotations in the last families",
        started.elapsed()
    );

    // Back on another port, for the same issuer: the killed process's port
    // may have been taken by another test meanwhile (cookies, by host, and
    // tokens, by issuer, do not depend on the port).
    let (_restarted, listen) =
        serve_on_free_port(&config, |listen| instance_config(port, listen, &database_url));
    let server = Server {
        base: format!("http://127.0.0.1:{listen}"),
        http: server.http.clone(),
    };

    // Nothing lost: the last refresh token of a family whose rotation was
    // answered still works; then every token rotated away stays dead.
    let mut checked_latest = 0;
    for s in &seen {
        let Some(latest) = &s.latest else { continue };
        let (status, body) = server.refresh(latest).await.unwrap();
        if s.in_flight {
            // Its rotation was cut: committed (the token is used up) or not.
            assert!(matches!(status, 200 | 400), "{name}: {status} {body}");
        } else {
            assert_eq!(
                status, 200,
                "{name}: the last refresh token handed out was lost: {body}"
            );
            checked_latest += 1;
        }
        if let Some(old) = s.rotated_away.first() {
            let (status, _) = server.refresh(old).await.unwrap();
            assert_eq!(
                status, 400,
                "{name}: a refresh token rotated away before the crash came back"
            );
        }
    }
    assert!(checked_latest >= 1, "{name}: no family to check: {seen:?}");
    // Nothing resurrected: every exchanged code stays used (checked after
    // the refresh tokens: replaying a code revokes what it issued).
    for s in &seen {
        for (code, verifier) in &s.exchanged {
            let (status, body) = server.exchange(code, verifier).await.unwrap();
            assert_eq!(
                status, 400,
                "{name}: a code exchanged before the crash was accepted again: {body}"
            );
        }
    }
    eprintln!("{name}: {checked_latest} families checked for their last token");
    // The session survived: alice is not asked for her password again.
    server.code(&alice, &[]).await.unwrap();
    let sign_ins = alice.take_sign_ins();
    assert!(
        sign_ins.iter().all(|s| s.asked.is_empty()),
        "{name}: alice's session was lost: asked {sign_ins:?}"
    );
    // The TOTP counter survived: bob's code stays used.
    let again = server.authorize_url(&pkce(), &[("acr_values", MFA), ("prompt", "login")]);
    assert!(
        bob.replay_code(&again, &bob_code).await.unwrap(),
        "{name}: a TOTP code used before the crash was accepted again"
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stepup-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_kill_9_under_load() {
    let dir = temp_dir("sqlite");
    let url = format!("sqlite://{}", dir.join("stepup.db").display());
    crash_and_restart("sqlite", url, dir).await;
}

/// A fresh PostgreSQL schema: its URL, and the pool that made it.
async fn postgres_schema(name: &str) -> (String, sqlx::AnyPool, String) {
    let base = std::env::var("STEPUP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("stepup_{name}_{}", std::process::id());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&base)
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    for statement in [
        format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        format!("CREATE SCHEMA {schema}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .unwrap();
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
        pool,
        schema,
    )
}

async fn drop_schema(pool: &sqlx::AnyPool, schema: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_kill_9_under_load() {
    let (url, pool, schema) = postgres_schema("crash").await;
    crash_and_restart("postgres", url, temp_dir("postgres")).await;
    drop_schema(&pool, &schema).await;
}

/// Whether an error is the dead instance's (the connection refused or cut).
fn unreachable(error: &str) -> bool {
    error.contains("error sending request") || error.contains("connect") || error.contains("connection")
}

/// Two instances on one PostgreSQL database; one is killed (`kill -9`)
/// under load, and the clients move to the other, as a balancer would
/// send them: their sessions, and the refresh tokens the dead instance
/// issued, keep working there. What was in flight at the dead instance is
/// started again (a one-time code cannot be retried blindly).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_lose_nothing_when_one_dies() {
    let (url, pool, schema) = postgres_schema("failover").await;
    let dir = temp_dir("failover");
    let config_a = dir.join("a.toml");
    let config_b = dir.join("b.toml");
    std::fs::write(&config_a, instance_config(0, 0, &url)).unwrap();
    let totp = add_user(&config_a, "alice", "alice-password-1");
    add_cli_client(&config_a);
    let (mut a, port_a) = serve_on_free_port(&config_a, |port| instance_config(port, port, &url));
    let (b, port_b) = serve_on_free_port(&config_b, |port| instance_config(port_a, port, &url));
    let instances = Arc::new([
        Server {
            base: format!("http://127.0.0.1:{port_a}"),
            http: reqwest::Client::new(),
        },
        Server {
            base: format!("http://127.0.0.1:{port_b}"),
            http: reqwest::Client::new(),
        },
    ]);
    let alice = Arc::new(FormUser::new("alice", "alice-password-1", totp));
    // The session starts on the instance that will die.
    instances[0].code(&alice, &[]).await.unwrap();
    alice.take_sign_ins();

    let a_dead = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..4usize {
        let (instances, alice, a_dead, stop) = (
            Arc::clone(&instances),
            Arc::clone(&alice),
            Arc::clone(&a_dead),
            Arc::clone(&stop),
        );
        tasks.push(tokio::spawn(async move {
            // Every step goes to the next instance, skipping a dead one.
            let mut turn = task;
            let mut next = |dead: bool| {
                turn += 1;
                if dead { 1 } else { turn % 2 }
            };
            let (mut steps, mut restarts, mut errors, mut after_kill_on_b) = (0, 0, Vec::new(), 0);
            while !stop.load(Ordering::SeqCst) {
                let index = next(a_dead.load(Ordering::SeqCst));
                let (server, on_b) = (&instances[index], index == 1);
                let (code, pkce) = match server.code(&alice, &[]).await {
                    Ok(c) => c,
                    Err(e) if unreachable(&e) && !on_b => {
                        restarts += 1;
                        continue;
                    }
                    Err(e) => {
                        errors.push(format!("sign-in: {e}"));
                        break;
                    }
                };
                let index = next(a_dead.load(Ordering::SeqCst));
                let (server, on_b) = (&instances[index], index == 1);
                let body = match server.exchange(&code, &pkce.verifier).await {
                    Ok((200, body)) => body,
                    Err(e) if unreachable(&e) && !on_b => {
                        restarts += 1;
                        continue;
                    }
                    other => {
                        errors.push(format!("exchange: {other:?}"));
                        break;
                    }
                };
                let mut token = body["refresh_token"].as_str().unwrap_or_default().to_owned();
                for _ in 0..3 {
                    let index = next(a_dead.load(Ordering::SeqCst));
                    let (server, on_b) = (&instances[index], index == 1);
                    match server.refresh(&token).await {
                        Ok((200, body)) => {
                            token = body["refresh_token"].as_str().unwrap_or_default().to_owned()
                        }
                        // Cut at the dead instance: the rotation may have
                        // happened; this family is abandoned.
                        Err(e) if unreachable(&e) && !on_b => {
                            restarts += 1;
                            break;
                        }
                        other => {
                            errors.push(format!("refresh: {other:?}"));
                            break;
                        }
                    }
                    steps += 1;
                    if on_b && a_dead.load(Ordering::SeqCst) {
                        after_kill_on_b += 1;
                    }
                }
            }
            (steps, restarts, errors, after_kill_on_b)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    a_dead.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let (mut steps, mut after, mut all_errors) = (0, 0, Vec::new());
    for t in tasks {
        let (s, _, errors, on_b) = t.await.unwrap();
        steps += s;
        after += on_b;
        all_errors.extend(errors);
    }
    eprintln!("failover: {steps} rotations, {after} on the survivor after the kill");
    assert!(
        all_errors.is_empty(),
        "failures other than the dead instance's: {all_errors:?}"
    );
    assert!(steps > 8, "too little load: {steps}");
    assert!(
        after > 4,
        "the survivor served too little after the kill: {after}"
    );
    // The session made on the dead instance still signs alice in, on the
    // survivor, without her password.
    instances[1].code(&alice, &[]).await.unwrap();
    assert!(
        alice.take_sign_ins().iter().all(|s| s.asked.is_empty()),
        "the session was lost with its instance"
    );
    drop(b);
    drop_schema(&pool, &schema).await;
}

/// `stepup gateway`, waited for until it listens and has its issuer's keys
/// (which it fetches through itself: the issuer is behind it).
async fn gateway(config: &Path, url: &str) -> Child {
    let (mut child, line) = spawn("gateway", config);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ready = false;
    while line.starts_with("stepup-gateway listening") && !ready && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = reqwest::get(format!("{url}/-/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200);
    }
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the gateway did not start or never got its keys: {line:?}");
    }
    child
}

/// An API that answers with the subject the gateway vouches for.
async fn api() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let subject = headers
            .get("x-stepup-subject")
            .map(|v| v.to_str().unwrap().to_owned());
        axum::Json(serde_json::json!({ "subject": subject }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// What one task of the gateway failover saw.
#[derive(Default, Debug)]
struct Through {
    rotations: usize,
    api_calls: usize,
    after_kill: usize,
    /// Requests the dying instance had taken (502: their outcome unknown,
    /// so the flow starts again).
    cut: usize,
    errors: Vec<String>,
}

/// Two instances on one PostgreSQL database behind `stepup gateway`, which
/// also guards an API with the tokens they issue (its issuer is itself).
/// One instance is killed under load: clients only know the gateway's
/// address and carry on; a request the dying instance had taken may get
/// 502 (a one-time code is not sent twice), nothing else fails, and the
/// session and refresh tokens made on the dead instance keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_the_gateway_lose_nothing_when_one_dies() {
    let (url, pool, schema) = postgres_schema("gatewayed").await;
    let dir = temp_dir("gatewayed");
    let api_port = api().await;
    let port_gw = free_port();
    let issuer = format!("http://127.0.0.1:{port_gw}");
    let config_a = dir.join("a.toml");
    let config_b = dir.join("b.toml");
    std::fs::write(&config_a, instance_config(port_gw, 0, &url)).unwrap();
    let totp = add_user(&config_a, "alice", "alice-password-1");
    add_cli_client(&config_a);
    // Killed on drop: a failed assertion leaves no process behind.
    let (mut a, port_a) = serve_on_free_port(&config_a, |port| instance_config(port_gw, port, &url));
    let (b, port_b) = serve_on_free_port(&config_b, |port| instance_config(port_gw, port, &url));
    std::fs::write(
        dir.join("policy.toml"),
        r#"
levels = [{ name = "pwd", acr = "urn:stepup:acr:pwd" }, { name = "mfa", acr = "urn:stepup:acr:mfa" }]
[default]
acr = ["pwd"]
[[route]]
name = "balance"
methods = ["GET"]
path = "/balance"
scope = ["accounts:read"]
"#,
    )
    .unwrap();
    // The issuer's host goes to its instances; any other to the API.
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            r#"
listen = "127.0.0.1:{port_gw}"
policy = "policy.toml"
issuer = "{issuer}"
audience = "https://api.example"

[[upstream]]
host = "127.0.0.1"
prefix = "/"
urls = ["http://127.0.0.1:{port_a}", "http://127.0.0.1:{port_b}"]
public = true

[[upstream]]
prefix = "/"
url = "http://127.0.0.1:{api_port}"
"#
        ),
    )
    .unwrap();
    let gw = Killed(gateway(&dir.join("gateway.toml"), &issuer).await);
    let front = Arc::new(Server {
        base: issuer.clone(),
        http: reqwest::Client::new(),
    });
    let api_url = format!("http://localhost:{port_gw}/balance");
    let alice = Arc::new(FormUser::new("alice", "alice-password-1", totp));
    front.code(&alice, &[]).await.unwrap();
    alice.take_sign_ins();

    let a_dead = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (front, alice, a_dead, stop, api_url) = (
            Arc::clone(&front),
            Arc::clone(&alice),
            Arc::clone(&a_dead),
            Arc::clone(&stop),
            api_url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut seen = Through::default();
            'flows: while !stop.load(Ordering::SeqCst) && seen.errors.is_empty() {
                let (code, pkce) = match front.code(&alice, &[]).await {
                    Ok(c) => c,
                    Err(e) if e.contains("502") => {
                        seen.cut += 1;
                        continue;
                    }
                    Err(e) => {
                        seen.errors.push(format!("sign-in: {e}"));
                        break;
                    }
                };
                let mut tokens = match front.exchange(&code, &pkce.verifier).await {
                    Ok((200, body)) => body,
                    Ok((502, _)) => {
                        seen.cut += 1;
                        continue;
                    }
                    other => {
                        seen.errors.push(format!("exchange: {other:?}"));
                        break;
                    }
                };
                for _ in 0..3 {
                    let access = tokens["access_token"].as_str().unwrap_or_default().to_owned();
                    let call = front.http.get(&api_url).bearer_auth(&access).send().await;
                    match call {
                        Ok(r) if r.status() == 200 => {
                            let body: Value = r.json().await.unwrap_or_default();
                            if body["subject"].as_str().is_none() {
                                seen.errors.push(format!("api without a subject: {body}"));
                                break 'flows;
                            }
                            seen.api_calls += 1;
                        }
                        other => {
                            seen.errors.push(format!("api: {other:?}"));
                            break 'flows;
                        }
                    }
                    let refresh = tokens["refresh_token"].as_str().unwrap_or_default().to_owned();
                    tokens = match front.refresh(&refresh).await {
                        Ok((200, body)) => body,
                        // The rotation may have happened: the family is left.
                        Ok((502, _)) => {
                            seen.cut += 1;
                            continue 'flows;
                        }
                        other => {
                            seen.errors.push(format!("refresh: {other:?}"));
                            break 'flows;
                        }
                    };
                    seen.rotations += 1;
                    if a_dead.load(Ordering::SeqCst) {
                        seen.after_kill += 1;
                    }
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.0.kill().unwrap(); // SIGKILL
    a.0.wait().unwrap();
    a_dead.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = Through::default();
    for t in tasks {
        let seen = t.await.unwrap();
        total.rotations += seen.rotations;
        total.api_calls += seen.api_calls;
        total.after_kill += seen.after_kill;
        total.cut += seen.cut;
        total.errors.extend(seen.errors);
    }
    eprintln!("through the gateway: {total:?}");
    assert!(
        total.errors.is_empty(),
        "failures other than a cut request: {:?}",
        total.errors
    );
    assert!(total.rotations > 8, "too little load: {total:?}");
    assert!(
        total.after_kill > 4,
        "too little served after the kill: {total:?}"
    );
    // At most the requests in flight at the dead instance, and one per
    // connection it left open in the gateway's pool.
    assert!(
        total.cut <= 8,
        "too many requests lost with the instance: {total:?}"
    );
    // The session made before the kill signs alice in without her password.
    front.code(&alice, &[]).await.unwrap();
    assert!(
        alice.take_sign_ins().iter().all(|s| s.asked.is_empty()),
        "the session was lost with its instance"
    );
    let metrics = reqwest::get(format!("{issuer}/-/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    let upstream_errors = metric("stepup_gateway_requests_total{outcome=\"upstream_error\"}");
    let retries = metric("stepup_gateway_upstream_retries_total");
    eprintln!("gateway: {upstream_errors} upstream errors, {retries} requests sent on");
    // Every 502 the clients saw is one the gateway counted, and the dead
    // instance was noticed (a request cut, or one sent on).
    assert_eq!(upstream_errors, total.cut as u64);
    assert!(upstream_errors + retries > 0, "{metrics}");
    drop((gw, b));
    drop_schema(&pool, &schema).await;
}
