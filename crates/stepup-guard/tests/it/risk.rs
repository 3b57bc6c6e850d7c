//! Risk signals through the layer: the amount of a JSON body, the
//! country of the client (through trusted proxies only), the device.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use stepup_core::Policy;
use stepup_guard::amount::AmountSource;
use stepup_guard::client_ip::ForwardedHeader;
use stepup_guard::risk::{CountryCode, GeoLookup, GeoPoint, RiskOptions};
use stepup_guard::{Guard, KeySource, VerifiedClaims};
use tower::ServiceExt;

use crate::fixtures::*;

const RISK_POLICY: &str = r#"
levels = [
  { name = "pwd", acr = "urn:stepup:acr:pwd" },
  { name = "mfa", acr = "urn:stepup:acr:mfa" },
  { name = "phr", acr = "urn:stepup:acr:phr" },
]
[default]
acr = ["pwd"]

[[route]]
name = "transfer"
methods = ["POST"]
path = "/accounts/{id}/transfers"
acr = ["mfa"]
max_age = 300

[[route]]
name = "balance"
methods = ["GET"]
path = "/accounts/{id}/balance"
acr = ["pwd"]

[[risk]]
name = "large amount"
when = "amount > 1000 and currency == 'EUR'"
routes = ["transfer"]
require = { acr = ["phr", "mfa"], max_age = 60 }
reason = "Large transfers need you to confirm it is you, just now."

[[risk]]
name = "elsewhere"
when = "country_changed"
require = { acr = ["mfa"], max_age = 300 }
reason = "You seem to be somewhere else: confirm it is you."

[[risk]]
name = "another device"
when = "device_changed"
require = { acr = ["mfa"], max_age = 300 }
reason = "This is not the device you signed in on."

[[risk]]
name = "burst"
when = "request_rate > 20"
require = { acr = ["mfa"], max_age = 300 }
reason = "Unusual activity on your account: confirm it is you."

[[risk]]
name = "travel"
when = "impossible_travel"
require = { acr = ["mfa"], max_age = 300 }
reason = "You could not have travelled that fast: confirm it is you."
"#;

/// A fixed table of addresses.
struct Table(HashMap<IpAddr, (&'static str, (f64, f64))>);

impl GeoLookup for Table {
    fn lookup(&self, ip: IpAddr) -> GeoPoint {
        let found = self.0.get(&ip);
        GeoPoint {
            country: found.and_then(|(c, _)| CountryCode::new(c)),
            coordinates: found.map(|(_, at)| *at),
            ..GeoPoint::default()
        }
    }
}

const PARIS: (f64, f64) = (48.8566, 2.3522);
const SAO_PAULO: (f64, f64) = (-23.5505, -46.6333);

fn geo() -> Arc<dyn GeoLookup> {
    let mut table = HashMap::new();
    table.insert("127.0.0.1".parse().unwrap(), ("FR", PARIS));
    table.insert("203.0.113.5".parse().unwrap(), ("FR", PARIS));
    table.insert("198.51.100.7".parse().unwrap(), ("BR", SAO_PAULO));
    Arc::new(Table(table))
}

async fn echo(claims: VerifiedClaims, body: Bytes) -> String {
    format!(
        "{} {}",
        claims.acr.as_deref().unwrap_or("-"),
        String::from_utf8_lossy(&body)
    )
}

fn app_with(issuer: &Issuer, risk: RiskOptions) -> Router {
    app_at(issuer, risk, clock())
}

fn app_at(issuer: &Issuer, risk: RiskOptions, clock: Arc<TestClock>) -> Router {
    let policy = Arc::new(Policy::from_toml("risk.toml", RISK_POLICY).unwrap());
    let guard = Guard::builder(policy, jwt_verifier(KeySource::fixed(issuer.jwks())))
        .clock(clock)
        .risk(risk)
        .build();
    Router::new()
        .route("/accounts/{id}/transfers", post(echo))
        .route("/accounts/{id}/balance", get(echo))
        .layer(guard.layer())
}

fn options() -> RiskOptions {
    RiskOptions::new()
        .trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()])
        .geo(geo())
        .amount(AmountSource::new("/amount", Some("/currency".into())))
        .device_header(http::HeaderName::from_static("x-device-id"))
}

struct Sent {
    status: u16,
    www_authenticate: Option<String>,
    body: String,
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    token: &str,
    peer: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Sent {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", bearer(token))
        .extension(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 40000)));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    // A body is JSON unless the test says otherwise.
    if !body.is_empty()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("content-type", "application/json");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let www_authenticate = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Sent {
        status,
        www_authenticate,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

/// An mfa token from 120 s ago, issued in France, to device dev-1.
fn token(issuer: &Issuer) -> String {
    token_at(issuer, MFA)
}

/// A token at `acr` from 120 s ago, issued in France, to device dev-1.
fn token_at(issuer: &Issuer, acr: &str) -> String {
    let mut c = claims(acr, 120, "");
    c["auth_country"] = Value::from("FR");
    c["device_id"] = Value::from("dev-1");
    issuer.mint(&c)
}

#[tokio::test]
async fn small_transfers_pass_and_large_ones_are_challenged() {
    let issuer = Issuer::es256("k1");
    let app = app_with(&issuer, options());
    let t = token(&issuer);
    let dev = [("x-device-id", "dev-1")];
    let small = r#"{"amount": 250, "currency": "EUR", "to": "Ada"}"#;
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &t,
        "127.0.0.1",
        &dev,
        small,
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    // The application gets the body the guard read, unchanged.
    assert_eq!(sent.body, format!("{MFA} {small}"));

    let large = r#"{"amount": "5000.00", "currency": "EUR", "to": "Ada"}"#;
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &t,
        "127.0.0.1",
        &dev,
        large,
    )
    .await;
    assert_eq!(sent.status, 401, "{}", sent.body);
    let challenge = sent.www_authenticate.unwrap();
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error_description=\"Large transfers need you to confirm it is you, just now.\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("acr_values=\"urn:stepup:acr:phr urn:stepup:acr:mfa\""),
        "{challenge}"
    );
    assert!(challenge.contains("max_age=\"60\""), "{challenge}");

    // A fresh mfa token gets through.
    let mut fresh = claims(MFA, 30, "");
    fresh["auth_country"] = Value::from("FR");
    fresh["device_id"] = Value::from("dev-1");
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &issuer.mint(&fresh),
        "127.0.0.1",
        &dev,
        large,
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
}

#[tokio::test]
async fn bodies_that_cannot_be_read_are_refused() {
    let issuer = Issuer::es256("k1");
    let app = app_with(&issuer, options());
    let t = token(&issuer);
    let dev = [("x-device-id", "dev-1")];
    // Two amounts: the application might read the other one.
    let twice = r#"{"amount": 1, "amount": 5000, "currency": "EUR"}"#;
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &t,
        "127.0.0.1",
        &dev,
        twice,
    )
    .await;
    assert_eq!(sent.status, 400, "{}", sent.body);
    assert!(sent.body.contains("appears twice"), "{}", sent.body);
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &t,
        "127.0.0.1",
        &dev,
        "{not json",
    )
    .await;
    assert_eq!(sent.status, 400);
    let huge = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(70_000));
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &t,
        "127.0.0.1",
        &dev,
        &huge,
    )
    .await;
    assert_eq!(sent.status, 413, "{}", sent.body);
    assert!(sent.www_authenticate.is_none());
    // A body without an amount: the amount rule cannot fire.
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &t,
        "127.0.0.1",
        &dev,
        r#"{"to": "Ada"}"#,
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
}

#[tokio::test]
async fn another_country_is_challenged_and_spoofed_headers_are_ignored() {
    let issuer = Issuer::es256("k1");
    let app = app_with(&issuer, options());
    // A password token: enough to read, not from elsewhere.
    let t = token_at(&issuer, PWD);
    let dev = [("x-device-id", "dev-1")];
    // From France, directly: same country as the authentication.
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "127.0.0.1", &dev, "").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    // Through our proxy (10.0.0.0/8), from Brazil: challenged.
    let via = [("x-device-id", "dev-1"), ("x-forwarded-for", "198.51.100.7")];
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "10.0.0.2", &via, "").await;
    assert_eq!(sent.status, 401, "{}", sent.body);
    assert!(
        sent.www_authenticate
            .unwrap()
            .contains("You seem to be somewhere else")
    );
    // Through our proxy, from France: fine.
    let via = [("x-device-id", "dev-1"), ("x-forwarded-for", "203.0.113.5")];
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "10.0.0.2", &via, "").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    // Through our proxy, which appends X-Forwarded-For and passes on the
    // Forwarded header the client wrote (nginx's default), from Brazil
    // claiming France: the client's Forwarded is not read.
    let spoof = [
        ("x-device-id", "dev-1"),
        ("forwarded", "for=203.0.113.5"),
        ("x-forwarded-for", "198.51.100.7"),
    ];
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "10.0.0.2", &spoof, "").await;
    assert_eq!(sent.status, 401, "{}", sent.body);
    // The control: proxies configured to write Forwarded are read, and an
    // X-Forwarded-For the client wrote is then the one ignored.
    let rfc7239 = app_with(&issuer, options().forwarded_header(ForwardedHeader::Forwarded));
    let via = [
        ("x-device-id", "dev-1"),
        ("forwarded", "for=203.0.113.5"),
        ("x-forwarded-for", "198.51.100.7"),
    ];
    let sent = send(&rfc7239, "GET", "/accounts/1/balance", &t, "10.0.0.2", &via, "").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let via = [("x-device-id", "dev-1"), ("forwarded", "for=198.51.100.7")];
    let sent = send(&rfc7239, "GET", "/accounts/1/balance", &t, "10.0.0.2", &via, "").await;
    assert_eq!(sent.status, 401, "{}", sent.body);
    // A client writing X-Forwarded-For itself (not through our proxy) is
    // judged by its own address: the header is ignored, both ways.
    let spoof = [("x-device-id", "dev-1"), ("x-forwarded-for", "203.0.113.5")];
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "198.51.100.7", &spoof, "").await;
    assert_eq!(sent.status, 401, "{}", sent.body);
    let spoof = [("x-device-id", "dev-1"), ("x-forwarded-for", "198.51.100.7")];
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "127.0.0.1", &spoof, "").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
}

#[tokio::test]
async fn another_device_is_challenged() {
    let issuer = Issuer::es256("k1");
    let app = app_with(&issuer, options());
    let t = token_at(&issuer, PWD);
    let sent = send(
        &app,
        "GET",
        "/accounts/1/balance",
        &t,
        "127.0.0.1",
        &[("x-device-id", "dev-1")],
        "",
    )
    .await;
    assert_eq!(sent.status, 200);
    let sent = send(
        &app,
        "GET",
        "/accounts/1/balance",
        &t,
        "127.0.0.1",
        &[("x-device-id", "dev-2")],
        "",
    )
    .await;
    assert_eq!(sent.status, 401);
    assert!(
        sent.www_authenticate
            .unwrap()
            .contains("not the device you signed in on")
    );
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "127.0.0.1", &[], "").await;
    assert_eq!(sent.status, 401, "a bound token presented without its device");
    // A token bound to no device: the rule cannot tell, and does not fire.
    let unbound = issuer.mint(&claims(PWD, 120, ""));
    let sent = send(&app, "GET", "/accounts/1/balance", &unbound, "127.0.0.1", &[], "").await;
    assert_eq!(sent.status, 200);
}

#[tokio::test]
async fn without_risk_options_rules_see_only_the_token() {
    let issuer = Issuer::es256("k1");
    let app = app_with(&issuer, RiskOptions::new());
    let t = token(&issuer);
    let large = r#"{"amount": 5000, "currency": "EUR"}"#;
    // No amount source: the body is not read, the rule cannot fire.
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &t,
        "198.51.100.7",
        &[],
        large,
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert_eq!(sent.body, format!("{MFA} {large}"));
}

#[tokio::test]
async fn countries_come_from_a_maxmind_database() {
    let (city, asn) = crate::mmdb::databases();
    let geo = stepup_guard::geoip::MaxMindGeo::open(&city, Some(&asn)).unwrap();
    let issuer = Issuer::es256("k1");
    let app = app_with(
        &issuer,
        RiskOptions::new()
            .trusted_proxies(vec!["10.0.0.0/8".parse().unwrap()])
            .geo(Arc::new(geo)),
    );
    let t = token_at(&issuer, PWD);
    let paris = [("x-forwarded-for", "203.0.113.8")];
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "10.1.2.3", &paris, "").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let sao_paulo = [("x-forwarded-for", "198.51.100.8")];
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "10.1.2.3", &sao_paulo, "").await;
    assert_eq!(sent.status, 401, "{}", sent.body);
    // An address the database does not know: the country is unknown and
    // the rule does not fire (write `missing(country)` to refuse those).
    let nowhere = [("x-forwarded-for", "192.0.2.44")];
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "10.1.2.3", &nowhere, "").await;
    assert_eq!(sent.status, 200, "{}", sent.body);
}

fn with_activity() -> RiskOptions {
    options().activity(Arc::new(stepup_guard::activity::MemoryActivity::new(
        stepup_guard::activity::ActivityOptions::default(),
    )))
}

#[tokio::test]
async fn a_burst_of_requests_is_challenged() {
    let issuer = Issuer::es256("k1");
    let app = app_with(&issuer, with_activity());
    let t = token_at(&issuer, PWD);
    let dev = [("x-device-id", "dev-1")];
    for i in 0..20 {
        let sent = send(&app, "GET", "/accounts/1/balance", &t, "127.0.0.1", &dev, "").await;
        assert_eq!(sent.status, 200, "request {i}");
    }
    // The 21st request within the minute.
    let sent = send(&app, "GET", "/accounts/1/balance", &t, "127.0.0.1", &dev, "").await;
    assert_eq!(sent.status, 401, "{}", sent.body);
    assert!(sent.www_authenticate.unwrap().contains("Unusual activity"));
    // Another subject is not affected.
    let mut other = claims(PWD, 120, "");
    other["sub"] = Value::from("bob");
    let sent = send(
        &app,
        "GET",
        "/accounts/1/balance",
        &issuer.mint(&other),
        "127.0.0.1",
        &[],
        "",
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
}

#[tokio::test]
async fn impossible_travel_is_challenged() {
    let issuer = Issuer::es256("k1");
    let clock = clock();
    let app = app_at(&issuer, with_activity(), clock.clone());
    // No auth_country in this token: only travel can tell.
    let mut c = claims(PWD, 120, "");
    c["device_id"] = Value::from("dev-1");
    let t = issuer.mint(&c);
    let from = |ip: &'static str| [("x-device-id", "dev-1"), ("x-forwarded-for", ip)];
    let sent = send(
        &app,
        "GET",
        "/accounts/1/balance",
        &t,
        "10.0.0.2",
        &from("203.0.113.5"),
        "",
    )
    .await;
    assert_eq!(sent.status, 200, "Paris");
    clock.0.fetch_add(300, std::sync::atomic::Ordering::SeqCst);
    let sent = send(
        &app,
        "GET",
        "/accounts/1/balance",
        &t,
        "10.0.0.2",
        &from("198.51.100.7"),
        "",
    )
    .await;
    assert_eq!(sent.status, 401, "São Paulo five minutes later: {}", sent.body);
    assert!(sent.www_authenticate.unwrap().contains("travelled that fast"));
}

/// A request body that sends `{"amount": 1` and then nothing, ever: a
/// client trickling its body, or gone without closing.
struct Stalled(bool);

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if std::mem::replace(&mut self.0, true) {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"{\"amount\": 1",
        )))))
    }
}

#[tokio::test]
async fn a_body_the_guard_reads_must_arrive_in_time() {
    let issuer = Issuer::es256("k1");
    let policy = Arc::new(Policy::from_toml("risk.toml", RISK_POLICY).unwrap());
    let guard = Guard::builder(policy, jwt_verifier(KeySource::fixed(issuer.jwks())))
        .clock(clock())
        .risk(options())
        .body_read_timeout(std::time::Duration::from_millis(300))
        .build();
    let app = Router::new()
        .route("/accounts/{id}/transfers", post(echo))
        .layer(guard.layer());
    let request = Request::post("/accounts/1/transfers")
        .header("authorization", bearer(&token(&issuer)))
        .header("content-type", "application/json")
        .header("x-device-id", "dev-1")
        .extension(ConnectInfo(SocketAddr::new("127.0.0.1".parse().unwrap(), 40000)))
        .body(Body::new(Stalled(false)))
        .unwrap();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), app.oneshot(request))
        .await
        .expect("the guard waited for the body for ever")
        .unwrap();
    assert_eq!(response.status(), 408);
    assert!(response.headers().get("www-authenticate").is_none());
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        body["error_description"],
        "the request body did not arrive within 300 ms"
    );
}

/// A body without an amount takes amount and currency both from the token:
/// a currency in the body alone does not relabel the token's 20000 EUR as
/// yen and keep the large-amount rule silent.
#[tokio::test]
async fn a_body_currency_without_an_amount_does_not_relabel_the_token_s_amount() {
    let issuer = Issuer::es256("k1");
    let app = app_with(&issuer, options());
    let mut c = claims(MFA, 120, "");
    c["auth_country"] = Value::from("FR");
    c["device_id"] = Value::from("dev-1");
    c["authorization_details"] = serde_json::json!([
        { "type": "payment_initiation", "amount": "20000.00", "currency": "EUR" }
    ]);
    let t = issuer.mint(&c);
    let dev = [("x-device-id", "dev-1")];
    for body in [r#"{"currency": "JPY", "to": "Eve"}"#, r#"{"to": "Eve"}"#] {
        let sent = send(&app, "POST", "/accounts/1/transfers", &t, "127.0.0.1", &dev, body).await;
        assert_eq!(sent.status, 401, "{body}: {}", sent.body);
        let challenge = sent.www_authenticate.unwrap();
        assert!(challenge.contains("max_age=\"60\""), "{body}: {challenge}");
    }
    // The control: the body's own small amount, in its own currency.
    let sent = send(
        &app,
        "POST",
        "/accounts/1/transfers",
        &t,
        "127.0.0.1",
        &dev,
        r#"{"amount": 20, "currency": "EUR", "to": "Eve"}"#,
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
}
