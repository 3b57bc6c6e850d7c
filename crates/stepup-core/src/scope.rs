//! OAuth 2.0 scopes (RFC 6749 §3.3).

use std::fmt;

use thiserror::Error;

use crate::acr::is_nqchar_token_char;

/// One scope token, such as `payments:write`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

/// Why a string is not a scope token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// The value is empty.
    #[error("a scope must not be empty")]
    Empty,
    /// The value contains a character outside %x21 / %x23-5B / %x5D-7E.
    #[error("a scope may not contain {0:?} (allowed: printable ASCII without space, '\"' and '\\')")]
    BadCharacter(char),
}

impl Scope {
    /// Checks and wraps a scope token.
    pub fn new(value: impl Into<String>) -> Result<Self, ScopeError> {
        let value = value.into();
        if value.is_empty() {
            return Err(ScopeError::Empty);
        }
        if let Some(c) = value.chars().find(|c| !is_nqchar_token_char(*c)) {
            return Err(ScopeError::BadCharacter(c));
        }
        Ok(Self(value))
    }

    /// The scope as it appears on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({})", self.0)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a space-delimited `scope` claim grants `wanted`.
///
/// RFC 6749 §3.3 delimits scopes by single spaces; splitting on every space
/// and skipping empty pieces also tolerates doubled spaces without allocating.
pub fn scope_claim_contains(scope_claim: &str, wanted: &Scope) -> bool {
    scope_claim.split(' ').any(|granted| granted == wanted.as_str())
}

/// Joins scopes with single spaces, as they appear in a `scope` parameter.
pub fn join_scopes(scopes: &[Scope]) -> String {
    let mut out = String::new();
    for (i, s) in scopes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(s.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_tokens_are_checked() {
        assert_eq!(Scope::new(""), Err(ScopeError::Empty));
        assert_eq!(Scope::new("a b"), Err(ScopeError::BadCharacter(' ')));
        assert!(Scope::new("payments:write").is_ok());
    }

    #[test]
    fn claim_containment_is_exact_per_token() {
        let w = Scope::new("payments:write").unwrap();
        assert!(scope_claim_contains("openid payments:write", &w));
        assert!(scope_claim_contains("payments:write  openid", &w));
        assert!(!scope_claim_contains("payments:writer", &w));
        assert!(!scope_claim_contains("payments", &w));
        assert!(!scope_claim_contains("", &w));
    }

    #[test]
    fn join_uses_single_spaces() {
        let s = [Scope::new("a").unwrap(), Scope::new("b").unwrap()];
        assert_eq!(join_scopes(&s), "a b");
        assert_eq!(join_scopes(&[]), "");
    }
}
