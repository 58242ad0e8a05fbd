//! The opening handshake of a WebSocket (RFC 6455 §4.2): whether a request asks for one,
//! whether it asks correctly, and the `Sec-WebSocket-Accept` value of the 101 that accepts it.

use super::deflate::Params;
use crate::http::{reject, Reject};
use base64::Engine;
use sha1::{Digest, Sha1};

/// RFC 6455 §1.3: appended to the client's key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version there is (RFC 6455 §4.1).
pub const VERSION: &[u8] = b"13";

/// What a request says about a WebSocket upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// No `Upgrade: websocket`: an ordinary request.
    No,
    /// An upgrade asked for wrongly: answered 400, or 426 with `Sec-WebSocket-Version: 13`
    /// when the version is not 13 (RFC 6455 §4.2.2).
    Invalid(Reject),
    /// A well-formed upgrade: the `Sec-WebSocket-Accept` value (28 bytes of base64) the 101
    /// carries if the app accepts it.
    Valid {
        /// base64(SHA-1(key + GUID)).
        accept: [u8; 28],
        /// permessage-deflate, when the client offered it acceptably (RFC 7692).
        deflate: Option<Params>,
    },
}

/// Whether the request (method `method`, HTTP/1.`minor`, header fields `fields` as name and
/// value bytes) asks for a WebSocket, and whether it does so as RFC 6455 §4.1 requires:
/// GET, HTTP/1.1, `Upgrade: websocket` and `Connection: Upgrade` (tokens, any case),
/// `Sec-WebSocket-Key` of 16 bytes in base64, `Sec-WebSocket-Version: 13`.
pub fn check<'f>(
    method: &[u8],
    minor: u8,
    fields: impl Iterator<Item = (&'f [u8], &'f [u8])> + Clone,
) -> Upgrade {
    let has_token = |name: &[u8], token: &[u8]| {
        fields.clone().any(|(n, v)| {
            n.eq_ignore_ascii_case(name)
                && v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
        })
    };
    if !has_token(b"upgrade", b"websocket") {
        return Upgrade::No;
    }
    if method != b"GET" || minor != 1 {
        return Upgrade::Invalid(reject(400, "WebSocket upgrade not by GET over HTTP/1.1"));
    }
    if !has_token(b"connection", b"upgrade") {
        return Upgrade::Invalid(reject(400, "WebSocket upgrade without Connection: Upgrade"));
    }
    let only = |name: &[u8]| {
        let mut found = fields.clone().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Some(v.trim_ascii()),
            _ => None,
        }
    };
    if only(b"sec-websocket-version") != Some(VERSION) {
        return Upgrade::Invalid(reject(426, "WebSocket version other than 13"));
    }
    let Some(key) = only(b"sec-websocket-key") else {
        return Upgrade::Invalid(reject(400, "no single Sec-WebSocket-Key"));
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if !decoded.is_ok_and(|k| k.len() == 16) {
        return Upgrade::Invalid(reject(400, "Sec-WebSocket-Key is not 16 bytes in base64"));
    }
    let extensions = fields
        .clone()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"sec-websocket-extensions"))
        .map(|(_, v)| v);
    Upgrade::Valid {
        accept: accept_key(key),
        deflate: super::deflate::negotiate(extensions),
    }
}

/// `Sec-WebSocket-Accept` for `key` (RFC 6455 §4.2.2 item 5.4): base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let mut out = [0u8; 28];
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(sha.finalize(), &mut out)
        .unwrap_or(0);
    debug_assert_eq!(written, 28);
    out
}

/// Header lines an error response to a refused upgrade carries: `Sec-WebSocket-Version: 13`
/// with a 426 (RFC 6455 §4.2.2), none otherwise.
pub fn error_fields(status: u16) -> &'static str {
    if status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

    fn ask(method: &[u8], minor: u8, fields: &[(&[u8], &[u8])]) -> Upgrade {
        check(method, minor, fields.iter().map(|&(n, v)| (n, v)))
    }

    #[test]
    fn the_rfc_example_is_accepted_with_its_accept_value() {
        // RFC 6455 §1.3.
        let fields: [(&[u8], &[u8]); 5] = [
            (b"Host", b"server.example.com"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"keep-alive, Upgrade"),
            (b"Sec-WebSocket-Key", KEY),
            (b"Sec-WebSocket-Version", b"13"),
        ];
        assert_eq!(
            ask(b"GET", 1, &fields),
            Upgrade::Valid {
                accept: *b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                deflate: None,
            }
        );
    }

    #[test]
    fn a_wrong_upgrade_is_refused_with_the_right_status() {
        let good: Vec<(&[u8], &[u8])> = vec![
            (b"upgrade", b"WebSocket"),
            (b"connection", b"upgrade"),
            (b"sec-websocket-key", KEY),
            (b"sec-websocket-version", b"13"),
        ];
        let without = |name: &[u8]| -> Vec<(&[u8], &[u8])> {
            good.iter().copied().filter(|(n, _)| *n != name).collect()
        };
        let status = |u: Upgrade| match u {
            Upgrade::Invalid(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert!(matches!(ask(b"GET", 1, &good), Upgrade::Valid { .. }));
        assert_eq!(ask(b"GET", 1, &without(b"upgrade")), Upgrade::No);
        assert_eq!(status(ask(b"POST", 1, &good)), 400);
        assert_eq!(status(ask(b"GET", 0, &good)), 400);
        assert_eq!(status(ask(b"GET", 1, &without(b"connection"))), 400);
        assert_eq!(status(ask(b"GET", 1, &without(b"sec-websocket-key"))), 400);
        assert_eq!(
            status(ask(b"GET", 1, &without(b"sec-websocket-version"))),
            426
        );
        let mut v8 = without(b"sec-websocket-version");
        v8.push((b"Sec-WebSocket-Version", b"8"));
        assert_eq!(status(ask(b"GET", 1, &v8)), 426);
        let mut short = without(b"sec-websocket-key");
        short.push((b"Sec-WebSocket-Key", b"c2hvcnQ="));
        assert_eq!(status(ask(b"GET", 1, &short)), 400);
        let mut twice = good.clone();
        twice.push((b"Sec-WebSocket-Key", KEY));
        assert_eq!(status(ask(b"GET", 1, &twice)), 400);
        assert_eq!(error_fields(426), "Sec-WebSocket-Version: 13\r\n");
    }
}
