//! Secrets of every shape the redactor knows, planted in event messages, event fields (secret
//! and innocent names) and span fields, never reach a stored error record.

use proptest::prelude::*;
use tower_stream_monitor::Monitor;
use tower_stream_monitor::errors::{ErrorQuery, redact};
use tracing_subscriber::layer::SubscriberExt;

/// A planted secret: the text as logged, and the random parts that must never be stored.
#[derive(Debug, Clone)]
struct Secret {
    text: String,
    bodies: Vec<String>,
}

impl Secret {
    fn new(text: String, bodies: Vec<String>) -> Self {
        Self { text, bodies }
    }
}

/// Standard base64 with padding (what `Basic` credentials use).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn bearer() -> impl Strategy<Value = Secret> {
    (
        prop::sample::select(vec!["Bearer", "bearer", "BEARER"]),
        "[A-Za-z0-9._~+/-]{16,64}",
    )
        .prop_map(|(scheme, body)| Secret::new(format!("{scheme} {body}"), vec![body]))
}

fn basic() -> impl Strategy<Value = Secret> {
    ("[a-z]{3,10}", "[A-Za-z0-9!#%*]{8,24}").prop_map(|(user, password)| {
        let token = base64(format!("{user}:{password}").as_bytes());
        Secret::new(format!("Basic {token}"), vec![token])
    })
}

fn jwt() -> impl Strategy<Value = Secret> {
    (
        "[A-Za-z0-9_-]{10,40}",
        "[A-Za-z0-9_-]{10,200}",
        "[A-Za-z0-9_-]{20,86}",
    )
        .prop_map(|(header, payload, signature)| {
            let text = format!("eyJ{header}.eyJ{payload}.{signature}");
            Secret::new(text, vec![header, payload, signature])
        })
}

/// Prefixed provider tokens: OpenAI, Anthropic, Google, AWS, GitHub, Slack, Stripe, Groq,
/// GitLab, Hugging Face, xAI, Replicate, Perplexity.
fn provider_token() -> impl Strategy<Value = Secret> {
    let prefixed = |prefixes: Vec<&'static str>, body: &'static str| {
        (prop::sample::select(prefixes), body)
            .prop_map(|(prefix, body)| Secret::new(format!("{prefix}{body}"), vec![body]))
    };
    prop_oneof![
        prefixed(
            vec!["sk-", "sk-proj-", "SK-PROJ-", "sk-ant-api03-"],
            "[A-Za-z0-9_-]{20,100}"
        ),
        prefixed(vec!["AIza"], "[0-9A-Za-z_-]{35}"),
        prefixed(vec!["AKIA", "ASIA"], "[0-9A-Z]{16}"),
        prefixed(
            vec!["ghp_", "gho_", "ghs_", "ghu_", "ghr_"],
            "[A-Za-z0-9]{36}"
        ),
        prefixed(vec!["github_pat_"], "[A-Za-z0-9]{22}_[A-Za-z0-9]{59}"),
        prefixed(
            vec!["xoxb-", "xoxp-"],
            "[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24}"
        ),
        prefixed(
            vec!["sk_live_", "rk_live_", "sk_test_", "rk_test_"],
            "[A-Za-z0-9]{24,99}"
        ),
        prefixed(vec!["gsk_"], "[A-Za-z0-9]{52}"),
        prefixed(vec!["glpat-"], "[A-Za-z0-9_-]{20}"),
        prefixed(vec!["hf_"], "[A-Za-z]{34}"),
        prefixed(vec!["xai-"], "[A-Za-z0-9]{80}"),
        prefixed(vec!["r8_"], "[A-Za-z0-9]{37}"),
        prefixed(vec!["pplx-"], "[A-Za-z0-9]{48}"),
    ]
}

/// `name <sep> value` text (logfmt, query strings, headers, JSON, Debug output).
fn key_value() -> impl Strategy<Value = Secret> {
    let names = vec![
        "client_secret",
        "db_password",
        "aws_secret_access_key",
        "password",
        "PASSWORD",
        "passwd",
        "pwd",
        "api_key",
        "Api-Key",
        "apiKey",
        "x-api-key",
        "key",
        "token",
        "access_token",
        "refresh_token",
        "private_key",
        "jwt",
        "session_id",
        "sessionid",
        "auth",
        "x_auth",
        "auth_header",
        "secret",
        "Authorization",
        "azure_openai_key",
        "groq_key",
        "Ocp-Apim-Subscription-Key",
        "X-Amz-Signature",
        "sig",
    ];
    let forms: Vec<fn(&str, &str) -> String> = vec![
        |n, v| format!("{n}={v}"),
        |n, v| format!("{n}: {v}"),
        |n, v| format!("{n} = {v}"),
        |n, v| format!("{n}:{v}"),
        |n, v| format!("{n}=\"{v}\""),
        |n, v| format!("{n}: '{v}'"),
        |n, v| format!("{n} => \"{v}\""),
        |n, v| format!("{{\"{n}\":\"{v}\"}}"),
        |n, v| format!("{{\"{n}\": \"{v}\", \"model\": \"gpt-4o\"}}"),
        |n, v| format!("GET /v1/models?{n}={v}&alt=sse"),
        // Debug output: a wrapper, a struct, a list of header tuples.
        |n, v| format!("Config {{ {n}: Some(\"{v}\"), model: \"m\" }}"),
        |n, v| format!("Creds {{ {n}: auth::Token {{ inner: \"{v}\" }} }}"),
        |n, v| format!("[(\"{n}\", \"{v}\"), (\"accept\", \"json\")]"),
        // A JSON object or array as the value.
        |n, v| format!("{{\"{n}\": {{\"value\": \"{v}\"}}, \"model\": \"m\"}}"),
        |n, v| format!("{{\"{n}\": [\"{v}\"]}}"),
        // JSON inside a Debug string, inside another.
        |n, v| format!(r#"\\\"{n}\\\":\\\"{v}\\\""#),
        // YAML, the value on the next line.
        |n, v| format!("{n}:\n  {v}\nmodel: m"),
    ];
    (
        prop::sample::select(names),
        prop::sample::select(forms),
        "[A-Za-z0-9!@#%^*+=._~-]{8,40}",
    )
        .prop_map(|(name, form, value)| Secret::new(form(name, &value), vec![value]))
}

/// `name <sep> value` with a bare value holding the punctuation that once ended it early
/// (`<`, `>`, `\`, `'`, `"`, `)`): hidden to the next whitespace. It starts with two letters
/// or digits: one starting with a quote (or `b"`, a byte string) is a quoted value, hidden to
/// its closing quote.
fn bare_key_value() -> impl Strategy<Value = Secret> {
    let forms: Vec<fn(&str, &str) -> String> = vec![
        |n, v| format!("{n}={v}"),
        |n, v| format!("{n}: {v}"),
        |n, v| format!("{n}:{v}"),
        |n, v| format!("GET /v1/models?{n}={v}&alt=sse"),
        |n, v| format!("tool --{n} {v} --model m"),
    ];
    (
        prop::sample::select(vec!["password", "api_key", "token", "creds", "passcode"]),
        prop::sample::select(forms),
        r#"[A-Za-z0-9]{2}[A-Za-z0-9<>\\'")!@#%^*+=._~-]{6,38}"#,
    )
        .prop_map(|(name, form, value)| Secret::new(form(name, &value), vec![value]))
}

fn url_userinfo() -> impl Strategy<Value = Secret> {
    (
        prop::sample::select(vec![
            "postgres",
            "mysql",
            "redis",
            "amqps",
            "mongodb+srv",
            "https",
        ]),
        "[a-z]{3,10}",
        "[A-Za-z0-9!$*+=._~/?#-]{8,30}",
        "[a-z]{3,10}",
    )
        .prop_map(|(scheme, user, password, host)| {
            let text = format!("{scheme}://{user}:{password}@{host}.internal:5432/app");
            Secret::new(text, vec![password])
        })
}

/// A token as the user of a URL, without a password.
fn url_user_token() -> impl Strategy<Value = Secret> {
    "[A-Za-z0-9_-]{16,40}".prop_map(|token| {
        Secret::new(
            format!("https://{token}@gitlab.com/group/repo.git"),
            vec![token],
        )
    })
}

/// Secrets only visible once decoded: percent escapes, JSON `\uXXXX` and `\/`.
fn encoded() -> impl Strategy<Value = Secret> {
    let forms: Vec<fn(&str) -> String> = vec![
        |v| format!("GET /login?next=https%3A%2F%2Fx%2Fv1%3Fapi_key%3D{v}%26a%3D1"),
        |v| format!("q=my%20key%20sk-proj-{v}"),
        |v| format!(r"\u0073k-proj-{v}"),
        |v| format!(r"postgres:\/\/admin:{v}@db\/app"),
        |v| format!("next=%253Fpassword%253D{v}"),
    ];
    (prop::sample::select(forms), "[A-Za-z0-9]{12,40}")
        .prop_map(|(form, value)| Secret::new(form(&value), vec![value]))
}

fn shape() -> impl Strategy<Value = Secret> {
    prop_oneof![
        bearer(),
        basic(),
        jwt(),
        provider_token(),
        key_value(),
        bare_key_value(),
        url_userinfo(),
        url_user_token(),
        encoded(),
    ]
}

/// A secret with what comes right before and after it in the logged text.
fn planted() -> impl Strategy<Value = Secret> {
    (
        prop::sample::select(vec![" ", "(", "\"", "'", "[", "<", "\n", "\t", ": "]),
        shape(),
        prop::sample::select(vec![" ", ")", "\"", "'", ",", ".", ";", "]", ">", "\n", ""]),
    )
        .prop_map(|(before, secret, after)| {
            Secret::new(format!("{before}{}{after}", secret.text), secret.bodies)
        })
}

/// Emits events carrying `secrets` through a monitor's error layer and returns every stored
/// record and the summary, serialised as JSON.
fn stored_json(secrets: &[Secret]) -> (Vec<String>, usize) {
    let monitor = Monitor::builder()
        .build()
        .expect("default settings are valid");
    let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    tracing::subscriber::with_default(subscriber, || {
        for secret in secrets {
            let t = secret.text.as_str();
            let span = tracing::info_span!(
                "request",
                request_id = t,
                provider = %t,
                route = ?t,
                user_id = tracing::field::Empty,
                api_key = t,
            );
            span.record("user_id", t);
            span.in_scope(|| {
                tracing::error!("upstream said{t} while retrying");
                tracing::warn!(
                    api_key = t,
                    password = %t,
                    authorization = ?t,
                    session_id = t,
                    "request failed"
                );
                tracing::error!(detail = %t, body = t, debug = ?t, output_tokens = 7, "upstream error");
            });
        }
    });
    let query = ErrorQuery {
        limit: usize::MAX,
        ..ErrorQuery::default()
    };
    let page = monitor.errors(&query);
    let (records, total) = (page.errors, page.total);
    let mut json: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(&**r).expect("records serialise"))
        .collect();
    json.push(serde_json::to_string(&monitor.error_summary()).expect("summary serialises"));
    (json, total)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Nothing of a planted secret is in any stored record or the summary.
    #[test]
    fn planted_secrets_are_never_stored(secrets in prop::collection::vec(planted(), 1..6)) {
        let (json, total) = stored_json(&secrets);
        prop_assert_eq!(total, 3 * secrets.len());
        for text in &json {
            for secret in &secrets {
                for body in &secret.bodies {
                    prop_assert!(!text.contains(body.as_str()), "{:?} leaked into {}", body, text);
                }
            }
        }
        let first: serde_json::Value = serde_json::from_str(&json[0]).expect("valid JSON");
        prop_assert_eq!(&first["fields"]["output_tokens"], "7");
        prop_assert!(first["fields"]["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }

    /// `redact` alone, on many more texts: no body survives, and redacting again changes
    /// nothing.
    #[test]
    fn redact_removes_every_body_and_is_idempotent(
        secrets in prop::collection::vec(planted(), 1..6),
        filler in "[a-z ]{0,20}",
    ) {
        let text: String = secrets.iter().map(|s| format!(" {filler} {}", s.text)).collect();
        let once = redact(&text);
        for secret in &secrets {
            for body in &secret.bodies {
                prop_assert!(!once.contains(body.as_str()), "{:?} leaked into {:?}", body, once);
            }
        }
        prop_assert_eq!(redact(&once), once.clone());
    }

    /// Any text of the characters that open, close or separate the forms `redact` reads
    /// (quotes, brackets, tags, flags, URLs, escapes, colour codes) is redacted without a panic.
    #[test]
    fn redact_never_panics(
        pieces in prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    "password", "api_key", "Token", "Bearer", "Basic", "sk-proj-abcdefgh12",
                    "<Password>", "</Password>", "<apiKey a=\"1\">", "--token", "-p", "://",
                    "x://u:", "\\n", "\\\"", "\u{1b}[33m", "\\u{1b}[", "amp;", "é",
                    "-----BEGIN PGP PRIVATE KEY BLOCK-----", "%3D", "\\u0073",
                ]).prop_map(str::to_owned),
                "[a-z0-9<>/\\\\'\"()\\[\\]{}=:;,&@#?_ \n\t-]{1,4}",
            ],
            0..40,
        ),
    ) {
        let text: String = pieces.concat();
        let _ = redact(&text);
    }
}

/// Secret-named fields keep no value at all, innocent ones keep their text minus the secret.
#[test]
fn fields_by_name() {
    let secret = Secret::new(
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789".into(),
        Vec::new(),
    );
    let (json, total) = stored_json(&[secret]);
    assert_eq!(total, 3);
    let warn: serde_json::Value = serde_json::from_str(&json[1]).expect("valid JSON");
    for name in ["api_key", "password", "authorization", "session_id"] {
        assert_eq!(warn["fields"][name], "[REDACTED]", "{name}");
    }
    let error: serde_json::Value = serde_json::from_str(&json[0]).expect("valid JSON");
    assert_eq!(error["fields"]["detail"], "[REDACTED]");
    assert_eq!(error["fields"]["debug"], "\"[REDACTED]\"");
    assert_eq!(error["request_id"], "[REDACTED]");
    assert_eq!(error["user_id"], "[REDACTED]");
}

/// The stored records of the events `emit` logs, as JSON.
fn records(emit: impl FnOnce()) -> Vec<serde_json::Value> {
    let monitor = Monitor::builder()
        .build()
        .expect("default settings are valid");
    let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    tracing::subscriber::with_default(subscriber, emit);
    let query = ErrorQuery {
        limit: usize::MAX,
        ..ErrorQuery::default()
    };
    monitor
        .errors(&query)
        .errors
        .iter()
        .map(|r| serde_json::to_value(&**r).expect("records serialise"))
        .collect()
}

/// Shapes that once reached a record, each with the secret in it: none is stored, wherever it
/// is logged.
#[test]
fn known_leaks_are_closed() {
    let cases = [
        (
            r#"ProviderConfig { api_key: Some("P1-secret") }"#,
            "P1-secret",
        ),
        (r#"Creds { password: Token("P2-token") }"#, "P2-token"),
        (r#"{"password": {"value": "P13-nested"}}"#, "P13-nested"),
        (r#"{"x-api-key": ["P13b-listed"]}"#, "P13b-listed"),
        (r#"[("x-api-key", "P8-tuple")]"#, "P8-tuple"),
        (r#"\\\"password\\\":\\\"P3-escaped\\\""#, "P3-escaped"),
        (r"\u0073k-proj-P4abcdefgh", "P4abcdefgh"),
        (
            "?next=https%3A%2F%2Fx%2Fv1%3Fkey%3DAIzaSyP5abcdefghijklmnopqrstu",
            "P5abcdefghijklmnopqrstu",
        ),
        ("q=my%20key%20sk-proj-P6abcdefgh", "P6abcdefgh"),
        ("%3Fapi_key%3DP7-encoded", "P7-encoded"),
        (r"postgres:\/\/admin:P15-php@db\/app", "P15-php"),
        ("azure_openai_key=P9-azure groq_key=P9b-groq", "P9"),
        ("Ocp-Apim-Subscription-Key: P10-apim", "P10-apim"),
        ("?X-Amz-Signature=P10b-amz&sig=P10c-sas", "P10"),
        (
            "https://glpat-P14abcdefghijk@gitlab.com/x.git",
            "P14abcdefghijk",
        ),
        ("password=P12a;P12-semicolon-tail", "P12"),
        ("password:\n  P17-yaml", "P17-yaml"),
    ];
    for (text, secret) in cases {
        let stored = records(|| {
            let span = tracing::info_span!("request", request_id = text, user_id = ?text);
            span.in_scope(|| {
                tracing::error!(detail = text, debug = ?text, "upstream said: {text}");
            });
        });
        assert_eq!(stored.len(), 1, "{text}");
        let json = stored[0].to_string();
        assert!(!json.contains(secret), "{secret:?} leaked into {json}");
    }
}

/// A field name is any string the callsite gives; it is redacted like a value.
#[test]
fn secret_field_names_are_redacted() {
    let stored = records(|| tracing::error!("sk-proj-P16abcdefgh" = 1, "x"));
    let json = stored[0].to_string();
    assert!(!json.contains("P16abcdefgh"), "{json}");
    assert_eq!(stored[0]["fields"]["[REDACTED]"], "1");
}

/// A span value longer than what is kept is redacted before it is cut: a cut first would keep
/// the start of a secret, too short to be recognised.
#[test]
fn long_span_values_are_redacted_before_the_cut() {
    // The cut at 256 bytes (less the `…`) would fall just after `sk-proj-AB`.
    let value = format!("{} sk-proj-ABCDEFGHIJKLMNOP", "x".repeat(242));
    let stored = records(|| {
        let span = tracing::info_span!("request", request_id = value.as_str(), user_id = ?value);
        span.in_scope(|| tracing::error!("failed"));
    });
    for field in ["request_id", "user_id"] {
        let kept = stored[0][field].as_str().expect("a string");
        assert!(!kept.contains("sk-proj"), "{field}: {kept}");
        assert!(
            kept.ends_with("[REDACTED]") || kept.ends_with("[REDACTED]\""),
            "{kept}"
        );
    }
}

/// The records a monitor's error layer keeps of what `log` logs, as JSON.
fn stored(log: impl FnOnce()) -> String {
    let monitor = Monitor::builder().build().unwrap();
    let subscriber = tracing_subscriber::registry().with(monitor.error_layer());
    tracing::subscriber::with_default(subscriber, log);
    let query = ErrorQuery {
        limit: 1000,
        ..ErrorQuery::default()
    };
    let page = monitor.errors(&query);
    assert_eq!(page.total, 1, "{page:#?}");
    serde_json::to_string(&page).unwrap()
}

/// A field of bytes is kept as text and redacted: as tracing's default hex, a body's
/// `"api_key"` would pass unseen.
#[test]
fn a_field_of_bytes_is_redacted_as_text() {
    let body: &[u8] = br#"{"api_key":"abc123secret","model":"gpt-4o"}"#;
    let json = stored(|| tracing::error!(body, "upstream rejected the body"));
    let hex: String = b"abc123secret"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        !json.contains("abc123secret") && !json.contains(&hex),
        "{json}"
    );
    assert!(json.contains("gpt-4o"), "the rest is kept: {json}");
}

/// A secret's name in one field and its value in the next (`header`, `value`): the value is
/// redacted whole.
#[test]
fn a_secret_named_by_the_field_before_is_redacted() {
    let json = stored(|| {
        tracing::warn!(
            header = "x-api-key",
            value = "abc123secret",
            "rejected header"
        );
    });
    assert!(!json.contains("abc123secret"), "{json}");
    assert!(json.contains("x-api-key"), "the name is kept: {json}");
    let json = stored(|| tracing::warn!(name = ?"api_key", value = %"abc123secret", "odd"));
    assert!(!json.contains("abc123secret"), "{json}");
    // A name that is no secret's leaves the next value alone.
    let json = stored(|| tracing::warn!(header = "content-type", value = "text/plain", "odd"));
    assert!(json.contains("text/plain"), "{json}");
}

/// Logs `text` as a message and a field, and asserts that `secret` is in no stored record.
fn assert_hidden(text: &str, secret: &str) {
    let stored = records(|| tracing::error!(detail = text, debug = ?text, "upstream said: {text}"));
    assert_eq!(stored.len(), 1, "{text}");
    let json = stored[0].to_string();
    assert!(!json.contains(secret), "{secret:?} leaked into {json}");
}

/// Asserts that `redact` hides `secret` in `text`, and that redacting again changes nothing.
fn hidden_for_good(text: &str, secret: &str) {
    let once = redact(text).into_owned();
    assert!(!once.contains(secret), "leaked: {text} -> {once}");
    assert_eq!(redact(&once), once, "not idempotent: {text}");
}

/// Logs `text` as a message and a field, and asserts that it is stored unchanged.
fn assert_kept(text: &str) {
    assert_eq!(redact(text), text, "redacted");
    let stored = records(|| tracing::error!(detail = text, "upstream said: {text}"));
    assert_eq!(stored[0]["fields"]["detail"], text, "{text}");
}

/// A bare value is hidden to the next whitespace, whatever punctuation it holds.
#[test]
fn a_bare_value_is_hidden_to_the_next_whitespace() {
    assert_hidden("password=k9<Lq>vX2 next", "Lq>vX2");
    assert_hidden(r"password=k9\Lq7vX2 next", "Lq7vX2");
    assert_hidden("password=k9'Lq7vX2 next", "Lq7vX2");
    assert_hidden("password=k9)Lq7vX2 next", "Lq7vX2");
    assert_hidden("password=k9\"Lq7vX2 next", "Lq7vX2");
    assert_hidden("token: k9>Lq7vX2", "Lq7vX2");
    assert_hidden("password=ab&cd7vX2 next", "cd7vX2");
    // What follows the value is kept: the next word, a query's next parameter, a closing
    // bracket or quote.
    assert_eq!(
        redact("password=k9<Lq>vX2 next"),
        "password=[REDACTED] next"
    );
    assert_eq!(
        redact("GET /v1?api_key=k9)x&alt=sse"),
        "GET /v1?api_key=[REDACTED]&alt=sse"
    );
    assert_eq!(redact("(session_id=abc)"), "(session_id=[REDACTED])");
    assert_eq!(redact(r#""a\napi_key=abc""#), r#""a\napi_key=[REDACTED]""#);
    assert_kept("output_tokens=5 max_tokens=64 ratio=a<b>c");
}

#[derive(Debug)]
#[allow(dead_code)]
enum Credentials {
    Bearer(String),
    Basic(String, String),
    ApiKey(String),
}

#[derive(Debug)]
#[allow(dead_code)]
struct Upstream {
    login: Credentials,
    model: String,
}

/// The Debug of credential types (`Bearer("…")`, `Basic("u", "…")`, `ApiKey("…")`) under a
/// field of no secret name, and `Bearer` before a quoted token.
#[test]
fn debug_of_credential_types_is_redacted() {
    let cases = [
        (
            Credentials::Bearer("tok123secret456".into()),
            "tok123secret456",
        ),
        (
            Credentials::Basic("bob".into(), "pw123secret456".into()),
            "pw123secret456",
        ),
        (
            Credentials::ApiKey("key123secret456".into()),
            "key123secret456",
        ),
    ];
    for (login, secret) in cases {
        let upstream = Upstream {
            login,
            model: "gpt-4o".into(),
        };
        let stored =
            records(|| tracing::error!(upstream = ?upstream, "upstream refused {upstream:?}"));
        let json = stored[0].to_string();
        assert!(!json.contains(secret), "{secret:?} leaked into {json}");
        assert!(json.contains("gpt-4o"), "the rest is kept: {json}");
    }
    let token = "tok789secret012";
    assert_hidden(&format!("sent Authorization Bearer {token:?}"), token);
    assert_hidden(&format!("Token(\"a)b\", {token:?})"), token);
    assert_eq!(
        redact(r#"Upstream { login: Basic("bob", "pw"), model: "m" }"#),
        r#"Upstream { login: Basic([REDACTED]), model: "m" }"#
    );
    // Words that only look like a scheme are kept as they were.
    assert_eq!(redact("Bearer of bad news"), "Bearer [REDACTED] bad news");
    assert_kept("Basic authentication failed: Some(\"x\") Ok(3)");
}

/// A URL password holding `/`, `?` or `#`: hidden to the last `@` of the URL.
#[test]
fn a_url_password_with_a_slash_question_mark_or_hash_is_redacted() {
    assert_hidden(
        "connect postgres://admin:pa/ss123word@db.internal/app failed",
        "ss123word",
    );
    assert_hidden(
        "connect postgres://admin:pa?ss123word@db.internal/app failed",
        "ss123word",
    );
    assert_hidden(
        "connect redis://admin:pa#ss123word@cache:6379 failed",
        "ss123word",
    );
    assert_eq!(
        redact("connect redis://admin:pa#ss@word@cache:6379 failed"),
        "connect redis://admin:[REDACTED]@cache:6379 failed"
    );
    assert_kept("see https://example.com/a?b=c and https://example.com/a@b");
}

/// PGP private keys in ASCII armor, as PEM ones: between their BEGIN and END lines.
#[test]
fn an_armored_pgp_private_key_is_redacted() {
    let armor = "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGVdSecretKeyMaterial0123\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----";
    assert_hidden(
        &format!("could not load {armor}"),
        "lQOYBGVdSecretKeyMaterial0123",
    );
    assert_eq!(
        redact(&format!("could not load {armor} done")),
        "could not load -----BEGIN PGP PRIVATE KEY BLOCK-----[REDACTED]-----END PGP PRIVATE KEY BLOCK----- done"
    );
    assert_kept("-----BEGIN PGP PUBLIC KEY BLOCK-----\nmQENBF\n-----END PGP PUBLIC KEY BLOCK-----");
}

/// A provider key right after `_` or an ANSI colour code; not inside a word.
#[test]
fn a_provider_key_after_an_underscore_or_a_colour_code_is_redacted() {
    let key = "sk-proj-AbCdEfGh12345678";
    assert_hidden(
        &format!("invalid key \u{1b}[33m{key}\u{1b}[0m"),
        "AbCdEfGh12345678",
    );
    assert_hidden(
        &format!("invalid key \u{1b}[1;31m{key}"),
        "AbCdEfGh12345678",
    );
    assert_hidden(&format!("OPENAI_API_KEY_{key}"), "AbCdEfGh12345678");
    assert_hidden(
        "GITHUB_ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "abcdefghijklmnopqrstuvwxyz0123456789",
    );
    assert_eq!(
        redact(&format!("\u{1b}[33m{key}\u{1b}[0m")),
        "\u{1b}[33m[REDACTED]\u{1b}[0m"
    );
    assert_kept("task-1234567890abcdef disk-usage risk-assessment-2024 mask-abcdefghij");
}

/// XML elements and command-line flags named like a secret.
#[test]
fn xml_elements_and_command_lines_are_redacted() {
    assert_hidden(
        "<Credentials><Password>hunter2secret</Password></Credentials>",
        "hunter2secret",
    );
    assert_hidden("<apiKey>key 123 secret</apiKey>", "123 secret");
    assert_hidden(
        r#"<ns:Password type="x">hunter2secret</ns:Password>"#,
        "hunter2secret",
    );
    let command = format!(
        "{:?}",
        std::process::Command::new("tool").args(["--api-key", "key123secret456", "--model", "m"])
    );
    assert_hidden(&format!("command {command} failed"), "key123secret456");
    assert_hidden(
        "command tool --password hunter2secret failed",
        "hunter2secret",
    );
    assert_hidden(
        "command tool --api-key=key123secret456 failed",
        "key123secret456",
    );
    assert_hidden(r#"args ["--token", "tok123secret456"]"#, "tok123secret456");
    assert_eq!(
        redact("tool --password hunter2secret --model gpt-4o"),
        "tool --password [REDACTED] --model gpt-4o"
    );
    assert_eq!(
        redact("<Password>hunter2secret</Password><Model>gpt-4o</Model>"),
        "<Password>[REDACTED]</Password><Model>gpt-4o</Model>"
    );
    assert_kept("<Model>gpt-4o</Model> tool --model gpt-4o --no-password --verbose pre-auth step");
}

/// An element's CDATA section and comments are its text too; an element right after a token
/// a shape hides is hidden in the same pass (redacting again changes nothing).
#[test]
fn xml_cdata_comments_and_elements_after_a_token_are_redacted() {
    for text in [
        "<password><![CDATA[hunter2secret]]></password>",
        "<Password>\n  <![CDATA[hunter2secret]]>\n</Password>",
        "<password><!-- set by ops -->hunter2secret</password>",
        "upstream said Bearer abc123<password>hunter2secret</password>",
        "<password>hunter2<token>t0k3nsecret</token></password>",
        "<Password>hunter2<ApiKey>sk_abcsecret</ApiKey></Password>",
    ] {
        hidden_for_good(text, "secret");
    }
    // An unclosed credential type, read again, no longer changes.
    for text in ["Bearer(\"x\"]]", "Bearer(\"x\"]x"] {
        let once = redact(text).into_owned();
        assert_eq!(redact(&once), once, "not idempotent: {text}");
    }
    assert_eq!(
        redact("<Password><![CDATA[a<b]]></Password><Model>gpt-4o</Model>"),
        "<Password>[REDACTED]</Password><Model>gpt-4o</Model>"
    );
}

/// `creds`, `passcode` and `authentication` are secret names.
#[test]
fn more_credential_names_are_redacted() {
    let stored = records(|| {
        tracing::error!(
            creds = "pw123secret456",
            passcode = "pc123secret456",
            authentication = "au123secret456",
            "login failed"
        );
    });
    let json = stored[0].to_string();
    for secret in ["pw123secret456", "pc123secret456", "au123secret456"] {
        assert!(!json.contains(secret), "{secret} leaked into {json}");
    }
    assert_hidden("Authentication: xyz123secret", "xyz123secret");
    assert_hidden("user_passcode=123456789", "123456789");
    assert_kept("authentication_error=true authentication_method=oauth");
}

/// An element named like a secret and closed right after its text is hidden whatever comes
/// before it: a word, a colon, text with no spaces (Japanese). A free-text `Bearer` or `Basic`
/// credential is hidden to the next whitespace, whatever characters it holds.
#[test]
fn elements_after_a_word_and_credentials_with_punctuation_are_redacted() {
    for text in [
        "<Login>user<Password>hunter2</Password></Login>",
        "ok<Password>hunter2</Password>",
        "error:<password>hunter2</password>",
        "エラー<password>hunter2</password>",
        "Bearer abcé<password>hunter2</password>",
        "Bearer abc%2Bdef%2Fhunter2",
        "auth failed: Bearer abc$hunter2 rejected",
        "Bearer abc:hunter2",
        "auth Basic dXNlcjpwYXNz%3D%3Dhunter2",
    ] {
        hidden_for_good(text, "hunter2");
    }
    assert_eq!(
        redact("ok<Password>hunter2</Password> then"),
        "ok<Password>[REDACTED]</Password> then"
    );
    // A type's name in text is no element: it is never closed.
    assert_kept("expected Option<Token> or Vec<Password>, found ()");
}

/// A credential type holding a char literal that is a bracket, or closed by the wrong bracket,
/// is hidden in one pass: the text around it is kept, not hidden whole.
#[test]
fn brackets_inside_a_credential_call_keep_the_text_around_it() {
    assert_eq!(
        redact("lexer: unexpected Token([']', ']', ']', ']', ']']) at line 3, column 7"),
        "lexer: unexpected Token([REDACTED]) at line 3, column 7"
    );
    let once = redact("Token(a]b]c]d]e] ordinary text follows").into_owned();
    assert_ne!(once, "[REDACTED]", "hidden whole");
    assert!(once.starts_with("Token("), "{once}");
    assert!(!once.contains("b]c"), "{once}");
    // A `)` inside a quoted string is no end of the call, closed or cut.
    for (text, secret) in [
        ("token(\"p@ss)word123", "word123"),
        ("Token(\"abc)defSECRET", "SECRET"),
        ("Token(\"abc)def\"] then", "def"),
        ("Token(a] \"x)yzSECRET\") then", "SECRET"),
    ] {
        hidden_for_good(text, secret);
    }
    // Five glued elements are read in one pass, their context kept.
    let glued = "<password>a1<token>b2<secret>c3<pwd>d4<jwt>e5</jwt></pwd></secret></token>\
                 </password> request 42 failed: upstream 503";
    let once = redact(glued).into_owned();
    assert!(once.ends_with("request 42 failed: upstream 503"), "{once}");
    for value in ["a1", "b2", "c3", "d4", "e5"] {
        assert!(!once.contains(value), "{value} leaked: {once}");
    }
}
