use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A price file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "tower-stream-monitor-cost-{}-{name}",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("temp file written");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Published prices in USD per million tokens, written as micro-USD per million tokens (so
/// $0.275 is 275_000): tokens × this figure is the cost in pico-USD, since
/// 10⁻⁶ USD / 10⁶ tokens = 10⁻¹² USD per token.
struct Published {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
    reasoning: u64,
}

/// The providers' published prices of the fixtures' models, independent of the table.
fn published(model: &str) -> Published {
    match model {
        // OpenAI: $0.15 in, $0.60 out, $0.075 cached in; reasoning billed as output.
        "gpt-4o-mini-2024-07-18" => Published {
            input: 150_000,
            output: 600_000,
            cache_read: 75_000,
            cache_write: 150_000,
            cache_write_1h: 150_000,
            reasoning: 600_000,
        },
        // $2 in, $8 out, $0.50 cached in.
        "gpt-4.1-2025-04-14" => Published {
            input: 2_000_000,
            output: 8_000_000,
            cache_read: 500_000,
            cache_write: 2_000_000,
            cache_write_1h: 2_000_000,
            reasoning: 8_000_000,
        },
        // $1.10 in, $4.40 out, $0.275 cached in.
        "o4-mini-2025-04-16" => Published {
            input: 1_100_000,
            output: 4_400_000,
            cache_read: 275_000,
            cache_write: 1_100_000,
            cache_write_1h: 1_100_000,
            reasoning: 4_400_000,
        },
        // Anthropic: $3 in, $15 out, $0.30 cache hits, $3.75 5-minute and $6 1-hour cache
        // writes.
        "claude-sonnet-4-5-20250929" => Published {
            input: 3_000_000,
            output: 15_000_000,
            cache_read: 300_000,
            cache_write: 3_750_000,
            cache_write_1h: 6_000_000,
            reasoning: 15_000_000,
        },
        // Google: $0.30 in, $2.50 out (thinking included), $0.03 context caching.
        "gemini-2.5-flash" => Published {
            input: 300_000,
            output: 2_500_000,
            cache_read: 30_000,
            cache_write: 300_000,
            cache_write_1h: 300_000,
            reasoning: 2_500_000,
        },
        other => panic!("no published prices written for {other}"),
    }
}

/// The six token figures of a fixture's `.expected.json` (`null` is 0) and its model: `None`
/// for a stream that names none (Cohere's), which the request's model label prices instead.
fn expected_usage(path: &Path) -> (Option<String>, TokenUsage) {
    let text = std::fs::read_to_string(path).expect("readable fixture");
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    let figure = |key: &str| match &json[key] {
        serde_json::Value::Null => 0,
        value => value.as_u64().expect("a token count"),
    };
    let usage = TokenUsage {
        input_tokens: figure("input_tokens"),
        output_tokens: figure("output_tokens"),
        cache_read_input_tokens: figure("cache_read_input_tokens"),
        cache_creation_input_tokens: figure("cache_creation_input_tokens"),
        cache_creation_1h_input_tokens: figure("cache_creation_1h_input_tokens"),
        reasoning_output_tokens: figure("reasoning_output_tokens"),
    };
    (json["model"].as_str().map(str::to_owned), usage)
}

#[test]
fn every_fixture_costs_what_the_published_prices_say() {
    // The totals worked out by hand, in USD: Σ tokens × USD per million / 10⁶.
    let by_hand: &[(&str, &str, u64)] = &[
        // 21 × 3 + 2048 × 0.30 + 188 × 3.75 + 16 × 15 = 1622.4
        ("anthropic-cache", "$0.0016224", 1_622_400_000),
        // 14 × 3 + 1024 × 3.75 + 2048 × 6 + 9 × 15 = 16305
        ("anthropic-cache-1h", "$0.016305", 16_305_000_000),
        // 472 × 3 + 20 × 15 = 1716
        ("anthropic-messages", "$0.001716", 1_716_000_000),
        // 100 × 3 + 3 × 15 = 345
        ("anthropic-overloaded", "$0.000345", 345_000_000),
        // 262 × 0.30 + 2048 × 0.03 + 9 × 2.50 + 120 × 2.50 = 462.54
        ("gemini-thinking", "$0.00046254", 462_540_000),
        // 11 × 0.30 + 18 × 2.50 = 48.3
        ("gemini", "$0.0000483", 48_300_000),
        // 5 × 0.60 = 3 (no input figure: a stream error before usage)
        ("openai-chat-error", "$0.000003", 3_000_000),
        // 17 × 0.60 = 10.2
        ("openai-chat-no-usage", "$0.0000102", 10_200_000),
        // 96 × 1.10 + 16 × 4.40 + 240 × 4.40 = 1232
        ("openai-chat-reasoning", "$0.001232", 1_232_000_000),
        // 286 × 2 + 1024 × 0.50 + 24 × 8 = 1276
        ("openai-chat-tool-calls", "$0.001276", 1_276_000_000),
        // 24 × 0.15 + 18 × 0.60 = 14.4
        ("openai-chat", "$0.0000144", 14_400_000),
        // 163 × 1.10 + 1024 × 0.275 + 16 × 4.40 + 112 × 4.40 = 1024.1
        ("openai-responses-incomplete", "$0.0010241", 1_024_100_000),
        // 37 × 2 + 19 × 8 = 226
        ("openai-responses", "$0.000226", 226_000_000),
    ];
    let table = PriceTable::builtin();
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(fixtures()).expect("fixtures dir") {
        let path = entry.expect("dir entry").path();
        let Some(name) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_suffix(".expected.json"))
        else {
            continue;
        };
        let (Some(model), usage) = expected_usage(&path) else {
            continue;
        };
        let p = published(&model);
        let uncached =
            usage.input_tokens - usage.cache_read_input_tokens - usage.cache_creation_input_tokens;
        let visible = usage.output_tokens - usage.reasoning_output_tokens;
        let writes_5m = usage.cache_creation_input_tokens - usage.cache_creation_1h_input_tokens;
        let hand = uncached * p.input
            + usage.cache_read_input_tokens * p.cache_read
            + writes_5m * p.cache_write
            + usage.cache_creation_1h_input_tokens * p.cache_write_1h
            + visible * p.output
            + usage.reasoning_output_tokens * p.reasoning;

        let cost = table.cost(&model, &usage).expect("fixture model priced");
        assert_eq!(cost.picodollars(), hand, "{name} ({model})");
        let &(_, usd, pico) = by_hand
            .iter()
            .find(|(fixture, _, _)| *fixture == name)
            .unwrap_or_else(|| panic!("no hand total for {name}"));
        assert_eq!(cost, Cost::from_picodollars(pico), "{name}");
        assert_eq!(cost.to_string(), usd, "{name}");
        seen.push(name.to_owned());
    }
    assert_eq!(seen.len(), by_hand.len(), "fixtures seen: {seen:?}");
}

#[test]
fn fixture_and_demo_models_resolve() {
    let table = PriceTable::builtin();
    for entry in std::fs::read_dir(fixtures()).expect("fixtures dir") {
        let path = entry.expect("dir entry").path();
        if path.to_string_lossy().ends_with(".expected.json") {
            if let (Some(model), _) = expected_usage(&path) {
                assert!(table.price(&model).is_some(), "{model}");
            }
        }
    }
    // The demo's served models (examples/demo/sim.rs).
    for model in [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "o3",
        "o3-mini",
        "o4-mini",
        "claude-sonnet-4-5",
        "claude-sonnet-4-20250514",
        "claude-opus-4-1",
        "claude-haiku-4-5",
        "claude-3-5-haiku-latest",
        "claude-3-5-haiku-20241022",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
    ] {
        assert!(table.price(model).is_some(), "{model}");
    }
}

#[test]
fn builtin_table_is_sound() {
    let table = PriceTable::builtin();
    assert_eq!(table.len(), builtin::MODELS.len(), "no duplicate names");
    assert_eq!(table.taken(), Some("2026-07"));
    assert_eq!(table.skipped(), 0);
    for (name, price) in table.iter() {
        assert!(price.input > 0 && price.output > 0, "{name}");
        assert!(
            price.cache_read.is_none_or(|read| read < price.input),
            "{name}"
        );
        if let (Some(write), Some(write_1h)) = (price.cache_write, price.cache_write_1h) {
            // Anthropic: 1.25× and 2× the input price.
            assert_eq!(write * 4, price.input * 5, "{name}");
            assert_eq!(write_1h, price.input * 2, "{name}");
        }
        if let Some(tier) = &price.above_200k {
            assert!(
                tier.input > price.input && tier.output > price.output,
                "{name}"
            );
            // Anthropic's long-context writes: 1.25× and 2× the tier's input price.
            if let Some(write) = tier.cache_write {
                assert_eq!(write * 4, tier.input * 5, "{name}");
            }
            if let Some(write_1h) = tier.cache_write_1h {
                assert_eq!(write_1h, tier.input * 2, "{name}");
            }
        }
    }
}

#[test]
fn cache_reads_and_writes_have_their_own_rates() {
    let table = PriceTable::builtin();
    let reads_only = TokenUsage {
        input_tokens: 10_000,
        cache_read_input_tokens: 10_000,
        ..TokenUsage::default()
    };
    // gpt-4o: $1.25 per million cached input tokens.
    assert_eq!(
        table.cost("gpt-4o", &reads_only),
        Some(Cost::from_picodollars(10_000 * 1_250_000))
    );
    let writes_only = TokenUsage {
        input_tokens: 10_000,
        cache_creation_input_tokens: 10_000,
        ..TokenUsage::default()
    };
    // claude-haiku-4-5: $1.25 per million tokens written (5-minute cache), not the 1-hour $2.
    assert_eq!(
        table.cost("claude-haiku-4-5", &writes_only),
        Some(Cost::from_picodollars(10_000 * 1_250_000))
    );
    // A model without cache prices bills cache reads and writes as input.
    assert_eq!(
        table.cost("gpt-4o-2024-05-13", &reads_only),
        Some(Cost::from_picodollars(10_000 * 5_000_000))
    );
    assert_eq!(
        table.cost("gpt-4o", &writes_only),
        Some(Cost::from_picodollars(10_000 * 2_500_000))
    );
}

#[test]
fn reasoning_has_its_own_rate_when_the_model_has_one() {
    let price = ModelPrice {
        input: 1_000_000,
        output: 4_000_000,
        cache_read: None,
        cache_write: None,
        cache_write_1h: None,
        reasoning: Some(3_500_000),
        above_200k: None,
    };
    let usage = TokenUsage {
        input_tokens: 100,
        output_tokens: 1_000,
        reasoning_output_tokens: 900,
        ..TokenUsage::default()
    };
    assert_eq!(
        price.cost(&usage).picodollars(),
        100 * 1_000_000 + 100 * 4_000_000 + 900 * 3_500_000
    );
    let without = ModelPrice {
        reasoning: None,
        ..price
    };
    assert_eq!(
        without.cost(&usage).picodollars(),
        100 * 1_000_000 + 1_000 * 4_000_000
    );
}

#[test]
fn one_hour_cache_writes_have_their_own_rate() {
    // $3 in, $15 out, $0.30 cache reads, $3.75 5-minute and $6 1-hour cache writes.
    let price = ModelPrice {
        input: 3_000_000,
        output: 15_000_000,
        cache_read: Some(300_000),
        cache_write: Some(3_750_000),
        cache_write_1h: Some(6_000_000),
        reasoning: None,
        above_200k: None,
    };
    let usage = TokenUsage {
        input_tokens: 10_000,
        cache_read_input_tokens: 5_000,
        cache_creation_input_tokens: 3_000,
        cache_creation_1h_input_tokens: 1_000,
        output_tokens: 100,
        ..TokenUsage::default()
    };
    // 2000 × 3 + 5000 × 0.30 + 2000 × 3.75 + 1000 × 6 + 100 × 15 = 22 500 micro-USD.
    let cost = price.cost(&usage);
    assert_eq!(cost.picodollars(), 22_500_000_000);
    assert_eq!(cost.to_string(), "$0.0225");
    // The same writes all for 5 minutes cost 1000 × (6 - 3.75) = 2 250 micro-USD less.
    let all_5m = TokenUsage {
        cache_creation_1h_input_tokens: 0,
        ..usage
    };
    assert_eq!(price.cost(&all_5m).picodollars(), 20_250_000_000);
    // A 1-hour figure above the writes' total counts as all of them, never more.
    let too_many = TokenUsage {
        cache_creation_1h_input_tokens: 9_000,
        ..usage
    };
    assert_eq!(
        price.cost(&too_many).picodollars(),
        2_000 * 3_000_000 + 5_000 * 300_000 + 3_000 * 6_000_000 + 100 * 15_000_000
    );
    // Without a 1-hour price, 1-hour writes are priced as 5-minute ones.
    let no_1h = ModelPrice {
        cache_write_1h: None,
        ..price.clone()
    };
    assert_eq!(no_1h.cost(&usage).picodollars(), 20_250_000_000);
    // The built-in claude-haiku-4-5: $1.25 5-minute, $2 1-hour writes.
    let writes = TokenUsage {
        input_tokens: 10_000,
        cache_creation_input_tokens: 10_000,
        cache_creation_1h_input_tokens: 4_000,
        ..TokenUsage::default()
    };
    assert_eq!(
        PriceTable::builtin().cost("claude-haiku-4-5", &writes),
        Some(Cost::from_picodollars(
            6_000 * 1_250_000 + 4_000 * 2_000_000
        ))
    );
}

#[test]
fn the_long_prompt_tier_starts_above_200k_input_tokens() {
    let table = PriceTable::builtin();
    let usage = |input_tokens| TokenUsage {
        input_tokens,
        cache_read_input_tokens: 50_000,
        output_tokens: 1_000,
        ..TokenUsage::default()
    };
    // gemini-2.5-pro: $1.25 / $10 / $0.125 cached; above 200k: $2.50 / $15 / $0.25 cached.
    assert_eq!(
        table.cost("gemini-2.5-pro", &usage(200_000)),
        Some(Cost::from_picodollars(
            150_000 * 1_250_000 + 50_000 * 125_000 + 1_000 * 10_000_000
        ))
    );
    assert_eq!(
        table.cost("gemini-2.5-pro", &usage(200_001)),
        Some(Cost::from_picodollars(
            150_001 * 2_500_000 + 50_000 * 250_000 + 1_000 * 15_000_000
        ))
    );
    // A tier without a cache-read price keeps the model's own.
    let price = ModelPrice {
        input: 1_000,
        output: 2_000,
        cache_read: Some(100),
        cache_write: None,
        cache_write_1h: None,
        reasoning: None,
        above_200k: Some(TierPrice {
            input: 3_000,
            output: 4_000,
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
        }),
    };
    assert_eq!(
        price.cost(&usage(300_000)).picodollars(),
        250_000 * 3_000 + 50_000 * 100 + 1_000 * 4_000
    );
    // Cache writes above 200k take the tier's write prices; a tier without them, the model's.
    let writes = |input_tokens| TokenUsage {
        input_tokens,
        cache_read_input_tokens: 50_000,
        cache_creation_input_tokens: 30_000,
        cache_creation_1h_input_tokens: 10_000,
        output_tokens: 1_000,
        ..TokenUsage::default()
    };
    let anthropic_like = ModelPrice {
        input: 1_000,
        output: 2_000,
        cache_read: Some(100),
        cache_write: Some(1_250),
        cache_write_1h: Some(2_000),
        reasoning: None,
        above_200k: Some(TierPrice {
            input: 3_000,
            output: 4_000,
            cache_read: Some(300),
            cache_write: Some(3_750),
            cache_write_1h: Some(6_000),
        }),
    };
    assert_eq!(
        anthropic_like.cost(&writes(200_000)).picodollars(),
        120_000 * 1_000 + 50_000 * 100 + 20_000 * 1_250 + 10_000 * 2_000 + 1_000 * 2_000
    );
    assert_eq!(
        anthropic_like.cost(&writes(300_000)).picodollars(),
        220_000 * 3_000 + 50_000 * 300 + 20_000 * 3_750 + 10_000 * 6_000 + 1_000 * 4_000
    );
    let tier_without_writes = ModelPrice {
        above_200k: Some(TierPrice {
            cache_write: None,
            cache_write_1h: None,
            ..anthropic_like.above_200k.clone().expect("a tier")
        }),
        ..anthropic_like.clone()
    };
    assert_eq!(
        tier_without_writes.cost(&writes(300_000)).picodollars(),
        220_000 * 3_000 + 50_000 * 300 + 20_000 * 1_250 + 10_000 * 2_000 + 1_000 * 4_000
    );
    // The built-in Sonnets have both long-context write prices ($7.50 and $12 per million):
    // LiteLLM's Sonnet 4 entry has only the 5-minute one, and its 1-hour writes at the base $6
    // would cost less than 5-minute ones.
    let sonnet =
        |writes_1h: u64| 220_000 * 6_000_000 + 50_000 * 600_000 + 20_000 * 7_500_000 + writes_1h;
    assert_eq!(
        table.cost("claude-sonnet-4-5", &writes(300_000)),
        Some(Cost::from_picodollars(
            sonnet(10_000 * 12_000_000) + 1_000 * 22_500_000
        ))
    );
    assert_eq!(
        table.cost("claude-sonnet-4-20250514", &writes(300_000)),
        Some(Cost::from_picodollars(
            sonnet(10_000 * 12_000_000) + 1_000 * 22_500_000
        ))
    );
    // No tier: the base prices at any size.
    assert_eq!(
        table.cost("gpt-4.1", &usage(900_000)),
        Some(Cost::from_picodollars(
            850_000 * 2_000_000 + 50_000 * 500_000 + 1_000 * 8_000_000
        ))
    );
}

#[test]
fn gemini_3_models_resolve_with_their_prices() {
    let table = PriceTable::builtin();
    let usage = |input_tokens| TokenUsage {
        input_tokens,
        cache_read_input_tokens: 10_000,
        output_tokens: 2_000,
        reasoning_output_tokens: 1_500,
        ..TokenUsage::default()
    };
    // LiteLLM's gemini/gemini-3-pro-preview and gemini/gemini-3.1-pro-preview: $2 in, $12 out,
    // $0.20 cached; above 200k prompt tokens $4, $18, $0.40. Thinking is billed as output.
    for name in [
        "gemini-3-pro-preview",
        "gemini/gemini-3-pro-preview",
        "models/gemini-3-pro-preview",
        "gemini-3.1-pro-preview",
        "gemini/gemini-3.1-pro-preview",
    ] {
        assert_eq!(
            table.cost(name, &usage(100_000)),
            Some(Cost::from_picodollars(
                90_000 * 2_000_000 + 10_000 * 200_000 + 2_000 * 12_000_000
            )),
            "{name}"
        );
        assert_eq!(
            table.cost(name, &usage(250_000)),
            Some(Cost::from_picodollars(
                240_000 * 4_000_000 + 10_000 * 400_000 + 2_000 * 18_000_000
            )),
            "{name}"
        );
    }
    // Flash models, each with a thinking price of its own (equal to its output price) and no
    // long-prompt tier: (input, output, cached, thinking) in USD per million tokens × 10⁶.
    for (name, [input, output, cached, thinking]) in [
        (
            "gemini-3-flash-preview",
            [500_000, 3_000_000, 50_000, 3_000_000],
        ),
        (
            "gemini-3.1-flash-lite",
            [250_000, 1_500_000, 25_000, 1_500_000],
        ),
        (
            "gemini-3.1-flash-lite-preview",
            [250_000, 1_500_000, 25_000, 1_500_000],
        ),
        (
            "gemini-3.5-flash",
            [1_500_000, 9_000_000, 150_000, 9_000_000],
        ),
    ] {
        let prefixed = format!("gemini/{name}");
        assert_eq!(table.price(&prefixed), table.price(name), "{name}");
        assert_eq!(
            table.cost(name, &usage(250_000)),
            Some(Cost::from_picodollars(
                240_000 * input + 10_000 * cached + 500 * output + 1_500 * thinking
            )),
            "{name}"
        );
    }
}

#[test]
fn names_resolve_without_prefix_or_date_and_unknown_models_are_unpriced() {
    let table = PriceTable::builtin();
    let usage = TokenUsage {
        input_tokens: 10,
        output_tokens: 10,
        ..TokenUsage::default()
    };
    assert_eq!(table.cost("my-fine-tune", &usage), None);
    assert_eq!(table.price("gpt-4o-mini-2024-13-18"), None, "not a date");
    assert_eq!(table.price("gpt"), None);
    assert_eq!(table.price(""), None);
    let mini = table.price("gpt-4o-mini");
    assert!(mini.is_some());
    for name in [
        "gpt-4o-mini-2024-07-18",
        "openai/gpt-4o-mini",
        "openai/gpt-4o-mini-2024-07-18",
    ] {
        assert_eq!(table.price(name), mini, "{name}");
    }
    assert_eq!(
        table.price("anthropic/claude-sonnet-4-5-20250929"),
        table.price("claude-sonnet-4-5")
    );
    assert_eq!(
        table.price("models/gemini-2.5-flash"),
        table.price("gemini-2.5-flash")
    );
    assert_eq!(
        table.price("gemini/gemini-2.5-pro"),
        table.price("gemini-2.5-pro")
    );
    // A dated snapshot with prices of its own keeps them.
    assert_eq!(
        table.price("gpt-4o-2024-05-13").map(|p| p.input),
        Some(5_000_000)
    );
    assert_eq!(
        table.price("gpt-4o-2024-08-06").map(|p| p.input),
        Some(2_500_000)
    );

    assert_eq!(without_date_suffix("gpt-4-0613"), Some("gpt-4"));
    assert_eq!(without_date_suffix("gpt-4o-2024-07-18"), Some("gpt-4o"));
    assert_eq!(
        without_date_suffix("claude-opus-4-1-20250805"),
        Some("claude-opus-4-1")
    );
    assert_eq!(without_date_suffix("claude-opus-4-1"), None);
    assert_eq!(without_date_suffix("gemini-2.0-flash-001"), None);
    assert_eq!(without_date_suffix("qwen3-coder-2507"), None, "month 25");
    assert_eq!(
        without_date_suffix("-0613"),
        None,
        "nothing before the date"
    );
    assert_eq!(without_date_suffix("ü-0613"), Some("ü"));
    assert_eq!(without_provider_prefix("gemini/models/x"), "x");
    assert_eq!(without_provider_prefix("openai/"), "openai/");
}

#[test]
fn the_litellm_excerpt_loads_and_prices() {
    let path = fixtures().join("litellm-prices-excerpt.json");
    let table = PriceTable::load(&path).expect("the excerpt loads");
    // sample_spec, an image model and an embedding model without an output price are skipped.
    assert_eq!(table.skipped(), 3);
    assert_eq!(table.len(), 5);
    assert_eq!(table.taken(), None);
    assert_eq!(table.price("sample_spec"), None);
    assert_eq!(table.price("256-x-256/dall-e-2"), None);
    assert_eq!(
        table.price("oci/cohere.embed-multilingual-image-v3.0"),
        None
    );

    let sonnet = table.price("claude-sonnet-4-5-20250929").expect("loaded");
    assert_eq!(
        sonnet,
        &ModelPrice {
            input: 3_000_000,
            output: 15_000_000,
            cache_read: Some(300_000),
            cache_write: Some(3_750_000),
            cache_write_1h: Some(6_000_000),
            reasoning: None,
            above_200k: Some(TierPrice {
                input: 6_000_000,
                output: 22_500_000,
                cache_read: Some(600_000),
                cache_write: Some(7_500_000),
                cache_write_1h: Some(12_000_000),
            }),
        }
    );
    // The anthropic-cache fixture's usage, priced from the excerpt.
    let (model, usage) = expected_usage(&fixtures().join("anthropic-cache.expected.json"));
    let model = model.expect("the fixture names its model");
    assert_eq!(
        table.cost(&model, &usage),
        Some(Cost::from_picodollars(1_622_400_000))
    );

    // The excerpt and the built-in table agree.
    let builtin = PriceTable::builtin();
    for name in [
        "claude-sonnet-4-5-20250929",
        "gemini/gemini-2.5-flash",
        "gemini/gemini-2.5-pro",
        "gpt-4o-mini-2024-07-18",
        "o4-mini-2025-04-16",
    ] {
        assert_eq!(table.price(name), builtin.price(name), "{name}");
    }
}

#[test]
fn litellm_tiers_and_nulls() {
    let table = PriceTable::from_litellm_json(
        r#"{
            "partial-tier": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                             "output_cost_per_token_above_200k_tokens": 3e-06},
            "write-tier": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                           "cache_creation_input_token_cost_above_200k_tokens": 2.5e-06,
                           "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 4e-06},
            "nulls": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                      "cache_read_input_token_cost": null},
            "no-output": {"input_cost_per_token": 1e-06, "output_cost_per_token": null},
            "not-an-object": 3
        }"#,
    )
    .expect("valid");
    assert_eq!(table.len(), 3);
    assert_eq!(table.skipped(), 2);
    assert_eq!(
        table
            .price("partial-tier")
            .and_then(|p| p.above_200k.clone()),
        Some(TierPrice {
            input: 1_000_000,
            output: 3_000_000,
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
        })
    );
    // Cache-write prices alone make a tier, its input and output the base ones.
    assert_eq!(
        table.price("write-tier").and_then(|p| p.above_200k.clone()),
        Some(TierPrice {
            input: 1_000_000,
            output: 2_000_000,
            cache_read: None,
            cache_write: Some(2_500_000),
            cache_write_1h: Some(4_000_000),
        })
    );
    assert_eq!(table.price("nulls").and_then(|p| p.cache_read), None);
}

#[test]
fn native_files_convert_per_million_prices() {
    let table = PriceTable::from_native_json(
        r#"{"taken": "2026-11-01", "models": {"my-model": {
            "input": 0.15, "output": 0.6, "cache_read": 0.075, "cache_write": 0.1875,
            "cache_write_1h": 0.3, "reasoning": 0.6,
            "above_200k": {"input": 0.3, "output": 1.2, "cache_write": 0.375,
                           "cache_write_1h": 0.6}}}}"#,
    )
    .expect("valid");
    assert_eq!(table.taken(), Some("2026-11-01"));
    assert_eq!(
        table.price("my-model"),
        Some(&ModelPrice {
            input: 150_000,
            output: 600_000,
            cache_read: Some(75_000),
            cache_write: Some(187_500),
            cache_write_1h: Some(300_000),
            reasoning: Some(600_000),
            above_200k: Some(TierPrice {
                input: 300_000,
                output: 1_200_000,
                cache_read: None,
                cache_write: Some(375_000),
                cache_write_1h: Some(600_000),
            }),
        })
    );
    let file = TempFile::new(
        "native.json",
        br#"{"models": {"x": {"input": 1, "output": 2}}}"#,
    );
    let loaded = PriceTable::load(&file.0).expect("native file loads");
    assert_eq!(loaded.price("x").map(|p| p.output), Some(2_000_000));
    assert_eq!(loaded.taken(), None);
}

#[test]
fn merged_overrides_win() {
    let mine = PriceTable::from_native_json(
        r#"{"taken": "2026-12-01", "models": {
            "gpt-4o": {"input": 2, "output": 8}, "my-model": {"input": 1, "output": 1}}}"#,
    )
    .expect("valid");
    let builtin_len = PriceTable::builtin().len();
    let table = PriceTable::builtin().merged(mine);
    assert_eq!(table.len(), builtin_len + 1);
    assert_eq!(table.price("gpt-4o").map(|p| p.input), Some(2_000_000));
    assert_eq!(table.price("gpt-4o").and_then(|p| p.cache_read), None);
    assert_eq!(table.price("gpt-4o-mini").map(|p| p.input), Some(150_000));
    assert_eq!(table.taken(), Some("2026-12-01"));
    let undated = PriceTable::builtin().merged(PriceTable::empty());
    assert_eq!(undated.taken(), Some("2026-07"));
    assert!(PriceTable::empty().is_empty());
}

#[test]
fn malformed_files_name_the_file_and_the_entry() {
    let cases: &[(&str, &[u8], Option<&str>, &str)] = &[
        ("not-json.json", b"{\"gpt-4o\": {", None, "not JSON"),
        ("array.json", b"[1, 2]", None, "not a JSON object"),
        (
            "string-price.json",
            br#"{"gpt-4o": {"input_cost_per_token": "2.5e-06", "output_cost_per_token": 1e-05}}"#,
            Some("gpt-4o"),
            "input_cost_per_token is not a number (\"2.5e-06\")",
        ),
        (
            "negative-price.json",
            br#"{"gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": -1e-05}}"#,
            Some("gpt-4o"),
            "output_cost_per_token is negative (-1e-05)",
        ),
        (
            "bad-in-skipped-entry.json",
            br#"{"dall-e": {"input_cost_per_token": [1]}}"#,
            Some("dall-e"),
            "input_cost_per_token is not a number ([1])",
        ),
        (
            "native-unknown-key.json",
            br#"{"models": {"my-model": {"input": 1, "output": 2, "cache_reed": 0.5}}}"#,
            Some("my-model"),
            "unknown key \"cache_reed\"",
        ),
        (
            "native-unknown-tier-key.json",
            br#"{"models": {"m": {"input": 1, "output": 2, "above_200k": {"input": 2, "outptu": 3}}}}"#,
            Some("m"),
            "unknown key \"above_200k.outptu\"",
        ),
        (
            "native-missing-output.json",
            br#"{"models": {"m": {"input": 1}}}"#,
            Some("m"),
            "output is missing",
        ),
        (
            "native-string-tier-price.json",
            br#"{"models": {"m": {"input": 1, "output": 2, "above_200k": {"input": "2", "output": 3}}}}"#,
            Some("m"),
            "above_200k.input is not a number (\"2\")",
        ),
        (
            "native-unknown-top-key.json",
            br#"{"taken": "2026-01-01", "modles": {}, "models": {}}"#,
            None,
            "unknown key \"modles\"",
        ),
        ("not-utf8.json", b"{\"\xff\": 1}", None, "cannot read it"),
    ];
    for &(name, text, entry, reason) in cases {
        let file = TempFile::new(name, text);
        let error = PriceTable::load(&file.0).expect_err(name);
        assert_eq!(error.file.as_deref(), Some(file.0.as_path()), "{name}");
        assert_eq!(error.entry.as_deref(), entry, "{name}");
        assert!(error.reason.starts_with(reason), "{name}: {}", error.reason);
        let shown = error.to_string();
        assert!(
            shown.starts_with(&format!("prices file {}", file.0.display())),
            "{shown}"
        );
        if let Some(entry) = entry {
            assert!(shown.contains(&format!(", entry \"{entry}\": ")), "{shown}");
        }
        assert!(shown.ends_with(&error.reason), "{shown}");
    }
    let missing = fixtures().join("no-such-prices.json");
    let error = PriceTable::load(&missing).expect_err("missing file");
    assert!(
        error.to_string().starts_with(&format!(
            "prices file {}: cannot read it",
            missing.display()
        )),
        "{error}"
    );
}

#[test]
fn price_error_display() {
    let error = PriceError {
        file: Some(PathBuf::from("/x/p.json")),
        entry: Some("gpt-4o".to_owned()),
        reason: "input_cost_per_token is not a number".to_owned(),
    };
    assert_eq!(
        error.to_string(),
        "prices file /x/p.json, entry \"gpt-4o\": input_cost_per_token is not a number"
    );
    let bare = PriceError {
        file: None,
        entry: None,
        reason: "not a JSON object".to_owned(),
    };
    assert_eq!(bare.to_string(), "prices: not a JSON object");
}

#[test]
fn cost_arithmetic_saturates_and_displays() {
    assert_eq!(Cost::ZERO.to_string(), "$0");
    assert_eq!(Cost::from_picodollars(1).to_string(), "$0.000000000001");
    assert_eq!(
        Cost::from_picodollars(12_500_000_000_000).to_string(),
        "$12.5"
    );
    assert_eq!(Cost::from_picodollars(2_000_000_000_000).to_string(), "$2");
    assert_eq!(Cost::from_picodollars(1_622_400_000).usd(), 0.0016224);
    assert_eq!(
        Cost::from_picodollars(u64::MAX).saturating_add(Cost::from_picodollars(1)),
        Cost::from_picodollars(u64::MAX)
    );
    let huge = TokenUsage {
        input_tokens: u64::MAX,
        output_tokens: u64::MAX,
        cache_read_input_tokens: u64::MAX / 2,
        cache_creation_input_tokens: u64::MAX / 2,
        cache_creation_1h_input_tokens: u64::MAX / 4,
        reasoning_output_tokens: 1,
    };
    let table = PriceTable::builtin();
    assert_eq!(
        table.cost("claude-opus-4-1", &huge),
        Some(Cost::from_picodollars(u64::MAX))
    );
    // Inconsistent figures (parts above the whole) clamp the remainder at 0.
    let odd = TokenUsage {
        input_tokens: 0,
        cache_read_input_tokens: 10,
        output_tokens: 1,
        reasoning_output_tokens: 5,
        ..TokenUsage::default()
    };
    assert_eq!(
        table.cost("gpt-4o", &odd),
        Some(Cost::from_picodollars(10 * 1_250_000 + 5 * 10_000_000))
    );
}

/// A JSON scalar of any kind, as text.
fn json_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::Number::from_f64(f)
                .map_or_else(|| "0".to_owned(), |n| n.to_string())),
        "[0-9]{1,30}(\\.[0-9]{1,30})?([eE][+-]?[0-9]{1,4})?",
        Just("null".to_owned()),
        Just("true".to_owned()),
        ".{0,8}".prop_map(|s| serde_json::Value::String(s).to_string()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = PriceTable::from_litellm_json(&text);
        let _ = PriceTable::from_native_json(&text);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = PriceTable::from_litellm_json(&text);
        let _ = PriceTable::from_native_json(&text);
    }

    #[test]
    fn arbitrary_price_values_never_panic(
        keys in proptest::collection::vec(
            prop_oneof![
                Just("input_cost_per_token"), Just("output_cost_per_token"),
                Just("cache_read_input_token_cost"), Just("input_cost_per_token_above_200k_tokens"),
                Just("input"), Just("output"), Just("cache_read"), Just("above_200k"),
            ],
            0..6,
        ),
        values in proptest::collection::vec(json_scalar(), 6),
    ) {
        let fields: Vec<String> = keys
            .iter()
            .zip(&values)
            .map(|(key, value)| format!("{key:?}: {value}"))
            .collect();
        let entry = format!("{{{}}}", fields.join(", "));
        let usage = TokenUsage { input_tokens: 300_000, output_tokens: 10, ..TokenUsage::default() };
        if let Ok(table) = PriceTable::from_litellm_json(&format!(r#"{{"m": {entry}}}"#)) {
            let _ = table.cost("m", &usage);
        }
        if let Ok(table) = PriceTable::from_native_json(&format!(r#"{{"models": {{"m": {entry}}}}}"#)) {
            let _ = table.cost("m", &usage);
        }
    }

    #[test]
    fn usd_per_token_text_converts_exactly(pico in any::<u64>(), exponent in -3i32..=3) {
        // pico × 10⁻¹² USD written with 12 decimals, then with its point moved by an exponent.
        let plain = format!("{}.{:012}", pico / 1_000_000_000_000, pico % 1_000_000_000_000);
        let table = PriceTable::from_litellm_json(&format!(
            r#"{{"m": {{"input_cost_per_token": {plain}, "output_cost_per_token": 0}}}}"#
        ));
        prop_assert_eq!(table.ok().and_then(|t| t.price("m").map(|p| p.input)), Some(pico));

        let digits = pico.to_string();
        let scientific = format!("{digits}e{}", exponent - 12);
        let expected = match exponent {
            e if e >= 0 => pico.checked_mul(10u64.pow(e.unsigned_abs())),
            e => {
                let divisor = 10u64.pow(e.unsigned_abs());
                let (whole, rest) = (pico / divisor, pico % divisor);
                Some(whole + u64::from(rest * 2 >= divisor))
            }
        };
        prop_assert_eq!(decimal::scaled(&scientific, decimal::USD_PER_TOKEN).ok(), expected);
    }

    #[test]
    fn costs_are_additive_in_tokens(
        input in 0u64..1_000_000, read in 0u64..1_000_000, write in 0u64..1_000_000,
        write_1h in 0u64..1_000_000, output in 0u64..1_000_000, reasoning in 0u64..1_000_000,
    ) {
        let usage = TokenUsage {
            input_tokens: input + read + write + write_1h,
            cache_read_input_tokens: read,
            cache_creation_input_tokens: write + write_1h,
            cache_creation_1h_input_tokens: write_1h,
            output_tokens: output + reasoning,
            reasoning_output_tokens: reasoning,
        };
        let table = PriceTable::builtin();
        let price = table.price("claude-sonnet-4-5").expect("built in").clone();
        let cost = table.cost("claude-sonnet-4-5", &usage).expect("priced").picodollars();
        // Every price of claude-sonnet-4-5 is set, in its tier too.
        let (i, o, r, w, w1) = match &price.above_200k {
            Some(tier) if usage.input_tokens > LONG_PROMPT_TOKENS => (
                tier.input,
                tier.output,
                tier.cache_read.unwrap_or(0),
                tier.cache_write.unwrap_or(0),
                tier.cache_write_1h.unwrap_or(0),
            ),
            _ => (
                price.input,
                price.output,
                price.cache_read.unwrap_or(0),
                price.cache_write.unwrap_or(0),
                price.cache_write_1h.unwrap_or(0),
            ),
        };
        prop_assert_eq!(
            cost,
            input * i + read * r + write * w + write_1h * w1 + (output + reasoning) * o
        );
    }
}
