//! Exact conversion of a JSON number's decimal text to an integer count of pico-dollars: the
//! digits are shifted, never multiplied as `f64`, so `2.5e-06` USD is exactly 2 500 000 pico-USD.

/// Places to shift a price in USD per token to pico-USD per token.
pub(super) const USD_PER_TOKEN: i64 = 12;
/// Places to shift a price in USD per million tokens to pico-USD per token.
pub(super) const USD_PER_MILLION: i64 = 6;

/// Why a decimal text is not a usable price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Problem {
    NotNumber,
    Negative,
    TooLarge,
}

/// `text` (JSON number syntax) times `10^shift`, rounded half up to an integer.
pub(super) fn scaled(text: &str, shift: i64) -> Result<u64, Problem> {
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    // Significant digits without leading zeros; the value is digits × 10^exponent.
    let mut digits: Vec<u8> = Vec::new();
    let mut exponent: i64 = 0;
    let mut seen_digit = false;
    let mut seen_point = false;
    let mut at = 0;
    while let Some(&byte) = rest.get(at) {
        match byte {
            b'0'..=b'9' => {
                seen_digit = true;
                if seen_point {
                    exponent -= 1;
                }
                if !(digits.is_empty() && byte == b'0') {
                    digits.push(byte - b'0');
                }
            }
            b'.' if !seen_point && seen_digit => seen_point = true,
            b'e' | b'E' => break,
            _ => return Err(Problem::NotNumber),
        }
        at += 1;
    }
    if !seen_digit {
        return Err(Problem::NotNumber);
    }
    if at < rest.len() {
        exponent = exponent.saturating_add(parse_exponent(&rest[at + 1..])?);
    }
    if digits.is_empty() {
        return Ok(0);
    }
    if negative {
        return Err(Problem::Negative);
    }
    let places = exponent.saturating_add(shift);
    if places >= 0 {
        // u64::MAX has 20 digits: anything longer overflows.
        let places = usize::try_from(places).map_err(|_| Problem::TooLarge)?;
        if digits.len().saturating_add(places) > 20 {
            return Err(Problem::TooLarge);
        }
        let whole = integer(&digits)?;
        let scale = 10u64
            .checked_pow(u32::try_from(places).map_err(|_| Problem::TooLarge)?)
            .ok_or(Problem::TooLarge)?;
        return whole.checked_mul(scale).ok_or(Problem::TooLarge);
    }
    let dropped = usize::try_from(places.unsigned_abs()).unwrap_or(usize::MAX);
    if dropped > digits.len() {
        // Every digit lies below the first dropped place, which is a zero: rounds down.
        return Ok(0);
    }
    let kept = digits.len() - dropped;
    let whole = integer(&digits[..kept])?;
    if digits[kept] >= 5 {
        whole.checked_add(1).ok_or(Problem::TooLarge)
    } else {
        Ok(whole)
    }
}

/// The integer the decimal `digits` spell.
fn integer(digits: &[u8]) -> Result<u64, Problem> {
    digits.iter().try_fold(0u64, |sum, &digit| {
        sum.checked_mul(10)
            .and_then(|sum| sum.checked_add(u64::from(digit)))
            .ok_or(Problem::TooLarge)
    })
}

/// The exponent after `e`: an optional sign and at least one digit, saturating at `i64`'s
/// bounds. Not clamped lower: a mantissa's own digits move the point by as many places as the
/// text is long, and the written exponent must still cancel them exactly.
fn parse_exponent(text: &[u8]) -> Result<i64, Problem> {
    let (sign, digits) = match text.split_first() {
        Some((b'-', rest)) => (-1, rest),
        Some((b'+', rest)) => (1, rest),
        _ => (1, text),
    };
    if digits.is_empty() {
        return Err(Problem::NotNumber);
    }
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return Err(Problem::NotNumber);
        }
        value = value
            .saturating_mul(10)
            .saturating_add(i64::from(byte - b'0'));
    }
    Ok(sign * value)
}

/// Reads the raw JSON text of the price under `key`: `Ok(None)` for `null`, the price shifted
/// `shift` places for a non-negative number, else the reason, naming `key`.
pub(super) fn read_price(key: &str, raw: &str, shift: i64) -> Result<Option<u64>, String> {
    let text = raw.trim();
    if text == "null" {
        return Ok(None);
    }
    let problem = match text.as_bytes().first() {
        Some(b'-' | b'0'..=b'9') => match scaled(text, shift) {
            Ok(value) => return Ok(Some(value)),
            Err(problem) => problem,
        },
        _ => Problem::NotNumber,
    };
    let what = match problem {
        Problem::NotNumber => "is not a number",
        Problem::Negative => "is negative",
        Problem::TooLarge => "is too large",
    };
    Err(format!("{key} {what} ({})", shown(text)))
}

/// At most 40 characters of a value, for an error message.
fn shown(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(40).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mantissa of a million digits moves the point a million places, and an exponent as
    /// long as that cancels it exactly: 10^9 USD a token is too large, 10^-10 USD is 100
    /// pico-USD.
    #[test]
    fn a_long_mantissa_is_cancelled_by_its_exponent() {
        let zeros = 1_000_010;
        let big = format!("0.{}1e{}", "0".repeat(zeros), zeros + 10);
        assert_eq!(scaled(&big, USD_PER_TOKEN), Err(Problem::TooLarge));
        let small = format!("1{}e-{}", "0".repeat(zeros), zeros + 10);
        assert_eq!(scaled(&small, USD_PER_TOKEN), Ok(100));
        let absurd = format!("1e{}", "9".repeat(40));
        assert_eq!(scaled(&absurd, USD_PER_TOKEN), Err(Problem::TooLarge));
        let tiny = format!("1e-{}", "9".repeat(40));
        assert_eq!(scaled(&tiny, USD_PER_TOKEN), Ok(0));
    }

    fn pico(text: &str) -> Result<u64, Problem> {
        scaled(text, USD_PER_TOKEN)
    }

    #[test]
    fn litellm_spellings_are_exact() {
        assert_eq!(pico("2.5e-06"), Ok(2_500_000));
        assert_eq!(pico("2.5e-6"), Ok(2_500_000));
        assert_eq!(pico("2.5E-06"), Ok(2_500_000));
        assert_eq!(pico("1e-05"), Ok(10_000_000));
        assert_eq!(pico("1.5e-07"), Ok(150_000));
        assert_eq!(pico("5e-09"), Ok(5_000));
        assert_eq!(pico("1.875e-08"), Ok(18_750));
        assert_eq!(pico("0.000168"), Ok(168_000_000));
        assert_eq!(pico("0.0"), Ok(0));
        assert_eq!(pico("0"), Ok(0));
        assert_eq!(pico("-0.0"), Ok(0));
        assert_eq!(pico("3"), Ok(3_000_000_000_000));
        assert_eq!(pico("0.1e+1"), Ok(1_000_000_000_000));
    }

    #[test]
    fn per_million_shifts_six_places() {
        assert_eq!(scaled("0.15", USD_PER_MILLION), Ok(150_000));
        assert_eq!(scaled("0.1875", USD_PER_MILLION), Ok(187_500));
        assert_eq!(scaled("3", USD_PER_MILLION), Ok(3_000_000));
        assert_eq!(scaled("0.000001", USD_PER_MILLION), Ok(1));
    }

    #[test]
    fn finer_than_a_pico_rounds_half_up() {
        assert_eq!(pico("1.0416666666666667e-07"), Ok(104_167));
        assert_eq!(pico("5e-13"), Ok(1));
        assert_eq!(pico("4.99e-13"), Ok(0));
        assert_eq!(pico("1e-30"), Ok(0));
        assert_eq!(pico("1.5e-12"), Ok(2));
        assert_eq!(pico("1.4999e-12"), Ok(1));
        assert_eq!(pico("1e-999999999999999999999"), Ok(0));
    }

    #[test]
    fn rejects_negative_oversized_and_malformed() {
        assert_eq!(pico("-1e-06"), Err(Problem::Negative));
        assert_eq!(pico("-0.5e-12"), Err(Problem::Negative));
        assert_eq!(pico("1e10"), Err(Problem::TooLarge));
        assert_eq!(pico("18446744.073709551616"), Err(Problem::TooLarge));
        assert_eq!(pico("18446744.073709551615"), Ok(u64::MAX));
        assert_eq!(pico("1e999999999999999999999"), Err(Problem::TooLarge));
        assert_eq!(pico("0e999999999999999999999"), Ok(0));
        for bad in [
            "", "-", ".", ".5", "1e", "1e+", "e5", "1..2", "1.2.3", "abc", "1x", "0x10",
        ] {
            assert_eq!(pico(bad), Err(Problem::NotNumber), "{bad:?}");
        }
    }

    #[test]
    fn read_price_names_the_key_and_value() {
        assert_eq!(
            read_price("k", "2.5e-06", USD_PER_TOKEN),
            Ok(Some(2_500_000))
        );
        assert_eq!(read_price("k", "null", USD_PER_TOKEN), Ok(None));
        assert_eq!(
            read_price("input_cost_per_token", "\"2.5e-06\"", USD_PER_TOKEN),
            Err("input_cost_per_token is not a number (\"2.5e-06\")".to_owned())
        );
        assert_eq!(
            read_price("k", "-1e-06", USD_PER_TOKEN),
            Err("k is negative (-1e-06)".to_owned())
        );
        assert_eq!(
            read_price("k", "true", USD_PER_TOKEN),
            Err("k is not a number (true)".to_owned())
        );
        let long = format!("\"{}\"", "x".repeat(100));
        let reason = read_price("k", &long, USD_PER_TOKEN).expect_err("a string");
        assert!(reason.ends_with("…)"), "{reason}");
    }
}
