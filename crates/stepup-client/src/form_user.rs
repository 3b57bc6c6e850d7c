//! A user agent that signs in by itself on stepup-server's pages, with a
//! password and TOTP codes computed from an enrolled secret, as a person
//! with an authenticator app would; it waits for a fresh code when the
//! current one was already used (the server takes each code once). For
//! simulations, tests and load: never for real users' credentials.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use stepup_core::totp::TotpSecret;
use stepup_core::{Clock, SystemClock};
use url::Url;

use crate::agent::{AuthorizationCallback, BoxFuture, UserAgent, UserAgentError};

/// The redirect URI a [`FormUser`] answers for unless told otherwise: a
/// loopback one (RFC 8252 §7.3), which a native client registered as
/// `http://127.0.0.1/callback` may use on any port.
pub const LOOPBACK_REDIRECT: &str = "http://127.0.0.1:1/callback";

/// What one sign-in cost.
#[derive(Debug, Clone, Default)]
pub struct SignIn {
    /// The factors asked, in order (`password`, `code`).
    pub asked: Vec<String>,
    /// Time spent waiting for a TOTP code not yet used.
    pub waited_for_code: Duration,
}

/// A user with a password and a TOTP secret who signs in by itself.
pub struct FormUser {
    username: String,
    redirect_uri: String,
    password: String,
    totp: TotpSecret,
    http: reqwest::Client,
    last_step: Mutex<Option<u64>>,
    last_code: Mutex<Option<String>>,
    /// The sign-ins made since last taken.
    sign_ins: Mutex<Vec<SignIn>>,
}

fn hidden(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

impl FormUser {
    /// A user, answering for [`LOOPBACK_REDIRECT`].
    pub fn new(username: &str, password: &str, totp: TotpSecret) -> Self {
        Self {
            username: username.to_owned(),
            redirect_uri: LOOPBACK_REDIRECT.to_owned(),
            password: password.to_owned(),
            totp,
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            last_step: Mutex::new(None),
            last_code: Mutex::new(None),
            sign_ins: Mutex::new(Vec::new()),
        }
    }

    /// The same user answering for another redirect URI.
    pub fn with_redirect_uri(mut self, redirect_uri: impl Into<String>) -> Self {
        self.redirect_uri = redirect_uri.into();
        self
    }

    /// The user's name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The user's browser (its cookie jar: the session).
    pub fn browser(&self) -> &reqwest::Client {
        &self.http
    }

    /// The sign-ins made since the last call.
    pub fn take_sign_ins(&self) -> Vec<SignIn> {
        self.sign_ins
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    /// A TOTP code not used yet, waiting for the next period if needed.
    async fn fresh_code(&self, waited: &mut Duration) -> String {
        loop {
            let now = SystemClock.now();
            let step = self.totp.step_at(now);
            let used = self.last_step.lock().ok().and_then(|l| *l);
            if used.is_none_or(|u| step > u) {
                if let Ok(mut l) = self.last_step.lock() {
                    *l = Some(step);
                }
                return self.totp.code_at(now);
            }
            let started = Instant::now();
            tokio::time::sleep(Duration::from_millis(250)).await;
            *waited += started.elapsed();
        }
    }

    /// The last TOTP code this user typed.
    pub fn last_code(&self) -> Option<String> {
        self.last_code.lock().ok().and_then(|c| c.clone())
    }

    /// Follows the authorization request through the sign-in pages to the
    /// redirect back to the client.
    pub async fn sign_in(&self, url: Url) -> Result<Url, String> {
        let mut record = SignIn::default();
        let mut waited = Duration::ZERO;
        let mut answers = Vec::new();
        let outcome = self
            .drive(
                url,
                6,
                |field| {
                    answers.push(field.to_owned());
                    Some(None)
                },
                &mut waited,
            )
            .await;
        record.asked = answers;
        record.waited_for_code = waited;
        match outcome? {
            Some(location) => {
                if let Ok(mut s) = self.sign_ins.lock() {
                    s.push(record);
                }
                Ok(location)
            }
            None => Err("the sign-in did not end".into()),
        }
    }

    /// Signs in with the password, then types `code` on the code page:
    /// whether the server refused it (no redirect to the client).
    pub async fn replay_code(&self, url: &Url, code: &str) -> Result<bool, String> {
        let mut waited = Duration::ZERO;
        let mut typed = false;
        let reached = self
            .drive(
                url.clone(),
                4,
                |field| match field {
                    "code" if typed => None,
                    "code" => {
                        typed = true;
                        Some(Some(code.to_owned()))
                    }
                    _ => Some(None),
                },
                &mut waited,
            )
            .await?;
        Ok(reached.is_none() && typed)
    }

    /// Signs in with the password, types `wrong` bad codes, then the right
    /// one: whether that was refused too (the account locked).
    pub async fn brute_force_codes(&self, url: &Url, wrong: usize) -> Result<bool, String> {
        let mut waited = Duration::ZERO;
        let mut tries = 0;
        let reached = self
            .drive(
                url.clone(),
                wrong + 4,
                |field| match field {
                    "code" if tries < wrong => {
                        tries += 1;
                        Some(Some(format!("{:06}", (tries * 7919) % 1_000_000)))
                    }
                    "code" if tries == wrong => {
                        tries += 1;
                        Some(None)
                    }
                    "code" => None,
                    _ => Some(None),
                },
                &mut waited,
            )
            .await?;
        Ok(reached.is_none() && tries > wrong)
    }

    /// Walks the sign-in pages for `pages` forms at most: `answer(field)`
    /// (`password` or `code`) gives `Some(Some(value))` to
    /// type a value, `Some(None)` for the user's own (password or a fresh
    /// code), `None` to stop. The redirect to the client if reached.
    pub async fn drive(
        &self,
        url: Url,
        pages: usize,
        mut answer: impl FnMut(&str) -> Option<Option<String>>,
        waited: &mut Duration,
    ) -> Result<Option<Url>, String> {
        let base = url.origin().ascii_serialization();
        let mut response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        for _ in 0..pages {
            if let Some(location) = response.headers().get("location") {
                let location = location.to_str().map_err(|e| e.to_string())?;
                let location =
                    Url::parse(location).or_else(|_| Url::parse(&base).and_then(|b| b.join(location)));
                let location = location.map_err(|e| e.to_string())?;
                if location.as_str().starts_with(&base) {
                    // Still on the server (e.g. /authorize after a factor).
                    response = self.http.get(location).send().await.map_err(|e| e.to_string())?;
                    continue;
                }
                return Ok(Some(location));
            }
            let status = response.status();
            let body = response.text().await.map_err(|e| e.to_string())?;
            let (Some(request), Some(csrf)) = (hidden(&body, "request"), hidden(&body, "csrf")) else {
                return Err(format!(
                    "unexpected page ({status}): {}",
                    &body[..body.len().min(300)]
                ));
            };
            let (path, field) = if body.contains("name=\"password\"") {
                ("/login/password", "password")
            } else if body.contains("name=\"code\"") {
                ("/login/otp", "code")
            } else {
                return Err(format!(
                    "a page asks for something else: {}",
                    &body[..body.len().min(300)]
                ));
            };
            let value = match answer(field) {
                None => return Ok(None),
                Some(Some(value)) => value,
                Some(None) if field == "password" => self.password.clone(),
                Some(None) => {
                    let code = self.fresh_code(waited).await;
                    if let Ok(mut last) = self.last_code.lock() {
                        *last = Some(code.clone());
                    }
                    code
                }
            };
            response = self
                .http
                .post(format!("{base}{path}"))
                .form(&[
                    ("request", request.as_str()),
                    ("csrf", csrf.as_str()),
                    ("username", self.username.as_str()),
                    (field, value.as_str()),
                ])
                .send()
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(None)
    }
}

impl UserAgent for FormUser {
    fn authorize<'a>(
        &'a self,
        authorization_url: &'a (dyn Fn(&str) -> Url + Send + Sync),
    ) -> BoxFuture<'a, Result<AuthorizationCallback, UserAgentError>> {
        Box::pin(async move {
            let url = self
                .sign_in(authorization_url(&self.redirect_uri))
                .await
                .map_err(UserAgentError::Other)?;
            Ok(AuthorizationCallback {
                redirect_uri: self.redirect_uri.clone(),
                url,
            })
        })
    }
}
