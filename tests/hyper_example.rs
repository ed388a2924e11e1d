//! The bare hyper example, served on loopback, measured by the stream layer.

mod common;

#[allow(dead_code)]
#[path = "../examples/hyper.rs"]
mod example;

use common::{Records, client};
use tower_stream_monitor::Outcome;
use tower_stream_monitor::parse::TokenSource;

#[tokio::test]
async fn bare_hyper_service_is_measured() {
    let collected = Records::default();
    let monitor = example::monitor(collected.callback());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(example::serve(listener, monitor));

    let text = client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    client()
        .get(format!("http://{addr}/elsewhere"))
        .send()
        .await
        .unwrap();

    let got = collected.wait_for(2).await;
    let chat = &got[0];
    assert_eq!(
        &*chat.route, "/v1/chat/completions",
        "route from the configured pattern"
    );
    assert_eq!((&*chat.provider, &*chat.model), ("simulated", "sim-1"));
    assert_eq!(chat.outcome, Outcome::Ok);
    assert_eq!((chat.output_tokens, chat.input_tokens), (5, Some(3)));
    assert_eq!(chat.token_source, TokenSource::Reported);
    assert!(chat.time_to_first_token.is_some() && chat.streaming);
    assert_eq!(&*got[1].route, "unmatched", "never the raw path");
    assert_eq!(got[1].outcome, Outcome::ClientError);
}
