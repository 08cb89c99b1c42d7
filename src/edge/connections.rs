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
//! At the total limit a new connection does not get the 503 while some connection is idle
//! (an HTTP/1 connection waiting for a request with nothing of it read: kept alive between
//! requests, or open without a first one). The connection idle the longest is closed and
//! the new one takes its place, as nginx reuses its keep-alive connections when it runs
//! out: connections that send nothing cannot lock real clients out. Pingora keeps the idle
//! connections in order (`IdleConnections`, vendored pingora-core, vendor/README.md). The
//! new connection waits for the evicted one to close (well under a millisecond; at most
//! [`EVICTION_ATTEMPTS`] x [`EVICTION_WAIT`]), so the count never exceeds the limit; the
//! slot freed then is handed over to the connections waiting so, not uncounted, so that a
//! newcomer arriving meanwhile cannot take it without evicting one itself. Only when every
//! connection is busy (a request or response under way, a head half sent, a WebSocket, an
//! HTTP/2 connection) does it get the 503.
//!
//! The per-address limit is not relieved that way: an address at its limit is refused
//! even if some of its connections are idle, and is refused before it could evict anyone's.
//! Peers in `TRUSTED_PROXIES` are not held to it: behind a load balancer every client has
//! its address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::http::v1::idle::IdleConnections;
use pingora_core::protocols::{ALPN, Stream};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::metrics;

/// How long a refused connection is given to send its request before the 503 (reading it
/// first lets the client see the answer rather than a reset).
const REFUSAL_READ: Duration = Duration::from_millis(100);

/// How long a new connection at the limit waits for the idle connection it evicted to
/// close (its task wakes, and drops it, well within this)...
const EVICTION_WAIT: Duration = Duration::from_millis(100);
/// ... and how many it evicts at most: another is evicted only when the one before did not
/// close in time (a request reached it just as it was evicted, and it is being served).
const EVICTION_ATTEMPTS: usize = 5;

/// The limits and the live counts.
#[derive(Debug)]
pub struct Limits {
    max: usize,
    per_ip: Option<usize>,
    trusted: Arc<[IpNet]>,
    slots: Mutex<Slots>,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Idle connections, closed oldest first to make room at `max`.
    idle: Option<Arc<IdleConnections>>,
    /// Wakes the new connections waiting for a slot handed over (`Slots::handed`).
    handed: Notify,
}

/// The total count, and the slots owed to new connections that evicted an idle one.
#[derive(Debug, Default, PartialEq, Eq)]
struct Slots {
    /// Connections counted in (at most `max`).
    open: usize,
    /// New connections waiting at the limit for the idle connection each evicted to close.
    /// While some are, a slot freed (by that connection or any other) is not uncounted but
    /// handed over to them, so that a newcomer that evicted nobody cannot take it...
    owed: usize,
    /// ... and the slots handed over, still counted in, not yet taken by a waiting one.
    handed: usize,
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
    /// `idle`: the connections to evict at the total limit (`None`: refuse at once).
    pub fn new(
        max: usize,
        per_ip: Option<usize>,
        trusted: Arc<[IpNet]>,
        idle: Option<Arc<IdleConnections>>,
    ) -> Arc<Limits> {
        Arc::new(Limits {
            max,
            per_ip,
            trusted,
            slots: Mutex::new(Slots::default()),
            by_ip: Mutex::new(HashMap::new()),
            idle,
            handed: Notify::new(),
        })
    }

    /// Count a connection from `ip` in, unless a limit is reached; it counts until the
    /// returned guard is dropped. At the total limit the oldest idle connection is closed
    /// to make room (see the module's docs); this waits for it.
    pub async fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Admitted, Refused> {
        let ip = ip
            .map(|ip| ip.to_canonical())
            .filter(|ip| self.per_ip.is_some() && !self.trusted.iter().any(|n| n.contains(ip)));
        if let (Some(ip), Some(limit)) = (ip, self.per_ip) {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = by_ip.entry(ip).or_insert(0);
            if *count >= limit {
                return Err(Refused::PerIp);
            }
            *count += 1;
        }
        // Counted per address from here: dropped on refusal, the guard uncounts it.
        let mut admitted = Admitted {
            limits: self.clone(),
            ip,
            counted: false,
        };
        if self.count_in().await {
            admitted.counted = true;
            Ok(admitted)
        } else {
            Err(Refused::Total)
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more open connection: at once under the limit; at it, in the slot of the
    /// connection idle the longest, once that has closed. `false` when no connection is
    /// idle (or the ones evicted kept being served instead).
    async fn count_in(&self) -> bool {
        for _ in 0..EVICTION_ATTEMPTS {
            {
                let mut slots = self.slots();
                if slots.open < self.max {
                    slots.open += 1;
                    return true;
                }
                let Some(idle) = &self.idle else {
                    return false;
                };
                if !idle.evict_oldest() {
                    return false;
                }
                slots.owed += 1;
            }
            metrics::connection_evicted();
            let deadline = tokio::time::Instant::now() + EVICTION_WAIT;
            let owed = Owed {
                limits: self,
                settled: false,
            };
            if owed.handed_over(deadline).await {
                return true;
            }
        }
        false
    }

    /// One open connection fewer, or its slot handed over to a new connection waiting.
    fn uncount(&self) {
        let mut slots = self.slots();
        self.release(&mut slots);
    }

    fn release(&self, slots: &mut Slots) {
        if slots.owed > 0 {
            slots.owed -= 1;
            slots.handed += 1;
            self.handed.notify_one();
        } else {
            slots.open -= 1;
        }
    }

    /// Take a slot handed over, if one is.
    fn take_handed(&self) -> bool {
        let mut slots = self.slots();
        let handed = slots.handed > 0;
        if handed {
            slots.handed -= 1;
        }
        handed
    }

    /// Open client connections now.
    pub fn open(&self) -> usize {
        self.slots().open
    }
}

/// A new connection's claim on the next slot freed (one of `Slots::owed`, or once handed
/// over, of `Slots::handed`: the waiting ones take them in any order). Dropped unsettled
/// (the connection's task ended while it waited), it gives the claim back.
struct Owed<'a> {
    limits: &'a Limits,
    settled: bool,
}

impl Owed<'_> {
    /// Whether a slot was handed over by `deadline` (and is now this connection's).
    async fn handed_over(mut self, deadline: tokio::time::Instant) -> bool {
        let limits = self.limits;
        loop {
            // Listening before looking: a slot handed over after the look wakes this.
            let mut handed = std::pin::pin!(limits.handed.notified());
            handed.as_mut().enable();
            if limits.take_handed() {
                self.settled = true;
                return true;
            }
            if tokio::time::timeout_at(deadline, handed).await.is_err() {
                let mut slots = limits.slots();
                self.settled = true;
                if slots.handed > 0 {
                    // Handed over just now.
                    slots.handed -= 1;
                    return true;
                }
                slots.owed = slots.owed.saturating_sub(1);
                return false;
            }
        }
    }
}

impl Drop for Owed<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut slots = self.limits.slots();
        if slots.handed > 0 {
            // Not this one's to keep: on to the next claim, or free.
            slots.handed -= 1;
            self.limits.release(&mut slots);
        } else {
            slots.owed = slots.owed.saturating_sub(1);
        }
    }
}

/// A counted connection.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<Limits>,
    /// Counted per address (not for trusted proxies, nor without a per-address limit).
    ip: Option<IpAddr>,
    /// Counted in the total (only while being admitted is it not).
    counted: bool,
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
        if self.counted {
            self.limits.uncount();
        }
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
        match self.limits.admit(ip).await {
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

    #[tokio::test]
    async fn counts_in_and_out_in_all_and_per_address() {
        let trusted: Arc<[IpNet]> = vec!["10.0.0.0/8".parse().unwrap()].into();
        let limits = Limits::new(4, Some(2), trusted, None);
        let a1 = limits.admit(ip("192.0.2.1")).await.unwrap();
        let a2 = limits.admit(ip("::ffff:192.0.2.1")).await.unwrap();
        assert_eq!(
            limits.admit(ip("192.0.2.1")).await.unwrap_err(),
            Refused::PerIp
        );
        // A trusted proxy is held to the total only.
        let p1 = limits.admit(ip("10.1.2.3")).await.unwrap();
        let p2 = limits.admit(ip("10.1.2.3")).await.unwrap();
        assert_eq!(limits.open(), 4);
        assert_eq!(
            limits.admit(ip("198.51.100.7")).await.unwrap_err(),
            Refused::Total
        );
        assert_eq!(
            limits
                .by_ip
                .lock()
                .unwrap()
                .get(&"198.51.100.7".parse().unwrap()),
            None,
            "a refusal at the total uncounts its address"
        );
        drop((a1, p1));
        assert_eq!(limits.open(), 2);
        let a3 = limits.admit(ip("192.0.2.1")).await.unwrap();
        drop((a2, a3, p2));
        assert_eq!(limits.open(), 0);
        assert!(
            limits.by_ip.lock().unwrap().is_empty(),
            "nothing left behind"
        );
    }

    #[tokio::test]
    async fn without_a_per_address_limit_only_the_total_counts() {
        let limits = Limits::new(2, None, Vec::new().into(), None);
        let _a = limits.admit(ip("192.0.2.1")).await.unwrap();
        let _b = limits.admit(ip("192.0.2.1")).await.unwrap();
        assert_eq!(limits.admit(None).await.unwrap_err(), Refused::Total);
        assert!(limits.by_ip.lock().unwrap().is_empty());
    }

    /// A connection that holds its slot while it waits, idle, in `idle`; it ends (and
    /// frees the slot) when evicted. Returns once it is listed.
    async fn idle_connection(limits: &Arc<Limits>, idle: &Arc<IdleConnections>, from: &str) {
        let (admitted, heard) = idle_held(limits, idle, from).await;
        tokio::spawn(async move {
            let _ = heard.await;
            drop(admitted);
        });
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_idle_connection_makes_room() {
        let idle = Arc::new(IdleConnections::new());
        let limits = Limits::new(2, Some(2), Vec::new().into(), Some(idle.clone()));
        idle_connection(&limits, &idle, "192.0.2.1").await;
        idle_connection(&limits, &idle, "192.0.2.2").await;
        // The first is evicted; the newcomer takes its slot, the count never past 2.
        let c = limits.admit(ip("192.0.2.3")).await.unwrap();
        assert_eq!(limits.open(), 2);
        assert_eq!(idle.len(), 1);
        let by_ip = limits.by_ip.lock().unwrap().clone();
        assert_eq!(by_ip.get(&"192.0.2.1".parse().unwrap()), None, "{by_ip:?}");
        assert_eq!(by_ip.get(&"192.0.2.2".parse().unwrap()), Some(&1));
        // Busy connections (not idle) are never evicted: with the last idle one gone and
        // the rest busy, the next is refused.
        let d = limits.admit(ip("192.0.2.4")).await.unwrap();
        assert!(idle.is_empty());
        assert_eq!(
            limits.admit(ip("192.0.2.5")).await.unwrap_err(),
            Refused::Total
        );
        drop((c, d));
        assert_eq!(limits.open(), 0);
    }

    #[tokio::test]
    async fn an_address_at_its_own_limit_evicts_nothing() {
        let idle = Arc::new(IdleConnections::new());
        let limits = Limits::new(2, Some(1), Vec::new().into(), Some(idle.clone()));
        idle_connection(&limits, &idle, "192.0.2.1").await;
        idle_connection(&limits, &idle, "192.0.2.2").await;
        assert_eq!(
            limits.admit(ip("192.0.2.1")).await.unwrap_err(),
            Refused::PerIp
        );
        assert_eq!(idle.len(), 2, "nobody evicted");
    }

    /// An idle connection counted in from `from`, held by the caller; the receiver hears
    /// when it is evicted (it closes when the caller drops the guard).
    async fn idle_held(
        limits: &Arc<Limits>,
        idle: &Arc<IdleConnections>,
        from: &str,
    ) -> (Admitted, tokio::sync::oneshot::Receiver<()>) {
        let admitted = limits.admit(ip(from)).await.unwrap();
        let (evicted, heard) = tokio::sync::oneshot::channel();
        let idle2 = idle.clone();
        let before = idle.len();
        tokio::spawn(async move {
            let read = idle2
                .read_unless_evicted(std::future::pending::<()>())
                .await;
            assert!(read.is_none());
            let _ = evicted.send(());
        });
        while idle.len() == before {
            tokio::task::yield_now().await;
        }
        (admitted, heard)
    }

    #[tokio::test]
    async fn the_slot_an_eviction_frees_goes_to_the_connection_waiting_for_it() {
        let idle = Arc::new(IdleConnections::new());
        let limits = Limits::new(1, None, Vec::new().into(), Some(idle.clone()));
        let (a, evicted) = idle_held(&limits, &idle, "192.0.2.1").await;
        let waiting = tokio::spawn({
            let limits = limits.clone();
            async move { limits.admit(ip("192.0.2.2")).await }
        });
        evicted.await.unwrap();
        // The evicted one closes; before the waiting one runs, a newcomer: the slot is
        // not its to take, and nothing is left idle to evict.
        drop(a);
        assert_eq!(
            limits.admit(ip("192.0.2.3")).await.unwrap_err(),
            Refused::Total
        );
        let b = waiting.await.unwrap().unwrap();
        assert_eq!(limits.open(), 1);
        drop(b);
        assert_eq!(limits.open(), 0);
        assert_eq!(*limits.slots(), Slots::default());
    }

    #[tokio::test]
    async fn a_connection_gone_while_it_waits_gives_its_claim_back() {
        let idle = Arc::new(IdleConnections::new());
        let limits = Limits::new(1, Some(1), Vec::new().into(), Some(idle.clone()));
        let (a, evicted) = idle_held(&limits, &idle, "192.0.2.1").await;
        let waiting = tokio::spawn({
            let limits = limits.clone();
            async move { limits.admit(ip("192.0.2.2")).await }
        });
        evicted.await.unwrap();
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        drop(a);
        assert_eq!(*limits.slots(), Slots::default());
        assert!(limits.by_ip.lock().unwrap().is_empty());
        let _c = limits.admit(ip("192.0.2.3")).await.unwrap();
    }

    #[tokio::test]
    async fn an_evicted_connection_that_does_not_close_is_waited_for_briefly() {
        // Evicted just as its request came in, it is served and stays open: the new one
        // evicts the next idle one, and with none left is refused.
        let idle = Arc::new(IdleConnections::new());
        let limits = Limits::new(2, None, Vec::new().into(), Some(idle.clone()));
        let (_a, evicted_a) = idle_held(&limits, &idle, "192.0.2.1").await;
        let (b, evicted_b) = idle_held(&limits, &idle, "192.0.2.2").await;
        let start = std::time::Instant::now();
        let waiting = tokio::spawn({
            let limits = limits.clone();
            async move { limits.admit(ip("192.0.2.3")).await }
        });
        evicted_a.await.unwrap();
        evicted_b.await.unwrap();
        assert!(start.elapsed() >= EVICTION_WAIT);
        drop(b);
        let _c = waiting.await.unwrap().unwrap();
        assert_eq!(limits.open(), 2);
        assert_eq!(
            limits.admit(ip("192.0.2.4")).await.unwrap_err(),
            Refused::Total
        );
        let slots = limits.slots();
        assert_eq!((slots.owed, slots.handed), (0, 0), "no claim left behind");
    }
}
