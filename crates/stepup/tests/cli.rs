//! The `stepup` command line, run as a user would.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn stepup(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap()
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn check_accepts_the_shipped_policy() {
    let out = stepup(&["policy", "check", "policies/bank.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "policies/bank.toml: ok (3 levels, 7 routes, 3 risk rules, 0 warnings)\n"
    );
}

#[test]
fn check_reports_located_errors_and_fails() {
    let dir = std::env::temp_dir().join(format!("stepup-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "levels = [{ name = \"pwd\", acr = \"urn:stepup:acr:pwd\" }]\n[default]\nacr = [\"pwd\"]\n\n[[route]]\npath = \"/pay\"\nacr = [\"gold\"]\n",
    )
    .unwrap();
    let out = stepup(&["policy", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.toml:7:8: unknown assurance level \"gold\"; expected one of: pwd"),
        "{stderr}"
    );
    let out = stepup(&["policy", "check", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explain_prints_rule_decision_and_challenge() {
    let out = stepup(&[
        "policy",
        "explain",
        "--policy",
        "policies/bank.toml",
        "POST",
        "/accounts/42/payees",
        "--acr",
        "urn:stepup:acr:pwd",
        "--auth-age",
        "30",
        "--scope",
        "payments:write",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("rule:     add payee"), "{stdout}");
    assert!(
        stdout.contains("decision: step-up (401 insufficient_user_authentication)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "WWW-Authenticate: Bearer error=\"insufficient_user_authentication\", error_description=\"a stronger authentication is required (rule 'add payee')\", acr_values=\"urn:stepup:acr:mfa\", max_age=\"300\""
        ),
        "{stdout}"
    );
}

#[test]
fn explain_allows_a_fresh_strong_token() {
    let out = stepup(&[
        "policy",
        "explain",
        "--policy",
        "policies/bank.toml",
        "POST",
        "/accounts/42/transfers/large",
        "--acr",
        "urn:stepup:acr:mfa",
        "--auth-time",
        "1000",
        "--now",
        "1059",
        "--scope",
        "openid payments:write",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("rule:     large transfer"), "{stdout}");
    assert!(stdout.contains("decision: allow (200)"), "{stdout}");
    assert!(!stdout.contains("WWW-Authenticate"), "{stdout}");
}

#[test]
fn explain_refuses_dot_segments() {
    let out = stepup(&[
        "policy",
        "explain",
        "--policy",
        "policies/bank.toml",
        "GET",
        "/a/../b",
    ]);
    assert!(text(&out.stdout).contains("invalid request (400)"));
}

#[test]
fn explain_shows_signals_and_risk_rules() {
    let out = stepup(&[
        "policy",
        "explain",
        "--policy",
        "policies/bank.toml",
        "POST",
        "/accounts/42/transfers",
        "--acr",
        "urn:stepup:acr:mfa",
        "--auth-age",
        "120",
        "--scope",
        "payments:write",
        "--amount",
        "5000",
        "--currency",
        "EUR",
        "--country",
        "FR",
        "--auth-country",
        "FR",
        "--impossible-travel",
        "false",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "signals:  amount 5000, currency EUR, country FR, auth_country FR, country_changed false"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("when amount > 1000 or currency != 'EUR': fires: acr urn:stepup:acr:phr or urn:stepup:acr:mfa (or stronger); max_age 60 s"),
        "{stdout}"
    );
    assert!(stdout.contains("risk:     signed in elsewhere"), "{stdout}");
    assert!(
        stdout.contains("when country_changed or impossible_travel: does not fire"),
        "{stdout}"
    );
    assert!(
        stdout.contains("when device_changed: unknown, does not fire (unknown: device_changed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("error_description=\"Large transfers need you to confirm it is you, just now.\", acr_values=\"urn:stepup:acr:phr urn:stepup:acr:mfa\", max_age=\"60\""),
        "{stdout}"
    );

    // A small amount: allowed.
    let out = stepup(&[
        "policy",
        "explain",
        "--policy",
        "policies/bank.toml",
        "POST",
        "/accounts/42/transfers",
        "--acr",
        "urn:stepup:acr:mfa",
        "--auth-age",
        "120",
        "--scope",
        "payments:write",
        "--amount",
        "50",
        "--currency",
        "EUR",
    ]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("decision: allow (200)"), "{stdout}");
    assert!(stdout.contains("does not fire"), "{stdout}");
}

#[test]
fn explain_looks_addresses_up_in_a_geoip_database() {
    let base = [
        "policy",
        "explain",
        "--policy",
        "policies/bank.toml",
        "GET",
        "/accounts/1/balance",
    ];
    let mut args = base.to_vec();
    args.extend(["--ip", "192.0.2.1"]);
    let out = stepup(&args);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--geoip"),
        "--ip needs a database: {}",
        text(&out.stderr)
    );
    let mut args = base.to_vec();
    args.extend(["--ip", "192.0.2.1", "--geoip", "/nonexistent/City.mmdb"]);
    let out = stepup(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot use the geolocation database /nonexistent/City.mmdb"),
        "{}",
        text(&out.stderr)
    );
}

/// The check README's CI example runs: the demo's policy against its API
/// description and the example server configuration.
const DEMO_CHECK: [&str; 11] = [
    "policy",
    "check",
    "policies/bank.toml",
    "--openapi",
    "policies/bank-openapi.json",
    "--server-config",
    "config/stepup.example.toml",
    "--amount-pointer",
    "/amount",
    "--currency-pointer",
    "/currency",
];

#[test]
fn the_demo_policy_is_clean_against_its_api_and_server() {
    let out = stepup(&DEMO_CHECK);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("8 operations, the server (config/stepup.example.toml): no findings"));
}

#[test]
fn findings_exit_1_in_text_json_and_sarif() {
    let mut args = DEMO_CHECK.to_vec();
    args[8] = "/sum";
    let out = stepup(&args);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let spec = std::fs::read_to_string(workspace_root().join("policies/bank-openapi.json")).unwrap();
    // The operation's body schema reference, where the finding points.
    let line = spec
        .lines()
        .position(|l| l.contains("\"#/components/schemas/Transfer\""))
        .unwrap()
        + 1;
    assert!(
        stdout.starts_with(&format!("policies/bank-openapi.json:{line}:")),
        "{stdout}"
    );
    assert!(stdout.contains("error[SU010]"), "{stdout}");

    args.extend(["--format", "sarif"]);
    let out = stepup(&args);
    assert_eq!(out.status.code(), Some(1));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ruleId"], "SU010");
    let region = &results[0]["locations"][0]["physicalLocation"];
    assert_eq!(region["artifactLocation"]["uri"], "policies/bank-openapi.json");
    assert_eq!(region["region"]["startLine"], line);

    let n = args.len();
    args[n - 1] = "json";
    let out = stepup(&args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["findings"][1]["related"][0]["location"]["file"],
        "policies/bank.toml"
    );
}

#[test]
fn unreadable_inputs_exit_2() {
    let out = stepup(&["policy", "check", "policies/bank.toml", "--openapi", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("Cargo.toml:"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("OpenAPI 3.x"));
    let out = stepup(&[
        "policy",
        "check",
        "policies/bank.toml",
        "--openapi",
        "missing.yaml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = stepup(&[
        "policy",
        "check",
        "policies/bank.toml",
        "--server-config",
        "missing.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
