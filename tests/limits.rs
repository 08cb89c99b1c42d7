//! Limits that protect the services and the gateway: `max_body_bytes` per route (413
//! before anything past it is forwarded, for declared and chunked bodies), the body
//! timeout (408), and the connection limits in all and per client address (503 JSON, and
//! everyone else unaffected).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Gateway, config, raw_request, upstream};

/// A recording upstream behind `/up` with `extra` route fields.
async fn recorded(
    extra: &str,
    env: &[(&str, &str)],
) -> (
    upstream::Server,
    tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    Gateway,
) {
    let (up, seen) = upstream::recording().await;
    let gw = Gateway::start_with(&config(&[("upload", "/up", up.addr, extra)]), env);
    (up, seen, gw)
}

/// Everything the service received within a second, all connections together.
async fn received(seen: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<u8> {
    let mut all = Vec::new();
    while let Ok(Some(bytes)) = tokio::time::timeout(Duration::from_secs(1), seen.recv()).await {
        all.extend_from_slice(&bytes);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let (_up, mut seen, gw) = recorded(r#""max_body_bytes": 1000"#, &[]).await;
    let head = b"POST /up/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1001\r\n\r\n";
    let mut req = head.to_vec();
    req.extend_from_slice(&[b'x'; 1001]);
    let reply = raw_request(gw.addr(), &req);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(
        reply.contains(r#""error":"request body too large""#),
        "{reply}"
    );
    assert!(
        reply.to_ascii_lowercase().contains("x-request-id:"),
        "{reply}"
    );

    // With Expect: 100-continue the client learns it before sending the body.
    let reply = raw_request(
        gw.addr(),
        b"PUT /up/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");

    // At the limit: forwarded whole.
    let mut req = b"POST /up/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'y'; 1000]);
    let reply = raw_request(gw.addr(), &req);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let got = received(&mut seen).await;
    assert!(
        !got.windows(3).any(|w| w == b"xxx"),
        "the refused body reached the service"
    );
    assert_eq!(got.iter().filter(|&&b| b == b'y').count(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunked_body_over_the_limit_stops_at_the_limit() {
    let (_up, mut seen, gw) = recorded(r#""max_body_bytes": 1000"#, &[]).await;
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /up/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // 600 + 600 bytes, the second chunk crossing the limit, then more that must not go.
    for _ in 0..2 {
        s.write_all(format!("258\r\n{}\r\n", "z".repeat(600)).as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = s.write_all(format!("258\r\n{}\r\n0\r\n\r\n", "z".repeat(600)).as_bytes());
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    let got = received(&mut seen).await;
    let forwarded = got.iter().filter(|&&b| b == b'z').count();
    assert!(
        forwarded <= 1000,
        "{forwarded} body bytes reached the service"
    );
    // The gateway is fine for the next client.
    let ok = raw_request(
        gw.addr(),
        b"POST /up/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_body_gets_408() {
    let up = upstream::http("core").await;
    let gw = Gateway::start_with(
        &config(&[("core", "/core", up.addr, r#""strip_prefix": true"#)]),
        &[("PROXY_BODY_TIMEOUT_SECONDS", "1")],
    );
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /core/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        .unwrap();
    let start = Instant::now();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let waited = start.elapsed();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}\n{}", gw.log());
    assert!(reply.contains(r#""status":408"#), "{reply}");
    assert!(waited < Duration::from_secs(5), "408 after {waited:?}");
    // A body that keeps coming, slowly, is not cut.
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /core/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    for part in [b"ab", b"cd", b"ef"] {
        std::thread::sleep(Duration::from_millis(600));
        s.write_all(part).unwrap();
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#""bytes":6"#), "{reply}");
}

/// Open `n` connections that have sent a request and been answered (so each is counted
/// and idle).
fn hold(gw: &Gateway, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            s
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_limits_get_503_and_the_rest_carry_on() {
    let up = upstream::http("core").await;
    let routes = config(&[("core", "/core", up.addr, r#""strip_prefix": true"#)]);
    let gw = Gateway::start_with(&routes, &[("PROXY_MAX_CONNECTIONS", "4")]);
    let held = hold(&gw, 4);
    let reply = raw_request(gw.addr(), b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.contains(r#""error":"too many connections""#),
        "{reply}"
    );
    // The held connections still work.
    let mut first = &held[0];
    first
        .write_all(b"GET /core/again HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = first.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // They close: new ones are let in (once the gateway has seen the closes).
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let reply = raw_request(gw.addr(), b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let metrics = support::metrics(&gw).await;
    assert!(
        metrics.contains(r#"beat_gateway_connections_refused_total{limit="total"} 1"#),
        "{metrics}"
    );

    // Per address: 127.0.0.1 may hold 2; a trusted proxy is not held to it.
    let gw = Gateway::start_with(&routes, &[("PROXY_MAX_CONNECTIONS_PER_IP", "2")]);
    let _held = hold(&gw, 2);
    let reply = raw_request(gw.addr(), b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("from this address"), "{reply}");
    let gw = Gateway::start_with(
        &routes,
        &[
            ("PROXY_MAX_CONNECTIONS_PER_IP", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    let _held = hold(&gw, 5);
}
