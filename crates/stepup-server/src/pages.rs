//! Server-rendered pages: plain HTML forms, no JavaScript, no external
//! resources. Every interpolated value is escaped.

use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 26rem; margin: 3rem auto; padding: 0 1rem; color: #1d2330; }}
h1 {{ font-size: 1.4rem; }}
label {{ display: block; margin-top: 1rem; }}
input {{ width: 100%; padding: .5rem; font-size: 1rem; box-sizing: border-box; }}
button {{ margin-top: 1.2rem; padding: .6rem 1.2rem; font-size: 1rem; }}
.notice {{ background: #eef3ff; border-left: 4px solid #3b6ff5; padding: .6rem .8rem; }}
.error {{ background: #fff0f0; border-left: 4px solid #d33; padding: .6rem .8rem; }}
.muted {{ color: #5b6475; font-size: .9rem; }}
</style>
</head>
<body>
{body}
</body>
</html>
"#,
        title = escape(title),
    )
}

fn message_block(error: Option<&str>) -> String {
    error.map_or_else(String::new, |e| {
        format!(r#"<p class="error" role="alert">{}</p>"#, escape(e))
    })
}

/// Every page: never cached (they carry CSRF tokens and personal data),
/// never framed (no clickjacking of the sign-in), no script or remote
/// resource of any kind.
fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        http::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    response
}

/// An error page for requests that cannot be sent back to the client.
pub(crate) fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!("<h1>{}</h1>\n<p>{}</p>", escape(title), escape(message));
    page(status, layout(title, &body))
}

/// What the login pages need to carry.
pub(crate) struct FormContext<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) csrf: &'a str,
    pub(crate) client_id: &'a str,
    /// Why the user is asked (a step-up says what is missing).
    pub(crate) reason: Option<&'a str>,
    pub(crate) error: Option<&'a str>,
}

fn hidden(ctx: &FormContext<'_>) -> String {
    format!(
        r#"<input type="hidden" name="request" value="{}">
<input type="hidden" name="csrf" value="{}">"#,
        escape(ctx.request_id),
        escape(ctx.csrf)
    )
}

fn reason_block(ctx: &FormContext<'_>) -> String {
    ctx.reason
        .map_or_else(String::new, |r| format!(r#"<p class="notice">{}</p>"#, escape(r)))
}

/// The password form.
pub(crate) fn password_page(ctx: &FormContext<'_>, login_hint: Option<&str>) -> Response {
    let body = format!(
        r#"<h1>Sign in</h1>
<p class="muted">to continue to {client}</p>
{reason}{error}
<form method="post" action="/login/password">
{hidden}
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required value="{hint}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>"#,
        client = escape(ctx.client_id),
        reason = reason_block(ctx),
        error = message_block(ctx.error),
        hidden = hidden(ctx),
        hint = escape(login_hint.unwrap_or("")),
    );
    let status = if ctx.error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    page(status, layout("Sign in", &body))
}

/// The one-time code form.
pub(crate) fn otp_page(ctx: &FormContext<'_>, username: &str, demo_code: Option<&str>) -> Response {
    let demo = demo_code.map_or_else(String::new, |c| {
        format!(
            r#"<p class="muted">Demo mode: the current code is <code id="demo-code">{}</code></p>"#,
            escape(c)
        )
    });
    let body = format!(
        r#"<h1>Confirm it is you</h1>
<p class="muted">Signed in as {user}</p>
{reason}{error}
<form method="post" action="/login/otp">
{hidden}
<label for="code">Code from your authenticator app</label>
<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{{6}}" required autofocus>
<button type="submit">Verify</button>
</form>
{demo}"#,
        user = escape(username),
        reason = reason_block(ctx),
        error = message_block(ctx.error),
        hidden = hidden(ctx),
    );
    let status = if ctx.error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    page(status, layout("Confirm it is you", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
        );
    }
}
