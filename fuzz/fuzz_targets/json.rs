//! Exact JSON (transaction bodies, `authorization_details`) never panics
//! nor overflows the stack, what it reads survives a write → read round
//! trip unchanged (numbers as written), and amounts read without panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepup_core::json::Json;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = Json::from_slice(data) else {
        return;
    };
    let written = value.to_string();
    let again = Json::from_slice(written.as_bytes()).expect("what we write reads");
    assert_eq!(value, again);
    if let Some(Ok(amount)) = value.pointer("/amount").and_then(Json::amount) {
        let _ = amount.to_string();
    }
});
