//! The country of the authentication in access tokens (`auth_country`):
//! from the client's address, through trusted proxies only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use stepup_guard::risk::{CountryCode, GeoLookup, GeoPoint};

use crate::fixtures::*;
use crate::flow::{Browser, PASSWORD, exchange, jwt_claims};

struct Table(HashMap<IpAddr, &'static str>);

impl GeoLookup for Table {
    fn lookup(&self, ip: IpAddr) -> GeoPoint {
        GeoPoint {
            country: self.0.get(&ip).and_then(|c| CountryCode::new(c)),
            ..GeoPoint::default()
        }
    }
}

fn geo() -> Arc<dyn GeoLookup> {
    let mut table = HashMap::new();
    table.insert("127.0.0.1".parse().unwrap(), "FR");
    table.insert("198.51.100.7".parse().unwrap(), "BR");
    table.insert("203.0.113.5".parse().unwrap(), "FR");
    Arc::new(Table(table))
}

async fn sign_in(s: &TestServer, forwarded_for: Option<&str>) -> serde_json::Value {
    let headers: Vec<(&str, &str)> = forwarded_for
        .map(|ip| ("x-forwarded-for", ip))
        .into_iter()
        .collect();
    sign_in_with(s, &headers).await
}

async fn sign_in_with(s: &TestServer, headers: &[(&str, &str)]) -> serde_json::Value {
    let b = Browser::new();
    let mut page = b.authorize(s, &[]).await;
    assert!(page.is_password_page(), "{}", page.body);
    let form = vec![
        ("request".to_owned(), page.hidden("request")),
        ("csrf".to_owned(), page.hidden("csrf")),
        ("username".to_owned(), "alice".to_owned()),
        ("password".to_owned(), PASSWORD.to_owned()),
    ];
    let mut request = b.http.post(s.url("/login/password")).form(&form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    page = Browser::page(request.send().await.unwrap()).await;
    let (status, tokens) = exchange(s, &page.redirect_param("code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    jwt_claims(tokens["access_token"].as_str().unwrap())
}

async fn server(trusted: &str) -> TestServer {
    server_with(&format!("trusted_proxies = [{trusted}]")).await
}

async fn server_with(risk: &str) -> TestServer {
    let s = start_with(Backend::Sqlite, &format!("\n[risk]\n{risk}\n"), Some(geo())).await;
    s.register(
        "web",
        stepup_server::client::AuthMethod::None,
        &["authorization_code"],
        &["profile"],
    )
    .await;
    stepup_server::users::add_user(
        &s.state.store,
        "alice",
        PASSWORD,
        NOW,
        &ring::rand::SystemRandom::new(),
    )
    .await
    .unwrap();
    s
}

#[tokio::test]
async fn tokens_say_where_the_user_authenticated() {
    let s = server("").await;
    assert_eq!(sign_in(&s, None).await["auth_country"], "FR");
    // Not through a trusted proxy: the header is the client's own words.
    assert_eq!(sign_in(&s, Some("198.51.100.7")).await["auth_country"], "FR");

    let behind_proxy = server("\"127.0.0.1\"").await;
    assert_eq!(
        sign_in(&behind_proxy, Some("198.51.100.7")).await["auth_country"],
        "BR"
    );
    // An address the database does not know: no claim.
    let claims = sign_in(&behind_proxy, Some("192.0.2.1")).await;
    assert!(claims.get("auth_country").is_none(), "{claims}");
}

#[tokio::test]
async fn a_sign_in_from_a_new_country_is_a_security_event() {
    let behind_proxy = server("\"127.0.0.1\"").await;
    let alice = behind_proxy
        .state
        .store
        .user_by_username("alice")
        .await
        .unwrap()
        .unwrap();
    let events = || async {
        behind_proxy
            .state
            .store
            .events_of(&alice.id, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.kind, e.detail, e.client_address))
            .collect::<Vec<_>>()
    };
    // The first country of all is no news, nor is it again.
    sign_in(&behind_proxy, Some("203.0.113.5")).await;
    sign_in(&behind_proxy, Some("203.0.113.5")).await;
    assert!(events().await.is_empty());
    // Brazil is.
    sign_in(&behind_proxy, Some("198.51.100.7")).await;
    assert_eq!(
        events().await,
        [(
            "new_country".to_owned(),
            "BR".to_owned(),
            Some("198.51.100.7".to_owned())
        )]
    );
    sign_in(&behind_proxy, Some("198.51.100.7")).await;
    sign_in(&behind_proxy, Some("203.0.113.5")).await;
    assert_eq!(events().await.len(), 1, "known countries, both");
}

#[tokio::test]
async fn a_forwarded_header_the_proxy_passes_on_is_not_believed() {
    // The proxy (nginx by default) appends the client's address to
    // X-Forwarded-For and passes on the Forwarded header the client wrote,
    // claiming France from Brazil.
    let spoofed = [
        ("forwarded", "for=203.0.113.5"),
        ("x-forwarded-for", "198.51.100.7"),
    ];
    let behind_proxy = server("\"127.0.0.1\"").await;
    assert_eq!(sign_in_with(&behind_proxy, &spoofed).await["auth_country"], "BR");
    // The control: proxies that write Forwarded are believed, and an
    // X-Forwarded-For is then the client's.
    let rfc7239 = server_with("trusted_proxies = [\"127.0.0.1\"]\nforwarded_header = \"forwarded\"").await;
    assert_eq!(sign_in_with(&rfc7239, &spoofed).await["auth_country"], "FR");
}

#[test]
fn forwarded_header_is_checked_at_load() {
    let source = format!(
        "{}\n[risk]\ntrusted_proxies = [\"10.0.0.0/8\"]\nforwarded_header = \"x-real-ip\"\n",
        config_toml("https://as.example", "sqlite::memory:")
    );
    let e = stepup_server::Config::from_toml("t.toml", &source)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown variant `x-real-ip`, expected `x-forwarded-for` or `forwarded`"),
        "{e}"
    );
    assert!(e.contains("line"), "where: {e}");
}

#[test]
fn trusted_proxies_are_checked_at_load() {
    let source = format!(
        "{}\n[risk]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
        config_toml("https://as.example", "sqlite::memory:")
    );
    let e = stepup_server::Config::from_toml("t.toml", &source)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("risk.trusted_proxies: \"10.0.0.0/33\" is not an IP network"),
        "{e}"
    );
}

#[tokio::test]
async fn tokens_carry_the_device_the_client_named() {
    let s = server("").await;
    let b = Browser::new();
    let page = b.authorize(&s, &[("device_id", "laptop-7f3a")]).await;
    let done = b
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    let (_, tokens) = exchange(&s, &done.redirect_param("code").unwrap()).await;
    assert_eq!(
        jwt_claims(tokens["access_token"].as_str().unwrap())["device_id"],
        "laptop-7f3a"
    );
    // Without one, no claim; a malformed one is refused at the client.
    let long = "x".repeat(129);
    for bad in ["two words", "", long.as_str()] {
        let page = b.authorize(&s, &[("device_id", bad)]).await;
        if bad.is_empty() {
            // An empty parameter is left out by the test client.
            continue;
        }
        assert_eq!(
            page.redirect_param("error").as_deref(),
            Some("invalid_request"),
            "{bad:?}"
        );
        assert!(
            page.redirect_param("error_description")
                .unwrap()
                .contains("device_id")
        );
    }
}
