//! Transaction-bound tokens (RFC 9396): a critical call is accepted only
//! with a token approved for exactly this transaction, used once, and
//! short-lived. The step-up is then for this transfer, not for a window of
//! time: a leaked token cannot pay anyone else, or pay twice.
//!
//! "This very transaction" is compared exactly: each field as the exact
//! JSON value (`"0001234"` is not `"1234"`, a string is not a number, and
//! 20-digit account numbers are not rounded), except the fields the rule
//! declares amounts, which compare as exact decimals (`"5000.00"` is
//! `5000`).

use std::sync::Arc;

use stepup_core::json::Json;

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
    /// The fields of `fields` that are amounts: equal when their values
    /// are (`"5000.00"` and `5000`). Every other field must be the same
    /// JSON value as approved.
    pub amount_fields: Vec<String>,
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

/// Whether an approved value and the request's are the same: for an
/// amount, two exact decimals of equal value (a number or a decimal
/// string each; anything unreadable differs); otherwise the same JSON
/// value exactly.
fn same(amount: bool, approved: &Json, asked: &Json) -> bool {
    if amount {
        matches!((approved.amount(), asked.amount()), (Some(Ok(a)), Some(Ok(b))) if a == b)
    } else {
        approved == asked
    }
}

/// Whether the body matches an entry of the rule's type in the token's
/// `authorization_details`.
pub(crate) fn matches(
    rule: &TransactionRule,
    details: Option<&Json>,
    body: Option<&Json>,
) -> Result<(), Mismatch> {
    let entries: Vec<&Json> = details
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("type").and_then(Json::as_str) == Some(rule.details_type.as_str()))
        .collect();
    if entries.is_empty() {
        return Err(Mismatch::NoDetails);
    }
    let mut first_difference = None;
    for entry in entries {
        let difference = rule.fields.iter().find(|(field, pointer)| {
            let approved = entry.get(field);
            let asked = body.and_then(|b| b.pointer(pointer));
            let amount = rule.amount_fields.contains(field);
            !matches!((approved, asked), (Some(a), Some(b)) if same(amount, a, b))
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
    use super::*;

    fn json(text: &str) -> Json {
        Json::from_slice(text.as_bytes()).unwrap()
    }

    fn rule() -> TransactionRule {
        TransactionRule {
            route: "transfer".into(),
            details_type: "payment_initiation".into(),
            fields: vec![
                ("amount".into(), "/amount".into()),
                ("currency".into(), "/currency".into()),
                ("creditor".into(), "/to".into()),
            ],
            amount_fields: vec!["amount".into()],
            max_token_seconds: 300,
        }
    }

    fn check(details: &str, body: &str) -> Result<(), Mismatch> {
        matches(&rule(), Some(&json(details)), Some(&json(body)))
    }

    #[test]
    fn the_call_must_be_the_approved_transaction() {
        let details =
            r#"[{"type": "payment_initiation", "amount": "5000.00", "currency": "EUR", "creditor": "Ada"}]"#;
        let body = r#"{"amount": 5000, "currency": "EUR", "to": "Ada"}"#;
        assert_eq!(check(details, body), Ok(()));
        assert_eq!(
            check(details, r#"{"amount": 5001, "currency": "EUR", "to": "Ada"}"#),
            Err(Mismatch::Field("amount".into()))
        );
        assert_eq!(
            check(
                details,
                r#"{"amount": "5000.00", "currency": "EUR", "to": "Mallory"}"#
            ),
            Err(Mismatch::Field("creditor".into()))
        );
        assert_eq!(
            check(details, r#"{"amount": 5000, "to": "Ada"}"#),
            Err(Mismatch::Field("currency".into()))
        );
        assert_eq!(
            matches(&rule(), None, Some(&json(body))),
            Err(Mismatch::NoDetails)
        );
        assert_eq!(
            check(r#"[{"type": "account_access"}]"#, body),
            Err(Mismatch::NoDetails)
        );
        // Any one of several approved entries will do.
        let two = r#"[
            {"type": "payment_initiation", "amount": "1", "currency": "EUR", "creditor": "Bob"},
            {"type": "payment_initiation", "amount": "5000", "currency": "EUR", "creditor": "Ada"}
        ]"#;
        assert_eq!(check(two, body), Ok(()));
        // A number is not its string unless it is the same amount.
        assert!(!same(true, &json(r#""5000x""#), &json("5000")));
        assert!(!same(true, &json("true"), &json("true")), "an amount is a number");
        assert!(same(false, &json("true"), &json("true")));
    }

    #[test]
    fn fields_other_than_amounts_compare_exactly() {
        let approved = |creditor: &str| {
            format!(
                r#"[{{"type": "payment_initiation", "amount": 10, "currency": "EUR", "creditor": {creditor}}}]"#
            )
        };
        let paying = |to: &str| format!(r#"{{"amount": 10, "currency": "EUR", "to": {to}}}"#);
        let creditor = Err(Mismatch::Field("creditor".into()));
        // 20-digit account numbers that differ in their last digits (as a
        // float, they are one number).
        assert_eq!(
            check(
                &approved(r#""40817810099910004312""#),
                &paying(r#""40817810099910004399""#)
            ),
            creditor
        );
        assert_eq!(
            check(&approved("40817810099910004312"), &paying("40817810099910004399")),
            creditor
        );
        // Leading zeros are part of an account number.
        assert_eq!(check(&approved(r#""0001234""#), &paying(r#""1234""#)), creditor);
        // A string is not a number, nor 1.0 the number 1, outside amounts.
        assert_eq!(check(&approved(r#""1234""#), &paying("1234")), creditor);
        assert_eq!(check(&approved("1.0"), &paying("1")), creditor);
        // The control: the very account passes.
        let account = r#""40817810099910004312""#;
        assert_eq!(check(&approved(account), &paying(account)), Ok(()));
        // "5000.00" is 5000 for an amount field only.
        let as_amount = r#"[{"type": "payment_initiation", "amount": "5000.00", "currency": "EUR", "creditor": "5000.00"}]"#;
        assert_eq!(
            check(
                as_amount,
                r#"{"amount": 5000, "currency": "EUR", "to": "5000.00"}"#
            ),
            Ok(())
        );
        assert_eq!(
            check(as_amount, r#"{"amount": 5000, "currency": "EUR", "to": 5000}"#),
            creditor
        );
        // An amount that cannot be read exactly matches nothing.
        assert_eq!(
            check(
                r#"[{"type": "payment_initiation", "amount": 1e3, "currency": "EUR", "creditor": "A"}]"#,
                r#"{"amount": 1000, "currency": "EUR", "to": "A"}"#
            ),
            Err(Mismatch::Field("amount".into()))
        );
    }
}
