//! The step-up policy: which requests need which assurance.
//!
//! A policy names the deployment's assurance levels (weakest first), a
//! default requirement for requests no route matches, and routes (methods
//! plus a path template) with their own requirements. It is written in TOML
//! and checked once at load: every mistake is reported with the file, line
//! and column and what was expected; routes that collide are errors, and a
//! specific route that is weaker than the general route it overrides is a
//! warning, since that is how critical endpoints end up unprotected.
//!
//! Risk rules raise the requirement of the routes they name (or of every
//! request) when their condition holds for the request's signals (see
//! [`crate::risk`]); the strictest of the route's and the fired rules'
//! requirements is asked.
//!
//! ```toml
//! levels = [
//!   { name = "pwd", acr = "urn:stepup:acr:pwd" },
//!   { name = "mfa", acr = "urn:stepup:acr:mfa" },
//! ]
//! [default]
//! acr = ["pwd"]
//!
//! [[route]]
//! name = "add payee"
//! methods = ["POST"]
//! path = "/accounts/{id}/payees"
//! acr = ["mfa"]
//! max_age = 300
//!
//! [[risk]]
//! name = "signed in elsewhere"
//! when = "country_changed"
//! require = { acr = ["mfa"], max_age = 300 }
//! reason = "You seem to be somewhere else than when you signed in: confirm it is you."
//! ```

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::acr::{Acr, AssuranceLevels, Rank};
use crate::risk::Condition;
use crate::route::{Methods, PathTemplate, RouteTable};
use crate::scope::Scope;

/// What a request must bring.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requirement {
    /// Acceptable `acr` values in order of preference (empty: any token).
    pub acr_values: Vec<Acr>,
    /// Longest time since `auth_time`, in seconds.
    pub max_age: Option<u64>,
    /// Scopes the token must carry, all of them.
    pub scopes: Vec<Scope>,
}

/// A line and column (both from 1) in a policy source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Location {
    fn of(source: &str, byte: usize) -> Self {
        let byte = byte.min(source.len());
        let before = source.get(..byte).unwrap_or(source);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Self { line, column }
    }
}

/// A rule of the policy: a route, or the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name, as configured or derived (`POST /accounts/{id}/payees`, `default`).
    pub name: String,
    /// Methods the route applies to (`Any` for the default).
    pub methods: Methods,
    /// The path template, `None` for the default rule.
    pub template: Option<PathTemplate>,
    /// What the rule requires.
    pub requirement: Requirement,
    /// Where the rule is written.
    pub location: Location,
}

impl Rule {
    /// Whether this is the default rule.
    pub fn is_default(&self) -> bool {
        self.template.is_none()
    }
}

/// A risk rule: when its condition holds, the routes it names (or all)
/// need at least its requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskRule {
    /// The rule's name.
    pub name: String,
    /// When it fires.
    pub condition: Condition,
    /// What it asks for (`acr` and `max_age`; never scopes).
    pub requirement: Requirement,
    /// Words a user can act on, for the challenge's `error_description`
    /// (the policy's author keeps thresholds out of it).
    pub reason: String,
    /// The routes it applies to (`None` in the list: the default rule);
    /// `None`: every request.
    applies_to: Option<Vec<Option<usize>>>,
    /// Where the rule is written.
    pub location: Location,
}

impl RiskRule {
    /// Whether the rule applies to the route at `index` (`None`: the
    /// default rule).
    pub fn applies_to(&self, index: Option<usize>) -> bool {
        self.applies_to.as_ref().is_none_or(|list| list.contains(&index))
    }
}

/// The most risk rules a policy may have (decisions record the fired ones
/// in a 64-bit set).
pub const MAX_RISK_RULES: usize = 64;

/// What a fired risk rule says when its author gave no reason.
const DEFAULT_RISK_REASON: &str = "This request needs you to confirm it is you.";

/// A finding about a policy source, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name (or other origin) given at load.
    pub origin: String,
    /// Where in the source.
    pub location: Location,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.origin, self.location.line, self.location.column, self.message
        )
    }
}

/// All errors found in a policy source (at least one).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct PolicyError {
    /// The errors, in source order.
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

/// A checked policy, ready to decide.
#[derive(Debug)]
pub struct Policy {
    pub(crate) levels: AssuranceLevels,
    pub(crate) default: Rule,
    pub(crate) routes: Vec<Rule>,
    pub(crate) table: RouteTable,
    pub(crate) risk: Vec<RiskRule>,
    warnings: Vec<Diagnostic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    levels: Spanned<Vec<Spanned<RawLevel>>>,
    default: Spanned<RawRequirement>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default, rename = "risk")]
    risk: Vec<Spanned<RawRisk>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    name: Spanned<String>,
    when: Spanned<String>,
    routes: Option<Spanned<Vec<Spanned<String>>>>,
    require: Spanned<RawRequirement>,
    reason: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevel {
    name: Spanned<String>,
    acr: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    #[serde(default)]
    acr: Vec<Spanned<String>>,
    max_age: Option<Spanned<i64>>,
    #[serde(default)]
    scope: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<Spanned<String>>,
    path: Spanned<String>,
    methods: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    acr: Vec<Spanned<String>>,
    max_age: Option<Spanned<i64>>,
    #[serde(default)]
    scope: Vec<Spanned<String>>,
}

struct Loader<'s> {
    origin: &'s str,
    source: &'s str,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Loader<'_> {
    fn diagnostic(&self, span: Range<usize>, message: String) -> Diagnostic {
        Diagnostic {
            origin: self.origin.to_owned(),
            location: Location::of(self.source, span.start),
            message,
        }
    }

    fn error(&mut self, span: Range<usize>, message: String) {
        let d = self.diagnostic(span, message);
        self.errors.push(d);
    }

    fn warn(&mut self, span: Range<usize>, message: String) {
        let d = self.diagnostic(span, message);
        self.warnings.push(d);
    }

    fn levels(
        &mut self,
        raw: &Spanned<Vec<Spanned<RawLevel>>>,
    ) -> Option<(AssuranceLevels, Vec<(String, Acr)>)> {
        let mut names: Vec<(String, Acr)> = Vec::new();
        let mut acrs = Vec::new();
        for level in raw.get_ref() {
            let level = level.get_ref();
            let name = level.name.get_ref();
            if name.is_empty() {
                self.error(level.name.span(), "a level name must not be empty".into());
                continue;
            }
            if names.iter().any(|(n, _)| n == name) {
                self.error(level.name.span(), format!("level name {name:?} is used twice"));
                continue;
            }
            match Acr::new(level.acr.get_ref().as_str()) {
                Ok(acr) if acrs.contains(&acr) => {
                    self.error(level.acr.span(), format!("acr {acr} is listed twice"));
                }
                Ok(acr) => {
                    acrs.push(acr.clone());
                    names.push((name.clone(), acr));
                }
                Err(e) => self.error(level.acr.span(), format!("invalid acr: {e}")),
            }
        }
        // A name that is another level's acr would make `acr = ["x"]` ambiguous.
        for level in raw.get_ref() {
            let level = level.get_ref();
            let name = level.name.get_ref();
            if names.iter().any(|(n, acr)| acr.as_str() == name && n != name) {
                self.error(
                    level.name.span(),
                    format!("level name {name:?} is another level's acr value; names and acr values must not overlap"),
                );
            }
        }
        if raw.get_ref().is_empty() {
            self.error(
                raw.span(),
                "expected at least one level, e.g. levels = [{ name = \"pwd\", acr = \"urn:stepup:acr:pwd\" }]".into(),
            );
            return None;
        }
        AssuranceLevels::new(acrs).ok().map(|l| (l, names))
    }

    fn requirement(
        &mut self,
        names: &[(String, Acr)],
        acr: &[Spanned<String>],
        max_age: Option<&Spanned<i64>>,
        scope: &[Spanned<String>],
    ) -> Requirement {
        let mut req = Requirement::default();
        for value in acr {
            let text = value.get_ref();
            let found = names
                .iter()
                .find(|(name, acr)| name == text || acr.as_str() == text)
                .map(|(_, acr)| acr.clone());
            match found {
                Some(acr) if req.acr_values.contains(&acr) => {
                    self.error(value.span(), format!("acr {text:?} is listed twice"));
                }
                Some(acr) => req.acr_values.push(acr),
                None => {
                    let expected: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
                    self.error(
                        value.span(),
                        format!(
                            "unknown assurance level {text:?}; expected one of: {}",
                            expected.join(", ")
                        ),
                    );
                }
            }
        }
        if let Some(m) = max_age {
            match u64::try_from(*m.get_ref()) {
                Ok(secs) => req.max_age = Some(secs),
                Err(_) => self.error(m.span(), "max_age must be a number of seconds, 0 or more".into()),
            }
        }
        for value in scope {
            match Scope::new(value.get_ref().as_str()) {
                Ok(s) if req.scopes.contains(&s) => {
                    self.error(value.span(), format!("scope {s} is listed twice"));
                }
                Ok(s) => req.scopes.push(s),
                Err(e) => self.error(value.span(), format!("invalid scope: {e}")),
            }
        }
        req
    }

    fn risk_rules(
        &mut self,
        raw: &[Spanned<RawRisk>],
        names: &[(String, Acr)],
        routes: &[Rule],
    ) -> Vec<RiskRule> {
        let mut rules: Vec<RiskRule> = Vec::new();
        if raw.len() > MAX_RISK_RULES {
            if let Some(extra) = raw.get(MAX_RISK_RULES) {
                self.error(extra.span(), format!("at most {MAX_RISK_RULES} risk rules"));
            }
            return rules;
        }
        for spanned in raw {
            let r = spanned.get_ref();
            let name = r.name.get_ref().trim();
            if name.is_empty() {
                self.error(r.name.span(), "a risk rule needs a name".into());
                continue;
            }
            if rules.iter().any(|x| x.name == name) {
                self.error(r.name.span(), format!("risk rule name {name:?} is used twice"));
                continue;
            }
            let condition = match Condition::parse(r.when.get_ref()) {
                Ok(c) => c,
                Err(e) => {
                    let at = self.offset_in_string(r.when.span().start, r.when.get_ref(), e.offset);
                    self.error(at..at, format!("in `when`: {}", e.message));
                    continue;
                }
            };
            let req = r.require.get_ref();
            if !req.scope.is_empty() {
                self.error(
                    r.require.span(),
                    "a risk rule raises `acr` and `max_age`; scopes belong to routes".into(),
                );
                continue;
            }
            if req.acr.is_empty() && req.max_age.is_none() {
                self.error(
                    r.require.span(),
                    "expected `acr` or `max_age` in `require`, e.g. require = { acr = [\"mfa\"], max_age = 300 }".into(),
                );
                continue;
            }
            let requirement = self.requirement(names, &req.acr, req.max_age.as_ref(), &[]);
            let applies_to = match &r.routes {
                None => None,
                Some(list) => {
                    let mut indices = Vec::new();
                    for route in list.get_ref() {
                        let wanted = route.get_ref();
                        let found = if wanted == "default" {
                            Some(None)
                        } else {
                            routes.iter().position(|x| &x.name == wanted).map(Some)
                        };
                        match found {
                            Some(index) if !indices.contains(&index) => indices.push(index),
                            Some(_) => self.error(route.span(), format!("route {wanted:?} is listed twice")),
                            None => {
                                let known: Vec<&str> = routes.iter().map(|x| x.name.as_str()).collect();
                                self.error(
                                    route.span(),
                                    format!(
                                        "no route named {wanted:?}; expected \"default\" or one of: {}",
                                        known.join(", ")
                                    ),
                                );
                            }
                        }
                    }
                    if list.get_ref().is_empty() {
                        self.error(
                            list.span(),
                            "expected at least one route name, or leave `routes` out for every request"
                                .into(),
                        );
                    }
                    Some(indices)
                }
            };
            let reason = match &r.reason {
                Some(text) if text.get_ref().trim().is_empty() || text.get_ref().chars().count() > 200 => {
                    self.error(
                        text.span(),
                        "a reason is 1 to 200 characters a user can act on".into(),
                    );
                    continue;
                }
                Some(text) => text.get_ref().trim().to_owned(),
                None => DEFAULT_RISK_REASON.to_owned(),
            };
            rules.push(RiskRule {
                name: name.to_owned(),
                condition,
                requirement,
                reason,
                applies_to,
                location: Location::of(self.source, spanned.span().start),
            });
        }
        rules
    }

    /// The byte offset in the source of character `chars` of a string
    /// value whose quote starts at `quote` (exact for strings without
    /// escapes).
    fn offset_in_string(&self, quote: usize, value: &str, chars: usize) -> usize {
        let rest = self.source.get(quote..).unwrap_or("");
        let opening = if rest.starts_with("\"\"\"") || rest.starts_with("'''") {
            3
        } else {
            1
        };
        let inner: usize = value.chars().take(chars).map(char::len_utf8).sum();
        quote + opening + inner
    }

    fn methods(&mut self, raw: Option<&Spanned<Vec<Spanned<String>>>>) -> Methods {
        let Some(raw) = raw else {
            return Methods::Any;
        };
        if raw.get_ref().is_empty() {
            self.error(
                raw.span(),
                "expected at least one method, e.g. methods = [\"POST\"], or leave `methods` out for any method".into(),
            );
            return Methods::Any;
        }
        let mut list: Vec<String> = Vec::new();
        for m in raw.get_ref() {
            let text = m.get_ref();
            let is_token = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
            if !is_token {
                self.error(m.span(), format!("{text:?} is not an HTTP method token"));
            } else if text.chars().any(|c| c.is_ascii_lowercase()) {
                self.error(
                    m.span(),
                    format!(
                        "method {text:?} is not upper-case; HTTP methods are case-sensitive, expected {:?}",
                        text.to_ascii_uppercase()
                    ),
                );
            } else if list.contains(text) {
                self.error(m.span(), format!("method {text} is listed twice"));
            } else {
                list.push(text.clone());
            }
        }
        Methods::Only(list)
    }
}

impl Policy {
    /// Parses and checks a policy. `origin` names the source in diagnostics
    /// (usually the file path).
    pub fn from_toml(origin: &str, source: &str) -> Result<Policy, PolicyError> {
        let mut loader = Loader {
            origin,
            source,
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let raw: RawPolicy = match toml::from_str(source) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                loader.error(span, e.message().trim().to_owned());
                return Err(PolicyError {
                    errors: loader.errors,
                });
            }
        };
        let Some((levels, names)) = loader.levels(&raw.levels) else {
            return Err(PolicyError {
                errors: loader.errors,
            });
        };
        let d = raw.default.get_ref();
        let default = Rule {
            name: "default".into(),
            methods: Methods::Any,
            template: None,
            requirement: loader.requirement(&names, &d.acr, d.max_age.as_ref(), &d.scope),
            location: Location::of(source, raw.default.span().start),
        };

        let mut routes: Vec<Rule> = Vec::new();
        let mut spans: Vec<Range<usize>> = Vec::new();
        let mut table = RouteTable::default();
        for spanned in &raw.routes {
            let r = spanned.get_ref();
            let template = match PathTemplate::parse(r.path.get_ref()) {
                Ok(t) => t,
                Err(e) => {
                    loader.error(r.path.span(), format!("invalid path template: {e}"));
                    continue;
                }
            };
            let methods = loader.methods(r.methods.as_ref());
            let requirement = loader.requirement(&names, &r.acr, r.max_age.as_ref(), &r.scope);
            let name = match &r.name {
                Some(n) => n.get_ref().clone(),
                None => match &methods {
                    Methods::Any => template.as_str().to_owned(),
                    Methods::Only(list) => format!("{} {}", list.join(","), template.as_str()),
                },
            };
            let index = routes.len();
            if let Err(conflict) = table.insert(&template, &methods, index) {
                let first = &routes[conflict.first];
                let method = conflict.method.as_deref().unwrap_or("any method");
                let message = format!(
                    "route {:?} conflicts with route {:?} (line {}): both match {} {} ",
                    name, first.name, first.location.line, method, template
                );
                loader.error(r.path.span(), message.trim_end().to_owned());
                continue;
            }
            routes.push(Rule {
                name,
                methods,
                template: Some(template),
                requirement,
                location: Location::of(source, spanned.span().start),
            });
            spans.push(r.path.span());
        }

        let risk = loader.risk_rules(&raw.risk, &names, &routes);

        // A specific route that asks for less than a general route covering
        // it silently lowers the bar for those requests: warn.
        for (i, specific) in routes.iter().enumerate() {
            for general in &routes {
                let (Some(st), Some(gt)) = (&specific.template, &general.template) else {
                    continue;
                };
                if std::ptr::eq(specific, general) || st.shape() == gt.shape() || !gt.covers(st) {
                    continue;
                }
                if !takes_over(&specific.methods, &general.methods) {
                    continue;
                }
                if let Some(what) = weaker_in(&levels, &specific.requirement, &general.requirement) {
                    let message = format!(
                        "route {:?} asks for a weaker {what} than the more general route {:?} (line {}) it overrides",
                        specific.name, general.name, general.location.line
                    );
                    loader.warn(spans[i].clone(), message);
                }
            }
        }

        // A route without `acr` accepts any valid token, which is easy to
        // write by mistake when a default requires more.
        for (i, route) in routes.iter().enumerate() {
            if let Some(what) = weaker_in(&levels, &route.requirement, &default.requirement) {
                let message = format!("route {:?} asks for a weaker {what} than [default]", route.name);
                loader.warn(spans[i].clone(), message);
            }
        }

        if !loader.errors.is_empty() {
            loader.errors.sort_by_key(|d| d.location);
            return Err(PolicyError {
                errors: loader.errors,
            });
        }
        Ok(Policy {
            levels,
            default,
            routes,
            table,
            risk,
            warnings: loader.warnings,
        })
    }

    /// The assurance levels, weakest first.
    pub fn levels(&self) -> &AssuranceLevels {
        &self.levels
    }

    /// The routes, in source order.
    pub fn routes(&self) -> &[Rule] {
        &self.routes
    }

    /// The rule for unmatched requests.
    pub fn default_rule(&self) -> &Rule {
        &self.default
    }

    /// Every scope a rule asks for, each once, sorted: what a resource
    /// publishes as its `scopes_supported` (RFC 9728).
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .routes
            .iter()
            .chain(std::iter::once(&self.default))
            .flat_map(|r| r.requirement.scopes.iter().map(|s| s.as_str().to_owned()))
            .collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// The risk rules, in source order.
    pub fn risk_rules(&self) -> &[RiskRule] {
        &self.risk
    }

    /// Findings that do not stop the policy from loading.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }
}

/// Whether a more specific route answers at least one method the general
/// route would otherwise answer (the more specific shape always wins).
fn takes_over(specific: &Methods, general: &Methods) -> bool {
    match (specific, general) {
        (Methods::Any, _) | (_, Methods::Any) => true,
        (Methods::Only(s), Methods::Only(g)) => g
            .iter()
            .any(|m| s.contains(m) || (m == "HEAD" && s.iter().any(|x| x == "GET"))),
    }
}

/// Names the first aspect in which `specific` asks for less than `general`.
fn weaker_in(
    levels: &AssuranceLevels,
    specific: &Requirement,
    general: &Requirement,
) -> Option<&'static str> {
    let floor = |req: &Requirement| {
        req.acr_values
            .iter()
            .map(|a| levels.rank(Some(a.as_str())))
            .min()
            .unwrap_or(Rank::UNKNOWN)
    };
    if floor(specific) < floor(general) {
        return Some("assurance level");
    }
    match (specific.max_age, general.max_age) {
        (None, Some(_)) => return Some("max_age"),
        (Some(s), Some(g)) if s > g => return Some("max_age"),
        _ => {}
    }
    if general.scopes.iter().any(|s| !specific.scopes.contains(s)) {
        return Some("scope set");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVELS: &str = r#"
levels = [
  { name = "pwd", acr = "urn:stepup:acr:pwd" },
  { name = "mfa", acr = "urn:stepup:acr:mfa" },
  { name = "phr", acr = "urn:stepup:acr:phr" },
]
[default]
acr = ["pwd"]
"#;

    fn load(extra: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml("p.toml", &format!("{LEVELS}{extra}"))
    }

    fn first_error(extra: &str) -> Diagnostic {
        load(extra).unwrap_err().errors.remove(0)
    }

    #[test]
    fn loads_routes_and_names() {
        let p = load(
            r#"
[[route]]
name = "add payee"
methods = ["POST"]
path = "/accounts/{id}/payees"
acr = ["mfa"]
max_age = 300
scope = ["payments:write"]

[[route]]
path = "/accounts/{id}"
methods = ["GET", "DELETE"]
acr = ["pwd"]
"#,
        )
        .unwrap();
        assert_eq!(p.routes().len(), 2);
        assert_eq!(p.routes()[0].name, "add payee");
        assert_eq!(p.routes()[0].requirement.max_age, Some(300));
        assert_eq!(
            p.routes()[0].requirement.acr_values[0].as_str(),
            "urn:stepup:acr:mfa"
        );
        assert_eq!(p.routes()[1].name, "GET,DELETE /accounts/{id}");
        assert_eq!(p.routes()[0].location.line, 10);
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn syntax_errors_are_located() {
        let e =
            Policy::from_toml("p.toml", "levels = [\n  { name = \"pwd\" acr = \"x\" },\n]\n").unwrap_err();
        let d = &e.errors[0];
        assert_eq!((d.location.line, d.origin.as_str()), (2, "p.toml"));
        assert!(e.to_string().starts_with("error: p.toml:2:"), "{e}");
    }

    #[test]
    fn unknown_fields_and_missing_sections_are_errors() {
        let d = first_error("[[route]]\npath = \"/a\"\nacrs = [\"mfa\"]\n");
        assert!(d.message.contains("unknown field `acrs`"), "{}", d.message);
        assert_eq!(d.location.line, 11);
        let e = Policy::from_toml("p.toml", "levels = [{ name = \"a\", acr = \"a\" }]\n").unwrap_err();
        assert!(e.errors[0].message.contains("missing field `default`"), "{e}");
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let d = first_error("[[route]]\npath = \"/a\"\nacr = [\"gold\"]\n");
        assert_eq!(
            d.message,
            "unknown assurance level \"gold\"; expected one of: pwd, mfa, phr"
        );
        assert_eq!((d.location.line, d.location.column), (11, 8));
        let d = first_error("[[route]]\npath = \"a\"\n");
        assert!(d.message.contains("must start with '/'"), "{}", d.message);
        let d = first_error("[[route]]\npath = \"/a\"\nmethods = [\"post\"]\n");
        assert!(d.message.contains("expected \"POST\""), "{}", d.message);
        let d = first_error("[[route]]\npath = \"/a\"\nmax_age = -1\n");
        assert!(d.message.contains("0 or more"), "{}", d.message);
        let d = first_error("[[route]]\npath = \"/a\"\nscope = [\"a b\"]\n");
        assert!(d.message.contains("invalid scope"), "{}", d.message);
        let d = first_error("[[route]]\npath = \"/a\"\nmethods = []\n");
        assert!(d.message.contains("at least one method"), "{}", d.message);
        let e = Policy::from_toml("p.toml", "levels = []\n[default]\n").unwrap_err();
        assert!(e.errors[0].message.contains("at least one level"), "{e}");
        let e = Policy::from_toml(
            "p.toml",
            "levels = [{ name = \"a\", acr = \"x\" }, { name = \"a\", acr = \"y\" }]\n[default]\n",
        )
        .unwrap_err();
        assert!(e.errors[0].message.contains("used twice"), "{e}");
    }

    #[test]
    fn all_errors_are_reported_in_order() {
        let e = load("[[route]]\npath = \"/a\"\nacr = [\"gold\"]\n[[route]]\npath = \"b\"\n").unwrap_err();
        assert_eq!(e.errors.len(), 2);
        assert!(e.errors[0].location < e.errors[1].location);
    }

    #[test]
    fn conflicting_routes_are_errors() {
        let d = first_error(
            "[[route]]\npath = \"/a/{id}\"\nmethods = [\"GET\", \"POST\"]\n[[route]]\npath = \"/a/{name}\"\nmethods = [\"POST\"]\n",
        );
        assert!(
            d.message
                .contains("conflicts with route \"GET,POST /a/{id}\" (line 9)"),
            "{}",
            d.message
        );
        assert_eq!(d.location.line, 13);
    }

    #[test]
    fn weaker_specific_routes_are_warned_about() {
        let messages = |extra: &str| -> Vec<String> {
            load(extra)
                .unwrap()
                .warnings()
                .iter()
                .map(|w| w.message.clone())
                .collect()
        };
        let w = messages(
            "[[route]]\npath = \"/admin/{*rest}\"\nacr = [\"phr\"]\n[[route]]\npath = \"/admin/health\"\nmethods = [\"GET\"]\nacr = [\"pwd\"]\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("weaker assurance level than the more general route"),
            "{w:?}"
        );
        let w = messages(
            "[[route]]\npath = \"/pay/{*rest}\"\nacr = [\"mfa\"]\nmax_age = 60\n[[route]]\npath = \"/pay/x\"\nacr = [\"phr\"]\nmax_age = 600\n",
        );
        assert!(w[0].contains("weaker max_age"), "{w:?}");
        // An any-method route takes over the methods of a method-specific general route.
        let w = messages(
            "[[route]]\npath = \"/pay/{*r}\"\nmethods = [\"POST\"]\nacr = [\"phr\"]\n[[route]]\npath = \"/pay/x\"\nacr = [\"pwd\"]\n",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        // Disjoint methods do not: GET /pay/x never reached the POST rule.
        let w = messages(
            "[[route]]\npath = \"/pay/{*r}\"\nmethods = [\"POST\"]\nacr = [\"phr\"]\n[[route]]\npath = \"/pay/x\"\nmethods = [\"GET\"]\nacr = [\"pwd\"]\n",
        );
        assert!(w.is_empty(), "{w:?}");
        // A route without acr accepts any token: weaker than the default.
        let w = messages("[[route]]\npath = \"/a/b\"\n");
        assert_eq!(
            w,
            ["route \"/a/b\" asks for a weaker assurance level than [default]"]
        );
        // Stricter specific routes are what policies are for: no warning.
        let w = messages(
            "[[route]]\npath = \"/a/{*r}\"\nacr = [\"pwd\"]\n[[route]]\npath = \"/a/b\"\nacr = [\"mfa\"]\n",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn level_names_may_not_be_acr_values() {
        let e = Policy::from_toml(
            "p.toml",
            "levels = [{ name = \"low\", acr = \"high\" }, { name = \"high\", acr = \"urn:x:high\" }]\n[default]\n",
        )
        .unwrap_err();
        assert!(e.errors[0].message.contains("another level's acr value"), "{e}");
    }

    #[test]
    fn location_counts_characters_not_bytes() {
        let src = "é = 1\nab";
        assert_eq!(Location::of(src, src.len()), Location { line: 2, column: 3 });
        assert_eq!(Location::of(src, 2), Location { line: 1, column: 2 });
    }

    proptest::proptest! {
        #[test]
        fn loading_never_panics(source in "\\PC{0,300}") {
            let _ = Policy::from_toml("p.toml", &source);
        }

        #[test]
        fn loading_never_panics_on_policy_shaped_text(
            extra in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("[[route]]\n".to_owned()),
                    proptest::strategy::Just("path = \"/a/{id}\"\n".to_owned()),
                    proptest::strategy::Just("path = \"/a/{*r}\"\n".to_owned()),
                    proptest::strategy::Just("methods = [\"GET\"]\n".to_owned()),
                    proptest::strategy::Just("acr = [\"mfa\"]\n".to_owned()),
                    proptest::strategy::Just("max_age = 5\n".to_owned()),
                    "[a-z_=\\[\\]\"{}/ \n0-9-]{0,20}",
                ],
                0..12,
            )
        ) {
            let _ = load(&extra.concat());
        }
    }
}
