//! A bound on request headers: a request whose header section is larger
//! than the limit is answered `431 Request Header Fields Too Large` (RFC
//! 6585 §5) before anything reads it. HTTP servers accept far larger
//! headers by default (hyper: hundreds of KiB), which a protected API
//! rarely needs and an attacker can use to make every call expensive.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{Request, StatusCode};
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

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

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
