//! A user agent that signs in by itself on stepup-server's pages, with a
//! password and TOTP codes computed from an enrolled secret, as a person
//! with an authenticator app would; it waits for a fresh code when the
//! current one was already used (the server takes each code once). For
//! simulations, tests and load: never for real users' credentials.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stepup_core::totp::TotpSecret;
use stepup_core::{Clock, SystemClock};
use url::Url;

use crate::agent::{AuthorizationCallback, AuthorizationRequest, BoxFuture, UserAgent, UserAgentError};

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
    /// Transactions approved on the approval page (not a factor, but a
    /// page the user had to read and confirm).
    pub approvals: usize,
}

/// Answers WebAuthn ceremonies for a [`FormUser`] with passkeys: a
/// software authenticator in simulations and tests.
pub trait PasskeySigner: Send + Sync {
    /// The credential (JSON) answering `options` (the JSON a passkey page
    /// hands to its script) for the page's `origin`.
    fn answer(&self, origin: &Url, options: &str) -> Result<String, String>;

    /// Whether it holds a credential yet (before registration, the user
    /// does not take "use a passkey instead").
    fn has_credential(&self) -> bool {
        true
    }
}

/// Where [`FormUser::drive`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reached {
    /// The redirect back to the client.
    Client(Url),
    /// A page of the server that is not a sign-in form (an account page),
    /// and its body.
    Page(String),
    /// `answer` said stop, or the page budget ran out.
    Stopped,
}

/// A user with a password and a TOTP secret who signs in by itself.
pub struct FormUser {
    username: String,
    redirect_uri: String,
    password: String,
    totp: TotpSecret,
    http: reqwest::Client,
    /// The period of the last code typed, shared by the copies of one
    /// person ([`FormUser::share`]): one authenticator, each code once.
    last_step: Arc<Mutex<Option<u64>>>,
    last_code: Mutex<Option<String>>,
    passkey: Option<Arc<dyn PasskeySigner>>,
    forwarded_for: Option<String>,
    /// The sign-ins made since last taken.
    sign_ins: Mutex<Vec<SignIn>>,
}

/// A browser for sign-in pages: cookies kept, redirects not followed (the
/// last one goes to the client, which is not there).
fn browser(forwarded_for: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = forwarded_for.and_then(|ip| reqwest::header::HeaderValue::from_str(ip).ok()) {
        headers.insert("x-forwarded-for", value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// An attribute's value on a page, HTML entities decoded.
pub fn attribute(body: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(
        body[start..start + end]
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// A hidden field's value on a page.
pub fn hidden(body: &str, name: &str) -> Option<String> {
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
            http: browser(None),
            forwarded_for: None,
            last_step: Arc::default(),
            last_code: Mutex::new(None),
            passkey: None,
            sign_ins: Mutex::new(Vec::new()),
        }
    }

    /// The same user with a passkey: passkey pages are answered by `signer`.
    pub fn with_passkey(mut self, signer: Arc<dyn PasskeySigner>) -> Self {
        self.passkey = Some(signer);
        self
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

    /// Signs out: a new browser, without the session's cookies.
    pub fn forget_session(&mut self) {
        self.http = browser(self.forwarded_for.as_deref());
    }

    /// The same user reaching the server through a proxy that says it
    /// comes from `ip` (`X-Forwarded-For`), for simulations of users in
    /// different places.
    pub fn from_address(mut self, ip: &str) -> Self {
        self.forwarded_for = Some(ip.to_owned());
        self.http = browser(Some(ip));
        self
    }

    /// The same person on a browser the server has never seen (no
    /// session, no remembered device), coming from `ip`.
    pub fn on_another_browser(&self, ip: &str) -> Self {
        let mut other = Self::new(&self.username, &self.password, self.totp.clone()).from_address(ip);
        // The same authenticator: a code typed in one is used in both.
        other.last_step = Arc::clone(&self.last_step);
        other
    }

    /// The same person at the same browser (its session shared), for a
    /// second client driven by the same user.
    pub fn share(&self) -> Self {
        Self {
            username: self.username.clone(),
            redirect_uri: self.redirect_uri.clone(),
            password: self.password.clone(),
            totp: self.totp.clone(),
            http: self.http.clone(),
            last_step: Arc::clone(&self.last_step),
            last_code: Mutex::new(None),
            passkey: self.passkey.clone(),
            forwarded_for: self.forwarded_for.clone(),
            sign_ins: Mutex::new(Vec::new()),
        }
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
                8,
                |field| {
                    answers.push(field.to_owned());
                    Some(None)
                },
                &mut waited,
            )
            .await;
        record.approvals = answers.iter().filter(|a| *a == "approve").count();
        answers.retain(|a| a != "approve");
        record.asked = answers;
        record.waited_for_code = waited;
        match outcome? {
            Reached::Client(location) => {
                if let Ok(mut s) = self.sign_ins.lock() {
                    s.push(record);
                }
                Ok(location)
            }
            Reached::Page(body) => Err(format!("unexpected page: {}", &body[..body.len().min(300)])),
            Reached::Stopped => Err("the sign-in did not end".into()),
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
        Ok(!matches!(reached, Reached::Client(_)) && typed)
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
        Ok(!matches!(reached, Reached::Client(_)) && tries > wrong)
    }

    /// Opens `url` (an account page), signing in on the way.
    pub async fn open(&self, url: Url) -> Result<String, String> {
        let mut waited = Duration::ZERO;
        match self.drive(url, 6, |_| Some(None), &mut waited).await? {
            Reached::Page(body) => Ok(body),
            other => Err(format!("expected a page, got {other:?}")),
        }
    }

    /// Walks the sign-in pages for `pages` forms at most: `answer(field)`
    /// (`password`, `code`, `passkey`, or `approve` on a transaction's
    /// approval page) gives `Some(Some(value))` to type a value (for
    /// `approve`: the decision, `approve` or `decline`), `Some(None)` for
    /// the user's own (password, a fresh code, the passkey's answer; the
    /// approval), `None` to stop.
    pub async fn drive(
        &self,
        url: Url,
        pages: usize,
        mut answer: impl FnMut(&str) -> Option<Option<String>>,
        waited: &mut Duration,
    ) -> Result<Reached, String> {
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
                return Ok(Reached::Client(location));
            }
            let status = response.status();
            let body = response.text().await.map_err(|e| e.to_string())?;
            let (Some(request), Some(csrf)) = (hidden(&body, "request"), hidden(&body, "csrf")) else {
                if status.is_success() {
                    return Ok(Reached::Page(body));
                }
                return Err(format!(
                    "unexpected page ({status}): {}",
                    &body[..body.len().min(300)]
                ));
            };
            if body.contains("action=\"/authorize/approve\"") {
                let decision = match answer("approve") {
                    None => return Ok(Reached::Stopped),
                    Some(Some(value)) => value,
                    Some(None) => "approve".to_owned(),
                };
                response = self
                    .http
                    .post(format!("{base}/authorize/approve"))
                    .form(&[
                        ("request", request.as_str()),
                        ("csrf", csrf.as_str()),
                        ("decision", decision.as_str()),
                    ])
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
            if body.contains("action=\"/login/passkey\"") {
                let credential = match answer("passkey") {
                    None => return Ok(Reached::Stopped),
                    Some(Some(value)) => value,
                    Some(None) => {
                        let signer = self
                            .passkey
                            .as_ref()
                            .ok_or("a page asks for a passkey this user does not have")?;
                        let options =
                            attribute(&body, "data-options").ok_or("no passkey options on the page")?;
                        let origin = Url::parse(&base).map_err(|e| e.to_string())?;
                        signer.answer(&origin, &options)?
                    }
                };
                let ceremony = hidden(&body, "ceremony").ok_or("no ceremony on the passkey page")?;
                response = self
                    .http
                    .post(format!("{base}/login/passkey"))
                    .form(&[
                        ("request", request.as_str()),
                        ("csrf", csrf.as_str()),
                        ("ceremony", ceremony.as_str()),
                        ("credential", credential.as_str()),
                    ])
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                continue;
            }
            // A user with a passkey takes "use a passkey instead" when
            // offered for a second factor, as people with one do (not for
            // signing in without a name: that needs a discoverable
            // credential, which a software authenticator may not keep).
            if self.passkey.as_ref().is_some_and(|p| p.has_credential())
                && !body.contains("name=\"password\"")
                && let Some(link) = attribute(&body, "id=\"use-passkey\" href")
            {
                let url = Url::parse(&base)
                    .and_then(|b| b.join(&link))
                    .map_err(|e| e.to_string())?;
                response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
                continue;
            }
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
                None => return Ok(Reached::Stopped),
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
        Ok(Reached::Stopped)
    }
}

impl UserAgent for FormUser {
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizationRequest<'_>,
    ) -> BoxFuture<'a, Result<AuthorizationCallback, UserAgentError>> {
        Box::pin(async move {
            let url = self
                .sign_in(request.url(&self.redirect_uri).await?)
                .await
                .map_err(UserAgentError::Other)?;
            Ok(AuthorizationCallback {
                redirect_uri: self.redirect_uri.clone(),
                url,
            })
        })
    }
}
