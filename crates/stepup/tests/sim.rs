//! `stepup sim`: a short fixed-seed run against the demo, as CI runs it.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn a_short_simulation_blocks_every_attack_and_refuses_no_trusted_call() {
    let out_dir = std::env::temp_dir().join(format!("stepup-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["sim", "--duration", "6s", "--users", "2", "--seed", "7", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    let attacks = &report["attacks"];
    assert!(attacks["attempted"].as_u64().unwrap() >= 30, "{attacks}");
    assert_eq!(attacks["through"], 0, "{attacks}");
    assert_eq!(attacks["blocked"], attacks["attempted"]);
    // Every family of the issue is there.
    for kind in [
        "token misuse",
        "token forgery",
        "sender constraint",
        "authorization code",
        "authorization request",
        "refresh token",
        "sign-in",
        "transaction",
        "header spoofing",
        "malformed request",
    ] {
        assert!(
            attacks["by_kind"][kind]["attempted"].as_u64().unwrap() >= 1,
            "no {kind} attack"
        );
    }
    let calls = &report["trusted_calls"];
    assert!(calls["total"].as_u64().unwrap() > 20, "{calls}");
    assert_eq!(calls["refused"], 0, "{calls}");
    // Both doors were used.
    assert!(calls["by_door"]["guard"].as_u64().unwrap() > 0);
    assert!(calls["by_door"]["gateway"].as_u64().unwrap() > 0);
    // Virtual users stepped up, and it was measured.
    assert!(
        report["friction"]["step_ups"].as_u64().unwrap() >= 1,
        "{}",
        report["friction"]
    );
    assert!(report["reauth_latency"]["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(report["guard_decision"]["count"].as_u64().unwrap() > 0);

    // Memory was sampled (the deployment runs in the simulator's process).
    let memory = &report["memory"];
    assert!(memory["samples"].as_u64().unwrap() >= 4, "{memory}");
    assert!(memory["max_mib"].as_f64().unwrap() > 1.0, "{memory}");

    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "the report has plots");
    assert!(html.contains("<polyline"), "the memory plot");
    assert!(html.contains("No attack got through"));
    assert!(!html.contains("<script"), "self-contained, no scripts");
    assert!(stdout.contains("attacks: "), "{stdout}");
}
