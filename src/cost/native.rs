//! The crate's own price file: `{"taken": "…", "models": {name: {…}}}`, prices in USD per
//! million tokens (documented on `PriceTable::from_native_json`).

use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::decimal::{USD_PER_MILLION, read_price};
use super::{ModelPrice, PriceError, PriceTable, TierPrice};

const MODEL_KEYS: [&str; 7] = [
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "above_200k",
];
const TIER_KEYS: [&str; 5] = [
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
];

pub(super) fn parse(top: BTreeMap<String, &RawValue>) -> Result<PriceTable, PriceError> {
    let mut table = PriceTable::empty();
    let mut models = None;
    for (key, raw) in top {
        match key.as_str() {
            "taken" => {
                let taken = serde_json::from_str::<Option<String>>(raw.get())
                    .map_err(|_| PriceError::new("taken is not a string"))?;
                table.taken = taken;
            }
            "models" => models = Some(raw),
            _ => return Err(PriceError::new(format!("unknown key {key:?}"))),
        }
    }
    let models = models.ok_or_else(|| PriceError::new("no \"models\" object"))?;
    let models = object(models).ok_or_else(|| PriceError::new("models is not an object"))?;
    for (name, raw) in models {
        let price = model(raw).map_err(|reason| PriceError::new(reason).in_entry(&name))?;
        table.models.insert(name, price);
    }
    Ok(table)
}

/// The fields of a JSON object, unparsed; `None` if `raw` is not an object.
fn object(raw: &RawValue) -> Option<BTreeMap<String, &RawValue>> {
    raw.get()
        .trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str(raw.get()).ok())
        .flatten()
}

/// One model's prices, or what is wrong with them.
fn model(raw: &RawValue) -> Result<ModelPrice, String> {
    let fields = object(raw).ok_or("not an object")?;
    if let Some(key) = fields
        .keys()
        .find(|key| !MODEL_KEYS.contains(&key.as_str()))
    {
        return Err(format!("unknown key {key:?}"));
    }
    let read = |key: &str| match fields.get(key) {
        Some(raw) => read_price(key, raw.get(), USD_PER_MILLION),
        None => Ok(None),
    };
    let required = |key: &str| read(key)?.ok_or_else(|| format!("{key} is missing"));
    let above_200k = match fields.get("above_200k") {
        Some(raw) if raw.get().trim() != "null" => Some(tier(raw)?),
        _ => None,
    };
    Ok(ModelPrice {
        input: required("input")?,
        output: required("output")?,
        cache_read: read("cache_read")?,
        cache_write: read("cache_write")?,
        cache_write_1h: read("cache_write_1h")?,
        reasoning: read("reasoning")?,
        above_200k,
    })
}

/// The `above_200k` tier, its keys named `above_200k.…` in errors.
fn tier(raw: &RawValue) -> Result<TierPrice, String> {
    let fields = object(raw).ok_or("above_200k is not an object")?;
    if let Some(key) = fields.keys().find(|key| !TIER_KEYS.contains(&key.as_str())) {
        return Err(format!("unknown key \"above_200k.{}\"", key.escape_debug()));
    }
    let read = |key: &str| match fields.get(key) {
        Some(raw) => read_price(&format!("above_200k.{key}"), raw.get(), USD_PER_MILLION),
        None => Ok(None),
    };
    let required = |key: &str| read(key)?.ok_or_else(|| format!("above_200k.{key} is missing"));
    Ok(TierPrice {
        input: required("input")?,
        output: required("output")?,
        cache_read: read("cache_read")?,
        cache_write: read("cache_write")?,
        cache_write_1h: read("cache_write_1h")?,
    })
}
