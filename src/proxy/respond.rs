//! The gateway's own responses: a JSON body naming the problem and the request id, with the
//! same request id and security headers as a proxied response.

use std::io::Write;

use super::headers;
use super::request_id::RequestId;

/// Write a complete JSON error response into `out`. `head_only` answers a HEAD request
/// (the length is announced, the body left out); `close` tells the client the connection
/// ends after it.
pub fn error(
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
    request_id: &RequestId,
    head_only: bool,
    close: bool,
) {
    let body = error_body(status, message, request_id);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\n",
        body.len()
    );
    // The gateway is the origin of this response, and origins with a clock send a Date.
    let now = jiff::Timestamp::now();
    if let Ok(date) = jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&now) {
        headers::line(out, b"Date", date.as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    headers::write_to_client(out, request_id);
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&body);
    }
}

fn error_body(status: u16, message: &str, request_id: &RequestId) -> Vec<u8> {
    let body = serde_json::json!({
        "error": message,
        "status": status,
        "request_id": request_id.as_str(),
    });
    // A JSON object of strings and a number always serialises.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request_id::accept_or_generate;

    #[test]
    fn json_error_with_request_id_and_headers() {
        let id = accept_or_generate(Some(b"r-1"));
        let mut out = Vec::new();
        error(&mut out, 404, "no route for this path", &id, false, true);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert!(head.contains("\r\nDate: "), "{head}");
        for h in [
            "Content-Type: application/json",
            "Connection: close",
            "X-Request-ID: r-1",
            "X-Frame-Options: DENY",
            "X-Content-Type-Options: nosniff",
            " GMT\r\n",
            &format!("Content-Length: {}", body.len()),
        ] {
            assert!(head.contains(h), "{h} missing in {head}");
        }
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "no route for this path");
        assert_eq!(v["status"], 404);
        assert_eq!(v["request_id"], "r-1");
    }

    #[test]
    fn head_requests_get_the_length_without_the_body() {
        let id = accept_or_generate(Some(b"r-2"));
        let mut out = Vec::new();
        error(&mut out, 502, "upstream unavailable", &id, true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n\r\n") && text.contains("Content-Length: "));
        assert!(!text.contains("Connection:"));
    }
}
