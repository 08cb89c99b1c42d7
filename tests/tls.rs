//! The TLS listener: HTTP/1.1 and HTTP/2 (ALPN) over TLS with the plain listener's routes
//! and behaviour, WebSockets over TLS, `X-Forwarded-Proto: https`, HSTS, startup errors
//! for certificates that do not load, and the certificate reloaded on SIGHUP. Certificates
//! are generated here (rcgen); the client is reqwest on rustls.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::{Gateway, config, free_port, temp_path, upstream};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::Message;

/// The name the certificates are for; the client resolves it to the gateway.
const NAME: &str = "gw.test";

/// A self-signed certificate for [`NAME`] and its key, as PEM.
struct Pair {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn pair() -> Pair {
    let k = rcgen::generate_simple_self_signed(vec![NAME.to_owned()]).expect("rcgen");
    Pair {
        cert: k.cert.pem(),
        key: k.signing_key.serialize_pem(),
        der: k.cert.der().to_vec(),
    }
}

/// Write a pair to fresh files.
fn files(p: &Pair) -> (PathBuf, PathBuf) {
    let (cert, key) = (temp_path("cert.pem"), temp_path("key.pem"));
    std::fs::write(&cert, &p.cert).expect("write cert");
    std::fs::write(&key, &p.key).expect("write key");
    (cert, key)
}

/// A client that trusts `pairs` only, resolves [`NAME`] to the gateway, and reports the
/// certificate it was shown.
fn tls_client(tls_port: u16, pairs: &[&Pair], http1_only: bool) -> reqwest::Client {
    support::install_tls_provider();
    let roots = pairs
        .iter()
        .map(|p| reqwest::Certificate::from_pem(p.cert.as_bytes()).expect("test certificate"));
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only(roots)
        .tls_info(true)
        .resolve(NAME, SocketAddr::from(([127, 0, 0, 1], tls_port)))
        .timeout(Duration::from_secs(20));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().expect("TLS client")
}

/// A gateway with the route `/core` to `upstream` and a TLS listener with `pair`.
fn tls_gateway(upstream: SocketAddr, p: &Pair, extra: &[(&str, &str)]) -> (Gateway, u16) {
    let (cert, key) = files(p);
    let tls_port = free_port();
    let tls_port_s = tls_port.to_string();
    let mut env = vec![
        ("PROXY_TLS_CERT", cert.to_str().expect("utf-8 path")),
        ("PROXY_TLS_KEY", key.to_str().expect("utf-8 path")),
        ("PROXY_TLS_PORT", tls_port_s.as_str()),
    ];
    env.extend_from_slice(extra);
    let routes = config(&[("core-service", "/core", upstream, r#""strip_prefix": true"#)]);
    let gw = Gateway::start_with(&routes, &env);
    wait_listening(tls_port);
    (gw, tls_port)
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "TLS listener not up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn url(tls_port: u16, path: &str) -> String {
    format!("https://{NAME}:{tls_port}{path}")
}

/// The certificate the server showed for this response.
fn shown(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

#[tokio::test]
async fn http1_and_http2_over_tls_route_like_the_plain_listener() {
    let up = upstream::http("core").await;
    let p = pair();
    let (gw, tls_port) = tls_gateway(up.addr, &p, &[("PROXY_HSTS_SECONDS", "600")]);

    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let client = tls_client(tls_port, &[&p], http1_only);
        let resp = client
            .get(url(tls_port, "/core/items?q=a%20b&x"))
            .header("x-forwarded-proto", "http")
            .send()
            .await
            .expect("request over TLS");
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200);
        assert_eq!(shown(&resp), p.der);
        let h = resp.headers();
        assert_eq!(h["strict-transport-security"], "max-age=600");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let id = h["x-request-id"].to_str().unwrap().to_owned();
        let body = support::json(resp).await;
        assert_eq!(body["path"], "/items", "{version:?}");
        assert_eq!(body["query"], "q=a%20b&x");
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
        assert_eq!(body["headers"]["x-request-id"], id.as_str());
        // HTTP/2's :authority reaches the service as Host (and X-Forwarded-Host).
        let authority = format!("{NAME}:{tls_port}");
        assert_eq!(body["headers"]["host"], authority.as_str());
        assert_eq!(body["headers"]["x-forwarded-host"], authority.as_str());

        // The gateway's own answers too: JSON, request id, HSTS.
        let resp = client.get(url(tls_port, "/nowhere")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["strict-transport-security"], "max-age=600");
        let body = support::json(resp).await;
        assert_eq!(body["error"], "no route for this path");
        let resp = client
            .get(url(tls_port, "/core/a%00b"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{version:?}");
    }

    // The plain listener: no HSTS, proto http.
    let resp = support::get(&gw, "/core/x", &[]).await;
    assert!(resp.headers().get("strict-transport-security").is_none());
    let body = support::json(resp).await;
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn http2_multiplexes_many_requests_on_one_connection() {
    let up = upstream::http("core").await;
    let p = pair();
    let (gw, tls_port) = tls_gateway(up.addr, &p, &[]);
    let client = tls_client(tls_port, &[&p], false);
    let requests = (0..50).map(|i| {
        let client = client.clone();
        async move {
            let resp = client
                .post(url(tls_port, &format!("/core/upload?n={i}")))
                .body(vec![b'x'; 10_000 + i])
                .send()
                .await
                .expect("request");
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            assert_eq!(resp.status(), 200);
            let body = support::json(resp).await;
            assert_eq!(body["bytes"], 10_000 + i);
        }
    });
    futures_util::future::join_all(requests).await;
    // Without PROXY_HSTS_SECONDS there is no HSTS.
    let resp = client.get(url(tls_port, "/core/x")).send().await.unwrap();
    assert!(resp.headers().get("strict-transport-security").is_none());
    // One access line each.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.log().matches("method=POST path=/core/upload").count() < 50 {
        assert!(Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_websocket_upgrades_over_tls() {
    let up = upstream::http("messaging").await;
    let p = pair();
    let (_gw, tls_port) = tls_gateway(up.addr, &p, &[]);
    support::install_tls_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(p.der.clone()))
        .expect("root");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // WebSockets need HTTP/1.1 (the gateway offers h2 first).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(NAME).unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (mut ws, resp) =
        tokio_tungstenite::client_async(format!("wss://{NAME}:{tls_port}/core/socket"), tls)
            .await
            .expect("upgrade over TLS");
    assert_eq!(resp.status(), 101);
    for i in 0..20 {
        let text = format!("frame {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let echoed = ws.next().await.expect("a frame").expect("no error");
        assert_eq!(echoed, Message::text(text));
    }
    ws.close(None).await.unwrap();
}

/// Start the binary with `env` on free ports and a one-route file; it must refuse to start
/// (exit 2) without a panic. Its stderr.
fn refused_start(env: &[(&str, &std::ffi::OsStr)]) -> String {
    let routes = support::write_config(&config(&[(
        "core-service",
        "/core",
        SocketAddr::from(([127, 0, 0, 1], 1)),
        "",
    )]));
    let mut cmd = std::process::Command::new(support::BIN);
    cmd.args(["--services", routes.to_str().unwrap()])
        .env("PROXY_HOST", "127.0.0.1")
        .env("PROXY_PORT", free_port().to_string())
        .env("ADMIN_PORT", free_port().to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run beat-gateway");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn certificates_that_do_not_load_stop_the_start_naming_the_file() {
    let (a, b) = (pair(), pair());
    let (cert_a, key_a) = files(&a);
    let (_, key_b) = files(&b);
    let garbage = temp_path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = temp_path("missing.pem");
    let cases = [
        (&missing, &key_a, "PROXY_TLS_CERT", "cannot read"),
        (&cert_a, &missing, "PROXY_TLS_KEY", "cannot read"),
        (&garbage, &key_a, "PROXY_TLS_CERT", "no certificate"),
        (&cert_a, &garbage, "PROXY_TLS_KEY", "no private key"),
        (&cert_a, &key_b, "PROXY_TLS_KEY", "does not fit"),
    ];
    for (cert, key, var, why) in cases {
        let port = free_port().to_string();
        let stderr = refused_start(&[
            ("PROXY_TLS_PORT", port.as_ref()),
            ("PROXY_TLS_CERT", cert.as_os_str()),
            ("PROXY_TLS_KEY", key.as_os_str()),
        ]);
        let named = format!(
            "{var}={}",
            if var == "PROXY_TLS_CERT" { cert } else { key }.display()
        );
        assert!(
            stderr.contains(&named) && stderr.contains(why),
            "{var} {why}: {stderr}"
        );
    }
}

#[test]
fn unreadable_system_ca_certificates_stop_the_start_without_a_panic() {
    // Pingora's TLS client loads them in every connector and panics when they do not load.
    let empty = temp_path("no-certs");
    std::fs::create_dir_all(&empty).unwrap();
    let missing = empty.join("missing.pem");
    let stderr = refused_start(&[
        ("SSL_CERT_FILE", missing.as_os_str()),
        ("SSL_CERT_DIR", empty.as_os_str()),
    ]);
    assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_it_when_the_new_one_is_bad() {
    let up = upstream::http("core").await;
    let (a, b) = (pair(), pair());
    let (cert, key) = files(&a);
    let tls_port = free_port();
    let routes = config(&[("core-service", "/core", up.addr, "")]);
    let port_s = tls_port.to_string();
    let gw = Gateway::start_with(
        &routes,
        &[
            ("PROXY_TLS_CERT", cert.to_str().unwrap()),
            ("PROXY_TLS_KEY", key.to_str().unwrap()),
            ("PROXY_TLS_PORT", &port_s),
        ],
    );
    wait_listening(tls_port);
    // A new client each time: a new connection, a new handshake.
    let served = || async {
        let client = tls_client(tls_port, &[&a, &b], true);
        let resp = client.get(url(tls_port, "/core/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        shown(&resp)
    };
    assert_eq!(served().await, a.der);

    // A long-lived connection opened before the renewal.
    let before = tls_client(tls_port, &[&a, &b], true);
    assert_eq!(
        shown(&before.get(url(tls_port, "/core/x")).send().await.unwrap()),
        a.der
    );

    std::fs::write(&cert, &b.cert).unwrap();
    std::fs::write(&key, &b.key).unwrap();
    gw.signal("HUP");
    gw.wait_for_log("certificate reloaded");
    assert_eq!(served().await, b.der);
    // The open connection keeps serving.
    let resp = before.get(url(tls_port, "/core/y")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // A half-written renewal: refused, B keeps serving.
    std::fs::write(&cert, &a.cert).unwrap();
    gw.signal("HUP");
    let log = gw.wait_for_log("the current certificate keeps serving");
    assert!(log.contains("does not fit"), "{log}");
    assert_eq!(served().await, b.der);
    let metrics = support::metrics(&gw).await;
    for line in [
        r#"beat_gateway_tls_certificate_reloads_total{result="ok"} 1"#,
        r#"beat_gateway_tls_certificate_reloads_total{result="failed"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("beat_gateway_tls_certificate_expiry_timestamp_seconds "));
}

#[tokio::test]
async fn watch_picks_up_a_renewed_certificate() {
    let up = upstream::http("core").await;
    let (a, b) = (pair(), pair());
    let (cert, key) = files(&a);
    let tls_port = free_port();
    let routes = support::write_config(&config(&[("core-service", "/core", up.addr, "")]));
    let port_s = tls_port.to_string();
    let _gw = Gateway::spawn(
        &["--watch", "--services", routes.to_str().unwrap()],
        &[
            ("PROXY_TLS_CERT", cert.to_str().unwrap()),
            ("PROXY_TLS_KEY", key.to_str().unwrap()),
            ("PROXY_TLS_PORT", &port_s),
        ],
    );
    wait_listening(tls_port);
    // Renewers write the key and the certificate one after the other.
    std::fs::write(&key, &b.key).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    std::fs::write(&cert, &b.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let client = tls_client(tls_port, &[&a, &b], true);
        let resp = client.get(url(tls_port, "/core/x")).send().await.unwrap();
        if shown(&resp) == b.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Over HTTP/2 as over HTTP/1: header names with `_` (an identity header in another
/// spelling among them) do not reach the service.
#[tokio::test]
async fn underscored_headers_are_dropped_over_http2_too() {
    let up = upstream::http("core").await;
    let p = pair();
    let (_gw, tls_port) = tls_gateway(up.addr, &p, &[]);
    let client = tls_client(tls_port, &[&p], false);
    let resp = client
        .get(url(tls_port, "/core/x"))
        .header("x_user_id", "spoof")
        .header("x_user_role", "admin")
        .header("my_header", "x")
        .send()
        .await
        .expect("request over TLS");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let body = support::json(resp).await;
    let seen = &body["headers"];
    for name in ["x_user_id", "x_user_role", "my_header", "x-user-id"] {
        assert!(seen.get(name).is_none(), "{name} reached: {seen}");
    }
}
