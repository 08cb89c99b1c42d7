//! The admin listener: a second Pingora service on `ADMIN_HOST:ADMIN_PORT` (loopback by
//! default), never on the public port.
//!
//! - `GET /`: the dashboard, a page that refreshes itself from `GET /dashboard.json` and
//!   `/metrics` ([`dashboard`]).
//! - `GET /healthz`: the process is alive (no token needed, for orchestrators).
//! - `GET /readyz`: every route's service resolves (an instance that does not resolve takes
//!   no traffic); else `503` JSON naming the services without a usable instance. From
//!   SIGTERM on, `503` `{"status": "shutting down"}` while the gateway still serves for
//!   `PROXY_SHUTDOWN_DELAY_SECONDS` (an orchestrator's endpoints follow readiness).
//! - `GET /metrics`: Prometheus text (what [`crate::metrics`] counts), served by
//!   `pingora-prometheus`.
//! - `GET /routes`: the live route table as JSON, each instance and its health (and the
//!   session store's state, when the session checks are on).
//!
//! Off loopback, every path but `/healthz` and `/readyz` needs `Authorization: Bearer
//! $ADMIN_TOKEN` (or the token as an HTTP Basic password, which a browser can send). Orchestrators' probes carry no secrets, so `/readyz` without an
//! `Authorization` header answers its status code and status word alone; the services it
//! would name need the token (a wrong token is 401, as everywhere).

pub mod dashboard;
pub mod probe;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::{HttpServer, ServeHttp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use pingora_prometheus::PrometheusHttpApp;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::edge::tls::Certificate;
use crate::live::Live;
use crate::metrics;

/// What the admin endpoints report on: the live table, and the TLS listener's certificate.
pub struct AdminState {
    pub live: Arc<Live>,
    pub certificate: Option<Arc<Certificate>>,
}

/// The admin application.
pub struct AdminApp {
    state: AdminState,
    token: Option<String>,
}

/// The admin service on `addr`. `token`: required as a bearer token on every path but
/// `/healthz` and a credential-less `/readyz` (startup refuses a non-loopback address
/// without one).
pub fn service(
    state: AdminState,
    addr: &str,
    token: Option<String>,
) -> Service<HttpServer<AdminApp>> {
    let mut service = Service::new(
        "beat-gateway admin".to_owned(),
        HttpServer::new_app(AdminApp { state, token }),
    );
    service.add_tcp(addr);
    service
}

/// Whether `host` needs `ADMIN_TOKEN` (anything but a loopback address does).
pub fn needs_token(host: IpAddr) -> bool {
    !host.is_loopback()
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let length = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    resp
}

/// The dashboard page: self-contained, so its policy allows nothing from elsewhere.
fn html_response(page: &'static str) -> Response<Vec<u8>> {
    let body = page.as_bytes().to_vec();
    let length = body.len();
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    let fixed = [
        (http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (http::header::CACHE_CONTROL, "no-store"),
        (http::header::X_FRAME_OPTIONS, "DENY"),
        (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (
            http::header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in fixed {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    resp
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(sent) = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        // A bearer token, or (for a browser opening the dashboard) the token as an HTTP
        // Basic password, whatever the user name.
        let sent = match sent.split_once(' ') {
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("bearer") => {
                value.as_bytes().to_vec()
            }
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("basic") => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(value.trim())
                    .ok()
                    .and_then(|pair| {
                        let colon = pair.iter().position(|&b| b == b':')?;
                        Some(pair[colon + 1..].to_vec())
                    })
                    .unwrap_or_default()
            }
            _ => return false,
        };
        bool::from(sent.ct_eq(token.as_bytes()))
    }

    /// Services with no instance that takes traffic (and the health metric, refreshed).
    async fn unready(&self) -> Vec<String> {
        let table = self.state.live.current();
        let mut down = Vec::new();
        for (route, upstream) in table.routes.routes().iter().zip(table.upstreams.iter()) {
            let instances = upstream.instances().await;
            for (addr, healthy) in &instances {
                table
                    .metrics
                    .set_healthy(route.index, &addr.to_string(), *healthy);
            }
            if instances.is_empty() {
                table
                    .metrics
                    .set_healthy(route.index, upstream.target(), false);
            }
            if !instances.iter().any(|(_, healthy)| *healthy) {
                down.push(route.name.clone());
            }
        }
        down
    }

    async fn routes(&self) -> serde_json::Value {
        let table = self.state.live.current();
        let mut routes = Vec::new();
        for (route, upstream) in table.routes.routes().iter().zip(table.upstreams.iter()) {
            let instances: Vec<serde_json::Value> = upstream
                .instances()
                .await
                .into_iter()
                .map(|(addr, healthy)| json!({"address": addr.to_string(), "healthy": healthy}))
                .collect();
            routes.push(json!({
                "name": route.name,
                "prefix": route.prefix,
                "strip_prefix": route.strip_prefix,
                "upstreams": upstream.target(),
                "lb": format!("{:?}", upstream.balance()),
                "auth": format!("{:?}", route.auth.mode).to_lowercase(),
                "roles": route.auth.roles,
                "scopes": route.auth.scopes,
                "rate_limit": route.rate_limit.as_ref().map(|l| json!({
                    "requests_per_second": l.requests_per_second, "burst": l.burst,
                })),
                "instances": instances,
            }));
        }
        let mut body = json!({ "routes": routes });
        if let Some(store) = &self.state.live.shared().sessions {
            body["session_store"] = store.state().into();
        }
        body
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        if session.req_header().method != http::Method::GET {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "only GET", "status": 405}),
            );
        }
        // A probe sends no credentials: readiness alone is not worth hiding.
        let probe = path == "/readyz"
            && !session
                .req_header()
                .headers
                .contains_key(http::header::AUTHORIZATION);
        if path != "/healthz" && !probe && !self.authorized(session) {
            let mut resp = json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": "ADMIN_TOKEN required as a bearer token", "status": 401}),
            );
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            if path == "/" {
                // A browser asks for a user name and password: the token is the password.
                resp.headers_mut().append(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static(
                        r#"Basic realm="beat-gateway admin: the password is ADMIN_TOKEN", charset="UTF-8""#,
                    ),
                );
            }
            return resp;
        }
        match path.as_str() {
            "/" => html_response(dashboard::PAGE),
            "/dashboard.json" => {
                let routes = self.routes().await;
                let state = &self.state;
                let data = dashboard::data(&state.live, state.certificate.as_deref(), routes);
                json_response(StatusCode::OK, data)
            }
            "/healthz" => json_response(StatusCode::OK, json!({"status": "ok"})),
            "/readyz" => {
                if self.state.live.is_draining() {
                    return json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"status": "shutting down"}),
                    );
                }
                let down = self.unready().await;
                // Not a readiness condition (a gateway without its session store still
                // serves, or refuses with 503 by itself), but shown.
                let sessions = self.state.live.shared().sessions.as_ref();
                if down.is_empty() {
                    let mut body = json!({"status": "ready"});
                    if let Some(store) = sessions {
                        body["session_store"] = store.state().into();
                    }
                    json_response(StatusCode::OK, body)
                } else if probe && self.token.is_some() {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"status": "not ready"}),
                    )
                } else {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        json!({"status": "not ready", "services_without_healthy_instance": down}),
                    )
                }
            }
            "/metrics" if metrics::enabled() => PrometheusHttpApp.response(session).await,
            "/metrics" => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "metrics are off (ADMIN_METRICS=off)", "status": 404}),
            ),
            "/routes" => json_response(StatusCode::OK, self.routes().await),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"error": "not found: /, /dashboard.json, /healthz, /readyz, /metrics, /routes", "status": 404}),
            ),
        }
    }
}
