//! Shutdown that an orchestrator can roll (`PROXY_SHUTDOWN_DELAY_SECONDS`): on SIGTERM the
//! gateway is not ready at once, keeps accepting and serving for the delay (clients that
//! are still sent its way see nothing fail), then stops accepting, lets in-flight requests
//! finish, closes what is left (WebSocket tunnels included) within the grace period, and
//! exits 0.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::load::Load;
use support::{Gateway, config, raw_request, upstream};
use tokio_tungstenite::tungstenite::Message;

const DELAY: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(1);

/// A gateway with the delay and grace above, routes `/core` and `/socket` to `up`.
fn delayed(up: &upstream::Server) -> Gateway {
    Gateway::start_with(
        &config(&[
            ("core-service", "/core", up.addr, r#""strip_prefix": true"#),
            ("websocket", "/socket", up.addr, r#""strip_prefix": false"#),
        ]),
        &[
            ("PROXY_SHUTDOWN_DELAY_SECONDS", "2"),
            ("PROXY_GRACE_SECONDS", "1"),
        ],
    )
}

/// Poll `/readyz` until it is 503; how long after `since` it first was.
async fn unready_after(gw: &Gateway, since: Instant) -> Duration {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    loop {
        if let Ok(r) = client.get(gw.admin_url("/readyz")).send().await
            && r.status() == 503
        {
            let body = support::json(r).await;
            assert_eq!(body["status"], "shutting down");
            return since.elapsed();
        }
        assert!(since.elapsed() < DELAY, "/readyz never said 503");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_delay_drops_nothing_is_unready_at_once_and_exits_0() {
    let up = upstream::http("core").await;
    let mut gw = delayed(&up);
    let ready = support::admin_get(&gw, "/readyz").await;
    assert_eq!(ready.status(), 200);

    let start = Instant::now();
    let signal_at = start + Duration::from_millis(500);
    let load = Load::mixed(gw.url("/core/anything"), 3, 3);
    tokio::time::sleep_until(signal_at.into()).await;
    let signalled = Instant::now();
    gw.signal("TERM");
    let unready = unready_after(&gw, signalled).await;
    assert!(
        unready <= Duration::from_millis(100),
        "/readyz said 503 only {unready:?} after SIGTERM"
    );

    // Still serving, liveness unchanged, and asking clients to move on.
    let healthz = support::admin_get(&gw, "/healthz").await;
    assert_eq!(healthz.status(), 200);
    let head = raw_request(gw.addr(), b"GET /core/x HTTP/1.1\r\nHost: gateway\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{head}"
    );
    // The load balancer stops sending well inside the delay (as endpoints do).
    tokio::time::sleep_until((signalled + DELAY - Duration::from_millis(300)).into()).await;
    let outcome = load.stop().await;
    outcome.assert_none_failed(50);
    eprintln!(
        "{} requests through SIGTERM, none failed; /readyz 503 after {unready:?}",
        outcome.ok
    );
    // A request in flight when the delay ends is finished, not cut.
    tokio::time::sleep_until((signalled + DELAY - Duration::from_millis(200)).into()).await;
    let slow = tokio::spawn(support::client().get(gw.url("/core/slow/600")).send());
    let slow = slow.await.unwrap().expect("the in-flight request answered");
    assert_eq!(slow.status(), 200);

    // After the delay the listener closes...
    let refused_by = signalled + DELAY + Duration::from_millis(1500);
    while TcpStream::connect(gw.addr()).is_ok() {
        assert!(
            Instant::now() < refused_by,
            "still accepting {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        signalled.elapsed() >= DELAY - Duration::from_millis(50),
        "stopped accepting after {:?}, inside the delay",
        signalled.elapsed()
    );
    // ...and the process exits 0 after the grace period.
    let exit = gw
        .wait_exit(DELAY + GRACE + Duration::from_secs(6))
        .expect("exited after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_works_through_the_delay_and_is_closed_within_the_grace_period() {
    let up = upstream::http("messaging").await;
    let mut gw = delayed(&up);
    let url = format!("ws://127.0.0.1:{}/socket/websocket?vsn=2.0.0", gw.port);
    let mut ws = support::ws_connect_echoing(&url, "before").await;

    let signalled = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(DELAY / 2).await;
    ws.send(Message::text("during the delay")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("during the delay")
    );
    // Open during the delay, too.
    let mut late = support::ws_connect_echoing(&url, "opened during the delay").await;

    for ws in [&mut ws, &mut late] {
        let end = tokio::time::timeout(DELAY + GRACE + Duration::from_secs(3), async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(
            end.is_ok(),
            "tunnel still open {:?} after SIGTERM",
            signalled.elapsed()
        );
    }
    let closed = signalled.elapsed();
    assert!(
        closed >= DELAY && closed <= DELAY + GRACE + Duration::from_millis(1500),
        "tunnel closed {closed:?} after SIGTERM (delay {DELAY:?}, grace {GRACE:?})"
    );
    let exit = gw
        .wait_exit(Duration::from_secs(6))
        .expect("exited after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_delay_sigterm_stops_accepting_at_once() {
    let up = upstream::http("core").await;
    let mut gw = support::core_route(up.addr);
    let signalled = Instant::now();
    gw.signal("TERM");
    while TcpStream::connect(gw.addr()).is_ok() {
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "still accepting {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit = gw
        .wait_exit(Duration::from_secs(8))
        .expect("exited after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_cuts_the_delay_short() {
    let up = upstream::http("core").await;
    let mut gw = Gateway::start_with(
        &config(&[("core-service", "/core", up.addr, "")]),
        &[("PROXY_SHUTDOWN_DELAY_SECONDS", "60")],
    );
    let signalled = Instant::now();
    gw.signal("TERM");
    gw.wait_for_log("serving 60 s more");
    gw.signal("TERM");
    let exit = gw
        .wait_exit(Duration::from_secs(8))
        .expect("exited after the second SIGTERM");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(signalled.elapsed() < Duration::from_secs(10));
}
