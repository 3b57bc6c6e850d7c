//! The login and step-up pages in a real browser: headless Chromium driven
//! through ChromeDriver (Debian's packages; `scripts/test` installs them).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
// ChromeDriver listens on loopback: plain HTTP, no TLS stack needed.
use hyper_util::client::legacy::connect::HttpConnector;
use ring::rand::SystemRandom;
use serde_json::json;
use stepup_core::pkce::CodeChallenge;
use stepup_core::{Scope, UnixTime};
use stepup_server::client::{AuthMethod, Registration, register};
use stepup_server::users;

use crate::fixtures::*;
use crate::flow::{PASSWORD, VERIFIER, jwt_claims};

/// ChromeDriver and a headless Chromium session; both end on drop.
struct Chrome {
    driver: Child,
    client: Option<Client>,
    profile: std::path::PathBuf,
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

async fn chrome() -> Chrome {
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
    let profile = std::env::temp_dir().join(format!("stepup-chrome-{port}"));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-quic", format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut chrome = Chrome {
        driver,
        client: None,
        profile,
    };
    for _ in 0..100 {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => {
                chrome.client = Some(client);
                return chrome;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("chromedriver did not start on port {port}");
}

/// A client application that only shows it was called back.
async fn app() -> String {
    let router = axum::Router::new().route("/cb", axum::routing::get(|| async { "signed in" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

fn authorize_url(s: &TestServer, redirect: &str, extra: &[(&str, &str)]) -> String {
    let challenge = CodeChallenge::from_verifier(VERIFIER).unwrap();
    let mut url = url::Url::parse(&s.url("/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "browser-app")
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid")
        .append_pair("state", "b-state")
        .append_pair("code_challenge", challenge.as_str())
        .append_pair("code_challenge_method", "S256")
        .extend_pairs(extra);
    url.to_string()
}

/// Waits until the browser is back at the app and returns the code.
async fn code_at_callback(client: &Client, redirect: &str) -> String {
    for _ in 0..100 {
        let url = client.current_url().await.unwrap();
        if url.as_str().starts_with(redirect) {
            return url
                .query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
                .expect("a code");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not redirected back; page: {}", client.source().await.unwrap());
}

/// Registers the public client `browser-app` with `redirect`, and `alice`
/// with TOTP.
async fn setup_app(s: &TestServer, redirect: &str) -> stepup_core::totp::TotpSecret {
    let rng = SystemRandom::new();
    register(
        &s.state.store,
        Registration {
            client_id: "browser-app".into(),
            auth_method: AuthMethod::None,
            redirect_uris: vec![redirect.to_owned()],
            grant_types: vec!["authorization_code".into()],
            scopes: vec![Scope::new("profile").unwrap()],
            require_par: false,
            require_dpop: false,
            jwks: None,
            audiences: Vec::new(),
        },
        NOW,
        &rng,
    )
    .await
    .unwrap();
    users::add_user(&s.state.store, "alice", PASSWORD, NOW, &rng)
        .await
        .unwrap();
    users::enroll_totp(&s.state.store, "alice", &rng).await.unwrap()
}

async fn exchange_at(s: &TestServer, code: &str, redirect: &str) -> serde_json::Value {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect),
        ("code_verifier", VERIFIER),
        ("client_id", "browser-app"),
    ];
    let (status, _, body) = s.post("/token", None, &form).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn login_then_step_up_in_a_real_browser() {
    let s = start(Backend::Sqlite).await;
    let redirect = app().await;
    let rng = SystemRandom::new();
    register(
        &s.state.store,
        Registration {
            client_id: "browser-app".into(),
            auth_method: AuthMethod::None,
            redirect_uris: vec![redirect.clone()],
            grant_types: vec!["authorization_code".into()],
            scopes: vec![Scope::new("profile").unwrap()],
            require_par: false,
            require_dpop: false,
            jwks: None,
            audiences: Vec::new(),
        },
        NOW,
        &rng,
    )
    .await
    .unwrap();
    users::add_user(&s.state.store, "alice", PASSWORD, NOW, &rng)
        .await
        .unwrap();
    let secret = users::enroll_totp(&s.state.store, "alice", &rng).await.unwrap();

    let mut chrome = chrome().await;
    let c = chrome.client.take().unwrap();

    // Password login: fill the form, submit, land back at the app with a code.
    c.goto(&authorize_url(&s, &redirect, &[])).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let tokens = exchange_at(&s, &code_at_callback(&c, &redirect).await, &redirect).await;
    assert_eq!(
        jwt_claims(tokens["access_token"].as_str().unwrap())["acr"],
        "urn:stepup:acr:pwd"
    );

    // Step-up: the browser's session is reused, only the code is asked.
    c.goto(&authorize_url(
        &s,
        &redirect,
        &[("acr_values", "urn:stepup:acr:mfa")],
    ))
    .await
    .unwrap();
    let code_input = c.wait().for_element(Locator::Css("#code")).await.unwrap();
    assert!(
        c.find_all(Locator::Css("#password")).await.unwrap().is_empty(),
        "no password asked again"
    );
    let page = c.source().await.unwrap();
    assert!(page.contains("stronger sign-in"), "{page}");
    if let Ok(png) = c.screenshot().await {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("stepup"))
            .join("stepup-screens");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("step-up-code-page.png"), png);
    }
    code_input
        .send_keys(&secret.code_at(UnixTime(NOW)))
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let tokens = exchange_at(&s, &code_at_callback(&c, &redirect).await, &redirect).await;
    let at = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(at["acr"], "urn:stepup:acr:mfa");
    assert_eq!(at["amr"], json!(["pwd", "otp"]));
    c.close().await.unwrap();
}

/// The WebDriver WebAuthn extension's "Add Virtual Authenticator": a
/// platform authenticator that stores discoverable credentials, verifies
/// the user and answers without a touch.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/webauthn/authenticator",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserVerified": true,
            "automaticPresenceSimulation": true,
        });
        (http::Method::POST, Some(body.to_string()))
    }
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

async fn wait_for_text(c: &Client, text: &str) -> String {
    for _ in 0..100 {
        let page = c.source().await.unwrap();
        if page.contains(text) {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{text:?} never shown; page: {}", c.source().await.unwrap());
}

#[tokio::test]
async fn passkey_registration_and_passwordless_sign_in_in_a_real_browser() {
    // Reached as localhost: WebAuthn needs a domain (and a secure context,
    // which localhost is).
    let s = start_by_name(Backend::Sqlite).await;
    let redirect = app().await;
    let secret = setup_app(&s, &redirect).await;
    let at_issuer = |url: String| url.replacen(&s.base, &s.issuer, 1);

    let mut chrome = chrome().await;
    let c = chrome.client.take().unwrap();
    c.issue_cmd(AddVirtualAuthenticator).await.unwrap();

    // The account page: signing in asks for the password and the code (the
    // strongest level Alice can reach), then offers to add a passkey.
    c.goto(&format!("{}/account/passkeys", s.issuer)).await.unwrap();
    c.wait()
        .for_element(Locator::Css("#username"))
        .await
        .unwrap()
        .send_keys("alice")
        .await
        .unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&c, "button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#code"))
        .await
        .unwrap()
        .send_keys(&secret.code_at(UnixTime(NOW)))
        .await
        .unwrap();
    click(&c, "button[type=submit]").await;
    c.wait()
        .for_element(Locator::Css("#name"))
        .await
        .unwrap()
        // Enter in the name field (WebDriver's Enter key) runs the ceremony,
        // as the button would.
        .send_keys("Virtual key\u{E007}")
        .await
        .unwrap();
    let page = wait_for_text(&c, "Passkey added").await;
    assert!(page.contains("Virtual key"), "{page}");

    // A new visit without any session: the passkey-only level is asked,
    // the discoverable passkey names the user, no password is typed.
    c.delete_all_cookies().await.unwrap();
    s.clock.0.fetch_add(60, std::sync::atomic::Ordering::SeqCst);
    c.goto(&at_issuer(authorize_url(
        &s,
        &redirect,
        &[("acr_values", "urn:stepup:acr:phr")],
    )))
    .await
    .unwrap();
    wait_for_text(&c, "Use your passkey").await;
    if let Ok(png) = c.screenshot().await {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("stepup"))
            .join("stepup-screens");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("passkey-page.png"), png);
    }
    click(&c, "#passkey-button").await;
    let tokens = exchange_at(&s, &code_at_callback(&c, &redirect).await, &redirect).await;
    let at = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(at["acr"], "urn:stepup:acr:phr");
    assert_eq!(at["amr"], json!(["hwk"]));
    assert_eq!(at["auth_time"], NOW + 60);

    // Asked for mfa in another fresh visit, the password page offers the
    // passkey instead; it alone reaches mfa. (Cookies are deleted for the
    // page's site: the server's, not the app's.)
    c.goto(&format!("{}/jwks", s.issuer)).await.unwrap();
    c.delete_all_cookies().await.unwrap();
    c.goto(&at_issuer(authorize_url(
        &s,
        &redirect,
        &[("acr_values", "urn:stepup:acr:mfa")],
    )))
    .await
    .unwrap();
    click(&c, "#use-passkey").await;
    click(&c, "#passkey-button").await;
    let tokens = exchange_at(&s, &code_at_callback(&c, &redirect).await, &redirect).await;
    let at = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(at["acr"], "urn:stepup:acr:mfa");
    assert_eq!(at["amr"], json!(["hwk"]));
    c.close().await.unwrap();
}
