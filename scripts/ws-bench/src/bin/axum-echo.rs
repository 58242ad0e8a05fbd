//! An axum echo server for `scripts/bench --websocket`: every WebSocket message comes back
//! as it came. `axum-echo PORT THREADS` serves 127.0.0.1:PORT on a tokio runtime of THREADS
//! worker threads (the same count as ferricorn's workers in the comparison).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::routing::{any, get};
use axum::Router;

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if matches!(message, Message::Close(_)) || socket.send(message).await.is_err() {
            return;
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("PORT");
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let app = Router::new().route("/", get(|| async { "ok\n" })).route(
            "/{*path}",
            any(|ws: WebSocketUpgrade| async { ws.on_upgrade(echo) }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        println!("listening");
        axum::serve(listener, app).await.expect("serve");
    });
}
