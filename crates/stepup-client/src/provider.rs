//! The authorization server, as its metadata describes it (RFC 8414,
//! OpenID Connect Discovery).

use serde::Deserialize;
use stepup_core::jwk::Algorithm;
use stepup_core::jws::AlgorithmSet;
use url::Url;

use crate::error::ClientError;

/// The endpoints of an authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The issuer identifier (compared with the `iss` of authorization
    /// responses, RFC 9207).
    pub issuer: String,
    /// Where the browser is sent.
    pub authorization_endpoint: Url,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: Url,
    /// Where authorization requests are pushed (RFC 9126), if it takes
    /// them: the client then pushes every request.
    pub pushed_authorization_request_endpoint: Option<Url>,
    /// Whether every authorization response carries `iss` (RFC 9207): one
    /// without it is then refused.
    pub authorization_response_iss_parameter_supported: bool,
    /// The levels (`acr` values) it supports, in its order.
    pub acr_values_supported: Vec<String>,
    /// Whether it says that order is weakest first (a stepup server's
    /// `stepup_acr_values_weakest_first`): then the levels can be ranked.
    pub acr_values_ordered: bool,
    /// The issuer's keys (`jwks_uri`), which sign its ID tokens.
    pub jwks_uri: Option<Url>,
    /// Whether it is an OpenID provider (`openid` among its scopes, and
    /// keys to check ID tokens with): the client then asks for an ID token
    /// with every sign-in, to know who signed in.
    pub openid: bool,
    /// The algorithms its ID tokens are signed with, of those this crate
    /// verifies (all of them when it does not say).
    pub id_token_algorithms: AlgorithmSet,
}

#[derive(Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pushed_authorization_request_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    acr_values_supported: Vec<String>,
    #[serde(default)]
    stepup_acr_values_weakest_first: bool,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    scopes_supported: Vec<String>,
    #[serde(default)]
    id_token_signing_alg_values_supported: Vec<String>,
}

impl Provider {
    /// Reads `{issuer}/.well-known/oauth-authorization-server` (RFC 8414),
    /// or the OpenID configuration when that is missing. The metadata must
    /// name the same issuer (RFC 8414 §3.3) and its endpoints must be https
    /// (or http on loopback, for local use).
    pub async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Self, ClientError> {
        let fail = |reason: String| ClientError::Discovery {
            issuer: issuer.to_owned(),
            reason,
        };
        let base = issuer.trim_end_matches('/');
        let mut last = String::new();
        for well_known in ["oauth-authorization-server", "openid-configuration"] {
            let url = format!("{base}/.well-known/{well_known}");
            let response = http.get(&url).send().await?;
            if !response.status().is_success() {
                last = format!("{url}: HTTP {}", response.status().as_u16());
                continue;
            }
            let metadata: Metadata = response
                .json()
                .await
                .map_err(|e| fail(format!("{url}: not valid metadata: {e}")))?;
            return Self::from_metadata(issuer, metadata).map_err(fail);
        }
        Err(fail(last))
    }

    fn from_metadata(issuer: &str, metadata: Metadata) -> Result<Self, String> {
        if metadata.issuer != issuer {
            return Err(format!(
                "the metadata names issuer {:?} (RFC 8414 §3.3: it must be the one asked)",
                metadata.issuer
            ));
        }
        if !metadata.code_challenge_methods_supported.is_empty()
            && !metadata
                .code_challenge_methods_supported
                .iter()
                .any(|m| m == "S256")
        {
            return Err("the server does not support PKCE with S256".to_owned());
        }
        let jwks_uri = metadata.jwks_uri.as_deref().map(endpoint).transpose()?;
        let openid = jwks_uri.is_some() && metadata.scopes_supported.iter().any(|s| s == "openid");
        // `none` and unknown names are not algorithms this crate verifies.
        let named: AlgorithmSet = metadata
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|a| a.parse::<Algorithm>().ok())
            .collect();
        let id_token_algorithms = if metadata.id_token_signing_alg_values_supported.is_empty() {
            AlgorithmSet::all()
        } else {
            named
        };
        if openid && id_token_algorithms.is_empty() {
            return Err(format!(
                "its ID tokens are signed with {:?}, none of which this client verifies",
                metadata.id_token_signing_alg_values_supported
            ));
        }
        Ok(Self {
            issuer: metadata.issuer,
            authorization_endpoint: endpoint(&metadata.authorization_endpoint)?,
            token_endpoint: endpoint(&metadata.token_endpoint)?,
            pushed_authorization_request_endpoint: metadata
                .pushed_authorization_request_endpoint
                .as_deref()
                .map(endpoint)
                .transpose()?,
            authorization_response_iss_parameter_supported: metadata
                .authorization_response_iss_parameter_supported,
            acr_values_supported: metadata.acr_values_supported,
            acr_values_ordered: metadata.stepup_acr_values_weakest_first,
            jwks_uri,
            openid,
            id_token_algorithms,
        })
    }
}

/// An endpoint URL: https, or http on a loopback host.
fn endpoint(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("endpoint {raw:?}: {e}"))?;
    let loopback = stepup_core::resource_metadata::is_loopback(&url);
    if url.scheme() == "https" || (url.scheme() == "http" && loopback) {
        Ok(url)
    } else {
        Err(format!("endpoint {raw:?} must be https (http only on loopback)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(issuer: &str, endpoint: &str) -> Metadata {
        Metadata {
            issuer: issuer.into(),
            authorization_endpoint: format!("{endpoint}/authorize"),
            token_endpoint: format!("{endpoint}/token"),
            code_challenge_methods_supported: vec!["S256".into()],
            pushed_authorization_request_endpoint: None,
            authorization_response_iss_parameter_supported: false,
            acr_values_supported: vec![],
            stepup_acr_values_weakest_first: false,
            jwks_uri: None,
            scopes_supported: vec![],
            id_token_signing_alg_values_supported: vec![],
        }
    }

    #[test]
    fn metadata_is_checked() {
        let ok = Provider::from_metadata(
            "https://as.example",
            metadata("https://as.example", "https://as.example"),
        );
        assert_eq!(ok.unwrap().token_endpoint.as_str(), "https://as.example/token");
        let other = Provider::from_metadata(
            "https://as.example",
            metadata("https://evil.example", "https://as.example"),
        );
        assert!(other.unwrap_err().contains("RFC 8414"));
        let plain = Provider::from_metadata(
            "https://as.example",
            metadata("https://as.example", "http://as.example"),
        );
        assert!(plain.unwrap_err().contains("must be https"));
        let local = Provider::from_metadata(
            "http://127.0.0.1:8080",
            metadata("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        );
        assert!(!local.unwrap().openid, "no keys, no openid scope");
        let mut oidc = metadata("https://as.example", "https://as.example");
        oidc.jwks_uri = Some("https://as.example/jwks".into());
        oidc.scopes_supported = vec!["openid".into()];
        oidc.id_token_signing_alg_values_supported = vec!["none".into(), "ES256".into()];
        let oidc = Provider::from_metadata("https://as.example", oidc).unwrap();
        assert!(oidc.openid);
        assert_eq!(
            oidc.id_token_algorithms,
            AlgorithmSet::empty().with(Algorithm::ES256),
            "none is never taken"
        );
        let mut only_none = metadata("https://as.example", "https://as.example");
        only_none.jwks_uri = Some("https://as.example/jwks".into());
        only_none.scopes_supported = vec!["openid".into()];
        only_none.id_token_signing_alg_values_supported = vec!["none".into(), "HS256".into()];
        assert!(
            Provider::from_metadata("https://as.example", only_none)
                .unwrap_err()
                .contains("none of which")
        );
        let mut plain_keys = metadata("https://as.example", "https://as.example");
        plain_keys.jwks_uri = Some("http://as.example/jwks".into());
        assert!(
            Provider::from_metadata("https://as.example", plain_keys)
                .unwrap_err()
                .contains("must be https")
        );
        let mut plain_pkce = metadata("https://as.example", "https://as.example");
        plain_pkce.code_challenge_methods_supported = vec!["plain".into()];
        assert!(
            Provider::from_metadata("https://as.example", plain_pkce)
                .unwrap_err()
                .contains("S256")
        );
    }
}
