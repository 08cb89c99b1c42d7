//! Requests the gateway refuses before routing, as pure functions of the parsed head and
//! its raw bytes.
//!
//! Pingora has parsed the head already; these rules are the gateway's stricter view of it.
//! Some need the raw bytes: when a head carries both `Transfer-Encoding` and
//! `Content-Length`, Pingora deletes `Content-Length` and forwards the request (RFC 9112
//! §6.1 allows that), but a gateway in front of services whose parsers may disagree refuses
//! the ambiguity outright.

use std::borrow::Cow;

use http::{Method, Version};
use pingora_http::RequestHeader;

use super::head::HeadFacts;
use super::headers::tokens;
use crate::router::check_path;

/// Longest request line accepted (nginx's default `large_client_header_buffers`): 414
/// beyond. A Phoenix token in the query is about 1 KiB.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Largest request head accepted: 431 beyond.
pub const MAX_HEAD: usize = 32 * 1024;
/// Most header lines accepted in a request: 431 beyond. (Pingora itself refuses more than
/// 256 with its bare 400 before any of this runs.)
pub const MAX_HEADERS: usize = 100;

/// A request the gateway answers itself, with the status and the message of its JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: &'static str,
    /// The connection must end after the answer: what follows the head cannot be trusted
    /// to be the next request.
    pub close: bool,
}

const fn refuse(status: u16, message: &'static str) -> Refusal {
    Refusal {
        status,
        message,
        close: false,
    }
}

/// What the checks learn about the request on the way, for the later phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked<'a> {
    /// The path the router sees: the target's path without query, in origin form even when
    /// the client sent absolute form (`GET http://host/path`), with `//` merged.
    pub path: Cow<'a, str>,
    /// The query as sent, without its `?`, byte for byte.
    pub query: Option<&'a str>,
    /// The client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
}

/// Check a request head; `raw` is the head as the client sent it, `facts` what its header
/// lines hold.
pub fn check<'a>(
    req: &'a RequestHeader,
    raw: &'a [u8],
    facts: &HeadFacts,
) -> Result<Checked<'a>, Refusal> {
    // HTTP/2 has no raw head: its target and decoded header list stand in for it.
    let line = &raw[..memchr::memchr(b'\n', raw).unwrap_or(raw.len())];
    let (request_line, head) = if raw.is_empty() {
        (req.raw_path().len(), decoded_size(req))
    } else {
        (line.len(), raw.len())
    };
    if request_line > MAX_REQUEST_LINE {
        return Err(refuse(414, "request target too long"));
    }
    // Pingora's parser accepts a bare LF as a line end; a front proxy or service that does
    // not would see other requests in the same bytes. Refused, and the connection ends
    // (the bytes after this head could be read as a request of their own).
    if has_bare_lf(raw) {
        return Err(Refusal {
            close: true,
            ..refuse(400, "line ends must be CRLF")
        });
    }
    if head > MAX_HEAD || req.headers.len() > MAX_HEADERS {
        return Err(refuse(431, "request head too large"));
    }
    framing(req, raw, facts)?;
    host(req, facts)?;
    if req.method == Method::CONNECT || req.method == Method::TRACE {
        return Err(refuse(405, "method not allowed"));
    }
    let (path, query) = target(raw_target(line).unwrap_or(req.raw_path()))?;
    if let Err(e) = check_path(path) {
        return Err(refuse(400, e.message()));
    }
    let path = merge_slashes(path);
    let expect_continue = match facts.expect {
        None => false,
        Some(v)
            if v.as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"100-continue") =>
        {
            true
        }
        Some(_) => return Err(refuse(417, "only Expect: 100-continue is supported")),
    };
    Ok(Checked {
        path,
        query,
        expect_continue,
    })
}

/// One unambiguous body framing: no `Transfer-Encoding` with `Content-Length`, one length,
/// and `chunked` as the only transfer coding (never in HTTP/1.0).
fn framing(req: &RequestHeader, raw: &[u8], facts: &HeadFacts) -> Result<(), Refusal> {
    // The usual request: no transfer coding, at most one length.
    if !facts.transfer_encoding && facts.content_lengths <= 1 {
        return match facts.content_length {
            Some(v) if parse_length(v.as_bytes().trim_ascii()).is_none() => {
                Err(refuse(400, "invalid Content-Length"))
            }
            _ => Ok(()),
        };
    }
    let te: Vec<&[u8]> = req
        .headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    let cl = req.headers.get_all(http::header::CONTENT_LENGTH);
    // Pingora has removed Content-Length already when both came: look at the raw lines.
    if !te.is_empty() && (cl.iter().next().is_some() || has_line(raw, b"content-length")) {
        return Err(refuse(
            400,
            "both Transfer-Encoding and Content-Length are set",
        ));
    }
    if !te.is_empty() {
        if req.version == Version::HTTP_10 {
            return Err(refuse(400, "Transfer-Encoding is not allowed in HTTP/1.0"));
        }
        let mut codings = te.iter().flat_map(|v| tokens(v));
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !only_chunked {
            return Err(refuse(400, "the only transfer coding accepted is chunked"));
        }
    }
    let mut length = None;
    for v in cl {
        let v = v.as_bytes().trim_ascii();
        if parse_length(v).is_none() {
            return Err(refuse(400, "invalid Content-Length"));
        }
        if length.is_some_and(|l| l != v) {
            return Err(refuse(400, "conflicting Content-Length values"));
        }
        length = Some(v);
    }
    Ok(())
}

/// The size of a head as HTTP/2 accounts for it (RFC 9113 §6.5.2: name, value and 32
/// bytes per field), with the target.
fn decoded_size(req: &RequestHeader) -> usize {
    let fields: usize = req
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum();
    fields + req.raw_path().len()
}

/// Exactly one `Host` (none is allowed in HTTP/1.0), a valid authority: no spaces, no
/// user info, nothing a service could read as a path. HTTP/2 carries the authority in
/// `:authority`; a `Host` beside it must say the same (RFC 9113 §8.3.1).
fn host(req: &RequestHeader, facts: &HeadFacts) -> Result<(), Refusal> {
    if req.version == Version::HTTP_2
        && let Some(authority) = req.uri.authority()
    {
        if !is_authority(authority.as_str().as_bytes()) {
            return Err(refuse(400, "invalid :authority"));
        }
        return match facts.host {
            None if facts.hosts == 0 => Ok(()),
            Some(h) if facts.hosts == 1 && h.as_bytes() == authority.as_str().as_bytes() => Ok(()),
            _ => Err(refuse(400, "Host does not match :authority")),
        };
    }
    match (facts.hosts, facts.host) {
        (2.., _) => Err(refuse(400, "more than one Host header")),
        (_, None) if req.version == Version::HTTP_10 => Ok(()),
        (_, None) => Err(refuse(400, "missing Host header")),
        (_, Some(h)) if is_authority(h.as_bytes()) => Ok(()),
        (_, Some(_)) => Err(refuse(400, "invalid Host header")),
    }
}

/// `host[:port]` as RFC 3986 writes it: reg-name, IPv4 or a bracketed IPv6 literal.
/// (One table lookup per byte: this runs for every request.)
fn is_authority(v: &[u8]) -> bool {
    const ALLOWED: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            table[b] = c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                );
            b += 1;
        }
        table
    };
    !v.is_empty() && v.iter().all(|&b| ALLOWED[usize::from(b)])
}

/// Split the request target into path and query. Origin form (`/p?q`) and absolute form
/// (`http://host/p?q`, answered like origin form) are accepted; `*` and authority form
/// are not.
fn target(raw: &[u8]) -> Result<(&str, Option<&str>), Refusal> {
    // Searched as bytes: `str::contains` and `split_once` with a `char` pattern go through
    // the generic pattern machinery (and the memchr crate's entry costs more than these
    // short targets take to scan).
    if raw.contains(&b'#') {
        return Err(refuse(400, "a request target must not contain '#'"));
    }
    let target =
        std::str::from_utf8(raw).map_err(|_| refuse(400, "the request target is not UTF-8"))?;
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        // `?` is ASCII: both sides are on character boundaries.
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    };
    if path.starts_with('/') {
        return Ok((path, query));
    }
    let scheme_len = if starts_with_ignore_case(path, "http://") {
        7
    } else if starts_with_ignore_case(path, "https://") {
        8
    } else {
        return Err(refuse(400, "unsupported request target"));
    };
    let rest = &path[scheme_len..];
    Ok((rest.find('/').map_or("/", |i| &rest[i..]), query))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// The request target exactly as the client sent it (`http::Uri` would drop a fragment),
/// from the request line (without its LF).
fn raw_target(line: &[u8]) -> Option<&[u8]> {
    let line = line.trim_ascii_end();
    let start = line.iter().position(|&b| b == b' ')? + 1;
    let end = line.iter().rposition(|&b| b == b' ')?;
    line.get(start..end).map(<[u8]>::trim_ascii)
}

/// `//` merged into `/`, as nginx does (`merge_slashes`): `/core//x` is `/core/x` for the
/// router and the service, and `//core/x` routes as `/core/x`. Only a path with `//` is
/// copied.
fn merge_slashes(path: &str) -> Cow<'_, str> {
    // Byte pairs: `str::contains("//")` sets up a substring search for every request.
    if !path.as_bytes().windows(2).any(|w| w == b"//") {
        return Cow::Borrowed(path);
    }
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    Cow::Owned(merged)
}

/// A LF not preceded by CR in the head (memchr: this runs on every HTTP/1 head).
fn has_bare_lf(raw: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', raw).any(|i| i == 0 || raw[i - 1] != b'\r')
}

/// A header line named `name` among the raw head's lines (after the request line).
fn has_line(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
    })
}

/// A `Content-Length` value: digits only, no sign, no list, no overflow.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse a raw head as Pingora's request header, then check it.
    fn run(raw: &str) -> Result<(String, Option<String>, bool), Refusal> {
        let req = head::parse(raw);
        check(&req, raw.as_bytes(), &HeadFacts::scan(&req.headers)).map(|c| {
            (
                c.path.into_owned(),
                c.query.map(str::to_owned),
                c.expect_continue,
            )
        })
    }

    /// A minimal head parser for these tests: request line and `Name: value` lines, with
    /// Pingora's deletion of `Content-Length` next to `Transfer-Encoding`.
    mod head {
        use pingora_http::RequestHeader;
        pub fn parse(raw: &str) -> RequestHeader {
            let mut lines = raw.split("\r\n");
            let line = lines.next().unwrap_or_default();
            let mut parts = line.split(' ');
            let method = parts.next().unwrap_or_default();
            let target = parts.next().unwrap_or_default();
            let version = parts.next().unwrap_or_default();
            let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
            if version == "HTTP/1.0" {
                req.set_version(http::Version::HTTP_10);
            }
            for l in lines.take_while(|l| !l.is_empty()) {
                let (n, v) = l.split_once(':').unwrap();
                req.append_header(n.to_owned(), v.trim()).unwrap();
            }
            if req.headers.contains_key("transfer-encoding") {
                req.remove_header("content-length");
            }
            req
        }
    }

    fn status(raw: &str) -> u16 {
        match run(raw) {
            Ok(ok) => panic!("accepted {raw:?}: {ok:?}"),
            Err(r) => r.status,
        }
    }

    #[test]
    fn accepts_plain_requests_and_splits_the_target() {
        assert_eq!(
            run("GET /core/x?a=%20b&c HTTP/1.1\r\nHost: gw:9000\r\n\r\n").unwrap(),
            ("/core/x".into(), Some("a=%20b&c".into()), false)
        );
        assert_eq!(
            run("GET http://gw.example/auth/x?q=1 HTTP/1.1\r\nHost: gw.example\r\n\r\n")
                .unwrap()
                .0,
            "/auth/x"
        );
        assert_eq!(
            run("GET HTTP://gw.example HTTP/1.1\r\nHost: gw.example\r\n\r\n")
                .unwrap()
                .0,
            "/"
        );
        assert!(run("GET /x HTTP/1.0\r\n\r\n").is_ok());
        assert_eq!(
            run("GET //core//x/ HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().0,
            "/core/x/"
        );
        assert!(run("GET /x HTTP/1.1\r\nHost: [::1]:9000\r\n\r\n").is_ok());
        let (_, _, cont) =
            run("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n")
                .unwrap();
        assert!(cont);
    }

    #[test]
    fn refuses_ambiguous_framing() {
        for raw in [
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(status(raw), 400, "{raw:?}");
        }
        assert!(
            run("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n")
                .is_ok()
        );
        assert!(run("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").is_ok());
    }

    #[test]
    fn refuses_unsafe_heads() {
        assert_eq!(
            run("GET /x HTTP/1.1\r\n\r\n").unwrap_err(),
            refuse(400, "missing Host header")
        );
        assert_eq!(status("GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(status("GET /x HTTP/1.1\r\nHost: gw test\r\n\r\n"), 400);
        assert_eq!(status("GET /x HTTP/1.1\r\nHost: user@gw\r\n\r\n"), 400);
        assert_eq!(status("GET /x HTTP/1.1\r\nHost: gw/x\r\n\r\n"), 400);
        assert_eq!(status("GET /core/../auth HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(
            status("GET /core/%2e%2E/auth HTTP/1.1\r\nHost: a\r\n\r\n"),
            400
        );
        assert_eq!(status("GET /core/%00 HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 405);
        assert_eq!(status("TRACE /x HTTP/1.1\r\nHost: a\r\n\r\n"), 405);
        assert_eq!(status("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET /x#f HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        let lf = run("GET /x HTTP/1.1\nHost: a\r\n\r\n").unwrap_err();
        assert_eq!((lf.status, lf.close), (400, true));
        assert_eq!(status("GET /x HTTP/1.1\r\nHost: a\r\nX: 1\n\r\n"), 400);
        assert_eq!(
            status("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\n"),
            417
        );
    }

    #[test]
    fn limits_request_line_and_head() {
        let long = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE)
        );
        assert_eq!(status(&long), 414);
        let fits = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE - 20)
        );
        assert!(run(&fits).is_ok());
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET /x HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
        let big = format!(
            "GET /x HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(MAX_HEAD)
        );
        assert_eq!(status(&big), 431);
    }

    /// An HTTP/2 request as Pingora hands it over: the authority in the URI, no raw head.
    fn h2(target: &str, headers: &[(&str, &str)]) -> Result<String, Refusal> {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        req.set_version(Version::HTTP_2);
        req.set_uri(target.parse().unwrap());
        for (n, v) in headers {
            req.append_header(n.to_string(), *v).unwrap();
        }
        check(&req, b"", &HeadFacts::scan(&req.headers)).map(|c| c.path.into_owned())
    }

    #[test]
    fn http2_heads_are_checked_by_their_authority_and_decoded_size() {
        assert_eq!(h2("https://gw.example/core/x", &[]).unwrap(), "/core/x");
        assert!(h2("https://gw.example/x", &[("host", "gw.example")]).is_ok());
        assert_eq!(
            h2("https://gw.example/x", &[("host", "other.example")]).unwrap_err(),
            refuse(400, "Host does not match :authority")
        );
        assert_eq!(h2("https://u@gw.example/x", &[]).unwrap_err().status, 400);
        assert_eq!(
            h2("https://gw.example/core/../auth", &[])
                .unwrap_err()
                .status,
            400
        );
        let long = format!("https://gw.example/{}", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(h2(&long, &[]).unwrap_err().status, 414);
        let big = "v".repeat(MAX_HEAD);
        assert_eq!(
            h2("https://gw.example/x", &[("x", &big)])
                .unwrap_err()
                .status,
            431
        );
    }
}
