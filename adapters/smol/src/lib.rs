//! [smol](https://docs.rs/smol) glue for [`coalescer`]: detached work and timeouts.
//!
//! The core is executor-independent; what a runtime adds is spawning and timers. This crate adds
//! smol's, and re-exports [`coalescer`] and its main types, so that one dependency line does:
//!
//! - [`Smol`]: the spawner of a detached group (`Group::new().detached(Smol::detach())`, whose
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
//! use coalescer_smol::{Group, Smol, timeout};
//! use std::{sync::Arc, time::Duration};
//!
//! # smol::block_on(async {
//! let group = Arc::new(Group::<String, u64>::new().detached(Smol::detach()));
//! let hits = group.work("hits", || async { 42 }).await?; // spawned: finishes even if we leave
//! let late = timeout(Duration::from_secs(5), group.work("hits", || async { 42 })).await?;
//! assert_eq!((*hits.value(), *late.value()), (42, 42));
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! # Shutdown
//!
//! Dropping an [`Executor`] drops its tasks. When it drops a detached flight's task before the
//! work finished, every caller of that flight gets [`Aborted`] with
//! [`is_shutdown`](Aborted::is_shutdown), at once: callers elsewhere never hang. The key is free
//! again. (smol's global executor lives as long as the process.)
//!
//! ```
//! use coalescer_smol::{Group, Smol};
//! use std::sync::Arc;
//!
//! let executor = Arc::new(smol::Executor::new());
//! let group = Arc::new(Group::<u8, u8>::new().detached(Smol::detach().on(&executor)));
//! let call = smol::spawn({
//!     let group = group.clone();
//!     async move { group.work(&1, std::future::pending).await }
//! });
//! while group.in_flight() == 0 {
//!     std::thread::yield_now(); // until the caller has started the flight
//! }
//! drop(executor); // drops the work, unfinished
//! assert!(smol::block_on(call).unwrap_err().is_shutdown());
//! assert!(group.is_idle());
//! ```
#![forbid(unsafe_code)]

pub use coalescer::futures::{TimedOut, Timeout};
pub use coalescer::{self, Aborted, DetachedGroup, Error, Group, Outcome, SharedGroup, Single, TryGroup};

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use smol::Executor;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Spawns detached work on smol ([`coalescer::Spawn`]) and makes smol timers
/// ([`coalescer::Sleep`]).
///
/// By default the work is spawned on smol's global executor (`smol::spawn`), and it runs to
/// completion even if every caller leaves. [`on`](Self::on) spawns on an [`Executor`] of your
/// own instead; [`abort_when_abandoned`](Self::abort_when_abandoned) cancels the work when its
/// last caller leaves.
///
/// # Examples
///
/// ```
/// use coalescer_smol::{Group, Smol};
/// use std::sync::Arc;
///
/// let executor = Arc::new(smol::Executor::new());
/// let group = Arc::new(Group::<u32, String>::new().detached(Smol::abort_when_abandoned().on(&executor)));
/// let call = group.work(&7, || async { "seven".to_string() });
/// let name = smol::block_on(executor.run(call))?;
/// assert_eq!(name.value(), "seven");
/// # Ok::<(), coalescer_smol::Aborted>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Smol {
    executor: Option<Weak<Executor<'static>>>,
    abort: bool,
}

impl Smol {
    /// Spawns on smol's global executor; the work runs to completion even if every caller
    /// leaves. The same as [`Smol::default`].
    pub fn detach() -> Self {
        Self::default()
    }

    /// Spawns on smol's global executor; the last caller to leave an unfinished flight cancels
    /// its work. The key is free again once the runtime has dropped the work; a caller that
    /// arrives meanwhile waits for that, then starts the key's next execution.
    pub fn abort_when_abandoned() -> Self {
        Self { executor: None, abort: true }
    }

    /// Spawns on `executor`, without keeping it alive: once it has been dropped, new work is
    /// dropped at once and the flight's callers get [`Aborted`] with
    /// [`is_shutdown`](Aborted::is_shutdown). Somebody must run the executor
    /// ([`Executor::run`]) for the work to make progress.
    pub fn on(self, executor: &Arc<Executor<'static>>) -> Self {
        Self { executor: Some(Arc::downgrade(executor)), ..self }
    }
}

impl coalescer::Spawn for Smol {
    type Task = SmolTask;

    fn spawn<Fut>(&self, task: Fut) -> SmolTask
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = match &self.executor {
            None => smol::spawn(task),
            Some(executor) => match executor.upgrade() {
                Some(executor) => executor.spawn(task),
                // Dropping the work unfinished ends the flight with `Aborted::shutdown`.
                None => return SmolTask(None),
            },
        };
        if self.abort {
            SmolTask(Some(task))
        } else {
            task.detach();
            SmolTask(None)
        }
    }

    fn aborts_when_abandoned(&self) -> bool {
        self.abort
    }
}

impl coalescer::Sleep for Smol {
    type Timer = Timer;

    fn sleep(&self, duration: Duration) -> Timer {
        Timer(smol::Timer::after(duration))
    }
}

/// A detached flight's task on smol, kept by the flight. Dropping it cancels the task when its
/// [`Smol`] was made with [`abort_when_abandoned`](Smol::abort_when_abandoned); otherwise the
/// task was detached when it was spawned and keeps running.
#[derive(Debug)]
pub struct SmolTask(#[allow(dead_code)] Option<smol::Task<()>>);

/// A smol timer that resolves to `()` once its deadline has passed (what
/// [`coalescer::Sleep`] asks for).
#[derive(Debug)]
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Timer(smol::Timer);

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
/// use coalescer_smol::{Group, timeout};
/// use std::time::Duration;
///
/// # smol::block_on(async {
/// let group = Group::<String, u64>::new();
/// let slow = group.work("report", || std::future::pending());
/// let gave_up = timeout(Duration::from_millis(10), slow).await.unwrap_err();
/// assert!(gave_up.is_timed_out());
/// assert!(group.is_idle()); // nobody else was waiting: the key is free
/// # });
/// ```
pub fn timeout<W: Future>(duration: Duration, call: W) -> Timeout<W, Timer> {
    Timeout::new(call, Timer(smol::Timer::after(duration)))
}

/// The loader cache on smol, in one call: [`on_smol`](CacheExt::on_smol) gives a
/// [`CacheBuilder`](coalescer::cache::CacheBuilder) this runtime's spawner (background refreshes
/// run to their end as detached tasks) and timer (soft and hard timeouts). Named after the
/// runtime, so that two adapters' traits in scope never clash.
pub trait CacheExt {
    /// Refreshes spawned on smol ([`Smol::detach`]) and timeouts on its timer.
    ///
    /// # Examples
    ///
    /// ```
    /// use coalescer_smol::CacheExt;
    /// smol::block_on(async {
    ///     let cache = coalescer_smol::coalescer::cache::Cache::<u32, u32>::builder().on_smol().build();
    ///     assert_eq!(*cache.get_with(1, || async { 7 }).await.unwrap().value(), 7);
    /// });
    /// ```
    #[must_use]
    fn on_smol(self) -> Self;
}

impl<K, V, E, S> CacheExt for coalescer::cache::CacheBuilder<K, V, E, S> {
    fn on_smol(self) -> Self {
        self.spawner(Smol::detach()).timer(Smol::detach())
    }
}
