//! `/metrics/history`: the windows slot by slot, each request in the slot it ended in, the
//! slots adding up to the windows of `/metrics`.

use std::time::{Duration, UNIX_EPOCH};

use tower_stream_monitor::snapshot::MetricsHistory;
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
    let by_provider = &hour.by_provider;
    assert_eq!(by_provider["anthropic"][49].total_streaming_requests, 1);
    assert_eq!(by_provider["openai"][59].total_streaming_requests, 3);
    assert_eq!(
        by_provider["openai"][57].requests_by_outcome[Outcome::ServerError],
        1
    );
    assert_eq!(
        by_provider["openai"][59].start_unix,
        hour.points[59].start_unix
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
    // A past slot has no count of requests in flight now.
    let json = serde_json::to_value(&history).unwrap();
    assert!(json["one_hour"]["points"][59].get("in_flight").is_none());
    assert!(json["one_hour"]["points"][59]["avg_in_flight"].is_f64());
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

#[test]
fn streams_of_no_token_count_as_zero_in_the_token_quantiles() {
    let monitor = Monitor::builder().build().unwrap();
    // Three streams cut before their first token (a reported prompt of zero too), one of 1.
    for tokens in [0, 0, 0, 1] {
        let mut r = stream("openai", 100, Outcome::Ok);
        r.output_tokens = tokens;
        r.input_tokens = Some(tokens);
        monitor.ingest(r);
    }
    let w = monitor.snapshot().streaming_5min;
    assert_eq!(w.output_tokens_p50, 0.0);
    assert_eq!(w.input_tokens_p50, 0.0);
    // The one stream that had a token is still the top.
    assert!(
        (w.output_tokens_p99 - 1.0).abs() < 0.01,
        "{}",
        w.output_tokens_p99
    );
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

/// The 5-minute series per provider holds the same streams as the 5-minute windows per provider
/// of `/metrics`, and `streaming_by_model` the same per provider and model.
#[test]
fn five_minute_series_per_provider_agree_with_the_provider_windows() {
    let start = 1_800_000_000; // a whole minute
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(start));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    let priced = |provider: &str, model: &str, ttft_ms: u64, outcome: Outcome| {
        let mut r = stream(provider, ttft_ms, outcome);
        r.model = model.into();
        r.operation_name = Some("chat");
        r.input_tokens = Some(1_000 + ttft_ms);
        r.tokens_per_second = Some(40.0 + ttft_ms as f64 / 7.0);
        r.time_per_output_token = Some(Duration::from_micros(20_000 + ttft_ms * 13));
        r
    };
    // Six minutes ago: outside the 5 minutes, inside the hour.
    monitor.ingest(priced("openai", "gpt-4o-mini", 900, Outcome::Ok));
    clock.advance(Duration::from_secs(6 * 60));
    // openai over three 10 s slots, two models; anthropic all in one slot.
    for (i, ttft) in [120, 80, 260, 45, 300, 150].into_iter().enumerate() {
        let model = if i % 2 == 0 { "gpt-4o-mini" } else { "gpt-4o" };
        let outcome = if i == 3 {
            Outcome::Timeout
        } else {
            Outcome::Ok
        };
        monitor.ingest(priced("openai", model, ttft, outcome));
        if i % 2 == 1 {
            clock.advance(Duration::from_secs(10));
        }
    }
    for ttft in [210, 230, 250, 700] {
        monitor.ingest(priced("anthropic", "claude-sonnet-4-5", ttft, Outcome::Ok));
    }
    clock.advance(Duration::from_secs(5));

    let history = monitor.history();
    let snapshot = monitor.snapshot();
    let five = &history.five_minutes.by_provider;
    assert_eq!(five.len(), 2, "{:?}", five.keys());
    for (provider, points) in five {
        assert_eq!(points.len(), 30);
        let w = &snapshot.streaming_by_provider[provider].five_minutes;
        let n: u64 = points.iter().map(|p| p.total_streaming_requests).sum();
        assert_eq!(n, w.total_streaming_requests, "{provider}");
        for outcome in Outcome::ALL {
            let n: u64 = points.iter().map(|p| p.requests_by_outcome[outcome]).sum();
            assert_eq!(n, w.by_outcome[outcome], "{provider} {outcome:?}");
        }
        let cost: f64 = points.iter().map(|p| p.cost_usd).sum();
        assert!(w.cost_usd > 0.0, "{provider}: priced");
        assert!(
            (cost - w.cost_usd).abs() <= 1e-12,
            "{provider}: {cost} vs {}",
            w.cost_usd
        );
        // The same slots as the overall series.
        for (p, overall) in points.iter().zip(&history.five_minutes.points) {
            assert_eq!(p.start_unix, overall.start_unix);
        }
    }
    assert_eq!(
        five["openai"]
            .iter()
            .filter(|p| p.total_streaming_requests > 0)
            .count(),
        3,
        "openai's streams ended in three slots"
    );
    // anthropic's streams all ended in one slot: its figures are the window's, exactly.
    let w = &snapshot.streaming_by_provider["anthropic"].five_minutes;
    let slot = five["anthropic"]
        .iter()
        .find(|p| p.total_streaming_requests > 0)
        .unwrap();
    assert_eq!(slot.total_streaming_requests, 4);
    assert_eq!(
        (
            slot.first_token_p50_ms,
            slot.first_token_p95_ms,
            slot.first_token_p99_ms
        ),
        (
            w.first_token_p50_ms,
            w.first_token_p95_ms,
            w.first_token_p99_ms
        )
    );
    assert_eq!(slot.avg_tokens_per_second, w.avg_tokens_per_second);
    assert_eq!(
        slot.time_per_output_token_p95_ms,
        w.time_per_output_token_p95_ms
    );
    assert_eq!(slot.cost_usd, w.cost_usd);
    // The hour's series still has the stream of six minutes ago.
    let hour_openai: u64 = history.one_hour.by_provider["openai"]
        .iter()
        .map(|p| p.total_streaming_requests)
        .sum();
    assert_eq!(hour_openai, 7);

    // Per provider and model over the same 5 minutes: anthropic has one model, so its row is
    // its provider window; openai's two rows add up to its window.
    let rows = &snapshot.streaming_by_model;
    let pairs: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.provider.as_str(), r.model.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("anthropic", "claude-sonnet-4-5"),
            ("openai", "gpt-4o"),
            ("openai", "gpt-4o-mini")
        ]
    );
    let claude = &rows[0];
    assert_eq!(
        (
            claude.total_streaming_requests,
            claude.first_token_p95_ms,
            claude.avg_tokens_per_second,
            claude.cost_usd,
            claude.streaming_error_rate
        ),
        (
            w.total_streaming_requests,
            w.first_token_p95_ms,
            w.avg_tokens_per_second,
            w.cost_usd,
            w.streaming_error_rate
        )
    );
    let openai = &snapshot.streaming_by_provider["openai"].five_minutes;
    assert_eq!(
        rows[1].total_streaming_requests + rows[2].total_streaming_requests,
        openai.total_streaming_requests
    );
    assert_eq!((rows[1].streaming_errors, rows[2].streaming_errors), (1, 0));
    assert!((rows[1].streaming_error_rate - 100.0 / 3.0).abs() < 1e-9);
    assert!((rows[1].cost_usd + rows[2].cost_usd - openai.cost_usd).abs() <= 1e-12);
}

/// The largest JSON text of a number of each kind: a `u64` (20 digits) and an `f64` (serde_json
/// writes the shortest form that reads back, at most 24 characters: `-2.2250738585072014e-308`).
const MAX_U64_CHARS: usize = 20;
const MAX_F64_CHARS: usize = 24;

/// The most bytes `value` can take with the same fields and any numbers in them: its length
/// with every number widened to its kind's longest text.
fn widest(value: &serde_json::Value) -> usize {
    fn growth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Number(n) => {
                let now = n.to_string().len();
                let most = if n.is_f64() {
                    MAX_F64_CHARS
                } else {
                    MAX_U64_CHARS
                };
                most.saturating_sub(now)
            }
            serde_json::Value::Array(a) => a.iter().map(growth).sum(),
            serde_json::Value::Object(o) => o.values().map(growth).sum(),
            _ => 0,
        }
    }
    serde_json::to_string(value).unwrap().len() + growth(value)
}

/// The history of 64 providers, each busy in every slot, stays under a ceiling worked out from
/// its fixed shape: 30 + 60 overall points, as many per provider, each provider's name at most
/// 64 bytes, every number at its longest.
#[test]
fn the_history_of_64_providers_stays_under_its_ceiling() {
    const PROVIDERS: usize = 64; // the default label_cardinality
    let start = 1_800_000_000;
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(start));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    // Names of the longest a label may be, so the keys are the widest too.
    let names: Vec<String> = (0..PROVIDERS).map(|i| format!("{i:0>64}")).collect();
    // A stream from every provider every 10 s for an hour: every slot of every series is busy.
    for step in 0..360u64 {
        clock.advance(Duration::from_secs(10));
        for (i, name) in names.iter().enumerate() {
            let outcome = Outcome::ALL[(step as usize + i) % Outcome::ALL.len()];
            let mut r = stream(name, 100 + (step * 7 + i as u64) % 900, outcome);
            r.model = "gpt-4o-mini".into();
            r.operation_name = Some("chat");
            r.input_tokens = Some(1_000 + step);
            r.tokens_per_second = Some(33.3 + step as f64 / 3.0);
            r.time_per_output_token = Some(Duration::from_micros(20_001 + step));
            monitor.ingest(r);
        }
    }
    let history = monitor.history();
    for series in [&history.five_minutes, &history.one_hour] {
        assert_eq!(series.by_provider.len(), PROVIDERS);
        assert!(
            series
                .by_provider
                .values()
                .all(|points| points.iter().all(|p| p.total_streaming_requests > 0))
        );
    }
    let bytes = serde_json::to_vec(&history).unwrap().len();

    // The shape, from an idle monitor: one provider seen long ago, every slot empty.
    let idle = Monitor::builder().clock(clock.clone()).build().unwrap();
    idle.ingest(stream("p", 100, Outcome::Ok));
    clock.advance(Duration::from_secs(2 * 3600));
    let idle: MetricsHistory = idle.history();
    let value = serde_json::to_value(&idle).unwrap();
    let mut ceiling = 0;
    for (span, points) in [("five_minutes", 30), ("one_hour", 60)] {
        let series = &value[span];
        let overall = series["points"].as_array().unwrap();
        let provider = series["by_provider"]["p"].as_array().unwrap();
        assert_eq!((overall.len(), provider.len()), (points, points));
        // `{"slot_seconds":..,"points":[..],"by_provider":{..}},` with a comma per point.
        ceiling += 64 + points * (widest(&overall[0]) + 1);
        // `"NAME":[..],` per provider, a name being at most 64 bytes.
        ceiling += PROVIDERS * (64 + 5 + points * (widest(&provider[0]) + 1));
    }
    eprintln!(
        "history of {PROVIDERS} providers: {bytes} bytes; ceiling {ceiling} bytes \
         (an overall point <= {} bytes, a provider's <= {})",
        widest(&value["one_hour"]["points"][0]),
        widest(&value["one_hour"]["by_provider"]["p"][0])
    );
    assert!(
        bytes <= ceiling,
        "{bytes} bytes against a ceiling of {ceiling}"
    );
    // What the README states for 64 providers.
    assert!(ceiling <= 4_300_000, "{ceiling}");
}
