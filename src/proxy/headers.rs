//! Header rules, on raw header lines: which headers stay on their hop, which the gateway
//! sets itself, and the lines it adds in each direction. Values that never change are
//! byte constants, so the hot path formats nothing for them.

use std::net::IpAddr;

use super::request_id::RequestId;

/// The header names the gateway treats specially; everything else is `Other` and passes
/// through. Each header line is classified once, by length first, so a request or response
/// with many headers costs one or two comparisons per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    ProxyAuthorization,
    ProxyAuthenticate,
    Expect,
    XRequestId,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    XFrameOptions,
    XContentTypeOptions,
    Other,
}

impl Name {
    pub fn of(name: &str) -> Name {
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is("te") => Name::Te,
            4 if is("host") => Name::Host,
            6 if is("expect") => Name::Expect,
            7 if is("upgrade") => Name::Upgrade,
            7 if is("trailer") => Name::Trailer,
            10 if is("connection") => Name::Connection,
            10 if is("keep-alive") => Name::KeepAlive,
            12 if is("x-request-id") => Name::XRequestId,
            14 if is("content-length") => Name::ContentLength,
            15 if is("x-forwarded-for") => Name::XForwardedFor,
            15 if is("x-frame-options") => Name::XFrameOptions,
            16 if is("proxy-connection") => Name::ProxyConnection,
            16 if is("x-forwarded-host") => Name::XForwardedHost,
            17 if is("transfer-encoding") => Name::TransferEncoding,
            17 if is("x-forwarded-proto") => Name::XForwardedProto,
            18 if is("proxy-authenticate") => Name::ProxyAuthenticate,
            19 if is("proxy-authorization") => Name::ProxyAuthorization,
            22 if is("x-content-type-options") => Name::XContentTypeOptions,
            _ => Name::Other,
        }
    }

    /// Describes one connection, never forwarded as received (RFC 9110 §7.6.1, plus the
    /// de-facto `Proxy-Connection` and the proxy credentials headers, which are for the
    /// gateway and must not reach a service). Framing headers are rewritten by the
    /// gateway from the framing it parsed.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Name::Connection
                | Name::KeepAlive
                | Name::ProxyConnection
                | Name::Te
                | Name::Trailer
                | Name::Upgrade
                | Name::TransferEncoding
                | Name::ContentLength
                | Name::ProxyAuthorization
                | Name::ProxyAuthenticate
        )
    }

    /// Set by the gateway towards the upstream, replacing the client's.
    pub fn is_set_upstream(self) -> bool {
        matches!(
            self,
            Name::XRequestId
                | Name::XForwardedFor
                | Name::XForwardedProto
                | Name::XForwardedHost
                | Name::Expect
        )
    }

    /// Set by the gateway on every response to the client, replacing the upstream's.
    pub fn is_set_downstream(self) -> bool {
        matches!(
            self,
            Name::XRequestId | Name::XFrameOptions | Name::XContentTypeOptions
        )
    }
}

/// `Connection` values name headers beyond its own options (`close`, `keep-alive`,
/// `upgrade`, which are hop-by-hop anyway): only then is each header checked against them.
pub fn nominates_others(connection: &[&[u8]]) -> bool {
    connection.iter().any(|v| {
        tokens(v).any(|t| {
            !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"upgrade")
        })
    })
}

/// The comma-separated tokens of a `Connection` header value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// `name` is listed in one of the `Connection` header values, so it is hop-by-hop.
pub fn is_nominated(connection: &[&[u8]], name: &str) -> bool {
    connection
        .iter()
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
}

/// Append `name: value\r\n`.
pub fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The forwarding headers for the upstream. The gateway is the edge, so
/// `X-Forwarded-Proto` and `X-Forwarded-Host` describe the client's request and replace
/// anything it claimed; `X-Forwarded-For` keeps the incoming chain (all its lines, in order)
/// and appends the client's address. `Host` itself is passed through as the client sent it,
/// so services that build absolute URLs (OpenID discovery, Swagger) point back at the
/// gateway.
pub fn write_forwarding<'h>(
    out: &mut Vec<u8>,
    forwarded_for: impl Iterator<Item = &'h [u8]>,
    client_ip: Option<&ClientIp>,
    host: Option<&[u8]>,
    request_id: &RequestId,
) {
    line(out, b"X-Request-ID", request_id.as_bytes());
    let mut chain = forwarded_for
        .map(<[u8]>::trim_ascii)
        .filter(|v| !v.is_empty())
        .peekable();
    if client_ip.is_some() || chain.peek().is_some() {
        out.extend_from_slice(b"X-Forwarded-For: ");
        let mut first = true;
        for v in chain {
            if !first {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(v);
            first = false;
        }
        if let Some(ip) = client_ip {
            if !first {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(ip.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    if let Some(host) = host {
        line(out, b"X-Forwarded-Host", host);
    }
}

/// A client's IP address as text, as `X-Forwarded-For` carries it (an IPv4-mapped IPv6
/// address as plain IPv4). Formatted once per connection, not once per request.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp {
    len: u8,
    /// Long enough for any IPv6 text form (`ffff:...:255.255.255.255` is 45).
    text: [u8; 45],
}

impl ClientIp {
    pub fn new(ip: IpAddr) -> Self {
        use std::io::Write;
        let mut text = [0; 45];
        let mut rest = &mut text[..];
        // Once per connection, so the standard formatting is cheap enough; it always fits.
        let _ = write!(rest, "{}", ip.to_canonical());
        let len = (45 - rest.len()) as u8;
        ClientIp { len, text }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }
}

/// `Content-Length: n\r\n`.
pub fn content_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The headers every response to the client carries, the gateway's own errors included.
pub fn write_to_client(out: &mut Vec<u8>, request_id: &RequestId) {
    line(out, b"X-Request-ID", request_id.as_bytes());
    out.extend_from_slice(b"X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request_id::accept_or_generate;

    fn text(out: &[u8]) -> &str {
        std::str::from_utf8(out).unwrap()
    }

    #[test]
    fn appends_client_to_forwarded_for_chain() {
        let id = accept_or_generate(Some(b"id-1"));
        let mut out = Vec::new();
        let chain: [&[u8]; 3] = [b" 10.0.0.1 ", b"", b"10.0.0.2, 10.0.0.3"];
        write_forwarding(
            &mut out,
            chain.into_iter(),
            Some(&ClientIp::new("192.0.2.7".parse().unwrap())),
            Some(b"api.example.org"),
            &id,
        );
        assert_eq!(
            text(&out),
            "X-Request-ID: id-1\r\n\
             X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\r\n\
             X-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: api.example.org\r\n"
        );

        for (ip, shown) in [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("2001:db8::7", "2001:db8::7"),
        ] {
            let mut out = Vec::new();
            let ip = ClientIp::new(ip.parse().unwrap());
            write_forwarding(&mut out, std::iter::empty(), Some(&ip), None, &id);
            assert!(text(&out).contains(&format!("X-Forwarded-For: {shown}\r\n")));
            assert!(!text(&out).contains("X-Forwarded-Host"));
        }
    }

    #[test]
    fn client_ip_text() {
        for (ip, want) in [
            ("0.0.0.0", "0.0.0.0"),
            ("192.168.10.255", "192.168.10.255"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("2001:db8::7", "2001:db8::7"),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            ("::1.2.3.4", "::102:304"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(text(ClientIp::new(ip).as_bytes()), want, "{ip}");
        }
    }

    #[test]
    fn classifies_headers_case_insensitively() {
        for h in [
            "Connection",
            "KEEP-ALIVE",
            "te",
            "Transfer-Encoding",
            "Upgrade",
            "Trailer",
        ] {
            assert!(Name::of(h).is_hop_by_hop(), "{h}");
        }
        for h in [
            "Host",
            "Cookie",
            "Authorization",
            "X-Forwarded-Hostname",
            "tf",
            "",
            "Hosts",
        ] {
            let name = Name::of(h);
            assert!(!name.is_hop_by_hop() && !name.is_set_upstream(), "{h}");
        }
        assert_eq!(Name::of("hOsT"), Name::Host);
        assert_eq!(Name::of("Content-Length"), Name::ContentLength);
        assert!(Name::of("X-Forwarded-For").is_set_upstream());
        assert!(Name::of("x-frame-options").is_set_downstream());
        assert!(Name::of("X-Content-Type-Options").is_set_downstream());
        assert!(!Name::of("content-type").is_set_downstream());
        assert!(Name::of("Proxy-Authorization").is_hop_by_hop());
    }

    #[test]
    fn only_real_nominations_need_checking() {
        assert!(!nominates_others(&[b"keep-alive", b"Upgrade, close"]));
        assert!(nominates_others(&[b"keep-alive, X-Private"]));
    }

    #[test]
    fn connection_nominates_headers() {
        let conn: [&[u8]; 2] = [b"keep-alive, X-Private", b" Upgrade "];
        assert!(is_nominated(&conn, "x-private"));
        assert!(is_nominated(&conn, "upgrade"));
        assert!(!is_nominated(&conn, "x-priv"));
        assert_eq!(tokens(b" a,, b ,").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
    }

    #[test]
    fn client_headers_are_fixed_lines() {
        let mut out = Vec::new();
        write_to_client(&mut out, &accept_or_generate(Some(b"id-3")));
        assert_eq!(
            text(&out),
            "X-Request-ID: id-3\r\nX-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n"
        );
    }
}
