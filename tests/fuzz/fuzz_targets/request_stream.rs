//! Fuzz target: arbitrary bytes, in arbitrary splits, through the server's own protocol
//! state machine (`ferricorn::http::h1::proto::ServerConn`, driven by `proto::sim` as the connection
//! driver drives it), with a scripted app and varied limits.
//!
//! Input layout: byte 0 = number of cuts (0..=15, low nibble); byte 1 selects the limits;
//! bytes 2 and 3 select the app's behaviour; then two bytes per cut (a little-endian position,
//! modulo the stream length); the rest is the byte stream a client sends.
//!
//! Checks: no panic, no hang; the stream split at the cuts gives exactly what the whole does
//! (the same requests served, the same refusal, the same bytes to the client); the bytes the
//! client receives are well framed responses, one per request served, nothing after a close;
//! every refusal is a status the server may send.

#![no_main]

use ferricorn::http::h1::proto::sim::{self, AppScript};
use ferricorn::http::Limits;
use libfuzzer_sys::fuzz_target;

fn limits(selector: u8) -> Limits {
    Limits {
        request_line: [64, 512, 4094][usize::from(selector % 3)],
        fields: [2, 20, 100][usize::from(selector / 3 % 3)],
        field_size: [128, 8190][usize::from(selector / 9 % 2)],
        body: [None, Some(0), Some(100), Some(65536)][usize::from(selector / 18 % 4)],
        head: [256, 65536][usize::from(selector / 72 % 2)],
    }
}

/// The app's answer to request `i`, varied by the two selector bytes.
fn script(a: u8, b: u8, i: usize) -> AppScript {
    let mix = a.wrapping_add(i as u8 * 37);
    AppScript {
        status: [200, 201, 204, 304, 404, 500, 42, 200][usize::from(mix % 8)],
        declared: match mix / 8 % 4 {
            0 => Some(u64::from(b) * 3),
            1 => Some(5),
            _ => None,
        },
        writes: match b % 4 {
            0 => vec![],
            1 => vec![5],
            2 => vec![100; usize::from(b / 4 % 8) + 1],
            _ => vec![9000, 9000],
        },
        flush_after: (b & 0x40 != 0).then_some(1),
        read_limit: match mix / 32 % 3 {
            0 => Some(0),
            1 => Some(u64::from(b % 16)),
            _ => None,
        },
        read_size: usize::from(b % 13) + 1,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let cuts = usize::from(data[0] & 0x0f);
    let limits = limits(data[1]);
    let (a, b) = (data[2], data[3]);
    let header = 4 + 2 * cuts;
    if data.len() < header {
        return;
    }
    let stream = &data[header..];
    let mut points: Vec<usize> = data[4..header]
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
    let app = |i: usize| script(a, b, i);
    let whole = sim::run(&[stream], limits, &app);
    let split = sim::run(&pieces, limits, &app);
    assert_eq!(whole, split, "a split changed the outcome");
    if let Err(e) = whole.check() {
        panic!("badly framed output: {e}");
    }
    if let Some(reject) = whole.reject {
        assert!(
            [400, 408, 413, 414, 431, 501, 505].contains(&reject.status),
            "unexpected status {}",
            reject.status
        );
    }
});
