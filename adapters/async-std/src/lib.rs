//! [async-std](https://docs.rs/async-std) glue for [`coalescer`]: detached work and timeouts.
//!
//! **async-std has been discontinued upstream** ([RUSTSEC-2025-0052]): it gets no more fixes.
//! This adapter is kept for code that still runs on it. New code should use smol, which
//! async-std was built on, with `coalescer-smol`; the API there is the same.
//!
//! The core is executor-independent; what a runtime adds is spawning and timers. This crate adds
//! async-std's, and re-exports [`coalescer`] and its main types, so that one dependency line does:
//!
//! - [`GroupExt::work_spawned`]: the leader's work is spawned on async-std's executor and runs to
//!   completion even if every caller walks away (Go's behaviour; the cache still gets filled).
//! - [`AsyncStd`]: the spawner and timer behind it, for [`Group::work_detached`] and
//!   [`Single::work_detached`], optionally cancelling the work when its last caller leaves.
//! - [`timeout`]: any call with a deadline; the caller gives up with [`TimedOut`] while the
//!   flight goes on for the others.
//!
//! # Examples
//!
//! ```
//! use coalescer_async_std::{Group, GroupExt, timeout};
//! use std::{sync::Arc, time::Duration};
//!
//! # async_std::task::block_on(async {
//! let group = Arc::new(Group::<&str, u64>::new());
//! let hits = group.work_spawned("hits", || async { 42 }).await?;
//! let late = timeout(Duration::from_secs(5), group.work("hits", || async { 42 })).await??;
//! assert_eq!((*hits.value(), *late.value()), (42, 42));
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! # Shutdown
//!
//! async-std's executor runs for the life of the process and never drops its tasks, so on
//! async-std a detached flight never ends with [`Aborted::is_shutdown`]: its work runs to
//! completion, or until it is cancelled by [`AsyncStd::abort_when_abandoned`].
//!
//! [RUSTSEC-2025-0052]: https://rustsec.org/advisories/RUSTSEC-2025-0052.html
#![forbid(unsafe_code)]

pub use coalescer::futures::{TimedOut, Timeout};
pub use coalescer::{self, Aborted, Error, Group, Outcome, Single, TryGroup};

use async_std::task::JoinHandle;
use coalescer::futures::Work;
use core::future::Future;
use core::hash::{BuildHasher, Hash};
use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;
use std::time::Duration;

/// Spawns detached work on async-std ([`coalescer::Spawn`]) and makes async-std timers
/// ([`coalescer::Sleep`]).
///
/// By default the work runs to completion even if every caller leaves;
/// [`abort_when_abandoned`](Self::abort_when_abandoned) cancels it when its last caller leaves.
///
/// # Examples
///
/// ```
/// use coalescer_async_std::{AsyncStd, Group};
/// use std::sync::Arc;
///
/// # async_std::task::block_on(async {
/// let group = Arc::new(Group::<u32, String>::new());
/// let call = group.work_detached(7, AsyncStd::abort_when_abandoned(), || async {
///     "seven".to_string()
/// });
/// assert_eq!(call.await?.value(), "seven");
/// # Ok::<(), coalescer_async_std::Aborted>(()) }).unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct AsyncStd {
    abort: bool,
}

impl AsyncStd {
    /// The work runs to completion even if every caller leaves. The same as
    /// [`AsyncStd::default`].
    pub fn detach() -> Self {
        Self::default()
    }

    /// The last caller to leave an unfinished flight cancels its work. The key is free again
    /// once the runtime has dropped the work; a caller that arrives meanwhile waits for that,
    /// then starts the key's next execution.
    pub fn abort_when_abandoned() -> Self {
        Self { abort: true }
    }
}

impl coalescer::Spawn for AsyncStd {
    type Task = AsyncStdTask;

    fn spawn<Fut>(&self, task: Fut) -> AsyncStdTask
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        AsyncStdTask { join: Some(async_std::task::spawn(task)), abort: self.abort }
    }

    fn aborts_when_abandoned(&self) -> bool {
        self.abort
    }
}

impl coalescer::Sleep for AsyncStd {
    type Timer = Timer;

    fn sleep(&self, duration: Duration) -> Timer {
        Timer(async_io::Timer::after(duration))
    }
}

/// A detached flight's task on async-std, kept by the flight. Dropping it cancels the task when
/// its [`AsyncStd`] was made with [`abort_when_abandoned`](AsyncStd::abort_when_abandoned), and
/// leaves it running otherwise (async-std's `JoinHandle` detaches on drop).
#[derive(Debug)]
pub struct AsyncStdTask {
    join: Option<JoinHandle<()>>,
    abort: bool,
}

impl Drop for AsyncStdTask {
    fn drop(&mut self) {
        if let Some(join) = self.join.take().filter(|_| self.abort) {
            // async-std cancels only through an async `cancel`: hand it to a task of its own,
            // which drops the work on the executor (this `drop` may run on any thread).
            drop(async_std::task::spawn(join.cancel()));
        }
    }
}

/// An async-std timer that resolves to `()` once its deadline has passed (what
/// [`coalescer::Sleep`] asks for).
#[derive(Debug)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Timer(async_io::Timer);

impl Future for Timer {
    type Output = ();

    /// # Cancel safety
    ///
    /// Dropping it drops the timer; nothing else happens.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}

/// Detached work on async-std's executor, as a method of `Arc<Group>`.
pub trait GroupExt<K: Hash + Eq + Clone, V: Clone, S: BuildHasher> {
    /// [`Group::work_detached`] with [`AsyncStd::detach`]: the leader's work is spawned on
    /// async-std's executor and runs to completion even if every caller leaves; a caller that
    /// arrives while it runs joins it.
    ///
    /// # Cancel safety
    ///
    /// Dropping any caller, the leader included, never affects the work or the other callers.
    ///
    /// # Panics
    ///
    /// A panic in the work is caught in its task: every caller gets [`Aborted`] with
    /// [`is_panic`](Aborted::is_panic).
    ///
    /// # Examples
    ///
    /// ```
    /// use coalescer_async_std::{Group, GroupExt};
    /// use std::sync::Arc;
    ///
    /// # async_std::task::block_on(async {
    /// let group = Arc::new(Group::<u64, u64>::new());
    /// let (filled, cache) = async_std::channel::bounded(1);
    /// let (caller_present, caller_left) = async_std::channel::bounded::<()>(1);
    /// let call = group.work_spawned(1, || async move {
    ///     let _ = caller_left.recv().await; // a slow query
    ///     filled.send(1).await.unwrap();
    ///     1
    /// });
    /// // The only caller gives up at once...
    /// assert!(async_std::future::timeout(std::time::Duration::ZERO, call).await.is_err());
    /// drop(caller_present);
    /// // ...and the work still fills the cache.
    /// assert_eq!(cache.recv().await, Ok(1));
    /// # });
    /// ```
    fn work_spawned<F, Fut>(&self, key: K, work: F) -> Work<'_, Group<K, V, S>, F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static;
}

impl<K, V, S> GroupExt<K, V, S> for Arc<Group<K, V, S>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    fn work_spawned<F, Fut>(&self, key: K, work: F) -> Work<'_, Group<K, V, S>, F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.work_detached(key, AsyncStd::detach(), work)
    }
}

/// `call` with a deadline `duration` from now: resolves to `Ok` with the call's output, or to
/// `Err(`[`TimedOut`]`)` when the deadline passes first. Works with any call of the crate
/// (`work`, `work_shared`, `try_work`, detached work) and with any other future.
///
/// # Cancel safety
///
/// Giving up, like dropping the returned future, drops the call: the caller leaves its flight as
/// described in the `# Cancel safety` section of the method that made the call. The flight and
/// its other callers go on.
///
/// # Examples
///
/// ```
/// use coalescer_async_std::{Group, timeout};
/// use std::time::Duration;
///
/// # async_std::task::block_on(async {
/// let group = Group::<&str, u64>::new();
/// let slow = group.work("report", || std::future::pending());
/// let gave_up = timeout(Duration::from_millis(10), slow).await;
/// assert!(gave_up.is_err());
/// assert!(group.is_idle()); // nobody else was waiting: the key is free
/// # });
/// ```
pub fn timeout<W: Future>(duration: Duration, call: W) -> Timeout<W, Timer> {
    Timeout::new(call, Timer(async_io::Timer::after(duration)))
}

/// The loader cache on async-std, in one call: [`on_async_std`](CacheExt::on_async_std) gives a
/// [`CacheBuilder`](coalescer::cache::CacheBuilder) this runtime's spawner (background refreshes
/// run to their end as detached tasks) and timer (soft and hard timeouts). Named after the
/// runtime, so that two adapters' traits in scope never clash.
pub trait CacheExt {
    /// Refreshes spawned on async-std ([`AsyncStd::detach`]) and timeouts on its timer.
    ///
    /// # Examples
    ///
    /// ```
    /// use coalescer_async_std::CacheExt;
    /// async_std::task::block_on(async {
    ///     let cache = coalescer_async_std::coalescer::cache::Cache::<u32, u32>::builder().on_async_std().build();
    ///     assert_eq!(*cache.get_with(1, || async { 7 }).await.unwrap().value(), 7);
    /// });
    /// ```
    #[must_use]
    fn on_async_std(self) -> Self;
}

impl<K, V, E, S> CacheExt for coalescer::cache::CacheBuilder<K, V, E, S> {
    fn on_async_std(self) -> Self {
        self.spawner(AsyncStd::detach()).timer(AsyncStd::detach())
    }
}
