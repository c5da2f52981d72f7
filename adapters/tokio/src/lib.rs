//! [tokio](https://docs.rs/tokio) glue for [`coalescer`]: detached work and timeouts.
//!
//! The core is executor-independent; what a runtime adds is spawning and timers. This crate adds
//! tokio's, and re-exports [`coalescer`] and its main types, so that one dependency line does:
//!
//! - [`Tokio`]: the spawner of a detached group (`Group::new().detached(Tokio::detach())`, whose
//!   leaders' work runs to completion even if every caller walks away: Go's behaviour; the cache
//!   still gets filled), and the timer of timeouts and of the loader cache.
//! - [`timeout`]: any call with a deadline; the caller gives up with an error whose
//!   [`is_timed_out`](Aborted::is_timed_out) is true (one `?` for both) while the flight goes on
//!   for the others.
//! - [`CacheExt`]: the loader cache on this runtime in one call.
//!
//! # Examples
//!
//! ```
//! use coalescer_tokio::{Group, Tokio, timeout};
//! use std::{sync::Arc, time::Duration};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let group = Arc::new(Group::<String, u64>::new().detached(Tokio::detach()));
//! let hits = group.work("hits", || async { 42 }).await?; // spawned: finishes even if we leave
//! let late = timeout(Duration::from_secs(5), group.work("hits", || async { 42 })).await?;
//! assert_eq!((*hits.value(), *late.value()), (42, 42));
//! # Ok(()) }
//! ```
//!
//! # Shutdown
//!
//! A runtime that shuts down drops its tasks. When it drops a detached flight's task before the
//! work finished, every caller of that flight gets [`Aborted`] with
//! [`is_shutdown`](Aborted::is_shutdown), at once: callers on other runtimes or threads never
//! hang. The key is free again.
//!
//! ```
//! use coalescer_tokio::{Group, Tokio};
//! use std::sync::Arc;
//!
//! let doomed = tokio::runtime::Runtime::new()?;
//! let caller = tokio::runtime::Runtime::new()?;
//! let group = Arc::new(Group::<u8, u8>::new().detached(Tokio::detach().on(doomed.handle().clone())));
//! let call = caller.spawn({
//!     let group = group.clone();
//!     async move { group.work(&1, std::future::pending).await }
//! });
//! while group.in_flight() == 0 {
//!     std::thread::yield_now(); // until the caller has started the flight
//! }
//! drop(doomed); // drops the work, unfinished
//! assert!(caller.block_on(call)?.unwrap_err().is_shutdown());
//! assert!(group.is_idle());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub use coalescer::futures::{TimedOut, Timeout};
pub use coalescer::{self, Aborted, DetachedGroup, Error, Group, Outcome, SharedGroup, Single, TryGroup};

use core::future::Future;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Spawns detached work on tokio ([`coalescer::Spawn`]) and makes tokio timers
/// ([`coalescer::Sleep`]).
///
/// By default the work is spawned on the runtime of the caller that starts the flight, and it
/// runs to completion even if every caller leaves. [`on`](Self::on) picks a runtime by its
/// [`Handle`] instead; [`abort_when_abandoned`](Self::abort_when_abandoned) aborts the work when
/// its last caller leaves.
///
/// # Panics
///
/// Without [`on`](Self::on), spawning and making a timer panic outside a tokio runtime's context
/// (tokio's own rule). A panic while spawning reaches the caller that started the flight; its
/// followers get [`Aborted`] and the key is freed. Timers panic on a runtime built without
/// `enable_time`.
///
/// # Examples
///
/// ```
/// use coalescer_tokio::{Group, Tokio};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), coalescer_tokio::Aborted> {
/// let spawner = Tokio::abort_when_abandoned().on(tokio::runtime::Handle::current());
/// let group = Arc::new(Group::<u32, String>::new().detached(spawner));
/// let name = group.work(&7, || async { "seven".to_string() }).await?;
/// assert_eq!(name.value(), "seven");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Tokio {
    handle: Option<Handle>,
    abort: bool,
}

impl Tokio {
    /// Spawns on the current runtime; the work runs to completion even if every caller leaves.
    /// The same as [`Tokio::default`].
    pub fn detach() -> Self {
        Self::default()
    }

    /// Spawns on the current runtime; the last caller to leave an unfinished flight aborts its
    /// work. The key is free again once the runtime has dropped the work; a caller that arrives
    /// meanwhile waits for that, then starts the key's next execution.
    pub fn abort_when_abandoned() -> Self {
        Self { handle: None, abort: true }
    }

    /// Spawns on, and makes timers for, the runtime of `handle` (from any thread, inside a
    /// runtime or not). If that runtime has shut down, the work is dropped at once and the
    /// flight's callers get [`Aborted`] with [`is_shutdown`](Aborted::is_shutdown).
    pub fn on(self, handle: Handle) -> Self {
        Self { handle: Some(handle), ..self }
    }
}

impl coalescer::Spawn for Tokio {
    type Task = TokioTask;

    fn spawn<Fut>(&self, task: Fut) -> TokioTask
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let join = match &self.handle {
            Some(handle) => handle.spawn(task),
            None => tokio::spawn(task),
        };
        TokioTask { join, abort: self.abort }
    }

    fn aborts_when_abandoned(&self) -> bool {
        self.abort
    }
}

impl coalescer::Sleep for Tokio {
    type Timer = tokio::time::Sleep;

    fn sleep(&self, duration: Duration) -> tokio::time::Sleep {
        let _context = self.handle.as_ref().map(Handle::enter);
        tokio::time::sleep(duration)
    }
}

/// A detached flight's task on tokio, kept by the flight. Dropping it aborts the task when its
/// [`Tokio`] was made with [`abort_when_abandoned`](Tokio::abort_when_abandoned), and leaves it
/// running otherwise (tokio's `JoinHandle` detaches on drop).
#[derive(Debug)]
pub struct TokioTask {
    join: JoinHandle<()>,
    abort: bool,
}

impl Drop for TokioTask {
    fn drop(&mut self) {
        if self.abort {
            self.join.abort();
        }
    }
}

/// `call` with a deadline `duration` from now: resolves to what the call resolves to, or, when
/// the deadline passes first, to the call's error made from [`TimedOut`] ([`Aborted`] or
/// [`Error`], whose `is_timed_out` is then true), so one `?` handles both. Works with every call
/// of the crate (`work`, `try_work`, in every mode) and with any future that resolves to a
/// `Result` whose error is `From<TimedOut>`.
///
/// # Cancel safety
///
/// Giving up, like dropping the returned future, drops the call: the caller leaves its flight as
/// described in the `# Cancel safety` section of the method that made the call. The flight and
/// its other callers go on.
///
/// # Panics
///
/// Outside a tokio runtime's context, or on a runtime built without `enable_time`. (A
/// [`Tokio`] made with [`on`](Tokio::on) makes timers from anywhere: use
/// [`Timeout::new`]`(call, `[`Sleep::sleep`](coalescer::Sleep::sleep)`(..))`.)
///
/// # Examples
///
/// ```
/// use coalescer_tokio::{Group, timeout};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let group = Group::<String, u64>::new();
/// let slow = group.work("report", || std::future::pending());
/// let gave_up = timeout(Duration::from_millis(10), slow).await.unwrap_err();
/// assert!(gave_up.is_timed_out());
/// assert!(group.is_idle()); // nobody else was waiting: the key is free
/// # }
/// ```
pub fn timeout<W: Future>(duration: Duration, call: W) -> Timeout<W, tokio::time::Sleep> {
    Timeout::new(call, tokio::time::sleep(duration))
}

/// The loader cache on tokio, in one call: [`on_tokio`](CacheExt::on_tokio) gives a
/// [`CacheBuilder`](coalescer::cache::CacheBuilder) this runtime's spawner (background refreshes
/// run to their end as detached tasks) and timer (soft and hard timeouts). Named after the
/// runtime, so that two adapters' traits in scope never clash.
pub trait CacheExt {
    /// Refreshes spawned on tokio ([`Tokio::detach`]) and timeouts on its timer.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use coalescer_tokio::CacheExt;
    /// let cache = coalescer_tokio::coalescer::cache::Cache::<u32, u32>::builder().on_tokio().build();
    /// assert_eq!(*cache.get_with(1, || async { 7 }).await.unwrap().value(), 7);
    /// # }
    /// ```
    #[must_use]
    fn on_tokio(self) -> Self;
}

impl<K, V, E, S> CacheExt for coalescer::cache::CacheBuilder<K, V, E, S> {
    fn on_tokio(self) -> Self {
        self.spawner(Tokio::detach()).timer(Tokio::detach())
    }
}
