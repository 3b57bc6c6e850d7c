//! Which factors a user must prove to reach a requested assurance level,
//! given what the session has already proven and when.
//!
//! This is the step-up logic of the authorization server, sans I/O: levels
//! are configured as alternative combinations of factors (`mfa` = password
//! and TOTP, or a passkey); a session remembers when each factor was last
//! proven; a request names acceptable levels in preference order (RFC 9470
//! §5 treats them as required) and possibly a `max_age`. The plan reuses
//! fresh proofs and asks only for what is missing, picks the first level the
//! user is able to reach (never silently a weaker one), and reports
//! `acr`, `amr` and `auth_time` as they really happened.

use std::fmt;

use crate::acr::Acr;
use crate::time::UnixTime;

/// An authentication factor, named by its RFC 8176 `amr` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Factor {
    /// Password (`pwd`).
    Pwd,
    /// One-time password, here TOTP (`otp`).
    Otp,
    /// Proof of possession of a hardware-secured key, here a passkey (`hwk`).
    Hwk,
}

impl Factor {
    /// All factors.
    pub const ALL: [Factor; 3] = [Factor::Pwd, Factor::Otp, Factor::Hwk];

    /// The `amr` value.
    pub fn amr(self) -> &'static str {
        match self {
            Factor::Pwd => "pwd",
            Factor::Otp => "otp",
            Factor::Hwk => "hwk",
        }
    }

    /// Parses an `amr` value.
    pub fn from_amr(value: &str) -> Option<Factor> {
        Factor::ALL.into_iter().find(|f| f.amr() == value)
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.amr())
    }
}

/// A level and the factor combinations that reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    /// The `acr` value.
    pub acr: Acr,
    /// Alternatives, each a set of factors that together reach the level.
    pub combinations: Vec<Vec<Factor>>,
    /// How long after its proof a factor still counts for this level
    /// (elevation decays); `None`: as long as the session.
    pub lifetime_seconds: Option<u64>,
}

/// When each factor was last proven in the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Proofs {
    /// Password.
    pub pwd: Option<UnixTime>,
    /// TOTP.
    pub otp: Option<UnixTime>,
    /// Passkey.
    pub hwk: Option<UnixTime>,
}

impl Proofs {
    /// When `factor` was last proven.
    pub fn at(&self, factor: Factor) -> Option<UnixTime> {
        match factor {
            Factor::Pwd => self.pwd,
            Factor::Otp => self.otp,
            Factor::Hwk => self.hwk,
        }
    }
}

/// Which factors the user can prove at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enrolled {
    /// Has a password.
    pub pwd: bool,
    /// Has a TOTP seed.
    pub otp: bool,
    /// Has a passkey.
    pub hwk: bool,
}

impl Enrolled {
    /// Whether the user can prove `factor`.
    pub fn has(&self, factor: Factor) -> bool {
        match factor {
            Factor::Pwd => self.pwd,
            Factor::Otp => self.otp,
            Factor::Hwk => self.hwk,
        }
    }
}

/// What a request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    /// Acceptable levels in preference order; empty: any level (the
    /// strongest one already reached is reported, else the weakest is asked).
    pub acr_values: Vec<Acr>,
    /// Proofs must be at most this old (OIDC `max_age`).
    pub max_age: Option<u64>,
    /// Proofs must be made at or after this time (`prompt=login`: the time
    /// of the request).
    pub fresh_since: Option<UnixTime>,
}

/// The outcome of planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The session already reaches a requested level.
    Satisfied {
        /// The level reached.
        acr: Acr,
        /// The factors that reached it, as `amr`.
        amr: Vec<Factor>,
        /// When the last of them was proven.
        auth_time: UnixTime,
    },
    /// The user must prove `missing` (in order) to reach `acr`.
    Prove {
        /// The level being reached.
        acr: Acr,
        /// The factors still to prove, in the order to ask for them.
        missing: Vec<Factor>,
    },
    /// No requested level can be reached by this user (RFC 9470 §5:
    /// `unmet_authentication_requirements`, never a weaker token).
    Unmet,
}

/// Plans the authentication for a request.
///
/// `levels` are ordered weakest first. `enrolled` is `None` before the user
/// is identified (any combination may then be tried, password first).
pub fn plan(
    levels: &[Level],
    proofs: &Proofs,
    enrolled: Option<&Enrolled>,
    ask: &Ask,
    now: UnixTime,
) -> Plan {
    // A proof counts if it was made in this session and, under
    // `prompt=login`, during this request.
    let counted = |factor: Factor| -> Option<UnixTime> {
        proofs
            .at(factor)
            .filter(|at| ask.fresh_since.is_none_or(|since| *at >= since))
    };
    // A level is held from the moment its combination was completed (the
    // latest proof, OIDC's `auth_time`) for as long as `max_age` and the
    // level's lifetime allow.
    let held = |level: &Level, auth_time: UnixTime| {
        let age = u64::try_from(now.since(auth_time)).unwrap_or(0);
        let within = |limit: Option<u64>| limit.is_none_or(|l| age <= l);
        within(ask.max_age) && within(level.lifetime_seconds)
    };
    let reachable = |combo: &[Factor]| enrolled.is_none_or(|e| combo.iter().all(|f| e.has(*f)));

    // The requested levels in preference order, or all of them.
    let requested: Vec<&Level> = if ask.acr_values.is_empty() {
        levels.iter().collect()
    } else {
        ask.acr_values
            .iter()
            .filter_map(|acr| levels.iter().find(|l| &l.acr == acr))
            .collect()
    };

    let satisfied = |level: &Level| -> Option<Plan> {
        level.combinations.iter().find_map(|combo| {
            let times: Vec<UnixTime> = combo.iter().map(|f| counted(*f)).collect::<Option<_>>()?;
            let auth_time = times.iter().max().copied()?;
            if !held(level, auth_time) {
                return None;
            }
            let mut amr = combo.clone();
            amr.sort();
            Some(Plan::Satisfied {
                acr: level.acr.clone(),
                amr,
                auth_time,
            })
        })
    };
    // For an unspecific request report the strongest level held; for a
    // specific one the first held in preference order.
    let held_first = if ask.acr_values.is_empty() {
        requested.iter().rev().find_map(|l| satisfied(l))
    } else {
        requested.iter().find_map(|l| satisfied(l))
    };
    if let Some(done) = held_first {
        return done;
    }

    // Otherwise the first level the user can reach at all, by the
    // combination that needs the fewest new proofs (reusing the others).
    for level in &requested {
        let best = level
            .combinations
            .iter()
            .filter(|combo| reachable(combo))
            .map(|combo| {
                let mut missing: Vec<Factor> =
                    combo.iter().copied().filter(|f| counted(*f).is_none()).collect();
                if missing.is_empty() {
                    // Every factor was proven but the level has lapsed: one
                    // new proof renews it; ask for the strongest factor.
                    missing.extend(combo.iter().copied().max());
                }
                // The password identifies the user: ask for it first.
                missing.sort();
                missing
            })
            .min_by_key(Vec::len);
        if let Some(missing) = best {
            return Plan::Prove {
                acr: level.acr.clone(),
                missing,
            };
        }
    }
    Plan::Unmet
}

/// The levels as they count for binding a new authenticator (NIST SP
/// 800-63B §6.1.2.1): every combination made of passwords alone is left
/// out, so a level is reached for binding only with a factor a stolen
/// password does not give. Levels left with no combination stay (in
/// order), unreachable.
pub fn binding_levels(levels: &[Level]) -> Vec<Level> {
    levels
        .iter()
        .map(|level| Level {
            combinations: level
                .combinations
                .iter()
                .filter(|combo| combo.iter().any(|f| *f != Factor::Pwd))
                .cloned()
                .collect(),
            ..level.clone()
        })
        .collect()
}

/// The level a user must prove afresh before binding a new authenticator
/// by themselves: the strongest of [`binding_levels`] that the factors
/// they hold reach, so binding never takes less assurance than the account
/// already has. `None` when they hold nothing but a password: a password
/// alone never binds a second factor (an administrator, or an out-of-band
/// bootstrap, must).
pub fn binding_level(levels: &[Level], enrolled: &Enrolled) -> Option<Acr> {
    binding_levels(levels)
        .iter()
        .rev()
        .find(|l| l.combinations.iter().any(|c| c.iter().all(|f| enrolled.has(*f))))
        .map(|l| l.acr.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acr(s: &str) -> Acr {
        Acr::new(s).unwrap()
    }

    fn levels() -> Vec<Level> {
        vec![
            Level {
                acr: acr("pwd"),
                combinations: vec![vec![Factor::Pwd]],
                lifetime_seconds: None,
            },
            Level {
                acr: acr("mfa"),
                combinations: vec![vec![Factor::Pwd, Factor::Otp], vec![Factor::Hwk]],
                lifetime_seconds: Some(900),
            },
            Level {
                acr: acr("phr"),
                combinations: vec![vec![Factor::Hwk]],
                lifetime_seconds: Some(900),
            },
        ]
    }

    const ALL: Enrolled = Enrolled {
        pwd: true,
        otp: true,
        hwk: true,
    };
    const PWD_OTP: Enrolled = Enrolled {
        pwd: true,
        otp: true,
        hwk: false,
    };
    const PWD_ONLY: Enrolled = Enrolled {
        pwd: true,
        otp: false,
        hwk: false,
    };

    fn ask(values: &[&str], max_age: Option<u64>) -> Ask {
        Ask {
            acr_values: values.iter().map(|v| acr(v)).collect(),
            max_age,
            fresh_since: None,
        }
    }

    fn t(s: i64) -> UnixTime {
        UnixTime(s)
    }

    #[test]
    fn a_new_visitor_is_asked_for_the_password_first() {
        let p = plan(&levels(), &Proofs::default(), None, &ask(&[], None), t(1000));
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("pwd"),
                missing: vec![Factor::Pwd]
            }
        );
        let p = plan(&levels(), &Proofs::default(), None, &ask(&["mfa"], None), t(1000));
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("mfa"),
                missing: vec![Factor::Hwk]
            }
        );
    }

    #[test]
    fn a_step_up_asks_only_for_the_missing_factor() {
        let proofs = Proofs {
            pwd: Some(t(900)),
            ..Proofs::default()
        };
        let p = plan(&levels(), &proofs, Some(&PWD_OTP), &ask(&["mfa"], None), t(1000));
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("mfa"),
                missing: vec![Factor::Otp]
            }
        );
        // Once the code is in, mfa is satisfied, auth_time is the later proof.
        let proofs = Proofs {
            pwd: Some(t(900)),
            otp: Some(t(990)),
            ..Proofs::default()
        };
        let p = plan(&levels(), &proofs, Some(&PWD_OTP), &ask(&["mfa"], None), t(1000));
        assert_eq!(
            p,
            Plan::Satisfied {
                acr: acr("mfa"),
                amr: vec![Factor::Pwd, Factor::Otp],
                auth_time: t(990)
            }
        );
    }

    #[test]
    fn max_age_applies_to_when_the_level_was_reached() {
        let proofs = Proofs {
            pwd: Some(t(900)),
            otp: Some(t(990)),
            ..Proofs::default()
        };
        // Reached at 990: fresh enough for max_age 50 at 1000, not for 5.
        let p = plan(
            &levels(),
            &proofs,
            Some(&PWD_OTP),
            &ask(&["mfa"], Some(50)),
            t(1000),
        );
        assert!(matches!(p, Plan::Satisfied { auth_time, .. } if auth_time == t(990)));
        let p = plan(
            &levels(),
            &proofs,
            Some(&PWD_OTP),
            &ask(&["mfa"], Some(5)),
            t(1000),
        );
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("mfa"),
                missing: vec![Factor::Otp]
            }
        );
        // A fresh code renews it.
        let renewed = Proofs {
            otp: Some(t(1000)),
            ..proofs
        };
        let p = plan(
            &levels(),
            &renewed,
            Some(&PWD_OTP),
            &ask(&["mfa"], Some(5)),
            t(1000),
        );
        assert!(matches!(p, Plan::Satisfied { auth_time, .. } if auth_time == t(1000)));
    }

    #[test]
    fn fresh_since_demands_every_factor_again() {
        let proofs = Proofs {
            pwd: Some(t(900)),
            otp: Some(t(990)),
            ..Proofs::default()
        };
        let mut a = ask(&["mfa"], Some(0));
        a.fresh_since = Some(t(1000));
        let p = plan(&levels(), &proofs, Some(&PWD_OTP), &a, t(1000));
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("mfa"),
                missing: vec![Factor::Pwd, Factor::Otp]
            }
        );
        let halfway = Proofs {
            pwd: Some(t(1001)),
            ..proofs
        };
        let p = plan(&levels(), &halfway, Some(&PWD_OTP), &a, t(1001));
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("mfa"),
                missing: vec![Factor::Otp]
            }
        );
    }
    #[test]
    fn prompt_login_ignores_earlier_proofs() {
        let proofs = Proofs {
            pwd: Some(t(999)),
            ..Proofs::default()
        };
        let mut a = ask(&[], None);
        a.fresh_since = Some(t(1000));
        let p = plan(&levels(), &proofs, Some(&PWD_ONLY), &a, t(1001));
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("pwd"),
                missing: vec![Factor::Pwd]
            }
        );
    }

    #[test]
    fn elevation_decays_with_the_level_lifetime() {
        let proofs = Proofs {
            pwd: Some(t(0)),
            otp: Some(t(100)),
            ..Proofs::default()
        };
        let satisfied = plan(&levels(), &proofs, Some(&PWD_OTP), &ask(&["mfa"], None), t(1000));
        assert!(matches!(satisfied, Plan::Satisfied { .. }));
        let decayed = plan(&levels(), &proofs, Some(&PWD_OTP), &ask(&["mfa"], None), t(1001));
        assert_eq!(
            decayed,
            Plan::Prove {
                acr: acr("mfa"),
                missing: vec![Factor::Otp]
            }
        );
        // The base level has no lifetime: still pwd without asking.
        let base = plan(&levels(), &proofs, Some(&PWD_OTP), &ask(&[], None), t(1001));
        assert_eq!(
            base,
            Plan::Satisfied {
                acr: acr("pwd"),
                amr: vec![Factor::Pwd],
                auth_time: t(0)
            }
        );
    }

    #[test]
    fn preference_order_picks_the_first_reachable_level_never_the_lowest_silently() {
        // phr first, but this user has no passkey: mfa it is.
        let proofs = Proofs {
            pwd: Some(t(990)),
            ..Proofs::default()
        };
        let p = plan(
            &levels(),
            &proofs,
            Some(&PWD_OTP),
            &ask(&["phr", "mfa"], None),
            t(1000),
        );
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("mfa"),
                missing: vec![Factor::Otp]
            }
        );
        // A user with a passkey gets phr, the first preference.
        let p = plan(
            &levels(),
            &proofs,
            Some(&ALL),
            &ask(&["phr", "mfa"], None),
            t(1000),
        );
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("phr"),
                missing: vec![Factor::Hwk]
            }
        );
        // Asking for mfa alone with only a password: unmet, not a pwd token.
        let p = plan(&levels(), &proofs, Some(&PWD_ONLY), &ask(&["mfa"], None), t(1000));
        assert_eq!(p, Plan::Unmet);
        // Unknown acr values are not reachable.
        let p = plan(
            &levels(),
            &proofs,
            Some(&ALL),
            &ask(&["urn:other"], None),
            t(1000),
        );
        assert_eq!(p, Plan::Unmet);
    }

    #[test]
    fn an_unspecific_request_reports_the_strongest_level_reached() {
        let proofs = Proofs {
            pwd: Some(t(900)),
            otp: Some(t(950)),
            ..Proofs::default()
        };
        let p = plan(&levels(), &proofs, Some(&PWD_OTP), &ask(&[], None), t(1000));
        assert_eq!(
            p,
            Plan::Satisfied {
                acr: acr("mfa"),
                amr: vec![Factor::Pwd, Factor::Otp],
                auth_time: t(950)
            }
        );
    }

    #[test]
    fn a_satisfied_stronger_preference_wins_over_asking() {
        let proofs = Proofs {
            hwk: Some(t(990)),
            ..Proofs::default()
        };
        let p = plan(
            &levels(),
            &proofs,
            Some(&ALL),
            &ask(&["mfa", "phr"], None),
            t(1000),
        );
        assert_eq!(
            p,
            Plan::Satisfied {
                acr: acr("mfa"),
                amr: vec![Factor::Hwk],
                auth_time: t(990)
            }
        );
    }
    #[test]
    fn a_password_alone_never_binds_a_factor() {
        assert_eq!(binding_level(&levels(), &PWD_ONLY), None);
        assert_eq!(binding_level(&levels(), &PWD_OTP), Some(acr("mfa")));
        assert_eq!(binding_level(&levels(), &ALL), Some(acr("phr")));
        let passkey_only = Enrolled {
            pwd: false,
            otp: false,
            hwk: true,
        };
        assert_eq!(binding_level(&levels(), &passkey_only), Some(acr("phr")));
    }

    #[test]
    fn a_level_reached_by_a_password_or_a_key_binds_only_with_the_key() {
        // A configuration where one level takes a password or a passkey:
        // for binding, the password combination does not count.
        let lax = vec![Level {
            acr: acr("any"),
            combinations: vec![vec![Factor::Pwd], vec![Factor::Hwk]],
            lifetime_seconds: None,
        }];
        let binding = binding_levels(&lax);
        assert_eq!(binding[0].combinations, vec![vec![Factor::Hwk]]);
        let proofs = Proofs {
            pwd: Some(t(1000)),
            ..Proofs::default()
        };
        let p = plan(&binding, &proofs, Some(&ALL), &ask(&["any"], None), t(1000));
        assert_eq!(
            p,
            Plan::Prove {
                acr: acr("any"),
                missing: vec![Factor::Hwk]
            }
        );
        assert_eq!(binding_level(&lax, &PWD_ONLY), None);
    }
}
