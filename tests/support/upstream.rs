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
    http_on(name, "127.0.0.1:0").await
}

/// [`http`] on a given address (to bring an instance back where it was).
pub async fn http_on(name: &str, addr: &str) -> Server {
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
    let listener = tokio::net::TcpListener::bind(addr)
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
    serve_each(move |mut sock, tx| async move {
        let Some(head) = read_head(&mut sock).await else {
            return;
        };
        let _ = tx.send(head);
        let _ = sock.write_all(response).await;
        let _ = sock.shutdown().await;
    })
    .await
}

/// A loopback server that runs `handle` on each accepted connection, with a channel on
/// which the handler reports what it saw.
async fn serve_each<T, F, Fut>(handle: F) -> (Server, mpsc::UnboundedReceiver<T>)
where
    T: Send + 'static,
    F: Fn(tokio::net::TcpStream, mpsc::UnboundedSender<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind test upstream");
    let addr = listener.local_addr().expect("test upstream addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(handle(sock, tx.clone()));
        }
    });
    (Server { addr, task }, rx)
}

/// A service that reads each request head (sent on the channel) and never answers,
/// holding the connection open.
pub async fn silent() -> (Server, mpsc::UnboundedReceiver<String>) {
    serve_each(|mut sock, tx| async move {
        if let Some(head) = read_head(&mut sock).await {
            let _ = tx.send(head);
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        }
    })
    .await
}

/// Read up to the end of a request head (and whatever came with it).
async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut tmp).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The `Sec-WebSocket-Key` of RFC 6455's example handshake, and its accept value: a client
/// that sends this key lets a service answer before it has read the request.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A WebSocket echo that writes its `101` the moment a connection is accepted, before the
/// request head has even arrived (clients must send [`WS_KEY`]), then echoes every
/// message. A proxy that races the 101 against the start of its tunnel loses upgrades to
/// this one.
pub async fn ws_echo_fast() -> Server {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let (server, _) = serve_each(|mut sock, _tx: mpsc::UnboundedSender<()>| async move {
        let switching = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
        );
        if sock.write_all(switching.as_bytes()).await.is_err() {
            return;
        }
        // The head, byte by byte: nothing of the first frame may be taken with it.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            match sock.read_u8().await {
                Ok(b) => head.push(b),
                Err(_) => return,
            }
        }
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(sock, Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    })
    .await;
    server
}

/// A service that records every byte a connection brings (until it has been quiet for
/// 300 ms), sends them on the channel, then answers `200 ok` and closes: it shows what a
/// request's body and anything behind it looked like on the wire.
pub async fn recording() -> (Server, mpsc::UnboundedReceiver<Vec<u8>>) {
    serve_each(|mut sock, tx| async move {
        let mut seen = Vec::new();
        let mut tmp = [0u8; 4096];
        let quiet = Duration::from_millis(300);
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, sock.read(&mut tmp)).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&tmp[..n]);
        }
        let _ = tx.send(seen);
        let _ = sock
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        let _ = sock.shutdown().await;
    })
    .await
}

/// A keep-alive service that answers each connection's first request with its path (as
/// the body) and then closes the connection on reading the second one without answering:
/// a pooled connection that dies under the next request, which the gateway retries on a
/// new connection when that is safe. Each request line seen is sent on the channel.
pub async fn dies_on_reuse() -> (Server, mpsc::UnboundedReceiver<String>) {
    serve_each(|mut sock, tx| async move {
        let Some(head) = read_head(&mut sock).await else {
            return;
        };
        let line = head.lines().next().unwrap_or_default().to_owned();
        let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
        let _ = tx.send(line);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{path}",
            path.len()
        );
        if sock.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if let Some(head) = read_head(&mut sock).await {
            let _ = tx.send(head.lines().next().unwrap_or_default().to_owned());
        }
        // Closed without an answer.
    })
    .await
}
