//! `stepup demo`: the whole loop on one machine, no configuration. The
//! authorization server (SQLite in a data directory), a banking API behind
//! the guard, and a web app that calls it and runs the step-ups it asks
//! for.
//!
//! The web app is a backend for frontend (the pattern the OAuth browser
//! apps BCP recommends): tokens stay on its server, the page's script asks
//! it to call the API and is told when a step-up is needed and why.

mod api;
mod app;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use ring::rand::SystemRandom;
use stepup_core::{Clock, Policy, Scope, SystemClock};
use stepup_guard::activity::{ActivityOptions, MemoryActivity};
use stepup_guard::amount::AmountSource;
use stepup_guard::dpop::{DpopOptions, MemoryReplayCache};
use stepup_guard::risk::{GeoLookup, RiskOptions};
use stepup_guard::transaction::{TransactionOptions, TransactionRule};
use stepup_guard::{Guard, HttpFetcher, JwtVerifier, TokenVerifier};
use stepup_server::client::{AuthMethod, Registration, register};
use stepup_server::{Config, ServerState, users};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::serve::{open_store, runtime};

/// `stepup demo` arguments.
#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Where the demo keeps its database.
    #[arg(long, default_value = "stepup-demo")]
    data_dir: PathBuf,
    /// The first of four ports: authorization server, banking API, web
    /// app, the banking API behind the gateway (0: any free ports).
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

/// The demo user.
pub(crate) const USER: &str = "demo";
/// The demo user's password (a demo: printed, and the same everywhere).
pub(crate) const PASSWORD: &str = "demo-password";
/// The web app's client id.
pub(crate) const APP_CLIENT: &str = "demo-web";
/// The CLI's client id (`stepup call`).
const CLI_CLIENT: &str = "stepup-cli";

/// The demo's policy: the example banking policy of this repository.
const POLICY: &str = include_str!("../../../../policies/bank.toml");

async fn listen(port: u16) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} (another demo running? try --port)"))?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// What is reached by the name `localhost`: 127.0.0.1 and the same port
/// of `[::1]`. A system that resolves the name to `::1` first would
/// otherwise connect to whatever another local user put there, and take
/// its keys and sign-in pages for the demo's (RFC 8252 §8.3). A machine
/// without IPv6 has no `::1` to take.
struct Localhost {
    v4: TcpListener,
    v6: Option<TcpListener>,
    addr: SocketAddr,
}

/// Listens on `port` of both loopback addresses (with port 0, the same
/// port the system picks for 127.0.0.1, tried again if `[::1]` has it in
/// use).
async fn listen_localhost(port: u16) -> Result<Localhost> {
    for _ in 0..20 {
        let (v4, addr) = listen(port).await?;
        match TcpListener::bind(("::1", addr.port())).await {
            Ok(v6) => {
                return Ok(Localhost {
                    v4,
                    v6: Some(v6),
                    addr,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if port != 0 {
                    return Err(anyhow!(
                        "another program listens on [::1]:{port}, where the name localhost may lead: stop it or pick another --port"
                    ));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "no IPv6 loopback; localhost is 127.0.0.1 only");
                return Ok(Localhost { v4, v6: None, addr });
            }
        }
    }
    Err(anyhow!("no port free on both 127.0.0.1 and [::1]"))
}

/// Serves `router` on both addresses of `listeners`.
fn serve_localhost(listeners: Localhost, router: axum::Router) {
    if let Some(v6) = listeners.v6 {
        tokio::spawn(serve(v6, router.clone()));
    }
    tokio::spawn(serve(listeners.v4, router));
}

fn next(port: u16, n: u16) -> u16 {
    if port == 0 { 0 } else { port.saturating_add(n) }
}

/// A running demo: its addresses, and the server's state (to add users).
pub(crate) struct Deployment {
    /// The authorization server.
    pub(crate) issuer: String,
    /// The banking API behind the in-process guard.
    pub(crate) api_url: String,
    /// The same API behind the gateway.
    pub(crate) gateway_url: String,
    /// The web app.
    pub(crate) app_url: String,
    /// The demo user's TOTP secret (base32).
    pub(crate) totp: String,
    /// The authorization server's state.
    pub(crate) state: Arc<ServerState>,
    /// Where client addresses are located, when a simulation says.
    geo: Option<Arc<dyn GeoLookup>>,
}

impl Deployment {
    /// Another instance of the authorization server on the same database
    /// and keys (so the same issuer), whose clock is `offset_seconds` off:
    /// what it issues looks issued in the past or the future. For the
    /// simulator's attackers (a token stolen from an old log). Its address.
    pub(crate) async fn shifted_server(&self, offset_seconds: i64) -> Result<String> {
        let clock = Arc::new(ShiftedClock(offset_seconds));
        let state = ServerState::with_geo(
            self.state.config.clone(),
            self.state.store.clone(),
            clock,
            self.geo.clone(),
        )
        .await?;
        let listeners = listen_localhost(0).await?;
        let port = listeners.addr.port();
        serve_localhost(listeners, stepup_server::router(state));
        Ok(format!("http://localhost:{port}"))
    }

    /// Adds a user with a password and nothing else.
    pub(crate) async fn add_password_user(&self, username: &str, password: &str) -> Result<()> {
        let now = SystemClock.now().seconds();
        users::add_user(&self.state.store, username, password, now, &SystemRandom::new()).await?;
        Ok(())
    }

    /// Adds a user with a password and an enrolled TOTP secret.
    pub(crate) async fn add_user(
        &self,
        username: &str,
        password: &str,
    ) -> Result<stepup_core::totp::TotpSecret> {
        let rng = SystemRandom::new();
        let now = SystemClock.now().seconds();
        users::add_user(&self.state.store, username, password, now, &rng).await?;
        Ok(users::enroll_totp(&self.state.store, username, &rng).await?)
    }
}

/// The system clock, shifted.
struct ShiftedClock(i64);

impl Clock for ShiftedClock {
    fn now(&self) -> stepup_core::UnixTime {
        stepup_core::UnixTime(SystemClock.now().seconds() + self.0)
    }
}

pub(crate) fn run(args: DemoArgs) -> Result<ExitCode> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,stepup=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    runtime()?.block_on(async move {
        let d = start(&args.data_dir, args.port).await?;
        let (issuer, api_url, gateway_url, app_url, totp) = (&d.issuer, &d.api_url, &d.gateway_url, &d.app_url, &d.totp);
        println!("stepup demo is running (data in {}).", args.data_dir.display());
        println!();
        println!("  Web app:              {app_url}/");
        println!("  Authorization server: {issuer}");
        println!("  Banking API:          {api_url}");
        println!("  The same API behind the gateway: {gateway_url}");
        println!();
        println!("  Sign in as {USER} / {PASSWORD}; TOTP secret {totp} (the code page shows the current code: demo only).");
        println!("  Passkeys: add one at {issuer}/account/passkeys.");
        println!("  From a terminal: stepup call --issuer {issuer} --scope accounts:read {api_url}/accounts/42/balance");
        println!();
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts the demo on `port` and the three after it (0: any free ports),
/// with its data in `data_dir`.
pub(crate) async fn start(data_dir: &std::path::Path, port: u16) -> Result<Deployment> {
    start_with(data_dir, port, None).await
}

/// [`start`], with client addresses located by `geo` (a simulation's
/// table). Then the server and the guard also believe `X-Forwarded-For`
/// from loopback: the simulation plays the load balancer in front, so
/// each virtual user can come from its own address.
pub(crate) async fn start_with(
    data_dir: &std::path::Path,
    port: u16,
    geo: Option<Arc<dyn GeoLookup>>,
) -> Result<Deployment> {
    let behind_balancer = if geo.is_some() {
        "\n[risk]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    } else {
        ""
    };
    let as_listeners = listen_localhost(port).await?;
    let as_addr = as_listeners.addr;
    let (api_listener, api_addr) = listen(next(port, 1)).await?;
    let app_listeners = listen_localhost(next(port, 2)).await?;
    let app_addr = app_listeners.addr;
    let (gateway_listener, gateway_addr) = listen(next(port, 3)).await?;
    // The gateway's upstream: loopback, any port, reached only through it.
    let (upstream_listener, upstream_addr) = listen(0).await?;
    // The server and the app on localhost, not 127.0.0.1: passkeys need a
    // domain name. The resources on the IP literal: tokens go over plain
    // http only to that (a name may resolve elsewhere, RFC 8252 §8.3).
    let issuer = format!("http://localhost:{}", as_addr.port());
    let api_url = format!("http://127.0.0.1:{}", api_addr.port());
    let app_url = format!("http://localhost:{}", app_addr.port());
    let gateway_url = format!("http://127.0.0.1:{}", gateway_addr.port());

    std::fs::create_dir_all(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let database = data_dir.join("stepup.db");
    let config = Config::from_toml(
        "demo configuration",
        &format!(
            r#"
issuer = "{issuer}"
database_url = "sqlite://{database}"
# Two resources (RFC 8707): the API behind the guard, and the same API
# behind the gateway; a token is for one of them only.
audiences = ["{api_url}", "{gateway_url}"]

[[level]]
name = "pwd"
acr = "urn:stepup:acr:pwd"
factors = [["pwd"]]

[[level]]
name = "mfa"
acr = "urn:stepup:acr:mfa"
factors = [["pwd", "otp"], ["hwk"]]
lifetime_seconds = 900

[[level]]
name = "phr"
acr = "urn:stepup:acr:phr"
factors = [["hwk"]]
lifetime_seconds = 900

[scopes]
# Moves money: the user approves it on a page at every request.
"payments:write" = {{ level = "mfa", max_age = 300, approve = true, description = "Make payments and change payment details" }}

# Elevated tokens live no longer than the strictest max_age they serve (60 s).
[tokens]
elevated_access_token_seconds = 60

# A large transfer is approved for itself (RFC 9396): amount and creditor.
[authorization_details.payment_initiation]
fields = ["amount", "currency", "creditor"]
level = "mfa"
max_age = 60
token_seconds = 120

[login]
demo_show_totp_code = true
{behind_balancer}"#,
            database = database.display()
        ),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let store = open_store(&config.database_url).await?;
    let state = ServerState::with_geo(config, store, Arc::new(SystemClock), geo.clone()).await?;
    let totp = provision(&state, &app_url, &[&api_url, &gateway_url]).await?;

    serve_localhost(as_listeners, stepup_server::router(Arc::clone(&state)));
    let verifier = JwtVerifier::from_issuer(&issuer, &api_url, HttpFetcher::new()?)
        .await
        .context("the guard cannot read the server's keys")?;
    let policy = Policy::from_toml("policies/bank.toml", POLICY).map_err(|e| anyhow!("{e}"))?;
    // The API says what it is (RFC 9728), and its challenges say where.
    let metadata = stepup_core::resource_metadata::ResourceMetadata {
        resource: api_url.clone(),
        authorization_servers: vec![issuer.clone()],
        scopes_supported: policy.scopes(),
        bearer_methods_supported: vec!["header".to_owned()],
        dpop_signing_alg_values_supported: stepup_core::jwk::Algorithm::ALL
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        authorization_details_types_supported: vec!["payment_initiation".to_owned()],
        resource_name: Some("stepup demo bank".to_owned()),
    };
    let guard = Guard::builder(Arc::new(policy), TokenVerifier::Jwt(Arc::new(verifier)))
        .resource_metadata(&metadata)
        .map_err(|e| anyhow!("{e}"))?
        .risk(match &geo {
            Some(geo) => risk_options()
                .geo(Arc::clone(geo))
                .trusted_proxies(vec!["127.0.0.1/32".parse().map_err(|e| anyhow!("{e:?}"))?]),
            None => risk_options(),
        })
        .transactions(transaction_options())
        // The web app's tokens are bound to its key (DPoP); other
        // clients (stepup call, third parties) may use bearer tokens.
        .dpop(DpopOptions::new(api_url.clone()))
        .build();
    let bank = api::Bank::new();
    tokio::spawn(serve(api_listener, api::router(bank.clone(), guard)));

    // The same API, a second way: a plain upstream behind the gateway, a
    // resource of its own (its tokens are not the guarded API's).
    let gateway = start_gateway(data_dir, &issuer, &gateway_url, upstream_addr).await?;
    tokio::spawn(serve(upstream_listener, api::upstream_router(bank)));
    tokio::spawn(async move {
        if let Err(e) = gateway.serve(gateway_listener, std::future::pending()).await {
            tracing::error!(error = %e, "the demo gateway stopped");
        }
    });
    let app = app::App::new(&issuer, &api_url, &app_url).await?;
    serve_localhost(app_listeners, app::router(app));

    Ok(Deployment {
        geo,
        issuer,
        api_url,
        gateway_url,
        app_url,
        totp,
        state,
    })
}

/// The gateway in front of the plain banking API: the same policy (a file
/// in the data directory, reloaded when edited), keys by discovery, DPoP,
/// amounts and the large-transfer binding, as configured in TOML.
async fn start_gateway(
    data_dir: &std::path::Path,
    issuer: &str,
    gateway_url: &str,
    upstream: SocketAddr,
) -> Result<stepup_gateway::Gateway> {
    let policy = data_dir.join("gateway-policy.toml");
    std::fs::write(&policy, POLICY).with_context(|| format!("cannot write {}", policy.display()))?;
    let config = format!(
        r#"
listen = "127.0.0.1:0"
policy = "gateway-policy.toml"
issuer = "{issuer}"
audience = "{gateway_url}"
dpop_origin = "{gateway_url}"

[amount]
amount_pointer = "/amount"
currency_pointer = "/currency"

[[transaction]]
route = "large transfer"
type = "payment_initiation"
fields = {{ amount = "/amount", currency = "/currency", creditor = "/to" }}

[[upstream]]
prefix = "/"
url = "http://{upstream}"
"#
    );
    let config_path = data_dir.join("gateway.toml");
    std::fs::write(&config_path, config)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let config = stepup_gateway::GatewayConfig::load(&config_path).map_err(|e| anyhow!("{e}"))?;
    let gateway = stepup_gateway::Gateway::new(config).map_err(|e| anyhow!("{e}"))?;
    // The demo's issuer is up already: a mistake shows at once.
    gateway.load_keys().await.map_err(|e| anyhow!("{e}"))?;
    let _watcher = gateway.watch_policy(std::time::Duration::from_secs(1));
    Ok(gateway)
}

/// What the demo's guard observes: the amount of transfers (for the
/// policy's "large amount" rule) and each user's activity in memory
/// (bursts, travel). Geolocation needs a MaxMind database, which the demo
/// does not ship.
pub(crate) fn risk_options() -> RiskOptions {
    RiskOptions::new()
        .amount(AmountSource::new("/amount", Some("/currency".to_owned())))
        .activity(Arc::new(MemoryActivity::new(ActivityOptions::default())))
}

/// Large transfers need a token approved for that very transfer (amount,
/// currency, creditor), used once.
pub(crate) fn transaction_options() -> TransactionOptions {
    let rule = TransactionRule {
        route: "large transfer".into(),
        details_type: "payment_initiation".into(),
        fields: vec![
            ("amount".into(), "/amount".into()),
            ("currency".into(), "/currency".into()),
            ("creditor".into(), "/to".into()),
        ],
        // The amount by value ("5000.00" is 5000); the creditor and
        // currency exactly as approved.
        amount_fields: vec!["amount".into()],
        max_token_seconds: 300,
    };
    TransactionOptions::new(vec![rule], Arc::new(MemoryReplayCache::new(100_000)))
}

/// Every demo server within the default bounds on slow and idle clients,
/// as `stepup serve` and the gateway are: the demo is what people try
/// attacks on.
async fn serve(listener: TcpListener, router: axum::Router) {
    let limits = stepup_guard::serve::ConnectionLimits::default();
    if let Err(e) = stepup_guard::serve::serve(listener, router, limits, std::future::pending()).await {
        tracing::error!(error = %e, "a demo server stopped");
    }
}

/// Creates on first start what the demo needs: the user with a TOTP
/// secret, the web app's and the CLI's clients. Returns the TOTP secret,
/// base32. Later starts find them (the web app's redirect URI follows its
/// port).
async fn provision(state: &ServerState, app_url: &str, resources: &[&str]) -> Result<String> {
    let store = &state.store;
    let rng = SystemRandom::new();
    let now = SystemClock.now().seconds();
    if store.user_by_username(USER).await?.is_none() {
        users::add_user(store, USER, PASSWORD, now, &rng).await?;
        users::enroll_totp(store, USER, &rng).await?;
    }
    let user = store
        .user_by_username(USER)
        .await?
        .ok_or_else(|| anyhow!("the demo user is missing"))?;
    let secret = users::totp_secret(&user).ok_or_else(|| anyhow!("the demo user has no TOTP secret"))?;
    let scopes = |list: &[&str]| -> Result<Vec<Scope>> {
        list.iter()
            .map(|s| Scope::new(*s).map_err(|e| anyhow!("scope {s}: {e}")))
            .collect()
    };
    let redirect = format!("{app_url}/callback");
    let wanted = [
        (APP_CLIENT, redirect.as_str()),
        (CLI_CLIENT, "http://127.0.0.1/callback"),
    ];
    for (client_id, redirect_uri) in wanted {
        let existing = store.client(client_id).await?;
        let registered = existing
            .as_ref()
            .and_then(|c| serde_json::from_str::<Vec<String>>(&c.redirect_uris).ok())
            .unwrap_or_default();
        let audiences = existing
            .as_ref()
            .and_then(|c| c.audiences.as_deref())
            .and_then(|a| serde_json::from_str::<Vec<String>>(a).ok())
            .unwrap_or_default();
        if registered.iter().any(|r| r == redirect_uri) && audiences == resources {
            continue;
        }
        if existing.is_some() {
            store.delete_client(client_id).await?;
        }
        register(
            store,
            Registration {
                client_id: client_id.to_owned(),
                auth_method: AuthMethod::None,
                redirect_uris: vec![redirect_uri.to_owned()],
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                scopes: scopes(&["openid", "accounts:read", "payments:write"])?,
                require_par: false,
                require_dpop: false,
                jwks: None,
                // Both doors of the API; the first is the default.
                audiences: resources.iter().map(|r| (*r).to_owned()).collect(),
            },
            now,
            &rng,
        )
        .await?;
    }
    Ok(users::base32(secret.expose_seed()))
}
