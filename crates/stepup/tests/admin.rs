//! `stepup serve` and `stepup admin`, run as an administrator would, each
//! test against its own SQLite database in a temporary directory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
issuer = "http://127.0.0.1:8080"
listen = "127.0.0.1:0"
database_url = "sqlite://DIR/data/stepup.db"
audiences = ["http://127.0.0.1:3000"]

[[level]]
name = "pwd"
acr = "urn:stepup:acr:pwd"
factors = [["pwd"]]

[[level]]
name = "mfa"
acr = "urn:stepup:acr:mfa"
factors = [["pwd", "otp"], ["hwk"]]
"#;

/// A temporary directory with a configuration, removed when dropped.
struct Env {
    dir: PathBuf,
    config: PathBuf,
}

impl Env {
    fn new(name: &str) -> Self {
        Self::with_config(name, CONFIG)
    }

    fn with_config(name: &str, config: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("stepup-admin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stepup.toml");
        std::fs::write(&path, config.replace("DIR", dir.to_str().unwrap())).unwrap();
        Self { dir, config: path }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stepup"));
        command
            .arg("admin")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir);
        command
    }

    /// Runs `stepup admin --config FILE ARGS` with `stdin` as standard input.
    fn admin_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `stepup admin --config FILE ARGS` with nothing on standard input.
    fn admin(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts exit code 2 and returns standard error.
fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// The line of a table whose first column is `first`.
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no row {first} in\n{table}"))
}

#[test]
fn users_are_added_listed_and_enrolled() {
    let env = Env::new("users");
    assert_eq!(ok(&env.admin(&["user", "list"])), "no users\n");

    let out = ok(&env.admin_with_stdin(
        &["user", "add", "alice", "--password-stdin"],
        "correct horse battery\n",
    ));
    assert!(out.starts_with("added user alice\nsubject: "), "{out}");
    let subject = out.lines().nth(1).unwrap().trim_start_matches("subject: ");
    assert!(subject.len() >= 16, "{subject}");
    assert!(env.dir.join("data/stepup.db").exists());

    let list = ok(&env.admin(&["user", "list"]));
    assert_eq!(
        list.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["USERNAME", "SUBJECT", "TOTP", "PASSKEYS", "LOCKED", "DISABLED"]
    );
    assert_eq!(row(&list, "alice"), ["alice", subject, "no", "0", "no", "no"]);

    // The same name again: refused before any password is read.
    let err = fails(&env.admin(&["user", "add", "alice", "--password-stdin"]));
    assert_eq!(err, "error: user alice already exists\n");

    let err = fails(&env.admin_with_stdin(&["user", "add", "bob", "--password-stdin"], "short\n"));
    assert_eq!(err, "error: a password needs at least 8 characters\n");
    let err = fails(&env.admin(&["user", "add", "bob", "--password-stdin"]));
    assert!(err.contains("no password on standard input"), "{err}");
    let err = fails(&env.admin_with_stdin(
        &["user", "add", "bad name", "--password-stdin"],
        "correct horse battery\n",
    ));
    assert!(err.contains("user name \"bad name\""), "{err}");
    assert!(!ok(&env.admin(&["user", "list"])).contains("bob"));

    let out = ok(&env.admin_with_stdin(
        &["user", "passwd", "alice", "--password-stdin"],
        "another good password\r\n",
    ));
    assert!(out.contains("changed the password of alice"), "{out}");
    let err = fails(&env.admin_with_stdin(
        &["user", "passwd", "nobody", "--password-stdin"],
        "another good password\n",
    ));
    assert_eq!(err, "error: no user named \"nobody\"\n");

    let out = env.admin(&["user", "totp-enroll", "alice"]);
    let stdout = ok(&out);
    let uri = stdout
        .lines()
        .find(|l| l.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth URI in\n{stdout}"));
    assert!(uri.starts_with("otpauth://totp/127.0.0.1:alice?secret="), "{uri}");
    assert!(uri.contains("&issuer=127.0.0.1&"), "{uri}");
    let secret = uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap();
    assert_eq!(secret.len(), 32, "160 bits in base32: {secret}");
    assert!(
        stdout.contains(&format!("key {secret} (time-based, SHA1, 6 digits, 30 s)")),
        "{stdout}"
    );
    assert!(
        stdout.contains('█') || stdout.contains('▀'),
        "no QR code in\n{stdout}"
    );
    assert_eq!(row(&ok(&env.admin(&["user", "list"])), "alice")[2], "yes");

    // Enrolling again replaces the secret, and says so.
    let out = env.admin(&["user", "totp-enroll", "alice"]);
    let again = ok(&out);
    assert!(!again.contains(secret));
    assert!(text(&out.stderr).contains("no longer works"));
    let err = fails(&env.admin(&["user", "totp-enroll", "nobody"]));
    assert_eq!(err, "error: no user named \"nobody\"\n");
}

#[test]
fn a_users_security_events_are_listed_newest_first() {
    let env = Env::new("events");
    ok(&env.admin_with_stdin(
        &["user", "add", "bob", "--password-stdin"],
        "a long enough password\n",
    ));
    assert!(ok(&env.admin(&["user", "events", "bob"])).contains("bob has no security event"));
    ok(&env.admin_with_stdin(
        &["user", "passwd", "bob", "--password-stdin"],
        "another long password\n",
    ));
    ok(&env.admin(&["user", "totp-enroll", "bob"]));
    ok(&env.admin(&["user", "unlock", "bob"]));
    let table = ok(&env.admin(&["user", "events", "bob"]));
    let kinds: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(kinds, ["unlocked", "factor_added", "password_changed"], "{table}");
    assert!(table.contains(" UTC "), "{table}");
    assert!(
        fails(&env.admin(&["user", "events", "nobody"])).contains("no user named"),
        "an unknown user"
    );
    // Disabled and enabled again: both listed, and events.
    ok(&env.admin(&["user", "disable", "bob"]));
    let list = ok(&env.admin(&["user", "list"]));
    assert!(row(&list, "bob").contains(&"since"), "{list}");
    ok(&env.admin(&["user", "enable", "bob"]));
    assert_eq!(row(&ok(&env.admin(&["user", "list"])), "bob").last(), Some(&"no"));
    let table = ok(&env.admin(&["user", "events", "bob", "--limit", "2"]));
    let kinds: Vec<&str> = table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(kinds, ["enabled", "disabled"], "{table}");
    let shown = ok(&env.admin(&["user", "show", "bob"]));
    for line in ["user:       bob", "totp:       yes", "disabled:   no", "EVENT"] {
        assert!(shown.contains(line), "{line}: {shown}");
    }
    // Deleted, only when confirmed; then gone, events and all.
    let err = fails(&env.admin(&["user", "delete", "bob"]));
    assert!(err.contains("--yes"), "{err}");
    assert!(ok(&env.admin(&["user", "list"])).contains("bob"));
    ok(&env.admin(&["user", "delete", "bob", "--yes"]));
    assert!(!ok(&env.admin(&["user", "list"])).contains("bob"));
    assert!(fails(&env.admin(&["user", "show", "bob"])).contains("no user named"));
    assert!(fails(&env.admin(&["user", "delete", "bob", "--yes"])).contains("bob"));
}

#[test]
fn clients_are_registered_and_listed() {
    let env = Env::new("clients");
    assert_eq!(ok(&env.admin(&["client", "list"])), "no clients\n");

    let out = env.admin(&[
        "client",
        "add",
        "web",
        "--grant",
        "authorization_code",
        "--grant",
        "refresh_token",
        "--redirect-uri",
        "https://app.example/cb",
        "--scope",
        "openid",
        "--public",
    ]);
    let stdout = ok(&out);
    assert_eq!(
        stdout,
        "registered public client web (auth method none)\nclient_id: web\n"
    );
    assert!(!stdout.contains("secret"));

    let out = env.admin(&[
        "client",
        "add",
        "svc",
        "--grant",
        "client_credentials",
        "--scope",
        "reports:read",
        "--require-par",
    ]);
    let stdout = ok(&out);
    assert!(
        stdout.starts_with("registered confidential client svc (auth method client_secret_basic)\n"),
        "{stdout}"
    );
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .unwrap_or_else(|| panic!("no secret in\n{stdout}"));
    assert_eq!(secret.len(), 43, "256 bits, base64url: {secret}");
    assert!(text(&out.stderr).contains("cannot be shown again"));

    let out = ok(&env.admin(&[
        "client",
        "add",
        "poster",
        "--grant",
        "client_credentials",
        "--auth-method",
        "client_secret_post",
    ]));
    assert!(out.contains("(auth method client_secret_post)"), "{out}");

    let list = ok(&env.admin(&["client", "list"]));
    assert!(!list.contains(secret), "the secret is never listed");
    assert_eq!(
        row(&list, "web"),
        [
            "web",
            "none",
            "authorization_code,refresh_token",
            "openid",
            "no",
            "https://app.example/cb"
        ]
    );
    assert_eq!(
        row(&list, "svc"),
        [
            "svc",
            "client_secret_basic",
            "client_credentials",
            "reports:read",
            "yes",
            "-"
        ]
    );
    assert_eq!(row(&list, "poster")[1], "client_secret_post");

    let err = fails(&env.admin(&["client", "add", "web", "--grant", "client_credentials"]));
    assert_eq!(err, "error: client web already exists\n");
    let err = fails(&env.admin(&[
        "client",
        "add",
        "spa",
        "--grant",
        "client_credentials",
        "--public",
    ]));
    assert_eq!(err, "error: a public client cannot use client_credentials\n");
    let err = fails(&env.admin(&["client", "add", "spa", "--grant", "authorization_code"]));
    assert!(err.contains("needs at least one redirect URI"), "{err}");
    // Audiences must be the server's own (issue 16 §7).
    let err = fails(&env.admin(&[
        "client",
        "add",
        "aud",
        "--grant",
        "client_credentials",
        "--audience",
        "https://evil.example",
    ]));
    assert!(err.contains("is not one of the server's audiences"), "{err}");
    let out = env.admin(&[
        "client",
        "add",
        "aud",
        "--grant",
        "client_credentials",
        "--audience",
        "http://127.0.0.1:3000",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = fails(&env.admin(&["client", "add", "spa", "--grant", "implicit"]));
    assert!(err.contains("invalid value 'implicit'"), "{err}");
    let err = fails(&env.admin(&[
        "client",
        "add",
        "spa",
        "--grant",
        "client_credentials",
        "--scope",
        "a\"b",
    ]));
    assert!(err.contains("scope \"a\\\"b\""), "{err}");
    let err = fails(&env.admin(&[
        "client",
        "add",
        "spa",
        "--public",
        "--auth-method",
        "client_secret_post",
        "--grant",
        "authorization_code",
    ]));
    assert!(err.contains("cannot be used with"), "{err}");
    // Updated: lists replace, the rest stays; checked as a registration.
    let out = ok(&env.admin(&[
        "client",
        "update",
        "web",
        "--redirect-uri",
        "https://app.example/new-cb",
        "--scope",
        "openid",
        "--scope",
        "accounts:read",
    ]));
    assert_eq!(
        out,
        "updated client web: grants authorization_code refresh_token, scopes openid accounts:read, redirect URIs https://app.example/new-cb\n"
    );
    let err = fails(&env.admin(&[
        "client",
        "update",
        "web",
        "--redirect-uri",
        "https://app.example/cb#frag",
    ]));
    assert!(err.contains("fragment"), "{err}");
    let err = fails(&env.admin(&["client", "update", "web", "--grant", "client_credentials"]));
    assert!(err.contains("public client"), "{err}");
    let err = fails(&env.admin(&[
        "client",
        "update",
        "web",
        "--audience",
        "https://elsewhere.example",
    ]));
    assert!(err.contains("not one of the server's audiences"), "{err}");
    assert!(fails(&env.admin(&["client", "update", "nope", "--require-par", "true"])).contains("no client"));
    // Removed: gone from the list; an unknown one is an error.
    ok(&env.admin(&["client", "remove", "svc"]));
    let list = ok(&env.admin(&["client", "list"]));
    assert!(list.contains("web") && !list.contains("svc"), "{list}");
    assert!(fails(&env.admin(&["client", "remove", "svc"])).contains("no client"));
}

#[test]
fn keys_rotate_retires_the_active_keys() {
    let env = Env::new("keys");
    // Before any server started there is nothing to retire.
    let out = ok(&env.admin(&["keys", "rotate"]));
    assert!(out.starts_with("retired 0 signing keys; active now: "), "{out}");
    assert!(out.contains("(ES256)") && out.contains("(EdDSA)"), "{out}");
    assert!(out.contains("published at once and sign after 420 s"), "{out}");
    let out = ok(&env.admin(&["keys", "rotate"]));
    assert!(out.starts_with("retired 2 signing keys; "), "{out}");
}

/// Starts `stepup serve` and returns it with the address it printed.
fn start_server(env: &Env) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["serve", "--config"])
        .arg(&env.config)
        .current_dir(&env.dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if !line.is_empty() => line,
        other => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("server did not start ({other:?}): {}", text(&out.stderr));
        }
    };
    let addr = line
        .strip_prefix("stepup-server listening on http://")
        .and_then(|rest| rest.strip_suffix(" (issuer http://127.0.0.1:8080)\n"))
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    (child, addr.parse().unwrap())
}

/// A plain HTTP/1.1 GET, retried until the server answers.
fn get(addr: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                return response;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("server never answered: {e}"),
        }
    }
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_answers_metadata_and_stops_on_interrupt() {
    let env = Env::new("serve");
    let (mut child, addr) = start_server(&env);
    let response = get(addr, "/.well-known/oauth-authorization-server");
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    let metadata: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(metadata["issuer"], "http://127.0.0.1:8080");
    assert_eq!(metadata["jwks_uri"], "http://127.0.0.1:8080/jwks");
    let jwks = get(addr, "/jwks");
    assert!(jwks.starts_with("HTTP/1.1 200"), "{jwks}");

    if stop(&mut child) {
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        assert!(stderr.contains("shutting down"), "{stderr}");
    }

    // The server created one key per algorithm on its first start.
    let out = ok(&env.admin(&["keys", "rotate"]));
    assert!(out.starts_with("retired 2 signing keys; "), "{out}");

    // Restarted, it publishes the new keys beside the retired ones.
    let (mut child, addr) = start_server(&env);
    let jwks = get(addr, "/jwks");
    let body: serde_json::Value = serde_json::from_str(jwks.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["keys"].as_array().unwrap().len(), 4, "{body}");
    stop(&mut child);
}

#[test]
fn serve_closes_a_connection_that_sends_half_a_request() {
    let env = Env::with_config(
        "slow",
        &format!("{CONFIG}\n[connections]\nheader_read_seconds = 1\n"),
    );
    let (mut child, addr) = start_server(&env);
    // Served first: the server is up.
    assert!(get(addr, "/jwks").starts_with("HTTP/1.1 200"));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .write_all(b"GET /jwks HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    // Closed (0 bytes, or a reset), not left waiting until the read
    // timeout.
    let closed = match stream.read(&mut buffer) {
        Ok(n) => n == 0 || !buffer[..n].starts_with(b"HTTP/1.1 200"),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "a half-sent request kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    stop(&mut child);
}

/// Stops the server as Ctrl-C would, and checks it exits cleanly; false
/// when it had to be killed instead.
#[cfg(unix)]
fn stop(child: &mut Child) -> bool {
    match Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
    {
        Ok(sent) => {
            assert!(sent.success());
            let status = wait_for_exit(child);
            assert!(status.success(), "{status:?}");
            true
        }
        // No kill(1) here: stop it the hard way.
        Err(_) => {
            child.kill().unwrap();
            let _ = wait_for_exit(child);
            false
        }
    }
}

#[cfg(not(unix))]
fn stop(child: &mut Child) -> bool {
    child.kill().unwrap();
    let _ = wait_for_exit(child);
    false
}

#[test]
fn serve_reports_config_errors_with_file_and_line() {
    let env = Env::with_config(
        "badconfig",
        &CONFIG.replace("audiences =", "audience_list = [\"x\"]\naudiences ="),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["serve", "--config"])
        .arg(&env.config)
        .current_dir(&env.dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = fails(&out);
    let config = env.config.display().to_string();
    assert!(err.starts_with(&format!("error: {config}: ")), "{err}");
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("unknown field `audience_list`"), "{err}");
    assert!(text(&out.stdout).is_empty());
    assert!(!env.dir.join("data").exists(), "nothing was created");

    let err = fails(&env.admin(&["user", "list"]));
    assert!(err.contains("unknown field `audience_list`"), "{err}");

    let missing = env.dir.join("missing.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["admin", "--config"])
        .arg(&missing)
        .args(["user", "list"])
        .output()
        .unwrap();
    assert_eq!(
        fails(&out),
        format!(
            "error: cannot read {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}

#[test]
fn the_example_config_works() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/stepup.example.toml");
    let env = Env::new("example");
    let out = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .args(["admin", "--config"])
        .arg(&example)
        .args(["user", "list"])
        .current_dir(&env.dir)
        .output()
        .unwrap();
    assert_eq!(ok(&out), "no users\n");
    assert!(env.dir.join("stepup-data/stepup.db").exists());
}

#[test]
fn passkeys_are_listed_and_removed() {
    let env = Env::new("passkeys");
    ok(&env.admin_with_stdin(
        &["user", "add", "alice", "--password-stdin"],
        "correct horse battery\n",
    ));
    assert_eq!(
        ok(&env.admin(&["user", "passkeys", "alice"])),
        "alice has no passkey\n"
    );
    // Passkeys are registered in the browser; here they are put in the
    // database directly (the commands do not read the credential).
    let url = format!("sqlite://{}", env.dir.join("data/stepup.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = stepup_server::Store::connect(&url).await.unwrap();
        let user = store.user_by_username("alice").await.unwrap().unwrap();
        for (id, name) in [("cred-one", "Laptop"), ("cred-two", "Phone")] {
            store
                .insert_passkey(&stepup_server::store::StoredPasskey {
                    credential_id: id.into(),
                    user_id: user.id.clone(),
                    name: name.into(),
                    credential: "{}".into(),
                    counter: 0,
                    created_at: 1_800_000_000,
                    last_used_at: None,
                })
                .await
                .unwrap();
        }
    });
    assert_eq!(row(&ok(&env.admin(&["user", "list"])), "alice")[3], "2");
    let listed = ok(&env.admin(&["user", "passkeys", "alice"]));
    assert_eq!(
        row(&listed, "cred-one"),
        ["cred-one", "Laptop", "1800000000", "never"]
    );
    assert_eq!(row(&listed, "cred-two")[1], "Phone");

    let out = ok(&env.admin(&["user", "passkey-remove", "alice", "cred-one"]));
    assert!(out.starts_with("removed 1 passkey(s) of alice"), "{out}");
    assert!(!ok(&env.admin(&["user", "passkeys", "alice"])).contains("cred-one"));
    let err = fails(&env.admin(&["user", "passkey-remove", "alice", "cred-one"]));
    assert_eq!(err, "error: alice has no passkey with credential id cred-one\n");
    let err = fails(&env.admin(&["user", "passkey-remove", "alice"]));
    assert!(
        err.contains("required arguments were not provided"),
        "neither an id nor --all: {err}"
    );
    let err = fails(&env.admin(&["user", "passkey-remove", "alice", "cred-two", "--all"]));
    assert!(err.contains("cannot be used with"), "{err}");
    let err = fails(&env.admin(&["user", "passkeys", "nobody"]));
    assert_eq!(err, "error: no user named \"nobody\"\n");

    let out = ok(&env.admin(&["user", "passkey-remove", "alice", "--all"]));
    assert!(out.starts_with("removed 1 passkey(s) of alice"), "{out}");
    let err = fails(&env.admin(&["user", "passkey-remove", "alice", "--all"]));
    assert_eq!(err, "error: alice has no passkey\n");
}
