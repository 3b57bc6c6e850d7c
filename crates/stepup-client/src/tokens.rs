//! The tokens a client holds, per resource: one for ordinary calls, and
//! the elevated ones obtained by step-ups, each kept for the route and the
//! requirement that asked for it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stepup_core::resource_metadata::{ResourceMetadata, check_resource, covers};
use url::Url;
use zeroize::Zeroizing;

/// A token value: never printed, zeroed when dropped. (Compared only
/// with the client's own copies, never with input: no timing concern.)
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Zeroizing<String>);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// Tokens from one token response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSet {
    pub(crate) access_token: Secret,
    pub(crate) refresh_token: Option<Secret>,
    /// When the access token expires (seconds since the epoch), if said.
    pub expires_at: Option<i64>,
    /// The scopes granted.
    pub scope: Vec<String>,
    /// When the tokens were obtained: about when the user authenticated
    /// for a step-up, which `max_age` counts from.
    pub obtained_at: i64,
    /// Whether the access token is bound to the client's DPoP key (sent
    /// with the `DPoP` scheme and a proof).
    #[serde(default)]
    pub dpop: bool,
    /// Who they were issued for: the `sub` of the ID token that came with
    /// them (from an OpenID provider; `None` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Tokens of another account than the one the tokens held are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountMismatch {
    /// The account of the tokens held.
    pub held: String,
    /// The account of the others, if they name one.
    pub got: Option<String>,
}

impl fmt::Display for AccountMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.got {
            Some(got) => write!(
                f,
                "tokens for {got:?}, where the tokens held are for {:?}",
                self.held
            ),
            None => write!(
                f,
                "tokens that name no account (no ID token), where the tokens held are for {:?}",
                self.held
            ),
        }
    }
}

impl std::error::Error for AccountMismatch {}

/// Tokens are taken as expired a little early, so a call does not reach
/// the API just as its token lapses.
const EXPIRY_MARGIN_SECONDS: i64 = 5;

impl TokenSet {
    /// Whether the access token is still worth presenting.
    pub fn is_fresh(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| now < e - EXPIRY_MARGIN_SECONDS)
    }

    /// Whether a refresh token came with it.
    pub fn can_refresh(&self) -> bool {
        self.refresh_token.is_some()
    }
}

/// What a step-up challenge asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    /// Acceptable levels, in the API's order.
    pub acr_values: Vec<String>,
    /// How recent the authentication must be.
    pub max_age: Option<u64>,
    /// Scopes the API needs beyond the base ones.
    pub scope: Vec<String>,
    /// The transaction to approve (RFC 9396 `authorization_details`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<serde_json::Value>,
}

impl Requirement {
    /// Never lower than `held`: with the server's `levels` (weakest
    /// first), the levels asked below every level `held` was obtained for
    /// are left out, and when none is left the held levels are asked
    /// instead. Unranked levels (or no ranking) are kept as asked.
    pub fn raise_to(&mut self, held: &Self, levels: &[String]) {
        let rank = |acr: &String| levels.iter().position(|l| l == acr);
        let Some(floor) = held
            .acr_values
            .iter()
            .map(rank)
            .collect::<Option<Vec<_>>>()
            .and_then(|ranks| ranks.into_iter().min())
        else {
            return;
        };
        if self.acr_values.is_empty() {
            return;
        }
        self.acr_values.retain(|acr| rank(acr).is_none_or(|r| r >= floor));
        if self.acr_values.is_empty() {
            self.acr_values = held.acr_values.clone();
        }
    }

    /// Whether this asks for something a token obtained for `held` was not
    /// obtained for: a level outside the held set, a shorter `max_age`, a
    /// scope or a transaction it did not have. A challenge that asks
    /// nothing more answers a token that was obtained for exactly that:
    /// following it again would loop, or trade the token for a weaker one.
    pub fn asks_more_than(&self, held: &Self) -> bool {
        // A token obtained for a set of levels has one of them (which, the
        // client cannot tell): a challenge asks for another level unless
        // it takes every level of the held set.
        let other_level = !self.acr_values.is_empty()
            && (held.acr_values.is_empty() || held.acr_values.iter().any(|h| !self.acr_values.contains(h)));
        let fresher = match (self.max_age, held.max_age) {
            (Some(asked), Some(had)) => asked < had,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let more_scope = self.scope.iter().any(|s| !held.scope.contains(s));
        other_level || fresher || more_scope || self.authorization_details.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Elevated {
    /// `METHOD scheme://host:port/path` of the call that asked for it.
    route: String,
    requirement: Requirement,
    tokens: TokenSet,
}

impl Elevated {
    fn usable(&self, now: i64) -> bool {
        let within_max_age = self
            .requirement
            .max_age
            .is_none_or(|m| now < self.tokens.obtained_at.saturating_add_unsigned(m));
        self.tokens.is_fresh(now) && within_max_age
    }
}

/// The tokens of one resource (RFC 8707: their audience is it), and the
/// metadata it was checked with (RFC 9728).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResourceTokens {
    pub(crate) metadata: ResourceMetadata,
    base: Option<TokenSet>,
    #[serde(default)]
    elevated: Vec<Elevated>,
}

impl ResourceTokens {
    /// The tokens for ordinary calls.
    pub(crate) fn base(&self) -> Option<&TokenSet> {
        self.base.as_ref()
    }

    pub(crate) fn set_base(&mut self, tokens: TokenSet) {
        self.base = Some(tokens);
    }

    /// The elevated token kept for `route` (the latest obtained), while
    /// usable, with what it was obtained for.
    pub(crate) fn elevated_for(&self, route: &str, now: i64) -> Option<(&TokenSet, &Requirement)> {
        self.elevated
            .iter()
            .rev()
            .find(|e| e.route == route && e.usable(now))
            .map(|e| (&e.tokens, &e.requirement))
    }

    /// Keeps an elevated token for `route` and `requirement`. It replaces
    /// a token kept for the same route and requirement only: a token
    /// obtained for another level stays until it lapses, so a challenge
    /// never makes the client give up a stronger token.
    pub(crate) fn set_elevated(&mut self, route: String, requirement: Requirement, tokens: TokenSet) {
        self.elevated
            .retain(|e| !(e.route == route && e.requirement == requirement));
        self.elevated.push(Elevated {
            route,
            requirement,
            tokens,
        });
    }

    /// Applies to these tokens what changed from `old` (none: new to the
    /// run) to `changed`, part by part. A part this run left alone stays
    /// as it is here; a base token this run dropped is dropped only if it
    /// is still the one this run had (not one another run put there).
    fn apply(&mut self, old: Option<&ResourceTokens>, changed: &ResourceTokens) {
        let (old_metadata, old_base, old_elevated) = match old {
            Some(o) => (Some(&o.metadata), o.base.as_ref(), o.elevated.as_slice()),
            None => (None, None, &[][..]),
        };
        if old_metadata != Some(&changed.metadata) {
            self.metadata = changed.metadata.clone();
        }
        if old_base != changed.base.as_ref() {
            match &changed.base {
                Some(base) => self.base = Some(base.clone()),
                None if self.base.as_ref() == old_base => self.base = None,
                None => {}
            }
        }
        for e in changed.elevated.iter().filter(|e| !old_elevated.contains(e)) {
            self.replace_elevated(e.clone());
        }
        for e in old_elevated.iter().filter(|e| !changed.elevated.contains(e)) {
            self.elevated.retain(|k| k != e);
        }
    }

    /// Keeps `e`, in place of one for the same route and requirement.
    fn replace_elevated(&mut self, e: Elevated) {
        self.elevated
            .retain(|k| !(k.route == e.route && k.requirement == e.requirement));
        self.elevated.push(e);
    }

    /// Forgets the base token.
    pub(crate) fn forget_base(&mut self) {
        self.base = None;
    }

    /// Forgets `token`, refused by the resource: the base token or the
    /// elevated one it is. A token another call put in its place since is
    /// kept.
    pub(crate) fn forget(&mut self, token: &Secret) {
        if self.base.as_ref().is_some_and(|b| &b.access_token == token) {
            self.base = None;
        }
        self.elevated.retain(|e| &e.tokens.access_token != token);
    }
}

/// All the tokens of a client, per resource; serialisable, so a CLI can
/// keep them between runs (in a file only its user can read).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tokens {
    /// The account every token is for (the `sub` of the first ID token),
    /// once an OpenID provider said it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default)]
    resources: Vec<ResourceTokens>,
}

impl Tokens {
    /// The account the tokens are for, once known.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// Whether nothing is kept: no token, and no account.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.subject.is_none()
    }

    /// Checks that `tokens` are for the account these are for (the first
    /// that names one sets it): a sign-in or step-up that came back for
    /// another account is not mixed with this one's tokens. On a mismatch,
    /// the account held. The account stays when its tokens lapse or are
    /// refused: a later sign-in in a browser someone else signed in to
    /// theirs (a login CSRF) is refused too. Only forgetting everything
    /// ([`Tokens::default`], saved as this run's change) lets another
    /// account in.
    ///
    /// Once bound, tokens that name no account are refused as well (the
    /// provider stopped sending ID tokens: who signed in is unknown); the
    /// first binding drops the tokens kept of no known account (kept before
    /// accounts were, or from a provider that named none).
    pub(crate) fn bind_subject(&mut self, tokens: &TokenSet) -> Result<(), AccountMismatch> {
        self.check_account(tokens)?;
        if let (None, Some(got)) = (&self.subject, &tokens.subject) {
            self.subject = Some(got.clone());
            self.keep_only_account();
        }
        Ok(())
    }

    /// Whether `tokens` may be kept with these: bound, they must be for
    /// the same account (see [`Tokens::bind_subject`]).
    pub(crate) fn check_account(&self, tokens: &TokenSet) -> Result<(), AccountMismatch> {
        match &self.subject {
            Some(held) if tokens.subject.as_ref() != Some(held) => Err(AccountMismatch {
                held: held.clone(),
                got: tokens.subject.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Drops every token that is not the bound account's.
    fn keep_only_account(&mut self) {
        let Some(account) = self.subject.clone() else {
            return;
        };
        let ours = |t: &TokenSet| t.subject.as_deref() == Some(account.as_str());
        for r in &mut self.resources {
            if r.base.as_ref().is_some_and(|b| !ours(b)) {
                r.base = None;
            }
            r.elevated.retain(|e| ours(&e.tokens));
        }
    }

    /// The identifiers of the resources tokens are kept for.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.resources.iter().map(|r| r.metadata.resource.as_str())
    }

    /// The tokens for ordinary calls to `resource`.
    pub fn base(&self, resource: &str) -> Option<&TokenSet> {
        self.resources
            .iter()
            .find(|r| r.metadata.resource == resource)
            .and_then(ResourceTokens::base)
    }

    /// The known resource that `url` belongs to: the one whose identifier
    /// covers it, the longest when several do.
    pub(crate) fn resource_for(&self, url: &Url) -> Option<&ResourceMetadata> {
        self.resources
            .iter()
            .filter_map(|r| {
                let id = check_resource(&r.metadata.resource).ok()?;
                covers(&id, url).then_some((id.path().len(), &r.metadata))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, m)| m)
    }

    /// Keeps `metadata` (checked by the caller), with the tokens already
    /// kept for its resource.
    pub(crate) fn know(&mut self, metadata: ResourceMetadata) {
        match self.of(&metadata.resource) {
            Some(r) => r.metadata = metadata,
            None => self.resources.push(ResourceTokens {
                metadata,
                base: None,
                elevated: Vec::new(),
            }),
        }
    }

    /// Whether `resource` is known.
    pub(crate) fn has(&self, resource: &str) -> bool {
        self.resources.iter().any(|r| r.metadata.resource == resource)
    }

    /// The tokens of `resource`, if it is known.
    pub(crate) fn of(&mut self, resource: &str) -> Option<&mut ResourceTokens> {
        self.resources
            .iter_mut()
            .find(|r| r.metadata.resource == resource)
    }

    /// Forgets elevated tokens that expired or outlived their `max_age`,
    /// and resources no token is kept for (learnt, but never given one).
    pub fn prune(&mut self, now: i64) {
        for r in &mut self.resources {
            r.elevated.retain(|e| e.usable(now));
        }
        self.resources
            .retain(|r| r.base.is_some() || !r.elevated.is_empty());
    }

    /// Applies to these tokens (as kept now, perhaps changed by another
    /// run since) what changed from `before` to `after` (this run's tokens
    /// at its start and end), part by part: a resource's metadata, its base
    /// token, each elevated token. What this run did not change stays as
    /// kept, so two runs at once lose neither's tokens, and a refresh token
    /// another run rotated is not brought back.
    ///
    /// Tokens of two accounts are never mixed: when these tokens and the
    /// run's are bound to different accounts, nothing is applied
    /// ([`AccountMismatch`]); once bound, tokens of no known account go.
    pub fn merge_changes(&mut self, before: &Tokens, after: &Tokens) -> Result<(), AccountMismatch> {
        if let (Some(held), Some(got)) = (&self.subject, &after.subject)
            && held != got
        {
            return Err(AccountMismatch {
                held: held.clone(),
                got: Some(got.clone()),
            });
        }
        let find = |list: &[ResourceTokens], id: &str| list.iter().position(|r| r.metadata.resource == id);
        for changed in &after.resources {
            let id = changed.metadata.resource.as_str();
            let old = find(&before.resources, id).map(|i| &before.resources[i]);
            if old == Some(changed) {
                continue;
            }
            let Some(i) = find(&self.resources, id) else {
                // Gone from the file (another run forgot it): this run's
                // changes are applied to an empty entry, nothing more.
                let mut entry = ResourceTokens {
                    metadata: changed.metadata.clone(),
                    base: None,
                    elevated: Vec::new(),
                };
                entry.apply(old, changed);
                if entry.base.is_some() || !entry.elevated.is_empty() {
                    self.resources.push(entry);
                }
                continue;
            };
            self.resources[i].apply(old, changed);
        }
        // Forgotten by this run: its parts go, not what another run put.
        for old in &before.resources {
            let id = old.metadata.resource.as_str();
            if find(&after.resources, id).is_none()
                && let Some(i) = find(&self.resources, id)
            {
                let forgotten = ResourceTokens {
                    metadata: self.resources[i].metadata.clone(),
                    base: None,
                    elevated: Vec::new(),
                };
                self.resources[i].apply(Some(old), &forgotten);
                if self.resources[i].base.is_none() && self.resources[i].elevated.is_empty() {
                    self.resources.remove(i);
                }
            }
        }
        // A run that bound the tokens to an account, or forgot everything
        // (to change account), says so for the file; a run that kept
        // tokens of its account in a file bound to none (forgotten
        // meanwhile by another run) binds it again.
        if before.subject != after.subject
            || (self.subject.is_none() && after.subject.is_some() && before.resources != after.resources)
        {
            self.subject.clone_from(&after.subject);
        }
        self.keep_only_account();
        Ok(())
    }

    /// Binds these tokens to `account`, as the store they were read from
    /// is (another run bound it since): see [`Tokens::bind_subject`].
    pub(crate) fn bind_to(&mut self, account: &str) {
        if self.subject.is_none() {
            self.subject = Some(account.to_owned());
            self.keep_only_account();
        }
    }

    /// How many elevated tokens are kept, all resources together.
    pub fn elevated_count(&self) -> usize {
        self.resources.iter().map(|r| r.elevated.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(expires_at: Option<i64>, obtained_at: i64) -> TokenSet {
        TokenSet {
            access_token: Secret::new("at".into()),
            refresh_token: None,
            expires_at,
            scope: vec![],
            obtained_at,
            dpop: false,
            subject: None,
        }
    }

    fn metadata(resource: &str) -> ResourceMetadata {
        ResourceMetadata {
            resource: resource.into(),
            authorization_servers: vec!["https://as.example".into()],
            scopes_supported: vec![],
            bearer_methods_supported: vec![],
            dpop_signing_alg_values_supported: vec![],
            authorization_details_types_supported: vec![],
            resource_name: None,
        }
    }

    fn mfa(max_age: Option<u64>) -> Requirement {
        Requirement {
            acr_values: vec!["mfa".into()],
            max_age,
            scope: vec![],
            authorization_details: None,
        }
    }

    #[test]
    fn elevated_tokens_serve_their_route_while_fresh_and_within_max_age() {
        let mut tokens = Tokens::default();
        tokens.know(metadata("https://api"));
        let api = tokens.of("https://api").unwrap();
        api.set_elevated(
            "POST https://api/p".into(),
            mfa(Some(60)),
            set(Some(1_300), 1_000),
        );
        assert!(api.elevated_for("POST https://api/p", 1_000).is_some());
        assert!(
            api.elevated_for("GET https://api/p", 1_000).is_none(),
            "another route"
        );
        assert!(api.elevated_for("POST https://api/p", 1_059).is_some());
        assert!(
            api.elevated_for("POST https://api/p", 1_060).is_none(),
            "max_age passed"
        );
        tokens.prune(1_060);
        assert_eq!(tokens.elevated_count(), 0);
        assert_eq!(tokens.resources().count(), 0, "no token left for it");

        tokens.know(metadata("https://api"));
        let api = tokens.of("https://api").unwrap();
        api.set_elevated(
            "POST https://api/p".into(),
            Requirement::default(),
            set(Some(1_300), 1_000),
        );
        assert!(api.elevated_for("POST https://api/p", 1_294).is_some());
        assert!(
            api.elevated_for("POST https://api/p", 1_295).is_none(),
            "expiry, with margin"
        );
    }

    #[test]
    fn a_token_for_another_level_does_not_evict_the_one_held() {
        let mut tokens = Tokens::default();
        tokens.know(metadata("https://api"));
        let api = tokens.of("https://api").unwrap();
        api.set_elevated("POST https://api/p".into(), mfa(None), set(Some(2_000), 1_000));
        let pwd = Requirement {
            acr_values: vec!["pwd".into()],
            ..Requirement::default()
        };
        api.set_elevated("POST https://api/p".into(), pwd.clone(), set(Some(1_500), 1_100));
        assert_eq!(tokens.elevated_count(), 2);
        let api = tokens.of("https://api").unwrap();
        assert_eq!(api.elevated_for("POST https://api/p", 1_200).unwrap().1, &pwd);
        // Once the later one lapses, the stronger one serves again.
        assert_eq!(
            api.elevated_for("POST https://api/p", 1_600).unwrap().1,
            &mfa(None)
        );
    }

    #[test]
    fn a_challenge_asks_more_only_with_a_new_level_freshness_scope_or_transaction() {
        let held = mfa(Some(300));
        assert!(!mfa(Some(300)).asks_more_than(&held), "the same");
        assert!(!mfa(None).asks_more_than(&held), "less fresh");
        assert!(!Requirement::default().asks_more_than(&held), "nothing");
        let either = Requirement {
            acr_values: vec!["pwd".into(), "mfa".into()],
            ..mfa(Some(300))
        };
        assert!(!either.asks_more_than(&held), "a set the held level is in");
        // Obtained for mfa-or-phr, perhaps at mfa: phr alone may be more.
        let mfa_or_phr = Requirement {
            acr_values: vec!["mfa".into(), "phr".into()],
            ..mfa(Some(300))
        };
        let phr_only = Requirement {
            acr_values: vec!["phr".into()],
            ..mfa(Some(300))
        };
        assert!(phr_only.asks_more_than(&mfa_or_phr));
        assert!(
            mfa(Some(300)).asks_more_than(&Requirement::default()),
            "a level, where none was asked"
        );
        assert!(mfa(Some(60)).asks_more_than(&held), "fresher");
        let phr = Requirement {
            acr_values: vec!["phr".into()],
            ..mfa(Some(300))
        };
        assert!(phr.asks_more_than(&held), "another level");
        let scoped = Requirement {
            scope: vec!["payments:write".into()],
            ..mfa(Some(300))
        };
        assert!(scoped.asks_more_than(&held), "a new scope");
    }

    #[test]
    fn a_challenge_is_raised_to_the_held_level_never_below() {
        let levels: Vec<String> = ["pwd", "mfa", "phr"].map(String::from).to_vec();
        let asking = |acr: &[&str]| Requirement {
            acr_values: acr.iter().map(|a| (*a).to_owned()).collect(),
            ..Requirement::default()
        };
        let raised = |asked: &[&str], held: &[&str], levels: &[String]| {
            let mut r = asking(asked);
            r.raise_to(&asking(held), levels);
            r.acr_values
        };
        assert_eq!(raised(&["pwd"], &["mfa"], &levels), ["mfa"]);
        assert_eq!(raised(&["pwd", "mfa"], &["phr"], &levels), ["phr"]);
        assert_eq!(
            raised(&["pwd", "phr"], &["mfa"], &levels),
            ["phr"],
            "the lower value dropped"
        );
        assert_eq!(raised(&["phr"], &["mfa"], &levels), ["phr"]);
        assert_eq!(raised(&["mfa"], &["mfa", "phr"], &levels), ["mfa"]);
        assert_eq!(raised(&["pwd"], &["mfa"], &[]), ["pwd"], "no ranking");
        assert_eq!(
            raised(&["other", "pwd"], &["mfa"], &levels),
            ["other"],
            "unranked kept"
        );
        assert_eq!(raised(&["pwd"], &["other"], &levels), ["pwd"], "held unranked");
        assert!(raised(&[], &["mfa"], &levels).is_empty());
        assert_eq!(raised(&["pwd"], &[], &levels), ["pwd"]);
    }

    #[test]
    fn a_url_belongs_to_the_longest_resource_covering_it() {
        let mut tokens = Tokens::default();
        tokens.know(metadata("https://api.example"));
        tokens.know(metadata("https://api.example/v2"));
        let of = |u: &str| {
            tokens
                .resource_for(&Url::parse(u).unwrap())
                .map(|m| m.resource.clone())
        };
        assert_eq!(
            of("https://api.example/v1/x").as_deref(),
            Some("https://api.example")
        );
        assert_eq!(
            of("https://api.example/v2/x").as_deref(),
            Some("https://api.example/v2")
        );
        assert_eq!(of("https://api.example.evil/v2/x"), None);
        assert_eq!(of("http://api.example/v2/x"), None);
        // Knowing a resource again keeps its tokens.
        tokens.of("https://api.example").unwrap().set_base(set(None, 0));
        tokens.know(metadata("https://api.example"));
        assert!(tokens.base("https://api.example").is_some());
        assert_eq!(tokens.resources().count(), 2);
    }

    #[test]
    fn two_runs_at_once_keep_both_their_tokens() {
        let with = |resources: &[(&str, i64)]| {
            let mut t = Tokens::default();
            for (id, obtained) in resources {
                t.know(metadata(id));
                t.of(id).unwrap().set_base(set(None, *obtained));
            }
            t
        };
        let start = with(&[("https://a", 1), ("https://b", 1)]);
        // Run 1 renewed a's token; run 2, at the same time, renewed b's
        // and learnt c. Run 2 saved first.
        let run1 = with(&[("https://a", 2), ("https://b", 1)]);
        let mut file = with(&[("https://a", 1), ("https://b", 3), ("https://c", 3)]);
        file.merge_changes(&start, &run1).unwrap();
        let obtained = |t: &Tokens, id: &str| t.base(id).map(|b| b.obtained_at);
        assert_eq!(obtained(&file, "https://a"), Some(2), "run 1's renewal");
        assert_eq!(
            obtained(&file, "https://b"),
            Some(3),
            "run 2's renewal is not undone"
        );
        assert_eq!(obtained(&file, "https://c"), Some(3));
        // A run that forgot a resource forgets it, unless it was renewed
        // meanwhile.
        let forgot_both = with(&[]);
        file.merge_changes(&with(&[("https://a", 2), ("https://b", 1)]), &forgot_both)
            .unwrap();
        assert_eq!(obtained(&file, "https://a"), None);
        assert_eq!(obtained(&file, "https://b"), Some(3));
    }

    #[test]
    fn a_step_up_saved_late_does_not_bring_back_a_rotated_refresh_token() {
        let mut start = Tokens::default();
        start.know(metadata("https://r"));
        start.of("https://r").unwrap().set_base(set(None, 1));
        // Run A steps up on r (its base token untouched)...
        let mut run_a = start.clone();
        run_a
            .of("https://r")
            .unwrap()
            .set_elevated("POST https://r/p".into(), mfa(None), set(None, 5));
        // ...while run B refreshed r's base token and saved first.
        let mut file = start.clone();
        file.of("https://r").unwrap().set_base(set(None, 4));
        file.merge_changes(&start, &run_a).unwrap();
        assert_eq!(
            file.base("https://r").unwrap().obtained_at,
            4,
            "B's rotation kept"
        );
        assert_eq!(file.elevated_count(), 1, "A's step-up kept");
    }

    fn of(sub: Option<&str>) -> TokenSet {
        TokenSet {
            subject: sub.map(str::to_owned),
            ..set(None, 1)
        }
    }

    fn mismatch(held: &str, got: Option<&str>) -> AccountMismatch {
        AccountMismatch {
            held: held.to_owned(),
            got: got.map(str::to_owned),
        }
    }

    /// Tokens for `resource` of `account`.
    fn bound(account: &str, resource: &str) -> Tokens {
        let mut t = Tokens::default();
        t.know(metadata(resource));
        t.bind_subject(&of(Some(account))).unwrap();
        t.of(resource).unwrap().set_base(of(Some(account)));
        t
    }

    #[test]
    fn the_first_account_named_binds_the_tokens_until_they_are_forgotten() {
        let mut tokens = Tokens::default();
        // Kept from before accounts were known: of no known account.
        tokens.know(metadata("https://old"));
        tokens.of("https://old").unwrap().set_base(of(None));
        assert_eq!(tokens.bind_subject(&of(None)), Ok(()), "no account said");
        assert_eq!(tokens.subject(), None);
        assert_eq!(tokens.bind_subject(&of(Some("alice"))), Ok(()));
        assert!(
            tokens.base("https://old").is_none(),
            "of no known account: dropped"
        );
        assert_eq!(tokens.bind_subject(&of(Some("alice"))), Ok(()));
        assert_eq!(
            tokens.bind_subject(&of(Some("mallory"))),
            Err(mismatch("alice", Some("mallory")))
        );
        assert_eq!(
            tokens.bind_subject(&of(None)),
            Err(mismatch("alice", None)),
            "bound: tokens that name no account are refused"
        );
        assert_eq!(tokens.subject(), Some("alice"), "unchanged by a refusal");
        tokens.know(metadata("https://r"));
        tokens.of("https://r").unwrap().set_base(of(Some("alice")));
        let json = serde_json::to_string(&tokens).unwrap();
        let back: Tokens = serde_json::from_str(&json).unwrap();
        assert_eq!(back.subject(), Some("alice"));
        // Kept when every token is gone (lapsed, or refused by the API):
        // the next sign-in must be the same account's still.
        tokens.of("https://r").unwrap().forget(&Secret::new("at".into()));
        tokens.prune(2);
        assert_eq!(tokens.resources().count(), 0);
        assert_eq!(tokens.subject(), Some("alice"));
        assert!(!tokens.is_empty());
        assert_eq!(
            tokens.bind_subject(&of(Some("mallory"))),
            Err(mismatch("alice", Some("mallory")))
        );
        // Saved: a run that bound an account binds the file's tokens.
        let mut file = Tokens::default();
        file.merge_changes(&Tokens::default(), &back).unwrap();
        assert_eq!(file.subject(), Some("alice"));
        // A run that changed nothing of it leaves it.
        file.merge_changes(&back, &back).unwrap();
        assert_eq!(file.subject(), Some("alice"));
        // A run that forgot everything (to change account) forgets it.
        file.merge_changes(&back, &Tokens::default()).unwrap();
        assert_eq!(file.subject(), None);
        assert!(file.is_empty());
    }

    #[test]
    fn a_run_that_keeps_tokens_after_another_forgot_everything_binds_the_file_again() {
        let alice = bound("alice", "https://r");
        // Another run forgot everything (--forget-tokens)...
        let mut file = alice.clone();
        file.merge_changes(&alice, &Tokens::default()).unwrap();
        assert!(file.is_empty());
        // ...then this run, started before, keeps a renewed token.
        let mut renewed = alice.clone();
        renewed.of("https://r").unwrap().set_base(TokenSet {
            obtained_at: 9,
            ..of(Some("alice"))
        });
        file.merge_changes(&alice, &renewed).unwrap();
        assert_eq!(file.subject(), Some("alice"), "alice's tokens, bound to alice");
        assert!(file.base("https://r").is_some());
        // A run that changed nothing does not bind a forgotten file.
        let mut forgotten = Tokens::default();
        forgotten.merge_changes(&alice, &alice).unwrap();
        assert_eq!(forgotten.subject(), None);
    }

    #[test]
    fn two_runs_of_two_accounts_never_mix_their_tokens_in_the_file() {
        // Both runs started from an empty file; alice's saved first, then
        // mallory's (a browser signed in to mallory's account).
        let mut file = Tokens::default();
        file.merge_changes(&Tokens::default(), &bound("alice", "https://r1"))
            .unwrap();
        let refused = file.merge_changes(&Tokens::default(), &bound("mallory", "https://r2"));
        assert_eq!(refused, Err(mismatch("alice", Some("mallory"))));
        assert_eq!(file.subject(), Some("alice"));
        assert!(file.base("https://r2").is_none(), "nothing of mallory's applied");
        // A file of tokens of no known account, bound by a run: they go.
        let mut file = Tokens::default();
        file.know(metadata("https://old"));
        file.of("https://old").unwrap().set_base(of(None));
        file.merge_changes(&Tokens::default(), &bound("alice", "https://r1"))
            .unwrap();
        assert!(file.base("https://old").is_none());
        assert!(file.base("https://r1").is_some());
    }

    #[test]
    fn tokens_are_never_printed() {
        let t = set(None, 0);
        assert!(!format!("{t:?}").contains("\"at\""));
        let json = serde_json::to_string(&t).unwrap();
        let back: TokenSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back.access_token.expose(), "at");
    }
}
