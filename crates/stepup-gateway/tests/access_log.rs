//! The access log, in a binary of its own: its subscriber is the global
//! one, so no other test's thread can cache its call site as disabled.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod support;

use std::sync::Arc;

use serde_json::Value;
use support::*;

/// Where a test's log lines go.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_request_gets_a_structured_access_log_line() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let w = world("access-log", "").await;
    let token = w.issuer.token(PWD, 30);
    let ok = w.call("GET", "/accounts/42/balance", Some(&token)).await;
    assert_eq!(ok.status(), 200);
    let asked = w.call("POST", "/accounts/42/payees", Some(&token)).await;
    assert_eq!(asked.status(), 401);

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "stepup::access")
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields = |i: usize| lines[i]["fields"].clone();
    assert_eq!(fields(0)["method"], "GET");
    assert_eq!(fields(0)["path"], "/accounts/42/balance");
    assert_eq!(fields(0)["status"], 200);
    assert_eq!(fields(0)["outcome"], "allowed");
    assert_eq!(fields(0)["route"], "read balance");
    assert_eq!(fields(0)["subject"], "alice");
    assert!(fields(0)["micros"].as_u64().is_some());
    assert_eq!(fields(1)["status"], 401);
    assert_eq!(fields(1)["outcome"], "step_up");
    assert_eq!(fields(1)["route"], "add payee");
    assert!(!text.contains(&token), "the token was logged");
}
