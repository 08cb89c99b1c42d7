//! Benchmark upstream for what nginx cannot play: the WebSocket echo and the upload sink.
//! The gateway's own demo echo, on a port given as the first argument.

use std::net::SocketAddr;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| std::io::Error::other("usage: echo_upstream PORT"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let app = beat_gateway::demo::echo_app("bench-echo")
        .into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await
}
