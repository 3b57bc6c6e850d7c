//! The gateway end to end on loopback: a real upstream, real sockets,
//! tokens signed with real keys.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::time::Duration;

use ring::rand::SystemRandom;
use serde_json::{Value, json};
use stepup_benchkit::read_until_closed;
use stepup_core::jws::{SigningHeader, SigningKey, sign_compact};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::*;

#[tokio::test]
async fn trusted_call_is_forwarded_with_verified_identity_and_spoofed_headers_stripped() {
    let w = world("trusted", "").await;
    let token = w.issuer.token(PWD, 30);
    let response = w
        .at("GET", "/accounts/42/balance?fields=all")
        .bearer_auth(&token)
        .header("X-Stepup-Subject", "mallory")
        .header("X-Stepup-Acr", MFA)
        .header("X-Stepup-Extra", "forged")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("Connection", "close, x-drop-me")
        .header("X-Drop-Me", "hop-by-hop")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("keep-alive").is_none(),
        "hop-by-hop header passed back"
    );
    let seen: Value = response.json().await.unwrap();
    let headers = &seen["headers"];
    assert_eq!(seen["uri"], "/accounts/42/balance?fields=all");
    assert_eq!(headers["x-stepup-subject"], "alice");
    assert_eq!(headers["x-stepup-acr"], PWD);
    assert_eq!(headers["x-stepup-scope"], "accounts:read payments:write");
    let auth_time: i64 = headers["x-stepup-auth-time"].as_str().unwrap().parse().unwrap();
    assert!((now() - 30 - auth_time).abs() <= 2);
    assert!(
        headers.get("x-stepup-extra").is_none(),
        "client x-stepup-* header reached the upstream"
    );
    assert!(
        headers.get("authorization").is_none(),
        "token forwarded without forward_token"
    );
    assert!(
        headers.get("x-drop-me").is_none(),
        "header named in Connection forwarded"
    );
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "untrusted X-Forwarded-For passed on"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], w.url.trim_start_matches("http://"));
    assert_eq!(
        headers["host"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn token_is_forwarded_only_when_configured() {
    let w = world("forward-token", "forward_token = true").await;
    let token = w.issuer.token(PWD, 30);
    let seen: Value = w
        .call("GET", "/accounts/42/balance", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(seen["headers"]["authorization"], format!("Bearer {token}"));
}

#[tokio::test]
async fn step_up_is_asked_without_contacting_the_upstream() {
    let w = world("step-up", "").await;
    let response = w
        .at("POST", "/accounts/42/payees")
        .bearer_auth(w.issuer.token(PWD, 30))
        .json(&json!({ "iban": "DE02 1203 0000 0000 2020 51" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("acr_values=\"{MFA}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("max_age=\"300\""), "{challenge}");
    assert_eq!(w.calls(), 0, "the upstream saw a call that needed a step-up");

    // The stepped-up token passes.
    let response = w
        .at("POST", "/accounts/42/payees")
        .bearer_auth(w.issuer.token(MFA, 10))
        .json(&json!({ "iban": "DE02 1203 0000 0000 2020 51" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(w.calls(), 1);

    // No token: the plain challenge.
    let response = w.at("GET", "/accounts/42/balance").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(w.calls(), 1);
}

#[tokio::test]
async fn amount_rules_read_the_body_and_pass_it_on_intact() {
    let w = world("amount", "").await;
    let token = w.issuer.token(PWD, 30);
    let small = json!({ "amount": 20, "to": "bob" });
    let response = w
        .at("POST", "/accounts/42/transfers")
        .bearer_auth(&token)
        .json(&small)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["body"], small.to_string());

    let response = w
        .at("POST", "/accounts/42/transfers")
        .bearer_auth(&token)
        .json(&json!({ "amount": 5000, "to": "bob" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("max_age=\"60\""), "{challenge}");
    assert_eq!(w.calls(), 1);

    // A body too long to read for the rule: 413, no challenge.
    let response = w
        .at("POST", "/accounts/42/transfers")
        .bearer_auth(&token)
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(response.headers().get("www-authenticate").is_none());
}

#[tokio::test]
async fn upstream_failures_are_502_and_504_with_a_clear_body() {
    let w = world("failures", "").await;
    let token = w.issuer.token(PWD, 30);
    let response = w.call("GET", "/down/status", Some(&token)).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("could not be reached")
    );

    // Chosen by host: the same path for another host goes elsewhere.
    let by_host = w
        .at("GET", "/accounts/42/balance")
        .header("Host", "DOWN.example:8080")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(by_host.status(), 502);
    assert_eq!(w.calls(), 0);

    let started = std::time::Instant::now();
    let response = w.call("GET", "/slow", Some(&token)).await;
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the timeout was not applied"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    assert!(body["error_description"].as_str().unwrap().contains("within 1 s"));
}

#[tokio::test]
async fn huge_bodies_get_413_declared_or_streamed() {
    let w = world("huge", "").await;
    let token = w.issuer.token(PWD, 30);
    let response = w
        .at("PUT", "/documents/1")
        .bearer_auth(&token)
        .body(vec![b'x'; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(w.calls(), 0);

    // Chunked, without a length: cut off at the limit while streaming.
    let addr = w.url.trim_start_matches("http://");
    let (status, _) = chunked_put(addr, &token, 20, 10_000).await;
    assert_eq!(status, 413);
    // Within the limit, streamed through whole.
    let (status, body) = chunked_put(addr, &token, 5, 10_000).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"body_len\":50000"), "{body}");
}

/// A PUT with a chunked body of `chunks` chunks of `size` bytes, over a raw
/// connection: the status and the body of the answer.
async fn chunked_put(addr: &str, token: &str, chunks: usize, size: usize) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /documents/1 HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{size:x}\r\n{}\r\n", "y".repeat(size));
    for _ in 0..chunks {
        // The gateway may answer and close before the whole body is sent.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    (status, answer)
}

#[tokio::test]
async fn malformed_requests_get_400() {
    let w = world("malformed", "").await;
    let addr = w.url.trim_start_matches("http://").to_owned();
    for raw in [
        "GET /accounts/42/balance HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        "NOT A REQUEST\r\n\r\n",
        "GET /accounts/42/balance HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(raw.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{raw:?} -> {answer:?}");
    }
    // An oversized header section: 431 before anything reads it.
    let response = w
        .at("GET", "/accounts/42/balance")
        .bearer_auth(w.issuer.token(PWD, 30))
        .header("x-padding", "a".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 431);

    // A tunnel is never opened.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"CONNECT internal.example:22 HTTP/1.1\r\nHost: internal.example:22\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer:?}");
    // Malformed credentials and paths: the guard's 400s and 401s.
    let response = w
        .at("GET", "/accounts/42/balance")
        .header("Authorization", "Bearer a b c")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = w
        .http
        // An encoded unreserved character: a way around path rules.
        .get(format!("{}/accounts/42/%62alance", w.url))
        .bearer_auth(w.issuer.token(PWD, 30))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(w.calls(), 0);
}

#[tokio::test]
async fn http2_clients_are_served() {
    let w = world("h2", "").await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/accounts/42/balance", w.url))
        .bearer_auth(w.issuer.token(PWD, 30))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["version"], "HTTP/1.1", "upstreams are spoken to in HTTP/1.1");
    assert_eq!(seen["headers"]["x-stepup-subject"], "alice");
    assert_eq!(
        seen["headers"]["x-forwarded-host"],
        w.url.trim_start_matches("http://")
    );

    let response = client
        .post(format!("{}/accounts/42/payees", w.url))
        .bearer_auth(w.issuer.token(PWD, 30))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_user_authentication")
    );
}

#[tokio::test]
async fn policy_reload_applies_a_good_file_and_keeps_serving_on_a_bad_one() {
    let w = world("reload", "").await;
    let balance = |token: String| {
        let request = w.at("GET", "/accounts/42/balance").bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(balance(w.issuer.token(PWD, 30)).await, 200);
    assert!(
        !w.gateway.reload_policy().unwrap(),
        "an unchanged file is not a reload"
    );

    // Good: reading the balance now needs mfa.
    let stricter = POLICY.replace(
        "path = \"/accounts/{id}/balance\"",
        "path = \"/accounts/{id}/balance\"\nacr = [\"mfa\"]",
    );
    std::fs::write(&w.policy_path, &stricter).unwrap();
    assert!(w.gateway.reload_policy().unwrap());
    assert_eq!(balance(w.issuer.token(PWD, 30)).await, 401);
    assert_eq!(balance(w.issuer.token(MFA, 30)).await, 200);

    // Bad: a located error, and the stricter policy keeps serving.
    let broken = stricter.replace("acr = [\"mfa\"]", "acr = [\"mfaa\"]");
    std::fs::write(&w.policy_path, &broken).unwrap();
    let error = w.gateway.reload_policy().unwrap_err().to_string();
    assert!(error.contains("policy.toml:"), "{error}");
    assert!(error.contains("mfaa"), "{error}");
    assert!(
        error
            .split("policy.toml:")
            .nth(1)
            .unwrap()
            .chars()
            .next()
            .unwrap()
            .is_ascii_digit(),
        "no line number: {error}"
    );
    assert_eq!(balance(w.issuer.token(PWD, 30)).await, 401);
    assert_eq!(balance(w.issuer.token(MFA, 30)).await, 200);
    let health: Value = w
        .at("GET", "/-/healthz")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        health["policy"]["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("mfaa")
    );

    // The watcher picks up a fixed file by itself.
    let watcher = w.gateway.watch_policy(Duration::from_millis(50));
    std::fs::write(&w.policy_path, POLICY).unwrap();
    let reloaded = eventually(|| async { balance(w.issuer.token(PWD, 30)).await == 200 }).await;
    watcher.abort();
    assert!(reloaded, "the watcher did not reload the fixed policy");
    let metrics = w
        .at("GET", "/-/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stepup_gateway_policy_reloads_total{result=\"ok\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stepup_gateway_policy_reloads_total{result=\"error\"} 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_count_outcomes_routes_and_step_ups() {
    let w = world("metrics", "").await;
    let token = w.issuer.token(PWD, 30);
    for _ in 0..3 {
        let r = w.call("GET", "/accounts/42/balance", Some(&token)).await;
        assert_eq!(r.status(), 200);
    }
    let r = w.call("POST", "/accounts/42/payees", Some(&token)).await;
    assert_eq!(r.status(), 401);
    let r = w.call("GET", "/down/x", Some(&token)).await;
    assert_eq!(r.status(), 502);
    let r = w.at("GET", "/anything").send().await.unwrap();
    assert_eq!(r.status(), 401);

    let response = w.at("GET", "/-/metrics").send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "stepup_gateway_requests_total{outcome=\"allowed\"} 3\n",
        "stepup_gateway_requests_total{outcome=\"step_up\"} 1\n",
        "stepup_gateway_requests_total{outcome=\"denied\"} 1\n",
        "stepup_gateway_requests_total{outcome=\"upstream_error\"} 1\n",
        "stepup_gateway_decisions_total{outcome=\"allowed\",route=\"read balance\"} 3\n",
        "stepup_gateway_decisions_total{outcome=\"step_up\",route=\"add payee\"} 1\n",
        "stepup_gateway_decisions_total{outcome=\"denied\",route=\"[default]\"} 1\n",
        "stepup_gateway_step_ups_total{rule=\"add payee\"} 1\n",
        "stepup_gateway_request_duration_seconds_count 6\n",
        "stepup_gateway_upstream_duration_seconds_count 4\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let ready = w.at("GET", "/-/readyz").send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() {
    let mut w = world("shutdown", "").await;
    let token = w.issuer.token(PWD, 30);
    let in_flight = tokio::spawn(w.at("GET", "/drain").bearer_auth(&token).send());
    // Let the request reach the upstream, then stop.
    assert!(eventually(|| async { w.calls() == 1 }).await);
    w.shutdown.take().unwrap().send(()).unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the request in flight was cut");
    tokio::time::timeout(Duration::from_secs(5), &mut w.served)
        .await
        .expect("the gateway did not stop")
        .unwrap()
        .unwrap();
    let refused = reqwest::Client::new()
        .get(format!("{}/accounts/42/balance", w.url))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(refused.is_err(), "the gateway still accepts connections");
}

#[tokio::test]
async fn dpop_bound_tokens_need_their_proof_and_the_upstream_learns_the_key() {
    let w = world("dpop", "dpop_origin = \"http://gw.example\"").await;
    let rng = SystemRandom::new();
    let key = SigningKey::generate_es256(&rng).unwrap();
    let jkt = stepup_core::jwk::Jwk::from_json_value(&key.public_jwk(None))
        .unwrap()
        .thumbprint_sha256();
    let token = w.issuer.token_with(PWD, 30, json!({ "cnf": { "jkt": jkt } }));
    let proof = |jti: &str| {
        let claims = stepup_core::dpop::ProofClaims {
            method: "GET",
            uri: "http://gw.example/accounts/42/balance",
            access_token: Some(&token),
            nonce: None,
            jti,
            iat: now(),
        };
        stepup_core::dpop::sign_proof(&key, &claims, &rng).unwrap()
    };
    let call = |proof: Option<String>, scheme: &str| {
        let mut request = w
            .at("GET", "/accounts/42/balance")
            .header("Authorization", format!("{scheme} {token}"));
        if let Some(p) = proof {
            request = request.header("DPoP", p);
        }
        request.send()
    };
    let response = call(Some(proof("p1")), "DPoP").await.unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["headers"]["x-stepup-dpop-jkt"], jkt.as_str());
    assert!(seen["headers"].get("dpop").is_none(), "the proof was forwarded");

    // Replayed proof, no proof, and the bound token used as a bearer token.
    for (proof, scheme) in [(Some(proof("p1")), "DPoP"), (None, "DPoP"), (None, "Bearer")] {
        let response = call(proof, scheme).await.unwrap();
        assert_eq!(response.status(), 401, "{scheme}");
    }
    assert_eq!(w.calls(), 1);
}

#[tokio::test]
async fn transaction_bound_routes_take_an_approved_token_once() {
    let w = world_with("transaction", "", LARGE_TRANSFER).await;
    let details = json!([{ "type": "payment_initiation", "amount": "20.00", "creditor": "bob" }]);
    let mut approved = w
        .issuer
        .token_with(MFA, 5, json!({ "authorization_details": details }));
    // The approved token lives short: rewrite its exp within the 120 s.
    let payload = {
        let mut claims: Value =
            serde_json::from_slice(&base64_url_decode(approved.split('.').nth(1).unwrap())).unwrap();
        claims["exp"] = json!(now() + 60);
        claims
    };
    approved = sign(&w.issuer, &payload);
    let transfer = |token: &str, amount: u32, to: &str| {
        w.at("POST", "/accounts/42/transfers")
            .bearer_auth(token)
            .json(&json!({ "amount": amount, "to": to }))
            .send()
    };
    // Another creditor than approved: refused, a new approval asked.
    assert_eq!(transfer(&approved, 20, "mallory").await.unwrap().status(), 401);
    assert_eq!(transfer(&approved, 20, "bob").await.unwrap().status(), 200);
    // Used once.
    assert_ne!(transfer(&approved, 20, "bob").await.unwrap().status(), 200);
    assert_eq!(w.calls(), 1);

    // A policy that drops the bound route is refused: the binding would
    // silently protect nothing.
    std::fs::write(&w.policy_path, POLICY.replace("\"transfer\"", "\"payment\"")).unwrap();
    let error = w.gateway.reload_policy().unwrap_err().to_string();
    assert!(error.contains("no route \"transfer\""), "{error}");
}

fn base64_url_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

fn sign(issuer: &Issuer, claims: &Value) -> String {
    let header = SigningHeader::new().typ("at+jwt").kid("k1");
    sign_compact(&header, claims.to_string().as_bytes(), &issuer.key, &issuer.rng).unwrap()
}

#[tokio::test]
async fn spellings_an_upstream_may_read_differently_are_refused() {
    let w = world("spellings", "").await;
    let token = w.issuer.token(PWD, 30);
    // The payee route needs mfa: other spellings of it must not reach the
    // upstream under the default rule.
    for path in [
        "/accounts/42/Payees",
        "/accounts/42/payees/",
        "/accounts/42/payees.json",
        "/accounts/42/payees;x=1",
        "//accounts/42/payees",
    ] {
        let response = w.call("POST", path, Some(&token)).await;
        assert_eq!(response.status(), 400, "{path}");
    }
    let response = w.call("post", "/accounts/42/payees", Some(&token)).await;
    assert_eq!(response.status(), 400, "a lower-case method");
    // A raw backslash (sent by hand: an HTTP client's URL parser turns it
    // into '/'), which an upstream reading it as '/' would route to the
    // payee handler: refused like its encoded form.
    for path in [
        "/accounts/42\\payees",
        "/accounts/42/%5Cpayees",
        "/accounts/42/pay|ees",
    ] {
        let mut stream = tokio::net::TcpStream::connect(w.url.trim_start_matches("http://"))
            .await
            .unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert_eq!(w.calls(), 0);
    // Spellings that reach the same rule pass: an upper-case id, a file
    // name with an extension.
    assert_eq!(
        w.call("GET", "/accounts/AB12/balance", Some(&token))
            .await
            .status(),
        200
    );
    assert_eq!(
        w.call("GET", "/documents/report.pdf", Some(&token))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn lookalike_and_override_headers_are_dropped() {
    let w = world("lookalikes", "").await;
    let response = w
        .at("GET", "/accounts/42/balance")
        .bearer_auth(w.issuer.token(PWD, 30))
        .header("X-Stepup_Acr", MFA)
        .header("X_Stepup_Subject", "mallory")
        .header("X-Forwarded_For", "10.0.0.1")
        .header("X-HTTP-Method-Override", "DELETE")
        .header("X-Original-URL", "/admin")
        // Addresses, hosts and schemes a client claims for itself: only a
        // trusted proxy's count (none here).
        .header("X-Real-IP", "10.0.0.2")
        .header("True-Client-IP", "10.0.0.3")
        .header("X-Client-IP", "10.0.0.4")
        .header("CF-Connecting-IP", "10.0.0.5")
        .header("X-Forwarded-Port", "443")
        .header("X-Forwarded-Prefix", "/admin")
        .header("X-Forwarded-Proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    let headers = seen["headers"].as_object().unwrap();
    for dropped in [
        "x-stepup_acr",
        "x_stepup_subject",
        "x-forwarded_for",
        "x-http-method-override",
        "x-original-url",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "cf-connecting-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
    ] {
        assert!(!headers.contains_key(dropped), "{dropped} reached the upstream");
    }
    assert_eq!(headers["x-stepup-acr"], PWD);
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    // The gateway's own, not the client's.
    assert_eq!(headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn a_trusted_proxy_s_forwarding_chain_is_kept_whole() {
    let w = world("chain", "trusted_proxies = [\"127.0.0.1/32\"]").await;
    let token = w.issuer.token(PWD, 30);
    let url = w.url.trim_start_matches("http://").to_owned();
    // Two X-Forwarded-For lines, as a client's and a proxy's.
    let raw = format!(
        "GET /accounts/42/balance HTTP/1.1\r\nHost: {url}\r\nAuthorization: Bearer {token}\r\nX-Forwarded-For: 203.0.113.1\r\nX-Forwarded-For: 198.51.100.2\r\nConnection: close\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(&url).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("203.0.113.1, 198.51.100.2, 127.0.0.1"),
        "the chain was not kept whole: {answer}"
    );
}

/// Bytes beyond ASCII that a client wrote in its part of a trusted
/// proxy's X-Forwarded-For line go on as an `unknown` hop: the hop the
/// proxy appended after them reaches the upstream (before, the whole chain
/// was dropped and the upstream took the proxy for the client).
#[tokio::test]
async fn a_clients_bytes_beyond_ascii_do_not_hide_its_proxys_hop() {
    let w = world("obs-text", "trusted_proxies = [\"127.0.0.1/32\"]").await;
    let token = w.issuer.token(PWD, 30);
    let url = w.url.trim_start_matches("http://").to_owned();
    let mut raw = format!(
        "GET /accounts/42/balance HTTP/1.1\r\nHost: {url}\r\nAuthorization: Bearer {token}\r\nX-Forwarded-For: "
    )
    .into_bytes();
    raw.extend_from_slice(b"\xff, 198.51.100.2\r\nConnection: close\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(&url).await.unwrap();
    stream.write_all(&raw).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("unknown, 198.51.100.2, 127.0.0.1"),
        "the proxy's hop was lost: {answer}"
    );
}

/// Behind proxies that write X-Forwarded-For, a `Forwarded` header is the
/// client's own words even from a trusted proxy: the upstream must not
/// read it either, so it is dropped; and the other way round.
#[tokio::test]
async fn only_the_forwarding_header_the_proxies_write_reaches_the_upstream() {
    // (setting, whether the client's Forwarded reaches the upstream, the
    // X-Forwarded-For the upstream gets)
    for (mode, forwarded_kept, chain) in [
        ("", false, "198.51.100.2, 127.0.0.1"),
        ("forwarded_header = \"forwarded\"", true, "127.0.0.1"),
    ] {
        let w = world(
            if forwarded_kept { "fwd-rfc7239" } else { "fwd-xff" },
            &format!("trusted_proxies = [\"127.0.0.1/32\"]\n{mode}"),
        )
        .await;
        let response = w
            .at("GET", "/accounts/42/balance")
            .bearer_auth(w.issuer.token(PWD, 30))
            .header("Forwarded", "for=192.0.2.9")
            .header("X-Forwarded-For", "198.51.100.2")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let seen: Value = response.json().await.unwrap();
        let headers = seen["headers"].as_object().unwrap();
        assert_eq!(headers.contains_key("forwarded"), forwarded_kept, "{mode}");
        // The gateway writes X-Forwarded-For itself: the chain it believed,
        // then its peer.
        assert_eq!(headers["x-forwarded-for"], chain, "{mode}");
    }
}

/// A policy file written in place is read only once it stops changing: a
/// half-written file may still load, with fewer routes.
#[tokio::test]
async fn the_watcher_waits_for_a_policy_file_to_settle() {
    let w = world("settle", "").await;
    let watcher = w.gateway.watch_policy(Duration::from_millis(10));
    let stricter = POLICY.replace(
        "path = \"/accounts/{id}/balance\"",
        "path = \"/accounts/{id}/balance\"\nacr = [\"mfa\"]",
    );
    // The first part loads on its own: without the transfer route.
    let half = &stricter[..stricter.find("[[route]]\nname = \"transfer\"").unwrap()];
    assert!(stepup_core::Policy::from_toml("half", half).is_ok());
    std::fs::write(&w.policy_path, half).unwrap();
    // Well inside the 250 ms the gateway waits, even on a loaded machine.
    tokio::time::sleep(Duration::from_millis(40)).await;
    std::fs::write(&w.policy_path, &stricter).unwrap();
    let reloaded = eventually(|| async {
        let token = w.issuer.token(PWD, 30);
        w.call("GET", "/accounts/42/balance", Some(&token)).await.status() == 401
    })
    .await;
    watcher.abort();
    assert!(reloaded, "the finished file was not loaded");
    let metrics = w
        .at("GET", "/-/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("stepup_gateway_policy_reloads_total{result=\"ok\"} 1\n"),
        "the half-written file was loaded: {metrics}"
    );
}

/// Metrics name the policy's routes: only the admin addresses see them.
#[tokio::test]
async fn admin_endpoints_answer_only_the_allowed_addresses() {
    let w = world("admin", "admin_allow = [\"10.0.0.0/8\"]").await;
    for path in ["/-/metrics", "/-/healthz", "/-/readyz"] {
        let response = w.at("GET", path).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
    }
    assert_eq!(w.calls(), 0);
    let open = world("admin-default", "").await;
    assert_eq!(open.at("GET", "/-/metrics").send().await.unwrap().status(), 200);
    // Through a proxy on the same host (it says whom it forwards for): the
    // client's request, not the proxy's.
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
        ("x-real-ip", "203.0.113.9"),
    ] {
        let response = open
            .at("GET", "/-/metrics")
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{name}");
    }
}

/// Issue 17 §5: behind a TLS terminator on the same host every client
/// comes from loopback, so an address rule alone opened the metrics to
/// all. With `admin_listen`, the admin endpoints are on their own listener
/// and the main one forwards every path, guarded.
#[tokio::test]
async fn admin_endpoints_can_have_a_listener_of_their_own() {
    let w = world("admin-listen", "admin_listen = \"127.0.0.1:0\"").await;
    let response = w.at("GET", "/-/metrics").send().await.unwrap();
    assert_eq!(response.status(), 401, "guarded like any path, not the metrics");
    let token = w.issuer.token(PWD, 30);
    let response = w.call("GET", "/-/metrics", Some(&token)).await;
    let echoed: Value = response.json().await.unwrap();
    assert_eq!(echoed["uri"], "/-/metrics", "forwarded to the upstream");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let serving = w.gateway.clone();
    tokio::spawn(async move { serving.serve_admin(listener, std::future::pending()).await });
    let http = reqwest::Client::new();
    let metrics = http.get(format!("{admin}/-/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("stepup_gateway_"));
    assert_eq!(
        http.get(format!("{admin}/-/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The identity key (none configured here) is the gateway's answer on
    // both listeners, never forwarded.
    assert_eq!(
        http.get(format!("{admin}/-/jwks")).send().await.unwrap().status(),
        404
    );
    let calls = w.calls();
    let jwks = w.call("GET", "/-/jwks", Some(&token)).await;
    assert_eq!(jwks.status(), 404);
    assert_eq!(w.calls(), calls, "not forwarded");
    // Nothing else is there: no forwarding from the admin listener.
    let other = http
        .get(format!("{admin}/accounts/1/balance"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// Sends `head` (a request's header section), then its body one byte
/// every 200 ms until the gateway answers: what it answered.
async fn trickle(w: &World, head: String) -> String {
    let mut stream = tokio::net::TcpStream::connect(w.url.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    sending.abort();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn slow_clients_do_not_hold_the_gateway() {
    let w = world_with(
        "slow",
        "",
        "[connections]\nheader_read_seconds = 1\nbody_read_seconds = 1",
    )
    .await;
    let addr = w.url.trim_start_matches("http://").to_owned();

    // Half a header section: the connection is closed, not kept.
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /accounts/1/balance HTTP/1.1\r\nHost: api.example\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut half, Duration::from_secs(5)).await;
    assert!(closed, "a half-sent header section kept its connection");
    assert!(started.elapsed() < Duration::from_secs(4));

    let token = w.issuer.token(PWD, 30);
    // A body the guard reads for its amount rule, sent one byte at a time.
    let started = std::time::Instant::now();
    let answer = trickle(
        &w,
        format!(
            "POST /accounts/1/transfers HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"amount\": 1"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A body streamed to the upstream, the same way.
    let answer = trickle(
        &w,
        format!(
            "POST /patient/upload HTTP/1.1\r\nHost: api.example\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // The gateway still serves.
    let response = w.call("GET", "/accounts/1/balance", Some(&token)).await;
    assert_eq!(response.status(), 200);
}

/// Issue 17 §5: an upstream others can reach too cannot tell the gateway's
/// `X-Stepup-*` headers from anyone's. With `[identity]`, the gateway also
/// sends a short-lived JWS of them, for this method and path, which the
/// upstream checks with the gateway's published key.
#[tokio::test]
async fn the_forwarded_identity_can_be_signed() {
    use stepup_core::jwk::{Algorithm, Jwks};
    use stepup_core::jws::{VerificationPolicy, verify_compact};
    let w = world("identity", "[identity]\nkey_file = \"identity.pem\"\n").await;
    let token = w.issuer.token(PWD, 30);
    let response = w
        .at("GET", "/accounts/42/balance?fields=all")
        .bearer_auth(&token)
        .header("X-Stepup-Identity", "forged.by.client")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().await.unwrap();
    let signed = seen["headers"]["x-stepup-identity"].as_str().unwrap().to_owned();
    assert_ne!(signed, "forged.by.client");

    let jwks = w.at("GET", "/-/jwks").send().await.unwrap();
    assert_eq!(jwks.status(), 200);
    let jwks = Jwks::from_json(&jwks.bytes().await.unwrap()).unwrap();
    let policy = VerificationPolicy::new([Algorithm::ES256], Some(stepup_gateway::identity::IDENTITY_TYP));
    let verified = verify_compact(&signed, &jwks, &policy).unwrap();
    let claims: Value = serde_json::from_slice(verified.payload()).unwrap();
    assert_eq!(claims["iss"], AUDIENCE);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["acr"], PWD);
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["htu"], "/accounts/42/balance?fields=all");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        60
    );
    assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 20));
    // Another key does not verify it.
    let other = Jwks::from_json(
        serde_json::to_string(&serde_json::json!({"keys": [w.issuer.key.public_jwk(None)]}))
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    assert!(verify_compact(&signed, &other, &policy).is_err());

    // The key was made, owner-only, and is kept: a restart signs with it.
    let key_file = w.policy_path.with_file_name("identity.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let again = world("identity", "[identity]\nkey_file = \"identity.pem\"\n").await;
    let jwks_again: Value = again
        .at("GET", "/-/jwks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks_first: Value = w.at("GET", "/-/jwks").send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks_again, jwks_first);
    // Without [identity], there is no such key.
    let plain = world("identity-off", "").await;
    assert_eq!(plain.at("GET", "/-/jwks").send().await.unwrap().status(), 404);
}
