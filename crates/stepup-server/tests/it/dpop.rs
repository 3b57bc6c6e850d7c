//! DPoP at the token endpoint (RFC 9449 §5, §10): tokens bound to the
//! proof's key, public clients' refresh tokens too; `dpop_jkt` on the
//! authorization request; replayed proofs and clients that must use DPoP.

use ring::rand::SystemRandom;
use serde_json::Value;
use stepup_core::dpop::{ProofClaims, sign_proof};
use stepup_core::jwk::Jwk;
use stepup_core::jws::SigningKey;

use crate::fixtures::*;
use crate::flow::{Browser, PASSWORD, REDIRECT, VERIFIER, jwt_claims, setup};
use crate::on_both_backends;

struct Key {
    key: SigningKey,
    jkt: String,
    rng: SystemRandom,
}

impl Key {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let key = SigningKey::generate_es256(&rng).unwrap();
        let jkt = Jwk::from_json_value(&key.public_jwk(None))
            .unwrap()
            .thumbprint_sha256();
        Self { key, jkt, rng }
    }

    fn proof(&self, s: &TestServer, jti: &str) -> String {
        self.proof_for(s, "POST", "/token", None, jti)
    }

    /// A proof for `method` at `path` of the server, with `ath` of
    /// `access_token` when given.
    fn proof_for(
        &self,
        s: &TestServer,
        method: &str,
        path: &str,
        access_token: Option<&str>,
        jti: &str,
    ) -> String {
        let uri = format!("{}{path}", s.issuer);
        let claims = ProofClaims {
            method,
            uri: &uri,
            access_token,
            nonce: None,
            jti,
            iat: NOW,
        };
        sign_proof(&self.key, &claims, &self.rng).unwrap()
    }
}

/// A token request with an optional DPoP proof.
async fn token(s: &TestServer, form: &[(&str, &str)], proof: Option<&str>) -> (u16, Value) {
    let mut request = s.http.post(s.url("/token")).form(form);
    if let Some(p) = proof {
        request = request.header("dpop", p);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn code(s: &TestServer, extra: &[(&str, &str)]) -> String {
    let b = Browser::new();
    let page = b.authorize(s, extra).await;
    let done = b
        .submit(
            s,
            "/login/password",
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    done.redirect_param("code")
        .unwrap_or_else(|| panic!("{} {}", done.status, done.body))
}

fn exchange_form(code: &str) -> Vec<(&'static str, String)> {
    vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.into()),
        ("redirect_uri", REDIRECT.into()),
        ("code_verifier", VERIFIER.into()),
        ("client_id", "web".into()),
    ]
}

fn pairs<'a>(form: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    form.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn bound_tokens_and_refresh(backend: Backend) {
    let (s, _) = setup(backend, false).await;
    let key = Key::new();
    let code = code(&s, &[("dpop_jkt", &key.jkt)]).await;
    let (status, body) = token(&s, &pairs(&exchange_form(&code)), Some(&key.proof(&s, "p1"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    let at = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(at["cnf"]["jkt"], key.jkt.as_str());

    // Introspection says so too.
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    // The refresh token of a public client is bound: another key, no key,
    // and a replayed proof are refused; the holder's new proof works.
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
        ("client_id", "web"),
    ];
    let thief = Key::new();
    let (status, body) = token(&s, &form, Some(&thief.proof(&s, "t1"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );
    let (status, body) = token(&s, &form, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );
    let (status, body) = token(&s, &form, Some(&key.proof(&s, "p1"))).await;
    assert_eq!(status, 400, "a replayed proof: {body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );
    let (status, body) = token(&s, &form, Some(&key.proof(&s, "p2"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        jwt_claims(body["access_token"].as_str().unwrap())["cnf"]["jkt"],
        key.jkt.as_str()
    );
}
on_both_backends!(bound_tokens_and_refresh);

/// A `/userinfo` request with `authorization` and an optional proof: the
/// status, the `WWW-Authenticate` header and the body.
async fn userinfo(s: &TestServer, authorization: &str, proof: Option<&str>) -> (u16, String, Value) {
    let mut request = s
        .http
        .get(s.url("/userinfo"))
        .header("authorization", authorization);
    if let Some(p) = proof {
        request = request.header("dpop", p);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, challenge, body)
}

/// Issue 16 §2: `/userinfo` takes a DPoP-bound access token only with the
/// `DPoP` scheme and a proof of its key for this very request (RFC 9449
/// §7.1, §7.2), never as a bearer token; the control passes.
async fn userinfo_takes_a_bound_token_only_with_its_proof(backend: Backend) {
    let (s, _) = setup(backend, false).await;
    let key = Key::new();
    let code = code(&s, &[("dpop_jkt", &key.jkt)]).await;
    let (status, body) = token(&s, &pairs(&exchange_form(&code)), Some(&key.proof(&s, "p1"))).await;
    assert_eq!(status, 200, "{body}");
    let at = body["access_token"].as_str().unwrap().to_owned();

    // Stolen and used as a bearer token: refused, with a challenge naming
    // the scheme (and algorithms) to use instead.
    let (status, challenge, body) = userinfo(&s, &format!("Bearer {at}"), None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("invalid_token") && challenge.contains("algs="),
        "{challenge}"
    );
    assert_eq!(body["error"], "invalid_token");
    // With the scheme but no proof, a proof of another key, a proof for
    // another request, or without `ath`: refused with a DPoP challenge.
    let (status, challenge, _) = userinfo(&s, &format!("DPoP {at}"), None).await;
    assert_eq!(status, 401);
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains("invalid_dpop_proof"),
        "{challenge}"
    );
    assert!(challenge.contains("algs="), "{challenge}");
    let thief = Key::new();
    let stolen_key = thief.proof_for(&s, "GET", "/userinfo", Some(&at), "u1");
    let (status, _, body) = userinfo(&s, &format!("DPoP {at}"), Some(&stolen_key)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_dpop_proof")),
        "{body}"
    );
    for wrong in [
        key.proof_for(&s, "POST", "/userinfo", Some(&at), "u2"),
        key.proof_for(&s, "GET", "/token", Some(&at), "u3"),
        key.proof_for(&s, "GET", "/userinfo", None, "u4"),
    ] {
        let (status, _, body) = userinfo(&s, &format!("DPoP {at}"), Some(&wrong)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_dpop_proof")),
            "{body}"
        );
    }
    // The holder, with a proof for this request: the claims.
    let proof = key.proof_for(&s, "GET", "/userinfo", Some(&at), "u5");
    let (status, _, body) = userinfo(&s, &format!("DPoP {at}"), Some(&proof)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["sub"].is_string(), "{body}");
    // The same proof again: used once.
    let (status, _, body) = userinfo(&s, &format!("DPoP {at}"), Some(&proof)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_dpop_proof")),
        "{body}"
    );

    // An unbound token: as a bearer token it works, with the DPoP scheme not.
    let code = self::code(&s, &[]).await;
    let (status, body) = token(&s, &pairs(&exchange_form(&code)), None).await;
    assert_eq!(status, 200, "{body}");
    let plain = body["access_token"].as_str().unwrap().to_owned();
    let (status, _, body) = userinfo(&s, &format!("Bearer {plain}"), None).await;
    assert_eq!(status, 200, "{body}");
    let proof = key.proof_for(&s, "GET", "/userinfo", Some(&plain), "u6");
    let (status, _, body) = userinfo(&s, &format!("DPoP {plain}"), Some(&proof)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    // No credentials: a challenge without an error code (RFC 6750 §3.1).
    let response = s.http.get(s.url("/userinfo")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}
on_both_backends!(userinfo_takes_a_bound_token_only_with_its_proof);

async fn dpop_jkt_binds_the_code(backend: Backend) {
    let (s, _) = setup(backend, false).await;
    let key = Key::new();
    let other = Key::new();
    // The code was asked for with one key; a proof by another is refused.
    let code_1 = code(&s, &[("dpop_jkt", &key.jkt)]).await;
    let (status, body) = token(&s, &pairs(&exchange_form(&code_1)), Some(&other.proof(&s, "o1"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );
    // ...and without any proof.
    let code_2 = code(&s, &[("dpop_jkt", &key.jkt)]).await;
    let (status, body) = token(&s, &pairs(&exchange_form(&code_2)), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_dpop_proof")),
        "{body}"
    );
    // A malformed dpop_jkt is refused at the authorization endpoint.
    let page = Browser::new().authorize(&s, &[("dpop_jkt", "short")]).await;
    assert_eq!(page.redirect_param("error").as_deref(), Some("invalid_request"));
    // Without dpop_jkt and without a proof: a plain bearer token.
    let code_3 = code(&s, &[]).await;
    let (status, body) = token(&s, &pairs(&exchange_form(&code_3)), None).await;
    assert_eq!(
        (status, body["token_type"].as_str()),
        (200, Some("Bearer")),
        "{body}"
    );
}
on_both_backends!(dpop_jkt_binds_the_code);

#[tokio::test]
async fn clients_can_be_required_to_use_dpop_and_discovery_says_which_algs() {
    let s = start(Backend::Sqlite).await;
    let (_, secret) = stepup_server::client::register(
        &s.state.store,
        stepup_server::client::Registration {
            client_id: "svc".into(),
            auth_method: stepup_server::client::AuthMethod::ClientSecretBasic,
            redirect_uris: vec![],
            grant_types: vec!["client_credentials".into()],
            scopes: vec![stepup_core::Scope::new("reports").unwrap()],
            require_par: false,
            require_dpop: true,
            jwks: None,
            audiences: Vec::new(),
        },
        NOW,
        &SystemRandom::new(),
    )
    .await
    .unwrap();
    let secret = secret.unwrap().expose_secret().to_owned();
    let key = Key::new();
    let form = [("grant_type", "client_credentials")];
    let plain = s
        .http
        .post(s.url("/token"))
        .basic_auth("svc", Some(&secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["error"], "invalid_dpop_proof");
    let bound = s
        .http
        .post(s.url("/token"))
        .basic_auth("svc", Some(&secret))
        .header("dpop", key.proof(&s, "c1"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let body: Value = bound.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    // Introspection reports the binding (RFC 9449 §6.2).
    let token = body["access_token"].as_str().unwrap().to_owned();
    let introspected: Value = s
        .http
        .post(s.url("/introspect"))
        .basic_auth("svc", Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["cnf"]["jkt"], key.jkt.as_str());
    assert_eq!(introspected["token_type"], "DPoP");
    let (_, _, meta) = s.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(meta["dpop_signing_alg_values_supported"][0], "ES256");
}

#[tokio::test]
async fn proofs_with_a_huge_jti_are_refused() {
    let (s, _) = setup(Backend::Sqlite, false).await;
    let key = Key::new();
    // The control: a proof with an ordinary jti binds the token.
    let issued = code(&s, &[]).await;
    let form = exchange_form(&issued);
    let (status, body) = token(&s, &pairs(&form), Some(&key.proof(&s, "jti-1"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
    // A jti of kilobytes (the proof still within its 8 KiB) is refused,
    // before anything is remembered of it.
    let issued = code(&s, &[]).await;
    let form = exchange_form(&issued);
    let huge = "j".repeat(4000);
    let (status, body) = token(&s, &pairs(&form), Some(&key.proof(&s, &huge))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_dpop_proof");
    assert!(
        body["error_description"].as_str().unwrap().contains("jti"),
        "{body}"
    );
}

#[tokio::test]
async fn nonces_are_asked_for_when_configured() {
    let extra = "\n[dpop]\nnonce_secret = \"0123456789abcdef0123456789abcdef\"\nnonce_seconds = 60\n";
    let s = start_with(Backend::Sqlite, extra, None).await;
    s.register(
        "web",
        stepup_server::client::AuthMethod::None,
        &["authorization_code", "refresh_token"],
        &["profile"],
    )
    .await;
    stepup_server::users::add_user(&s.state.store, "alice", PASSWORD, NOW, &SystemRandom::new())
        .await
        .unwrap();
    let key = Key::new();
    let code = code(&s, &[]).await;
    let form = exchange_form(&code);
    // Without the nonce: 400 use_dpop_nonce with a DPoP-Nonce header.
    let response = s
        .http
        .post(s.url("/token"))
        .header("dpop", key.proof(&s, "n1"))
        .form(&pairs(&form))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let nonce = response.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "use_dpop_nonce");
    // With it: the code was not used up by the first try.
    let uri = format!("{}/token", s.issuer);
    let claims = ProofClaims {
        method: "POST",
        uri: &uri,
        access_token: None,
        nonce: Some(&nonce),
        jti: "n2",
        iat: NOW,
    };
    let proof = sign_proof(&key.key, &claims, &key.rng).unwrap();
    let (status, body) = token(&s, &pairs(&form), Some(&proof)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP");
}
