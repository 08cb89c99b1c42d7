//! From the parsed file to [`Service`]s. Each check names what is wrong and where, and the
//! gateway refuses to start on any of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use super::cors::PolicySpec;
use super::error::ConfigError;
use super::file::{AuthEntry, HealthCheckEntry, RateLimitEntry, ServiceEntry};
use super::model::{
    Balance, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, HealthCheck, LimitSpec, Mode,
    RouteAuth, Service,
};

/// Longest timeout accepted, so that a typo (an extra zero or three) is caught rather than
/// turning into connections that hang for days.
const MAX_TIMEOUT_MS: u64 = 3_600_000;

pub(super) fn services(file: &str, text: &str) -> Result<Vec<Service>, ConfigError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_owned(),
        line: e.line(),
        column: e.column(),
        message: syntax_message(&e),
    })?;
    let structure = |message: &str| ConfigError::Structure {
        file: file.to_owned(),
        message: message.to_owned(),
    };
    let Value::Object(mut top) = doc else {
        return Err(structure(
            "the top level must be an object with a \"services\" field",
        ));
    };
    let entries: Vec<(String, Option<String>, Value)> = match top.remove("services") {
        Some(Value::Array(list)) => list
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let label = v
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.trim().is_empty())
                    .map_or_else(|| format!("#{}", i + 1), str::to_owned);
                (label, None, v)
            })
            .collect(),
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| (k.clone(), Some(k), v))
            .collect(),
        Some(_) => {
            return Err(structure(
                "\"services\" must be a list (or a map of name to service)",
            ));
        }
        None => return Err(structure("the \"services\" field is missing")),
    };
    if let Some(extra) = top.keys().next() {
        return Err(structure(&format!(
            "unknown top-level field \"{extra}\" (only \"services\" is read)"
        )));
    }
    if entries.is_empty() {
        return Err(structure(
            "\"services\" is empty: the gateway would route nothing",
        ));
    }

    let mut out: Vec<Service> = Vec::with_capacity(entries.len());
    let mut by_prefix: HashMap<String, String> = HashMap::new();
    for (label, key, value) in entries {
        let service = entry(file, &label, key, value)?;
        if out.iter().any(|s| s.name == service.name) {
            return Err(ConfigError::service(
                file,
                &label,
                Some("name"),
                format!("the name '{}' is used by another service", service.name),
            ));
        }
        if let Some(other) = by_prefix.insert(service.prefix.clone(), service.name.clone()) {
            return Err(ConfigError::service(
                file,
                &label,
                Some("prefix"),
                format!(
                    "prefix '{}' is already used by service '{other}'",
                    service.prefix
                ),
            ));
        }
        out.push(service);
    }
    Ok(out)
}

/// serde_json appends " at line L column C" to its messages; the error already says where.
fn syntax_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    }
}

fn entry(
    file: &str,
    label: &str,
    key: Option<String>,
    value: Value,
) -> Result<Service, ConfigError> {
    if !value.is_object() {
        return Err(ConfigError::service(
            file,
            label,
            None,
            "each service must be a JSON object",
        ));
    }
    let raw: ServiceEntry = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        ConfigError::service(file, label, field.as_deref(), e.into_inner().to_string())
    })?;
    let fail =
        |field: &str, message: String| ConfigError::service(file, label, Some(field), message);

    let name = match (raw.name, key) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(fail(
                "name",
                "is missing: each service in the list needs a name".into(),
            ));
        }
    };
    if name.trim().is_empty() {
        return Err(fail("name", "must not be empty".into()));
    }

    let instances: Vec<(String, u16)> = match (raw.host, raw.port, raw.upstreams) {
        (None, None, Some(list)) => {
            if list.is_empty() {
                return Err(fail("upstreams", "must list at least one instance".into()));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, inst) in list.into_iter().enumerate() {
                let field = format!("upstreams[{i}]");
                check_host(&inst.host).map_err(|m| fail(&format!("{field}.host"), m))?;
                let port = tcp_port(inst.port).map_err(|m| fail(&format!("{field}.port"), m))?;
                if out.iter().any(|(h, p)| *h == inst.host && *p == port) {
                    return Err(fail(
                        &field,
                        format!("{}:{port} is listed twice", inst.host),
                    ));
                }
                out.push((inst.host, port));
            }
            out
        }
        (_, _, Some(_)) => {
            return Err(fail(
                "upstreams",
                "use either host and port (one instance) or upstreams (several), not both".into(),
            ));
        }
        (None, _, None) => {
            return Err(ConfigError::service(
                file,
                label,
                None,
                "missing field `host`",
            ));
        }
        (_, None, None) => {
            return Err(ConfigError::service(
                file,
                label,
                None,
                "missing field `port`",
            ));
        }
        (Some(host), Some(port), None) => {
            check_host(&host).map_err(|m| fail("host", m))?;
            vec![(host, tcp_port(port).map_err(|m| fail("port", m))?)]
        }
    };
    let (host, port) = instances[0].clone();
    let balance =
        Balance::parse(raw.lb.as_deref().unwrap_or("round_robin")).map_err(|m| fail("lb", m))?;
    let health_check = raw
        .health_check
        .map(|h| health_check(h).map_err(|(f, m)| fail(f, m)))
        .transpose()?;
    check_prefix(&raw.prefix).map_err(|m| fail("prefix", m))?;
    for skip in &raw.skip_prefix {
        check_prefix(skip).map_err(|m| fail("skip_prefix", m))?;
        if skip == "/" {
            return Err(fail(
                "skip_prefix",
                "'/' would skip versioning for every path; remove api_version instead".into(),
            ));
        }
    }
    let connect_timeout = timeout(raw.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT)
        .map_err(|m| fail("connect_timeout_ms", m))?;
    let read_timeout = timeout(raw.read_timeout_ms, DEFAULT_READ_TIMEOUT)
        .map_err(|m| fail("read_timeout_ms", m))?;

    let auth = match raw.auth {
        None => RouteAuth::default(),
        Some(a) => route_auth(a).map_err(|(field, m)| fail(field, m))?,
    };

    let cors = match raw.cors {
        None => None,
        Some(c) => Some(
            PolicySpec {
                origins: c.origins,
                methods: c.methods,
                headers: c.headers,
                credentials: c.credentials,
                max_age: c.max_age,
            }
            .build()
            .map_err(|e| {
                ConfigError::service(file, label, Some(&format!("cors.{}", e.field)), e.message)
            })?,
        ),
    };

    let rate_limit = raw
        .rate_limit
        .map(rate_limit)
        .transpose()
        .map_err(|(field, m)| fail(field, m))?;

    let max_body_bytes = match raw.max_body_bytes {
        None => None,
        Some(n) if n >= 1 => Some(n.unsigned_abs()),
        Some(n) => {
            return Err(fail(
                "max_body_bytes",
                format!("must be at least 1 (leave it out for no limit), not {n}"),
            ));
        }
    };

    Ok(Service {
        auth,
        cors,
        rate_limit,
        max_body_bytes,
        name,
        host,
        port,
        instances,
        balance,
        health_check,
        prefix: raw.prefix,
        strip_prefix: raw.strip_prefix,
        skip_prefix: raw.skip_prefix,
        api_version: raw.api_version,
        connect_timeout,
        read_timeout,
    })
}

/// Most requests per second a route may be given (beyond, a limit is no limit).
const MAX_RATE: f64 = 1_000_000.0;

fn rate_limit(r: RateLimitEntry) -> Result<LimitSpec, (&'static str, String)> {
    let rps = r.requests_per_second;
    if !(rps.is_finite() && rps > 0.0 && rps <= MAX_RATE) {
        return Err((
            "rate_limit.requests_per_second",
            format!("{rps} is not a rate: more than 0, at most {MAX_RATE}"),
        ));
    }
    let burst = match r.burst {
        None => rps.ceil() as u32,
        Some(0) => return Err(("rate_limit.burst", "must be at least 1".into())),
        Some(b) => b,
    };
    let key = LimitSpec::parse_key(r.key.as_deref().unwrap_or("ip"))
        .map_err(|m| ("rate_limit.key", m))?;
    Ok(LimitSpec {
        requests_per_second: rps,
        burst,
        key,
    })
}

fn route_auth(a: AuthEntry) -> Result<RouteAuth, (&'static str, String)> {
    let mode = match a.mode.as_deref() {
        None | Some("off") => Mode::Off,
        Some("optional") => Mode::Optional,
        Some("required") => Mode::Required,
        Some(other) => {
            return Err((
                "auth.mode",
                format!("'{other}' is not a mode: use \"required\", \"optional\" or \"off\""),
            ));
        }
    };
    for p in &a.public {
        check_prefix(p).map_err(|m| ("auth.public", m))?;
        if p == "/" {
            return Err((
                "auth.public",
                "'/' would leave the whole route open; set \"mode\": \"off\" instead".into(),
            ));
        }
    }
    for (field, list) in [("auth.roles", &a.roles), ("auth.scopes", &a.scopes)] {
        if list.is_empty() {
            continue;
        }
        if mode == Mode::Off {
            return Err((
                field,
                "applies to verified tokens: set \"mode\": \"required\" (or \"optional\")".into(),
            ));
        }
        if let Some(bad) = list
            .iter()
            .find(|v| v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err((
                field,
                format!("{bad:?} is not a role or scope name (no spaces)"),
            ));
        }
    }
    Ok(RouteAuth {
        mode,
        public: a.public,
        roles: a.roles,
        scopes: a.scopes,
    })
}

fn tcp_port(port: i64) -> Result<u16, String> {
    u16::try_from(port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port} is not a TCP port (1-65535)"))
}

fn health_check(h: HealthCheckEntry) -> Result<HealthCheck, (&'static str, String)> {
    if let Some(path) = &h.path
        && (!path.starts_with('/')
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
    {
        return Err((
            "health_check.path",
            format!("'{path}' is not a path (it starts with '/', no spaces)"),
        ));
    }
    let interval = match h.interval_ms {
        None => HealthCheck::DEFAULT_INTERVAL,
        Some(ms) if (100..=MAX_TIMEOUT_MS).contains(&ms) => Duration::from_millis(ms),
        Some(ms) => {
            return Err((
                "health_check.interval_ms",
                format!("{ms} is not from 100 to {MAX_TIMEOUT_MS}"),
            ));
        }
    };
    let timeout = match h.timeout_ms {
        None => HealthCheck::DEFAULT_TIMEOUT.min(interval),
        Some(ms) if ms >= 1 && Duration::from_millis(ms) <= interval => Duration::from_millis(ms),
        Some(ms) => {
            return Err((
                "health_check.timeout_ms",
                format!("{ms} must be at least 1 and at most interval_ms"),
            ));
        }
    };
    Ok(HealthCheck {
        path: h.path,
        interval,
        timeout,
    })
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("must not be empty".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err(format!(
            "'{host}' is neither an IP address nor a host name (letters, digits, '-', '.'; no scheme, port or path)"
        ));
    }
    Ok(())
}

/// Prefixes are matched on whole path segments, so they must look like a normalised path.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("'{prefix}' must start with '/'"));
    }
    if prefix.len() > 1 && prefix.ends_with('/') {
        return Err(format!(
            "'{prefix}' must not end with '/' (write '{}')",
            prefix.trim_end_matches('/')
        ));
    }
    if prefix.contains("//") {
        return Err(format!("'{prefix}' must not contain empty segments ('//')"));
    }
    if prefix.bytes().any(|b| {
        b.is_ascii_whitespace() || b.is_ascii_control() || b == b'?' || b == b'#' || b == b'%'
    }) {
        return Err(format!(
            "'{prefix}' must be a plain path: no spaces, '?', '#' or percent-escapes"
        ));
    }
    if prefix.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("'{prefix}' must not contain '.' or '..' segments"));
    }
    Ok(())
}

fn timeout(ms: Option<u64>, default: Duration) -> Result<Duration, String> {
    match ms {
        None => Ok(default),
        Some(0) => Err("must be at least 1 (milliseconds)".into()),
        Some(ms) if ms > MAX_TIMEOUT_MS => Err(format!(
            "{ms} ms is more than an hour; the limit is {MAX_TIMEOUT_MS}"
        )),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match services("services.json", text) {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn one(fields: &str) -> String {
        format!(r#"{{"services": [{{"name": "core-service", {fields}}}]}}"#)
    }

    const OK_FIELDS: &str = r#""host": "core-service", "port": 3000, "prefix": "/core""#;

    #[test]
    fn shipped_config_is_valid() {
        let s = services("config/services.json", super::super::SHIPPED).expect("shipped config");
        let names: Vec<_> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "auth-service",
                "core-service",
                "messaging-service",
                "websocket"
            ]
        );
        assert_eq!(s[0].skip_prefix, ["/.well-known", "/swagger", "/health"]);
        assert!(!s[3].strip_prefix);
        assert_eq!(s[1].connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn accepts_the_older_map_form_with_skip_prefix_for() {
        let s = services(
            "f.json",
            r#"{"services": {"auth-service": {"host": "auth-service", "port": 2000,
                "api_version": 1, "prefix": "/auth", "strip_prefix": true,
                "skip_prefix_for": ["/health"]}}}"#,
        )
        .expect("map form");
        assert_eq!(s[0].name, "auth-service");
        assert_eq!(s[0].skip_prefix, ["/health"]);
        assert_eq!(s[0].api_version, Some(1));
    }

    #[test]
    fn roles_and_scopes_need_a_mode_and_plain_names() {
        let with = |auth: &str| one(&format!(r#"{OK_FIELDS}, "auth": {auth}"#));
        let s = services(
            "f.json",
            &with(r#"{"mode": "required", "roles": ["admin"], "scopes": ["a:read", "b"]}"#),
        )
        .expect("valid");
        assert_eq!(s[0].auth.roles, ["admin"]);
        assert_eq!(s[0].auth.scopes, ["a:read", "b"]);
        for (auth, field) in [
            (r#"{"roles": ["admin"]}"#, "auth.roles"),
            (r#"{"mode": "off", "scopes": ["x"]}"#, "auth.scopes"),
            (r#"{"mode": "required", "roles": ["a b"]}"#, "auth.roles"),
            (r#"{"mode": "required", "scopes": [""]}"#, "auth.scopes"),
        ] {
            let e = err(&with(auth));
            assert!(
                e.contains("service 'core-service'") && e.contains(field),
                "{auth}: {e}"
            );
        }
    }

    #[test]
    fn invalid_json_names_line_and_column() {
        let e = err("{\n  \"services\": [\n    {\"name\": \"a\",,}\n  ]\n}");
        assert!(
            e.starts_with("services.json: invalid JSON at line 3, column"),
            "{e}"
        );
    }

    #[test]
    fn missing_field_names_service_and_field() {
        let e = err(&one(r#""host": "core-service", "prefix": "/core""#));
        assert_eq!(
            e,
            "services.json: service 'core-service': missing field `port`"
        );
    }

    #[test]
    fn missing_name_in_list_form_names_position() {
        let e = err(r#"{"services": [{"host": "h", "port": 1, "prefix": "/a"}]}"#);
        assert_eq!(
            e,
            "services.json: service '#1', field 'name': is missing: each service in the list needs a name"
        );
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = err(&one(r#""host": "h", "port": "3000", "prefix": "/core""#));
        assert!(
            e.starts_with("services.json: service 'core-service', field 'port': invalid type"),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_is_refused() {
        let e = err(&one(&format!(r#"{OK_FIELDS}, "strip_prefx": true"#)));
        assert!(
            e.contains("service 'core-service'") && e.contains("unknown field `strip_prefx`"),
            "{e}"
        );
    }

    #[test]
    fn port_zero_and_too_large_are_refused() {
        for port in ["0", "65536", "-1"] {
            let e = err(&one(&format!(
                r#""host": "h", "port": {port}, "prefix": "/core""#
            )));
            assert_eq!(
                e,
                format!(
                    "services.json: service 'core-service', field 'port': {port} is not a TCP port (1-65535)"
                )
            );
        }
    }

    #[test]
    fn prefix_must_start_with_slash() {
        let e = err(&one(r#""host": "h", "port": 1, "prefix": "core""#));
        assert_eq!(
            e,
            "services.json: service 'core-service', field 'prefix': 'core' must start with '/'"
        );
    }

    #[test]
    fn prefix_must_not_end_with_slash_except_root() {
        let e = err(&one(r#""host": "h", "port": 1, "prefix": "/core/""#));
        assert_eq!(
            e,
            "services.json: service 'core-service', field 'prefix': '/core/' must not end with '/' (write '/core')"
        );
        assert!(services("f", &one(r#""host": "h", "port": 1, "prefix": "/""#)).is_ok());
    }

    #[test]
    fn prefix_with_dot_segment_or_query_is_refused() {
        assert!(err(&one(r#""host": "h", "port": 1, "prefix": "/a/../b""#)).contains("'..'"));
        assert!(err(&one(r#""host": "h", "port": 1, "prefix": "/a?x""#)).contains("plain path"));
        assert!(
            err(&one(r#""host": "h", "port": 1, "prefix": "/a//b""#)).contains("empty segments")
        );
    }

    #[test]
    fn duplicate_prefix_names_both_services() {
        let e = err(r#"{"services": [
                {"name": "a", "host": "h", "port": 1, "prefix": "/x"},
                {"name": "b", "host": "h", "port": 2, "prefix": "/x"}]}"#);
        assert_eq!(
            e,
            "services.json: service 'b', field 'prefix': prefix '/x' is already used by service 'a'"
        );
    }

    #[test]
    fn duplicate_name_is_refused() {
        let e = err(r#"{"services": [
                {"name": "a", "host": "h", "port": 1, "prefix": "/x"},
                {"name": "a", "host": "h", "port": 2, "prefix": "/y"}]}"#);
        assert!(
            e.contains("field 'name': the name 'a' is used by another service"),
            "{e}"
        );
    }

    #[test]
    fn empty_or_malformed_host_is_refused() {
        let e = err(&one(r#""host": "", "port": 1, "prefix": "/core""#));
        assert_eq!(
            e,
            "services.json: service 'core-service', field 'host': must not be empty"
        );
        let e = err(&one(
            r#""host": "http://core:3000", "port": 1, "prefix": "/core""#,
        ));
        assert!(
            e.contains("field 'host': 'http://core:3000' is neither"),
            "{e}"
        );
        assert!(
            services(
                "f",
                &one(r#""host": "10.0.0.7", "port": 1, "prefix": "/c""#)
            )
            .is_ok()
        );
        assert!(services("f", &one(r#""host": "::1", "port": 1, "prefix": "/c""#)).is_ok());
    }

    #[test]
    fn skip_prefix_entries_are_checked_like_prefixes() {
        let e = err(&one(&format!(r#"{OK_FIELDS}, "skip_prefix": ["health"]"#)));
        assert_eq!(
            e,
            "services.json: service 'core-service', field 'skip_prefix': 'health' must start with '/'"
        );
    }

    #[test]
    fn max_body_bytes_is_positive_or_absent() {
        let ok = services(
            "f",
            &one(&format!(r#"{OK_FIELDS}, "max_body_bytes": 1048576"#)),
        );
        assert_eq!(ok.unwrap()[0].max_body_bytes, Some(1_048_576));
        assert_eq!(
            services("f", &one(OK_FIELDS)).unwrap()[0].max_body_bytes,
            None
        );
        for bad in ["0", "-1"] {
            let e = err(&one(&format!(r#"{OK_FIELDS}, "max_body_bytes": {bad}"#)));
            assert!(
                e.contains("field 'max_body_bytes': must be at least 1"),
                "{e}"
            );
        }
    }

    #[test]
    fn timeouts_are_bounded() {
        let e = err(&one(&format!(r#"{OK_FIELDS}, "read_timeout_ms": 0"#)));
        assert!(
            e.contains("field 'read_timeout_ms': must be at least 1"),
            "{e}"
        );
        let e = err(&one(&format!(
            r#"{OK_FIELDS}, "connect_timeout_ms": 99999999"#
        )));
        assert!(e.contains("field 'connect_timeout_ms'"), "{e}");
        let s = services(
            "f",
            &one(&format!(r#"{OK_FIELDS}, "read_timeout_ms": 250"#)),
        )
        .unwrap();
        assert_eq!(s[0].read_timeout, Duration::from_millis(250));
    }

    #[test]
    fn structure_errors_are_named() {
        assert_eq!(
            err("[]"),
            "services.json: the top level must be an object with a \"services\" field"
        );
        assert_eq!(
            err("{}"),
            "services.json: the \"services\" field is missing"
        );
        assert_eq!(
            err(r#"{"services": 3}"#),
            "services.json: \"services\" must be a list (or a map of name to service)"
        );
        assert!(err(r#"{"services": []}"#).contains("is empty"));
    }
}
