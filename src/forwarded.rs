//! Trusting a proxy in front (gunicorn's `forwarded_allow_ips` and `secure_scheme_headers`,
//! nginx's realip module for `real_ip_header`): which peers' forwarding headers are
//! believed, whether a request came over HTTPS, and the client's address. A header from a
//! peer that is not trusted changes nothing; a malformed value is ignored, never an error.

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

impl Forwarding {
    /// Whether the peer `addr` (the connection's REMOTE_ADDR) may forward.
    pub fn trusts(&self, addr: &str) -> bool {
        addr.parse().is_ok_and(|ip| self.allow.contains(ip))
    }

    /// Reads the forwarding headers among `fields` (name, value) of a request from a trusted
    /// peer.
    pub fn read<'f>(
        &self,
        fields: impl Iterator<Item = (&'f [u8], &'f [u8])> + Clone,
    ) -> Forwarded {
        let https = fields.clone().any(|(name, value)| {
            let value = value.trim_ascii();
            self.secure_headers.iter().any(|(n, v)| {
                name.eq_ignore_ascii_case(n.as_bytes()) && value.eq_ignore_ascii_case(v.as_bytes())
            }) || (name.eq_ignore_ascii_case(b"forwarded") && forwarded_proto_https(value))
        });
        let client = self.real_ip.and_then(|header| {
            let values: Vec<&[u8]> = fields
                .filter(|(name, _)| name.eq_ignore_ascii_case(header.name()))
                .map(|(_, value)| value)
                .collect();
            self.client(header, &values)
        });
        Forwarded { https, client }
    }

    /// The client address `header` gives (its field lines in order, joined as one list):
    /// the rightmost address not in `allow` (nginx's `real_ip_recursive on`), or the leftmost
    /// when all are trusted. None when the header is absent or any element is malformed.
    fn client(&self, header: RealIpHeader, values: &[&[u8]]) -> Option<IpAddr> {
        let mut chain = Vec::new();
        for value in values {
            let text = std::str::from_utf8(value).ok()?;
            match header {
                RealIpHeader::XRealIp => chain.push(parse_node(text.trim())?),
                RealIpHeader::XForwardedFor => {
                    for item in text.split(',') {
                        chain.push(parse_node(item.trim())?);
                    }
                }
                RealIpHeader::Forwarded => {
                    for element in text.split(',') {
                        let node = element.split(';').find_map(|pair| {
                            let (key, value) = pair.trim().split_once('=')?;
                            key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
                        })?;
                        chain.push(parse_node(node.trim_matches('"'))?);
                    }
                }
            }
        }
        let first = *chain.first()?;
        Some(
            chain
                .iter()
                .rev()
                .copied()
                .find(|ip| !self.allow.contains(*ip))
                .unwrap_or(first),
        )
    }
}

/// An address as forwarding headers write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:80`.
fn parse_node(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (addr, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Whether an RFC 7239 `Forwarded` value's first element says `proto=https`.
fn forwarded_proto_https(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let first = text.split(',').next().unwrap_or("");
    first.split(';').any(|pair| {
        pair.trim().split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("proto")
                && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
        })
    })
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
        f.read(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
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
        assert!(!read(&f, &[("Forwarded", "for=1.2.3.4;proto=http, proto=https")]).https);
    }

    #[test]
    fn real_ip_is_the_rightmost_untrusted_address() {
        let xff = forwarding("127.0.0.1, 10.0.0.0/8", Some(RealIpHeader::XForwardedFor));
        let client = |fields: &[(&str, &str)]| read(&xff, fields).client;
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
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
            ip("10.0.0.3")
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "1.2.3.4, junk")]),
            None,
            "malformed: ignored"
        );
        assert_eq!(
            client(&[("X-Forwarded-For", "1.2.3.4:8080")]),
            ip("1.2.3.4")
        );
        assert_eq!(client(&[]), None);
        let fwd = forwarding("127.0.0.1", Some(RealIpHeader::Forwarded));
        let got = read(
            &fwd,
            &[(
                "Forwarded",
                "for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.1",
            )],
        );
        assert_eq!(got.client, ip("2001:db8::1"));
        assert!(got.https);
        assert_eq!(read(&fwd, &[("Forwarded", "for=unknown")]).client, None);
        let real = forwarding("127.0.0.1", Some(RealIpHeader::XRealIp));
        assert_eq!(
            read(&real, &[("X-Real-IP", " 9.9.9.9 ")]).client,
            ip("9.9.9.9")
        );
    }
}
