//! Compact JWS verification never panics on any input, whatever the keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepup_core::jwk::{Algorithm, Jwks};
use stepup_core::jws::{VerificationPolicy, verify_compact};

// The RFC 7515 Appendix A.3 EC key: a real key, so inputs reach the
// signature check as well as the parsers.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k",
  "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
  "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fuzz_target!(|data: &[u8]| {
    let keys = Jwks::from_json(JWKS.as_bytes()).expect("the fixed key set parses");
    let policy = VerificationPolicy::access_token(Algorithm::ALL);
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verify_compact(token, &keys, &policy);
    }
    // Key sets from the network are untrusted too.
    let _ = Jwks::from_json(data);
});
