//! One line per request, with stable field names, under the `access` log target. The
//! query string is left out on purpose: it carries tokens (Phoenix sockets pass
//! `?token=...`) that do not belong in logs.

use pingora_core::Error;
use pingora_proxy::Session;

use super::ctx::RequestCtx;
use crate::router::Route;

pub fn write(
    session: &Session,
    ctx: &RequestCtx,
    route: Option<&Route>,
    upstream: &str,
    error: Option<&Error>,
) {
    let level = if error.is_some() || is_server_error(session) {
        log::Level::Warn
    } else {
        log::Level::Info
    };
    // Nothing below is computed when the line would be filtered out (RUST_LOG=warn...).
    if !log::log_enabled!(target: "access", level) {
        return;
    }
    let req = session.req_header();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let duration_ms = ctx.start.elapsed().as_secs_f64() * 1000.0;
    let duration_ms = (duration_ms * 100.0).round() / 100.0;
    let route = route.map_or("-", |r| r.name.as_str());
    let request_id = ctx.request_id.to_str().unwrap_or("-");
    let error = error.map(|e| e.to_string());
    log::log!(
        target: "access",
        level,
        method = req.method.as_str(),
        path = req.uri.path(),
        route = route,
        upstream = upstream,
        upstream_addr:% = OrDash(ctx.upstream_addr),
        status = status,
        duration_ms = duration_ms,
        request_id = request_id,
        bytes_in = session.body_bytes_read(),
        bytes_out = session.body_bytes_sent(),
        error = error.as_deref().unwrap_or("-");
        "request"
    );
}

/// The response was a server error (the gateway's or the upstream's).
fn is_server_error(session: &Session) -> bool {
    session
        .response_written()
        .is_some_and(|r| r.status.is_server_error())
}

/// Display an optional value, `-` when absent, without building a String.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}
