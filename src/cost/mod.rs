//! Prices and the cost of a request.
//!
//! A [`PriceTable`] maps model names to [`ModelPrice`]s; [`PriceTable::cost`] turns the token
//! figures of one request ([`TokenUsage`]) into a [`Cost`]. Prices and costs are integers in
//! pico-USD (10⁻¹² USD), so costs add up exactly: no rounding drift however many requests are
//! summed. The module is pure: it knows nothing of HTTP, streams or records.
//!
//! ```
//! use tower_stream_monitor::cost::{PriceTable, TokenUsage};
//!
//! let prices = PriceTable::builtin();
//! let usage = TokenUsage {
//!     input_tokens: 1_310,           // every prompt token, the cached ones included
//!     cache_read_input_tokens: 1_024,
//!     output_tokens: 24,             // every generated token, the reasoning ones included
//!     ..TokenUsage::default()
//! };
//! // gpt-4.1: $2 per million uncached input tokens, $0.50 cached, $8 output.
//! let cost = prices.cost("gpt-4.1-2025-04-14", &usage).expect("a priced model");
//! assert_eq!(cost.picodollars(), 286 * 2_000_000 + 1_024 * 500_000 + 24 * 8_000_000);
//! assert_eq!(cost.to_string(), "$0.001276");
//! assert!(prices.cost("my-own-model", &usage).is_none()); // unpriced
//! ```
//!
//! Tables come from three places, and [`PriceTable::merged`] layers them:
//! - [`PriceTable::builtin`]: the models the crate knows, taken from LiteLLM's price list on the
//!   date [`PriceTable::taken`] returns;
//! - [`PriceTable::from_litellm_json`]: LiteLLM's `model_prices_and_context_window.json`, whole
//!   or in part;
//! - [`PriceTable::from_native_json`]: this crate's own small format, in USD per million tokens
//!   as providers publish prices (described there).
//!
//! [`PriceTable::load`] reads either kind of file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;

mod builtin;
mod decimal;
mod litellm;
mod native;

#[cfg(test)]
mod tests;

/// Above this many input tokens (cache reads and writes included) a request is a long prompt,
/// priced by [`ModelPrice::above_200k`] when the model has such a tier.
pub const LONG_PROMPT_TOKENS: u64 = 200_000;

/// Per-token prices of one model, in pico-USD (1e-12 USD) per token, so costs sum exactly as
/// integers.
///
/// A price in USD per million tokens is the pico-USD per token figure divided by 10⁶: `input:
/// 2_500_000` is $2.50 per million input tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    /// An uncached input (prompt) token.
    pub input: u64,
    /// A generated token that is not reasoning.
    pub output: u64,
    /// An input token read from the provider's prompt cache; `None`: priced as input.
    pub cache_read: Option<u64>,
    /// An input token written to the prompt cache (Anthropic's 5-minute cache write); `None`:
    /// priced as input.
    pub cache_write: Option<u64>,
    /// An input token written to Anthropic's 1-hour cache (the stream's
    /// `cache_creation.ephemeral_1h_input_tokens`); `None`: priced as a 5-minute write.
    pub cache_write_1h: Option<u64>,
    /// A reasoning (thinking) output token; `None`: priced as output.
    pub reasoning: Option<u64>,
    /// The long-prompt tier: the prices of a request with more than [`LONG_PROMPT_TOKENS`]
    /// input tokens.
    pub above_200k: Option<TierPrice>,
}

/// The prices of a model's long-prompt tier, in pico-USD per token (see [`ModelPrice`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierPrice {
    /// An uncached input token.
    pub input: u64,
    /// A generated token.
    pub output: u64,
    /// A cache read; `None`: the model's own [`cache_read`](ModelPrice::cache_read) price.
    pub cache_read: Option<u64>,
    /// A 5-minute cache write; `None`: the model's own
    /// [`cache_write`](ModelPrice::cache_write) price.
    pub cache_write: Option<u64>,
    /// A 1-hour cache write; `None`: the model's own
    /// [`cache_write_1h`](ModelPrice::cache_write_1h) price.
    pub cache_write_1h: Option<u64>,
}

impl ModelPrice {
    /// What `usage` costs at these prices.
    ///
    /// Uncached input (input less cache reads and writes, never below 0) is priced at `input`,
    /// cache reads at `cache_read` (else input), 1-hour cache writes (never more than all the
    /// writes) at `cache_write_1h` (else as 5-minute ones), the other cache writes at
    /// `cache_write` (else input), output less reasoning (never below 0) at `output`, reasoning
    /// at `reasoning` (else output). Above [`LONG_PROMPT_TOKENS`] input tokens a model with an
    /// [`above_200k`](Self::above_200k) tier uses the tier's input and output prices, and its
    /// cache prices where it has them (else the model's own); the fallbacks to input and output
    /// then mean the tier's. Integer arithmetic that saturates at `u64::MAX` pico-USD instead
    /// of overflowing.
    ///
    /// ```
    /// use tower_stream_monitor::cost::{ModelPrice, TokenUsage};
    ///
    /// let price = ModelPrice {
    ///     input: 1_000_000, // $1 per million
    ///     output: 4_000_000,
    ///     cache_read: Some(100_000),
    ///     cache_write: None,
    ///     cache_write_1h: None,
    ///     reasoning: None,
    ///     above_200k: None,
    /// };
    /// let usage = TokenUsage { input_tokens: 1_000, cache_read_input_tokens: 800, output_tokens: 10, ..Default::default() };
    /// assert_eq!(price.cost(&usage).picodollars(), 200 * 1_000_000 + 800 * 100_000 + 10 * 4_000_000);
    /// ```
    pub fn cost(&self, usage: &TokenUsage) -> Cost {
        self.rates().cost(usage)
    }

    /// The prices [`cost`](Self::cost) applies, their fallbacks resolved: worked out once per
    /// model by the recording path, which then only multiplies.
    pub(crate) fn rates(&self) -> Rates {
        let tier = self.above_200k.as_ref().map(|tier| {
            let cache_write = tier.cache_write.or(self.cache_write).unwrap_or(tier.input);
            PartRates {
                input: tier.input,
                cache_read: tier.cache_read.or(self.cache_read).unwrap_or(tier.input),
                cache_write,
                cache_write_1h: tier
                    .cache_write_1h
                    .or(self.cache_write_1h)
                    .unwrap_or(cache_write),
                output: tier.output,
                reasoning: self.reasoning.unwrap_or(tier.output),
            }
        });
        let cache_write = self.cache_write.unwrap_or(self.input);
        Rates {
            base: PartRates {
                input: self.input,
                cache_read: self.cache_read.unwrap_or(self.input),
                cache_write,
                cache_write_1h: self.cache_write_1h.unwrap_or(cache_write),
                output: self.output,
                reasoning: self.reasoning.unwrap_or(self.output),
            },
            above_200k: tier,
        }
    }
}

/// A model's price per token of each part, fallbacks resolved (see [`ModelPrice::cost`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartRates {
    input: u64,
    cache_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
    output: u64,
    reasoning: u64,
}

/// [`PartRates`] of a model, and of its long-prompt tier if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rates {
    base: PartRates,
    above_200k: Option<PartRates>,
}

impl Rates {
    /// What `usage` costs (see [`ModelPrice::cost`]).
    #[inline]
    pub(crate) fn cost(&self, usage: &TokenUsage) -> Cost {
        let r = match &self.above_200k {
            Some(tier) if usage.input_tokens > LONG_PROMPT_TOKENS => tier,
            _ => &self.base,
        };
        let uncached = usage
            .input_tokens
            .saturating_sub(usage.cache_read_input_tokens)
            .saturating_sub(usage.cache_creation_input_tokens);
        let writes_1h = usage
            .cache_creation_1h_input_tokens
            .min(usage.cache_creation_input_tokens);
        let visible_output = usage
            .output_tokens
            .saturating_sub(usage.reasoning_output_tokens);
        let parts = [
            (uncached, r.input),
            (usage.cache_read_input_tokens, r.cache_read),
            (usage.cache_creation_input_tokens - writes_1h, r.cache_write),
            (writes_1h, r.cache_write_1h),
            (visible_output, r.output),
            (usage.reasoning_output_tokens, r.reasoning),
        ];
        Cost(parts.iter().fold(0u64, |sum, &(tokens, price)| {
            sum.saturating_add(tokens.saturating_mul(price))
        }))
    }
}

/// Token figures of one request as the monitor normalises them: input includes the cache
/// parts, output includes reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Every prompt token: uncached, cache reads and cache writes.
    pub input_tokens: u64,
    /// Every generated token, reasoning included.
    pub output_tokens: u64,
    /// The part of `input_tokens` read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// The part of `input_tokens` written to the prompt cache, for any time to live.
    pub cache_creation_input_tokens: u64,
    /// The part of `cache_creation_input_tokens` written to Anthropic's 1-hour cache (its
    /// `ephemeral_1h_input_tokens`); the other writes are 5-minute ones.
    pub cache_creation_1h_input_tokens: u64,
    /// The part of `output_tokens` spent on reasoning.
    pub reasoning_output_tokens: u64,
}

/// An amount of money in pico-USD (10⁻¹² USD).
///
/// Displays as US dollars with as many decimals as it needs: `$0.001276`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(u64);

impl Cost {
    /// Nothing.
    pub const ZERO: Cost = Cost(0);

    /// `picodollars` × 10⁻¹² USD.
    pub const fn from_picodollars(picodollars: u64) -> Self {
        Cost(picodollars)
    }

    /// The amount in pico-USD.
    pub const fn picodollars(self) -> u64 {
        self.0
    }

    /// The amount in USD, as a float for display and metrics (exact sums use
    /// [`picodollars`](Self::picodollars)).
    ///
    /// ```
    /// use tower_stream_monitor::cost::Cost;
    /// assert_eq!(Cost::from_picodollars(1_500_000_000_000).usd(), 1.5);
    /// ```
    pub fn usd(self) -> f64 {
        // Exact up to 2^53 pico-USD (about $9 007), then within one part in 2^53.
        self.0 as f64 / 1e12
    }

    /// The sum, or `u64::MAX` pico-USD (about $18.4 million) if it would overflow.
    pub const fn saturating_add(self, other: Cost) -> Cost {
        Cost(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PER_USD: u64 = 1_000_000_000_000;
        let (dollars, picos) = (self.0 / PER_USD, self.0 % PER_USD);
        if picos == 0 {
            return write!(f, "${dollars}");
        }
        let fraction = format!("{picos:012}");
        write!(f, "${dollars}.{}", fraction.trim_end_matches('0'))
    }
}

/// Prices by model name.
///
/// ```
/// use tower_stream_monitor::cost::PriceTable;
///
/// let prices = PriceTable::builtin();
/// assert!(prices.taken().is_some());
/// // Exact name, provider prefix, dated snapshot: all the same model.
/// let plain = prices.price("gpt-4o-mini").expect("built in");
/// assert_eq!(prices.price("openai/gpt-4o-mini"), Some(plain));
/// assert_eq!(prices.price("gpt-4o-mini-2024-07-18"), Some(plain));
/// assert_eq!(plain.input, 150_000); // $0.15 per million input tokens
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceTable {
    models: BTreeMap<String, ModelPrice>,
    taken: Option<String>,
    skipped: usize,
}

/// Provider prefixes a model name may carry, as LiteLLM and Gemini's API spell them.
const PROVIDER_PREFIXES: [&str; 4] = ["openai/", "anthropic/", "gemini/", "models/"];

impl PriceTable {
    /// The built-in table: OpenAI, Anthropic and Google models, their prices taken from LiteLLM's
    /// price list on the date [`taken`](Self::taken) returns.
    ///
    /// OpenAI: `gpt-4o`, `gpt-4o-mini`, `gpt-4.1`, `gpt-4.1-mini`, `gpt-4.1-nano`, `gpt-5`,
    /// `gpt-5-mini`, `gpt-5-nano`, `gpt-5.1`, `gpt-5.2`, `o3`, `o3-mini`, `o4-mini`. Anthropic:
    /// `claude-sonnet-4-5`, `claude-sonnet-4`, `claude-sonnet-4-6`, `claude-opus-4-1`,
    /// `claude-opus-4-5`, `claude-opus-4-6`, `claude-opus-4-7`, `claude-haiku-4-5`,
    /// `claude-3-5-haiku`. Google (Gemini API prices): `gemini-3-pro-preview`,
    /// `gemini-3.1-pro-preview`, `gemini-3-flash-preview`, `gemini-3.1-flash-lite`,
    /// `gemini-3.1-flash-lite-preview`, `gemini-3.5-flash`, `gemini-2.5-pro`, `gemini-2.5-flash`,
    /// `gemini-2.5-flash-lite`, `gemini-2.0-flash`, `gemini-2.0-flash-lite`. Dated snapshots
    /// (`gpt-4o-mini-2024-07-18`, `claude-sonnet-4-5-20250929`) resolve to these names (see
    /// [`price`](Self::price)).
    ///
    /// Prices change: load a newer LiteLLM file or a native file and [`merge`](Self::merged) it
    /// over this one to correct them.
    pub fn builtin() -> Self {
        PriceTable {
            models: builtin::MODELS
                .iter()
                .map(|(name, price)| ((*name).to_owned(), price.clone()))
                .collect(),
            taken: Some(builtin::TAKEN.to_owned()),
            skipped: 0,
        }
    }

    /// A table that prices nothing.
    pub fn empty() -> Self {
        PriceTable::default()
    }

    /// When the prices were taken (`2026-07-15` style, or a month: `2026-07`): for the built-in
    /// table, and for a native file that says so in its `taken` field. `None` otherwise.
    pub fn taken(&self) -> Option<&str> {
        self.taken.as_deref()
    }

    /// How many entries of the file loading skipped because they price no tokens: LiteLLM's
    /// `sample_spec`, entries without both an input and an output price per token (image,
    /// audio and most embedding models) and entries that are not objects. 0 for other tables.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// A table from LiteLLM's `model_prices_and_context_window.json` format (USD per token), or
    /// any excerpt of it.
    ///
    /// Each entry with both `input_cost_per_token` and `output_cost_per_token` becomes a model
    /// under its key (`gpt-4o`, `gemini/gemini-2.5-pro`); it also reads
    /// `cache_read_input_token_cost`, `cache_creation_input_token_cost`,
    /// `cache_creation_input_token_cost_above_1hr`, `output_cost_per_reasoning_token` and the
    /// long-prompt tier `input_cost_per_token_above_200k_tokens`,
    /// `output_cost_per_token_above_200k_tokens`, `cache_read_input_token_cost_above_200k_tokens`,
    /// `cache_creation_input_token_cost_above_200k_tokens`,
    /// `cache_creation_input_token_cost_above_1hr_above_200k_tokens` (a tier that names only
    /// some of these takes the others from the base prices). Other keys
    /// are ignored; `sample_spec` and entries without both prices are [skipped](Self::skipped).
    ///
    /// Prices convert exactly from their decimal text (`2.5e-06` is 2 500 000 pico-USD); a price
    /// finer than a pico-USD is rounded half up to the nearest one. `null` counts as absent. A
    /// price that is present but not a non-negative number is an error naming the entry and the
    /// key, as is text that is not a JSON object.
    ///
    /// ```
    /// use tower_stream_monitor::cost::PriceTable;
    ///
    /// let table = PriceTable::from_litellm_json(r#"{
    ///     "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
    ///     "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
    ///                "cache_read_input_token_cost": 1.25e-06, "mode": "chat"},
    ///     "dall-e-3": {"output_cost_per_image": 0.04, "mode": "image_generation"}
    /// }"#)?;
    /// assert_eq!((table.len(), table.skipped()), (1, 2));
    /// assert_eq!(table.price("gpt-4o").map(|p| p.input), Some(2_500_000));
    ///
    /// let error = PriceTable::from_litellm_json(r#"{"gpt-4o": {"input_cost_per_token": "2.5e-06"}}"#)
    ///     .unwrap_err();
    /// assert_eq!(error.to_string(), r#"prices: entry "gpt-4o": input_cost_per_token is not a number ("2.5e-06")"#);
    /// # Ok::<(), tower_stream_monitor::cost::PriceError>(())
    /// ```
    pub fn from_litellm_json(text: &str) -> Result<Self, PriceError> {
        litellm::parse(top_level(text)?)
    }

    /// A table from this crate's native format: prices in USD per million tokens, as providers
    /// publish them.
    ///
    /// ```json
    /// {
    ///   "taken": "2026-11-01",
    ///   "models": {
    ///     "my-model": {
    ///       "input": 0.15, "output": 0.6,
    ///       "cache_read": 0.075, "cache_write": 0.1875, "cache_write_1h": 0.3,
    ///       "reasoning": 0.6,
    ///       "above_200k": {"input": 0.3, "output": 1.2, "cache_read": 0.15,
    ///                      "cache_write": 0.375, "cache_write_1h": 0.6}
    ///     }
    ///   }
    /// }
    /// ```
    ///
    /// `models` is required; `taken` (a date, returned by [`taken`](Self::taken)) is optional.
    /// In a model, `input` and `output` are required and the rest optional, with the meanings of
    /// [`ModelPrice`]'s fields; `above_200k` needs `input` and `output` and may have
    /// `cache_read`, `cache_write` and `cache_write_1h` ([`TierPrice`]). Prices convert exactly
    /// from their decimal text (`0.15` is 150 000 pico-USD per token), finer than a pico-USD per
    /// token rounding half up; `null` counts as absent. Unknown keys are errors naming the key,
    /// so a misspelt price is not silently dropped.
    ///
    /// ```
    /// use tower_stream_monitor::cost::PriceTable;
    ///
    /// let table = PriceTable::from_native_json(r#"{
    ///     "taken": "2026-11-01",
    ///     "models": {"my-model": {"input": 0.15, "output": 0.6, "cache_read": 0.075}}
    /// }"#)?;
    /// assert_eq!(table.taken(), Some("2026-11-01"));
    /// let price = table.price("my-model").expect("loaded");
    /// assert_eq!((price.input, price.output, price.cache_read), (150_000, 600_000, Some(75_000)));
    ///
    /// let typo = PriceTable::from_native_json(r#"{"models": {"m": {"input": 1, "output": 2, "cache_reed": 0.1}}}"#)
    ///     .unwrap_err();
    /// assert_eq!(typo.to_string(), r#"prices: entry "m": unknown key "cache_reed""#);
    /// # Ok::<(), tower_stream_monitor::cost::PriceError>(())
    /// ```
    pub fn from_native_json(text: &str) -> Result<Self, PriceError> {
        native::parse(top_level(text)?)
    }

    /// Reads a price file: the native format if it has a top-level `models` object, else
    /// LiteLLM's. Errors name the file.
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use tower_stream_monitor::cost::PriceTable;
    ///
    /// let prices = PriceTable::builtin().merged(PriceTable::load(Path::new("prices.json"))?);
    /// # Ok::<(), tower_stream_monitor::cost::PriceError>(())
    /// ```
    pub fn load(path: &Path) -> Result<Self, PriceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| PriceError::new(format!("cannot read it: {error}")).in_file(path))?;
        let top = top_level(&text).map_err(|error| error.in_file(path))?;
        let native = top
            .get("models")
            .is_some_and(|models| models.get().trim_start().starts_with('{'));
        if native {
            native::parse(top)
        } else {
            litellm::parse(top)
        }
        .map_err(|error| error.in_file(path))
    }

    /// This table with `overrides` laid over it: a model in both takes the override's prices.
    /// [`taken`](Self::taken) is the overrides' date when they have one, else this table's.
    ///
    /// ```
    /// use tower_stream_monitor::cost::PriceTable;
    ///
    /// let mine = PriceTable::from_native_json(r#"{"models": {"gpt-4o": {"input": 2, "output": 8}}}"#)?;
    /// let prices = PriceTable::builtin().merged(mine);
    /// assert_eq!(prices.price("gpt-4o").map(|p| p.input), Some(2_000_000));
    /// assert!(prices.price("gpt-4o-mini").is_some());
    /// # Ok::<(), tower_stream_monitor::cost::PriceError>(())
    /// ```
    pub fn merged(mut self, overrides: PriceTable) -> PriceTable {
        self.models.extend(overrides.models);
        self.taken = overrides.taken.or(self.taken);
        self.skipped = self.skipped.saturating_add(overrides.skipped);
        self
    }

    /// How many models the table prices.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the table prices no model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The models and their prices, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModelPrice)> + '_ {
        self.models
            .iter()
            .map(|(name, price)| (name.as_str(), price))
    }

    /// The prices of `model`: under its exact name; else under the name without a provider
    /// prefix (`openai/`, `anthropic/`, `gemini/`, `models/`); else without a trailing date
    /// (`-2024-07-18`, `-20250929`, `-0613`); else `None`.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        let bare = without_provider_prefix(model);
        // Each name looked up once: most names carry no prefix, so `bare` is `model`.
        let prefixed = bare.len() != model.len();
        self.models
            .get(model)
            .or_else(|| prefixed.then(|| self.models.get(bare)).flatten())
            .or_else(|| without_date_suffix(bare).and_then(|name| self.models.get(name)))
            .or_else(|| {
                let name = without_date_suffix(model).filter(|_| prefixed)?;
                self.models.get(name)
            })
    }

    /// What `usage` cost on `model` (see [`ModelPrice::cost`]); `None`: the model is unpriced.
    pub fn cost(&self, model: &str, usage: &TokenUsage) -> Option<Cost> {
        self.price(model).map(|price| price.cost(usage))
    }
}

/// `name` without any leading provider prefixes.
fn without_provider_prefix(name: &str) -> &str {
    let mut name = name;
    while let Some(rest) = PROVIDER_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .filter(|rest| !rest.is_empty())
    {
        name = rest;
    }
    name
}

/// `name` without a trailing snapshot date: `-YYYY-MM-DD`, `-YYYYMMDD` or `-MMDD`.
fn without_date_suffix(name: &str) -> Option<&str> {
    fn number(digits: &[u8]) -> Option<u32> {
        digits.iter().try_fold(0u32, |sum, &digit| {
            digit
                .is_ascii_digit()
                .then(|| sum * 10 + u32::from(digit - b'0'))
        })
    }
    fn month_day(month: &[u8], day: &[u8]) -> bool {
        number(month).is_some_and(|m| (1..=12).contains(&m))
            && number(day).is_some_and(|d| (1..=31).contains(&d))
    }
    fn year(digits: &[u8]) -> bool {
        number(digits).is_some_and(|y| (2000..=2099).contains(&y))
    }
    let bytes = name.as_bytes();
    // Each suffix is ASCII and starts with '-', so cutting before it is on a char boundary.
    let cut = |len: usize| Some(&name[..name.len() - len]);
    if let Some(s) = bytes
        .len()
        .checked_sub(11)
        .filter(|&at| at > 0)
        .map(|at| &bytes[at..])
    {
        if s[0] == b'-'
            && s[5] == b'-'
            && s[8] == b'-'
            && year(&s[1..5])
            && month_day(&s[6..8], &s[9..])
        {
            return cut(11);
        }
    }
    if let Some(s) = bytes
        .len()
        .checked_sub(9)
        .filter(|&at| at > 0)
        .map(|at| &bytes[at..])
    {
        if s[0] == b'-' && year(&s[1..5]) && month_day(&s[5..7], &s[7..]) {
            return cut(9);
        }
    }
    if let Some(s) = bytes
        .len()
        .checked_sub(5)
        .filter(|&at| at > 0)
        .map(|at| &bytes[at..])
    {
        if s[0] == b'-' && month_day(&s[1..3], &s[3..]) {
            return cut(5);
        }
    }
    None
}

/// The top-level object of a price file, its values unparsed.
fn top_level(text: &str) -> Result<BTreeMap<String, &RawValue>, PriceError> {
    serde_json::from_str(text).map_err(|error| {
        let reason = if error.is_data() {
            "not a JSON object".to_owned()
        } else {
            format!("not JSON: {error}")
        };
        PriceError::new(reason)
    })
}

/// Why a price file cannot be used: names the file (when loaded from one) and the entry.
///
/// Displays as `prices file /etc/prices.json, entry "gpt-4o": input_cost_per_token is not a
/// number ("abc")`; without a file, `prices: entry …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceError {
    /// The file, when the table was [loaded](PriceTable::load) from one.
    pub file: Option<PathBuf>,
    /// The entry (model) at fault, when one is.
    pub entry: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl PriceError {
    fn new(reason: impl Into<String>) -> Self {
        PriceError {
            file: None,
            entry: None,
            reason: reason.into(),
        }
    }

    fn in_entry(mut self, entry: &str) -> Self {
        self.entry = Some(entry.to_owned());
        self
    }

    fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_owned());
        self
    }
}

impl fmt::Display for PriceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "prices file {}", file.display())?,
            None => f.write_str("prices")?,
        }
        if let Some(entry) = &self.entry {
            let separator = if self.file.is_some() { ", " } else { ": " };
            write!(f, "{separator}entry {entry:?}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for PriceError {}
