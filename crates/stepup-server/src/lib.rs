//! The authorization server and OpenID provider of stepup.
//!
//! It issues tokens that say how, and when, the user authenticated (`acr`,
//! `amr`, `auth_time`), so that resource servers guarded by `stepup-guard`
//! can ask for more (RFC 9470) and clients can come back with it.
//!
//! It serves OpenID Connect and RFC 8414 discovery, the JWK Set, the
//! authorization endpoint with password and TOTP login and step-up, the
//! token endpoint (`authorization_code` with PKCE, `refresh_token` with
//! rotation, `client_credentials`), userinfo, RFC 7662 introspection and
//! RFC 7009 revocation, over SQLite or PostgreSQL; signing keys are created
//! on first start and rotated on command.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod authorize;
pub mod client;
pub mod config;
mod discovery;
mod dpop;
pub mod error;
pub mod events;
mod form;
mod geo;
mod grants;
pub mod keys;
mod known_device;
mod pages;
mod passkey;
pub mod rate_limit;
pub mod server;
mod session;
pub mod store;
mod token;
pub mod users;

pub use config::{Config, ConfigError};
pub use server::{ServerState, router};
pub use store::{Store, StoreError};
