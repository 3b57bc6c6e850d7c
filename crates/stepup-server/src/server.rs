//! The HTTP surface: shared state and the router.

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post};
use ring::rand::SystemRandom;
use stepup_core::Clock;

use stepup_guard::geoip::MaxMindGeo;
use stepup_guard::risk::GeoLookup;

use crate::config::Config;
use crate::keys::{KeyError, KeyRing};
use crate::rate_limit::{Limit, RateLimits};
use crate::store::Store;
use crate::{authorize, discovery, passkey, token};

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The signing keys.
    #[error("cannot load or create the signing keys: {0}")]
    Keys(#[from] KeyError),
    /// A geolocation database.
    #[error(transparent)]
    Geo(#[from] stepup_guard::geoip::GeoIpError),
}

/// What every handler shares.
pub struct ServerState {
    /// The checked configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    pub(crate) keys: RwLock<Arc<KeyRing>>,
    pub(crate) rng: SystemRandom,
    pub(crate) clock: Arc<dyn Clock>,
    /// A hash no password matches, checked for unknown user names so that
    /// the answer takes as long as for known ones (no user enumeration).
    pub(crate) decoy_hash: String,
    pub(crate) clients: crate::client::ClientCache,
    /// The WebAuthn relying party; `None` when passkeys cannot be used
    /// (an issuer reached by IP address).
    pub(crate) webauthn: Option<Arc<webauthn_rs::Webauthn>>,
    /// Where client addresses are looked up, if configured.
    pub(crate) geo: Option<Arc<dyn GeoLookup>>,
    /// The rate limits (`[rate_limit]`).
    pub limits: RateLimits,
    /// The key remembered browsers' cookie names are derived under (see
    /// `known_device::cookie_name`), shared by every instance.
    pub(crate) device_cookie_key: ring::hmac::Key,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl ServerState {
    /// Loads (or on first start creates) the signing keys, and opens the
    /// geolocation databases the configuration names.
    pub async fn new(config: Config, store: Store, clock: Arc<dyn Clock>) -> Result<Arc<Self>, StartError> {
        let geo: Option<Arc<dyn GeoLookup>> = match &config.risk.geoip_database {
            Some(path) => Some(Arc::new(MaxMindGeo::open(
                path,
                config.risk.geoip_asn_database.as_deref(),
            )?)),
            None => None,
        };
        Ok(Self::with_geo(config, store, clock, geo).await?)
    }

    /// As [`ServerState::new`], with the given geolocation.
    pub async fn with_geo(
        config: Config,
        store: Store,
        clock: Arc<dyn Clock>,
        geo: Option<Arc<dyn GeoLookup>>,
    ) -> Result<Arc<Self>, KeyError> {
        let rng = SystemRandom::new();
        let keys =
            KeyRing::load_or_create(&store, clock.now().seconds(), keep_retired_for(&config), &rng).await?;
        let decoy_hash = crate::users::hash_password("decoy password never used", &rng)
            .map_err(|e| KeyError::Crypto(e.to_string()))?;
        let limits = RateLimits::new(&config.rate_limit, Arc::clone(&clock));
        let fresh =
            crate::session::new_secret(&rng).ok_or_else(|| KeyError::Crypto("no randomness".into()))?;
        let device_cookie_key = store.server_secret("device-cookie-names", &fresh).await?;
        let device_cookie_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, device_cookie_key.as_bytes());
        Ok(Arc::new(Self {
            device_cookie_key,
            limits,
            store,
            keys: RwLock::new(Arc::new(keys)),
            rng,
            clock,
            decoy_hash,
            clients: crate::client::ClientCache::default(),
            webauthn: crate::passkey::relying_party(&config.issuer).map(Arc::new),
            geo,
            config,
        }))
    }

    /// The current key ring.
    pub(crate) fn keys(&self) -> Arc<KeyRing> {
        match self.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Reloads the keys from the store (after a rotation, possibly by
    /// another instance).
    pub async fn reload_keys(&self) -> Result<(), KeyError> {
        let ring = KeyRing::load_or_create(
            &self.store,
            self.clock.now().seconds(),
            keep_retired_for(&self.config),
            &self.rng,
        )
        .await?;
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
        Ok(())
    }
}

/// A retired key stays published as long as anything it signed may live.
pub(crate) fn keep_retired_for(config: &Config) -> i64 {
    let t = &config.tokens;
    t.access_token_seconds
        .max(t.id_token_seconds)
        .max(t.elevated_access_token_seconds)
        + 300
}

/// The server's routes. Each endpoint anyone may call has its body capped
/// (413 beyond; `stepup_core::limits`) and, where `[rate_limit]` says,
/// a rate limit per client address (429 beyond).
pub fn router(state: Arc<ServerState>) -> Router {
    use stepup_core::limits::{FORM_BODY_BYTES, INTROSPECTION_BODY_BYTES, TOKEN_BODY_BYTES};
    let limited = |limit: Limit, body_bytes: usize, route: MethodRouter<Arc<ServerState>>| {
        route
            .layer::<_, std::convert::Infallible>(axum::middleware::from_fn_with_state(
                (Arc::clone(&state), limit),
                crate::rate_limit::by_address,
            ))
            .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(body_bytes))
    };
    let capped = |body_bytes: usize, route: MethodRouter<Arc<ServerState>>| {
        route.layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(body_bytes))
    };
    Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::metadata),
        )
        .route("/jwks", get(discovery::jwks))
        .route(
            "/authorize",
            limited(
                Limit::Authorize,
                FORM_BODY_BYTES,
                get(authorize::authorize_get).post(authorize::authorize_post),
            ),
        )
        .route("/par", limited(Limit::Par, FORM_BODY_BYTES, post(authorize::par)))
        .route(
            "/login/password",
            limited(Limit::Login, FORM_BODY_BYTES, post(authorize::login_password)),
        )
        .route(
            "/login/otp",
            limited(Limit::Login, FORM_BODY_BYTES, post(authorize::login_otp)),
        )
        .route(
            "/authorize/approve",
            limited(Limit::Login, FORM_BODY_BYTES, post(authorize::approve)),
        )
        .route(
            "/login/passkey",
            limited(
                Limit::Login,
                FORM_BODY_BYTES,
                get(passkey::sign_in_get).post(passkey::sign_in_post),
            ),
        )
        .route(
            passkey::ACCOUNT_PATH,
            limited(
                Limit::Account,
                FORM_BODY_BYTES,
                get(passkey::account_get).post(passkey::account_post),
            ),
        )
        .route("/assets/passkey.js", get(passkey::script))
        .route(
            "/.well-known/openid-configuration",
            get(discovery::openid_configuration),
        )
        .route(
            "/userinfo",
            capped(TOKEN_BODY_BYTES, get(token::userinfo).post(token::userinfo)),
        )
        .route(
            "/token",
            limited(Limit::Token, TOKEN_BODY_BYTES, post(token::token)),
        )
        .route(
            "/introspect",
            capped(INTROSPECTION_BODY_BYTES, post(token::introspect)),
        )
        .route("/revoke", capped(TOKEN_BODY_BYTES, post(token::revoke)))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::geo::locate_client,
        ))
        .with_state(state)
}
