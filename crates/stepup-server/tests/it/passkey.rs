//! Passkeys over real HTTP with a software authenticator
//! (webauthn-authenticator-rs): registration from the account page after a
//! fresh sign-in, step-up with the passkey, and the refusals: replayed and
//! stale answers, another origin, another user's passkey, malformed forms.

use std::sync::atomic::Ordering;

use ring::rand::SystemRandom;
use serde_json::{Value, json};
use stepup_core::UnixTime;
use stepup_core::totp::TotpSecret;
use stepup_server::users;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::fixtures::*;
use crate::flow::{Browser, PASSWORD, Page, exchange, jwt_claims};
use crate::on_both_backends;

fn unescape(html: &str) -> String {
    html.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The WebAuthn options a passkey page hands to its script.
fn options(page: &Page) -> Value {
    let marker = "data-options=\"";
    let start = page
        .body
        .find(marker)
        .unwrap_or_else(|| panic!("no passkey options in {} {}", page.status, page.body))
        + marker.len();
    let end = start + page.body[start..].find('"').unwrap();
    serde_json::from_str(&unescape(&page.body[start..end])).unwrap()
}

fn origin(s: &TestServer) -> Url {
    Url::parse(&s.issuer).unwrap()
}

/// A server reached as localhost, with `alice` and `bob` (TOTP enrolled,
/// their secrets returned in that order) and `carol` (password only).
async fn setup(backend: Backend) -> (TestServer, TotpSecret, TotpSecret) {
    let s = start_by_name(backend).await;
    s.register(
        "web",
        stepup_server::client::AuthMethod::None,
        &["authorization_code", "refresh_token"],
        &["profile"],
    )
    .await;
    let rng = SystemRandom::new();
    for name in ["alice", "bob", "carol"] {
        users::add_user(&s.state.store, name, PASSWORD, NOW, &rng)
            .await
            .unwrap();
    }
    let alice = users::enroll_totp(&s.state.store, "alice", &rng).await.unwrap();
    let bob = users::enroll_totp(&s.state.store, "bob", &rng).await.unwrap();
    (s, alice, bob)
}

async fn get(b: &Browser, s: &TestServer, path: &str) -> Page {
    Browser::page(b.http.get(s.url(path)).send().await.unwrap()).await
}

async fn post(b: &Browser, s: &TestServer, path: &str, form: &[(&str, &str)]) -> Page {
    Browser::page(b.http.post(s.url(path)).form(form).send().await.unwrap()).await
}

/// Signs in to the account page (password, then the code when `totp`),
/// and returns that page.
async fn account_sign_in(b: &Browser, s: &TestServer, user: &str, totp: Option<&TotpSecret>) -> Page {
    let page = get(b, s, "/account/passkeys").await;
    assert!(page.is_password_page(), "{}", page.body);
    assert!(page.body.contains("your account"), "{}", page.body);
    let mut page = b
        .submit(
            s,
            "/login/password",
            &page,
            &[("username", user), ("password", PASSWORD)],
        )
        .await;
    if let Some(secret) = totp {
        // The strongest level this user can reach is asked: the code too.
        assert!(page.is_otp_page(), "{}", page.body);
        let code = secret.code_at(s.state_now());
        page = b.submit(s, "/login/otp", &page, &[("code", &code)]).await;
    }
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/account/passkeys"));
    let page = get(b, s, "/account/passkeys").await;
    assert_eq!(page.status, 200, "{}", page.body);
    page
}

trait Now {
    fn state_now(&self) -> UnixTime;
}

impl Now for TestServer {
    fn state_now(&self) -> UnixTime {
        UnixTime(self.clock.0.load(Ordering::SeqCst))
    }
}

/// Registers a passkey on the account page; returns the page after.
async fn register(b: &Browser, s: &TestServer, page: &Page, key: &mut SoftPasskey, name: &str) -> Page {
    let ccr: CreationChallengeResponse = serde_json::from_value(options(page)).unwrap();
    let credential = key.do_registration(origin(s), ccr).unwrap();
    let ceremony = page.hidden("ceremony");
    post(
        b,
        s,
        "/account/passkeys",
        &[
            ("ceremony", &ceremony),
            ("name", name),
            ("credential", &serde_json::to_string(&credential).unwrap()),
        ],
    )
    .await
}

/// Answers a passkey sign-in page with `key` at `origin`.
fn assertion(page: &Page, key: &mut SoftPasskey, origin: Url) -> String {
    let rcr: RequestChallengeResponse = serde_json::from_value(options(page)).unwrap();
    serde_json::to_string(&key.do_authentication(origin, rcr).unwrap()).unwrap()
}

async fn register_then_step_up(backend: Backend) {
    let (s, secret, _) = setup(backend).await;
    let b = Browser::new();

    let page = account_sign_in(&b, &s, "alice", Some(&secret)).await;
    assert!(page.body.contains("no passkey yet"), "{}", page.body);
    assert!(page.body.contains("<script src=\"/assets/passkey.js\">"));
    let options = options(&page);
    // Discoverable when the authenticator can, so it also signs in alone;
    // user verification required (a passkey is then a factor by itself).
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["residentKey"],
        "preferred"
    );
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["userVerification"],
        "required"
    );
    assert_eq!(options["publicKey"]["rp"]["id"], "localhost");

    let mut key = SoftPasskey::new(true);
    let ccr: CreationChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let credential = serde_json::to_string(&key.do_registration(origin(&s), ccr).unwrap()).unwrap();
    let ceremony = page.hidden("ceremony");
    let form = [
        ("ceremony", ceremony.as_str()),
        ("name", "Laptop"),
        ("credential", credential.as_str()),
    ];
    let added = post(&b, &s, "/account/passkeys", &form).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(added.body.contains("Passkey added"), "{}", added.body);
    assert!(added.body.contains("Laptop"), "{}", added.body);
    // The page now excludes the registered credential.
    let excluded = crate::passkey::options(&added)["publicKey"]["excludeCredentials"].clone();
    assert_eq!(excluded.as_array().map(Vec::len), Some(1), "{excluded}");
    // Alice now has a passkey: the strongest level she can reach needs it,
    // so managing passkeys again asks for it first; the same answer sent
    // again adds nothing.
    let again = post(&b, &s, "/account/passkeys", &form).await;
    assert!(again.body.contains("Use your passkey"), "{}", again.body);
    let alice = s.state.store.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(alice.passkeys, 1);

    // A step-up to the passkey-only level: only the passkey is asked.
    s.clock.0.fetch_add(120, Ordering::SeqCst);
    let page = b.authorize(&s, &[("acr_values", "urn:stepup:acr:phr")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("Use your passkey") && !page.is_password_page(),
        "{}",
        page.body
    );
    let allowed = crate::passkey::options(&page)["publicKey"]["allowCredentials"].clone();
    assert_eq!(
        allowed.as_array().map(Vec::len),
        Some(1),
        "the user's own passkey: {allowed}"
    );
    let answer = assertion(&page, &mut key, origin(&s));
    let fields = [
        ("ceremony", page.hidden("ceremony")),
        ("credential", answer.clone()),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = b.submit(&s, "/login/passkey", &page, &fields).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let (status, tokens) = exchange(&s, &done.redirect_param("code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    let at = jwt_claims(tokens["access_token"].as_str().unwrap());
    assert_eq!(at["acr"], "urn:stepup:acr:phr");
    assert_eq!(at["amr"], json!(["hwk"]));
    assert_eq!(at["auth_time"], NOW + 120);

    // The same assertion replayed on the same form: the ceremony is gone.
    let replay = b.submit(&s, "/login/passkey", &page, &fields).await;
    assert!(
        replay.body.contains("expired or was already used") || replay.body.contains("Sign-in expired"),
        "{} {}",
        replay.status,
        replay.body
    );
    // ... and on a new sign-in's ceremony: the challenge differs.
    let page = b
        .authorize(&s, &[("acr_values", "urn:stepup:acr:phr"), ("prompt", "login")])
        .await;
    let fields = [("ceremony", page.hidden("ceremony")), ("credential", answer)];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stale = b.submit(&s, "/login/passkey", &page, &fields).await;
    assert_eq!(stale.status, 401, "{}", stale.body);
    assert!(stale.body.contains("could not be verified"), "{}", stale.body);

    // With a passkey the account page now asks for the strongest level the
    // user can reach: the passkey.
    let fresh = Browser::new();
    let page = get(&fresh, &s, "/account/passkeys").await;
    let page = fresh
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert!(page.body.contains("Use your passkey"), "{}", page.body);
}
on_both_backends!(register_then_step_up);

async fn refusals(backend: Backend) {
    let (s, secret, bob_secret) = setup(backend).await;

    // A stolen password alone does not open the account page of a user
    // with a second factor.
    let thief = Browser::new();
    let page = get(&thief, &s, "/account/passkeys").await;
    let page = thief
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert!(page.is_otp_page(), "{}", page.body);
    let direct = get(&thief, &s, "/account/passkeys").await;
    assert!(
        direct.is_password_page() || direct.is_otp_page(),
        "{}",
        direct.body
    );
    assert!(!direct.body.contains("Add a passkey"), "{}", direct.body);

    // Alice registers a passkey.
    let alice = Browser::new();
    let page = account_sign_in(&alice, &s, "alice", Some(&secret)).await;
    let mut alice_key = SoftPasskey::new(true);
    assert_eq!(register(&alice, &s, &page, &mut alice_key, "A").await.status, 200);

    // Bob signs in to his account page. A registration answer made for
    // another origin is refused.
    let bob = Browser::new();
    let page = account_sign_in(&bob, &s, "bob", Some(&bob_secret)).await;
    let ccr: CreationChallengeResponse = serde_json::from_value(options(&page)).unwrap();
    let port = Url::parse(&s.issuer).unwrap().port().unwrap();
    // Another site on the same host: the RP ID matches, the origin not.
    let evil = Url::parse(&format!("http://localhost:{}", port.wrapping_add(1))).unwrap();
    let mut other_key = SoftPasskey::new(true);
    let credential = serde_json::to_string(&other_key.do_registration(evil.clone(), ccr).unwrap()).unwrap();
    let ceremony = page.hidden("ceremony");
    let refused = post(
        &bob,
        &s,
        "/account/passkeys",
        &[("ceremony", &ceremony), ("credential", &credential)],
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("could not be registered"),
        "{}",
        refused.body
    );
    // A form without the ceremony of the page (a cross-site post) is refused.
    let forged = post(
        &bob,
        &s,
        "/account/passkeys",
        &[("ceremony", "guess"), ("credential", "{}")],
    )
    .await;
    assert_eq!(forged.status, 400);
    assert!(
        forged.body.contains("expired or was already used"),
        "{}",
        forged.body
    );
    // An overlong name is refused before the ceremony is checked.
    let long = "x".repeat(65);
    let named = post(
        &bob,
        &s,
        "/account/passkeys",
        &[("ceremony", "guess"), ("name", &long)],
    )
    .await;
    assert_eq!(named.status, 400);
    // Then Bob registers his own.
    let mut bob_key = SoftPasskey::new(true);
    let added = register(&bob, &s, &forged, &mut bob_key, "B").await;
    assert!(added.body.contains("Passkey added"), "{}", added.body);
    let bobs = s.state.store.user_by_username("bob").await.unwrap().unwrap();
    assert_eq!(bobs.passkeys, 1, "the refused answers added nothing");

    // Bob steps up: Alice's passkey (held by someone at Bob's session) does
    // not count, nor does an answer for another origin, nor garbage.
    let page = bob.authorize(&s, &[("acr_values", "urn:stepup:acr:phr")]).await;
    assert!(page.body.contains("Use your passkey"), "{}", page.body);
    // Alice's authenticator is not asked for Bob's credential; it answers
    // with its own when told to.
    let mut rcr_any = options(&page);
    rcr_any["publicKey"]["allowCredentials"] = allow_list(&s, "alice").await;
    let rcr_any: RequestChallengeResponse = serde_json::from_value(rcr_any).unwrap();
    let alice_answer =
        serde_json::to_string(&alice_key.do_authentication(origin(&s), rcr_any).unwrap()).unwrap();
    let submit = |answer: String| {
        let (bob, s, page) = (&bob, &s, &page);
        async move {
            let fields = [("ceremony", page.hidden("ceremony")), ("credential", answer)];
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            bob.submit(s, "/login/passkey", page, &fields).await
        }
    };
    let refused = submit(alice_answer).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("could not be verified"), "{}", refused.body);

    let page = bob.authorize(&s, &[("acr_values", "urn:stepup:acr:phr")]).await;
    let rcr: RequestChallengeResponse = serde_json::from_value(options(&page)).unwrap();
    let evil_answer = serde_json::to_string(&bob_key.do_authentication(evil, rcr).unwrap()).unwrap();
    let fields = [("ceremony", page.hidden("ceremony")), ("credential", evil_answer)];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = bob.submit(&s, "/login/passkey", &page, &fields).await;
    assert!(refused.body.contains("could not be verified"), "{}", refused.body);

    let mut page = bob.authorize(&s, &[("acr_values", "urn:stepup:acr:phr")]).await;
    for garbage in ["", "{", "{\"id\":1}", "[]"] {
        let fields = [
            ("ceremony", page.hidden("ceremony")),
            ("credential", garbage.to_owned()),
        ];
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let refused = bob.submit(&s, "/login/passkey", &page, &fields).await;
        assert_eq!(refused.status, 401, "{garbage}: {}", refused.body);
        assert!(refused.body.contains("malformed"), "{garbage}: {}", refused.body);
        // Each answer uses up its prompt; the page comes back with a new one.
        assert_ne!(refused.hidden("ceremony"), page.hidden("ceremony"));
        page = refused;
    }
    let answer = assertion(&page, &mut bob_key, origin(&s));
    let fields = [("ceremony", page.hidden("ceremony")), ("credential", answer)];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = bob.submit(&s, "/login/passkey", &page, &fields).await;
    assert_eq!(done.status, 303, "{}", done.body);
}
on_both_backends!(refusals);

/// Issue 16 §1: a user who holds nothing but a password cannot bind a
/// passkey by themselves (a stolen password would then reach every level);
/// the page says what to do, and nothing is registered. Once an
/// administrator enrols a second factor, binding asks for both.
async fn a_password_alone_binds_no_passkey(backend: Backend) {
    let (s, _, _) = setup(backend).await;
    let thief = Browser::new();
    let page = get(&thief, &s, "/account/passkeys").await;
    assert!(page.is_password_page(), "{}", page.body);
    let refused = thief
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", "carol"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("only a password"), "{}", refused.body);
    assert!(!refused.body.contains("data-options"), "{}", refused.body);
    // Signed in at the password level now, the page still refuses, and a
    // registration posted directly (with any ceremony) registers nothing.
    let again = get(&thief, &s, "/account/passkeys").await;
    assert_eq!(again.status, 403, "{}", again.body);
    assert!(again.body.contains("only a password"), "{}", again.body);
    let posted = post(
        &thief,
        &s,
        "/account/passkeys",
        &[("ceremony", "guess"), ("credential", "{}")],
    )
    .await;
    assert_eq!(posted.status, 403, "{}", posted.body);
    let carol = s.state.store.user_by_username("carol").await.unwrap().unwrap();
    assert_eq!(carol.passkeys, 0);

    // The control: an administrator enrols TOTP; binding then asks for the
    // password and the code, and registers.
    let secret = users::enroll_totp(&s.state.store, "carol", &SystemRandom::new())
        .await
        .unwrap();
    let carol_browser = Browser::new();
    let page = account_sign_in(&carol_browser, &s, "carol", Some(&secret)).await;
    let mut key = SoftPasskey::new(true);
    let added = register(&carol_browser, &s, &page, &mut key, "C").await;
    assert!(added.body.contains("Passkey added"), "{}", added.body);
}
on_both_backends!(a_password_alone_binds_no_passkey);

/// A user's credentials, as an allow-list.
async fn allow_list(s: &TestServer, user: &str) -> Value {
    let user = s.state.store.user_by_username(user).await.unwrap().unwrap();
    let keys = s.state.store.passkeys_of(&user.id).await.unwrap();
    keys.iter()
        .map(|k| json!({"type": "public-key", "id": k.credential_id}))
        .collect()
}

#[tokio::test]
async fn passkeys_need_a_domain_name() {
    // The issuer of `start` is http://127.0.0.1:PORT.
    let s = start(Backend::Sqlite).await;
    let b = Browser::new();
    let page = get(&b, &s, "/account/passkeys").await;
    assert_eq!(page.status, 404);
    assert!(page.body.contains("domain name"), "{}", page.body);
}

#[tokio::test]
async fn the_script_is_served_from_this_origin() {
    let s = start_by_name(Backend::Sqlite).await;
    let response = reqwest::get(s.url("/assets/passkey.js")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("navigator.credentials.get")
    );
}

/// An old password plus one recent code (a client's step-up) is not a
/// fresh sign-in: the account page asks for both again.
async fn account_page_needs_every_factor_fresh(backend: Backend) {
    let (s, secret, _) = setup(backend).await;
    let b = Browser::new();
    let page = b.authorize(&s, &[]).await;
    let done = b
        .submit(
            &s,
            "/login/password",
            &page,
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    s.clock.0.fetch_add(3 * 3600, Ordering::SeqCst);
    let page = b.authorize(&s, &[("acr_values", "urn:stepup:acr:mfa")]).await;
    assert!(page.is_otp_page(), "{}", page.body);
    let code = secret.code_at(s.state_now());
    let done = b.submit(&s, "/login/otp", &page, &[("code", &code)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let account = get(&b, &s, "/account/passkeys").await;
    assert!(!account.body.contains("Add a passkey"), "{}", account.body);
    assert!(account.is_password_page(), "the password again: {}", account.body);
}
on_both_backends!(account_page_needs_every_factor_fresh);

/// Two prompts answered in the wrong order: the answer with the older
/// signature counter comes second and is refused (it may come from a
/// cloned authenticator), though its own prompt saw an older counter.
async fn a_signature_counter_never_goes_back(backend: Backend) {
    let (s, _, bob_secret) = setup(backend).await;
    let b = Browser::new();
    let page = account_sign_in(&b, &s, "bob", Some(&bob_secret)).await;
    let mut key = SoftPasskey::new(true);
    assert!(
        register(&b, &s, &page, &mut key, "B")
            .await
            .body
            .contains("Passkey added")
    );

    let first = b.authorize(&s, &[("acr_values", "urn:stepup:acr:phr")]).await;
    let second = b.authorize(&s, &[("acr_values", "urn:stepup:acr:phr")]).await;
    let older = assertion(&first, &mut key, origin(&s));
    let newer = assertion(&second, &mut key, origin(&s));
    let done = b
        .submit(
            &s,
            "/login/passkey",
            &second,
            &[("ceremony", &second.hidden("ceremony")), ("credential", &newer)],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let refused = b
        .submit(
            &s,
            "/login/passkey",
            &first,
            &[("ceremony", &first.hidden("ceremony")), ("credential", &older)],
        )
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(refused.body.contains("could not be verified"), "{}", refused.body);
    // A new prompt is shown at once.
    assert!(refused.body.contains("Use your passkey"), "{}", refused.body);
}
on_both_backends!(a_signature_counter_never_goes_back);

/// Ceremonies taken while other sign-ins write: on SQLite a transaction
/// that reads, then writes, used to fail with "database is locked" when
/// another writer committed in between (the simulator found it); it now
/// takes the write lock at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ceremonies_are_taken_under_concurrent_writes() {
    use stepup_server::store::Ceremony;
    let url = database_url(Backend::Sqlite).await;
    let store = stepup_server::Store::connect(&url).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let id = format!("c-{t}-{i}");
                store
                    .insert_ceremony(&id, Ceremony::Authenticate, "pending", "{}", NOW + 60)
                    .await
                    .unwrap();
                let taken = store
                    .take_ceremony(&id, Ceremony::Authenticate, "pending", NOW)
                    .await
                    .unwrap_or_else(|e| panic!("take {id}: {e}"));
                assert_eq!(taken.as_deref(), Some("{}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
