//! A strict service: it reads what the gateway sends by RFC 9112 and records every request
//! it could frame, and every way the bytes broke the rules (bare LF, obs-fold, NUL/CR in a
//! value, a doubled or missing Host, Content-Length beside Transfer-Encoding, a coding
//! other than chunked, a malformed chunk, a trailer). A gateway that forwards only
//! well-framed requests leaves `anomalies` empty. A message the gateway gave up on half-way
//! (its client's body turned out malformed) ends with the connection: `aborted`, which a
//! service discards, not an anomaly.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as the service framed it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Record {
    pub requests: Vec<Seen>,
    pub anomalies: Vec<String>,
    pub aborted: usize,
}

pub struct Strict {
    pub addr: SocketAddr,
    pub record: Arc<Mutex<Record>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Strict {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Strict {
    pub fn requests(&self) -> Vec<Seen> {
        self.record.lock().unwrap().requests.clone()
    }

    /// Messages that ended with their connection.
    pub fn aborted(&self) -> usize {
        self.record.lock().unwrap().aborted
    }

    pub fn anomalies(&self) -> Vec<String> {
        self.record.lock().unwrap().anomalies.clone()
    }
}

/// Start the strict service on loopback; it answers each request `200 ok`, keep-alive.
pub async fn start() -> Strict {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let record = Arc::new(Mutex::new(Record::default()));
    let rec = record.clone();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock, rec.clone()));
        }
    });
    Strict { addr, record, task }
}

async fn serve(mut sock: TcpStream, record: Arc<Mutex<Record>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match read_request(&mut sock, &mut buf).await {
            Ok(Some(seen)) => {
                record.lock().unwrap().requests.push(seen);
                let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if sock.write_all(reply).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) if e.starts_with(ABORTED) => {
                record.lock().unwrap().aborted += 1;
                return;
            }
            Err(anomaly) => {
                record.lock().unwrap().anomalies.push(anomaly);
                return;
            }
        }
    }
}

/// The prefix of a message that ended with its connection.
const ABORTED: &str = "aborted:";

/// More bytes into `buf`; false at EOF (or silence: the gateway holds pooled
/// connections open).
async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 8192];
    match tokio::time::timeout(Duration::from_secs(30), sock.read(&mut tmp)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
        _ => false,
    }
}

/// One line ending in CRLF, taken from the front of `buf` (reading more as needed).
async fn line(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            if i == 0 || buf[i - 1] != b'\r' {
                return Err(format!(
                    "bare LF in {:?}",
                    String::from_utf8_lossy(&buf[..i])
                ));
            }
            let line = buf[..i - 1].to_vec();
            buf.drain(..=i);
            if line.contains(&b'\r') {
                return Err(format!(
                    "CR inside a line: {:?}",
                    String::from_utf8_lossy(&line)
                ));
            }
            return Ok(Some(line));
        }
        if buf.len() > 256 * 1024 {
            return Err("a line over 256 KiB".into());
        }
        if !fill(sock, buf).await {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(format!("{ABORTED} connection ended inside a line"))
            };
        }
    }
}

async fn exactly(sock: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Result<Vec<u8>, String> {
    while buf.len() < n {
        if !fill(sock, buf).await {
            return Err(format!(
                "{ABORTED} body ended after {} of {n} bytes",
                buf.len()
            ));
        }
    }
    Ok(buf.drain(..n).collect())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Seen>, String> {
    let Some(request_line) = line(sock, buf).await? else {
        return Ok(None);
    };
    let request_line = String::from_utf8(request_line).map_err(|_| "request line not UTF-8")?;
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    if !is_token(method) || !target.starts_with('/') || version != "HTTP/1.1" {
        return Err(format!("malformed request line {request_line:?}"));
    }
    let mut headers = Vec::new();
    loop {
        let Some(l) = line(sock, buf).await? else {
            return Err(format!("{ABORTED} connection ended inside the head"));
        };
        if l.is_empty() {
            break;
        }
        if l[0] == b' ' || l[0] == b'\t' {
            return Err(format!("obs-fold: {:?}", String::from_utf8_lossy(&l)));
        }
        if l.contains(&0) {
            return Err("NUL in a header line".into());
        }
        let l = String::from_utf8(l).map_err(|e| format!("header not UTF-8: {e}"))?;
        let Some((name, value)) = l.split_once(':') else {
            return Err(format!("header without colon: {l:?}"));
        };
        if !is_token(name) {
            return Err(format!("bad header name {name:?}"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let all = |n: &'static str| headers.iter().filter(move |(k, _)| k == n).map(|(_, v)| v);
    if all("host").count() != 1 {
        return Err(format!("{} Host headers", all("host").count()));
    }
    let te: Vec<&String> = all("transfer-encoding").collect();
    let cl: Vec<&String> = all("content-length").collect();
    let body = match (te.as_slice(), cl.as_slice()) {
        ([], []) => Vec::new(),
        ([], [n]) => {
            let n: usize = n
                .parse()
                .ok()
                .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(format!("bad Content-Length {n:?}"))?;
            exactly(sock, buf, n).await?
        }
        ([c], []) if c.eq_ignore_ascii_case("chunked") => chunked(sock, buf).await?,
        _ => return Err(format!("framing headers TE={te:?} CL={cl:?}")),
    };
    Ok(Some(Seen {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        body,
    }))
}

async fn chunked(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let size_line = line(sock, buf)
            .await?
            .ok_or(format!("{ABORTED} ended before a chunk size"))?;
        let size_line = String::from_utf8(size_line).map_err(|_| "chunk size not UTF-8")?;
        let size = size_line.split(';').next().unwrap_or_default();
        if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad chunk size {size_line:?}"));
        }
        let n = usize::from_str_radix(size, 16).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        body.extend(exactly(sock, buf, n).await?);
        let end = line(sock, buf)
            .await?
            .ok_or(format!("{ABORTED} ended after chunk data"))?;
        if !end.is_empty() {
            return Err("chunk data not followed by CRLF".into());
        }
    }
    let trailer = line(sock, buf)
        .await?
        .ok_or(format!("{ABORTED} ended before the last CRLF"))?;
    if !trailer.is_empty() {
        return Err(format!(
            "a trailer reached the service: {:?}",
            String::from_utf8_lossy(&trailer)
        ));
    }
    Ok(body)
}
