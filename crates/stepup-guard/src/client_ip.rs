//! The client's IP address: the peer's, unless the peer is a proxy the
//! guard was told to trust; then the nearest address, in the one header
//! those proxies write (`X-Forwarded-For`, or `Forwarded` of RFC 7239),
//! that is not itself a trusted proxy.
//!
//! Nothing is trusted by default: any client can write those headers, so
//! from an untrusted peer they are ignored. Behind trusted proxies, the
//! header they do not write is ignored as well: a proxy that appends to
//! `X-Forwarded-For` (nginx's default, most cloud balancers) passes a
//! client's `Forwarded` on untouched, and reading it would let the client
//! choose its address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use serde::Deserialize;
use thiserror::Error;

/// The header the trusted proxies write the client's address in; the
/// other one is never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (nginx's `proxy_add_x_forwarded_for`, most cloud
    /// load balancers): the default.
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// `Forwarded` (RFC 7239), for proxies configured to write it.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// Why a forwarded-header name is not one the guard reads.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a forwarded header: expected \"x-forwarded-for\" or \"forwarded\"")]
pub struct ForwardedHeaderError(String);

impl FromStr for ForwardedHeader {
    type Err = ForwardedHeaderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err(ForwardedHeaderError(s.to_owned())),
        }
    }
}

impl fmt::Display for ForwardedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        })
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why a network does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not an IP network: expected an address, or address/prefix such as 10.0.0.0/8")]
pub struct IpNetError(String);

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IpNetError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Self { addr, prefix })
    }
}

impl IpNet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request that came from `peer`, reading only
/// `header` (the one the trusted proxies write).
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted_proxies: &[IpNet],
    header: ForwardedHeader,
) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(peer) {
        return canonical(peer);
    }
    // The hops, nearest last, from the proxies' header only.
    let hops = match header {
        ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
        ForwardedHeader::Forwarded => forwarded_for(headers),
    };
    let Some(hops) = hops else {
        return canonical(peer);
    };
    // From the nearest hop outwards, skip our own proxies; the first other
    // address is the client. An unreadable hop ends the walk: what lies
    // beyond it cannot be told from what a client wrote.
    let mut client = canonical(peer);
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted(*ip) => client = canonical(*ip),
            Some(ip) => return canonical(*ip),
            None => return client,
        }
    }
    client
}

/// The `for=` addresses of every `Forwarded` header, in order; `None`
/// for an unreadable or obfuscated one (`unknown`, `_hidden`).
fn forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut seen = false;
    for value in headers.get_all("forwarded") {
        seen = true;
        for element in list_elements(value) {
            let for_value = element.and_then(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim().eq_ignore_ascii_case("for").then(|| value.trim())
                })
            });
            hops.push(for_value.and_then(parse_node));
        }
    }
    seen.then_some(hops)
}

/// The comma-separated elements of one forwarding header line, each `None`
/// when it is not visible ASCII. Element by element, not line by line: a
/// client that writes bytes beyond ASCII into its part of a line must not
/// make unreadable the hop a trusted proxy appended after it.
pub fn list_elements(value: &http::HeaderValue) -> impl Iterator<Item = Option<&str>> {
    value.as_bytes().split(|b| *b == b',').map(|element| {
        std::str::from_utf8(element)
            .ok()
            .filter(|text| text.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
    })
}

/// An RFC 7239 node: `192.0.2.1`, `"192.0.2.1:8080"`, `"[2001:db8::1]:4711"`.
fn parse_node(value: &str) -> Option<IpAddr> {
    let value = value.trim_matches('"');
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    match value.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => value
            .rsplit_once(':')?
            .0
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(IpAddr::V4),
    }
}

fn x_forwarded_for(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut seen = false;
    for value in headers.get_all("x-forwarded-for") {
        seen = true;
        hops.extend(list_elements(value).map(|h| h.and_then(|h| parse_node(h.trim()))));
    }
    seen.then_some(hops)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn proxies() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]
    }

    #[test]
    fn networks_parse_and_contain() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!("0.0.0.0/0".parse::<IpNet>().unwrap().contains(ip("8.8.8.8")));
        assert!(
            "2001:db8::/32"
                .parse::<IpNet>()
                .unwrap()
                .contains(ip("2001:db8:1::5"))
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "x",
            "10.0.0.0/-1",
            "::/129",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const RFC7239: ForwardedHeader = ForwardedHeader::Forwarded;

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        for header in [XFF, RFC7239] {
            assert_eq!(
                client_ip(ip("203.0.113.9"), &spoofed, &proxies(), header),
                ip("203.0.113.9")
            );
            // Nothing trusted by default.
            assert_eq!(client_ip(ip("10.0.0.2"), &spoofed, &[], header), ip("10.0.0.2"));
        }
    }

    #[test]
    fn through_trusted_proxies_the_nearest_untrusted_hop_is_the_client() {
        // The client wrote a fake first hop; our proxies appended the rest.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies(), XFF), ip("198.51.100.7"));
        // Several headers are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies(), XFF), ip("198.51.100.7"));
        // RFC 7239, with ports, quotes and IPv6, from proxies that write it.
        let h = headers(&[(
            "forwarded",
            "for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.3",
        )]);
        assert_eq!(client_ip(ip("::1"), &h, &proxies(), RFC7239), ip("2001:db8::7"));
        let h = headers(&[("forwarded", "for=\"192.0.2.60:8080\"")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &proxies(), RFC7239),
            ip("192.0.2.60")
        );
        // Only proxies in the chain: the farthest one.
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.5")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies(), XFF), ip("10.0.0.9"));
        // An unreadable hop ends the walk at the last trusted address.
        let h = headers(&[("forwarded", "for=unknown, for=10.0.0.5")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies(), RFC7239), ip("10.0.0.5"));
        let h = headers(&[("x-forwarded-for", "1.1.1.1, garbage")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies(), XFF), ip("10.0.0.2"));
        // No header: the proxy itself.
        for header in [XFF, RFC7239] {
            assert_eq!(
                client_ip(ip("10.0.0.2"), &HeaderMap::new(), &proxies(), header),
                ip("10.0.0.2")
            );
        }
    }

    /// Review of issue 16 §5: bytes beyond ASCII in the part of a line the
    /// client wrote (nginx appends to the same line) leave the hop the
    /// proxy appended readable; before, the whole line was unreadable and
    /// the client was taken to be the proxy.
    #[test]
    fn a_clients_bytes_beyond_ascii_do_not_hide_the_hop_after_them() {
        for (name, line, header) in [
            ("x-forwarded-for", &b"\xff, 198.51.100.7"[..], XFF),
            ("forwarded", &b"for=\xff, for=198.51.100.7"[..], RFC7239),
        ] {
            let mut h = HeaderMap::new();
            h.append(name, HeaderValue::from_bytes(line).unwrap());
            assert_eq!(
                client_ip(ip("10.0.0.2"), &h, &proxies(), header),
                ip("198.51.100.7"),
                "{name}"
            );
        }
        let value = HeaderValue::from_bytes(b"1.1.1.1, \xfe\xff ,2.2.2.2").unwrap();
        let elements: Vec<Option<&str>> = list_elements(&value).collect();
        assert_eq!(elements, [Some("1.1.1.1"), None, Some("2.2.2.2")]);
    }

    #[test]
    fn only_the_header_the_proxies_write_is_read() {
        // nginx appended the client's address to X-Forwarded-For and passed
        // on the Forwarded header the client wrote.
        let h = headers(&[
            ("forwarded", "for=203.0.113.66"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies(), XFF), ip("198.51.100.7"));
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &proxies(), ForwardedHeader::default()),
            ip("198.51.100.7"),
            "X-Forwarded-For by default"
        );
        // A Forwarded alone does not stand in for a missing X-Forwarded-For.
        let h = headers(&[("forwarded", "for=203.0.113.66")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies(), XFF), ip("10.0.0.2"));
        // The control: proxies that write Forwarded, and a client's
        // X-Forwarded-For passed on.
        let h = headers(&[
            ("forwarded", "for=198.51.100.7"),
            ("x-forwarded-for", "203.0.113.66"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &proxies(), RFC7239),
            ip("198.51.100.7")
        );
        let h = headers(&[("x-forwarded-for", "203.0.113.66")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &proxies(), RFC7239), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_header_names() {
        assert_eq!("x-forwarded-for".parse(), Ok(XFF));
        assert_eq!("forwarded".parse(), Ok(RFC7239));
        let e = "X-Real-IP".parse::<ForwardedHeader>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"X-Real-IP\" is not a forwarded header: expected \"x-forwarded-for\" or \"forwarded\""
        );
        assert_eq!(RFC7239.to_string(), "forwarded");
    }
}
