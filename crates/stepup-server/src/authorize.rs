//! The authorization endpoint (RFC 6749 §4.1, OpenID Connect Core §3.1.2)
//! and the login pages that run the step-up.
//!
//! A request is validated strictly: until `client_id` and `redirect_uri`
//! (exact string match) are known good, errors are shown on a page, never
//! redirected; after that they go back to the client with `state` and
//! `iss` (RFC 9207). Requested levels (`acr_values`, an essential `acr`
//! claim, or a scope bound to a level) are required, not hints (RFC 9470
//! §5): the planner in `stepup_core::authentication` picks the first the
//! user can reach, asks only for missing factors, and a request none of
//! whose levels can be reached ends in `unmet_authentication_requirements`.

use std::collections::HashMap;

use std::sync::Arc;
use stepup_core::authorization_request::{essential_acr, params_from, redirect_uri_matches};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stepup_core::authentication::{Ask, Enrolled, Factor, Plan, Proofs, binding_level, binding_levels, plan};
use stepup_core::pkce::CodeChallenge;
use stepup_core::{Acr, Scope, UnixTime};
use subtle::ConstantTimeEq;

use crate::client::{self, Client};
use crate::known_device;
use crate::pages::{self, FormContext};
use crate::server::ServerState;
use crate::session;
use crate::store::{Attempt, AttemptLimits, AttemptStart, StoredPending, StoredSession, StoredUser};
use crate::token::random_id;
use crate::users;

/// A validated authorization request, kept while the user authenticates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AuthorizationRequest {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) code_challenge: String,
    /// Required levels in preference order (empty: any).
    pub(crate) acr_values: Vec<String>,
    pub(crate) max_age: Option<u64>,
    /// `prompt=login` / `max_age=0`: proofs must be made after this time.
    pub(crate) fresh_since: Option<i64>,
    pub(crate) prompt_none: bool,
    pub(crate) login_hint: Option<String>,
    /// The client's identifier of the device it runs on, put in the
    /// access token (`device_id`) so resource servers can tell when the
    /// token is presented from another device.
    #[serde(default)]
    pub(crate) device_id: Option<String>,
    /// The DPoP key the code must be exchanged with (RFC 9449 §10).
    #[serde(default)]
    pub(crate) dpop_jkt: Option<String>,
    /// The transaction being approved (RFC 9396), checked against the
    /// configured types.
    #[serde(default)]
    pub(crate) authorization_details: Option<Value>,
    /// Why a step-up is asked, for the page.
    pub(crate) reason: Option<String>,
    /// Factors proven while this request was pending: with `prompt=login`
    /// or `max_age=0`, only these count (seconds are too coarse to tell a
    /// proof made just before the request from one made during it).
    #[serde(default)]
    pub(crate) proven: Vec<String>,
    /// The sign-in guarding the account page (no client: it ends back on
    /// that page, without a code).
    #[serde(default)]
    pub(crate) account: bool,
    /// The user who approved `authorization_details` on the approval page
    /// of this request (set by `approve`, only by that user's deliberate
    /// action): a transaction is never approved by a session alone.
    #[serde(default)]
    pub(crate) approved_by: Option<String>,
    /// The resource the tokens are asked for (RFC 8707), checked here
    /// against the client's registration so that a request for a resource
    /// the client may not reach fails before the user signs in.
    #[serde(default)]
    pub(crate) resource: Option<String>,
}

/// What a code (and the tokens issued from it) stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) user_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: String,
    pub(crate) acr: String,
    pub(crate) amr: Vec<String>,
    pub(crate) auth_time: i64,
    /// When the family's refresh tokens stop for good: set at the first
    /// refresh token, never moved by rotation.
    #[serde(default)]
    pub(crate) family_expires_at: Option<i64>,
    /// Where the user was when the code was issued (the client address's
    /// country), for the guard's geography rules.
    #[serde(default)]
    pub(crate) auth_country: Option<String>,
    /// The device the client said it runs on.
    #[serde(default)]
    pub(crate) device_id: Option<String>,
    /// The DPoP key the authorization request named (`dpop_jkt`): the code
    /// is exchanged only with a proof by that key (RFC 9449 §10).
    #[serde(default)]
    pub(crate) dpop_jkt: Option<String>,
    /// The DPoP key a public client's refresh tokens are bound to.
    #[serde(default)]
    pub(crate) bound_jkt: Option<String>,
    /// The transaction approved (RFC 9396).
    #[serde(default)]
    pub(crate) authorization_details: Option<Value>,
    /// The resource the authorization request named (RFC 8707): every
    /// access token of this grant is for it, whatever a token request says.
    #[serde(default)]
    pub(crate) resource: Option<String>,
}

/// Why a request is refused: on a page when the client or redirect URI is
/// not trusted, else back at the redirect URI.
enum Invalid {
    Page(&'static str, String),
    Redirect(Box<AuthorizationRequest>, &'static str, String),
}

/// Appends response parameters to a redirect URI, keeping its own query.
fn redirect_to(uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(uri) else {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The redirect URI is not valid.",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
    }
    let mut response = Redirect::to(url.as_str()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error_redirect(
    state: &ServerState,
    req: &AuthorizationRequest,
    code: &str,
    description: &str,
) -> Response {
    if req.account {
        return pages::error_page(StatusCode::FORBIDDEN, "Sign-in not completed", description);
    }
    // RFC 6749 §4.1.2.1: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
    let description: String = description
        .chars()
        .map(|c| {
            if matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e') {
                c
            } else {
                '?'
            }
        })
        .collect();
    let description = description.as_str();
    let mut params = vec![
        ("error", code),
        ("error_description", description),
        ("iss", state.config.issuer.as_str()),
    ];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    redirect_to(&req.redirect_uri, &params)
}

async fn validate(
    state: &ServerState,
    params: &HashMap<String, String>,
    now: i64,
    pushed: bool,
) -> Result<(Arc<Client>, AuthorizationRequest), Invalid> {
    let get = |k: &str| params.get(k).map(String::as_str);
    let page = |title: &'static str, m: &str| Err(Invalid::Page(title, m.to_owned()));
    let Some(client_id) = get("client_id") else {
        return page(
            "Missing client",
            "The request does not name a client (client_id).",
        );
    };
    let client = match state.clients.find(&state.store, client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return page(
                "Unknown client",
                "The application that sent you here is not registered.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "client lookup failed");
            return page("Server error", "Please try again later.");
        }
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return page(
            "Missing redirect URI",
            "The request does not say where to return (redirect_uri).",
        );
    };
    // Exact string comparison (RFC 9700 §2.1): no prefix or pattern
    // matching; only the port of a native app's loopback URI may vary.
    let native = client.auth_method == crate::client::AuthMethod::None;
    if !client
        .redirect_uris
        .iter()
        .any(|r| redirect_uri_matches(r, redirect_uri, native))
    {
        return page(
            "Invalid redirect URI",
            "The redirect URI is not registered for this application.",
        );
    }
    let mut req = AuthorizationRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        state: get("state").map(str::to_owned),
        nonce: get("nonce").map(str::to_owned),
        scopes: Vec::new(),
        code_challenge: String::new(),
        acr_values: Vec::new(),
        max_age: None,
        fresh_since: None,
        prompt_none: false,
        login_hint: get("login_hint").map(str::to_owned),
        device_id: None,
        dpop_jkt: None,
        authorization_details: None,
        reason: None,
        proven: Vec::new(),
        account: false,
        approved_by: None,
        resource: None,
    };
    let fail = |req: AuthorizationRequest, code: &'static str, m: String| {
        Err(Invalid::Redirect(Box::new(req), code, m))
    };
    match get("dpop_jkt") {
        None => {}
        // A SHA-256 thumbprint, base64url: 43 characters.
        Some(j)
            if j.len() == 43
                && j.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            req.dpop_jkt = Some(j.to_owned());
        }
        Some(_) => {
            return fail(
                req,
                "invalid_request",
                "dpop_jkt must be a base64url SHA-256 JWK thumbprint".into(),
            );
        }
    }
    if let Some(resource) = get("resource") {
        if let Err(e) = crate::token::audience(state, &client, Some(resource)) {
            return fail(req, "invalid_target", e.description);
        }
        req.resource = Some(resource.to_owned());
    }
    match get("device_id") {
        None => {}
        Some(d) if (1..=128).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_graphic()) => {
            req.device_id = Some(d.to_owned());
        }
        Some(_) => {
            return fail(
                req,
                "invalid_request",
                "device_id must be 1 to 128 visible ASCII characters".into(),
            );
        }
    }
    if get("request").is_some() || get("request_uri").is_some() {
        return fail(
            req,
            "request_not_supported",
            "request objects are not supported".into(),
        );
    }
    if get("response_mode").is_some_and(|m| m != "query") {
        return fail(req, "invalid_request", "response_mode must be query".into());
    }
    if get("response_type") != Some("code") {
        return fail(
            req,
            "unsupported_response_type",
            "response_type must be code".into(),
        );
    }
    if !client.may_use_grant("authorization_code") {
        return fail(
            req,
            "unauthorized_client",
            "this client may not use the authorization code flow".into(),
        );
    }
    if client.require_par && !pushed {
        return fail(
            req,
            "invalid_request",
            "this client must push its authorization requests (PAR)".into(),
        );
    }
    let challenge = match get("code_challenge") {
        None => {
            return fail(
                req,
                "invalid_request",
                "code_challenge is required (PKCE, S256)".into(),
            );
        }
        Some(c) => match CodeChallenge::parse(c, get("code_challenge_method")) {
            Ok(c) => c,
            Err(e) => return fail(req, "invalid_request", e.to_string()),
        },
    };
    req.code_challenge = challenge.as_str().to_owned();
    for s in get("scope").unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
        let allowed = s == "openid" || client.scopes.iter().any(|c| c.as_str() == s);
        if !allowed || Scope::new(s).is_err() {
            return fail(
                req,
                "invalid_scope",
                format!("scope {s} is not allowed for this client"),
            );
        }
        if !req.scopes.iter().any(|x| x == s) {
            req.scopes.push(s.to_owned());
        }
    }
    let prompts: Vec<&str> = get("prompt")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if prompts.contains(&"none") && prompts.len() > 1 {
        return fail(
            req,
            "invalid_request",
            "prompt=none cannot be combined with other values".into(),
        );
    }
    if let Some(p) = prompts
        .iter()
        .find(|p| !["none", "login", "consent", "select_account"].contains(p))
    {
        return fail(req, "invalid_request", format!("unknown prompt value {p}"));
    }
    req.prompt_none = prompts.contains(&"none");
    if let Some(m) = get("max_age") {
        match m.parse::<u64>() {
            Ok(secs) if m.bytes().all(|b| b.is_ascii_digit()) => req.max_age = Some(secs),
            _ => {
                return fail(
                    req,
                    "invalid_request",
                    "max_age must be a number of seconds".into(),
                );
            }
        }
    }
    if prompts.contains(&"login") || req.max_age == Some(0) {
        req.fresh_since = Some(now);
    }
    // Requested levels: an essential acr claim, else acr_values.
    let mut acr_values: Vec<String> = match get("claims").map(essential_acr) {
        Some(Err(e)) => return fail(req, "invalid_request", e),
        Some(Ok(v)) if !v.is_empty() => v,
        _ => get("acr_values")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    for a in &acr_values {
        if Acr::new(a.as_str()).is_err() {
            return fail(req, "invalid_request", format!("invalid acr value '{a}'"));
        }
    }
    // Scopes bound to a level require it (or a stronger one).
    let levels = &state.config.assurance;
    for s in &req.scopes {
        let Some((bound, bound_max_age)) = Scope::new(s.as_str())
            .ok()
            .and_then(|s| state.config.scope_bindings.get(&s))
        else {
            continue;
        };
        let floor = levels.rank(Some(bound.as_str()));
        acr_values.retain(|a| levels.rank(Some(a)) >= floor);
        if acr_values.is_empty() {
            acr_values = levels
                .levels()
                .iter()
                .filter(|l| levels.rank(Some(l.as_str())) >= floor)
                .map(|l| l.as_str().to_owned())
                .collect();
        }
        if let Some(m) = bound_max_age {
            req.max_age = Some(req.max_age.map_or(*m, |r| r.min(*m)));
        }
        req.reason = Some(format!("{s} needs a stronger sign-in"));
    }
    // A transaction (RFC 9396) is approved at the level its type needs.
    if let Some(raw) = get("authorization_details") {
        let (details, description, bindings) = match read_details(state, raw) {
            Ok(found) => found,
            Err(m) => return fail(req, "invalid_authorization_details", m),
        };
        for (bound, bound_max_age) in bindings {
            if let Some(bound) = bound {
                let floor = levels.rank(Some(bound.as_str()));
                acr_values.retain(|a| levels.rank(Some(a)) >= floor);
                if acr_values.is_empty() {
                    acr_values = levels
                        .levels()
                        .iter()
                        .filter(|l| levels.rank(Some(l.as_str())) >= floor)
                        .map(|l| l.as_str().to_owned())
                        .collect();
                }
            }
            if let Some(m) = bound_max_age {
                req.max_age = Some(req.max_age.map_or(m, |r| r.min(m)));
            }
        }
        req.authorization_details = Some(details);
        req.reason = Some(format!("Approve: {description}."));
    }
    req.acr_values = acr_values;
    Ok((client, req))
}

/// The most `authorization_details` entries a request may carry (its
/// size is bounded where the parameters are read).
const MAX_DETAILS: usize = stepup_core::limits::AUTHORIZATION_DETAILS_ENTRIES;

/// Checks `authorization_details` against the configured types: a JSON
/// array of objects, each of a known `type` with exactly its fields, as
/// strings or numbers. Returns the details, words for the page, and the
/// level and max_age each entry's type needs.
#[allow(clippy::type_complexity)]
fn read_details(
    state: &ServerState,
    raw: &str,
) -> Result<(Value, String, Vec<(Option<Acr>, Option<u64>)>), String> {
    // Read exactly first: a key twice in one object (the page showing one
    // value, the resource server reading another) is refused, and so is a
    // number the stored `Value` would not keep as written (a 20-digit
    // account number rounded, `2500.50` shown as `2500.5`).
    let exact = stepup_core::json::Json::from_slice(raw.as_bytes())
        .map_err(|e| format!("authorization_details is not JSON read exactly: {e}"))?;
    if let Some(number) = exact.number_not_kept_by_serde_json() {
        return Err(format!(
            "authorization_details: write the number {number} as a string (\"{number}\"): it would not be kept exactly"
        ));
    }
    let value: Value =
        serde_json::from_str(raw).map_err(|_| "authorization_details is not JSON".to_owned())?;
    let entries = value
        .as_array()
        .filter(|a| !a.is_empty() && a.len() <= MAX_DETAILS)
        .ok_or_else(|| format!("authorization_details must be an array of 1 to {MAX_DETAILS} objects"))?;
    let mut words = Vec::new();
    let mut bindings = Vec::new();
    // The currency of the entries with an amount: one for all.
    let mut currencies: Option<Option<&str>> = None;
    for (entry, exact_entry) in entries.iter().zip(exact.as_array().unwrap_or_default()) {
        let object = entry
            .as_object()
            .ok_or_else(|| "each authorization_details entry must be an object".to_owned())?;
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| "each authorization_details entry needs a type".to_owned())?;
        let (spec, acr) = state
            .config
            .details_types
            .get(kind)
            .ok_or_else(|| format!("unknown authorization_details type {kind:?}"))?;
        let mut parts = Vec::new();
        for field in &spec.fields {
            match object.get(field) {
                Some(Value::String(s))
                    if !s.is_empty()
                        && s.len() <= stepup_core::limits::AUTHORIZATION_DETAILS_FIELD_BYTES
                        && shows_as_written(s) =>
                {
                    parts.push(format!("{field} {s}"))
                }
                Some(Value::Number(n)) => parts.push(format!("{field} {n}")),
                _ => {
                    return Err(format!(
                        "{kind}: {field} must be a number, or a string of 1 to 200 bytes without control or invisible characters"
                    ));
                }
            }
        }
        if let Some(extra) = object.keys().find(|k| *k != "type" && !spec.fields.contains(k)) {
            return Err(format!("{kind}: unknown field {extra:?}"));
        }
        // Resource servers read `amount` and `currency` (the amount of a
        // risk rule, the sum of all entries; transaction binding): each
        // must mean one thing there. A negative line would net a large
        // payment down, an unreadable one or a second currency would leave
        // the sum unknown, and a rule such as `amount > 10000` silent.
        let currency = object.get("currency").map(|c| match c.as_str() {
            Some(code) if stepup_core::amount::is_currency_code(code) => Ok(code),
            _ => Err(format!(
                "{kind}: currency must be an ISO 4217 code such as \"EUR\""
            )),
        });
        let currency = currency.transpose()?;
        if let Some(amount) = exact_entry.get("amount") {
            match amount.amount() {
                Some(Ok(amount)) if !amount.is_sign_negative() => {}
                _ => {
                    return Err(format!(
                        "{kind}: amount must be a plain decimal of 0 or more, such as \"5000.00\""
                    ));
                }
            }
            match currencies {
                None => currencies = Some(currency),
                Some(seen) if seen == currency => {}
                Some(_) => {
                    return Err("authorization_details: every entry with an amount must be in the same currency: approve one currency at a time".into());
                }
            }
        }
        words.push(format!("{kind} ({})", parts.join(", ")));
        bindings.push((acr.clone(), spec.max_age));
    }
    // The total a resource server computes (the `amount` of risk rules)
    // must exist: amounts that overflow it would leave it unknown.
    if currencies.is_some() && stepup_core::risk::approved_amount(&exact).0.is_none() {
        return Err("authorization_details: the amounts add up to more than can be computed exactly".into());
    }
    Ok((value, words.join("; "), bindings))
}

/// Whether `text` is shown as it is written: no control characters, and
/// none of the invisible ones (zero-width, bidirectional overrides and
/// isolates, soft hyphen, byte-order mark) that would let the approval page
/// show one creditor or account while another is executed.
fn shows_as_written(text: &str) -> bool {
    !text.chars().any(|c| {
        c.is_control()
            || matches!(c,
                '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
    })
}

/// Whether `req` asks for something its user approves on a page, every
/// time, whatever the session's level: a transaction
/// (`authorization_details`), or a scope configured with `approve`.
fn needs_approval(state: &ServerState, req: &AuthorizationRequest) -> bool {
    req.authorization_details.is_some()
        || req
            .scopes
            .iter()
            .any(|s| state.config.approved_scopes.contains_key(s))
}

/// Whether `req` needs an approval that `user` has not given on its page:
/// then nothing is issued.
fn awaits_approval(state: &ServerState, req: &AuthorizationRequest, user: &StoredUser) -> bool {
    needs_approval(state, req) && req.approved_by.as_deref() != Some(user.id.as_str())
}

/// What the approval page shows: each entry of `authorization_details`
/// with its configured fields, in order, as the client sent them (already
/// checked by `read_details`), then the scopes that need approval, in words.
fn approval_entries(state: &ServerState, req: &AuthorizationRequest) -> Vec<pages::ApprovalEntry> {
    let entries = req
        .authorization_details
        .as_ref()
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut shown: Vec<pages::ApprovalEntry> = entries
        .iter()
        .map(|entry| {
            let kind = entry.get("type").and_then(Value::as_str).unwrap_or_default();
            let fields = state
                .config
                .details_types
                .get(kind)
                .map(|(spec, _)| spec.fields.as_slice())
                .unwrap_or_default();
            pages::ApprovalEntry {
                kind: kind.to_owned(),
                fields: fields
                    .iter()
                    .map(|field| {
                        let value = match entry.get(field) {
                            Some(Value::String(s)) => s.clone(),
                            Some(other) => other.to_string(),
                            None => String::new(),
                        };
                        (field.clone(), value)
                    })
                    .collect(),
            }
        })
        .collect();
    let scopes: Vec<(String, String)> = req
        .scopes
        .iter()
        .filter_map(|s| {
            state
                .config
                .approved_scopes
                .get(s)
                .map(|words| ("allow".to_owned(), words.clone()))
        })
        .collect();
    if !scopes.is_empty() {
        shown.push(pages::ApprovalEntry {
            kind: "permissions".to_owned(),
            fields: scopes,
        });
    }
    shown
}

/// `POST /authorize/approve`: the user's decision on the transaction the
/// approval page showed. The form names only the pending request (and its
/// CSRF token, bound to this browser): what is approved is what the
/// server kept, never what a form says. Declining ends the request with
/// `access_denied`.
pub(crate) async fn approve(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending, mut req) = match login_form(&state, &headers, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = state.clock.now().seconds();
    let session = current_session(&state, &headers, now).await;
    if !needs_approval(&state, &req) {
        return pages::error_page(
            StatusCode::BAD_REQUEST,
            "Nothing to approve",
            "This request has nothing to approve.",
        );
    }
    match form.get("decision").map(String::as_str) {
        Some("approve") => {
            // Approved by the user signed in now; `advance` issues the
            // code only to that same user, and asks for any factor that
            // lapsed meanwhile.
            if let Some((_, user)) = &session {
                req.approved_by = Some(user.id.clone());
                tracing::info!(user = %user.id, client = %req.client_id, "transaction approved");
                if let Ok(params) = serde_json::to_string(&req)
                    && let Err(e) = state.store.set_pending_params(&pending.id, &params).await
                {
                    tracing::error!(error = %e, "recording an approval failed");
                    return server_error_page();
                }
            }
            advance(&state, &pending, &req, session, None).await
        }
        Some("decline") => {
            let _ = state.store.delete_pending(&pending.id).await;
            tracing::info!(client = %req.client_id, "transaction declined");
            error_redirect(&state, &req, "access_denied", "the user declined the transaction")
        }
        _ => pages::error_page(
            StatusCode::BAD_REQUEST,
            "Invalid form",
            "Choose to approve or decline the transaction.",
        ),
    }
}

/// The factors a user can prove here.
pub(crate) fn enrolled(state: &ServerState, user: &StoredUser) -> Enrolled {
    Enrolled {
        pwd: true,
        otp: user.totp_seed.is_some(),
        hwk: user.passkeys > 0 && state.webauthn.is_some(),
    }
}

fn proofs(session: &StoredSession, req: &AuthorizationRequest) -> Proofs {
    let counts = |factor: &str| req.fresh_since.is_none() || req.proven.iter().any(|p| p == factor);
    let keep = |factor: &str, at: Option<i64>| at.filter(|_| counts(factor)).map(UnixTime);
    Proofs {
        pwd: keep("pwd", session.pwd_at),
        otp: keep("otp", session.otp_at),
        hwk: keep("hwk", session.hwk_at),
    }
}

/// Records that a factor was proven during a pending request.
pub(crate) async fn note_proven(
    state: &ServerState,
    pending: &StoredPending,
    req: &mut AuthorizationRequest,
    factor: &str,
) {
    if !req.proven.iter().any(|p| p == factor) {
        req.proven.push(factor.to_owned());
    }
    if let Ok(params) = serde_json::to_string(req)
        && let Err(e) = state.store.set_pending_params(&pending.id, &params).await
    {
        tracing::error!(error = %e, "updating the pending request failed");
    }
}

fn ask(req: &AuthorizationRequest) -> Ask {
    Ask {
        acr_values: req
            .acr_values
            .iter()
            .filter_map(|a| Acr::new(a.as_str()).ok())
            .collect(),
        max_age: req.max_age,
        fresh_since: req.fresh_since.map(UnixTime),
    }
}

/// The session of this browser, if live.
pub(crate) async fn current_session(
    state: &ServerState,
    headers: &HeaderMap,
    now: i64,
) -> Option<(StoredSession, StoredUser)> {
    let secret = session::cookie(headers, session::session_cookie_name(secure(state)))?;
    let session = state
        .store
        .session(&session::secret_id(secret), now)
        .await
        .ok()??;
    let user = state.store.user_by_id(&session.user_id).await.ok()??;
    // A disabled account's sessions ended when it was; one made since
    // (a sign-in that raced it) counts for nothing either.
    if user.disabled_at.is_some() {
        return None;
    }
    Some((session, user))
}

pub(crate) fn server_error_page() -> Response {
    pages::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Server error",
        "Something went wrong. Please try again.",
    )
}

pub(crate) async fn authorize_get(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(raw): Query<Vec<(String, String)>>,
) -> Response {
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(raw)
        .finish();
    authorize(&state, &headers, encoded.as_bytes()).await
}

pub(crate) async fn authorize_post(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authorize(&state, &headers, &body).await
}

async fn authorize(state: &ServerState, headers: &HeaderMap, raw: &[u8]) -> Response {
    let now = state.clock.now().seconds();
    let params = match params_from(raw) {
        Ok(p) => p,
        Err(e) => return pages::error_page(StatusCode::BAD_REQUEST, "Invalid request", &e.to_string()),
    };
    let req = if let Some(request_uri) = params.get("request_uri") {
        match pushed_request(state, &params, request_uri, now).await {
            Ok(req) => req,
            Err(response) => return response,
        }
    } else {
        match validate(state, &params, now, false).await {
            Ok((_, req)) => req,
            Err(Invalid::Page(title, message)) => {
                return pages::error_page(StatusCode::BAD_REQUEST, title, &message);
            }
            Err(Invalid::Redirect(req, code, message)) => return error_redirect(state, &req, code, &message),
        }
    };
    let session = current_session(state, headers, now).await;
    // A live session that already holds the level answers at once, without
    // storing the request (single sign-on costs one write, the code's);
    // unless there is a transaction to approve.
    if let Some((s, u)) = session.as_ref().filter(|(_, u)| !awaits_approval(state, &req, u)) {
        let levels = &state.config.auth_levels;
        if let Plan::Satisfied { acr, amr, auth_time } = plan(
            levels,
            &proofs(s, &req),
            Some(&enrolled(state, u)),
            &ask(&req),
            UnixTime(now),
        ) {
            return finish(state, None, &req, u, acr.as_str(), &amr, auth_time.seconds()).await;
        }
    }
    start_sign_in(state, req, session, now).await
}

/// Keeps a request pending while the user signs in, binds it to this
/// browser with a cookie, and shows the first page.
pub(crate) async fn start_sign_in(
    state: &ServerState,
    req: AuthorizationRequest,
    session: Option<(StoredSession, StoredUser)>,
    now: i64,
) -> Response {
    let Some(csrf) = session::new_secret(&state.rng) else {
        return server_error_page();
    };
    let Ok(id) = random_id(&state.rng) else {
        return server_error_page();
    };
    let Ok(params_json) = serde_json::to_string(&req) else {
        return server_error_page();
    };
    let pending = StoredPending {
        id,
        params: params_json,
        csrf,
        user_id: session.as_ref().map(|(_, u)| u.id.clone()),
        created_at: now,
        expires_at: now + state.config.login.request_seconds,
    };
    if let Err(e) = state.store.insert_pending(&pending).await {
        tracing::error!(error = %e, "storing the pending request failed");
        return server_error_page();
    }
    let mut response = advance(state, &pending, &req, session, None).await;
    let cookie = session::set_cookie(
        &session::pending_cookie_name(secure(state), &pending.id),
        &pending.id,
        secure(state),
        state.config.login.request_seconds,
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

pub(crate) fn secure(state: &ServerState) -> bool {
    state.config.issuer.starts_with("https://")
}

/// The prefix of the `request_uri` values this server hands out.
const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";

/// RFC 9126 §4: an authorization request by reference to a pushed one. Only
/// the pushed parameters count, the reference works once, for its client.
async fn pushed_request(
    state: &ServerState,
    params: &HashMap<String, String>,
    request_uri: &str,
    now: i64,
) -> Result<AuthorizationRequest, Response> {
    let refused = |m: &str| pages::error_page(StatusCode::BAD_REQUEST, "Invalid request", m);
    let id = request_uri
        .strip_prefix(REQUEST_URI_PREFIX)
        .ok_or_else(|| refused("request_uri was not issued by this server"))?;
    let (client_id, stored) = match state.store.take_pushed(id, now).await {
        Ok(Some(found)) => found,
        Ok(None) => return Err(refused("request_uri is unknown, expired or already used")),
        Err(_) => return Err(server_error_page()),
    };
    if params.get("client_id") != Some(&client_id) {
        return Err(refused("request_uri belongs to another client"));
    }
    serde_json::from_str(&stored).map_err(|_| server_error_page())
}

/// The pushed authorization request endpoint (RFC 9126 §2): the client
/// authenticates and sends the request directly, so nothing in it can be
/// changed in the browser; it gets a one-time `request_uri` back.
pub(crate) async fn par(State(state): State<Arc<ServerState>>, headers: HeaderMap, body: Bytes) -> Response {
    match par_inner(&state, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn par_inner(
    state: &ServerState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, crate::error::OAuthError> {
    use crate::error::OAuthError;
    let form = crate::form::Form::parse(headers, body)?;
    let client = client::authenticate_at(state, "/par", headers, &form, true).await?;
    if form.get("request_uri").is_some() {
        return Err(OAuthError::invalid_request("request_uri cannot be pushed"));
    }
    let mut params = form.params().clone();
    params.insert("client_id".into(), client.id.clone());
    let now = state.clock.now().seconds();
    let req = match validate(state, &params, now, true).await {
        Ok((_, req)) => req,
        Err(Invalid::Page(_, message)) => return Err(OAuthError::invalid_request(message)),
        Err(Invalid::Redirect(_, code, message)) => return Err(OAuthError::with_code(code, message)),
    };
    let id = random_id(&state.rng)?;
    let params = serde_json::to_string(&req).map_err(|_| OAuthError::server_error())?;
    state
        .store
        .insert_pushed(&id, &client.id, &params, now + PUSHED_REQUEST_SECONDS)
        .await?;
    let body = serde_json::json!({
        "request_uri": format!("{REQUEST_URI_PREFIX}{id}"),
        "expires_in": PUSHED_REQUEST_SECONDS,
    });
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    crate::error::no_store(response.headers_mut());
    Ok(response)
}

/// How long a pushed request waits for the browser.
const PUSHED_REQUEST_SECONDS: i64 = 60;

/// Plans the next step for a pending request: finish (code), show the page
/// for the next missing factor, or end with an error.
pub(crate) async fn advance(
    state: &ServerState,
    pending: &StoredPending,
    req: &AuthorizationRequest,
    session: Option<(StoredSession, StoredUser)>,
    error: Option<&str>,
) -> Response {
    let now = state.clock.now().seconds();
    let levels = &state.config.auth_levels;
    let (proofs, enrolled_factors, user) = match &session {
        Some((s, u)) => (proofs(s, req), enrolled(state, u), Some(u)),
        // Before the user is known, the password identifies them.
        None => (
            Proofs::default(),
            Enrolled {
                pwd: true,
                otp: true,
                hwk: false,
            },
            None,
        ),
    };
    let mut ask = ask(req);
    // The account page binds authenticators: it asks for the strongest
    // level this user can reach, and never takes a password alone for it.
    let binding;
    let levels = match (req.account, user) {
        (true, Some(_)) => {
            let Some(level) = binding_level(levels, &enrolled_factors) else {
                let _ = state.store.delete_pending(&pending.id).await;
                return crate::passkey::password_only_page();
            };
            ask.acr_values = vec![level];
            binding = binding_levels(levels);
            &binding
        }
        _ => levels,
    };
    let mut planned = plan(levels, &proofs, Some(&enrolled_factors), &ask, UnixTime(now));
    // A level only a passkey reaches: an unknown user signs in with a
    // discoverable passkey instead of a password.
    if planned == Plan::Unmet && user.is_none() && state.webauthn.is_some() {
        let with_passkey = Enrolled {
            hwk: true,
            ..enrolled_factors
        };
        planned = plan(levels, &proofs, Some(&with_passkey), &ask, UnixTime(now));
    }
    // A passkey is offered as an alternative where a level accepts one.
    let passkey_helps = state.webauthn.is_some()
        && levels
            .iter()
            .filter(|l| ask.acr_values.is_empty() || ask.acr_values.contains(&l.acr))
            .any(|l| l.combinations.iter().any(|c| c.contains(&Factor::Hwk)));
    match planned {
        Plan::Satisfied { acr, amr, auth_time } => {
            // Proofs exist only in a session, so a user is known here.
            let Some(user) = user else {
                return server_error_page();
            };
            // A transaction (or a scope that moves money) is shown to its
            // user and approved by a deliberate action, every time,
            // whatever the session's level.
            if awaits_approval(state, req, user) {
                if req.prompt_none {
                    let _ = state.store.delete_pending(&pending.id).await;
                    return error_redirect(
                        state,
                        req,
                        "interaction_required",
                        "the user must approve the request",
                    );
                }
                let ctx = FormContext {
                    request_id: &pending.id,
                    csrf: &pending.csrf,
                    client_id: shown_client(req),
                    reason: None,
                    error,
                };
                return pages::approval_page(&ctx, &user.username, &approval_entries(state, req));
            }
            finish(
                state,
                Some(&pending.id),
                req,
                user,
                acr.as_str(),
                &amr,
                auth_time.seconds(),
            )
            .await
        }
        Plan::Unmet => {
            let _ = state.store.delete_pending(&pending.id).await;
            error_redirect(
                state,
                req,
                "unmet_authentication_requirements",
                "the requested authentication level cannot be reached by this user",
            )
        }
        Plan::Prove { missing, acr } => {
            if req.prompt_none {
                let _ = state.store.delete_pending(&pending.id).await;
                let code = if session.is_some() {
                    "interaction_required"
                } else {
                    "login_required"
                };
                return error_redirect(state, req, code, "the user must authenticate");
            }
            let reason = req.reason.clone().or_else(|| {
                session
                    .as_ref()
                    .map(|_| format!("This action needs a stronger sign-in ({acr})."))
            });
            let ctx = FormContext {
                request_id: &pending.id,
                csrf: &pending.csrf,
                client_id: shown_client(req),
                reason: reason.as_deref(),
                error,
            };
            let passkey_link = |has: bool| has.then(|| format!("/login/passkey?request={}", pending.id));
            match missing.first() {
                Some(Factor::Pwd) | None => pages::password_page(
                    &ctx,
                    req.login_hint.as_deref(),
                    passkey_link(passkey_helps).as_deref(),
                ),
                Some(Factor::Otp) => {
                    let Some(u) = user else {
                        return pages::password_page(
                            &ctx,
                            req.login_hint.as_deref(),
                            passkey_link(passkey_helps).as_deref(),
                        );
                    };
                    let demo = state
                        .config
                        .login
                        .demo_show_totp_code
                        .then(|| users::totp_secret(u).map(|s| s.code_at(UnixTime(now))))
                        .flatten();
                    pages::otp_page(
                        &ctx,
                        &u.username,
                        demo.as_deref(),
                        passkey_link(passkey_helps && enrolled_factors.hwk).as_deref(),
                    )
                }
                Some(Factor::Hwk) => crate::passkey::sign_in_page(state, &ctx, pending, user).await,
            }
        }
    }
}

/// Issues the code and sends the browser back to the client.
async fn finish(
    state: &ServerState,
    pending_id: Option<&str>,
    req: &AuthorizationRequest,
    user: &StoredUser,
    acr: &str,
    amr: &[Factor],
    auth_time: i64,
) -> Response {
    let now = state.clock.now().seconds();
    if awaits_approval(state, req, user) {
        // Every caller shows the approval page first; a path that did
        // not is a bug, and issues nothing.
        tracing::error!(client = %req.client_id, "a transaction reached issuance unapproved");
        return server_error_page();
    }
    if req.account {
        // The account page's own sign-in: back to it, no code.
        if let Some(id) = pending_id {
            let _ = state.store.delete_pending(id).await;
        }
        let mut response = Redirect::to(crate::passkey::ACCOUNT_PATH).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(id) = pending_id {
            let name = session::pending_cookie_name(secure(state), id);
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&name, "", secure(state), 0)) {
                response.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        return response;
    }
    let grant = Grant {
        client_id: req.client_id.clone(),
        redirect_uri: req.redirect_uri.clone(),
        user_id: user.id.clone(),
        scopes: req.scopes.clone(),
        nonce: req.nonce.clone(),
        code_challenge: req.code_challenge.clone(),
        acr: acr.to_owned(),
        amr: amr.iter().map(|f| f.amr().to_owned()).collect(),
        auth_time,
        family_expires_at: None,
        auth_country: crate::geo::client_country(),
        device_id: req.device_id.clone(),
        dpop_jkt: req.dpop_jkt.clone(),
        bound_jkt: None,
        authorization_details: req.authorization_details.clone(),
        resource: req.resource.clone(),
    };
    let (Some(code), Ok(family), Ok(grant_json)) = (
        session::new_secret(&state.rng),
        random_id(&state.rng),
        serde_json::to_string(&grant),
    ) else {
        return server_error_page();
    };
    let code_id = session::secret_id(&code);
    let stored = state.store.store_code(
        &family,
        &req.client_id,
        &user.id,
        &code_id,
        &grant_json,
        now + state.config.tokens.code_seconds,
        pending_id,
        now,
    );
    match stored.await {
        Ok(true) => {}
        Ok(false) => {
            return pages::error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in already completed",
                "This sign-in was already completed. Go back to the application.",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "storing the code failed");
            return server_error_page();
        }
    }
    tracing::info!(client = %req.client_id, user = %user.id, acr, "authorization code issued");
    let mut params = vec![("code", code.as_str()), ("iss", state.config.issuer.as_str())];
    if let Some(s) = &req.state {
        params.push(("state", s));
    }
    let mut response = redirect_to(&req.redirect_uri, &params);
    if let Some(id) = pending_id {
        let name = session::pending_cookie_name(secure(state), id);
        if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&name, "", secure(state), 0)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// What the pages call the party the user signs in to.
pub(crate) fn shown_client(req: &AuthorizationRequest) -> &str {
    if req.account {
        "your account"
    } else {
        &req.client_id
    }
}

/// Loads the pending request a link refers to, if it belongs to this
/// browser (its cookie); for pages that only show, not change, anything.
pub(crate) async fn pending_for_browser(
    state: &ServerState,
    headers: &HeaderMap,
    id: Option<&String>,
    now: i64,
) -> Result<(StoredPending, AuthorizationRequest), Response> {
    let expired = || {
        pages::error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in page has expired or was already used. Go back to the application and try again.",
        )
    };
    let id = id.ok_or_else(expired)?;
    let pending = match state.store.pending(id, now).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(expired()),
        Err(_) => return Err(server_error_page()),
    };
    let same_browser = session::cookie(headers, &session::pending_cookie_name(secure(state), &pending.id))
        .is_some_and(|c| bool::from(c.as_bytes().ct_eq(pending.id.as_bytes())));
    if !same_browser {
        return Err(expired());
    }
    let req = serde_json::from_str(&pending.params).map_err(|_| server_error_page())?;
    Ok((pending, req))
}

/// Loads and checks the pending request a login form refers to: it must
/// exist, belong to this browser (cookie) and carry the right CSRF token.
async fn pending_for_form(
    state: &ServerState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<(StoredPending, AuthorizationRequest), Response> {
    let now = state.clock.now().seconds();
    let expired = || {
        pages::error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in page has expired or was already used. Go back to the application and try again.",
        )
    };
    let id = form.get("request").ok_or_else(expired)?;
    let pending = match state.store.pending(id, now).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(expired()),
        Err(_) => return Err(server_error_page()),
    };
    let same_browser = session::cookie(headers, &session::pending_cookie_name(secure(state), &pending.id))
        .is_some_and(|c| bool::from(c.as_bytes().ct_eq(pending.id.as_bytes())));
    let csrf_ok = form
        .get("csrf")
        .is_some_and(|c| bool::from(c.as_bytes().ct_eq(pending.csrf.as_bytes())));
    if !same_browser || !csrf_ok {
        return Err(pages::error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form did not come from this browser's sign-in. Go back to the application and try again.",
        ));
    }
    let req: AuthorizationRequest = serde_json::from_str(&pending.params).map_err(|_| server_error_page())?;
    Ok((pending, req))
}

/// The form of a login page and the pending request it continues.
pub(crate) async fn login_form(
    state: &ServerState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(HashMap<String, String>, StoredPending, AuthorizationRequest), Response> {
    let form = params_from(body)
        .map_err(|_| pages::error_page(StatusCode::BAD_REQUEST, "Invalid form", "The form was malformed."))?;
    let (pending, req) = pending_for_form(state, headers, &form).await?;
    Ok((form, pending, req))
}

/// Takes an attempt at a factor for a user (a store error refuses it).
async fn begin_attempt(state: &ServerState, user: &StoredUser, kind: Attempt, now: i64) -> AttemptStart {
    let login = &state.config.login;
    let limits = AttemptLimits {
        max_failures: login.max_failures,
        max_code_failures: login.max_code_failures,
    };
    state
        .store
        .begin_attempt(&user.id, kind, limits, now, now + login.lock_seconds)
        .await
        .unwrap_or(AttemptStart::Locked)
}

/// Records the verdict of an attempt; true when the account is now locked.
async fn end_attempt(
    state: &ServerState,
    user: &StoredUser,
    kind: Attempt,
    succeeded: bool,
    now: i64,
) -> bool {
    let login = &state.config.login;
    let locked = state
        .store
        .end_attempt(
            &user.id,
            kind,
            succeeded,
            login.max_failures,
            now + login.lock_seconds,
        )
        .await
        .unwrap_or(false);
    if !succeeded {
        failed_attempt_event(state, user, kind, now).await;
    }
    if locked {
        let detail = match kind {
            Attempt::Password => "after wrong passwords",
            Attempt::Otp => "codes, after wrong codes",
        };
        crate::events::record(
            &state.store,
            &user.id,
            crate::events::EventKind::Locked,
            detail,
            now,
        )
        .await;
    }
    locked
}

/// Keeps the security event of a factor refused at sign-in.
async fn failed_attempt_event(state: &ServerState, user: &StoredUser, kind: Attempt, now: i64) {
    let detail = match kind {
        _ if user.disabled_at.is_some() => "account disabled",
        Attempt::Password => "wrong password",
        Attempt::Otp => "wrong code",
    };
    crate::events::record(
        &state.store,
        &user.id,
        crate::events::EventKind::SignInFailed,
        detail,
        now,
    )
    .await;
}

const LOCKED: &str = "Too many failed attempts: this account is locked for a while. Try again later.";

const CODES_BLOCKED: &str = "Too many wrong codes in a row: codes are refused for this account until it is unlocked. \
    Sign in with a passkey if you have one, or ask your administrator to unlock the account.";

/// The password page says the same for an unknown user, a wrong password and
/// a locked account: nothing there tells whether an account exists.
const SIGN_IN_FAILED: &str =
    "Wrong user name or password, or too many attempts: check them, or wait a few minutes and try again.";

/// Records in the session that a factor was proven now, and gives the
/// session a new secret, so that a session id planted in the browser
/// beforehand (session fixation) never carries the user's proofs. Returns
/// the updated session and its cookie.
async fn prove_factor(
    state: &ServerState,
    session: StoredSession,
    factor: Factor,
    now: i64,
) -> Option<(StoredSession, String)> {
    state
        .store
        .session_factor_proven(&session.id, factor.amr(), now)
        .await
        .ok()?;
    let session = match factor {
        Factor::Pwd => StoredSession {
            pwd_at: Some(now),
            ..session
        },
        Factor::Otp => StoredSession {
            otp_at: Some(now),
            ..session
        },
        Factor::Hwk => StoredSession {
            hwk_at: Some(now),
            ..session
        },
    };
    let secret = session::new_secret(&state.rng)?;
    let new_id = session::secret_id(&secret);
    state.store.rotate_session(&session.id, &new_id).await.ok()?;
    let cookie = session::set_cookie(
        session::session_cookie_name(secure(state)),
        &secret,
        secure(state),
        state.config.login.session_seconds,
    );
    Some((
        StoredSession {
            id: new_id,
            ..session
        },
        cookie,
    ))
}

pub(crate) async fn login_password(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending, req) = match login_form(&state, &headers, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = state.clock.now().seconds();
    let username = form.get("username").map(String::as_str).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let user = state.store.user_by_username(username).await.ok().flatten();
    let session = current_session(&state, &headers, now).await;
    let retry = |error: &str| {
        let session = session.clone();
        let (pending, req, state) = (&pending, &req, &state);
        let error = error.to_owned();
        async move { advance(state, pending, req, session, Some(&error)).await }
    };
    // A browser where this user signed in before is counted by itself;
    // any other attempt is the account's (see `known_device`).
    let device = known_device::recognised(&state, &headers, username, user.as_ref(), now).await;
    // Slowed per account (or browser) before the lock: `[rate_limit] user`.
    let slowed = match &device {
        Some(device) => crate::rate_limit::known_device_attempt(&state, &device.stored.id).await,
        None => crate::rate_limit::sign_in_attempt(&state, username).await,
    };
    if let Err(limited) = slowed {
        return limited.onto(retry(&limited.message()).await);
    }
    let Some(user) = user else {
        // Same work as for a real user with a wrong password (the writes
        // of an attempt and of its event, a hash verified): no timing
        // difference.
        if let Err(e) = state.store.decoy_attempt().await {
            tracing::error!(error = %e, "the decoy attempt failed");
        }
        crate::events::decoy(&state.store, now).await;
        users::verify_password(&state.decoy_hash, password);
        return retry(SIGN_IN_FAILED).await;
    };
    let login = &state.config.login;
    let by_device = match &device {
        Some(device) => (state.store)
            .begin_device_attempt(&device.stored.id, &user.id, login.max_failures, now)
            .await
            .unwrap_or(false),
        None => false,
    };
    if !by_device {
        // A browser that has just used up its attempts counts as any other,
        // in the account's bucket too.
        if device.is_some()
            && let Err(limited) = crate::rate_limit::sign_in_attempt(&state, username).await
        {
            return limited.onto(retry(&limited.message()).await);
        }
        if begin_attempt(&state, &user, Attempt::Password, now).await != AttemptStart::Taken {
            users::verify_password(&state.decoy_hash, password);
            return retry(SIGN_IN_FAILED).await;
        }
    }
    // A disabled account's right password is refused as a wrong one is,
    // with the same writes: nothing tells the two apart, by answer or time.
    let ok = users::verify_password(&user.password_hash, password) && user.disabled_at.is_none();
    match (&device, by_device) {
        (Some(device), true) if !ok => {
            failed_attempt_event(&state, &user, Attempt::Password, now).await;
            let forgotten = state
                .store
                .device_failed(&device.stored.id, login.max_failures)
                .await;
            match forgotten {
                Ok(true) => tracing::warn!(
                    user = %user.id,
                    "a remembered browser sent {} wrong passwords in a row: forgotten",
                    login.max_failures
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "a failed attempt of a remembered browser was not recorded")
                }
            }
        }
        // A success remembers the browser under a new secret, below.
        (_, true) => {}
        (_, false) => {
            end_attempt(&state, &user, Attempt::Password, ok, now).await;
        }
    }
    if !ok {
        return retry(SIGN_IN_FAILED).await;
    }
    let Some((session, cookie)) = signed_in(&state, session, &user, Factor::Pwd, now).await else {
        return server_error_page();
    };
    // Strong when this browser's session holds a second factor already.
    let strong = session.otp_at.is_some() || session.hwk_at.is_some();
    let device_cookie = known_device::remember(&state, &user, device.as_ref(), strong, now).await;
    let _ = state.store.set_pending_user(&pending.id, &user.id).await;
    let mut req = req;
    note_proven(&state, &pending, &mut req, Factor::Pwd.amr()).await;
    let mut response = advance(&state, &pending, &req, Some((session, user)), None).await;
    for cookie in std::iter::once(cookie).chain(device_cookie) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// Records a factor that identified `user`: the session of the same user
/// goes on (with a new secret); anyone else starts a new session. Returns
/// the session and its cookie.
pub(crate) async fn signed_in(
    state: &ServerState,
    session: Option<(StoredSession, StoredUser)>,
    user: &StoredUser,
    factor: Factor,
    now: i64,
) -> Option<(StoredSession, String)> {
    if let Some((s, u)) = session
        && u.id == user.id
    {
        return prove_factor(state, s, factor, now).await;
    }
    new_country_event(state, user, now).await;
    let secret = session::new_secret(&state.rng)?;
    let at = Some(now);
    let s = StoredSession {
        id: session::secret_id(&secret),
        user_id: user.id.clone(),
        pwd_at: at.filter(|_| factor == Factor::Pwd),
        otp_at: at.filter(|_| factor == Factor::Otp),
        hwk_at: at.filter(|_| factor == Factor::Hwk),
        created_at: now,
        expires_at: now + state.config.login.session_seconds,
    };
    // A password's session only while that password is the user's.
    let password_hash = (factor == Factor::Pwd).then_some(user.password_hash.as_str());
    if !state.store.insert_session(&s, password_hash).await.ok()? {
        return None;
    }
    let cookie = session::set_cookie(
        session::session_cookie_name(secure(state)),
        &secret,
        secure(state),
        state.config.login.session_seconds,
    );
    Some((s, cookie))
}

/// A new session's country, noted: the first sign-in from a country the
/// user had not signed in from is a security event.
async fn new_country_event(state: &ServerState, user: &StoredUser, now: i64) {
    let Some(country) = crate::geo::client_country() else {
        return;
    };
    match state.store.note_country(&user.id, &country, now).await {
        Ok(true) => {
            crate::events::record(
                &state.store,
                &user.id,
                crate::events::EventKind::NewCountry,
                &country,
                now,
            )
            .await;
        }
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "the sign-in's country was not noted"),
    }
}

pub(crate) async fn login_otp(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, pending, req) = match login_form(&state, &headers, &body).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let now = state.clock.now().seconds();
    let Some((session, user)) = current_session(&state, &headers, now).await else {
        return advance(
            &state,
            &pending,
            &req,
            None,
            Some("Please sign in with your password first."),
        )
        .await;
    };
    let live = Some((session.clone(), user.clone()));
    if let Err(limited) = crate::rate_limit::code_attempt(&state, &user.username).await {
        return limited.onto(advance(&state, &pending, &req, live, Some(&limited.message())).await);
    }
    // Without a TOTP seed there is nothing to attempt (and nothing may be
    // counted that no verdict would close).
    let Some(secret) = users::totp_secret(&user) else {
        return advance(
            &state,
            &pending,
            &req,
            live,
            Some("No authenticator app is set up for this account."),
        )
        .await;
    };
    // The attempt is counted before the code is checked: concurrent guesses
    // cannot exceed the limit, and a correct password does not reset it.
    match begin_attempt(&state, &user, Attempt::Otp, now).await {
        AttemptStart::Taken => {}
        AttemptStart::Locked => return advance(&state, &pending, &req, live, Some(LOCKED)).await,
        AttemptStart::Blocked => return advance(&state, &pending, &req, live, Some(CODES_BLOCKED)).await,
    }
    let code = form.get("code").map(String::as_str).unwrap_or("");
    let last = user.totp_last_step.and_then(|s| u64::try_from(s).ok());
    let verified = secret.verify(code, UnixTime(now), last);
    let accepted = match verified {
        Ok(step) => match i64::try_from(step) {
            // Atomic: the same code cannot be used twice, even concurrently.
            Ok(step) => state.store.use_totp_step(&user.id, step).await.unwrap_or(false),
            Err(_) => false,
        },
        Err(_) => false,
    };
    let now_locked = end_attempt(&state, &user, Attempt::Otp, accepted, now).await;
    if !accepted {
        let message = match verified {
            _ if now_locked => LOCKED,
            Err(stepup_core::totp::TotpError::Malformed(_)) => {
                "Enter the 6-digit code from your authenticator app."
            }
            Ok(_) | Err(stepup_core::totp::TotpError::Replayed) => {
                "This code was already used. Wait for the next one."
            }
            Err(_) => "Wrong code. Check your authenticator app and try again.",
        };
        return advance(&state, &pending, &req, live, Some(message)).await;
    }
    let Some((session, cookie)) = prove_factor(&state, session, Factor::Otp, now).await else {
        return server_error_page();
    };
    let device_cookie = known_device::second_factor_proven(&state, &headers, &user, now).await;
    let mut req = req;
    note_proven(&state, &pending, &mut req, Factor::Otp.amr()).await;
    let mut response = advance(&state, &pending, &req, Some((session, user)), None).await;
    for cookie in std::iter::once(cookie).chain(device_cookie) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_the_registered_query() {
        let r = redirect_to("https://app.example/cb?x=1", &[("code", "c d"), ("state", "s")]);
        assert_eq!(
            r.headers()["location"],
            "https://app.example/cb?x=1&code=c+d&state=s"
        );
    }
}
