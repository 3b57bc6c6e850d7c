//! How much anyone on the internet may send before being authenticated:
//! the one table of bounds on request bodies, form and query parameters,
//! `authorization_details` and DPoP proofs (THREATS.md: "every input from
//! outside is bounded in size and time before it is stored, echoed or
//! waited for").
//!
//! Each bound fits real use with room to spare; anything beyond is refused
//! where it is parsed ([`crate::authorization_request::params_from`],
//! [`crate::dpop::verify_proof`]) with `invalid_request` (400), and bodies
//! beyond their cap with 413, before a handler reads them. Parameters with
//! a stricter syntax (`code_challenge`: 43 characters of base64url,
//! `dpop_jkt`, `device_id`) are checked further by their own parsers; the
//! bound here is the most any of them is ever looked at.

/// The most parameters a query string or form body may carry.
pub const MAX_PARAMS: usize = 64;

/// The longest parameter name, in bytes.
pub const MAX_PARAM_NAME_BYTES: usize = 64;

/// The longest value of a parameter not named in [`PARAM_BYTES`] (unknown
/// parameters are ignored, never stored, but still bounded).
pub const DEFAULT_PARAM_BYTES: usize = 1024;

/// The longest value of each known parameter, in bytes (after
/// percent-decoding), across the authorization, PAR, token, introspection
/// and revocation endpoints and the sign-in and account forms.
pub const PARAM_BYTES: &[(&str, usize)] = &[
    // Authorization requests (RFC 6749 §4.1.1, OpenID Connect Core §3.1.2.1).
    ("client_id", 255),
    ("redirect_uri", 2048),
    ("response_type", 64),
    ("response_mode", 32),
    ("scope", 1024),
    ("state", 512),
    ("nonce", 512),
    ("prompt", 64),
    ("max_age", 20),
    ("acr_values", 1024),
    ("claims", 4096),
    ("login_hint", 256),
    ("id_token_hint", 8192),
    // RFC 7636 §4.1-4.2: at most 128 characters (S256 challenges are 43).
    ("code_challenge", 128),
    ("code_challenge_method", 16),
    ("code_verifier", 128),
    // RFC 9396: see also AUTHORIZATION_DETAILS_ENTRIES.
    ("authorization_details", AUTHORIZATION_DETAILS_BYTES),
    // RFC 9126: our request_uri is a fixed prefix and 22 characters.
    ("request_uri", 256),
    // A request object (refused: not supported) at /authorize; the
    // pending request's id on the sign-in forms.
    ("request", 8192),
    // RFC 9449 §10: a base64url SHA-256 thumbprint, 43 characters.
    ("dpop_jkt", 64),
    ("device_id", 256),
    // RFC 8707.
    ("resource", 2048),
    // The token endpoint (RFC 6749 §4.1.3, §6; RFC 7523).
    ("grant_type", 128),
    ("code", 256),
    ("refresh_token", 512),
    ("client_secret", 256),
    ("client_assertion_type", 128),
    ("client_assertion", 8192),
    // Introspection and revocation (RFC 7662, RFC 7009): a signed access
    // token with authorization_details fits in 16 KiB.
    ("token", 16 * 1024),
    ("token_type_hint", 64),
    // The sign-in and account forms.
    ("username", 256),
    ("password", 1024),
    ("csrf", 128),
    ("ceremony", 128),
    // A WebAuthn answer (PublicKeyCredential as JSON); an attestation
    // with a certificate chain is a few kilobytes.
    ("credential", 32 * 1024),
    ("name", 256),
];

/// The longest value `name` may have.
pub fn max_param_bytes(name: &str) -> usize {
    PARAM_BYTES
        .iter()
        .find(|(known, _)| *known == name)
        .map_or(DEFAULT_PARAM_BYTES, |(_, max)| *max)
}

/// The longest `authorization_details` (RFC 9396), in bytes.
pub const AUTHORIZATION_DETAILS_BYTES: usize = 4096;

/// The most entries `authorization_details` may carry.
pub const AUTHORIZATION_DETAILS_ENTRIES: usize = 5;

/// The longest string field of an `authorization_details` entry, in bytes.
pub const AUTHORIZATION_DETAILS_FIELD_BYTES: usize = 200;

/// The longest DPoP proof (RFC 9449 §4), in bytes: a JWT whose header
/// carries the public key (an RSA-4096 key is under 1 KiB).
pub const DPOP_PROOF_BYTES: usize = 8 * 1024;

/// The longest DPoP `jti`, in bytes: enough for any random identifier
/// (RFC 9449 §4.2 asks for 96 bits at least); each one is remembered
/// until the proof expires, so it is bounded too.
pub const DPOP_JTI_BYTES: usize = 256;

/// The largest form body at the authorization endpoint, PAR, the sign-in
/// forms and the account page: every parameter at its bound fits, with
/// the 32 KiB WebAuthn answer. Larger bodies are answered 413.
pub const FORM_BODY_BYTES: usize = 64 * 1024;

/// The largest form body at the token and revocation endpoints: a client
/// assertion, a code or refresh token and a few short parameters.
pub const TOKEN_BODY_BYTES: usize = 16 * 1024;

/// The largest form body at introspection: one token of up to 16 KiB.
pub const INTROSPECTION_BODY_BYTES: usize = 32 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_parameter_fits_in_a_form_body() {
        let mut seen = std::collections::HashSet::new();
        for (name, max) in PARAM_BYTES {
            assert!(seen.insert(name), "{name} is listed twice");
            assert!(name.len() <= MAX_PARAM_NAME_BYTES, "{name}");
            assert!(*max <= FORM_BODY_BYTES / 2, "{name}");
        }
        assert_eq!(max_param_bytes("state"), 512);
        assert_eq!(max_param_bytes("login_hint"), 256);
        assert_eq!(max_param_bytes("ui_locales"), DEFAULT_PARAM_BYTES);
        // A 43-character S256 challenge and a 128-character verifier fit.
        assert!(max_param_bytes("code_challenge") >= 43);
        assert_eq!(max_param_bytes("code_verifier"), 128);
    }

    proptest::proptest! {
        /// Whatever is sent, a value is accepted exactly when it is within
        /// its parameter's bound, counted after percent-decoding.
        #[test]
        fn values_are_accepted_exactly_within_their_bound(
            which in 0..PARAM_BYTES.len() + 1,
            extra in 0usize..3,
            shorter in 0usize..40,
            encoded in proptest::bool::ANY,
        ) {
            let (name, max) = PARAM_BYTES.get(which).copied().unwrap_or(("ui_locales", DEFAULT_PARAM_BYTES));
            let len = (max + extra).saturating_sub(shorter).max(1);
            let value = if encoded { "%C3%A9".repeat(len / 2) + &"e".repeat(len % 2) } else { "e".repeat(len) };
            let parsed = crate::authorization_request::params_from(format!("{name}={value}").as_bytes());
            proptest::prop_assert_eq!(parsed.is_ok(), len <= max, "{} of {} bytes", name, len);
        }
    }
}
