//! The signed identity (`[identity]`): besides the `X-Stepup-*` headers,
//! the gateway sends the upstream a short-lived JWS of who is calling,
//! for this method and path, signed with a key of its own. An upstream
//! that others can reach too (another proxy, the same network) checks it
//! against the gateway's public key, published at `{admin_prefix}jwks`,
//! and then knows the headers came from the gateway, for this request.
//!
//! The key is an unencrypted PKCS#8 PEM file (P-256, ES256), as
//! `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256` makes
//! it; a missing file is made on first start, readable by its owner only.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderName;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use stepup_core::jwk::Algorithm;
use stepup_core::jws::{SigningHeader, SigningKey, sign_compact};
use stepup_guard::VerifiedToken;

/// The header that carries the signed identity.
pub const IDENTITY: HeaderName = HeaderName::from_static("x-stepup-identity");

/// The `typ` of the signed identity.
pub const IDENTITY_TYP: &str = "stepup-identity+jwt";

/// Signs identities for the upstream.
pub(crate) struct IdentitySigner {
    key: SigningKey,
    kid: String,
    /// The gateway's identifier (its audience): `iss`.
    issuer: String,
    seconds: i64,
    jwks: Value,
    rng: SystemRandom,
}

impl IdentitySigner {
    /// The signer of `key_file` (made when missing), naming `issuer`.
    pub(crate) fn load(key_file: &Path, issuer: &str, seconds: u64) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let der = match std::fs::read_to_string(key_file) {
            Ok(pem) => pem_der(&pem).map_err(|e| format!("identity key {}: {e}", key_file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => new_key_file(key_file, &rng)?,
            Err(e) => return Err(format!("identity key {}: {e}", key_file.display())),
        };
        let key = SigningKey::from_pkcs8(Algorithm::ES256, &der, &rng)
            .map_err(|e| format!("identity key {}: not a P-256 PKCS#8 key: {e}", key_file.display()))?;
        let public = key.public_jwk(None);
        let kid = stepup_core::jwk::Jwk::from_json_value(&public)
            .map(|k| k.thumbprint_sha256())
            .map_err(|e| format!("identity key: {e}"))?;
        let jwks = json!({ "keys": [key.public_jwk(Some(&kid))] });
        Ok(Self {
            key,
            kid,
            issuer: issuer.to_owned(),
            seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
            jwks,
            rng,
        })
    }

    /// The public key, as a JWK Set.
    pub(crate) fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// The signed identity of `token` for a `method` call to
    /// `path_and_query`, valid from `now` for the configured seconds.
    pub(crate) fn sign(
        &self,
        token: &VerifiedToken,
        method: &str,
        path_and_query: &str,
        now: i64,
    ) -> Result<String, &'static str> {
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| "no randomness for the signed identity")?;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": token.subject,
            "acr": token.acr,
            "amr": token.amr,
            "auth_time": token.auth_time,
            "scope": token.scope,
            "client_id": token.client_id,
            "htm": method,
            "htu": path_and_query,
            "iat": now,
            "exp": now.saturating_add(self.seconds),
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        if let Some(jkt) = token.bound_jkt() {
            claims["cnf"] = json!({ "jkt": jkt });
        }
        let payload = serde_json::to_vec(&claims).map_err(|_| "the signed identity cannot be written")?;
        let header = SigningHeader::new().typ(IDENTITY_TYP).kid(&self.kid);
        sign_compact(&header, &payload, &self.key, &self.rng)
            .map_err(|_| "the signed identity cannot be signed")
    }
}

/// The DER inside a `PRIVATE KEY` PEM block.
fn pem_der(pem: &str) -> Result<Vec<u8>, String> {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = pem
        .find(begin)
        .ok_or("expected a PKCS#8 \"PRIVATE KEY\" PEM block")?
        + begin.len();
    let stop = pem[start..].find(end).ok_or("the PEM block does not end")? + start;
    let b64: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(b64)
        .map_err(|e| format!("the PEM block is not base64: {e}"))
}

/// Makes a new P-256 key at `path`, readable by its owner only, created
/// exclusively (an existing file or link is never overwritten).
fn new_key_file(path: &Path, rng: &SystemRandom) -> Result<Vec<u8>, String> {
    let pkcs8 =
        ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng)
            .map_err(|_| "cannot make an identity key".to_owned())?;
    let der = pkcs8.as_ref().to_vec();
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in STANDARD.encode(&der).as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot make the identity key {}: {e}", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write the identity key {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "made a new identity signing key");
    Ok(der)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_that_is_not_a_p256_pkcs8_pem_is_refused_clearly() {
        let dir = std::env::temp_dir().join(format!("stepup-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let err = |path: &Path| {
            IdentitySigner::load(path, "https://api.example", 60)
                .err()
                .unwrap()
        };
        assert!(err(&write("junk.pem", "hello")).contains("PRIVATE KEY"));
        assert!(err(&write("open.pem", "-----BEGIN PRIVATE KEY-----\nAAAA")).contains("does not end"));
        assert!(
            err(&write(
                "b64.pem",
                "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n"
            ))
            .contains("not base64")
        );
        // An Ed25519 key: a PKCS#8 key, not a P-256 one.
        let ed = ring::signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD.encode(ed.as_ref())
        );
        assert!(err(&write("ed.pem", &pem)).contains("not a P-256 PKCS#8 key"));
        // A made key loads again as the same key.
        let made = dir.join("made.pem");
        let _ = std::fs::remove_file(&made);
        let first = IdentitySigner::load(&made, "https://api.example", 60).unwrap();
        let second = IdentitySigner::load(&made, "https://api.example", 60).unwrap();
        assert_eq!(first.jwks(), second.jwks());
    }
}
