//! Catches step-up misconfiguration before it ships: a policy read against
//! the API's OpenAPI description and the authorization server's
//! capabilities, reported like a compiler (file, line, column, a fix hint).
//!
//! | code | what |
//! |---|---|
//! | `SU001` | an operation that changes state, or is marked `x-stepup-sensitivity: critical`, needs no more than the base level |
//! | `SU002` | a critical operation has no `max_age`: an old sign-in passes |
//! | `SU003` | a policy route matches no operation of the API (a typo?) |
//! | `SU004` | a policy route matches operations but decides none: more specific routes shadow it |
//! | `SU005` | a required `acr` that the authorization server does not offer |
//! | `SU006` | a required `acr` the server offers but no user could meet (no usable factor combination) |
//! | `SU007` | a `max_age` no longer than the clock skew: fresh sign-ins are refused |
//! | `SU008` | a `max_age` longer than the server's session: it asks for nothing |
//! | `SU009` | elevated tokens outlive the strictest `max_age` they serve |
//! | `SU010` | a risk rule reads a body field the operation's schema does not have |
//!
//! Operations marked `x-stepup-sensitivity: low` (reviewed as harmless)
//! are not reported by `SU001`.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod located;
pub mod openapi;
pub mod report;

use std::collections::BTreeSet;

use stepup_core::Policy;
use stepup_core::acr::Rank;
use stepup_core::policy::{Location, Requirement};
use stepup_core::risk::Signal;
use stepup_core::route::PathTemplate;

pub use located::Position;
pub use openapi::{ApiSpec, Operation};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something is unprotected or can never pass.
    Error,
    /// Something is probably not what was meant.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A place in one of the inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// The file, as named on the command line.
    pub file: String,
    /// Where in it.
    pub at: Position,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.at)
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `SU001`...
    pub code: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// Where.
    pub place: Place,
    /// How to fix it.
    pub hint: String,
    /// Other places that explain it (the rule that decides, ...).
    pub related: Vec<(Place, String)>,
}

/// What the authorization server offers, as far as it is known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerCaps {
    /// Where these came from, for messages (a file or an issuer URL).
    pub source: String,
    /// `acr_values_supported` (or the configured levels' acr).
    pub acr_offered: Vec<String>,
    /// The acr values some user can meet: a level with a factor combination
    /// the server can run. `None`: unknown (discovery does not say).
    pub acr_meetable: Option<Vec<String>>,
    /// How long a sign-in session lasts, seconds.
    pub session_seconds: Option<u64>,
    /// How long access tokens above the base level live, seconds.
    pub elevated_token_seconds: Option<u64>,
}

/// The inputs of a check.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The policy.
    pub policy: &'a Policy,
    /// The policy's file name, for places.
    pub policy_file: &'a str,
    /// The API description and its file name.
    pub api: Option<(&'a ApiSpec, &'a str)>,
    /// The server's capabilities.
    pub server: Option<&'a ServerCaps>,
    /// The clock skew tokens are checked with (the guard's leeway), seconds.
    pub clock_skew_seconds: u64,
    /// Where the guard reads the amount in JSON bodies (its `[amount]`).
    pub amount_pointer: Option<&'a str>,
    /// Where it reads the currency.
    pub currency_pointer: Option<&'a str>,
}

fn policy_place(inputs: &Inputs<'_>, location: Location) -> Place {
    Place {
        file: inputs.policy_file.to_owned(),
        at: Position {
            line: location.line,
            column: location.column,
        },
    }
}

/// The weakest rank a requirement accepts (no acr: any token).
fn floor(policy: &Policy, requirement: &Requirement) -> Rank {
    requirement
        .acr_values
        .iter()
        .map(|a| policy.levels().rank(Some(a.as_str())))
        .min()
        .unwrap_or(Rank::UNKNOWN)
}

fn base_rank(policy: &Policy) -> Rank {
    let base = policy.levels().levels().first().map(|a| a.as_str());
    policy.levels().rank(base)
}

fn acr_list(requirement: &Requirement) -> String {
    if requirement.acr_values.is_empty() {
        return "any token".to_owned();
    }
    requirement
        .acr_values
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Runs every check the inputs allow; findings in input order.
pub fn check(inputs: &Inputs<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some((api, file)) = inputs.api {
        check_operations(inputs, api, file, &mut findings);
        check_routes(inputs, api, &mut findings);
        check_body_fields(inputs, api, file, &mut findings);
    }
    check_max_age(inputs, &mut findings);
    if let Some(server) = inputs.server {
        check_server(inputs, server, &mut findings);
    }
    findings
}

/// The rule deciding a request: its index (`None`: default) and the rule.
fn deciding_rule<'p>(
    policy: &'p Policy,
    method: &str,
    path: &str,
) -> (Option<usize>, &'p stepup_core::policy::Rule) {
    let index = policy.route_index(method, path).ok().flatten();
    let rule = index
        .and_then(|i| policy.routes().get(i))
        .unwrap_or_else(|| policy.default_rule());
    (index, rule)
}

/// SU001, SU002.
fn check_operations(inputs: &Inputs<'_>, api: &ApiSpec, file: &str, out: &mut Vec<Finding>) {
    let policy = inputs.policy;
    let base = base_rank(policy);
    let base_name = policy.levels().levels().first().map_or("-", |a| a.as_str());
    for op in &api.operations {
        let sensitivity = op.sensitivity.as_deref();
        let critical = sensitivity == Some("critical");
        if sensitivity == Some("low") || !(critical || op.changes_state()) {
            continue;
        }
        let (_, rule) = deciding_rule(policy, &op.method, &op.sample_path());
        let requirement = &rule.requirement;
        let place = Place {
            file: file.to_owned(),
            at: op.at,
        };
        let related = vec![(
            policy_place(inputs, rule.location),
            format!("rule \"{}\" decides it: {}", rule.name, acr_list(requirement)),
        )];
        let why = if critical {
            "is marked critical"
        } else {
            "changes state"
        };
        if floor(policy, requirement) <= base {
            out.push(Finding {
                code: "SU001",
                severity: Severity::Error,
                message: format!(
                    "{} {why} but needs no more than the base level ({base_name}): rule \"{}\" accepts {}",
                    op.label(),
                    rule.name,
                    acr_list(requirement)
                ),
                place,
                hint: format!(
                    "add a [[route]] with methods = [\"{}\"], path = \"{}\", acr above {base_name} and a max_age; or mark the operation `x-stepup-sensitivity: low` if it is harmless",
                    op.method, op.path
                ),
                related,
            });
        } else if critical && requirement.max_age.is_none() {
            out.push(Finding {
                code: "SU002",
                severity: Severity::Error,
                message: format!(
                    "{} is marked critical but rule \"{}\" sets no max_age: a sign-in of any age passes",
                    op.label(),
                    rule.name
                ),
                place,
                hint: "give the rule a max_age (e.g. 300) so the user proves presence recently".to_owned(),
                related,
            });
        }
    }
}

/// Whether a route answers the operation's method.
fn answers(methods: &stepup_core::route::Methods, method: &str) -> bool {
    match methods {
        stepup_core::route::Methods::Any => true,
        stepup_core::route::Methods::Only(list) => list
            .iter()
            .any(|m| m == method || (method == "HEAD" && m == "GET")),
    }
}

/// SU003, SU004.
fn check_routes(inputs: &Inputs<'_>, api: &ApiSpec, out: &mut Vec<Finding>) {
    let policy = inputs.policy;
    let templates: Vec<Option<PathTemplate>> = api
        .operations
        .iter()
        .map(|op| PathTemplate::parse(&op.path).ok())
        .collect();
    for (index, route) in policy.routes().iter().enumerate() {
        let Some(template) = &route.template else { continue };
        let mut overlapping = Vec::new();
        let mut decided = false;
        for (op, op_template) in api.operations.iter().zip(&templates) {
            let Some(op_template) = op_template else { continue };
            let overlaps = template.covers(op_template) || op_template.covers(template);
            if !(overlaps && answers(&route.methods, &op.method)) {
                continue;
            }
            overlapping.push(op);
            if deciding_rule(policy, &op.method, &op.sample_path()).0 == Some(index) {
                decided = true;
            }
        }
        let place = policy_place(inputs, route.location);
        if overlapping.is_empty() {
            out.push(Finding {
                code: "SU003",
                severity: Severity::Warning,
                message: format!(
                    "route \"{}\" ({}) matches no operation of the API",
                    route.name, template
                ),
                place,
                hint: "check the path and methods against the API description: a typo leaves the real operation under a weaker rule".to_owned(),
                related: Vec::new(),
            });
        } else if !decided {
            let op = overlapping[0];
            let (_, taker) = deciding_rule(policy, &op.method, &op.sample_path());
            out.push(Finding {
                code: "SU004",
                severity: Severity::Warning,
                message: format!(
                    "route \"{}\" never decides: every operation it matches ({}) is taken by a more specific route",
                    route.name,
                    overlapping.iter().map(|o| o.label()).collect::<Vec<_>>().join(", ")
                ),
                place,
                hint: "remove the route, or make it the rule that decides by narrowing the more specific one".to_owned(),
                related: vec![(
                    policy_place(inputs, taker.location),
                    format!("\"{}\" decides {}", taker.name, op.label()),
                )],
            });
        }
    }
}

/// Every rule that can require something: routes, the default, risk rules.
fn requirements(policy: &Policy) -> Vec<(&str, &Requirement, Location)> {
    let mut all: Vec<(&str, &Requirement, Location)> = policy
        .routes()
        .iter()
        .chain(std::iter::once(policy.default_rule()))
        .map(|r| (r.name.as_str(), &r.requirement, r.location))
        .collect();
    all.extend(
        policy
            .risk_rules()
            .iter()
            .map(|r| (r.name.as_str(), &r.requirement, r.location)),
    );
    all
}

/// SU007, and SU008 with the server's session.
fn check_max_age(inputs: &Inputs<'_>, out: &mut Vec<Finding>) {
    let session = inputs.server.and_then(|s| s.session_seconds);
    for (name, requirement, location) in requirements(inputs.policy) {
        let Some(max_age) = requirement.max_age else {
            continue;
        };
        if max_age <= inputs.clock_skew_seconds {
            out.push(Finding {
                code: "SU007",
                severity: Severity::Error,
                message: format!(
                    "rule \"{name}\" has max_age {max_age} s, no longer than the {} s clock skew: a sign-in made just now may already look too old",
                    inputs.clock_skew_seconds
                ),
                place: policy_place(inputs, location),
                hint: format!("use a max_age well above {} s (60 s or more)", inputs.clock_skew_seconds),
                related: Vec::new(),
            });
        }
        if let Some(session) = session
            && max_age > session
        {
            out.push(Finding {
                code: "SU008",
                severity: Severity::Warning,
                message: format!(
                    "rule \"{name}\" has max_age {max_age} s, longer than the server's {session} s sessions: it never asks for a fresher sign-in than any session has"
                ),
                place: policy_place(inputs, location),
                hint: format!("lower max_age below {session} s, or drop it"),
                related: Vec::new(),
            });
        }
    }
}

/// SU005, SU006, SU009.
fn check_server(inputs: &Inputs<'_>, server: &ServerCaps, out: &mut Vec<Finding>) {
    let policy = inputs.policy;
    let base = base_rank(policy);
    let mut strictest: Option<(u64, &str, Location)> = None;
    for (name, requirement, location) in requirements(policy) {
        let unknown: Vec<&str> = requirement
            .acr_values
            .iter()
            .map(|a| a.as_str())
            .filter(|a| !server.acr_offered.iter().any(|o| o == a))
            .collect();
        if !unknown.is_empty() {
            // Only when no acceptable value is offered can the rule never
            // pass; an unoffered alternative is a warning.
            let severity = if unknown.len() == requirement.acr_values.len() {
                Severity::Error
            } else {
                Severity::Warning
            };
            out.push(Finding {
                code: "SU005",
                severity,
                message: format!(
                    "rule \"{name}\" requires {}, which {} does not offer (offered: {})",
                    unknown.join(", "),
                    server.source,
                    if server.acr_offered.is_empty() {
                        "none".to_owned()
                    } else {
                        server.acr_offered.join(", ")
                    }
                ),
                place: policy_place(inputs, location),
                hint: "configure that level on the authorization server, or require one it offers".to_owned(),
                related: Vec::new(),
            });
        }
        if let Some(meetable) = &server.acr_meetable {
            let offered_unmeetable: Vec<&str> = requirement
                .acr_values
                .iter()
                .map(|a| a.as_str())
                .filter(|a| server.acr_offered.iter().any(|o| o == a) && !meetable.iter().any(|m| m == a))
                .collect();
            // A rule fails only when none of its acceptable values is meetable.
            let none_meetable = !requirement.acr_values.is_empty()
                && requirement
                    .acr_values
                    .iter()
                    .all(|a| !meetable.iter().any(|m| m == a.as_str()));
            if none_meetable && !offered_unmeetable.is_empty() {
                out.push(Finding {
                    code: "SU006",
                    severity: Severity::Error,
                    message: format!(
                        "rule \"{name}\" requires {}, which no user can meet on {}: no factor combination of that level can run there",
                        offered_unmeetable.join(", "),
                        server.source
                    ),
                    place: policy_place(inputs, location),
                    hint: "give the level a factor combination the server supports (passkeys need a domain name as issuer, not an IP address)".to_owned(),
                    related: Vec::new(),
                });
            }
        }
        if let Some(max_age) = requirement.max_age
            && floor(policy, requirement) > base
            && strictest.is_none_or(|(m, _, _)| max_age < m)
        {
            strictest = Some((max_age, name, location));
        }
    }
    if let (Some(lifetime), Some((max_age, name, location))) = (server.elevated_token_seconds, strictest)
        && lifetime > max_age
    {
        out.push(Finding {
            code: "SU009",
            severity: Severity::Warning,
            message: format!(
                "elevated access tokens of {} live {lifetime} s, longer than the {max_age} s max_age of rule \"{name}\": such a token keeps being refused there after {max_age} s while it is still valid",
                server.source
            ),
            place: policy_place(inputs, location),
            hint: format!("set the server's elevated token lifetime to {max_age} s or less"),
            related: Vec::new(),
        });
    }
}

/// SU010.
fn check_body_fields(inputs: &Inputs<'_>, api: &ApiSpec, file: &str, out: &mut Vec<Finding>) {
    let policy = inputs.policy;
    let mut reported = BTreeSet::new();
    for op in &api.operations {
        let Some(schema) = &op.body_schema else { continue };
        let (index, _) = deciding_rule(policy, &op.method, &op.sample_path());
        for risk in policy.risk_rules().iter().filter(|r| r.applies_to(index)) {
            for signal in risk.condition.signals() {
                let (field, pointer) = match signal {
                    Signal::Amount => ("amount", inputs.amount_pointer),
                    Signal::Currency => ("currency", inputs.currency_pointer),
                    _ => continue,
                };
                let Some(pointer) = pointer else { continue };
                if api.body_has(schema, pointer) != Some(false)
                    || !reported.insert((op.label(), risk.name.clone(), pointer.to_owned()))
                {
                    continue;
                }
                out.push(Finding {
                    code: "SU010",
                    severity: Severity::Error,
                    message: format!(
                        "risk rule \"{}\" reads the {field} at {pointer}, which the request body of {} does not have: the rule can never fire there",
                        risk.name,
                        op.label()
                    ),
                    place: Place {
                        file: file.to_owned(),
                        at: op.body_at.unwrap_or(schema.at),
                    },
                    hint: format!(
                        "point the guard's {field} pointer at the field the body has, or add {pointer} to the schema"
                    ),
                    related: vec![(policy_place(inputs, risk.location), format!("risk rule \"{}\"", risk.name))],
                });
            }
        }
    }
}
