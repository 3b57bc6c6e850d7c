//! Risk signals and the conditions of risk rules.
//!
//! A risk rule raises a route's requirement when its condition holds for
//! the request's [`Signals`], e.g. `amount > 1000 and currency == 'EUR'`.
//! Conditions are parsed and type-checked once, at policy load, into a
//! small tree that evaluates without allocating.
//!
//! Signals the guard could not establish are *unknown*, and conditions use
//! three-valued logic (Kleene): a comparison with an unknown signal is
//! unknown, `not unknown` is unknown, `false and unknown` is false, `true
//! or unknown` is true, and a rule fires only when its condition is true.
//! `missing(signal)` is true exactly when the signal is unknown, for rules
//! that must fail closed (`missing(country) or country != 'FR'`).
//!
//! Grammar:
//!
//! ```text
//! condition  := or
//! or         := and ("or" and)*
//! and        := not ("and" not)*
//! not        := "not" not | comparison
//! comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand | "in" list)?
//! operand    := signal | number | string | "true" | "false" | "missing" "(" signal ")" | "(" or ")"
//! list       := "[" (literal ("," literal)*)? "]"
//! ```
//!
//! Strings are in single or double quotes; numbers are decimal.
//!
//! `amount` is money: an exact decimal, compared exactly with the numbers a
//! condition writes out (`1000.0000000000001 > 1000` holds), and with
//! nothing else (not with another number signal, which is a binary float).

use std::fmt;

use thiserror::Error;

use crate::amount::{Decimal, parse_amount};
use crate::json::Json;

/// What the guard knows about a request beyond its token. `None`: unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals<'a> {
    /// The transaction amount (from the body or the token's
    /// `authorization_details`), exact.
    pub amount: Option<Decimal>,
    /// Its currency (ISO 4217, e.g. `EUR`).
    pub currency: Option<&'a str>,
    /// The country the request comes from (ISO 3166-1 alpha-2).
    pub country: Option<&'a str>,
    /// The country where the user authenticated (the token's
    /// `auth_country`).
    pub auth_country: Option<&'a str>,
    /// The autonomous system the request comes from.
    pub asn: Option<u32>,
    /// The device the request presents (DPoP key thumbprint or device id).
    pub device: Option<&'a str>,
    /// The device the token is bound to (`cnf.jkt`, or a device claim).
    pub bound_device: Option<&'a str>,
    /// Speed implied by this request and the subject's previous one, km/h.
    pub travel_speed_kmh: Option<f64>,
    /// Whether that speed is above the configured plausible one.
    pub impossible_travel: Option<bool>,
    /// The subject's anomaly score (0: as usual).
    pub anomaly_score: Option<f64>,
    /// The subject's requests in the last minute.
    pub request_rate: Option<f64>,
    /// Distinct client IPs of the subject in the window.
    pub distinct_ips: Option<f64>,
    /// Step-ups the subject failed in the window.
    pub failed_step_ups: Option<f64>,
}

impl Signals<'_> {
    /// No signal known: risk rules cannot fire.
    pub const NONE: Signals<'static> = Signals {
        amount: None,
        currency: None,
        country: None,
        auth_country: None,
        asn: None,
        device: None,
        bound_device: None,
        travel_speed_kmh: None,
        impossible_travel: None,
        anomaly_score: None,
        request_rate: None,
        distinct_ips: None,
        failed_step_ups: None,
    };

    /// A signal's value as text (derived ones included), if known.
    pub fn text(&self, signal: Signal) -> Option<String> {
        self.value(signal).map(|v| match v {
            Value::Number(n) => n.to_string(),
            Value::Amount(a) | Value::Literal { exact: a, .. } => a.to_string(),
            Value::Str(s) => s.to_owned(),
            Value::Bool(b) => b.to_string(),
        })
    }

    fn value(&self, signal: Signal) -> Option<Value<'_>> {
        let num = |v: Option<f64>| v.map(Value::Number);
        match signal {
            Signal::Amount => self.amount.map(Value::Amount),
            Signal::Currency => self.currency.map(Value::Str),
            Signal::Country => self.country.map(Value::Str),
            Signal::AuthCountry => self.auth_country.map(Value::Str),
            Signal::CountryChanged => match (self.country, self.auth_country) {
                (Some(now), Some(then)) => Some(Value::Bool(!now.eq_ignore_ascii_case(then))),
                _ => None,
            },
            Signal::Asn => self.asn.map(|a| Value::Number(f64::from(a))),
            // A token bound to a device, presented without one, is a change.
            Signal::DeviceChanged => self
                .bound_device
                .map(|bound| Value::Bool(self.device != Some(bound))),
            Signal::TravelSpeedKmh => num(self.travel_speed_kmh),
            Signal::ImpossibleTravel => self.impossible_travel.map(Value::Bool),
            Signal::AnomalyScore => num(self.anomaly_score),
            Signal::RequestRate => num(self.request_rate),
            Signal::DistinctIps => num(self.distinct_ips),
            Signal::FailedStepUps => num(self.failed_step_ups),
        }
    }
}

/// The signals a condition may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// `amount`, an exact decimal.
    Amount,
    /// `currency`, a string.
    Currency,
    /// `country`, a string.
    Country,
    /// `auth_country`, a string.
    AuthCountry,
    /// `country_changed`: the request comes from another country than the
    /// authentication.
    CountryChanged,
    /// `asn`, a number.
    Asn,
    /// `device_changed`: the request presents another device than the
    /// token is bound to.
    DeviceChanged,
    /// `travel_speed_kmh`, a number.
    TravelSpeedKmh,
    /// `impossible_travel`, a boolean.
    ImpossibleTravel,
    /// `anomaly_score`, a number.
    AnomalyScore,
    /// `request_rate`, a number.
    RequestRate,
    /// `distinct_ips`, a number.
    DistinctIps,
    /// `failed_step_ups`, a number.
    FailedStepUps,
}

impl Signal {
    /// Every signal, for listings.
    pub const ALL: [Signal; 13] = [
        Signal::Amount,
        Signal::Currency,
        Signal::Country,
        Signal::AuthCountry,
        Signal::CountryChanged,
        Signal::Asn,
        Signal::DeviceChanged,
        Signal::TravelSpeedKmh,
        Signal::ImpossibleTravel,
        Signal::AnomalyScore,
        Signal::RequestRate,
        Signal::DistinctIps,
        Signal::FailedStepUps,
    ];

    /// The name conditions use.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Amount => "amount",
            Signal::Currency => "currency",
            Signal::Country => "country",
            Signal::AuthCountry => "auth_country",
            Signal::CountryChanged => "country_changed",
            Signal::Asn => "asn",
            Signal::DeviceChanged => "device_changed",
            Signal::TravelSpeedKmh => "travel_speed_kmh",
            Signal::ImpossibleTravel => "impossible_travel",
            Signal::AnomalyScore => "anomaly_score",
            Signal::RequestRate => "request_rate",
            Signal::DistinctIps => "distinct_ips",
            Signal::FailedStepUps => "failed_step_ups",
        }
    }

    /// This signal's bit in a [`Condition::reads`] set.
    pub fn bit(self) -> u16 {
        let index = Signal::ALL.iter().position(|s| *s == self).unwrap_or(15);
        1u16 << index
    }

    fn kind(self) -> Kind {
        match self {
            Signal::Amount => Kind::Amount,
            Signal::Currency | Signal::Country | Signal::AuthCountry => Kind::Str,
            Signal::CountryChanged | Signal::DeviceChanged | Signal::ImpossibleTravel => Kind::Bool,
            _ => Kind::Number,
        }
    }

    fn from_name(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    /// Money: compared only with numbers written in the condition.
    Amount,
    Str,
    Bool,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Number => "a number",
            Kind::Amount => "an amount",
            Kind::Str => "a string",
            Kind::Bool => "a boolean",
        })
    }
}

impl Kind {
    /// Whether values of these kinds compare: the same kind, or an amount
    /// and a number written out (`literal`: the number side is one).
    fn compares_with(self, other: Kind, literal: bool) -> bool {
        self == other
            || (literal
                && matches!(
                    (self, other),
                    (Kind::Amount, Kind::Number) | (Kind::Number, Kind::Amount)
                ))
    }

    /// Whether `<`, `<=`, `>`, `>=` apply.
    fn ordered(self) -> bool {
        matches!(self, Kind::Number | Kind::Amount)
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Number => "numbers",
            Kind::Amount => "amounts",
            Kind::Str => "strings",
            Kind::Bool => "booleans",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    /// A number signal (a rate, a speed, a score).
    Number(f64),
    /// An amount signal.
    Amount(Decimal),
    /// A number written in the condition, both ways: as a float for number
    /// signals, exactly for amounts.
    Literal {
        float: f64,
        exact: Decimal,
    },
    Str(&'a str),
    Bool(bool),
}

/// A literal of a compiled condition.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Number { float: f64, exact: Decimal },
    Str(String),
    Bool(bool),
}

impl Literal {
    fn kind(&self) -> Kind {
        match self {
            Literal::Number { .. } => Kind::Number,
            Literal::Str(_) => Kind::Str,
            Literal::Bool(_) => Kind::Bool,
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            Literal::Number { float, exact } => Value::Literal {
                float: *float,
                exact: *exact,
            },
            Literal::Str(s) => Value::Str(s),
            Literal::Bool(b) => Value::Bool(*b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn ordering(self) -> bool {
        !matches!(self, Op::Eq | Op::Ne)
    }

    fn holds(self, left: Value<'_>, right: Value<'_>) -> Option<bool> {
        match (left, right) {
            (Value::Number(a), Value::Number(b) | Value::Literal { float: b, .. })
            | (Value::Literal { float: a, .. }, Value::Number(b)) => Some(self.compare(a.partial_cmp(&b))),
            (
                Value::Amount(a) | Value::Literal { exact: a, .. },
                Value::Amount(b) | Value::Literal { exact: b, .. },
            ) => Some(self.compare(Some(a.cmp(&b)))),
            (Value::Str(a), Value::Str(b)) => match self {
                Op::Eq => Some(a == b),
                Op::Ne => Some(a != b),
                _ => None,
            },
            (Value::Bool(a), Value::Bool(b)) => match self {
                Op::Eq => Some(a == b),
                Op::Ne => Some(a != b),
                _ => None,
            },
            _ => None,
        }
    }

    /// The comparison given how the left side orders against the right
    /// (`None`: unordered, a NaN; only `!=` holds).
    fn compare(self, ordering: Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            Op::Eq => ordering == Some(Equal),
            Op::Ne => ordering != Some(Equal),
            Op::Lt => ordering == Some(Less),
            Op::Le => matches!(ordering, Some(Less | Equal)),
            Op::Gt => ordering == Some(Greater),
            Op::Ge => matches!(ordering, Some(Greater | Equal)),
        }
    }
}

/// An operand of a comparison.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Signal(Signal),
    Literal(Literal),
}

impl Operand {
    fn value<'a>(&'a self, signals: &'a Signals<'a>) -> Option<Value<'a>> {
        match self {
            Operand::Signal(s) => signals.value(*s),
            Operand::Literal(l) => Some(l.value()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Compare(Operand, Op, Operand),
    In(Signal, Vec<Literal>),
    Flag(Signal),
    Const(bool),
    Missing(Signal),
}

impl Node {
    /// Kleene logic: `None` is unknown.
    fn eval(&self, s: &Signals<'_>) -> Option<bool> {
        match self {
            Node::Or(a, b) => match (a.eval(s), b.eval(s)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Node::And(a, b) => match (a.eval(s), b.eval(s)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Node::Not(a) => a.eval(s).map(|v| !v),
            Node::Compare(a, op, b) => op.holds(a.value(s)?, b.value(s)?),
            Node::In(signal, list) => {
                let value = s.value(*signal)?;
                Some(list.iter().any(|l| Op::Eq.holds(value, l.value()) == Some(true)))
            }
            Node::Flag(signal) => match s.value(*signal)? {
                Value::Bool(b) => Some(b),
                _ => None,
            },
            Node::Const(b) => Some(*b),
            Node::Missing(signal) => Some(s.value(*signal).is_none()),
        }
    }

    fn signals(&self, out: &mut Vec<Signal>) {
        let mut add = |s: Signal| {
            if !out.contains(&s) {
                out.push(s);
            }
        };
        match self {
            Node::Or(a, b) | Node::And(a, b) => {
                a.signals(out);
                b.signals(out);
            }
            Node::Not(a) => a.signals(out),
            Node::Compare(a, _, b) => {
                for operand in [a, b] {
                    if let Operand::Signal(s) = operand {
                        add(*s);
                    }
                }
            }
            Node::In(s, _) | Node::Flag(s) | Node::Missing(s) => add(*s),
            Node::Const(_) => {}
        }
    }
}

/// A compiled, type-checked condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    root: Node,
    text: String,
    reads: u16,
}

/// Why a condition does not compile, with the character offset (from 0)
/// in its text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ConditionError {
    /// Where, in characters from the start of the condition.
    pub offset: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Condition {
    /// Parses and type-checks a condition.
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let tokens = lex(text)?;
        let mut parser = Parser { tokens, at: 0 };
        let (root, kind, start) = parser.or()?;
        if let Some(t) = parser.peek() {
            return Err(err(
                t.offset,
                format!("expected `and`, `or` or the end, found {}", t.kind),
            ));
        }
        if kind != Kind::Bool {
            return Err(err(
                start,
                format!("a condition must be true or false, this is {kind}"),
            ));
        }
        let mut signals = Vec::new();
        root.signals(&mut signals);
        let reads = signals.iter().fold(0, |set, s| set | s.bit());
        Ok(Condition {
            root,
            text: text.to_owned(),
            reads,
        })
    }

    /// Whether the condition holds: `Some(true)` fires the rule; `None`
    /// means it depends on unknown signals.
    pub fn eval(&self, signals: &Signals<'_>) -> Option<bool> {
        self.root.eval(signals)
    }

    /// The condition as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The signals the condition reads, as a set of [`Signal::bit`]s (the
    /// guard reads a request body only for rules that need it).
    pub fn reads(&self) -> u16 {
        self.reads
    }

    /// The signals the condition reads, in order of appearance.
    pub fn signals(&self) -> Vec<Signal> {
        let mut out = Vec::new();
        self.root.signals(&mut out);
        out
    }
}

fn err(offset: usize, message: String) -> ConditionError {
    ConditionError { offset, message }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    Ident(String),
    Number { float: f64, exact: Decimal },
    Str(String),
    Op(Op),
    In,
    And,
    Or,
    Not,
    Open,
    Close,
    OpenBracket,
    CloseBracket,
    Comma,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Ident(i) => write!(f, "`{i}`"),
            TokenKind::Number { exact, .. } => write!(f, "the number {exact}"),
            TokenKind::Str(s) => write!(f, "the string {s:?}"),
            TokenKind::Op(op) => write!(
                f,
                "`{}`",
                match op {
                    Op::Eq => "==",
                    Op::Ne => "!=",
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                }
            ),
            TokenKind::In => f.write_str("`in`"),
            TokenKind::And => f.write_str("`and`"),
            TokenKind::Or => f.write_str("`or`"),
            TokenKind::Not => f.write_str("`not`"),
            TokenKind::Open => f.write_str("`(`"),
            TokenKind::Close => f.write_str("`)`"),
            TokenKind::OpenBracket => f.write_str("`[`"),
            TokenKind::CloseBracket => f.write_str("`]`"),
            TokenKind::Comma => f.write_str("`,`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    offset: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, ConditionError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let push = |tokens: &mut Vec<Token>, kind| tokens.push(Token { kind, offset: start });
        match c {
            _ if c.is_whitespace() => i += 1,
            '(' | ')' | '[' | ']' | ',' => {
                push(
                    &mut tokens,
                    match c {
                        '(' => TokenKind::Open,
                        ')' => TokenKind::Close,
                        '[' => TokenKind::OpenBracket,
                        ']' => TokenKind::CloseBracket,
                        _ => TokenKind::Comma,
                    },
                );
                i += 1;
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => (Op::Eq, 2),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', _) => (Op::Gt, 1),
                    ('=', _) => return Err(err(i, "expected `==` (comparison), found `=`".into())),
                    _ => return Err(err(i, "expected `!=`, found `!`; negation is `not`".into())),
                };
                push(&mut tokens, TokenKind::Op(op));
                i += len;
            }
            '\'' | '"' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != c {
                    j += 1;
                }
                if j == chars.len() {
                    return Err(err(i, format!("this string has no closing {c}")));
                }
                push(&mut tokens, TokenKind::Str(chars[i + 1..j].iter().collect()));
                i = j + 1;
            }
            _ if c.is_ascii_digit() => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.' || chars[j] == '_') {
                    j += 1;
                }
                let raw: String = chars[i..j].iter().filter(|c| **c != '_').collect();
                // The nearest float for number signals, and exact for amounts.
                let float: f64 = raw
                    .parse()
                    .map_err(|_| err(i, format!("{raw:?} is not a number")))?;
                let exact = parse_amount(&raw).map_err(|e| err(i, e.to_string()))?;
                push(&mut tokens, TokenKind::Number { float, exact });
                i = j;
            }
            _ if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                push(
                    &mut tokens,
                    match word.as_str() {
                        "and" => TokenKind::And,
                        "or" => TokenKind::Or,
                        "not" => TokenKind::Not,
                        "in" => TokenKind::In,
                        _ => TokenKind::Ident(word),
                    },
                );
                i = j;
            }
            _ => return Err(err(i, format!("unexpected character {c:?}"))),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

/// A parsed piece: the tree, its type, and where it starts.
type Parsed = (Node, Kind, usize);

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn end_offset(&self) -> usize {
        self.tokens.last().map_or(0, |t| t.offset + 1)
    }

    fn expect_bool(kind: Kind, start: usize, what: &str) -> Result<(), ConditionError> {
        if kind == Kind::Bool {
            Ok(())
        } else {
            Err(err(
                start,
                format!("`{what}` needs true or false on each side, this is {kind}"),
            ))
        }
    }

    fn or(&mut self) -> Result<Parsed, ConditionError> {
        let (mut node, kind, start) = self.and()?;
        while matches!(self.peek().map(|t| &t.kind), Some(TokenKind::Or)) {
            Self::expect_bool(kind, start, "or")?;
            self.next();
            let (right, rkind, rstart) = self.and()?;
            Self::expect_bool(rkind, rstart, "or")?;
            node = Node::Or(Box::new(node), Box::new(right));
        }
        Ok((node, kind, start))
    }

    fn and(&mut self) -> Result<Parsed, ConditionError> {
        let (mut node, kind, start) = self.not()?;
        while matches!(self.peek().map(|t| &t.kind), Some(TokenKind::And)) {
            Self::expect_bool(kind, start, "and")?;
            self.next();
            let (right, rkind, rstart) = self.not()?;
            Self::expect_bool(rkind, rstart, "and")?;
            node = Node::And(Box::new(node), Box::new(right));
        }
        Ok((node, kind, start))
    }

    fn not(&mut self) -> Result<Parsed, ConditionError> {
        if let Some(Token {
            kind: TokenKind::Not,
            offset,
        }) = self.peek().cloned()
        {
            self.next();
            let (inner, kind, start) = self.not()?;
            Self::expect_bool(kind, start, "not")?;
            return Ok((Node::Not(Box::new(inner)), Kind::Bool, offset));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Parsed, ConditionError> {
        let (left, left_kind, start) = self.operand()?;
        match self.peek().map(|t| t.kind.clone()) {
            Some(TokenKind::Op(op)) => {
                let op_at = self.next().map_or(0, |t| t.offset);
                let (right, right_kind, right_start) = self.operand()?;
                let (Some(a), Some(b)) = (as_operand(&left), as_operand(&right)) else {
                    return Err(err(op_at, "compare a signal or a value, not a condition".into()));
                };
                let literal = matches!(a, Operand::Literal(_)) || matches!(b, Operand::Literal(_));
                if !left_kind.compares_with(right_kind, literal) {
                    let hint = if matches!(left_kind, Kind::Amount) || matches!(right_kind, Kind::Amount) {
                        " (an amount compares with numbers written out, such as amount > 1000)"
                    } else {
                        ""
                    };
                    return Err(err(
                        right_start,
                        format!("cannot compare {left_kind} with {right_kind}{hint}"),
                    ));
                }
                if op.ordering() && !left_kind.ordered() {
                    return Err(err(
                        op_at,
                        format!("`<`, `<=`, `>`, `>=` compare numbers, not {}", left_kind.plural()),
                    ));
                }
                if matches!((&a, &b), (Operand::Literal(_), Operand::Literal(_))) {
                    return Err(err(start, "this compares two values: name a signal".into()));
                }
                Ok((Node::Compare(a, op, b), Kind::Bool, start))
            }
            Some(TokenKind::In) => {
                let in_at = self.next().map_or(0, |t| t.offset);
                let Node::Flag(signal) = left else {
                    return Err(err(start, "`in` takes a signal on its left".into()));
                };
                if left_kind == Kind::Bool {
                    return Err(err(in_at, "`in` compares a string or number signal".into()));
                }
                let list = self.list(left_kind)?;
                Ok((Node::In(signal, list), Kind::Bool, start))
            }
            _ => Ok((left, left_kind, start)),
        }
    }

    fn list(&mut self, kind: Kind) -> Result<Vec<Literal>, ConditionError> {
        match self.next() {
            Some(Token {
                kind: TokenKind::OpenBracket,
                ..
            }) => {}
            Some(t) => {
                return Err(err(
                    t.offset,
                    format!("expected `[` after `in`, found {}", t.kind),
                ));
            }
            None => return Err(err(self.end_offset(), "expected `[` after `in`".into())),
        }
        let mut list = Vec::new();
        loop {
            let Some(t) = self.next() else {
                return Err(err(self.end_offset(), "this list has no closing `]`".into()));
            };
            let literal = match t.kind {
                TokenKind::CloseBracket if list.is_empty() => return Ok(list),
                TokenKind::Number { float, exact } => Literal::Number { float, exact },
                TokenKind::Str(s) => Literal::Str(s),
                other => {
                    return Err(err(
                        t.offset,
                        format!("expected a value in the list, found {other}"),
                    ));
                }
            };
            if !kind.compares_with(literal.kind(), true) {
                return Err(err(
                    t.offset,
                    format!("this list holds {}, not {}", kind.plural(), literal.kind()),
                ));
            }
            list.push(literal);
            match self.next() {
                Some(Token {
                    kind: TokenKind::Comma,
                    ..
                }) => {}
                Some(Token {
                    kind: TokenKind::CloseBracket,
                    ..
                }) => return Ok(list),
                Some(t) => return Err(err(t.offset, format!("expected `,` or `]`, found {}", t.kind))),
                None => return Err(err(self.end_offset(), "this list has no closing `]`".into())),
            }
        }
    }

    fn operand(&mut self) -> Result<Parsed, ConditionError> {
        let Some(t) = self.next() else {
            return Err(err(
                self.end_offset(),
                "expected a signal or a value, found the end".into(),
            ));
        };
        match t.kind {
            TokenKind::Number { float, exact } => Ok((
                literal_node(Literal::Number { float, exact }),
                Kind::Number,
                t.offset,
            )),
            TokenKind::Str(s) => Ok((literal_node(Literal::Str(s)), Kind::Str, t.offset)),
            TokenKind::Ident(word) if word == "true" || word == "false" => {
                Ok((Node::Const(word == "true"), Kind::Bool, t.offset))
            }
            TokenKind::Ident(word) if word == "missing" => {
                self.expect(TokenKind::Open, "`(` after `missing`")?;
                let signal = match self.next() {
                    Some(Token {
                        kind: TokenKind::Ident(name),
                        offset,
                    }) => signal_named(&name, offset)?,
                    Some(other) => {
                        return Err(err(
                            other.offset,
                            format!("expected a signal, found {}", other.kind),
                        ));
                    }
                    None => return Err(err(self.end_offset(), "expected a signal".into())),
                };
                self.expect(TokenKind::Close, "`)`")?;
                Ok((Node::Missing(signal), Kind::Bool, t.offset))
            }
            TokenKind::Ident(word) => {
                let signal = signal_named(&word, t.offset)?;
                Ok((Node::Flag(signal), signal.kind(), t.offset))
            }
            TokenKind::Open => {
                let (inner, kind, _) = self.or()?;
                self.expect(TokenKind::Close, "`)`")?;
                Ok((inner, kind, t.offset))
            }
            other => Err(err(
                t.offset,
                format!("expected a signal or a value, found {other}"),
            )),
        }
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> Result<(), ConditionError> {
        match self.next() {
            Some(t) if t.kind == kind => Ok(()),
            Some(t) => Err(err(t.offset, format!("expected {what}, found {}", t.kind))),
            None => Err(err(self.end_offset(), format!("expected {what}, found the end"))),
        }
    }
}

/// A literal stands alone in the tree only until a comparison takes it.
fn literal_node(literal: Literal) -> Node {
    let operand = Operand::Literal(literal);
    Node::Compare(operand.clone(), Op::Eq, operand)
}

/// The operand a parsed piece is, if it is one: a signal or a literal.
fn as_operand(node: &Node) -> Option<Operand> {
    match node {
        Node::Flag(s) => Some(Operand::Signal(*s)),
        Node::Compare(Operand::Literal(a), Op::Eq, Operand::Literal(b)) if a == b => {
            Some(Operand::Literal(a.clone()))
        }
        Node::Const(b) => Some(Operand::Literal(Literal::Bool(*b))),
        _ => None,
    }
}

fn signal_named(name: &str, offset: usize) -> Result<Signal, ConditionError> {
    Signal::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
        err(
            offset,
            format!("unknown signal `{name}`; expected one of: {}", known.join(", ")),
        )
    })
}

/// The amount a token's `authorization_details` (RFC 9396) approves, with
/// its currency, for the `amount` signal of a call whose body carries
/// none: the sum of every entry's `amount`, so a small first entry cannot
/// hide a large second one from a rule such as `amount > 10000`. A
/// negative entry counts as nothing: it would net a large one down. Unknown
/// (`None`, `missing(amount)` in conditions) when an amount cannot be read
/// exactly, when the entries are in different currencies (no sum means
/// anything then), or when none has an amount. (stepup's authorization
/// server issues none of these unknown cases: it refuses such details.)
pub fn approved_amount(details: &Json) -> (Option<Decimal>, Option<&str>) {
    let mut total: Option<(Decimal, Option<&str>)> = None;
    for entry in details.as_array().unwrap_or_default() {
        let Some(amount) = entry.get("amount").and_then(Json::amount) else {
            continue;
        };
        let currency = entry.get("currency").and_then(Json::as_str);
        let sum = match (amount, total) {
            (Err(_), _) => None,
            (Ok(amount), total) if amount.is_sign_negative() => {
                Some(total.unwrap_or((Decimal::ZERO, currency)))
            }
            (Ok(amount), None) => Some((amount, currency)),
            (Ok(amount), Some((sum, seen))) if seen == currency => {
                sum.checked_add(amount).map(|sum| (sum, currency))
            }
            (Ok(_), Some(_)) => None,
        };
        match sum {
            Some(sum) => total = Some(sum),
            None => return (None, None),
        }
    }
    total.map_or((None, None), |(sum, currency)| (Some(sum), currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_approves_the_sum_of_its_entries() {
        let read = |text: &str| {
            let details = Json::from_slice(text.as_bytes()).unwrap();
            let (amount, currency) = approved_amount(&details);
            (amount.map(|a| a.to_string()), currency.map(str::to_owned))
        };
        let eur = |a: &str| (Some(a.to_owned()), Some("EUR".to_owned()));
        assert_eq!(
            read(r#"[{"amount": "5000.00", "currency": "EUR"}]"#),
            eur("5000.00")
        );
        // A small first entry does not hide a large second one.
        assert_eq!(
            read(
                r#"[{"amount": "1", "currency": "EUR"}, {"amount": 20000, "currency": "EUR"}, {"type": "x"}]"#
            ),
            eur("20001")
        );
        // A negative line does not net a large one down.
        assert_eq!(
            read(r#"[{"amount": 20000, "currency": "EUR"}, {"amount": "-19999.99", "currency": "EUR"}]"#),
            eur("20000")
        );
        for unknown in [
            r#"[{"amount": "1", "currency": "EUR"}, {"amount": "20000", "currency": "USD"}]"#,
            r#"[{"amount": "1", "currency": "EUR"}, {"amount": "1e9", "currency": "EUR"}]"#,
            r#"[{"amount": "79228162514264337593543950335"}, {"amount": "1"}]"#,
            r#"[{"type": "account_information"}]"#,
            r#"{"amount": "1"}"#,
        ] {
            assert_eq!(read(unknown), (None, None), "{unknown}");
        }
    }

    fn holds(condition: &str, signals: &Signals<'_>) -> Option<bool> {
        Condition::parse(condition).unwrap().eval(signals)
    }

    fn transfer(amount: &str, currency: &'static str) -> Signals<'static> {
        Signals {
            amount: Some(parse_amount(amount).unwrap()),
            currency: Some(currency),
            ..Signals::NONE
        }
    }

    #[test]
    fn comparisons_and_logic() {
        let large = "amount > 1000 and currency == 'EUR'";
        assert_eq!(holds(large, &transfer("1500", "EUR")), Some(true));
        assert_eq!(holds(large, &transfer("1000", "EUR")), Some(false));
        assert_eq!(holds(large, &transfer("1500", "USD")), Some(false));
        assert_eq!(holds("amount >= 1_000", &transfer("1000", "EUR")), Some(true));
        assert_eq!(holds("not (amount < 10.5)", &transfer("10.5", "EUR")), Some(true));
        assert_eq!(
            holds("currency in ['EUR', \"CHF\"]", &transfer("1", "CHF")),
            Some(true)
        );
        assert_eq!(holds("currency in []", &transfer("1", "CHF")), Some(false));
        assert_eq!(holds("amount in [1, 2]", &transfer("2", "EUR")), Some(true));
        assert_eq!(
            holds("amount > 5 or currency == 'X'", &transfer("1", "X")),
            Some(true)
        );
        assert_eq!(holds("true", &Signals::NONE), Some(true));
    }

    #[test]
    fn amounts_are_exact_decimals() {
        let just_over = transfer("1000.0000000000001", "EUR");
        assert_eq!(holds("amount > 1000", &just_over), Some(true));
        // As a float, 1000.00000000000001 is 1000: under the threshold.
        let hair_over = transfer("1000.00000000000001", "EUR");
        assert_eq!(holds("amount > 1000", &hair_over), Some(true));
        assert_eq!(holds("amount <= 1000", &hair_over), Some(false));
        assert_eq!(holds("amount == 1000", &just_over), Some(false));
        assert_eq!(holds("amount > 1000.0000000000001", &just_over), Some(false));
        assert_eq!(holds("amount >= 1000.00000000000010", &just_over), Some(true));
        assert_eq!(holds("amount == 5000", &transfer("5000.00", "EUR")), Some(true));
        assert_eq!(
            holds("amount in [1, 5000.0]", &transfer("5000", "EUR")),
            Some(true)
        );
        assert_eq!(
            Signals::text(&just_over, Signal::Amount).as_deref(),
            Some("1000.0000000000001")
        );
        // Money is not compared with a float signal, nor with a
        // threshold that does not fit an exact decimal.
        let e = fails("amount > anomaly_score");
        assert!(
            e.message.starts_with("cannot compare an amount with a number"),
            "{e}"
        );
        let e = fails(&format!("amount > {}", "9".repeat(30)));
        assert_eq!(e.offset, 9);
        assert!(e.message.contains("more digits than an amount holds"), "{e}");
        // Number signals still compare with numbers written out.
        let busy = Signals {
            request_rate: Some(30.5),
            ..Signals::NONE
        };
        assert_eq!(holds("request_rate > 30", &busy), Some(true));
        assert_eq!(holds("request_rate in [30.5]", &busy), Some(true));
    }

    #[test]
    fn unknown_signals_make_unknown_comparisons_and_rules_do_not_fire() {
        let none = Signals::NONE;
        assert_eq!(holds("amount > 1000", &none), None);
        assert_eq!(holds("not (amount > 1000)", &none), None);
        assert_eq!(holds("amount > 1000 and false", &none), Some(false));
        assert_eq!(holds("amount > 1000 or true", &none), Some(true));
        assert_eq!(holds("missing(amount)", &none), Some(true));
        assert_eq!(
            holds("missing(amount) or amount > 1000", &transfer("5", "EUR")),
            Some(false)
        );
        assert_eq!(holds("country_changed", &none), None);
    }

    #[test]
    fn derived_signals() {
        let moved = Signals {
            country: Some("FR"),
            auth_country: Some("DE"),
            ..Signals::NONE
        };
        assert_eq!(holds("country_changed", &moved), Some(true));
        assert_eq!(holds("country != auth_country", &moved), Some(true));
        let home = Signals {
            country: Some("de"),
            auth_country: Some("DE"),
            ..Signals::NONE
        };
        assert_eq!(holds("country_changed", &home), Some(false));
        // A bound token presented from another device, or from none.
        let bound = |device| Signals {
            device,
            bound_device: Some("jkt-1"),
            ..Signals::NONE
        };
        assert_eq!(holds("device_changed", &bound(Some("jkt-1"))), Some(false));
        assert_eq!(holds("device_changed", &bound(Some("jkt-2"))), Some(true));
        assert_eq!(holds("device_changed", &bound(None)), Some(true));
        assert_eq!(holds("device_changed", &Signals::NONE), None, "an unbound token");
    }

    fn fails(condition: &str) -> ConditionError {
        Condition::parse(condition).unwrap_err()
    }

    #[test]
    fn errors_say_where_and_what_was_expected() {
        let e = fails("amount > 1000 and currncy == 'EUR'");
        assert_eq!(e.offset, 18);
        assert!(
            e.message
                .starts_with("unknown signal `currncy`; expected one of: amount, currency"),
            "{e}"
        );
        let e = fails("amount = 5");
        assert_eq!(
            (e.offset, e.message.as_str()),
            (7, "expected `==` (comparison), found `=`")
        );
        assert_eq!(
            fails("currency > 'EUR'").message,
            "`<`, `<=`, `>`, `>=` compare numbers, not strings"
        );
        assert_eq!(
            fails("amount == 'EUR'").message,
            "cannot compare an amount with a string (an amount compares with numbers written out, such as amount > 1000)"
        );
        assert_eq!(
            fails("amount").message,
            "a condition must be true or false, this is an amount"
        );
        assert_eq!(
            fails("amount > 5 and").message,
            "expected a signal or a value, found the end"
        );
        assert_eq!(fails("(amount > 5").message, "expected `)`, found the end");
        assert_eq!(fails("currency == 'EUR").message, "this string has no closing '");
        assert_eq!(fails("amount > 5 amount").offset, 11);
        assert_eq!(
            fails("currency in ['EUR', 5]").message,
            "this list holds strings, not a number"
        );
        assert_eq!(fails("5 > 3").message, "this compares two values: name a signal");
        assert_eq!(
            fails("amount and true").message,
            "`and` needs true or false on each side, this is an amount"
        );
        assert_eq!(
            fails("missing(5)").message,
            "expected a signal, found the number 5"
        );
        assert_eq!(
            fails("amount ! 5").message,
            "expected `!=`, found `!`; negation is `not`"
        );
        assert_eq!(fails("").message, "expected a signal or a value, found the end");
        assert_eq!(fails("amount > 5 § 3").offset, 11);
    }

    #[test]
    fn the_signals_a_condition_reads() {
        let c = Condition::parse("amount > 1 and (country_changed or amount < 0) and missing(asn)").unwrap();
        assert_eq!(c.signals(), [Signal::Amount, Signal::CountryChanged, Signal::Asn]);
        assert_eq!(
            c.as_str(),
            "amount > 1 and (country_changed or amount < 0) and missing(asn)"
        );
    }
}
