//! What a runtime adds to the core: spawning (for detached work) and sleeping (for timeouts).
//! The adapter crates implement these traits in a few lines each; all coalescing logic stays
//! here.

use core::future::Future;

/// Spawns detached work on a runtime.
///
/// [`Group::work_detached`](crate::Group::work_detached) spawns the leader's work with it, so
/// the work runs to completion even if every caller walks away (Go's behaviour: the cache still
/// gets filled). The spawned task finishes the flight itself.
///
/// # Implementing
///
/// Spawn the future and return the task's handle. The core keeps the handle while the flight is
/// in the air and drops it when the flight is abandoned in abort mode
/// ([`aborts_when_abandoned`](Self::aborts_when_abandoned) returns true): dropping it must then
/// abort the task. In detach mode the handle is dropped with the flight, and dropping it must
/// leave the task running. A runtime that shuts down drops its tasks; the core notices that the
/// work was dropped unfinished and ends the flight with [`Aborted::shutdown`]. Panics in the
/// work are caught inside the task.
///
/// [`Aborted::shutdown`]: crate::Aborted::shutdown
pub trait Spawn {
    /// A spawned task's handle.
    type Task: Send + 'static;

    /// Spawns `task` (already wrapped by the core to finish the flight).
    fn spawn<Fut>(&self, task: Fut) -> Self::Task
    where
        Fut: Future<Output = ()> + Send + 'static;

    /// Whether the last caller leaving an unfinished flight aborts the work (true) or leaves it
    /// running to completion (false, Go's behaviour).
    fn aborts_when_abandoned(&self) -> bool;
}

/// Makes timers for [`Timeout`](crate::futures::Timeout).
pub trait Sleep {
    /// A timer that resolves once its deadline has passed.
    type Timer: Future<Output = ()>;

    /// A timer for `duration` from now.
    fn sleep(&self, duration: core::time::Duration) -> Self::Timer;
}
