//! OAuth error responses (RFC 6749 §5.2): the one place where the token,
//! introspection and revocation endpoints turn failures into HTTP.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

use crate::keys::KeyError;
use crate::store::StoreError;

/// An error code of RFC 6749 §5.2 (and its extensions), with the detail
/// that is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// The `error` code.
    pub code: &'static str,
    /// The `error_description`.
    pub description: String,
    /// Whether the client tried HTTP Basic authentication (RFC 6749 §5.2:
    /// a failed Basic authentication is answered 401 with a challenge).
    pub basic_attempted: bool,
    /// A `DPoP-Nonce` to send with `use_dpop_nonce` (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            basic_attempted: false,
            dpop_nonce: None,
        }
    }

    /// An error with a code chosen elsewhere (the authorization endpoint's
    /// codes, when a pushed request is refused).
    pub(crate) fn with_code(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(code, description)
    }

    /// Malformed request: missing, repeated or unsupported parameters.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    /// Client authentication failed.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new("invalid_client", description)
    }

    /// Bad grant: code, refresh token or credentials.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    /// The client may not use this grant type.
    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new("unauthorized_client", description)
    }

    /// Grant type not supported.
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::new("unsupported_grant_type", description)
    }

    /// Scope not allowed.
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new("invalid_scope", description)
    }

    /// `resource` not allowed (RFC 8707 §2).
    pub fn invalid_target(description: impl Into<String>) -> Self {
        Self::new("invalid_target", description)
    }

    /// Our fault; the detail goes to the log, not to the client.
    pub fn server_error() -> Self {
        Self::new("server_error", "the server could not complete the request")
    }

    fn status(&self) -> StatusCode {
        match self.code {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failed");
        Self::server_error()
    }
}

impl From<KeyError> for OAuthError {
    fn from(e: KeyError) -> Self {
        tracing::error!(error = %e, "signing failed");
        Self::server_error()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({ "error": self.code, "error_description": self.description });
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        no_store(headers);
        if let Some(nonce) = self
            .dpop_nonce
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            headers.insert("dpop-nonce", nonce);
        }
        if status == StatusCode::UNAUTHORIZED && self.basic_attempted {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"stepup\""),
            );
        }
        response
    }
}

/// RFC 6749 §5.1: responses carrying tokens or token errors are not cached.
pub(crate) fn no_store(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
