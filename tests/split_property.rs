//! Properties of the server's own protocol state machine (`ferricorn::http::h1::proto::ServerConn`,
//! driven through `proto::sim` as the connection driver drives it, with a scripted app):
//! however a stream of valid requests is split into reads, the same requests are served —
//! heads, framing, bodies, trailers — and the client gets the same bytes; and whatever the
//! app does (lengths it keeps or breaks, HEAD, 204/304, flushes, unread bodies,
//! 100-continue), those bytes are well framed responses, one per request, nothing after a
//! close.

use ferricorn::http::h1::proto::sim::{self, AppScript, Transcript};
use ferricorn::http::{Framing, Limits};
use proptest::prelude::*;

const LIMITS: Limits = Limits::DEFAULTS;

/// How a generated request carries its body.
#[derive(Clone, Debug)]
enum Body {
    None,
    Length(Vec<u8>),
    /// Chunk sizes (the last chunk takes the rest), extension flag, trailers.
    Chunked(Vec<u8>, Vec<usize>, bool, Vec<(String, String)>),
}

#[derive(Clone, Debug)]
struct GenRequest {
    method: &'static str,
    path: String,
    http10: bool,
    expect: bool,
    fields: Vec<(String, String)>,
    body: Body,
}

fn field() -> impl Strategy<Value = (String, String)> {
    ("X-[A-Za-z0-9-]{1,12}", "[!-~]([ -~]{0,30}[!-~])?")
}

fn body() -> impl Strategy<Value = Body> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..400);
    prop_oneof![
        Just(Body::None),
        bytes.clone().prop_map(Body::Length),
        (
            bytes,
            proptest::collection::vec(1usize..100, 0..6),
            any::<bool>(),
            proptest::collection::vec(field(), 0..3)
        )
            .prop_map(|(b, sizes, ext, trailers)| Body::Chunked(b, sizes, ext, trailers)),
    ]
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("HEAD")],
        "(/[a-z0-9%._~-]{0,8}){1,4}(\\?[a-z0-9=&]{0,12})?",
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.15),
        proptest::collection::vec(field(), 0..8),
        body(),
    )
        .prop_map(|(method, path, http10, expect, fields, body)| {
            // Transfer-Encoding and Expect are HTTP/1.1 only.
            let http10 = http10 && !matches!(body, Body::Chunked(..));
            GenRequest {
                method,
                path,
                http10,
                expect: expect && !http10,
                fields,
                body,
            }
        })
}

fn serialize(r: &GenRequest, out: &mut Vec<u8>) {
    let version = if r.http10 { "1.0" } else { "1.1" };
    out.extend_from_slice(format!("{} {} HTTP/{version}\r\n", r.method, r.path).as_bytes());
    out.extend_from_slice(b"Host: example\r\n");
    if r.http10 {
        // Keep the connection open so pipelining applies.
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if r.expect {
        out.extend_from_slice(b"Expect: 100-continue\r\n");
    }
    for (name, value) in &r.fields {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match &r.body {
        Body::None => out.extend_from_slice(b"\r\n"),
        Body::Length(bytes) => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(bytes);
        }
        Body::Chunked(bytes, sizes, ext, trailers) => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &bytes[..];
            for size in sizes.iter().chain(std::iter::once(&usize::MAX)) {
                if rest.is_empty() {
                    break;
                }
                let n = (*size).min(rest.len());
                let extension = if *ext { ";name=\"value\"" } else { "" };
                out.extend_from_slice(format!("{n:x}{extension}\r\n").as_bytes());
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            out.extend_from_slice(b"0\r\n");
            for (name, value) in trailers {
                out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn body_bytes(body: &Body) -> &[u8] {
    match body {
        Body::None => &[],
        Body::Length(b) | Body::Chunked(b, ..) => b,
    }
}

fn script() -> impl Strategy<Value = AppScript> {
    (
        prop_oneof![
            4 => Just(200u16),
            1 => Just(201),
            1 => Just(204),
            1 => Just(304),
            1 => Just(404),
            1 => Just(42),
        ],
        proptest::option::weighted(0.4, 0u64..40_000),
        proptest::collection::vec(0usize..9000, 0..6),
        proptest::option::of(0usize..6),
        proptest::option::weighted(0.3, 0u64..50),
        1usize..64,
    )
        .prop_map(
            |(status, declared, writes, flush_after, read_limit, read_size)| AppScript {
                status,
                declared,
                writes,
                flush_after,
                read_limit,
                read_size,
            },
        )
}

fn pieces<'w>(wire: &'w [u8], cuts: &[prop::sample::Index]) -> Vec<&'w [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for point in points.into_iter().chain(std::iter::once(wire.len())) {
        pieces.push(&wire[start..point]);
        start = point;
    }
    pieces
}

fn check_transcript(
    t: &Transcript,
    requests: &[GenRequest],
    scripts: &[AppScript],
) -> Result<(), TestCaseError> {
    prop_assert!(t.requests.len() <= requests.len());
    for (i, seen) in t.requests.iter().enumerate() {
        let generated = &requests[i];
        let mut head = Vec::new();
        serialize(
            &GenRequest {
                body: Body::None,
                ..generated.clone()
            },
            &mut head,
        );
        prop_assert!(seen.head.starts_with(&head[..head.len() - 2]), "head {i}");
        prop_assert_eq!(
            seen.framing == Framing::Chunked,
            matches!(generated.body, Body::Chunked(..))
        );
        if scripts[i % scripts.len()].read_limit.is_none() {
            prop_assert_eq!(&seen.body[..], body_bytes(&generated.body));
            if let Body::Chunked(_, _, _, trailers) = &generated.body {
                prop_assert_eq!(seen.trailers.len(), trailers.len());
            }
        }
    }
    t.check().map_err(TestCaseError::fail)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_serves_like_the_whole(
        requests in proptest::collection::vec(request(), 1..4),
        scripts in proptest::collection::vec(script(), 1..4),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut wire = Vec::new();
        for r in &requests {
            serialize(r, &mut wire);
        }
        let app = |i: usize| scripts[i % scripts.len()].clone();
        let whole = sim::run(&[&wire], LIMITS, &app);
        prop_assert_eq!(whole.reject, None, "a valid stream is not refused");
        check_transcript(&whole, &requests, &scripts)?;
        let split = sim::run(&pieces(&wire, &cuts), LIMITS, &app);
        prop_assert_eq!(split, whole);
    }

    #[test]
    fn byte_by_byte_serves_like_the_whole(request in request(), script in script()) {
        let mut wire = Vec::new();
        serialize(&request, &mut wire);
        let app = |_| script.clone();
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(sim::run(&bytes, LIMITS, &app), sim::run(&[&wire], LIMITS, &app));
    }

    #[test]
    fn valid_streams_with_a_plain_app_are_all_served(
        requests in proptest::collection::vec(request(), 1..4),
    ) {
        let mut wire = Vec::new();
        for r in &requests {
            serialize(r, &mut wire);
        }
        let plain = AppScript { status: 200, writes: vec![5], read_size: 64, ..AppScript::default() };
        let app = |_| plain.clone();
        let t = sim::run(&[&wire], LIMITS, &app);
        check_transcript(&t, &requests, std::slice::from_ref(&plain))?;
        // Every request is served unless an HTTP/1.0 one without a length closed the
        // connection (its response ends with the connection).
        let until_close = requests.iter().position(|r| r.http10).map_or(requests.len(), |i| i + 1);
        prop_assert!(t.requests.len() >= until_close.min(requests.len()));
    }
}
