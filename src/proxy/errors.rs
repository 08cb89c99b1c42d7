//! Every error the gateway answers itself, in one place: which status a failure maps to,
//! and the JSON response it gets (the problem, the status and the request id, with the
//! same request id and security headers as a proxied response).

use bytes::Bytes;
use pingora_core::protocols::http::v1::server::REQUEST_LINE_TOO_LONG;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;

use super::headers;
use super::request_id::RequestId;

/// The upstream's name did not resolve (our resolver, before any connect).
pub const RESOLVE_FAILED: ErrorType = ErrorType::new("ResolveFailed");
/// The route has instances, none of them healthy: 503 at once, no connect tried.
pub const NO_HEALTHY_INSTANCE: ErrorType = ErrorType::new("NoHealthyInstance");

/// The error for a request that got no peer.
pub fn from_peer_error(e: crate::upstream::PeerError) -> Box<Error> {
    use crate::upstream::PeerError;
    let etype = match e {
        PeerError::NoneHealthy(_) => NO_HEALTHY_INSTANCE,
        _ => RESOLVE_FAILED,
    };
    let mut err = Error::explain(etype, e.to_string());
    err.as_up();
    err
}

/// What the client gets for an error: a status and the message of the JSON body. Status 0:
/// there is nobody to answer (the client left, or its connection broke).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub message: &'static str,
}

pub const UPSTREAM_UNAVAILABLE: Reply = Reply {
    status: 502,
    message: "upstream unavailable",
};
pub const UPSTREAM_TIMEOUT: Reply = Reply {
    status: 504,
    message: "upstream timed out",
};

/// The reply for an error Pingora or a phase raised while proxying.
pub fn classify(e: &Error) -> Reply {
    use ErrorType::*;
    let reply = |status, message| Reply { status, message };
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(status)) => reply(*status, reason(*status)),
        (ErrorSource::Downstream, ReadTimedout | WriteTimedout) => reply(408, "request timed out"),
        (ErrorSource::Downstream, ConnectionClosed | ReadError | WriteError) => reply(0, ""),
        (ErrorSource::Downstream, _) => reply(400, "invalid request"),
        (_, ConnectTimedout | ReadTimedout | WriteTimedout) => UPSTREAM_TIMEOUT,
        (_, t) if *t == NO_HEALTHY_INSTANCE => reply(503, "no healthy instance"),
        (ErrorSource::Internal, InternalError) => reply(500, "internal error"),
        _ => UPSTREAM_UNAVAILABLE,
    }
}

/// How an upstream exchange failed, for `beat_gateway_upstream_errors_total{kind}`:
/// `connect`, `timeout` or `reset`; `None` when the failure was not the upstream's.
pub fn upstream_error_kind(e: &Error) -> Option<&'static str> {
    use ErrorType::*;
    if e.esource() != &ErrorSource::Upstream {
        return None;
    }
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout => Some("timeout"),
        ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
        | TLSHandshakeFailure => Some("connect"),
        _ if e.etype() == &RESOLVE_FAILED => Some("connect"),
        _ if e.etype() == &NO_HEALTHY_INSTANCE => None,
        _ => Some("reset"),
    }
}

/// The reply for a request head Pingora could not read (malformed, or too slow).
pub fn classify_head(e: &Error) -> Reply {
    match e.etype() {
        ErrorType::ReadTimedout => Reply {
            status: 408,
            message: "request head timed out",
        },
        t if *t == REQUEST_LINE_TOO_LONG => Reply {
            status: 414,
            message: "request target too long",
        },
        _ => Reply {
            status: 400,
            message: "malformed request",
        },
    }
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

/// The complete JSON response for `reply`. `close`: the connection ends after it.
pub fn response(
    reply: Reply,
    request_id: &RequestId,
    close: bool,
) -> Result<(ResponseHeader, Bytes)> {
    let body = serde_json::json!({
        "error": reply.message,
        "status": reply.status,
        "request_id": request_id.as_str(),
    });
    // A JSON object of strings and a number always serialises.
    let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut resp = ResponseHeader::build(reply.status, Some(8))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    if close {
        resp.insert_header(http::header::CONNECTION, "close")?;
    }
    headers::set_client_headers(&mut resp, request_id)?;
    Ok((resp, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request_id::accept_or_generate;

    #[test]
    fn json_error_with_request_id_and_headers() {
        let id = accept_or_generate(Some(&http::HeaderValue::from_static("r-1")));
        let reply = Reply {
            status: 404,
            message: "no route for this path",
        };
        let (resp, body) = response(reply, &id, true).unwrap();
        assert_eq!(resp.status, 404);
        let h = |n: &str| resp.headers.get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(h("content-type"), "application/json");
        assert_eq!(h("connection"), "close");
        assert_eq!(h("x-request-id"), "r-1");
        assert_eq!(h("x-frame-options"), "DENY");
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("content-length"), body.len().to_string());
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "no route for this path");
        assert_eq!(v["status"], 404);
        assert_eq!(v["request_id"], "r-1");
    }

    #[test]
    fn failures_map_to_statuses() {
        let e = |source, etype| {
            let mut e = Error::new(etype);
            match source {
                Upstream => e.as_up(),
                Downstream => e.as_down(),
                _ => e.esource = source,
            }
            classify(&e).status
        };
        use ErrorSource::*;
        use ErrorType::*;
        assert_eq!(e(Upstream, ConnectRefused), 502);
        assert_eq!(e(Upstream, ConnectTimedout), 504);
        assert_eq!(e(Upstream, ReadTimedout), 504);
        assert_eq!(e(Upstream, ConnectionClosed), 502);
        assert_eq!(e(Upstream, RESOLVE_FAILED), 502);
        assert_eq!(e(Downstream, ReadTimedout), 408);
        assert_eq!(e(Downstream, ConnectionClosed), 0);
        assert_eq!(e(Downstream, InvalidHTTPHeader), 400);
        assert_eq!(e(Internal, HTTPStatus(413)), 413);
        let slow = Error::new(ReadTimedout);
        assert_eq!(classify_head(&slow).status, 408);
        assert_eq!(classify_head(&Error::new(InvalidHTTPHeader)).status, 400);
    }
}
