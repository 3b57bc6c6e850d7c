//! Transaction-bound tokens (RFC 9396): a critical call is accepted only
//! with a token approved for exactly this transaction, used once, and
//! short-lived. The step-up is then for this transfer, not for a window of
//! time: a leaked token cannot pay anyone else, or pay twice.

use std::sync::Arc;

use serde_json::Value;

use crate::amount::decimal;
use crate::dpop::ReplayCache;

/// A route whose calls must match the token's `authorization_details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionRule {
    /// The policy route it applies to (by name).
    pub route: String,
    /// The `authorization_details` type the token must carry.
    pub details_type: String,
    /// Each field of the entry, and the JSON pointer of the request body
    /// that must hold the same value (`("creditor", "/to")`).
    pub fields: Vec<(String, String)>,
    /// The longest a token for it may live (from now to `exp`), seconds.
    pub max_token_seconds: i64,
}

/// Transaction rules and where used transaction tokens are remembered.
#[derive(Clone)]
pub struct TransactionOptions {
    pub(crate) rules: Vec<TransactionRule>,
    pub(crate) used: Arc<dyn ReplayCache>,
}

impl std::fmt::Debug for TransactionOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionOptions")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl TransactionOptions {
    /// `rules`, with used tokens remembered in `used` (a Redis cache for
    /// several instances).
    pub fn new(rules: Vec<TransactionRule>, used: Arc<dyn ReplayCache>) -> Self {
        Self { rules, used }
    }

    pub(crate) fn rule_for(&self, route_name: &str) -> Option<&TransactionRule> {
        self.rules.iter().find(|r| r.route == route_name)
    }
}

/// Why a call does not match its token's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The token carries no entry of the type.
    NoDetails,
    /// A field differs from the request (or is missing in either).
    Field(String),
}

/// Two JSON scalars the same: strings equal, or numbers (or decimal
/// strings) of equal value (`"5000.00"` and `5000`).
fn same(a: &Value, b: &Value) -> bool {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => decimal(s),
        _ => None,
    };
    match (a, b) {
        (Value::String(x), Value::String(y)) if x == y => true,
        _ => matches!((number(a), number(b)), (Some(x), Some(y)) if x == y),
    }
}

/// Whether the body matches an entry of the rule's type in the token's
/// `authorization_details`.
pub(crate) fn matches(
    rule: &TransactionRule,
    details: Option<&Value>,
    body: Option<&Value>,
) -> Result<(), Mismatch> {
    let entries: Vec<&Value> = details
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("type").and_then(Value::as_str) == Some(rule.details_type.as_str()))
        .collect();
    if entries.is_empty() {
        return Err(Mismatch::NoDetails);
    }
    let mut first_difference = None;
    for entry in entries {
        let difference = rule.fields.iter().find(|(field, pointer)| {
            let approved = entry.get(field);
            let asked = body.and_then(|b| b.pointer(pointer));
            !matches!((approved, asked), (Some(a), Some(b)) if same(a, b))
        });
        match difference {
            None => return Ok(()),
            Some((field, _)) => {
                first_difference.get_or_insert_with(|| field.clone());
            }
        }
    }
    Err(Mismatch::Field(first_difference.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule() -> TransactionRule {
        TransactionRule {
            route: "transfer".into(),
            details_type: "payment_initiation".into(),
            fields: vec![
                ("amount".into(), "/amount".into()),
                ("currency".into(), "/currency".into()),
                ("creditor".into(), "/to".into()),
            ],
            max_token_seconds: 300,
        }
    }

    #[test]
    fn the_call_must_be_the_approved_transaction() {
        let details = json!([{"type": "payment_initiation", "amount": "5000.00", "currency": "EUR", "creditor": "Ada"}]);
        let body = json!({"amount": 5000, "currency": "EUR", "to": "Ada"});
        assert_eq!(matches(&rule(), Some(&details), Some(&body)), Ok(()));
        let more = json!({"amount": 5001, "currency": "EUR", "to": "Ada"});
        assert_eq!(
            matches(&rule(), Some(&details), Some(&more)),
            Err(Mismatch::Field("amount".into()))
        );
        let other = json!({"amount": "5000.00", "currency": "EUR", "to": "Mallory"});
        assert_eq!(
            matches(&rule(), Some(&details), Some(&other)),
            Err(Mismatch::Field("creditor".into()))
        );
        let missing = json!({"amount": 5000, "to": "Ada"});
        assert_eq!(
            matches(&rule(), Some(&details), Some(&missing)),
            Err(Mismatch::Field("currency".into()))
        );
        assert_eq!(matches(&rule(), None, Some(&body)), Err(Mismatch::NoDetails));
        let other_type = json!([{"type": "account_access"}]);
        assert_eq!(
            matches(&rule(), Some(&other_type), Some(&body)),
            Err(Mismatch::NoDetails)
        );
        // Any one of several approved entries will do.
        let two = json!([
            {"type": "payment_initiation", "amount": "1", "currency": "EUR", "creditor": "Bob"},
            {"type": "payment_initiation", "amount": "5000", "currency": "EUR", "creditor": "Ada"}
        ]);
        assert_eq!(matches(&rule(), Some(&two), Some(&body)), Ok(()));
        // A number is not its string unless it is the same number.
        assert!(!same(&json!("5000x"), &json!(5000)));
        assert!(!same(&json!(true), &json!(true)), "only strings and numbers");
    }
}
