//! Authentication Context Class References (`acr`, OpenID Connect Core §2)
//! and the ordered assurance levels that give them meaning.
//!
//! An `acr` value on its own is only a name. A deployment orders the names it
//! knows, weakest first, and a presented `acr` satisfies a requirement when it
//! is at least as strong as one of the acceptable values. Values the
//! deployment does not know rank below every configured level: they satisfy
//! no requirement that names a level (reject by default).

use std::fmt;

use thiserror::Error;

/// An `acr` value, such as `urn:stepup:acr:mfa`.
///
/// Restricted to the characters RFC 6749 §3.3 allows in a scope token
/// (printable ASCII without space, `"` and `\`), because RFC 9470 carries
/// several of them space-separated in `acr_values` inside a quoted string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acr(String);

/// Why a string is not an `acr` value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AcrError {
    /// The value is empty.
    #[error("an acr value must not be empty")]
    Empty,
    /// The value contains a character outside %x21 / %x23-5B / %x5D-7E.
    #[error("an acr value may not contain {0:?} (allowed: printable ASCII without space, '\"' and '\\')")]
    BadCharacter(char),
}

/// True for the characters of an RFC 6749 §3.3 scope token (NQCHAR without space).
pub(crate) fn is_nqchar_token_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e')
}

impl Acr {
    /// Checks and wraps an `acr` value.
    pub fn new(value: impl Into<String>) -> Result<Self, AcrError> {
        let value = value.into();
        if value.is_empty() {
            return Err(AcrError::Empty);
        }
        if let Some(c) = value.chars().find(|c| !is_nqchar_token_char(*c)) {
            return Err(AcrError::BadCharacter(c));
        }
        Ok(Self(value))
    }

    /// The value as it appears on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Acr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Acr({})", self.0)
    }
}

impl fmt::Display for Acr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Acr {
    type Err = AcrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Why a list of levels cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LevelsError {
    /// No level was configured.
    #[error("at least one assurance level must be configured")]
    Empty,
    /// The same `acr` appears twice.
    #[error("assurance level {0} is listed twice")]
    Duplicate(Acr),
}

/// The rank of an `acr` among the configured levels: 0 for unknown or absent
/// values, 1 for the weakest configured level, and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank(u16);

impl Rank {
    /// The rank of an unknown or absent `acr`.
    pub const UNKNOWN: Rank = Rank(0);
}

/// The deployment's assurance levels, weakest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssuranceLevels {
    levels: Vec<Acr>,
}

impl AssuranceLevels {
    /// Orders the given levels, weakest first.
    pub fn new(levels: Vec<Acr>) -> Result<Self, LevelsError> {
        if levels.is_empty() {
            return Err(LevelsError::Empty);
        }
        for (i, acr) in levels.iter().enumerate() {
            if levels[..i].contains(acr) {
                return Err(LevelsError::Duplicate(acr.clone()));
            }
        }
        Ok(Self { levels })
    }

    /// The levels, weakest first.
    pub fn levels(&self) -> &[Acr] {
        &self.levels
    }

    /// Looks a level up by its full value.
    pub fn get(&self, value: &str) -> Option<&Acr> {
        self.levels.iter().find(|acr| acr.as_str() == value)
    }

    /// The rank of a presented value; unknown values rank lowest.
    pub fn rank(&self, acr: Option<&str>) -> Rank {
        match acr {
            None => Rank::UNKNOWN,
            Some(value) => self
                .levels
                .iter()
                .position(|known| known.as_str() == value)
                // Levels are few (a handful); u16 is plenty and keeps Rank small.
                .map(|i| Rank(u16::try_from(i + 1).unwrap_or(u16::MAX)))
                .unwrap_or(Rank::UNKNOWN),
        }
    }

    /// Whether a presented `acr` meets a requirement that accepts any of
    /// `acceptable`: it is one of them, or ranks at least as high as one of
    /// them. An empty `acceptable` list is always met.
    pub fn satisfies(&self, presented: Option<&str>, acceptable: &[Acr]) -> bool {
        if acceptable.is_empty() {
            return true;
        }
        if let Some(p) = presented
            && acceptable.iter().any(|a| a.as_str() == p)
        {
            return true;
        }
        let rank = self.rank(presented);
        rank > Rank::UNKNOWN
            && acceptable
                .iter()
                .any(|a| self.rank(Some(a.as_str())) > Rank::UNKNOWN && rank >= self.rank(Some(a.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acr(s: &str) -> Acr {
        Acr::new(s).unwrap()
    }

    fn levels() -> AssuranceLevels {
        AssuranceLevels::new(vec![
            acr("urn:stepup:acr:pwd"),
            acr("urn:stepup:acr:mfa"),
            acr("urn:stepup:acr:phr"),
        ])
        .unwrap()
    }

    #[test]
    fn acr_rejects_empty_and_bad_characters() {
        assert_eq!(Acr::new(""), Err(AcrError::Empty));
        assert_eq!(Acr::new("a b"), Err(AcrError::BadCharacter(' ')));
        assert_eq!(Acr::new("a\"b"), Err(AcrError::BadCharacter('"')));
        assert_eq!(Acr::new("a\\b"), Err(AcrError::BadCharacter('\\')));
        assert_eq!(Acr::new("é"), Err(AcrError::BadCharacter('é')));
        assert!(Acr::new("urn:mace:incommon:iap:silver").is_ok());
    }

    #[test]
    fn levels_reject_empty_and_duplicates() {
        assert_eq!(AssuranceLevels::new(vec![]), Err(LevelsError::Empty));
        assert_eq!(
            AssuranceLevels::new(vec![acr("a"), acr("b"), acr("a")]),
            Err(LevelsError::Duplicate(acr("a")))
        );
    }

    #[test]
    fn stronger_satisfies_weaker_and_not_the_reverse() {
        let l = levels();
        let mfa = [acr("urn:stepup:acr:mfa")];
        assert!(l.satisfies(Some("urn:stepup:acr:mfa"), &mfa));
        assert!(l.satisfies(Some("urn:stepup:acr:phr"), &mfa));
        assert!(!l.satisfies(Some("urn:stepup:acr:pwd"), &mfa));
    }

    #[test]
    fn unknown_and_absent_acr_satisfy_no_level() {
        let l = levels();
        let pwd = [acr("urn:stepup:acr:pwd")];
        assert!(!l.satisfies(Some("urn:other:gold"), &pwd));
        assert!(!l.satisfies(None, &pwd));
        assert!(l.satisfies(None, &[]));
        assert_eq!(l.rank(Some("nope")), Rank::UNKNOWN);
        assert!(l.rank(Some("urn:stepup:acr:pwd")) > Rank::UNKNOWN);
    }

    #[test]
    fn an_unconfigured_acceptable_value_is_met_only_by_itself() {
        let l = levels();
        let partner = [acr("urn:partner:loa3")];
        assert!(l.satisfies(Some("urn:partner:loa3"), &partner));
        assert!(!l.satisfies(Some("urn:stepup:acr:phr"), &partner));
    }

    #[test]
    fn any_of_several_acceptable_values() {
        let l = levels();
        let either = [acr("urn:stepup:acr:phr"), acr("urn:stepup:acr:mfa")];
        assert!(l.satisfies(Some("urn:stepup:acr:mfa"), &either));
        assert!(!l.satisfies(Some("urn:stepup:acr:pwd"), &either));
    }
}
