//! Integration tests of the guard: one binary, shared fixtures.

#![allow(
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod dpop;
mod fixtures;
mod layer;
mod mmdb;
mod redis;
mod remote;
mod risk;
mod serve;
mod transaction;
