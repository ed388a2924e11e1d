//! Requests in flight, by route and by provider: counted per thread shard, summed when read.
//!
//! A request is counted when it starts (by route) and when its response starts (by provider),
//! and uncounted when it is recorded, often on another thread. Each thread adds to a shard of
//! its own, so counting writes no memory another core writes; a read sums the shards. A count
//! is an atomic in a slot set once per label and shard: counting takes no lock.

use crate::label::Label;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, OnceLock};

/// What a count is kept by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InFlightBy {
    Route,
    Provider,
}

/// Slots a shard has per kind: routes and providers are capped labels (64 of each by default,
/// plus `unmatched`, `unknown` and `other`), so a shard rarely fills them; past them, counts go
/// to a locked list.
const SLOTS: usize = 96;

/// A label and its count, set once.
type Slot = OnceLock<(Label, AtomicI64)>;

/// Counts by label, found by the label's address: labels are interned (one address per value)
/// and a request's start and end pass the same one, so no string is compared or hashed on the
/// request path. A label lives as long as the process, so its address stays its own.
struct Counts {
    slots: Box<[Slot]>,
    /// Past the slots (more distinct labels than a shard has room for).
    overflow: Mutex<Vec<(Label, i64)>>,
}

impl Counts {
    fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            overflow: Mutex::new(Vec::new()),
        }
    }

    /// Every request passes here four times: the label's slot, set already, is found with a
    /// few loads and one atomic add; taking a free slot or the overflow list is apart.
    #[inline]
    fn add(&self, label: Label, delta: i64) {
        for slot in self.slots.iter() {
            match slot.get() {
                Some((held, count)) if held.is(label) => {
                    count.fetch_add(delta, Ordering::Relaxed);
                    return;
                }
                Some(_) => {}
                None => break,
            }
        }
        self.add_new(label, delta);
    }

    #[cold]
    fn add_new(&self, label: Label, delta: i64) {
        for slot in self.slots.iter() {
            let (held, count) = match slot.get() {
                Some(entry) => entry,
                // The first free slot: take it for `label`, unless another thread of this
                // shard just did, for this label or another (then look on).
                None => slot.get_or_init(|| (label, AtomicI64::new(0))),
            };
            if held.is(label) {
                count.fetch_add(delta, Ordering::Relaxed);
                return;
            }
        }
        let mut overflow = self.overflow.lock().unwrap_or_else(|p| p.into_inner());
        match overflow.iter_mut().find(|(l, _)| l.is(label)) {
            Some((_, n)) => *n += delta,
            None => overflow.push((label, delta)),
        }
    }

    fn each(&self, mut f: impl FnMut(Label, i64)) {
        for (label, count) in self.slots.iter().map_while(OnceLock::get) {
            f(*label, count.load(Ordering::Relaxed));
        }
        for (label, n) in self
            .overflow
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f(*label, *n);
        }
    }
}

struct Shard {
    routes: Counts,
    providers: Counts,
}

impl Shard {
    fn of(&self, by: InFlightBy) -> &Counts {
        match by {
            InFlightBy::Route => &self.routes,
            InFlightBy::Provider => &self.providers,
        }
    }
}

pub(crate) struct InFlight {
    shards: Box<[Shard]>,
}

impl InFlight {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..crate::shard::count())
                .map(|_| Shard {
                    routes: Counts::new(),
                    providers: Counts::new(),
                })
                .collect(),
        }
    }

    fn shard(&self) -> &Shard {
        crate::shard::pick(&self.shards)
    }

    /// Moves the count of `label` by `delta` on this thread's shard.
    pub(crate) fn add(&self, by: InFlightBy, label: Label, delta: i64) {
        self.shard().of(by).add(label, delta);
    }

    /// A request ends: its route's count, and its provider's if it was counted, go down by one.
    /// Inlined where a request is recorded: a few loads and two atomic adds, not worth a call.
    #[inline]
    pub(crate) fn finished(&self, route: Label, provider: Option<Label>) {
        let shard = self.shard();
        shard.routes.add(route, -1);
        if let Some(provider) = provider {
            shard.providers.add(provider, -1);
        }
    }

    /// The counts by label value, over the shards.
    pub(crate) fn by_label(&self, by: InFlightBy) -> BTreeMap<Label, i64> {
        let mut out = BTreeMap::<Label, i64>::new();
        for shard in self.shards.iter() {
            shard
                .of(by)
                .each(|label, n| *out.entry(label).or_default() += n);
        }
        out
    }

    /// The total over every label and shard.
    pub(crate) fn total(&self, by: InFlightBy) -> i64 {
        let mut sum = 0;
        for shard in self.shards.iter() {
            shard.of(by).each(|_, n| sum += n);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_ends_on_different_threads_sum_up() {
        let in_flight = InFlight::new();
        let route = Label::new("/v1/chat");
        std::thread::scope(|s| {
            s.spawn(|| in_flight.add(InFlightBy::Route, route, 1));
            s.spawn(|| in_flight.add(InFlightBy::Route, route, 1));
            s.spawn(|| in_flight.add(InFlightBy::Route, Label::new("/v1/chat"), 1));
        });
        in_flight.add(InFlightBy::Route, route, -1);
        assert_eq!(in_flight.total(InFlightBy::Route), 2);
        assert_eq!(in_flight.by_label(InFlightBy::Route)[&route], 2);
        assert_eq!(in_flight.total(InFlightBy::Provider), 0);
    }

    #[test]
    fn more_labels_than_slots_still_sum_up() {
        let in_flight = InFlight::new();
        let labels: Vec<Label> = (0..SLOTS * 2)
            .map(|i| Label::new(&format!("/r{i}")))
            .collect();
        for label in &labels {
            in_flight.add(InFlightBy::Provider, *label, 2);
        }
        for label in &labels {
            in_flight.add(InFlightBy::Provider, *label, -1);
        }
        assert_eq!(in_flight.total(InFlightBy::Provider), labels.len() as i64);
        let by = in_flight.by_label(InFlightBy::Provider);
        assert_eq!(by.len(), labels.len());
        assert!(by.values().all(|n| *n == 1));
    }
}
