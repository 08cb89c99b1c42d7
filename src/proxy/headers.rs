//! Header rules: which headers stay on their hop, which the gateway sets itself towards the
//! service, and which every response to the client carries.
//!
//! Framing headers (`Content-Length`, `Transfer-Encoding`) are Pingora's: it frames each
//! hop's body from them, so they are never removed here, whatever `Connection` nominates.

use std::io::Write;
use std::net::IpAddr;

use http::HeaderValue;
use http::header::{self, HeaderName};
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};

use super::request_id::RequestId;
use crate::edge::auth::{IDENTITY_HEADERS, Identity};

/// The names the gateway sets on every request or response, as `HeaderName`s made once:
/// inserted by text, each insert parsed and allocated the name again (measured: ~1,800
/// user-space instructions per request fewer this way, `bench/results/series-*.md`); with
/// vendored pingora-http patch 0041 a `HeaderName` is not parsed again inside the insert
/// either (a further ~2,800).
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The identity headers as names made once (patch 0041: not parsed again on insert);
/// the same names as [`IDENTITY_HEADERS`].
static X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
static X_USER_ROLE: HeaderName = HeaderName::from_static("x-user-role");
static X_PROFILE_ID: HeaderName = HeaderName::from_static("x-profile-id");
static X_USER_SCOPES: HeaderName = HeaderName::from_static("x-user-scopes");

/// A header that describes one connection (RFC 9110 §7.6.1), or the de-facto
/// `Proxy-Connection`, the proxy credentials (meant for the gateway, not a service) and
/// `HTTP2-Settings` (only meaningful with an `h2c` upgrade, which is never tunnelled).
/// Compared as `HeaderName`s, not as text: a standard name is an enum, so the usual header
/// costs a few integer comparisons (spelling each name out cost more on every message).
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// A `static`, not a `const`: a const array would be built and dropped on every call.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("http2-settings"),
];

/// Never removed because `Connection` names them: the message's framing and its `Host`.
fn is_protected(name: &[u8]) -> bool {
    [&b"host"[..], b"content-length", b"transfer-encoding"]
        .iter()
        .any(|p| name.eq_ignore_ascii_case(p))
}

/// The hop-by-hop headers a message carries: those of [`is_hop_by_hop`] that are present
/// (but not `keep` ones) and those its `Connection` values nominate. One pass over the
/// message's lines, no lookup by name unless `Connection` nominates one; when there is
/// nothing to remove (a response whose only such line is a kept `Connection`: the usual
/// case), nothing is allocated.
fn hop_by_hop(headers: &http::HeaderMap, keep: &[HeaderName]) -> Vec<HeaderName> {
    let mut found: Vec<HeaderName> = Vec::new();
    for (name, value) in headers {
        if !is_hop_by_hop(name) {
            continue;
        }
        if *name == header::CONNECTION {
            let nominated = tokens(value.as_bytes())
                .filter(|t| !is_protected(t) && !is_connection_option(t))
                .filter_map(|t| HeaderName::from_bytes(t).ok())
                .filter(|n| headers.contains_key(n) && !keep.contains(n));
            found.extend(nominated);
        }
        if !keep.contains(name) && !found.contains(name) {
            found.push(name.clone());
        }
    }
    found
}

/// The comma-separated tokens of a list header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// `Connection` tokens that are options, not header names to remove: `close`, and
/// `keep-alive`/`upgrade`, whose headers are hop-by-hop by name already.
fn is_connection_option(token: &[u8]) -> bool {
    [&b"close"[..], b"keep-alive", b"upgrade"]
        .iter()
        .any(|o| token.eq_ignore_ascii_case(o))
}

/// A WebSocket upgrade the gateway will tunnel: `Upgrade: websocket` with the `upgrade`
/// token in `Connection`, over HTTP/1.1. Any other protocol (notably `h2c`) would hand the
/// client a raw connection to the service past every check here ("h2c smuggling"), so
/// such a request goes on as a plain one.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    let has_token = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| tokens(v.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
    req.version == http::Version::HTTP_11
        && has_token
        && req
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
}

/// Remove the client's hop-by-hop headers and `Expect` (the gateway answers
/// `100-continue` itself). A WebSocket upgrade keeps `Upgrade` and gets a clean
/// `Connection: upgrade`.
pub fn strip_request_hop_by_hop(req: &mut RequestHeader, websocket: bool) -> Result<()> {
    let keep: &[HeaderName] = if websocket { &[header::UPGRADE] } else { &[] };
    for name in hop_by_hop(&req.headers, keep) {
        req.remove_header(&name);
    }
    if req.headers.contains_key(header::EXPECT) {
        req.remove_header(&header::EXPECT);
    }
    if websocket {
        req.insert_header(header::CONNECTION, "upgrade")?;
    }
    Ok(())
}

/// The forwarding headers for the service. The gateway is the edge, so
/// `X-Forwarded-Proto` and `X-Forwarded-Host` describe the client's request and replace
/// anything it claimed; `X-Forwarded-For` keeps the incoming chain (all its lines, in
/// order) and appends the client's address. `Host` is passed through as the client sent
/// it, so services that build absolute URLs (OpenID discovery, Swagger) point back at the
/// gateway.
///
/// `incoming_chain`: the request carries `X-Forwarded-For` (see [`super::head`]); when it
/// does not, the header is not looked up. `tls`: it came over the TLS listener.
pub fn set_forwarding(
    req: &mut RequestHeader,
    client_ip: Option<IpAddr>,
    request_id: &RequestId,
    incoming_chain: bool,
    tls: bool,
) -> Result<()> {
    req.insert_header(&X_REQUEST_ID, request_id.header_value())?;
    // Room for the client's address (the longest IPv6 text is 39 bytes) without growing.
    let mut chain: Vec<u8> = Vec::with_capacity(40);
    let incoming = incoming_chain.then(|| req.headers.get_all(&X_FORWARDED_FOR));
    for v in incoming.into_iter().flatten() {
        let v = v.as_bytes().trim_ascii();
        if !v.is_empty() {
            if !chain.is_empty() {
                chain.extend_from_slice(b", ");
            }
            chain.extend_from_slice(v);
        }
    }
    if let Some(ip) = client_ip {
        if !chain.is_empty() {
            chain.extend_from_slice(b", ");
        }
        write_ip(&mut chain, ip);
    }
    if chain.is_empty() {
        req.remove_header(&X_FORWARDED_FOR);
    } else {
        req.insert_header(&X_FORWARDED_FOR, chain)?;
    }
    let proto = if tls { "https" } else { "http" };
    req.insert_header(&X_FORWARDED_PROTO, HeaderValue::from_static(proto))?;
    match req.headers.get(header::HOST).cloned() {
        Some(host) => req.insert_header(&X_FORWARDED_HOST, host)?,
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    Ok(())
}

/// A client address as `X-Forwarded-For` carries it: an IPv4 client on a dual-stack
/// listener as plain IPv4. IPv4, the common case, is written octet by octet: this runs for
/// every request, and the formatting machinery cost ~400 instructions of it.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                out.extend_from_slice(digits.format(octet).as_bytes());
            }
        }
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A response head's size as it travels: status line and `name: value\r\n` lines.
pub fn head_size(resp: &ResponseHeader) -> usize {
    resp.headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + 20
}

/// Remove identity headers a client sent: only the gateway sets them, from a verified token.
pub fn strip_identity(req: &mut RequestHeader) {
    for name in IDENTITY_HEADERS {
        req.remove_header(name);
    }
}

/// Remove header lines whose name has an underscore: every one by default (nginx's
/// `underscores_in_headers off`), or with `PROXY_ALLOW_UNDERSCORE_HEADERS` only those that
/// spell an identity header with `_` for `-` (`X_User_ID`): frameworks that map the two
/// alike (CGI, Rack, WSGI) would read them as the gateway's identity.
pub fn strip_underscored(req: &mut RequestHeader, allow: bool) {
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .filter(|name| !allow || spells_identity(name.as_str()))
        .cloned()
        .collect();
    for name in doomed {
        req.remove_header(&name);
    }
}

/// `name` (lowercase, as `HeaderName`s are) is an identity header with `_` for `-`.
fn spells_identity(name: &str) -> bool {
    IDENTITY_HEADERS.iter().any(|identity| {
        identity.len() == name.len()
            && identity
                .bytes()
                .zip(name.bytes())
                .all(|(i, n)| i == n || (i == b'-' && n == b'_'))
    })
}

/// The verified identity, as the service receives it.
pub fn set_identity(req: &mut RequestHeader, identity: &Identity) -> Result<()> {
    req.insert_header(&X_USER_ID, identity.user_id.as_str())?;
    let optional = [
        (&X_USER_ROLE, &identity.role),
        (&X_PROFILE_ID, &identity.profile_id),
        (&X_USER_SCOPES, &identity.scopes),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            req.insert_header(name, value.as_str())?;
        }
    }
    Ok(())
}

/// Remove the service's hop-by-hop headers from its response. Its `Connection` stays:
/// Pingora replaces it with the client connection's own when it writes the head (so the
/// usual `Connection: keep-alive` costs no removal); what it nominates goes. Other `1xx`
/// heads are written as they are, so theirs goes too. A `101` keeps `Upgrade`.
pub fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    let keep: &[HeaderName] = if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        &[header::UPGRADE, header::CONNECTION]
    } else if resp.status.is_informational() {
        &[]
    } else {
        &[header::CONNECTION]
    };
    for name in hop_by_hop(&resp.headers, keep) {
        resp.remove_header(&name);
    }
}

/// The headers every response to the client carries, the gateway's own errors included:
/// the request id and the security headers, replacing whatever the service sent.
pub fn set_client_headers(resp: &mut ResponseHeader, request_id: &RequestId) -> Result<()> {
    resp.insert_header(&X_REQUEST_ID, request_id.header_value())?;
    // Static values: no copy per response.
    resp.insert_header(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"))?;
    resp.insert_header(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request_id::accept_or_generate;

    fn request(lines: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        for (n, v) in lines {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    fn values(req: &http::HeaderMap, name: &str) -> Vec<String> {
        req.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_identity_names_made_once_are_the_stripped_ones() {
        let made: Vec<&str> = [&X_USER_ID, &X_USER_ROLE, &X_PROFILE_ID, &X_USER_SCOPES]
            .iter()
            .map(|n| n.as_str())
            .collect();
        assert_eq!(made, IDENTITY_HEADERS);
    }

    #[test]
    fn underscored_names_are_dropped_and_identity_in_any_spelling_always() {
        let lines = [
            ("X_User_ID", "spoof"),
            ("x_user_role", "admin"),
            ("X_Profile_Id", "p"),
            ("x-user_scopes", "all"),
            ("My_Header", "kept only when allowed"),
            ("Accept", "*/*"),
        ];
        let names = |req: &RequestHeader| -> Vec<String> {
            let mut names: Vec<String> =
                req.headers.keys().map(|n| n.as_str().to_owned()).collect();
            names.sort();
            names
        };
        let mut req = request(&lines);
        strip_underscored(&mut req, false);
        assert_eq!(names(&req), ["accept"]);
        let mut req = request(&lines);
        strip_underscored(&mut req, true);
        assert_eq!(names(&req), ["accept", "my_header"]);
        assert!(!spells_identity("x_user_idx") && !spells_identity("x_user"));
    }

    #[test]
    fn appends_client_to_forwarded_for_chain() {
        let id = accept_or_generate(Some(&http::HeaderValue::from_static("id-1")));
        let mut req = request(&[
            ("Host", "api.example.org"),
            ("X-Forwarded-For", " 10.0.0.1 "),
            ("X-Forwarded-For", ""),
            ("X-Forwarded-For", "10.0.0.2, 10.0.0.3"),
            ("X-Forwarded-Proto", "https"),
            ("X-Request-ID", "spoofed"),
        ]);
        set_forwarding(
            &mut req,
            Some("192.0.2.7".parse().unwrap()),
            &id,
            true,
            false,
        )
        .unwrap();
        let h = &req.headers;
        assert_eq!(
            values(h, "x-forwarded-for"),
            ["10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"]
        );
        assert_eq!(values(h, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(h, "x-forwarded-host"), ["api.example.org"]);
        assert_eq!(values(h, "x-request-id"), ["id-1"]);

        for (ip, shown) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("2001:db8::7", "2001:db8::7"),
        ] {
            let mut req = request(&[("X-Forwarded-Host", "spoofed")]);
            set_forwarding(&mut req, Some(ip.parse().unwrap()), &id, false, false).unwrap();
            assert_eq!(values(&req.headers, "x-forwarded-for"), [shown]);
            assert!(req.headers.get("x-forwarded-host").is_none());
        }
        // Over the TLS listener the proto is https, whatever the client claimed.
        let mut req = request(&[("X-Forwarded-Proto", "http")]);
        set_forwarding(&mut req, None, &id, false, true).unwrap();
        assert_eq!(values(&req.headers, "x-forwarded-proto"), ["https"]);
    }

    #[test]
    fn hop_by_hop_names() {
        for name in [
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "http2-settings",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["host", "upgrade-insecure-requests", "content-length", "tea"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn client_ip_text() {
        for (ip, want) in [
            ("0.0.0.0", "0.0.0.0"),
            ("192.168.10.255", "192.168.10.255"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("2001:db8::7", "2001:db8::7"),
            ("::1.2.3.4", "::102:304"),
        ] {
            let mut out = Vec::new();
            write_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), want, "{ip}");
        }
    }

    #[test]
    fn drops_hop_by_hop_and_nominated_headers_but_never_host_or_framing() {
        let mut req = request(&[
            ("Host", "gw"),
            (
                "Connection",
                "keep-alive, X-Secret, Host, Content-Length, Transfer-Encoding",
            ),
            ("X-Secret", "1"),
            ("Keep-Alive", "5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "b"),
            ("Expect", "100-continue"),
            ("Content-Length", "3"),
            ("X-Kept", "1"),
        ]);
        strip_request_hop_by_hop(&mut req, false).unwrap();
        let mut names: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-length", "host", "x-kept"]);
    }

    #[test]
    fn websocket_upgrade_keeps_its_tokens_and_h2c_does_not() {
        let ws = [
            ("Host", "gw"),
            ("Connection", "keep-alive, Upgrade"),
            ("Upgrade", "websocket"),
        ];
        let mut req = request(&ws);
        assert!(is_websocket_upgrade(&req));
        strip_request_hop_by_hop(&mut req, true).unwrap();
        assert_eq!(values(&req.headers, "connection"), ["upgrade"]);
        assert_eq!(values(&req.headers, "upgrade"), ["websocket"]);

        assert!(!is_websocket_upgrade(&request(&[("Upgrade", "websocket")])));
        let h2c = [
            ("Connection", "Upgrade, HTTP2-Settings"),
            ("Upgrade", "h2c"),
            ("HTTP2-Settings", "AAMAAABkAAQAAP__"),
        ];
        let mut req = request(&h2c);
        assert!(!is_websocket_upgrade(&req));
        strip_request_hop_by_hop(&mut req, false).unwrap();
        assert!(req.headers.is_empty(), "{:?}", req.headers);
    }

    #[test]
    fn response_loses_hop_by_hop_and_gets_client_headers() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (n, v) in [
            ("Connection", "X-Internal"),
            ("X-Internal", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "h2c"),
            ("X-Frame-Options", "ALLOW"),
            ("Content-Type", "text/plain"),
        ] {
            resp.append_header(n.to_string(), v).unwrap();
        }
        strip_response_hop_by_hop(&mut resp);
        set_client_headers(
            &mut resp,
            &accept_or_generate(Some(&http::HeaderValue::from_static("id-3"))),
        )
        .unwrap();
        let mut names: Vec<&str> = resp.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        // `Connection` is left for Pingora, which writes the client connection's own.
        assert_eq!(
            names,
            [
                "connection",
                "content-type",
                "x-content-type-options",
                "x-frame-options",
                "x-request-id",
            ]
        );
        assert_eq!(values(&resp.headers, "x-frame-options"), ["DENY"]);

        let mut early_hints = ResponseHeader::build(103, None).unwrap();
        early_hints.append_header("Connection", "close").unwrap();
        early_hints.append_header("Link", "</a.css>").unwrap();
        strip_response_hop_by_hop(&mut early_hints);
        let names: Vec<&str> = early_hints.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["link"]);

        let mut resp = ResponseHeader::build(101, None).unwrap();
        resp.append_header("Connection", "upgrade").unwrap();
        resp.append_header("Upgrade", "websocket").unwrap();
        strip_response_hop_by_hop(&mut resp);
        assert_eq!(resp.headers.len(), 2);
    }
}
