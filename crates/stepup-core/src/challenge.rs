//! `WWW-Authenticate` challenges: the generic grammar and the typed bearer
//! challenge that carries an RFC 9470 step-up request.
//!
//! # Generic challenges
//!
//! [`parse_www_authenticate`] reads one or more `WWW-Authenticate` field
//! values into [`Challenge`]s, following RFC 9110:
//!
//! - §11.1 (authentication scheme): a scheme is a `token`, compared
//!   case-insensitively;
//! - §11.2 (authentication parameters): `auth-param = token BWS "=" BWS
//!   ( token / quoted-string )`, parameter names compared case-insensitively,
//!   each name at most once per challenge; a challenge carries either one
//!   `token68` or a comma-separated list of parameters;
//! - §11.6.1 (`WWW-Authenticate`): the field value is a list of challenges,
//!   and several field lines are one list, as if joined with commas;
//! - §5.6.2 (tokens) and §5.6.4 (quoted strings, with `\` quoted-pairs);
//! - §5.6.1 (lists): optional whitespace around commas and empty list
//!   elements are tolerated.
//!
//! A comma followed by a token is ambiguous in this grammar: when the token
//! is followed by optional whitespace and `=`, it is a parameter of the
//! current challenge; otherwise it starts a new challenge.
//!
//! Building goes the other way: [`Challenge`] validates what it is given, and
//! its [`Display`](fmt::Display) writes every parameter value as a quoted
//! string, so that whatever can be built also parses back to the same thing.
//!
//! # Bearer challenges and step-up
//!
//! [`BearerChallenge`] is the typed view of a `Bearer` (or `DPoP`) challenge:
//! the attributes of RFC 6750 §3 (`realm`, `error`, `error_description`,
//! `error_uri`, `scope`), the error codes of RFC 6750 §3.1 with their HTTP
//! status codes, and the `insufficient_user_authentication` error with its
//! `acr_values` and `max_age` parameters from RFC 9470 §3.
//! [`find_step_up`] picks the step-up challenge out of a parsed header.

use std::fmt;

use thiserror::Error;

use crate::acr::{Acr, AcrError};

/// The longest input [`parse_www_authenticate`] accepts, in bytes, counting
/// the `", "` that joins several field values.
pub const MAX_HEADER_LEN: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// Character classes
// ---------------------------------------------------------------------------

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// The characters of a `token68` before its trailing `=` (RFC 9110 §11.2).
fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
}

/// `qdtext` (RFC 9110 §5.6.4): HTAB, SP, VCHAR except `"` and `\`, obs-text.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// What may follow `\` in a `quoted-pair` (RFC 9110 §5.6.4).
fn is_quoted_pair_char(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=0x7e | 0x80..=0xff)
}

/// Whether `s` is a non-empty `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Whether `s` is a `token68`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" /
/// "+" / "/" ) *"="`.
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(is_token68_char)
}

/// The first character of `value` that cannot appear in a quoted string
/// (a control character other than HTAB, or DEL), if any.
fn first_unquotable(value: &str) -> Option<char> {
    value.chars().find(|&c| c.is_ascii_control() && c != '\t')
}

/// RFC 6750 §3: `error` and `error_description` use %x20-21 / %x23-5B / %x5D-7E.
fn is_error_text_char(c: char) -> bool {
    matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e')
}

/// RFC 6750 §3: `error_uri` uses %x21 / %x23-5B / %x5D-7E.
fn is_error_uri_char(c: char) -> bool {
    matches!(c, '\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e')
}

/// Replaces every character that `keep` rejects with `?`, one for one.
fn sanitize(value: &str, keep: impl Fn(char) -> bool) -> String {
    value.chars().map(|c| if keep(c) { c } else { '?' }).collect()
}

// ---------------------------------------------------------------------------
// Generic challenges
// ---------------------------------------------------------------------------

/// One authentication parameter, `name=value` (RFC 9110 §11.2).
///
/// The name is kept as received; the value is the unescaped content of a
/// quoted string, or the token as it appeared.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthParam {
    name: String,
    value: String,
}

impl AuthParam {
    /// The parameter name, as received (compare it case-insensitively).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parameter value, with quoted-pair escapes removed.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// One authentication challenge (RFC 9110 §11.1, §11.2): a scheme followed by
/// either a `token68` or a list of parameters, or by nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Challenge {
    scheme: String,
    token68: Option<String>,
    params: Vec<AuthParam>,
}

/// Why a [`Challenge`] cannot be built as asked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChallengeBuildError {
    /// The scheme is empty or not a `token`.
    #[error("invalid authentication scheme {scheme:?}: it must be a non-empty token")]
    InvalidScheme {
        /// The rejected scheme.
        scheme: String,
    },
    /// A parameter name is empty or not a `token`.
    #[error("invalid parameter name {name:?}: it must be a non-empty token")]
    InvalidParamName {
        /// The rejected name.
        name: String,
    },
    /// A parameter value contains a character that cannot appear in a quoted
    /// string (a control character other than HTAB, or DEL).
    #[error("the value of parameter {name:?} may not contain {found:?}")]
    InvalidParamValue {
        /// The parameter name.
        name: String,
        /// The first offending character.
        found: char,
    },
    /// A parameter name is already present (names compare case-insensitively).
    #[error("parameter {name:?} is already present in the challenge")]
    DuplicateParam {
        /// The repeated name.
        name: String,
    },
    /// The value is not a `token68`.
    #[error("invalid token68 {value:?}")]
    InvalidToken68 {
        /// The rejected value.
        value: String,
    },
    /// A challenge carries either a `token68` or parameters, never both.
    #[error("a challenge carries either a token68 or parameters, not both")]
    Token68WithParams,
}

impl Challenge {
    /// A challenge with the given scheme and nothing else.
    pub fn new(scheme: impl Into<String>) -> Result<Self, ChallengeBuildError> {
        let scheme = scheme.into();
        if !is_token(&scheme) {
            return Err(ChallengeBuildError::InvalidScheme { scheme });
        }
        Ok(Self {
            scheme,
            token68: None,
            params: Vec::new(),
        })
    }

    /// Appends a parameter. The name must be a token not yet present
    /// (case-insensitively); the value may hold anything but control
    /// characters other than HTAB.
    pub fn with_param(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, ChallengeBuildError> {
        let name = name.into();
        let value = value.into();
        if self.token68.is_some() {
            return Err(ChallengeBuildError::Token68WithParams);
        }
        if !is_token(&name) {
            return Err(ChallengeBuildError::InvalidParamName { name });
        }
        if self.param(&name).is_some() {
            return Err(ChallengeBuildError::DuplicateParam { name });
        }
        if let Some(found) = first_unquotable(&value) {
            return Err(ChallengeBuildError::InvalidParamValue { name, found });
        }
        self.params.push(AuthParam { name, value });
        Ok(self)
    }

    /// Sets the `token68` (for example `Basic` credentials in a challenge).
    /// Fails when the challenge already has parameters.
    pub fn with_token68(mut self, token68: impl Into<String>) -> Result<Self, ChallengeBuildError> {
        let value = token68.into();
        if !self.params.is_empty() {
            return Err(ChallengeBuildError::Token68WithParams);
        }
        if !is_token68(&value) {
            return Err(ChallengeBuildError::InvalidToken68 { value });
        }
        self.token68 = Some(value);
        Ok(self)
    }

    /// The authentication scheme, as received (compare it case-insensitively,
    /// or use [`Challenge::is_scheme`]).
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// Whether the scheme is `scheme`, ignoring ASCII case.
    pub fn is_scheme(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The `token68`, if the challenge carries one.
    pub fn token68(&self) -> Option<&str> {
        self.token68.as_deref()
    }

    /// The parameters, in the order received.
    pub fn params(&self) -> &[AuthParam] {
        &self.params
    }

    /// The value of the parameter named `name`, ignoring ASCII case.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
    }
}

/// Writes the challenge as it goes in a `WWW-Authenticate` field value:
/// `Scheme`, `Scheme token68` or `Scheme name="value", name2="value2"`, every
/// parameter value a quoted string with `"` and `\` escaped.
impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scheme)?;
        if let Some(token68) = &self.token68 {
            return write!(f, " {token68}");
        }
        for (i, param) in self.params.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { ", " })?;
            f.write_str(&param.name)?;
            f.write_str("=\"")?;
            for c in param.value.chars() {
                if matches!(c, '"' | '\\') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        Ok(())
    }
}

/// Joins challenges into one `WWW-Authenticate` field value, separated by `", "`.
pub fn format_challenges(challenges: &[Challenge]) -> String {
    challenges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// Why a `WWW-Authenticate` value could not be parsed.
///
/// Offsets are byte offsets into the field values joined with `", "` (for a
/// single value, into that value).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChallengeParseError {
    /// The input holds no challenge at all (empty, or only commas and spaces).
    #[error("no challenge in WWW-Authenticate")]
    Empty,
    /// The input is longer than [`MAX_HEADER_LEN`].
    #[error("WWW-Authenticate is longer than {max} bytes")]
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// A list element does not start with an authentication scheme (a token).
    #[error("expected an authentication scheme at byte {at}")]
    ExpectedScheme {
        /// Where the scheme should start.
        at: usize,
    },
    /// An auth-param appears where a challenge must start: before the first
    /// scheme, or after a challenge that carries a `token68`.
    #[error("parameter without a challenge at byte {at}")]
    UnexpectedParam {
        /// Where the parameter starts.
        at: usize,
    },
    /// A parameter name is not followed by `=` and a token or quoted string.
    #[error("expected a parameter value at byte {at}")]
    ExpectedParamValue {
        /// Where the value should start.
        at: usize,
    },
    /// A quoted string has no closing `"`.
    #[error("quoted string starting at byte {at} is not terminated")]
    UnterminatedQuotedString {
        /// Where the opening `"` is.
        at: usize,
    },
    /// A character that the grammar does not allow here.
    #[error("unexpected character {found:?} at byte {at}")]
    InvalidCharacter {
        /// Where the character is.
        at: usize,
        /// The character.
        found: char,
    },
    /// A parameter name occurs twice in one challenge (RFC 9110 §11.2).
    #[error("parameter {name:?} at byte {at} occurs twice in the same challenge")]
    DuplicateParam {
        /// The second occurrence of the name, as received.
        name: String,
        /// Where the second occurrence starts.
        at: usize,
    },
}

/// Parses `WWW-Authenticate` field values into challenges (RFC 9110 §11.6.1).
///
/// Several values are one list, as if joined with `", "`; each value may hold
/// several challenges. Scheme and parameter names are kept as received.
/// Values that are not valid UTF-8 (obs-text in another charset) must be
/// converted by the caller, for example lossily.
pub fn parse_www_authenticate<'a, I>(header_values: I) -> Result<Vec<Challenge>, ChallengeParseError>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut joined = String::new();
    for (i, value) in header_values.into_iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        if joined
            .len()
            .saturating_add(separator.len())
            .saturating_add(value.len())
            > MAX_HEADER_LEN
        {
            return Err(ChallengeParseError::TooLong { max: MAX_HEADER_LEN });
        }
        joined.push_str(separator);
        joined.push_str(value);
    }
    Parser::new(&joined).parse_list()
}

/// A cursor over the input bytes. Every read is bounds-checked, so no input
/// can make it panic.
struct Parser<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self {
            input,
            bytes: input.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, pos: usize) -> Option<u8> {
        self.bytes.get(pos).copied()
    }

    fn slice(&self, start: usize, end: usize) -> &'a str {
        self.input.get(start..end).unwrap_or_default()
    }

    /// The end of the run of bytes matching `pred` starting at `pos`.
    fn scan(&self, mut pos: usize, pred: impl Fn(u8) -> bool) -> usize {
        while self.peek_at(pos).is_some_and(&pred) {
            pos += 1;
        }
        pos
    }

    fn ows_end(&self, pos: usize) -> usize {
        self.scan(pos, |b| matches!(b, b' ' | b'\t'))
    }

    /// Skips optional whitespace; true if there was any.
    fn skip_ows(&mut self) -> bool {
        let start = self.pos;
        self.pos = self.ows_end(start);
        self.pos > start
    }

    /// Skips whitespace and commas: list separators and empty list elements.
    fn skip_separators(&mut self) {
        self.pos = self.scan(self.pos, |b| matches!(b, b' ' | b'\t' | b','));
    }

    /// Reads a token, if one starts here.
    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let end = self.scan(start, is_tchar);
        (end > start).then(|| {
            self.pos = end;
            self.slice(start, end)
        })
    }

    /// Whether an auth-param (`token BWS "="`) starts here.
    fn param_ahead(&self) -> bool {
        let end = self.scan(self.pos, is_tchar);
        end > self.pos && self.peek_at(self.ows_end(end)) == Some(b'=')
    }

    /// Reads a `token68` if one starts here and is the whole rest of the
    /// challenge (followed only by whitespace, then a comma or the end).
    fn token68(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let body_end = self.scan(start, is_token68_char);
        if body_end == start {
            return None;
        }
        let end = self.scan(body_end, |b| b == b'=');
        let next = self.ows_end(end);
        matches!(self.peek_at(next), None | Some(b',')).then(|| {
            self.pos = next;
            self.slice(start, end)
        })
    }

    /// The error for the character at the cursor, or for the end of input
    /// where a value was still expected.
    fn unexpected(&self) -> ChallengeParseError {
        let at = self.pos;
        match self.input.get(at..).and_then(|rest| rest.chars().next()) {
            Some(found) => ChallengeParseError::InvalidCharacter { at, found },
            None if at < self.bytes.len() => ChallengeParseError::InvalidCharacter {
                at,
                found: char::REPLACEMENT_CHARACTER,
            },
            None => ChallengeParseError::ExpectedParamValue { at },
        }
    }

    fn parse_list(mut self) -> Result<Vec<Challenge>, ChallengeParseError> {
        let mut challenges = Vec::new();
        loop {
            self.skip_separators();
            if self.peek().is_none() {
                break;
            }
            if self.param_ahead() {
                return Err(ChallengeParseError::UnexpectedParam { at: self.pos });
            }
            challenges.push(self.parse_challenge()?);
        }
        if challenges.is_empty() {
            return Err(ChallengeParseError::Empty);
        }
        Ok(challenges)
    }

    /// Parses one challenge, leaving the cursor at the end of input or at
    /// the start of the next list element.
    fn parse_challenge(&mut self) -> Result<Challenge, ChallengeParseError> {
        let at = self.pos;
        let scheme = self.token().ok_or(ChallengeParseError::ExpectedScheme { at })?;
        let mut challenge = Challenge {
            scheme: scheme.to_owned(),
            token68: None,
            params: Vec::new(),
        };
        let had_space = self.skip_ows();
        match self.peek() {
            None => return Ok(challenge),
            // Parameters may still follow the comma (an empty first element).
            Some(b',') => {}
            Some(_) if had_space => {
                if let Some(token68) = self.token68() {
                    challenge.token68 = Some(token68.to_owned());
                    return Ok(challenge);
                }
                self.parse_param(&mut challenge)?;
            }
            Some(_) => return Err(self.unexpected()),
        }
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(challenge),
                Some(b',') => {
                    self.skip_separators();
                    if !self.param_ahead() {
                        // End of input, or a token that starts the next challenge.
                        return Ok(challenge);
                    }
                    self.parse_param(&mut challenge)?;
                }
                Some(_) => return Err(self.unexpected()),
            }
        }
    }

    /// Parses `token BWS "=" BWS ( token / quoted-string )` into `challenge`.
    fn parse_param(&mut self, challenge: &mut Challenge) -> Result<(), ChallengeParseError> {
        let at = self.pos;
        let name = self.token().ok_or_else(|| self.unexpected())?;
        self.skip_ows();
        if self.peek() != Some(b'=') {
            return Err(self.unexpected());
        }
        self.pos += 1;
        self.skip_ows();
        let value = match self.peek() {
            Some(b'"') => self.quoted_string()?,
            Some(b) if is_tchar(b) => self.token().unwrap_or_default().to_owned(),
            _ => return Err(ChallengeParseError::ExpectedParamValue { at: self.pos }),
        };
        if challenge.param(name).is_some() {
            return Err(ChallengeParseError::DuplicateParam {
                name: name.to_owned(),
                at,
            });
        }
        challenge.params.push(AuthParam {
            name: name.to_owned(),
            value,
        });
        Ok(())
    }

    /// Parses a quoted string starting at the opening `"`, returning its
    /// content with quoted-pair escapes removed.
    fn quoted_string(&mut self) -> Result<String, ChallengeParseError> {
        let at = self.pos;
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(ChallengeParseError::UnterminatedQuotedString { at }),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err(ChallengeParseError::UnterminatedQuotedString { at }),
                        Some(b) if is_quoted_pair_char(b) => value.push(b),
                        Some(_) => return Err(self.unexpected()),
                    }
                }
                Some(b) if is_qdtext(b) => value.push(b),
                Some(_) => return Err(self.unexpected()),
            }
            self.pos += 1;
        }
        // Only ASCII backslashes were dropped from valid UTF-8, so the bytes
        // are still valid UTF-8 and this never replaces anything.
        Ok(String::from_utf8_lossy(&value).into_owned())
    }
}

// ---------------------------------------------------------------------------
// Bearer challenges (RFC 6750 §3, RFC 9470 §3)
// ---------------------------------------------------------------------------

/// An `error` code of a bearer challenge (RFC 6750 §3.1, RFC 9470 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_request`: the request is malformed (400).
    InvalidRequest,
    /// `invalid_token`: the token is expired, revoked, malformed or invalid (401).
    InvalidToken,
    /// `insufficient_scope`: the token lacks a required scope (403).
    InsufficientScope,
    /// `insufficient_user_authentication`: the authentication event behind the
    /// token does not meet the requirements; step up (401, RFC 9470 §3).
    InsufficientUserAuthentication,
    /// Any other code, as received. Build it with [`ErrorCode::from`] so known
    /// codes get their own variant.
    Other(String),
}

impl ErrorCode {
    /// The code as it appears in the `error` parameter.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::InsufficientUserAuthentication => "insufficient_user_authentication",
            Self::Other(code) => code,
        }
    }

    /// The HTTP status code that goes with this error: 400 for
    /// `invalid_request`, 403 for `insufficient_scope`, 401 for
    /// `invalid_token`, `insufficient_user_authentication` and any other code.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::InsufficientScope => 403,
            Self::InvalidToken | Self::InsufficientUserAuthentication | Self::Other(_) => 401,
        }
    }
}

impl From<&str> for ErrorCode {
    /// Maps a code to its variant; codes compare exactly (they are lowercase).
    fn from(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_token" => Self::InvalidToken,
            "insufficient_scope" => Self::InsufficientScope,
            "insufficient_user_authentication" => Self::InsufficientUserAuthentication,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The schemes whose challenges use the RFC 6750 attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TokenScheme {
    /// `Bearer` (RFC 6750).
    #[default]
    Bearer,
    /// `DPoP` (RFC 9449 §7.1).
    DPoP,
}

impl TokenScheme {
    /// The scheme name as written in challenges.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::DPoP => "DPoP",
        }
    }

    /// The scheme named `name`, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Bearer, Self::DPoP]
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for TokenScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `Bearer` or `DPoP` challenge: the RFC 6750 §3 attributes plus the RFC
/// 9470 §3 step-up parameters.
///
/// `None` and empty values are left out of the header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BearerChallenge {
    /// The scheme; `Bearer` by default.
    pub scheme: TokenScheme,
    /// `realm`: the protection space.
    pub realm: Option<String>,
    /// `error`: why the request failed.
    pub error: Option<ErrorCode>,
    /// `error_description`: human-readable text for the developer.
    pub error_description: Option<String>,
    /// `error_uri`: a page that explains the error.
    pub error_uri: Option<String>,
    /// `scope`: space-separated scopes the resource needs.
    pub scope: Option<String>,
    /// `acr_values`: acceptable authentication context classes, any of which
    /// would do (RFC 9470 §3).
    pub acr_values: Vec<Acr>,
    /// `max_age`: the allowable elapsed time, in seconds, since the last
    /// active user authentication (RFC 9470 §3).
    pub max_age: Option<u64>,
    /// `algs`: space-separated JWS algorithms the server accepts in DPoP
    /// proofs (RFC 9449 §7.1), for `DPoP` challenges.
    pub algs: Option<String>,
    /// `resource_metadata`: where the resource's metadata is (RFC 9728
    /// §5.1), so that a client can check whom it is talking to before it
    /// follows the challenge.
    pub resource_metadata: Option<String>,
}

/// Why a challenge is not a valid bearer challenge.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BearerChallengeError {
    /// The scheme is neither `Bearer` nor `DPoP`.
    #[error("unsupported scheme {scheme:?} for a bearer challenge")]
    UnsupportedScheme {
        /// The scheme, as received.
        scheme: String,
    },
    /// An entry of `acr_values` is not a valid `acr`.
    #[error("invalid acr value {value:?} in acr_values")]
    InvalidAcr {
        /// The rejected entry.
        value: String,
        /// Why it was rejected.
        #[source]
        source: AcrError,
    },
    /// `max_age` is not a non-negative decimal integer that fits in 64 bits.
    #[error("invalid max_age {value:?}: expected a non-negative decimal integer")]
    InvalidMaxAge {
        /// The rejected value.
        value: String,
    },
}

impl BearerChallenge {
    /// The generic challenge, with parameters in the order `realm`, `error`,
    /// `error_description`, `error_uri`, `scope`, `acr_values`, `max_age`.
    ///
    /// Text fields are made safe rather than rejected: in `error`,
    /// `error_description` and `scope`, every character outside the RFC 6750
    /// §3 set (%x20-21 / %x23-5B / %x5D-7E) becomes `?`; in `error_uri` the
    /// same applies with space excluded too; in `realm` only control
    /// characters (other than HTAB) are replaced. The result always parses
    /// back, whatever text went in.
    pub fn to_challenge(&self) -> Challenge {
        let mut params = Vec::new();
        let mut push = |name: &str, value: String| {
            if !value.is_empty() {
                params.push(AuthParam {
                    name: name.to_owned(),
                    value,
                });
            }
        };
        if let Some(realm) = &self.realm {
            push("realm", sanitize(realm, |c| !c.is_ascii_control() || c == '\t'));
        }
        if let Some(error) = &self.error {
            push("error", sanitize(error.as_str(), is_error_text_char));
        }
        if let Some(description) = &self.error_description {
            push("error_description", sanitize(description, is_error_text_char));
        }
        if let Some(uri) = &self.error_uri {
            push("error_uri", sanitize(uri, is_error_uri_char));
        }
        if let Some(scope) = &self.scope {
            push("scope", sanitize(scope, is_error_text_char));
        }
        let acr_values: Vec<&str> = self.acr_values.iter().map(Acr::as_str).collect();
        push("acr_values", acr_values.join(" "));
        if let Some(max_age) = self.max_age {
            push("max_age", max_age.to_string());
        }
        if let Some(algs) = &self.algs {
            push("algs", sanitize(algs, is_error_text_char));
        }
        if let Some(url) = &self.resource_metadata {
            push("resource_metadata", sanitize(url, is_error_uri_char));
        }
        Challenge {
            scheme: self.scheme.as_str().to_owned(),
            token68: None,
            params,
        }
    }

    /// Reads a `Bearer` or `DPoP` challenge. Parameter names compare
    /// case-insensitively; unknown parameters and a `token68` are ignored
    /// (they stay available on the [`Challenge`]). `acr_values` is split on
    /// spaces and every entry must be a valid [`Acr`]; `max_age` must be
    /// decimal digits only.
    pub fn from_challenge(challenge: &Challenge) -> Result<Self, BearerChallengeError> {
        let scheme = TokenScheme::from_name(challenge.scheme()).ok_or_else(|| {
            BearerChallengeError::UnsupportedScheme {
                scheme: challenge.scheme().to_owned(),
            }
        })?;
        let text = |name: &str| challenge.param(name).map(str::to_owned);
        let acr_values = challenge
            .param("acr_values")
            .unwrap_or_default()
            .split(' ')
            .filter(|v| !v.is_empty())
            .map(|value| {
                Acr::new(value).map_err(|source| BearerChallengeError::InvalidAcr {
                    value: value.to_owned(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_age = challenge.param("max_age").map(parse_max_age).transpose()?;
        Ok(Self {
            scheme,
            realm: text("realm"),
            error: challenge.param("error").map(ErrorCode::from),
            error_description: text("error_description"),
            error_uri: text("error_uri"),
            scope: text("scope"),
            acr_values,
            max_age,
            algs: text("algs"),
            resource_metadata: text("resource_metadata"),
        })
    }
}

/// `max_age`: one or more decimal digits, no sign, fitting in a `u64`.
fn parse_max_age(value: &str) -> Result<u64, BearerChallengeError> {
    let invalid = || BearerChallengeError::InvalidMaxAge {
        value: value.to_owned(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

/// Writes the challenge as a `WWW-Authenticate` field value
/// (see [`BearerChallenge::to_challenge`]).
impl fmt::Display for BearerChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_challenge(), f)
    }
}

/// The first `Bearer` or `DPoP` challenge whose `error` is
/// `insufficient_user_authentication` (RFC 9470 §3), read as a
/// [`BearerChallenge`]; `None` when there is no such challenge.
pub fn find_step_up(challenges: &[Challenge]) -> Option<Result<BearerChallenge, BearerChallengeError>> {
    challenges
        .iter()
        .find(|c| {
            TokenScheme::from_name(c.scheme()).is_some()
                && c.param("error") == Some(ErrorCode::InsufficientUserAuthentication.as_str())
        })
        .map(BearerChallenge::from_challenge)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(value: &str) -> Result<Vec<Challenge>, ChallengeParseError> {
        parse_www_authenticate([value])
    }

    fn parse_one(value: &str) -> Challenge {
        let mut challenges = parse(value).unwrap();
        assert_eq!(challenges.len(), 1, "{challenges:?}");
        challenges.remove(0)
    }

    fn names_and_values(c: &Challenge) -> Vec<(&str, &str)> {
        c.params().iter().map(|p| (p.name(), p.value())).collect()
    }

    fn acr(s: &str) -> Acr {
        Acr::new(s).unwrap()
    }

    // --- RFC examples ------------------------------------------------------

    #[test]
    fn rfc9470_acr_values_example() {
        let c = parse_one(
            r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="myACR""#,
        );
        let b = BearerChallenge::from_challenge(&c).unwrap();
        assert_eq!(b.scheme, TokenScheme::Bearer);
        assert_eq!(b.error, Some(ErrorCode::InsufficientUserAuthentication));
        assert_eq!(b.error.as_ref().map(ErrorCode::status), Some(401));
        assert_eq!(
            b.error_description.as_deref(),
            Some("A different authentication level is required")
        );
        assert_eq!(b.acr_values, vec![acr("myACR")]);
        assert_eq!(b.max_age, None);
        assert_eq!(b.realm, None);
    }

    #[test]
    fn rfc9470_max_age_example() {
        let c = parse_one(
            r#"Bearer error="insufficient_user_authentication", error_description="More recent authentication is required", max_age="5""#,
        );
        let b = BearerChallenge::from_challenge(&c).unwrap();
        assert_eq!(b.error, Some(ErrorCode::InsufficientUserAuthentication));
        assert_eq!(
            b.error_description.as_deref(),
            Some("More recent authentication is required")
        );
        assert_eq!(b.max_age, Some(5));
        assert!(b.acr_values.is_empty());
    }

    #[test]
    fn rfc6750_examples() {
        let c = parse_one(r#"Bearer realm="example""#);
        assert_eq!(c.scheme(), "Bearer");
        assert_eq!(c.param("realm"), Some("example"));
        let b = BearerChallenge::from_challenge(&c).unwrap();
        assert_eq!(b.realm.as_deref(), Some("example"));
        assert_eq!(b.error, None);

        let c = parse_one(
            r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#,
        );
        let b = BearerChallenge::from_challenge(&c).unwrap();
        assert_eq!(b.realm.as_deref(), Some("example"));
        assert_eq!(b.error, Some(ErrorCode::InvalidToken));
        assert_eq!(b.error_description.as_deref(), Some("The access token expired"));
    }

    #[test]
    fn rfc9110_two_challenges_in_one_value() {
        let cs = parse(r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#)
            .unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].scheme(), "Newauth");
        assert_eq!(
            names_and_values(&cs[0]),
            vec![("realm", "apps"), ("type", "1"), ("title", r#"Login to "apps""#)]
        );
        assert_eq!(cs[1].scheme(), "Basic");
        assert_eq!(names_and_values(&cs[1]), vec![("realm", "simple")]);
    }

    // --- Generic grammar -----------------------------------------------------

    #[test]
    fn several_header_values_are_one_list() {
        let cs = parse_www_authenticate([
            r#"Basic realm="a""#,
            "",
            r#"Bearer realm="b", error="invalid_token""#,
            "DPoP",
        ])
        .unwrap();
        let schemes: Vec<&str> = cs.iter().map(Challenge::scheme).collect();
        assert_eq!(schemes, ["Basic", "Bearer", "DPoP"]);
        assert_eq!(cs[1].param("error"), Some("invalid_token"));
        assert!(cs[2].params().is_empty());
    }

    #[test]
    fn names_are_case_insensitive_and_kept_as_received() {
        let c = parse_one(r#"bEaReR REALM="x", Error="insufficient_user_authentication", ACR_VALUES="a b""#);
        assert_eq!(c.scheme(), "bEaReR");
        assert!(c.is_scheme("Bearer"));
        assert_eq!(c.param("realm"), Some("x"));
        assert_eq!(c.params()[0].name(), "REALM");
        let b = find_step_up(&[c]).unwrap().unwrap();
        assert_eq!(b.realm.as_deref(), Some("x"));
        assert_eq!(b.acr_values, vec![acr("a"), acr("b")]);
    }

    #[test]
    fn token68() {
        let c = parse_one("Basic YWxhZGRpbjpvcGVuc2VzYW1l");
        assert_eq!(c.token68(), Some("YWxhZGRpbjpvcGVuc2VzYW1l"));
        assert!(c.params().is_empty());

        let cs = parse("Negotiate a87421000492aa874209af8bc028==  , Basic abc/+.-_~=, Bearer").unwrap();
        assert_eq!(cs[0].token68(), Some("a87421000492aa874209af8bc028=="));
        assert_eq!(cs[1].token68(), Some("abc/+.-_~="));
        assert_eq!(cs[2].scheme(), "Bearer");
        assert_eq!(cs[2].token68(), None);
    }

    #[test]
    fn empty_elements_and_whitespace_are_tolerated() {
        let cs = parse(r#" ,, Bearer ,realm="a" ,, , error = invalid_token	,, Basic ,  "#).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(
            names_and_values(&cs[0]),
            vec![("realm", "a"), ("error", "invalid_token")]
        );
        assert_eq!(cs[1].scheme(), "Basic");
        assert!(cs[1].params().is_empty());
    }

    #[test]
    fn bws_around_equals_and_token_values() {
        let c = parse_one("Newauth a =1, b= two ,c\t=\t\"3\"");
        assert_eq!(names_and_values(&c), vec![("a", "1"), ("b", "two"), ("c", "3")]);
    }

    #[test]
    fn quoted_strings_accept_escapes_tabs_and_obs_text() {
        let c = parse_one("X a=\"\\\\ \\a\t\u{e9}\\\u{e9}\", b=\"\"");
        assert_eq!(names_and_values(&c), vec![("a", "\\ a\t\u{e9}\u{e9}"), ("b", "")]);
    }

    #[test]
    fn scheme_only_challenges() {
        let cs = parse("Basic, Bearer,DPoP").unwrap();
        assert_eq!(cs.len(), 3);
        assert!(cs.iter().all(|c| c.params().is_empty() && c.token68().is_none()));
    }

    // --- Errors ------------------------------------------------------------

    #[test]
    fn empty_input() {
        assert_eq!(parse(""), Err(ChallengeParseError::Empty));
        assert_eq!(parse(" , ,\t"), Err(ChallengeParseError::Empty));
        assert_eq!(parse_www_authenticate([]), Err(ChallengeParseError::Empty));
    }

    #[test]
    fn too_long() {
        let long = format!("Bearer realm=\"{}\"", "a".repeat(MAX_HEADER_LEN));
        assert_eq!(
            parse(&long),
            Err(ChallengeParseError::TooLong { max: MAX_HEADER_LEN })
        );
        let half = "a".repeat(MAX_HEADER_LEN / 2);
        assert_eq!(
            parse_www_authenticate([half.as_str(), half.as_str()]),
            Err(ChallengeParseError::TooLong { max: MAX_HEADER_LEN })
        );
        let max = "a".repeat(MAX_HEADER_LEN);
        assert!(parse(&max).is_ok());
    }

    #[test]
    fn unterminated_quoted_string() {
        assert_eq!(
            parse(r#"Bearer realm="example"#),
            Err(ChallengeParseError::UnterminatedQuotedString { at: 13 })
        );
        // A trailing backslash escapes nothing, or the closing quote.
        assert_eq!(
            parse(r#"Bearer realm="a\"#),
            Err(ChallengeParseError::UnterminatedQuotedString { at: 13 })
        );
        assert_eq!(
            parse(r#"Bearer realm="a\""#),
            Err(ChallengeParseError::UnterminatedQuotedString { at: 13 })
        );
    }

    #[test]
    fn missing_param_value() {
        assert_eq!(
            parse("Bearer realm ="),
            Err(ChallengeParseError::ExpectedParamValue { at: 14 })
        );
        assert_eq!(
            parse(r#"Bearer realm="a", error= , scope=x"#),
            Err(ChallengeParseError::ExpectedParamValue { at: 25 })
        );
        // Right after the scheme, `name=` alone is a valid token68.
        assert_eq!(parse_one("Bearer realm=").token68(), Some("realm="));
        assert_eq!(
            parse("Bearer realm= , error=x"),
            Err(ChallengeParseError::UnexpectedParam { at: 16 })
        );
        assert_eq!(
            parse(r#"Bearer realm="a", error="#),
            Err(ChallengeParseError::ExpectedParamValue { at: 24 })
        );
    }

    #[test]
    fn invalid_characters() {
        assert_eq!(
            parse("Bea@rer"),
            Err(ChallengeParseError::InvalidCharacter { at: 3, found: '@' })
        );
        assert_eq!(
            parse("Bearer r\u{e9}alm=x"),
            Err(ChallengeParseError::InvalidCharacter {
                at: 8,
                found: '\u{e9}'
            })
        );
        assert_eq!(
            parse("Bearer realm=a b"),
            Err(ChallengeParseError::InvalidCharacter { at: 15, found: 'b' })
        );
        assert_eq!(
            parse(r#"Bearer realm="a" error="b""#),
            Err(ChallengeParseError::InvalidCharacter { at: 17, found: 'e' })
        );
        assert_eq!(
            parse("Basic abc def"),
            Err(ChallengeParseError::InvalidCharacter { at: 10, found: 'd' })
        );
    }

    #[test]
    fn control_characters() {
        assert_eq!(
            parse("Bearer realm=\"a\u{1}b\""),
            Err(ChallengeParseError::InvalidCharacter {
                at: 15,
                found: '\u{1}'
            })
        );
        assert_eq!(
            parse("Bearer realm=\"a\\\u{7f}\""),
            Err(ChallengeParseError::InvalidCharacter {
                at: 16,
                found: '\u{7f}'
            })
        );
        assert_eq!(
            parse("Bearer realm=\"a\"\r\n"),
            Err(ChallengeParseError::InvalidCharacter { at: 16, found: '\r' })
        );
        assert_eq!(parse("\0"), Err(ChallengeParseError::ExpectedScheme { at: 0 }));
    }

    #[test]
    fn param_before_scheme() {
        assert_eq!(parse("=x"), Err(ChallengeParseError::ExpectedScheme { at: 0 }));
        assert_eq!(
            parse("  \"Bearer\""),
            Err(ChallengeParseError::ExpectedScheme { at: 2 })
        );
        assert_eq!(
            parse(r#"realm="x""#),
            Err(ChallengeParseError::UnexpectedParam { at: 0 })
        );
        assert_eq!(
            parse(r#"Basic abc=, realm="x""#),
            Err(ChallengeParseError::UnexpectedParam { at: 12 })
        );
    }

    #[test]
    fn duplicate_param() {
        assert_eq!(
            parse(r#"Bearer realm="a", Realm="b""#),
            Err(ChallengeParseError::DuplicateParam {
                name: "Realm".into(),
                at: 18
            })
        );
        // The same name in two challenges is fine.
        assert_eq!(parse(r#"Bearer realm="a", Basic realm="b""#).unwrap().len(), 2);
    }

    // --- Building ------------------------------------------------------------

    #[test]
    fn build_and_format() {
        let c = Challenge::new("Newauth")
            .unwrap()
            .with_param("realm", "apps")
            .unwrap()
            .with_param("title", r#"Login to "apps" \ now"#)
            .unwrap();
        assert_eq!(
            c.to_string(),
            r#"Newauth realm="apps", title="Login to \"apps\" \\ now""#
        );
        let basic = Challenge::new("Basic").unwrap().with_token68("YWxh==").unwrap();
        let s = format_challenges(&[c.clone(), basic.clone(), Challenge::new("DPoP").unwrap()]);
        assert_eq!(
            s,
            r#"Newauth realm="apps", title="Login to \"apps\" \\ now", Basic YWxh==, DPoP"#
        );
        assert_eq!(
            parse(&s).unwrap(),
            vec![c, basic, Challenge::new("DPoP").unwrap()]
        );
    }

    #[test]
    fn build_errors() {
        assert!(matches!(
            Challenge::new(""),
            Err(ChallengeBuildError::InvalidScheme { .. })
        ));
        assert!(matches!(
            Challenge::new("Bear er"),
            Err(ChallengeBuildError::InvalidScheme { .. })
        ));
        let c = Challenge::new("Bearer").unwrap();
        assert!(matches!(
            c.clone().with_param("re alm", "x"),
            Err(ChallengeBuildError::InvalidParamName { .. })
        ));
        assert_eq!(
            c.clone().with_param("realm", "a\r\nSet-Cookie: x"),
            Err(ChallengeBuildError::InvalidParamValue {
                name: "realm".into(),
                found: '\r'
            })
        );
        assert!(matches!(
            c.clone().with_param("realm", "a\u{7f}"),
            Err(ChallengeBuildError::InvalidParamValue { found: '\u{7f}', .. })
        ));
        assert_eq!(
            c.clone()
                .with_param("realm", "a")
                .unwrap()
                .with_param("REALM", "b"),
            Err(ChallengeBuildError::DuplicateParam { name: "REALM".into() })
        );
        assert!(matches!(
            c.clone().with_token68("a=b"),
            Err(ChallengeBuildError::InvalidToken68 { .. })
        ));
        assert!(matches!(
            c.clone().with_token68("=="),
            Err(ChallengeBuildError::InvalidToken68 { .. })
        ));
        assert_eq!(
            c.clone().with_token68("abc").unwrap().with_param("a", "b"),
            Err(ChallengeBuildError::Token68WithParams)
        );
        assert_eq!(
            c.with_param("a", "b").unwrap().with_token68("abc"),
            Err(ChallengeBuildError::Token68WithParams)
        );
    }

    // --- Bearer ------------------------------------------------------------

    #[test]
    fn error_codes_and_statuses() {
        for (code, status) in [
            ("invalid_request", 400),
            ("invalid_token", 401),
            ("insufficient_scope", 403),
            ("insufficient_user_authentication", 401),
        ] {
            let e = ErrorCode::from(code);
            assert!(!matches!(e, ErrorCode::Other(_)), "{code}");
            assert_eq!(e.as_str(), code);
            assert_eq!(e.to_string(), code);
            assert_eq!(e.status(), status);
        }
        assert_eq!(
            ErrorCode::from("use_dpop_nonce"),
            ErrorCode::Other("use_dpop_nonce".into())
        );
        assert_eq!(ErrorCode::from("Invalid_Token").as_str(), "Invalid_Token");
    }

    #[test]
    fn bearer_to_challenge_order_and_omissions() {
        let b = BearerChallenge {
            realm: Some("api".into()),
            error: Some(ErrorCode::InsufficientUserAuthentication),
            error_description: Some("Step up".into()),
            error_uri: Some(String::new()),
            scope: None,
            acr_values: vec![acr("urn:a"), acr("urn:b")],
            max_age: Some(0),
            ..BearerChallenge::default()
        };
        assert_eq!(
            b.to_string(),
            r#"Bearer realm="api", error="insufficient_user_authentication", error_description="Step up", acr_values="urn:a urn:b", max_age="0""#
        );
        assert_eq!(BearerChallenge::default().to_string(), "Bearer");
        let dpop = BearerChallenge {
            scheme: TokenScheme::DPoP,
            error: Some(ErrorCode::InvalidToken),
            ..BearerChallenge::default()
        };
        assert_eq!(dpop.to_string(), r#"DPoP error="invalid_token""#);
        let dpop = BearerChallenge {
            scheme: TokenScheme::DPoP,
            error: Some(ErrorCode::Other("invalid_dpop_proof".into())),
            algs: Some("ES256 EdDSA".into()),
            ..BearerChallenge::default()
        };
        assert_eq!(
            dpop.to_string(),
            r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA""#
        );
    }

    #[test]
    fn bearer_sanitizes_text() {
        let b = BearerChallenge {
            realm: Some("r\r\n\"x\"".into()),
            error: Some(ErrorCode::Other("bad\"code".into())),
            error_description: Some("Needs \"MFA\"\r\nSet-Cookie: a=b \\ caf\u{e9}".into()),
            error_uri: Some("https://x/a b".into()),
            scope: Some("read\twrite".into()),
            ..BearerChallenge::default()
        };
        let c = b.to_challenge();
        assert_eq!(c.param("realm"), Some("r??\"x\""));
        assert_eq!(c.param("error"), Some("bad?code"));
        assert_eq!(
            c.param("error_description"),
            Some("Needs ?MFA???Set-Cookie: a=b ? caf?")
        );
        assert_eq!(c.param("error_uri"), Some("https://x/a?b"));
        assert_eq!(c.param("scope"), Some("read?write"));
        assert_eq!(parse_one(&c.to_string()), c);
    }

    #[test]
    fn bearer_from_challenge_errors() {
        let with = |params: &str| BearerChallenge::from_challenge(&parse_one(&format!("Bearer {params}")));
        for bad in [
            "+1",
            "-1",
            "1.0",
            "",
            " 1",
            "18446744073709551616",
            "0x10",
            "\u{661}",
        ] {
            assert_eq!(
                with(&format!("max_age=\"{bad}\"")),
                Err(BearerChallengeError::InvalidMaxAge { value: bad.into() }),
                "{bad:?}"
            );
        }
        assert_eq!(
            with("max_age=18446744073709551615").unwrap().max_age,
            Some(u64::MAX)
        );
        assert_eq!(with("max_age=007").unwrap().max_age, Some(7));
        assert!(matches!(
            with(r#"acr_values="good b\\ad""#),
            Err(BearerChallengeError::InvalidAcr { ref value, source: AcrError::BadCharacter('\\') }) if value == "b\\ad"
        ));
        assert!(matches!(
            with("acr_values=\"a\tb\""),
            Err(BearerChallengeError::InvalidAcr { .. })
        ));
        assert_eq!(
            BearerChallenge::from_challenge(&parse_one("Basic realm=\"x\"")),
            Err(BearerChallengeError::UnsupportedScheme {
                scheme: "Basic".into()
            })
        );
    }

    #[test]
    fn bearer_from_challenge_is_lenient_elsewhere() {
        let c = parse_one(r#"dpop acr_values="  a   b ", foo="bar", algs="ES256", error="use_dpop_nonce""#);
        let b = BearerChallenge::from_challenge(&c).unwrap();
        assert_eq!(b.scheme, TokenScheme::DPoP);
        assert_eq!(b.acr_values, vec![acr("a"), acr("b")]);
        assert_eq!(b.error, Some(ErrorCode::Other("use_dpop_nonce".into())));
        assert_eq!(c.param("foo"), Some("bar"));
        let empty = BearerChallenge::from_challenge(&parse_one(r#"Bearer acr_values="""#)).unwrap();
        assert!(empty.acr_values.is_empty());
    }

    #[test]
    fn find_step_up_picks_the_right_challenge() {
        let cs = parse_www_authenticate([
            r#"Basic realm="x", Bearer error="invalid_token""#,
            r#"Newauth error="insufficient_user_authentication""#,
            r#"DPoP error="insufficient_user_authentication", max_age=60, algs="ES256""#,
            r#"Bearer error="insufficient_user_authentication", acr_values="late""#,
        ])
        .unwrap();
        let b = find_step_up(&cs).unwrap().unwrap();
        assert_eq!(b.scheme, TokenScheme::DPoP);
        assert_eq!(b.max_age, Some(60));
        assert!(find_step_up(&cs[..2]).is_none());
        let bad = parse("Bearer error=\"insufficient_user_authentication\", max_age=\"soon\"").unwrap();
        assert!(matches!(
            find_step_up(&bad),
            Some(Err(BearerChallengeError::InvalidMaxAge { .. }))
        ));
    }

    // --- Properties ----------------------------------------------------------

    const TCHARS: &str = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

    fn token_strategy() -> impl Strategy<Value = String> {
        let chars: Vec<char> = TCHARS.chars().collect();
        prop::collection::vec(prop::sample::select(chars), 1..12).prop_map(String::from_iter)
    }

    fn token68_strategy() -> impl Strategy<Value = String> {
        ("[A-Za-z0-9._~+/-]{1,20}", 0..3usize).prop_map(|(body, pad)| format!("{body}{}", "=".repeat(pad)))
    }

    /// Parameters with names unique ignoring case.
    fn params_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec((token_strategy(), "[ -~\t\u{e9}\u{20ac}\u{1f600}]{0,24}"), 0..6).prop_map(
            |params| {
                let mut seen: Vec<String> = Vec::new();
                params
                    .into_iter()
                    .filter(|(name, _)| {
                        let lower = name.to_ascii_lowercase();
                        let fresh = !seen.contains(&lower);
                        seen.push(lower);
                        fresh
                    })
                    .collect()
            },
        )
    }

    fn challenge_strategy() -> impl Strategy<Value = Challenge> {
        (
            token_strategy(),
            prop::option::of(token68_strategy()),
            params_strategy(),
        )
            .prop_map(|(scheme, token68, params)| {
                let mut c = Challenge::new(scheme).unwrap();
                match token68 {
                    Some(t) => c = c.with_token68(t).unwrap(),
                    None => {
                        for (name, value) in params {
                            c = c.with_param(name, value).unwrap();
                        }
                    }
                }
                c
            })
    }

    fn acr_strategy() -> impl Strategy<Value = Acr> {
        "[!#-\\[\\]-~]{1,16}".prop_map(|s| Acr::new(s).unwrap())
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_strings(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_lossy_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_grammar_soup(
            values in prop::collection::vec("[a-cA-C0-9=\",\\\\ \t/+~\u{e9}\u{1}]{0,40}", 0..4)
        ) {
            let _ = parse_www_authenticate(values.iter().map(String::as_str));
        }

        #[test]
        fn build_then_parse_round_trips(challenges in prop::collection::vec(challenge_strategy(), 1..5)) {
            let header = format_challenges(&challenges);
            let parsed = parse(&header);
            prop_assert_eq!(parsed, Ok(challenges.clone()), "{}", header);
            // Also as separate field values.
            let values: Vec<String> = challenges.iter().map(ToString::to_string).collect();
            prop_assert_eq!(parse_www_authenticate(values.iter().map(String::as_str)), Ok(challenges));
        }

        #[test]
        fn bearer_round_trips(
            dpop in any::<bool>(),
            realm in prop::option::of("[ -~\t\u{e9}]{1,20}"),
            error in prop::option::of(prop::sample::select(vec![
                "invalid_request", "invalid_token", "insufficient_scope",
                "insufficient_user_authentication", "use_dpop_nonce",
            ])),
            error_description in prop::option::of("[ !#-\\[\\]-~]{1,40}"),
            error_uri in prop::option::of("[!#-\\[\\]-~]{1,40}"),
            scope in prop::option::of("[ !#-\\[\\]-~]{1,40}"),
            acr_values in prop::collection::vec(acr_strategy(), 0..4),
            max_age in prop::option::of(any::<u64>()),
            resource_metadata in prop::option::of("https://[a-z]{1,10}\\.example/[!#-\\[\\]-~]{0,20}"),
        ) {
            let b = BearerChallenge {
                scheme: if dpop { TokenScheme::DPoP } else { TokenScheme::Bearer },
                realm,
                error: error.map(ErrorCode::from),
                error_description,
                error_uri,
                scope,
                acr_values,
                max_age,
                algs: None,
                resource_metadata,
            };
            let header = b.to_string();
            let parsed = parse(&header).unwrap();
            prop_assert_eq!(parsed.len(), 1);
            prop_assert_eq!(BearerChallenge::from_challenge(&parsed[0]), Ok(b));
        }

        #[test]
        fn any_description_builds_a_parsable_header(description in any::<String>()) {
            let b = BearerChallenge {
                error: Some(ErrorCode::InsufficientUserAuthentication),
                error_description: Some(description.clone()),
                ..BearerChallenge::default()
            };
            let parsed = parse(&b.to_string()).unwrap();
            let found = find_step_up(&parsed).unwrap().unwrap();
            let sent = found.error_description.unwrap_or_default();
            prop_assert_eq!(sent.chars().count(), description.chars().count());
            prop_assert!(sent.chars().all(is_error_text_char));
        }
    }
}
