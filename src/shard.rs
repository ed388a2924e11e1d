//! Per-thread shard selection: each thread keeps to one shard of a sharded structure, so two
//! cores recording at once take different locks and touch different cache lines.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Not yet assigned.
const UNSET: usize = usize::MAX;

static COUNT: OnceLock<usize> = OnceLock::new();

thread_local! {
    // Const-initialised, so an access is a plain load: no lazy-initialisation check. Kept
    // below `count()`, so that finding a shard takes no division.
    static INDEX: Cell<usize> = const { Cell::new(UNSET) };
}

/// How many shards a structure gets: one per core, at least 1, at most 16. Read once, so every
/// sharded structure has as many shards.
pub(crate) fn count() -> usize {
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(1, 16)
    })
}

/// This thread's shard of `shards` (not empty): one bounds check, no division.
#[inline]
pub(crate) fn pick<T>(shards: &[T]) -> &T {
    match shards.get(INDEX.get()) {
        Some(shard) => shard,
        None => &shards[assign(shards.len())],
    }
}

/// A thread's first call takes its index (below `count()`); fewer `shards` take it modulo theirs.
#[cold]
#[inline(never)]
fn assign(shards: usize) -> usize {
    let mut i = INDEX.get();
    if i == UNSET {
        i = NEXT.fetch_add(1, Ordering::Relaxed) % count();
        INDEX.set(i);
    }
    i % shards
}

/// A shard on cache lines of its own (128 bytes: cores fetch lines in pairs), so two cores
/// writing neighbouring shards do not contend for one line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The positions a shard found last, tried before a hash lookup: consecutive records on one
/// thread mostly carry the same few label sets, and a label set's values are the same interned
/// [`Label`](crate::Label)s each time, so comparing addresses finds them without hashing a
/// string.
#[derive(Debug)]
pub(crate) struct RecentIndices([usize; 4]);

impl Default for RecentIndices {
    fn default() -> Self {
        Self([usize::MAX; 4])
    }
}

impl RecentIndices {
    /// The first remembered position whose item `matches`.
    #[inline]
    pub(crate) fn find<T>(&self, items: &[T], matches: impl Fn(&T) -> bool) -> Option<usize> {
        self.0
            .iter()
            .copied()
            .find(|&i| items.get(i).is_some_and(&matches))
    }

    /// Remembers `i` first, forgetting the oldest.
    #[inline]
    pub(crate) fn remember(&mut self, i: usize) {
        if self.0[0] != i {
            self.0.copy_within(0..3, 1);
            self.0[0] = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread keeps one shard, within any number of shards.
    #[test]
    fn a_threads_shard_is_stable_and_in_range() {
        let n = count();
        let shards: Vec<usize> = (0..n).collect();
        let first = *pick(&shards);
        assert_eq!(*pick(&shards), first);
        assert_eq!(*pick(&[7]), 7);
        assert_eq!(*pick(&shards), first);
        let others: Vec<usize> = (0..8)
            .map(|_| {
                std::thread::spawn(move || *pick(&(0..n).collect::<Vec<_>>()))
                    .join()
                    .unwrap()
            })
            .collect();
        assert!(others.iter().all(|&i| i < n));
    }
}
