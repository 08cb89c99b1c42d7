//! The gateway's own responses: a JSON body naming the problem and the request id, with the
//! same request id and security headers as a proxied response. Also the mapping from a
//! Pingora error to the status the client sees.

use bytes::Bytes;
use http::HeaderValue;
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::headers;

/// Write a complete JSON error response.
pub async fn error(
    session: &mut Session,
    status: u16,
    message: &str,
    request_id: &HeaderValue,
) -> Result<()> {
    let body = Bytes::from(error_body(status, message, request_id));
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    headers::to_client(&mut resp, request_id)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

fn error_body(status: u16, message: &str, request_id: &HeaderValue) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "error": message,
        "status": status,
        "request_id": request_id.to_str().unwrap_or_default(),
    }))
    .expect("a JSON object of strings and numbers serialises")
}

/// What went wrong, as the client should see it: the status and a short message. Status 0
/// means the client is gone and nothing can be sent.
pub fn classify(e: &Error) -> (u16, &'static str) {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(502)) => (502, "upstream unavailable"),
        (_, HTTPStatus(code)) => (*code, "request failed"),
        (ErrorSource::Upstream, ConnectTimedout | ReadTimedout | WriteTimedout) => {
            (504, "upstream timed out")
        }
        (ErrorSource::Upstream, _) => (502, "upstream unavailable"),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => (0, ""),
        (ErrorSource::Downstream, ReadTimedout | WriteTimedout) => (408, "request timed out"),
        (ErrorSource::Downstream, _) => (400, "bad request"),
        (ErrorSource::Internal | ErrorSource::Unset, _) => (500, "internal error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_json_with_request_id() {
        let body = error_body(
            404,
            "no route for this path",
            &HeaderValue::from_static("r-1"),
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "no route for this path");
        assert_eq!(v["status"], 404);
        assert_eq!(v["request_id"], "r-1");
    }

    #[test]
    fn upstream_errors_map_to_502_and_504() {
        let up = |t| {
            let mut e = Error::new(t);
            e.as_up();
            e
        };
        assert_eq!(classify(&up(ErrorType::ConnectRefused)).0, 502);
        assert_eq!(classify(&up(ErrorType::ConnectNoRoute)).0, 502);
        assert_eq!(classify(&up(ErrorType::ConnectionClosed)).0, 502);
        assert_eq!(classify(&up(ErrorType::ReadTimedout)).0, 504);
        assert_eq!(classify(&up(ErrorType::ConnectTimedout)).0, 504);
        let mut down = Error::new(ErrorType::ConnectionClosed);
        down.as_down();
        assert_eq!(classify(&down).0, 0);
        let mut bad = Error::new(ErrorType::InvalidHTTPHeader);
        bad.as_down();
        assert_eq!(classify(&bad).0, 400);
        assert_eq!(classify(&Error::new(ErrorType::HTTPStatus(502))).0, 502);
    }
}
