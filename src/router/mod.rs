//! The route table: which service a path belongs to, and what path that service receives.
//!
//! Pure logic, no I/O. Matching is longest-prefix on whole path segments: `/auth` owns
//! `/auth`, `/auth/` and `/auth/x` but never `/authx`, and `/core/admin` wins over `/core`
//! for `/core/admin/x`. A lookup hashes each `/`-boundary prefix of the path, longest first,
//! so its cost grows with the depth of the path, not with the number of routes, and never
//! depends on the order of the config file.

mod path;

use std::borrow::Cow;

pub use path::{PathError, check_path};

use crate::config::{LimitSpec, RouteAuth, Service};

/// One route, with everything a request needs precomputed at load time (its upstream,
/// built from the same service, is the live table's, index for index).
#[derive(Debug)]
pub struct Route {
    /// Position in the table; upstream state is kept in a parallel list indexed by it.
    pub index: usize,
    pub name: String,
    pub prefix: String,
    pub strip_prefix: bool,
    pub skip_prefix: Vec<String>,
    /// `/api/vN` when the service is versioned and its prefix is stripped.
    pub api_prefix: Option<String>,
    pub auth: RouteAuth,
    pub rate_limit: Option<LimitSpec>,
    /// Largest request body forwarded (`None`: no limit).
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Hashed with foldhash, not SipHash: every request looks up two or three candidate
    /// prefixes, and the keys are the config's own (a client's path only probes the table,
    /// so there is no flooding to resist).
    by_prefix: foldhash::HashMap<String, usize>,
    /// No route prefix is longer: longer candidates are not looked up.
    longest: usize,
}

impl RouteTable {
    /// Build from validated services (prefixes are already unique and well formed).
    pub fn new(services: Vec<Service>) -> Self {
        let routes: Vec<Route> = services
            .into_iter()
            .enumerate()
            .map(|(index, s)| Route {
                index,
                api_prefix: match (s.strip_prefix, s.api_version) {
                    (true, Some(v)) => Some(format!("/api/v{v}")),
                    _ => None,
                },
                name: s.name,
                prefix: s.prefix,
                strip_prefix: s.strip_prefix,
                skip_prefix: s.skip_prefix,
                auth: s.auth,
                rate_limit: s.rate_limit,
                max_body_bytes: s.max_body_bytes,
            })
            .collect();
        let by_prefix = routes.iter().map(|r| (r.prefix.clone(), r.index)).collect();
        let longest = routes.iter().map(|r| r.prefix.len()).max().unwrap_or(0);
        RouteTable {
            routes,
            by_prefix,
            longest,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route owning `path` (the path only, without the query).
    pub fn lookup(&self, path: &str) -> Option<&Route> {
        if let Some(route) = self.get(path) {
            return Some(route);
        }
        // Every '/' ends a candidate: "/core/admin/x" tries "/core/admin", "/core", then "/".
        let bytes = path.as_bytes();
        let mut end = path.len();
        while let Some(slash) = bytes[..end].iter().rposition(|&b| b == b'/') {
            let candidate = if slash == 0 { "/" } else { &path[..slash] };
            if let Some(route) = self.get(candidate) {
                return Some(route);
            }
            end = slash;
        }
        None
    }

    fn get(&self, prefix: &str) -> Option<&Route> {
        if prefix.len() > self.longest {
            return None;
        }
        self.by_prefix.get(prefix).map(|&i| &self.routes[i])
    }
}

impl Route {
    /// The path the upstream receives for `path`, which this route matched (so `path` starts
    /// with the prefix on a segment boundary). The query is not part of it: callers keep
    /// the original query bytes as they are.
    pub fn upstream_path<'a>(&self, path: &'a str) -> Cow<'a, str> {
        if !self.strip_prefix {
            return Cow::Borrowed(path);
        }
        let rest = if self.prefix == "/" {
            path
        } else {
            &path[self.prefix.len()..]
        };
        let rest = if rest.is_empty() { "/" } else { rest };
        match &self.api_prefix {
            Some(api) if !self.is_unversioned(rest) => {
                let mut out = String::with_capacity(api.len() + rest.len());
                out.push_str(api);
                out.push_str(rest);
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(rest),
        }
    }

    /// Paths under a `skip_prefix` entry, and paths that already name an API version, go to
    /// the upstream as stripped.
    fn is_unversioned(&self, rest: &str) -> bool {
        under(rest, "/api") || self.skip_prefix.iter().any(|skip| under(rest, skip))
    }
}

/// `path` is `prefix` or lies below it on a segment boundary.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn table(json: &str) -> RouteTable {
        RouteTable::new(config::parse("test.json", json).expect("valid test config"))
    }

    fn shipped() -> RouteTable {
        table(config::SHIPPED)
    }

    fn versioned() -> RouteTable {
        table(
            r#"{"services": [
            {"name": "auth", "host": "a", "port": 1, "prefix": "/auth", "strip_prefix": true,
             "api_version": 1, "skip_prefix": ["/.well-known", "/swagger", "/health"]},
            {"name": "core", "host": "c", "port": 2, "prefix": "/core", "strip_prefix": true,
             "api_version": 2},
            {"name": "ws", "host": "m", "port": 3, "prefix": "/socket", "strip_prefix": false,
             "api_version": 1}
        ]}"#,
        )
    }

    fn route_name<'a>(t: &'a RouteTable, path: &str) -> Option<&'a str> {
        t.lookup(path).map(|r| r.name.as_str())
    }

    #[test]
    fn matches_on_segment_boundaries_only() {
        let t = shipped();
        assert_eq!(route_name(&t, "/auth"), Some("auth-service"));
        assert_eq!(route_name(&t, "/auth/"), Some("auth-service"));
        assert_eq!(route_name(&t, "/auth/api/v1/x"), Some("auth-service"));
        assert_eq!(route_name(&t, "/authx"), None);
        assert_eq!(route_name(&t, "/authx/y"), None);
        assert_eq!(route_name(&t, "/"), None);
        assert_eq!(route_name(&t, "/Auth"), None);
        assert_eq!(route_name(&t, "/socket/websocket"), Some("websocket"));
    }

    #[test]
    fn longest_prefix_wins_whatever_the_file_order() {
        for json in [
            r#"{"services": [{"name": "core", "host": "h", "port": 1, "prefix": "/core"},
                             {"name": "admin", "host": "h", "port": 2, "prefix": "/core/admin"}]}"#,
            r#"{"services": [{"name": "admin", "host": "h", "port": 2, "prefix": "/core/admin"},
                             {"name": "core", "host": "h", "port": 1, "prefix": "/core"}]}"#,
        ] {
            let t = table(json);
            assert_eq!(route_name(&t, "/core/admin/x"), Some("admin"));
            assert_eq!(route_name(&t, "/core/admin"), Some("admin"));
            assert_eq!(route_name(&t, "/core/administrator"), Some("core"));
            assert_eq!(route_name(&t, "/core/x"), Some("core"));
        }
    }

    #[test]
    fn root_prefix_is_the_fallback() {
        let t = table(
            r#"{"services": [{"name": "root", "host": "h", "port": 1, "prefix": "/"},
                             {"name": "auth", "host": "h", "port": 2, "prefix": "/auth"}]}"#,
        );
        assert_eq!(route_name(&t, "/auth/x"), Some("auth"));
        assert_eq!(route_name(&t, "/authx"), Some("root"));
        assert_eq!(route_name(&t, "/"), Some("root"));
    }

    #[test]
    fn stays_correct_with_hundreds_of_routes() {
        let services: Vec<String> = (0..500)
            .map(|i| {
                format!(
                    r#"{{"name": "s{i}", "host": "h", "port": 1, "prefix": "/svc{i}/v{}"}}"#,
                    i % 7
                )
            })
            .collect();
        let t = table(&format!(r#"{{"services": [{}]}}"#, services.join(",")));
        assert_eq!(route_name(&t, "/svc123/v4/deep/path/here"), Some("s123"));
        assert_eq!(route_name(&t, "/svc123/v5/x"), None);
        assert_eq!(route_name(&t, "/svc499/v2"), Some("s499"));
    }

    #[test]
    fn strips_prefix_and_keeps_rest() {
        let t = shipped();
        let auth = t.lookup("/auth/api/v1/users/profile").unwrap();
        assert_eq!(
            auth.upstream_path("/auth/api/v1/users/profile"),
            "/api/v1/users/profile"
        );
        assert_eq!(auth.upstream_path("/auth"), "/");
        assert_eq!(auth.upstream_path("/auth/"), "/");
    }

    #[test]
    fn strip_prefix_false_forwards_path_unchanged() {
        let t = shipped();
        let ws = t.lookup("/socket/websocket").unwrap();
        assert_eq!(ws.upstream_path("/socket/websocket"), "/socket/websocket");
    }

    #[test]
    fn versioned_paths_get_api_prefix() {
        let t = versioned();
        let auth = t.lookup("/auth/users").unwrap();
        assert_eq!(
            auth.upstream_path("/auth/users/profile"),
            "/api/v1/users/profile"
        );
        let core = t.lookup("/core/x").unwrap();
        assert_eq!(core.upstream_path("/core/items/7"), "/api/v2/items/7");
        assert_eq!(core.upstream_path("/core"), "/api/v2/");
    }

    #[test]
    fn skip_prefix_and_existing_api_paths_are_not_versioned() {
        let t = versioned();
        let auth = t.lookup("/auth").unwrap();
        assert_eq!(auth.upstream_path("/auth/health"), "/health");
        assert_eq!(
            auth.upstream_path("/auth/swagger/index.html"),
            "/swagger/index.html"
        );
        assert_eq!(
            auth.upstream_path("/auth/.well-known/jwks.json"),
            "/.well-known/jwks.json"
        );
        assert_eq!(auth.upstream_path("/auth/api/v3/users"), "/api/v3/users");
        // Skip entries match whole segments too.
        assert_eq!(auth.upstream_path("/auth/healthz"), "/api/v1/healthz");
        assert_eq!(auth.upstream_path("/auth/apis"), "/api/v1/apis");
    }

    #[test]
    fn versioning_applies_only_when_stripping() {
        let t = versioned();
        let ws = t.lookup("/socket/websocket").unwrap();
        assert_eq!(ws.upstream_path("/socket/websocket"), "/socket/websocket");
    }
}
