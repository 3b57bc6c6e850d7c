//! Proof Key for Code Exchange (RFC 7636), `S256` only.
//!
//! `plain` is refused: it protects nothing against an attacker who can read
//! the authorization request (RFC 9700 §2.1.1 recommends S256).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Why a PKCE value is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PkceError {
    /// Only `S256` is supported.
    #[error("code_challenge_method must be S256")]
    UnsupportedMethod,
    /// A verifier outside 43..=128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
    #[error("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~")]
    MalformedVerifier,
    /// A challenge that is not 43 base64url characters (a SHA-256 hash).
    #[error("code_challenge must be the 43-character base64url SHA-256 of the verifier")]
    MalformedChallenge,
    /// The verifier does not hash to the challenge.
    #[error("code_verifier does not match the code_challenge")]
    Mismatch,
}

/// A checked `S256` code challenge, as stored with an authorization code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

impl CodeChallenge {
    /// Checks `code_challenge` and `code_challenge_method` from an
    /// authorization request. The method defaults to `plain` in RFC 7636
    /// §4.3, so a missing method is refused too.
    pub fn parse(challenge: &str, method: Option<&str>) -> Result<Self, PkceError> {
        if method != Some("S256") {
            return Err(PkceError::UnsupportedMethod);
        }
        let decoded = URL_SAFE_NO_PAD
            .decode(challenge)
            .map_err(|_| PkceError::MalformedChallenge)?;
        if challenge.len() != 43 || decoded.len() != 32 {
            return Err(PkceError::MalformedChallenge);
        }
        Ok(Self(challenge.to_owned()))
    }

    /// The challenge for a verifier (what a client sends).
    pub fn from_verifier(verifier: &str) -> Result<Self, PkceError> {
        check_verifier(verifier)?;
        Ok(Self(s256(verifier)))
    }

    /// The challenge string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks a `code_verifier` from the token request (RFC 7636 §4.6), in
    /// constant time.
    pub fn verify(&self, verifier: &str) -> Result<(), PkceError> {
        check_verifier(verifier)?;
        let computed = s256(verifier);
        if bool::from(computed.as_bytes().ct_eq(self.0.as_bytes())) {
            Ok(())
        } else {
            Err(PkceError::Mismatch)
        }
    }
}

fn check_verifier(verifier: &str) -> Result<(), PkceError> {
    let ok = (43..=128).contains(&verifier.len()) && verifier.bytes().all(is_unreserved);
    if ok {
        Ok(())
    } else {
        Err(PkceError::MalformedVerifier)
    }
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b() {
        assert_eq!(
            CodeChallenge::from_verifier(VERIFIER).unwrap().as_str(),
            CHALLENGE
        );
        let c = CodeChallenge::parse(CHALLENGE, Some("S256")).unwrap();
        assert_eq!(c.verify(VERIFIER), Ok(()));
    }

    #[test]
    fn plain_and_missing_methods_are_refused() {
        assert_eq!(
            CodeChallenge::parse(CHALLENGE, Some("plain")),
            Err(PkceError::UnsupportedMethod)
        );
        assert_eq!(
            CodeChallenge::parse(CHALLENGE, None),
            Err(PkceError::UnsupportedMethod)
        );
        assert_eq!(
            CodeChallenge::parse(CHALLENGE, Some("s256")),
            Err(PkceError::UnsupportedMethod)
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(
            CodeChallenge::parse("short", Some("S256")),
            Err(PkceError::MalformedChallenge)
        );
        assert_eq!(
            CodeChallenge::parse(&format!("{CHALLENGE}="), Some("S256")),
            Err(PkceError::MalformedChallenge)
        );
        let c = CodeChallenge::parse(CHALLENGE, Some("S256")).unwrap();
        assert_eq!(c.verify("too-short"), Err(PkceError::MalformedVerifier));
        assert_eq!(c.verify(&"a".repeat(129)), Err(PkceError::MalformedVerifier));
        assert_eq!(
            c.verify(&format!("{VERIFIER}!")),
            Err(PkceError::MalformedVerifier)
        );
        assert_eq!(c.verify(&"a".repeat(43)), Err(PkceError::Mismatch));
    }
}
