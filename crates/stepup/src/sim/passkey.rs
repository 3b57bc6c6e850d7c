//! Passkeys for virtual users: a software authenticator per user
//! (`SoftPasskey`, user verification on), registered on the account page
//! like a person would, and answering the server's passkey pages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use stepup_client::{FormUser, PasskeySigner, page_attribute, page_hidden};
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator as _;
use webauthn_authenticator_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

/// One user's software authenticator, and whether it registered yet.
pub(crate) struct SoftKey(Mutex<SoftPasskey>, AtomicBool);

impl SoftKey {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(SoftPasskey::new(true)), AtomicBool::new(false)))
    }
}

impl PasskeySigner for SoftKey {
    fn answer(&self, origin: &Url, options: &str) -> Result<String, String> {
        let request: RequestChallengeResponse =
            serde_json::from_str(options).map_err(|e| format!("passkey options: {e}"))?;
        let mut key = self
            .0
            .lock()
            .map_err(|_| "the authenticator is poisoned".to_owned())?;
        let credential = key
            .do_authentication(origin.clone(), request)
            .map_err(|e| format!("the authenticator refused: {e:?}"))?;
        serde_json::to_string(&credential).map_err(|e| e.to_string())
    }

    fn has_credential(&self) -> bool {
        self.1.load(Ordering::SeqCst)
    }
}

/// Registers `key` for `user` on the account page of `issuer`: signs in
/// with every factor the page asks for, creates the credential, sends it.
pub(crate) async fn register(user: &FormUser, issuer: &str, key: &SoftKey) -> Result<(), String> {
    let page_url = Url::parse(&format!("{issuer}/account/passkeys")).map_err(|e| e.to_string())?;
    let page = user.open(page_url.clone()).await?;
    let options =
        page_attribute(&page, "data-options").ok_or("no registration options on the account page")?;
    let ceremony = page_hidden(&page, "ceremony").ok_or("no ceremony on the account page")?;
    let creation: CreationChallengeResponse =
        serde_json::from_str(&options).map_err(|e| format!("registration options: {e}"))?;
    let origin = Url::parse(&page_url.origin().ascii_serialization()).map_err(|e| e.to_string())?;
    let credential = {
        let mut soft = key
            .0
            .lock()
            .map_err(|_| "the authenticator is poisoned".to_owned())?;
        soft.do_registration(origin, creation)
            .map_err(|e| format!("the authenticator refused to register: {e:?}"))?
    };
    let credential = serde_json::to_string(&credential).map_err(|e| e.to_string())?;
    let response = user
        .browser()
        .post(page_url.as_str())
        .form(&[
            ("ceremony", ceremony.as_str()),
            ("name", "sim key"),
            ("credential", credential.as_str()),
        ])
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() && body.contains("Passkey added") {
        key.1.store(true, Ordering::SeqCst);
        Ok(())
    } else {
        Err(format!(
            "the passkey was not added ({status}): {}",
            &body[..body.len().min(300)]
        ))
    }
}
