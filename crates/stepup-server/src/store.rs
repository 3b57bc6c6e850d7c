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
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/0001_initial.sql"))];

/// The server's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
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
    /// When it was registered.
    pub created_at: i64,
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
        let pool = AnyPoolOptions::new().max_connections(max).connect(&url).await?;
        let store = Self { pool, backend };
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
            .execute(&self.pool)
            .await?;
        for (version, script) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let applied = sqlx::query(self.sql("SELECT version FROM schema_migrations WHERE version = ?"))
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await?;
            if applied.is_some() {
                continue;
            }
            for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                let statement: String = statement
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n");
                if !statement.trim().is_empty() {
                    sqlx::query(AssertSqlSafe(statement)).execute(&mut *tx).await?;
                }
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
        .execute(&self.pool)
        .await
        .map_err(|e| duplicate(e, format!("signing key {}", key.kid)))?;
        Ok(())
    }

    /// Stops every active key from signing, as of `now`.
    pub async fn retire_signing_keys(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(self.sql("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL"))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes keys retired before `before` (their tokens have all expired).
    pub async fn delete_signing_keys_retired_before(&self, before: i64) -> Result<u64, StoreError> {
        let done =
            sqlx::query(self.sql("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?"))
                .bind(before)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Registers a client.
    pub async fn insert_client(&self, c: &StoredClient) -> Result<(), StoreError> {
        sqlx::query(self.sql(
            "INSERT INTO clients (client_id, secret_sha256, auth_method, redirect_uris, grant_types, scopes, require_par, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&c.client_id)
        .bind(&c.secret_sha256)
        .bind(&c.auth_method)
        .bind(&c.redirect_uris)
        .bind(&c.grant_types)
        .bind(&c.scopes)
        .bind(i64::from(c.require_par))
        .bind(c.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| duplicate(e, format!("client {}", c.client_id)))?;
        Ok(())
    }

    /// Looks a client up.
    pub async fn client(&self, client_id: &str) -> Result<Option<StoredClient>, StoreError> {
        let row = sqlx::query(self.sql(
            "SELECT client_id, secret_sha256, auth_method, redirect_uris, grant_types, scopes, require_par, created_at FROM clients WHERE client_id = ?",
        ))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// All clients, by id.
    pub async fn clients(&self) -> Result<Vec<StoredClient>, StoreError> {
        let rows = sqlx::query(
            "SELECT client_id, secret_sha256, auth_method, redirect_uris, grant_types, scopes, require_par, created_at FROM clients ORDER BY client_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Records that the token `jti` is revoked until it would have expired.
    pub async fn revoke_token(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        let result = sqlx::query(self.sql("INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?)"))
            .bind(jti)
            .bind(expires_at)
            .execute(&self.pool)
            .await;
        match result {
            Ok(_) => Ok(()),
            // Revoking twice is revoking.
            Err(e) if is_unique_violation(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the token `jti` was revoked.
    pub async fn is_token_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let row = sqlx::query(self.sql("SELECT jti FROM revoked_tokens WHERE jti = ?"))
            .bind(jti)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
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
        created_at: r.try_get("created_at")?,
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
