//! JWT verification at the edge, against the real binary, a JWKS server on loopback and
//! tokens signed with keys generated for the test (see `support::jwt`).

mod support;

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::jwt::{self, Jwks, RsaKey};
use support::{Gateway, client, config, env_refs, get, json, upstream};

/// `/core` with `required` auth (`/health` and `/swagger` open), `/open` with `optional`,
/// `/plain` with auth off; all to one echo upstream.
fn routes(up: std::net::SocketAddr) -> String {
    config(&[
        (
            "core-service",
            "/core",
            up,
            r#""strip_prefix": true, "auth": {"mode": "required", "public": ["/health", "/swagger"]}"#,
        ),
        (
            "open-service",
            "/open",
            up,
            r#""strip_prefix": true, "auth": {"mode": "optional"}"#,
        ),
        ("plain-service", "/plain", up, r#""strip_prefix": true"#),
        (
            "websocket",
            "/socket",
            up,
            r#""auth": {"mode": "required"}"#,
        ),
    ])
}

fn start(up: std::net::SocketAddr, jwks: &Jwks, extra: &[(&str, &str)]) -> Gateway {
    let env = jwks.env();
    let mut vars = env_refs(&env);
    vars.extend_from_slice(extra);
    let gw = Gateway::start_with(&routes(up), &vars);
    gw.wait_for_log("jwks: 1 key(s) loaded");
    gw
}

/// A 401 from the gateway: JSON with the request id, the challenge, security headers.
async fn assert_401(resp: reqwest::Response, challenge: &str, case: &str) {
    assert_eq!(resp.status(), 401, "{case}");
    let h = resp.headers().clone();
    assert_eq!(h["www-authenticate"], challenge, "{case}");
    assert_eq!(h["x-frame-options"], "DENY", "{case}");
    let id = h["x-request-id"].to_str().unwrap().to_owned();
    let body = json(resp).await;
    assert_eq!(body["status"], 401, "{case}");
    assert_eq!(body["request_id"], id.as_str(), "{case}");
    assert!(
        body.get("service").is_none(),
        "{case}: reached the service: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_reaches_the_service_with_its_identity_and_spoofs_never_do() {
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let gw = start(up.addr, &jwks, &[]);
    let token = key.access_token("user-1");

    let resp = get(
        &gw,
        "/core/orders?x=1",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", "admin"),
            ("x-user-role", "admin"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = json(resp).await;
    let h = &body["headers"];
    assert_eq!(h["x-user-id"], "user-1");
    assert_eq!(h["x-user-role"], "client");
    assert_eq!(h["x-profile-id"], "p-42");
    assert_eq!(h["x-user-scopes"], "orders:read orders:write");
    assert_eq!(body["path"], "/orders");
    assert_eq!(h["authorization"], format!("Bearer {token}"));

    // The same token from the cookie.
    let resp = get(
        &gw,
        "/core/orders",
        &[("cookie", &format!("theme=dark; access_token={token}"))],
    )
    .await;
    assert_eq!(json(resp).await["headers"]["x-user-id"], "user-1");

    // Identity headers from a client never pass, whatever the route.
    for path in ["/plain/x", "/open/x", "/core/health"] {
        let resp = get(
            &gw,
            path,
            &[
                ("X-User-ID", "admin"),
                ("X-User-Role", "admin"),
                ("X-Profile-ID", "p-1"),
                ("X-User-Scopes", "all"),
            ],
        )
        .await;
        assert_eq!(resp.status(), 200, "{path}");
        let body = json(resp).await;
        for name in ["x-user-id", "x-user-role", "x-profile-id", "x-user-scopes"] {
            assert!(
                body["headers"].get(name).is_none(),
                "{path}: {name} passed: {body}"
            );
        }
    }

    // The access line names the user.
    let log = gw.wait_for_log("user-1");
    assert!(log.contains("user-1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_get_401_invalid_token_and_never_reach_the_service() {
    let key = RsaKey::generate();
    let other = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let gw = start(up.addr, &jwks, &[]);

    let claims_with = |edit: &dyn Fn(&mut Value)| {
        let mut c = jwt::claims("user-1", 3600);
        edit(&mut c);
        c
    };
    let valid = key.access_token("user-1");
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = jwt::b64(jwt::claims("admin", 3600).to_string().as_bytes());
    let tampered = parts.join(".");
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(key.kid.clone());
    let hmac_with_public_key = encode(
        &hs_header,
        &jwt::claims("user-1", 3600),
        &EncodingKey::from_secret(&key.public_pem).unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("no kid", key.sign_without_kid(&jwt::claims("user-1", 3600))),
        (
            "refresh token",
            key.sign(&jwt::claims("user-1", 3600), Some("refresh")),
        ),
        (
            "expired beyond leeway",
            key.sign(&jwt::claims("user-1", -120), Some("access")),
        ),
        (
            "wrong audience",
            key.sign(&claims_with(&|c| c["aud"] = json!(["someone-else"])), None),
        ),
        (
            "wrong issuer",
            key.sign(&claims_with(&|c| c["iss"] = json!("evil")), None),
        ),
        (
            "not yet valid",
            key.sign(&claims_with(&|c| c["nbf"] = json!(jwt::now() + 600)), None),
        ),
        ("unknown key", other.access_token("user-1")),
        (
            "alg none",
            jwt::unsigned(
                &json!({"alg": "none", "kid": key.kid, "typ": "access"}),
                &jwt::claims("user-1", 3600),
            ),
        ),
        ("HS256 signed with the public key", hmac_with_public_key),
        ("tampered payload", tampered),
        ("garbage", "not.a.token".into()),
        (
            "no sub",
            key.sign(
                &claims_with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
                None,
            ),
        ),
    ];
    for (case, token) in &cases {
        let resp = get(
            &gw,
            "/core/orders",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_401(resp, r#"Bearer error="invalid_token""#, case).await;
    }
    // A bad token is refused on an optional route too.
    let resp = get(&gw, "/open/x", &[("authorization", "Bearer not.a.token")]).await;
    assert_401(resp, r#"Bearer error="invalid_token""#, "optional").await;

    // Within the leeway, an aud given as a string, and no typ: accepted.
    let accepted = [
        key.sign(&jwt::claims("user-1", -10), Some("access")),
        key.sign(&claims_with(&|c| c["aud"] = json!(jwt::AUDIENCE)), None),
        key.sign(&jwt::claims("user-1", 3600), Some("JWT")),
    ];
    for token in accepted {
        let resp = get(
            &gw,
            "/core/orders",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(resp.status(), 200, "{token}");
    }
    // The reason is in the log, not the response.
    gw.wait_for_log("invalid token: ");
}

#[tokio::test(flavor = "multi_thread")]
async fn modes_and_public_paths() {
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let gw = start(up.addr, &jwks, &[]);

    assert_401(
        get(&gw, "/core/orders", &[]).await,
        "Bearer",
        "required, no token",
    )
    .await;
    assert_401(
        get(&gw, "/core/orders", &[("authorization", "Basic dTpw")]).await,
        "Bearer",
        "not a bearer token",
    )
    .await;
    for open in ["/core/health", "/core/swagger", "/core/swagger/index.html"] {
        assert_eq!(get(&gw, open, &[]).await.status(), 200, "{open}");
    }
    for closed in [
        "/core/healthx",
        "/core/swaggerx",
        "/core",
        "/core/api/health",
    ] {
        assert_eq!(get(&gw, closed, &[]).await.status(), 401, "{closed}");
    }
    // Optional: anonymous passes without identity; a valid token passes with it.
    let body = json(get(&gw, "/open/x", &[]).await).await;
    assert!(body["headers"].get("x-user-id").is_none());
    let token = key.access_token("user-2");
    let body = json(
        get(
            &gw,
            "/open/x",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await,
    )
    .await;
    assert_eq!(body["headers"]["x-user-id"], "user-2");
    // The query token counts only for WebSocket upgrades.
    let resp = get(&gw, &format!("/core/orders?token={token}"), &[]).await;
    assert_eq!(resp.status(), 401);
    // A refused request with a body closes its connection and never forwards it.
    let resp = client()
        .post(gw.url("/core/orders"))
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_token_in_the_query() {
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("messaging").await;
    let gw = start(up.addr, &jwks, &[]);
    let token = key.access_token("user-3");
    let url = format!(
        "ws://127.0.0.1:{}/socket/websocket?token={token}&vsn=2.0.0",
        gw.port
    );
    let _ws = support::ws_connect_echoing(&url, "hello").await;

    let url = format!("ws://127.0.0.1:{}/socket/websocket?vsn=2.0.0", gw.port);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!(
            "an upgrade without a token was not refused: {:?}",
            other.map(|r| r.1)
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_works_within_seconds_and_unknown_kids_do_not_storm_the_jwks() {
    let old = RsaKey::generate();
    let new = RsaKey::generate();
    let jwks = Jwks::serve(&[&old]).await;
    let up = upstream::http("core").await;
    let gw = start(up.addr, &jwks, &[]);
    let token = new.access_token("user-4");
    let auth = format!("Bearer {token}");

    // A burst of tokens with a key nobody knows: at most one refetch.
    let before = jwks.fetches();
    let burst: Vec<_> = (0..30)
        .map(|_| {
            let (url, auth) = (gw.url("/core/x"), auth.clone());
            tokio::spawn(async move {
                client()
                    .get(url)
                    .header("authorization", auth)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for t in burst {
        assert_eq!(t.await.unwrap(), 401);
    }
    assert!(
        jwks.fetches() - before <= 1,
        "{} fetches",
        jwks.fetches() - before
    );

    // The auth service rotates: the new key is served, and works without a restart.
    jwks.set_keys(&[&old, &new]);
    let started = Instant::now();
    loop {
        let status = get(&gw, "/core/x", &[("authorization", &auth)])
            .await
            .status();
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the rotated key was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Tokens of the old key keep working.
    let old_token = old.access_token("user-5");
    let resp = get(
        &gw,
        "/core/x",
        &[("authorization", &format!("Bearer {old_token}"))],
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn cached_keys_outlive_the_jwks_and_a_late_jwks_is_picked_up() {
    let key = RsaKey::generate();
    let mut jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let gw = start(up.addr, &jwks, &[("JWKS_REFRESH_SECONDS", "1")]);
    let auth = format!("Bearer {}", key.access_token("user-6"));

    jwks.stop();
    gw.wait_for_log("keeping 1 cached key(s)");
    let resp = get(&gw, "/core/x", &[("authorization", &auth)]).await;
    assert_eq!(resp.status(), 200, "cached keys stopped working");

    // A gateway that starts while the JWKS is down still starts, and works once it is up.
    let gw2 = {
        let env = jwks.env();
        let mut vars = env_refs(&env);
        vars.push(("JWKS_REFRESH_SECONDS", "1"));
        Gateway::start_with(&routes(up.addr), &vars)
    };
    gw2.wait_for_log("jwks: cannot load keys");
    let resp = get(&gw2, "/core/x", &[("authorization", &auth)]).await;
    assert_eq!(resp.status(), 401);
    jwks.restart().await;
    gw2.wait_for_log("jwks: 1 key(s) loaded");
    let resp = get(&gw2, "/core/x", &[("authorization", &auth)]).await;
    assert_eq!(resp.status(), 200);
}

#[test]
fn auth_on_without_jwt_settings_refuses_to_start() {
    let path = support::write_config(&config(&[(
        "core-service",
        "/core",
        "127.0.0.1:3000".parse().unwrap(),
        r#""auth": {"mode": "required"}"#,
    )]));
    let out = support::run_bin(&["--check", "--services", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth is on for service 'core-service'")
            && err.contains("JWKS_URL, JWT_ISSUER, JWT_AUDIENCE are not set"),
        "{err}"
    );
    let bad = support::write_config(&config(&[(
        "core-service",
        "/core",
        "127.0.0.1:3000".parse().unwrap(),
        r#""auth": {"mode": "always"}"#,
    )]));
    let out = support::run_bin(&["--check", "--services", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("service 'core-service', field 'auth.mode'"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remembered_token_still_expires_on_time() {
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let gw = start(up.addr, &jwks, &[("JWT_LEEWAY_SECONDS", "0")]);
    let token = key.sign(&jwt::claims("user-7", 2), Some("access"));
    let auth = format!("Bearer {token}");
    for _ in 0..3 {
        assert_eq!(
            get(&gw, "/core/x", &[("authorization", &auth)])
                .await
                .status(),
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let resp = get(&gw, "/core/x", &[("authorization", &auth)]).await;
    assert_401(
        resp,
        r#"Bearer error="invalid_token""#,
        "expired while remembered",
    )
    .await;
}

/// A JWKS served over TLS with a certificate for 127.0.0.1 (rcgen): every connection gets
/// `{"keys": [key]}`; the number of requests served is counted.
async fn tls_jwks(
    key: &RsaKey,
) -> (
    std::net::SocketAddr,
    String,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    support::install_tls_provider();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der], key_der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = json!({ "keys": [key.jwk.clone()] }).to_string();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body, count) = (acceptor.clone(), body.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, cert.cert.pem(), served)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_over_https_is_verified_against_its_ca() {
    let key = RsaKey::generate();
    let (addr, ca_pem, served) = tls_jwks(&key).await;
    let up = upstream::http("core").await;
    let url = format!("https://{addr}/.well-known/jwks.json");
    let ca = support::temp_path("jwks-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let issuer_audience = [("JWT_ISSUER", jwt::ISSUER), ("JWT_AUDIENCE", jwt::AUDIENCE)];

    // Trusting its CA: the keys load and a token works.
    let mut env = vec![
        ("JWKS_URL", url.as_str()),
        ("JWKS_CA_FILE", ca.to_str().unwrap()),
    ];
    env.extend_from_slice(&issuer_audience);
    let gw = Gateway::start_with(&routes(up.addr), &env);
    gw.wait_for_log("jwks: 1 key(s) loaded");
    let token = key.access_token("user-tls");
    let resp = get(
        &gw,
        "/core/x",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["headers"]["x-user-id"], "user-tls");
    drop(gw);

    // With the system's CAs only, the self-signed JWKS is not trusted: no keys, 401.
    let before = served.load(std::sync::atomic::Ordering::SeqCst);
    let mut env = vec![("JWKS_URL", url.as_str())];
    env.extend_from_slice(&issuer_audience);
    let gw = Gateway::start_with(&routes(up.addr), &env);
    let log = gw.wait_for_log("jwks: cannot load keys");
    assert!(log.contains("jwks: cannot load keys"), "{log}");
    let resp = get(
        &gw,
        "/core/x",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "a JWKS request went out over an unverified connection"
    );
}

/// `JWKS_URL` as the platform's `.env` gives it, the auth service's base URL: the keys are
/// fetched from its `/.well-known/jwks.json`.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_url_jwks_means_the_auth_services_well_known_path() {
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let base = jwks.url().replace("/.well-known/jwks.json", "");
    for url in [base.clone(), format!("{base}/")] {
        let env: Vec<(String, String)> = jwks
            .env()
            .into_iter()
            .map(|(k, v)| {
                if k == "JWKS_URL" {
                    (k, url.clone())
                } else {
                    (k, v)
                }
            })
            .collect();
        let gw = Gateway::start_with(&routes(up.addr), &env_refs(&env));
        gw.wait_for_log("jwks: 1 key(s) loaded");
        let token = key.access_token("user-1");
        let resp = get(
            &gw,
            "/core/x",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(resp.status(), 200, "{url}");
    }
}

/// Identity headers in any spelling: `X_User_ID` would read as `X-User-ID` to a framework
/// that maps `_` and `-` alike. Names with `_` are dropped (as nginx does); allowed, the
/// identity spellings still are.
#[tokio::test(flavor = "multi_thread")]
async fn underscored_identity_headers_never_reach_the_service() {
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let token = format!("Bearer {}", key.access_token("user-1"));
    let sent = [
        ("authorization", token.as_str()),
        ("x_user_id", "spoof"),
        ("x_user_role", "admin"),
        ("x-user_scopes", "all"),
        ("my_header", "mine"),
    ];
    for (allow, my_header) in [("false", None), ("true", Some("mine"))] {
        let gw = start(up.addr, &jwks, &[("PROXY_ALLOW_UNDERSCORE_HEADERS", allow)]);
        let body = json(get(&gw, "/core/x", &sent).await).await;
        let seen = &body["headers"];
        assert_eq!(seen["x-user-id"], "user-1", "{seen}");
        for name in ["x_user_id", "x_user_role", "x-user_scopes"] {
            assert!(
                seen.get(name).is_none(),
                "allow={allow}: {name} reached: {seen}"
            );
        }
        assert_eq!(
            seen.get("my_header").and_then(|v| v.as_str()),
            my_header,
            "{seen}"
        );
        // Anonymous, on a route without auth: the same.
        let body = json(get(&gw, "/plain/x", &sent[1..]).await).await;
        assert!(body["headers"].get("x_user_id").is_none(), "{body}");
    }
}

/// `"roles"` any-of against `role`, `"scopes"` all-of against `scope` (an array or a
/// space-separated string): a valid token without them gets 403 `insufficient_scope`,
/// and the service nothing.
#[tokio::test(flavor = "multi_thread")]
async fn roles_and_scopes_per_route() {
    let key = RsaKey::generate();
    let jwks = Jwks::serve(&[&key]).await;
    let up = upstream::http("core").await;
    let routes = config(&[
        (
            "admin-service",
            "/admin",
            up.addr,
            r#""auth": {"mode": "required", "roles": ["admin", "operator"], "public": ["/health"]}"#,
        ),
        (
            "orders-service",
            "/orders",
            up.addr,
            r#""auth": {"mode": "required", "scopes": ["orders:read", "orders:write"]}"#,
        ),
    ]);
    let env = jwks.env();
    let gw = Gateway::start_with(&routes, &env_refs(&env));
    gw.wait_for_log("jwks: 1 key(s) loaded");
    let token = |role: &str, scope: serde_json::Value| {
        let mut c = jwt::claims("user-7", 3600);
        c["role"] = role.into();
        c["scope"] = scope;
        format!("Bearer {}", key.sign(&c, Some("access")))
    };
    let call = |path: &'static str, auth: String| {
        let gw = &gw;
        async move { get(gw, path, &[("authorization", &auth)]).await }
    };
    let both = json!(["orders:read", "orders:write"]);

    let resp = call("/admin/users", token("operator", both.clone())).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["headers"]["x-user-role"], "operator");
    for (path, auth, case) in [
        (
            "/admin/users",
            token("client", both.clone()),
            "role not listed",
        ),
        (
            "/orders/1",
            token("client", json!(["orders:read"])),
            "a scope missing",
        ),
        (
            "/orders/1",
            token("client", json!("orders:read")),
            "string, one missing",
        ),
        ("/orders/1", token("client", json!([])), "no scopes"),
    ] {
        let resp = call(path, auth).await;
        assert_eq!(resp.status(), 403, "{case}");
        assert_eq!(
            resp.headers()["www-authenticate"],
            r#"Bearer error="insufficient_scope""#,
            "{case}"
        );
        let body = json(resp).await;
        assert_eq!(body["status"], 403, "{case}");
        assert!(body.get("service").is_none(), "{case}: reached the service");
    }
    let resp = call(
        "/orders/1",
        token("client", json!("orders:write orders:read")),
    )
    .await;
    assert_eq!(resp.status(), 200, "scopes as a space-separated string");
    // Public paths stay open; no token is still a 401, a bad one too.
    assert_eq!(support::status(&gw, "/admin/health", &[]).await, 200);
    assert_eq!(support::status(&gw, "/admin/users", &[]).await, 401);
    let m = support::metrics(&gw).await;
    assert!(
        m.contains(r#"beat_gateway_jwt_refusals_total{reason="forbidden"} 4"#),
        "{m}"
    );
}
