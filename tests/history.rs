//! `/metrics/history`: the windows slot by slot, each request in the slot it ended in, the
//! slots adding up to the windows of `/metrics`.

use std::time::{Duration, UNIX_EPOCH};

use tower_stream_monitor::window::ManualClock;
use tower_stream_monitor::{Monitor, Outcome, StreamRecord};

fn stream(provider: &str, ttft_ms: u64, outcome: Outcome) -> StreamRecord {
    let mut r = StreamRecord::new(provider, "m", "/v1/chat", outcome);
    r.streaming = true;
    r.time_to_first_token = Some(Duration::from_millis(ttft_ms));
    r.duration = Duration::from_millis(ttft_ms + 100);
    r.output_tokens = 10;
    r
}

#[test]
fn each_request_lands_in_its_slot_and_the_slots_add_up() {
    // A whole minute, so slot boundaries are where the test says.
    let start = 1_800_000_000; // a whole minute
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(start));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    // Ten minutes ago: two streams; two minutes ago: one failure; now: three streams.
    monitor.ingest(stream("openai", 100, Outcome::Ok));
    monitor.ingest(stream("anthropic", 300, Outcome::Ok));
    clock.advance(Duration::from_secs(8 * 60));
    monitor.ingest(stream("openai", 200, Outcome::ServerError));
    clock.advance(Duration::from_secs(2 * 60 + 5));
    for ttft in [50, 60, 70] {
        monitor.ingest(stream("openai", ttft, Outcome::Ok));
    }

    let history = monitor.history();
    let hour = &history.one_hour;
    assert_eq!((hour.slot_seconds, hour.points.len()), (60, 60));
    let counts: Vec<u64> = hour
        .points
        .iter()
        .map(|p| p.streaming.total_streaming_requests)
        .collect();
    assert_eq!(counts[59], 3, "now");
    assert_eq!(counts[57], 1, "two minutes ago");
    assert_eq!(counts[49], 2, "ten minutes ago");
    assert_eq!(counts.iter().sum::<u64>(), 6);
    assert_eq!(
        hour.points[57].streaming.by_outcome[Outcome::ServerError],
        1
    );
    assert_eq!(hour.points[57].requests.total_requests, 1);
    // Slots are a minute apart and the last one holds now.
    let now = start + 10 * 60 + 5;
    assert!(hour.points[59].start_unix <= now && now < hour.points[59].start_unix + 60);
    assert_eq!(hour.points[58].start_unix + 60, hour.points[59].start_unix);
    // Per provider, the same slots.
    let by_provider = hour.by_provider.as_ref().unwrap();
    assert_eq!(
        by_provider["anthropic"][49]
            .streaming
            .total_streaming_requests,
        1
    );
    assert_eq!(
        by_provider["openai"][59].streaming.total_streaming_requests,
        3
    );
    // The last 5 minutes: only the latest three, in the current 10 s slot.
    let five = &history.five_minutes;
    assert_eq!((five.slot_seconds, five.points.len()), (10, 30));
    assert_eq!(five.points[29].streaming.total_streaming_requests, 3);
    assert_eq!(
        five.points
            .iter()
            .map(|p| p.streaming.total_streaming_requests)
            .sum::<u64>(),
        monitor.snapshot().streaming_5min.total_streaming_requests
    );
    // The slots add up to the hour window of /metrics.
    assert_eq!(
        counts.iter().sum::<u64>(),
        monitor.snapshot().streaming_1hour.total_streaming_requests
    );
    // Quantiles per slot: the current slot's p95 is among its own requests' (50-70 ms), not
    // the older slots' (100-300 ms).
    let p95 = hour.points[59].streaming.first_token_p95_ms;
    assert!((49.0..=71.0).contains(&p95), "{p95}");
    assert!(hour.points[49].streaming.first_token_p95_ms > 99.0);
    // Bounded whatever the traffic: 30 + 60 points, and 60 per provider (about 1 KiB each).
    let json = serde_json::to_string(&history).unwrap();
    let points = 30 + 60 + 60 * by_provider.len();
    assert!(json.len() < points * 1400, "{} bytes", json.len());
}

#[test]
fn token_distributions_per_stream_are_in_the_windows() {
    let monitor = Monitor::builder().build().unwrap();
    // Output tokens 1..=200 and input tokens 1000..=1199, one stream each.
    for i in 1..=200u64 {
        let mut r = stream("openai", 100, Outcome::Ok);
        r.output_tokens = i;
        r.input_tokens = Some(999 + i);
        monitor.ingest(r);
    }
    let w = monitor.snapshot().streaming_5min;
    // Within the sketches' 1% (and one rank) of the exact quantiles.
    let near = |got: f64, exact: f64| (got - exact).abs() <= exact * 0.02 + 1.0;
    assert!(near(w.output_tokens_p50, 100.0), "{}", w.output_tokens_p50);
    assert!(near(w.output_tokens_p95, 190.0), "{}", w.output_tokens_p95);
    assert!(near(w.output_tokens_p99, 198.0), "{}", w.output_tokens_p99);
    assert!(near(w.input_tokens_p50, 1099.0), "{}", w.input_tokens_p50);
    assert!(near(w.input_tokens_p99, 1197.0), "{}", w.input_tokens_p99);
}

/// Little's law on the minute slots: with 12 requests a minute of 30 s each, steadily, the
/// time-averaged in-flight count is 12/60 per second × 30 s = 6.
#[test]
fn time_averaged_in_flight_follows_littles_law() {
    let start = 1_800_000_000; // a whole minute
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(start));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    // One request ends every 5 s, each after 30 s in flight, for 20 minutes.
    for _ in 0..(20 * 12) {
        clock.advance(Duration::from_secs(5));
        let mut r = stream("openai", 100, Outcome::Ok);
        r.duration = Duration::from_secs(30);
        monitor.ingest(r);
    }
    let hour = monitor.history().one_hour;
    // The minutes well inside the run: the first fills up, and the last two are partial (the
    // requests that would overlap them end later).
    let steady = &hour.points[hour.points.len() - 19..hour.points.len() - 2];
    for p in steady {
        let arrival = p.arrival_rate_per_second;
        let mean_duration = p.streaming.avg_duration_ms / 1000.0;
        assert!((arrival - 0.2).abs() < 1e-9, "{arrival}");
        assert!(
            (p.avg_in_flight - arrival * mean_duration).abs() < 0.05,
            "L = {} against λW = {}",
            p.avg_in_flight,
            arrival * mean_duration
        );
    }
    assert!((steady[5].avg_in_flight - 6.0).abs() < 0.05);
}
