//! The hostile-request corpus: what the internet sends a public gateway, over raw sockets.
//! For every case: the expected status (or a clean close where none can be framed) within
//! a few seconds; nothing smuggled, malformed or unrouted reaches the service (a strict
//! RFC 9112 service records what it gets and every rule broken); a normal request right
//! after is answered.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::{Gateway, config, strict};

/// What a case may get: one of these statuses, or (when `close` is set) a closed
/// connection without any.
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    statuses: &'static [u16],
    close: bool,
}

fn case(name: &'static str, raw: impl AsRef<[u8]>, statuses: &'static [u16]) -> Case {
    Case {
        name,
        raw: raw.as_ref().to_vec(),
        statuses,
        close: false,
    }
}

fn or_close(mut c: Case) -> Case {
    c.close = true;
    c
}

/// The first response's status, or `None` when the connection closed without one; and
/// how long it took.
fn answer(addr: SocketAddr, raw: &[u8]) -> (Option<u16>, String, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let _ = s.write_all(raw);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok());
    (status, text, start.elapsed())
}

/// The body of a GET that looks like a second request.
const HIDDEN: &str = "GET /core/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n";

fn corpus() -> Vec<Case> {
    let h = "Host: gw\r\n";
    let mut cases = vec![
        // Framing.
        case(
            "CL then TE",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /core/smuggled HTTP/1.1\r\n{h}\r\n"
            ),
            &[400],
        ),
        case(
            "TE then CL",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /core/smuggled HTTP/1.1\r\n{h}\r\n"
            ),
            &[400],
        ),
        case(
            "two lengths",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            ),
            &[400],
        ),
        case(
            "length list",
            format!("POST /core/a HTTP/1.1\r\n{h}Content-Length: 5, 6\r\n\r\nhello!"),
            &[400],
        ),
        case(
            "TE chunked, identity",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
            ),
            &[400, 501],
        ),
        case(
            "TE identity",
            format!("POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: identity\r\n\r\n"),
            &[400, 501],
        ),
        case(
            "TE xchunked",
            format!("POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
            &[400, 501],
        ),
        case(
            "TE twice",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            &[400],
        ),
        case(
            "TE space before colon",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /core/smuggled HTTP/1.1\r\n{h}\r\n"
            ),
            &[400],
        ),
        case(
            "TE on HTTP/1.0",
            format!("POST /core/a HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            &[400],
        ),
        or_close(case(
            "bare LF line ends",
            "GET /core/lf HTTP/1.1\nHost: gw\n\nGET /core/smuggled HTTP/1.1\nHost: gw\n\n",
            &[200, 400],
        )),
        or_close(case(
            "negative chunk size",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"
            ),
            &[400],
        )),
        or_close(case(
            "0x chunk size",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
            ),
            &[400],
        )),
        or_close(case(
            "overflowing chunk size",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF1\r\nhello\r\n0\r\n\r\n"
            ),
            &[400],
        )),
        or_close(case(
            "chunk size then garbage",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5 zz\r\nhello\r\n0\r\n\r\n"
            ),
            &[400],
        )),
        or_close(case(
            "no CRLF after chunk data",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"
            ),
            &[400],
        )),
        or_close(case(
            "trailer with a request line",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nGET /core/smuggled HTTP/1.1\r\n{h}\r\n"
            ),
            &[200, 400],
        )),
        or_close(case(
            "trailer with NUL",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-A: a\0b\r\n\r\n"
            ),
            &[200, 400],
        )),
        or_close(case(
            "trailer with obs-fold",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-A: a\r\n b\r\n\r\n"
            ),
            &[200, 400],
        )),
        or_close(case(
            "trailer with Content-Length",
            format!(
                "POST /core/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"
            ),
            &[200, 400],
        )),
        case(
            "GET body hiding a request",
            format!(
                "GET /core/get-body HTTP/1.1\r\n{h}Content-Length: {}\r\n\r\n{HIDDEN}",
                HIDDEN.len()
            ),
            &[200],
        ),
        case(
            "obs-fold in a value",
            format!("GET /core/a HTTP/1.1\r\n{h}X-A: a\r\n b\r\n\r\n"),
            &[400],
        ),
        case(
            "NUL in a value",
            format!("GET /core/a HTTP/1.1\r\n{h}X-A: a\0b\r\n\r\n"),
            &[400],
        ),
        case(
            "CR in a value",
            format!("GET /core/a HTTP/1.1\r\n{h}X-A: a\rb\r\n\r\n"),
            &[400],
        ),
        case(
            "two spaces in the request line",
            format!("GET  /core/a HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        // Whitespace in the target is refused, not percent-encoded and forwarded as
        // `/core/a%20` (RFC 9112 §3.2; vendored pingora-core 0042).
        case(
            "space before the version",
            format!("GET /core/a  HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "space inside the target",
            format!("GET /core/a b HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "tab inside the target",
            format!("GET /core/a\tb HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "vertical tab inside the target",
            format!("GET /core/a\x0bb HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "extra request-line word",
            format!("GET /core/a HTTP/1.1 x\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "unknown version",
            format!("GET /core/a HTTP/9.9\r\n{h}\r\n"),
            &[400, 505],
        ),
        case("no version", format!("GET /core/a\r\n{h}\r\n"), &[400]),
        case("no method", format!("/core/a HTTP/1.1\r\n{h}\r\n"), &[400]),
        or_close(case(
            "a TLS hello on the plain port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            &[400],
        )),
        // Paths.
        case(
            "dot-segments",
            format!("GET /core/../auth/x HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "encoded dot-segments",
            format!("GET /core/%2e%2e/auth/x HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "encoded dot-segments, upper",
            format!("GET /core/%2E%2E/auth/x HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "encoded dot-segments, mixed",
            format!("GET /core/%2E%2e/auth/x HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "half-encoded dot-segments",
            format!("GET /core/.%2e/auth/x HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "half-encoded dot-segments, other half",
            format!("GET /core/%2e./auth/x HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "trailing dot-segment",
            format!("GET /core/x/.. HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "single dot-segment",
            format!("GET /core/./x HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        // Merged, as nginx does: the service gets /core/etc/x and /core/x.
        case(
            "doubled slash",
            format!("GET /core//etc/x HTTP/1.1\r\n{h}\r\n"),
            &[200],
        ),
        case(
            "leading doubled slash",
            format!("GET //core/merged HTTP/1.1\r\n{h}\r\n"),
            &[200],
        ),
        case(
            "%2f in the prefix segment",
            format!("GET /core%2fx HTTP/1.1\r\n{h}\r\n"),
            &[400, 404],
        ),
        case(
            "%2F in the prefix segment",
            format!("GET /core%2Fx/y HTTP/1.1\r\n{h}\r\n"),
            &[400, 404],
        ),
        case(
            "encoded prefix letter",
            format!("GET /%63ore/x HTTP/1.1\r\n{h}\r\n"),
            &[400, 404],
        ),
        case(
            "encoded NUL",
            format!("GET /core/a%00b HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "fragment",
            format!("GET /core/a#frag HTTP/1.1\r\n{h}\r\n"),
            &[400],
        ),
        case(
            "CONNECT",
            "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
            &[405],
        ),
        case(
            "OPTIONS *",
            format!("OPTIONS * HTTP/1.1\r\n{h}\r\n"),
            &[200, 400],
        ),
        case(
            "TRACE",
            format!("TRACE /core/a HTTP/1.1\r\n{h}\r\n"),
            &[405],
        ),
        case(
            "request line 20 KB",
            format!("GET /core/{} HTTP/1.1\r\n{h}\r\n", "a".repeat(20_000)),
            &[414],
        ),
        // 414 whatever the length: past the http crate's 64 KiB URI limit too, and past
        // the whole head's 1 MiB (vendored pingora-core 0042, pingora-proxy 0043).
        or_close(case(
            "request line 100 KB",
            format!("GET /core/{} HTTP/1.1\r\n{h}\r\n", "a".repeat(100_000)),
            &[414],
        )),
        or_close(case(
            "request line 1.5 MB",
            format!("GET /core/{} HTTP/1.1\r\n{h}\r\n", "a".repeat(1_500_000)),
            &[414],
        )),
        case(
            "request line of exactly 8 KiB",
            format!("GET /core/{} HTTP/1.1\r\n{h}\r\n", "a".repeat(8192 - 20)),
            &[200],
        ),
        or_close(case(
            "request line just over 8 KiB",
            format!(
                "GET /core/{} HTTP/1.1\r\n{h}\r\n",
                "a".repeat(8192 - 20 + 1)
            ),
            &[414],
        )),
        // Headers.
        case(
            "200 headers",
            format!(
                "GET /core/a HTTP/1.1\r\n{h}{}\r\n",
                "X-F: 1\r\n".repeat(200)
            ),
            &[431],
        ),
        or_close(case(
            "a 70 KB header",
            format!(
                "GET /core/a HTTP/1.1\r\n{h}X-Big: {}\r\n\r\n",
                "b".repeat(70_000)
            ),
            &[400, 431],
        )),
        case("Host missing", "GET /core/a HTTP/1.1\r\n\r\n", &[400]),
        case(
            "Host doubled",
            format!("GET /core/a HTTP/1.1\r\n{h}{h}\r\n"),
            &[400],
        ),
        case(
            "Host with a space",
            "GET /core/a HTTP/1.1\r\nHost: gw x\r\n\r\n",
            &[400],
        ),
        case(
            "Host with user info",
            "GET /core/a HTTP/1.1\r\nHost: user@gw\r\n\r\n",
            &[400],
        ),
        case(
            "Host with a path",
            "GET /core/a HTTP/1.1\r\nHost: gw/core\r\n\r\n",
            &[400],
        ),
        case(
            "header name with a space",
            format!("GET /core/a HTTP/1.1\r\n{h}Bad Name: x\r\n\r\n"),
            &[400],
        ),
        case(
            "empty header name",
            format!("GET /core/a HTTP/1.1\r\n{h}: x\r\n\r\n"),
            &[400],
        ),
    ];
    // The absolute form is answered like the origin form: routed by its path, never sent
    // to the host it names.
    cases.push(case(
        "absolute form",
        "GET http://evil.example/core/absolute HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        &[200],
    ));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hostile_corpus_gets_the_right_answers_and_the_service_nothing_bad() {
    let service = strict::start().await;
    let gw = Gateway::start(&config(&[("core", "/core", service.addr, "")]));
    let cases = corpus();
    let total = cases.len();
    let addr = gw.addr();
    let results = tokio::task::spawn_blocking(move || {
        let mut failures = Vec::new();
        for c in &cases {
            let (status, head, took) = answer(addr, &c.raw);
            let ok = match status {
                Some(s) => c.statuses.contains(&s),
                None => c.close,
            };
            if !ok || took > Duration::from_secs(5) {
                failures.push(format!(
                    "{}: got {status:?} in {took:?}, want {:?}{}\n{head}",
                    c.name,
                    c.statuses,
                    if c.close { " or a close" } else { "" }
                ));
            }
            // The gateway answers a normal request right after.
            let (status, head, _) = answer(addr, b"GET /core/ok HTTP/1.1\r\nHost: gw\r\n\r\n");
            if status != Some(200) {
                failures.push(format!(
                    "after {}: a normal request got {status:?}\n{head}",
                    c.name
                ));
            }
        }
        failures
    })
    .await
    .unwrap();
    assert!(
        results.is_empty(),
        "{} of {total} cases:\n{}",
        results.len(),
        results.join("\n")
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let anomalies = service.anomalies();
    assert!(
        anomalies.is_empty(),
        "the service got badly framed requests: {anomalies:#?}"
    );
    let requests = service.requests();
    let targets: Vec<&str> = requests.iter().map(|r| r.target.as_str()).collect();
    for r in &requests {
        assert!(!r.target.contains("smuggled"), "smuggled: {targets:?}");
        assert!(
            r.target.starts_with("/core/"),
            "an unrouted or rewritten-away target reached the service: {targets:?}"
        );
        assert!(!r.target.contains(".."), "{targets:?}");
        assert!(!r.target.contains("//"), "{targets:?}");
    }
    // The GET with a body went as one request with its body, framed.
    let get_body = requests
        .iter()
        .find(|r| r.target == "/core/get-body")
        .expect("the GET with a body was forwarded");
    assert_eq!(get_body.body, HIDDEN.as_bytes());
    for merged in ["/core/absolute", "/core/etc/x", "/core/merged"] {
        assert!(targets.contains(&merged), "{merged} in {targets:?}");
    }
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_slow_clients_do_not_delay_a_normal_request() {
    let service = strict::start().await;
    let gw = Gateway::start_with(
        &config(&[("core", "/core", service.addr, "")]),
        &[("PROXY_HEADER_TIMEOUT_SECONDS", "3")],
    );
    let addr = gw.addr();
    // Slowloris: 200 connections sending a head a byte at a time.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let head = b"GET /core/slow HTTP/1.1\r\nHost: gw\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut worst = Duration::ZERO;
    for i in 0..8 {
        for s in &mut slow {
            let _ = s.write(&head[i..=i]);
        }
        let (status, _, took) = tokio::task::spawn_blocking(move || {
            answer(addr, b"GET /core/ok HTTP/1.1\r\nHost: gw\r\n\r\n")
        })
        .await
        .unwrap();
        assert_eq!(status, Some(200));
        worst = worst.max(took);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        worst < Duration::from_secs(1),
        "a normal request took {worst:?}"
    );
    // The slow heads are cut by the header timeout (408 or a close), none reached the service.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut cut = 0;
    for s in &mut slow {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) | Err(_) => cut += 1,
            Ok(n) if buf[..n].starts_with(b"HTTP/1.1 408") => cut += 1,
            Ok(_) => {}
        }
    }
    assert_eq!(cut, 200);
    assert!(service.requests().iter().all(|r| r.target != "/core/slow"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_cannot_inject_headers_or_grow_without_bound() {
    let service = strict::start().await;
    let gw = Gateway::start(&config(&[("core", "/core", service.addr, "")]));
    let addr = gw.addr();
    let long = "a".repeat(1000);
    let cases = [
        "abc%0d%0aSet-Cookie:%20owned=1".to_owned(),
        "abc\\r\\nSet-Cookie: owned=1".to_owned(),
        long.clone(),
        "<script>alert(1)</script>".to_owned(),
    ];
    for id in cases {
        let raw = format!("GET /core/id HTTP/1.1\r\nHost: gw\r\nX-Request-ID: {id}\r\n\r\n");
        let (status, head, _) = tokio::task::spawn_blocking(move || answer(addr, raw.as_bytes()))
            .await
            .unwrap();
        assert_eq!(status, Some(200), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(!lower.contains("set-cookie"), "{head}");
        let echoed = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("a request id");
        assert!(echoed.len() <= 128, "{echoed}");
        assert!(
            echoed.bytes().all(|b| b.is_ascii_graphic()),
            "unsafe id echoed: {echoed}"
        );
        assert!(!echoed.contains('<'), "{echoed}");
    }
    // The service got the same, sanitised ids.
    for r in service.requests() {
        let id = r
            .headers
            .iter()
            .find(|(k, _)| k == "x-request-id")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        assert!(id.len() <= 128 && !id.contains('<'), "{id}");
    }
}
