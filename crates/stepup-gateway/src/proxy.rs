//! Forwarding an allowed request to its upstream, and the answer back.
//!
//! Bodies stream in both directions; nothing is buffered here (the guard
//! buffers the body only on routes whose risk rules read an amount).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stepup_guard::VerifiedClaims;
use stepup_guard::client_ip::{ForwardedHeader, IpNet};
use stepup_guard::limits::{BodyReadError, read_body};

use crate::config::{GatewayConfig, Upstream, select_upstream};
use crate::metrics::Metrics;

/// The identity headers the gateway sets; any header of the client whose
/// name starts with `x-stepup-` is dropped first, so the upstream can
/// believe them.
pub const SUBJECT: HeaderName = HeaderName::from_static("x-stepup-subject");
/// The `acr` of the token.
pub const ACR: HeaderName = HeaderName::from_static("x-stepup-acr");
/// The `auth_time` of the token (epoch seconds).
pub const AUTH_TIME: HeaderName = HeaderName::from_static("x-stepup-auth-time");
/// The `scope` of the token.
pub const SCOPE: HeaderName = HeaderName::from_static("x-stepup-scope");
/// The thumbprint of the key the token is bound to (`cnf.jkt`), sent only
/// for DPoP-bound tokens, whose proof of possession the guard checked.
pub const DPOP_JKT: HeaderName = HeaderName::from_static("x-stepup-dpop-jkt");

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The upstream a request goes to ([`Proxy::choose`]), and the host it was
/// chosen by.
#[derive(Debug, Clone)]
pub(crate) struct Chosen {
    index: Option<usize>,
    host: Option<HeaderValue>,
}

/// When the request arrived, set by the gateway before the guard runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrived(pub Instant);

/// Set on every response the upstream produced (or failed to): the guard
/// let the request through.
#[derive(Debug, Clone)]
pub(crate) struct Forwarded {
    /// The gateway itself answered (502, 504, 413), not the upstream.
    pub failed: bool,
    /// The subject of the token, for the access log.
    pub subject: Option<String>,
}

type UpstreamBody = Limited<Body>;

/// Bodies up to this size are kept while sent to an upstream with several
/// instances, so that a request an instance could not take can go to the
/// next; longer bodies stream, and are not sent twice.
const REPLAYABLE_BODY_BYTES: u64 = 64 * 1024;

/// All bodies kept for a second attempt at once, in KiB (64 MiB): past
/// it, bodies stream and are not sent twice.
const REPLAY_BUDGET_KIB: usize = 64 * 1024;

/// The longest an instance that could not be reached is left out.
const MAX_DOWN: Duration = Duration::from_secs(30);

/// One instance of an upstream.
struct Instance {
    scheme: Scheme,
    authority: Authority,
    /// Left out until this many milliseconds after the proxy started (0:
    /// in service).
    down_until_ms: AtomicU64,
    /// Failures in a row, for the backoff.
    failures: AtomicU32,
}

struct Target {
    instances: Vec<Instance>,
    /// Where the next request starts looking (round robin).
    next: AtomicUsize,
    timeout: Duration,
    public: bool,
}

impl Target {
    /// The instances in the order to try them for one request: the one
    /// whose turn it is first, then the others; those left out go last,
    /// the soonest back first, so that something is always tried.
    fn order(&self, now_ms: u64) -> Vec<usize> {
        let n = self.instances.len();
        let start = if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        let mut order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        // Stable: in-service instances keep their turn order.
        order.sort_by_key(|&i| {
            let until = self.instances[i].down_until_ms.load(Ordering::Relaxed);
            if until <= now_ms { 0 } else { until }
        });
        order
    }
}

impl Instance {
    fn failed(&self, now_ms: u64) -> Duration {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(5);
        let down = Duration::from_secs(1 << failures).min(MAX_DOWN);
        self.down_until_ms.store(
            now_ms + u64::try_from(down.as_millis()).unwrap_or(u64::MAX / 2),
            Ordering::Relaxed,
        );
        down
    }

    fn answered(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.down_until_ms.store(0, Ordering::Relaxed);
        }
    }
}

/// What forwards allowed requests: the upstream table and a pooled client.
pub(crate) struct Proxy {
    /// In the configuration's order, for [`select_upstream`].
    upstreams: Vec<Upstream>,
    targets: Vec<Target>,
    client: Client<HttpConnector, UpstreamBody>,
    forward_token: bool,
    max_body_bytes: u64,
    /// How long a body kept for a second attempt may take to arrive.
    body_read_timeout: Duration,
    trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies write; the other one is a client's.
    forwarded_header: ForwardedHeader,
    started: Instant,
    /// KiB of bodies kept for retries ([`REPLAY_BUDGET_KIB`]).
    replay_budget: tokio::sync::Semaphore,
    /// Signs the identity forwarded, when `[identity]` is configured.
    identity: Option<crate::identity::IdentitySigner>,
}

/// How one attempt at one instance went.
enum Attempt {
    Answered(Response<hyper::body::Incoming>),
    /// Not connected: the instance never saw the request.
    NotConnected(hyper_util::client::legacy::Error),
    /// Sent, but no answer came (the instance may have acted on it).
    Failed(hyper_util::client::legacy::Error),
    TimedOut,
}

impl Proxy {
    /// The identity signer's public key (a JWK Set), if it signs.
    pub(crate) fn identity_jwks(&self) -> Option<&serde_json::Value> {
        self.identity.as_ref().map(crate::identity::IdentitySigner::jwks)
    }

    pub(crate) fn new(config: &GatewayConfig) -> Result<Self, String> {
        let mut targets = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let mut instances = Vec::new();
            for url in u.instances() {
                let uri: Uri = url.parse().map_err(|e| format!("upstream url {url:?}: {e}"))?;
                let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
                else {
                    return Err(format!("upstream url {url:?} has no scheme or host"));
                };
                instances.push(Instance {
                    scheme,
                    authority,
                    down_until_ms: AtomicU64::new(0),
                    failures: AtomicU32::new(0),
                });
            }
            targets.push(Target {
                instances,
                next: AtomicUsize::new(0),
                timeout: Duration::from_secs(u.timeout_seconds),
                public: u.public,
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(connector);
        let trusted_proxies = config
            .trusted_proxies
            .iter()
            .map(|p| p.parse::<IpNet>().map_err(|e| format!("trusted_proxies: {e}")))
            .collect::<Result<_, _>>()?;
        let identity = match &config.identity {
            Some(i) => Some(crate::identity::IdentitySigner::load(
                &i.key_file,
                &config.audience,
                i.seconds,
            )?),
            None => None,
        };
        Ok(Self {
            identity,
            upstreams: config.upstreams.clone(),
            targets,
            client,
            forward_token: config.forward_token,
            max_body_bytes: config.max_body_bytes,
            body_read_timeout: config.connections.body_read_timeout(),
            trusted_proxies,
            forwarded_header: config.forwarded_header,
            started: Instant::now(),
            replay_budget: tokio::sync::Semaphore::new(REPLAY_BUDGET_KIB),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX / 2)
    }

    /// The upstream a request goes to, chosen once, before the guard, and
    /// carried to [`Proxy::forward`] (as [`Chosen`]): the guard's verdict
    /// and the forwarding must be about the same upstream. The host is the
    /// `Host` header or the request target's authority (absolute form,
    /// HTTP/2 `:authority`); a request whose `Host` is not text, or names
    /// another authority than its target, is refused: two readings of the
    /// host would let a request be judged for one upstream and sent to
    /// another.
    pub(crate) fn choose<B>(&self, request: &Request<B>) -> Result<Chosen, &'static str> {
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(_), Some(_)) => return Err("several Host headers"),
            (Some(value), None) => Some(value.to_str().map_err(|_| "the Host header is not text")?),
            (None, _) => None,
        };
        let authority = request.uri().authority().map(Authority::as_str);
        if let (Some(host), Some(authority)) = (host, authority)
            && !host.eq_ignore_ascii_case(authority)
        {
            return Err("the Host header names another authority than the request target");
        }
        let host = host.or(authority);
        let index = select_upstream(&self.upstreams, host, request.uri().path());
        Ok(Chosen {
            index,
            host: host.and_then(|h| HeaderValue::from_str(h).ok()),
        })
    }

    /// Whether the chosen upstream is public (no guard).
    pub(crate) fn is_public(&self, chosen: &Chosen) -> bool {
        chosen
            .index
            .and_then(|i| self.targets.get(i))
            .is_some_and(|t| t.public)
    }

    /// Sends `request` (already allowed by the guard, or bound for a public
    /// upstream) to its upstream, to the next instance if one cannot be
    /// reached.
    pub(crate) async fn forward(&self, request: Request<Body>, metrics: &Metrics) -> Response {
        let (mut parts, body) = request.into_parts();
        let subject = parts
            .extensions
            .get::<VerifiedClaims>()
            .and_then(|c| c.subject.clone());
        let forwarded = |failed: bool, response: Response| {
            let mut response = response;
            response.extensions_mut().insert(Forwarded {
                failed,
                subject: subject.clone(),
            });
            response
        };
        let chosen = parts.extensions.remove::<Chosen>();
        let host = chosen.as_ref().and_then(|c| c.host.clone());
        let Some(target) = chosen.and_then(|c| c.index).and_then(|i| self.targets.get(i)) else {
            return forwarded(
                true,
                failure(StatusCode::NOT_FOUND, "not_found", "no upstream serves this path"),
            );
        };
        // A body too long, too slow or cut short: the client's fault,
        // answered as the guard answers it.
        let body_failed = |e: BodyReadError| {
            let e = match e {
                BodyReadError::TooLong(_) => BodyReadError::TooLong(self.max_body_bytes as usize),
                e => e,
            };
            forwarded(true, failure(e.status(), "invalid_request", &e.to_string()))
        };
        let length = content_length(&parts.headers);
        if length.is_some_and(|length| length > self.max_body_bytes) {
            return body_failed(BodyReadError::TooLong(0));
        }
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let claims = parts.extensions.get::<VerifiedClaims>();
        // Whether there is a body, read before the hop-by-hop headers
        // (Transfer-Encoding among them) go: HTTP/1.1 says so in its
        // headers, HTTP/2 by ending the stream.
        let bodiless = length == Some(0)
            || (length.is_none()
                && !parts.headers.contains_key(header::TRANSFER_ENCODING)
                && axum::body::HttpBody::size_hint(&body).exact() == Some(0));
        self.rewrite_headers(&mut parts.headers, host, peer, target.public);
        let signed = match (&self.identity, claims) {
            (Some(signer), Some(claims)) => {
                let now = i64::try_from(crate::unix_now()).unwrap_or(i64::MAX);
                signer
                    .sign(&claims.0, parts.method.as_str(), path_and_query.as_str(), now)
                    .and_then(|jws| {
                        HeaderValue::from_str(&jws).map_err(|_| "the signed identity is not a header value")
                    })
                    .map(Some)
            }
            _ => Ok(None),
        };
        let identity = set_identity(&mut parts.headers, claims).and(signed);
        match identity {
            Ok(Some(jws)) => {
                parts.headers.insert(crate::identity::IDENTITY, jws);
            }
            Ok(None) => {}
            Err(message) => {
                return forwarded(
                    true,
                    failure(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message),
                );
            }
        }
        // A body that can be sent again: none, or a short one kept whole,
        // within a budget shared by all requests (bodies of public upstreams
        // are read before anyone is authenticated) and a time limit.
        let mut streamed = Some(body);
        let mut _buffered: Option<tokio::sync::SemaphorePermit<'_>> = None;
        let replay: Option<bytes::Bytes> = if target.instances.len() < 2 {
            None
        } else if bodiless {
            Some(bytes::Bytes::new())
        } else if let Some(permit) = length.filter(|l| *l <= REPLAYABLE_BODY_BYTES).and_then(|l| {
            self.replay_budget
                .try_acquire_many(l.div_ceil(1024).max(1) as u32)
                .ok()
        }) {
            _buffered = Some(permit);
            let body = streamed.take().unwrap_or_default();
            match read_body(body, REPLAYABLE_BODY_BYTES as usize, self.body_read_timeout).await {
                Ok(bytes) => Some(bytes),
                Err(e) => return body_failed(e),
            }
        } else {
            None
        };
        // Set when a streamed body of the client fails; made only for a
        // request with a body (a trusted GET allocates nothing for it).
        let client_failed = (!bodiless).then(|| Arc::new(AtomicBool::new(false)));
        let idempotent = matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
        );

        // One instance (the usual case) costs no allocation here.
        let turns = if target.instances.len() > 1 {
            target.order(self.now_ms())
        } else {
            Vec::new()
        };
        let order: &[usize] = if turns.is_empty() { &[0] } else { &turns };
        let mut last = None;
        for (tried, &index) in order.iter().enumerate() {
            let more = tried + 1 < order.len() && replay.is_some();
            let instance = &target.instances[index];
            let body = match (&replay, streamed.take()) {
                // Watched: when it fails, the client's side failed, not the
                // upstream instance.
                (_, Some(body)) if let Some(failed) = &client_failed => Body::new(ClientBody {
                    body,
                    failed: Arc::clone(failed),
                }),
                (_, Some(body)) => body,
                (Some(bytes), None) => Body::from(bytes.clone()),
                // A streamed body went to the instance tried before.
                (None, None) => break,
            };
            let Ok(uri) = Uri::builder()
                .scheme(instance.scheme.clone())
                .authority(instance.authority.clone())
                .path_and_query(path_and_query.clone())
                .build()
            else {
                return forwarded(
                    true,
                    failure(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "the request target is malformed",
                    ),
                );
            };
            let mut upstream_request = Request::new(Limited::new(body, self.max_body_bytes as usize));
            *upstream_request.method_mut() = parts.method.clone();
            *upstream_request.uri_mut() = uri;
            // Upstreams are spoken to in HTTP/1.1, whatever the client spoke.
            *upstream_request.version_mut() = Version::HTTP_11;
            // Copied only while another attempt may need them.
            *upstream_request.headers_mut() = if more {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };

            let sent = Instant::now();
            let attempt =
                match tokio::time::timeout(target.timeout, self.client.request(upstream_request)).await {
                    Ok(Ok(response)) => Attempt::Answered(response),
                    Ok(Err(e)) if e.is_connect() => Attempt::NotConnected(e),
                    Ok(Err(e)) => Attempt::Failed(e),
                    Err(_) => Attempt::TimedOut,
                };
            metrics.upstream_latency.observe(sent.elapsed());
            // The client's body failed (too long, too slow, cut short),
            // not the upstream: the instance is not to blame.
            if let Attempt::Failed(e) = &attempt {
                if let Some(e) = BodyReadError::cause_of(e, self.max_body_bytes as usize) {
                    return body_failed(e);
                }
                if client_failed.as_ref().is_some_and(|f| f.load(Ordering::Acquire)) {
                    return body_failed(BodyReadError::CutShort);
                }
            }
            match attempt {
                Attempt::Answered(response) => {
                    instance.answered();
                    let (mut parts, body) = response.into_parts();
                    remove_hop_by_hop(&mut parts.headers);
                    return forwarded(
                        false,
                        Response::from_parts(parts, Body::new(body.map_err(axum::Error::new))),
                    );
                }
                Attempt::NotConnected(e) => {
                    let down = instance.failed(self.now_ms());
                    tracing::warn!(upstream = %instance.authority, error = %error_chain(&e), left_out_for = ?down, "upstream instance unreachable");
                    if more {
                        metrics.count_retry();
                        continue;
                    }
                    last = Some(StatusCode::BAD_GATEWAY);
                    break;
                }
                Attempt::Failed(e) => {
                    let down = instance.failed(self.now_ms());
                    tracing::warn!(upstream = %instance.authority, error = %error_chain(&e), left_out_for = ?down, "upstream request failed");
                    // The instance may have acted on it: only a request
                    // that means the same when repeated goes on.
                    if more && idempotent {
                        metrics.count_retry();
                        continue;
                    }
                    last = Some(StatusCode::BAD_GATEWAY);
                    break;
                }
                Attempt::TimedOut => {
                    tracing::warn!(upstream = %instance.authority, timeout = ?target.timeout, "upstream timed out");
                    last = Some(StatusCode::GATEWAY_TIMEOUT);
                    break;
                }
            }
        }
        let response = if last == Some(StatusCode::GATEWAY_TIMEOUT) {
            failure(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                &format!(
                    "the upstream did not answer within {} s",
                    target.timeout.as_secs()
                ),
            )
        } else {
            failure(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream could not be reached",
            )
        };
        forwarded(true, response)
    }

    /// The headers the upstream sees: no hop-by-hop headers, no
    /// client-sent `x-stepup-*`, the verified identity, the forwarding
    /// chain, and the token only when configured.
    fn rewrite_headers(
        &self,
        headers: &mut HeaderMap,
        host: Option<HeaderValue>,
        peer: Option<IpAddr>,
        public: bool,
    ) {
        remove_hop_by_hop(headers);
        let trusted_peer = peer.is_some_and(|p| self.trusted_proxies.iter().any(|n| n.contains(p)));
        // The forwarding header our proxies do not write came from the
        // client even through them: the upstream must not read it either.
        let unwritten = match self.forwarded_header {
            ForwardedHeader::XForwardedFor => "forwarded",
            ForwardedHeader::Forwarded => "x-forwarded-for",
        };
        // Names compared as CGI-style servers read them (`_` and `-` alike:
        // `X-Stepup_Acr` is `HTTP_X_STEPUP_ACR` there, CVE-2024-45614).
        let dropped: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                let raw = name.as_str();
                let read_as = |known: &str| dashed_prefix(raw, known) && raw.len() == known.len();
                dashed_prefix(raw, "x-stepup-")
                    || OVERRIDES.iter().any(|known| read_as(known))
                    // Only a trusted proxy may set these, and proxies
                    // spell them with dashes.
                    || ((FORWARDING.iter().any(|known| read_as(known)) || dashed_prefix(raw, FORWARDING_PREFIX))
                        && (raw.contains('_') || !trusted_peer))
                    || read_as(unwritten)
            })
            .cloned()
            .collect();
        for name in dropped {
            headers.remove(name);
        }
        // A public upstream reads the credentials itself.
        if !self.forward_token && !public {
            headers.remove(header::AUTHORIZATION);
            headers.remove("dpop");
        }
        // The upstream's own authority goes in Host (set by the client from
        // the URI); the client's is kept for it in X-Forwarded-Host.
        headers.remove(header::HOST);
        if let Some(peer) = peer {
            // Every X-Forwarded-For element of a trusted proxy, in order;
            // one that is not visible ASCII goes on as `unknown` (an
            // unreadable hop), so that what a client wrote before its
            // proxy's hop cannot hide that hop.
            let earlier: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .flat_map(stepup_guard::client_ip::list_elements)
                .map(|element| element.map_or("unknown", str::trim))
                .collect();
            let chain = match earlier.is_empty() {
                false => format!("{}, {peer}", earlier.join(", ")),
                true => peer.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&chain) {
                headers.insert(X_FORWARDED_FOR, value);
            }
        }
        if let Some(host) = host
            && !headers.contains_key(&X_FORWARDED_HOST)
        {
            headers.insert(X_FORWARDED_HOST, host);
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
    }
}

/// Headers that tell some frameworks to run another method or path than
/// the one the guard decided on (Rack::MethodOverride, Express
/// method-override, IIS and old Symfony URL rewrites): never passed on.
const OVERRIDES: [&str; 5] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
];

/// Whether header name `raw` begins with `known` (lower case, dashes) when
/// `_` is read as `-`. Compared byte by byte: it runs for every header of
/// every request, and allocates nothing.
fn dashed_prefix(raw: &str, known: &str) -> bool {
    raw.len() >= known.len()
        && raw
            .bytes()
            .zip(known.bytes())
            .all(|(r, k)| r == k || (r == b'_' && k == b'-'))
}

/// The forwarding headers, which only a trusted proxy may set: those
/// proxies and frameworks read a client's address, host or scheme from
/// (every `x-forwarded-*` too, see [`FORWARDING_PREFIX`]). From anyone
/// else they are a client's claims about itself.
const FORWARDING: [&str; 8] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
];

/// `X-Forwarded-For`, `-Host`, `-Proto`, `-Port`, `-Prefix`, `-Server`…
const FORWARDING_PREFIX: &str = "x-forwarded-";

/// Sets the identity headers from the verified token.
pub(crate) fn set_identity(
    headers: &mut HeaderMap,
    claims: Option<&VerifiedClaims>,
) -> Result<(), &'static str> {
    let Some(claims) = claims else {
        return Ok(());
    };
    let mut set = |name: HeaderName, value: Option<&str>| -> Result<(), &'static str> {
        if let Some(value) = value {
            // A claim that is not a valid header value is not dropped
            // silently: the upstream would take the call as anonymous.
            let value =
                HeaderValue::from_str(value).map_err(|_| "a token claim cannot be sent as a header")?;
            headers.insert(name, value);
        }
        Ok(())
    };
    set(SUBJECT, claims.subject.as_deref())?;
    set(ACR, claims.acr.as_deref())?;
    set(SCOPE, claims.scope.as_deref())?;
    set(DPOP_JKT, claims.bound_jkt())?;
    if let Some(auth_time) = claims.auth_time {
        headers.insert(AUTH_TIME, HeaderValue::from(auth_time));
    }
    Ok(())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): those of this connection only.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

pin_project_lite::pin_project! {
    /// A client's request body on its way to the upstream, noting when it
    /// fails: the attempt's error is then the client's.
    struct ClientBody {
        #[pin]
        body: Body,
        failed: Arc<AtomicBool>,
    }
}

impl http_body::Body for ClientBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &frame {
            this.failed.store(true, Ordering::Release);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// An answer of the gateway itself, in the guard's JSON error shape.
pub(crate) fn failure(status: StatusCode, error: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": error, "error_description": description });
    (status, axum::Json(body)).into_response()
}

/// The innermost service of a gateway request: behind the guard, in
/// front of the upstream.
#[derive(Clone)]
pub(crate) struct ForwardService {
    pub(crate) gateway: Arc<crate::Inner>,
}

impl tower::Service<Request<Body>> for ForwardService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let gateway = self.gateway.clone();
        if let Some(Arrived(at)) = request.extensions().get::<Arrived>() {
            gateway.metrics.decision_latency.observe(at.elapsed());
        }
        Box::pin(async move { Ok(gateway.proxy.forward(request, &gateway.metrics).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::dashed_prefix;

    #[test]
    fn underscores_read_as_dashes_and_nothing_else_does() {
        assert!(dashed_prefix("x-stepup-acr", "x-stepup-"));
        assert!(dashed_prefix("x_stepup_acr", "x-stepup-"));
        assert!(dashed_prefix("x-forwarded_for", "x-forwarded-for"));
        assert!(!dashed_prefix("x-stepup", "x-stepup-"));
        assert!(!dashed_prefix("x.stepup-acr", "x-stepup-"));
        // A dash is not read as an underscore.
        assert!(!dashed_prefix("x-a", "x_a"));
    }
}
