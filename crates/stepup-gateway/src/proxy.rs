//! Forwarding an allowed request to its upstream, and the answer back.
//!
//! Bodies stream in both directions; nothing is buffered here (the guard
//! buffers the body only on routes whose risk rules read an amount).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stepup_guard::VerifiedClaims;
use stepup_guard::client_ip::IpNet;

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

struct Target {
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
}

/// What forwards allowed requests: the upstream table and a pooled client.
pub(crate) struct Proxy {
    /// In the configuration's order, for [`select_upstream`].
    upstreams: Vec<Upstream>,
    targets: Vec<Target>,
    client: Client<HttpConnector, UpstreamBody>,
    forward_token: bool,
    max_body_bytes: u64,
    trusted_proxies: Vec<IpNet>,
}

impl Proxy {
    pub(crate) fn new(config: &GatewayConfig) -> Result<Self, String> {
        let mut targets = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let uri: Uri = u
                .url
                .parse()
                .map_err(|e| format!("upstream url {:?}: {e}", u.url))?;
            let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
                return Err(format!("upstream url {:?} has no scheme or host", u.url));
            };
            targets.push(Target {
                scheme,
                authority,
                timeout: Duration::from_secs(u.timeout_seconds),
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
        Ok(Self {
            upstreams: config.upstreams.clone(),
            targets,
            client,
            forward_token: config.forward_token,
            max_body_bytes: config.max_body_bytes,
            trusted_proxies,
        })
    }

    /// Sends `request` (already allowed by the guard) to its upstream.
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
        let host = original_host(&parts);
        let chosen = select_upstream(
            &self.upstreams,
            host.as_ref().and_then(|h| h.to_str().ok()),
            parts.uri.path(),
        );
        let Some(target) = chosen.and_then(|i| self.targets.get(i)) else {
            return forwarded(
                true,
                failure(StatusCode::NOT_FOUND, "not_found", "no upstream serves this path"),
            );
        };
        if let Some(length) = content_length(&parts.headers)
            && length > self.max_body_bytes
        {
            let message = format!("the request body is longer than {} bytes", self.max_body_bytes);
            return forwarded(
                true,
                failure(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", &message),
            );
        }
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(path_and_query)
            .build();
        let Ok(uri) = uri else {
            return forwarded(
                true,
                failure(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the request target is malformed",
                ),
            );
        };
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let claims = parts.extensions.get::<VerifiedClaims>();
        self.rewrite_headers(&mut parts.headers, host, peer);
        if let Err(message) = set_identity(&mut parts.headers, claims) {
            return forwarded(
                true,
                failure(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message),
            );
        }
        parts.uri = uri;
        // Upstreams are spoken to in HTTP/1.1, whatever the client spoke.
        parts.version = Version::HTTP_11;
        let upstream_request = Request::from_parts(parts, Limited::new(body, self.max_body_bytes as usize));

        let sent = Instant::now();
        let answer = tokio::time::timeout(target.timeout, self.client.request(upstream_request)).await;
        metrics.upstream_latency.observe(sent.elapsed());
        match answer {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                forwarded(
                    false,
                    Response::from_parts(parts, Body::new(body.map_err(axum::Error::new))),
                )
            }
            Ok(Err(e)) => {
                if body_too_long(&e) {
                    let message = format!("the request body is longer than {} bytes", self.max_body_bytes);
                    return forwarded(
                        true,
                        failure(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", &message),
                    );
                }
                tracing::warn!(upstream = %target.authority, error = %error_chain(&e), "upstream request failed");
                forwarded(
                    true,
                    failure(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unavailable",
                        "the upstream could not be reached",
                    ),
                )
            }
            Err(_) => {
                tracing::warn!(upstream = %target.authority, timeout = ?target.timeout, "upstream timed out");
                forwarded(
                    true,
                    failure(
                        StatusCode::GATEWAY_TIMEOUT,
                        "upstream_timeout",
                        &format!(
                            "the upstream did not answer within {} s",
                            target.timeout.as_secs()
                        ),
                    ),
                )
            }
        }
    }

    /// The headers the upstream sees: no hop-by-hop headers, no
    /// client-sent `x-stepup-*`, the verified identity, the forwarding
    /// chain, and the token only when configured.
    fn rewrite_headers(&self, headers: &mut HeaderMap, host: Option<HeaderValue>, peer: Option<IpAddr>) {
        remove_hop_by_hop(headers);
        let trusted_peer = peer.is_some_and(|p| self.trusted_proxies.iter().any(|n| n.contains(p)));
        // Names compared as CGI-style servers read them (`_` and `-` alike:
        // `X-Stepup_Acr` is `HTTP_X_STEPUP_ACR` there, CVE-2024-45614).
        let dropped: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                let raw = name.as_str();
                let dashed = raw.replace('_', "-");
                dashed.starts_with("x-stepup-")
                    || OVERRIDES.contains(&dashed.as_str())
                    // Only a trusted proxy may set these, and proxies
                    // spell them with dashes.
                    || (FORWARDING.contains(&dashed.as_str()) && (raw != dashed || !trusted_peer))
            })
            .cloned()
            .collect();
        for name in dropped {
            headers.remove(name);
        }
        if !self.forward_token {
            headers.remove(header::AUTHORIZATION);
            headers.remove("dpop");
        }
        // The upstream's own authority goes in Host (set by the client from
        // the URI); the client's is kept for it in X-Forwarded-Host.
        headers.remove(header::HOST);
        if let Some(peer) = peer {
            // Every X-Forwarded-For line of a trusted proxy, in order; a line
            // that is not text loses the chain (only the peer is sent).
            let lines: Option<Vec<&str>> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .map(|v| v.to_str().ok())
                .collect();
            let chain = match lines.filter(|l| !l.is_empty()) {
                Some(earlier) => format!("{}, {peer}", earlier.join(", ")),
                None => peer.to_string(),
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

/// The forwarding headers, which only a trusted proxy may set.
const FORWARDING: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

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

fn original_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    parts.headers.get(header::HOST).cloned().or_else(|| {
        // HTTP/2 carries it in :authority.
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
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

fn body_too_long(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
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
