//! Integration tests of the authorization server over real HTTP, each run
//! against SQLite and PostgreSQL.

#![allow(
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod browser;
mod dpop;
mod fixtures;
mod flow;
mod geo;
mod interop;
mod limits;
mod par;
mod passkey;
mod rar;
mod token;
