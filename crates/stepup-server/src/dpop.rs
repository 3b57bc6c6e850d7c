//! DPoP at the token endpoint (RFC 9449 §5): a proof in the `DPoP` header
//! binds the issued access token to its key (`cnf.jkt`, `token_type`
//! `DPoP`) and, for public clients, the refresh token too; each proof is
//! used once.

use http::HeaderMap;
use stepup_core::dpop::{ProofContext, ProofError, ProofPolicy, verify_proof};
use stepup_guard::dpop::NonceSource;

use crate::client::Client;
use crate::error::OAuthError;
use crate::server::ServerState;

fn refuse(description: impl Into<String>) -> OAuthError {
    OAuthError::with_code("invalid_dpop_proof", description)
}

/// The thumbprint of the key of the request's DPoP proof, if it has one.
pub(crate) async fn token_proof(
    state: &ServerState,
    headers: &HeaderMap,
    client: &Client,
) -> Result<Option<String>, OAuthError> {
    let mut proofs = headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) if client.require_dpop => {
            return Err(refuse("this client must bind its tokens with a DPoP proof"));
        }
        (None, _) => return Ok(None),
        (Some(_), Some(_)) => return Err(refuse("send one DPoP header")),
        (Some(p), None) => p.to_str().map_err(|_| refuse("the DPoP header is not ASCII"))?,
    };
    let now = state.clock.now();
    let uri = format!("{}/token", state.config.issuer);
    let nonces = state
        .config
        .dpop
        .nonce_secret
        .as_deref()
        .and_then(|secret| NonceSource::new(secret.as_bytes(), state.config.dpop.nonce_seconds));
    let accepted = nonces.as_ref().map(|n| n.accepted_at(now.seconds()));
    let candidates: Vec<Option<&str>> = match &accepted {
        Some(list) => list.iter().map(|n| Some(n.as_str())).collect(),
        None => vec![None],
    };
    let policy = ProofPolicy::default();
    let mut result = Err(ProofError::NonceRequired);
    for nonce in candidates {
        let context = ProofContext {
            method: "POST",
            uri: &uri,
            access_token: None,
            bound_jkt: None,
            nonce,
        };
        result = verify_proof(proof, &context, &policy, now);
        if result != Err(ProofError::NonceRequired) {
            break;
        }
    }
    let verified = match result {
        Ok(v) => v,
        Err(ProofError::NonceRequired) => {
            let mut e =
                OAuthError::with_code("use_dpop_nonce", "send the proof again with the server's nonce");
            e.dpop_nonce = nonces.map(|n| n.current(now.seconds()));
            return Err(e);
        }
        Err(e) => return Err(refuse(e.to_string())),
    };
    // Each proof once, across instances (the store is shared).
    let id = format!("dpop:{}:{}", verified.jkt, verified.jti);
    let until = now.seconds() + policy.max_age_seconds + policy.max_skew_seconds;
    if !state.store.use_assertion(&id, until).await? {
        return Err(refuse("this DPoP proof was already used"));
    }
    Ok(Some(verified.jkt))
}
