//! How a caller's closure becomes the work: [`Start`], and the error-sharing adapter behind the
//! fallible forms.

use alloc::sync::Arc;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

/// Starts the work: implemented for every `FnOnce() -> Fut`. A follower keeps its own closure
/// and calls it only if it is promoted (work mode), so a closure is called at most once and most
/// closures are never called.
pub trait Start<Fut> {
    /// Calls the closure.
    fn start(self) -> Fut;
}

impl<F: FnOnce() -> Fut, Fut> Start<Fut> for F {
    fn start(self) -> Fut {
        self()
    }
}

/// The closure of a fallible call: its work's error is wrapped in an `Arc` to be shared.
#[doc(hidden)]
#[derive(Debug)]
pub struct TryStart<F>(pub(crate) F);

impl<F: FnOnce() -> Fut, Fut> Start<ShareErr<Fut>> for TryStart<F> {
    fn start(self) -> ShareErr<Fut> {
        ShareErr { fut: (self.0)() }
    }
}

pin_project_lite::pin_project! {
    /// The work of a fallible call, with its error put behind an `Arc` (internal).
    #[doc(hidden)]
    #[derive(Debug)]
    pub struct ShareErr<Fut> {
        #[pin]
        fut: Fut,
    }
}

impl<Fut: Future<Output = Result<T, E>>, T, E> Future for ShareErr<Fut> {
    type Output = Result<T, Arc<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().fut.poll(cx).map(|r| r.map_err(Arc::new))
    }
}
