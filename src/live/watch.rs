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

/// How often `--watch` looks at the file.
pub const POLL: Duration = Duration::from_millis(500);
/// Full rate-limit buckets are dropped from memory this often.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

/// Reload on SIGHUP, and on a changed file when `watch` is set.
pub struct Reloader {
    pub live: Arc<Live>,
    pub watch: bool,
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
        let fingerprint =
            |p: &std::path::Path| std::fs::read(p).ok().map(|t| config::fingerprint(&t));
        let mut seen = path.as_deref().and_then(fingerprint);
        loop {
            let signalled = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = signalled => {
                    log::info!("reload: SIGHUP");
                    let _ = self.reload().await;
                    seen = path.as_deref().and_then(fingerprint);
                }
                _ = tokio::time::sleep(POLL), if path.is_some() => {
                    let now = path.as_deref().and_then(fingerprint);
                    if now.is_some() && now != seen {
                        log::info!("reload: the file changed");
                        let _ = self.reload().await;
                        seen = now;
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
