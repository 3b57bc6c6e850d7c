//! Deciding a request: is the verified token good enough, and if not, what
//! would be (RFC 9470 §3, RFC 6750 §3.1).
//!
//! Scopes are checked before assurance: a token lacking a scope gets
//! `insufficient_scope` (403), since re-authenticating alone would not add
//! it. Then the `acr` and the age of the authentication: when either falls
//! short, the answer is a step-up carrying both the acceptable `acr_values`
//! and the `max_age` of the rule, so the new token satisfies the whole rule.
//!
//! Risk rules whose condition holds for the request's signals add their
//! requirements: the token must meet the route's and every fired rule's.
//! The challenge then asks for the strongest floor among them and the
//! shortest `max_age`, so one new token meets them all.

use std::fmt;

use crate::access_token::TokenFacts;
use crate::acr::Acr;
use crate::acr::Rank;
use crate::challenge::{BearerChallenge, ErrorCode};
use crate::policy::{Policy, Requirement, RiskRule, Rule};
use crate::risk::Signals;
use crate::route::{RequestPathError, request_segments};
use crate::scope::{Scope, join_scopes, scope_claim_contains};
use crate::time::UnixTime;

/// Why a step-up is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepUpReason {
    /// The token's `acr` is absent, unknown or weaker than required.
    AcrTooWeak,
    /// The rule has a `max_age` and the token carries no `auth_time`.
    AuthTimeMissing,
    /// The authentication is older than `max_age`.
    AuthenticationTooOld {
        /// Seconds since `auth_time`.
        age: u64,
    },
    /// The route's requirement is met, but a fired risk rule's is not.
    Risk {
        /// The first such rule, as an index into the policy's risk rules.
        rule: u8,
    },
}

impl fmt::Display for StepUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepUpReason::AcrTooWeak => f.write_str("a stronger authentication is required"),
            StepUpReason::AuthTimeMissing => f.write_str("the time of authentication is unknown"),
            StepUpReason::AuthenticationTooOld { age } => {
                write!(
                    f,
                    "the authentication is {age} s old; a more recent one is required"
                )
            }
            StepUpReason::Risk { .. } => {
                f.write_str("the request's risk calls for a stronger or more recent authentication")
            }
        }
    }
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'p> {
    /// The token is good enough.
    Allow,
    /// The user must authenticate again (401, `insufficient_user_authentication`).
    StepUp {
        /// Acceptable `acr` values in preference order (may be empty when only freshness is missing).
        acr_values: &'p [Acr],
        /// Maximum authentication age in seconds.
        max_age: Option<u64>,
        /// What fell short.
        reason: StepUpReason,
    },
    /// The token lacks scopes (403, `insufficient_scope`).
    InsufficientScope {
        /// The scopes the rule requires (all of them, as RFC 6750 §3 asks).
        scope: &'p [Scope],
    },
}

/// The risk rules that fired for a request.
#[derive(Debug, Clone, Copy)]
pub struct Fired<'p> {
    mask: u64,
    rules: &'p [RiskRule],
}

impl PartialEq for Fired<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.mask == other.mask && std::ptr::eq(self.rules, other.rules)
    }
}

impl Eq for Fired<'_> {}

impl<'p> Fired<'p> {
    /// None fired.
    pub fn is_empty(&self) -> bool {
        self.mask == 0
    }

    /// How many fired.
    pub fn len(&self) -> usize {
        self.mask.count_ones() as usize
    }

    /// The fired rules, in policy order.
    pub fn iter(&self) -> impl Iterator<Item = &'p RiskRule> + 'p {
        let (mask, rules) = (self.mask, self.rules);
        rules
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i < 64 && mask & (1u64 << i) != 0)
            .map(|(_, r)| r)
    }
}

/// A verdict, the rule that produced it, and the risk rules that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    /// The rule that applied.
    pub rule: &'p Rule,
    /// What the rule (and the fired risk rules) say about this token.
    pub verdict: Verdict<'p>,
    /// The risk rules whose condition held.
    pub fired: Fired<'p>,
}

impl Decision<'_> {
    /// The RFC 6750 / RFC 9470 challenge for a verdict other than `Allow`,
    /// with an `error_description` naming the rule, for logs and humans.
    pub fn challenge(&self) -> Option<BearerChallenge> {
        match &self.verdict {
            Verdict::Allow => None,
            Verdict::StepUp {
                acr_values,
                max_age,
                reason,
            } => Some(BearerChallenge {
                error: Some(ErrorCode::InsufficientUserAuthentication),
                // A risk rule's reason is written for the user, and names
                // no threshold or rule.
                error_description: Some(match reason {
                    StepUpReason::Risk { rule } => self
                        .fired
                        .rules
                        .get(usize::from(*rule))
                        .map_or_else(|| reason.to_string(), |r| r.reason.clone()),
                    _ => format!("{reason} (rule '{}')", self.rule.name),
                }),
                acr_values: acr_values.to_vec(),
                max_age: *max_age,
                ..BearerChallenge::default()
            }),
            Verdict::InsufficientScope { scope } => Some(BearerChallenge {
                error: Some(ErrorCode::InsufficientScope),
                error_description: Some(format!(
                    "scope '{}' is required (rule '{}')",
                    join_scopes(scope),
                    self.rule.name
                )),
                scope: Some(join_scopes(scope)),
                ..BearerChallenge::default()
            }),
        }
    }

    /// The HTTP status for the verdict: 200 for `Allow`, 401 for a step-up,
    /// 403 for missing scope.
    pub fn status(&self) -> u16 {
        self.challenge()
            .and_then(|c| c.error.map(|e| e.status()))
            .unwrap_or(200)
    }
}

impl Policy {
    /// The rule that applies to a request.
    pub fn rule_for(&self, method: &str, path: &str) -> Result<&Rule, RequestPathError> {
        let segments = request_segments(path)?;
        Ok(self
            .table
            .lookup(method, &segments)
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.default))
    }

    /// The index of the route a request matches (`None`: the default rule).
    pub fn route_index(&self, method: &str, path: &str) -> Result<Option<usize>, RequestPathError> {
        let segments = request_segments(path)?;
        Ok(self
            .table
            .lookup(method, &segments)
            .filter(|i| *i < self.routes.len()))
    }

    /// The signals the risk rules of a route read, as a set of
    /// [`crate::risk::Signal::bit`]s.
    pub fn signals_read(&self, route: Option<usize>) -> u16 {
        self.risk
            .iter()
            .filter(|r| r.applies_to(route))
            .fold(0, |set, r| set | r.condition.reads())
    }

    /// Decides a request with a verified token's facts at time `now`, with
    /// no risk signal known (risk rules do not fire).
    pub fn decide(
        &self,
        method: &str,
        path: &str,
        token: &TokenFacts<'_>,
        now: UnixTime,
    ) -> Result<Decision<'_>, RequestPathError> {
        self.decide_with(method, path, token, &Signals::NONE, now)
    }

    /// Decides a request with a verified token's facts and the request's
    /// risk signals at time `now`.
    pub fn decide_with(
        &self,
        method: &str,
        path: &str,
        token: &TokenFacts<'_>,
        signals: &Signals<'_>,
        now: UnixTime,
    ) -> Result<Decision<'_>, RequestPathError> {
        let segments = request_segments(path)?;
        let found = self.table.lookup(method, &segments);
        let (index, rule) = match found.and_then(|i| self.routes.get(i).map(|r| (i, r))) {
            Some((i, r)) => (Some(i), r),
            None => (None, &self.default),
        };
        let mut mask = 0u64;
        for (i, risk) in self.risk.iter().enumerate().take(64) {
            if risk.applies_to(index) && risk.condition.eval(signals) == Some(true) {
                mask |= 1u64 << i;
            }
        }
        let fired = Fired {
            mask,
            rules: &self.risk,
        };
        Ok(Decision {
            rule,
            verdict: self.judge(rule, fired, token, now),
            fired,
        })
    }

    /// What a requirement finds missing in a token, if anything.
    fn shortfall(&self, req: &Requirement, token: &TokenFacts<'_>, now: UnixTime) -> Option<StepUpReason> {
        if !self.levels.satisfies(token.acr, &req.acr_values) {
            return Some(StepUpReason::AcrTooWeak);
        }
        let max_age = req.max_age?;
        let Some(auth_time) = token.auth_time else {
            return Some(StepUpReason::AuthTimeMissing);
        };
        // A future auth_time is rejected by claim validation; here it
        // simply counts as age 0.
        let age = u64::try_from(now.since(auth_time)).unwrap_or(0);
        (age > max_age).then_some(StepUpReason::AuthenticationTooOld { age })
    }

    /// The lowest level of a list of acceptable `acr` values.
    #[cfg(test)]
    fn floor_of(&self, acr_values: &[Acr]) -> Rank {
        acr_values
            .iter()
            .map(|a| self.levels.rank(Some(a.as_str())))
            .min()
            .unwrap_or(Rank::UNKNOWN)
    }

    /// The lowest level a requirement accepts.
    fn floor(&self, req: &Requirement) -> Rank {
        req.acr_values
            .iter()
            .map(|a| self.levels.rank(Some(a.as_str())))
            .min()
            .unwrap_or(Rank::UNKNOWN)
    }

    fn judge<'p>(
        &'p self,
        rule: &'p Rule,
        fired: Fired<'p>,
        token: &TokenFacts<'_>,
        now: UnixTime,
    ) -> Verdict<'p> {
        let req = &rule.requirement;
        if !req.scopes.is_empty() {
            let granted = token.scope.unwrap_or("");
            if !req.scopes.iter().all(|s| scope_claim_contains(granted, s)) {
                return Verdict::InsufficientScope { scope: &req.scopes };
            }
        }
        let mut reason = self.shortfall(req, token, now);
        if reason.is_none() {
            reason = fired
                .rules
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < 64 && fired.mask & (1u64 << i) != 0)
                .find(|(_, r)| self.shortfall(&r.requirement, token, now).is_some())
                .map(|(i, _)| StepUpReason::Risk {
                    rule: u8::try_from(i).unwrap_or(u8::MAX),
                });
        }
        let Some(reason) = reason else {
            return Verdict::Allow;
        };
        // One new token must meet every requirement: the strongest floor,
        // the shortest max_age.
        let mut acr_values: &'p [Acr] = &req.acr_values;
        let mut floor = self.floor(req);
        let mut max_age = req.max_age;
        for risk in fired.iter() {
            let r = &risk.requirement;
            let f = self.floor(r);
            // On a tie the risk rule's list wins: its order of preference
            // is the one the situation calls for.
            if f >= floor {
                floor = f;
                acr_values = &r.acr_values;
            }
            max_age = match (max_age, r.max_age) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Verdict::StepUp {
            acr_values,
            max_age,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Decimal;

    const POLICY: &str = r#"
levels = [
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
scope = ["payments:write"]

[[route]]
name = "large transfer"
methods = ["POST"]
path = "/transfers/large"
acr = ["phr", "mfa"]
max_age = 60
"#;

    const PWD: &str = "urn:stepup:acr:pwd";
    const MFA: &str = "urn:stepup:acr:mfa";
    const PHR: &str = "urn:stepup:acr:phr";

    fn policy() -> Policy {
        Policy::from_toml("p.toml", POLICY).unwrap()
    }

    fn facts<'a>(acr: Option<&'a str>, auth_time: Option<i64>, scope: &'a str) -> TokenFacts<'a> {
        TokenFacts {
            acr,
            auth_time: auth_time.map(UnixTime),
            scope: Some(scope),
        }
    }

    #[test]
    fn default_rule_applies_to_unmatched_routes() {
        let p = policy();
        let d = p
            .decide("GET", "/accounts/1", &facts(Some(PWD), None, ""), UnixTime(0))
            .unwrap();
        assert!(d.rule.is_default());
        assert_eq!(d.verdict, Verdict::Allow);
        let d = p
            .decide("GET", "/accounts/1", &facts(None, None, ""), UnixTime(0))
            .unwrap();
        assert!(matches!(
            d.verdict,
            Verdict::StepUp {
                reason: StepUpReason::AcrTooWeak,
                ..
            }
        ));
    }

    #[test]
    fn weak_acr_steps_up_with_the_rule_parameters() {
        let p = policy();
        let d = p
            .decide(
                "POST",
                "/accounts/1/payees",
                &facts(Some(PWD), Some(1000), "payments:write"),
                UnixTime(1010),
            )
            .unwrap();
        assert_eq!(d.rule.name, "add payee");
        let Verdict::StepUp {
            acr_values,
            max_age,
            reason,
        } = d.verdict
        else {
            panic!("{:?}", d.verdict)
        };
        assert_eq!(acr_values[0].as_str(), MFA);
        assert_eq!(max_age, Some(300));
        assert_eq!(reason, StepUpReason::AcrTooWeak);
    }

    #[test]
    fn freshness_is_enforced_at_the_boundary() {
        let p = policy();
        let f = facts(Some(PHR), Some(1000), "payments:write");
        let at = |now| {
            p.decide("POST", "/accounts/1/payees", &f, UnixTime(now))
                .unwrap()
                .verdict
        };
        assert_eq!(at(1300), Verdict::Allow);
        assert!(matches!(
            at(1301),
            Verdict::StepUp {
                reason: StepUpReason::AuthenticationTooOld { age: 301 },
                ..
            }
        ));
        let no_time = facts(Some(PHR), None, "payments:write");
        let d = p
            .decide("POST", "/accounts/1/payees", &no_time, UnixTime(1000))
            .unwrap();
        assert!(matches!(
            d.verdict,
            Verdict::StepUp {
                reason: StepUpReason::AuthTimeMissing,
                ..
            }
        ));
    }

    #[test]
    fn scope_is_checked_first() {
        let p = policy();
        let d = p
            .decide(
                "POST",
                "/accounts/1/payees",
                &facts(Some(PWD), None, "openid"),
                UnixTime(0),
            )
            .unwrap();
        let Verdict::InsufficientScope { scope } = d.verdict else {
            panic!()
        };
        assert_eq!(scope[0].as_str(), "payments:write");
    }

    #[test]
    fn any_acceptable_value_in_preference_order() {
        let p = policy();
        let ok = p
            .decide(
                "POST",
                "/transfers/large",
                &facts(Some(MFA), Some(100), ""),
                UnixTime(150),
            )
            .unwrap();
        assert_eq!(ok.verdict, Verdict::Allow);
        let d = p
            .decide(
                "POST",
                "/transfers/large",
                &facts(Some(PWD), Some(100), ""),
                UnixTime(150),
            )
            .unwrap();
        let Verdict::StepUp { acr_values, .. } = d.verdict else {
            panic!()
        };
        let values: Vec<&str> = acr_values.iter().map(Acr::as_str).collect();
        assert_eq!(values, [PHR, MFA]);
    }

    #[test]
    fn challenges_carry_rfc9470_parameters() {
        let p = policy();
        let d = p
            .decide(
                "POST",
                "/transfers/large",
                &facts(Some(PWD), Some(100), ""),
                UnixTime(150),
            )
            .unwrap();
        assert_eq!(d.status(), 401);
        let header = d.challenge().unwrap().to_challenge().to_string();
        assert_eq!(
            header,
            "Bearer error=\"insufficient_user_authentication\", \
             error_description=\"a stronger authentication is required (rule 'large transfer')\", \
             acr_values=\"urn:stepup:acr:phr urn:stepup:acr:mfa\", max_age=\"60\""
        );
        let d = p
            .decide(
                "POST",
                "/accounts/1/payees",
                &facts(Some(PHR), Some(100), "openid"),
                UnixTime(150),
            )
            .unwrap();
        assert_eq!(d.status(), 403);
        let c = d.challenge().unwrap();
        assert_eq!(c.scope.as_deref(), Some("payments:write"));
        assert_eq!(c.error, Some(ErrorCode::InsufficientScope));
        let ok = p
            .decide("GET", "/x", &facts(Some(PWD), None, ""), UnixTime(0))
            .unwrap();
        assert_eq!((ok.status(), ok.challenge()), (200, None));
    }

    #[test]
    fn request_path_tricks_do_not_escape_the_rule() {
        let p = policy();
        let weak = facts(Some(PWD), Some(0), "payments:write");
        // An empty {id} still selects the route, as it selects the handler.
        let d = p.decide("POST", "/accounts//payees", &weak, UnixTime(0)).unwrap();
        assert_eq!(d.rule.name, "add payee");
        for path in ["/accounts/1/x/../payees", "/accounts/1/%70ayees"] {
            assert!(p.decide("POST", path, &weak, UnixTime(0)).is_err(), "{path}");
        }
    }

    const RISKY: &str = r#"
levels = [
  { name = "pwd", acr = "urn:stepup:acr:pwd" },
  { name = "mfa", acr = "urn:stepup:acr:mfa" },
  { name = "phr", acr = "urn:stepup:acr:phr" },
]
[default]
acr = ["pwd"]

[[route]]
name = "transfer"
methods = ["POST"]
path = "/accounts/{id}/transfers"
acr = ["mfa"]
max_age = 300

[[route]]
name = "balance"
methods = ["GET"]
path = "/accounts/{id}/balance"
acr = ["pwd"]

[[risk]]
name = "large transfer"
when = "amount > 1000 and currency == 'EUR'"
routes = ["transfer"]
require = { acr = ["phr", "mfa"], max_age = 60 }
reason = "Large transfers need a recent confirmation that it is you."

[[risk]]
name = "elsewhere"
when = "country_changed or impossible_travel"
require = { acr = ["mfa"] }
"#;

    fn risky() -> Policy {
        Policy::from_toml("risky.toml", RISKY).unwrap()
    }

    fn transfer(amount: i64) -> Signals<'static> {
        Signals {
            amount: Some(Decimal::from(amount)),
            currency: Some("EUR"),
            ..Signals::NONE
        }
    }

    #[test]
    fn a_large_transfer_raises_the_requirement() {
        let p = risky();
        // mfa proven 120 s ago: fine for the route (300 s), not for the
        // large-transfer rule (60 s).
        let token = facts(Some(MFA), Some(880), "");
        let now = UnixTime(1000);
        let small = p
            .decide_with("POST", "/accounts/1/transfers", &token, &transfer(250), now)
            .unwrap();
        assert_eq!(small.verdict, Verdict::Allow);
        assert!(small.fired.is_empty());

        let large = p
            .decide_with("POST", "/accounts/1/transfers", &token, &transfer(5000), now)
            .unwrap();
        let names: Vec<&str> = large.fired.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["large transfer"]);
        let Verdict::StepUp {
            acr_values,
            max_age,
            reason,
        } = &large.verdict
        else {
            panic!("{:?}", large.verdict);
        };
        assert_eq!(*reason, StepUpReason::Risk { rule: 0 });
        assert_eq!(*max_age, Some(60), "the shortest max_age");
        let acr: Vec<&str> = acr_values.iter().map(Acr::as_str).collect();
        assert_eq!(acr, [PHR, MFA]);
        let challenge = large.challenge().unwrap();
        assert_eq!(
            challenge.error_description.as_deref(),
            Some("Large transfers need a recent confirmation that it is you.")
        );
        assert_eq!(large.status(), 401);

        // Proven 30 s ago: the large transfer passes.
        let fresh = facts(Some(MFA), Some(970), "");
        let large = p
            .decide_with("POST", "/accounts/1/transfers", &fresh, &transfer(5000), now)
            .unwrap();
        assert_eq!(large.verdict, Verdict::Allow);
        assert_eq!(large.fired.len(), 1, "fired, but met");
    }

    #[test]
    fn risk_rules_apply_to_their_routes_and_need_known_signals() {
        let p = risky();
        let pwd = facts(Some(PWD), Some(990), "");
        let now = UnixTime(1000);
        // The large-transfer rule names only the transfer route.
        let d = p
            .decide_with("GET", "/accounts/1/balance", &pwd, &transfer(5000), now)
            .unwrap();
        assert_eq!(d.verdict, Verdict::Allow);
        // No amount known: the rule cannot fire.
        let d = p
            .decide_with("GET", "/accounts/1/balance", &pwd, &Signals::NONE, now)
            .unwrap();
        assert!(d.fired.is_empty());
        // Another country: every route needs mfa, with the generic reason.
        let moved = Signals {
            country: Some("BR"),
            auth_country: Some("FR"),
            ..Signals::NONE
        };
        let d = p
            .decide_with("GET", "/accounts/1/balance", &pwd, &moved, now)
            .unwrap();
        let Verdict::StepUp {
            acr_values, max_age, ..
        } = &d.verdict
        else {
            panic!("{:?}", d.verdict);
        };
        assert_eq!((acr_values.len(), *max_age), (1, None));
        assert_eq!(
            d.challenge().unwrap().error_description.as_deref(),
            Some("This request needs you to confirm it is you.")
        );
        let d = p.decide_with("GET", "/nowhere", &pwd, &moved, now).unwrap();
        assert!(d.rule.is_default() && d.status() == 401, "the default rule too");
        // The route's own shortfall comes first in the reason.
        let d = p
            .decide_with("POST", "/accounts/1/transfers", &pwd, &moved, now)
            .unwrap();
        let Verdict::StepUp { reason, .. } = d.verdict else {
            panic!();
        };
        assert_eq!(reason, StepUpReason::AcrTooWeak);
    }

    fn risk_error(extra: &str) -> String {
        let source = format!("{RISKY}{extra}");
        Policy::from_toml("risky.toml", &source).unwrap_err().to_string()
    }

    #[test]
    fn risk_rules_are_checked_at_load_with_locations() {
        let typo = "\n[[risk]]\nname = \"typo\"\nwhen = \"amount > 5 and currncy == 'EUR'\"\nrequire = { acr = [\"mfa\"] }\n";
        let line = format!("{RISKY}{typo}")
            .lines()
            .position(|l| l.contains("currncy"))
            .unwrap()
            + 1;
        let e = risk_error(typo);
        // The `when` line, at the unknown signal's column (`when = "` is 8,
        // then 15 characters before it).
        assert!(
            e.starts_with(&format!(
                "error: risky.toml:{line}:24: in `when`: unknown signal `currncy`"
            )),
            "{e}"
        );
        let e = risk_error(
            "\n[[risk]]\nname = \"x\"\nwhen = \"true\"\nroutes = [\"transfers\"]\nrequire = { acr = [\"mfa\"] }\n",
        );
        assert!(
            e.contains("no route named \"transfers\"; expected \"default\" or one of: transfer, balance"),
            "{e}"
        );
        let e = risk_error("\n[[risk]]\nname = \"x\"\nwhen = \"true\"\nrequire = { scope = [\"a\"] }\n");
        assert!(e.contains("scopes belong to routes"), "{e}");
        let e = risk_error("\n[[risk]]\nname = \"x\"\nwhen = \"true\"\nrequire = {}\n");
        assert!(e.contains("expected `acr` or `max_age` in `require`"), "{e}");
        let e = risk_error("\n[[risk]]\nname = \"elsewhere\"\nwhen = \"true\"\nrequire = { max_age = 5 }\n");
        assert!(e.contains("risk rule name \"elsewhere\" is used twice"), "{e}");
        let e = risk_error("\n[[risk]]\nname = \"x\"\nwhen = \"true\"\nrequire = { acr = [\"top\"] }\n");
        assert!(e.contains("unknown assurance level \"top\""), "{e}");
        let e = risk_error(
            "\n[[risk]]\nname = \"x\"\nwhen = \"true\"\nrequire = { max_age = 5 }\nreason = \"\"\n",
        );
        assert!(e.contains("a reason is 1 to 200 characters"), "{e}");
        let e = risk_error(
            "\n[[risk]]\nname = \"x\"\nwhen = \"true\"\nrequire = { max_age = 5 }\nsevere = true\n",
        );
        assert!(e.contains("unknown field `severe`"), "{e}");
    }

    use proptest::prelude::*;

    fn any_signals() -> impl Strategy<Value = (Option<Decimal>, bool, Option<bool>)> {
        (
            // Cents, as amounts are written.
            proptest::option::of((0i64..500_000).prop_map(|cents| Decimal::new(cents, 2))),
            any::<bool>(),
            proptest::option::of(any::<bool>()),
        )
    }

    proptest! {
        /// Adding a risk rule never makes a decision weaker: whatever the
        /// token and signals, what was refused stays refused, and a step-up
        /// asks for at least as much.
        #[test]
        fn adding_a_risk_rule_never_weakens_a_decision(
            threshold in 0.0f64..5000.0,
            level in 0usize..3,
            rule_max_age in proptest::option::of(0u64..600),
            acr in proptest::option::of(0usize..3),
            age in 0i64..1000,
            (amount, moved, travel) in any_signals(),
            route in 0usize..3,
        ) {
            let levels = ["pwd", "mfa", "phr"];
            let max_age = rule_max_age.map(|m| format!(", max_age = {m}")).unwrap_or_default();
            let extra = format!(
                "\n[[risk]]\nname = \"added\"\nwhen = \"amount > {threshold} or impossible_travel\"\nrequire = {{ acr = [\"{}\"]{max_age} }}\n",
                levels[level]
            );
            let base = risky();
            let more = Policy::from_toml("more.toml", &format!("{RISKY}{extra}")).unwrap();
            let acrs = [PWD, MFA, PHR];
            let token = facts(acr.map(|i| acrs[i]), Some(10_000 - age), "");
            let signals = Signals {
                amount,
                currency: Some("EUR"),
                country: Some(if moved { "BR" } else { "FR" }),
                auth_country: Some("FR"),
                impossible_travel: travel,
                ..Signals::NONE
            };
            let (method, path) = [("POST", "/accounts/1/transfers"), ("GET", "/accounts/1/balance"), ("GET", "/x")][route];
            let now = UnixTime(10_000);
            let before = base.decide_with(method, path, &token, &signals, now).unwrap();
            let after = more.decide_with(method, path, &token, &signals, now).unwrap();
            if before.verdict != Verdict::Allow {
                prop_assert_ne!(&after.verdict, &Verdict::Allow);
            }
            if let (
                Verdict::StepUp { acr_values: a, max_age: ma, .. },
                Verdict::StepUp { acr_values: b, max_age: mb, .. },
            ) = (&before.verdict, &after.verdict) {
                prop_assert!(more.floor_of(b) >= base.floor_of(a));
                match (ma, mb) {
                    (Some(x), Some(y)) => prop_assert!(y <= x),
                    (Some(_), None) => prop_assert!(false, "max_age dropped"),
                    _ => {}
                }
            }
        }
    }
}
