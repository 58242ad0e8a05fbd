//! permessage-deflate (RFC 7692): the negotiation of its parameters in the handshake, and
//! each message's compression (server to client) and decompression (client to server) with
//! `flate2` (zlib-rs), raw deflate with the empty-block tail removed and put back.
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (RFC 7692 §7.1.1 lets it): every message is compressed
//! alone, so a connection holds no compression state between messages (zlib's is about
//! 300 KB, which thousands of idle browser connections would otherwise keep). Each thread
//! has one deflater per window size and one inflater ([`deflate_message`],
//! [`inflate_message`]), reset after every message.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// RFC 7692 §7.2.1: a message's compressed bytes lack this tail of a sync flush.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What both sides agreed on (RFC 7692 §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// `server_no_context_takeover`: the server starts each message with an empty window.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover`: the client does (the server may then reset too).
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits`: the server's LZ77 window (9..=15; zlib has no 8).
    pub server_max_window_bits: u8,
    /// `client_max_window_bits` the client asked to be told (the server's answer echoes it).
    pub client_max_window_bits: Option<u8>,
}

/// Picks the first offer of permessage-deflate in `Sec-WebSocket-Extensions` values
/// (`offers`, each a comma-separated list) whose parameters are valid and that the server can
/// honour (RFC 7692 §5, §7.1): none when no offer fits.
pub fn negotiate<'v>(offers: impl Iterator<Item = &'v [u8]>) -> Option<Params> {
    for value in offers {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for offer in value.split(',') {
            let mut parts = offer.split(';').map(str::trim);
            if parts.next() != Some("permessage-deflate") {
                continue;
            }
            if let Some(params) = accept(parts) {
                return Some(params);
            }
        }
    }
    None
}

/// The parameters of one offer, if valid and acceptable: each known at most once.
fn accept<'p>(parts: impl Iterator<Item = &'p str>) -> Option<Params> {
    let mut params = Params {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: None,
    };
    let mut seen = Vec::new();
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (part, None),
        };
        if seen.contains(&name) {
            return None;
        }
        seen.push(name);
        let bits = |v: Option<&str>| v?.parse::<u8>().ok().filter(|b| (8..=15).contains(b));
        match (name, value) {
            ("server_no_context_takeover", None) => params.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => params.client_no_context_takeover = true,
            ("server_max_window_bits", v) => {
                // zlib's smallest raw window is 9: an offer of 8 cannot be honoured.
                params.server_max_window_bits = bits(v).filter(|&b| b >= 9)?;
            }
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", v) => params.client_max_window_bits = Some(bits(v)?),
            _ => return None,
        }
    }
    Some(params)
}

impl Params {
    /// The `Sec-WebSocket-Extensions` value that accepts these parameters.
    pub fn response(&self) -> String {
        let mut out = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits < 15 {
            out.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if let Some(bits) = self.client_max_window_bits {
            out.push_str(&format!("; client_max_window_bits={bits}"));
        }
        out
    }
}

/// Why a compressed message could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Not valid deflate data (RFC 6455 §7.4.1: 1007).
    Corrupt,
    /// It inflates past `websocket_max_message` (1009).
    TooBig,
}

/// The client-to-server direction: inflates messages (a 15-bit window reads any client's).
pub struct Inflater {
    inner: Decompress,
    reset_each: bool,
    /// Compressed bytes of the current message so far.
    fed: usize,
}

impl Inflater {
    /// An inflater for `params` (reset after each message when the client does not keep
    /// its context).
    pub fn new(params: &Params) -> Inflater {
        Inflater {
            inner: Decompress::new_with_window_bits(false, 15),
            reset_each: params.client_no_context_takeover,
            fed: 0,
        }
    }

    /// Inflates one frame's `payload` of a compressed message onto `out`, which may not grow
    /// past `limit` bytes; `last`: the message's final frame (its tail is put back).
    pub fn inflate(
        &mut self,
        payload: &[u8],
        last: bool,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.feed(payload, out, limit)?;
        self.fed += payload.len();
        if last {
            // An empty payload is an empty message: the tail alone would start a block.
            if std::mem::take(&mut self.fed) > 0 {
                self.feed(&TAIL, out, limit)?;
            }
            if self.reset_each {
                self.inner.reset(false);
            }
        }
        Ok(())
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        // Inflated a chunk at a time, so that a bomb stops at the limit.
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let (before_in, before_out) = (self.inner.total_in(), self.inner.total_out());
            let status = self
                .inner
                .decompress(input, &mut chunk, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = (self.inner.total_in() - before_in) as usize;
            let made = (self.inner.total_out() - before_out) as usize;
            input = &input[used..];
            if out.len() + made > limit {
                return Err(InflateError::TooBig);
            }
            out.extend_from_slice(&chunk[..made]);
            if status == Status::StreamEnd || (input.is_empty() && made < chunk.len()) {
                return Ok(());
            }
            if used == 0 && made == 0 {
                return Err(InflateError::Corrupt);
            }
        }
    }
}

thread_local! {
    /// This thread's deflaters, by window size (9..=15), made when first needed.
    static DEFLATERS: std::cell::RefCell<[Option<Deflater>; 7]> = const {
        std::cell::RefCell::new([None, None, None, None, None, None, None])
    };
    /// This thread's inflater.
    static INFLATER: std::cell::RefCell<Option<Inflater>> = const { std::cell::RefCell::new(None) };
}

/// Appends `data` compressed as one message (no context kept) for a client whose window
/// is `params.server_max_window_bits`, to `out`.
pub fn deflate_message(params: &Params, data: &[u8], out: &mut Vec<u8>) {
    DEFLATERS.with(|cell| {
        let mut deflaters = cell.borrow_mut();
        let index = usize::from(params.server_max_window_bits.clamp(9, 15) - 9);
        deflaters[index]
            .get_or_insert_with(|| Deflater::new(params))
            .deflate(data, out);
    });
}

/// Inflates one whole compressed message (`compressed`, its frames' payloads joined) onto
/// `out`, which may not grow past `limit` bytes.
pub fn inflate_message(
    compressed: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), InflateError> {
    INFLATER.with(|cell| {
        let mut inflater = cell.borrow_mut();
        let params = Params {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 15,
            client_max_window_bits: None,
        };
        let inflater = inflater.get_or_insert_with(|| Inflater::new(&params));
        let result = inflater.inflate(compressed, true, out, limit);
        if result.is_err() {
            // A failed stream leaves the state mid-block: start over for the next message.
            inflater.inner.reset(false);
            inflater.fed = 0;
        }
        result
    })
}

/// The server-to-client direction: deflates messages.
pub struct Deflater {
    inner: Compress,
    reset_each: bool,
}

impl Deflater {
    /// A deflater for `params` (its window; reset after each message with
    /// server_no_context_takeover).
    pub fn new(params: &Params) -> Deflater {
        Deflater {
            inner: Compress::new_with_window_bits(
                Compression::fast(),
                false,
                params.server_max_window_bits,
            ),
            reset_each: params.server_no_context_takeover,
        }
    }

    /// Appends `data` compressed (sync flush, the 4-byte tail removed: RFC 7692 §7.2.1) to
    /// `out`.
    pub fn deflate(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let mut input = data;
        loop {
            out.reserve((input.len() / 2).max(64));
            let before = self.inner.total_in();
            let _ = self.inner.compress_vec(input, out, FlushCompress::Sync);
            input = &input[(self.inner.total_in() - before) as usize..];
            // Done once all input is in and the flush's output fit (room left over).
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if out.len() == start {
            // Nothing since the last flush: an empty stored block's header keeps the
            // receiver's stream whole once it appends the tail (RFC 7692 §7.2.3.6).
            out.push(0x00);
        }
        if self.reset_each {
            self.inner.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<Params> {
        negotiate(std::iter::once(value.as_bytes()))
    }

    #[test]
    fn offers_are_negotiated_as_rfc_7692_says() {
        let plain = offer("permessage-deflate").unwrap();
        assert_eq!(
            plain.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let all = offer(
            "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12",
        )
        .unwrap();
        assert_eq!(
            all.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        );
        // client_max_window_bits without a value: the client can take any answer.
        assert!(offer("permessage-deflate; client_max_window_bits").is_some());
        // Invalid or unsupported offers are declined; a later one may be taken.
        for bad in [
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        let second =
            offer("permessage-deflate; server_max_window_bits=8, permessage-deflate").unwrap();
        assert_eq!(second, plain);
    }

    #[test]
    fn messages_round_trip_with_and_without_context_takeover() {
        for response in [
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ] {
            let params = offer(response).unwrap();
            let (mut deflater, mut inflater) = (Deflater::new(&params), Inflater::new(&params));
            for message in [
                &b"Hello, hello, hello!"[..],
                &[7u8; 100_000],
                b"",
                b"Hello, hello, hello!",
            ] {
                let mut wire = Vec::new();
                deflater.deflate(message, &mut wire);
                assert!(!wire.ends_with(&TAIL));
                // In two frames.
                let (a, b) = wire.split_at(wire.len() / 2);
                let mut out = Vec::new();
                inflater
                    .inflate(a, false, &mut out, 1 << 20)
                    .unwrap_or_else(|e| {
                        panic!(
                            "{e:?} in the first half of {} bytes: {wire:?}",
                            message.len()
                        )
                    });
                inflater
                    .inflate(b, true, &mut out, 1 << 20)
                    .unwrap_or_else(|e| {
                        panic!("{e:?} in the second half of {} bytes", message.len())
                    });
                assert_eq!(out, message);
            }
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_corrupt() {
        let params = offer("permessage-deflate").unwrap();
        let mut wire = Vec::new();
        Deflater::new(&params).deflate(&vec![0u8; 10 << 20], &mut wire);
        assert!(wire.len() < 256 * 1024);
        let mut out = Vec::new();
        let result = Inflater::new(&params).inflate(&wire, true, &mut out, 1 << 20);
        assert_eq!(result, Err(InflateError::TooBig));
        assert!(out.len() <= 1 << 20, "stopped at the limit: {}", out.len());
        let mut out = Vec::new();
        let garbage = Inflater::new(&params).inflate(&[0xff; 64], true, &mut out, 1 << 20);
        assert_eq!(garbage, Err(InflateError::Corrupt));
    }
}
