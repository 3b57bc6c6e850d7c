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

/// What one connection is doing, for its watchdog.
struct Activity {
    /// When the connection was accepted.
    opened: Instant,
    /// Requests whose answer is not all sent yet.
    in_flight: AtomicUsize,
    /// When the last answer was all sent, in ms after `opened`.
    last_done_ms: AtomicU64,
    /// The answers in flight: since when each has waited for the client to
    /// take its next part (see [`Tracked`]).
    answers: std::sync::Mutex<Vec<std::sync::Weak<AtomicU64>>>,
    /// When hyper last asked any answer for its next part, as a mark of
    /// [`Activity::now_mark`]: an HTTP/2 download that takes the
    /// connection's window for a while keeps its neighbours waiting, but
    /// makes progress.
    last_progress: AtomicU64,
}

/// In [`Tracked::waiting`]: the answer is not waiting on the client.
const NOT_WAITING: u64 = 0;

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            answers: std::sync::Mutex::default(),
            last_progress: AtomicU64::new(NOT_WAITING),
        })
    }

    /// Now, in ms after the opening, plus one (so that it is never
    /// [`NOT_WAITING`]).
    fn now_mark(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// A new answer's waiting mark, followed by the watchdog.
    fn follow_answer(&self) -> Arc<AtomicU64> {
        let waiting = Arc::new(AtomicU64::new(self.now_mark()));
        let mut answers = match self.answers.lock() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        answers.retain(|a| a.strong_count() > 0);
        answers.push(Arc::downgrade(&waiting));
        waiting
    }

    /// Since when the connection has made no progress while an answer
    /// waits for the client: the later of the oldest wait's start and the
    /// last part taken of any answer; `None` when no answer waits.
    fn stuck_since(&self) -> Option<Instant> {
        let oldest = self.longest_wait()?;
        let progress = self.last_progress.load(Ordering::Acquire);
        let progress = (progress != NOT_WAITING).then(|| self.opened + Duration::from_millis(progress - 1));
        Some(progress.map_or(oldest, |p| p.max(oldest)))
    }

    /// Since when the answer that has waited longest for the client has
    /// waited, if one does.
    fn longest_wait(&self) -> Option<Instant> {
        let answers = match self.answers.lock() {
            Ok(a) => a,
            Err(poisoned) => poisoned.into_inner(),
        };
        answers
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .map(|w| w.load(Ordering::Acquire))
            .filter(|mark| *mark != NOT_WAITING)
            .min()
            .map(|mark| self.opened + Duration::from_millis(mark - 1))
    }

    /// When the connection went idle: the end of the last answer, or its
    /// opening; `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| self.opened + Duration::from_millis(self.last_done_ms.load(Ordering::Acquire)))
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
        let done = u64::try_from(self.0.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_done_ms.fetch_max(done, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// An answer's body, holding its request [`InFlight`] until hyper has
    /// sent it all (and drops it), and marking since when it has waited
    /// for the client: from its start and from each part it gave, until
    /// hyper asks for the next. An HTTP/2 client that never opens its flow
    /// control window (or a socket nobody reads) makes it wait for ever,
    /// which the watchdog ends; a body waiting for its own data (events
    /// sent as they come) is not waiting for the client.
    struct Tracked<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
        waiting: Arc<AtomicU64>,
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
        this.waiting.store(NOT_WAITING, Ordering::Release);
        let activity = &this.in_flight.0;
        activity
            .last_progress
            .store(activity.now_mark(), Ordering::Release);
        let frame = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            this.waiting.store(this.in_flight.0.now_mark(), Ordering::Release);
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
    let idle_limit = limits.header_read_timeout();
    let grace = limits.header_read_timeout() + limits.body_read_timeout();
    let body_limit = limits.body_read_timeout();
    let activity = Activity::new();
    let watched = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let in_flight = InFlight::start(&watched);
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = request.map(|body| {
            Body::new(Deadline {
                body,
                received: Instant::now(),
                limit: body_limit,
                sleep: None,
            })
        });
        let answer = router.clone().oneshot(request);
        async move {
            let response = answer.await?;
            let waiting = in_flight.0.follow_answer();
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(Tracked {
                    body,
                    in_flight,
                    waiting,
                })
            }))
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
    loop {
        // An answer the client has not taken for body_read_seconds ends
        // the connection, whatever else it does.
        let stuck_at = activity.stuck_since().map(|since| since + body_limit);
        let check_at = match closing {
            Some(asked) => asked + grace,
            None => activity
                .idle_since()
                .map_or(Instant::now() + idle_limit, |since| since + idle_limit),
        };
        let check_at = stuck_at.map_or(check_at, |stuck| stuck.min(check_at));
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
            () = tokio::time::sleep_until(check_at) => match closing {
                _ if activity.stuck_since().is_some_and(|since| since + body_limit <= Instant::now()) => {
                    tracing::debug!(%peer, "connection dropped: an answer waited too long for the client");
                    return;
                }
                Some(_) => {
                    tracing::debug!(%peer, "connection dropped: it did not close in time");
                    return;
                }
                None => {
                    if activity.idle_since().is_some_and(|since| since + idle_limit <= Instant::now()) {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Instant::now());
                    }
                }
            },
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
