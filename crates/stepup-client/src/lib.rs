//! The client side of stepup: call a protected API, and when it answers
//! with a step-up challenge (RFC 9470 `insufficient_user_authentication`,
//! or RFC 6750 `insufficient_scope`), get a token at the asked level and
//! retry the call once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stepup_client::ClientError> {
//! use std::sync::Arc;
//! use stepup_client::{ClientConfig, LoopbackBrowser, Provider, StepUpClient};
//!
//! let http = reqwest::Client::new();
//! let provider = Provider::discover(&http, "https://login.example").await?;
//! let config = ClientConfig::public("bank-cli", ["accounts:read"]);
//! let client = StepUpClient::new(http.clone(), provider, config, Arc::new(LoopbackBrowser::system()));
//! let request = http.post("https://api.example/accounts/42/payees").body(r#"{"iban":"…"}"#).build()?;
//! // Signs in if needed; on a challenge, steps up in the browser and retries.
//! let response = client.execute(request).await?;
//! # Ok(()) }
//! ```
//!
//! The authorization requests use PKCE (S256), `state`, and check the RFC
//! 9207 `iss` of the response. Tokens are asked for the resource called
//! (RFC 8707 `resource`), learnt from its metadata (RFC 9728), and sent to
//! nothing else: not to another origin or path, not over plain http off
//! loopback; a challenge is followed only from a resource whose metadata
//! names this client's authorization server, and a scope the client was
//! not configured with is asked of the user ([`StepUpClient::on_step_up`]).
//! Tokens are kept per resource and need: the base token serves ordinary
//! calls; a token obtained by a step-up is kept for the route and level
//! that asked for it, and only while its lifetime and the asked `max_age`
//! allow.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod agent;
mod client;
mod error;
mod form_user;
mod provider;
mod shared;
mod tokens;

pub use agent::{
    AuthorizationCallback, AuthorizationRequest, AuthorizationUrlFn, AuthorizeFn, BoxFuture, FnUserAgent,
    LoopbackBrowser, Opened, Opener, UserAgent, UserAgentError,
};
pub use client::{ClientConfig, StepUp, StepUpClient, StepUpNotice};
pub use error::ClientError;
pub use form_user::{
    FormUser, LOOPBACK_REDIRECT, PasskeySigner, Reached, SignIn, attribute as page_attribute,
    hidden as page_hidden,
};
pub use provider::Provider;
pub use shared::{LockedTokens, SharedTokens};
pub use tokens::{AccountMismatch, Requirement, TokenSet, Tokens};
