//! The gateway's configuration (TOML). Unknown keys are errors.
//!
//! ```toml
//! listen = "127.0.0.1:8443"
//! policy = "policies/bank.toml"
//! issuer = "https://login.example"      # JWT access tokens, keys by discovery
//! audience = "https://api.example"      # this API's identifier (aud)
//! # jwks_uri = "https://login.example/jwks"  # the issuer's keys at this address (no discovery)
//! # realm = "api.example"               # in WWW-Authenticate (default: the audience)
//! # instances = 1                       # gateways serving this API behind a balancer
//! forward_token = false                 # pass the Authorization header on
//! max_body_bytes = 10485760             # longest request body streamed on (413 above)
//! max_header_bytes = 16384              # largest header section (431 above)
//! # trusted_proxies = ["10.0.0.0/8"]    # whose forwarded header counts
//! # forwarded_header = "x-forwarded-for"  # the one they write (or "forwarded"); the other is ignored
//! # geoip = "GeoLite2-City.mmdb"        # client IP -> country, for risk rules
//! # dpop_origin = "https://api.example" # accept DPoP (RFC 9449); the public origin
//! # admin_allow = ["127.0.0.0/8", "::1/128"]  # who may call /-/healthz, /-/readyz, /-/metrics
//! # admin_listen = "127.0.0.1:9901"     # those on a listener of their own; the main one forwards every path
//!
//! # [identity]                          # also sign what is forwarded (X-Stepup-Identity, a JWS)
//! # key_file = "gateway-identity.pem"   # P-256 PKCS#8 PEM, made (0600) when missing
//! # seconds = 60                        # how long a signed identity is valid
//!
//! # [[transaction]]                     # calls bound to an approved transaction (RFC 9396)
//! # route = "large transfer"            # a policy route, by name
//! # type = "payment_initiation"         # the authorization_details type
//! # fields = { amount = "/amount", creditor = "/to" }   # field -> body JSON pointer
//! # amount_fields = ["amount"]          # compared by value ("5000.00" = 5000); others exactly
//! # max_token_seconds = 300
//!
//! # [connections]                       # bounds on clients (the defaults)
//! # header_read_seconds = 10            # to send a header section; also how long an idle connection stays
//! # body_read_seconds = 30              # to send a whole body, after its headers (408 after)
//! # max_connections = 4096              # served at once; more wait in the listen queue
//!
//! # [introspection]                     # opaque tokens (RFC 7662) instead of JWTs
//! # endpoint = "https://login.example/introspect"
//! # client_id = "api-gateway"
//! # client_secret_env = "STEPUP_GATEWAY_INTROSPECTION_SECRET"   # the secret's environment variable
//!
//! # [replay]                            # used once across instances: DPoP proofs, transaction tokens
//! # redis_url = "redis://127.0.0.1:6379"
//! # prefix = "stepup-gateway"
//!
//! # [amount]                            # risk rules that read the body's amount
//! # amount_pointer = "/amount"
//! # currency_pointer = "/currency"
//!
//! [[upstream]]
//! prefix = "/"                          # longest prefix wins
//! # host = "api.example"                # only for this Host (preferred over host-less upstreams)
//! url = "http://127.0.0.1:9000"         # or urls = [...]: instances taken in turn
//! timeout_seconds = 30
//!
//! # [[upstream]]                        # an authorization server's instances
//! # host = "login.example"
//! # prefix = "/"
//! # urls = ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
//! # public = true                       # no token asked: it authenticates on its own
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use thiserror::Error;

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Not readable.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not valid TOML, or a wrong key or value.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// What is wrong, with its place when known.
        message: String,
    },
}

/// Where requests go.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Requests whose path starts with this go here (`/` for all).
    pub prefix: String,
    /// Only requests for this host (the `Host` header or HTTP/2
    /// `:authority`, port ignored, case-insensitive) go here.
    pub host: Option<String>,
    /// The upstream's base URL (`http://host:port`; no path), when it has
    /// one instance.
    #[serde(default)]
    pub url: Option<String>,
    /// The base URLs of its instances, taken in turn. One that cannot be
    /// connected to is left out for a while (1 s, doubling to 30 s), and
    /// the request goes to the next.
    #[serde(default)]
    pub urls: Vec<String>,
    /// How long the upstream may take to answer (headers), seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Requests pass to this upstream without the guard (no token asked,
    /// the `Authorization` header passed on): for upstreams that
    /// authenticate on their own, such as an authorization server. No
    /// policy route may lead here.
    #[serde(default)]
    pub public: bool,
}

impl Upstream {
    /// The base URLs of the instances (`url` or `urls`).
    pub fn instances(&self) -> impl Iterator<Item = &str> {
        self.url.iter().chain(&self.urls).map(String::as_str)
    }
}

fn default_timeout() -> u64 {
    30
}

/// Where the amount of a request body is, for risk rules.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AmountConfig {
    /// JSON pointer to the amount.
    pub amount_pointer: String,
    /// JSON pointer to the currency.
    pub currency_pointer: Option<String>,
    /// Longest body read (64 KiB by default); longer ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_max_body() -> usize {
    64 * 1024
}

/// A route whose calls must match the token's `authorization_details`
/// (RFC 9396), used once.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    /// The policy route, by name.
    pub route: String,
    /// The `authorization_details` type the token must carry.
    #[serde(rename = "type")]
    pub details_type: String,
    /// Each field of the entry and the JSON pointer of the body holding it.
    pub fields: std::collections::BTreeMap<String, String>,
    /// The fields that are amounts, compared as exact decimals
    /// (`"5000.00"` equals `5000`); every other field must be the same
    /// JSON value as approved. By default the field named `amount`, if
    /// bound.
    pub amount_fields: Option<Vec<String>>,
    /// The longest a token for it may live, seconds (300 by default).
    #[serde(default = "default_transaction_seconds")]
    pub max_token_seconds: i64,
}

impl TransactionConfig {
    /// The fields compared as amounts: as configured, or else `amount`
    /// when the rule binds a field of that name (what a payment's
    /// `authorization_details` call their amount).
    pub fn amount_fields(&self) -> Vec<String> {
        match &self.amount_fields {
            Some(fields) => fields.clone(),
            None => ["amount"]
                .into_iter()
                .filter(|f| self.fields.contains_key(*f))
                .map(str::to_owned)
                .collect(),
        }
    }
}

fn default_transaction_seconds() -> i64 {
    300
}

/// Opaque access tokens, checked at the authorization server's RFC 7662
/// introspection endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The endpoint (`https`, or `http` on loopback).
    pub endpoint: String,
    /// The gateway's client id at the authorization server.
    pub client_id: String,
    /// The environment variable holding its secret (`client_secret_basic`):
    /// secrets stay out of configuration files.
    pub client_secret_env: String,
}

/// Where what may be used once is remembered, shared by every instance.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// `redis://host:port` or `rediss://host:port`.
    pub redis_url: String,
    /// The prefix of its keys (`stepup-gateway` by default): one per API.
    #[serde(default = "default_replay_prefix")]
    pub prefix: String,
}

fn default_replay_prefix() -> String {
    "stepup-gateway".to_owned()
}

fn one() -> u32 {
    1
}

/// Whether `url` is `https`, or `http` on a loopback host (the one rule,
/// [`stepup_core::resource_metadata::is_loopback`]).
fn secure_or_loopback(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => stepup_core::resource_metadata::is_loopback(&url),
        _ => false,
    }
}

/// The gateway's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The step-up policy (TOML), reloaded on change.
    pub policy: PathBuf,
    /// The authorization server (its metadata gives the JWKS).
    pub issuer: String,
    /// This API's identifier, which tokens' `aud` must contain.
    pub audience: String,
    /// The issuer's key set at this address (`https`, or `http` on
    /// loopback), instead of finding it by discovery.
    pub jwks_uri: Option<String>,
    /// The `realm` of the gateway's challenges; the audience unless set.
    pub realm: Option<String>,
    /// How many gateway instances serve this API behind a balancer. With
    /// more than one, a transaction token or a DPoP proof used at one must
    /// be refused at the others: `[replay]` is then required.
    #[serde(default = "one")]
    pub instances: u32,
    /// Opaque tokens by introspection, instead of JWT access tokens.
    pub introspection: Option<IntrospectionConfig>,
    /// What is used once, shared by the instances.
    pub replay: Option<ReplayConfig>,
    /// Pass the client's `Authorization` header to the upstream.
    #[serde(default)]
    pub forward_token: bool,
    /// Proxies whose forwarded header is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header those proxies write the client's address in:
    /// `"x-forwarded-for"` (the default, nginx's) or `"forwarded"` (RFC
    /// 7239). The other is ignored: the proxies pass it on as the client
    /// wrote it.
    #[serde(default)]
    pub forwarded_header: stepup_guard::client_ip::ForwardedHeader,
    /// The longest request body passed to an upstream (10 MiB by default);
    /// a longer one gets 413. Bodies are streamed, not buffered, except on
    /// routes whose risk rules read the amount (see `[amount]`).
    #[serde(default = "default_max_request_body")]
    pub max_body_bytes: u64,
    /// The largest request header section accepted (16 KiB by default);
    /// a larger one gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// A MaxMind-format database (client IP to country) for risk rules.
    pub geoip: Option<PathBuf>,
    /// The API's public origin (`https://api.example`) when DPoP-bound
    /// tokens are accepted: proofs' `htu` are checked against it.
    pub dpop_origin: Option<String>,
    /// Where the gateway's own endpoints live (`/-/healthz`, `/-/readyz`,
    /// `/-/metrics`).
    #[serde(default = "default_admin_prefix")]
    pub admin_prefix: String,
    /// Who may call them (the connection's address; loopback by default):
    /// metrics name the policy's routes and count its decisions. Others
    /// get 404.
    #[serde(default = "default_admin_allow")]
    pub admin_allow: Vec<String>,
    /// The identity the gateway forwards, also signed (see
    /// [`crate::identity`]).
    pub identity: Option<IdentityConfig>,
    /// The admin endpoints on a listener of their own, and not on the main
    /// one (which then forwards every path): a TLS terminator or proxy on
    /// the same host reaches the main listener from loopback, and would
    /// make every client an admin address.
    pub admin_listen: Option<SocketAddr>,
    /// The upstreams.
    #[serde(rename = "upstream")]
    pub upstreams: Vec<Upstream>,
    /// Body amounts for risk rules.
    pub amount: Option<AmountConfig>,
    /// Transaction-bound routes.
    #[serde(default, rename = "transaction")]
    pub transactions: Vec<TransactionConfig>,
    /// Bounds on clients: how long one may take to send its headers and
    /// its body, and how many are served at once.
    #[serde(default)]
    pub connections: stepup_guard::serve::ConnectionLimits,
}

/// `[identity]`: sign the identity forwarded to the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The signing key: a P-256 PKCS#8 PEM file, made when missing
    /// (relative to the configuration file).
    pub key_file: PathBuf,
    /// How long a signed identity is valid (60 s by default, 1 to 300).
    #[serde(default = "default_identity_seconds")]
    pub seconds: u64,
}

fn default_identity_seconds() -> u64 {
    60
}

/// `example.com:8443` → `example.com`; `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    }
}

fn default_max_header_bytes() -> usize {
    stepup_guard::limits::DEFAULT_MAX_HEADER_BYTES
}

fn default_max_request_body() -> u64 {
    10 * 1024 * 1024
}

fn default_admin_allow() -> Vec<String> {
    vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()]
}

fn default_admin_prefix() -> String {
    "/-/".to_owned()
}

impl GatewayConfig {
    /// Parses and checks a configuration; `origin` names it in errors.
    pub fn from_toml(origin: &str, source: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let config: GatewayConfig =
            toml::from_str(source).map_err(|e| invalid(e.to_string().trim_end().to_owned()))?;
        if config.upstreams.is_empty() {
            return Err(invalid("expected at least one [[upstream]]".into()));
        }
        // The API's identifier: tokens' `aud`, and its metadata's `resource`.
        stepup_core::resource_metadata::check_resource(&config.audience)
            .map_err(|e| invalid(format!("audience: {e}")))?;
        if let Some(problem) = config.connections.problem() {
            return Err(invalid(problem));
        }
        if let Some(uri) = &config.jwks_uri
            && !secure_or_loopback(uri)
        {
            return Err(invalid(format!(
                "jwks_uri {uri:?} must be an https URL (http only on loopback)"
            )));
        }
        if let Some(introspection) = &config.introspection {
            if config.jwks_uri.is_some() {
                return Err(invalid(
                    "give jwks_uri (JWT access tokens) or [introspection] (opaque tokens), not both".into(),
                ));
            }
            if !secure_or_loopback(&introspection.endpoint) {
                return Err(invalid(format!(
                    "introspection.endpoint {:?} must be an https URL (http only on loopback)",
                    introspection.endpoint
                )));
            }
            if introspection.client_id.is_empty() || introspection.client_secret_env.is_empty() {
                return Err(invalid(
                    "introspection.client_id and introspection.client_secret_env must not be empty".into(),
                ));
            }
        }
        if let Some(replay) = &config.replay {
            if !(replay.redis_url.starts_with("redis://") || replay.redis_url.starts_with("rediss://")) {
                return Err(invalid(format!(
                    "replay.redis_url {:?}: expected redis://host:port or rediss://host:port",
                    replay.redis_url
                )));
            }
            if replay.prefix.is_empty()
                || replay.prefix.len() > 64
                || !replay.prefix.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    "replay.prefix must be 1 to 64 visible ASCII characters".into(),
                ));
            }
        }
        if config.instances == 0 {
            return Err(invalid("instances must be at least 1".into()));
        }
        if config.instances > 1 && config.replay.is_none() {
            let once = match (config.transactions.is_empty(), config.dpop_origin.is_some()) {
                (false, _) => Some("a transaction token"),
                (true, true) => Some("a DPoP proof"),
                (true, false) => None,
            };
            if let Some(what) = once {
                return Err(invalid(format!(
                    "instances = {}: {what} used at one gateway would pass at another; set [replay] redis_url so that every instance refuses what another has seen",
                    config.instances
                )));
            }
        }
        for u in &config.upstreams {
            if let Some(host) = &u.host
                && (host.is_empty() || host.contains(['/', ':', ' ']))
            {
                return Err(invalid(format!(
                    "upstream host {host:?} must be a host name without port"
                )));
            }
            if !u.prefix.starts_with('/') {
                return Err(invalid(format!(
                    "upstream prefix {:?} must start with '/'",
                    u.prefix
                )));
            }
            if u.url.is_some() != u.urls.is_empty() {
                return Err(invalid(format!(
                    "upstream {:?}: give either url or urls (a non-empty list)",
                    u.prefix
                )));
            }
            for url in u.instances() {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| invalid(format!("upstream url {url:?}: {e}")))?;
                if uri.scheme_str() != Some("http")
                    || uri.authority().is_none()
                    || !matches!(uri.path(), "" | "/")
                {
                    return Err(invalid(format!(
                        "upstream url {url:?} must be http://host:port without a path (TLS to upstreams is not supported yet)"
                    )));
                }
            }
            if u.timeout_seconds == 0 {
                return Err(invalid("upstream timeout_seconds must be at least 1".into()));
            }
        }
        // A public upstream must be another service: the same instance
        // behind a guarded upstream would be reachable without the guard.
        for public in config.upstreams.iter().filter(|u| u.public) {
            for guarded in config.upstreams.iter().filter(|u| !u.public) {
                if let Some(shared) = public.instances().find(|url| {
                    guarded
                        .instances()
                        .any(|g| g.trim_end_matches('/') == url.trim_end_matches('/'))
                }) {
                    return Err(invalid(format!(
                        "{shared:?} is behind both a public upstream ({:?}) and a guarded one ({:?}): it would be reachable without the guard",
                        public.prefix, guarded.prefix
                    )));
                }
            }
        }
        for proxy in &config.trusted_proxies {
            proxy
                .parse::<stepup_guard::client_ip::IpNet>()
                .map_err(|e| invalid(format!("trusted_proxies: {e}")))?;
        }
        for net in &config.admin_allow {
            net.parse::<stepup_guard::client_ip::IpNet>()
                .map_err(|e| invalid(format!("admin_allow: {e}")))?;
        }
        if let Some(origin) = &config.dpop_origin {
            let uri: http::Uri = origin
                .parse()
                .map_err(|e| invalid(format!("dpop_origin {origin:?}: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || !matches!(uri.path(), "" | "/") {
                return Err(invalid(format!(
                    "dpop_origin {origin:?} must be an origin such as https://api.example"
                )));
            }
        }
        for t in &config.transactions {
            if t.fields.is_empty() || t.fields.values().any(|p| !p.is_empty() && !p.starts_with('/')) {
                return Err(invalid(format!(
                    "transaction {:?}: fields must map each field to a JSON pointer such as \"/amount\"",
                    t.route
                )));
            }
            if let Some(unbound) = t
                .amount_fields
                .iter()
                .flatten()
                .find(|f| !t.fields.contains_key(f.as_str()))
            {
                return Err(invalid(format!(
                    "transaction {:?}: amount_fields names {unbound:?}, which is not one of its fields",
                    t.route
                )));
            }
            if t.max_token_seconds < 1 {
                return Err(invalid(format!(
                    "transaction {:?}: max_token_seconds must be at least 1",
                    t.route
                )));
            }
        }
        if let Some(identity) = &config.identity
            && !(1..=300).contains(&identity.seconds)
        {
            return Err(invalid("identity.seconds must be 1 to 300".into()));
        }
        if !(config.admin_prefix.starts_with('/') && config.admin_prefix.ends_with('/')) {
            return Err(invalid("admin_prefix must start and end with '/'".into()));
        }
        Ok(config)
    }

    /// Reads a configuration file. Relative paths in it (`policy`,
    /// `geoip`) are relative to the file's directory.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut config = Self::from_toml(&path.display().to_string(), &source)?;
        if let Some(dir) = path.parent() {
            config.policy = dir.join(&config.policy);
            config.geoip = config.geoip.map(|g| dir.join(g));
            if let Some(identity) = &mut config.identity {
                identity.key_file = dir.join(&identity.key_file);
            }
        }
        Ok(config)
    }

    /// The upstream for a request (its index): among those whose host is
    /// the request's or unset, the longest matching prefix, an upstream
    /// naming the host winning a tie.
    pub fn upstream_for(&self, host: Option<&str>, path: &str) -> Option<usize> {
        select_upstream(&self.upstreams, host, path)
    }
}

/// See [`GatewayConfig::upstream_for`].
pub(crate) fn select_upstream(upstreams: &[Upstream], host: Option<&str>, path: &str) -> Option<usize> {
    let host = host.map(host_without_port);
    upstreams
        .iter()
        .enumerate()
        .filter(|(_, u)| path.starts_with(&u.prefix))
        .filter(|(_, u)| match (&u.host, host) {
            (None, _) => true,
            (Some(wanted), Some(host)) => wanted.eq_ignore_ascii_case(host),
            (Some(_), None) => false,
        })
        .max_by_key(|(_, u)| (u.prefix.len(), u.host.is_some()))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_introspection_endpoints_are_https_or_loopback() {
        for ok in [
            "https://as.example/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://localhost:8080/jwks",
            "http://[::1]:8080/jwks",
        ] {
            assert!(secure_or_loopback(ok), "{ok}");
        }
        for refused in [
            "http://as.example/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://localhost.evil.example/jwks",
            "ftp://127.0.0.1/jwks",
            "not a url",
        ] {
            assert!(!secure_or_loopback(refused), "{refused}");
        }
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:8443"
policy = "policies/bank.toml"
issuer = "https://login.example"
audience = "https://api.example"

[[upstream]]
prefix = "/"
url = "http://127.0.0.1:9000"

[[upstream]]
prefix = "/reports/"
url = "http://127.0.0.1:9100"
timeout_seconds = 5

[[upstream]]
prefix = "/reports/"
host = "api.example"
url = "http://127.0.0.1:9200"
"#;

    #[test]
    fn upstreams_by_longest_prefix() {
        let c = GatewayConfig::from_toml("g.toml", GOOD).unwrap();
        let url = |host: Option<&str>, path: &str| {
            c.upstream_for(host, path)
                .and_then(|i| c.upstreams[i].instances().next())
        };
        assert_eq!(url(None, "/reports/1"), Some("http://127.0.0.1:9100"));
        assert_eq!(
            url(Some("API.example:8443"), "/reports/1"),
            Some("http://127.0.0.1:9200")
        );
        assert_eq!(
            url(Some("api.example"), "/accounts/1"),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            url(Some("other.example"), "/reports/1"),
            Some("http://127.0.0.1:9100")
        );
        assert_eq!(url(None, "/accounts/1").unwrap(), "http://127.0.0.1:9000");
        assert_eq!(c.admin_prefix, "/-/");
    }

    #[test]
    fn the_forwarded_header_is_named_by_the_operator() {
        use stepup_guard::client_ip::ForwardedHeader;
        let with = |line: &str| {
            GatewayConfig::from_toml(
                "g.toml",
                &GOOD.replacen("[[upstream]]", &format!("{line}\n[[upstream]]"), 1),
            )
        };
        let c = GatewayConfig::from_toml("g.toml", GOOD).unwrap();
        assert_eq!(
            c.forwarded_header,
            ForwardedHeader::XForwardedFor,
            "nginx's by default"
        );
        let c = with("forwarded_header = \"forwarded\"").unwrap();
        assert_eq!(c.forwarded_header, ForwardedHeader::Forwarded);
        let e = with("forwarded_header = \"x-real-ip\"").unwrap_err().to_string();
        assert!(
            e.contains("unknown variant `x-real-ip`, expected `x-forwarded-for` or `forwarded`"),
            "{e}"
        );
        assert!(e.contains("line 7, column 20"), "where: {e}");
    }

    #[test]
    fn amount_fields_default_to_the_amount() {
        let with = |transaction: &str| {
            GatewayConfig::from_toml(
                "g.toml",
                &format!(
                    "{GOOD}\n[[transaction]]\nroute = \"t\"\ntype = \"payment_initiation\"\n{transaction}\n"
                ),
            )
        };
        let c = with("fields = { amount = \"/amount\", creditor = \"/to\" }").unwrap();
        assert_eq!(c.transactions[0].amount_fields(), ["amount"]);
        let c = with("fields = { creditor = \"/to\" }").unwrap();
        assert!(c.transactions[0].amount_fields().is_empty());
        let c = with("fields = { sum = \"/sum\", to = \"/to\" }\namount_fields = [\"sum\"]").unwrap();
        assert_eq!(c.transactions[0].amount_fields(), ["sum"]);
        let e = with("fields = { sum = \"/sum\" }\namount_fields = [\"amount\"]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("amount_fields names \"amount\", which is not one of its fields"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |from: &str, to: &str| {
            GatewayConfig::from_toml("g.toml", &GOOD.replace(from, to))
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad("url = \"http://127.0.0.1:9000\"", "url = \"https://x\"")
                .contains("must be http://host:port")
        );
        assert!(bad("prefix = \"/\"", "prefix = \"x\"").contains("must start with '/'"));
        assert!(bad("listen", "lissen").contains("unknown field `lissen`"));
        for seconds in ["0", "301"] {
            assert!(
                bad(
                    "[[upstream]]\nprefix = \"/\"",
                    &format!(
                        "[identity]\nkey_file = \"k.pem\"\nseconds = {seconds}\n[[upstream]]\nprefix = \"/\""
                    )
                )
                .contains("identity.seconds must be 1 to 300"),
                "{seconds}"
            );
        }
        assert!(
            bad(
                "[[upstream]]\nprefix = \"/\"",
                "admin_allow = [\"localhost\"]\n[[upstream]]\nprefix = \"/\""
            )
            .contains("admin_allow")
        );
        assert!(bad("timeout_seconds = 5", "timeout_seconds = 0").contains("at least 1"));
        // Several instances: what is used once must be shared.
        let top = |lines: &str| GOOD.replacen("listen", &format!("{lines}\nlisten"), 1);
        let transaction =
            "\n[[transaction]]\nroute = \"t\"\ntype = \"p\"\nfields = { amount = \"/amount\" }\n";
        let error = GatewayConfig::from_toml("g.toml", &format!("{}{transaction}", top("instances = 2")))
            .unwrap_err()
            .to_string();
        assert!(error.contains("set [replay] redis_url"), "{error}");
        let error = GatewayConfig::from_toml(
            "g.toml",
            &top("instances = 3\ndpop_origin = \"https://api.example\""),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("a DPoP proof used at one gateway"), "{error}");
        let shared = format!(
            "{}\n[replay]\nredis_url = \"redis://127.0.0.1:6379\"\n{transaction}",
            top("instances = 2")
        );
        assert_eq!(GatewayConfig::from_toml("g.toml", &shared).unwrap().instances, 2);
        // One instance keeps what it saw in memory: fine.
        assert!(GatewayConfig::from_toml("g.toml", &format!("{GOOD}{transaction}")).is_ok());
        for (lines, named) in [
            ("instances = 0", "instances must be at least 1"),
            ("jwks_uri = \"http://login.example/jwks\"", "jwks_uri"),
        ] {
            let error = GatewayConfig::from_toml("g.toml", &top(lines))
                .unwrap_err()
                .to_string();
            assert!(error.contains(named), "{lines}: {error}");
        }
        let introspection = "\n[introspection]\nendpoint = \"https://login.example/introspect\"\nclient_id = \"g\"\nclient_secret_env = \"S\"\n";
        assert!(GatewayConfig::from_toml("g.toml", &format!("{GOOD}{introspection}")).is_ok());
        let both = format!(
            "{}{introspection}",
            top("jwks_uri = \"https://login.example/jwks\"")
        );
        let error = GatewayConfig::from_toml("g.toml", &both).unwrap_err().to_string();
        assert!(error.contains("not both"), "{error}");
        let error = GatewayConfig::from_toml(
            "g.toml",
            &format!("{GOOD}{}", introspection.replace("https://login", "http://login")),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("introspection.endpoint"), "{error}");
        let error = GatewayConfig::from_toml(
            "g.toml",
            &format!("{GOOD}\n[replay]\nredis_url = \"http://cache:6379\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("replay.redis_url"), "{error}");
        let connections = |table: &str| format!("{GOOD}\n[connections]\n{table}\n");
        let limits = GatewayConfig::from_toml("g.toml", &connections("max_connections = 64")).unwrap();
        assert_eq!(limits.connections.max_connections, 64);
        assert_eq!(limits.connections.header_read_seconds, 10);
        for (table, named) in [
            ("header_read_seconds = 0", "connections.header_read_seconds"),
            ("body_read_seconds = 86400", "connections.body_read_seconds"),
            ("max_connections = 0", "connections.max_connections"),
            ("idle_seconds = 5", "unknown field `idle_seconds`"),
        ] {
            let error = GatewayConfig::from_toml("g.toml", &connections(table))
                .unwrap_err()
                .to_string();
            assert!(error.contains(named), "{table}: {error}");
        }
        assert!(
            bad(
                "[[upstream]]\nprefix = \"/\"",
                "trusted_proxies = [\"10.0.0.0/33\"]\n[[upstream]]\nprefix = \"/\""
            )
            .contains("trusted_proxies")
        );
        assert!(
            bad(
                "[[upstream]]\nprefix = \"/\"",
                "dpop_origin = \"https://api.example/v1\"\n[[upstream]]\nprefix = \"/\""
            )
            .contains("must be an origin")
        );
        assert!(
            bad(
                "url = \"http://127.0.0.1:9000\"",
                "url = \"http://127.0.0.1:9000\"\nurls = [\"http://127.0.0.1:9001\"]"
            )
            .contains("either url or urls")
        );
        assert!(bad("url = \"http://127.0.0.1:9000\"", "urls = []").contains("either url or urls"));
        assert!(
            bad(
                "url = \"http://127.0.0.1:9000\"",
                "urls = [\"http://127.0.0.1:9000\", \"ftp://x\"]"
            )
            .contains("\"ftp://x\" must be http://host:port")
        );
        let pool = GatewayConfig::from_toml(
            "g.toml",
            &GOOD.replace(
                "url = \"http://127.0.0.1:9000\"",
                "urls = [\"http://127.0.0.1:9000\", \"http://127.0.0.1:9001\"]\npublic = true",
            ),
        )
        .unwrap();
        assert_eq!(pool.upstreams[0].instances().count(), 2);
        let shared = GatewayConfig::from_toml(
            "g.toml",
            &GOOD.replace(
                "url = \"http://127.0.0.1:9000\"",
                "url = \"http://127.0.0.1:9100/\"\npublic = true",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(shared.contains("reachable without the guard"), "{shared}");
        assert!(pool.upstreams[0].public && !pool.upstreams[1].public);
        let no_upstream = GatewayConfig::from_toml("g.toml", GOOD.split("[[upstream]]").next().unwrap());
        assert!(
            no_upstream
                .unwrap_err()
                .to_string()
                .contains("missing field `upstream`")
        );
    }
}
