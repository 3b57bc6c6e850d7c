//! The tower [`Layer`] and [`Service`] that put the guard in front of any
//! service, and the axum extractor handlers use to read the verified token.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{Request, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::guard::{Guard, Precheck, Rejection};
use crate::limits::read_body;
use crate::verify::VerifiedToken;

/// Applies a [`Guard`] to every request of the wrapped service.
#[derive(Debug, Clone)]
pub struct StepUpLayer {
    guard: Guard,
}

impl StepUpLayer {
    /// A layer for `guard`.
    pub fn new(guard: Guard) -> Self {
        Self { guard }
    }
}

impl<S> Layer<S> for StepUpLayer {
    type Service = StepUpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StepUpService {
            guard: self.guard.clone(),
            inner,
        }
    }
}

/// The guarded service: passes allowed requests on with a
/// [`VerifiedClaims`] extension, answers the others itself.
#[derive(Debug, Clone)]
pub struct StepUpService<S> {
    guard: Guard,
    inner: S,
}

impl<S> Service<Request<Body>> for StepUpService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if let Some(metadata) = self
            .guard
            .metadata_response(request.method(), request.uri().path())
        {
            return ResponseFuture::rejected(metadata);
        }
        // The peer, when the server was started with connect info.
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if self
            .guard
            .needs_transaction(request.method().as_str(), request.uri().path())
        {
            return self.call_with_body(request, peer);
        }
        // Trusted repeat calls and malformed headers are settled here, without I/O.
        let observed = self.guard.observe(peer, request.headers());
        let precheck = self.guard.check_without_io(
            request.method().as_str(),
            request.uri().path(),
            request.headers(),
            &observed,
        );
        match precheck {
            Precheck::Done(Ok(verified)) => {
                request.extensions_mut().insert(VerifiedClaims(verified));
                ResponseFuture::inner(self.inner.call(request))
            }
            Precheck::Done(Err(rejection)) => ResponseFuture::rejected(self.guard.respond(rejection)),
            Precheck::NeedsVerification(_) => {
                // The clone is not necessarily ready; keep the ready one for this call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let guard = self.guard.clone();
                ResponseFuture::verifying(Box::pin(async move {
                    let observed = guard.observe(peer, request.headers());
                    let checked = guard
                        .check_observed(
                            request.method().as_str(),
                            request.uri().path(),
                            request.headers(),
                            &observed,
                        )
                        .await;
                    match checked {
                        Ok(verified) => {
                            request.extensions_mut().insert(VerifiedClaims(verified));
                            inner.call(request).await
                        }
                        Err(rejection) => Ok(guard.respond(rejection)),
                    }
                }))
            }
        }
    }
}

impl<S> StepUpService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    /// A route whose risk rules read the transaction: the body is read
    /// (bounded) and handed on unchanged after the decision.
    fn call_with_body(
        &mut self,
        request: Request<Body>,
        peer: Option<std::net::IpAddr>,
    ) -> ResponseFuture<S::Future, S::Error> {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        ResponseFuture::verifying(Box::pin(async move {
            let (parts, body) = request.into_parts();
            let bytes = match read_body(body, guard.max_body_bytes(), guard.body_read_timeout()).await {
                Ok(bytes) => bytes,
                Err(e) => return Ok(guard.respond(Rejection::plain(e.status(), &e.to_string()))),
            };
            let (transaction, json) = match guard.read_body(&parts.headers, &bytes) {
                Ok(read) => read,
                Err(rejection) => return Ok(guard.respond(rejection)),
            };
            let mut observed = guard.observe(peer, &parts.headers);
            observed.transaction = transaction;
            observed.body = json;
            let checked = guard
                .check_observed(parts.method.as_str(), parts.uri.path(), &parts.headers, &observed)
                .await;
            drop(observed);
            match checked {
                Ok(verified) => {
                    let mut request = Request::from_parts(parts, Body::from(bytes));
                    request.extensions_mut().insert(VerifiedClaims(verified));
                    inner.call(request).await
                }
                Err(rejection) => Ok(guard.respond(rejection)),
            }
        }))
    }
}

pin_project! {
    /// The response future of [`StepUpService`].
    pub struct ResponseFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        // Allowed without I/O: the wrapped service's own future.
        Inner { #[pin] future: F },
        // The token is being verified (signature or introspection) first.
        Verifying { future: Pin<Box<dyn Future<Output = Result<Response, E>> + Send>> },
        // Rejected without I/O; the answer until it is taken.
        Rejected { response: Option<Response> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    fn verifying(future: Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>) -> Self {
        Self {
            state: State::Verifying { future },
        }
    }

    fn rejected(response: Response) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
            StateProj::Verifying { future } => future.as_mut().poll(cx),
            StateProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                // Polled again after completion: a caller bug; never panic in a server.
                None => Poll::Pending,
            },
        }
    }
}

impl<F, E> std::fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Inner { .. } => "Inner",
            State::Verifying { .. } => "Verifying",
            State::Rejected { .. } => "Rejected",
        };
        f.debug_tuple("ResponseFuture").field(&state).finish()
    }
}

/// The verified token of the current request, for handlers behind a
/// [`StepUpLayer`].
#[derive(Debug, Clone)]
pub struct VerifiedClaims(pub Arc<VerifiedToken>);

impl std::ops::Deref for VerifiedClaims {
    type Target = VerifiedToken;
    fn deref(&self) -> &VerifiedToken {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedClaims {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<VerifiedClaims>().cloned().ok_or_else(|| {
            // A handler asking for claims without the layer in front of it is
            // a wiring mistake: fail closed, loudly, without detail to the client.
            tracing::error!("VerifiedClaims extracted on a route without StepUpLayer");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        })
    }
}
