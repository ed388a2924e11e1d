//! Spend since the monitor started: per model, per user for the heaviest users only, and the
//! models no price was found for (README, Cost).
//!
//! Per user, memory is bounded whatever the number of users: each thread shard keeps at most
//! 16 times `top_users` users (256 at least) by the Space-Saving algorithm (a new user past the
//! bound takes the place of the least-spending one, inheriting its figures as an over-estimate,
//! `error`), and a read merges the shards and keeps the top `top_users`. The room to spare keeps
//! users near the top from being pushed out by the churn of light ones: on a Zipf load
//! (s = 1.1) of 100,000 users the top 10 are found exactly (`tests/heavy_hitters.rs`). About
//! 100 bytes per entry: some 25 KiB per shard with the default 20. The heaviest users are exact as long as they
//! stay in their shards' tables; the order of the tail is approximate, and `error` says by how
//! much a figure may be over. The same entries count requests, tokens and errors, for whatever
//! else wants a user's share.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::cost::Cost;
use crate::record::StreamRecord;

/// Users a shard keeps at least: Space-Saving over-counts by at most the traffic over the
/// table's size, so the table is kept well above the users listed (README, Cost).
const MIN_CAPACITY: usize = 256;

/// Models without a price listed at most; later ones are counted, not listed.
const MAX_UNPRICED_LISTED: usize = 64;

/// One user's figures (the `top_users` of `/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserSpend {
    /// The user id.
    pub user_id: String,
    /// What the user's priced requests cost, in USD.
    pub cost_usd: f64,
    /// Requests.
    pub requests: u64,
    /// Input plus output tokens.
    pub tokens: u64,
    /// Requests that failed on the service's or the upstream's side.
    pub errors: u64,
    /// `errors` as a percent of `requests`.
    pub error_rate: f64,
    /// By how much `cost_usd` may be over the truth (0 while the user never left its table).
    pub error_usd: f64,
}

/// One model's figures (the `cost_by_model` of `/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpend {
    /// What its priced requests cost, in USD.
    pub cost_usd: f64,
    /// Of which estimated (no usage reported: the output counted, the input unknown).
    pub estimated_cost_usd: f64,
    /// Priced requests.
    pub requests: u64,
}

#[derive(Debug, Clone, Default)]
struct UserEntry {
    cost: u64,
    requests: u64,
    tokens: u64,
    errors: u64,
    /// Over-estimate inherited when this user replaced another (pico-USD).
    error: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct ModelEntry {
    cost: u64,
    estimated: u64,
    requests: u64,
}

#[derive(Debug, Default)]
struct Shard {
    users: Vec<(Arc<str>, UserEntry)>,
    /// Positions in `users`.
    index: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    models: HashMap<Arc<str>, ModelEntry, foldhash::fast::RandomState>,
}

/// Spend per model and per heavy user, and the unpriced models, since the monitor started.
#[derive(Debug)]
pub(crate) struct Spend {
    top_users: usize,
    /// Users each shard keeps: room beyond `top_users` for the churn below the top.
    capacity: usize,
    shards: Box<[Mutex<Shard>]>,
    unpriced: Mutex<(BTreeSet<String>, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spend {
    pub(crate) fn new(top_users: usize) -> Self {
        Self {
            top_users,
            capacity: top_users.saturating_mul(16).max(MIN_CAPACITY),
            shards: (0..crate::shard::count())
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            unpriced: Mutex::new((BTreeSet::new(), 0)),
        }
    }

    /// Adds a finished LLM call. `model` is the model it was priced as (or looked up under).
    pub(crate) fn record(&self, r: &StreamRecord, model: &Arc<str>) {
        let Some(cost) = r.cost else {
            let mut unpriced = lock(&self.unpriced);
            unpriced.1 += 1;
            if unpriced.0.len() < MAX_UNPRICED_LISTED && !unpriced.0.contains(&**model) {
                unpriced.0.insert(model.to_string());
            }
            return;
        };
        let pico = cost.picodollars();
        let mut shard = lock(&self.shards[crate::shard::index(self.shards.len())]);
        // Models are label values, capped by the model label budget: the map is bounded.
        let entry = shard.models.entry(model.clone()).or_default();
        entry.cost = entry.cost.saturating_add(pico);
        if r.cost_estimated {
            entry.estimated = entry.estimated.saturating_add(pico);
        }
        entry.requests += 1;
        if let (Some(user), true) = (&r.user_id, self.top_users > 0) {
            let tokens = r.output_tokens.saturating_add(r.input_tokens.unwrap_or(0));
            let failed = u64::from(r.outcome.is_error());
            let Shard { users, index, .. } = &mut *shard;
            let i = match index.get(user) {
                Some(&i) => i,
                None if users.len() < self.capacity => {
                    users.push((user.clone(), UserEntry::default()));
                    index.insert(user.clone(), users.len() - 1);
                    users.len() - 1
                }
                None => {
                    // Space-Saving: the least-spending user makes room, and the newcomer starts
                    // from its figures, which it may not have spent (its `error`).
                    let Some((i, _)) = users.iter().enumerate().min_by_key(|(_, (_, e))| e.cost)
                    else {
                        return;
                    };
                    let floor = users[i].1.clone();
                    index.remove(&users[i].0);
                    index.insert(user.clone(), i);
                    users[i] = (
                        user.clone(),
                        UserEntry {
                            error: floor.cost,
                            ..floor
                        },
                    );
                    i
                }
            };
            let e = &mut users[i].1;
            e.cost = e.cost.saturating_add(pico);
            e.requests += 1;
            e.tokens = e.tokens.saturating_add(tokens);
            e.errors += failed;
        }
    }

    /// The top users by spend, the heaviest first.
    pub(crate) fn top_users(&self) -> Vec<UserSpend> {
        let mut merged: HashMap<Arc<str>, UserEntry> = HashMap::new();
        for shard in self.shards.iter() {
            for (user, e) in &lock(shard).users {
                let m = merged.entry(user.clone()).or_default();
                m.cost = m.cost.saturating_add(e.cost);
                m.requests += e.requests;
                m.tokens = m.tokens.saturating_add(e.tokens);
                m.errors += e.errors;
                m.error = m.error.saturating_add(e.error);
            }
        }
        let mut users: Vec<(Arc<str>, UserEntry)> = merged.into_iter().collect();
        users.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then_with(|| a.0.cmp(&b.0)));
        users.truncate(self.top_users);
        users
            .into_iter()
            .map(|(user, e)| UserSpend {
                user_id: user.to_string(),
                cost_usd: Cost::from_picodollars(e.cost).usd(),
                requests: e.requests,
                tokens: e.tokens,
                errors: e.errors,
                error_rate: if e.requests > 0 {
                    e.errors as f64 * 100.0 / e.requests as f64
                } else {
                    0.0
                },
                error_usd: Cost::from_picodollars(e.error).usd(),
            })
            .collect()
    }

    /// Spend per model.
    pub(crate) fn by_model(&self) -> BTreeMap<String, ModelSpend> {
        let mut merged: BTreeMap<String, ModelEntry> = BTreeMap::new();
        for shard in self.shards.iter() {
            for (model, e) in &lock(shard).models {
                let m = merged.entry(model.to_string()).or_default();
                m.cost = m.cost.saturating_add(e.cost);
                m.estimated = m.estimated.saturating_add(e.estimated);
                m.requests += e.requests;
            }
        }
        merged
            .into_iter()
            .map(|(model, e)| {
                (
                    model,
                    ModelSpend {
                        cost_usd: Cost::from_picodollars(e.cost).usd(),
                        estimated_cost_usd: Cost::from_picodollars(e.estimated).usd(),
                        requests: e.requests,
                    },
                )
            })
            .collect()
    }

    /// The models no price was found for (at most 64 listed), and how many requests they made.
    pub(crate) fn unpriced(&self) -> (Vec<String>, u64) {
        let unpriced = lock(&self.unpriced);
        (unpriced.0.iter().cloned().collect(), unpriced.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Outcome;

    fn record(user: &str, pico: u64) -> StreamRecord {
        let mut r = StreamRecord::new("openai", "m", "/r", Outcome::Ok);
        r.user_id = Some(Arc::from(user));
        r.cost = Some(Cost::from_picodollars(pico));
        r.output_tokens = 10;
        r
    }

    #[test]
    fn keeps_the_heaviest_users_within_its_bound() {
        let spend = Spend::new(3);
        let model: Arc<str> = Arc::from("m");
        for (user, pico, times) in [("a", 100, 5), ("b", 50, 4), ("c", 10, 3)] {
            for _ in 0..times {
                spend.record(&record(user, pico), &model);
            }
        }
        // Many light users pass through the last place; the heavy ones stay exact.
        for i in 0..100 {
            spend.record(&record(&format!("light-{i}"), 1), &model);
        }
        let top = spend.top_users();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0].user_id, "a");
        assert_eq!(top[0].requests, 5);
        assert!((top[0].cost_usd - 500e-12).abs() < 1e-18);
        assert_eq!(top[0].error_usd, 0.0);
        assert_eq!(top[1].user_id, "b");
        assert_eq!(
            spend.by_model()["m"].requests,
            5 + 4 + 3 + 100,
            "every priced request counts for its model"
        );
    }

    #[test]
    fn a_users_error_rate_is_its_failures_share() {
        let spend = Spend::new(3);
        let model: Arc<str> = Arc::from("m");
        for outcome in [Outcome::Ok, Outcome::Ok, Outcome::Ok, Outcome::Timeout] {
            let mut r = record("a", 10);
            r.outcome = outcome;
            spend.record(&r, &model);
        }
        let top = spend.top_users();
        assert_eq!((top[0].requests, top[0].errors), (4, 1));
        assert!((top[0].error_rate - 25.0).abs() < 1e-9);
    }

    #[test]
    fn unpriced_models_are_listed_and_counted() {
        let spend = Spend::new(3);
        let mut r = record("a", 0);
        r.cost = None;
        for i in 0..100 {
            spend.record(&r, &Arc::from(format!("model-{i}")));
        }
        let (listed, requests) = spend.unpriced();
        assert_eq!(listed.len(), MAX_UNPRICED_LISTED);
        assert_eq!(requests, 100);
        assert!(spend.by_model().is_empty());
    }
}

/// Spend per budget over the last hour, by minute: a ring of 60 (minute, pico-USD) slots per
/// budget. Only configured budgets have one, and each record takes one lock per budget it
/// counts for.
/// (minute, pico-USD) per minute of the last hour.
type MinuteRing = [(u64, u64); BUDGET_MINUTES as usize];

#[derive(Debug)]
pub(crate) struct BudgetMeter {
    budgets: Vec<crate::health::Budget>,
    rings: Box<[Mutex<MinuteRing>]>,
}

/// Minutes a budget looks back.
const BUDGET_MINUTES: u64 = 60;

impl BudgetMeter {
    pub(crate) fn new(budgets: Vec<crate::health::Budget>) -> Self {
        let rings = budgets
            .iter()
            .map(|_| Mutex::new([(u64::MAX, 0); BUDGET_MINUTES as usize]))
            .collect();
        Self { budgets, rings }
    }

    /// Adds a priced record's cost, at `now_secs`, to the budgets it counts for.
    pub(crate) fn record(&self, now_secs: u64, r: &StreamRecord) {
        let Some(cost) = r.cost else { return };
        let minute = now_secs / 60;
        for (budget, ring) in self.budgets.iter().zip(self.rings.iter()) {
            if budget.counts(r) {
                let mut ring = lock(ring);
                let slot = &mut ring[(minute % BUDGET_MINUTES) as usize];
                if slot.0 != minute {
                    *slot = (minute, 0);
                }
                slot.1 = slot.1.saturating_add(cost.picodollars());
            }
        }
    }

    /// Each budget judged on the spend of the last hour at `now_secs`.
    pub(crate) fn judge(&self, now_secs: u64) -> Vec<crate::health::BudgetState> {
        let minute = now_secs / 60;
        self.budgets
            .iter()
            .zip(self.rings.iter())
            .map(|(budget, ring)| {
                let spent = lock(ring)
                    .iter()
                    .filter(|(m, _)| *m != u64::MAX && *m + BUDGET_MINUTES > minute && *m <= minute)
                    .fold(0u64, |sum, (_, pico)| sum.saturating_add(*pico));
                crate::health::BudgetState::judge(budget, Cost::from_picodollars(spent).usd())
            })
            .collect()
    }
}
