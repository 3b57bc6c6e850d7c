//! `stepup sim`: normal and hostile traffic against the demo, with what it
//! costs users (friction, re-authentication latency) and what it stops
//! (attacks by kind).
//!
//! The simulation starts its own demo deployment (authorization server on
//! SQLite, the bank API behind the guard and behind the gateway), enrols
//! virtual users with a password and TOTP, and runs them for the given
//! duration: reads, payees, statements, transfers, large transfers approved
//! for themselves (RFC 9396), each user through the guard or the gateway.
//! Step-ups are answered by the user (the code computed from its secret; a
//! code already used is waited out, as a person would). In the same run,
//! hostile actors try more than 30 ways in. The run fails when an attack
//! gets through or a trusted call is refused.
//!
//! `--target FILE` runs against a deployment described by a file instead
//! (see [`TargetFile`]); attacks that need the simulation's own deployment
//! are reported as not run.

mod attacks;
mod passkey;
mod report;
mod rogue;
mod swapped_account;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use serde_json::{Value, json};
use stepup_client::{ClientConfig, Provider, StepUpClient};

use crate::demo;
use stepup_client::FormUser as VirtualUser;

/// `stepup sim` arguments.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// How long the virtual users run (`30s`, `2m`).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// How many virtual users.
    #[arg(long, default_value_t = 4)]
    users: usize,
    /// What the users do (TOML; see scenarios/bank.toml, the default).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// The deployment: `demo` (the simulation starts its own, with its
    /// users enrolled), or a target file (TOML) describing one that serves
    /// the demo bank API: its URLs and accounts whose passwords and TOTP
    /// secrets the virtual users know (see scenarios/target.example.toml).
    #[arg(long, default_value = "demo")]
    target: String,
    /// The seed of the users' choices (the same seed, the same mix).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the report goes (`report.json`, `report.html`) and the
    /// deployment keeps its data.
    #[arg(long, default_value = "stepup-sim")]
    out: PathBuf,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 30s or 2m"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("{text:?}: expected a duration such as 30s or 2m")),
    }
}

/// What a user does, and how often (a weight relative to the others).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Action {
    name: String,
    weight: u32,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<String>,
    /// Needs a token approved for the transaction (RFC 9396).
    #[serde(default)]
    transaction: bool,
}

/// A scenario: the users' actions and their pauses.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    /// Pause between two actions of a user, milliseconds (low, high).
    pause_ms: (u64, u64),
    #[serde(rename = "action")]
    actions: Vec<Action>,
}

/// The default scenario (the demo bank's users).
const DEFAULT_SCENARIO: &str = include_str!("../../../../scenarios/bank.toml");

impl Scenario {
    /// Reads and checks a scenario; `origin` names it in errors.
    fn parse(origin: &str, text: &str) -> Result<Self> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| anyhow!("{origin}: {e}"))?;
        let bad = |message: String| anyhow!("{origin}: {message}");
        if scenario.actions.is_empty() || scenario.actions.iter().all(|a| a.weight == 0) {
            return Err(bad(
                "expected at least one [[action]] with a weight above 0".into()
            ));
        }
        if scenario.pause_ms.0 > scenario.pause_ms.1 {
            return Err(bad("pause_ms must be [low, high] with low <= high".into()));
        }
        for a in &scenario.actions {
            reqwest::Method::from_bytes(a.method.as_bytes()).map_err(|_| {
                bad(format!(
                    "action {:?}: {:?} is not an HTTP method",
                    a.name, a.method
                ))
            })?;
            if !a.path.starts_with('/') {
                return Err(bad(format!("action {:?}: path must start with '/'", a.name)));
            }
            let body = match &a.body {
                Some(b) => Some(
                    serde_json::from_str::<Value>(b)
                        .map_err(|e| bad(format!("action {:?}: body is not JSON: {e}", a.name)))?,
                ),
                None => None,
            };
            if a.transaction
                && !body
                    .as_ref()
                    .is_some_and(|b| b["amount"].is_number() && b["to"].is_string())
            {
                return Err(bad(format!(
                    "action {:?}: a transaction needs a body with a numeric amount and a creditor `to`",
                    a.name
                )));
            }
        }
        Ok(scenario)
    }
}

/// Where the virtual users are (a documentation address, RFC 5737).
pub(crate) const HOME_ADDRESS: &str = "192.0.2.10";
/// Where an attacker with a stolen token is.
pub(crate) const FOREIGN_ADDRESS: &str = "198.51.100.7";

/// The simulation's geolocation: the users' address in France, the
/// attacker's in Brazil, anything else unknown.
struct SimGeo(Vec<(std::net::IpAddr, stepup_guard::risk::CountryCode)>);

impl SimGeo {
    fn new() -> Self {
        let place =
            |ip: &str, country: &str| ip.parse().ok().zip(stepup_guard::risk::CountryCode::new(country));
        Self(
            [place(HOME_ADDRESS, "FR"), place(FOREIGN_ADDRESS, "BR")]
                .into_iter()
                .flatten()
                .collect(),
        )
    }
}

impl stepup_guard::risk::GeoLookup for SimGeo {
    fn lookup(&self, ip: std::net::IpAddr) -> stepup_guard::risk::GeoPoint {
        stepup_guard::risk::GeoPoint {
            country: self.0.iter().find(|(a, _)| *a == ip).map(|(_, c)| *c),
            ..stepup_guard::risk::GeoPoint::default()
        }
    }
}

/// A small deterministic generator (SplitMix64): the same seed, the same mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, actions: &'a [Action]) -> &'a Action {
        let total: u32 = actions.iter().map(|a| a.weight).sum();
        let mut roll = (self.next() % u64::from(total.max(1))) as u32;
        for a in actions {
            if roll < a.weight {
                return a;
            }
            roll -= a.weight;
        }
        &actions[0]
    }
}

/// One call of a virtual user.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) action: String,
    pub(crate) door: &'static str,
    pub(crate) status: u16,
    pub(crate) ok: bool,
    pub(crate) micros: u64,
    /// Step-ups answered during it (new authorization requests after the
    /// user's first sign-in), whether or not the user was asked anything.
    pub(crate) step_ups: usize,
    /// The factors the user was asked for in those step-ups (empty: none,
    /// or the session already met the level).
    pub(crate) asked: Vec<String>,
    /// The call made the user's first sign-in (not a step-up).
    pub(crate) first_sign_in: bool,
    pub(crate) waited_for_code_ms: u64,
    pub(crate) error: Option<String>,
}

/// Progress, shared by the users, the attackers and the progress line.
#[derive(Default)]
struct Progress {
    calls: usize,
    step_ups: usize,
    refused: usize,
    attacks: usize,
    attacks_through: usize,
}

pub(crate) fn run(args: SimArgs) -> Result<ExitCode> {
    // The deployment's errors (not its refusals, which the attacks cause
    // by the hundred) go to `OUT/deployment.log`.
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let log_path = args.out.join("deployment.log");
    let log =
        std::fs::File::create(&log_path).with_context(|| format!("cannot write {}", log_path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Mutex::new(log))
        .with_ansi(false)
        .init();
    crate::serve::runtime()?.block_on(simulate(args))
}

/// A deployment that is not the simulation's own (`--target FILE`): where
/// it is, and accounts whose secrets the virtual users and the hostile
/// actors know. It must serve the demo bank's API (`policies/bank.toml`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    /// The authorization server (discovery, sign-in pages).
    issuer: String,
    /// The bank API behind the guard.
    api: String,
    /// The same API behind the gateway, if there is one.
    gateway: Option<String>,
    /// A public client with a loopback redirect URI and refresh tokens.
    #[serde(default = "default_client_id")]
    client_id: String,
    /// Another client, for codes and refresh tokens taken to it.
    other_client_id: String,
    /// The virtual users (one each).
    #[serde(rename = "user")]
    users: Vec<Account>,
    /// Accounts the hostile actors play with (the brute-force target ends
    /// up locked, the victim's tokens are "stolen").
    victim: Account,
    brute_force_target: Account,
    code_reuse_target: Account,
    /// An account with a password and no other factor, which must not be
    /// able to bind a passkey by itself; the attack is not run without it.
    #[serde(default)]
    password_only: Option<PasswordAccount>,
}

/// An account with nothing but a password.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordAccount {
    name: String,
    password: String,
}

impl PasswordAccount {
    fn user(&self) -> VirtualUser {
        password_only_user(&self.name, &self.password)
    }
}

/// A virtual user who has only a password. (A `VirtualUser` carries a TOTP
/// secret; this one's is never asked for, and matches no enrolment.)
fn password_only_user(name: &str, password: &str) -> VirtualUser {
    VirtualUser::new(name, password, stepup_core::totp::TotpSecret::new(vec![0; 20]))
}

fn default_client_id() -> String {
    "stepup-cli".to_owned()
}

/// An account with a password and TOTP.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Account {
    name: String,
    password: String,
    /// The TOTP secret, base32 as in the `otpauth://` URI.
    totp_secret: String,
}

impl Account {
    fn user(&self, origin: &str) -> Result<VirtualUser> {
        let secret = stepup_core::totp::TotpSecret::from_base32(&self.totp_secret)
            .ok_or_else(|| anyhow!("{origin}: the totp_secret of {:?} is not base32", self.name))?;
        Ok(VirtualUser::new(&self.name, &self.password, secret))
    }
}

impl TargetFile {
    fn load(path: &std::path::Path) -> Result<Self> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {origin}"))?;
        let file: TargetFile = toml::from_str(&text).map_err(|e| anyhow!("{origin}: {e}"))?;
        if file.users.is_empty() {
            return Err(anyhow!("{origin}: expected at least one [[user]]"));
        }
        for url in [Some(&file.issuer), Some(&file.api), file.gateway.as_ref()]
            .into_iter()
            .flatten()
        {
            let parsed = url::Url::parse(url).map_err(|e| anyhow!("{origin}: {url:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(anyhow!("{origin}: {url:?} is not an http(s) URL"));
            }
        }
        Ok(file)
    }
}

/// Where the run goes, and who plays.
struct Deployed {
    issuer: String,
    api_url: String,
    gateway_url: Option<String>,
    client_id: String,
    other_client_id: String,
    users: Vec<Arc<VirtualUser>>,
    passkeys: usize,
    victims: [VirtualUser; 3],
    password_only: Option<VirtualUser>,
    past_server: Option<String>,
    future_server: Option<String>,
    /// The demo runs in this process: its memory is the run's.
    in_process: bool,
    locates_addresses: bool,
    /// Keeps the simulation's own deployment alive.
    _demo: Option<demo::Deployment>,
}

/// The simulation's own demo deployment, fresh, with its users enrolled.
async fn own_demo(args: &SimArgs) -> Result<Deployed> {
    let data = args.out.join("data");
    // A fresh deployment each run: users, sessions and counters start clean.
    let _ = std::fs::remove_dir_all(&data);
    eprintln!("starting the demo deployment in {} ...", data.display());
    let d = demo::start_with(&data, 0, Some(Arc::new(SimGeo::new()))).await?;
    // Every other user also has a passkey (a software authenticator),
    // registered on the account page; levels that take one (phr) use it.
    let mut users = Vec::new();
    let mut passkeys = 0;
    for i in 0..args.users.max(1) {
        let name = format!("sim-user-{i}");
        let password = format!("sim-password-{i}-{}", args.seed);
        let totp = d.add_user(&name, &password).await?;
        let mut user = VirtualUser::new(&name, &password, totp).from_address(HOME_ADDRESS);
        if i % 2 == 1 {
            let key = passkey::SoftKey::new();
            user = user.with_passkey(key.clone());
            passkey::register(&user, &d.issuer, &key)
                .await
                .map_err(|e| anyhow!("registering a passkey for {name}: {e}"))?;
            // Signed out after registering: the run starts from a password.
            user.forget_session();
            user.take_sign_ins();
            passkeys += 1;
        }
        users.push(Arc::new(user));
    }
    let mut victims = Vec::new();
    for role in ["victim", "brute-force-target", "code-reuse-target"] {
        let password = format!("sim-{role}-password");
        let totp = d.add_user(&format!("sim-{role}"), &password).await?;
        victims.push(VirtualUser::new(&format!("sim-{role}"), &password, totp).from_address(HOME_ADDRESS));
    }
    let password_only = "sim-password-only-password";
    d.add_password_user("sim-password-only", password_only).await?;
    Ok(Deployed {
        issuer: d.issuer.clone(),
        api_url: d.api_url.clone(),
        gateway_url: Some(d.gateway_url.clone()),
        client_id: "stepup-cli".into(),
        other_client_id: demo::APP_CLIENT.into(),
        users,
        passkeys,
        victims: victims.try_into().map_err(|_| anyhow!("three victims"))?,
        password_only: Some(
            password_only_user("sim-password-only", password_only).from_address(HOME_ADDRESS),
        ),
        past_server: Some(d.shifted_server(-2 * 3600).await?),
        future_server: Some(d.shifted_server(2 * 3600).await?),
        in_process: true,
        locates_addresses: true,
        _demo: Some(d),
    })
}

/// A deployment described by a target file: its accounts as they are
/// (`--users` is the file's number of users; no passkeys are registered,
/// the accounts are not the simulation's to change).
fn described(path: &std::path::Path) -> Result<Deployed> {
    let file = TargetFile::load(path)?;
    let origin = path.display().to_string();
    let users = file
        .users
        .iter()
        .map(|a| a.user(&origin).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let victims = [
        file.victim.user(&origin)?,
        file.brute_force_target.user(&origin)?,
        file.code_reuse_target.user(&origin)?,
    ];
    Ok(Deployed {
        issuer: file.issuer.trim_end_matches('/').to_owned(),
        api_url: file.api.trim_end_matches('/').to_owned(),
        gateway_url: file.gateway.map(|g| g.trim_end_matches('/').to_owned()),
        client_id: file.client_id,
        other_client_id: file.other_client_id,
        users,
        passkeys: 0,
        victims,
        password_only: file.password_only.as_ref().map(PasswordAccount::user),
        past_server: None,
        future_server: None,
        in_process: false,
        locates_addresses: false,
        _demo: None,
    })
}

async fn simulate(args: SimArgs) -> Result<ExitCode> {
    let scenario = match &args.scenario {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Scenario::parse(&path.display().to_string(), &text)?
        }
        None => Scenario::parse("scenarios/bank.toml", DEFAULT_SCENARIO)?,
    };
    let scenario = Arc::new(scenario);
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let d = if args.target == "demo" {
        own_demo(&args).await?
    } else {
        described(std::path::Path::new(&args.target))?
    };
    let http = reqwest::Client::new();
    let provider = Provider::discover(&http, &d.issuer)
        .await
        .map_err(|e| anyhow!("discovery of {}: {e}", d.issuer))?;
    let users = d.users.clone();
    let passkeys = d.passkeys;

    let progress = Arc::new(Mutex::new(Progress::default()));
    let started = Instant::now();
    let deadline = started + args.duration;

    // Virtual users.
    let mut tasks = tokio::task::JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let door = match &d.gateway_url {
            Some(gateway) if i % 2 == 1 => ("gateway", gateway.clone()),
            _ => ("guard", d.api_url.clone()),
        };
        // The user allowed payments for the API in their client: its
        // step-ups may add that scope without asking.
        let mut config = ClientConfig::public(&d.client_id, ["openid", "accounts:read"]);
        if let Ok(url) = url::Url::parse(&door.1) {
            config = config.allow_step_up_scopes(url, ["payments:write"]);
        }
        let client = StepUpClient::new(
            http.clone(),
            provider.clone(),
            config,
            Arc::clone(user) as Arc<dyn stepup_client::UserAgent>,
        );
        let user = Arc::clone(user);
        let progress = Arc::clone(&progress);
        let seed = args.seed.wrapping_mul(1000).wrapping_add(i as u64);
        let scenario = Arc::clone(&scenario);
        tasks.spawn(
            async move { virtual_user(client, user, door, &scenario, seed, deadline, progress).await },
        );
    }

    // Hostile actors, in the same run.
    let jwks = discover_jwks(&http, &d.issuer).await?;
    let [victim, brute, reuse] = d.victims;
    let target = attacks::Target {
        issuer: d.issuer.clone(),
        api: d.api_url.clone(),
        gateway: d.gateway_url.clone(),
        authorization_endpoint: provider.authorization_endpoint.clone(),
        token_endpoint: provider.token_endpoint.to_string(),
        jwks,
        victim,
        brute_force_target: brute,
        code_reuse_target: reuse,
        password_only: d.password_only,
        client_id: d.client_id.clone(),
        other_client_id: d.other_client_id.clone(),
        past_server: d.past_server,
        future_server: d.future_server,
        locates_addresses: d.locates_addresses,
    };
    let attack_progress = Arc::clone(&progress);
    let attackers = tokio::spawn(async move {
        let note = move |a: &attacks::Attempt| {
            if !a.ran {
                return;
            }
            if let Ok(mut p) = attack_progress.lock() {
                p.attacks += 1;
                if !a.blocked {
                    p.attacks_through += 1;
                }
            }
        };
        attacks::run_all(&target, &note).await
    });

    // The progress line.
    // Memory: the whole deployment runs in this process, so its resident
    // set is the deployment's (plus the users'), sampled every second.
    let rss_samples = Arc::new(Mutex::new(Vec::<(f64, f64)>::new()));
    let sampler = {
        let samples = Arc::clone(&rss_samples);
        tokio::spawn(async move {
            loop {
                if let Some(mib) = resident_mib()
                    && let Ok(mut s) = samples.lock()
                {
                    s.push((started.elapsed().as_secs_f64(), mib));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let ticker = {
        let progress = Arc::clone(&progress);
        let total = args.duration;
        tokio::spawn(async move {
            let terminal = std::io::stderr().is_terminal();
            let mut last_line = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let elapsed = started.elapsed().min(total);
                let p = progress
                    .lock()
                    .map(|p| (p.calls, p.step_ups, p.refused, p.attacks, p.attacks_through));
                let Ok((calls, step_ups, refused, attacks, through)) = p else {
                    continue;
                };
                let filled = (elapsed.as_secs_f64() / total.as_secs_f64().max(0.001) * 30.0) as usize;
                let line = format!(
                    "[{}{}] {:>5.1}/{} s  calls {calls}  step-ups asking the user {step_ups}  refused {refused}  attacks {attacks} ({through} through)",
                    "#".repeat(filled.min(30)),
                    ".".repeat(30 - filled.min(30)),
                    elapsed.as_secs_f64(),
                    total.as_secs()
                );
                if terminal {
                    eprint!("\r{line}");
                } else if last_line.elapsed() >= Duration::from_secs(5) {
                    eprintln!("{line}");
                    last_line = Instant::now();
                }
            }
        })
    };

    let mut calls = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        calls.extend(joined.map_err(|e| anyhow!("a virtual user stopped: {e}"))?);
    }
    let attempts = attackers
        .await
        .map_err(|e| anyhow!("the attackers stopped: {e}"))?;
    ticker.abort();
    eprintln!();

    sampler.abort();
    let (attempts, not_run): (Vec<_>, Vec<_>) = attempts.into_iter().partition(|a| a.ran);
    let mut report = report::build(&args, started.elapsed(), &calls, &attempts);
    report["run"]["users"] = json!(users.len());
    report["run"]["users_with_passkeys"] = json!(passkeys);
    report["run"]["target"] = json!(if d.in_process {
        "demo"
    } else {
        args.target.as_str()
    });
    report["attacks"]["not_run"] = not_run
        .iter()
        .map(|a| json!({"name": a.name, "kind": a.kind, "why": a.detail}))
        .collect();
    if d.in_process {
        let samples = rss_samples.lock().map(|s| s.clone()).unwrap_or_default();
        report["memory"] = report::memory(&samples);
    }
    if let Some(gateway) = &d.gateway_url
        && let Some(guard) = gateway_decisions(&http, gateway).await
    {
        report["guard_decision"] = guard;
    }
    let json_path = args.out.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let html_path = args.out.join("report.html");
    std::fs::write(&html_path, report::html(&report))
        .with_context(|| format!("cannot write {}", html_path.display()))?;
    print!("{}", report::summary(&report));
    println!("report: {} and {}", json_path.display(), html_path.display());

    let through = attempts.iter().filter(|a| !a.blocked).count();
    let refused = calls.iter().filter(|c| !c.ok).count();
    Ok(if through == 0 && refused == 0 && !calls.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// This process's resident set size in MiB (Linux `/proc/self/status`).
fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn discover_jwks(http: &reqwest::Client, issuer: &str) -> Result<Value> {
    let metadata: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await?
        .json()
        .await?;
    let uri = metadata["jwks_uri"]
        .as_str()
        .ok_or_else(|| anyhow!("no jwks_uri"))?;
    Ok(http.get(uri).send().await?.json().await?)
}

/// The gateway's decision-latency histogram (Prometheus text): how many
/// decisions, and their mean.
async fn gateway_decisions(http: &reqwest::Client, gateway: &str) -> Option<Value> {
    let text = http
        .get(format!("{gateway}/-/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    let count = value("stepup_gateway_decision_duration_seconds_count ")?;
    let sum = value("stepup_gateway_decision_duration_seconds_sum ")?;
    let mean_us = if count > 0.0 {
        (sum / count * 1e6 * 10.0).round() / 10.0
    } else {
        0.0
    };
    Some(json!({"source": "gateway /-/metrics", "count": count as u64, "mean_us": mean_us}))
}

/// One virtual user until `deadline`: an action, a pause, again.
async fn virtual_user(
    client: StepUpClient,
    user: Arc<VirtualUser>,
    (door, base): (&'static str, String),
    scenario: &Scenario,
    seed: u64,
    deadline: Instant,
    progress: Arc<Mutex<Progress>>,
) -> Vec<Call> {
    let mut rng = Rng(seed);
    let mut calls = Vec::new();
    let mut signed_in = false;
    let http = reqwest::Client::new();
    while Instant::now() < deadline {
        let action = rng.pick(&scenario.actions);
        let mut request = http.request(
            reqwest::Method::from_bytes(action.method.as_bytes()).unwrap_or(reqwest::Method::GET),
            format!("{base}{}", action.path),
        );
        if let Some(body) = &action.body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let Ok(request) = request.build() else { continue };
        let started = Instant::now();
        let outcome = if action.transaction {
            let body: Value =
                serde_json::from_str(action.body.as_deref().unwrap_or("{}")).unwrap_or(Value::Null);
            let details = json!([{
                "type": "payment_initiation",
                "amount": format!("{:.2}", body["amount"].as_f64().unwrap_or(0.0)),
                "currency": body["currency"],
                "creditor": body["to"],
            }]);
            client.execute_transaction(request, details).await
        } else {
            client.execute(request).await
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut sign_ins = user.take_sign_ins();
        // The user's first sign-in is not a step-up.
        let first_sign_in = !signed_in && !sign_ins.is_empty();
        if first_sign_in {
            sign_ins.remove(0);
            signed_in = true;
        }
        let asked: Vec<String> = sign_ins.iter().flat_map(|s| s.asked.clone()).collect();
        let waited: Duration = sign_ins.iter().map(|s| s.waited_for_code).sum();
        let step_up = !asked.is_empty();
        let (status, error) = match outcome {
            Ok(response) => (response.status().as_u16(), None),
            Err(e) => (0, Some(e.to_string())),
        };
        let ok = (200..300).contains(&status);
        if let Ok(mut p) = progress.lock() {
            p.calls += 1;
            p.step_ups += usize::from(step_up);
            p.refused += usize::from(!ok);
        }
        calls.push(Call {
            action: action.name.clone(),
            door,
            status,
            ok,
            micros,
            step_ups: sign_ins.len(),
            asked,
            first_sign_in,
            waited_for_code_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            error,
        });
        // A person's pause between actions.
        let (low, high) = scenario.pause_ms;
        let pause = low + rng.next() % (high - low + 1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    calls
}

/// Counts by key, in key order.
fn tally<'a>(items: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for i in items {
        *counts.entry(i.to_owned()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_target_file_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/target.example.toml");
        let file = TargetFile::load(&path).unwrap();
        assert_eq!(file.users.len(), 1);
        assert_eq!(file.victim.name, "sim-victim");
        assert_eq!(
            file.password_only.map(|a| a.name).as_deref(),
            Some("sim-password-only")
        );
    }

    #[test]
    fn the_default_scenario_loads_and_mistakes_are_named() {
        let s = Scenario::parse("bank.toml", DEFAULT_SCENARIO).unwrap();
        assert_eq!(s.actions.len(), 6);
        assert!(s.actions.iter().any(|a| a.transaction));
        let bad = |from: &str, to: &str| {
            Scenario::parse("s.toml", &DEFAULT_SCENARIO.replacen(from, to, 1))
                .unwrap_err()
                .to_string()
        };
        assert!(bad("method = \"GET\"", "method = \"G ET\"").contains("not an HTTP method"));
        assert!(
            bad("path = \"/accounts/42/balance\"", "path = \"accounts\"").contains("must start with '/'")
        );
        assert!(bad("pause_ms = [20, 100]", "pause_ms = [100, 20]").contains("low <= high"));
        assert!(bad("weight = 550", "wieght = 550").contains("unknown field"));
        assert!(bad("\"amount\":2500,", "").contains("numeric amount"));
        assert!(bad("body = '{\"name\"", "body = '{name").contains("not JSON"));
        // The same seed picks the same actions.
        let (mut a, mut b) = (Rng(7), Rng(7));
        let picks = |r: &mut Rng| {
            (0..50)
                .map(|_| r.pick(&s.actions).name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(&mut a), picks(&mut b));
    }
}
