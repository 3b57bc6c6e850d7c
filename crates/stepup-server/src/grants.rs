//! The user grants of the token endpoint: `authorization_code` with PKCE
//! (RFC 6749 §4.1.3, RFC 7636 §4.6) and `refresh_token` with rotation
//! (RFC 9700 §4.14.2). Codes are one-time: a replay revokes everything
//! issued from the code. A reused refresh token revokes its family.
//! Refreshing never raises assurance: `acr`, `amr` and `auth_time` are
//! those of the original authentication, and once a level's lifetime has
//! passed the refreshed token falls back to the base level.

use serde_json::{Value, json};
use stepup_core::Scope;
use stepup_core::pkce::CodeChallenge;

use crate::authorize::Grant;
use crate::client::Client;
use crate::error::OAuthError;
use crate::form::Form;
use crate::server::ServerState;
use crate::session;
use crate::store::{Claim, Claimed, OneTime};
use crate::token::{AccessGrant, audience, mint_access_token, token_response};

fn scopes_of(grant: &Grant) -> Vec<Scope> {
    grant
        .scopes
        .iter()
        .filter_map(|s| Scope::new(s.as_str()).ok())
        .collect()
}

/// Whether `acr` is above the weakest configured level.
fn elevated(state: &ServerState, acr: &str) -> bool {
    let levels = &state.config.assurance;
    let base = levels.levels().first().map(|l| levels.rank(Some(l.as_str())));
    Some(levels.rank(Some(acr))) > base
}

/// Issues access, ID and refresh tokens for a grant within a family.
/// `grant` is what the tokens say; `kept` is what the new refresh token
/// carries (the same, except that narrowing `scope` on refresh narrows
/// only the tokens, RFC 6749 §6).
/// Nothing is handed out unless recorded; a grant refused while its
/// tokens are prepared (an unknown `resource`, say) keeps its value used,
/// as every refusal after the value was presented does.
async fn issue(
    state: &ServerState,
    client: &Client,
    grant: &Grant,
    kept: &Grant,
    claim: Claim,
    form: &Form,
    jkt: Option<&str>,
) -> Result<Value, OAuthError> {
    // One place for codes and refresh tokens: none of a disabled or
    // deleted account, or of a removed client, is honoured, whenever it
    // was issued (the client cache may still know a removed client).
    match state.store.grant_refusal(&grant.user_id, &client.id).await {
        Ok(None) => {}
        Ok(Some(why)) => return refuse(claim, OAuthError::invalid_grant(why)).await,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the grant's user");
            return refuse(claim, OAuthError::server_error()).await;
        }
    }
    let Prepared {
        mut body,
        access_jti,
        access_exp,
        refresh,
    } = match prepare(state, client, grant, kept, form, jkt) {
        Ok(prepared) => prepared,
        Err(e) => return refuse(claim, e).await,
    };
    let refresh_id = refresh.as_ref().map(|(secret, _, _)| session::secret_id(secret));
    let recorded = claim
        .record_issued(
            &access_jti,
            access_exp,
            refresh_id
                .as_deref()
                .zip(refresh.as_ref())
                .map(|(id, (_, grant, end))| (id, grant.as_str(), *end)),
        )
        .await?;
    if !recorded {
        return Err(OAuthError::invalid_grant("the grant was revoked"));
    }
    if let Some((secret, _, _)) = refresh {
        body["refresh_token"] = Value::from(secret);
    }
    Ok(body)
}

/// The tokens of a grant, signed, not yet recorded.
struct Prepared {
    body: Value,
    access_jti: String,
    access_exp: i64,
    /// The new refresh token: secret, grant JSON, family end.
    refresh: Option<(String, String, i64)>,
}

fn prepare(
    state: &ServerState,
    client: &Client,
    grant: &Grant,
    kept: &Grant,
    form: &Form,
    jkt: Option<&str>,
) -> Result<Prepared, OAuthError> {
    let now = state.clock.now().seconds();
    let scopes = scopes_of(grant);
    let mut lifetime = if elevated(state, &grant.acr) {
        state.config.tokens.elevated_access_token_seconds
    } else {
        state.config.tokens.access_token_seconds
    };
    // A transaction's token lives only as long as its type allows.
    let transaction = grant.authorization_details.as_ref();
    for entry in transaction.and_then(Value::as_array).into_iter().flatten() {
        let kind = entry.get("type").and_then(Value::as_str).unwrap_or_default();
        if let Some((spec, _)) = state.config.details_types.get(kind) {
            lifetime = lifetime.min(spec.token_seconds);
        }
    }
    let audience = grant_audience(state, client, kept, form)?;
    let access = mint_access_token(
        state,
        &AccessGrant {
            subject: &grant.user_id,
            client_id: &client.id,
            scopes: &scopes,
            audience,
            lifetime,
            authentication: Some((&grant.acr, &grant.amr, grant.auth_time)),
            auth_country: grant.auth_country.as_deref(),
            device_id: grant.device_id.as_deref(),
            cnf_jkt: jkt,
            authorization_details: transaction,
        },
    )?;
    let mut body = json!({
        "access_token": access.token,
        "token_type": if jkt.is_some() { "DPoP" } else { "Bearer" },
        "expires_in": lifetime,
    });
    if !grant.scopes.is_empty() {
        body["scope"] = Value::from(grant.scopes.join(" "));
    }
    if let Some(details) = transaction {
        body["authorization_details"] = details.clone();
    }
    if grant.scopes.iter().any(|s| s == "openid") {
        let alg = state.config.signing_alg;
        let mut claims = json!({
            "iss": state.config.issuer,
            "sub": grant.user_id,
            "aud": client.id,
            "azp": client.id,
            "exp": now + state.config.tokens.id_token_seconds,
            "iat": now,
            "auth_time": grant.auth_time,
            "acr": grant.acr,
            "amr": grant.amr,
            "at_hash": stepup_core::id_token::at_hash(alg, &access.token),
        });
        if let Some(nonce) = &grant.nonce {
            claims["nonce"] = Value::from(nonce.as_str());
        }
        body["id_token"] = Value::from(state.keys().sign(alg, "JWT", &claims, &state.rng)?);
    }
    // A transaction token is for that transaction: no refresh token.
    let refresh = if client.may_use_grant("refresh_token") && transaction.is_none() {
        let secret = session::new_secret(&state.rng).ok_or_else(OAuthError::server_error)?;
        let mut kept = kept.clone();
        // A public client's refresh token is bound to its DPoP key (RFC
        // 9449 §5): stolen, it cannot be used without the key.
        if client.auth_method == crate::client::AuthMethod::None && kept.bound_jkt.is_none() {
            kept.bound_jkt = jkt.map(str::to_owned);
        }
        // The refresh tokens stay with the resource the first tokens were
        // for, named at the authorization request or the code exchange.
        kept.resource.get_or_insert_with(|| audience.to_owned());
        // The family ends at a fixed time: rotation does not extend it.
        let family_end = *kept
            .family_expires_at
            .get_or_insert(now + state.config.tokens.refresh_token_seconds);
        let grant_json = serde_json::to_string(&kept).map_err(|_| OAuthError::server_error())?;
        Some((secret, grant_json, family_end))
    } else {
        None
    };
    Ok(Prepared {
        body,
        access_jti: access.jti,
        access_exp: access.exp,
        refresh,
    })
}

/// Claims a one-time value; a replay revokes its family (in the claim's
/// transaction). An expired value stays used and is refused.
async fn claim(
    state: &ServerState,
    kind: OneTime,
    value: &str,
    what: &str,
) -> Result<(Grant, Claim), OAuthError> {
    let now = state.clock.now().seconds();
    match state
        .store
        .claim_one_time(kind, &session::secret_id(value), now)
        .await?
    {
        Claimed::NotFound => Err(OAuthError::invalid_grant(format!("unknown {what}"))),
        Claimed::Replayed { family_id } => {
            tracing::warn!(family = %family_id, "{what} replayed: the tokens issued from it are revoked");
            Err(OAuthError::invalid_grant(format!(
                "{what} already used; the tokens issued from it are revoked"
            )))
        }
        Claimed::Fresh(claim) => {
            if claim.expires_at <= now {
                return refuse(claim, OAuthError::invalid_grant(format!("{what} expired"))).await;
            }
            match serde_json::from_str::<Grant>(&claim.grant_data) {
                Ok(grant) => Ok((grant, claim)),
                Err(_) => refuse(claim, OAuthError::server_error()).await,
            }
        }
    }
}

/// Commits the use of a claimed value and returns `error`: a grant refused
/// after its value was presented does not leave the value usable.
async fn refuse<T>(claim: Claim, error: OAuthError) -> Result<T, OAuthError> {
    claim.keep_used().await?;
    Err(error)
}

pub(crate) async fn authorization_code(
    state: &ServerState,
    client: &Client,
    form: &Form,
    jkt: Option<&str>,
) -> Result<axum::response::Response, OAuthError> {
    if !client.may_use_grant("authorization_code") {
        return Err(OAuthError::unauthorized_client(
            "this client may not use authorization_code",
        ));
    }
    let code = form.require("code")?;
    let redirect_uri = form.require("redirect_uri")?;
    let verifier = form.require("code_verifier")?;
    let (grant, claim) = claim(state, OneTime::Code, code, "authorization code").await?;
    if grant.client_id != client.id {
        return refuse(
            claim,
            OAuthError::invalid_grant("the code was issued to another client"),
        )
        .await;
    }
    if grant.redirect_uri != redirect_uri {
        return refuse(
            claim,
            OAuthError::invalid_grant("redirect_uri differs from the authorization request"),
        )
        .await;
    }
    if let Err(e) = CodeChallenge::parse(&grant.code_challenge, Some("S256")).and_then(|c| c.verify(verifier))
    {
        return refuse(claim, OAuthError::invalid_grant(e.to_string())).await;
    }
    if let Some(expected) = grant.dpop_jkt.as_deref()
        && jkt != Some(expected)
    {
        return refuse(
            claim,
            OAuthError::with_code(
                "invalid_dpop_proof",
                "the authorization request named another DPoP key (dpop_jkt)",
            ),
        )
        .await;
    }
    let body = issue(state, client, &grant, &grant, claim, form, jkt).await?;
    Ok(token_response(body))
}

pub(crate) async fn refresh_token(
    state: &ServerState,
    client: &Client,
    form: &Form,
    jkt: Option<&str>,
) -> Result<axum::response::Response, OAuthError> {
    if !client.may_use_grant("refresh_token") {
        return Err(OAuthError::unauthorized_client(
            "this client may not use refresh_token",
        ));
    }
    let token = form.require("refresh_token")?;
    // A bound refresh token is checked before it is used up: someone who
    // stole it but lacks the key must not be able to burn it (and with it
    // the user's sign-in).
    if let Some((_, data)) = state
        .store
        .one_time_family(OneTime::Refresh, &session::secret_id(token))
        .await?
    {
        let peek: Grant = serde_json::from_str(&data).map_err(|_| OAuthError::server_error())?;
        if let Some(bound) = peek.bound_jkt.as_deref()
            && jkt != Some(bound)
        {
            return Err(OAuthError::with_code(
                "invalid_dpop_proof",
                "the refresh token is bound to a DPoP key: send a proof made with it",
            ));
        }
    }
    let (mut grant, claim) = claim(state, OneTime::Refresh, token, "refresh token").await?;
    if grant.client_id != client.id {
        claim.revoke_family(state.clock.now().seconds()).await?;
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if let Some(bound) = grant.bound_jkt.as_deref()
        && jkt != Some(bound)
    {
        return refuse(
            claim,
            OAuthError::with_code(
                "invalid_dpop_proof",
                "the refresh token is bound to a DPoP key: send a proof made with it",
            ),
        )
        .await;
    }
    if let Some(requested) = form.get("scope") {
        let requested: Vec<String> = requested
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(extra) = requested.iter().find(|s| !grant.scopes.contains(s)) {
            let error = OAuthError::invalid_scope(format!("scope {extra} was not granted originally"));
            return refuse(claim, error).await;
        }
        decay(state, &mut grant);
        let mut narrowed = grant.clone();
        narrowed.scopes.retain(|s| requested.contains(s));
        let body = issue(state, client, &narrowed, &grant, claim, form, jkt).await?;
        return Ok(token_response(body));
    }
    decay(state, &mut grant);
    let body = issue(state, client, &grant, &grant, claim, form, jkt).await?;
    Ok(token_response(body))
}

/// Refreshing never keeps more than the authentication still supports:
/// a scope the user approves on a page (`approve = true`) is never
/// refreshed (the approval was for the tokens of that request); a scope
/// bound to a level is dropped once its `max_age` has passed since
/// `auth_time`, and once the level's lifetime has passed the grant falls
/// back to the base level, without the scopes bound to higher levels.
fn decay(state: &ServerState, grant: &mut Grant) {
    grant
        .scopes
        .retain(|s| !state.config.approved_scopes.contains_key(s));
    let now = state.clock.now().seconds();
    let age = u64::try_from(now.saturating_sub(grant.auth_time)).unwrap_or(0);
    let bindings = &state.config.scope_bindings;
    let binding = |s: &String| {
        Scope::new(s.as_str())
            .ok()
            .and_then(|s| bindings.get(&s).cloned())
    };
    grant
        .scopes
        .retain(|s| binding(s).is_none_or(|(_, max_age)| max_age.is_none_or(|m| age <= m)));
    let lifetime = state
        .config
        .auth_levels
        .iter()
        .find(|l| l.acr.as_str() == grant.acr)
        .and_then(|l| l.lifetime_seconds);
    if lifetime.is_none_or(|l| age <= l) {
        return;
    }
    let Some(base) = state.config.assurance.levels().first() else {
        return;
    };
    grant.acr = base.as_str().to_owned();
    grant.amr.retain(|a| a == "pwd");
    grant.scopes.retain(|s| binding(s).is_none());
}

/// RFC 7009 §2.1: revoking a refresh token revokes its family (and the
/// access tokens issued in it).
pub(crate) async fn revoke_refresh_token(
    state: &ServerState,
    client: &Client,
    token: &str,
) -> Result<(), OAuthError> {
    let Some((family_id, grant_data)) = state
        .store
        .one_time_family(OneTime::Refresh, &session::secret_id(token))
        .await?
    else {
        return Ok(());
    };
    let grant: Grant = serde_json::from_str(&grant_data).map_err(|_| OAuthError::server_error())?;
    if grant.client_id != client.id {
        return Err(OAuthError::unauthorized_client(
            "the token was not issued to this client",
        ));
    }
    state
        .store
        .revoke_family(&family_id, state.clock.now().seconds())
        .await?;
    tracing::info!(client = %client.id, family = %family_id, "refresh token family revoked");
    Ok(())
}

/// The audience of a grant's access token: the resource its authorization
/// request named, which a token request may repeat but not change (RFC
/// 8707 §2.2), else the one the token request asks.
fn grant_audience<'s>(
    state: &'s ServerState,
    client: &Client,
    grant: &Grant,
    form: &Form,
) -> Result<&'s str, OAuthError> {
    let asked = form.get("resource");
    match (grant.resource.as_deref(), asked) {
        (Some(bound), Some(asked)) if bound != asked => Err(OAuthError::invalid_target(format!(
            "the grant is for the resource {bound:?}, not {asked:?}"
        ))),
        (Some(bound), _) => audience(state, client, Some(bound)),
        (None, asked) => audience(state, client, asked),
    }
}
