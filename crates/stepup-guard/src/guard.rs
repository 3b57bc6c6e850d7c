//! The guard: token → verified claims → policy decision → pass or challenge.
//! The one place where outcomes become HTTP responses is [`Rejection`].

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use stepup_core::challenge::{BearerChallenge, ErrorCode};
use stepup_core::{Clock, Policy, SystemClock, UnixTime};

use crate::authorization::{AuthorizationError, bearer_token};
use crate::cache::TokenCache;
use crate::verify::{TokenVerifier, VerifiedToken, VerifyError};

/// The outcome of the I/O-free part of a check.
pub(crate) enum Precheck<'h> {
    /// Settled: pass with this token, or reject.
    Done(Result<Arc<VerifiedToken>, Rejection>),
    /// The token must be verified (signature, or introspection) first.
    NeedsVerification(&'h str),
}

/// A request the guard turned away, with everything needed to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status.
    pub status: StatusCode,
    /// The challenge for `WWW-Authenticate`, when the status calls for one
    /// (boxed: rejections travel in `Result`s on the hot path).
    pub challenge: Option<Box<BearerChallenge>>,
    /// The rule that produced the rejection, when a policy rule did.
    pub rule: Option<String>,
}

impl Rejection {
    fn bearer(realm: Option<&str>, error: Option<ErrorCode>, description: Option<String>) -> Self {
        let status = error.as_ref().map_or(StatusCode::UNAUTHORIZED, |e| {
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED)
        });
        Self {
            status,
            challenge: Some(Box::new(BearerChallenge {
                realm: realm.map(str::to_owned),
                error,
                error_description: description,
                ..BearerChallenge::default()
            })),
            rule: None,
        }
    }

    /// The `WWW-Authenticate` header value, if any.
    pub fn www_authenticate(&self) -> Option<String> {
        self.challenge.as_ref().map(|c| c.to_challenge().to_string())
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        if let Some(c) = &self.challenge {
            if let Some(e) = &c.error {
                body.insert("error".into(), e.as_str().into());
            }
            if let Some(d) = &c.error_description {
                body.insert("error_description".into(), d.as_str().into());
            }
            if let Some(s) = &c.scope {
                body.insert("scope".into(), s.as_str().into());
            }
            if !c.acr_values.is_empty() {
                let values: Vec<&str> = c.acr_values.iter().map(|a| a.as_str()).collect();
                body.insert("acr_values".into(), values.join(" ").into());
            }
            if let Some(m) = c.max_age {
                body.insert("max_age".into(), m.into());
            }
        } else {
            body.insert("error".into(), "temporarily_unavailable".into());
        }
        let mut response = (self.status, axum::Json(serde_json::Value::Object(body))).into_response();
        if let Some(value) = self
            .www_authenticate()
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

pub(crate) struct GuardInner {
    pub(crate) policy: Arc<Policy>,
    pub(crate) verifier: TokenVerifier,
    pub(crate) cache: TokenCache,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) realm: Option<String>,
}

/// A configured guard: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Guard {
    pub(crate) inner: Arc<GuardInner>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("routes", &self.inner.policy.routes().len())
            .field("realm", &self.inner.realm)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard applying `policy` to tokens checked by `verifier`, with a
    /// 10,000-token verified-token cache and the system clock.
    pub fn new(policy: Arc<Policy>, verifier: TokenVerifier) -> Self {
        Self::builder(policy, verifier).build()
    }

    /// Starts a guard with options.
    pub fn builder(policy: Arc<Policy>, verifier: TokenVerifier) -> GuardBuilder {
        GuardBuilder {
            policy,
            verifier,
            cache_capacity: 10_000,
            clock: Arc::new(SystemClock),
            realm: None,
        }
    }

    /// The tower layer that applies this guard to a service.
    pub fn layer(&self) -> crate::StepUpLayer {
        crate::StepUpLayer::new(self.clone())
    }

    /// Checks a request: returns the verified token to hand to the
    /// application, or the rejection to send.
    pub async fn check(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Arc<VerifiedToken>, Rejection> {
        let token = match self.check_without_io(method, path, headers) {
            Precheck::Done(result) => return result,
            Precheck::NeedsVerification(token) => token,
        };
        let inner = &self.inner;
        let now = inner.clock.now();
        let verified = Arc::new(
            inner
                .verifier
                .verify(token, now)
                .await
                .map_err(|e| self.verify_rejection(&e))?,
        );
        let until = inner.verifier.cache_until(&verified, now);
        inner.cache.insert(token, Arc::clone(&verified), until, now);
        self.decide(method, path, verified, now)
    }

    /// Everything that can be settled without I/O: the header, and for a
    /// token already in the cache the whole decision. The layer uses this to
    /// serve trusted repeat calls without allocating a future.
    pub(crate) fn check_without_io<'h>(
        &self,
        method: &str,
        path: &str,
        headers: &'h HeaderMap,
    ) -> Precheck<'h> {
        let inner = &self.inner;
        let realm = inner.realm.as_deref();
        let token = match bearer_token(headers) {
            Ok(token) => token,
            // RFC 6750 §3.1: no error code when the request has no (bearer) credentials.
            Err(AuthorizationError::Missing | AuthorizationError::OtherScheme) => {
                return Precheck::Done(Err(Rejection::bearer(realm, None, None)));
            }
            Err(e @ (AuthorizationError::Multiple | AuthorizationError::Malformed)) => {
                let description = Some(e.description().to_owned());
                return Precheck::Done(Err(Rejection::bearer(
                    realm,
                    Some(ErrorCode::InvalidRequest),
                    description,
                )));
            }
        };
        let now = inner.clock.now();
        match inner.cache.get(token, now) {
            Some(verified) => Precheck::Done(self.decide(method, path, verified, now)),
            None => Precheck::NeedsVerification(token),
        }
    }

    fn decide(
        &self,
        method: &str,
        path: &str,
        verified: Arc<VerifiedToken>,
        now: UnixTime,
    ) -> Result<Arc<VerifiedToken>, Rejection> {
        let inner = &self.inner;
        let decision = inner
            .policy
            .decide(method, path, &verified.facts(), now)
            .map_err(|e| {
                Rejection::bearer(
                    inner.realm.as_deref(),
                    Some(ErrorCode::InvalidRequest),
                    Some(e.to_string()),
                )
            })?;
        let Some(mut challenge) = decision.challenge() else {
            return Ok(verified);
        };
        challenge.realm = inner.realm.clone();
        let status = challenge
            .error
            .as_ref()
            .and_then(|e| StatusCode::from_u16(e.status()).ok())
            .unwrap_or(StatusCode::UNAUTHORIZED);
        tracing::debug!(rule = %decision.rule.name, status = status.as_u16(), "step-up guard rejected a request");
        Err(Rejection {
            status,
            challenge: Some(Box::new(challenge)),
            rule: Some(decision.rule.name.clone()),
        })
    }

    fn verify_rejection(&self, e: &VerifyError) -> Rejection {
        if e.is_token_fault() {
            tracing::debug!(error = %e, "access token rejected");
            Rejection::bearer(
                self.inner.realm.as_deref(),
                Some(ErrorCode::InvalidToken),
                Some(e.public_description()),
            )
        } else {
            tracing::warn!(error = %e, "token verification unavailable");
            Rejection {
                status: StatusCode::SERVICE_UNAVAILABLE,
                challenge: None,
                rule: None,
            }
        }
    }
}

/// Options for a [`Guard`].
pub struct GuardBuilder {
    policy: Arc<Policy>,
    verifier: TokenVerifier,
    cache_capacity: usize,
    clock: Arc<dyn Clock>,
    realm: Option<String>,
}

impl GuardBuilder {
    /// How many verified tokens to remember (0 disables the cache).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The clock to read the time from.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The `realm` to put in challenges.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// The guard.
    pub fn build(self) -> Guard {
        Guard {
            inner: Arc::new(GuardInner {
                policy: self.policy,
                verifier: self.verifier,
                cache: TokenCache::new(self.cache_capacity),
                clock: self.clock,
                realm: self.realm,
            }),
        }
    }
}
