//! Authorization requests (query strings and form bodies from anyone) never
//! panic the parts of the server that read them without a database: the
//! parameters, the `claims` parameter, PKCE, and the redirect URI match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepup_core::authorization_request::{essential_acr, params_from, redirect_uri_matches};
use stepup_core::pkce::CodeChallenge;

fuzz_target!(|data: &[u8]| {
    let Ok(params) = params_from(data) else { return };
    if let Some(claims) = params.get("claims") {
        let _ = essential_acr(claims);
    }
    if let Some(challenge) = params.get("code_challenge") {
        let method = params.get("code_challenge_method").map(String::as_str);
        if let Ok(c) = CodeChallenge::parse(challenge, method) {
            let _ = c.verify(params.get("code_verifier").map_or("", String::as_str));
        }
    }
    if let Some(requested) = params.get("redirect_uri") {
        for registered in ["http://127.0.0.1/callback", "https://app.example/cb", requested.as_str()] {
            let matched = redirect_uri_matches(registered, requested, true);
            // An exact match always matches; nothing else may for a
            // confidential client.
            assert_eq!(redirect_uri_matches(registered, requested, false), registered == requested);
            assert!(matched || registered != requested);
        }
    }
});
