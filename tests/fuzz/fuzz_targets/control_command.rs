//! Fuzz target: arbitrary bytes as a client of the master's control socket sends them,
//! through the same parsing and worker arithmetic the master runs
//! (`ferricorn::master::control::parse_request`, `ferricorn::master::control::workers_after`).
//!
//! Input layout: bytes 0 and 1 = the workers wanted now (little-endian, 1..=MAX_WORKERS);
//! the rest is what the client wrote.
//!
//! Checks: no panic; an accepted `worker add`/`worker remove` leaves between 1 and
//! MAX_WORKERS workers.

#![no_main]

use ferricorn::config::MAX_WORKERS;
use ferricorn::master::control::{parse_request, workers_after};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (desired, input) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (1, data),
    };
    let desired = desired.clamp(1, MAX_WORKERS);
    if let Ok(command) = parse_request(input) {
        if let Ok(after) = workers_after(&command, desired) {
            assert!((1..=MAX_WORKERS).contains(&after), "{command:?}: {after}");
        }
    }
});
