//! Requests in flight, by route and by provider: counted per thread shard, summed when read.
//!
//! A request is counted when it starts (by route) and when its response starts (by provider),
//! and uncounted when it is recorded, often on another thread. Each thread adds to a shard of
//! its own, so counting writes no memory another core writes; a read sums the shards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a count is kept by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InFlightBy {
    Route,
    Provider,
}

/// Counts by label, found by the label's address: labels are interned (one `Arc` per value)
/// and a request's start and end pass the same one, so no string is compared or hashed on the
/// request path. The `Arc` kept beside each count holds its address for the list's life.
/// Routes and providers are capped labels, so each list is short and a scan beats a hash.
#[derive(Default)]
struct Counts {
    routes: Vec<(Arc<str>, i64)>,
    providers: Vec<(Arc<str>, i64)>,
}

impl Counts {
    fn of(&mut self, by: InFlightBy) -> &mut Vec<(Arc<str>, i64)> {
        match by {
            InFlightBy::Route => &mut self.routes,
            InFlightBy::Provider => &mut self.providers,
        }
    }

    fn add(&mut self, by: InFlightBy, label: &Arc<str>, delta: i64) {
        let counts = self.of(by);
        match counts.iter_mut().find(|(l, _)| Arc::ptr_eq(l, label)) {
            Some((_, n)) => *n += delta,
            None => counts.push((label.clone(), delta)),
        }
    }
}

pub(crate) struct InFlight {
    shards: Box<[Mutex<Counts>]>,
}

fn lock(shard: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    // A panic while holding the lock leaves every count whole.
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl InFlight {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..crate::shard::count())
                .map(|_| Mutex::new(Counts::default()))
                .collect(),
        }
    }

    /// Moves the count of `label` by `delta` on this thread's shard.
    pub(crate) fn add(&self, by: InFlightBy, label: &Arc<str>, delta: i64) {
        lock(&self.shards[crate::shard::index(self.shards.len())]).add(by, label, delta);
    }

    /// A request ends: its route's count, and its provider's if it was counted, go down by one
    /// (one lock for both).
    pub(crate) fn finished(&self, route: &Arc<str>, provider: Option<&Arc<str>>) {
        let mut shard = lock(&self.shards[crate::shard::index(self.shards.len())]);
        shard.add(InFlightBy::Route, route, -1);
        if let Some(provider) = provider {
            shard.add(InFlightBy::Provider, provider, -1);
        }
    }

    /// The counts by label value, over the shards.
    pub(crate) fn by_label(&self, by: InFlightBy) -> BTreeMap<Arc<str>, i64> {
        let mut out = BTreeMap::<Arc<str>, i64>::new();
        for shard in self.shards.iter() {
            for (label, n) in lock(shard).of(by).iter() {
                *out.entry(label.clone()).or_default() += n;
            }
        }
        out
    }

    /// The total over every label and shard.
    pub(crate) fn total(&self, by: InFlightBy) -> i64 {
        self.shards
            .iter()
            .map(|shard| lock(shard).of(by).iter().map(|(_, n)| n).sum::<i64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_ends_on_different_threads_sum_up() {
        let in_flight = InFlight::new();
        let route: Arc<str> = Arc::from("/v1/chat");
        let same_value: Arc<str> = Arc::from("/v1/chat");
        std::thread::scope(|s| {
            s.spawn(|| in_flight.add(InFlightBy::Route, &route, 1));
            s.spawn(|| in_flight.add(InFlightBy::Route, &route, 1));
            s.spawn(|| in_flight.add(InFlightBy::Route, &same_value, 1));
        });
        in_flight.add(InFlightBy::Route, &route, -1);
        assert_eq!(in_flight.total(InFlightBy::Route), 2);
        assert_eq!(in_flight.by_label(InFlightBy::Route)[&route], 2);
        assert_eq!(in_flight.total(InFlightBy::Provider), 0);
    }
}
