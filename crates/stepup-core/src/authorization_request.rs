//! The parts of an authorization request (RFC 6749 §4.1.1, OpenID Connect
//! Core §3.1.2.1) that can be read without a database: the parameters
//! themselves, the `claims` parameter's essential `acr`, and the match of a
//! requested redirect URI against a registered one. Untrusted input all of
//! it: fuzzed (`fuzz/fuzz_targets/authorization_request.rs`).

use std::collections::HashMap;

use serde_json::Value;
use thiserror::Error;

use crate::limits;

/// Why a query string or form body is refused: `invalid_request` (RFC
/// 6749 §4.1.2.1, §5.2), before anything in it is stored or echoed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParamError {
    /// A name or value with NUL (PostgreSQL refuses it in text).
    #[error("parameters may not contain NUL")]
    Nul,
    /// A parameter sent twice (RFC 6749 §3.1).
    #[error("parameter {0} is repeated")]
    Repeated(String),
    /// More than [`limits::MAX_PARAMS`] parameters.
    #[error("more than {} parameters", limits::MAX_PARAMS)]
    TooMany,
    /// A name longer than [`limits::MAX_PARAM_NAME_BYTES`] (not echoed).
    #[error("a parameter name is longer than {} bytes", limits::MAX_PARAM_NAME_BYTES)]
    NameTooLong,
    /// A value longer than its bound in [`limits::PARAM_BYTES`].
    #[error("parameter {name} is longer than {max} bytes")]
    TooLong {
        /// The parameter.
        name: String,
        /// Its bound.
        max: usize,
    },
}

/// The parameters of a query string or form body: each at most once (RFC
/// 6749 §3.1), empty ones dropped (as if absent), NUL refused, and each
/// within its bound (the table in [`limits`]).
pub fn params_from(raw: &[u8]) -> Result<HashMap<String, String>, ParamError> {
    let mut params = HashMap::new();
    for (count, (name, value)) in url::form_urlencoded::parse(raw).enumerate() {
        if count >= limits::MAX_PARAMS {
            return Err(ParamError::TooMany);
        }
        if name.len() > limits::MAX_PARAM_NAME_BYTES {
            return Err(ParamError::NameTooLong);
        }
        // NUL has no place in any parameter, and PostgreSQL refuses it in text.
        if name.contains('\0') || value.contains('\0') {
            return Err(ParamError::Nul);
        }
        let max = limits::max_param_bytes(&name);
        if value.len() > max {
            return Err(ParamError::TooLong {
                name: name.into_owned(),
                max,
            });
        }
        if value.is_empty() {
            continue;
        }
        if params.insert(name.to_string(), value.into_owned()).is_some() {
            return Err(ParamError::Repeated(name.into_owned()));
        }
    }
    Ok(params)
}

/// Whether a requested redirect URI is a registered one: the same string,
/// or, for a native app (public client) registered with an `http` loopback
/// IP literal, the same URI on another port (RFC 8252 §7.3: the app listens
/// on whatever port the system gives it). `localhost` does not get this
/// leeway (RFC 8252 §8.3: it may resolve elsewhere).
pub fn redirect_uri_matches(registered: &str, requested: &str, native: bool) -> bool {
    if registered == requested {
        return true;
    }
    if !native {
        return false;
    }
    let (Ok(mut registered), Ok(mut requested)) = (url::Url::parse(registered), url::Url::parse(requested))
    else {
        return false;
    };
    let loopback = |u: &url::Url| {
        let ip = match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        };
        u.scheme() == "http" && ip
    };
    if !(loopback(&registered) && loopback(&requested)) {
        return false;
    }
    // Compare the rest exactly, with the ports taken out.
    if registered.set_port(None).is_err() || requested.set_port(None).is_err() {
        return false;
    }
    registered.as_str() == requested.as_str()
}

/// Levels named by an essential `acr` claim in the `claims` parameter
/// (OpenID Connect Core §5.5.1.1).
pub fn essential_acr(claims: &str) -> Result<Vec<String>, String> {
    let v: Value = serde_json::from_str(claims).map_err(|e| format!("claims is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("claims must be a JSON object".into());
    }
    let mut out = Vec::new();
    for member in ["id_token", "userinfo"] {
        let Some(acr) = v.get(member).and_then(|m| m.get("acr")) else {
            continue;
        };
        if acr.is_null() {
            continue;
        }
        if acr.get("essential").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        if let Some(value) = acr.get("value").and_then(Value::as_str) {
            out.push(value.to_owned());
        }
        if let Some(values) = acr.get("values").and_then(Value::as_array) {
            out.extend(values.iter().filter_map(Value::as_str).map(str::to_owned));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn essential_acr_claims() {
        let v = essential_acr(r#"{"id_token":{"acr":{"essential":true,"values":["mfa","phr"]}}}"#).unwrap();
        assert_eq!(v, ["mfa", "phr"]);
        let v = essential_acr(r#"{"userinfo":{"acr":{"essential":true,"value":"mfa"}}}"#).unwrap();
        assert_eq!(v, ["mfa"]);
        // Voluntary claims are hints, not requirements.
        assert!(
            essential_acr(r#"{"id_token":{"acr":{"values":["mfa"]}}}"#)
                .unwrap()
                .is_empty()
        );
        assert!(essential_acr(r#"{"id_token":{"acr":null}}"#).unwrap().is_empty());
        assert!(essential_acr("[1]").is_err());
        assert!(essential_acr("{").is_err());
    }

    #[test]
    fn loopback_redirects_of_native_apps_may_change_port() {
        let registered = "http://127.0.0.1/callback";
        assert!(redirect_uri_matches(
            registered,
            "http://127.0.0.1:51234/callback",
            true
        ));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:8000/callback",
            "http://127.0.0.1:51234/callback",
            true
        ));
        assert!(redirect_uri_matches(
            "http://[::1]/cb",
            "http://[::1]:4000/cb",
            true
        ));
        // Only the port: not the path, query, host, scheme, or user info.
        for other in [
            "http://127.0.0.1:51234/callback/x",
            "http://127.0.0.1:51234/callback?x=1",
            "http://127.0.0.2:51234/callback",
            "http://localhost:51234/callback",
            "https://127.0.0.1:51234/callback",
            "http://user@127.0.0.1:51234/callback",
            "http://[::1]:51234/callback",
        ] {
            assert!(!redirect_uri_matches(registered, other, true), "{other}");
        }
        // Confidential clients, localhost, and other hosts: exact match only.
        assert!(!redirect_uri_matches(
            registered,
            "http://127.0.0.1:51234/callback",
            false
        ));
        assert!(!redirect_uri_matches(
            "http://localhost/cb",
            "http://localhost:1234/cb",
            true
        ));
        assert!(!redirect_uri_matches(
            "https://app.example/cb",
            "https://app.example:444/cb",
            true
        ));
        assert!(redirect_uri_matches(
            "https://app.example/cb",
            "https://app.example/cb",
            false
        ));
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(params_from(b"a=1&a=2").is_err());
        assert_eq!(params_from(b"a=1&b=&c=%20").unwrap().len(), 2);
    }

    #[test]
    fn parameters_are_bounded() {
        let at = |name: &str, len: usize| format!("{name}={}", "x".repeat(len));
        assert!(params_from(at("state", 512).as_bytes()).is_ok());
        assert_eq!(
            params_from(at("state", 513).as_bytes()),
            Err(ParamError::TooLong {
                name: "state".into(),
                max: 512
            })
        );
        assert!(params_from(at("login_hint", 257).as_bytes()).is_err());
        // Bounded after decoding: %41 is one byte.
        assert!(params_from(format!("state={}", "%41".repeat(512)).as_bytes()).is_ok());
        // Unknown parameters too, and their names, and how many.
        assert!(params_from(at("ui_locales", limits::DEFAULT_PARAM_BYTES + 1).as_bytes()).is_err());
        assert_eq!(
            params_from(at(&"n".repeat(65), 1).as_bytes()),
            Err(ParamError::NameTooLong)
        );
        let many: Vec<String> = (0..=limits::MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert_eq!(params_from(many.join("&").as_bytes()), Err(ParamError::TooMany));
        // Empty values count towards the number of parameters.
        let empty: Vec<String> = (0..=limits::MAX_PARAMS).map(|i| format!("p{i}=")).collect();
        assert_eq!(params_from(empty.join("&").as_bytes()), Err(ParamError::TooMany));
    }
}
