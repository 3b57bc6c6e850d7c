//! Passkeys (WebAuthn Level 3, verified by webauthn-rs): the `hwk` factor.
//!
//! Signing in: a user already known to the session (a step-up) is asked
//! for one of their own passkeys; an unknown user signs in with a
//! discoverable passkey, which names its user. Registering: from the
//! account page, after proving afresh the strongest level the user can
//! currently reach, so that a stolen password alone cannot add a passkey
//! and bypass the second factor.
//!
//! The pages are plain forms; one script (served from this origin, allowed
//! by the pages' CSP) runs the browser's ceremony and puts its answer in
//! the form. Ceremony state stays in the database, bound to the sign-in
//! (or the registering user) and taken once, so any instance can finish
//! it and an answer cannot be replayed.

use crate::events::EventKind;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stepup_core::UnixTime;
use stepup_core::authentication::{Factor, Plan, Proofs, binding_level, binding_levels, plan};
use webauthn_rs::prelude::{
    CreationChallengeResponse, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn,
    WebauthnBuilder, WebauthnError,
};

use crate::authorize::{self, AuthorizationRequest};
use crate::pages::{self, FormContext};
use crate::server::ServerState;
use crate::store::{Ceremony, StoreError, StoredPasskey, StoredPending, StoredSession, StoredUser};
use crate::token::random_id;

/// The relying party for this issuer, or `None` when the issuer's host is
/// an IP address: WebAuthn scopes credentials to a domain (the RP ID), and
/// browsers refuse IP addresses there. Reach the server by name (for
/// example `http://localhost:8080`) to use passkeys.
pub(crate) fn relying_party(issuer: &str) -> Option<Webauthn> {
    let url = Url::parse(issuer).ok()?;
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_owned(),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
    };
    let origin = Url::parse(&url.origin().ascii_serialization()).ok()?;
    let built = WebauthnBuilder::new(&host, &origin).and_then(|b| b.rp_name("stepup").build());
    match built {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "passkeys are off: the issuer cannot be a WebAuthn relying party");
            None
        }
    }
}

/// The WebAuthn user handle of a user: derived from the subject, so it is
/// stable across passkeys, and opaque (no user name in it), as WebAuthn
/// §14.6.1 asks.
pub(crate) fn user_handle(user_id: &str) -> Uuid {
    let hash = digest(
        &SHA256,
        format!("stepup webauthn user handle\0{user_id}").as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    Uuid::from_bytes(bytes)
}

/// How long a started ceremony may be finished: longer than the browser's
/// own timeout (webauthn-rs asks for 5 minutes), so a credential the
/// authenticator made in time is never refused as late.
const CEREMONY_SECONDS: i64 = 360;

/// How recent the proofs must be to manage passkeys.
const ACCOUNT_FRESH_SECONDS: u64 = 300;

/// The state of a sign-in ceremony.
#[derive(Serialize, Deserialize)]
enum SignInCeremony {
    /// For the user of the session, with their passkeys listed.
    Known {
        user_id: String,
        state: PasskeyAuthentication,
    },
    /// Any user, named by the discoverable passkey.
    Discoverable { state: DiscoverableAuthentication },
}

/// A WebAuthn option object as the page's script expects it: the
/// `publicKey` member only. webauthn-rs asks for conditional mediation
/// (autofill) in discoverable sign-in; the page runs a modal ceremony on a
/// button instead, so mediation is dropped.
fn options_json<T: Serialize>(options: &T) -> Option<Value> {
    let mut value = serde_json::to_value(options).ok()?;
    value.as_object_mut()?.remove("mediation");
    Some(value)
}

fn unavailable() -> Response {
    pages::error_page(
        StatusCode::NOT_FOUND,
        "Passkeys unavailable",
        "Passkeys need this server to be reached by a domain name (for example localhost), not an IP address.",
    )
}

fn decode_passkey(stored: &StoredPasskey) -> Option<Passkey> {
    serde_json::from_str(&stored.credential)
        .map_err(|e| tracing::error!(error = %e, "a stored passkey does not parse"))
        .ok()
}

/// The page asking for a passkey during a sign-in. `user` is the user of
/// the session, when there is one and they have passkeys.
pub(crate) async fn sign_in_page(
    state: &ServerState,
    ctx: &FormContext<'_>,
    pending: &StoredPending,
    user: Option<&StoredUser>,
) -> Response {
    let Some(webauthn) = state.webauthn.as_deref() else {
        return unavailable();
    };
    let now = state.clock.now().seconds();
    let known = match user {
        Some(u) if u.passkeys > 0 => match state.store.passkeys_of(&u.id).await {
            Ok(list) => Some((u, list.iter().filter_map(decode_passkey).collect::<Vec<_>>())),
            Err(e) => return server_error(&e),
        },
        _ => None,
    };
    let signed_in_as = known.as_ref().map(|(u, _)| u.username.clone());
    let started = match known {
        Some((u, keys)) if !keys.is_empty() => webauthn.start_passkey_authentication(&keys).map(|(o, s)| {
            (
                options_json(&o),
                SignInCeremony::Known {
                    user_id: u.id.clone(),
                    state: s,
                },
            )
        }),
        _ => webauthn
            .start_discoverable_authentication()
            .map(|(o, s)| (options_json(&o), SignInCeremony::Discoverable { state: s })),
    };
    let (Ok((Some(options), ceremony)), Ok(id)) = (started, random_id(&state.rng)) else {
        return server_error(&"the passkey sign-in could not start");
    };
    let Ok(ceremony_json) = serde_json::to_string(&ceremony) else {
        return authorize::server_error_page();
    };
    let stored = state.store.insert_ceremony(
        &id,
        Ceremony::Authenticate,
        &pending.id,
        &ceremony_json,
        now + CEREMONY_SECONDS,
    );
    if let Err(e) = stored.await {
        return server_error(&e);
    }
    // "Signed in as" only when the passkey must be this user's: a
    // discoverable passkey may name anyone.
    pages::passkey_sign_in_page(ctx, &id, &options.to_string(), signed_in_as.as_deref())
}

/// `GET /login/passkey?request=…`: sign in with a passkey instead of the
/// factor the page offered.
pub(crate) async fn sign_in_get(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let now = state.clock.now().seconds();
    let (pending, req) =
        match authorize::pending_for_browser(&state, &headers, query.get("request"), now).await {
            Ok(found) => found,
            Err(response) => return response,
        };
    let session = authorize::current_session(&state, &headers, now).await;
    let ctx = FormContext {
        request_id: &pending.id,
        csrf: &pending.csrf,
        client_id: authorize::shown_client(&req),
        reason: req.reason.as_deref(),
        error: None,
    };
    sign_in_page(&state, &ctx, &pending, session.as_ref().map(|(_, u)| u)).await
}

/// `POST /login/passkey`: the answer of the browser's ceremony.
pub(crate) async fn sign_in_post(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending, req) = match authorize::login_form(&state, &headers, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = state.clock.now().seconds();
    let session = authorize::current_session(&state, &headers, now).await;
    // A failed answer shows a new passkey prompt: the user chose a
    // passkey, and each prompt is used once.
    let retry = |error: &'static str| {
        let (state, pending, req, user) = (&state, &pending, &req, session.as_ref().map(|(_, u)| u.clone()));
        async move {
            let ctx = FormContext {
                request_id: &pending.id,
                csrf: &pending.csrf,
                client_id: authorize::shown_client(req),
                reason: req.reason.as_deref(),
                error: Some(error),
            };
            sign_in_page(state, &ctx, pending, user.as_ref()).await
        }
    };
    let Some(webauthn) = state.webauthn.as_deref() else {
        return unavailable();
    };
    let ceremony_id = form.get("ceremony").map(String::as_str).unwrap_or("");
    let taken = state
        .store
        .take_ceremony(ceremony_id, Ceremony::Authenticate, &pending.id, now)
        .await;
    let ceremony: SignInCeremony = match taken {
        Ok(Some(json)) => match serde_json::from_str(&json) {
            Ok(c) => c,
            Err(e) => return server_error(&e),
        },
        Ok(None) => return retry("This passkey prompt has expired or was already used. Try again.").await,
        Err(e) => return server_error(&e),
    };
    let answer = form.get("credential").map(String::as_str).unwrap_or("");
    let Ok(credential) = serde_json::from_str::<PublicKeyCredential>(answer) else {
        return retry("The browser's passkey answer was malformed. Try again.").await;
    };
    const NOT_VERIFIED: &str = "This passkey could not be verified. Try again, or use another passkey.";
    // The passkey that answered, and its user.
    let credential_id = URL_SAFE_NO_PAD.encode(credential.get_credential_id());
    let stored = match state.store.passkey(&credential_id).await {
        Ok(Some(p)) => p,
        Ok(None) => return retry(NOT_VERIFIED).await,
        Err(e) => return server_error(&e),
    };
    let Some(mut key) = decode_passkey(&stored) else {
        return authorize::server_error_page();
    };
    let verified = match ceremony {
        SignInCeremony::Known { user_id, state: s } => {
            // Only the passkeys listed for this user were allowed.
            if user_id != stored.user_id {
                return retry(NOT_VERIFIED).await;
            }
            webauthn.finish_passkey_authentication(&credential, &s)
        }
        SignInCeremony::Discoverable { state: s } => {
            // The user handle the authenticator returned must be the one
            // of the passkey's user.
            match webauthn.identify_discoverable_authentication(&credential) {
                Ok((handle, _)) if handle == user_handle(&stored.user_id) => {
                    webauthn.finish_discoverable_authentication_v2(&credential, s, &key)
                }
                _ => return retry(NOT_VERIFIED).await,
            }
        }
    };
    let result = match verified {
        Ok(r) if r.user_verified() => r,
        Ok(_) => return retry(NOT_VERIFIED).await,
        Err(
            e @ (WebauthnError::CredentialPossibleCompromise
            | WebauthnError::CredentialBackupEligibilityInconsistent),
        ) => {
            tracing::error!(error = %e, user = %stored.user_id, credential = %credential_id,
                "passkey assertion refused: possibly a cloned authenticator");
            return retry(NOT_VERIFIED).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "passkey assertion refused");
            return retry(NOT_VERIFIED).await;
        }
    };
    // The signature counter must move forward from the stored one (not
    // from the copy in the ceremony, which may be older): checked and
    // recorded in one conditional update, so neither a cloned
    // authenticator nor a concurrent sign-in can take it back.
    key.update_credential(&result);
    let Ok(json) = serde_json::to_string(&key) else {
        return authorize::server_error_page();
    };
    let counter = i64::from(result.counter());
    match state
        .store
        .passkey_used(&credential_id, &json, counter, now)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::error!(
                user = %stored.user_id,
                credential = %credential_id,
                counter,
                stored = stored.counter,
                "passkey signature counter did not move forward: possibly a cloned authenticator"
            );
            return retry(NOT_VERIFIED).await;
        }
        Err(e) => return server_error(&e),
    }
    let user = match state.store.user_by_id(&stored.user_id).await {
        Ok(Some(u)) if u.disabled_at.is_none() => u,
        // The same answer as a passkey that does not verify.
        Ok(Some(_)) => return retry(NOT_VERIFIED).await,
        Ok(None) => return server_error(&"the passkey's user is gone"),
        Err(e) => return server_error(&e),
    };
    // A passkey outranks the code: its sign-in clears the count of wrong
    // codes in a row (codes refused for it work again).
    if let Err(e) = state.store.clear_code_failures(&user.id).await {
        return server_error(&e);
    }
    let Some((session, cookie)) = authorize::signed_in(&state, session, &user, Factor::Hwk, now).await else {
        return server_error(&"the session could not be recorded");
    };
    let device_cookie = crate::known_device::second_factor_proven(&state, &headers, &user, now).await;
    let _ = state.store.set_pending_user(&pending.id, &user.id).await;
    let mut req = req;
    authorize::note_proven(&state, &pending, &mut req, Factor::Hwk.amr()).await;
    let mut response = authorize::advance(&state, &pending, &req, Some((session, user)), None).await;
    for cookie in std::iter::once(cookie).chain(device_cookie) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// Whether a session may manage the user's passkeys now: every factor of
/// the level binding asks of this user (`binding_level`: the strongest
/// they reach, never by a password alone) proven within `window` seconds
/// (one recent factor beside an old one is not a fresh sign-in).
fn may_manage(
    state: &ServerState,
    session: &StoredSession,
    user: &StoredUser,
    now: i64,
    window: u64,
) -> bool {
    let enrolled = authorize::enrolled(state, user);
    let levels = binding_levels(&state.config.auth_levels);
    let Some(level) = binding_level(&state.config.auth_levels, &enrolled) else {
        return false;
    };
    let proofs = Proofs {
        pwd: session.pwd_at.map(UnixTime),
        otp: session.otp_at.map(UnixTime),
        hwk: session.hwk_at.map(UnixTime),
    };
    let since = now.saturating_sub_unsigned(window);
    let ask = stepup_core::authentication::Ask {
        acr_values: vec![level],
        max_age: Some(window),
        fresh_since: Some(UnixTime(since)),
    };
    matches!(
        plan(&levels, &proofs, Some(&enrolled), &ask, UnixTime(now)),
        Plan::Satisfied { .. }
    )
}

/// Whether `user` holds a factor that lets them bind another by
/// themselves (more than a password).
pub(crate) fn may_bind(state: &ServerState, user: &StoredUser) -> bool {
    binding_level(&state.config.auth_levels, &authorize::enrolled(state, user)).is_some()
}

/// The answer to a user who holds nothing but a password: they cannot
/// bind a second factor by themselves (a stolen password would then give
/// every level), so the page says who can.
pub(crate) fn password_only_page() -> Response {
    pages::error_page(
        StatusCode::FORBIDDEN,
        "A second factor is needed first",
        "Your account has only a password, and a password alone cannot add a passkey: \
         anyone who learnt it could then pass every stronger check as you. \
         Ask your administrator to enrol a second factor (an authenticator app), \
         then come back to this page and confirm with both.",
    )
}

/// The account page's path: where its sign-in comes back to.
pub(crate) const ACCOUNT_PATH: &str = "/account/passkeys";

/// `GET /account/passkeys`: the user's passkeys and a button to add one;
/// a sign-in first when the session is missing or not fresh enough.
pub(crate) async fn account_get(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    if state.webauthn.is_none() {
        return unavailable();
    }
    let now = state.clock.now().seconds();
    match authorize::current_session(&state, &headers, now).await {
        Some((s, u)) if may_manage(&state, &s, &u, now, ACCOUNT_FRESH_SECONDS) => {
            account_page(&state, &u, None, None).await
        }
        Some((_, u)) if !may_bind(&state, &u) => password_only_page(),
        session => account_sign_in(&state, session, now).await,
    }
}

/// Starts the sign-in that guards the account page.
async fn account_sign_in(
    state: &ServerState,
    session: Option<(StoredSession, StoredUser)>,
    now: i64,
) -> Response {
    let req = AuthorizationRequest {
        client_id: String::new(),
        redirect_uri: ACCOUNT_PATH.to_owned(),
        state: None,
        nonce: None,
        scopes: Vec::new(),
        code_challenge: String::new(),
        // Strongest first: the planner picks the first the user can reach;
        // once the user is known it is narrowed to that one.
        acr_values: state
            .config
            .auth_levels
            .iter()
            .rev()
            .map(|l| l.acr.as_str().to_owned())
            .collect(),
        max_age: None,
        fresh_since: Some(now),
        prompt_none: false,
        login_hint: None,
        device_id: None,
        dpop_jkt: None,
        authorization_details: None,
        reason: Some("Confirm it is you to manage your passkeys.".to_owned()),
        proven: Vec::new(),
        account: true,
        approved_by: None,
        resource: None,
    };
    authorize::start_sign_in(state, req, session, now).await
}

/// Renders the account page with a new registration ceremony.
async fn account_page(
    state: &ServerState,
    user: &StoredUser,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let Some(webauthn) = state.webauthn.as_deref() else {
        return unavailable();
    };
    let now = state.clock.now().seconds();
    let Ok(existing) = state.store.passkeys_of(&user.id).await else {
        return authorize::server_error_page();
    };
    let exclude = existing
        .iter()
        .filter_map(decode_passkey)
        .map(|p| p.cred_id().clone())
        .collect::<Vec<_>>();
    let started = webauthn.start_passkey_registration(
        user_handle(&user.id),
        &user.username,
        &user.username,
        Some(exclude),
    );
    let (Ok((options, registration)), Ok(id)) = (started, random_id(&state.rng)) else {
        return authorize::server_error_page();
    };
    let (Some(options), Ok(state_json)) = (creation_options(&options), serde_json::to_string(&registration))
    else {
        return authorize::server_error_page();
    };
    let stored = state.store.insert_ceremony(
        &id,
        Ceremony::Register,
        &user.id,
        &state_json,
        now + CEREMONY_SECONDS,
    );
    if stored.await.is_err() {
        return authorize::server_error_page();
    }
    let listed: Vec<pages::PasskeyRow<'_>> = existing
        .iter()
        .map(|p| pages::PasskeyRow {
            name: &p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        })
        .collect();
    pages::account_passkeys_page(&user.username, &listed, &id, &options.to_string(), notice, error)
}

/// Registration options as sent to the browser. webauthn-rs asks for a
/// server-side credential; a discoverable one ("preferred") is asked
/// instead so the passkey can also sign in without a user name, while an
/// authenticator that cannot store one still registers.
fn creation_options(options: &CreationChallengeResponse) -> Option<Value> {
    let mut value = options_json(options)?;
    let selection = value
        .get_mut("publicKey")?
        .as_object_mut()?
        .entry("authenticatorSelection")
        .or_insert_with(|| Value::Object(serde_json::Map::new()))
        .as_object_mut()?;
    selection.insert("residentKey".to_owned(), Value::from("preferred"));
    selection.insert("requireResidentKey".to_owned(), Value::from(false));
    Some(value)
}

/// `POST /account/passkeys`: the answer of the registration ceremony.
pub(crate) async fn account_post(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(webauthn) = state.webauthn.as_deref() else {
        return unavailable();
    };
    let now = state.clock.now().seconds();
    let user = match authorize::current_session(&state, &headers, now).await {
        // The page was shown while the sign-in was fresh; its ceremony may
        // take a while in the browser.
        Some((s, u))
            if may_manage(
                &state,
                &s,
                &u,
                now,
                ACCOUNT_FRESH_SECONDS + CEREMONY_SECONDS.unsigned_abs(),
            ) =>
        {
            u
        }
        Some((_, u)) if !may_bind(&state, &u) => return password_only_page(),
        session => return account_sign_in(&state, session, now).await,
    };
    let Ok(form) = stepup_core::authorization_request::params_from(&body) else {
        return pages::error_page(StatusCode::BAD_REQUEST, "Invalid form", "The form was malformed.");
    };
    let name = form.get("name").map(|n| n.trim()).unwrap_or("");
    let name = if name.is_empty() { "Passkey" } else { name };
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return account_page(
            &state,
            &user,
            None,
            Some("Give the passkey a name of at most 64 characters."),
        )
        .await;
    }
    // The ceremony id is the form's CSRF token: random, bound to this user,
    // and only on the page this user's browser loaded.
    let ceremony_id = form.get("ceremony").map(String::as_str).unwrap_or("");
    let registration: PasskeyRegistration = match state
        .store
        .take_ceremony(ceremony_id, Ceremony::Register, &user.id, now)
        .await
    {
        Ok(Some(json)) => match serde_json::from_str(&json) {
            Ok(r) => r,
            Err(e) => return server_error(&e),
        },
        Ok(None) => {
            return account_page(
                &state,
                &user,
                None,
                Some("This page had expired or was already used. Try again."),
            )
            .await;
        }
        Err(e) => return server_error(&e),
    };
    let answer = form.get("credential").map(String::as_str).unwrap_or("");
    let Ok(credential) = serde_json::from_str::<RegisterPublicKeyCredential>(answer) else {
        return account_page(
            &state,
            &user,
            None,
            Some("The browser's passkey answer was malformed. Try again."),
        )
        .await;
    };
    let key = match webauthn.finish_passkey_registration(&credential, &registration) {
        Ok(k) => k,
        Err(e) => {
            tracing::warn!(error = %e, "passkey registration refused");
            return account_page(
                &state,
                &user,
                None,
                Some("This passkey could not be registered. Try again."),
            )
            .await;
        }
    };
    let Ok(json) = serde_json::to_string(&key) else {
        return authorize::server_error_page();
    };
    let stored = StoredPasskey {
        credential_id: URL_SAFE_NO_PAD.encode(key.cred_id()),
        user_id: user.id.clone(),
        name: name.to_owned(),
        credential: json,
        counter: stored_counter(&key),
        created_at: now,
        last_used_at: None,
    };
    match state.store.insert_passkey(&stored).await {
        Ok(()) => {}
        // A credential is registered to one account only.
        Err(StoreError::Duplicate(_)) => {
            return account_page(&state, &user, None, Some("This passkey is already registered.")).await;
        }
        Err(e) => return server_error(&e),
    }
    crate::events::record(
        &state.store,
        &user.id,
        EventKind::FactorAdded,
        &format!("passkey {name:?}"),
        now,
    )
    .await;
    let user = StoredUser {
        passkeys: user.passkeys + 1,
        ..user
    };
    account_page(
        &state,
        &user,
        Some("Passkey added. You can now use it to sign in."),
        None,
    )
    .await
}

/// The signature counter of a registered passkey (webauthn-rs exposes it
/// only in the credential's serialised form).
fn stored_counter(key: &Passkey) -> i64 {
    serde_json::to_value(key)
        .ok()
        .and_then(|v| v["cred"]["counter"].as_i64())
        .unwrap_or(0)
}

/// `GET /assets/passkey.js`: the script of the passkey pages.
pub(crate) async fn script() -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../assets/passkey.js"),
    )
        .into_response();
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A failure of ours during a passkey ceremony: logged (a stored error or a
/// state that does not parse is never the user's fault), then the error page.
fn server_error(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "passkey ceremony failed");
    authorize::server_error_page()
}
