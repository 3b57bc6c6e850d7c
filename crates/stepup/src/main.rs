//! The `stepup` command line.

#![forbid(unsafe_code)]

mod admin;
mod call;
mod demo;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use stepup_core::{Policy, TokenFacts, UnixTime, Verdict};

/// Step-up authentication for OAuth 2.0 and OpenID Connect (RFC 9470).
#[derive(Parser)]
#[command(name = "stepup", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with step-up policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the authorization server.
    Serve {
        /// The server configuration (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Manage the authorization server's users, clients and signing keys.
    Admin(admin::AdminArgs),
    /// Call a protected API; sign in, and step up when it asks, in the
    /// browser; print the response.
    Call(call::CallArgs),
    /// Run the whole loop on this machine: authorization server, a banking
    /// API behind the guard, and a web app that steps up when asked.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; exits non-zero with located errors.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Show which rule applies to a request and what it decides for a token.
    Explain {
        /// The policy file (TOML).
        #[arg(long)]
        policy: PathBuf,
        /// HTTP method, e.g. POST.
        method: String,
        /// Request path, e.g. /accounts/42/payees.
        path: String,
        /// The token's `acr` claim (omit for a token without one).
        #[arg(long)]
        acr: Option<String>,
        /// The token's `auth_time` (seconds since the epoch).
        #[arg(long, conflicts_with = "auth_age")]
        auth_time: Option<i64>,
        /// How many seconds ago the user authenticated (instead of --auth-time).
        #[arg(long)]
        auth_age: Option<i64>,
        /// The token's space-separated `scope` claim.
        #[arg(long)]
        scope: Option<String>,
        /// Decide as of this time (seconds since the epoch; default: now).
        #[arg(long)]
        now: Option<i64>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Policy(PolicyCommand::Check { file }) => check(&file),
        Command::Policy(PolicyCommand::Explain {
            policy,
            method,
            path,
            acr,
            auth_time,
            auth_age,
            scope,
            now,
        }) => {
            let Some(policy) = load(&policy)? else {
                return Ok(ExitCode::FAILURE);
            };
            let now = UnixTime(now.unwrap_or_else(system_now));
            let auth_time = auth_time.or(auth_age.map(|age| now.seconds() - age));
            let facts = TokenFacts {
                acr: acr.as_deref(),
                auth_time: auth_time.map(UnixTime),
                scope: scope.as_deref(),
            };
            explain(&policy, &method, &path, &facts, now)
        }
        Command::Serve { config } => serve::serve(&config),
        Command::Admin(args) => admin::run(args),
        Command::Call(args) => call::run(args),
        Command::Demo(args) => demo::run(args),
    }
}

fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Loads a policy, printing its warnings, or its errors and `None`.
fn load(file: &Path) -> Result<Option<Policy>> {
    let source = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    match Policy::from_toml(&file.display().to_string(), &source) {
        Ok(policy) => {
            for w in policy.warnings() {
                eprintln!("warning: {w}");
            }
            Ok(Some(policy))
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(None)
        }
    }
}

fn check(file: &Path) -> Result<ExitCode> {
    let Some(policy) = load(file)? else {
        return Ok(ExitCode::FAILURE);
    };
    println!(
        "{}: ok ({} levels, {} routes, {} warnings)",
        file.display(),
        policy.levels().levels().len(),
        policy.routes().len(),
        policy.warnings().len()
    );
    Ok(ExitCode::SUCCESS)
}

fn explain(
    policy: &Policy,
    method: &str,
    path: &str,
    facts: &TokenFacts<'_>,
    now: UnixTime,
) -> Result<ExitCode> {
    let decision = match policy.decide(method, path, facts, now) {
        Ok(d) => d,
        Err(e) => {
            println!("decision: invalid request (400): {e}");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let rule = decision.rule;
    println!("rule:     {} (line {})", rule.name, rule.location.line);
    let req = &rule.requirement;
    let acr: Vec<&str> = req.acr_values.iter().map(|a| a.as_str()).collect();
    let scopes: Vec<&str> = req.scopes.iter().map(|s| s.as_str()).collect();
    println!(
        "requires: acr {}; max_age {}; scope {}",
        if acr.is_empty() {
            "any".to_owned()
        } else {
            format!("{} (or stronger)", acr.join(" or "))
        },
        req.max_age.map_or("none".to_owned(), |m| format!("{m} s")),
        if scopes.is_empty() {
            "none".to_owned()
        } else {
            scopes.join(" ")
        },
    );
    match &decision.verdict {
        Verdict::Allow => println!("decision: allow (200)"),
        Verdict::StepUp { reason, .. } => {
            println!("decision: step-up (401 insufficient_user_authentication): {reason}")
        }
        Verdict::InsufficientScope { .. } => {
            println!("decision: insufficient scope (403 insufficient_scope)")
        }
    }
    if let Some(challenge) = decision.challenge() {
        println!("WWW-Authenticate: {}", challenge.to_challenge());
    }
    Ok(ExitCode::SUCCESS)
}
