//! One Redis server as the edge filters use it (shared rate limits, the session store): a
//! multiplexed connection made on first use and kept, a deadline on every call, and after
//! a failure a pause before the next try, so that requests do not queue behind a dead
//! server; each use says at most once a minute what it does meanwhile.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

/// A Redis call that takes longer is abandoned (the caller decides without Redis).
pub const DEADLINE: Duration = Duration::from_millis(100);
/// After a failed call, Redis is tried again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The fallback is logged at most this often.
const LOG_EVERY_MS: u64 = 60_000;

pub struct RedisLink {
    /// For the log: what uses it (`rate limits`) and what it does without it.
    what: &'static str,
    fallback: &'static str,
    client: redis::Client,
    conn: ArcSwapOption<MultiplexedConnection>,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried (after a failure).
    skip_until_ms: AtomicU64,
    /// Milliseconds since `started` of the last fallback log line (+1; 0 = never).
    logged_at_ms: AtomicU64,
}

impl RedisLink {
    /// `url`: `redis://[:password@]host:port/db`. `what` and `fallback` word the log line
    /// (`"rate limits"`, `"using local limits"`).
    pub fn new(url: &str, what: &'static str, fallback: &'static str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(RedisLink {
            what,
            fallback,
            client,
            conn: ArcSwapOption::empty(),
            started: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            logged_at_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the last call failed less than [`RETRY_AFTER`] ago.
    pub fn resting(&self) -> bool {
        self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed)
    }

    /// `call` on the connection, within [`DEADLINE`]; `None` when Redis is not available
    /// now (resting after a failure, refused, failed or late: noted, logged).
    pub async fn run<T, F, Fut>(&self, call: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.resting() {
            return None;
        }
        let answer = tokio::time::timeout(DEADLINE, async {
            let conn = self.connection().await?;
            call(conn).await
        })
        .await;
        match answer {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Err(_) => {
                self.failed(&format!("no answer within {DEADLINE:?}"));
                None
            }
        }
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.conn.load_full() {
            return Ok((*conn).clone());
        }
        let conn = self.client.get_multiplexed_async_connection().await?;
        self.conn.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    fn failed(&self, why: &str) {
        self.conn.store(None);
        let now = self.now_ms();
        self.skip_until_ms.store(
            now + u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(1000),
            Ordering::Relaxed,
        );
        let last = self.logged_at_ms.load(Ordering::Relaxed);
        if (last == 0 || now + 1 >= last + LOG_EVERY_MS)
            && self
                .logged_at_ms
                .compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "{}: Redis unavailable ({why}); {} (said at most once a minute)",
                self.what,
                self.fallback
            );
        }
    }
}
