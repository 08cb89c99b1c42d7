//! Limits that protect the services and the gateway: `max_body_bytes` per route (413
//! before anything past it is forwarded, for declared and chunked bodies), the body
//! timeout (408), and the connection limits in all and per client address (503 JSON, and
//! everyone else unaffected). At the total limit the connection idle the longest (silent,
//! or kept alive between requests) is closed to let a new client in; only busy ones get
//! the 503.

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

/// Open `n` connections, each with a request head sent in part (so each is counted, and
/// busy: it is not idle with a head under way).
fn half_heads(gw: &Gateway, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(gw.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET /core/x HTTP/1.1\r\nHost: a\r\n").unwrap();
            s
        })
        .collect()
}

/// Open `n` connections that send nothing, one after the other: each is counted (and idle,
/// the first the oldest) before the next opens.
async fn silent(gw: &Gateway, n: usize) -> Vec<TcpStream> {
    let open = open_connections(gw).await;
    let mut held = Vec::new();
    for i in 1..=n {
        held.push(TcpStream::connect(gw.addr()).unwrap());
        wait_open(gw, open + i).await;
    }
    held
}

/// The gateway's count of open client connections.
async fn open_connections(gw: &Gateway) -> usize {
    let metrics = support::metrics(gw).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("beat_gateway_client_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Until the gateway counts `n` open connections (and a moment for the last to start
/// waiting for its request).
async fn wait_open(gw: &Gateway, n: usize) {
    let start = Instant::now();
    loop {
        let open = open_connections(gw).await;
        if open == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{open} open, never {n}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// Whether the gateway closed `s` (it reads the end of the stream; anything it sent first
/// is skipped).
fn closed(s: &TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut s = s;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The gateway in front of a `/core` service, at most 4 client connections.
async fn limited_to_4() -> (upstream::Server, Gateway) {
    let up = upstream::http("core").await;
    let routes = config(&[("core", "/core", up.addr, r#""strip_prefix": true"#)]);
    let gw = Gateway::start_with(&routes, &[("PROXY_MAX_CONNECTIONS", "4")]);
    settled(&gw).await;
    (up, gw)
}

/// The start-up probes' connections (`Gateway::start` connects to see it listening) are
/// closed and uncounted: one still counted would take a slot from the test.
async fn settled(gw: &Gateway) {
    wait_open(gw, 0).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    wait_open(gw, 0).await;
}

/// A new client's request is answered (200) within a second; its connection, kept alive.
fn answered_within_a_second(gw: &Gateway) -> TcpStream {
    let (reply, took, s) = timed_request(gw);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    s
}

/// A new client's request on a fresh connection: the reply, how long it took, and the
/// connection (kept alive, idle, the newest).
fn timed_request(gw: &Gateway) -> (String, Duration, TcpStream) {
    let start = Instant::now();
    let mut s = TcpStream::connect(gw.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /core/new HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !complete(&reply) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&reply).into_owned(),
        start.elapsed(),
        s,
    )
}

/// Whether `reply` holds a whole response with a `Content-Length`.
fn complete(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply).to_ascii_lowercase();
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    text[..end]
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| reply.len() >= end + 4 + len)
}

/// `GET` on a kept-alive connection; the reply's head.
fn again(mut s: &TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /core/again HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn evicted_total(metrics: &str) -> &str {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("beat_gateway_connections_evicted_total "))
        .unwrap_or("(none)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn busy_connections_past_the_limits_get_503_and_the_rest_carry_on() {
    let up = upstream::http("core").await;
    let routes = config(&[("core", "/core", up.addr, r#""strip_prefix": true"#)]);
    let gw = Gateway::start_with(&routes, &[("PROXY_MAX_CONNECTIONS", "4")]);
    settled(&gw).await;
    // Three heads under way and a request waiting on its service: nothing is idle.
    let mut held = half_heads(&gw, 3);
    let mut slow = TcpStream::connect(gw.addr()).unwrap();
    slow.write_all(b"GET /core/slow/3000 HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    wait_open(&gw, 4).await;
    let reply = raw_request(gw.addr(), b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(
        reply.contains(r#""error":"too many connections""#),
        "{reply}"
    );
    // The held connections still work: a head completed is answered...
    held[0].write_all(b"\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = held[0].read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // ... and then, kept alive and idle, its connection makes room for the next client.
    let _new = answered_within_a_second(&gw);
    assert!(closed(&held[0]));
    assert!(!closed(&held[1]) && !closed(&held[2]) && !closed(&slow));
    // They close: new ones are let in (once the gateway has seen the closes).
    drop((held, slow));
    std::thread::sleep(Duration::from_millis(300));
    let reply = raw_request(gw.addr(), b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let metrics = support::metrics(&gw).await;
    assert!(
        metrics.contains(r#"beat_gateway_connections_refused_total{limit="total"} 1"#),
        "{metrics}"
    );
    assert_eq!(evicted_total(&metrics), "1", "{metrics}");

    // Per address: 127.0.0.1 may hold 2; a trusted proxy is not held to it.
    // Its idle connections do not make room (they are its own limit's to keep).
    let gw = Gateway::start_with(&routes, &[("PROXY_MAX_CONNECTIONS_PER_IP", "2")]);
    let held = hold(&gw, 2);
    let reply = raw_request(gw.addr(), b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("from this address"), "{reply}");
    assert!(!closed(&held[0]) && !closed(&held[1]));
    let gw = Gateway::start_with(
        &routes,
        &[
            ("PROXY_MAX_CONNECTIONS_PER_IP", "2"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    let _held = hold(&gw, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_connections_at_the_limit_make_room_for_a_new_client() {
    let (_up, gw) = limited_to_4().await;
    let held = silent(&gw, 4).await;
    let _new = answered_within_a_second(&gw);
    // The oldest was closed, the rest are open and still served.
    assert!(closed(&held[0]));
    for s in &held[1..] {
        assert!(!closed(s));
    }
    assert!(again(&held[1]).starts_with("HTTP/1.1 200"));
    assert_eq!(evicted_total(&support::metrics(&gw).await), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kept_alive_connections_at_the_limit_make_room_for_a_new_client() {
    let (_up, gw) = limited_to_4().await;
    let held = hold(&gw, 4);
    wait_open(&gw, 4).await;
    let _new = answered_within_a_second(&gw);
    assert!(closed(&held[0]));
    for s in &held[1..] {
        assert!(again(s).starts_with("HTTP/1.1 200"));
    }
    assert_eq!(evicted_total(&support::metrics(&gw).await), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_connection_idle_the_longest_is_the_one_closed() {
    let (_up, gw) = limited_to_4().await;
    // Opened a, b, c, d; then a makes a request: idle the longest are b, then c (the new
    // clients' connections stay open, idle, the newest).
    let held = silent(&gw, 4).await;
    assert!(again(&held[0]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut new = Vec::new();
    for (i, evicted) in [1, 2].into_iter().enumerate() {
        new.push(answered_within_a_second(&gw));
        assert!(closed(&held[evicted]), "connection {evicted}");
        assert_eq!(
            evicted_total(&support::metrics(&gw).await),
            (i + 1).to_string()
        );
    }
    assert!(!closed(&held[0]) && !closed(&held[3]));
}
