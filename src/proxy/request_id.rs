//! The request id every request carries: the client's own when it is a sane token (so a
//! frontend can correlate its logs with ours), a fresh UUID v4 otherwise. Anything else a
//! client sends (too long, spaces, quotes, control bytes) would end up in our logs and in
//! every service's, so it is replaced rather than trusted.

use http::HeaderValue;
use uuid::Uuid;

/// Longest client-supplied id kept.
const MAX_LEN: usize = 128;

/// The id for this request, given the client's `X-Request-ID` (if any).
pub fn accept_or_generate(incoming: Option<&HeaderValue>) -> HeaderValue {
    match incoming {
        Some(v) if is_sane(v.as_bytes()) => v.clone(),
        _ => generate(),
    }
}

fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn generate() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).expect("a hyphenated UUID is ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_uuid_v4(v: &HeaderValue) -> bool {
        Uuid::parse_str(v.to_str().unwrap()).is_ok_and(|u| u.get_version_num() == 4)
    }

    #[test]
    fn keeps_a_sane_client_id() {
        for id in ["abc", "req-123_x.y", "0", &"a".repeat(128)] {
            let v = HeaderValue::from_str(id).unwrap();
            assert_eq!(accept_or_generate(Some(&v)), v);
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
        assert_ne!(accept_or_generate(None), accept_or_generate(None));
    }
}
