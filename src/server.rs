//! Assemble the Pingora server: its configuration (Pingora's `-c` file if given, with our
//! settings on top), the proxy service (`pingora_proxy`'s, around our `ProxyHttp`) on the
//! listen address, and run it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::ListenerConfig;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::v1::idle::IdleConnections;
use pingora_core::protocols::l4::stream::L4BufferSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service as ListeningService;
use tokio::signal::unix::SignalKind;

use crate::admin::{self, AdminState};
use crate::config::Service;
use crate::edge::auth::session::SessionStore;
use crate::edge::auth::{JwksRefresh, Verifier};
use crate::edge::connections::{Admission, Limits};
use crate::edge::cors::Policy;
use crate::edge::rate_limit::Redis;
use crate::edge::tls::Certificate;
use crate::live::watch::{HealthWalker, Housekeeping, Reloader};
use crate::live::{Live, Shared, Source};
use crate::proxy::Gateway;
use crate::settings::Settings;

/// Runtime shutdown after the grace period: in-flight work still running then is cut.
const SHUTDOWN_TIMEOUT_SECONDS: u64 = 2;
/// The listener's write buffer: one TCP segment on loopback's and most paths' MSS.
const WRITE_BUFFER: usize = 1460;

/// The server, and how it is to be run: `server.run(run_args)`.
pub struct Built {
    pub server: Server,
    /// Pingora's signals, with the shutdown delay ([`Signals`]) in front of SIGTERM.
    pub run_args: RunArgs,
}

/// Build the server; the caller runs it. Errors: Pingora's own config file, a listen
/// address is unavailable, or the TLS certificate does not load.
pub fn build(
    settings: &Settings,
    mut opt: Opt,
    services: Vec<Service>,
    (source, config_hash, watch): (Source, &str, bool),
) -> anyhow::Result<Built> {
    // Before anything is counted.
    if !settings.metrics {
        crate::metrics::disable();
    }
    let own_file = opt.conf.is_some();
    let mut conf = match &opt.conf {
        Some(path) => ServerConf::load_yaml_with_opt_override(&opt)
            .map_err(|e| anyhow::anyhow!("{path}: {e}"))?,
        None => {
            let mut conf = ServerConf::new_with_opt_override(&opt)
                .ok_or_else(|| anyhow::anyhow!("cannot build Pingora's default configuration"))?;
            conf.threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            conf
        }
    };
    // Applied above; left in, Pingora would warn that it ignores it.
    opt.conf = None;
    if let Some(threads) = settings.threads {
        conf.threads = threads;
    }
    // One worker thread has no one to steal work from: Pingora then runs tokio's
    // current-thread scheduler, which costs less per task switch than the work-stealing
    // one (~2% of the CPU per proxied request, bench/README.md). With several workers,
    // stealing keeps long-lived connections (WebSockets) from piling up on one thread.
    // Pingora's own file, when given, decides.
    if conf.threads == 1 && !own_file {
        conf.work_stealing = false;
    }
    // Pingora's own file may set these; otherwise ours apply (Pingora's default is 300 s).
    conf.grace_period_seconds
        .get_or_insert(settings.grace_seconds);
    conf.graceful_shutdown_timeout_seconds
        .get_or_insert(SHUTDOWN_TIMEOUT_SECONDS);

    // Pingora binds inside its service thread and, when the port is taken, logs and keeps
    // the process alive without a listener. Find out first and refuse to start instead.
    // (On a graceful upgrade, -u, the old process hands its socket over; -t never listens:
    // skip the probe.)
    if !opt.upgrade && !opt.test {
        let listeners = [settings.listen_addr(), settings.admin_addr()];
        for addr in listeners.into_iter().chain(settings.tls_addr()) {
            std::net::TcpListener::bind(&addr)
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        }
    }

    // Pingora's TLS client loads the system's CA certificates in every connector it builds
    // (the proxy's, each health check's, the JWKS fetcher's) and panics when
    // SSL_CERT_FILE or SSL_CERT_DIR name something it cannot read: find out first.
    let mut roots = pingora_rustls::RootCertStore::empty();
    pingora_rustls::load_platform_certs_incl_env_into_store(&mut roots).map_err(|e| {
        anyhow::anyhow!(
            "the system's CA certificates do not load (check SSL_CERT_FILE and SSL_CERT_DIR): {e}"
        )
    })?;

    // Read and checked before anything starts: a bad file is a startup error, not a panic
    // in Pingora's listener.
    let certificate = match &settings.tls {
        Some(tls) => Some(Certificate::load(&tls.cert, &tls.key).map_err(anyhow::Error::msg)?),
        None => None,
    };

    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // The verifier outlives tables (its JWKS cache carries over reloads); its keys are
    // fetched once a table has a route with auth on.
    let verifier = settings
        .jwt
        .as_ref()
        .map(|jwt| Arc::new(Verifier::new(jwt.clone())));
    if let Some(verifier) = &verifier {
        server.add_service(background_service(
            "jwks refresh",
            JwksRefresh(verifier.clone()),
        ));
    }
    let redis = match &settings.rate_limit_redis {
        Some(url) => Some(Arc::new(
            Redis::new(url).map_err(|e| anyhow::anyhow!("RATE_LIMIT_REDIS_URL: {e}"))?,
        )),
        None => None,
    };
    let sessions = match &settings.sessions {
        Some(s) => {
            Some(Arc::new(SessionStore::new(s.clone()).map_err(|e| {
                anyhow::anyhow!("JWT_SESSION_REDIS_URL: {e}")
            })?))
        }
        None => None,
    };
    let shared = Shared {
        sessions,
        redis,
        trusted_proxies: settings.trusted_proxies.clone().into(),
        jwt_missing: settings.jwt_missing.clone(),
        verifier,
    };
    let live = Live::new(services, config_hash, source, shared).map_err(anyhow::Error::msg)?;
    let live_for_signals = live.clone();
    server.add_service(background_service(
        "config reload",
        Reloader {
            live: live.clone(),
            watch,
            certificate: certificate.clone(),
        },
    ));
    server.add_service(background_service(
        "rate-limit housekeeping",
        Housekeeping(live.clone()),
    ));
    server.add_service(background_service(
        "health checks",
        HealthWalker(live.clone()),
    ));
    server.add_service(admin::service(
        AdminState {
            live: live.clone(),
            certificate: certificate.clone(),
        },
        &settings.admin_addr(),
        settings.admin_token.clone(),
    ));
    let hsts = settings.tls.as_ref().and_then(|tls| tls.hsts_seconds);
    let global_cors = settings
        .cors
        .as_ref()
        .map(Policy::new)
        .transpose()
        .map_err(|e| anyhow::anyhow!("CORS_*: {e}"))?;
    let gateway = Gateway::new(
        live,
        (
            Duration::from_secs(settings.keepalive_seconds),
            Duration::from_secs(settings.body_timeout_seconds),
        ),
        global_cors,
        hsts,
    )
    .allow_underscore_headers(settings.allow_underscore_headers);
    let mut options = HttpServerOptions::default();
    // CONNECT reaches `request_filter`, which refuses it with the gateway's JSON 405
    // (Pingora's own refusal is a bare 405 before any phase runs).
    options.allow_connect_method_proxying = true;
    // From a head's first byte to its end (vendored pingora-core, vendor/README.md).
    options.h1_request_header_timeout = Some(Duration::from_secs(settings.header_timeout_seconds));
    // A request line past 8 KiB is a 414 however long it is, found as soon as that much has
    // arrived; whitespace in a target is a 400, not percent-encoded and forwarded
    // (vendored pingora-core, vendor/README.md).
    options.h1_max_request_line = Some(crate::proxy::MAX_REQUEST_LINE);
    options.h1_reject_whitespace_in_target = true;
    // A new connection waits for its first request as long as a kept-alive one waits for
    // its next (Pingora's fixed 60 s otherwise).
    options.h1_first_request_idle_seconds = Some(settings.keepalive_seconds);
    // An HTTP/2 connection with no stream open for as long is closed too.
    options.h2_idle_timeout = Some(Duration::from_secs(settings.keepalive_seconds));
    // HTTP/1 connections waiting for a request, oldest first: at the connection limit the
    // oldest is closed to admit a new one (vendored pingora-core, vendor/README.md).
    let idle = Arc::new(IdleConnections::new());
    options.h1_idle_connections = Some(idle.clone());
    let mut proxy = pingora_proxy::http_proxy(&server.configuration, gateway);
    proxy.server_options = Some(options);
    // A quiet WebSocket is a healthy one: once the service's 101 is in, its read timeout
    // no longer applies (vendored pingora-proxy, vendor/README.md).
    proxy.upgraded_without_read_timeout = true;
    let limit = settings.connection_limit();
    log::info!(
        "connections: at most {limit} open{}{}",
        if settings.max_connections.is_none() {
            " (half the open-file limit; PROXY_MAX_CONNECTIONS to set)"
        } else {
            ""
        },
        settings
            .max_connections_per_ip
            .map_or(String::new(), |n| format!(", {n} per client address"))
    );
    let admission = Admission {
        app: Arc::new(proxy),
        limits: Limits::new(
            limit,
            settings.max_connections_per_ip,
            settings.trusted_proxies.clone().into(),
            Some(idle),
        ),
    };
    let mut proxy = ListeningService::new("beat-gateway".to_owned(), admission);
    // Pingora gives every accepted connection a 64 KiB read buffer (sized for TLS
    // records). Reading heads and bodies straight from the socket costs nothing measurable
    // and saves that on every idle keep-alive connection; a small write buffer lets a
    // response head and its first body bytes leave in one write.
    proxy.add_listener(
        ListenerConfig::tcp(settings.listen_addr())
            .l4_buffer(L4BufferSettings::new(0, WRITE_BUFFER)),
    );
    if let (Some(certificate), Some(addr)) = (certificate, settings.tls_addr()) {
        proxy.add_listener(ListenerConfig::tcp(addr).tls(tls_settings(certificate)?));
    }
    server.add_service(proxy);
    let signals = Signals {
        live: live_for_signals,
        delay: Duration::from_secs(settings.shutdown_delay_seconds),
    };
    Ok(Built {
        server,
        run_args: RunArgs {
            shutdown_signal: Box::new(signals),
        },
    })
}

/// Pingora's signals (SIGTERM: graceful shutdown; SIGQUIT: graceful upgrade, `-u`; SIGINT:
/// at once), with a delay in front of SIGTERM's. An orchestrator sends SIGTERM and removes
/// the instance from its endpoints at the same moment, and the removal takes a few seconds
/// to reach every load balancer: an instance that stopped accepting at once would refuse
/// the requests still sent its way. So on SIGTERM the gateway reports itself not ready
/// (`/readyz` 503) and answers with `Connection: close`, goes on accepting and serving for
/// `PROXY_SHUTDOWN_DELAY_SECONDS`, and only then begins Pingora's graceful shutdown (stop
/// accepting, in-flight requests finish within `PROXY_GRACE_SECONDS`). A second SIGTERM
/// cuts the delay short; SIGINT exits at once.
pub struct Signals {
    live: Arc<Live>,
    delay: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let mut terminate = listen(SignalKind::terminate());
        let mut upgrade = listen(SignalKind::quit());
        let mut interrupt = listen(SignalKind::interrupt());
        tokio::select! {
            _ = received(&mut upgrade) => return ShutdownSignal::GracefulUpgrade,
            _ = received(&mut interrupt) => return ShutdownSignal::FastShutdown,
            _ = received(&mut terminate) => {}
        }
        self.live.begin_draining();
        if self.delay.is_zero() {
            return ShutdownSignal::GracefulTerminate;
        }
        log::info!(
            "SIGTERM: not ready from now on; serving {} s more before shutting down",
            self.delay.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(self.delay) => {}
            _ = received(&mut terminate) => log::info!("SIGTERM again: shutting down now"),
            _ = received(&mut interrupt) => return ShutdownSignal::FastShutdown,
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// A signal's stream; `None` (logged) if the handler cannot be installed.
fn listen(kind: SignalKind) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind)
        .map_err(|e| log::error!("cannot listen for signal {}: {e}", kind.as_raw_value()))
        .ok()
}

/// The next delivery of `signal`; never, for one that could not be installed.
async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The TLS listener: the certificate from our reloadable resolver, HTTP/2 preferred and
/// HTTP/1.1 allowed by ALPN, TLS 1.2 and 1.3 (Pingora's rustls defaults).
fn tls_settings(certificate: Arc<Certificate>) -> anyhow::Result<TlsSettings> {
    // The paths are unused: the resolver supplies the certificate.
    let mut tls =
        TlsSettings::intermediate("", "").map_err(|e| anyhow::anyhow!("TLS listener: {e}"))?;
    tls.set_cert_resolver(certificate);
    tls.enable_h2();
    Ok(tls)
}
