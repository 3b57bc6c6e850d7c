//! Keys and introspection over real HTTP on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};
use stepup_guard::{
    Guard, HttpFetcher, IntrospectionClient, Introspector, KeySource, TokenVerifier, discover,
};

use crate::fixtures::*;

#[derive(Clone, Default)]
struct AsState {
    jwks: Arc<Mutex<Value>>,
    jwks_fetches: Arc<AtomicUsize>,
    introspections: Arc<AtomicUsize>,
    issuer: Arc<Mutex<String>>,
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn jwks_handler(State(s): State<AsState>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(s.jwks.lock().unwrap().clone())
}

async fn metadata_handler(State(s): State<AsState>) -> Json<Value> {
    let issuer = s.issuer.lock().unwrap().clone();
    Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect"),
    }))
}

/// Active only for token "good-*"; requires client rs / secret "s3cr&t" by Basic auth.
async fn introspect_handler(
    State(s): State<AsState>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Json<Value>, axum::http::StatusCode> {
    s.introspections.fetch_add(1, Ordering::SeqCst);
    let expected = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "rs:s3cr%26t")
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return Err(axum::http::StatusCode::UNAUTHORIZED);
    }
    let token = form
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if token == "good-mfa" {
        return Ok(Json(json!({
            "active": true, "iss": ISSUER, "aud": AUDIENCE, "sub": "bob", "client_id": "cli",
            "scope": "payments:write", "acr": MFA, "auth_time": NOW - 10, "exp": NOW + 600,
        })));
    }
    if token == "good-pwd" {
        return Ok(Json(json!({
            "active": true, "sub": "bob", "scope": "payments:write", "acr": PWD, "aud": [AUDIENCE],
            "auth_time": NOW - 10, "exp": NOW + 600, "token_type": "bearer",
        })));
    }
    if token == "no-audience" {
        return Ok(Json(
            json!({"active": true, "sub": "bob", "acr": PWD, "exp": NOW + 600}),
        ));
    }
    if token == "a-refresh-token" {
        return Ok(Json(json!({
            "active": true, "aud": AUDIENCE, "acr": PWD, "exp": NOW + 600, "token_type": "refresh_token",
        })));
    }
    if token == "other-audience" {
        return Ok(Json(
            json!({"active": true, "aud": "https://other.example", "exp": NOW + 600}),
        ));
    }
    Ok(Json(json!({"active": false})))
}

async fn authorization_server(state: AsState) -> String {
    let router = Router::new()
        .route("/jwks", get(jwks_handler))
        .route("/.well-known/oauth-authorization-server", get(metadata_handler))
        .route("/introspect", post(introspect_handler))
        .with_state(state.clone());
    let url = serve(router).await;
    *state.issuer.lock().unwrap() = url.clone();
    url
}

#[tokio::test]
async fn discovery_then_jwks_then_rotation_with_rate_limited_refetch() {
    let k1 = Issuer::es256("k1");
    let state = AsState::default();
    *state.jwks.lock().unwrap() = k1.jwks_json();
    let url = authorization_server(state.clone()).await;
    let http = HttpFetcher::new().unwrap();

    let meta = discover(&url, &http).await.unwrap();
    assert_eq!(meta.issuer, url);
    let jwks_uri = meta.jwks_uri.unwrap();
    let keys = KeySource::remote(&jwks_uri, http.clone(), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(state.jwks_fetches.load(Ordering::SeqCst), 1);
    let guard = Guard::builder(policy(), jwt_verifier(keys))
        .clock(clock())
        .build();
    let app = app(&guard);

    let token = k1.mint(&claims(PWD, 0, ""));
    assert_eq!(
        call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await.status,
        200
    );
    assert_eq!(
        call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await.status,
        200
    );
    assert_eq!(
        state.jwks_fetches.load(Ordering::SeqCst),
        1,
        "trusted calls cost no round trip"
    );

    // The issuer rotates to k2: the first k2 token triggers one refetch.
    let k2 = Issuer::es256("k2");
    let both = json!({"keys": [k1.key.public_jwk(Some("k1")), k2.key.public_jwk(Some("k2"))]});
    *state.jwks.lock().unwrap() = both;
    tokio::time::sleep(Duration::from_millis(350)).await;
    let t2 = k2.mint(&claims(PWD, 0, ""));
    assert_eq!(
        call(&app, "GET", "/accounts/1", &[&bearer(&t2)]).await.status,
        200
    );
    assert_eq!(state.jwks_fetches.load(Ordering::SeqCst), 2);

    // Right after a refetch, an unknown kid does not refetch again...
    let k3 = Issuer::es256("k3");
    let t3 = k3.mint(&claims(PWD, 99, ""));
    assert_eq!(
        call(&app, "GET", "/accounts/1", &[&bearer(&t3)]).await.status,
        401
    );
    assert_eq!(state.jwks_fetches.load(Ordering::SeqCst), 2);
    // ...and a later flood of unknown kids refetches once per interval.
    tokio::time::sleep(Duration::from_millis(350)).await;
    for i in 0..5 {
        let t3 = k3.mint(&claims(PWD, i, ""));
        assert_eq!(
            call(&app, "GET", "/accounts/1", &[&bearer(&t3)]).await.status,
            401
        );
    }
    assert_eq!(state.jwks_fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn discovery_refuses_an_issuer_mismatch_and_insecure_urls() {
    let state = AsState::default();
    let url = authorization_server(state.clone()).await;
    *state.issuer.lock().unwrap() = "https://evil.example".into();
    let http = HttpFetcher::new().unwrap();
    let err = discover(&url, &http).await.unwrap_err();
    assert!(err.to_string().contains("names issuer"), "{err}");
    let err = discover("http://as.example", &http).await.unwrap_err();
    assert!(err.to_string().contains("only https"), "{err}");
}

fn introspecting_guard(endpoint: String) -> Guard {
    let introspector = Introspector::new(
        endpoint,
        IntrospectionClient::new("rs", stepup_core::ClientSecret::new("s3cr&t")),
        rules(),
        HttpFetcher::new().unwrap(),
    );
    Guard::builder(policy(), TokenVerifier::Introspection(Arc::new(introspector)))
        .clock(clock())
        .build()
}

#[tokio::test]
async fn introspection_decides_and_caches_briefly() {
    let state = AsState::default();
    let url = authorization_server(state.clone()).await;
    let app = app(&introspecting_guard(format!("{url}/introspect")));

    let a = call(&app, "POST", "/accounts/1/payees", &["Bearer good-mfa"]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "bob urn:stepup:acr:mfa"));
    let a = call(&app, "POST", "/accounts/1/payees", &["Bearer good-mfa"]).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        state.introspections.load(Ordering::SeqCst),
        1,
        "second call served from cache"
    );

    let a = call(&app, "POST", "/accounts/1/payees", &["Bearer good-pwd"]).await;
    assert_eq!(a.status, 401);
    assert!(
        a.www_authenticate
            .unwrap()
            .contains("insufficient_user_authentication")
    );

    let a = call(&app, "GET", "/accounts/1", &["Bearer revoked"]).await;
    assert_eq!(a.status, 401);
    assert!(a.www_authenticate.unwrap().contains("not active"));
    for no_good in ["Bearer other-audience", "Bearer no-audience"] {
        let a = call(&app, "GET", "/accounts/1", &[no_good]).await;
        assert_eq!(a.status, 401);
        assert!(a.www_authenticate.unwrap().contains("audience"));
    }
    let a = call(&app, "GET", "/accounts/1", &["Bearer a-refresh-token"]).await;
    assert_eq!(a.status, 401);
    assert!(a.www_authenticate.unwrap().contains("not an access token"));
    // Absurdly long tokens are refused without a call to the server.
    let before = state.introspections.load(Ordering::SeqCst);
    let long = format!(
        "Bearer {}",
        "a".repeat(stepup_guard::MAX_INTROSPECTED_TOKEN_LEN + 1)
    );
    let a = call(&app, "GET", "/accounts/1", &[&long]).await;
    assert_eq!(a.status, 401);
    assert_eq!(state.introspections.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn a_stale_key_set_is_refetched() {
    let k1 = Issuer::es256("k1");
    let state = AsState::default();
    *state.jwks.lock().unwrap() = k1.jwks_json();
    let url = authorization_server(state.clone()).await;
    let keys = KeySource::remote(
        &format!("{url}/jwks"),
        HttpFetcher::new().unwrap(),
        Duration::from_millis(50),
    )
    .await
    .unwrap()
    .with_max_age(Duration::from_millis(200));
    let guard = Guard::builder(policy(), jwt_verifier(keys))
        .clock(clock())
        .cache_capacity(0)
        .build();
    let app = app(&guard);
    let token = k1.mint(&claims(PWD, 0, ""));
    assert_eq!(
        call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await.status,
        200
    );
    assert_eq!(state.jwks_fetches.load(Ordering::SeqCst), 1);
    // The issuer withdraws k1; once the set is stale, the guard notices.
    *state.jwks.lock().unwrap() = Issuer::es256("k2").jwks_json();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let a = call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(state.jwks_fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unreachable_introspection_is_503_not_invalid_token() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let app = app(&introspecting_guard(format!("http://{addr}/introspect")));
    let a = call(&app, "GET", "/accounts/1", &["Bearer good-mfa"]).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.www_authenticate, None);
}

#[tokio::test]
async fn wrong_introspection_credentials_are_503() {
    let state = AsState::default();
    let url = authorization_server(state.clone()).await;
    let introspector = Introspector::new(
        format!("{url}/introspect"),
        IntrospectionClient::new("rs", stepup_core::ClientSecret::new("wrong")),
        rules(),
        HttpFetcher::new().unwrap(),
    );
    let guard = Guard::builder(policy(), TokenVerifier::Introspection(Arc::new(introspector)))
        .clock(clock())
        .build();
    let a = call(&app(&guard), "GET", "/accounts/1", &["Bearer good-mfa"]).await;
    assert_eq!(a.status, 503);
}

#[tokio::test]
async fn from_issuer_discovers_and_verifies() {
    let k1 = Issuer::ed25519("k1");
    let state = AsState::default();
    *state.jwks.lock().unwrap() = k1.jwks_json();
    let url = authorization_server(state.clone()).await;
    let verifier = stepup_guard::JwtVerifier::from_issuer(&url, AUDIENCE, HttpFetcher::new().unwrap())
        .await
        .unwrap();
    let mut c = claims(MFA, 0, "");
    c["iss"] = json!(url);
    let verified = verifier
        .verify(&k1.mint(&c), stepup_core::UnixTime(NOW))
        .await
        .unwrap();
    assert_eq!(verified.acr.as_deref(), Some(MFA));
    assert_eq!(verified.issuer.as_deref(), Some(url.as_str()));
    // A token from the fixed test issuer name is not from this issuer.
    let err = verifier
        .verify(&k1.mint(&claims(MFA, 0, "")), stepup_core::UnixTime(NOW))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("issuer"), "{err}");
}

/// A verifier made before its issuer answers (a proxy in front of its own
/// issuer): tokens are unavailable (503), not invalid, until the keys are
/// fetched; tries are at most once a second; then the first token loads
/// them by itself.
#[tokio::test]
async fn for_issuer_waits_for_an_issuer_that_is_not_up_yet() {
    let k1 = Issuer::ed25519("k1");
    let state = AsState::default();
    *state.jwks.lock().unwrap() = k1.jwks_json();
    // The address is reserved now; the server comes up later on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    *state.issuer.lock().unwrap() = url.clone();
    let verifier = stepup_guard::JwtVerifier::for_issuer(&url, AUDIENCE, HttpFetcher::new().unwrap());
    assert!(!verifier.keys_loaded());
    let mut c = claims(MFA, 0, "");
    c["iss"] = json!(url);
    let token = k1.mint(&c);
    let now = stepup_core::UnixTime(NOW);

    let down = verifier.verify(&token, now).await.unwrap_err();
    assert!(!down.is_token_fault(), "{down}");
    assert!(verifier.load_keys().await.is_err());
    // Too soon to try again: still not the token's fault.
    let soon = verifier.verify(&token, now).await.unwrap_err();
    assert!(!soon.is_token_fault(), "{soon}");
    assert!(soon.to_string().contains("not loaded"), "{soon}");

    let router = Router::new()
        .route("/jwks", get(jwks_handler))
        .route("/.well-known/oauth-authorization-server", get(metadata_handler))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(url.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let verified = verifier.verify(&token, now).await.unwrap();
    assert_eq!(verified.acr.as_deref(), Some(MFA));
    assert!(verifier.keys_loaded());
    assert_eq!(state.jwks_fetches.load(Ordering::SeqCst), 1);
    // Loaded: a token signed by an unknown key is the token's fault again.
    let stranger = Issuer::ed25519("k9").mint(&c);
    assert!(
        verifier
            .verify(&stranger, now)
            .await
            .unwrap_err()
            .is_token_fault()
    );
}
