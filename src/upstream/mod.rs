//! Where a route's requests go: the service's address, found without blocking the event
//! loop, and connections to it, kept alive and reused.
//!
//! Names are resolved on tokio's blocking pool, cached, refreshed in the background, and
//! refreshed at once after a failed connect, so a container that restarts with a new
//! address is found again.

mod pool;
mod resolve;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

pub use resolve::{ResolveError, Resolver};

use crate::router::Route;

/// The upstream of one route.
#[derive(Debug)]
pub struct Upstream {
    resolver: Resolver,
    connect_timeout: Duration,
    read_timeout: Duration,
    pool: pool::Pool,
}

/// A connection to the upstream.
#[derive(Debug)]
pub struct Connection {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// It served an earlier request (so it may have been closed by the service meanwhile).
    pub reused: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("connect to {addr}: {source}")]
    Failed {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr}: timed out after {after:?}")]
    TimedOut { addr: SocketAddr, after: Duration },
}

impl Upstream {
    pub fn new(route: &Route) -> Self {
        Upstream {
            resolver: Resolver::new(&route.host, route.port),
            connect_timeout: route.connect_timeout,
            read_timeout: route.read_timeout,
            pool: pool::Pool::default(),
        }
    }

    /// `host:port` as configured, for logs.
    pub fn target(&self) -> &str {
        self.resolver.target()
    }

    /// How long the upstream may stay silent while the gateway waits on it.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout
    }

    /// An idle pooled connection, else a new one.
    pub async fn connect(&self, fresh: bool) -> Result<Connection, ConnectError> {
        if !fresh && let Some((stream, addr)) = self.pool.take() {
            return Ok(Connection {
                stream,
                addr,
                reused: true,
            });
        }
        let addr = self.resolver.address().await?;
        let failed = |source| {
            // The address may be stale (the service moved): look the name up again now.
            self.resolver.refresh_soon();
            ConnectError::Failed { addr, source }
        };
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(failed(e)),
                Err(_) => {
                    self.resolver.refresh_soon();
                    return Err(ConnectError::TimedOut {
                        addr,
                        after: self.connect_timeout,
                    });
                }
            };
        stream.set_nodelay(true).map_err(failed)?;
        Ok(Connection {
            stream,
            addr,
            reused: false,
        })
    }

    /// Hand back a connection whose last response was read to its end.
    pub fn release(&self, connection: Connection) {
        self.pool.put(connection.stream, connection.addr);
    }
}
