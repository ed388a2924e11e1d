//! Checks the monitoring endpoints of any running server: status codes, every field of the
//! `/metrics`, `/health` and `/errors` answers (README, Endpoints) and its type,
//! health semantics, error handling, and 100 concurrent `/health` requests.
//!
//! ```text
//! cargo run --example verify -- http://127.0.0.1:3000 [--prefix /api/v1/monitoring] [--token T]
//! ```
//! Exits non-zero on any failure.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use serde_json::Value;

/// One check and its result.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

struct Checks(Vec<Check>);

impl Checks {
    fn check(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) -> bool {
        self.0.push(Check {
            name: name.into(),
            passed,
            detail: detail.into(),
        });
        passed
    }
}

fn is_number(v: &Value) -> bool {
    v.is_number() && v.as_f64().is_some_and(f64::is_finite)
}

const WINDOW_FIELDS: [&str; 31] = [
    "total_streaming_requests",
    "avg_first_token_latency_ms",
    "first_token_p50_ms",
    "first_token_p95_ms",
    "first_token_p99_ms",
    "avg_tokens_per_second",
    "tokens_per_second_p50",
    "total_tokens",
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_output_tokens",
    "output_tokens_p50",
    "output_tokens_p95",
    "output_tokens_p99",
    "input_tokens_p50",
    "input_tokens_p95",
    "input_tokens_p99",
    "cost_usd",
    "estimated_cost_usd",
    "unpriced_requests",
    "streaming_error_rate",
    "streaming_errors",
    "timeouts",
    "auth_errors",
    "cancelled",
    "avg_duration_ms",
    "duration_p95_ms",
    "time_per_output_token_p95_ms",
    "max_stall_ms",
    "in_flight",
];

const OUTCOMES: [&str; 8] = [
    "ok",
    "auth_error",
    "rate_limited",
    "timeout",
    "client_error",
    "server_error",
    "stream_error",
    "cancelled",
];

const FINISH_REASONS: [&str; 6] = [
    "stop",
    "length",
    "content_filter",
    "tool_calls",
    "other",
    "unfinished",
];

/// What is missing or mistyped in a WINDOW object (empty when it is right).
pub fn window_problems(w: &Value) -> Vec<String> {
    let mut problems: Vec<String> = WINDOW_FIELDS
        .iter()
        .filter(|f| !is_number(&w[**f]))
        .map(|f| format!("{f} is not a number"))
        .collect();
    for o in OUTCOMES {
        if !w["by_outcome"][o].is_u64() {
            problems.push(format!("by_outcome.{o} missing"));
        }
    }
    for r in FINISH_REASONS {
        if !w["finish_reasons"][r].is_u64() {
            problems.push(format!("finish_reasons.{r} missing"));
        }
    }
    if w["streaming_error_rate"]
        .as_f64()
        .is_some_and(|r| !(0.0..=100.0).contains(&r))
    {
        problems.push("streaming_error_rate outside 0-100".into());
    }
    problems
}

fn verdict(problems: &[String]) -> (bool, String) {
    (problems.is_empty(), problems.join("; "))
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<(u16, String, String), String> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            request = request.bearer_auth(t);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response
            .text()
            .await
            .map_err(|e| format!("body failed: {e}"))?;
        Ok((status, content_type, body))
    }

    async fn get_json(&self, path: &str) -> Result<(u16, Value), String> {
        let (status, _, body) = self.send(reqwest::Method::GET, path).await?;
        let json = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body:.200}"))?;
        Ok((status, json))
    }
}

/// Runs every check against `base` (`http://host:port`) with the endpoints under `prefix`.
pub async fn verify(base: &str, prefix: &str, token: Option<String>) -> Vec<Check> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(100)
            .build()
            .expect("an HTTP client"),
        base: base.trim_end_matches('/').to_owned(),
        token,
    };
    let mut c = Checks(Vec::new());

    // /metrics
    match client.get_json(&format!("{prefix}/metrics")).await {
        Ok((status, body)) => {
            c.check("metrics: HTTP 200", status == 200, format!("got {status}"));
            c.check(
                "metrics: status success",
                body["status"] == "success",
                format!("{}", body["status"]),
            );
            let d = &body["data"];
            c.check(
                "metrics: timestamp (RFC 3339)",
                d["timestamp"]
                    .as_str()
                    .is_some_and(|t| humantime::parse_rfc3339(t).is_ok()),
                format!("{}", d["timestamp"]),
            );
            c.check(
                "metrics: uptime_seconds",
                is_number(&d["uptime_seconds"]),
                "",
            );
            let mut problems = Vec::new();
            for (name, unit) in [
                ("streaming_first_token", "ms"),
                ("streaming_tokens_per_second", "tokens/s"),
                ("streaming_error_rate", "%"),
            ] {
                let b = &d["baselines"][name];
                for f in ["target", "warning", "critical"] {
                    if !is_number(&b[f]) {
                        problems.push(format!("{name}.{f}"));
                    }
                }
                if b["unit"] != unit {
                    problems.push(format!("{name}.unit"));
                }
            }
            let (ok, detail) = verdict(&problems);
            c.check("metrics: baselines", ok, detail);
            for window in ["streaming_5min", "streaming_1hour"] {
                let (ok, detail) = verdict(&window_problems(&d[window]));
                c.check(format!("metrics: {window} fields and types"), ok, detail);
            }
            match d["streaming_by_provider"].as_object() {
                Some(providers) => {
                    let mut problems = Vec::new();
                    for (p, w) in providers {
                        for span in ["5min", "1hour"] {
                            problems.extend(
                                window_problems(&w[span])
                                    .into_iter()
                                    .map(|e| format!("{p}.{span}.{e}")),
                            );
                        }
                    }
                    let (ok, detail) = verdict(&problems);
                    c.check(
                        format!(
                            "metrics: streaming_by_provider ({} providers)",
                            providers.len()
                        ),
                        ok,
                        detail,
                    );
                }
                None => {
                    c.check("metrics: streaming_by_provider", false, "not an object");
                }
            }
            let rows = d["streaming_by_model"].as_array();
            c.check(
                format!(
                    "metrics: streaming_by_model ({} provider and model pairs)",
                    rows.map_or(0, Vec::len)
                ),
                rows.is_some_and(|rows| {
                    rows.iter().all(|r| {
                        r["provider"].is_string()
                            && r["model"].is_string()
                            && r["total_streaming_requests"].as_u64() > Some(0)
                            && r["streaming_errors"].is_u64()
                            && [
                                "streaming_error_rate",
                                "first_token_p50_ms",
                                "first_token_p95_ms",
                                "avg_tokens_per_second",
                                "time_per_output_token_p95_ms",
                                "cost_usd",
                            ]
                            .iter()
                            .all(|f| is_number(&r[*f]))
                    })
                }),
                "each row: provider, model, streams, errors and figures",
            );
            let r = &d["requests_5min"];
            c.check(
                "metrics: requests_5min",
                r["total_requests"].is_u64()
                    && r["auth_errors"].is_u64()
                    && is_number(&r["auth_error_rate"]),
                format!("{r}"),
            );
            let s = &d["current_system"];
            c.check(
                "metrics: current_system",
                // A figure the platform cannot give is null, never a false 0.
                ["cpu_percent", "memory_mb", "memory_percent"]
                    .iter()
                    .all(|f| is_number(&s[*f]) || s[*f].is_null())
                    && ["num_threads", "num_fds"]
                        .iter()
                        .all(|f| s[*f].is_u64() || s[*f].is_null()),
                format!("{s}"),
            );
            c.check(
                "metrics: health_status",
                ["unknown", "healthy", "degraded", "critical"]
                    .contains(&d["health_status"].as_str().unwrap_or("")),
                format!("{}", d["health_status"]),
            );
        }
        Err(e) => {
            c.check("metrics: reachable and JSON", false, e);
        }
    }

    // /metrics/prometheus
    match client
        .send(
            reqwest::Method::GET,
            &format!("{prefix}/metrics/prometheus"),
        )
        .await
    {
        Ok((status, content_type, body)) => {
            c.check(
                "prometheus: HTTP 200",
                status == 200,
                format!("got {status}"),
            );
            c.check(
                "prometheus: text format 0.0.4",
                content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
                content_type,
            );
            let bad: Vec<&str> = body
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter(|l| {
                    let value = l.rsplit(' ').next().unwrap_or("");
                    value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value)
                })
                .take(3)
                .collect();
            c.check(
                "prometheus: every sample line has a value",
                bad.is_empty(),
                bad.join(" | "),
            );
            c.check(
                "prometheus: no summaries",
                !body.contains("quantile=\""),
                "",
            );
        }
        Err(e) => {
            c.check("prometheus: reachable", false, e);
        }
    }

    // /health
    match client.get_json(&format!("{prefix}/health")).await {
        Ok((status, body)) => {
            let health = body["status"].as_str().unwrap_or("");
            c.check(
                "health: status is unknown|healthy|degraded|critical",
                ["unknown", "healthy", "degraded", "critical"].contains(&health),
                health.to_owned(),
            );
            c.check(
                "health: 503 exactly when critical",
                (status == 503) == (health == "critical") && (status == 200 || status == 503),
                format!("HTTP {status}, status {health}"),
            );
            let checks_ok = body["checks"].as_array().is_some_and(|a| {
                !a.is_empty()
                    && a.iter().all(|ch| {
                        ch["name"].is_string()
                            && ch["window"].is_string()
                            && is_number(&ch["value"])
                            && ch["thresholds"].is_object()
                            && ch["status"].is_string()
                    })
            });
            c.check(
                "health: checks have name, window, value, thresholds, status",
                checks_ok,
                "",
            );
            let triggers_ok = body["triggers"].as_array().is_some_and(|a| {
                a.iter()
                    .all(|t| t["name"].is_string() && t["fired"].is_boolean())
            });
            c.check("health: triggers", triggers_ok, "");
            let budgets_ok = body["budgets"].as_array().is_some_and(|a| {
                a.iter().all(|b| {
                    b["name"].is_string()
                        && b["window"].is_string()
                        && is_number(&b["spent_usd"])
                        && is_number(&b["usd_per_hour"])
                        && b["exceeded"].is_boolean()
                        && b["rollback"].is_boolean()
                })
            });
            c.check("health: budgets", budgets_ok, "");
            let anomalies_ok = body["anomalies"].as_array().is_some_and(|a| {
                a.iter().all(|x| {
                    x["provider"].is_string()
                        && x["model"].is_string()
                        && x["signal"].is_string()
                        && is_number(&x["value"])
                        && is_number(&x["baseline_median"])
                        && is_number(&x["score"])
                        && x["anomalous"].is_boolean()
                        && x["rollback"].is_boolean()
                })
            });
            c.check("health: anomalies", anomalies_ok, "");
            // README, Health: a rollback is a fired trigger, a passed budget marked
            // `rollback()`, or an anomaly marked so.
            let any = |list: &str, on: &dyn Fn(&Value) -> bool| {
                body[list].as_array().is_some_and(|a| a.iter().any(on))
            };
            let rollback = any("triggers", &|t| t["fired"] == true)
                || any("budgets", &|b| {
                    b["exceeded"] == true && b["rollback"] == true
                })
                || any("anomalies", &|x| {
                    x["anomalous"] == true && x["rollback"] == true
                });
            c.check(
                "health: rollback is a bool, true exactly when a trigger fired or a rollback budget or anomaly passed",
                body["rollback"].as_bool() == Some(rollback),
                format!("{}", body["rollback"]),
            );
        }
        Err(e) => {
            c.check("health: reachable and JSON", false, e);
        }
    }

    // /metrics/history and /dashboard
    match client.get_json(&format!("{prefix}/metrics/history")).await {
        Ok((status, body)) => {
            let d = &body["data"];
            let ordered = |p: &Vec<Value>, n: usize| {
                p.len() == n
                    && p.windows(2)
                        .all(|w| w[0]["start_unix"].as_u64() < w[1]["start_unix"].as_u64())
                    && p.iter().all(|p| p["total_streaming_requests"].is_u64())
            };
            let points = |w: &Value, n: usize| {
                w["points"].as_array().is_some_and(|p| ordered(p, n))
                    && w["by_provider"].as_object().is_some_and(|providers| {
                        providers
                            .values()
                            .all(|p| p.as_array().is_some_and(|p| ordered(p, n)))
                    })
            };
            c.check(
                "metrics/history: 30 points of 10 s and 60 of 1 min, oldest first, overall and \
                 per provider",
                status == 200
                    && d["five_minutes"]["slot_seconds"] == 10
                    && points(&d["five_minutes"], 30)
                    && d["one_hour"]["slot_seconds"] == 60
                    && points(&d["one_hour"], 60),
                format!("HTTP {status}"),
            );
        }
        Err(e) => {
            c.check("metrics/history: reachable and JSON", false, e);
        }
    }
    match client
        .send(reqwest::Method::GET, &format!("{prefix}/dashboard"))
        .await
    {
        Ok((status, content_type, body)) => {
            c.check(
                "dashboard: an HTML page that fetches relative URLs only",
                status == 200
                    && content_type.starts_with("text/html")
                    && body.contains("metrics/history")
                    // No absolute URL but the SVG namespace name: it loads nothing elsewhere.
                    && !body
                        .replace("http://www.w3.org/2000/svg", "")
                        .contains("://"),
                format!("HTTP {status}, {content_type}"),
            );
        }
        Err(e) => {
            c.check("dashboard: reachable", false, e);
        }
    }

    // /errors and /errors/summary
    match client.get_json(&format!("{prefix}/errors?limit=10")).await {
        Ok((status, body)) => {
            let d = &body["data"];
            let ok = status == 200
                && d["total"].is_u64()
                && d["errors"].as_array().is_some_and(|a| {
                    a.len() <= 10
                        && a.iter().all(|e| {
                            ["timestamp", "level", "target", "message", "fingerprint"]
                                .iter()
                                .all(|f| e[*f].is_string())
                                && e["fields"].is_object()
                                && e["spans"].is_array()
                        })
                });
            c.check(
                "errors: list with timestamp, level, target, message, fields, spans, fingerprint",
                ok,
                format!("HTTP {status}"),
            );
        }
        Err(e) => {
            c.check("errors: reachable and JSON", false, e);
        }
    }
    match client.get_json(&format!("{prefix}/errors?limit=0")).await {
        Ok((status, body)) => {
            c.check(
                "errors: limit=0 is a 400 naming the parameter",
                status == 400 && body["error"]["parameter"] == "limit",
                format!("HTTP {status}"),
            );
        }
        Err(e) => {
            c.check("errors: bad limit answered with JSON", false, e);
        }
    }
    match client.get_json(&format!("{prefix}/errors/summary")).await {
        Ok((status, body)) => {
            let d = &body["data"];
            let ok = status == 200
                && d["totals"]["warn"].is_u64()
                && d["totals"]["error"].is_u64()
                && d["last_5min"].is_object()
                && d["last_1hour"].is_object()
                && d["groups"].as_array().is_some_and(|g| {
                    g.windows(2)
                        .all(|w| w[0]["count"].as_u64() >= w[1]["count"].as_u64())
                });
            c.check(
                "errors/summary: totals, last_5min, last_1hour, groups by count",
                ok,
                format!("HTTP {status}"),
            );
        }
        Err(e) => {
            c.check("errors/summary: reachable and JSON", false, e);
        }
    }

    // Hygiene
    match client.get_json(&format!("{prefix}/no-such-endpoint")).await {
        Ok((status, _)) => {
            c.check(
                "unknown path under the prefix: 404 JSON",
                status == 404,
                format!("HTTP {status}"),
            );
        }
        Err(e) => {
            c.check("unknown path under the prefix: 404 JSON", false, e);
        }
    }
    match client
        .send(reqwest::Method::POST, &format!("{prefix}/metrics"))
        .await
    {
        Ok((status, _, _)) => {
            c.check("wrong method: 405", status == 405, format!("HTTP {status}"));
        }
        Err(e) => {
            c.check("wrong method: 405", false, e);
        }
    }

    // 100 concurrent /health requests (a concurrency check).
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let http = client.http.clone();
        let url = format!("{}{prefix}/health", client.base);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = match http.get(url).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status == 200 || status == 503) && r.json::<Value>().await.is_ok()
                }
                Err(_) => false,
            };
            (ok, t.elapsed())
        }));
    }
    let mut passed = 0;
    let mut slowest = Duration::ZERO;
    for task in tasks {
        if let Ok((ok, took)) = task.await {
            passed += usize::from(ok);
            slowest = slowest.max(took);
        }
    }
    c.check(
        "100 concurrent /health requests",
        passed == 100,
        format!(
            "{passed}/100 answered in {:.0} ms (slowest {:.0} ms)",
            started.elapsed().as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3
        ),
    );
    c.0
}

/// Prints the report; returns whether everything passed.
pub fn print_report(checks: &[Check]) -> bool {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    for check in checks {
        let mark = if check.passed {
            paint("32", "PASS")
        } else {
            paint("31", "FAIL")
        };
        if check.detail.is_empty() || check.passed && check.detail.len() > 80 {
            println!("{mark} {}", check.name);
        } else {
            println!("{mark} {} ({})", check.name, check.detail);
        }
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    let summary = format!("{} passed, {} failed", checks.len() - failed, failed);
    println!(
        "{}",
        if failed == 0 {
            paint("32", &summary)
        } else {
            paint("31", &summary)
        }
    );
    failed == 0
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut base = None;
    let mut prefix = "/api/v1/monitoring".to_owned();
    let mut token = std::env::var("MONITOR_TOKEN").ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--prefix" => match args.next() {
                Some(p) if p.starts_with('/') || p.is_empty() => prefix = p,
                _ => {
                    eprintln!("--prefix takes a path such as /api/v1/monitoring");
                    std::process::exit(2);
                }
            },
            "--token" => token = args.next(),
            url if base.is_none() && url.starts_with("http") => base = Some(url.to_owned()),
            other => {
                eprintln!(
                    "unknown argument {other:?}\nusage: verify URL [--prefix /api/v1/monitoring] [--token T]"
                );
                std::process::exit(2);
            }
        }
    }
    let Some(base) = base else {
        eprintln!("usage: verify URL [--prefix /api/v1/monitoring] [--token T]");
        std::process::exit(2);
    };
    let checks = verify(&base, &prefix, token).await;
    if !print_report(&checks) {
        std::process::exit(1);
    }
}
