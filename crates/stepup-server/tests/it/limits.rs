//! What anyone on the internet may send: parameters within their bounds
//! (400 `invalid_request` beyond, nothing stored or echoed), bodies within
//! their caps (413), and rate limits per client address and per account
//! (429 with `Retry-After`), shared through Redis when configured.

use std::sync::atomic::Ordering;

use stepup_core::pkce::CodeChallenge;

use crate::fixtures::*;
use crate::flow::{Browser, PASSWORD, Page, REDIRECT, VERIFIER, setup};
use crate::on_both_backends;

/// The authorization request of the test client, with `extra` parameters.
fn request(extra: &[(&str, String)]) -> Vec<(String, String)> {
    let challenge = CodeChallenge::from_verifier(VERIFIER).unwrap();
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", "web"),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
        ("state", "st-1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        params.push(((*k).to_owned(), v.clone()));
    }
    params
}

async fn authorize_get(s: &TestServer, extra: &[(&str, String)], from: Option<&str>) -> Page {
    let mut r = s.http.get(s.url("/authorize")).query(&request(extra));
    if let Some(ip) = from {
        r = r.header("x-forwarded-for", ip);
    }
    Browser::page(r.send().await.unwrap()).await
}

async fn authorize_post(s: &TestServer, extra: &[(&str, String)]) -> Page {
    let r = s.http.post(s.url("/authorize")).form(&request(extra));
    Browser::page(r.send().await.unwrap()).await
}

async fn oversized_parameters_are_refused_and_nothing_is_stored(backend: Backend) {
    let (s, _) = setup(backend, false).await;
    // The control: a request within the bounds waits for the user, with
    // the hint at its longest on the page.
    let hint = "h".repeat(256);
    let page = authorize_get(
        &s,
        &[("login_hint", hint.clone()), ("state", "s".repeat(512))],
        None,
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&hint));
    assert_eq!(count_rows(&s, "pending_requests").await, 1);

    for (name, len) in [
        ("state", 513),
        ("nonce", 513),
        ("login_hint", 257),
        ("scope", 1025),
    ] {
        let value = "x".repeat(len);
        for page in [
            authorize_get(&s, &[(name, value.clone())], None).await,
            authorize_post(&s, &[(name, value.clone())]).await,
        ] {
            assert_eq!(page.status, 400, "{name}: {}", page.body);
            assert!(page.location.is_none(), "{name}: not sent on to the client");
            assert!(
                page.body.contains(&format!("parameter {name} is longer than")),
                "{}",
                page.body
            );
            assert!(!page.body.contains(&value), "{name} is not echoed");
        }
    }
    // The outsider's request: a 1.5 MB state and a 400 kB hint, and each
    // alone, are refused before they are read.
    for extra in [
        vec![
            ("state", "s".repeat(1_500_000)),
            ("login_hint", "h".repeat(400_000)),
        ],
        vec![("login_hint", "h".repeat(400_000))],
    ] {
        let page = authorize_post(&s, &extra).await;
        assert_eq!(page.status, 413);
        assert!(page.body.len() < 1000);
    }
    assert_eq!(count_rows(&s, "pending_requests").await, 1, "nothing more stored");
}
on_both_backends!(oversized_parameters_are_refused_and_nothing_is_stored);

#[tokio::test]
async fn pushed_requests_and_forms_are_bounded_too() {
    let (s, _) = setup(Backend::Sqlite, false).await;
    let push = |extra: Vec<(&'static str, String)>| {
        let s = &s;
        async move {
            let form = request(&extra);
            let response = s.http.post(s.url("/par")).form(&form).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, body) = push(vec![]).await;
    assert_eq!(status, 201, "the control: {body}");
    let (status, body) = push(vec![("state", "x".repeat(513))]).await;
    assert_eq!(status, 400, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "invalid_request");
    let (status, _) = push(vec![("claims", "x".repeat(100_000))]).await;
    assert_eq!(status, 413);
    assert_eq!(
        count_rows(&s, "pushed_requests").await,
        1,
        "only the control was stored"
    );

    // The token endpoint: bounds are checked before the client is.
    let token = |body: String| {
        let s = &s;
        async move {
            let response = s
                .http
                .post(s.url("/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, _) = token(format!("grant_type=authorization_code&code={}", "c".repeat(256))).await;
    assert_eq!(status, 401, "the control: on to client authentication");
    let (status, body) = token(format!("grant_type=authorization_code&code={}", "c".repeat(257))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_request") && body.contains("parameter code is longer than 256 bytes"));
    let (status, _) = token(format!("grant_type=x&pad={}", "p".repeat(20_000))).await;
    assert_eq!(status, 413);
    let b = Browser::new();
    let page = b.authorize(&s, &[]).await;
    let long = "u".repeat(257);
    let refused = b
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", &long), ("password", "p")],
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(!refused.body.contains(&long));
    let ok = b
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(ok.status, 303, "the control: {}", ok.body);
}

/// A server behind a proxy on loopback (so tests can come from any
/// address), with these rate limits.
async fn behind_proxy(limits: &str) -> TestServer {
    behind_proxy_on(Backend::Sqlite, limits).await
}

async fn behind_proxy_on(backend: Backend, limits: &str) -> TestServer {
    let extra = format!("\n[risk]\ntrusted_proxies = [\"127.0.0.1/32\"]\n{TEST_RATE_LIMITS}");
    // The test's own limits replace the generous ones, line by line.
    let mut config = extra;
    for line in limits.lines().filter(|l| !l.trim().is_empty()) {
        let name = line.split('=').next().unwrap().trim();
        let old = config
            .lines()
            .find(|l| l.starts_with(&format!("{name} =")))
            .map(str::to_owned);
        match old {
            Some(old) => config = config.replace(&old, line),
            None => config = config.replace("[rate_limit]\n", &format!("[rate_limit]\n{line}\n")),
        }
    }
    let s = start_with(backend, &config, None).await;
    s.register(
        "web",
        stepup_server::client::AuthMethod::None,
        &["authorization_code", "refresh_token"],
        &["profile"],
    )
    .await;
    let rng = ring::rand::SystemRandom::new();
    for name in ["alice", "bob"] {
        stepup_server::users::add_user(&s.state.store, name, PASSWORD, NOW, &rng)
            .await
            .unwrap();
    }
    s
}

#[tokio::test]
async fn a_flood_from_one_address_is_slowed_and_others_still_pass() {
    let s = behind_proxy("authorize = { burst = 3, per_minute = 2 }").await;
    let flood = Some("203.0.113.66");
    for _ in 0..3 {
        assert_eq!(authorize_get(&s, &[], flood).await.status, 200);
    }
    let response = s
        .http
        .get(s.url("/authorize"))
        .query(&request(&[]))
        .header("x-forwarded-for", "203.0.113.66")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "30");
    assert_eq!(
        count_rows(&s, "pending_requests").await,
        3,
        "the refused request stored nothing"
    );
    // The control: another address, and the proxy itself, still pass.
    assert_eq!(authorize_get(&s, &[], Some("203.0.113.67")).await.status, 200);
    assert_eq!(authorize_get(&s, &[], None).await.status, 200);
    // An address the client claims from outside the trusted proxies is
    // not believed: a second hop before the proxy's changes nothing.
    let spoofed = s
        .http
        .get(s.url("/authorize"))
        .query(&request(&[]))
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.66")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 429);
    // Time refills the bucket: one request every 30 s.
    s.clock.0.fetch_add(30, Ordering::SeqCst);
    assert_eq!(authorize_get(&s, &[], flood).await.status, 200);
    assert_eq!(authorize_get(&s, &[], flood).await.status, 429);
}

#[tokio::test]
async fn the_token_endpoint_answers_a_flood_as_oauth() {
    let s = behind_proxy("token = { burst = 2, per_minute = 60 }").await;
    let post = |ip: &'static str| {
        let s = &s;
        async move {
            s.http
                .post(s.url("/token"))
                .header("x-forwarded-for", ip)
                .form(&[("grant_type", "client_credentials"), ("client_id", "web")])
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..2 {
        assert_ne!(post("203.0.113.9").await.status(), 429);
    }
    let limited = post("203.0.113.9").await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "1");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "slow_down");
    assert_ne!(post("203.0.113.10").await.status(), 429, "the control");
}

async fn password_from(
    s: &TestServer,
    b: &Browser,
    page: &Page,
    ip: &str,
    user: &str,
    password: &str,
) -> Page {
    let form = [
        ("request", page.hidden("request")),
        ("csrf", page.hidden("csrf")),
        ("username", user.to_owned()),
        ("password", password.to_owned()),
    ];
    let response = b
        .http
        .post(s.url("/login/password"))
        .header("x-forwarded-for", ip)
        .form(&form)
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut page = Browser::page(response).await;
    if let Some(r) = retry_after {
        page.body.push_str(&format!("\n<!-- retry-after {r} -->"));
    }
    page
}

#[tokio::test]
async fn a_flood_against_one_account_from_many_addresses_is_slowed_not_locking_it() {
    let s = behind_proxy("user = { burst = 3, per_minute = 3 }").await;
    let b = Browser::new();
    let page = b.authorize(&s, &[]).await;
    let mut limited = 0;
    // Fifty guesses from fifty addresses: a few reach the account, the
    // rest are slowed, and none of those counts as a failure.
    for i in 0..50 {
        let ip = format!("198.51.100.{i}");
        let answer = password_from(&s, &b, &page, &ip, "alice", "guess").await;
        match answer.status {
            401 => {}
            429 => {
                limited += 1;
                assert!(answer.body.contains("Too many sign-in attempts for this account"));
                assert!(answer.body.contains("retry-after 20"), "{}", answer.body);
                assert!(
                    answer.body.contains("name=\"password\""),
                    "the form is there to try again"
                );
            }
            other => panic!("{other}: {}", answer.body),
        }
    }
    assert_eq!(limited, 47);
    // The control: another account is not slowed by it.
    let bob = password_from(&s, &b, &page, "198.51.100.1", "bob", PASSWORD).await;
    assert_eq!(bob.status, 303, "{}", bob.body);
    // Unknown accounts are counted the same (nothing tells them apart).
    let b = Browser::new();
    let page = b.authorize(&s, &[]).await;
    for _ in 0..3 {
        let answer = password_from(&s, &b, &page, "198.51.100.2", "nobody", "guess").await;
        assert_eq!(answer.status, 401);
    }
    assert_eq!(
        password_from(&s, &b, &page, "198.51.100.2", "nobody", "guess")
            .await
            .status,
        429
    );
    // Twenty seconds later the real user signs in: the account was slowed,
    // never locked (three failures, below max_failures).
    s.clock.0.fetch_add(20, Ordering::SeqCst);
    let b = Browser::new();
    let page = b.authorize(&s, &[]).await;
    let alice = password_from(&s, &b, &page, "192.0.2.10", "alice", PASSWORD).await;
    assert_eq!(alice.status, 303, "{}", alice.body);
}

/// A flood of passwords at a user name empties that name's bucket of
/// password attempts, not the bucket of codes: a user who has passed the
/// password still steps up (only someone who passed it can spend codes).
#[tokio::test]
async fn a_password_flood_does_not_refuse_the_users_codes() {
    let s = behind_proxy("user = { burst = 3, per_minute = 3 }").await;
    let secret = stepup_server::users::enroll_totp(&s.state.store, "alice", &ring::rand::SystemRandom::new())
        .await
        .unwrap();
    let alice = Browser::new();
    let page = alice.authorize(&s, &[("acr_values", "urn:stepup:acr:mfa")]).await;
    let page = password_from(&s, &alice, &page, "192.0.2.10", "alice", PASSWORD).await;
    assert!(page.is_otp_page(), "{}", page.body);
    // The flood, from elsewhere.
    let thief = Browser::new();
    let form = thief.authorize(&s, &[]).await;
    for i in 0..5 {
        let ip = format!("198.51.100.{i}");
        password_from(&s, &thief, &form, &ip, "alice", "guess").await;
    }
    let refused = password_from(&s, &thief, &form, "198.51.100.9", "alice", "guess").await;
    assert_eq!(refused.status, 429, "the password bucket is empty");
    // Alice's code still counts.
    let code = secret.code_at(stepup_core::UnixTime(s.clock.0.load(Ordering::SeqCst)));
    let done = alice.submit(&s, "/login/otp", &page, &[("code", &code)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
}

/// The cookie by which the server remembers `b` for an account: `(name, secret)`.
fn device_cookie(s: &TestServer, b: &Browser) -> Option<(String, String)> {
    use reqwest::cookie::CookieStore;
    let header = b.jar.cookies(&url::Url::parse(&s.url("/")).unwrap())?;
    header.to_str().unwrap().split("; ").find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.starts_with("stepup_device_")
            .then(|| (name.to_owned(), value.to_owned()))
    })
}

/// A flood of wrong passwords at a user name, one a second from ever new
/// addresses, spends the account's bucket and locks the account for
/// browsers it does not know. The browser where the user signed in before
/// is counted by itself: the user still signs in there, and steps up with
/// a code (codes lock apart from passwords). Each sign-in gives the browser
/// a new secret; a stolen one buys a guesser `max_failures` attempts once,
/// then the browser is forgotten and the thief's guesses are the account's.
async fn a_flood_at_an_account_does_not_keep_out_its_known_browser(backend: Backend) {
    let s = behind_proxy_on(backend, "user = { burst = 3, per_minute = 3 }").await;
    let secret = stepup_server::users::enroll_totp(&s.state.store, "alice", &ring::rand::SystemRandom::new())
        .await
        .unwrap();
    let failures_at = |name: &'static str| {
        let s = &s;
        async move {
            let user = s.state.store.user_by_username(name).await.unwrap().unwrap();
            user.failed_attempts
        }
    };
    // Alice signed in on her browser before.
    let alice = Browser::new();
    let page = alice.authorize(&s, &[]).await;
    let done = password_from(&s, &alice, &page, "192.0.2.10", "alice", PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let (name, first) = device_cookie(&s, &alice).expect("the browser is remembered");
    // A thief who knows the password signs in from twenty browsers: the
    // account's sixteen places fill up, and alice's is not pushed out.
    let mut remembered = 0;
    for i in 0..20 {
        s.clock.0.fetch_add(20, Ordering::SeqCst);
        let thief = Browser::new();
        let page = thief.authorize(&s, &[]).await;
        let ip = format!("198.51.100.{}", 130 + i);
        let done = password_from(&s, &thief, &page, &ip, "alice", PASSWORD).await;
        assert_eq!(done.status, 303, "{}", done.body);
        remembered += usize::from(device_cookie(&s, &thief).is_some());
    }
    assert_eq!(remembered, 15, "sixteen places, alice's among them");
    // The flood: a guess a second for two minutes, each from a new address.
    let thief = Browser::new();
    let form = thief.authorize(&s, &[]).await;
    let mut failures = 0;
    for i in 0..120 {
        let ip = format!("198.51.100.{i}");
        let answer = password_from(&s, &thief, &form, &ip, "alice", "guess").await;
        assert!(matches!(answer.status, 401 | 429), "{}", answer.body);
        failures += usize::from(answer.status == 401);
        s.clock.0.fetch_add(1, Ordering::SeqCst);
    }
    assert!(failures >= 5, "the flood reached the lock ({failures} failures)");
    // The control: the right password from a browser the account does not
    // know is refused (the account is locked, or its bucket empty).
    let stranger = Browser::new();
    let page = stranger.authorize(&s, &[]).await;
    let refused = password_from(&s, &stranger, &page, "192.0.2.20", "alice", PASSWORD).await;
    assert!(matches!(refused.status, 401 | 429), "{}", refused.body);
    // Alice's browser signs in, and steps up with her code.
    let page = alice
        .authorize(&s, &[("prompt", "login"), ("acr_values", "urn:stepup:acr:mfa")])
        .await;
    assert!(page.is_password_page(), "{}", page.body);
    let page = password_from(&s, &alice, &page, "192.0.2.10", "alice", PASSWORD).await;
    assert!(page.is_otp_page(), "{}: {}", page.status, page.body);
    let code = secret.code_at(stepup_core::UnixTime(s.clock.0.load(Ordering::SeqCst)));
    let done = alice.submit(&s, "/login/otp", &page, &[("code", &code)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.redirect_param("error"), None);
    // Remembered under a new secret: the first one no longer counts.
    let (same_name, current) = device_cookie(&s, &alice).unwrap();
    assert_eq!(same_name, name);
    assert_ne!(current, first);

    let with_cookie = |secret: &str| {
        let b = Browser::new();
        b.jar.add_cookie_str(
            &format!("{name}={secret}"),
            &url::Url::parse(&s.url("/")).unwrap(),
        );
        b
    };
    // The cookie is alice's only: with it, guesses at bob count at bob's
    // account (the cookie of another name is not even read).
    let thief = with_cookie(&current);
    let form = thief.authorize(&s, &[]).await;
    let bob = password_from(&s, &thief, &form, "198.51.100.200", "bob", "guess").await;
    assert_eq!(bob.status, 401);
    assert_eq!(failures_at("bob").await, 1, "counted at bob's account");
    // At alice, the stolen secret buys max_failures guesses (5), slowed
    // like any browser.
    for i in 0..5 {
        s.clock.0.fetch_add(20, Ordering::SeqCst);
        let ip = format!("198.51.100.{}", 201 + i);
        let answer = password_from(&s, &thief, &form, &ip, "alice", "guess").await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    // Then the browser is forgotten: even the right password from it is
    // now the locked account's attempt.
    s.clock.0.fetch_add(20, Ordering::SeqCst);
    let page = alice.authorize(&s, &[("prompt", "login")]).await;
    let refused = password_from(&s, &alice, &page, "192.0.2.10", "alice", PASSWORD).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    // Once the account's lock is over, the stolen secret and the first one
    // buy nothing more: their guesses count at the account.
    s.clock.0.fetch_add(1000, Ordering::SeqCst);
    for (i, stolen) in [&current, &first].into_iter().enumerate() {
        let thief = with_cookie(stolen);
        let form = thief.authorize(&s, &[]).await;
        let answer = password_from(&s, &thief, &form, "198.51.100.250", "alice", "guess").await;
        assert_eq!(answer.status, 401, "{}", answer.body);
        assert_eq!(failures_at("alice").await, i as i64 + 1, "counted at the account");
    }
    // Alice signs in (the account's limits allow it now) and is remembered
    // again: her browser's session holds the code she proved there.
    s.clock.0.fetch_add(40, Ordering::SeqCst);
    let page = alice.authorize(&s, &[("prompt", "login")]).await;
    let done = password_from(&s, &alice, &page, "192.0.2.10", "alice", PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_ne!(device_cookie(&s, &alice).unwrap().1, current);
    // The thief's fifteen still fill the account. On a new browser the
    // password alone is not remembered; her code is, and it forgets the
    // browsers remembered by a password alone.
    s.clock.0.fetch_add(40, Ordering::SeqCst);
    let laptop = Browser::new();
    let page = laptop
        .authorize(&s, &[("acr_values", "urn:stepup:acr:mfa")])
        .await;
    let page = password_from(&s, &laptop, &page, "192.0.2.11", "alice", PASSWORD).await;
    assert!(page.is_otp_page(), "{}: {}", page.status, page.body);
    assert!(device_cookie(&s, &laptop).is_none(), "the account is full");
    let code = secret.code_at(stepup_core::UnixTime(s.clock.0.load(Ordering::SeqCst)));
    let done = laptop.submit(&s, "/login/otp", &page, &[("code", &code)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(
        device_cookie(&s, &laptop).is_some(),
        "the code did not win the laptop a place"
    );
}

on_both_backends!(a_flood_at_an_account_does_not_keep_out_its_known_browser);

fn redis_url() -> String {
    std::env::var("STEPUP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[tokio::test]
async fn instances_sharing_redis_share_the_limits() {
    let prefix = format!(
        "stepup-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let limits = format!(
        "redis_url = \"{}\"\nredis_prefix = \"{prefix}\"\nauthorize = {{ burst = 4, per_minute = 1 }}",
        redis_url()
    );
    let one = behind_proxy(&limits).await;
    let two = behind_proxy(&limits).await;
    let from = Some("203.0.113.80");
    // Four requests, alternating between the instances, spend the burst.
    for s in [&one, &two, &one, &two] {
        assert_eq!(authorize_get(s, &[], from).await.status, 200);
    }
    assert_eq!(authorize_get(&one, &[], from).await.status, 429);
    assert_eq!(authorize_get(&two, &[], from).await.status, 429);
    // The control: another address at either instance.
    assert_eq!(authorize_get(&two, &[], Some("203.0.113.81")).await.status, 200);
    // An instance on another prefix counts on its own.
    let other = behind_proxy(&limits.replace(&prefix, &format!("{prefix}-other"))).await;
    assert_eq!(authorize_get(&other, &[], from).await.status, 200);
}

#[tokio::test]
async fn without_reachable_redis_each_instance_still_counts() {
    let s =
        behind_proxy("redis_url = \"redis://127.0.0.1:1\"\nauthorize = { burst = 2, per_minute = 1 }").await;
    let from = Some("203.0.113.90");
    for _ in 0..2 {
        assert_eq!(authorize_get(&s, &[], from).await.status, 200);
    }
    assert_eq!(authorize_get(&s, &[], from).await.status, 429);
}

/// A browser is remembered only for the password it proved (a change racing
/// the sign-in leaves nothing), and an account has 16 at most, none pushed
/// out for a new one: someone scripting sign-ins can fill neither the store
/// nor the user's places.
async fn remembered_browsers_are_bounded_and_tied_to_the_password(backend: Backend) {
    let s = behind_proxy_on(backend, "").await;
    let store = &s.state.store;
    let alice = store.user_by_username("alice").await.unwrap().unwrap();
    let device = |i: i64| stepup_server::store::StoredDevice {
        id: format!("device-{i:02}"),
        user_id: alice.id.clone(),
        failed_attempts: 0,
        created_at: NOW,
        expires_at: NOW + 1000 + i,
        strong: false,
    };
    assert!(
        !store
            .insert_device(&device(0), "$argon2id$old", 16, None)
            .await
            .unwrap(),
        "the password changed meanwhile"
    );
    assert!(store.device("device-00", NOW).await.unwrap().is_none());
    // Sixteen are remembered; beyond, none is pushed out for a new one.
    for i in 1..=20 {
        let remembered = store
            .insert_device(&device(i), &alice.password_hash, 16, None)
            .await
            .unwrap();
        assert_eq!(remembered, i <= 16, "{i}");
    }
    let present = |i: i64| {
        let id = format!("device-{i:02}");
        async move { store.device(&id, NOW).await.unwrap().is_some() }
    };
    for i in 1..=20 {
        assert_eq!(present(i).await, i <= 16, "{i}");
    }
    // A remembered browser takes a new entry in place of its own, at the
    // limit too.
    assert!(
        store
            .insert_device(&device(30), &alice.password_hash, 16, Some("device-03"))
            .await
            .unwrap()
    );
    assert!(!present(3).await && present(30).await);
    // A browser where the second factor was proven, at the full account:
    // those remembered by a password alone are forgotten for it.
    let strong = stepup_server::store::StoredDevice {
        strong: true,
        ..device(50)
    };
    assert!(
        store
            .insert_device(&strong, &alice.password_hash, 16, None)
            .await
            .unwrap()
    );
    assert!(present(50).await && !present(30).await && !present(16).await);
    // Expired ones leave their place.
    let late = stepup_server::store::StoredDevice {
        created_at: NOW + 1010,
        expires_at: NOW + 5000,
        ..device(40)
    };
    assert!(
        store
            .insert_device(&late, &alice.password_hash, 16, None)
            .await
            .unwrap()
    );
    // A new password forgets them all.
    stepup_server::users::set_password(
        store,
        "alice",
        "another password",
        &ring::rand::SystemRandom::new(),
    )
    .await
    .unwrap();
    assert!(!present(16).await && !present(30).await);
}

on_both_backends!(remembered_browsers_are_bounded_and_tied_to_the_password);

/// A sign-in that checked the old password while the password changed
/// (which ends every session) leaves no session behind: the session is
/// recorded only while the password it proved is the user's. And an unlock
/// gives remembered browsers no attempts back.
async fn a_password_change_racing_a_sign_in_leaves_no_session(backend: Backend) {
    let s = behind_proxy_on(backend, "").await;
    let store = &s.state.store;
    let alice = store.user_by_username("alice").await.unwrap().unwrap();
    let session = |id: &str| stepup_server::store::StoredSession {
        id: id.to_owned(),
        user_id: alice.id.clone(),
        pwd_at: Some(NOW),
        otp_at: None,
        hwk_at: None,
        created_at: NOW,
        expires_at: NOW + 600,
    };
    assert!(
        !store
            .insert_session(&session("raced"), Some("$argon2id$old"))
            .await
            .unwrap(),
        "recorded for a password that is no longer the user's"
    );
    assert!(store.session("raced", NOW).await.unwrap().is_none());
    assert!(
        store
            .insert_session(&session("proved"), Some(&alice.password_hash))
            .await
            .unwrap()
    );
    assert!(store.session("proved", NOW).await.unwrap().is_some());
    // A session not started by a password (a passkey) is not tied to it.
    assert!(store.insert_session(&session("passkey"), None).await.unwrap());
    assert!(store.session("passkey", NOW).await.unwrap().is_some());
    // An administrator's unlock leaves remembered browsers' counts alone:
    // a stolen device cookie does not get its guesses back.
    let worn = stepup_server::store::StoredDevice {
        id: "worn".into(),
        user_id: alice.id.clone(),
        failed_attempts: 3,
        created_at: NOW,
        expires_at: NOW + 1000,
        strong: false,
    };
    assert!(
        store
            .insert_device(&worn, &alice.password_hash, 16, None)
            .await
            .unwrap()
    );
    assert!(store.unlock_user(&alice.id).await.unwrap());
    assert_eq!(
        store.device("worn", NOW).await.unwrap().unwrap().failed_attempts,
        3
    );
}

on_both_backends!(a_password_change_racing_a_sign_in_leaves_no_session);

/// A shared secret is made once: every instance on the database reads the
/// first one stored (remembered browsers' cookie names are the same at
/// each).
async fn server_secrets_are_made_once_and_shared(backend: Backend) {
    let s = behind_proxy_on(backend, "").await;
    let store = &s.state.store;
    let first = store.server_secret("test-secret", "the first").await.unwrap();
    let second = store.server_secret("test-secret", "another").await.unwrap();
    assert_eq!((first.as_str(), second.as_str()), ("the first", "the first"));
}

on_both_backends!(server_secrets_are_made_once_and_shared);
