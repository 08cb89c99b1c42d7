//! The dashboard: `GET /` on the admin listener is a page a person reads (the routes and
//! their instances, requests/s, error share and p50/p99 per route, WebSockets and
//! connections, the config's hash and last reload, the TLS certificate's expiry, the JWKS,
//! refusals), refreshing itself every few seconds. It is one self-contained HTML file (no
//! CDN, works offline), readable on a phone: its script reads `/dashboard.json` (what only
//! the live state knows) and `/metrics` (the counters, in Prometheus' text format), and
//! computes rates and percentiles from the difference between two readings.
//!
//! Off loopback it needs `ADMIN_TOKEN` like every admin path; a browser cannot send a
//! bearer token when it opens a page, so the admin listener also takes the token as an HTTP
//! Basic password (any user name) and asks the browser for it on `/`.

use serde_json::{Value, json};

use crate::edge::tls::Certificate;
use crate::live::Live;

/// The page (`src/admin/dashboard.html`).
pub const PAGE: &str = include_str!("dashboard.html");

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `(at, error)` as `{"at": .., "ok": .., "error": ..}`.
fn outcome(o: Option<(u64, Option<String>)>) -> Value {
    o.map_or(
        Value::Null,
        |(at, error)| json!({"at": at, "ok": error.is_none(), "error": error}),
    )
}

fn jwks_url(url: &crate::settings::JwksUrl) -> String {
    let scheme = if url.tls { "https" } else { "http" };
    format!("{scheme}://{}:{}{}", url.host, url.port, url.path)
}

/// What `/dashboard.json` says: the live state the counters do not hold. `routes` is what
/// `/routes` answers.
pub fn data(live: &Live, certificate: Option<&Certificate>, routes: Value) -> Value {
    let table = live.current();
    let shared = live.shared();
    json!({
        // The page's rates divide by the server's time between two readings.
        "now_ms": unix_millis(),
        "version": env!("CARGO_PKG_VERSION"),
        "shutting_down": live.is_draining(),
        "config": {"hash": table.hash, "last_reload": outcome(live.last_reload())},
        "routes": routes["routes"],
        "tls": certificate.map(|c| json!({"not_after": c.not_after()})),
        "jwks": shared.verifier.as_ref().map(|v| json!({
            "url": jwks_url(&v.settings().jwks_url),
            "keys": v.keys().len(),
            "in_use": v.in_use(),
            "last_fetch": outcome(v.keys().last_outcome()),
        })),
        "session_store": shared.sessions.as_ref().map(|s| s.state()),
        "metrics": crate::metrics::enabled(),
    })
}
