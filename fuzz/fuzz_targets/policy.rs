//! Policy loading never panics, and a loaded policy decides any request
//! without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepup_core::{Policy, TokenFacts, UnixTime};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // First line: a request path to decide; the rest: the policy.
    let (path, source) = text.split_once('\n').unwrap_or(("/", text));
    if let Ok(policy) = Policy::from_toml("fuzz.toml", source) {
        let facts = TokenFacts {
            acr: Some("urn:stepup:acr:mfa"),
            auth_time: Some(UnixTime(0)),
            scope: Some("a b"),
        };
        let _ = policy.decide("GET", path, &facts, UnixTime(100));
    }
});
