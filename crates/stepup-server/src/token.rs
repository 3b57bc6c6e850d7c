//! The token endpoint (RFC 6749 §3.2, §4.4), introspection (RFC 7662) and
//! revocation (RFC 7009).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use ring::rand::SecureRandom;
use serde_json::{Value, json};
use stepup_core::Scope;
use stepup_core::access_token::AccessTokenClaims;

use crate::client::{self, Client};
use crate::error::{OAuthError, no_store};
use crate::form::Form;
use crate::server::ServerState;

/// What goes into an access token (RFC 9068 §2.2).
pub(crate) struct AccessGrant<'a> {
    pub(crate) subject: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) scopes: &'a [Scope],
    pub(crate) audience: &'a str,
    pub(crate) lifetime: i64,
    /// How the user authenticated, for user tokens.
    pub(crate) authentication: Option<(&'a str, &'a [String], i64)>,
    /// Where the user authenticated (ISO 3166-1 alpha-2), if known.
    pub(crate) auth_country: Option<&'a str>,
    /// The device the client said it runs on.
    pub(crate) device_id: Option<&'a str>,
    /// The thumbprint of the DPoP key the token is bound to.
    pub(crate) cnf_jkt: Option<&'a str>,
    /// The transaction it is for (RFC 9396).
    pub(crate) authorization_details: Option<&'a Value>,
}

/// A signed access token and what the server must remember of it.
pub(crate) struct Minted {
    pub(crate) token: String,
    pub(crate) jti: String,
    pub(crate) exp: i64,
}

/// A fresh random identifier (128 bits).
pub(crate) fn random_id(rng: &dyn SecureRandom) -> Result<String, OAuthError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| OAuthError::server_error())?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Signs an RFC 9068 access token.
pub(crate) fn mint_access_token(state: &ServerState, grant: &AccessGrant<'_>) -> Result<Minted, OAuthError> {
    let now = state.clock.now().seconds();
    let scope: Vec<&str> = grant.scopes.iter().map(Scope::as_str).collect();
    let jti = random_id(&state.rng)?;
    let exp = now + grant.lifetime;
    let mut claims = json!({
        "iss": state.config.issuer,
        "sub": grant.subject,
        "aud": grant.audience,
        "exp": exp,
        "iat": now,
        "jti": jti,
        "client_id": grant.client_id,
    });
    if !scope.is_empty() {
        claims["scope"] = Value::from(scope.join(" "));
    }
    if let Some((acr, amr, auth_time)) = grant.authentication {
        claims["acr"] = Value::from(acr);
        claims["amr"] = Value::from(amr.to_vec());
        claims["auth_time"] = Value::from(auth_time);
    }
    if let Some(jkt) = grant.cnf_jkt {
        claims["cnf"] = json!({ "jkt": jkt });
    }
    if let Some(details) = grant.authorization_details {
        claims["authorization_details"] = details.clone();
    }
    if let Some(device) = grant.device_id {
        claims["device_id"] = Value::from(device);
    }
    if let Some(country) = grant.auth_country {
        claims["auth_country"] = Value::from(country);
    }
    let token = state
        .keys()
        .sign(state.config.signing_alg, "at+jwt", &claims, &state.rng)?;
    Ok(Minted { token, jti, exp })
}

/// Picks the audience (RFC 8707): the `resource` asked, which must be a
/// configured audience the client is registered for, else the client's
/// first (the server's default for a client registered with none).
/// `invalid_target` otherwise: a client gets tokens only for the resource
/// servers it was registered for. One rule for the authorization request
/// and the token request.
pub(crate) fn audience<'c>(
    state: &'c ServerState,
    client: &Client,
    resource: Option<&str>,
) -> Result<&'c str, OAuthError> {
    let configured = &state.config.audiences;
    let allowed =
        |a: &String| client.audiences.is_empty() && *a == configured[0] || client.audiences.contains(a);
    match resource {
        None if client.audiences.is_empty() => Ok(&configured[0]),
        None => client
            .audiences
            .iter()
            .find_map(|a| configured.iter().find(|c| *c == a))
            .map(String::as_str)
            .ok_or_else(|| OAuthError::invalid_target("the client is registered for no configured audience")),
        Some(r) => match configured.iter().find(|a| *a == r) {
            Some(a) if allowed(a) => Ok(a),
            Some(_) => Err(OAuthError::invalid_target(format!(
                "this client may not get tokens for {r:?}"
            ))),
            None => Err(OAuthError::invalid_target(format!("unknown resource {r:?}"))),
        },
    }
}

/// Parses a requested `scope` against what the client may ask for; absent
/// means everything the client may have.
fn requested_scopes(client: &Client, form: &Form) -> Result<Vec<Scope>, OAuthError> {
    let Some(requested) = form.get("scope") else {
        return Ok(client.scopes.clone());
    };
    let mut out: Vec<Scope> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        let scope = Scope::new(s).map_err(|e| OAuthError::invalid_scope(e.to_string()))?;
        if !client.scopes.contains(&scope) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {s} is not allowed for this client"
            )));
        }
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    Ok(out)
}

pub(crate) fn token_response(body: Value) -> Response {
    let mut response = Json(body).into_response();
    no_store(response.headers_mut());
    response
}

pub(crate) async fn token(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_inner(&state, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn token_inner(state: &ServerState, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let form = Form::parse(headers, body)?;
    let grant_type = form.require("grant_type")?;
    let client = client::authenticate_at(state, "/token", headers, &form, true).await?;
    let jkt = crate::dpop::token_proof(state, headers, &client).await?;
    let jkt = jkt.as_deref();
    match grant_type {
        "client_credentials" => client_credentials(state, &client, &form, jkt),
        "authorization_code" => crate::grants::authorization_code(state, &client, &form, jkt).await,
        "refresh_token" => crate::grants::refresh_token(state, &client, &form, jkt).await,
        other => Err(OAuthError::unsupported_grant_type(format!(
            "unknown grant_type {other:?}"
        ))),
    }
}

/// RFC 6749 §4.4: a confidential client acting on its own behalf.
fn client_credentials(
    state: &ServerState,
    client: &Client,
    form: &Form,
    jkt: Option<&str>,
) -> Result<Response, OAuthError> {
    if !client.may_use_grant("client_credentials") {
        return Err(OAuthError::unauthorized_client(
            "this client may not use client_credentials",
        ));
    }
    let mut scopes = requested_scopes(client, form)?;
    // Scopes bound to an assurance level need a user who authenticated at
    // it: left out of the default, refused when asked for.
    if form.get("scope").is_none() {
        scopes.retain(|s| !state.config.scope_bindings.contains_key(s));
    }
    if let Some(bound) = scopes
        .iter()
        .find(|s| state.config.scope_bindings.contains_key(*s))
    {
        return Err(OAuthError::invalid_scope(format!(
            "scope {bound} requires user authentication and cannot be granted to client_credentials"
        )));
    }
    let audience = audience(state, client, form.get("resource"))?;
    let lifetime = state.config.tokens.access_token_seconds;
    let token = mint_access_token(
        state,
        &AccessGrant {
            subject: &client.id,
            client_id: &client.id,
            scopes: &scopes,
            audience,
            lifetime,
            authentication: None,
            auth_country: None,
            device_id: None,
            cnf_jkt: jkt,
            authorization_details: None,
        },
    )?;
    let scope: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    let token_type = if jkt.is_some() { "DPoP" } else { "Bearer" };
    let mut body = json!({ "access_token": token.token, "token_type": token_type, "expires_in": lifetime });
    if !scope.is_empty() {
        body["scope"] = Value::from(scope.join(" "));
    }
    Ok(token_response(body))
}

/// Checks that a token is an access token this server issued, unexpired and
/// not revoked.
pub(crate) async fn active_access_token(
    state: &ServerState,
    token: &str,
) -> Result<Option<Arc<AccessTokenClaims>>, OAuthError> {
    let now = state.clock.now();
    let Some(claims) = state
        .keys()
        .genuine_access_token(token, &state.config.issuer, now)
    else {
        return Ok(None);
    };
    if claims.exp <= now.seconds() {
        return Ok(None);
    }
    // Read every time, remembered token or not: a revocation, possibly at
    // another instance, or the removal of its client (whose
    // client_credentials tokens are in no family), takes effect at once.
    if !state
        .store
        .is_token_live(&claims.jti, claims.client_id.as_str())
        .await?
    {
        return Ok(None);
    }
    Ok(Some(claims))
}

pub(crate) async fn introspect(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match introspect_inner(&state, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn introspect_inner(
    state: &ServerState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let form = Form::parse(headers, body)?;
    client::authenticate_at(state, "/introspect", headers, &form, false).await?;
    let token = form.require("token")?;
    let Some(c) = active_access_token(state, token).await? else {
        return Ok(token_response(json!({ "active": false })));
    };
    let bound = c.cnf.as_ref().and_then(|cnf| cnf.jkt.clone());
    let mut body = json!({
        "active": true,
        "token_type": if bound.is_some() { "DPoP" } else { "Bearer" },
        "iss": c.iss,
        "sub": c.sub,
        "aud": c.aud,
        "exp": c.exp,
        "iat": c.iat,
        "jti": c.jti,
        "client_id": c.client_id,
    });
    for (name, value) in [
        ("scope", c.scope.clone().map(Value::from)),
        ("acr", c.acr.clone().map(Value::from)),
        ("amr", c.amr.clone().map(Value::from)),
        ("auth_time", c.auth_time.map(Value::from)),
        // RFC 9449 §6.2: the key the token is bound to.
        ("cnf", bound.map(|jkt| json!({ "jkt": jkt }))),
        ("auth_country", c.auth_country.clone().map(Value::from)),
        ("device_id", c.device_id.clone().map(Value::from)),
        (
            "authorization_details",
            c.authorization_details
                .as_ref()
                .and_then(|d| serde_json::to_value(d).ok()),
        ),
    ] {
        if let Some(v) = value {
            body[name] = v;
        }
    }
    Ok(token_response(body))
}

pub(crate) async fn revoke(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match revoke_inner(&state, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// RFC 7009 §2.1: revokes a token issued to the requesting client; invalid
/// or unknown tokens get 200 too (§2.2), a token of another client is refused.
async fn revoke_inner(state: &ServerState, headers: &HeaderMap, body: &[u8]) -> Result<Response, OAuthError> {
    let form = Form::parse(headers, body)?;
    let client = client::authenticate_at(state, "/revoke", headers, &form, true).await?;
    let token = form.require("token")?;
    if let Some(claims) = active_access_token(state, token).await? {
        if claims.client_id.as_str() != client.id {
            return Err(OAuthError::unauthorized_client(
                "the token was not issued to this client",
            ));
        }
        state.store.revoke_token(&claims.jti, claims.exp).await?;
        tracing::info!(client = %client.id, jti = %claims.jti, "access token revoked");
    } else {
        crate::grants::revoke_refresh_token(state, &client, token).await?;
    }
    let mut response = ().into_response();
    no_store(response.headers_mut());
    Ok(response)
}

/// OpenID Connect Core §5.3: claims about the user of an access token
/// carrying `openid`. The token is checked as any resource checks one
/// (`dpop::presented_access_token`); errors per RFC 6750 §3 and RFC 9449
/// §7.1.
pub(crate) async fn userinfo(
    State(state): State<Arc<ServerState>>,
    method: http::Method,
    headers: HeaderMap,
) -> Response {
    let claims =
        match crate::dpop::presented_access_token(&state, &headers, method.as_str(), "/userinfo").await {
            Ok(c) => c,
            Err(refusal) => return refusal.into_response(),
        };
    let scopes: Vec<&str> = claims.scope.as_deref().unwrap_or("").split(' ').collect();
    if !scopes.contains(&"openid") {
        return crate::dpop::ResourceRefusal::insufficient_scope("the openid scope is required")
            .into_response();
    }
    let mut body = json!({ "sub": claims.sub });
    if scopes.contains(&"profile")
        && let Ok(Some(user)) = state.store.user_by_id(claims.sub.as_str()).await
    {
        body["preferred_username"] = Value::from(user.username);
    }
    let mut response = Json(body).into_response();
    no_store(response.headers_mut());
    response
}
