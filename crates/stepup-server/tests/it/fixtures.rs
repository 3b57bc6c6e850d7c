//! A running server on an ephemeral port, on the backend a test asks for.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use ring::rand::SystemRandom;
use serde_json::Value;
use stepup_core::{Clock, Scope, UnixTime};
use stepup_server::client::{AuthMethod, Registration, register};
use stepup_server::{Config, ServerState, Store, router};

pub const NOW: i64 = 1_800_000_000;
pub const API: &str = "https://api.example";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a scenario once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::fixtures::Backend::Sqlite).await;
            }
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::fixtures::Backend::Postgres).await;
            }
        }
    };
}

#[derive(Debug, Default)]
pub struct TestClock(pub AtomicI64);

impl Clock for TestClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// A fresh, empty database URL for the backend (a temp file, or a new
/// PostgreSQL schema).
pub async fn database_url(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(unique("stepup-server-test"));
            std::fs::create_dir_all(&dir).unwrap();
            format!("sqlite://{}", dir.join("stepup.db").display())
        }
        Backend::Postgres => {
            let base = std::env::var("STEPUP_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let schema = unique("stepup_test");
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&base)
                .await
                .expect("PostgreSQL at STEPUP_TEST_POSTGRES_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}options=-csearch_path%3D{schema}")
        }
    }
}

pub fn config_toml(issuer: &str, database_url: &str) -> String {
    format!(
        r#"
issuer = "{issuer}"
database_url = "{database_url}"
audiences = ["{API}", "https://other-api.example"]

[[level]]
name = "pwd"
acr = "urn:stepup:acr:pwd"
factors = [["pwd"]]

[[level]]
name = "mfa"
acr = "urn:stepup:acr:mfa"
factors = [["pwd", "otp"], ["hwk"]]

[[level]]
name = "phr"
acr = "urn:stepup:acr:phr"
factors = [["hwk"]]

[scopes]
"payments:write" = {{ level = "mfa", max_age = 300 }}
"payees:write" = {{ level = "mfa", approve = true, description = "Add payees" }}
"#
    )
}

/// Rate limits no test reaches unless it means to.
pub const TEST_RATE_LIMITS: &str = r#"
[rate_limit]
authorize = { burst = 10000, per_minute = 10000 }
par = { burst = 10000, per_minute = 10000 }
token = { burst = 10000, per_minute = 10000 }
login = { burst = 10000, per_minute = 10000 }
account = { burst = 10000, per_minute = 10000 }
user = { burst = 10000, per_minute = 10000 }
"#;

/// How many rows `table` holds.
pub async fn count_rows(s: &TestServer, table: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&s.state.config.database_url)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

pub struct TestServer {
    pub issuer: String,
    /// Where this instance listens (differs from the issuer behind a shared name).
    pub base: String,
    pub state: Arc<ServerState>,
    pub clock: Arc<TestClock>,
    pub http: reqwest::Client,
}

/// Starts a server on an ephemeral port over `database_url`.
pub async fn start_on(database_url: &str) -> TestServer {
    start_instance(database_url, None).await
}

/// Starts one instance; `issuer` is shared by several instances of one server.
pub async fn start_instance(database_url: &str, issuer: Option<&str>) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let issuer = issuer.map_or_else(|| base.clone(), str::to_owned);
    serve(listener, database_url, base, issuer).await
}

/// Starts a server whose issuer is `http://localhost:PORT`: a domain, so
/// it can be a WebAuthn relying party (an IP address cannot).
pub async fn start_by_name(backend: Backend) -> TestServer {
    let database_url = database_url(backend).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    serve(listener, &database_url, base, format!("http://localhost:{port}")).await
}

async fn serve(
    listener: tokio::net::TcpListener,
    database_url: &str,
    base: String,
    issuer: String,
) -> TestServer {
    serve_with(listener, database_url, base, issuer, "", None).await
}

/// A server whose configuration gets `extra` TOML, with `geo` to look
/// client addresses up.
pub async fn start_with(
    backend: Backend,
    extra: &str,
    geo: Option<Arc<dyn stepup_guard::risk::GeoLookup>>,
) -> TestServer {
    let database_url = database_url(backend).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    serve_with(listener, &database_url, base.clone(), base, extra, geo).await
}

async fn serve_with(
    listener: tokio::net::TcpListener,
    database_url: &str,
    base: String,
    issuer: String,
    extra: &str,
    geo: Option<Arc<dyn stepup_guard::risk::GeoLookup>>,
) -> TestServer {
    // Tests sign in many times at a fixed clock from one address: rate
    // limits on, but far above what they do, unless a test sets its own.
    let limits = if extra.contains("[rate_limit]") {
        ""
    } else {
        TEST_RATE_LIMITS
    };
    let source = format!("{}{extra}{limits}", config_toml(&issuer, database_url));
    let config = Config::from_toml("test.toml", &source).unwrap();
    let store = Store::connect(&config.database_url).await.unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(NOW)));
    let state = ServerState::with_geo(config, store, clock.clone(), geo)
        .await
        .unwrap();
    let app = router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TestServer {
        issuer,
        base,
        state,
        clock,
        http: reqwest::Client::new(),
    }
}

pub async fn start(backend: Backend) -> TestServer {
    start_on(&database_url(backend).await).await
}

pub struct Registered {
    pub id: String,
    pub secret: String,
}

impl TestServer {
    pub async fn register(
        &self,
        id: &str,
        method: AuthMethod,
        grants: &[&str],
        scopes: &[&str],
    ) -> Registered {
        let (client, secret) = register(
            &self.state.store,
            Registration {
                client_id: id.into(),
                auth_method: method,
                redirect_uris: vec!["https://app.example/cb".into()],
                grant_types: grants.iter().map(|g| g.to_string()).collect(),
                scopes: scopes.iter().map(|s| Scope::new(*s).unwrap()).collect(),
                require_par: false,
                require_dpop: false,
                jwks: None,
                audiences: Vec::new(),
            },
            NOW,
            &SystemRandom::new(),
        )
        .await
        .unwrap();
        Registered {
            id: client.id,
            secret: secret.map(|s| s.expose_secret().to_owned()).unwrap_or_default(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a form, optionally with Basic credentials; returns status, headers and JSON.
    pub async fn post(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, headers, json)
    }

    pub async fn get_json(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap())
    }
}
