//! Everything the process is told from outside, in one place with its defaults: the
//! command line (ours plus Pingora's `-c -d -u -t`) and the environment.

use std::net::IpAddr;
use std::path::PathBuf;

use std::time::Duration;

use clap::Parser;
use pingora_core::server::configuration::Opt;

use ipnet::IpNet;

use crate::config::cors::{Cors, PolicySpec};

mod jwt;

pub use jwt::{
    Claim, DEFAULT_LEEWAY_SECONDS, DEFAULT_REFRESH_SECONDS, JwksUrl, JwtSettings, KeyTemplate,
    SessionSettings,
};

pub const DEFAULT_SERVICES: &str = "config/services.json";
pub const DEFAULT_HOST: &str = "0.0.0.0";
pub const DEFAULT_PORT: u16 = 9000;
/// Seconds Pingora keeps serving in-flight requests after SIGTERM. Pingora's own default is
/// 300 s, far longer than any orchestrator waits before SIGKILL.
pub const DEFAULT_GRACE_SECONDS: u64 = 3;
/// A client keep-alive connection with no request for this long is closed (nginx: 75 s).
pub const DEFAULT_KEEPALIVE_SECONDS: u64 = 75;
/// From a request's first byte to the end of its head; slower clients get 408 (nginx: 60 s).
pub const DEFAULT_HEADER_TIMEOUT_SECONDS: u64 = 30;
/// The admin listener: loopback unless told otherwise, never the public port.
pub const DEFAULT_ADMIN_HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
pub const DEFAULT_ADMIN_PORT: u16 = 9091;
/// A request body that sends nothing for this long gets 408 (nginx's
/// `client_body_timeout` is 60 s too).
pub const DEFAULT_BODY_TIMEOUT_SECONDS: u64 = 60;
/// The TLS listener's port, when a certificate is given.
pub const DEFAULT_TLS_PORT: u16 = 9443;
/// Longest `Strict-Transport-Security` max-age accepted: two years, what the HSTS preload
/// list asks for.
pub const MAX_HSTS_SECONDS: u64 = 2 * 365 * 86_400;

#[derive(Debug, Parser)]
#[command(
    name = "beat-gateway",
    version,
    about = "API gateway of the Beat EcoProve backend"
)]
pub struct Cli {
    /// Routes file (default: $SERVICES_CONFIG, else config/services.json)
    #[arg(long, value_name = "PATH")]
    pub services: Option<PathBuf>,

    /// Validate the routes file, print the routes, and exit
    #[arg(long)]
    pub check: bool,

    /// Start small echo services on loopback standing in for auth, core and messaging, and
    /// route to them: a working gateway with nothing else installed
    #[arg(long)]
    pub demo: bool,

    /// Reload the routes file when its content changes (SIGHUP always reloads it)
    #[arg(long)]
    pub watch: bool,

    /// Ask the running gateway's admin listener whether it is ready (GET /readyz) and exit
    /// 0 if so, 1 if not: the container healthcheck (the image has no curl)
    #[arg(long)]
    pub probe: bool,

    #[command(flatten)]
    pub pingora: Opt,
}

impl Cli {
    /// The command line, with Pingora's own flags (`-u`, `-d`, `-t`, `-c`) described as they
    /// work for this gateway (Pingora's texts are generic, one of them wrong).
    pub fn parse_args() -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command()
            .mut_arg("upgrade", |a| {
                a.help(
                    "Graceful binary upgrade: take over the listening sockets of the running \
                     gateway (start the new binary with -u, then send the old one SIGQUIT; both \
                     need the same -c file for its upgrade_sock); no connection is refused",
                )
            })
            .mut_arg("daemon", |a| {
                a.help(
                    "Run in the background (pid_file and error_log from the -c file); not with \
                     --demo",
                )
            })
            .mut_arg("test", |a| {
                a.help(
                    "Check everything a start would (routes, environment, TLS files, the -c \
                     file) and exit 0 without listening: safe beside a running gateway, before \
                     an upgrade",
                )
            })
            .mut_arg("conf", |a| {
                a.help(
                    "Pingora's own YAML settings (upgrade_sock, pid_file, grace_period_seconds, \
                     ...); PROXY_THREADS wins over its threads, PROXY_GRACE_SECONDS applies where \
                     it sets no grace period",
                )
            });
        Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub services_path: PathBuf,
    /// The path came from `--services` or `SERVICES_CONFIG`, not the default.
    pub services_given: bool,
    pub host: IpAddr,
    pub port: u16,
    /// `None`: Pingora's config file (`-c`) decides, else the number of CPUs.
    pub threads: Option<usize>,
    pub grace_seconds: u64,
    /// On SIGTERM, how long the gateway keeps accepting and serving, not ready, before the
    /// grace period begins (`PROXY_SHUTDOWN_DELAY_SECONDS`): the time an orchestrator takes
    /// to stop sending it traffic.
    pub shutdown_delay_seconds: u64,
    pub keepalive_seconds: u64,
    pub header_timeout_seconds: u64,
    pub log_format: LogFormat,
    /// Token verification settings, when `JWKS_URL`, `JWT_ISSUER` and `JWT_AUDIENCE` are
    /// all set.
    pub jwt: Option<JwtSettings>,
    /// Which of those three are missing (a route with auth on needs them all).
    pub jwt_missing: Vec<&'static str>,
    /// The global CORS policy (`CORS_ORIGINS` and friends); a service's own replaces it.
    pub cors: Option<Cors>,
    /// Shared rate limits (`RATE_LIMIT_REDIS_URL`).
    pub rate_limit_redis: Option<String>,
    /// The session checks against the auth service's Redis (`JWT_SESSION_CHECK`,
    /// `JWT_REVOKED_KEY`), when either is on.
    pub sessions: Option<SessionSettings>,
    /// Peers whose `X-Forwarded-For` is believed for the `ip` rate-limit key.
    pub trusted_proxies: Vec<IpNet>,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`, `/routes`).
    pub admin_host: IpAddr,
    pub admin_port: u16,
    /// Required off loopback: a bearer token for every admin path but `/healthz`.
    pub admin_token: Option<String>,
    /// The TLS listener, when `PROXY_TLS_CERT` and `PROXY_TLS_KEY` are set.
    pub tls: Option<TlsListener>,
    /// `ADMIN_METRICS=off`: no Prometheus metrics (nothing counted, `/metrics` 404).
    pub metrics: bool,
    /// A request body silent for this long gets 408.
    pub body_timeout_seconds: u64,
    /// Open client connections at most (`PROXY_MAX_CONNECTIONS`); `None`: the default,
    /// half the process's open-file limit (the other half is for upstream connections).
    pub max_connections: Option<usize>,
    /// Open client connections from one address at most; `None`: no such limit.
    pub max_connections_per_ip: Option<usize>,
    /// Forward header names with underscores (`PROXY_ALLOW_UNDERSCORE_HEADERS`).
    pub allow_underscore_headers: bool,
}

/// A TLS listener (HTTP/1.1 and HTTP/2 by ALPN) beside the plain one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListener {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    pub port: u16,
    /// `Strict-Transport-Security: max-age=N` on every TLS response, when set.
    pub hsts_seconds: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[error("environment variable {var}={value:?}: {expected}")]
pub struct SettingsError {
    var: &'static str,
    value: String,
    expected: String,
}

impl Settings {
    /// `env` looks a variable up (`std::env::var` in production, a map in tests).
    pub fn resolve(
        services: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let get = |var: &'static str| env(var).filter(|v| !v.trim().is_empty()).map(|v| (var, v));
        let bad = |(var, value): (&'static str, String), expected: &str| SettingsError {
            var,
            value,
            expected: expected.to_owned(),
        };

        // A secret may come from a file instead, as orchestrators mount them:
        // `ADMIN_TOKEN_FILE=/run/secrets/admin-token` (surrounding whitespace trimmed).
        let secret = |var: &'static str, file_var: &'static str| {
            let from_file = get(file_var);
            match (get(var), from_file) {
                (value, None) => Ok(value),
                (Some(_), Some(_)) => Err(SettingsError {
                    var: file_var,
                    value: "(set)".into(),
                    expected: format!("{var} or {file_var}, not both"),
                }),
                (None, Some((_, path))) => match std::fs::read_to_string(path.trim()) {
                    Ok(text) if !text.trim().is_empty() => Ok(Some((var, text.trim().to_owned()))),
                    Ok(_) => Err(SettingsError {
                        var: file_var,
                        value: path,
                        expected: format!("a file holding {var} (this one is empty)"),
                    }),
                    Err(e) => Err(SettingsError {
                        var: file_var,
                        value: path,
                        expected: format!("a readable file holding {var} ({e})"),
                    }),
                },
            }
        };

        let given = services.or_else(|| get("SERVICES_CONFIG").map(|(_, v)| PathBuf::from(v)));
        let services_given = given.is_some();
        let services_path = given.unwrap_or_else(|| PathBuf::from(DEFAULT_SERVICES));
        let host = match get("PROXY_HOST") {
            None => DEFAULT_HOST.parse().expect("default host is an IP"),
            Some((_, v)) if v == "localhost" => IpAddr::from([127, 0, 0, 1]),
            Some(kv) => {
                kv.1.trim()
                    .parse()
                    .map_err(|_| bad(kv, "an IP address to listen on, e.g. 0.0.0.0 or ::"))?
            }
        };
        let port = match get("PROXY_PORT") {
            None => DEFAULT_PORT,
            Some(kv) => match kv.1.trim().parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(bad(kv, "a TCP port from 1 to 65535")),
            },
        };
        let threads = match get("PROXY_THREADS") {
            None => None,
            Some(kv) => match kv.1.trim().parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => Some(n),
                _ => return Err(bad(kv, "a number of worker threads from 1 to 1024")),
            },
        };
        let grace_seconds = match get("PROXY_GRACE_SECONDS") {
            None => DEFAULT_GRACE_SECONDS,
            Some(kv) => {
                kv.1.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(kv, "a number of seconds"))?
            }
        };
        let shutdown_delay_seconds = match get("PROXY_SHUTDOWN_DELAY_SECONDS") {
            None => 0,
            Some(kv) => match kv.1.trim().parse::<u64>() {
                Ok(n) if n <= 3_600 => n,
                _ => return Err(bad(kv, "a number of seconds from 0 to 3600")),
            },
        };
        // Both at least a second: 0 would close every connection before its request.
        let seconds = |var: &'static str, default: u64| match get(var) {
            None => Ok(default),
            Some(kv) => match kv.1.trim().parse::<u64>() {
                Ok(n) if (1..=86_400).contains(&n) => Ok(n),
                _ => Err(bad(kv, "a number of seconds from 1 to 86400")),
            },
        };
        let keepalive_seconds = seconds("PROXY_KEEPALIVE_SECONDS", DEFAULT_KEEPALIVE_SECONDS)?;
        let header_timeout_seconds = seconds(
            "PROXY_HEADER_TIMEOUT_SECONDS",
            DEFAULT_HEADER_TIMEOUT_SECONDS,
        )?;
        let log_format = match get("LOG_FORMAT") {
            None => LogFormat::Text,
            Some((_, v)) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some((_, v)) if v.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some(kv) => return Err(bad(kv, "either text or json")),
        };
        let mut jwt_missing = Vec::new();
        let mut required = |var: &'static str| {
            let v = get(var);
            if v.is_none() {
                jwt_missing.push(var);
            }
            v
        };
        let (url, issuer, audience) = (
            required("JWKS_URL"),
            required("JWT_ISSUER"),
            required("JWT_AUDIENCE"),
        );
        let mut jwks_url = url
            .map(|kv| JwksUrl::parse(kv.1.trim()).map_err(|e| bad(kv, &e)))
            .transpose()?;
        if let Some(kv) = get("JWKS_CA_FILE") {
            match jwks_url.as_mut() {
                Some(url) if url.tls => {
                    check_ca_file(kv.1.trim()).map_err(|e| bad(kv.clone(), &e))?;
                    url.ca_file = Some(kv.1.trim().to_owned());
                }
                _ => return Err(bad(kv, "only applies to an https:// JWKS_URL")),
            }
        }
        let leeway_seconds = match get("JWT_LEEWAY_SECONDS") {
            None => DEFAULT_LEEWAY_SECONDS,
            Some(kv) => match kv.1.trim().parse::<u64>() {
                Ok(n) if n <= 3600 => n,
                _ => return Err(bad(kv, "a number of seconds from 0 to 3600")),
            },
        };
        let refresh =
            Duration::from_secs(seconds("JWKS_REFRESH_SECONDS", DEFAULT_REFRESH_SECONDS)?);
        let jwt = match (jwks_url, issuer, audience) {
            (Some(jwks_url), Some((_, issuer)), Some((_, audience))) => Some(JwtSettings {
                jwks_url,
                issuer: issuer.trim().to_owned(),
                audience: audience.trim().to_owned(),
                leeway_seconds,
                refresh,
            }),
            _ => None,
        };
        let cors = cors_policy(&get)?;
        let rate_limit_redis = match secret("RATE_LIMIT_REDIS_URL", "RATE_LIMIT_REDIS_URL_FILE")? {
            None => None,
            Some(kv) => match redis::Client::open(kv.1.trim()) {
                Ok(_) => Some(kv.1.trim().to_owned()),
                Err(e) => return Err(bad(kv, &format!("a Redis URL, redis://host:port ({e})"))),
            },
        };
        let sessions = session_settings(&get, &secret)?;
        let trusted_proxies = match get("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(kv) => {
                let parsed: Result<Vec<IpNet>, _> =
                    kv.1.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            s.parse::<IpNet>()
                                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                        })
                        .collect();
                parsed.map_err(|_| {
                    bad(
                        kv,
                        "a comma-separated list of CIDRs, e.g. 10.0.0.0/8, 172.16.0.0/12",
                    )
                })?
            }
        };
        let admin_token =
            secret("ADMIN_TOKEN", "ADMIN_TOKEN_FILE")?.map(|(_, v)| v.trim().to_owned());
        if let Some(token) = &admin_token
            && token.len() < 16
        {
            return Err(bad(
                ("ADMIN_TOKEN", "(hidden)".into()),
                "at least 16 characters",
            ));
        }
        let admin_host = match get("ADMIN_HOST") {
            None => DEFAULT_ADMIN_HOST,
            Some((_, v)) if v == "localhost" => DEFAULT_ADMIN_HOST,
            Some(kv) => {
                let ip = kv.1.trim().parse::<IpAddr>().map_err(|_| {
                    bad(
                        kv.clone(),
                        "an IP address for the admin listener, e.g. 127.0.0.1",
                    )
                })?;
                if !ip.is_loopback() && admin_token.is_none() {
                    return Err(bad(
                        kv,
                        "not a loopback address: set ADMIN_TOKEN too (metrics and routes would be open)",
                    ));
                }
                ip
            }
        };
        let admin_port = match get("ADMIN_PORT") {
            None => DEFAULT_ADMIN_PORT,
            Some(kv) => match kv.1.trim().parse::<u16>() {
                Ok(p) if p != 0 && p != port => p,
                _ => return Err(bad(kv, "a TCP port from 1 to 65535, not PROXY_PORT")),
            },
        };
        let tls = tls_listener(&get, port, admin_port)?;
        let metrics = switch(get("ADMIN_METRICS"), true, [("on", true), ("off", false)])?;
        let allow_underscore_headers = switch(
            get("PROXY_ALLOW_UNDERSCORE_HEADERS"),
            false,
            [("true", true), ("false", false)],
        )?;
        let body_timeout_seconds =
            seconds("PROXY_BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT_SECONDS)?;
        let count = |var: &'static str| match get(var) {
            None => Ok(None),
            Some(kv) => match kv.1.trim().parse::<usize>() {
                Ok(n) if (1..=10_000_000).contains(&n) => Ok(Some(n)),
                _ => Err(bad(kv, "a number of connections from 1 to 10000000")),
            },
        };
        let max_connections = count("PROXY_MAX_CONNECTIONS")?;
        let max_connections_per_ip = count("PROXY_MAX_CONNECTIONS_PER_IP")?;
        Ok(Settings {
            body_timeout_seconds,
            max_connections,
            max_connections_per_ip,
            tls,
            metrics,
            admin_host,
            admin_port,
            admin_token,
            cors,
            rate_limit_redis,
            trusted_proxies,
            jwt,
            jwt_missing,
            services_path,
            services_given,
            host,
            port,
            threads,
            grace_seconds,
            shutdown_delay_seconds,
            allow_underscore_headers,
            sessions,
            keepalive_seconds,
            header_timeout_seconds,
            log_format,
        })
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> String {
        std::net::SocketAddr::new(self.admin_host, self.admin_port).to_string()
    }

    /// The listen address as Pingora wants it (`[::]:9000` for IPv6).
    pub fn listen_addr(&self) -> String {
        std::net::SocketAddr::new(self.host, self.port).to_string()
    }

    /// The connection limit in force: `PROXY_MAX_CONNECTIONS`, else half the open-file
    /// limit (a connection past that would fail at `accept`, and Pingora's accept loop
    /// then pauses for a second for everyone).
    pub fn connection_limit(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let files = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or(1024, |(soft, _)| soft);
            usize::try_from(files / 2).unwrap_or(usize::MAX).max(1)
        })
    }

    /// The TLS listener's address, when there is one (same host as the plain one).
    pub fn tls_addr(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(std::net::SocketAddr::new(self.host, tls.port).to_string())
    }
}

/// `PROXY_TLS_CERT` and `PROXY_TLS_KEY` (both or neither), `PROXY_TLS_PORT`,
/// `PROXY_HSTS_SECONDS`. The last two without a certificate would do nothing: refused, so
/// an operator who believes TLS is on learns it is not.
fn tls_listener(
    get: &dyn Fn(&'static str) -> Option<(&'static str, String)>,
    port: u16,
    admin_port: u16,
) -> Result<Option<TlsListener>, SettingsError> {
    let bad = |(var, value): (&'static str, String), expected: &str| SettingsError {
        var,
        value,
        expected: expected.to_owned(),
    };
    let (cert, key) = match (get("PROXY_TLS_CERT"), get("PROXY_TLS_KEY")) {
        (Some((_, cert)), Some((_, key))) => (cert, key),
        (Some(kv), None) => return Err(bad(kv, "set PROXY_TLS_KEY too (the certificate's key)")),
        (None, Some(kv)) => return Err(bad(kv, "set PROXY_TLS_CERT too (the key's certificate)")),
        (None, None) => {
            for var in ["PROXY_TLS_PORT", "PROXY_HSTS_SECONDS"] {
                if let Some(kv) = get(var) {
                    return Err(bad(
                        kv,
                        "only applies to the TLS listener: set PROXY_TLS_CERT and PROXY_TLS_KEY",
                    ));
                }
            }
            return Ok(None);
        }
    };
    let tls_port = match get("PROXY_TLS_PORT") {
        None => DEFAULT_TLS_PORT,
        Some(kv) => match kv.1.trim().parse::<u16>() {
            Ok(p) if p != 0 && p != port && p != admin_port => p,
            _ => {
                return Err(bad(
                    kv,
                    "a TCP port from 1 to 65535, not PROXY_PORT or ADMIN_PORT",
                ));
            }
        },
    };
    if tls_port == port || tls_port == admin_port {
        return Err(bad(
            ("PROXY_TLS_PORT", tls_port.to_string()),
            "a port of its own: PROXY_PORT or ADMIN_PORT uses it (set PROXY_TLS_PORT)",
        ));
    }
    let hsts_seconds = match get("PROXY_HSTS_SECONDS") {
        None => None,
        Some(kv) => match kv.1.trim().parse::<u64>() {
            Ok(n) if n <= MAX_HSTS_SECONDS => Some(n),
            _ => {
                return Err(bad(
                    kv,
                    "a number of seconds from 0 to 63072000 (two years)",
                ));
            }
        },
    };
    Ok(Some(TlsListener {
        cert: PathBuf::from(cert.trim()),
        key: PathBuf::from(key.trim()),
        port: tls_port,
        hsts_seconds,
    }))
}

/// A CA file as Pingora's TLS connector loads it (it panics on one that does not load):
/// PEM certificates only, at least one.
fn check_ca_file(path: &str) -> Result<(), String> {
    let mut roots = pingora_rustls::RootCertStore::empty();
    pingora_rustls::load_ca_file_into_store(path, &mut roots).map_err(|e| e.to_string())?;
    if roots.is_empty() {
        return Err("no certificate in it (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

/// `CORS_ORIGINS`, `CORS_METHODS`, `CORS_HEADERS` (comma-separated), `CORS_CREDENTIALS`
/// (`true`/`false`), `CORS_MAX_AGE` (seconds). None without `CORS_ORIGINS`.
type Var = (&'static str, String);

/// A setting that is one of two words (any case): its value, `default` when unset.
fn switch(
    var: Option<Var>,
    default: bool,
    words: [(&str, bool); 2],
) -> Result<bool, SettingsError> {
    let Some((name, value)) = var else {
        return Ok(default);
    };
    match words
        .iter()
        .find(|(word, _)| value.trim().eq_ignore_ascii_case(word))
    {
        Some(&(_, on)) => Ok(on),
        None => Err(SettingsError {
            var: name,
            expected: format!("either {} or {}", words[0].0, words[1].0),
            value,
        }),
    }
}

/// `JWT_SESSION_CHECK`, `JWT_SESSION_KEY`, `JWT_REVOKED_KEY`, `JWT_SESSION_REDIS_URL` (or
/// its `_FILE`), `JWT_SESSION_CACHE_MS`, `JWT_SESSION_FAIL`: `None` when neither check is
/// on.
fn session_settings(
    get: &impl Fn(&'static str) -> Option<Var>,
    secret: &impl Fn(&'static str, &'static str) -> Result<Option<Var>, SettingsError>,
) -> Result<Option<SessionSettings>, SettingsError> {
    let bad = |(var, value): Var, expected: &str| SettingsError {
        var,
        value,
        expected: expected.to_owned(),
    };
    let template = |kv: Var| KeyTemplate::parse(kv.1.trim()).map_err(|e| bad(kv, &e));
    let current = switch(
        get("JWT_SESSION_CHECK"),
        false,
        [("off", false), ("current", true)],
    )?;
    let key = match get("JWT_SESSION_KEY") {
        None => KeyTemplate::parse(jwt::DEFAULT_SESSION_KEY)
            .map_err(|e| bad(("JWT_SESSION_KEY", String::new()), &e))?,
        Some(kv) => template(kv)?,
    };
    let revoked = get("JWT_REVOKED_KEY").map(template).transpose()?;
    let cache = match get("JWT_SESSION_CACHE_MS") {
        None => jwt::DEFAULT_SESSION_CACHE,
        Some(kv) => match kv.1.trim().parse::<u64>() {
            Ok(ms) if ms <= 60_000 => Duration::from_millis(ms),
            _ => return Err(bad(kv, "milliseconds from 0 to 60000")),
        },
    };
    let fail_open = switch(
        get("JWT_SESSION_FAIL"),
        false,
        [("closed", false), ("open", true)],
    )?;
    let url = secret("JWT_SESSION_REDIS_URL", "JWT_SESSION_REDIS_URL_FILE")?;
    if !current && revoked.is_none() {
        return Ok(None);
    }
    let Some(kv) = url else {
        return Err(bad(
            ("JWT_SESSION_REDIS_URL", String::new()),
            "the auth service's Redis, redis://host:port/db: required with JWT_SESSION_CHECK=current or JWT_REVOKED_KEY",
        ));
    };
    if let Err(e) = redis::Client::open(kv.1.trim()) {
        return Err(bad(kv, &format!("a Redis URL, redis://host:port/db ({e})")));
    }
    Ok(Some(SessionSettings {
        current: current.then_some(key),
        revoked,
        redis_url: kv.1.trim().to_owned(),
        cache,
        fail_open,
    }))
}

fn cors_policy(
    get: &dyn Fn(&'static str) -> Option<(&'static str, String)>,
) -> Result<Option<Cors>, SettingsError> {
    let vars = [
        "CORS_ORIGINS",
        "CORS_METHODS",
        "CORS_HEADERS",
        "CORS_CREDENTIALS",
        "CORS_MAX_AGE",
    ];
    let bad = |(var, value): (&'static str, String), expected: String| SettingsError {
        var,
        value,
        expected,
    };
    let list = |v: Option<(&'static str, String)>| -> Vec<String> {
        v.map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
    };
    let Some(origins) = get("CORS_ORIGINS") else {
        if let Some(other) = vars[1..].iter().find_map(|v| get(v)) {
            return Err(bad(other, "has no effect without CORS_ORIGINS".into()));
        }
        return Ok(None);
    };
    let credentials = match get("CORS_CREDENTIALS") {
        None => false,
        Some((_, v)) if v.trim().eq_ignore_ascii_case("true") => true,
        Some((_, v)) if v.trim().eq_ignore_ascii_case("false") => false,
        Some(kv) => return Err(bad(kv, "true or false".into())),
    };
    let max_age = match get("CORS_MAX_AGE") {
        None => None,
        Some(kv) => Some(
            kv.1.trim()
                .parse::<u64>()
                .map_err(|_| bad(kv, "a number of seconds".into()))?,
        ),
    };
    let spec = PolicySpec {
        origins: list(Some(origins.clone())),
        methods: list(get("CORS_METHODS")),
        headers: list(get("CORS_HEADERS")),
        credentials,
        max_age,
    };
    spec.build().map(Some).map_err(|e| {
        let var = match e.field {
            "methods" => "CORS_METHODS",
            "headers" => "CORS_HEADERS",
            "credentials" => "CORS_CREDENTIALS",
            "max_age" => "CORS_MAX_AGE",
            _ => "CORS_ORIGINS",
        };
        let value = get(var).map(|kv| kv.1).unwrap_or_default();
        bad((var, value), e.message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(None, |k| map.get(k).cloned())
    }

    /// `vars` are refused with a message that starts by naming `var`.
    fn refused_naming(vars: &[(&str, &str)], var: &str) {
        let e = with(vars).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("environment variable {var}=")),
            "{e}"
        );
    }

    #[test]
    fn defaults() {
        let s = with(&[]).unwrap();
        assert_eq!(s.services_path, PathBuf::from("config/services.json"));
        assert!(!s.services_given);
        assert_eq!(s.listen_addr(), "0.0.0.0:9000");
        assert_eq!(s.threads, None);
        assert_eq!(s.grace_seconds, DEFAULT_GRACE_SECONDS);
        assert_eq!(s.shutdown_delay_seconds, 0, "compose stops as before");
        assert_eq!(s.keepalive_seconds, 75);
        assert_eq!(s.header_timeout_seconds, 30);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.jwt, None);
        assert_eq!(s.jwt_missing, ["JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"]);
        assert!(s.metrics);
        assert_eq!(s.body_timeout_seconds, 60);
        assert_eq!((s.max_connections, s.max_connections_per_ip), (None, None));
        assert!(s.connection_limit() >= 1);
        let s = with(&[
            ("PROXY_MAX_CONNECTIONS", "5000"),
            ("PROXY_MAX_CONNECTIONS_PER_IP", "50"),
            ("PROXY_BODY_TIMEOUT_SECONDS", "5"),
        ])
        .unwrap();
        assert_eq!(s.connection_limit(), 5000);
        assert_eq!(s.max_connections_per_ip, Some(50));
        assert_eq!(s.body_timeout_seconds, 5);
        for var in [
            "PROXY_MAX_CONNECTIONS",
            "PROXY_MAX_CONNECTIONS_PER_IP",
            "PROXY_BODY_TIMEOUT_SECONDS",
        ] {
            refused_naming(&[(var, "0")], var);
            refused_naming(&[(var, "many")], var);
        }
        let delay = |v: &str| with(&[("PROXY_SHUTDOWN_DELAY_SECONDS", v)]);
        assert_eq!(delay("5").unwrap().shutdown_delay_seconds, 5);
        assert_eq!(delay("0").unwrap().shutdown_delay_seconds, 0);
        for v in ["-1", "5s", "3601"] {
            refused_naming(
                &[("PROXY_SHUTDOWN_DELAY_SECONDS", v)],
                "PROXY_SHUTDOWN_DELAY_SECONDS",
            );
        }
        assert!(!with(&[]).unwrap().allow_underscore_headers);
        let allow = with(&[("PROXY_ALLOW_UNDERSCORE_HEADERS", "true")]).unwrap();
        assert!(allow.allow_underscore_headers);
        refused_naming(
            &[("PROXY_ALLOW_UNDERSCORE_HEADERS", "yes")],
            "PROXY_ALLOW_UNDERSCORE_HEADERS",
        );
        assert!(!with(&[("ADMIN_METRICS", "OFF")]).unwrap().metrics);
        refused_naming(&[("ADMIN_METRICS", "no")], "ADMIN_METRICS");
    }

    #[test]
    fn admin_listener_is_loopback_unless_a_token_guards_it() {
        let s = with(&[]).unwrap();
        assert_eq!(s.admin_addr(), "127.0.0.1:9091");
        assert_eq!(s.admin_token, None);
        let e = with(&[("ADMIN_HOST", "0.0.0.0")]).unwrap_err().to_string();
        assert!(e.contains("ADMIN_TOKEN"), "{e}");
        let s = with(&[
            ("ADMIN_HOST", "0.0.0.0"),
            ("ADMIN_TOKEN", "a-long-enough-token"),
        ])
        .unwrap();
        assert_eq!(s.admin_addr(), "0.0.0.0:9091");
        assert!(with(&[("ADMIN_TOKEN", "short")]).is_err());
        assert!(with(&[("ADMIN_PORT", "9000")]).is_err(), "the public port");
        assert!(with(&[("ADMIN_PORT", "x")]).is_err());
    }

    #[test]
    fn session_checks_need_their_redis() {
        assert_eq!(with(&[]).unwrap().sessions, None, "off by default");
        let url = ("JWT_SESSION_REDIS_URL", "redis://127.0.0.1:6379/0");
        let s = with(&[("JWT_SESSION_CHECK", "current"), url])
            .unwrap()
            .sessions
            .unwrap();
        assert_eq!(s.current, Some(KeyTemplate::parse("{sub}:access").unwrap()));
        assert_eq!(
            (s.revoked.clone(), s.cache, s.fail_open),
            (None, Duration::from_secs(1), false)
        );
        let s = with(&[
            ("JWT_REVOKED_KEY", "revoked:{jti}"),
            ("JWT_SESSION_CACHE_MS", "250"),
            ("JWT_SESSION_FAIL", "open"),
            url,
        ])
        .unwrap()
        .sessions
        .unwrap();
        assert_eq!(s.current, None);
        assert_eq!(
            s.revoked,
            Some(KeyTemplate::parse("revoked:{jti}").unwrap())
        );
        assert_eq!((s.cache, s.fail_open), (Duration::from_millis(250), true));
        refused_naming(&[("JWT_SESSION_CHECK", "current")], "JWT_SESSION_REDIS_URL");
        refused_naming(&[("JWT_SESSION_CHECK", "on"), url], "JWT_SESSION_CHECK");
        refused_naming(
            &[
                ("JWT_SESSION_CHECK", "current"),
                ("JWT_SESSION_KEY", "{user}"),
                url,
            ],
            "JWT_SESSION_KEY",
        );
        refused_naming(&[("JWT_REVOKED_KEY", "revoked"), url], "JWT_REVOKED_KEY");
        refused_naming(
            &[
                ("JWT_SESSION_CHECK", "current"),
                ("JWT_SESSION_FAIL", "maybe"),
                url,
            ],
            "JWT_SESSION_FAIL",
        );
        refused_naming(
            &[
                ("JWT_SESSION_CHECK", "current"),
                ("JWT_SESSION_CACHE_MS", "61000"),
                url,
            ],
            "JWT_SESSION_CACHE_MS",
        );
    }

    #[test]
    fn secrets_may_come_from_files() {
        let dir = std::env::temp_dir().join(format!("beat-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("admin-token");
        std::fs::write(&token, "a-long-enough-token-from-a-file\n").unwrap();
        let redis = dir.join("redis-url");
        std::fs::write(&redis, "redis://:secret@127.0.0.1:6379/2").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let path = |p: &std::path::Path| p.display().to_string();

        let s = with(&[
            ("ADMIN_TOKEN_FILE", &path(&token)),
            ("RATE_LIMIT_REDIS_URL_FILE", &path(&redis)),
        ])
        .unwrap();
        assert_eq!(
            s.admin_token.as_deref(),
            Some("a-long-enough-token-from-a-file")
        );
        assert_eq!(
            s.rate_limit_redis.as_deref(),
            Some("redis://:secret@127.0.0.1:6379/2")
        );
        // The file's value is checked as the variable's would be.
        std::fs::write(&token, "short").unwrap();
        refused_naming(&[("ADMIN_TOKEN_FILE", &path(&token))], "ADMIN_TOKEN");
        refused_naming(&[("ADMIN_TOKEN_FILE", &path(&empty))], "ADMIN_TOKEN_FILE");
        let missing = path(&dir.join("missing"));
        refused_naming(&[("ADMIN_TOKEN_FILE", &missing)], "ADMIN_TOKEN_FILE");
        refused_naming(
            &[
                ("ADMIN_TOKEN", "a-long-enough-token"),
                ("ADMIN_TOKEN_FILE", &path(&token)),
            ],
            "ADMIN_TOKEN_FILE",
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_listener_needs_both_files_and_its_own_port() {
        assert_eq!(with(&[]).unwrap().tls, None);
        let pair = [("PROXY_TLS_CERT", "/c.pem"), ("PROXY_TLS_KEY", "/k.pem")];
        let s = with(&pair).unwrap();
        let tls = s.tls.clone().unwrap();
        assert_eq!((tls.port, tls.hsts_seconds), (DEFAULT_TLS_PORT, None));
        assert_eq!(s.tls_addr().as_deref(), Some("0.0.0.0:9443"));
        let s = with(&[
            pair[0],
            pair[1],
            ("PROXY_TLS_PORT", "8443"),
            ("PROXY_HSTS_SECONDS", "31536000"),
        ])
        .unwrap();
        let tls = s.tls.unwrap();
        assert_eq!((tls.port, tls.hsts_seconds), (8443, Some(31_536_000)));

        refused_naming(&[pair[0]], "PROXY_TLS_CERT");
        refused_naming(&[pair[1]], "PROXY_TLS_KEY");
        // Without a certificate these would do nothing.
        refused_naming(&[("PROXY_TLS_PORT", "8443")], "PROXY_TLS_PORT");
        refused_naming(&[("PROXY_HSTS_SECONDS", "60")], "PROXY_HSTS_SECONDS");
        for (var, value) in [
            ("PROXY_TLS_PORT", "9000"),
            ("PROXY_TLS_PORT", "9091"),
            ("PROXY_TLS_PORT", "0"),
            ("PROXY_HSTS_SECONDS", "-1"),
            ("PROXY_HSTS_SECONDS", "63072001"),
        ] {
            refused_naming(&[pair[0], pair[1], (var, value)], var);
        }
        // The default TLS port taken by the plain listener.
        refused_naming(
            &[pair[0], pair[1], ("PROXY_PORT", "9443")],
            "PROXY_TLS_PORT",
        );
    }

    #[test]
    fn rate_limit_settings() {
        let s = with(&[
            ("RATE_LIMIT_REDIS_URL", "redis://127.0.0.1:6379/0"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7, ::1"),
        ])
        .unwrap();
        assert_eq!(
            s.rate_limit_redis.as_deref(),
            Some("redis://127.0.0.1:6379/0")
        );
        assert_eq!(s.trusted_proxies.len(), 3);
        for (var, value) in [
            ("RATE_LIMIT_REDIS_URL", "localhost:6379"),
            ("TRUSTED_PROXIES", "10.0.0.0/33"),
            ("TRUSTED_PROXIES", "proxy.internal"),
        ] {
            refused_naming(&[(var, value)], var);
        }
    }

    #[test]
    fn cors_from_the_environment() {
        assert_eq!(with(&[]).unwrap().cors, None);
        let s = with(&[
            ("CORS_ORIGINS", "https://app.example, https://admin.example"),
            ("CORS_CREDENTIALS", "true"),
            ("CORS_MAX_AGE", "60"),
        ])
        .unwrap();
        assert!(s.cors.is_some());
        for (vars, var) in [
            (
                &[("CORS_ORIGINS", "*"), ("CORS_CREDENTIALS", "true")][..],
                "CORS_CREDENTIALS",
            ),
            (&[("CORS_ORIGINS", "app.example")][..], "CORS_ORIGINS"),
            (&[("CORS_METHODS", "GET")][..], "CORS_METHODS"),
            (
                &[("CORS_ORIGINS", "*"), ("CORS_CREDENTIALS", "yes")][..],
                "CORS_CREDENTIALS",
            ),
            (
                &[("CORS_ORIGINS", "*"), ("CORS_MAX_AGE", "soon")][..],
                "CORS_MAX_AGE",
            ),
        ] {
            refused_naming(vars, var);
        }
    }

    #[test]
    fn jwt_settings_need_all_three() {
        let s = with(&[
            ("JWKS_URL", "http://auth-service:2000/.well-known/jwks.json"),
            ("JWT_ISSUER", "beat-auth"),
            ("JWT_AUDIENCE", "beat"),
            ("JWT_LEEWAY_SECONDS", "5"),
        ])
        .unwrap();
        let jwt = s.jwt.unwrap();
        assert_eq!(jwt.jwks_url.port, 2000);
        assert_eq!(
            (jwt.issuer.as_str(), jwt.audience.as_str()),
            ("beat-auth", "beat")
        );
        assert_eq!(jwt.leeway_seconds, 5);
        assert_eq!(jwt.refresh, Duration::from_secs(DEFAULT_REFRESH_SECONDS));
        let s = with(&[("JWT_ISSUER", "beat-auth")]).unwrap();
        assert_eq!(s.jwt, None);
        assert_eq!(s.jwt_missing, ["JWKS_URL", "JWT_AUDIENCE"]);
    }

    #[test]
    fn env_overrides_and_cli_wins_for_services() {
        let s = with(&[
            ("SERVICES_CONFIG", "/etc/gw.json"),
            ("PROXY_HOST", "::"),
            ("PROXY_PORT", "8080"),
            ("PROXY_THREADS", "1"),
            ("LOG_FORMAT", "JSON"),
            ("PROXY_KEEPALIVE_SECONDS", "5"),
            ("PROXY_HEADER_TIMEOUT_SECONDS", " 2 "),
        ])
        .unwrap();
        assert_eq!(s.keepalive_seconds, 5);
        assert_eq!(s.header_timeout_seconds, 2);
        assert_eq!(s.services_path, PathBuf::from("/etc/gw.json"));
        assert!(s.services_given);
        assert_eq!(s.listen_addr(), "[::]:8080");
        assert_eq!(s.threads, Some(1));
        assert_eq!(s.log_format, LogFormat::Json);
        let s = Settings::resolve(Some("x.json".into()), |_| {
            Some("/etc/gw.json".into()).filter(|_| false)
        })
        .unwrap();
        assert_eq!(s.services_path, PathBuf::from("x.json"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = with(&[("PROXY_PORT", "70000")]).unwrap_err().to_string();
        assert_eq!(
            e,
            "environment variable PROXY_PORT=\"70000\": a TCP port from 1 to 65535"
        );
        assert!(with(&[("PROXY_PORT", "0")]).is_err());
        assert!(
            with(&[("PROXY_HOST", "example.com")])
                .unwrap_err()
                .to_string()
                .contains("PROXY_HOST")
        );
        assert!(
            with(&[("PROXY_THREADS", "0")])
                .unwrap_err()
                .to_string()
                .contains("PROXY_THREADS")
        );
        for var in ["PROXY_KEEPALIVE_SECONDS", "PROXY_HEADER_TIMEOUT_SECONDS"] {
            for value in ["0", "-1", "1.5", "90000", "soon"] {
                refused_naming(&[(var, value)], var);
            }
        }
        for (var, value) in [
            ("JWKS_URL", "ftp://idp.example/jwks"),
            ("JWKS_URL", "auth-service:2000"),
            ("JWT_LEEWAY_SECONDS", "-3"),
            ("JWKS_REFRESH_SECONDS", "0"),
        ] {
            refused_naming(&[(var, value)], var);
        }
        assert!(
            with(&[("LOG_FORMAT", "xml")])
                .unwrap_err()
                .to_string()
                .contains("LOG_FORMAT")
        );
    }

    #[test]
    fn jwks_over_https_may_name_its_ca_file() {
        let https = ("JWKS_URL", "https://auth.example/.well-known/jwks.json");
        let s = with(&[https, ("JWT_ISSUER", "i"), ("JWT_AUDIENCE", "a")]).unwrap();
        let url = s.jwt.unwrap().jwks_url;
        assert!(url.tls && url.ca_file.is_none());

        let dir = std::env::temp_dir().join(format!("beat-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["auth.example".to_owned()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let ca_s = ca.to_str().unwrap();
        let s = with(&[https, ("JWKS_CA_FILE", ca_s)]).unwrap();
        assert_eq!(s.jwt, None, "issuer and audience are missing");
        let s = with(&[
            https,
            ("JWKS_CA_FILE", ca_s),
            ("JWT_ISSUER", "i"),
            ("JWT_AUDIENCE", "a"),
        ])
        .unwrap();
        assert_eq!(s.jwt.unwrap().jwks_url.ca_file.as_deref(), Some(ca_s));
        // Only for https, and only a file that loads.
        refused_naming(
            &[("JWKS_URL", "http://auth:2000/k"), ("JWKS_CA_FILE", ca_s)],
            "JWKS_CA_FILE",
        );
        refused_naming(&[("JWKS_CA_FILE", ca_s)], "JWKS_CA_FILE");
        for bad in ["/nonexistent/ca.pem", not_pem.to_str().unwrap()] {
            refused_naming(&[https, ("JWKS_CA_FILE", bad)], "JWKS_CA_FILE");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
