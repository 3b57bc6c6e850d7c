//! OAuth 2.0 Protected Resource Metadata (RFC 9728): what a resource
//! server says of itself (its identifier, the authorization servers whose
//! tokens it takes, its scopes, DPoP), and where it says it.
//!
//! A client that meets a challenge learns from it the resource's metadata
//! address (`resource_metadata`, RFC 9728 §5.1), reads the metadata, and
//! follows the challenge only when the metadata names the resource it
//! meant to call and an authorization server it trusts: so a token goes
//! only where it was issued for. The address of a resource's metadata is
//! made and checked by one rule, [`metadata_url`], on both sides.

use serde::{Deserialize, Serialize};
use thiserror::Error;
use url::Url;

/// The well-known path segment of RFC 9728 §3.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// A protected resource's metadata (RFC 9728 §2), the members stepup uses
/// and publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceMetadata {
    /// The resource identifier: an `https` URL (or `http` on loopback)
    /// without query or fragment.
    pub resource: String,
    /// Issuer identifiers of the authorization servers whose tokens it
    /// takes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_servers: Vec<String>,
    /// The scopes its calls may need.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// How it takes tokens: `["header"]` (RFC 6750 §2.1) only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bearer_methods_supported: Vec<String>,
    /// The JWS algorithms it takes in DPoP proofs, when it takes DPoP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dpop_signing_alg_values_supported: Vec<String>,
    /// The `authorization_details` types (RFC 9396) its calls may be bound
    /// to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_details_types_supported: Vec<String>,
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
}

/// Why a resource identifier cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ResourceIdentifierError {
    /// Not a URL.
    #[error("the resource identifier {0:?} is not a URL")]
    NotAUrl(String),
    /// Not `https` (nor `http` on a loopback host).
    #[error("the resource identifier {0:?} must be an https URL (http only on loopback)")]
    NotHttps(String),
    /// With a query or a fragment (RFC 9728 §1.2).
    #[error("the resource identifier {0:?} must have no query and no fragment")]
    QueryOrFragment(String),
}

/// Whether `url` is on a loopback host, where plain `http` is allowed
/// (RFC 8252 §8.3 reasoning: the traffic never leaves the machine).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Checks a resource identifier: `https` (or `http` on loopback), a host,
/// no query, no fragment.
pub fn check_resource(resource: &str) -> Result<Url, ResourceIdentifierError> {
    let url = Url::parse(resource).map_err(|_| ResourceIdentifierError::NotAUrl(resource.to_owned()))?;
    let secure = url.scheme() == "https" || (url.scheme() == "http" && is_loopback(&url));
    if !secure || url.host().is_none() {
        return Err(ResourceIdentifierError::NotHttps(resource.to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ResourceIdentifierError::QueryOrFragment(resource.to_owned()));
    }
    Ok(url)
}

/// Where the metadata of `resource` is (RFC 9728 §3.1): the well-known
/// segment inserted between the host and the path, the path's trailing
/// `/` dropped. `https://api.example` gives
/// `https://api.example/.well-known/oauth-protected-resource`;
/// `https://api.example/v1/` gives `…/oauth-protected-resource/v1`.
/// Returns the URL and its path (what a server routes).
pub fn metadata_url(resource: &str) -> Result<(Url, String), ResourceIdentifierError> {
    let mut url = check_resource(resource)?;
    let path = url.path().trim_end_matches('/');
    let metadata_path = format!("{WELL_KNOWN}{path}");
    url.set_path(&metadata_path);
    Ok((url, metadata_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_lives_between_the_host_and_the_path() {
        let at = |r: &str| metadata_url(r).map(|(url, path)| (url.to_string(), path));
        assert_eq!(
            at("https://api.example").unwrap(),
            (
                "https://api.example/.well-known/oauth-protected-resource".to_owned(),
                "/.well-known/oauth-protected-resource".to_owned()
            )
        );
        // RFC 9728 §3.1's example: a path is kept after the segment.
        assert_eq!(
            at("https://resource.example.com/resource1").unwrap().0,
            "https://resource.example.com/.well-known/oauth-protected-resource/resource1"
        );
        assert_eq!(
            at("https://api.example/v1/").unwrap().0,
            "https://api.example/.well-known/oauth-protected-resource/v1"
        );
        assert_eq!(
            at("http://127.0.0.1:8081").unwrap().0,
            "http://127.0.0.1:8081/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn identifiers_that_could_mislead_are_refused() {
        use ResourceIdentifierError::*;
        for (resource, error) in [
            ("api.example", NotAUrl("api.example".into())),
            ("http://api.example", NotHttps("http://api.example".into())),
            ("ftp://api.example", NotHttps("ftp://api.example".into())),
            (
                "https://api.example/?a=1",
                QueryOrFragment("https://api.example/?a=1".into()),
            ),
            (
                "https://api.example/#x",
                QueryOrFragment("https://api.example/#x".into()),
            ),
        ] {
            assert_eq!(check_resource(resource).err(), Some(error), "{resource}");
        }
        assert!(check_resource("http://localhost:3000").is_ok());
        assert!(check_resource("http://[::1]:3000").is_ok());
    }

    #[test]
    fn metadata_reads_and_writes_the_rfc_names() {
        let text = r#"{"resource": "https://api.example", "authorization_servers": ["https://login.example"],
            "scopes_supported": ["payments:write"], "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": ["ES256"], "unknown_member": 1}"#;
        let read: ResourceMetadata = serde_json::from_str(text).unwrap();
        assert_eq!(read.authorization_servers, ["https://login.example"]);
        let written = serde_json::to_value(&read).unwrap();
        assert_eq!(written["dpop_signing_alg_values_supported"][0], "ES256");
        // Empty members are left out.
        assert!(written.get("authorization_details_types_supported").is_none());
    }
}
