//! Serving a router over TCP with bounds on slow, idle and numerous
//! clients.
//!
//! `axum::serve` waits as long as a client likes: a connection that sends
//! half a header section, or a body one byte a minute, holds a socket and
//! a task for ever, and nothing bounds how many are held, so a few hundred
//! such connections from one laptop take a server off the air (the
//! "slowloris" attack). [`serve`] is the same server (HTTP/1.1, and HTTP/2
//! with prior knowledge; the peer address as [`ConnectInfo`]) with the
//! bounds of [`ConnectionLimits`]:
//!
//! - a header section must arrive within `header_read_seconds`, counted
//!   from the connection's start or the end of the previous response: so
//!   this is also how long an idle keep-alive connection stays open;
//! - a body must arrive whole within `body_read_seconds` of its headers
//!   (the handler reading it sees a [`BodyTimeout`] error, which
//!   [`crate::limits::BodyReadError`] turns into `408`);
//! - at most `max_connections` are served at once; further ones wait in
//!   the listen queue until one ends.
//!
//! HTTP/2 connections are pinged (every 20 s) and closed when the peer
//! stops answering.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use pin_project_lite::pin_project;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// How long HTTP/2 connections go between pings, and wait for the answer.
const HTTP2_PING: Duration = Duration::from_secs(20);

/// The longest any one limit may be set to: an hour. Longer is a
/// misconfiguration, not a need.
const MAX_SECONDS: u64 = 3600;

/// Bounds on the clients of a server: see the [module](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Seconds a client has to send a request's header section, counted
    /// from the connection's start or the end of the previous response
    /// (so also how long an idle keep-alive connection stays open).
    pub header_read_seconds: u64,
    /// Seconds a client has to send a whole request body, from the end of
    /// its headers.
    pub body_read_seconds: u64,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_seconds: 10,
            body_read_seconds: 30,
            max_connections: 4096,
        }
    }
}

impl ConnectionLimits {
    /// What is wrong with these limits, naming the setting; `None` when
    /// they can be served with.
    pub fn problem(&self) -> Option<String> {
        for (name, seconds) in [
            ("header_read_seconds", self.header_read_seconds),
            ("body_read_seconds", self.body_read_seconds),
        ] {
            if seconds == 0 || seconds > MAX_SECONDS {
                return Some(format!(
                    "connections.{name} must be between 1 and {MAX_SECONDS} (seconds), not {seconds}"
                ));
            }
        }
        // Semaphore's own bound is far above any real need.
        if self.max_connections == 0 || self.max_connections > 1 << 20 {
            return Some(format!(
                "connections.max_connections must be between 1 and {}, not {}",
                1 << 20,
                self.max_connections
            ));
        }
        None
    }

    /// The header-read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_seconds)
    }

    /// The body-read deadline.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_secs(self.body_read_seconds)
    }
}

/// The error a request body gives when it is not all there within the
/// body-read deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {}", crate::limits::duration_text(self.limit))]
pub struct BodyTimeout {
    limit: Duration,
}

impl BodyTimeout {
    /// The deadline that passed.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

pin_project! {
    /// A request body that fails with [`BodyTimeout`] once `limit` has
    /// passed since the request's headers arrived. The timer is set at the
    /// first read, so a request without a body costs none.
    struct Deadline<B> {
        #[pin]
        body: B,
        received: Instant,
        limit: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> HttpBody for Deadline<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        // The deadline first: a client trickling bytes always has one
        // ready, and must not outrun it that way.
        let limit = *this.limit;
        let received = *this.received;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(received + limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout { limit }))));
        }
        this.body.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes; then stops accepting, and lets the requests in flight
/// finish (idle connections are closed at once). Fails only when the
/// limits are invalid.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(problem) = limits.problem() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, problem));
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_PING)
        .keep_alive_timeout(HTTP2_PING);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let body_limit = limits.body_read_timeout();
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // A free place first, then a connection to put in it: above the
        // limit, connections wait in the kernel's queue, not in memory.
        //
        // The shutdown future is polled first, always: a signal handler it
        // installs on its first poll is then in place before the first
        // connection is served (unbiased, a ready branch could keep it
        // from being polled, and a signal then kills the process).
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // closed: never, as nothing closes it
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        // Answers are small and latency matters more than packet count.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let request = request.map(|body| {
                Body::new(Deadline {
                    body,
                    received: Instant::now(),
                    limit: body_limit,
                    sleep: None,
                })
            });
            router.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // A client that goes away or is too slow: routine.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// After a failed `accept`: errors about one connection (it was reset
/// before we took it) are routine; others (out of file descriptors) last a
/// while, so wait before the next try rather than spin.
async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %error, "accepting a connection failed; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_limit_is_named() {
        assert_eq!(ConnectionLimits::default().problem(), None);
        let zero_header = ConnectionLimits {
            header_read_seconds: 0,
            ..Default::default()
        };
        assert!(zero_header.problem().unwrap().contains("header_read_seconds"));
        let long_body = ConnectionLimits {
            body_read_seconds: 7200,
            ..Default::default()
        };
        assert!(long_body.problem().unwrap().contains("body_read_seconds"));
        let no_connections = ConnectionLimits {
            max_connections: 0,
            ..Default::default()
        };
        assert!(no_connections.problem().unwrap().contains("max_connections"));
    }

    #[test]
    fn missing_limits_take_their_default_and_unknown_ones_are_refused() {
        let read: ConnectionLimits = serde_json::from_str("{\"max_connections\": 10}").unwrap();
        assert_eq!(read.max_connections, 10);
        assert_eq!(read.header_read_seconds, 10);
        assert!(serde_json::from_str::<ConnectionLimits>("{\"header_timeout\": 1}").is_err());
    }
}
