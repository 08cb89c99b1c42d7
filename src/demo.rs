//! Demo mode: echo services on loopback standing in for auth, core and messaging, so a
//! newcomer with nothing else installed gets a working gateway at once. Each distinct
//! upstream of the config (`auth-service:2000`, ...) gets its own echo server on an
//! ephemeral loopback port, and the routes are pointed at those. The echo answers any
//! request with what it received (method, path, query, headers), and holds a WebSocket
//! echo on any path asked to upgrade (Phoenix's `/socket/websocket`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::response::{IntoResponse, Json, Response};
use http_body_util::BodyExt;

use crate::config::Service;

/// A router that echoes every request as JSON, and WebSocket messages back to the sender.
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the echo reports
/// the peer address it saw, which shows upstream connection reuse.
pub fn echo_app(service: &str) -> Router {
    let service = service.to_owned();
    Router::new().fallback(move |req: Request| echo(service.clone(), req))
}

async fn echo(service: String, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    if parts.headers.contains_key(http::header::UPGRADE) {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws.on_upgrade(echo_socket),
            Err(rejection) => rejection.into_response(),
        };
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let mut body_bytes = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => return http::StatusCode::BAD_REQUEST.into_response(),
        }
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Json(serde_json::json!({
        "service": service,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
        "peer": peer,
    }))
    .into_response()
}

async fn echo_socket(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

/// Start one echo server per distinct upstream of `services` on a thread of its own, and
/// return the services pointed at them.
pub fn start(services: Vec<Service>) -> std::io::Result<Vec<Service>> {
    let mut servers: BTreeMap<(String, u16), (std::net::TcpListener, String)> = BTreeMap::new();
    for s in &services {
        if let std::collections::btree_map::Entry::Vacant(slot) =
            servers.entry((s.host.clone(), s.port))
        {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            slot.insert((listener, s.host.clone()));
        }
    }
    let mut ports = BTreeMap::new();
    for ((host, port), (listener, _)) in &servers {
        let local = listener.local_addr()?;
        log::info!("demo: echo for {host}:{port} listening on {local}");
        ports.insert((host.clone(), *port), local.port());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("demo-upstreams".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for (_, (listener, name)) in servers {
                    tasks.push(tokio::spawn(serve(listener, name)));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })?;
    Ok(services
        .into_iter()
        .map(|mut s| {
            s.port = ports[&(s.host.clone(), s.port)];
            s.host = "127.0.0.1".into();
            s
        })
        .collect())
}

async fn serve(listener: std::net::TcpListener, name: String) {
    let result = async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = echo_app(&name).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await
    }
    .await;
    if let Err(e) = result {
        log::error!("demo: echo for {name} stopped: {e}");
    }
}
