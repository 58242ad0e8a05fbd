//! `echo`: `/raw` streams the request body back verbatim; every other path answers
//! 200 with the request as the app saw it, as JSON. A WebSocket upgrade on any path is
//! accepted (with the first subprotocol the client offers, if any), and every message is
//! sent back as it came (the Autobahn conformance runs use it). Byte strings are given as their latin-1
//! decoding (one char per byte), so any byte survives the round trip; the body is base64.

use base64::Engine;
use ferricorn_sdk::{App, AppConfig, HandlerResult, Message, Request, Response, WebSocket};
use serde_json::{json, Value};

/// The echo app (stateless).
pub struct Echo;

/// Latin-1 decoding: byte `b` becomes `char::from(b)`.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

fn pairs(fields: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Value {
    Value::Array(
        fields
            .map(|(n, v)| json!([latin1(&n), latin1(&v)]))
            .collect(),
    )
}

fn echo_raw(req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
    let content_type = req.content_type().map(latin1);
    let mut headers = vec![(
        "Content-Type",
        content_type
            .as_deref()
            .unwrap_or("application/octet-stream"),
    )];
    let len = req.content_length().map(|n| n.to_string());
    if let Some(len) = &len {
        headers.push(("Content-Length", len));
    }
    res.start(200, &headers)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = req.read_body(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        res.write(&buf[..n])?;
    }
}

fn echo_json(req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
    let body = req.body_to_vec(64 * 1024 * 1024)?;
    let trailers = req.trailers();
    let trailers = if trailers.is_empty() {
        Value::Null
    } else {
        pairs(trailers.into_iter().map(|(n, v)| (n.to_vec(), v.to_vec())))
    };
    let doc = json!({
        "REQUEST_METHOD": req.method(),
        "RAW_URI": latin1(req.raw_uri()),
        "SCRIPT_NAME": latin1(req.script_name()),
        "PATH_INFO": latin1(req.path_info()),
        "QUERY_STRING": req.query_string(),
        "SERVER_PROTOCOL": req.server_protocol(),
        "SERVER_NAME": latin1(req.server_name()),
        "SERVER_PORT": latin1(req.server_port()),
        "REMOTE_ADDR": latin1(req.remote_addr()),
        "REMOTE_PORT": latin1(req.remote_port()),
        "PEER_ADDR": latin1(req.peer_addr()),
        "PEER_PORT": latin1(req.peer_port()),
        "CONTENT_TYPE": req.content_type().map(latin1),
        "CONTENT_LENGTH": req.content_length(),
        "url_scheme": latin1(req.url_scheme()),
        "tls_version": req.tls_version().map(latin1),
        "tls_cipher": req.tls_cipher().map(latin1),
        "tls_client_subject": req.tls_client_subject().map(latin1),
        "headers": pairs(req.headers().map(|(n, v)| (n.to_vec(), v.to_vec()))),
        "body_base64": base64::engine::general_purpose::STANDARD.encode(&body),
        "trailers": trailers,
    });
    let mut out = serde_json::to_vec(&doc)?;
    out.push(b'\n');
    res.send(200, "application/json", &out)
}

impl App for Echo {
    fn init(_config: &AppConfig) -> Result<Self, String> {
        Ok(Echo)
    }

    const WEBSOCKET: bool = true;

    fn handle(&self, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
        if req.websocket().is_some() {
            let offered = req.header("Sec-WebSocket-Protocol").map(latin1);
            let first = offered
                .as_deref()
                .and_then(|p| p.split(',').map(str::trim).find(|p| !p.is_empty()));
            return Ok(res.accept_websocket(first)?);
        }
        if req.path_info() == b"/raw" {
            echo_raw(req, res)
        } else {
            echo_json(req, res)
        }
    }

    fn ws_message(&self, ws: WebSocket, message: Message<'_>) -> HandlerResult {
        match message {
            Message::Text(text) => ws.send_text(text)?,
            Message::Binary(data) => ws.send_binary(data)?,
        }
        Ok(())
    }
}

ferricorn_sdk::export_app!(Echo, "echo");
