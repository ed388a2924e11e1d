//! A window as a ring of time slots: 5 minutes as 30 slots of 10 s, 1 hour as 60 of 1 min.

use std::time::Duration;

use super::stats::SlotStats;
use crate::record::StreamRecord;

/// The two windows of `/metrics` (README, Endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WindowSpan {
    /// The last 5 minutes, in 30 slots of 10 s.
    FiveMinutes,
    /// The last hour, in 60 slots of 1 minute.
    OneHour,
}

impl WindowSpan {
    pub(crate) const fn slot_secs(self) -> u64 {
        match self {
            WindowSpan::FiveMinutes => 10,
            WindowSpan::OneHour => 60,
        }
    }

    pub(crate) const fn slots(self) -> usize {
        match self {
            WindowSpan::FiveMinutes => 30,
            WindowSpan::OneHour => 60,
        }
    }

    /// The slot (`unix_secs / slot_secs`) a time falls in.
    pub(crate) fn epoch(self, now_secs: u64) -> u64 {
        now_secs / self.slot_secs()
    }

    /// Where that slot sits in a ring.
    fn index(self, epoch: u64) -> usize {
        (epoch % self.slots() as u64) as usize
    }

    /// Whether a slot filled at `epoch` still lies inside the window at `now_secs`.
    pub(crate) fn holds(self, epoch: u64, now_secs: u64) -> bool {
        let current = self.epoch(now_secs);
        epoch != UNUSED && epoch <= current && epoch + self.slots() as u64 > current
    }
}

/// The epoch of a slot never used.
const UNUSED: u64 = u64::MAX;

struct Slot {
    /// Which slot of time this is (`unix_secs / slot_secs`); a slot whose epoch fell out of the
    /// window is stale and is cleared before reuse.
    epoch: u64,
    stats: SlotStats,
}

impl Slot {
    /// Makes this the slot of `epoch`, cleared (once per slot of time, not per record).
    #[cold]
    #[inline(never)]
    fn recycle(&mut self, epoch: u64) {
        self.stats.clear();
        self.epoch = epoch;
    }
}

/// A slot a ring's reader merges itself: its epoch, and how (given the ring's figures for it,
/// if the ring holds that slot).
pub(crate) type OpenSlot<'a> = (u64, &'a dyn Fn(Option<&SlotStats>, &mut SlotStats));

/// One window: a fixed ring of slots, so memory does not grow with traffic.
pub(crate) struct Ring {
    span: WindowSpan,
    slots: Vec<Slot>,
}

impl Ring {
    pub(crate) fn new(span: WindowSpan) -> Self {
        Self {
            span,
            slots: (0..span.slots())
                .map(|_| Slot {
                    epoch: UNUSED,
                    stats: SlotStats::default(),
                })
                .collect(),
        }
    }

    /// Adds a record to the slot of `now_secs`.
    pub(crate) fn add(&mut self, now_secs: u64, record: &StreamRecord, unrouted: bool) {
        self.add_in(self.span, now_secs, record, unrouted);
    }

    /// The same, `span` being this ring's: a caller that knows it at compile time gets the
    /// slot arithmetic done with constants. Whether the request's whole time in flight lay in
    /// the slot.
    #[inline(always)]
    pub(crate) fn add_in(
        &mut self,
        span: WindowSpan,
        now_secs: u64,
        record: &StreamRecord,
        unrouted: bool,
    ) -> bool {
        debug_assert_eq!(span, self.span);
        let epoch = span.epoch(now_secs);
        // Whole seconds of the clock: the request ends at the end of its second.
        let since_slot_start = Duration::from_secs(now_secs + 1 - epoch * span.slot_secs());
        let slot = &mut self.slots[span.index(epoch)];
        if slot.epoch != epoch {
            slot.recycle(epoch);
        }
        slot.stats.add(record, unrouted);
        // Compared as durations: the same answer as in seconds as f64 (a whole number of seconds,
        // at most a minute, against `as_secs_f64`), without converting either side.
        let within = record.duration <= since_slot_start;
        if within {
            // Most requests: their whole time in flight lies in this slot.
            slot.stats.busy_secs += record.duration.as_secs_f64();
        } else {
            self.add_busy(now_secs, record.duration.as_secs_f64());
        }
        within
    }

    /// The figures of the slot of `epoch`, if the ring holds it.
    pub(crate) fn stats(&self, epoch: u64) -> Option<&SlotStats> {
        let slot = &self.slots[self.span.index(epoch)];
        (slot.epoch == epoch).then_some(&slot.stats)
    }

    /// Raises the peak in flight of the slot of `now_secs` to `n` if below.
    pub(crate) fn note_in_flight(&mut self, now_secs: u64, n: u64) {
        let stats = &mut self.slot(self.span.epoch(now_secs)).stats;
        stats.peak_in_flight = stats.peak_in_flight.max(n);
    }

    /// The figures of the slot of `epoch`, cleared first if it held an older one.
    pub(crate) fn slot_stats(&mut self, epoch: u64) -> &mut SlotStats {
        &mut self.slot(epoch).stats
    }

    /// The slot of `epoch`, cleared first if it held an older one.
    fn slot(&mut self, epoch: u64) -> &mut Slot {
        let slot = &mut self.slots[self.span.index(epoch)];
        if slot.epoch != epoch {
            slot.recycle(epoch);
        }
        slot
    }

    /// Spreads a request's time in flight, which ended at `end_secs` after `duration` seconds,
    /// over the slots it overlapped (those still in the window): their time-averaged in-flight
    /// count (Little's law: arrivals per second × mean duration).
    #[inline(never)]
    fn add_busy(&mut self, end_secs: u64, duration: f64) {
        if let Some(overlap) = self.add_busy_before(end_secs, duration) {
            self.slot(self.span.epoch(end_secs)).stats.busy_secs += overlap;
        }
    }

    /// [`add_busy`](Self::add_busy) over the slots before the last (that of `end_secs`); the
    /// last one's share, if any, is returned instead of added.
    #[inline(never)]
    pub(crate) fn add_busy_before(&mut self, end_secs: u64, duration: f64) -> Option<f64> {
        let slot_secs = self.span.slot_secs();
        // Whole seconds of the clock: the request ends at the end of its second.
        let end = (end_secs + 1) as f64;
        let start = (end - duration).max(0.0);
        let last = self.span.epoch(end_secs);
        let oldest = last.saturating_sub(self.span.slots() as u64 - 1);
        let first = ((start / slot_secs as f64) as u64).max(oldest);
        for epoch in first..=last {
            let (from, to) = ((epoch * slot_secs) as f64, ((epoch + 1) * slot_secs) as f64);
            let overlap = end.min(to) - start.max(from);
            if overlap > 0.0 {
                if epoch == last {
                    return Some(overlap);
                }
                self.slot(epoch).stats.busy_secs += overlap;
            }
        }
        None
    }

    /// Adds each slot still inside the window at `now_secs` into its place in `into`, one
    /// entry per slot, oldest first (`into` has `span.slots()` entries).
    pub(crate) fn merge_slots_into(&self, now_secs: u64, into: &mut [SlotStats]) {
        self.merge_slots_into_with(now_secs, into, None);
    }

    /// The same, but the slot of `open.0`, which the window at `now_secs` holds, is merged by
    /// `open.1` (given the ring's figures for it, if the ring holds that slot).
    pub(crate) fn merge_slots_into_with(
        &self,
        now_secs: u64,
        into: &mut [SlotStats],
        open: Option<OpenSlot<'_>>,
    ) {
        let current = self.span.epoch(now_secs);
        let n = into.len() as u64;
        let place = |epoch: u64| (n - 1 - (current - epoch)) as usize;
        let open_index = open.map(|(epoch, _)| self.span.index(epoch));
        for (i, slot) in self.slots.iter().enumerate() {
            match open {
                Some((epoch, merge)) if open_index == Some(i) => {
                    if let Some(place) = into.get_mut(place(epoch)) {
                        merge((slot.epoch == epoch).then_some(&slot.stats), place);
                    }
                }
                _ => {
                    if self.span.holds(slot.epoch, now_secs) {
                        if let Some(place) = into.get_mut(place(slot.epoch)) {
                            place.merge(&slot.stats);
                        }
                    }
                }
            }
        }
    }

    /// Adds the slots still inside the window at `now_secs` into `into`.
    pub(crate) fn merge_into(&self, now_secs: u64, into: &mut SlotStats) {
        self.merge_into_with(now_secs, into, None);
    }

    /// The same, but the slot of `open.0`, which the window at `now_secs` holds, is merged by
    /// `open.1` (given the ring's figures for it, if the ring holds that slot) in its turn:
    /// float sums depend on the order of the additions.
    pub(crate) fn merge_into_with(
        &self,
        now_secs: u64,
        into: &mut SlotStats,
        open: Option<OpenSlot<'_>>,
    ) {
        let open_index = open.map(|(epoch, _)| self.span.index(epoch));
        for (i, slot) in self.slots.iter().enumerate() {
            match open {
                Some((epoch, merge)) if open_index == Some(i) => {
                    merge((slot.epoch == epoch).then_some(&slot.stats), into);
                }
                _ => {
                    if self.span.holds(slot.epoch, now_secs) {
                        into.merge(&slot.stats);
                    }
                }
            }
        }
    }
}

/// Counts over a window: a population and the hits within it (a rollback trigger's rate, the
/// error layer's recent counts).
pub(crate) struct RateRing {
    span: WindowSpan,
    /// (epoch, population, hits) per slot.
    slots: Vec<(u64, u64, u64)>,
}

impl RateRing {
    pub(crate) fn new(span: WindowSpan) -> Self {
        Self {
            span,
            slots: vec![(UNUSED, 0, 0); span.slots()],
        }
    }

    pub(crate) fn add(&mut self, now_secs: u64, hit: bool) {
        self.add_in(self.span, now_secs, hit);
    }

    /// The same, `span` being this ring's (see [`Ring::add_in`]).
    #[inline(always)]
    pub(crate) fn add_in(&mut self, span: WindowSpan, now_secs: u64, hit: bool) {
        debug_assert_eq!(span, self.span);
        let epoch = span.epoch(now_secs);
        let slot = &mut self.slots[span.index(epoch)];
        if slot.0 != epoch {
            *slot = (epoch, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u64::from(hit);
    }

    /// (population, hits) within the window at `now_secs`.
    pub(crate) fn totals(&self, now_secs: u64) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|s| self.span.holds(s.0, now_secs))
            .fold((0, 0), |(n, h), s| (n + s.1, h + s.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_rings_count_within_their_span() {
        let t0 = 1_800_000_000;
        for (span, last_in, first_out) in [
            (WindowSpan::FiveMinutes, 299, 300),
            (WindowSpan::OneHour, 3599, 3600),
        ] {
            let mut ring = RateRing::new(span);
            ring.add(t0, true);
            ring.add(t0, false);
            assert_eq!(ring.totals(t0), (2, 1));
            assert_eq!(
                ring.totals(t0 + last_in - t0 % span.slot_secs()),
                (2, 1),
                "{span:?}"
            );
            assert_eq!(ring.totals(t0 + first_out), (0, 0), "{span:?}");
            // A reused slot starts over.
            ring.add(t0 + first_out, true);
            assert_eq!(ring.totals(t0 + first_out), (1, 1));
        }
    }
}
