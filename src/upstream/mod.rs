//! Where a route's requests go: the service's address, found without blocking the event
//! loop, and the Pingora peer built from it.
//!
//! Pingora's `HttpPeer::new("host:port")` resolves names with a blocking call and panics when
//! that fails. Here names are resolved on tokio's blocking pool, cached, refreshed in the
//! background, and refreshed at once after a failed connect, so a container that restarts
//! with a new address is found again. Peers are always built from socket addresses.

mod resolve;

use std::net::SocketAddr;
use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;

pub use resolve::{ResolveError, Resolver};

use crate::router::Route;

/// How long idle upstream connections are kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The upstream of one route.
#[derive(Debug)]
pub struct Upstream {
    resolver: Resolver,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Upstream {
    pub fn new(route: &Route) -> Self {
        Upstream {
            resolver: Resolver::new(&route.host, route.port),
            connect_timeout: route.connect_timeout,
            read_timeout: route.read_timeout,
        }
    }

    /// `host:port` as configured, for logs.
    pub fn target(&self) -> &str {
        self.resolver.target()
    }

    pub async fn address(&self) -> Result<SocketAddr, ResolveError> {
        self.resolver.address().await
    }

    /// The address may be stale (the service moved): look the name up again now.
    pub fn connect_failed(&self) {
        self.resolver.refresh_soon();
    }

    /// A peer for `addr`. Upgraded connections (WebSocket) get no read timeout: a socket
    /// that is open but quiet is legitimate there, and Pingora would otherwise apply the
    /// read timeout to the tunnel.
    pub fn peer(&self, addr: SocketAddr, upgrade: bool) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(addr, false, String::new());
        let options = &mut peer.options;
        options.connection_timeout = Some(self.connect_timeout);
        options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
        if !upgrade {
            options.read_timeout = Some(self.read_timeout);
            options.write_timeout = Some(self.read_timeout);
        }
        Box::new(peer)
    }
}
