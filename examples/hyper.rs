//! The stream layer on a bare hyper 1.x server: no axum, no `MatchedPath`, routes from patterns.
//!
//! ```text
//! cargo run --example hyper -- --addr 127.0.0.1:3001
//! curl -N -X POST http://127.0.0.1:3001/v1/chat/completions
//! ```

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_stream_monitor::{Monitor, StreamLabels, StreamRecord};

/// The monitor this example uses: route labels come from patterns, as hyper has no router.
pub fn monitor(on_record: impl Fn(&StreamRecord) + Send + Sync + 'static) -> Monitor {
    Monitor::builder()
        .route_patterns(["/v1/chat/completions"])
        .on_record(on_record)
        .build()
        .expect("valid settings")
}

/// A simulated OpenAI-style chat stream: `tokens` content chunks, then usage and `[DONE]`.
async fn chat(
    request: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    if request.uri().path() != "/v1/chat/completions" {
        let body = Full::new(Bytes::from_static(b"not found")).boxed();
        let mut response = Response::new(body);
        *response.status_mut() = StatusCode::NOT_FOUND;
        return Ok(response);
    }
    let tokens = 5u32;
    let chunks = futures_util::stream::unfold(0u32, move |i| async move {
        if i > tokens + 1 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let data = match i {
            i if i < tokens => format!(
                "data: {{\"object\":\"chat.completion.chunk\",\"model\":\"sim-1\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n"
            ),
            i if i == tokens => format!(
                "data: {{\"object\":\"chat.completion.chunk\",\"model\":\"sim-1\",\"choices\":[],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":{tokens}}}}}\n\n"
            ),
            _ => "data: [DONE]\n\n".to_owned(),
        };
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(data))), i + 1))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
        .extensions_mut()
        .insert(StreamLabels::new("simulated").with_model("sim-1"));
    Ok(response)
}

/// Accepts connections on `listener` forever, each served by hyper with the stream layer.
pub async fn serve(listener: TcpListener, monitor: Monitor) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = ServiceBuilder::new()
            .layer(monitor.layer())
            .service_fn(chat);
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = connection.await {
                eprintln!("connection error: {error}");
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut addr = "127.0.0.1:3001".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs a value")?,
            other => {
                return Err(
                    format!("unknown argument {other:?} (expected --addr HOST:PORT)").into(),
                );
            }
        }
    }
    let monitor = monitor(|r: &StreamRecord| {
        println!(
            "{} {} {} tokens={} ttft={:?} outcome={}",
            r.route, r.provider, r.model, r.output_tokens, r.time_to_first_token, r.outcome
        )
    });
    let listener = TcpListener::bind(&addr).await?;
    println!("hyper example listening on http://{addr}");
    serve(listener, monitor).await;
    Ok(())
}
