//! Transaction-bound tokens through the layer (RFC 9396): the call must be
//! the approved transaction; the token is short-lived and used once.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use serde_json::{Value, json};
use stepup_core::Policy;
use stepup_guard::dpop::MemoryReplayCache;
use stepup_guard::transaction::{TransactionOptions, TransactionRule};
use stepup_guard::{Guard, KeySource, VerifiedClaims};

use crate::fixtures::*;

const TXN_POLICY: &str = r#"
levels = [
  { name = "pwd", acr = "urn:stepup:acr:pwd" },
  { name = "mfa", acr = "urn:stepup:acr:mfa" },
]
[default]
acr = ["pwd"]

[[route]]
name = "transfer"
methods = ["POST"]
path = "/accounts/{id}/transfers"
acr = ["mfa"]
"#;

async fn echo(claims: VerifiedClaims, body: Bytes) -> String {
    format!(
        "{} {}",
        claims.acr.as_deref().unwrap_or("-"),
        String::from_utf8_lossy(&body)
    )
}

fn txn_app(issuer: &Issuer) -> Router {
    let rule = TransactionRule {
        route: "transfer".into(),
        details_type: "payment_initiation".into(),
        fields: vec![
            ("amount".into(), "/amount".into()),
            ("currency".into(), "/currency".into()),
            ("creditor".into(), "/to".into()),
        ],
        amount_fields: vec!["amount".into()],
        max_token_seconds: 300,
    };
    let guard = Guard::builder(
        Arc::new(Policy::from_toml("txn.toml", TXN_POLICY).unwrap()),
        jwt_verifier(KeySource::fixed(issuer.jwks())),
    )
    .clock(clock())
    .transactions(TransactionOptions::new(
        vec![rule],
        Arc::new(MemoryReplayCache::new(1000)),
    ))
    .build();
    Router::new()
        .route("/accounts/{id}/transfers", post(echo))
        .route("/accounts/{id}/balance", get(echo))
        .layer(guard.layer())
}

fn transaction_token(issuer: &Issuer, jti: &str, lifetime: i64, details: Option<Value>) -> String {
    let mut c = claims(MFA, 10, "");
    c["jti"] = Value::from(jti);
    c["exp"] = Value::from(NOW + lifetime);
    if let Some(d) = details {
        c["authorization_details"] = d;
    }
    issuer.mint(&c)
}

fn to_ada() -> Value {
    json!([{"type": "payment_initiation", "amount": "5000.00", "currency": "EUR", "creditor": "Ada"}])
}

async fn transfer(app: &Router, token: &str, body: Value) -> Answer {
    transfer_as(app, token, "application/json", &body.to_string()).await
}

/// A transfer whose body is `body`, declared as `content_type`.
async fn transfer_as(app: &Router, token: &str, content_type: &str, body: &str) -> Answer {
    use http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = Request::builder()
        .method("POST")
        .uri("/accounts/1/transfers")
        .header("authorization", bearer(token))
        .header("content-type", content_type)
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        www_authenticate,
        dpop_nonce: None,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

#[tokio::test]
async fn only_the_approved_transaction_passes_and_only_once() {
    let issuer = Issuer::es256("k1");
    let app = txn_app(&issuer);
    let token = transaction_token(&issuer, "txn-1", 120, Some(to_ada()));
    // Another creditor: refused, and the token is not used up by it.
    let a = transfer(
        &app,
        &token,
        json!({"amount": 5000, "currency": "EUR", "to": "Mallory"}),
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let c = a.www_authenticate.unwrap();
    assert!(
        c.contains("insufficient_user_authentication") && c.contains("creditor differs"),
        "{c}"
    );
    let a = transfer(
        &app,
        &token,
        json!({"amount": 5001, "currency": "EUR", "to": "Ada"}),
    )
    .await;
    assert!(a.www_authenticate.unwrap().contains("amount differs"));
    // The approved one passes, the body reaching the application unchanged.
    let body = json!({"amount": 5000, "currency": "EUR", "to": "Ada"});
    let a = transfer(&app, &token, body.clone()).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, format!("{MFA} {body}"));
    // Once.
    let a = transfer(&app, &token, body).await;
    assert_eq!(a.status, 401);
    assert!(a.www_authenticate.unwrap().contains("already used"));
}

#[tokio::test]
async fn a_near_identical_creditor_account_is_another_creditor() {
    let issuer = Issuer::es256("k1");
    let app = txn_app(&issuer);
    let approved = json!([{
        "type": "payment_initiation", "amount": "5000.00", "currency": "EUR",
        "creditor": "40817810099910004312"
    }]);
    let token = transaction_token(&issuer, "txn-near", 120, Some(approved));
    // As floats, these account numbers (and 0001234 and 1234) are equal.
    for other in ["40817810099910004399", "040817810099910004312"] {
        let a = transfer(
            &app,
            &token,
            json!({"amount": 5000, "currency": "EUR", "to": other}),
        )
        .await;
        assert_eq!(a.status, 401, "{other}: {}", a.body);
        assert!(
            a.www_authenticate.unwrap().contains("creditor differs"),
            "{other}"
        );
    }
    // The control: the very account, with the amount written another way.
    let a = transfer(
        &app,
        &token,
        json!({"amount": "5000", "currency": "EUR", "to": "40817810099910004312"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

/// Review of issue 16: the guard judges the body only as the JSON it says
/// it is. The same bytes declared as a form (which the application would
/// read as `amount=99999&to=Mallory`), or compressed, or a body whose keys
/// differ only in case (which a case-blind reader takes as one), are
/// refused; the control passes.
#[tokio::test]
async fn a_body_read_two_ways_is_refused() {
    let issuer = Issuer::es256("k1");
    let app = txn_app(&issuer);
    let token = transaction_token(&issuer, "txn-two-ways", 120, Some(to_ada()));
    let body = r#"{"amount":5000,"currency":"EUR","to":"Ada","x":"&amount=99999&to=Mallory&"}"#;
    for content_type in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/json; charset=latin1",
        "multipart/form-data; boundary=x",
    ] {
        let a = transfer_as(&app, &token, content_type, body).await;
        assert_eq!(a.status, 415, "{content_type}: {}", a.body);
    }
    let a = transfer_as(
        &app,
        &token,
        "application/json",
        r#"{"amount":5000,"currency":"EUR","to":"Ada","To":"Mallory"}"#,
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    // The control: the same transfer, declared as JSON.
    let a = transfer_as(
        &app,
        &token,
        "application/json; charset=utf-8",
        r#"{"amount":5000,"currency":"EUR","to":"Ada"}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn tokens_without_the_transaction_or_living_long_are_refused() {
    let issuer = Issuer::es256("k1");
    let app = txn_app(&issuer);
    let body = json!({"amount": 5000, "currency": "EUR", "to": "Ada"});
    let plain = transaction_token(&issuer, "plain", 120, None);
    let a = transfer(&app, &plain, body.clone()).await;
    assert_eq!(a.status, 401);
    assert!(
        a.www_authenticate
            .unwrap()
            .contains("approved for this transaction")
    );
    let long = transaction_token(&issuer, "long", 600, Some(to_ada()));
    let a = transfer(&app, &long, body).await;
    assert_eq!(a.status, 401);
    assert!(a.www_authenticate.unwrap().contains("short-lived"));
    // Other routes are not transaction-bound.
    let a = call(&app, "GET", "/accounts/1/balance", &[&bearer(&plain)]).await;
    assert_eq!(a.status, 200, "{}", a.body);
}
