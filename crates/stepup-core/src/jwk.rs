//! JSON Web Keys (RFC 7517) for verifying JWS signatures.
//!
//! A [`Jwks`] is parsed once, when the JWK Set is loaded, into keys that are
//! ready for *ring*: the public key bytes (Ed25519 `x`, the uncompressed EC
//! point `0x04 || x || y`) or the RSA modulus and exponent are decoded and
//! checked up front, so the verification path decodes no key material.
//!
//! What is supported, and nothing else (RFC 7518 §3, RFC 8037 §3.1):
//!
//! | [`Algorithm`] | key                            |
//! |---------------|--------------------------------|
//! | `EdDSA`       | `kty` `OKP`, `crv` `Ed25519`   |
//! | `ES256`       | `kty` `EC`, `crv` `P-256`      |
//! | `ES384`       | `kty` `EC`, `crv` `P-384`      |
//! | `RS256`       | `kty` `RSA`, 2048–8192 bits    |
//! | `PS256`       | `kty` `RSA`, 2048–8192 bits    |
//!
//! Symmetric algorithms (`HS256` …) and `none` are not algorithms here at all:
//! a resource server that verifies with public keys must never accept a MAC
//! keyed with a public key (RFC 8725 §2.1, §3.1).
//!
//! A JWK Set entry that carries private key members (`d`, `p`, `q`, `dp`,
//! `dq`, `qi`, `oth`, or a symmetric `k`) is refused: a private key in a
//! published key set is a leak to fix, not a key to use.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use thiserror::Error;

/// A JWS signature algorithm this crate verifies and signs with
/// (RFC 7518 §3.1, RFC 8037 §3.1).
///
/// The names are the exact, case-sensitive `alg` values. `HS*` and `none`
/// deliberately have no variant: they fail to parse.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// EdDSA with Ed25519 (RFC 8037 §3.1).
    EdDSA,
    /// ECDSA with P-256 and SHA-256, signature `R || S` of 64 bytes.
    ES256,
    /// ECDSA with P-384 and SHA-384, signature `R || S` of 96 bytes.
    ES384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt.
    PS256,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
    ];

    /// The `alg` value, as registered by RFC 7518 / RFC 8037.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
        }
    }

    /// The algorithm named exactly `name` (case-sensitive), without allocating.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "EdDSA" => Some(Algorithm::EdDSA),
            "ES256" => Some(Algorithm::ES256),
            "ES384" => Some(Algorithm::ES384),
            "RS256" => Some(Algorithm::RS256),
            "PS256" => Some(Algorithm::PS256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = UnsupportedAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_name(s).ok_or_else(|| UnsupportedAlgorithm { name: truncated(s) })
    }
}

impl serde::Serialize for Algorithm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Algorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AlgVisitor;
        impl serde::de::Visitor<'_> for AlgVisitor {
            type Value = Algorithm;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of EdDSA, ES256, ES384, RS256, PS256")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Algorithm, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(AlgVisitor)
    }
}

/// A name that is not a supported [`Algorithm`] (this includes `none` and
/// every `HS*`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unsupported JWS algorithm {name:?} (supported: EdDSA, ES256, ES384, RS256, PS256)")]
pub struct UnsupportedAlgorithm {
    name: String,
}

impl UnsupportedAlgorithm {
    /// The rejected name (cut to 64 bytes, since it may come from an attacker).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// At most 64 bytes of `s`, cut on a character boundary: attacker-chosen text
/// that ends up in errors and logs stays short.
pub(crate) fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Why a JWK or a JWK Set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JwkError {
    /// The JWK Set document is not JSON.
    #[error("the JWK Set is not valid JSON: {0}")]
    InvalidJson(String),
    /// The document is JSON but not an object with a `keys` array (RFC 7517 §5).
    #[error("a JWK Set must be a JSON object with a \"keys\" array")]
    NotAKeySet,
    /// The JWK is not a JSON object.
    #[error("a JWK must be a JSON object")]
    NotAnObject,
    /// A required member is absent.
    #[error("the JWK has no {0:?} member")]
    MissingMember(&'static str),
    /// A member has the wrong JSON type or is not valid unpadded base64url.
    #[error("the JWK member {0:?} is malformed")]
    InvalidMember(&'static str),
    /// The `kty` is not one this crate verifies with (a JWK Set skips these).
    #[error("unsupported JWK key type {0:?}")]
    UnsupportedKeyType(String),
    /// The `crv` is not one this crate verifies with (a JWK Set skips these).
    #[error("unsupported curve {crv:?} for JWK key type {kty}")]
    UnsupportedCurve {
        /// The key type (`EC` or `OKP`).
        kty: &'static str,
        /// The curve named by the key (cut to 64 bytes).
        crv: String,
    },
    /// The JWK carries private key members (`d`, `p`, `q`, `dp`, `dq`, `qi`,
    /// `oth`, or a symmetric `k`): a key set to verify with must hold public
    /// keys only.
    #[error("the JWK contains private key material; publish only public keys")]
    PrivateKeyMaterial,
    /// A coordinate or key is not of the exact length its curve requires
    /// (RFC 7518 §6.2.1.2, RFC 8037 §2).
    #[error("the JWK member {member:?} is {found} bytes long; {expected} expected")]
    InvalidLength {
        /// The member (`x` or `y`).
        member: &'static str,
        /// The length the curve requires.
        expected: usize,
        /// The decoded length found.
        found: usize,
    },
    /// The RSA modulus is shorter than 2048 bits (RFC 7518 §3.3, §3.5).
    #[error("the RSA modulus has {bits} bits; at least 2048 are required")]
    RsaModulusTooSmall {
        /// The modulus length in bits.
        bits: usize,
    },
    /// The RSA modulus is longer than 8192 bits, more than is verified here.
    #[error("the RSA modulus has {bits} bits; at most 8192 are supported")]
    RsaModulusTooLarge {
        /// The modulus length in bits.
        bits: usize,
    },
    /// The RSA public exponent is not odd, or not in 3 ..= 2^33 - 1.
    #[error("the RSA public exponent must be odd and between 3 and 2^33 - 1")]
    InvalidRsaExponent,
    /// An entry of a JWK Set is a key of a supported type but is malformed.
    #[error("JWK Set entry {index}: {reason}")]
    Entry {
        /// Position of the entry in the `keys` array, from 0.
        index: usize,
        /// What is wrong with it.
        reason: Box<JwkError>,
    },
}

impl JwkError {
    /// The error itself, or for [`JwkError::Entry`] what is wrong with the entry.
    pub fn cause(&self) -> &JwkError {
        match self {
            JwkError::Entry { reason, .. } => reason.cause(),
            other => other,
        }
    }
}

/// Members that only a private (or symmetric) JWK has (RFC 7518 §6.2.2,
/// §6.3.2, §6.4.1; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The key types whose members this crate knows, so whose private members it
/// recognises.
const KNOWN_KEY_TYPES: [&str; 4] = ["EC", "RSA", "OKP", "oct"];

/// Smallest RSA modulus accepted, in bits.
const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (ring's verification limit).
const RSA_MAX_BITS: usize = 8192;

/// An elliptic curve for ECDSA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EcCurve {
    P256,
    P384,
}

impl EcCurve {
    fn name(self) -> &'static str {
        match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
        }
    }
    fn coordinate_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
        }
    }
    fn algorithm(self) -> Algorithm {
        match self {
            EcCurve::P256 => Algorithm::ES256,
            EcCurve::P384 => Algorithm::ES384,
        }
    }
}

/// Key material, decoded and ready for ring, plus the base64url member
/// strings for the RFC 7638 thumbprint (as published; RSA members in their
/// minimal encoding).
#[derive(Clone)]
enum KeyMaterial {
    Ed25519 {
        x: String,
        key: UnparsedPublicKey<Vec<u8>>,
    },
    Ec {
        curve: EcCurve,
        x: String,
        y: String,
        key: UnparsedPublicKey<Vec<u8>>,
    },
    Rsa {
        n: String,
        e: String,
        bits: usize,
        key: RsaPublicKeyComponents<Vec<u8>>,
    },
}

/// What the key's own `alg` member allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AlgRestriction {
    /// No `alg` member: any algorithm of the key's type.
    Any,
    /// Only this algorithm.
    Only(Algorithm),
    /// An `alg` this crate does not support: the key is unusable here.
    Unsupported,
}

/// One public verification key from a JWK Set (RFC 7517 §4), checked and
/// ready to verify with.
#[derive(Clone)]
pub struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    alg_restriction: AlgRestriction,
    key_use: Option<String>,
    key_ops: Option<Vec<String>>,
    verify_permitted: bool,
    material: KeyMaterial,
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("kty", &self.kty())
            .field("crv", &self.crv())
            .field("alg", &self.alg)
            .field("use", &self.key_use)
            .field("key_ops", &self.key_ops)
            .finish()
    }
}

impl Jwk {
    /// Parses one public JWK.
    ///
    /// Errors: [`JwkError::UnsupportedKeyType`] / [`JwkError::UnsupportedCurve`]
    /// for keys this crate cannot verify with (a [`Jwks`] skips those),
    /// [`JwkError::PrivateKeyMaterial`] for a JWK with private members, and a
    /// precise error for every malformed member.
    pub fn from_json_value(value: &Value) -> Result<Jwk, JwkError> {
        let obj = value.as_object().ok_or(JwkError::NotAnObject)?;
        let kty = required_str(obj, "kty")?;
        if KNOWN_KEY_TYPES.contains(&kty) && PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
            return Err(JwkError::PrivateKeyMaterial);
        }
        let material = match kty {
            "OKP" => parse_okp(obj)?,
            "EC" => parse_ec(obj)?,
            "RSA" => parse_rsa(obj)?,
            other => return Err(JwkError::UnsupportedKeyType(truncated(other))),
        };

        let kid = optional_str(obj, "kid")?.map(str::to_owned);
        let alg = optional_str(obj, "alg")?.map(str::to_owned);
        let key_use = optional_str(obj, "use")?.map(str::to_owned);
        let key_ops = match obj.get("key_ops") {
            None => None,
            Some(Value::Array(ops)) => Some(
                ops.iter()
                    .map(|op| op.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or(JwkError::InvalidMember("key_ops"))?,
            ),
            Some(_) => return Err(JwkError::InvalidMember("key_ops")),
        };

        let alg_restriction = match alg.as_deref() {
            None => AlgRestriction::Any,
            Some(name) => {
                Algorithm::from_name(name).map_or(AlgRestriction::Unsupported, AlgRestriction::Only)
            }
        };
        // RFC 7517 §4.2, §4.3: a key meant for something else is unusable.
        let verify_permitted = key_use.as_deref().is_none_or(|u| u == "sig")
            && key_ops
                .as_ref()
                .is_none_or(|ops| ops.iter().any(|op| op == "verify"));

        Ok(Jwk {
            kid,
            alg,
            alg_restriction,
            key_use,
            key_ops,
            verify_permitted,
            material,
        })
    }

    /// The key ID (`kid`), if the key has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The key type: `OKP`, `EC` or `RSA`.
    pub fn kty(&self) -> &'static str {
        match self.material {
            KeyMaterial::Ed25519 { .. } => "OKP",
            KeyMaterial::Ec { .. } => "EC",
            KeyMaterial::Rsa { .. } => "RSA",
        }
    }

    /// The curve (`Ed25519`, `P-256`, `P-384`), or `None` for RSA.
    pub fn crv(&self) -> Option<&'static str> {
        match &self.material {
            KeyMaterial::Ed25519 { .. } => Some("Ed25519"),
            KeyMaterial::Ec { curve, .. } => Some(curve.name()),
            KeyMaterial::Rsa { .. } => None,
        }
    }

    /// The key's own `alg` member as published, if any. When present, only
    /// that algorithm may be used with the key.
    pub fn alg(&self) -> Option<&str> {
        self.alg.as_deref()
    }

    /// The `use` member as published, if any.
    pub fn key_use(&self) -> Option<&str> {
        self.key_use.as_deref()
    }

    /// The `key_ops` member as published, if any.
    pub fn key_ops(&self) -> Option<&[String]> {
        self.key_ops.as_deref()
    }

    /// The RSA modulus length in bits, or `None` for other key types.
    pub fn rsa_modulus_bits(&self) -> Option<usize> {
        match &self.material {
            KeyMaterial::Rsa { bits, .. } => Some(*bits),
            _ => None,
        }
    }

    /// Whether this key may verify a signature made with `alg`: the key type
    /// and curve fit the algorithm (EdDSA: OKP Ed25519; ES256: EC P-256;
    /// ES384: EC P-384; RS256, PS256: RSA), the key's own `alg` (if any) is
    /// `alg`, its `use` (if any) is `sig` and its `key_ops` (if any) contain
    /// `verify`.
    pub fn compatible_with(&self, alg: Algorithm) -> bool {
        if !self.verify_permitted {
            return false;
        }
        match self.alg_restriction {
            AlgRestriction::Any => {}
            AlgRestriction::Only(only) if only == alg => {}
            AlgRestriction::Only(_) | AlgRestriction::Unsupported => return false,
        }
        match &self.material {
            KeyMaterial::Ed25519 { .. } => alg == Algorithm::EdDSA,
            KeyMaterial::Ec { curve, .. } => alg == curve.algorithm(),
            KeyMaterial::Rsa { .. } => matches!(alg, Algorithm::RS256 | Algorithm::PS256),
        }
    }

    /// Checks `signature` over `message` with `alg`. False when the key is
    /// not [compatible](Jwk::compatible_with) with `alg`, when the signature
    /// has the wrong length, and when it does not verify.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        if !self.compatible_with(alg) {
            return false;
        }
        match (&self.material, alg) {
            (KeyMaterial::Ed25519 { key, .. }, Algorithm::EdDSA) => {
                sig.len() == 64 && key.verify(message, sig).is_ok()
            }
            (KeyMaterial::Ec { curve, key, .. }, Algorithm::ES256 | Algorithm::ES384) => {
                // RFC 7518 §3.4: R || S, each exactly the coordinate length.
                sig.len() == 2 * curve.coordinate_len() && key.verify(message, sig).is_ok()
            }
            (KeyMaterial::Rsa { key, .. }, Algorithm::RS256) => key
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            (KeyMaterial::Rsa { key, .. }, Algorithm::PS256) => key
                .verify(&signature::RSA_PSS_2048_8192_SHA256, message, sig)
                .is_ok(),
            _ => false,
        }
    }

    /// The RFC 7638 JWK Thumbprint with SHA-256, base64url without padding.
    ///
    /// Computed over the required members only, in lexicographic order
    /// (EC: `crv`, `kty`, `x`, `y`; RSA: `e`, `kty`, `n`; OKP: `crv`, `kty`,
    /// `x`), with the member values exactly as published.
    pub fn thumbprint_sha256(&self) -> String {
        // The base64url strings were validated on parse: their alphabet needs
        // no JSON escaping.
        let canonical = match &self.material {
            KeyMaterial::Ed25519 { x, .. } => {
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#)
            }
            KeyMaterial::Ec { curve, x, y, .. } => {
                format!(r#"{{"crv":"{}","kty":"EC","x":"{x}","y":"{y}"}}"#, curve.name())
            }
            KeyMaterial::Rsa { n, e, .. } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}

fn required_str<'a>(obj: &'a Map<String, Value>, member: &'static str) -> Result<&'a str, JwkError> {
    match obj.get(member) {
        None => Err(JwkError::MissingMember(member)),
        Some(v) => v.as_str().ok_or(JwkError::InvalidMember(member)),
    }
}

fn optional_str<'a>(obj: &'a Map<String, Value>, member: &'static str) -> Result<Option<&'a str>, JwkError> {
    match obj.get(member) {
        None => Ok(None),
        Some(v) => v.as_str().map(Some).ok_or(JwkError::InvalidMember(member)),
    }
}

/// A required base64url member: its text as published and its bytes.
fn required_b64<'a>(
    obj: &'a Map<String, Value>,
    member: &'static str,
) -> Result<(&'a str, Vec<u8>), JwkError> {
    let text = required_str(obj, member)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| JwkError::InvalidMember(member))?;
    Ok((text, bytes))
}

fn parse_okp(obj: &Map<String, Value>) -> Result<KeyMaterial, JwkError> {
    let crv = required_str(obj, "crv")?;
    if crv != "Ed25519" {
        return Err(JwkError::UnsupportedCurve {
            kty: "OKP",
            crv: truncated(crv),
        });
    }
    let (x_text, x) = required_b64(obj, "x")?;
    if x.len() != 32 {
        return Err(JwkError::InvalidLength {
            member: "x",
            expected: 32,
            found: x.len(),
        });
    }
    Ok(KeyMaterial::Ed25519 {
        x: x_text.to_owned(),
        key: UnparsedPublicKey::new(&signature::ED25519, x),
    })
}

fn parse_ec(obj: &Map<String, Value>) -> Result<KeyMaterial, JwkError> {
    let crv = required_str(obj, "crv")?;
    let curve = match crv {
        "P-256" => EcCurve::P256,
        "P-384" => EcCurve::P384,
        other => {
            return Err(JwkError::UnsupportedCurve {
                kty: "EC",
                crv: truncated(other),
            });
        }
    };
    let len = curve.coordinate_len();
    let (x_text, x) = required_b64(obj, "x")?;
    let (y_text, y) = required_b64(obj, "y")?;
    for (member, bytes) in [("x", &x), ("y", &y)] {
        if bytes.len() != len {
            return Err(JwkError::InvalidLength {
                member,
                expected: len,
                found: bytes.len(),
            });
        }
    }
    // SEC 1 §2.3.3 uncompressed point. Whether it lies on the curve is checked
    // by ring at each verification: a point that does not verifies nothing.
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    let verification: &'static dyn signature::VerificationAlgorithm = match curve {
        EcCurve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
        EcCurve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
    };
    Ok(KeyMaterial::Ec {
        curve,
        x: x_text.to_owned(),
        y: y_text.to_owned(),
        key: UnparsedPublicKey::new(verification, point),
    })
}

/// `bytes` without leading zero octets.
fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn parse_rsa(obj: &Map<String, Value>) -> Result<KeyMaterial, JwkError> {
    let (_, n) = required_b64(obj, "n")?;
    let (_, e) = required_b64(obj, "e")?;

    // Some libraries prefix a zero octet (RFC 7518 §6.3.1.1); ring wants none.
    let n = strip_leading_zeros(&n);
    let (Some(first), Some(last)) = (n.first(), n.last()) else {
        return Err(JwkError::InvalidMember("n"));
    };
    if last & 1 == 0 {
        // An RSA modulus is a product of odd primes.
        return Err(JwkError::InvalidMember("n"));
    }
    let bits = n.len() * 8 - first.leading_zeros() as usize;
    if bits < RSA_MIN_BITS {
        return Err(JwkError::RsaModulusTooSmall { bits });
    }
    if bits > RSA_MAX_BITS {
        return Err(JwkError::RsaModulusTooLarge { bits });
    }

    // The same bounds ring applies when verifying.
    let e = strip_leading_zeros(&e);
    if e.is_empty() || e.len() > 5 {
        return Err(JwkError::InvalidRsaExponent);
    }
    let e_value = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if e_value < 3 || e_value & 1 == 0 || e_value > (1u64 << 33) - 1 {
        return Err(JwkError::InvalidRsaExponent);
    }

    // The thumbprint is over the minimal encodings (RFC 7518 §6.3.1.1), so a
    // key published with a zero prefix has the same thumbprint as without.
    Ok(KeyMaterial::Rsa {
        n: URL_SAFE_NO_PAD.encode(n),
        e: URL_SAFE_NO_PAD.encode(e),
        bits,
        key: RsaPublicKeyComponents {
            n: n.to_vec(),
            e: e.to_vec(),
        },
    })
}

/// A JWK Set (RFC 7517 §5) of public verification keys.
///
/// Entries of a key type or curve this crate does not support are skipped,
/// as RFC 7517 §5 asks (their number is kept: [`Jwks::skipped`]); an entry of
/// a supported type that is malformed makes the whole set an error, so that a
/// broken key set is noticed instead of silently losing keys.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
    skipped: usize,
}

impl Jwks {
    /// Parses a JWK Set document (`{"keys": [...]}`).
    pub fn from_json(json: &[u8]) -> Result<Jwks, JwkError> {
        let doc: Value = serde_json::from_slice(json).map_err(|e| JwkError::InvalidJson(e.to_string()))?;
        let entries = doc
            .as_object()
            .and_then(|o| o.get("keys"))
            .and_then(Value::as_array)
            .ok_or(JwkError::NotAKeySet)?;
        let mut keys = Vec::with_capacity(entries.len());
        let mut skipped = 0;
        for (index, entry) in entries.iter().enumerate() {
            match Jwk::from_json_value(entry) {
                Ok(key) => keys.push(key),
                Err(JwkError::UnsupportedKeyType(_) | JwkError::UnsupportedCurve { .. }) => {
                    skipped += 1;
                }
                Err(reason) => {
                    return Err(JwkError::Entry {
                        index,
                        reason: Box::new(reason),
                    });
                }
            }
        }
        Ok(Jwks { keys, skipped })
    }

    /// A key set of already parsed keys.
    pub fn from_keys(keys: Vec<Jwk>) -> Jwks {
        Jwks { keys, skipped: 0 }
    }

    /// The usable keys, in document order.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// How many entries were skipped for an unsupported key type or curve.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys that may verify a signature made with `alg`: with a `kid`,
    /// the keys that have that `kid`; without, every key; in both cases only
    /// those [compatible](Jwk::compatible_with) with `alg`.
    pub fn find<'a>(&'a self, kid: Option<&'a str>, alg: Algorithm) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |key| {
            kid.is_none_or(|kid| key.kid.as_deref() == Some(kid)) && key.compatible_with(alg)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    const RFC7638: &str = include_str!("../tests/vectors/rfc7638.json");
    const RFC7515: &str = include_str!("../tests/vectors/rfc7515.json");
    const RFC8037: &str = include_str!("../tests/vectors/rfc8037.json");

    fn vectors(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An RSA public JWK with a modulus of `bits` bits (top and bottom bits set).
    fn rsa_jwk_of_bits(bits: usize) -> Value {
        let mut n = vec![0x5au8; bits.div_ceil(8)];
        let top_bits = bits - (n.len() - 1) * 8;
        n[0] = 1 << (top_bits - 1);
        *n.last_mut().unwrap() |= 1;
        json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"})
    }

    #[test]
    fn algorithm_names_are_exact_and_symmetric_algorithms_do_not_parse() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
        }
        for bad in [
            "none", "HS256", "HS384", "HS512", "es256", "rs256", "EDDSA", "", "RS512",
        ] {
            let err = bad.parse::<Algorithm>().unwrap_err();
            assert_eq!(err.name(), bad);
        }
        let long = "A".repeat(1000);
        assert_eq!(long.parse::<Algorithm>().unwrap_err().name().len(), 64);
        assert_eq!(
            serde_json::from_str::<Algorithm>("\"PS256\"").unwrap(),
            Algorithm::PS256
        );
        assert!(serde_json::from_str::<Algorithm>("\"HS256\"").is_err());
        assert_eq!(serde_json::to_string(&Algorithm::EdDSA).unwrap(), "\"EdDSA\"");
    }

    // RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
    #[test]
    fn rfc7638_section_3_1_thumbprint() {
        let v = vectors(RFC7638);
        let jwk = Jwk::from_json_value(&v["section_3_1"]["jwk"]).unwrap();
        assert_eq!(jwk.kid(), Some("2011-04-29"));
        assert_eq!(jwk.alg(), Some("RS256"));
        assert_eq!(
            jwk.thumbprint_sha256(),
            v["section_3_1"]["thumbprint_sha256"].as_str().unwrap()
        );
        assert_eq!(
            jwk.thumbprint_sha256(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn zero_prefixed_rsa_members_have_the_minimal_thumbprint() {
        let v = vectors(RFC7638);
        let mut jwk = v["section_3_1"]["jwk"].clone();
        for member in ["n", "e"] {
            let bytes = URL_SAFE_NO_PAD.decode(jwk[member].as_str().unwrap()).unwrap();
            let mut prefixed = vec![0u8];
            prefixed.extend_from_slice(&bytes);
            jwk[member] = Value::from(URL_SAFE_NO_PAD.encode(prefixed));
        }
        let jwk = Jwk::from_json_value(&jwk).unwrap();
        assert_eq!(
            jwk.thumbprint_sha256(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    // RFC 8037 Appendix A.3: thumbprint of the A.2 Ed25519 public key.
    #[test]
    fn rfc8037_appendix_a_3_okp_thumbprint() {
        let v = vectors(RFC8037);
        let jwk = Jwk::from_json_value(&v["A.2"]["public_jwk"]).unwrap();
        assert_eq!(jwk.kty(), "OKP");
        assert_eq!(jwk.crv(), Some("Ed25519"));
        assert_eq!(
            jwk.thumbprint_sha256(),
            v["A.3"]["thumbprint_sha256"].as_str().unwrap()
        );
    }

    #[test]
    fn thumbprint_ignores_optional_members_and_depends_on_the_key() {
        let v = vectors(RFC7515);
        let plain = Jwk::from_json_value(&v["A.3"]["public_jwk"]).unwrap();
        let mut decorated = v["A.3"]["public_jwk"].clone();
        decorated["kid"] = json!("k1");
        decorated["use"] = json!("sig");
        decorated["alg"] = json!("ES256");
        let decorated = Jwk::from_json_value(&decorated).unwrap();
        assert_eq!(plain.thumbprint_sha256(), decorated.thumbprint_sha256());
        let rsa = Jwk::from_json_value(&v["A.2"]["public_jwk"]).unwrap();
        assert_ne!(plain.thumbprint_sha256(), rsa.thumbprint_sha256());
        assert_eq!(plain.thumbprint_sha256().len(), 43);
    }

    #[test]
    fn compatibility_follows_key_type_curve_and_alg() {
        let v = vectors(RFC7515);
        let rsa = Jwk::from_json_value(&v["A.2"]["public_jwk"]).unwrap();
        let ec = Jwk::from_json_value(&v["A.3"]["public_jwk"]).unwrap();
        let ed = Jwk::from_json_value(&vectors(RFC8037)["A.2"]["public_jwk"]).unwrap();
        assert_eq!(rsa.rsa_modulus_bits(), Some(2048));
        assert_eq!(ec.rsa_modulus_bits(), None);
        let table = [
            (&rsa, [false, false, false, true, true]),
            (&ec, [false, true, false, false, false]),
            (&ed, [true, false, false, false, false]),
        ];
        for (key, expected) in table {
            for (alg, want) in Algorithm::ALL.into_iter().zip(expected) {
                assert_eq!(key.compatible_with(alg), want, "{key:?} with {alg}");
            }
        }

        let mut p384 = json!({"kty": "EC", "crv": "P-384", "x": b64(&[1; 48]), "y": b64(&[2; 48])});
        let key = Jwk::from_json_value(&p384).unwrap();
        assert!(key.compatible_with(Algorithm::ES384));
        assert!(!key.compatible_with(Algorithm::ES256));
        p384["alg"] = json!("ES256");
        assert!(
            !Jwk::from_json_value(&p384)
                .unwrap()
                .compatible_with(Algorithm::ES384)
        );
    }

    #[test]
    fn key_alg_restricts_the_key_to_that_algorithm() {
        let mut jwk = vectors(RFC7515)["A.2"]["public_jwk"].clone();
        jwk["alg"] = json!("RS256");
        let key = Jwk::from_json_value(&jwk).unwrap();
        assert!(key.compatible_with(Algorithm::RS256));
        assert!(!key.compatible_with(Algorithm::PS256));
        // An alg this crate does not know makes the key unusable, not an error.
        jwk["alg"] = json!("RS512");
        let key = Jwk::from_json_value(&jwk).unwrap();
        assert!(Algorithm::ALL.iter().all(|a| !key.compatible_with(*a)));
        jwk["alg"] = json!("HS256");
        let key = Jwk::from_json_value(&jwk).unwrap();
        assert!(Algorithm::ALL.iter().all(|a| !key.compatible_with(*a)));
    }

    #[test]
    fn use_and_key_ops_must_permit_verification() {
        let base = vectors(RFC8037)["A.2"]["public_jwk"].clone();
        let with = |member: &str, value: Value| {
            let mut jwk = base.clone();
            jwk[member] = value;
            Jwk::from_json_value(&jwk)
                .unwrap()
                .compatible_with(Algorithm::EdDSA)
        };
        assert!(with("use", json!("sig")));
        assert!(!with("use", json!("enc")));
        assert!(with("key_ops", json!(["verify"])));
        assert!(with("key_ops", json!(["sign", "verify"])));
        assert!(!with("key_ops", json!(["encrypt"])));
        assert!(!with("key_ops", json!([])));

        let mut jwk = base.clone();
        jwk["key_ops"] = json!("verify");
        assert_eq!(
            Jwk::from_json_value(&jwk).unwrap_err(),
            JwkError::InvalidMember("key_ops")
        );
        let mut jwk = base;
        jwk["use"] = json!(1);
        assert_eq!(
            Jwk::from_json_value(&jwk).unwrap_err(),
            JwkError::InvalidMember("use")
        );
    }

    #[test]
    fn jwks_with_rsa_1024_bit_key_is_rejected() {
        let doc = json!({"keys": [rsa_jwk_of_bits(1024)]}).to_string();
        let err = Jwks::from_json(doc.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            JwkError::Entry {
                index: 0,
                reason: Box::new(JwkError::RsaModulusTooSmall { bits: 1024 })
            }
        );
        assert_eq!(*err.cause(), JwkError::RsaModulusTooSmall { bits: 1024 });
        // One bit short is short.
        assert_eq!(
            Jwk::from_json_value(&rsa_jwk_of_bits(2047)).unwrap_err(),
            JwkError::RsaModulusTooSmall { bits: 2047 }
        );
        assert!(Jwk::from_json_value(&rsa_jwk_of_bits(2048)).is_ok());
        assert!(Jwk::from_json_value(&rsa_jwk_of_bits(8192)).is_ok());
        assert_eq!(
            Jwk::from_json_value(&rsa_jwk_of_bits(8200)).unwrap_err(),
            JwkError::RsaModulusTooLarge { bits: 8200 }
        );
    }

    #[test]
    fn rsa_modulus_with_leading_zero_octet_is_accepted() {
        let jwk = vectors(RFC7515)["A.2"]["public_jwk"].clone();
        let mut n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        n.insert(0, 0);
        let key = Jwk::from_json_value(&json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"})).unwrap();
        assert_eq!(key.rsa_modulus_bits(), Some(2048));
    }

    #[test]
    fn rsa_bad_exponents_and_even_modulus_are_rejected() {
        let jwk = vectors(RFC7515)["A.2"]["public_jwk"].clone();
        for e in [
            vec![1u8],
            vec![2],
            vec![0],
            vec![],
            vec![1, 0, 0, 0, 0, 1],
            vec![0x10, 0, 0, 0, 1],
        ] {
            let mut bad = jwk.clone();
            bad["e"] = json!(b64(&e));
            assert_eq!(
                Jwk::from_json_value(&bad).unwrap_err(),
                JwkError::InvalidRsaExponent,
                "e = {e:?}"
            );
        }
        let mut bad = jwk.clone();
        bad["e"] = json!(b64(&[3]));
        assert!(Jwk::from_json_value(&bad).is_ok());
        let mut n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        *n.last_mut().unwrap() &= 0xfe;
        let mut bad = jwk;
        bad["n"] = json!(b64(&n));
        assert_eq!(
            Jwk::from_json_value(&bad).unwrap_err(),
            JwkError::InvalidMember("n")
        );
    }

    #[test]
    fn jwks_with_private_d_is_rejected() {
        let v = vectors(RFC8037);
        let doc = json!({"keys": [v["A.2"]["public_jwk"], v["A.1"]["private_jwk"]]}).to_string();
        let err = Jwks::from_json(doc.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            JwkError::Entry {
                index: 1,
                reason: Box::new(JwkError::PrivateKeyMaterial)
            }
        );
    }

    #[test]
    fn every_private_member_and_symmetric_keys_are_rejected() {
        let base = vectors(RFC7515)["A.2"]["public_jwk"].clone();
        for member in PRIVATE_MEMBERS {
            let mut jwk = base.clone();
            jwk[member] = json!("AQAB");
            assert_eq!(
                Jwk::from_json_value(&jwk).unwrap_err(),
                JwkError::PrivateKeyMaterial,
                "{member}"
            );
        }
        let oct = json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string();
        assert_eq!(
            Jwks::from_json(oct.as_bytes()).unwrap_err().cause(),
            &JwkError::PrivateKeyMaterial
        );
    }

    #[test]
    fn jwks_skips_unknown_kty_and_unsupported_curves() {
        let v = vectors(RFC7515);
        let doc = json!({"keys": [
            {"kty": "XYZ", "kid": "future", "d": "whatever"},
            v["A.2"]["public_jwk"],
            {"kty": "OKP", "crv": "X25519", "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "no-k"},
            v["A.3"]["public_jwk"],
        ]})
        .to_string();
        let jwks = Jwks::from_json(doc.as_bytes()).unwrap();
        assert_eq!(jwks.len(), 2);
        assert_eq!(jwks.skipped(), 4);
        assert_eq!(jwks.keys()[0].kty(), "RSA");
        assert_eq!(jwks.keys()[1].kty(), "EC");
        // A single JWK of such a type is an error naming it.
        assert_eq!(
            Jwk::from_json_value(&json!({"kty": "XYZ"})).unwrap_err(),
            JwkError::UnsupportedKeyType("XYZ".into())
        );
        assert_eq!(
            Jwk::from_json_value(&json!({"kty": "EC", "crv": "P-521"})).unwrap_err(),
            JwkError::UnsupportedCurve {
                kty: "EC",
                crv: "P-521".into()
            }
        );
    }

    #[test]
    fn ec_key_with_wrong_coordinate_length_is_rejected() {
        let v = vectors(RFC7515);
        let mut jwk = v["A.3"]["public_jwk"].clone();
        jwk["x"] = json!(b64(&[7; 31]));
        assert_eq!(
            Jwk::from_json_value(&jwk).unwrap_err(),
            JwkError::InvalidLength {
                member: "x",
                expected: 32,
                found: 31
            }
        );
        let mut jwk = v["A.3"]["public_jwk"].clone();
        jwk["y"] = json!(b64(&[7; 33]));
        let doc = json!({"keys": [jwk]}).to_string();
        assert_eq!(
            Jwks::from_json(doc.as_bytes()).unwrap_err(),
            JwkError::Entry {
                index: 0,
                reason: Box::new(JwkError::InvalidLength {
                    member: "y",
                    expected: 32,
                    found: 33
                })
            }
        );
        // P-384 wants 48 bytes; a P-256-sized coordinate is not enough.
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
        assert!(matches!(
            Jwk::from_json_value(&p384).unwrap_err(),
            JwkError::InvalidLength { expected: 48, .. }
        ));
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 31])});
        assert!(matches!(
            Jwk::from_json_value(&ed).unwrap_err(),
            JwkError::InvalidLength { expected: 32, .. }
        ));
    }

    #[test]
    fn malformed_members_are_errors() {
        let v = vectors(RFC7515);
        let ec = v["A.3"]["public_jwk"].clone();
        let x = ec["x"].as_str().unwrap().to_owned();
        let y = ec["y"].as_str().unwrap().to_owned();
        assert!(y.contains('_'));
        let mut padded = ec.clone();
        padded["x"] = json!(format!("{x}="));
        let mut std_alphabet = ec.clone();
        std_alphabet["y"] = json!(y.replace('_', "/").replace('-', "+"));
        let mut missing = ec.clone();
        missing.as_object_mut().unwrap().remove("y");
        let mut kid_number = ec.clone();
        kid_number["kid"] = json!(7);
        let cases = [
            (padded, JwkError::InvalidMember("x")),
            (missing, JwkError::MissingMember("y")),
            (kid_number, JwkError::InvalidMember("kid")),
            (json!({"crv": "P-256"}), JwkError::MissingMember("kty")),
            (json!({"kty": 1}), JwkError::InvalidMember("kty")),
            (json!([1, 2]), JwkError::NotAnObject),
        ];
        for (jwk, err) in cases {
            assert_eq!(Jwk::from_json_value(&jwk).unwrap_err(), err, "{jwk}");
        }
        assert_eq!(
            Jwk::from_json_value(&std_alphabet).unwrap_err(),
            JwkError::InvalidMember("y")
        );
    }

    #[test]
    fn jwks_document_shape_is_checked() {
        assert!(matches!(
            Jwks::from_json(b"{").unwrap_err(),
            JwkError::InvalidJson(_)
        ));
        for doc in [&b"[]"[..], b"{}", b"{\"keys\": {}}", b"\"keys\""] {
            assert_eq!(Jwks::from_json(doc).unwrap_err(), JwkError::NotAKeySet);
        }
        let empty = Jwks::from_json(b"{\"keys\": []}").unwrap();
        assert!(empty.is_empty());
        assert_eq!(
            Jwks::from_json(b"{\"keys\": [1]}").unwrap_err(),
            JwkError::Entry {
                index: 0,
                reason: Box::new(JwkError::NotAnObject)
            }
        );
    }

    #[test]
    fn find_selects_by_kid_and_compatibility() {
        let v = vectors(RFC7515);
        let mut rsa_a = v["A.2"]["public_jwk"].clone();
        rsa_a["kid"] = json!("a");
        let mut rsa_b = v["A.2"]["public_jwk"].clone();
        rsa_b["kid"] = json!("b");
        let mut ec_a = v["A.3"]["public_jwk"].clone();
        ec_a["kid"] = json!("a");
        let ed = vectors(RFC8037)["A.2"]["public_jwk"].clone();
        let jwks = Jwks::from_json(json!({"keys": [rsa_a, rsa_b, ec_a, ed]}).to_string().as_bytes()).unwrap();
        let kids = |kid: Option<&str>, alg| -> Vec<(Option<String>, &str)> {
            jwks.find(kid, alg)
                .map(|k| (k.kid().map(str::to_owned), k.kty()))
                .collect()
        };
        assert_eq!(kids(Some("a"), Algorithm::RS256), [(Some("a".into()), "RSA")]);
        assert_eq!(kids(Some("a"), Algorithm::ES256), [(Some("a".into()), "EC")]);
        assert_eq!(kids(Some("a"), Algorithm::EdDSA), []);
        assert_eq!(kids(Some("c"), Algorithm::RS256), []);
        assert_eq!(kids(None, Algorithm::PS256).len(), 2);
        assert_eq!(kids(None, Algorithm::EdDSA), [(None, "OKP")]);
        assert_eq!(kids(None, Algorithm::ES384), []);
    }

    #[test]
    fn debug_output_names_the_key_not_its_bytes() {
        let jwk = Jwk::from_json_value(&vectors(RFC7515)["A.3"]["public_jwk"]).unwrap();
        let shown = format!("{jwk:?}");
        assert!(shown.contains("EC") && shown.contains("P-256"), "{shown}");
    }
}
