//! Redaction of secrets before an error record is stored.
//!
//! Two rules: a field whose name looks like a credential keeps no value at all, and any text
//! (messages, other values, span fields) has credential-shaped substrings replaced.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexSet};

/// What a redacted value or substring is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Name parts (see [`is_secret_field`]) that make a field secret wherever they appear.
const SECRET_PARTS: [&str; 14] = [
    "authorization",
    "secret",
    "secrets",
    "cookie",
    "cookies",
    "credential",
    "credentials",
    "jwt",
    "pwd",
    "passphrase",
    "bearer",
    "apikey",
    "sessionid",
    "privatekey",
];

/// Name parts that make a field secret as its last part or before a [`HOLDER_PARTS`] one:
/// `access_token`, `auth_header`, `session_id` are secret; `token_count`, `auth_error` are not.
const TRAILING_PARTS: [&str; 4] = ["token", "auth", "session", "pass"];

/// Parts that may follow a [`TRAILING_PARTS`] one and keep the name secret.
const HOLDER_PARTS: [&str; 4] = ["id", "header", "value", "string"];

/// Parts that make a following `key` part secret (`api_key`, `private_key`); `cache_key` is not.
const KEY_KINDS: [&str; 12] = [
    "api",
    "private",
    "secret",
    "access",
    "signing",
    "encryption",
    "master",
    "client",
    "ssh",
    "auth",
    "session",
    "license",
];

/// Endings of a one-part name that make it secret (`accesstoken`, `clientsecret`, `xapikey`).
const SECRET_ENDINGS: [&str; 5] = ["token", "secret", "apikey", "sessionid", "privatekey"];

/// Whether a field of this name holds a secret.
///
/// The name is split into lowercase parts at every character other than an ASCII letter or
/// digit (`_`, `-`, `.`, ...) and where a lowercase letter or digit is followed by an uppercase
/// one (`apiKey` is `api`, `key`). It is secret when:
///
/// - a part is `authorization`, `secret(s)`, `cookie(s)`, `credential(s)`, `jwt`, `pwd`,
///   `passphrase`, `bearer`, `apikey`, `sessionid` or `privatekey`, or contains `password` or
///   `passwd` (`password`, `db_password`, `PASSWORD`, `set-cookie`, `client_secret`,
///   `aws_secret_access_key`, `Proxy-Authorization`);
/// - `token`, `auth`, `session` or `pass` is the last part or is followed only by `id`,
///   `header`, `value` or `string` (`token`, `access_token`, `id_token`, `x_token`, `x_auth`,
///   `auth_header`, `session`, `session_id`, `sessionId`, `db_pass`);
/// - `key` is the whole name or follows `api`, `private`, `secret`, `access`, `signing`,
///   `encryption`, `master`, `client`, `ssh`, `auth`, `session` or `license` (`key`, `api_key`,
///   `x-api-key`, `Api-Key`, `apiKey`, `private_key`);
/// - a one-part name ends with `token`, `secret`, `apikey`, `sessionid` or `privatekey`
///   (`accesstoken`, `clientsecret`, `xapikey`).
///
/// Parts are compared whole, so counts and ordinary words stay visible: `output_tokens`,
/// `input_tokens`, `max_tokens`, `tokens_per_second`, `token_count`, `auth_error`, `author`,
/// `authority`, `oauth_provider`, `cache_key`, `public_key`, `secretary`, `user_id` and
/// `request_id` are not secret.
///
/// ```
/// use tower_stream_monitor::errors::is_secret_field;
/// assert!(is_secret_field("Authorization"));
/// assert!(is_secret_field("x-api-key"));
/// assert!(is_secret_field("refresh_token"));
/// assert!(is_secret_field("sessionId"));
/// assert!(!is_secret_field("user_id"));
/// assert!(!is_secret_field("output_tokens"));
/// assert!(!is_secret_field("author"));
/// ```
pub fn is_secret_field(name: &str) -> bool {
    let mut normal = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() && previous_lower {
                normal.push('_');
            }
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            normal.push(c.to_ascii_lowercase());
        } else {
            previous_lower = false;
            normal.push('_');
        }
    }
    let mut previous: Option<&str> = None;
    // A `TRAILING_PARTS` word followed by `HOLDER_PARTS` only, so far.
    let mut trailing = false;
    let mut count = 0;
    for part in normal.split('_').filter(|p| !p.is_empty()) {
        if SECRET_PARTS.contains(&part)
            || part.contains("password")
            || part.contains("passwd")
            || (part == "key" && previous.is_some_and(|p| KEY_KINDS.contains(&p)))
        {
            return true;
        }
        if TRAILING_PARTS.contains(&part) {
            trailing = true;
        } else if !HOLDER_PARTS.contains(&part) {
            trailing = false;
        }
        previous = Some(part);
        count += 1;
    }
    let one_part_secret =
        |only: &str| only == "key" || SECRET_ENDINGS.iter().any(|ending| only.ends_with(ending));
    trailing || (count == 1 && previous.is_some_and(one_part_secret))
}

/// `name <separator> value` pairs in text; the value is redacted when
/// [`is_secret_field`]`(name)`. An escape `\n`, `\r`, `\t` (Debug or JSON text) before the name
/// is not part of it. Separators: `=`, `:`, `=>`, `:=`, with spaces or tabs around
/// them; the name may be quoted (`"api_key":`, `\"api_key\":` inside a Debug-escaped string).
/// Values: `"…"` (JSON escapes), `\"…\"`, `'…'`, an optional auth scheme (`Bearer`, `Basic`,
/// `Token`, `Digest`) and a bare word, or an already redacted one (kept, so redaction is
/// idempotent).
const KEY_VALUE: &str = r#"(?x)
    (?:\\[nrt])? (?P<name>[A-Za-z_][A-Za-z0-9_.\-]*) (?:\\?["'])? [\t\ ]* (?:=>|:=|[:=]) [\t\ ]*
    (?:
        (?P<done>(?:(?i:bearer|basic|token|digest)[\t\ ]+)?\[REDACTED\])
      | "(?P<dq>(?:[^"\\]|\\.)*)"
      | \\"(?P<eq>(?:[^"\\]|\\[^"])*)\\"
      | '(?P<sq>[^']*)'
      | (?:(?i:bearer|basic|token|digest)[\t\ ]+)? (?P<bare>[^\s&,;'"(){}\[\]<>\\]+)
    )"#;

/// Where a [`SHAPES`] token may start: at an ASCII word boundary, or after an escape `\n`,
/// `\r`, `\t` as Debug and JSON write them (`"line\nBearer abc"`), which the replacement keeps.
/// `(?-u:\b)` needs no regex feature and keeps the fast engines usable on non-ASCII text.
const TOKEN_START: &str = r"(?:(?P<esc>\\[nrt])|(?-u:\b))";

/// Credential shapes found anywhere in text, each with its replacement (`${keep}`: a kept
/// prefix). Each is compiled after [`TOKEN_START`], and `${esc}` goes before its replacement.
const SHAPES: [(&str, &str); 10] = [
    // URL userinfo: `postgres://admin:pw@host` keeps the scheme, user and host.
    (
        r#"(?P<keep>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#"'<>\\]*:)[^\s/?#"'<>\\]+@"#,
        "${keep}[REDACTED]@",
    ),
    // `Bearer <token>` (Authorization header values pasted into messages).
    (
        r"(?P<keep>(?i:bearer))[\t ]+[A-Za-z0-9\-._~+/]+=*",
        "${keep} [REDACTED]",
    ),
    // `Basic <base64>`: the token must have a digit, `+`, `/` or a lowercase letter followed by
    // an uppercase one, so `Basic authentication` stays.
    (
        r"(?P<keep>(?i:basic))[\t ]+[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z])[A-Za-z0-9+/]*=*",
        "${keep} [REDACTED]",
    ),
    // JWTs (and JWEs): a base64url JSON header `eyJ…`, then dot-separated segments.
    (r"eyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]+)+", REDACTED),
    // OpenAI (`sk-`, `sk-proj-`) and Anthropic (`sk-ant-`) style keys, any case.
    (r"(?i:sk)-[A-Za-z0-9_\-]{8,}", REDACTED),
    // Google API keys (Gemini).
    (r"AIza[0-9A-Za-z_\-]{20,}", REDACTED),
    // AWS access key ids (long-term `AKIA`, temporary `ASIA`).
    (r"(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)", REDACTED),
    // GitHub tokens: `ghp_`, `gho_`, `ghs_`, `ghu_`, `ghr_`, fine-grained `github_pat_`.
    (
        r"(?:gh[opsur]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
        REDACTED,
    ),
    // Slack tokens (`xoxb-`, `xoxp-`, ...) and app tokens (`xapp-`).
    (r"(?:xox[a-z]|xapp)-[A-Za-z0-9\-]{10,}", REDACTED),
    // Stripe secret and restricted keys, live and test.
    (r"[rs]k_(?:live|test)_[A-Za-z0-9]{10,}", REDACTED),
];

/// A [`SHAPES`] entry as compiled: the pattern after [`TOKEN_START`], the replacement after
/// the escape it kept.
fn shape(pattern: &str, replacement: &str) -> (String, String) {
    (
        format!("{TOKEN_START}{pattern}"),
        format!("${{esc}}{replacement}"),
    )
}

/// The compiled [`KEY_VALUE`] and [`SHAPES`].
struct Patterns {
    key_value: Regex,
    /// All of `shapes`: which of them occur, in one pass (most texts have none).
    any_shape: RegexSet,
    shapes: Vec<(Regex, String)>,
}

fn compile() -> Result<Patterns, regex::Error> {
    let key_value = Regex::new(KEY_VALUE)?;
    let shapes: Vec<(Regex, String)> = SHAPES
        .iter()
        .map(|(pattern, replacement)| {
            let (pattern, replacement) = shape(pattern, replacement);
            Ok((Regex::new(&pattern)?, replacement))
        })
        .collect::<Result<_, regex::Error>>()?;
    let any_shape = RegexSet::new(shapes.iter().map(|(pattern, _)| pattern.as_str()))?;
    Ok(Patterns {
        key_value,
        any_shape,
        shapes,
    })
}

/// All patterns, or the error of one that does not compile in this build: then [`redact`]
/// replaces every text whole, so a lost pattern cannot let a secret through unseen. The
/// `every_pattern_compiles` test keeps it `Ok`.
///
/// Patterns may use what regex's features in Cargo.toml provide: `(?i:…)` (`unicode-case`),
/// `\s` and `\w` (`unicode-perl`); `(?-u:\b)` needs none. Dev-dependencies turn on every
/// Unicode feature of regex's parser, so a pattern needing one more (`\p{…}`) passes the tests
/// yet fails in an application: there this fallback shows it.
static PATTERNS: LazyLock<Result<Patterns, regex::Error>> = LazyLock::new(compile);

/// `text` with credential-shaped substrings replaced by `[REDACTED]`; borrowed when there were
/// none.
///
/// Covered shapes:
///
/// - `name <sep> value` where [`is_secret_field`]`(name)`: separators `=`, `:`, `=>`, `:=`
///   with optional spaces (`password=x`, `PASSWORD = x`, `Api-Key: x`, query strings
///   `?api_key=x&…`, `key=x`); values bare (up to whitespace or one of `& , ; ' " ( ) { } [ ]
///   < > \`), `"quoted"`, `'quoted'` or `\"escaped\"`, so JSON `{"api_key":"x"}`,
///   `{"password": "x"}` and Rust Debug output are covered; a scheme before a bare value is
///   kept (`Authorization: Bearer [REDACTED]`);
/// - `Bearer <token>` and `Basic <base64>` (any case; the scheme is kept);
/// - JWTs (`eyJ…` followed by `.`-separated segments);
/// - OpenAI and Anthropic keys `sk-…` in any case (`sk-proj-`, `SK-PROJ-`, `sk-ant-`), Google
///   `AIza…`, AWS access key ids `AKIA…`/`ASIA…`, GitHub `ghp_`, `gho_`, `ghs_`, `ghu_`,
///   `ghr_`, `github_pat_`, Slack `xox?-`, `xapp-`, Stripe `sk_live_`, `sk_test_`, `rk_live_`,
///   `rk_test_`;
/// - URL userinfo: the password of `scheme://user:password@host` (scheme, user and host are
///   kept).
///
/// Bare values stop at whitespace, so `password: two words` keeps `words`, except a bare
/// `Cookie`/`Set-Cookie` value, redacted to the end of its line; text that only looks like a
/// word (`Basic authentication`) is kept. If the patterns could not be compiled, the whole text
/// is replaced.
///
/// ```
/// use tower_stream_monitor::errors::redact;
/// assert_eq!(redact("auth failed for Bearer abc.def-123"), "auth failed for Bearer [REDACTED]");
/// assert_eq!(redact("GET /v1?api_key=s3cr3t&x=1"), "GET /v1?api_key=[REDACTED]&x=1");
/// assert_eq!(redact("key sk-ant-api03-AbCdEf123456 rejected"), "key [REDACTED] rejected");
/// assert_eq!(redact(r#"{"password": "hunter2"}"#), r#"{"password": "[REDACTED]"}"#);
/// assert_eq!(redact("postgres://admin:pw@db/app"), "postgres://admin:[REDACTED]@db/app");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(patterns) = PATTERNS.as_ref() else {
        return Cow::Borrowed(REDACTED);
    };
    let mut out = redact_key_values(&patterns.key_value, text);
    for i in patterns.any_shape.matches(&out).iter() {
        let (pattern, replacement) = &patterns.shapes[i];
        if let Cow::Owned(replaced) = pattern.replace_all(&out, replacement.as_str()) {
            out = Cow::Owned(replaced);
        }
    }
    out
}

/// Replaces the values of secret-named pairs.
fn redact_key_values<'t>(key_value: &Regex, text: &'t str) -> Cow<'t, str> {
    let mut out = String::new();
    // `text[..copied]` has been handled (pushed to `out`, if anything was replaced).
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = key_value.find_at(text, at) {
        // Most pairs have innocent names (`error: …`): tell from the name, without captures,
        // and go on right after it (into the value: `url=https://x/?api_key=…`).
        let (name, name_end) = match_name(found.as_str());
        if !is_secret_field(name) {
            at = found.start() + name_end;
            continue;
        }
        let Some(caps) = key_value.captures_at(text, found.start()) else {
            break;
        };
        let (Some(whole), Some(name)) = (caps.get(0), caps.name("name")) else {
            // Every match has these groups; stop rather than loop if that ever changes.
            break;
        };
        let Some(value) = secret_value(&caps) else {
            // Empty or already redacted.
            at = whole.end();
            continue;
        };
        let mut end = value.end();
        if caps.name("bare").is_some() && name.as_str().to_ascii_lowercase().contains("cookie") {
            // `Cookie: a=1; b=2`: the whole header value, to the end of the line.
            end = text[end..]
                .find(['\r', '\n'])
                .map_or(text.len(), |i| end + i);
        }
        out.push_str(&text[copied..value.start()]);
        out.push_str(REDACTED);
        copied = end;
        at = end;
    }
    if copied == 0 {
        Cow::Borrowed(text)
    } else {
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }
}

/// The part of a [`KEY_VALUE`] match to replace: the value inside its quotes, or the bare word;
/// `None` when it is empty or already redacted.
fn secret_value<'t>(caps: &Captures<'t>) -> Option<regex::Match<'t>> {
    ["dq", "eq", "sq", "bare"]
        .iter()
        .find_map(|group| caps.name(group))
        .filter(|m| !m.is_empty())
}

/// The name of a [`KEY_VALUE`] match (its `name` group: the escape before it skipped, then the
/// longest run of name characters) and where the name ends in the match.
fn match_name(found: &str) -> (&str, usize) {
    let start = if found.starts_with('\\') { 2 } else { 0 };
    let rest = found.get(start..).unwrap_or_default();
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .unwrap_or(rest.len());
    (&rest[..len], start + len)
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
    fn every_pattern_compiles() {
        let shapes = SHAPES.iter().map(|(p, r)| shape(p, r).0);
        for pattern in std::iter::once(KEY_VALUE.to_owned()).chain(shapes) {
            if let Err(e) = Regex::new(&pattern) {
                panic!("{pattern}: {e}");
            }
        }
        if let Err(e) = &*PATTERNS {
            panic!("{e}");
        }
    }

    fn check(cases: &[(&str, &str)]) {
        for (input, expected) in cases {
            assert_eq!(redact(input), *expected, "{input}");
            assert_eq!(redact(expected), *expected, "idempotent: {expected}");
        }
    }

    #[test]
    fn headers_and_schemes() {
        check(&[
            (
                "Authorization: Bearer eyJhbGciOi.J9xyz",
                "Authorization: Bearer [REDACTED]",
            ),
            ("bearer abc", "bearer [REDACTED]"),
            ("BEARER abc", "BEARER [REDACTED]"),
            (
                "Authorization: Basic dXNlcjpwYXNz",
                "Authorization: Basic [REDACTED]",
            ),
            (
                "sent basic dXNlcjpwYXNzd29yZA== twice",
                "sent basic [REDACTED] twice",
            ),
            ("Basic authentication failed", "Basic authentication failed"),
            (
                "authorization: Token abc123",
                "authorization: Token [REDACTED]",
            ),
            (
                "Cookie: sid=abc; theme=dark\nnext",
                "Cookie: [REDACTED]\nnext",
            ),
        ]);
    }

    #[test]
    fn provider_tokens() {
        check(&[
            (
                "used sk-proj-AbCdEfGh12345678 today",
                "used [REDACTED] today",
            ),
            (
                "used SK-PROJ-AbCdEfGh12345678 today",
                "used [REDACTED] today",
            ),
            ("key sk-ant-api03-Zx9Yw8Vu7Ts6", "key [REDACTED]"),
            (
                "gemini AIzaSyA1234567890abcdefghijklmnopqrstu",
                "gemini [REDACTED]",
            ),
            ("id AKIAIOSFODNN7EXAMPLE.", "id [REDACTED]."),
            ("id ASIAIOSFODNN7EXAMPLE", "id [REDACTED]"),
            (
                "gh ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                "gh [REDACTED]",
            ),
            (
                "gh gho_abcdefghijklmnopqrstuvwxyz0123456789",
                "gh [REDACTED]",
            ),
            (
                "gh ghs_abcdefghijklmnopqrstuvwxyz0123456789",
                "gh [REDACTED]",
            ),
            (
                "gh ghu_abcdefghijklmnopqrstuvwxyz0123456789",
                "gh [REDACTED]",
            ),
            (
                "gh (github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuv)",
                "gh ([REDACTED])",
            ),
            (
                "slack xoxb-1234567890-0987654321-AbCdEfGhIj",
                "slack [REDACTED]",
            ),
            ("slack xoxp-1234567890-AbCdEfGhIj", "slack [REDACTED]"),
            (
                "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "stripe [REDACTED]",
            ),
            (
                "stripe rk_live_4eC39HqLyjWDarjtT1zdp7dc",
                "stripe [REDACTED]",
            ),
            (
                "stripe sk_test_4eC39HqLyjWDarjtT1zdp7dc",
                "stripe [REDACTED]",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl end",
                "jwt [REDACTED] end",
            ),
            (
                "none eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.",
                "none [REDACTED].",
            ),
            (
                r#""a\nBearer abc\tghp_abcdefghijklmnopqrstuvwxyz""#,
                r#""a\nBearer [REDACTED]\t[REDACTED]""#,
            ),
            (r#""a\napi_key=abc""#, r#""a\napi_key=[REDACTED]""#),
        ]);
    }

    #[test]
    fn key_value_pairs() {
        check(&[
            (
                "https://x/v1?key=AIzaXYZ&alt=sse",
                "https://x/v1?key=[REDACTED]&alt=sse",
            ),
            (
                "password=hunter2 token=abc",
                "password=[REDACTED] token=[REDACTED]",
            ),
            ("client_secret=abc123", "client_secret=[REDACTED]"),
            ("db_password=abc123", "db_password=[REDACTED]"),
            (
                "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG",
                "aws_secret_access_key=[REDACTED]",
            ),
            ("password: hunter2", "password: [REDACTED]"),
            ("api_key = abc123", "api_key = [REDACTED]"),
            ("PASSWORD=abc", "PASSWORD=[REDACTED]"),
            ("Api-Key: abc", "Api-Key: [REDACTED]"),
            (r#"{"api_key":"abc"}"#, r#"{"api_key":"[REDACTED]"}"#),
            (
                r#"{"password": "a \"b\" c"}"#,
                r#"{"password": "[REDACTED]"}"#,
            ),
            (
                r#"{"apiKey": "abc", "model": "gpt"}"#,
                r#"{"apiKey": "[REDACTED]", "model": "gpt"}"#,
            ),
            (
                r#"body: "{\"token\":\"abc\"}""#,
                r#"body: "{\"token\":\"[REDACTED]\"}""#,
            ),
            ("{'pwd': 'abc'}", "{'pwd': '[REDACTED]'}"),
            (
                "Config { private_key: \"abc\" }",
                "Config { private_key: \"[REDACTED]\" }",
            ),
            ("(session_id=abc)", "(session_id=[REDACTED])"),
            ("x_auth=abc, jwt=def;", "x_auth=[REDACTED], jwt=[REDACTED];"),
            (
                "url=https://x/?access_token=abc&n=1",
                "url=https://x/?access_token=[REDACTED]&n=1",
            ),
            ("password=\"\"", "password=\"\""),
            (
                "output_tokens=12 max_tokens: 64 token_count=3 auth_error: 401",
                "output_tokens=12 max_tokens: 64 token_count=3 auth_error: 401",
            ),
        ]);
    }

    #[test]
    fn url_userinfo() {
        check(&[
            (
                "postgres://admin:pw@db.internal:5432/app",
                "postgres://admin:[REDACTED]@db.internal:5432/app",
            ),
            ("redis://:s3cret@cache", "redis://:[REDACTED]@cache"),
            (
                r#"{"url":"mysql://u:p@ss@h/x","e":"a@b"}"#,
                r#"{"url":"mysql://u:[REDACTED]@h/x","e":"a@b"}"#,
            ),
            ("https://example.com:443/a@b", "https://example.com:443/a@b"),
        ]);
    }

    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            "nothing to see",
            "a task-list sk-short",
            "error: upstream timed out after 30s",
            "author: Jane, authority=dns",
            "model=gpt-4o outcome=timeout duration_ms=1200 user_id=u-1 request_id=r-9",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn secret_field_names() {
        for name in [
            "authorization",
            "Proxy-Authorization",
            "api_key",
            "x-api-key",
            "X-Goog-Api-Key",
            "apiKey",
            "APIKEY",
            "key",
            "token",
            "access_token",
            "id_token",
            "refresh_token",
            "x_token",
            "auth_token",
            "api_token",
            "accessToken",
            "password",
            "db_password",
            "PASSWORD",
            "passwd",
            "pwd",
            "db_pass",
            "secret",
            "client_secret",
            "aws_secret_access_key",
            "private_key",
            "privateKey",
            "cookie",
            "set-cookie",
            "credentials",
            "auth",
            "x_auth",
            "auth_header",
            "jwt",
            "session",
            "session_id",
            "sessionid",
            "sessionId",
        ] {
            assert!(is_secret_field(name), "{name}");
        }
        for name in [
            "user_id",
            "request_id",
            "provider",
            "route",
            "model",
            "outcome",
            "duration_ms",
            "output_tokens",
            "input_tokens",
            "outputTokens",
            "tokens_per_second",
            "max_tokens",
            "token_count",
            "auth_error",
            "auth_error_rate",
            "author",
            "authority",
            "oauth_provider",
            "cache_key",
            "public_key",
            "monkey",
            "secretary",
            "session_duration_ms",
            "message",
            "",
        ] {
            assert!(!is_secret_field(name), "{name}");
        }
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
