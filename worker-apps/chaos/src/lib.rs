//! `chaos`, a test app: `/sleep?ms=N` (logs `chaos: sleeping N ms` first), `/panic`, `/abort`,
//! `/stream?chunks=N&size=BYTES` (chunked, no Content-Length), `/big?bytes=N`, `/pid`,
//! `/env?name=VAR` (the worker's environment variable VAR, empty if unset).
//! `/overflow?length=N&bytes=M`: declares `Content-Length: N`, then writes M bytes.
//! `/flush`: writes `first`, flushes, reads the request body (so the client sees the first
//! part before it sends the body), then writes `second` (with `write!`, through `io::Write`).
//! `/leak?mb=N`: allocates N MiB, writes to every page and never frees it (for max_worker_rss).
//! `/read-time`: reads the whole request body and answers `N bytes in M ms` (how long the
//! app waited for the body).
//! `/response?case=C` breaks the `start_response` rules on purpose (see [`response_case`]).
//! With `app.config: {fail_init: "true"}` its init fails with a message; with
//! `{fail_init_marker: PATH}` only the first init ever succeeds (it creates PATH; every later
//! init, e.g. in the workers after the startup trial load, fails); with
//! `{fail_init_if_exists: PATH}` init fails while PATH exists; with `{init_sleep_ms: N}`
//! init takes N ms (a slow app to boot, in workers and trial loads alike).
//! `/ws` accepts a WebSocket (messages are dropped; the text `fail` makes `ws_message` fail);
//! `/ws-closed` lists the names of the threads its `ws_close` callback ran on, one per line.

use ferricorn_sdk::{App, AppConfig, HandlerResult, Level, Message, Request, Response, WebSocket};
use std::sync::Mutex;
use std::time::Duration;

/// The names of the threads `ws_close` ran on, in order.
static WS_CLOSED_ON: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The chaos app (stateless).
pub struct Chaos;

fn number(req: &Request<'_>, name: &str, default: u64) -> u64 {
    req.query(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn text(res: &mut Response<'_>, body: &str) -> HandlerResult {
    res.send(200, "text/plain", body.as_bytes())
}

impl App for Chaos {
    const WEBSOCKET: bool = true;

    fn ws_message(&self, _ws: WebSocket, message: Message<'_>) -> HandlerResult {
        match message {
            Message::Text("fail") => Err("chaos: ws_message failed on purpose".into()),
            _ => Ok(()),
        }
    }

    fn ws_close(&self, _ws: WebSocket, _code: u16, _reason: &str) {
        // The kernel's name of the thread (the server's std names it, not the plugin's).
        let name = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
        let name = name.trim_end().to_string();
        WS_CLOSED_ON
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name);
    }

    fn init(config: &AppConfig) -> Result<Self, String> {
        if let Some(ms) = config.get("init_sleep_ms").and_then(|v| v.parse().ok()) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        if config.get("fail_init") == Some("true") {
            return Err("chaos: init failed on purpose (app.config fail_init=true)".into());
        }
        if let Some(path) = config.get("fail_init_if_exists") {
            if std::path::Path::new(path).exists() {
                return Err(format!("chaos: init failed on purpose ({path} exists)"));
            }
        }
        if let Some(marker) = config.get("fail_init_marker") {
            if std::fs::File::create_new(marker).is_err() {
                return Err(format!(
                    "chaos: init failed on purpose ({marker} exists: not the first init)"
                ));
            }
        }
        Ok(Chaos)
    }

    fn handle(&self, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
        match req.path().as_ref() {
            "/sleep" => {
                let ms = number(req, "ms", 100);
                res.log(Level::Info, &format!("chaos: sleeping {ms} ms"));
                std::thread::sleep(Duration::from_millis(ms));
                text(res, &format!("slept {ms} ms\n"))
            }
            "/panic" => panic!("chaos: /panic asked for it"),
            "/abort" => std::process::abort(),
            "/stream" => {
                let chunks = number(req, "chunks", 10);
                let size = number(req, "size", 100) as usize;
                res.start(200, &[("Content-Type", "application/octet-stream")])?;
                let chunk = vec![b'x'; size];
                for _ in 0..chunks {
                    res.write(&chunk)?;
                }
                Ok(())
            }
            "/big" => {
                let bytes = number(req, "bytes", 1 << 20) as usize;
                let len = bytes.to_string();
                res.start(
                    200,
                    &[
                        ("Content-Type", "application/octet-stream"),
                        ("Content-Length", &len),
                    ],
                )?;
                let block = vec![b'b'; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(block.len());
                    res.write(&block[..n])?;
                    left -= n;
                }
                Ok(())
            }
            "/overflow" => {
                let length = number(req, "length", 5).to_string();
                let bytes = number(req, "bytes", 10) as usize;
                res.start(200, &[("Content-Length", &length)])?;
                let digits: Vec<u8> = (0..bytes).map(|i| b'0' + (i % 10) as u8).collect();
                res.write(&digits)?;
                Ok(())
            }
            "/flush" => {
                use std::io::Write;
                res.start(200, &[("Content-Type", "text/plain")])?;
                res.write(b"first\n")?;
                res.flush()?;
                let body = req.body_to_vec(1024)?;
                writeln!(res, "second after {} body bytes", body.len())?;
                Ok(())
            }
            "/pid" => text(res, &format!("{}\n", std::process::id())),
            "/leak" => {
                let mb = number(req, "mb", 16) as usize;
                let leaked = vec![1u8; mb << 20].leak();
                text(res, &format!("leaked {} MiB\n", leaked.len() >> 20))
            }
            "/read-time" => {
                let started = std::time::Instant::now();
                let body = req.body_to_vec(64 << 20)?;
                let ms = started.elapsed().as_millis();
                text(res, &format!("{} bytes in {ms} ms\n", body.len()))
            }
            "/env" => {
                let name = req.query("name").unwrap_or("");
                text(
                    res,
                    &format!("{}\n", std::env::var(name).unwrap_or_default()),
                )
            }
            "/response" => response_case(req.query("case").unwrap_or(""), res),
            "/ws" if req.websocket().is_some() => Ok(res.accept_websocket(None)?),
            "/ws-closed" => {
                let names = WS_CLOSED_ON
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .join("\n");
                text(res, &names)
            }
            _ => res.send(404, "text/plain", b"not found\n"),
        }
    }
}

/// `/response?case=C`, for the `start_response` rules:
/// - `restart`: start_response(500, X-First), then start_response(201, X-Second): the last wins.
/// - `late`: writes `a`, then calls start_response again; the body reports what it returned.
/// - `crlf`, `nul`: a header value with CR LF / NUL; `status`: status 42. Each is refused,
///   and the app returns the error (the server answers 500).
fn response_case(case: &str, res: &mut Response<'_>) -> HandlerResult {
    match case {
        "restart" => {
            res.start(500, &[("X-First", "yes")])?;
            res.start(201, &[("X-Second", "yes")])?;
            res.write(b"second wins\n")?;
        }
        "late" => {
            res.start(200, &[("Content-Type", "text/plain")])?;
            res.write(b"a")?;
            let outcome = match res.start(500, &[]) {
                Ok(()) => "accepted".to_string(),
                Err(e) => format!("refused: {e}"),
            };
            res.write(format!("\nlate start_response {outcome}\n").as_bytes())?;
        }
        "crlf" => res.start(200, &[("X-Evil", "a\r\nInjected: yes")])?,
        "nul" => res.start(200, &[("X-Evil", "a\0b")])?,
        "status" => res.start(42, &[])?,
        _ => return res.send(400, "text/plain", b"unknown case\n"),
    }
    Ok(())
}

ferricorn_sdk::export_app!(Chaos, "chaos");
