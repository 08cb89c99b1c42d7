//! Routing, rewriting and the headers every request gets, over real sockets.

mod support;

use support::{Gateway, client, config, json, upstream};

async fn echo(
    gw: &Gateway,
    path: &str,
) -> (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    serde_json::Value,
) {
    let resp = client().get(gw.url(path)).send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, json(resp).await)
}

/// Upstreams for auth (versioned, with skips), core, core/admin and the socket route.
async fn platform() -> (Vec<upstream::Server>, Gateway) {
    let auth = upstream::http("auth").await;
    let core = upstream::http("core").await;
    let admin = upstream::http("admin").await;
    let socket = upstream::http("socket").await;
    let gw = Gateway::start(&config(&[
        (
            "auth-service",
            "/auth",
            auth.addr,
            r#""strip_prefix": true, "api_version": 1, "skip_prefix": ["/.well-known", "/swagger", "/health"]"#,
        ),
        (
            "core-service",
            "/core",
            core.addr,
            r#""strip_prefix": true"#,
        ),
        (
            "core-admin",
            "/core/admin",
            admin.addr,
            r#""strip_prefix": true"#,
        ),
        (
            "websocket",
            "/socket",
            socket.addr,
            r#""strip_prefix": false"#,
        ),
    ]));
    (vec![auth, core, admin, socket], gw)
}

#[tokio::test(flavor = "multi_thread")]
async fn strips_prefix_and_keeps_query_byte_for_byte() {
    let (_up, gw) = platform().await;
    let (status, _, body) = echo(&gw, "/core/api/v1/users/profile?x=1&y=a%20b&z=%2F&&w").await;
    assert_eq!(status, 200);
    assert_eq!(body["service"], "core");
    assert_eq!(body["path"], "/api/v1/users/profile");
    assert_eq!(body["query"], "x=1&y=a%20b&z=%2F&&w");

    let (_, _, body) = echo(&gw, "/core").await;
    assert_eq!(body["path"], "/");
    let (_, _, body) = echo(&gw, "/core/?q=1").await;
    assert_eq!(
        (body["path"].as_str(), body["query"].as_str()),
        (Some("/"), Some("q=1"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_paths_except_skipped_and_api_ones() {
    let (_up, gw) = platform().await;
    let cases = [
        ("/auth/users/profile?a=1", "/api/v1/users/profile"),
        ("/auth/health", "/health"),
        ("/auth/swagger/index.html", "/swagger/index.html"),
        (
            "/auth/.well-known/openid-configuration",
            "/.well-known/openid-configuration",
        ),
        ("/auth/api/v2/login", "/api/v2/login"),
        ("/auth/healthz", "/api/v1/healthz"),
    ];
    for (path, upstream_path) in cases {
        let (status, _, body) = echo(&gw, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["service"], "auth", "{path}");
        assert_eq!(body["path"], upstream_path, "{path}");
    }
    let (_, _, body) = echo(&gw, "/auth/users/profile?a=1").await;
    assert_eq!(body["query"], "a=1");
}

#[tokio::test(flavor = "multi_thread")]
async fn longest_prefix_and_segment_boundaries() {
    let (_up, gw) = platform().await;
    let (_, _, body) = echo(&gw, "/core/admin/users").await;
    assert_eq!(
        (body["service"].as_str(), body["path"].as_str()),
        (Some("admin"), Some("/users"))
    );
    let (_, _, body) = echo(&gw, "/core/administrator").await;
    assert_eq!(
        (body["service"].as_str(), body["path"].as_str()),
        (Some("core"), Some("/administrator"))
    );
    let (_, _, body) = echo(&gw, "/socket/websocket?vsn=2.0.0").await;
    assert_eq!(body["path"], "/socket/websocket");
    assert_eq!(body["query"], "vsn=2.0.0");

    for path in ["/authx", "/coreadmin/x", "/", "/unknown/path"] {
        let (status, headers, body) = echo(&gw, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"], "no route for this path");
        assert_eq!(
            body["request_id"],
            headers["x-request-id"].to_str().unwrap()
        );
        assert_eq!(headers["content-type"], "application/json");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_are_refused_before_any_upstream() {
    let (raw, mut seen) = upstream::raw(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let gw = Gateway::start(&config(&[(
        "auth-service",
        "/auth",
        raw.addr,
        r#""strip_prefix": true"#,
    )]));
    for path in [
        "/auth/../core/admin",
        "/auth/./x",
        "/auth/%2e%2e/core",
        "/auth/%2E%2e/core",
        "/auth/..%2fcore",
        "/auth/..%5Ccore",
        "/auth/x/..",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let resp = support::raw_request(gw.addr(), req.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
        assert!(resp.contains("\"request_id\""), "{path}: {resp}");
        assert!(
            resp.to_ascii_lowercase().contains("x-frame-options: deny"),
            "{path}"
        );
    }
    assert!(
        seen.try_recv().is_err(),
        "a dot-segment request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_round_trips_or_is_generated() {
    let (_up, gw) = platform().await;
    let resp = client()
        .get(gw.url("/core/x"))
        .header("x-request-id", "frontend-42.a_b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "frontend-42.a_b");
    let body = json(resp).await;
    assert_eq!(body["headers"]["x-request-id"], "frontend-42.a_b");

    for bad in ["has space", "quote\"d", &"x".repeat(200)] {
        let resp = client()
            .get(gw.url("/core/x"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let returned = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(returned, bad);
        assert!(uuid::Uuid::parse_str(&returned).is_ok(), "{returned}");
        let body = json(resp).await;
        assert_eq!(
            body["headers"]["x-request-id"],
            returned.as_str(),
            "upstream saw another id"
        );
    }

    let (_, headers, body) = echo(&gw, "/core/x").await;
    let id = headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(body["headers"]["x-request-id"], id);
    let log = gw.wait_for_log(id);
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("request_id={id}")) && l.contains("route=core-service")),
        "no access line for {id}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn security_headers_on_success_and_errors() {
    let (raw, _seen) = upstream::raw(
        b"HTTP/1.1 200 OK\r\nX-Frame-Options: SAMEORIGIN\r\nX-Content-Type-Options: off\r\ncontent-length: 2\r\n\r\nok",
    )
    .await;
    let gw = Gateway::start(&config(&[(
        "auth-service",
        "/auth",
        raw.addr,
        r#""strip_prefix": true"#,
    )]));
    for path in ["/auth/x", "/nowhere"] {
        let resp = client().get(gw.url(path)).send().await.unwrap();
        let h = resp.headers();
        assert_eq!(
            h.get_all("x-frame-options").iter().collect::<Vec<_>>(),
            ["DENY"],
            "{path}"
        );
        assert_eq!(
            h.get_all("x-content-type-options")
                .iter()
                .collect::<Vec<_>>(),
            ["nosniff"],
            "{path}"
        );
        assert!(h.contains_key("x-request-id"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_headers_describe_the_client() {
    let (_up, gw) = platform().await;
    let resp = client()
        .get(gw.url("/core/x"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("host", "api.beat.example")
        .send()
        .await
        .unwrap();
    let body = json(resp).await;
    let h = &body["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.beat.example");
    assert_eq!(h["host"], "api.beat.example");

    let (_, _, body) = echo(&gw, "/core/x").await;
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_request_reaches_upstream_in_origin_form() {
    let (raw, mut seen) = upstream::raw(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let gw = Gateway::start(&config(&[("websocket", "/socket", raw.addr, "")]));
    let resp = support::raw_request(
        gw.addr(),
        b"GET http://evil.example/socket/x?q=1 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let head = seen.recv().await.unwrap();
    assert!(head.starts_with("GET /socket/x?q=1 HTTP/1.1\r\n"), "{head}");
}
