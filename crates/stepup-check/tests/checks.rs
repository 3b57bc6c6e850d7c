//! One fixture per finding, each found at its place; the clean fixture
//! yields nothing.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use stepup_check::{ApiSpec, Finding, Inputs, Position, ServerCaps, check, report};
use stepup_core::Policy;

const POLICY: &str = r#"levels = [
  { name = "pwd", acr = "urn:stepup:acr:pwd" },
  { name = "mfa", acr = "urn:stepup:acr:mfa" },
  { name = "phr", acr = "urn:stepup:acr:phr" },
]
[default]
acr = ["pwd"]

[[route]]
name = "add payee"
methods = ["POST"]
path = "/accounts/{id}/payees"
acr = ["mfa"]
max_age = 300

[[route]]
name = "transfer"
methods = ["POST"]
path = "/accounts/{id}/transfers"
acr = ["mfa"]
max_age = 300

[[risk]]
name = "large amount"
when = "amount > 1000"
routes = ["transfer"]
require = { acr = ["phr"], max_age = 60 }
reason = "Large transfers need you to confirm it is you, just now."
"#;

const SPEC: &str = r#"openapi: 3.0.3
info: { title: bank, version: "1" }
paths:
  /accounts/{id}/balance:
    get: {}
  /accounts/{id}/payees:
    post:
      x-stepup-sensitivity: critical
  /accounts/{id}/transfers:
    post:
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                amount: { type: number }
                to: { type: string }
"#;

fn caps() -> ServerCaps {
    let all = ["urn:stepup:acr:pwd", "urn:stepup:acr:mfa", "urn:stepup:acr:phr"].map(String::from);
    ServerCaps {
        source: "server.toml".into(),
        acr_offered: all.to_vec(),
        acr_meetable: Some(all.to_vec()),
        session_seconds: Some(8 * 3600),
        elevated_token_seconds: Some(60),
    }
}

struct Case {
    policy: String,
    spec: String,
    caps: ServerCaps,
    amount_pointer: &'static str,
}

impl Case {
    fn clean() -> Self {
        Self {
            policy: POLICY.into(),
            spec: SPEC.into(),
            caps: caps(),
            amount_pointer: "/amount",
        }
    }

    fn run(&self) -> Vec<Finding> {
        let policy = Policy::from_toml("policy.toml", &self.policy).unwrap();
        let spec = ApiSpec::parse(&self.spec).unwrap();
        check(&Inputs {
            policy: &policy,
            policy_file: "policy.toml",
            api: Some((&spec, "openapi.yaml")),
            server: Some(&self.caps),
            clock_skew_seconds: 30,
            amount_pointer: Some(self.amount_pointer),
            currency_pointer: None,
        })
    }
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// The findings are exactly one, of `code`, in `file` at `line`.
fn only(findings: &[Finding], code: &str, file: &str, line: usize) -> Finding {
    assert_eq!(findings.len(), 1, "{}", report::text(findings));
    let f = findings[0].clone();
    assert_eq!(f.code, code, "{}", report::text(findings));
    assert_eq!(f.place.file, file);
    assert_eq!(f.place.at.line, line, "{}", report::text(findings));
    assert!(f.place.at.column >= 1);
    f
}

#[test]
fn the_clean_fixture_yields_nothing() {
    let findings = Case::clean().run();
    assert!(findings.is_empty(), "{}", report::text(&findings));
}

#[test]
fn su001_a_state_changing_operation_under_the_base_level() {
    let mut case = Case::clean();
    case.spec
        .push_str("  /accounts/{id}/payment-details:\n    put: {}\n");
    let f = only(
        &case.run(),
        "SU001",
        "openapi.yaml",
        line_of(&case.spec, "put: {}"),
    );
    assert_eq!(
        f.place.at,
        Position {
            line: line_of(&case.spec, "put: {}"),
            column: 5
        }
    );
    assert!(
        f.message
            .contains("PUT /accounts/{id}/payment-details changes state"),
        "{}",
        f.message
    );
    assert!(f.hint.contains("methods = [\"PUT\"]"), "{}", f.hint);
    // The rule that decides it is named, with its place.
    assert_eq!(f.related[0].0.file, "policy.toml");
    assert_eq!(f.related[0].0.at.line, line_of(POLICY, "[default]"));

    // Reviewed as harmless: not reported.
    let mut case = Case::clean();
    case.spec
        .push_str("  /accounts/{id}/payment-details:\n    put:\n      x-stepup-sensitivity: low\n");
    assert!(case.run().is_empty());

    // A read marked critical is reported too.
    let mut case = Case::clean();
    case.spec = case
        .spec
        .replace("    get: {}", "    get:\n      x-stepup-sensitivity: critical");
    only(
        &case.run(),
        "SU001",
        "openapi.yaml",
        line_of(&case.spec, "    get:"),
    );
}

#[test]
fn su002_a_critical_operation_without_max_age() {
    let mut case = Case::clean();
    case.policy = POLICY.replacen("max_age = 300\n", "", 1);
    let f = only(&case.run(), "SU002", "openapi.yaml", line_of(SPEC, "    post:"));
    assert!(
        f.message
            .contains("POST /accounts/{id}/payees is marked critical"),
        "{}",
        f.message
    );
}

#[test]
fn su003_a_route_that_matches_no_operation() {
    let mut case = Case::clean();
    case.policy = POLICY.replace("/accounts/{id}/payees", "/accounts/{id}/payess");
    let findings = case.run();
    // The typo also leaves the real operation under the default rule.
    let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, ["SU001", "SU003"], "{}", report::text(&findings));
    let f = &findings[1];
    assert_eq!(f.place.file, "policy.toml");
    assert_eq!(f.place.at.line, route_line(&case.policy, 0));
    assert!(f.message.contains("matches no operation"), "{}", f.message);
}

#[test]
fn su004_a_route_shadowed_by_more_specific_ones() {
    let mut case = Case::clean();
    case.policy.push_str(
        "\n[[route]]\nname = \"account writes\"\nmethods = [\"POST\"]\npath = \"/accounts/{id}/{*rest}\"\nacr = [\"mfa\"]\nmax_age = 300\n",
    );
    let findings = case.run();
    assert_eq!(findings.len(), 1, "{}", report::text(&findings));
    let f = &findings[0];
    assert_eq!(f.code, "SU004");
    assert_eq!(f.place.file, "policy.toml");
    assert_eq!(f.place.at.line, route_line(&case.policy, 2));
    let written = line_of(&case.policy, "name = \"account writes\"");
    assert!(
        (written - 1..=written + 3).contains(&f.place.at.line),
        "the loader's place is the route's"
    );
    assert!(f.message.contains("POST /accounts/{id}/payees"), "{}", f.message);
    assert_eq!(f.related[0].0.file, "policy.toml");
}

#[test]
fn su005_an_acr_the_server_does_not_offer() {
    let mut case = Case::clean();
    case.caps.acr_offered.retain(|a| !a.ends_with("phr"));
    let f = only(&case.run(), "SU005", "policy.toml", risk_line(&case.policy));
    assert!(f.message.contains("urn:stepup:acr:phr"), "{}", f.message);
    assert!(f.message.contains("server.toml does not offer"), "{}", f.message);
    assert_eq!(
        f.severity,
        stepup_check::Severity::Error,
        "no acceptable value is offered"
    );

    // One acceptable value of several not offered: a warning.
    let mut case = Case::clean();
    case.policy = POLICY.replace(
        "require = { acr = [\"phr\"]",
        "require = { acr = [\"phr\", \"mfa\"]",
    );
    case.caps.acr_offered.retain(|a| !a.ends_with("phr"));
    let f = only(&case.run(), "SU005", "policy.toml", risk_line(&case.policy));
    assert_eq!(f.severity, stepup_check::Severity::Warning);
}

/// Where route `index` is written, as the policy loader locates it.
fn route_line(policy: &str, index: usize) -> usize {
    Policy::from_toml("policy.toml", policy).unwrap().routes()[index]
        .location
        .line
}

/// Where the risk rule is written, as the policy loader locates it.
fn risk_line(policy: &str) -> usize {
    let p = Policy::from_toml("policy.toml", policy).unwrap();
    p.risk_rules()[0].location.line
}

#[test]
fn su006_an_acr_no_user_can_meet() {
    let mut case = Case::clean();
    case.caps
        .acr_meetable
        .as_mut()
        .unwrap()
        .retain(|a| !a.ends_with("phr"));
    let f = only(&case.run(), "SU006", "policy.toml", risk_line(&case.policy));
    assert!(f.hint.contains("passkeys"), "{}", f.hint);
}

#[test]
fn su007_a_max_age_within_the_clock_skew() {
    let mut case = Case::clean();
    case.policy = POLICY.replace("max_age = 60", "max_age = 20");
    let findings = case.run();
    let f = findings.iter().find(|f| f.code == "SU007").expect("SU007");
    assert_eq!(f.place.at.line, risk_line(&case.policy));
    assert!(f.message.contains("20 s"), "{}", f.message);
}

#[test]
fn su008_a_max_age_longer_than_sessions() {
    let mut case = Case::clean();
    case.caps.session_seconds = Some(200);
    let findings = case.run();
    let lines: Vec<usize> = findings.iter().map(|f| f.place.at.line).collect();
    assert!(
        findings.iter().all(|f| f.code == "SU008"),
        "{}",
        report::text(&findings)
    );
    assert_eq!(
        findings.len(),
        2,
        "both 300 s routes: {}",
        report::text(&findings)
    );
    assert_eq!(lines, [route_line(POLICY, 0), route_line(POLICY, 1)]);
}

#[test]
fn su009_elevated_tokens_outliving_the_strictest_max_age() {
    let mut case = Case::clean();
    case.caps.elevated_token_seconds = Some(900);
    let f = only(&case.run(), "SU009", "policy.toml", risk_line(&case.policy));
    assert!(f.message.contains("900 s"), "{}", f.message);
    assert!(f.hint.contains("60 s or less"), "{}", f.hint);
}

#[test]
fn su010_a_risk_rule_reading_a_field_the_body_lacks() {
    let mut case = Case::clean();
    case.amount_pointer = "/sum";
    let f = only(
        &case.run(),
        "SU010",
        "openapi.yaml",
        line_of(SPEC, "type: object"),
    );
    assert!(f.message.contains("/sum"), "{}", f.message);
    assert_eq!(f.related[0].0.at.line, risk_line(POLICY));
}

#[test]
fn reports_in_json_and_sarif_carry_the_places() {
    let mut case = Case::clean();
    case.amount_pointer = "/sum";
    case.caps.elevated_token_seconds = Some(900);
    let findings = case.run();
    let json = report::json(&findings);
    assert_eq!(json["findings"].as_array().unwrap().len(), 2);
    assert_eq!(json["findings"][0]["location"]["file"], "openapi.yaml");
    let sarif = report::sarif(&findings, "0.1.0");
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["ruleId"], findings[0].code);
    assert_eq!(
        results[0]["locations"][0]["physicalLocation"]["region"]["startLine"],
        findings[0].place.at.line
    );
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
    let index = results[0]["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[index]["id"], results[0]["ruleId"]);
    let text = report::text(&findings);
    assert!(
        text.starts_with(&format!("openapi.yaml:{}:", findings[0].place.at.line)),
        "{text}"
    );
    assert!(text.contains("error[SU010]"), "{text}");
}
