//! Findings as text (like a compiler), JSON, or SARIF 2.1.0 for CI
//! annotations.

use serde_json::{Value, json};

use crate::{Finding, Place};

/// The codes and what each finds, for SARIF's rule table.
pub const RULES: [(&str, &str); 10] = [
    (
        "SU001",
        "A state-changing or critical operation needs no more than the base level",
    ),
    ("SU002", "A critical operation has no max_age"),
    ("SU003", "A policy route matches no operation of the API"),
    ("SU004", "A policy route is shadowed by more specific routes"),
    (
        "SU005",
        "A required acr is not offered by the authorization server",
    ),
    ("SU006", "A required acr cannot be met by any user"),
    ("SU007", "A max_age no longer than the clock skew"),
    ("SU008", "A max_age longer than the server's sessions"),
    (
        "SU009",
        "Elevated tokens outlive the strictest max_age they serve",
    ),
    (
        "SU010",
        "A risk rule reads a body field the operation's schema lacks",
    ),
];

/// `file:line:col: error[SU001]: message`, then the related places and the
/// hint, one finding after the other.
pub fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&format!(
            "{}: {}[{}]: {}\n",
            f.place,
            f.severity.as_str(),
            f.code,
            f.message
        ));
        for (place, note) in &f.related {
            out.push_str(&format!("  {place}: note: {note}\n"));
        }
        out.push_str(&format!("  hint: {}\n", f.hint));
    }
    out
}

fn place_json(place: &Place) -> Value {
    json!({ "file": place.file, "line": place.at.line, "column": place.at.column })
}

/// `{"findings": [...]}` with every field of each finding.
pub fn json(findings: &[Finding]) -> Value {
    let list: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "code": f.code,
                "severity": f.severity.as_str(),
                "message": f.message,
                "location": place_json(&f.place),
                "hint": f.hint,
                "related": f.related.iter().map(|(p, note)| json!({
                    "location": place_json(p), "message": note,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "findings": list })
}

fn sarif_location(place: &Place, message: Option<&str>) -> Value {
    let mut location = json!({
        "physicalLocation": {
            "artifactLocation": { "uri": place.file },
            "region": { "startLine": place.at.line, "startColumn": place.at.column },
        }
    });
    if let Some(m) = message {
        location["message"] = json!({ "text": m });
    }
    location
}

/// A SARIF 2.1.0 log with one run of `stepup policy check`.
pub fn sarif(findings: &[Finding], version: &str) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|(id, text)| json!({ "id": id, "shortDescription": { "text": text } }))
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.code,
                "ruleIndex": RULES.iter().position(|(id, _)| *id == f.code),
                "level": f.severity.as_str(),
                "message": { "text": format!("{} (hint: {})", f.message, f.hint) },
                "locations": [sarif_location(&f.place, None)],
                "relatedLocations": f.related.iter().enumerate().map(|(i, (p, note))| {
                    let mut l = sarif_location(p, Some(note));
                    l["id"] = json!(i);
                    l
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "stepup policy check",
                "version": version,
                "informationUri": "https://datatracker.ietf.org/doc/html/rfc9470",
                "rules": rules,
            } },
            "results": results,
        }],
    })
}
