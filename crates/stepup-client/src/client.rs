//! The client: call, see the challenge, step up, retry once.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{StatusCode, header};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use stepup_core::challenge::{BearerChallenge, ErrorCode, TokenScheme, parse_www_authenticate};
use stepup_core::dpop::{ProofClaims, sign_proof};
use stepup_core::id_token::{IdTokenError, IdTokenExpectations};
use stepup_core::jwk::Jwks;
use stepup_core::jws::JwsError;
use stepup_core::jws::SigningKey;
use stepup_core::pkce::CodeChallenge;
use stepup_core::resource_metadata::{ResourceMetadata, covers, is_loopback_ip, metadata_url};
use stepup_core::{ClientSecret, Clock, SystemClock};
use tokio::sync::Mutex;
use url::Url;

use crate::agent::{AuthorizationCallback, AuthorizationRequest, BoxFuture, UserAgent, UserAgentError};
use crate::error::ClientError;
use crate::provider::Provider;
use crate::shared::SharedTokens;
use crate::tokens::{Requirement, Secret, TokenSet, Tokens};

/// Who the client is to the authorization server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The client id.
    pub client_id: String,
    /// The secret of a confidential client (sent with HTTP Basic); `None`
    /// for a public client (a CLI, a desktop app), which relies on PKCE.
    pub client_secret: Option<ClientSecret>,
    /// Scopes every token is asked with.
    pub scopes: Vec<String>,
    /// Scopes a resource's challenge may add without asking the user (see
    /// [`StepUpClient::on_step_up`]), each list for the resource a URL
    /// belongs to; any other scope a challenge asks for is asked of the
    /// user, or refused when no one is there to ask.
    pub step_up_scopes: Vec<(Url, Vec<String>)>,
    /// The authorization server's levels (`acr` values), weakest first:
    /// with them, a challenge never lowers the level of a held token
    /// ([`ClientConfig::rank_levels`]). Empty: levels are not ranked.
    pub levels: Vec<String>,
}

impl ClientConfig {
    /// A public client.
    pub fn public<S: Into<String>>(
        client_id: impl Into<String>,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: None,
            scopes: scopes.into_iter().map(Into::into).collect(),
            step_up_scopes: Vec::new(),
            levels: Vec::new(),
        }
    }

    /// Ranks the server's levels, weakest first. Only for a server that
    /// says its list is so ordered ([`Provider::acr_values_ordered`]; RFC
    /// 8414 gives `acr_values_supported` no order) or levels the user
    /// knows: a wrong order would refuse real step-ups.
    #[must_use]
    pub fn rank_levels<S: Into<String>>(mut self, weakest_first: impl IntoIterator<Item = S>) -> Self {
        self.levels = weakest_first.into_iter().map(Into::into).collect();
        self
    }

    /// Lets the challenges of the resource `url` belongs to (and of no
    /// other) add these scopes without asking the user.
    #[must_use]
    pub fn allow_step_up_scopes<S: Into<String>>(
        mut self,
        url: Url,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        self.step_up_scopes
            .push((url, scopes.into_iter().map(Into::into).collect()));
        self
    }

    /// Whether a challenge of `resource` may add `scope` without asking.
    fn allows(&self, resource: &ResourceMetadata, scope: &String) -> bool {
        if self.scopes.contains(scope) {
            return true;
        }
        let Ok(id) = stepup_core::resource_metadata::check_resource(&resource.resource) else {
            return false;
        };
        self.step_up_scopes
            .iter()
            .any(|(url, scopes)| scopes.contains(scope) && covers(&id, url))
    }

    /// A confidential client, authenticating with `client_secret_basic`.
    pub fn confidential<S: Into<String>>(
        client_id: impl Into<String>,
        secret: ClientSecret,
        scopes: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            client_secret: Some(secret),
            ..Self::public(client_id, scopes)
        }
    }
}

/// Calls protected APIs with the right token, stepping up when asked.
pub struct StepUpClient {
    /// For the authorization server.
    http: reqwest::Client,
    /// For resources: follows no redirect, so a token goes nowhere but the
    /// URL called (reqwest keeps `Authorization` on a same-host redirect,
    /// to http included, and a reply from elsewhere would pass for the
    /// resource's).
    resource_http: reqwest::Client,
    provider: Provider,
    config: ClientConfig,
    agent: Arc<dyn UserAgent>,
    clock: Arc<dyn Clock>,
    rng: SystemRandom,
    on_step_up: Option<StepUpNotice>,
    dpop: Option<DpopKey>,
    /// The last `DPoP-Nonce` each server gave, by origin.
    nonces: std::sync::Mutex<HashMap<String, String>>,
    /// The issuer's keys, read when an ID token first needs them.
    issuer_keys: std::sync::Mutex<Option<Arc<Jwks>>>,
    /// Held while tokens are obtained, so concurrent calls that need the
    /// same sign-in wait for one instead of each opening a browser.
    tokens: Mutex<Tokens>,
    /// Where the tokens are shared with other processes, if they are.
    shared: Option<Arc<dyn SharedTokens>>,
    /// The tokens as last kept in the shared store (or as given): what
    /// this client's changes are counted from when they are kept.
    baseline: std::sync::Mutex<Tokens>,
}

impl std::fmt::Debug for StepUpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepUpClient")
            .field("issuer", &self.provider.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

/// What a resource asks for, shown to the user before the browser opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// The resource identifier (RFC 9728), as its metadata names it.
    pub resource: String,
    /// Its name for people, if the metadata gives one.
    pub resource_name: Option<String>,
    /// `METHOD URL` of the call that asked.
    pub route: String,
    /// What it asks for.
    pub requirement: Requirement,
    /// Scopes it asks for that the client is configured with neither as
    /// base scopes nor as [`ClientConfig::step_up_scopes`].
    pub unconfigured_scopes: Vec<String>,
}

/// Called when a resource asks for a step-up, before the user agent runs:
/// tells the user who asks for what, and returns whether to go on. Without
/// one, a step-up goes on unless it asks for unconfigured scopes.
pub type StepUpNotice = Arc<dyn Fn(&StepUp) -> bool + Send + Sync>;

/// The client's DPoP key and its thumbprint.
struct DpopKey {
    key: SigningKey,
    jkt: String,
}

/// Which token a call was made with.
#[derive(Clone, PartialEq, Eq)]
enum Held {
    Base,
    /// An elevated token, obtained for this requirement.
    Elevated(Requirement),
}

/// The largest metadata document read (RFC 9728 documents are small).
const METADATA_LIMIT: usize = 64 * 1024;

/// The largest key set read from the issuer.
const JWKS_LIMIT: usize = 256 * 1024;

/// Tolerated clock difference with the issuer, for ID tokens.
const ID_TOKEN_LEEWAY_SECONDS: i64 = 60;

/// How long a token request may take (a refresh holds the shared store's
/// lock meanwhile).
const TOKEN_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long learning a resource may take, per request.
const DISCOVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What an API's refusal asks of the client.
enum Refusal {
    /// More assurance or scope: step up (RFC 9470 §3, RFC 6750 §3.1).
    StepUp(Box<BearerChallenge>),
    /// The token is not accepted (expired, revoked): get a new one.
    InvalidToken,
    /// The server wants its nonce in the DPoP proof: send again with it.
    UseNonce,
}

impl StepUpClient {
    /// A client for `provider`, running authorization requests with `agent`.
    pub fn new(
        http: reqwest::Client,
        provider: Provider,
        config: ClientConfig,
        agent: Arc<dyn UserAgent>,
    ) -> Self {
        let resource_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                // Only a TLS backend that cannot start fails here. The
                // default client follows redirects, but `send` refuses any
                // answer that came through one.
                tracing::error!(error = %e, "cannot build the HTTP client for resources");
                reqwest::Client::default()
            });
        Self {
            http,
            resource_http,
            provider,
            config,
            agent,
            clock: Arc::new(SystemClock),
            rng: SystemRandom::new(),
            on_step_up: None,
            dpop: None,
            nonces: std::sync::Mutex::default(),
            issuer_keys: std::sync::Mutex::default(),
            tokens: Mutex::new(Tokens::default()),
            shared: None,
            baseline: std::sync::Mutex::default(),
        }
    }

    /// Binds tokens to `key` with DPoP (RFC 9449): the authorization
    /// request names it (`dpop_jkt`), token requests and API calls carry
    /// proofs made with it, and server nonces are followed. Tokens bound
    /// to a key are useless without it, so keep the key with them.
    pub fn with_dpop(mut self, key: SigningKey) -> Self {
        let jwk = key.public_jwk(None);
        let jkt = stepup_core::jwk::Jwk::from_json_value(&jwk)
            .map(|k| k.thumbprint_sha256())
            .unwrap_or_default();
        self.dpop = Some(DpopKey { key, jkt });
        self
    }

    fn origin_of(url: &Url) -> String {
        url.origin().ascii_serialization()
    }

    fn remember_nonce(&self, url: &Url, headers: &http::HeaderMap) {
        if let Some(nonce) = headers.get("dpop-nonce").and_then(|v| v.to_str().ok()) {
            let mut nonces = match self.nonces.lock() {
                Ok(n) => n,
                Err(poisoned) => poisoned.into_inner(),
            };
            nonces.insert(Self::origin_of(url), nonce.to_owned());
        }
    }

    /// A proof for a request to `url`, with the server's last nonce.
    fn proof(
        &self,
        method: &str,
        url: &Url,
        access_token: Option<&str>,
    ) -> Result<Option<String>, ClientError> {
        let Some(dpop) = &self.dpop else {
            return Ok(None);
        };
        let nonce = match self.nonces.lock() {
            Ok(n) => n.get(&Self::origin_of(url)).cloned(),
            Err(poisoned) => poisoned.into_inner().get(&Self::origin_of(url)).cloned(),
        };
        let jti = self.random()?;
        let claims = ProofClaims {
            method,
            uri: url.as_str(),
            access_token,
            nonce: nonce.as_deref(),
            jti: &jti,
            iat: self.now(),
        };
        sign_proof(&dpop.key, &claims, &self.rng)
            .map(Some)
            .map_err(|e| ClientError::BadAuthorizationResponse(format!("cannot sign a DPoP proof: {e}")))
    }

    /// Calls `notice` when an API asks for a step-up (a CLI tells its user
    /// why a browser opens).
    pub fn on_step_up(mut self, notice: StepUpNotice) -> Self {
        self.on_step_up = Some(notice);
        self
    }

    /// Calls resources with `http` (a proxy, root certificates, timeouts of
    /// your own). It must not follow redirects: an answer that came through
    /// one is refused ([`ClientError::UntrustedResource`]).
    pub fn with_resource_http(mut self, http: reqwest::Client) -> Self {
        self.resource_http = http;
        self
    }

    /// Uses `clock` for token lifetimes (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Starts from tokens kept earlier.
    pub fn with_tokens(self, tokens: Tokens) -> Self {
        Self {
            baseline: std::sync::Mutex::new(tokens.clone()),
            tokens: Mutex::new(tokens),
            ..self
        }
    }

    /// Shares the tokens with other processes through `store` (which
    /// [`with_tokens`](Self::with_tokens) was read from): refreshes are
    /// made under its lock, from the tokens kept there, and kept there at
    /// once (see [`SharedTokens`]).
    pub fn with_shared_tokens(mut self, store: Arc<dyn SharedTokens>) -> Self {
        self.shared = Some(store);
        self
    }

    /// The tokens held now, to keep them for a later run.
    pub async fn tokens(&self) -> Tokens {
        self.tokens.lock().await.clone()
    }

    /// The tokens as last kept in the shared store: what to count this
    /// client's changes from when keeping [`tokens`](Self::tokens) at the
    /// end ([`Tokens::merge_changes`]). Without a shared store, those
    /// given to [`with_tokens`](Self::with_tokens).
    pub fn kept_tokens(&self) -> Tokens {
        match self.baseline.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now().seconds()
    }

    /// Sends `request` with the token it needs. Signs in first when no
    /// token is held (or refreshes an expired one). When the API answers
    /// with a step-up challenge, gets a token meeting it from the
    /// authorization server (through the user agent) and sends the same
    /// request again, once: a second challenge is
    /// [`ClientError::StillChallenged`]. Other answers, errors included,
    /// are returned as they came.
    ///
    /// A token goes only to the resource it was issued for (RFC 8707
    /// `resource`, RFC 9728 metadata), over https (http only on loopback).
    /// The first call to a resource learns what it is: its metadata at the
    /// origin's well-known address, else the `resource_metadata` of its
    /// answer to the call sent without a token. The metadata must come
    /// from its own address, cover the URL called and name this client's
    /// authorization server, or no token is sent
    /// ([`ClientError::UntrustedResource`]).
    pub async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, ClientError> {
        require_secure(request.url())?;
        let route = route_of(&request);
        let called = request.url().clone();
        // Kept before the first send: a streaming body cannot be cloned.
        let replay = request.try_clone();
        let resource = self.resource_of(&called).await?;
        let (token, held) = self.token_for(&resource, &route).await?;
        let mut response = self.send(request, &token).await?;
        let mut replay = replay;
        // A server nonce is not a refusal: the same call again, with it.
        if matches!(refusal(&response)?, Some(Refusal::UseNonce))
            && let Some(again) = replay.as_ref().and_then(reqwest::Request::try_clone)
        {
            response = self.send(again, &token).await?;
        }
        let first = match refusal(&response)? {
            None | Some(Refusal::UseNonce) => return Ok(response),
            Some(r) => r,
        };
        let replay = replay.take();
        let Some(replay) = replay else {
            return match first {
                Refusal::StepUp(challenge) => Err(ClientError::BodyNotReplayable(challenge)),
                Refusal::InvalidToken | Refusal::UseNonce => Ok(response),
            };
        };
        let token = match first {
            Refusal::StepUp(challenge) => {
                self.step_up(&resource, &called, &route, &held, &challenge, None)
                    .await?
            }
            Refusal::InvalidToken => {
                // Drop the token the API refused, and get another the way
                // a first call would (refresh, else sign in).
                let mut tokens = self.tokens.lock().await;
                if let Some(kept) = tokens.of(&resource.resource) {
                    kept.forget(&token.0);
                }
                drop(tokens);
                self.token_for(&resource, &route).await?.0
            }
            Refusal::UseNonce => return Ok(response),
        };
        let response = self.send(replay, &token).await?;
        match refusal(&response)? {
            Some(Refusal::StepUp(challenge)) => Err(ClientError::StillChallenged(challenge)),
            _ => Ok(response),
        }
    }

    /// Sends `request`, a transaction the API binds to its token (RFC
    /// 9396): when the API asks for more, gets a token approved for
    /// `details` (at the level the challenge names) and sends the request
    /// again with it, once. That token serves this call only and is not
    /// kept: the next transaction is approved anew. Tokens go only where
    /// [`execute`](Self::execute) sends them.
    pub async fn execute_transaction(
        &self,
        request: reqwest::Request,
        details: serde_json::Value,
    ) -> Result<reqwest::Response, ClientError> {
        require_secure(request.url())?;
        let route = route_of(&request);
        let called = request.url().clone();
        let replay = request.try_clone();
        let resource = self.resource_of(&called).await?;
        let (token, held) = self.token_for(&resource, &route).await?;
        let response = self.send(request, &token).await?;
        let challenge = match refusal(&response)? {
            Some(Refusal::StepUp(c)) => c,
            _ => return Ok(response),
        };
        let Some(replay) = replay else {
            return Err(ClientError::BodyNotReplayable(challenge));
        };
        let token = self
            .step_up(&resource, &called, &route, &held, &challenge, Some(details))
            .await?;
        let response = self.send(replay, &token).await?;
        match refusal(&response)? {
            Some(Refusal::StepUp(challenge)) => Err(ClientError::StillChallenged(challenge)),
            _ => Ok(response),
        }
    }

    /// The resource a call to `called` goes to: one already known, else
    /// learnt now (see [`execute`](Self::execute)).
    async fn resource_of(&self, called: &Url) -> Result<ResourceMetadata, ClientError> {
        if let Some(known) = self.tokens.lock().await.resource_for(called) {
            return Ok(known.clone());
        }
        let untrusted = |reason: String| ClientError::UntrustedResource {
            url: called.to_string(),
            reason,
        };
        // The origin's own metadata: no request is sent to learn it.
        let origin = called.origin().ascii_serialization();
        let (at_origin, _) = metadata_url(&origin).map_err(|e| untrusted(e.to_string()))?;
        if let Ok(metadata) = self.read_metadata(&at_origin, called).await {
            return Ok(self.remember(metadata).await);
        }
        // Else a GET of the URL, without a token nor the call's body (the
        // call itself is sent once, with its token): a resource answers
        // with a challenge naming its metadata (RFC 9728 §5).
        let response = self
            .resource_http
            .get(called.clone())
            .timeout(DISCOVERY_TIMEOUT)
            .send()
            .await?;
        self.remember_nonce(called, response.headers());
        let named = challenges(&response)?
            .into_iter()
            .find_map(|c| c.resource_metadata);
        let Some(named) = named else {
            return Err(untrusted(format!(
                "it publishes no resource metadata (RFC 9728) at {at_origin}, and answers a call without a token with {} naming none",
                response.status().as_u16()
            )));
        };
        let named = Url::parse(&named).map_err(|e| untrusted(format!("resource_metadata {named:?}: {e}")))?;
        let metadata = self.read_metadata(&named, called).await?;
        Ok(self.remember(metadata).await)
    }

    async fn remember(&self, metadata: ResourceMetadata) -> ResourceMetadata {
        tracing::info!(resource = %metadata.resource, "a resource of this authorization server");
        self.tokens.lock().await.know(metadata.clone());
        metadata
    }

    /// Reads a resource's metadata at `at` and checks it may be used for a
    /// call to `called` (RFC 9728 §3.3, and this client's issuer).
    async fn read_metadata(&self, at: &Url, called: &Url) -> Result<ResourceMetadata, ClientError> {
        let untrusted = |reason: String| ClientError::UntrustedResource {
            url: called.to_string(),
            reason,
        };
        require_secure(at)?;
        let mut response = self
            .resource_http
            .get(at.clone())
            .header(header::ACCEPT, "application/json")
            .timeout(DISCOVERY_TIMEOUT)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(untrusted(format!("{at}: HTTP {}", response.status().as_u16())));
        }
        // Where it was read (no redirect is followed: this is `at`).
        let fetched = response.url().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > METADATA_LIMIT {
                return Err(untrusted(format!(
                    "{at}: metadata larger than {METADATA_LIMIT} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let metadata: ResourceMetadata = serde_json::from_slice(&body)
            .map_err(|e| untrusted(format!("{at}: not resource metadata: {e}")))?;
        metadata
            .check_for(&fetched, called, &self.provider.issuer)
            .map_err(|e| untrusted(e.to_string()))?;
        Ok(metadata)
    }

    /// Signs in for the base token of the resource `url` belongs to, now
    /// (before any call needs it).
    pub async fn sign_in(&self, url: &Url) -> Result<(), ClientError> {
        require_secure(url)?;
        let resource = self.resource_of(url).await?;
        let tokens = self
            .authorize(&Requirement::default(), &resource.resource)
            .await?;
        let mut held = self.tokens.lock().await;
        self.same_account_as_store(&mut held, &tokens).await?;
        if !held.has(&resource.resource) {
            held.know(resource.clone());
        }
        if let Some(kept) = held.of(&resource.resource) {
            kept.set_base(tokens);
        }
        Ok(())
    }

    async fn send(
        &self,
        mut request: reqwest::Request,
        token: &(Secret, bool),
    ) -> Result<reqwest::Response, ClientError> {
        let (token, bound) = token;
        let bad_header = || ClientError::Token {
            status: 200,
            error: "invalid_token".to_owned(),
            description: Some("the access token has characters a header cannot carry".to_owned()),
        };
        let scheme = if *bound { "DPoP" } else { "Bearer" };
        let value =
            http::HeaderValue::from_str(&format!("{scheme} {}", token.expose())).map_err(|_| bad_header())?;
        request.headers_mut().insert(header::AUTHORIZATION, value);
        if *bound {
            let url = request.url().clone();
            if let Some(proof) = self.proof(request.method().as_str(), &url, Some(token.expose()))? {
                let value = http::HeaderValue::from_str(&proof).map_err(|_| bad_header())?;
                request.headers_mut().insert("dpop", value);
            }
        }
        let url = request.url().clone();
        let response = self.resource_http.execute(request).await?;
        if response.url() != &url {
            // A client given by the caller followed a redirect, with the
            // token: what came back is not the resource's answer.
            return Err(ClientError::UntrustedResource {
                url: url.to_string(),
                reason: format!(
                    "it redirected to {}: the HTTP client for resources must not follow redirects",
                    response.url()
                ),
            });
        }
        self.remember_nonce(&url, response.headers());
        Ok(response)
    }

    /// The token for a call to `route` of `resource`: its elevated token
    /// if one is held, else the base token (refreshed or obtained as
    /// needed).
    async fn token_for(
        &self,
        resource: &ResourceMetadata,
        route: &str,
    ) -> Result<((Secret, bool), Held), ClientError> {
        let id = resource.resource.as_str();
        let mut tokens = self.tokens.lock().await;
        let now = self.now();
        tokens.prune(now);
        if !tokens.has(id) {
            tokens.know(resource.clone());
        }
        let forgotten = || ClientError::UntrustedResource {
            url: id.to_owned(),
            reason: "forgotten".to_owned(),
        };
        let kept = tokens.of(id).ok_or_else(forgotten)?;
        if let Some((elevated, requirement)) = kept.elevated_for(route, now) {
            return Ok((
                (elevated.access_token.clone(), elevated.dpop),
                Held::Elevated(requirement.clone()),
            ));
        }
        if let Some(base) = kept.base() {
            if base.is_fresh(now) {
                return Ok(((base.access_token.clone(), base.dpop), Held::Base));
            }
            if base.can_refresh() {
                match self.renew(&mut tokens, id).await {
                    Ok(renewed) => return Ok(((renewed.access_token, renewed.dpop), Held::Base)),
                    // Another account's, or the store cannot be used:
                    // a sign-in would not help.
                    Err(e @ (ClientError::AccountChanged { .. } | ClientError::SharedTokens(_))) => {
                        return Err(e);
                    }
                    Err(e) => tracing::info!(error = %e, "refresh failed; signing in again"),
                }
            }
        }
        let base = self.authorize(&Requirement::default(), id).await?;
        self.same_account_as_store(&mut tokens, &base).await?;
        let token = (base.access_token.clone(), base.dpop);
        tokens.of(id).ok_or_else(forgotten)?.set_base(base);
        Ok((token, Held::Base))
    }

    /// Renews the base token of `resource` with its refresh token, and
    /// keeps it in `tokens`. With a shared store, under its lock: a token
    /// another process renewed meanwhile is taken as it is (or its refresh
    /// token used, ours having been rotated), and the result is kept in
    /// the store before the lock goes, so no refresh token is spent twice.
    async fn renew(&self, tokens: &mut Tokens, resource: &str) -> Result<TokenSet, ClientError> {
        let ours = tokens.base(resource).cloned();
        let Some(shared) = self.shared.clone() else {
            let ours = ours.ok_or_else(|| ClientError::SharedTokens("no token to refresh".to_owned()))?;
            let renewed = self.refresh(&ours, resource).await?;
            self.keep_base(tokens, resource, &renewed)?;
            return Ok(renewed);
        };
        // The issuer's keys are read before the lock is taken: other runs
        // wait for it no longer than the refresh itself takes.
        if self.provider.openid && self.cached_issuer_keys().is_none() {
            self.read_issuer_keys().await?;
        }
        let mut locked = tokio::task::spawn_blocking(move || shared.lock())
            .await
            .map_err(|e| ClientError::SharedTokens(e.to_string()))?
            .map_err(ClientError::SharedTokens)?;
        if let Some(account) = locked.tokens().subject() {
            tokens.bind_to(account);
        }
        let stored = locked.tokens().base(resource).cloned();
        if stored.is_none() && self.kept_tokens().base(resource).is_some() {
            // Another process took it out (it may have spent its refresh
            // token, or was told to forget it): not spent again here.
            if let Some(kept) = tokens.of(resource) {
                kept.forget_base();
            }
            return Err(ClientError::Token {
                status: 0,
                error: "invalid_grant".to_owned(),
                description: Some("another process took the token out of the shared store".to_owned()),
            });
        }
        // What another process put there since this one read the store.
        let theirs = stored.filter(|t| Some(t) != ours.as_ref());
        if let Some(theirs) = &theirs {
            tokens.check_account(theirs)?;
        }
        let renewed = match theirs {
            Some(theirs) if theirs.is_fresh(self.now()) => {
                tracing::info!(resource, "another process renewed the token: taken as it is");
                self.keep_base(tokens, resource, &theirs)?;
                theirs
            }
            theirs => {
                // Theirs, when it can be refreshed: ours was rotated.
                let from = theirs
                    .filter(TokenSet::can_refresh)
                    .or(ours)
                    .ok_or_else(|| ClientError::SharedTokens("no token to refresh".to_owned()))?;
                let refreshed = match self.refresh(&from, resource).await {
                    Ok(r) => self.keep_base(tokens, resource, &r).map(|()| r),
                    Err(e) => Err(e),
                };
                match refreshed {
                    Ok(r) => r,
                    Err(e) => {
                        // Its refresh token may be spent all the same (the
                        // server rotated it, then something failed): it
                        // goes, here and from the store, so that no process
                        // spends it again.
                        if let Some(kept) = tokens.of(resource) {
                            kept.forget(&from.access_token);
                        }
                        let before = locked.tokens().clone();
                        let mut after = before.clone();
                        if let Some(kept) = after.of(resource) {
                            kept.forget(&from.access_token);
                        }
                        let _ = tokio::task::spawn_blocking(move || locked.keep(&before, &after)).await;
                        return Err(e);
                    }
                }
            }
        };
        let before = self.kept_tokens();
        let after = tokens.clone();
        let kept = tokio::task::spawn_blocking(move || locked.keep(&before, &after).map(|()| after)).await;
        match kept {
            Ok(Ok(after)) => match self.baseline.lock() {
                Ok(mut b) => *b = after,
                Err(poisoned) => *poisoned.into_inner() = after,
            },
            // The tokens serve this process still; the caller's final save
            // may keep them.
            Ok(Err(e)) => tracing::warn!(error = %e, "the renewed token could not be kept"),
            Err(e) => tracing::warn!(error = %e, "the renewed token could not be kept"),
        }
        Ok(renewed)
    }

    /// [`same_account`], where the account is also the shared store's:
    /// tokens not bound yet take the account another process bound the
    /// store to since (else this run would take another account's sign-in
    /// and call with it, to be refused only when saving).
    async fn same_account_as_store(
        &self,
        tokens: &mut Tokens,
        obtained: &TokenSet,
    ) -> Result<(), ClientError> {
        if tokens.subject().is_none()
            && let Some(shared) = self.shared.clone()
        {
            let account = tokio::task::spawn_blocking(move || {
                shared
                    .lock()
                    .map(|locked| locked.tokens().subject().map(str::to_owned))
            })
            .await
            .map_err(|e| ClientError::SharedTokens(e.to_string()))?
            .map_err(ClientError::SharedTokens)?;
            if let Some(account) = account {
                tokens.bind_to(&account);
            }
        }
        same_account(tokens, obtained)
    }

    /// Keeps `renewed` as the base token of `resource`, if it is for the
    /// account the tokens are for.
    fn keep_base(&self, tokens: &mut Tokens, resource: &str, renewed: &TokenSet) -> Result<(), ClientError> {
        same_account(tokens, renewed)?;
        if !tokens.has(resource) {
            return Err(ClientError::SharedTokens(format!("{resource} was forgotten")));
        }
        if let Some(kept) = tokens.of(resource) {
            kept.set_base(renewed.clone());
        }
        Ok(())
    }

    /// Follows `challenge`, the answer of `resource` to a call to `route`
    /// made with the `held` token: checks it may be followed, tells the
    /// user, and gets a token meeting it. With `details` (a transaction),
    /// the token is approved for them and not kept; else it is kept for
    /// the route.
    async fn step_up(
        &self,
        resource: &ResourceMetadata,
        called: &Url,
        route: &str,
        held: &Held,
        challenge: &BearerChallenge,
        details: Option<serde_json::Value>,
    ) -> Result<(Secret, bool), ClientError> {
        let untrusted = |reason: String| ClientError::UntrustedResource {
            url: called.to_string(),
            reason,
        };
        // The challenge names the resource's metadata: it must be this
        // resource's, and it is read again, so a step-up is followed only
        // while the resource still names this authorization server.
        let resource = match &challenge.resource_metadata {
            Some(named) => {
                let (own, _) = metadata_url(&resource.resource).map_err(|e| untrusted(e.to_string()))?;
                if named != own.as_str() {
                    return Err(untrusted(format!(
                        "its challenge names the metadata at {named}, not that of {}",
                        resource.resource
                    )));
                }
                let fresh = self.read_metadata(&own, called).await?;
                if fresh.resource != resource.resource {
                    return Err(untrusted(format!("its metadata now names {}", fresh.resource)));
                }
                self.remember(fresh).await
            }
            None => resource.clone(),
        };
        let mut requirement = requirement_of(challenge);
        if !resource.scopes_supported.is_empty()
            && let Some(s) = requirement
                .scope
                .iter()
                .find(|s| !resource.scopes_supported.contains(s))
        {
            return Err(untrusted(format!(
                "it asks for the scope {s:?}, which its metadata does not list"
            )));
        }
        if let Held::Elevated(had) = held {
            // A challenge may raise the level, never lower it: one that
            // asks only for levels below those the held token was obtained
            // for is asked at the held levels (with its freshness and
            // scopes).
            requirement.raise_to(had, &self.config.levels);
            // The token was obtained for this already: asking again is a
            // loop, not a step up.
            if details.is_none() && !requirement.asks_more_than(had) {
                return Err(ClientError::StillChallenged(Box::new(challenge.clone())));
            }
        }
        let transaction = details.is_some();
        requirement.authorization_details = details;
        let unconfigured_scopes: Vec<String> = requirement
            .scope
            .iter()
            .filter(|s| !self.config.allows(&resource, s))
            .cloned()
            .collect();
        let step = StepUp {
            resource: resource.resource.clone(),
            resource_name: resource.resource_name.clone(),
            route: route.to_owned(),
            requirement,
            unconfigured_scopes,
        };
        tracing::info!(resource = %step.resource, route, acr_values = ?step.requirement.acr_values,
            max_age = ?step.requirement.max_age, scope = ?step.requirement.scope, "the API asks for a step-up");
        if transaction {
            self.ask(&step)?;
            let approved = self.authorize(&step.requirement, &resource.resource).await?;
            self.same_account_as_store(&mut *self.tokens.lock().await, &approved)
                .await?;
            return Ok((approved.access_token, approved.dpop));
        }
        // One step-up at a time: a call that asked the same while another
        // stepped up takes the token obtained, without asking again.
        let mut tokens = self.tokens.lock().await;
        if !tokens.has(&resource.resource) {
            tokens.know(resource.clone());
        }
        let now = self.now();
        if let Some(kept) = tokens.of(&resource.resource)
            && let Some((t, r)) = kept.elevated_for(route, now)
            && r == &step.requirement
        {
            return Ok((t.access_token.clone(), t.dpop));
        }
        self.ask(&step)?;
        let elevated = self.authorize(&step.requirement, &resource.resource).await?;
        self.same_account_as_store(&mut tokens, &elevated).await?;
        let token = (elevated.access_token.clone(), elevated.dpop);
        if let Some(kept) = tokens.of(&resource.resource) {
            kept.set_elevated(route.to_owned(), step.requirement, elevated);
        }
        Ok(token)
    }

    /// Tells the user who asks for what; goes on only if they (or, without
    /// anyone to ask, the configuration) say so.
    fn ask(&self, step: &StepUp) -> Result<(), ClientError> {
        let go_on = match &self.on_step_up {
            Some(ask) => ask(step),
            None => step.unconfigured_scopes.is_empty(),
        };
        if go_on {
            Ok(())
        } else {
            Err(ClientError::StepUpDeclined {
                resource: step.resource.clone(),
                unconfigured_scopes: step.unconfigured_scopes.clone(),
            })
        }
    }

    /// Runs an authorization request for `requirement` and `resource`
    /// (RFC 8707) through the user agent and exchanges the code.
    async fn authorize(&self, requirement: &Requirement, resource: &str) -> Result<TokenSet, ClientError> {
        let verifier = self.random()?;
        let challenge = CodeChallenge::from_verifier(&verifier)
            .map_err(|e| ClientError::BadAuthorizationResponse(e.to_string()))?;
        let state = self.random()?;
        // From an OpenID provider, every sign-in says who signed in (an
        // ID token), so tokens of two accounts are never mixed.
        let nonce = if self.provider.openid {
            Some(self.random()?)
        } else {
            None
        };
        let mut scopes = self.config.scopes.clone();
        if nonce.is_some() && !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".to_owned());
        }
        for s in &requirement.scope {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        let scope = scopes.join(" ");
        let params = |redirect_uri: &str| {
            let mut p: Vec<(&'static str, String)> = vec![
                ("response_type", "code".to_owned()),
                ("client_id", self.config.client_id.clone()),
                ("redirect_uri", redirect_uri.to_owned()),
                ("state", state.clone()),
                ("code_challenge", challenge.as_str().to_owned()),
                ("code_challenge_method", "S256".to_owned()),
                ("resource", resource.to_owned()),
            ];
            if !scope.is_empty() {
                p.push(("scope", scope.clone()));
            }
            if !requirement.acr_values.is_empty() {
                p.push(("acr_values", requirement.acr_values.join(" ")));
            }
            if let Some(max_age) = requirement.max_age {
                p.push(("max_age", max_age.to_string()));
            }
            if let Some(dpop) = &self.dpop {
                // The code can then be exchanged only with this key.
                p.push(("dpop_jkt", dpop.jkt.clone()));
            }
            if let Some(details) = &requirement.authorization_details {
                p.push(("authorization_details", details.to_string()));
            }
            if let Some(nonce) = &nonce {
                p.push(("nonce", nonce.clone()));
            }
            p
        };
        // A refusal of the pushed request, kept to be returned as itself.
        let refused: std::sync::Mutex<Option<ClientError>> = std::sync::Mutex::new(None);
        let url_for = |redirect_uri: String| -> BoxFuture<'_, Result<Url, UserAgentError>> {
            let params = params(&redirect_uri);
            let refused = &refused;
            Box::pin(async move {
                match self.authorization_url(params).await {
                    Ok(url) => Ok(url),
                    Err(e) => {
                        let said = e.to_string();
                        if let Ok(mut r) = refused.lock() {
                            *r = Some(e);
                        }
                        Err(UserAgentError::Other(said))
                    }
                }
            })
        };
        let request = AuthorizationRequest::new(&url_for, &state);
        let callback = match self.agent.authorize(&request).await {
            Ok(callback) => callback,
            Err(e) => {
                let pushed = refused.lock().ok().and_then(|mut r| r.take());
                return Err(pushed.unwrap_or(ClientError::UserAgent(e)));
            }
        };
        let code = self.read_callback(&callback, &state)?;
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", callback.redirect_uri.clone()),
            ("code_verifier", verifier),
            ("resource", resource.to_owned()),
        ];
        self.token_request(form, None, nonce.as_deref()).await
    }

    /// The URL that takes the user to the authorization request made of
    /// `params`. When the server takes pushed requests (RFC 9126), they are
    /// pushed first: `state`, the PKCE challenge and the rest never appear
    /// in a URL (a command line other local users can read), and a request
    /// the server refuses (an unknown `resource`, say) is refused before
    /// any browser opens.
    async fn authorization_url(&self, params: Vec<(&'static str, String)>) -> Result<Url, ClientError> {
        let mut url = self.provider.authorization_endpoint.clone();
        let Some(par) = &self.provider.pushed_authorization_request_endpoint else {
            url.query_pairs_mut()
                .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
            return Ok(url);
        };
        let mut form = params;
        form.retain(|(k, _)| *k != "client_id");
        let request = self.authenticated(self.http.post(par.clone()), &mut form);
        let response = request.form(&form).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        #[derive(Deserialize)]
        struct Pushed {
            request_uri: String,
        }
        if status == StatusCode::CREATED || status == StatusCode::OK {
            let pushed: Pushed = serde_json::from_slice(&body).map_err(|e| {
                ClientError::BadAuthorizationResponse(format!("the pushed request's answer: {e}"))
            })?;
            url.query_pairs_mut()
                .append_pair("client_id", &self.config.client_id)
                .append_pair("request_uri", &pushed.request_uri);
            return Ok(url);
        }
        let (error, description) = oauth_error(&body);
        Err(ClientError::Authorization { error, description })
    }

    /// `request` with the client's authentication: HTTP Basic for a
    /// confidential client (RFC 6749 §2.3.1: both parts form-encoded
    /// first), `client_id` in the form for a public one.
    fn authenticated(
        &self,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
    ) -> reqwest::RequestBuilder {
        match &self.config.client_secret {
            Some(secret) => {
                let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                request.basic_auth(
                    encode(&self.config.client_id),
                    Some(encode(secret.expose_secret())),
                )
            }
            None => {
                form.push(("client_id", self.config.client_id.clone()));
                request
            }
        }
    }

    /// The code of an authorization response, after checking it answers
    /// this request: the issuer first (RFC 9207 §2.4), then `state`.
    fn read_callback(&self, callback: &AuthorizationCallback, state: &str) -> Result<String, ClientError> {
        let mut params: HashMap<String, String> = HashMap::new();
        for (k, v) in callback.url.query_pairs() {
            if params.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(ClientError::BadAuthorizationResponse(format!(
                    "parameter {k} repeated"
                )));
            }
        }
        match params.get("iss") {
            Some(iss) if iss != &self.provider.issuer => {
                return Err(ClientError::IssuerMismatch {
                    expected: self.provider.issuer.clone(),
                    got: iss.clone(),
                });
            }
            // RFC 9207 §2.4: a server that says it sends `iss` always does;
            // a response without it may come from another server.
            None if self.provider.authorization_response_iss_parameter_supported => {
                return Err(ClientError::IssuerMismatch {
                    expected: self.provider.issuer.clone(),
                    got: String::new(),
                });
            }
            _ => {}
        }
        if params.get("state").map(String::as_str) != Some(state) {
            return Err(ClientError::BadAuthorizationResponse(
                "its state differs".to_owned(),
            ));
        }
        if let Some(error) = params.remove("error") {
            return Err(ClientError::Authorization {
                error,
                description: params.remove("error_description"),
            });
        }
        params
            .remove("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| ClientError::BadAuthorizationResponse("it carries no code".to_owned()))
    }

    /// Exchanges the refresh token of `old` for new tokens of `resource`.
    async fn refresh(&self, old: &TokenSet, resource: &str) -> Result<TokenSet, ClientError> {
        let Some(refresh_token) = &old.refresh_token else {
            return Err(ClientError::Token {
                status: 0,
                error: "invalid_grant".to_owned(),
                description: Some("no refresh token is held".to_owned()),
            });
        };
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
            ("resource", resource.to_owned()),
        ];
        self.token_request(form, Some(old), None).await
    }

    /// A token request with the client's authentication: a code exchange
    /// (with the `nonce` sent, from an OpenID provider), or a refresh of
    /// `previous`.
    async fn token_request(
        &self,
        mut form: Vec<(&'static str, String)>,
        previous: Option<&TokenSet>,
        nonce: Option<&str>,
    ) -> Result<TokenSet, ClientError> {
        let request = self.authenticated(self.http.post(self.provider.token_endpoint.clone()), &mut form);
        let endpoint = self.provider.token_endpoint.clone();
        let mut response = self.send_token_request(&request, &form, &endpoint).await?;
        // A server nonce: once more with it (nothing was used up).
        if response.status() == StatusCode::BAD_REQUEST && response.headers().contains_key("dpop-nonce") {
            response = self.send_token_request(&request, &form, &endpoint).await?;
        }
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            let (error, description) = oauth_error(&body);
            return Err(ClientError::Token {
                status: status.as_u16(),
                error,
                description,
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            token_type: String,
            expires_in: Option<i64>,
            refresh_token: Option<String>,
            scope: Option<String>,
            id_token: Option<String>,
        }
        let bad = |reason: String| ClientError::Token {
            status: status.as_u16(),
            error: "invalid_response".to_owned(),
            description: Some(reason),
        };
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| bad(format!("not a token response: {e}")))?;
        let dpop = parsed.token_type.eq_ignore_ascii_case("DPoP");
        if !(parsed.token_type.eq_ignore_ascii_case("Bearer") || (dpop && self.dpop.is_some())) {
            return Err(bad(format!(
                "token type {:?}, expected Bearer{}",
                parsed.token_type,
                if self.dpop.is_some() { " or DPoP" } else { "" }
            )));
        }
        if self.dpop.is_some() && !dpop {
            // The server ignored the proof: the token would be a bearer
            // token after all. Accepted, but said.
            tracing::warn!("the authorization server issued a bearer token despite the DPoP proof");
        }
        let now = self.now();
        let subject = match (&parsed.id_token, nonce) {
            (Some(id_token), _) => {
                let signed_in = self
                    .verify_id_token(id_token, nonce, &parsed.access_token)
                    .await?;
                // A refresh is for the account it was issued for.
                if let Some(held) = previous.and_then(|p| p.subject.as_ref())
                    && held != &signed_in
                {
                    return Err(ClientError::AccountChanged {
                        held: held.clone(),
                        signed_in: Some(signed_in),
                    });
                }
                Some(signed_in)
            }
            // OpenID Connect Core §3.1.3.3: a code exchange asked with
            // `openid` returns an ID token.
            (None, Some(_)) => return Err(bad("no ID token, though openid was asked".to_owned())),
            (None, None) => previous.and_then(|p| p.subject.clone()),
        };
        Ok(TokenSet {
            access_token: Secret::new(parsed.access_token),
            // A refresh that returns no new refresh token keeps the old one.
            refresh_token: parsed
                .refresh_token
                .map(Secret::new)
                .or_else(|| previous.and_then(|p| p.refresh_token.clone())),
            expires_at: parsed.expires_in.map(|s| now.saturating_add(s)),
            scope: parsed
                .scope
                .map(|s| {
                    s.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .or_else(|| previous.map(|p| p.scope.clone()))
                .unwrap_or_default(),
            obtained_at: now,
            dpop,
            subject,
        })
    }

    /// Who an ID token of this issuer says signed in (OpenID Connect Core
    /// §3.1.3.7), checked against the `nonce` sent and the access token
    /// it came with. The issuer's keys are read again once when none of
    /// those held signed it (they rotate).
    async fn verify_id_token(
        &self,
        id_token: &str,
        nonce: Option<&str>,
        access_token: &str,
    ) -> Result<String, ClientError> {
        let expected = IdTokenExpectations {
            issuer: &self.provider.issuer,
            client_id: &self.config.client_id,
            nonce,
            access_token: Some(access_token),
            now: self.now(),
            leeway_seconds: ID_TOKEN_LEEWAY_SECONDS,
        };
        let algorithms = self.provider.id_token_algorithms;
        let keys = match self.cached_issuer_keys() {
            Some(keys) => keys,
            None => self.read_issuer_keys().await?,
        };
        let verified = match stepup_core::id_token::verify(id_token, &keys, algorithms, &expected) {
            Err(IdTokenError::Jws(JwsError::UnknownKey { .. })) => {
                let keys = self.read_issuer_keys().await?;
                stepup_core::id_token::verify(id_token, &keys, algorithms, &expected)
            }
            other => other,
        };
        verified
            .map(|t| t.subject)
            .map_err(|e| ClientError::BadIdToken(e.to_string()))
    }

    /// The issuer's keys, if read already.
    fn cached_issuer_keys(&self) -> Option<Arc<Jwks>> {
        self.issuer_keys.lock().ok().and_then(|k| k.clone())
    }

    /// Reads the issuer's keys (`jwks_uri`) and keeps them.
    async fn read_issuer_keys(&self) -> Result<Arc<Jwks>, ClientError> {
        let Some(jwks_uri) = &self.provider.jwks_uri else {
            return Err(ClientError::BadIdToken(
                "the issuer publishes no keys (jwks_uri)".to_owned(),
            ));
        };
        let mut response = self
            .http
            .get(jwks_uri.clone())
            .header(header::ACCEPT, "application/json")
            .timeout(DISCOVERY_TIMEOUT)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(ClientError::BadIdToken(format!(
                "{jwks_uri}: HTTP {}",
                response.status().as_u16()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > JWKS_LIMIT {
                return Err(ClientError::BadIdToken(format!(
                    "{jwks_uri}: larger than {JWKS_LIMIT} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = Arc::new(
            Jwks::from_json(&body).map_err(|e| ClientError::BadIdToken(format!("{jwks_uri}: {e}")))?,
        );
        if let Ok(mut held) = self.issuer_keys.lock() {
            *held = Some(Arc::clone(&keys));
        }
        Ok(keys)
    }

    /// One token request, with a fresh DPoP proof when the client has a key.
    async fn send_token_request(
        &self,
        request: &reqwest::RequestBuilder,
        form: &[(&'static str, String)],
        endpoint: &Url,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = request
            .try_clone()
            .ok_or_else(|| ClientError::BadAuthorizationResponse("token request cannot be repeated".into()))?
            .form(form);
        if let Some(proof) = self.proof("POST", endpoint, None)? {
            request = request.header("dpop", proof);
        }
        let response = request.timeout(TOKEN_REQUEST_TIMEOUT).send().await?;
        self.remember_nonce(endpoint, response.headers());
        Ok(response)
    }

    /// 256 random bits, base64url (PKCE verifiers and `state`).
    fn random(&self) -> Result<String, ClientError> {
        let mut bytes = [0u8; 32];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| ClientError::BadAuthorizationResponse("no randomness available".to_owned()))?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// Keeps to one account: `obtained` must be for the account `held` is
/// (see [`Tokens::bind_subject`]).
fn same_account(held: &mut Tokens, obtained: &TokenSet) -> Result<(), ClientError> {
    held.bind_subject(obtained).map_err(ClientError::from)
}

/// What a step-up challenge asks for.
fn requirement_of(challenge: &BearerChallenge) -> Requirement {
    Requirement {
        acr_values: challenge
            .acr_values
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect(),
        max_age: challenge.max_age,
        scope: challenge
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        authorization_details: None,
    }
}

/// `METHOD scheme://host:port/path`: what an elevated token is kept for
/// (the query is left out: the same operation on other arguments).
fn route_of(request: &reqwest::Request) -> String {
    let url: &Url = request.url();
    format!(
        "{} {}://{}:{}{}",
        request.method(),
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default(),
        url.path()
    )
}

/// The `error` and `error_description` of an OAuth error answer (RFC 6749
/// §5.2); `unknown` when the body is not one.
fn oauth_error(body: &[u8]) -> (String, Option<String>) {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        error_description: Option<String>,
    }
    match serde_json::from_slice::<OAuthError>(body) {
        Ok(e) => (e.error, e.error_description),
        Err(_) => ("unknown".to_owned(), None),
    }
}

/// Tokens and metadata travel over https, or http to a loopback IP
/// literal (not `localhost`: see [`is_loopback_ip`]).
fn require_secure(url: &Url) -> Result<(), ClientError> {
    if url.scheme() == "https" || (url.scheme() == "http" && is_loopback_ip(url)) {
        Ok(())
    } else {
        Err(ClientError::InsecureTransport(url.to_string()))
    }
}

/// The `Bearer` and `DPoP` challenges of a 401 or 403.
fn challenges(response: &reqwest::Response) -> Result<Vec<BearerChallenge>, ClientError> {
    if !matches!(
        response.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        return Ok(Vec::new());
    }
    let values: Vec<&str> = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if values.is_empty() {
        return Ok(Vec::new());
    }
    let parsed =
        parse_www_authenticate(values).map_err(|e| ClientError::MalformedChallenge(e.to_string()))?;
    parsed
        .iter()
        .filter(|c| TokenScheme::from_name(c.scheme()).is_some())
        .map(|c| {
            BearerChallenge::from_challenge(c).map_err(|e| ClientError::MalformedChallenge(e.to_string()))
        })
        .collect()
}

/// Reads the API's refusal, if the response is one this client acts on:
/// a 401 or 403 with a `Bearer` challenge saying
/// `insufficient_user_authentication`, `insufficient_scope` or
/// `invalid_token`.
fn refusal(response: &reqwest::Response) -> Result<Option<Refusal>, ClientError> {
    for bearer in challenges(response)? {
        if bearer
            .error
            .as_ref()
            .is_some_and(|e| e.as_str() == "use_dpop_nonce")
        {
            return Ok(Some(Refusal::UseNonce));
        }
        match bearer.error {
            Some(ErrorCode::InsufficientUserAuthentication | ErrorCode::InsufficientScope) => {
                return Ok(Some(Refusal::StepUp(Box::new(bearer))));
            }
            Some(ErrorCode::InvalidToken) => return Ok(Some(Refusal::InvalidToken)),
            _ => {}
        }
    }
    Ok(None)
}
