//! The request id every request carries: the client's own when it is a sane token (so a
//! frontend can correlate its logs with ours), a fresh UUID v4 otherwise. Anything else a
//! client sends (too long, spaces, quotes, control bytes) would end up in our logs and in
//! every service's, so it is replaced rather than trusted.

use uuid::Uuid;

/// Longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// A request id, held inline: no allocation per request.
#[derive(Clone, Copy)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_LEN],
}

impl RequestId {
    /// ASCII letters, digits and `.-_` only (see `is_sane`), so always valid UTF-8.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("-")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn from_sane(id: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_LEN];
        bytes[..id.len()].copy_from_slice(id);
        RequestId {
            len: id.len() as u8,
            bytes,
        }
    }
}

/// Empty until the request's head is read (a context exists before that).
impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            len: 0,
            bytes: [0; MAX_LEN],
        }
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// The id for this request, given the client's `X-Request-ID` value (if any).
pub fn accept_or_generate(incoming: Option<&[u8]>) -> RequestId {
    match incoming {
        Some(v) if is_sane(v) => RequestId::from_sane(v),
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
    RequestId::from_sane(text.as_bytes())
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
            assert_eq!(accept_or_generate(Some(id.as_bytes())).as_str(), id);
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
            let out = accept_or_generate(Some(id.as_bytes()));
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
