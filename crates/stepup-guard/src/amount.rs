//! The transaction amount of a request, read from its JSON body by JSON
//! pointers (RFC 6901), for risk rules such as `amount > 1000`.
//!
//! The body is read exactly ([`Json`]): numbers as written, and the amount
//! as an exact decimal, never a float. It is read strictly: a key twice in
//! one object is refused, since the guard and the application could
//! otherwise read different amounts from the same body (one taking the
//! first, the other the last).

use stepup_core::amount::Decimal;
use stepup_core::json::Json;
use thiserror::Error;

/// Where the amount is, and how much body the guard reads for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmountSource {
    /// JSON pointer to the amount (a number, or a decimal string).
    pub amount_pointer: String,
    /// JSON pointer to the currency, if the body carries one.
    pub currency_pointer: Option<String>,
    /// Longest body read; a longer one is refused (413).
    pub max_body_bytes: usize,
}

impl AmountSource {
    /// `amount_pointer` and `currency_pointer`, with bodies up to 64 KiB.
    pub fn new(amount_pointer: impl Into<String>, currency_pointer: Option<String>) -> Self {
        Self {
            amount_pointer: amount_pointer.into(),
            currency_pointer,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Why a body's amount cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AmountError {
    /// The body is longer than the guard reads.
    #[error("the request body is longer than {0} bytes")]
    TooLarge(usize),
    /// The body is not JSON (or repeats a key, or nests too deep).
    #[error("the request body is not valid JSON: {0}")]
    Malformed(String),
    /// The amount is there but neither a number nor a string.
    #[error("the amount at {0} is not a number")]
    NotANumber(String),
    /// The amount is a number or string that is not an exact decimal (an
    /// exponent, too many digits, not digits).
    #[error("the amount at {pointer} cannot be read exactly: {reason}")]
    NotExact {
        /// Where the amount is.
        pointer: String,
        /// Why it is not read.
        reason: stepup_core::amount::AmountError,
    },
    /// The currency is there but not a string.
    #[error("the currency at {0} is not a string")]
    NotAString(String),
    /// The amount is below zero: rules such as `amount > 1000` would not
    /// see what an application may read as a debit.
    #[error("the amount at {0} must be 0 or more")]
    Negative(String),
    /// The currency is not an ISO 4217 code (`eur`, `EUR `): rules
    /// comparing it would not fire for what the application reads as EUR.
    #[error("the currency at {0} must be an ISO 4217 code such as \"EUR\"")]
    NotACurrency(String),
}

/// What the body says: the amount and currency, each if present.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transaction {
    /// The amount, exact.
    pub amount: Option<Decimal>,
    /// The currency.
    pub currency: Option<String>,
}

/// A JSON body read exactly and strictly (no key twice in an object), at
/// most `max_bytes` long; `None` for an empty body.
pub fn read_json_body(body: &[u8], max_bytes: usize) -> Result<Option<Json>, AmountError> {
    if body.len() > max_bytes {
        return Err(AmountError::TooLarge(max_bytes));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    Json::from_slice(body)
        .map(Some)
        .map_err(|e| AmountError::Malformed(e.to_string()))
}

/// Reads the amount and currency of a JSON body. An empty body has none.
pub fn read_transaction(body: &[u8], source: &AmountSource) -> Result<Transaction, AmountError> {
    let Some(value) = read_json_body(body, source.max_body_bytes)? else {
        return Ok(Transaction::default());
    };
    transaction_of(&value, source)
}

/// The amount and currency of a JSON value read by [`read_json_body`].
pub fn transaction_of(value: &Json, source: &AmountSource) -> Result<Transaction, AmountError> {
    let pointer = &source.amount_pointer;
    let amount = match value.pointer(pointer) {
        None | Some(Json::Null) => None,
        Some(found) => match found.amount() {
            Some(Ok(amount)) if amount.is_sign_negative() && !amount.is_zero() => {
                return Err(AmountError::Negative(pointer.clone()));
            }
            Some(Ok(amount)) => Some(amount),
            Some(Err(reason)) => {
                return Err(AmountError::NotExact {
                    pointer: pointer.clone(),
                    reason,
                });
            }
            None => return Err(AmountError::NotANumber(pointer.clone())),
        },
    };
    let currency = match source.currency_pointer.as_deref().and_then(|p| value.pointer(p)) {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) if stepup_core::amount::is_currency_code(s) => Some(s.clone()),
        Some(Json::String(_)) => {
            return Err(AmountError::NotACurrency(
                source.currency_pointer.clone().unwrap_or_default(),
            ));
        }
        Some(_) => {
            return Err(AmountError::NotAString(
                source.currency_pointer.clone().unwrap_or_default(),
            ));
        }
    };
    Ok(Transaction { amount, currency })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> AmountSource {
        AmountSource::new("/amount", Some("/currency".into()))
    }

    fn read(body: &str) -> Result<Transaction, AmountError> {
        read_transaction(body.as_bytes(), &source())
    }

    fn amount(text: &str) -> Option<Decimal> {
        Some(stepup_core::amount::parse_amount(text).unwrap())
    }

    #[test]
    fn amounts_and_currencies_are_read() {
        let t = read(r#"{"amount": 1500.5, "currency": "EUR", "to": "x"}"#).unwrap();
        assert_eq!((t.amount, t.currency.as_deref()), (amount("1500.5"), Some("EUR")));
        assert_eq!(read(r#"{"amount": "5000.00"}"#).unwrap().amount, amount("5000"));
        assert_eq!(read(r#"{"amount": 12}"#).unwrap().amount, amount("12"));
        assert_eq!(read(r#"{"amount": "-0"}"#).unwrap().amount, amount("0"));
        assert_eq!(read(r#"{"to": "x"}"#).unwrap(), Transaction::default());
        assert_eq!(read("").unwrap(), Transaction::default());
        let nested = AmountSource::new("/payment/instructed/amount", None);
        let t = read_transaction(br#"{"payment":{"instructed":{"amount":7}}}"#, &nested).unwrap();
        assert_eq!(t.amount, amount("7"));
    }

    #[test]
    fn amounts_are_exact() {
        // A float reads 1000.00000000000001 as 1000.
        let t = read(r#"{"amount": 1000.00000000000001}"#).unwrap();
        assert_eq!(
            t.amount.map(|a| a.to_string()).as_deref(),
            Some("1000.00000000000001")
        );
        assert!(t.amount > amount("1000"));
        let t = read(r#"{"amount": 40817810099910004312}"#).unwrap();
        assert_ne!(t.amount, amount("40817810099910004399"));
    }

    #[test]
    fn hostile_bodies_are_refused() {
        // Two amounts: the application might read the other one.
        let e = read(r#"{"amount": 1, "amount": 5000}"#).unwrap_err();
        assert!(
            matches!(&e, AmountError::Malformed(m) if m.contains("appears twice")),
            "{e}"
        );
        let e = read(r#"{"x": {"a": 1, "a": 2}, "amount": 1}"#).unwrap_err();
        assert!(
            matches!(e, AmountError::Malformed(_)),
            "nested duplicates too: {e}"
        );
        assert!(matches!(read(r#"{"amount": 1"#), Err(AmountError::Malformed(_))));
        for odd in [
            r#"{"amount": "1e9"}"#,
            r#"{"amount": 1e9}"#,
            r#"{"amount": 1.5E2}"#,
            r#"{"amount": "NaN"}"#,
            r#"{"amount": " 5"}"#,
            r#"{"amount": "5."}"#,
            r#"{"amount": "1_000"}"#,
            r#"{"amount": 99999999999999999999999999999}"#,
            r#"{"amount": "0.00000000000000000000000000001"}"#,
        ] {
            let e = read(odd).unwrap_err();
            assert!(matches!(e, AmountError::NotExact { .. }), "{odd}: {e}");
        }
        let e = read(r#"{"amount": 1e9}"#).unwrap_err();
        assert!(e.to_string().contains("not a plain decimal"), "{e}");
        let e = read(&format!(r#"{{"amount": {}}}"#, "9".repeat(5000))).unwrap_err();
        assert!(e.to_string().contains("more digits than an amount holds"), "{e}");
        assert!(matches!(
            read(r#"{"amount": true}"#),
            Err(AmountError::NotANumber(_))
        ));
        assert!(matches!(
            read(r#"{"amount": 1, "currency": 978}"#),
            Err(AmountError::NotAString(_))
        ));
        // What rules would not see: a debit written as a negative amount,
        // a currency spelled so that `currency == 'EUR'` is false.
        assert_eq!(
            read(r#"{"amount": -20000}"#),
            Err(AmountError::Negative("/amount".into()))
        );
        for currency in ["eur", "EUR ", "EURO", "€"] {
            let body = format!(r#"{{"amount": 20000, "currency": "{currency}"}}"#);
            assert_eq!(
                read(&body),
                Err(AmountError::NotACurrency("/currency".into())),
                "{currency}"
            );
        }
        let big = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(70_000));
        assert_eq!(read(&big), Err(AmountError::TooLarge(65_536)));
    }
}
