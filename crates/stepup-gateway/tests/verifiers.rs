//! How the gateway verifies tokens and remembers what is used once: keys
//! from an explicit `jwks_uri`, opaque tokens by introspection, several
//! instances sharing a replay store in Redis, and its own 401.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};
use stepup_gateway::{Gateway, GatewayConfig};
use tokio::net::TcpListener;

mod support;

use support::*;

fn redis_url() -> String {
    std::env::var("STEPUP_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Serves `gateway` on a free port: its URL.
async fn serve(gateway: Gateway) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { gateway.serve(listener, std::future::pending()).await });
    url
}

/// Serves `app` on a free port: its URL.
async fn serve_app(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_transaction_token_used_at_one_instance_is_refused_at_another() {
    let prefix = format!(
        "stepup-test-gateway-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let replay = format!(
        "[replay]\nredis_url = \"{}\"\nprefix = \"{prefix}\"\n",
        redis_url()
    );
    let w = world_with("instances", "instances = 2", &format!("{replay}{LARGE_TRANSFER}")).await;
    // The second instance: the same configuration, the same issuer.
    let config = GatewayConfig::load(&temp_dir("instances").join("gateway.toml")).unwrap();
    let other = serve(Gateway::with_verifier(config, w.issuer.verifier()).unwrap()).await;

    let details = json!([{ "type": "payment_initiation", "amount": "20.00", "creditor": "bob" }]);
    let approved = w.issuer.token_with(
        MFA,
        5,
        json!({ "authorization_details": details, "exp": now() + 60 }),
    );
    let transfer = |base: &str| {
        w.http
            .post(format!("{base}/accounts/42/transfers"))
            .bearer_auth(&approved)
            .json(&json!({ "amount": 20, "to": "bob" }))
            .send()
    };
    assert_eq!(transfer(&w.url).await.unwrap().status(), 200);
    // Replayed at the other instance: refused there too.
    let replayed = transfer(&other).await.unwrap();
    assert_eq!(replayed.status(), 401, "{:?}", replayed.text().await);
    assert_eq!(w.calls(), 1);
}

#[tokio::test]
async fn keys_come_from_the_configured_jwks_uri_without_discovery() {
    let issuer = Issuer::new();
    let jwks = json!({ "keys": [issuer.key.public_jwk(Some("k1"))] });
    let keys = serve_app(Router::new().route("/keys", get(move || async move { axum::Json(jwks) }))).await;
    let upstream = serve_app(Router::new().fallback(|| async { "upstream" })).await;
    let dir = temp_dir("jwks-uri");
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    // The issuer itself is nowhere: only jwks_uri can give the keys.
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_uri = \"{keys}/keys\"\n[[upstream]]\nprefix = \"/\"\nurl = \"{upstream}\"\n"
        ),
    )
    .unwrap();
    let gateway = Gateway::new(GatewayConfig::load(&dir.join("gateway.toml")).unwrap()).unwrap();
    let url = serve(gateway.clone()).await;
    // Loaded in the background once it serves.
    assert!(
        eventually(|| async { gateway.keys_loaded() }).await,
        "the keys never loaded"
    );
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{url}/accounts/1/balance"))
        .bearer_auth(issuer.token(PWD, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "upstream");
    // A token of another key is refused.
    let response = http
        .get(format!("{url}/accounts/1/balance"))
        .bearer_auth(Issuer::new().token(PWD, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn opaque_tokens_are_introspected_with_the_secret_from_the_environment() {
    // The secret's variable: one cargo sets for every test process, so the
    // test changes no environment (the gateway reads it at start).
    let secret = std::env::var("CARGO_PKG_NAME").unwrap();
    let expected = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("api-gateway:{secret}")
        )
    );
    let introspect = move |headers: http::HeaderMap, body: String| {
        let expected = expected.clone();
        async move {
            let authenticated = headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == expected.as_bytes());
            let known = body.contains("token=opaque-mfa-token");
            let answer: Value = if authenticated && known {
                json!({
                    "active": true, "token_type": "Bearer", "iss": ISSUER, "aud": AUDIENCE,
                    "sub": "alice", "acr": MFA, "auth_time": now() - 10, "exp": now() + 300,
                    "scope": "accounts:read", "client_id": "bank-web",
                })
            } else {
                json!({ "active": false })
            };
            axum::Json(answer)
        }
    };
    let endpoint = serve_app(Router::new().route("/introspect", post(introspect))).await;
    let upstream = serve_app(Router::new().fallback(|| async { "upstream" })).await;
    let dir = temp_dir("introspection");
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    let config = |variable: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\npolicy = \"policy.toml\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n[introspection]\nendpoint = \"{endpoint}/introspect\"\nclient_id = \"api-gateway\"\nclient_secret_env = \"{variable}\"\n[[upstream]]\nprefix = \"/\"\nurl = \"{upstream}\"\n"
        )
    };
    // A variable that is not set: the gateway does not start.
    std::fs::write(dir.join("gateway.toml"), config("STEPUP_TEST_NOT_SET_ANYWHERE")).unwrap();
    let error = Gateway::new(GatewayConfig::load(&dir.join("gateway.toml")).unwrap())
        .unwrap_err()
        .to_string();
    assert!(error.contains("STEPUP_TEST_NOT_SET_ANYWHERE"), "{error}");

    std::fs::write(dir.join("gateway.toml"), config("CARGO_PKG_NAME")).unwrap();
    let gateway = Gateway::new(GatewayConfig::load(&dir.join("gateway.toml")).unwrap()).unwrap();
    let url = serve(gateway).await;
    let http = reqwest::Client::new();
    let call = |path: &str, token: &str| http.post(format!("{url}{path}")).bearer_auth(token).send();
    // The payee route needs mfa: the introspected token has it.
    assert_eq!(
        call("/accounts/1/payees", "opaque-mfa-token")
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = call("/accounts/1/payees", "opaque-unknown").await.unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn a_call_without_a_token_gets_the_realm_and_says_what_is_missing() {
    let w = world("realm", "").await;
    let response = w.call("GET", "/accounts/1/balance", None).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    // RFC 6750 §3.1: no error code without credentials; the realm is the
    // audience unless configured.
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"{AUDIENCE}\", resource_metadata=\"{AUDIENCE}/.well-known/oauth-protected-resource\""
        )
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error_description": "an access token is required" })
    );
    assert_eq!(w.calls(), 0);
}

#[tokio::test]
async fn the_api_describes_itself_and_its_challenges_say_where() {
    let w = world("metadata", "").await;
    // RFC 9728 §3: at the well-known path, to anyone, no token asked.
    let response = w.call("GET", "/.well-known/oauth-protected-resource", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let metadata: Value = response.json().await.unwrap();
    assert_eq!(metadata["resource"], AUDIENCE);
    assert_eq!(metadata["authorization_servers"], json!([ISSUER]));
    assert_eq!(metadata["bearer_methods_supported"], json!(["header"]));
    assert!(
        metadata.get("dpop_signing_alg_values_supported").is_none(),
        "no DPoP here"
    );
    assert_eq!(w.calls(), 0, "answered by the gateway itself");
    // Every challenge names it (RFC 9728 §5.1), the step-up one included.
    let url = format!("{AUDIENCE}/.well-known/oauth-protected-resource");
    let anonymous = w.call("GET", "/accounts/1/balance", None).await;
    let challenge = anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(&format!("resource_metadata=\"{url}\"")),
        "{challenge}"
    );
    let weak = w.issuer.token(PWD, 30);
    let step_up = w.call("POST", "/accounts/1/payees", Some(&weak)).await;
    assert_eq!(step_up.status(), 401);
    let challenge = step_up.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("insufficient_user_authentication"),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!("resource_metadata=\"{url}\"")),
        "{challenge}"
    );
}
