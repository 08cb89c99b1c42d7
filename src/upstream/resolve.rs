//! A cached, self-refreshing name lookup for one `host:port`.
//!
//! The first request resolves the name (on tokio's blocking pool, with a deadline). Later
//! requests use the cached addresses, round-robin; once the cache is older than
//! [`REFRESH_AFTER`] one request triggers a background refresh and all keep using the old
//! answer until the new one lands. A failed refresh keeps the last good answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

/// Answers older than this are refreshed in the background.
const REFRESH_AFTER: Duration = Duration::from_secs(10);
/// A lookup that takes longer fails the request (502) instead of holding it.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);
/// After a failed first lookup, requests fail fast for this long instead of each asking the
/// resolver again (a name that does not exist must not turn a burst into a lookup storm).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve '{target}': {reason}")]
    Failed { target: String, reason: String },
}

#[derive(Debug)]
struct Answer {
    addrs: Vec<SocketAddr>,
    at: Instant,
}

#[derive(Debug, Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: String,
    /// Set when the host is an IP literal: no lookup ever happens.
    fixed: Option<SocketAddr>,
    answer: ArcSwapOption<Answer>,
    /// The last failed lookup while there is no answer at all.
    failure: ArcSwapOption<(ResolveError, Instant)>,
    refreshing: AtomicBool,
    next: AtomicUsize,
}

impl Resolver {
    pub fn new(host: &str, port: u16) -> Self {
        let fixed = host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        let target = match fixed {
            Some(addr) => addr.to_string(),
            None => format!("{host}:{port}"),
        };
        Resolver {
            inner: Arc::new(Inner {
                target,
                fixed,
                answer: ArcSwapOption::empty(),
                failure: ArcSwapOption::empty(),
                refreshing: AtomicBool::new(false),
                next: AtomicUsize::new(0),
            }),
        }
    }

    pub fn target(&self) -> &str {
        &self.inner.target
    }

    pub async fn address(&self) -> Result<SocketAddr, ResolveError> {
        if let Some(addr) = self.inner.fixed {
            return Ok(addr);
        }
        if let Some(answer) = self.inner.answer.load_full() {
            if answer.at.elapsed() >= REFRESH_AFTER {
                self.refresh_soon();
            }
            return Ok(self.inner.pick(&answer.addrs));
        }
        if let Some(failure) = self.inner.failure.load_full()
            && failure.1.elapsed() < RETRY_FAILED_AFTER
        {
            return Err(failure.0.clone());
        }
        match self.inner.lookup().await {
            Ok(answer) => {
                let addr = self.inner.pick(&answer.addrs);
                self.inner.answer.store(Some(answer));
                self.inner.failure.store(None);
                Ok(addr)
            }
            Err(e) => {
                self.inner
                    .failure
                    .store(Some(Arc::new((e.clone(), Instant::now()))));
                Err(e)
            }
        }
    }

    /// Every address the name has: the cached answer, or a lookup when there is none yet.
    pub async fn addresses(&self) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Some(addr) = self.inner.fixed {
            return Ok(vec![addr]);
        }
        if let Some(answer) = self.inner.answer.load_full() {
            if answer.at.elapsed() >= REFRESH_AFTER {
                self.refresh_soon();
            }
            return Ok(answer.addrs.clone());
        }
        self.address().await?;
        Ok(self
            .inner
            .answer
            .load_full()
            .map(|a| a.addrs.clone())
            .unwrap_or_default())
    }

    /// Start a background lookup unless one is already running.
    pub fn refresh_soon(&self) {
        if self.inner.fixed.is_some() || self.inner.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            inner.refreshing.store(false, Ordering::Release);
            return;
        };
        runtime.spawn(async move {
            match inner.lookup().await {
                Ok(answer) => {
                    let changed = inner
                        .answer
                        .load()
                        .as_ref()
                        .is_none_or(|old| old.addrs != answer.addrs);
                    if changed {
                        log::info!(
                            "upstream {} now resolves to {:?}",
                            inner.target,
                            answer.addrs
                        );
                    }
                    inner.answer.store(Some(answer));
                }
                Err(e) => log::warn!("{e}; keeping the last known addresses"),
            }
            inner.refreshing.store(false, Ordering::Release);
        });
    }
}

impl Inner {
    async fn lookup(&self) -> Result<Arc<Answer>, ResolveError> {
        let fail = |reason: String| ResolveError::Failed {
            target: self.target.clone(),
            reason,
        };
        let found = tokio::time::timeout(LOOKUP_DEADLINE, tokio::net::lookup_host(&self.target))
            .await
            .map_err(|_| fail(format!("no answer within {LOOKUP_DEADLINE:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        let mut addrs: Vec<SocketAddr> = found.collect();
        // Same order every time, so that refreshes only log real changes.
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(fail("no addresses".into()));
        }
        Ok(Arc::new(Answer {
            addrs,
            at: Instant::now(),
        }))
    }

    fn pick(&self, addrs: &[SocketAddr]) -> SocketAddr {
        if addrs.len() == 1 {
            return addrs[0];
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        addrs[i % addrs.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ip_literals_never_resolve() {
        let r = Resolver::new("127.0.0.1", 8080);
        assert_eq!(
            r.address().await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        let r = Resolver::new("::1", 80);
        assert_eq!(r.target(), "[::1]:80");
    }

    #[tokio::test]
    async fn resolves_localhost_and_caches() {
        let r = Resolver::new("localhost", 9);
        let addr = r.address().await.expect("localhost resolves");
        assert!(addr.ip().is_loopback());
        assert!(r.inner.answer.load().is_some());
    }

    #[tokio::test]
    async fn unknown_name_is_an_error_not_a_panic() {
        let r = Resolver::new("no-such-host.invalid", 80);
        let e = r.address().await.unwrap_err().to_string();
        assert!(
            e.starts_with("cannot resolve 'no-such-host.invalid:80'"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn refresh_replaces_the_answer_in_the_background() {
        let r = Resolver::new("localhost", 9);
        r.address().await.expect("localhost resolves");
        let first = r.inner.answer.load_full().unwrap().at;
        r.refresh_soon();
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.inner.answer.load_full().unwrap().at == first {
            assert!(Instant::now() < deadline, "no refresh happened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_name_that_stops_resolving_keeps_its_last_good_address() {
        // A name that resolved once (its answer stored as a lookup would) and now fails.
        let r = Resolver::new("no-such-host.invalid", 80);
        let good: SocketAddr = "127.0.0.1:80".parse().unwrap();
        r.inner.answer.store(Some(Arc::new(Answer {
            addrs: vec![good],
            at: Instant::now() - REFRESH_AFTER,
        })));
        // Stale: this request triggers a refresh, which fails.
        assert_eq!(r.address().await.unwrap(), good);
        let deadline = Instant::now() + Duration::from_secs(5);
        while r.inner.refreshing.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the refresh never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(r.address().await.unwrap(), good);
        assert_eq!(r.addresses().await.unwrap(), [good]);
    }
}
