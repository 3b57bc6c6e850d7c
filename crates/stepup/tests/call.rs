//! `stepup call` as a user runs it: against the authorization server and
//! an API behind the guard (both in this process, over loopback), with the
//! sign-in pages filled by a scripted user where a person would use the
//! browser.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use axum::routing::{get, post};
use ring::rand::SystemRandom;
use stepup_core::totp::TotpSecret;
use stepup_core::{Clock, Policy, Scope, SystemClock};
use stepup_guard::{Guard, HttpFetcher, JwtVerifier, TokenVerifier, VerifiedClaims};
use stepup_server::client::{AuthMethod, Registration, register};
use stepup_server::{Config, ServerState, Store, router, users};

mod support;

use support::server_config;

const PASSWORD: &str = "correct horse battery";

const POLICY: &str = r#"
levels = [
  { name = "pwd", acr = "urn:stepup:acr:pwd" },
  { name = "mfa", acr = "urn:stepup:acr:mfa" },
]
[default]
acr = ["pwd"]

[[route]]
name = "add payee"
methods = ["POST"]
path = "/accounts/{id}/payees"
acr = ["mfa"]
max_age = 300
"#;

struct World {
    issuer: String,
    api: String,
    dir: std::path::PathBuf,
    totp: TotpSecret,
}

async fn world(name: &str) -> World {
    let dir = std::env::temp_dir().join(format!("stepup-call-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let database_url = format!("sqlite://{}/stepup.db", dir.display());
    // The API's identifier is its URL (RFC 8707 resource, RFC 9728).
    let api_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", api_listener.local_addr().unwrap());
    let config = server_config(&issuer, &database_url, &api_url, "");
    let config = Config::from_toml("test.toml", &config).unwrap();
    let store = Store::connect(&config.database_url).await.unwrap();
    let state = ServerState::new(config, store, Arc::new(SystemClock))
        .await
        .unwrap();
    let rng = SystemRandom::new();
    let now = SystemClock.now().seconds();
    register(
        &state.store,
        Registration {
            client_id: "stepup-cli".into(),
            auth_method: AuthMethod::None,
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scopes: vec![Scope::new("accounts:read").unwrap()],
            require_par: false,
            require_dpop: false,
            jwks: None,
            audiences: Vec::new(),
        },
        now,
        &rng,
    )
    .await
    .unwrap();
    users::add_user(&state.store, "alice", PASSWORD, now, &rng)
        .await
        .unwrap();
    let totp = users::enroll_totp(&state.store, "alice", &rng).await.unwrap();
    let app = router(state);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let verifier = JwtVerifier::from_issuer(&issuer, &api_url, HttpFetcher::new().unwrap())
        .await
        .unwrap();
    let policy = Policy::from_toml("policy.toml", POLICY).unwrap();
    let metadata = stepup_core::resource_metadata::ResourceMetadata {
        resource: api_url.clone(),
        authorization_servers: vec![issuer.clone()],
        scopes_supported: policy.scopes(),
        bearer_methods_supported: vec!["header".into()],
        dpop_signing_alg_values_supported: vec![],
        authorization_details_types_supported: vec![],
        resource_name: Some("Test bank".into()),
    };
    let guard = Guard::builder(Arc::new(policy), TokenVerifier::Jwt(Arc::new(verifier)))
        .resource_metadata(&metadata)
        .unwrap()
        .build();
    async fn echo(claims: VerifiedClaims, body: String) -> String {
        format!("{} {body}", claims.0.acr.as_deref().unwrap_or("-"))
    }
    let api = axum::Router::new()
        .route("/accounts/{id}/balance", get(echo))
        .route("/accounts/{id}/payees", post(echo))
        .layer(guard.layer());
    tokio::spawn(async move { axum::serve(api_listener, api).await.unwrap() });
    World {
        issuer,
        api: api_url,
        dir,
        totp,
    }
}

/// What `stepup call` printed and how it ended.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    body[start..start + body[start..].find('"').unwrap()].to_owned()
}

/// Signs in at `url` as alice (password, and the code when asked) and
/// follows the final redirect to the CLI's loopback listener.
async fn sign_in(w: &World, url: &str) {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut response = http.get(url).send().await.unwrap();
    for _ in 0..4 {
        if let Some(location) = response.headers().get("location") {
            let done = reqwest::get(location.to_str().unwrap()).await.unwrap();
            assert_eq!(done.status(), 200);
            return;
        }
        let body = response.text().await.unwrap();
        if !body.contains("name=\"request\"") {
            return;
        }
        let (path, field, value) = if body.contains("name=\"password\"") {
            ("/login/password", "password", PASSWORD.to_owned())
        } else {
            ("/login/otp", "code", w.totp.code_at(SystemClock.now()))
        };
        let form = [
            ("request", hidden(&body, "request")),
            ("csrf", hidden(&body, "csrf")),
            ("username", "alice".to_owned()),
            (field, value),
        ];
        response = http
            .post(format!("{}{path}", w.issuer))
            .form(&form)
            .send()
            .await
            .unwrap();
    }
    panic!("the sign-in did not end");
}

/// Runs `stepup call ARGS`; whenever it prints a sign-in address, signs in
/// there. Returns the outcome and how many sign-ins it asked for.
async fn call(w: &World, args: &[&str]) -> (Run, usize) {
    call_with(w, &w.issuer, "30", args).await
}

/// As [`call`], with another issuer and waiting at most `timeout` seconds
/// for a sign-in.
async fn call_with(w: &World, issuer: &str, timeout: &str, args: &[&str]) -> (Run, usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .arg("call")
        .args([
            "--no-browser",
            "--timeout",
            timeout,
            "--issuer",
            issuer,
            "--scope",
            "accounts:read",
        ])
        .arg("--tokens")
        .arg(w.dir.join("tokens/tokens.json"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut sign_ins = 0;
    while let Some(line) = lines.recv().await {
        seen.push_str(&line);
        seen.push('\n');
        let trimmed = line.trim();
        if trimmed.starts_with(&format!("{}/authorize?", w.issuer)) {
            sign_ins += 1;
            sign_in(w, trimmed).await;
        }
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    (
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: seen,
        },
        sign_ins,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_signs_in_steps_up_and_keeps_tokens() {
    let w = world("flow").await;
    let balance = format!("{}/accounts/42/balance", w.api);
    let payees = format!("{}/accounts/42/payees", w.api);

    let (run, sign_ins) = call(&w, &[&balance]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "urn:stepup:acr:pwd \n");
    assert_eq!(sign_ins, 1);
    assert!(run.stderr.contains("HTTP 200 OK"), "{}", run.stderr);

    // Tokens are kept for the next run, readable by the user only.
    let file = w.dir.join("tokens/tokens.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let (run, sign_ins) = call(&w, &[&balance]).await;
    assert_eq!((run.code, sign_ins), (0, 0), "{}", run.stderr);

    // Adding a payee: the API asks for mfa; the CLI says why, the user
    // signs in again (only the code: the session is reused), the call is
    // retried with its body.
    let (run, sign_ins) = call(&w, &[&payees, "--data", r#"{"iban":"DE89"}"#]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sign_ins, 1);
    assert!(
        run.stderr.contains(
            &format!("{} (Test bank) asks for a stronger sign-in (level urn:stepup:acr:mfa, a sign-in at most 300 s old) for POST ", w.api)
        ),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "urn:stepup:acr:mfa {\"iban\":\"DE89\"}\n");

    // The elevated token is kept for that route; reads keep the base one.
    let (run, sign_ins) = call(&w, &[&payees, "--data", "{}"]).await;
    assert_eq!(
        (run.code, sign_ins, run.stdout.as_str()),
        (0, 0, "urn:stepup:acr:mfa {}\n")
    );
    let (run, _) = call(&w, &[&balance]).await;
    assert_eq!(run.stdout, "urn:stepup:acr:pwd \n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_reports_bad_arguments_and_refusals() {
    let w = world("errors").await;
    let (run, _) = call(
        &w,
        &[&format!("{}/accounts/1/balance", w.api), "--data", "not json"],
    )
    .await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--data must be JSON"), "{}", run.stderr);

    // An unregistered client: the request is pushed (PAR) and refused
    // there, before any browser opens.
    let url = format!("{}/accounts/1/balance", w.api);
    let (run, sign_ins) = call_with(&w, &w.issuer, "2", &["--client-id", "nobody", &url]).await;
    assert_eq!((run.code, sign_ins), (2, 0), "{}", run.stderr);
    assert!(
        run.stderr.contains("authorization refused: invalid_client"),
        "{}",
        run.stderr
    );

    // Issue 17 §1: plain http off loopback gets no token, nor anything.
    let (run, sign_ins) = call(&w, &["http://evil.example/x"]).await;
    assert_eq!((run.code, sign_ins), (2, 0), "{}", run.stderr);
    assert!(run.stderr.contains("https is required"), "{}", run.stderr);

    // An issuer that is not there.
    let (run, _) = call_with(&w, "http://127.0.0.1:9", "2", &[&url]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("reading the metadata of http://127.0.0.1:9"),
        "{}",
        run.stderr
    );
}
