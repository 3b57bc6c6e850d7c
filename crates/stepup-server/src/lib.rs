//! The authorization server and OpenID provider of stepup.
//!
//! It issues tokens that say how, and when, the user authenticated (`acr`,
//! `amr`, `auth_time`), so that resource servers guarded by `stepup-guard`
//! can ask for more (RFC 9470) and clients can come back with it.
//!
//! This first part serves RFC 8414 metadata, the JWK Set, the token endpoint
//! for `client_credentials`, RFC 7662 introspection and RFC 7009
//! revocation, over SQLite or PostgreSQL; signing keys are created on first
//! start and rotated on command.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod client;
pub mod config;
mod discovery;
pub mod error;
mod form;
pub mod keys;
pub mod server;
pub mod store;
mod token;

pub use config::{Config, ConfigError};
pub use server::{ServerState, router};
pub use store::{Store, StoreError};
