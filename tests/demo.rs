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

#[tokio::test(flavor = "multi_thread")]
async fn demo_mode_shows_edge_auth_with_a_ready_token() {
    let gw = Gateway::spawn(&["--demo"], &[]);
    let log = gw.wait_for_log("this one is valid for a day: ");
    let token = log
        .lines()
        .find_map(|l| l.split("this one is valid for a day: ").nth(1))
        .map(|t| t.trim().trim_end_matches('"').to_owned())
        .expect("token in the log");
    gw.wait_for_log("jwks: 1 key(s) loaded");
    assert!(log.contains("curl -i -H 'Authorization: Bearer "), "{log}");

    let resp = client().get(gw.url("/secure/me")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client()
        .get(gw.url("/secure/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = json(resp).await;
    assert_eq!(body["headers"]["x-user-id"], "demo-user");
    assert_eq!(body["headers"]["x-user-role"], "client");
    // The shipped routes stay open.
    let resp = client().get(gw.url("/core/items")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
