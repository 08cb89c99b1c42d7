//! Rate limits against the real binary: exact at the boundary, keyed by ip, header or
//! user, `X-Forwarded-For` believed only from trusted proxies, and shared through a real
//! `redis-server` that the test starts on a free loopback port (two gateways, one limit;
//! Redis killed: local limits, no failed request).

mod support;

use std::time::Duration;

use support::jwt::{Jwks, RsaKey};
use support::redis::RedisServer;
use support::{Gateway, config, env_refs, get, json, status, upstream};

/// One limited route (`/core`, `limit` is the rate_limit block) and one open (`/open`).
fn routes(up: std::net::SocketAddr, limit: &str) -> String {
    config(&[
        (
            "core-service",
            "/core",
            up,
            &format!(r#""strip_prefix": true, "rate_limit": {limit}"#),
        ),
        ("open-service", "/open", up, r#""strip_prefix": true"#),
    ])
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_at_the_boundary_with_headers_on_every_response() {
    let up = upstream::http("core").await;
    let gw = Gateway::start(&routes(
        up.addr,
        r#"{"requests_per_second": 0.2, "burst": 5}"#,
    ));
    for remaining in (0..5).rev() {
        let resp = get(&gw, "/core/x", &[]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "ratelimit-limit").as_deref(), Some("5"));
        assert_eq!(
            header(&resp, "ratelimit-remaining"),
            Some(remaining.to_string())
        );
        assert!(header(&resp, "ratelimit-reset").is_some());
    }
    let resp = get(&gw, "/core/x", &[]).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&resp, "ratelimit-remaining").as_deref(), Some("0"));
    let id = header(&resp, "x-request-id").unwrap();
    let body = json(resp).await;
    assert_eq!(body["status"], 429);
    assert_eq!(body["request_id"], id.as_str());
    // Other routes are not limited, and carry no RateLimit headers.
    let resp = get(&gw, "/open/x", &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "ratelimit-limit").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bucket_refills_at_the_sustained_rate() {
    let up = upstream::http("core").await;
    let gw = Gateway::start(&routes(
        up.addr,
        r#"{"requests_per_second": 2, "burst": 2}"#,
    ));
    for _ in 0..2 {
        assert_eq!(status(&gw, "/core/x", &[]).await, 200);
    }
    assert_eq!(status(&gw, "/core/x", &[]).await, 429);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(&gw, "/core/x", &[]).await, 200);
    assert_eq!(status(&gw, "/core/x", &[]).await, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_by_header_with_the_address_as_fallback() {
    let up = upstream::http("core").await;
    let gw = Gateway::start(&routes(
        up.addr,
        r#"{"requests_per_second": 0.1, "burst": 2, "key": "header:X-Api-Key"}"#,
    ));
    for key in ["a", "b"] {
        for _ in 0..2 {
            assert_eq!(status(&gw, "/core/x", &[("x-api-key", key)]).await, 200);
        }
        assert_eq!(
            status(&gw, "/core/x", &[("x-api-key", key)]).await,
            429,
            "{key}"
        );
    }
    for _ in 0..2 {
        assert_eq!(status(&gw, "/core/x", &[]).await, 200);
    }
    assert_eq!(status(&gw, "/core/x", &[]).await, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn keyed_by_the_verified_user() {
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let routes = config(&[(
        "core-service",
        "/core",
        up.addr,
        r#""strip_prefix": true, "auth": {"mode": "optional"},
           "rate_limit": {"requests_per_second": 0.1, "burst": 1, "key": "user"}"#,
    )]);
    let env = jwks.env();
    let gw = Gateway::start_with(&routes, &env_refs(&env));
    gw.wait_for_log("jwks: 1 key(s) loaded");
    for user in ["alice", "bob"] {
        let auth = format!("Bearer {}", key.access_token(user));
        assert_eq!(
            status(&gw, "/core/x", &[("authorization", &auth)]).await,
            200
        );
        assert_eq!(
            status(&gw, "/core/x", &[("authorization", &auth)]).await,
            429,
            "{user}"
        );
    }
    // Anonymous requests share the address's bucket.
    assert_eq!(status(&gw, "/core/x", &[]).await, 200);
    assert_eq!(status(&gw, "/core/x", &[]).await, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let up = upstream::http("core").await;
    let limit = r#"{"requests_per_second": 0.1, "burst": 1}"#;
    // Untrusted: a client cannot escape its bucket by inventing addresses.
    let gw = Gateway::start(&routes(up.addr, limit));
    assert_eq!(
        status(&gw, "/core/x", &[("x-forwarded-for", "1.1.1.1")]).await,
        200
    );
    assert_eq!(
        status(&gw, "/core/x", &[("x-forwarded-for", "2.2.2.2")]).await,
        429
    );
    // Behind a trusted proxy (the test itself, on loopback), each client has its own.
    let gw = Gateway::start_with(
        &routes(up.addr, limit),
        &[("TRUSTED_PROXIES", "127.0.0.0/8")],
    );
    assert_eq!(
        status(&gw, "/core/x", &[("x-forwarded-for", "1.1.1.1")]).await,
        200
    );
    assert_eq!(
        status(&gw, "/core/x", &[("x-forwarded-for", "2.2.2.2")]).await,
        200
    );
    assert_eq!(
        status(&gw, "/core/x", &[("x-forwarded-for", "2.2.2.2")]).await,
        429
    );
    assert_eq!(
        status(&gw, "/core/x", &[("x-forwarded-for", "9.9.9.9, 1.1.1.1")]).await,
        429,
        "only the last untrusted address counts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_one_limit_through_redis_and_survive_its_death() {
    let mut redis = RedisServer::start();
    let up = upstream::http("core").await;
    let routes = routes(up.addr, r#"{"requests_per_second": 0.1, "burst": 4}"#);
    let url = redis.url();
    let env = [("RATE_LIMIT_REDIS_URL", url.as_str())];
    let a = Gateway::start_with(&routes, &env);
    let b = Gateway::start_with(&routes, &env);

    let mut remaining = Vec::new();
    for gw in [&a, &b, &a, &b] {
        let resp = get(gw, "/core/x", &[]).await;
        assert_eq!(resp.status(), 200);
        remaining.push(header(&resp, "ratelimit-remaining").unwrap());
    }
    assert_eq!(
        remaining,
        ["3", "2", "1", "0"],
        "one bucket across both gateways"
    );
    for gw in [&a, &b] {
        assert_eq!(status(gw, "/core/x", &[]).await, 429);
    }

    // Redis dies: both keep serving on local limits, no request fails.
    redis.kill();
    for gw in [&a, &b] {
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(status(gw, "/core/x", &[]).await);
        }
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 429),
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            4,
            "{statuses:?}"
        );
        gw.wait_for_log("Redis unavailable");
    }
}

#[test]
fn bad_limits_name_service_and_field() {
    for (limit, field) in [
        (
            r#"{"requests_per_second": 0}"#,
            "rate_limit.requests_per_second",
        ),
        (
            r#"{"requests_per_second": 5, "burst": 0}"#,
            "rate_limit.burst",
        ),
        (
            r#"{"requests_per_second": 5, "key": "cookie"}"#,
            "rate_limit.key",
        ),
        (
            r#"{"requests_per_second": 5, "per": "minute"}"#,
            "rate_limit",
        ),
    ] {
        let path = support::write_config(&routes("127.0.0.1:3000".parse().unwrap(), limit));
        let out = support::run_bin(&["--check", "--services", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{limit}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("service 'core-service', field '{field}")),
            "{limit}: {err}"
        );
    }
}
