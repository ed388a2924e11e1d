//! Provider stream shapes beyond the fixtures (a zero count left out, a keep-alive event, a
//! filter's empty chunk, every block reason), each read as its provider documents it.

use tower_stream_monitor::parse::{
    FinishReason, ProviderFormat, StreamParser, TokenSource, WireFormat,
};

/// `body` parsed whole, ended as a body that ended normally.
fn parsed(body: &str) -> StreamParser {
    let mut parser = StreamParser::new(WireFormat::Sse);
    parser.feed(body.as_bytes());
    parser.finish();
    parser.end(true);
    parser
}

/// Gemini leaves a zero count out of `usageMetadata` (proto3 JSON): a thinking model cut by
/// `maxOutputTokens` while still thinking reports its thoughts and no `candidatesTokenCount`.
/// Its output is every generated token, thoughts included: 256, as reported.
#[test]
fn gemini_thoughts_without_a_candidates_count_are_its_output() {
    let parser = parsed(concat!(
        "data: {\"candidates\": [{\"content\": {\"role\": \"model\"},\"finishReason\": \"MAX_TOKENS\",\"index\": 0}],",
        "\"usageMetadata\": {\"promptTokenCount\": 8,\"totalTokenCount\": 264,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 8}],\"thoughtsTokenCount\": 256},",
        "\"modelVersion\": \"gemini-2.5-pro\",\"responseId\": \"abc\"}\r\n\r\n"
    ));
    let s = parser.summary();
    assert_eq!(s.format(), ProviderFormat::Gemini);
    assert_eq!(s.finish_reason(), Some(FinishReason::Length));
    assert_eq!(s.reasoning_output_tokens(), Some(256));
    assert_eq!(s.output_tokens(), 256);
    assert_eq!(s.token_source(), TokenSource::Reported);
}

/// An `event: ping` keep-alive (a gateway's, or an SSE library's) before an OpenAI chat
/// stream names no provider: the stream is OpenAI chat, whose `cached_tokens` are part of its
/// `prompt_tokens` (not added to them, as Anthropic's cache figures are).
#[test]
fn a_ping_event_names_no_provider() {
    let parser = parsed(concat!(
        "event: ping\r\ndata: 2024-01-01 00:00:00\r\n\r\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":2000,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":1024}}}\n\n",
        "data: [DONE]\n\n"
    ));
    assert_eq!(parser.summary().format(), ProviderFormat::OpenAiChat);
    assert_eq!(parser.summary().input_tokens(), Some(2000));
    assert_eq!(parser.summary().cache_read_input_tokens(), Some(1024));
}

/// Every `promptFeedback.blockReason` Gemini documents is a blocked prompt: `content_filter`.
#[test]
fn every_gemini_block_reason_is_a_content_filter() {
    for reason in [
        "BLOCK_REASON_UNSPECIFIED",
        "SAFETY",
        "OTHER",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "IMAGE_SAFETY",
    ] {
        let parser = parsed(&format!(
            "data: {{\"promptFeedback\": {{\"blockReason\": \"{reason}\"}},\"usageMetadata\": {{\"promptTokenCount\": 8,\"totalTokenCount\": 8}},\"modelVersion\": \"gemini-2.5-flash\"}}\r\n\r\n"
        ));
        assert_eq!(
            parser.summary().finish_reason(),
            Some(FinishReason::ContentFilter),
            "{reason}"
        );
    }
}

/// Azure OpenAI's first chunk holds the prompt's filter results and an empty `choices`: it
/// names no format, and legacy completions after it are still completions.
#[test]
fn an_empty_choices_chunk_names_no_format() {
    let parser = parsed(concat!(
        "data: {\"id\":\"\",\"object\":\"\",\"created\":0,\"model\":\"\",\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}],\"choices\":[]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"gpt-35-turbo-instruct\",\"choices\":[{\"text\":\"Hi\",\"index\":0,\"finish_reason\":null,\"logprobs\":null}]}\n\n",
        "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"gpt-35-turbo-instruct\",\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":\"stop\",\"logprobs\":null}]}\n\n",
        "data: [DONE]\n\n"
    ));
    let s = parser.summary();
    assert_eq!(s.format(), ProviderFormat::OpenAiCompletions);
    assert_eq!(s.format().operation_name(), Some("text_completion"));
    assert_eq!(s.output_tokens(), 1);
}
