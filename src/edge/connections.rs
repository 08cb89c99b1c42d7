//! Connection limits: `PROXY_MAX_CONNECTIONS` open client connections in all, and
//! `PROXY_MAX_CONNECTIONS_PER_IP` from one address, so that one client (or a flood) cannot
//! take every file descriptor and starve the rest.
//!
//! Pingora's per-connection entry point is its `ServerApp::process_new`, which serves a
//! client connection from its first request to its end. [`Admission`] wraps the proxy's
//! app there: it counts the connection in (or refuses it) and out again when the proxy is
//! done with it, and hands everything else to the proxy untouched. Requests still take
//! the one `ProxyHttp` path; only a connection past a limit never reaches it: it gets a
//! `503` JSON (HTTP/1) and is closed.
//!
//! Peers in `TRUSTED_PROXIES` are not held to the per-address limit: behind a load
//! balancer every client has its address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{ALPN, Stream};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::metrics;

/// How long a refused connection is given to send its request before the 503 (reading it
/// first lets the client see the answer rather than a reset).
const REFUSAL_READ: Duration = Duration::from_millis(100);

/// The limits and the live counts.
#[derive(Debug)]
pub struct Limits {
    max: usize,
    per_ip: Option<usize>,
    trusted: Arc<[IpNet]>,
    open: AtomicUsize,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused (the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerIp => "per_ip",
        }
    }
}

impl Limits {
    pub fn new(max: usize, per_ip: Option<usize>, trusted: Arc<[IpNet]>) -> Arc<Limits> {
        Arc::new(Limits {
            max,
            per_ip,
            trusted,
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Count a connection from `ip` in, unless a limit is reached; it counts until the
    /// returned guard is dropped.
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Admitted, Refused> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let ip = ip
            .map(|ip| ip.to_canonical())
            .filter(|ip| self.per_ip.is_some() && !self.trusted.iter().any(|n| n.contains(ip)));
        if let (Some(ip), Some(limit)) = (ip, self.per_ip) {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = by_ip.entry(ip).or_insert(0);
            if *count >= limit {
                drop(by_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerIp);
            }
            *count += 1;
        }
        Ok(Admitted {
            limits: self.clone(),
            ip,
        })
    }

    /// Open client connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// A counted connection.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<Limits>,
    /// Counted per address (not for trusted proxies, nor without a per-address limit).
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut by_ip = self.limits.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = by_ip.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    by_ip.remove(&ip);
                }
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The proxy's app behind the connection limits.
pub struct Admission<A> {
    pub app: Arc<A>,
    pub limits: Arc<Limits>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Admission<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        match self.limits.admit(ip) {
            Ok(_admitted) => {
                let _open = metrics::connection();
                self.app.process_new(stream, shutdown).await
            }
            Err(why) => {
                metrics::connection_refused(why.label());
                // Boxed: its read buffer would otherwise size every connection's task.
                Box::pin(refuse(stream, why)).await;
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Answer a connection past a limit: read what it sent (briefly), then a `503` JSON and
/// close. HTTP/2 connections (ALPN) are closed without one.
async fn refuse(mut stream: Stream, why: Refused) {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return;
    }
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(REFUSAL_READ, stream.read(&mut buf)).await;
    let message = match why {
        Refused::Total => "too many connections",
        Refused::PerIp => "too many connections from this address",
    };
    let body = format!(r#"{{"error":"{message}","status":503}}"#);
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\
         X-Content-Type-Options: nosniff\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn counts_in_and_out_in_all_and_per_address() {
        let trusted: Arc<[IpNet]> = vec!["10.0.0.0/8".parse().unwrap()].into();
        let limits = Limits::new(4, Some(2), trusted);
        let a1 = limits.admit(ip("192.0.2.1")).unwrap();
        let a2 = limits.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(limits.admit(ip("192.0.2.1")).unwrap_err(), Refused::PerIp);
        // A trusted proxy is held to the total only.
        let p1 = limits.admit(ip("10.1.2.3")).unwrap();
        let p2 = limits.admit(ip("10.1.2.3")).unwrap();
        assert_eq!(limits.open(), 4);
        assert_eq!(
            limits.admit(ip("198.51.100.7")).unwrap_err(),
            Refused::Total
        );
        drop((a1, p1));
        assert_eq!(limits.open(), 2);
        let a3 = limits.admit(ip("192.0.2.1")).unwrap();
        drop((a2, a3, p2));
        assert_eq!(limits.open(), 0);
        assert!(
            limits.by_ip.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }

    #[test]
    fn without_a_per_address_limit_only_the_total_counts() {
        let limits = Limits::new(2, None, Vec::new().into());
        let _a = limits.admit(ip("192.0.2.1")).unwrap();
        let _b = limits.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(limits.admit(None).unwrap_err(), Refused::Total);
        assert!(limits.by_ip.lock().unwrap().is_empty());
    }
}
