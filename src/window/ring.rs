//! A window as a ring of time slots: 5 minutes as 30 slots of 10 s, 1 hour as 60 of 1 min.

use super::stats::SlotStats;
use crate::record::StreamRecord;

/// The two windows of SPEC section 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowSpan {
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
}

struct Slot {
    /// Which slot of time this is (`unix_secs / slot_secs`); a slot whose epoch fell out of the
    /// window is stale and is cleared before reuse.
    epoch: u64,
    stats: SlotStats,
}

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
                    epoch: u64::MAX,
                    stats: SlotStats::default(),
                })
                .collect(),
        }
    }

    pub(crate) fn add(&mut self, now_secs: u64, record: &StreamRecord) {
        let epoch = now_secs / self.span.slot_secs();
        let slot = &mut self.slots[(epoch % self.span.slots() as u64) as usize];
        if slot.epoch != epoch {
            slot.stats.clear();
            slot.epoch = epoch;
        }
        slot.stats.add(record);
    }

    /// Adds the slots still inside the window at `now_secs` into `into`.
    pub(crate) fn merge_into(&self, now_secs: u64, into: &mut SlotStats) {
        let current = now_secs / self.span.slot_secs();
        let oldest = current.saturating_sub(self.span.slots() as u64 - 1);
        for slot in &self.slots {
            if slot.epoch != u64::MAX && slot.epoch >= oldest && slot.epoch <= current {
                into.merge(&slot.stats);
            }
        }
    }
}

/// A rate over the last 5 minutes: `hits / population`, for a rollback trigger.
pub(crate) struct RateRing {
    slots: [(u64, u64, u64); 30],
}

impl RateRing {
    pub(crate) fn new() -> Self {
        Self {
            slots: [(u64::MAX, 0, 0); 30],
        }
    }

    pub(crate) fn add(&mut self, now_secs: u64, hit: bool) {
        let epoch = now_secs / 10;
        let slot = &mut self.slots[(epoch % 30) as usize];
        if slot.0 != epoch {
            *slot = (epoch, 0, 0);
        }
        slot.1 += 1;
        slot.2 += u64::from(hit);
    }

    /// (population, hits) within the window at `now_secs`.
    pub(crate) fn totals(&self, now_secs: u64) -> (u64, u64) {
        let current = now_secs / 10;
        let oldest = current.saturating_sub(29);
        self.slots
            .iter()
            .filter(|s| s.0 != u64::MAX && s.0 >= oldest && s.0 <= current)
            .fold((0, 0), |(n, h), s| (n + s.1, h + s.2))
    }
}
