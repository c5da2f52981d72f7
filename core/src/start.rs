//! How a caller's closure becomes the work: [`Start`], implemented for plain closures, for the
//! fallible forms ([`TryStart`]).

use crate::outcome::Aborted;
use crate::sync::StdArc as Arc;
use core::future::Future;

/// Starts the work of a flight whose value is `V`, and turns what the work returns into that
/// value (or into [`Aborted`], for work that can end without one).
///
/// Implemented for every `FnOnce() -> impl Future<Output = V>`. A follower keeps its own
/// closure and calls it only if it is promoted (work mode), so a closure is called at most once
/// and most closures are never called.
///
/// # Examples
///
/// ```
/// use coalescer::futures::Start;
/// let start = || async { 3 };
/// let work = Start::<u8>::start(start);
/// assert_eq!(futures_lite::future::block_on(work), 3);
/// ```
pub trait Start<V> {
    /// The work.
    type Future: Future;

    /// Calls the closure.
    fn start(self) -> Self::Future;

    /// Turns the work's output into the flight's value.
    fn finish(output: <Self::Future as Future>::Output) -> Result<V, Aborted>;
}

impl<F: FnOnce() -> Fut, Fut: Future> Start<Fut::Output> for F {
    type Future = Fut;

    fn start(self) -> Fut {
        self()
    }

    fn finish(output: Fut::Output) -> Result<Fut::Output, Aborted> {
        Ok(output)
    }
}

/// The closure of a fallible call: its work's error is put behind an `Arc`, to be shared.
#[doc(hidden)]
#[derive(Debug)]
pub struct TryStart<F>(pub(crate) F);

impl<F, Fut, T, E> Start<Result<T, Arc<E>>> for TryStart<F>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Future = Fut;

    fn start(self) -> Fut {
        (self.0)()
    }

    fn finish(output: Result<T, E>) -> Result<Result<T, Arc<E>>, Aborted> {
        Ok(output.map_err(Arc::new))
    }
}
