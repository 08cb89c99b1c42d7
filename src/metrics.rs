//! The gateway's Prometheus metrics, registered in the `prometheus` crate's default registry
//! (the one `pingora-prometheus` serves), with per-route handles resolved once so that a
//! request pays a few atomic increments, not a label lookup per metric.
//!
//! A leaf beside the router and the upstreams: the edge filters, the live table and the
//! request path count here, and the admin listener serves what they counted (`/metrics`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use pingora_prometheus::prometheus::{
    self, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts,
};

/// Label value for requests no route matched.
pub const NO_ROUTE: &str = "-";

/// Methods counted by name; any other is `OTHER` (a client must not mint label values).
static METHODS: [http::Method; 9] = [
    http::Method::GET,
    http::Method::HEAD,
    http::Method::POST,
    http::Method::PUT,
    http::Method::PATCH,
    http::Method::DELETE,
    http::Method::OPTIONS,
    http::Method::CONNECT,
    http::Method::TRACE,
];

/// Seconds; from 1 ms to 60 s.
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    inflight: IntGauge,
    websockets: IntGauge,
    healthy: IntGaugeVec,
    reloads: IntCounterVec,
    config_info: IntGaugeVec,
    jwt_refusals: IntCounterVec,
    rate_limited: IntCounterVec,
    certificate_reloads: IntCounterVec,
    certificate_expiry: IntGauge,
    connections: IntGauge,
    connections_refused: IntCounterVec,
    connections_evicted: IntCounter,
    session_store_unavailable: IntCounter,
}

/// `ADMIN_METRICS=off`: nothing is registered and every handle is a no-op (the benchmark's
/// measure of what metrics cost; operators who do not scrape).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turn metrics off for the process; before anything is counted (at startup).
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// Whether the process keeps metrics.
pub fn enabled() -> bool {
    FAMILIES.is_some()
}

/// Registered once per process (the registry is global; tests start processes, not
/// several gateways in one).
static FAMILIES: LazyLock<Option<Families>> = LazyLock::new(|| {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let families = Families {
        requests: IntCounterVec::new(
            Opts::new(
                "beat_gateway_requests_total",
                "Requests answered, by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .ok()?,
        duration: HistogramVec::new(
            HistogramOpts::new(
                "beat_gateway_request_duration_seconds",
                "From the request head to the end of the response, by route",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )
        .ok()?,
        upstream_errors: IntCounterVec::new(
            Opts::new(
                "beat_gateway_upstream_errors_total",
                "Failed upstream exchanges, by route and kind (connect, timeout, reset)",
            ),
            &["route", "kind"],
        )
        .ok()?,
        inflight: IntGauge::new("beat_gateway_inflight_requests", "Requests being served").ok()?,
        websockets: IntGauge::new("beat_gateway_websocket_tunnels", "Open WebSocket tunnels")
            .ok()?,
        healthy: IntGaugeVec::new(
            Opts::new(
                "beat_gateway_upstream_healthy",
                "1 when the instance takes traffic",
            ),
            &["route", "instance"],
        )
        .ok()?,
        reloads: IntCounterVec::new(
            Opts::new(
                "beat_gateway_config_reloads_total",
                "Configuration reloads, by result",
            ),
            &["result"],
        )
        .ok()?,
        config_info: IntGaugeVec::new(
            Opts::new(
                "beat_gateway_config_info",
                "The loaded services.json (sha256), value 1",
            ),
            &["hash"],
        )
        .ok()?,
        jwt_refusals: IntCounterVec::new(
            Opts::new(
                "beat_gateway_jwt_refusals_total",
                "Requests refused for their token (401, 403, or 503 when the session store is unavailable), by reason",
            ),
            &["reason"],
        )
        .ok()?,
        rate_limited: IntCounterVec::new(
            Opts::new(
                "beat_gateway_rate_limited_total",
                "Requests refused a 429, by route",
            ),
            &["route"],
        )
        .ok()?,
        certificate_reloads: IntCounterVec::new(
            Opts::new(
                "beat_gateway_tls_certificate_reloads_total",
                "TLS certificate reloads that changed the files, by result",
            ),
            &["result"],
        )
        .ok()?,
        certificate_expiry: IntGauge::new(
            "beat_gateway_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate the TLS listener serves (seconds since the epoch)",
        )
        .ok()?,
        connections: IntGauge::new(
            "beat_gateway_client_connections",
            "Open client connections (both listeners)",
        )
        .ok()?,
        connections_refused: IntCounterVec::new(
            Opts::new(
                "beat_gateway_connections_refused_total",
                "Client connections refused a 503 at a limit, by limit (total, per_ip)",
            ),
            &["limit"],
        )
        .ok()?,
        connections_evicted: IntCounter::new(
            "beat_gateway_connections_evicted_total",
            "Idle client connections closed to make room for a new one at the connection limit",
        )
        .ok()?,
        session_store_unavailable: IntCounter::new(
            "beat_gateway_session_store_unavailable_total",
            "Tokens whose session could not be checked: the session store's Redis unavailable",
        )
        .ok()?,
    };
    let registry = prometheus::default_registry();
    let collectors: [Box<dyn prometheus::core::Collector>; 16] = [
        Box::new(families.requests.clone()),
        Box::new(families.duration.clone()),
        Box::new(families.upstream_errors.clone()),
        Box::new(families.inflight.clone()),
        Box::new(families.websockets.clone()),
        Box::new(families.healthy.clone()),
        Box::new(families.reloads.clone()),
        Box::new(families.config_info.clone()),
        Box::new(families.jwt_refusals.clone()),
        Box::new(families.rate_limited.clone()),
        Box::new(families.certificate_reloads.clone()),
        Box::new(families.certificate_expiry.clone()),
        Box::new(families.connections.clone()),
        Box::new(families.connections_refused.clone()),
        Box::new(families.connections_evicted.clone()),
        Box::new(families.session_store_unavailable.clone()),
    ];
    for c in collectors {
        if let Err(e) = registry.register(c) {
            log::error!("metrics: cannot register a metric family: {e}");
        }
    }
    for result in ["ok", "failed"] {
        families.reloads.with_label_values(&[result]);
    }
    Some(families)
});

/// One route's handles (or the unmatched requests').
struct RouteMetrics {
    name: String,
    duration: Option<Histogram>,
    /// By method index and status (a bounded key space, so foldhash rather than SipHash:
    /// this is looked up for every request).
    requests: RwLock<foldhash::HashMap<(u8, u16), IntCounter>>,
}

/// The handles the request path uses, by route index (the last one: no route).
pub struct Metrics {
    routes: Vec<RouteMetrics>,
}

impl Metrics {
    /// Handles for `routes` (names, in table order), and the config's hash as info.
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a str>, config_hash: &str) -> Arc<Self> {
        let families = FAMILIES.as_ref();
        let mut names: Vec<String> = routes.into_iter().map(str::to_owned).collect();
        names.push(NO_ROUTE.to_owned());
        if let Some(f) = families {
            f.config_info.reset();
            f.config_info.with_label_values(&[config_hash]).set(1);
        }
        Arc::new(Metrics {
            routes: names
                .into_iter()
                .map(|name| RouteMetrics {
                    duration: families.map(|f| f.duration.with_label_values(&[&name])),
                    name,
                    requests: RwLock::new(foldhash::HashMap::default()),
                })
                .collect(),
        })
    }

    fn route(&self, route: Option<usize>) -> Option<&RouteMetrics> {
        match route {
            Some(i) if i + 1 < self.routes.len() => self.routes.get(i),
            _ => self.routes.last(),
        }
    }

    /// A request ended: counted by route, method and status, and its duration observed.
    pub fn request_done(
        &self,
        route: Option<usize>,
        method: &http::Method,
        status: u16,
        took: Duration,
    ) {
        let Some(r) = self.route(route) else { return };
        if let Some(h) = &r.duration {
            h.observe(took.as_secs_f64());
        }
        // `Method`s, not their text: the standard ones compare as enums.
        let method_index = METHODS
            .iter()
            .position(|m| m == method)
            .unwrap_or(METHODS.len()) as u8;
        let key = (method_index, status);
        // Counted under the read lock: no clone of the counter's `Arc` per request.
        if let Ok(m) = r.requests.read()
            && let Some(c) = m.get(&key)
        {
            c.inc();
            return;
        }
        // First of its kind: the labelled counter is made once and kept.
        let Some(f) = FAMILIES.as_ref() else { return };
        let method = METHODS
            .get(usize::from(method_index))
            .map_or("OTHER", http::Method::as_str);
        let status_text = status.to_string();
        let counter = f
            .requests
            .with_label_values(&[&r.name, method, &status_text]);
        if let Ok(mut m) = r.requests.write() {
            m.insert(key, counter.clone());
        }
        counter.inc();
    }

    /// An upstream exchange failed (`kind`: connect, timeout or reset).
    pub fn upstream_error(&self, route: Option<usize>, kind: &str) {
        if let (Some(f), Some(r)) = (FAMILIES.as_ref(), self.route(route)) {
            f.upstream_errors.with_label_values(&[&r.name, kind]).inc();
        }
    }

    pub fn rate_limited(&self, route: Option<usize>) {
        if let (Some(f), Some(r)) = (FAMILIES.as_ref(), self.route(route)) {
            f.rate_limited.with_label_values(&[&r.name]).inc();
        }
    }

    /// The health of each route's instances (one per route until instances are several).
    pub fn set_healthy(&self, route: usize, instance: &str, healthy: bool) {
        if let (Some(f), Some(r)) = (FAMILIES.as_ref(), self.routes.get(route)) {
            f.healthy
                .with_label_values(&[&r.name, instance])
                .set(i64::from(healthy));
        }
    }
}

/// A reload was tried: `ok` or `failed`.
pub fn config_reload(ok: bool) {
    if let Some(f) = FAMILIES.as_ref() {
        f.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }
}

/// A TLS certificate reload read changed files: `ok` or `failed`.
pub fn certificate_reload(ok: bool) {
    if let Some(f) = FAMILIES.as_ref() {
        f.certificate_reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }
}

/// The served certificate's `notAfter`.
pub fn certificate_expiry(not_after: i64) {
    if let Some(f) = FAMILIES.as_ref() {
        f.certificate_expiry.set(not_after);
    }
}

pub fn jwt_refused(reason: &str) {
    if let Some(f) = FAMILIES.as_ref() {
        f.jwt_refusals.with_label_values(&[reason]).inc();
    }
}

/// Requests in flight: one more until the guard is dropped.
pub fn inflight() -> Option<Gauge> {
    FAMILIES.as_ref().map(|f| Gauge::new(&f.inflight))
}

/// An open client connection: one more until the guard is dropped.
pub fn connection() -> Option<Gauge> {
    FAMILIES.as_ref().map(|f| Gauge::new(&f.connections))
}

/// A connection refused at a limit (`total` or `per_ip`).
pub fn connection_refused(limit: &str) {
    if let Some(f) = FAMILIES.as_ref() {
        f.connections_refused.with_label_values(&[limit]).inc();
    }
}

/// An idle connection closed to make room at the connection limit.
/// A token's session could not be checked: Redis unavailable (refused with 503 or, with
/// `JWT_SESSION_FAIL=open`, let through on its signature).
pub fn session_store_unavailable() {
    if let Some(f) = FAMILIES.as_ref() {
        f.session_store_unavailable.inc();
    }
}

pub fn connection_evicted() {
    if let Some(f) = FAMILIES.as_ref() {
        f.connections_evicted.inc();
    }
}

/// An open WebSocket tunnel: one more until the guard is dropped.
pub fn websocket() -> Option<Gauge> {
    FAMILIES.as_ref().map(|f| Gauge::new(&f.websockets))
}

/// A gauge held up while this lives.
#[derive(Debug)]
pub struct Gauge(&'static IntGauge);

impl Gauge {
    /// The families live as long as the process: the guard borrows the gauge rather than
    /// cloning its `Arc` (two more atomic operations per request).
    fn new(g: &'static IntGauge) -> Self {
        g.inc();
        Gauge(g)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
