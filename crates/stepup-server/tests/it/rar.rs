//! Transactions approved with `authorization_details` (RFC 9396): checked
//! against the configured types, shown on the sign-in page, approved at
//! the level the type needs, in a short-lived token without refresh.

use std::sync::atomic::Ordering;

use ring::rand::SystemRandom;
use serde_json::{Value, json};
use stepup_core::UnixTime;

use crate::fixtures::*;
use crate::flow::{Browser, PASSWORD, exchange, jwt_claims};

const TYPES: &str = r#"
[authorization_details.payment_initiation]
fields = ["amount", "currency", "creditor"]
level = "mfa"
max_age = 60
token_seconds = 90
"#;

async fn server() -> (TestServer, stepup_core::totp::TotpSecret) {
    let s = start_with(Backend::Sqlite, TYPES, None).await;
    s.register(
        "web",
        stepup_server::client::AuthMethod::None,
        &["authorization_code", "refresh_token"],
        &["payments:write"],
    )
    .await;
    let rng = SystemRandom::new();
    stepup_server::users::add_user(&s.state.store, "alice", PASSWORD, NOW, &rng)
        .await
        .unwrap();
    let totp = stepup_server::users::enroll_totp(&s.state.store, "alice", &rng)
        .await
        .unwrap();
    (s, totp)
}

fn payment() -> String {
    json!([{"type": "payment_initiation", "amount": "5000.00", "currency": "EUR", "creditor": "Ada Lovelace"}])
        .to_string()
}

#[tokio::test]
async fn a_transaction_is_shown_approved_at_its_level_and_its_token_is_short() {
    let (s, totp) = server().await;
    let b = Browser::new();
    let details = payment();
    let page = b
        .authorize(&s, &[("authorization_details", &details), ("scope", "openid")])
        .await;
    assert!(page.is_password_page(), "{}", page.body);
    assert!(
        page.body
            .contains("Approve: payment_initiation (amount 5000.00, currency EUR, creditor Ada Lovelace)."),
        "{}",
        page.body
    );
    let page = b
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    // The type needs mfa: the code is asked too.
    assert!(page.is_otp_page(), "{}", page.body);
    let code = totp.code_at(UnixTime(s.clock.0.load(Ordering::SeqCst)));
    let done = b.submit(&s, "/login/otp", &page, &[("code", &code)]).await;
    let (status, tokens) = exchange(&s, &done.redirect_param("code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    let expected: Value = serde_json::from_str(&details).unwrap();
    assert_eq!(tokens["authorization_details"], expected);
    assert_eq!(tokens["expires_in"], 90);
    assert!(
        tokens.get("refresh_token").is_none(),
        "a transaction token is not refreshed: {tokens}"
    );
    let at = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(at["authorization_details"], expected);
    assert_eq!(at["acr"], "urn:stepup:acr:mfa");
    let (_, _, meta) = s.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        meta["authorization_details_types_supported"],
        json!(["payment_initiation"])
    );
}

#[tokio::test]
async fn malformed_or_unknown_details_are_refused() {
    let (s, _) = server().await;
    let b = Browser::new();
    for (details, why) in [
        ("not json", "not JSON"),
        ("{}", "array"),
        ("[]", "array"),
        (
            r#"[{"type": "wire", "amount": "1"}]"#,
            "unknown authorization_details type",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": "1", "currency": "EUR"}]"#,
            "creditor must be",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": "1", "currency": "EUR", "creditor": "x", "iban": "y"}]"#,
            "unknown field",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": {"v": 1}, "currency": "EUR", "creditor": "x"}]"#,
            "amount must be",
        ),
    ] {
        let page = b
            .authorize(&s, &[("authorization_details", details), ("scope", "openid")])
            .await;
        assert_eq!(
            page.redirect_param("error").as_deref(),
            Some("invalid_authorization_details"),
            "{details}"
        );
        let description = page.redirect_param("error_description").unwrap();
        assert!(description.contains(why), "{details}: {description}");
    }
}
