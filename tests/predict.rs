//! Trends and anomalies per provider: a provider whose first token quietly doubles is an
//! anomaly (one alert, health degraded, a gauge); one that is always slow is not; a simulated
//! day raises nothing but its step; a rising first token has its slope; capacity.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tower_stream_monitor::health::{Alert, HealthStatus};
use tower_stream_monitor::predict::{AnomalyDetection, AnomalySlot};
use tower_stream_monitor::window::ManualClock;
use tower_stream_monitor::{Monitor, Outcome, StreamRecord};

fn stream(provider: &str, ttft_ms: u64) -> StreamRecord {
    model_stream(provider, "m", ttft_ms)
}

fn model_stream(provider: &str, model: &str, ttft_ms: u64) -> StreamRecord {
    let mut r = StreamRecord::new(provider, model, "/v1/chat", Outcome::Ok);
    r.streaming = true;
    r.time_to_first_token = Some(Duration::from_millis(ttft_ms));
    r.duration = Duration::from_millis(ttft_ms + 500);
    r.output_tokens = 50;
    r.tokens_per_second = Some(100.0);
    r
}

#[test]
fn a_doubled_first_token_is_an_anomaly_and_an_always_slow_provider_is_not() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let alerts: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let seen = alerts.clone();
    let monitor = Monitor::builder()
        .clock(clock.clone())
        .on_alert(move |a: &Alert| seen.lock().unwrap().push(a.anomalies.clone()))
        .build()
        .unwrap();
    // Thirty minutes: openai steady near 300 ms, gemini always near 2,000 ms.
    for minute in 0..30u64 {
        for i in 0..10u64 {
            monitor.ingest(stream("openai", 290 + (minute + i) % 20));
            monitor.ingest(stream("gcp.gemini", 1_990 + (minute * i) % 20));
        }
        clock.advance(Duration::from_secs(60));
        monitor.health();
    }
    let anomalous = |m: &Monitor| -> Vec<String> {
        m.health()
            .anomalies
            .iter()
            .filter(|a| a.anomalous)
            .map(|a| a.name())
            .collect()
    };
    assert!(anomalous(&monitor).is_empty(), "a steady hour has none");
    let judged = monitor.health().anomalies;
    assert!(
        judged
            .iter()
            .any(|a| a.provider == "gcp.gemini" && a.signal == "first_token_p95_ms")
    );

    // Then openai's first token doubles, quietly (600 ms is under every fixed threshold),
    // while gemini stays as slow as ever: one odd minute is not enough, two in a row are.
    for minute in 0..2 {
        for _ in 0..10 {
            monitor.ingest(stream("openai", 600));
            monitor.ingest(stream("gcp.gemini", 2_000));
        }
        clock.advance(Duration::from_secs(60));
        if minute == 0 {
            assert!(anomalous(&monitor).is_empty(), "one minute is not a change");
        }
    }
    assert_eq!(anomalous(&monitor), ["openai:m:first_token_p95_ms"]);
    let report = monitor.health();
    assert_eq!(report.status.max(HealthStatus::Degraded), report.status);
    assert!(
        !report.rollback,
        "an anomaly is a warning, never a rollback"
    );
    let scrape = monitor.render_prometheus();
    let score: f64 = scrape
        .lines()
        .find(|l| {
            l.starts_with("stream_monitor_anomaly_score{")
                && l.contains("openai")
                && l.contains("first_token_p95_ms")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the anomaly score gauge");
    assert!(score > 4.0, "{score}");
    // One alert for it, not one per judgement.
    monitor.health();
    monitor.snapshot();
    let raised: Vec<Vec<String>> = alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|a| !a.is_empty())
        .cloned()
        .collect();
    assert_eq!(raised, vec![vec!["openai:m:first_token_p95_ms".to_owned()]]);
    // The JSON has it too.
    let predictions = monitor.snapshot().predictions;
    assert!(
        predictions["openai"]
            .anomalies
            .iter()
            .any(|a| a.signal == "first_token_p95_ms" && a.anomalous)
    );
}

/// Minutes of an outage, where every stream failed before its first token, have no first token:
/// they are neither a 0 ms baseline that the recovery to the usual 300 ms would leave, nor
/// points of the trend.
#[test]
fn outage_minutes_have_no_first_token() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    for _ in 0..12 {
        for _ in 0..10 {
            let mut r = StreamRecord::new("openai", "m", "/v1/chat", Outcome::ServerError);
            r.streaming = true;
            monitor.ingest(r);
        }
        clock.advance(Duration::from_secs(60));
        monitor.health();
    }
    for minute in 0..2u64 {
        for i in 0..10u64 {
            monitor.ingest(stream("openai", 295 + (minute + i) % 10));
        }
        clock.advance(Duration::from_secs(60));
        monitor.health();
    }
    let report = monitor.health();
    let first_token: Vec<_> = report
        .anomalies
        .iter()
        .filter(|a| a.signal == "first_token_p95_ms")
        .collect();
    assert!(
        first_token.is_empty(),
        "two minutes with first tokens are no baseline: {first_token:?}"
    );
    let predictions = monitor.predictions();
    let trend = &predictions["openai"].first_token_p95_trend;
    assert!(trend.is_none(), "no trend from two minutes: {trend:?}");
}

/// Baselines are per model: traffic moving to a provider's slow model raises the provider's
/// p95 but is no anomaly; the fast model doubling is one, named with its model.
#[test]
fn baselines_are_per_model_so_a_shift_to_a_slow_model_is_no_anomaly() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    let minute = |fast: u64, fast_ms: u64, slow: u64| {
        for i in 0..fast {
            monitor.ingest(model_stream("openai", "fast", fast_ms + i % 10));
        }
        for i in 0..slow {
            monitor.ingest(model_stream("openai", "slow", 3_000 + i % 10));
        }
        clock.advance(Duration::from_secs(60));
        monitor.health()
    };
    // 3% of the streams on the slow model: the provider's p95 is the fast model's.
    for _ in 0..20 {
        minute(150, 300, 5);
    }
    // The mix turns to the slow model: the provider's p95 goes from 300 ms to 3 s, a provider
    // baseline would cry wolf; per model nothing changed.
    for _ in 0..4 {
        let report = minute(6, 300, 40);
        assert!(
            report.anomalies.iter().all(|a| !a.anomalous),
            "{:?}",
            report.anomalies
        );
    }
    assert!(
        monitor
            .health()
            .anomalies
            .iter()
            .any(|a| a.model == "slow" && a.signal == "first_token_p95_ms"),
        "each model is judged"
    );
    for _ in 0..2 {
        minute(150, 600, 5);
    }
    let raised: Vec<String> = monitor
        .health()
        .anomalies
        .iter()
        .filter(|a| a.anomalous)
        .map(|a| a.name())
        .collect();
    assert_eq!(raised, ["openai:fast:first_token_p95_ms"]);
    let scrape = monitor.render_prometheus();
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("stream_monitor_anomaly_score{")
                && l.contains("gen_ai_request_model=\"fast\"")),
        "the gauge carries the model"
    );
}

/// A monitor on a manual clock judging 10 s slots from a baseline of 6, as the demo sets it.
fn ten_second_monitor(rollback: bool) -> (Monitor, ManualClock) {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder()
        .clock(clock.clone())
        .anomaly_detection(
            AnomalyDetection::default()
                .slot(AnomalySlot::TenSeconds)
                .min_baseline_slots(6)
                .rollback(rollback),
        )
        .build()
        .unwrap();
    (monitor, clock)
}

/// Ten-second slots and a short baseline, as the demo sets them: caught within 30 s.
#[test]
fn ten_second_slots_catch_a_change_in_half_a_minute() {
    let (monitor, clock) = ten_second_monitor(false);
    for i in 0..8u64 {
        for j in 0..10 {
            monitor.ingest(stream("openai", 300 + (i + j) % 10));
        }
        clock.advance(Duration::from_secs(10));
    }
    assert!(monitor.health().anomalies.iter().all(|a| !a.anomalous));
    let mut caught_after = None;
    for slot in 1..=3u64 {
        for _ in 0..10 {
            monitor.ingest(stream("openai", 600));
        }
        clock.advance(Duration::from_secs(10));
        let a = monitor.health().anomalies;
        if caught_after.is_none() && a.iter().any(|a| a.anomalous) {
            caught_after = Some(slot * 10);
            let judged = &monitor.predictions()["openai"].anomalies;
            assert!(judged.iter().all(|a| a.slot_secs == 10), "{judged:?}");
        }
    }
    assert_eq!(caught_after, Some(20), "two slots of 10 s in a row");
    // Settings it cannot use are an error from build, naming the setting.
    for bad in [
        // 30 slots of 10 s: one still filling, two judged, so at most 27 of baseline.
        AnomalyDetection::default()
            .min_baseline_slots(28)
            .slot(AnomalySlot::TenSeconds),
        AnomalyDetection::default().min_baseline_slots(58),
        AnomalyDetection::default().min_streams_per_slot(0),
        AnomalyDetection::default().scores(2.0, 4.0),
        AnomalyDetection::default().scores(f64::NAN, 1.0),
    ] {
        let e = Monitor::builder()
            .anomaly_detection(bad)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("anomaly_detection"), "{e}");
    }
}

/// An anomaly degrades health; it is a rollback only when configured so.
#[test]
fn an_anomaly_is_a_rollback_only_when_configured() {
    for rollback in [false, true] {
        let (monitor, clock) = ten_second_monitor(rollback);
        for (slots, ms) in [(8u64, 300u64), (2, 900)] {
            for i in 0..slots {
                for j in 0..10 {
                    monitor.ingest(stream("openai", ms + (i + j) % 10));
                }
                clock.advance(Duration::from_secs(10));
            }
        }
        let report = monitor.health();
        assert!(
            report
                .anomalies
                .iter()
                .any(|a| a.anomalous && a.rollback == rollback)
        );
        assert_eq!(report.rollback, rollback);
        let expected = if rollback {
            HealthStatus::Critical
        } else {
            HealthStatus::Degraded
        };
        assert_eq!(report.status, expected);
    }
}

/// The largest baseline `build` accepts is one a full window gives: it is judged.
#[test]
fn the_largest_baseline_accepted_is_judged() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder()
        .clock(clock.clone())
        .anomaly_detection(
            AnomalyDetection::default()
                .slot(AnomalySlot::TenSeconds)
                .min_baseline_slots(27),
        )
        .build()
        .unwrap();
    for slot in 0..40u64 {
        for i in 0..10u64 {
            monitor.ingest(stream("openai", 295 + (slot + i) % 10));
        }
        clock.advance(Duration::from_secs(10));
    }
    let judged = &monitor.predictions()["openai"].anomalies;
    assert!(
        judged.iter().any(|a| a.signal == "first_token_p95_ms"),
        "{judged:?}"
    );
}

#[test]
fn a_rising_first_token_has_its_slope() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    // 40 minutes, the first token 10 ms slower each minute.
    for minute in 0..40u64 {
        for _ in 0..10 {
            monitor.ingest(stream("openai", 300 + 10 * minute));
        }
        clock.advance(Duration::from_secs(60));
    }
    let predictions = monitor.predictions();
    let trend = predictions["openai"]
        .first_token_p95_trend
        .expect("a trend over 40 minutes");
    // Within the sketches' 1% on each minute's p95.
    assert!((trend.slope_per_minute - 10.0).abs() < 0.5, "{trend:?}");
    assert!(trend.r2 > 0.95, "{trend:?}");
    assert!(trend.minutes >= 39);
    let errors = predictions["openai"].error_rate_trend.unwrap();
    assert!(errors.slope_per_minute.abs() < 1e-9);
}

#[test]
fn capacity_is_the_in_flight_level_where_the_first_token_passed_its_warning() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let monitor = Monitor::builder().clock(clock.clone()).build().unwrap();
    // Ten minutes at about 1 in flight (a 6 s stream ending every 6 s) with a 300 ms first
    // token, then ten at about 10 in flight (60 s streams) with 2.5 s, past the 2 s warning.
    for (ttft, duration) in [(300, 6), (2_500, 60)] {
        for _ in 0..100 {
            clock.advance(Duration::from_secs(6));
            let mut r = stream("openai", ttft);
            r.duration = Duration::from_secs(duration);
            monitor.ingest(r);
        }
    }
    clock.advance(Duration::from_secs(60));
    let level = monitor.predictions()["openai"]
        .in_flight_at_first_token_warning
        .expect("the first token passed its warning");
    // Between the two regimes: above the calm one, at most the busy one.
    assert!(level > 1.5 && level <= 10.05, "{level}");
    let calm = Monitor::builder().build().unwrap();
    calm.ingest(stream("openai", 300));
    assert_eq!(
        calm.predictions()["openai"].in_flight_at_first_token_warning,
        None
    );
}

/// The minute an alert came, with the anomalies it listed.
type MinuteAlert = (u64, Vec<String>);

/// A simulated day, for several seeds: log-normal first tokens around 300 ms with a ±30% daily
/// swing raise no anomaly; a 15-minute step to twice the usual raises one, caught within three
/// minutes, and clears after it ends.
#[test]
fn a_stationary_day_raises_nothing_and_a_step_is_caught_then_clears() {
    // Three independent days, one thread each; the scope re-raises a panic from any of them.
    std::thread::scope(|days| {
        for seed in [1, 2, 3] {
            days.spawn(move || simulate_day(seed));
        }
    });
}

fn simulate_day(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let alerts: Arc<Mutex<Vec<MinuteAlert>>> = Arc::default();
    let seen = alerts.clone();
    let minute = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let now = minute.clone();
    let monitor = Monitor::builder()
        .clock(clock.clone())
        .on_alert(move |a: &Alert| {
            let m = now.load(std::sync::atomic::Ordering::Relaxed);
            seen.lock().unwrap().push((m, a.anomalies.clone()));
        })
        .build()
        .unwrap();
    let day = 24 * 60;
    let (step_from, step_to) = (day - 120, day - 105);
    for m in 0..day + 30 {
        minute.store(m, std::sync::atomic::Ordering::Relaxed);
        let swing = 1.0 + 0.3 * (2.0 * std::f64::consts::PI * m as f64 / day as f64).sin();
        let step = if (step_from..step_to).contains(&m) {
            2.0
        } else {
            1.0
        };
        for _ in 0..20 {
            // Log-normal: exp of a normal (Box-Muller), sigma 0.25.
            let normal = (-2.0 * rng.f64().max(1e-12).ln()).sqrt()
                * (2.0 * std::f64::consts::PI * rng.f64()).cos();
            let ttft = 300.0 * swing * step * (0.25 * normal).exp();
            monitor.ingest(stream("openai", ttft as u64));
        }
        clock.advance(Duration::from_secs(60));
        monitor.health();
    }
    let raised: Vec<MinuteAlert> = alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, a)| !a.is_empty())
        .cloned()
        .collect();
    assert_eq!(raised.len(), 1, "seed {seed}: {raised:?}");
    let (at, which) = &raised[0];
    assert_eq!(
        which,
        &["openai:m:first_token_p95_ms".to_owned()],
        "seed {seed}"
    );
    assert!(
        (step_from..=step_from + 3).contains(at),
        "seed {seed}: caught at minute {at}, the step began at {step_from}"
    );
    // One clear: the last alert about anomalies has none, after the step ended.
    let log = alerts.lock().unwrap();
    let cleared = log
        .iter()
        .filter(|(m, a)| *m > *at && a.is_empty())
        .map(|(m, _)| *m)
        .next();
    assert!(
        cleared.is_some_and(|m| m >= step_to),
        "seed {seed}: {cleared:?}"
    );
}
