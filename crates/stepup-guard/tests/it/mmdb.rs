//! A small writer of MaxMind DB files (format 2.0, IPv4 search tree,
//! 24-bit records), so that tests build their own geolocation databases,
//! and tests of the guard's MaxMind lookups against them.

use std::net::{IpAddr, Ipv4Addr};

use stepup_guard::geoip::MaxMindGeo;
use stepup_guard::risk::GeoLookup;

/// A value of the MaxMind DB data section.
pub enum Data {
    Str(&'static str),
    U16(u16),
    U32(u32),
    U64(u64),
    Array(Vec<Data>),
    Double(f64),
    Map(Vec<(&'static str, Data)>),
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    assert!(size < 285, "small values only");
    // Types above 7 are "extended": 0 in the control byte, then type - 7.
    let (head, extended) = if kind > 7 {
        (0, Some(kind - 7))
    } else {
        (kind, None)
    };
    let (low, extra) = if size < 29 {
        (u8::try_from(size).unwrap(), None)
    } else {
        (29, Some(u8::try_from(size - 29).unwrap()))
    };
    out.push((head << 5) | low);
    out.extend(extended);
    out.extend(extra);
}

fn unsigned(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, bytes.len() - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(out: &mut Vec<u8>, data: &Data) {
    match data {
        Data::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Data::Double(d) => {
            control(out, 3, 8);
            out.extend_from_slice(&d.to_be_bytes());
        }
        Data::U16(n) => unsigned(out, 5, &n.to_be_bytes()),
        Data::U32(n) => unsigned(out, 6, &n.to_be_bytes()),
        Data::U64(n) => unsigned(out, 9, &n.to_be_bytes()),
        Data::Array(items) => {
            control(out, 11, items.len());
            for item in items {
                encode(out, item);
            }
        }
        Data::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &Data::Str(k));
                encode(out, v);
            }
        }
    }
}

/// A database mapping IPv4 networks to records.
pub fn build(database_type: &'static str, networks: Vec<(&str, Data)>) -> Vec<u8> {
    // A binary trie over the address bits; node 0 is the root.
    #[derive(Clone, Copy)]
    enum Slot {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Slot; 2]> = vec![[Slot::Empty, Slot::Empty]];
    let mut data = Vec::new();
    for (network, record) in &networks {
        let (addr, prefix) = network.split_once('/').unwrap();
        let bits = u32::from(addr.parse::<Ipv4Addr>().unwrap());
        let prefix: usize = prefix.parse().unwrap();
        let offset = data.len();
        encode(&mut data, record);
        let mut node = 0;
        for depth in 0..prefix {
            let bit = usize::from(bits >> (31 - depth) & 1 == 1);
            if depth + 1 == prefix {
                nodes[node][bit] = Slot::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Slot::Node(n) => n,
                    _ => {
                        nodes.push([Slot::Empty, Slot::Empty]);
                        nodes[node][bit] = Slot::Node(nodes.len() - 1);
                        nodes.len() - 1
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for slot in node {
            let value = match *slot {
                Slot::Empty => count,
                Slot::Node(n) => n,
                // Data pointers count from after the 16-byte separator.
                Slot::Data(offset) => count + 16 + offset,
            };
            out.extend_from_slice(&u32::try_from(value).unwrap().to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let metadata = Data::Map(vec![
        ("binary_format_major_version", Data::U16(2)),
        ("binary_format_minor_version", Data::U16(0)),
        ("build_epoch", Data::U64(1_800_000_000)),
        ("database_type", Data::Str(database_type)),
        (
            "description",
            Data::Map(vec![("en", Data::Str("stepup test database"))]),
        ),
        ("ip_version", Data::U16(4)),
        ("languages", Data::Array(vec![Data::Str("en")])),
        ("node_count", Data::U32(u32::try_from(count).unwrap())),
        ("record_size", Data::U16(24)),
    ]);
    encode(&mut out, &metadata);
    out
}

fn country(iso: &'static str, lat: f64, lon: f64) -> Data {
    Data::Map(vec![
        ("country", Data::Map(vec![("iso_code", Data::Str(iso))])),
        (
            "location",
            Data::Map(vec![
                ("latitude", Data::Double(lat)),
                ("longitude", Data::Double(lon)),
            ]),
        ),
    ])
}

/// Paris, São Paulo and a loopback entry, in a City-like database, and
/// one AS in an ASN database; written to a temporary directory.
pub fn databases() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("stepup-mmdb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let city = build(
        "stepup-test-City",
        vec![
            ("203.0.113.0/24", country("FR", 48.8566, 2.3522)),
            ("198.51.100.0/24", country("BR", -23.5505, -46.6333)),
            ("127.0.0.0/8", country("FR", 48.8566, 2.3522)),
        ],
    );
    let asn = build(
        "stepup-test-ASN",
        vec![(
            "198.51.100.0/25",
            Data::Map(vec![("autonomous_system_number", Data::U32(64512))]),
        )],
    );
    let (city_path, asn_path) = (dir.join("city.mmdb"), dir.join("asn.mmdb"));
    std::fs::write(&city_path, city).unwrap();
    std::fs::write(&asn_path, asn).unwrap();
    (city_path, asn_path)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn countries_coordinates_and_systems_are_looked_up() {
    let (city, asn) = databases();
    let geo = MaxMindGeo::open(&city, Some(&asn)).unwrap();
    let paris = geo.lookup(ip("203.0.113.77"));
    assert_eq!(paris.country.unwrap().as_str(), "FR");
    assert_eq!(paris.coordinates, Some((48.8566, 2.3522)));
    assert_eq!(paris.asn, None);
    let sao_paulo = geo.lookup(ip("198.51.100.9"));
    assert_eq!(sao_paulo.country.unwrap().as_str(), "BR");
    assert_eq!(sao_paulo.asn, Some(64512));
    // In the city network, outside the AS's half of it.
    assert_eq!(geo.lookup(ip("198.51.100.200")).asn, None);
    // Not in the database, or IPv6 in an IPv4 database: unknown.
    assert_eq!(geo.lookup(ip("192.0.2.1")).country, None);
    assert_eq!(geo.lookup(ip("2001:db8::1")).country, None);
}

#[test]
fn unusable_databases_are_named_in_the_error() {
    let dir = std::env::temp_dir().join(format!("stepup-mmdb-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.mmdb");
    std::fs::write(&bad, b"not a database").unwrap();
    let e = MaxMindGeo::open(&bad, None).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("cannot use the geolocation database {}", bad.display())),
        "{e}"
    );
    let e = MaxMindGeo::open(&dir.join("missing.mmdb"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.mmdb"), "{e}");
}
