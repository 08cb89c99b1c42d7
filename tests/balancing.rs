//! Several instances behind a route: round robin and consistent hashing, active health
//! checks that take a dead instance out (and put it back) within two intervals, passive
//! ejection and a retry on another instance when a connect fails, 503 when none is
//! healthy, readiness following it all.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::{Gateway, client, free_port, json, upstream};

fn route(instances: &[std::net::SocketAddr], extra: &str) -> String {
    let list: Vec<String> = instances
        .iter()
        .map(|a| format!(r#"{{"host": "{}", "port": {}}}"#, a.ip(), a.port()))
        .collect();
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        r#"{{"services": [{{"name": "core-service", "prefix": "/core", "strip_prefix": true,
            "upstreams": [{}]{extra}}}]}}"#,
        list.join(", ")
    )
}

/// Which service answered each of `n` requests (all must be 200).
async fn spread(gw: &Gateway, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let mut req = client().get(gw.url("/core/x"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 200);
        let body = json(resp).await;
        *seen
            .entry(body["service"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_spreads_evenly_and_hashing_sticks() {
    let ups = [
        upstream::http("a").await,
        upstream::http("b").await,
        upstream::http("c").await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let gw = Gateway::start(&route(&addrs, ""));
    let seen = spread(&gw, 300, &[]).await;
    for name in ["a", "b", "c"] {
        let n = seen.get(name).copied().unwrap_or(0);
        assert!((80..=120).contains(&n), "{name}: {n} of 300: {seen:?}");
    }

    let gw = Gateway::start(&route(&addrs, r#""lb": "hash:x-user""#));
    for user in ["alice", "bob", "carol"] {
        let seen = spread(&gw, 30, &[("x-user", user)]).await;
        assert_eq!(seen.len(), 1, "{user} moved between instances: {seen:?}");
    }
    let mut owners = std::collections::HashSet::new();
    for i in 0..30 {
        let seen = spread(&gw, 1, &[("x-user", &format!("user-{i}"))]).await;
        owners.extend(seen.into_keys());
    }
    assert!(owners.len() >= 2, "hashing sent every user to {owners:?}");

    // hash:ip: one client address, one instance; `X-Forwarded-For` from an untrusted
    // peer does not move it.
    let gw = Gateway::start(&route(&addrs, r#""lb": "hash:ip""#));
    let seen = spread(&gw, 30, &[]).await;
    assert_eq!(
        seen.len(),
        1,
        "one client moved between instances: {seen:?}"
    );
    let spoofed = spread(&gw, 10, &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(
        spoofed.keys().collect::<Vec<_>>(),
        seen.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_instance_leaves_rotation_within_two_intervals_and_comes_back() {
    let a = upstream::http("a").await;
    let b = upstream::http("b").await;
    let b_addr = b.addr;
    let gw = Gateway::start(&route(
        &[a.addr, b.addr],
        r#""health_check": {"path": "/health", "interval_ms": 200, "timeout_ms": 100}"#,
    ));
    let seen = spread(&gw, 20, &[]).await;
    assert_eq!(seen.len(), 2, "{seen:?}");

    drop(b);
    // Out within two intervals (polled, bounded generously for a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(3);
    while spread(&gw, 4, &[]).await.contains_key("b") {
        assert!(
            Instant::now() < deadline,
            "the dead instance stayed in rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = spread(&gw, 40, &[]).await;
    assert_eq!(
        seen.get("b"),
        None,
        "the dead instance still got traffic: {seen:?}"
    );
    let readyz = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 200, "one healthy instance is enough");

    let _b = upstream::http_on("b", &b_addr.to_string()).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if spread(&gw, 10, &[]).await.contains_key("b") {
            break;
        }
        assert!(Instant::now() < deadline, "the instance did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_connect_is_retried_on_another_instance_then_ejected() {
    let a = upstream::http("a").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let gw = Gateway::start(&route(&[a.addr, dead], ""));
    for _ in 0..30 {
        let resp = client().get(gw.url("/core/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp = client()
            .post(gw.url("/core/x"))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "nothing was sent: a POST goes elsewhere too"
        );
    }
    gw.wait_for_log("failed connects in a row");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_healthy_instance_is_a_503_at_once() {
    let dead1: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dead2: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Two instances go through the balancer; one takes the single-instance path, which
    // must still ask its health.
    for instances in [&[dead1, dead2][..], &[dead1][..]] {
        no_healthy_instance(instances).await;
    }
}

async fn no_healthy_instance(instances: &[std::net::SocketAddr]) {
    let gw = Gateway::start(&route(
        instances,
        r#""health_check": {"interval_ms": 200, "timeout_ms": 100}"#,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let resp = client().get(gw.url("/core/x")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let body = json(resp).await;
    assert_eq!(body["error"], "no healthy instance");
    let readyz = client().get(gw.admin_url("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), 503);
    assert_eq!(
        json(readyz).await["services_without_healthy_instance"],
        serde_json::json!(["core-service"])
    );
}

#[test]
fn instances_are_host_and_port_or_upstreams_not_both() {
    let both = r#"{"services": [{"name": "core-service", "host": "a", "port": 1, "prefix": "/core",
        "upstreams": [{"host": "b", "port": 2}]}]}"#;
    let path = support::write_config(both);
    let out = support::run_bin(&["--check", "--services", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service 'core-service', field 'upstreams'"),
        "{err}"
    );
    let bad_lb = route(&["127.0.0.1:1".parse().unwrap()], r#""lb": "random""#);
    let path = support::write_config(&bad_lb);
    let out = support::run_bin(&["--check", "--services", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("field 'lb'"), "{err}");
}
