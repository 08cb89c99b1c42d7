//! Clients in a loop against one URL until stopped, counting what did not come back as a
//! complete 200 (each failure kept, for a failing run's message).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// What a load saw.
#[derive(Debug)]
pub struct Outcome {
    pub ok: usize,
    pub failures: Vec<String>,
}

impl Outcome {
    /// Nothing failed, and more than `more_than` requests were answered.
    pub fn assert_none_failed(&self, more_than: usize) {
        assert!(
            self.failures.is_empty(),
            "{} failed of {}, the first: {:?}",
            self.failures.len(),
            self.ok + self.failures.len(),
            &self.failures[..self.failures.len().min(10)]
        );
        assert!(self.ok > more_than, "only {} requests answered", self.ok);
    }
}

impl Load {
    /// `clients` kept-alive clients.
    pub fn start(url: String, clients: usize) -> Load {
        Self::mixed(url, clients, 0)
    }

    /// `kept_alive` clients reusing their connection, and `fresh` ones opening a new
    /// connection for every request.
    pub fn mixed(url: String, kept_alive: usize, fresh: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..kept_alive + fresh)
            .map(|i| {
                let client = if i < kept_alive {
                    super::client()
                } else {
                    reqwest::Client::builder()
                        .pool_max_idle_per_host(0)
                        .build()
                        .expect("client")
                };
                let (stop, ok, failures, url) =
                    (stop.clone(), ok.clone(), failures.clone(), url.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = match client.get(&url).send().await {
                            Ok(r) if r.status() == 200 => r
                                .bytes()
                                .await
                                .map(drop)
                                .map_err(|e| format!("body: {e:?}")),
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(e) => Err(format!("{e:?}")),
                        };
                        match outcome {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                eprintln!("load: {e}");
                                failures.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            workers,
        }
    }

    /// Answered so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stop, and what was seen.
    pub async fn stop(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()));
        Outcome {
            ok: self.ok.load(Ordering::Relaxed),
            failures,
        }
    }
}
