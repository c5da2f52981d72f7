//! What a runtime adds to the core: spawning (for detached work) and sleeping (for timeouts).
//! The adapter crates implement these traits in a few lines each; all coalescing logic stays
//! here.

use crate::outcome::Aborted;
use core::future::Future;

/// Spawns detached work on a runtime.
///
/// [`Group::work_detached`](crate::Group::work_detached) spawns the leader's work with it, so
/// the work runs to completion even if every caller walks away (Go's behaviour: the cache still
/// gets filled). The flight waits for the spawned task like any shared work.
///
/// # Implementing
///
/// The task future resolves to `Err(Aborted::shutdown())` when the runtime dropped the task
/// before it finished (it is shutting down), and to `Err(Aborted::panic(..))` when the task
/// panicked. What dropping the task future does is the implementation's choice, which the
/// adapters expose as an option: detach (the work goes on) or abort the spawned work.
pub trait Spawn {
    /// A spawned task's handle, polled by the flight's waiters.
    type Task<T: Send + 'static>: Future<Output = Result<T, Aborted>> + Send + 'static;

    /// Spawns `work`.
    fn spawn<Fut>(&self, work: Fut) -> Self::Task<Fut::Output>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static;
}

/// Makes timers for [`Timeout`](crate::futures::Timeout).
pub trait Sleep {
    /// A timer that resolves once its deadline has passed.
    type Timer: Future<Output = ()>;

    /// A timer for `duration` from now.
    fn sleep(&self, duration: core::time::Duration) -> Self::Timer;
}
