//! `hello`: any GET (or HEAD) answers `200 Hello, World!\n`; other methods get 405.

use ferricorn_sdk::{App, AppConfig, HandlerResult, Request, Response};

/// The hello app (stateless).
pub struct Hello;

impl App for Hello {
    fn init(_config: &AppConfig) -> Result<Self, String> {
        Ok(Hello)
    }

    fn handle(&self, req: &mut Request<'_>, res: &mut Response<'_>) -> HandlerResult {
        match req.method() {
            "GET" | "HEAD" => res.send(200, "text/plain", b"Hello, World!\n"),
            _ => {
                res.start(405, &[("Allow", "GET, HEAD"), ("Content-Length", "0")])?;
                Ok(())
            }
        }
    }
}

ferricorn_sdk::export_app!(Hello, "hello");
