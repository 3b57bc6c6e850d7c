//! Server-rendered pages: plain HTML forms, no external resources. Only
//! the passkey pages run a script (the WebAuthn ceremony needs one), served
//! from this origin. Every interpolated value is escaped.

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
    page_with_policy(status, html, NO_SCRIPT)
}

const NO_SCRIPT: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// The passkey pages may run the one script of this origin, nothing else.
/// (No `form-action`: browsers apply it to the redirect that follows the
/// form, which goes to the client.)
const PASSKEY_SCRIPT: &str =
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'";

fn page_with_policy(status: StatusCode, html: String, policy: &'static str) -> Response {
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
        http::HeaderValue::from_static(policy),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
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

fn passkey_link_block(link: Option<&str>) -> String {
    link.map_or_else(String::new, |l| {
        format!(
            r#"<p><a id="use-passkey" href="{}">Use a passkey instead</a></p>"#,
            escape(l)
        )
    })
}

/// The password form; `passkey_link` offers a passkey instead.
pub(crate) fn password_page(
    ctx: &FormContext<'_>,
    login_hint: Option<&str>,
    passkey_link: Option<&str>,
) -> Response {
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
</form>
{passkey}"#,
        passkey = passkey_link_block(passkey_link),
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
pub(crate) fn otp_page(
    ctx: &FormContext<'_>,
    username: &str,
    demo_code: Option<&str>,
    passkey_link: Option<&str>,
) -> Response {
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
{passkey}
{demo}"#,
        passkey = passkey_link_block(passkey_link),
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

/// One `authorization_details` entry as the approval page shows it: its
/// type and each configured field with its value.
pub(crate) struct ApprovalEntry {
    pub(crate) kind: String,
    pub(crate) fields: Vec<(String, String)>,
}

/// Words for a type or field name: `payment_initiation` → "Payment initiation".
fn words(name: &str) -> String {
    let spaced = name.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The approval of a transaction (RFC 9396 `authorization_details`): every
/// field in words, an amount with its currency, and two deliberate
/// choices. Shown after the sign-in, even when the session's level
/// already suffices.
pub(crate) fn approval_page(ctx: &FormContext<'_>, username: &str, entries: &[ApprovalEntry]) -> Response {
    // A transaction is named as one; permissions alone as an access.
    let title = if entries.iter().any(|e| e.kind != "permissions") {
        "Approve this transaction?"
    } else {
        "Approve this access?"
    };
    let mut shown = String::new();
    for entry in entries {
        let currency = entry
            .fields
            .iter()
            .find(|(f, _)| f == "currency")
            .map(|(_, v)| v.as_str());
        shown.push_str(&format!("<h2>{}</h2>\n<dl>\n", escape(&words(&entry.kind))));
        for (field, value) in &entry.fields {
            let value = match (field.as_str(), currency) {
                ("currency", Some(_)) if entry.fields.iter().any(|(f, _)| f == "amount") => continue,
                ("amount", Some(c)) => format!("{value} {c}"),
                _ => value.clone(),
            };
            shown.push_str(&format!(
                "<dt>{}</dt><dd class=\"approval-{}\">{}</dd>\n",
                escape(&words(field)),
                escape(field),
                escape(&value)
            ));
        }
        shown.push_str("</dl>\n");
    }
    let body = format!(
        r#"<h1>{title}</h1>
<p class="muted">Signed in as {user}. {client} asks for your approval of:</p>
{error}
{shown}
<form method="post" action="/authorize/approve">
{hidden}
<button type="submit" name="decision" value="approve" id="approve">Approve</button>
<button type="submit" name="decision" value="decline" id="decline">Decline</button>
</form>
<p class="muted">Approve only if you started this yourself and every detail is right.</p>"#,
        title = escape(title),
        user = escape(username),
        client = escape(ctx.client_id),
        error = message_block(ctx.error),
        hidden = hidden(ctx),
    );
    page(StatusCode::OK, layout(title, &body))
}

/// The page running a passkey sign-in. `options` is the WebAuthn request
/// options (JSON) the script hands to the browser.
pub(crate) fn passkey_sign_in_page(
    ctx: &FormContext<'_>,
    ceremony_id: &str,
    options: &str,
    username: Option<&str>,
) -> Response {
    let who = username.map_or_else(
        || format!("to continue to {}", escape(ctx.client_id)),
        |u| format!("Signed in as {}", escape(u)),
    );
    let body = format!(
        r#"<h1>Use your passkey</h1>
<p class="muted">{who}</p>
{reason}{error}
<form id="passkey-form" method="post" action="/login/passkey" data-ceremony="get" data-options="{options}">
{hidden}
<input type="hidden" name="ceremony" value="{ceremony}">
<input type="hidden" name="credential" value="">
<button type="button" id="passkey-button">Use passkey</button>
</form>
<p id="passkey-status" class="muted" role="status"></p>
<noscript><p class="error">Passkeys need JavaScript in this page.</p></noscript>
<script src="/assets/passkey.js"></script>"#,
        reason = reason_block(ctx),
        error = message_block(ctx.error),
        hidden = hidden(ctx),
        ceremony = escape(ceremony_id),
        options = escape(options),
    );
    let status = if ctx.error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    page_with_policy(status, layout("Use your passkey", &body), PASSKEY_SCRIPT)
}

/// A passkey as listed on the account page.
pub(crate) struct PasskeyRow<'a> {
    pub(crate) name: &'a str,
    pub(crate) created_at: i64,
    pub(crate) last_used_at: Option<i64>,
}

/// A date for people (UTC).
fn date(seconds: i64) -> String {
    stepup_core::UnixTime(seconds).date()
}

/// The account page: the user's passkeys and the form adding one.
pub(crate) fn account_passkeys_page(
    username: &str,
    passkeys: &[PasskeyRow<'_>],
    ceremony_id: &str,
    options: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let listed = if passkeys.is_empty() {
        "<p>You have no passkey yet.</p>".to_owned()
    } else {
        let rows: String = passkeys
            .iter()
            .map(|p| {
                format!(
                    "<li>{} <span class=\"muted\">added {}, {}</span></li>\n",
                    escape(p.name),
                    date(p.created_at),
                    p.last_used_at
                        .map_or_else(|| "never used".to_owned(), |t| format!("last used {}", date(t)))
                )
            })
            .collect();
        format!("<ul id=\"passkeys\">\n{rows}</ul>")
    };
    let notice = notice.map_or_else(String::new, |n| {
        format!(r#"<p class="notice" role="status">{}</p>"#, escape(n))
    });
    let body = format!(
        r#"<h1>Your passkeys</h1>
<p class="muted">Signed in as {user}</p>
{notice}{error}
{listed}
<form id="passkey-form" method="post" action="/account/passkeys" data-ceremony="create" data-options="{options}">
<input type="hidden" name="ceremony" value="{ceremony}">
<input type="hidden" name="credential" value="">
<label for="name">Name of the new passkey</label>
<input id="name" name="name" maxlength="64" placeholder="Laptop">
<button type="button" id="passkey-button">Add a passkey</button>
</form>
<p id="passkey-status" class="muted" role="status"></p>
<noscript><p class="error">Adding a passkey needs JavaScript in this page.</p></noscript>
<script src="/assets/passkey.js"></script>"#,
        user = escape(username),
        error = message_block(error),
        ceremony = escape(ceremony_id),
        options = escape(options),
    );
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    page_with_policy(status, layout("Your passkeys", &body), PASSKEY_SCRIPT)
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
