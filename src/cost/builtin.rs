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

/// Sonnet 4's tier above 200k input tokens (`claude-sonnet-4-20250514`). LiteLLM's entry has
/// no 1-hour cache-write price there; Anthropic's is twice the tier's input, as Sonnet 4.5's
/// entry has it (the model's own 1-hour rate, $6, would price a 1-hour write below a 5-minute
/// one).
const SONNET_4_TIER: TierPrice = TierPrice {
    input: 6_000_000,
    output: 22_500_000,
    cache_read: Some(600_000),
    cache_write: Some(7_500_000),
    cache_write_1h: Some(12_000_000),
};

/// Sonnet 4.5: the Anthropic rates plus the long-context tier, its 1-hour cache writes
/// included.
const SONNET_4_5: ModelPrice = ModelPrice {
    above_200k: Some(TierPrice {
        cache_write_1h: Some(12_000_000),
        ..SONNET_4_TIER
    }),
    ..anthropic(3_000_000, 15_000_000, 300_000, 3_750_000, 6_000_000)
};

/// Sonnet 4: the rates of Sonnet 4.5, with its own tier.
const SONNET_4: ModelPrice = ModelPrice {
    above_200k: Some(SONNET_4_TIER),
    ..SONNET_4_5
};

/// A Gemini model with a tier above 200k prompt tokens (input, output, cache read): neither
/// tier prices cache writes, which Gemini bills as storage, not per request.
const fn gemini_tiered(base: [u64; 3], above_200k: [u64; 3]) -> ModelPrice {
    ModelPrice {
        above_200k: Some(TierPrice {
            input: above_200k[0],
            output: above_200k[1],
            cache_read: Some(above_200k[2]),
            cache_write: None,
            cache_write_1h: None,
        }),
        ..basic(base[0], base[1], Some(base[2]))
    }
}

/// A Gemini model with a reasoning (thinking) price of its own: input, output, cache read,
/// reasoning.
const fn gemini_thinking(input: u64, output: u64, cache_read: u64, reasoning: u64) -> ModelPrice {
    ModelPrice {
        reasoning: Some(reasoning),
        ..basic(input, output, Some(cache_read))
    }
}

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
    ("claude-sonnet-4-5", SONNET_4_5),
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
        gemini_tiered(
            [1_250_000, 10_000_000, 125_000],
            [2_500_000, 15_000_000, 250_000],
        ),
    ),
    (
        "gemini-2.5-flash", // gemini/gemini-2.5-flash
        gemini_thinking(300_000, 2_500_000, 30_000, 2_500_000),
    ),
    (
        "gemini-2.5-flash-lite", // gemini/gemini-2.5-flash-lite
        gemini_thinking(100_000, 400_000, 10_000, 400_000),
    ),
    ("gemini-2.0-flash", basic(100_000, 400_000, Some(25_000))), // gemini/gemini-2.0-flash
    (
        "gemini-2.0-flash-lite", // gemini/gemini-2.0-flash-lite
        basic(75_000, 300_000, Some(18_750)),
    ),
    (
        "gemini-3-pro-preview", // gemini/gemini-3-pro-preview, with its tier above 200k
        gemini_tiered(
            [2_000_000, 12_000_000, 200_000],
            [4_000_000, 18_000_000, 400_000],
        ),
    ),
    (
        "gemini-3.1-pro-preview", // gemini/gemini-3.1-pro-preview, with its tier above 200k
        gemini_tiered(
            [2_000_000, 12_000_000, 200_000],
            [4_000_000, 18_000_000, 400_000],
        ),
    ),
    (
        "gemini-3-flash-preview", // gemini/gemini-3-flash-preview
        gemini_thinking(500_000, 3_000_000, 50_000, 3_000_000),
    ),
    (
        "gemini-3.1-flash-lite", // gemini/gemini-3.1-flash-lite
        gemini_thinking(250_000, 1_500_000, 25_000, 1_500_000),
    ),
    (
        "gemini-3.1-flash-lite-preview", // gemini/gemini-3.1-flash-lite-preview
        gemini_thinking(250_000, 1_500_000, 25_000, 1_500_000),
    ),
    (
        "gemini-3.5-flash", // gemini/gemini-3.5-flash
        gemini_thinking(1_500_000, 9_000_000, 150_000, 9_000_000),
    ),
];
