//! `stepup sim`: a short fixed-seed run against the demo, as CI runs it.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::process::Command;

mod support;

use support::{Killed, admin, enrol, server_config};

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
        "flood",
    ] {
        assert!(
            attacks["by_kind"][kind]["attempted"].as_u64().unwrap() >= 1,
            "no {kind} attack"
        );
    }
    // Issue 16's attacks ran (the sim's deployment locates its addresses)
    // and were refused.
    for name in [
        "creditor-near-collision",
        "details-amount-hidden",
        "forwarded-spoof-behind-proxy",
        // Issue 17.
        "slow-client",
        "backslash-path-bypass",
        "rogue-resource",
        "swapped-account-step-up",
    ] {
        let attempt = attacks["list"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name);
        assert_eq!(
            attempt.map(|a| &a["blocked"]),
            Some(&serde_json::json!(true)),
            "{name}: {attacks}"
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

/// A deployment the simulation did not start (a `stepup demo` process,
/// accounts made with `stepup admin`), described by a target file: the
/// virtual users and attacks run against it; attacks that need the
/// simulation's own deployment are listed as not run, not as blocked.
#[test]
fn a_simulation_runs_against_a_deployment_described_by_a_target_file() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("stepup-sim-target-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["demo", "--port", "0", "--data-dir"])
        .arg(dir.join("demo"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let demo = Killed(demo);
    let mut printed = String::new();
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let after = |label: &str| {
        printed
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap()
                    .trim_end_matches([';', '.', '/'])
                    .to_owned()
            })
            .unwrap_or_else(|| panic!("no {label:?} in {printed}"))
    };
    let issuer = after("Authorization server:");
    let api = after("Banking API:");
    let gateway = after("The same API behind the gateway:");
    let demo_secret = after("Sign in as demo / demo-password; TOTP secret");

    // Accounts for the hostile actors, made beside the running demo.
    let config = dir.join("admin.toml");
    let database = format!("sqlite://{}", dir.join("demo").join("stepup.db").display());
    std::fs::write(&config, server_config(&issuer, &database, &api, "")).unwrap();
    let mut accounts = String::new();
    for role in ["victim", "brute_force_target", "code_reuse_target"] {
        let name = format!("t-{role}");
        let password = format!("{role}-password-1");
        let secret = enrol(&config, &name, &password);
        accounts.push_str(&format!(
            "{role} = {{ name = \"{name}\", password = \"{password}\", totp_secret = \"{secret}\" }}\n"
        ));
    }
    // And one with a password only (it must not bind a passkey).
    admin(
        &config,
        &["user", "add", "t-password-only", "--password-stdin"],
        "password-only-1\n",
    );
    accounts.push_str("password_only = { name = \"t-password-only\", password = \"password-only-1\" }\n");
    let target = dir.join("target.toml");
    std::fs::write(
        &target,
        format!(
            "issuer = \"{issuer}\"\napi = \"{api}\"\ngateway = \"{gateway}\"\nother_client_id = \"demo-web\"\n\
             {accounts}\n[[user]]\nname = \"demo\"\npassword = \"demo-password\"\ntotp_secret = \"{demo_secret}\"\n"
        ),
    )
    .unwrap();

    let out_dir = dir.join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["sim", "--duration", "4s", "--seed", "3", "--target"])
        .arg(&target)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["run"]["users"], 1);
    assert!(!out_dir.join("data").exists(), "no deployment of its own");
    let attacks = &report["attacks"];
    assert!(attacks["attempted"].as_u64().unwrap() >= 30, "{attacks}");
    assert_eq!(attacks["through"], 0, "{attacks}");
    let not_run: Vec<&str> = attacks["not_run"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        not_run,
        [
            "token-from-another-country",
            "forwarded-spoof-behind-proxy",
            "expired-token",
            "not-yet-valid-token",
            "account-lockout-flood",
            // A flood from the simulation's own address would slow its users.
            "authorize-flood"
        ],
        "{attacks}"
    );
    assert!(report["trusted_calls"]["total"].as_u64().unwrap() > 3);
    assert_eq!(report["trusted_calls"]["refused"], 0);
    assert!(
        report.get("memory").is_none(),
        "the deployment's memory is not the simulator's"
    );
    assert!(stdout.contains("not run: \"expired-token\""), "{stdout}");
    drop(demo);

    // A target file with a mistake is named.
    std::fs::write(
        &target,
        "issuer = \"http://x\"\napi = \"ftp://y\"\nother_client_id = \"a\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["sim", "--target"])
        .arg(&target)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("target.toml"), "{stderr}");
}
