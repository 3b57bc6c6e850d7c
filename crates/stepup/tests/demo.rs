//! `stepup demo` end to end in a real browser (headless Chromium through
//! ChromeDriver, Debian's packages; scripts/test installs them): sign in
//! with a password, read the balance, change payment details, step up to
//! TOTP when the API asks, and see the change go through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The URLs `stepup demo` printed.
struct Demo {
    _process: Killed,
    app: String,
    issuer: String,
    api: String,
    /// The same API behind the gateway.
    gateway: String,
}

fn start_demo(dir: &std::path::Path) -> Demo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["demo", "--port", "0", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = Killed(child);
    let mut app = None;
    let mut issuer = None;
    let mut api = None;
    let mut gateway = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(url) = line.trim().strip_prefix("Web app:") {
            app = Some(url.trim().trim_end_matches('/').to_owned());
        }
        if let Some(url) = line.trim().strip_prefix("Authorization server:") {
            issuer = Some(url.trim().to_owned());
        }
        if let Some(url) = line.trim().strip_prefix("Banking API:") {
            api = Some(url.trim().to_owned());
        }
        if let Some(url) = line.trim().strip_prefix("The same API behind the gateway:") {
            gateway = Some(url.trim().to_owned());
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    Demo {
        _process: process,
        app: app.expect("the demo prints the web app's URL"),
        issuer: issuer.expect("the demo prints the issuer"),
        api: api.expect("the demo prints the API's URL"),
        gateway: gateway.expect("the demo prints the gateway's URL"),
    }
}

async fn chrome() -> (Killed, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver; scripts/test does it)");
    let driver = Killed(driver);
    let profile = std::env::temp_dir().join(format!("stepup-demo-chrome-{port}"));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=900,1100", format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    for _ in 0..100 {
        if let Ok(client) = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            return (driver, client);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

async fn wait_for_text(c: &Client, css: &str, text: &str) -> String {
    for _ in 0..100 {
        if let Ok(element) = c.find(Locator::Css(css)).await
            && let Ok(found) = element.text().await
            && found.contains(text)
        {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{text:?} never in {css}; page: {}", c.source().await.unwrap());
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = c.wait().for_element(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

fn artefact(name: &str, png: &[u8]) {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("stepup"))
        .join("stepup-screens");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_read_then_step_up_to_change_payment_details() {
    let dir = std::env::temp_dir().join(format!("stepup-demo-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let demo = start_demo(&dir);
    let (_driver, c) = chrome().await;

    // Signed out: the app sends the browser to the authorization server.
    c.goto(&format!("{}/", demo.app)).await.unwrap();
    click(&c, "#sign-in").await;
    assert!(c.current_url().await.unwrap().as_str().starts_with(&demo.issuer));
    fill(&c, "#username", "demo").await;
    fill(&c, "#password", "demo-password").await;
    click(&c, "button[type=submit]").await;

    // Back at the app: the balance is read with the password-level token.
    let balance = wait_for_text(&c, "#balance", "EUR").await;
    assert!(balance.contains("urn:stepup:acr:pwd"), "{balance}");
    // The app's tokens are bound to its key (DPoP).
    assert!(balance.contains("bound to the app's key by DPoP"), "{balance}");

    // Changing payment details: the API asks for more (scope and mfa);
    // the app says so.
    fill(&c, "#iban", "FR76 3000 6000 0112 3456 7890 189").await;
    click(&c, "#payment-details button[type=submit]").await;
    let reason = wait_for_text(&c, "#step-up-detail", "insufficient").await;
    let panel = c.find(Locator::Css("#step-up")).await.unwrap();
    assert!(
        panel.attr("hidden").await.unwrap().is_none(),
        "the step-up panel is shown"
    );
    artefact("demo-step-up-asked.png", &c.screenshot().await.unwrap());
    click(&c, "#step-up-continue").await;

    // The authorization server asks only for the code: the session is
    // reused. The demo shows the current code on the page.
    let code = c
        .wait()
        .for_element(Locator::Css("#demo-code"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        c.find_all(Locator::Css("#password")).await.unwrap().is_empty(),
        "no password again"
    );
    artefact("demo-step-up-code-page.png", &c.screenshot().await.unwrap());
    fill(&c, "#code", &code).await;
    click(&c, "button[type=submit]").await;
    // payments:write moves money: the user approves it on its page.
    let approval = wait_for_text(&c, "body", "Approve this access?").await;
    assert!(
        approval.contains("Make payments and change payment details"),
        "{approval}"
    );
    click(&c, "#approve").await;

    // Back at the app, the action is repeated once and goes through.
    let done = wait_for_text(&c, "#result", "Payment details changed").await;
    assert!(done.contains("urn:stepup:acr:mfa"), "{done} (asked: {reason})");
    let log = wait_for_text(&c, "#log", "retry after step-up").await;
    assert!(
        log.contains("PUT /accounts/42/payment-details → 200 (retry after step-up)"),
        "{log}"
    );
    artefact("demo-done.png", &c.screenshot().await.unwrap());

    // Reading goes on without asking anything.
    click(&c, "#read-balance").await;
    wait_for_text(&c, "#log", "GET /accounts/42/balance → 200").await;

    // A large transfer is approved for itself (RFC 9396): the API refuses
    // the session's token, the app asks for a token for this transfer.
    // The second factor is recent enough, yet the authorization server
    // shows the transfer in words and waits for the user's approval; the
    // transfer then goes through with its token, once.
    fill(&c, "#amount", "5000").await;
    fill(&c, "#to", "Ada Lovelace").await;
    click(&c, "#transfer button[type=submit]").await;
    let panel = wait_for_text(&c, "#step-up-detail", "approving this transaction only").await;
    click(&c, "#step-up-continue").await;
    let approval = wait_for_text(&c, "body", "Approve this transaction?").await;
    assert!(
        approval.contains("5000.00 EUR") && approval.contains("Ada Lovelace"),
        "{approval}"
    );
    artefact("demo-approval.png", &c.screenshot().await.unwrap());
    click(&c, "#approve").await;
    let done = wait_for_text(&c, "#result", "Sent 5000.00 EUR").await;
    assert!(
        done.contains("Ada Lovelace") && done.contains("urn:stepup:acr:mfa"),
        "{done} ({panel})"
    );
    // (The log restarts with the page the sign-in came back to.)
    wait_for_text(
        &c,
        "#log",
        "POST /accounts/42/transfers/large → 200 (retry after step-up)",
    )
    .await;
    c.close().await.unwrap();
}

/// A third-party client outside Rust, npm's `oauth4webapi`, meets the
/// demo API's RFC 9470 challenge (and its `insufficient_scope` one): it
/// parses `WWW-Authenticate` itself, asks for the level, and retries.
#[test]
fn oauth4webapi_handles_the_step_up_challenge() {
    oauth4webapi_steps_up("guard", |demo| demo.api.clone());
}

/// The same, through the gateway in front of the plain API: the challenge
/// comes from the gateway, the API reads who is calling from its headers.
#[test]
fn oauth4webapi_steps_up_through_the_gateway() {
    oauth4webapi_steps_up("gateway", |demo| demo.gateway.clone());
}

fn oauth4webapi_steps_up(name: &str, api: impl Fn(&Demo) -> String) {
    let js = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/js");
    assert!(
        js.join("node_modules/oauth4webapi").is_dir(),
        "run `npm ci` in interop/js first (scripts/test does it)"
    );
    let dir = std::env::temp_dir().join(format!("stepup-demo-interop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let demo = start_demo(&dir);
    let output = Command::new("node")
        .arg("step-up.mjs")
        .arg(&demo.issuer)
        .arg(api(&demo))
        .current_dir(&js)
        .output()
        .expect("node (scripts/system-deps installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // oauth4webapi read the resource's metadata (RFC 9728) and asked its
    // tokens for it (RFC 8707): each door is a resource of its own.
    assert_eq!(out["resource"]["resource"], api(&demo), "{stdout}");
    assert_eq!(out["resource"]["authorization_servers"][0], demo.issuer.as_str());
    assert_eq!(out["balance"]["body"]["acr"], "urn:stepup:acr:pwd");
    // The RFC 9470 challenge, as oauth4webapi parsed it.
    assert_eq!(out["challenge"]["status"], 401);
    assert_eq!(out["challenge"]["error"], "insufficient_user_authentication");
    assert_eq!(out["challenge"]["acr_values"], "urn:stepup:acr:mfa");
    assert_eq!(out["challenge"]["max_age"], "300");
    assert_eq!(out["statements"]["status"], 200);
    assert_eq!(out["statements"]["body"]["acr"], "urn:stepup:acr:mfa");
    // The scope-based step-up.
    assert_eq!(out["scope_challenge"]["status"], 403);
    assert_eq!(out["scope_challenge"]["scope"], "payments:write");
    assert_eq!(out["payee"]["status"], 201);
    // The user typed the password once and one code: the session was reused.
    assert_eq!(out["asked"], json!(["password", "code"]));
}

/// `stepup policy check --issuer` reads the running server's discovery:
/// the demo policy asks only for levels it offers.
#[test]
fn the_policy_check_reads_the_running_server() {
    let dir = std::env::temp_dir().join(format!("stepup-demo-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let demo = start_demo(&dir);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args([
            "policy",
            "check",
            "policies/bank.toml",
            "--openapi",
            "policies/bank-openapi.json",
            "--issuer",
        ])
        .arg(&demo.issuer)
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("the server ({}): no findings", demo.issuer)),
        "{stdout}"
    );

    // A policy asking for a level the server does not offer.
    let policy = std::fs::read_to_string(root.join("policies/bank.toml"))
        .unwrap()
        .replace("urn:stepup:acr:phr", "urn:stepup:acr:gold");
    let file = dir.join("gold.toml");
    std::fs::write(&file, policy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["policy", "check"])
        .arg(&file)
        .arg("--issuer")
        .arg(&demo.issuer)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    // The rules also accept mfa: unoffered alternatives are warnings.
    assert!(stdout.contains("warning[SU005]"), "{stdout}");
    assert!(stdout.contains("urn:stepup:acr:gold"), "{stdout}");
}

/// The demo's API describes itself (RFC 9728) and its challenges say
/// where: what `stepup call` will check before it follows one.
#[tokio::test]
async fn the_api_describes_itself() {
    let dir = std::env::temp_dir().join(format!("stepup-demo-metadata-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let demo = start_demo(&dir);
    let http = reqwest::Client::new();
    let metadata: serde_json::Value = http
        .get(format!("{}/.well-known/oauth-protected-resource", demo.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], demo.api.trim_end_matches('/'));
    assert_eq!(metadata["authorization_servers"], json!([demo.issuer]));
    assert!(
        metadata["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("payments:write")),
        "{metadata}"
    );
    let refused = http
        .get(format!("{}/accounts/42/balance", demo.api))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("resource_metadata=\""), "{challenge}");
    // The server is named localhost: it holds [::1] as well as 127.0.0.1,
    // so no other local user can answer for it where localhost leads.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let port = url::Url::parse(&demo.issuer).unwrap().port().unwrap();
        let taken = std::net::TcpListener::bind(("::1", port));
        assert!(taken.is_err(), "[::1]:{port} was free for anyone to take");
        let v6 = http
            .get(format!("http://[::1]:{port}/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap();
        assert_eq!(v6.status(), 200);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
