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
    /// Not `https` (nor `http` on a loopback IP literal).
    #[error("the resource identifier {0:?} must be an https URL (http only on a loopback IP address)")]
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

/// Whether `url`'s host is a loopback IP literal: where a token may go over
/// plain `http`. Not the name `localhost` (RFC 8252 §8.3): it may resolve
/// to another address than the one the resource listens on (`::1` where
/// it listens on `127.0.0.1`), where another local user can listen.
pub fn is_loopback_ip(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Checks a resource identifier: `https` (or `http` on a loopback IP
/// literal), a host, no query, no fragment.
pub fn check_resource(resource: &str) -> Result<Url, ResourceIdentifierError> {
    let url = Url::parse(resource).map_err(|_| ResourceIdentifierError::NotAUrl(resource.to_owned()))?;
    let secure = url.scheme() == "https" || (url.scheme() == "http" && is_loopback_ip(&url));
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

/// Whether a call to `url` is a call to `resource`: the same scheme, host
/// and port, and a path at or under the resource's path, on a segment
/// boundary (`https://api.example/v1` covers `/v1` and `/v1/x`, not
/// `/v10`). A token issued for `resource` is sent to nothing else.
///
/// Under a resource with a path, the rest of the path must not hold what
/// a server might read as leaving it: an encoded `/`, `\` or `.`
/// (`/v1/..%2Fadmin`), or a `;` (`/v1/..;/admin`, read as `/admin` by
/// servers that strip path parameters). At an origin's root everything is
/// the resource's anyway.
pub fn covers(resource: &Url, url: &Url) -> bool {
    if resource.origin() != url.origin() {
        return false;
    }
    let base = resource.path().trim_end_matches('/');
    let Some(rest) = url.path().strip_prefix(base) else {
        return false;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return false;
    }
    if base.is_empty() {
        return true;
    }
    let lower = rest.to_ascii_lowercase();
    !(lower.contains("%2f") || lower.contains("%5c") || lower.contains("%2e") || lower.contains(';'))
}

/// Why a client must not use a resource's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MetadataMismatch {
    /// The identifier itself is unusable.
    #[error(transparent)]
    Identifier(#[from] ResourceIdentifierError),
    /// The metadata was read from an address that is not its resource's
    /// (RFC 9728 §3.3): another server's metadata, replayed.
    #[error("metadata read at {fetched} names the resource {resource:?}, whose metadata is elsewhere")]
    NotItsAddress {
        /// Where it was read.
        fetched: String,
        /// The resource it names.
        resource: String,
    },
    /// The resource does not cover the URL that was called.
    #[error("the resource {resource:?} does not cover {called}")]
    NotTheCalledResource {
        /// The resource the metadata names.
        resource: String,
        /// The URL called.
        called: String,
    },
    /// The resource does not take this authorization server's tokens.
    #[error("the resource {resource:?} does not name the authorization server {issuer:?}")]
    OtherAuthorizationServer {
        /// The resource.
        resource: String,
        /// The client's authorization server.
        issuer: String,
    },
}

impl ResourceMetadata {
    /// What a client checks before it sends a token to a resource or
    /// follows its challenge: the metadata came from its own address
    /// (RFC 9728 §3.3), names a resource that covers the URL called, and
    /// names the authorization server the client uses. Returns the
    /// resource identifier, parsed.
    pub fn check_for(&self, fetched: &Url, called: &Url, issuer: &str) -> Result<Url, MetadataMismatch> {
        let (expected, _) = metadata_url(&self.resource)?;
        if &expected != fetched {
            return Err(MetadataMismatch::NotItsAddress {
                fetched: fetched.to_string(),
                resource: self.resource.clone(),
            });
        }
        let resource = check_resource(&self.resource)?;
        if !covers(&resource, called) {
            return Err(MetadataMismatch::NotTheCalledResource {
                resource: self.resource.clone(),
                called: called.to_string(),
            });
        }
        if !self.authorization_servers.iter().any(|a| a == issuer) {
            return Err(MetadataMismatch::OtherAuthorizationServer {
                resource: self.resource.clone(),
                issuer: issuer.to_owned(),
            });
        }
        Ok(resource)
    }
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
        assert!(check_resource("http://127.0.0.1:3000").is_ok());
        assert!(check_resource("http://[::1]:3000").is_ok());
        // A name may resolve elsewhere than where the resource listens.
        assert_eq!(
            check_resource("http://localhost:3000").err(),
            Some(NotHttps("http://localhost:3000".into()))
        );
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

    #[test]
    fn a_resource_covers_its_origin_and_paths_under_it() {
        let url = |s: &str| Url::parse(s).unwrap();
        let root = url("https://api.example");
        assert!(covers(&root, &url("https://api.example/accounts/1")));
        assert!(covers(&root, &url("https://api.example:443/")));
        assert!(!covers(&root, &url("http://api.example/accounts/1")), "scheme");
        assert!(!covers(&root, &url("https://api.example:8443/")), "port");
        assert!(!covers(&root, &url("https://api.example.evil/")), "host");
        assert!(!covers(&root, &url("https://evil.example/")), "host");
        let v1 = url("https://api.example/v1/");
        assert!(covers(&v1, &url("https://api.example/v1")));
        assert!(covers(&v1, &url("https://api.example/v1/pay")));
        assert!(
            !covers(&v1, &url("https://api.example/v10/pay")),
            "segment boundary"
        );
        assert!(!covers(&v1, &url("https://api.example/")));
        // Ways out of /v1 for a server that decodes more than the URL
        // standard does.
        for out in [
            "https://api.example/v1/..%2Fadmin",
            "https://api.example/v1/..%2fadmin",
            "https://api.example/v1/..;/admin",
            "https://api.example/v1/%2e%2e%2Fadmin",
            "https://api.example/v1/..%5Cadmin",
        ] {
            assert!(!covers(&v1, &url(out)), "{out}");
        }
        assert!(
            covers(&root, &url("https://api.example/a;b")),
            "the root has no outside"
        );
    }

    #[test]
    fn a_client_checks_where_metadata_came_from_what_it_covers_and_its_servers() {
        let url = |s: &str| Url::parse(s).unwrap();
        let meta = |resource: &str, server: &str| ResourceMetadata {
            resource: resource.into(),
            authorization_servers: vec![server.into()],
            scopes_supported: vec![],
            bearer_methods_supported: vec![],
            dpop_signing_alg_values_supported: vec![],
            authorization_details_types_supported: vec![],
            resource_name: None,
        };
        let bank = meta("https://api.bank.example", "https://login.bank.example");
        let at_bank = url("https://api.bank.example/.well-known/oauth-protected-resource");
        let called = url("https://api.bank.example/payees");
        assert_eq!(
            bank.check_for(&at_bank, &called, "https://login.bank.example")
                .unwrap()
                .as_str(),
            "https://api.bank.example/"
        );
        // A rogue server serves the bank's metadata as its own.
        let at_evil = url("https://evil.example/.well-known/oauth-protected-resource");
        assert!(matches!(
            bank.check_for(
                &at_evil,
                &url("https://evil.example/x"),
                "https://login.bank.example"
            ),
            Err(MetadataMismatch::NotItsAddress { .. })
        ));
        // Its own metadata, claiming the bank's authorization server: the
        // check passes here; the authorization server refuses a token for
        // a resource it does not serve (RFC 8707 invalid_target).
        let evil = meta("https://evil.example", "https://login.bank.example");
        assert!(
            evil.check_for(
                &at_evil,
                &url("https://evil.example/x"),
                "https://login.bank.example"
            )
            .is_ok()
        );
        // Metadata of one path, a call to another.
        let v1 = meta("https://api.bank.example/v1", "https://login.bank.example");
        let at_v1 = url("https://api.bank.example/.well-known/oauth-protected-resource/v1");
        assert!(matches!(
            v1.check_for(
                &at_v1,
                &url("https://api.bank.example/v2/pay"),
                "https://login.bank.example"
            ),
            Err(MetadataMismatch::NotTheCalledResource { .. })
        ));
        assert!(matches!(
            bank.check_for(&at_bank, &called, "https://login.other.example"),
            Err(MetadataMismatch::OtherAuthorizationServer { .. })
        ));
        let plain = meta("http://api.bank.example", "https://login.bank.example");
        assert!(matches!(
            plain.check_for(
                &url("http://api.bank.example/.well-known/oauth-protected-resource"),
                &url("http://api.bank.example/x"),
                "https://login.bank.example"
            ),
            Err(MetadataMismatch::Identifier(_))
        ));
    }
}
