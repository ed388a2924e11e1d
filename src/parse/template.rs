//! The per-event fast path: event templates, learnt from the streams themselves and shared by
//! the streams of a thread.
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
//! `memcmp`s and a scan of the text, instead of a JSON parse; for a stream's own one-hole
//! template (the usual one), a hash of the event's bytes around the hole compared with the
//! template's, so that the template's bytes, cold by the stream's next event, are not read
//! (see [`Slot`]): bytes that differ hash alike only by chance, about 2^-64, the hash's seeds
//! being secret and drawn per process.
//!
//! How the answer depends on the holes is tried out when the template is learnt: the event is
//! read again, by the same code and on a fresh summary, with every hole emptied, once more for
//! each text hole with that hole filled, and once with every other hole filled. A template is
//! kept only if those readings agree and record nothing but a provider format and a model: its
//! *effects*, which a match replays (they take hold only in a stream that has none yet, as with
//! the full reading, the first one seen being kept). Events that record usage, an error or a
//! malformed event keep the full path. So do events a template does not match or whose hole
//! values a scan is unsure of: a miss costs speed, never correctness.
//!
//! Since a template's reading was tried on a fresh summary and owes nothing to the stream it was
//! learnt from, the streams of a thread share them: a small per-thread cache that a stream
//! consults when none of its own templates matches, so that most streams verify nothing. For
//! that, the values a stream repeats in every event but that differ between streams (`id`,
//! `created`, `system_fingerprint`, Responses `item_id`, Gemini `responseId`) are holes in the
//! shared template; they are never read by [`interpret`], and the stream's own copy has them
//! filled in with its values, so that matching stays a `memcmp`. The model is never a hole: a
//! template stands for one model, whose name its reading records.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hasher};

use memchr::memchr;

use super::provider::{chat_view, interpret};
use super::sse::MESSAGE;
use super::{ModelName, ProviderFormat, StreamSummary};

/// Templates a stream keeps at once: enough for a stream whose events alternate between a few
/// shapes (several choices, interleaved providers in tests) without evicting each other.
const SLOTS: usize = 4;
/// Holes per template.
const MAX_HOLES: usize = 8;
/// Larger events are not learnt: chunks worth a template are a few hundred bytes.
const MAX_TEMPLATE_BYTES: usize = 1024;
/// A probe event is the learnt event with its holes emptied and at most one byte put in each.
const SCRATCH_BYTES: usize = MAX_TEMPLATE_BYTES + MAX_HOLES;
/// Event types are compared whole; longer ones are not learnt.
const EVENT_TYPE_CAP: usize = 64;
/// Most events between two learning attempts after repeated failures.
const MAX_BACKOFF: u64 = 1024;
/// Templates a thread keeps for its streams to share, the least recently used replaced first.
/// With their bytes (`MAX_TEMPLATE_BYTES` each) and the probe buffer that is about 22 KiB per
/// thread that has parsed a stream, allocated once, with the thread's first parser.
const SHARED_TEMPLATES: usize = 16;
/// Shapes of events without content remembered per thread (see [`Shared::seen`]).
const SEEN: usize = 16;

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
/// String values under these keys are never read by [`interpret`]; they change on every chunk
/// (Ollama's `created_at` is a timestamp string).
const IGNORED_STRING_KEYS: [&[u8]; 2] = [b"obfuscation", b"created_at"];
/// Integer values under these keys are never read by [`interpret`]; they change on every chunk.
const IGNORED_INTEGER_KEYS: [&[u8]; 1] = [b"sequence_number"];
/// String values under these keys are never read by [`interpret`]; a stream repeats them in
/// every event, and they differ from stream to stream.
const STREAM_STRING_KEYS: [&[u8]; 4] = [b"id", b"system_fingerprint", b"item_id", b"responseId"];
/// The same for integers: OpenAI chat's `created`, Responses' `created_at`.
const STREAM_INTEGER_KEYS: [&[u8]; 2] = [b"created", b"created_at"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    /// A string whose emptiness decides whether the event carries content.
    Text,
    /// A string whose value does not matter.
    String,
    /// A non-negative integer whose value does not matter.
    Integer,
    /// A string whose value does not matter and that a stream repeats: a hole in a shared
    /// template, filled in by the stream's value in the stream's copy.
    StreamString,
    /// The same for an integer.
    StreamInteger,
}

impl Hole {
    fn integer(self) -> bool {
        matches!(self, Self::Integer | Self::StreamInteger)
    }

    /// The kind of hole a stream's copy keeps when it leaves a per-stream value a hole.
    fn varying(self) -> Self {
        match self {
            Self::StreamString => Self::String,
            Self::StreamInteger => Self::Integer,
            other => other,
        }
    }
}

/// What reading a template's event records besides content: the provider format and the model
/// (`Unknown` and `None` when it records none).
#[derive(Debug, Clone, Copy, Default)]
struct Effects {
    format: ProviderFormat,
    model: Option<ModelName>,
}

impl Effects {
    /// Records them as the full reading does: only where the stream has none yet.
    #[inline(always)]
    fn apply(&self, summary: &mut StreamSummary) {
        summary.detect(self.format);
        if summary.model.is_none() {
            summary.model = self.model;
        }
    }

    fn same(&self, other: &Self) -> bool {
        self.format == other.format
            && self.model.as_ref().map(ModelName::as_str)
                == other.model.as_ref().map(ModelName::as_str)
    }
}

/// A template, its bytes kept elsewhere.
///
/// In the order given (`repr(C)`): what matching an event without an `event:` line against a
/// one-hole template reads comes first, in 32 bytes, so that with its slot's own it takes one
/// cache line (ARCHITECTURE.md, The parser's memory).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Shape {
    /// Whether the template was read by the OpenAI chat view (see [`interpret`]).
    chat: bool,
    /// Whether its bytes hold no line break, so that it can match the start of an SSE line.
    one_line: bool,
    /// The answer when every text hole is empty.
    base: bool,
    /// Whether its event type is the default `message`: known without reading `event_type`.
    message: bool,
    /// At most `MAX_HOLES`.
    hole_count: u8,
    /// The length of the template event's bytes with the hole values cut out.
    len: usize,
    /// Where each hole sits in those bytes, in order.
    holes: [(usize, Hole); MAX_HOLES],
    event_type_len: usize,
    event_type: [u8; EVENT_TYPE_CAP],
    effects: Effects,
}

const _: () = assert!(MAX_HOLES <= u8::MAX as usize, "a hole count fits a byte");

impl Default for Shape {
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
            message: false,
            effects: Effects::default(),
        }
    }
}

impl Shape {
    /// [`read`](Self::read) of all of `data`: whether `data` is this template (whose bytes
    /// are `bytes`) with well-formed hole values, and if so whether it carries content. With
    /// one hole (the usual template) the literal after it is taken from the end of `data`,
    /// and the hole must then fill the gap exactly: what `read` finds, in fewer steps. Given
    /// `literals`, the [`literal_hash`] of the template's bytes before and after that hole,
    /// `data`'s are compared by their hash, and `bytes` are not read (see [`Slot`]).
    #[inline(always)]
    fn read_whole(
        &self,
        bytes: &[u8],
        literals: Option<u64>,
        event_type: &[u8],
        data: &[u8],
        chat: bool,
    ) -> Option<bool> {
        if self.hole_count != 1 {
            return self.read_all(bytes, event_type, data, chat);
        }
        // The usual event type, none given, is the decoder's static `message`: known equal to
        // a template's `message` without reading it.
        let message = std::ptr::eq(event_type, &MESSAGE[..]) && self.message;
        if self.chat != chat
            || !(message || same_type(event_type, &self.event_type[..self.event_type_len]))
        {
            return None;
        }
        let (at, hole) = self.holes[0];
        let value_len = data.len().checked_sub(self.len)?;
        let (head, tail) = data.split_at_checked(at + value_len)?;
        let same = match literals {
            Some(hash) => literal_hash(head.get(..at)?, tail) == hash,
            None => tail == bytes.get(at..self.len)? && head.starts_with(bytes.get(..at)?),
        };
        if !same {
            return None;
        }
        let value = &data[at..];
        let len = if hole.integer() {
            scan_integer(value)?
        } else {
            scan_string(value)?
        };
        (len == value_len).then_some(self.base || (hole == Hole::Text && len > 0))
    }

    /// [`read_whole`](Self::read_whole) of a template with several holes: out of line, so that
    /// the one-hole path inlined in `StreamParser::feed` is not charged for its registers.
    #[inline(never)]
    fn read_all(&self, bytes: &[u8], event_type: &[u8], data: &[u8], chat: bool) -> Option<bool> {
        let (len, content) = self.read(bytes, event_type, data, chat, None)?;
        (len == data.len()).then_some(content)
    }

    /// Whether the start of `data` is this template (whose bytes are `bytes`) with well-formed
    /// hole values; if so, the length matched and whether it carries content. `spans`, when
    /// given, receives where each hole's value sits in `data`.
    #[inline(always)]
    fn read(
        &self,
        bytes: &[u8],
        event_type: &[u8],
        data: &[u8],
        chat: bool,
        mut spans: Option<&mut [(usize, usize); MAX_HOLES]>,
    ) -> Option<(usize, bool)> {
        if self.chat != chat || !same_bytes(event_type, &self.event_type[..self.event_type_len]) {
            return None;
        }
        if self.hole_count == 1 && spans.is_none() {
            // The usual template, one text hole: its bytes before and after it.
            let (at, hole) = self.holes[0];
            let rest = data.strip_prefix(bytes.get(..at)?)?;
            let len = if hole.integer() {
                scan_integer(rest)?
            } else {
                scan_string(rest)?
            };
            let rest = rest.get(len..)?.strip_prefix(bytes.get(at..self.len)?)?;
            return Some((
                data.len() - rest.len(),
                self.base || (hole == Hole::Text && len > 0),
            ));
        }
        let mut content = self.base;
        // What is left of `data` past the part matched.
        let mut rest = data;
        let mut literal_start = 0;
        for (k, &(at, hole)) in self.holes[..usize::from(self.hole_count)]
            .iter()
            .enumerate()
        {
            rest = rest.strip_prefix(bytes.get(literal_start..at)?)?;
            let len = if hole.integer() {
                scan_integer(rest)?
            } else {
                scan_string(rest)?
            };
            content |= hole == Hole::Text && len > 0;
            if let Some(spans) = spans.as_deref_mut() {
                let pos = data.len() - rest.len();
                *spans.get_mut(k)? = (pos, pos + len);
            }
            rest = rest.get(len..)?;
            literal_start = at;
        }
        let rest = rest.strip_prefix(bytes.get(literal_start..self.len)?)?;
        Some((data.len() - rest.len(), content))
    }
}

/// One of a stream's templates.
///
/// In the order given, on a cache line of its own: what matching an event reads and writes
/// (the slot's first 32 bytes and its shape's) is that line (ARCHITECTURE.md, The parser's
/// memory). A one-hole template's bytes, which are the stream's own and found cold by each
/// of its events, are not read to match a whole frame: the event's bytes before and after the
/// hole are hashed and compared with `literals`, the hash of the template's.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Slot {
    /// The event count when this template was last learnt or matched (for eviction).
    last_used: u64,
    /// With one hole: the [`literal_hash`] of its bytes before and after the hole.
    literals: u64,
    /// Where its bytes start in the stream's arena (at most `SLOTS * MAX_TEMPLATE_BYTES`).
    start: u32,
    /// Events matched since it was learnt (saturating).
    hits: u32,
    live: bool,
    /// `live` and `shape.one_line`.
    one_line: bool,
    filled_in: bool,
    shape: Shape,
    /// The shared template it is a copy of, and whether the copy has the per-stream values
    /// filled in.
    origin: u64,
}

impl Slot {
    /// This template answered the stream's latest event (counted in `summary` already): its
    /// use noted, and the event's effects applied.
    #[inline(always)]
    fn answered(&mut self, summary: &mut StreamSummary) {
        self.last_used = summary.events;
        self.hits = self.hits.saturating_add(1);
        self.shape.effects.apply(summary);
    }
}

/// The templates of one stream, and when to try learning the next one.
///
/// In the order given: what an event read line by line reads first (the arena and
/// `one_line`), the slots last. A whole frame reads only its slot: the parser keeps its own
/// copy of `one_line` (`StreamParser::answerable`).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Templates {
    /// The slots' bytes, one after another, at most `MAX_TEMPLATE_BYTES` each. Its capacity,
    /// room for all, is reserved with the parser (and not zeroed), so that replacing a template
    /// never allocates while frames are polled.
    arena: Vec<u8>,
    /// Whether any slot holds a one-line template (else there is nothing to recognise).
    one_line: bool,
    /// Whether templates are used at all (tests compare with a parser that uses none).
    enabled: bool,
    /// What [`recognise`](Self::recognise) found, for [`accept`](Self::accept): the slot and
    /// whether the event carries content.
    recognised: (usize, bool),
    /// No learning before this event count.
    next_attempt: u64,
    backoff: u64,
    /// No looking in the thread's templates before this event count: a stream whose events
    /// keep missing them (Gemini's, which all carry usage) looks less and less often.
    next_lookup: u64,
    lookup_backoff: u64,
    slots: [Slot; SLOTS],
    /// Events answered by a template, the stream's or the thread's.
    #[cfg(test)]
    answered: u64,
}

impl Drop for Templates {
    fn drop(&mut self) {
        // The arena goes back to this thread's pool for the next stream.
        super::buffers::give(std::mem::take(&mut self.arena));
    }
}

impl Templates {
    pub(crate) fn new() -> Self {
        // The thread's shared templates are set up now, with the parser, rather than while a
        // frame is polled.
        let _ = SHARED.try_with(|_| ());
        let mut templates = Self::placeholder();
        templates.arena = super::buffers::take(SLOTS * MAX_TEMPLATE_BYTES);
        templates
    }

    /// Templates that own no arena (a pooled parser's placeholder between streams).
    pub(crate) fn placeholder() -> Self {
        Self {
            slots: Default::default(),
            arena: Vec::new(),
            recognised: (0, false),
            one_line: false,
            next_attempt: 0,
            backoff: 0,
            next_lookup: 0,
            lookup_backoff: 0,
            enabled: true,
            #[cfg(test)]
            answered: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn disable(&mut self) {
        self.enabled = false;
        self.next_attempt = u64::MAX;
    }

    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.slots.iter().map(|s| u64::from(s.hits)).sum()
    }

    #[cfg(test)]
    pub(crate) fn answered(&self) -> u64 {
        self.answered
    }

    /// The answer for an event that matches a template, without parsing it; its effects are
    /// recorded in `summary`. The stream's own templates are tried first, then the thread's.
    pub(crate) fn read(
        &mut self,
        summary: &mut StreamSummary,
        event_type: &[u8],
        data: &[u8],
        chat: bool,
    ) -> Option<bool> {
        for slot in &mut self.slots {
            if !slot.live {
                continue;
            }
            let bytes = self.arena.get(slot.start as usize..)?;
            if let Some((len, content)) = slot.shape.read(bytes, event_type, data, chat, None) {
                if len == data.len() {
                    slot.answered(summary);
                    #[cfg(test)]
                    {
                        self.answered += 1;
                    }
                    return Some(content);
                }
            }
        }
        if !self.enabled || summary.events < self.next_lookup {
            return None;
        }
        let found = SHARED
            .try_with(|shared| {
                let mut shared = shared.try_borrow_mut().ok()?;
                let mut spans = [(0, 0); MAX_HOLES];
                let (index, content) = shared.find(event_type, data, chat, &mut spans)?;
                let (shape, bytes, stamp) = shared.entry(index)?;
                shape.effects.apply(summary);
                // A template of the other view than the next event's can never match again in
                // this stream (the chat view, once chosen, stays chosen): it is not copied.
                if shape.chat == chat_view(summary, summary.events + 1) {
                    let slot = self.install(shape, bytes, stamp, data, &spans, summary.events);
                    if let Some(slot) = self.slots.get_mut(slot) {
                        slot.hits = 1;
                    }
                }
                Some(content)
            })
            .ok()
            .flatten();
        self.lookup_backoff = match found {
            Some(_) => 0,
            None => (self.lookup_backoff * 2).clamp(1, MAX_BACKOFF),
        };
        self.next_lookup = summary.events + self.lookup_backoff;
        #[cfg(test)]
        {
            self.answered += u64::from(found.is_some());
        }
        found
    }

    /// Whether any slot holds a one-line template: else [`answer`](Self::answer) finds none.
    #[inline]
    pub(crate) fn one_line(&self) -> bool {
        self.one_line
    }

    /// The answer for an event whose data is `data`, from the stream's one-line templates only;
    /// when there is one the event is recorded as read (its effects and the event count in
    /// `summary`). The caller asks only when [`one_line`](Self::one_line) said there may be
    /// one: a one-hole template's match reads its slot and nothing else of the templates.
    #[inline]
    pub(crate) fn answer(
        &mut self,
        summary: &mut StreamSummary,
        event_type: &[u8],
        data: &[u8],
        chat: bool,
    ) -> Option<bool> {
        for slot in &mut self.slots {
            if !slot.one_line {
                continue;
            }
            // A one-hole template is matched by its hash, not its bytes (see `Slot`).
            let bytes = match slot.shape.hole_count {
                1 => &[][..],
                _ => self.arena.get(slot.start as usize..)?,
            };
            let literals = Some(slot.literals);
            if let Some(content) = slot
                .shape
                .read_whole(bytes, literals, event_type, data, chat)
            {
                summary.events += 1;
                slot.answered(summary);
                #[cfg(test)]
                {
                    self.answered += 1;
                }
                return Some(content);
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
            let bytes = self.arena.get(slot.start as usize..)?;
            if let Some((len, content)) = slot.shape.read(bytes, event_type, rest, chat, None) {
                // A line break must follow (the decoder checks): then this is the whole data.
                self.recognised = (i, content);
                return Some(len);
            }
        }
        None
    }

    /// Records the event last recognised (its effects in `summary`, whose event count includes
    /// it). Returns whether it carried content.
    pub(crate) fn accept(&mut self, summary: &mut StreamSummary) -> bool {
        let (i, content) = self.recognised;
        if let Some(slot) = self.slots.get_mut(i) {
            slot.last_used = summary.events;
            slot.hits = slot.hits.saturating_add(1);
            slot.shape.effects.apply(summary);
        }
        #[cfg(test)]
        {
            self.answered += 1;
        }
        content
    }

    /// After `interpret` read an event that no template matched and that recorded no usage,
    /// error or malformed event, tries to make a template of it. `summary` is the state after
    /// that reading, `content` its answer.
    pub(crate) fn learn(
        &mut self,
        summary: &StreamSummary,
        event_type: &[u8],
        data: &[u8],
        chat: bool,
        content: bool,
    ) {
        let events = summary.events;
        if events < self.next_attempt
            || data.len() > MAX_TEMPLATE_BYTES
            || event_type.len() > EVENT_TYPE_CAP
        {
            return;
        }
        let learnt = SHARED
            .try_with(|shared| {
                let mut shared = shared.try_borrow_mut().ok()?;
                // The thread may know the template already (this stream was not looking).
                let mut spans = [(0, 0); MAX_HOLES];
                let (index, spans) = match shared.find(event_type, data, chat, &mut spans) {
                    Some((index, _)) => (index, spans),
                    None => match shared.learn(event_type, data, chat, content) {
                        Learnt::Skipped => return None,
                        Learnt::Failed => return Some(false),
                        Learnt::Entry(index, spans) => (index, spans),
                    },
                };
                let (shape, bytes, stamp) = shared.entry(index)?;
                // As in `read`: a template of the other view is for the thread's next streams.
                if shape.chat != chat_view(summary, events + 1) {
                    return Some(true);
                }
                let evicted = &self.slots[self.choose(shape.chat, stamp).0];
                let evicted_unused = evicted.live && evicted.hits == 0;
                self.install(shape, bytes, stamp, data, &spans, events);
                Some(!evicted_unused)
            })
            .ok()
            .flatten();
        // Back off while learning fails, or while templates are replaced before any use (more
        // shapes than slots), so that such a stream pays for a few attempts only.
        match learnt {
            None => return,
            Some(true) => self.backoff = 0,
            Some(false) => self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF),
        }
        self.next_attempt = events + self.backoff;
    }

    /// The slot a copy of shared template `stamp` read by the `chat` view goes to, and whether
    /// the per-stream values are filled in.
    fn choose(&self, chat: bool, stamp: u64) -> (usize, bool) {
        // A slot holding a copy of the same template with other per-stream values filled in:
        // they change within this stream, so they stay holes.
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.live && s.origin == stamp && s.filled_in)
        {
            return (i, false);
        }
        // A slot read by the other view can never match again: the chat view, once chosen,
        // stays chosen for the stream.
        let index = self
            .slots
            .iter()
            .position(|s| s.live && s.shape.chat != chat)
            .or_else(|| self.slots.iter().position(|s| !s.live))
            .unwrap_or_else(|| {
                let oldest = self.slots.iter().map(|s| s.last_used).min().unwrap_or(0);
                self.slots
                    .iter()
                    .position(|s| s.last_used == oldest)
                    .unwrap_or(0)
            });
        (index, true)
    }

    /// Copies shared template `stamp` (`shape`, `bytes`), which `data` matched with its hole
    /// values at `spans`, into one of the stream's slots, with this stream's values filled in
    /// its per-stream holes. Returns the slot.
    fn install(
        &mut self,
        shape: &Shape,
        bytes: &[u8],
        stamp: u64,
        data: &[u8],
        spans: &[(usize, usize); MAX_HOLES],
        events: u64,
    ) -> usize {
        let (index, mut fill) = self.choose(shape.chat, stamp);
        let holes = &shape.holes[..usize::from(shape.hole_count)];
        let filled: usize = holes
            .iter()
            .zip(spans)
            .filter(|((_, h), _)| !matches!(h, Hole::Text | Hole::String | Hole::Integer))
            .map(|(_, &(s, e))| e.saturating_sub(s))
            .sum();
        fill &= shape.len + filled <= MAX_TEMPLATE_BYTES;
        // The old bytes go; the others move down, and the new ones are put at the end. Each
        // template taking at most MAX_TEMPLATE_BYTES, they fit in the capacity reserved.
        let slot = &mut self.slots[index];
        if slot.live {
            let (start, len) = (slot.start as usize, slot.shape.len);
            self.arena.drain(start..(start + len).min(self.arena.len()));
            for other in &mut self.slots {
                if other.live && other.start as usize > start {
                    other.start = other.start.saturating_sub(u32::try_from(len).unwrap_or(0));
                }
            }
        }
        self.slots[index].live = false;
        self.slots[index].one_line = false;
        let start = self.arena.len();
        let mut copy = *shape;
        let mut count = 0;
        let mut at = 0;
        let mut copied = true;
        if fill {
            // `data` is the template with the hole values filled in: the copy is `data` without
            // the values that vary.
            for (&(_, hole), &(s, e)) in holes.iter().zip(spans) {
                if hole == hole.varying() {
                    copied &= extend(&mut self.arena, data.get(at..s));
                    copy.holes[count] = (self.arena.len() - start, hole);
                    count += 1;
                    at = e;
                }
            }
            copied &= extend(&mut self.arena, data.get(at..));
        } else {
            for &(pos, hole) in holes {
                copied &= extend(&mut self.arena, bytes.get(at..pos));
                copy.holes[count] = (self.arena.len() - start, hole.varying());
                count += 1;
                at = pos;
            }
            copied &= extend(&mut self.arena, bytes.get(at..shape.len));
        }
        if !copied {
            // Not reached (the spans are those of a match); the slot is left empty.
            self.arena.truncate(start);
        } else {
            copy.hole_count = count as u8;
            copy.len = self.arena.len() - start;
            let bytes = self.arena.get(start..).unwrap_or_default();
            let literals = match (&copy.holes[..count], bytes) {
                (&[(at, _)], bytes) if at <= bytes.len() => {
                    let (before, after) = bytes.split_at(at);
                    literal_hash(before, after)
                }
                _ => 0,
            };
            self.slots[index] = Slot {
                shape: copy,
                literals,
                // The arena holds at most `SLOTS * MAX_TEMPLATE_BYTES`.
                start: u32::try_from(start).unwrap_or(u32::MAX),
                live: true,
                one_line: copy.one_line,
                last_used: events,
                hits: 0,
                origin: stamp,
                filled_in: fill,
            };
        }
        self.one_line = self.slots.iter().any(|s| s.one_line);
        index
    }
}

/// The templates shared by the streams of one thread, and the buffer that probes are built in.
#[derive(Debug)]
struct Shared {
    entries: [Entry; SHARED_TEMPLATES],
    /// The entries' bytes, `MAX_TEMPLATE_BYTES` each.
    bytes: Box<[u8]>,
    scratch: Vec<u8>,
    /// Fingerprints of the events learning was asked for lately, and whether their probes
    /// failed. An event without content (an OpenAI chat stream's first and last chunks) is
    /// worth a template when it recurs in another stream, but many are one-offs: one is learnt
    /// only when seen a second time. A shape whose probes failed is not tried again.
    seen: [(u64, bool); SEEN],
    seen_next: usize,
    /// Counts uses, for eviction.
    clock: u64,
    /// Numbers the templates learnt, so that a stream knows which of its copies came from
    /// which.
    stamps: u64,
}

#[derive(Debug, Default)]
struct Entry {
    shape: Shape,
    live: bool,
    last_used: u64,
    stamp: u64,
}

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared::new());
}

/// Shared templates learnt on this thread so far.
#[cfg(test)]
pub(crate) fn shared_learnt() -> u64 {
    SHARED.with(|s| s.borrow().stamps)
}

enum Learnt {
    /// Not tried.
    Skipped,
    /// Tried, and the probes did not allow a template.
    Failed,
    /// The entry learnt, and where each hole's value sits in the event.
    Entry(usize, [(usize, usize); MAX_HOLES]),
}

/// Which holes a probe fills.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    None,
    Text(usize),
    Others,
}

impl Shared {
    fn new() -> Self {
        Self {
            entries: Default::default(),
            bytes: vec![0; SHARED_TEMPLATES * MAX_TEMPLATE_BYTES].into_boxed_slice(),
            scratch: Vec::with_capacity(SCRATCH_BYTES),
            seen: [(0, false); SEEN],
            seen_next: 0,
            clock: 0,
            stamps: 0,
        }
    }

    /// The entry `data` matches, with the hole values' places in `spans`, and whether it
    /// carries content.
    fn find(
        &mut self,
        event_type: &[u8],
        data: &[u8],
        chat: bool,
        spans: &mut [(usize, usize); MAX_HOLES],
    ) -> Option<(usize, bool)> {
        for (i, entry) in self.entries.iter_mut().enumerate() {
            if !entry.live || entry.shape.len > data.len() {
                continue;
            }
            let bytes = self.bytes.get(i * MAX_TEMPLATE_BYTES..)?;
            if let Some((len, content)) =
                entry
                    .shape
                    .read(bytes, event_type, data, chat, Some(&mut *spans))
            {
                if len == data.len() {
                    self.clock += 1;
                    entry.last_used = self.clock;
                    return Some((i, content));
                }
            }
        }
        None
    }

    /// Entry `index`: its shape, bytes and stamp.
    fn entry(&self, index: usize) -> Option<(&Shape, &[u8], u64)> {
        let entry = self.entries.get(index)?;
        let bytes = self
            .bytes
            .get(index * MAX_TEMPLATE_BYTES..)?
            .get(..entry.shape.len)?;
        Some((&entry.shape, bytes, entry.stamp))
    }

    /// Makes a shared template of `data` if the probes allow it, replacing the least recently
    /// used one. `content` is what the full reading of `data` answered.
    fn learn(&mut self, event_type: &[u8], data: &[u8], chat: bool, content: bool) -> Learnt {
        let mut holes = [(0, 0, Hole::String); MAX_HOLES];
        let count = find_holes(data, &mut holes);
        let holes = &mut holes[..count];
        let fingerprint = fingerprint(event_type, data, holes, chat);
        match self.seen.iter().position(|&(f, _)| f == fingerprint) {
            Some(i) if self.seen[i].1 => return Learnt::Failed,
            Some(_) => {}
            None => {
                self.seen[self.seen_next] = (fingerprint, false);
                self.seen_next = (self.seen_next + 1) % SEEN;
                if !content {
                    return Learnt::Skipped;
                }
            }
        }
        let learnt = self.verify(event_type, data, holes, chat, content);
        if matches!(learnt, Learnt::Failed) {
            if let Some(seen) = self.seen.iter_mut().find(|(f, _)| *f == fingerprint) {
                seen.1 = true;
            }
        }
        learnt
    }

    /// Tries the event out with its holes emptied and filled; if the readings allow it, makes
    /// it the template of an entry (the least recently used one).
    fn verify(
        &mut self,
        event_type: &[u8],
        data: &[u8],
        holes: &mut [(usize, usize, Hole)],
        chat: bool,
        content: bool,
    ) -> Learnt {
        let scratch = &mut self.scratch;
        let Some((base, effects)) = probe(scratch, event_type, data, holes, Fill::None, chat)
        else {
            return Learnt::Failed;
        };
        for i in 0..holes.len() {
            if holes[i].2 != Hole::Text {
                continue;
            }
            match probe(scratch, event_type, data, holes, Fill::Text(i), chat) {
                // Filling this hole makes the event carry content.
                Some((true, e)) if !base && e.same(&effects) => {}
                // Its value does not change the answer.
                Some((filled, e)) if filled == base && e.same(&effects) => {
                    holes[i].2 = Hole::String;
                }
                _ => return Learnt::Failed,
            }
        }
        // Values that are never read are tried too: filled, they must change nothing.
        if holes.iter().any(|h| h.2 != Hole::Text) {
            match probe(scratch, event_type, data, holes, Fill::Others, chat) {
                Some((c, e)) if c == base && e.same(&effects) => {}
                _ => return Learnt::Failed,
            }
        }
        // The event itself must read as the template says it does.
        if content != (base || holes.iter().any(|&(s, e, h)| h == Hole::Text && e > s)) {
            return Learnt::Failed;
        }
        let index = self
            .entries
            .iter()
            .position(|e| !e.live)
            .unwrap_or_else(|| {
                let oldest = self.entries.iter().map(|e| e.last_used).min().unwrap_or(0);
                self.entries
                    .iter()
                    .position(|e| e.last_used == oldest)
                    .unwrap_or(0)
            });
        // The entry's old template goes first: its bytes are overwritten.
        self.entries[index].live = false;
        let Some(bytes) = self
            .bytes
            .get_mut(index * MAX_TEMPLATE_BYTES..(index + 1) * MAX_TEMPLATE_BYTES)
        else {
            return Learnt::Failed;
        };
        let mut shape = Shape::default();
        let mut len = 0;
        let mut at = 0;
        let mut spans = [(0, 0); MAX_HOLES];
        for (i, &(start, end, hole)) in holes.iter().enumerate() {
            let Some(len_after) = put_at(bytes, len, &data[at..start]) else {
                return Learnt::Failed;
            };
            len = len_after;
            shape.holes[i] = (len, hole);
            spans[i] = (start, end);
            at = end;
        }
        let Some(len) = put_at(bytes, len, &data[at..]) else {
            return Learnt::Failed;
        };
        shape.len = len;
        shape.hole_count = holes.len() as u8;
        shape.event_type[..event_type.len()].copy_from_slice(event_type);
        shape.event_type_len = event_type.len();
        shape.message = event_type == MESSAGE;
        shape.chat = chat;
        shape.one_line = !bytes[..len].iter().any(|&b| b == b'\n' || b == b'\r');
        shape.base = base;
        shape.effects = effects;
        self.clock += 1;
        self.stamps += 1;
        self.entries[index] = Entry {
            shape,
            live: true,
            last_used: self.clock,
            stamp: self.stamps,
        };
        Learnt::Entry(index, spans)
    }
}

/// The seeds of [`literal_hash`], drawn once per process from the operating system's
/// randomness (through std's `RandomState`): foldhash's starting value and its multipliers,
/// which `FixedState` would leave at public constants (bytes equal to one of those make the
/// hash forget what came before them, whatever the starting value).
struct LiteralSeed {
    per_hasher: u64,
    shared: foldhash::SharedSeed,
}

static LITERAL_SEED: std::sync::LazyLock<LiteralSeed> = std::sync::LazyLock::new(|| {
    let random = std::hash::RandomState::new();
    LiteralSeed {
        per_hasher: random.hash_one(0u8),
        shared: foldhash::SharedSeed::from_u64(random.hash_one(1u8)),
    }
});

/// The hash of a one-hole template's bytes before and after its hole, by which its stream's
/// whole-frame events are matched (see [`Slot`]). Its seeds are secret and drawn per process,
/// and no hash leaves the process: two byte strings that differ hash alike only by chance,
/// about 2^-64 for a 64-bit hash (foldhash claims no more than that against an adversary who
/// could see its hashes; none can here).
#[inline]
fn literal_hash(before: &[u8], after: &[u8]) -> u64 {
    let seed = &*LITERAL_SEED;
    let mut hasher = foldhash::fast::FoldHasher::with_seed(seed.per_hasher, &seed.shared);
    hasher.write(before);
    hasher.write(after);
    hasher.finish()
}

/// A hash of the event's type, view and bytes outside its holes: what a template of it would
/// be. (Two shapes hashed alike only share their learning history, never a template.)
fn fingerprint(event_type: &[u8], data: &[u8], holes: &[(usize, usize, Hole)], chat: bool) -> u64 {
    let mut hasher = foldhash::fast::FixedState::default().build_hasher();
    hasher.write(event_type);
    hasher.write_u8(chat.into());
    let mut at = 0;
    for &(start, end, _) in holes {
        hasher.write(&data[at..start]);
        at = end;
    }
    hasher.write(&data[at..]);
    hasher.finish()
}

/// Reads `data` with its holes emptied (integers set to 0), or filled as `fill` says (`x`, or
/// 1 for integers), on a fresh summary. Returns its answer and effects, or `None` if the reading
/// recorded anything but a format or a model: such an event is not one a template may stand
/// for.
fn probe(
    scratch: &mut Vec<u8>,
    event_type: &[u8],
    data: &[u8],
    holes: &[(usize, usize, Hole)],
    fill: Fill,
    chat: bool,
) -> Option<(bool, Effects)> {
    scratch.clear();
    let mut at = 0;
    for (i, &(start, end, hole)) in holes.iter().enumerate() {
        put(scratch, &data[at..start])?;
        let filled = match fill {
            Fill::None => false,
            Fill::Text(t) => t == i,
            Fill::Others => hole != Hole::Text,
        };
        put(
            scratch,
            match (hole.integer(), filled) {
                (true, false) => b"0",
                (true, true) => b"1",
                (false, true) => b"x",
                (false, false) => b"",
            },
        )?;
        at = end;
    }
    put(scratch, &data[at..])?;
    let mut trial = StreamSummary::default();
    let content = interpret(&mut trial, event_type, scratch, chat);
    let effects = Effects {
        format: trial.format,
        model: trial.model,
    };
    trial.format = ProviderFormat::Unknown;
    trial.model = None;
    trial
        .same_as(&StreamSummary::default())
        .then_some((content, effects))
}

/// Appends `part` to the probe buffer, within the capacity reserved for it (so that a probe
/// never allocates); `None` when it does not fit.
fn put(buf: &mut Vec<u8>, part: &[u8]) -> Option<()> {
    (buf.len() + part.len() <= SCRATCH_BYTES).then(|| buf.extend_from_slice(part))
}

/// Appends `part` to `buf`, if there is one; returns whether there was.
fn extend(buf: &mut Vec<u8>, part: Option<&[u8]>) -> bool {
    part.map(|p| buf.extend_from_slice(p)).is_some()
}

/// Copies `part` into `buf` at `at`; returns the end, or `None` when it does not fit.
fn put_at(buf: &mut [u8], at: usize, part: &[u8]) -> Option<usize> {
    let end = at + part.len();
    buf.get_mut(at..end)?.copy_from_slice(part);
    Some(end)
}

/// Finds the values that may become holes: strings under [`TEXT_KEYS`],
/// [`IGNORED_STRING_KEYS`] and [`STREAM_STRING_KEYS`] (the bytes between the quotes) and plain
/// integers under [`IGNORED_INTEGER_KEYS`] and [`STREAM_INTEGER_KEYS`]. `data` is JSON that
/// serde_json has just accepted.
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
                let hole = if !after_colon {
                    None
                } else if TEXT_KEYS.contains(&key) {
                    Some(Hole::Text)
                } else if IGNORED_STRING_KEYS.contains(&key) {
                    Some(Hole::String)
                } else if STREAM_STRING_KEYS.contains(&key) {
                    Some(Hole::StreamString)
                } else {
                    None
                };
                if let Some(hole) = hole {
                    holes[count] = (start, end, hole);
                    count += 1;
                }
                after_colon = false;
                i = end + 1;
            }
            b'-' | b'0'..=b'9' => {
                let len = data[i..]
                    .iter()
                    .position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .unwrap_or(data.len() - i);
                let hole = if !after_colon || scan_integer(&data[i..]) != Some(len) {
                    None
                } else if IGNORED_INTEGER_KEYS.contains(&key) {
                    Some(Hole::Integer)
                } else if STREAM_INTEGER_KEYS.contains(&key) {
                    Some(Hole::StreamInteger)
                } else {
                    None
                };
                if let Some(hole) = hole {
                    holes[count] = (i, i + len, hole);
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
#[inline]
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

/// [`same_bytes`] kept out of line, for the whole-frame path: inlined there it made
/// `StreamParser::feed` spill more registers around its `memcmp`s (about 20 instructions more
/// per event), and left to the compiler it went either way with unrelated edits.
#[inline(never)]
fn same_type(a: &[u8], b: &[u8]) -> bool {
    same_bytes(a, b)
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

    /// What matching an event reads and writes of the stream's templates is the first line of
    /// the slot, and for an event read line by line one line of their head too (ARCHITECTURE.md,
    /// The parser's memory).
    #[test]
    fn matching_reads_one_line_of_the_head_and_one_of_the_slot() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(align_of::<Slot>(), 64);
        assert!(offset_of!(Templates, arena) + size_of::<Vec<u8>>() <= 64);
        assert!(offset_of!(Templates, one_line) < 64);
        // Read and written by each event of the line-by-line path.
        assert!(offset_of!(Templates, recognised) + size_of::<(usize, bool)>() <= 64);
        let shape = offset_of!(Slot, shape);
        let slot_end = [
            offset_of!(Slot, last_used) + size_of::<u64>(),
            offset_of!(Slot, literals) + size_of::<u64>(),
            offset_of!(Slot, start) + size_of::<u32>(),
            offset_of!(Slot, hits) + size_of::<u32>(),
            offset_of!(Slot, one_line) + 1,
            shape + offset_of!(Shape, chat) + 1,
            shape + offset_of!(Shape, base) + 1,
            shape + offset_of!(Shape, message) + 1,
            shape + offset_of!(Shape, hole_count) + 1,
            shape + offset_of!(Shape, len) + size_of::<usize>(),
            shape + offset_of!(Shape, holes) + size_of::<(usize, Hole)>(),
        ]
        .into_iter()
        .max();
        assert!(slot_end <= Some(64), "{slot_end:?}");
    }

    /// A stream's one-hole template answers its events without reading its own bytes (what
    /// an event would find cold): with those bytes overwritten, events the template stands for
    /// are still answered, and events that differ from it outside the hole, by one byte or by
    /// their length, are not.
    #[test]
    fn one_hole_templates_match_by_hash_without_their_bytes() {
        let chunk = |content: &str| {
            format!(
                r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
            )
        };
        let mut templates = Templates::new();
        let mut summary = StreamSummary::default();
        let learnt = chunk("hello");
        templates.learn(&summary, &MESSAGE, learnt.as_bytes(), false, true);
        let slot = templates.slots.iter().find(|s| s.live).expect("learnt");
        assert_eq!(slot.shape.hole_count, 1);
        assert!(slot.one_line && templates.one_line);
        for byte in &mut templates.arena {
            *byte = b'#';
        }
        let mut answer =
            |data: &str| templates.answer(&mut summary, &MESSAGE, data.as_bytes(), false);
        assert_eq!(answer(&chunk(" world")), Some(true));
        assert_eq!(
            answer(&chunk("")),
            Some(false),
            "an empty delta carries no content"
        );
        assert_eq!(answer(&chunk(r#"a \"quoted\" \u00e9"#)), Some(true));
        assert_eq!(answer(&chunk("x").replace("\"m\"", "\"n\"")), None);
        assert_eq!(
            answer(&chunk("x").replace("chatcmpl-1", "chatcmpl-2")),
            None
        );
        assert_eq!(answer(&chunk("x").replace("null}]}", "null}]} ")), None);
        assert_eq!(answer(&chunk("x").replace("null}]}", "nulx}]}")), None);
        assert_eq!(answer(&chunk("x").replace("{\"id\"", "{ \"id\"")), None);
        assert_eq!(answer(&chunk("un\"closed")), None);
        assert_eq!(answer(""), None);
    }

    /// A one-hole template read whole (its end compared first) answers as its read from the
    /// start does when the match must take all of the data; so does the `message` shortcut.
    #[test]
    fn whole_reads_agree_with_reads_from_the_start() {
        let chunk = |content: &str| {
            format!(
                r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
            )
        };
        let learnt = chunk("hello");
        // The stream's copy (one hole, the content: its per-stream values filled in) and the
        // thread's template it copies (those values holes too).
        let mut templates = Templates::new();
        templates.learn(
            &StreamSummary::default(),
            &MESSAGE,
            learnt.as_bytes(),
            false,
            true,
        );
        let slot = templates
            .slots
            .iter()
            .find(|s| s.live)
            .expect("a template learnt");
        assert_eq!(
            slot.shape.hole_count, 1,
            "the content is the stream copy's one hole"
        );
        let mut shared = Shared::new();
        let Learnt::Entry(index, _) = shared.learn(&MESSAGE, learnt.as_bytes(), false, true) else {
            panic!("an OpenAI chat chunk makes a template");
        };
        let (shared_shape, shared_bytes, _) = shared.entry(index).expect("the entry learnt");
        let shapes = [
            (&slot.shape, &templates.arena[slot.start as usize..], None),
            (
                &slot.shape,
                &templates.arena[slot.start as usize..],
                Some(slot.literals),
            ),
            (shared_shape, shared_bytes, None),
        ];
        let mut datas: Vec<String> = ["", "x", " tok42", r#"a\"b"#, r#"\u00e9"#, "\\", "a\"b"]
            .iter()
            .map(|c| chunk(c))
            .collect();
        let base = chunk("hi");
        datas.push(format!("{base} "));
        datas.push(base[..base.len() - 1].to_owned());
        datas.push(base.replace("\"m\"", "\"n\""));
        datas.push(base.replace("\"hi\"", "\"h\ni\""));
        datas.push(base.replace("\"hi\"", "7"));
        datas.push(String::new());
        datas.push("{}".to_owned());
        let copy = MESSAGE.to_vec();
        let mut matched = 0;
        for (shape, bytes, literals) in shapes {
            for data in &datas {
                for event_type in [&MESSAGE[..], &copy, b"other", b""] {
                    for chat in [false, true] {
                        let whole =
                            shape.read_whole(bytes, literals, event_type, data.as_bytes(), chat);
                        let from_start = shape
                            .read(bytes, event_type, data.as_bytes(), chat, None)
                            .filter(|&(len, _)| len == data.len())
                            .map(|(_, content)| content);
                        assert_eq!(whole, from_start, "{data:?} {event_type:?} {chat}");
                        matched += usize::from(whole.is_some());
                    }
                }
            }
        }
        assert!(matched >= 10, "{matched} matched");
    }

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

    /// Holes other than text are cut under keys that the reading never looks at: no field of
    /// the provider's view is named so.
    #[test]
    fn values_of_holes_other_than_text_are_never_read() {
        let provider = include_str!("provider.rs");
        for key in IGNORED_STRING_KEYS
            .iter()
            .chain(&IGNORED_INTEGER_KEYS)
            .chain(&STREAM_STRING_KEYS)
            .chain(&STREAM_INTEGER_KEYS)
        {
            let key = String::from_utf8_lossy(key);
            assert!(!provider.contains(&format!("\"{key}\"")), "{key} is read");
            assert!(
                !provider
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{key}:"))),
                "{key} is a field"
            );
        }
    }

    #[test]
    fn holes_are_found_under_their_keys_only() {
        let data = br#"{"id":"c-1","type":"x","created":17,"model":"m","sequence_number":12,"delta":"a\"b","content":[{"text":"t"}],"n":"content","obfuscation":"zz","created_at":"2024"}"#;
        let mut holes = [(0, 0, Hole::String); MAX_HOLES];
        let n = find_holes(data, &mut holes);
        let found: Vec<(&[u8], Hole)> = holes[..n]
            .iter()
            .map(|&(s, e, h)| (&data[s..e], h))
            .collect();
        assert_eq!(
            found,
            vec![
                (&b"c-1"[..], Hole::StreamString),
                (b"17", Hole::StreamInteger),
                (b"12", Hole::Integer),
                (b"a\\\"b", Hole::Text),
                (b"t", Hole::Text),
                (b"zz", Hole::String),
                (b"2024", Hole::String),
            ]
        );
    }
}
