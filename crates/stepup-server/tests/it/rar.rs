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
        &["payments:write", "payees:write"],
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

/// Whether `page` is the approval page of a transaction, showing every
/// field of [`payment`] in words.
fn is_approval_page(page: &crate::flow::Page) -> bool {
    page.status == 200
        && page.body.contains("action=\"/authorize/approve\"")
        && page.body.contains("Payment initiation")
        && page.body.contains("5000.00 EUR")
        && page.body.contains("Ada Lovelace")
}

/// Alice's password, then her current code, on the pages from `page`:
/// the page that follows.
async fn password_and_code(
    b: &Browser,
    s: &TestServer,
    totp: &stepup_core::totp::TotpSecret,
    page: &crate::flow::Page,
) -> crate::flow::Page {
    let page = b
        .submit(
            s,
            "/login/password",
            page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert!(page.is_otp_page(), "{}", page.body);
    let code = totp.code_at(UnixTime(s.clock.0.load(Ordering::SeqCst)));
    b.submit(s, "/login/otp", &page, &[("code", &code)]).await
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
    let approval = b.submit(&s, "/login/otp", &page, &[("code", &code)]).await;
    // Signed in at the level: the transaction is shown in words before
    // anything is issued.
    assert!(is_approval_page(&approval), "{}", approval.body);
    assert!(approval.location.is_none());
    let done = b
        .submit(&s, "/authorize/approve", &approval, &[("decision", "approve")])
        .await;
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
        // Amounts and currencies a resource server would read otherwise
        // than the page shows them, or sum to something harmless: a
        // negative line netting a large one down, an exponent, a currency
        // with a trailing space, two currencies in one approval.
        (
            r#"[{"type": "payment_initiation", "amount": "20000", "currency": "EUR", "creditor": "Eve"}, {"type": "payment_initiation", "amount": "-19999.99", "currency": "EUR", "creditor": "Eve"}]"#,
            "amount must be a plain decimal of 0 or more",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": 1e-7, "currency": "EUR", "creditor": "Eve"}]"#,
            "amount must be a plain decimal of 0 or more",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": "n/a", "currency": "EUR", "creditor": "Eve"}]"#,
            "amount must be a plain decimal of 0 or more",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": "20000", "currency": "EUR", "creditor": "Eve"}, {"type": "payment_initiation", "amount": "0.01", "currency": "EUR ", "creditor": "Eve"}]"#,
            "currency must be an ISO 4217 code",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": "20000", "currency": "EUR", "creditor": "Eve"}, {"type": "payment_initiation", "amount": "0.01", "currency": "USD", "creditor": "Eve"}]"#,
            "every entry with an amount must be in the same currency",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": "79228162514264337593543950335", "currency": "EUR", "creditor": "Eve"}, {"type": "payment_initiation", "amount": "1", "currency": "EUR", "creditor": "Eve"}]"#,
            "add up to more than can be computed exactly",
        ),
        // Shown as one value, read as another: a key twice, and numbers
        // that would not be kept as written.
        (
            r#"[{"type": "payment_initiation", "amount": "1", "currency": "EUR", "creditor": "Bob", "creditor": "Eve"}]"#,
            "not JSON read exactly",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": "1", "currency": "EUR", "creditor": 40817810099910004312}]"#,
            "write the number 40817810099910004312 as a string",
        ),
        (
            r#"[{"type": "payment_initiation", "amount": 2500.50, "currency": "EUR", "creditor": "Bob"}]"#,
            "write the number 2500.50 as a string",
        ),
        // Shown as one account, executed as another: invisible characters
        // (a right-to-left override, a zero-width space) are refused.
        (
            "[{\"type\": \"payment_initiation\", \"amount\": \"1\", \"currency\": \"EUR\", \"creditor\": \"DE8937040044\u{202E}0003102350\"}]",
            "creditor must be",
        ),
        (
            "[{\"type\": \"payment_initiation\", \"amount\": \"1\", \"currency\": \"EUR\", \"creditor\": \"Ada\u{200B} Lovelace\"}]",
            "creditor must be",
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

fn payment_to(creditor: &str) -> String {
    json!([{"type": "payment_initiation", "amount": "5000.00", "currency": "EUR", "creditor": creditor}])
        .to_string()
}

/// Issue 16 §6: a client that can start an authorization request while
/// the user's session is elevated gets no transaction token without the
/// user seeing it: the payment is shown every time, whatever the session's
/// level; declining gives `access_denied`, `prompt=none` gives
/// `interaction_required`, and an approval posted from elsewhere counts
/// for nothing.
#[tokio::test]
async fn an_elevated_session_approves_no_payment_by_itself() {
    let (s, totp) = server().await;
    let b = Browser::new();
    // The user approves one payment at mfa.
    let page = b
        .authorize(&s, &[("authorization_details", &payment()), ("scope", "openid")])
        .await;
    let approval = password_and_code(&b, &s, &totp, &page).await;
    let done = b
        .submit(&s, "/authorize/approve", &approval, &[("decision", "approve")])
        .await;
    assert!(done.redirect_param("code").is_some(), "{}", done.body);

    // A second request in the same browser, for another creditor: the
    // session is at mfa, yet a page, not a code.
    let evil = payment_to("Mallory Ltd");
    let page = b
        .authorize(&s, &[("authorization_details", &evil), ("scope", "openid")])
        .await;
    assert_eq!(page.status, 200, "{:?} {}", page.location, page.body);
    assert!(page.location.is_none(), "no redirect: {:?}", page.location);
    assert!(
        page.body.contains("action=\"/authorize/approve\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("Mallory Ltd"), "{}", page.body);
    // Declined: access_denied.
    let declined = b
        .submit(&s, "/authorize/approve", &page, &[("decision", "decline")])
        .await;
    assert_eq!(declined.redirect_param("error").as_deref(), Some("access_denied"));
    assert!(declined.redirect_param("code").is_none());
    // The request is over: its form cannot approve afterwards.
    let late = b
        .submit(&s, "/authorize/approve", &page, &[("decision", "approve")])
        .await;
    assert_eq!(late.status, 400, "{:?} {}", late.location, late.body);
    assert!(late.body.contains("expired"), "{}", late.body);

    // Without interaction: interaction_required, never a code.
    let silent = b
        .authorize(
            &s,
            &[
                ("authorization_details", &evil),
                ("scope", "openid"),
                ("prompt", "none"),
            ],
        )
        .await;
    assert_eq!(
        silent.redirect_param("error").as_deref(),
        Some("interaction_required"),
        "{:?} {}",
        silent.location,
        silent.body
    );

    // An approval posted by another browser (the attacker's), with the
    // request's identifiers, or from this browser with a wrong CSRF token:
    // refused, and the page stays unapproved.
    let page = b
        .authorize(&s, &[("authorization_details", &evil), ("scope", "openid")])
        .await;
    let other = Browser::new();
    let forged = other
        .submit(&s, "/authorize/approve", &page, &[("decision", "approve")])
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let wrong_csrf = b
        .http
        .post(s.url("/authorize/approve"))
        .form(&[
            ("request", page.hidden("request").as_str()),
            ("csrf", "guess"),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_csrf.status().as_u16(), 403);
    // A form without a decision approves nothing.
    let undecided = b.submit(&s, "/authorize/approve", &page, &[]).await;
    assert_eq!(undecided.status, 400, "{}", undecided.body);

    // The control: the user approves, and the token is for what was shown.
    let done = b
        .submit(&s, "/authorize/approve", &page, &[("decision", "approve")])
        .await;
    let (status, tokens) = exchange(&s, &done.redirect_param("code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    let expected: Value = serde_json::from_str(&evil).unwrap();
    assert_eq!(tokens["authorization_details"], expected);
}

/// Review of issue 16 §6: a scope that moves money (`approve = true`) is
/// not given silently to a client that starts a request while the session
/// is elevated: the page names it, in words; `prompt=none` gets
/// `interaction_required`; the user's approval gives the code (control).
#[tokio::test]
async fn a_scope_to_approve_is_shown_every_time() {
    let (s, totp) = server().await;
    let b = Browser::new();
    // Elevated to mfa by an ordinary step-up.
    let page = b
        .authorize(&s, &[("scope", "openid"), ("acr_values", "urn:stepup:acr:mfa")])
        .await;
    let done = password_and_code(&b, &s, &totp, &page).await;
    assert!(done.redirect_param("code").is_some(), "{}", done.body);
    // The scope that needs approval: a page, not a code.
    let page = b.authorize(&s, &[("scope", "openid payees:write")]).await;
    assert_eq!(page.status, 200, "{:?} {}", page.location, page.body);
    assert!(page.body.contains("Approve this access?"), "{}", page.body);
    assert!(page.body.contains("Add payees"), "{}", page.body);
    let silent = b
        .authorize(&s, &[("scope", "openid payees:write"), ("prompt", "none")])
        .await;
    assert_eq!(
        silent.redirect_param("error").as_deref(),
        Some("interaction_required")
    );
    let done = b
        .submit(&s, "/authorize/approve", &page, &[("decision", "approve")])
        .await;
    let (status, tokens) = exchange(&s, &done.redirect_param("code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(
        tokens["scope"].as_str().unwrap().contains("payees:write"),
        "{tokens}"
    );
    // The approval was for this request's tokens: a refresh drops the scope.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, _, refreshed) = s
        .post(
            "/token",
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", "web"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert!(
        !refreshed["scope"].as_str().unwrap().contains("payees:write"),
        "{refreshed}"
    );
}
