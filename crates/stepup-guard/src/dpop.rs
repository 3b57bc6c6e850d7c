//! DPoP at the resource server (RFC 9449 §7): tokens bound to a key
//! (`cnf.jkt`) are accepted only with the `DPoP` scheme and a proof made
//! with that key for this very request, used once.
//!
//! The stateless checks are `stepup_core::dpop`; here are the state and
//! the wiring: the origin the guard is reached at (for `htu`), the replay
//! cache of proof identifiers (in memory, or Redis with `SET NX EX` for
//! several instances), and server nonces.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use stepup_core::dpop::ProofPolicy;
use thiserror::Error;

/// A boxed future, for the replay cache.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The replay cache could not answer.
#[derive(Debug, Error)]
#[error("the DPoP replay cache is unavailable: {0}")]
pub struct ReplayError(pub String);

/// Remembers which proofs were used.
pub trait ReplayCache: Send + Sync {
    /// Records `key` as used for `ttl_seconds`; `Ok(false)` if it was
    /// already.
    fn first_use<'a>(
        &'a self,
        key: &'a str,
        ttl_seconds: u64,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, ReplayError>>;
}

/// Proof identifiers of this process, bounded: when full of unexpired
/// entries, new proofs are refused (fail closed) until some expire.
#[derive(Debug)]
pub struct MemoryReplayCache {
    seen: Mutex<HashMap<String, i64>>,
    capacity: usize,
}

impl MemoryReplayCache {
    /// A cache of at most `capacity` proofs.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: Mutex::default(),
            capacity,
        }
    }

    fn check(&self, key: &str, ttl: u64, now: i64) -> bool {
        let mut seen = match self.seen.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen.get(key).is_some_and(|until| *until > now) {
            return false;
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, until| *until > now);
            if seen.len() >= self.capacity {
                tracing::warn!(
                    capacity = self.capacity,
                    "DPoP replay cache full: refusing proofs"
                );
                return false;
            }
        }
        seen.insert(key.to_owned(), now.saturating_add_unsigned(ttl));
        true
    }
}

impl ReplayCache for MemoryReplayCache {
    fn first_use<'a>(
        &'a self,
        key: &'a str,
        ttl_seconds: u64,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, ReplayError>> {
        let fresh = self.check(key, ttl_seconds, now);
        Box::pin(async move { Ok(fresh) })
    }
}

/// Proof identifiers shared through Redis (`SET key 1 NX EX ttl`): a proof
/// used at one instance is refused at every other. While Redis cannot be
/// reached, every proof is refused as unverifiable (503): never let in
/// twice.
pub struct RedisReplayCache {
    client: redis::Client,
    /// Made at the first use (or by [`RedisReplayCache::connect`]); a
    /// failed try is tried again at the next use.
    connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    prefix: String,
}

impl std::fmt::Debug for RedisReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayCache")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisReplayCache {
    /// A cache at `url` (`redis://host:port`), keeping keys under
    /// `prefix`, without I/O: it connects at its first use.
    pub fn new(url: &str, prefix: &str) -> Result<Self, ReplayError> {
        let client = redis::Client::open(url).map_err(|e| ReplayError(e.to_string()))?;
        Ok(Self {
            client,
            connection: tokio::sync::OnceCell::new(),
            prefix: prefix.to_owned(),
        })
    }

    /// Connects to `url` now, keeping keys under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ReplayError> {
        let cache = Self::new(url, prefix)?;
        cache.connection().await?;
        Ok(cache)
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, ReplayError> {
        // Few retries and short timeouts: a request waits seconds at most.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)));
        self.connection
            .get_or_try_init(|| redis::aio::ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .map_err(|e| ReplayError(e.to_string()))
    }
}

impl ReplayCache for RedisReplayCache {
    fn first_use<'a>(
        &'a self,
        key: &'a str,
        ttl_seconds: u64,
        _now: i64,
    ) -> BoxFuture<'a, Result<bool, ReplayError>> {
        Box::pin(async move {
            let mut connection = self.connection().await?;
            let set: Option<String> = redis::cmd("SET")
                .arg(format!("{}:{key}", self.prefix))
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(ttl_seconds.max(1))
                .query_async(&mut connection)
                .await
                .map_err(|e| ReplayError(e.to_string()))?;
            Ok(set.is_some())
        })
    }
}

/// Server nonces (RFC 9449 §9): a value that changes every `period`
/// seconds, derived from a shared secret so that every instance gives and
/// accepts the same ones without storing them; the previous period's
/// nonce is still accepted.
pub struct NonceSource {
    key: hmac::Key,
    period: i64,
}

impl std::fmt::Debug for NonceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceSource")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl NonceSource {
    /// Nonces from `secret` (at least 32 bytes, the same at every
    /// instance), changing every `period_seconds`.
    pub fn new(secret: &[u8], period_seconds: i64) -> Option<Self> {
        (secret.len() >= 32 && period_seconds > 0).then(|| Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            period: period_seconds,
        })
    }

    fn at_window(&self, window: i64) -> String {
        let tag = hmac::sign(&self.key, &window.to_be_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..18])
    }

    /// The nonce to give now.
    pub fn current(&self, now: i64) -> String {
        self.at_window(now.div_euclid(self.period))
    }

    /// The nonces a proof at `now` may carry: the current one, or the
    /// previous period's.
    pub fn accepted_at(&self, now: i64) -> [String; 2] {
        let window = now.div_euclid(self.period);
        [self.at_window(window), self.at_window(window - 1)]
    }
}

/// How the guard accepts DPoP.
#[derive(Clone)]
pub struct DpopOptions {
    pub(crate) origin: String,
    pub(crate) policy: ProofPolicy,
    pub(crate) replay: Arc<dyn ReplayCache>,
    pub(crate) nonces: Option<Arc<NonceSource>>,
}

impl std::fmt::Debug for DpopOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopOptions")
            .field("origin", &self.origin)
            .field("policy", &self.policy)
            .field("nonces", &self.nonces.is_some())
            .finish_non_exhaustive()
    }
}

impl DpopOptions {
    /// DPoP for an API reached at `origin` (`https://api.example`, as
    /// clients write it in `htu`), with the default proof policy and an
    /// in-memory replay cache of 100,000 proofs.
    pub fn new(origin: impl Into<String>) -> Self {
        Self {
            origin: origin.into().trim_end_matches('/').to_owned(),
            policy: ProofPolicy::default(),
            replay: Arc::new(MemoryReplayCache::new(100_000)),
            nonces: None,
        }
    }

    /// Which proofs are accepted.
    pub fn policy(mut self, policy: ProofPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Where used proofs are remembered.
    pub fn replay_cache(mut self, cache: Arc<dyn ReplayCache>) -> Self {
        self.replay = cache;
        self
    }

    /// Require server nonces in proofs.
    pub fn nonces(mut self, nonces: NonceSource) -> Self {
        self.nonces = Some(Arc::new(nonces));
        self
    }

    /// The algorithms proofs may use, for the `algs` challenge parameter.
    pub(crate) fn algs(&self) -> String {
        let names: Vec<&str> = self.policy.algorithms.iter().map(|a| a.as_str()).collect();
        names.join(" ")
    }

    /// How long a proof identifier must be remembered: as long as its
    /// `iat` is accepted.
    pub(crate) fn replay_ttl(&self) -> u64 {
        u64::try_from(
            self.policy
                .max_age_seconds
                .saturating_add(self.policy.max_skew_seconds),
        )
        .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_cache_refuses_a_second_use_until_expiry() {
        let cache = MemoryReplayCache::new(2);
        assert!(cache.first_use("a", 10, 100).await.unwrap());
        assert!(!cache.first_use("a", 10, 105).await.unwrap());
        assert!(cache.first_use("a", 10, 110).await.unwrap(), "expired");
        assert!(cache.first_use("b", 10, 110).await.unwrap());
        // Full of live entries: fail closed.
        assert!(!cache.first_use("c", 10, 111).await.unwrap());
        assert!(
            cache.first_use("c", 10, 121).await.unwrap(),
            "room again after expiry"
        );
    }

    #[test]
    fn nonces_rotate_and_the_previous_one_is_still_accepted() {
        let source = NonceSource::new(&[7u8; 32], 60).unwrap();
        let now = 1_800_000_000;
        let n = source.current(now);
        assert_eq!(n.len(), 24);
        assert!(source.accepted_at(now + 59 - now % 60).contains(&n) || source.accepted_at(now).contains(&n));
        let later = now + 60;
        assert_ne!(source.current(later), n);
        assert!(source.accepted_at(later).contains(&n), "one period of grace");
        assert!(!source.accepted_at(later + 60).contains(&n));
        assert!(
            NonceSource::new(&[1u8; 16], 60).is_none(),
            "short secrets refused"
        );
        let other = NonceSource::new(&[8u8; 32], 60).unwrap();
        assert_ne!(other.current(now), n);
    }
}
