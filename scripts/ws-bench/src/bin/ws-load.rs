//! The WebSocket load client of `scripts/bench --websocket`, bounded in time and count.
//!
//! `ws-load echo URL CONNECTIONS BYTES SECONDS`: each connection sends a message of BYTES
//! bytes and waits for its echo, again and again, for SECONDS; prints `messages N` (echoes
//! received in all).
//!
//! `ws-load broadcast URL CONNECTIONS TRIGGER`: opens CONNECTIONS sockets (in batches), then
//! sends the HTTP request in file TRIGGER to the server (a POST that makes the app send one
//! message to every socket) and prints `broadcast_ms M` (until the last socket has it) and
//! `open_ms O` (time to open them all).

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    socket
}

async fn echo(url: String, bytes: usize, until: Instant) -> u64 {
    let mut socket = connect(&url).await;
    let payload = vec![b'x'; bytes];
    let mut count = 0;
    while Instant::now() < until {
        if socket.send(Message::binary(payload.clone())).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(_))) => count += 1,
            _ => break,
        }
    }
    let _ = socket.close(None).await;
    count
}

async fn broadcast(url: String, connections: usize, trigger: String) {
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(connections);
    for chunk in 0..connections.div_ceil(500) {
        let batch = 500.min(connections - chunk * 500);
        let opened = futures_util::future::join_all((0..batch).map(|_| connect(&url))).await;
        sockets.extend(opened);
    }
    let open_ms = started.elapsed().as_millis();
    let request = std::fs::read(&trigger).expect("the trigger request");
    let host = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let sent = Instant::now();
    let waiters: Vec<_> = sockets
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let got = tokio::time::timeout(Duration::from_secs(60), s.next()).await;
                (Instant::now(), matches!(got, Ok(Some(Ok(_)))), s)
            })
        })
        .collect();
    let mut http = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect for the trigger");
    http.write_all(&request).await.expect("send the trigger");
    let mut answer = vec![0u8; 4096];
    let _ = http.read(&mut answer).await;
    let mut last = sent;
    let mut missing = 0;
    let mut kept = Vec::new();
    for waiter in waiters {
        let (at, ok, socket) = waiter.await.expect("a waiter");
        last = last.max(at);
        missing += usize::from(!ok);
        kept.push(socket);
    }
    println!("open_ms {open_ms}");
    println!("broadcast_ms {}", last.duration_since(sent).as_millis());
    println!("missing {missing}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match args.first().map(String::as_str) {
        Some("echo") => {
            let (url, connections, bytes, seconds) = (
                args[1].clone(),
                args[2].parse::<usize>().expect("CONNECTIONS"),
                args[3].parse::<usize>().expect("BYTES"),
                args[4].parse::<u64>().expect("SECONDS"),
            );
            let total: u64 = runtime.block_on(async move {
                let until = Instant::now() + Duration::from_secs(seconds);
                let tasks: Vec<_> = (0..connections)
                    .map(|_| tokio::spawn(echo(url.clone(), bytes, until)))
                    .collect();
                let mut total = 0;
                for task in tasks {
                    total += task.await.unwrap_or(0);
                }
                total
            });
            println!("messages {total}");
        }
        Some("broadcast") => {
            let (url, connections, trigger) = (
                args[1].clone(),
                args[2].parse::<usize>().expect("CONNECTIONS"),
                args[3].clone(),
            );
            runtime.block_on(broadcast(url, connections, trigger));
        }
        _ => eprintln!(
            "usage: ws-load echo URL CONNECTIONS BYTES SECONDS | broadcast URL CONNECTIONS TRIGGER"
        ),
    }
}
