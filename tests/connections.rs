//! Connection handling: keep-alive on both sides with upstream reuse, many clients at once,
//! and hop-by-hop headers kept to their own hop.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use support::{Gateway, client, config, json, upstream};

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_reuses_upstream_connections() {
    let up = upstream::http("core").await;
    let gw = Gateway::start_with(
        &config(&[("core-service", "/core", up.addr, r#""strip_prefix": true"#)]),
        &[("PROXY_THREADS", "1")],
    );
    let c = client();
    let mut peers = HashSet::new();
    for i in 0..20 {
        let body = json(c.get(gw.url(&format!("/core/r{i}"))).send().await.unwrap()).await;
        peers.insert(body["peer"].as_str().unwrap().to_owned());
    }
    // Sequential requests from one keep-alive client: one upstream connection carries them.
    assert_eq!(peers.len(), 1, "upstream saw connections from {peers:?}");
}

#[test]
fn downstream_keep_alive_serves_many_requests_on_one_connection() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(upstream::http("core"));
    let gw = support::core_route(up.addr);
    let mut sock = TcpStream::connect(gw.addr()).unwrap();
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    for i in 0..5 {
        write!(sock, "GET /core/k{i} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "request {i}: {status}");
        let mut len = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        assert!(String::from_utf8_lossy(&body).contains(&format!("\"/k{i}\"")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_clients_each_get_their_own_answer() {
    let auth = upstream::http("auth").await;
    let core = upstream::http("core").await;
    let gw = Gateway::start(&config(&[
        (
            "auth-service",
            "/auth",
            auth.addr,
            r#""strip_prefix": true"#,
        ),
        (
            "core-service",
            "/core",
            core.addr,
            r#""strip_prefix": true"#,
        ),
    ]));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = gw.url(&format!(
            "/{}/item/{i}?n={i}",
            if i % 2 == 0 { "auth" } else { "core" }
        ));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let resp = c
                .get(url)
                .header("x-request-id", format!("c-{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.headers()["x-request-id"], format!("c-{i}").as_str());
            (i, json(resp).await)
        }));
    }
    for t in tasks {
        let (i, body) = t.await.unwrap();
        assert_eq!(body["service"], if i % 2 == 0 { "auth" } else { "core" });
        assert_eq!(body["path"], format!("/item/{i}"));
        assert_eq!(body["query"], format!("n={i}"));
        assert_eq!(body["headers"]["x-request-id"], format!("c-{i}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_stay_on_their_hop() {
    let (raw, mut seen) = upstream::raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Upstream-Private\r\nX-Upstream-Private: secret\r\nKeep-Alive: timeout=99\r\nX-Kept: yes\r\n\r\nok",
    )
    .await;
    let gw = support::core_route(raw.addr);
    let resp = support::raw_request(
        gw.addr(),
        b"GET /core/x HTTP/1.1\r\nHost: a\r\nConnection: X-Client-Private, keep-alive\r\nX-Client-Private: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n",
    );
    let head = seen.recv().await.unwrap().to_ascii_lowercase();
    for gone in [
        "x-client-private",
        "keep-alive:",
        "proxy-authorization",
        "proxy-connection",
        "\r\nte:",
    ] {
        assert!(!head.contains(gone), "upstream received {gone}:\n{head}");
    }
    assert!(head.contains("x-kept: yes"), "{head}");

    let lower = resp.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{resp}");
    assert!(
        !lower.contains("x-upstream-private"),
        "client received a hop-by-hop header:\n{resp}"
    );
    assert!(!lower.contains("keep-alive: timeout=99"), "{resp}");
    assert!(lower.contains("x-kept: yes"), "{resp}");
}
