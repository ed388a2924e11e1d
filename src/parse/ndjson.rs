//! An incremental decoder for newline-delimited JSON (`application/x-ndjson`, as Ollama streams).

use memchr::memchr;

/// Splits a byte stream into lines; a trailing `\r` and surrounding whitespace are trimmed and
/// empty lines skipped. A line that is complete inside one chunk is handed over without a copy.
#[derive(Debug)]
pub(crate) struct NdjsonDecoder {
    line: Vec<u8>,
    oversized: bool,
    max_event_bytes: usize,
    oversized_events: u64,
}

impl NdjsonDecoder {
    pub(crate) fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            oversized: false,
            max_event_bytes,
            oversized_events: 0,
        }
    }

    pub(crate) fn oversized_events(&self) -> u64 {
        self.oversized_events
    }

    pub(crate) fn at_line_start(&self) -> bool {
        self.line.is_empty() && !self.oversized
    }

    pub(crate) fn feed(&mut self, mut buf: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) {
        while let Some(i) = memchr(b'\n', buf) {
            if self.line.is_empty() && !self.oversized {
                if i > self.max_event_bytes {
                    self.oversized_events += 1;
                } else {
                    emit(&buf[..i], on_event);
                }
            } else {
                self.push(&buf[..i]);
                self.finish_line(on_event);
            }
            buf = &buf[i + 1..];
        }
        if !buf.is_empty() {
            self.push(buf);
        }
    }

    /// End of stream: a last line without a newline is still a complete JSON value.
    pub(crate) fn finish(&mut self, on_event: &mut impl FnMut(&[u8], &[u8])) {
        if !self.line.is_empty() || self.oversized {
            self.finish_line(on_event);
        }
    }

    fn push(&mut self, part: &[u8]) {
        if self.oversized {
            return;
        }
        if self.line.len() + part.len() > self.max_event_bytes {
            self.oversized = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn finish_line(&mut self, on_event: &mut impl FnMut(&[u8], &[u8])) {
        if self.oversized {
            self.oversized_events += 1;
            self.oversized = false;
        } else {
            emit(&self.line, on_event);
        }
        self.line.clear();
        // As the SSE decoder does: one long line does not pin its size for the rest of the
        // stream.
        if self.line.capacity() > super::sse::RETAINED_CAPACITY {
            self.line.shrink_to(super::sse::RETAINED_CAPACITY);
        }
    }
}

fn emit(line: &[u8], on_event: &mut impl FnMut(&[u8], &[u8])) {
    let line = line.trim_ascii();
    if !line.is_empty() {
        on_event(b"", line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long line's buffer is given back once the line ends, down to what the SSE decoder
    /// keeps.
    #[test]
    fn a_long_line_does_not_pin_its_buffer() {
        let mut decoder = NdjsonDecoder::new(crate::parse::DEFAULT_MAX_EVENT_BYTES);
        let mut lines = 0;
        decoder.feed(&vec![b'x'; 900_000], &mut |_, _| lines += 1);
        decoder.feed(b"\n{}\n", &mut |_, _| lines += 1);
        assert_eq!(lines, 2);
        assert!(decoder.line.capacity() <= crate::parse::sse::RETAINED_CAPACITY);
    }

    #[test]
    fn lines_split_anywhere_give_the_same_lines() {
        let text = b"{\"a\":1}\r\n\n{\"b\":2}\n{\"c\":3}";
        let whole = collect(&[text]);
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(whole, collect(&bytes));
        assert_eq!(whole, vec!["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
    }

    #[test]
    fn oversized_lines_are_counted() {
        let mut d = NdjsonDecoder::new(4);
        let mut n = 0;
        d.feed(b"12345678\n12", &mut |_, _| n += 1);
        d.feed(b"345\n{}\n", &mut |_, _| n += 1);
        assert_eq!((n, d.oversized_events()), (1, 2));
    }

    fn collect(chunks: &[&[u8]]) -> Vec<String> {
        let mut d = NdjsonDecoder::new(1024);
        let mut out = Vec::new();
        let mut push = |_: &[u8], l: &[u8]| out.push(String::from_utf8_lossy(l).into_owned());
        for c in chunks {
            d.feed(c, &mut push);
        }
        d.finish(&mut push);
        out
    }
}
