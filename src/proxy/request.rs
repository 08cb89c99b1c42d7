//! A request head, from the client's bytes to the head the upstream receives: parse,
//! refuse what is ambiguous or unsafe, route, rewrite. Pure and synchronous, so every rule
//! here is unit-tested without a socket.

// A refusal carries its request id inline (up to 128 bytes) and is returned once per
// request: boxing it would put an allocation on the path it exists to keep cheap.
#![allow(clippy::result_large_err)]

use std::ops::Range;

use super::headers::{self, ClientIp, Name, line};
use super::request_id::{self, RequestId};
use crate::router::{RouteTable, check_path};

/// Most header lines accepted in a request.
pub const MAX_HEADERS: usize = 100;

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A request ready to go upstream; its new head has been written to the output buffer.
#[derive(Debug)]
pub struct Request {
    /// Bytes of the client's head, including the blank line.
    pub head_len: usize,
    /// Where the method and path are in the client's bytes (for the access log).
    pub method: Range<usize>,
    pub path: Range<usize>,
    pub is_head: bool,
    /// GET, HEAD, OPTIONS, PUT, DELETE (RFC 9110 §9.2.2): safe to send again when a pooled
    /// connection turns out to be closed after the request went out.
    pub idempotent: bool,
    pub route: usize,
    pub framing: Framing,
    /// The client allows the connection to be reused after the response.
    pub keep_alive: bool,
    pub http10: bool,
    /// A protocol upgrade (WebSocket) was asked for.
    pub upgrade: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    pub request_id: RequestId,
}

/// A request the gateway answers itself.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
    pub request_id: RequestId,
    pub method: Range<usize>,
    pub path: Range<usize>,
    /// Bytes of the head (0 when it could not be parsed).
    pub head_len: usize,
    /// Nothing of the request is left unread, so the connection can serve the next one.
    pub can_continue: bool,
}

impl Refusal {
    /// A refusal of bytes that are not a request head the gateway could read (malformed,
    /// too large, too slow): nothing is known of the request, and the connection ends.
    pub fn unparsed(status: u16, message: &'static str) -> Self {
        Refusal {
            status,
            message,
            request_id: request_id::accept_or_generate(None),
            method: 0..0,
            path: 0..0,
            head_len: 0,
            can_continue: false,
        }
    }
}

/// Not a whole head yet: read more, unless the buffer is already at its limit.
pub struct Incomplete;

/// Parse the head at the start of `buf`; on success the upstream's head is in `out`.
pub fn prepare(
    buf: &[u8],
    routes: &RouteTable,
    client_ip: Option<&ClientIp>,
    out: &mut Vec<u8>,
) -> Result<Result<Request, Refusal>, Incomplete> {
    // Left uninitialised: httparse writes the lines it finds (4 KiB of zeroing saved).
    let mut storage = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut storage,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(Incomplete),
        Err(e) => {
            let (status, message) = match e {
                httparse::Error::TooManyHeaders => (431, "too many request headers"),
                httparse::Error::Version => (505, "only HTTP/1.0 and HTTP/1.1 are supported"),
                _ => (400, "malformed request"),
            };
            return Ok(Err(Refusal::unparsed(status, message)));
        }
    };
    Ok(Head::read(buf, &req, head_len).and_then(|head| head.forward(routes, client_ip, out)))
}

/// What the gateway learns from the client's headers, before it writes anything.
struct Head<'b> {
    buf: &'b [u8],
    head_len: usize,
    method: &'b str,
    path: &'b str,
    query: Option<&'b str>,
    http10: bool,
    headers: &'b [httparse::Header<'b>],
    /// `names[i]` is the class of `headers[i]`, worked out once.
    names: [Name; MAX_HEADERS],
    host: Option<&'b [u8]>,
    framing: Framing,
    keep_alive: bool,
    upgrade: Option<&'b [u8]>,
    /// `Connection` names other headers as hop-by-hop.
    nominates: bool,
    expect_continue: bool,
    request_id: RequestId,
}

impl<'b> Head<'b> {
    fn read(
        buf: &'b [u8],
        req: &'b httparse::Request<'b, 'b>,
        head_len: usize,
    ) -> Result<Self, Refusal> {
        let method = req.method.unwrap_or("");
        let target = req.path.unwrap_or("");
        let http10 = req.version == Some(0);

        let mut host = None;
        let mut hosts = 0;
        let mut content_length: Option<&[u8]> = None;
        let mut lengths_differ = false;
        let mut transfer_encoding = false;
        let mut codings = 0;
        let mut chunked = false;
        let mut close = false;
        let mut keep_alive_token = false;
        let mut upgrade_token = false;
        let mut upgrade = None;
        let mut expect = None;
        let mut incoming_id = None;
        let mut nominates = false;
        let mut names = [Name::Other; MAX_HEADERS];
        for (h, class) in req.headers.iter().zip(names.iter_mut()) {
            *class = Name::of(h.name);
            match *class {
                Name::Host => {
                    hosts += 1;
                    host = Some(h.value);
                }
                Name::ContentLength => {
                    let v = h.value.trim_ascii();
                    lengths_differ |= content_length.is_some_and(|c| c != v);
                    content_length = Some(v);
                }
                Name::TransferEncoding => {
                    // All lines together must name exactly one coding, "chunked": anything
                    // else is a body whose end the gateway would have to guess.
                    for coding in headers::tokens(h.value) {
                        codings += 1;
                        chunked = coding.eq_ignore_ascii_case(b"chunked");
                    }
                    transfer_encoding = true;
                }
                Name::Connection => {
                    for t in headers::tokens(h.value) {
                        close |= t.eq_ignore_ascii_case(b"close");
                        keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
                        upgrade_token |= t.eq_ignore_ascii_case(b"upgrade");
                    }
                    nominates |= headers::nominates_others(&[h.value]);
                }
                Name::Upgrade => upgrade = Some(h.value),
                Name::Expect => expect = Some(h.value),
                Name::XRequestId if incoming_id.is_none() => incoming_id = Some(h.value),
                _ => {}
            }
        }

        let request_id = request_id::accept_or_generate(incoming_id);
        let method_range = range_of(buf, method.as_bytes());
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        // Absolute form (`GET http://host/path`) is answered like origin form.
        let path = match path
            .strip_prefix("http://")
            .or_else(|| path.strip_prefix("https://"))
        {
            Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
            None => path,
        };
        let refuse = |status, message| Refusal {
            status,
            message,
            request_id,
            method: method_range.clone(),
            path: range_of(buf, path.as_bytes()),
            head_len,
            can_continue: false,
        };

        let framing = match (transfer_encoding, content_length) {
            (true, Some(_)) => {
                return Err(refuse(
                    400,
                    "both Transfer-Encoding and Content-Length are set",
                ));
            }
            (true, None) if http10 => {
                return Err(refuse(400, "Transfer-Encoding is not allowed in HTTP/1.0"));
            }
            (true, None) if codings != 1 || !chunked => {
                return Err(refuse(400, "the only transfer coding accepted is chunked"));
            }
            (true, None) => Framing::Chunked,
            (false, Some(_)) if lengths_differ => {
                return Err(refuse(400, "conflicting Content-Length values"));
            }
            (false, Some(v)) => match parse_length(v) {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => return Err(refuse(400, "invalid Content-Length")),
            },
            (false, None) => Framing::Empty,
        };
        let refuse = |status, message| Refusal {
            can_continue: framing == Framing::Empty,
            ..refuse(status, message)
        };

        if hosts > 1 {
            return Err(refuse(400, "more than one Host header"));
        }
        if hosts == 0 && !http10 {
            return Err(refuse(400, "missing Host header"));
        }
        if method == "CONNECT" || method == "TRACE" {
            return Err(refuse(405, "method not allowed"));
        }
        if !target.starts_with('/') && path.len() == target.len() {
            return Err(refuse(400, "unsupported request target"));
        }
        if target.contains('#') {
            return Err(refuse(400, "a request target must not contain '#'"));
        }
        if let Err(e) = check_path(path) {
            return Err(refuse(400, e.message()));
        }
        let expect_continue = match expect {
            None => false,
            Some(v) if v.trim_ascii().eq_ignore_ascii_case(b"100-continue") => true,
            Some(_) => return Err(refuse(417, "only Expect: 100-continue is supported")),
        };
        // Only WebSocket is tunnelled. Any other protocol (notably `h2c`) would hand the
        // client a raw connection to the service, past every check here for the requests
        // that follow on it ("h2c smuggling"); such a request goes on as a plain one.
        let upgrade = upgrade.filter(|protocol| {
            upgrade_token && !http10 && protocol.trim_ascii().eq_ignore_ascii_case(b"websocket")
        });

        Ok(Head {
            buf,
            head_len,
            method,
            path,
            query,
            http10,
            headers: req.headers,
            names,
            host,
            framing,
            keep_alive: !close && (!http10 || keep_alive_token),
            upgrade,
            nominates,
            expect_continue: expect_continue && framing != Framing::Empty,
            request_id,
        })
    }

    /// Route, then write the upstream's head into `out`.
    fn forward(
        self,
        routes: &RouteTable,
        client_ip: Option<&ClientIp>,
        out: &mut Vec<u8>,
    ) -> Result<Request, Refusal> {
        let method = range_of(self.buf, self.method.as_bytes());
        let path = range_of(self.buf, self.path.as_bytes());
        let Some(route) = routes.lookup(self.path) else {
            return Err(Refusal {
                status: 404,
                message: "no route for this path",
                request_id: self.request_id,
                method,
                path,
                head_len: self.head_len,
                can_continue: self.framing == Framing::Empty,
            });
        };

        out.clear();
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(route.upstream_path(self.path).as_bytes());
        if let Some(q) = self.query {
            out.push(b'?');
            out.extend_from_slice(q.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");

        let lines = || self.headers.iter().zip(self.names);
        let connection: Vec<&[u8]> = if self.nominates {
            lines()
                .filter(|(_, name)| *name == Name::Connection)
                .map(|(h, _)| h.value)
                .collect()
        } else {
            Vec::new()
        };
        for (h, name) in lines() {
            // `Host` is never dropped, whatever `Connection` nominates.
            let hop = name.is_hop_by_hop()
                || name.is_set_upstream()
                || (self.nominates
                    && name != Name::Host
                    && headers::is_nominated(&connection, h.name));
            if !hop {
                line(out, h.name.as_bytes(), h.value);
            }
        }
        if self.host.is_none() {
            // An HTTP/1.0 client may omit it; HTTP/1.1 upstreams require one.
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(route.host.as_bytes());
            let _ = std::io::Write::write_fmt(out, format_args!(":{}\r\n", route.port));
        }
        match self.framing {
            Framing::Length(n) => headers::content_length(out, n),
            Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Framing::Empty | Framing::UntilClose => {}
        }
        if let Some(protocol) = self.upgrade {
            out.extend_from_slice(b"Connection: upgrade\r\n");
            line(out, b"Upgrade", protocol);
        }
        let forwarded_for = lines()
            .filter(|(_, name)| *name == Name::XForwardedFor)
            .map(|(h, _)| h.value);
        headers::write_forwarding(out, forwarded_for, client_ip, self.host, &self.request_id);
        out.extend_from_slice(b"\r\n");

        Ok(Request {
            head_len: self.head_len,
            method,
            path,
            is_head: self.method == "HEAD",
            idempotent: matches!(self.method, "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"),
            route: route.index,
            framing: self.framing,
            keep_alive: self.keep_alive,
            http10: self.http10,
            upgrade: self.upgrade.is_some(),
            expect_continue: self.expect_continue,
            request_id: self.request_id,
        })
    }
}

/// A `Content-Length` value: digits only, no sign, no list, no overflow.
pub fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Where `part` (a slice of `buf`) sits in `buf`.
fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if part.is_empty() || start > buf.len() {
        return 0..0;
    }
    start..start + part.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Service;
    use std::time::Duration;

    fn routes() -> RouteTable {
        let service = |name: &str, prefix: &str, api_version: Option<u32>| Service {
            name: name.into(),
            host: "core".into(),
            port: 3000,
            prefix: prefix.into(),
            strip_prefix: true,
            skip_prefix: vec![],
            api_version,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
        };
        RouteTable::new(vec![
            service("core-service", "/core", Some(1)),
            service("auth-service", "/auth", None),
        ])
    }

    fn run(raw: &str) -> Result<(Request, String), Refusal> {
        let mut out = Vec::new();
        let ip = ClientIp::new("10.1.2.3".parse().unwrap());
        match prepare(raw.as_bytes(), &routes(), Some(&ip), &mut out) {
            Ok(r) => r.map(|req| (req, String::from_utf8(out).unwrap())),
            Err(Incomplete) => panic!("incomplete: {raw:?}"),
        }
    }

    fn refusal(raw: &str) -> (u16, &'static str) {
        match run(raw) {
            Ok((_, head)) => panic!("accepted {raw:?} as {head:?}"),
            Err(r) => (r.status, r.message),
        }
    }

    #[test]
    fn rewrites_path_keeps_query_and_sets_forwarding() {
        let raw = "GET /core/items?a=%20b&c HTTP/1.1\r\nHost: gw\r\nX-Request-ID: abc\r\n\
                   X-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n";
        let (req, head) = run(raw).unwrap();
        assert_eq!(
            head,
            "GET /api/v1/items?a=%20b&c HTTP/1.1\r\nHost: gw\r\nAccept: */*\r\n\
             X-Request-ID: abc\r\nX-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: gw\r\n\r\n"
        );
        assert_eq!(req.head_len, raw.len());
        assert_eq!(&raw[req.method.clone()], "GET");
        assert_eq!(&raw[req.path.clone()], "/core/items");
        assert_eq!(req.framing, Framing::Empty);
        assert!(req.keep_alive && !req.upgrade && !req.http10);
    }

    #[test]
    fn drops_hop_by_hop_and_nominated_headers_but_never_host() {
        let raw = "POST /auth/x HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, X-Secret, Host\r\n\
                   X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: b\r\n\
                   Content-Length: 3\r\nX-Kept: 1\r\n\r\n";
        let (req, head) = run(raw).unwrap();
        assert!(
            head.starts_with("POST /x HTTP/1.1\r\nHost: gw\r\nX-Kept: 1\r\nContent-Length: 3\r\n"),
            "{head}"
        );
        for gone in [
            "X-Secret",
            "Keep-Alive",
            "TE:",
            "Proxy-Authorization",
            "Connection",
        ] {
            assert!(!head.contains(gone), "{gone} in {head}");
        }
        assert_eq!(req.framing, Framing::Length(3));
    }

    #[test]
    fn upgrade_is_forwarded_with_its_connection_token() {
        let raw = "GET /auth/socket HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let (req, head) = run(raw).unwrap();
        assert!(req.upgrade);
        assert!(
            head.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{head}"
        );
        // Without the Connection token it is an ordinary request.
        let raw = "GET /auth/socket HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n\r\n";
        let (req, head) = run(raw).unwrap();
        assert!(!req.upgrade && !head.contains("Upgrade"));
        // Other protocols are not tunnelled (h2c smuggling).
        let raw = "GET /auth/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                   Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
        let (req, head) = run(raw).unwrap();
        assert!(!req.upgrade, "{head}");
        assert!(
            !head.contains("h2c") && !head.contains("HTTP2-Settings"),
            "{head}"
        );
    }

    #[test]
    fn http10_defaults_to_close_and_gets_a_host() {
        let (req, head) = run("GET /auth/x HTTP/1.0\r\n\r\n").unwrap();
        assert!(req.http10 && !req.keep_alive);
        assert!(head.contains("\r\nHost: core:3000\r\n"), "{head}");
        let (req, _) = run("GET /auth/x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(req.keep_alive);
        let (req, _) = run("GET /auth/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!req.keep_alive);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        for raw in [
            "POST /core/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /core/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "POST /core/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\n",
            "POST /core/x HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n",
            "POST /core/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST /core/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST /core/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST /core/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let (status, _) = refusal(raw);
            assert_eq!(status, 400, "{raw:?}");
        }
        let (req, _) = run(
            "POST /core/x HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
        )
        .unwrap();
        assert_eq!(req.framing, Framing::Length(7));
        let (req, head) =
            run("POST /core/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert_eq!(req.framing, Framing::Chunked);
        assert!(head.contains("Transfer-Encoding: chunked\r\n"));
    }

    #[test]
    fn refuses_unsafe_heads() {
        assert_eq!(
            refusal("GET /core/x HTTP/1.1\r\n\r\n"),
            (400, "missing Host header")
        );
        assert_eq!(
            refusal("GET /core/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").0,
            400
        );
        assert_eq!(
            refusal("GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n"),
            (404, "no route for this path")
        );
        assert_eq!(
            refusal("GET /core/../auth HTTP/1.1\r\nHost: a\r\n\r\n").0,
            400
        );
        assert_eq!(refusal("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n").0, 405);
        assert_eq!(refusal("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").0, 400);
        assert_eq!(refusal("GET /core/x#f HTTP/1.1\r\nHost: a\r\n\r\n").0, 400);
        assert_eq!(
            refusal(
                "PUT /core/x HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n"
            )
            .0,
            417
        );
        assert_eq!(
            refusal("GET /core/x HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n").0,
            400
        );
        assert_eq!(
            refusal("GET /core/x HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n").0,
            400
        );
        assert_eq!(refusal("GET /core/x HTTP/2.0\r\nHost: a\r\n\r\n").0, 505);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            refusal(&format!("GET /core/x HTTP/1.1\r\nHost: a\r\n{many}\r\n")).0,
            431
        );
    }

    #[test]
    fn refusals_say_whether_the_connection_can_go_on() {
        let r = run("GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err();
        assert!(r.can_continue);
        let r = run("POST /nowhere HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap_err();
        assert!(!r.can_continue);
    }

    #[test]
    fn absolute_form_goes_upstream_in_origin_form() {
        let (_, head) =
            run("GET http://gw.example/auth/x?q=1 HTTP/1.1\r\nHost: gw.example\r\n\r\n").unwrap();
        assert!(head.starts_with("GET /x?q=1 HTTP/1.1\r\n"), "{head}");
    }

    #[test]
    fn partial_heads_ask_for_more() {
        let mut out = Vec::new();
        let r = prepare(
            b"GET /core/x HTTP/1.1\r\nHost: a\r\n",
            &routes(),
            None,
            &mut out,
        );
        assert!(matches!(r, Err(Incomplete)));
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"123"), Some(123));
        for bad in [&b""[..], b"-1", b"1 2", b"0x10", b"9999999999999999999"] {
            assert_eq!(parse_length(bad), None);
        }
    }
}
