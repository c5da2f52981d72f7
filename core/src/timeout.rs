//! [`Timeout`]: a waiter that gives up at a deadline without touching the flight.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use pin_project_lite::pin_project;

pin_project! {
    /// A call that gives up when its timer fires first.
    ///
    /// It resolves to what the call resolves to, a `Result`, with the deadline as one more
    /// error: [`TimedOut`] converted into the call's error type (`Aborted` or `Error<E>`, whose
    /// [`is_timed_out`](crate::Aborted::is_timed_out) then says so). So a call with a deadline
    /// is awaited with one `?`, like any other call.
    ///
    /// Giving up drops the call's future, which leaves the flight exactly like any dropped
    /// caller (see the `# Cancel safety` section of the method that made it): the flight and
    /// its other waiters go on. Made by the runtime adapters from a [`Sleep`](crate::Sleep).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// use coalescer::futures::Timeout;
    /// let group = coalescer::Group::<u8, u8>::new();
    /// // A timer that has already fired, and work that never finishes.
    /// let err = Timeout::new(group.work(&1, || std::future::pending()), std::future::ready(())).await.unwrap_err();
    /// assert!(err.is_timed_out());
    /// assert!(group.is_idle()); // the leader gave up; nobody was waiting; the key is free
    /// # });
    /// ```
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Timeout<W, T> {
        #[pin]
        call: W,
        #[pin]
        timer: T,
    }
}

impl<W, T> Timeout<W, T> {
    /// `call`, given up when `timer` fires first.
    pub fn new(call: W, timer: T) -> Self {
        Self { call, timer }
    }

    /// Gives the call back (for example, to wait on without a deadline after all).
    pub fn into_inner(self) -> W {
        self.call
    }
}

impl<W, T, V, E> Future for Timeout<W, T>
where
    W: Future<Output = Result<V, E>>,
    T: Future<Output = ()>,
    E: From<TimedOut>,
{
    type Output = Result<V, E>;

    /// # Cancel safety
    ///
    /// Dropping it drops the call, with the call's own cancel safety.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.call.poll(cx) {
            return Poll::Ready(output);
        }
        this.timer.poll(cx).map(|()| Err(TimedOut(()).into()))
    }
}

impl<W: fmt::Debug, T> fmt::Debug for Timeout<W, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout").field("call", &self.call).finish_non_exhaustive()
    }
}

/// A caller gave up waiting at its deadline. The flight it left goes on for the others.
///
/// A [`Timeout`] converts it into the call's error type ([`Aborted`](crate::Aborted) with
/// [`Cause::TimedOut`](crate::Cause::TimedOut), or an [`Error`](crate::Error) holding that);
/// an error type of your own that should carry deadlines implements `From<TimedOut>`.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let group = coalescer::Group::<u8, u8>::new();
/// let gave_up = coalescer::futures::Timeout::new(group.work(&1, std::future::pending), async {}).await;
/// assert_eq!(gave_up.unwrap_err().to_string(), "gave up waiting for the coalesced work at the deadline");
/// let aborted: coalescer::Aborted = coalescer::futures::TimedOut::default().into();
/// assert!(aborted.is_timed_out());
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimedOut(());

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("gave up waiting for the coalesced work at the deadline")
    }
}

impl core::error::Error for TimedOut {}
