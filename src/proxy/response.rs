//! A response head, from the upstream's bytes to the head the client receives: parse,
//! decide how the body ends and whether each connection can be reused, rewrite. Pure and
//! synchronous, like [`super::request`].

use super::headers::{self, Name, line};
use super::request::{Framing, Request, parse_length};

/// Most header lines accepted in a response (services set many cookies at times).
const MAX_HEADERS: usize = 128;

/// A response ready for the client; its new head has been written to the output buffer.
#[derive(Debug)]
pub struct Response {
    pub head_len: usize,
    pub status: u16,
    /// How the upstream's body ends.
    pub framing: Framing,
    /// The upstream connection can be pooled once the body is read.
    pub upstream_reusable: bool,
    /// The client connection stays open after this response.
    pub client_keep_alive: bool,
    /// The body goes to an HTTP/1.0 client decoded from chunked coding.
    pub dechunk: bool,
    /// `101 Switching Protocols`: after the head, both sides are tunnelled.
    pub switching: bool,
}

pub enum Parsed {
    /// A complete final response.
    Final(Response),
    /// An interim `1xx` response of this many bytes: dropped, the final one follows.
    Interim(usize),
    Incomplete,
    Invalid(&'static str),
}

/// Parse the upstream's head at the start of `buf` for `req`; on success the client's head
/// is in `out`. `closing` is set when the client connection must end after this response
/// (the gateway is shutting down, or the request body was not read to its end).
pub fn prepare(buf: &[u8], req: &Request, closing: bool, out: &mut Vec<u8>) -> Parsed {
    // Left uninitialised: httparse writes the lines it finds.
    let mut storage = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut storage,
    );
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid("too many response headers");
        }
        Err(_) => return Parsed::Invalid("malformed response head"),
    };
    let status = resp.code.unwrap_or(0);
    let switching = status == 101;
    if switching && !req.upgrade {
        return Parsed::Invalid("101 Switching Protocols to a request that asked for no upgrade");
    }
    if (100..200).contains(&status) && !switching {
        return Parsed::Interim(head_len);
    }

    let mut content_length: Option<&[u8]> = None;
    let mut lengths_differ = false;
    let mut transfer_encoding: Vec<&[u8]> = Vec::new();
    let mut final_chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut connection: Vec<&[u8]> = Vec::new();
    let mut upgrade = None;
    // Each line's class, worked out once for both passes.
    let mut names = [Name::Other; MAX_HEADERS];
    for (h, class) in resp.headers.iter().zip(names.iter_mut()) {
        *class = Name::of(h.name);
        match *class {
            Name::ContentLength => {
                let v = h.value.trim_ascii();
                lengths_differ |= content_length.is_some_and(|c| c != v);
                content_length = Some(v);
            }
            Name::TransferEncoding => {
                for coding in headers::tokens(h.value) {
                    final_chunked = coding.eq_ignore_ascii_case(b"chunked");
                }
                transfer_encoding.push(h.value);
            }
            Name::Connection => {
                for t in headers::tokens(h.value) {
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep_alive_token |= t.eq_ignore_ascii_case(b"keep-alive");
                }
                if headers::nominates_others(&[h.value]) {
                    connection.push(h.value);
                }
            }
            Name::Upgrade => upgrade = Some(h.value),
            _ => {}
        }
    }

    let bodiless = req.is_head || status == 204 || status == 304 || switching;
    // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3).
    let framing = if bodiless {
        Framing::Empty
    } else if !transfer_encoding.is_empty() {
        if final_chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(v) = content_length {
        if lengths_differ {
            return Parsed::Invalid("conflicting Content-Length values");
        }
        match parse_length(v) {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => return Parsed::Invalid("invalid Content-Length"),
        }
    } else {
        Framing::UntilClose
    };

    let upstream_http10 = resp.version == Some(0);
    let upstream_reusable = !close
        && (!upstream_http10 || keep_alive_token)
        && framing != Framing::UntilClose
        && !switching;
    let dechunk = req.http10 && framing == Framing::Chunked;
    let client_keep_alive =
        req.keep_alive && !closing && framing != Framing::UntilClose && !dechunk && !switching;

    out.clear();
    let reason = resp
        .reason
        .filter(|r| !r.is_empty())
        .or_else(|| http::StatusCode::from_u16(status).ok()?.canonical_reason())
        .unwrap_or("Unknown");
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (h, name) in resp.headers.iter().zip(names) {
        let drop = name.is_hop_by_hop()
            || name.is_set_downstream()
            || (!connection.is_empty() && headers::is_nominated(&connection, h.name));
        if !drop {
            line(out, h.name.as_bytes(), h.value);
        }
    }
    match framing {
        // A HEAD or 304 response may state the length the body would have had.
        Framing::Empty if status != 204 && !switching => {
            if let Some(v) = content_length.filter(|_| !lengths_differ) {
                line(out, b"Content-Length", v);
            }
        }
        Framing::Length(n) => headers::content_length(out, n),
        Framing::Chunked if dechunk => {}
        Framing::Chunked | Framing::UntilClose => {
            for v in &transfer_encoding {
                line(out, b"Transfer-Encoding", v);
            }
        }
        Framing::Empty => {}
    }
    if switching {
        out.extend_from_slice(b"Connection: upgrade\r\n");
        if let Some(protocol) = upgrade {
            line(out, b"Upgrade", protocol);
        }
    } else if !client_keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    headers::write_to_client(out, &req.request_id);
    out.extend_from_slice(b"\r\n");

    Parsed::Final(Response {
        head_len,
        status,
        framing,
        upstream_reusable,
        client_keep_alive,
        dechunk,
        switching,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request_id::accept_or_generate;

    fn request(is_head: bool, http10: bool, upgrade: bool) -> Request {
        Request {
            head_len: 0,
            method: 0..0,
            path: 0..0,
            is_head,
            idempotent: true,
            route: 0,
            framing: Framing::Empty,
            keep_alive: true,
            http10,
            upgrade,
            expect_continue: false,
            request_id: accept_or_generate(Some(b"rid")),
        }
    }

    fn run(raw: &str, req: &Request) -> (Response, String) {
        let mut out = Vec::new();
        match prepare(raw.as_bytes(), req, false, &mut out) {
            Parsed::Final(r) => (r, String::from_utf8(out).unwrap()),
            Parsed::Interim(_) => panic!("interim"),
            Parsed::Incomplete => panic!("incomplete"),
            Parsed::Invalid(m) => panic!("invalid: {m}"),
        }
    }

    #[test]
    fn rewrites_headers_for_the_client() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: X-Private\r\nX-Private: 1\r\n\
                   Keep-Alive: timeout=5\r\nX-Frame-Options: SAMEORIGIN\r\nX-Request-ID: theirs\r\n\
                   Content-Length: 5\r\n\r\nhello";
        let (resp, head) = run(raw, &request(false, false, false));
        assert_eq!(
            head,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
             X-Request-ID: rid\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n\r\n"
        );
        assert_eq!(resp.framing, Framing::Length(5));
        assert_eq!(resp.head_len, raw.len() - 5);
        assert!(resp.upstream_reusable && resp.client_keep_alive);
    }

    #[test]
    fn chooses_body_framing() {
        let plain = request(false, false, false);
        let (r, head) = run(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            &plain,
        );
        assert_eq!(r.framing, Framing::Chunked);
        assert!(
            head.contains("Transfer-Encoding: chunked\r\n") && !head.contains("Content-Length")
        );
        let (r, head) = run("HTTP/1.1 200 OK\r\n\r\n", &plain);
        assert_eq!(r.framing, Framing::UntilClose);
        assert!(!r.upstream_reusable && !r.client_keep_alive);
        assert!(head.contains("Connection: close\r\n"));
        let (r, _) = run("HTTP/1.1 204 No Content\r\n\r\n", &plain);
        assert_eq!(r.framing, Framing::Empty);
        assert!(r.client_keep_alive);
        let (r, head) = run(
            "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
            &request(true, false, false),
        );
        assert_eq!(r.framing, Framing::Empty);
        assert!(head.contains("Content-Length: 42\r\n"));
    }

    #[test]
    fn upstream_close_or_http10_is_not_pooled() {
        let plain = request(false, false, false);
        let (r, _) = run(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            &plain,
        );
        assert!(!r.upstream_reusable && r.client_keep_alive);
        let (r, _) = run("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", &plain);
        assert!(!r.upstream_reusable);
    }

    #[test]
    fn http10_clients_get_decoded_bodies_and_close() {
        let (r, head) = run(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &request(false, true, false),
        );
        assert!(r.dechunk && !r.client_keep_alive);
        assert!(!head.contains("Transfer-Encoding"), "{head}");
        let (r, head) = run(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n",
            &request(false, true, false),
        );
        assert!(r.client_keep_alive && head.contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn switching_protocols_only_for_upgrades() {
        let raw = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n";
        let (r, head) = run(raw, &request(false, false, true));
        assert!(r.switching && !r.upstream_reusable);
        assert!(
            head.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{head}"
        );
        assert!(head.contains("Sec-WebSocket-Accept: x\r\n"));
        let mut out = Vec::new();
        let plain = request(false, false, false);
        assert!(matches!(
            prepare(raw.as_bytes(), &plain, false, &mut out),
            Parsed::Invalid(_)
        ));
    }

    #[test]
    fn interim_and_invalid_heads() {
        let plain = request(false, false, false);
        let mut out = Vec::new();
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert!(matches!(
            prepare(raw, &plain, false, &mut out),
            Parsed::Interim(25)
        ));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(matches!(
                prepare(bad, &plain, false, &mut out),
                Parsed::Invalid(_)
            ));
        }
        assert!(matches!(
            prepare(b"HTTP/1.1 200 OK\r\n", &plain, false, &mut out),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn closing_connections_say_so() {
        let mut out = Vec::new();
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let Parsed::Final(r) = prepare(raw, &request(false, false, false), true, &mut out) else {
            panic!()
        };
        assert!(!r.client_keep_alive && r.upstream_reusable);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("Connection: close\r\n")
        );
    }
}
