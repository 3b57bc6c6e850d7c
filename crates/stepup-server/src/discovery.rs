//! Authorization server metadata (RFC 8414) and the JWK Set.
//!
//! Both documents are the same: OpenID Connect Discovery metadata is a
//! superset of RFC 8414's.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde_json::{Value, json};

use crate::server::ServerState;

/// The metadata document (RFC 8414 §2; OpenID Connect Discovery §3).
pub(crate) fn document(state: &ServerState) -> Value {
    let issuer = &state.config.issuer;
    let acr_values: Vec<&str> = state
        .config
        .assurance
        .levels()
        .iter()
        .map(|a| a.as_str())
        .collect();
    // Client assertions may use any algorithm the verifier supports.
    let algs: Vec<&str> = stepup_core::jwk::Algorithm::ALL
        .iter()
        .map(|a| a.as_str())
        .collect();
    let mut scopes: Vec<&str> = vec!["openid", "profile", "offline_access"];
    scopes.extend(state.config.scope_bindings.keys().map(|s| s.as_str()));
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "pushed_authorization_request_endpoint": format!("{issuer}/par"),
        "require_pushed_authorization_requests": false,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "scopes_supported": scopes,
        "id_token_signing_alg_values_supported": [state.config.signing_alg.as_str()],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "RS256", "PS256"],
        "authorization_details_types_supported": state.config.details_types.keys().collect::<Vec<_>>(),
        "acr_values_supported": acr_values,
        // RFC 8414 gives the list no order; this one's is weakest first,
        // and says so for clients that rank levels.
        "stepup_acr_values_weakest_first": true,
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "preferred_username"],
        "claims_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "introspection_endpoint_auth_signing_alg_values_supported": algs,
        "revocation_endpoint_auth_signing_alg_values_supported": algs,
    })
}

pub(crate) async fn metadata(State(state): State<Arc<ServerState>>) -> Response {
    with_cache(Json(document(&state)).into_response(), 300)
}

pub(crate) async fn openid_configuration(State(state): State<Arc<ServerState>>) -> Response {
    with_cache(Json(document(&state)).into_response(), 300)
}

pub(crate) async fn jwks(State(state): State<Arc<ServerState>>) -> Response {
    let body = state.keys().jwks().clone();
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    with_cache(response, 300)
}

fn with_cache(mut response: Response, seconds: u32) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={seconds}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response
}
