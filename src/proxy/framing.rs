//! Request smuggling guard. Pingora already refuses differing `Content-Length`s and a
//! non-chunked final `Transfer-Encoding`, but when both `Transfer-Encoding` and
//! `Content-Length` are present it follows RFC 9112 and silently drops the length. A
//! gateway in front of servers that might disagree about that must refuse the request
//! instead, so this looks at the raw header block, and only when `Transfer-Encoding` is set.

use http::header::TRANSFER_ENCODING;
use pingora_proxy::Session;

/// The request carries both `Transfer-Encoding` and `Content-Length`.
pub fn has_conflicting_framing(session: &Session) -> bool {
    if !session.req_header().headers.contains_key(TRANSFER_ENCODING) {
        return false;
    }
    session
        .as_downstream()
        .as_http1()
        .is_some_and(|h1| raw_has_content_length(&h1.get_headers_raw_bytes()))
}

fn raw_has_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length";
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > NAME.len()
            && line[..NAME.len()].eq_ignore_ascii_case(NAME)
            && line[NAME.len()..]
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t'))
                == Some(&b':')
    })
}

#[cfg(test)]
mod tests {
    use super::raw_has_content_length as has;

    #[test]
    fn finds_content_length_in_any_case() {
        assert!(has(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"
        ));
        assert!(has(b"POST / HTTP/1.1\r\nCONTENT-LENGTH:4\r\n\r\n"));
        assert!(has(b"POST / HTTP/1.1\r\ncontent-length :4\r\n\r\n"));
        assert!(!has(b"POST / HTTP/1.1\r\nContent-Lengthy: 4\r\n\r\n"));
        assert!(!has(b"POST /content-length: HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!has(b"POST / HTTP/1.1\r\nX-Content-Length: 4\r\n\r\n"));
    }
}
