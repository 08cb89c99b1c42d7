//! The validated model of `services.json`: plain data, each field a value the gateway can
//! use as is. [`super::validate`] builds it from the file; the router, the upstreams and
//! the edge filters build their runtime objects from it. Nothing here runs: no Pingora,
//! no sockets, no clocks.

use std::time::Duration;

use http::HeaderName;

use super::cors::Cors;

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
    pub cors: Option<Cors>,
    pub rate_limit: Option<LimitSpec>,
    /// Largest request body the service receives (`None`: no limit, streamed).
    pub max_body_bytes: Option<u64>,
}

impl Service {
    /// The part of the service its upstream is built from.
    pub fn upstream(&self) -> UpstreamSpec {
        UpstreamSpec {
            instances: self.instances.clone(),
            balance: self.balance.clone(),
            health_check: self.health_check.clone(),
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
        }
    }
}

/// What a service's upstream is built from: its instances, how one is chosen and checked,
/// and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Every instance, `(host, port)`, at least one; the first is the service's `host:port`.
    pub instances: Vec<(String, u16)>,
    pub balance: Balance,
    pub health_check: Option<HealthCheck>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// How a route treats tokens (`"auth": {"mode": ...}` in services.json).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Tokens are not looked at (identity headers are still removed).
    #[default]
    Off,
    /// A token, when sent, must be valid; without one the request goes on anonymously.
    Optional,
    /// Every request needs a valid token.
    Required,
}

/// A route's authentication: its mode and the paths it leaves open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteAuth {
    pub mode: Mode,
    /// Path prefixes relative to the route's prefix (`/swagger` on `/core`), matched on
    /// segment boundaries against the path as the client sent it.
    pub public: Vec<String>,
    /// A verified token's `role` must be one of these (none: any role).
    pub roles: Vec<String>,
    /// A verified token's `scope` must hold every one of these (none: any scopes).
    pub scopes: Vec<String>,
}

impl RouteAuth {
    /// The mode that applies to `path` (the client's path) on the route at `prefix`.
    pub fn mode_for(&self, prefix: &str, path: &str) -> Mode {
        if self.mode == Mode::Off {
            return Mode::Off;
        }
        let rest = if prefix == "/" {
            path
        } else {
            path.strip_prefix(prefix).unwrap_or(path)
        };
        let open = self.public.iter().any(|p| {
            rest.strip_prefix(p.as_str())
                .is_some_and(|after| after.is_empty() || after.starts_with('/'))
        });
        if open { Mode::Off } else { self.mode }
    }

    /// Whether a verified token with this `role` and these `scopes` (space-separated) may
    /// use the route: its role any of `roles`, its scopes all of `scopes`.
    pub fn grants(&self, role: Option<&str>, scopes: Option<&str>) -> bool {
        let role_ok =
            self.roles.is_empty() || role.is_some_and(|r| self.roles.iter().any(|x| x == r));
        let held = || scopes.unwrap_or("").split_ascii_whitespace();
        role_ok && self.scopes.iter().all(|needed| held().any(|s| s == needed))
    }
}

/// How a route picks an instance (`"lb"` in services.json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// Ketama on the client address.
    HashIp,
    /// Ketama on a header's value (the client address when absent).
    HashHeader(HeaderName),
}

impl Balance {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "round_robin" => Ok(Balance::RoundRobin),
            "hash:ip" => Ok(Balance::HashIp),
            other => match other.strip_prefix("hash:") {
                Some(name) => HeaderName::from_bytes(name.as_bytes())
                    .map(Balance::HashHeader)
                    .map_err(|_| format!("'{name}' is not a header name")),
                None => Err(format!(
                    "'{other}' is not a balancing: use \"round_robin\", \"hash:ip\" or \"hash:<header>\""
                )),
            },
        }
    }
}

/// An active health check (`"health_check"` in services.json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `GET path` must answer 200; `None`: a TCP connect must succeed.
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
}

impl HealthCheck {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(5000);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
}

/// What a request is counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Ip,
    User,
    Header(HeaderName),
}

/// A route's limit as validated from services.json.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    pub requests_per_second: f64,
    pub burst: u32,
    pub key: KeyKind,
}

impl LimitSpec {
    /// Parse `"key"`: `ip`, `user` or `header:NAME`.
    pub fn parse_key(key: &str) -> Result<KeyKind, String> {
        match key {
            "ip" => Ok(KeyKind::Ip),
            "user" => Ok(KeyKind::User),
            other => match other.strip_prefix("header:") {
                Some(name) => HeaderName::from_bytes(name.trim().as_bytes())
                    .map(KeyKind::Header)
                    .map_err(|_| format!("'{name}' is not a header name")),
                None => Err(format!(
                    "'{other}' is not a key: use \"ip\", \"user\" or \"header:NAME\""
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths_match_on_segment_boundaries_under_the_prefix() {
        let auth = RouteAuth {
            mode: Mode::Required,
            public: vec!["/swagger".into(), "/health".into()],
            ..RouteAuth::default()
        };
        assert_eq!(auth.mode_for("/core", "/core/swagger"), Mode::Off);
        assert_eq!(
            auth.mode_for("/core", "/core/swagger/index.html"),
            Mode::Off
        );
        assert_eq!(auth.mode_for("/core", "/core/swaggerx"), Mode::Required);
        assert_eq!(auth.mode_for("/core", "/core/users"), Mode::Required);
        assert_eq!(auth.mode_for("/core", "/core"), Mode::Required);
        assert_eq!(auth.mode_for("/", "/health"), Mode::Off);
        let off = RouteAuth::default();
        assert_eq!(off.mode_for("/core", "/core/users"), Mode::Off);
    }

    #[test]
    fn roles_any_of_scopes_all_of() {
        let auth = RouteAuth {
            mode: Mode::Required,
            roles: vec!["admin".into(), "operator".into()],
            scopes: vec!["orders:read".into(), "orders:write".into()],
            ..RouteAuth::default()
        };
        let both = Some("orders:write profile orders:read");
        assert!(auth.grants(Some("operator"), both));
        assert!(!auth.grants(Some("user"), both), "role not listed");
        assert!(!auth.grants(None, both), "no role");
        assert!(
            !auth.grants(Some("admin"), Some("orders:read")),
            "a scope missing"
        );
        assert!(!auth.grants(Some("admin"), None), "no scopes");
        assert!(
            !auth.grants(Some("admin"), Some("orders:reader orders:write")),
            "whole words"
        );
        let open = RouteAuth {
            mode: Mode::Required,
            ..RouteAuth::default()
        };
        assert!(
            open.grants(None, None),
            "no roles or scopes asked: any token"
        );
    }

    #[test]
    fn keys_parse() {
        assert_eq!(LimitSpec::parse_key("ip"), Ok(KeyKind::Ip));
        assert_eq!(LimitSpec::parse_key("user"), Ok(KeyKind::User));
        assert_eq!(
            LimitSpec::parse_key("header:X-Api-Key"),
            Ok(KeyKind::Header(HeaderName::from_static("x-api-key")))
        );
        assert!(LimitSpec::parse_key("header:bad name").is_err());
        assert!(LimitSpec::parse_key("cookie").is_err());
    }
}
