//! One event read into the stream's summary: by a template of the stream's when one matches
//! (`template.rs`), else by the provider's full interpretation (`provider.rs`), from which the
//! templates learn.

use super::provider::{chat_view, interpret, uninformative_event};
use super::template::Templates;
use super::{StreamErrorKind, StreamSummary};

/// Interprets one event. Returns whether it carried output content.
pub(super) fn apply(
    summary: &mut StreamSummary,
    templates: &mut Templates,
    event_type: &[u8],
    data: &[u8],
) -> bool {
    summary.events += 1;
    if let Some(format) = uninformative_event(event_type) {
        summary.detect(format);
        // Anthropic's last event: the stream reached its end.
        summary.done |= event_type == b"message_stop";
        return false;
    }
    let data = data.trim_ascii();
    if data == b"[DONE]" {
        summary.done = true;
        return false;
    }
    if data.first() != Some(&b'{') {
        if event_type == b"error" {
            summary.set_error(data, StreamErrorKind::Other);
        }
        return false;
    }
    let chat = chat_view(summary, summary.events);
    if let Some(content) = templates.read(summary, event_type, data, chat) {
        return content;
    }
    // What was reported is taken out while the event is read, so that an event that assigns
    // usage or a finish reason shows, even when it repeats the figures already recorded; what
    // the event does not assign is put back.
    let earlier = std::mem::take(&mut summary.reported);
    let before = (summary.error.is_some(), summary.malformed_events);
    let content = interpret(summary, event_type, data, chat);
    let assigned = summary.reported.any();
    let newer = std::mem::replace(&mut summary.reported, earlier);
    summary.reported.assign(newer);
    // An event that reported usage, a finish reason or an error cannot stand for others: not
    // worth trying out.
    if !assigned && (summary.error.is_some(), summary.malformed_events) == before {
        templates.learn(summary, event_type, data, chat, content);
    }
    content
}

/// The length of the event data at the start of `rest` that a template recognises, for the
/// next event, of type `event_type`; [`accept`] records it as [`apply`] would.
pub(super) fn recognise(
    summary: &StreamSummary,
    templates: &mut Templates,
    event_type: &[u8],
    rest: &[u8],
) -> Option<usize> {
    // Templates are only learnt from events that get past `apply`'s checks before the JSON is
    // read (an informative event type, data starting with `{`), and what one matches starts
    // with `{` and ends with `}`: such an event passes them too, untouched by the trim.
    templates.recognise(event_type, rest, chat_view(summary, summary.events + 1))
}

/// Records the event [`recognise`] last recognised. Returns whether it carried content.
pub(super) fn accept(summary: &mut StreamSummary, templates: &mut Templates) -> bool {
    summary.events += 1;
    templates.accept(summary)
}
