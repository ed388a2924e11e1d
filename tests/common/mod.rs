//! Shared helpers: a real server on 127.0.0.1, a record collector, fixture streaming.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use tokio::sync::Notify;
use tower_stream_monitor::{MonitorBuilder, StreamRecord};

/// Serves `app` on an ephemeral loopback port.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("server runs");
    });
    addr
}

/// Builds the monitor (reporting into a new collector), puts its layer on `app`, and serves it.
pub async fn monitored(
    builder: MonitorBuilder,
    app: Router,
) -> (Records, tower_stream_monitor::Monitor, SocketAddr) {
    let records = Records::default();
    let monitor = records.attach(builder).build().expect("valid settings");
    let addr = serve(app.layer(monitor.layer())).await;
    (records, monitor, addr)
}

/// A monitor built from `builder` that reports into a new collector, for tests that call its
/// layer in process.
pub fn recorded(builder: MonitorBuilder) -> (Records, tower_stream_monitor::Monitor) {
    let records = Records::default();
    let monitor = records.attach(builder).build().expect("valid settings");
    (records, monitor)
}

/// Collects the records a monitor hands over.
#[derive(Clone, Default)]
pub struct Records {
    inner: Arc<(Mutex<Vec<StreamRecord>>, Notify)>,
}

impl Records {
    /// A builder whose monitor reports into this collector.
    pub fn attach(&self, builder: MonitorBuilder) -> MonitorBuilder {
        builder.on_record(self.callback())
    }

    /// An `on_record` callback that collects here.
    pub fn callback(&self) -> impl Fn(&StreamRecord) + Send + Sync + 'static {
        let me = self.clone();
        move |r: &StreamRecord| {
            me.inner.0.lock().unwrap().push(r.clone());
            me.inner.1.notify_waiters();
        }
    }

    pub fn snapshot(&self) -> Vec<StreamRecord> {
        self.inner.0.lock().unwrap().clone()
    }

    /// Waits (up to 10 s) until `n` records arrived, then returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<StreamRecord> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.inner.1.notified();
            let got = self.snapshot();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {n} records, got {}: {:#?}", got.len(), got);
            }
        }
    }

    /// Waits for exactly one record, then checks no second one follows.
    pub async fn one(&self) -> StreamRecord {
        let got = self.wait_for(1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let after = self.snapshot();
        assert_eq!(after.len(), 1, "recorded exactly once: {after:#?}");
        got.into_iter().next().unwrap()
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn expected(name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(&format!("{name}.expected.json"))).unwrap()
}

/// Cuts an SSE body after each blank line, as a provider flushes one event per write.
pub fn split_events(body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < body.len() {
        let rest = &body[i..];
        let sep = if rest.starts_with(b"\r\n\r\n") {
            4
        } else if rest.starts_with(b"\n\n") {
            2
        } else {
            0
        };
        if sep > 0 {
            out.push(Bytes::copy_from_slice(&body[start..i + sep]));
            i += sep;
            start = i;
        } else {
            i += 1;
        }
    }
    if start < body.len() {
        out.push(Bytes::copy_from_slice(&body[start..]));
    }
    out
}

/// A body that sends `frames` after `first_delay`, then one every `interval`.
pub fn paced_body(frames: Vec<Bytes>, first_delay: Duration, interval: Duration) -> Body {
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), true),
        move |(mut it, first)| async move {
            let frame = it.next()?;
            tokio::time::sleep(if first { first_delay } else { interval }).await;
            Some((Ok::<_, Infallible>(frame), (it, false)))
        },
    );
    Body::from_stream(stream)
}

/// A body that never ends: one SSE event every `interval`.
pub fn endless_sse(interval: Duration) -> Body {
    let stream = futures_util::stream::unfold(0u64, move |n| async move {
        tokio::time::sleep(interval).await;
        let event = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{n}\"}}}}]}}\n\n");
        Some((Ok::<_, Infallible>(Bytes::from(event)), n + 1))
    });
    Body::from_stream(stream)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

/// GETs `url` and reads its body as text.
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not text: {e}"))
}

/// GETs `url` and reads its body as JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A simulated provider for window and health tests. Request headers choose the answer:
/// `x-provider` (label), `x-status` (an error status instead of a stream), `x-ttft-ms`,
/// `x-tokens` (content events; usage is reported as the same number). `GET /plain` is a
/// non-streaming route.
pub fn provider_app(monitor: &tower_stream_monitor::Monitor) -> Router {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use tower_stream_monitor::StreamLabels;

    async fn chat(headers: HeaderMap) -> axum::response::Response {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let provider = get("x-provider").unwrap_or_else(|| "openai".into());
        let labels = StreamLabels::new(provider).with_model("sim-1");
        if let Some(status) = get("x-status").and_then(|s| s.parse::<u16>().ok()) {
            let status = StatusCode::from_u16(status).unwrap();
            return (
                status,
                labels,
                [(header::CONTENT_TYPE, "text/event-stream")],
                "",
            )
                .into_response();
        }
        let ttft =
            Duration::from_millis(get("x-ttft-ms").and_then(|s| s.parse().ok()).unwrap_or(0));
        let tokens: u64 = get("x-tokens").and_then(|s| s.parse().ok()).unwrap_or(3);
        let mut frames: Vec<Bytes> = (0..tokens)
            .map(|i| {
                Bytes::from(format!(
                    "data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n"
                ))
            })
            .collect();
        frames.push(Bytes::from(format!(
            "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":2,\"completion_tokens\":{tokens}}}}}\n\n"
        )));
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        (
            labels,
            [(header::CONTENT_TYPE, "text/event-stream")],
            paced_body(frames, ttft, Duration::from_millis(1)),
        )
            .into_response()
    }
    Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .route("/plain", axum::routing::get(|| async { "plain" }))
        .layer(monitor.layer())
}

/// A `MakeWriter` that keeps what a fmt layer writes, for assertions on log lines.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// An SSE body that sends `content_events` chat chunks at once, then nothing for 30 s.
pub fn stalling_sse(content_events: usize) -> Body {
    use futures_util::StreamExt;
    let head = futures_util::stream::iter((0..content_events).map(|i| {
        Ok::<_, Infallible>(Bytes::from(format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"c{i}\"}}}}]}}\n\n"
        )))
    }));
    let stall = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Ok(Bytes::from("data: late\n\n"))
    });
    Body::from_stream(head.chain(stall))
}

/// The two-layer set-up of the README: `fmt` at INFO (written into `fmt_out`) beside the
/// monitor's error layer.
pub fn subscriber(
    monitor: &tower_stream_monitor::Monitor,
    fmt_out: &Captured,
) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(fmt_out.clone())
                .with_ansi(false)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .with(monitor.error_layer())
}

/// A body of one OpenAI chat event, then nothing ever: an upstream that stalled after it.
pub fn one_event_then_silence() -> axum::body::Body {
    use futures_util::StreamExt;
    let head = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        bytes::Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"),
    )]);
    axum::body::Body::from_stream(head.chain(futures_util::stream::pending()))
}

/// An upstream that answers `/up` (any method) with one SSE event, then stalls: its address.
pub async fn stalled_upstream() -> SocketAddr {
    serve(Router::new().route(
        "/up",
        axum::routing::any(|| async {
            (
                [(http::header::CONTENT_TYPE, "text/event-stream")],
                one_event_then_silence(),
            )
        }),
    ))
    .await
}
