//! Reading the access token from the `Authorization` header
//! (RFC 6750 §2.1, RFC 9110 §11.6.2).
//!
//! Only the header is accepted: tokens in query strings or form bodies
//! (RFC 6750 §2.2, §2.3) leak into logs and are refused by not being read.

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// Why no bearer token could be read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationError {
    /// No `Authorization` header: RFC 6750 §3.1 says answer without an error code.
    Missing,
    /// More than one `Authorization` header.
    Multiple,
    /// Another scheme (e.g. `Basic`): not bearer authentication at all.
    OtherScheme,
    /// `Bearer` with no token, or characters outside the token68 syntax.
    Malformed,
}

impl AuthorizationError {
    /// Text for `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            AuthorizationError::Missing => "no access token",
            AuthorizationError::Multiple => "more than one Authorization header",
            AuthorizationError::OtherScheme => "the Authorization scheme must be Bearer or DPoP",
            AuthorizationError::Malformed => "malformed credentials",
        }
    }
}

/// How the token was presented: `Bearer`, or `DPoP` with a proof.
pub use stepup_core::dpop::PresentedScheme as Scheme;

/// The token of the single `Authorization: Bearer <token>` header.
#[cfg(test)]
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthorizationError> {
    match access_token(headers)? {
        (Scheme::Bearer, token) => Ok(token),
        (Scheme::Dpop, _) => Err(AuthorizationError::OtherScheme),
    }
}

/// The scheme and token of the single `Authorization` header, `Bearer` or
/// `DPoP`.
///
/// Works on bytes: a token that passes the token68 check is ASCII, so the
/// one UTF-8 conversion at the end cannot fail and no separate pass is needed.
pub fn access_token(headers: &HeaderMap) -> Result<(Scheme, &str), AuthorizationError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthorizationError::Missing)?;
    if values.next().is_some() {
        return Err(AuthorizationError::Multiple);
    }
    let value = value.as_bytes();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(space) => (&value[..space], &value[space..]),
        None => (value, &[][..]),
    };
    let scheme = if scheme.eq_ignore_ascii_case(b"bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case(b"dpop") {
        Scheme::Dpop
    } else {
        return Err(AuthorizationError::OtherScheme);
    };
    // credentials = auth-scheme [ 1*SP token68 ]
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    if !is_token68(token) {
        return Err(AuthorizationError::Malformed);
    }
    let token = std::str::from_utf8(token).map_err(|_| AuthorizationError::Malformed)?;
    Ok((scheme, token))
}

/// token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
fn is_token68(s: &[u8]) -> bool {
    let padding = s.iter().rev().take_while(|&&b| b == b'=').count();
    let body = &s[..s.len() - padding];
    // No early exit: the fold of branch-free tests vectorises, and tokens
    // are checked on every request.
    !body.is_empty() && body.iter().fold(true, |ok, &b| ok & is_token68_char(b))
}

fn is_token68_char(b: u8) -> bool {
    let lower = b | 0x20;
    (lower.wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(
            bearer_token(&headers(&[b"Bearer abc.def.ghi"])),
            Ok("abc.def.ghi")
        );
        assert_eq!(bearer_token(&headers(&[b"bearer  abc=="])), Ok("abc=="));
        assert_eq!(
            bearer_token(&headers(&[b"BEARER mF_9.B5f-4.1JqM"])),
            Ok("mF_9.B5f-4.1JqM")
        );
    }

    #[test]
    fn token68_characters_exactly() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_token68_char(b), expected, "byte {b:#04x}");
        }
        assert!(is_token68(b"a=="));
        assert!(!is_token68(b"a=b"));
        assert!(!is_token68(b"="));
        assert!(!is_token68(b""));
    }

    #[test]
    fn rejects_each_bad_shape() {
        use AuthorizationError::*;
        assert_eq!(bearer_token(&HeaderMap::new()), Err(Missing));
        assert_eq!(bearer_token(&headers(&[b"Bearer a", b"Bearer b"])), Err(Multiple));
        assert_eq!(
            bearer_token(&headers(&[b"Basic YWxhZGRpbjpvcGVuc2VzYW1l"])),
            Err(OtherScheme)
        );
        assert_eq!(bearer_token(&headers(&[b"Bearertoken"])), Err(OtherScheme));
        assert_eq!(bearer_token(&headers(&[b"Bearer"])), Err(Malformed));
        assert_eq!(bearer_token(&headers(&[b"Bearer "])), Err(Malformed));
        assert_eq!(bearer_token(&headers(&[b"Bearer a b"])), Err(Malformed));
        assert_eq!(bearer_token(&headers(&[b"Bearer a,b"])), Err(Malformed));
        assert_eq!(bearer_token(&headers(&[b"Bearer ==="])), Err(Malformed));
        assert_eq!(bearer_token(&headers(&[b"Bearer \xff"])), Err(Malformed));
    }
}
