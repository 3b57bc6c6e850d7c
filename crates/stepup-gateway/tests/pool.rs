//! Upstreams with several instances, and public upstreams (no guard): an
//! authorization server's instances behind the gateway.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::any;
use http::Request;
use serde_json::{Value, json};
use stepup_gateway::{Gateway, GatewayConfig};
use support::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// An instance that says who it is and what it got.
async fn instance(name: &'static str) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .fallback(any(
            move |State(calls): State<Arc<AtomicUsize>>, request: Request<Body>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let header = |name: &str| parts.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
                axum::Json(json!({
                    "instance": name,
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "body": String::from_utf8_lossy(&body),
                    "authorization": header("authorization"),
                    "dpop": header("dpop"),
                    "stepup_subject": header("x-stepup-subject"),
                }))
            },
        ))
        .with_state(calls.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), calls)
}

/// A port with nothing listening.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// An instance that takes the request and hangs up without an answer, as
/// a process killed mid-request does.
async fn hanging_up() -> (String, Arc<AtomicUsize>) {
    let taken = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = taken.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (format!("http://{addr}"), taken)
}

struct Front {
    url: String,
    gateway: Gateway,
    issuer: Issuer,
    http: reqwest::Client,
}

async fn front(name: &str, upstreams: &str, policy: &str) -> Result<Front, String> {
    let dir = temp_dir(name);
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    let config = format!(
        r#"
listen = "127.0.0.1:0"
policy = "policy.toml"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
{upstreams}
"#
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let config = GatewayConfig::load(&path).map_err(|e| e.to_string())?;
    let issuer = Issuer::new();
    let gateway = Gateway::with_verifier(config, issuer.verifier()).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = gateway.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    Ok(Front {
        url,
        gateway,
        issuer,
        http: reqwest::Client::new(),
    })
}

impl Front {
    async fn send(&self, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request.body(body.to_owned());
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn metric(&self, line_start: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/-/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
    }
}

const ONLY_DEFAULT: &str = r#"
levels = [{ name = "pwd", acr = "urn:stepup:acr:pwd" }]
[default]
acr = ["pwd"]
"#;

#[tokio::test]
async fn instances_are_taken_in_turn() {
    let (a, a_calls) = instance("a").await;
    let (b, b_calls) = instance("b").await;
    let (c, c_calls) = instance("c").await;
    let f = front(
        "turns",
        &format!("[[upstream]]\nprefix = \"/\"\nurls = [\"{a}\", \"{b}\", \"{c}\"]"),
        ONLY_DEFAULT,
    )
    .await
    .unwrap();
    let token = f.issuer.token(PWD, 10);
    let mut seen = HashMap::new();
    for _ in 0..30 {
        let (status, body) = f.send("GET", "/x", None, Some(&token)).await;
        assert_eq!(status, 200);
        *seen
            .entry(body["instance"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    for calls in [&a_calls, &b_calls, &c_calls] {
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }
}

/// A gateway in front of two instances, the first one dead (its turn comes
/// first); the live one's call count.
async fn dead_then_live(name: &str) -> (Front, Arc<AtomicUsize>) {
    let dead = closed_port().await;
    let (live, live_calls) = instance("live").await;
    let f = front(
        name,
        &format!("[[upstream]]\nprefix = \"/\"\nurls = [\"{dead}\", \"{live}\"]"),
        ONLY_DEFAULT,
    )
    .await
    .unwrap();
    (f, live_calls)
}

/// An instance that cannot be connected to never saw the request: any
/// request, with its body, goes to the next, and the dead one is left out
/// for a while instead of being tried first again.
#[tokio::test]
async fn an_unreachable_instance_is_skipped_and_left_out() {
    let (f, live_calls) = dead_then_live("unreachable").await;
    let token = f.issuer.token(PWD, 10);
    for i in 0..10 {
        let body = format!("{{\"n\":{i}}}");
        let (status, answer) = f.send("POST", "/payments", Some(&body), Some(&token)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["instance"], "live");
        assert_eq!(answer["body"], body, "the body reached the live instance whole");
    }
    assert_eq!(live_calls.load(Ordering::SeqCst), 10);
    // Tried, then left out (1 s, then 2 s, ...): not each time its turn
    // comes (5 of these 10 requests start at it).
    let retries = f.metric("stepup_gateway_upstream_retries_total").await;
    assert!(
        (1..=2).contains(&retries),
        "{retries} requests went on to the next instance"
    );
}

/// Sent, but no answer: the instance may have acted on it. A request that
/// means the same when repeated goes to the next instance; a POST is not
/// sent twice, and the client gets 502.
#[tokio::test]
async fn a_request_cut_off_goes_on_only_when_repeating_it_is_harmless() {
    let (hangs, taken) = hanging_up().await;
    let (live, _) = instance("live").await;
    let f = front(
        "cut",
        &format!("[[upstream]]\nprefix = \"/\"\nurls = [\"{hangs}\", \"{live}\"]"),
        ONLY_DEFAULT,
    )
    .await
    .unwrap();
    let token = f.issuer.token(PWD, 10);
    // The first request starts at the instance that hangs up.
    let (status, answer) = f
        .send("PUT", "/details", Some("{\"iban\":\"X\"}"), Some(&token))
        .await;
    assert_eq!((status, answer["instance"].as_str()), (200, Some("live")));
    assert_eq!(taken.load(Ordering::SeqCst), 1);
    // Left out now; once back in turn (after its 1 s), a POST cut off
    // there is not repeated.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(f.send("POST", "/transfers", Some("{}"), Some(&token)).await);
    }
    assert_eq!(taken.load(Ordering::SeqCst), 2);
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 502).collect();
    assert_eq!(refused.len(), 1, "{answers:?}");
    assert_eq!(refused[0].1["error"], "upstream_unavailable");
    assert!(answers.iter().any(|(s, a)| *s == 200 && a["instance"] == "live"));
}

#[tokio::test]
async fn when_every_instance_is_down_the_client_gets_502() {
    let (one, two) = (closed_port().await, closed_port().await);
    let f = front(
        "all-down",
        &format!("[[upstream]]\nprefix = \"/\"\nurls = [\"{one}\", \"{two}\"]"),
        ONLY_DEFAULT,
    )
    .await
    .unwrap();
    let token = f.issuer.token(PWD, 10);
    for _ in 0..3 {
        let (status, body) = f.send("GET", "/x", None, Some(&token)).await;
        assert_eq!(status, 502);
        assert_eq!(body["error"], "upstream_unavailable");
        assert!(!body.to_string().contains("127.0.0.1"), "{body}");
    }
}

/// An authorization server behind the gateway: its requests carry their
/// own credentials, which reach it; the API beside it stays guarded.
#[tokio::test]
async fn public_upstreams_pass_without_a_token_and_keep_the_credentials() {
    let (login, _) = instance("login").await;
    let (api, api_calls) = instance("api").await;
    let f = front(
        "public",
        &format!(
            "[[upstream]]\nhost = \"login.example\"\nprefix = \"/\"\nurls = [\"{login}\"]\npublic = true\n\
             [[upstream]]\nprefix = \"/\"\nurl = \"{api}\"\n"
        ),
        POLICY,
    )
    .await
    .unwrap();
    let response = f
        .http
        .post(format!("{}/token", f.url))
        .header("Host", "login.example")
        .header("Authorization", "Basic Y2xpZW50OnNlY3JldA==")
        .header("DPoP", "a.proof.jwt")
        .header("X-Stepup-Subject", "mallory")
        .body("grant_type=authorization_code&code=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["instance"], "login");
    assert_eq!(body["authorization"], "Basic Y2xpZW50OnNlY3JldA==");
    assert_eq!(body["dpop"], "a.proof.jwt");
    assert_eq!(
        body["stepup_subject"],
        Value::Null,
        "client identity headers are dropped"
    );
    assert_eq!(body["body"], "grant_type=authorization_code&code=abc");
    assert!(
        f.metric("stepup_gateway_requests_total{outcome=\"public\"}")
            .await
            >= 1
    );

    // The API is still guarded: no token, no call.
    let (status, _) = f.send("GET", "/accounts/1/balance", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(api_calls.load(Ordering::SeqCst), 0);
}

/// A public upstream that would take a policy route's paths past the
/// guard is a mistake: the gateway does not start, and a reloaded policy
/// adding such a route is refused.
#[tokio::test]
async fn a_policy_route_that_would_reach_a_public_upstream_is_refused() {
    let (login, _) = instance("login").await;
    let (api, _) = instance("api").await;
    let everything_public = format!("[[upstream]]\nprefix = \"/\"\nurl = \"{login}\"\npublic = true\n");
    let error = front("leak", &everything_public, POLICY).await.err().unwrap();
    assert!(error.contains("would reach the public upstream \"/\""), "{error}");

    // A guarded longer prefix takes the routes' paths: fine.
    let guarded = format!("{everything_public}[[upstream]]\nprefix = \"/accounts/\"\nurl = \"{api}\"\n");
    let f = front("guarded", &guarded, POLICY).await.unwrap();
    // A public prefix inside a route's paths is caught too.
    let inside =
        format!("{guarded}[[upstream]]\nprefix = \"/accounts/7/\"\nurl = \"{login}\"\npublic = true\n");
    let error = front("inside", &inside, POLICY).await.err().unwrap();
    assert!(error.contains("\"/accounts/7/\""), "{error}");

    let policy = f.gateway.policy_path().clone();
    let before = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        format!("{before}\n[[route]]\nname = \"export\"\nmethods = [\"GET\"]\npath = \"/export\"\nacr = [\"mfa\"]\n"),
    )
    .unwrap();
    let error = f.gateway.reload_policy().unwrap_err().to_string();
    assert!(error.contains("\"export\""), "{error}");
}

#[tokio::test]
async fn readiness_waits_for_the_issuer_s_keys() {
    let (api, _) = instance("api").await;
    let dir = temp_dir("keys");
    std::fs::write(dir.join("policy.toml"), ONLY_DEFAULT).unwrap();
    let nowhere = closed_port().await;
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\nissuer = \"{nowhere}\"\naudience = \"{AUDIENCE}\"\n[[upstream]]\nprefix = \"/\"\nurl = \"{api}\"\n"
        ),
    )
    .unwrap();
    let config = GatewayConfig::load(&dir.join("gateway.toml")).unwrap();
    // No I/O to make it: the issuer may be one of its own upstreams.
    let gateway = Gateway::new(config).unwrap();
    assert!(!gateway.keys_loaded());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serving = gateway.clone();
    tokio::spawn(async move { serving.serve(listener, std::future::pending()).await });
    let http = reqwest::Client::new();
    let ready = http.get(format!("{url}/-/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("keys are not loaded"));
    let call_with = |token: String| {
        let request = http.get(format!("{url}/x")).bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    // A token cannot be judged yet: 503, not 401.
    assert_eq!(call_with(Issuer::new().token(PWD, 10)).await, 503);
    let error = gateway.load_keys().await.unwrap_err().to_string();
    assert!(error.contains("cannot reach the issuer"), "{error}");

    // The issuer comes up on its address: the gateway's own retries (1 s,
    // then 2 s) load the keys, readiness turns, and its tokens pass.
    let issuer = Issuer::new();
    let fetches = Arc::new(AtomicUsize::new(0));
    let (jwks, counted) = (
        json!({ "keys": [issuer.key.public_jwk(Some("k1"))] }),
        fetches.clone(),
    );
    let metadata = json!({ "issuer": nowhere, "jwks_uri": format!("{nowhere}/jwks") });
    let app = Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(move || async move { axum::Json(metadata) }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                axum::Json(jwks)
            }),
        );
    let listener = TcpListener::bind(nowhere.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let loaded = eventually_within(std::time::Duration::from_secs(8), || async {
        gateway.keys_loaded()
    })
    .await;
    assert!(loaded, "the keys never loaded");
    let ready = http.get(format!("{url}/-/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let token = issuer.token_with(PWD, 10, json!({ "iss": nowhere }));
    assert_eq!(call_with(token).await, 200);
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the keys were fetched once");
}

/// Sends raw bytes (with `Connection: close`) to the gateway; the status
/// code and what follows the headers.
async fn raw(url: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(url.trim_start_matches("http://"))
        .await
        .unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn raw_status(url: &str, request: &[u8]) -> u16 {
    raw(url, request).await.0
}

/// The host that chooses the upstream is read once: a request cannot be
/// judged public by one reading of its host and sent to the guarded API by
/// another.
#[tokio::test]
async fn a_host_read_two_ways_is_refused() {
    let (login, login_calls) = instance("login").await;
    let (api, api_calls) = instance("api").await;
    let f = front(
        "two-hosts",
        &format!(
            "[[upstream]]\nhost = \"login.example\"\nprefix = \"/\"\nurl = \"{login}\"\npublic = true\n\
             [[upstream]]\nprefix = \"/\"\nurl = \"{api}\"\n"
        ),
        POLICY,
    )
    .await
    .unwrap();
    // The request target names the public host, the Host header is not text.
    let not_text = raw_status(
        &f.url,
        b"GET http://login.example/accounts/1/balance HTTP/1.1\r\nHost: a\xff\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(not_text, 400);
    // The request target and the Host header disagree.
    let disagree = raw_status(
        &f.url,
        b"GET http://login.example/accounts/1/balance HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(disagree, 400);
    let two = raw_status(
        &f.url,
        b"GET /accounts/1/balance HTTP/1.1\r\nHost: login.example\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(two, 400);
    assert_eq!(
        api_calls.load(Ordering::SeqCst),
        0,
        "the API was reached without the guard"
    );
    // Agreeing, the absolute form is served: public for the public host...
    let agree = raw_status(
        &f.url,
        b"GET http://login.example/token HTTP/1.1\r\nHost: login.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(agree, 200);
    assert_eq!(login_calls.load(Ordering::SeqCst), 1);
    // ...and guarded for the API's.
    let guarded = raw_status(
        &f.url,
        b"GET http://api.example/accounts/1/balance HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(guarded, 401);
    assert_eq!(api_calls.load(Ordering::SeqCst), 0);
}

/// A chunked body (no length) is streamed, not kept: it is never sent
/// again, least of all empty. The first request meets the dead instance
/// and gets 502; the next goes to the live one whole.
#[tokio::test]
async fn a_streamed_body_is_never_repeated() {
    let (f, live_calls) = dead_then_live("streamed").await;
    let token = f.issuer.token(PWD, 10);
    let chunked = |text: &str| {
        format!(
            "POST /payments HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{text}\r\n0\r\n\r\n",
            text.len()
        )
    };
    let (first, _) = raw(&f.url, chunked("{\"amount\":1}").as_bytes()).await;
    assert_eq!(first, 502);
    assert_eq!(
        live_calls.load(Ordering::SeqCst),
        0,
        "the body went on, empty or not"
    );
    let (second, body) = raw(&f.url, chunked("{\"amount\":2}").as_bytes()).await;
    assert_eq!(second, 200, "{body}");
    // The echo's JSON, possibly chunked on the way back.
    assert!(body.contains("\"instance\":\"live\""), "{body}");
    assert!(body.contains(r#""body":"{\"amount\":2}""#), "{body}");
}

/// A client whose streamed body breaks off (a malformed chunk) gets 400,
/// and the instance its request went to is not blamed: both instances
/// still take their turns.
#[tokio::test]
async fn a_client_s_broken_body_does_not_count_against_the_instance() {
    let (a, a_calls) = instance("a").await;
    let (b, b_calls) = instance("b").await;
    let f = front(
        "broken-body",
        &format!("[[upstream]]\nprefix = \"/\"\nurls = [\"{a}\", \"{b}\"]"),
        ONLY_DEFAULT,
    )
    .await
    .unwrap();
    let token = f.issuer.token(PWD, 10);
    for _ in 0..2 {
        let broken = format!(
            "POST /payments HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {token}\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\n"
        );
        let (status, body) = raw(&f.url, broken.as_bytes()).await;
        assert_eq!(status, 400, "{body}");
    }
    for _ in 0..10 {
        let (status, _) = f.send("GET", "/x", None, Some(&token)).await;
        assert_eq!(status, 200);
    }
    // Neither instance was left out: each took its turns.
    assert!(a_calls.load(Ordering::SeqCst) >= 5, "a: {a_calls:?}");
    assert!(b_calls.load(Ordering::SeqCst) >= 5, "b: {b_calls:?}");
}
