//! The built-in price table.
//!
//! Source: LiteLLM's price list, repository github.com/BerriAI/litellm, file
//! `model_prices_and_context_window.json`, commit 00035b69f416be24e2e323c13198d9b7d2d1bdf9
//! (committed in July 2026, between the 15th and the 22nd). Each entry names the LiteLLM key
//! its prices come from; Google models take the Gemini API's prices (`gemini/…` keys).
//!
//! Literals are pico-USD per token: USD per million tokens = literal / 1e6 (`2_500_000` is
//! $2.50 per million tokens).

use super::{ModelPrice, TierPrice};

/// When the prices were taken: the month of the LiteLLM commit above.
pub(super) const TAKEN: &str = "2026-07";

/// A model priced at input, output and cache-read rates only (OpenAI, Google).
const fn basic(input: u64, output: u64, cache_read: Option<u64>) -> ModelPrice {
    ModelPrice {
        input,
        output,
        cache_read,
        cache_write: None,
        cache_write_1h: None,
        reasoning: None,
        above_200k: None,
    }
}

/// An Anthropic model: cache reads, 5-minute and 1-hour cache writes.
const fn anthropic(
    input: u64,
    output: u64,
    cache_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
) -> ModelPrice {
    ModelPrice {
        input,
        output,
        cache_read: Some(cache_read),
        cache_write: Some(cache_write),
        cache_write_1h: Some(cache_write_1h),
        reasoning: None,
        above_200k: None,
    }
}

/// Sonnet 4 and 4.5: the Anthropic rates plus the long-context tier above 200k input tokens.
const SONNET_4: ModelPrice = ModelPrice {
    above_200k: Some(TierPrice {
        input: 6_000_000,
        output: 22_500_000,
        cache_read: Some(600_000),
    }),
    ..anthropic(3_000_000, 15_000_000, 300_000, 3_750_000, 6_000_000)
};

/// Claude 3.5 Haiku. LiteLLM's file no longer has an Anthropic API entry for it: the rates are
/// those of its entry `bedrock/us.anthropic.claude-3-5-haiku-20241022-v1:0`, which match
/// Anthropic's ($0.80 input, $4 output, $1 cache write, $0.08 cache read), and the 1-hour
/// cache write is Anthropic's published rule of twice the input price ($1.60).
const CLAUDE_3_5_HAIKU: ModelPrice = anthropic(800_000, 4_000_000, 80_000, 1_000_000, 1_600_000);

/// The built-in models, by the name a request gives (dated snapshots resolve to these). Each
/// takes the prices of the LiteLLM entry of the same name unless a comment names another.
pub(super) const MODELS: &[(&str, ModelPrice)] = &[
    // OpenAI: input, output, cache read (no reasoning price: reasoning is billed as output).
    ("gpt-4o", basic(2_500_000, 10_000_000, Some(1_250_000))),
    ("gpt-4o-2024-05-13", basic(5_000_000, 15_000_000, None)),
    ("gpt-4o-mini", basic(150_000, 600_000, Some(75_000))),
    ("gpt-4.1", basic(2_000_000, 8_000_000, Some(500_000))),
    ("gpt-4.1-mini", basic(400_000, 1_600_000, Some(100_000))),
    ("gpt-4.1-nano", basic(100_000, 400_000, Some(25_000))),
    ("gpt-5", basic(1_250_000, 10_000_000, Some(125_000))),
    ("gpt-5-mini", basic(250_000, 2_000_000, Some(25_000))),
    ("gpt-5-nano", basic(50_000, 400_000, Some(5_000))),
    ("gpt-5.1", basic(1_250_000, 10_000_000, Some(125_000))),
    ("gpt-5.2", basic(1_750_000, 14_000_000, Some(175_000))),
    ("o3", basic(2_000_000, 8_000_000, Some(500_000))),
    ("o3-mini", basic(1_100_000, 4_400_000, Some(550_000))),
    ("o4-mini", basic(1_100_000, 4_400_000, Some(275_000))),
    // Anthropic: input, output, cache read, 5-minute cache write, 1-hour cache write.
    ("claude-sonnet-4-5", SONNET_4),
    ("claude-sonnet-4", SONNET_4), // claude-sonnet-4-20250514
    (
        "claude-sonnet-4-6", // no long-context tier in LiteLLM's entry
        anthropic(3_000_000, 15_000_000, 300_000, 3_750_000, 6_000_000),
    ),
    (
        "claude-opus-4-1",
        anthropic(15_000_000, 75_000_000, 1_500_000, 18_750_000, 30_000_000),
    ),
    (
        "claude-opus-4-5",
        anthropic(5_000_000, 25_000_000, 500_000, 6_250_000, 10_000_000),
    ),
    (
        "claude-opus-4-6",
        anthropic(5_000_000, 25_000_000, 500_000, 6_250_000, 10_000_000),
    ),
    (
        "claude-opus-4-7",
        anthropic(5_000_000, 25_000_000, 500_000, 6_250_000, 10_000_000),
    ),
    (
        "claude-haiku-4-5",
        anthropic(1_000_000, 5_000_000, 100_000, 1_250_000, 2_000_000),
    ),
    ("claude-3-5-haiku", CLAUDE_3_5_HAIKU), // see CLAUDE_3_5_HAIKU
    ("claude-3-5-haiku-latest", CLAUDE_3_5_HAIKU),
    // Google, Gemini API: input, output, cache read; reasoning (thinking) at the output price.
    (
        "gemini-2.5-pro", // gemini/gemini-2.5-pro, with its tier above 200k prompt tokens
        ModelPrice {
            above_200k: Some(TierPrice {
                input: 2_500_000,
                output: 15_000_000,
                cache_read: Some(250_000),
            }),
            ..basic(1_250_000, 10_000_000, Some(125_000))
        },
    ),
    (
        "gemini-2.5-flash", // gemini/gemini-2.5-flash
        ModelPrice {
            reasoning: Some(2_500_000),
            ..basic(300_000, 2_500_000, Some(30_000))
        },
    ),
    (
        "gemini-2.5-flash-lite", // gemini/gemini-2.5-flash-lite
        ModelPrice {
            reasoning: Some(400_000),
            ..basic(100_000, 400_000, Some(10_000))
        },
    ),
    ("gemini-2.0-flash", basic(100_000, 400_000, Some(25_000))), // gemini/gemini-2.0-flash
    (
        "gemini-2.0-flash-lite", // gemini/gemini-2.0-flash-lite
        basic(75_000, 300_000, Some(18_750)),
    ),
];
