//! Rolling windows: 5 minutes and 1 hour, overall and per provider, with mergeable quantile
//! sketches (DDSketch, 0.5% relative accuracy). Windows know nothing of SSE or HTTP: they take
//! finished [`StreamRecord`]s.
//!
//! Recording takes one of several shard locks (picked per thread), so cores do not queue on one
//! lock; reading merges the shards. Memory is fixed by the number of slots and labels, not by
//! traffic.

mod clock;
mod ring;
mod stats;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) use clock::unix_secs;
pub use clock::{Clock, ManualClock, SystemClock};
pub use ring::WindowSpan;
pub use stats::{OutcomeCounts, RequestStats, WindowStats};

pub(crate) use ring::{RateRing, Ring};
pub(crate) use stats::SlotStats;

use crate::health::RollbackTrigger;
use crate::record::StreamRecord;

struct Pair {
    five_minutes: Ring,
    one_hour: Ring,
}

impl Pair {
    fn new() -> Self {
        Self {
            five_minutes: Ring::new(WindowSpan::FiveMinutes),
            one_hour: Ring::new(WindowSpan::OneHour),
        }
    }

    fn add(&mut self, now: u64, record: &StreamRecord) {
        self.five_minutes.add(now, record);
        self.one_hour.add(now, record);
    }
}

struct Shard {
    overall: Pair,
    providers: HashMap<Arc<str>, Pair>,
    triggers: Vec<RateRing>,
}

/// Merged windows at one instant.
pub(crate) struct Collected {
    pub(crate) five_minutes: SlotStats,
    pub(crate) one_hour: SlotStats,
    pub(crate) providers: BTreeMap<Arc<str>, (SlotStats, SlotStats)>,
    /// (population, hits) per rollback trigger over 5 minutes.
    pub(crate) triggers: Vec<(u64, u64)>,
}

pub(crate) struct WindowStore {
    shards: Box<[Mutex<Shard>]>,
    triggers: Arc<[RollbackTrigger]>,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic mid-update leaves at worst one slot partly counted; keep serving.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WindowStore {
    pub(crate) fn new(triggers: Arc<[RollbackTrigger]>) -> Self {
        let n = std::thread::available_parallelism()
            .map_or(4, |n| n.get())
            .clamp(1, 16);
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    overall: Pair::new(),
                    providers: HashMap::new(),
                    triggers: triggers.iter().map(|_| RateRing::new()).collect(),
                })
            })
            .collect();
        Self { shards, triggers }
    }

    pub(crate) fn record(&self, now_secs: u64, record: &StreamRecord) {
        let index = SHARD.with(|i| *i) % self.shards.len();
        let mut shard = lock(&self.shards[index]);
        shard.overall.add(now_secs, record);
        match shard.providers.get_mut(&record.provider) {
            Some(pair) => pair.add(now_secs, record),
            None => {
                let mut pair = Pair::new();
                pair.add(now_secs, record);
                shard.providers.insert(record.provider.clone(), pair);
            }
        }
        for (trigger, rate) in self.triggers.iter().zip(shard.triggers.iter_mut()) {
            if trigger.counts(record) {
                rate.add(now_secs, trigger.is_hit(record));
            }
        }
    }

    /// Every window, merged over the shards.
    pub(crate) fn collect(&self, now_secs: u64) -> Collected {
        let mut out = Collected {
            five_minutes: SlotStats::default(),
            one_hour: SlotStats::default(),
            providers: BTreeMap::new(),
            triggers: vec![(0, 0); self.triggers.len()],
        };
        for shard in self.shards.iter() {
            let shard = lock(shard);
            shard
                .overall
                .five_minutes
                .merge_into(now_secs, &mut out.five_minutes);
            shard
                .overall
                .one_hour
                .merge_into(now_secs, &mut out.one_hour);
            for (provider, pair) in &shard.providers {
                let entry = out.providers.entry(provider.clone()).or_default();
                pair.five_minutes.merge_into(now_secs, &mut entry.0);
                pair.one_hour.merge_into(now_secs, &mut entry.1);
            }
            add_trigger_totals(&shard, now_secs, &mut out.triggers);
        }
        out
    }

    /// Only what health needs: the overall 5-minute window and the trigger rates.
    pub(crate) fn collect_health(&self, now_secs: u64) -> (SlotStats, Vec<(u64, u64)>) {
        let mut five = SlotStats::default();
        let mut triggers = vec![(0, 0); self.triggers.len()];
        for shard in self.shards.iter() {
            let shard = lock(shard);
            shard.overall.five_minutes.merge_into(now_secs, &mut five);
            add_trigger_totals(&shard, now_secs, &mut triggers);
        }
        (five, triggers)
    }
}

fn add_trigger_totals(shard: &Shard, now_secs: u64, into: &mut [(u64, u64)]) {
    for (rate, total) in shard.triggers.iter().zip(into.iter_mut()) {
        let (n, h) = rate.totals(now_secs);
        total.0 += n;
        total.1 += h;
    }
}
