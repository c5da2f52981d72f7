//! [`CoalescedBody`]: the body of every response the layer hands out.

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The body of a response from [`Coalesce`](crate::Coalesce): a buffered body shared by the
/// callers of a flight (a clone of one [`Bytes`], no copy), or the inner service's own body
/// for a response that was not coalesced (passed through, too large to buffer, or not
/// shareable), with the bytes already read from it, if any, in front.
///
/// # Examples
///
/// ```
/// use http_body_util::BodyExt;
/// let body = coalescer_tower::CoalescedBody::<http_body_util::Empty<bytes::Bytes>>::full("hi".into());
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
/// # });
/// ```
pub struct CoalescedBody<B: Body> {
    kind: Kind<B>,
}

enum Kind<B: Body> {
    /// A buffered body: its data (taken when sent) and trailers.
    Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
    /// The inner service's body: the chunks already read from it, then the rest of it (or the
    /// error that stopped the read).
    Own { read: VecDeque<Bytes>, rest: Option<Pin<Box<B>>>, error: Option<B::Error> },
}

impl<B: Body> CoalescedBody<B> {
    /// A body of these bytes.
    pub fn full(data: Bytes) -> Self {
        Self::buffered(data, None)
    }

    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self { kind: Kind::Full { data, trailers } }
    }

    /// The inner service's body, passed through.
    pub(crate) fn own(body: B) -> Self {
        Self::resumed(VecDeque::new(), Box::pin(body))
    }

    /// The inner service's body, of which `read` was already read.
    pub(crate) fn resumed(read: VecDeque<Bytes>, rest: Pin<Box<B>>) -> Self {
        Self { kind: Kind::Own { read, rest: Some(rest), error: None } }
    }

    /// The chunks read before the inner body failed with `error`.
    pub(crate) fn failed(read: VecDeque<Bytes>, error: B::Error) -> Self {
        Self { kind: Kind::Own { read, rest: None, error: Some(error) } }
    }

    /// Whether the body is a buffered one (shared, or built by the layer).
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Full { .. })
    }
}

// Nothing in it is ever pinned in place: the inner body is behind its own `Pin<Box<_>>`.
impl<B: Body> Unpin for CoalescedBody<B> {}

impl<B: Body<Data = Bytes>> Body for CoalescedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|trailers| Ok(Frame::trailers(trailers))))
            }
            Kind::Own { read, rest, error } => {
                if let Some(chunk) = read.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                match rest {
                    Some(body) => body.as_mut().poll_frame(cx),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Own { read, rest, error } => {
                read.is_empty() && error.is_none() && rest.as_ref().is_none_or(|body| body.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, .. } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Own { read, rest, .. } => {
                let read: u64 = read.iter().map(|chunk| chunk.len() as u64).sum();
                let mut hint = rest.as_ref().map_or_else(|| SizeHint::with_exact(0), |body| body.size_hint());
                // Upper first: `set_lower` asserts that the lower bound stays below the upper.
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper + read);
                }
                hint.set_lower(hint.lower() + read);
                hint
            }
        }
    }
}

impl<B: Body> fmt::Debug for CoalescedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full { data, .. } => f
                .debug_struct("CoalescedBody")
                .field("buffered", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Own { read, .. } => {
                f.debug_struct("CoalescedBody").field("own_read_chunks", &read.len()).finish()
            }
        }
    }
}
