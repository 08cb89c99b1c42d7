//! Headers the gateway sets: forwarding information towards the upstream, and the request
//! id plus security headers on every response to the client (the gateway's own errors
//! included). Values that never change are `static` so the hot path allocates nothing for
//! them.

use std::net::IpAddr;

use http::header::{CONNECTION, HOST, HeaderName, HeaderValue};
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FRAME_OPTIONS: HeaderName = HeaderName::from_static("x-frame-options");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");

static HTTP: HeaderValue = HeaderValue::from_static("http");
static DENY: HeaderValue = HeaderValue::from_static("DENY");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// Headers for the upstream request. The gateway is the edge, so `X-Forwarded-Proto` and
/// `X-Forwarded-Host` describe the client's request and replace anything it claimed;
/// `X-Forwarded-For` keeps the incoming chain and appends the client's address. `Host` is
/// left as the client sent it, so services that build absolute URLs (OpenID discovery,
/// Swagger) point clients back at the gateway.
pub fn to_upstream(
    req: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    request_id: &HeaderValue,
) -> Result<()> {
    req.insert_header(X_REQUEST_ID.clone(), request_id.clone())?;
    if let Some(ip) = client_ip {
        let forwarded_for = forwarded_for(req, ip);
        req.insert_header(X_FORWARDED_FOR.clone(), forwarded_for)?;
    }
    req.insert_header(X_FORWARDED_PROTO.clone(), HTTP.clone())?;
    match req.headers.get(HOST).cloned() {
        Some(host) => req.insert_header(X_FORWARDED_HOST.clone(), host)?,
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    Ok(())
}

/// The incoming `X-Forwarded-For` values (all header lines, in order) with `ip` appended.
fn forwarded_for(req: &RequestHeader, ip: IpAddr) -> String {
    let ip = ip.to_canonical();
    let mut out = String::new();
    for v in req.headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(v) = v.to_str() {
            let v = v.trim();
            if !v.is_empty() {
                out.push_str(v);
                out.push_str(", ");
            }
        }
    }
    use std::fmt::Write;
    let _ = write!(out, "{ip}");
    out
}

/// Headers every response to the client carries, overriding the upstream's.
pub fn to_client(resp: &mut ResponseHeader, request_id: &HeaderValue) -> Result<()> {
    resp.insert_header(X_REQUEST_ID.clone(), request_id.clone())?;
    resp.insert_header(X_FRAME_OPTIONS.clone(), DENY.clone())?;
    resp.insert_header(X_CONTENT_TYPE_OPTIONS.clone(), NOSNIFF.clone())?;
    Ok(())
}

/// Drop the upstream's hop-by-hop headers from a response: `Keep-Alive`,
/// `Proxy-Connection`, and every header its `Connection` names. (Pingora does this for
/// requests, and writes its own `Connection` to the client.) A `101 Switching Protocols`
/// keeps its `Connection`/`Upgrade`: the client needs them to complete the handshake.
pub fn strip_hop_by_hop(resp: &mut ResponseHeader) {
    resp.remove_header(&KEEP_ALIVE);
    resp.remove_header(&PROXY_CONNECTION);
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let Some(connection) = resp.headers.get(CONNECTION) else {
        return;
    };
    let nominated: Vec<HeaderName> = connection
        .to_str()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in &nominated {
        resp.remove_header(name);
    }
    resp.remove_header(&CONNECTION);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        req
    }

    fn get<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
        req.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn appends_client_to_forwarded_for_chain() {
        let id = HeaderValue::from_static("id-1");
        let mut req = request(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2"),
        ]);
        to_upstream(&mut req, Some("192.0.2.7".parse().unwrap()), &id).unwrap();
        assert_eq!(
            get(&req, "x-forwarded-for"),
            Some("10.0.0.1, 10.0.0.2, 192.0.2.7")
        );
        assert_eq!(req.headers.get_all("x-forwarded-for").iter().count(), 1);

        let mut req = request(&[]);
        to_upstream(&mut req, Some("::ffff:127.0.0.1".parse().unwrap()), &id).unwrap();
        assert_eq!(get(&req, "x-forwarded-for"), Some("127.0.0.1"));
    }

    #[test]
    fn sets_proto_host_and_request_id_overriding_client_claims() {
        let id = HeaderValue::from_static("id-2");
        let mut req = request(&[
            ("host", "api.example.org"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-request-id", "other"),
        ]);
        to_upstream(&mut req, None, &id).unwrap();
        assert_eq!(get(&req, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&req, "x-forwarded-host"), Some("api.example.org"));
        assert_eq!(get(&req, "x-request-id"), Some("id-2"));
        assert_eq!(get(&req, "host"), Some("api.example.org"));
    }

    #[test]
    fn security_headers_override_upstream_values() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("X-Frame-Options", "SAMEORIGIN").unwrap();
        to_client(&mut resp, &HeaderValue::from_static("id-3")).unwrap();
        assert_eq!(resp.headers.get_all("x-frame-options").iter().count(), 1);
        assert_eq!(resp.headers["x-frame-options"], "DENY");
        assert_eq!(resp.headers["x-content-type-options"], "nosniff");
        assert_eq!(resp.headers["x-request-id"], "id-3");
    }

    #[test]
    fn strips_connection_nominated_response_headers() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("Connection", "X-Private, keep-alive")
            .unwrap();
        resp.append_header("X-Private", "1").unwrap();
        resp.append_header("Keep-Alive", "timeout=5").unwrap();
        resp.append_header("X-Kept", "1").unwrap();
        strip_hop_by_hop(&mut resp);
        assert!(resp.headers.get("x-private").is_none());
        assert!(resp.headers.get("keep-alive").is_none());
        assert!(resp.headers.get("connection").is_none());
        assert_eq!(resp.headers["x-kept"], "1");

        let mut upgrade = ResponseHeader::build(101, None).unwrap();
        upgrade.append_header("Connection", "Upgrade").unwrap();
        upgrade.append_header("Upgrade", "websocket").unwrap();
        strip_hop_by_hop(&mut upgrade);
        assert_eq!(upgrade.headers["connection"], "Upgrade");
        assert_eq!(upgrade.headers["upgrade"], "websocket");
    }
}
