//! `stepup serve`, and what it shares with `stepup admin`: loading the
//! configuration and opening the database.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use stepup_core::SystemClock;
use stepup_server::{Config, ServerState, Store};
use tracing_subscriber::EnvFilter;

/// Loads and checks a server configuration; errors name the file and line.
pub(crate) fn load_config(file: &Path) -> Result<Config> {
    let source = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    // ConfigError's Display already starts with the file name.
    Config::from_toml(&file.display().to_string(), &source).map_err(|e| anyhow!("{e}"))
}

/// A Tokio runtime for the commands that talk to the database or the network.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Opens the database, creating the directory of a SQLite file first.
pub(crate) async fn open_store(database_url: &str) -> Result<Store> {
    if let Some(dir) = sqlite_directory(database_url) {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the database directory {}", dir.display()))?;
    }
    Store::connect(database_url)
        .await
        .with_context(|| format!("cannot open the database {}", redact(database_url)))
}

/// The directory holding a `sqlite:` database file, if it has one to create.
fn sqlite_directory(database_url: &str) -> Option<std::path::PathBuf> {
    let rest = database_url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(':') {
        return None; // `:memory:` and friends
    }
    let parent = Path::new(path).parent()?;
    (!parent.as_os_str().is_empty()).then(|| parent.to_path_buf())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `stepup serve --config FILE`.
pub(crate) fn serve(config_file: &Path) -> Result<ExitCode> {
    let config = load_config(config_file)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    runtime()?.block_on(async move {
        let listen = config.listen;
        let connections = config.connections;
        if config.login.demo_show_totp_code {
            tracing::warn!(
                "login.demo_show_totp_code is on: the code page shows the current TOTP code, so TOTP proves nothing. Demo only."
            );
        }
        let issuer = config.issuer.clone();
        let store = open_store(&config.database_url).await?;
        let state = ServerState::new(config, store, Arc::new(SystemClock)).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        // Every minute: keys rotated by `stepup admin keys rotate` (or by
        // another instance on the same database) are loaded, and expired
        // rows are purged.
        let reloading = Arc::clone(&state);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = reloading.reload_keys().await {
                    tracing::warn!(error = %e, "reloading signing keys failed");
                }
                // Expired sessions, requests, codes and tokens are removed.
                let now = stepup_core::Clock::now(&SystemClock).seconds();
                match reloading.store.purge_expired(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(rows = n, "purged expired rows"),
                    Err(e) => tracing::warn!(error = %e, "purging expired rows failed"),
                }
            }
        });
        println!("stepup-server listening on http://{addr} (issuer {issuer})");
        // With the peer address (geolocation and trusted proxies need it),
        // within the `[connections]` bounds on slow and idle clients.
        let app = stepup_server::router(state);
        stepup_guard::serve::serve(listener, app, connections, shutdown_signal())
            .await
            .context("the server stopped with an error")?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sqlite_directories() {
        let dir = |u: &str| sqlite_directory(u).map(|p| p.display().to_string());
        assert_eq!(
            dir("sqlite://stepup-data/stepup.db").as_deref(),
            Some("stepup-data")
        );
        assert_eq!(
            dir("sqlite:///var/lib/s/s.db?mode=rwc").as_deref(),
            Some("/var/lib/s")
        );
        assert_eq!(dir("sqlite://stepup.db"), None);
        assert_eq!(dir("sqlite::memory:"), None);
        assert_eq!(dir("postgres://u:p@h/db"), None);
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://a/b.db"), "sqlite://a/b.db");
    }
}
