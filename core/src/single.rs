//! [`Single`]: request coalescing for one implicit key, without a map (and without `std`).

use crate::detached::{OwnSpawner, Spawner};
use crate::flight::{Flight, Mode};
use crate::mode::{Detached, Inline, Shared};
#[cfg(feature = "std")]
use crate::outcome::{Aborted, Error, Outcome, split_try};
use crate::spawn::Spawn;
use crate::start::TryStart;
use crate::stats::{Counters, Event, Stats};
use crate::sync::StdArc;
use crate::sync::{Arc, Mutex, arc_in_place};
use crate::table::{Joined, Table, sealed};
use crate::work::{Lead, SharedOps, TryWork, Work};
use core::fmt;
use core::future::Future;

/// Coalesces concurrent calls for one implicit key: a [`Group`](crate::Group) with a single
/// slot and no hash map. It builds without `std` (`default-features = false`), for firmware and
/// kernels that refresh one resource (a token, a configuration) from many tasks.
///
/// The same modes, cancel safety and panic behaviour as [`Group`](crate::Group); see there. The
/// mode is its second type parameter, as for a group: [`Single::new`] runs the work in the
/// leader's future, [`.shared()`](Single::shared) in the flight, [`.detached(spawner)`](Single::detached)
/// in a spawned task.
/// Its slot is guarded by a lock held for an `Arc` clone or a pointer comparison, never while
/// user code runs: `std::sync::Mutex` with `std`, a spin lock without it.
///
/// # Unwind safety
///
/// As for [`Group`](crate::Group#unwind-safety), less the key (there is none): a panic in the
/// work, its `Drop`, `V::clone` or a `Spawn` ends the flight once or stays with the caller whose
/// code panicked, and the slot is always freed. Without `std`, a panic unwinds through the
/// caller's future like a cancellation: the guards on the way give back what it held (the
/// driver's role, the finisher's), and the slot's spin lock is never held while user code runs.
///
/// # Examples
///
/// ```
/// # futures_lite::future::block_on(async {
/// let token = coalescer::Single::<String>::new();
/// let t = token.work(|| async { "fresh-token".to_string() }).await.unwrap();
/// assert_eq!(t.value(), "fresh-token");
/// assert!(token.is_idle());
/// # });
/// ```
pub struct Single<V, M = Inline> {
    slot: Mutex<Option<Arc<Flight<V>>>>,
    stats: Stats,
    mode: M,
}

impl<V> Single<V> {
    /// An idle coalescer, in [inline mode](crate::mode::Inline).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = coalescer::Single::<u8>::new();
    /// assert!(s.is_idle());
    /// ```
    pub fn new() -> Self {
        Self { slot: Mutex::new(None), stats: Stats::default(), mode: Inline }
    }

    /// This coalescer in [shared mode](crate::mode::Shared). A builder method.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let s = coalescer::Single::<u8>::new().shared();
    /// assert_eq!(*s.work(|| async { 2 }).await.unwrap().value(), 2);
    /// # });
    /// ```
    pub fn shared(self) -> Single<V, Shared> {
        Single { slot: self.slot, stats: self.stats, mode: Shared }
    }

    /// This coalescer in [detached mode](crate::mode::Detached), spawning with `spawner`. A
    /// builder method.
    pub fn detached<Sp: Spawn>(self, spawner: Sp) -> Single<V, Detached<Sp>> {
        Single { slot: self.slot, stats: self.stats, mode: Detached(spawner) }
    }
}

impl<V, M> Single<V, M> {
    /// Whether no flight is in the air.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(coalescer::Single::<u8>::new().is_idle());
    /// ```
    pub fn is_idle(&self) -> bool {
        self.slot.with(|slot| slot.is_none())
    }

    /// The counters since creation.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(coalescer::Single::<u8>::new().counters().leaders, 0);
    /// ```
    pub fn counters(&self) -> Counters {
        self.stats.snapshot()
    }

    /// Detaches the current flight: the next call starts a new one, the old one's callers still
    /// get its value. Returns whether a flight was detached.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!coalescer::Single::<u8>::new().forget());
    /// ```
    pub fn forget(&self) -> bool {
        let detached = self.slot.with(Option::take);
        let was = detached.is_some();
        drop(detached); // outside the lock
        if was {
            self.stats.record(Event::Forget, None);
        }
        was
    }
}

impl<V: Clone> Single<V> {
    /// Runs `work` once for all concurrent calls; see the [group's](crate::Group#method.work).
    ///
    /// # Cancel safety
    ///
    /// As for the group's: a dropped leader hands over to one follower, which runs its own
    /// closure.
    ///
    /// # Panics
    ///
    /// As for the group's.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let s = coalescer::Single::<u8>::new();
    /// assert_eq!(*s.work(|| async { 1 }).await.unwrap().value(), 1);
    /// # });
    /// ```
    pub fn work<F, Fut>(&self, work: F) -> Work<'_, Self, (), F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        Work::new(self, &(), work, Lead::Inline)
    }
}

impl<V: Clone + Send + Sync + 'static> Single<V, Shared> {
    /// Runs `work` owned by the flight, driven by any waiter; see
    /// [a shared group's `work`](crate::SharedGroup).
    ///
    /// # Cancel safety
    ///
    /// As for a shared group's: the work is dropped only when the last caller leaves.
    ///
    /// # Panics
    ///
    /// As for a shared group's.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let s = coalescer::Single::<u8>::new().shared();
    /// assert_eq!(*s.work(|| async { 2 }).await.unwrap().value(), 2);
    /// # });
    /// ```
    pub fn work<F, Fut>(&self, work: F) -> Work<'_, Self, (), F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        Work::new(self, &(), work, Lead::Shared(SharedOps::new()))
    }
}

impl<V, Sp> Single<V, Detached<Sp>>
where
    V: Clone + Send + Sync + 'static,
    Sp: Spawn + Send + Sync + 'static,
{
    /// Runs `work` spawned with the coalescer's spawner, so that it finishes even if every
    /// caller leaves; see [a detached group's `work`](crate::DetachedGroup).
    ///
    /// # Cancel safety
    ///
    /// As for a detached group's.
    ///
    /// # Panics
    ///
    /// As for a detached group's.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// struct OnThread;
    /// impl coalescer::Spawn for OnThread {
    ///     type Task = std::thread::JoinHandle<()>;
    ///     fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task {
    ///         std::thread::spawn(move || futures_lite::future::block_on(task))
    ///     }
    ///     fn aborts_when_abandoned(&self) -> bool { false }
    /// }
    /// let single = Arc::new(coalescer::Single::<u32>::new().detached(OnThread));
    /// let v = futures_lite::future::block_on(single.work(|| async { 8 }));
    /// assert_eq!(*v.unwrap().value(), 8);
    /// ```
    pub fn work<F, Fut>(self: &StdArc<Self>, work: F) -> Work<'_, Self, (), F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        Work::new(self, &(), work, Lead::Detached(Spawner::Borrowed(self)))
    }
}

impl<V, Sp: Spawn> OwnSpawner for Single<V, Detached<Sp>> {
    type Spawner = Sp;

    fn own_spawner(&self) -> &Sp {
        self.mode.spawner()
    }
}

impl<V: Clone, M> Single<V, M> {
    /// Runs `work` once for all concurrent calls on plain threads, in every mode; see
    /// [`Group::work_blocking`](crate::Group::work_blocking).
    ///
    /// # Panics
    ///
    /// As for [`Group::work_blocking`](crate::Group::work_blocking).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = coalescer::Single::<u8>::new();
    /// assert_eq!(*s.work_blocking(|| 3).unwrap().value(), 3);
    /// ```
    #[cfg(feature = "std")]
    pub fn work_blocking(&self, work: impl FnOnce() -> V) -> Result<Outcome<V>, Aborted> {
        crate::blocking::run(self, &(), work)
    }
}

impl<T: Clone, E> Single<Result<T, StdArc<E>>> {
    /// The fallible form of [`work`](Self::work); see [`Group::try_work`](crate::Group::try_work).
    ///
    /// # Cancel safety
    ///
    /// As for [`work`](Self::work).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let s = coalescer::Single::<Result<u8, std::sync::Arc<&str>>>::new();
    /// assert!(s.try_work(|| async { Err("down") }).await.unwrap_err().is_failed());
    /// # });
    /// ```
    pub fn try_work<F, Fut>(&self, work: F) -> TryWork<'_, Self, (), F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        TryWork::new(Work::new(self, &(), TryStart(work), Lead::Inline))
    }
}

impl<T: Clone, E, M> Single<Result<T, StdArc<E>>, M> {
    /// The fallible form of [`work_blocking`](Self::work_blocking).
    ///
    /// # Panics
    ///
    /// As for [`Group::work_blocking`](crate::Group::work_blocking).
    ///
    /// # Examples
    ///
    /// ```
    /// let s = coalescer::Single::<Result<u8, std::sync::Arc<&str>>>::new();
    /// assert_eq!(*s.try_work_blocking(|| Ok::<u8, &str>(4)).unwrap().value(), 4);
    /// ```
    #[cfg(feature = "std")]
    pub fn try_work_blocking(&self, work: impl FnOnce() -> Result<T, E>) -> Result<Outcome<T>, Error<E>> {
        split_try(crate::blocking::run(self, &(), || work().map_err(StdArc::new)))
    }
}

impl<V> Default for Single<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V, M> sealed::Sealed for Single<V, M> {}

impl<V, M> Table for Single<V, M> {
    type Key = ();
    type Value = V;

    fn join<Q>(&self, _: &Q, mode: Mode<V>, _: sealed::Token) -> Joined<V>
    where
        (): core::borrow::Borrow<Q>,
        Q: ?Sized + core::hash::Hash + Eq + alloc::borrow::ToOwned<Owned = ()>,
    {
        self.slot.with(|slot| match slot {
            Some(flight) if flight.load().is_closing() => Joined::Closing(flight.clone()),
            Some(flight) => {
                flight.join();
                Joined::Follow(flight.clone())
            }
            None => {
                // Its leader gives it its span after the join, outside the slot's lock.
                let flight =
                    arc_in_place(|| Flight::new(mode, 0, false, crate::observe::FlightObs::default()));
                *slot = Some(flight.clone());
                Joined::Lead(flight)
            }
        })
    }

    fn watch<Q>(&self, flight: &Arc<Flight<V>>, _: &Q, _: sealed::Token) -> bool
    where
        (): core::borrow::Borrow<Q>,
        Q: ?Sized + core::hash::Hash + Eq + alloc::borrow::ToOwned<Owned = ()>,
    {
        flight.obs().set(self.stats.observer().flight(None))
    }

    fn with_current<D: FnMut(bool) -> bool>(&self, flight: &Arc<Flight<V>>, mut decide: D, _: sealed::Token) {
        let removed = self.slot.with(|slot| {
            let is_current = slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, flight));
            if decide(is_current) && is_current { slot.take() } else { None }
        });
        drop(removed); // outside the lock
    }

    fn ended(&self, flight: &Arc<Flight<V>>, waiters: usize, _: sealed::Token) {
        self.stats.observer().ended(flight.obs(), waiters);
    }

    fn stats(&self, _: sealed::Token) -> &Stats {
        &self.stats
    }
}

impl<V, M> fmt::Debug for Single<V, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Single").field("idle", &self.is_idle()).field("counters", &self.counters()).finish()
    }
}
