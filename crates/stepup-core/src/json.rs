//! JSON values read exactly (RFC 8259), for comparing what a transaction
//! token was approved for with what a request asks.
//!
//! `serde_json::Value` keeps a number that is not a 64-bit integer as an
//! `f64`: the 20-digit account numbers `40817810099910004312` and
//! `40817810099910004399` become the same value. [`Json`] keeps every
//! number as written, and compares values exactly: `"0001234"` is not
//! `"1234"`, a string is not a number, `1.0` is not `1`. Only a field
//! declared an amount compares by value ([`crate::amount`]).
//!
//! Reading is strict: a key twice in one object is refused (a guard and an
//! application could read different values from the same text, one taking
//! the first, the other the last), and nesting is bounded.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::amount::{AmountError, Decimal, parse_amount};

/// The deepest nesting read (objects and arrays inside one another).
pub const MAX_DEPTH: usize = 32;

/// A JSON value with its numbers as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, its text exactly as written (`5000.00`, `1e3`).
    Number(String),
    /// A string (escapes resolved).
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object; no key appears twice.
    Object(BTreeMap<String, Json>),
}

/// Why a text is not JSON this module reads.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct JsonError(String);

impl Json {
    /// Reads one JSON value (whitespace around it allowed).
    pub fn from_slice(text: &[u8]) -> Result<Json, JsonError> {
        let raw: &RawValue = serde_json::from_slice(text).map_err(|e| JsonError(e.to_string()))?;
        value_of(raw, 0).map_err(|e| JsonError(e.to_string()))
    }

    /// The value a JSON pointer (RFC 6901) names: `""` is the whole value,
    /// `/a/0` the first element of member `a`.
    pub fn pointer(&self, pointer: &str) -> Option<&Json> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut at = self;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            at = match at {
                Json::Object(members) => members.get(&token)?,
                Json::Array(items) => {
                    // Array indices as RFC 6901 writes them: no sign, no
                    // leading zero.
                    let canonical = token == "0" || (!token.starts_with('0') && !token.is_empty());
                    if !canonical || !token.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    items.get(token.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(at)
    }

    /// A member of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.get(key),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The value as an amount: a number, or a string holding a plain
    /// decimal (`5000`, `"5000.00"`). `None` if it is neither (a boolean,
    /// an object); an error if it looks like one but is not exact.
    pub fn amount(&self) -> Option<Result<Decimal, AmountError>> {
        match self {
            Json::Number(text) | Json::String(text) => Some(parse_amount(text)),
            _ => None,
        }
    }
}

impl Json {
    /// The first number (depth first, object members by key) that a
    /// `serde_json::Value` would not write back as written: beyond 64-bit
    /// integers, or a fraction or exponent its `f64` does not spell the
    /// same way (`2500.50` comes back `2500.5`, `1e3` as `1000.0`,
    /// `40817810099910004312` as `4.081781009991e19`). Code that hands a
    /// value on through `serde_json` refuses these and asks for strings.
    pub fn number_not_kept_by_serde_json(&self) -> Option<&str> {
        match self {
            Json::Number(text) => {
                let kept =
                    serde_json::from_str::<serde_json::Number>(text).is_ok_and(|n| n.to_string() == *text);
                (!kept).then_some(text.as_str())
            }
            Json::Array(items) => items.iter().find_map(Json::number_not_kept_by_serde_json),
            Json::Object(members) => members.values().find_map(Json::number_not_kept_by_serde_json),
            Json::Null | Json::Bool(_) | Json::String(_) => None,
        }
    }
}

impl fmt::Display for Json {
    /// Compact JSON, numbers as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// The value of one raw JSON text. Objects and arrays are read member by
/// member, each member as raw text again: that is how a number's text
/// reaches us unchanged (serde_json hands numbers to visitors as `f64`).
fn value_of(raw: &RawValue, depth: usize) -> Result<Json, serde_json::Error> {
    let text = raw.get().trim_start();
    match text.as_bytes().first() {
        Some(b'{') | Some(b'[') => {
            if depth >= MAX_DEPTH {
                return Err(de::Error::custom(format!(
                    "the value is nested deeper than {MAX_DEPTH} levels"
                )));
            }
            let mut reader = serde_json::Deserializer::from_str(text);
            let value = reader.deserialize_any(Nested { depth: depth + 1 })?;
            reader.end()?;
            Ok(value)
        }
        Some(b'"') => serde_json::from_str(text).map(Json::String),
        Some(b't') | Some(b'f') => serde_json::from_str(text).map(Json::Bool),
        Some(b'n') => Ok(Json::Null),
        // serde_json checked the raw text: anything else is a number.
        _ => Ok(Json::Number(text.trim_end().to_owned())),
    }
}

/// Reads an object or array whose members are read by [`value_of`].
struct Nested {
    depth: usize,
}

impl<'de> Visitor<'de> for Nested {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            items.push(value_of(raw, self.depth).map_err(de::Error::custom)?);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = BTreeMap::new();
        let mut folded = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} appears twice in one object"
                )));
            }
            // Readers that match keys ignoring case (Go's encoding/json,
            // ASP.NET's web defaults) would take the other spelling: one
            // object, two readings. Refused.
            if !folded.insert(fold_case(&key)) {
                return Err(de::Error::custom(format!(
                    "the key {key:?} appears twice in one object, in another case"
                )));
            }
            let raw: &'de RawValue = map.next_value()?;
            let value = value_of(raw, self.depth).map_err(de::Error::custom)?;
            members.insert(key, value);
        }
        Ok(Json::Object(members))
    }
}

/// A key as readers that ignore case see it: Unicode lower case, with the
/// long s and the Kelvin sign folded as Go folds them.
fn fold_case(key: &str) -> String {
    key.chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            '\u{017F}' => 's',
            '\u{212A}' => 'k',
            other => other,
        })
        .collect()
}

impl<'de> Deserialize<'de> for Json {
    /// Reads exactly, from serde_json only (it needs the raw text of the
    /// value; other formats are refused with an error).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        value_of(&raw, 0).map_err(de::Error::custom)
    }
}

impl Serialize for Json {
    /// Writes numbers as they were read.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(text) => RawValue::from_string(text.clone())
                .map_err(serde::ser::Error::custom)?
                .serialize(s),
            Json::String(text) => s.serialize_str(text),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (key, value) in members {
                    map.serialize_entry(key, value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Json {
        Json::from_slice(text.as_bytes()).unwrap()
    }

    #[test]
    fn numbers_serde_json_would_change_are_found() {
        for kept in [
            r#"{"a": 5000, "b": [-12, 2500.5, 0.1], "c": "1e3"}"#,
            "18446744073709551615",
        ] {
            assert_eq!(json(kept).number_not_kept_by_serde_json(), None, "{kept}");
        }
        for (changed, first) in [
            (r#"{"a": "x", "b": 40817810099910004312}"#, "40817810099910004312"),
            (r#"[1, 2500.50]"#, "2500.50"),
            (r#"{"amount": 1e3}"#, "1e3"),
            ("-0", "-0"),
            ("18446744073709551616", "18446744073709551616"),
        ] {
            assert_eq!(
                json(changed).number_not_kept_by_serde_json(),
                Some(first),
                "{changed}"
            );
        }
    }

    #[test]
    fn numbers_are_kept_as_written() {
        let v = json(r#"{"a": 40817810099910004312, "b": 40817810099910004399, "c": 1.0, "d": 1e3}"#);
        assert_ne!(
            v.get("a"),
            v.get("b"),
            "20-digit numbers differ in their last digits"
        );
        assert_eq!(v.get("c"), Some(&Json::Number("1.0".into())));
        assert_eq!(v.get("d"), Some(&Json::Number("1e3".into())));
        assert_eq!(
            v.to_string(),
            r#"{"a":40817810099910004312,"b":40817810099910004399,"c":1.0,"d":1e3}"#
        );
        // Exact values: "0001234" is not "1234", nor a string a number.
        assert_ne!(json(r#""0001234""#), json(r#""1234""#));
        assert_ne!(json(r#""1234""#), json("1234"));
        assert_eq!(json(r#""\u0041da""#), json(r#""Ada""#), "escapes are resolved");
        assert_eq!(
            json(" [1, {\"x\": null}, true] "),
            Json::Array(vec![
                Json::Number("1".into()),
                Json::Object(BTreeMap::from([("x".into(), Json::Null)])),
                Json::Bool(true),
            ])
        );
    }

    #[test]
    fn amounts_compare_by_value() {
        let amount = |t: &str| json(t).amount().unwrap().unwrap();
        assert_eq!(amount(r#""5000.00""#), amount("5000"));
        assert!(amount("1000.0000000000001") > amount("1000"));
        assert!(json("1e3").amount().unwrap().is_err(), "exponents are refused");
        assert!(json("true").amount().is_none());
    }

    #[test]
    fn pointers() {
        let v = json(r#"{"payment": {"to": ["x", "y"]}, "a/b": 1, "m~n": 2}"#);
        assert_eq!(v.pointer("/payment/to/1"), Some(&Json::String("y".into())));
        assert_eq!(v.pointer("/a~1b"), Some(&Json::Number("1".into())));
        assert_eq!(v.pointer("/m~0n"), Some(&Json::Number("2".into())));
        assert_eq!(v.pointer(""), Some(&v));
        for absent in [
            "/payment/to/01",
            "/payment/to/-1",
            "/payment/to/2",
            "/nope",
            "payment",
            "/a~1b/x",
        ] {
            assert_eq!(v.pointer(absent), None, "{absent}");
        }
    }

    #[test]
    fn hostile_texts_are_refused() {
        let e = Json::from_slice(br#"{"amount": 1, "amount": 5000}"#).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "{e}");
        let e = Json::from_slice(br#"{"x": [{"a": 1, "a": 2}]}"#).unwrap_err();
        assert!(e.to_string().contains("appears twice"), "nested too: {e}");
        // Keys a case-blind reader takes for one (Go folds ſ and K too).
        for text in [
            r#"{"to": "Ada", "To": "Mallory"}"#,
            "{\"task\": 1, \"ta\u{017F}k\": 2}",
            "{\"kind\": 1, \"\u{212A}ind\": 2}",
        ] {
            let e = Json::from_slice(text.as_bytes()).unwrap_err();
            assert!(e.to_string().contains("in another case"), "{text}: {e}");
        }
        assert!(
            Json::from_slice(br#"{"to": "Ada", "toe": 1}"#).is_ok(),
            "the control"
        );
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = Json::from_slice(deep.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(Json::from_slice(ok.as_bytes()).is_ok());
        // Deeper than serde_json's own limit: an error, not a stack overflow.
        let very = "[".repeat(100_000);
        assert!(Json::from_slice(very.as_bytes()).is_err());
        for bad in ["", "{", "[1,]", "NaN", "01", "{\"a\" 1}", "1 2", "\"\\x\""] {
            assert!(Json::from_slice(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn deserialized_inside_other_json() {
        #[derive(Deserialize, Serialize)]
        struct Claims {
            details: Json,
        }
        let c: Claims = serde_json::from_str(r#"{"details": [{"amount": 40817810099910004312}]}"#).unwrap();
        assert_eq!(
            c.details.pointer("/0/amount"),
            Some(&Json::Number("40817810099910004312".into()))
        );
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"details":[{"amount":40817810099910004312}]}"#
        );
    }
}
