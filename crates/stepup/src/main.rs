//! The `stepup` command line.

#![forbid(unsafe_code)]

mod admin;
mod call;
mod demo;
mod gateway;
mod policy_check;
mod serve;
mod sim;
mod token_file;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use stepup_core::risk::{Signal, Signals};
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
    /// Put the guard in front of any HTTP API, as a reverse proxy.
    Gateway {
        /// The gateway configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        /// How to write logs, the access log among them.
        #[arg(long, value_enum, default_value = "text")]
        log_format: gateway::LogFormat,
    },
    /// Simulate normal and hostile traffic against the demo; report
    /// friction, re-authentication latency and attacks blocked.
    Sim(sim::SimArgs),
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
    /// Validate a policy, and check it against the API's OpenAPI
    /// description and the authorization server: unprotected critical
    /// operations, typos, unreachable levels, lifetimes. Exit status 0
    /// clean, 1 findings, 2 unreadable input.
    Check(policy_check::CheckArgs),
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
        /// The request's risk signals.
        #[command(flatten)]
        signals: Box<SignalArgs>,
    },
}

/// Risk signals of a request, for `policy explain` (leave out what is
/// unknown).
#[derive(clap::Args, Default)]
#[command(next_help_heading = "Risk signals")]
struct SignalArgs {
    /// Client address, looked up in --geoip for country and ASN.
    #[arg(long, requires = "geoip")]
    ip: Option<std::net::IpAddr>,
    /// A MaxMind database (Country or City) for --ip.
    #[arg(long)]
    geoip: Option<PathBuf>,
    /// Transaction amount, a plain decimal (read exactly: 1000.0000001 is
    /// more than 1000).
    #[arg(long, value_parser = stepup_core::amount::parse_amount)]
    amount: Option<stepup_core::amount::Decimal>,
    /// Its currency, e.g. EUR.
    #[arg(long)]
    currency: Option<String>,
    /// Country of the request (ISO 3166-1 alpha-2).
    #[arg(long)]
    country: Option<String>,
    /// Country of the authentication (the token's auth_country).
    #[arg(long)]
    auth_country: Option<String>,
    /// Autonomous system number of the request.
    #[arg(long)]
    asn: Option<u32>,
    /// Device the request presents (DPoP thumbprint or device id).
    #[arg(long)]
    device: Option<String>,
    /// Device the token is bound to.
    #[arg(long)]
    bound_device: Option<String>,
    /// Travel speed since the subject's previous request, km/h.
    #[arg(long)]
    travel_speed_kmh: Option<f64>,
    /// Whether that travel is impossible.
    #[arg(long)]
    impossible_travel: Option<bool>,
    /// Anomaly score of the subject.
    #[arg(long)]
    anomaly_score: Option<f64>,
    /// Requests of the subject in the last minute.
    #[arg(long)]
    request_rate: Option<f64>,
    /// Distinct IPs of the subject in the window.
    #[arg(long)]
    distinct_ips: Option<f64>,
    /// Failed step-ups of the subject in the window.
    #[arg(long)]
    failed_step_ups: Option<f64>,
}

impl SignalArgs {
    /// Fills country and ASN from --ip and --geoip, unless given.
    fn locate(&mut self) -> Result<()> {
        let (Some(ip), Some(path)) = (self.ip, &self.geoip) else {
            return Ok(());
        };
        let geo = stepup_guard::geoip::MaxMindGeo::open(path, None)?;
        let point = stepup_guard::risk::GeoLookup::lookup(&geo, ip);
        if self.country.is_none() {
            self.country = point.country.map(|c| c.as_str().to_owned());
        }
        if self.asn.is_none() {
            self.asn = point.asn;
        }
        Ok(())
    }

    fn signals(&self) -> Signals<'_> {
        Signals {
            amount: self.amount,
            currency: self.currency.as_deref(),
            country: self.country.as_deref(),
            auth_country: self.auth_country.as_deref(),
            asn: self.asn,
            device: self.device.as_deref(),
            bound_device: self.bound_device.as_deref(),
            travel_speed_kmh: self.travel_speed_kmh,
            impossible_travel: self.impossible_travel,
            anomaly_score: self.anomaly_score,
            request_rate: self.request_rate,
            distinct_ips: self.distinct_ips,
            failed_step_ups: self.failed_step_ups,
        }
    }
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
        Command::Policy(PolicyCommand::Check(args)) => policy_check::run(&args),
        Command::Policy(PolicyCommand::Explain {
            policy,
            method,
            path,
            acr,
            auth_time,
            auth_age,
            scope,
            now,
            mut signals,
        }) => {
            signals.locate()?;
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
            explain(&policy, &method, &path, &facts, &signals.signals(), now)
        }
        Command::Serve { config } => serve::serve(&config),
        Command::Gateway { config, log_format } => gateway::run(&config, log_format),
        Command::Admin(args) => admin::run(args),
        Command::Call(args) => call::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Sim(args) => sim::run(args),
    }
}

/// How a requirement reads.
fn describe(req: &stepup_core::Requirement) -> String {
    let acr: Vec<&str> = req.acr_values.iter().map(|a| a.as_str()).collect();
    let mut parts = Vec::new();
    if !acr.is_empty() {
        parts.push(format!("acr {} (or stronger)", acr.join(" or ")));
    }
    if let Some(m) = req.max_age {
        parts.push(format!("max_age {m} s"));
    }
    parts.join("; ")
}

/// The signals given and, for each risk rule, what it made of them.
fn explain_risk(policy: &Policy, decision: &stepup_core::Decision<'_>, signals: &Signals<'_>) {
    let known: Vec<String> = Signal::ALL
        .iter()
        .filter_map(|s| signals.text(*s).map(|v| format!("{} {v}", s.name())))
        .collect();
    if !known.is_empty() {
        println!("signals:  {}", known.join(", "));
    }
    let route_index = policy
        .routes()
        .iter()
        .position(|r| std::ptr::eq(r, decision.rule));
    for rule in policy.risk_rules() {
        let state = if !rule.applies_to(route_index) {
            "not for this route".to_owned()
        } else {
            match rule.condition.eval(signals) {
                Some(true) => format!("fires: {}", describe(&rule.requirement)),
                Some(false) => "does not fire".to_owned(),
                None => {
                    let unknown: Vec<&str> = rule
                        .condition
                        .signals()
                        .into_iter()
                        .filter(|s| signals.text(*s).is_none())
                        .map(|s| s.name())
                        .collect();
                    format!("unknown, does not fire (unknown: {})", unknown.join(", "))
                }
            }
        };
        println!(
            "risk:     {} (line {}) when {}: {state}",
            rule.name,
            rule.location.line,
            rule.condition.as_str()
        );
    }
}

fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Loads a policy, printing its warnings, or its errors and `None`.
pub(crate) fn load(file: &Path) -> Result<Option<Policy>> {
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

fn explain(
    policy: &Policy,
    method: &str,
    path: &str,
    facts: &TokenFacts<'_>,
    signals: &Signals<'_>,
    now: UnixTime,
) -> Result<ExitCode> {
    let decision = match policy.decide_with(method, path, facts, signals, now) {
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
    explain_risk(policy, &decision, signals);
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
