//! `WWW-Authenticate` parsing never panics, and what it accepts survives a
//! build → parse round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepup_core::challenge::{BearerChallenge, format_challenges, parse_www_authenticate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(challenges) = parse_www_authenticate([text]) else {
        return;
    };
    let rebuilt = format_challenges(&challenges);
    let again = parse_www_authenticate([rebuilt.as_str()]).expect("what we build parses");
    assert_eq!(challenges, again);
    for c in &challenges {
        if let Ok(bearer) = BearerChallenge::from_challenge(c) {
            let _ = bearer.to_challenge().to_string();
        }
    }
});
