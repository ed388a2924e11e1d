//! What the layer watches of a request's body, as the handler reads it: whether it asked for a
//! stream (`"stream": true` in a JSON `POST`, as the official OpenAI and Anthropic SDKs send with
//! `Accept: application/json`), and whether the handler is waiting for more of it.
//!
//! - A request that fails before its first byte (a 500, a 429, a 504 from the upstream) has no
//!   stream content type to go by; the flag is how it still counts as a streaming request in the
//!   windows and the triggers.
//! - The stream timeout passing while the handler waits for the client's bytes is the client's
//!   doing, not the upstream's: the layer answers 408 and records `client_error`, never
//!   `timeout` (README, Security).
//!
//! The body is not buffered: the handler reads it as usual, and each frame is scanned on the way
//! (a substring search, for JSON `POST`s) until the flag is seen. Under the `axum` feature, for
//! request bodies of type `axum::body::Body` that have not ended when the request arrives (a
//! `GET` without a body costs one check); other apps name their streaming routes
//! (`streaming_routes`) instead, and a request body they cannot watch is taken as read.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Wake, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::record::Outcome;

/// The body asked for a stream.
const ASKED: u8 = 1;
/// The handler's last poll of the body found nothing yet.
const WAITING: u8 = 2;
/// The body was woken (more of it came, or it ended) since that poll.
const WOKEN: u8 = 4;
/// The body ended with an error (the client gave up its upload, or broke it).
const FAILED: u8 = 8;
/// The body was dropped while the handler waited for it (a timeout of the app's, inside the
/// monitor, that dropped the handler as it waited for the client's bytes).
const LEFT_WAITING: u8 = 16;

/// What the body watcher has seen of a request's body, shared with the request's context.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestBodyWatch(Arc<WatchState>);

#[derive(Debug, Default)]
struct WatchState {
    flags: AtomicU8,
    /// The waker of the task that last polled the body: the body is polled with a waker of
    /// the watch's own, which notes `WOKEN` and passes the wake on to it.
    task: Mutex<Option<Waker>>,
    /// When the body ended (its end, or an error), as the handler read it.
    ended_at: OnceLock<Instant>,
    /// The time the handler waited for the client's bytes: from a poll that found nothing to
    /// the wake that brought more (or the next poll, whichever came first). Only a body that
    /// made its handler wait takes the lock.
    client_wait: Mutex<ClientWait>,
}

#[derive(Debug, Default)]
struct ClientWait {
    /// When the current wait began.
    since: Option<Instant>,
    /// The waits that ended.
    total: Duration,
}

impl WatchState {
    fn client_wait(&self) -> std::sync::MutexGuard<'_, ClientWait> {
        // Plain data: a panic while held leaves it usable.
        self.client_wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The handler's wait for the client ends now, if one goes on.
    fn end_wait(&self) {
        let mut wait = self.client_wait();
        if let Some(since) = wait.since.take() {
            wait.total = wait
                .total
                .saturating_add(Instant::now().saturating_duration_since(since));
        }
    }
}

impl RequestBodyWatch {
    /// Whether the body, as read so far, asked for a stream.
    pub(crate) fn asked_for_stream(&self) -> bool {
        self.0.flags.load(Ordering::Relaxed) & ASKED != 0
    }

    /// Whether the body ended with an error as the handler read it.
    pub(crate) fn failed(&self) -> bool {
        self.0.flags.load(Ordering::Relaxed) & FAILED != 0
    }

    /// When the handler read the body's end, if it did.
    pub(crate) fn ended_at(&self) -> Option<Instant> {
        self.0.ended_at.get().copied()
    }

    /// The time the handler waited for the client's bytes, in waits that ended.
    pub(crate) fn client_wait(&self) -> Duration {
        self.0.client_wait().total
    }

    /// The handler's poll found nothing: a wait for the client begins, unless one goes on.
    #[cfg(feature = "axum")]
    fn begin_wait(&self) {
        let mut wait = self.0.client_wait();
        if wait.since.is_none() {
            wait.since = Some(Instant::now());
        }
    }

    /// Whether the handler's last poll of the body found nothing.
    #[cfg(feature = "axum")]
    fn handler_waited(&self) -> bool {
        self.0.flags.load(Ordering::Relaxed) & WAITING != 0
    }

    /// Notes the body's end, now (the first end only).
    #[cfg(feature = "axum")]
    fn end(&self) {
        let _ = self.0.ended_at.set(Instant::now());
    }

    /// Whether the handler waits for the client: its last poll of the body found nothing, and
    /// nothing came since (a handler that polled the body once and then looked elsewhere, its
    /// data come but unread, is not waiting for the client), the body still held.
    pub(crate) fn waiting_for_client(&self) -> bool {
        self.0.flags.load(Ordering::Relaxed) & (WAITING | WOKEN) == WAITING
    }

    /// Whether the handler waits for the client's bytes (see
    /// [`waiting_for_client`](Self::waiting_for_client)), or was dropped in such a wait (a
    /// timeout of the app's that dropped it there).
    fn holds_handler(&self) -> bool {
        self.0.flags.load(Ordering::Relaxed) & LEFT_WAITING != 0 || self.waiting_for_client()
    }

    /// Since when the handler waits for the client (see
    /// [`waiting_for_client`](Self::waiting_for_client)), if it does.
    fn waiting_since(&self) -> Option<Instant> {
        if !self.waiting_for_client() {
            return None;
        }
        self.0.client_wait().since
    }

    #[cfg(feature = "axum")]
    fn set(&self, flag: u8) {
        self.0.flags.fetch_or(flag, Ordering::Relaxed);
    }

    #[cfg(feature = "axum")]
    fn clear(&self, flag: u8) {
        self.0.flags.fetch_and(!flag, Ordering::Relaxed);
    }

    /// A waker for polling the body on behalf of the task `cx` belongs to.
    #[cfg(feature = "axum")]
    fn waker_for(&self, task: &Waker) -> Waker {
        // A lock poisoned by a panicking waker still holds a waker to replace.
        let mut kept = self.0.task.lock().unwrap_or_else(PoisonError::into_inner);
        if !kept.as_ref().is_some_and(|w| w.will_wake(task)) {
            *kept = Some(task.clone());
        }
        drop(kept);
        Waker::from(self.0.clone())
    }
}

impl Wake for WatchState {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let flags = self.flags.fetch_or(WOKEN, Ordering::Relaxed);
        if flags & WAITING != 0 {
            // The client's bytes came: the handler no longer waits for the client.
            self.end_wait();
        }
        // Woken outside the lock: an executor that polls the task at once would take it again.
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// What a request says of the answer it wants, and how its body goes: the client's word,
/// trusted only for a request that failed (README, Outcomes), and how the monitor tells a
/// deadline the client caused (README, Security).
#[derive(Debug, Default)]
pub(crate) struct RequestHints {
    /// The request sent `Accept: text/event-stream`.
    pub(crate) accepts_sse: bool,
    /// The body watcher's, when it watches the body.
    pub(crate) body: Option<RequestBodyWatch>,
}

impl RequestHints {
    /// Whether the request asked for a stream: `Accept: text/event-stream`, or
    /// `"stream": true` in its JSON body (read as the handler read it).
    pub(crate) fn asked_for_stream(&self) -> bool {
        self.accepts_sse
            || self
                .body
                .as_ref()
                .is_some_and(RequestBodyWatch::asked_for_stream)
    }

    /// Where the upstream's part of a request started at `started` counts from, once its body
    /// ended: that start, moved later by the time the handler waited for the client's bytes
    /// (a handler that read a body come long ago, late, waited for nothing of the client's).
    /// The time a client takes over its upload is its own: first byte and first token, the
    /// generation time and the stream deadline count from here (README, Security). Before
    /// the body's end, the start: the upload itself is bounded by the deadline from the call.
    pub(crate) fn upstream_origin(&self, started: Instant) -> Instant {
        match self.body.as_ref() {
            Some(body) if body.ended_at().is_some() => {
                started.checked_add(body.client_wait()).unwrap_or(started)
            }
            _ => started,
        }
    }

    /// Whether the request has no body watched, or its body has ended.
    #[inline]
    pub(crate) fn upload_over(&self) -> bool {
        self.body.as_ref().is_none_or(|b| b.ended_at().is_some())
    }

    /// When the handler read the request's body's end, if it was watched and it did.
    pub(crate) fn body_end(&self) -> Option<Instant> {
        self.body.as_ref().and_then(RequestBodyWatch::ended_at)
    }

    /// `outcome` of a response body that failed, or `client_error` when the request body had
    /// failed as the handler read it before (a client that gave up its upload, or broke it): a
    /// body fed by the upload fails with it, the client's doing (README, Security). Only a
    /// body's failure (a `stream_error`) is judged so: a status, a panic (a `server_error`,
    /// which a handler's code is to blame for) or a service error stays what it is. A body's
    /// timeout is judged where its error is known (`MeasuredBody`): an inner one after a failed
    /// upload is the client's, this layer's own by whether the client was awaited.
    #[inline]
    pub(crate) fn judge(&self, outcome: Outcome) -> Outcome {
        if outcome == Outcome::StreamError && self.upload_failed() {
            Outcome::ClientError
        } else {
            outcome
        }
    }

    /// Whether the request's body failed as the handler read it.
    pub(crate) fn upload_failed(&self) -> bool {
        self.body.as_ref().is_some_and(RequestBodyWatch::failed)
    }

    /// `outcome` of a status or a service error, or `client_error` for a timeout (a 408, a
    /// 504, an inner timeout error, this layer's deadline before the response) that came
    /// while the handler waited for the client's bytes, the upload not over: the request had
    /// not reached the server whole, whatever the handler would have done with it, so the
    /// time was the client's (README, Security). The wait may be the one the handler was
    /// dropped in, by a timeout of the app's inside the monitor.
    #[inline]
    pub(crate) fn judge_timeout(&self, outcome: Outcome) -> Outcome {
        if outcome == Outcome::Timeout && self.client_holds_upload() {
            Outcome::ClientError
        } else {
            outcome
        }
    }

    /// Whether the handler waits for the client's bytes, or was dropped waiting for them (see
    /// [`judge_timeout`](Self::judge_timeout)).
    pub(crate) fn client_holds_upload(&self) -> bool {
        self.body
            .as_ref()
            .is_some_and(RequestBodyWatch::holds_handler)
    }

    /// Whether the handler has waited for the client's bytes since `t` or before, with
    /// nothing come since: a client that kept its upload going, a chunk every few
    /// milliseconds, is waited for only between two chunks.
    pub(crate) fn client_silent_since(&self, t: Instant) -> bool {
        self.body
            .as_ref()
            .and_then(RequestBodyWatch::waiting_since)
            .is_some_and(|since| since <= t)
    }
}

// The watcher below reads bodies of axum's type only (the `axum` feature): without it, whether a
// request asked for a stream comes from `Accept` and `streaming_routes` alone.

/// Longest `"stream" : true` recognised, whitespace included (bytes).
#[cfg(any(feature = "axum", test))]
const CARRY: usize = 24;
/// Whitespace allowed on each side of the colon.
#[cfg(any(feature = "axum", test))]
const MAX_SPACE: usize = 4;

/// Finds a JSON member `"stream": true` in a body split at any points. Inside a JSON string a
/// quote is escaped, so an unescaped `"stream"` followed by a colon is a key; a nested key of
/// that name (a tool's parameter schema) has an object, not `true`, after it.
#[cfg(any(feature = "axum", test))]
#[derive(Debug, Default)]
pub(crate) struct StreamFlagScanner {
    carry: [u8; CARRY],
    carried: usize,
    found: bool,
}

#[cfg(any(feature = "axum", test))]
impl StreamFlagScanner {
    /// Scans the next piece of the body; returns whether the flag has been seen so far.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.found || chunk.is_empty() {
            return self.found;
        }
        // A match straddling the previous pieces and this one lies within these bytes.
        let mut joint = [0u8; 2 * CARRY];
        let head = chunk.len().min(CARRY);
        joint[..self.carried].copy_from_slice(&self.carry[..self.carried]);
        joint[self.carried..self.carried + head].copy_from_slice(&chunk[..head]);
        self.found =
            contains_stream_true(&joint[..self.carried + head]) || contains_stream_true(chunk);
        // Keep the last CARRY bytes of everything seen.
        if chunk.len() >= CARRY {
            self.carry.copy_from_slice(&chunk[chunk.len() - CARRY..]);
            self.carried = CARRY;
        } else {
            let keep = (CARRY - chunk.len()).min(self.carried);
            self.carry.copy_within(self.carried - keep..self.carried, 0);
            self.carry[keep..keep + chunk.len()].copy_from_slice(chunk);
            self.carried = keep + chunk.len();
        }
        self.found
    }
}

#[cfg(any(feature = "axum", test))]
fn contains_stream_true(hay: &[u8]) -> bool {
    memchr::memmem::find_iter(hay, b"\"stream\"").any(|at| {
        let rest = &hay[at + b"\"stream\"".len()..];
        let rest = skip_space(rest);
        let Some(rest) = rest.strip_prefix(b":") else {
            return false;
        };
        skip_space(rest).starts_with(b"true")
    })
}

#[cfg(any(feature = "axum", test))]
fn skip_space(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take(MAX_SPACE)
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    &bytes[n..]
}

/// Whether a request's body should be scanned for the flag: a JSON `POST`.
#[cfg(feature = "axum")]
#[inline]
fn is_json_post<B>(request: &http::Request<B>) -> bool {
    request.method() == http::Method::POST
        && request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let essence = ct.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
                    || essence.to_ascii_lowercase().ends_with("+json")
            })
}

#[cfg(feature = "axum")]
mod axum_body {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame, SizeHint};
    use pin_project_lite::pin_project;

    use super::{ASKED, FAILED, LEFT_WAITING, RequestBodyWatch, StreamFlagScanner, WAITING, WOKEN};

    pin_project! {
        /// A request body passed through untouched while it is watched.
        pub(crate) struct WatchedBody {
            #[pin]
            inner: axum::body::Body,
            // `None` for a body that is not a JSON `POST`: nothing to scan.
            scanner: Option<StreamFlagScanner>,
            watch: RequestBodyWatch,
        }

        impl PinnedDrop for WatchedBody {
            fn drop(this: Pin<&mut Self>) {
                // A handler that dropped the body no longer waits for it; that it was waiting
                // is kept, for a timeout that dropped it there (`judge_timeout`).
                if this.watch.waiting_for_client() {
                    this.watch.set(LEFT_WAITING);
                }
                this.watch.clear(WAITING);
            }
        }
    }

    impl Body for WatchedBody {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
            let this = self.project();
            // Polled with the watch's own waker, so that what comes while the handler looks
            // elsewhere is noted (`WOKEN`); cleared first, so a wake during the poll counts.
            let waker = this.watch.waker_for(cx.waker());
            this.watch.clear(WOKEN);
            let mut inner = this.inner;
            let polled = inner.as_mut().poll_frame(&mut Context::from_waker(&waker));
            let waited = this.watch.handler_waited();
            match &polled {
                Poll::Pending => {
                    if !waited {
                        this.watch.begin_wait();
                    }
                    this.watch.set(WAITING);
                }
                Poll::Ready(frame) => {
                    if waited {
                        // Ended at the wake, unless that wake was not the watch's.
                        this.watch.0.end_wait();
                    }
                    this.watch.clear(WAITING);
                    let last = match frame {
                        None | Some(Err(_)) => true,
                        Some(Ok(_)) => inner.is_end_stream(),
                    };
                    if last {
                        this.watch.end();
                    }
                    if matches!(frame, Some(Err(_))) {
                        this.watch.set(FAILED);
                    }
                    let data = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref());
                    if let (Some(scanner), Some(data)) = (this.scanner.as_mut(), data) {
                        if scanner.feed(data) {
                            this.watch.set(ASKED);
                        }
                    }
                }
            }
            polled
        }

        fn is_end_stream(&self) -> bool {
            self.inner.is_end_stream()
        }

        fn size_hint(&self) -> SizeHint {
            self.inner.size_hint()
        }
    }

    /// Wraps an axum request body in a watcher, scanning it when `scan`; `None` for other body
    /// types, and for a body that has ended already (nothing left to wait for or to read).
    /// Generic and inlined: the body's type is known where it is called, so telling it apart
    /// costs nothing at run time.
    #[inline]
    pub(crate) fn watch<B: 'static>(body: &mut B, scan: bool) -> Option<RequestBodyWatch> {
        let body = (body as &mut dyn std::any::Any).downcast_mut::<axum::body::Body>()?;
        if body.is_end_stream() {
            return None;
        }
        wrap(body, scan)
    }

    /// Wraps `body` in a watcher (apart from `watch`: most requests have no body to wrap).
    #[inline(never)]
    fn wrap(body: &mut axum::body::Body, scan: bool) -> Option<RequestBodyWatch> {
        let watch = RequestBodyWatch::default();
        let inner = std::mem::take(body);
        *body = axum::body::Body::new(WatchedBody {
            inner,
            scanner: scan.then(StreamFlagScanner::default),
            watch: watch.clone(),
        });
        Some(watch)
    }
}

/// Sets up the watch of a request's body, where its type allows (see the module docs).
/// Inlined: most requests have no body, and are told apart by one check.
#[inline]
pub(crate) fn watch<B: 'static>(request: &mut http::Request<B>) -> Option<RequestBodyWatch> {
    #[cfg(feature = "axum")]
    {
        let scan = is_json_post(request);
        axum_body::watch(request.body_mut(), scan)
    }
    #[cfg(not(feature = "axum"))]
    {
        let _ = request;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_split(body: &[u8], at: &[usize]) -> bool {
        let mut s = StreamFlagScanner::default();
        let mut last = 0;
        let mut found = false;
        for &i in at.iter().chain(std::iter::once(&body.len())) {
            found = s.feed(&body[last..i]);
            last = i;
        }
        found
    }

    #[test]
    fn finds_the_flag_at_any_split() {
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream" : true}"#;
        for i in 0..body.len() {
            assert!(scan_split(body, &[i]), "split at {i}");
            for j in i..body.len() {
                assert!(scan_split(body, &[i, j]), "split at {i},{j}");
            }
        }
        // One byte at a time.
        let all: Vec<usize> = (1..body.len()).collect();
        assert!(scan_split(body, &all));
    }

    #[test]
    fn ignores_what_is_not_the_flag() {
        for body in [
            &br#"{"stream":false}"#[..],
            br#"{"messages":[{"content":"say \"stream\": true"}]}"#,
            br#"{"tools":[{"parameters":{"properties":{"stream":{"type":"boolean"}}}}]}"#,
            br#"{"streaming":true}"#,
            b"",
        ] {
            let all: Vec<usize> = (1..body.len()).collect();
            assert!(!scan_split(body, &[]), "{}", String::from_utf8_lossy(body));
            assert!(!scan_split(body, &all), "{}", String::from_utf8_lossy(body));
        }
        assert!(scan_split(b"{\"stream\":\ntrue}", &[]));
    }
}
