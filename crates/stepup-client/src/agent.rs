//! User agents: what takes the user to the authorization server and brings
//! the authorization response back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

/// A boxed future, as the [`UserAgent`] trait returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a user agent could not bring back an authorization response.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum UserAgentError {
    /// Listening for the redirect failed.
    #[error("cannot listen for the redirect: {0}")]
    Listen(#[source] std::io::Error),
    /// No response came back in time.
    #[error("no authorization response within {0:?}")]
    TimedOut(Duration),
    /// The browser could not be opened, nor the URL shown.
    #[error("cannot open the browser: {0}")]
    Browser(String),
    /// Anything else the agent reports.
    #[error("{0}")]
    Other(String),
}

/// The authorization response: the URL the browser was redirected to.
#[derive(Debug, Clone)]
pub struct AuthorizationCallback {
    /// The redirect URI the request named (the token request repeats it).
    pub redirect_uri: String,
    /// The full redirect, with `code`, `state` and `iss` (or `error`).
    pub url: Url,
}

/// Makes the authorization URL for a redirect URI: the request may be
/// pushed to the server first (PAR, RFC 9126), so this is asynchronous.
pub type AuthorizationUrlFn<'a> =
    dyn Fn(String) -> BoxFuture<'a, Result<Url, UserAgentError>> + Send + Sync + 'a;

/// One authorization request, as a user agent runs it.
pub struct AuthorizationRequest<'a> {
    url_for: &'a AuthorizationUrlFn<'a>,
    state: &'a str,
}

impl std::fmt::Debug for AuthorizationRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizationRequest").finish_non_exhaustive()
    }
}

impl<'a> AuthorizationRequest<'a> {
    /// A request whose URL `url_for` makes, answered by a redirect that
    /// carries `state`.
    pub fn new(url_for: &'a AuthorizationUrlFn<'a>, state: &'a str) -> Self {
        Self { url_for, state }
    }

    /// The URL to take the user to, for `redirect_uri`.
    pub async fn url(&self, redirect_uri: &str) -> Result<Url, UserAgentError> {
        (self.url_for)(redirect_uri.to_owned()).await
    }

    /// Whether `callback` answers this request: each parameter once, and
    /// its `state`. Anything else (another tab, another local program) is
    /// ignored, not taken for the answer. A response with the `state`
    /// belongs to this request (it cannot be guessed): the client then
    /// checks the rest (its `iss`, RFC 9207) and says what is wrong.
    pub fn answers(&self, callback: &Url) -> bool {
        let mut seen: Vec<std::borrow::Cow<'_, str>> = Vec::new();
        for (k, _) in callback.query_pairs() {
            if seen.contains(&k) {
                return false;
            }
            seen.push(k);
        }
        callback
            .query_pairs()
            .find(|(k, _)| k == "state")
            .is_some_and(|(_, v)| v == self.state)
    }
}

/// Runs an authorization request in front of the user.
///
/// The agent picks its redirect URI (a loopback listener picks its port),
/// gets the authorization URL for it from the request, takes the user
/// there, and returns where the server redirected back to.
pub trait UserAgent: Send + Sync {
    /// Runs one authorization request.
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizationRequest<'_>,
    ) -> BoxFuture<'a, Result<AuthorizationCallback, UserAgentError>>;
}

/// What a [`FnUserAgent`] runs: given the authorization URL, the URL the
/// browser ends at.
pub type AuthorizeFn = Arc<dyn Fn(Url) -> BoxFuture<'static, Result<Url, UserAgentError>> + Send + Sync>;

/// A programmatic user agent, for tests and embedded browsers: a fixed
/// redirect URI and a function that goes from the authorization URL to the
/// redirect.
#[derive(Clone)]
pub struct FnUserAgent {
    redirect_uri: String,
    run: AuthorizeFn,
}

impl std::fmt::Debug for FnUserAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnUserAgent")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl FnUserAgent {
    /// An agent answering with `run`, for the client's `redirect_uri`.
    pub fn new(redirect_uri: impl Into<String>, run: AuthorizeFn) -> Self {
        Self {
            redirect_uri: redirect_uri.into(),
            run,
        }
    }
}

impl UserAgent for FnUserAgent {
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizationRequest<'_>,
    ) -> BoxFuture<'a, Result<AuthorizationCallback, UserAgentError>> {
        let run = Arc::clone(&self.run);
        Box::pin(async move {
            let url = request.url(&self.redirect_uri).await?;
            Ok(AuthorizationCallback {
                redirect_uri: self.redirect_uri.clone(),
                url: run(url).await?,
            })
        })
    }
}

/// How the loopback agent shows the authorization URL to the user.
pub type Opener = Arc<dyn Fn(&Url) -> Result<Opened, String> + Send + Sync>;

/// What an [`Opener`] left behind for the browser, removed when the
/// authorization request is over (answered, refused or timed out).
#[derive(Debug, Default)]
pub struct Opened {
    /// A private directory holding the page the browser was given.
    page_dir: Option<std::path::PathBuf>,
}

impl Opened {
    /// Nothing left behind.
    pub fn nothing() -> Self {
        Self::default()
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(dir) = self.page_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A native app's user agent (RFC 8252): the system browser, and a
/// listener on a loopback port the system picks (`http://127.0.0.1:PORT/callback`,
/// §7.3) for the redirect. The client must be registered as public with
/// `http://127.0.0.1/callback`; the server accepts any port for it.
#[derive(Clone)]
pub struct LoopbackBrowser {
    open: Opener,
    timeout: Duration,
}

impl std::fmt::Debug for LoopbackBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackBrowser")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LoopbackBrowser {
    /// Opens the system browser (`xdg-open`, `open` on macOS); when none
    /// starts, prints the URL on standard error for the user to open.
    pub fn system() -> Self {
        Self::with_opener(Self::system_opener())
    }

    /// The opener of [`LoopbackBrowser::system`]. The browser is given a
    /// page in a private directory that leads on to the URL, not the URL
    /// itself: a command line is readable by every local user
    /// (`/proc/*/cmdline`), and the URL (its `request_uri`, or `state`
    /// without PAR) would let one of them sign the user's CLI in as
    /// someone else.
    pub fn system_opener() -> Opener {
        Arc::new(|url: &Url| {
            let opener = if cfg!(target_os = "macos") {
                "open"
            } else {
                "xdg-open"
            };
            let page = match private_page(url) {
                Ok(page) => page,
                Err(e) => {
                    eprintln!("Open this address in a browser to sign in ({e}):\n\n  {url}\n");
                    return Ok(Opened::nothing());
                }
            };
            // Removed when the request is over: the browser has read the
            // page by the time it hands over the response.
            let opened = Opened {
                page_dir: page.parent().map(std::path::Path::to_path_buf),
            };
            let _ = std::process::Command::new(opener)
                .arg(&page)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            // Said on the terminal (the user's alone) as well: a browser
            // may start and still not read the page (a snap or flatpak
            // browser has a /tmp of its own).
            eprintln!("Sign in in the browser; if none opened the page, open this address:\n\n  {url}\n");
            Ok(opened)
        })
    }

    /// Shows the URL with `open` (tests drive a browser with it).
    pub fn with_opener(open: Opener) -> Self {
        Self {
            open,
            timeout: Duration::from_secs(300),
        }
    }

    /// How long to wait for the user (5 minutes by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Writes a page that leads the browser on to `url`, in a new directory
/// only this user can enter (created exclusively, 0700; the page 0600).
fn private_page(url: &Url) -> Result<std::path::PathBuf, String> {
    use ring::rand::SecureRandom;
    use std::io::Write;
    let mut random = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| "no randomness".to_owned())?;
    let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("stepup-sign-in-{name}"));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(&dir).map_err(|e| e.to_string())?;
    let page = dir.join("sign-in.html");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let escaped = url
        .as_str()
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={escaped}\">\
<title>Sign in</title></head><body><p><a href=\"{escaped}\">Continue to sign in</a></p></body></html>"
    );
    if let Err(e) = options.open(&page).and_then(|mut f| f.write_all(html.as_bytes())) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e.to_string());
    }
    Ok(page)
}

/// The page the browser shows once it has handed over the response.
const DONE_PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed in</title></head>\
<body style=\"font-family:system-ui,sans-serif;margin:3rem\"><h1>Done</h1><p>You can close this window and go back to the application.</p></body></html>";

impl UserAgent for LoopbackBrowser {
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizationRequest<'_>,
    ) -> BoxFuture<'a, Result<AuthorizationCallback, UserAgentError>> {
        Box::pin(async move {
            // An IP literal, not "localhost" (RFC 8252 §8.3).
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(UserAgentError::Listen)?;
            let port = listener.local_addr().map_err(UserAgentError::Listen)?.port();
            let redirect_uri = format!("http://127.0.0.1:{port}/callback");
            let url = request.url(&redirect_uri).await?;
            let opened = (self.open)(&url).map_err(UserAgentError::Browser)?;
            let wait = accept_callback(&listener, port, request);
            let answered = tokio::time::timeout(self.timeout, wait).await;
            drop(opened);
            let url = answered.map_err(|_| UserAgentError::TimedOut(self.timeout))??;
            Ok(AuthorizationCallback { redirect_uri, url })
        })
    }
}

/// How long a connection to the loopback port may take to send its
/// request (the browser sends it at once).
const READ_SECONDS: u64 = 2;

/// Connections to the loopback port read at once; beyond that, the one
/// silent for longest is closed for a new one.
const READING_AT_ONCE: usize = 64;

/// Serves the loopback port until the redirect that answers `request`
/// arrives. Connections are read side by side, each for at most
/// [`READ_SECONDS`], so one that sends nothing holds nothing up; anything
/// else (a favicon, a probe, a redirect with another `state`) gets an
/// error page and the wait goes on.
async fn accept_callback(
    listener: &TcpListener,
    port: u16,
    request: &AuthorizationRequest<'_>,
) -> Result<Url, UserAgentError> {
    let (read_tx, mut read) = tokio::sync::mpsc::channel(READING_AT_ONCE);
    // The connections being read, oldest first.
    let mut reading: std::collections::VecDeque<tokio::task::AbortHandle> = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else {
                    // Out of descriptors, or a connection gone before it
                    // was taken: the wait goes on.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Every connection is taken; when all slots are busy, the
                // oldest still being read goes (a browser sends its request
                // at once: the one that has sent nothing for longest is not
                // the browser).
                reading.retain(|task| !task.is_finished());
                if reading.len() >= READING_AT_ONCE
                    && let Some(oldest) = reading.pop_front()
                {
                    oldest.abort();
                }
                let read_tx = read_tx.clone();
                let task = tokio::spawn(async move {
                    let head = tokio::time::timeout(Duration::from_secs(READ_SECONDS), read_head(&mut stream))
                        .await
                        .ok()
                        .flatten();
                    let _ = read_tx.send((stream, head)).await;
                });
                reading.push_back(task.abort_handle());
            }
            Some((mut stream, head)) = read.recv() => {
                let callback = head.as_deref().and_then(|h| callback_of(h, port));
                let (status, body) = match &callback {
                    Some(url) if request.answers(url) => ("200 OK", DONE_PAGE),
                    Some(_) => ("400 Bad Request", STRAY_PAGE),
                    None => ("404 Not Found", "not found"),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(Duration::from_secs(READ_SECONDS), async {
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                })
                .await;
                if let Some(url) = callback.filter(|u| request.answers(u)) {
                    return Ok(url);
                }
            }
        }
    }
}

/// The page for a redirect that does not answer the sign-in in progress.
const STRAY_PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not this sign-in</title></head>\
<body style=\"font-family:system-ui,sans-serif;margin:3rem\"><h1>Not this sign-in</h1><p>This answer is for another sign-in; the application is still waiting for its own.</p></body></html>";

/// The request line and headers of an HTTP request (the callback has no
/// body), or `None` if the connection closes or sends too much first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buffer = vec![0u8; 8192];
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buffer[filled..]).await.ok()?;
        if n == 0 {
            return None;
        }
        filled += n;
        if let Some(end) = buffer[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buffer[..end]).into_owned());
        }
        if filled == buffer.len() {
            return None;
        }
    }
}

/// The redirect a request head carries: a `GET /callback…`.
fn callback_of(head: &str, port: u16) -> Option<Url> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let target = match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => target,
        _ => return None,
    };
    if target != "/callback" && !target.starts_with("/callback?") {
        return None;
    }
    Url::parse(&format!("http://127.0.0.1:{port}{target}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The authorization URL of the tests: the redirect URI and `state`.
    fn authorization_url(redirect: &str, state: &str) -> Url {
        let mut url = Url::parse("https://as.example/authorize").unwrap();
        url.query_pairs_mut()
            .append_pair("redirect_uri", redirect)
            .append_pair("state", state);
        url
    }

    #[tokio::test]
    async fn the_loopback_agent_waits_for_its_own_answer() {
        let opened = Arc::new(std::sync::Mutex::new(None::<Url>));
        let seen = opened.clone();
        let agent = LoopbackBrowser::with_opener(Arc::new(move |url: &Url| {
            *seen.lock().unwrap() = Some(url.clone());
            let redirect = url
                .query_pairs()
                .find(|(k, _)| k == "redirect_uri")
                .map(|(_, v)| v.into_owned())
                .unwrap();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let base = redirect.trim_end_matches("/callback").to_owned();
                // Connections that send nothing, more than there are read
                // slots: they hold nothing up, and none crowds the
                // browser's out.
                let mut silent = Vec::new();
                for _ in 0..READING_AT_ONCE * 4 {
                    silent.push(
                        tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
                            .await
                            .unwrap(),
                    );
                }
                let stray = http.get(format!("{base}/favicon.ico")).send().await.unwrap();
                assert_eq!(stray.status(), 404);
                // Another program's redirect, another state: ignored.
                let other = http
                    .get(format!("{redirect}?code=evil&state=guess"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(other.status(), 400);
                let twice = http
                    .get(format!("{redirect}?code=evil&state=s1&state=s1"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(twice.status(), 400);
                let done = http
                    .get(format!(
                        "{redirect}?code=c1&state=s1&iss=https%3A%2F%2Fas.example"
                    ))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(done.status(), 200);
                assert!(done.text().await.unwrap().contains("close this window"));
                drop(silent);
            });
            Ok(Opened::nothing())
        }))
        .timeout(Duration::from_secs(10));
        let url_for = |redirect: String| -> BoxFuture<'_, Result<Url, UserAgentError>> {
            Box::pin(async move { Ok(authorization_url(&redirect, "s1")) })
        };
        let request = AuthorizationRequest::new(&url_for, "s1");
        let callback = agent.authorize(&request).await.unwrap();
        assert!(callback.redirect_uri.starts_with("http://127.0.0.1:"));
        assert!(callback.redirect_uri.ends_with("/callback"));
        assert_eq!(
            callback.url.query(),
            Some("code=c1&state=s1&iss=https%3A%2F%2Fas.example")
        );
        assert!(opened.lock().unwrap().is_some());
    }

    #[test]
    fn the_browser_is_given_a_private_page_not_the_url() {
        let url =
            Url::parse("https://as.example/authorize?client_id=c&request_uri=urn:x\"><script>").unwrap();
        let page = private_page(&url).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(
            html.contains(
                "url=https://as.example/authorize?client_id=c&amp;request_uri=urn:x%22%3E%3Cscript%3E"
            ),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&page), 0o600);
            assert_eq!(mode(page.parent().unwrap()), 0o700);
        }
        std::fs::remove_dir_all(page.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn the_sign_in_page_is_removed_when_the_request_is_over() {
        let written = Arc::new(std::sync::Mutex::new(None::<std::path::PathBuf>));
        let seen = Arc::clone(&written);
        let agent = LoopbackBrowser::with_opener(Arc::new(move |url: &Url| {
            let page = private_page(url)?;
            *seen.lock().unwrap() = Some(page.clone());
            Ok(Opened {
                page_dir: page.parent().map(std::path::Path::to_path_buf),
            })
        }))
        .timeout(Duration::from_millis(50));
        let url_for = |redirect: String| -> BoxFuture<'_, Result<Url, UserAgentError>> {
            Box::pin(async move { Ok(authorization_url(&redirect, "s")) })
        };
        let request = AuthorizationRequest::new(&url_for, "s");
        assert!(agent.authorize(&request).await.is_err(), "no one answered");
        let page = written.lock().unwrap().clone().unwrap();
        assert!(!page.exists(), "{} left behind", page.display());
        assert!(!page.parent().unwrap().exists());
    }

    #[tokio::test]
    async fn the_loopback_agent_gives_up_after_its_timeout() {
        let agent = LoopbackBrowser::with_opener(Arc::new(|_: &Url| Ok(Opened::nothing())))
            .timeout(Duration::from_millis(50));
        let url_for = |redirect: String| -> BoxFuture<'_, Result<Url, UserAgentError>> {
            Box::pin(async move { Ok(authorization_url(&redirect, "s")) })
        };
        let request = AuthorizationRequest::new(&url_for, "s");
        let err = agent.authorize(&request).await.unwrap_err();
        assert!(matches!(err, UserAgentError::TimedOut(_)), "{err}");
    }
}
