//! Outcomes where something stands between the monitor and the client or the upstream: a
//! compression layer outside it, a relaying client's read timeout; HTTP/1.0
//! framing; over a real socket.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use common::monitored;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_stream_monitor::{Monitor, Outcome};

/// What the server sends for `request` until it closes the connection, or 10 s.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// What the server sends for `request` on a connection it keeps open: its head, waited for (up
/// to 10 s, however busy the machine), and what else comes within `more` after it.
async fn head_then(addr: std::net::SocketAddr, request: &[u8], more: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(more, s.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

/// `parts` as a body, a frame each, 5 ms apart.
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

/// tower-http's `CompressionLayer` outside the monitor re-frames a body whose `Content-Length`
/// bytes all went out and which then hangs: the client never sees its end and gives up, so it
/// is `cancelled`, not `ok` (no end at the announced length).
#[tokio::test]
async fn compression_outside_all_bytes_then_hang_is_not_ok() {
    let records = common::Records::default();
    let monitor = records.attach(Monitor::builder()).build().unwrap();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            get(|| async {
                use futures_util::StreamExt;
                let json = r#"{"id":"x","choices":[{"message":{"content":"hi"}}]}"#;
                let stream = futures_util::stream::iter([Ok::<_, Infallible>(Bytes::from_static(
                    json.as_bytes(),
                ))])
                .chain(futures_util::stream::pending());
                let mut res = Response::new(Body::from_stream(stream));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(json.len()));
                res
            }),
        )
        .layer(monitor.layer())
        .layer(tower_http::compression::CompressionLayer::new());
    let addr = common::serve(app).await;
    let seen = head_then(
        addr,
        b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    // the client gives up here (dropped socket)
    eprintln!("client saw: {seen:?}");
    assert!(seen.contains("transfer-encoding: chunked"), "{seen:?}");
    assert!(
        !seen.contains("\r\n0\r\n\r\n"),
        "the response never ended: {seen:?}"
    );
    let r = records.one().await;
    assert_ne!(r.outcome, Outcome::Ok, "client saw no end: {r:#?}");
}

/// `POST /v1/realtime` with a chunked upload that never pauses (4 bytes every 20 ms, for 2 s
/// at most): what the server sent back within those 2 s.
async fn trickled_upload(addr: std::net::SocketAddr) -> Vec<u8> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(b"POST /v1/realtime HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let uploader = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"4\r\nabcd\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), rd.read_to_end(&mut got)).await;
    uploader.abort();
    got
}

/// A gateway streams a client's upload to its upstream and relays the answer; the upstream
/// stalls and the relaying client's read timeout fires while the client keeps uploading: the
/// upstream's `timeout`, not the client's.
#[tokio::test]
async fn upstream_read_timeout_while_client_uploads_is_a_timeout() {
    let upstream = common::stalled_upstream().await;
    let (records, _monitor, addr) = monitored(
        Monitor::builder(),
        Router::new().route(
            "/v1/realtime",
            post(move |body: Body| async move {
                let c = reqwest::Client::builder()
                    .read_timeout(Duration::from_millis(300))
                    .build()
                    .unwrap();
                let up = c
                    .post(format!("http://{upstream}/up"))
                    .body(reqwest::Body::wrap_stream(body.into_data_stream()))
                    .send()
                    .await
                    .unwrap();
                use futures_util::StreamExt;
                let relayed = up.bytes_stream().inspect(|r| {
                    if let Err(e) = r {
                        eprintln!("relayed error: {e:?}");
                    }
                });
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(relayed),
                )
            }),
        ),
    )
    .await;
    let got = trickled_upload(addr).await;
    let r = records.one().await;
    eprintln!(
        "client saw {:?}; record {:?} {:?}",
        String::from_utf8_lossy(&got),
        r.outcome,
        r.duration
    );
    assert_eq!(
        r.outcome,
        Outcome::Timeout,
        "the client never paused its upload; the upstream stalled: {r:#?}"
    );
}

/// The same relay with this layer's idle timeout as the limit: the client keeps uploading (a
/// chunk every 20 ms) and the upstream stalls. The handler waits for the client only between
/// two chunks, never through the body's whole wait: the upstream's `timeout`, not the
/// client's, or a client could hide an outage by trickling its upload.
#[tokio::test]
async fn own_idle_timeout_while_client_uploads_steadily_is_a_timeout() {
    let upstream = common::serve(Router::new().route(
        "/up",
        post(|body: Body| async move {
            use futures_util::StreamExt;
            // The upstream takes the whole upload as it comes (it keeps reading), but its
            // answer stalls after one event.
            tokio::spawn(async move {
                let mut s = body.into_data_stream();
                while let Some(Ok(_)) = s.next().await {}
            });
            (
                [(header::CONTENT_TYPE, "text/event-stream")],
                common::one_event_then_silence(),
            )
        }),
    ))
    .await;
    let (records, _monitor, addr) = monitored(
        Monitor::builder().idle_timeout(Duration::from_millis(300)),
        Router::new().route(
            "/v1/realtime",
            post(move |body: Body| async move {
                let c = reqwest::Client::new();
                let up = c
                    .post(format!("http://{upstream}/up"))
                    .body(reqwest::Body::wrap_stream(body.into_data_stream()))
                    .send()
                    .await
                    .unwrap();
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(up.bytes_stream()),
                )
            }),
        ),
    )
    .await;
    let got = trickled_upload(addr).await;
    let r = records.one().await;
    assert_eq!(
        r.outcome,
        Outcome::Timeout,
        "the client never paused its upload; the upstream stalled. Client saw {:?}",
        String::from_utf8_lossy(&got)
    );
}

/// HTTP/1.0, kept alive (framed by length) and closed (delimited by the close): `ok`, once
/// each.
#[tokio::test]
async fn http10_keep_alive_and_close_delimited_are_ok_once() {
    let (records, monitor, addr) = monitored(
        Monitor::builder(),
        Router::new()
            .route(
                "/len",
                get(|| async {
                    let mut res = Response::new(chunks(&["hello ", "world"]));
                    res.headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
                    res
                }),
            )
            .route(
                "/nolen",
                get(|| async { Response::new(chunks(&["hello ", "world"])) }),
            ),
    )
    .await;
    let seen = raw(
        addr,
        b"GET /len HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\nGET /len HTTP/1.0\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(seen.matches("hello world").count(), 2, "{seen:?}");
    let seen2 = raw(addr, b"GET /nolen HTTP/1.0\r\nhost: x\r\n\r\n").await;
    assert!(seen2.ends_with("hello world"), "{seen2:?}");
    let got = records.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(records.snapshot().len(), 3);
    for r in got {
        assert_eq!(r.outcome, Outcome::Ok, "{r:#?}");
    }
    assert_eq!(monitor.in_flight(), 0);
}
