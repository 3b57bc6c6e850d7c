//! The verified-token cache: a repeat call with the same token skips the
//! signature check (or, at a resource server, the introspection round trip).
//! The guard keeps what it learnt of a token here; the authorization server
//! keeps the claims of access tokens it was asked to introspect.
//!
//! Keyed by the whole token string, so two tokens never share an entry.
//! Bounded: when full, expired entries go first, then arbitrary ones (the
//! hash map's order), which keeps the cost of a miss flat under a flood of
//! distinct tokens. An entry never outlives the token's `exp`, nor the
//! configured time-to-live, which bounds how long a revoked token stays
//! usable when introspection is the source of truth.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;

use crate::UnixTime;

struct Entry<V> {
    token: Box<str>,
    verified: Arc<V>,
    valid_until: i64,
}

/// A bounded map from token to what its verification found.
pub struct TokenCache<V> {
    entries: RwLock<HashTable<Entry<V>>>,
    hasher: RandomState,
    capacity: usize,
}

impl<V> std::fmt::Debug for TokenCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens.
        f.debug_struct("TokenCache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<V> TokenCache<V> {
    /// A cache holding at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashTable::with_capacity(capacity.min(4096))),
            hasher: RandomState::new(),
            capacity,
        }
    }

    /// Hashes the part after the last `.`: for a JWT that is the signature,
    /// which already tells tokens apart, so a lookup hashes ~100 bytes rather
    /// than the whole token. Equality still compares whole tokens. Only
    /// verified tokens are inserted, so nobody can fill a bucket with crafted
    /// colliding entries; the hash is keyed per process all the same.
    fn hash(&self, token: &str) -> u64 {
        let tail = token.rsplit_once('.').map_or(token, |(_, signature)| signature);
        self.hasher.hash_one(tail)
    }

    /// The cached result for `token`, if still valid at `now`.
    pub fn get(&self, token: &str, now: UnixTime) -> Option<Arc<V>> {
        let entries = self.entries.read().ok()?;
        let entry = entries.find(self.hash(token), |e| &*e.token == token)?;
        (now.seconds() < entry.valid_until).then(|| Arc::clone(&entry.verified))
    }

    /// Remembers a result until `valid_until` (exclusive).
    pub fn insert(&self, token: &str, verified: Arc<V>, valid_until: i64, now: UnixTime) {
        if self.capacity == 0 || valid_until <= now.seconds() {
            return;
        }
        let hash = self.hash(token);
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if let Ok(existing) = entries.find_entry(hash, |e| &*e.token == token) {
            existing.remove();
        }
        if entries.len() >= self.capacity {
            entries.retain(|e| e.valid_until > now.seconds());
            // Still full of live tokens: drop an eighth, arbitrarily (table
            // order), so that a flood of distinct tokens pays the O(n) sweep
            // once per capacity/8 inserts rather than on every insert.
            if entries.len() >= self.capacity {
                let mut excess = entries.len() + 1 - self.capacity + self.capacity / 8;
                entries.retain(|_| {
                    if excess == 0 {
                        return true;
                    }
                    excess -= 1;
                    false
                });
            }
        }
        let entry = Entry {
            token: token.into(),
            verified,
            valid_until,
        };
        entries.insert_unique(hash, entry, |e| self.hash(&e.token));
    }

    /// Forgets a token, e.g. after learning it was revoked.
    pub fn remove(&self, token: &str) {
        let hash = self.hash(token);
        if let Ok(mut entries) = self.entries.write()
            && let Ok(existing) = entries.find_entry(hash, |e| &*e.token == token)
        {
            existing.remove();
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

    #[derive(Debug)]
    struct Verified {
        subject: Option<String>,
    }

    fn token(sub: &str) -> Arc<Verified> {
        Arc::new(Verified {
            subject: Some(sub.into()),
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
    fn tokens_sharing_a_signature_segment_stay_distinct() {
        let c = TokenCache::new(10);
        c.insert("h.p1.sig", token("one"), 100, UnixTime(0));
        c.insert("h.p2.sig", token("two"), 100, UnixTime(0));
        assert_eq!(
            c.get("h.p1.sig", UnixTime(0)).unwrap().subject.as_deref(),
            Some("one")
        );
        assert_eq!(
            c.get("h.p2.sig", UnixTime(0)).unwrap().subject.as_deref(),
            Some("two")
        );
        assert!(c.get("h.p3.sig", UnixTime(0)).is_none());
        c.insert("h.p1.sig", token("again"), 100, UnixTime(0));
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.get("h.p1.sig", UnixTime(0)).unwrap().subject.as_deref(),
            Some("again")
        );
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
