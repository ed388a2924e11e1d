//! The service's response body: the measured inner body, or an answer of the monitor's own.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::measured::MeasuredBody;
use super::tracked::TrackedBox;
use crate::classify::BoxError;

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Measured { #[pin] body: MeasuredBody<B> },
        Own { data: Option<Bytes> },
    }
}

pin_project! {
    /// The response body of [`StreamMonitorService`](super::StreamMonitorService): the inner
    /// body, measured frame by frame, or a small body of the monitor's own (a 504 for a request
    /// whose deadline passed before its response started, or a monitoring endpoint's answer).
    ///
    /// The measured body forwards `size_hint`, `is_end_stream` and trailers untouched; the
    /// deadline and idle timeout end it with a [`StreamTimeoutError`](super::StreamTimeoutError),
    /// or, for `text/event-stream`, with a final SSE `event: error` so an `EventSource` sees
    /// why. Its request is recorded exactly once: at the end of the stream, on an error or
    /// timeout, or when it is dropped.
    pub struct MonitoredBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

impl<B> MonitoredBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    #[inline]
    pub(crate) fn measured(body: B, tracked: TrackedBox, end: bool) -> Self {
        Self {
            kind: Kind::Measured {
                body: MeasuredBody::measured(body, tracked, end),
            },
        }
    }
}

impl<B> MonitoredBody<B> {
    /// The inner body passed through without measurement.
    pub(crate) fn unmeasured(body: B) -> Self {
        Self {
            kind: Kind::Measured {
                body: MeasuredBody::unmeasured(body),
            },
        }
    }

    /// A body the monitor answers with itself; not measured.
    pub(crate) fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Own { data: Some(data) },
        }
    }
}

impl<B> Body for MonitoredBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Measured { body } => body.poll_frame(cx),
            KindProj::Own { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d.into())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Measured { body } => body.is_end_stream(),
            Kind::Own { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Measured { body } => body.size_hint(),
            Kind::Own { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}
