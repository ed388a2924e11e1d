//! Redaction of secrets before an error record is stored.
//!
//! Two rules: a field whose name looks like a credential keeps no value at all, and any text
//! (messages, other values, span fields) has credential-shaped substrings replaced.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What a redacted value or substring is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Field names (compared lowercase, `-` as `_`) whose values are never stored.
const SECRET_NAME_PARTS: [&str; 9] = [
    "authorization",
    "api_key",
    "apikey",
    "token",
    "password",
    "passwd",
    "secret",
    "cookie",
    "credential",
];

/// Whether a field of this name holds a secret (`authorization`, `x_api_key`, `access_token`,
/// `client_secret`, `set_cookie`, ...).
///
/// ```
/// use tower_stream_monitor::errors::is_secret_field;
/// assert!(is_secret_field("Authorization"));
/// assert!(is_secret_field("x-api-key"));
/// assert!(is_secret_field("refresh_token"));
/// assert!(!is_secret_field("user_id"));
/// ```
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // `Bearer <token>` (Authorization header values pasted into messages).
        (r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*", "$1 [REDACTED]"),
        // OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`) style keys.
        (r"\bsk-[A-Za-z0-9_\-]{8,}", REDACTED),
        // Google API keys (Gemini).
        (r"\bAIza[0-9A-Za-z_\-]{20,}", REDACTED),
        // Query strings and `key=value` text: `api_key=...`, `access_token=...`, `key=...`.
        (
            r"(?i)\b((?:api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|token|key|secret|password|passwd)=)[^&\s'\x22,;]+",
            "${1}[REDACTED]",
        ),
    ]
    .into_iter()
    .filter_map(|(pattern, replacement)| Regex::new(pattern).ok().map(|r| (r, replacement)))
    .collect()
});

/// `text` with credential-shaped substrings replaced; borrowed when there were none.
///
/// ```
/// use tower_stream_monitor::errors::redact;
/// assert_eq!(redact("auth failed for Bearer abc.def-123"), "auth failed for Bearer [REDACTED]");
/// assert_eq!(redact("GET /v1?api_key=s3cr3t&x=1"), "GET /v1?api_key=[REDACTED]&x=1");
/// assert_eq!(redact("key sk-ant-api03-AbCdEf123456 rejected"), "key [REDACTED] rejected");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for (pattern, replacement) in PATTERNS.iter() {
        if let Cow::Owned(replaced) = pattern.replace_all(&out, *replacement) {
            out = Cow::Owned(replaced);
        }
    }
    out
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub(crate) fn cut(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_text_are_replaced() {
        for (input, expected) in [
            (
                "Authorization: Bearer eyJhbGciOi.J9xyz",
                "Authorization: Bearer [REDACTED]",
            ),
            ("bearer abc", "bearer [REDACTED]"),
            (
                "used sk-proj-AbCdEfGh12345678 today",
                "used [REDACTED] today",
            ),
            (
                "gemini AIzaSyA1234567890abcdefghijklmnopqrstu",
                "gemini [REDACTED]",
            ),
            (
                "https://x/v1?key=AIzaXYZ&alt=sse",
                "https://x/v1?key=[REDACTED]&alt=sse",
            ),
            (
                "password=hunter2 token=abc",
                "password=[REDACTED] token=[REDACTED]",
            ),
            ("nothing to see", "nothing to see"),
            ("a task-list sk-short", "a task-list sk-short"),
        ] {
            assert_eq!(redact(input), expected, "{input}");
        }
        assert!(matches!(redact("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn cut_respects_char_boundaries() {
        for text in ["héllo".repeat(300), "é".repeat(600), "x".repeat(2000)] {
            let c = cut(text, 1024);
            assert!(
                c.len() <= 1024 && c.len() > 1000 && c.ends_with('…'),
                "{}",
                c.len()
            );
        }
        assert_eq!(cut("short".into(), 1024), "short");
    }
}
