//! Idle keep-alive connections to one upstream, reused most-recent first.
//!
//! Most recent first keeps a small hot set of connections busy and lets the rest age out.
//! A connection idle for a while may have been closed by the service meanwhile (servers
//! close idle keep-alive connections on their own schedule), so one that sat longer than
//! [`PROBE_AFTER`] is checked with a non-blocking read before it is handed out; under load
//! connections come back within milliseconds and cost no extra system call.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// Idle connections kept per upstream.
const MAX_IDLE: usize = 256;
/// Idle connections older than this are closed. Below the idle timeouts of the services'
/// servers (Cowboy 60 s, Kestrel 130 s), so the gateway is normally the side that closes.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections idle longer than this are checked before reuse.
const PROBE_AFTER: Duration = Duration::from_secs(1);

struct Idle {
    stream: TcpStream,
    addr: SocketAddr,
    since: Instant,
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("idle", &self.len()).finish()
    }
}

impl Pool {
    /// A live idle connection, if there is one.
    pub fn take(&self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            let age = idle.since.elapsed();
            if age >= IDLE_TIMEOUT || (age >= PROBE_AFTER && !is_open(&idle.stream)) {
                continue;
            }
            return Some((idle.stream, idle.addr));
        }
    }

    /// Keep `stream` for reuse; the oldest connections go when the pool is full or stale.
    pub fn put(&self, stream: TcpStream, addr: SocketAddr) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let now = Instant::now();
        let stale = idle
            .iter()
            .take_while(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
            .count();
        let excess = (idle.len() + 1).saturating_sub(MAX_IDLE).max(stale);
        let len = idle.len();
        idle.drain(..excess.min(len));
        idle.push(Idle {
            stream,
            addr,
            since: now,
        });
    }

    pub fn len(&self) -> usize {
        self.idle.lock().map_or(0, |i| i.len())
    }
}

/// The peer has neither closed the connection nor sent anything unasked.
fn is_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn reuses_most_recent_first_and_caps_its_size() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let mut servers = Vec::new();
        let mut last_port = 0;
        for _ in 0..MAX_IDLE + 3 {
            let (client, server) = pair(&listener).await;
            last_port = client.local_addr().unwrap().port();
            pool.put(client, addr);
            servers.push(server);
        }
        assert_eq!(pool.len(), MAX_IDLE);
        let (stream, _) = pool.take().unwrap();
        assert_eq!(stream.local_addr().unwrap().port(), last_port);
    }

    #[tokio::test]
    async fn drops_connections_the_peer_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = Pool::default();
        let (client, server) = pair(&listener).await;
        pool.put(client, addr);
        drop(server);
        // Age it past the probe threshold.
        pool.idle.lock().unwrap()[0].since -= PROBE_AFTER;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take().is_none());

        let (client, _server) = pair(&listener).await;
        pool.put(client, addr);
        pool.idle.lock().unwrap()[0].since -= PROBE_AFTER;
        assert!(pool.take().is_some(), "an open idle connection is reused");

        let (client, _server) = pair(&listener).await;
        pool.put(client, addr);
        pool.idle.lock().unwrap()[0].since -= IDLE_TIMEOUT;
        assert!(pool.take().is_none(), "a stale connection is closed");
    }
}
