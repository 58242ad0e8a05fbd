//! A socket address as the text a request carries (REMOTE_ADDR and REMOTE_PORT, or
//! SERVER_NAME and SERVER_PORT from a PROXY header), formatted once when the connection
//! starts and held inline: a connection allocates nothing for its peer's name.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

/// Longest text of an IP address: an IPv6 address with an embedded IPv4 one
/// (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`, INET6_ADDRSTRLEN less its NUL).
const ADDR_MAX: usize = 45;
/// Longest text of a port (`65535`).
const PORT_MAX: usize = 5;

/// An IP address and a port as text (Rust's `Display` forms: `127.0.0.1`, `::1`, `8000`),
/// in 52 bytes with no heap allocation; both empty for a peer with no IP address (a Unix
/// socket's).
#[derive(Clone, Copy)]
pub struct AddrText {
    bytes: [u8; ADDR_MAX + PORT_MAX],
    addr_len: u8,
    port_len: u8,
}

impl AddrText {
    /// No address: both texts empty (CGI's empty REMOTE_ADDR of a Unix socket peer).
    pub const NONE: AddrText = AddrText {
        bytes: [0; ADDR_MAX + PORT_MAX],
        addr_len: 0,
        port_len: 0,
    };

    /// The text of `addr` (`None`: [`AddrText::NONE`]).
    pub fn new(addr: Option<SocketAddr>) -> AddrText {
        let mut text = AddrText::NONE;
        let Some(addr) = addr else {
            return text;
        };
        let (head, tail) = text.bytes.split_at_mut(ADDR_MAX);
        text.addr_len = match addr.ip() {
            // Every connection formats its peer's address (a `Connection: close` request
            // pays it each time): IPv4 and the port without core::fmt's machinery.
            IpAddr::V4(v4) => {
                let mut len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        head[len] = b'.';
                        len += 1;
                    }
                    len += decimal(&mut head[len..], u16::from(octet));
                }
                len as u8
            }
            ip @ IpAddr::V6(_) => write_into(head, format_args!("{ip}")),
        };
        text.port_len = decimal(tail, addr.port()) as u8;
        text
    }

    /// The address (REMOTE_ADDR), or "".
    pub fn addr(&self) -> &str {
        text(&self.bytes[..usize::from(self.addr_len)])
    }

    /// The port (REMOTE_PORT), or "".
    pub fn port(&self) -> &str {
        text(&self.bytes[ADDR_MAX..ADDR_MAX + usize::from(self.port_len)])
    }
}

impl std::fmt::Debug for AddrText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.addr(), self.port())
    }
}

/// Writes `args` into `out`, returning the bytes written (the text of an address or port
/// always fits; it is never cut inside a character since it is ASCII).
fn write_into(out: &mut [u8], args: std::fmt::Arguments<'_>) -> u8 {
    let room = out.len();
    let mut cursor = std::io::Cursor::new(out);
    let _ = cursor.write_fmt(args);
    cursor.position().min(room as u64) as u8
}

/// Writes `value` in decimal at the start of `out` (room for 5 digits), returning the digits
/// written: what `Display` writes for it.
fn decimal(out: &mut [u8], value: u16) -> usize {
    let mut digits = [0u8; PORT_MAX];
    let mut rest = value;
    let mut start = PORT_MAX;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let len = PORT_MAX - start;
    out[..len].copy_from_slice(&digits[start..]);
    len
}

fn text(bytes: &[u8]) -> &str {
    // Only ASCII text from Display impls is ever written.
    std::str::from_utf8(bytes).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::AddrText;

    #[test]
    fn addresses_of_every_length_round_trip() {
        for text in [
            "127.0.0.1:80",
            "0.0.0.0:0",
            "10.200.3.45:9",
            "255.255.255.255:65535",
            "[::1]:8000",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1",
            "[::ffff:255.255.255.255]:65535",
        ] {
            let addr: std::net::SocketAddr = text.parse().unwrap();
            let name = AddrText::new(Some(addr));
            assert_eq!(name.addr(), addr.ip().to_string());
            assert_eq!(name.port(), addr.port().to_string());
        }
        for value in 0..=u16::MAX {
            let mut out = [0; 5];
            let len = super::decimal(&mut out, value);
            assert_eq!(&out[..len], value.to_string().as_bytes());
        }
        let none = AddrText::new(None);
        assert_eq!((none.addr(), none.port()), ("", ""));
    }
}
