//! Where a route's requests go: its instances, found without blocking the event loop,
//! chosen by `pingora-load-balancing` among those that are healthy, as the `HttpPeer`
//! Pingora connects to (and pools connections by).
//!
//! `HttpPeer::new("name:port")` would resolve the name with a blocking lookup on the
//! worker thread and panic when it fails. Instead each configured instance's name is
//! resolved on tokio's blocking pool, cached and refreshed ([`resolve`]); every address a
//! name has is an instance (compose `--scale` gives one name several), and the last good
//! answer keeps serving when a lookup fails. Selection is round robin, or Ketama
//! consistent hashing on the client address or a header. An instance is out while its
//! active health check fails (HTTP `GET path`, or a TCP connect) and, passively, after
//! [`EJECT_AFTER`] consecutive failed connects: until its health check passes again, or
//! for [`EJECT_FOR`] when it has none. The peer is built once per route, with the service's
//! timeouts, and cloned per request with the chosen address.
//!
//! An upstream is built from what the service says of it (`config::UpstreamSpec`: its
//! instances, balance, health check and timeouts), not from the router's route.

mod resolve;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

pub use resolve::{ResolveError, Resolver};

use crate::config::{Balance, UpstreamSpec};

/// An idle pooled connection to a service is closed after this long (services close
/// theirs after 60-120 s; closing first avoids reusing one the service is closing).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Consecutive failed connects that take an instance out of rotation.
pub const EJECT_AFTER: u32 = 3;
/// How long a passively ejected instance stays out (then it gets traffic again).
pub const EJECT_FOR: Duration = Duration::from_secs(10);
/// The instances' names are looked up again this often (new or gone replicas).
const REDISCOVER_EVERY: Duration = Duration::from_secs(10);

/// Every address of every configured instance name.
struct Dns(Vec<Resolver>);

#[async_trait]
impl ServiceDiscovery for Dns {
    async fn discover(&self) -> pingora_core::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut backends = BTreeSet::new();
        for resolver in &self.0 {
            // A name that does not resolve (and never did) adds no instance.
            if let Ok(addrs) = resolver.addresses().await {
                for addr in addrs {
                    backends.insert(Backend {
                        addr: PeerAddr::Inet(addr),
                        weight: 1,
                        ext: Default::default(),
                    });
                }
            }
        }
        Ok((backends, HashMap::new()))
    }
}

enum Selector {
    RoundRobin(LoadBalancer<RoundRobin>),
    Hash(LoadBalancer<Consistent>),
}

impl Selector {
    fn backends(&self) -> &Backends {
        match self {
            Selector::RoundRobin(lb) => lb.backends(),
            Selector::Hash(lb) => lb.backends(),
        }
    }

    async fn update(&self) {
        let result = match self {
            Selector::RoundRobin(lb) => lb.update().await,
            Selector::Hash(lb) => lb.update().await,
        };
        if let Err(e) = result {
            log::warn!("upstream discovery: {e}");
        }
    }

    /// `checked`: an active health check runs on these backends (without one, and the
    /// gateway never disables a backend by hand, every member is ready).
    fn select(
        &self,
        key: &[u8],
        checked: bool,
        accept: impl Fn(&Backend, bool) -> bool,
    ) -> Option<Backend> {
        // One instance (most routes): nothing to choose between. The balancer would walk
        // its ring, hashing each candidate into a set of those seen, to arrive at the same
        // one; its readiness is asked only when a health check can have changed it.
        let backends = self.backends();
        let all = backends.get_backend();
        if all.len() == 1 {
            let only = all.first()?;
            let ready = !checked || backends.ready(only);
            return accept(only, ready).then(|| only.clone());
        }
        match self {
            Selector::RoundRobin(lb) => lb.select_with(key, 256, accept),
            Selector::Hash(lb) => lb.select_with(key, 256, accept),
        }
    }
}

/// Why no peer could be given.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// No instance name resolves (and none ever did): 502.
    #[error("{0}")]
    Unresolved(ResolveError),
    #[error("no instance of {0} resolves")]
    NoInstance(String),
    /// Instances exist but none is healthy: 503 at once.
    #[error("no healthy instance of {0}")]
    NoneHealthy(String),
}

/// Passive health: consecutive failed connects per address, and when one was ejected.
#[derive(Default)]
struct Passive {
    failures: HashMap<SocketAddr, (u32, Option<Instant>)>,
}

/// The upstream of one route.
pub struct Upstream {
    target: String,
    resolvers: Vec<Resolver>,
    selector: Selector,
    /// The route's peer with its options; its address is set per request.
    template: HttpPeer,
    /// What it was built from: a reload keeps an upstream (its resolver caches and
    /// health state) whose service still says the same.
    spec: UpstreamSpec,
    discovered: AtomicBool,
    discovering: tokio::sync::Mutex<()>,
    last_discovery: Mutex<Option<Instant>>,
    last_check: Mutex<Option<Instant>>,
    /// A health pass or discovery is running (the walker does not start another).
    busy: AtomicBool,
    passive: RwLock<Passive>,
    /// Entries in `passive` (read without the lock on every request).
    passive_len: AtomicUsize,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.target)
            .finish()
    }
}

impl Upstream {
    /// The upstream of a service, from its instances, balance, health check and timeouts.
    pub fn new(spec: UpstreamSpec) -> Self {
        // The first instance (validation ensures there is one): the template's port until
        // an address is chosen, and the `Host` of an HTTP health check.
        let (host, port) = spec.instances.first().cloned().unwrap_or_default();
        let unspecified = SocketAddr::from(([0, 0, 0, 0], port));
        let mut template = HttpPeer::new(unspecified, false, String::new());
        let options = &mut template.options;
        options.connection_timeout = Some(spec.connect_timeout);
        // Waiting for the service's response head, and for each later read of its body.
        // Pingora drops it once a WebSocket upgrade succeeded (see server.rs).
        options.read_timeout = Some(spec.read_timeout);
        options.write_timeout = Some(spec.read_timeout);
        options.idle_timeout = Some(POOL_IDLE_TIMEOUT);
        let resolvers: Vec<Resolver> = spec
            .instances
            .iter()
            .map(|(host, port)| Resolver::new(host, *port))
            .collect();
        let target = resolvers
            .iter()
            .map(Resolver::target)
            .collect::<Vec<_>>()
            .join(", ");
        let discovery = || Backends::new(Box::new(Dns(resolvers.clone())));
        let mut selector = match spec.balance {
            Balance::RoundRobin => Selector::RoundRobin(LoadBalancer::from_backends(discovery())),
            _ => Selector::Hash(LoadBalancer::from_backends(discovery())),
        };
        if let Some(hc) = &spec.health_check {
            let check: Box<dyn pingora_load_balancing::health_check::HealthCheck + Send + Sync> =
                match &hc.path {
                    Some(path) => {
                        let mut http = HttpHealthCheck::new(&host, false);
                        if let Ok(req) =
                            pingora_http::RequestHeader::build("GET", path.as_bytes(), None)
                        {
                            http.req = req;
                            let _ = http.req.insert_header(http::header::HOST, host.as_str());
                        }
                        http.peer_template.options.connection_timeout = Some(hc.timeout);
                        http.peer_template.options.read_timeout = Some(hc.timeout);
                        http.consecutive_success = 1;
                        http.consecutive_failure = 1;
                        Box::new(http)
                    }
                    None => {
                        let mut tcp = TcpHealthCheck::new();
                        tcp.peer_template.options.connection_timeout = Some(hc.timeout);
                        tcp.consecutive_success = 1;
                        tcp.consecutive_failure = 1;
                        tcp
                    }
                };
            match &mut selector {
                Selector::RoundRobin(lb) => lb.set_health_check(check),
                Selector::Hash(lb) => lb.set_health_check(check),
            }
        }
        Upstream {
            target,
            resolvers,
            selector,
            template,
            spec,
            discovered: AtomicBool::new(false),
            discovering: tokio::sync::Mutex::new(()),
            last_discovery: Mutex::new(None),
            last_check: Mutex::new(None),
            busy: AtomicBool::new(false),
            passive: RwLock::new(Passive::default()),
            passive_len: AtomicUsize::new(0),
        }
    }

    /// Whether this upstream is what `spec` would build.
    pub fn serves(&self, spec: &UpstreamSpec) -> bool {
        self.spec == *spec
    }

    /// The configured instances, `host:port, ...`, for logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn balance(&self) -> &Balance {
        &self.spec.balance
    }

    /// Look the instances up once before the first request (later, the walker does).
    async fn ensure_discovered(&self) {
        if self.discovered.load(Ordering::Acquire) {
            return;
        }
        let _one = self.discovering.lock().await;
        if !self.discovered.load(Ordering::Acquire) {
            self.discover().await;
        }
    }

    async fn discover(&self) {
        self.selector.update().await;
        if let Ok(mut at) = self.last_discovery.lock() {
            *at = Some(Instant::now());
        }
        self.discovered.store(true, Ordering::Release);
    }

    /// The peer for one request: a healthy instance, not one in `tried`, chosen by `key`
    /// (ignored by round robin).
    pub async fn peer(&self, key: &[u8], tried: &[SocketAddr]) -> Result<Box<HttpPeer>, PeerError> {
        // Discovery runs once per upstream and the failure answer is rare: both boxed, so
        // that this per-request future stays small.
        if !self.discovered.load(Ordering::Acquire) {
            Box::pin(self.ensure_discovered()).await;
        }
        let passive = self.passive_len.load(Ordering::Relaxed) > 0;
        let chosen = self
            .selector
            .select(key, self.spec.health_check.is_some(), |b, healthy| {
                let Some(addr) = b.addr.as_inet() else {
                    return false;
                };
                healthy && !tried.contains(addr) && !(passive && self.ejected(addr))
            });
        let Some(backend) = chosen else {
            return Err(Box::pin(self.why_no_peer()).await);
        };
        let mut peer = Box::new(self.template.clone());
        peer._address = backend.addr;
        Ok(peer)
    }

    async fn why_no_peer(&self) -> PeerError {
        if !self.selector.backends().get_backend().is_empty() {
            return PeerError::NoneHealthy(self.target.clone());
        }
        for resolver in &self.resolvers {
            if let Err(e) = resolver.address().await {
                return PeerError::Unresolved(e);
            }
        }
        PeerError::NoInstance(self.target.clone())
    }

    fn ejected(&self, addr: &SocketAddr) -> bool {
        self.passive
            .read()
            .ok()
            .and_then(|p| p.failures.get(addr).and_then(|(_, at)| *at))
            .is_some_and(|at| at.elapsed() < EJECT_FOR)
    }

    /// Every instance and whether it takes traffic.
    pub async fn instances(&self) -> Vec<(SocketAddr, bool)> {
        self.ensure_discovered().await;
        let backends = self.selector.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| {
                let addr = *b.addr.as_inet()?;
                Some((addr, backends.ready(b) && !self.ejected(&addr)))
            })
            .collect()
    }

    /// Whether another instance than `addr` could take the request now.
    pub fn has_other(&self, addr: Option<SocketAddr>, tried: &[SocketAddr]) -> bool {
        let backends = self.selector.backends();
        backends.get_backend().iter().any(|b| {
            b.addr.as_inet().is_some_and(|a| {
                Some(*a) != addr && !tried.contains(a) && backends.ready(b) && !self.ejected(a)
            })
        })
    }

    /// A connect to `addr` failed: after [`EJECT_AFTER`] in a row, it is out for
    /// [`EJECT_FOR`]; its name is looked up again (the service may have moved).
    pub fn connect_failed(&self, addr: Option<SocketAddr>) {
        for resolver in &self.resolvers {
            resolver.refresh_soon();
        }
        let Some(addr) = addr else { return };
        if let Ok(mut p) = self.passive.write() {
            let entry = p.failures.entry(addr).or_insert((0, None));
            entry.0 += 1;
            if entry.0 >= EJECT_AFTER && entry.1.is_none_or(|at| at.elapsed() >= EJECT_FOR) {
                entry.1 = Some(Instant::now());
                log::warn!(
                    "upstream {addr} ({}): {} failed connects in a row; out for {EJECT_FOR:?}",
                    self.target,
                    entry.0
                );
            }
            self.passive_len.store(p.failures.len(), Ordering::Relaxed);
        }
    }

    /// A connect to `addr` succeeded: its failure count starts again.
    pub fn connected(&self, addr: Option<SocketAddr>) {
        if self.passive_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let (Some(addr), Ok(mut p)) = (addr, self.passive.write()) {
            p.failures.remove(&addr);
            self.passive_len.store(p.failures.len(), Ordering::Relaxed);
        }
    }

    /// The walker's visit: look the names up again every [`REDISCOVER_EVERY`], run the
    /// health check every interval. Returns at once when a visit is still running.
    pub async fn tick(&self) {
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        let due = |at: &Mutex<Option<Instant>>, every: Duration| {
            at.lock()
                .map(|t| t.is_none_or(|t| t.elapsed() >= every))
                .unwrap_or(true)
        };
        if due(&self.last_discovery, REDISCOVER_EVERY) {
            self.discover().await;
        }
        if let Some(hc) = &self.spec.health_check
            && due(&self.last_check, hc.interval)
        {
            if let Ok(mut at) = self.last_check.lock() {
                *at = Some(Instant::now());
            }
            let backends = self.selector.backends();
            backends.run_health_check(true).await;
            // An instance that passes its check again is back, passive ejection or not.
            if self.passive_len.load(Ordering::Relaxed) > 0
                && let Ok(mut p) = self.passive.write()
            {
                for b in backends.get_backend().iter() {
                    if let Some(addr) = b.addr.as_inet()
                        && backends.ready(b)
                    {
                        p.failures.remove(addr);
                    }
                }
                self.passive_len.store(p.failures.len(), Ordering::Relaxed);
            }
        }
        self.busy.store(false, Ordering::Release);
    }
}
