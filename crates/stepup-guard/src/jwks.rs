//! Where the verification keys come from: a fixed JWKS, or the issuer's
//! `jwks_uri` (found by RFC 8414 / OpenID Connect Discovery), cached and
//! refetched when a token names a key we do not have, at most once per
//! `min_refresh_interval` so that a flood of tokens with made-up `kid`s
//! cannot turn the guard into a load generator against the issuer. The set
//! is also refetched once it is older than `max_age` (an hour by default),
//! so that a key the issuer withdrew stops being trusted.
//!
//! A source may also start empty and find its `jwks_uri` by discovery on
//! first use ([`KeySource::discovered`]): a proxy that fronts its own
//! issuer cannot fetch the keys before it serves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use stepup_core::jwk::Jwks;

use crate::fetch::{FetchError, HttpFetcher};

#[derive(Debug)]
struct Remote {
    /// The `jwks_uri`, known at once or found by discovery of `issuer`.
    url: tokio::sync::OnceCell<String>,
    issuer: Option<String>,
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
    /// Whether a key set was ever fetched (or given).
    loaded: AtomicBool,
}

/// How often an empty source may try again: it has nothing to serve with,
/// so it retries sooner than a loaded one refetches.
const EMPTY_RETRY_INTERVAL: Duration = Duration::from_secs(1);

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
            loaded: AtomicBool::new(true),
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
                url: tokio::sync::OnceCell::new_with(Some(url.to_owned())),
                issuer: None,
                http,
                min_refresh_interval,
                max_age: Duration::from_secs(3600),
                last_fetch: tokio::sync::Mutex::new(Instant::now()),
            }),
            loaded: AtomicBool::new(true),
        })
    }

    /// An empty source for `issuer`, without I/O: the first token (or
    /// [`KeySource::load`]) discovers its `jwks_uri` (RFC 8414, then OpenID
    /// Connect Discovery) and fetches the keys. Until that succeeds every
    /// token is refused as unverifiable, and another try is made at most
    /// once a second.
    pub fn discovered(issuer: &str, http: HttpFetcher, min_refresh_interval: Duration) -> Self {
        Self::unloaded(
            tokio::sync::OnceCell::new(),
            Some(issuer.to_owned()),
            http,
            min_refresh_interval,
        )
    }

    /// An empty source for the key set at `url`, without I/O: the first
    /// token (or [`KeySource::load`]) fetches it, as for
    /// [`KeySource::discovered`] but without discovery.
    pub fn at_url(url: &str, http: HttpFetcher, min_refresh_interval: Duration) -> Self {
        let url = tokio::sync::OnceCell::new_with(Some(url.to_owned()));
        Self::unloaded(url, None, http, min_refresh_interval)
    }

    fn unloaded(
        url: tokio::sync::OnceCell<String>,
        issuer: Option<String>,
        http: HttpFetcher,
        min_refresh_interval: Duration,
    ) -> Self {
        Self {
            current: RwLock::new(Arc::new(Jwks::default())),
            remote: Some(Remote {
                url,
                issuer,
                http,
                min_refresh_interval,
                max_age: Duration::from_secs(3600),
                last_fetch: tokio::sync::Mutex::new(long_ago()),
            }),
            loaded: AtomicBool::new(false),
        }
    }

    /// Whether keys were ever fetched (a fixed set always is).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Fetches the key set now (discovering its address first if needed),
    /// whatever the refetch intervals say.
    pub async fn load(&self) -> Result<(), FetchError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let mut last = remote.last_fetch.lock().await;
        *last = Instant::now();
        let jwks = remote.fetch().await?;
        self.replace(Arc::new(jwks));
        Ok(())
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
        if !self.is_loaded() {
            // An empty source fetches on the unknown-key path instead.
            return;
        }
        let mut last = remote.last_fetch.lock().await;
        if last.elapsed() < remote.max_age {
            return;
        }
        match remote.fetch().await {
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
        self.loaded.store(true, Ordering::Release);
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
        let mut last = if self.is_loaded() {
            remote.last_fetch.lock().await
        } else {
            // Nothing to serve with: a request does not queue behind
            // another's fetch (each up to the connect timeout), it is told
            // at once that the keys are not there yet.
            remote.last_fetch.try_lock().map_err(|_| FetchError::NotLoaded)?
        };
        let interval = if self.is_loaded() {
            remote.min_refresh_interval
        } else {
            remote.min_refresh_interval.min(EMPTY_RETRY_INTERVAL)
        };
        if last.elapsed() < interval {
            if !self.is_loaded() {
                // Not the token's fault: there is nothing to check it with.
                return Err(FetchError::NotLoaded);
            }
            // Another request may have refreshed while we waited for the lock.
            return Ok(self.current());
        }
        let fetched = remote.fetch().await;
        // Counted from the end of the fetch: a slow issuer is not asked
        // again the moment a slow try fails.
        *last = Instant::now();
        let jwks = Arc::new(fetched?);
        self.replace(Arc::clone(&jwks));
        Ok(jwks)
    }
}

impl Remote {
    /// The key set at the `jwks_uri`, discovered first if not yet known.
    async fn fetch(&self) -> Result<Jwks, FetchError> {
        let url = self
            .url
            .get_or_try_init(|| async {
                let issuer = self.issuer.as_deref().unwrap_or_default();
                discover(issuer, &self.http).await?.jwks_uri.ok_or_else(|| {
                    FetchError::BadResponse(format!("the metadata of {issuer} has no jwks_uri"))
                })
            })
            .await?;
        fetch_jwks(&self.http, url).await
    }
}

/// An instant well before now (or now, on a clock too young for that),
/// so that the first refetch is not held back.
fn long_ago() -> Instant {
    let now = Instant::now();
    now.checked_sub(Duration::from_secs(24 * 3600)).unwrap_or(now)
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
