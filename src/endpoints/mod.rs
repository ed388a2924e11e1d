//! The monitoring endpoints layer 1 serves under its prefix (SPEC section 5). Endpoints only read
//! the monitor; they are not measured themselves.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use serde_json::json;

use crate::Monitor;

/// The endpoints, by path under the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Prometheus,
    Health,
}

const ENDPOINTS: [(&str, Endpoint); 3] = [
    ("/metrics", Endpoint::Metrics),
    ("/metrics/prometheus", Endpoint::Prometheus),
    ("/health", Endpoint::Health),
];

/// The path below `prefix`, when `path` is the prefix itself or under it.
fn under_prefix<'a>(prefix: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Whether the monitor answers this request itself (and does not measure it).
pub(crate) fn handles(monitor: &Monitor, parts: &Parts) -> bool {
    under_prefix(monitor.prefix(), parts.uri.path()).is_some()
}

/// Answers a request under the prefix.
pub(crate) fn respond(monitor: &Monitor, parts: &Parts) -> Response<Bytes> {
    let rest = under_prefix(monitor.prefix(), parts.uri.path()).unwrap_or("");
    let Some(endpoint) = ENDPOINTS.iter().find(|(p, _)| *p == rest).map(|(_, e)| *e) else {
        let known: Vec<String> = ENDPOINTS
            .iter()
            .map(|(p, _)| format!("{}{p}", monitor.prefix()))
            .collect();
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no monitoring endpoint at {}", parts.uri.path()),
            json!({"endpoints": known}),
        );
    };
    if parts.method != Method::GET && parts.method != Method::HEAD {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{} is not allowed here; use GET", parts.method),
            json!({}),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if endpoint != Endpoint::Health {
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
    if let Some(name) = query_names(parts).next() {
        return bad_parameter(&name, "this endpoint takes no query parameters");
    }
    match endpoint {
        Endpoint::Metrics => json_response(
            StatusCode::OK,
            &Success {
                status: "success",
                data: monitor.snapshot(),
            },
        ),
        Endpoint::Prometheus => {
            let mut response = Response::new(Bytes::from(monitor.render_prometheus()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            no_store(response)
        }
        Endpoint::Health => {
            let report = monitor.health();
            let status = if report.status == crate::health::HealthStatus::Critical {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            json_response(status, &report)
        }
    }
}

/// `{"status":"success","data":...}`, serialised in field order.
#[derive(serde::Serialize)]
struct Success<T> {
    status: &'static str,
    data: T,
}

/// The names of the query parameters (percent-decoding is not needed: names we accept are plain).
fn query_names(parts: &Parts) -> impl Iterator<Item = String> + '_ {
    parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map_or(p, |(k, _)| k)
                .chars()
                .take(64)
                .collect()
        })
}

/// Compares the bearer token in constant time, so response timing does not reveal how much of a
/// guess was right. The length is not secret.
fn bearer_matches(parts: &Parts, token: &str) -> bool {
    let Some(given) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
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
