//! Secrets: values that must never be printed, logged or compared in
//! variable time (client secrets, and later codes, refresh tokens, TOTP seeds).

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// An OAuth client secret (RFC 6749 §2.3.1).
///
/// `Debug` prints `[redacted]`; there is no `Display` and no `PartialEq`:
/// compare with [`ClientSecret::matches`], which takes constant time for
/// equal-length inputs. The bytes are zeroed when dropped.
#[derive(Clone)]
pub struct ClientSecret(Zeroizing<String>);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Zeroizing::new(secret.into()))
    }

    /// The secret itself, for sending it where it belongs.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed_and_compared_exactly() {
        let s = ClientSecret::new("hunter2");
        assert_eq!(format!("{s:?}"), "ClientSecret([redacted])");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
        assert!(!s.matches("hunter"));
        assert!(!s.matches(""));
        assert_eq!(s.expose_secret(), "hunter2");
    }
}
