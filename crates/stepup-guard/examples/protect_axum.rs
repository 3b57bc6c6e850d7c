//! Protect an axum API with step-up authentication.
//!
//! ```sh
//! cargo run -p stepup-guard --example protect_axum -- https://issuer.example https://api.example policies/bank.toml
//! ```
//!
//! Reading a balance needs a password login; adding a payee needs a second
//! factor proven in the last five minutes, or the client gets the RFC 9470
//! challenge telling it exactly that.

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use stepup_core::Policy;
use stepup_guard::{Guard, HttpFetcher, JwtVerifier, TokenVerifier, VerifiedClaims};

async fn balance(claims: VerifiedClaims) -> String {
    format!(
        "balance of {}: 1,234.56 EUR\n",
        claims.subject.as_deref().unwrap_or("?")
    )
}

async fn add_payee(claims: VerifiedClaims) -> String {
    format!(
        "payee added; you authenticated with {}\n",
        claims.acr.as_deref().unwrap_or("?")
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [issuer, audience, policy_file] = args.as_slice() else {
        return Err("usage: protect_axum ISSUER AUDIENCE POLICY.toml".into());
    };
    let policy = Policy::from_toml(policy_file, &std::fs::read_to_string(policy_file)?)?;
    let verifier = JwtVerifier::from_issuer(issuer, audience, HttpFetcher::new()?).await?;
    let guard = Guard::new(Arc::new(policy), TokenVerifier::Jwt(Arc::new(verifier)));

    let app = Router::new()
        .route("/accounts/{id}/balance", get(balance))
        .route("/accounts/{id}/payees", post(add_payee))
        .layer(guard.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
