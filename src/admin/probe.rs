//! `beat-gateway --probe`: the container healthcheck. The slim image has no curl, so the
//! binary asks its own admin listener's `/readyz` (over loopback when the listener is on
//! every address) and exits 0 when it answers 200.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(3);

/// Ask `/readyz`; Ok when ready, Err with what was wrong.
pub fn readyz(host: IpAddr, port: u16, token: Option<&str>) -> Result<(), String> {
    let host = match host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(host, port);
    let mut stream =
        TcpStream::connect_timeout(&addr, DEADLINE).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(DEADLINE))
        .and_then(|()| stream.set_write_timeout(Some(DEADLINE)))
        .map_err(|e| e.to_string())?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("{addr}: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let status_line = answer.lines().next().unwrap_or("");
    if status_line.split(' ').nth(1) == Some("200") {
        Ok(())
    } else {
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        Err(format!("{status_line} {body}").trim().to_owned())
    }
}
