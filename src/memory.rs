//! Memory back to the system after a spike.
//!
//! The gateway allocates with mimalloc (`main.rs`). When connections close, what they used
//! goes back to mimalloc, which gives it back to the system (`MADV_DONTNEED`) only once it
//! has stayed free for its purge delay (10 ms, 100 ms for whole segments back in an arena),
//! and only when it next looks: on a later allocation or free of the same thread, or a
//! collection. On a gateway that goes quiet after a spike nothing comes, and the RSS stays
//! at the peak for good (measured: 65 MiB 10 s after 2,000 idle connections closed, against
//! 12 before they opened; `bench/memory.py`).
//!
//! Purging at once instead (purge delay 0) would cost a `madvise` every few requests under
//! steady load (pages freed and taken again at once). So the delay stays, and this
//! background service asks mimalloc once a second to purge what is due. Arenas are shared
//! by all threads, so the call from this service's thread also gives back the segments the
//! proxy's workers emptied (the bulk of a spike's memory); what stays is free pages inside
//! segments still in use, which their own thread purges on its next allocation. Measured:
//! 10 s after the spike the RSS is within ~2 MiB of the base. Nothing on the request path.
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

/// How often mimalloc is asked to purge what has been free for its purge delay: the RSS is
/// back within seconds of a spike's end.
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// Asks mimalloc every [`PURGE_EVERY`] to give back pages free for longer than its purge
/// delay. Run it only where mimalloc is the global allocator (the binary).
pub struct Purge;

#[async_trait]
impl BackgroundService for Purge {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PURGE_EVERY) => {
                    // SAFETY: `mi_collect` takes no pointers and may be called from any
                    // thread at any time; `false`: only what is due, no forced purge.
                    unsafe { libmimalloc_sys::mi_collect(false) };
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
