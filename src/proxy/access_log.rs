//! One line per request, with stable field names, under the `access` log target. The
//! query string is left out on purpose: it carries tokens (Phoenix sockets pass
//! `?token=...`) that do not belong in logs.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Instant;

use pingora_core::Error;
use pingora_proxy::Session;

use super::ctx::RequestCtx;
use super::errors::Reply;
use super::request_id::RequestId;
use crate::log_key;
use crate::logging::{self, Field};
use crate::router::Route;
use crate::upstream::Upstream;

/// What is known about a request when it ends.
struct Entry<'a> {
    start: Instant,
    method: &'a str,
    path: &'a str,
    /// The verified token's subject, or `-`.
    user: &'a str,
    /// The W3C trace id, or `-`.
    trace_id: &'a str,
    route: &'a str,
    upstream: &'a str,
    upstream_addr: Option<SocketAddr>,
    /// 0 when no response was sent.
    status: u16,
    request_id: &'a RequestId,
    bytes_in: u64,
    bytes_out: u64,
    error: Option<&'a dyn Display>,
}

/// The line for a request that reached the phases (Pingora's `logging`).
pub fn request(
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
    route: Option<(&Route, &Upstream)>,
) {
    let refusal = ctx.refusal.as_ref().map(|r| r as &dyn Display);
    let error = e.map(|e| e as &dyn Display).or(refusal);
    let status = status(session);
    // Checked before the other fields are gathered: with `RUST_LOG=warn` this runs for
    // every request and writes nothing.
    let level = level(error.is_some(), status);
    if !logging::access_enabled(level) {
        return;
    }
    let req = session.req_header();
    write(
        level,
        &Entry {
            start: ctx.start,
            method: req.method.as_str(),
            path: req.uri.path(),
            user: ctx.identity.as_ref().map_or("-", |i| &i.user_id),
            trace_id: ctx.trace.as_ref().map_or("-", |t| t.trace_id()),
            route: route.map_or("-", |(r, _)| &r.name),
            upstream: route.map_or("-", |(_, u)| u.target()),
            upstream_addr: ctx.upstream_addr,
            status,
            request_id: &ctx.request_id,
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            error,
        },
    );
}

/// The line for a head Pingora could not read: nothing is known of the request.
pub fn unreadable_head(reply: Reply, request_id: &RequestId, e: &Error) {
    // An error: always a warning.
    if !logging::access_enabled(log::Level::Warn) {
        return;
    }
    write(
        log::Level::Warn,
        &Entry {
            start: Instant::now(),
            method: "-",
            path: "-",
            user: "-",
            trace_id: "-",
            route: "-",
            upstream: "-",
            upstream_addr: None,
            status: reply.status,
            request_id,
            bytes_in: 0,
            bytes_out: 0,
            error: Some(e),
        },
    );
}

/// Logged and counted for a request that got no response: the client closed its
/// connection (or reset its stream) first, as nginx logs it.
pub const CLIENT_CLOSED: u16 = 499;

/// The status the client got; [`CLIENT_CLOSED`] when it went away before any.
pub fn status(session: &Session) -> u16 {
    session
        .response_written()
        .map_or(CLIENT_CLOSED, |r| r.status.as_u16())
}

/// Failures (an error, a 5xx) are warnings: `RUST_LOG=warn` keeps only them. A client that
/// went away is no failure of the gateway's (the line still says why).
fn level(error: bool, status: u16) -> log::Level {
    if status == CLIENT_CLOSED {
        log::Level::Info
    } else if error || status >= 500 {
        log::Level::Warn
    } else {
        log::Level::Info
    }
}

/// Write the line; callers have checked that `level` is enabled, before gathering `e`.
fn write(level: log::Level, e: &Entry<'_>) {
    let micros = u64::try_from(e.start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let upstream_addr = e.upstream_addr.map_or(Field::Str("-"), Field::Addr);
    let error = e.error.map_or(Field::Str("-"), Field::Display);
    logging::access(
        level,
        &[
            (log_key!("method"), Field::Str(e.method)),
            (log_key!("path"), Field::Str(e.path)),
            (log_key!("user"), Field::Str(e.user)),
            (log_key!("route"), Field::Str(e.route)),
            (log_key!("upstream"), Field::Str(e.upstream)),
            (log_key!("upstream_addr"), upstream_addr),
            (log_key!("status"), Field::U64(u64::from(e.status))),
            (log_key!("duration_ms"), Field::Millis(micros)),
            (log_key!("request_id"), Field::Token(e.request_id.as_str())),
            (log_key!("trace_id"), Field::Token(e.trace_id)),
            (log_key!("bytes_in"), Field::U64(e.bytes_in)),
            (log_key!("bytes_out"), Field::U64(e.bytes_out)),
            (log_key!("error"), error),
        ],
    );
}
