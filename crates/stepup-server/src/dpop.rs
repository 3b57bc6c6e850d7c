//! DPoP at the token endpoint (RFC 9449 §5): a proof in the `DPoP` header
//! binds the issued access token to its key (`cnf.jkt`, `token_type`
//! `DPoP`) and, for public clients, the refresh token too; each proof is
//! used once. And at this server's own resources (`/userinfo`, §7): a
//! bound token only with its proof, never as a bearer token.

use std::sync::Arc;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use stepup_core::AccessTokenClaims;
use stepup_core::challenge::{BearerChallenge, ErrorCode, TokenScheme};
use stepup_core::dpop::{
    ProofContext, ProofError, ProofHeaderError, ProofPolicy, SchemeError, required_proof_key,
    verify_proof_with_nonces,
};
use stepup_guard::authorization::{AuthorizationError, access_token};
use stepup_guard::dpop::NonceSource;

use crate::client::Client;
use crate::error::{OAuthError, no_store};
use crate::server::ServerState;
use crate::token;

fn refuse(description: impl Into<String>) -> OAuthError {
    OAuthError::with_code("invalid_dpop_proof", description)
}

/// The thumbprint of the key of the request's DPoP proof, if it has one.
pub(crate) async fn token_proof(
    state: &ServerState,
    headers: &HeaderMap,
    client: &Client,
) -> Result<Option<String>, OAuthError> {
    let proof = match single_proof(headers) {
        Ok(None) if client.require_dpop => {
            return Err(refuse("this client must bind its tokens with a DPoP proof"));
        }
        Ok(None) => return Ok(None),
        Ok(Some(proof)) => proof,
        Err(e) => return Err(refuse(e.to_string())),
    };
    let uri = format!("{}/token", state.config.issuer);
    let context = ProofContext {
        method: "POST",
        uri: &uri,
        access_token: None,
        bound_jkt: None,
        nonce: None,
    };
    match checked_proof(state, proof, &context).await {
        Ok(jkt) => Ok(Some(jkt)),
        Err(ProofRefusal::Proof(ProofError::NonceRequired, nonce)) => {
            let mut e =
                OAuthError::with_code("use_dpop_nonce", "send the proof again with the server's nonce");
            e.dpop_nonce = nonce;
            Err(e)
        }
        Err(ProofRefusal::Proof(e, _)) => Err(refuse(e.to_string())),
        Err(ProofRefusal::Replayed) => Err(refuse("this DPoP proof was already used")),
        Err(ProofRefusal::Store(e)) => Err(e.into()),
    }
}

/// The single `DPoP` header of a request, if any; a description of the
/// fault for several, or one that is not text.
fn single_proof(headers: &HeaderMap) -> Result<Option<&str>, ProofHeaderError> {
    stepup_core::dpop::single_proof(headers.get_all("dpop").iter().map(HeaderValue::as_bytes))
}

/// Why a proof was refused.
enum ProofRefusal {
    /// A stateless check failed; with the nonce to send when it is
    /// [`ProofError::NonceRequired`].
    Proof(ProofError, Option<String>),
    /// The proof was used before, here or at another instance.
    Replayed,
    /// The replay record could not be written.
    Store(crate::store::StoreError),
}

/// The checks of a proof, one for every endpoint: the stateless ones
/// against the server's nonces (when it requires them), then first use,
/// recorded in the shared store. The thumbprint of its key.
async fn checked_proof(
    state: &ServerState,
    proof: &str,
    context: &ProofContext<'_>,
) -> Result<String, ProofRefusal> {
    let now = state.clock.now();
    let nonces = state
        .config
        .dpop
        .nonce_secret
        .as_deref()
        .and_then(|secret| NonceSource::new(secret.as_bytes(), state.config.dpop.nonce_seconds));
    let accepted = nonces.as_ref().map(|n| n.accepted_at(now.seconds()));
    let policy = ProofPolicy::default();
    let verified = verify_proof_with_nonces(
        proof,
        context,
        accepted.as_ref().map(|a| a.as_slice()),
        &policy,
        now,
    )
    .map_err(|e| {
        let nonce = (e == ProofError::NonceRequired)
            .then(|| nonces.as_ref().map(|n| n.current(now.seconds())))
            .flatten();
        ProofRefusal::Proof(e, nonce)
    })?;
    // Each proof once, across instances (the store is shared).
    let id = format!("dpop:{}:{}", verified.jkt, verified.jti);
    let until = now.seconds() + policy.max_age_seconds + policy.max_skew_seconds;
    match state.store.use_assertion(&id, until).await {
        Ok(true) => Ok(verified.jkt),
        Ok(false) => Err(ProofRefusal::Replayed),
        Err(e) => Err(ProofRefusal::Store(e)),
    }
}

/// An access token refused at one of this server's own resources, with
/// the challenge to answer (RFC 6750 §3, RFC 9449 §7.1).
#[derive(Debug)]
pub(crate) struct ResourceRefusal {
    pub(crate) status: StatusCode,
    pub(crate) challenge: Option<BearerChallenge>,
    pub(crate) dpop_nonce: Option<String>,
}

impl ResourceRefusal {
    fn bearer(status: StatusCode, error: Option<ErrorCode>, description: Option<String>) -> Self {
        Self {
            status,
            challenge: Some(BearerChallenge {
                error,
                error_description: description,
                ..BearerChallenge::default()
            }),
            dpop_nonce: None,
        }
    }

    fn dpop(error: &str, description: String, dpop_nonce: Option<String>) -> Self {
        let algs: Vec<&str> = ProofPolicy::default()
            .algorithms
            .iter()
            .map(|a| a.as_str())
            .collect();
        Self {
            status: StatusCode::UNAUTHORIZED,
            challenge: Some(BearerChallenge {
                scheme: TokenScheme::DPoP,
                error: Some(ErrorCode::from(error)),
                error_description: Some(description),
                algs: Some(algs.join(" ")),
                ..BearerChallenge::default()
            }),
            dpop_nonce,
        }
    }

    /// The token is fine, but not for this resource's need (`scope`).
    pub(crate) fn insufficient_scope(description: &str) -> Self {
        Self::bearer(
            StatusCode::FORBIDDEN,
            Some(ErrorCode::InsufficientScope),
            Some(description.to_owned()),
        )
    }
}

impl IntoResponse for ResourceRefusal {
    fn into_response(self) -> Response {
        let body = match &self.challenge {
            Some(BearerChallenge {
                error: Some(error),
                error_description,
                ..
            }) => Json(json!({ "error": error.as_str(), "error_description": error_description }))
                .into_response(),
            _ => ().into_response(),
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if let Some(value) = self
            .challenge
            .and_then(|c| HeaderValue::from_str(&c.to_challenge().to_string()).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(nonce) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            headers.insert("dpop-nonce", nonce);
        }
        response
    }
}

/// The access token of a request to one of this server's own resources
/// (`/userinfo`), checked as the guard checks tokens at an API: one
/// `Authorization` header; a token bound to a key (`cnf`) only with the
/// `DPoP` scheme and a fresh proof of that key for this request, used
/// once; an unbound one only as `Bearer`; active (signature, expiry,
/// revocation).
pub(crate) async fn presented_access_token(
    state: &ServerState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Result<Arc<AccessTokenClaims>, ResourceRefusal> {
    let (scheme, token) = match access_token(headers) {
        Ok(found) => found,
        // RFC 6750 §3.1: a request without credentials gets no error code.
        Err(AuthorizationError::Missing) => {
            return Err(ResourceRefusal::bearer(StatusCode::UNAUTHORIZED, None, None));
        }
        Err(e) => {
            return Err(ResourceRefusal::bearer(
                StatusCode::BAD_REQUEST,
                Some(ErrorCode::InvalidRequest),
                Some(e.description().to_owned()),
            ));
        }
    };
    let invalid_token = |description: String| {
        ResourceRefusal::bearer(
            StatusCode::UNAUTHORIZED,
            Some(ErrorCode::InvalidToken),
            Some(description),
        )
    };
    let claims = match token::active_access_token(state, token).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(invalid_token("the access token is not active".to_owned())),
        Err(e) => {
            tracing::error!(error = ?e, "an access token could not be checked");
            return Err(ResourceRefusal::bearer(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                None,
            ));
        }
    };
    let jkt = claims.cnf.as_ref().and_then(|c| c.jkt.as_deref());
    match required_proof_key(scheme, jkt, claims.cnf.is_some()) {
        Ok(None) => Ok(claims),
        Ok(Some(jkt)) => {
            let proof = match single_proof(headers) {
                Ok(Some(proof)) => proof,
                Ok(None) => {
                    return Err(ResourceRefusal::dpop(
                        "invalid_dpop_proof",
                        "a DPoP proof is required".to_owned(),
                        None,
                    ));
                }
                Err(e) => {
                    return Err(ResourceRefusal::dpop("invalid_dpop_proof", e.to_string(), None));
                }
            };
            let uri = format!("{}{path}", state.config.issuer);
            let context = ProofContext {
                method,
                uri: &uri,
                access_token: Some(token),
                bound_jkt: Some(jkt),
                nonce: None,
            };
            match checked_proof(state, proof, &context).await {
                Ok(_) => Ok(claims),
                Err(ProofRefusal::Proof(e, nonce)) => {
                    Err(ResourceRefusal::dpop(e.code(), e.to_string(), nonce))
                }
                Err(ProofRefusal::Replayed) => Err(ResourceRefusal::dpop(
                    "invalid_dpop_proof",
                    "this DPoP proof was already used".to_owned(),
                    None,
                )),
                Err(ProofRefusal::Store(e)) => {
                    tracing::error!(error = %e, "a DPoP proof could not be recorded");
                    Err(ResourceRefusal::bearer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        None,
                    ))
                }
            }
        }
        // RFC 9449 §7.1: tell the client which scheme, and algorithms, to use.
        Err(e @ SchemeError::BoundTokenAsBearer) if jkt.is_some() => {
            Err(ResourceRefusal::dpop("invalid_token", e.to_string(), None))
        }
        Err(e) => Err(invalid_token(e.to_string())),
    }
}
