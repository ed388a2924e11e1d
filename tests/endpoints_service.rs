//! The monitoring endpoints as a service of their own (`monitor.endpoints()`): mounted behind
//! the app's own auth with the layer told not to serve them, and on a port of their own.

mod common;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::middleware::{Next, from_fn};
use axum::response::IntoResponse;
use axum::routing::post;
use common::{Records, client, serve};
use tower_stream_monitor::{Monitor, StreamLabels};

const PREFIX: &str = "/monitoring";

async fn ops_only(req: axum::extract::Request, next: Next) -> axum::response::Response {
    if req.headers().get("x-ops-key").is_some_and(|v| v == "ops") {
        next.run(req).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

async fn chat() -> axum::response::Response {
    (
        StreamLabels::new("openai"),
        [(header::CONTENT_TYPE, "text/event-stream")],
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
    )
        .into_response()
}

/// With `serve_endpoints(false)` the layer leaves the prefix to the app, which mounts the
/// endpoints behind its own auth: no open path remains, and scrapes are not measured.
#[tokio::test]
async fn behind_the_apps_auth_the_open_path_is_closed() {
    let records = Records::default();
    let monitor = records
        .attach(Monitor::builder().prefix(PREFIX).serve_endpoints(false))
        .build()
        .unwrap();
    let ops = Router::new()
        .nest_service(PREFIX, monitor.endpoints())
        .layer(from_fn(ops_only));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .merge(ops)
        .layer(monitor.layer());
    let addr = serve(app).await;
    client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    records.one().await;

    for path in ["/metrics", "/errors", "/health", "/metrics/prometheus"] {
        let res = client()
            .get(format!("http://{addr}{PREFIX}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path} without the app's key");
    }
    let res = client()
        .get(format!("http://{addr}{PREFIX}/metrics"))
        .header("x-ops-key", "ops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["data"]["streaming_5min"]["total_streaming_requests"],
        1
    );
    let res = client()
        .get(format!("http://{addr}{PREFIX}/nope"))
        .header("x-ops-key", "ops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // Only the chat request was measured: the scrapes pass through unmeasured.
    assert_eq!(records.snapshot().len(), 1);
}

/// On a port of their own, the endpoints answer at the root and under the prefix alike.
#[tokio::test]
async fn on_a_separate_port() {
    let monitor = Monitor::builder()
        .prefix(PREFIX)
        .serve_endpoints(false)
        .build()
        .unwrap();
    let app_addr = serve(
        Router::new()
            .route("/v1/chat/completions", post(chat))
            .layer(monitor.layer()),
    )
    .await;
    let ops_addr = serve(Router::new().fallback_service(monitor.endpoints())).await;

    // The app's port has no endpoints now: the prefix is an ordinary unknown path there.
    let res = client()
        .get(format!("http://{app_addr}{PREFIX}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().is_empty(), "the router's own 404");

    for path in ["/health", "/metrics", &format!("{PREFIX}/metrics")] {
        let res = client()
            .get(format!("http://{ops_addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/json",
            "{path}"
        );
    }
    let res = client()
        .post(format!("http://{ops_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
}

/// The README's endpoint table lists exactly the endpoints served: the 404 for an unknown path
/// names them, and each is answered (so a new endpoint fails here until the README lists it).
#[tokio::test]
async fn the_readme_lists_every_endpoint_served() {
    let readme = include_str!("../README.md");
    let listed: std::collections::BTreeSet<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## Endpoints"))
        .skip_while(|l| !l.starts_with("| path |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| {
            let path = row.split('`').nth(1)?.strip_prefix("GET ")?;
            Some(format!(
                "{PREFIX}{}",
                path.split('?').next().unwrap_or(path)
            ))
        })
        .collect();
    assert!(!listed.is_empty(), "README.md has no endpoint table");

    let monitor = Monitor::builder().prefix(PREFIX).build().unwrap();
    let addr = serve(Router::new().nest_service(PREFIX, monitor.endpoints())).await;
    let unknown_url = format!("http://{addr}{PREFIX}/no-such-endpoint");
    let unknown = client().get(&unknown_url).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = unknown.json().await.unwrap();
    // References relative to the request's URL: the nested service does not see its mount.
    let served: std::collections::BTreeSet<String> = body["error"]["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoint list in {body}"))
        .iter()
        .filter_map(|p| p.as_str())
        .map(|reference| resolved(&unknown_url, reference))
        .collect();
    assert_eq!(
        listed, served,
        "README.md's endpoint table against the endpoints served"
    );
    for path in &served {
        assert_answers(addr, path).await;
    }
}

/// `path` is an endpoint that answers: 200, or 503 for `/health` while health is unknown.
async fn assert_answers(addr: std::net::SocketAddr, path: &str) {
    let status = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .status();
    assert!(
        status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
        "{path}: {status}"
    );
}

/// Nested under a path of the app's choosing with an endpoint token: the page needs no token,
/// its data does, and every URL the page names is relative, so its requests reach the nested
/// endpoints.
#[tokio::test]
async fn nested_with_a_token_the_page_reaches_its_data_by_relative_urls() {
    const TOKEN: &str = "ops-s3cret";
    let monitor = Monitor::builder().endpoint_token(TOKEN).build().unwrap();
    let addr = serve(Router::new().nest_service("/ops", monitor.endpoints())).await;

    let page = client()
        .get(format!("http://{addr}/ops/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the page needs no token");
    assert!(
        page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    // No absolute URL but the SVG namespace name (an identifier, never fetched).
    let svg_ns = "http://www.w3.org/2000/svg";
    let absolute: Vec<&str> = html
        .match_indices("http")
        .map(|(i, _)| &html[i..html.len().min(i + 40)])
        .filter(|rest| {
            (rest.starts_with("http://") || rest.starts_with("https://"))
                && !rest.starts_with(svg_ns)
        })
        .collect();
    assert!(
        absolute.is_empty(),
        "absolute URLs in the page: {absolute:?}"
    );
    assert!(
        !html.contains("\"/metrics") && !html.contains("'/metrics"),
        "no root-relative data path"
    );

    let history = format!("http://{addr}/ops/metrics/history");
    let res = client().get(&history).send().await.unwrap();
    assert_eq!(res.status(), 401, "the data needs the token");
    let res = client()
        .get(&history)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = client()
        .get(&history)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["data"]["one_hour"]["slot_seconds"], 60);

    // Each data path the page fetches, resolved against the page's own URL as a browser does,
    // lands on the nested endpoints.
    let page_url = reqwest::Url::parse(&format!("http://{addr}/ops/dashboard")).unwrap();
    for path in [
        "metrics",
        "health",
        "metrics/history",
        "errors?limit=20",
        "errors/summary",
    ] {
        assert!(
            html.contains(&format!("\"{path}\"")),
            "the page fetches {path}"
        );
        let url = page_url.join(path).unwrap();
        assert!(url.path().starts_with("/ops/"), "{url}");
        let res = client()
            .get(url.clone())
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{url}");
    }
}

/// `reference` resolved against `base` (RFC 3986), as a client follows it: its path.
fn resolved(base: &str, reference: &str) -> String {
    reqwest::Url::parse(base)
        .and_then(|base| base.join(reference))
        .map(|url| url.path().to_owned())
        .unwrap_or_else(|e| panic!("{reference} against {base}: {e}"))
}

/// A path that names no endpoint is answered 404 with the endpoints listed where a client
/// reaches them: nested under a path of the app's choosing, as references relative to the
/// request's URL, which resolve below the mount at any depth; under the stream layer's prefix,
/// under it. Each one listed answers.
#[tokio::test]
async fn not_found_lists_the_endpoints_where_they_are_served() {
    let nested = Monitor::builder().serve_endpoints(false).build().unwrap();
    let layered = Monitor::builder().prefix(PREFIX).build().unwrap();
    let addr = serve(
        Router::new()
            .nest_service("/ops", nested.endpoints())
            .layer(layered.layer()),
    )
    .await;
    for (path, mount) in [
        ("/ops", "/ops"),
        ("/ops/", "/ops"),
        ("/ops/nope", "/ops"),
        ("/ops/monitoring/nope", "/ops/monitoring"),
        ("/ops/metrics/nope/deeper", "/ops"),
        ("/monitoring/nope", PREFIX),
        ("/monitoring/metrics/nope", PREFIX),
    ] {
        let url = format!("http://{addr}{path}");
        let res = client().get(&url).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body: serde_json::Value = res.json().await.unwrap();
        let endpoints: Vec<String> = body["error"]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .map(|reference| resolved(&url, reference))
            .collect();
        assert_eq!(endpoints.len(), 7, "{path}: {endpoints:?}");
        assert!(
            endpoints.contains(&format!("{mount}/metrics")),
            "{path}: {endpoints:?}"
        );
        for endpoint in &endpoints {
            assert!(endpoint.starts_with(mount), "{path}: {endpoint}");
            assert_answers(addr, endpoint).await;
        }
    }
}
