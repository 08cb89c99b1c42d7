//! One line per request, with stable field names, under the `access` log target. The
//! query string is left out on purpose: it carries tokens (Phoenix sockets pass
//! `?token=...`) that do not belong in logs.

use pingora_core::Error;
use pingora_proxy::Session;

use super::ctx::RequestCtx;
use crate::logging::{self, Field};
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
    if !logging::access_enabled(level) {
        return;
    }
    let req = session.req_header();
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let duration_ms = (ctx.start.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
    let upstream_addr = OrDash(ctx.upstream_addr);
    let error = error.map(|e| e.to_string());
    logging::access(
        level,
        &[
            ("method", Field::Str(req.method.as_str())),
            ("path", Field::Str(req.uri.path())),
            ("route", Field::Str(route.map_or("-", |r| r.name.as_str()))),
            ("upstream", Field::Str(upstream)),
            ("upstream_addr", Field::Display(&upstream_addr)),
            ("status", Field::U64(u64::from(status))),
            ("duration_ms", Field::F64(duration_ms)),
            (
                "request_id",
                Field::Str(ctx.request_id.to_str().unwrap_or("-")),
            ),
            ("bytes_in", Field::U64(session.body_bytes_read() as u64)),
            ("bytes_out", Field::U64(session.body_bytes_sent() as u64)),
            ("error", Field::Str(error.as_deref().unwrap_or("-"))),
        ],
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
