//! The swapped account (issue 17): the victim's client holds tokens for the
//! victim, and the browser its step-up runs in is signed in to the
//! attacker's account (a login CSRF, or a shared computer). The elevated
//! token that comes back is the attacker's: used for the victim's call, it
//! would add the victim's payee, card or data to the attacker's account.
//! The client must see that the account changed and use nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use stepup_client::{
    AuthorizationCallback, AuthorizationRequest, BoxFuture, ClientError, FormUser, Provider, UserAgent,
    UserAgentError,
};

/// The victim's browser for the first sign-in, the attacker's after.
struct SwappedBrowser {
    victim: FormUser,
    attacker: FormUser,
    runs: AtomicUsize,
}

impl UserAgent for SwappedBrowser {
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizationRequest<'_>,
    ) -> BoxFuture<'a, Result<AuthorizationCallback, UserAgentError>> {
        if self.runs.fetch_add(1, Ordering::SeqCst) == 0 {
            self.victim.authorize(request)
        } else {
            self.attacker.authorize(request)
        }
    }
}

/// Plays the attack with the victim's client (the stepup client library,
/// as `stepup call` uses it) and the attacker's own account: blocked when
/// the client refuses the step-up as another account's and keeps nothing
/// of it. Any other outcome of the step-up (the attacker's sign-in failed,
/// say) is not a block: the attack could not be judged.
pub(crate) async fn play(
    victim: &FormUser,
    attacker: &FormUser,
    issuer: &str,
    client_id: &str,
    api: &str,
) -> Result<(bool, String), String> {
    let http = reqwest::Client::new();
    let provider = Provider::discover(&http, issuer)
        .await
        .map_err(|e| e.to_string())?;
    if !provider.openid {
        return Err(
            "the authorization server is no OpenID provider: the client cannot tell accounts apart".into(),
        );
    }
    let browser = SwappedBrowser {
        victim: victim.share(),
        attacker: attacker.share(),
        runs: AtomicUsize::new(0),
    };
    let client = super::rogue::victims_client(&http, provider, client_id, api, Arc::new(browser)).await?;
    let held = client.tokens().await.subject().map(str::to_owned);
    let payee = http
        .post(format!("{api}{}", super::attacks::PAYEE))
        .header("content-type", "application/json")
        .body(super::attacks::payee().to_string())
        .build()
        .map_err(|e| e.to_string())?;
    match client.execute(payee).await {
        Err(ClientError::AccountChanged { held: was, .. }) => {
            let tokens = client.tokens().await;
            let kept_nothing = tokens.elevated_count() == 0 && tokens.subject() == held.as_deref();
            Ok((
                kept_nothing && Some(&was) == held.as_ref(),
                format!(
                    "the step-up came back signed in as {}, not the victim: refused, {}",
                    attacker.username(),
                    if kept_nothing {
                        "nothing kept"
                    } else {
                        "but its token was kept"
                    }
                ),
            ))
        }
        Ok(response) => Ok((
            false,
            format!(
                "the victim's payee call went out with the attacker's token: {}",
                response.status()
            ),
        )),
        Err(e) => Err(format!("the step-up did not run as planned: {e}")),
    }
}
