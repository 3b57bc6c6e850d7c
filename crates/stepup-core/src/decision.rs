//! Deciding a request: is the verified token good enough, and if not, what
//! would be (RFC 9470 §3, RFC 6750 §3.1).
//!
//! Scopes are checked before assurance: a token lacking a scope gets
//! `insufficient_scope` (403), since re-authenticating alone would not add
//! it. Then the `acr` and the age of the authentication: when either falls
//! short, the answer is a step-up carrying both the acceptable `acr_values`
//! and the `max_age` of the rule, so the new token satisfies the whole rule.

use std::fmt;

use crate::access_token::TokenFacts;
use crate::acr::Acr;
use crate::challenge::{BearerChallenge, ErrorCode};
use crate::policy::{Policy, Rule};
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

/// A verdict and the rule that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    /// The rule that applied.
    pub rule: &'p Rule,
    /// What the rule says about this token.
    pub verdict: Verdict<'p>,
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
                error_description: Some(format!("{reason} (rule '{}')", self.rule.name)),
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

    /// Decides a request with a verified token's facts at time `now`.
    pub fn decide(
        &self,
        method: &str,
        path: &str,
        token: &TokenFacts<'_>,
        now: UnixTime,
    ) -> Result<Decision<'_>, RequestPathError> {
        let rule = self.rule_for(method, path)?;
        Ok(Decision {
            rule,
            verdict: self.judge(rule, token, now),
        })
    }

    fn judge<'p>(&'p self, rule: &'p Rule, token: &TokenFacts<'_>, now: UnixTime) -> Verdict<'p> {
        let req = &rule.requirement;
        if !req.scopes.is_empty() {
            let granted = token.scope.unwrap_or("");
            if !req.scopes.iter().all(|s| scope_claim_contains(granted, s)) {
                return Verdict::InsufficientScope { scope: &req.scopes };
            }
        }
        let step_up = |reason| Verdict::StepUp {
            acr_values: &req.acr_values,
            max_age: req.max_age,
            reason,
        };
        if !self.levels.satisfies(token.acr, &req.acr_values) {
            return step_up(StepUpReason::AcrTooWeak);
        }
        if let Some(max_age) = req.max_age {
            let Some(auth_time) = token.auth_time else {
                return step_up(StepUpReason::AuthTimeMissing);
            };
            // A future auth_time is rejected by claim validation; here it
            // simply counts as age 0.
            let age = u64::try_from(now.since(auth_time)).unwrap_or(0);
            if age > max_age {
                return step_up(StepUpReason::AuthenticationTooOld { age });
            }
        }
        Verdict::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
