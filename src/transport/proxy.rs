//! HAProxy's PROXY protocol (v1 text and v2 binary, haproxy.org/download/1.8/doc/
//! proxy-protocol.txt), sent by a proxy before the first request of a connection: the
//! client's and the proxy's addresses. Sans-I/O like the rest of [`crate::http::h1::proto`]: bytes in,
//! the header's length and addresses out.

use crate::http::{reject, Reject};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `proxy_protocol` (gunicorn's setting and values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No PROXY header is read.
    Off,
    /// A v1 header is required.
    V1,
    /// A v2 header is required.
    V2,
    /// A v1 or v2 header is read if present.
    Auto,
}

impl Mode {
    /// Parses the setting's value (`off`, `v1`, `v2`, `auto`).
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "off" => Some(Mode::Off),
            "v1" => Some(Mode::V1),
            "v2" => Some(Mode::V2),
            "auto" => Some(Mode::Auto),
            _ => None,
        }
    }
}

/// What a PROXY header says: the client (source) and the address it connected to
/// (destination); both `None` for `UNKNOWN` (v1) or `LOCAL`/unspecified (v2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The client's address and port.
    pub source: Option<SocketAddr>,
    /// The address and port the client connected to.
    pub destination: Option<SocketAddr>,
}

/// The outcome of [`parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed to decide.
    NeedData,
    /// No PROXY header (mode `auto`): the bytes are the request.
    Absent,
    /// A header of `len` bytes.
    Header {
        /// Bytes the header takes at the start of the input.
        len: usize,
        /// What it says.
        header: Header,
    },
    /// Malformed, or missing where required: 400 and close.
    Invalid(Reject),
}

const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 line, CRLF included (the spec's 107 bytes).
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The most address and TLV bytes a v2 header may carry here.
const V2_MAX_PAYLOAD: usize = 2048;
/// The longest PROXY header accepted, in bytes (a v2 header's 16 bytes and its largest
/// payload; a v1 header is at most 107).
pub const MAX_HEADER: usize = 16 + V2_MAX_PAYLOAD;

/// Whether `buf` is a proper prefix of `signature` (could still become it).
fn could_be(buf: &[u8], signature: &[u8]) -> bool {
    buf.len() < signature.len() && signature.starts_with(buf)
}

/// Reads a PROXY header at the start of `buf` in `mode` (not [`Mode::Off`]).
pub fn parse(buf: &[u8], mode: Mode) -> Parsed {
    let v1 = matches!(mode, Mode::V1 | Mode::Auto);
    let v2 = matches!(mode, Mode::V2 | Mode::Auto);
    if v1 && buf.starts_with(V1_PREFIX) {
        return parse_v1(buf);
    }
    if v2 && buf.starts_with(V2_SIGNATURE) {
        return parse_v2(buf);
    }
    if (v1 && could_be(buf, V1_PREFIX)) || (v2 && could_be(buf, V2_SIGNATURE)) {
        return Parsed::NeedData;
    }
    match mode {
        Mode::Auto | Mode::Off => Parsed::Absent,
        _ => Parsed::Invalid(reject(400, "PROXY protocol header required")),
    }
}

fn invalid(why: &'static str) -> Parsed {
    Parsed::Invalid(reject(400, why))
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            invalid("PROXY v1 line too long")
        } else {
            Parsed::NeedData
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return invalid("PROXY v1 line is not text");
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let header = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Header {
            source: None,
            destination: None,
        },
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |text: &str| -> Option<IpAddr> {
                if *family == "TCP4" {
                    text.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
                } else {
                    text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
                }
            };
            let port = |text: &str| -> Option<u16> {
                (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| text.parse().ok())
                    .flatten()
            };
            match (ip(src), ip(dst), port(sport), port(dport)) {
                (Some(s), Some(d), Some(sp), Some(dp)) => Header {
                    source: Some(SocketAddr::new(s, sp)),
                    destination: Some(SocketAddr::new(d, dp)),
                },
                _ => return invalid("malformed PROXY v1 addresses"),
            }
        }
        _ => return invalid("malformed PROXY v1 line"),
    };
    Parsed::Header {
        len: end + 2,
        header,
    }
}

/// The 16-byte v2 header (signature, version/command, family/protocol, length), then the
/// addresses and TLVs.
fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::NeedData;
    }
    let (ver_cmd, family, len) = (
        buf[12],
        buf[13],
        usize::from(u16::from_be_bytes([buf[14], buf[15]])),
    );
    if ver_cmd >> 4 != 2 {
        return invalid("unsupported PROXY v2 version");
    }
    if len > V2_MAX_PAYLOAD {
        return invalid("PROXY v2 header too long");
    }
    if buf.len() < 16 + len {
        return Parsed::NeedData;
    }
    let payload = &buf[16..16 + len];
    let unspecified = Header {
        source: None,
        destination: None,
    };
    let header = match (ver_cmd & 0x0f, family) {
        // LOCAL: a health check from the proxy itself; the peer is who it is.
        (0, _) => unspecified,
        (1, 0x00) => unspecified,
        (1, 0x11) if len >= 12 => {
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    payload[at],
                    payload[at + 1],
                    payload[at + 2],
                    payload[at + 3],
                ))
            };
            let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
            Header {
                source: Some(SocketAddr::new(ip(0), port(8))),
                destination: Some(SocketAddr::new(ip(4), port(10))),
            }
        }
        (1, 0x21) if len >= 36 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&payload[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
            Header {
                source: Some(SocketAddr::new(ip(0), port(32))),
                destination: Some(SocketAddr::new(ip(16), port(34))),
            }
        }
        (1, 0x11 | 0x21) => return invalid("PROXY v2 addresses too short"),
        (1, _) => return invalid("unsupported PROXY v2 family or protocol"),
        _ => return invalid("unsupported PROXY v2 command"),
    };
    Parsed::Header {
        len: 16 + len,
        header,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(line, Mode::Auto),
            Parsed::Header {
                len: 47,
                header: Header {
                    source: addr("192.168.0.1:56324"),
                    destination: addr("192.168.0.11:443"),
                }
            }
        );
        for cut in 0..47 {
            assert_eq!(parse(&line[..cut], Mode::V1), Parsed::NeedData, "cut {cut}");
        }
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n";
        assert!(matches!(
            parse(v6, Mode::V1),
            Parsed::Header { len: 40, .. }
        ));
        for bad in [
            &b"PROXY TCP4 192.168.0.1 192.16...\r\n"[..],
            b"PROXY TCP4 192.168.0.1 192.168.0.11 65iii 100000\r\n",
            b"PROXY TCP4 not-an-ip 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1 192.168.0.11 70000 443\r\n",
            b"PROXY TCP6 192.168.0.1 192.168.0.11 1 2\r\n",
            b"PROXY UDP4 1.1.1.1 2.2.2.2 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad, Mode::Auto), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat();
        assert!(matches!(parse(&long, Mode::V1), Parsed::Invalid(_)));
    }

    #[test]
    fn v2_headers() {
        let mut v4 = V2_SIGNATURE.to_vec();
        v4.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 168, 1, 10, 192, 168, 1, 1, 0x30, 0x39, 0x01, 0xbb,
        ]);
        v4.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            parse(&v4, Mode::V2),
            Parsed::Header {
                len: 28,
                header: Header {
                    source: addr("192.168.1.10:12345"),
                    destination: addr("192.168.1.1:443"),
                }
            }
        );
        for cut in 0..28 {
            assert_eq!(parse(&v4[..cut], Mode::Auto), Parsed::NeedData, "cut {cut}");
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert!(matches!(
            parse(&local, Mode::Auto),
            Parsed::Header {
                len: 16,
                header: Header { source: None, .. }
            }
        ));
        let mut bad = V2_SIGNATURE.to_vec();
        bad.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert!(
            matches!(parse(&bad, Mode::V2), Parsed::Invalid(_)),
            "version 3"
        );
    }

    #[test]
    fn modes() {
        let plain = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(parse(plain, Mode::Auto), Parsed::Absent);
        assert!(matches!(parse(plain, Mode::V1), Parsed::Invalid(_)));
        assert!(matches!(parse(plain, Mode::V2), Parsed::Invalid(_)));
        assert_eq!(parse(b"P", Mode::Auto), Parsed::NeedData, "PROXY or POST?");
        assert_eq!(parse(b"PO", Mode::Auto), Parsed::Absent);
        assert_eq!(parse(b"\r\n", Mode::Auto), Parsed::NeedData);
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Mode::V2),
            Parsed::Invalid(_)
        ));
    }
}
