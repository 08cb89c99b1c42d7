//! WebSocket upgrades through `/socket`, Phoenix style: frames intact both ways, and a quiet
//! but open socket is not cut by the route's read timeout.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::{Gateway, config, upstream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The messaging test upstream behind the `websocket` route (`/socket`, path as is), with
/// `extra` route fields.
async fn socket_gateway(extra: &str) -> (upstream::Server, Gateway) {
    let up = upstream::http("messaging").await;
    let fields = format!(r#""strip_prefix": false{extra}"#);
    let gw = Gateway::start(&config(&[("websocket", "/socket", up.addr, &fields)]));
    (up, gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_echo_through_socket_route() {
    let (_up, gw) = socket_gateway("").await;
    let url = format!(
        "ws://127.0.0.1:{}/socket/websocket?token=abc&vsn=2.0.0",
        gw.port
    );
    let (_, resp) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("x-request-id"));

    let join = r#"["1","1","room:lobby","phx_join",{}]"#;
    let mut ws = support::ws_connect_echoing(&url, join).await;

    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(blob.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(blob));

    for i in 0..50 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
    }
    for i in 0..50 {
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_websocket_outlives_the_read_timeout() {
    let (_up, gw) = socket_gateway(r#", "read_timeout_ms": 300"#).await;
    let url = format!("ws://127.0.0.1:{}/socket/websocket?vsn=2.0.0", gw.port);
    let mut ws = support::ws_connect_echoing(&url, "before").await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // 5x the read timeout
    ws.send(Message::text("after")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("reply in time");
    assert_eq!(reply.unwrap().unwrap(), Message::text("after"));
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrade_to_a_dead_upstream_is_a_json_502() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let gw = Gateway::start(&config(&[("websocket", "/socket", dead, "")]));
    let url = format!("ws://127.0.0.1:{}/socket/websocket?vsn=2.0.0", gw.port);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 502);
            assert!(resp.headers().contains_key("x-request-id"));
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"], "upstream unavailable");
        }
        other => panic!("expected an HTTP 502, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fresh_upgrade_carries_frames() {
    // Many short-lived sockets to a service that answers the upgrade the moment its head
    // arrives: each must pass its first frame, with no retry. Stock pingora-proxy 0.9.1
    // tore down 6-23% of these right after the 101 (cloudflare/pingora#946; the vendored
    // crate carries the fix, vendor/README.md).
    let up = upstream::ws_echo_fast().await;
    let gw = Gateway::start(&config(&[("websocket", "/socket", up.addr, "")]));
    let url = format!("ws://127.0.0.1:{}/socket/websocket", gw.port);
    for i in 0..300 {
        let mut request = url.as_str().into_client_request().unwrap();
        let key = http::HeaderValue::from_static(upstream::WS_KEY);
        request.headers_mut().insert("sec-websocket-key", key);
        let mut ws = support::ws_request_echoing(request, &format!("hello {i}")).await;
        ws.close(None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_the_service_never_answers_ends_within_the_read_timeout() {
    // The service reads the upgrade request and says nothing: the wait for its 101 is
    // bounded by the route's read timeout (only an upgraded tunnel has none).
    let (silent, _seen) = upstream::silent().await;
    let gw = Gateway::start(&config(&[(
        "websocket",
        "/socket",
        silent.addr,
        r#""read_timeout_ms": 500"#,
    )]));
    let url = format!("ws://127.0.0.1:{}/socket/websocket", gw.port);
    let start = std::time::Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .expect("an answer before 10 s");
    match answer {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 504);
            assert!(resp.headers().contains_key("x-request-id"));
        }
        other => panic!("expected an HTTP 504, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
}
