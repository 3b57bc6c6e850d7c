//! The verified-token cache: a repeat call with the same token skips the
//! signature check (or the introspection round trip).
//!
//! Keyed by the whole token string, so two tokens never share an entry.
//! Bounded: when full, expired entries go first, then arbitrary ones (the
//! hash map's order), which keeps the cost of a miss flat under a flood of
//! distinct tokens. An entry never outlives the token's `exp`, nor the
//! configured time-to-live, which bounds how long a revoked token stays
//! usable when introspection is the source of truth.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use stepup_core::UnixTime;

use crate::verify::VerifiedToken;

struct Entry {
    token: Arc<VerifiedToken>,
    valid_until: i64,
}

/// A bounded map from token to its verification result.
pub struct TokenCache {
    entries: RwLock<HashMap<Box<str>, Entry>>,
    capacity: usize,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens.
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::with_capacity(capacity.min(4096))),
            capacity,
        }
    }

    /// The cached result for `token`, if still valid at `now`.
    pub fn get(&self, token: &str, now: UnixTime) -> Option<Arc<VerifiedToken>> {
        let entries = self.entries.read().ok()?;
        let entry = entries.get(token)?;
        (now.seconds() < entry.valid_until).then(|| Arc::clone(&entry.token))
    }

    /// Remembers a result until `valid_until` (exclusive).
    pub fn insert(&self, token: &str, verified: Arc<VerifiedToken>, valid_until: i64, now: UnixTime) {
        if self.capacity == 0 || valid_until <= now.seconds() {
            return;
        }
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= self.capacity && !entries.contains_key(token) {
            entries.retain(|_, e| e.valid_until > now.seconds());
            while entries.len() >= self.capacity {
                let Some(victim) = entries.keys().next().cloned() else {
                    break;
                };
                entries.remove(&victim);
            }
        }
        entries.insert(
            token.into(),
            Entry {
                token: verified,
                valid_until,
            },
        );
    }

    /// Forgets a token, e.g. after learning it was revoked.
    pub fn remove(&self, token: &str) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(token);
        }
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(sub: &str) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            subject: Some(sub.into()),
            ..VerifiedToken::default()
        })
    }

    #[test]
    fn entries_expire_at_valid_until() {
        let c = TokenCache::new(10);
        c.insert("t", token("a"), 100, UnixTime(50));
        assert!(c.get("t", UnixTime(99)).is_some());
        assert!(c.get("t", UnixTime(100)).is_none());
        assert!(c.get("other", UnixTime(50)).is_none());
    }

    #[test]
    fn capacity_is_a_hard_bound_and_expired_go_first() {
        let c = TokenCache::new(3);
        c.insert("old", token("o"), 60, UnixTime(0));
        c.insert("a", token("a"), 1000, UnixTime(0));
        c.insert("b", token("b"), 1000, UnixTime(0));
        c.insert("c", token("c"), 1000, UnixTime(70));
        assert_eq!(c.len(), 3);
        assert!(c.get("a", UnixTime(70)).is_some() && c.get("b", UnixTime(70)).is_some());
        for i in 0..100 {
            c.insert(&format!("t{i}"), token("x"), 1000, UnixTime(70));
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn zero_capacity_and_already_expired_are_not_cached() {
        let c = TokenCache::new(0);
        c.insert("t", token("a"), 100, UnixTime(0));
        assert!(c.is_empty());
        let c = TokenCache::new(5);
        c.insert("t", token("a"), 100, UnixTime(100));
        assert!(c.is_empty());
        c.insert("t", token("a"), 200, UnixTime(100));
        c.remove("t");
        assert!(c.is_empty());
    }
}
