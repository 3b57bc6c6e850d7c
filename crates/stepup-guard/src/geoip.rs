//! Geolocation from MaxMind-format databases (GeoLite2 / GeoIP2 Country,
//! City and ASN, or any database with the same fields): the country, the
//! autonomous system and, from a City database, coordinates.

use std::net::IpAddr;
use std::path::Path;

use maxminddb::Reader;
use serde::Deserialize;
use thiserror::Error;

use crate::risk::{CountryCode, GeoLookup, GeoPoint};

/// Why a database cannot be used.
#[derive(Debug, Error)]
#[error("cannot use the geolocation database {path}: {reason}")]
pub struct GeoIpError {
    path: String,
    reason: String,
}

/// One or two MaxMind databases: locations (Country or City) and, if
/// given, autonomous systems (ASN). Loaded in memory.
pub struct MaxMindGeo {
    locations: Reader<Vec<u8>>,
    asn: Option<Reader<Vec<u8>>>,
}

impl std::fmt::Debug for MaxMindGeo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaxMindGeo")
            .field("locations", &self.locations.metadata().database_type)
            .field(
                "asn",
                &self.asn.as_ref().map(|r| r.metadata().database_type.clone()),
            )
            .finish()
    }
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Country<'a>>,
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
}

#[derive(Deserialize)]
struct Country<'a> {
    #[serde(default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

fn open(path: &Path) -> Result<Reader<Vec<u8>>, GeoIpError> {
    let fail = |reason: String| GeoIpError {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    Reader::from_source(bytes).map_err(|e| fail(e.to_string()))
}

impl MaxMindGeo {
    /// Opens a location database, and optionally an ASN database.
    pub fn open(locations: &Path, asn: Option<&Path>) -> Result<Self, GeoIpError> {
        Ok(Self {
            locations: open(locations)?,
            asn: asn.map(open).transpose()?,
        })
    }

    fn record(reader: &Reader<Vec<u8>>, ip: IpAddr) -> Option<Record<'_>> {
        // An address the database does not cover, or a record that does not
        // decode, is simply unknown.
        reader.lookup(ip).ok()?.decode::<Record<'_>>().ok()?
    }
}

impl GeoLookup for MaxMindGeo {
    fn lookup(&self, ip: IpAddr) -> GeoPoint {
        let mut point = GeoPoint::default();
        if let Some(r) = Self::record(&self.locations, ip) {
            point.country = r.country.and_then(|c| c.iso_code).and_then(CountryCode::new);
            point.coordinates = r
                .location
                .and_then(|l| Some((l.latitude?, l.longitude?)))
                .filter(|(lat, lon)| lat.abs() <= 90.0 && lon.abs() <= 180.0);
            point.asn = r.autonomous_system_number;
        }
        if let Some(asn) = self.asn.as_ref().and_then(|reader| Self::record(reader, ip)) {
            point.asn = asn.autonomous_system_number.or(point.asn);
        }
        point
    }
}
