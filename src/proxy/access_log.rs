//! One line per request, with stable field names, under the `access` log target. The
//! query string is left out on purpose: it carries tokens (Phoenix sockets pass
//! `?token=...`) that do not belong in logs.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Instant;

use super::request_id::RequestId;
use crate::log_key;
use crate::logging::{self, Field};

/// What is known about a request when it ends.
pub struct Entry<'a> {
    pub start: Instant,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub upstream: &'a str,
    pub upstream_addr: Option<SocketAddr>,
    /// 0 when no response was sent.
    pub status: u16,
    pub request_id: &'a RequestId,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub error: Option<&'a dyn Display>,
}

pub fn write(e: &Entry<'_>) {
    let level = if e.error.is_some() || e.status >= 500 {
        log::Level::Warn
    } else {
        log::Level::Info
    };
    // Nothing below is computed when the line would be filtered out (RUST_LOG=warn...).
    if !logging::access_enabled(level) {
        return;
    }
    let micros = u64::try_from(e.start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let upstream_addr = e.upstream_addr.map_or(Field::Str("-"), Field::Addr);
    let error = e.error.map_or(Field::Str("-"), Field::Display);
    logging::access(
        level,
        &[
            (log_key!("method"), Field::Str(e.method)),
            (log_key!("path"), Field::Str(e.path)),
            (log_key!("route"), Field::Str(e.route)),
            (log_key!("upstream"), Field::Str(e.upstream)),
            (log_key!("upstream_addr"), upstream_addr),
            (log_key!("status"), Field::U64(u64::from(e.status))),
            (log_key!("duration_ms"), Field::Millis(micros)),
            (log_key!("request_id"), Field::Token(e.request_id.as_str())),
            (log_key!("bytes_in"), Field::U64(e.bytes_in)),
            (log_key!("bytes_out"), Field::U64(e.bytes_out)),
            (log_key!("error"), error),
        ],
    );
}
