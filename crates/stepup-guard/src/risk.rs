//! What the guard observes about a request for the policy's risk rules:
//! where it comes from (client IP through trusted proxies, then a
//! geolocation lookup), which device presents it, and the transaction it
//! carries. Together with the token's claims these become the request's
//! [`Signals`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use stepup_core::risk::Signals;

use crate::activity::{Activity, ActivityStore};
use crate::amount::{AmountSource, Transaction};
use crate::client_ip::{ForwardedHeader, IpNet, client_ip};
use crate::verify::VerifiedToken;

/// An ISO 3166-1 alpha-2 country code, upper-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Two ASCII letters, in either case.
    pub fn new(code: &str) -> Option<Self> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        // Two ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an address is.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GeoPoint {
    /// The country.
    pub country: Option<CountryCode>,
    /// The autonomous system.
    pub asn: Option<u32>,
    /// Latitude and longitude, degrees.
    pub coordinates: Option<(f64, f64)>,
}

/// Looks addresses up (a MaxMind database, or anything else).
pub trait GeoLookup: Send + Sync {
    /// Where `ip` is, as far as known.
    fn lookup(&self, ip: IpAddr) -> GeoPoint;
}

/// How the guard observes requests for risk rules. Nothing is observed by
/// default: risk rules then see only the token's claims.
#[derive(Clone, Default)]
pub struct RiskOptions {
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) forwarded_header: ForwardedHeader,
    pub(crate) geo: Option<Arc<dyn GeoLookup>>,
    pub(crate) amount: Option<AmountSource>,
    pub(crate) device_header: Option<HeaderName>,
    pub(crate) activity: Option<Arc<dyn ActivityStore>>,
}

impl fmt::Debug for RiskOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RiskOptions")
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forwarded_header", &self.forwarded_header)
            .field("geo", &self.geo.is_some())
            .field("amount", &self.amount)
            .field("device_header", &self.device_header)
            .field("activity", &self.activity.as_ref().map(|a| *a.options()))
            .finish()
    }
}

impl RiskOptions {
    /// No observation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Proxies whose forwarded header (see
    /// [`RiskOptions::forwarded_header`]) is believed.
    pub fn trusted_proxies(mut self, proxies: Vec<IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// The header the trusted proxies write the client's address in
    /// (`X-Forwarded-For` by default); the other is ignored, since those
    /// proxies pass it on as the client wrote it.
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.forwarded_header = header;
        self
    }

    /// Where client addresses are looked up.
    pub fn geo(mut self, geo: Arc<dyn GeoLookup>) -> Self {
        self.geo = Some(geo);
        self
    }

    /// Where the amount of a JSON body is.
    pub fn amount(mut self, source: AmountSource) -> Self {
        self.amount = Some(source);
        self
    }

    /// Where subjects' recent activity is kept (request rate, addresses,
    /// refused step-ups, travel).
    pub fn activity(mut self, store: Arc<dyn ActivityStore>) -> Self {
        self.activity = Some(store);
        self
    }

    /// The header carrying the device identifier of the request, compared
    /// with the token's `device_id`.
    pub fn device_header(mut self, header: HeaderName) -> Self {
        self.device_header = Some(header);
        self
    }
}

/// What the guard saw of one request.
#[derive(Debug, Clone, Default)]
pub struct Observed<'h> {
    /// The client address, if the connection's peer is known.
    pub client_ip: Option<IpAddr>,
    /// Its location.
    pub geo: GeoPoint,
    /// The device identifier the request presents.
    pub device: Option<&'h str>,
    /// Whether devices are observed at all (a device header is
    /// configured): if not, a token's device binding cannot be compared.
    pub devices_observed: bool,
    /// The key a valid DPoP proof was made with (RFC 7638 thumbprint).
    pub proof_key: Option<String>,
    /// The transaction in its body, when read.
    pub transaction: Option<Transaction>,
    /// The JSON body, when read (for transaction-bound routes), numbers
    /// as written.
    pub body: Option<stepup_core::json::Json>,
}

impl RiskOptions {
    /// Observes a request that came from `peer`.
    pub(crate) fn observe<'h>(&self, peer: Option<IpAddr>, headers: &'h HeaderMap) -> Observed<'h> {
        let client = peer.map(|p| client_ip(p, headers, &self.trusted_proxies, self.forwarded_header));
        let geo = match (&self.geo, client) {
            (Some(geo), Some(ip)) => geo.lookup(ip),
            _ => GeoPoint::default(),
        };
        let device = self
            .device_header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        Observed {
            client_ip: client,
            geo,
            device,
            devices_observed: self.device_header.is_some(),
            proof_key: None,
            transaction: None,
            body: None,
        }
    }
}

/// The risk signals of a request with its verified token and the
/// subject's activity.
pub(crate) fn signals<'a>(
    observed: &'a Observed<'_>,
    token: &'a VerifiedToken,
    activity: Option<(Activity, &crate::activity::ActivityOptions)>,
) -> Signals<'a> {
    let transaction = observed.transaction.as_ref();
    let (a, options) = match activity {
        Some((a, o)) => (Some(a), Some(o)),
        None => (None, None),
    };
    // The body's amount with the body's currency; without an amount in
    // the body, both from what the token was approved for (a body with a
    // currency and no amount must not relabel the token's amount).
    let (amount, currency) = match transaction.and_then(|t| t.amount) {
        Some(amount) => (Some(amount), transaction.and_then(|t| t.currency.as_deref())),
        None => token
            .authorization_details
            .as_ref()
            .map_or((None, None), stepup_core::risk::approved_amount),
    };
    Signals {
        request_rate: a.map(|a| a.requests),
        distinct_ips: a.map(|a| a.distinct_ips),
        failed_step_ups: a.map(|a| a.failed_step_ups),
        anomaly_score: a.zip(options).map(|(a, o)| a.anomaly_score(o)),
        travel_speed_kmh: a.and_then(|a| a.travel_speed_kmh),
        impossible_travel: a.zip(options).and_then(|(a, o)| a.impossible_travel(o)),
        amount,
        currency,
        country: observed.geo.country.as_ref().map(CountryCode::as_str),
        auth_country: token.auth_country.as_deref(),
        asn: observed.geo.asn,
        // A DPoP-bound token's device is its key, proven by the request's
        // proof; a bearer token's, the device it was issued to.
        device: observed.proof_key.as_deref().or(observed.device),
        bound_device: token
            .bound_jkt()
            .filter(|_| observed.proof_key.is_some())
            .or(token.device_id.as_deref().filter(|_| observed.devices_observed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn country_codes() {
        assert_eq!(CountryCode::new("fr").unwrap().as_str(), "FR");
        for bad in ["", "F", "FRA", "F1", "é"] {
            assert!(CountryCode::new(bad).is_none(), "{bad}");
        }
    }
}
