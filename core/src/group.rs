//! [`Group`]: request coalescing for many keys, on `scc::HashMap`.

use crate::detached::{OwnSpawner, Spawner, WithSpawner};
use crate::flight::{Flight, Mode};
use crate::limit::{Limit, WhenFull};
use crate::mode::{Detached, Inline, Shared};
use crate::observe::FlightObs;
use crate::outcome::{Aborted, Error, Outcome, split_try};
use crate::slot::{ById, ByKey, Slot, StoredHash};
use crate::spawn::Spawn;
use crate::start::{Start, TryStart};
use crate::stats::{Counters, Event, Stats};
use crate::sync::StdArc;
use crate::sync::{Arc, arc_in_place};
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
/// The mode is the group's fourth type parameter, chosen when the group is built, so every
/// flight of a group runs the same way (see [`mode`](crate::mode)):
///
/// | group | made by | work | a dropped leader | a stalled leader | needs |
/// |---|---|---|---|---|---|
/// | `Group<K, V>` ([`Inline`]) | [`Group::new`] | borrowed, runs inside the leader's future | one follower is promoted and runs *its own* closure | blocks the followers | nothing |
/// | [`SharedGroup<K, V>`](crate::SharedGroup) | [`.shared()`](Self::shared) | owned by the flight, driven by any waiter | the others keep driving the *same* future | does not matter | `Send + 'static` work |
/// | [`DetachedGroup<K, V, Sp>`](crate::DetachedGroup) | [`.detached(spawner)`](Self::detached) | spawned with `Sp` | nothing changes: it runs to completion | nothing changes | a runtime's [`Spawn`] |
///
/// Every mode has the async `work`, the blocking [`work_blocking`](Self::work_blocking) (a
/// closure run on the leader's thread, which a drop never cancels), and their fallible twins
/// (`try_*`) that share an `Err` with the concurrent callers without needing `E: Clone`.
///
/// # Keys
///
/// Calls take the key by reference, in any borrowed form of it (`&str` for a `String` key, as
/// [`HashMap::get`](std::collections::HashMap::get) does): followers never copy it, and the
/// leader makes the one owned key the map keeps (`ToOwned`, a clone for most keys).
///
/// # Calls are lazy
///
/// `work` returns a future that does nothing until it is first polled: that first poll joins
/// the key's flight (or starts it). Two calls made and then awaited one after the other are two
/// flights, not one.
///
/// # Locking
///
/// Each key's flight lives in an [`scc::HashMap`], whose entries are guarded by per-bucket
/// read-write locks (only its resizing is lock-free). A call takes its bucket's lock shared to
/// join (to clone the current flight's `Arc` and count itself in: joins of one key do not exclude
/// each other); a leader takes it exclusively to insert its new flight, and every caller once
/// more, exclusively, to leave or to remove the finished flight. Each critical
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
/// | the key's `Hash` or `Clone` | the panic propagates to the caller that called; it joined nothing, and the group is unchanged. The key is hashed once per call, before any lock; only a leader clones it (`ToOwned`), outside any lock and before it takes a permit of the bound |
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
///         let outcome = group.work("report", || async {
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
pub struct Group<K, V, S: BuildHasher = DefaultHashBuilder, M = Inline> {
    map: scc::HashMap<Slot<K>, Arc<Flight<V>>, StoredHash>,
    hasher: S,
    limit: Option<Limit>,
    /// Formats a key for the flight's span, when the user asked for keys in traces.
    key_debug: Option<KeyDebug<K>>,
    stats: Stats,
    mode: M,
}

/// A [`Group`] whose flights own their work, which any waiter drives: a dropped or stalled
/// leader neither restarts the work nor holds the others up. Made by
/// [`Group::shared`](Group::shared).
pub type SharedGroup<K, V, S = DefaultHashBuilder> = Group<K, V, S, Shared>;

/// A [`Group`] whose leaders spawn their work with `Sp` (a runtime adapter's spawner): it runs
/// to completion even if every caller walks away. Made by [`Group::detached`](Group::detached).
pub type DetachedGroup<K, V, Sp, S = DefaultHashBuilder> = Group<K, V, S, Detached<Sp>>;

/// Views a key as `Debug` (made where `K: Debug` is known).
type KeyDebug<K> = fn(&K) -> &dyn fmt::Debug;

/// The hasher a [`Group`] (and a [`Cache`](crate::cache::Cache)) uses unless it is given
/// another: [`foldhash`]'s randomly seeded "quality" hasher, several times cheaper than the
/// standard library's SipHash on short keys, and seeded per group so that colliding keys
/// cannot be precomputed. Not foldhash's "fast" variant (`hashbrown`'s default): scc picks a
/// key's bucket from the top bits of its hash, and for about one process seed in 2,000 the
/// fast variant's top bits barely vary over small integer keys, which crowded them into a few
/// buckets (a cache then evicted entries while nearly empty); the quality variant's final
/// mixing step costs a few instructions per hash.
/// Where keys come from untrusted clients and a stronger guarantee against hash flooding is
/// wanted, give the group `std::collections::hash_map::RandomState` with
/// [`with_hasher`](Group::with_hasher).
pub type DefaultHashBuilder = foldhash::quality::RandomState;

/// A [`Group`] for fallible work: the value is `Result<T, Arc<E>>`, so that an error can be
/// shared with the concurrent callers without `E: Clone`. Use it with the `try_*` methods.
/// The mode is the last parameter, as in [`Group`].
pub type TryGroup<K, T, E, S = DefaultHashBuilder, M = Inline> = Group<K, Result<T, StdArc<E>>, S, M>;

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

impl<K: Hash + Eq, V> Default for Group<K, V, DefaultHashBuilder, Shared> {
    fn default() -> Self {
        Group::new().shared()
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
            mode: Inline,
        }
    }

    /// This group in [shared mode](crate::mode::Shared): every flight owns its work, which any
    /// waiter drives. A builder method: call it before the group is shared.
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::Group::<u64, u64>::new().shared();
    /// assert_eq!(*group.work(&3, || async { 9 }).await?.value(), 9);
    /// # Ok::<(), coalescer::Aborted>(()) }).unwrap();
    /// ```
    pub fn shared(self) -> Group<K, V, S, Shared> {
        self.with_mode(Shared)
    }

    /// This group in [detached mode](crate::mode::Detached): every leader spawns its work with
    /// `spawner` (a runtime adapter's, such as `coalescer_tokio::Tokio::detach()`). A builder
    /// method: call it before the group is shared.
    ///
    /// # Examples
    ///
    /// See [`Group::work`](Group#method.work-2).
    pub fn detached<Sp: Spawn>(self, spawner: Sp) -> Group<K, V, S, Detached<Sp>> {
        self.with_mode(Detached(spawner))
    }
}

impl<K: Hash + Eq, V, S: BuildHasher, M> Group<K, V, S, M> {
    /// The same group in another mode (only while nothing is in flight: builders own `self`).
    fn with_mode<N>(self, mode: N) -> Group<K, V, S, N> {
        let Self { map, hasher, limit, key_debug, stats, mode: _ } = self;
        Group { map, hasher, limit, key_debug, stats, mode }
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
    /// let mut one = std::pin::pin!(group.work(&1, || std::future::pending::<u32>()));
    /// assert!(futures_lite::future::poll_once(one.as_mut()).await.is_none()); // key 1 in flight
    /// let refused = group.work(&2, || async { 2 }).await.unwrap_err();
    /// assert!(refused.is_full());
    /// let mut joiner = std::pin::pin!(group.work(&1, || async { 1 }));
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
    /// # Panics
    ///
    /// The key's `Debug` runs in the leader's call, after its flight is in the map and before
    /// the work starts, when a subscriber wants the flight's span. If it panics, the panic
    /// leaves that call and the flight is left as by a leader dropped at that point: followers
    /// already joined take the lead in turn (work mode) or drive the work (shared), and a
    /// flight nobody else joined ends as a cancellation; the key is free again.
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
    fn obs<Q>(&self, key: &Q) -> FlightObs
    where
        K: Borrow<Q>,
        Q: ?Sized + ToOwned<Owned = K>,
    {
        match self.key_debug {
            None => self.stats.observer().flight(None),
            // Only when keys are traced: the `Debug` form is made from an owned key.
            Some(debug) => self.stats.observer().flight(Some(debug(&key.to_owned()))),
        }
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
    /// let group = coalescer::Group::<String, u32>::new();
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

impl<K: Hash + Eq, V: Clone, S: BuildHasher> Group<K, V, S, Inline> {
    /// Runs `work` once for all concurrent calls with this `key`; every caller gets a clone of
    /// its value (the last to read it takes it). The work may borrow from the caller: it runs
    /// inside the leader's future.
    ///
    /// Resolves to the [`Outcome`] (the value, whether this caller led, whether it was shared),
    /// or to [`Aborted`] when the work panicked in another caller or the group is
    /// [full](Self::max_in_flight). The call joins the key's flight when first polled, not
    /// before.
    ///
    /// # Cancel safety
    ///
    /// Dropping a follower affects nobody else. Dropping the leader before its work finishes
    /// drops its work; if followers are waiting, exactly one of them is promoted and runs *its
    /// own* `work` closure while the others wait for it; with nobody left the key is freed. No
    /// follower hangs or sees a spurious error. A leader that is polled once and then never again
    /// (a losing `select!` branch that is kept alive) does block its followers: use a
    /// [shared](Self::shared) or [detached](Self::detached) group where that can happen.
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
    /// let group = coalescer::Group::<String, String>::new();
    /// let name = group.work("seven", || async { "SEVEN".to_string() }).await?.into_value();
    /// assert_eq!(name, "SEVEN");
    /// # Ok::<(), coalescer::Aborted>(()) }).unwrap();
    /// ```
    ///
    /// A retry loop passes the same closure again by reference (`&F` is a `FnOnce` when `F` is
    /// a `Fn`), so nothing has to be kept in an `Option`:
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::Group::<u64, u64>::new();
    /// let load = || async { 42 };
    /// let value = loop {
    ///     match group.work(&1, &load).await {
    ///         Err(aborted) if aborted.is_panic() => continue, // another caller's work panicked
    ///         other => break other?.into_value(),
    ///     }
    /// };
    /// assert_eq!(value, 42);
    /// # Ok::<(), coalescer::Aborted>(()) }).unwrap();
    /// ```
    pub fn work<'a, Q, F, Fut>(&'a self, key: &'a Q, work: F) -> Work<'a, Self, Q, F>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        Work::new(self, key, work, Lead::Inline)
    }
}

impl<K: Hash + Eq, V: Clone + Send + Sync + 'static, S: BuildHasher> Group<K, V, S, Shared> {
    /// Runs `work` once for all concurrent calls with this `key`, like the
    /// [inline](Group#method.work) `work`, but the flight owns the work future and *any* waiter
    /// drives it, so the work survives its leader.
    ///
    /// # Cancel safety
    ///
    /// Dropping any caller, the leader included, neither stops nor restarts the work: the
    /// callers that are left keep polling the same future. The work is dropped (cancelled) only
    /// when the last caller leaves, and the key is then freed. A caller that stops being polled
    /// does not hold the others up: the work's waker wakes the flight's waiters, and whichever
    /// is polled first drives the work.
    ///
    /// That guarantee has a price when many callers wait on work that wakes itself often:
    /// every wake of the work wakes every waiter, since any of them may be the one still being
    /// polled (10,000 waiters and 100 timer wakes: about 81 polls per caller, against 2 in the
    /// other modes; `benches/`'s `wake-all`). For work paced by I/O with thousands of waiters,
    /// a [detached group](crate::DetachedGroup) wakes each caller once.
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
    /// let group = coalescer::Group::<u64, u64>::new().shared();
    /// let v = group.work(&3, || async { 9 }).await?;
    /// assert_eq!(*v.value(), 9);
    /// # Ok::<(), coalescer::Aborted>(()) }).unwrap();
    /// ```
    ///
    /// Borrowed or `!Send` work is a compile error:
    ///
    /// ```compile_fail
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::Group::<u64, u64>::new().shared();
    /// let local = std::rc::Rc::new(5);
    /// group.work(&3, || async move { *local }).await.unwrap();
    /// # });
    /// ```
    pub fn work<'a, Q, F, Fut>(&'a self, key: &'a Q, work: F) -> Work<'a, Self, Q, F>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        Work::new(self, key, work, Lead::Shared(SharedOps::new()))
    }
}

impl<K, V, S, Sp> Group<K, V, S, Detached<Sp>>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
    Sp: Spawn + Send + Sync + 'static,
{
    /// Runs `work` once for all concurrent calls with this `key`; the leader spawns it with the
    /// group's spawner, so it runs to completion even if every caller walks away: Go's
    /// behaviour, and the cache it fills still gets filled. The group must be in an `Arc`,
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
    /// #[derive(Clone)]
    /// struct OnThread;
    /// impl coalescer::Spawn for OnThread {
    ///     type Task = std::thread::JoinHandle<()>;
    ///     fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task {
    ///         std::thread::spawn(move || futures_lite::future::block_on(task))
    ///     }
    ///     fn aborts_when_abandoned(&self) -> bool { false }
    /// }
    ///
    /// let group = Arc::new(coalescer::Group::<u8, u32>::new().detached(OnThread));
    /// let v = futures_lite::future::block_on(group.work(&1, || async { 7 }));
    /// assert_eq!(*v.unwrap().value(), 7);
    /// ```
    pub fn work<'a, Q, F, Fut>(self: &'a StdArc<Self>, key: &'a Q, work: F) -> Work<'a, Self, Q, F>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.detached_call(key, work)
    }

    /// A call that spawns its work with the group's spawner when it leads.
    fn detached_call<'a, Q: ?Sized, F>(self: &'a StdArc<Self>, key: &'a Q, start: F) -> Work<'a, Self, Q, F>
    where
        F: Start<V>,
        F::Future: Send + 'static,
    {
        // The group is the spawner: nothing is allocated per call.
        Work::new(self, key, start, Lead::Detached(Spawner::Borrowed(self)))
    }
}

impl<K: Hash + Eq, V, S: BuildHasher, Sp: Spawn> OwnSpawner for Group<K, V, S, Detached<Sp>> {
    type Spawner = Sp;

    fn own_spawner(&self) -> &Sp {
        self.mode.spawner()
    }
}

impl<K, V, S, M> Group<K, V, S, M>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
    M: Send + Sync + 'static,
{
    /// A call that spawns its work with `spawn` when it leads, in a group of any mode: for the
    /// crate's own layers (the cache spawns its refreshes from a shared group).
    pub(crate) fn spawned<'a, Q: ?Sized, F, Sp>(
        self: &'a StdArc<Self>,
        key: &'a Q,
        spawn: Sp,
        start: F,
    ) -> Work<'a, Self, Q, F>
    where
        F: Start<V>,
        F::Future: Send + 'static,
        Sp: Spawn + Send + Sync + 'static,
    {
        let spawn = WithSpawner { table: self.clone(), spawn };
        Work::new(self, key, start, Lead::Detached(Spawner::Owned(Box::new(spawn))))
    }
}

impl<K: Hash + Eq, V: Clone, S: BuildHasher, M> Group<K, V, S, M> {
    /// Runs `work` once for all concurrent calls with this `key` on plain threads; the other
    /// callers park until it finishes. Async and blocking callers can share one flight. In every
    /// mode, a blocking leader runs its closure on its own thread (a drop never cancels a
    /// thread).
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
    /// As for the async `work`: a panicking `work` releases the other callers and is resumed on
    /// this thread; a panicking `V::clone` panics only in the caller that cloned.
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::Group::<String, u32>::new();
    /// let v = group.work_blocking("answer", || 42).unwrap();
    /// assert_eq!(*v.value(), 42);
    /// ```
    pub fn work_blocking<Q>(&self, key: &Q, work: impl FnOnce() -> V) -> Result<Outcome<V>, Aborted>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        crate::blocking::run(self, key, work)
    }
}

impl<K: Hash + Eq, T: Clone, E, S: BuildHasher> Group<K, Result<T, StdArc<E>>, S, Inline> {
    /// The fallible form of [`work`](Group#method.work): an `Err` is shared with the concurrent
    /// followers (behind an `Arc`, so `E` needs no `Clone`) and never retained: the next call
    /// starts anew, so a retry after an error costs one execution, not one per caller.
    ///
    /// # Cancel safety
    ///
    /// As for [`work`](Group#method.work).
    ///
    /// # Panics
    ///
    /// As for [`work`](Group#method.work).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// #[derive(Debug)]
    /// struct NotFound; // no Clone needed
    /// let group = coalescer::TryGroup::<u64, String, NotFound>::new();
    /// let err = group.try_work(&404, || async { Err(NotFound) }).await.unwrap_err();
    /// assert!(err.is_failed());
    /// let ok = group.try_work(&200, || async { Ok("ok".to_string()) }).await.unwrap();
    /// assert_eq!(ok.value(), "ok");
    /// # });
    /// ```
    pub fn try_work<'a, Q, F, Fut>(&'a self, key: &'a Q, work: F) -> TryWork<'a, Self, Q, F>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        TryWork::new(Work::new(self, key, TryStart(work), Lead::Inline))
    }
}

impl<K, T, E, S> Group<K, Result<T, StdArc<E>>, S, Shared>
where
    K: Hash + Eq,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    S: BuildHasher,
{
    /// The fallible form of the shared group's [`work`](Group#method.work-1).
    ///
    /// # Cancel safety
    ///
    /// As for [`work`](Group#method.work-1).
    ///
    /// # Panics
    ///
    /// As for [`work`](Group#method.work-1).
    ///
    /// # Examples
    ///
    /// ```
    /// # futures_lite::future::block_on(async {
    /// let group = coalescer::TryGroup::<u64, u64, std::io::Error>::new().shared();
    /// let v = group.try_work(&1, || async { Ok(1) }).await.unwrap();
    /// assert_eq!(*v.value(), 1);
    /// # });
    /// ```
    pub fn try_work<'a, Q, F, Fut>(&'a self, key: &'a Q, work: F) -> TryWork<'a, Self, Q, F>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        TryWork::new(Work::new(self, key, TryStart(work), Lead::Shared(SharedOps::new())))
    }
}

impl<K, T, E, S, Sp> Group<K, Result<T, StdArc<E>>, S, Detached<Sp>>
where
    K: Hash + Eq + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
    Sp: Spawn + Send + Sync + 'static,
{
    /// The fallible form of the detached group's [`work`](Group#method.work-2): an `Err` is
    /// shared with the callers of the flight (behind an `Arc`) and never retained.
    ///
    /// # Cancel safety
    ///
    /// As for [`work`](Group#method.work-2).
    ///
    /// # Panics
    ///
    /// As for [`work`](Group#method.work-2).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[derive(Clone)]
    /// # struct OnThread;
    /// # impl coalescer::Spawn for OnThread {
    /// #     type Task = std::thread::JoinHandle<()>;
    /// #     fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, task: F) -> Self::Task {
    /// #         std::thread::spawn(move || futures_lite::future::block_on(task))
    /// #     }
    /// #     fn aborts_when_abandoned(&self) -> bool { false }
    /// # }
    /// let group = std::sync::Arc::new(coalescer::TryGroup::<u8, u8, String>::new().detached(OnThread));
    /// let call = group.try_work(&1, || async { Err("down".to_string()) });
    /// let err = futures_lite::future::block_on(call).unwrap_err();
    /// assert_eq!(err.failure().map(String::as_str), Some("down"));
    /// ```
    pub fn try_work<'a, Q, F, Fut>(self: &'a StdArc<Self>, key: &'a Q, work: F) -> TryWork<'a, Self, Q, F>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        TryWork::new(self.detached_call(key, TryStart(work)))
    }
}

impl<K: Hash + Eq, T: Clone, E, S: BuildHasher, M> Group<K, Result<T, StdArc<E>>, S, M> {
    /// The fallible form of [`work_blocking`](Self::work_blocking).
    ///
    /// # Panics
    ///
    /// As for [`work_blocking`](Self::work_blocking).
    ///
    /// # Examples
    ///
    /// ```
    /// let group = coalescer::TryGroup::<String, u32, std::num::ParseIntError>::new();
    /// let err = group.try_work_blocking("x", || "x".parse::<u32>()).unwrap_err();
    /// assert!(err.failure().is_some());
    /// ```
    pub fn try_work_blocking<Q>(
        &self,
        key: &Q,
        work: impl FnOnce() -> Result<T, E>,
    ) -> Result<Outcome<T>, Error<E>>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        split_try(crate::blocking::run(self, key, || work().map_err(StdArc::new)))
    }
}

impl<K: Hash + Eq, V, S: BuildHasher, M> sealed::Sealed for Group<K, V, S, M> {}

impl<K: Hash + Eq, V, S: BuildHasher, M> Table for Group<K, V, S, M> {
    type Key = K;
    type Value = V;

    fn join<Q>(&self, key: &Q, mode: Mode<V>, _: sealed::Token) -> Joined<V>
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        let hash = self.hasher.hash_one(key); // the key's `Hash`: before any lock
        loop {
            // A shared (read) lock of the bucket: joins of one key do not exclude each other
            // (the count is an atomic), and every decision about the count (a leave, the last
            // one out, a removal) takes the exclusive lock, which waits for the readers to go.
            // On a miss it is cheaper than the exclusive lock, and a leader always misses.
            let found = self.map.read_sync(&ByKey { hash, key }, |_, flight| {
                let closing = flight.load().is_closing();
                if !closing {
                    flight.join();
                }
                (flight.clone(), closing)
            });
            if let Some((flight, closing)) = found {
                return if closing { Joined::Closing(flight) } else { Joined::Follow(flight) };
            }
            // The leader's owned key: the key's `Clone` (or `ToOwned`), outside any lock, and
            // before the permit (a panic here leaves nothing to give back).
            let owned = key.to_owned();
            let permit = match &self.limit {
                None => false,
                Some(limit) if limit.acquire() => true,
                Some(limit) => {
                    self.stats.record(Event::Overflow, None);
                    return match limit.when_full() {
                        WhenFull::Reject => Joined::Full(limit.max()),
                        // A flight of its own, never in the map: nobody can join it.
                        WhenFull::RunAlone => {
                            drop(owned);
                            Joined::Lead(arc_in_place(|| {
                                Flight::new(mode, hash, false, FlightObs::default())
                            }))
                        }
                    };
                }
            };
            // Nobody watches it yet: its leader gives it its span after winning the insert.
            let flight = arc_in_place(|| Flight::new(mode, hash, permit, FlightObs::default()));
            let id = Arc::as_ptr(&flight) as usize;
            match self.map.insert_sync(Slot { hash, id, key: owned }, flight.clone()) {
                Ok(()) => return Joined::Lead(flight),
                // Another caller inserted a flight for the key meanwhile: join that one. The
                // owned key comes back, to be dropped outside the lock; so does the permit.
                Err((slot, _)) => {
                    if let Some(limit) = &self.limit {
                        if flight.take_permit() {
                            limit.release();
                        }
                    }
                    drop(slot);
                }
            }
        }
    }

    fn watch<Q>(&self, flight: &Arc<Flight<V>>, key: &Q, _: sealed::Token) -> bool
    where
        K: Borrow<Q>,
        Q: ?Sized + Hash + Eq + ToOwned<Owned = K>,
    {
        flight.obs().set(self.obs(key))
    }

    fn with_current<D: FnMut(bool) -> bool>(&self, flight: &Arc<Flight<V>>, mut decide: D, _: sealed::Token) {
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

impl<K, V, S, M> fmt::Debug for Group<K, V, S, M>
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A hasher of [`DefaultHashBuilder`]'s family with a chosen seed (its global part too,
    /// which a process draws once): change the two together.
    fn seeded(seed: u64) -> impl BuildHasher + Clone {
        let shared: &'static foldhash::SharedSeed = Box::leak(Box::new(foldhash::SharedSeed::from_u64(seed)));
        foldhash::quality::SeedableRandomState::with_seed(seed.rotate_left(17), shared)
    }

    /// scc picks a key's bucket from the top bits of its hash, and a cache's bucket evicts
    /// when its 32 slots are full: with a hasher whose top bits vary little over small integer
    /// keys, a cache of 4,096 entries evicted some of its first 100 keys (about one process in
    /// 2,000 drew such a seed; `jitter_spreads_the_expiries_of_keys_written_together` failed
    /// that way).
    #[test]
    fn the_default_hasher_spreads_small_integer_keys_over_scc_buckets_for_every_seed() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..8_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let seed = x ^ (x >> 29);
            let cache = scc::HashCache::with_capacity_and_hasher(4096, 4096, seeded(seed));
            let evicted = (0..100_u32).filter(|&k| matches!(cache.put_sync(k, ()), Ok(Some(_)))).count();
            assert_eq!(
                evicted, 0,
                "seed {seed:#x} (round {round}): 100 keys in a cache of 4,096 evicted {evicted}"
            );
        }
    }
}
