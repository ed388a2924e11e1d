//! Response shapes a real hyper server produces (a length announced by a header, bodiless
//! answers, 1xx, resets, relayed timeouts, panics), and the one record each gets: what the
//! client saw, over a real socket.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::Bytes;
use common::{client, monitored};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_stream_monitor::parse::FinishReason;
use tower_stream_monitor::{Monitor, Outcome, StreamLabels};

fn chunks(parts: &[&'static str]) -> Body {
    let parts: Vec<Bytes> = parts
        .iter()
        .map(|p| Bytes::from_static(p.as_bytes()))
        .collect();
    let stream = futures_util::stream::unfold(parts.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((Ok::<_, Infallible>(next), it))
    });
    Body::from_stream(stream)
}

/// An app that answers `/file.txt` with `hello world` in two frames and a `Content-Length`
/// header of `length` set by hand (a served file's shape, or a wrong length).
async fn file_with_length(
    length: &'static str,
) -> (common::Records, Monitor, std::net::SocketAddr) {
    monitored(
        Monitor::builder(),
        Router::new().route(
            "/file.txt",
            get(move || async move {
                let mut res = Response::new(chunks(&["hello ", "world"]));
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static(length));
                res
            }),
        ),
    )
    .await
}

/// `GET path` over a new HTTP/2 connection: the response's body, and the request's send half
/// (held, so that the stream stays open until it is dropped).
async fn h2_get(addr: std::net::SocketAddr, path: &str) -> (h2::RecvStream, h2::SendStream<Bytes>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = http::Request::get(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    let (response, send) = client
        .ready()
        .await
        .unwrap()
        .send_request(request, true)
        .unwrap();
    (response.await.unwrap().into_body(), send)
}

/// An app that relays `parts` on `/v1/chat/completions` as `content_type`, a frame each, with
/// their whole length in a `Content-Length` header (a relayed or replayed answer).
async fn relayed_with_length(
    content_type: &'static str,
    parts: &'static [&'static str],
) -> (common::Records, Monitor, std::net::SocketAddr) {
    let len = parts.iter().map(|s| s.len()).sum::<usize>();
    monitored(
        Monitor::builder(),
        Router::new().route(
            "/v1/chat/completions",
            get(move || async move {
                (
                    StreamLabels::new("openai"),
                    [
                        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                        (header::CONTENT_LENGTH, HeaderValue::from(len)),
                    ],
                    chunks(parts),
                )
            }),
        ),
    )
    .await
}

/// A proxy that copies the upstream's `Content-Length` and streams the upstream body on (a
/// non-streaming JSON answer relayed, a file served): the client gets every byte, hyper ends the
/// response at the announced length and drops the body without polling it to its end.
#[tokio::test]
async fn streamed_body_with_content_length_is_ok_not_cancelled() {
    const JSON: [&str; 2] = [
        r#"{"id":"x","choices":"#,
        r#"[{"message":{"content":"hi"}}]}"#,
    ];
    let len = JSON.iter().map(|s| s.len()).sum::<usize>();
    let (records, monitor, addr) = relayed_with_length("application/json", &JSON).await;
    let res = client()
        .get(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    assert_eq!(body.len(), len, "the client got the whole answer");
    let r = records.one().await;
    assert_eq!(monitor.in_flight(), 0);
    assert_eq!(r.outcome, Outcome::Ok, "client saw a complete 200: {r:#?}");
}

/// The same for an SSE stream relayed with its length (a cached/replayed stream): complete
/// to the client, with its finish reason and `[DONE]`.
#[tokio::test]
async fn sse_with_content_length_is_ok_with_its_finish_reason() {
    const SSE: [&str; 3] = [
        "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: {\"model\":\"gpt-4o-mini\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    ];
    let (records, _monitor, addr) = relayed_with_length("text/event-stream", &SSE).await;
    let res = client()
        .get(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    assert!(body.ends_with("data: [DONE]\n\n"));
    let r = records.one().await;
    assert_eq!(
        (r.outcome, r.finish_reason),
        (Outcome::Ok, Some(FinishReason::Stop)),
        "{r:#?}"
    );
}

/// What the server sends for `request`: its head, waited for (up to 10 s, however busy the
/// machine), then what else comes within 200 ms: a CONNECT tunnel, or a kept-alive
/// connection, stays open, and a body that should not be there would come with the head.
async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A 2xx answer to CONNECT has no body (hyper sends none, RFC 9110 9.3.6), as a HEAD answer
/// has none: the tunnel was established, the client saw a 200.
#[tokio::test]
async fn connect_2xx_is_ok_not_cancelled() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().fallback(any(|method: Method| async move {
            if method == Method::CONNECT {
                (StatusCode::OK, "tunnel established").into_response()
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        })),
    )
    .await;
    let seen = raw_exchange(
        addr,
        "CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(seen.starts_with("HTTP/1.1 200"), "client saw: {seen:?}");
    assert!(!seen.contains("tunnel established"), "hyper sends no body");
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
}

/// A handler answering with a 1xx other than 101 (103 Early Hints): hyper cannot send it as a
/// final answer and sends a 500 instead, which is what is recorded.
#[tokio::test]
async fn informational_status_is_not_ok() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/hints",
            get(|| async { StatusCode::from_u16(103).unwrap().into_response() }),
        ),
    )
    .await;
    let seen = raw_exchange(addr, "GET /hints HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let r = records.one().await;
    assert!(!seen.starts_with("HTTP/1.1 103"), "client saw: {seen:?}");
    assert!(seen.starts_with("HTTP/1.1 500"), "client saw: {seen:?}");
    assert_eq!(
        r.outcome,
        Outcome::ServerError,
        "client saw {seen:?}; record {r:#?}"
    );
}

/// Controls: HEAD, 204 and 304 with a handler body are `ok` once.
#[tokio::test]
async fn bodiless_answers_are_ok_once() {
    let app = Router::new()
        .route(
            "/sse",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    chunks(&["data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"]),
                )
            }),
        )
        .route(
            "/204",
            get(|| async { (StatusCode::NO_CONTENT, "ignored body") }),
        )
        .route(
            "/304",
            get(|| async { (StatusCode::NOT_MODIFIED, chunks(&["ignored", "body"])) }),
        );
    let (records, monitor, addr) = monitored(Monitor::builder(), app).await;
    let c = client();
    let r = c.head(format!("http://{addr}/sse")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    for p in ["204", "304"] {
        let r = c.get(format!("http://{addr}/{p}")).send().await.unwrap();
        let _ = r.bytes().await;
    }
    let got = records.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got2 = records.snapshot();
    assert_eq!(got2.len(), 3, "{got2:#?}");
    for r in got {
        assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    }
    assert_eq!(monitor.in_flight(), 0);
}

/// A static file served with `Content-Length` by a body of unknown size (tower-http's
/// `ServeFile` shape): complete to the client.
#[tokio::test]
async fn served_file_with_length_is_ok() {
    let (records, _monitor, addr) = file_with_length("11").await;
    let body = client()
        .get(format!("http://{addr}/file.txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello world");
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
}

/// A body that ends short of the length its `Content-Length` header announced: the server
/// cannot finish the response (hyper closes the connection), so the client's read fails, and
/// the record is a `stream_error`, not `ok`.
#[tokio::test]
async fn body_short_of_its_content_length_is_a_stream_error() {
    let (records, _monitor, addr) = file_with_length("100").await;
    let res = client()
        .get(format!("http://{addr}/file.txt"))
        .send()
        .await
        .unwrap();
    assert!(res.bytes().await.is_err(), "the client's read fails");
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::StreamError, "{r:#?}");
    assert_eq!(r.bytes, 11);
}

/// HTTP/2: the client resets the stream mid-body (RST_STREAM CANCEL): `cancelled` once.
#[tokio::test]
async fn h2_reset_mid_stream_is_cancelled_once() {
    let (records, monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/stream",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    common::endless_sse(Duration::from_millis(10)),
                )
            }),
        ),
    )
    .await;
    let (mut body, _send) = h2_get(addr, "/stream").await;
    let first = body.data().await.unwrap().unwrap();
    assert!(first.starts_with(b"data:"));
    drop(body);
    drop(_send);
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert_eq!(monitor.in_flight(), 0);
}

/// HTTP/2 with a `Content-Length` streamed body: hyper's h2 path polls it to its end.
#[tokio::test]
async fn h2_streamed_body_with_content_length_is_ok() {
    let (records, _monitor, addr) = file_with_length("11").await;
    let (mut body, _send) = h2_get(addr, "/file.txt").await;
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, b"hello world");
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
}

/// The handler's body sends one event, then waits forever (an upstream that hung); the client
/// goes away: `cancelled` once, soon.
#[tokio::test]
async fn pending_forever_body_then_disconnect_is_cancelled() {
    let (records, monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/stream",
            get(|| async {
                let head = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from_static(
                    b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
                ))]);
                use futures_util::StreamExt;
                let body = head.chain(futures_util::stream::pending());
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(body),
                )
            }),
        ),
    )
    .await;
    let mut res = client()
        .get(format!("http://{addr}/stream"))
        .send()
        .await
        .unwrap();
    let _ = res.chunk().await.unwrap();
    drop(res);
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert_eq!(monitor.in_flight(), 0);
}

/// The handler waits forever for its upstream (no deadline set); the client goes away.
#[tokio::test]
async fn pending_forever_handler_then_disconnect_is_cancelled() {
    let called = std::sync::Arc::new(tokio::sync::Notify::new());
    let calling = called.clone();
    let (records, monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/slow",
            get(move || async move {
                calling.notify_one();
                futures_util::future::pending::<()>().await;
                "never"
            }),
        ),
    )
    .await;
    let c = client();
    let req = tokio::spawn(c.get(format!("http://{addr}/slow")).send());
    // The client leaves once the handler is waiting (not before the server read the request).
    tokio::time::timeout(Duration::from_secs(10), called.notified())
        .await
        .expect("the handler is called");
    req.abort();
    drop(c);
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert_eq!(monitor.in_flight(), 0);
}

/// Many clients giving up at random points, some mid-response: one record per request the
/// service was called with, none in flight after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_cancellations_each_recorded_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let records = common::Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let counted = calls.clone();
    let app = Router::new()
        .route(
            "/stream",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..20))).await;
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    common::paced_body(
                        (0..10)
                            .map(|i| Bytes::from(format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"t{i}\"}}}}]}}\n\n")))
                            .collect(),
                        Duration::from_millis(2),
                        Duration::from_millis(2),
                    ),
                )
            }),
        )
        .layer(monitor.layer())
        .layer(axum::middleware::map_request(move |r: axum::extract::Request| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                r
            }
        }));
    let addr = common::serve(app).await;
    let mut tasks = Vec::new();
    let shared = reqwest::Client::new();
    for _ in 0..400 {
        let c = shared.clone();
        tasks.push(tokio::spawn(async move {
            let give_up = Duration::from_millis(fastrand::u64(0..120));
            let _ = tokio::time::timeout(give_up, async {
                let res = c.get(format!("http://{addr}/stream")).send().await?;
                res.bytes().await
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A request the clients gave up on may still reach the service from the server's backlog:
    // the calls and the records are compared once both have held still for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (n, got) = loop {
        let n = calls.load(Ordering::SeqCst);
        let got = records.snapshot();
        if got.len() == n && monitor.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if calls.load(Ordering::SeqCst) == n && records.snapshot().len() == n {
                break (n, got);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "one record per call: {} calls, {} records, {} in flight",
            n,
            got.len(),
            monitor.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ok = got.iter().filter(|r| r.outcome == Outcome::Ok).count();
    let cancelled = got
        .iter()
        .filter(|r| r.outcome == Outcome::Cancelled)
        .count();
    assert_eq!(
        ok + cancelled,
        n,
        "{:?}",
        got.iter().map(|r| r.outcome).collect::<Vec<_>>()
    );
    eprintln!("calls {n}, ok {ok}, cancelled {cancelled}");
}

/// A gateway relaying its upstream with reqwest, whose read timeout fires mid-stream: the
/// upstream timed out, so `timeout` (README, Outcomes: an inner timeout error).
#[tokio::test]
async fn relayed_upstream_read_timeout_is_a_timeout() {
    let upstream = common::stalled_upstream().await;
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/v1/chat/completions",
            get(move || async move {
                let c = reqwest::Client::builder()
                    .read_timeout(Duration::from_millis(200))
                    .build()
                    .unwrap();
                let up = c.get(format!("http://{upstream}/up")).send().await.unwrap();
                (
                    StreamLabels::new("openai"),
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(up.bytes_stream()),
                )
            }),
        ),
    )
    .await;
    let res = client()
        .get(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    let _ = res.bytes().await;
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout, "{r:#?}");
}

/// An SSE body relayed with its upstream's `Content-Length` (a replayed/cached stream) that
/// stalls past the stream deadline: no error event is added to a body whose length was
/// announced (README, Configuration), here by the header, not the size hint.
#[tokio::test]
async fn deadline_on_sse_with_content_length_header_adds_no_bytes() {
    const EVENT: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n";
    let (records, _monitor, addr) = monitored(
        Monitor::builder().stream_timeout(Duration::from_millis(300)),
        Router::new().route(
            "/v1/chat/completions",
            get(|| async {
                use futures_util::StreamExt;
                let head = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from_static(
                    EVENT.as_bytes(),
                ))]);
                (
                    StreamLabels::new("openai"),
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/event-stream"),
                        ),
                        // The whole replay would be 1000 bytes; it stalls after the first event.
                        (header::CONTENT_LENGTH, HeaderValue::from_static("1000")),
                    ],
                    Body::from_stream(head.chain(futures_util::stream::pending())),
                )
            }),
        ),
    )
    .await;
    let seen =
        raw_exchange_until_close(addr, "GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Timeout);
    let body = seen
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\r\n\r\n");
    assert_eq!(
        body, EVENT,
        "bytes written inside the announced length that the upstream never sent: {seen:?}"
    );
}

async fn raw_exchange_until_close(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// A handler that streams the request's body back and unwraps each chunk (panicking on a
/// broken upload): a panic is the handler's `server_error` (README, Outcomes), never taken for
/// the client's broken upload.
#[tokio::test]
async fn panic_in_body_after_broken_upload_is_a_server_error() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/echo",
            axum::routing::post(|body: Body| async move {
                use futures_util::StreamExt;
                let echoed = body
                    .into_data_stream()
                    .map(|chunk| Ok::<_, Infallible>(chunk.expect("upload chunk")));
                Body::from_stream(echoed)
            }),
        ),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A broken chunk: hyper's request body fails as the handler reads it.
    s.write_all(b"zz\r\n").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got)).await;
    let r = records.one().await;
    assert_eq!(
        r.outcome,
        Outcome::ServerError,
        "client saw {:?}; {r:#?}",
        String::from_utf8_lossy(&got)
    );
}

/// What the server sends for `request` until it closes the connection (the request asks it
/// to, or the server gives up on the answer), or 10 s.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// The served-file shape (tower-http `ServeFile`/`ServeDir` set `Content-Length` by hand),
/// asked with HEAD: hyper sends the headers, `content-length: 11`, and no body, as RFC 9110
/// wants: a HEAD answer is `ok` whatever the handler gave (README, Outcomes).
#[tokio::test]
async fn head_of_a_file_with_content_length_is_ok() {
    let (records, _monitor, addr) = file_with_length("11").await;
    let res = client()
        .head(format!("http://{addr}/file.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "11");
    assert!(
        res.bytes().await.unwrap().is_empty(),
        "the client's HEAD completed"
    );
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
}

/// A relayed 304 that keeps the representation's `Content-Length` (RFC 9110 15.4.5 allows it):
/// hyper sends a bodiless 304, `ok` (README, Outcomes).
#[tokio::test]
async fn not_modified_with_content_length_is_ok() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/cached",
            get(|| async {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::NOT_MODIFIED;
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1234"));
                res.headers_mut()
                    .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
                res
            }),
        ),
    )
    .await;
    let res = client()
        .get(format!("http://{addr}/cached"))
        .header(header::IF_NONE_MATCH, "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let _ = res.bytes().await.unwrap();
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
}

/// The layer put around the whole router (a tower `Layer` on the app, not `Router::layer`):
/// axum's top-level route future then sets `Content-Length` on every exact-size answer and
/// empties HEAD bodies before the monitor sees them. A client's `HEAD` on a route answering a
/// string is `ok`: no error-rate sample a client alone creates (README, Security).
#[tokio::test]
async fn head_through_layer_around_the_router_is_ok() {
    let records = common::Records::default();
    let monitor = records
        .attach(Monitor::builder())
        .build()
        .expect("valid settings");
    let router = Router::new().route("/v1/models", get(|| async { "{\"data\":[]}" }));
    let service = tower::ServiceExt::<axum::extract::Request>::map_response(
        tower::Layer::layer(&monitor.layer(), router),
        |r: http::Response<_>| r.map(Body::new),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(service),
        )
        .await
        .unwrap();
    });
    let res = client()
        .head(format!("http://{addr}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.bytes().await.unwrap();
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
}

/// A 200 with `Content-Length: 5` set by hand and an empty body: hyper drops the header and
/// writes `content-length: 0`, a complete answer; the
/// connection stays usable: `ok`, not a cut response.
#[tokio::test]
async fn empty_body_with_a_length_header_is_what_the_client_saw() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/empty",
            get(|| async {
                let mut res = Response::new(Body::empty());
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
                res
            }),
        ),
    )
    .await;
    let seen = raw(
        addr,
        "GET /empty HTTP/1.1\r\nhost: x\r\n\r\nGET /empty HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    eprintln!("client saw: {seen:?}");
    assert_eq!(seen.matches("HTTP/1.1 200").count(), 2, "{seen:?}");
    assert!(seen.contains("content-length: 0"), "{seen:?}");
    let got = records.wait_for(2).await;
    for r in got {
        assert_eq!(r.outcome, Outcome::Ok, "client saw {seen:?}; {r:#?}");
    }
}

/// HTTP/2: a body that yields MORE than its `Content-Length`: h2's client rejects the stream
/// (PROTOCOL_ERROR), the client's read fails: not `ok` (on HTTP/2 the length frames nothing
/// hyper stops at, and a body dropped before its end is `cancelled` as ever).
#[tokio::test]
async fn h2_body_longer_than_its_content_length() {
    let (records, _monitor, addr) = file_with_length("5").await;
    let (mut body, _send) = h2_get(addr, "/file.txt").await;
    let mut failed = None;
    while let Some(chunk) = body.data().await {
        if let Err(e) = chunk {
            failed = Some(e);
            break;
        }
    }
    let r = records.one().await;
    assert!(failed.is_some(), "the client's read fails");
    assert_ne!(
        r.outcome,
        Outcome::Ok,
        "client's read failed: {failed:?}; {r:#?}"
    );
}

/// `Content-Length` and `Transfer-Encoding: chunked` both set by the handler: hyper refuses
/// the head ("unexpected transfer-encoding found, canceling") and closes, the client gets
/// nothing: not `ok`.
#[tokio::test]
async fn length_and_chunked_both_set() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/both",
            get(|| async {
                let mut res = Response::new(chunks(&["hello ", "world"]));
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                res.headers_mut().insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
                res
            }),
        ),
    )
    .await;
    let seen = raw(addr, "GET /both HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let r = records.one().await;
    assert_ne!(r.outcome, Outcome::Ok, "client saw {seen:?}; {r:#?}");
}

/// HTTP/2: the body hands on all its announced bytes, then waits (a channel whose sender was
/// kept): hyper's h2 path has not ended the stream (no END_STREAM), the client never sees the
/// response end and resets it: `cancelled`, however many bytes went out.
#[tokio::test]
async fn h2_all_bytes_then_stall_then_client_reset() {
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/file.txt",
            get(|| async {
                let stream = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from_static(
                    b"hello world",
                ))])
                .chain(futures_util::stream::pending());
                let mut res = Response::new(Body::from_stream(stream));
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
                res
            }),
        ),
    )
    .await;
    use futures_util::StreamExt as _;
    let (mut body, _send) = h2_get(addr, "/file.txt").await;
    let mut got = Vec::new();
    // Every announced byte comes (waited for, however busy the machine), then no end.
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < 11 {
            match body.data().await {
                Some(chunk) => got.extend_from_slice(&chunk.unwrap()),
                None => break,
            }
        }
    })
    .await
    .expect("the announced bytes");
    assert_eq!(got, b"hello world");
    let ended = tokio::time::timeout(Duration::from_millis(300), body.data())
        .await
        .is_ok();
    assert!(!ended, "the client never saw the stream end");
    drop(body);
    drop(_send);
    // the stream's last handles gone: RST_STREAM CANCEL
    let r = records.one().await;
    assert_eq!(r.outcome, Outcome::Cancelled, "{r:#?}");
}

/// An app whose `/file.txt` answers `hello world` in two frames with `headers` appended (a
/// relay that copies an upstream's head whole, repeats included).
async fn file_with_headers(
    headers: &'static [(header::HeaderName, &'static str)],
) -> (common::Records, Monitor, std::net::SocketAddr) {
    monitored(
        Monitor::builder(),
        Router::new().route(
            "/file.txt",
            get(move || async move {
                let mut res = Response::new(chunks(&["hello ", "world"]));
                for (name, value) in headers {
                    res.headers_mut()
                        .append(name, HeaderValue::from_static(value));
                }
                res
            }),
        ),
    )
    .await
}

/// What a client that sends `request` (raw, and reads until the server closes or 3 s pass)
/// sees of the `/file.txt` of [`file_with_headers`] with `headers`, and the request's record.
async fn file_head_case(
    headers: &'static [(header::HeaderName, &'static str)],
    request: &str,
) -> (String, tower_stream_monitor::StreamRecord) {
    let (records, _monitor, addr) = file_with_headers(headers).await;
    let seen = raw_exchange_until_close(addr, request).await;
    (seen, records.one().await)
}

/// Heads hyper frames by their length, as it writes them: the same `Content-Length` twice
/// (written once), and for an HTTP/1.0 client a `Transfer-Encoding` beside a length (HTTP/1.0
/// has no chunked coding: hyper leaves it out). The client gets the whole answer and the body
/// is dropped at its length: `ok`.
#[tokio::test]
async fn heads_framed_by_their_length_are_ok() {
    let cases: [(&'static [(header::HeaderName, &'static str)], &str); 2] = [
        (
            &[
                (header::CONTENT_LENGTH, "11"),
                (header::CONTENT_LENGTH, "11"),
            ],
            "GET /file.txt HTTP/1.1\r\nhost: x\r\n\r\n",
        ),
        (
            &[
                (header::TRANSFER_ENCODING, "chunked"),
                (header::CONTENT_LENGTH, "11"),
            ],
            "GET /file.txt HTTP/1.0\r\n\r\n",
        ),
    ];
    for (headers, request) in cases {
        let (seen, r) = file_head_case(headers, request).await;
        assert!(seen.ends_with("\r\n\r\nhello world"), "client saw {seen:?}");
        assert_eq!(r.outcome, Outcome::Ok, "client saw {seen:?}; {r:#?}");
    }
}

/// Two different `Content-Length` values: hyper refuses the head and the client gets no
/// response: not `ok`.
#[tokio::test]
async fn unequal_content_lengths_are_not_ok() {
    let (seen, r) = file_head_case(
        &[
            (header::CONTENT_LENGTH, "11"),
            (header::CONTENT_LENGTH, "12"),
        ],
        "GET /file.txt HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_ne!(r.outcome, Outcome::Ok, "client saw {seen:?}; {r:#?}");
    assert!(!seen.contains("hello world"), "client saw {seen:?}");
}

/// A body of known size (an exact `size_hint`) that does not say it has ended after its last
/// frame (`is_end_stream` stays false: a hand-written body, or a relayed HTTP/2 upstream's whose
/// end comes in a frame of its own). On HTTP/1.1 hyper frames the response by that size and
/// drops the body once every byte went out, without asking it for its end: the client got the
/// whole answer, `ok`.
#[tokio::test]
async fn body_of_known_size_sent_whole_is_ok() {
    struct Sized(Option<Bytes>, u64);
    impl http_body::Body for Sized {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(self.0.take().map(|d| Ok(http_body::Frame::data(d))))
        }
        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.1)
        }
    }
    for (content_type, payload) in [
        ("application/json", &b"{\"answer\":\"hi\"}"[..]),
        (
            "text/event-stream",
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
        ),
    ] {
        let (records, monitor, addr) = monitored(
            Monitor::builder(),
            Router::new().route(
                "/known",
                get(move || async move {
                    (
                        [(header::CONTENT_TYPE, content_type)],
                        Body::new(Sized(
                            Some(Bytes::from_static(payload)),
                            payload.len() as u64,
                        )),
                    )
                }),
            ),
        )
        .await;
        let res = client()
            .get(format!("http://{addr}/known"))
            .send()
            .await
            .unwrap();
        assert_eq!(&res.bytes().await.unwrap()[..], payload, "the whole body");
        let r = records.one().await;
        assert_eq!(r.outcome, Outcome::Ok, "{content_type}: {r:#?}");
        assert_eq!(monitor.in_flight(), 0);
    }
}

/// An SSE body longer than the `Content-Length` its handler announced (a wrong length copied
/// from elsewhere): hyper sends the announced bytes only, and the record counts what the
/// client got: the first event's token, not the second's, which never left the server.
#[tokio::test]
async fn bytes_past_the_announced_length_are_not_counted() {
    const FIRST: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"one\"}}]}\n\n";
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/v1/chat/completions",
            get(|| async {
                (
                    StreamLabels::new("openai"),
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/event-stream"),
                        ),
                        (header::CONTENT_LENGTH, HeaderValue::from(FIRST.len())),
                    ],
                    // One frame holding both events, then one past the length altogether.
                    chunks(&[
                        concat!(
                            "data: {\"choices\":[{\"delta\":{\"content\":\"one\"}}]}\n\n",
                            "data: {\"choices\":[{\"delta\":{\"content\":\"two\"}}]}\n\n"
                        ),
                        "data: [DONE]\n\n",
                    ]),
                )
            }),
        ),
    )
    .await;
    let body = common::get_text(&client(), &format!("http://{addr}/v1/chat/completions")).await;
    assert_eq!(body, FIRST, "hyper sends the announced bytes only");
    let r = records.one().await;
    assert_eq!(r.output_tokens, 1, "{r:#?}");
    assert_eq!(r.bytes, FIRST.len() as u64, "{r:#?}");
}

/// The same wrong length with a compression layer outside the monitor, which re-frames the
/// body (chunked) and so polls it past its length: every byte goes out, and counts, the
/// upstream's error event past the length too (in a frame of its own, as events come).
#[tokio::test]
async fn bytes_past_the_announced_length_count_when_a_layer_outside_reframes_the_body() {
    const FIRST: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"one\"}}]}\n\n";
    const ERROR: &str =
        "data: {\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    let frames = [FIRST, ERROR];
    let (records, monitor) = common::recorded(Monitor::builder());
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            get(move || async move {
                let frames: Vec<Result<Bytes, Infallible>> = frames
                    .iter()
                    .map(|f| Ok(Bytes::from_static(f.as_bytes())))
                    .collect();
                (
                    StreamLabels::new("openai"),
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/event-stream"),
                        ),
                        (header::CONTENT_LENGTH, HeaderValue::from(FIRST.len())),
                    ],
                    Body::from_stream(futures_util::stream::iter(frames)),
                )
            }),
        )
        .layer(monitor.layer())
        .layer(
            tower_http::compression::CompressionLayer::new()
                .compress_when(tower_http::compression::predicate::SizeAbove::new(0)),
        );
    let addr = common::serve(app).await;
    let seen = raw_exchange_until_close(
        addr,
        "GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(seen.contains("transfer-encoding: chunked"), "{seen:?}");
    let r = records.one().await;
    assert!(
        r.outcome.is_error(),
        "the upstream's error event counts: {r:#?}"
    );
    assert_eq!(r.output_tokens, 1, "{r:#?}");
    assert_eq!(r.bytes, (FIRST.len() + ERROR.len()) as u64, "{r:#?}");
}
