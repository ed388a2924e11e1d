//! The per-event fast path: event templates learnt from the stream itself.
//!
//! The chunks of one stream are nearly the same bytes each time. An OpenAI chat chunk repeats its
//! `id`, `created`, `model` and `system_fingerprint` and differs only in `delta.content`; an
//! Anthropic `content_block_delta` only in `delta.text`; a Responses text delta in `delta` and
//! `sequence_number`. So once an event has been read by the full (serde) path, it is kept as a
//! template: its bytes with a few *holes* cut out, the values that change from chunk to chunk.
//! A later event that equals the template outside its holes, with a well-formed value in each
//! hole, means exactly what the template's reading says: its only difference from the template
//! is string or integer values that the reading does not look at, or only tests for emptiness
//! (holes are cut only under the keys listed below, which is why). Matching is two or three
//! `memcmp`s and a scan of the text, instead of a JSON parse.
//!
//! How the answer depends on the holes is tried out when the template is learnt: the event is
//! read again, by the same code and on a copy of the summary, with every hole emptied, and once
//! more for each text hole with that hole filled. A template is kept only if those readings
//! change nothing in the summary: no usage, and no error, model or format that is not already
//! recorded (the first one seen is kept, so such a reading stays without effect for the rest of
//! the stream). Events that record anything keep the full path. So do events a template does not
//! match or whose hole values a scan is unsure of: a miss costs speed, never correctness.

use memchr::memchr;

use super::StreamSummary;
use super::provider::interpret;

/// Templates kept at once: enough for a stream whose events alternate between a few shapes
/// (several choices, interleaved providers in tests) without evicting each other.
const SLOTS: usize = 4;
/// Holes per template.
const MAX_HOLES: usize = 4;
/// Larger events are not learnt: chunks worth a template are a few hundred bytes.
const MAX_TEMPLATE_BYTES: usize = 1024;
/// A probe event is the learnt event with its holes emptied and at most one byte put in.
const SCRATCH_BYTES: usize = MAX_TEMPLATE_BYTES + 1;
/// Event types are compared whole; longer ones are not learnt.
const EVENT_TYPE_CAP: usize = 64;
/// Most events between two learning attempts after repeated failures.
const MAX_BACKOFF: u64 = 1024;

/// String values under these keys are only ever tested for emptiness by [`interpret`] (delta
/// text, reasoning, refusals, tool arguments), so they may vary in a template. Which of them
/// actually decide whether an event carries content is found by trying them out.
const TEXT_KEYS: [&[u8]; 9] = [
    b"content",
    b"text",
    b"delta",
    b"refusal",
    b"reasoning_content",
    b"reasoning",
    b"thinking",
    b"partial_json",
    b"arguments",
];
/// String values under these keys are never read by [`interpret`]; they change on every chunk.
const IGNORED_STRING_KEYS: [&[u8]; 1] = [b"obfuscation"];
/// Integer values under these keys are never read by [`interpret`]; they change on every chunk.
const IGNORED_INTEGER_KEYS: [&[u8]; 1] = [b"sequence_number"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    /// A string whose emptiness decides whether the event carries content.
    Text,
    /// A string whose value does not matter.
    String,
    /// A non-negative integer whose value does not matter.
    Integer,
}

#[derive(Debug)]
struct Template {
    /// The length of the template event's bytes with the hole values cut out, kept in this
    /// slot's part of the arena.
    len: usize,
    /// Where each hole sits in those bytes, in order.
    holes: [(usize, Hole); MAX_HOLES],
    hole_count: usize,
    event_type: [u8; EVENT_TYPE_CAP],
    event_type_len: usize,
    /// Whether the template was read by the OpenAI chat view (see [`interpret`]).
    chat: bool,
    /// Whether its bytes hold no line break, so that it can match the start of an SSE line.
    one_line: bool,
    /// The answer when every text hole is empty.
    base: bool,
    live: bool,
    /// The event count when this template was last learnt or matched (for eviction).
    last_used: u64,
    /// Events matched since it was learnt.
    hits: u64,
}

impl Default for Template {
    fn default() -> Self {
        Self {
            len: 0,
            holes: [(0, Hole::String); MAX_HOLES],
            hole_count: 0,
            event_type: [0; EVENT_TYPE_CAP],
            event_type_len: 0,
            chat: false,
            one_line: false,
            base: false,
            live: false,
            last_used: 0,
            hits: 0,
        }
    }
}

impl Template {
    /// Whether the start of `data` is this template with well-formed hole values; if so, the
    /// length matched and whether it carries content.
    #[inline(always)]
    fn read(
        &self,
        bytes: &[u8],
        event_type: &[u8],
        data: &[u8],
        chat: bool,
    ) -> Option<(usize, bool)> {
        if !self.live
            || self.chat != chat
            || !same_bytes(event_type, &self.event_type[..self.event_type_len])
        {
            return None;
        }
        let bytes = bytes.get(..self.len)?;
        let mut content = self.base;
        let mut pos = 0;
        let mut literal_start = 0;
        for &(at, hole) in &self.holes[..self.hole_count] {
            let literal = bytes.get(literal_start..at)?;
            if data.get(pos..pos + literal.len())? != literal {
                return None;
            }
            pos += literal.len();
            let rest = data.get(pos..)?;
            let len = if hole == Hole::Integer {
                scan_integer(rest)?
            } else {
                scan_string(rest)?
            };
            content |= hole == Hole::Text && len > 0;
            pos += len;
            literal_start = at;
        }
        let literal = bytes.get(literal_start..)?;
        (data.get(pos..pos + literal.len())? == literal).then_some((pos + literal.len(), content))
    }
}

/// The templates of one stream, and when to try learning the next one.
#[derive(Debug)]
pub(crate) struct Templates {
    slots: [Template; SLOTS],
    /// The slots' bytes, `MAX_TEMPLATE_BYTES` each, then room for a probe event: allocated
    /// once with the parser, so that learning never allocates while frames are polled.
    arena: Box<[u8]>,
    /// What [`recognise`](Self::recognise) found, for [`accept`](Self::accept): the slot and
    /// whether the event carries content.
    recognised: (usize, bool),
    /// Whether any slot holds a one-line template (else there is nothing to recognise).
    one_line: bool,
    /// No learning before this event count.
    next_attempt: u64,
    backoff: u64,
}

impl Templates {
    pub(crate) fn new() -> Self {
        Self {
            slots: Default::default(),
            arena: vec![0; SLOTS * MAX_TEMPLATE_BYTES + SCRATCH_BYTES].into_boxed_slice(),
            recognised: (0, false),
            one_line: false,
            next_attempt: 0,
            backoff: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn disable(&mut self) {
        self.next_attempt = u64::MAX;
    }

    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.slots.iter().map(|s| s.hits).sum()
    }

    /// The answer for an event that matches a template, without parsing it.
    pub(crate) fn read(
        &mut self,
        event_type: &[u8],
        data: &[u8],
        chat: bool,
        events: u64,
    ) -> Option<bool> {
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.live {
                continue;
            }
            let bytes = self.arena.get(i * MAX_TEMPLATE_BYTES..)?;
            if let Some((len, content)) = slot.read(bytes, event_type, data, chat) {
                if len == data.len() {
                    slot.last_used = events;
                    slot.hits += 1;
                    return Some(content);
                }
            }
        }
        None
    }

    /// The length of the event data at the start of `rest` that a one-line template matches,
    /// if any; [`accept`](Self::accept) then records the event as matched.
    pub(crate) fn recognise(
        &mut self,
        event_type: &[u8],
        rest: &[u8],
        chat: bool,
    ) -> Option<usize> {
        if !self.one_line {
            return None;
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if !slot.one_line {
                continue;
            }
            let bytes = self.arena.get(i * MAX_TEMPLATE_BYTES..)?;
            if let Some((len, content)) = slot.read(bytes, event_type, rest, chat) {
                // A line break must follow (the decoder checks): then this is the whole data.
                self.recognised = (i, content);
                return Some(len);
            }
        }
        None
    }

    /// Records the event last recognised, numbered `events`. Returns whether it carried
    /// content.
    pub(crate) fn accept(&mut self, events: u64) -> bool {
        let (i, content) = self.recognised;
        if let Some(slot) = self.slots.get_mut(i) {
            slot.last_used = events;
            slot.hits += 1;
        }
        content
    }

    /// After `interpret` read a content event that no template matched, tries to make a
    /// template of it. `summary` is the state after that reading.
    pub(crate) fn learn(
        &mut self,
        summary: &StreamSummary,
        event_type: &[u8],
        data: &[u8],
        chat: bool,
    ) {
        let events = summary.events();
        if events < self.next_attempt
            || data.len() > MAX_TEMPLATE_BYTES
            || event_type.len() > EVENT_TYPE_CAP
        {
            return;
        }
        // A slot read by the other view can never match again: the chat view, once chosen,
        // stays chosen for the stream.
        let index = self
            .slots
            .iter()
            .position(|s| s.live && s.chat != chat)
            .or_else(|| self.slots.iter().position(|s| !s.live))
            .unwrap_or_else(|| {
                let oldest = self.slots.iter().map(|s| s.last_used).min().unwrap_or(0);
                self.slots
                    .iter()
                    .position(|s| s.last_used == oldest)
                    .unwrap_or(0)
            });
        let evicted_unused = self.slots[index].live && self.slots[index].hits == 0;
        let (slots_bytes, scratch) = self.arena.split_at_mut(SLOTS * MAX_TEMPLATE_BYTES);
        let Some(bytes) = slots_bytes.chunks_exact_mut(MAX_TEMPLATE_BYTES).nth(index) else {
            return;
        };
        let learnt = learn_into(
            &mut self.slots[index],
            bytes,
            scratch,
            summary,
            event_type,
            data,
            chat,
        );
        // Back off while learning fails, or while templates are replaced before any use (more
        // shapes than slots), so that such a stream pays for a few attempts only.
        self.backoff = if learnt && !evicted_unused {
            0
        } else {
            (self.backoff * 2).clamp(1, MAX_BACKOFF)
        };
        self.next_attempt = events + self.backoff;
        self.one_line = self.slots.iter().any(|s| s.one_line);
    }
}

/// Makes a template of `data` in `slot` (its bytes going to `bytes`) if the probes allow it;
/// returns whether it did. A slot is left as it was when they do not.
fn learn_into(
    slot: &mut Template,
    bytes: &mut [u8],
    scratch: &mut [u8],
    summary: &StreamSummary,
    event_type: &[u8],
    data: &[u8],
    chat: bool,
) -> bool {
    let mut holes = [(0, 0, Hole::String); MAX_HOLES];
    let count = find_holes(data, &mut holes);
    if count == 0 {
        // It would only match the very same event.
        return false;
    }
    let holes = &mut holes[..count];
    let Some(base) = probe(summary, scratch, event_type, data, holes, None, chat) else {
        return false;
    };
    for i in 0..holes.len() {
        if holes[i].2 != Hole::Text {
            continue;
        }
        match probe(summary, scratch, event_type, data, holes, Some(i), chat) {
            // Filling this hole makes the event carry content.
            Some(true) if !base => {}
            // Its value does not change the answer.
            Some(filled) if filled == base => holes[i].2 = Hole::String,
            _ => return false,
        }
    }
    // The event itself must read as the template says it does (it carried content).
    if !(base || holes.iter().any(|&(s, e, h)| h == Hole::Text && e > s)) {
        return false;
    }
    // The slot's template is replaced only now, by one that passed.
    slot.live = false;
    slot.one_line = false;
    let mut len = 0;
    let mut at = 0;
    for (i, &(start, end, hole)) in holes.iter().enumerate() {
        let Some(len_after) = put(bytes, len, &data[at..start]) else {
            return false;
        };
        len = len_after;
        slot.holes[i] = (len, hole);
        at = end;
    }
    let Some(len) = put(bytes, len, &data[at..]) else {
        return false;
    };
    slot.len = len;
    slot.hole_count = holes.len();
    slot.event_type[..event_type.len()].copy_from_slice(event_type);
    slot.event_type_len = event_type.len();
    slot.chat = chat;
    slot.one_line = !bytes[..len].iter().any(|&b| b == b'\n' || b == b'\r');
    slot.base = base;
    slot.last_used = summary.events();
    slot.hits = 0;
    slot.live = true;
    true
}

/// Reads `data` with its holes emptied (integers set to 0), and hole `filled` set to `"x"`, on a
/// copy of `summary`. `None` if the reading changed the summary in any way: such an event is
/// not one a template may stand for.
fn probe(
    summary: &StreamSummary,
    scratch: &mut [u8],
    event_type: &[u8],
    data: &[u8],
    holes: &[(usize, usize, Hole)],
    filled: Option<usize>,
    chat: bool,
) -> Option<bool> {
    let mut len = 0;
    let mut at = 0;
    for (i, &(start, end, hole)) in holes.iter().enumerate() {
        len = put(scratch, len, &data[at..start])?;
        if hole == Hole::Integer {
            len = put(scratch, len, b"0")?;
        } else if filled == Some(i) {
            len = put(scratch, len, b"x")?;
        }
        at = end;
    }
    len = put(scratch, len, &data[at..])?;
    let mut trial = summary.probe();
    let content = interpret(&mut trial, event_type, &scratch[..len], chat);
    trial.same_as(&summary.probe()).then_some(content)
}

/// Copies `part` into `buf` at `at`; returns the end, or `None` when it does not fit.
fn put(buf: &mut [u8], at: usize, part: &[u8]) -> Option<usize> {
    let end = at + part.len();
    buf.get_mut(at..end)?.copy_from_slice(part);
    Some(end)
}

/// Finds the values that may become holes: strings under [`TEXT_KEYS`] and
/// [`IGNORED_STRING_KEYS`] (the bytes between the quotes) and plain integers under
/// [`IGNORED_INTEGER_KEYS`]. `data` is JSON that serde_json has just accepted.
fn find_holes(data: &[u8], holes: &mut [(usize, usize, Hole); MAX_HOLES]) -> usize {
    let mut count = 0;
    let mut key: &[u8] = b"";
    let mut after_colon = false;
    let mut i = 0;
    while i < data.len() && count < MAX_HOLES {
        match data[i] {
            b'"' => {
                let start = i + 1;
                let Some(end) = string_end(data, start) else {
                    return count;
                };
                let next = data[end + 1..]
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .map(|p| end + 1 + p);
                if next.is_some_and(|n| data[n] == b':') {
                    key = &data[start..end];
                    after_colon = true;
                    i = next.map_or(data.len(), |n| n + 1);
                    continue;
                }
                if after_colon {
                    if TEXT_KEYS.contains(&key) {
                        holes[count] = (start, end, Hole::Text);
                        count += 1;
                    } else if IGNORED_STRING_KEYS.contains(&key) {
                        holes[count] = (start, end, Hole::String);
                        count += 1;
                    }
                }
                after_colon = false;
                i = end + 1;
            }
            b'-' | b'0'..=b'9' => {
                let len = data[i..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .unwrap_or(data.len() - i);
                if after_colon
                    && IGNORED_INTEGER_KEYS.contains(&key)
                    && scan_integer(&data[i..]) == Some(len)
                {
                    holes[count] = (i, i + len, Hole::Integer);
                    count += 1;
                }
                after_colon = false;
                i += len;
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ => {
                after_colon = false;
                i += 1;
            }
        }
    }
    count
}

/// The index of the quote that closes the string whose contents start at `start`.
fn string_end(data: &[u8], mut start: usize) -> Option<usize> {
    loop {
        let quote = start + memchr(b'"', data.get(start..)?)?;
        let backslashes = data[start..quote]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return Some(quote);
        }
        start = quote + 1;
    }
}

/// `a == b`, without a call to `memcmp` for lengths of 4 to 16 (`message`, the usual event
/// type, among them): the first and last four or eight bytes, overlapping.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        4..8 => quad(&a[..4]) == quad(&b[..4]) && quad(&a[n - 4..]) == quad(&b[n - 4..]),
        8..=16 => word(&a[..8]) == word(&b[..8]) && word(&a[n - 8..]) == word(&b[n - 8..]),
        _ => a == b,
    }
}

/// Four bytes as a number (`bytes` holds four).
fn quad(bytes: &[u8]) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(bytes);
    u32::from_le_bytes(w)
}

/// Eight bytes as a number (`bytes` holds eight).
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

const ONES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONES << 7;

/// The length of the string contents at the start of `s` (up to, not including, the closing
/// quote), if serde_json accepts them whatever it does with the string: no control characters,
/// only valid escapes, valid UTF-8. Escaped UTF-16 surrogates are refused (serde_json rejects a
/// lone one when it decodes a string); the full path reads such text.
#[inline(always)]
pub(crate) fn scan_string(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut ascii = true;
    loop {
        // Eight bytes at a time up to the first quote, backslash, control character or
        // non-ASCII byte. The lowest flagged byte is exact: a borrow only carries out of a byte
        // below 0x20, itself flagged.
        while let Some(bytes) = s.get(i..i + 8) {
            let w = word(bytes);
            let q = w ^ (ONES * u64::from(b'"'));
            let b = w ^ (ONES * u64::from(b'\\'));
            let found = (w.wrapping_sub(ONES * 0x20)
                | (q.wrapping_sub(ONES) & !q)
                | (b.wrapping_sub(ONES) & !b)
                | w)
                & HIGH_BITS;
            if found != 0 {
                i += found.trailing_zeros() as usize / 8;
                break;
            }
            i += 8;
        }
        match *s.get(i)? {
            b'"' => break,
            b'\\' => match *s.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = s.get(i + 2..i + 6)?;
                    let mut code = 0u32;
                    for &h in hex {
                        code = code * 16 + char::from(h).to_digit(16)?;
                    }
                    if (0xD800..=0xDFFF).contains(&code) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            0..=0x1F => return None,
            b => {
                ascii &= b < 0x80;
                i += 1;
            }
        }
    }
    if !ascii {
        std::str::from_utf8(&s[..i]).ok()?;
    }
    Some(i)
}

/// The length of the non-negative integer (`0` or no leading zero) at the start of `s`.
fn scan_integer(s: &[u8]) -> Option<usize> {
    match s.first()? {
        b'0' => Some(1),
        b'1'..=b'9' => Some(
            s.iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(s.len()),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_scanned_as_serde_json_reads_them() {
        for (s, len) in [
            (&b"\"rest"[..], Some(0)),
            (b"abc\"", Some(3)),
            (b"a longer text than eight bytes\",", Some(30)),
            (b"tab\\t and \\\"quote\\\" \\u00e9\"", Some(26)),
            ("caf\u{e9} \u{1F600} more than eight\"".as_bytes(), Some(26)),
            (b"\\\\\"", Some(2)),
            (b"no end", None),
            (b"ctl\x01\"", None),
            (b"new\nline\"", None),
            (b"0123456\x1f\"", None),
            (b"bad\\x\"", None),
            (b"\\u12G4\"", None),
            (b"\\ud83d\\ude00\"", None),
            (b"\xff\xfe\"", None),
            (b"01234567\xc3\"", None),
            (b"\\", None),
            (b"\\u00", None),
        ] {
            assert_eq!(scan_string(s), len, "{}", String::from_utf8_lossy(s));
            if let Some(n) = len {
                let json = [b"\"", &s[..=n]].concat();
                let serde = serde_json::from_slice::<&serde_json::value::RawValue>(&json);
                assert!(serde.is_ok(), "{}", String::from_utf8_lossy(s));
            }
        }
    }

    #[test]
    fn integers() {
        assert_eq!(scan_integer(b"0,"), Some(1));
        assert_eq!(scan_integer(b"1234}"), Some(4));
        assert_eq!(scan_integer(b"77"), Some(2));
        assert_eq!(scan_integer(b"-1,"), None);
        assert_eq!(scan_integer(b","), None);
    }

    #[test]
    fn holes_are_found_under_their_keys_only() {
        let data = br#"{"type":"x","sequence_number":12,"delta":"a\"b","content":[{"text":"t"}],"n":"content","obfuscation":"zz"}"#;
        let mut holes = [(0, 0, Hole::String); MAX_HOLES];
        let n = find_holes(data, &mut holes);
        let found: Vec<(&[u8], Hole)> = holes[..n]
            .iter()
            .map(|&(s, e, h)| (&data[s..e], h))
            .collect();
        assert_eq!(
            found,
            vec![
                (&b"12"[..], Hole::Integer),
                (b"a\\\"b", Hole::Text),
                (b"t", Hole::Text),
                (b"zz", Hole::String),
            ]
        );
    }
}
