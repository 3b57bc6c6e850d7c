//! Serving a router over TCP with bounds on slow, idle and numerous
//! clients.
//!
//! `axum::serve` waits as long as a client likes: a connection that sends
//! half a header section, or a body one byte a minute, or nothing at all,
//! holds a socket and a task for ever, and nothing bounds how many are
//! held, so a few thousand such connections from one laptop take a server
//! off the air (the "slowloris" attack). [`serve`] is the same server
//! (HTTP/1.1, and HTTP/2 with prior knowledge; the peer address as
//! [`ConnectInfo`]) with the bounds of [`ConnectionLimits`]:
//!
//! - a connection with no request in flight is closed once it has been so
//!   for `header_read_seconds`: a client that connects and says nothing, a
//!   half-sent HTTP/2 preface, an HTTP/2 connection with no stream open, an
//!   idle keep-alive connection (and an HTTP/1 header section must arrive
//!   within that time too);
//! - a body must arrive whole within `body_read_seconds` of its headers
//!   (the handler reading it sees a [`BodyTimeout`] error, which
//!   [`crate::limits::BodyReadError`] turns into `408`);
//! - a client that takes nothing of an answer for `body_read_seconds`
//!   loses the connection: one that reads nothing from its socket, or an
//!   HTTP/2 client that never opens its flow-control window;
//! - at most `max_connections` are served at once, HTTP/2 ones with 32
//!   streams each; further connections wait in the listen queue;
//! - at shutdown, idle connections close at once and the others get
//!   `header_read_seconds + body_read_seconds` to finish.
//!
//! HTTP/2 connections are also pinged (every 20 s) and closed when the peer
//! stops answering.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
use pin_project_lite::pin_project;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// How long HTTP/2 connections go between pings, and wait for the answer.
const HTTP2_PING: Duration = Duration::from_secs(20);

/// Requests at once on one HTTP/2 connection (hyper's default is 200): the
/// connection limit then bounds requests in flight too.
const HTTP2_STREAMS: u32 = 32;

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
    /// passed since it was first read (a handler reads its body as it
    /// starts). The timer is set then, so a request without a body costs
    /// neither a timer nor a clock read.
    struct Deadline<B> {
        #[pin]
        body: B,
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
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
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

/// What one connection is doing, for its watchdog, in counters only: the
/// hot path reads no clock. The watchdog samples them every interval and
/// acts on what did not change between two samples.
#[derive(Default)]
struct Activity {
    /// Requests whose answer is not all sent yet.
    in_flight: AtomicUsize,
    /// Requests whose answer was all sent (or dropped).
    completed: AtomicU64,
    /// Answers waiting for the client to take their next part (see
    /// [`Tracked`]).
    waiting: AtomicUsize,
    /// Times hyper asked an answer for its next part: an HTTP/2 download
    /// that takes the connection's window for a while keeps its
    /// neighbours waiting, but makes progress.
    progress: AtomicU64,
}

/// What the watchdog saw at its last look.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Sample {
    /// No request in flight, and how many had completed.
    idle: Option<u64>,
    /// An answer waiting, and how much progress had been made.
    waiting: Option<u64>,
}

impl Activity {
    fn sample(&self) -> Sample {
        let idle =
            (self.in_flight.load(Ordering::Acquire) == 0).then(|| self.completed.load(Ordering::Acquire));
        let waiting =
            (self.waiting.load(Ordering::Acquire) > 0).then(|| self.progress.load(Ordering::Acquire));
        Sample { idle, waiting }
    }
}

/// A request in flight on a connection, until its answer is all sent (or
/// dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.completed.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// An answer's body, holding its request [`InFlight`] until hyper has
    /// sent it all (and drops it), and counted as waiting for the client
    /// from its start and from each part it gave until hyper asks for the
    /// next. An HTTP/2 client that never opens its flow-control window (or
    /// a socket nobody reads) makes it wait for ever, which the watchdog
    /// ends; a body waiting for its own data (events sent as they come) is
    /// not waiting for the client.
    struct Tracked<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
        waiting: bool,
    }

    impl<B> PinnedDrop for Tracked<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if *this.waiting {
                this.in_flight.0.waiting.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl<B> Tracked<B> {
    fn new(body: B, in_flight: InFlight) -> Self {
        in_flight.0.waiting.fetch_add(1, Ordering::AcqRel);
        Self {
            body,
            in_flight,
            waiting: true,
        }
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let activity = &this.in_flight.0;
        activity.progress.fetch_add(1, Ordering::AcqRel);
        if std::mem::replace(this.waiting, false) {
            activity.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        let frame = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            activity.waiting.fetch_add(1, Ordering::AcqRel);
            *this.waiting = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// A connection's socket whose writes fail once they have made no
    /// progress for `limit`: a client that stops reading its answers (a
    /// zero TCP window, pipelined requests never read) cannot hold the
    /// connection, its buffers and a shutdown for ever.
    struct WriteStall<I> {
        #[pin]
        io: I,
        limit: Duration,
        stalled: Option<Pin<Box<Sleep>>>,
    }
}

/// A write's outcome, through the stall timer: progress (or an error)
/// resets it; `Pending` starts it, and is an error once it has run for
/// `limit`.
fn through_stall<T>(
    outcome: Poll<std::io::Result<T>>,
    stalled: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<T>> {
    if outcome.is_ready() {
        *stalled = None;
        return outcome;
    }
    let sleep = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    match sleep.as_mut().poll(cx) {
        Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client read nothing of its answer for too long",
        ))),
        Poll::Pending => Poll::Pending,
    }
}

impl<I: hyper::rt::Read> hyper::rt::Read for WriteStall<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write> hyper::rt::Write for WriteStall<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        through_stall(this.io.poll_write(cx, buf), this.stalled, *this.limit, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        through_stall(this.io.poll_flush(cx), this.stalled, *this.limit, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        through_stall(this.io.poll_shutdown(cx), this.stalled, *this.limit, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        through_stall(
            this.io.poll_write_vectored(cx, bufs),
            this.stalled,
            *this.limit,
            cx,
        )
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes; then stops accepting, closes idle connections, and gives
/// requests in flight `header_read_seconds + body_read_seconds` to finish
/// before their connections are dropped. Fails only when the limits are
/// invalid.
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
        .max_concurrent_streams(HTTP2_STREAMS)
        .keep_alive_interval(HTTP2_PING)
        .keep_alive_timeout(HTTP2_PING);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut open = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // Connections that ended are reaped as others come.
        while open.try_join_next().is_some() {}
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
        let connection = serve_connection(
            Arc::clone(&builder),
            stream,
            peer,
            router.clone(),
            limits,
            stop.clone(),
        );
        open.spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    while open.join_next().await.is_some() {}
    Ok(())
}

/// One connection, watched: closed once it has been idle (no request in
/// flight) for `header_read_seconds`, whatever it speaks (HTTP/1 between
/// requests, HTTP/2 with no stream open, or nothing at all yet: the
/// server waits that long for the bytes that tell it which), and dropped
/// when a close it was asked for takes longer than the grace period.
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // A look every half of the shorter limit: a connection idle (or an
    // answer stuck) at two looks in a row, nothing done in between, has
    // been so since the first of them.
    let idle_limit = limits.header_read_timeout();
    let interval = (idle_limit.min(limits.body_read_timeout()) / 2).max(Duration::from_millis(500));
    let grace = limits.header_read_timeout() + limits.body_read_timeout();
    let body_limit = limits.body_read_timeout();
    let activity = Arc::new(Activity::default());
    let watched = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let in_flight = InFlight::start(&watched);
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = request.map(|body| {
            Body::new(Deadline {
                body,
                limit: body_limit,
                sleep: None,
            })
        });
        let answer = router.clone().oneshot(request);
        async move {
            let response = answer.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked::new(body, in_flight)))
        }
    });
    let io = WriteStall {
        io: TokioIo::new(stream),
        limit: body_limit,
        stalled: None,
    };
    let connection = builder.serve_connection(io, service);
    let mut connection = pin!(connection);
    // When a close was asked (idle, or the server stopping).
    let mut closing: Option<Instant> = None;
    // The connection counts as idle from its opening.
    let mut last = Sample {
        idle: Some(0),
        waiting: None,
    };
    let mut last_look = Instant::now();
    // Since when nothing changed: no request, or no part of a waiting
    // answer taken.
    let (mut idle_from, mut stuck_from): (Option<Instant>, Option<Instant>) = (None, None);
    loop {
        let next_look = last_look + interval;
        let wake_at = closing.map_or(next_look, |asked| (asked + grace).min(next_look));
        tokio::select! {
            biased;
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    // A client that goes away or is too slow: routine.
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(Instant::now());
            }
            () = tokio::time::sleep_until(wake_at) => {
                let now = Instant::now();
                if closing.is_some_and(|asked| asked + grace <= now) {
                    tracing::debug!(%peer, "connection dropped: it did not close in time");
                    return;
                }
                if now < next_look {
                    continue;
                }
                let seen = activity.sample();
                // Unchanged since the last look: so since then at least.
                let unchanged = |value: Option<u64>, before: Option<u64>, from: Option<Instant>| {
                    (value.is_some() && value == before).then(|| from.unwrap_or(last_look))
                };
                stuck_from = unchanged(seen.waiting, last.waiting, stuck_from);
                idle_from = unchanged(seen.idle, last.idle, idle_from);
                (last, last_look) = (seen, now);
                // An answer the client takes nothing of ends the
                // connection, whatever else it does.
                if stuck_from.is_some_and(|from| from + body_limit <= now) {
                    tracing::debug!(%peer, "connection dropped: an answer waited too long for the client");
                    return;
                }
                if closing.is_none() && idle_from.is_some_and(|from| from + idle_limit <= now) {
                    connection.as_mut().graceful_shutdown();
                    closing = Some(now);
                }
            }
        }
    }
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
