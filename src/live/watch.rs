//! What triggers a reload, as Pingora background services: SIGHUP always, and with
//! `--watch` a change of the file's content (checked every [`POLL`]; polling the content
//! also sees editors that replace the file and Kubernetes ConfigMaps that swap a symlink,
//! which file-event watches miss). Also the rate-limit housekeeping, which follows the
//! live table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{SignalKind, signal};

use super::{Live, Source};
use crate::config;
use crate::edge::tls::Certificate;

/// How often `--watch` looks at the file.
pub const POLL: Duration = Duration::from_millis(500);
/// Full rate-limit buckets are dropped from memory this often.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

/// Reload on SIGHUP, and on a changed file when `watch` is set: the routes, and the TLS
/// listener's certificate when there is one.
pub struct Reloader {
    pub live: Arc<Live>,
    pub watch: bool,
    pub certificate: Option<Arc<Certificate>>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("reload: cannot listen for SIGHUP: {e}");
                None
            }
        };
        let path = match &self.live.source {
            Source::File(p) if self.watch => Some(p.clone()),
            _ => None,
        };
        let certificate = self.certificate.as_ref().filter(|_| self.watch);
        let fingerprint =
            |p: &std::path::Path| std::fs::read(p).ok().map(|t| config::fingerprint(&t));
        let pair = |c: &Certificate| c.paths().map(fingerprint);
        let mut seen = path.as_deref().and_then(fingerprint);
        let mut seen_pair = certificate.map(|c| pair(c));
        loop {
            let signalled = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            let polling = path.is_some() || certificate.is_some();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = signalled => {
                    log::info!("reload: SIGHUP");
                    let _ = self.reload().await;
                    self.reload_certificate().await;
                    seen = path.as_deref().and_then(fingerprint);
                    seen_pair = certificate.map(|c| pair(c));
                }
                _ = tokio::time::sleep(POLL), if polling => {
                    let now = path.as_deref().and_then(fingerprint);
                    if now.is_some() && now != seen {
                        log::info!("reload: the file changed");
                        let _ = self.reload().await;
                        seen = now;
                    }
                    // Certificate renewers write two files: a pair seen half-written
                    // is refused, and read again when the second file changes.
                    let now_pair = certificate.map(|c| pair(c));
                    if now_pair != seen_pair {
                        log::info!("reload: the TLS certificate files changed");
                        self.reload_certificate().await;
                        seen_pair = now_pair;
                    }
                }
            }
        }
    }
}

impl Reloader {
    /// Reading and validating is file work: off the async threads.
    async fn reload(&self) -> Result<(), String> {
        let live = self.live.clone();
        tokio::task::spawn_blocking(move || live.reload())
            .await
            .map_err(|e| e.to_string())?
    }

    /// The TLS listener's certificate, read again (file work, off the async threads).
    async fn reload_certificate(&self) {
        if let Some(certificate) = self.certificate.clone() {
            let _ = tokio::task::spawn_blocking(move || certificate.reload()).await;
        }
    }
}

/// Drops full rate-limit buckets of the live table every minute.
pub struct Housekeeping(pub Arc<Live>);

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HOUSEKEEPING_EVERY) => self.0.current().limits.housekeeping(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How often the health walker visits the live table's upstreams.
const WALK_EVERY: Duration = Duration::from_millis(250);

/// Health checks and re-discovery for every upstream of the live table: one walker, so
/// routes added by a reload are checked too. Each upstream's visit runs on its own task
/// (a slow check does not hold the others) and never overlaps the previous one.
pub struct HealthWalker(pub Arc<Live>);

#[async_trait]
impl BackgroundService for HealthWalker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let table = self.0.current();
            for (route, upstream) in table.routes.routes().iter().zip(table.upstreams.iter()) {
                let (upstream, metrics, index) =
                    (upstream.clone(), table.metrics.clone(), route.index);
                tokio::spawn(async move {
                    upstream.tick().await;
                    for (addr, healthy) in upstream.instances().await {
                        metrics.set_healthy(index, &addr.to_string(), healthy);
                    }
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(WALK_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
