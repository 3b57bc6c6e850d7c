//! DPoP proofs (RFC 9449): checking that a request was sent by the holder
//! of the key a token is bound to.
//!
//! [`verify_proof`] performs the checks of RFC 9449 §4.3 that need no
//! state: the proof is a compact JWS of type `dpop+jwt`, signed with an
//! allowed asymmetric algorithm by the public key in its own `jwk` header
//! (no private members), whose `htm` and `htu` match the request (the URI
//! normalised, query and fragment ignored), whose `iat` is recent, whose
//! `ath` is the hash of the access token presented with it, whose key is
//! the one the token is bound to (`cnf.jkt`, RFC 7638 thumbprint) and
//! which carries the server's nonce when one is required. That each `jti`
//! is used once is for the caller to keep (a replay cache).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::jwk::{Algorithm, Jwk};
use crate::jws::AlgorithmSet;
use crate::time::UnixTime;

/// Longest proof accepted (a proof carries one public key: RSA 4096 is
/// the largest, well under this); the bound is in [`crate::limits`].
pub const MAX_PROOF_LEN: usize = crate::limits::DPOP_PROOF_BYTES;

/// Longest `jti` accepted: each one is remembered until the proof
/// expires (in the server's store, the guard's replay cache).
pub const MAX_JTI_LEN: usize = crate::limits::DPOP_JTI_BYTES;

/// The request a proof came with.
#[derive(Debug, Clone, Copy)]
pub struct ProofContext<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The request's URI as the server was reached (scheme, authority,
    /// path; any query or fragment is ignored).
    pub uri: &'a str,
    /// The access token sent with the proof, if any (then `ath` must be
    /// its hash).
    pub access_token: Option<&'a str>,
    /// The thumbprint the token is bound to (`cnf.jkt`), if any.
    pub bound_jkt: Option<&'a str>,
    /// The nonce the server requires, if any.
    pub nonce: Option<&'a str>,
}

/// What a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofPolicy {
    /// Allowed signature algorithms.
    pub algorithms: AlgorithmSet,
    /// How old `iat` may be, in seconds.
    pub max_age_seconds: i64,
    /// How far in the future `iat` may be (clock skew), in seconds.
    pub max_skew_seconds: i64,
}

impl Default for ProofPolicy {
    /// ES256, ES384, EdDSA, RS256 and PS256; proofs at most 5 minutes old
    /// and 1 minute ahead.
    fn default() -> Self {
        Self {
            algorithms: AlgorithmSet::all(),
            max_age_seconds: 300,
            max_skew_seconds: 60,
        }
    }
}

/// A proof that passed every stateless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key.
    pub jkt: String,
    /// The proof's unique identifier, for the replay cache.
    pub jti: String,
    /// When it was made.
    pub iat: i64,
    /// The algorithm it was signed with.
    pub alg: Algorithm,
}

/// Why a proof is refused. All but [`ProofError::NonceRequired`] are
/// `invalid_dpop_proof`; that one is `use_dpop_nonce` (RFC 9449 §8, §9).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Not a compact JWS, or parts that do not decode to JSON objects.
    #[error("the DPoP proof is not a well-formed JWT: {0}")]
    Malformed(&'static str),
    /// Longer than [`MAX_PROOF_LEN`].
    #[error("the DPoP proof is too long")]
    TooLong,
    /// A `jti` longer than [`MAX_JTI_LEN`].
    #[error("the DPoP proof's jti is longer than {MAX_JTI_LEN} bytes")]
    JtiTooLong,
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof's typ is not dpop+jwt")]
    WrongType,
    /// `alg` missing, unknown, symmetric, `none` or not allowed.
    #[error("the DPoP proof's alg is not allowed")]
    Algorithm,
    /// `jwk` missing, not a usable public key, or with private members.
    #[error("the DPoP proof's jwk is not a usable public key: {0}")]
    Key(String),
    /// The signature does not verify with the `jwk`.
    #[error("the DPoP proof's signature does not verify")]
    BadSignature,
    /// A required claim is missing or of the wrong type.
    #[error("the DPoP proof lacks a valid {0} claim")]
    MissingClaim(&'static str),
    /// `htm` is not the request's method.
    #[error("the DPoP proof is for another HTTP method")]
    MethodMismatch,
    /// `htu` is not the request's URI.
    #[error("the DPoP proof is for another URI")]
    UriMismatch,
    /// `iat` too old, or too far in the future.
    #[error("the DPoP proof's iat is outside the accepted window")]
    Stale,
    /// `ath` missing or not the hash of the presented token.
    #[error("the DPoP proof's ath does not match the access token")]
    AccessTokenHash,
    /// The proof's key is not the one the token is bound to.
    #[error("the DPoP proof's key is not the key the token is bound to")]
    KeyMismatch,
    /// The server requires a nonce and the proof lacks it or has another.
    #[error("the DPoP proof must carry the server's current nonce")]
    NonceRequired,
}

impl ProofError {
    /// The OAuth error code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            ProofError::NonceRequired => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }
}

/// The `Authorization` scheme an access token came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentedScheme {
    /// `Bearer` (RFC 6750 §2.1).
    Bearer,
    /// `DPoP` (RFC 9449 §7.1), with a proof in the `DPoP` header.
    Dpop,
}

/// Why a token may not be used with the scheme it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SchemeError {
    /// A token bound to a key (`cnf`, RFC 7800) came as a bearer token:
    /// RFC 9449 §7.2 forbids accepting it so.
    #[error("the token is bound to a key (cnf); present it with proof of possession")]
    BoundTokenAsBearer,
    /// A token bound to no key came with the `DPoP` scheme.
    #[error("the token is not bound to a key: present it with the Bearer scheme")]
    UnboundTokenAsDpop,
}

/// Why the `DPoP` header of a request cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProofHeaderError {
    /// More than one `DPoP` header (RFC 9449 §4.3: exactly one proof).
    #[error("send exactly one DPoP header")]
    Several,
    /// A value that is not visible ASCII (a JWS compact serialization is).
    #[error("the DPoP header is not ASCII")]
    NotAscii,
}

/// The proof of a request, from the values of its `DPoP` headers (as
/// sent, in order): `None` when there is none. One rule for every endpoint
/// that reads proofs, the token endpoint's and the resources'.
pub fn single_proof<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<&'a str>, ProofHeaderError> {
    let mut values = values.into_iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(ProofHeaderError::Several),
        (Some(value), None) => std::str::from_utf8(value)
            .ok()
            .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
            .map(Some)
            .ok_or(ProofHeaderError::NotAscii),
    }
}

/// The one rule for every endpoint that accepts an access token (RFC 9449
/// §7.1, §7.2): which key the request's proof must be made with. `cnf_jkt`
/// is the token's `cnf.jkt`; `bound` whether it has any `cnf` at all (a
/// binding this checker cannot verify, such as mTLS's `x5t#S256`, still
/// rules out the Bearer scheme). `Ok(None)`: a bearer token, no proof.
pub fn required_proof_key(
    scheme: PresentedScheme,
    cnf_jkt: Option<&str>,
    bound: bool,
) -> Result<Option<&str>, SchemeError> {
    match (scheme, cnf_jkt) {
        (PresentedScheme::Bearer, _) if bound || cnf_jkt.is_some() => Err(SchemeError::BoundTokenAsBearer),
        (PresentedScheme::Bearer, _) => Ok(None),
        (PresentedScheme::Dpop, Some(jkt)) => Ok(Some(jkt)),
        // Bound, but not to a DPoP key: no proof can show possession.
        (PresentedScheme::Dpop, None) if bound => Err(SchemeError::BoundTokenAsBearer),
        (PresentedScheme::Dpop, None) => Err(SchemeError::UnboundTokenAsDpop),
    }
}

/// [`verify_proof`] against each nonce the server currently accepts (its
/// current one and the one before, see RFC 9449 §8.2), or with no nonce
/// when `accepted` is `None`. The request's own `nonce` field is ignored.
pub fn verify_proof_with_nonces(
    proof: &str,
    request: &ProofContext<'_>,
    accepted: Option<&[String]>,
    policy: &ProofPolicy,
    now: UnixTime,
) -> Result<VerifiedProof, ProofError> {
    let Some(accepted) = accepted else {
        return verify_proof(
            proof,
            &ProofContext {
                nonce: None,
                ..*request
            },
            policy,
            now,
        );
    };
    let mut result = Err(ProofError::NonceRequired);
    for nonce in accepted {
        let context = ProofContext {
            nonce: Some(nonce),
            ..*request
        };
        result = verify_proof(proof, &context, policy, now);
        if result != Err(ProofError::NonceRequired) {
            break;
        }
    }
    result
}

/// `ath`: the base64url SHA-256 of the access token's ASCII (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()))
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

fn string_claim<'v>(value: Option<&'v Value>, name: &'static str) -> Result<&'v str, ProofError> {
    value
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(ProofError::MissingClaim(name))
}

/// Checks a DPoP proof against the request it came with, at `now`.
pub fn verify_proof(
    proof: &str,
    request: &ProofContext<'_>,
    policy: &ProofPolicy,
    now: UnixTime,
) -> Result<VerifiedProof, ProofError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLong);
    }
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed("expected three dot-separated parts"));
    };
    let decode = |part: &str, what: &'static str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| ProofError::Malformed(what))
    };
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&decode(header_b64, "header is not base64url")?)
            .map_err(|_| ProofError::Malformed("header is not a JSON object"))?;
    let typ = header.get("typ").and_then(Value::as_str);
    if !typ
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt") || t.eq_ignore_ascii_case("application/dpop+jwt"))
    {
        return Err(ProofError::WrongType);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Algorithm::from_name)
        .filter(|a| policy.algorithms.contains(*a))
        .ok_or(ProofError::Algorithm)?;
    // Extensions this checker does not understand make the proof unusable
    // (RFC 7515 §4.1.11).
    if header.contains_key("crit") {
        return Err(ProofError::Malformed("crit is not supported"));
    }
    let jwk_value = header
        .get("jwk")
        .ok_or_else(|| ProofError::Key("no jwk header".into()))?;
    let jwk = Jwk::from_json_value(jwk_value).map_err(|e| ProofError::Key(e.to_string()))?;
    if !jwk.compatible_with(alg) {
        return Err(ProofError::Key(format!("the key cannot verify {}", alg.as_str())));
    }
    let signature = decode(signature_b64, "signature is not base64url")?;
    let signing_input = &proof.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !jwk.verify(alg, signing_input, &signature) {
        return Err(ProofError::BadSignature);
    }

    let claims: Claims = serde_json::from_slice(&decode(payload_b64, "payload is not base64url")?)
        .map_err(|_| ProofError::Malformed("payload is not a JSON object"))?;
    let jti = string_claim(claims.jti.as_ref(), "jti")?;
    if jti.len() > MAX_JTI_LEN {
        return Err(ProofError::JtiTooLong);
    }
    let htm = string_claim(claims.htm.as_ref(), "htm")?;
    let htu = string_claim(claims.htu.as_ref(), "htu")?;
    let iat = claims
        .iat
        .as_ref()
        .and_then(Value::as_i64)
        .ok_or(ProofError::MissingClaim("iat"))?;
    if htm != request.method {
        return Err(ProofError::MethodMismatch);
    }
    match (normalize_uri(htu), normalize_uri(request.uri)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(ProofError::UriMismatch),
    }
    let age = now.seconds().saturating_sub(iat);
    if age > policy.max_age_seconds || -age > policy.max_skew_seconds {
        return Err(ProofError::Stale);
    }
    if let Some(token) = request.access_token {
        let ath = claims.ath.as_ref().and_then(Value::as_str);
        let expected = access_token_hash(token);
        if !ath.is_some_and(|a| bool::from(a.as_bytes().ct_eq(expected.as_bytes()))) {
            return Err(ProofError::AccessTokenHash);
        }
    }
    let jkt = jwk.thumbprint_sha256();
    if let Some(bound) = request.bound_jkt
        && !bool::from(bound.as_bytes().ct_eq(jkt.as_bytes()))
    {
        return Err(ProofError::KeyMismatch);
    }
    if let Some(required) = request.nonce {
        let nonce = claims.nonce.as_ref().and_then(Value::as_str);
        if !nonce.is_some_and(|n| bool::from(n.as_bytes().ct_eq(required.as_bytes()))) {
            return Err(ProofError::NonceRequired);
        }
    }
    Ok(VerifiedProof {
        jkt,
        jti: jti.to_owned(),
        iat,
        alg,
    })
}

/// An `htu` or request URI normalised for comparison (RFC 3986 §6.2.2 and
/// §6.2.3): scheme and host in lower case, the scheme's default port
/// dropped, an empty path as `/`, percent-encodings in upper case and
/// unreserved characters decoded; query and fragment removed. `None` for
/// anything but an absolute `http`/`https` URI without user information.
pub fn normalize_uri(uri: &str) -> Option<String> {
    let uri = uri.split(['#', '?']).next()?;
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        // Not the colon of an IPv6 literal.
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let port = match port {
        Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.trim_start_matches('0')).filter(|p| *p != default_port)
        }
        Some(_) => return None,
        None => None,
    };
    let mut out = format!("{scheme}://{}", host.to_ascii_lowercase());
    if let Some(p) = port {
        out.push(':');
        out.push_str(if p.is_empty() { "0" } else { p });
    }
    if path.is_empty() {
        out.push('/');
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3)?;
            let value = u8::from_str_radix(hex, 16).ok()?;
            if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(char::from(bytes[i]));
            i += 1;
        }
    }
    Some(out)
}

/// What a client puts in a proof.
#[derive(Debug, Clone, Copy)]
pub struct ProofClaims<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The request URI (query and fragment are dropped).
    pub uri: &'a str,
    /// The access token sent with it, for `ath`.
    pub access_token: Option<&'a str>,
    /// The server's nonce, if it asked for one.
    pub nonce: Option<&'a str>,
    /// A unique identifier.
    pub jti: &'a str,
    /// When it is made.
    pub iat: i64,
}

/// Makes a DPoP proof with `key` (RFC 9449 §4.2).
pub fn sign_proof(
    key: &crate::jws::SigningKey,
    claims: &ProofClaims<'_>,
    rng: &dyn ring::rand::SecureRandom,
) -> Result<String, crate::jws::JwsError> {
    let jwk = key.public_jwk(None);
    let header = crate::jws::SigningHeader::new().typ("dpop+jwt").jwk(&jwk);
    let htu = claims.uri.split(['?', '#']).next().unwrap_or(claims.uri);
    let mut payload = serde_json::json!({
        "jti": claims.jti,
        "htm": claims.method,
        "htu": htu,
        "iat": claims.iat,
    });
    if let Some(token) = claims.access_token {
        payload["ath"] = Value::from(access_token_hash(token));
    }
    if let Some(nonce) = claims.nonce {
        payload["nonce"] = Value::from(nonce);
    }
    crate::jws::sign_compact(&header, payload.to_string().as_bytes(), key, rng)
}

impl fmt::Display for VerifiedProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DPoP proof {} by key {}", self.jti, self.jkt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9449 §4.1, Figure 4: the proof of a token request.
    const TOKEN_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
    /// RFC 9449 §7.1, Figure 13: the proof of a protected resource request.
    const RESOURCE_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJjZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05yV0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6Fy1dqd-jfxSYoMxhAJpLjA";
    /// RFC 9449 §7.1: the access token of that request.
    const ACCESS_TOKEN: &str = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
    /// RFC 9449 §6.1, Figure 9: the thumbprint of the examples' key.
    const JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";

    #[test]
    fn a_request_carries_one_readable_proof_or_none() {
        let none: [&[u8]; 0] = [];
        assert_eq!(single_proof(none), Ok(None));
        assert_eq!(single_proof([&b"a.b.c"[..]]), Ok(Some("a.b.c")));
        assert_eq!(
            single_proof([&b"a.b.c"[..], b"d.e.f"]),
            Err(ProofHeaderError::Several)
        );
        for bad in [&b"a.b\xff"[..], "a.b.\u{e9}".as_bytes(), b"a.b c", b"a.b\tc"] {
            assert_eq!(single_proof([bad]), Err(ProofHeaderError::NotAscii), "{bad:?}");
        }
    }

    fn token_request() -> ProofContext<'static> {
        ProofContext {
            method: "POST",
            uri: "https://server.example.com/token",
            access_token: None,
            bound_jkt: None,
            nonce: None,
        }
    }

    fn resource_request() -> ProofContext<'static> {
        ProofContext {
            method: "GET",
            uri: "https://resource.example.org/protectedresource",
            access_token: Some(ACCESS_TOKEN),
            bound_jkt: Some(JKT),
            nonce: None,
        }
    }

    #[test]
    fn the_rfc_examples_verify() {
        let p = verify_proof(
            TOKEN_PROOF,
            &token_request(),
            &ProofPolicy::default(),
            UnixTime(1_562_262_616),
        )
        .unwrap();
        assert_eq!(
            (p.jkt.as_str(), p.jti.as_str(), p.iat, p.alg),
            (JKT, "-BwC3ESc6acc2lTc", 1_562_262_616, Algorithm::ES256)
        );
        let p = verify_proof(
            RESOURCE_PROOF,
            &resource_request(),
            &ProofPolicy::default(),
            UnixTime(1_562_262_620),
        )
        .unwrap();
        assert_eq!(p.jti, "e1j3V_bKic8-LAEB");
        assert_eq!(
            access_token_hash(ACCESS_TOKEN),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }

    #[test]
    fn every_mismatch_is_refused() {
        let policy = ProofPolicy::default();
        let at = UnixTime(1_562_262_620);
        let check = |request: ProofContext<'_>| verify_proof(RESOURCE_PROOF, &request, &policy, at);
        assert_eq!(
            check(ProofContext {
                method: "POST",
                ..resource_request()
            }),
            Err(ProofError::MethodMismatch)
        );
        assert_eq!(
            check(ProofContext {
                uri: "https://resource.example.org/other",
                ..resource_request()
            }),
            Err(ProofError::UriMismatch)
        );
        assert_eq!(
            check(ProofContext {
                uri: "https://evil.example/protectedresource",
                ..resource_request()
            }),
            Err(ProofError::UriMismatch)
        );
        assert_eq!(
            check(ProofContext {
                access_token: Some("another token"),
                ..resource_request()
            }),
            Err(ProofError::AccessTokenHash)
        );
        assert_eq!(
            check(ProofContext {
                bound_jkt: Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                ..resource_request()
            }),
            Err(ProofError::KeyMismatch)
        );
        let e = check(ProofContext {
            nonce: Some("server-nonce"),
            ..resource_request()
        })
        .unwrap_err();
        assert_eq!(
            (e.clone(), e.code()),
            (ProofError::NonceRequired, "use_dpop_nonce")
        );
        // The token proof carries no ath: not usable with an access token.
        let with_token = ProofContext {
            access_token: Some(ACCESS_TOKEN),
            ..token_request()
        };
        assert_eq!(
            verify_proof(TOKEN_PROOF, &with_token, &policy, UnixTime(1_562_262_616)),
            Err(ProofError::AccessTokenHash)
        );
        // Too old, too far ahead.
        assert_eq!(
            verify_proof(
                RESOURCE_PROOF,
                &resource_request(),
                &policy,
                UnixTime(1_562_262_618 + 301)
            ),
            Err(ProofError::Stale)
        );
        assert_eq!(
            verify_proof(
                RESOURCE_PROOF,
                &resource_request(),
                &policy,
                UnixTime(1_562_262_618 - 61)
            ),
            Err(ProofError::Stale)
        );
        // An algorithm the server does not allow.
        let eddsa_only = ProofPolicy {
            algorithms: AlgorithmSet::empty().with(Algorithm::EdDSA),
            ..policy
        };
        assert_eq!(
            verify_proof(RESOURCE_PROOF, &resource_request(), &eddsa_only, at),
            Err(ProofError::Algorithm)
        );
    }

    fn forge(header: &Value, payload: &str, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn malformed_and_tampered_proofs_are_refused() {
        let policy = ProofPolicy::default();
        let at = UnixTime(1_562_262_616);
        let check = |proof: &str| verify_proof(proof, &token_request(), &policy, at);
        let (h, rest) = TOKEN_PROOF.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        // A changed payload breaks the signature.
        let other_payload = URL_SAFE_NO_PAD
            .encode(r#"{"jti":"x","htm":"POST","htu":"https://server.example.com/token","iat":1562262616}"#);
        assert_eq!(
            check(&format!("{h}.{other_payload}.{s}")),
            Err(ProofError::BadSignature)
        );
        assert!(matches!(
            check(&format!("{h}.{p}")),
            Err(ProofError::Malformed(_))
        ));
        assert!(matches!(
            check(&format!("{h}.{p}.{s}.x")),
            Err(ProofError::Malformed(_))
        ));
        assert!(matches!(check("a.b.c"), Err(ProofError::Malformed(_))));
        assert_eq!(check(&"a".repeat(MAX_PROOF_LEN + 1)), Err(ProofError::TooLong));
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
        let mut wrong_type = header.clone();
        wrong_type["typ"] = Value::from("JWT");
        assert_eq!(
            check(&forge(&wrong_type, &payload, s)),
            Err(ProofError::WrongType)
        );
        for alg in ["none", "HS256", "ES512", ""] {
            let mut h2 = header.clone();
            h2["alg"] = Value::from(alg);
            assert_eq!(
                check(&forge(&h2, &payload, s)),
                Err(ProofError::Algorithm),
                "{alg}"
            );
        }
        let mut private = header.clone();
        private["jwk"]["d"] = Value::from("AAAA");
        assert!(matches!(
            check(&forge(&private, &payload, s)),
            Err(ProofError::Key(_))
        ));
        let mut keyless = header.clone();
        keyless.as_object_mut().unwrap().remove("jwk");
        assert!(matches!(
            check(&forge(&keyless, &payload, s)),
            Err(ProofError::Key(_))
        ));
        let mut critical = header.clone();
        critical["crit"] = Value::from(vec!["exp"]);
        assert!(matches!(
            check(&forge(&critical, &payload, s)),
            Err(ProofError::Malformed(_))
        ));
    }

    #[test]
    fn signed_proofs_round_trip() {
        let rng = ring::rand::SystemRandom::new();
        for key in [
            crate::jws::SigningKey::generate_es256(&rng).unwrap(),
            crate::jws::SigningKey::generate_ed25519(&rng).unwrap(),
        ] {
            let claims = ProofClaims {
                method: "POST",
                uri: "https://api.example/transfers?x=1",
                access_token: Some("tok"),
                nonce: Some("n-1"),
                jti: "j-1",
                iat: 1_800_000_000,
            };
            let proof = sign_proof(&key, &claims, &rng).unwrap();
            let jkt = Jwk::from_json_value(&key.public_jwk(None))
                .unwrap()
                .thumbprint_sha256();
            let request = ProofContext {
                method: "POST",
                uri: "https://api.example/transfers",
                access_token: Some("tok"),
                bound_jkt: Some(&jkt),
                nonce: Some("n-1"),
            };
            let verified =
                verify_proof(&proof, &request, &ProofPolicy::default(), UnixTime(1_800_000_010)).unwrap();
            assert_eq!((verified.jkt, verified.jti.as_str()), (jkt, "j-1"));
        }
    }

    #[test]
    fn a_jti_beyond_its_bound_is_refused() {
        let rng = ring::rand::SystemRandom::new();
        let key = crate::jws::SigningKey::generate_es256(&rng).unwrap();
        let request = ProofContext {
            method: "POST",
            uri: "https://as.example/token",
            access_token: None,
            bound_jkt: None,
            nonce: None,
        };
        let check = |jti: &str| {
            let claims = ProofClaims {
                method: "POST",
                uri: "https://as.example/token",
                access_token: None,
                nonce: None,
                jti,
                iat: 1_800_000_000,
            };
            let proof = sign_proof(&key, &claims, &rng).unwrap();
            assert!(proof.len() <= MAX_PROOF_LEN);
            verify_proof(&proof, &request, &ProofPolicy::default(), UnixTime(1_800_000_000))
        };
        assert!(
            check(&"j".repeat(MAX_JTI_LEN)).is_ok(),
            "the control: at the bound"
        );
        assert_eq!(
            check(&"j".repeat(MAX_JTI_LEN + 1)).err(),
            Some(ProofError::JtiTooLong)
        );
        // Within the proof's own bound, a jti of kilobytes is still refused.
        assert_eq!(check(&"j".repeat(4000)).err(), Some(ProofError::JtiTooLong));
    }

    #[test]
    fn uris_are_normalised_before_comparison() {
        let n = |u: &str| normalize_uri(u);
        assert_eq!(
            n("HTTPS://Server.Example.COM:443/token?x=1#f").as_deref(),
            Some("https://server.example.com/token")
        );
        assert_eq!(n("http://a.example:80").as_deref(), Some("http://a.example/"));
        assert_eq!(
            n("https://a.example:8443/%7euser/%2f").as_deref(),
            Some("https://a.example:8443/~user/%2F")
        );
        assert_eq!(n("https://[::1]:8443/x").as_deref(), Some("https://[::1]:8443/x"));
        assert_eq!(n("https://[::1]/x").as_deref(), Some("https://[::1]/x"));
        for bad in [
            "ftp://a.example/",
            "https://user@a.example/",
            "/token",
            "https://",
            "https://a.example:x/",
            "https://a.example/%zz",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }
    #[test]
    fn a_bound_token_needs_its_proof_and_a_bearer_token_none() {
        use PresentedScheme::{Bearer, Dpop};
        assert_eq!(required_proof_key(Bearer, None, false), Ok(None));
        assert_eq!(required_proof_key(Dpop, Some("k"), true), Ok(Some("k")));
        assert_eq!(
            required_proof_key(Bearer, Some("k"), true),
            Err(SchemeError::BoundTokenAsBearer)
        );
        // A binding other than DPoP's (mTLS) rules out both schemes here.
        assert_eq!(
            required_proof_key(Bearer, None, true),
            Err(SchemeError::BoundTokenAsBearer)
        );
        assert_eq!(
            required_proof_key(Dpop, None, true),
            Err(SchemeError::BoundTokenAsBearer)
        );
        assert_eq!(
            required_proof_key(Dpop, None, false),
            Err(SchemeError::UnboundTokenAsDpop)
        );
    }
}
