//! `chaos` (SPEC §6), a test app: `/sleep?ms=N` (logs `chaos: sleeping N ms` first), `/panic`, `/abort`,
//! `/stream?chunks=N&size=BYTES` (chunked, no Content-Length), `/big?bytes=N`, `/pid`.
//! With `app.config: {fail_init: "true"}` its init fails with a message.

use ferricorn_sdk::{App, AppConfig, HandlerResult, Level, Request, Response};
use std::time::Duration;

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
    fn init(config: &AppConfig) -> Result<Self, String> {
        if config.get("fail_init") == Some("true") {
            return Err("chaos: init failed on purpose (app.config fail_init=true)".into());
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
            "/pid" => text(res, &format!("{}\n", std::process::id())),
            _ => res.send(404, "text/plain", b"not found\n"),
        }
    }
}

ferricorn_sdk::export_app!(Chaos, "chaos");
