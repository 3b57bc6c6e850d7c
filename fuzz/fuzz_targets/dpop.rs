//! DPoP proof checking (RFC 9449 §4.3) never panics on any proof, URI or
//! method, and a proof it accepts really matches the request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepup_core::UnixTime;
use stepup_core::dpop::{ProofContext, ProofPolicy, verify_proof};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The input is split into the proof, the request URI and the method,
    // so the URI normalisation is fuzzed as well as the proof parser.
    let mut parts = text.splitn(3, '\n');
    let proof = parts.next().unwrap_or("");
    let uri = parts.next().unwrap_or("https://api.example/accounts/42");
    let method = parts.next().unwrap_or("GET");
    let context = ProofContext {
        method,
        uri,
        access_token: Some("token"),
        bound_jkt: None,
        nonce: None,
    };
    if let Ok(verified) = verify_proof(proof, &context, &ProofPolicy::default(), UnixTime(1_800_000_000)) {
        // Only a signed proof can pass; fuzzing cannot forge one, so an
        // accepted proof here is a bug.
        panic!("accepted a proof it cannot have verified: {verified}");
    }
});
