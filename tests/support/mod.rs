//! Test support: the real gateway binary on an ephemeral loopback port, and real upstream
//! servers (HTTP, WebSocket, raw TCP) on loopback.
#![allow(dead_code)] // each test file uses a different part of this

pub mod jwt;
pub mod load;
pub mod redis;
pub mod strict;
pub mod upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_beat-gateway");

/// A running gateway process; killed on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    /// The admin listener's port.
    pub admin_port: u16,
    log_path: PathBuf,
}

/// A fresh path under Cargo's per-target temp dir.
pub fn temp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{n}-{name}", std::process::id()))
}

pub fn write_config(json: &str) -> PathBuf {
    let path = temp_path("services.json");
    std::fs::write(&path, json).expect("write test config");
    path
}

/// A loopback port that nothing listens on (bound, then released), never one this process
/// handed out before: the kernel may give a just-released port again, and a gateway given
/// the same port twice (public and admin) refuses to start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A services.json with one route per `(name, prefix, upstream, extra fields)`.
pub fn config(routes: &[(&str, &str, SocketAddr, &str)]) -> String {
    let services: Vec<String> = routes
        .iter()
        .map(|(name, prefix, addr, extra)| {
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(", {extra}")
            };
            format!(
                r#"{{"name": "{name}", "host": "{}", "port": {}, "prefix": "{prefix}"{extra}}}"#,
                addr.ip(),
                addr.port()
            )
        })
        .collect();
    format!(r#"{{"services": [{}]}}"#, services.join(",\n"))
}

/// The most common setup: a test HTTP upstream named `name` behind the route
/// `core-service` (`/core`, prefix stripped).
pub async fn core_gateway(name: &str) -> (upstream::Server, Gateway) {
    let up = upstream::http(name).await;
    let gw = core_route(up.addr);
    (up, gw)
}

/// A gateway with the single route `core-service` (`/core`, prefix stripped) to `addr`.
pub fn core_route(addr: SocketAddr) -> Gateway {
    Gateway::start(&config(&[(
        "core-service",
        "/core",
        addr,
        r#""strip_prefix": true"#,
    )]))
}

impl Gateway {
    pub fn start(config_json: &str) -> Gateway {
        Self::start_with(config_json, &[])
    }

    pub fn start_with(config_json: &str, env: &[(&str, &str)]) -> Gateway {
        let config = write_config(config_json);
        Self::spawn(
            &["--services", config.to_str().expect("utf-8 temp path")],
            env,
        )
    }

    /// Start the binary with `args`, wait until it accepts connections.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Self::spawn_with_ports(None, args, env)
    }

    /// Start the binary on given ports (a graceful upgrade's new process).
    pub fn spawn_on(port: u16, admin_port: u16, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        Self::spawn_with_ports(Some((port, admin_port)), args, env)
    }

    fn spawn_with_ports(ports: Option<(u16, u16)>, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        for _ in 0..5 {
            let (port, admin_port) = ports.unwrap_or_else(|| (free_port(), free_port()));
            let log_path = temp_path("gateway.log");
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut cmd = Command::new(BIN);
            cmd.current_dir(env!("CARGO_TARGET_TMPDIR"))
                .args(args)
                .env("PROXY_HOST", "127.0.0.1")
                .env("PROXY_PORT", port.to_string())
                .env("ADMIN_PORT", admin_port.to_string())
                .env("PROXY_THREADS", "2")
                .env("PROXY_GRACE_SECONDS", "1")
                .env("RUST_LOG", "info")
                .env_remove("SERVICES_CONFIG")
                .env_remove("LOG_FORMAT")
                .stdout(Stdio::null())
                .stderr(log);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawn beat-gateway");
            let mut gw = Gateway {
                child,
                port,
                admin_port,
                log_path,
            };
            if gw.wait_ready() {
                return gw;
            }
            // The port was taken between probe and bind: try another.
            if !gw.log().contains("Address already in use") {
                panic!("gateway did not start; log:\n{}", gw.log());
            }
        }
        panic!("gateway could not find a free port");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            // Both listeners: Pingora starts its services one after the other. The admin
            // one first, so that the public port (where connections count against the
            // limits) is probed once, when all else is up.
            let up = |port: u16| TcpStream::connect(("127.0.0.1", port)).is_ok();
            if up(self.admin_port) && up(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Wait (bounded) until the log contains `needle`; the access line is written just
    /// after the response, so a test may read the log a moment before it lands.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident memory of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} failed");
    }

    /// Wait (bounded) for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send raw bytes on a fresh connection and read until the server closes or goes quiet.
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // One complete response is enough.
                if response_complete(&out) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let head = text[..head_end].to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(len) => buf.len() >= head_end + 4 + len,
        None => text.ends_with("0\r\n\r\n"),
    }
}

/// Run the binary to completion with `args`, listening (if it gets that far) on a free
/// loopback port; the output is returned whatever the exit status.
pub fn run_bin(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("PROXY_HOST", "127.0.0.1")
        .env("PROXY_PORT", free_port().to_string())
        .env("ADMIN_PORT", free_port().to_string())
        .env_remove("SERVICES_CONFIG")
        .output()
        .expect("run beat-gateway")
}

/// The process's rustls crypto provider (ring, as the gateway's): reqwest is built without
/// one of its own, and every client needs it.
pub fn install_tls_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

pub fn client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// A request with extra headers through the gateway.
pub async fn send(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().request(method, gw.url(path));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send().await.expect("request")
}

/// `GET path` with extra headers.
pub async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    send(gw, reqwest::Method::GET, path, headers).await
}

/// The status of `GET path` with extra headers.
pub async fn status(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> u16 {
    get(gw, path, headers).await.status().as_u16()
}

/// Owned environment pairs as `Gateway::start_with` takes them.
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The admin listener's `/metrics` text.
/// `GET` on the admin listener, without credentials.
pub async fn admin_get(gw: &Gateway, path: &str) -> reqwest::Response {
    client()
        .get(gw.admin_url(path))
        .send()
        .await
        .expect("admin listener")
}

pub async fn metrics(gw: &Gateway) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// The gateway's JSON error body.
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a WebSocket through the gateway and check that the first frame is echoed.
pub async fn ws_connect_echoing(url: &str, first: &str) -> WebSocket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let request = url.into_client_request().expect("WebSocket URL");
    ws_request_echoing(request, first).await
}

/// The same with a request of the caller's (headers, a fixed key).
pub async fn ws_request_echoing(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    first: &str,
) -> WebSocket {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, resp) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket upgrade");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text(first))
        .await
        .expect("send the first frame");
    let reply = ws.next().await;
    assert!(
        matches!(&reply, Some(Ok(m)) if *m == Message::text(first)),
        "first frame not echoed: {reply:?}"
    );
    ws
}
