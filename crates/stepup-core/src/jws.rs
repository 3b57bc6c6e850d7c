//! JSON Web Signatures in compact serialization (RFC 7515 §7.1), verified
//! against a configured [`Jwks`] under a [`VerificationPolicy`], following
//! the JWT BCP (RFC 8725).
//!
//! [`verify_compact`] is the resource server's hot path for JWT access tokens
//! (RFC 9068, `typ` `at+jwt`). It checks, in this order, and stops at the
//! first failure:
//!
//! 1. the token is at most [`MAX_TOKEN_LEN`] bytes, before decoding anything;
//! 2. it has exactly three dot-separated parts;
//! 3. the protected header is strict, unpadded base64url of a JSON object
//!    without duplicate members;
//! 4. the header names no key source (`jku`, `jwk`, `x5u`, `x5c`: keys come
//!    only from the configured JWK Set, RFC 8725 §3.10) and no `crit`
//!    extension (none is understood here, RFC 7515 §4.1.11);
//! 5. `alg` is present, is a supported asymmetric algorithm (never `none` nor
//!    `HS*`: RFC 8725 §3.1, §3.2) and is allowed by the policy;
//! 6. `typ` is the expected one (RFC 8725 §3.11, RFC 9068 §2.1);
//! 7. a key with the header's `kid` (or, without a `kid`, any key) fits the
//!    algorithm ([`JwsError::UnknownKey`] otherwise: callers may refresh their
//!    JWK Set on that error, and only on that one);
//! 8. the signature verifies with one of those keys
//!    ([`JwsError::BadSignature`] otherwise);
//! 9. only then is the payload decoded.
//!
//! No crypto runs before step 8, so an algorithm-confusion token (`HS256`
//! "signed" with the public key) never reaches a MAC.
//!
//! Signing ([`SigningKey`], [`sign_compact`]) exists for the authorization
//! server and for tests; randomness is always passed in.

use std::cell::Cell;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use thiserror::Error;

use crate::jwk::{Algorithm, Jwks, truncated};

/// The longest compact JWS accepted, in bytes (16 KiB). Longer input is
/// refused before anything is decoded.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The longest signature accepted, in bytes: an RSA-8192 signature.
const MAX_SIGNATURE_LEN: usize = 1024;
/// The longest base64url text of a signature of at most
/// [`MAX_SIGNATURE_LEN`] bytes.
const MAX_SIGNATURE_B64_LEN: usize = (MAX_SIGNATURE_LEN * 4).div_ceil(3);
/// Headers whose base64url text is at most this long are decoded on the stack.
const STACK_HEADER_B64_LEN: usize = 1024;

/// Which part of a compact JWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsPart {
    /// The protected header, first part.
    Header,
    /// The payload, second part.
    Payload,
    /// The signature, third part.
    Signature,
}

impl fmt::Display for JwsPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwsPart::Header => "header",
            JwsPart::Payload => "payload",
            JwsPart::Signature => "signature",
        })
    }
}

/// Why a JWS was not verified, or could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JwsError {
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("the token is {len} bytes long; at most {max} are accepted")]
    TooLong {
        /// The token's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is not three base64url parts separated by two dots.
    #[error("a compact JWS has exactly three dot-separated parts")]
    WrongNumberOfParts,
    /// A part is not unpadded base64url (RFC 7515 §2): padding, characters
    /// outside the URL-safe alphabet and non-canonical trailing bits are
    /// refused.
    #[error("the JWS {0} is not valid unpadded base64url")]
    InvalidBase64(JwsPart),
    /// The protected header is not a JSON object.
    #[error("the JWS protected header is not a JSON object")]
    HeaderNotJsonObject,
    /// A header member this crate reads has the wrong JSON type.
    #[error("the JWS header member {0:?} has the wrong type")]
    InvalidHeaderMember(&'static str),
    /// A header member this crate reads appears twice (RFC 7515 §4).
    #[error("the JWS header member {0:?} appears more than once")]
    DuplicateHeaderMember(&'static str),
    /// The header has no `alg` (RFC 7515 §4.1.1).
    #[error("the JWS header has no \"alg\"")]
    MissingAlgorithm,
    /// The `alg` is not one of [`Algorithm`]: `none`, every `HS*`, and any
    /// unknown name (cut to 64 bytes).
    #[error("unsupported JWS algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The `alg` is supported but the policy does not allow it.
    #[error("the JWS algorithm {0} is not allowed by the verification policy")]
    AlgorithmNotAllowed(Algorithm),
    /// The header has `crit`: this crate understands no extension, so it
    /// must reject every JWS that lists one (RFC 7515 §4.1.11).
    #[error("the JWS header lists critical extensions (\"crit\"), none of which are supported")]
    CriticalHeader,
    /// The header names its own key or key location (`jku`, `jwk`, `x5u`,
    /// `x5c`); keys come only from the configured JWK Set (RFC 8725 §3.10).
    #[error("the JWS header member {0:?} is refused: keys come only from the configured JWK Set")]
    ForbiddenHeaderMember(&'static str),
    /// The `typ` is missing or is not the expected media type.
    #[error("the JWS type is {found:?}; {expected:?} expected")]
    UnexpectedType {
        /// The media type the policy expects.
        expected: String,
        /// The `typ` found (cut to 64 bytes), if any.
        found: Option<String>,
    },
    /// No key of the JWK Set has this `kid` (or, without a `kid`, no key at
    /// all) and fits the algorithm. The JWK Set may be stale: refreshing it
    /// (rate-limited) is the usual answer.
    #[error("no key in the JWK Set fits the JWS (kid {kid:?})")]
    UnknownKey {
        /// The header's `kid`, if any.
        kid: Option<String>,
    },
    /// Keys fit the JWS, but its signature verifies with none of them
    /// (including a signature of the wrong length).
    #[error("the JWS signature does not verify")]
    BadSignature,
    /// *ring* rejected the private key (the reason is ring's).
    #[error("the signing key is rejected: {0}")]
    InvalidSigningKey(String),
    /// The constructor cannot make a key of this algorithm.
    #[error("this kind of key cannot sign with {0}")]
    KeyAlgorithmMismatch(Algorithm),
    /// Signing failed (in practice: the random number generator failed).
    #[error("signing failed")]
    SigningFailed,
}

/// A set of [`Algorithm`]s, as a bitset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AlgorithmSet(u8);

impl AlgorithmSet {
    const fn bit(alg: Algorithm) -> u8 {
        match alg {
            Algorithm::EdDSA => 1,
            Algorithm::ES256 => 1 << 1,
            Algorithm::ES384 => 1 << 2,
            Algorithm::RS256 => 1 << 3,
            Algorithm::PS256 => 1 << 4,
        }
    }

    /// No algorithm.
    pub const fn empty() -> Self {
        AlgorithmSet(0)
    }

    /// Every supported algorithm.
    pub const fn all() -> Self {
        AlgorithmSet(0b1_1111)
    }

    /// This set and `alg`.
    pub const fn with(self, alg: Algorithm) -> Self {
        AlgorithmSet(self.0 | Self::bit(alg))
    }

    /// Whether `alg` is in the set.
    pub const fn contains(self, alg: Algorithm) -> bool {
        self.0 & Self::bit(alg) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The algorithms of the set.
    pub fn iter(self) -> impl Iterator<Item = Algorithm> {
        Algorithm::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl FromIterator<Algorithm> for AlgorithmSet {
    fn from_iter<I: IntoIterator<Item = Algorithm>>(iter: I) -> Self {
        iter.into_iter().fold(AlgorithmSet::empty(), AlgorithmSet::with)
    }
}

/// What a JWS must satisfy, besides a valid signature by a configured key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationPolicy {
    allowed_algorithms: AlgorithmSet,
    expected_typ: Option<String>,
}

impl VerificationPolicy {
    /// Allows `allowed_algorithms` only, and when `expected_typ` is given
    /// requires that `typ` (see [`VerificationPolicy::typ_matches`]).
    pub fn new(allowed_algorithms: impl IntoIterator<Item = Algorithm>, expected_typ: Option<&str>) -> Self {
        VerificationPolicy {
            allowed_algorithms: allowed_algorithms.into_iter().collect(),
            expected_typ: expected_typ.map(str::to_owned),
        }
    }

    /// The policy for RFC 9068 JWT access tokens: `typ` must be `at+jwt`
    /// (RFC 9068 §2.1, §4).
    pub fn access_token(allowed_algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        Self::new(allowed_algorithms, Some("at+jwt"))
    }

    /// The allowed algorithms.
    pub fn allowed_algorithms(&self) -> AlgorithmSet {
        self.allowed_algorithms
    }

    /// The expected `typ`, if one is required.
    pub fn expected_typ(&self) -> Option<&str> {
        self.expected_typ.as_deref()
    }

    /// Whether a header `typ` satisfies the policy. With no expected type,
    /// anything (or nothing) does. Otherwise `typ` must be present and name
    /// the same media type: compared case-insensitively, with the
    /// `application/` prefix optional when no other `/` follows
    /// (RFC 7515 §4.1.9), so `at+jwt`, `AT+JWT` and `application/at+jwt`
    /// all match `at+jwt`.
    pub fn typ_matches(&self, typ: Option<&str>) -> bool {
        match (self.expected_typ.as_deref(), typ) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(expected), Some(found)) => {
                short_media_type(expected).eq_ignore_ascii_case(short_media_type(found))
            }
        }
    }
}

/// A media type with `application/` (any case) dropped when nothing else
/// has a `/` (RFC 7515 §4.1.9: `typ` values without `/` mean `application/…`).
fn short_media_type(media_type: &str) -> &str {
    const PREFIX: &str = "application/";
    match media_type.get(..PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(PREFIX) => {
            let rest = &media_type[PREFIX.len()..];
            if rest.contains('/') { media_type } else { rest }
        }
        _ => media_type,
    }
}

/// The protected header of a verified JWS: the members this crate reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    alg: Algorithm,
    typ: Option<String>,
    kid: Option<String>,
    cty: Option<String>,
}

impl JoseHeader {
    /// The algorithm (`alg`).
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The type (`typ`), as written in the header.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// The key ID (`kid`).
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The content type (`cty`).
    pub fn cty(&self) -> Option<&str> {
        self.cty.as_deref()
    }
}

/// A JWS whose signature verified under a [`VerificationPolicy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJws {
    header: JoseHeader,
    payload: Vec<u8>,
}

impl VerifiedJws {
    /// The protected header.
    pub fn header(&self) -> &JoseHeader {
        &self.header
    }

    /// The decoded payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The header and the decoded payload.
    pub fn into_parts(self) -> (JoseHeader, Vec<u8>) {
        (self.header, self.payload)
    }
}

/// Verifies a JWS in compact serialization with the keys of `keys` under
/// `policy`, and returns its header and decoded payload.
///
/// See the [module documentation](self) for the order of the checks. The
/// payload is returned as bytes: checking the claims is the caller's job.
pub fn verify_compact(
    token: &str,
    keys: &Jwks,
    policy: &VerificationPolicy,
) -> Result<VerifiedJws, JwsError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwsError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let (header_b64, rest) = token.split_once('.').ok_or(JwsError::WrongNumberOfParts)?;
    let (payload_b64, signature_b64) = rest.split_once('.').ok_or(JwsError::WrongNumberOfParts)?;
    if signature_b64.contains('.') {
        return Err(JwsError::WrongNumberOfParts);
    }
    // RFC 7515 §5.2 step 8: ASCII(BASE64URL(header) || '.' || BASE64URL(payload)).
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];

    let raw = decode_header(header_b64)?;
    let header = check_header(raw, policy)?;

    let mut signature_buf = [0u8; MAX_SIGNATURE_LEN + 2];
    let signature = decode_signature(signature_b64, &mut signature_buf)?;

    let (mut any_key, mut verified) = (false, false);
    for key in keys.find(header.kid(), header.alg) {
        any_key = true;
        if key.verify(header.alg, signing_input, signature) {
            verified = true;
            break;
        }
    }
    if !any_key {
        return Err(JwsError::UnknownKey { kid: header.kid });
    }
    if !verified {
        return Err(JwsError::BadSignature);
    }

    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| JwsError::InvalidBase64(JwsPart::Payload))?;
    Ok(VerifiedJws { header, payload })
}

fn decode_signature<'b>(
    signature_b64: &str,
    buf: &'b mut [u8; MAX_SIGNATURE_LEN + 2],
) -> Result<&'b [u8], JwsError> {
    if signature_b64.len() > MAX_SIGNATURE_B64_LEN {
        // Longer than any signature of any supported key.
        return Err(JwsError::BadSignature);
    }
    match URL_SAFE_NO_PAD.decode_slice(signature_b64, buf) {
        Ok(len) => Ok(&buf[..len]),
        Err(base64::DecodeSliceError::DecodeError(_)) => Err(JwsError::InvalidBase64(JwsPart::Signature)),
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => Err(JwsError::BadSignature),
    }
}

fn decode_header(header_b64: &str) -> Result<RawHeader, JwsError> {
    let invalid = |_| JwsError::InvalidBase64(JwsPart::Header);
    if header_b64.len() <= STACK_HEADER_B64_LEN {
        let mut buf = [0u8; STACK_HEADER_B64_LEN];
        let len = URL_SAFE_NO_PAD
            .decode_slice(header_b64, &mut buf)
            .map_err(|e| match e {
                base64::DecodeSliceError::DecodeError(e) => invalid(e),
                base64::DecodeSliceError::OutputSliceTooSmall => JwsError::HeaderNotJsonObject,
            })?;
        parse_header(&buf[..len])
    } else {
        let bytes = URL_SAFE_NO_PAD.decode(header_b64).map_err(invalid)?;
        parse_header(&bytes)
    }
}

/// The header members this crate looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Alg,
    Typ,
    Kid,
    Cty,
    Crit,
    Jku,
    Jwk,
    X5u,
    X5c,
    Other,
}

impl Member {
    fn from_name(name: &str) -> Member {
        match name {
            "alg" => Member::Alg,
            "typ" => Member::Typ,
            "kid" => Member::Kid,
            "cty" => Member::Cty,
            "crit" => Member::Crit,
            "jku" => Member::Jku,
            "jwk" => Member::Jwk,
            "x5u" => Member::X5u,
            "x5c" => Member::X5c,
            _ => Member::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Member::Alg => "alg",
            Member::Typ => "typ",
            Member::Kid => "kid",
            Member::Cty => "cty",
            Member::Crit => "crit",
            Member::Jku => "jku",
            Member::Jwk => "jwk",
            Member::X5u => "x5u",
            Member::X5c => "x5c",
            Member::Other => "",
        }
    }
}

/// A header member name, classified without allocating.
struct MemberName(Member);

impl<'de> Deserialize<'de> for MemberName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = MemberName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header member name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MemberName, E> {
                Ok(MemberName(Member::from_name(v)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// The `alg` value: a supported algorithm, or the (cut) name of another.
enum AlgValue {
    Supported(Algorithm),
    Unsupported(String),
}

impl<'de> Deserialize<'de> for AlgValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AlgVisitor;
        impl Visitor<'_> for AlgVisitor {
            type Value = AlgValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an algorithm name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AlgValue, E> {
                Ok(Algorithm::from_name(v)
                    .map_or_else(|| AlgValue::Unsupported(truncated(v)), AlgValue::Supported))
            }
        }
        deserializer.deserialize_str(AlgVisitor)
    }
}

/// The header as parsed, before any judgement.
#[derive(Default)]
struct RawHeader {
    alg: Option<AlgValue>,
    typ: Option<String>,
    kid: Option<String>,
    cty: Option<String>,
    crit: bool,
    /// The first key-source member seen (`jku`, `jwk`, `x5u`, `x5c`).
    forbidden: Option<&'static str>,
    /// The first read member seen twice.
    duplicate: Option<&'static str>,
}

/// Reads a header object, noting in `current` the member being read so that
/// a type error can name it.
struct HeaderVisitor<'c> {
    current: &'c Cell<&'static str>,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let mut header = RawHeader::default();
        let mut seen = 0u16;
        while let Some(MemberName(member)) = map.next_key()? {
            if member != Member::Other {
                let bit = 1u16 << (member as u16);
                if seen & bit != 0 && header.duplicate.is_none() {
                    header.duplicate = Some(member.name());
                }
                seen |= bit;
            }
            self.current.set(member.name());
            match member {
                Member::Alg => header.alg = Some(map.next_value()?),
                Member::Typ => header.typ = Some(map.next_value()?),
                Member::Kid => header.kid = Some(map.next_value()?),
                Member::Cty => header.cty = Some(map.next_value()?),
                Member::Crit => {
                    map.next_value::<IgnoredAny>()?;
                    header.crit = true;
                }
                Member::Jku | Member::Jwk | Member::X5u | Member::X5c => {
                    map.next_value::<IgnoredAny>()?;
                    header.forbidden.get_or_insert(member.name());
                }
                Member::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            self.current.set("");
        }
        Ok(header)
    }
}

fn parse_header(json: &[u8]) -> Result<RawHeader, JwsError> {
    let first = json.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if first != Some(&b'{') {
        return Err(JwsError::HeaderNotJsonObject);
    }
    let current = Cell::new("");
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    deserializer
        .deserialize_map(HeaderVisitor { current: &current })
        .and_then(|header| deserializer.end().map(|()| header))
        .map_err(|e| match (e.classify(), current.get()) {
            (serde_json::error::Category::Data, member) if !member.is_empty() => {
                JwsError::InvalidHeaderMember(member)
            }
            _ => JwsError::HeaderNotJsonObject,
        })
}

fn check_header(raw: RawHeader, policy: &VerificationPolicy) -> Result<JoseHeader, JwsError> {
    if let Some(member) = raw.duplicate {
        return Err(JwsError::DuplicateHeaderMember(member));
    }
    if let Some(member) = raw.forbidden {
        return Err(JwsError::ForbiddenHeaderMember(member));
    }
    if raw.crit {
        return Err(JwsError::CriticalHeader);
    }
    let alg = match raw.alg {
        None => return Err(JwsError::MissingAlgorithm),
        Some(AlgValue::Unsupported(name)) => return Err(JwsError::UnsupportedAlgorithm(name)),
        Some(AlgValue::Supported(alg)) => alg,
    };
    if !policy.allowed_algorithms.contains(alg) {
        return Err(JwsError::AlgorithmNotAllowed(alg));
    }
    if !policy.typ_matches(raw.typ.as_deref()) {
        return Err(JwsError::UnexpectedType {
            expected: policy.expected_typ.clone().unwrap_or_default(),
            found: raw.typ.as_deref().map(truncated),
        });
    }
    Ok(JoseHeader {
        alg,
        typ: raw.typ,
        kid: raw.kid,
        cty: raw.cty,
    })
}

/// The private half of a key pair, ready to sign.
enum KeyPairInner {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key that signs JWSs with one [`Algorithm`].
///
/// Its `Debug` output shows the algorithm only, never key material.
pub struct SigningKey {
    alg: Algorithm,
    pair: KeyPairInner,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("key", &format_args!("[redacted]"))
            .finish()
    }
}

fn rejected(e: ring::error::KeyRejected) -> JwsError {
    JwsError::InvalidSigningKey(e.to_string())
}

impl SigningKey {
    /// Loads an unencrypted PKCS#8 (DER) private key for `alg`: an Ed25519
    /// key (PKCS#8 v1 or v2) for `EdDSA`, a P-256 or P-384 key for `ES256` /
    /// `ES384`, an RSA key of 2048 to 4096 bits for `RS256` / `PS256`.
    /// `rng` seeds the ECDSA nonce hedging.
    pub fn from_pkcs8(
        alg: Algorithm,
        pkcs8_der: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<SigningKey, JwsError> {
        let pair = match alg {
            Algorithm::EdDSA => KeyPairInner::Ed25519(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8_der).map_err(rejected)?,
            ),
            Algorithm::ES256 => KeyPairInner::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8_der, rng)
                    .map_err(rejected)?,
            ),
            Algorithm::ES384 => KeyPairInner::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8_der, rng)
                    .map_err(rejected)?,
            ),
            Algorithm::RS256 | Algorithm::PS256 => {
                KeyPairInner::Rsa(RsaKeyPair::from_pkcs8(pkcs8_der).map_err(rejected)?)
            }
        };
        Ok(SigningKey { alg, pair })
    }

    /// An `EdDSA` key from its 32-byte seed (the JWK `d`, RFC 8037 §2) and
    /// its 32-byte public key (the JWK `x`), checked against each other.
    pub fn ed25519_from_seed(seed: &[u8], public_key: &[u8]) -> Result<SigningKey, JwsError> {
        let pair = Ed25519KeyPair::from_seed_and_public_key(seed, public_key).map_err(rejected)?;
        Ok(SigningKey {
            alg: Algorithm::EdDSA,
            pair: KeyPairInner::Ed25519(pair),
        })
    }

    /// An `RS256` or `PS256` key from its components (big-endian bytes, as
    /// the JWK members `n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi` decode to).
    pub fn rsa_from_components<B: AsRef<[u8]>>(
        alg: Algorithm,
        components: &ring::rsa::KeyPairComponents<B>,
    ) -> Result<SigningKey, JwsError> {
        if !matches!(alg, Algorithm::RS256 | Algorithm::PS256) {
            return Err(JwsError::KeyAlgorithmMismatch(alg));
        }
        let pair = RsaKeyPair::from_components(components).map_err(rejected)?;
        Ok(SigningKey {
            alg,
            pair: KeyPairInner::Rsa(pair),
        })
    }

    /// A new random `EdDSA` (Ed25519) key.
    pub fn generate_ed25519(rng: &dyn SecureRandom) -> Result<SigningKey, JwsError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(rng).map_err(|_| JwsError::SigningFailed)?;
        Self::from_pkcs8(Algorithm::EdDSA, pkcs8.as_ref(), rng)
    }

    /// A new random `ES256` (P-256) key.
    pub fn generate_es256(rng: &dyn SecureRandom) -> Result<SigningKey, JwsError> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, rng)
            .map_err(|_| JwsError::SigningFailed)?;
        Self::from_pkcs8(Algorithm::ES256, pkcs8.as_ref(), rng)
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The public JWK to publish in a JWK Set: `kty`, the curve or modulus
    /// members, `alg`, `use` `sig`, and `kid` when given.
    pub fn public_jwk(&self, kid: Option<&str>) -> Value {
        let b64 = |bytes: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(bytes));
        let mut jwk = serde_json::Map::new();
        match &self.pair {
            KeyPairInner::Ed25519(pair) => {
                jwk.insert("kty".into(), "OKP".into());
                jwk.insert("crv".into(), "Ed25519".into());
                jwk.insert("x".into(), b64(pair.public_key().as_ref()));
            }
            KeyPairInner::Ecdsa(pair) => {
                // SEC 1 uncompressed point: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let coordinates = point.get(1..).unwrap_or_default();
                let (x, y) = coordinates.split_at(coordinates.len() / 2);
                let crv = if self.alg == Algorithm::ES384 {
                    "P-384"
                } else {
                    "P-256"
                };
                jwk.insert("kty".into(), "EC".into());
                jwk.insert("crv".into(), crv.into());
                jwk.insert("x".into(), b64(x));
                jwk.insert("y".into(), b64(y));
            }
            KeyPairInner::Rsa(pair) => {
                let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
                jwk.insert("kty".into(), "RSA".into());
                jwk.insert("n".into(), b64(&public.n));
                jwk.insert("e".into(), b64(&public.e));
            }
        }
        jwk.insert("alg".into(), self.alg.as_str().into());
        jwk.insert("use".into(), "sig".into());
        if let Some(kid) = kid {
            jwk.insert("kid".into(), kid.into());
        }
        Value::Object(jwk)
    }

    fn sign(&self, message: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, JwsError> {
        match &self.pair {
            KeyPairInner::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            KeyPairInner::Ecdsa(pair) => pair
                .sign(rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JwsError::SigningFailed),
            KeyPairInner::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(padding, rng, message, &mut sig)
                    .map_err(|_| JwsError::SigningFailed)?;
                Ok(sig)
            }
        }
    }
}

/// The protected header members a signer chooses; `alg` always comes from
/// the [`SigningKey`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigningHeader<'a> {
    typ: Option<&'a str>,
    kid: Option<&'a str>,
    cty: Option<&'a str>,
    jwk: Option<&'a serde_json::Value>,
}

impl<'a> SigningHeader<'a> {
    /// A header with `alg` only.
    pub const fn new() -> Self {
        SigningHeader {
            typ: None,
            kid: None,
            cty: None,
            jwk: None,
        }
    }

    /// Sets `jwk`: the public key itself, as DPoP proofs carry it.
    pub const fn jwk(mut self, jwk: &'a serde_json::Value) -> Self {
        self.jwk = Some(jwk);
        self
    }

    /// Sets `typ` (for an RFC 9068 access token: `at+jwt`).
    pub const fn typ(mut self, typ: &'a str) -> Self {
        self.typ = Some(typ);
        self
    }

    /// Sets `kid`.
    pub const fn kid(mut self, kid: &'a str) -> Self {
        self.kid = Some(kid);
        self
    }

    /// Sets `cty`.
    pub const fn cty(mut self, cty: &'a str) -> Self {
        self.cty = Some(cty);
        self
    }
}

/// The serialized header: `alg` first, then the optional members.
#[derive(serde::Serialize)]
struct HeaderOut<'a> {
    alg: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    typ: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cty: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwk: Option<&'a serde_json::Value>,
}

/// Signs `payload` with `key` and returns the compact JWS. The header is
/// `{"alg":…}` with the key's algorithm, followed by `typ`, `kid` and `cty`
/// when set. `rng` is used by ECDSA nonces and PSS salts.
pub fn sign_compact(
    header: &SigningHeader<'_>,
    payload: &[u8],
    key: &SigningKey,
    rng: &dyn SecureRandom,
) -> Result<String, JwsError> {
    let header_json = serde_json::to_vec(&HeaderOut {
        alg: key.alg.as_str(),
        typ: header.typ,
        kid: header.kid,
        cty: header.cty,
        jwk: header.jwk,
    })
    .map_err(|_| JwsError::SigningFailed)?;
    let mut token =
        String::with_capacity((header_json.len() + payload.len()) * 4 / 3 + MAX_SIGNATURE_B64_LEN / 2 + 8);
    URL_SAFE_NO_PAD.encode_string(&header_json, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut token);
    let signature = key.sign(token.as_bytes(), rng)?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::jwk::Jwk;
    use proptest::prelude::*;
    use ring::rand::SystemRandom;
    use serde_json::json;

    const RFC7515: &str = include_str!("../tests/vectors/rfc7515.json");
    const RFC8037: &str = include_str!("../tests/vectors/rfc8037.json");

    fn vectors(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn unb64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    fn jwks(keys: &[Value]) -> Jwks {
        Jwks::from_json(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn any_typ() -> VerificationPolicy {
        VerificationPolicy::new(Algorithm::ALL, None)
    }

    /// The RFC 7515 A.2 public JWK, with extra members.
    fn rsa_public(extra: Value) -> Value {
        let mut jwk = vectors(RFC7515)["A.2"]["public_jwk"].clone();
        for (k, v) in extra.as_object().unwrap() {
            jwk[k] = v.clone();
        }
        jwk
    }

    /// The RFC 7515 A.2 private key, from its JWK components.
    fn rsa_a2_key(alg: Algorithm) -> SigningKey {
        let v = vectors(RFC7515);
        let public = &v["A.2"]["public_jwk"];
        let private = &v["A.2"]["private_members"];
        let get = |obj: &Value, m: &str| unb64(obj[m].as_str().unwrap());
        let components = ring::rsa::KeyPairComponents {
            public_key: ring::rsa::PublicKeyComponents {
                n: get(public, "n"),
                e: get(public, "e"),
            },
            d: get(private, "d"),
            p: get(private, "p"),
            q: get(private, "q"),
            dP: get(private, "dp"),
            dQ: get(private, "dq"),
            qInv: get(private, "qi"),
        };
        SigningKey::rsa_from_components(alg, &components).unwrap()
    }

    /// The RFC 8037 A.1 Ed25519 private key.
    fn ed25519_a1_key() -> SigningKey {
        let jwk = &vectors(RFC8037)["A.1"]["private_jwk"];
        SigningKey::ed25519_from_seed(
            &unb64(jwk["d"].as_str().unwrap()),
            &unb64(jwk["x"].as_str().unwrap()),
        )
        .unwrap()
    }

    /// A token with `header` (raw JSON text), `payload` and `signature`.
    fn token(header: &str, payload: &[u8], signature: &[u8]) -> String {
        format!("{}.{}.{}", b64(header.as_bytes()), b64(payload), b64(signature))
    }

    /// A token with `header` (raw JSON text) validly signed by `key`.
    fn signed(header: &str, payload: &[u8], key: &SigningKey) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload));
        let sig = key.sign(input.as_bytes(), &SystemRandom::new()).unwrap();
        format!("{input}.{}", b64(&sig))
    }

    fn ed_setup() -> (SigningKey, Jwks) {
        let key = ed25519_a1_key();
        let keys = jwks(&[key.public_jwk(Some("ed"))]);
        (key, keys)
    }

    // RFC 7515 Appendix A.2.2: verify the RS256 example with the A.2 public key.
    #[test]
    fn rfc7515_appendix_a_2_rs256_verifies() {
        let v = vectors(RFC7515);
        let keys = jwks(&[v["A.2"]["public_jwk"].clone()]);
        let verified = verify_compact(v["A.2"]["jws"].as_str().unwrap(), &keys, &any_typ()).unwrap();
        assert_eq!(verified.header().alg(), Algorithm::RS256);
        assert_eq!(verified.header().typ(), None);
        assert_eq!(
            verified.payload(),
            unb64(v["A.2"]["payload_b64"].as_str().unwrap())
        );
        assert!(verified.payload().starts_with(b"{\"iss\":\"joe\",\r\n"));
    }

    // RFC 7515 Appendix A.2.1: RS256 is deterministic, so signing the example
    // payload with the A.2 private key gives the RFC's exact JWS.
    #[test]
    fn rfc7515_appendix_a_2_rs256_signs_exactly() {
        let v = vectors(RFC7515);
        let key = rsa_a2_key(Algorithm::RS256);
        let payload = unb64(v["A.2"]["payload_b64"].as_str().unwrap());
        let jws = sign_compact(&SigningHeader::new(), &payload, &key, &SystemRandom::new()).unwrap();
        assert_eq!(jws, v["A.2"]["jws"].as_str().unwrap());
        // The published key is the one the key pair derives.
        let published = Jwk::from_json_value(&v["A.2"]["public_jwk"]).unwrap();
        let derived = Jwk::from_json_value(&key.public_jwk(None)).unwrap();
        assert_eq!(published.thumbprint_sha256(), derived.thumbprint_sha256());
    }

    // RFC 7515 Appendix A.3.2: verify the ES256 example with the A.3 public key.
    #[test]
    fn rfc7515_appendix_a_3_es256_verifies() {
        let v = vectors(RFC7515);
        let keys = jwks(&[v["A.3"]["public_jwk"].clone()]);
        let verified = verify_compact(v["A.3"]["jws"].as_str().unwrap(), &keys, &any_typ()).unwrap();
        assert_eq!(verified.header().alg(), Algorithm::ES256);
        assert!(
            verified
                .payload()
                .ends_with(b"\"http://example.com/is_root\":true}")
        );
    }

    // RFC 8037 Appendix A.4 (and A.5): verify the Ed25519 example with the
    // A.2 public key.
    #[test]
    fn rfc8037_appendix_a_4_ed25519_verifies() {
        let v = vectors(RFC8037);
        let keys = jwks(&[v["A.2"]["public_jwk"].clone()]);
        let verified = verify_compact(v["A.4"]["jws"].as_str().unwrap(), &keys, &any_typ()).unwrap();
        assert_eq!(verified.header().alg(), Algorithm::EdDSA);
        assert_eq!(
            verified.payload(),
            v["A.4"]["payload"].as_str().unwrap().as_bytes()
        );
    }

    // RFC 8037 Appendix A.4: Ed25519 is deterministic, so signing with the
    // A.1 private key gives the RFC's exact JWS.
    #[test]
    fn rfc8037_appendix_a_4_ed25519_signs_exactly() {
        let v = vectors(RFC8037);
        let key = ed25519_a1_key();
        let jws = sign_compact(
            &SigningHeader::new(),
            v["A.4"]["payload"].as_str().unwrap().as_bytes(),
            &key,
            &SystemRandom::new(),
        )
        .unwrap();
        assert_eq!(jws, v["A.4"]["jws"].as_str().unwrap());
        let mut public = key.public_jwk(None);
        assert_eq!(public["x"], v["A.2"]["public_jwk"]["x"]);
        public
            .as_object_mut()
            .unwrap()
            .retain(|k, _| k == "kty" || k == "crv" || k == "x");
        assert_eq!(public, v["A.2"]["public_jwk"]);
    }

    #[test]
    fn alg_none_is_rejected() {
        let (_, keys) = ed_setup();
        // RFC 7515 Appendix A.5: an Unsecured JWS has an empty signature.
        let t = token(r#"{"alg":"none"}"#, b"{}", b"");
        assert!(t.ends_with('.'));
        assert_eq!(
            verify_compact(&t, &keys, &any_typ()),
            Err(JwsError::UnsupportedAlgorithm("none".into()))
        );
        for alg in ["None", "NONE", "nOnE"] {
            let t = token(&format!(r#"{{"alg":"{alg}"}}"#), b"{}", b"");
            assert_eq!(
                verify_compact(&t, &keys, &any_typ()),
                Err(JwsError::UnsupportedAlgorithm(alg.into()))
            );
        }
    }

    // RFC 8725 §2.1: the classic confusion attack, a MAC keyed with the
    // verifier's RSA public key. Rejected on `alg`, before any crypto.
    #[test]
    fn hs256_keyed_with_the_rsa_public_key_is_rejected() {
        let public = rsa_public(json!({"kid": "rsa"}));
        let keys = jwks(std::slice::from_ref(&public));
        let n = unb64(public["n"].as_str().unwrap());
        for (alg, secret) in [
            ("HS256", n.clone()),
            ("HS256", public.to_string().into_bytes()),
            ("HS384", n.clone()),
            ("HS512", n),
        ] {
            let header = format!(r#"{{"alg":"{alg}","kid":"rsa"}}"#);
            let input = format!("{}.{}", b64(header.as_bytes()), b64(b"{\"sub\":\"mallory\"}"));
            let mac_alg = match alg {
                "HS256" => ring::hmac::HMAC_SHA256,
                "HS384" => ring::hmac::HMAC_SHA384,
                _ => ring::hmac::HMAC_SHA512,
            };
            let mac = ring::hmac::sign(&ring::hmac::Key::new(mac_alg, &secret), input.as_bytes());
            let t = format!("{input}.{}", b64(mac.as_ref()));
            assert_eq!(
                verify_compact(&t, &keys, &any_typ()),
                Err(JwsError::UnsupportedAlgorithm(alg.into()))
            );
        }
    }

    #[test]
    fn missing_and_unknown_alg_are_rejected() {
        let (_, keys) = ed_setup();
        let cases = [
            (r#"{"typ":"JWT"}"#, JwsError::MissingAlgorithm),
            (
                r#"{"alg":"ES512"}"#,
                JwsError::UnsupportedAlgorithm("ES512".into()),
            ),
            (
                r#"{"alg":"eddsa"}"#,
                JwsError::UnsupportedAlgorithm("eddsa".into()),
            ),
            (r#"{"alg":""}"#, JwsError::UnsupportedAlgorithm(String::new())),
            (r#"{"alg":null}"#, JwsError::InvalidHeaderMember("alg")),
            (r#"{"alg":["EdDSA"]}"#, JwsError::InvalidHeaderMember("alg")),
        ];
        for (header, err) in cases {
            assert_eq!(
                verify_compact(&token(header, b"{}", &[0; 64]), &keys, &any_typ()),
                Err(err),
                "{header}"
            );
        }
        let long = format!(r#"{{"alg":"{}"}}"#, "X".repeat(500));
        assert_eq!(
            verify_compact(&token(&long, b"{}", &[0; 64]), &keys, &any_typ()),
            Err(JwsError::UnsupportedAlgorithm("X".repeat(64)))
        );
    }

    #[test]
    fn alg_supported_but_not_allowed_by_policy_is_rejected() {
        let (key, keys) = ed_setup();
        let t = signed(r#"{"alg":"EdDSA","kid":"ed"}"#, b"{}", &key);
        assert!(verify_compact(&t, &keys, &any_typ()).is_ok());
        let rsa_only = VerificationPolicy::new([Algorithm::RS256, Algorithm::PS256], None);
        assert_eq!(
            verify_compact(&t, &keys, &rsa_only),
            Err(JwsError::AlgorithmNotAllowed(Algorithm::EdDSA))
        );
        let nothing = VerificationPolicy::new([], None);
        assert!(nothing.allowed_algorithms().is_empty());
        assert_eq!(
            verify_compact(&t, &keys, &nothing),
            Err(JwsError::AlgorithmNotAllowed(Algorithm::EdDSA))
        );
    }

    #[test]
    fn key_alg_mismatch_is_unknown_key() {
        // The JWK says RS256; a PS256 token signed by the same RSA key must
        // not be accepted with it.
        let key = rsa_a2_key(Algorithm::PS256);
        let t = signed(r#"{"alg":"PS256","kid":"rsa"}"#, b"{}", &key);
        let restricted = jwks(&[rsa_public(json!({"kid": "rsa", "alg": "RS256"}))]);
        assert_eq!(
            verify_compact(&t, &restricted, &any_typ()),
            Err(JwsError::UnknownKey {
                kid: Some("rsa".into())
            })
        );
        // Without the restriction, the same key verifies PS256.
        let open = jwks(&[rsa_public(json!({"kid": "rsa"}))]);
        let verified = verify_compact(&t, &open, &any_typ()).unwrap();
        assert_eq!(verified.header().alg(), Algorithm::PS256);
    }

    #[test]
    fn wrong_kid_is_unknown_key() {
        let (key, keys) = ed_setup();
        let t = signed(r#"{"alg":"EdDSA","kid":"other"}"#, b"{}", &key);
        assert_eq!(
            verify_compact(&t, &keys, &any_typ()),
            Err(JwsError::UnknownKey {
                kid: Some("other".into())
            })
        );
        // An algorithm no key fits is unknown too, with or without kid.
        let es = signed(
            r#"{"alg":"ES256"}"#,
            b"{}",
            &SigningKey::generate_es256(&SystemRandom::new()).unwrap(),
        );
        assert_eq!(
            verify_compact(&es, &keys, &any_typ()),
            Err(JwsError::UnknownKey { kid: None })
        );
        assert_eq!(
            verify_compact(&es, &Jwks::default(), &any_typ()),
            Err(JwsError::UnknownKey { kid: None })
        );
    }

    #[test]
    fn no_kid_tries_every_compatible_key() {
        let rng = SystemRandom::new();
        let a = SigningKey::generate_ed25519(&rng).unwrap();
        let b = SigningKey::generate_ed25519(&rng).unwrap();
        let keys = jwks(&[a.public_jwk(Some("a")), b.public_jwk(Some("b"))]);
        let t = sign_compact(&SigningHeader::new(), b"{}", &b, &rng).unwrap();
        assert!(verify_compact(&t, &keys, &any_typ()).is_ok());
        // With kid "a", only key a is tried: b's signature does not verify.
        let t = signed(r#"{"alg":"EdDSA","kid":"a"}"#, b"{}", &b);
        assert_eq!(verify_compact(&t, &keys, &any_typ()), Err(JwsError::BadSignature));
    }

    #[test]
    fn right_kid_tampered_payload_is_bad_signature() {
        let (key, keys) = ed_setup();
        let t = signed(r#"{"alg":"EdDSA","kid":"ed"}"#, b"{\"sub\":\"alice\"}", &key);
        let parts: Vec<&str> = t.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64(b"{\"sub\":\"admin\"}"), parts[2]);
        assert_eq!(
            verify_compact(&tampered, &keys, &any_typ()),
            Err(JwsError::BadSignature)
        );
        // Same for a tampered header (kid kept), and a flipped signature bit.
        let header = b64(br#"{"alg":"EdDSA","kid":"ed","x":1}"#);
        let tampered = format!("{header}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            verify_compact(&tampered, &keys, &any_typ()),
            Err(JwsError::BadSignature)
        );
        let mut sig = unb64(parts[2]);
        sig[10] ^= 1;
        let tampered = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
        assert_eq!(
            verify_compact(&tampered, &keys, &any_typ()),
            Err(JwsError::BadSignature)
        );
    }

    #[test]
    fn crit_header_is_rejected() {
        let (key, keys) = ed_setup();
        for header in [
            r#"{"alg":"EdDSA","kid":"ed","crit":["exp"],"exp":1}"#,
            r#"{"alg":"EdDSA","kid":"ed","crit":["b64"],"b64":false}"#,
            r#"{"alg":"EdDSA","kid":"ed","crit":[]}"#,
        ] {
            let t = signed(header, b"{}", &key);
            assert_eq!(
                verify_compact(&t, &keys, &any_typ()),
                Err(JwsError::CriticalHeader),
                "{header}"
            );
        }
    }

    #[test]
    fn key_source_headers_are_rejected() {
        let (key, keys) = ed_setup();
        let embedded = key.public_jwk(Some("ed")).to_string();
        let cases = [
            (
                r#"{"alg":"EdDSA","kid":"ed","jku":"https://attacker.example/jwks"}"#.to_owned(),
                "jku",
            ),
            (format!(r#"{{"alg":"EdDSA","kid":"ed","jwk":{embedded}}}"#), "jwk"),
            (
                r#"{"alg":"EdDSA","kid":"ed","x5u":"https://attacker.example/cert"}"#.to_owned(),
                "x5u",
            ),
            (r#"{"alg":"EdDSA","kid":"ed","x5c":["MIIB"]}"#.to_owned(), "x5c"),
            (r#"{"alg":"EdDSA","kid":"ed","jku":null}"#.to_owned(), "jku"),
        ];
        for (header, member) in cases {
            // Validly signed by a configured key: the header alone is refused.
            let t = signed(&header, b"{}", &key);
            assert_eq!(
                verify_compact(&t, &keys, &any_typ()),
                Err(JwsError::ForbiddenHeaderMember(member)),
                "{header}"
            );
        }
    }

    #[test]
    fn wrong_typ_and_missing_typ_are_rejected_when_one_is_expected() {
        let (key, keys) = ed_setup();
        let policy = VerificationPolicy::access_token([Algorithm::EdDSA]);
        assert_eq!(policy.expected_typ(), Some("at+jwt"));
        for (header, found) in [
            (r#"{"alg":"EdDSA","kid":"ed","typ":"JWT"}"#, Some("JWT")),
            (
                r#"{"alg":"EdDSA","kid":"ed","typ":"application/jwt"}"#,
                Some("application/jwt"),
            ),
            (
                r#"{"alg":"EdDSA","kid":"ed","typ":"text/at+jwt"}"#,
                Some("text/at+jwt"),
            ),
            (
                r#"{"alg":"EdDSA","kid":"ed","typ":"at+jwt; x=y"}"#,
                Some("at+jwt; x=y"),
            ),
            (
                r#"{"alg":"EdDSA","kid":"ed","typ":"application/application/at+jwt"}"#,
                Some("application/application/at+jwt"),
            ),
            (r#"{"alg":"EdDSA","kid":"ed","typ":""}"#, Some("")),
            (r#"{"alg":"EdDSA","kid":"ed"}"#, None),
        ] {
            let t = signed(header, b"{}", &key);
            assert_eq!(
                verify_compact(&t, &keys, &policy),
                Err(JwsError::UnexpectedType {
                    expected: "at+jwt".into(),
                    found: found.map(str::to_owned)
                }),
                "{header}"
            );
        }
        let t = signed(r#"{"alg":"EdDSA","kid":"ed","typ":7}"#, b"{}", &key);
        assert_eq!(
            verify_compact(&t, &keys, &policy),
            Err(JwsError::InvalidHeaderMember("typ"))
        );
    }

    #[test]
    fn typ_is_case_insensitive_and_application_prefix_is_optional() {
        let (key, keys) = ed_setup();
        for expected in ["at+jwt", "application/at+jwt", "AT+JWT"] {
            let policy = VerificationPolicy::new([Algorithm::EdDSA], Some(expected));
            for typ in [
                "at+jwt",
                "AT+JWT",
                "At+Jwt",
                "application/at+jwt",
                "APPLICATION/AT+JWT",
            ] {
                let t = signed(
                    &format!(r#"{{"alg":"EdDSA","kid":"ed","typ":"{typ}"}}"#),
                    b"{}",
                    &key,
                );
                let verified = verify_compact(&t, &keys, &policy)
                    .unwrap_or_else(|e| panic!("typ {typ} vs {expected}: {e}"));
                assert_eq!(verified.header().typ(), Some(typ));
            }
        }
        // A media type with its own '/' keeps it.
        let policy = VerificationPolicy::new([Algorithm::EdDSA], Some("application/foo/bar"));
        assert!(policy.typ_matches(Some("APPLICATION/foo/bar")));
        assert!(!policy.typ_matches(Some("foo/bar")));
        assert!(any_typ().typ_matches(None));
        assert!(any_typ().typ_matches(Some("anything")));
        // Non-ASCII never panics on the prefix cut.
        assert!(!VerificationPolicy::access_token([]).typ_matches(Some("applicatïon/at+jwt")));
    }

    #[test]
    fn two_or_four_parts_are_rejected() {
        let (key, keys) = ed_setup();
        let t = signed(r#"{"alg":"EdDSA","kid":"ed"}"#, b"{}", &key);
        let parts: Vec<&str> = t.split('.').collect();
        for bad in [
            format!("{}.{}", parts[0], parts[1]),
            format!("{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[2]),
            format!("{t}."),
            parts[0].to_owned(),
            String::new(),
            "..".to_owned() + ".",
        ] {
            assert_eq!(
                verify_compact(&bad, &keys, &any_typ()),
                Err(JwsError::WrongNumberOfParts),
                "{bad}"
            );
        }
        assert!(verify_compact(&t, &keys, &any_typ()).is_ok());
    }

    #[test]
    fn padded_or_non_url_base64_is_rejected() {
        let v = vectors(RFC7515);
        let keys = jwks(&[v["A.2"]["public_jwk"].clone()]);
        let jws = v["A.2"]["jws"].as_str().unwrap();
        let parts: Vec<&str> = jws.split('.').collect();
        // The signature (342 characters) would take "==" as padding.
        assert_eq!(parts[2].len() % 4, 2);
        let padded = format!("{jws}==");
        assert_eq!(
            verify_compact(&padded, &keys, &any_typ()),
            Err(JwsError::InvalidBase64(JwsPart::Signature))
        );
        let standard = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            parts[2].replace('_', "/").replace('-', "+")
        );
        assert_eq!(
            verify_compact(&standard, &keys, &any_typ()),
            Err(JwsError::InvalidBase64(JwsPart::Signature))
        );
        // A header that needs padding, padded.
        let header = b64(br#"{"alg":"RS256"} "#);
        let padding = "=".repeat((4 - header.len() % 4) % 4);
        assert!(!padding.is_empty());
        let t = format!("{header}{padding}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            verify_compact(&t, &keys, &any_typ()),
            Err(JwsError::InvalidBase64(JwsPart::Header))
        );
        let t = format!("{}+.{}.{}", parts[0], parts[1], parts[2]);
        assert_eq!(
            verify_compact(&t, &keys, &any_typ()),
            Err(JwsError::InvalidBase64(JwsPart::Header))
        );
        // Non-canonical trailing bits: the same bytes with a stray low bit
        // set in the last character are refused.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = header.as_bytes()[header.len() - 1];
        let index = ALPHABET.iter().position(|c| *c == last).unwrap();
        assert_eq!(index & 1, 0);
        let stray = format!("{}{}", &header[..header.len() - 1], ALPHABET[index | 1] as char);
        let t = format!("{stray}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            verify_compact(&t, &keys, &any_typ()),
            Err(JwsError::InvalidBase64(JwsPart::Header))
        );
    }

    #[test]
    fn malformed_payload_encoding_is_rejected_after_signature() {
        let (key, keys) = ed_setup();
        // A key holder that signs a payload that is not base64url.
        let input = format!("{}.{}", b64(br#"{"alg":"EdDSA","kid":"ed"}"#), "not*base64");
        let sig = key.sign(input.as_bytes(), &SystemRandom::new()).unwrap();
        let t = format!("{input}.{}", b64(&sig));
        assert_eq!(
            verify_compact(&t, &keys, &any_typ()),
            Err(JwsError::InvalidBase64(JwsPart::Payload))
        );
    }

    #[test]
    fn header_that_is_not_a_json_object_is_rejected() {
        let (_, keys) = ed_setup();
        for header in [
            "[1]",
            "\"alg\"",
            "null",
            "",
            "{",
            "{\"alg\":\"EdDSA\"}x",
            "\u{1}{}",
            "{\"alg\":\"EdDSA\",}",
        ] {
            assert_eq!(
                verify_compact(&token(header, b"{}", &[0; 64]), &keys, &any_typ()),
                Err(JwsError::HeaderNotJsonObject),
                "{header:?}"
            );
        }
        let not_utf8 = format!("{}.{}.{}", b64(b"{\"alg\":\"\xff\"}"), b64(b"{}"), b64(&[0; 64]));
        assert_eq!(
            verify_compact(&not_utf8, &keys, &any_typ()),
            Err(JwsError::HeaderNotJsonObject)
        );
    }

    #[test]
    fn duplicate_header_members_are_rejected() {
        let (key, keys) = ed_setup();
        for (header, member) in [
            (r#"{"alg":"EdDSA","alg":"none"}"#, "alg"),
            (r#"{"alg":"EdDSA","kid":"ed","kid":"ed"}"#, "kid"),
            (r#"{"alg":"EdDSA","kid":"ed","typ":"a","typ":"b"}"#, "typ"),
            (r#"{"alg":"EdDSA","kid":"ed","\u0061lg":"EdDSA"}"#, "alg"),
        ] {
            let t = signed(header, b"{}", &key);
            assert_eq!(
                verify_compact(&t, &keys, &any_typ()),
                Err(JwsError::DuplicateHeaderMember(member)),
                "{header}"
            );
        }
        // Members this crate does not read may repeat.
        let t = signed(r#"{"alg":"EdDSA","kid":"ed","x":1,"x":2}"#, b"{}", &key);
        assert!(verify_compact(&t, &keys, &any_typ()).is_ok());
    }

    #[test]
    fn header_members_are_returned() {
        let (key, keys) = ed_setup();
        let t = sign_compact(
            &SigningHeader::new().typ("at+jwt").kid("ed").cty("json"),
            b"{\"sub\":\"alice\"}",
            &key,
            &SystemRandom::new(),
        )
        .unwrap();
        assert!(t.starts_with(&b64(br#"{"alg":"EdDSA","typ":"at+jwt","kid":"ed","cty":"json"}"#)));
        let (header, payload) =
            verify_compact(&t, &keys, &VerificationPolicy::access_token([Algorithm::EdDSA]))
                .unwrap()
                .into_parts();
        assert_eq!(header.alg(), Algorithm::EdDSA);
        assert_eq!(header.typ(), Some("at+jwt"));
        assert_eq!(header.kid(), Some("ed"));
        assert_eq!(header.cty(), Some("json"));
        assert_eq!(payload, b"{\"sub\":\"alice\"}");
    }

    #[test]
    fn es256_signature_of_wrong_length_is_bad_signature() {
        let v = vectors(RFC7515);
        let keys = jwks(&[v["A.3"]["public_jwk"].clone()]);
        let jws = v["A.3"]["jws"].as_str().unwrap();
        let (input, sig) = jws.rsplit_once('.').unwrap();
        let sig = unb64(sig);
        assert_eq!(sig.len(), 64);
        let mut longer = sig.clone();
        longer.push(0);
        let mut der_like = vec![0x30, 0x44, 0x02, 0x20];
        der_like.extend_from_slice(&sig[..32]);
        der_like.extend_from_slice(&[0x02, 0x20]);
        der_like.extend_from_slice(&sig[32..]);
        for bad in [&sig[..63], &longer[..], &der_like[..], &[][..], &sig[..32]] {
            let t = format!("{input}.{}", b64(bad));
            assert_eq!(
                verify_compact(&t, &keys, &any_typ()),
                Err(JwsError::BadSignature),
                "length {}",
                bad.len()
            );
        }
    }

    #[test]
    fn overlong_token_and_signature_are_rejected_early() {
        let (_, keys) = ed_setup();
        let t = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            verify_compact(&t, &keys, &any_typ()),
            Err(JwsError::TooLong {
                len: MAX_TOKEN_LEN + 1,
                max: MAX_TOKEN_LEN
            })
        );
        // The longest signature decodes (and is the wrong length for Ed25519).
        let t = token(r#"{"alg":"EdDSA"}"#, b"{}", &[0; MAX_SIGNATURE_LEN]);
        assert_eq!(t.rsplit('.').next().unwrap().len(), MAX_SIGNATURE_B64_LEN);
        assert_eq!(verify_compact(&t, &keys, &any_typ()), Err(JwsError::BadSignature));
        let t = token(r#"{"alg":"EdDSA"}"#, b"{}", &[0; MAX_SIGNATURE_LEN + 1]);
        assert_eq!(verify_compact(&t, &keys, &any_typ()), Err(JwsError::BadSignature));
        // A header long enough to take the heap path still parses.
        let pad = "p".repeat(2000);
        let (key, keys) = ed_setup();
        let t = signed(
            &format!(r#"{{"alg":"EdDSA","kid":"ed","pad":"{pad}"}}"#),
            b"{}",
            &key,
        );
        assert!(verify_compact(&t, &keys, &any_typ()).is_ok());
    }

    #[test]
    fn rsa_rs256_and_ps256_round_trip() {
        let rng = SystemRandom::new();
        for alg in [Algorithm::RS256, Algorithm::PS256] {
            let key = rsa_a2_key(alg);
            let keys = jwks(&[key.public_jwk(Some("rsa"))]);
            let t = sign_compact(&SigningHeader::new().kid("rsa").typ("at+jwt"), b"{}", &key, &rng).unwrap();
            let policy = VerificationPolicy::access_token([alg]);
            assert_eq!(verify_compact(&t, &keys, &policy).unwrap().header().alg(), alg);
        }
        assert_eq!(
            SigningKey::rsa_from_components(
                Algorithm::ES256,
                &ring::rsa::KeyPairComponents {
                    public_key: ring::rsa::PublicKeyComponents { n: [1u8], e: [1] },
                    d: [1],
                    p: [1],
                    q: [1],
                    dP: [1],
                    dQ: [1],
                    qInv: [1],
                }
            )
            .unwrap_err(),
            JwsError::KeyAlgorithmMismatch(Algorithm::ES256)
        );
    }

    #[test]
    fn es384_and_pkcs8_keys_round_trip() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let key = SigningKey::from_pkcs8(Algorithm::ES384, pkcs8.as_ref(), &rng).unwrap();
        let public = key.public_jwk(Some("p384"));
        assert_eq!(public["crv"], "P-384");
        let keys = jwks(&[public]);
        let t = sign_compact(&SigningHeader::new().kid("p384"), b"hello", &key, &rng).unwrap();
        let verified = verify_compact(&t, &keys, &any_typ()).unwrap();
        assert_eq!(verified.payload(), b"hello");
        // The wrong curve for the algorithm is refused by ring.
        assert!(matches!(
            SigningKey::from_pkcs8(Algorithm::ES256, pkcs8.as_ref(), &rng),
            Err(JwsError::InvalidSigningKey(_))
        ));
        assert!(matches!(
            SigningKey::from_pkcs8(Algorithm::EdDSA, b"not a key", &rng),
            Err(JwsError::InvalidSigningKey(_))
        ));
        assert!(matches!(
            SigningKey::ed25519_from_seed(&[1; 32], &[2; 32]),
            Err(JwsError::InvalidSigningKey(_))
        ));
    }

    #[test]
    fn signing_key_debug_is_redacted() {
        let rng = SystemRandom::new();
        let shown = format!("{:?}", SigningKey::generate_es256(&rng).unwrap());
        assert_eq!(shown, "SigningKey { alg: ES256, key: [redacted] }");
        let shown = format!("{:?}", ed25519_a1_key());
        assert!(shown.contains("[redacted]") && !shown.contains("nWGx"), "{shown}");
    }

    #[test]
    fn algorithm_set_operations() {
        let set: AlgorithmSet = [Algorithm::ES256, Algorithm::PS256].into_iter().collect();
        assert!(set.contains(Algorithm::ES256) && set.contains(Algorithm::PS256));
        assert!(!set.contains(Algorithm::RS256));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [Algorithm::ES256, Algorithm::PS256]
        );
        assert_eq!(AlgorithmSet::all().iter().count(), Algorithm::ALL.len());
        assert!(AlgorithmSet::empty().is_empty());
        assert_eq!(AlgorithmSet::empty().with(Algorithm::EdDSA).iter().count(), 1);
    }

    fn header_strategy() -> impl Strategy<Value = String> {
        let alg = prop::sample::select(vec!["EdDSA", "ES256", "RS256", "none", "HS256", "", "PS256"]);
        let extra = prop::sample::select(vec![
            "",
            r#","kid":"ed""#,
            r#","typ":"at+jwt""#,
            r#","crit":["b64"]"#,
            r#","jku":"x""#,
            r#","alg":"EdDSA""#,
            r#","kid":1"#,
        ]);
        (alg, extra).prop_map(|(alg, extra)| format!(r#"{{"alg":"{alg}"{extra}}}"#))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn verify_never_panics_on_arbitrary_strings(s in "\\PC{0,400}") {
            let (_, keys) = ed_setup();
            let _ = verify_compact(&s, &keys, &any_typ());
        }

        #[test]
        fn verify_never_panics_on_jws_shaped_strings(
            s in "[A-Za-z0-9_=+/-]{0,120}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_=-]{0,120}"
        ) {
            let (_, keys) = ed_setup();
            prop_assert!(verify_compact(&s, &keys, &any_typ()).is_err());
        }

        #[test]
        fn random_signatures_never_verify(
            header in header_strategy(),
            payload in prop::collection::vec(any::<u8>(), 0..64),
            sig in prop::collection::vec(any::<u8>(), 0..140),
        ) {
            let (_, keys) = ed_setup();
            let t = token(&header, &payload, &sig);
            prop_assert!(verify_compact(&t, &keys, &any_typ()).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn ed25519_sign_verify_round_trip(payload in prop::collection::vec(any::<u8>(), 0..512)) {
            let (key, keys) = ed_setup();
            let rng = SystemRandom::new();
            let t = sign_compact(&SigningHeader::new().kid("ed"), &payload, &key, &rng).unwrap();
            let verified = verify_compact(&t, &keys, &any_typ()).unwrap();
            prop_assert_eq!(verified.payload(), &payload[..]);
        }

        #[test]
        fn es256_sign_verify_round_trip(payload in prop::collection::vec(any::<u8>(), 0..512)) {
            let rng = SystemRandom::new();
            let key = SigningKey::generate_es256(&rng).unwrap();
            let keys = jwks(&[key.public_jwk(Some("es"))]);
            let t = sign_compact(&SigningHeader::new().kid("es").typ("at+jwt"), &payload, &key, &rng)
                .unwrap();
            let policy = VerificationPolicy::access_token([Algorithm::ES256]);
            let verified = verify_compact(&t, &keys, &policy).unwrap();
            prop_assert_eq!(verified.payload(), &payload[..]);
            prop_assert_eq!(verified.header().kid(), Some("es"));
        }
    }
}
