//! Redaction of secrets before an error record is stored.
//!
//! Two rules: a field whose name looks like a credential keeps no value at all, and any text
//! (messages, other values, span fields) has credential-shaped substrings replaced.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexSet};

/// What a redacted value or substring is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Name parts (see [`is_secret_field`]) that make a field secret wherever they appear.
const SECRET_PARTS: [&str; 20] = [
    "authorization",
    "secret",
    "secrets",
    "cookie",
    "cookies",
    "credential",
    "credentials",
    "creds",
    "passcode",
    "jwt",
    "pwd",
    "passphrase",
    "bearer",
    "apikey",
    "apikeys",
    "sessionid",
    "privatekey",
    "signature",
    "sig",
    "subscription",
];

/// Name parts that make a field secret as its last part or before a [`HOLDER_PARTS`] one:
/// `access_token`, `auth_header`, `session_id` are secret; `token_count`, `auth_error` are not.
/// `authentication` is one too: the header `Authentication: …` is secret, the count
/// `authentication_errors` is not.
const TRAILING_PARTS: [&str; 5] = ["token", "auth", "authentication", "session", "pass"];

/// Parts that may follow a [`TRAILING_PARTS`] one and keep the name secret.
const HOLDER_PARTS: [&str; 4] = ["id", "header", "value", "string"];

/// Parts that make a following `tokens` part secret, as a last part or before a
/// [`HOLDER_PARTS`] one (`auth_tokens`, `access_tokens`); after any other part `tokens` counts
/// (`max_tokens`, `output_tokens`, `prompt_tokens`).
const TOKEN_KINDS: [&str; 16] = [
    "auth", "access", "refresh", "id", "api", "bearer", "session", "oauth", "csrf", "xsrf",
    "client", "secret", "app", "bot", "service", "personal",
];

/// Parts that make a following `key` or `keys` part secret anywhere in the name (`api_key`,
/// `api_keys`, `api_key_id`, `private_key_pem`).
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

/// Parts before a last `key` part that name a key which is no credential (`cache_key`,
/// `public_key`, `partition_key`); before any other part a last `key` is secret
/// (`groq_key`, `azure_openai_key`).
const NON_SECRET_KEY_KINDS: [&str; 31] = [
    "cache",
    "public",
    "primary",
    "foreign",
    "sort",
    "partition",
    "range",
    "idempotency",
    "dedup",
    "dedupe",
    "routing",
    "object",
    "map",
    "dict",
    "hash",
    "lookup",
    "row",
    "group",
    "shard",
    "bucket",
    "composite",
    "compound",
    "unique",
    "index",
    "surrogate",
    "natural",
    "candidate",
    "i18n",
    "translation",
    "message",
    "locale",
];

/// Ordinary words ending in `key`, which a last part ending in `key` (`groqkey`, `openaikey`)
/// is not.
const KEY_WORDS: [&str; 16] = [
    "monkey", "donkey", "turkey", "hockey", "jockey", "whiskey", "lackey", "flunkey", "malarkey",
    "hotkey", "turnkey", "latchkey", "pokey", "hokey", "jokey", "smokey",
];

/// Endings of a one-part name that make it secret (`accesstoken`, `clientsecret`, `xapikey`).
const SECRET_ENDINGS: [&str; 5] = ["token", "secret", "apikey", "sessionid", "privatekey"];

/// Whether a field of this name holds a secret.
///
/// The name is split into lowercase parts at every character other than an ASCII letter or
/// digit (`_`, `-`, `.`, ...), where a lowercase letter or digit is followed by an uppercase
/// one (`apiKey` is `api`, `key`), and before the last letter of a run of two or more
/// uppercase ones followed by a lowercase one (`openAIKey` is `open`, `ai`, `key`). Digits
/// ending a part are dropped, and a part of digits alone is skipped (`token2`, `apiKey2`,
/// `ACCESS_TOKEN_2` read as `token`, `api_key`, `access_token`). It is secret when:
///
/// - a part is `authorization`, `secret(s)`, `cookie(s)`, `credential(s)`, `creds`,
///   `passcode`, `jwt`, `pwd`, `passphrase`, `bearer`, `apikey`, `sessionid`, `privatekey`,
///   `signature`, `sig` or `subscription`, or contains `password` or `passwd` (`password`,
///   `db_password`, `PASSWORD`, `set-cookie`, `client_secret`, `aws_secret_access_key`,
///   `Proxy-Authorization`, `X-Amz-Signature`, `sig`, `Ocp-Apim-Subscription-Key`, `creds`,
///   `user_passcode`);
/// - `token`, `auth`, `authentication`, `session` or `pass` is the last part or is followed
///   only by `id`, `header`, `value` or `string` (`token`, `access_token`, `id_token`,
///   `x_token`, `x_auth`, `auth_header`, `Authentication`, `session`, `session_id`,
///   `sessionId`, `db_pass`), and so is `tokens` after `auth`, `access`, `refresh`, `id`,
///   `api`, `bearer`, `session`, `oauth`, `csrf`, `xsrf`, `client`, `secret`, `app`, `bot`,
///   `service` or `personal` (`auth_tokens`; not `max_tokens`);
/// - `key` or `keys` follows `api`, `private`, `secret`, `access`, `signing`, `encryption`,
///   `master`, `client`, `ssh`, `auth`, `session` or `license` (`api_key`, `x-api-key`,
///   `Api-Key`, `apiKey`, `api_keys`, `private_key`, `api_key_id`);
/// - `key` is the last part (or the whole name) and the part before it is not one of `cache`,
///   `public`, `primary`, `foreign`, `sort`, `partition`, `range`, `idempotency`, `dedup(e)`,
///   `routing`, `object`, `map`, `dict`, `hash`, `lookup`, `row`, `group`, `shard`, `bucket`,
///   `composite`, `compound`, `unique`, `index`, `surrogate`, `natural`, `candidate`, `i18n`,
///   `translation`, `message` or `locale` (`key`, `groq_key`, `azure_openai_key`);
/// - the last part ends with `key` after one of those kinds or other letters, unless it is an
///   ordinary word (`monkey`, `turkey`, `hockey`, `hotkey`, ...): `GROQKEY`, `openaikey`
///   are secret, `cachekey` and `publickey` are not;
/// - a one-part name ends with `token`, `secret`, `apikey`, `sessionid` or `privatekey`
///   (`accesstoken`, `clientsecret`, `xapikey`).
///
/// Parts are compared whole, so counts and ordinary words stay visible: `output_tokens`,
/// `input_tokens`, `max_tokens`, `tokens_per_second`, `token_count`, `auth_error`,
/// `authentication_method`, `author`, `authority`, `oauth_provider`, `cache_key`,
/// `public_key`, `idempotency_key`, `key_id`, `keyboard`, `tokenizer`, `secretary`, `user_id`
/// and `request_id` are not secret.
///
/// ```
/// use tower_stream_monitor::errors::is_secret_field;
/// assert!(is_secret_field("Authorization"));
/// assert!(is_secret_field("x-api-key"));
/// assert!(is_secret_field("refresh_token"));
/// assert!(is_secret_field("sessionId"));
/// assert!(is_secret_field("groq_key"));
/// assert!(!is_secret_field("cache_key"));
/// assert!(!is_secret_field("user_id"));
/// assert!(!is_secret_field("output_tokens"));
/// assert!(!is_secret_field("author"));
/// ```
pub fn is_secret_field(name: &str) -> bool {
    let normal = name_parts(name);
    let mut previous: Option<&str> = None;
    // The part before `previous`: what kind of key a last `key` is.
    let mut before_previous: Option<&str> = None;
    // A `TRAILING_PARTS` word followed by `HOLDER_PARTS` only, so far.
    let mut trailing = false;
    let mut count = 0;
    for part in normal.split('_') {
        // A number is no word, nor are the digits ending one (`token_2`, `secret2`).
        let part = part.trim_end_matches(|c: char| c.is_ascii_digit());
        if part.is_empty() {
            continue;
        }
        let after_kind = |kinds: &[&str]| previous.is_some_and(|p| kinds.contains(&p));
        if SECRET_PARTS.contains(&part)
            || part.contains("password")
            || part.contains("passwd")
            || (matches!(part, "key" | "keys") && after_kind(&KEY_KINDS))
        {
            return true;
        }
        if TRAILING_PARTS.contains(&part) || (part == "tokens" && after_kind(&TOKEN_KINDS)) {
            trailing = true;
        } else if !HOLDER_PARTS.contains(&part) {
            trailing = false;
        }
        before_previous = previous;
        previous = Some(part);
        count += 1;
    }
    let last_key = previous.is_some_and(|last| match last.strip_suffix("key") {
        Some("") => !before_previous.is_some_and(|p| NON_SECRET_KEY_KINDS.contains(&p)),
        Some(kind) => !NON_SECRET_KEY_KINDS.contains(&kind) && !KEY_WORDS.contains(&last),
        None => false,
    });
    let one_part_secret = |only: &str| SECRET_ENDINGS.iter().any(|ending| only.ends_with(ending));
    trailing || last_key || (count == 1 && previous.is_some_and(one_part_secret))
}

/// `name` in lowercase, its parts joined by `_` (see [`is_secret_field`]).
fn name_parts(name: &str) -> String {
    let mut normal = String::with_capacity(name.len() + 4);
    let mut previous_lower = false;
    // Uppercase letters right before the current one: an acronym (`AI` in `openAIKey`).
    let mut upper_run = 0;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_alphanumeric() {
            if c.is_ascii_uppercase() {
                let next_lower = chars.peek().is_some_and(char::is_ascii_lowercase);
                if previous_lower || (upper_run >= 2 && next_lower) {
                    normal.push('_');
                }
                upper_run += 1;
            } else {
                upper_run = 0;
            }
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            normal.push(c.to_ascii_lowercase());
        } else {
            previous_lower = false;
            upper_run = 0;
            normal.push('_');
        }
    }
    normal
}

/// `name <separator> value` pairs in text; the value is redacted when
/// [`is_secret_field`]`(name)`. An escape `\n`, `\r`, `\t` (Debug or JSON text) before the name
/// is not part of it. Separators: `=`, `:`, `=>`, `:=`, with spaces or tabs around them, then
/// optionally a line break and indentation (YAML); the name may be quoted, behind any number
/// of backslashes (`"api_key":`, `\"api_key\":`, `\\\"api_key\\\":`). A quoted name followed
/// by `,` is a pair too (`comma`), when it opens a tuple (`("x-api-key", "v")`, also over lines
/// as pretty Debug writes it; checked by [`opens_tuple`]).
///
/// Two more forms name a value: a command-line flag (`flag`: `-` or `--` then the name, maybe
/// quoted, then spaces or a `,`: `--password x`, Debug of a `Command` `"--api-key" "x"`, an
/// argument list `["--token", "x"]`), when the dash starts a word (checked by
/// [`starts_flag`]); and an XML element's start tag (`tag`: `<Password>`, `<ns:apiKey a="1">`,
/// its attributes quoted), whose text, to the next `<` (CDATA and comments read through), is the
/// value (see [`xml_text_span`]).
///
/// [`VALUE_START`], after it, finds where a value starts; [`value_span`] finds where it ends:
/// - `done`: already redacted (kept, so redaction is idempotent), maybe after an auth scheme;
/// - `quote`: `"`, `\"`, `\\\"`, ... opening a quoted value (ends at its closing quote), maybe
///   after a `b` (a byte string's Debug: `b"…"`), maybe on the next line unindented (JSON
///   `"value":\n"…"`; a bare word there is rather the next YAML key);
/// - `sq`: `'` opening a single-quoted value, maybe after a `b` (Python's `b'…'`);
/// - `open`: a bracket, or a Rust name or path right before `(` or ` {` (`Some(`,
///   `Token(`, `a::B {`), maybe on the next line as a `quote`, opening a value that ends at its
///   balanced closing bracket (and the rest of a word glued to it: `ab(c)d`);
/// - `bare`: after an optional auth scheme (`Bearer`, `Basic`, `Token`, `Digest`), a word up to
///   whitespace or a query's next parameter (`&name=`), less the closing brackets, quotes and
///   `,`/`;` ending it (`password=a;b` and `password=a<b>"c` are one value, `x=a, y=b` two,
///   `(x=a)` keeps its `)`: see [`bare_value_end`]); after a scheme, its
///   auth-params too (`Digest username="u", response="…"`, see [`auth_params_end`]); a YAML
///   block scalar's `|` (and `|-`, ...) and the indented block after it, as for `block`;
/// - `block`: a YAML folded block scalar's `>` (`>-`, ...): the indented block after it (see
///   [`yaml_block_end`]).
const KEY_SEPARATOR: &str = r#"(?x)
    (?:\\[nrt])?
    (?:
        (?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)
        (?:
            (?:\\*["'])? [\t\ ]* (?:=>|:=|[:=]) [\t\ ]* (?:(?:\r?\n|(?:\\r)?\\n)[\t\ ]+)?
          | (?P<comma>\\*["'][\t\ ]*,(?:[\t\ \r\n]|\\[rnt])*)
        )
      | (?P<flag>--?[A-Za-z][A-Za-z0-9_.\-]*) (?:\\*["'])? (?:[\t\ ]+|[\t\ ]*,[\t\ ]*)
      | (?P<tag><[A-Za-z_][A-Za-z0-9_.:\-]*)
        (?:[\t\r\n\ ]+ [A-Za-z_:][A-Za-z0-9_.:\-]* [\t\ ]*=[\t\ ]* (?:\\*"[^"]*"|'[^']*'))* [\t\r\n\ ]* >
    )"#;

/// Where a value starts, after [`KEY_SEPARATOR`] (see it).
const VALUE_START: &str = r#"(?x)
    (?:
        (?P<done>(?:(?i:bearer|basic|token|digest)[\t\ ]+)?\[REDACTED\])
      | (?:\r?\n|(?:\\r)?\\n)? b?(?P<quote>\\*")
      | b?(?P<sq>')
      | (?:\r?\n|(?:\\r)?\\n)?
        (?P<open>[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*(?:\(|\ \{)|[\[{(])
      | (?:(?P<scheme>(?i:bearer|basic|token|digest))[\t\ ]+)?
        (?P<bare>(?:[^\s&'"<>\\)\]},;]|[,;]+[^\s&'"<>\\)\]},;])+)
      | (?P<block>>[0-9+\-]{0,2})
    )"#;

/// A name right before `(`: the Debug of a tuple struct or variant (`Bearer("…")`,
/// `Basic("u", "…")`, `ApiKey("…")`), whose contents are hidden when the name is a secret's
/// (see [`redact_credential_calls`]).
const CREDENTIAL_CALL: &str = r"(?-u:\b)[A-Za-z_][A-Za-z0-9_]*\(";

/// A name, its separator and the start of its value: [`KEY_SEPARATOR`] then [`VALUE_START`].
fn key_value_pattern() -> String {
    format!("{KEY_SEPARATOR}{VALUE_START}")
}

/// Where a [`SHAPES`] token may start: at an ASCII word boundary, or after an escape `\n`,
/// `\r`, `\t` as Debug and JSON write them (`"line\nBearer abc"`), which the replacement keeps.
/// `(?-u:\b)` needs no regex feature and keeps the fast engines usable on non-ASCII text.
const TOKEN_START: &str = r"(?:(?P<esc>\\[nrt])|(?-u:\b))";

/// Where a [`KEY_SHAPES`] token may start: where a [`SHAPES`] one may, and also right after
/// `_` (`OPENAI_API_KEY_sk-…`, an environment variable's name glued to its value) or after an
/// ANSI CSI sequence (`ESC[33m`, a colour code ending in a letter), raw or as Debug
/// (`\u{1b}`) and shells (`\x1b`, `\033`, `\e`) write its escape; both are kept. Inside a run
/// of letters and digits there is still no start: `task-1234567890abcdef` is no `sk-` key.
const KEY_START: &str =
    r"(?:(?P<esc>\\[nrt]|_|(?:\x1b|\\u\{1b\}|\\x1[bB]|\\033|\\e)\[[0-?]*[ -/]*[@-~])|(?-u:\b))";

/// Credential shapes found anywhere in text, each with its replacement (`${keep}`: a kept
/// prefix). Each is compiled after [`TOKEN_START`], and `${esc}` goes before its replacement.
const SHAPES: [(&str, &str); 6] = [
    // A PEM private key, between its `BEGIN` and `END` lines (both kept), its lines broken by
    // newlines or by `\n` as Debug and JSON write them; or to the end of a text cut inside it.
    // PGP armor too (`BEGIN PGP PRIVATE KEY BLOCK`). Matched from `BEGIN`: the dashes before
    // it leave no word boundary to start at.
    (
        r"BEGIN(?P<keep>[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)(?s:.*?)(?:(?P<end>-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)|\z)",
        "BEGIN${keep}[REDACTED]${end}",
    ),
    // URL userinfo: `postgres://admin:pw@host` keeps the scheme, user and host. The password
    // runs to the last `@` before whitespace, a quote, `<` or `>`: it may hold `/`, `?`, `#`
    // and `@` (`admin:pa/ss#w@rd@host`), which are its own until the host. A port and a path
    // holding `@` (`https://host:443/users/@me`) are hidden too: a password may look like one.
    (
        r#"(?P<keep>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@"'<>\\]*:)[^\s"'<>@][^\s"'<>]*@"#,
        "${keep}[REDACTED]@",
    ),
    // A token as URL user, without a password (`https://<token>@gitlab.com`): 16 characters
    // or more, so `ssh://git@host` stays.
    (
        r#"(?P<keep>[A-Za-z][A-Za-z0-9+.\-]*://)[^\s:/?#"'<>\\@\[]{16,}@"#,
        "${keep}[REDACTED]@",
    ),
    // `Bearer <token>` (Authorization header values pasted into messages), to the next
    // whitespace, quote, angle bracket or backslash (an escaped quote, `\"`): a token pasted
    // into text may hold any other character (`abc%2Bdef`, `abc:def`), and all of it is hidden.
    (
        r#"(?P<keep>(?i:bearer))[\t ]+[A-Za-z0-9\-._~+/][^\s"'<>\\]*"#,
        "${keep} [REDACTED]",
    ),
    // `Bearer "<token>"`: a token formatted with Debug (`Bearer {token:?}`), at any escaping
    // level; its quotes are kept.
    (
        r#"(?P<keep>(?i:bearer)[\t ]+\\*["'])[^\s"'\\]+"#,
        "${keep}[REDACTED]",
    ),
    // `Basic <base64>`: the token must have a digit, `+`, `/` or a lowercase letter followed by
    // an uppercase one, so `Basic authentication` stays; hidden to where `Bearer`'s token
    // ends.
    (
        r#"(?P<keep>(?i:basic))[\t ]+[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z])[^\s"'<>\\]*"#,
        "${keep} [REDACTED]",
    ),
];

/// Provider keys and tokens, found anywhere in text as [`SHAPES`] are, but compiled after
/// [`KEY_START`]: their prefixes are distinctive enough to be read after `_` or a colour code.
const KEY_SHAPES: [(&str, &str); 13] = [
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
    // Groq keys (`gsk_` and 52 characters).
    (r"gsk_[A-Za-z0-9]{20,}", REDACTED),
    // GitLab personal access tokens (`glpat-` and 20 characters).
    (r"glpat-[A-Za-z0-9_\-]{12,}", REDACTED),
    // Hugging Face tokens (`hf_` and 34 letters); the length keeps `hf_model_id` visible.
    (r"hf_[A-Za-z0-9]{30,}", REDACTED),
    // xAI keys (`xai-` and 80 characters).
    (r"xai-[A-Za-z0-9]{20,}", REDACTED),
    // Replicate tokens (`r8_` and 37 characters).
    (r"r8_[A-Za-z0-9]{20,}", REDACTED),
    // Perplexity keys (`pplx-` and 48 characters).
    (r"pplx-[A-Za-z0-9]{20,}", REDACTED),
];

/// A [`SHAPES`] entry as compiled: the pattern after [`TOKEN_START`], the replacement after
/// the escape it kept.
fn shape(pattern: &str, replacement: &str) -> (String, String) {
    shape_after(TOKEN_START, pattern, replacement)
}

/// A [`KEY_SHAPES`] entry as compiled: the pattern after [`KEY_START`], the replacement after
/// what it kept there.
fn key_shape(pattern: &str, replacement: &str) -> (String, String) {
    shape_after(KEY_START, pattern, replacement)
}

/// A pattern after `start` (which captures `esc`, kept before the replacement).
fn shape_after(start: &str, pattern: &str, replacement: &str) -> (String, String) {
    (
        format!("{start}{pattern}"),
        format!("${{esc}}{replacement}"),
    )
}

/// Every [`SHAPES`] and [`KEY_SHAPES`] entry as compiled.
fn all_shapes() -> impl Iterator<Item = (String, String)> {
    let words = SHAPES.iter().map(|(p, r)| shape(p, r));
    words.chain(KEY_SHAPES.iter().map(|(p, r)| key_shape(p, r)))
}

/// The compiled [`KEY_SEPARATOR`], [`key_value_pattern`] and [`SHAPES`].
struct Patterns {
    /// Names and separators: scanned for names, in one pass over the text.
    key: Regex,
    /// Names, separators and values, anchored: matched only where a secret name is found,
    /// there and nowhere after.
    key_value: Regex,
    /// Names before `(`: scanned in one pass, see [`redact_credential_calls`].
    call: Regex,
    /// All of `shapes`: which of them occur, in one pass (most texts have none).
    any_shape: RegexSet,
    shapes: Vec<(Regex, String)>,
}

fn compile() -> Result<Patterns, regex::Error> {
    let key = Regex::new(KEY_SEPARATOR)?;
    let key_value = Regex::new(&format!(r"\A(?:{})", key_value_pattern()))?;
    let shapes: Vec<(Regex, String)> = all_shapes()
        .map(|(pattern, replacement)| Ok((Regex::new(&pattern)?, replacement)))
        .collect::<Result<_, regex::Error>>()?;
    let any_shape = RegexSet::new(shapes.iter().map(|(pattern, _)| pattern.as_str()))?;
    Ok(Patterns {
        key,
        key_value,
        call: Regex::new(CREDENTIAL_CALL)?,
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
///   with optional spaces, and a line break with indentation after them (YAML
///   `password:\n  x`); the name bare or quoted, behind any number of backslashes (JSON
///   `{"api_key":"x"}`, Debug-escaped `\"api_key\":\"x\"`, JSON inside a Debug string
///   `\\\"api_key\\\":\\\"x\\\"`); a quoted name then `,` inside a tuple
///   (`[("x-api-key", "x")]`, also over lines as `{:#?}` writes it); a command-line flag
///   (`--password x`, `-token x`, `"--api-key" "x"` as the Debug of a `Command` writes it,
///   `["--token", "x"]`; a flag after it, `--no-password --verbose`, is no value). Values:
///   - `"quoted"` (any escaping level; on the next line too, `"api_key":\n"x"`) or
///     `'quoted'`, also as a byte string (`b"x"`, `b'x'`), to the closing quote, or to the end
///     of the text when there is none;
///   - a bracket, or a Rust name or path before `(` or ` {` (`Some("x")`, `Token("x")`,
///     `a::B { .. }`, JSON `{"value": "x"}`, `["x"]`; on the next line too): the whole value,
///     to its balanced closing bracket (brackets in quoted strings are skipped) and the rest
///     of a word glued to it (`ab(c)d`), or to the end of the text when the bracket is not
///     closed;
///   - bare: to whitespace or a query's next parameter (`&name=`), whatever it holds
///     (`password=k9<Lq>"vX2` whole), less the closing brackets, quotes, `<`, `>`, `\`, `&`
///     and `,`/`;` right before its end (`(x=a)`, `"x=a"`, `x_auth=a, jwt=b` two values);
///     a scheme before it is kept (`Authorization: Bearer [REDACTED]`), and auth-params
///     after it are hidden whole (`Token token="x"`, `Digest username="u", response="x"`); a
///     bare `Cookie`/`Set-Cookie` value is redacted to the end of its line;
///   - YAML: a block scalar (`password: |`, `api_key: >-`), or a value on the next lines
///     (`api_key:\n  - x`), with every following line indented more than the name's;
/// - the text of an XML element whose tag is a secret name (`<Password>x</Password>`,
///   `<apiKey>`, `<ns:Token a="1">`), to the next `<` that opens no CDATA section or comment;
/// - the contents of a tuple struct or variant, as Debug writes it, named by a secret name or
///   `Basic` (`Bearer("x")`, `Basic("u", "x")`, `ApiKey("x")`), to its balanced `)`;
/// - `Bearer <token>` and `Basic <base64>` (any case; the scheme is kept), and `Bearer "x"`
///   (a token formatted with Debug);
/// - JWTs (`eyJ…` followed by `.`-separated segments);
/// - OpenAI and Anthropic keys `sk-…` in any case (`sk-proj-`, `SK-PROJ-`, `sk-ant-`), Google
///   `AIza…`, AWS access key ids `AKIA…`/`ASIA…`, GitHub `ghp_`, `gho_`, `ghs_`, `ghu_`,
///   `ghr_`, `github_pat_`, Slack `xox?-`, `xapp-`, Stripe `sk_live_`, `sk_test_`, `rk_live_`,
///   `rk_test_`, Groq `gsk_`, GitLab `glpat-`, Hugging Face `hf_`, xAI `xai-`, Replicate
///   `r8_`, Perplexity `pplx-`; each at a word boundary, after `_` (`OPENAI_API_KEY_sk-…`) or
///   after an ANSI colour code (`ESC[33m`), never inside a word (`task-1234567890abcdef`);
/// - PEM private keys and PGP private key blocks, between their `BEGIN` and `END` lines;
/// - URL userinfo: the password of `scheme://user:password@host` to the last `@` before
///   whitespace, a quote, `<` or `>` (it may hold `/`, `?`, `#`, `@`; scheme, user and host
///   are kept; a port and a path holding `@` are hidden as one), and a user of 16 characters
///   or more without a password (`https://<token>@host`).
///
/// Encoded secrets are found too: when the redacted text still has percent escapes (`%3D`),
/// JSON `\uXXXX` escapes or `\/`, a copy is decoded (up to three times, for text encoded twice
/// or more) and redacted; if that hides anything more, the redacted decoded copy is returned,
/// so `?next=%3Fapi_key%3Dx` comes back as `?next=?api_key=[REDACTED]`.
///
/// Any tuple whose first item is a secret name hides its second, header or not, and so does a
/// pair in a list of pairs (`[["x-api-key", "…"]]`) or an object naming it (`{"name":
/// "x-api-key", "value": "…"}`, Python's `{'name': 'password', 'value': '…'}`, Go's
/// `{Name:OPENAI_API_KEY Value:…}`, a YAML mapping `- name: OPENAI_API_KEY` then
/// `  value: …`); a list of names (`["api_key", "model"]`) and text that only
/// looks like a credential
/// (`Basic authentication`) are kept. Redacting the result again changes nothing, unless it
/// was encoded more than three times: the text is read again until nothing more changes (a
/// hidden value can bare a pair or an element glued to it, `<password>x<token>…`), four times
/// at most, and one still changing then is replaced whole. If the patterns could not be
/// compiled, the whole text is replaced.
///
/// ```
/// use tower_stream_monitor::errors::redact;
/// assert_eq!(redact("auth failed for Bearer abc.def-123"), "auth failed for Bearer [REDACTED]");
/// assert_eq!(redact("GET /v1?api_key=s3cr3t&x=1"), "GET /v1?api_key=[REDACTED]&x=1");
/// assert_eq!(redact("key sk-ant-api03-AbCdEf123456 rejected"), "key [REDACTED] rejected");
/// assert_eq!(redact(r#"{"password": "hunter2"}"#), r#"{"password": "[REDACTED]"}"#);
/// assert_eq!(redact("postgres://admin:pw@db/app"), "postgres://admin:[REDACTED]@db/app");
/// assert_eq!(redact(r#"Config { api_key: Some("x") }"#), "Config { api_key: [REDACTED] }");
/// assert_eq!(redact("q=%3Fapi_key%3Dx"), "q=?api_key=[REDACTED]");
/// ```
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(patterns) = PATTERNS.as_ref() else {
        return Cow::Borrowed(REDACTED);
    };
    let plain = redact_plain(patterns, text);
    // Encoded secrets (`%3D`, `\u0073`, `\/`). Decoded after the plain pass, whose values are
    // already replaced whole: decoding first could split one (`password=a%20b`).
    if let Some(decoded) = decode(&plain) {
        let redacted = redact_plain(patterns, &decoded);
        if redacted != decoded.as_str() {
            return Cow::Owned(redacted.into_owned());
        }
    }
    plain
}

/// Passes of [`redact_pass`] a text that the first one changed may take again before it stops
/// changing; one that still changes at the last is hidden whole.
const PASSES: usize = 4;

/// [`redact`] without decoding: [`redact_pass`] again until the text stops changing. A value
/// hidden may leave a pair or an element right after it that the pass read as part of a word
/// (`<password>x<token>…`, `Bearer abc<password>…`); each nesting of that kind takes a pass, so
/// a text still changing after [`PASSES`] is hidden whole rather than read again and again.
fn redact_plain<'t>(patterns: &Patterns, text: &'t str) -> Cow<'t, str> {
    let mut out = redact_pass(patterns, text);
    if matches!(out, Cow::Borrowed(_)) {
        // Nothing hidden: nothing to read again (most texts).
        return out;
    }
    for _ in 0..PASSES {
        let again = redact_pass(patterns, &out);
        if again == out {
            return out;
        }
        out = Cow::Owned(again.into_owned());
    }
    Cow::Borrowed(REDACTED)
}

/// One pass: pairs written as an object naming them (first: a name member may be a secret's
/// own, `{"Key": "password", …}`, and be hidden by the next), pairs, then credential types,
/// then shapes.
fn redact_pass<'t>(patterns: &Patterns, text: &'t str) -> Cow<'t, str> {
    let mut out = redact_named_values(patterns, text);
    if let Cow::Owned(replaced) = redact_key_values(patterns, &out) {
        out = Cow::Owned(replaced);
    }
    if let Cow::Owned(replaced) = redact_credential_calls(patterns, &out) {
        out = Cow::Owned(replaced);
    }
    for i in patterns.any_shape.matches(&out).iter() {
        let (pattern, replacement) = &patterns.shapes[i];
        if let Cow::Owned(replaced) = pattern.replace_all(&out, replacement.as_str()) {
            out = Cow::Owned(replaced);
        }
    }
    out
}

/// Replaces the values of secret-named pairs.
///
/// The text is scanned for names and separators alone; a value is matched only after a secret
/// name. Matching values while scanning read each innocent value whole, and a value holding
/// more pairs (`a=a=a=…`) was read again from each of them: quadratic in the text.
fn redact_key_values<'t>(patterns: &Patterns, text: &'t str) -> Cow<'t, str> {
    let mut out = String::new();
    // `text[..copied]` has been handled (pushed to `out`, if anything was replaced).
    let mut copied = 0;
    let mut at = 0;
    // Where the start tag of a secret-named XML element ends: its text is hidden once its
    // attributes have been read as pairs (`<Bearer hint="api_key=…">`).
    let mut element: Option<usize> = None;
    let mut reads = CommentReads::default();
    loop {
        let next = patterns.key.find_at(text, at);
        if let Some(open_end) = element {
            if next.is_none_or(|found| found.start() >= open_end) {
                element = None;
                // Unless a value in its attributes was hidden past the tag's end. Otherwise
                // `next` is searched for again, and read as any match.
                if copied <= open_end {
                    if let Some((start, end)) = xml_text_span(text, open_end, &mut reads) {
                        out.push_str(&text[copied..start]);
                        out.push_str(REDACTED);
                        copied = end;
                        at = end;
                    }
                }
                continue;
            }
        }
        let Some(found) = next else {
            break;
        };
        // Most pairs have innocent names (`error: …`): tell from the name, without captures,
        // and go on right after it (into the value: `url=https://x/?api_key=…`).
        let (form, name, name_end) = match_name(found.as_str());
        let name_end = found.start() + name_end;
        let name_start = name_end - name.len();
        if !is_secret_field(name) {
            // A tag's name is read again as text: `<token:x>` may hold a pair.
            at = if form == NameForm::Tag {
                name_start
            } else {
                name_end
            };
            continue;
        }
        let from = found.start();
        match form {
            NameForm::Tag => {
                // An element's text, to the next `<`: no separator or value pattern applies.
                // Its name and attributes are read first, as any text (`<password:x>` may be
                // a pair glued to a word: `said<password:x>`).
                if !follows_word(&text[..name_start - 1])
                    || closed_after_text(text, found.end(), name, &mut reads)
                {
                    element = Some(found.end());
                }
                at = name_start;
                continue;
            }
            NameForm::Flag if !starts_flag(&text[..from], found.as_str()) => {
                // A dash inside a word (`pre-auth step`): no flag.
                at = name_end;
                continue;
            }
            NameForm::Flag | NameForm::Pair => {}
        }
        // Anchored where the name starts: a search on from there would read the rest of the
        // text for each name with no value (`password=&password=&…`), quadratic again.
        let Some(caps) = patterns.key_value.captures(&text[from..]) else {
            // No value after this name (`password=` at the end): go on after it.
            at = name_end;
            continue;
        };
        if caps.name("comma").is_some() && !opens_tuple(&text[..name_start]) {
            // `["api_key", "model"]`: a list of names, not a pair.
            at = name_end;
            continue;
        }
        if caps.name("flag").is_some() && next_is_flag(&text[from + caps_end(&caps)..]) {
            // `--no-password --verbose`: a flag of no value; the next one is read on its own.
            at = name_end;
            continue;
        }
        let Some((start, end)) = value_span(&text[from..], &caps, &text[..from]) else {
            // Empty or already redacted.
            at = caps.get(0).map_or(name_end, |whole| from + whole.end());
            continue;
        };
        let (start, end) = (from + start, from + end);
        if start < copied {
            // Inside what is hidden already (read on from a name it ended in): nothing to add.
            at = end.max(copied);
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
        // A value hidden to the end of its line (`Authorization: Key … client_secret:`) may
        // end in a YAML name whose value is on the next lines: read on from that name.
        at = yaml_name_ending(text, start, end).unwrap_or(end);
    }
    if copied == 0 {
        Cow::Borrowed(text)
    } else {
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }
}

/// The names of a member that names the pair its object is (`{"name": "x-api-key", "value":
/// "…"}`: HAR headers, Kubernetes' `env`, `[{"Key": "password", "Value": "…"}]`); any case.
const PAIR_NAMES: [&str; 6] = ["name", "key", "header", "field", "param", "variable"];

/// Objects [`redact_named_values`] reads whole in one text, at most; past them, the text from
/// the next object naming a secret on is hidden. Each such object is read from its `{` to its
/// `}`, so the bound keeps hostile text (thousands of naming members, or objects never closed)
/// to a few passes over it.
const NAMED_OBJECTS: usize = 64;

/// The longest quoted name a naming member's value is read as (a header or variable name):
/// a longer one is no secret's name, and is not read to its end.
const NAME_REACH: usize = 128;

/// Hides the `value` of an object that names a secret in another member (see [`PAIR_NAMES`]),
/// in either order: the pair's name is a secret's ([`is_secret_field`]), so its value is the
/// secret, whatever it looks like (an Azure key is 32 hex digits, with nothing to tell it by).
/// The object is the one that holds the naming member (`{"meta": {…}, "name": …}` too, however
/// long what comes before the member), to its closing `}` (brackets in quoted strings, at any
/// escaping level, skipped); only its own `value` is hidden, not one of an object inside it.
/// On the way back to the object's `{` and between its members, strings quoted at the naming
/// member's escaping level (its name's quote, or for a bare name, as a Debug struct writes
/// it, its value's: `"…"`, `\"…\"`, ...) and char literals (`'}'`) are skipped whole, so
/// that a bracket in one (`"note": "range [0, 1)"`) is no structure. The name may be quoted
/// in single quotes (Python's repr, `{'name': 'password', 'value': '…'}`) or bare (Go's `%+v`,
/// `{Name:OPENAI_API_KEY Value:…}`). A YAML mapping's key whose value ends its line
/// (Kubernetes' `env`, `- name: OPENAI_API_KEY` then `  value: …`) names the pair of its
/// mapping instead: its sibling keys, at its column (see [`yaml_key`], [`yaml_mapping_start`]).
///
/// Bounded work whatever the text: at most [`NAMED_OBJECTS`] objects (or mappings) are read, a
/// member of an object already read is not looked back from again, nested brackets are passed
/// over whole, and the looks back share a budget of [`NAMED_OBJECTS`] times the text: past it,
/// the text from where the look stopped is hidden.
fn redact_named_values<'t>(patterns: &Patterns, text: &'t str) -> Cow<'t, str> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut objects: Vec<usize> = Vec::new();
    // Where the members of the objects read start: no need to look back from them again.
    let mut members_read: HashSet<usize> = HashSet::new();
    let mut looks = LookBudget {
        left: NAMED_OBJECTS.saturating_mul(text.len().max(1024)),
        held_by_none: None,
    };
    let mut at = 0;
    while let Some(found) = patterns.key.find_at(text, at) {
        let (form, name, name_end) = match_name(found.as_str());
        at = found.start() + name_end;
        if form != NameForm::Pair || !PAIR_NAMES.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        // `name: "…"`, not `("name", "…")`: the separator matched is no comma.
        let separated = patterns
            .key
            .captures(found.as_str())
            .is_some_and(|caps| caps.name("comma").is_none());
        let value = &text[found.end()..];
        let named = pair_name(value).filter(|(pair, _)| separated && is_secret_field(pair));
        let Some((_, pair_end)) = named else {
            continue;
        };
        let from = found.start();
        if members_read.contains(&from) {
            continue;
        }
        // A bare name (`name: \"x-api-key\"`, a Debug struct in a string) is at its value's
        // escaping level.
        let bare_level = value.bytes().take_while(|b| *b == b'\\').count();
        // A YAML key is known by its line: alone on it with its value (`- name: X`), where an
        // object's member is followed by more (`name: "x",` in pretty Debug).
        let yaml = if ends_line(&value[pair_end..]) {
            yaml_key(text, at - name.len())
        } else {
            None
        };
        let look = match yaml {
            Some((line, column)) => yaml_mapping_start(text, line, column, &mut looks),
            None => enclosing_object(text, from, bare_level, &mut looks),
        };
        let (open, level) = match look {
            LookBack::Object(open, level) => (open, level),
            LookBack::None => continue,
            LookBack::OutOfBudget(mut stopped) => {
                while !text.is_char_boundary(stopped) {
                    stopped -= 1;
                }
                spans.push((stopped, text.len()));
                break;
            }
        };
        if objects.contains(&open) {
            continue;
        }
        if objects.len() == NAMED_OBJECTS {
            spans.push((open, text.len()));
            break;
        }
        objects.push(open);
        let close = match yaml {
            Some((_, column)) => yaml_mapping_end(text, open, column),
            None => bracket_end(text, open),
        };
        // No member starts at a `{`; a mapping's first key may start its first line.
        let mut inner = open;
        // The object's structure, read up to each member.
        let mut walk = MemberWalk::new(open + 1, level);
        while let Some(member) = patterns.key.find_at(&text[..close], inner) {
            let (form, member_name, member_end) = match_name(member.as_str());
            inner = member.start() + member_end;
            let start = member.start();
            if let Some((_, column)) = yaml {
                // A key of the mapping's own starts its line, at its column.
                if yaml_key(text, inner - member_name.len()).is_none_or(|(_, c)| c != column) {
                    continue;
                }
            } else {
                // A member of this object's own: outside its strings and nested brackets (the
                // walk reads to the member's opening quote, if it has one at the object's
                // level).
                match walk.at_top(text, quote_start(text, start, level)) {
                    Place::Top => {}
                    Place::Quoted => continue,
                    // Nothing in a nested bracket is this object's: passed over whole.
                    Place::Nested(bracket) => {
                        inner = bracket_end(text, bracket).max(inner);
                        walk.jump_to(inner);
                        continue;
                    }
                }
            }
            members_read.insert(start);
            if form != NameForm::Pair || !member_name.eq_ignore_ascii_case("value") {
                continue;
            }
            let value = patterns
                .key_value
                .captures(&text[start..close])
                .filter(|caps| caps.name("comma").is_none())
                .and_then(|caps| value_span(&text[start..close], &caps, &text[..start]));
            if let Some((value_start, value_end)) = value {
                spans.push((start + value_start, start + value_end));
                inner = start + value_end;
            }
        }
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in spans {
        if start < copied {
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// The name `value` starts with and where it ends in `value`: quoted (in `"`, escaped or not,
/// or in `'` as Python's repr writes it), or bare as Go's `%+v` and YAML write it
/// (`OPENAI_API_KEY Value:…`), a run of name characters then whitespace, `,`, `;`, a closing
/// bracket or the end of the text. Read no further than [`NAME_REACH`] bytes: `None` when
/// `value` starts with neither, or the name is longer.
fn pair_name(value: &str) -> Option<(&str, usize)> {
    let body = value.trim_start_matches('\\');
    let bytes = body.as_bytes();
    match bytes.first() {
        Some(&quote @ (b'"' | b'\'')) => {
            let reach = &bytes[1..bytes.len().min(NAME_REACH + 1)];
            let len = reach.iter().position(|b| *b == quote)?;
            // Before an ASCII quote: a char boundary.
            let name = body.get(1..1 + len)?.trim_end_matches('\\');
            Some((name, value.len() - body.len() + len + 2))
        }
        // No bare name after backslashes: they escape what follows (`\n`).
        _ if body.len() == value.len() => {
            let reach = &bytes[..bytes.len().min(NAME_REACH)];
            let len = reach
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || b"_.-".contains(b)))
                .unwrap_or(reach.len());
            let ends = bytes
                .get(len)
                .is_none_or(|b| b.is_ascii_whitespace() || b",;)]}".contains(b));
            // After ASCII bytes only: a char boundary.
            ends.then(|| Some((body.get(..len)?, len))).flatten()
        }
        _ => None,
    }
}

/// Whether `rest` holds nothing but blanks to the end of its line.
fn ends_line(rest: &str) -> bool {
    let rest = rest.trim_start_matches([' ', '\t']);
    rest.is_empty() || rest.starts_with(['\r', '\n'])
}

/// Where the line starts and at which column the YAML key starting at `name` is: `None`
/// unless only spaces, maybe around a sequence item's `-` (`  - name:`), come before it on its
/// line.
fn yaml_key(text: &str, name: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let spaces = |to: usize| bytes[..to].iter().rev().take_while(|b| **b == b' ').count();
    let mut line = name - spaces(name);
    if line < name && line > 0 && bytes[line - 1] == b'-' {
        line -= 1;
        line -= spaces(line);
    }
    (line == 0 || bytes[line - 1] == b'\n').then_some((line, name - line))
}

/// Where the YAML mapping starts that holds a key at `column` on the line starting at `line`:
/// that line, when the key is its sequence item's first (`- name:`); else back over the lines
/// before it that are blank or indented to `column` or more (its keys and their values), to
/// the item's `- ` line of a key at `column`, or to the line after one less indented. Each
/// byte read is taken from the budget; the mapping's strings are at level 0.
fn yaml_mapping_start(text: &str, line: usize, column: usize, looks: &mut LookBudget) -> LookBack {
    let bytes = text.as_bytes();
    // Only spaces and an item's `-` come before the key on its line.
    if bytes[line..line + column].contains(&b'-') {
        return LookBack::Object(line, 0);
    }
    let mut start = line;
    while start > 0 {
        if looks.left == 0 {
            return LookBack::OutOfBudget(start);
        }
        // The line before, to its line break at `start - 1`.
        let previous = text[..start - 1].rfind('\n').map_or(0, |i| i + 1);
        looks.left = looks.left.saturating_sub(start - previous);
        let indent = bytes[previous..start - 1]
            .iter()
            .take_while(|b| **b == b' ')
            .count();
        let content = &text[previous + indent..start - 1];
        if indent < column && !content.trim().is_empty() {
            let key = previous + column;
            let item = key < start - 1
                && !bytes[key].is_ascii_whitespace()
                && yaml_key(text, key) == Some((previous, column));
            return LookBack::Object(if item { previous } else { start }, 0);
        }
        start = previous;
    }
    LookBack::Object(start, 0)
}

/// Where the YAML mapping whose first line starts at `start`, its keys at `column`, ends: at
/// the end of its last line indented to `column` or more (more: its keys' values), blank ones
/// between them included; at the end of the text for a mapping at column 0.
fn yaml_mapping_end(text: &str, start: usize, column: usize) -> usize {
    let (first_end, next) = line_end(text, start, false);
    match column.checked_sub(1) {
        Some(indent) => {
            block_end(text, next, indent, false).map_or(first_end, |e| e.max(first_end))
        }
        None => text.len(),
    }
}

/// What [`enclosing_object`] found looking back from a member.
enum LookBack {
    /// The object's `{` (or a YAML mapping's first line), and the escaping level of its
    /// strings.
    Object(usize, usize),
    /// An array holds the member, or nothing does.
    None,
    /// The budget ran out here, the object's `{` not found.
    OutOfBudget(usize),
}

/// The work left to [`enclosing_object`]'s looks back in one text, and where the last look
/// that found no object started (with its escaping level): a later look that reaches that
/// place as it started there (no bracket open, no string) would find no object either, so
/// members outside any object (`key: "token"` in prose, many times over) are each read back
/// only to the one before.
struct LookBudget {
    left: usize,
    held_by_none: Option<(usize, usize)>,
}

/// The `{` of the object that holds a member starting at `member`, and the escaping level of
/// its strings: the backslashes before the member's opening quote (0 for `"name"`, 1 for
/// `\"name\"`), or `bare_level` for a bare name (`name: …`). Back over whole objects and
/// arrays before it (`{"meta": {…}, "tags": [], "name": …}`), strings quoted at that level
/// (`"use {token}"`, `"range [0, 1)"`) and char literals (`'}'`, `'"'`), each byte read
/// taken from the budget.
fn enclosing_object(
    text: &str,
    member: usize,
    bare_level: usize,
    looks: &mut LookBudget,
) -> LookBack {
    let bytes = text.as_bytes();
    let (level, start) = match member.checked_sub(1) {
        Some(quote) if bytes[quote] == b'"' => {
            let level = backslashes_before(bytes, quote, 0);
            (level, quote - level)
        }
        _ => (bare_level, member),
    };
    let mut i = start;
    let mut depth = 0usize;
    let mut quoted = false;
    let found = loop {
        if i == 0 {
            break LookBack::None;
        }
        if depth == 0 && !quoted && looks.held_by_none == Some((i, level)) {
            break LookBack::None;
        }
        if looks.left == 0 {
            return LookBack::OutOfBudget(i);
        }
        looks.left -= 1;
        i -= 1;
        let b = bytes[i];
        if b == b'"' {
            let run = backslashes_before(bytes, i, 0);
            if !char_literal_at(bytes, i, run) && delimits(run, level) {
                quoted = !quoted;
            }
            looks.left = looks.left.saturating_sub(run);
            i -= run;
            continue;
        }
        if quoted || char_literal_at(bytes, i, 0) {
            continue;
        }
        match b {
            b'}' | b']' => depth += 1,
            b'{' | b'[' if depth > 0 => depth -= 1,
            b'{' => break LookBack::Object(i, level),
            b'[' => break LookBack::None,
            _ => {}
        }
    };
    if let LookBack::None = found {
        looks.held_by_none = Some((start, level));
    }
    found
}

/// Whether the byte at `i`, after `run` backslashes, is the char of a char literal (`'}'`,
/// `'"'`, or `'\"'` in a Debug string, as Debug writes a `char`).
fn char_literal_at(bytes: &[u8], i: usize, run: usize) -> bool {
    i > run && bytes[i - run - 1] == b'\'' && bytes.get(i + 1) == Some(&b'\'')
}

/// How many backslashes come right before `at`, counting no further back than `reach`.
fn backslashes_before(bytes: &[u8], at: usize, reach: usize) -> usize {
    bytes[reach..at]
        .iter()
        .rev()
        .take_while(|b| **b == b'\\')
        .count()
}

/// Whether a quote after a run of `run` backslashes opens or closes a string quoted at
/// `level` (see [`quoted_end`]): `run` is `(level + 1)(2k + 1) - 1`, the string's own `2k`
/// escaped backslashes before its closing quote escaped `level` times.
fn delimits(run: usize, level: usize) -> bool {
    (run + 1) % (level + 1) == 0 && (run + 1) / (level + 1) % 2 == 1
}

/// Where the member whose name starts at `name` starts: at its opening quote, when the name is
/// quoted at `level`; else at the name.
fn quote_start(text: &str, name: usize, level: usize) -> usize {
    let bytes = text.as_bytes();
    match name.checked_sub(1) {
        Some(quote)
            if bytes[quote] == b'"'
                && backslashes_before(bytes, quote, quote.saturating_sub(level)) == level =>
        {
            quote - level
        }
        _ => name,
    }
}

/// Where a [`MemberWalk`] stands.
enum Place {
    /// Outside the object's strings and nested brackets: among its own members.
    Top,
    /// In one of its strings.
    Quoted,
    /// In a nested bracket, the one opened at this position.
    Nested(usize),
}

/// An object's members read in order (see [`redact_named_values`]): its brackets open and
/// whether a string quoted at the object's level is open, up to where the walk has read.
struct MemberWalk {
    at: usize,
    level: usize,
    depth: usize,
    /// Where the outermost bracket open in the object was opened.
    nested_at: usize,
    quoted: bool,
    /// Backslashes right before `at`.
    run: usize,
}

impl MemberWalk {
    /// A walk from `from`, just past the object's `{`.
    fn new(from: usize, level: usize) -> Self {
        Self {
            at: from,
            level,
            depth: 0,
            nested_at: from,
            quoted: false,
            run: 0,
        }
    }

    /// Reads on to `to`: where `to` stands. A place the walk has passed (inside a value read
    /// whole) counts as quoted.
    fn at_top(&mut self, text: &str, to: usize) -> Place {
        if to < self.at {
            return Place::Quoted;
        }
        let bytes = text.as_bytes();
        for i in self.at..to {
            let b = bytes[i];
            if b == b'\\' {
                self.run += 1;
                continue;
            }
            if b == b'"' {
                if !char_literal_at(bytes, i, self.run) && delimits(self.run, self.level) {
                    self.quoted = !self.quoted;
                }
            } else if !self.quoted && !char_literal_at(bytes, i, 0) {
                match b {
                    b'{' | b'[' | b'(' => {
                        if self.depth == 0 {
                            self.nested_at = i;
                        }
                        self.depth += 1;
                    }
                    b'}' | b']' | b')' => self.depth = self.depth.saturating_sub(1),
                    _ => {}
                }
            }
            self.run = 0;
        }
        self.at = to;
        match (self.quoted, self.depth) {
            (true, _) => Place::Quoted,
            (false, 0) => Place::Top,
            (false, _) => Place::Nested(self.nested_at),
        }
    }

    /// Goes on from `to`, just past a nested bracket passed over whole.
    fn jump_to(&mut self, to: usize) {
        self.at = self.at.max(to);
        self.depth = 0;
        self.run = 0;
    }
}

/// Hides the contents of a secret-named tuple struct or variant as Debug writes it, wherever it
/// is (`login: Bearer("…")`, `Basic("u", "…")`, `ApiKey("…")`, `Token(\"…\")` in a Debug
/// string), when the name is secret ([`is_secret_field`]) or is `Basic`: to the balanced `)`,
/// brackets in quoted strings skipped, or to the end of the text when there is none. A field
/// of a secret name already hid such a value whole; this finds it under any other name.
///
/// One pass: a name that is no secret's is passed right after its `(` (nested ones are read
/// in turn), a secret's after its `)`. `token(s)` in prose (a plural) is kept.
fn redact_credential_calls<'t>(patterns: &Patterns, text: &'t str) -> Cow<'t, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = patterns.call.find_at(text, at) {
        at = found.end();
        let name = &found.as_str()[..found.len() - 1];
        if !(is_secret_field(name) || name.eq_ignore_ascii_case("basic")) {
            continue;
        }
        let close = bracket_end(text, found.end() - 1);
        // Closed by another bracket (`Token(a]b]`), the contents run to the next `)` outside
        // quotes, or the end: in one pass, not a bracket a pass. Not closed (a text cut inside
        // it), to the end.
        let end = if text[..close].ends_with(')') && close > found.end() {
            close - 1
        } else if close == text.len() {
            close
        } else {
            paren_after(text, close)
        };
        let contents = &text[found.end()..end];
        if !contents.is_empty() && contents != REDACTED && contents != "s" {
            out.push_str(&text[copied..found.end()]);
            out.push_str(REDACTED);
            copied = end;
        }
        at = at.max(end);
    }
    if copied == 0 {
        Cow::Borrowed(text)
    } else {
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }
}

/// The byte range of `text` to replace for a [`KEY_SEPARATOR`] match: the value inside its quotes,
/// the bracketed value whole, or the bare word; `None` when it is empty or already redacted.
/// `before` is the text before `text` (where the line of the name starts: its indentation).
fn value_span(text: &str, caps: &Captures<'_>, before: &str) -> Option<(usize, usize)> {
    let (start, end) = if let Some(quote) = caps.name("quote") {
        // The backslashes before the opening quote: its escaping level.
        let level = quote.len() - 1;
        (quote.end(), quoted_end(text, quote.end(), level).0)
    } else if let Some(quote) = caps.name("sq") {
        let end = text[quote.end()..]
            .find('\'')
            .map_or(text.len(), |i| quote.end() + i);
        (quote.end(), end)
    } else if let Some(open) = caps.name("open") {
        // The bracket is the last character of the match; a word may go on after its closing
        // one (`password=ab(c)d`), as a bare value does when the bracket follows a word. After
        // a bracket alone (a JSON object or array) what follows is the text's own structure
        // (`{\"password\":{…},\"m\":1}`).
        let end = bracket_end(text, open.end() - 1);
        if open
            .as_str()
            .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            (open.start(), bare_value_end(text, end))
        } else {
            let rest = text[end..]
                .find(|c: char| c.is_whitespace() || "&'\"<>\\)]},;".contains(c))
                .unwrap_or(text.len() - end);
            (open.start(), end + rest)
        }
    } else if let Some(block) = caps.name("block") {
        // `>` opening a folded block; not followed by a line break, the word it starts.
        let end = yaml_block_end(text, caps, before, block.end()).unwrap_or_else(|| {
            text[block.end()..]
                .find(char::is_whitespace)
                .map_or(text.len(), |i| block.end() + i)
        });
        (block.start(), end)
    } else {
        let bare = caps.name("bare")?;
        let name = caps.name("name").map_or("", |n| n.as_str());
        let mut end = bare_value_end(text, bare.end());
        let lowered = name.to_ascii_lowercase();
        // After a scheme `VALUE_START` knows (`Bearer <token>`) the token is the value, and
        // what follows it on the line is the text's own; but a credential of auth-params
        // (`Token token="…"`, `Digest username="u", response="…"`) is the value whole.
        let known_scheme = caps.name("scheme").is_some();
        if known_scheme {
            if let Some(params_end) = auth_params_end(text, bare.start()) {
                end = end.max(params_end);
            }
        }
        if lowered.contains("cookie") || lowered.contains("authorization") && !known_scheme {
            // `Cookie: a=1; b=2`, and an `Authorization` value whose scheme is none of those
            // known (`Key …`, `SharedKey acct:…`, `Bot …`), which would keep its credential
            // past the scheme: the whole header value, to the end of the line.
            end = text[end..]
                .find(['\r', '\n'])
                .map_or(text.len(), |i| end + i);
        }
        if is_block_indicator(bare.as_str()) {
            // YAML `password: |` and the indented block after it.
            if let Some(block_end) = yaml_block_end(text, caps, before, bare.end()) {
                end = end.max(block_end);
            }
        } else if let Some(block_end) = yaml_next_line_end(text, caps, before) {
            // YAML `api_key:` then, on more indented lines, a value, a sequence or a mapping.
            end = end.max(block_end);
        }
        (bare.start(), end)
    };
    let value = &text[start..end];
    (!value.is_empty() && value != REDACTED).then_some((start, end))
}

/// Where the name starts that ends `text[start..end]`, followed by `:`, when the range ends a
/// line (`… client_secret:` then `\n  value`): that name is read again as a pair, its value
/// on the next lines. `None` when the range ends otherwise. Only its end is read.
fn yaml_name_ending(text: &str, start: usize, end: usize) -> Option<usize> {
    if !text[end..].starts_with(['\r', '\n']) {
        return None;
    }
    let head = text[start..end]
        .trim_end_matches([' ', '\t'])
        .strip_suffix(':')?;
    let name_len = head
        .bytes()
        .rev()
        .take_while(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        .count();
    let name_start = start + head.len() - name_len;
    let starts_name =
        text[name_start..end].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    starts_name.then_some(name_start)
}

/// Where a bare value read to `from` ends: at the next whitespace, or at `&` opening a query's
/// next parameter (`&name=`, `&amp;name=`), less the closing brackets, quotes, `<`, `>`, `\`,
/// `&` and `,`/`;` right before it, which close what holds the value (`(x=a)`, `"x=a"`,
/// `x=a;`). Inside the value they are its own: a password may hold any of them
/// (`password=k9<Lq>vX2`), so stopping there would leave its rest in the text.
fn bare_value_end(text: &str, from: usize) -> usize {
    /// Characters a value is not taken to end with.
    const CLOSERS: &str = ",;'\"<>\\)]}&";
    let mut end = from;
    for (i, c) in text[from..].char_indices() {
        let at = from + i;
        if c.is_whitespace() || c == '&' && opens_parameter(&text[at + 1..]) {
            break;
        }
        if !CLOSERS.contains(c) {
            end = at + c.len_utf8();
        }
    }
    end
}

/// Whether `rest` (after a `&`) is a query parameter: `name=` (or `amp;name=`, HTML-escaped).
fn opens_parameter(rest: &str) -> bool {
    let rest = rest.strip_prefix("amp;").unwrap_or(rest);
    let name = rest
        .bytes()
        .take_while(|&b| b.is_ascii_alphanumeric() || b"_.-[]%".contains(&b))
        .count();
    name > 0 && rest.as_bytes().get(name) == Some(&b'=')
}

/// Whether a [`KEY_SEPARATOR`] `flag` match (`found`, after `before`) starts a flag: its dash
/// begins the text or follows whitespace, an escaped line break or tab, a quote, `(`, `[` or
/// `,`. Inside a word (`pre-auth step`, `x-token y`) it is a hyphen.
fn starts_flag(before: &str, found: &str) -> bool {
    found.starts_with('\\')
        || before
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || "\"'([,".contains(c))
}

/// Whether a flag's value (`rest`, maybe quoted) is the next flag (`--verbose`): a flag of no
/// value (`--no-password --verbose`).
fn next_is_flag(rest: &str) -> bool {
    rest.trim_start_matches(['\\', '"', '\'']).starts_with("--")
}

/// Where the value of `caps` starts (its separator's end), relative to the match.
fn caps_end(caps: &Captures<'_>) -> usize {
    ["done", "quote", "sq", "open", "scheme", "bare", "block"]
        .iter()
        .filter_map(|group| caps.name(group))
        .map(|m| m.start())
        .min()
        .unwrap_or_else(|| caps.get(0).map_or(0, |whole| whole.end()))
}

/// Whether `before` ends in a word: a `<` after it opens no XML element (`Option<Token>` is a
/// Rust type).
fn follows_word(before: &str) -> bool {
    before
        .chars()
        .next_back()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
}

/// Whether the element named `name` whose start tag ends at `open_end` is closed right after
/// its text (`user<Password>x</Password>`): then it is an element whatever comes before it, a
/// word included, where a `<Token>` never closed is a type's name in text (`Option<Token>`).
/// Reads only to the next tag, so a text of many such names is still read once.
fn closed_after_text(text: &str, open_end: usize, name: &str, reads: &mut CommentReads) -> bool {
    let Some((_, end)) = xml_text_span(text, open_end, reads) else {
        return false;
    };
    let Some(rest) = text[end..].strip_prefix("</") else {
        return false;
    };
    rest.get(..name.len())
        .is_some_and(|n| n.eq_ignore_ascii_case(name))
        && rest[name.len()..].trim_start().starts_with('>')
}

/// What one text's element texts have read of its comments and CDATA sections, so that a
/// text of many elements is read once, not once per element:
///
/// - the last search for the end of a CDATA section and of a comment: the first end (`]]>`,
///   `-->`) that starts at or after where it started, if any, also the first for any later
///   start up to it, and none for any later start when it found none
///   (`word<password><!--` many times, closed at the end or not);
/// - where an element's text read through each comment or CDATA section from its start
///   ended, which any later element's text that reaches that start ends at too (it depends
///   on the text alone): each start is read through once (`<!--x<password>-->` many times,
///   or comments and CDATA sections interleaved).
#[derive(Default)]
struct CommentReads {
    cdata: Option<EndSearch>,
    comment: Option<EndSearch>,
    through: std::collections::HashMap<usize, usize>,
}

#[derive(Clone, Copy)]
struct EndSearch {
    from: usize,
    found: Option<usize>,
}

impl EndSearch {
    /// The first `close` starting at or after `from` in `text`, from the last search when it
    /// answers for `from`.
    fn find(last: &mut Option<Self>, text: &str, from: usize, close: &str) -> Option<usize> {
        if let Some(search) = *last {
            match search.found {
                _ if search.from > from => {}
                None => return None,
                Some(found) if from <= found => return Some(found),
                Some(_) => {}
            }
        }
        let found = text[from..].find(close).map(|i| from + i);
        *last = Some(Self { from, found });
        found
    }
}

/// The text of an XML element whose start tag ends at `open_end`: to the next `<` (its end tag
/// or a child's) or the end of the text, its CDATA sections and comments read through (to the
/// end of the text when one is not closed). `None` when it is blank or already redacted.
fn xml_text_span(text: &str, open_end: usize, reads: &mut CommentReads) -> Option<(usize, usize)> {
    let mut at = open_end;
    // Where the comments and CDATA sections this text reads through start (no allocation
    // for a text with none).
    let mut through = Vec::new();
    let end = loop {
        let Some(lt) = text[at..].find('<').map(|i| at + i) else {
            break text.len();
        };
        if let Some(&end) = reads.through.get(&lt) {
            break end;
        }
        let rest = &text[lt..];
        let (close, last) = if rest.starts_with("<![CDATA[") {
            ("]]>", &mut reads.cdata)
        } else if rest.starts_with("<!--") {
            ("-->", &mut reads.comment)
        } else {
            break lt;
        };
        through.push(lt);
        match EndSearch::find(last, text, lt, close) {
            Some(found) => at = found + close.len(),
            None => break text.len(),
        }
    };
    reads
        .through
        .extend(through.into_iter().map(|start| (start, end)));
    let value = &text[open_end..end];
    (!value.trim().is_empty() && value != REDACTED).then_some((open_end, end))
}

/// Whether a quoted name (what comes before it is `before`) opens a tuple: `(` then its quote,
/// maybe escaped (`("name"`, `(\"name\"`), maybe on the next line (pretty Debug: `(\n    "name"`,
/// or with the line break escaped, `(\\n    \"name\"`).
fn opens_tuple(before: &str) -> bool {
    let rest = blank_before(before.trim_end_matches(['"', '\'']).trim_end_matches('\\'));
    if rest.ends_with('(') {
        return true;
    }
    // A pair as an array that is itself an item of an array (`[["x-api-key", "…"]]`, serde's
    // `Vec<(String, String)>`, JavaScript's `Object.entries`): a list of pairs. A list of
    // names stands alone (`missing fields ["api_key", "model"]`).
    rest.strip_suffix('[')
        .map(blank_before)
        .is_some_and(|outer| outer.ends_with(['[', ',']))
}

/// `text` without the blanks it ends with: spaces, tabs, line breaks, and line breaks or tabs
/// escaped at any level (`\n`, `\\n`).
fn blank_before(text: &str) -> &str {
    let mut rest = text;
    loop {
        rest = rest.trim_end_matches([' ', '\t', '\r', '\n']);
        match rest.strip_suffix(['n', 'r', 't']) {
            Some(escape) if escape.ends_with('\\') => rest = escape.trim_end_matches('\\'),
            _ => return rest,
        }
    }
}

/// Where the auth-params of a credential starting at `start` end (`token="…"` in
/// `Token token="…"`, `username="u", realm="r", response="…"` in `Digest …`): a list of
/// `name=value`, the value a token or a quoted string (at any escaping level), separated by
/// `,`. `None` when `start` does not open one (`Bearer abc.def`).
fn auth_params_end(text: &str, start: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let blanks = |at: usize| {
        at + bytes
            .get(at..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count()
    };
    let mut end = None;
    let mut at = start;
    loop {
        let name = bytes.get(at..).unwrap_or_default();
        let name_len = name
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            .count();
        let equals = blanks(at + name_len);
        if name_len == 0 || bytes.get(equals) != Some(&b'=') {
            break;
        }
        let value = blanks(equals + 1);
        let level = bytes[value..].iter().take_while(|&&b| b == b'\\').count();
        let value_end = if bytes.get(value + level) == Some(&b'"') {
            quoted_end(text, value + level + 1, level).1
        } else if value > equals + 1 {
            // `abc= next`: the `=` ended a token (base64 padding); `next` is not its value.
            break;
        } else {
            value
                + bytes[value..]
                    .iter()
                    .take_while(|&&b| !(b.is_ascii_whitespace() || b",;\"\\".contains(&b)))
                    .count()
        };
        end = Some(value_end);
        let comma = blanks(value_end);
        if bytes.get(comma) != Some(&b',') {
            break;
        }
        at = blanks(comma + 1);
    }
    end
}

/// Whether a bare value is a YAML block scalar's indicator: `|` or `>`, then maybe a chomping
/// indicator and an indentation digit (`|-`, `>+`, `|2-`).
fn is_block_indicator(value: &str) -> bool {
    value.strip_prefix(['|', '>']).is_some_and(|rest| {
        rest.len() <= 2
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'+' || b == b'-')
    })
}

/// Where the block of a YAML block scalar ends, its indicator (`|`, `>-`, ...) ending at
/// `from`: the end of the last line after it indented more than the line of the name. `None`
/// when the indicator is not followed by the end of its line (maybe after a `# comment`), or
/// no line is indented more. Line breaks are newlines, or escaped ones (`\n`) as Debug and
/// JSON write them, whichever follows the indicator.
fn yaml_block_end(text: &str, caps: &Captures<'_>, before: &str, from: usize) -> Option<usize> {
    let rest = text[from..].trim_start_matches([' ', '\t']);
    let at = text.len() - rest.len();
    let (escaped, next) = if rest.starts_with('\n') || rest.starts_with("\r\n") {
        (false, at + rest.find('\n')? + 1)
    } else if rest.starts_with("\\n") {
        (true, at + 2)
    } else if rest.starts_with("\\r\\n") {
        (true, at + 4)
    } else if rest.starts_with('#') {
        (false, line_end(text, at, false).1?)
    } else {
        return None;
    };
    let indent = key_indent(before, &text[..caps.name("name")?.start()], escaped);
    block_end(text, Some(next), indent, escaped)
}

/// Where a YAML value on the lines after its name ends (`api_key:\n  - abc`, `password:\n  x`):
/// the end of its first line and of the lines after it indented more than the line of the
/// name. `None` when the separator holds no line break, or the value's line is not indented
/// more than the name's.
fn yaml_next_line_end(text: &str, caps: &Captures<'_>, before: &str) -> Option<usize> {
    let name = caps.name("name")?;
    let value = caps.name("scheme").or_else(|| caps.name("bare"))?;
    let separator = &text[name.end()..value.start()];
    let (escaped, after_break) = match separator.rfind('\n') {
        Some(i) => (false, i + 1),
        None => (true, separator.rfind("\\n")? + 2),
    };
    let value_indent = separator[after_break..]
        .bytes()
        .take_while(|&b| b == b' ' || b == b'\t')
        .count();
    let indent = key_indent(before, &text[..name.start()], escaped);
    if value_indent <= indent {
        return None;
    }
    let (first_end, next) = line_end(text, value.start(), escaped);
    Some(block_end(text, next, indent, escaped).map_or(first_end, |end| end.max(first_end)))
}

/// How many spaces or tabs start the line of a name: the line going on at the end of `before`
/// then `start` (the text before the name in its match: an escape, a quote).
fn key_indent(before: &str, start: &str, escaped: bool) -> usize {
    // Text is searched back to its line start in `start`, then in `before`.
    let line_start = |text: &str| {
        let bytes = text.as_bytes();
        (1..=bytes.len()).rev().find(|&i| {
            bytes[i - 1] == b'\n'
                || escaped && bytes[i - 1] == b'n' && i >= 2 && bytes[i - 2] == b'\\'
        })
    };
    let blanks = |text: &str| {
        text.bytes()
            .take_while(|&b| b == b' ' || b == b'\t')
            .count()
    };
    if let Some(i) = line_start(start) {
        return blanks(&start[i..]);
    }
    let line = &before[line_start(before).unwrap_or(0)..];
    let indent = blanks(line);
    if indent == line.len() {
        indent + blanks(start)
    } else {
        indent
    }
}

/// The end of the last line, from the one starting at `next` on, indented more than `indent`
/// (blank lines between them are part of the block); `None` when the first one is not.
fn block_end(text: &str, mut next: Option<usize>, indent: usize, escaped: bool) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut end = None;
    while let Some(start) = next {
        let blanks = bytes[start..]
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        let content = start + blanks;
        let rest = &text[content..];
        let blank = rest.is_empty()
            || rest.starts_with(['\n', '\r'])
            || escaped
                && (rest.starts_with("\\n") || rest.starts_with("\\r") || rest.starts_with('"'));
        if blanks <= indent && !blank {
            break;
        }
        let (content_end, following) = line_end(text, content, escaped);
        if !blank {
            end = Some(content_end);
        }
        next = following;
    }
    end
}

/// The end of the line going on at `from` (before its line break) and where the next one
/// starts (`None` at the end of the text). With `escaped`, lines are also broken by `\n` as
/// Debug and JSON write it, and end with the string at an unescaped `"`.
fn line_end(text: &str, from: usize, escaped: bool) -> (usize, Option<usize>) {
    let bytes = text.as_bytes();
    if !escaped {
        return match text[from..].find('\n') {
            Some(i) => {
                let newline = from + i;
                let end = if newline > from && bytes[newline - 1] == b'\r' {
                    newline - 1
                } else {
                    newline
                };
                (end, Some(newline + 1))
            }
            None => (text.len(), None),
        };
    }
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        match b {
            b'\\' => {
                run += 1;
                continue;
            }
            b'n' if run % 2 == 1 => return (i - 1, Some(i + 1)),
            b'"' if run % 2 == 0 => return (i, None),
            b'\n' => return (i, Some(i + 1)),
            _ => {}
        }
        run = 0;
    }
    (text.len(), None)
}

/// Where a quoted string whose content starts at `from` ends, as (end of its content, just
/// past its closing quote); both `text.len()` when it is not closed.
///
/// `level` is the number of backslashes before its opening quote: 0 for `"…"`, 1 for `\"…\"`
/// (a JSON string inside a Debug string), 3 for `\\\"…\\\"`, .... Each escaping turns a run of
/// `r` backslashes before a quote into `2r + 1`, so the quote that closes the innermost string
/// (after an even number `2k` of its own backslashes) is preceded by
/// `(level + 1)(2k + 1) - 1` of them: a run `r` closes when `(r + 1) / (level + 1)` is odd.
/// The content ends before the `level` backslashes that escape the closing quote.
fn quoted_end(text: &str, from: usize, level: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate().skip(from) {
        match b {
            b'\\' => run += 1,
            b'"' if delimits(run, level) => {
                return (i - level, i + 1);
            }
            _ => run = 0,
        }
    }
    (text.len(), text.len())
}

/// Just past the bracket that closes the one at `open`, or `text.len()` when it is not
/// closed. Brackets inside quoted strings (`"…"`, `\"…\"`, ...) and char literals (`']'`) do
/// not count.
fn bracket_end(text: &str, open: usize) -> usize {
    let mut depth = 0usize;
    scan_structure(text, open, |i, b| match b {
        b'(' | b'[' | b'{' => {
            depth += 1;
            None
        }
        b')' | b']' | b'}' => {
            depth = depth.saturating_sub(1);
            (depth == 0).then_some(i + 1)
        }
        _ => None,
    })
}

/// Where the next `)` at or after `from` is, outside quoted strings and char literals; the
/// end of the text when there is none.
fn paren_after(text: &str, from: usize) -> usize {
    scan_structure(text, from, |i, b| (b == b')').then_some(i))
}

/// Reads `text` from `from`, handing `found` each byte of its structure (outside quoted
/// strings, at any escaping level, and char literals) until it answers: its answer, or the end
/// of the text.
fn scan_structure(
    text: &str,
    from: usize,
    mut found: impl FnMut(usize, u8) -> Option<usize>,
) -> usize {
    let bytes = text.as_bytes();
    // Backslashes right before `i`: the escaping level of a quote at `i`.
    let mut run = 0;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                run += 1;
                i += 1;
                continue;
            }
            b'"' => {
                i = quoted_end(text, i + 1, run).1;
                run = 0;
                continue;
            }
            b'\'' => {
                if let Some(len) = char_literal_len(&text[i..]) {
                    i += len;
                    run = 0;
                    continue;
                }
            }
            b => {
                if let Some(answer) = found(i, b) {
                    return answer;
                }
            }
        }
        run = 0;
        i += 1;
    }
    text.len()
}

/// The length of the char literal `text` starts with (`'x'`, `'é'`, `'\''`, `'\u{41}'`), if
/// it starts with one.
fn char_literal_len(text: &str) -> Option<usize> {
    let rest = text.strip_prefix('\'')?;
    if let Some(escaped) = rest.strip_prefix('\\') {
        // An escape: its character, then up to the `'` within an escape's length.
        let c = escaped.chars().next()?;
        let after = &escaped[c.len_utf8()..];
        let close = after.get(..after.len().min(9))?.find('\'')?;
        return Some(2 + c.len_utf8() + close + 1);
    }
    let c = rest.chars().next()?;
    rest[c.len_utf8()..]
        .starts_with('\'')
        .then_some(1 + c.len_utf8() + 1)
}

/// Which alternative of [`KEY_SEPARATOR`] matched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NameForm {
    /// `name <separator>`, or a quoted name opening a tuple.
    Pair,
    /// `--name ` (a command-line flag).
    Flag,
    /// `<name …>` (an XML start tag).
    Tag,
}

/// The form and name of a [`KEY_SEPARATOR`] match (the escape before it skipped, then the
/// dashes of a flag or the `<` of a tag, then the longest run of name characters, with `:` in a
/// tag's: `ns:Password`) and where the name ends in the match.
fn match_name(found: &str) -> (NameForm, &str, usize) {
    let start = if found.starts_with('\\') { 2 } else { 0 };
    let rest = found.get(start..).unwrap_or_default();
    let (form, lead) = if rest.starts_with('<') {
        (NameForm::Tag, 1)
    } else {
        let dashes = rest.len() - rest.trim_start_matches('-').len();
        let form = if dashes > 0 {
            NameForm::Flag
        } else {
            NameForm::Pair
        };
        (form, dashes)
    };
    let rest = rest.get(lead..).unwrap_or_default();
    let len = rest
        .find(|c: char| {
            !(c.is_ascii_alphanumeric()
                || matches!(c, '_' | '.' | '-')
                || c == ':' && form == NameForm::Tag)
        })
        .unwrap_or(rest.len());
    (form, &rest[..len], start + lead + len)
}

/// How many times [`decode`] decodes: text encoded up to this many times is read.
const DECODE_ROUNDS: usize = 3;

/// `text` with percent escapes and JSON `\uXXXX` and `\/` escapes decoded, repeatedly (up to
/// [`DECODE_ROUNDS`] times); `None` when it has none.
fn decode(text: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for _ in 0..DECODE_ROUNDS {
        let current = out.as_deref().unwrap_or(text);
        let step = match percent_decode(current) {
            Some(decoded) => json_unescape(&decoded).or(Some(decoded)),
            None => json_unescape(current),
        };
        match step {
            Some(step) => out = Some(step),
            None => break,
        }
    }
    out
}

/// `%XX` escapes decoded (invalid UTF-8 becomes U+FFFD; `+` and other `%` are kept); `None`
/// when there are none.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3).and_then(hex))
            .flatten()
            .and_then(|value| u8::try_from(value).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    (out.len() != bytes.len()).then(|| String::from_utf8_lossy(&out).into_owned())
}

/// JSON's `\uXXXX` (surrogate pairs joined, a lone one U+FFFD) and `\/` escapes decoded, other
/// backslashes kept; `None` when there are none.
fn json_unescape(text: &str) -> Option<String> {
    if !(text.contains("\\u") || text.contains("\\/")) {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // `text[copied..]` is still to be copied; escapes are ASCII, so cuts fall on boundaries.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'/')) => Some(('/', 2)),
            (b'\\', Some(b'u')) => unicode_escape(&bytes[i..]),
            _ => None,
        };
        let Some((c, len)) = decoded else {
            i += 1;
            continue;
        };
        out.push_str(&text[copied..i]);
        out.push(c);
        i += len;
        copied = i;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// The character of a `\uXXXX` escape (or a `\uXXXX\uXXXX` surrogate pair) at the start of
/// `bytes`, and how many bytes it takes.
fn unicode_escape(bytes: &[u8]) -> Option<(char, usize)> {
    let unit = |at: usize| {
        (bytes.get(at..at + 2) == Some(&b"\\u"[..]))
            .then(|| bytes.get(at + 2..at + 6).and_then(hex))
            .flatten()
    };
    let high = unit(0)?;
    if (0xD800..0xDC00).contains(&high) {
        if let Some(low) = unit(6).filter(|low| (0xDC00..0xE000).contains(low)) {
            let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
            return Some((char::from_u32(code).unwrap_or('\u{FFFD}'), 12));
        }
    }
    Some((char::from_u32(high).unwrap_or('\u{FFFD}'), 6))
}

/// The value of ASCII hex digits (2 or 4 of them here).
fn hex(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |value, &d| {
        let digit = char::from(d).to_digit(16)?;
        Some(value * 16 + digit)
    })
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
        let shapes = all_shapes().map(|(pattern, _)| pattern);
        let keys = [KEY_SEPARATOR.to_owned(), key_value_pattern()];
        for pattern in keys.into_iter().chain(shapes) {
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
            // Schemes not listed: the whole value, not only the scheme word.
            (
                "Authorization: Key SECRETVALUE123\nnext",
                "Authorization: [REDACTED]\nnext",
            ),
            (
                "proxy-authorization=SharedKey acct:SECRETVALUE",
                "proxy-authorization=[REDACTED]",
            ),
            ("authorization: Bot abc.def", "authorization: [REDACTED]"),
            (
                "Authorization: Bearer abc with key sk-proj-abcdefgh1234",
                "Authorization: Bearer [REDACTED] with key [REDACTED]",
            ),
        ]);
    }

    /// PEM private keys, whole or cut, with real or escaped newlines; a certificate (public)
    /// stays.
    #[test]
    fn pem_private_keys() {
        let body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7";
        check(&[
            (
                &format!(
                    "loading -----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY----- done"
                ),
                "loading -----BEGIN PRIVATE KEY-----[REDACTED]-----END PRIVATE KEY----- done",
            ),
            (
                &format!(
                    r#"cfg: {{pem: "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n"}}"#,
                    body.replace('\n', r"\n")
                ),
                r#"cfg: {pem: "-----BEGIN RSA PRIVATE KEY-----[REDACTED]-----END RSA PRIVATE KEY-----\n"}"#,
            ),
            (
                &format!("cut -----BEGIN EC PRIVATE KEY-----\n{body}"),
                "cut -----BEGIN EC PRIVATE KEY-----[REDACTED]",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
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
    fn bracketed_values() {
        check(&[
            (
                r#"ProviderConfig { api_key: Some("P1-secret") }"#,
                "ProviderConfig { api_key: [REDACTED] }",
            ),
            (
                r#"Creds { password: Token("P2") }"#,
                "Creds { password: [REDACTED] }",
            ),
            (
                r#"Creds { password: auth::Token("P2b"), user: "bob" }"#,
                r#"Creds { password: [REDACTED], user: "bob" }"#,
            ),
            (
                r#"Creds { password: Secret { inner: "P2c" }, user: "bob" }"#,
                r#"Creds { password: [REDACTED], user: "bob" }"#,
            ),
            ("Config { api_key: None }", "Config { api_key: [REDACTED] }"),
            (
                r#"{"password": {"value": "P13"}, "x-api-key": ["P13b"]}"#,
                r#"{"password": [REDACTED], "x-api-key": [REDACTED]}"#,
            ),
            (
                r#"Config { token: Some("a)b}c]\"d"), model: "gpt" }"#,
                r#"Config { token: [REDACTED], model: "gpt" }"#,
            ),
            (
                r#"body: "{\"password\":{\"v\":\"a}b\"},\"m\":1}""#,
                r#"body: "{\"password\":[REDACTED],\"m\":1}""#,
            ),
            (r#"api_key: Some("P1c"#, "api_key: [REDACTED]"),
            ("password=ab(cd)ef gh", "password=[REDACTED] gh"),
            ("(session_id=(abc))", "(session_id=[REDACTED])"),
        ]);
    }

    /// A text of many pairs is scanned once: matching each innocent pair's value too read the
    /// rest of `a=a=a=…` from each pair, quadratic in its length (this one would take hours).
    #[test]
    fn a_text_of_many_pairs_is_read_once() {
        // Innocent pairs; then secret names with no value, each matched where it stands, not
        // searched on from.
        for repeated in ["a=".repeat(200_000) + " ", "password=&".repeat(50_000)] {
            let text = format!("{repeated}password=hunter2");
            let redacted = redact(&text);
            assert!(redacted.ends_with("password=[REDACTED]"));
            assert_eq!(
                redacted.len(),
                text.len() - "hunter2".len() + REDACTED.len()
            );
        }
    }

    /// The forms read by code rather than one pattern (bare values to whitespace, flags, XML
    /// elements, credential types, URL passwords to their last `@`) are read once too: each of
    /// these would take hours if any were read again from each of its repeats.
    #[test]
    fn repeated_new_forms_are_read_once() {
        let texts = [
            format!("password={}", "a&b<".repeat(50_000)),
            "--password ".repeat(40_000),
            "<password>".repeat(40_000),
            "<password a='1' ".repeat(20_000),
            "Token(".repeat(60_000),
            "Some(".repeat(60_000),
            format!("{}@", "x://a:".repeat(40_000)),
            format!("{}sk-proj-abcdefgh1234", "\u{1b}[".repeat(40_000)),
            "_sk-".repeat(60_000),
        ];
        for text in texts {
            let redacted = redact(&text);
            assert!(redacted.len() <= text.len() + REDACTED.len() * 40_001);
        }
    }

    #[test]
    fn tuples() {
        check(&[
            (
                r#"[("x-api-key", "P8"), ("accept", "json")]"#,
                r#"[("x-api-key", "[REDACTED]"), ("accept", "json")]"#,
            ),
            (
                r#"headers: "[(\"token\", \"P8b\")]""#,
                r#"headers: "[(\"token\", \"[REDACTED]\")]""#,
            ),
            ("[('pwd', 'P8c')]", "[('pwd', '[REDACTED]')]"),
        ]);
        // A list of names is no pair.
        let names = r#"missing fields ["api_key", "model"]"#;
        assert!(matches!(redact(names), Cow::Borrowed(_)));
    }

    #[test]
    fn escaped_quotes() {
        check(&[
            (
                r#"\\\"password\\\":\\\"P3\\\""#,
                r#"\\\"password\\\":\\\"[REDACTED]\\\""#,
            ),
            (
                r#"\\\"password\\\": \\\"a \\\\\\\"P3b\\\\\\\" c\\\", \\\"m\\\": 1"#,
                r#"\\\"password\\\": \\\"[REDACTED]\\\", \\\"m\\\": 1"#,
            ),
            (
                r#"\"password\": \"a \\\"P3c\\\" c\", \"m\": 1"#,
                r#"\"password\": \"[REDACTED]\", \"m\": 1"#,
            ),
            // JSON `"a\\"` (a value ending in a backslash) inside a Debug string.
            (r#"\"token\":\"P3d\\\\\"}"#, r#"\"token\":\"[REDACTED]\"}"#),
            (r#"password="P3e"#, r#"password="[REDACTED]"#),
        ]);
    }

    #[test]
    fn encoded_secrets() {
        check(&[
            (r"\u0073k-proj-P4abcdefgh", "[REDACTED]"),
            (
                "?next=https%3A%2F%2Fx%2Fv1%3Fkey%3DAIzaSyP5abcdefghijklmnopqrstu",
                "?next=https://x/v1?key=[REDACTED]",
            ),
            ("q=my%20key%20sk-proj-P6abcdefgh", "q=my key [REDACTED]"),
            ("%3Fapi_key%3DP7", "?api_key=[REDACTED]"),
            ("%253Fapi_key%253DP7b", "?api_key=[REDACTED]"),
            (
                "GET /b?sv=2022-11-02&sig=P11%2Babc%3D&se=1",
                "GET /b?sv=2022-11-02&sig=[REDACTED]&se=1",
            ),
            (
                r"postgres:\/\/admin:P15@db\/app",
                "postgres://admin:[REDACTED]@db/app",
            ),
            (
                r"\ud83d\ude00\u0073k-proj-P4babcdefgh",
                "\u{1F600}[REDACTED]",
            ),
            // Values found before decoding stay whole: `%20` is not read as their end.
            (
                r#"password=P7c%20tail url=%3Fa%3D1 "token":"P7d%22tail""#,
                r#"password=[REDACTED] url=%3Fa%3D1 "token":"[REDACTED]""#,
            ),
        ]);
    }

    #[test]
    fn more_names_and_shapes() {
        check(&[
            ("azure_openai_key=P9", "azure_openai_key=[REDACTED]"),
            ("groq_key: P9b", "groq_key: [REDACTED]"),
            (
                "Ocp-Apim-Subscription-Key: P10",
                "Ocp-Apim-Subscription-Key: [REDACTED]",
            ),
            (
                "?X-Amz-Credential=a&X-Amz-Signature=P10b",
                "?X-Amz-Credential=[REDACTED]&X-Amz-Signature=[REDACTED]",
            ),
            (
                "groq gsk_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOP",
                "groq [REDACTED]",
            ),
            ("gl glpat-abcdefghij0123456789", "gl [REDACTED]"),
            ("hf hf_abcdefghijklmnopqrstuvwxyzABCDEFGH", "hf [REDACTED]"),
            ("xai xai-abcdefghijklmnopqrstuvwxyz0123", "xai [REDACTED]"),
            ("r8 r8_abcdefghijklmnopqrstuvwxyz0123", "r8 [REDACTED]"),
            (
                "pplx pplx-abcdefghijklmnopqrstuvwxyz0123",
                "pplx [REDACTED]",
            ),
            (
                "idempotency_key=k1 cache_key=k2 key_id=k3 public_key=k4",
                "idempotency_key=k1 cache_key=k2 key_id=k3 public_key=k4",
            ),
        ]);
        for text in [
            "hf_model_id=bert xai-grok-2 r8_short gsk_short glpat-short pplx-sonar",
            "model=grok via xai-proxy",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn bare_values_run_to_whitespace() {
        check(&[
            (
                "password=P12a;P12-semicolon-tail next",
                "password=[REDACTED] next",
            ),
            ("password=P12b,P12c", "password=[REDACTED]"),
            ("x_auth=abc, jwt=def;", "x_auth=[REDACTED], jwt=[REDACTED];"),
            (
                "password:\n  P17\nuser: bob",
                "password:\n  [REDACTED]\nuser: bob",
            ),
            (r#""password:\n  P17b""#, r#""password:\n  [REDACTED]""#),
            ("password:\nuser: bob", "password:\nuser: bob"),
        ]);
    }

    /// Bare values to whitespace, credential types, URL passwords with `/?#`, PGP armor, keys
    /// after `_` or a colour code, XML elements and flags: exact output, idempotent.
    #[test]
    fn glued_and_wrapped_secrets() {
        check(&[
            ("password=k9<Lq>vX2 next", "password=[REDACTED] next"),
            (r"password=k9\Lq'7)v next", "password=[REDACTED] next"),
            ("(token=k9)x)", "(token=[REDACTED])"),
            ("?api_key=a<b&alt=sse", "?api_key=[REDACTED]&alt=sse"),
            ("?api_key=a&amp;alt=sse", "?api_key=[REDACTED]&amp;alt=sse"),
            ("password=ab(c)d<e>f g", "password=[REDACTED] g"),
            (
                r#"Upstream { login: Bearer("t1"), alt: Basic("u", "p)") }"#,
                r#"Upstream { login: Bearer([REDACTED]), alt: Basic([REDACTED]) }"#,
            ),
            (r#"x: ApiKey(\"t2\")"#, "x: ApiKey([REDACTED])"),
            ("no token(s) left", "no token(s) left"),
            (
                r#"sent Bearer "t3" then"#,
                r#"sent Bearer "[REDACTED]" then"#,
            ),
            (
                "redis://admin:pa#s@s/w@cache:6379/0 x",
                "redis://admin:[REDACTED]@cache:6379/0 x",
            ),
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOY\n-----END PGP PRIVATE KEY BLOCK-----",
                "-----BEGIN PGP PRIVATE KEY BLOCK-----[REDACTED]-----END PGP PRIVATE KEY BLOCK-----",
            ),
            ("KEY_sk-proj-abcdefgh1234", "KEY_[REDACTED]"),
            ("\u{1b}[1;33msk-proj-abcdefgh1234", "\u{1b}[1;33m[REDACTED]"),
            (r"\u{1b}[33msk-proj-abcdefgh1234", r"\u{1b}[33m[REDACTED]"),
            (
                "<a><Password>x y</Password><apiKey>z</apiKey></a>",
                "<a><Password>[REDACTED]</Password><apiKey>[REDACTED]</apiKey></a>",
            ),
            (
                r#"<Token a='password=p<Q>' b="1">t4 api_key=k9</Token> api_key=k8"#,
                r#"<Token a='password=[REDACTED]>' b="1">[REDACTED]</Token> api_key=[REDACTED]"#,
            ),
            (
                "<Token a='api_key=x>y'>t5</Token>",
                "<Token a='api_key=[REDACTED]>",
            ),
            (
                r#"<Token kind="x">t4</Token>"#,
                r#"<Token kind="x">[REDACTED]</Token>"#,
            ),
            (
                r#"<Token hint="api_key=k1" >t4</Token>"#,
                r#"<Token hint="api_key=[REDACTED]" >[REDACTED]</Token>"#,
            ),
            // A bare value runs to whitespace, over what closes it.
            (
                r#"<Token hint="api_key=k1">t4</Token>"#,
                r#"<Token hint="api_key=[REDACTED]>"#,
            ),
            (
                r#""tool" "--api-key" "k2" "--model" "m""#,
                r#""tool" "--api-key" "[REDACTED]" "--model" "m""#,
            ),
            (
                "run --password p1 --no-password --verbose -token t5",
                "run --password [REDACTED] --no-password --verbose -token [REDACTED]",
            ),
            (r#"["--token", "t6"]"#, r#"["--token", "[REDACTED]"]"#),
            ("Authentication: abc", "Authentication: [REDACTED]"),
            (
                "Authorization: Key k1 client_secret:\n  - k2\nmodel: m",
                "Authorization: [REDACTED]\n  [REDACTED]\nmodel: m",
            ),
        ]);
        for text in [
            "task-1234567890abcdef disk-usage risk-assessment_2024 mask_test_abcdefghijkl",
            "<Model>gpt-4o</Model> Option<Token> --model gpt-4o pre-auth step",
            "see https://example.com/a?b=c output_tokens=5 authentication_error=1",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
        }
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
            // A port and a path holding `@` look like a password: hidden too.
            (
                "https://example.com:443/a@b",
                "https://example.com:[REDACTED]@b",
            ),
            ("https://example.com/a@b", "https://example.com/a@b"),
            (
                "https://glpat-P14abcdefghijk@gitlab.com/x.git",
                "https://[REDACTED]@gitlab.com/x.git",
            ),
            (
                "git clone https://P14bABCDEFGHIJKLMNOP@github.com/o/r",
                "git clone https://[REDACTED]@github.com/o/r",
            ),
            ("ssh://git@github.com/o/r", "ssh://git@github.com/o/r"),
            ("https://bob@host/x", "https://bob@host/x"),
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
            "GET /v1%2Fchat?q=a%20b 50% done",
            r#"{"path":"a\/b","name":"caf\u00e9"}"#,
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
            "api_key_id",
            "azure_openai_key",
            "groq_key",
            "openaiKey",
            "ocp-apim-subscription-key",
            "Ocp-Apim-Subscription-Key",
            "X-Amz-Signature",
            "sig",
            "signature",
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
            "publicKey",
            "idempotency_key",
            "Idempotency-Key",
            "partition_key",
            "sort_key",
            "primary_key",
            "foreign_key",
            "object_key",
            "i18n_key",
            "translation_key",
            "key_id",
            "key_name",
            "monkey",
            "secretary",
            "session_duration_ms",
            "message",
            "",
        ] {
            assert!(!is_secret_field(name), "{name}");
        }
    }

    /// Acronyms before a capitalised word, numbered names, plurals of credential kinds and
    /// one-word names ending in `key`; counts and ordinary words stay visible.
    #[test]
    fn more_secret_field_names() {
        for name in [
            "openAIKey",
            "azureOpenAIKey",
            "githubAPIToken",
            "OpenAIToken",
            "APIKey",
            "IDToken",
            "apiKey2",
            "token2",
            "ACCESS_TOKEN_2",
            "GITHUB_TOKEN_1",
            "secret2",
            "api_key_1",
            "api_keys",
            "apiKeys",
            "auth_tokens",
            "access_tokens",
            "GROQKEY",
            "openaikey",
            "xkey",
        ] {
            assert!(is_secret_field(name), "{name}");
        }
        for name in [
            "monkey",
            "turkey",
            "hockey",
            "donkey",
            "keyboard",
            "tokenizer",
            "tokens",
            "max_tokens",
            "input_tokens",
            "output_tokens",
            "outputTokens",
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "max_tokens_2",
            "token_count",
            "auth_tokens_count",
            "cache_keys",
            "cachekey",
            "publickey",
            "publicKey2",
            "i18n_key",
            "sha256",
            "OAuth",
            "OAuthProvider",
            "XMLHttpRequest",
        ] {
            assert!(!is_secret_field(name), "{name}");
        }
        check(&[
            ("openAIKey=abc123secret", "openAIKey=[REDACTED]"),
            (
                r#"{"azureOpenAIKey": "abc123secret"}"#,
                r#"{"azureOpenAIKey": "[REDACTED]"}"#,
            ),
            ("ACCESS_TOKEN_2=abc123secret", "ACCESS_TOKEN_2=[REDACTED]"),
            ("secret2: abc123secret", "secret2: [REDACTED]"),
            (
                r#"{"api_keys": ["a1", "a2"]}"#,
                r#"{"api_keys": [REDACTED]}"#,
            ),
            ("GROQKEY=abc123secret", "GROQKEY=[REDACTED]"),
            (
                "max_tokens=64 prompt_tokens: 12 completion_tokens=3 monkey=1",
                "max_tokens=64 prompt_tokens: 12 completion_tokens=3 monkey=1",
            ),
        ]);
    }

    /// A credential of auth-params after a known scheme is hidden whole.
    #[test]
    fn auth_params_after_a_scheme() {
        check(&[
            (
                r#"Authorization: Token token="abc123secret""#,
                "Authorization: Token [REDACTED]",
            ),
            (
                r#"Authorization: Token token="abc123secret", nonce="n1" next"#,
                "Authorization: Token [REDACTED] next",
            ),
            (
                r#"Authorization: Digest username="bob", realm="api", nonce="n1", uri="/v1", response="6629fae49393a05397450978507c4ef1""#,
                "Authorization: Digest [REDACTED]",
            ),
            (
                r#"Authorization: Digest username=bob, response=6629fae4, qop=auth
next"#,
                "Authorization: Digest [REDACTED]\nnext",
            ),
            (
                r#"msg: "Authorization: Token token=\"abc123secret\", x=1""#,
                r#"msg: "Authorization: Token [REDACTED]""#,
            ),
            (
                "Authorization: Bearer abc= with text",
                "Authorization: Bearer [REDACTED] with text",
            ),
        ]);
    }

    /// Header tuples in pretty Debug (`{:#?}`), over lines and with trailing commas.
    #[test]
    fn pretty_debug_tuples() {
        let headers = vec![("x-api-key", "abc123secret"), ("content-type", "json")];
        let pretty = format!("{headers:#?}");
        let redacted = redact(&pretty);
        assert!(!redacted.contains("abc123secret"), "{redacted}");
        assert!(redacted.contains(r#""json""#), "{redacted}");
        assert_eq!(
            redacted,
            pretty.replace("abc123secret", REDACTED),
            "{redacted}"
        );
        // The same inside a Debug string: the line breaks escaped.
        let escaped = format!("{pretty:?}");
        let redacted = redact(&escaped);
        assert_eq!(redacted, escaped.replace("abc123secret", REDACTED));
        // A list of names over lines is still no pair.
        let names = format!("{:#?}", vec!["api_key", "model"]);
        assert!(matches!(redact(&names), Cow::Borrowed(_)), "{names}");
        check(&[(
            "[\n    (\n        \"token\",\n        \"P8d\",\n    ),\n]",
            "[\n    (\n        \"token\",\n        \"[REDACTED]\",\n    ),\n]",
        )]);
    }

    /// Byte strings (`b"…"`, the Debug of `Bytes`) are quoted values.
    #[test]
    fn byte_string_values() {
        check(&[
            (
                r#"Creds { api_key: b"abc123secret" }"#,
                r#"Creds { api_key: b"[REDACTED]" }"#,
            ),
            (
                r#"[("x-api-key", b"def456secret")]"#,
                r#"[("x-api-key", b"[REDACTED]")]"#,
            ),
            (
                r#"{'password': b'abc123secret'}"#,
                r#"{'password': b'[REDACTED]'}"#,
            ),
            (
                r#"Creds { token: b"a\"b\x00c", user: "bob" }"#,
                r#"Creds { token: b"[REDACTED]", user: "bob" }"#,
            ),
        ]);
    }

    /// YAML block scalars and sequences under a secret name: the indented block whole.
    #[test]
    fn yaml_blocks() {
        check(&[
            (
                "password: |\n  hunter2secret\nuser: bob",
                "password: [REDACTED]\nuser: bob",
            ),
            (
                "api_key: >-\n  abc123secret\n  more\n\n  again\nmodel: m",
                "api_key: [REDACTED]\nmodel: m",
            ),
            ("api_key: >-\n  abc123secret", "api_key: [REDACTED]"),
            (
                "api_key: |2- # the key\n  abc123secret\nmodel: m",
                "api_key: [REDACTED]\nmodel: m",
            ),
            (
                "api_key:\n  - abc123secret\n  - def456secret\nmodel: m",
                "api_key:\n  [REDACTED]\nmodel: m",
            ),
            (
                "upstream:\n  token:\n    - abc123secret\n  user: bob\nmodel: m",
                "upstream:\n  token:\n    [REDACTED]\n  user: bob\nmodel: m",
            ),
            (
                "creds:\n  user: bob\n  token: abc123secret\nmodel: m",
                "creds:\n  [REDACTED]\nmodel: m",
            ),
            (
                "credentials:\n  user: bob\n  pass: abc123secret\nmodel: m",
                "credentials:\n  [REDACTED]\nmodel: m",
            ),
            (
                r#"body: "password: |\n  hunter2secret\nuser: bob""#,
                r#"body: "password: [REDACTED]\nuser: bob""#,
            ),
            (
                r#"body: "api_key:\n  - abc123secret\n  - d\\nef\nuser: bob""#,
                r#"body: "api_key:\n  [REDACTED]\nuser: bob""#,
            ),
            ("password: >abc123secret next", "password: [REDACTED] next"),
            // A block indicator with no block after it, and a value less indented.
            ("password: |\nuser: bob", "password: [REDACTED]\nuser: bob"),
            (
                "  password:\n P17c\nuser: bob",
                "  password:\n [REDACTED]\nuser: bob",
            ),
        ]);
    }

    /// A pair written as a list of pairs (serde's `Vec<(String, String)>`, JavaScript's
    /// `Object.entries`), or as an object naming it (`{"name": …, "value": …}`, in either order,
    /// any case, escaped in a string too), hides its value; a list of names, or a name member
    /// that names no secret, hides nothing.
    #[test]
    fn pairs_as_lists_and_named_objects_hide_their_values() {
        let secret = "3f9a0c1d2e4b5a6978877665544332211";
        for text in [
            format!(r#"[["x-api-key","{secret}"]]"#),
            format!(r#"headers: [["accept", "*/*"], ["Authorization", "{secret}"]]"#),
            format!(r#"[{{"name":"x-api-key","value":"{secret}"}}]"#),
            format!(r#"{{"value": "{secret}", "name": "api-key"}}"#),
            format!(r#"env: [{{"name":"AZURE_OPENAI_API_KEY","value":"{secret}"}}]"#),
            format!(r#"[{{"Key":"password","Value":"{secret}"}}]"#),
            format!(r#"body: "{{\"name\":\"x-api-key\",\"value\":\"{secret}\"}}""#),
            format!(r#"[{{"name": "api-key", "value": {{"raw": "{secret}"}}}}]"#),
            format!(r#"{{"meta":{{"a":1}},"name":"x-api-key","value":"{secret}"}}"#),
            format!(r#"{{"value":"{secret}","tags":{{}},"name":"api-key"}}"#),
            format!(r#"{{"note":"use {{token}}","name":"x-api-key","value":"{secret}"}}"#),
            format!(r#"Header {{ name: "x-api-key", value: "{secret}" }}"#),
            // Brackets in strings are no structure: before the naming member, between the
            // members, escaped, and a `}` that would close the object early.
            format!(r#"{{"note":"range [0, 1)","name":"x-api-key","value":"{secret}"}}"#),
            format!(r#"{{"name":"x-api-key","note":"a [b","value":"{secret}"}}"#),
            format!(r#"{{"value":"{secret}","note":"x]","name":"api-key"}}"#),
            format!(
                r#"body: "{{\"note\":\"range [0, 1)\",\"name\":\"x-api-key\",\"value\":\"{secret}\"}}""#
            ),
            format!(
                r#"[{{"name":"model","value":"gpt-4o"}}, {{"note":"}}","name":"x-api-key","value":"{secret}"}}]"#
            ),
            // However long what comes before the naming member (sorted keys put `value`
            // before `variable`), and in a long secret written first.
            format!(
                r#"{{"value":"{secret}","description":"{}","name":"x-api-key"}}"#,
                "d".repeat(1_100)
            ),
            format!(
                r#"{{"meta":{{"labels":"{}"}},"name":"x-api-key","value":"{secret}"}}"#,
                "l".repeat(1_100)
            ),
            format!(
                r#"{{"value":"{secret}{}","name":"x-api-key"}}"#,
                "A".repeat(1_100)
            ),
            // A Debug struct in a string (anyhow's Debug of an error holding one): bare names,
            // strings at the value's level.
            format!(
                r#"Error("Header {{ note: \"range [0, 1)\", name: \"x-api-key\", value: \"{secret}\" }}")"#
            ),
            format!(
                r#"Error("Header {{ name: \"x-api-key\", tags: \"[a\", value: \"{secret}\" }}")"#
            ),
            format!(
                r#"Error("Header {{ note: \"a}}\", name: \"x-api-key\", value: \"{secret}\" }}")"#
            ),
            format!(
                "Error(\"[\\n    Header {{\\n        name: \\\"x-api-key\\\",\\n        note: \\\"range [0, 1\\\",\\n        value: \\\"{secret}\\\",\\n    }},\\n]\")"
            ),
            // Char literals, a quote's too.
            format!(r#"Header {{ c: '}}', name: "x-api-key", value: "{secret}" }}"#),
            format!(r#"Header {{ name: "x-api-key", c: '[', value: "{secret}" }}"#),
            format!(r#"Header {{ c: '"', name: "x-api-key", value: "{secret}" }}"#),
            format!(r#"Header {{ name: "x-api-key", c: '"', value: "{secret}" }}"#),
            format!(r#"Error("Header {{ c: '\"', name: \"x-api-key\", value: \"{secret}\" }}")"#),
        ] {
            let once = redact(&text).into_owned();
            assert!(!once.contains(secret), "leaked: {text} -> {once}");
            assert_eq!(redact(&once), once, "not idempotent: {text}");
        }
        // Kubernetes' `env` in YAML (`value` a sibling key of `name`, either order; another
        // item's keeps its own), Python's repr, Go's `%+v`, JSON with its value on the next line.
        check(&[
            (
                "env:\n- name: AZURE_OPENAI_KEY\n  value: S3CRET9f8e7d\n",
                "env:\n- name: AZURE_OPENAI_KEY\n  value: [REDACTED]\n",
            ),
            (
                "    env:\n    - name: OPENAI_API_KEY\n      value: \"S3CRET9f8e7d\"\n",
                "    env:\n    - name: OPENAI_API_KEY\n      value: \"[REDACTED]\"\n",
            ),
            (
                "env:\n- value: S3CRET9f8e7d\n  name: AZURE_OPENAI_KEY\n- name: M\n  value: m\n",
                "env:\n- value: [REDACTED]\n  name: AZURE_OPENAI_KEY\n- name: M\n  value: m\n",
            ),
            (
                concat!(
                    "env:\n  - name: M\n    value: m\n",
                    "  - value: S3CRET9f8e7d\n    x:\n      value: v\n    name: OPENAI_API_KEY\n",
                ),
                concat!(
                    "env:\n  - name: M\n    value: m\n",
                    "  - value: [REDACTED]\n    x:\n      value: v\n    name: OPENAI_API_KEY\n",
                ),
            ),
            (
                "{'name':'password','value':'S3CRET9f8e7d'}",
                "{'name':'password','value':'[REDACTED]'}",
            ),
            (
                "[{'name': 'x-api-key', 'value': 'S3CRET9f8e7d'}]",
                "[{'name': 'x-api-key', 'value': '[REDACTED]'}]",
            ),
            (
                "{Name:OPENAI_API_KEY Value:S3CRET9f8e7d ValueFrom:nil}",
                "{Name:OPENAI_API_KEY Value:[REDACTED] ValueFrom:nil}",
            ),
            (
                "{\"name\":\"x-api-key\",\n\"value\":\n\"S3CRET9f8e7d\"}",
                "{\"name\":\"x-api-key\",\n\"value\":\n\"[REDACTED]\"}",
            ),
            (
                "{\"name\":\"x-api-key\",\n\"value\":\n{\"raw\":\"S3CRET9f8e7d\"}}",
                "{\"name\":\"x-api-key\",\n\"value\":\n[REDACTED]}",
            ),
        ]);
        // Only the naming object's own value: an object inside it keeps its own.
        let nested = format!(
            r#"{{"name":"x-api-key","params":[{{"name":"model","value":"gpt-4o"}}],"value":"{secret}"}}"#
        );
        let once = redact(&nested);
        assert!(!once.contains(secret) && once.contains("gpt-4o"), "{once}");
        // Naming members outside any object, many times over, in any text: each is read
        // back to the one before, and the text is kept whole but for what other rules hide
        // (a `key`'s value), non-ASCII too.
        let prose = r#"ok key: "token" "#.repeat(150) + "END";
        let once = redact(&prose);
        assert_eq!(
            once.matches(r#"ok key: "[REDACTED]" "#).count(),
            150,
            "{once}"
        );
        assert!(once.ends_with("END"), "{once}");
        let lines = (0..200)
            .map(|i| format!("req {i}: header: \"x-api-key\" sent, é"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(redact(&lines), lines);
        let accented = "é".repeat(40) + "a" + &r#"key: "token" "#.repeat(131);
        let once = redact(&accented);
        assert_eq!(once.matches(r#"key: "[REDACTED]" "#).count(), 131, "{once}");
        for kept in [
            r#"missing fields ["api_key", "model"]"#,
            r#"[{"name":"model","value":"gpt-4o"}]"#,
            r#"{"header":"accept","value":"*/*"}"#,
            r#"{"name":"x-api-key"} and {"value":"shown"}"#,
            "{'name':'model','value':'gpt-4o'}",
            "- name: MODEL\n  value: gpt-4o\n",
            "{Name:MODEL Value:gpt-4o}",
        ] {
            assert_eq!(redact(kept), kept);
        }
    }

    /// Hostile texts of naming members are read in a bounded number of passes: thousands of
    /// members naming a secret, in one object never closed or in objects of their own, past
    /// [`NAMED_OBJECTS`] the rest hidden.
    #[test]
    fn many_naming_members_are_read_in_bounded_passes() {
        let unclosed = format!("{{{}", "\"name\":\"token\",\"value\":\"x1\",".repeat(4_000));
        let once = redact(&unclosed);
        assert!(!once.contains("x1"), "{}", &once[..200]);
        let many = "{\"name\":\"token\",\"value\":\"x2\"},".repeat(4_000);
        let once = redact(&many);
        assert!(!once.contains("x2"), "{}", &once[..200]);
        let open = "{\"name\":\"token\",".repeat(8_000);
        assert_eq!(redact(&open), redact(&redact(&open)));
        // Naming members of no quoted value, or one never closed: each read no further than
        // its name's reach.
        for text in ["name=".repeat(40_000) + " ", "name=\"".repeat(40_000)] {
            assert_eq!(redact(&text), text);
        }
        // Objects nested 64 deep around thousands of members: each object's nested brackets
        // are passed over whole, not read member by member again.
        let mut nested = r#"{"name":"token","x":"#.repeat(64);
        nested += &"a:".repeat(48_000);
        nested += " <password>x<password>x<password>x<password>x %20";
        let once = redact(&nested);
        assert_eq!(redact(&once), once);
        // Python's, Go's, YAML's and JSON-over-lines pairs, repeated: YAML mappings count as
        // objects. A YAML value never closed holds keys of its mapping, each looked back from
        // within the budget.
        for shape in [
            "env:\n- name: AZURE_OPENAI_KEY\n  value: S3CRET9f8e7d\n",
            "    env:\n    - name: OPENAI_API_KEY\n      value: \"S3CRET9f8e7d\"\n",
            "{'name':'password','value':'S3CRET9f8e7d'}",
            "[{'name': 'x-api-key', 'value': 'S3CRET9f8e7d'}]",
            "{Name:OPENAI_API_KEY Value:S3CRET9f8e7d ValueFrom:nil}",
            "{\"name\":\"x-api-key\",\n\"value\":\n\"S3CRET9f8e7d\"}",
        ] {
            let text = shape.repeat(40_000);
            let once = redact(&text);
            assert!(!once.contains("S3CRET9f8e7d"), "{}", &once[..200]);
            assert_eq!(redact(&once), once);
        }
        let unclosed = format!("value: \"\n{}", "name: token\n".repeat(40_000));
        let once = redact(&unclosed);
        assert_eq!(redact(&once), once);
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
