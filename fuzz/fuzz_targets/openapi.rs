//! OpenAPI descriptions (YAML or JSON, from anyone's repository) never make
//! the policy checker panic, whatever they hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepup_check::{ApiSpec, Inputs, check};
use stepup_core::Policy;

const POLICY: &str = include_str!("../../policies/bank.toml");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = ApiSpec::parse(text) else { return };
    let policy = Policy::from_toml("bank.toml", POLICY).expect("the shipped policy loads");
    let _ = check(&Inputs {
        policy: &policy,
        policy_file: "bank.toml",
        api: Some((&spec, "openapi.yaml")),
        server: None,
        clock_skew_seconds: 30,
        amount_pointer: Some("/amount"),
        currency_pointer: Some("/currency"),
    });
});
