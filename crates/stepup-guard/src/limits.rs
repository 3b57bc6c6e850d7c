//! Bounds on what a request may cost.
//!
//! Headers: a request whose header section is larger than the limit is
//! answered `431 Request Header Fields Too Large` (RFC 6585 §5) before
//! anything reads it. HTTP servers accept far larger headers by default
//! (hyper: hundreds of KiB), which a protected API rarely needs and an
//! attacker can use to make every call expensive.
//!
//! Bodies: [`read_body`] reads a body whole, at most so many bytes and
//! within a deadline, and says which bound was hit ([`BodyReadError`]), so
//! the guard and the gateway answer a too-long, too-slow or cut-short body
//! the same way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// 16 KiB: several times a large DPoP proof plus a large token.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Refuses requests whose headers (names, values, and the request target)
/// exceed `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct HeaderLimitLayer {
    max_bytes: usize,
}

impl HeaderLimitLayer {
    /// A limit of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

impl Default for HeaderLimitLayer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HEADER_BYTES)
    }
}

impl<S> Layer<S> for HeaderLimitLayer {
    type Service = HeaderLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HeaderLimit {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

/// The service of [`HeaderLimitLayer`].
#[derive(Debug, Clone)]
pub struct HeaderLimit<S> {
    inner: S,
    max_bytes: usize,
}

/// The size of a request's header section as sent in HTTP/1.1: each
/// `name: value\r\n`, and the request target.
pub fn header_bytes<B>(request: &Request<B>) -> usize {
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    fields + request.uri().path_and_query().map_or(0, |p| p.as_str().len())
}

impl<S> Service<Request<Body>> for HeaderLimit<S>
where
    S: Service<Request<Body>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let size = header_bytes(&request);
        if size > self.max_bytes {
            let body = serde_json::json!({
                "error": "invalid_request",
                "error_description": format!("the request headers are larger than {} bytes", self.max_bytes),
            });
            let response = (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, axum::Json(body)).into_response();
            return LimitFuture {
                state: LimitState::Refused {
                    response: Some(response),
                },
            };
        }
        LimitFuture {
            state: LimitState::Inner {
                future: self.inner.call(request),
            },
        }
    }
}

pin_project! {
    /// The response future of [`HeaderLimit`].
    pub struct LimitFuture<F> {
        #[pin]
        state: LimitState<F>,
    }
}

pin_project! {
    #[project = LimitProj]
    enum LimitState<F> {
        // Passed on.
        Inner { #[pin] future: F },
        // Refused; the answer until taken.
        Refused { response: Option<Response> },
    }
}

impl<F, E> Future for LimitFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            LimitProj::Inner { future } => future.poll(cx),
            LimitProj::Refused { response } => match response.take() {
                Some(r) => Poll::Ready(Ok(r)),
                // Polled after completion: a caller bug; never panic in a server.
                None => Poll::Pending,
            },
        }
    }
}

/// How long a client has, by default, to send a request body the guard
/// reads whole: a body of a few KiB takes milliseconds, and a client that
/// sends one byte at a time must not hold a task and a connection for
/// ever.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request body could not be read whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyReadError {
    /// More bytes than the limit.
    #[error("the request body is longer than {0} bytes")]
    TooLong(usize),
    /// Not all there before the deadline.
    #[error("the request body did not arrive within {}", duration_text(*.0))]
    TooSlow(Duration),
    /// The connection ended, or the body was malformed, before its end.
    #[error("the request body was cut short")]
    CutShort,
}

impl BodyReadError {
    /// The status that answers it: 413, 408 or 400.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLong(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            Self::CutShort => StatusCode::BAD_REQUEST,
        }
    }

    /// What an error met while reading or forwarding a body was, looking
    /// through its causes for a length limit ([`Limited`]) or a body
    /// deadline ([`crate::serve::BodyTimeout`]); `None` when neither is
    /// there (the error is someone else's).
    pub fn cause_of(error: &(dyn std::error::Error + 'static), max_bytes: usize) -> Option<Self> {
        let mut source = Some(error);
        while let Some(e) = source {
            if e.is::<LengthLimitError>() {
                return Some(Self::TooLong(max_bytes));
            }
            if let Some(timeout) = e.downcast_ref::<crate::serve::BodyTimeout>() {
                return Some(Self::TooSlow(timeout.limit()));
            }
            source = e.source();
        }
        None
    }
}

/// A duration as an error message says it: `30 s`, or `300 ms` below a
/// second.
pub(crate) fn duration_text(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// Reads `body` whole: at most `max_bytes`, within `timeout`.
pub async fn read_body(body: Body, max_bytes: usize, timeout: Duration) -> Result<Bytes, BodyReadError> {
    match tokio::time::timeout(timeout, Limited::new(body, max_bytes).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => Err(BodyReadError::cause_of(e.as_ref(), max_bytes).unwrap_or(BodyReadError::CutShort)),
        Err(_) => Err(BodyReadError::TooSlow(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A body that sends `first`, then nothing, ever.
    struct Stalled(Option<Bytes>);

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            match self.0.take() {
                Some(first) => Poll::Ready(Some(Ok(http_body::Frame::data(first)))),
                None => Poll::Pending,
            }
        }
    }

    /// A body that sends `first`, then fails.
    struct Broken(Option<Bytes>);

    impl http_body::Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(match self.0.take() {
                Some(first) => Ok(http_body::Frame::data(first)),
                None => Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            }))
        }
    }

    #[tokio::test]
    async fn a_body_is_read_whole_within_its_bounds_or_the_bound_is_named() {
        let whole = read_body(Body::from("{\"amount\": 5}"), 64, Duration::from_secs(1)).await;
        assert_eq!(whole.unwrap(), Bytes::from_static(b"{\"amount\": 5}"));

        let long = read_body(Body::from("x".repeat(65)), 64, Duration::from_secs(1)).await;
        assert_eq!(long, Err(BodyReadError::TooLong(64)));
        assert_eq!(long.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);

        let started = std::time::Instant::now();
        let slow = read_body(
            Body::new(Stalled(Some(Bytes::from_static(b"{")))),
            64,
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(slow, Err(BodyReadError::TooSlow(Duration::from_millis(200))));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(slow.unwrap_err().status(), StatusCode::REQUEST_TIMEOUT);

        let cut = read_body(
            Body::new(Broken(Some(Bytes::from_static(b"{")))),
            64,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(cut, Err(BodyReadError::CutShort));
        assert_eq!(cut.unwrap_err().status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn large_header_sections_get_431_and_others_pass() {
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .layer(HeaderLimitLayer::new(1024));
        let small = Request::get("/").header("x-a", "b").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(small).await.unwrap().status(), StatusCode::OK);
        let big = Request::get("/")
            .header("x-padding", "a".repeat(1100))
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(big).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        // Many small headers add up.
        let mut many = Request::get("/");
        for i in 0..100 {
            many = many.header(format!("x-h{i}"), "0123456789");
        }
        let response = app.oneshot(many.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
