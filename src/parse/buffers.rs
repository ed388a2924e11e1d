//! The parser's byte buffers (an SSE decoder's event data, a stream's template arena), kept for
//! reuse by each thread once their stream ends.
//!
//! Every streaming response makes a parser, which needs a few KiB of buffers; allocating and
//! freeing them per stream cost more than parsing a short stream's events (glibc consolidates its
//! small free chunks before every allocation of that size). A stream takes a buffer from its
//! thread's pool and gives it back to the pool of the thread it ends on. Memory stays bounded:
//! each thread keeps at most [`POOLED`] buffers of at most [`POOLED_CAPACITY`] bytes (a larger one,
//! grown by a big event, is freed instead).

use std::cell::RefCell;

/// Buffers a thread keeps at most.
const POOLED: usize = 16;
/// The largest buffer kept for reuse (bytes of capacity).
const POOLED_CAPACITY: usize = 64 * 1024;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
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
}
