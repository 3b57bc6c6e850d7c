//! Registered clients and client authentication (RFC 6749 §2.3).
//!
//! Client secrets are 256 random bits, shown once at registration and
//! stored as SHA-256 hashes: at that entropy a slow password hash adds
//! nothing, and the token endpoint stays fast. Comparison is constant-time.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::HeaderMap;
use ring::digest::{SHA256, digest};
use ring::rand::SecureRandom;
use stepup_core::jwk::{Algorithm, Jwks};
use stepup_core::jws::{VerificationPolicy, verify_compact};
use stepup_core::{ClientSecret, Scope};
use subtle::ConstantTimeEq;

use crate::error::OAuthError;
use crate::form::Form;
use crate::store::{Store, StoreError, StoredClient};

/// How a client proves who it is at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthMethod {
    /// HTTP Basic with id and secret.
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523, OpenID
    /// Connect Core §9); its public keys are registered.
    PrivateKeyJwt,
    /// A public client: no secret (PKCE protects its codes).
    None,
}

impl AuthMethod {
    /// The RFC 8414 name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::None => "none",
        }
    }

    /// Parses an RFC 8414 name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::ClientSecretBasic,
            Self::ClientSecretPost,
            Self::PrivateKeyJwt,
            Self::None,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
}

/// Grant types a client may use.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];

/// A registered client.
#[derive(Debug, Clone)]
pub struct Client {
    /// The client id.
    pub id: String,
    secret_sha256: Option<Vec<u8>>,
    /// How it authenticates.
    pub auth_method: AuthMethod,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Grant types it may use.
    pub grant_types: Vec<String>,
    /// Scopes it may ask for.
    pub scopes: Vec<Scope>,
    /// Whether its authorization requests must be pushed (RFC 9126).
    pub require_par: bool,
    /// Whether its tokens must be bound to a key with DPoP (RFC 9449).
    pub require_dpop: bool,
    /// Its public keys, for `private_key_jwt`.
    pub jwks: Option<Jwks>,
    /// The audiences (RFC 8707 resources) it may get tokens for; empty:
    /// only the server's default audience.
    pub audiences: Vec<String>,
}

/// What an administrator registers.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The client id (letters, digits, `-`, `_`, `.`).
    pub client_id: String,
    /// How it authenticates; `None` for public clients.
    pub auth_method: AuthMethod,
    /// Exact redirect URIs (absolute, no fragment).
    pub redirect_uris: Vec<String>,
    /// Grant types.
    pub grant_types: Vec<String>,
    /// Scopes it may ask for.
    pub scopes: Vec<Scope>,
    /// Whether authorization requests must be pushed.
    pub require_par: bool,
    /// Whether tokens must be bound to a key with DPoP.
    pub require_dpop: bool,
    /// The client's public keys (a JWK Set, JSON), for `private_key_jwt`.
    pub jwks: Option<String>,
    /// The audiences it may get tokens for, among the server's configured
    /// ones (the administrator's command checks that); empty: only the
    /// default audience, so that no client reaches another resource
    /// server's APIs unless registered for it.
    pub audiences: Vec<String>,
}

/// Why a registration is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// A value that makes no sense, with what was expected.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed (or the id is taken).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    digest(&SHA256, bytes).as_ref().to_vec()
}

impl Client {
    fn from_stored(s: StoredClient) -> Result<Self, StoreError> {
        let corrupt = |column| StoreError::Corrupt {
            table: "clients",
            column,
        };
        let secret_sha256 = match s.secret_sha256 {
            Some(b64) => Some(STANDARD.decode(b64).map_err(|_| corrupt("secret_sha256"))?),
            None => None,
        };
        let scopes = s
            .scopes
            .split(' ')
            .filter(|x| !x.is_empty())
            .map(|x| Scope::new(x).map_err(|_| corrupt("scopes")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: s.client_id,
            secret_sha256,
            auth_method: AuthMethod::parse(&s.auth_method).ok_or_else(|| corrupt("auth_method"))?,
            redirect_uris: serde_json::from_str(&s.redirect_uris).map_err(|_| corrupt("redirect_uris"))?,
            grant_types: serde_json::from_str(&s.grant_types).map_err(|_| corrupt("grant_types"))?,
            scopes,
            require_par: s.require_par,
            require_dpop: s.require_dpop,
            jwks: match s.jwks {
                Some(json) => Some(Jwks::from_json(json.as_bytes()).map_err(|_| corrupt("jwks"))?),
                None => None,
            },
            audiences: match s.audiences {
                Some(json) => serde_json::from_str(&json).map_err(|_| corrupt("audiences"))?,
                None => Vec::new(),
            },
        })
    }

    /// Whether the client may use a grant type.
    pub fn may_use_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }

    fn secret_matches(&self, presented: &str) -> bool {
        match &self.secret_sha256 {
            Some(stored) => bool::from(stored.as_slice().ct_eq(&sha256(presented.as_bytes()))),
            None => false,
        }
    }
}

/// Removes a client at `now`: its refresh tokens are revoked (and the
/// access tokens issued with them read as revoked), then it is forgotten,
/// so its codes and tokens are honoured no more. Returns whether it existed.
pub async fn remove(store: &Store, client_id: &str, now: i64) -> Result<bool, StoreError> {
    // Forgotten first: a grant made meanwhile finds it gone.
    let removed = store.delete_client(client_id).await?;
    store.revoke_client_families(client_id, now).await?;
    if removed {
        tracing::info!(target: "stepup::audit", event = "client_removed", client = client_id, "client removed");
    }
    Ok(removed)
}

/// Registers a client; returns it with its secret (shown once) when it is confidential.
pub async fn register(
    store: &Store,
    registration: Registration,
    now: i64,
    rng: &dyn SecureRandom,
) -> Result<(Client, Option<ClientSecret>), RegistrationError> {
    let r = registration;
    validate(&r)?;
    let invalid = |m: String| RegistrationError::Invalid(m);
    let secret = if matches!(r.auth_method, AuthMethod::None | AuthMethod::PrivateKeyJwt) {
        None
    } else {
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes)
            .map_err(|_| invalid("no randomness".into()))?;
        Some(ClientSecret::new(URL_SAFE_NO_PAD.encode(bytes)))
    };
    let scopes: Vec<&str> = r.scopes.iter().map(Scope::as_str).collect();
    let stored = StoredClient {
        client_id: r.client_id.clone(),
        secret_sha256: secret
            .as_ref()
            .map(|s| STANDARD.encode(sha256(s.expose_secret().as_bytes()))),
        auth_method: r.auth_method.as_str().to_owned(),
        redirect_uris: serde_json::to_string(&r.redirect_uris).map_err(|e| invalid(e.to_string()))?,
        grant_types: serde_json::to_string(&r.grant_types).map_err(|e| invalid(e.to_string()))?,
        scopes: scopes.join(" "),
        require_par: r.require_par,
        require_dpop: r.require_dpop,
        created_at: now,
        jwks: r.jwks.clone(),
        audiences: if r.audiences.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&r.audiences).map_err(|e| invalid(e.to_string()))?)
        },
    };
    store.insert_client(&stored).await?;
    Ok((Client::from_stored(stored)?, secret))
}

/// Checks a registration (a new one, or one updated) makes sense.
fn validate(r: &Registration) -> Result<(), RegistrationError> {
    let invalid = |m: String| RegistrationError::Invalid(m);
    let id_ok = !r.client_id.is_empty()
        && r.client_id.len() <= 128
        && r.client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !id_ok {
        return Err(invalid(format!(
            "client id {:?}: expected 1 to 128 letters, digits, '-', '_' or '.'",
            r.client_id
        )));
    }
    for a in &r.audiences {
        if a.is_empty() || a.len() > 2048 || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!("audience {a:?}: expected a URI without spaces")));
        }
    }
    for g in &r.grant_types {
        if !GRANT_TYPES.contains(&g.as_str()) {
            return Err(invalid(format!(
                "grant type {g:?}: expected one of {}",
                GRANT_TYPES.join(", ")
            )));
        }
    }
    if r.grant_types.is_empty() {
        return Err(invalid("at least one grant type is needed".into()));
    }
    if r.auth_method == AuthMethod::None && r.grant_types.iter().any(|g| g == "client_credentials") {
        return Err(invalid("a public client cannot use client_credentials".into()));
    }
    for uri in &r.redirect_uris {
        let parsed = url::Url::parse(uri).map_err(|e| invalid(format!("redirect URI {uri:?}: {e}")))?;
        if parsed.fragment().is_some() {
            return Err(invalid(format!(
                "redirect URI {uri:?} must not have a fragment (RFC 6749 §3.1.2)"
            )));
        }
    }
    if r.grant_types.iter().any(|g| g == "authorization_code") && r.redirect_uris.is_empty() {
        return Err(invalid(
            "authorization_code needs at least one redirect URI".into(),
        ));
    }
    match (&r.jwks, r.auth_method) {
        (Some(json), AuthMethod::PrivateKeyJwt) => {
            let keys = Jwks::from_json(json.as_bytes()).map_err(|e| invalid(format!("jwks: {e}")))?;
            if keys.is_empty() {
                return Err(invalid("jwks: no usable public key".into()));
            }
        }
        (None, AuthMethod::PrivateKeyJwt) => {
            return Err(invalid(
                "private_key_jwt needs the client's public keys (a JWK Set)".into(),
            ));
        }
        (Some(_), _) => return Err(invalid("public keys are only used with private_key_jwt".into())),
        (None, _) => {}
    }
    Ok(())
}

/// What `update` changes of a client; `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct ClientChanges {
    /// Exact redirect URIs, replacing the registered ones.
    pub redirect_uris: Option<Vec<String>>,
    /// Grant types, replacing the registered ones.
    pub grant_types: Option<Vec<String>>,
    /// Scopes, replacing the registered ones.
    pub scopes: Option<Vec<Scope>>,
    /// Audiences, replacing the registered ones (empty: the default only).
    pub audiences: Option<Vec<String>>,
    /// Whether authorization requests must be pushed.
    pub require_par: Option<bool>,
    /// Whether tokens must be bound with DPoP.
    pub require_dpop: Option<bool>,
}

/// Changes a registered client, checked as a new registration is. Its id,
/// authentication (secret, keys) and what it was issued stay; a running
/// server sees the change within [`CLIENT_CACHE_SECONDS`]. `None` when no
/// client has that id.
pub async fn update(
    store: &Store,
    client_id: &str,
    changes: ClientChanges,
) -> Result<Option<Client>, RegistrationError> {
    let Some(stored) = store.client(client_id).await? else {
        return Ok(None);
    };
    let current = Client::from_stored(stored.clone())?;
    let invalid = |m: String| RegistrationError::Invalid(m);
    let r = Registration {
        client_id: current.id.clone(),
        auth_method: current.auth_method,
        redirect_uris: changes.redirect_uris.unwrap_or(current.redirect_uris),
        grant_types: changes.grant_types.unwrap_or(current.grant_types),
        scopes: changes.scopes.unwrap_or(current.scopes),
        require_par: changes.require_par.unwrap_or(current.require_par),
        require_dpop: changes.require_dpop.unwrap_or(current.require_dpop),
        jwks: stored.jwks.clone(),
        audiences: changes.audiences.unwrap_or(current.audiences),
    };
    validate(&r)?;
    let scopes: Vec<&str> = r.scopes.iter().map(Scope::as_str).collect();
    let updated = StoredClient {
        redirect_uris: serde_json::to_string(&r.redirect_uris).map_err(|e| invalid(e.to_string()))?,
        grant_types: serde_json::to_string(&r.grant_types).map_err(|e| invalid(e.to_string()))?,
        scopes: scopes.join(" "),
        require_par: r.require_par,
        require_dpop: r.require_dpop,
        audiences: if r.audiences.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&r.audiences).map_err(|e| invalid(e.to_string()))?)
        },
        ..stored
    };
    store.update_client(&updated).await?;
    tracing::info!(target: "stepup::audit", event = "client_updated", client = client_id, "client updated");
    Ok(Some(Client::from_stored(updated)?))
}

/// Looks a client up.
pub async fn find(store: &Store, client_id: &str) -> Result<Option<Client>, StoreError> {
    store
        .client(client_id)
        .await?
        .map(Client::from_stored)
        .transpose()
}

/// Registered clients, cached for a few seconds: every token request
/// authenticates its client, and the lookup was a sixth of the CPU of
/// `client_credentials`. A changed or removed client takes effect everywhere
/// within [`CLIENT_CACHE_SECONDS`]. Unknown ids are not cached, so made-up
/// ids cannot fill it.
#[derive(Debug, Default)]
pub(crate) struct ClientCache {
    entries:
        std::sync::RwLock<std::collections::HashMap<String, (std::sync::Arc<Client>, std::time::Instant)>>,
}

/// How long a cached client is trusted.
pub const CLIENT_CACHE_SECONDS: u64 = 10;

/// Cached clients at most; beyond, the cache starts over.
const CLIENT_CACHE_CAPACITY: usize = 10_000;

impl ClientCache {
    pub(crate) async fn find(
        &self,
        store: &Store,
        client_id: &str,
    ) -> Result<Option<std::sync::Arc<Client>>, StoreError> {
        let ttl = std::time::Duration::from_secs(CLIENT_CACHE_SECONDS);
        if let Ok(entries) = self.entries.read()
            && let Some((client, at)) = entries.get(client_id)
            && at.elapsed() < ttl
        {
            return Ok(Some(std::sync::Arc::clone(client)));
        }
        let Some(client) = find(store, client_id).await? else {
            return Ok(None);
        };
        let client = std::sync::Arc::new(client);
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= CLIENT_CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert(
                client_id.to_owned(),
                (std::sync::Arc::clone(&client), std::time::Instant::now()),
            );
        }
        Ok(Some(client))
    }
}

/// All clients.
pub async fn list(store: &Store) -> Result<Vec<Client>, StoreError> {
    store
        .clients()
        .await?
        .into_iter()
        .map(Client::from_stored)
        .collect()
}

/// Credentials as presented, before they are checked.
struct Presented {
    client_id: String,
    secret: Option<String>,
    method: AuthMethod,
}

fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
    let basic_error = |d: &str| OAuthError {
        basic_attempted: true,
        ..OAuthError::invalid_client(d)
    };
    if let Some((_, encoded)) = basic {
        if form.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        let decoded = STANDARD
            .decode(encoded.trim())
            .map_err(|_| basic_error("malformed Basic credentials"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| basic_error("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| basic_error("malformed Basic credentials"))?;
        // RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding.
        let decode = |s: &str| -> String {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let (id, secret) = (decode(id), decode(secret));
        if form.get("client_id").is_some_and(|f| f != id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the authenticated client",
            ));
        }
        return Ok(Presented {
            client_id: id,
            secret: Some(secret),
            method: AuthMethod::ClientSecretBasic,
        });
    }
    if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        if form.get("client_assertion_type") != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {JWT_BEARER}"
            )));
        }
        let client_id = assertion_subject(assertion)
            .ok_or_else(|| OAuthError::invalid_client("malformed client assertion"))?;
        if form.get("client_id").is_some_and(|f| f != client_id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the client assertion",
            ));
        }
        return Ok(Presented {
            client_id,
            secret: Some(assertion.to_owned()),
            method: AuthMethod::PrivateKeyJwt,
        });
    }
    let client_id = form
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
    Ok(Presented {
        client_id: client_id.to_owned(),
        secret: form.get("client_secret").map(str::to_owned),
        method: if form.get("client_secret").is_some() {
            AuthMethod::ClientSecretPost
        } else {
            AuthMethod::None
        },
    })
}

/// RFC 7523 §2.2.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The `sub` of an assertion, read before its signature is checked only to
/// find whose keys check it.
fn assertion_subject(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("sub")?.as_str().map(str::to_owned)
}

/// Where assertions must be addressed, and when.
pub(crate) struct AssertionContext<'a> {
    /// Accepted `aud` values: the issuer and the endpoint's URL.
    pub(crate) audiences: &'a [String],
    /// The current time.
    pub(crate) now: i64,
}

/// Checks a client assertion (RFC 7523 §3, OpenID Connect Core §9): a JWS
/// by one of the client's keys, `iss` = `sub` = client id, `aud` naming this
/// server, unexpired, at most 5 minutes of lifetime, `jti` used once.
async fn check_assertion(
    store: &Store,
    client: &Client,
    assertion: &str,
    ctx: &AssertionContext<'_>,
) -> Result<(), &'static str> {
    let keys = client.jwks.as_ref().ok_or("no registered keys")?;
    let policy = VerificationPolicy::new(Algorithm::ALL, None);
    let verified = verify_compact(assertion, keys, &policy).map_err(|_| "bad signature")?;
    let c: serde_json::Value = serde_json::from_slice(verified.payload()).map_err(|_| "malformed claims")?;
    let s = |k: &str| c.get(k).and_then(serde_json::Value::as_str);
    if s("iss") != Some(client.id.as_str()) || s("sub") != Some(client.id.as_str()) {
        return Err("iss and sub must be the client id");
    }
    let aud_ok = match c.get("aud") {
        Some(serde_json::Value::String(a)) => ctx.audiences.contains(a),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .filter_map(serde_json::Value::as_str)
            .any(|a| ctx.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return Err("aud must name this server");
    }
    let exp = c
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .ok_or("exp is required")?;
    if exp <= ctx.now || exp > ctx.now + 300 {
        return Err("exp must be within the next 5 minutes");
    }
    let jti = s("jti").ok_or("jti is required")?;
    let fresh = store
        .use_assertion(&format!("{}:{jti}", client.id), exp)
        .await
        .map_err(|_| "server error")?;
    if !fresh {
        return Err("assertion already used");
    }
    Ok(())
}

/// Authenticates the client of a token, introspection or revocation
/// request. `allow_public` admits public clients (token endpoint only).
pub(crate) async fn authenticate(
    store: &Store,
    clients: &ClientCache,
    headers: &HeaderMap,
    form: &Form,
    allow_public: bool,
    ctx: &AssertionContext<'_>,
) -> Result<std::sync::Arc<Client>, OAuthError> {
    let p = presented(headers, form)?;
    let fail = |d: &str| OAuthError {
        basic_attempted: p.method == AuthMethod::ClientSecretBasic,
        ..OAuthError::invalid_client(d)
    };
    // One message for unknown clients and wrong secrets: no client enumeration.
    let Some(client) = clients.find(store, &p.client_id).await? else {
        return Err(fail("client authentication failed"));
    };
    if client.auth_method != p.method {
        tracing::debug!(client = %client.id, used = p.method.as_str(), registered = client.auth_method.as_str(), "client used the wrong authentication method");
        return Err(fail("client authentication failed"));
    }
    match (&p.secret, p.method) {
        (_, AuthMethod::None) if !allow_public => Err(fail("public clients cannot use this endpoint")),
        (_, AuthMethod::None) => Ok(client),
        (Some(assertion), AuthMethod::PrivateKeyJwt) => {
            match check_assertion(store, &client, assertion, ctx).await {
                Ok(()) => Ok(client),
                Err(why) => {
                    tracing::debug!(client = %client.id, why, "client assertion refused");
                    Err(fail("client authentication failed"))
                }
            }
        }
        (Some(secret), _) if client.secret_matches(secret) => Ok(client),
        _ => Err(fail("client authentication failed")),
    }
}

/// [`authenticate`] at one of this server's endpoints: assertions may name
/// the issuer or the endpoint's URL as audience.
pub(crate) async fn authenticate_at(
    state: &crate::server::ServerState,
    endpoint: &str,
    headers: &HeaderMap,
    form: &Form,
    allow_public: bool,
) -> Result<std::sync::Arc<Client>, OAuthError> {
    let issuer = &state.config.issuer;
    let audiences = [issuer.clone(), format!("{issuer}{endpoint}")];
    let ctx = AssertionContext {
        audiences: &audiences,
        now: state.clock.now().seconds(),
    };
    authenticate(&state.store, &state.clients, headers, form, allow_public, &ctx).await
}
