//! The serde shape of `services.json`, exactly as written in the file. Nothing here is
//! trusted: [`super::validate`] turns it into [`super::Service`].

use serde::Deserialize;

/// The config shipped in the repository, compiled in: demo mode starts from it.
pub const SHIPPED: &str = include_str!("../../config/services.json");

/// One entry of the `services` list (or one value of the older `services` map, whose key is
/// the name).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Required in the list form; in the map form the key is the name.
    pub name: Option<String>,
    /// One instance: `host` and `port`; several: `upstreams` instead.
    pub host: Option<String>,
    /// Signed and wide so that `0`, `-1` and `70000` reach validation and get a clear message
    /// instead of a type error.
    pub port: Option<i64>,
    pub upstreams: Option<Vec<InstanceEntry>>,
    /// `round_robin` (default), `hash:ip` or `hash:<header>`.
    pub lb: Option<String>,
    pub health_check: Option<HealthCheckEntry>,
    pub prefix: String,
    #[serde(default)]
    pub strip_prefix: bool,
    /// `skip_prefix_for` is the name used by the first gateway's config files.
    #[serde(default, alias = "skip_prefix_for")]
    pub skip_prefix: Vec<String>,
    pub api_version: Option<u32>,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub auth: Option<AuthEntry>,
    pub cors: Option<CorsEntry>,
    pub rate_limit: Option<RateLimitEntry>,
    /// Signed so that `0` and `-1` reach validation.
    pub max_body_bytes: Option<i64>,
}

/// `"rate_limit": {"requests_per_second": N, "burst": M, "key": "ip" | "user" |
/// "header:NAME"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitEntry {
    pub requests_per_second: f64,
    pub burst: Option<u32>,
    pub key: Option<String>,
}

/// `"cors": {"origins": [...], "methods": [...], "headers": [...], "credentials": bool,
/// "max_age": seconds}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsEntry {
    pub origins: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
    pub max_age: Option<u64>,
}

/// One of `"upstreams": [{"host": "core-1", "port": 3000}, ...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceEntry {
    pub host: String,
    pub port: i64,
}

/// `"health_check": {"path": "/health", "interval_ms": 5000, "timeout_ms": 1000}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckEntry {
    pub path: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// `"auth": {"mode": "required", "public": ["/health"], "roles": ["admin"], "scopes": ["x"]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthEntry {
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub public: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}
