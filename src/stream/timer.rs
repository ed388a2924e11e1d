//! The stream deadline and idle timeout: one `Sleep` armed at the nearer of the two.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::timeout::StreamTimeoutError;

/// Watches a stream's deadline and idle gap. The idle deadline moves with every frame, but the
/// sleep is only re-armed when it fires early: a frame costs one clock read, not a timer update.
pub(crate) struct StreamTimer {
    sleep: Pin<Box<Sleep>>,
    deadline: Option<(Instant, Duration)>,
    idle: Option<Duration>,
    last_activity: Instant,
}

impl StreamTimer {
    /// `sleep` is the deadline sleep the response future already armed (if any).
    pub(crate) fn new(
        sleep: Option<Pin<Box<Sleep>>>,
        deadline: Option<(Instant, Duration)>,
        idle: Option<Duration>,
    ) -> Option<Self> {
        if deadline.is_none() && idle.is_none() {
            return None;
        }
        let now = Instant::now();
        let mut timer = Self {
            sleep: sleep.unwrap_or_else(|| Box::pin(tokio::time::sleep_until(now))),
            deadline,
            idle,
            last_activity: now,
        };
        let next = timer.next_deadline()?;
        timer.sleep.as_mut().reset(next);
        Some(timer)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let idle = self.idle.map(|d| self.last_activity + d);
        match (self.deadline.map(|(at, _)| at), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A frame arrived.
    pub(crate) fn touch(&mut self) {
        if self.idle.is_some() {
            self.last_activity = Instant::now();
        }
    }

    /// Whether the sleep fired (no clock read): worth checking before a possibly busy inner body.
    pub(crate) fn fired(&self) -> bool {
        self.sleep.is_elapsed()
    }

    /// Ready with the error once a limit has passed; re-arms when an idle deadline moved on.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<StreamTimeoutError> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if let Some((at, after)) = self.deadline {
                if now >= at {
                    return Poll::Ready(StreamTimeoutError::new(after));
                }
            }
            if let Some(idle) = self.idle {
                if now >= self.last_activity + idle {
                    return Poll::Ready(StreamTimeoutError::idle(idle));
                }
            }
            match self.next_deadline() {
                Some(next) => self.sleep.as_mut().reset(next),
                None => return Poll::Pending,
            }
        }
    }
}
