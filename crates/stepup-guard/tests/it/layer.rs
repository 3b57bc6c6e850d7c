//! Every decision branch and every bad-input class through the tower layer.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use stepup_core::challenge::{BearerChallenge, ErrorCode, parse_www_authenticate};

use crate::fixtures::*;

fn challenge(answer: &Answer) -> BearerChallenge {
    let header = answer
        .www_authenticate
        .as_deref()
        .expect("a WWW-Authenticate header");
    let parsed = parse_www_authenticate([header]).unwrap();
    assert_eq!(parsed.len(), 1, "{header}");
    BearerChallenge::from_challenge(&parsed[0]).unwrap()
}

fn assert_invalid_token(answer: &Answer, description: &str) {
    assert_eq!(answer.status, 401, "{}", answer.body);
    let c = challenge(answer);
    assert_eq!(c.error, Some(ErrorCode::InvalidToken));
    assert_eq!(c.realm.as_deref(), Some("bank"));
    assert!(
        c.error_description.as_deref().unwrap_or("").contains(description),
        "{:?} should mention {description:?}",
        c.error_description
    );
    assert_eq!(answer.json()["error"], "invalid_token");
}

#[tokio::test]
async fn trusted_calls_reach_the_handler_with_claims() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let token = issuer.mint(&claims(PWD, 1000, "accounts:read"));
    let a = call(&app, "GET", "/accounts/42/balance", &[&bearer(&token)]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "alice urn:stepup:acr:pwd"));
    assert_eq!(a.www_authenticate, None);
    // Default rule for a route the policy does not name.
    let a = call(&app, "GET", "/accounts/42", &[&bearer(&token)]).await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn weak_acr_gets_the_rfc9470_challenge() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let token = issuer.mint(&claims(PWD, 10, "payments:write"));
    let a = call(&app, "POST", "/accounts/42/payees", &[&bearer(&token)]).await;
    assert_eq!(a.status, 401);
    let c = challenge(&a);
    assert_eq!(c.error, Some(ErrorCode::InsufficientUserAuthentication));
    assert_eq!(c.acr_values.iter().map(|a| a.as_str()).collect::<Vec<_>>(), [MFA]);
    assert_eq!(c.max_age, Some(300));
    assert_eq!(c.realm.as_deref(), Some("bank"));
    assert!(c.error_description.unwrap().contains("add payee"));
    let body = a.json();
    assert_eq!(body["error"], "insufficient_user_authentication");
    assert_eq!(body["acr_values"], MFA);
    assert_eq!(body["max_age"], 300);
}

#[tokio::test]
async fn stronger_acr_satisfies_and_old_authentication_does_not() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let fresh_phr = issuer.mint(&claims(PHR, 30, "payments:write"));
    let a = call(&app, "POST", "/accounts/42/payees", &[&bearer(&fresh_phr)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Fresh enough for payees (300 s) but not for a large transfer (60 s).
    let older = issuer.mint(&claims(PHR, 120, "payments:write"));
    let a = call(&app, "POST", "/accounts/42/payees", &[&bearer(&older)]).await;
    assert_eq!(a.status, 200);
    let a = call(&app, "POST", "/accounts/42/transfers/large", &[&bearer(&older)]).await;
    assert_eq!(a.status, 401);
    let c = challenge(&a);
    assert_eq!(c.error, Some(ErrorCode::InsufficientUserAuthentication));
    assert_eq!(c.max_age, Some(60));
    assert!(c.error_description.unwrap().contains("120 s old"));
}

#[tokio::test]
async fn auth_time_too_old_as_the_clock_moves() {
    let issuer = Issuer::es256("k1");
    let clock = clock();
    let app = app(&guard_for(&issuer, clock.clone()));
    let token = issuer.mint(&claims(MFA, 0, "payments:write"));
    assert_eq!(
        call(&app, "POST", "/accounts/1/payees", &[&bearer(&token)])
            .await
            .status,
        200
    );
    // The verified-token cache must not hide the passing of time.
    clock.0.store(NOW + 301, std::sync::atomic::Ordering::SeqCst);
    let a = call(&app, "POST", "/accounts/1/payees", &[&bearer(&token)]).await;
    assert_eq!(a.status, 401);
    assert_eq!(challenge(&a).max_age, Some(300));
}

#[tokio::test]
async fn missing_scope_is_403_insufficient_scope() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let token = issuer.mint(&claims(PHR, 0, "accounts:read"));
    let a = call(&app, "POST", "/accounts/1/payees", &[&bearer(&token)]).await;
    assert_eq!(a.status, 403);
    let c = challenge(&a);
    assert_eq!(c.error, Some(ErrorCode::InsufficientScope));
    assert_eq!(c.scope.as_deref(), Some("payments:write"));
}

#[tokio::test]
async fn missing_header_gets_a_bare_challenge() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let a = call(&app, "GET", "/accounts/1", &[]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer realm=\"bank\""));
    // Another scheme is not bearer authentication either (RFC 6750 §3.1).
    let a = call(&app, "GET", "/accounts/1", &["Basic YWxhZGRpbjpvcGVuc2VzYW1l"]).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.www_authenticate.as_deref(), Some("Bearer realm=\"bank\""));
}

#[tokio::test]
async fn two_headers_and_malformed_credentials_are_400_invalid_request() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let token = issuer.mint(&claims(PWD, 0, ""));
    for headers in [
        vec![bearer(&token), bearer(&token)],
        vec!["Bearer".to_owned()],
        vec!["Bearer a b".to_owned()],
    ] {
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let a = call(&app, "GET", "/accounts/1", &refs).await;
        assert_eq!(a.status, 400, "{headers:?}");
        assert_eq!(challenge(&a).error, Some(ErrorCode::InvalidRequest));
    }
}

#[tokio::test]
async fn garbage_tokens_are_invalid() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    for garbage in ["abc", "a.b.c", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA", "a.b.c.d.e"] {
        let a = call(&app, "GET", "/accounts/1", &[&bearer(garbage)]).await;
        assert_invalid_token(&a, "");
    }
}

#[tokio::test]
async fn wrong_typ_is_rejected() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let c = claims(PWD, 0, "");
    for typ in [Some("JWT"), None, Some("dpop+jwt")] {
        let token = issuer.mint_with(&c, typ, Some("k1"));
        let a = call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await;
        assert_invalid_token(&a, "signature or header");
    }
    let token = issuer.mint_with(&c, Some("application/AT+JWT"), Some("k1"));
    assert_eq!(
        call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await.status,
        200
    );
}

#[tokio::test]
async fn wrong_alg_is_rejected() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let body = URL_SAFE_NO_PAD.encode(claims(PWD, 0, "").to_string());
    // alg none, and HS256 "signed" with the public key: both refused.
    for header in [
        json!({"alg":"none","typ":"at+jwt","kid":"k1"}),
        json!({"alg":"HS256","typ":"at+jwt","kid":"k1"}),
    ] {
        let head = URL_SAFE_NO_PAD.encode(header.to_string());
        let token = format!("{head}.{body}.{}", URL_SAFE_NO_PAD.encode(b"sig"));
        let a = call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await;
        assert_invalid_token(&a, "signature or header");
        let unsigned = format!("{head}.{body}.");
        let a = call(&app, "GET", "/accounts/1", &[&bearer(&unsigned)]).await;
        assert_invalid_token(&a, "signature or header");
    }
    // An Ed25519 key of the same kid is not the ES256 key the JWKS has.
    let impostor = Issuer::ed25519("k1");
    let token = impostor.mint(&claims(PWD, 0, ""));
    let a = call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn unknown_kid_and_foreign_signatures_are_rejected() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let other = Issuer::es256("k2");
    let a = call(
        &app,
        "GET",
        "/accounts/1",
        &[&bearer(&other.mint(&claims(PWD, 0, "")))],
    )
    .await;
    assert_invalid_token(&a, "unknown key");
    // Same kid, different key: a forgery.
    let forger = Issuer::es256("k1");
    let a = call(
        &app,
        "GET",
        "/accounts/1",
        &[&bearer(&forger.mint(&claims(PWD, 0, "")))],
    )
    .await;
    assert_invalid_token(&a, "signature or header");
}

#[tokio::test]
async fn claim_problems_are_rejected() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let cases = [
        ("exp", json!(NOW - 100), "expired"),
        ("aud", json!("https://other.example"), "audience"),
        ("iss", json!("https://evil.example"), "issuer"),
        ("nbf", json!(NOW + 100), "not yet valid"),
        ("auth_time", json!(NOW + 100), "in the future"),
    ];
    for (claim, value, description) in cases {
        let mut c = claims(PWD, 0, "");
        c[claim] = value;
        let a = call(&app, "GET", "/accounts/1", &[&bearer(&issuer.mint(&c))]).await;
        assert_invalid_token(&a, description);
    }
    let mut c = claims(PWD, 0, "");
    c.as_object_mut().unwrap().remove("jti");
    let a = call(&app, "GET", "/accounts/1", &[&bearer(&issuer.mint(&c))]).await;
    assert_invalid_token(&a, "jti");
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let token = issuer.mint(&claims(PWD, 0, "payments:write"));
    let parts: Vec<&str> = token.split('.').collect();
    let forged_body = URL_SAFE_NO_PAD.encode(claims(PHR, 0, "payments:write").to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_body, parts[2]);
    let a = call(&app, "POST", "/accounts/1/payees", &[&bearer(&forged)]).await;
    assert_invalid_token(&a, "signature or header");
}

#[tokio::test]
async fn dot_segments_are_refused_before_the_app() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let token = issuer.mint(&claims(PWD, 0, ""));
    let a = call(&app, "POST", "/accounts/1/x/../payees", &[&bearer(&token)]).await;
    assert_eq!(a.status, 400);
    assert_eq!(challenge(&a).error, Some(ErrorCode::InvalidRequest));
}

#[tokio::test]
async fn the_cache_never_serves_another_token() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let weak = issuer.mint(&claims(PWD, 0, "payments:write"));
    let strong = issuer.mint(&claims(MFA, 0, "payments:write"));
    assert_eq!(
        call(&app, "POST", "/accounts/1/payees", &[&bearer(&strong)])
            .await
            .status,
        200
    );
    assert_eq!(
        call(&app, "POST", "/accounts/1/payees", &[&bearer(&weak)])
            .await
            .status,
        401
    );
    assert_eq!(
        call(&app, "POST", "/accounts/1/payees", &[&bearer(&strong)])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn expiry_is_enforced_for_cached_tokens() {
    let issuer = Issuer::es256("k1");
    let clock = clock();
    let app = app(&guard_for(&issuer, clock.clone()));
    let mut c = claims(PWD, 0, "");
    c["exp"] = json!(NOW + 20);
    let token = issuer.mint(&c);
    assert_eq!(
        call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await.status,
        200
    );
    clock.0.store(NOW + 20, std::sync::atomic::Ordering::SeqCst);
    // Past exp the cache entry is gone; with the 5 s leeway the token still verifies.
    assert_eq!(
        call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await.status,
        200
    );
    clock.0.store(NOW + 26, std::sync::atomic::Ordering::SeqCst);
    let a = call(&app, "GET", "/accounts/1", &[&bearer(&token)]).await;
    assert_invalid_token(&a, "expired");
}

#[tokio::test]
async fn empty_segments_get_the_rule_of_the_handler_they_reach() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let weak = issuer.mint(&claims(PWD, 0, "payments:write"));
    // axum routes these to /accounts/{id}/... with an empty id: so must the policy.
    for path in ["/accounts//transfers/large", "/accounts//payees"] {
        let a = call(&app, "POST", path, &[&bearer(&weak)]).await;
        assert_eq!(a.status, 401, "{path}: {}", a.body);
        assert_eq!(
            challenge(&a).error,
            Some(ErrorCode::InsufficientUserAuthentication)
        );
    }
    // An encoded unreserved character could make a decoding server see another route.
    let a = call(&app, "POST", "/accounts/1/%70ayees", &[&bearer(&weak)]).await;
    assert_eq!(a.status, 400);
    assert_eq!(challenge(&a).error, Some(ErrorCode::InvalidRequest));
    // A raw backslash, which HTTP libraries accept and WHATWG parsers and
    // IIS read as '/': refused like its encoded form, not judged by the
    // default rule.
    for path in ["/accounts/1\\payees", "/accounts\\1\\payees"] {
        let a = call(&app, "POST", path, &[&bearer(&weak)]).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(challenge(&a).error, Some(ErrorCode::InvalidRequest));
        assert!(a.body.contains("percent-encode it"), "{}", a.body);
    }
}

#[tokio::test]
async fn key_bound_tokens_are_refused_as_bearer_tokens() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    for cnf in [
        json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
        json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
    ] {
        let mut c = claims(PHR, 0, "");
        c["cnf"] = cnf;
        let a = call(&app, "GET", "/accounts/1", &[&bearer(&issuer.mint(&c))]).await;
        assert_invalid_token(&a, "bound to a key");
    }
}
