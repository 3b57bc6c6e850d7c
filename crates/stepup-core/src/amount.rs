//! Money amounts as exact decimals.
//!
//! An amount is read from the digits as written (a JSON number's text, or a
//! decimal string such as `"5000.00"`) into a [`Decimal`], never through a
//! binary float: `1000.0000000000001` is more than `1000`, and two amounts
//! are equal exactly when their values are (`5000.00` is `5000`). What does
//! not fit a `Decimal` (28 significant digits) is refused, not rounded.

pub use rust_decimal::Decimal;
use thiserror::Error;

/// Why a text is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AmountError {
    /// Not a plain decimal: signs other than a leading `-`, exponents,
    /// spaces, separators, `NaN`, a dot without digits after it.
    #[error("{0:?} is not a plain decimal amount (digits, optionally a '-' and a '.' with digits after it)")]
    NotDecimal(String),
    /// A plain decimal with more digits than an amount holds exactly.
    #[error("{0:?} has more digits than an amount holds exactly (28 significant digits)")]
    OutOfRange(String),
}

/// Shortens what an error repeats of a hostile input.
fn quoted(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Whether `code` has the shape of an ISO 4217 currency code: three
/// upper-case ASCII letters (`EUR`; not `eur`, not `EUR `), so that a
/// currency compared by rules or shown for approval means one thing.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Reads an amount written as a plain decimal (`1234.50`, `-3`, `0005`):
/// ASCII digits, optionally a leading `-` and one `.` followed by digits.
/// An exponent (`1e3`, valid in JSON) is refused: amounts are written out.
pub fn parse_amount(text: &str) -> Result<Decimal, AmountError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) if !frac.is_empty() => (int, frac),
        Some(_) => return Err(AmountError::NotDecimal(quoted(text))),
        None => (digits, ""),
    };
    let plain = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !plain {
        return Err(AmountError::NotDecimal(quoted(text)));
    }
    // Leading zeros carry no value but count against the 28 digits.
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let sign = if text.starts_with('-') { "-" } else { "" };
    let exact = if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    };
    Decimal::from_str_exact(&exact).map_err(|_| AmountError::OutOfRange(quoted(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(text: &str) -> Decimal {
        parse_amount(text).unwrap()
    }

    #[test]
    fn plain_decimals_are_read_exactly() {
        assert_eq!(amount("5000.00"), amount("5000"));
        assert_eq!(amount("0005000"), amount("5000"));
        assert_eq!(amount("-3").to_string(), "-3");
        assert!(amount("1000.0000000000001") > amount("1000"), "no float rounding");
        assert_ne!(amount("40817810099910004312"), amount("40817810099910004399"));
        // 28 significant digits, all kept.
        assert_eq!(
            amount("1234567890123456789012345678").to_string(),
            "1234567890123456789012345678"
        );
        assert_eq!(
            amount("0.0000000000000000000000000001").to_string(),
            "0.0000000000000000000000000001"
        );
    }

    #[test]
    fn anything_else_is_refused_not_rounded() {
        for odd in [
            "", "-", "1e3", "1E3", "1.5e2", "NaN", "inf", " 5", "5 ", "+5", "5.", ".5", "1_000", "1,5",
            "--1", "0x10", "١٢",
        ] {
            assert!(
                matches!(parse_amount(odd), Err(AmountError::NotDecimal(_))),
                "{odd:?}"
            );
        }
        for huge in [
            "9".repeat(29),
            format!("9.{}", "9".repeat(28)),
            format!("0.{}1", "0".repeat(28)),
            "9".repeat(10_000),
        ] {
            let e = parse_amount(&huge).unwrap_err();
            assert!(matches!(e, AmountError::OutOfRange(_)), "{huge}");
            assert!(e.to_string().len() < 200, "errors do not echo the whole input");
        }
    }
}
