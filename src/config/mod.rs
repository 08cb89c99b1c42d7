//! `services.json`: read it, parse it into its serde shape ([`file`]), then validate it into
//! [`Service`]s, the runtime model that the router and the upstreams are built from.
//!
//! Both forms of the file are accepted: the list form
//! (`{"services": [{"name": "auth-service", ...}]}`) and the older map form
//! (`{"services": {"auth-service": {...}}}`).

mod error;
mod file;
mod validate;

use std::path::Path;
use std::time::Duration;

use crate::edge::auth::{Mode, RouteAuth};
use crate::edge::cors::Policy;
use crate::edge::rate_limit::{KeyKind, LimitSpec};
use crate::upstream::{Balance, HealthCheck};

pub use error::{ConfigError, Location};

/// How long to wait for a TCP connection to an upstream when the file does not say.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an upstream may stay silent mid-response when the file does not say.
/// WebSocket connections are exempt once upgraded: see `upstream::Upstream::peer`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One validated service: every field holds a value the gateway can use as is.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// The first instance (the only one unless `upstreams` lists several).
    pub host: String,
    pub port: u16,
    /// Every instance, the first included: `(host, port)`.
    pub instances: Vec<(String, u16)>,
    pub balance: Balance,
    pub health_check: Option<HealthCheck>,
    /// Starts with `/`; never ends with `/` unless it is `/` itself.
    pub prefix: String,
    pub strip_prefix: bool,
    /// Paths (after stripping) under these prefixes are not versioned. Same shape as `prefix`.
    pub skip_prefix: Vec<String>,
    pub api_version: Option<u32>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Token verification at the edge (off unless the file says).
    pub auth: RouteAuth,
    /// The service's own CORS policy (replaces the global one from the environment).
    pub cors: Option<Policy>,
    pub rate_limit: Option<LimitSpec>,
    /// Largest request body the service receives (`None`: no limit, streamed).
    pub max_body_bytes: Option<u64>,
}

/// Read and validate the file at `path`.
pub fn load(path: &Path) -> Result<Vec<Service>, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: name.clone(),
        source,
    })?;
    parse(&name, &text)
}

/// The services whose routes verify tokens (the JWT settings are then required).
pub fn with_auth(services: &[Service]) -> Vec<&str> {
    services
        .iter()
        .filter(|s| s.auth.mode != Mode::Off)
        .map(|s| s.name.as_str())
        .collect()
}

/// Validate `text`, naming it `file` in every error message.
pub fn parse(file: &str, text: &str) -> Result<Vec<Service>, ConfigError> {
    validate::services(file, text)
}

/// The hex SHA-256 of a services file, as `beat_gateway_config_info{hash}` shows it.
pub fn fingerprint(text: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The config shipped in the repository, compiled in: demo mode starts from it.
pub const SHIPPED: &str = include_str!("../../config/services.json");

/// One line per route, for `--check` and the startup log.
pub fn summary(services: &[Service]) -> Vec<String> {
    services
        .iter()
        .map(|s| {
            let rewrite = match (s.strip_prefix, s.api_version) {
                (false, _) => "path as is".to_owned(),
                (true, None) => "strip prefix".to_owned(),
                (true, Some(v)) if s.skip_prefix.is_empty() => {
                    format!("strip prefix, version /api/v{v}")
                }
                (true, Some(v)) => format!(
                    "strip prefix, version /api/v{v} except {}",
                    s.skip_prefix.join(" ")
                ),
            };
            let auth = match s.auth.mode {
                Mode::Off => String::new(),
                Mode::Optional => "; auth optional".to_owned(),
                Mode::Required => "; auth required".to_owned(),
            };
            let public = if s.auth.mode != Mode::Off && !s.auth.public.is_empty() {
                format!(" except {}", s.auth.public.join(" "))
            } else {
                String::new()
            };
            let limit = s.rate_limit.as_ref().map_or(String::new(), |l| {
                format!(
                    "; limit {}/s burst {} by {}",
                    l.requests_per_second,
                    l.burst,
                    match &l.key {
                        KeyKind::Ip => "ip".to_owned(),
                        KeyKind::User => "user".to_owned(),
                        KeyKind::Header(h) => format!("header {h}"),
                    }
                )
            });
            format!(
                "{:<20} {:<14} -> {}:{} ({rewrite}; connect {:?}, read {:?}{auth}{public}{limit})",
                s.name, s.prefix, s.host, s.port, s.connect_timeout, s.read_timeout
            )
        })
        .collect()
}
