//! Per-thread shard selection: each thread keeps to one shard of a sharded structure, so two
//! cores recording at once take different locks and touch different cache lines.

use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
}

/// How many shards a structure gets: one per core, at least 1, at most 16.
pub(crate) fn count() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .clamp(1, 16)
}

/// This thread's shard among `shards`.
pub(crate) fn index(shards: usize) -> usize {
    INDEX.with(|i| *i) % shards
}
