//! `stepup call`: call a protected API; sign in and step up in the browser
//! when it asks, then print the response.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use stepup_client::{ClientConfig, LoopbackBrowser, Opener, Provider, StepUp, StepUpClient};

use crate::serve::runtime;
use crate::token_file::{SharedFile, TokenFile, unix_now};

/// `stepup call` arguments.
#[derive(Args)]
pub(crate) struct CallArgs {
    /// The API URL.
    url: String,
    /// HTTP method (default GET, or POST with --data).
    #[arg(long, short = 'X')]
    method: Option<String>,
    /// A JSON request body (sent with Content-Type: application/json).
    #[arg(long, short = 'd')]
    data: Option<String>,
    /// The authorization server (issuer identifier).
    #[arg(long, env = "STEPUP_ISSUER", default_value = "http://localhost:8080")]
    issuer: String,
    /// The client id, registered as a public client with the redirect URI
    /// http://127.0.0.1/callback.
    #[arg(long, env = "STEPUP_CLIENT_ID", default_value = "stepup-cli")]
    client_id: String,
    /// Scopes of the base token (repeat the flag for several).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// A scope the called API's step-up may add without asking (repeat the
    /// flag for several). Any other scope a step-up asks for is asked on
    /// the terminal, or refused when there is no terminal.
    #[arg(long = "allow-scope")]
    allow_scopes: Vec<String>,
    /// Print the sign-in address instead of opening a browser.
    #[arg(long)]
    no_browser: bool,
    /// Where tokens are kept between calls (default: the user's config
    /// directory, stepup/tokens.json, readable by the user only).
    #[arg(long, env = "STEPUP_TOKENS")]
    tokens: Option<PathBuf>,
    /// Forget the tokens held for this authorization server and client
    /// before the call (to sign in as another account: tokens of two
    /// accounts are never mixed).
    #[arg(long)]
    forget_tokens: bool,
    /// How long to wait for the sign-in in the browser, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

pub(crate) fn run(args: CallArgs) -> Result<ExitCode> {
    let store = TokenFile::at(match &args.tokens {
        Some(path) => path.clone(),
        None => default_token_file()?,
    });
    let key = format!("{} {}", args.issuer, args.client_id);
    runtime()?.block_on(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let provider = Provider::discover(&http, &args.issuer)
            .await
            .with_context(|| format!("reading the metadata of {}", args.issuer))?;
        let opener: Opener = if args.no_browser {
            Arc::new(|url: &url::Url| {
                eprintln!("Open this address in a browser to sign in:\n\n  {url}\n");
                Ok(stepup_client::Opened::nothing())
            })
        } else {
            LoopbackBrowser::system_opener()
        };
        let agent = LoopbackBrowser::with_opener(opener).timeout(Duration::from_secs(args.timeout));
        let mut before = store.load()?.remove(&key).unwrap_or_default();
        if args.forget_tokens {
            // To change account: what was held goes, before anything else.
            store.save_changes(&key, &before, &stepup_client::Tokens::default(), unix_now())?;
            before = stepup_client::Tokens::default();
        }
        let called = url::Url::parse(&args.url).with_context(|| format!("URL {:?}", args.url))?;
        // Resources are called without following redirects (a token goes
        // nowhere but the URL called).
        let resource_http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        // Levels are ranked only where the server says they are ordered.
        let levels = if provider.acr_values_ordered {
            provider.acr_values_supported.clone()
        } else {
            Vec::new()
        };
        let client = StepUpClient::new(
            http.clone(),
            provider,
            ClientConfig::public(args.client_id.clone(), args.scopes.clone())
                .allow_step_up_scopes(called, args.allow_scopes.clone())
                .rank_levels(levels),
            Arc::new(agent),
        )
        .with_resource_http(resource_http)
        .with_tokens(before)
        .with_shared_tokens(Arc::new(SharedFile {
            file: store.clone(),
            key: key.clone(),
        }))
        .on_step_up(Arc::new(|step: &StepUp| {
            eprintln!("{}", step_up_notice(step));
            step.unconfigured_scopes.is_empty() || user_allows(&step.unconfigured_scopes)
        }));

        let method = match (&args.method, &args.data) {
            (Some(m), _) => m.to_ascii_uppercase(),
            (None, Some(_)) => "POST".to_owned(),
            (None, None) => "GET".to_owned(),
        };
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).with_context(|| format!("method {method:?}"))?;
        let mut request = http.request(method, &args.url);
        if let Some(data) = &args.data {
            serde_json::from_str::<serde_json::Value>(data).context("--data must be JSON")?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(data.clone());
        }
        let request = request.build().with_context(|| format!("URL {:?}", args.url))?;
        let outcome = client.execute(request).await;
        // Keep what was obtained, even when the call itself failed; a
        // failure to keep it does not hide the API's answer (the call was
        // made: retrying it may not be safe).
        let saved = store.save_changes(&key, &client.kept_tokens(), &client.tokens().await, unix_now());
        if let Err(e) = &saved {
            eprintln!("warning: the tokens could not be kept: {e:#}");
        }

        let response = outcome.map_err(|e| {
            let hint = matches!(e, stepup_client::ClientError::AccountChanged { .. });
            let e = anyhow::Error::from(e);
            if hint {
                e.context("to call as another account, run again with --forget-tokens")
            } else {
                e
            }
        })?;
        let status = response.status();
        eprintln!("HTTP {}", status);
        let body = response.text().await.context("reading the response")?;
        let mut out = std::io::stdout().lock();
        out.write_all(body.as_bytes())?;
        if !body.ends_with('\n') && !body.is_empty() {
            out.write_all(b"\n")?;
        }
        // 3: the call was made but its tokens were not kept (a script must
        // not take it for a failed call and make it again).
        Ok(match (status.is_success(), saved.is_ok()) {
            (_, false) => ExitCode::from(3),
            (true, true) => ExitCode::SUCCESS,
            (false, true) => ExitCode::from(1),
        })
    })
}

/// What the user reads before the browser opens for a step-up: who asks,
/// for what.
fn step_up_notice(step: &StepUp) -> String {
    let r = &step.requirement;
    let mut asked = Vec::new();
    if !r.acr_values.is_empty() {
        asked.push(format!("level {}", r.acr_values.join(" or ")));
    }
    if let Some(age) = r.max_age {
        asked.push(format!("a sign-in at most {age} s old"));
    }
    if !r.scope.is_empty() {
        asked.push(format!("scope {}", r.scope.join(" ")));
    }
    // The name is the resource's to choose: no control characters (they
    // could rewrite the terminal), and no more than a line of it.
    let who = match step.resource_name.as_deref().map(printable) {
        Some(name) if !name.is_empty() => format!("{} ({name})", step.resource),
        _ => step.resource.clone(),
    };
    format!(
        "{who} asks for a stronger sign-in ({}) for {}.",
        asked.join(", "),
        step.route
    )
}

/// `text` without control characters, at most 60 characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(60).collect()
}

/// Asks on the terminal whether a step-up may add `scopes`; no terminal
/// (a script, a pipe) is a no.
fn user_allows(scopes: &[String]) -> bool {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        eprintln!(
            "It asks for scopes not configured ({}): refused. Pass --allow-scope to allow them.",
            scopes.join(" ")
        );
        return false;
    }
    eprint!(
        "It asks for scopes not configured ({}). Allow? [y/N] ",
        scopes.join(" ")
    );
    let mut answer = String::new();
    if stdin.read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes")
}

fn default_token_file() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("no HOME or XDG_CONFIG_HOME: pass --tokens FILE"),
        },
    };
    Ok(base.join("stepup").join("tokens.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notice_says_who_asks_for_what() {
        let step = StepUp {
            resource: "https://api.bank.example".into(),
            resource_name: Some("Bank API".into()),
            route: "POST https://api.bank.example:443/payees".into(),
            requirement: stepup_client::Requirement {
                acr_values: vec!["mfa".into(), "phr".into()],
                max_age: Some(300),
                scope: vec!["payments:write".into()],
                authorization_details: None,
            },
            unconfigured_scopes: vec![],
        };
        assert_eq!(
            step_up_notice(&step),
            "https://api.bank.example (Bank API) asks for a stronger sign-in (level mfa or phr, \
             a sign-in at most 300 s old, scope payments:write) for POST https://api.bank.example:443/payees."
        );
        // A name that would rewrite the terminal is shown without its
        // control characters.
        let mut sly = step.clone();
        sly.resource_name = Some("\u{1b}[2K\rYour bank\u{1b}[8m hidden\n".into());
        let notice = step_up_notice(&sly);
        assert!(!notice.chars().any(char::is_control), "{notice:?}");
        assert!(
            notice.starts_with("https://api.bank.example ([2KYour bank[8m hidden)"),
            "{notice}"
        );
        sly.resource_name = Some("\u{7}".into());
        assert!(step_up_notice(&sly).starts_with("https://api.bank.example asks"));
    }
}
