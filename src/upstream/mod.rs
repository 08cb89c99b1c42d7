//! Where a route's requests go: the service's address, found without blocking the event
//! loop, as the `HttpPeer` Pingora connects to (and pools connections by).
//!
//! `HttpPeer::new("name:port")` would resolve the name with a blocking lookup on the
//! worker thread and panic when it fails. Instead, names are resolved on tokio's blocking
//! pool, cached, refreshed in the background, and refreshed at once after a failed
//! connect, so a container that restarts with a new address is found again. The peer
//! itself is built once per route, with the route's timeouts, and cloned per request with
//! the address of the moment.

mod resolve;

use std::net::SocketAddr;
use std::time::Duration;

use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::upstreams::peer::HttpPeer;

pub use resolve::{ResolveError, Resolver};

use crate::router::Route;

/// An idle pooled connection to a service is closed after this long (services close
/// theirs after 60-120 s; closing first avoids reusing one the service is closing).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The upstream of one route.
#[derive(Debug)]
pub struct Upstream {
    resolver: Resolver,
    /// The route's peer with its options; its address is set per request.
    template: HttpPeer,
    /// What it was built from: a reload keeps an upstream (and its resolver's cache)
    /// whose route still says the same.
    built_from: (String, u16, Duration, Duration),
}

impl Upstream {
    pub fn new(route: &Route) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], route.port));
        let mut template = HttpPeer::new(unspecified, false, String::new());
        let options = &mut template.options;
        options.connection_timeout = Some(route.connect_timeout);
        // Waiting for the service's response head, and for each later read of its body.
        // Pingora drops it once a WebSocket upgrade succeeded (see server.rs).
        options.read_timeout = Some(route.read_timeout);
        options.write_timeout = Some(route.read_timeout);
        options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
        Upstream {
            resolver: Resolver::new(&route.host, route.port),
            template,
            built_from: Self::key(route),
        }
    }

    fn key(route: &Route) -> (String, u16, Duration, Duration) {
        (
            route.host.clone(),
            route.port,
            route.connect_timeout,
            route.read_timeout,
        )
    }

    /// Whether this upstream is what `route` would build.
    pub fn serves(&self, route: &Route) -> bool {
        self.built_from == Self::key(route)
    }

    /// `host:port` as configured, for logs.
    pub fn target(&self) -> &str {
        self.resolver.target()
    }

    /// The peer for one request, at the service's current address.
    pub async fn peer(&self) -> Result<Box<HttpPeer>, ResolveError> {
        let addr = self.resolver.address().await?;
        let mut peer = Box::new(self.template.clone());
        peer._address = PeerAddr::Inet(addr);
        Ok(peer)
    }

    /// A connect failed: the address may be stale (the service moved), so look the name
    /// up again now.
    pub fn connect_failed(&self) {
        self.resolver.refresh_soon();
    }
}
