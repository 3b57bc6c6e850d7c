//! The guard: token → verified claims → policy decision → pass or challenge.
//! The one place where outcomes become HTTP responses is [`Rejection`].

use std::net::IpAddr;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use stepup_core::challenge::{BearerChallenge, ErrorCode, TokenScheme};
use stepup_core::dpop::{
    ProofContext, SchemeError, required_proof_key, single_proof, verify_proof_with_nonces,
};
use stepup_core::resource_metadata::{ResourceIdentifierError, ResourceMetadata};
use stepup_core::risk::{Signal, Signals};
use stepup_core::{Clock, Policy, SystemClock, UnixTime, Verdict};

use crate::activity::Sighting;
use crate::amount::{AmountError, Transaction, read_json_body, transaction_of};
use crate::risk::{self, Observed, RiskOptions};
use crate::transaction::{Mismatch, TransactionOptions, TransactionRule};

use crate::TokenCache;
use crate::authorization::{AuthorizationError, Scheme, access_token};
use crate::dpop::DpopOptions;
use crate::verify::{TokenVerifier, VerifiedToken, VerifyError};

/// The outcome of the I/O-free part of a check.
pub(crate) enum Precheck<'h> {
    /// Settled: pass with this token, or reject.
    Done(Result<Arc<VerifiedToken>, Rejection>),
    /// The token must be verified (signature, or introspection) first.
    NeedsVerification(&'h str),
}

/// A request the guard turned away, with everything needed to answer it.
/// Its response carries it as an extension, for the layers around the
/// guard (metrics, access logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status.
    pub status: StatusCode,
    /// The challenge for `WWW-Authenticate`, when the status calls for one
    /// (boxed: rejections travel in `Result`s on the hot path).
    pub challenge: Option<Box<BearerChallenge>>,
    /// The rule that produced the rejection, when a policy rule did.
    pub rule: Option<String>,
    /// A `DPoP-Nonce` to send (RFC 9449 §9), with `use_dpop_nonce`.
    pub dpop_nonce: Option<String>,
}

impl Rejection {
    fn bearer(realm: Option<&str>, error: Option<ErrorCode>, description: Option<String>) -> Self {
        let status = error.as_ref().map_or(StatusCode::UNAUTHORIZED, |e| {
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED)
        });
        Self {
            status,
            challenge: Some(Box::new(BearerChallenge {
                realm: realm.map(str::to_owned),
                error,
                error_description: description,
                ..BearerChallenge::default()
            })),
            rule: None,
            dpop_nonce: None,
        }
    }

    /// A refusal of a DPoP request (RFC 9449 §7.1): `DPoP` challenge with
    /// the accepted algorithms.
    fn dpop(
        realm: Option<&str>,
        algs: String,
        error: &str,
        description: String,
        nonce: Option<String>,
    ) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            challenge: Some(Box::new(BearerChallenge {
                scheme: TokenScheme::DPoP,
                realm: realm.map(str::to_owned),
                error: Some(ErrorCode::from(error)),
                error_description: Some(description),
                algs: Some(algs),
                ..BearerChallenge::default()
            })),
            rule: None,
            dpop_nonce: nonce,
        }
    }

    /// A refusal without a challenge (the request, not the token, is at
    /// fault).
    pub(crate) fn plain(status: StatusCode, description: &str) -> Self {
        Self {
            status,
            challenge: Some(Box::new(BearerChallenge {
                error: Some(ErrorCode::InvalidRequest),
                error_description: Some(description.to_owned()),
                ..BearerChallenge::default()
            })),
            rule: None,
            dpop_nonce: None,
        }
    }

    /// The `WWW-Authenticate` header value, if any.
    pub fn www_authenticate(&self) -> Option<String> {
        self.challenge.as_ref().map(|c| c.to_challenge().to_string())
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        if let Some(c) = &self.challenge {
            if let Some(e) = &c.error {
                body.insert("error".into(), e.as_str().into());
            }
            if let Some(d) = &c.error_description {
                body.insert("error_description".into(), d.as_str().into());
            }
            if let Some(s) = &c.scope {
                body.insert("scope".into(), s.as_str().into());
            }
            if !c.acr_values.is_empty() {
                let values: Vec<&str> = c.acr_values.iter().map(|a| a.as_str()).collect();
                body.insert("acr_values".into(), values.join(" ").into());
            }
            if let Some(m) = c.max_age {
                body.insert("max_age".into(), m.into());
            }
            // No credentials: the challenge carries no error (RFC 6750
            // §3.1), the body still says what is missing.
            if body.is_empty() && self.status == StatusCode::UNAUTHORIZED {
                body.insert("error_description".into(), "an access token is required".into());
            }
        } else {
            body.insert("error".into(), "temporarily_unavailable".into());
        }
        let mut response = (self.status, axum::Json(serde_json::Value::Object(body))).into_response();
        // A body too large or too slow to check is the request's fault,
        // not a credential's: no challenge.
        let challenges = !matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        );
        if let Some(value) = self
            .www_authenticate()
            .filter(|_| challenges)
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            response
                .headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, value);
        }
        if let Some(nonce) = self
            .dpop_nonce
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            response.headers_mut().insert("dpop-nonce", nonce);
        }
        // For layers outside the guard (metrics, access logs): which rule
        // refused, and why.
        response.extensions_mut().insert(self);
        response
    }
}

pub(crate) struct GuardInner {
    pub(crate) policy: Arc<Policy>,
    pub(crate) verifier: TokenVerifier,
    pub(crate) cache: TokenCache,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) realm: Option<String>,
    pub(crate) risk: RiskOptions,
    pub(crate) dpop: Option<DpopOptions>,
    pub(crate) transactions: Option<TransactionOptions>,
    pub(crate) body_read_timeout: std::time::Duration,
    pub(crate) resource_metadata: Option<ServedMetadata>,
}

/// The resource's metadata as the guard serves it (RFC 9728).
pub(crate) struct ServedMetadata {
    /// Where it is served (the path of its well-known URL).
    path: String,
    /// Its URL, for `resource_metadata` in challenges.
    url: String,
    /// The JSON document.
    body: bytes::Bytes,
}

/// A configured guard: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Guard {
    pub(crate) inner: Arc<GuardInner>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("routes", &self.inner.policy.routes().len())
            .field("realm", &self.inner.realm)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard applying `policy` to tokens checked by `verifier`, with a
    /// 10,000-token verified-token cache and the system clock.
    pub fn new(policy: Arc<Policy>, verifier: TokenVerifier) -> Self {
        Self::builder(policy, verifier).build()
    }

    /// Starts a guard with options.
    pub fn builder(policy: Arc<Policy>, verifier: TokenVerifier) -> GuardBuilder {
        GuardBuilder {
            policy,
            verifier,
            cache_capacity: 10_000,
            clock: Arc::new(SystemClock),
            realm: None,
            risk: RiskOptions::default(),
            dpop: None,
            transactions: None,
            body_read_timeout: crate::limits::DEFAULT_BODY_READ_TIMEOUT,
            resource_metadata: None,
        }
    }

    /// The response to a rejected request: the rejection's status,
    /// challenge and JSON body, the challenge naming the resource's
    /// metadata when the guard has some (RFC 9728 §5.1).
    pub fn respond(&self, mut rejection: Rejection) -> Response {
        if let (Some(challenge), Some(metadata)) = (&mut rejection.challenge, &self.inner.resource_metadata) {
            challenge.resource_metadata = Some(metadata.url.clone());
        }
        rejection.into_response()
    }

    /// The resource's metadata document, when `method` and `path` ask for
    /// it (`GET` or `HEAD` at its well-known path): answered before any
    /// token is looked at, as clients read it before they have one.
    pub fn metadata_response(&self, method: &http::Method, path: &str) -> Option<Response> {
        let metadata = self.inner.resource_metadata.as_ref()?;
        if path != metadata.path || !(method == http::Method::GET || method == http::Method::HEAD) {
            return None;
        }
        let mut response = Response::new(axum::body::Body::from(metadata.body.clone()));
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600"),
        );
        Some(response)
    }

    /// The tower layer that applies this guard to a service.
    pub fn layer(&self) -> crate::StepUpLayer {
        crate::StepUpLayer::new(self.clone())
    }

    /// Checks a request: returns the verified token to hand to the
    /// application, or the rejection to send. Risk rules see only the
    /// token's claims; see [`Guard::check_observed`].
    pub async fn check(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Arc<VerifiedToken>, Rejection> {
        self.check_observed(method, path, headers, &Observed::default())
            .await
    }

    /// What the guard observes of a request from `peer` (client address
    /// and location, device), per its [`RiskOptions`].
    pub fn observe<'h>(&self, peer: Option<IpAddr>, headers: &'h HeaderMap) -> Observed<'h> {
        self.inner.risk.observe(peer, headers)
    }

    /// Whether deciding this request needs the transaction in its body
    /// (an amount source is configured and a risk rule of the route reads
    /// the amount or currency).
    pub fn needs_transaction(&self, method: &str, path: &str) -> bool {
        let inner = &self.inner;
        let amount_bits = Signal::Amount.bit() | Signal::Currency.bit();
        let Ok(route) = inner.policy.route_index(method, path) else {
            return false;
        };
        (inner.risk.amount.is_some() && inner.policy.signals_read(route) & amount_bits != 0)
            || self.transaction_rule(route).is_some()
    }

    /// The transaction rule of a route, if any.
    fn transaction_rule(&self, route: Option<usize>) -> Option<&TransactionRule> {
        let name = &self.inner.policy.routes().get(route?)?.name;
        self.inner.transactions.as_ref()?.rule_for(name)
    }

    /// Reads a request body for [`Observed::transaction`] and
    /// [`Observed::body`]; a body that cannot be read is a rejection (413
    /// or 400).
    ///
    /// A body is read only as the JSON it says it is: another
    /// `Content-Type`, or any `Content-Encoding`, is refused (415), so the
    /// guard never judges JSON that the application then reads as a form
    /// (or decompresses into something else).
    pub fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<(Option<Transaction>, Option<stepup_core::json::Json>), Rejection> {
        if !body.iter().all(u8::is_ascii_whitespace) && !is_plain_json(headers) {
            return Err(Rejection::plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the body must be application/json (UTF-8, no content encoding)",
            ));
        }
        let refuse = |e: AmountError| match e {
            AmountError::TooLarge(_) => Rejection::plain(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
            e => Rejection::bearer(
                self.inner.realm.as_deref(),
                Some(ErrorCode::InvalidRequest),
                Some(e.to_string()),
            ),
        };
        let json = read_json_body(body, self.max_body_bytes()).map_err(refuse)?;
        let transaction = match (&self.inner.risk.amount, &json) {
            (Some(source), Some(value)) => Some(transaction_of(value, source).map_err(refuse)?),
            (Some(_), None) => Some(Transaction::default()),
            (None, _) => None,
        };
        Ok((transaction, json))
    }

    /// How long the layer waits for a body it reads (routes whose risk
    /// rules read an amount) before answering `408`.
    pub fn body_read_timeout(&self) -> std::time::Duration {
        self.inner.body_read_timeout
    }

    /// The most body bytes [`Guard::read_body`] accepts.
    pub fn max_body_bytes(&self) -> usize {
        self.inner
            .risk
            .amount
            .as_ref()
            .map_or(64 * 1024, |a| a.max_body_bytes)
    }

    /// A transaction-bound route: the token must be approved for this very
    /// call, short-lived, and is used up by it.
    async fn check_transaction(
        &self,
        method: &str,
        path: &str,
        verified: &VerifiedToken,
        observed: &Observed<'_>,
        now: UnixTime,
    ) -> Result<(), Rejection> {
        let inner = &self.inner;
        let Ok(route) = inner.policy.route_index(method, path) else {
            return Ok(());
        };
        let (Some(rule), Some(options)) = (self.transaction_rule(route), inner.transactions.as_ref()) else {
            return Ok(());
        };
        let realm = inner.realm.as_deref();
        let step_up = |description: String| {
            Rejection::bearer(
                realm,
                Some(ErrorCode::InsufficientUserAuthentication),
                Some(description),
            )
        };
        match crate::transaction::matches(
            rule,
            verified.authorization_details.as_ref(),
            observed.body.as_ref(),
        ) {
            Ok(()) => {}
            Err(Mismatch::NoDetails) => {
                return Err(step_up(format!(
                    "this call needs a token approved for this transaction ({} authorization_details)",
                    rule.details_type
                )));
            }
            Err(Mismatch::Field(field)) => {
                return Err(step_up(format!(
                    "the token was approved for another transaction ({field} differs)"
                )));
            }
        }
        let remaining = verified
            .expires_at
            .unwrap_or(i64::MAX)
            .saturating_sub(now.seconds());
        if remaining > rule.max_token_seconds {
            return Err(step_up("a transaction token must be short-lived".into()));
        }
        let Some(jti) = verified.token_id.as_deref() else {
            return Err(Rejection::bearer(
                realm,
                Some(ErrorCode::InvalidToken),
                Some("a transaction token needs a jti".into()),
            ));
        };
        let ttl = u64::try_from(remaining.max(1)).unwrap_or(1);
        match options
            .used
            .first_use(&format!("txn:{jti}"), ttl, now.seconds())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(Rejection::bearer(
                realm,
                Some(ErrorCode::InvalidToken),
                Some("this transaction token was already used".into()),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "transaction token store unavailable");
                Err(Rejection {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    challenge: None,
                    rule: None,
                    dpop_nonce: None,
                })
            }
        }
    }

    /// [`Guard::check`] with what was observed of the request, for the
    /// policy's risk rules.
    pub async fn check_observed(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        observed: &Observed<'_>,
    ) -> Result<Arc<VerifiedToken>, Rejection> {
        let token = match self.check_without_io(method, path, headers, observed) {
            Precheck::Done(result) => return result,
            Precheck::NeedsVerification(token) => token,
        };
        let inner = &self.inner;
        let now = inner.clock.now();
        let verified = match inner.cache.get(token, now) {
            Some(v) => v,
            None => {
                let verified = Arc::new(
                    inner
                        .verifier
                        .verify(token, now)
                        .await
                        .map_err(|e| self.verify_rejection(&e))?,
                );
                let until = inner.verifier.cache_until(&verified, now);
                inner.cache.insert(token, Arc::clone(&verified), until, now);
                verified
            }
        };
        let scheme = match access_token(headers) {
            Ok((scheme, _)) => scheme,
            Err(_) => Scheme::Bearer,
        };
        match required_proof_key(scheme, verified.bound_jkt(), verified.confirmation.is_some()) {
            Ok(None) => {}
            Ok(Some(jkt)) => self.check_proof(method, path, headers, token, jkt, now).await?,
            Err(SchemeError::BoundTokenAsBearer) => return Err(self.bound_token_as_bearer(&verified)),
            Err(e) => {
                return Err(Rejection::bearer(
                    inner.realm.as_deref(),
                    Some(ErrorCode::InvalidToken),
                    Some(e.to_string()),
                ));
            }
        }
        let mut observed = observed.clone();
        if let Some(jkt) = verified.bound_jkt() {
            // The proof was made with the bound key: that key is the device.
            observed.devices_observed = true;
            observed.device = None;
            observed.proof_key = Some(jkt.to_owned());
        }
        let allowed = self.decide_as(method, path, Arc::clone(&verified), now, &observed, scheme)?;
        // Only a call that passes uses its transaction token up.
        self.check_transaction(method, path, &verified, &observed, now)
            .await?;
        Ok(allowed)
    }

    /// The DPoP proof of a request with a token bound to `jkt`: the
    /// stateless checks, the server nonce if required, and first use.
    async fn check_proof(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        token: &str,
        jkt: &str,
        now: UnixTime,
    ) -> Result<(), Rejection> {
        let inner = &self.inner;
        let realm = inner.realm.as_deref();
        let Some(options) = &inner.dpop else {
            return Err(Rejection::bearer(
                realm,
                Some(ErrorCode::InvalidRequest),
                Some("DPoP is not accepted here".into()),
            ));
        };
        let refuse = |error: &str, description: String, nonce: Option<String>| {
            Rejection::dpop(realm, options.algs(), error, description, nonce)
        };
        let proof = match single_proof(headers.get_all("dpop").iter().map(http::HeaderValue::as_bytes)) {
            Ok(Some(proof)) => proof,
            Ok(None) => {
                return Err(refuse(
                    "invalid_dpop_proof",
                    "a DPoP proof is required".into(),
                    None,
                ));
            }
            Err(e) => return Err(refuse("invalid_dpop_proof", e.to_string(), None)),
        };
        let uri = format!("{}{path}", options.origin);
        let accepted = options.nonces.as_ref().map(|n| n.accepted_at(now.seconds()));
        let context = ProofContext {
            method,
            uri: &uri,
            access_token: Some(token),
            bound_jkt: Some(jkt),
            nonce: None,
        };
        let result = verify_proof_with_nonces(
            proof,
            &context,
            accepted.as_ref().map(|a| a.as_slice()),
            &options.policy,
            now,
        );
        let verified = match result {
            Ok(v) => v,
            Err(e) => {
                let nonce = (e == stepup_core::dpop::ProofError::NonceRequired)
                    .then(|| options.nonces.as_ref().map(|n| n.current(now.seconds())))
                    .flatten();
                tracing::debug!(error = %e, "DPoP proof refused");
                return Err(refuse(e.code(), e.to_string(), nonce));
            }
        };
        let key = format!("{}:{}", verified.jkt, verified.jti);
        match options
            .replay
            .first_use(&key, options.replay_ttl(), now.seconds())
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(refuse(
                "invalid_dpop_proof",
                "this DPoP proof was already used".into(),
                None,
            )),
            Err(e) => {
                tracing::warn!(error = %e, "DPoP replay cache unavailable");
                Err(Rejection {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    challenge: None,
                    rule: None,
                    dpop_nonce: None,
                })
            }
        }
    }

    /// Everything that can be settled without I/O: the header, and for a
    /// token already in the cache the whole decision. The layer uses this to
    /// serve trusted repeat calls without allocating a future.
    pub(crate) fn check_without_io<'h>(
        &self,
        method: &str,
        path: &str,
        headers: &'h HeaderMap,
        observed: &Observed<'_>,
    ) -> Precheck<'h> {
        let inner = &self.inner;
        let realm = inner.realm.as_deref();
        let token = match access_token(headers) {
            // Every DPoP request carries a new proof to check.
            Ok((Scheme::Dpop, token)) => return Precheck::NeedsVerification(token),
            Ok((Scheme::Bearer, token)) => token,
            // RFC 6750 §3.1: no error code when the request has no (bearer) credentials.
            Err(AuthorizationError::Missing | AuthorizationError::OtherScheme) => {
                return Precheck::Done(Err(Rejection::bearer(realm, None, None)));
            }
            Err(e @ (AuthorizationError::Multiple | AuthorizationError::Malformed)) => {
                let description = Some(e.description().to_owned());
                return Precheck::Done(Err(Rejection::bearer(
                    realm,
                    Some(ErrorCode::InvalidRequest),
                    description,
                )));
            }
        };
        let now = inner.clock.now();
        // A transaction-bound route is settled by check_observed (the token
        // is used up there).
        if inner
            .policy
            .route_index(method, path)
            .is_ok_and(|r| self.transaction_rule(r).is_some())
        {
            return Precheck::NeedsVerification(token);
        }
        match inner.cache.get(token, now) {
            Some(verified) if verified.confirmation.is_some() => {
                Precheck::Done(Err(self.bound_token_as_bearer(&verified)))
            }
            Some(verified) => {
                Precheck::Done(self.decide_as(method, path, verified, now, observed, Scheme::Bearer))
            }
            None => Precheck::NeedsVerification(token),
        }
    }

    fn decide_as(
        &self,
        method: &str,
        path: &str,
        verified: Arc<VerifiedToken>,
        now: UnixTime,
        observed: &Observed<'_>,
        scheme: Scheme,
    ) -> Result<Arc<VerifiedToken>, Rejection> {
        let inner = &self.inner;
        let activity = inner.risk.activity.as_deref();
        let subject = verified.subject.as_deref();
        let seen = activity.zip(subject).map(|(store, subject)| {
            let sighting = Sighting {
                subject,
                ip: observed.client_ip,
                coordinates: observed.geo.coordinates,
                at: now.seconds(),
            };
            (store.record(&sighting), store.options())
        });
        let signals = risk::signals(observed, &verified, seen);
        let decision = inner
            .policy
            .decide_with(method, path, &verified.facts(), &signals, now)
            .map_err(|e| {
                Rejection::bearer(
                    inner.realm.as_deref(),
                    Some(ErrorCode::InvalidRequest),
                    Some(e.to_string()),
                )
            })?;
        let challenge = decision.challenge();
        if !decision.fired.is_empty() {
            audit(&decision, &signals, &verified, observed, challenge.is_none());
        }
        let Some(mut challenge) = challenge else {
            return Ok(verified);
        };
        if let (Some(store), Some(subject), Verdict::StepUp { .. }) = (activity, subject, &decision.verdict) {
            store.record_failed_step_up(subject, now.seconds());
        }
        challenge.realm = inner.realm.clone();
        if scheme == Scheme::Dpop {
            challenge.scheme = TokenScheme::DPoP;
            challenge.algs = inner.dpop.as_ref().map(DpopOptions::algs);
        }
        let status = challenge
            .error
            .as_ref()
            .and_then(|e| StatusCode::from_u16(e.status()).ok())
            .unwrap_or(StatusCode::UNAUTHORIZED);
        tracing::debug!(rule = %decision.rule.name, status = status.as_u16(), "step-up guard rejected a request");
        Err(Rejection {
            status,
            challenge: Some(Box::new(challenge)),
            rule: Some(decision.rule.name.clone()),
            dpop_nonce: None,
        })
    }

    /// A key-bound token that came as a bearer token: refused (RFC 9449
    /// §7.2), with a `DPoP` challenge when it is bound to a DPoP key and
    /// proofs are accepted here (§7.1: the client learns which scheme, and
    /// which algorithms, to use).
    fn bound_token_as_bearer(&self, verified: &VerifiedToken) -> Rejection {
        match (&self.inner.dpop, verified.bound_jkt()) {
            (Some(options), Some(_)) => Rejection::dpop(
                self.inner.realm.as_deref(),
                options.algs(),
                "invalid_token",
                VerifyError::SenderConstrained.public_description(),
                None,
            ),
            _ => self.verify_rejection(&VerifyError::SenderConstrained),
        }
    }

    fn verify_rejection(&self, e: &VerifyError) -> Rejection {
        if e.is_token_fault() {
            tracing::debug!(error = %e, "access token rejected");
            Rejection::bearer(
                self.inner.realm.as_deref(),
                Some(ErrorCode::InvalidToken),
                Some(e.public_description()),
            )
        } else {
            tracing::warn!(error = %e, "token verification unavailable");
            Rejection {
                status: StatusCode::SERVICE_UNAVAILABLE,
                challenge: None,
                rule: None,
                dpop_nonce: None,
            }
        }
    }
}

/// Whether a request's body is declared as plain JSON: one `Content-Type`,
/// `application/json` or a `+json` type, with no charset or UTF-8, and no
/// `Content-Encoding` (other than `identity`).
fn is_plain_json(headers: &http::HeaderMap) -> bool {
    let encoded = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let mut types = headers.get_all(http::header::CONTENT_TYPE).iter();
    let (Some(declared), None) = (types.next(), types.next()) else {
        return false;
    };
    let Ok(declared) = declared.to_str() else {
        return false;
    };
    let mut parts = declared.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json") && sub.len() > "+json".len());
    let utf8 = parts.all(|p| match p.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => false,
    });
    !encoded && json && utf8
}

/// The audit event of a decision where risk rules fired: who, from where,
/// which rules, and the outcome (JSON with a JSON tracing subscriber).
fn audit(
    decision: &stepup_core::Decision<'_>,
    signals: &Signals<'_>,
    token: &VerifiedToken,
    observed: &Observed<'_>,
    allowed: bool,
) {
    let fired: Vec<&str> = decision.fired.iter().map(|r| r.name.as_str()).collect();
    tracing::info!(
        target: "stepup::audit",
        subject = token.subject.as_deref().unwrap_or(""),
        route = %decision.rule.name,
        fired = ?fired,
        outcome = if allowed { "allowed" } else { "step-up" },
        client_ip = ?observed.client_ip,
        country = signals.country.unwrap_or(""),
        auth_country = signals.auth_country.unwrap_or(""),
        amount = ?signals.amount,
        currency = signals.currency.unwrap_or(""),
        device_changed = ?signals.text(Signal::DeviceChanged),
        "risk rules fired"
    );
}

/// Options for a [`Guard`].
pub struct GuardBuilder {
    policy: Arc<Policy>,
    verifier: TokenVerifier,
    cache_capacity: usize,
    clock: Arc<dyn Clock>,
    realm: Option<String>,
    risk: RiskOptions,
    dpop: Option<DpopOptions>,
    transactions: Option<TransactionOptions>,
    body_read_timeout: std::time::Duration,
    resource_metadata: Option<ServedMetadata>,
}

impl GuardBuilder {
    /// How many verified tokens to remember (0 disables the cache).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The clock to read the time from.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The `realm` to put in challenges.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// Routes whose calls need a token approved for exactly that
    /// transaction (RFC 9396), used once.
    pub fn transactions(mut self, transactions: TransactionOptions) -> Self {
        self.transactions = Some(transactions);
        self
    }

    /// Accept DPoP-bound tokens with proofs (RFC 9449).
    pub fn dpop(mut self, dpop: DpopOptions) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// What to observe of requests for the policy's risk rules.
    pub fn risk(mut self, risk: RiskOptions) -> Self {
        self.risk = risk;
        self
    }

    /// How long a client has to send a body the guard reads (routes whose
    /// risk rules read an amount); 30 s unless set. A body still arriving
    /// then is answered `408`.
    pub fn body_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// Describes the resource (RFC 9728): the guard serves `metadata` at
    /// its well-known path (made from `metadata.resource`) to anyone, and
    /// names that URL in every challenge, so that a client checks the
    /// resource and its authorization servers before it follows one. Fails
    /// when the resource identifier is not an `https` URL (or `http` on
    /// loopback) without query or fragment.
    pub fn resource_metadata(mut self, metadata: &ResourceMetadata) -> Result<Self, ResourceIdentifierError> {
        let (url, path) = stepup_core::resource_metadata::metadata_url(&metadata.resource)?;
        let body = serde_json::to_vec(metadata).unwrap_or_default();
        self.resource_metadata = Some(ServedMetadata {
            path,
            url: url.to_string(),
            body: body.into(),
        });
        Ok(self)
    }

    /// The guard.
    pub fn build(self) -> Guard {
        Guard {
            inner: Arc::new(GuardInner {
                policy: self.policy,
                verifier: self.verifier,
                cache: TokenCache::new(self.cache_capacity),
                clock: self.clock,
                realm: self.realm,
                risk: self.risk,
                dpop: self.dpop,
                transactions: self.transactions,
                body_read_timeout: self.body_read_timeout,
                resource_metadata: self.resource_metadata,
            }),
        }
    }
}
