//! `stepup admin`: users, clients and signing keys of the authorization
//! server, straight in its database.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use ring::rand::SystemRandom;
use stepup_core::{Clock, Scope, SystemClock};
use stepup_server::Store;
use stepup_server::client::{self, AuthMethod, GRANT_TYPES, Registration};
use stepup_server::keys::KeyRing;
use stepup_server::users::{self, MIN_PASSWORD_LEN};
use zeroize::Zeroizing;

use crate::serve::{load_config, open_store, runtime};

#[derive(Args)]
pub(crate) struct AdminArgs {
    /// The server configuration (TOML): it names the database and the issuer.
    #[arg(long)]
    config: PathBuf,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Users who sign in at the authorization server.
    #[command(subcommand)]
    User(UserCommand),
    /// OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user with a password; prints the user's subject (`sub`).
    Add {
        /// Login name: letters, digits, '-', '_', '.' or '@'.
        username: String,
        /// Read the password from the first line of standard input instead
        /// of prompting on the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a user's password (and unlock the account).
    Passwd {
        /// Login name.
        username: String,
        /// Read the password from the first line of standard input instead
        /// of prompting on the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Enrol a new TOTP secret for a user (replacing any previous one) and
    /// show it as a QR code to scan.
    TotpEnroll {
        /// Login name.
        username: String,
    },
    /// Unlock a user's account: ends a temporary lock and clears the
    /// failure counts, wrong TOTP codes in a row included (after which
    /// codes are refused until an unlock).
    Unlock {
        /// Login name.
        username: String,
    },
    /// Show a user's security events (failed sign-ins, lockouts, unlocks,
    /// factors added or removed, password changes), newest first.
    Events {
        /// Login name.
        username: String,
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Disable a user's account: no sign-in, no token; its sessions end
    /// and its refresh tokens are revoked at once.
    Disable {
        /// Login name.
        username: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// Login name.
        username: String,
    },
    /// Show a user: subject, factors, lock and disabled state, and the
    /// latest security events.
    Show {
        /// Login name.
        username: String,
    },
    /// Delete a user's account: its tokens are revoked, then the user and
    /// everything kept of them (passkeys, sessions, events) goes.
    Delete {
        /// Login name.
        username: String,
        /// Confirms the deletion (it cannot be undone).
        #[arg(long)]
        yes: bool,
    },
    /// List users.
    List,
    /// List a user's passkeys (registered on the account page,
    /// /account/passkeys).
    Passkeys {
        /// Login name.
        username: String,
    },
    /// Remove a user's passkey (a lost device), or all of them; the user's
    /// sessions and tokens end.
    PasskeyRemove {
        /// Login name.
        username: String,
        /// The credential id, as `user passkeys` lists it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        credential_id: Option<String>,
        /// Remove every passkey of the user.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client; a confidential client's secret is shown once.
    Add {
        /// The client id: letters, digits, '-', '_' or '.'.
        client_id: String,
        /// A grant type the client may use (repeat for several).
        #[arg(long = "grant", value_name = "GRANT_TYPE", value_parser = PossibleValuesParser::new(GRANT_TYPES.iter().copied()))]
        grants: Vec<String>,
        /// An exact redirect URI (repeat for several).
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// A scope the client may ask for (repeat for several).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// A public client: no secret (PKCE protects its codes).
        #[arg(long)]
        public: bool,
        /// How a confidential client authenticates at the token endpoint.
        #[arg(
            long,
            value_name = "METHOD",
            value_parser = ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            default_value = "client_secret_basic",
            conflicts_with = "public"
        )]
        auth_method: String,
        /// Require pushed authorization requests (RFC 9126).
        #[arg(long)]
        require_par: bool,
        /// Require DPoP-bound tokens (RFC 9449).
        #[arg(long)]
        require_dpop: bool,
        /// The client's public keys (a JWK Set file), for private_key_jwt.
        #[arg(long, value_name = "FILE")]
        jwks_file: Option<std::path::PathBuf>,
        /// An audience (RFC 8707 resource) the client may get tokens for,
        /// one of the server's `audiences` (repeat for several; the first
        /// is its default). Without any: only the server's default audience.
        #[arg(long = "audience", value_name = "URI")]
        audiences: Vec<String>,
    },
    /// List clients.
    List,
    /// Change what a client may do; each list given replaces the
    /// registered one, what is not given stays. Its id and secret stay; a
    /// running server sees the change within 10 s.
    Update {
        /// The client id.
        client_id: String,
        /// A grant type the client may use (repeat for several).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// An exact redirect URI (repeat for several).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A scope the client may ask for (repeat for several).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// An audience the client may get tokens for, one of the server's
        /// `audiences` (repeat for several).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// Whether authorization requests must be pushed (RFC 9126).
        #[arg(long)]
        require_par: Option<bool>,
        /// Whether tokens must be bound to a key with DPoP (RFC 9449).
        #[arg(long)]
        require_dpop: Option<bool>,
    },
    /// Remove a client: its refresh tokens are revoked, and its codes and
    /// tokens are honoured no more (by a running server, within 10 s).
    Remove {
        /// The client id.
        client_id: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Retire the active signing keys and create new ones.
    Rotate,
}

/// Runs an admin command.
pub(crate) fn run(args: AdminArgs) -> Result<ExitCode> {
    let config = load_config(&args.config)?;
    runtime()?.block_on(async move {
        let store = open_store(&config.database_url).await?;
        let rng = SystemRandom::new();
        let now = SystemClock.now().seconds();
        match args.command {
            AdminCommand::User(UserCommand::Add {
                username,
                password_stdin,
            }) => user_add(&store, &username, password_stdin, now, &rng).await,
            AdminCommand::User(UserCommand::Passwd {
                username,
                password_stdin,
            }) => user_passwd(&store, &username, password_stdin, &rng).await,
            AdminCommand::User(UserCommand::TotpEnroll { username }) => {
                totp_enroll(&store, &config.issuer, &username, &rng).await
            }
            AdminCommand::User(UserCommand::Unlock { username }) => {
                users::unlock(&store, &username, now).await?;
                println!("unlocked {username}: failure counts cleared");
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::User(UserCommand::Disable { username }) => {
                users::set_disabled(&store, &username, true, now).await?;
                println!("disabled {username}: its sessions ended and its tokens were revoked");
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::User(UserCommand::Enable { username }) => {
                users::set_disabled(&store, &username, false, now).await?;
                println!("enabled {username}");
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::User(UserCommand::Show { username }) => user_show(&store, &username, now).await,
            AdminCommand::User(UserCommand::Delete { username, yes }) => {
                if !yes {
                    bail!("deleting {username} cannot be undone: run again with --yes to delete it");
                }
                users::delete(&store, &username, now).await?;
                println!("deleted {username}: its tokens were revoked");
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::Client(ClientCommand::Update {
                client_id,
                grants,
                redirect_uris,
                scopes,
                audiences,
                require_par,
                require_dpop,
            }) => {
                known_audiences(&config.audiences, &audiences)?;
                let scopes = parse_scopes(&scopes)?;
                let given = |list: Vec<String>| (!list.is_empty()).then_some(list);
                let changes = stepup_server::client::ClientChanges {
                    redirect_uris: given(redirect_uris),
                    grant_types: given(grants),
                    scopes: (!scopes.is_empty()).then_some(scopes),
                    audiences: given(audiences),
                    require_par,
                    require_dpop,
                };
                let Some(client) = stepup_server::client::update(&store, &client_id, changes).await? else {
                    bail!("no client {client_id:?}");
                };
                println!(
                    "updated client {}: grants {}, scopes {}, redirect URIs {}",
                    client.id,
                    client.grant_types.join(" "),
                    client
                        .scopes
                        .iter()
                        .map(Scope::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                    client.redirect_uris.join(" ")
                );
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::Client(ClientCommand::Remove { client_id }) => {
                if !stepup_server::client::remove(&store, &client_id, now).await? {
                    bail!("no client {client_id:?}");
                }
                println!("removed client {client_id}: its tokens were revoked");
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::User(UserCommand::Events { username, limit }) => {
                user_events(&store, &username, limit).await
            }
            AdminCommand::User(UserCommand::List) => user_list(&store, now).await,
            AdminCommand::User(UserCommand::Passkeys { username }) => passkey_list(&store, &username).await,
            AdminCommand::User(UserCommand::PasskeyRemove {
                username,
                credential_id,
                all: _,
            }) => {
                let removed = users::remove_passkeys(&store, &username, credential_id.as_deref()).await?;
                println!("removed {removed} passkey(s) of {username}; their sessions and tokens ended");
                Ok(ExitCode::SUCCESS)
            }
            AdminCommand::Client(ClientCommand::Add {
                client_id,
                grants,
                redirect_uris,
                scopes,
                public,
                auth_method,
                require_par,
                require_dpop,
                jwks_file,
                audiences,
            }) => {
                known_audiences(&config.audiences, &audiences)?;
                let jwks = match jwks_file {
                    Some(path) => Some(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("cannot read {}", path.display()))?,
                    ),
                    None => None,
                };
                let auth_method = if public {
                    AuthMethod::None
                } else {
                    AuthMethod::parse(&auth_method)
                        .ok_or_else(|| anyhow!("unknown auth method {auth_method:?}"))?
                };
                let scopes = parse_scopes(&scopes)?;
                let registration = Registration {
                    client_id,
                    auth_method,
                    redirect_uris,
                    grant_types: grants,
                    scopes,
                    require_par,
                    require_dpop,
                    jwks,
                    audiences,
                };
                client_add(&store, registration, now, &rng).await
            }
            AdminCommand::Client(ClientCommand::List) => client_list(&store).await,
            AdminCommand::Keys(KeysCommand::Rotate) => keys_rotate(&store, now, &rng).await,
        }
    })
}

/// Reads a new password: the first line of standard input, or twice from
/// the terminal without echo.
fn read_password(username: &str, from_stdin: bool) -> Result<Zeroizing<String>> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let len = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(len);
        if line.is_empty() {
            bail!("no password on standard input (expected one line)");
        }
        return Ok(line);
    }
    let prompt = |text: String| {
        rpassword::prompt_password(text).map(Zeroizing::new).map_err(|e| {
            anyhow!("cannot read a password from the terminal ({e}); pipe one in with --password-stdin")
        })
    };
    let first = prompt(format!("New password for {username}: "))?;
    if first.chars().count() < MIN_PASSWORD_LEN {
        bail!("a password needs at least {MIN_PASSWORD_LEN} characters");
    }
    let second = prompt("Repeat the password: ".to_owned())?;
    if *first != *second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

async fn user_add(
    store: &Store,
    username: &str,
    password_stdin: bool,
    now: i64,
    rng: &SystemRandom,
) -> Result<ExitCode> {
    // Fail before asking for a password that could not be used.
    if store.user_by_username(username).await?.is_some() {
        bail!("user {username} already exists");
    }
    let password = read_password(username, password_stdin)?;
    let user = users::add_user(store, username, &password, now, rng).await?;
    println!("added user {}", user.username);
    println!("subject: {}", user.id);
    Ok(ExitCode::SUCCESS)
}

async fn user_passwd(
    store: &Store,
    username: &str,
    password_stdin: bool,
    rng: &SystemRandom,
) -> Result<ExitCode> {
    if store.user_by_username(username).await?.is_none() {
        bail!("no user named {username:?}");
    }
    let password = read_password(username, password_stdin)?;
    users::set_password(store, username, &password, rng).await?;
    println!("changed the password of {username} (and unlocked the account)");
    Ok(ExitCode::SUCCESS)
}

async fn totp_enroll(store: &Store, issuer: &str, username: &str, rng: &SystemRandom) -> Result<ExitCode> {
    let previous = store
        .user_by_username(username)
        .await?
        .ok_or_else(|| anyhow!("no user named {username:?}"))?
        .totp_seed
        .is_some();
    let secret = users::enroll_totp(store, username, rng).await?;
    let uri = Zeroizing::new(users::otpauth_uri(&totp_label(issuer), username, &secret));
    let qr = QrCode::new(uri.as_bytes()).map_err(|e| anyhow!("cannot make a QR code: {e}"))?;
    // Inverted, as terminals are mostly light text on a dark background.
    let image = qr
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .build();
    if previous {
        eprintln!("note: {username} had a TOTP secret: it no longer works");
    }
    println!("TOTP enrolled for {username}. Scan this QR code with an authenticator app:");
    println!();
    println!("{image}");
    println!();
    println!("{}", uri.as_str());
    println!();
    println!(
        "Or enter it by hand: account {username}, key {} (time-based, {}, {} digits, {} s)",
        Zeroizing::new(users::base32(secret.expose_seed())).as_str(),
        secret.algorithm.name(),
        secret.digits,
        secret.step
    );
    eprintln!("note: this is the user's secret: clear the terminal once it is scanned");
    Ok(ExitCode::SUCCESS)
}

/// What authenticator apps show as the account's issuer: the issuer's host.
/// The Key URI Format allows no colon in it, so not the whole issuer URL
/// (nor a port, nor an IPv6 address).
fn totp_label(issuer: &str) -> String {
    url::Url::parse(issuer)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .filter(|host| !host.is_empty() && !host.contains(':'))
        .unwrap_or_else(|| "stepup".to_owned())
}

async fn user_list(store: &Store, now: i64) -> Result<ExitCode> {
    let users = store.users().await?;
    if users.is_empty() {
        println!("no users");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = users
        .iter()
        .map(|u| {
            let left = |until: Option<i64>| until.filter(|t| *t > now).map(|t| t - now);
            let locked = match (left(u.locked_until), left(u.otp_locked_until)) {
                (None, None) => "no".to_owned(),
                (Some(p), None) => format!("passwords, {p} s left"),
                (None, Some(c)) => format!("codes, {c} s left"),
                (Some(p), Some(c)) => format!("passwords {p} s, codes {c} s left"),
            };
            vec![
                u.username.clone(),
                u.id.clone(),
                yes_no(u.totp_seed.is_some()).to_owned(),
                u.passkeys.to_string(),
                locked,
                u.disabled_at.map_or_else(
                    || "no".to_owned(),
                    |t| format!("since {}", stepup_core::UnixTime(t)),
                ),
            ]
        })
        .collect();
    print_table(
        &["USERNAME", "SUBJECT", "TOTP", "PASSKEYS", "LOCKED", "DISABLED"],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

async fn passkey_list(store: &Store, username: &str) -> Result<ExitCode> {
    let Some(user) = store.user_by_username(username).await? else {
        bail!("no user named {username:?}");
    };
    let passkeys = store.passkeys_of(&user.id).await?;
    if passkeys.is_empty() {
        println!("{username} has no passkey");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = passkeys
        .iter()
        .map(|p| {
            vec![
                p.credential_id.clone(),
                p.name.clone(),
                p.created_at.to_string(),
                p.last_used_at
                    .map_or_else(|| "never".to_owned(), |t| t.to_string()),
            ]
        })
        .collect();
    print_table(&["CREDENTIAL ID", "NAME", "ADDED", "LAST USED"], rows);
    Ok(ExitCode::SUCCESS)
}

/// Checks that each audience is one of the server's.
fn known_audiences(server: &[String], audiences: &[String]) -> Result<()> {
    if let Some(unknown) = audiences.iter().find(|a| !server.contains(a)) {
        bail!(
            "audience {unknown:?} is not one of the server's audiences ({})",
            server.join(", ")
        );
    }
    Ok(())
}

/// Scopes as typed, checked.
fn parse_scopes(scopes: &[String]) -> Result<Vec<Scope>> {
    scopes
        .iter()
        .map(|s| Scope::new(s.as_str()).map_err(|e| anyhow!("scope {s:?}: {e}")))
        .collect()
}

async fn user_show(store: &Store, username: &str, now: i64) -> Result<ExitCode> {
    let Some(user) = store.user_by_username(username).await? else {
        bail!("no user named {username:?}");
    };
    let when = |t: i64| stepup_core::UnixTime(t).to_string();
    let until = |t: Option<i64>| {
        t.filter(|t| *t > now)
            .map_or_else(|| "no".to_owned(), |t| format!("until {}", when(t)))
    };
    println!("user:       {}", user.username);
    println!("subject:    {}", user.id);
    println!("created:    {}", when(user.created_at));
    println!("totp:       {}", yes_no(user.totp_seed.is_some()));
    println!("passkeys:   {}", user.passkeys);
    println!("locked:     {}", until(user.locked_until));
    println!(
        "codes:      {}",
        match until(user.otp_locked_until).as_str() {
            "no" => "accepted".to_owned(),
            locked => format!("refused {locked}"),
        }
    );
    println!(
        "disabled:   {}",
        user.disabled_at
            .map_or_else(|| "no".to_owned(), |t| format!("since {}", when(t)))
    );
    println!();
    user_events(store, username, 10).await
}

async fn user_events(store: &Store, username: &str, limit: i64) -> Result<ExitCode> {
    let Some(user) = store.user_by_username(username).await? else {
        bail!("no user named {username:?}");
    };
    let events = store.events_of(&user.id, limit.max(1)).await?;
    if events.is_empty() {
        println!("{username} has no security event");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = events
        .into_iter()
        .map(|e| {
            vec![
                stepup_core::UnixTime(e.at).to_string(),
                e.kind,
                e.count.to_string(),
                e.detail,
                e.client_address.unwrap_or_else(|| "-".to_owned()),
                e.country.unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    print_table(&["WHEN", "EVENT", "TIMES", "DETAIL", "CLIENT", "COUNTRY"], rows);
    Ok(ExitCode::SUCCESS)
}

async fn client_add(
    store: &Store,
    registration: Registration,
    now: i64,
    rng: &SystemRandom,
) -> Result<ExitCode> {
    let (client, secret) = client::register(store, registration, now, rng).await?;
    let kind = if secret.is_some() {
        "confidential"
    } else {
        "public"
    };
    println!(
        "registered {kind} client {} (auth method {})",
        client.id,
        client.auth_method.as_str()
    );
    println!("client_id: {}", client.id);
    if let Some(secret) = secret {
        println!("client_secret: {}", secret.expose_secret());
        eprintln!(
            "note: the client secret is shown this once and cannot be shown again (only its hash is stored): keep it now"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn client_list(store: &Store) -> Result<ExitCode> {
    let clients = client::list(store).await?;
    if clients.is_empty() {
        println!("no clients");
        return Ok(ExitCode::SUCCESS);
    }
    let or_dash = |s: String| if s.is_empty() { "-".to_owned() } else { s };
    let rows = clients
        .iter()
        .map(|c| {
            let scopes: Vec<&str> = c.scopes.iter().map(Scope::as_str).collect();
            vec![
                c.id.clone(),
                c.auth_method.as_str().to_owned(),
                or_dash(c.grant_types.join(",")),
                or_dash(scopes.join(" ")),
                yes_no(c.require_par).to_owned(),
                or_dash(c.redirect_uris.join(" ")),
            ]
        })
        .collect();
    print_table(
        &[
            "CLIENT",
            "AUTH METHOD",
            "GRANT TYPES",
            "SCOPES",
            "PAR",
            "REDIRECT URIS",
        ],
        rows,
    );
    Ok(ExitCode::SUCCESS)
}

async fn keys_rotate(store: &Store, now: i64, rng: &SystemRandom) -> Result<ExitCode> {
    let retired = KeyRing::rotate(store, now, rng).await?;
    let active: Vec<String> = store
        .signing_keys()
        .await?
        .into_iter()
        .filter(|k| k.retired_at.is_none())
        .map(|k| format!("{} ({})", k.kid, k.alg))
        .collect();
    println!(
        "retired {retired} signing key{}; active now: {}",
        if retired == 1 { "" } else { "s" },
        active.join(", ")
    );
    println!(
        "The new keys are published at once and sign after {} s; the old ones sign until then and stay published while their tokens live.",
        stepup_server::keys::ACTIVATION_DELAY_SECONDS
    );
    println!("Retired keys stay in the JWK Set until the tokens they signed have expired.");
    Ok(ExitCode::SUCCESS)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Prints rows under headers, in columns padded to their widest cell.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_labels_have_no_colon() {
        assert_eq!(totp_label("http://127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(totp_label("https://as.example/tenant"), "as.example");
        assert_eq!(totp_label("http://[::1]:8080"), "stepup");
    }
}
