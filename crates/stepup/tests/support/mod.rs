//! What the `stepup` binary's test files share: a server configuration,
//! `stepup admin` runs, free ports, and child processes killed on drop.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A server configuration: password (`pwd`) and password + TOTP (`mfa`)
/// levels; `listen` and more settings are added by `extra` lines.
pub fn server_config(issuer: &str, database_url: &str, audience: &str, extra: &str) -> String {
    format!(
        r#"
issuer = "{issuer}"
database_url = "{database_url}"
audiences = ["{audience}"]
{extra}

[[level]]
name = "pwd"
acr = "urn:stepup:acr:pwd"
factors = [["pwd"]]

[[level]]
name = "mfa"
acr = "urn:stepup:acr:mfa"
factors = [["pwd", "otp"]]

# The crash tests and the memory bench load the server from loopback as
# fast as they can: rate limits on, far above that load.
[rate_limit]
authorize = {{ burst = 100000, per_minute = 1000000 }}
par = {{ burst = 100000, per_minute = 1000000 }}
token = {{ burst = 100000, per_minute = 1000000 }}
login = {{ burst = 100000, per_minute = 1000000 }}
account = {{ burst = 100000, per_minute = 1000000 }}
user = {{ burst = 100000, per_minute = 1000000 }}
"#
    )
}

/// `stepup admin --config CONFIG ARGS` with `stdin`; its standard output.
/// Panics with its standard error if it fails.
pub fn admin(config: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepup"))
        .arg("admin")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Adds a user with `password` and enrols TOTP; the secret (base32, as
/// the `otpauth://` URI carries it).
pub fn enrol(config: &Path, name: &str, password: &str) -> String {
    admin(
        config,
        &["user", "add", name, "--password-stdin"],
        &format!("{password}\n"),
    );
    let out = admin(config, &["user", "totp-enroll", name], "");
    let uri = out.lines().find(|l| l.starts_with("otpauth://")).unwrap();
    url::Url::parse(uri)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
        .unwrap()
}

/// A loopback port nothing listens on (bound, then closed).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped (a failed assertion included).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
