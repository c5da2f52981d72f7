//! [`Group`]: request coalescing for many keys, on `scc::HashMap`.

use crate::flight::{Flight, Mode};
use crate::limit::{Limit, WhenFull};
use crate::observe::FlightObs;
use crate::outcome::{Aborted, Error, Outcome, split_try};
use crate::slot::{ById, ByKey, Slot, StoredHash};
use crate::spawn::Spawn;
use crate::start::{Start, TryStart};
use crate::stats::{Counters, Event, Stats};
use crate::sync::Arc;
use crate::sync::StdArc;
use crate::table::{Joined, Table, sealed};
use crate::work::{Lead, SharedOps, TryWork, Work};
use core::borrow::Borrow;
use core::fmt;
use core::future::Future;
use core::hash::{BuildHasher, Hash};

/// How many keys a [`Group::new`] is sized for before its map first grows.
pub const DEFAULT_CAPACITY: usize = 128;

/// Coalesces concurrent calls by key: the first caller for a key runs the work (the *leader*),
/// every concurrent caller for that key waits for it and gets a clone of its value (the
/// *followers*). Once the value is handed out the key is free again: this deduplicates work in
/// flight; it is not a cache.
///
/// # Choosing a mode
///
/// | method | work | a dropped leader | a stalled leader | needs |
/// |---|---|---|---|---|
/// | [`work`](Self::work) | borrowed, runs inside the leader's future | one follower is promoted and runs *its own* closure | blocks the followers | nothing |
/// | [`work_shared`](Self::work_shared) | owned by the flight, driven by any waiter | the others keep driving the *same* future | does not matter | `Send + 'static` work |
/// | [`work_blocking`](Self::work_blocking) | a closure run on the leader's thread | (threads are not cancelled) | — | a thread |
///
/// The runtime adapters (`coalescer-tokio`, `coalescer-smol`, `coalescer-async-std`) add a
/// third mode, *detached*: the work is spawned and finishes even if every caller leaves.
/// Each method has a fallible twin (`try_*`) that shares an `Err` with the concurrent callers
/// without needing `E: Clone`.
///
/// # Locking
///
/// Each key's flight lives in an [`scc::HashMap`], whose entries are guarded by per-bucket
/// read-write locks (only its resizing is lock-free). A call takes its bucket's lock to join (to
/// clone the current flight's `Arc` and count itself in; a leader takes it once more to insert
/// its new flight), and once more to leave or to remove the finished flight. Each critical
/// section is a few dozen instructions; no lock is held across an `.await`, while waiting, or
/// while user code runs (the work, its drop, the value's clone, the key's `Hash`, `Clone` or
/// `Drop`), with one exception: the key's `Eq`, which compares it with the keys of its bucket at
/// join and in [`forget`](Self::forget). The key is hashed once per call, by the group's hasher,
/// before any lock; a flight's entry is then found by its identity, not by the key. Calls for
/// keys in different buckets never touch the same lock.
///
/// In the async path the bucket lock is taken with scc's synchronous method: a critical section
/// this short costs less than a task switch, the named futures of this crate could not hold
/// scc's unnameable futures without boxing each call, and a leave from `Drop` cannot await in
/// any case. Waiting for a *flight* never blocks a thread: async waiters sleep on an
/// `event-listener` event and are woken by the flight.
///
/// # Unwind safety
///
/// User code runs in many places; a panic in any of them is a documented outcome, never a hang,
/// a stuck key, a flight ended twice, or undefined behaviour. Every role a caller claims (the
/// one finisher, the driver of shared work, a promoted leader) is a single atomic transition
/// held by a guard whose `Drop` releases it, so an unwind releases it too.
///
/// | user code that panics | outcome |
/// |---|---|
/// | the work (its `poll`, or the closure that makes it) | the flight ends: the other callers get [`Aborted::is_panic`], the key is free, and the panic is resumed in the caller that was running the work (a detached task reports it through the runtime's hook instead) |
/// | the work's `Drop`, after it finished | the flight ends with the work's result all the same; the panic is counted in [`Counters::panics`] and resumed in the caller that dropped it |
/// | the work's `Drop`, when the last caller abandons shared work | the key is still freed; the panic propagates out of that caller's drop of its future |
/// | `V::clone`, as a caller reads the result | only that caller panics: the result was published before any clone, the others get theirs, and the last reader takes the stored value without cloning |
/// | the key's `Hash` or `Clone` | the panic propagates to the caller that called; it joined nothing, and the group is unchanged. The key is hashed once per call, before any lock, and never cloned |
/// | the key's `Eq` | the same: it runs only while a caller joins (and in [`forget`](Self::forget)); scc's bucket lock is released as it unwinds. A flight's entry is found again by its identity, so a key whose `Hash` or `Eq` panics only sometimes never strands a flight |
/// | the key's `Drop` | runs outside every lock, in the caller that let go of the key |
/// | a [`Spawn`] impl | before it handed the task over: the flight ends with [`Aborted::is_panic`], and the leader resumes the panic. After: the task and the leader race to end the flight, exactly one of them wins (the followers get the task's value or `Aborted`), and the leader resumes the panic |
/// | a waker | the panic propagates out of the call that woke it (`event-listener`'s `notify`) |
///
/// Without the `std` feature panics cannot be caught: a panic in the work unwinds through the
/// caller's future like a cancellation (a work-mode flight promotes a follower; shared work
/// carries on with the callers that are left, the driver's guard giving its role back).
///
/// # Examples
///
/// ```
/// use coalescer::Group;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let group = Arc::new(Group::<String, u64>::new());
/// let queries = Arc::new(AtomicUsize::new(0));
/// let mut requests = Vec::new();
/// for _ in 0..10 {
///     let (group, queries) = (group.clone(), queries.clone());
///     requests.push(tokio::spawn(async move {
///         let outcome = group.work("report".to_string(), || async {
///             queries.fetch_add(1, SeqCst);
///             // Stand-in for a slow query: it finishes once all ten requests have arrived.
///             while group.counters().followers < 9 { tokio::task::yield_now().await }
///             42
///         });
///         outcome.await.unwrap().into_value()
///     }));
/// }
/// for request in requests {
///     assert_eq!(request.await.unwrap(), 42);
/// }
/// assert_eq!(queries.load(SeqCst), 1); // ten requests, one query
/// assert!(group.is_idle());            // not a cache: the key is free again
/// # });
/// ```
pub struct Group<K, V, S: BuildHasher = DefaultHashBuilder> {
    map: scc::HashMap<Slot<K>, Arc<Flight<V>>, StoredHash>,
    hasher: S,
    limit: Option<Limit>,
    /// Formats a key for the flight's span, when the user asked for keys in traces.
    key_debug: Option<KeyDebug<K>>,
    stats: Stats,
}

/// Views a key as `Debug` (made where `K: Debug` is known).
type KeyDebug<K> = fn(&K) -> &dyn fmt::Debug;

/// The hasher a [`Group`] uses unless it is given another: [`foldhash`]'s fast, randomly seeded
/// hasher (the default of `hashbrown`), several times cheaper than the standard library's
/// SipHash on short keys, and seeded per group so that colliding keys cannot be precomputed.
/// Where keys come from untrusted clients and a stronger guarantee against hash flooding is
/// wanted, give the group `std::collections::hash_map::RandomState` with
/// [`with_hasher`](Group::with_hasher).
pub type DefaultHashBuilder = foldhash::fast::RandomState;

/// A [`Group`] for fallible work: the value is `Result<T, Arc<E>>`, so that an error can be
/// shared with the concurrent callers without `E: Clone`. Use it with the `try_*` methods.
pub type TryGroup<K, T, E, S = DefaultHashBuilder> = Group<K, Result<T, StdArc<E>>, S>;

impl<K: Hash + Eq, V> Group<K, V, DefaultHashBuilder> {
    /// A group sized for [`DEFAULT_CAPACITY`] keys in flight at once.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<u64, String>::new();
    /// assert!(group.is_idle());
    /// ```
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A group sized for `capacity` keys in flight at once. The map never shrinks below this,
    /// so it does not reallocate as flights come and go.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<u64, u64>::with_capacity(10_000);
    /// assert_eq!(group.in_flight(), 0);
    /// ```
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, DefaultHashBuilder::default())
    }
}

impl<K: Hash + Eq, V> Default for Group<K, V, DefaultHashBuilder> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V, S: BuildHasher> Group<K, V, S> {
    /// A group with a given hasher (a fixed one makes runs reproducible, as loom models need).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::BuildHasherDefault;
    /// use std::collections::hash_map::DefaultHasher;
    /// let group = coalescer::Group::<u8, u8, _>::with_hasher(BuildHasherDefault::<DefaultHasher>::default());
    /// assert!(group.is_idle());
    /// ```
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_capacity_and_hasher(DEFAULT_CAPACITY, hasher)
    }

    /// A group sized for `capacity` keys, with a given hasher.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<u8, u8, _>::with_capacity_and_hasher(16, std::collections::hash_map::RandomState::new());
    /// assert!(group.is_idle());
    /// ```
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        Self {
            map: scc::HashMap::with_capacity_and_hasher(capacity, StoredHash),
            hasher,
            limit: None,
            key_debug: None,
            stats: Stats::default(),
        }
    }

    /// How many keys have a flight in the air. Counts the map's entries, which reads the whole
    /// bucket array: fine for metrics and tests, not for a hot path.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<u8, u8>::new();
    /// assert_eq!(group.in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> usize {
        self.map.len()
    }

    /// Whether no flight is in the air.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(coalescer::Group::<u8, u8>::new().is_idle());
    /// ```
    pub fn is_idle(&self) -> bool {
        self.map.is_empty()
    }

    /// The counters since the group was created.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<u8, u8>::new();
    /// assert_eq!(group.counters(), coalescer::Counters::default());
    /// ```
    pub fn counters(&self) -> Counters {
        self.stats.snapshot()
    }

    /// Bounds the keys in flight at once to `limit` (the contract's "Bounds"): a call for a new
    /// key beyond it is refused with [`Aborted`] whose cause is [`Cause::Full`](crate::Cause::Full),
    /// or runs alone, uncoalesced, as `when_full` says. A call that joins a flight already in the
    /// air is always allowed. A flight counts from its first caller until it ends, forgotten or
    /// not; each call beyond the bound is counted in [`Counters::overflows`].
    ///
    /// A builder method: call it before the group is shared.
    ///
    /// # Examples
    ///
    /// ```
    /// use coalescer::{Group, WhenFull};
    /// # futures_lite::future::block_on(async {
    /// let group = Group::<u32, u32>::new().max_in_flight(1, WhenFull::Reject);
    /// let mut one = std::pin::pin!(group.work(1, || std::future::pending::<u32>()));
    /// assert!(futures_lite::future::poll_once(one.as_mut()).await.is_none()); // key 1 in flight
    /// let refused = group.work(2, || async { 2 }).await.unwrap_err();
    /// assert!(refused.is_full());
    /// let mut joiner = std::pin::pin!(group.work(1, || async { 1 }));
    /// assert!(futures_lite::future::poll_once(joiner.as_mut()).await.is_none()); // joins key 1
    /// assert_eq!(group.counters().overflows, 1);
    /// # });
    /// ```
    pub fn max_in_flight(mut self, limit: usize, when_full: WhenFull) -> Self {
        self.limit = Some(Limit::new(limit, when_full));
        self
    }

    /// Names the group for observability: the `group` label of its metrics and the `group`
    /// field of its flights' spans (`"default"` until named). With the `metrics` feature the
    /// group's handles are registered here, with the recorder installed at this moment:
    /// install the recorder first. A builder method: call it before the group is shared.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<u32, u32>::new().named("orders");
    /// # let _ = group;
    /// ```
    pub fn named(mut self, name: impl Into<alloc::borrow::Cow<'static, str>>) -> Self {
        self.stats.rename(name.into());
        self
    }

    /// Records each flight's key (its `Debug` form) as the `key` field of the flight's span
    /// (`tracing` feature). Off by default: keys may be secret, and many. A builder method.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<u32, u32>::new().named("orders").trace_keys();
    /// # let _ = group;
    /// ```
    pub fn trace_keys(mut self) -> Self
    where
        K: fmt::Debug,
    {
        self.key_debug = Some(|key| key);
        self
    }

    /// What a new flight for `key` carries for observability.
    fn obs(&self, key: &K) -> FlightObs {
        self.stats.observer().flight(self.key_debug.map(|debug| debug(key)))
    }

    /// The bound on keys in flight set by [`max_in_flight`](Self::max_in_flight), if any.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(coalescer::Group::<u8, u8>::new().max_keys_in_flight(), None);
    /// ```
    pub fn max_keys_in_flight(&self) -> Option<usize> {
        self.limit.as_ref().map(Limit::max)
    }

    /// Detaches `key`'s current flight (Go's `Forget`): the next call for `key` starts a new
    /// flight, while the callers of the old one still get the old flight's value. The old flight
    /// never removes the new one when it finishes (removal compares identity, not keys). Returns
    /// whether a flight was detached.
    ///
    /// Use it when the work in the air is known to be stale (the data changed under it).
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<&str, u32>::new();
    /// assert!(!group.forget("nothing in the air"));
    /// ```
    pub fn forget<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        // The removed key (and its `Drop`) goes at the end of this function, outside the lock.
        let removed = self.map.remove_sync(&ByKey { hash, key });
        if let Some((_, flight)) = &removed {
            self.stats.record(Event::Forget, Some(flight.obs()));
        }
        removed.is_some()
    }
}

impl<K: Hash + Eq, V: Clone, S: BuildHasher> Group<K, V, S> {
    /// Runs `work` once for all concurrent calls with this `key`; every caller gets a clone of
    /// its value. The work may borrow from the caller (it runs inside the leader's future).
    ///
    /// Resolves to the [`Outcome`] (the value, whether this caller led, whether it was shared),
    /// or to [`Aborted`] when the work panicked in another caller.
    ///
    /// # Cancel safety
    ///
    /// Dropping a follower affects nobody else. Dropping the leader before its work finishes
    /// drops its work; if followers are waiting, exactly one of them is promoted and runs *its
    /// own* `work` closure while the others wait for it; with nobody left the key is freed. No
    /// follower hangs or sees a spurious error. A leader that is polled once and then never again
    /// (a losing `select!` branch that is kept alive) does block its followers: use
    /// [`work_shared`](Self::work_shared) or a runtime adapter's detached mode where that can
    /// happen.
    ///
    /// # Panics
    ///
    /// When the work panics in this caller, the followers are released at once with
    /// [`Aborted`], the key is freed, and the panic is resumed here. Polling the future again
    /// after it completed panics.
    ///
    /// # Unwind safety
    ///
    /// The work's `Drop` runs in this caller when the work finishes (the flight still ends with
    /// its value, then the panic is resumed here) or when the caller is dropped (a promotion
    /// follows, as for any cancelled leader). See the [type's table](Self#unwind-safety) for
    /// the value's `Clone` and the key.
    ///
    /// A call for a key whose work is running *in the same task* (the work awaits its own key)
    /// waits on itself forever; the blocking API detects that case, the async one cannot.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::Group::<u64, String>::new();
    /// let name = group.work(7, || async { "seven".to_string() }).await?.into_value();
    /// assert_eq!(name, "seven");
    /// # Ok::<(), coalescer::Aborted>(()) }).unwrap();
    /// ```
    pub fn work<F, Fut>(&self, key: K, work: F) -> Work<'_, Self, F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        Work::new(self, key, work, Lead::Inline)
    }

    /// Like [`work`](Self::work), but the flight owns the work future and *any* waiter drives
    /// it, so the work survives its leader.
    ///
    /// # Cancel safety
    ///
    /// Dropping any caller, the leader included, neither stops nor restarts the work: the
    /// callers that are left keep polling the same future. The work is dropped (cancelled) only
    /// when the last caller leaves, and the key is then freed. A caller that stops being polled
    /// does not hold the others up: the work's waker wakes the flight's waiters, and whichever
    /// is polled first drives the work.
    ///
    /// These guarantees hold for flights started by `work_shared`. A call that finds a flight
    /// started by [`work`](Self::work) joins it under that flight's rules: if its leader is
    /// dropped, this caller may be promoted and run its own work inside its own future. Use one
    /// mode per key where stalls can happen.
    ///
    /// # Panics
    ///
    /// When the work panics, the panic is resumed in the caller that was polling it, and every
    /// other caller gets [`Aborted`]. Polling the future again after it completed panics.
    ///
    /// # Unwind safety
    ///
    /// The work's `Drop` runs in the caller that drove it to its end (the flight still ends
    /// with its value, then the panic is resumed in that caller), or in the last caller to
    /// leave (the key is freed all the same, and the panic propagates out of that caller's
    /// drop). A driver's poll that unwinds where panics cannot be caught (no `std`) gives the
    /// driver's role back. See the [type's table](Self#unwind-safety).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::Group::<u64, u64>::new();
    /// let v = group.work_shared(3, || async { 9 }).await.unwrap();
    /// assert_eq!(*v.value(), 9);
    /// # });
    /// ```
    ///
    /// Borrowed or `!Send` work is a compile error:
    ///
    /// ```compile_fail
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::Group::<u64, u64>::new();
    /// let local = std::rc::Rc::new(5);
    /// group.work_shared(3, || async move { *local }).await.unwrap();
    /// # });
    /// ```
    pub fn work_shared<F, Fut>(&self, key: K, work: F) -> Work<'_, Self, F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
        V: Send + Sync + 'static,
    {
        Work::new(self, key, work, Lead::Shared(SharedOps::new()))
    }

    /// Runs `work` once for all concurrent calls with this `key` on plain threads; the other
    /// callers park until it finishes. Async and blocking callers can share one flight.
    ///
    /// A blocking caller that joins a shared-work flight may drive that work from its thread;
    /// if the work needs a runtime's context (I/O, timers), call from inside that context.
    ///
    /// # Panics
    ///
    /// When `work` panics on this thread, the other callers are released with [`Aborted`] and
    /// the panic is resumed here. A call for a key whose work this very thread is running (a
    /// re-entrant call from inside `work`) panics instead of waiting on itself forever.
    ///
    /// # Unwind safety
    ///
    /// As for [`work`](Self::work): a panicking `work` releases the other callers and is
    /// resumed on this thread; a panicking `V::clone` panics only in the caller that cloned.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<&str, u32>::new();
    /// let v = group.work_blocking("answer", || 42).unwrap();
    /// assert_eq!(*v.value(), 42);
    /// ```
    pub fn work_blocking(&self, key: K, work: impl FnOnce() -> V) -> Result<Outcome<V>, Aborted> {
        crate::blocking::run(self, key, work)
    }
}

impl<K, V, S> Group<K, V, S>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Like [`work_shared`](Self::work_shared), but the leader's work is spawned with `spawn`
    /// (a runtime adapter's spawner), so it runs to completion even if every caller walks away:
    /// Go's behaviour, and the cache it fills still gets filled. The group must be in an `Arc`,
    /// since the spawned task outlives the callers and finishes the flight itself.
    ///
    /// While the task runs, the flight stays the key's current one: a caller that arrives later
    /// joins it instead of starting the work again. If the runtime drops the task before it
    /// finishes (it is shutting down), every caller gets [`Aborted`] with
    /// [`is_shutdown`](Aborted::is_shutdown).
    ///
    /// # Cancel safety
    ///
    /// Dropping any caller, the leader included, never affects the work or the other callers.
    /// When the spawner [aborts when abandoned](crate::Spawn::aborts_when_abandoned), the last
    /// caller out aborts the task instead; the key is free again once the runtime has dropped
    /// the aborted task (callers that arrive meanwhile wait for that, then start anew).
    ///
    /// # Panics
    ///
    /// A panic in the work is caught in the task; every caller gets [`Aborted`] with
    /// [`is_panic`](Aborted::is_panic). Polling the future again after it completed panics.
    ///
    /// # Unwind safety
    ///
    /// The task catches a panic of its work's `Drop` too, counts it, and ends the flight with
    /// the work's value. A `spawn` that panics is resumed in the leader; if it had already
    /// handed the task over, exactly one of the two ends the flight (see the
    /// [type's table](Self#unwind-safety)).
    ///
    /// # Examples
    ///
    /// With a spawner that runs the task on a plain thread (the adapters provide real ones):
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
    ///
    /// let group = Arc::new(coalescer::Group::<u8, u32>::new());
    /// let v = futures_lite::future::block_on(group.work_detached(1, OnThread, || async { 7 }));
    /// assert_eq!(*v.unwrap().value(), 7);
    /// ```
    pub fn work_detached<F, Fut, Sp>(self: &StdArc<Self>, key: K, spawn: Sp, work: F) -> Work<'_, Self, F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
        Sp: Spawn + Send + Sync + 'static,
    {
        self.detached(key, spawn, work)
    }

    /// A call that spawns its work with `spawn` when it leads.
    fn detached<F, Sp>(self: &StdArc<Self>, key: K, spawn: Sp, start: F) -> Work<'_, Self, F>
    where
        F: Start<V>,
        F::Future: Send + 'static,
        Sp: Spawn + Send + Sync + 'static,
    {
        let abort = spawn.aborts_when_abandoned();
        let spawn = crate::detached::spawner(self.clone(), spawn, F::finish);
        Work::new(self, key, start, Lead::Detached { spawn, abort })
    }
}

impl<K, T, E, S> Group<K, Result<T, StdArc<E>>, S>
where
    K: Hash + Eq,
    T: Clone,
    S: BuildHasher,
{
    /// The fallible form of [`work`](Self::work): an `Err` is shared with the concurrent
    /// followers (behind an `Arc`, so `E` needs no `Clone`) and never retained: the next call
    /// starts anew, so a retry after an error costs one execution, not one per caller.
    ///
    /// # Cancel safety
    ///
    /// As for [`work`](Self::work).
    ///
    /// # Panics
    ///
    /// As for [`work`](Self::work).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// #[derive(Debug)]
    /// struct NotFound; // no Clone needed
    /// let group = coalescer::TryGroup::<u64, String, NotFound>::new();
    /// let err = group.try_work(404, || async { Err(NotFound) }).await.unwrap_err();
    /// assert!(err.is_failed());
    /// let ok = group.try_work(200, || async { Ok("ok".to_string()) }).await.unwrap();
    /// assert_eq!(ok.value(), "ok");
    /// # });
    /// ```
    pub fn try_work<F, Fut>(&self, key: K, work: F) -> TryWork<'_, Self, F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        TryWork::new(Work::new(self, key, TryStart(work), Lead::Inline))
    }

    /// The fallible form of [`work_shared`](Self::work_shared).
    ///
    /// # Cancel safety
    ///
    /// As for [`work_shared`](Self::work_shared).
    ///
    /// # Panics
    ///
    /// As for [`work_shared`](Self::work_shared).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::TryGroup::<u64, u64, std::io::Error>::new();
    /// let v = group.try_work_shared(1, || async { Ok(1) }).await.unwrap();
    /// assert_eq!(*v.value(), 1);
    /// # });
    /// ```
    pub fn try_work_shared<F, Fut>(&self, key: K, work: F) -> TryWork<'_, Self, F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        TryWork::new(Work::new(self, key, TryStart(work), Lead::Shared(SharedOps::new())))
    }

    /// The fallible form of [`work_detached`](Self::work_detached): an `Err` is shared with the
    /// callers of the flight (behind an `Arc`) and never retained.
    ///
    /// # Cancel safety
    ///
    /// As for [`work_detached`](Self::work_detached).
    ///
    /// # Panics
    ///
    /// As for [`work_detached`](Self::work_detached).
    ///
    /// # Examples
    ///
    /// ```
    /// # struct OnThread;
    /// # impl coalescer::Spawn for OnThread {
    /// #     type Task = std::thread::JoinHandle<()>;
    /// #     fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task {
    /// #         std::thread::spawn(move || futures_lite::future::block_on(task))
    /// #     }
    /// #     fn aborts_when_abandoned(&self) -> bool { false }
    /// # }
    /// let group = std::sync::Arc::new(coalescer::TryGroup::<u8, u8, String>::new());
    /// let call = group.try_work_detached(1, OnThread, || async { Err("down".to_string()) });
    /// let err = futures_lite::future::block_on(call).unwrap_err();
    /// assert_eq!(err.failure().map(String::as_str), Some("down"));
    /// ```
    pub fn try_work_detached<F, Fut, Sp>(
        self: &StdArc<Self>,
        key: K,
        spawn: Sp,
        work: F,
    ) -> TryWork<'_, Self, F>
    where
        K: Send + Sync + 'static,
        T: Send + Sync + 'static,
        E: Send + Sync + 'static,
        S: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        Sp: Spawn + Send + Sync + 'static,
    {
        TryWork::new(self.detached(key, spawn, TryStart(work)))
    }

    /// The fallible form of [`work_blocking`](Self::work_blocking).
    ///
    /// # Panics
    ///
    /// As for [`work_blocking`](Self::work_blocking).
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::TryGroup::<&str, u32, std::num::ParseIntError>::new();
    /// let err = group.try_work_blocking("x", || "x".parse::<u32>()).unwrap_err();
    /// assert!(err.failure().is_some());
    /// ```
    pub fn try_work_blocking(
        &self,
        key: K,
        work: impl FnOnce() -> Result<T, E>,
    ) -> Result<Outcome<T>, Error<E>> {
        split_try(crate::blocking::run(self, key, || work().map_err(StdArc::new)))
    }
}

impl<K: Hash + Eq, V, S: BuildHasher> sealed::Sealed for Group<K, V, S> {}

impl<K: Hash + Eq, V, S: BuildHasher> Table for Group<K, V, S> {
    type Key = K;
    type Value = V;

    fn join(&self, key: K, mode: Mode<V>, _: sealed::Token) -> Joined<K, V> {
        let hash = self.hasher.hash_one(&key); // the key's `Hash`: before any lock
        let mut key = key;
        loop {
            if let Some(entry) = self.map.get_sync(&ByKey { hash, key: &key }) {
                let flight = entry.get().clone();
                let closing = flight.load().is_closing();
                if !closing {
                    flight.join();
                }
                drop(entry); // the bucket lock; the key is dropped after it
                return if closing { Joined::Closing(flight, key) } else { Joined::Follow(flight) };
            }
            let permit = match &self.limit {
                None => false,
                Some(limit) if limit.acquire() => true,
                Some(limit) => {
                    self.stats.record(Event::Overflow, None);
                    return match limit.when_full() {
                        WhenFull::Reject => Joined::Full(limit.max()),
                        // A flight of its own, never in the map: nobody can join it.
                        WhenFull::RunAlone => {
                            Joined::Lead(Arc::new(Flight::new(mode, hash, false, self.obs(&key))))
                        }
                    };
                }
            };
            let flight = Arc::new(Flight::new(mode, hash, permit, self.obs(&key)));
            let id = Arc::as_ptr(&flight) as usize;
            match self.map.insert_sync(Slot { hash, id, key }, flight.clone()) {
                Ok(()) => return Joined::Lead(flight),
                // Another caller inserted a flight for the key meanwhile: join that one. The
                // key comes back, to be dropped outside the lock; so does the permit.
                Err((slot, _)) => {
                    if let Some(limit) = &self.limit {
                        if flight.take_permit() {
                            limit.release();
                        }
                    }
                    key = slot.key;
                }
            }
        }
    }

    fn with_current(&self, flight: &Arc<Flight<V>>, decide: &mut dyn FnMut(bool) -> bool, _: sealed::Token) {
        let mut decided = false;
        let by_id = ById { hash: flight.hash(), id: Arc::as_ptr(flight) as usize };
        let removed = self.map.remove_if_sync(&by_id, |_| {
            decided = true;
            decide(true)
        });
        drop(removed); // outside the bucket lock
        if !decided {
            decide(false);
        }
    }

    fn ended(&self, flight: &Arc<Flight<V>>, waiters: usize, _: sealed::Token) {
        if let Some(limit) = &self.limit {
            if flight.take_permit() {
                limit.release();
            }
        }
        self.stats.observer().ended(flight.obs(), waiters);
    }

    fn stats(&self, _: sealed::Token) -> &Stats {
        &self.stats
    }
}

impl<K, V, S> fmt::Debug for Group<K, V, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("in_flight", &self.map.len())
            .field("counters", &self.stats.snapshot())
            .finish()
    }
}
