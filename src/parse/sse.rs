//! An incremental decoder for `text/event-stream` (the WHATWG "server-sent events" grammar).
//!
//! Bytes arrive in body frames split at arbitrary points: mid-line, mid-UTF-8 sequence, between
//! the `\r` and `\n` of a CRLF. The decoder is a byte-level state machine, so every decision it
//! makes depends only on the byte sequence, never on where the frames were cut: that is what makes
//! it chunk-split invariant. Event data is copied into one reused buffer, capped in size.
//!
//! One shortcut: when a frame holds a whole event made of one `data:` line (what providers send),
//! the sink may recognise the data straight from the frame ([`EventSink::recognise`]); the
//! decoder only checks that the line and the event end where the sink says, and skips the line
//! scan and the copy. The outcome is the one the state machine would reach on the same bytes.
//! When the frame is that event and nothing else, the parser need not even enter the state
//! machine ([`SseDecoder::whole_frame`]).

use memchr::{memchr2, memchr3};

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
/// The type of an event that names none: one static, so that a template can tell it without
/// reading it (see `Shape::read_whole`).
pub(crate) static MESSAGE: [u8; 7] = *b"message";
/// Field names we care about are `data` and `event`; anything longer is some other field.
const NAME_CAP: usize = 8;
/// Event types longer than this are not ones we interpret; they are kept as "unknown".
const EVENT_TYPE_CAP: usize = 64;
/// A data buffer that grew past this for one large event is shrunk back after the event, so one
/// big event does not pin its size for the rest of a long stream.
pub(crate) const RETAINED_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Name,
    /// After the colon: one leading space of the value is dropped.
    ValueStart,
    Value,
    /// A comment line (`:`) or the rest of a line we ignore.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

/// Receives the decoded events.
pub(crate) trait EventSink {
    /// One dispatched event: its type (`message` when none was given) and its data (lines
    /// joined by `\n`).
    fn event(&mut self, event_type: &[u8], data: &[u8]);

    /// At the start of an event's first `data:` line, `rest` being the line's value and what
    /// follows it in the frame: the length of the event data the sink recognises at its start,
    /// with no line break in it. Nothing is recorded until [`accept`](Self::accept).
    fn recognise(&mut self, _event_type: &[u8], _rest: &[u8]) -> Option<usize> {
        None
    }

    /// The recognised data was the event's whole data: record it as [`event`](Self::event)
    /// would have.
    fn accept(&mut self) {}
}

impl<F: FnMut(&[u8], &[u8])> EventSink for F {
    fn event(&mut self, event_type: &[u8], data: &[u8]) {
        self(event_type, data)
    }
}

/// Incremental SSE decoder. Feed it chunks; it calls back once per dispatched event with the
/// event type (`message` when none was given) and the event data (lines joined by `\n`).
///
/// In the order given (`repr(C)`): what a frame that is one whole event reads comes last, next
/// to what the stream's summary reads after it in the parser (ARCHITECTURE.md, The parser's
/// memory).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct SseDecoder {
    name: [u8; NAME_CAP],
    name_len: usize,
    oversized_events: u64,
    event_type: [u8; EVENT_TYPE_CAP],
    data: Vec<u8>,
    state: State,
    field: Field,
    name_overflow: bool,
    pending_cr: bool,
    bom_matched: u8,
    has_data: bool,
    event_type_overflow: bool,
    oversized: bool,
    event_type_len: usize,
    max_event_bytes: usize,
}

/// An `event:` line at the start of `buf`: the type it gives, as the state machine keeps it
/// (`message` when empty, nothing when too long), and the bytes after the line.
#[inline(never)]
fn event_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let line = buf.strip_prefix(b"event:")?;
    let line = line.strip_prefix(b" ").unwrap_or(line);
    let end = memchr2(b'\n', b'\r', line)?;
    let rest = match &line[end..] {
        [b'\r', b'\n', rest @ ..] => rest,
        [_, rest @ ..] => rest,
        [] => return None,
    };
    let event_type: &[u8] = match end {
        0 => &MESSAGE,
        n if n > EVENT_TYPE_CAP => b"",
        n => &line[..n],
    };
    Some((event_type, rest))
}

impl Drop for SseDecoder {
    fn drop(&mut self) {
        // The buffer goes back to this thread's pool for the next stream.
        super::buffers::give(std::mem::take(&mut self.data));
    }
}

impl SseDecoder {
    /// A decoder that skips (and counts) events whose data exceeds `max_event_bytes`.
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        Self {
            state: State::LineStart,
            field: Field::Other,
            name: [0; NAME_CAP],
            name_len: 0,
            name_overflow: false,
            pending_cr: false,
            bom_matched: 0,
            // Sized for a typical provider chunk so the first events do not reallocate.
            data: super::buffers::take(max_event_bytes.min(2048)),
            has_data: false,
            event_type: [0; EVENT_TYPE_CAP],
            event_type_len: 0,
            event_type_overflow: false,
            oversized: false,
            max_event_bytes,
            oversized_events: 0,
        }
    }

    /// Events skipped because their data was larger than the cap.
    pub(crate) fn oversized_events(&self) -> u64 {
        self.oversized_events
    }

    /// At the start of a line with no event data pending.
    pub(crate) fn at_event_boundary(&self) -> bool {
        self.state == State::LineStart && !self.has_data
    }

    /// When the decoder is between events and `buf` is one whole event, a single `data:` line,
    /// maybe after an `event:` line, and the blank line that ends it (`\n\n` or `\r\n\r\n`):
    /// the event's type and the data line's value. The event is the one the state machine would
    /// dispatch if the value holds no line break, which the caller checks; it then calls
    /// [`whole_frame_taken`](Self::whole_frame_taken) instead of [`feed`](Self::feed).
    #[inline]
    pub(crate) fn whole_frame<'a>(&'a self, buf: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        if self.state != State::LineStart
            || self.has_data
            || self.pending_cr
            || self.bom_matched < 3
        {
            return None;
        }
        // A `data:` line and the blank line: the line's value.
        let data = |buf: &'a [u8]| {
            let value = buf.strip_prefix(b"data:")?;
            let value = value.strip_prefix(b" ").unwrap_or(value);
            value
                .strip_suffix(b"\n\n")
                .or_else(|| value.strip_suffix(b"\r\n\r\n"))
        };
        let (event_type, value) = match buf.first() {
            Some(b'd') => (self.event_type(), data(buf)?),
            // The ending first: it rules out a frame that holds only the event line.
            Some(b'e') if buf.ends_with(b"\n\n") || buf.ends_with(b"\r\n\r\n") => {
                let (event_type, rest) = event_line(buf)?;
                (event_type, data(rest)?)
            }
            _ => return None,
        };
        // Empty data is not dispatched and oversized data is counted: the state machine's.
        if value.is_empty() || value.len() > self.max_event_bytes {
            return None;
        }
        Some((event_type, value))
    }

    /// The frame [`whole_frame`](Self::whole_frame) gave was taken as that event: the decoder
    /// is where the state machine would be after it.
    #[inline]
    pub(crate) fn whole_frame_taken(&mut self) {
        self.event_type_len = 0;
        self.event_type_overflow = false;
    }

    /// Decodes `buf`, calling `on_event` for each complete event.
    ///
    /// Pinned inline in `StreamParser::feed`: left to the compiler, the choice changed with
    /// unrelated edits, and with it the whole-frame path's cost per event.
    #[inline(always)]
    pub(crate) fn feed(&mut self, mut buf: &[u8], on_event: &mut impl EventSink) {
        if self.bom_matched < 3 {
            buf = self.strip_bom(buf);
        }
        if self.pending_cr && !buf.is_empty() {
            self.pending_cr = false;
            if buf[0] == b'\n' {
                buf = &buf[1..];
            }
        }
        while let Some(&first) = buf.first() {
            match self.state {
                State::LineStart => match first {
                    b'\n' | b'\r' => {
                        buf = self.end_of_line(buf);
                        self.dispatch(on_event);
                    }
                    b':' => {
                        self.state = State::Skip;
                        buf = &buf[1..];
                    }
                    b'd' if !self.has_data => match self.whole_event(buf, on_event) {
                        Some(rest) => buf = rest,
                        None => {
                            self.state = State::Name;
                            self.name_len = 0;
                            self.name_overflow = false;
                        }
                    },
                    _ => {
                        self.state = State::Name;
                        self.name_len = 0;
                        self.name_overflow = false;
                    }
                },
                State::Name => match memchr3(b':', b'\n', b'\r', buf) {
                    Some(i) => {
                        self.push_name(&buf[..i]);
                        self.begin_value();
                        if buf[i] == b':' {
                            self.state = State::ValueStart;
                            buf = &buf[i + 1..];
                        } else {
                            // A line with no colon names a field whose value is empty.
                            buf = self.end_of_line(&buf[i..]);
                        }
                    }
                    None => {
                        self.push_name(buf);
                        buf = &[];
                    }
                },
                State::ValueStart => {
                    if first == b' ' {
                        buf = &buf[1..];
                    }
                    self.state = State::Value;
                }
                State::Value => match memchr2(b'\n', b'\r', buf) {
                    Some(i) => {
                        self.push_value(&buf[..i]);
                        buf = self.end_of_line(&buf[i..]);
                    }
                    None => {
                        self.push_value(buf);
                        buf = &[];
                    }
                },
                State::Skip => match memchr2(b'\n', b'\r', buf) {
                    Some(i) => buf = self.end_of_line(&buf[i..]),
                    None => buf = &[],
                },
            }
        }
    }

    /// At the start of an event, a `data:` line whose value the sink recognises up to a line
    /// break that a blank line follows: the event is accepted without copying it. Returns the
    /// bytes after it, or `None` to decode `buf` the ordinary way.
    fn whole_event<'b>(&mut self, buf: &'b [u8], sink: &mut impl EventSink) -> Option<&'b [u8]> {
        let value = buf.strip_prefix(b"data:")?;
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let len = sink.recognise(self.event_type(), value)?;
        if len == 0 || len > self.max_event_bytes {
            // Empty data is not dispatched and oversized data is counted: the state machine's.
            return None;
        }
        let after = value.get(len..)?;
        if let Some(rest) = after.strip_prefix(b"\n\n") {
            // The usual ending, tested first.
            sink.accept();
            self.event_type_len = 0;
            self.event_type_overflow = false;
            return Some(rest);
        }
        // The data line's terminator (a CR at the end of `buf` may be half of a CRLF).
        let rest = match after {
            [b'\r', b'\n', rest @ ..] => rest,
            [b'\r', rest @ ..] if !rest.is_empty() => rest,
            [b'\n', rest @ ..] => rest,
            _ => return None,
        };
        // The blank line that ends the event.
        let rest = match rest {
            [b'\r', b'\n', rest @ ..] => rest,
            [b'\r'] => {
                self.pending_cr = true;
                &[]
            }
            [b'\r' | b'\n', rest @ ..] => rest,
            _ => return None,
        };
        sink.accept();
        self.event_type_len = 0;
        self.event_type_overflow = false;
        Some(rest)
    }

    /// The type of the event being decoded, as it is dispatched.
    fn event_type(&self) -> &[u8] {
        match (self.event_type_overflow, self.event_type_len) {
            (true, _) => b"",
            (false, 0) => &MESSAGE,
            (false, n) => &self.event_type[..n],
        }
    }

    /// Drops a leading UTF-8 byte order mark, even when it is split across chunks.
    fn strip_bom<'b>(&mut self, mut buf: &'b [u8]) -> &'b [u8] {
        while let Some(&b) = buf.first() {
            if self.bom_matched >= 3 {
                break;
            }
            if b == BOM[self.bom_matched as usize] {
                self.bom_matched += 1;
                buf = &buf[1..];
            } else {
                if self.bom_matched > 0 {
                    // A partial BOM is junk at the start of the first line's field name.
                    self.state = State::Name;
                    self.name_len = 0;
                    self.name_overflow = true;
                }
                self.bom_matched = 3;
            }
        }
        buf
    }

    /// `buf[0]` is `\r` or `\n`. Consumes one line terminator (CRLF counts once, also when the
    /// `\n` comes in the next chunk).
    fn end_of_line<'b>(&mut self, buf: &'b [u8]) -> &'b [u8] {
        self.state = State::LineStart;
        if buf[0] == b'\r' {
            match buf.get(1) {
                None => {
                    self.pending_cr = true;
                    return &[];
                }
                Some(b'\n') => return &buf[2..],
                Some(_) => {}
            }
        }
        &buf[1..]
    }

    fn push_name(&mut self, part: &[u8]) {
        let end = self.name_len + part.len();
        if end > NAME_CAP {
            self.name_overflow = true;
        } else if !self.name_overflow {
            self.name[self.name_len..end].copy_from_slice(part);
            self.name_len = end;
        }
    }

    fn begin_value(&mut self) {
        self.field = match (self.name_overflow, &self.name[..self.name_len]) {
            (false, b"data") => Field::Data,
            (false, b"event") => Field::Event,
            _ => Field::Other,
        };
        match self.field {
            Field::Data => {
                if self.has_data {
                    self.push_data(b"\n");
                }
                self.has_data = true;
            }
            Field::Event => {
                self.event_type_len = 0;
                self.event_type_overflow = false;
            }
            Field::Other => {}
        }
    }

    fn push_value(&mut self, part: &[u8]) {
        match self.field {
            Field::Data => self.push_data(part),
            Field::Event => {
                let end = self.event_type_len + part.len();
                if end > EVENT_TYPE_CAP {
                    self.event_type_overflow = true;
                } else if !self.event_type_overflow {
                    self.event_type[self.event_type_len..end].copy_from_slice(part);
                    self.event_type_len = end;
                }
            }
            Field::Other => {}
        }
    }

    fn push_data(&mut self, part: &[u8]) {
        if self.oversized {
            return;
        }
        if self.data.len() + part.len() > self.max_event_bytes {
            self.oversized = true;
            self.data.clear();
            return;
        }
        self.data.extend_from_slice(part);
    }

    fn dispatch(&mut self, on_event: &mut impl EventSink) {
        if self.oversized {
            self.oversized_events += 1;
        } else if self.has_data && !self.data.is_empty() {
            on_event.event(self.event_type(), &self.data);
        }
        self.data.clear();
        if self.data.capacity() > RETAINED_CAPACITY {
            self.data.shrink_to(RETAINED_CAPACITY);
        }
        self.has_data = false;
        self.event_type_len = 0;
        self.event_type_overflow = false;
        self.oversized = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a frame that is one whole event reads is the decoder's last
    /// [`WHOLE_FRAME_BYTES`](crate::parse::WHOLE_FRAME_BYTES), next to the summary's
    /// (ARCHITECTURE.md, The parser's memory).
    #[test]
    fn what_a_whole_frame_reads_is_the_decoders_tail() {
        use std::mem::{offset_of, size_of};
        let first = [
            offset_of!(SseDecoder, data),
            offset_of!(SseDecoder, state),
            offset_of!(SseDecoder, has_data),
            offset_of!(SseDecoder, pending_cr),
            offset_of!(SseDecoder, bom_matched),
            offset_of!(SseDecoder, event_type_overflow),
            offset_of!(SseDecoder, event_type_len),
            offset_of!(SseDecoder, max_event_bytes),
        ]
        .into_iter()
        .min();
        assert_eq!(
            first,
            Some(size_of::<SseDecoder>() - crate::parse::WHOLE_FRAME_BYTES)
        );
    }

    fn decode(chunks: &[&[u8]]) -> (Vec<(String, String)>, u64) {
        let mut d = SseDecoder::new(64);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut |t: &[u8], data: &[u8]| {
                out.push((
                    String::from_utf8_lossy(t).into_owned(),
                    String::from_utf8_lossy(data).into_owned(),
                ))
            });
        }
        (out, d.oversized_events())
    }

    fn ev(t: &str, d: &str) -> (String, String) {
        (t.to_owned(), d.to_owned())
    }

    #[test]
    fn line_endings_are_equivalent() {
        for text in [
            &b"event: a\ndata: x\n\n"[..],
            b"event: a\r\ndata: x\r\n\r\n",
            b"event: a\rdata: x\r\r",
        ] {
            assert_eq!(decode(&[text]).0, vec![ev("a", "x")]);
            // The same bytes one at a time.
            let bytes: Vec<&[u8]> = text.chunks(1).collect();
            assert_eq!(decode(&bytes).0, vec![ev("a", "x")]);
        }
    }

    #[test]
    fn crlf_split_between_chunks_is_one_terminator() {
        let (events, _) = decode(&[b"data: 1\r", b"\n\r", b"\ndata: 2\r\n\r\n"]);
        assert_eq!(events, vec![ev("message", "1"), ev("message", "2")]);
    }

    #[test]
    fn multi_line_data_comments_and_fields() {
        let (events, _) = decode(&[b": keep-alive\nid: 7\nretry: 10\ndata:a\ndata: b\ndata\n\n"]);
        assert_eq!(events, vec![ev("message", "a\nb\n")]);
    }

    #[test]
    fn empty_data_is_not_dispatched_and_type_resets() {
        let (events, _) = decode(&[b"event: x\ndata:\n\ndata: y\n\n"]);
        assert_eq!(events, vec![ev("message", "y")]);
    }

    #[test]
    fn unterminated_event_is_discarded() {
        let (events, _) = decode(&[b"data: 1\n\ndata: 2\n"]);
        assert_eq!(events, vec![ev("message", "1")]);
    }

    #[test]
    fn bom_is_stripped_even_when_split() {
        let (events, _) = decode(&[b"\xEF", b"\xBB", b"\xBFdata: z\n\n"]);
        assert_eq!(events, vec![ev("message", "z")]);
    }

    #[test]
    fn oversized_event_is_skipped_and_counted() {
        let big = vec![b'x'; 100];
        let mut text = b"data: ".to_vec();
        text.extend_from_slice(&big);
        text.extend_from_slice(b"\n\ndata: after\n\n");
        let (events, skipped) = decode(&[&text]);
        assert_eq!(events, vec![ev("message", "after")]);
        assert_eq!(skipped, 1);
    }

    #[test]
    fn long_field_names_and_event_types_are_not_misread() {
        let (events, _) = decode(&[b"datadatadata: no\ndata: yes\n\n"]);
        assert_eq!(events, vec![ev("message", "yes")]);
        let long_type = format!("event: {}\ndata: d\n\n", "t".repeat(100));
        let (events, _) = decode(&[long_type.as_bytes()]);
        assert_eq!(events, vec![ev("", "d")]);
    }

    /// A sink that recognises every data line up to its line break, as a template would.
    #[derive(Default)]
    struct Recognising {
        events: Vec<(String, String)>,
        recognised: Option<(String, String)>,
    }

    impl EventSink for Recognising {
        fn event(&mut self, event_type: &[u8], data: &[u8]) {
            self.events.push((
                String::from_utf8_lossy(event_type).into_owned(),
                String::from_utf8_lossy(data).into_owned(),
            ));
        }

        fn recognise(&mut self, event_type: &[u8], rest: &[u8]) -> Option<usize> {
            let len = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
            self.recognised = Some((
                String::from_utf8_lossy(event_type).into_owned(),
                String::from_utf8_lossy(&rest[..len]).into_owned(),
            ));
            Some(len)
        }

        fn accept(&mut self) {
            let event = self.recognised.take().expect("recognised before accepted");
            self.events.push(event);
        }
    }

    #[test]
    fn recognised_events_are_the_events_the_state_machine_gives() {
        let texts: [&[u8]; 12] = [
            b"data: a\n\ndata: b\n\n",
            b"data:a\r\n\r\ndata:  b\r\n\r\n",
            b"data: a\r\rdata: b\r\r\n",
            b"data: a\n\r\ndata: b\r\n\n",
            b"event: x\ndata: a\n\ndata: b\n\n",
            b"data: a\ndata: b\n\n",
            b"data: a\n: comment\n\n",
            b"data: \n\ndata:\n\n",
            b"data: 0123456789012345678901234567890123456789012345678901234567890123456789\n\n",
            b"data: a\r",
            b"data: a\n",
            b"datum: a\n\ndata\n\n",
        ];
        for text in texts {
            for cut in 0..=text.len() {
                let mut plain = Vec::new();
                let mut d = SseDecoder::new(64);
                for part in [&text[..cut], &text[cut..], b"\n\n"] {
                    d.feed(part, &mut |t: &[u8], data: &[u8]| {
                        plain.push((
                            String::from_utf8_lossy(t).into_owned(),
                            String::from_utf8_lossy(data).into_owned(),
                        ))
                    });
                }
                let mut sink = Recognising::default();
                let mut r = SseDecoder::new(64);
                for part in [&text[..cut], &text[cut..], b"\n\n"] {
                    r.feed(part, &mut sink);
                }
                let what = String::from_utf8_lossy(text);
                assert_eq!(sink.events, plain, "{what:?} cut at {cut}");
                assert_eq!(r.oversized_events(), d.oversized_events(), "{what:?}");
                assert_eq!(r.at_event_boundary(), d.at_event_boundary(), "{what:?}");
            }
        }
    }

    #[test]
    fn invalid_utf8_passes_through_without_panic() {
        let (events, _) = decode(&[b"data: \xff\xfe\n\n"]);
        assert_eq!(events.len(), 1);
    }

    /// What [`SseDecoder::whole_frame`] takes for a whole event (with no line break in its
    /// data) is the one event the state machine dispatches for the frame, after whatever came
    /// before, and the decoder is left as the state machine leaves it.
    #[test]
    fn whole_frames_are_the_events_the_state_machine_gives() {
        let long_type = format!("event: {}\ndata: a\n\n", "t".repeat(70));
        let frames: [&[u8]; 20] = [
            b"data: a\n\n",
            b"data:a\r\n\r\n",
            b"data:  a\n\n",
            b"event: x\ndata: a\n\n",
            b"event:x\r\ndata: a\r\n\r\n",
            b"event: x\rdata: a\n\n",
            b"event:\ndata: a\n\n",
            b"event: \ndata: a\n\n",
            long_type.as_bytes(),
            b"data: a\r\n\n",
            b"data: a\nb\n\n",
            b"data: a\rb\n\n",
            b"event: x\n\n",
            b"data: \n\n",
            b"data: a\n\ndata: b\n\n",
            b"datum: a\n\n",
            b"event: x\ndata: a\ndata: b\n\n",
            b"event: x\nid: 1\ndata: a\n\n",
            b"data: 0123456789012345678901234567890123456789012345678901234567890123456789\n\n",
            b"events: x\ndata: a\n\n",
        ];
        let befores: [&[u8]; 8] = [
            b"",
            b"data: z\n\n",
            b"event: y\n",
            b": c",
            b"data: z\n",
            b"data: z\r",
            b"\xEF\xBB",
            b"ev",
        ];
        type Events = Vec<(Vec<u8>, Vec<u8>)>;
        let run = |d: &mut SseDecoder, bytes: &[u8], out: &mut Events| {
            d.feed(bytes, &mut |t: &[u8], data: &[u8]| {
                out.push((t.to_vec(), data.to_vec()))
            });
        };
        let mut taken = 0;
        for before in befores {
            for frame in frames {
                let (mut fast, mut plain) = (SseDecoder::new(64), SseDecoder::new(64));
                let (mut fast_events, mut plain_events) = (Vec::new(), Vec::new());
                run(&mut fast, before, &mut fast_events);
                run(&mut plain, before, &mut plain_events);
                run(&mut plain, frame, &mut plain_events);
                let whole = fast
                    .whole_frame(frame)
                    .filter(|(_, data)| !data.iter().any(|&b| b == b'\n' || b == b'\r'))
                    .map(|(t, data)| (t.to_vec(), data.to_vec()));
                match whole {
                    Some(event) => {
                        fast.whole_frame_taken();
                        fast_events.push(event);
                        taken += 1;
                    }
                    None => run(&mut fast, frame, &mut fast_events),
                }
                for after in [&b"data: next\n\n"[..], b"\n"] {
                    run(&mut fast, after, &mut fast_events);
                    run(&mut plain, after, &mut plain_events);
                }
                let what = (
                    String::from_utf8_lossy(before),
                    String::from_utf8_lossy(frame),
                );
                assert_eq!(fast_events, plain_events, "{what:?}");
                assert_eq!(
                    fast.oversized_events(),
                    plain.oversized_events(),
                    "{what:?}"
                );
                assert_eq!(fast.at_event_boundary(), plain.at_event_boundary());
            }
        }
        assert!(taken >= 18, "{taken} frames taken whole");
    }
}
