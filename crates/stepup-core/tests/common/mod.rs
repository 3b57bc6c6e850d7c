//! A policy of a mid-sized API with risk rules, shared by the allocation
//! test and the risk benchmark.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use stepup_core::Policy;
use stepup_core::amount::Decimal;
use stepup_core::risk::Signals;

/// 100 routes over 20 services, and 20 risk rules: 10 for every request,
/// 10 for one service each, reading every kind of signal.
pub fn policy_with_risk(risk_rules: bool) -> Policy {
    let mut src = String::from(
        "levels = [{ name = \"pwd\", acr = \"urn:stepup:acr:pwd\" }, { name = \"mfa\", acr = \"urn:stepup:acr:mfa\" }, { name = \"phr\", acr = \"urn:stepup:acr:phr\" }]\n[default]\nacr = [\"pwd\"]\n",
    );
    for svc in 0..20 {
        for (i, (method, tail)) in [
            ("GET", "/items"),
            ("POST", "/items"),
            ("GET", "/items/{id}"),
            ("DELETE", "/items/{id}"),
            ("POST", "/items/{id}/approve"),
        ]
        .iter()
        .enumerate()
        {
            let acr = if i % 2 == 0 { "pwd" } else { "mfa" };
            src.push_str(&format!(
                "[[route]]\nname = \"svc{svc} {method} {tail}\"\nmethods = [\"{method}\"]\npath = \"/svc{svc}{tail}\"\nacr = [\"{acr}\"]\nmax_age = 300\nscope = [\"svc{svc}\"]\n"
            ));
        }
    }
    if risk_rules {
        let everywhere = [
            "country_changed",
            "impossible_travel",
            "device_changed",
            "anomaly_score > 0.8",
            "request_rate > 600",
            "distinct_ips > 5",
            "failed_step_ups >= 3",
            "country in ['KP', 'IR', 'SY']",
            "asn in [64512, 64513] and not (country == 'FR')",
            "travel_speed_kmh > 900 and missing(device_changed)",
        ];
        for (i, when) in everywhere.iter().enumerate() {
            src.push_str(&format!(
                "[[risk]]\nname = \"global {i}\"\nwhen = \"{when}\"\nrequire = {{ acr = [\"mfa\"], max_age = 300 }}\n"
            ));
        }
        for svc in 0..10 {
            src.push_str(&format!(
                "[[risk]]\nname = \"amount {svc}\"\nwhen = \"amount > {} and currency == 'EUR'\"\nroutes = [\"svc{svc} POST /items/{{id}}/approve\"]\nrequire = {{ acr = [\"phr\", \"mfa\"], max_age = 60 }}\n",
                1000 + svc * 100
            ));
        }
    }
    let policy = Policy::from_toml("bench.toml", &src).unwrap();
    assert_eq!(policy.routes().len(), 100);
    assert_eq!(policy.risk_rules().len(), if risk_rules { 20 } else { 0 });
    policy
}

/// Every signal known, nothing suspicious: no rule fires.
pub fn trusted() -> Signals<'static> {
    Signals {
        amount: Some(Decimal::new(250, 0)),
        currency: Some("EUR"),
        country: Some("FR"),
        auth_country: Some("FR"),
        asn: Some(3215),
        device: Some("jkt-1"),
        bound_device: Some("jkt-1"),
        travel_speed_kmh: Some(0.0),
        impossible_travel: Some(false),
        anomaly_score: Some(0.1),
        request_rate: Some(12.0),
        distinct_ips: Some(1.0),
        failed_step_ups: Some(0.0),
    }
}

/// A large amount from another country on another device.
pub fn suspicious() -> Signals<'static> {
    Signals {
        amount: Some(Decimal::new(5000, 0)),
        country: Some("BR"),
        device: Some("jkt-2"),
        ..trusted()
    }
}
