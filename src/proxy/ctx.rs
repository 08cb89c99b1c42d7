//! What one request derives once, in its first phases, for the later ones: nothing is
//! parsed twice.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use super::request_id::RequestId;
use super::trace::Trace;
use crate::edge::auth::Identity;
use crate::edge::rate_limit::Outcome;
use crate::live::Table;
use crate::metrics::Gauge;

/// The per-request context (Pingora's `ProxyHttp::CTX`).
#[derive(Debug)]
pub struct RequestCtx {
    /// When the gateway had the request's head.
    pub start: Instant,
    pub request_id: RequestId,
    /// The route's index in the table, once one matched.
    pub route: Option<usize>,
    /// The path and query the service receives, computed once when routing (a retry
    /// sends the same).
    pub upstream_target: Option<http::Uri>,
    /// The client asked for a WebSocket upgrade the gateway will tunnel.
    pub websocket: bool,
    /// The request carries a header the gateway removes before forwarding (hop-by-hop,
    /// `Expect`): without one, the upstream request is not searched for them.
    pub hop_by_hop: bool,
    /// The request carries an `X-Forwarded-For` chain to extend.
    pub forwarded_for: bool,
    /// The request came over the TLS listener.
    pub tls: bool,
    /// `Strict-Transport-Security` for its responses (TLS, with `PROXY_HSTS_SECONDS`).
    pub hsts: Option<HeaderValue>,
    /// The client speaks HTTP/1.0: its response is not chunked, and its connection ends
    /// after it unless it asked for keep-alive and the length is known.
    pub http10: bool,
    /// The route's `max_body_bytes`, and the body bytes read so far against it.
    pub body_limit: Option<u64>,
    pub body_bytes: u64,
    /// The address the request was sent to.
    pub upstream_addr: Option<SocketAddr>,
    /// Instances whose connect failed for this request (a retry goes elsewhere).
    pub tried: Vec<SocketAddr>,
    /// The gateway's refusal must end the connection.
    pub close_after_refusal: bool,
    /// Why the gateway answered itself (a refusal), for the access line.
    pub refusal: Option<Cow<'static, str>>,
    /// The client sent identity headers (removed before forwarding).
    pub identity_headers: bool,
    /// The client sent header names with underscores (removed before forwarding).
    pub underscore_headers: bool,
    /// The verified token's identity, passed to the service.
    pub identity: Option<Arc<Identity>>,
    /// The CORS headers for this request's response (empty for a disallowed origin or a
    /// request without `Origin`: `Vary: Origin` only); `None` when no policy applies.
    pub cors: Option<Vec<(&'static str, HeaderValue)>>,
    /// The route's rate-limit decision, for the `RateLimit-*` headers of the response.
    pub rate_limit: Option<Outcome>,
    /// The W3C trace the request belongs to (set once its head is read).
    pub trace: Option<Trace>,
    /// The client sent `tracestate` (dropped when the gateway replaced its `traceparent`).
    pub tracestate: bool,
    /// The routes this request was served by (a reload does not change them under it).
    pub table: Option<Arc<Table>>,
    /// Holds `beat_gateway_inflight_requests` up while the request lives.
    pub inflight: Option<Gauge>,
    /// Holds `beat_gateway_websocket_tunnels` up while the upgraded tunnel lives.
    pub tunnel: Option<Gauge>,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            start: Instant::now(),
            request_id: RequestId::default(),
            route: None,
            upstream_target: None,
            websocket: false,
            hop_by_hop: false,
            forwarded_for: false,
            tls: false,
            hsts: None,
            http10: false,
            body_limit: None,
            body_bytes: 0,
            upstream_addr: None,
            tried: Vec::new(),
            close_after_refusal: false,
            refusal: None,
            identity_headers: false,
            underscore_headers: false,
            identity: None,
            cors: None,
            rate_limit: None,
            trace: None,
            tracestate: false,
            table: None,
            inflight: None,
            tunnel: None,
        }
    }
}
