//! Upstream failures, refused requests, bad config and shutdown: clear answers, no hangs.

mod support;

use std::time::{Duration, Instant};

use support::{BIN, Gateway, client, config, free_port, json, upstream};

#[tokio::test(flavor = "multi_thread")]
async fn refused_upstream_is_a_quick_json_502() {
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let gw = Gateway::start(&config(&[(
        "core-service",
        "/core",
        dead,
        r#""strip_prefix": true"#,
    )]));
    let started = Instant::now();
    let resp = client()
        .get(gw.url("/core/x"))
        .header("x-request-id", "fail-1")
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-request-id"], "fail-1");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = json(resp).await;
    assert_eq!(body["status"], 502);
    assert_eq!(body["request_id"], "fail-1");
    // Generous: a refused connect on loopback is immediate; this only rules out waiting
    // for the connect timeout (3 s).
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let log = gw.wait_for_log("request_id=fail-1");
    let line = log
        .lines()
        .find(|l| l.contains("request_id=fail-1"))
        .expect("access line");
    assert!(
        line.contains("status=502") && line.contains("route=core-service"),
        "{line}"
    );
    assert!(line.contains(&format!("upstream={dead}")), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn read_timeout_is_a_json_504() {
    let up = upstream::http("slow").await;
    let gw = Gateway::start(&config(&[(
        "core-service",
        "/core",
        up.addr,
        r#""strip_prefix": true, "read_timeout_ms": 300"#,
    )]));
    let resp = client()
        .get(gw.url("/core/slow/5000"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = json(resp).await;
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(body["error"], "upstream timed out");
    // Below the timeout the same route answers.
    let resp = client().get(gw.url("/core/slow/50")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// On a busy keep-alive connection each request gets the full read timeout, and no more,
/// whatever timers earlier requests left behind.
#[tokio::test(flavor = "multi_thread")]
async fn read_timeout_counts_from_each_request_on_a_busy_connection() {
    let up = upstream::http("slow").await;
    let gw = Gateway::start(&config(&[(
        "core-service",
        "/core",
        up.addr,
        r#""strip_prefix": true, "read_timeout_ms": 500"#,
    )]));
    let c = client();
    // Three timeout periods of answers that come in time, on one connection.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let resp = c.get(gw.url("/core/slow/100")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Just under the limit: answered, whatever deadline earlier requests left behind.
    for _ in 0..3 {
        let resp = c.get(gw.url("/core/slow/350")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let started = Instant::now();
    let resp = c.get(gw.url("/core/slow/3000")).send().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 504);
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(2500),
        "504 after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unresolvable_host_is_a_502_and_a_log_line() {
    let json_config = r#"{"services": [{"name": "ghost", "host": "no-such-service.invalid",
        "port": 3000, "prefix": "/ghost", "strip_prefix": true}]}"#;
    let gw = Gateway::start(json_config);
    for _ in 0..2 {
        let resp = client().get(gw.url("/ghost/x")).send().await.unwrap();
        assert_eq!(resp.status(), 502);
        assert_eq!(json(resp).await["error"], "upstream unavailable");
    }
    let log = gw.wait_for_log("cannot resolve");
    assert!(
        log.contains("cannot resolve 'no-such-service.invalid:3000'"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn smuggling_shapes_are_refused_and_never_reach_upstream() {
    let (raw, mut seen) = upstream::raw(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let gw = support::core_route(raw.addr);
    let shapes: [&[u8]; 5] = [
        b"POST /core/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /core/smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /core/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length: 0\r\n\r\n0\r\n\r\n",
        b"POST /core/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        b"POST /core/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
        b"POST /core/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for shape in shapes {
        let resp = support::raw_request(gw.addr(), shape);
        assert!(
            resp.starts_with("HTTP/1.1 400"),
            "{}\n=> {resp}",
            String::from_utf8_lossy(shape)
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        seen.try_recv().is_err(),
        "a smuggling request reached the upstream"
    );

    // The same route takes a well-formed request.
    let resp = support::raw_request(
        gw.addr(),
        b"GET /core/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_trailers_never_carry_anything_to_the_service() {
    // A chunked body whose trailer section hides a second request, a NUL, an obs-fold or
    // a Content-Length. Whatever the client is answered, the service must see one request
    // with a well-framed body and none of the trailer's bytes.
    let (rec, mut seen) = upstream::recording().await;
    let gw = support::core_route(rec.addr);
    let head = "POST /core/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n";
    let trailers: [&[u8]; 4] = [
        b"GET /core/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        b"X-Smuggled: a\0b\r\n\r\n",
        b"X-Smuggled: a\r\n folded\r\n\r\n",
        b"Content-Length: 50\r\nX-Smuggled: 1\r\n\r\n",
    ];
    for trailer in trailers {
        let mut request = head.as_bytes().to_vec();
        request.extend_from_slice(b"5\r\nhello\r\n0\r\n");
        request.extend_from_slice(trailer);
        let resp = support::raw_request(gw.addr(), &request);
        let shown = String::from_utf8_lossy(trailer);
        assert!(
            resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.1 400"),
            "{shown:?} => {resp}"
        );
        // Whether it was forwarded (200) or refused (400), nothing else may arrive.
        let mut forwarded = 0;
        while let Ok(Some(bytes)) =
            tokio::time::timeout(Duration::from_millis(800), seen.recv()).await
        {
            forwarded += 1;
            let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
            assert_eq!(
                text.matches(" http/1.1\r\n").count(),
                1,
                "{shown:?}: {text}"
            );
            assert!(!text.contains("smuggled"), "{shown:?}: {text}");
            assert!(!bytes.contains(&0), "{shown:?}: {text}");
            let body = &text[text.find("\r\n\r\n").map_or(0, |i| i + 4)..];
            assert_eq!(body, "5\r\nhello\r\n0\r\n\r\n", "{shown:?}");
        }
        let answered_by_service = resp.starts_with("HTTP/1.1 200");
        assert_eq!(
            forwarded,
            usize::from(answered_by_service),
            "{shown:?} => {resp}"
        );
        eprintln!("{shown:?}: {}", resp.lines().next().unwrap_or_default());
    }
    let resp = support::raw_request(
        gw.addr(),
        b"GET /core/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[test]
fn bad_config_is_refused_with_file_service_and_field() {
    let path = support::write_config(
        r#"{"services": [{"name": "core-service", "host": "core", "port": 70000, "prefix": "/core"}]}"#,
    );
    for extra in [&["--check"][..], &[]] {
        let out = std::process::Command::new(BIN)
            .arg("--services")
            .arg(&path)
            .args(extra)
            .env("PROXY_PORT", free_port().to_string())
            .env("ADMIN_PORT", free_port().to_string())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} accepted a bad config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{}: service 'core-service', field 'port': 70000 is not a TCP port",
                path.display()
            )),
            "{err}"
        );
    }

    let path = support::write_config("{\"services\": [\n  {\"name\": \"a\",\n  ]\n}");
    let out = std::process::Command::new(BIN)
        .arg("--check")
        .arg("--services")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid JSON at line 3"), "{err}");

    let out = std::process::Command::new(BIN)
        .args(["--check", "--services", "/nonexistent/services.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/services.json: cannot read")
    );
}

#[test]
fn check_accepts_the_shipped_config_and_lists_routes() {
    let out = support::run_bin(&[
        "--check",
        "--services",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/services.json"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 routes OK"), "{text}");
    for route in [
        "auth-service",
        "core-service",
        "messaging-service",
        "websocket",
    ] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(route)),
            "{route} missing:\n{text}"
        );
    }
}

#[test]
fn bad_environment_is_refused() {
    let out = std::process::Command::new(BIN)
        .args(["--check"])
        .env("PROXY_PORT", "99999")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PROXY_PORT"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let (_up, mut gw) = support::core_gateway("slow").await;
    let url = gw.url("/core/slow/600");
    let in_flight = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(150)).await;
    gw.signal("TERM");
    let status = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(status, 200);
    let exit = gw
        .wait_exit(Duration::from_secs(10))
        .expect("gateway exited after SIGTERM");
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_exits_at_once() {
    let up = upstream::http("x").await;
    let mut gw = Gateway::start(&config(&[("core-service", "/core", up.addr, "")]));
    gw.signal("INT");
    assert!(
        gw.wait_exit(Duration::from_secs(5)).is_some(),
        "still running after SIGINT"
    );
}

#[test]
fn port_in_use_is_refused_not_hung() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut child = std::process::Command::new(BIN)
        .args([
            "--services",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/services.json"),
        ])
        .env("PROXY_HOST", "127.0.0.1")
        .env("PROXY_PORT", port.to_string())
        .env("ADMIN_PORT", free_port().to_string())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the gateway kept running without its listener");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn pingora_conf_flag_is_read_and_checked() {
    let services = concat!(env!("CARGO_MANIFEST_DIR"), "/config/services.json");
    let good = support::temp_path("pingora.yaml");
    std::fs::write(&good, "---\nversion: 1\nthreads: 1\n").unwrap();
    let good = good.to_str().unwrap();
    let out = support::run_bin(&["--services", services, "-t", "-c", good]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = support::temp_path("pingora.yaml");
    std::fs::write(&bad, "---\nversion: 1\nthreads: [\n").unwrap();
    let bad = bad.to_str().unwrap();
    let out = support::run_bin(&["--services", services, "-c", bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(bad), "{err}");
}

/// `--help` says what Pingora's own flags do for this gateway.
#[test]
fn help_describes_pingoras_flags_for_this_gateway() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let line = |flag: &str| {
        help.lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("no {flag} in:\n{help}"))
            .to_owned()
    };
    assert!(
        line("-u, --upgrade").contains("Graceful binary upgrade"),
        "{help}"
    );
    assert!(line("-d, --daemon").contains("background"), "{help}");
    assert!(line("-t, --test").contains("without listening"), "{help}");
    assert!(line("-c, --conf").contains("Pingora's own YAML"), "{help}");
    assert!(
        !help.contains("base set of command line arguments"),
        "{help}"
    );
}

/// `-t` checks what a start would and exits 0 without listening, beside a running gateway
/// on the same ports; a bad routes file still fails it.
#[tokio::test(flavor = "multi_thread")]
async fn dash_t_checks_beside_a_running_gateway() {
    let up = upstream::http("x").await;
    let routes = config(&[("core-service", "/core", up.addr, "")]);
    let gw = Gateway::start(&routes);
    let path = support::write_config(&routes);
    let run = |services: &str| {
        std::process::Command::new(BIN)
            .args(["-t", "--services", services])
            .env("PROXY_HOST", "127.0.0.1")
            .env("PROXY_PORT", gw.port.to_string())
            .env("ADMIN_PORT", gw.admin_port.to_string())
            .output()
            .unwrap()
    };
    let out = run(path.to_str().unwrap());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        support::status(&gw, "/core/x", &[]).await,
        200,
        "the running one is untouched"
    );
    let bad = support::write_config(r#"{"services": [{"name": "x", "port": 1, "prefix": "/x"}]}"#);
    let out = run(bad.to_str().unwrap());
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
