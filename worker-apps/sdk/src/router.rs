//! A small router: method + path pattern → handler, with `{name}` path parameters, 404 for an
//! unknown path and 405 with `Allow` for a known path with another method (RFC 9110 §15.5.6).
//! `HEAD` is served by the `GET` handler. WebSocket routes ([`Router::websocket`]) take the
//! requests that ask for a WebSocket; a plain request to one gets 426 (Upgrade Required).

use crate::{HandlerResult, Request, Response, WebSocket};

/// A route handler: the app state, the request, the response and the path parameters.
pub type Handler<S> = fn(&S, &mut Request<'_>, &mut Response<'_>, &Params) -> HandlerResult;

/// A WebSocket route's handler: as [`Handler`], plus the connection the request asks for;
/// it accepts with [`Response::accept_websocket`] (messages then go to
/// [`crate::App::ws_message`]) or refuses with any other response.
pub type WsHandler<S> =
    fn(&S, &mut Request<'_>, &mut Response<'_>, &Params, WebSocket) -> HandlerResult;

/// Path parameters captured by `{name}` segments, in pattern order.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(&'static str, String)>,
}

impl Params {
    /// The value captured for `{name}`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Segment {
    Literal(&'static str),
    Param(&'static str),
}

enum Target<S> {
    Http(Handler<S>),
    WebSocket(WsHandler<S>),
}

struct Route<S> {
    method: &'static str,
    segments: Vec<Segment>,
    target: Target<S>,
}

/// Routes requests for an app whose state is `S`.
pub struct Router<S> {
    routes: Vec<Route<S>>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router { routes: Vec::new() }
    }
}

impl<S> Router<S> {
    /// An empty router.
    pub fn new() -> Router<S> {
        Router::default()
    }

    /// Adds a route: `method` (e.g. `"GET"`) and `pattern` (e.g. `"/tasks/{id}"`: literal
    /// segments, and `{name}` segments that capture one path segment each).
    ///
    /// # Panics
    /// On a segment in another router's syntax (`:id`, `*rest`) or an unbalanced brace, with
    /// a message naming the pattern: a route table is fixed at build time, so this shows up
    /// at the app's init (where the SDK turns it into the init error).
    pub fn route(
        mut self,
        method: &'static str,
        pattern: &'static str,
        handler: Handler<S>,
    ) -> Self {
        let segments = split(pattern).map(|s| segment(pattern, s)).collect();
        self.routes.push(Route {
            method,
            segments,
            target: Target::Http(handler),
        });
        self
    }

    /// Adds a WebSocket route: a `GET` to `pattern` that asks for a WebSocket (the app sets
    /// [`crate::App::WEBSOCKET`]) goes to `handler`. Panics as [`Router::route`] does.
    pub fn websocket(mut self, pattern: &'static str, handler: WsHandler<S>) -> Self {
        let segments = split(pattern).map(|s| segment(pattern, s)).collect();
        self.routes.push(Route {
            method: "GET",
            segments,
            target: Target::WebSocket(handler),
        });
        self
    }

    /// Serves `req` with the matching route, or answers 404 / 405 itself.
    pub fn dispatch(
        &self,
        state: &S,
        req: &mut Request<'_>,
        res: &mut Response<'_>,
    ) -> HandlerResult {
        let path = req.path().into_owned();
        let method = req.method();
        let mut allowed: Vec<&str> = Vec::new();
        let mut upgrade_only = false;
        for route in &self.routes {
            let Some(params) = matches(&route.segments, &path) else {
                continue;
            };
            let method_matches =
                route.method == method || (method == "HEAD" && route.method == "GET");
            match (&route.target, req.websocket()) {
                (Target::WebSocket(handler), Some(ws)) if method == "GET" => {
                    return handler(state, req, res, &params, ws);
                }
                (Target::WebSocket(_), _) => upgrade_only |= method_matches,
                (Target::Http(handler), _) if method_matches => {
                    return handler(state, req, res, &params);
                }
                (Target::Http(_), _) => {}
            }
            allowed.push(route.method);
        }
        if upgrade_only {
            // RFC 9110 §15.5.22: 426 names the protocol to upgrade to.
            let body = b"{\"error\":\"this resource is a WebSocket\"}\n";
            let len = body.len().to_string();
            res.start(
                426,
                &[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Content-Type", "application/json"),
                    ("Content-Length", &len),
                ],
            )?;
            res.write(body)?;
            return Ok(());
        }
        if allowed.is_empty() {
            return res.send(404, "application/json", b"{\"error\":\"not found\"}\n");
        }
        if allowed.contains(&"GET") {
            allowed.push("HEAD");
        }
        let allow = allowed.join(", ");
        let body = b"{\"error\":\"method not allowed\"}\n";
        let len = body.len().to_string();
        res.start(
            405,
            &[
                ("Allow", &allow),
                ("Content-Type", "application/json"),
                ("Content-Length", &len),
            ],
        )?;
        res.write(body)?;
        Ok(())
    }
}

/// One segment of `pattern`: `{name}` or a literal.
fn segment(pattern: &str, s: &'static str) -> Segment {
    if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        if !name.is_empty() && !name.contains(['{', '}']) {
            return Segment::Param(name);
        }
    }
    if s.starts_with(':') || s.starts_with('*') || s.contains(['{', '}']) {
        panic!(
            "router pattern `{pattern}`: segment `{s}` is not `{{name}}` or a literal (path parameters are written `{{id}}`, not `:id`)"
        );
    }
    Segment::Literal(s)
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn matches(segments: &[Segment], path: &str) -> Option<Params> {
    let mut params = Params::default();
    let mut parts = split(path);
    for segment in segments {
        let part = parts.next()?;
        match segment {
            Segment::Literal(lit) if *lit == part => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => params.pairs.push((name, part.to_string())),
        }
    }
    parts.next().is_none().then_some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &'static str) -> Vec<Segment> {
        let r: Router<()> = Router::new().route("GET", p, |_, _, _, _| Ok(()));
        r.routes.into_iter().next().unwrap().segments
    }

    #[test]
    fn literal_and_params() {
        let s = segs("/tasks/{id}");
        assert!(matches(&s, "/tasks").is_none());
        assert_eq!(matches(&s, "/tasks/42").unwrap().get("id"), Some("42"));
        assert!(matches(&s, "/tasks/42/x").is_none());
        assert!(matches(&s, "/other/42").is_none());
        assert!(matches(&segs("/"), "/").is_some());
    }

    #[test]
    fn other_routers_syntax_is_refused_clearly() {
        for pattern in ["/tasks/:id", "/files/*rest", "/tasks/{id", "/tasks/{}"] {
            let Err(err) = std::panic::catch_unwind(|| segs(pattern)) else {
                panic!("{pattern} accepted");
            };
            let text = err.downcast_ref::<String>().unwrap();
            assert!(text.contains(pattern) && text.contains("`{id}`"), "{text}");
        }
    }
}
