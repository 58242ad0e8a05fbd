//! Property (issue #6): however a stream of valid requests is split into reads, it parses to
//! the same requests as when it arrives whole — heads, framing, bodies and trailers — using
//! the connection's reference model `http::read_requests`.

use ferricorn::http::{read_requests, Framing, Limits};
use proptest::prelude::*;

const LIMITS: Limits = Limits {
    request_line: 4094,
    fields: 100,
    field_size: 8190,
    body: None,
};

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
        prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
        "(/[a-z0-9%._~-]{0,8}){1,4}(\\?[a-z0-9=&]{0,12})?",
        proptest::bool::weighted(0.1),
        proptest::collection::vec(field(), 0..8),
        body(),
    )
        .prop_map(|(method, path, http10, fields, body)| GenRequest {
            method,
            path,
            // Transfer-Encoding is HTTP/1.1 only.
            http10: http10 && !matches!(body, Body::Chunked(..)),
            fields,
            body,
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_parses_like_the_whole(
        requests in proptest::collection::vec(request(), 1..4),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut wire = Vec::new();
        for r in &requests {
            serialize(r, &mut wire);
        }
        let (whole, refused) = read_requests(&[&wire], &LIMITS);
        prop_assert_eq!(refused, None, "a valid stream is not refused");
        prop_assert_eq!(whole.len(), requests.len());
        for (parsed, generated) in whole.iter().zip(&requests) {
            prop_assert_eq!(&parsed.body[..], body_bytes(&generated.body));
            let chunked = matches!(generated.body, Body::Chunked(..));
            prop_assert_eq!(parsed.framing == Framing::Chunked, chunked);
            if let Body::Chunked(_, _, _, trailers) = &generated.body {
                prop_assert_eq!(parsed.trailers.len(), trailers.len());
            }
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut pieces = Vec::new();
        let mut start = 0;
        for point in points.into_iter().chain(std::iter::once(wire.len())) {
            pieces.push(&wire[start..point]);
            start = point;
        }
        let split = read_requests(&pieces, &LIMITS);
        prop_assert_eq!(split, (whole, None));
    }

    #[test]
    fn byte_by_byte_parses_like_the_whole(request in request()) {
        let mut wire = Vec::new();
        serialize(&request, &mut wire);
        let pieces: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(read_requests(&pieces, &LIMITS), read_requests(&[&wire], &LIMITS));
    }
}
