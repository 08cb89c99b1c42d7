//! Services that fail in every way a service can: each gets the right status (or an
//! aborted response the client can tell from a complete one), leaks nothing, and the next
//! request is fine.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{Gateway, config, raw_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// What a scripted service does once it has a request head.
#[derive(Clone)]
enum Step {
    Write(Vec<u8>),
    /// Close with a TCP reset (SO_LINGER 0).
    Reset,
    Sleep(u64),
}

/// A service that plays `script` on every connection once the request head is in.
async fn scripted(script: Vec<Step>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let script = script.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                for step in script {
                    match step {
                        Step::Write(bytes) => {
                            if sock.write_all(&bytes).await.is_err() {
                                return;
                            }
                            let _ = sock.flush().await;
                        }
                        Step::Reset => {
                            // A zero linger does not block on drop: it resets.
                            #[allow(deprecated)]
                            let _ = sock.set_linger(Some(Duration::ZERO));
                            return;
                        }
                        Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    addr
}

fn write(bytes: impl AsRef<[u8]>) -> Step {
    Step::Write(bytes.as_ref().to_vec())
}

/// Everything the gateway sends back for one request, until it closes (or 8 s).
fn exchange(addr: SocketAddr, path: &str) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (out, start.elapsed())
}

/// The final status: informational (1xx) responses before it are skipped.
fn status(reply: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(reply);
    let mut rest = text.as_ref();
    loop {
        let code: u16 = rest.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
        if !(100..200).contains(&code) || code == 101 {
            return Some(code);
        }
        rest = &rest[rest.find("\r\n\r\n")? + 4..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_failing_service_gets_the_right_answer_and_the_next_request_is_fine() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
    let big_head = format!(
        "HTTP/1.1 200 OK\r\n{}Content-Length: 2\r\n\r\nok",
        format!("X-Big: {}\r\n", "h".repeat(1000)).repeat(70)
    );
    let mut early_hints = Vec::new();
    for _ in 0..50 {
        early_hints
            .extend_from_slice(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n");
    }
    early_hints.extend_from_slice(&ok);
    let services: Vec<(&str, Vec<Step>, &[u16])> = vec![
        ("accept-then-close", vec![], &[502]),
        (
            "garbage",
            vec![write("SSH-2.0-OpenSSH_9.2\r\n\r\n")],
            &[502],
        ),
        (
            "reset-mid-head",
            vec![write("HTTP/1.1 200 OK\r\nContent-Le"), Step::Reset],
            &[502],
        ),
        ("head-over-64k", vec![write(&big_head)], &[502]),
        (
            "cl-and-te",
            vec![write(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            )],
            &[502],
        ),
        ("early-hints-flood", vec![write(&early_hints)], &[200]),
        ("slow", vec![Step::Sleep(3000), write(&ok)], &[504]),
    ];
    let mut routes = Vec::new();
    for (name, script, _) in &services {
        let addr = scripted(script.clone()).await;
        routes.push((*name, format!("/{name}"), addr));
    }
    let good = support::upstream::http("good").await;
    let mut all: Vec<(&str, &str, SocketAddr, &str)> = routes
        .iter()
        .map(|(n, p, a)| (*n, p.as_str(), *a, r#""read_timeout_ms": 1000"#))
        .collect();
    all.push(("good", "/good", good.addr, ""));
    let gw = Gateway::start(&config(&all));
    let addr = gw.addr();
    let expected: Vec<(String, Vec<u16>)> = services
        .iter()
        .map(|(n, _, s)| (n.to_string(), s.to_vec()))
        .collect();
    let failures = tokio::task::spawn_blocking(move || {
        let mut failures = Vec::new();
        for (name, want) in expected {
            let (reply, took) = exchange(addr, &format!("/{name}/x"));
            let got = status(&reply);
            let text = String::from_utf8_lossy(&reply).into_owned();
            if !got.is_some_and(|s| want.contains(&s)) || took > Duration::from_secs(5) {
                let shown: String = text.chars().take(400).collect();
                failures.push(format!(
                    "{name}: got {got:?} in {took:?}, want {want:?}\n{shown}"
                ));
            }
            if got == Some(200) && !text.ends_with("ok") {
                failures.push(format!(
                    "{name}: the final answer's body is missing\n{text}"
                ));
            }
            if got.is_some_and(|s| s >= 500) && !text.contains("\"request_id\"") {
                failures.push(format!("{name}: not the gateway's JSON error\n{text}"));
            }
            let next = raw_request(
                addr,
                b"GET /good/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            );
            if !next.starts_with("HTTP/1.1 200") {
                failures.push(format!("after {name}: {next}"));
            }
        }
        failures
    })
    .await
    .unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // An HTTP/1.0 client gets no 1xx at all (RFC 9110 §15.2), only the final answer.
    let reply = tokio::task::spawn_blocking(move || {
        raw_request(addr, b"GET /early-hints-flood/x HTTP/1.0\r\n\r\n")
    })
    .await
    .unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "{}",
        &reply[..reply.len().min(300)]
    );
    assert!(
        !reply.contains(" 103 "),
        "{}",
        &reply[..reply.len().min(300)]
    );
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A response cut after its head: the client must be able to tell it is incomplete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_cut_mid_way_is_an_aborted_response_never_a_complete_looking_one() {
    let length = scripted(vec![
        write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"),
        write("a".repeat(5000)),
        Step::Sleep(100),
        Step::Reset,
    ])
    .await;
    let chunked = scripted(vec![
        write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n"),
        write("b".repeat(5000)),
        write("\r\n"),
        Step::Sleep(100),
        Step::Reset,
    ])
    .await;
    let gw = Gateway::start(&config(&[
        ("length", "/length", length, ""),
        ("chunked", "/chunked", chunked, ""),
    ]));
    let addr = gw.addr();
    tokio::task::spawn_blocking(move || {
        let (reply, took) = exchange(addr, "/length/x");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body = &reply[text.find("\r\n\r\n").unwrap() + 4..];
        assert!(body.len() < 100_000, "the cut body looks complete");
        assert!(took < Duration::from_secs(5));

        let (reply, _) = exchange(addr, "/chunked/x");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            !text.ends_with("0\r\n\r\n"),
            "a cut chunked body got its last chunk: it looks complete"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_the_service_drops_is_closed_for_the_client_too() {
    // Answers the upgrade, then drops the connection without a close frame.
    let service = scripted(vec![
        write(format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        )),
        Step::Sleep(300),
        Step::Reset,
    ])
    .await;
    let gw = Gateway::start(&config(&[("messaging", "/socket", service, "")]));
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{}/socket/websocket", gw.port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-key",
        support::upstream::WS_KEY.parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(resp.status(), 101);
    let _ = ws.send(Message::text("hello")).await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client's side stayed open");
}
