//! The transaction amount of a request, read from its JSON body by JSON
//! pointers (RFC 6901), for risk rules such as `amount > 1000`.
//!
//! The body is read strictly: a key twice in one object is refused, since
//! the guard and the application could otherwise read different amounts
//! from the same body (one taking the first, the other the last).

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
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
    /// The body is not JSON (or repeats a key).
    #[error("the request body is not valid JSON: {0}")]
    Malformed(String),
    /// The amount is there but not a number.
    #[error("the amount at {0} is not a number")]
    NotANumber(String),
    /// The currency is there but not a string.
    #[error("the currency at {0} is not a string")]
    NotAString(String),
}

/// What the body says: the amount and currency, each if present.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transaction {
    /// The amount.
    pub amount: Option<f64>,
    /// The currency.
    pub currency: Option<String>,
}

/// A JSON body read strictly (no key twice in an object), at most
/// `max_bytes` long; `None` for an empty body.
pub fn read_json_body(body: &[u8], max_bytes: usize) -> Result<Option<Value>, AmountError> {
    if body.len() > max_bytes {
        return Err(AmountError::TooLarge(max_bytes));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Strict(value) = serde_json::from_slice(body).map_err(|e| AmountError::Malformed(e.to_string()))?;
    Ok(Some(value))
}

/// Reads the amount and currency of a JSON body. An empty body has none.
pub fn read_transaction(body: &[u8], source: &AmountSource) -> Result<Transaction, AmountError> {
    let Some(value) = read_json_body(body, source.max_body_bytes)? else {
        return Ok(Transaction::default());
    };
    transaction_of(&value, source)
}

/// The amount and currency of a JSON value read by [`read_json_body`].
pub fn transaction_of(value: &Value, source: &AmountSource) -> Result<Transaction, AmountError> {
    let amount = match value.pointer(&source.amount_pointer) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => {
            Some(decimal(s).ok_or_else(|| AmountError::NotANumber(source.amount_pointer.clone()))?)
        }
        Some(_) => return Err(AmountError::NotANumber(source.amount_pointer.clone())),
    };
    let currency = match source.currency_pointer.as_deref().and_then(|p| value.pointer(p)) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(AmountError::NotAString(
                source.currency_pointer.clone().unwrap_or_default(),
            ));
        }
    };
    Ok(Transaction { amount, currency })
}

/// A plain decimal (`1234.50`, `-3`): no exponent, no `NaN`, no spaces.
pub(crate) fn decimal(s: &str) -> Option<f64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(digits.contains('.') && frac.is_empty());
    if ok { s.parse().ok() } else { None }
}

/// A JSON value whose objects never repeat a key.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
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

    #[test]
    fn amounts_and_currencies_are_read() {
        let t = read(r#"{"amount": 1500.5, "currency": "EUR", "to": "x"}"#).unwrap();
        assert_eq!((t.amount, t.currency.as_deref()), (Some(1500.5), Some("EUR")));
        assert_eq!(read(r#"{"amount": "5000.00"}"#).unwrap().amount, Some(5000.0));
        assert_eq!(read(r#"{"amount": 12}"#).unwrap().amount, Some(12.0));
        assert_eq!(read(r#"{"to": "x"}"#).unwrap(), Transaction::default());
        assert_eq!(read("").unwrap(), Transaction::default());
        let nested = AmountSource::new("/payment/instructed/amount", None);
        let t = read_transaction(br#"{"payment":{"instructed":{"amount":7}}}"#, &nested).unwrap();
        assert_eq!(t.amount, Some(7.0));
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
            r#"{"amount": "NaN"}"#,
            r#"{"amount": " 5"}"#,
            r#"{"amount": true}"#,
            r#"{"amount": "5."}"#,
        ] {
            assert!(matches!(read(odd), Err(AmountError::NotANumber(_))), "{odd}");
        }
        assert!(matches!(
            read(r#"{"amount": 1, "currency": 978}"#),
            Err(AmountError::NotAString(_))
        ));
        let big = format!(r#"{{"amount": 1, "pad": "{}"}}"#, "x".repeat(70_000));
        assert_eq!(read(&big), Err(AmountError::TooLarge(65_536)));
    }
}
