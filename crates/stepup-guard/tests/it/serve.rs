//! `stepup_guard::serve`: slow, idle and numerous clients are bounded.
//! Each test talks raw TCP, as an attacker would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use stepup_benchkit::read_until_closed;
use stepup_guard::limits::read_body;
use stepup_guard::serve::{ConnectionLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn app() -> Router {
    Router::new()
        .route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { format!("hello {}", peer.ip()) }),
        )
        // 64 KiB, for clients that do not read their answers.
        .route("/large", get(|| async { "x".repeat(64 * 1024) }))
        // Waits for the body as long as the connection lets it: only the
        // server's deadline can end the wait.
        .route(
            "/upload",
            post(|body: Body| async move {
                match read_body(body, 1 << 20, Duration::from_secs(3600)).await {
                    Ok(bytes) => (http::StatusCode::OK, format!("{} bytes", bytes.len())),
                    Err(e) => (e.status(), e.to_string()),
                }
            }),
        )
}

/// A server with `limits` on a free port; it stops with the test.
async fn start(limits: ConnectionLimits) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        serve(listener, app(), limits, std::future::pending())
            .await
            .unwrap()
    });
    addr
}

fn short() -> ConnectionLimits {
    ConnectionLimits {
        header_read_seconds: 1,
        body_read_seconds: 1,
        ..ConnectionLimits::default()
    }
}

#[tokio::test]
async fn half_a_header_section_does_not_hold_a_connection() {
    let addr = start(short()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "a half-sent header section kept its connection open");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let addr = start(short()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The peer address reaches handlers.
    assert!(answer.ends_with("hello 127.0.0.1"), "{answer}");
    assert!(closed, "an idle connection was kept open");
}

#[tokio::test]
async fn a_trickled_body_is_refused_at_its_deadline() {
    let addr = start(short()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One byte every 200 ms: never idle long, never done.
    let trickle = async {
        for _ in 0..100 {
            if stream.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), trickle).await;
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.ends_with("the request body did not arrive within 1 s"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_body_sent_in_time_is_read_whole() {
    let addr = start(short()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("5 bytes"), "{answer}");
    assert!(closed);
}

#[tokio::test]
async fn connections_above_the_limit_wait_for_a_free_place() {
    let addr = start(ConnectionLimits {
        max_connections: 1,
        ..ConnectionLimits::default()
    })
    .await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = first.read(&mut buffer).await.unwrap();
    assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
    // The first connection is kept alive: the second waits.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buffer)).await;
    assert!(waited.is_err(), "a second connection was served above the limit");
    drop(first);
    let (answer, _) = read_until_closed(&mut second, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_client_that_says_nothing_does_not_hold_a_connection() {
    // Before its first bytes the server cannot tell HTTP/1 from HTTP/2:
    // silence, or half of the HTTP/2 preface, must be bounded all the same.
    let addr = start(ConnectionLimits {
        max_connections: 1,
        ..short()
    })
    .await;
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(closed, "{opening:?} kept its connection");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
    // The only place is free again.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn an_http2_connection_with_no_stream_open_is_closed() {
    let addr = start(short()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The preface and an empty SETTINGS frame: a live HTTP/2 connection,
    // which then opens nothing.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(6)).await;
    assert!(closed, "an idle HTTP/2 connection was kept");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A client that asks for large answers and reads none of them.
async fn non_reader(addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let requests = "GET /large HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    stream.write_all(requests.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_client_that_reads_nothing_loses_its_connection() {
    let addr = start(ConnectionLimits {
        max_connections: 1,
        ..short()
    })
    .await;
    let _stuck = non_reader(addr).await;
    // The only place comes free: the stuck writes fail after 1 s.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// An HTTP/2 frame: its header (length, type, flags, stream) and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![length[1], length[2], length[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn an_http2_client_that_never_opens_its_window_loses_the_connection() {
    let addr = start(ConnectionLimits {
        max_connections: 1,
        ..short()
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: INITIAL_WINDOW_SIZE (4) = 0: no answer can send a byte.
    opening.extend(frame(4, 0, 0, &[0, 4, 0, 0, 0, 0]));
    // Streams asking for GET /large (HPACK: :method GET, :scheme http,
    // :path and :authority as literals), END_STREAM | END_HEADERS.
    let mut headers = vec![0x82, 0x86, 0x04, 6];
    headers.extend_from_slice(b"/large");
    headers.extend_from_slice(&[0x01, 1, b'x']);
    for id in [1, 3, 5] {
        opening.extend(frame(1, 0x5, id, &headers));
    }
    stream.write_all(&opening).await.unwrap();
    // The answers wait for a window that never opens; the connection is
    // dropped after body_read_seconds, and its place comes free.
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    assert!(closed, "a zero-window HTTP/2 client kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn shutdown_is_not_held_by_a_client() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, app(), short(), async move {
        let _ = stopped.await;
    }));
    let _stuck = non_reader(addr).await;
    // And one that trickles a body.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\na")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(8), served).await;
    assert!(ended.is_ok(), "the server did not stop");
    // Within the grace period (header_read_seconds + body_read_seconds).
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn bad_limits_are_refused_by_name() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let limits = ConnectionLimits {
        body_read_seconds: 0,
        ..ConnectionLimits::default()
    };
    let error = serve(listener, app(), limits, std::future::pending())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("body_read_seconds"), "{error}");
}
