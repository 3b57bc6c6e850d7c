//! Hostile actors: each attack tries one way in and says whether it was
//! refused the way it should be. An attack that gets through is a failure
//! of the deployment, and fails the simulation.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};
use stepup_core::dpop::{ProofClaims, sign_proof};
use stepup_core::jwk::Jwk;
use stepup_core::jws::{SigningHeader, SigningKey, sign_compact};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use url::Url;

use stepup_client::{FormUser as VirtualUser, LOOPBACK_REDIRECT as REDIRECT};

/// The outcome of one attack.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// Its name (kebab-case).
    pub(crate) name: &'static str,
    /// The family it belongs to.
    pub(crate) kind: &'static str,
    /// Whether the deployment refused it as it should.
    pub(crate) blocked: bool,
    /// What should happen, and what did; or why it was not run.
    pub(crate) detail: String,
    /// False when this target cannot stage it (see [`Target`]).
    pub(crate) ran: bool,
}

/// What attacks need: where things are, and users to play victims.
pub(crate) struct Target {
    pub(crate) issuer: String,
    pub(crate) api: String,
    /// The same API behind the gateway, when the target has one.
    pub(crate) gateway: Option<String>,
    pub(crate) authorization_endpoint: Url,
    pub(crate) token_endpoint: String,
    pub(crate) jwks: Value,
    /// A victim whose tokens are stolen.
    pub(crate) victim: VirtualUser,
    /// A user whose sign-in is brute-forced (locked afterwards).
    pub(crate) brute_force_target: VirtualUser,
    /// A user whose TOTP codes are replayed.
    pub(crate) code_reuse_target: VirtualUser,
    /// A user with nothing but a password, when the target has one.
    pub(crate) password_only: Option<VirtualUser>,
    pub(crate) client_id: String,
    pub(crate) other_client_id: String,
    /// The same authorization server two hours in the past, and in the
    /// future: its tokens are expired, or not valid yet (the demo only:
    /// another deployment's clock is its own).
    pub(crate) past_server: Option<String>,
    pub(crate) future_server: Option<String>,
    /// Whether the deployment locates the simulation's addresses
    /// (`X-Forwarded-For` from it believed, countries from its table).
    pub(crate) locates_addresses: bool,
}

fn random(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    let _ = SystemRandom::new().fill(&mut bytes);
    bytes
}

/// 32 random bytes, base64url: 43 characters (a valid PKCE verifier).
fn random_text() -> String {
    B64.encode(random(32))
}

/// A PKCE pair (RFC 7636, S256).
struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = random_text();
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    Pkce {
        challenge: B64.encode(digest.as_ref()),
        verifier,
    }
}

impl Target {
    /// The `error` a payment authorization request with `details`
    /// (`authorization_details`) is answered with, if any.
    async fn details_error(&self, details: &str) -> Result<Option<String>, String> {
        let url = self.authorize_url(
            "openid payments:write",
            Some(&pkce()),
            &[("authorization_details", details)],
        );
        let (_, location) = first_answer(&no_redirects()?, url).await?;
        Ok(Url::parse(&location).ok().and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "error")
                .map(|(_, v)| v.into_owned())
        }))
    }

    /// An authorization URL of the public CLI client.
    fn authorize_url(&self, scope: &str, pkce: Option<&Pkce>, extra: &[(&str, &str)]) -> Url {
        let mut url = self.authorization_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", REDIRECT)
                .append_pair("scope", scope)
                .append_pair("state", &random_text());
            if let Some(p) = pkce {
                q.append_pair("code_challenge", &p.challenge)
                    .append_pair("code_challenge_method", "S256");
            }
            for (k, v) in extra {
                q.append_pair(k, v);
            }
        }
        url
    }

    /// Signs `user` in for `scope` (and `extra` parameters): the code and
    /// its verifier.
    async fn code(
        &self,
        user: &VirtualUser,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> Result<(String, Pkce), String> {
        let pkce = pkce();
        let back = user
            .sign_in(self.authorize_url(scope, Some(&pkce), extra))
            .await?;
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| format!("no code in {back}"))?;
        Ok((code, pkce))
    }

    /// The victim, whose browser session a hostile client uses, signs in
    /// as a request for `payments:write` (and `extra`) asks, but never
    /// approves the page: whether no code came back, and what did.
    async fn code_without_approval(
        &self,
        what: &str,
        extra: &[(&str, &str)],
    ) -> Result<(bool, String), String> {
        let pkce = pkce();
        let url = self.authorize_url("openid accounts:read payments:write", Some(&pkce), extra);
        let mut waited = Duration::ZERO;
        let reached = self
            .victim
            .drive(url, 8, |field| (field != "approve").then_some(None), &mut waited)
            .await?;
        let issued = matches!(&reached, stepup_client::Reached::Client(u) if u.query_pairs().any(|(k, _)| k == "code"));
        Ok((
            !issued,
            format!("{what} nobody approved: expected the approval page and no code, got {reached:?}"),
        ))
    }

    /// A token request; the status and the JSON answer.
    async fn token(&self, form: &[(&str, &str)], dpop: Option<String>) -> Result<(u16, Value), String> {
        token_at(&self.token_endpoint, form, dpop).await
    }

    /// The victim's access token from `skewed`, an instance of the server
    /// whose clock is off (a genuine token, signed with the same keys), and
    /// the status of a `GET url` with it.
    async fn victim_token_from_skewed_clock(&self, skewed: &str, url: &str) -> Result<(String, u16), String> {
        let token = self.access_token_from(skewed, &self.victim).await?;
        let status = call(
            reqwest::Method::GET,
            url,
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await?;
        Ok((token, status))
    }

    /// An access token of `user` from another instance of the server
    /// (`base`): the same flow against its endpoints.
    async fn access_token_from(&self, base: &str, user: &VirtualUser) -> Result<String, String> {
        let pkce = pkce();
        let mut url = self.authorize_url("openid accounts:read", Some(&pkce), &[]);
        let main = self.authorization_endpoint.origin().ascii_serialization();
        url = Url::parse(&url.as_str().replacen(&main, base, 1)).map_err(|e| e.to_string())?;
        let back = user.sign_in(url).await?;
        let code = back
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| format!("no code in {back}"))?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", self.client_id.as_str()),
            ("code_verifier", pkce.verifier.as_str()),
        ];
        let (status, body) = token_at(&format!("{base}/token"), &form, None).await?;
        body["access_token"]
            .as_str()
            .filter(|_| status == 200)
            .map(str::to_owned)
            .ok_or_else(|| format!("token request answered {status}: {body}"))
    }

    /// A code exchanged by `client_id`, with a DPoP proof if given.
    async fn exchange(
        &self,
        code: &str,
        client_id: &str,
        verifier: &str,
        dpop: Option<String>,
    ) -> Result<(u16, Value), String> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ];
        self.token(&form, dpop).await
    }

    /// The code exchanged for tokens.
    async fn tokens(&self, user: &VirtualUser, scope: &str, extra: &[(&str, &str)]) -> Result<Value, String> {
        let (code, pkce) = self.code(user, scope, extra).await?;
        let (status, body) = self
            .exchange(&code, &self.client_id, &pkce.verifier, None)
            .await?;
        if status != 200 {
            return Err(format!("token request answered {status}: {body}"));
        }
        Ok(body)
    }

    async fn access_token(
        &self,
        user: &VirtualUser,
        scope: &str,
        extra: &[(&str, &str)],
    ) -> Result<String, String> {
        let body = self.tokens(user, scope, extra).await?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no access_token in {body}"))
    }
}

/// A token request to `endpoint`; the status and the JSON answer.
async fn token_at(
    endpoint: &str,
    form: &[(&str, &str)],
    dpop: Option<String>,
) -> Result<(u16, Value), String> {
    let mut request = reqwest::Client::new().post(endpoint).form(form);
    if let Some(proof) = dpop {
        request = request.header("DPoP", proof);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

/// A call to the API with `authorization`; the status.
async fn call(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Result<u16, String> {
    let mut request = reqwest::Client::new().request(method, url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if let Some(b) = body {
        request = request.json(&b);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

fn refused(status: u16) -> bool {
    matches!(status, 400 | 401 | 403 | 413 | 431)
}

/// A JWT from `header` and `claims` with `signature` (raw bytes).
fn jwt(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(signature)
    )
}

fn claims_of(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|p| B64.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

const MFA: &str = "urn:stepup:acr:mfa";
pub(crate) const PAYEE: &str = "/accounts/42/payees";

pub(crate) fn payee() -> Value {
    json!({"name": "Mallory", "iban": "GB33BUKB20201555555555"})
}

/// Runs every attack, one after the other; `progress` is told after each.
pub(crate) async fn run_all(t: &Target, progress: &(dyn Fn(&Attempt) + Sync)) -> Vec<Attempt> {
    let mut out = Vec::new();
    macro_rules! attack {
        ($name:literal, $kind:literal, $body:expr) => {{
            let result: Result<(bool, String), String> = $body.await;
            let attempt = match result {
                Ok((blocked, detail)) => Attempt {
                    name: $name,
                    kind: $kind,
                    blocked,
                    detail,
                    ran: true,
                },
                // The attack could not even be set up: count it as not
                // blocked, so that a broken harness cannot look safe.
                Err(e) => Attempt {
                    name: $name,
                    kind: $kind,
                    blocked: false,
                    detail: format!("could not run: {e}"),
                    ran: true,
                },
            };
            progress(&attempt);
            out.push(attempt);
        }};
    }
    // An attack this target cannot stage: listed, neither blocked nor
    // through.
    macro_rules! not_run {
        ($name:literal, $kind:literal, $why:expr) => {{
            out.push(Attempt {
                name: $name,
                kind: $kind,
                blocked: false,
                detail: $why.to_owned(),
                ran: false,
            });
        }};
    }

    // Slow clients take seconds to be found out: they hold their
    // connections while the other attacks run.
    let mut slow_clients = vec![("authorization server", t.issuer.clone()), ("API", t.api.clone())];
    if let Some(gateway) = &t.gateway {
        slow_clients.push(("gateway", gateway.clone()));
    }
    // Over TLS a plaintext half-request is refused at the handshake, which
    // would prove nothing: those are not probed.
    let slow_clients: Vec<_> = slow_clients
        .into_iter()
        .filter(|(_, base)| base.starts_with("http://"))
        .flat_map(|(what, base)| {
            SLOW_OPENINGS.iter().map(move |&(how, opening)| {
                let base = base.clone();
                let probe = tokio::spawn(async move { half_request_held(&base, opening).await });
                (what, how, probe)
            })
        })
        .collect();

    // A stolen password-level token: the victim's, taken from a log.
    let stolen = t.access_token(&t.victim, "openid accounts:read", &[]).await;
    let stolen = stolen.unwrap_or_default();
    let bearer = format!("Bearer {stolen}");
    // The same for the gateway, a resource of its own (RFC 8707): so its
    // attacks are refused for what they try, not for the audience. A
    // deployment whose gateway shares the API's audience gets the API's.
    let gateway_bearer = match &t.gateway {
        Some(gateway) => match t
            .access_token(&t.victim, "openid accounts:read", &[("resource", gateway)])
            .await
        {
            Ok(token) => format!("Bearer {token}"),
            Err(_) => bearer.clone(),
        },
        None => bearer.clone(),
    };
    let payee_url = format!("{}{PAYEE}", t.api);
    let balance_url = format!("{}/accounts/42/balance", t.api);

    attack!("rogue-resource", "token misuse", async {
        super::rogue::play(&t.victim, &t.issuer, &t.client_id, &t.api).await
    });
    attack!("stolen-base-token-critical-call", "token misuse", async {
        let s = payee_with(&payee_url, &bearer).await?;
        Ok((refused(s), format!("expected 401/403 step-up, got {s}")))
    });
    attack!("forged-acr-claim", "token forgery", async {
        let mut parts: Vec<&str> = stolen.split('.').collect();
        let mut claims = elevated(&stolen);
        claims["auth_time"] = json!(chrono_now());
        let forged_payload = B64.encode(claims.to_string());
        if parts.len() != 3 {
            return Err("no stolen token".into());
        }
        parts[1] = &forged_payload;
        let forged = parts.join(".");
        let s = payee_with(&payee_url, &format!("Bearer {forged}")).await?;
        Ok((s == 401, format!("expected 401 invalid_token, got {s}")))
    });
    attack!("alg-none", "token forgery", async {
        let claims = elevated(&stolen);
        let token = format!(
            "{}.{}.",
            B64.encode(json!({"alg": "none", "typ": "at+jwt"}).to_string()),
            B64.encode(claims.to_string())
        );
        let s = payee_with(&payee_url, &format!("Bearer {token}")).await?;
        Ok((s == 401, format!("expected 401, got {s}")))
    });
    attack!("hs256-with-public-key", "token forgery", async {
        let jwk = t.jwks["keys"][0].clone();
        let kid = jwk["kid"].as_str().unwrap_or_default().to_owned();
        let claims = elevated(&stolen);
        let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk.to_string().as_bytes());
        let tag = ring::hmac::sign(&key, signing_input.as_bytes());
        let token = format!("{signing_input}.{}", B64.encode(tag.as_ref()));
        let s = payee_with(&payee_url, &format!("Bearer {token}")).await?;
        Ok((s == 401, format!("expected 401, got {s}")))
    });
    let attacker_key = SigningKey::generate_es256(&SystemRandom::new()).map_err(|e| e.to_string());
    attack!("self-signed-token", "token forgery", async {
        let key = attacker_key.as_ref().map_err(Clone::clone)?;
        let kid = t.jwks["keys"][0]["kid"].as_str().unwrap_or("k").to_owned();
        let claims = elevated(&stolen);
        let token = sign_compact(
            &SigningHeader::new().typ("at+jwt").kid(&kid),
            claims.to_string().as_bytes(),
            key,
            &SystemRandom::new(),
        )
        .map_err(|e| e.to_string())?;
        let s = payee_with(&payee_url, &format!("Bearer {token}")).await?;
        Ok((s == 401, format!("expected 401, got {s}")))
    });
    attack!("embedded-jwk-header", "token forgery", async {
        let key = attacker_key.as_ref().map_err(Clone::clone)?;
        let jwk = key.public_jwk(None);
        let claims = elevated(&stolen);
        let token = sign_compact(
            &SigningHeader::new().typ("at+jwt").jwk(&jwk),
            claims.to_string().as_bytes(),
            key,
            &SystemRandom::new(),
        )
        .map_err(|e| e.to_string())?;
        let s = payee_with(&payee_url, &format!("Bearer {token}")).await?;
        Ok((s == 401, format!("expected 401, got {s}")))
    });
    attack!("jku-header-injection", "token forgery", async {
        let claims = elevated(&stolen);
        let header = json!({"alg": "ES256", "typ": "at+jwt", "jku": "https://attacker.example/jwks.json", "kid": "evil"});
        let token = jwt(&header, &claims, &random(64));
        let s = payee_with(&payee_url, &format!("Bearer {token}")).await?;
        Ok((s == 401, format!("expected 401, got {s}")))
    });
    attack!("expired-claim-edited", "token forgery", async {
        let mut claims = claims_of(&stolen);
        claims["exp"] = json!(chrono_now() + 86_400 * 365);
        let parts: Vec<&str> = stolen.split('.').collect();
        if parts.len() != 3 {
            return Err("no stolen token".into());
        }
        let token = format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2]);
        let s = call(
            reqwest::Method::GET,
            &format!("{}/accounts/42/balance", t.api),
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await?;
        Ok((
            s == 401,
            format!("a token whose exp was pushed a year out: expected 401, got {s}"),
        ))
    });
    if t.locates_addresses {
        attack!("token-from-another-country", "token misuse", async {
            // The victim signed in from home; the thief reads the balance with
            // the stolen token from another country: the policy's "signed in
            // elsewhere" rule asks for a fresh second factor.
            let at = |ip: &'static str| {
                let bearer = bearer.clone();
                let url = balance_url.clone();
                async move {
                    call(
                        reqwest::Method::GET,
                        &url,
                        &[("authorization", &bearer), ("x-forwarded-for", ip)],
                        None,
                    )
                    .await
                }
            };
            let home = at(super::HOME_ADDRESS).await?;
            let abroad = at(super::FOREIGN_ADDRESS).await?;
            Ok((
                home == 200 && abroad == 401,
                format!("expected 200 from home and a 401 step-up from abroad, got {home} and {abroad}"),
            ))
        });
        attack!("forwarded-spoof-behind-proxy", "header spoofing", async {
            // The thief abroad, behind the deployment's proxy (which appends
            // X-Forwarded-For, as nginx does, and passes other headers on),
            // writes a Forwarded header claiming the victim's home address.
            let at = |headers: Vec<(&'static str, String)>| {
                let bearer = bearer.clone();
                let url = balance_url.clone();
                async move {
                    let mut sent: Vec<(&str, &str)> = vec![("authorization", bearer.as_str())];
                    sent.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
                    call(reqwest::Method::GET, &url, &sent, None).await
                }
            };
            let home = at(vec![("x-forwarded-for", super::HOME_ADDRESS.to_owned())]).await?;
            let spoofed = at(vec![
                ("forwarded", format!("for={}", super::HOME_ADDRESS)),
                ("x-forwarded-for", super::FOREIGN_ADDRESS.to_owned()),
            ])
            .await?;
            Ok((
                home == 200 && spoofed == 401,
                format!(
                    "a client's Forwarded must not move it home: expected 200 from home and a 401 step-up from abroad, got {home} and {spoofed}"
                ),
            ))
        });
    } else {
        not_run!(
            "token-from-another-country",
            "token misuse",
            "the deployment does not locate the simulation's addresses (the demo only)"
        );
        not_run!(
            "forwarded-spoof-behind-proxy",
            "header spoofing",
            "the deployment does not locate the simulation's addresses (the demo only)"
        );
    }
    if let Some(past) = &t.past_server {
        attack!("expired-token", "token misuse", async {
            // A real token, stolen from a log two hours ago.
            let (token, s) = t.victim_token_from_skewed_clock(past, &balance_url).await?;
            let exp = claims_of(&token)["exp"].as_i64().unwrap_or(i64::MAX);
            if exp >= chrono_now() {
                return Err(format!("the old token is not expired (exp {exp})"));
            }
            Ok((
                s == 401,
                format!("a validly signed token that expired: expected 401, got {s}"),
            ))
        });
    } else {
        not_run!(
            "expired-token",
            "token misuse",
            "needs a server whose clock runs behind (the demo only)"
        );
    }
    if let Some(future) = &t.future_server {
        attack!("not-yet-valid-token", "token misuse", async {
            // A real token from a server whose clock runs two hours ahead.
            let (_, s) = t.victim_token_from_skewed_clock(future, &balance_url).await?;
            Ok((
                s == 401,
                format!("a validly signed token issued in the future: expected 401, got {s}"),
            ))
        });
    } else {
        not_run!(
            "not-yet-valid-token",
            "token misuse",
            "needs a server whose clock runs ahead (the demo only)"
        );
    }
    attack!("token-in-query-string", "token misuse", async {
        let s = call(
            reqwest::Method::GET,
            &format!("{}/accounts/42/balance?access_token={stolen}", t.api),
            &[],
            None,
        )
        .await?;
        Ok((
            s == 401,
            format!("expected 401 (tokens only in the Authorization header), got {s}"),
        ))
    });
    if let Some(gateway) = &t.gateway {
        attack!("spoofed-identity-headers-at-gateway", "header spoofing", async {
            let url = format!("{gateway}{PAYEE}");
            let s = call(
                reqwest::Method::POST,
                &url,
                &[
                    ("authorization", &gateway_bearer),
                    ("x-stepup-acr", MFA),
                    ("x-stepup-subject", "admin"),
                    ("x-stepup-auth-time", "9999999999"),
                ],
                Some(payee()),
            )
            .await?;
            Ok((refused(s), format!("expected the gateway's 401/403, got {s}")))
        });
    } else {
        not_run!(
            "spoofed-identity-headers-at-gateway",
            "header spoofing",
            "the target has no gateway"
        );
    }
    attack!("x-forwarded-for-spoofing", "header spoofing", async {
        let s = call(
            reqwest::Method::POST,
            &payee_url,
            &[
                ("authorization", &bearer),
                ("x-forwarded-for", "10.0.0.1"),
                ("forwarded", "for=10.0.0.1"),
            ],
            Some(payee()),
        )
        .await?;
        Ok((
            refused(s),
            format!("a claimed internal address changes nothing: expected 401/403, got {s}"),
        ))
    });

    // Sender-constrained tokens (RFC 9449).
    let dpop_key = SigningKey::generate_es256(&SystemRandom::new()).map_err(|e| e.to_string());
    let bound = async {
        let key = dpop_key.as_ref().map_err(Clone::clone)?;
        let jkt = Jwk::from_json_value(&key.public_jwk(None))
            .map_err(|e| e.to_string())?
            .thumbprint_sha256();
        let (code, pkce) = t
            .code(&t.victim, "openid accounts:read", &[("dpop_jkt", jkt.as_str())])
            .await?;
        let proof = proof(key, "POST", &t.token_endpoint, None)?;
        let (status, body) = t
            .exchange(&code, &t.client_id, &pkce.verifier, Some(proof))
            .await?;
        if status != 200 || body["token_type"] != "DPoP" {
            return Err(format!("no DPoP-bound token: {status} {body}"));
        }
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no token".to_owned())
    }
    .await;
    let balance = format!("{}/accounts/42/balance", t.api);
    attack!("dpop-bound-token-as-bearer", "sender constraint", async {
        let token = bound.as_ref().map_err(Clone::clone)?;
        let s = call(
            reqwest::Method::GET,
            &balance,
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await?;
        Ok((
            s == 401,
            format!("a stolen DPoP-bound token without its key: expected 401, got {s}"),
        ))
    });
    attack!("dpop-proof-replay", "sender constraint", async {
        let token = bound.as_ref().map_err(Clone::clone)?;
        let key = dpop_key.as_ref().map_err(Clone::clone)?;
        let p = proof(key, "GET", &balance, Some(token))?;
        let first = dpop_get(&balance, token, &p).await?;
        let second = dpop_get(&balance, token, &p).await?;
        Ok((
            first == 200 && second == 401,
            format!("expected 200 then 401 for the replayed proof, got {first} then {second}"),
        ))
    });
    attack!("dpop-proof-other-key", "sender constraint", async {
        let token = bound.as_ref().map_err(Clone::clone)?;
        let key = attacker_key.as_ref().map_err(Clone::clone)?;
        let p = proof(key, "GET", &balance, Some(token))?;
        let s = dpop_get(&balance, token, &p).await?;
        Ok((
            s == 401,
            format!("a proof by the thief's key: expected 401, got {s}"),
        ))
    });
    attack!("dpop-proof-other-url", "sender constraint", async {
        let token = bound.as_ref().map_err(Clone::clone)?;
        let key = dpop_key.as_ref().map_err(Clone::clone)?;
        let p = proof(
            key,
            "GET",
            &format!("{}/accounts/42/transactions", t.api),
            Some(token),
        )?;
        let s = dpop_get(&balance, token, &p).await?;
        Ok((
            s == 401,
            format!("a proof made for another URL: expected 401, got {s}"),
        ))
    });

    // The authorization server's flows.
    attack!("replayed-authorization-code", "authorization code", async {
        let (code, pkce) = t.code(&t.victim, "openid accounts:read", &[]).await?;
        let (first, _) = t.exchange(&code, &t.client_id, &pkce.verifier, None).await?;
        let (second, body) = t.exchange(&code, &t.client_id, &pkce.verifier, None).await?;
        Ok((
            first == 200 && second == 400 && body["error"] == "invalid_grant",
            format!("expected 200 then 400 invalid_grant, got {first} then {second} {body}"),
        ))
    });
    attack!("code-with-wrong-verifier", "authorization code", async {
        let (code, _) = t.code(&t.victim, "openid accounts:read", &[]).await?;
        let wrong = random_text();
        let (s, body) = t.exchange(&code, &t.client_id, &wrong, None).await?;
        Ok((
            s == 400 && body["error"] == "invalid_grant",
            format!("expected 400 invalid_grant, got {s} {body}"),
        ))
    });
    attack!("code-for-another-client", "authorization code", async {
        let (code, pkce) = t.code(&t.victim, "openid accounts:read", &[]).await?;
        let (s, body) = t
            .exchange(&code, &t.other_client_id, &pkce.verifier, None)
            .await?;
        Ok((refused(s), format!("expected 400/401, got {s} {body}")))
    });
    attack!("missing-pkce", "authorization request", async {
        let back = t
            .victim
            .sign_in(t.authorize_url("openid accounts:read", None, &[]))
            .await;
        let issued = back
            .as_ref()
            .is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "code"));
        Ok((
            !issued,
            format!("expected no code without code_challenge, got {back:?}"),
        ))
    });
    attack!("pkce-plain-method", "authorization request", async {
        let verifier = random_text();
        let back = t
            .victim
            .sign_in(t.authorize_url(
                "openid accounts:read",
                None,
                &[("code_challenge", &verifier), ("code_challenge_method", "plain")],
            ))
            .await;
        let issued = back
            .as_ref()
            .is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "code"));
        Ok((
            !issued,
            format!("expected no code with method plain, got {back:?}"),
        ))
    });
    attack!("unregistered-redirect-uri", "authorization request", async {
        let pkce = pkce();
        let mut url = t.authorize_url("openid accounts:read", Some(&pkce), &[]);
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "redirect_uri" {
                    "https://attacker.example/cb".to_owned()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let (status, location) = first_answer(t.victim.browser(), url).await?;
        Ok((
            !location.starts_with("https://attacker.example"),
            format!(
                "expected an error page, no redirect to the attacker; status {status} location {location:?}"
            ),
        ))
    });
    attack!("step-up-with-prompt-none", "authorization request", async {
        let pkce = pkce();
        let url = t.authorize_url(
            "openid accounts:read",
            Some(&pkce),
            &[("acr_values", "urn:stepup:acr:phr"), ("prompt", "none")],
        );
        let (_, location) = first_answer(t.victim.browser(), url).await?;
        let issued = Url::parse(&location).is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "code"));
        Ok((
            !issued,
            format!("a higher level without interaction: expected an error, got {location:?}"),
        ))
    });
    attack!("reused-refresh-token", "refresh token", async {
        let body = t.tokens(&t.victim, "openid accounts:read", &[]).await?;
        let old = body["refresh_token"]
            .as_str()
            .ok_or("no refresh token")?
            .to_owned();
        let refresh = |token: String| {
            let client_id = t.client_id.clone();
            async move {
                t.token(
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &token),
                        ("client_id", &client_id),
                    ],
                    None,
                )
                .await
            }
        };
        let (first, rotated) = refresh(old.clone()).await?;
        let new = rotated["refresh_token"].as_str().unwrap_or_default().to_owned();
        let (reuse, _) = refresh(old).await?;
        // Reuse revokes the family: the rotated token dies too.
        let (after, _) = refresh(new).await?;
        Ok((
            first == 200 && reuse == 400 && after == 400,
            format!(
                "expected 200, then 400 for the reuse and 400 for the family, got {first}, {reuse}, {after}"
            ),
        ))
    });
    attack!("refresh-token-other-client", "refresh token", async {
        let body = t.tokens(&t.victim, "openid accounts:read", &[]).await?;
        let token = body["refresh_token"]
            .as_str()
            .ok_or("no refresh token")?
            .to_owned();
        let (s, b) = t
            .token(
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", &t.other_client_id),
                ],
                None,
            )
            .await?;
        Ok((refused(s), format!("expected 400/401, got {s} {b}")))
    });

    // Sign-in.
    attack!("totp-code-reuse", "sign-in", async {
        let user = &t.code_reuse_target;
        // A sign-in at mfa uses the current code.
        let _ = t
            .code(user, "openid accounts:read", &[("acr_values", MFA)])
            .await?;
        let used = user.last_code().ok_or("no code used")?;
        let again = t.authorize_url(
            "openid accounts:read",
            Some(&pkce()),
            &[("prompt", "login"), ("acr_values", MFA)],
        );
        let refused = user.replay_code(&again, &used).await?;
        Ok((refused, "a code already used is refused in a new sign-in".into()))
    });
    attack!("swapped-account-step-up", "sign-in", async {
        // The attacker's own account: one whose factors the simulation
        // holds (its codes are shared with the attack above: each once).
        super::swapped_account::play(&t.victim, &t.code_reuse_target, &t.issuer, &t.client_id, &t.api).await
    });
    attack!("totp-brute-force", "sign-in", async {
        let user = &t.brute_force_target;
        let url = t.authorize_url("openid accounts:read", Some(&pkce()), &[("acr_values", MFA)]);
        let locked = user.brute_force_codes(&url, 8).await?;
        Ok((
            locked,
            "after repeated wrong codes the right one is refused too (locked)".into(),
        ))
    });
    if t.locates_addresses {
        attack!("account-lockout-flood", "flood", async {
            // The brute-force target signed in on its browser above. Wrong
            // passwords at its name, each from a new address, empty the
            // account's bucket (and would lock it): the cheapest way to
            // keep a user from approving a payment.
            let user = &t.brute_force_target;
            // A browser (cookies kept: the sign-in page binds its form to it).
            let browser = reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())?;
            let page = browser
                .get(t.authorize_url("openid", Some(&pkce()), &[]))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            let field = |name| {
                stepup_client::page_hidden(&page, name).ok_or(format!("no {name} on the sign-in page"))
            };
            let (request, csrf) = (field("request")?, field("csrf")?);
            let mut statuses = Vec::new();
            for i in 0..10 {
                let status = browser
                    .post(format!("{}/login/password", t.issuer))
                    .header("x-forwarded-for", format!("198.51.100.{}", 100 + i))
                    .form(&[
                        ("request", request.as_str()),
                        ("csrf", csrf.as_str()),
                        ("username", user.username()),
                        ("password", "guess"),
                    ])
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .status()
                    .as_u16();
                statuses.push(status);
            }
            // The control: the flood works (the right password from a
            // browser the account does not know is refused).
            let url = t.authorize_url("openid", Some(&pkce()), &[("prompt", "login")]);
            let stranger = user
                .on_another_browser(CONTROL_ADDRESS)
                .sign_in(url.clone())
                .await;
            // The user's own browser still signs in.
            let own = user.sign_in(url).await;
            let reached = own
                .as_ref()
                .is_ok_and(|back| back.query_pairs().any(|(k, _)| k == "code"));
            Ok((
                stranger.is_err() && reached,
                format!(
                    "after 10 wrong passwords from 10 addresses (answers {statuses:?}), the right one from an unknown browser is refused and from the user's own browser accepted; got unknown browser {}, own browser {}",
                    stranger.map_or_else(
                        |e| format!("refused ({})", e.chars().take(80).collect::<String>()),
                        |_| "signed in".into()
                    ),
                    own.map_or_else(
                        |e| format!("refused ({})", e.chars().take(120).collect::<String>()),
                        |_| "signed in".into()
                    ),
                ),
            ))
        });
    } else {
        not_run!(
            "account-lockout-flood",
            "flood",
            "the target does not believe the simulation's X-Forwarded-For: the flood would come from one address, slowed as such"
        );
    }
    attack!("login-csrf", "sign-in", async {
        let response = reqwest::Client::new()
            .post(format!("{}/login/password", t.issuer))
            .form(&[
                ("request", "x"),
                ("csrf", "forged"),
                ("username", t.victim.username()),
                ("password", "guess"),
            ])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let s = response.status().as_u16();
        let to_client = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .is_some_and(|l| l.contains("code="));
        Ok((
            !to_client && s >= 400,
            format!("a form posted without the page's CSRF token: expected 4xx, got {s}"),
        ))
    });

    // Transactions (RFC 9396).
    let details =
        json!([{"type": "payment_initiation", "amount": "2500.00", "currency": "EUR", "creditor": "Bob"}])
            .to_string();
    let approved = t
        .access_token(
            &t.victim,
            "openid accounts:read payments:write",
            &[("authorization_details", &details)],
        )
        .await;
    let large = format!("{}/accounts/42/transfers/large", t.api);
    attack!("transaction-token-reused", "transaction", async {
        let token = approved.as_ref().map_err(Clone::clone)?;
        let body = json!({"amount": 2500, "currency": "EUR", "to": "Bob"});
        let first = call(
            reqwest::Method::POST,
            &large,
            &[("authorization", &format!("Bearer {token}"))],
            Some(body.clone()),
        )
        .await?;
        let second = call(
            reqwest::Method::POST,
            &large,
            &[("authorization", &format!("Bearer {token}"))],
            Some(body),
        )
        .await?;
        Ok((
            first == 200 && refused(second),
            format!("expected 200 then a refusal, got {first} then {second}"),
        ))
    });
    attack!("transaction-token-altered", "transaction", async {
        let details = json!([{"type": "payment_initiation", "amount": "2500.00", "currency": "EUR", "creditor": "Bob"}]).to_string();
        let token = t
            .access_token(
                &t.victim,
                "openid accounts:read payments:write",
                &[("authorization_details", &details)],
            )
            .await?;
        let body = json!({"amount": 9500, "currency": "EUR", "to": "Mallory"});
        let s = call(
            reqwest::Method::POST,
            &large,
            &[("authorization", &format!("Bearer {token}"))],
            Some(body),
        )
        .await?;
        Ok((
            refused(s),
            format!("another amount and creditor than approved: expected a refusal, got {s}"),
        ))
    });

    // A client (or script) holding the victim's elevated browser session
    // asks for a token for its own payment: the user signs in as asked,
    // but never approves it. No code may come back.
    attack!("payment-approved-without-page", "transaction", async {
        let details = json!([{"type": "payment_initiation", "amount": "5000.00", "currency": "EUR", "creditor": "Mallory Ltd"}]).to_string();
        t.code_without_approval("a payment", &[("authorization_details", &details)])
            .await
    });
    // The same with the scope that moves money instead of a transaction:
    // a payee added, payment details changed, without the user's approval.
    attack!("payments-scope-without-page", "transaction", async {
        t.code_without_approval("payments:write", &[]).await
    });
    attack!("payment-approved-with-prompt-none", "transaction", async {
        let details = json!([{"type": "payment_initiation", "amount": "5000.00", "currency": "EUR", "creditor": "Mallory Ltd"}]).to_string();
        let pkce = pkce();
        let url = t.authorize_url(
            "openid accounts:read payments:write",
            Some(&pkce),
            &[("authorization_details", &details), ("prompt", "none")],
        );
        let (_, location) = first_answer(t.victim.browser(), url).await?;
        let issued = Url::parse(&location).is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "code"));
        Ok((
            !issued,
            format!("a payment without interaction: expected interaction_required, got {location:?}"),
        ))
    });

    // A stolen password binds the thief's own passkey.
    match &t.password_only {
        Some(user) => attack!("password-only-passkey-bind", "enrolment", async {
            let page = Url::parse(&format!("{}/account/passkeys", t.issuer)).map_err(|e| e.to_string())?;
            let outcome = user.open(page).await;
            let offered = matches!(&outcome, Ok(body) if body.contains("data-options"));
            let shown = match &outcome {
                Ok(body) => body.chars().take(120).collect::<String>(),
                Err(e) => e.chars().take(120).collect(),
            };
            Ok((
                !offered,
                format!("a password alone must not reach passkey registration; got {shown:?}"),
            ))
        }),
        None => not_run!(
            "password-only-passkey-bind",
            "enrolment",
            "the target file names no password_only account"
        ),
    }

    // A token bound to a key, stolen and used as a bearer token at the
    // authorization server's own resource.
    attack!("dpop-bound-token-at-userinfo", "sender constraint", async {
        let token = bound.as_ref().map_err(Clone::clone)?;
        let userinfo = format!("{}/userinfo", t.issuer);
        let s = call(
            reqwest::Method::GET,
            &userinfo,
            &[("authorization", &format!("Bearer {token}"))],
            None,
        )
        .await?;
        Ok((
            s == 401,
            format!("a stolen DPoP-bound token at /userinfo without its key: expected 401, got {s}"),
        ))
    });

    attack!("creditor-near-collision", "transaction binding", async {
        // Approved for one 20-digit account; used to pay one that differs
        // in its last digits (the same number as a float).
        let account = "40817810099910004312";
        let details = json!([{"type": "payment_initiation", "amount": "2500.00", "currency": "EUR", "creditor": account}]).to_string();
        let token = t
            .access_token(
                &t.victim,
                "openid accounts:read payments:write",
                &[("authorization_details", &details)],
            )
            .await?;
        let pay = |to: &'static str| {
            let large = large.clone();
            let bearer = format!("Bearer {token}");
            async move {
                let body = json!({"amount": 2500, "currency": "EUR", "to": to});
                call(
                    reqwest::Method::POST,
                    &large,
                    &[("authorization", &bearer)],
                    Some(body),
                )
                .await
            }
        };
        let near = pay("40817810099910004399").await?;
        // The control: the approved account, with the same token.
        let approved = pay(account).await?;
        Ok((
            refused(near) && approved == 200,
            format!(
                "a near-identical creditor account: expected a refusal, then 200 for the approved one, got {near} and {approved}"
            ),
        ))
    });
    attack!("details-read-two-ways", "transaction binding", async {
        // Details the approval page and the resource server would read
        // differently: a 20-digit account as a number (rounded when stored
        // as a float), and a creditor named twice.
        let mut answers = Vec::new();
        for details in [
            r#"[{"type": "payment_initiation", "amount": "2500.00", "currency": "EUR", "creditor": 40817810099910004312}]"#,
            r#"[{"type": "payment_initiation", "amount": "2500.00", "currency": "EUR", "creditor": "Bob", "creditor": "Mallory Ltd"}]"#,
        ] {
            answers.push(t.details_error(details).await?);
        }
        Ok((
            answers
                .iter()
                .all(|e| e.as_deref() == Some("invalid_authorization_details")),
            format!("expected invalid_authorization_details for both, got {answers:?}"),
        ))
    });

    attack!("details-amount-hidden", "transaction binding", async {
        // A large payment whose amount rules would not see it: netted down
        // by a negative line, or left unknown beside a line in another
        // currency or with a currency the page shows the same ("EUR ").
        let mut answers = Vec::new();
        for second in [
            r#"{"type": "payment_initiation", "amount": "-19999.99", "currency": "EUR", "creditor": "Mallory Ltd"}"#,
            r#"{"type": "payment_initiation", "amount": "0.01", "currency": "USD", "creditor": "Mallory Ltd"}"#,
            r#"{"type": "payment_initiation", "amount": "0.01", "currency": "EUR ", "creditor": "Mallory Ltd"}"#,
        ] {
            let details = format!(
                r#"[{{"type": "payment_initiation", "amount": "20000.00", "currency": "EUR", "creditor": "Mallory Ltd"}}, {second}]"#
            );
            answers.push(t.details_error(&details).await?);
        }
        Ok((
            answers
                .iter()
                .all(|e| e.as_deref() == Some("invalid_authorization_details")),
            format!("expected invalid_authorization_details for all three, got {answers:?}"),
        ))
    });

    // Malformed requests.
    attack!("oversized-header", "malformed request", async {
        let huge = "a".repeat(200_000);
        let s = call(
            reqwest::Method::GET,
            &balance,
            &[("authorization", &bearer), ("x-padding", &huge)],
            None,
        )
        .await;
        Ok((
            s.as_ref().map_or(true, |s| refused(*s)),
            format!("expected 431/400 or a closed connection, got {s:?}"),
        ))
    });
    attack!("malformed-authorization", "malformed request", async {
        let s = call(
            reqwest::Method::GET,
            &balance,
            &[("authorization", "Bearer a b c")],
            None,
        )
        .await?;
        Ok((s == 400, format!("expected 400, got {s}")))
    });
    attack!("two-authorization-headers", "malformed request", async {
        let request = reqwest::Client::new()
            .get(&balance)
            .header("authorization", &bearer)
            .header("authorization", "Bearer other")
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = request;
        request.headers_mut().append(
            "authorization",
            reqwest::header::HeaderValue::from_static("Bearer another"),
        );
        let s = reqwest::Client::new()
            .execute(request)
            .await
            .map_err(|e| e.to_string())?
            .status()
            .as_u16();
        Ok((s == 400, format!("expected 400, got {s}")))
    });
    attack!("encoded-path-bypass", "malformed request", async {
        let s = call(
            reqwest::Method::POST,
            &format!("{}/accounts/42/%70ayees", t.api),
            &[("authorization", &bearer)],
            Some(payee()),
        )
        .await?;
        Ok((
            refused(s),
            format!("an encoded letter to dodge the payee rule: expected 400, got {s}"),
        ))
    });
    attack!("backslash-path-bypass", "malformed request", async {
        // A raw backslash: HTTP libraries accept it, the policy saw a
        // segment "42\payees" under the default rule, and an upstream that
        // reads '\' as '/' (WHATWG parsers, IIS) runs the payee handler.
        let mut statuses = Vec::new();
        let doors =
            std::iter::once((&t.api, &bearer)).chain(t.gateway.as_ref().map(|g| (g, &gateway_bearer)));
        for (base, bearer) in doors {
            let request = format!(
                "POST /accounts/42\\payees HTTP/1.1\r\nHost: h\r\nAuthorization: {bearer}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            statuses.push(raw_request(base, &request).await?);
        }
        Ok((
            statuses.iter().all(|s| *s == 400),
            format!(
                "a raw backslash for '/' at the API and the gateway: expected 400 from each, got {statuses:?}"
            ),
        ))
    });
    attack!("dot-segment-path-bypass", "malformed request", async {
        let status = raw_request(&t.api, &format!("POST /accounts/42/x/../payees HTTP/1.1\r\nHost: h\r\nAuthorization: {bearer}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")).await?;
        Ok((
            refused(status),
            format!("a dot segment to dodge the payee rule: expected 400, got {status}"),
        ))
    });

    // Unbounded input and floods, from anyone on the internet.
    attack!("oversized-parameters", "malformed request", async {
        let browser = no_redirects()?;
        // The outsider's request: 1.5 MB of state and a 400 kB hint.
        let form: Vec<(String, String)> = t
            .authorize_url("openid", Some(&pkce()), &[])
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .filter(|(k, _)| k != "state")
            .chain([
                ("state".to_owned(), "s".repeat(1_500_000)),
                ("login_hint".to_owned(), "h".repeat(400_000)),
            ])
            .collect();
        let huge = browser
            .post(t.authorization_endpoint.as_str())
            .form(&form)
            .send()
            .await
            .map(|r| r.status().as_u16());
        // Just beyond the bounds (512 and 256 bytes), in the query: refused,
        // and the hint not echoed on the page.
        let hint = format!("{}-echoed", "h".repeat(300));
        let url = t.authorize_url(
            "openid",
            Some(&pkce()),
            &[("state", &"s".repeat(600)), ("login_hint", &hint)],
        );
        // A client of its own: the server may close the connection that
        // carried the huge body while the client still sends it, and a
        // pooled client would try to reuse it.
        let response = no_redirects()?.get(url).send().await.map_err(|e| e.to_string())?;
        let over = response.status().as_u16();
        let echoed = response.text().await.map_err(|e| e.to_string())?.contains(&hint);
        // A pushed request with 100 kB of claims.
        let pushed = no_redirects()?
            .post(format!("{}/par", t.issuer))
            .form(&[
                ("client_id", t.client_id.as_str()),
                ("response_type", "code"),
                ("claims", &"c".repeat(100_000)),
            ])
            .send()
            .await
            .map(|r| r.status().as_u16());
        let closed_or = |s: &Result<u16, reqwest::Error>| s.as_ref().map_or(true, |s| matches!(s, 400 | 413));
        Ok((
            closed_or(&huge) && over == 400 && !echoed && closed_or(&pushed),
            format!(
                "expected 413 (or a closed connection) for 1.9 MB, 400 without echo for 600 bytes of state, 413 for a 100 kB PAR; got {:?}, {over} (echoed: {echoed}), {:?}",
                huge.map_err(|e| e.to_string()),
                pushed.map_err(|e| e.to_string())
            ),
        ))
    });
    if t.locates_addresses {
        attack!("authorize-flood", "flood", async {
            // From an address of its own (the deployment believes the
            // simulation's X-Forwarded-For): the users' is not slowed.
            let browser = no_redirects()?;
            let url = t.authorize_url("openid", Some(&pkce()), &[]);
            let mut limited = None;
            for sent in 1..=1000 {
                let response = browser
                    .get(url.clone())
                    .header("x-forwarded-for", FLOOD_ADDRESS)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status() == 429 {
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    limited = Some((sent, retry_after));
                    break;
                }
            }
            // The control: another address at the same moment passes.
            let control = browser
                .get(url)
                .header("x-forwarded-for", CONTROL_ADDRESS)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .status()
                .as_u16();
            Ok((
                matches!(limited, Some((_, Some(wait))) if wait > 0) && control == 200,
                format!(
                    "expected 429 with Retry-After within 1000 requests from one address, and 200 from another; got {limited:?} (request, Retry-After), control {control}"
                ),
            ))
        });
    } else {
        not_run!(
            "authorize-flood",
            "flood",
            "the target does not believe the simulation's X-Forwarded-For: a flood would slow its own users"
        );
    }
    if slow_clients.is_empty() {
        not_run!(
            "slow-client",
            "flood",
            "the target is served over TLS only: a plaintext probe would prove nothing"
        );
    } else {
        attack!("slow-client", "flood", async {
            // Half a header section, silence, or half the HTTP/2 preface
            // (slowloris): a server that waits for the rest holds a
            // connection per attacker socket, and a few thousand take it off
            // the air.
            let mut held = Vec::new();
            for (what, how, probe) in slow_clients {
                match probe.await.map_err(|e| e.to_string())?? {
                    Some(closed_after) => held.push(format!(
                        "{what}, {how}: closed after {} s",
                        closed_after.as_secs()
                    )),
                    None => {
                        return Ok((
                            false,
                            format!(
                                "the {what} kept a connection open for {} s ({how})",
                                SLOW_CLIENT_LIMIT.as_secs()
                            ),
                        ));
                    }
                }
            }
            Ok((
                true,
                format!(
                    "expected every server to close a connection that sends nothing whole within {} s; {}",
                    SLOW_CLIENT_LIMIT.as_secs(),
                    held.join(", ")
                ),
            ))
        });
    }
    out
}

/// How long a half-sent request may hold its connection before the
/// deployment is said to let slow clients in: the default header-read
/// timeout (10 s) and a margin.
const SLOW_CLIENT_LIMIT: Duration = Duration::from_secs(15);

/// How slow clients open their connections: half an HTTP/1 header
/// section, nothing at all (the server cannot tell HTTP/1 from HTTP/2
/// yet), and half the HTTP/2 preface. `{host}` is the target's host.
const SLOW_OPENINGS: [(&str, &str); 3] = [
    (
        "half a header section",
        "GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: ",
    ),
    ("silence", ""),
    ("half the HTTP/2 preface", "PRI * HTTP/2.0\r\n"),
];

/// Connects to the origin of `base`, sends `opening`, and waits: how long
/// until the server closed the connection, or `None` if it was still open
/// after [`SLOW_CLIENT_LIMIT`].
async fn half_request_held(base: &str, opening: &str) -> Result<Option<Duration>, String> {
    let url = Url::parse(base).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or_else(|| format!("{base} has no host"))?;
    let addr = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let head = opening.replace("{host}", host);
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let sent = std::time::Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(sent + SLOW_CLIENT_LIMIT),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => return Ok(Some(sent.elapsed())),
            // A 408 before closing is fine: keep reading to the close.
            Ok(Ok(_)) => {}
            Err(_) => return Ok(None),
        }
    }
}

/// Where the flood comes from, and the control beside it (RFC 5737).
const FLOOD_ADDRESS: &str = "203.0.113.66";
const CONTROL_ADDRESS: &str = "203.0.113.67";

/// An HTTP client that shows redirects instead of following them.
fn no_redirects() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// The status and `Location` of the first answer to `GET url` in `browser`.
async fn first_answer(browser: &reqwest::Client, url: Url) -> Result<(u16, String), String> {
    let response = browser.get(url).send().await.map_err(|e| e.to_string())?;
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok((response.status().as_u16(), location))
}

/// `GET url` with a DPoP-bound token and a proof.
async fn dpop_get(url: &str, token: &str, proof: &str) -> Result<u16, String> {
    let authorization = format!("DPoP {token}");
    call(
        reqwest::Method::GET,
        url,
        &[("authorization", &authorization), ("dpop", proof)],
        None,
    )
    .await
}

/// Adds a payee (a critical call) with `authorization`.
async fn payee_with(url: &str, authorization: &str) -> Result<u16, String> {
    call(
        reqwest::Method::POST,
        url,
        &[("authorization", authorization)],
        Some(payee()),
    )
    .await
}

/// The stolen token's claims, claiming the mfa level.
fn elevated(token: &str) -> Value {
    let mut claims = claims_of(token);
    claims["acr"] = json!(MFA);
    claims
}

/// A DPoP proof by `key`.
fn proof(key: &SigningKey, method: &str, uri: &str, token: Option<&str>) -> Result<String, String> {
    let jti = random_text();
    sign_proof(
        key,
        &ProofClaims {
            method,
            uri,
            access_token: token,
            nonce: None,
            jti: &jti,
            iat: chrono_now(),
        },
        &SystemRandom::new(),
    )
    .map_err(|e| e.to_string())
}

fn chrono_now() -> i64 {
    stepup_core::Clock::now(&stepup_core::SystemClock).seconds()
}

/// Sends `raw` bytes to the origin of `base`; the status of the answer.
async fn raw_request(base: &str, raw: &str) -> Result<u16, String> {
    let url = Url::parse(base).map_err(|e| e.to_string())?;
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(80)
    );
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(raw.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))
}
