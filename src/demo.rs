//! Demo mode: echo services on loopback standing in for auth, core and messaging, so a
//! newcomer with nothing else installed gets a working gateway at once. Each distinct
//! upstream of the config (`auth-service:2000`, ...) gets its own echo server on an
//! ephemeral loopback port, and the routes are pointed at those. The echo answers any
//! request with what it received (method, path, query, headers), and holds a WebSocket
//! echo on any path asked to upgrade (Phoenix's `/socket/websocket`).
//!
//! Edge auth can be tried too: the demo adds a `/secure` route with `required` auth (the
//! shipped routes stay open), serves a JWKS with a key generated at start (Ed25519), and
//! logs a token signed with it and the curl line that uses it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::response::{IntoResponse, Json, Response};
use http_body_util::BodyExt;

use crate::config::{Mode, RouteAuth, Service};
use crate::settings::{DEFAULT_LEEWAY_SECONDS, DEFAULT_REFRESH_SECONDS, JwksUrl, JwtSettings};

/// The demo-only route that requires a token.
pub const SECURE_PREFIX: &str = "/secure";
const DEMO_ISSUER: &str = "beat-gateway-demo";
const DEMO_AUDIENCE: &str = "beat-demo";

/// What `--demo` runs: the routes pointed at the echo services, the JWT settings of the
/// demo JWKS, and a token it accepts.
pub struct Demo {
    pub services: Vec<Service>,
    pub jwt: JwtSettings,
    pub token: String,
}

/// A signing key made at start, its JWKS document and a day-long access token.
struct DemoKey {
    jwks: serde_json::Value,
    token: String,
}

impl DemoKey {
    fn generate() -> std::io::Result<DemoKey> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        // PKCS#8 for an Ed25519 private key (RFC 8410): a fixed prefix, then the seed.
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        let kid = format!("demo-{}", &URL_SAFE_NO_PAD.encode(public)[..16]);
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": kid, "x": URL_SAFE_NO_PAD.encode(public),
        }]});
        let now = jiff::Timestamp::now().as_second();
        let claims = serde_json::json!({
            "iss": DEMO_ISSUER, "aud": [DEMO_AUDIENCE], "sub": "demo-user",
            "iat": now, "exp": now + 86_400, "jti": "demo",
            "email": "demo@example.org", "role": "client", "profile_id": "demo-profile",
            "scope": ["demo:read"],
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(kid);
        header.typ = Some("access".into());
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&pkcs8),
        )
        .map_err(std::io::Error::other)?;
        Ok(DemoKey { jwks, token })
    }
}

/// The demo's `/secure` route (to its own echo), unless the routes use that prefix.
fn secure_route(services: &[Service]) -> Option<Service> {
    let template = services.first()?;
    if services.iter().any(|s| s.prefix == SECURE_PREFIX) {
        log::warn!("demo: the routes already use {SECURE_PREFIX}; no demo auth route added");
        return None;
    }
    Some(Service {
        name: "secure-demo".into(),
        host: "secure-demo".into(),
        port: 1,
        instances: vec![("secure-demo".into(), 1)],
        prefix: SECURE_PREFIX.into(),
        strip_prefix: true,
        skip_prefix: Vec::new(),
        api_version: None,
        auth: RouteAuth {
            mode: Mode::Required,
            ..RouteAuth::default()
        },
        cors: None,
        rate_limit: None,
        max_body_bytes: None,
        ..template.clone()
    })
}

/// A router that echoes every request as JSON, and WebSocket messages back to the sender.
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`: the echo reports
/// the peer address it saw, which shows upstream connection reuse.
pub fn echo_app(service: &str) -> Router {
    let service = service.to_owned();
    Router::new().fallback(move |req: Request| echo(service.clone(), req))
}

async fn echo(service: String, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    if parts.headers.contains_key(http::header::UPGRADE) {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws.on_upgrade(echo_socket),
            Err(rejection) => rejection.into_response(),
        };
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    let mut body_bytes = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => return http::StatusCode::BAD_REQUEST.into_response(),
        }
    }
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Json(serde_json::json!({
        "service": service,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_bytes": body_bytes,
        "peer": peer,
    }))
    .into_response()
}

async fn echo_socket(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

/// Start one echo server per distinct upstream of `services` (plus the `/secure` route)
/// and the demo JWKS on a thread of their own, and return the services pointed at them.
pub fn start(mut services: Vec<Service>) -> std::io::Result<Demo> {
    let key = DemoKey::generate()?;
    services.extend(secure_route(&services));
    let jwks_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    jwks_listener.set_nonblocking(true)?;
    let jwks_addr = jwks_listener.local_addr()?;
    let jwks_doc = key.jwks;
    let mut servers: BTreeMap<(String, u16), (std::net::TcpListener, String)> = BTreeMap::new();
    for s in &services {
        if let std::collections::btree_map::Entry::Vacant(slot) =
            servers.entry((s.host.clone(), s.port))
        {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            slot.insert((listener, s.host.clone()));
        }
    }
    let mut ports = BTreeMap::new();
    for ((host, port), (listener, _)) in &servers {
        let local = listener.local_addr()?;
        log::info!("demo: echo for {host}:{port} listening on {local}");
        ports.insert((host.clone(), *port), local.port());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("demo-upstreams".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut tasks = vec![tokio::spawn(serve_jwks(jwks_listener, jwks_doc))];
                for (_, (listener, name)) in servers {
                    tasks.push(tokio::spawn(serve(listener, name)));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })?;
    let services = services
        .into_iter()
        .map(|mut s| {
            s.port = ports[&(s.host.clone(), s.port)];
            s.host = "127.0.0.1".into();
            s.instances = vec![(s.host.clone(), s.port)];
            s
        })
        .collect();
    let jwt = JwtSettings {
        jwks_url: JwksUrl {
            host: jwks_addr.ip().to_string(),
            port: jwks_addr.port(),
            path: "/.well-known/jwks.json".into(),
            tls: false,
            ca_file: None,
        },
        issuer: DEMO_ISSUER.into(),
        audience: DEMO_AUDIENCE.into(),
        leeway_seconds: DEFAULT_LEEWAY_SECONDS,
        refresh: std::time::Duration::from_secs(DEFAULT_REFRESH_SECONDS),
    };
    Ok(Demo {
        services,
        jwt,
        token: key.token,
    })
}

/// The demo's JWKS at `/.well-known/jwks.json`.
async fn serve_jwks(listener: std::net::TcpListener, jwks: serde_json::Value) {
    let result = async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let jwks = jwks.clone();
                async move { Json(jwks) }
            }),
        );
        axum::serve(listener, app).await
    }
    .await;
    if let Err(e) = result {
        log::error!("demo: JWKS stopped: {e}");
    }
}

async fn serve(listener: std::net::TcpListener, name: String) {
    let result = async {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let app = echo_app(&name).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await
    }
    .await;
    if let Err(e) = result {
        log::error!("demo: echo for {name} stopped: {e}");
    }
}
