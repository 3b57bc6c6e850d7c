//! The resource-server guard of stepup.
//!
//! Verifies the access token of each request (JWT against the issuer's
//! JWKS, or RFC 7662 introspection), applies the step-up [`Policy`] and,
//! when the token is not good enough, answers with the RFC 9470 challenge
//! (`401`, `WWW-Authenticate: Bearer error="insufficient_user_authentication",
//! acr_values=..., max_age=...`) without calling the application. Trusted
//! calls cost no network round trip once the keys are cached, and a repeat
//! token skips even the signature check.
//!
//! ```no_run
//! # async fn demo(policy: stepup_core::Policy, verifier: stepup_guard::TokenVerifier) {
//! use std::sync::Arc;
//! use axum::{routing::post, Router};
//! use stepup_guard::{Guard, VerifiedClaims};
//!
//! async fn add_payee(claims: VerifiedClaims) -> String {
//!     format!("payee added for {:?}", claims.subject)
//! }
//!
//! let guard = Guard::new(Arc::new(policy), verifier);
//! let app: Router = Router::new()
//!     .route("/accounts/{id}/payees", post(add_payee))
//!     .layer(guard.layer());
//! # }
//! ```
//!
//! [`Policy`]: stepup_core::Policy

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod activity;
pub mod amount;
pub mod authorization;
pub mod client_ip;
pub mod dpop;
mod fetch;
pub mod geoip;
mod guard;
mod jwks;
mod layer;
pub mod limits;
pub mod redis_activity;
pub mod risk;
pub mod serve;
pub mod transaction;
mod verify;

/// The guard's verified-token cache.
pub type TokenCache = stepup_core::TokenCache<VerifiedToken>;
pub use fetch::{FetchError, HttpFetcher};
pub use guard::{Guard, GuardBuilder, Rejection};
pub use jwks::{KeySource, ServerMetadata, discover};
pub use layer::{ResponseFuture, StepUpLayer, StepUpService, VerifiedClaims};
pub use stepup_core::{Clock, SystemClock};
pub use verify::{
    IntrospectionClient, Introspector, JwtVerifier, MAX_INTROSPECTED_TOKEN_LEN, MAX_INTROSPECTIONS_IN_FLIGHT,
    TokenVerifier, VerifiedToken, VerifyError,
};
