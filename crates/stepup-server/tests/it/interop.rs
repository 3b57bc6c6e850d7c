//! Interoperability: the `openidconnect` crate, a widely used relying party
//! library, drives the code flow end to end (discovery, PKCE, ID token
//! validation with its own verifier, a step-up with `acr_values` and
//! `max_age`, refresh) with nothing of ours on its side.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreIdTokenVerifier, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreTokenResponse,
};
use openidconnect::{
    AccessTokenHash, AuthenticationContextClass, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use stepup_core::UnixTime;

use crate::fixtures::*;
use crate::flow::{Browser, PASSWORD, Page, REDIRECT, jwt_claims, setup};
use crate::on_both_backends;

const PWD: &str = "urn:stepup:acr:pwd";
const MFA: &str = "urn:stepup:acr:mfa";

/// The relying party's HTTP client: openidconnect requires that it does not
/// follow redirects (SSRF).
fn rp_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

/// An ID token verifier with the server's (fixed) clock as "now".
fn at_time(verifier: CoreIdTokenVerifier<'_>, now: i64) -> CoreIdTokenVerifier<'_> {
    verifier.set_time_fn(move || at(now))
}

/// GETs the authorization URL openidconnect built, in the browser.
async fn open(b: &Browser, url: &url::Url) -> Page {
    Browser::page(b.http.get(url.as_str()).send().await.unwrap()).await
}

/// Submits alice's password on the password page.
async fn password(s: &TestServer, b: &Browser, page: &Page) -> Page {
    assert!(page.is_password_page(), "{} {}", page.status, page.body);
    b.submit(
        s,
        "/login/password",
        page,
        &[("username", "alice"), ("password", PASSWORD)],
    )
    .await
}

/// The code of a successful authorization response, after checking its
/// `state` and `iss` (RFC 9207) as a relying party must.
fn code_of(s: &TestServer, done: &Page, csrf: &CsrfToken) -> AuthorizationCode {
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(
        done.location.as_deref().unwrap().starts_with(REDIRECT),
        "{:?}",
        done.location
    );
    assert_eq!(done.redirect_param("error"), None, "{:?}", done.location);
    assert_eq!(
        done.redirect_param("state").as_deref(),
        Some(csrf.secret().as_str())
    );
    assert_eq!(done.redirect_param("iss").as_deref(), Some(s.issuer.as_str()));
    AuthorizationCode::new(done.redirect_param("code").unwrap())
}

/// `at_hash` recomputed by openidconnect from the access token, with the
/// ID token's algorithm and key.
fn check_at_hash(tokens: &CoreTokenResponse, claims: &CoreIdTokenClaims, verifier: &CoreIdTokenVerifier<'_>) {
    let id_token = tokens.id_token().unwrap();
    let alg = id_token.signing_alg().unwrap();
    assert_eq!(*alg, CoreJwsSigningAlgorithm::EcdsaP256Sha256);
    let key = id_token.signing_key(verifier).unwrap();
    let expected = AccessTokenHash::from_token(tokens.access_token(), alg, key).unwrap();
    assert_eq!(claims.access_token_hash(), Some(&expected));
}

fn amr(claims: &CoreIdTokenClaims) -> Vec<String> {
    claims
        .auth_method_refs()
        .map(|v| v.iter().map(|a| a.as_str().to_owned()).collect())
        .unwrap_or_default()
}

async fn openidconnect_relying_party(backend: Backend) {
    let (s, secret) = setup(backend, true).await;
    let secret = secret.unwrap();
    let http = rp_http();
    let b = Browser::new();

    // Discovery (an http:// issuer on loopback: openidconnect does not insist on https).
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(s.issuer.clone()).unwrap(), &http)
        .await
        .unwrap();
    assert_eq!(metadata.issuer().as_str(), s.issuer);
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new("web".into()), None)
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());

    // 1. Password login.
    let (challenge, pkce) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let done = password(&s, &b, &open(&b, &url).await).await;
    let code = code_of(&s, &done, &csrf);
    let tokens = client
        .exchange_code(code)
        .unwrap()
        .set_pkce_verifier(pkce)
        .request_async(&http)
        .await
        .unwrap();
    let verifier = at_time(client.id_token_verifier(), NOW);
    let claims = tokens.id_token().unwrap().claims(&verifier, &nonce).unwrap();
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some(PWD));
    assert_eq!(amr(claims), ["pwd"]);
    assert_eq!(claims.auth_time(), Some(at(NOW)));
    assert_eq!(claims.issue_time(), at(NOW));
    check_at_hash(&tokens, claims, &verifier);
    let sub = claims.subject().clone();
    // The token is bound to its nonce: another nonce is refused.
    assert!(
        tokens
            .id_token()
            .unwrap()
            .claims(&verifier, &Nonce::new("other".into()))
            .is_err()
    );

    // 2. Step-up two minutes later: mfa, with a fresh authentication
    // (max_age=0): password again, then the one-time code.
    let later = NOW + 120;
    s.clock.0.store(later, Ordering::SeqCst);
    let (challenge, pkce) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_auth_context_value(AuthenticationContextClass::new(MFA.into()))
        .set_max_age(Duration::ZERO)
        .set_pkce_challenge(challenge)
        .url();
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert!(query.contains(&("acr_values".into(), MFA.into())), "{url}");
    assert!(query.contains(&("max_age".into(), "0".into())), "{url}");
    let otp = password(&s, &b, &open(&b, &url).await).await;
    assert!(otp.is_otp_page() && !otp.is_password_page(), "{}", otp.body);
    let done = b
        .submit(
            &s,
            "/login/otp",
            &otp,
            &[("code", &secret.code_at(UnixTime(later)))],
        )
        .await;
    let code = code_of(&s, &done, &csrf);
    let tokens = client
        .exchange_code(code)
        .unwrap()
        .set_pkce_verifier(pkce)
        .request_async(&http)
        .await
        .unwrap();
    // The relying party's own checks of what it asked for (OpenID Connect
    // Core §3.1.3.7 steps 12 and 13): the acr, and auth_time within max_age.
    let verifier = at_time(client.id_token_verifier(), later)
        .set_auth_context_verifier_fn(|acr| match acr.map(|a| a.as_str()) {
            Some(MFA) => Ok(()),
            other => Err(format!("acr {other:?} is not {MFA}")),
        })
        .set_auth_time_verifier_fn(move |auth_time| match auth_time {
            Some(t) if later - t.timestamp() <= 0 => Ok(()),
            other => Err(format!("auth_time {other:?} is older than max_age=0 at {later}")),
        });
    let claims = tokens.id_token().unwrap().claims(&verifier, &nonce).unwrap();
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some(MFA));
    assert_eq!(claims.auth_time(), Some(at(later)), "a fresh authentication");
    assert_eq!(amr(claims), ["pwd", "otp"]);
    assert_eq!(claims.subject(), &sub);
    check_at_hash(&tokens, claims, &verifier);
    let access = jwt_claims(tokens.access_token().secret());
    assert_eq!(
        (access["acr"].as_str(), access["auth_time"].as_i64()),
        (Some(MFA), Some(later))
    );
    let refresh = tokens.refresh_token().unwrap().clone();

    // 3. Refresh: the new access token keeps what the step-up established.
    let refreshed_at = later + 60;
    s.clock.0.store(refreshed_at, Ordering::SeqCst);
    let refreshed = client
        .exchange_refresh_token(&refresh)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    let access = jwt_claims(refreshed.access_token().secret());
    assert_eq!(
        (access["acr"].as_str(), access["auth_time"].as_i64()),
        (Some(MFA), Some(later))
    );
    assert_eq!(access["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(access["iat"].as_i64(), Some(refreshed_at));
    assert_ne!(refreshed.refresh_token().unwrap().secret(), refresh.secret());
    // This server also returns a new ID token (OpenID Connect Core §12.2):
    // newly issued, with the original authentication's auth_time, acr and nonce.
    let verifier = at_time(client.id_token_verifier(), refreshed_at);
    let claims = refreshed.id_token().unwrap().claims(&verifier, &nonce).unwrap();
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some(MFA));
    assert_eq!(claims.auth_time(), Some(at(later)));
    assert_eq!(claims.issue_time(), at(refreshed_at));
    assert_eq!(claims.subject(), &sub);
    check_at_hash(&refreshed, claims, &verifier);
}
on_both_backends!(openidconnect_relying_party);
