//! Upstream servers for tests: an HTTP app (the gateway's demo echo plus endpoints for
//! streaming, slowness and chunking) and a raw TCP server that shows exactly what bytes the
//! gateway sent.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::routing::{get, post};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A server task, aborted on drop.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Byte `i` of every test payload: deterministic, not compressible into a pattern that a
/// broken proxy could get right by accident.
pub fn payload_byte(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

pub fn payload_chunk(start: u64, len: usize) -> Vec<u8> {
    (start..start + len as u64).map(payload_byte).collect()
}

pub fn payload_sha256(len: u64) -> String {
    let mut h = Sha256::new();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(1 << 20) as usize;
        h.update(payload_chunk(at, n));
        at += n as u64;
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HTTP upstream. Besides the echo (any other path, and WebSocket upgrades):
/// `GET /big/{n}` streams n payload bytes (chunked); `POST /upload` answers the size and
/// sha256 of what it read; `GET /slow/{ms}` answers after ms milliseconds; `GET /chunked`
/// sends three chunks with pauses; `POST /mirror` streams the request body back.
pub async fn http(name: &str) -> Server {
    let app = Router::new()
        .route("/big/{n}", get(big))
        .route("/upload", post(upload))
        .route("/slow/{ms}", get(slow))
        .route("/chunked", get(chunked))
        .route(
            "/mirror",
            post(|req: Request| async move { Body::new(req.into_body()) }),
        )
        .merge(beat_gateway::demo::echo_app(name));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, app).await;
    });
    Server { addr, task }
}

async fn big(Path(n): Path<u64>) -> Body {
    let chunk = 64 * 1024;
    let stream = futures_util::stream::iter((0..n).step_by(chunk)).map(move |start| {
        let len = (n - start).min(chunk as u64) as usize;
        Ok::<_, std::io::Error>(payload_chunk(start, len))
    });
    Body::from_stream(stream)
}

async fn upload(req: Request) -> String {
    let mut body = req.into_body().into_data_stream();
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                n += c.len() as u64;
                h.update(&c);
            }
            Err(e) => return format!("error: {e}"),
        }
    }
    serde_json::json!({"bytes": n, "sha256": hex(&h.finalize())}).to_string()
}

async fn slow(Path(ms): Path<u64>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    "slow"
}

async fn chunked() -> Body {
    let stream = futures_util::stream::iter(["one,", "two,", "three"]).then(|part| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        Ok::<_, std::io::Error>(part)
    });
    Body::from_stream(stream)
}

/// A raw upstream: every connection's request head is sent on the channel and answered
/// with `response`, then the connection is closed.
pub async fn raw(response: &'static [u8]) -> (Server, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind raw upstream");
    let addr = listener.local_addr().expect("raw addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                let _ = sock.write_all(response).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (Server { addr, task }, rx)
}
