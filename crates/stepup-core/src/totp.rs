//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP).
//!
//! Only the arithmetic lives here: which time step was last accepted (so a
//! code works once) and how many failures lock an account are the server's
//! state, passed in and out.

use std::fmt;

use ring::hmac;
use subtle::ConstantTimeEq;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::time::UnixTime;

/// The HMAC of RFC 6238 §1.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1, what authenticator apps implement.
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpAlgorithm {
    fn ring(self) -> hmac::Algorithm {
        match self {
            TotpAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            TotpAlgorithm::Sha256 => hmac::HMAC_SHA256,
            TotpAlgorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }

    /// The name in an `otpauth://` URI.
    pub fn name(self) -> &'static str {
        match self {
            TotpAlgorithm::Sha1 => "SHA1",
            TotpAlgorithm::Sha256 => "SHA256",
            TotpAlgorithm::Sha512 => "SHA512",
        }
    }
}

/// A TOTP seed with its parameters. `Debug` never shows the seed; the
/// seed is zeroed when dropped.
#[derive(Clone)]
pub struct TotpSecret {
    seed: Zeroizing<Vec<u8>>,
    /// The HMAC.
    pub algorithm: TotpAlgorithm,
    /// Code length (6 to 8).
    pub digits: u32,
    /// Time step in seconds (30 by default).
    pub step: u32,
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpSecret")
            .field("seed", &"[redacted]")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("step", &self.step)
            .finish()
    }
}

/// Why a code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TotpError {
    /// Not the right number of decimal digits.
    #[error("a code is {0} digits")]
    Malformed(u32),
    /// No step in the window produces this code.
    #[error("wrong code")]
    Wrong,
    /// The code's step was already used (RFC 6238 §5.2: one use per code).
    #[error("this code was already used; wait for the next one")]
    Replayed,
}

impl TotpSecret {
    /// A SHA-1, 6-digit, 30-second secret: what authenticator apps expect.
    pub fn new(seed: Vec<u8>) -> Self {
        Self {
            seed: Zeroizing::new(seed),
            algorithm: TotpAlgorithm::Sha1,
            digits: 6,
            step: 30,
        }
    }

    /// A secret from its RFC 4648 base32 text, as the `secret` of an
    /// `otpauth://` URI carries it (any case; `=` padding and spaces
    /// ignored). `None` for a character outside the alphabet, trailing bits
    /// that are not zero, or no bytes at all.
    pub fn from_base32(text: &str) -> Option<Self> {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut seed = Zeroizing::new(Vec::with_capacity(text.len() * 5 / 8));
        let (mut buffer, mut bits) = (0u32, 0u32);
        for c in text.bytes().filter(|c| !matches!(c, b'=' | b' ')) {
            let digit = ALPHABET.iter().position(|&a| a == c.to_ascii_uppercase())?;
            buffer = (buffer << 5) | digit as u32;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                seed.push((buffer >> bits) as u8);
                buffer &= (1 << bits) - 1;
            }
        }
        if buffer != 0 || seed.is_empty() {
            return None;
        }
        Some(Self::new(seed.to_vec()))
    }

    /// The seed bytes, for storage or enrolment.
    pub fn expose_seed(&self) -> &[u8] {
        &self.seed
    }

    /// The time step containing `now` (RFC 6238 §4.2, T0 = 0).
    pub fn step_at(&self, now: UnixTime) -> u64 {
        u64::try_from(now.seconds()).unwrap_or(0) / u64::from(self.step.max(1))
    }

    /// The code for a time step (RFC 4226 §5.3 dynamic truncation).
    pub fn code_at_step(&self, step: u64) -> String {
        let key = hmac::Key::new(self.algorithm.ring(), &self.seed);
        let mac = hmac::sign(&key, &step.to_be_bytes());
        let mac = mac.as_ref();
        let offset = usize::from(mac[mac.len() - 1] & 0x0f);
        let binary = (u32::from(mac[offset] & 0x7f) << 24)
            | (u32::from(mac[offset + 1]) << 16)
            | (u32::from(mac[offset + 2]) << 8)
            | u32::from(mac[offset + 3]);
        let digits = self.digits.clamp(6, 9);
        let code = binary % 10u32.pow(digits);
        format!("{code:0width$}", width = digits as usize)
    }

    /// The code at `now`.
    pub fn code_at(&self, now: UnixTime) -> String {
        self.code_at_step(self.step_at(now))
    }

    /// Checks a code at `now`, accepting the previous and next step for
    /// clock drift (RFC 6238 §5.2), and refusing any step at or before
    /// `last_used_step`. Returns the matched step, to be stored as the new
    /// `last_used_step`.
    pub fn verify(&self, code: &str, now: UnixTime, last_used_step: Option<u64>) -> Result<u64, TotpError> {
        let code = code.trim();
        if code.len() != self.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TotpError::Malformed(self.digits));
        }
        let current = self.step_at(now);
        let mut matched = None;
        // Check every candidate (no early exit) so timing does not tell which step matched.
        for step in [current.saturating_sub(1), current, current + 1] {
            let ok: bool = self.code_at_step(step).as_bytes().ct_eq(code.as_bytes()).into();
            if ok && matched.is_none() {
                matched = Some(step);
            }
        }
        let step = matched.ok_or(TotpError::Wrong)?;
        if last_used_step.is_some_and(|last| step <= last) {
            return Err(TotpError::Replayed);
        }
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(algorithm: TotpAlgorithm, seed: &[u8]) -> TotpSecret {
        TotpSecret {
            seed: Zeroizing::new(seed.to_vec()),
            algorithm,
            digits: 8,
            step: 30,
        }
    }

    /// RFC 6238 Appendix B: seeds are the ASCII digits repeated to the hash length.
    #[test]
    fn rfc6238_appendix_b() {
        let sha1 = secret(TotpAlgorithm::Sha1, b"12345678901234567890");
        let sha256 = secret(TotpAlgorithm::Sha256, b"12345678901234567890123456789012");
        let sha512 = secret(
            TotpAlgorithm::Sha512,
            b"1234567890123456789012345678901234567890123456789012345678901234",
        );
        let table: [(i64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, c1, c256, c512) in table {
            assert_eq!(sha1.code_at(UnixTime(t)), c1, "SHA1 at {t}");
            assert_eq!(sha256.code_at(UnixTime(t)), c256, "SHA256 at {t}");
            assert_eq!(sha512.code_at(UnixTime(t)), c512, "SHA512 at {t}");
        }
    }

    #[test]
    fn a_code_is_accepted_once_within_the_drift_window() {
        let s = TotpSecret::new(b"12345678901234567890".to_vec());
        let now = UnixTime(1_111_111_111);
        let code = s.code_at(now);
        let step = s.verify(&code, now, None).unwrap();
        assert_eq!(s.verify(&code, now, Some(step)), Err(TotpError::Replayed));
        // Previous and next steps are accepted for drift; two away is not.
        let prev = s.code_at(UnixTime(now.seconds() - 30));
        assert!(s.verify(&prev, now, None).is_ok());
        let far = s.code_at(UnixTime(now.seconds() - 90));
        assert_eq!(s.verify(&far, now, None), Err(TotpError::Wrong));
        // An older step than the last used one is a replay too.
        assert_eq!(s.verify(&prev, now, Some(step)), Err(TotpError::Replayed));
    }

    #[test]
    fn malformed_codes() {
        let s = TotpSecret::new(b"12345678901234567890".to_vec());
        for bad in ["", "12345", "1234567", "12345a", "١٢٣٤٥٦"] {
            assert_eq!(
                s.verify(bad, UnixTime(0), None),
                Err(TotpError::Malformed(6)),
                "{bad}"
            );
        }
        assert!(format!("{s:?}").contains("redacted"));
    }

    #[test]
    fn base32_secrets_read_as_rfc4648_says() {
        // RFC 4648 §10 test vectors.
        for (text, bytes) in [
            ("MY======", "f"),
            ("MZXQ====", "fo"),
            ("MZXW6===", "foo"),
            ("MZXW6YQ=", "foob"),
            ("MZXW6YTB", "fooba"),
            ("MZXW6YTBOI======", "foobar"),
        ] {
            let secret = TotpSecret::from_base32(text).unwrap();
            assert_eq!(secret.expose_seed(), bytes.as_bytes(), "{text}");
            let lower = TotpSecret::from_base32(&text.to_lowercase()).unwrap();
            assert_eq!(lower.expose_seed(), bytes.as_bytes());
        }
        // The RFC 6238 seed, as apps show it: "12345678901234567890".
        let spaced = TotpSecret::from_base32("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ").unwrap();
        assert_eq!(spaced.expose_seed(), b"12345678901234567890");
        for bad in ["", "====", "MZXW6YT1", "MZ-W6", "MZ"] {
            assert!(TotpSecret::from_base32(bad).is_none(), "{bad:?}");
        }
    }
}
