//! [async-std](https://docs.rs/async-std) glue for [`coalescer`]: detached work and timeouts.
//!
//! **async-std has been discontinued upstream** ([RUSTSEC-2025-0052]): it gets no more fixes.
//! This adapter is kept for code that still runs on it. New code should use smol, which
//! async-std was built on, with `coalescer-smol`; the API there is the same.
//!
//! The core is executor-independent; what a runtime adds is spawning and timers. This crate adds
//! async-std's, and re-exports [`coalescer`] and its main types, so that one dependency line does:
//!
//! - [`AsyncStd`]: the spawner of a detached group (`Group::new().detached(AsyncStd::detach())`, whose
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
//! use coalescer_async_std::{Group, AsyncStd, timeout};
//! use std::{sync::Arc, time::Duration};
//!
//! # async_std::task::block_on(async {
//! let group = Arc::new(Group::<String, u64>::new().detached(AsyncStd::detach()));
//! let hits = group.work("hits", || async { 42 }).await?; // spawned: finishes even if we leave
//! let late = timeout(Duration::from_secs(5), group.work("hits", || async { 42 })).await?;
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
pub use coalescer::{self, Aborted, DetachedGroup, Error, Group, Outcome, SharedGroup, Single, TryGroup};

use async_std::task::JoinHandle;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
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
/// let group = Arc::new(Group::<u32, String>::new().detached(AsyncStd::abort_when_abandoned()));
/// let call = group.work(&7, || async {
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
/// # Examples
///
/// ```
/// use coalescer_async_std::{Group, timeout};
/// use std::time::Duration;
///
/// # async_std::task::block_on(async {
/// let group = Group::<String, u64>::new();
/// let slow = group.work("report", || std::future::pending());
/// let gave_up = timeout(Duration::from_millis(10), slow).await.unwrap_err();
/// assert!(gave_up.is_timed_out());
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
