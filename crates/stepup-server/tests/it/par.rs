//! Pushed authorization requests (RFC 9126).

use std::sync::atomic::Ordering;

use stepup_core::pkce::CodeChallenge;
use stepup_server::client::AuthMethod;

use crate::fixtures::*;
use crate::flow::{Browser, REDIRECT, VERIFIER, exchange, setup};
use crate::on_both_backends;

fn pushed_params(challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", "web".into()),
        ("redirect_uri", REDIRECT.into()),
        ("scope", "openid".into()),
        ("state", "pushed-state".into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

async fn push(
    s: &TestServer,
    form: &[(&str, String)],
    basic: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let refs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, _, body) = s.post("/par", basic, &refs).await;
    (status, body)
}

async fn authorize_by_reference(
    s: &TestServer,
    b: &Browser,
    client_id: &str,
    request_uri: &str,
    extra: &[(&str, &str)],
) -> crate::flow::Page {
    let mut query = vec![("client_id", client_id), ("request_uri", request_uri)];
    query.extend_from_slice(extra);
    let response = b
        .http
        .get(s.url("/authorize"))
        .query(&query)
        .send()
        .await
        .unwrap();
    crate::flow::Page {
        status: response.status().as_u16(),
        location: response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned()),
        body: response.text().await.unwrap(),
    }
}

async fn pushed_requests_work_once_and_cannot_be_edited(backend: Backend) {
    let (s, _) = setup(backend, false).await;
    let challenge = CodeChallenge::from_verifier(VERIFIER).unwrap();
    let (status, body) = push(&s, &pushed_params(challenge.as_str()), None).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_in"], 60);
    let request_uri = body["request_uri"].as_str().unwrap().to_owned();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));

    // Parameters added in the browser are ignored: a bound scope would force mfa (unmet here).
    let b = Browser::new();
    let page =
        authorize_by_reference(&s, &b, "web", &request_uri, &[("scope", "openid payments:write")]).await;
    assert!(page.is_password_page(), "{}", page.body);
    let done = b
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", "alice"), ("password", "correct horse battery")],
        )
        .await;
    assert_eq!(done.redirect_param("state").as_deref(), Some("pushed-state"));
    let (status, tokens) = exchange(&s, &done.redirect_param("code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "openid");

    // Once only; only for its client; not after it expires.
    let again = authorize_by_reference(&s, &b, "web", &request_uri, &[]).await;
    assert_eq!(again.status, 400);
    let other = s
        .register("other", AuthMethod::None, &["authorization_code"], &[])
        .await;
    let (_, body) = push(&s, &pushed_params(challenge.as_str()), None).await;
    let uri = body["request_uri"].as_str().unwrap().to_owned();
    assert_eq!(
        authorize_by_reference(&s, &b, &other.id, &uri, &[]).await.status,
        400
    );
    let (_, body) = push(&s, &pushed_params(challenge.as_str()), None).await;
    let uri = body["request_uri"].as_str().unwrap().to_owned();
    s.clock.0.store(NOW + 61, Ordering::SeqCst);
    assert_eq!(authorize_by_reference(&s, &b, "web", &uri, &[]).await.status, 400);
    assert_eq!(
        authorize_by_reference(&s, &b, "web", "https://evil.example/req", &[])
            .await
            .status,
        400
    );
}
on_both_backends!(pushed_requests_work_once_and_cannot_be_edited);

async fn bad_pushes_get_json_errors(backend: Backend) {
    let (s, _) = setup(backend, false).await;
    let challenge = CodeChallenge::from_verifier(VERIFIER).unwrap();
    let mut no_pkce = pushed_params(challenge.as_str());
    no_pkce.retain(|(k, _)| *k != "code_challenge");
    let mut bad_redirect = pushed_params(challenge.as_str());
    bad_redirect.retain(|(k, _)| *k != "redirect_uri");
    bad_redirect.push(("redirect_uri", "https://evil.example/cb".into()));
    let mut with_uri = pushed_params(challenge.as_str());
    with_uri.push(("request_uri", "urn:x".into()));
    for (form, error) in [
        (no_pkce, "invalid_request"),
        (bad_redirect, "invalid_request"),
        (with_uri, "invalid_request"),
    ] {
        let (status, body) = push(&s, &form, None).await;
        assert_eq!((status, body["error"].as_str()), (400, Some(error)), "{body}");
    }
    let (status, body) = push(
        &s,
        &pushed_params(challenge.as_str()),
        Some(("web", "not-a-secret")),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
}
on_both_backends!(bad_pushes_get_json_errors);

async fn clients_that_require_par_cannot_skip_it(backend: Backend) {
    let (s, _) = setup(backend, false).await;
    let c = s
        .register(
            "strict",
            AuthMethod::ClientSecretBasic,
            &["authorization_code"],
            &[],
        )
        .await;
    sqlx_require_par(&s, "strict").await;
    let challenge = CodeChallenge::from_verifier(VERIFIER).unwrap();
    let b = Browser::new();
    let page = b.authorize(&s, &[("client_id", "strict")]).await;
    assert_eq!(page.redirect_param("error").as_deref(), Some("invalid_request"));
    let mut form = pushed_params(challenge.as_str());
    form.retain(|(k, _)| *k != "client_id");
    let (status, body) = push(&s, &form, Some((&c.id, &c.secret))).await;
    assert_eq!(status, 201, "{body}");
    let page = authorize_by_reference(&s, &b, "strict", body["request_uri"].as_str().unwrap(), &[]).await;
    assert!(page.is_password_page(), "{}", page.body);
}
on_both_backends!(clients_that_require_par_cannot_skip_it);

/// Registers `require_par` for a client (the test fixture registers without it).
async fn sqlx_require_par(s: &TestServer, client_id: &str) {
    s.state
        .store
        .set_client_require_par(client_id, true)
        .await
        .unwrap();
}
