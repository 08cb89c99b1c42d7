//! HTTP/1 behaviour clients and attackers exercise directly, over raw sockets: pipelining,
//! `100 Continue`, HTTP/1.0 clients, heads the gateway refuses (always as JSON with a
//! request id), bad chunked bodies, and pooled connections the service closed.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Gateway, upstream};

/// One response read off a connection: the head (lowercased) and the body, decoded.
struct Reply {
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
    }
}

fn connect(gw: &Gateway) -> (TcpStream, BufReader<TcpStream>) {
    let sock = TcpStream::connect(gw.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let reader = BufReader::new(sock.try_clone().unwrap());
    (sock, reader)
}

/// Read one response: Content-Length, chunked, or (for `close`) until the end.
fn read_reply(r: &mut BufReader<TcpStream>, head_request: bool) -> Reply {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "closed; got {head:?}");
        head.push_str(&line.to_ascii_lowercase());
        if line == "\r\n" {
            break;
        }
    }
    let mut reply = Reply {
        head,
        body: Vec::new(),
    };
    if head_request || reply.status() == 100 {
        return reply;
    }
    if let Some(len) = reply.header("content-length") {
        reply.body = vec![0; len.parse().unwrap()];
        r.read_exact(&mut reply.body).unwrap();
    } else if reply.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            reply.body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else {
        r.read_to_end(&mut reply.body).unwrap();
    }
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_are_answered_in_order() {
    let (_up, gw) = support::core_gateway("core").await;
    let (mut sock, mut r) = connect(&gw);
    sock.write_all(
        b"GET /core/p1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /core/p2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          POST /core/p3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          HEAD /core/p4 HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /core/p5 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    for (path, bytes) in [("/p1", 0), ("/p2", 5), ("/p3", 3)] {
        let reply = read_reply(&mut r, false);
        assert_eq!(reply.status(), 200, "{}", reply.head);
        let body = reply.json();
        assert_eq!(body["path"], path);
        assert_eq!(body["body_bytes"], bytes, "{body}");
    }
    let head = read_reply(&mut r, true);
    assert_eq!(head.status(), 200);
    assert!(head.header("content-length").is_some(), "{}", head.head);
    assert_eq!(read_reply(&mut r, false).json()["path"], "/p5");
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_continue_gets_100_before_the_body() {
    let (_up, gw) = support::core_gateway("core").await;
    let (mut sock, mut r) = connect(&gw);
    sock.write_all(
        b"PUT /core/put HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = read_reply(&mut r, false);
    assert_eq!(interim.status(), 100, "{}", interim.head);
    sock.write_all(b"data").unwrap();
    let reply = read_reply(&mut r, false);
    assert_eq!(reply.status(), 200);
    let body = reply.json();
    assert_eq!(body["body_bytes"], 4);
    // The expectation was met by the gateway; the service is not asked again.
    assert!(body["headers"].get("expect").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http10_client_gets_a_decoded_body_then_close() {
    let (_up, gw) = support::core_gateway("core").await;
    let (mut sock, mut r) = connect(&gw);
    // The service streams /chunked with chunked coding, which HTTP/1.0 cannot read.
    sock.write_all(b"GET /core/chunked HTTP/1.0\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut r, false);
    assert_eq!(reply.status(), 200);
    assert!(
        reply.header("transfer-encoding").is_none(),
        "{}",
        reply.head
    );
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.body, b"one,two,three");

    // Keep-alive on request, with a length the client can use.
    let (mut sock, mut r) = connect(&gw);
    for i in 0..2 {
        write!(
            sock,
            "GET /core/k{i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        )
        .unwrap();
        let reply = read_reply(&mut r, false);
        assert_eq!(reply.header("connection"), Some("keep-alive"));
        assert_eq!(reply.json()["path"], format!("/k{i}"));
        // HTTP/1.1 services need a Host; the gateway supplies the upstream's.
        assert!(reply.json()["headers"]["host"].as_str().is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_heads_get_json_with_a_request_id() {
    let (_up, gw) = support::core_gateway("core").await;
    let long_target = format!(
        "GET /core/{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(40_000)
    );
    // The request line limit is nginx's 8 KiB.
    let nine_kib_target = format!(
        "GET /core/x?token={} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    // Over 32 KiB of head in 60 lines, and over 100 lines: 431. Over 256 lines Pingora's
    // parser gives up first: 400 (it was a 431 when the gateway parsed heads itself).
    let big_headers = format!(
        "GET /core/x HTTP/1.1\r\nHost: a\r\n{}\r\n",
        format!("X-Filler: {}\r\n", "0".repeat(600)).repeat(60)
    );
    let many_headers = format!(
        "GET /core/x HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X-Filler: 0\r\n".repeat(101)
    );
    let too_many_to_parse = format!(
        "GET /core/x HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X-Filler: 0123456789012345678901234567890123456789\r\n".repeat(800)
    );
    let cases: Vec<(&[u8], u16)> = vec![
        (b"GET /core/x HTTP/1.1\r\n\r\n", 400),
        (b"GET /core/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            b"GET /core/x HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\n\r\n",
            400,
        ),
        (b"GARBAGE\r\n\r\n", 400),
        // Pingora's parser refuses any version but HTTP/1.x as a malformed head (it was a
        // 505 when the gateway parsed heads itself).
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        (
            b"CONNECT core:3000 HTTP/1.1\r\nHost: core:3000\r\n\r\n",
            405,
        ),
        (
            b"PUT /core/x HTTP/1.1\r\nHost: a\r\nExpect: later\r\nContent-Length: 1\r\n\r\nx",
            417,
        ),
        (long_target.as_bytes(), 414),
        (nine_kib_target.as_bytes(), 414),
        (big_headers.as_bytes(), 431),
        (many_headers.as_bytes(), 431),
        (too_many_to_parse.as_bytes(), 400),
        (b"GET /core/x HTTP/1.1\r\nHost: gw test\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        let (mut sock, mut r) = connect(&gw);
        let _ = sock.write_all(raw);
        let reply = read_reply(&mut r, false);
        let shown = String::from_utf8_lossy(&raw[..raw.len().min(60)]).into_owned();
        assert_eq!(reply.status(), status, "{shown:?}\n{}", reply.head);
        let id = reply
            .header("x-request-id")
            .expect("request id header")
            .to_owned();
        assert_eq!(reply.json()["request_id"], id.as_str(), "{shown:?}");
        assert_eq!(reply.json()["status"], status);
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_request_with_a_body_ends_its_connection_and_one_without_does_not() {
    let (_up, gw) = support::core_gateway("core").await;
    // No body: the connection serves the next request.
    let (mut sock, mut r) = connect(&gw);
    sock.write_all(b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut r, false);
    assert_eq!(reply.status(), 404);
    assert_ne!(reply.header("connection"), Some("close"), "{}", reply.head);
    sock.write_all(b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut r, false).status(), 200);
    // A body the gateway did not read (it could hide a request): the connection ends.
    let (mut sock, mut r) = connect(&gw);
    sock.write_all(
        b"POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\n\r\n\
          GET /core/hidden HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let reply = read_reply(&mut r, false);
    assert_eq!(reply.status(), 404);
    assert_eq!(reply.header("connection"), Some("close"), "{}", reply.head);
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_chunked_body_is_a_400_and_the_connection_ends() {
    let (_up, gw) = support::core_gateway("core").await;
    for body in [
        &b"zz\r\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX\r\n0\r\n\r\n",
        b"5\nhello\n0\n\n",
    ] {
        let (mut sock, mut r) = connect(&gw);
        sock.write_all(
            b"POST /core/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        sock.write_all(body).unwrap();
        let reply = read_reply(&mut r, false);
        assert_eq!(reply.status(), 400, "{}", String::from_utf8_lossy(body));
        assert_eq!(reply.header("connection"), Some("close"));
        let mut rest = Vec::new();
        assert_eq!(
            r.read_to_end(&mut rest).unwrap_or(0),
            0,
            "connection left open"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pooled_connection_closed_by_the_service_is_retried_for_idempotent_requests() {
    // Answers without `Connection: close`, then closes: every pooled connection is stale.
    let (raw, mut seen) = upstream::raw(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let gw = support::core_route(raw.addr);
    let (mut sock, mut r) = connect(&gw);
    for i in 0..5 {
        write!(sock, "GET /core/g{i} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let reply = read_reply(&mut r, false);
        assert_eq!(reply.status(), 200, "request {i}: {}", reply.head);
        assert_eq!(reply.body, b"ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut heads = 0;
    while seen.try_recv().is_ok() {
        heads += 1;
    }
    assert!(heads >= 5, "the service saw {heads} requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_request_goes_to_the_service_rewritten_again() {
    // The second request goes out on the pooled connection, which the service closes
    // under it: the gateway sends it again on a new connection, with the same rewritten
    // target as the first try.
    let (up, mut seen) = upstream::dies_on_reuse().await;
    let gw = support::core_route(up.addr);
    let (mut sock, mut r) = connect(&gw);
    for path in ["one", "two?q=1"] {
        write!(sock, "GET /core/{path} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let reply = read_reply(&mut r, false);
        assert_eq!(reply.status(), 200, "{path}: {}", reply.head);
        assert_eq!(String::from_utf8_lossy(&reply.body), format!("/{path}"));
    }
    let mut lines = Vec::new();
    while let Ok(line) = seen.try_recv() {
        lines.push(line);
    }
    assert_eq!(
        lines,
        [
            "GET /one HTTP/1.1",
            "GET /two?q=1 HTTP/1.1",
            "GET /two?q=1 HTTP/1.1"
        ],
        "the service saw the second request twice, rewritten both times"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_with_a_body_is_never_sent_twice() {
    // The same dying pooled connection, under an idempotent PUT with a body: the service
    // may have acted on it, and the body is gone, so the gateway answers 502 instead of
    // sending it again.
    let (up, mut seen) = upstream::dies_on_reuse().await;
    let gw = support::core_route(up.addr);
    let (mut sock, mut r) = connect(&gw);
    write!(sock, "GET /core/one HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(read_reply(&mut r, false).status(), 200);
    write!(
        sock,
        "PUT /core/two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    )
    .unwrap();
    let reply = read_reply(&mut r, false);
    assert_eq!(reply.status(), 502, "{}", reply.head);
    let mut lines = Vec::new();
    while let Ok(line) = seen.try_recv() {
        lines.push(line);
    }
    assert_eq!(
        lines,
        ["GET /one HTTP/1.1", "PUT /two HTTP/1.1"],
        "sent once"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn response_framing_from_the_service_is_normalised() {
    // Both Transfer-Encoding and Content-Length: refused as RFC 9112 §6.3 advises (a
    // response-splitting shape; vendored pingora-core patch 7), a 502.
    let (raw, _seen) = upstream::raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    )
    .await;
    let gw = support::core_route(raw.addr);
    let (mut sock, mut r) = connect(&gw);
    sock.write_all(b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut r, false);
    assert_eq!(reply.status(), 502, "{}", reply.head);

    // A response with no length at all ends when the service closes: an HTTP/1.1 client
    // gets it chunked (so its end is explicit, and the connection stays usable).
    let (raw, _seen) = upstream::raw(b"HTTP/1.1 200 OK\r\n\r\nuntil close").await;
    let gw = support::core_route(raw.addr);
    let (mut sock, mut r) = connect(&gw);
    sock.write_all(b"GET /core/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let reply = read_reply(&mut r, false);
    assert_eq!(
        reply.header("transfer-encoding"),
        Some("chunked"),
        "{}",
        reply.head
    );
    assert_eq!(reply.body, b"until close");
    sock.write_all(b"GET /core/y HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let next = read_reply(&mut r, false);
    assert_eq!(
        next.status(),
        200,
        "the next request on the same connection"
    );
    assert_eq!(next.body, b"until close");
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_upgrade_is_not_tunnelled() {
    // A service that would switch to anything it is asked for.
    let (raw, mut seen) = upstream::raw(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await;
    let gw = support::core_route(raw.addr);
    let (mut sock, mut r) = connect(&gw);
    sock.write_all(
        b"GET /core/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .unwrap();
    let reply = read_reply(&mut r, false);
    // The request went on as a plain one; a 101 to it is the service misbehaving.
    assert_eq!(reply.status(), 502, "{}", reply.head);
    let head = seen.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        !head.contains("upgrade") && !head.contains("http2-settings"),
        "{head}"
    );
}

/// The gateway with one `/core` route and the given environment.
fn core_route_with(addr: std::net::SocketAddr, env: &[(&str, &str)]) -> Gateway {
    let routes = support::config(&[("core-service", "/core", addr, r#""strip_prefix": true"#)]);
    Gateway::start_with(&routes, env)
}

/// Seconds until the gateway closes `sock` (reads until the end, nothing may arrive).
fn seconds_until_closed(sock: &mut TcpStream) -> f64 {
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    sock.read_to_end(&mut rest)
        .expect("the gateway closes the connection, before the test's read timeout");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_are_closed_and_busy_ones_kept() {
    let up = upstream::http("core").await;
    let gw = core_route_with(up.addr, &[("PROXY_KEEPALIVE_SECONDS", "1")]);

    // Busy for three times the timeout, never idle for long: it stays open.
    let (mut sock, mut r) = connect(&gw);
    for i in 0..10 {
        write!(sock, "GET /core/busy{i} HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(read_reply(&mut r, false).status(), 200, "request {i}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Then idle: closed after about a second, without a word.
    let waited = seconds_until_closed(&mut sock);
    assert!(
        (0.5..5.0).contains(&waited),
        "closed after {waited:.2} s idle"
    );

    // A connection that never sends a request is closed the same way.
    let (mut silent, _) = connect(&gw);
    let waited = seconds_until_closed(&mut silent);
    assert!((0.5..5.0).contains(&waited), "closed after {waited:.2} s");
}

/// Slowloris: send a head that never ends, a byte every 20 ms, `bytes` in all (stops early
/// when the gateway has closed).
fn trickle_head(sock: &TcpStream, bytes: usize) -> std::thread::JoinHandle<()> {
    let mut writer = sock.try_clone().unwrap();
    std::thread::spawn(move || {
        let head = b"GET /core/slow HTTP/1.1\r\nHost: a\r\nX-Slow: ".iter();
        for byte in head.chain(std::iter::repeat(&b'z')).take(bytes) {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_sent_byte_by_byte_gets_408_when_its_time_is_up() {
    let (up, mut requests) = upstream::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let gw = core_route_with(up.addr, &[("PROXY_HEADER_TIMEOUT_SECONDS", "1")]);
    let (sock, mut r) = connect(&gw);
    // Slowloris: a byte every 20 ms keeps the connection busy but the head never ends. It
    // goes on sending after the 408: the answer must still arrive whole and the connection
    // end cleanly (no reset), which needs the gateway to read and drop the rest.
    let trickle = trickle_head(&sock, 250);
    let start = std::time::Instant::now();
    let reply = read_reply(&mut r, false);
    let waited = start.elapsed().as_secs_f64();
    assert_eq!(reply.status(), 408, "{}", reply.head);
    assert_eq!(reply.header("connection"), Some("close"));
    let id = reply.header("x-request-id").expect("request id").to_owned();
    assert_eq!(reply.json()["request_id"], id.as_str());
    assert!((0.5..5.0).contains(&waited), "408 after {waited:.2} s");
    let mut sock = sock;
    seconds_until_closed(&mut sock);
    trickle.join().unwrap();
    assert!(
        requests.try_recv().is_err(),
        "the service saw the slow request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_head_on_a_kept_alive_connection_gets_408_from_its_first_byte() {
    // Pingora's keep-alive timeout restarts on every read, so on a reused connection a
    // trickled head would never end; the head timeout counts from its first byte.
    let up = upstream::http("core").await;
    let gw = core_route_with(
        up.addr,
        &[
            ("PROXY_HEADER_TIMEOUT_SECONDS", "1"),
            ("PROXY_KEEPALIVE_SECONDS", "30"),
        ],
    );
    let (mut sock, mut r) = connect(&gw);
    sock.write_all(b"GET /core/first HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_reply(&mut r, false).status(), 200);
    // Idle for a while first: the wait for a next request is the keep-alive's, not the
    // head's.
    std::thread::sleep(Duration::from_millis(1500));
    let start = std::time::Instant::now();
    let trickle = trickle_head(&sock, 150);
    let reply = read_reply(&mut r, false);
    let waited = start.elapsed().as_secs_f64();
    assert_eq!(reply.status(), 408, "{}", reply.head);
    assert!((0.8..3.0).contains(&waited), "408 after {waited:.2} s");
    trickle.join().unwrap();
}

/// A client still sending when the gateway refuses and closes (here a 300 KB body behind a
/// malformed head) must get the answer and a clean end, not a reset that destroys it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_reaches_a_client_that_is_still_sending() {
    let (_up, gw) = support::core_gateway("core").await;
    let (mut sock, mut r) = connect(&gw);
    let mut request =
        b"POST /core/x HTTP/1.1\r\nHost: a\r\nBad Header: 1\r\nContent-Length: 300000\r\n\r\n"
            .to_vec();
    request.extend(std::iter::repeat_n(b'x', 300_000));
    sock.write_all(&request).unwrap();
    // Everything is on its way before the client reads: a reset would have arrived too.
    std::thread::sleep(Duration::from_millis(300));
    let reply = read_reply(&mut r, false);
    assert_eq!(reply.status(), 400, "{}", reply.head);
    assert_eq!(reply.header("connection"), Some("close"));
    let mut rest = Vec::new();
    r.read_to_end(&mut rest)
        .expect("end of stream after the answer, not a reset");
    assert!(rest.is_empty());
}
