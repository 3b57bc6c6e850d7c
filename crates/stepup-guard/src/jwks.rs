//! Where the verification keys come from: a fixed JWKS, or the issuer's
//! `jwks_uri` (found by RFC 8414 / OpenID Connect Discovery), cached and
//! refetched when a token names a key we do not have, at most once per
//! `min_refresh_interval` so that a flood of tokens with made-up `kid`s
//! cannot turn the guard into a load generator against the issuer. The set
//! is also refetched once it is older than `max_age` (an hour by default),
//! so that a key the issuer withdrew stops being trusted.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use stepup_core::jwk::Jwks;

use crate::fetch::{FetchError, HttpFetcher};

#[derive(Debug)]
struct Remote {
    url: String,
    http: HttpFetcher,
    min_refresh_interval: Duration,
    max_age: Duration,
    last_fetch: tokio::sync::Mutex<Instant>,
}

/// The keys a [`crate::JwtVerifier`] checks signatures with.
#[derive(Debug)]
pub struct KeySource {
    current: RwLock<Arc<Jwks>>,
    remote: Option<Remote>,
}

/// The members of authorization server metadata the guard uses (RFC 8414 §2).
#[derive(Debug, Clone, Deserialize)]
pub struct ServerMetadata {
    /// The issuer identifier; must equal the configured one (RFC 8414 §3.3).
    pub issuer: String,
    /// Where the signing keys are published.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The RFC 7662 introspection endpoint.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
}

impl KeySource {
    /// A fixed key set, never refetched.
    pub fn fixed(jwks: Jwks) -> Self {
        Self {
            current: RwLock::new(Arc::new(jwks)),
            remote: None,
        }
    }

    /// Fetches a JWKS from `url` now, and again when an unknown `kid` shows up.
    pub async fn remote(
        url: &str,
        http: HttpFetcher,
        min_refresh_interval: Duration,
    ) -> Result<Self, FetchError> {
        let jwks = fetch_jwks(&http, url).await?;
        Ok(Self {
            current: RwLock::new(Arc::new(jwks)),
            remote: Some(Remote {
                url: url.to_owned(),
                http,
                min_refresh_interval,
                max_age: Duration::from_secs(3600),
                last_fetch: tokio::sync::Mutex::new(Instant::now()),
            }),
        })
    }

    /// Refetch the set once it is older than `max_age` (default one hour).
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        if let Some(remote) = &mut self.remote {
            remote.max_age = max_age;
        }
        self
    }

    /// Refetches the set if it is older than `max_age`. A failed refetch
    /// keeps the current keys (the issuer may be briefly down) and is retried
    /// after `min_refresh_interval`.
    pub(crate) async fn refresh_if_stale(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        let mut last = remote.last_fetch.lock().await;
        if last.elapsed() < remote.max_age {
            return;
        }
        match fetch_jwks(&remote.http, &remote.url).await {
            Ok(jwks) => {
                *last = Instant::now();
                self.replace(Arc::new(jwks));
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the current keys");
                // Try again after the short interval, not after a whole max_age.
                *last = Instant::now()
                    .checked_sub(remote.max_age.saturating_sub(remote.min_refresh_interval))
                    .unwrap_or_else(Instant::now);
            }
        }
    }

    fn replace(&self, jwks: Arc<Jwks>) {
        match self.current.write() {
            Ok(mut guard) => *guard = jwks,
            Err(poisoned) => *poisoned.into_inner() = jwks,
        }
    }

    /// The keys in use.
    pub fn current(&self) -> Arc<Jwks> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Refetches the key set unless that was done recently; returns the
    /// keys to retry with.
    pub(crate) async fn refresh_for_unknown_key(&self) -> Result<Arc<Jwks>, FetchError> {
        let Some(remote) = &self.remote else {
            return Ok(self.current());
        };
        let mut last = remote.last_fetch.lock().await;
        if last.elapsed() < remote.min_refresh_interval {
            // Another request may have refreshed while we waited for the lock.
            return Ok(self.current());
        }
        *last = Instant::now();
        let jwks = Arc::new(fetch_jwks(&remote.http, &remote.url).await?);
        self.replace(Arc::clone(&jwks));
        Ok(jwks)
    }
}

async fn fetch_jwks(http: &HttpFetcher, url: &str) -> Result<Jwks, FetchError> {
    let body = http.get_json(url).await?;
    Jwks::from_json(&body).map_err(|e| FetchError::BadResponse(format!("JWKS at {url}: {e}")))
}

/// Fetches the issuer's metadata: RFC 8414 first, then OpenID Connect
/// Discovery, and checks the `issuer` member matches exactly.
pub async fn discover(issuer: &str, http: &HttpFetcher) -> Result<ServerMetadata, FetchError> {
    let trimmed = issuer.trim_end_matches('/');
    let rfc8414 = match trimmed
        .find("://")
        .and_then(|i| trimmed[i + 3..].find('/').map(|j| i + 3 + j))
    {
        // RFC 8414 §3.1: the well-known segment goes between host and path.
        Some(path_start) => format!(
            "{}/.well-known/oauth-authorization-server{}",
            &trimmed[..path_start],
            &trimmed[path_start..]
        ),
        None => format!("{trimmed}/.well-known/oauth-authorization-server"),
    };
    let oidc = format!("{trimmed}/.well-known/openid-configuration");
    let mut last_error = None;
    for url in [rfc8414, oidc] {
        match http.get_json(&url).await {
            Ok(body) => {
                let meta: ServerMetadata = serde_json::from_slice(&body)
                    .map_err(|e| FetchError::BadResponse(format!("metadata at {url}: {e}")))?;
                if meta.issuer != issuer {
                    return Err(FetchError::BadResponse(format!(
                        "metadata at {url} names issuer {:?}, expected {issuer:?}",
                        meta.issuer
                    )));
                }
                return Ok(meta);
            }
            Err(e @ FetchError::Status { .. }) => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap_or_else(|| FetchError::BadResponse("no metadata".into())))
}
