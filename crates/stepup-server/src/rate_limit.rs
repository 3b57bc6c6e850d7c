//! Rate limits on the endpoints anyone may call (`[rate_limit]`): per
//! client address on `/authorize`, `/par`, `/token`, `/login/*` and
//! `/account/*`, and per user name on sign-in attempts, so that a flood
//! from many addresses against one account is slowed rather than let
//! through (or locking the account at once).
//!
//! Each limit is a GCRA (a token bucket of `burst` refilled at
//! `per_minute`): in this instance through `governor`'s keyed limiters, or
//! shared by every instance through Redis (one Lua script, keys under the
//! configured prefix) when `redis_url` is set; while Redis cannot be
//! reached each instance counts alone. Time is the server's [`Clock`].
//! Beyond a limit the answer is 429 with `Retry-After`, made here.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderValue, StatusCode, header};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::json;
use stepup_core::Clock;
use stepup_guard::client_ip::client_ip;

use crate::config::{Rate, RateLimitConfig};
use crate::server::ServerState;

/// What is counted, and by which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `/authorize`, per client address.
    Authorize,
    /// `/par`, per client address.
    Par,
    /// `/token`, per client address.
    Token,
    /// `/login/*`, per client address.
    Login,
    /// `/account/*`, per client address.
    Account,
    /// Sign-in attempts, per user name.
    User,
}

const LIMITS: [Limit; 6] = [
    Limit::Authorize,
    Limit::Par,
    Limit::Token,
    Limit::Login,
    Limit::Account,
    Limit::User,
];

impl Limit {
    /// Its name in `[rate_limit]` and in Redis keys.
    fn name(self) -> &'static str {
        match self {
            Limit::Authorize => "authorize",
            Limit::Par => "par",
            Limit::Token => "token",
            Limit::Login => "login",
            Limit::Account => "account",
            Limit::User => "user",
        }
    }

    fn rate(self, config: &RateLimitConfig) -> Rate {
        match self {
            Limit::Authorize => config.authorize,
            Limit::Par => config.par,
            Limit::Token => config.token,
            Limit::Login => config.login,
            Limit::Account => config.account,
            Limit::User => config.user,
        }
    }

    /// Whether its refusals go to an OAuth client (JSON) or a browser (a page).
    fn to_client(self) -> bool {
        matches!(self, Limit::Par | Limit::Token)
    }
}

/// A request beyond a limit: how long to wait, in whole seconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    limit: Limit,
    /// Seconds until a request would be allowed.
    pub retry_after: u64,
}

impl Limited {
    fn after_millis(limit: Limit, millis: u64) -> Self {
        Self {
            limit,
            retry_after: millis.div_ceil(1000).max(1),
        }
    }

    /// What a person is told.
    pub(crate) fn message(&self) -> String {
        let what = if self.limit == Limit::User {
            "Too many sign-in attempts for this account"
        } else {
            "Too many requests from your network"
        };
        format!("{what}. Wait {} seconds, then try again.", self.retry_after)
    }

    /// Makes `response` (a page that lets the person try again) a 429
    /// with `Retry-After`; a redirect (the session already answers the
    /// request, nothing was tried) goes on as it is.
    pub(crate) fn onto(&self, mut response: Response) -> Response {
        if response.status().is_redirection() {
            return response;
        }
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        response
    }
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let response = if self.limit.to_client() {
            // RFC 8628 §3.5's `slow_down`: the client should wait.
            let body = json!({"error": "slow_down", "error_description": self.message()});
            let mut response = Json(body).into_response();
            crate::error::no_store(response.headers_mut());
            response
        } else {
            crate::pages::error_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                &self.message(),
            )
        };
        self.onto(response)
    }
}

/// The server's clock as `governor` reads time (whole seconds, as nanoseconds).
#[derive(Clone)]
struct GovernorClock(Arc<dyn Clock>);

impl governor::clock::Clock for GovernorClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let seconds = u64::try_from(self.0.now().seconds()).unwrap_or(0);
        Nanos::from(seconds.saturating_mul(1_000_000_000))
    }
}

type Local = RateLimiter<String, HashMapStateStore<String>, GovernorClock, NoOpMiddleware<Nanos>>;

/// How often the local limiters forget keys that are back to a full burst.
const FORGET_EVERY: u64 = 4096;

/// After Redis failed, how long each instance counts alone before trying again.
const REDIS_RETRY_SECONDS: i64 = 10;

/// GCRA in Redis: the key holds the theoretical arrival time (ms); returns
/// 0 when the request is allowed, else the milliseconds to wait.
const GCRA_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - burst * interval
if allowed_at > now then return allowed_at - now end
redis.call('SET', KEYS[1], next_tat, 'PX', math.max(next_tat - now, 1))
return 0
";

struct Shared {
    client: redis::Client,
    prefix: String,
    connection: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// No connection is tried before this time (after a failure).
    retry_at: AtomicI64,
}

/// The rate limits of one server instance.
pub struct RateLimits {
    enabled: bool,
    config: RateLimitConfig,
    clock: Arc<dyn Clock>,
    local: Vec<(Limit, Local)>,
    checks: AtomicU64,
    shared: Option<Shared>,
    /// Whether the loss of Redis was logged (once per outage).
    redis_lost: AtomicBool,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("enabled", &self.enabled)
            .field("shared", &self.shared.as_ref().map(|s| &s.prefix))
            .finish_non_exhaustive()
    }
}

fn quota(rate: Rate) -> Quota {
    let per_minute = NonZeroU32::new(rate.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl RateLimits {
    /// The limits `config` sets, timed by `clock`.
    pub fn new(config: &RateLimitConfig, clock: Arc<dyn Clock>) -> Self {
        let governor_clock = GovernorClock(Arc::clone(&clock));
        let local = LIMITS
            .iter()
            .map(|&limit| {
                let limiter =
                    RateLimiter::hashmap_with_clock(quota(limit.rate(config)), governor_clock.clone());
                (limit, limiter)
            })
            .collect();
        let shared = config
            .redis_url
            .as_deref()
            .and_then(|url| match redis::Client::open(url) {
                Ok(client) => Some(Shared {
                    client,
                    prefix: config.redis_prefix.clone(),
                    connection: tokio::sync::Mutex::new(None),
                    retry_at: AtomicI64::new(i64::MIN),
                }),
                Err(e) => {
                    tracing::error!(error = %e, "rate_limit.redis_url unusable; counting in this instance");
                    None
                }
            });
        Self {
            enabled: config.enabled,
            config: config.clone(),
            clock,
            local,
            checks: AtomicU64::new(0),
            shared,
            redis_lost: AtomicBool::new(false),
        }
    }

    /// Counts one request of `key` against `limit`.
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), Limited> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            match self.check_shared(shared, limit, key).await {
                Ok(wait_ms) => {
                    if self.redis_lost.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limits: Redis reached again; counting across instances");
                    }
                    return match wait_ms {
                        0 => Ok(()),
                        _ => Err(Limited::after_millis(limit, wait_ms)),
                    };
                }
                Err(e) => {
                    if !self.redis_lost.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            error = e,
                            "rate limits: Redis unreachable; counting in this instance meanwhile"
                        );
                    }
                }
            }
        }
        self.check_local(limit, key)
    }

    fn check_local(&self, limit: Limit, key: &str) -> Result<(), Limited> {
        let Some((_, limiter)) = self.local.iter().find(|(l, _)| *l == limit) else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            for (_, l) in &self.local {
                l.retain_recent();
            }
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let now = GovernorClock(Arc::clone(&self.clock)).now();
            let wait = not_until.wait_time_from(now);
            Limited::after_millis(limit, u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
        })
    }

    async fn check_shared(&self, shared: &Shared, limit: Limit, key: &str) -> Result<u64, String> {
        let now = self.clock.now().seconds();
        if shared.retry_at.load(Ordering::Relaxed) > now {
            return Err("Redis unreachable a moment ago".into());
        }
        let mut connection = {
            let mut slot = shared.connection.lock().await;
            // Checked again under the lock: requests that queued behind a
            // connection attempt that failed do not each try (and wait)
            // again.
            if shared.retry_at.load(Ordering::Relaxed) > now {
                return Err("Redis unreachable a moment ago".into());
            }
            match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let config = ConnectionManagerConfig::new()
                        .set_number_of_retries(1)
                        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
                        .set_response_timeout(Some(std::time::Duration::from_secs(2)));
                    match ConnectionManager::new_with_config(shared.client.clone(), config).await {
                        Ok(c) => slot.insert(c).clone(),
                        Err(e) => {
                            shared
                                .retry_at
                                .store(now + REDIS_RETRY_SECONDS, Ordering::Relaxed);
                            return Err(e.to_string());
                        }
                    }
                }
            }
        };
        let rate = limit.rate(&self.config);
        let interval_ms = (60_000 / u64::from(rate.per_minute.max(1))).max(1);
        let redis_key = format!("{}:{}:{key}", shared.prefix, limit.name());
        let wait: Result<i64, _> = redis::cmd("EVAL")
            .arg(GCRA_SCRIPT)
            .arg(1)
            .arg(redis_key)
            .arg(now.saturating_mul(1000))
            .arg(interval_ms)
            .arg(rate.burst)
            .query_async(&mut connection)
            .await;
        match wait {
            Ok(ms) => Ok(u64::try_from(ms).unwrap_or(0)),
            Err(e) => {
                shared
                    .retry_at
                    .store(now + REDIS_RETRY_SECONDS, Ordering::Relaxed);
                Err(e.to_string())
            }
        }
    }
}

/// The key of a client address: the address, or for IPv6 its /64 (one
/// host commonly holds a whole /64).
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Middleware: counts the request against `limit` by its client address
/// (through trusted proxies only), before anything else reads it.
pub(crate) async fn by_address(
    State((state, limit)): State<(Arc<ServerState>, Limit)>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer {
        let ip = client_ip(
            peer,
            request.headers(),
            &state.config.trusted_proxies,
            state.config.risk.forwarded_header,
        );
        if let Err(limited) = state.limits.check(limit, &address_key(ip)).await {
            tracing::debug!(limit = limit.name(), client = %ip, "rate limited");
            return limited.into_response();
        }
    }
    next.run(request).await
}

/// Counts a password attempt at `username` (as typed: user names are
/// matched exactly), whatever the address and whether the account exists.
pub(crate) async fn sign_in_attempt(state: &ServerState, username: &str) -> Result<(), Limited> {
    attempt_at(state, &format!("name:{username}")).await
}

/// Counts a password attempt from a browser where the user signed in
/// before (its stored id), in a bucket of its own: a flood at the user
/// name from elsewhere does not refuse it (see `known_device`).
pub(crate) async fn known_device_attempt(state: &ServerState, device_id: &str) -> Result<(), Limited> {
    attempt_at(state, &format!("device:{device_id}")).await
}

/// Before a code is checked: the per-account limit of codes, a bucket of
/// its own (only someone who passed the password can fill it), so a flood
/// of passwords at a user name does not also refuse the user's codes.
pub(crate) async fn code_attempt(state: &ServerState, username: &str) -> Result<(), Limited> {
    attempt_at(state, &format!("code:{username}")).await
}

async fn attempt_at(state: &ServerState, key: &str) -> Result<(), Limited> {
    let result = state.limits.check(Limit::User, key).await;
    if result.is_err() {
        tracing::debug!(limit = "user", "rate limited");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(AtomicI64);

    impl Clock for Fixed {
        fn now(&self) -> stepup_core::UnixTime {
            stepup_core::UnixTime(self.0.load(Ordering::SeqCst))
        }
    }

    fn config(rate: Rate) -> RateLimitConfig {
        RateLimitConfig {
            authorize: rate,
            user: rate,
            ..RateLimitConfig::default()
        }
    }

    #[tokio::test]
    async fn a_burst_then_one_per_interval_per_key() {
        let clock = Arc::new(Fixed(AtomicI64::new(1_800_000_000)));
        let limits = RateLimits::new(
            &config(Rate {
                burst: 3,
                per_minute: 6,
            }),
            clock.clone(),
        );
        for _ in 0..3 {
            assert_eq!(limits.check(Limit::User, "alice").await, Ok(()));
        }
        let limited = limits.check(Limit::User, "alice").await.unwrap_err();
        assert_eq!(limited.retry_after, 10);
        // Other keys, and other limits for the same key, are their own.
        assert_eq!(limits.check(Limit::User, "bob").await, Ok(()));
        assert_eq!(limits.check(Limit::Authorize, "alice").await, Ok(()));
        clock.0.fetch_add(10, Ordering::SeqCst);
        assert_eq!(limits.check(Limit::User, "alice").await, Ok(()));
        assert!(limits.check(Limit::User, "alice").await.is_err());
    }

    #[tokio::test]
    async fn switched_off_nothing_is_counted() {
        let clock = Arc::new(Fixed(AtomicI64::new(0)));
        let mut c = config(Rate {
            burst: 1,
            per_minute: 1,
        });
        c.enabled = false;
        let limits = RateLimits::new(&c, clock);
        for _ in 0..100 {
            assert_eq!(limits.check(Limit::User, "alice").await, Ok(()));
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        assert_eq!(address_key("192.0.2.1".parse().unwrap()), "192.0.2.1");
    }

    #[test]
    fn refusals_say_when_to_come_back() {
        let limited = Limited::after_millis(Limit::Token, 1500);
        let response = limited.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(Limited::after_millis(Limit::User, 0).retry_after, 1);
    }
}
