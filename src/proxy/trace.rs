//! W3C Trace Context (`traceparent`, `tracestate`), so that a request's trace crosses the
//! gateway: the .NET core service's OpenTelemetry spans join the trace the client (or the
//! gateway) started, and the trace id in the gateway's access line finds them.
//!
//! A valid `traceparent` is forwarded unchanged, with its `tracestate`. None: the gateway
//! starts a trace (random trace and parent ids, flags `01`, sampled, so parent-based
//! samplers record it). A malformed one is replaced the same way, and its `tracestate`
//! dropped (it belongs to a trace that can no longer be followed).

use http::HeaderValue;

/// `00-` + 32 hex + `-` + 16 hex + `-` + 2 hex.
const LEN: usize = 55;

/// The trace a request belongs to.
#[derive(Debug, Clone)]
pub enum Trace {
    /// The client's valid `traceparent`, forwarded unchanged with its `tracestate`.
    Joined(HeaderValue),
    /// Started by the gateway (the client sent none, or a malformed one): the text of its
    /// `traceparent`, set on the upstream request in place of the client's (whose
    /// `tracestate` is removed). Kept as bytes: the header value is made once, when it is
    /// set, rather than made here and copied again there.
    Started([u8; LEN]),
}

impl Trace {
    /// The trace of a request whose `traceparent` is `incoming`.
    pub fn accept_or_start(incoming: Option<&HeaderValue>) -> Trace {
        match incoming {
            Some(v) if is_valid(v.as_bytes()) => Trace::Joined(v.clone()),
            _ => Trace::start(),
        }
    }

    fn start() -> Trace {
        let trace_id: u128 = rand::random::<u128>().max(1);
        let parent_id: u64 = rand::random::<u64>().max(1);
        // Written into a fixed buffer: this runs for most requests, and `format!` with
        // `{:032x}` cost ~2,000 instructions of it.
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-01";
        hex_into(&mut text[3..35], &trace_id.to_be_bytes());
        hex_into(&mut text[36..52], &parent_id.to_be_bytes());
        Trace::Started(text)
    }

    /// The 32 hex digits of the trace id, for the logs.
    pub fn trace_id(&self) -> &str {
        let text = match self {
            Trace::Joined(header) => header.as_bytes(),
            Trace::Started(text) => text,
        };
        text.get(3..35)
            .and_then(|id| std::str::from_utf8(id).ok())
            .unwrap_or("-")
    }

    /// The `traceparent` to set on the upstream request, when the gateway started the
    /// trace (a client's valid one is already there).
    pub fn started_header(&self) -> Option<HeaderValue> {
        match self {
            Trace::Joined(_) => None,
            // Lower-case hex and dashes: always a valid header value.
            Trace::Started(text) => HeaderValue::from_bytes(text).ok(),
        }
    }
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// `version-traceid-parentid-flags` per W3C Trace Context: lower-case hex, version not
/// `ff`, ids not all zeros; version `00` exactly 55 bytes, later versions may append
/// `-`-separated fields.
fn is_valid(v: &[u8]) -> bool {
    let hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let nonzero = |s: &[u8]| s.iter().any(|&b| b != b'0');
    if v.len() < LEN || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return false;
    }
    let (version, trace_id, parent_id, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    let fields_ok = hex(version)
        && version != b"ff"
        && hex(trace_id)
        && nonzero(trace_id)
        && hex(parent_id)
        && nonzero(parent_id)
        && hex(flags);
    let rest_ok = match version {
        b"00" => v.len() == LEN,
        _ => v.len() == LEN || v[LEN] == b'-',
    };
    fields_ok && rest_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_kept() {
        let t = Trace::accept_or_start(Some(&HeaderValue::from_static(VALID)));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.started_header(), None);
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(is_valid(future.as_bytes()));
    }

    #[test]
    fn malformed_or_missing_ones_start_a_new_trace() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            assert!(!is_valid(bad.as_bytes()), "{bad}");
            let t = Trace::accept_or_start(Some(&HeaderValue::from_static(bad)));
            let header = t.started_header().expect("a new trace");
            assert!(is_valid(header.as_bytes()), "{header:?}");
            assert!(header.to_str().unwrap().ends_with("-01"));
        }
        let mut out = [0u8; 6];
        hex_into(&mut out, &[0x00, 0xab, 0x9f]);
        assert_eq!(&out, b"00ab9f");
        let a = Trace::accept_or_start(None);
        let b = Trace::accept_or_start(None);
        assert_ne!(a.trace_id(), b.trace_id());
        assert_eq!(a.trace_id().len(), 32);
    }
}
