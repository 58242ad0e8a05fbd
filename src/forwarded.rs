//! Trusting a proxy in front (gunicorn's `forwarded_allow_ips` and `secure_scheme_headers`,
//! nginx's realip module for `real_ip_header`): which peers' forwarding headers are
//! believed, whether a request came over HTTPS, and the client's address. A header from a
//! peer that is not trusted changes nothing. A list is walked from the right and stops at
//! the first element it cannot vouch for, so no value a client adds makes a proxy's own
//! address the client's; scheme headers that disagree are refused (400), as in gunicorn.

use std::net::IpAddr;

/// A set of peers: addresses, CIDR blocks, or `*` for any (`forwarded_allow_ips`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    any: bool,
    blocks: Vec<(IpAddr, u8)>,
}

impl IpSet {
    /// Parses `items` (each `ADDR`, `ADDR/BITS` or `*`; empty items are skipped). Errors: the
    /// item that is none of these.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<IpSet, String> {
        let mut set = IpSet::default();
        for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                set.any = true;
                continue;
            }
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("`{item}` is not an address, a CIDR block or `*`"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|&n| n <= max)
                    .ok_or_else(|| format!("`{item}`: prefix length must be 0 to {max}"))?,
                None => max,
            };
            set.blocks.push((addr, bits));
        }
        Ok(set)
    }

    /// Parses a comma-separated list (gunicorn's string form).
    pub fn parse_list(text: &str) -> Result<IpSet, String> {
        IpSet::parse(text.split(','))
    }

    /// Whether `ip` is in the set (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.any
            || self
                .blocks
                .iter()
                .any(|&(block, bits)| in_block(ip, block, bits))
    }
}

fn in_block(ip: IpAddr, block: IpAddr, bits: u8) -> bool {
    match (ip, block) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// The field `real_ip_header` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealIpHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// `X-Real-IP: client`.
    XRealIp,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    Forwarded,
}

impl RealIpHeader {
    /// Parses the setting's value (case-insensitive). Errors: a one-line reason.
    pub fn parse(text: &str) -> Result<RealIpHeader, String> {
        match text.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(RealIpHeader::XForwardedFor),
            "x-real-ip" => Ok(RealIpHeader::XRealIp),
            "forwarded" => Ok(RealIpHeader::Forwarded),
            _ => Err(format!(
                "must be X-Forwarded-For, X-Real-IP or Forwarded, got {text:?}"
            )),
        }
    }

    fn name(self) -> &'static [u8] {
        match self {
            RealIpHeader::XForwardedFor => b"x-forwarded-for",
            RealIpHeader::XRealIp => b"x-real-ip",
            RealIpHeader::Forwarded => b"forwarded",
        }
    }
}

/// What a worker believes of forwarding headers (from the configuration).
#[derive(Clone, Debug, Default)]
pub struct Forwarding {
    /// `forwarded_allow_ips`.
    pub allow: IpSet,
    /// `secure_scheme_headers`: (field name, value), matched case-insensitively.
    pub secure_headers: Vec<(String, String)>,
    /// `real_ip_header`.
    pub real_ip: Option<RealIpHeader>,
}

/// What forwarding headers say about one request from a trusted peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// The request came over HTTPS (url_scheme `https`).
    pub https: bool,
    /// The client's address, when `real_ip_header` is set and names a usable one.
    pub client: Option<IpAddr>,
}

/// Forwarding headers from a trusted peer that contradict each other about the scheme: one
/// of `secure_scheme_headers` (or `Forwarded: proto=`) says https, another says otherwise.
/// The request is refused with 400, as gunicorn's `InvalidSchemeHeaders`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchemeConflict;

impl std::fmt::Display for SchemeConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("forwarding headers disagree about the scheme")
    }
}

/// Where the walk from the right of a forwarding list stopped (nginx's `real_ip_recursive on`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stop {
    /// The element the walk stopped at: the client's (first untrusted address), a
    /// non-address element, or the leftmost when every address is trusted.
    index: usize,
    /// The client's address: the untrusted address found, else the last trusted hop passed
    /// (None when the walk stopped at the rightmost element, which is not an address: the
    /// TCP peer stays the client).
    client: Option<IpAddr>,
}

impl Forwarding {
    /// Reads the forwarding headers among `fields` (name, value) of a request from a trusted
    /// peer. Errors: [`SchemeConflict`] when the scheme headers present disagree.
    pub fn read<'f>(
        &self,
        fields: impl Iterator<Item = (&'f [u8], &'f [u8])> + Clone,
    ) -> Result<Forwarded, SchemeConflict> {
        let mut https: Option<bool> = None;
        let mut note = |says_https: bool| match https.replace(says_https) {
            Some(before) if before != says_https => Err(SchemeConflict),
            _ => Ok(()),
        };
        for (name, value) in fields.clone() {
            let secure = self
                .secure_headers
                .iter()
                .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()));
            if let Some((_, secure_value)) = secure {
                note(
                    value
                        .trim_ascii()
                        .eq_ignore_ascii_case(secure_value.as_bytes()),
                )?;
            }
        }
        let forwarded = elements(&fields, RealIpHeader::Forwarded);
        if !forwarded.is_empty() {
            let stop = self.walk(&forwarded);
            if let Some(proto) = stop.and_then(|s| forwarded[s.index].proto) {
                note(proto.eq_ignore_ascii_case("https"))?;
            }
        }
        let client = self.real_ip.and_then(|header| match header {
            RealIpHeader::Forwarded => self.walk(&forwarded)?.client,
            _ => self.walk(&elements(&fields, header))?.client,
        });
        Ok(Forwarded {
            https: https.unwrap_or(false),
            client,
        })
    }

    /// Walks `list` (a forwarding list, left to right, each node an address or not) from the
    /// right as nginx's `real_ip_recursive on` does: trusted addresses are skipped; the first
    /// untrusted address is the client; an element that is not an address (`unknown`, an
    /// obfuscated identifier, garbage) stops the walk at the last trusted hop; elements left
    /// of the stop are never looked at. None for an empty list.
    fn walk(&self, list: &[Element<'_>]) -> Option<Stop> {
        let mut last = None;
        for (index, element) in list.iter().enumerate().rev() {
            match element.node {
                Some(ip) if self.allow.contains(ip) => {
                    last = Some(Stop {
                        index,
                        client: Some(ip),
                    })
                }
                Some(ip) => {
                    return Some(Stop {
                        index,
                        client: Some(ip),
                    })
                }
                None => {
                    return Some(Stop {
                        index,
                        client: last.and_then(|s| s.client),
                    })
                }
            }
        }
        last
    }
}

/// One element of a forwarding list: its node (`for=` in RFC 7239) and, in `Forwarded`, its
/// `proto=`.
struct Element<'f> {
    node: Option<IpAddr>,
    proto: Option<&'f str>,
}

/// The elements of `header` among `fields`, its field lines joined into one list in order
/// (RFC 9110 §5.3). A line that is not UTF-8 is one element that is not an address.
fn elements<'f>(
    fields: &(impl Iterator<Item = (&'f [u8], &'f [u8])> + Clone),
    header: RealIpHeader,
) -> Vec<Element<'f>> {
    let mut out = Vec::new();
    for (_, value) in fields
        .clone()
        .filter(|(n, _)| n.eq_ignore_ascii_case(header.name()))
    {
        let Ok(text) = std::str::from_utf8(value) else {
            out.push(Element {
                node: None,
                proto: None,
            });
            continue;
        };
        match header {
            RealIpHeader::XRealIp => out.push(Element {
                node: parse_node(text.trim()),
                proto: None,
            }),
            RealIpHeader::XForwardedFor => out.extend(
                split_outside_quotes(text, ',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| Element {
                        node: parse_node(item),
                        proto: None,
                    }),
            ),
            RealIpHeader::Forwarded => out.extend(
                split_outside_quotes(text, ',')
                    .filter(|e| !e.trim().is_empty())
                    .map(forwarded_element),
            ),
        }
    }
    out
}

/// An RFC 7239 element (`for=...;proto=...;by=...`): a missing or non-address `for` is not
/// an address.
fn forwarded_element(element: &str) -> Element<'_> {
    let mut found = Element {
        node: None,
        proto: None,
    };
    for pair in split_outside_quotes(element, ';') {
        let Some((key, value)) = pair.trim().split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        match key.trim() {
            k if k.eq_ignore_ascii_case("for") => found.node = parse_node(value),
            k if k.eq_ignore_ascii_case("proto") => found.proto = Some(value),
            _ => {}
        }
    }
    found
}

/// Splits `text` at `separator`, except inside a quoted string (RFC 9110 §5.6.4).
fn split_outside_quotes(text: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut escaped = false;
    text.split(move |c: char| {
        match (escaped, quoted, c) {
            (true, _, _) => escaped = false,
            (false, true, '\\') => escaped = true,
            (false, _, '"') => quoted = !quoted,
            (false, false, c) if c == separator => return true,
            _ => {}
        }
        false
    })
}

/// An address as forwarding headers write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80`. None for anything else.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return port_ok.then(|| addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6))?;
    }
    let (addr, port) = text.rsplit_once(':')?;
    is_port(port).then_some(())?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port as RFC 7239 §6 and nginx accept it: 1 to 5 digits up to 65535.
fn is_port(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarding(allow: &str, real_ip: Option<RealIpHeader>) -> Forwarding {
        Forwarding {
            allow: IpSet::parse_list(allow).unwrap(),
            secure_headers: vec![
                ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
                ("X-FORWARDED-PROTO".into(), "https".into()),
                ("X-FORWARDED-SSL".into(), "on".into()),
            ],
            real_ip,
        }
    }

    fn read(f: &Forwarding, fields: &[(&str, &str)]) -> Forwarded {
        try_read(f, fields).unwrap()
    }

    fn try_read(f: &Forwarding, fields: &[(&str, &str)]) -> Result<Forwarded, SchemeConflict> {
        f.read(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn sets_and_blocks() {
        let set = IpSet::parse_list("127.0.0.1, ::1, 10.0.0.0/8, 2001:db8::/32").unwrap();
        for yes in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "2001:db8::5",
            "::ffff:10.0.0.1",
        ] {
            assert!(set.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["127.0.0.2", "11.0.0.1", "2001:db9::1"] {
            assert!(!set.contains(no.parse().unwrap()), "{no}");
        }
        assert!(IpSet::parse_list("*")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(IpSet::parse_list("10.0.0.0/33").is_err());
        assert!(IpSet::parse_list("example.com").is_err());
        assert!(IpSet::parse_list("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn scheme_from_secure_headers_and_forwarded() {
        let f = forwarding("127.0.0.1", None);
        assert!(read(&f, &[("x-forwarded-proto", "HTTPS")]).https);
        assert!(read(&f, &[("X-Forwarded-Ssl", "on")]).https);
        assert!(!read(&f, &[("X-Forwarded-Proto", "http")]).https);
        assert!(read(&f, &[("Forwarded", "for=1.2.3.4;proto=https")]).https);
        assert!(
            read(
                &f,
                &[(
                    "Forwarded",
                    "for=1.2.3.4;proto=https, for=127.0.0.1;proto=http"
                )]
            )
            .https,
            "proto of the client's element: the one the first trusted proxy wrote"
        );
        assert!(
            !read(
                &f,
                &[(
                    "Forwarded",
                    "for=5.5.5.5;proto=https, for=1.2.3.4;proto=http"
                )]
            )
            .https,
            "an element left of the client is never looked at"
        );
        assert!(
            read(
                &f,
                &[("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on")]
            )
            .https
        );
    }

    #[test]
    fn scheme_headers_that_disagree_are_a_conflict() {
        let f = forwarding("127.0.0.1", None);
        for fields in [
            &[("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "on")][..],
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Protocol", "tls"),
            ][..],
            &[
                ("X-Forwarded-Proto", "http"),
                ("X-Forwarded-Proto", "https"),
            ][..],
            &[
                ("X-Forwarded-Proto", "http"),
                ("Forwarded", "for=1.2.3.4;proto=https"),
            ][..],
        ] {
            assert_eq!(try_read(&f, fields), Err(SchemeConflict), "{fields:?}");
        }
    }

    #[test]
    fn real_ip_is_the_rightmost_untrusted_address() {
        let xff = forwarding("127.0.0.1, 10.0.0.0/8", Some(RealIpHeader::XForwardedFor));
        let client = |fields: &[(&str, &str)]| read(&xff, fields).client;
        assert_eq!(client(&[("X-Forwarded-For", "1.2.3.4")]), ip("1.2.3.4"));
        assert_eq!(
            client(&[("X-Forwarded-For", "6.6.6.6, 1.2.3.4, 10.0.0.2")]),
            ip("1.2.3.4")
        );
        assert_eq!(
            client(&[
                ("X-Forwarded-For", "6.6.6.6"),
                ("X-Forwarded-For", "1.2.3.4")
            ]),
            ip("1.2.3.4"),
            "field lines join into one list"
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "10.0.0.3, 10.0.0.2")]),
            ip("10.0.0.3"),
            "all trusted: the leftmost"
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "1.2.3.4:8080")]),
            ip("1.2.3.4")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "[2001:db8::1]:80, 10.0.0.1")]),
            ip("2001:db8::1")
        );
        assert_eq!(client(&[]), None);
        let real = forwarding("127.0.0.1", Some(RealIpHeader::XRealIp));
        assert_eq!(
            read(&real, &[("X-Real-IP", " 9.9.9.9 ")]).client,
            ip("9.9.9.9")
        );
    }

    #[test]
    fn garbage_in_the_list_never_makes_the_proxy_the_client() {
        let xff = forwarding("127.0.0.1, 10.0.0.0/8", Some(RealIpHeader::XForwardedFor));
        let client = |value: &str| read(&xff, &[("X-Forwarded-For", value)]).client;
        // What nginx forwards for a client that sent `X-Forwarded-For: garbage`.
        assert_eq!(client("garbage, 6.6.6.6"), ip("6.6.6.6"));
        assert_eq!(client("6.6.6.6, garbage, 9.9.9.9"), ip("9.9.9.9"));
        assert_eq!(
            client("1.2.3.4, garbage"),
            None,
            "rightmost not an address: the TCP peer"
        );
        assert_eq!(
            client("1.2.3.4, garbage, 10.0.0.7"),
            ip("10.0.0.7"),
            "a non-address stops the walk at the last trusted hop"
        );
        assert_eq!(client("1.2.3.4:99999, 6.6.6.6"), ip("6.6.6.6"));
        assert_eq!(client("[::1]x, 6.6.6.6"), ip("6.6.6.6"));
        let fwd = forwarding("127.0.0.1", Some(RealIpHeader::Forwarded));
        let client = |value: &str| read(&fwd, &[("Forwarded", value)]).client;
        assert_eq!(client("for=unknown, for=6.6.6.6"), ip("6.6.6.6"));
        assert_eq!(client("for=6.6.6.6, for=_hidden"), None);
        assert_eq!(
            client("for=6.6.6.6, for=_hidden, for=127.0.0.1"),
            ip("127.0.0.1")
        );
        assert_eq!(client("for=unknown"), None);
        assert_eq!(
            client("for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.1"),
            ip("2001:db8::1")
        );
        assert_eq!(
            client("for=\"[2001:db8::1]:4711\";by=\"a,b\", for=1.2.3.4"),
            ip("1.2.3.4"),
            "a comma inside a quoted string separates nothing"
        );
        assert_eq!(client("by=1.1.1.1, for=7.7.7.7"), ip("7.7.7.7"));
        assert_eq!(
            client("by=1.1.1.1"),
            None,
            "an element without for= is not an address"
        );
    }
}
