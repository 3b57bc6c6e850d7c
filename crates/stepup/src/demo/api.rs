//! The demo's banking API: an ordinary JSON API, protected two ways: by
//! the guard in the same process ([`router`]), and as a plain upstream
//! behind the gateway ([`upstream_router`]), which reads who is calling
//! from the gateway's `X-Stepup-*` headers. Both serve the same accounts,
//! one per user (token subject), kept in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use stepup_guard::{Guard, VerifiedClaims};

#[derive(Clone)]
pub(crate) struct Bank {
    accounts: Arc<Mutex<HashMap<String, Account>>>,
    /// Who is calling comes from the gateway's headers (upstream mode), not
    /// from the in-process guard.
    behind_gateway: bool,
}

/// Who is calling, as the guard verified it.
pub(crate) struct Caller {
    subject: String,
    acr: Option<String>,
    dpop_bound: bool,
}

impl FromRequestParts<Bank> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut http::request::Parts, bank: &Bank) -> Result<Self, Response> {
        if !bank.behind_gateway {
            let claims = VerifiedClaims::from_request_parts(parts, bank).await?;
            return Ok(Caller {
                subject: claims.subject.clone().unwrap_or_default(),
                acr: claims.acr.clone(),
                dpop_bound: claims.bound_jkt().is_some(),
            });
        }
        // Only the gateway reaches this listener, and it drops any
        // X-Stepup-* header a client sends before setting its own.
        let header = |name: &http::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let Some(subject) = header(&stepup_gateway::SUBJECT) else {
            let message = "no verified identity from the gateway";
            return Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": "unauthorized", "error_description": message})),
            )
                .into_response());
        };
        Ok(Caller {
            subject,
            acr: header(&stepup_gateway::ACR),
            dpop_bound: header(&stepup_gateway::DPOP_JKT).is_some(),
        })
    }
}

#[derive(Clone)]
struct Account {
    balance_cents: i64,
    iban: String,
    payees: Vec<Value>,
    transactions: Vec<Value>,
}

impl Default for Account {
    fn default() -> Self {
        Self {
            balance_cents: 1_254_300,
            iban: "DE89 3704 0044 0532 0130 00".to_owned(),
            payees: Vec::new(),
            transactions: vec![
                json!({"date": "2026-11-20", "description": "Salary", "amount": "3200.00"}),
                json!({"date": "2026-11-22", "description": "Rent", "amount": "-1150.00"}),
                json!({"date": "2026-11-24", "description": "Groceries", "amount": "-86.40"}),
            ],
        }
    }
}

impl Bank {
    /// A bank with no accounts yet.
    pub(crate) fn new() -> Self {
        Self {
            accounts: Arc::default(),
            behind_gateway: false,
        }
    }

    fn with_account<T>(&self, caller: &Caller, f: impl FnOnce(&mut Account) -> T) -> T {
        let subject = caller.subject.clone();
        let mut accounts = match self.accounts.lock() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(accounts.entry(subject).or_default())
    }
}

/// The API's OpenAPI description, checked against the policy by
/// `stepup policy check` (in CI).
pub(crate) const OPENAPI: &str = include_str!("../../../../policies/bank-openapi.json");

async fn openapi() -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The API's routes, all behind `guard`; its description, `/openapi.json`,
/// for anyone.
pub(crate) fn router(bank: Bank, guard: Guard) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .merge(
            routes(Bank {
                behind_gateway: false,
                ..bank
            })
            .layer(guard.layer()),
        )
        .layer(stepup_guard::limits::HeaderLimitLayer::default())
}

/// The same API as a plain upstream for the gateway: it trusts the
/// gateway's identity headers, so it must be reachable only through it.
pub(crate) fn upstream_router(bank: Bank) -> Router {
    routes(Bank {
        behind_gateway: true,
        ..bank
    })
}

fn routes(bank: Bank) -> Router {
    Router::new()
        .route("/accounts/{id}/balance", get(balance))
        .route("/accounts/{id}/transactions", get(transactions))
        .route("/accounts/{id}/statements", get(statements))
        .route("/accounts/{id}/payees", post(add_payee))
        .route(
            "/accounts/{id}/payment-details",
            put(payment_details).patch(payment_details),
        )
        .route("/accounts/{id}/transfers", post(transfer))
        .route("/accounts/{id}/transfers/large", post(transfer))
        .with_state(bank)
}

fn euros(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

async fn balance(State(bank): State<Bank>, caller: Caller, Path(id): Path<String>) -> Json<Value> {
    let cents = bank.with_account(&caller, |a| a.balance_cents);
    Json(json!({
        "account": id, "balance": euros(cents), "currency": "EUR", "acr": caller.acr,
        "dpop_bound": caller.dpop_bound,
    }))
}

async fn transactions(State(bank): State<Bank>, caller: Caller, Path(id): Path<String>) -> Json<Value> {
    let list = bank.with_account(&caller, |a| a.transactions.clone());
    Json(json!({"account": id, "transactions": list}))
}

async fn statements(State(bank): State<Bank>, caller: Caller, Path(id): Path<String>) -> Json<Value> {
    let (iban, list) = bank.with_account(&caller, |a| (a.iban.clone(), a.transactions.clone()));
    Json(json!({"account": id, "iban": iban, "statement": list, "acr": caller.acr}))
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_request", "error_description": message})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Payee {
    name: String,
    iban: String,
}

fn valid_iban(iban: &str) -> bool {
    let compact: String = iban.chars().filter(|c| !c.is_whitespace()).collect();
    (15..=34).contains(&compact.len()) && compact.chars().all(|c| c.is_ascii_alphanumeric())
}

async fn add_payee(
    State(bank): State<Bank>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<Payee>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(payee)) = body else {
        return bad_request("expected {\"name\": …, \"iban\": …}");
    };
    if payee.name.trim().is_empty() || payee.name.len() > 70 || !valid_iban(&payee.iban) {
        return bad_request("a payee needs a name (at most 70 characters) and a valid IBAN");
    }
    let entry = json!({"name": payee.name.trim(), "iban": payee.iban});
    let count = bank.with_account(&caller, |a| {
        a.payees.push(entry.clone());
        a.payees.len()
    });
    (
        StatusCode::CREATED,
        Json(json!({"account": id, "added": entry, "payees": count, "acr": caller.acr})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PaymentDetails {
    iban: String,
}

async fn payment_details(
    State(bank): State<Bank>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<PaymentDetails>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(details)) = body else {
        return bad_request("expected {\"iban\": …}");
    };
    if !valid_iban(&details.iban) {
        return bad_request("not a valid IBAN");
    }
    bank.with_account(&caller, |a| a.iban = details.iban.clone());
    Json(json!({"account": id, "iban": details.iban, "acr": caller.acr})).into_response()
}

/// A transfer. Its amount is read by the guard too: the policy's "large
/// amount" risk rule asks for a recent second factor above 1000 EUR.
struct Transfer {
    /// Whole cents.
    cents: i64,
    currency: String,
    to: String,
}

impl Transfer {
    /// `{"amount": …, "currency": …, "to": …}`, the amount read exactly as
    /// the guard reads it (never through a float), in whole cents, positive
    /// and under a billion; the currency EUR by default.
    fn read(body: &[u8]) -> Option<Transfer> {
        let body = stepup_core::json::Json::from_slice(body).ok()?;
        let amount = body.get("amount")?.amount()?.ok()?;
        let hundred = stepup_core::amount::Decimal::ONE_HUNDRED;
        let cents = amount.checked_mul(hundred)?;
        let whole = cents.fract().is_zero() && cents.is_sign_positive() && !cents.is_zero();
        let cents = i64::try_from(cents)
            .ok()
            .filter(|c| whole && *c < 100_000_000_000)?;
        let currency = match body.get("currency") {
            None => "EUR".to_owned(),
            Some(c) => c.as_str()?.to_owned(),
        };
        let to = body.get("to")?.as_str()?.to_owned();
        Some(Transfer { cents, currency, to })
    }
}

async fn transfer(
    State(bank): State<Bank>,
    caller: Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(transfer) = Transfer::read(&body) else {
        return bad_request(
            "expected {\"amount\": …, \"to\": …}: a positive amount in whole cents, under a billion",
        );
    };
    if transfer.to.trim().is_empty() || transfer.currency != "EUR" {
        return bad_request("a transfer needs a positive amount in EUR and a recipient");
    }
    let cents = transfer.cents;
    let balance = bank.with_account(&caller, |a| {
        a.balance_cents -= cents;
        a.transactions.push(json!({
            "date": "today", "description": format!("Transfer to {}", transfer.to.trim()), "amount": format!("-{}", euros(cents))
        }));
        a.balance_cents
    });
    Json(json!({"account": id, "sent": euros(cents), "to": transfer.to.trim(), "balance": euros(balance), "acr": caller.acr}))
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use stepup_core::{ClaimsRules, ClientSecret, Clock, SystemClock};
    use stepup_guard::{HttpFetcher, IntrospectionClient, Introspector, TokenVerifier};

    use super::*;

    /// An API whose guard asks a stub introspection endpoint, which says
    /// every token is `mfa` with `payments:write`, proven `age` seconds ago.
    async fn api_with_mfa_proven(age: i64) -> String {
        let now = SystemClock.now().seconds();
        let introspection = Router::new().route(
            "/introspect",
            post(move || async move {
                Json(json!({
                    "active": true, "iss": "https://as.example", "aud": "https://bank.example",
                    "sub": "u1", "scope": "accounts:read payments:write",
                    "acr": "urn:stepup:acr:mfa", "auth_time": now - age, "exp": now + 300,
                }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/introspect", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, introspection).await.unwrap() });
        let introspector = Introspector::new(
            endpoint,
            IntrospectionClient::new("bank", ClientSecret::new("secret")),
            ClaimsRules {
                issuer: "https://as.example".into(),
                audience: "https://bank.example".into(),
                leeway_seconds: 0,
            },
            HttpFetcher::new().unwrap(),
        );
        let policy = stepup_core::Policy::from_toml("bank.toml", super::super::POLICY).unwrap();
        let guard = Guard::builder(
            Arc::new(policy),
            TokenVerifier::Introspection(Arc::new(introspector)),
        )
        .risk(super::super::risk_options())
        .build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(Bank::new(), guard)).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn the_description_is_served_to_anyone_and_describes_every_route() {
        let api = api_with_mfa_proven(30).await;
        let response = reqwest::get(format!("{api}/openapi.json")).await.unwrap();
        assert_eq!(response.status(), 200);
        let served = response.text().await.unwrap();
        let spec = stepup_check::ApiSpec::parse(&served).unwrap();
        let mut described: Vec<String> = spec.operations.iter().map(|o| o.label()).collect();
        described.sort();
        assert_eq!(
            described,
            [
                "GET /accounts/{id}/balance",
                "GET /accounts/{id}/statements",
                "GET /accounts/{id}/transactions",
                "PATCH /accounts/{id}/payment-details",
                "POST /accounts/{id}/payees",
                "POST /accounts/{id}/transfers",
                "POST /accounts/{id}/transfers/large",
                "PUT /accounts/{id}/payment-details",
            ]
        );
        // Everything else still needs a token.
        let response = reqwest::get(format!("{api}/accounts/42/balance")).await.unwrap();
        assert_eq!(response.status(), 401);
    }

    async fn transfer(api: &str, amount: f64) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{api}/accounts/42/transfers"))
            .bearer_auth("opaque-token")
            .json(&json!({"amount": amount, "currency": "EUR", "to": "Ada"}))
            .send()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_large_transfer_needs_a_second_factor_proven_within_a_minute() {
        // mfa proven two minutes ago: enough for 250 EUR, not for 5000.
        let api = api_with_mfa_proven(120).await;
        let small = transfer(&api, 250.0).await;
        assert_eq!(small.status(), 200);
        let large = transfer(&api, 5000.0).await;
        assert_eq!(large.status(), 401);
        let challenge = large.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(
            challenge.contains("error=\"insufficient_user_authentication\""),
            "{challenge}"
        );
        assert!(
            challenge.contains("acr_values=\"urn:stepup:acr:phr urn:stepup:acr:mfa\""),
            "{challenge}"
        );
        assert!(challenge.contains("max_age=\"60\""), "{challenge}");
        assert!(
            challenge.contains("Large transfers need you to confirm it is you, just now."),
            "the risk rule's reason: {challenge}"
        );
        // Nothing was sent: the balance only lost the small transfer.
        let body: Value = large.json().await.unwrap();
        assert_eq!(body["error"], "insufficient_user_authentication");

        // Proven 30 seconds ago: the large transfer goes through.
        let api = api_with_mfa_proven(30).await;
        let large = transfer(&api, 5000.0).await;
        assert_eq!(large.status(), 200);
        let body: Value = large.json().await.unwrap();
        assert_eq!(body["sent"], "5000.00");
    }

    #[test]
    fn ibans_and_amounts_are_checked() {
        assert!(valid_iban("DE89 3704 0044 0532 0130 00"));
        assert!(!valid_iban("DE89"));
        assert!(!valid_iban("DE89 3704 0044 0532 0130 00; DROP"));
        assert_eq!(euros(1_254_300), "12543.00");
        assert_eq!(euros(-5), "-0.05");
        assert_eq!(euros(-12_345), "-123.45");
    }
}
