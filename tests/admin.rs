//! The admin listener (health, readiness, Prometheus metrics, routes, its token), the
//! `--probe` healthcheck, and W3C trace context, against the real binary.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use support::{BIN, Gateway, client, config, free_port, get, json, upstream};
use tokio_tungstenite::tungstenite::Message;

async fn metrics_text(gw: &Gateway, headers: &[(&str, &str)]) -> String {
    let mut req = client().get(gw.admin_url("/metrics"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = req.send().await.expect("scrape");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("metrics text")
}

/// The value of the sample `name{labels}` (labels as Prometheus prints them, sorted).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
}

/// Scrape until `series` reads `want` (the access phase runs just after the response).
async fn wait_sample(gw: &Gateway, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics_text(gw, &[]).await;
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {:?}, not {want}:\n{text}",
            sample(&text, series)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_exactly() {
    let up = upstream::http("core").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Closes every connection once it has the request head: no response at all.
    let (hangs_up, _) = upstream::raw(b"").await;
    let routes = config(&[
        ("core-service", "/core", up.addr, r#""strip_prefix": true"#),
        ("down", "/down", dead, r#""strip_prefix": true"#),
        ("websocket", "/socket", up.addr, ""),
        ("slow", "/slow", up.addr, r#""read_timeout_ms": 200"#),
        ("hangs-up", "/hangs-up", hangs_up.addr, ""),
    ]);
    let gw = Gateway::start(&routes);
    for _ in 0..3 {
        assert_eq!(get(&gw, "/core/x", &[]).await.status(), 200);
    }
    assert_eq!(get(&gw, "/nowhere", &[]).await.status(), 404);
    assert_eq!(get(&gw, "/down/x", &[]).await.status(), 502);
    assert_eq!(get(&gw, "/slow/1000", &[]).await.status(), 504);
    assert_eq!(get(&gw, "/hangs-up/x", &[]).await.status(), 502);
    let brew = support::raw_request(
        gw.addr(),
        b"BREW /core/pot HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(brew.starts_with("HTTP/1.1 200"), "{brew}");

    let text = wait_sample(
        &gw,
        r#"beat_gateway_requests_total{method="GET",route="core-service",status="200"}"#,
        3.0,
    )
    .await;
    for (series, want) in [
        (
            r#"beat_gateway_requests_total{method="GET",route="-",status="404"}"#,
            1.0,
        ),
        (
            r#"beat_gateway_requests_total{method="GET",route="down",status="502"}"#,
            1.0,
        ),
        (
            r#"beat_gateway_requests_total{method="OTHER",route="core-service",status="200"}"#,
            1.0,
        ),
        (
            r#"beat_gateway_request_duration_seconds_count{route="core-service"}"#,
            4.0,
        ),
        (
            r#"beat_gateway_upstream_errors_total{kind="connect",route="down"}"#,
            1.0,
        ),
        (
            r#"beat_gateway_upstream_errors_total{kind="timeout",route="slow"}"#,
            1.0,
        ),
        (
            r#"beat_gateway_upstream_errors_total{kind="reset",route="hangs-up"}"#,
            1.0,
        ),
        (
            r#"beat_gateway_requests_total{method="GET",route="slow",status="504"}"#,
            1.0,
        ),
        ("beat_gateway_inflight_requests", 0.0),
        ("beat_gateway_websocket_tunnels", 0.0),
        (r#"beat_gateway_config_reloads_total{result="failed"}"#, 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series}:\n{text}");
    }
    // The loaded file's sha256, as the info metric's label.
    let hash_line = text
        .lines()
        .find(|l| l.starts_with("beat_gateway_config_info{"))
        .expect("config info");
    let hash = hash_line.split('"').nth(1).unwrap();
    assert_eq!(hash.len(), 64, "{hash_line}");
    assert!(hash_line.ends_with(" 1"));

    // An open WebSocket is a tunnel until it closes.
    let url = format!("ws://127.0.0.1:{}/socket/websocket", gw.port);
    let mut ws = support::ws_connect_echoing(&url, "hi").await;
    wait_sample(&gw, "beat_gateway_websocket_tunnels", 1.0).await;
    ws.send(Message::Close(None)).await.unwrap();
    drop(ws);
    wait_sample(&gw, "beat_gateway_websocket_tunnels", 0.0).await;

    // The public port serves none of the admin paths.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let resp = get(&gw, path, &[]).await;
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(json(resp).await["status"], 404);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_routes_and_probe() {
    let up = upstream::http("core").await;
    let gw = Gateway::start(&config(&[(
        "core-service",
        "/core",
        up.addr,
        r#""strip_prefix": true"#,
    )]));
    let healthz = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    let readyz = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 200);
    let routes = json(client().get(gw.admin_url("/routes")).send().await.unwrap()).await;
    assert_eq!(routes["routes"][0]["name"], "core-service");
    assert_eq!(routes["routes"][0]["instances"][0]["healthy"], true);
    assert_eq!(probe(gw.admin_port, &[]), Some(0));

    // A service whose name does not resolve has no healthy instance: not ready.
    let gw = Gateway::start(&format!(
        r#"{{"services": [
            {{"name": "core-service", "host": "127.0.0.1", "port": {}, "prefix": "/core"}},
            {{"name": "ghost-service", "host": "ghost.invalid", "port": 80, "prefix": "/ghost"}}]}}"#,
        up.addr.port()
    ));
    let resp = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body = json(resp).await;
    assert_eq!(
        body["services_without_healthy_instance"],
        serde_json::json!(["ghost-service"])
    );
    assert_eq!(probe(gw.admin_port, &[]), Some(1));
    let text = metrics_text(&gw, &[]).await;
    assert_eq!(
        sample(
            &text,
            r#"beat_gateway_upstream_healthy{instance="ghost.invalid:80",route="ghost-service"}"#
        ),
        Some(0.0),
        "{text}"
    );
}

fn probe(admin_port: u16, env: &[(&str, &str)]) -> Option<i32> {
    Command::new(BIN)
        .arg("--probe")
        .env("ADMIN_PORT", admin_port.to_string())
        .env("PROXY_PORT", free_port().to_string())
        .envs(env.iter().copied())
        .output()
        .ok()?
        .status
        .code()
}

#[tokio::test(flavor = "multi_thread")]
async fn off_loopback_the_admin_paths_need_the_token() {
    // Refused without one.
    let out = Command::new(BIN)
        .args(["--check"])
        .env("ADMIN_HOST", "0.0.0.0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ADMIN_TOKEN"));

    let up = upstream::http("core").await;
    let token = "admin-token-for-the-test";
    let gw = Gateway::start_with(
        &config(&[("core-service", "/core", up.addr, "")]),
        &[("ADMIN_HOST", "0.0.0.0"), ("ADMIN_TOKEN", token)],
    );
    let resp = client().get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "healthz stays open");
    // A probe carries no credentials: readiness answers, without details.
    let resp = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "readyz answers probes");
    assert_eq!(json(resp).await, serde_json::json!({"status": "ready"}));
    for path in ["/metrics", "/readyz", "/routes"] {
        if path != "/readyz" {
            let resp = client().get(gw.admin_url(path)).send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path}");
        }
        let resp = client()
            .get(gw.admin_url(path))
            .bearer_auth("wrong-token-of-some-length")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let resp = client()
            .get(gw.admin_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let env = [("ADMIN_HOST", "0.0.0.0"), ("ADMIN_TOKEN", token)];
    assert_eq!(probe(gw.admin_port, &env), Some(0));

    // Not ready: a probe learns that much; which services, only with the token.
    let gw = Gateway::start_with(
        r#"{"services": [
            {"name": "ghost-service", "host": "ghost.invalid", "port": 80, "prefix": "/ghost"}]}"#,
        &env,
    );
    let resp = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(json(resp).await, serde_json::json!({"status": "not ready"}));
    let resp = client()
        .get(gw.admin_url("/readyz"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        json(resp).await["services_without_healthy_instance"],
        serde_json::json!(["ghost-service"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_context_is_forwarded_started_or_replaced() {
    let up = upstream::http("core").await;
    let gw = support::core_route(up.addr);
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = json(
        get(
            &gw,
            "/core/x",
            &[("traceparent", valid), ("tracestate", "vendor=1")],
        )
        .await,
    )
    .await;
    assert_eq!(body["headers"]["traceparent"], valid);
    assert_eq!(body["headers"]["tracestate"], "vendor=1");

    let started = json(get(&gw, "/core/x", &[]).await).await;
    let tp = started["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        (parts[0], parts[1].len(), parts[2].len(), parts[3]),
        ("00", 32, 16, "01"),
        "{tp}"
    );

    let replaced = json(
        get(
            &gw,
            "/core/x",
            &[
                ("traceparent", "00-XYZ-00f067aa0ba902b7-01"),
                ("tracestate", "vendor=1"),
            ],
        )
        .await,
    )
    .await;
    let tp2 = replaced["headers"]["traceparent"].as_str().unwrap();
    assert!(tp2.starts_with("00-") && tp2.len() == 55, "{tp2}");
    assert!(replaced["headers"].get("tracestate").is_none());

    // The trace id is in the access line.
    gw.wait_for_log("4bf92f3577b34da6a3ce929d0e0e4736");
    gw.wait_for_log(parts[1]);
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let up = upstream::http("core").await;
    let routes = config(&[("core-service", "/core", up.addr, "")]);
    let gw = Gateway::start_with(&routes, &[("ADMIN_METRICS", "off")]);
    assert_eq!(get(&gw, "/core/x", &[]).await.status(), 200);
    let resp = client().get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(
        json(resp).await["error"],
        "metrics are off (ADMIN_METRICS=off)"
    );
    let resp = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}
