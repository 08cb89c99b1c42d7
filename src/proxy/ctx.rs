//! What the gateway learns about a request once and reuses in every later callback.

use std::net::SocketAddr;
use std::time::Instant;

use http::{HeaderValue, Uri};

pub struct RequestCtx {
    pub start: Instant,
    /// Set first thing in `request_filter`; every response and log line carries it.
    pub request_id: HeaderValue,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// The URI to send upstream, when it differs from the client's.
    pub upstream_uri: Option<Uri>,
    /// The address actually dialled.
    pub upstream_addr: Option<SocketAddr>,
}

impl RequestCtx {
    pub fn new() -> Self {
        RequestCtx {
            start: Instant::now(),
            request_id: HeaderValue::from_static(""),
            route: None,
            upstream_uri: None,
            upstream_addr: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
