//! Authorization server metadata (RFC 8414) and the JWK Set.
//!
//! Only endpoints that exist are listed: the authorization endpoint, and
//! with it OpenID Connect discovery, arrive with the code flow.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde_json::{Value, json};

use crate::server::ServerState;

/// The metadata document.
pub(crate) fn document(state: &ServerState) -> Value {
    let issuer = &state.config.issuer;
    let acr_values: Vec<&str> = state
        .config
        .assurance
        .levels()
        .iter()
        .map(|a| a.as_str())
        .collect();
    let algs: Vec<&str> = state.keys().algorithms().iter().map(|a| a.as_str()).collect();
    json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "acr_values_supported": acr_values,
        "token_endpoint_auth_signing_alg_values_supported": algs,
    })
}

pub(crate) async fn metadata(State(state): State<Arc<ServerState>>) -> Response {
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
