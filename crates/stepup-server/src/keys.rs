//! The server's signing keys: created on first start, stored, rotated on
//! command. A retired key stops signing at once but stays in the JWKS until
//! every token it signed has expired, so resource servers keep verifying them.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SecureRandom;
use serde_json::{Value, json};
use stepup_core::access_token::AccessTokenClaims;
use stepup_core::jwk::{Algorithm, Jwks};
use stepup_core::jws::{SigningHeader, SigningKey, VerificationPolicy, sign_compact, verify_compact};
use stepup_core::{TokenCache, UnixTime};
use thiserror::Error;

use crate::store::{Store, StoreError, StoredKey};

/// Why keys could not be loaded or made.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored key does not parse.
    #[error("stored key {kid} cannot be used: {reason}")]
    Corrupt {
        /// The key id.
        kid: String,
        /// Why.
        reason: String,
    },
    /// Key generation or signing failed.
    #[error("cryptography failed: {0}")]
    Crypto(String),
}

/// How long a new key is published before it signs: longer than the
/// servers' key reload interval (60 s) plus the JWKS cache lifetime (300 s),
/// so that every instance and every resource server knows a key before the
/// first token signed with it arrives.
pub const ACTIVATION_DELAY_SECONDS: i64 = 420;

/// The algorithms the server signs with; both are always present so that a
/// client may pick either for ID tokens.
const ALGORITHMS: [Algorithm; 2] = [Algorithm::ES256, Algorithm::EdDSA];

struct ActiveKey {
    kid: String,
    key: SigningKey,
}

/// Keys ready to sign, and the JWKS to publish.
pub struct KeyRing {
    active: Vec<ActiveKey>,
    jwks: Value,
    verification: Jwks,
    /// Access tokens this ring found genuine, by their text: a resource
    /// server introspects one token many times, and each repeat skips the
    /// signature check. It lives with the ring, so a reload of the keys
    /// (after a rotation) starts afresh.
    verified: TokenCache<AccessTokenClaims>,
}

/// How many verified access tokens a key ring remembers (a few MiB at most).
const VERIFIED_TOKENS_KEPT: usize = 4096;

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.active.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("active", &kids)
            .finish_non_exhaustive()
    }
}

fn new_kid(rng: &dyn SecureRandom, alg: Algorithm, now: i64) -> Result<String, KeyError> {
    let mut random = [0u8; 9];
    rng.fill(&mut random)
        .map_err(|_| KeyError::Crypto("no randomness".into()))?;
    Ok(format!(
        "{}-{now}-{}",
        alg.as_str().to_ascii_lowercase(),
        URL_SAFE_NO_PAD.encode(random)
    ))
}

fn generate_pkcs8(alg: Algorithm, rng: &dyn SecureRandom) -> Result<Vec<u8>, KeyError> {
    let doc = match alg {
        Algorithm::EdDSA => ring::signature::Ed25519KeyPair::generate_pkcs8(rng),
        Algorithm::ES256 => ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            rng,
        ),
        other => return Err(KeyError::Crypto(format!("cannot generate {other} keys"))),
    }
    .map_err(|_| KeyError::Crypto("key generation failed".into()))?;
    Ok(doc.as_ref().to_vec())
}

/// Creates one new active key per algorithm.
async fn create_keys(store: &Store, now: i64, rng: &(dyn SecureRandom + Sync)) -> Result<(), KeyError> {
    for alg in ALGORITHMS {
        let pkcs8 = generate_pkcs8(alg, rng)?;
        store
            .insert_signing_key(&StoredKey {
                kid: new_kid(rng, alg, now)?,
                alg: alg.as_str().to_owned(),
                pkcs8: STANDARD.encode(pkcs8),
                created_at: now,
                retired_at: None,
            })
            .await?;
    }
    Ok(())
}

impl KeyRing {
    /// Loads the keys, creating them on first start. `keep_retired_for` is
    /// the longest lifetime of anything signed (a retired key stays published
    /// that long).
    pub async fn load_or_create(
        store: &Store,
        now: i64,
        keep_retired_for: i64,
        rng: &(dyn SecureRandom + Sync),
    ) -> Result<Self, KeyError> {
        let keys = store.signing_keys().await?;
        if !ALGORITHMS.iter().all(|alg| {
            keys.iter()
                .any(|k| k.retired_at.is_none() && k.alg == alg.as_str())
        }) {
            create_keys(store, now, rng).await?;
        }
        Self::load(store, now, keep_retired_for, rng).await
    }

    /// Retires the active keys and creates new ones.
    /// The new keys are published at once but sign only after
    /// [`ACTIVATION_DELAY_SECONDS`]; the old ones sign until then.
    pub async fn rotate(store: &Store, now: i64, rng: &(dyn SecureRandom + Sync)) -> Result<u64, KeyError> {
        let retired = store.retire_signing_keys(now + ACTIVATION_DELAY_SECONDS).await?;
        create_keys(store, now, rng).await?;
        Ok(retired)
    }

    async fn load(
        store: &Store,
        now: i64,
        keep_retired_for: i64,
        rng: &(dyn SecureRandom + Sync),
    ) -> Result<Self, KeyError> {
        store
            .delete_signing_keys_retired_before(now - keep_retired_for)
            .await?;
        let mut published = Vec::new();
        // Candidates per algorithm, newest first: (mature, key).
        let mut candidates: Vec<(bool, ActiveKey)> = Vec::new();
        for stored in store.signing_keys().await? {
            let corrupt = |reason: String| KeyError::Corrupt {
                kid: stored.kid.clone(),
                reason,
            };
            let alg: Algorithm = stored
                .alg
                .parse()
                .map_err(|_| corrupt(format!("unknown alg {}", stored.alg)))?;
            let der = STANDARD
                .decode(&stored.pkcs8)
                .map_err(|_| corrupt("bad base64".into()))?;
            let key = SigningKey::from_pkcs8(alg, &der, rng).map_err(|e| corrupt(e.to_string()))?;
            published.push(key.public_jwk(Some(&stored.kid)));
            if stored.retired_at.is_none_or(|at| at > now) {
                let mature = stored.created_at <= now - ACTIVATION_DELAY_SECONDS;
                candidates.push((mature, ActiveKey { kid: stored.kid, key }));
            }
        }
        // Per algorithm: the newest key that has been published long enough,
        // else the one published longest (on first start, the only one).
        let picks: Vec<usize> = ALGORITHMS
            .iter()
            .filter_map(|alg| {
                let of_alg: Vec<usize> = (0..candidates.len())
                    .filter(|&i| candidates[i].1.key.algorithm() == *alg)
                    .collect();
                of_alg
                    .iter()
                    .copied()
                    .find(|&i| candidates[i].0)
                    .or(of_alg.last().copied())
            })
            .collect();
        let active: Vec<ActiveKey> = candidates
            .into_iter()
            .enumerate()
            .filter(|(i, _)| picks.contains(i))
            .map(|(_, (_, key))| key)
            .collect();
        let jwks = json!({ "keys": published });
        let verification = Jwks::from_json(jwks.to_string().as_bytes())
            .map_err(|e| KeyError::Crypto(format!("own JWKS does not parse: {e}")))?;
        Ok(Self {
            active,
            jwks,
            verification,
            verified: TokenCache::new(VERIFIED_TOKENS_KEPT),
        })
    }

    /// The JWK Set to publish at `jwks_uri`.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// The published keys, parsed, for checking tokens this server issued.
    pub fn verification_keys(&self) -> &Jwks {
        &self.verification
    }

    /// The claims of `token` if it is an access token signed by one of these
    /// keys (RFC 9068 `typ`, an algorithm there is an active key for) and
    /// its issuer is `issuer`. Its expiry and revocation are the caller's
    /// to check, on every call: a remembered token is only spared the
    /// signature check and the parsing.
    pub(crate) fn genuine_access_token(
        &self,
        token: &str,
        issuer: &str,
        now: UnixTime,
    ) -> Option<Arc<AccessTokenClaims>> {
        if let Some(claims) = self.verified.get(token, now) {
            return Some(claims);
        }
        let policy = VerificationPolicy::access_token(self.algorithms());
        let verified = verify_compact(token, &self.verification, &policy).ok()?;
        let claims = AccessTokenClaims::from_json(verified.payload()).ok()?;
        if claims.iss != issuer {
            return None;
        }
        let claims = Arc::new(claims);
        self.verified.insert(token, Arc::clone(&claims), claims.exp, now);
        Some(claims)
    }

    /// The algorithms there is an active key for.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.active.iter().map(|k| k.key.algorithm()).collect()
    }

    /// Signs `claims` with the active key of `alg`, with the given `typ`.
    pub fn sign(
        &self,
        alg: Algorithm,
        typ: &str,
        claims: &Value,
        rng: &dyn SecureRandom,
    ) -> Result<String, KeyError> {
        let active = self
            .active
            .iter()
            .find(|k| k.key.algorithm() == alg)
            .ok_or_else(|| KeyError::Crypto(format!("no active {alg} key")))?;
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Crypto(e.to_string()))?;
        sign_compact(
            &SigningHeader::new().typ(typ).kid(&active.kid),
            &payload,
            &active.key,
            rng,
        )
        .map_err(|e| KeyError::Crypto(e.to_string()))
    }
}
