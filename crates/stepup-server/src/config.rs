//! Server configuration (`stepup.toml`), checked once at load.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;
use stepup_core::authentication::{Factor, Level};
use stepup_core::{Acr, AssuranceLevels, Scope};
use thiserror::Error;

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// TOML syntax or shape; the message names line and column.
    #[error("{origin}: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// What toml said, with the location.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

/// Token lifetimes, in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenLifetimes {
    /// Access tokens at the session's base level.
    pub access_token_seconds: i64,
    /// Access tokens above the base level: short, so that elevation decays.
    pub elevated_access_token_seconds: i64,
    /// Authorization codes.
    pub code_seconds: i64,
    /// Refresh tokens.
    pub refresh_token_seconds: i64,
    /// ID tokens.
    pub id_token_seconds: i64,
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        Self {
            access_token_seconds: 600,
            elevated_access_token_seconds: 300,
            code_seconds: 60,
            refresh_token_seconds: 86_400,
            id_token_seconds: 600,
        }
    }
}

/// An assurance level and the authenticator combinations that reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// Short name used elsewhere in the configuration (`mfa`).
    pub name: String,
    /// The `acr` value put in tokens.
    pub acr: String,
    /// Alternatives, each a set of `amr` values that together reach the
    /// level: `[["pwd", "otp"], ["hwk"]]`.
    pub factors: Vec<Vec<String>>,
    /// How long the level is held after it was reached, in seconds
    /// (elevation decays); absent: as long as the session.
    #[serde(default)]
    pub lifetime_seconds: Option<u64>,
}

/// Login behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Failed password or code attempts before the account locks.
    pub max_failures: i64,
    /// Wrong TOTP codes in a row, across locks, before codes are refused
    /// until an administrator unlocks the account (`stepup admin user
    /// unlock`) or the user signs in with a passkey: a slow guesser who
    /// holds the password cannot wait out lock after lock (NIST SP
    /// 800-63B §5.2.2 allows at most 100).
    pub max_code_failures: i64,
    /// How long a lock lasts, in seconds.
    pub lock_seconds: i64,
    /// How long a browser session lasts, in seconds.
    pub session_seconds: i64,
    /// How long a pending authorization request waits for the user.
    pub request_seconds: i64,
    /// How long a browser where the user signed in with their password is
    /// remembered, in seconds (each sign-in there renews it). Its password
    /// attempts are counted apart from the account's, so a flood of
    /// guesses at the account from elsewhere does not lock it out.
    pub known_device_seconds: i64,
    /// Demo only: show the current TOTP code on the code page.
    pub demo_show_totp_code: bool,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            max_code_failures: 100,
            lock_seconds: 900,
            session_seconds: 43_200,
            request_seconds: 600,
            known_device_seconds: 7_776_000,
            demo_show_totp_code: false,
        }
    }
}

/// A scope that may only be granted at a level (the scope-based step-up).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeBinding {
    /// The level's name.
    pub level: String,
    /// How recent the authentication must be, in seconds.
    pub max_age: Option<u64>,
    /// Whether the user approves it on a page, at every request that asks
    /// for it, whatever the session's level (for scopes that move money:
    /// a client that can start a request while the session is elevated
    /// must not get it silently).
    #[serde(default)]
    pub approve: bool,
    /// Words for the approval page ("Make payments"); the scope's name
    /// otherwise.
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: String,
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_database_url")]
    database_url: String,
    audiences: Vec<String>,
    #[serde(default = "default_signing_alg")]
    signing_alg: String,
    #[serde(default)]
    tokens: TokenLifetimes,
    #[serde(rename = "level")]
    levels: Vec<LevelConfig>,
    #[serde(default)]
    scopes: BTreeMap<String, ScopeBinding>,
    #[serde(default)]
    login: LoginConfig,
    #[serde(default)]
    risk: RiskConfig,
    #[serde(default)]
    dpop: DpopConfig,
    #[serde(default)]
    authorization_details: BTreeMap<String, DetailsType>,
    #[serde(default)]
    rate_limit: RateLimitConfig,
    #[serde(default)]
    connections: stepup_guard::serve::ConnectionLimits,
}

/// How many requests a key may make: `burst` at once, then one more every
/// `60 / per_minute` seconds (GCRA: a token bucket of `burst` tokens
/// refilled at `per_minute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests allowed at once (1 to 100 000).
    pub burst: u32,
    /// Requests allowed per minute once the burst is spent (1 to 1 000 000).
    pub per_minute: u32,
}

impl Rate {
    const fn new(burst: u32, per_minute: u32) -> Self {
        Self { burst, per_minute }
    }
}

/// Rate limits (`[rate_limit]`), on by default: beyond them a request is
/// answered 429 with `Retry-After`, before its body is read.
///
/// Per client address (the peer, or the address trusted proxies name; an
/// IPv6 address counts by its /64): `authorize` (`/authorize`), `par`,
/// `token`, `login` (`/login/*`) and `account` (`/account/*`). Per account:
/// `user` counts sign-in attempts (passwords, codes) at one user name,
/// known or not, from any number of addresses.
///
/// The per-account limit and the lock (`[login] max_failures`,
/// `lock_seconds`) work together: the limit slows guessing against one
/// account (by default 3 attempts at once, then one every 20 s), and the
/// attempts it refuses are not failures, so a flood from many addresses
/// costs the account at most one failure per 20 s instead of locking it
/// at once; the lock stays the backstop after `max_failures` consecutive
/// failures that got through. To favour slowing over locking further,
/// raise `max_failures` (NIST SP 800-63B §5.2.2 allows up to 100) rather
/// than the per-account limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Off only for benchmarks and tests that flood on purpose.
    pub enabled: bool,
    /// Share the counters of every instance through Redis
    /// (`redis://host:6379`); without it each instance counts alone. When
    /// Redis cannot be reached, each instance counts alone meanwhile.
    pub redis_url: Option<String>,
    /// The prefix of the Redis keys.
    pub redis_prefix: String,
    /// `/authorize`, per client address.
    pub authorize: Rate,
    /// `/par`, per client address.
    pub par: Rate,
    /// `/token`, per client address (clients' servers call it hard).
    pub token: Rate,
    /// `/login/*`, per client address.
    pub login: Rate,
    /// `/account/*`, per client address.
    pub account: Rate,
    /// Sign-in attempts (password, code) per user name, from any address.
    pub user: Rate,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            redis_url: None,
            redis_prefix: "stepup:rate".into(),
            authorize: Rate::new(60, 300),
            par: Rate::new(60, 600),
            token: Rate::new(300, 6000),
            login: Rate::new(30, 120),
            account: Rate::new(30, 120),
            user: Rate::new(3, 3),
        }
    }
}

impl RateLimitConfig {
    /// The rates by name, as the configuration spells them.
    pub fn rates(&self) -> [(&'static str, Rate); 6] {
        [
            ("authorize", self.authorize),
            ("par", self.par),
            ("token", self.token),
            ("login", self.login),
            ("account", self.account),
            ("user", self.user),
        ]
    }

    fn check(&self) -> Result<(), String> {
        for (name, rate) in self.rates() {
            if !(1..=100_000).contains(&rate.burst) || !(1..=1_000_000).contains(&rate.per_minute) {
                return Err(format!(
                    "rate_limit.{name}: burst must be 1 to 100000 and per_minute 1 to 1000000"
                ));
            }
        }
        if let Some(redis_url) = &self.redis_url {
            let scheme_ok = url::Url::parse(redis_url)
                .is_ok_and(|u| matches!(u.scheme(), "redis" | "rediss" | "redis+unix"));
            if !scheme_ok || redis::Client::open(redis_url.as_str()).is_err() {
                return Err(format!(
                    "rate_limit.redis_url {redis_url:?}: expected redis://host:port or rediss://host:port"
                ));
            }
        }
        let prefix_ok = !self.redis_prefix.is_empty()
            && self.redis_prefix.len() <= 64
            && self.redis_prefix.bytes().all(|b| b.is_ascii_graphic());
        if !prefix_ok {
            return Err("rate_limit.redis_prefix must be 1 to 64 visible ASCII characters".into());
        }
        Ok(())
    }
}

/// A type of `authorization_details` (RFC 9396) clients may ask for:
/// which fields an entry must carry, the level approving it needs, and
/// how long the token for it lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailsType {
    /// Fields every entry must carry (strings or numbers); no others.
    pub fields: Vec<String>,
    /// The level approving it needs (a level name).
    pub level: Option<String>,
    /// How recent that authentication must be, in seconds.
    pub max_age: Option<u64>,
    /// Lifetime of the access token for it (120 s by default). No refresh
    /// token is issued: the token is for this transaction only.
    #[serde(default = "default_transaction_seconds")]
    pub token_seconds: i64,
}

fn default_transaction_seconds() -> i64 {
    120
}

/// DPoP at the token endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopConfig {
    /// Require server nonces in proofs (RFC 9449 §8), derived from this
    /// secret (at least 32 characters; the same at every instance), new
    /// every `nonce_seconds`.
    pub nonce_secret: Option<String>,
    /// How long a nonce lasts (60 s by default; the previous one is still
    /// accepted).
    #[serde(default = "default_nonce_seconds")]
    pub nonce_seconds: i64,
}

fn default_nonce_seconds() -> i64 {
    60
}

/// Where the server looks client addresses up, to record in tokens the
/// country the user authenticated from (`auth_country`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskConfig {
    /// A MaxMind Country or City database.
    pub geoip_database: Option<std::path::PathBuf>,
    /// A MaxMind ASN database (optional).
    pub geoip_asn_database: Option<std::path::PathBuf>,
    /// Proxies whose forwarded header is believed (CIDR); none by default.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header those proxies write the client's address in:
    /// `"x-forwarded-for"` (the default, nginx's) or `"forwarded"` (RFC
    /// 7239). The other is ignored: the proxies pass it on as the client
    /// wrote it.
    #[serde(default)]
    pub forwarded_header: stepup_guard::client_ip::ForwardedHeader,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_database_url() -> String {
    "sqlite://stepup-data/stepup.db".into()
}

fn default_signing_alg() -> String {
    "ES256".into()
}

/// The factors (`amr` values) stepup can verify.
pub const KNOWN_FACTORS: &[&str] = &["pwd", "otp", "hwk"];

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The issuer identifier: an `https` URL (or `http` on loopback), no query or fragment.
    pub issuer: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// Resource servers tokens may be issued for; the first is the default `aud`.
    pub audiences: Vec<String>,
    /// `ES256` or `EdDSA`: the algorithm tokens are signed with.
    pub signing_alg: stepup_core::jwk::Algorithm,
    /// Token lifetimes.
    pub tokens: TokenLifetimes,
    /// Levels, weakest first, with their factors.
    pub levels: Vec<LevelConfig>,
    /// The same levels as the core orders them.
    pub assurance: AssuranceLevels,
    /// Scopes bound to levels.
    pub scope_bindings: BTreeMap<Scope, (Acr, Option<u64>)>,
    /// Scopes the user approves on a page at every request, with the words
    /// the page shows for each.
    pub approved_scopes: BTreeMap<String, String>,
    /// Levels as the authentication planner sees them, weakest first.
    pub auth_levels: Vec<Level>,
    /// Login behaviour.
    pub login: LoginConfig,
    /// Geolocation of clients.
    pub risk: RiskConfig,
    /// The trusted proxies, parsed.
    pub trusted_proxies: Vec<stepup_guard::client_ip::IpNet>,
    /// DPoP settings.
    pub dpop: DpopConfig,
    /// `authorization_details` types, with the level each needs (as acr).
    pub details_types: BTreeMap<String, (DetailsType, Option<Acr>)>,
    /// Rate limits.
    pub rate_limit: RateLimitConfig,
    /// Bounds on clients (`[connections]`): how long one may take to send
    /// its headers and its body, and how many are served at once.
    pub connections: stepup_guard::serve::ConnectionLimits,
}

impl Config {
    /// Parses and checks a configuration; `origin` names it in errors.
    pub fn from_toml(origin: &str, source: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(source).map_err(|e| ConfigError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            message,
        };
        let issuer = url::Url::parse(&raw.issuer).map_err(|e| invalid(format!("issuer: {e}")))?;
        let loopback = matches!(issuer.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if !(issuer.scheme() == "https" || (issuer.scheme() == "http" && loopback)) {
            return Err(invalid(
                "issuer must be an https URL (http only on loopback)".into(),
            ));
        }
        if issuer.query().is_some() || issuer.fragment().is_some() || raw.issuer.ends_with('/') {
            return Err(invalid(
                "issuer must have no query, no fragment and no trailing '/' (RFC 8414 §2)".into(),
            ));
        }
        // Written as URLs are read (scheme and host in lower case, no
        // default port): clients compare `iss` as a string, and whether
        // cookies are `Secure` follows the scheme as written.
        let canonical = match issuer.path() {
            "/" => issuer.as_str().trim_end_matches('/'),
            _ => issuer.as_str(),
        };
        if canonical != raw.issuer {
            return Err(invalid(format!(
                "issuer must be written {canonical:?} (scheme and host in lower case, no default port)"
            )));
        }
        if raw.audiences.is_empty() {
            return Err(invalid(
                "audiences: expected at least one resource server URI".into(),
            ));
        }
        let signing_alg = match raw.signing_alg.as_str() {
            "ES256" => stepup_core::jwk::Algorithm::ES256,
            "EdDSA" => stepup_core::jwk::Algorithm::EdDSA,
            other => {
                return Err(invalid(format!(
                    "signing_alg {other:?}: expected \"ES256\" or \"EdDSA\""
                )));
            }
        };
        let t = &raw.tokens;
        for (name, value) in [
            ("access_token_seconds", t.access_token_seconds),
            ("elevated_access_token_seconds", t.elevated_access_token_seconds),
            ("code_seconds", t.code_seconds),
            ("refresh_token_seconds", t.refresh_token_seconds),
            ("id_token_seconds", t.id_token_seconds),
        ] {
            if value <= 0 {
                return Err(invalid(format!(
                    "tokens.{name} must be a positive number of seconds"
                )));
            }
        }
        if t.code_seconds > 600 {
            return Err(invalid(
                "tokens.code_seconds must be at most 600 (RFC 6749 §4.1.2)".into(),
            ));
        }
        let mut acrs = Vec::new();
        let mut auth_levels = Vec::new();
        for level in &raw.levels {
            let acr =
                Acr::new(level.acr.as_str()).map_err(|e| invalid(format!("level {:?}: {e}", level.name)))?;
            if level.factors.is_empty() || level.factors.iter().any(Vec::is_empty) {
                return Err(invalid(format!(
                    "level {:?}: factors must list at least one non-empty combination",
                    level.name
                )));
            }
            for factor in level.factors.iter().flatten() {
                if !KNOWN_FACTORS.contains(&factor.as_str()) {
                    return Err(invalid(format!(
                        "level {:?}: unknown factor {factor:?}; expected one of: {}",
                        level.name,
                        KNOWN_FACTORS.join(", ")
                    )));
                }
            }
            let combinations = level
                .factors
                .iter()
                .map(|combo| combo.iter().filter_map(|f| Factor::from_amr(f)).collect())
                .collect();
            auth_levels.push(Level {
                acr: acr.clone(),
                combinations,
                lifetime_seconds: level.lifetime_seconds,
            });
            acrs.push(acr);
        }
        let l = &raw.login;
        if l.max_failures < 1
            || l.lock_seconds < 1
            || l.session_seconds < 1
            || l.request_seconds < 1
            || l.known_device_seconds < 1
        {
            return Err(invalid(
                "login: max_failures, lock_seconds, session_seconds, request_seconds and known_device_seconds must be positive"
                    .into(),
            ));
        }
        if !(l.max_failures..=100).contains(&l.max_code_failures) {
            return Err(invalid(
                "login.max_code_failures must be at least max_failures and at most 100 (NIST SP 800-63B §5.2.2)"
                    .into(),
            ));
        }
        let assurance = AssuranceLevels::new(acrs).map_err(|e| invalid(format!("level: {e}")))?;
        let mut scope_bindings = BTreeMap::new();
        let mut approved_scopes = BTreeMap::new();
        for (scope, binding) in &raw.scopes {
            if binding.approve {
                let words = binding.description.clone().unwrap_or_else(|| scope.clone());
                approved_scopes.insert(scope.clone(), words);
            }
            let scope = Scope::new(scope.as_str()).map_err(|e| invalid(format!("scopes: {e}")))?;
            let level = raw
                .levels
                .iter()
                .find(|l| l.name == binding.level)
                .ok_or_else(|| {
                    let names: Vec<&str> = raw.levels.iter().map(|l| l.name.as_str()).collect();
                    invalid(format!(
                        "scopes.{scope}: unknown level {:?}; expected one of: {}",
                        binding.level,
                        names.join(", ")
                    ))
                })?;
            let acr = Acr::new(level.acr.as_str()).map_err(|e| invalid(e.to_string()))?;
            scope_bindings.insert(scope, (acr, binding.max_age));
        }
        let trusted_proxies = raw
            .risk
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse().map_err(|e: stepup_guard::client_ip::IpNetError| {
                    invalid(format!("risk.trusted_proxies: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(secret) = &raw.dpop.nonce_secret
            && (secret.len() < 32 || raw.dpop.nonce_seconds <= 0)
        {
            return Err(invalid(
                "dpop.nonce_secret must be at least 32 characters and dpop.nonce_seconds positive".into(),
            ));
        }
        raw.rate_limit.check().map_err(invalid)?;
        if let Some(problem) = raw.connections.problem() {
            return Err(invalid(problem));
        }
        let mut details_types = BTreeMap::new();
        for (name, t) in raw.authorization_details {
            if t.fields.is_empty() || t.fields.iter().any(|f| f == "type" || f.is_empty()) {
                return Err(invalid(format!(
                    "authorization_details.{name}: list the fields an entry carries (not \"type\")"
                )));
            }
            if t.token_seconds <= 0 {
                return Err(invalid(format!(
                    "authorization_details.{name}.token_seconds must be positive"
                )));
            }
            let acr = match &t.level {
                None => None,
                Some(level) => Some(
                    raw.levels
                        .iter()
                        .find(|l| &l.name == level)
                        .ok_or_else(|| {
                            invalid(format!("authorization_details.{name}: unknown level {level:?}"))
                        })
                        .and_then(|l| Acr::new(l.acr.as_str()).map_err(|e| invalid(e.to_string())))?,
                ),
            };
            details_types.insert(name, (t, acr));
        }
        Ok(Self {
            rate_limit: raw.rate_limit,
            connections: raw.connections,
            details_types,
            dpop: raw.dpop,
            trusted_proxies,
            risk: raw.risk,
            issuer: raw.issuer,
            listen: raw.listen,
            database_url: raw.database_url,
            audiences: raw.audiences,
            signing_alg,
            tokens: raw.tokens,
            levels: raw.levels,
            assurance,
            scope_bindings,
            approved_scopes,
            auth_levels,
            login: raw.login,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
issuer = "https://as.example"
audiences = ["https://api.example"]

[[level]]
name = "pwd"
acr = "urn:stepup:acr:pwd"
factors = [["pwd"]]

[[level]]
name = "mfa"
acr = "urn:stepup:acr:mfa"
factors = [["pwd", "otp"], ["hwk"]]

[scopes]
"payments:write" = { level = "mfa", max_age = 300 }
"#;

    #[test]
    fn loads_a_good_config() {
        let c = Config::from_toml("s.toml", GOOD).unwrap();
        assert_eq!(c.assurance.levels().len(), 2);
        assert_eq!(c.tokens.elevated_access_token_seconds, 300);
        // Rate limits are on unless switched off.
        assert!(c.rate_limit.enabled);
        assert_eq!(
            c.rate_limit.user,
            Rate {
                burst: 3,
                per_minute: 3
            }
        );
        let off = Config::from_toml(
            "s.toml",
            &format!("{GOOD}\n[rate_limit]\nenabled = false\nredis_url = \"redis://127.0.0.1:6379\"\ntoken = {{ burst = 1000, per_minute = 60000 }}\n"),
        )
        .unwrap();
        assert!(!off.rate_limit.enabled);
        assert_eq!(off.rate_limit.token.burst, 1000);
        let (acr, max_age) = &c.scope_bindings[&Scope::new("payments:write").unwrap()];
        assert_eq!((acr.as_str(), *max_age), ("urn:stepup:acr:mfa", Some(300)));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (GOOD.replace("https://as.example", "http://as.example"), "https"),
            (
                GOOD.replace("https://as.example", "https://as.example/"),
                "trailing",
            ),
            (
                GOOD.replace("[\"pwd\", \"otp\"]", "[\"pwd\", \"sms\"]"),
                "unknown factor \"sms\"",
            ),
            (
                GOOD.replace("level = \"mfa\"", "level = \"gold\""),
                "unknown level \"gold\"",
            ),
            (
                GOOD.replace("audiences = [\"https://api.example\"]", "audiences = []"),
                "audiences",
            ),
            (format!("{GOOD}\n[tokens]\ncode_seconds = 0\n"), "code_seconds"),
            (
                format!("{GOOD}\n[login]\nmax_code_failures = 101\n"),
                "max_code_failures must be at least max_failures and at most 100",
            ),
            (
                format!("{GOOD}\n[login]\nmax_failures = 5\nmax_code_failures = 4\n"),
                "max_code_failures",
            ),
            (
                GOOD.replace("audiences =", "signing_alg = \"HS256\"\naudiences ="),
                "expected \"ES256\" or \"EdDSA\"",
            ),
            (GOOD.replace("audiences", "audience"), "unknown field `audience`"),
            (
                GOOD.replace("https://as.example", "HTTPS://as.example"),
                "issuer must be written \"https://as.example\"",
            ),
            (
                GOOD.replace("https://as.example", "https://AS.example:443"),
                "issuer must be written \"https://as.example\"",
            ),
            (
                format!("{GOOD}\n[rate_limit]\nuser = {{ burst = 0, per_minute = 3 }}\n"),
                "rate_limit.user: burst must be 1 to 100000",
            ),
            (
                format!("{GOOD}\n[rate_limit]\ntoken = {{ burst = 10, per_minute = 0 }}\n"),
                "rate_limit.token",
            ),
            (
                format!("{GOOD}\n[rate_limit]\nlogin = {{ burst = 10 }}\n"),
                "missing field `per_minute`",
            ),
            (
                format!("{GOOD}\n[rate_limit]\nlogin = {{ burst = 10, per_minute = 5, per_hour = 1 }}\n"),
                "unknown field `per_hour`",
            ),
            (
                format!("{GOOD}\n[connections]\nheader_read_seconds = 0\n"),
                "connections.header_read_seconds must be between 1 and 3600",
            ),
            (
                format!("{GOOD}\n[connections]\nslow_seconds = 5\n"),
                "unknown field `slow_seconds`",
            ),
            (
                format!("{GOOD}\n[rate_limit]\nper_address = 5\n"),
                "unknown field `per_address`",
            ),
            (
                format!("{GOOD}\n[rate_limit]\nredis_url = \"http://cache:6379\"\n"),
                "rate_limit.redis_url",
            ),
            (
                format!("{GOOD}\n[rate_limit]\nredis_prefix = \"\"\n"),
                "rate_limit.redis_prefix",
            ),
            (
                format!("{GOOD}\n[rate_limit]\nenabled = \"yes\"\n"),
                "invalid type",
            ),
        ];
        for (source, expected) in cases {
            let e = Config::from_toml("s.toml", &source).unwrap_err().to_string();
            assert!(e.contains(expected), "{e} should mention {expected}");
            assert!(e.starts_with("s.toml: "), "{e}");
        }
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let e = Config::from_toml("s.toml", "issuer = \n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
