//! The stepup guard as a reverse proxy: step-up authentication (RFC 9470)
//! in front of any HTTP API, whatever it is written in.
//!
//! Each request goes through the same [`Guard`] as in a Rust service: the
//! token is verified, the policy and risk rules decide, and a request
//! that needs more gets the RFC 9470 challenge without reaching the
//! upstream. An allowed request is forwarded with the verified identity
//! in `X-Stepup-Subject`, `X-Stepup-Acr`, `X-Stepup-Auth-Time` and
//! `X-Stepup-Scope` (and `X-Stepup-Dpop-Jkt` for a DPoP-bound token); any
//! `X-Stepup-*` header from the client is dropped first.
//!
//! The policy file is reloaded when it changes (and on `SIGHUP` with
//! [`Gateway::watch_policy`]); a file that does not load leaves the old
//! policy serving. `/-/healthz`, `/-/readyz` and `/-/metrics`
//! (Prometheus) are the gateway's own.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod identity;
pub mod metrics;
mod proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Method, Request, StatusCode, header};
use stepup_core::Policy;
use stepup_core::access_token::ClaimsRules;
use stepup_core::challenge::ErrorCode;
use stepup_core::jwk::Algorithm;
use stepup_core::resource_metadata::ResourceMetadata;
use stepup_core::secret::ClientSecret;
use stepup_guard::activity::{ActivityOptions, MemoryActivity};
use stepup_guard::amount::AmountSource;
use stepup_guard::client_ip::IpNet;
use stepup_guard::dpop::{DpopOptions, MemoryReplayCache, RedisReplayCache, ReplayCache};
use stepup_guard::geoip::MaxMindGeo;
use stepup_guard::risk::RiskOptions;
use stepup_guard::transaction::{TransactionOptions, TransactionRule};
use stepup_guard::{
    Guard, HttpFetcher, IntrospectionClient, Introspector, JwtVerifier, Rejection, TokenVerifier,
};
use thiserror::Error;
use tower::{Layer, ServiceExt};

pub use config::{AmountConfig, ConfigError, GatewayConfig, IdentityConfig, TransactionConfig, Upstream};
pub use proxy::{ACR, AUTH_TIME, DPOP_JKT, SCOPE, SUBJECT};

use metrics::{Metrics, Outcome, RouteCounters};
use proxy::{Arrived, ForwardService, Forwarded, Proxy};

/// Why a gateway cannot start, or a policy cannot be (re)loaded.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The policy file cannot be read or does not load (the message
    /// locates the mistake: file, line, column).
    #[error("{0}")]
    Policy(String),
    /// The authorization server's keys cannot be fetched (yet).
    #[error("cannot reach the issuer {issuer}: {reason}")]
    Issuer {
        /// The configured issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// An optional part (GeoIP database, upstream table) cannot be set up.
    #[error("{0}")]
    Setup(String),
}

/// How long a changed policy file must stay the same before a poll
/// reloads it.
const POLICY_SETTLE: Duration = Duration::from_millis(250);

/// The policy in force, its guard, and its per-route counters.
struct Generation {
    guard: Guard,
    policy: Arc<Policy>,
    routes: RouteCounters,
}

/// How the policy file last went.
#[derive(Debug, Clone, Default)]
struct PolicyStatus {
    /// The text in force (reloads compare against it).
    source: String,
    loaded_at: u64,
    last_error: Option<String>,
}

/// What every guard generation shares: only the policy changes on reload.
#[derive(Clone)]
struct GuardParts {
    verifier: TokenVerifier,
    risk: RiskOptions,
    dpop: Option<DpopOptions>,
    transactions: Option<TransactionOptions>,
    /// The routes of the transaction rules, which every policy must have.
    transaction_routes: Vec<String>,
    /// The upstream table, which no policy route may lead past the guard.
    upstreams: Vec<Upstream>,
    /// How long a body the guard reads may take to arrive.
    body_read_timeout: std::time::Duration,
    /// The `realm` of challenges.
    realm: String,
    /// What the gateway says of the API (RFC 9728), but its scopes, which
    /// come from each policy.
    metadata: ResourceMetadata,
}

impl GuardParts {
    /// The guard for `policy`; a policy without a route that a transaction
    /// rule names is refused: the rule would silently protect nothing.
    fn build(&self, policy: Arc<Policy>) -> Result<Guard, GatewayError> {
        if let Some(leak) = public_leak(&policy, &self.upstreams) {
            return Err(GatewayError::Policy(leak));
        }
        for route in &self.transaction_routes {
            if !policy.routes().iter().any(|r| &r.name == route) {
                return Err(GatewayError::Policy(format!(
                    "the policy has no route {route:?}, which a [[transaction]] of the gateway binds"
                )));
            }
        }
        let mut metadata = self.metadata.clone();
        metadata.scopes_supported = policy.scopes();
        let mut builder = Guard::builder(policy, self.verifier.clone())
            .risk(self.risk.clone())
            .body_read_timeout(self.body_read_timeout)
            .realm(self.realm.clone())
            .resource_metadata(&metadata)
            .map_err(|e| GatewayError::Setup(format!("audience: {e}")))?;
        if let Some(dpop) = &self.dpop {
            builder = builder.dpop(dpop.clone());
        }
        if let Some(transactions) = &self.transactions {
            builder = builder.transactions(transactions.clone());
        }
        Ok(builder.build())
    }
}

pub(crate) struct Inner {
    config: GatewayConfig,
    parts: GuardParts,
    current: RwLock<Arc<Generation>>,
    status: Mutex<PolicyStatus>,
    pub(crate) proxy: Proxy,
    pub(crate) metrics: Metrics,
    draining: AtomicBool,
    /// The issuer's keys, when the gateway fetches them itself.
    issuer_keys: Option<Arc<JwtVerifier>>,
    /// Who may call the admin endpoints.
    admin_allow: Vec<IpNet>,
}

/// A configured gateway: cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.inner.config.listen)
            .field("policy", &self.inner.config.policy)
            .finish_non_exhaustive()
    }
}

fn read_policy(path: &std::path::Path) -> Result<(String, Policy), GatewayError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| GatewayError::Policy(format!("cannot read {}: {e}", path.display())))?;
    let policy = Policy::from_toml(&path.display().to_string(), &source)
        .map_err(|e| GatewayError::Policy(e.to_string()))?;
    Ok((source, policy))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Gateway {
    /// A gateway for `config`: reads the policy now; the issuer's keys are
    /// found by discovery (RFC 8414, then OpenID Connect Discovery) once it
    /// serves, in the background, because the issuer may itself be one of
    /// its upstreams. Until they are loaded, `/-/readyz` answers 503 and
    /// tokens get 503 (not 401: they may be good).
    ///
    /// With `jwks_uri`, the keys are fetched from there instead; with
    /// `[introspection]`, tokens are opaque and asked about at the
    /// endpoint (its client secret read from the environment now).
    pub fn new(config: GatewayConfig) -> Result<Self, GatewayError> {
        let http = HttpFetcher::new().map_err(|e| GatewayError::Issuer {
            issuer: config.issuer.clone(),
            reason: e.to_string(),
        })?;
        if let Some(introspection) = &config.introspection {
            let secret = std::env::var(&introspection.client_secret_env)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    GatewayError::Setup(format!(
                        "the environment variable {} (introspection.client_secret_env) is not set",
                        introspection.client_secret_env
                    ))
                })?;
            let client = IntrospectionClient::new(introspection.client_id.clone(), ClientSecret::new(secret));
            let rules = ClaimsRules {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway_seconds: 30,
            };
            let introspector = Introspector::new(introspection.endpoint.clone(), client, rules, http);
            return Self::build(config, TokenVerifier::Introspection(Arc::new(introspector)), None);
        }
        let verifier = Arc::new(match &config.jwks_uri {
            Some(uri) => JwtVerifier::for_jwks_uri(uri, &config.issuer, &config.audience, http),
            None => JwtVerifier::for_issuer(&config.issuer, &config.audience, http),
        });
        Self::build(config, TokenVerifier::Jwt(verifier.clone()), Some(verifier))
    }

    /// Fetches the issuer's keys now (discovery first), whether or not they
    /// were loaded before.
    pub async fn load_keys(&self) -> Result<(), GatewayError> {
        let Some(keys) = &self.inner.issuer_keys else {
            return Ok(());
        };
        keys.load_keys().await.map_err(|e| GatewayError::Issuer {
            issuer: self.inner.config.issuer.clone(),
            reason: e.to_string(),
        })
    }

    /// Whether tokens can be verified: the issuer's keys are loaded (always
    /// true for a gateway made [`Gateway::with_verifier`]).
    pub fn keys_loaded(&self) -> bool {
        self.inner.issuer_keys.as_ref().is_none_or(|k| k.keys_loaded())
    }

    /// Loads the issuer's keys, trying again with backoff (1 s doubling to
    /// 30 s) until they load or the gateway is dropped.
    fn load_keys_in_background(&self) {
        if self.keys_loaded() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let gateway = Gateway { inner };
                if gateway.keys_loaded() {
                    return;
                }
                match gateway.load_keys().await {
                    Ok(()) => {
                        tracing::info!(issuer = %gateway.inner.config.issuer, "issuer keys loaded");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, retry_in = ?wait, "issuer keys not loaded yet"),
                }
                drop(gateway);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        });
    }

    /// A gateway that verifies tokens with `verifier` (tests, benchmarks,
    /// introspection).
    pub fn with_verifier(config: GatewayConfig, verifier: TokenVerifier) -> Result<Self, GatewayError> {
        Self::build(config, verifier, None)
    }

    /// The gateway; `issuer_keys` when it fetches its issuer's keys itself.
    fn build(
        config: GatewayConfig,
        verifier: TokenVerifier,
        issuer_keys: Option<Arc<JwtVerifier>>,
    ) -> Result<Self, GatewayError> {
        let (source, policy) = read_policy(&config.policy)?;
        let mut risk = RiskOptions::new().activity(Arc::new(MemoryActivity::new(ActivityOptions::default())));
        let proxies = config
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .map_err(|e| GatewayError::Setup(format!("trusted_proxies: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        risk = risk
            .trusted_proxies(proxies)
            .forwarded_header(config.forwarded_header);
        if let Some(path) = &config.geoip {
            let geo = MaxMindGeo::open(path, None).map_err(|e| GatewayError::Setup(e.to_string()))?;
            risk = risk.geo(Arc::new(geo));
        }
        if let Some(amount) = &config.amount {
            let mut source =
                AmountSource::new(amount.amount_pointer.clone(), amount.currency_pointer.clone());
            source.max_body_bytes = amount.max_body_bytes;
            risk = risk.amount(source);
        }
        // What is used once: remembered in this process, or in Redis for
        // every instance (`[replay]`).
        let used_once = |kind: &str| -> Result<Arc<dyn ReplayCache>, GatewayError> {
            Ok(match &config.replay {
                Some(replay) => Arc::new(
                    RedisReplayCache::new(&replay.redis_url, &format!("{}:{kind}", replay.prefix))
                        .map_err(|e| GatewayError::Setup(format!("replay.redis_url: {e}")))?,
                ),
                None => Arc::new(MemoryReplayCache::new(100_000)),
            })
        };
        let dpop = match &config.dpop_origin {
            Some(origin) => {
                Some(DpopOptions::new(origin.trim_end_matches('/')).replay_cache(used_once("dpop")?))
            }
            None => None,
        };
        let rules: Vec<TransactionRule> = config
            .transactions
            .iter()
            .map(|t| TransactionRule {
                route: t.route.clone(),
                details_type: t.details_type.clone(),
                fields: t.fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                amount_fields: t.amount_fields(),
                max_token_seconds: t.max_token_seconds,
            })
            .collect();
        let transaction_routes = rules.iter().map(|r| r.route.clone()).collect();
        let transactions = match rules.is_empty() {
            true => None,
            false => Some(TransactionOptions::new(rules, used_once("txn")?)),
        };
        let parts = GuardParts {
            verifier,
            risk,
            dpop,
            transactions,
            transaction_routes,
            upstreams: config.upstreams.clone(),
            body_read_timeout: config.connections.body_read_timeout(),
            realm: config.realm.clone().unwrap_or_else(|| config.audience.clone()),
            metadata: ResourceMetadata {
                resource: config.audience.clone(),
                authorization_servers: vec![config.issuer.clone()],
                scopes_supported: Vec::new(),
                bearer_methods_supported: vec!["header".to_owned()],
                dpop_signing_alg_values_supported: if config.dpop_origin.is_some() {
                    Algorithm::ALL.iter().map(|a| a.as_str().to_owned()).collect()
                } else {
                    Vec::new()
                },
                authorization_details_types_supported: {
                    let mut types: Vec<String> = config
                        .transactions
                        .iter()
                        .map(|t| t.details_type.clone())
                        .collect();
                    types.sort();
                    types.dedup();
                    types
                },
                resource_name: None,
            },
        };
        let policy = Arc::new(policy);
        let generation = Generation {
            guard: parts.build(policy.clone())?,
            routes: RouteCounters::new(route_names(&policy), None),
            policy,
        };
        let proxy = Proxy::new(&config).map_err(GatewayError::Setup)?;
        let admin_allow = config
            .admin_allow
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .map_err(|e| GatewayError::Setup(format!("admin_allow: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                parts,
                current: RwLock::new(Arc::new(generation)),
                status: Mutex::new(PolicyStatus {
                    source,
                    loaded_at: unix_now(),
                    last_error: None,
                }),
                proxy,
                metrics: Metrics::default(),
                draining: AtomicBool::new(false),
                issuer_keys,
                admin_allow,
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    fn generation(&self) -> Arc<Generation> {
        match self.inner.current.read() {
            Ok(current) => current.clone(),
            // A panic while swapping cannot leave a half-written Arc.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the policy file again and, if it changed and loads, puts it in
    /// force for the next request (requests in flight finish under the old
    /// one). Returns whether the policy changed; on error the old policy
    /// keeps serving and the error (located) is returned and logged.
    pub fn reload_policy(&self) -> Result<bool, GatewayError> {
        self.apply_policy(self.read_policy_file())
    }

    /// The policy file's text.
    fn read_policy_file(&self) -> Result<String, GatewayError> {
        let path = &self.inner.config.policy;
        std::fs::read_to_string(path)
            .map_err(|e| GatewayError::Policy(format!("cannot read {}: {e}", path.display())))
    }

    /// Puts `read` (the policy file's text, or why it could not be read)
    /// in force if it changed and loads; see [`Gateway::reload_policy`].
    fn apply_policy(&self, read: Result<String, GatewayError>) -> Result<bool, GatewayError> {
        let path = &self.inner.config.policy;
        let loaded = read.and_then(|source| {
            let unchanged = self
                .inner
                .status
                .lock()
                .map(|s| s.source == source && s.last_error.is_none())
                .unwrap_or(false);
            if unchanged {
                return Ok(None);
            }
            let policy = Policy::from_toml(&path.display().to_string(), &source)
                .map_err(|e| GatewayError::Policy(e.to_string()))?;
            let policy = Arc::new(policy);
            let guard = self.inner.parts.build(policy.clone())?;
            Ok(Some((source, policy, guard)))
        });
        let mut status = self.inner.status.lock().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Ok(None) => Ok(false),
            Ok(Some((source, policy, guard))) => {
                let previous = self.generation();
                let generation = Generation {
                    guard,
                    routes: RouteCounters::new(route_names(&policy), Some(&previous.routes)),
                    policy,
                };
                *self.inner.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(generation);
                *status = PolicyStatus {
                    source,
                    loaded_at: unix_now(),
                    last_error: None,
                };
                self.inner.metrics.reload(true);
                let before = route_names(&previous.policy);
                let after = route_names(&self.generation().policy);
                let removed: Vec<&String> = before.iter().filter(|r| !after.contains(r)).collect();
                let added: Vec<&String> = after.iter().filter(|r| !before.contains(r)).collect();
                if removed.is_empty() {
                    tracing::info!(policy = %path.display(), added = ?added, "policy reloaded");
                } else {
                    // Calls to a removed route now fall to another rule or the default.
                    tracing::warn!(policy = %path.display(), removed = ?removed, added = ?added, "policy reloaded without some routes");
                }
                Ok(true)
            }
            Err(e) => {
                let message = e.to_string();
                // Logged once per distinct mistake, not on every poll.
                if status.last_error.as_deref() != Some(&message) {
                    self.inner.metrics.reload(false);
                    tracing::error!(error = %message, "policy not reloaded; the previous policy keeps serving");
                }
                status.last_error = Some(message);
                Err(e)
            }
        }
    }

    /// Reloads the policy when its file changes (checked every `every`)
    /// and on `SIGHUP`, until the gateway is dropped.
    pub fn watch_policy(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                {
                    let hangup_received = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = hangup_received => tracing::info!("SIGHUP: reloading the policy"),
                    }
                }
                #[cfg(not(unix))]
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let gateway = Gateway { inner };
                // Errors are logged and counted by apply_policy.
                if let Some(read) = gateway.settled_policy().await {
                    let _ = gateway.apply_policy(read);
                }
            }
        })
    }

    /// The policy file's text once it has stayed the same for a moment
    /// (`None`: it is still changing). A file being written in place (not
    /// renamed into place) could otherwise be read half-written, and a
    /// policy cut after some routes may still load, protecting less. The
    /// text returned is the one that was compared, not a third read.
    async fn settled_policy(&self) -> Option<Result<String, GatewayError>> {
        let first = match self.read_policy_file() {
            Ok(text) => text,
            // Nothing to wait for: the reload reports it.
            Err(e) => return Some(Err(e)),
        };
        let in_force = self
            .inner
            .status
            .lock()
            .map(|s| s.source == first && s.last_error.is_none())
            .unwrap_or(false);
        if in_force {
            return Some(Ok(first));
        }
        tokio::time::sleep(POLICY_SETTLE).await;
        match self.read_policy_file() {
            Ok(second) if second == first => Some(Ok(second)),
            _ => {
                tracing::debug!(policy = %self.inner.config.policy.display(), "the policy file is still changing; reloading it later");
                None
            }
        }
    }

    /// The gateway's own endpoints under the admin prefix, for the
    /// `admin_allow` addresses only.
    fn admin_routes(&self) -> Router<Gateway> {
        let prefix = &self.inner.config.admin_prefix;
        Router::new()
            .route(&format!("{prefix}healthz"), get(healthz))
            .route(&format!("{prefix}readyz"), get(readyz))
            .route(&format!("{prefix}metrics"), get(metrics_text))
            .route_layer(axum::middleware::from_fn_with_state(self.clone(), admin_only))
    }

    /// The signed identity's public key, on every listener: an upstream
    /// that reads it at the gateway's address must get the gateway's, never
    /// a forwarded answer.
    fn jwks_route(&self) -> Router<Gateway> {
        Router::new().route(
            &format!("{}jwks", self.inner.config.admin_prefix),
            get(identity_jwks),
        )
    }

    /// The router: every request guarded and forwarded, and the admin
    /// endpoints unless they have a listener of their own
    /// (`admin_listen`).
    pub fn router(&self) -> Router {
        let mut router = self.jwks_route();
        if self.inner.config.admin_listen.is_none() {
            router = router.merge(self.admin_routes());
        }
        router.fallback(proxy_request).with_state(self.clone()).layer(
            stepup_guard::limits::HeaderLimitLayer::new(self.inner.config.max_header_bytes),
        )
    }

    /// The admin listener's router: the admin endpoints, nothing else.
    pub fn admin_router(&self) -> Router {
        self.admin_routes()
            .merge(self.jwks_route())
            .fallback(|| async { proxy::failure(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
            .with_state(self.clone())
            .layer(stepup_guard::limits::HeaderLimitLayer::new(
                self.inner.config.max_header_bytes,
            ))
    }

    /// Serves the admin endpoints on `listener` (the `admin_listen`
    /// address) until `shutdown` completes.
    pub async fn serve_admin(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        stepup_guard::serve::serve(
            listener,
            self.admin_router(),
            self.inner.config.connections,
            shutdown,
        )
        .await
    }

    /// Serves on `listener` (HTTP/1.1, and HTTP/2 with prior knowledge)
    /// within the configured `[connections]` bounds until `shutdown`
    /// completes; then stops accepting, answers `503` on readiness, and
    /// lets requests in flight finish.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let inner = self.inner.clone();
        self.load_keys_in_background();
        let shutdown = async move {
            shutdown.await;
            inner.draining.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: finishing the requests in flight");
        };
        stepup_guard::serve::serve(listener, self.router(), self.inner.config.connections, shutdown).await
    }

    /// The policy file.
    pub fn policy_path(&self) -> &PathBuf {
        &self.inner.config.policy
    }
}

/// A policy route some of whose paths a host-less public upstream would
/// take, past the guard: the route would protect nothing. A route is safe
/// when a longer host-less guarded prefix takes all its paths. (An upstream
/// for one host is that host's business: another service.)
fn public_leak(policy: &Policy, upstreams: &[Upstream]) -> Option<String> {
    let hostless = || upstreams.iter().filter(|u| u.host.is_none());
    for public in hostless().filter(|u| u.public) {
        for rule in policy.routes() {
            let Some(template) = &rule.template else { continue };
            let text = template.as_str();
            // The part every path of the route starts with.
            let fixed = &text[..text.find('{').unwrap_or(text.len())];
            let reachable = fixed.starts_with(&public.prefix) || public.prefix.starts_with(fixed);
            let guarded = hostless()
                .any(|u| !u.public && u.prefix.len() > public.prefix.len() && fixed.starts_with(&u.prefix));
            if reachable && !guarded {
                return Some(format!(
                    "the policy route {:?} ({text}) would reach the public upstream {:?} without the guard; give the route's paths a guarded upstream, or the public one a host",
                    rule.name, public.prefix
                ));
            }
        }
    }
    None
}

fn route_names(policy: &Policy) -> Vec<String> {
    policy.routes().iter().map(|r| r.name.clone()).collect()
}

/// The admin endpoints answer only the `admin_allow` addresses, and not
/// requests a proxy forwarded; to others they do not exist.
async fn admin_only(
    State(gateway): State<Gateway>,
    request: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // A request a proxy forwarded is its client's, whatever the proxy's
    // own address: a TLS terminator on the same host would otherwise make
    // every client an admin address (set `admin_listen` to serve them to
    // such a proxy's side alone).
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|h| request.headers().contains_key(*h));
    if !forwarded && peer.is_some_and(|ip| gateway.inner.admin_allow.iter().any(|n| n.contains(ip))) {
        return next.run(request).await;
    }
    proxy::failure(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The signed identity's public key (JWK Set); 404 when it does not sign.
async fn identity_jwks(State(gateway): State<Gateway>) -> Response {
    match gateway.inner.proxy.identity_jwks() {
        Some(jwks) => axum::Json(jwks.clone()).into_response(),
        None => proxy::failure(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

async fn healthz(State(gateway): State<Gateway>) -> Response {
    let generation = gateway.generation();
    let status = gateway.inner.status.lock().map(|s| s.clone()).unwrap_or_default();
    let body = serde_json::json!({
        "status": "ok",
        "policy": {
            "path": gateway.inner.config.policy.display().to_string(),
            "routes": generation.policy.routes().len(),
            "loaded_at": status.loaded_at,
            "last_reload_error": status.last_error,
        },
    });
    axum::Json(body).into_response()
}

async fn readyz(State(gateway): State<Gateway>) -> Response {
    if gateway.inner.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if !gateway.keys_loaded() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the issuer's keys are not loaded yet\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics_text(State(gateway): State<Gateway>) -> Response {
    let generation = gateway.generation();
    let text = gateway.inner.metrics.render(&generation.routes);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn proxy_request(State(gateway): State<Gateway>, mut request: Request<Body>) -> Response {
    let arrived = Instant::now();
    if request.method() == Method::CONNECT {
        // A tunnel would carry anything past the guard.
        return proxy::failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "CONNECT is not proxied",
        );
    }
    request.extensions_mut().insert(Arrived(arrived));
    let chosen = match gateway.inner.proxy.choose(&request) {
        Ok(chosen) => chosen,
        Err(reason) => {
            gateway.inner.metrics.count_outcome(Outcome::Denied);
            return proxy::failure(StatusCode::BAD_REQUEST, "invalid_request", reason);
        }
    };
    let public = gateway.inner.proxy.is_public(&chosen);
    request.extensions_mut().insert(chosen);
    if public {
        return forward_public(&gateway, request, arrived).await;
    }
    let generation = gateway.generation();
    let method = request.method().clone();
    let uri = request.uri().clone();
    if let Some(reason) = ambiguous(&generation.policy, method.as_str(), uri.path()) {
        gateway.inner.metrics.count_outcome(Outcome::Denied);
        return proxy::failure(StatusCode::BAD_REQUEST, "invalid_request", reason);
    }
    let forward = ForwardService {
        gateway: gateway.inner.clone(),
    };
    let response = match generation.guard.layer().layer(forward).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let metrics = &gateway.inner.metrics;
    let elapsed = arrived.elapsed();
    metrics.request_latency.observe(elapsed);
    let route = generation
        .policy
        .route_index(method.as_str(), uri.path())
        .ok()
        .flatten();
    let status = response.status();
    let (outcome, subject) = if let Some(forwarded) = response.extensions().get::<Forwarded>() {
        let outcome = if forwarded.failed {
            metrics.count(Outcome::UpstreamError, generation.routes.name(route));
            Outcome::UpstreamError
        } else {
            metrics.count_outcome(Outcome::Allowed);
            generation.routes.allowed(route);
            Outcome::Allowed
        };
        (outcome, forwarded.subject.clone())
    } else {
        metrics.decision_latency.observe(elapsed);
        let rejection = response.extensions().get::<Rejection>();
        let outcome = classify(rejection);
        metrics.count(outcome, generation.routes.name(route));
        if outcome == Outcome::StepUp {
            let rule = rejection
                .and_then(|r| r.rule.as_deref())
                .unwrap_or_else(|| generation.routes.name(route));
            metrics.step_up(rule);
        }
        (outcome, None)
    };
    tracing::info!(
        target: "stepup::access",
        method = %method,
        path = %uri.path(),
        status = status.as_u16(),
        outcome = outcome.as_str(),
        route = generation.routes.name(route),
        subject = subject.as_deref().unwrap_or("-"),
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    );
    response
}

/// A request for a public upstream: forwarded as it is, no token asked.
async fn forward_public(gateway: &Gateway, request: Request<Body>, arrived: Instant) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let metrics = &gateway.inner.metrics;
    let response = gateway.inner.proxy.forward(request, metrics).await;
    let elapsed = arrived.elapsed();
    metrics.request_latency.observe(elapsed);
    let failed = response.extensions().get::<Forwarded>().is_none_or(|f| f.failed);
    let outcome = if failed {
        Outcome::UpstreamError
    } else {
        Outcome::Public
    };
    metrics.count_outcome(outcome);
    tracing::info!(
        target: "stepup::access",
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        outcome = outcome.as_str(),
        route = "-",
        subject = "-",
        micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
    );
    response
}

/// Requests whose spelling an upstream may read differently from the
/// policy: a lower-case method, `;` path parameters, empty segments, or a
/// path that reaches another rule once lower-cased, without its trailing
/// `/` or its last segment's `.ext` (frameworks that ignore case, trailing
/// slashes or format suffixes would run the protected handler under a
/// weaker rule). The guard in-process matches as its router does; in front
/// of an unknown upstream, ambiguity is refused.
fn ambiguous(policy: &Policy, method: &str, path: &str) -> Option<&'static str> {
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Some("methods are upper case");
    }
    if path.contains(';') {
        return Some("path parameters (;) are not accepted");
    }
    if path.contains("//") {
        return Some("empty path segments are not accepted");
    }
    let last_segment = &path[path.rfind('/').unwrap_or(0)..];
    let unusual = path.bytes().any(|b| b.is_ascii_uppercase())
        || (path.len() > 1 && path.ends_with('/'))
        || last_segment[1.min(last_segment.len())..].contains('.');
    if !unusual {
        // Nothing to compare: the common case allocates nothing.
        return None;
    }
    let mut normalized = path.to_ascii_lowercase();
    if normalized.len() > 1 && normalized.ends_with('/') {
        normalized.pop();
    }
    if let Some(slash) = normalized.rfind('/')
        && let Some(dot) = normalized[slash..].rfind('.')
        && dot > 1
    {
        normalized.truncate(slash + dot);
    }
    if normalized == path {
        return None;
    }
    let rule = |p: &str| policy.route_index(method, p).ok().flatten();
    (rule(path) != rule(&normalized))
        .then_some("this spelling of the path reaches another rule than its usual form: use the usual form")
}

fn classify(rejection: Option<&Rejection>) -> Outcome {
    let Some(rejection) = rejection else {
        return Outcome::Denied;
    };
    if rejection.status.is_server_error() {
        return Outcome::Unavailable;
    }
    match rejection.challenge.as_ref().and_then(|c| c.error.as_ref()) {
        Some(ErrorCode::InsufficientUserAuthentication | ErrorCode::InsufficientScope) => Outcome::StepUp,
        _ => Outcome::Denied,
    }
}
