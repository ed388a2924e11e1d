//! The monitoring endpoints (README, Endpoints): `/metrics`, `/metrics/history`,
//! `/metrics/prometheus`, `/health`, `/errors`, `/errors/summary`, `/dashboard`. They only read
//! the monitor and are never measured.
//!
//! The stream layer serves them under its prefix (unless told not to, with
//! `MonitorBuilder::serve_endpoints(false)`); [`MonitoringEndpoints`], from
//! `Monitor::endpoints`, is the same answers as a [`Service`](tower_service::Service) of their
//! own, to mount with axum's `nest_service` behind the app's own auth, or on a port of their own.

mod service;

pub use service::{EndpointBody, MonitoringEndpoints};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::json;

use crate::Monitor;
use crate::errors::{ErrorLevel, ErrorQuery};

/// The endpoints, by path under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    History,
    Prometheus,
    Health,
    Errors,
    ErrorSummary,
    Dashboard,
}

const ENDPOINTS: [(&str, Endpoint); 7] = [
    ("/metrics", Endpoint::Metrics),
    ("/metrics/history", Endpoint::History),
    ("/metrics/prometheus", Endpoint::Prometheus),
    ("/health", Endpoint::Health),
    ("/errors", Endpoint::Errors),
    ("/errors/summary", Endpoint::ErrorSummary),
    ("/dashboard", Endpoint::Dashboard),
];

/// The live dashboard: one self-contained page (HTML, CSS and JS; no network but its own
/// relative requests to the endpoints above). It holds no data, so it needs no token; it asks
/// for one when the data requests need it and sends it as a bearer header (README, Dashboard).
const DASHBOARD: &str = include_str!("dashboard.html");

/// The path below `prefix`, when `path` is the prefix itself or under it.
fn under_prefix<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// What the stream layer does with a request, as far as the endpoints go.
pub(crate) enum UnderPrefix {
    /// Not under the monitor's prefix: measure it.
    No,
    /// Under the prefix, but the app mounts the endpoints itself (behind its own auth, say):
    /// pass it through, unmeasured.
    PassThrough,
    /// Under the prefix, answered by the layer.
    Answer(Response<Bytes>),
}

impl MonitoringEndpoints {
    /// Whether `path` is the monitor's prefix or under it (see [`under_prefix`](Self::under_prefix)).
    pub(crate) fn claims(&self, path: &str) -> bool {
        under_prefix(self.monitor().prefix(), path).is_some()
    }

    /// Whether the request is under the monitor's prefix: the stream layer never measures it,
    /// and answers it itself unless told not to (`serve_endpoints(false)`).
    pub(crate) fn under_prefix(&self, parts: &Parts) -> UnderPrefix {
        let monitor = self.monitor();
        let Some(rest) = under_prefix(monitor.prefix(), parts.uri.path()) else {
            return UnderPrefix::No;
        };
        if !monitor.config().serve_endpoints {
            return UnderPrefix::PassThrough;
        }
        UnderPrefix::Answer(answer(monitor, parts, rest))
    }
}

/// Answers the endpoint at `rest`, the path below wherever the endpoints are mounted.
const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the scraper prefers OpenMetrics (Prometheus asks for it first, then for text
/// 0.0.4): the highest weight (`q`, 1 when absent) an `Accept` range
/// `application/openmetrics-text` gives is above 0 and at least text's. Text's weight is the
/// most specific range's that matches it (RFC 9110, 12.5.1): `text/plain`, else `text/*`, else
/// `*/*`, else 0. Parameter names are case-insensitive; OpenMetrics is never chosen by a
/// wildcard.
fn wants_openmetrics(parts: &Parts) -> bool {
    // The highest weight given to OpenMetrics, and to text by each range that matches it,
    // most specific first.
    let mut openmetrics = 0.0f32;
    let mut text: [Option<f32>; 3] = [None; 3];
    let ranges = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for range in ranges {
        let mut params = range.split(';').map(str::trim);
        let essence = params.next().unwrap_or("");
        let weight = params
            .filter_map(|p| p.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, q)| q.trim().parse::<f32>().unwrap_or(0.0));
        let weight = if weight.is_finite() {
            weight.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let is = |media: &str| essence.eq_ignore_ascii_case(media);
        let slot = if is("application/openmetrics-text") {
            openmetrics = openmetrics.max(weight);
            continue;
        } else if is("text/plain") {
            &mut text[0]
        } else if is("text/*") {
            &mut text[1]
        } else if is("*/*") {
            &mut text[2]
        } else {
            continue;
        };
        *slot = Some(slot.map_or(weight, |w| w.max(weight)));
    }
    let text = text.into_iter().flatten().next().unwrap_or(0.0);
    openmetrics > 0.0 && openmetrics >= text
}

/// Where a nested service is mounted, from the path the app's router was asked for (axum's
/// `OriginalUri`) and the path below the mount that the service sees: `/ops` for `/ops/nope`,
/// and for `/ops` and `/ops/`, both of which it sees as `/` (a relative reference cannot reach
/// the endpoints from both). `None` without axum, or when the two paths do not fit.
fn nested_mount(parts: &Parts) -> Option<&str> {
    #[cfg(feature = "axum")]
    {
        let original = parts.extensions.get::<axum::extract::OriginalUri>()?.path();
        let asked = parts.uri.path();
        if original == asked {
            return None;
        }
        let mount = match original.strip_suffix(asked) {
            Some(mount) => mount,
            None if asked == "/" => original,
            None => return None,
        };
        (!mount.is_empty()).then_some(mount)
    }
    #[cfg(not(feature = "axum"))]
    {
        let _ = parts;
        None
    }
}

fn answer(monitor: &Monitor, parts: &Parts, rest: &str) -> Response<Bytes> {
    let Some(endpoint) = ENDPOINTS.iter().find(|(p, _)| *p == rest).map(|(_, e)| *e) else {
        // Where the endpoints are: under the stream layer's prefix when the path was; else
        // under the mount of a nested `MonitoringEndpoints` when axum says where that is;
        // else as references relative to the request's URL (`metrics`, `../metrics`), which
        // reach them wherever the app mounted it, a place a nested service does not see.
        let asked = parts.uri.path();
        // The prefix below a nested service's mount (`/ops/monitoring/nope` seen as
        // `/monitoring/nope`) is under the mount too.
        let local = asked.strip_suffix(rest).filter(|mount| !mount.is_empty());
        let mount = match (nested_mount(parts), local) {
            (Some(outer), local) => Some(format!("{outer}{}", local.unwrap_or(""))),
            (None, local) => local.map(str::to_owned),
        };
        let known: Vec<String> = match mount {
            Some(mount) => ENDPOINTS
                .iter()
                .map(|(p, _)| format!("{mount}{p}"))
                .collect(),
            None => {
                let up = "../".repeat(rest.matches('/').count().saturating_sub(1));
                ENDPOINTS
                    .iter()
                    .map(|(p, _)| format!("{up}{}", p.trim_start_matches('/')))
                    .collect()
            }
        };
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no monitoring endpoint at {asked}"),
            json!({"endpoints": known}),
        );
    };
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed here; use GET or HEAD", parts.method),
            json!({}),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // Health answers load balancers; the dashboard's page carries no data (a browser cannot send
    // a header when it navigates: the page asks for the token and sends it itself).
    if endpoint != Endpoint::Health && endpoint != Endpoint::Dashboard {
        if let Some(token) = &monitor.config().endpoint_token {
            if !bearer_matches(parts, token) {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this endpoint needs Authorization: Bearer <token>",
                    json!({}),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
        }
    }
    let params: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.chars().take(64).collect(), v.chars().take(256).collect()))
            .collect();
    if endpoint != Endpoint::Errors {
        if let Some((name, _)) = params.first() {
            return bad_parameter(name, "this endpoint takes no query parameters");
        }
    }
    match endpoint {
        Endpoint::Errors => match error_query(&params) {
            Ok(query) => {
                let page = monitor.errors(&query);
                json_response(
                    StatusCode::OK,
                    &Success {
                        status: "success",
                        data: page,
                    },
                )
            }
            Err(BadParameter(name, message)) => bad_parameter(&name, message),
        },
        Endpoint::ErrorSummary => json_response(
            StatusCode::OK,
            &Success {
                status: "success",
                data: monitor.error_summary(),
            },
        ),
        Endpoint::History => json_response(
            StatusCode::OK,
            &Success {
                status: "success",
                data: monitor.history(),
            },
        ),
        Endpoint::Dashboard => {
            let mut response = Response::new(Bytes::from_static(DASHBOARD.as_bytes()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // The page runs its own inline script and talks to this origin only.
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            no_store(response)
        }
        Endpoint::Metrics => json_response(
            StatusCode::OK,
            &Success {
                status: "success",
                data: monitor.snapshot(),
            },
        ),
        Endpoint::Prometheus => {
            let (text, content_type) = if wants_openmetrics(parts) {
                (monitor.render_openmetrics(), OPENMETRICS_CONTENT_TYPE)
            } else {
                (monitor.render_prometheus(), TEXT_CONTENT_TYPE)
            };
            let mut response = Response::new(Bytes::from(text));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            no_store(response)
        }
        Endpoint::Health => {
            let report = monitor.health();
            let status = if report.status == crate::health::HealthStatus::Critical {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            match &monitor.config().endpoint_token {
                Some(token) if !bearer_matches(parts, token) => {
                    json_response(status, &OpenHealth::of(&report))
                }
                _ => json_response(status, &report),
            }
        }
    }
}

/// What `/health` shows without the token when `endpoint_token` is set: statuses and rates
/// only (README, Security). Budgets (their users, providers and spend) and anomalies (their
/// providers and models) are left out, and so are the triggers' route and provider filters.
#[derive(serde::Serialize)]
struct OpenHealth<'a> {
    status: crate::health::HealthStatus,
    checks: &'a [crate::health::Check],
    triggers: Vec<OpenTrigger<'a>>,
    rollback: bool,
}

/// A trigger's state without its filters.
#[derive(serde::Serialize)]
struct OpenTrigger<'a> {
    name: &'a str,
    window: &'static str,
    value: f64,
    threshold: f64,
    samples: u64,
    fired: bool,
}

impl<'a> OpenHealth<'a> {
    fn of(report: &'a crate::health::HealthReport) -> Self {
        let triggers = report.triggers.iter().map(|t| OpenTrigger {
            name: &t.name,
            window: t.window,
            value: t.value,
            threshold: t.threshold,
            samples: t.samples,
            fired: t.fired,
        });
        Self {
            status: report.status,
            checks: &report.checks,
            triggers: triggers.collect(),
            rollback: report.rollback,
        }
    }
}

/// `{"status":"success","data":...}`, serialised in field order.
#[derive(serde::Serialize)]
struct Success<T> {
    status: &'static str,
    data: T,
}

/// A query parameter that cannot be used, and why.
struct BadParameter(String, &'static str);

/// `limit` (1-1000, default 50), `level` (`warn` or `warning`: warnings and errors, `error`:
/// errors only; in any letter case),
/// `since` (RFC 3339), `target` (prefix). Anything else, or a repeated parameter, is a 400.
fn error_query(params: &[(String, String)]) -> Result<ErrorQuery, BadParameter> {
    let mut query = ErrorQuery::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in params {
        if seen.contains(&name.as_str()) {
            return Err(BadParameter(name.clone(), "given more than once"));
        }
        seen.push(name);
        match name.as_str() {
            "limit" => {
                query.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        BadParameter(name.clone(), "must be a whole number from 1 to 1000")
                    })?;
            }
            "level" => {
                query.level = Some(match value.to_ascii_lowercase().as_str() {
                    "warn" | "warning" => ErrorLevel::Warn,
                    "error" => ErrorLevel::Error,
                    _ => return Err(BadParameter(name.clone(), "must be warn or error")),
                });
            }
            "since" => {
                query.since = Some(parse_rfc3339(value).ok_or_else(|| {
                    BadParameter(
                        name.clone(),
                        "must be an RFC 3339 time such as 2025-11-13T14:56:38Z or \
                         2025-11-13T15:56:38+01:00",
                    )
                })?);
            }
            "target" => {
                if value.is_empty() {
                    return Err(BadParameter(name.clone(), "must not be empty"));
                }
                query.target = Some(value.clone());
            }
            _ => {
                return Err(BadParameter(
                    name.clone(),
                    "unknown; expected limit, level, since or target",
                ));
            }
        }
    }
    Ok(query)
}

/// An RFC 3339 time: `Z` or a `±hh:mm` offset (`-00:00` too), `T`/`Z` in either case, fractions
/// of a second; with no offset at all it is taken as UTC. `humantime` reads the time written
/// in UTC and the offset is taken off here: it reads `Z` alone.
fn parse_rfc3339(value: &str) -> Option<std::time::SystemTime> {
    let value = value.to_ascii_uppercase();
    // `get`, not `split_at`: the value is the client's, and may split a character there.
    let split = value
        .len()
        .checked_sub(6)
        .and_then(|at| Some((value.get(..at)?, value.get(at..)?)));
    let (local, offset) = match split {
        Some((local, offset)) if matches!(offset.as_bytes(), [b'+' | b'-', _, _, b':', _, _]) => {
            let (hours, minutes) = (offset.get(1..3)?, offset.get(4..6)?);
            let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            if !digits(hours) || !digits(minutes) {
                return None;
            }
            let (hours, minutes): (u64, u64) = (hours.parse().ok()?, minutes.parse().ok()?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let east = offset.starts_with('+');
            let by = std::time::Duration::from_secs(hours * 3600 + minutes * 60);
            (local, Some((east, by)))
        }
        _ => (value.as_str(), None),
    };
    let Some((east, by)) = offset else {
        return humantime::parse_rfc3339_weak(local).ok();
    };
    // `Z` and an offset at once is no time (`humantime` would read the `Z` and stop there).
    if local.ends_with('Z') {
        return None;
    }
    let written = humantime::parse_rfc3339_weak(&format!("{local}Z")).ok()?;
    // 15:56 at +01:00 is 14:56 UTC.
    if east {
        written.checked_sub(by)
    } else {
        written.checked_add(by)
    }
}

/// Compares the bearer token in constant time, so response timing does not reveal how much of a
/// guess was right. The length is not secret.
/// The scheme is matched in any case, and may be followed by more than one space (RFC 9110,
/// section 11).
fn bearer_matches(parts: &Parts, token: &str) -> bool {
    let Some(given) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials.trim_start_matches(' '))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn no_store(mut response: Response<Bytes>) -> Response<Bytes> {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<Bytes> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|e| {
        format!("{{\"status\":\"error\",\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}")
            .into_bytes()
    });
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(response)
}

fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    extra: serde_json::Value,
) -> Response<Bytes> {
    let mut error = json!({"code": code, "message": message});
    if let (Some(e), serde_json::Value::Object(more)) = (error.as_object_mut(), extra) {
        e.extend(more);
    }
    json_response(status, &json!({"status": "error", "error": error}))
}

/// 400 naming the offending query parameter.
pub(crate) fn bad_parameter(name: &str, message: &str) -> Response<Bytes> {
    error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        &format!("query parameter {name:?}: {message}"),
        json!({"parameter": name}),
    )
}

#[cfg(test)]
mod tests {
    /// OpenMetrics when the scraper rates it at least as high as text: Prometheus' own
    /// `Accept`, or OpenMetrics alone; text when OpenMetrics is refused (`q=0`, `Q=0`) or rated
    /// below text, and when nothing is asked.
    #[test]
    fn openmetrics_only_when_preferred() {
        let wants = |accept: Option<&str>| {
            let mut request = http::Request::builder();
            if let Some(accept) = accept {
                request = request.header(http::header::ACCEPT, accept);
            }
            let (parts, ()) = request.body(()).expect("a request").into_parts();
            super::wants_openmetrics(&parts)
        };
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
            application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants(Some(prometheus)));
        assert!(wants(Some("application/openmetrics-text")));
        assert!(wants(Some(
            "application/openmetrics-text; Q=0.9, */*;q=0.1"
        )));
        assert!(!wants(None));
        assert!(!wants(Some("text/plain")));
        assert!(!wants(Some(
            "application/openmetrics-text; Q=0, text/plain;version=0.0.4"
        )));
        assert!(!wants(Some("application/openmetrics-text;q=0")));
        assert!(!wants(Some(
            "text/plain;version=0.0.4;q=1, application/openmetrics-text;q=0.1"
        )));
        // The most specific range sets text's weight: a wildcard does not undo a refusal.
        assert!(wants(Some(
            "application/openmetrics-text;q=0.5, text/plain;q=0, */*;q=0.8"
        )));
        assert!(wants(Some(
            "application/openmetrics-text;q=0.5, text/plain;q=0.1, text/*;q=0.9"
        )));
        assert!(!wants(Some(
            "application/openmetrics-text;q=0.5, text/*;q=0.9"
        )));
        assert!(!wants(Some("*/*")));
        assert!(!wants(Some("application/openmetrics-text;q=x")));
        assert!(!wants(Some("application/openmetrics-text;q=NaN")));
    }

    use std::time::{Duration, UNIX_EPOCH};

    use super::parse_rfc3339;

    #[test]
    fn rfc3339_times_with_offsets_and_any_case() {
        let at = |secs: u64, nanos: u32| Some(UNIX_EPOCH + Duration::new(secs, nanos));
        // 2025-11-13T14:56:38Z
        let utc = 1_763_045_798;
        for (text, want) in [
            ("2025-11-13T14:56:38Z", at(utc, 0)),
            ("2025-11-13t14:56:38z", at(utc, 0)),
            ("2025-11-13T14:56:38", at(utc, 0)),
            ("2025-11-13T15:56:38+01:00", at(utc, 0)),
            ("2025-11-13T09:26:38-05:30", at(utc, 0)),
            ("2025-11-13T14:56:38-00:00", at(utc, 0)),
            ("2025-11-13T15:56:38.250+01:00", at(utc, 250_000_000)),
            ("2025-11-13T14:56:38+24:00", None),
            ("2025-11-13T14:56:38+01:60", None),
            ("2025-11-13T14:56:38+1:000", None),
            ("2025-11-13T14:56:38Z+01:00", None),
            ("+01:00", None),
            ("", None),
        ] {
            assert_eq!(parse_rfc3339(text), want, "{text:?}");
        }
    }

    /// The value is the client's: a character of several bytes anywhere is a bad time, never a
    /// panic.
    #[test]
    fn any_text_is_a_time_or_none() {
        for text in [
            "€€x",
            "xxxxxé12345",
            "é+01:00",
            "2025-11-13T14:56:3é+01:00",
            "ééééééé",
            "+0é:00",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text:?}");
        }
    }
}
