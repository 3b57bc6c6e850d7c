//! What can go wrong on the client side.

use stepup_core::challenge::BearerChallenge;
use thiserror::Error;

use crate::agent::UserAgentError;

/// Why a call (or the step-up it needed) failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The HTTP exchange itself failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The authorization server's metadata is unusable.
    #[error("discovery of {issuer}: {reason}")]
    Discovery {
        /// The issuer asked.
        issuer: String,
        /// What was wrong.
        reason: String,
    },
    /// The user agent could not run the authorization request.
    #[error("the user agent failed: {0}")]
    UserAgent(#[from] UserAgentError),
    /// The authorization server refused (RFC 6749 §4.1.2.1), for example
    /// `access_denied`, or `unmet_authentication_requirements` when the user
    /// cannot reach the asked level (RFC 9470 §5).
    #[error("authorization refused: {error}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Authorization {
        /// The `error` code.
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// The authorization response is not the answer to this request (its
    /// `state` differs, or it carries no code).
    #[error("the authorization response does not answer this request: {0}")]
    BadAuthorizationResponse(String),
    /// The authorization response names another issuer (RFC 9207): a
    /// mix-up attack, or a misconfiguration.
    #[error("the authorization response comes from issuer {got:?}, expected {expected:?}")]
    IssuerMismatch {
        /// The issuer this client uses.
        expected: String,
        /// The `iss` received.
        got: String,
    },
    /// The ID token that came with the tokens is not to be believed (its
    /// signature, issuer, audience, nonce or lifetime): the tokens are not
    /// used.
    #[error("the ID token is refused: {0}")]
    BadIdToken(String),
    /// The sign-in or step-up came back for another account than the one
    /// whose tokens this client holds (the browser was signed in as someone
    /// else): the new tokens are not used. To change account, forget the
    /// tokens held first.
    #[error(
        "signed in as {}, but the tokens held are for {held:?}: the new tokens are not used (sign in as {held:?}, or forget the tokens held to change account)",
        .signed_in.as_ref().map_or_else(|| "an account the ID token does not name (none came)".to_owned(), |s| format!("{s:?}"))
    )]
    AccountChanged {
        /// The account of the tokens held.
        held: String,
        /// The account the new tokens are for, if they name one.
        signed_in: Option<String>,
    },
    /// The store the tokens are shared in failed (see
    /// [`crate::SharedTokens`]).
    #[error("the shared tokens: {0}")]
    SharedTokens(String),
    /// The token endpoint refused (RFC 6749 §5.2).
    #[error("token endpoint ({status}): {error}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Token {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// The request body is a stream that cannot be sent twice, so the call
    /// cannot be retried after the step-up. Send a buffered body.
    #[error(
        "the API asked for a step-up ({0}) but the request body is a stream that cannot be sent again; buffer the body"
    )]
    BodyNotReplayable(Box<BearerChallenge>),
    /// The API challenged again after the step-up: the retry is not
    /// repeated (no loops). The challenge says what is still missing.
    #[error("the API still refuses after the step-up: {0}")]
    StillChallenged(Box<BearerChallenge>),
    /// The URL is plain http to a host that is not a loopback IP address:
    /// no token (nor metadata) travels there.
    #[error("refusing to send a token to {0}: https is required (http only to 127.0.0.1 or [::1])")]
    InsecureTransport(String),
    /// The resource called cannot be trusted with this authorization
    /// server's tokens, or its challenge cannot be followed: no metadata
    /// (RFC 9728), metadata served for another resource, another
    /// authorization server, a scope it does not declare.
    #[error("not sending a token to {url}: {reason}")]
    UntrustedResource {
        /// The URL called.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The step-up was not followed: the user declined it, or it asks for
    /// scopes beyond the configured ones and no one could be asked.
    #[error("the step-up asked by {resource} was declined{}", if .unconfigured_scopes.is_empty() { String::new() } else { format!(" (it asks for scopes not configured: {})", .unconfigured_scopes.join(" ")) })]
    StepUpDeclined {
        /// The resource that asked.
        resource: String,
        /// The scopes it asked beyond the configured ones.
        unconfigured_scopes: Vec<String>,
    },
    /// A `WWW-Authenticate` header could not be read.
    #[error("malformed challenge from the API: {0}")]
    MalformedChallenge(String),
}

impl From<crate::tokens::AccountMismatch> for ClientError {
    fn from(m: crate::tokens::AccountMismatch) -> Self {
        ClientError::AccountChanged {
            held: m.held,
            signed_in: m.got,
        }
    }
}
