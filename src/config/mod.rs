//! `services.json`: read it, parse it into its serde shape ([`file`]), then validate it
//! (`validate.rs`) into [`Service`]s (`model.rs`, [`cors`]): plain data at the bottom of the
//! house, which the router, the upstreams and the edge filters build their runtime objects
//! from. Nothing here imports from them.
//!
//! Both forms of the file are accepted: the list form
//! (`{"services": [{"name": "auth-service", ...}]}`) and the older map form
//! (`{"services": {"auth-service": {...}}}`).

pub mod cors;
mod error;
mod file;
mod model;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Location};
pub use file::SHIPPED;
pub use model::{
    Balance, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, HealthCheck, KeyKind, LimitSpec, Mode,
    RouteAuth, Service, UpstreamSpec,
};

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
