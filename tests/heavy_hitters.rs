//! The top users by spend in bounded memory: a Zipf-distributed load (s = 1.1) over 100,000
//! users, and the true top 10 found, in order, with their exact figures and their first-token
//! p95 within 10%. (The bound itself, a shard's table full at its capacity whatever the users
//! passing through, is checked where the table is: `src/spend.rs`.)

use std::collections::HashMap;
use std::time::Duration;

use tower_stream_monitor::{Monitor, Outcome, StreamRecord};

#[test]
fn the_true_top_ten_of_a_zipf_load_of_100_000_users() {
    const USERS: usize = 100_000;
    const REQUESTS: usize = 300_000;
    let monitor = Monitor::builder().top_users(10).build().unwrap();
    // Zipf(1.1) by inverse transform over the cumulative weights, with a fixed seed.
    let weights: Vec<f64> = (1..=USERS).map(|k| 1.0 / (k as f64).powf(1.1)).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(USERS);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cumulative.push(acc);
    }
    let mut rng = fastrand::Rng::with_seed(7);
    // First tokens from their own generator, so the users drawn stay those of seed 7.
    let mut latency_rng = fastrand::Rng::with_seed(11);
    let mut truth: HashMap<usize, u64> = HashMap::new();
    let mut first_tokens: HashMap<usize, Vec<f64>> = HashMap::new();
    for _ in 0..REQUESTS {
        let u = rng.f64();
        let user = cumulative.partition_point(|c| *c < u).min(USERS - 1);
        *truth.entry(user).or_default() += 1;
        // Log-normal-ish first tokens: a median of 200 to 800 ms by user, spread by e^(0.5 z),
        // z roughly standard normal (12 uniforms less 6).
        let z = (0..12).map(|_| latency_rng.f64()).sum::<f64>() - 6.0;
        let ttft_ms = (200.0 + (user % 7) as f64 * 100.0) * (0.5 * z).exp();
        first_tokens.entry(user).or_default().push(ttft_ms);
        // Every request the same price: 1,000 output tokens of gpt-4o-mini, $0.0006.
        let mut r = StreamRecord::new("openai", "gpt-4o-mini", "/v1/chat", Outcome::Ok);
        r.streaming = true;
        r.output_tokens = 1_000;
        r.input_tokens = Some(0);
        r.user_id = Some(format!("user-{user}").into());
        r.time_to_first_token = Some(Duration::from_secs_f64(ttft_ms / 1000.0));
        monitor.ingest(r);
    }
    let mut expected: Vec<(usize, u64)> = truth.into_iter().collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    expected.truncate(10);
    let top = monitor.snapshot().spend.top_users;
    assert_eq!(top.len(), 10);
    for (listed, (user, requests)) in top.iter().zip(&expected) {
        assert_eq!(listed.user_id, format!("user-{user}"));
        assert_eq!(listed.requests, *requests, "{listed:?}");
        // Space-Saving over-estimates by at most what a user inherited when it (re)entered a
        // table early in the run: the true spend lies within [cost - error, cost].
        let spent = *requests as f64 * 0.0006;
        assert!(
            listed.cost_usd >= spent - 1e-9 && listed.cost_usd - listed.error_usd <= spent + 1e-9,
            "{listed:?} against {spent}"
        );
        assert!(listed.error_usd <= 0.01 * spent, "{listed:?}");
        // The first-token p95 is the histogram's: within 10% of the exact p95 (nearest rank)
        // of the latencies this user was given.
        let mut latencies = first_tokens.remove(user).unwrap();
        latencies.sort_by(f64::total_cmp);
        let rank = (0.95 * latencies.len() as f64).ceil() as usize;
        let exact = latencies[rank.clamp(1, latencies.len()) - 1];
        let p95 = listed.first_token_p95_ms.unwrap();
        assert!(
            (p95 - exact).abs() <= 0.1 * exact,
            "{listed:?}: p95 {p95} against {exact}"
        );
    }
}
