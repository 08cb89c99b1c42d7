//! One pass over a request's header lines, for the checks and the later phases.
//!
//! Each `HeaderMap` lookup hashes a name and probes the map; the checks and the forwarding
//! rules would ask about a dozen names per request, most of them absent. Walking the few
//! lines a request has once, and noting what is there, lets every later step skip what
//! the request does not carry.

use http::{HeaderMap, HeaderValue};

use super::headers::is_hop_by_hop;
use crate::edge::auth::IDENTITY_HEADERS;

/// What a request's header lines hold, as far as the gateway's rules care.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadFacts<'a> {
    /// `Host` lines, and the first one's value.
    pub hosts: usize,
    pub host: Option<&'a HeaderValue>,
    /// `Content-Length` lines, and the first one's value.
    pub content_lengths: usize,
    pub content_length: Option<&'a HeaderValue>,
    /// A `Transfer-Encoding` line.
    pub transfer_encoding: bool,
    /// The first `Expect` line.
    pub expect: Option<&'a HeaderValue>,
    /// An `Upgrade` line (a WebSocket upgrade needs one).
    pub upgrade: bool,
    /// A line the gateway removes before forwarding: a hop-by-hop header (`Connection`,
    /// which may nominate others, among them) or `Expect`.
    pub hop_by_hop: bool,
    /// An `X-Forwarded-For` line: the chain the gateway extends.
    pub forwarded_for: bool,
    /// One of the identity headers only the gateway may set ([`IDENTITY_HEADERS`]).
    pub identity: bool,
    /// A header name with an underscore (`X_User_ID`): dropped before forwarding, as
    /// nginx does, since CGI-style frameworks read `_` and `-` alike.
    pub underscore: bool,
    /// The first `Origin` line: a browser's cross-origin request.
    pub origin: Option<&'a HeaderValue>,
    /// `Access-Control-Request-Method`: with `OPTIONS`, a CORS preflight.
    pub preflight_method: bool,
    /// The first `Access-Control-Request-Headers` line.
    pub preflight_headers: Option<&'a HeaderValue>,
    /// The first `traceparent` line (W3C Trace Context).
    pub traceparent: Option<&'a HeaderValue>,
    /// A `tracestate` line.
    pub tracestate: bool,
}

impl<'a> HeadFacts<'a> {
    pub fn scan(headers: &'a HeaderMap) -> Self {
        let mut facts = HeadFacts::default();
        for (name, value) in headers {
            match name.as_str() {
                "host" => {
                    facts.hosts += 1;
                    facts.host.get_or_insert(value);
                }
                "content-length" => {
                    facts.content_lengths += 1;
                    facts.content_length.get_or_insert(value);
                }
                "transfer-encoding" => facts.transfer_encoding = true,
                "expect" => {
                    facts.expect.get_or_insert(value);
                    facts.hop_by_hop = true;
                }
                "x-forwarded-for" => facts.forwarded_for = true,
                "origin" => {
                    facts.origin.get_or_insert(value);
                }
                "access-control-request-method" => facts.preflight_method = true,
                "traceparent" => {
                    facts.traceparent.get_or_insert(value);
                }
                "tracestate" => facts.tracestate = true,
                "access-control-request-headers" => {
                    facts.preflight_headers.get_or_insert(value);
                }
                n if IDENTITY_HEADERS.contains(&n) => facts.identity = true,
                _ if is_hop_by_hop(name) => {
                    facts.upgrade |= name == http::header::UPGRADE;
                    facts.hop_by_hop = true;
                }
                n if n.as_bytes().contains(&b'_') => facts.underscore = true,
                _ => {}
            }
        }
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_plain_request_has_nothing_to_strip() {
        let h = map(&[("host", "gw"), ("accept", "*/*"), ("content-length", "3")]);
        let f = HeadFacts::scan(&h);
        assert_eq!((f.hosts, f.content_lengths), (1, 1));
        assert_eq!(f.host.map(HeaderValue::as_bytes), Some(&b"gw"[..]));
        assert!(!f.hop_by_hop && !f.upgrade && !f.forwarded_for && !f.transfer_encoding);
        assert!(f.expect.is_none());
    }

    #[test]
    fn counts_repeated_lines_and_keeps_the_first_value() {
        let h = map(&[
            ("host", "a"),
            ("host", "b"),
            ("content-length", "1"),
            ("content-length", "2"),
        ]);
        let f = HeadFacts::scan(&h);
        assert_eq!((f.hosts, f.content_lengths), (2, 2));
        assert_eq!(f.host.map(HeaderValue::as_bytes), Some(&b"a"[..]));
        assert_eq!(f.content_length.map(HeaderValue::as_bytes), Some(&b"1"[..]));
    }

    #[test]
    fn notes_what_later_phases_act_on() {
        for (line, hop, upgrade) in [
            (("connection", "close"), true, false),
            (("keep-alive", "5"), true, false),
            (("te", "trailers"), true, false),
            (("upgrade", "websocket"), true, true),
            (("proxy-authorization", "x"), true, false),
            (("expect", "100-continue"), true, false),
            (("x-forwarded-for", "10.0.0.1"), false, false),
            (("transfer-encoding", "chunked"), false, false),
        ] {
            let h = map(&[line]);
            let f = HeadFacts::scan(&h);
            assert_eq!((f.hop_by_hop, f.upgrade), (hop, upgrade), "{line:?}");
        }
        let h = map(&[("x-forwarded-for", "1.2.3.4")]);
        assert!(HeadFacts::scan(&h).forwarded_for);
        let h = map(&[("transfer-encoding", "chunked")]);
        assert!(HeadFacts::scan(&h).transfer_encoding);
        let h = map(&[("expect", "100-continue")]);
        let f = HeadFacts::scan(&h);
        assert_eq!(
            f.expect.map(HeaderValue::as_bytes),
            Some(&b"100-continue"[..])
        );
        for name in IDENTITY_HEADERS {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("spoofed"));
            assert!(HeadFacts::scan(&h).identity, "{name}");
        }
        assert!(!HeadFacts::scan(&map(&[("x-user-agent", "x")])).identity);
        let h = map(&[("x_user_id", "spoof")]);
        let f = HeadFacts::scan(&h);
        assert!(f.underscore && !f.identity);
        assert!(!HeadFacts::scan(&map(&[("x-user-agent", "x")])).underscore);
        let h = map(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-a"),
        ]);
        let f = HeadFacts::scan(&h);
        assert_eq!(
            f.origin.map(HeaderValue::as_bytes),
            Some(&b"https://a.example"[..])
        );
        assert!(f.preflight_method);
        assert_eq!(
            f.preflight_headers.map(HeaderValue::as_bytes),
            Some(&b"x-a"[..])
        );
    }
}
