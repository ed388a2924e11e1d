//! The parsers of streaming responses, and their byte buffers (an SSE decoder's event data, a
//! stream's template arena), kept for reuse by each thread once their stream ends.
//!
//! Every streaming response makes a parser (2 KiB, boxed) with a few KiB of buffers;
//! allocating and freeing them per stream cost more than parsing a short stream's events (glibc
//! consolidates its small free chunks before every allocation of that size). A stream takes a
//! parser and buffers from its thread's pools and gives them back to the pools of the thread it
//! ends on. Memory stays bounded: each thread keeps at most [`POOLED`] parsers and [`POOLED`]
//! buffers of at most [`POOLED_CAPACITY`] bytes (a larger one, grown by a big event, is freed
//! instead).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use super::{StreamParser, WireFormat};

/// Buffers a thread keeps at most.
const POOLED: usize = 16;
/// The largest buffer kept for reuse (bytes of capacity).
const POOLED_CAPACITY: usize = 64 * 1024;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Boxes of parsers whose streams ended, each holding an empty placeholder parser. The
    /// boxes are what is pooled: a meter holds its parser boxed, and reuses one from here.
    #[allow(clippy::vec_box)]
    static PARSERS: RefCell<Vec<Box<StreamParser>>> = const { RefCell::new(Vec::new()) };
}

/// A boxed parser that goes back to its thread's pool when dropped (its buffers to theirs).
pub(crate) struct PooledParser(Option<Box<StreamParser>>);

impl PooledParser {
    /// A parser for `wire`, in a box from this thread's pool when it has one.
    pub(crate) fn new(wire: WireFormat, max_event_bytes: usize) -> Self {
        let parser = StreamParser::with_max_event_bytes(wire, max_event_bytes);
        let pooled = PARSERS
            .try_with(|pool| pool.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten();
        let boxed = match pooled {
            Some(mut boxed) => {
                // The box held a placeholder, which owns no buffer.
                *boxed = parser;
                boxed
            }
            None => Box::new(parser),
        };
        Self(Some(boxed))
    }
}

impl Deref for PooledParser {
    type Target = StreamParser;

    fn deref(&self) -> &StreamParser {
        // Only `drop` takes the box out.
        self.0
            .as_deref()
            .unwrap_or_else(|| unreachable!("a parser until dropped"))
    }
}

impl DerefMut for PooledParser {
    fn deref_mut(&mut self) -> &mut StreamParser {
        self.0
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("a parser until dropped"))
    }
}

impl Drop for PooledParser {
    fn drop(&mut self) {
        let Some(mut boxed) = self.0.take() else {
            return;
        };
        // The parser's buffers go back to their pool now; the box keeps a placeholder.
        drop(std::mem::replace(&mut *boxed, StreamParser::placeholder()));
        let _ = PARSERS.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                if pool.len() < POOLED {
                    pool.push(boxed);
                }
            }
        });
    }
}

/// An empty buffer with room for at least `capacity` bytes: a pooled one when this thread has
/// one that large, else a new one.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    let pooled = POOL
        .try_with(|pool| {
            let mut pool = pool.try_borrow_mut().ok()?;
            let i = pool.iter().rposition(|b| b.capacity() >= capacity)?;
            Some(pool.swap_remove(i))
        })
        .ok()
        .flatten();
    pooled.unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// Gives `buffer` back for reuse on this thread, or frees it when the pool is full, the buffer
/// large, or the thread ending.
pub(crate) fn give(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > POOLED_CAPACITY {
        return;
    }
    buffer.clear();
    let _ = POOL.try_with(|pool| {
        if let Ok(mut pool) = pool.try_borrow_mut() {
            if pool.len() < POOLED {
                pool.push(buffer);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty_and_the_pool_is_bounded() {
        let mut b = take(4096);
        b.extend_from_slice(b"data");
        let address = b.as_ptr();
        give(b);
        let again = take(2048);
        assert_eq!(again.as_ptr(), address, "reused");
        assert!(again.is_empty() && again.capacity() >= 4096);
        // Too large to keep: freed, not pooled.
        give(Vec::with_capacity(POOLED_CAPACITY + 1));
        for _ in 0..POOLED * 2 {
            give(Vec::with_capacity(64));
        }
        POOL.with(|pool| {
            let pool = pool.borrow();
            assert_eq!(pool.len(), POOLED);
            assert!(pool.iter().all(|b| b.capacity() <= POOLED_CAPACITY));
        });
        // Nothing large enough pooled: a new buffer.
        assert!(take(8192).capacity() >= 8192);
    }

    #[test]
    fn a_pooled_parser_starts_afresh_in_a_reused_box() {
        let mut first = PooledParser::new(WireFormat::Sse, 1024);
        assert_eq!(
            first.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n"),
            1
        );
        let address: *const StreamParser = &*first;
        drop(first);
        let mut second = PooledParser::new(WireFormat::Ndjson, 1024);
        assert_eq!(
            &*second as *const StreamParser, address,
            "the box is reused"
        );
        assert_eq!(second.summary().events, 0, "nothing of the first stream");
        assert_eq!(second.feed(b"{\"response\":\"a\",\"done\":false}\n"), 1);
    }
}
