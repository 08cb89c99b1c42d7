//! One access line per request, in text or JSON, plus the startup lines.

mod support;

use support::{Gateway, client, config, upstream};

#[tokio::test(flavor = "multi_thread")]
async fn text_access_line_has_the_fields_and_no_query() {
    let (up, gw) = support::core_gateway("core").await;
    let resp = client()
        .post(gw.url("/core/items?token=secret"))
        .header("x-request-id", "log-1")
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log = gw.wait_for_log("request_id=log-1");
    assert!(
        log.contains("route core-service"),
        "startup lines list the routes:\n{log}"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request_id=log-1"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    for field in [
        "method=POST",
        "path=/core/items",
        "route=core-service",
        &format!("upstream={}", up.addr),
        "status=200",
        "duration_ms=",
        "bytes_in=5",
        "bytes_out=",
    ] {
        assert!(line.contains(field), "missing {field}: {line}");
    }
    assert!(
        !line.contains("secret"),
        "the query leaked into the log: {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn json_format_is_one_object_per_line() {
    let up = upstream::http("core").await;
    let gw = Gateway::start_with(
        &config(&[("core-service", "/core", up.addr, r#""strip_prefix": true"#)]),
        &[("LOG_FORMAT", "json")],
    );
    client()
        .get(gw.url("/core/a"))
        .header("x-request-id", "json-1")
        .send()
        .await
        .unwrap();
    client()
        .get(gw.url("/missing"))
        .header("x-request-id", "json-2")
        .send()
        .await
        .unwrap();
    let log = gw.wait_for_log("json-2");
    let mut access = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["target"] == "access" {
            access.push(v);
        }
    }
    let first = access
        .iter()
        .find(|v| v["request_id"] == "json-1")
        .expect("json-1 line");
    assert_eq!(first["status"], 200);
    assert_eq!(first["route"], "core-service");
    assert_eq!(first["path"], "/core/a");
    assert!(first["duration_ms"].is_number());
    let second = access
        .iter()
        .find(|v| v["request_id"] == "json-2")
        .expect("json-2 line");
    assert_eq!(second["status"], 404);
}

/// A client that goes away before its answer: status 499 (as nginx logs it), at INFO (no
/// failure of the gateway's), counted under that status.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_the_client_abandons_is_logged_499() {
    use std::io::Write;
    let up = upstream::http("core").await;
    let gw = Gateway::start_with(
        &config(&[("core-service", "/core", up.addr, r#""strip_prefix": true"#)]),
        &[("LOG_FORMAT", "json")],
    );
    let mut s = std::net::TcpStream::connect(gw.addr()).unwrap();
    s.write_all(b"GET /core/slow/1500 HTTP/1.1\r\nHost: gw\r\nX-Request-ID: gone-1\r\n\r\n")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(s);
    let log = gw.wait_for_log("gone-1");
    let line: serde_json::Value = log
        .lines()
        .filter(|l| l.contains("gone-1"))
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no access line:\n{log}"));
    assert_eq!(line["status"], 499, "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    let m = support::metrics(&gw).await;
    assert!(m.contains(r#"status="499""#), "{m}");
}
