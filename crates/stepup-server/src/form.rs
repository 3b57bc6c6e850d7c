//! `application/x-www-form-urlencoded` request bodies, read strictly:
//! RFC 6749 §3.1/§3.2 parameters sent without a value are treated as
//! omitted, a parameter sent twice is an error, and each is bounded
//! (`stepup_core::limits`).

use std::collections::HashMap;

use http::HeaderMap;
use stepup_core::authorization_request::params_from;

use crate::error::OAuthError;

/// The parameters of a form body.
#[derive(Debug, Default)]
pub(crate) struct Form {
    params: HashMap<String, String>,
}

impl Form {
    /// Parses a body, checking the content type.
    pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        // One reading of parameters (and their bounds) for every endpoint.
        let params = params_from(body).map_err(|e| OAuthError::invalid_request(e.to_string()))?;
        Ok(Self { params })
    }

    /// All parameters.
    pub(crate) fn params(&self) -> &HashMap<String, String> {
        &self.params
    }

    /// An optional parameter.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A required parameter.
    pub(crate) fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }
}
