//! The live configuration: everything a request needs that comes from `services.json`,
//! built and validated as a whole ([`Table`]) and swapped atomically ([`Live::reload`]).
//!
//! A request takes the table current when its head arrives and keeps it to its end, so
//! requests in flight and open WebSockets finish on the routes they started with. A new
//! table carries over what has state and did not change: the upstream of a service with
//! the same instances, balance, health check and timeouts (its resolver's cache), and the limiter of a route with the
//! same name and limit (its buckets). The JWKS cache is the verifier's, which outlives
//! tables. An invalid file leaves the current table serving. The listener never restarts.

pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use ipnet::IpNet;

use crate::config::{self, Mode, Service};
use crate::edge::auth::session::SessionStore;
use crate::edge::auth::{self, Verifier};
use crate::edge::cors::Policy;
use crate::edge::rate_limit::{RateLimits, Redis, RouteLimit};
use crate::metrics::{self, Metrics};
use crate::router::RouteTable;
use crate::upstream::Upstream;

/// One version of the routes and what hangs off them, index for index.
pub struct Table {
    pub routes: RouteTable,
    pub upstreams: Vec<Arc<Upstream>>,
    /// The route's own CORS policy, when it has one.
    pub cors: Vec<Option<Arc<Policy>>>,
    pub limits: RateLimits,
    pub metrics: Arc<Metrics>,
    /// sha256 of the `services.json` it was built from.
    pub hash: String,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("routes", &self.routes.routes().len())
            .finish()
    }
}

impl Table {
    /// Whether any route verifies tokens.
    pub fn uses_auth(&self) -> bool {
        self.routes
            .routes()
            .iter()
            .any(|r| r.auth.mode != Mode::Off)
    }
}

/// Where reloads read from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// `--demo`'s built-in routes: nothing to reload.
    Builtin,
}

/// What every table shares, from the environment (it does not change on reload).
pub struct Shared {
    pub redis: Option<Arc<Redis>>,
    pub trusted_proxies: Arc<[IpNet]>,
    /// Which JWT settings are missing (a table with auth on needs none missing).
    pub jwt_missing: Vec<&'static str>,
    pub verifier: Option<Arc<Verifier>>,
    /// The session checks (`JWT_SESSION_CHECK`, `JWT_REVOKED_KEY`), when on.
    pub sessions: Option<Arc<SessionStore>>,
}

/// The current table, and how to make the next one.
pub struct Live {
    current: ArcSwap<Table>,
    source: Source,
    shared: Shared,
    /// Reloads run one at a time.
    reloading: std::sync::Mutex<()>,
    /// The last reload: when (Unix seconds), and its error if it was refused.
    last_reload: std::sync::Mutex<Option<(u64, Option<String>)>>,
    /// Set when SIGTERM arrives: from then on the gateway reports itself not ready and
    /// asks clients to close their connections, while it still serves (see
    /// [`crate::server`]'s shutdown delay).
    draining: AtomicBool,
}

impl Live {
    /// The first table, from services already validated.
    pub fn new(
        services: Vec<Service>,
        hash: &str,
        source: Source,
        shared: Shared,
    ) -> Result<Arc<Live>, String> {
        let table = build(services, hash, None, &shared)?;
        Ok(Arc::new(Live {
            current: ArcSwap::from_pointee(table),
            source,
            shared,
            reloading: std::sync::Mutex::new(()),
            draining: AtomicBool::new(false),
            last_reload: std::sync::Mutex::new(None),
        }))
    }

    /// The process is going away: not ready from now on (it still serves).
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The table new requests use.
    pub fn current(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// The last reload: when (Unix seconds), and its error if it was refused; `None`
    /// before any.
    pub fn last_reload(&self) -> Option<(u64, Option<String>)> {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Read the file again; when it is valid, build the new table and swap it in. On any
    /// error the current table stays and the error (file, service, field) is returned.
    pub fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().map_err(|e| e.to_string())?;
        let outcome = self.try_reload();
        metrics::config_reload(outcome.is_ok());
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((auth::unix_now(), outcome.as_ref().err().cloned()));
        match &outcome {
            Ok(()) => {
                let table = self.current();
                log::info!(
                    "config reloaded: {} routes ({})",
                    table.routes.routes().len(),
                    table
                        .routes
                        .routes()
                        .iter()
                        .map(|r| format!("{} {}", r.name, r.prefix))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Err(e) => log::error!("config reload refused, the current routes keep serving: {e}"),
        }
        outcome
    }

    fn try_reload(&self) -> Result<(), String> {
        let Source::File(path) = &self.source else {
            return Err("the routes are built in (--demo): nothing to reload".into());
        };
        let text = std::fs::read(path)
            .map_err(|e| format!("{}: cannot read the file: {e}", path.display()))?;
        let name = path.display().to_string();
        let services =
            config::parse(&name, &String::from_utf8_lossy(&text)).map_err(|e| e.to_string())?;
        let previous = self.current();
        let table = build(
            services,
            &config::fingerprint(&text),
            Some(&previous),
            &self.shared,
        )
        .map_err(|e| format!("{name}: {e}"))?;
        self.current.store(Arc::new(table));
        Ok(())
    }
}

/// A table from validated services, carrying over from `previous` what did not change.
fn build(
    services: Vec<Service>,
    hash: &str,
    previous: Option<&Table>,
    shared: &Shared,
) -> Result<Table, String> {
    let with_auth: Vec<&str> = services
        .iter()
        .filter(|s| s.auth.mode != Mode::Off)
        .map(|s| s.name.as_str())
        .collect();
    auth::check_settings(&with_auth, &shared.jwt_missing)?;
    let cors = services
        .iter()
        .map(|s| {
            s.cors
                .as_ref()
                .map(|c| Policy::new(c).map(Arc::new))
                .transpose()
                .map_err(|e| format!("service '{}', field 'cors': {e}", s.name))
        })
        .collect::<Result<_, _>>()?;
    // Each upstream from its service's instances, balance, health check and timeouts.
    let upstreams = services
        .iter()
        .map(|service| {
            let spec = service.upstream();
            previous
                .and_then(|p| p.upstreams.iter().find(|u| u.serves(&spec)).cloned())
                .unwrap_or_else(|| Arc::new(Upstream::new(spec)))
        })
        .collect();
    let routes = RouteTable::new(services);
    let limiters = routes
        .routes()
        .iter()
        .map(|route| {
            let spec = route.rate_limit.clone()?;
            Some(
                previous
                    .and_then(|p| p.limits.find(&route.name, &spec))
                    .unwrap_or_else(|| Arc::new(RouteLimit::new(&route.name, spec))),
            )
        })
        .collect();
    let limits = RateLimits::new(
        limiters,
        shared.redis.clone(),
        shared.trusted_proxies.clone(),
    );
    let metrics = Metrics::new(routes.routes().iter().map(|r| r.name.as_str()), hash);
    let table = Table {
        routes,
        upstreams,
        cors,
        limits,
        metrics,
        hash: hash.to_owned(),
    };
    if let Some(verifier) = &shared.verifier {
        verifier.set_in_use(table.uses_auth());
    }
    Ok(table)
}
