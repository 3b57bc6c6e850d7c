//! `stepup policy check POLICY [--openapi SPEC] [--issuer URL | --server-config FILE]`:
//! the policy against the API's OpenAPI description and the authorization
//! server's capabilities. Exit status 0 (clean), 1 (findings, or a policy
//! that does not load), 2 (an input cannot be read).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use stepup_check::{ApiSpec, Inputs, ServerCaps, Severity, check, report};

/// How findings are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// `file:line:col: error[SU001]: ...`, like a compiler.
    Text,
    /// One JSON object with every finding.
    Json,
    /// SARIF 2.1.0, for CI annotations (GitHub code scanning and others).
    Sarif,
}

/// `stepup policy check` arguments.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The policy file (TOML).
    pub(crate) file: PathBuf,
    /// The API's OpenAPI 3.x description (YAML or JSON).
    #[arg(long)]
    openapi: Option<PathBuf>,
    /// The authorization server, read by discovery (`acr_values_supported`).
    #[arg(long, conflicts_with = "server_config")]
    issuer: Option<String>,
    /// The authorization server's configuration (stepup-server TOML): its
    /// levels and factors, session and token lifetimes.
    #[arg(long)]
    server_config: Option<PathBuf>,
    /// How to write the findings.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The clock skew the guard allows, seconds.
    #[arg(long, default_value_t = 30)]
    clock_skew: u64,
    /// Where the guard reads amounts in JSON bodies (its amount pointer), for SU010.
    #[arg(long)]
    amount_pointer: Option<String>,
    /// Where the guard reads currencies in JSON bodies, for SU010.
    #[arg(long)]
    currency_pointer: Option<String>,
}

/// Runs the check; errors reading an input become exit status 2 in `main`.
pub(crate) fn run(args: &CheckArgs) -> Result<ExitCode> {
    let Some(policy) = crate::load(&args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    let policy_file = args.file.display().to_string();
    let api = match &args.openapi {
        Some(path) => {
            let source =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let spec = ApiSpec::parse(&source).map_err(|e| anyhow!("{}:{e}", path.display()))?;
            Some((spec, path.display().to_string()))
        }
        None => None,
    };
    let server = match (&args.server_config, &args.issuer) {
        (Some(file), _) => Some(from_server_config(file)?),
        (None, Some(issuer)) => Some(from_discovery(issuer)?),
        (None, None) => None,
    };
    let inputs = Inputs {
        policy: &policy,
        policy_file: &policy_file,
        api: api.as_ref().map(|(spec, file)| (spec, file.as_str())),
        server: server.as_ref(),
        clock_skew_seconds: args.clock_skew,
        amount_pointer: args.amount_pointer.as_deref(),
        currency_pointer: args.currency_pointer.as_deref(),
    };
    let findings = check(&inputs);
    match args.format {
        Format::Text => {
            print!("{}", report::text(&findings));
            let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
            let checked = [
                Some(format!("{} routes", policy.routes().len())),
                api.as_ref()
                    .map(|(s, _)| format!("{} operations", s.operations.len())),
                server.as_ref().map(|s| format!("the server ({})", s.source)),
            ];
            let checked: Vec<String> = checked.into_iter().flatten().collect();
            if findings.is_empty() {
                println!(
                    "{policy_file}: ok ({} levels, {} routes, {} risk rules, {} warnings)",
                    policy.levels().levels().len(),
                    policy.routes().len(),
                    policy.risk_rules().len(),
                    policy.warnings().len()
                );
                if api.is_some() || server.is_some() {
                    println!("checked against {}: no findings", checked.join(", "));
                }
            } else {
                println!(
                    "{} findings ({errors} errors, {} warnings) in {}",
                    findings.len(),
                    findings.len() - errors,
                    checked.join(", ")
                );
            }
        }
        Format::Json => println!("{}", report::json(&findings)),
        Format::Sarif => println!("{}", report::sarif(&findings, env!("CARGO_PKG_VERSION"))),
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The capabilities a stepup-server configuration gives: every level's
/// acr is offered; it can be met when one of its factor combinations uses
/// only factors the server can run (passkeys need a domain name as issuer).
fn from_server_config(file: &Path) -> Result<ServerCaps> {
    let config = crate::serve::load_config(file)?;
    let passkeys = passkeys_possible(&config.issuer);
    let runnable = |factor: &str| match factor {
        "pwd" | "otp" => true,
        "hwk" => passkeys,
        _ => false,
    };
    let acr_offered: Vec<String> = config.levels.iter().map(|l| l.acr.clone()).collect();
    let acr_meetable = config
        .levels
        .iter()
        .filter(|l| l.factors.iter().any(|combo| combo.iter().all(|f| runnable(f))))
        .map(|l| l.acr.clone())
        .collect();
    Ok(ServerCaps {
        source: file.display().to_string(),
        acr_offered,
        acr_meetable: Some(acr_meetable),
        session_seconds: u64::try_from(config.login.session_seconds).ok(),
        elevated_token_seconds: u64::try_from(config.tokens.elevated_access_token_seconds).ok(),
    })
}

/// WebAuthn scopes credentials to a domain: an issuer reached by IP
/// address cannot run passkeys.
fn passkeys_possible(issuer: &str) -> bool {
    let Ok(url) = url::Url::parse(issuer) else {
        return false;
    };
    matches!(url.host(), Some(url::Host::Domain(_)))
}

/// What discovery says: `acr_values_supported` only.
fn from_discovery(issuer: &str) -> Result<ServerCaps> {
    crate::serve::runtime()?.block_on(async {
        let base = issuer.trim_end_matches('/');
        let url = format!("{base}/.well-known/openid-configuration");
        let response = reqwest::Client::new()
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !response.status().is_success() {
            return Err(anyhow!("{url} answered {}", response.status()));
        }
        let metadata: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("{url} is not JSON"))?;
        let acr_offered = metadata["acr_values_supported"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(ServerCaps {
            source: issuer.to_owned(),
            acr_offered,
            acr_meetable: None,
            session_seconds: None,
            elevated_token_seconds: None,
        })
    })
}
