//! DPoP-bound tokens through the layer (RFC 9449 §7): accepted with the
//! `DPoP` scheme and a fresh proof by the bound key, refused otherwise,
//! with `DPoP` challenges; replayed proofs refused; server nonces.

use std::sync::atomic::Ordering;

use axum::Router;
use ring::rand::SystemRandom;
use serde_json::json;
use stepup_core::dpop::{ProofClaims, sign_proof};
use stepup_core::jwk::Jwk;
use stepup_core::jws::SigningKey;
use stepup_guard::dpop::{DpopOptions, NonceSource};
use stepup_guard::{Guard, KeySource};

use crate::fixtures::*;

const ORIGIN: &str = "https://api.example";

struct Holder {
    key: SigningKey,
    jkt: String,
    rng: SystemRandom,
    next: std::sync::atomic::AtomicU64,
}

impl Holder {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let key = SigningKey::generate_es256(&rng).unwrap();
        let jkt = Jwk::from_json_value(&key.public_jwk(None))
            .unwrap()
            .thumbprint_sha256();
        Self {
            key,
            jkt,
            rng,
            next: Default::default(),
        }
    }

    fn proof(&self, method: &str, path: &str, token: &str, nonce: Option<&str>, iat: i64) -> String {
        let jti = format!("p-{}", self.next.fetch_add(1, Ordering::SeqCst));
        let uri = format!("{ORIGIN}{path}");
        let claims = ProofClaims {
            method,
            uri: &uri,
            access_token: Some(token),
            nonce,
            jti: &jti,
            iat,
        };
        sign_proof(&self.key, &claims, &self.rng).unwrap()
    }
}

fn dpop_app(issuer: &Issuer, options: DpopOptions) -> Router {
    let guard = Guard::builder(policy(), jwt_verifier(KeySource::fixed(issuer.jwks())))
        .clock(clock())
        .realm("bank")
        .dpop(options)
        .build();
    app(&guard)
}

fn bound_token(issuer: &Issuer, jkt: &str, acr: &str, auth_age: i64) -> String {
    let mut c = claims(acr, auth_age, "accounts:read payments:write");
    c["cnf"] = json!({ "jkt": jkt });
    issuer.mint(&c)
}

fn dpop(token: &str) -> String {
    format!("DPoP {token}")
}

async fn send(app: &Router, method: &str, path: &str, token: &str, proofs: &[&str]) -> Answer {
    call_with(app, method, path, &[("authorization", &dpop(token))], proofs).await
}

#[tokio::test]
async fn a_bound_token_with_its_proof_passes_once() {
    let issuer = Issuer::es256("k1");
    let app = dpop_app(&issuer, DpopOptions::new(ORIGIN));
    let holder = Holder::new();
    let token = bound_token(&issuer, &holder.jkt, MFA, 10);
    let proof = holder.proof("GET", "/accounts/1/balance", &token, None, NOW);
    let a = send(&app, "GET", "/accounts/1/balance", &token, &[&proof]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body, format!("alice {MFA}"));
    // The same proof again: a replay.
    let a = send(&app, "GET", "/accounts/1/balance", &token, &[&proof]).await;
    assert_eq!(a.status, 401);
    let challenge = a.www_authenticate.unwrap();
    assert!(
        challenge.starts_with("DPoP realm=\"bank\", error=\"invalid_dpop_proof\""),
        "{challenge}"
    );
    assert!(challenge.contains("already used"), "{challenge}");
    assert!(
        challenge.contains("algs=\"EdDSA ES256 ES384 RS256 PS256\""),
        "{challenge}"
    );
    // A new proof: fine again.
    let proof = holder.proof("GET", "/accounts/1/balance", &token, None, NOW);
    assert_eq!(
        send(&app, "GET", "/accounts/1/balance", &token, &[&proof])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn stolen_tokens_and_misfit_proofs_are_refused() {
    let issuer = Issuer::es256("k1");
    let app = dpop_app(&issuer, DpopOptions::new(ORIGIN));
    let holder = Holder::new();
    let thief = Holder::new();
    let token = bound_token(&issuer, &holder.jkt, MFA, 10);
    let path = "/accounts/1/balance";
    let refused = |a: &Answer, what: &str| {
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        let c = a.www_authenticate.clone().unwrap_or_default();
        assert!(c.contains("error=\"invalid_dpop_proof\""), "{what}: {c}");
    };
    // The stolen token with the thief's own key.
    let a = send(
        &app,
        "GET",
        path,
        &token,
        &[&thief.proof("GET", path, &token, None, NOW)],
    )
    .await;
    refused(&a, "another key");
    // A proof for another URL, method, token, or an old one.
    refused(
        &send(
            &app,
            "GET",
            path,
            &token,
            &[&holder.proof("GET", "/accounts/2/balance", &token, None, NOW)],
        )
        .await,
        "url",
    );
    refused(
        &send(
            &app,
            "GET",
            path,
            &token,
            &[&holder.proof("POST", path, &token, None, NOW)],
        )
        .await,
        "method",
    );
    refused(
        &send(
            &app,
            "GET",
            path,
            &token,
            &[&holder.proof("GET", path, "other", None, NOW)],
        )
        .await,
        "ath",
    );
    refused(
        &send(
            &app,
            "GET",
            path,
            &token,
            &[&holder.proof("GET", path, &token, None, NOW - 600)],
        )
        .await,
        "iat",
    );
    // No proof, two proofs, garbage.
    refused(&send(&app, "GET", path, &token, &[]).await, "no proof");
    let p1 = holder.proof("GET", path, &token, None, NOW);
    let p2 = holder.proof("GET", path, &token, None, NOW);
    refused(&send(&app, "GET", path, &token, &[&p1, &p2]).await, "two proofs");
    refused(
        &send(&app, "GET", path, &token, &["not.a.proof"]).await,
        "garbage",
    );
    // The bound token as a bearer token: the challenge names the scheme
    // (and algorithms) to use instead.
    let a = call(&app, "GET", path, &[&bearer(&token)]).await;
    assert_eq!(a.status, 401);
    let challenge = a.www_authenticate.unwrap();
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains("algs="), "{challenge}");
    assert!(challenge.contains("bound to a key"), "{challenge}");
    // An unbound token with the DPoP scheme.
    let plain = issuer.mint(&claims(MFA, 10, "accounts:read"));
    let a = send(
        &app,
        "GET",
        path,
        &plain,
        &[&holder.proof("GET", path, &plain, None, NOW)],
    )
    .await;
    assert_eq!(a.status, 401);
    assert!(a.www_authenticate.unwrap().contains("not bound to a key"));
}

#[tokio::test]
async fn step_up_challenges_use_the_dpop_scheme() {
    let issuer = Issuer::es256("k1");
    let app = dpop_app(&issuer, DpopOptions::new(ORIGIN));
    let holder = Holder::new();
    // mfa, but the large transfer needs phr within 60 s.
    let token = bound_token(&issuer, &holder.jkt, MFA, 10);
    let path = "/accounts/1/transfers/large";
    let a = send(
        &app,
        "POST",
        path,
        &token,
        &[&holder.proof("POST", path, &token, None, NOW)],
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let c = a.www_authenticate.unwrap();
    assert!(
        c.starts_with("DPoP realm=\"bank\", error=\"insufficient_user_authentication\""),
        "{c}"
    );
    assert!(
        c.contains("acr_values=\"urn:stepup:acr:phr\", max_age=\"60\", algs=\""),
        "{c}"
    );
}

#[tokio::test]
async fn server_nonces_are_required_when_configured() {
    let issuer = Issuer::es256("k1");
    let nonces = NonceSource::new(&[9u8; 32], 60).unwrap();
    let expected = nonces.current(NOW);
    let app = dpop_app(&issuer, DpopOptions::new(ORIGIN).nonces(nonces));
    let holder = Holder::new();
    let token = bound_token(&issuer, &holder.jkt, MFA, 10);
    let path = "/accounts/1/balance";
    let a = send(
        &app,
        "GET",
        path,
        &token,
        &[&holder.proof("GET", path, &token, None, NOW)],
    )
    .await;
    assert_eq!(a.status, 401);
    assert!(a.www_authenticate.unwrap().contains("error=\"use_dpop_nonce\""));
    let nonce = a.dpop_nonce.expect("a DPoP-Nonce header");
    assert_eq!(nonce, expected);
    let a = send(
        &app,
        "GET",
        path,
        &token,
        &[&holder.proof("GET", path, &token, Some(&nonce), NOW)],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = send(
        &app,
        "GET",
        path,
        &token,
        &[&holder.proof("GET", path, &token, Some("stale-nonce"), NOW)],
    )
    .await;
    assert_eq!(a.status, 401);
}

#[tokio::test]
async fn without_dpop_options_the_scheme_is_refused() {
    let issuer = Issuer::es256("k1");
    let app = app(&guard_for(&issuer, clock()));
    let holder = Holder::new();
    let token = bound_token(&issuer, &holder.jkt, MFA, 10);
    let path = "/accounts/1/balance";
    let a = send(
        &app,
        "GET",
        path,
        &token,
        &[&holder.proof("GET", path, &token, None, NOW)],
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("DPoP is not accepted here"), "{}", a.body);
}
