//! The guard's few outbound HTTP calls (JWKS, discovery, introspection):
//! HTTPS only (plain HTTP just for loopback, as in development and tests),
//! no redirects, timeouts, and a bound on response size.

use std::time::Duration;

use thiserror::Error;

/// Why an outbound call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not absolute HTTPS (or loopback HTTP).
    #[error("refusing to fetch {0}: only https URLs (or http on a loopback address) are allowed")]
    InsecureUrl(String),
    /// Connection, TLS or timeout failure.
    #[error("request to {url} failed: {source}")]
    Transport {
        /// The URL.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// A status other than 200.
    #[error("{url} answered with status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// A body larger than the limit.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// A body that is not what the protocol says.
    #[error("unexpected response: {0}")]
    BadResponse(String),
    /// No key set could be fetched yet, and the last try was too recent
    /// to try again.
    #[error("the issuer's keys are not loaded yet")]
    NotLoaded,
}

/// An HTTP client for the guard's outbound calls.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    client: reqwest::Client,
    max_body: usize,
}

impl HttpFetcher {
    /// A client with a 5 s connect and 10 s total timeout and a 1 MiB body limit.
    pub fn new() -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| FetchError::Transport {
                url: String::new(),
                source,
            })?;
        Ok(Self {
            client,
            max_body: 1 << 20,
        })
    }

    /// GETs a JSON document.
    pub async fn get_json(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        check_url(url)?;
        let request = self.client.get(url).header("accept", "application/json");
        self.send(url, request).await
    }

    /// POSTs an `application/x-www-form-urlencoded` body with HTTP Basic
    /// client authentication (RFC 6749 §2.3.1: id and secret form-encoded first).
    pub async fn post_form(
        &self,
        url: &str,
        (client_id, secret): (&str, &str),
        form: &[(&str, &str)],
    ) -> Result<Vec<u8>, FetchError> {
        check_url(url)?;
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = self
            .client
            .post(url)
            .basic_auth(form_encode(client_id), Some(form_encode(secret)))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        self.send(url, request).await
    }

    async fn send(&self, url: &str, request: reqwest::RequestBuilder) -> Result<Vec<u8>, FetchError> {
        let transport = |source| FetchError::Transport {
            url: url.to_owned(),
            source,
        };
        let mut response = request.send().await.map_err(transport)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                    limit: self.max_body,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn check_url(url: &str) -> Result<(), FetchError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::InsecureUrl(url.to_owned()))?;
    let loopback = stepup_core::resource_metadata::is_loopback(&parsed);
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(FetchError::InsecureUrl(url.to_owned())),
    }
}

/// application/x-www-form-urlencoded encoding of one name or value.
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(check_url("https://as.example/jwks").is_ok());
        assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_url("http://[::1]/jwks").is_ok());
        assert!(check_url("http://localhost/jwks").is_ok());
        assert!(check_url("http://as.example/jwks").is_err());
        assert!(check_url("file:///etc/passwd").is_err());
        assert!(check_url("jwks").is_err());
    }

    #[test]
    fn form_encoding_per_html() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
