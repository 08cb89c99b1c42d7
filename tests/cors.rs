//! CORS at the gateway: preflights answered before auth, headers on proxied responses and
//! on the gateway's own errors, per-service policies replacing the global one.

mod support;

use reqwest::Method;
use support::jwt::{Jwks, RsaKey};
use support::{Gateway, config, env_refs, free_port, send, upstream};

const APP: &str = "https://app.example";
const OTHER: &str = "https://other.example";

struct Setup {
    gw: Gateway,
    _up: upstream::Server,
    _jwks: Jwks,
}

async fn setup() -> Setup {
    let up = upstream::http("core").await;
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let routes = config(&[
        ("core-service", "/core", up.addr, r#""strip_prefix": true"#),
        (
            "secure",
            "/secure",
            up.addr,
            r#""strip_prefix": true, "auth": {"mode": "required"}"#,
        ),
        (
            "partner",
            "/partner",
            up.addr,
            &format!(
                r#""strip_prefix": true, "cors": {{"origins": ["{OTHER}"], "methods": ["GET"], "max_age": 30}}"#
            ),
        ),
        ("down", "/down", dead, r#""strip_prefix": true"#),
        (
            "limited",
            "/limited",
            up.addr,
            r#""strip_prefix": true, "rate_limit": {"requests_per_second": 0.1, "burst": 1}"#,
        ),
    ]);
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let mut env: Vec<(String, String)> = jwks.env();
    env.push((
        "CORS_ORIGINS".into(),
        format!("{APP}, https://admin.example"),
    ));
    env.push(("CORS_CREDENTIALS".into(), "true".into()));
    let gw = Gateway::start_with(&routes, &env_refs(&env));
    Setup {
        gw,
        _up: up,
        _jwks: jwks,
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn varies_by_origin(resp: &reqwest::Response) -> bool {
    resp.headers().get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("origin")
    })
}

fn cors_headers(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn preflights_are_answered_by_the_gateway_before_auth() {
    let s = setup().await;
    for path in ["/core/orders", "/secure/orders"] {
        let resp = send(
            &s.gw,
            Method::OPTIONS,
            path,
            &[
                ("origin", APP),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ],
        )
        .await;
        assert_eq!(resp.status(), 204, "{path}");
        assert_eq!(header(&resp, "access-control-allow-origin"), Some(APP));
        assert_eq!(
            header(&resp, "access-control-allow-credentials"),
            Some("true")
        );
        assert!(
            header(&resp, "access-control-allow-methods")
                .unwrap()
                .contains("PUT")
        );
        assert!(
            header(&resp, "access-control-allow-headers")
                .unwrap()
                .contains("Authorization")
        );
        assert_eq!(header(&resp, "access-control-max-age"), Some("600"));
        assert!(varies_by_origin(&resp));
        assert!(header(&resp, "x-request-id").is_some());
        assert_eq!(header(&resp, "x-frame-options"), Some("DENY"));
        assert!(
            resp.text().await.unwrap().is_empty(),
            "the service answered"
        );
    }

    // A disallowed origin: 403 JSON, no CORS headers.
    let resp = send(
        &s.gw,
        Method::OPTIONS,
        "/core/orders",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert!(cors_headers(&resp).is_empty(), "{:?}", cors_headers(&resp));
    let body = support::json(resp).await;
    assert_eq!(body["status"], 403);

    // A plain OPTIONS (no Access-Control-Request-Method) is the service's.
    let resp = send(&s.gw, Method::OPTIONS, "/core/orders", &[("origin", APP)]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(support::json(resp).await["method"], "OPTIONS");
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_carry_cors_headers_even_the_gateways_own_errors() {
    let s = setup().await;
    // Proxied, 404, 401, 502 and 429: all readable by the allowed origin.
    for (path, status) in [
        ("/core/orders", 200),
        ("/nowhere", 404),
        ("/secure/orders", 401),
        ("/down/x", 502),
        ("/limited/x", 200),
        ("/limited/x", 429),
    ] {
        let resp = send(&s.gw, Method::GET, path, &[("origin", APP)]).await;
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some(APP),
            "{path}"
        );
        assert_eq!(
            header(&resp, "access-control-allow-credentials"),
            Some("true"),
            "{path}"
        );
        let expose = header(&resp, "access-control-expose-headers").unwrap_or("");
        for name in ["X-Request-ID", "Retry-After", "RateLimit-Remaining"] {
            assert!(expose.contains(name), "{path}: {expose}");
        }
        assert!(varies_by_origin(&resp), "{path}");
    }
    // A disallowed origin and no origin at all: no CORS headers, still Vary: Origin.
    for headers in [&[("origin", "https://evil.example")][..], &[][..]] {
        let resp = send(&s.gw, Method::GET, "/core/orders", headers).await;
        assert_eq!(resp.status(), 200);
        assert!(cors_headers(&resp).is_empty(), "{headers:?}");
        assert!(varies_by_origin(&resp), "{headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_policy_replaces_the_global_one() {
    let s = setup().await;
    let resp = send(&s.gw, Method::GET, "/partner/x", &[("origin", APP)]).await;
    assert!(cors_headers(&resp).is_empty());
    let resp = send(&s.gw, Method::GET, "/partner/x", &[("origin", OTHER)]).await;
    assert_eq!(header(&resp, "access-control-allow-origin"), Some(OTHER));
    assert_eq!(header(&resp, "access-control-allow-credentials"), None);
    let resp = send(
        &s.gw,
        Method::OPTIONS,
        "/partner/x",
        &[("origin", OTHER), ("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "access-control-allow-methods"), Some("GET"));
    assert_eq!(header(&resp, "access-control-max-age"), Some("30"));
    let resp = send(
        &s.gw,
        Method::OPTIONS,
        "/partner/x",
        &[("origin", APP), ("access-control-request-method", "GET")],
    )
    .await;
    assert_eq!(resp.status(), 403);
}

#[test]
fn unsafe_cors_settings_refuse_to_start() {
    let path = support::write_config(&config(&[(
        "core-service",
        "/core",
        "127.0.0.1:3000".parse().unwrap(),
        r#""cors": {"origins": ["*"], "credentials": true}"#,
    )]));
    let out = support::run_bin(&["--check", "--services", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service 'core-service', field 'cors.credentials'"),
        "{err}"
    );
}
