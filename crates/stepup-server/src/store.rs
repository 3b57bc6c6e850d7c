//! Persistence: SQLite (a file in the data directory) or PostgreSQL, through
//! one code path. Queries are written once with `?` placeholders and
//! numbered for PostgreSQL; the schema uses only types both agree on.

use std::borrow::Cow;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use thiserror::Error;

/// A storage failure.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: expected sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The database said no.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value that does not parse.
    #[error("corrupt stored value in {table}.{column}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
    },
    /// An insert that collided with an existing row.
    #[error("{0} already exists")]
    Duplicate(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// Numbered migrations, applied in order, each once, in a transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_initial.sql")),
    (2, include_str!("../migrations/0002_users_sessions_codes.sql")),
    (3, include_str!("../migrations/0003_pushed_requests.sql")),
    (4, include_str!("../migrations/0004_private_key_jwt.sql")),
    (5, include_str!("../migrations/0005_otp_attempts.sql")),
    (6, include_str!("../migrations/0006_family_users.sql")),
    (7, include_str!("../migrations/0007_passkeys.sql")),
    (8, include_str!("../migrations/0008_dpop.sql")),
    (9, include_str!("../migrations/0009_code_failures_and_timing.sql")),
    (10, include_str!("../migrations/0010_client_audiences.sql")),
    (11, include_str!("../migrations/0011_known_devices.sql")),
    (12, include_str!("../migrations/0012_server_secrets.sql")),
    (13, include_str!("../migrations/0013_strong_known_devices.sql")),
    (14, include_str!("../migrations/0014_security_events.sql")),
    (15, include_str!("../migrations/0015_disabled_users.sql")),
    (16, include_str!("../migrations/0016_user_countries.sql")),
    (17, include_str!("../migrations/0017_event_counts.sql")),
];

/// The server's database.
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads; on PostgreSQL, everything.
    pool: AnyPool,
    /// On SQLite, one connection for every write. SQLite lets one writer in
    /// at a time; with several connections writing, the others wait in
    /// SQLite's busy handler, which sleeps 1, 2, 5… up to 100 ms between
    /// tries. Measured with the token bench: rotating refresh had a p99 of
    /// ≈39 ms that way. Waiting for the writer connection in the pool's
    /// queue instead costs nothing beyond the turn. On PostgreSQL, the
    /// same pool as reads.
    writer: AnyPool,
    backend: Backend,
}

/// A security event as stored (see `crate::events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Random id.
    pub id: String,
    /// The user whose account it concerns.
    pub user_id: String,
    /// What happened (`crate::events::EventKind` names).
    pub kind: String,
    /// When (seconds since the epoch).
    pub at: i64,
    /// The client's address, as the server saw it through trusted proxies.
    pub client_address: Option<String>,
    /// Its country, when located.
    pub country: Option<String>,
    /// The client's `User-Agent`, cut short.
    pub user_agent: Option<String>,
    /// More about it (which factor, why), for people.
    pub detail: String,
    /// When it is deleted.
    pub expires_at: i64,
    /// How many times it happened (refused sign-ins of one hour are kept
    /// as one event).
    pub count: i64,
    /// Orders the events of one second (it only grows, per instance).
    pub seq: i64,
}

/// A signing key as stored.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// JWS algorithm name.
    pub alg: String,
    /// PKCS#8 document, base64 (standard alphabet).
    pub pkcs8: String,
    /// When it was created.
    pub created_at: i64,
    /// When it stopped signing, if it has.
    pub retired_at: Option<i64>,
}

/// A registered client as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredClient {
    /// The client id.
    pub client_id: String,
    /// Hex SHA-256 of the secret, for confidential clients.
    pub secret_sha256: Option<String>,
    /// `client_secret_basic`, `client_secret_post` or `none`.
    pub auth_method: String,
    /// JSON array of exact redirect URIs.
    pub redirect_uris: String,
    /// JSON array of grant types.
    pub grant_types: String,
    /// Space-separated scopes the client may ask for.
    pub scopes: String,
    /// Whether authorization requests must be pushed (RFC 9126).
    pub require_par: bool,
    /// Whether tokens must be bound to a key with DPoP (RFC 9449).
    pub require_dpop: bool,
    /// When it was registered.
    pub created_at: i64,
    /// Public keys (a JWK Set) for `private_key_jwt`.
    pub jwks: Option<String>,
    /// JSON array of the audiences it may get tokens for; `None`: the
    /// default audience only.
    pub audiences: Option<String>,
}

impl Store {
    /// Connects and brings the schema up to date. `sqlite://PATH` creates the
    /// file if needed; `postgres://...` may carry `options=-csearch_path%3D<schema>`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url, max) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.trim_start_matches("//");
            let url = if rest.contains('?') {
                format!("sqlite://{rest}")
            } else {
                format!("sqlite://{rest}?mode=rwc")
            };
            // SQLite serialises writers anyway; a few connections serve reads.
            (Backend::Sqlite, url, 4)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_owned(), 16)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        // sqlx pings a connection each time the pool lends it out, by
        // default: on SQLite that is one more round trip to the
        // connection's worker thread per statement, for a connection to a
        // local file that cannot go stale. PostgreSQL's can (a server
        // restart, a proxy's idle timeout): there the ping stays.
        let options = || AnyPoolOptions::new().test_before_acquire(backend == Backend::Postgres);
        let pool = options().max_connections(max).connect(&url).await?;
        let writer = match backend {
            Backend::Sqlite => options().max_connections(1).connect(&url).await?,
            Backend::Postgres => pool.clone(),
        };
        let store = Self {
            pool,
            writer,
            backend,
        };
        if backend == Backend::Sqlite {
            // WAL lets readers proceed during a write; busy_timeout waits for
            // the writer instead of failing.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&store.pool)
                .await?;
            sqlx::query("PRAGMA busy_timeout = 5000")
                .execute(&store.pool)
                .await?;
        }
        store.migrate().await?;
        Ok(store)
    }

    /// A transaction that reads, then writes. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`): a deferred one that read first
    /// fails with "database is locked" when another writer commits in
    /// between, and no busy timeout helps then (found by `stepup sim`).
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Where single-statement writes go (see `writer`).
    fn writes(&self) -> &AnyPool {
        &self.writer
    }

    /// Rewrites `?` placeholders as `$1, $2, …` for PostgreSQL. Only ever
    /// given literal queries: values always travel as bound parameters.
    fn sql(&self, query: &'static str) -> AssertSqlSafe<Cow<'static, str>> {
        AssertSqlSafe(match self.backend {
            Backend::Sqlite => Cow::Borrowed(query),
            Backend::Postgres => {
                let mut out = String::with_capacity(query.len() + 8);
                let mut n = 0;
                for c in query.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(self.writes())
            .await?;
        for (version, script) in MIGRATIONS {
            let mut tx = self.begin_write().await?;
            let applied = sqlx::query(self.sql("SELECT version FROM schema_migrations WHERE version = ?"))
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await?;
            if applied.is_some() {
                continue;
            }
            // Comment lines go first: they may contain ';'.
            let script: String = script
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(AssertSqlSafe(statement.to_owned()))
                    .execute(&mut *tx)
                    .await?;
            }
            let inserted = sqlx::query(self.sql("INSERT INTO schema_migrations (version) VALUES (?)"))
                .bind(*version)
                .execute(&mut *tx)
                .await;
            match inserted {
                Ok(_) => tx.commit().await?,
                // Another instance applied it concurrently: its transaction won.
                Err(e) if is_unique_violation(&e) => tx.rollback().await?,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// All signing keys, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, pkcs8, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredKey {
                    kid: r.try_get("kid")?,
                    alg: r.try_get("alg")?,
                    pkcs8: r.try_get("pkcs8")?,
                    created_at: r.try_get("created_at")?,
                    retired_at: r.try_get("retired_at")?,
                })
            })
            .collect()
    }

    /// Adds a signing key.
    pub async fn insert_signing_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO signing_keys (kid, alg, pkcs8, created_at, retired_at) VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.pkcs8)
        .bind(key.created_at)
        .bind(key.retired_at)
        .execute(self.writes())
        .await
        .map_err(|e| duplicate(e, format!("signing key {}", key.kid)))?;
        Ok(())
    }

    /// Stops every active key from signing, as of `now`.
    pub async fn retire_signing_keys(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(self.sql("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL"))
            .bind(now)
            .execute(self.writes())
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes keys retired before `before` (their tokens have all expired).
    pub async fn delete_signing_keys_retired_before(&self, before: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query(self.sql("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?"))
                .bind(before)
                .execute(self.writes())
                .await?;
        Ok(done.rows_affected())
    }

    /// Registers a client.
    pub async fn insert_client(&self, c: &StoredClient) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO clients (client_id, secret_sha256, auth_method, redirect_uris, grant_types, scopes, require_par, require_dpop, created_at, jwks, audiences) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&c.client_id)
        .bind(&c.secret_sha256)
        .bind(&c.auth_method)
        .bind(&c.redirect_uris)
        .bind(&c.grant_types)
        .bind(&c.scopes)
        .bind(i64::from(c.require_par))
        .bind(i64::from(c.require_dpop))
        .bind(c.created_at)
        .bind(&c.jwks)
        .bind(&c.audiences)
        .execute(self.writes())
        .await
        .map_err(|e| duplicate(e, format!("client {}", c.client_id)))?;
        Ok(())
    }

    /// Replaces what a client may do (redirect URIs, grants, scopes,
    /// audiences, PAR and DPoP requirements); its id, authentication and
    /// creation time stay.
    pub async fn update_client(&self, c: &StoredClient) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE clients SET redirect_uris = ?, grant_types = ?, scopes = ?, require_par = ?, require_dpop = ?, audiences = ? WHERE client_id = ?",
        ))
        .bind(&c.redirect_uris)
        .bind(&c.grant_types)
        .bind(&c.scopes)
        .bind(i64::from(c.require_par))
        .bind(i64::from(c.require_dpop))
        .bind(&c.audiences)
        .bind(&c.client_id)
        .execute(self.writes())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a client assertion id; false if it was already used.
    pub async fn use_assertion(&self, id: &str, expires_at: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query(self.sql(
                "INSERT INTO used_assertions (id, expires_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            ))
            .bind(id)
            .bind(expires_at)
            .execute(self.writes())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a client; false if there was none by that id.
    pub async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql("DELETE FROM clients WHERE client_id = ?"))
            .bind(client_id)
            .execute(self.writes())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets whether a client must push its authorization requests.
    pub async fn set_client_require_par(&self, client_id: &str, require: bool) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql("UPDATE clients SET require_par = ? WHERE client_id = ?"))
            .bind(i64::from(require))
            .bind(client_id)
            .execute(self.writes())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Looks a client up.
    pub async fn client(&self, client_id: &str) -> Result<Option<StoredClient>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT client_id, secret_sha256, auth_method, redirect_uris, grant_types, scopes, require_par, require_dpop, created_at, jwks, audiences FROM clients WHERE client_id = ?",
        ))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// All clients, by id.
    pub async fn clients(&self) -> Result<Vec<StoredClient>, StoreError> {
        let rows = sqlx::query(
            "SELECT client_id, secret_sha256, auth_method, redirect_uris, grant_types, scopes, require_par, require_dpop, created_at, jwks, audiences FROM clients ORDER BY client_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Records that the token `jti` is revoked until it would have expired.
    pub async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        // Revoking twice is revoking.
        sqlx::query(
            self.sql(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
            ),
        )
        .bind(jti)
        .bind(expires_at)
        .execute(self.writes())
        .await?;
        Ok(())
    }

    /// Whether the token `jti` was revoked.
    pub async fn is_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(self.sql("SELECT jti FROM revoked_tokens WHERE jti = ?"))
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Whether the token `jti` of `client_id` is still honoured: not
    /// revoked, and its client not removed. One read for both.
    pub async fn is_token_live(&self, jti: &str, client_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT (SELECT COUNT(*) FROM revoked_tokens WHERE jti = ?) AS revoked, \
             (SELECT COUNT(*) FROM clients WHERE client_id = ?) AS clients",
        ))
        .bind(jti)
        .bind(client_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("revoked")? == 0 && row.try_get::<i64, _>("clients")? > 0)
    }
}

fn client_from_row(r: &AnyRow) -> Result<StoredClient, StoreError> {
    Ok(StoredClient {
        client_id: r.try_get("client_id")?,
        secret_sha256: r.try_get("secret_sha256")?,
        auth_method: r.try_get("auth_method")?,
        redirect_uris: r.try_get("redirect_uris")?,
        grant_types: r.try_get("grant_types")?,
        scopes: r.try_get("scopes")?,
        require_par: r.try_get::<i64, _>("require_par")? != 0,
        require_dpop: r.try_get::<i64, _>("require_dpop")? != 0,
        created_at: r.try_get("created_at")?,
        jwks: r.try_get("jwks")?,
        audiences: r.try_get("audiences")?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn duplicate(e: sqlx::Error, what: String) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Duplicate(what)
    } else {
        StoreError::Database(e)
    }
}

/// A user as stored.
#[derive(Debug, Clone)]
pub struct StoredUser {
    /// The subject identifier (random, stable).
    pub id: String,
    /// The login name.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// TOTP seed, base64, when enrolled.
    pub totp_seed: Option<String>,
    /// The last TOTP time step accepted (each code works once).
    pub totp_last_step: Option<i64>,
    /// Consecutive failed attempts.
    pub failed_attempts: i64,
    /// Password attempts from unknown browsers are refused until then,
    /// after too many failures.
    pub locked_until: Option<i64>,
    /// Codes are refused until then, after too many wrong codes.
    pub otp_locked_until: Option<i64>,
    /// When the user was created.
    pub created_at: i64,
    /// When an administrator disabled the account, if it is disabled.
    pub disabled_at: Option<i64>,
    /// How many passkeys the user has registered (read only: counted
    /// when the user is loaded).
    pub passkeys: i64,
}

/// A browser where a user signed in before, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDevice {
    /// SHA-256 of the cookie secret, base64url.
    pub id: String,
    /// The user who signed in there.
    pub user_id: String,
    /// Consecutive failed password attempts from this browser.
    pub failed_attempts: i64,
    /// When it was first remembered.
    pub created_at: i64,
    /// When it is forgotten, unless the user signs in there again.
    pub expires_at: i64,
    /// Whether the account's second factor was proven there (not the
    /// password alone).
    pub strong: bool,
}

/// A browser session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// SHA-256 of the cookie secret, base64url.
    pub id: String,
    /// The user.
    pub user_id: String,
    /// When the password was last proven.
    pub pwd_at: Option<i64>,
    /// When a TOTP code was last proven.
    pub otp_at: Option<i64>,
    /// When a passkey was last proven.
    pub hwk_at: Option<i64>,
    /// When the session began.
    pub created_at: i64,
    /// When it ends.
    pub expires_at: i64,
}

/// A pending authorization request.
#[derive(Debug, Clone)]
pub struct StoredPending {
    /// Random id, carried by the login forms.
    pub id: String,
    /// The validated request, JSON.
    pub params: String,
    /// CSRF token of the forms.
    pub csrf: String,
    /// The user once identified (after the password).
    pub user_id: Option<String>,
    /// When it was made.
    pub created_at: i64,
    /// When it lapses.
    pub expires_at: i64,
}

/// What happened when a one-time value (code, refresh token) was presented.
#[derive(Debug)]
pub enum Claimed {
    /// First use: the claim, still open.
    Fresh(Claim),
    /// Already used: a replay. The family is revoked.
    Replayed {
        /// The token family.
        family_id: String,
    },
    /// Unknown.
    NotFound,
}

/// A one-time value marked used in a transaction not yet committed: the
/// grant decides what becomes of it. [`Claim::record_issued`] records the
/// tokens and commits; [`Claim::keep_used`] commits the use alone (a grant
/// refused after it was presented); [`Claim::revoke_family`] also revokes
/// its family. Dropped, it rolls back and the value stays unused.
pub struct Claim {
    /// The grant, JSON.
    pub grant_data: String,
    /// The token family.
    pub family_id: String,
    /// When the value expires.
    pub expires_at: i64,
    tx: sqlx::Transaction<'static, sqlx::Any>,
    store: Store,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("family_id", &self.family_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// Records what the grant issued in its family: the access token (so
    /// that revoking the family revokes it) and the new refresh token, if
    /// any; commits with the use of the value. False: the family was
    /// revoked, nothing was recorded and nothing may be handed out (the
    /// value stays used).
    pub async fn record_issued(
        mut self,
        access_jti: &str,
        access_exp: i64,
        refresh: Option<(&str, &str, i64)>,
    ) -> Result<bool, StoreError> {
        let store = &self.store;
        // Records the access token only if the family is live, in one
        // statement (each is a round trip under the write lock). A
        // revocation racing this grant either happens first (nothing is
        // issued) or after (and then finds this access token to revoke):
        // on SQLite the transaction holds the database's write lock since
        // `BEGIN IMMEDIATE`; on PostgreSQL the no-op update takes the
        // family's row lock, which a revocation's update waits for.
        let record_access = match store.backend {
            Backend::Sqlite => {
                "INSERT INTO family_access_tokens (jti, family_id, expires_at) \
                 SELECT ?, id, ? FROM token_families WHERE id = ? AND revoked_at IS NULL"
            }
            Backend::Postgres => {
                "WITH live AS (UPDATE token_families SET client_id = client_id \
                 WHERE id = $3 AND revoked_at IS NULL RETURNING id) \
                 INSERT INTO family_access_tokens (jti, family_id, expires_at) SELECT $1, id, $2 FROM live"
            }
        };
        let live = sqlx::query(AssertSqlSafe(record_access))
            .bind(access_jti)
            .bind(access_exp)
            .bind(&self.family_id)
            .execute(&mut *self.tx)
            .await?
            .rows_affected()
            == 1;
        if live && let Some((id, grant_data, expires_at)) = refresh {
            sqlx::query(store.sql(
                    "INSERT INTO refresh_tokens (id, grant_data, family_id, expires_at, used_at) VALUES (?, ?, ?, ?, NULL)",
                ))
                .bind(id)
                .bind(grant_data)
                .bind(&self.family_id)
                .bind(expires_at)
                .execute(&mut *self.tx)
                .await?;
        }
        self.tx.commit().await?;
        Ok(live)
    }

    /// Commits the use of the value, issuing nothing.
    pub async fn keep_used(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Commits the use of the value and revokes its family (and the access
    /// tokens it issued).
    pub async fn revoke_family(mut self, now: i64) -> Result<(), StoreError> {
        self.store
            .revoke_family_in(&mut self.tx, &self.family_id, now)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// Which factor an attempt is at (each has its own failure count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A password.
    Password,
    /// A TOTP code.
    Otp,
}

/// How many failed attempts a factor takes.
#[derive(Debug, Clone, Copy)]
pub struct AttemptLimits {
    /// Failures before a temporary lock.
    pub max_failures: i64,
    /// Wrong TOTP codes in a row, across locks, before codes are refused
    /// until an unlock.
    pub max_code_failures: i64,
}

/// Whether an attempt may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStart {
    /// Counted: check the factor, then record the verdict.
    Taken,
    /// The account is locked for a while.
    Locked,
    /// Too many wrong codes in a row: codes are refused until an unlock.
    Blocked,
}

/// Which one-time values.
#[derive(Debug, Clone, Copy)]
pub enum OneTime {
    /// Authorization codes.
    Code,
    /// Refresh tokens.
    Refresh,
}

fn user_from_row(r: &AnyRow) -> Result<StoredUser, StoreError> {
    Ok(StoredUser {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        password_hash: r.try_get("password_hash")?,
        totp_seed: r.try_get("totp_seed")?,
        totp_last_step: r.try_get("totp_last_step")?,
        failed_attempts: r.try_get("failed_attempts")?,
        locked_until: r.try_get("locked_until")?,
        otp_locked_until: r.try_get("otp_locked_until")?,
        created_at: r.try_get("created_at")?,
        disabled_at: r.try_get("disabled_at")?,
        passkeys: r.try_get("passkeys")?,
    })
}

fn session_from_row(r: &AnyRow) -> Result<StoredSession, StoreError> {
    Ok(StoredSession {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        pwd_at: r.try_get("pwd_at")?,
        otp_at: r.try_get("otp_at")?,
        hwk_at: r.try_get("hwk_at")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
    })
}

impl Store {
    /// Adds a user.
    pub async fn insert_user(&self, u: &StoredUser) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO users (id, username, password_hash, totp_seed, totp_last_step, failed_attempts, locked_until, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.password_hash)
        .bind(&u.totp_seed)
        .bind(u.totp_last_step)
        .bind(u.failed_attempts)
        .bind(u.locked_until)
        .bind(u.created_at)
        .execute(self.writes())
        .await
        .map_err(|e| duplicate(e, format!("user {}", u.username)))?;
        Ok(())
    }

    /// A user by login name.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<StoredUser>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT id, username, password_hash, totp_seed, totp_last_step, failed_attempts, locked_until, otp_locked_until, created_at, disabled_at, (SELECT COUNT(*) FROM passkeys WHERE passkeys.user_id = users.id) AS passkeys FROM users WHERE username = ?",
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// A user by subject id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<StoredUser>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT id, username, password_hash, totp_seed, totp_last_step, failed_attempts, locked_until, otp_locked_until, created_at, disabled_at, (SELECT COUNT(*) FROM passkeys WHERE passkeys.user_id = users.id) AS passkeys FROM users WHERE id = ?",
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// All users, by name.
    pub async fn users(&self) -> Result<Vec<StoredUser>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, username, password_hash, totp_seed, totp_last_step, failed_attempts, locked_until, otp_locked_until, created_at, disabled_at, (SELECT COUNT(*) FROM passkeys WHERE passkeys.user_id = users.id) AS passkeys FROM users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Replaces a user's password hash (and unlocks the account).
    pub async fn set_password_hash(&self, user_id: &str, hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE users SET password_hash = ?, failed_attempts = 0, locked_until = NULL WHERE id = ?",
        ))
        .bind(hash)
        .bind(user_id)
        .execute(self.writes())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Enrols (or replaces) a user's TOTP seed.
    pub async fn set_totp_seed(&self, user_id: &str, seed_b64: &str) -> Result<bool, StoreError> {
        let done =
            sqlx::query(self.sql("UPDATE users SET totp_seed = ?, totp_last_step = NULL, otp_failed_attempts = 0, otp_consecutive_failures = 0 WHERE id = ?"))
                .bind(seed_b64)
                .bind(user_id)
                .execute(self.writes())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records that TOTP step `step` was used, unless it (or a later one)
    /// already was: atomic, so a code works once even across instances.
    pub async fn use_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE users SET totp_last_step = ? WHERE id = ? AND (totp_last_step IS NULL OR totp_last_step < ?)",
        ))
        .bind(step)
        .bind(user_id)
        .bind(step)
        .execute(self.writes())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes an attempt at a factor, counting it before the check, in one
    /// statement: refused while the account is locked or while
    /// `max_failures` attempts are already counted, so that concurrent
    /// guesses cannot exceed the limit. A count stuck at the limit (a crash
    /// between attempt and verdict) becomes an ordinary lock. TOTP codes
    /// are also counted in a row across locks, and refused for good once
    /// `max_code_failures` wrong ones came in a row.
    pub async fn begin_attempt(
        &self,
        user_id: &str,
        kind: Attempt,
        limits: AttemptLimits,
        now: i64,
        lock_until: i64,
    ) -> Result<AttemptStart, StoreError> {
        let (take, stuck) = match kind {
            Attempt::Password => (
                "UPDATE users SET failed_attempts = failed_attempts + 1 WHERE id = ? AND (locked_until IS NULL OR locked_until <= ?) AND failed_attempts < ?",
                "UPDATE users SET locked_until = ?, failed_attempts = 0 WHERE id = ? AND failed_attempts >= ? AND (locked_until IS NULL OR locked_until <= ?)",
            ),
            Attempt::Otp => (
                "UPDATE users SET otp_failed_attempts = otp_failed_attempts + 1, otp_consecutive_failures = otp_consecutive_failures + 1 WHERE id = ? AND (otp_locked_until IS NULL OR otp_locked_until <= ?) AND otp_failed_attempts < ? AND otp_consecutive_failures < ?",
                "UPDATE users SET otp_locked_until = ?, otp_failed_attempts = 0 WHERE id = ? AND otp_failed_attempts >= ? AND (otp_locked_until IS NULL OR otp_locked_until <= ?)",
            ),
        };
        let mut query = sqlx::query(self.sql(take))
            .bind(user_id)
            .bind(now)
            .bind(limits.max_failures);
        if kind == Attempt::Otp {
            query = query.bind(limits.max_code_failures);
        }
        let taken = query.execute(self.writes()).await?.rows_affected() == 1;
        if taken {
            return Ok(AttemptStart::Taken);
        }
        sqlx::query(self.sql(stuck))
            .bind(lock_until)
            .bind(user_id)
            .bind(limits.max_failures)
            .bind(now)
            .execute(self.writes())
            .await?;
        if kind == Attempt::Otp {
            let in_a_row: Option<i64> =
                sqlx::query_scalar(self.sql("SELECT otp_consecutive_failures FROM users WHERE id = ?"))
                    .bind(user_id)
                    .fetch_optional(&self.pool)
                    .await?;
            if in_a_row.is_some_and(|n| n >= limits.max_code_failures) {
                return Ok(AttemptStart::Blocked);
            }
        }
        Ok(AttemptStart::Locked)
    }

    /// Records the verdict of an attempt: a success clears the count; a
    /// failure that reaches `max_failures` locks the account until
    /// `lock_until`. Returns whether the account is now locked.
    pub async fn end_attempt(
        &self,
        user_id: &str,
        kind: Attempt,
        succeeded: bool,
        max_failures: i64,
        lock_until: i64,
    ) -> Result<bool, StoreError> {
        let query = match (kind, succeeded) {
            (Attempt::Password, true) => "UPDATE users SET failed_attempts = 0 WHERE id = ?",
            (Attempt::Otp, true) => {
                "UPDATE users SET otp_failed_attempts = 0, otp_consecutive_failures = 0 WHERE id = ?"
            }
            (Attempt::Password, false) => {
                "UPDATE users SET locked_until = ?, failed_attempts = 0 WHERE id = ? AND failed_attempts >= ?"
            }
            (Attempt::Otp, false) => {
                "UPDATE users SET otp_locked_until = ?, otp_failed_attempts = 0 WHERE id = ? AND otp_failed_attempts >= ?"
            }
        };
        if succeeded {
            sqlx::query(self.sql(query))
                .bind(user_id)
                .execute(self.writes())
                .await?;
            return Ok(false);
        }
        let locked = sqlx::query(self.sql(query))
            .bind(lock_until)
            .bind(user_id)
            .bind(max_failures)
            .execute(self.writes())
            .await?
            .rows_affected()
            == 1;
        Ok(locked)
    }

    /// The writes of a failed password attempt, made on a decoy row: a
    /// sign-in with an unknown user name costs what one with a known name
    /// and a wrong password does (two serialized writes, the first
    /// changing a row, the second not), so answer times do not tell
    /// which names exist.
    pub async fn decoy_attempt(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE timing_decoy SET attempts = attempts + 1 WHERE id = 1")
            .execute(self.writes())
            .await?;
        sqlx::query(self.sql("UPDATE timing_decoy SET attempts = 0 WHERE id = 1 AND attempts < ?"))
            .bind(0_i64)
            .execute(self.writes())
            .await?;
        Ok(())
    }

    /// Clears the count of wrong TOTP codes in a row (and codes refused
    /// for it): the user proved a stronger factor, a passkey.
    pub async fn clear_code_failures(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "UPDATE users SET otp_failed_attempts = 0, otp_consecutive_failures = 0 WHERE id = ? AND otp_consecutive_failures > 0",
        ))
        .bind(user_id)
        .execute(self.writes())
        .await?;
        Ok(())
    }

    /// Ends every lock of a user and clears their failure counts, the
    /// count of wrong codes in a row included (an administrator's unlock).
    pub async fn unlock_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE users SET failed_attempts = 0, otp_failed_attempts = 0, otp_consecutive_failures = 0, locked_until = NULL, otp_locked_until = NULL WHERE id = ?",
        ))
        .bind(user_id)
        .execute(self.writes())
        .await?;
        // Remembered browsers keep their counts: a stolen device cookie
        // must not get its guesses back from an unlock.
        Ok(done.rows_affected() == 1)
    }

    /// Remembers a browser where a user signed in, in place of `replacing`
    /// (the browser's previous entry, in the same transaction: its place is
    /// not lost to a concurrent sign-in), while the user's password is
    /// still the one proven (`password_hash`: a change racing the sign-in
    /// leaves nothing remembered for the old password) and the user has
    /// fewer than `per_user` others. None is pushed out for it, except that
    /// a `strong` one at a full account forgets those remembered by a
    /// password alone. Returns whether it was remembered.
    pub async fn insert_device(
        &self,
        d: &StoredDevice,
        password_hash: &str,
        per_user: i64,
        replacing: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // The user's row locked (PostgreSQL; SQLite's write transaction
        // holds the database): concurrent sign-ins count one at a time.
        sqlx::query(self.sql("UPDATE users SET id = id WHERE id = ?"))
            .bind(&d.user_id)
            .execute(&mut *tx)
            .await?;
        if let Some(old) = replacing {
            sqlx::query(self.sql("DELETE FROM known_devices WHERE id = ? AND user_id = ?"))
                .bind(old)
                .bind(&d.user_id)
                .execute(&mut *tx)
                .await?;
        }
        // Nothing is forgotten for a browser that will not be remembered
        // (the password changed meanwhile).
        let current = sqlx::query(self.sql("SELECT 1 AS one FROM users WHERE id = ? AND password_hash = ?"))
            .bind(&d.user_id)
            .bind(password_hash)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if d.strong && current {
            // A sign-in with the second factor at a full account forgets
            // the browsers remembered by a password alone.
            let count: i64 = sqlx::query(
                self.sql("SELECT COUNT(*) AS n FROM known_devices WHERE user_id = ? AND expires_at > ?"),
            )
            .bind(&d.user_id)
            .bind(d.created_at)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if count >= per_user {
                sqlx::query(self.sql("DELETE FROM known_devices WHERE user_id = ? AND strong = 0"))
                    .bind(&d.user_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let inserted = sqlx::query(self.sql(
            "INSERT INTO known_devices (id, user_id, failed_attempts, created_at, expires_at, strong) SELECT ?, id, ?, ?, ?, ? FROM users WHERE id = ? AND password_hash = ? AND (SELECT COUNT(*) FROM known_devices WHERE user_id = ? AND expires_at > ?) < ?",
        ))
        .bind(&d.id)
        .bind(d.failed_attempts)
        .bind(d.created_at)
        .bind(d.expires_at)
        .bind(i64::from(d.strong))
        .bind(&d.user_id)
        .bind(password_hash)
        .bind(&d.user_id)
        .bind(d.created_at)
        .bind(per_user)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(inserted)
    }

    /// A remembered browser that has not expired.
    pub async fn device(&self, id: &str, now: i64) -> Result<Option<StoredDevice>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT id, user_id, failed_attempts, created_at, expires_at, strong FROM known_devices WHERE id = ? AND expires_at > ?",
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|r| {
                Ok(StoredDevice {
                    id: r.try_get("id")?,
                    user_id: r.try_get("user_id")?,
                    failed_attempts: r.try_get("failed_attempts")?,
                    created_at: r.try_get("created_at")?,
                    expires_at: r.try_get("expires_at")?,
                    strong: r.try_get::<i64, _>("strong")? != 0,
                })
            })
            .transpose()
    }

    /// Counts a password attempt from a remembered browser of `user_id`,
    /// before the password is checked (as [`Store::begin_attempt`] does
    /// for the account). False when the browser has used up its
    /// `max_failures` (it is then forgotten) or is gone: the attempt is
    /// the account's, as from any unknown browser.
    pub async fn begin_device_attempt(
        &self,
        id: &str,
        user_id: &str,
        max_failures: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let taken = sqlx::query(self.sql(
            "UPDATE known_devices SET failed_attempts = failed_attempts + 1 WHERE id = ? AND user_id = ? AND expires_at > ? AND failed_attempts < ?",
        ))
        .bind(id)
        .bind(user_id)
        .bind(now)
        .bind(max_failures)
        .execute(self.writes())
        .await?
        .rows_affected()
            == 1;
        if !taken {
            self.device_failed(id, max_failures).await?;
        }
        Ok(taken)
    }

    /// After a wrong password from a remembered browser: one that has
    /// failed `max_failures` times in a row is forgotten. Returns whether
    /// it was.
    pub async fn device_failed(&self, id: &str, max_failures: i64) -> Result<bool, StoreError> {
        let forgotten =
            sqlx::query(self.sql("DELETE FROM known_devices WHERE id = ? AND failed_attempts >= ?"))
                .bind(id)
                .bind(max_failures)
                .execute(self.writes())
                .await?
                .rows_affected()
                == 1;
        Ok(forgotten)
    }

    /// The shared secret called `name`: the one stored, or `fresh` stored
    /// now when there is none (the first instance to start wins; every
    /// instance then reads the same).
    pub async fn server_secret(&self, name: &str, fresh: &str) -> Result<String, StoreError> {
        sqlx::query(
            self.sql("INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"),
        )
        .bind(name)
        .bind(fresh)
        .execute(self.writes())
        .await?;
        let row = sqlx::query(self.sql("SELECT value FROM server_secrets WHERE name = ?"))
            .bind(name)
            .fetch_one(self.writes())
            .await?;
        Ok(row.try_get("value")?)
    }

    /// Forgets every browser of a user (their password changed: a browser
    /// is remembered for the password it proved).
    pub async fn delete_user_devices(&self, user_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(self.sql("DELETE FROM known_devices WHERE user_id = ?"))
            .bind(user_id)
            .execute(self.writes())
            .await?;
        Ok(done.rows_affected())
    }

    /// Starts a session.
    ///
    /// A session started by a password (`password_hash`: the hash it was
    /// checked against) is recorded only while the user's password is
    /// still that one: a change racing the sign-in, which ends every
    /// session, leaves none behind for the old password. Returns whether
    /// it was recorded.
    pub async fn insert_session(
        &self,
        s: &StoredSession,
        password_hash: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // The user's row locked first (PostgreSQL; SQLite's write
        // transaction holds the database): a password change waits for this
        // session to commit and then ends it, or commits first and this
        // sees the new hash. Without the lock the insert could read the old
        // hash and commit after the change's delete had looked.
        sqlx::query(self.sql("UPDATE users SET id = id WHERE id = ?"))
            .bind(&s.user_id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(self.sql(
            "INSERT INTO sessions (id, user_id, pwd_at, otp_at, hwk_at, created_at, expires_at) SELECT ?, id, ?, ?, ?, ?, ? FROM users WHERE id = ? AND (? IS NULL OR password_hash = ?)",
        ))
        .bind(&s.id)
        .bind(s.pwd_at)
        .bind(s.otp_at)
        .bind(s.hwk_at)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(&s.user_id)
        .bind(password_hash)
        .bind(password_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// A live session.
    pub async fn session(&self, id: &str, now: i64) -> Result<Option<StoredSession>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT id, user_id, pwd_at, otp_at, hwk_at, created_at, expires_at FROM sessions WHERE id = ? AND expires_at > ?",
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Records when a factor was proven in a session.
    pub async fn session_factor_proven(&self, id: &str, factor: &str, at: i64) -> Result<(), StoreError> {
        let query = match factor {
            "pwd" => "UPDATE sessions SET pwd_at = ? WHERE id = ?",
            "otp" => "UPDATE sessions SET otp_at = ? WHERE id = ?",
            "hwk" => "UPDATE sessions SET hwk_at = ? WHERE id = ?",
            _ => {
                return Err(StoreError::Corrupt {
                    table: "sessions",
                    column: "factor",
                });
            }
        };
        sqlx::query(self.sql(query))
            .bind(at)
            .bind(id)
            .execute(self.writes())
            .await?;
        Ok(())
    }

    /// Deletes what has expired: sessions, pending and pushed requests,
    /// codes, refresh tokens, used assertion ids and revocation records of
    /// expired tokens. Returns how many rows went.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        for query in [
            "DELETE FROM sessions WHERE expires_at <= ?",
            "DELETE FROM pending_requests WHERE expires_at <= ?",
            "DELETE FROM pushed_requests WHERE expires_at <= ?",
            "DELETE FROM codes WHERE expires_at <= ?",
            "DELETE FROM refresh_tokens WHERE expires_at <= ?",
            "DELETE FROM used_assertions WHERE expires_at <= ?",
            "DELETE FROM family_access_tokens WHERE expires_at <= ?",
            "DELETE FROM revoked_tokens WHERE expires_at <= ?",
            "DELETE FROM webauthn_ceremonies WHERE expires_at <= ?",
            "DELETE FROM known_devices WHERE expires_at <= ?",
            "DELETE FROM security_events WHERE expires_at <= ?",
        ] {
            removed += sqlx::query(self.sql(query))
                .bind(now)
                .execute(self.writes())
                .await?
                .rows_affected();
        }
        Ok(removed)
    }

    /// Disables a user's account (`Some(when)`) or enables it (`None`).
    /// Returns whether the user exists.
    pub async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql("UPDATE users SET disabled_at = ? WHERE id = ?"))
            .bind(disabled_at)
            .bind(user_id)
            .execute(self.writes())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Why tokens may not be issued to `client_id` for `user_id` now, if
    /// they may not: the user is gone or disabled, or the client is gone
    /// (read afresh, not from a cache: a removed client's grants end at
    /// once). One read for both.
    pub async fn grant_refusal(
        &self,
        user_id: &str,
        client_id: &str,
    ) -> Result<Option<&'static str>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT disabled_at, (SELECT COUNT(*) FROM clients WHERE client_id = ?) AS clients FROM users WHERE id = ?",
        ))
        .bind(client_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Some("the account is gone"));
        };
        if row.try_get::<Option<i64>, _>("disabled_at")?.is_some() {
            return Ok(Some("the account is disabled"));
        }
        if row.try_get::<i64, _>("clients")? == 0 {
            return Ok(Some("the client is gone"));
        }
        Ok(None)
    }

    /// Notes that `user_id` signed in from `country` at `now`. Returns
    /// whether it is new for a user who had signed in from elsewhere
    /// before (the first country of all is not news).
    pub async fn note_country(&self, user_id: &str, country: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let added = sqlx::query(self.sql(
            "INSERT INTO user_countries (user_id, country, first_seen) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(user_id)
        .bind(country)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let known: i64 =
            sqlx::query_scalar(self.sql("SELECT COUNT(*) FROM user_countries WHERE user_id = ?"))
                .bind(user_id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(added && known > 1)
    }

    /// Keeps a security event of a user's account; one whose id is kept
    /// already (refused sign-ins of one hour) counts once more instead,
    /// and takes the new one's time, details and lifetime.
    pub async fn insert_event(&self, e: &StoredEvent) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO security_events (id, user_id, kind, at, client_address, country, user_agent, detail, expires_at, count, seq) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) \
             ON CONFLICT (id) DO UPDATE SET at = excluded.at, user_agent = excluded.user_agent, detail = excluded.detail, \
             expires_at = excluded.expires_at, seq = excluded.seq, count = security_events.count + 1",
        ))
        .bind(&e.id)
        .bind(&e.user_id)
        .bind(&e.kind)
        .bind(e.at)
        .bind(e.client_address.as_deref())
        .bind(e.country.as_deref())
        .bind(e.user_agent.as_deref())
        .bind(&e.detail)
        .bind(e.expires_at)
        .bind(e.seq)
        .execute(self.writes())
        .await?;
        Ok(())
    }

    /// The latest security events of a user, newest first, at most `limit`.
    pub async fn events_of(&self, user_id: &str, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(self.sql(
            "SELECT id, user_id, kind, at, client_address, country, user_agent, detail, expires_at, count, seq \
             FROM security_events WHERE user_id = ? ORDER BY at DESC, seq DESC LIMIT ?",
        ))
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredEvent {
                    id: row.try_get("id")?,
                    user_id: row.try_get("user_id")?,
                    kind: row.try_get("kind")?,
                    at: row.try_get("at")?,
                    client_address: row.try_get("client_address")?,
                    country: row.try_get("country")?,
                    user_agent: row.try_get("user_agent")?,
                    detail: row.try_get("detail")?,
                    expires_at: row.try_get("expires_at")?,
                    count: row.try_get("count")?,
                    seq: row.try_get("seq")?,
                })
            })
            .collect()
    }

    /// Gives a session a new id (a new cookie secret), keeping its proofs.
    pub async fn rotate_session(&self, old_id: &str, new_id: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql("UPDATE sessions SET id = ? WHERE id = ?"))
            .bind(new_id)
            .bind(old_id)
            .execute(self.writes())
            .await?;
        Ok(())
    }

    /// Ends every session of a user (after a password or TOTP change).
    pub async fn delete_user_sessions(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql("DELETE FROM sessions WHERE user_id = ?"))
            .bind(user_id)
            .execute(self.writes())
            .await?;
        Ok(())
    }

    /// Ends a session.
    pub async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql("DELETE FROM sessions WHERE id = ?"))
            .bind(id)
            .execute(self.writes())
            .await?;
        Ok(())
    }

    /// Stores a pending authorization request.
    pub async fn insert_pending(&self, p: &StoredPending) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO pending_requests (id, params, csrf, user_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind(&p.id)
        .bind(&p.params)
        .bind(&p.csrf)
        .bind(&p.user_id)
        .bind(p.created_at)
        .bind(p.expires_at)
        .execute(self.writes())
        .await?;
        Ok(())
    }

    /// A pending request that has not lapsed.
    pub async fn pending(&self, id: &str, now: i64) -> Result<Option<StoredPending>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT id, params, csrf, user_id, created_at, expires_at FROM pending_requests WHERE id = ? AND expires_at > ?",
        ))
        .bind(id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredPending {
                id: r.try_get("id")?,
                params: r.try_get("params")?,
                csrf: r.try_get("csrf")?,
                user_id: r.try_get("user_id")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Notes who is logging in for a pending request.
    pub async fn set_pending_user(&self, id: &str, user_id: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql("UPDATE pending_requests SET user_id = ? WHERE id = ?"))
            .bind(user_id)
            .bind(id)
            .execute(self.writes())
            .await?;
        Ok(())
    }

    /// Stores a pushed authorization request.
    pub async fn insert_pushed(
        &self,
        id: &str,
        client_id: &str,
        params: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            self.sql("INSERT INTO pushed_requests (id, client_id, params, expires_at) VALUES (?, ?, ?, ?)"),
        )
        .bind(id)
        .bind(client_id)
        .bind(params)
        .bind(expires_at)
        .execute(self.writes())
        .await?;
        Ok(())
    }

    /// Takes a pushed request: returns its client and parameters once, if
    /// it has not expired (RFC 9126 §4: a request_uri is used once).
    pub async fn take_pushed(&self, id: &str, now: i64) -> Result<Option<(String, String)>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row =
            sqlx::query(self.sql("SELECT client_id, params, expires_at FROM pushed_requests WHERE id = ?"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let deleted = sqlx::query(self.sql("DELETE FROM pushed_requests WHERE id = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires_at: i64 = row.try_get("expires_at")?;
        if deleted != 1 || expires_at <= now {
            return Ok(None);
        }
        Ok(Some((row.try_get("client_id")?, row.try_get("params")?)))
    }

    /// Replaces the parameters of a pending request.
    pub async fn set_pending_params(&self, id: &str, params: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql("UPDATE pending_requests SET params = ? WHERE id = ?"))
            .bind(params)
            .bind(id)
            .execute(self.writes())
            .await?;
        Ok(())
    }

    /// Forgets a pending request (it was answered).
    pub async fn delete_pending(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query(self.sql("DELETE FROM pending_requests WHERE id = ?"))
            .bind(id)
            .execute(self.writes())
            .await?;
        Ok(())
    }

    /// Revokes every live token family of a user (after a credential change).
    pub async fn revoke_user_families(&self, user_id: &str, now: i64) -> Result<usize, StoreError> {
        self.revoke_families(
            "SELECT id FROM token_families WHERE user_id = ? AND revoked_at IS NULL",
            user_id,
            now,
        )
        .await
    }

    /// Revokes every live token family of a client (see
    /// [`Store::revoke_family`]); returns how many.
    pub async fn revoke_client_families(&self, client_id: &str, now: i64) -> Result<usize, StoreError> {
        self.revoke_families(
            "SELECT id FROM token_families WHERE client_id = ? AND revoked_at IS NULL",
            client_id,
            now,
        )
        .await
    }

    /// Revokes the families `select` (one `?`, bound to `key`) lists.
    async fn revoke_families(&self, select: &'static str, key: &str, now: i64) -> Result<usize, StoreError> {
        let rows = sqlx::query(self.sql(select))
            .bind(key)
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            let id: String = row.try_get("id")?;
            self.revoke_family(&id, now).await?;
        }
        Ok(rows.len())
    }

    /// Deletes a user and what is kept of them: passkeys, sessions,
    /// remembered browsers, sign-ins in progress, security events. Their
    /// token families stay (revoked first, by the caller): what was issued
    /// reads as revoked. Returns whether the user existed.
    pub async fn delete_user(&self, user_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        for query in [
            "DELETE FROM passkeys WHERE user_id = ?",
            "DELETE FROM sessions WHERE user_id = ?",
            "DELETE FROM known_devices WHERE user_id = ?",
            "DELETE FROM pending_requests WHERE user_id = ?",
            "DELETE FROM security_events WHERE user_id = ?",
            "DELETE FROM user_countries WHERE user_id = ?",
        ] {
            sqlx::query(self.sql(query))
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(self.sql("DELETE FROM users WHERE id = ?"))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Revokes a family: its refresh tokens stop working and the access
    /// tokens issued in it are recorded as revoked.
    pub async fn revoke_family(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        self.revoke_family_in(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::revoke_family`] inside `tx`.
    async fn revoke_family_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(self.sql("UPDATE token_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"))
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        let rows =
            sqlx::query(self.sql("SELECT jti, expires_at FROM family_access_tokens WHERE family_id = ?"))
                .bind(id)
                .fetch_all(&mut **tx)
                .await?;
        for r in rows {
            let jti: String = r.try_get("jti")?;
            let exp: i64 = r.try_get("expires_at")?;
            // ON CONFLICT: a failed statement would abort a PostgreSQL transaction.
            sqlx::query(self.sql(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
            ))
            .bind(&jti)
            .bind(exp)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Stores a new authorization code in a new family and closes the
    /// pending request it answers (if it was stored), in one transaction
    /// (one commit: one fsync on SQLite). False: the request was already
    /// answered, nothing was stored.
    #[allow(clippy::too_many_arguments)]
    pub async fn store_code(
        &self,
        family_id: &str,
        client_id: &str,
        user_id: &str,
        code_id: &str,
        grant_data: &str,
        expires_at: i64,
        pending_id: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(self.sql(
            "INSERT INTO token_families (id, client_id, user_id, revoked_at, created_at) VALUES (?, ?, ?, NULL, ?)",
        ))
        .bind(family_id)
        .bind(client_id)
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(self.sql(
            "INSERT INTO codes (id, grant_data, family_id, expires_at, used_at) VALUES (?, ?, ?, ?, NULL)",
        ))
        .bind(code_id)
        .bind(grant_data)
        .bind(family_id)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        if let Some(pending_id) = pending_id {
            // Exactly one code per pending request, even for two concurrent
            // form posts: the second finds the request gone and rolls back.
            let closed = sqlx::query(self.sql("DELETE FROM pending_requests WHERE id = ?"))
                .bind(pending_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if closed != 1 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Claims a one-time value (code, refresh token) in a write transaction
    /// that stays open: what the grant issues is recorded in the same
    /// transaction ([`Claim::record_issued`]), so a grant costs one commit
    /// (one fsync on SQLite), and a crash between claiming and issuing
    /// cannot leave a used value with nothing issued. The first caller gets
    /// the grant; a later one (on any instance) learns it was a replay.
    /// A claim dropped without a decision rolls back: the value stays
    /// unused.
    pub async fn claim_one_time(&self, kind: OneTime, id: &str, now: i64) -> Result<Claimed, StoreError> {
        // One statement claims and reads the value (`RETURNING`, in SQLite
        // since 3.35 and in PostgreSQL): each statement is a round trip to
        // the database (on SQLite, to sqlx's worker thread) while the write
        // lock is held.
        let (update, select) = match kind {
            OneTime::Code => (
                "UPDATE codes SET used_at = ? WHERE id = ? AND used_at IS NULL RETURNING grant_data, family_id, expires_at",
                "SELECT family_id FROM codes WHERE id = ?",
            ),
            OneTime::Refresh => (
                "UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL RETURNING grant_data, family_id, expires_at",
                "SELECT family_id FROM refresh_tokens WHERE id = ?",
            ),
        };
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(self.sql(update))
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = claimed {
            return Ok(Claimed::Fresh(Claim {
                grant_data: row.try_get("grant_data")?,
                expires_at: row.try_get("expires_at")?,
                family_id: row.try_get("family_id")?,
                tx,
                store: self.clone(),
            }));
        }
        // Unknown, or used before.
        let row = sqlx::query(self.sql(select))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(Claimed::NotFound);
        };
        let family_id: String = row.try_get("family_id")?;
        // A replay: what the value issued is revoked in this same
        // transaction, which already holds the write lock (a second one
        // could time out and leave the family live).
        self.revoke_family_in(&mut tx, &family_id, now).await?;
        tx.commit().await?;
        Ok(Claimed::Replayed { family_id })
    }

    /// The family and grant of a one-time value, used or not.
    pub async fn one_time_family(
        &self,
        kind: OneTime,
        id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let query = match kind {
            OneTime::Code => "SELECT family_id, grant_data FROM codes WHERE id = ?",
            OneTime::Refresh => "SELECT family_id, grant_data FROM refresh_tokens WHERE id = ?",
        };
        let row = sqlx::query(self.sql(query))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("family_id")?, r.try_get("grant_data")?)))
            .transpose()
    }
}

/// A registered passkey as stored.
#[derive(Debug, Clone)]
pub struct StoredPasskey {
    /// The credential id, base64url.
    pub credential_id: String,
    /// The user.
    pub user_id: String,
    /// The name the user gave it.
    pub name: String,
    /// The credential as webauthn-rs keeps it, JSON.
    pub credential: String,
    /// The signature counter last seen (0: the authenticator keeps none).
    pub counter: i64,
    /// When it was registered.
    pub created_at: i64,
    /// When it was last used to sign in.
    pub last_used_at: Option<i64>,
}

fn passkey_from_row(r: &AnyRow) -> Result<StoredPasskey, StoreError> {
    Ok(StoredPasskey {
        credential_id: r.try_get("credential_id")?,
        user_id: r.try_get("user_id")?,
        name: r.try_get("name")?,
        credential: r.try_get("credential")?,
        counter: r.try_get("counter")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

/// Which WebAuthn ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    /// Registering a passkey.
    Register,
    /// Signing in with one.
    Authenticate,
}

impl Ceremony {
    fn as_str(self) -> &'static str {
        match self {
            Ceremony::Register => "register",
            Ceremony::Authenticate => "authenticate",
        }
    }
}

impl Store {
    /// Stores a new passkey; a credential id registered before is a
    /// [`StoreError::Duplicate`].
    pub async fn insert_passkey(&self, p: &StoredPasskey) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO passkeys (credential_id, user_id, name, credential, counter, created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&p.credential_id)
        .bind(&p.user_id)
        .bind(&p.name)
        .bind(&p.credential)
        .bind(p.counter)
        .bind(p.created_at)
        .bind(p.last_used_at)
        .execute(self.writes())
        .await
        .map_err(|e| duplicate(e, "this passkey is already registered".to_owned()))?;
        Ok(())
    }

    /// A user's passkeys, oldest first.
    pub async fn passkeys_of(&self, user_id: &str) -> Result<Vec<StoredPasskey>, StoreError> {
        let rows = sqlx::query(self.sql(
            "SELECT credential_id, user_id, name, credential, counter, created_at, last_used_at FROM passkeys WHERE user_id = ? ORDER BY created_at, credential_id",
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(passkey_from_row).collect()
    }

    /// The passkey with this credential id.
    pub async fn passkey(&self, credential_id: &str) -> Result<Option<StoredPasskey>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT credential_id, user_id, name, credential, counter, created_at, last_used_at FROM passkeys WHERE credential_id = ?",
        ))
        .bind(credential_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(passkey_from_row).transpose()
    }

    /// Records a use of a passkey and its updated state, if its signature
    /// counter moved forward (or both the stored and the new counter are 0:
    /// an authenticator without one). False when it did not: the answer
    /// may come from a cloned authenticator, or lost a race with another
    /// sign-in by the same passkey; either way it must be refused.
    pub async fn passkey_used(
        &self,
        credential_id: &str,
        credential: &str,
        counter: i64,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql(
            "UPDATE passkeys SET credential = ?, counter = ?, last_used_at = ? WHERE credential_id = ? AND (counter < ? OR (counter = 0 AND ? = 0))",
        ))
        .bind(credential)
        .bind(counter)
        .bind(at)
        .bind(credential_id)
        .bind(counter)
        .bind(counter)
        .execute(self.writes())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes a user's passkey; false if the user has none by that id.
    pub async fn delete_passkey(&self, user_id: &str, credential_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(self.sql("DELETE FROM passkeys WHERE user_id = ? AND credential_id = ?"))
            .bind(user_id)
            .bind(credential_id)
            .execute(self.writes())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes all of a user's passkeys; returns how many went.
    pub async fn delete_passkeys_of(&self, user_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(self.sql("DELETE FROM passkeys WHERE user_id = ?"))
            .bind(user_id)
            .execute(self.writes())
            .await?;
        Ok(done.rows_affected())
    }

    /// Keeps the state of a WebAuthn ceremony until its form comes back.
    pub async fn insert_ceremony(
        &self,
        id: &str,
        kind: Ceremony,
        bound_to: &str,
        state: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO webauthn_ceremonies (id, kind, bound_to, state, expires_at) VALUES (?, ?, ?, ?, ?)",
        ))
        .bind(id)
        .bind(kind.as_str())
        .bind(bound_to)
        .bind(state)
        .bind(expires_at)
        .execute(self.writes())
        .await?;
        Ok(())
    }

    /// Takes the state of a ceremony, once: a second take, another kind,
    /// another binding or an expired ceremony find nothing.
    pub async fn take_ceremony(
        &self,
        id: &str,
        kind: Ceremony,
        bound_to: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(self.sql(
            "SELECT state, expires_at FROM webauthn_ceremonies WHERE id = ? AND kind = ? AND bound_to = ?",
        ))
        .bind(id)
        .bind(kind.as_str())
        .bind(bound_to)
        .fetch_optional(&mut *tx)
        .await?;
        let deleted = sqlx::query(
            self.sql("DELETE FROM webauthn_ceremonies WHERE id = ? AND kind = ? AND bound_to = ?"),
        )
        .bind(id)
        .bind(kind.as_str())
        .bind(bound_to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires_at: i64 = row.try_get("expires_at")?;
        if deleted != 1 || expires_at <= now {
            return Ok(None);
        }
        Ok(Some(row.try_get("state")?))
    }
}
