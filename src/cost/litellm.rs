//! LiteLLM's `model_prices_and_context_window.json`: an object of entries, prices in USD per
//! token.

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::decimal::{USD_PER_TOKEN, read_price};
use super::{ModelPrice, PriceError, PriceTable, TierPrice};

/// LiteLLM's documentation entry, whose prices are placeholders.
const SAMPLE_SPEC: &str = "sample_spec";

const INPUT: &str = "input_cost_per_token";
const OUTPUT: &str = "output_cost_per_token";
const CACHE_READ: &str = "cache_read_input_token_cost";
const CACHE_WRITE: &str = "cache_creation_input_token_cost";
const CACHE_WRITE_1H: &str = "cache_creation_input_token_cost_above_1hr";
const REASONING: &str = "output_cost_per_reasoning_token";
const TIER_INPUT: &str = "input_cost_per_token_above_200k_tokens";
const TIER_OUTPUT: &str = "output_cost_per_token_above_200k_tokens";
const TIER_CACHE_READ: &str = "cache_read_input_token_cost_above_200k_tokens";
const TIER_CACHE_WRITE: &str = "cache_creation_input_token_cost_above_200k_tokens";
const TIER_CACHE_WRITE_1H: &str = "cache_creation_input_token_cost_above_1hr_above_200k_tokens";

pub(super) fn parse(top: BTreeMap<String, &RawValue>) -> Result<PriceTable, PriceError> {
    let mut table = PriceTable::empty();
    for (name, raw) in top {
        if name == SAMPLE_SPEC {
            table.skipped += 1;
            continue;
        }
        let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(raw.get()) else {
            // Not an object: it prices nothing.
            table.skipped += 1;
            continue;
        };
        let read = |key: &str| match fields.get(key) {
            Some(raw) => read_price(key, raw.get(), USD_PER_TOKEN)
                .map_err(|reason| PriceError::new(reason).in_entry(&name)),
            None => Ok(None),
        };
        // Every price is checked, even in an entry that is then skipped.
        let input = read(INPUT)?;
        let output = read(OUTPUT)?;
        let cache_read = read(CACHE_READ)?;
        let cache_write = read(CACHE_WRITE)?;
        let cache_write_1h = read(CACHE_WRITE_1H)?;
        let reasoning = read(REASONING)?;
        let tier_input = read(TIER_INPUT)?;
        let tier_output = read(TIER_OUTPUT)?;
        let tier_cache_read = read(TIER_CACHE_READ)?;
        let tier_cache_write = read(TIER_CACHE_WRITE)?;
        let tier_cache_write_1h = read(TIER_CACHE_WRITE_1H)?;
        let (Some(input), Some(output)) = (input, output) else {
            table.skipped += 1;
            continue;
        };
        let above_200k = [
            tier_input,
            tier_output,
            tier_cache_read,
            tier_cache_write,
            tier_cache_write_1h,
        ]
        .iter()
        .any(Option::is_some)
        .then(|| TierPrice {
            input: tier_input.unwrap_or(input),
            output: tier_output.unwrap_or(output),
            cache_read: tier_cache_read,
            cache_write: tier_cache_write,
            cache_write_1h: tier_cache_write_1h,
        });
        let price = ModelPrice {
            input,
            output,
            cache_read,
            cache_write,
            cache_write_1h,
            reasoning,
            above_200k,
        };
        table.models.insert(name, price);
    }
    Ok(table)
}
