//! The request id every request carries: the client's own when it is a sane token (so a
//! frontend can correlate its logs with ours), a fresh UUID v4 otherwise. Anything else a
//! client sends (too long, spaces, quotes, control bytes) would end up in our logs and in
//! every service's, so it is replaced rather than trusted.

use http::{HeaderName, HeaderValue};
use uuid::Uuid;

/// The header's name, for lookups: a `HeaderName` is found without parsing the text of
/// the name first (as a `&str` key is, on every request).
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// A request id. Held as the header value it travels as: a client's id is the request's
/// own bytes (shared, not copied), and both the upstream request and the response get it
/// by a reference-count increment rather than a copy.
#[derive(Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// ASCII letters, digits and `.-_` only (see `is_sane`), so always valid UTF-8.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.0.as_bytes()).unwrap_or("-")
    }

    /// The id as a header value, for the upstream request and the response.
    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

/// Empty until the request's head is read (a context exists before that).
impl Default for RequestId {
    fn default() -> Self {
        RequestId(HeaderValue::from_static(""))
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// The id for this request, given the client's `X-Request-ID` value (if any).
pub fn accept_or_generate(incoming: Option<&HeaderValue>) -> RequestId {
    match incoming {
        Some(v) if is_sane(v.as_bytes()) => RequestId(v.clone()),
        _ => generate(),
    }
}

fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn generate() -> RequestId {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    RequestId(HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_uuid_v4(v: &RequestId) -> bool {
        Uuid::parse_str(v.as_str()).is_ok_and(|u| u.get_version_num() == 4)
    }

    #[test]
    fn keeps_a_sane_client_id() {
        for id in ["abc", "req-123_x.y", "0", &"a".repeat(128)] {
            let v = HeaderValue::from_str(id).unwrap();
            assert_eq!(accept_or_generate(Some(&v)).as_str(), id);
        }
    }

    #[test]
    fn replaces_missing_or_unsafe_ids() {
        assert!(is_uuid_v4(&accept_or_generate(None)));
        for id in [
            "",
            "has space",
            "quote\"",
            "semi;colon",
            "x/y",
            &"a".repeat(129),
            "é",
        ] {
            let v = HeaderValue::from_bytes(id.as_bytes()).unwrap();
            let out = accept_or_generate(Some(&v));
            assert!(is_uuid_v4(&out), "{id:?} gave {out:?}");
        }
    }

    #[test]
    fn generated_ids_differ() {
        assert_ne!(
            accept_or_generate(None).as_str(),
            accept_or_generate(None).as_str()
        );
    }
}
