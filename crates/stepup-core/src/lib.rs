//! Sans-I/O rules of step-up authentication.
//!
//! `stepup-core` decides whether a verified access token is good enough for a
//! request and, when it is not, says what would be, as an RFC 9470 challenge.
//! It never reads a clock, a file, a socket or the environment: the current
//! time and every input are arguments, so every rule is testable in isolation.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod access_token;
pub mod acr;
pub mod amount;
pub mod authentication;
pub mod authorization_request;
pub mod challenge;
pub mod decision;
pub mod dpop;
pub mod id_token;
pub mod json;
pub mod jwk;
pub mod jws;
pub mod limits;
pub mod pkce;
pub mod policy;
pub mod resource_metadata;
pub mod risk;
pub mod route;
pub mod scope;
pub mod secret;
pub mod time;
pub mod token_cache;
pub mod totp;

pub use access_token::{AccessTokenClaims, ClaimsError, ClaimsRules, TokenFacts};
pub use acr::{Acr, AcrError, AssuranceLevels, LevelsError, Rank};
pub use decision::{Decision, StepUpReason, Verdict};
pub use policy::{Diagnostic, Policy, PolicyError, Requirement, Rule};
pub use route::RequestPathError;
pub use scope::Scope;
pub use secret::ClientSecret;
pub use time::{Clock, SystemClock, UnixTime};
pub use token_cache::TokenCache;
