//! Fuzz target: arbitrary bytes, in arbitrary splits, through the request-head parser and the
//! body-framing state machine (`ferricorn::http::read_requests`, the model the connection
//! follows), under varied limits.
//!
//! Input layout: byte 0 = number of cuts (0..=15, low nibble); byte 1 selects the limits;
//! then two bytes per cut (a little-endian position, modulo the stream length); the rest is
//! the byte stream a client sends.
//!
//! Checks: no panic, no hang; the stream split at the cuts parses exactly as the whole does
//! (same requests, same refusal); every refusal is a 4xx/5xx the server may send.

#![no_main]

use ferricorn::http::{read_requests, Limits};
use libfuzzer_sys::fuzz_target;

fn limits(selector: u8) -> Limits {
    Limits {
        request_line: [64, 512, 4094][usize::from(selector % 3)],
        fields: [2, 20, 100][usize::from(selector / 3 % 3)],
        field_size: [128, 8190][usize::from(selector / 9 % 2)],
        body: [None, Some(0), Some(100), Some(65536)][usize::from(selector / 18 % 4)],
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cuts = usize::from(data[0] & 0x0f);
    let limits = limits(data[1]);
    let header = 2 + 2 * cuts;
    if data.len() < header {
        return;
    }
    let stream = &data[header..];
    let mut points: Vec<usize> = data[2..header]
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    let mut pieces = Vec::with_capacity(cuts + 1);
    let mut start = 0;
    for point in points.into_iter().chain(std::iter::once(stream.len())) {
        pieces.push(&stream[start..point]);
        start = point;
    }
    let whole = read_requests(&[stream], &limits);
    let split = read_requests(&pieces, &limits);
    assert_eq!(whole, split, "a split changed the outcome");
    if let Some(reject) = whole.1 {
        assert!(
            [400, 413, 414, 431, 501, 505].contains(&reject.status),
            "unexpected status {}",
            reject.status
        );
    }
});
