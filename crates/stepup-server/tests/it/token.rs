//! Discovery, JWKS, the client_credentials grant, client authentication,
//! introspection, revocation and key rotation.

use std::sync::atomic::Ordering;

use ring::rand::SystemRandom;
use serde_json::json;
use stepup_core::Scope;
use stepup_core::UnixTime;
use stepup_guard::{HttpFetcher, JwtVerifier};
use stepup_server::Store;
use stepup_server::client::{AuthMethod, Registration};
use stepup_server::keys::KeyRing;

use crate::fixtures::*;
use crate::on_both_backends;

fn assert_no_store(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(headers.get("pragma").unwrap(), "no-cache");
}

async fn discovery_lists_what_exists(backend: Backend) {
    let s = start(backend).await;
    let (status, _, meta) = s.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(
        meta["grant_types_supported"],
        json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(status, 200);
    assert_eq!(meta["issuer"], s.issuer);
    assert_eq!(meta["token_endpoint"], s.url("/token"));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        meta["acr_values_supported"],
        json!(["urn:stepup:acr:pwd", "urn:stepup:acr:mfa", "urn:stepup:acr:phr"])
    );
    assert_eq!(meta["authorization_endpoint"], s.url("/authorize"));
    let (status, headers, jwks) = s.get_json("/jwks").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("content-type").unwrap(), "application/jwk-set+json");
    let keys = jwks["keys"].as_array().unwrap();
    let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 2, "{jwks}");
    assert!(algs.contains(&"ES256") && algs.contains(&"EdDSA"), "{algs:?}");
    assert!(
        keys.iter().all(|k| k.get("d").is_none()),
        "no private parts published"
    );
}
on_both_backends!(discovery_lists_what_exists);

async fn client_credentials_tokens_verify_at_a_guard(backend: Backend) {
    let s = start(backend).await;
    let c = s
        .register(
            "reporting",
            AuthMethod::ClientSecretBasic,
            &["client_credentials"],
            &["reports:read", "payments:write"],
        )
        .await;
    let (status, headers, body) = s
        .post(
            "/token",
            Some((&c.id, &c.secret)),
            &[("grant_type", "client_credentials"), ("scope", "reports:read")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_no_store(&headers);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "reports:read");
    // The guard, configured by discovery alone, accepts the token.
    let verifier = JwtVerifier::from_issuer(&s.issuer, API, HttpFetcher::new().unwrap())
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap();
    let verified = verifier.verify(token, UnixTime(NOW + 1)).await.unwrap();
    assert_eq!(verified.subject.as_deref(), Some("reporting"));
    assert_eq!(verified.client_id.as_deref(), Some("reporting"));
    assert_eq!(verified.scope.as_deref(), Some("reports:read"));
    assert_eq!(verified.expires_at, Some(NOW + 600));
    assert!(verified.token_id.as_deref().is_some_and(|j| j.len() >= 20));
}
on_both_backends!(client_credentials_tokens_verify_at_a_guard);

async fn client_authentication_failures(backend: Backend) {
    let s = start(backend).await;
    let basic = s
        .register(
            "basic",
            AuthMethod::ClientSecretBasic,
            &["client_credentials"],
            &["a"],
        )
        .await;
    let post = s
        .register(
            "post",
            AuthMethod::ClientSecretPost,
            &["client_credentials"],
            &["a"],
        )
        .await;
    let cc = [("grant_type", "client_credentials")];

    // client_secret_post works.
    let (status, _, body) = s
        .post(
            "/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "post"),
                ("client_secret", &post.secret),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Wrong secret, unknown client, wrong method: 401 invalid_client, one message.
    for (who, secret) in [
        ("basic", "wrong"),
        ("nobody", "x"),
        ("post", post.secret.as_str()),
    ] {
        let (status, headers, body) = s.post("/token", Some((who, secret)), &cc).await;
        assert_eq!(status, 401, "{who}: {body}");
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(body["error_description"], "client authentication failed");
        assert_eq!(headers.get("www-authenticate").unwrap(), "Basic realm=\"stepup\"");
        assert_no_store(&headers);
    }
    // No credentials at all.
    let (status, headers, body) = s.post("/token", None, &cc).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    assert!(headers.get("www-authenticate").is_none());
    // Two methods at once.
    let (status, _, body) = s
        .post(
            "/token",
            Some(("basic", &basic.secret)),
            &[("grant_type", "client_credentials"), ("client_secret", "x")],
        )
        .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));
    // A public client cannot get client_credentials tokens or introspect.
    let public = s
        .register("spa", AuthMethod::None, &["authorization_code"], &["a"])
        .await;
    let (status, _, body) = s
        .post(
            "/token",
            None,
            &[("grant_type", "client_credentials"), ("client_id", &public.id)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let (status, _, body) = s
        .post("/introspect", None, &[("token", "x"), ("client_id", &public.id)])
        .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
}
on_both_backends!(client_authentication_failures);

async fn malformed_token_requests(backend: Backend) {
    let s = start(backend).await;
    let c = s
        .register(
            "svc",
            AuthMethod::ClientSecretBasic,
            &["client_credentials"],
            &["a", "b", "payments:write"],
        )
        .await;
    let auth = Some((c.id.as_str(), c.secret.as_str()));
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], 400, "invalid_request"),
        (vec![("grant_type", "password")], 400, "unsupported_grant_type"),
        (
            vec![("grant_type", "authorization_code"), ("code", "x")],
            400,
            "unauthorized_client",
        ),
        (
            vec![("grant_type", "client_credentials"), ("scope", "c")],
            400,
            "invalid_scope",
        ),
        (
            vec![("grant_type", "client_credentials"), ("scope", "a \"b")],
            400,
            "invalid_scope",
        ),
        (
            vec![("grant_type", "client_credentials"), ("scope", "payments:write")],
            400,
            "invalid_scope",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("resource", "https://evil.example"),
            ],
            400,
            "invalid_target",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_request",
        ),
    ];
    for (form, status, error) in cases {
        let (got, headers, body) = s.post("/token", auth, &form).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{form:?}: {body}"
        );
        assert_no_store(&headers);
    }
    // NUL is refused as bad input, never a server error (PostgreSQL refuses it in text).
    for form in [
        [("grant_type", "client_credentials"), ("client_id", "\0")],
        [("grant_type", "\0"), ("scope", "a")],
    ] {
        let (status, _, body) = s.post("/token", None, &form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
    }
    let response = s
        .http
        .get(s.url("/authorize"))
        .query(&[
            ("client_id", "svc"),
            ("request_uri", "urn:ietf:params:oauth:request_uri:\0"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    // Without a scope parameter, the client gets its scopes minus those that need a user.
    let (status, _, body) = s
        .post("/token", auth, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!((status, body["scope"].as_str()), (200, Some("a b")), "{body}");
    // Issue 16 §7: a configured audience the client is not registered for
    // is refused (before, any client could ask for any audience).
    let other = [
        ("grant_type", "client_credentials"),
        ("resource", "https://other-api.example"),
        ("scope", "a"),
    ];
    let (status, _, body) = s.post("/token", auth, &other).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("may not get tokens"),
        "{body}"
    );
    // A client registered for both: the resource parameter selects the
    // audience, and its first is the default.
    let (both, secret) = stepup_server::client::register(
        &s.state.store,
        Registration {
            client_id: "svc-both".into(),
            auth_method: AuthMethod::ClientSecretBasic,
            redirect_uris: vec![],
            grant_types: vec!["client_credentials".into()],
            scopes: vec![Scope::new("a").unwrap()],
            require_par: false,
            require_dpop: false,
            jwks: None,
            audiences: vec!["https://other-api.example".into(), API.into()],
        },
        NOW,
        &SystemRandom::new(),
    )
    .await
    .unwrap();
    let secret = secret.unwrap();
    let both_auth = Some((both.id.as_str(), secret.expose_secret()));
    let (status, _, body) = s
        .post(
            "/token",
            both_auth,
            &[("grant_type", "client_credentials"), ("resource", API)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, _, intro) = s
        .post(
            "/introspect",
            auth,
            &[("token", body["access_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(intro["aud"], API);
    let (status, _, body) = s.post("/token", both_auth, &other).await;
    assert_eq!(status, 200, "{body}");
    let (_, _, intro) = s
        .post(
            "/introspect",
            auth,
            &[("token", body["access_token"].as_str().unwrap())],
        )
        .await;
    assert_eq!(intro["aud"], "https://other-api.example");
    // Not a form body.
    let response = s
        .http
        .post(s.url("/token"))
        .basic_auth(&c.id, Some(&c.secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
}
on_both_backends!(malformed_token_requests);

async fn introspection_and_revocation(backend: Backend) {
    let s = start(backend).await;
    let a = s
        .register(
            "a",
            AuthMethod::ClientSecretBasic,
            &["client_credentials"],
            &["x"],
        )
        .await;
    let b = s
        .register("b", AuthMethod::ClientSecretPost, &["client_credentials"], &["x"])
        .await;
    let a_auth = Some((a.id.as_str(), a.secret.as_str()));
    let (_, _, body) = s
        .post("/token", a_auth, &[("grant_type", "client_credentials")])
        .await;
    let token = body["access_token"].as_str().unwrap().to_owned();

    let (status, headers, intro) = s.post("/introspect", a_auth, &[("token", &token)]).await;
    assert_eq!(status, 200);
    assert_no_store(&headers);
    assert_eq!(intro["active"], true);
    assert_eq!(intro["client_id"], "a");
    assert_eq!(intro["scope"], "x");
    assert_eq!(intro["exp"], NOW + 600);
    assert_eq!(intro["iss"], s.issuer);
    // Garbage and unknown tokens are inactive, not errors.
    for garbage in ["garbage", "a.b.c", &token[..token.len() - 2]] {
        let (status, _, intro) = s.post("/introspect", a_auth, &[("token", garbage)]).await;
        assert_eq!((status, &intro), (200, &json!({"active": false})));
    }
    // Introspection needs client authentication and a token.
    let (status, _, _) = s.post("/introspect", None, &[("token", &token)]).await;
    assert_eq!(status, 401);
    let (status, _, body) = s.post("/introspect", a_auth, &[]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")));

    // Another client may not revoke a's token.
    let (status, _, body) = s
        .post(
            "/revoke",
            None,
            &[
                ("token", &token),
                ("client_id", "b"),
                ("client_secret", &b.secret),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let (_, _, intro) = s.post("/introspect", a_auth, &[("token", &token)]).await;
    assert_eq!(intro["active"], true);
    // Its own client may; twice is fine; unknown tokens are fine (RFC 7009 §2.2).
    for t in [token.as_str(), token.as_str(), "unknown"] {
        let (status, headers, _) = s.post("/revoke", a_auth, &[("token", t)]).await;
        assert_eq!(status, 200);
        assert_no_store(&headers);
    }
    let (_, _, intro) = s.post("/introspect", a_auth, &[("token", &token)]).await;
    assert_eq!(intro, json!({"active": false}));
    // Expired tokens are inactive, also one introspected (and so
    // remembered) while it was valid.
    let (_, _, body) = s
        .post("/token", a_auth, &[("grant_type", "client_credentials")])
        .await;
    let expiring = body["access_token"].as_str().unwrap();
    let (_, _, intro) = s.post("/introspect", a_auth, &[("token", expiring)]).await;
    assert_eq!(intro["active"], true);
    s.clock.0.store(NOW + 600, Ordering::SeqCst);
    let (_, _, intro) = s.post("/introspect", a_auth, &[("token", expiring)]).await;
    assert_eq!(intro, json!({"active": false}));
}
on_both_backends!(introspection_and_revocation);

async fn key_rotation_keeps_old_tokens_verifiable(backend: Backend) {
    let url = database_url(backend).await;
    let s = start_on(&url).await;
    let c = s
        .register(
            "svc",
            AuthMethod::ClientSecretBasic,
            &["client_credentials"],
            &["x"],
        )
        .await;
    let auth = Some((c.id.as_str(), c.secret.as_str()));
    let (_, _, jwks_before) = s.get_json("/jwks").await;
    let (_, _, body) = s
        .post("/token", auth, &[("grant_type", "client_credentials")])
        .await;
    let old_token = body["access_token"].as_str().unwrap().to_owned();

    KeyRing::rotate(&s.state.store, NOW + 10, &ring::rand::SystemRandom::new())
        .await
        .unwrap();
    s.state.reload_keys().await.unwrap();
    let (_, _, jwks_after) = s.get_json("/jwks").await;
    assert_eq!(
        jwks_after["keys"].as_array().unwrap().len(),
        4,
        "two new keys, two retired ones still published"
    );
    let kid = |t: &str| {
        let header = t.split('.').next().unwrap();
        let json: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
        )
        .unwrap();
        json["kid"].as_str().unwrap().to_owned()
    };
    // Published first, signing later: until the activation delay has passed
    // the old key still signs (instances and resource servers catch up).
    let (_, _, body) = s
        .post("/token", auth, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(kid(body["access_token"].as_str().unwrap()), kid(&old_token));
    s.clock.0.store(
        NOW + 10 + stepup_server::keys::ACTIVATION_DELAY_SECONDS,
        Ordering::SeqCst,
    );
    s.state.reload_keys().await.unwrap();
    let (_, _, body) = s
        .post("/token", auth, &[("grant_type", "client_credentials")])
        .await;
    let new_token = body["access_token"].as_str().unwrap();
    assert_ne!(kid(&old_token), kid(new_token));
    for t in [old_token.as_str(), new_token] {
        let (_, _, intro) = s.post("/introspect", auth, &[("token", t)]).await;
        assert_eq!(intro["active"], true);
    }
    // A restart on the same database keeps the keys (no new ones are made).
    let again = start_on(&url).await;
    let (_, _, jwks_restarted) = again.get_json("/jwks").await;
    assert_eq!(jwks_restarted, jwks_after);
    assert_ne!(jwks_before, jwks_after);
}
on_both_backends!(key_rotation_keeps_old_tokens_verifiable);

#[tokio::test]
async fn two_instances_on_one_postgres_act_as_one_server() {
    let url = database_url(Backend::Postgres).await;
    let one = start_on(&url).await;
    // Behind one name, as behind a load balancer.
    let two = start_instance(&url, Some(&one.issuer)).await;
    let c = one
        .register(
            "svc",
            AuthMethod::ClientSecretBasic,
            &["client_credentials"],
            &["x"],
        )
        .await;
    let auth = Some((c.id.as_str(), c.secret.as_str()));
    // A client registered through one instance authenticates at the other.
    let (status, _, body) = two
        .post("/token", auth, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    for instance in [&one, &two] {
        let (_, _, intro) = instance.post("/introspect", auth, &[("token", token)]).await;
        assert_eq!(intro["active"], true);
    }
    // Revoked at one, inactive at the other, though the other has just
    // checked its signature and remembers it.
    let (status, _, _) = one.post("/revoke", auth, &[("token", token)]).await;
    assert_eq!(status, 200);
    let (_, _, intro) = two.post("/introspect", auth, &[("token", token)]).await;
    assert_eq!(intro, json!({"active": false}));
    // Both publish the same keys.
    assert_eq!(one.get_json("/jwks").await.2, two.get_json("/jwks").await.2);
}

async fn private_key_jwt_client_authentication(backend: Backend) {
    use stepup_core::jws::{SigningHeader, SigningKey, sign_compact};
    let s = start(backend).await;
    let rng = ring::rand::SystemRandom::new();
    let key = SigningKey::generate_es256(&rng).unwrap();
    let jwks = json!({ "keys": [key.public_jwk(Some("c1"))] }).to_string();
    let registration = |id: &str, jwks: Option<String>| stepup_server::client::Registration {
        client_id: id.into(),
        auth_method: AuthMethod::PrivateKeyJwt,
        redirect_uris: vec![],
        grant_types: vec!["client_credentials".into()],
        scopes: vec![],
        require_par: false,
        require_dpop: false,
        jwks,
        audiences: Vec::new(),
    };
    let err = stepup_server::client::register(&s.state.store, registration("nokeys", None), NOW, &rng)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("public keys"), "{err}");
    let (_, secret) =
        stepup_server::client::register(&s.state.store, registration("signer", Some(jwks)), NOW, &rng)
            .await
            .unwrap();
    assert!(secret.is_none(), "no secret for private_key_jwt");

    let assertion = |signing: &SigningKey, aud: &str, exp: i64, jti: &str| {
        let claims =
            json!({ "iss": "signer", "sub": "signer", "aud": aud, "exp": exp, "jti": jti, "iat": NOW });
        sign_compact(
            &SigningHeader::new().kid("c1"),
            claims.to_string().as_bytes(),
            signing,
            &rng,
        )
        .unwrap()
    };
    let token_url = s.url("/token");
    let server = &s;
    let request = |a: String| async move {
        let form = [
            ("grant_type", "client_credentials".to_owned()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion", a),
        ];
        let refs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        server.post("/token", None, &refs).await
    };
    let good = assertion(&key, &token_url, NOW + 60, "j1");
    let (status, _, body) = request(good.clone()).await;
    assert_eq!(status, 200, "{body}");
    // The issuer as audience works too.
    let (status, _, _) = request(assertion(&key, &s.issuer, NOW + 60, "j2")).await;
    assert_eq!(status, 200);
    let other_key = SigningKey::generate_es256(&rng).unwrap();
    for (bad, why) in [
        (good, "replayed"),
        (
            assertion(&key, "https://elsewhere.example/token", NOW + 60, "j3"),
            "wrong aud",
        ),
        (assertion(&key, &token_url, NOW - 1, "j4"), "expired"),
        (assertion(&key, &token_url, NOW + 3600, "j5"), "too long-lived"),
        (
            assertion(&other_key, &token_url, NOW + 60, "j6"),
            "someone else's key",
        ),
    ] {
        let (status, _, body) = request(bad).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{why}: {body}"
        );
    }
}
on_both_backends!(private_key_jwt_client_authentication);

async fn expired_rows_are_purged(backend: Backend) {
    let s = start(backend).await;
    let a = s
        .register(
            "a",
            AuthMethod::ClientSecretBasic,
            &["client_credentials"],
            &["x"],
        )
        .await;
    let auth = Some((a.id.as_str(), a.secret.as_str()));
    let (_, _, body) = s
        .post("/token", auth, &[("grant_type", "client_credentials")])
        .await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    s.post("/revoke", auth, &[("token", &token)]).await;
    assert_eq!(
        s.state.store.purge_expired(NOW).await.unwrap(),
        0,
        "nothing has expired yet"
    );
    assert!(s.state.store.is_token_revoked(&jwt_id(&token)).await.unwrap());
    assert_eq!(
        s.state.store.purge_expired(NOW + 600).await.unwrap(),
        1,
        "the revocation record of the expired token"
    );
}
on_both_backends!(expired_rows_are_purged);

fn jwt_id(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// A grant records its access token in the family only while the family
/// is live: revoking the family later revokes what was recorded, and a
/// grant in a family revoked before it records and issues nothing.
async fn grants_record_their_tokens_only_in_a_live_family(backend: Backend) {
    use stepup_server::store::{Claimed, OneTime};
    let store = Store::connect(&database_url(backend).await).await.unwrap();
    let fresh = |claimed: Claimed| match claimed {
        Claimed::Fresh(claim) => claim,
        other => panic!("expected a fresh claim, got {other:?}"),
    };
    for (family, code) in [("live", "code-1"), ("revoked", "code-2")] {
        assert!(
            store
                .store_code(family, "web", "alice", code, "{}", NOW + 60, None, NOW)
                .await
                .unwrap()
        );
    }

    let claim = fresh(store.claim_one_time(OneTime::Code, "code-1", NOW).await.unwrap());
    let refresh = Some(("refresh-1", "{}", NOW + 3600));
    assert!(claim.record_issued("jti-1", NOW + 600, refresh).await.unwrap());
    assert!(!store.is_token_revoked("jti-1").await.unwrap());
    store.revoke_family("live", NOW + 1).await.unwrap();
    assert!(
        store.is_token_revoked("jti-1").await.unwrap(),
        "the access token was recorded in its family"
    );

    store.revoke_family("revoked", NOW).await.unwrap();
    let claim = fresh(store.claim_one_time(OneTime::Code, "code-2", NOW).await.unwrap());
    let refresh = Some(("refresh-2", "{}", NOW + 3600));
    assert!(!claim.record_issued("jti-2", NOW + 600, refresh).await.unwrap());
    assert!(matches!(
        store
            .claim_one_time(OneTime::Refresh, "refresh-2", NOW)
            .await
            .unwrap(),
        Claimed::NotFound
    ));
    // The code stays used.
    assert!(matches!(
        store.claim_one_time(OneTime::Code, "code-2", NOW).await.unwrap(),
        Claimed::Replayed { .. }
    ));
}
on_both_backends!(grants_record_their_tokens_only_in_a_live_family);
