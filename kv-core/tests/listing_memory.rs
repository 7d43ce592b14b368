//! The in-memory store's ordered index (built by the first listing) costs no allocation per
//! short key: keys of up to 24 bytes are held inline. With one boxed copy per key, listing
//! 1,000,000 keys grew the process by 64.4 MiB, over the 64 MiB target of docs/benchmarks.md;
//! inline, by 38.0 MiB (kv bench, row 4). Allocations are counted, not resident memory, so the
//! test does not depend on the allocator's reuse of freed pages.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kv_core::memory::MemoryProvider;
use kv_core::{Bytes, Provider};

/// Counts allocations made by the thread that set [`COUNTING`].
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting only reads a
// thread-local flag and bumps an atomic, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.try_with(|on| on.get()).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn the_ordered_index_allocates_nothing_per_short_key() {
    const KEYS: usize = 20_000;
    const PAGE: usize = 100;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let bucket = MemoryProvider::new().open("ns").await.expect("a bucket");
        let entries: Vec<(String, Bytes)> = (0..KEYS)
            .map(|i| (format!("list-{i:07}"), Bytes::from_static(b"v")))
            .collect();
        for chunk in entries.chunks(1000) {
            bucket.set_many(chunk).await.expect("set-many");
        }
        COUNTING.with(|on| on.set(true));
        let page = bucket.list_keys(None, PAGE).await.expect("a page");
        COUNTING.with(|on| on.set(false));
        assert_eq!(page.keys.len(), PAGE);
        let allocations = ALLOCATIONS.load(Ordering::Relaxed);
        // The index's tree nodes (11 keys each at most) and the page's keys: a few thousand.
        // A copy of every key would add 20,000.
        assert!(
            allocations < KEYS / 4,
            "{allocations} allocations to index {KEYS} keys of 12 bytes"
        );
    });
}
