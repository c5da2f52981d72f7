//! What a runtime adds to the core: spawning (for detached work) and sleeping (for timeouts).
//! The adapter crates implement these traits in a few lines each; all coalescing logic stays
//! here.

use core::future::Future;

/// Spawns detached work on a runtime.
///
/// A [detached group](crate::DetachedGroup) spawns its leaders' work with it, so
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
/// # Examples
///
/// A spawner that runs each task on a thread of its own (the adapters spawn on their runtime):
///
/// ```
/// #[derive(Clone)]
/// struct OnThread;
/// impl coalescer::Spawn for OnThread {
///     type Task = std::thread::JoinHandle<()>;
///     fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task {
///         std::thread::spawn(move || futures_lite::future::block_on(task))
///     }
///     fn aborts_when_abandoned(&self) -> bool {
///         false // dropping a JoinHandle leaves the thread running: detach mode
///     }
/// }
/// let group = std::sync::Arc::new(coalescer::Group::<u8, u8>::new().detached(OnThread));
/// let v = futures_lite::future::block_on(group.work(&1, || async { 2 }));
/// assert_eq!(v.unwrap().into_value(), 2);
/// ```
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
///
/// # Examples
///
/// ```
/// use coalescer::{Sleep, futures::Timeout};
/// use std::time::Duration;
/// struct Tokio;
/// impl Sleep for Tokio {
///     type Timer = tokio::time::Sleep;
///     fn sleep(&self, d: Duration) -> Self::Timer {
///         tokio::time::sleep(d)
///     }
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let group = coalescer::Group::<u8, u8>::new();
/// let call = group.work(&1, || std::future::pending());
/// assert!(Timeout::new(call, Tokio.sleep(Duration::from_millis(1))).await.is_err());
/// # });
/// ```
pub trait Sleep {
    /// A timer that resolves once its deadline has passed.
    type Timer: Future<Output = ()>;

    /// A timer for `duration` from now.
    fn sleep(&self, duration: core::time::Duration) -> Self::Timer;
}
