//! Browser session and pending-request cookies.
//!
//! The session cookie carries 256 random bits; the database keeps only their
//! SHA-256, so a database leak yields no usable session. Cookies are
//! HttpOnly, SameSite=Lax (the authorization request arrives by top-level
//! navigation from the client's site) and Secure when the issuer is https.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use ring::digest::{SHA256, digest};
use ring::rand::SecureRandom;

/// The session cookie's name: with an https issuer the `__Host-` prefix
/// makes browsers refuse the cookie unless it is Secure, host-only and for
/// `/`, so a sibling subdomain or a plain-http page cannot plant one.
pub(crate) fn session_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-stepup_session"
    } else {
        "stepup_session"
    }
}

/// The cookie binding one pending authorization request to the browser that
/// started it: one per request, so sign-ins in two tabs do not collide.
pub(crate) fn pending_cookie_name(secure: bool, request_id: &str) -> String {
    let prefix = if secure { "__Host-" } else { "" };
    format!("{prefix}stepup_pending_{request_id}")
}

/// A cookie value from the request.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The stored id of a cookie secret.
pub(crate) fn secret_id(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, secret.as_bytes()))
}

/// A new random secret (256 bits, base64url).
pub(crate) fn new_secret(rng: &dyn SecureRandom) -> Option<String> {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// A `Set-Cookie` value. `max_age` 0 deletes the cookie.
pub(crate) fn set_cookie(name: &str, value: &str, secure: bool, max_age: i64) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("a=1; stepup_session_x=2; stepup_session=abc"),
        );
        assert_eq!(cookie(&h, session_cookie_name(false)), Some("abc"));
        assert_eq!(session_cookie_name(true), "__Host-stepup_session");
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn set_cookie_attributes() {
        assert_eq!(
            set_cookie("n", "v", true, 60),
            "n=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        assert!(!set_cookie("n", "v", false, 0).contains("Secure"));
    }
}
