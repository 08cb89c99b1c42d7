//! `--demo`: the newcomer's first run answers at once, HTTP and WebSocket, on the shipped
//! routes, from any working directory.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::{Gateway, client, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread")]
async fn demo_mode_serves_the_shipped_routes() {
    let gw = Gateway::spawn(&["--demo"], &[]);
    let resp = client().get(gw.url("/auth/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let body = json(resp).await;
    assert_eq!(body["service"], "auth-service");
    assert_eq!(body["path"], "/health");

    for (path, service) in [
        ("/core/items", "core-service"),
        ("/messaging/rooms", "messaging-service"),
    ] {
        let body = json(client().get(gw.url(path)).send().await.unwrap()).await;
        assert_eq!(body["service"], service);
    }

    let url = format!("ws://127.0.0.1:{}/socket/websocket?vsn=2.0.0", gw.port);
    let mut ws = support::ws_connect_echoing(&url, "hello").await;
    ws.send(Message::text("again")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("again"));
}
