//! The limits every component instance runs under, in `run`, `serve` and `watch`: a memory limit
//! (linear memory growth refused past it), a time limit (epoch interruption, so a guest that
//! computes forever is stopped), and a cap on host resources (the resource table: open
//! buckets, streams, HTTP fields). docs/security.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::error;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};

/// How often the engine's epoch advances: the granularity of the time limit, and how often
/// a busy guest yields to other requests.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Host resources (handles) one instance may hold at once. A guest that opens buckets in a
/// loop is stopped here instead of growing host memory without bound.
pub const MAX_RESOURCES: usize = 10_000;

/// Table elements (function references) one instance may have.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// A resource table capped at [`MAX_RESOURCES`].
pub fn resource_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    table
}

/// Refuses linear-memory growth beyond the limit, recording that it did so the failure is
/// reported as the memory limit rather than as a generic trap.
pub struct MemoryLimiter {
    limit: usize,
    hit: Arc<AtomicBool>,
    peak: usize,
}

impl MemoryLimiter {
    /// A limiter of `limit` bytes that sets `hit` when it refuses.
    pub fn new(limit: usize, hit: Arc<AtomicBool>) -> Self {
        MemoryLimiter {
            limit,
            hit,
            peak: 0,
        }
    }

    /// The most linear memory the instance was granted, in bytes.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// The trap raised when an instance runs out of time inside guest code.
#[derive(Debug)]
pub struct TimeLimitExceeded;

impl std::fmt::Display for TimeLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("time limit exceeded")
    }
}

impl std::error::Error for TimeLimitExceeded {}

/// Stops the store's guest code once `time_limit` has passed since now (on the next epoch
/// tick), and lets other tasks run at every tick until then. `None`: no limit, ticks still
/// yield.
pub fn set_deadline<T>(store: &mut Store<T>, time_limit: Option<Duration>) {
    let started = Instant::now();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| match time_limit {
        Some(limit) if started.elapsed() >= limit => Err(wasmtime::Error::from(TimeLimitExceeded)),
        _ => Ok(UpdateDeadline::Yield(1)),
    });
}

/// Whether a trap was the time limit.
pub fn is_time_limit(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<TimeLimitExceeded>())
        || matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        )
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own, so deadlines
/// fire even when every runtime worker is busy running guests. Stops when dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasi-kv-epoch".to_string())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map(drop)
            .unwrap_or_else(|err| error!("cannot start the epoch thread: {err}"));
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
