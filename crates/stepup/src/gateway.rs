//! `stepup gateway --config FILE`: the guard as a reverse proxy.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::ValueEnum;
use stepup_gateway::{Gateway, GatewayConfig};
use tracing_subscriber::EnvFilter;

/// How log lines (the access log among them) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event, for log pipelines.
    Json,
}

/// Runs the gateway until SIGTERM or Ctrl-C, then lets requests in flight
/// finish.
pub(crate) fn run(config_file: &Path, log_format: LogFormat) -> Result<ExitCode> {
    let config = GatewayConfig::load(config_file).map_err(|e| anyhow!("{e}"))?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    crate::serve::runtime()?.block_on(async move {
        let listen = config.listen;
        let admin_listen = config.admin_listen;
        let issuer = config.issuer.clone();
        let gateway = Gateway::new(config).map_err(|e| anyhow!("{e}"))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr().context("cannot read the bound address")?;
        let _watcher = gateway.watch_policy(Duration::from_secs(1));
        println!(
            "stepup-gateway listening on http://{addr} (tokens of {issuer}; policy {}, reloaded on change and SIGHUP)",
            gateway.policy_path().display()
        );
        // One signal stops both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            crate::serve::shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Some(admin) = admin_listen {
            let admin_listener = tokio::net::TcpListener::bind(admin)
                .await
                .with_context(|| format!("cannot listen on {admin} (admin_listen)"))?;
            let admin_addr = admin_listener.local_addr().context("cannot read the bound address")?;
            println!("stepup-gateway admin endpoints on http://{admin_addr}");
            let serving = gateway.clone();
            let stop_admin = until_stopped(stopped.clone());
            tokio::spawn(async move {
                if let Err(e) = serving.serve_admin(admin_listener, stop_admin).await {
                    tracing::error!(error = %e, "the admin listener stopped");
                }
            });
        }
        gateway
            .serve(listener, until_stopped(stopped))
            .await
            .context("the gateway stopped with an error")?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
