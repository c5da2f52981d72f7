//! The baseline the product is measured against: a mutex around a `HashMap<K, Arc<Slot<V>>, S>`,
//! with waiters sleeping on an `event-listener` event.
//!
//! It is written to be fair, not to lose:
//! - the map is pre-sized and never shrinks, so it does not reallocate as flights come and go;
//! - the map is `hashbrown`'s (std's `HashMap` is `hashbrown` inside), for its `entry_ref`:
//!   one hash per lookup, and the key is cloned only when a leader inserts it (a follower and
//!   the removal only borrow it), whatever the key type;
//! - its hasher is a type parameter: std's `RandomState` (SipHash) by default, as a user of
//!   `std::collections::HashMap` gets, or coalescer's foldhash for a same-hasher comparison;
//! - the lock is held for a lookup and an insert or a removal, never across an `.await`, never
//!   while user code runs (the `Arc` of a new slot is allocated under it, as coalescer allocates
//!   its flight under scc's bucket lock);
//! - the leader stores a clone of its value and notifies only when somebody else holds the
//!   slot (a leader with no followers neither clones nor touches the event, whose first use
//!   allocates);
//! - waiters check, listen, check again, then sleep (the eventcount pattern), so none misses
//!   the wake and none allocates a listener when the value is already there;
//! - removal compares identity (`Arc::ptr_eq`), so a stale leader never removes a newer slot;
//! - a leader dropped before its work finished (cancelled, or panicked) removes its slot, marks
//!   it abandoned and wakes the followers, which join again: one of them leads with its own
//!   closure (the restart behaviour of coalescer's `work` mode, and of Go after a panic).

use crate::{BenchHasher, BenchKey, Coalesce, CoalesceBlocking, SipHash};
use core::future::Future;
use core::hash::BuildHasher;
use core::hash::Hash;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};
use event_listener::{Event, Listener};
use hashbrown::hash_map::EntryRef;
use std::sync::{Arc, OnceLock, PoisonError};

/// One flight of the mutex design: the value once it is there, and the event its waiters sleep
/// on.
#[derive(Debug)]
pub struct Slot<V> {
    value: OnceLock<V>,
    abandoned: AtomicBool,
    event: Event,
}

/// The map the mutex guards.
pub type Map<K, V, S> = hashbrown::HashMap<K, Arc<Slot<V>>, S>;

/// A mutex over `T`, so that one design serves `std` and `parking_lot`.
pub trait Lock<T>: Send + Sync + 'static {
    /// The design's name in benchmark ids.
    const NAME: &'static str;
    /// Wraps `value`.
    fn new(value: T) -> Self;
    /// Runs `f` with the lock held.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
}

impl<T: Send + 'static> Lock<T> for std::sync::Mutex<T> {
    const NAME: &'static str = "std Mutex+HashMap";

    fn new(value: T) -> Self {
        std::sync::Mutex::new(value)
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // No user code runs under the lock, so a poisoned lock still guards a sound map.
        f(&mut self.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<T: Send + 'static> Lock<T> for parking_lot::Mutex<T> {
    const NAME: &'static str = "parking_lot Mutex+HashMap";

    fn new(value: T) -> Self {
        parking_lot::Mutex::new(value)
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }
}

/// The mutex-based coalescer, generic over the hasher `S` and the lock `L`.
pub struct MutexGroup<K, V, S, L> {
    map: L,
    _types: Types<K, V, S>,
}

/// The types a [`MutexGroup`] is for (it holds none of them itself but in `L`).
type Types<K, V, S> = PhantomData<fn() -> (K, V, S)>;

/// The mutex design with `std::sync::Mutex`.
pub type StdMutexGroup<K = u64, V = u64, S = SipHash> = MutexGroup<K, V, S, std::sync::Mutex<Map<K, V, S>>>;

/// The mutex design with `parking_lot::Mutex`.
pub type ParkingLotGroup<K = u64, V = u64, S = SipHash> =
    MutexGroup<K, V, S, parking_lot::Mutex<Map<K, V, S>>>;

impl<K, V, S, L> core::fmt::Debug for MutexGroup<K, V, S, L> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MutexGroup").finish_non_exhaustive()
    }
}

/// What a waiter found in its slot.
enum Seen<V> {
    Value(V),
    Abandoned,
}

impl<V: Clone> Slot<V> {
    fn new() -> Self {
        Self { value: OnceLock::new(), abandoned: AtomicBool::new(false), event: Event::new() }
    }

    fn check(&self) -> Option<Seen<V>> {
        if let Some(value) = self.value.get() {
            Some(Seen::Value(value.clone()))
        } else if self.abandoned.load(Ordering::Acquire) {
            Some(Seen::Abandoned)
        } else {
            None
        }
    }

    async fn wait(&self) -> Seen<V> {
        loop {
            if let Some(seen) = self.check() {
                return seen;
            }
            let listener = self.event.listen();
            if let Some(seen) = self.check() {
                return seen;
            }
            listener.await;
        }
    }

    fn wait_blocking(&self) -> Seen<V> {
        loop {
            if let Some(seen) = self.check() {
                return seen;
            }
            let listener = self.event.listen();
            if let Some(seen) = self.check() {
                return seen;
            }
            listener.wait();
        }
    }
}

/// The leader's hold on its slot: finishing publishes; dropping unfinished abandons.
struct Lead<'a, K: Hash + Eq + Clone, V: Clone, S: BuildHasher, L: Lock<Map<K, V, S>>> {
    group: &'a MutexGroup<K, V, S, L>,
    key: &'a K,
    slot: Arc<Slot<V>>,
    finished: bool,
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher, L: Lock<Map<K, V, S>>> Lead<'_, K, V, S, L> {
    fn finish(mut self, value: &V) {
        self.finished = true;
        self.group.remove(self.key, &self.slot);
        // Followers cloned the `Arc` under the lock, before the removal above, so the count
        // cannot miss one; a spurious extra count (a follower leaving) only costs a clone.
        if Arc::strong_count(&self.slot) > 1 {
            let _ = self.slot.value.set(value.clone());
            self.slot.event.notify(usize::MAX);
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone, S: BuildHasher, L: Lock<Map<K, V, S>>> Drop for Lead<'_, K, V, S, L> {
    fn drop(&mut self) {
        if !self.finished {
            self.group.remove(self.key, &self.slot);
            self.slot.abandoned.store(true, Ordering::Release);
            self.slot.event.notify(usize::MAX);
        }
    }
}

impl<K, V, S, L> MutexGroup<K, V, S, L>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher,
    L: Lock<Map<K, V, S>>,
{
    /// A group whose map is sized for `capacity` keys in flight.
    pub fn with_capacity(capacity: usize) -> Self
    where
        S: Default,
    {
        Self { map: L::new(Map::with_capacity_and_hasher(capacity, S::default())), _types: PhantomData }
    }

    /// Under the lock: follow the key's slot, or insert a new one (and a clone of the key) and
    /// lead it.
    fn join(&self, key: &K) -> (Arc<Slot<V>>, bool) {
        self.map.with(|map| match map.entry_ref(key) {
            EntryRef::Occupied(entry) => (entry.get().clone(), false),
            EntryRef::Vacant(entry) => {
                (entry.insert_with_key(key.clone(), Arc::new(Slot::new())).clone(), true)
            }
        })
    }

    /// Under the lock: removes `slot` if it is still the key's current one.
    fn remove(&self, key: &K, slot: &Arc<Slot<V>>) {
        self.map.with(|map| {
            if let EntryRef::Occupied(entry) = map.entry_ref(key) {
                if Arc::ptr_eq(entry.get(), slot) {
                    entry.remove();
                }
            }
        });
    }

    /// Runs `work` once for all concurrent calls with `key`; every caller gets a clone of its
    /// value. A dropped leader's followers join again, and one of them runs its own `work`.
    pub async fn work<F, Fut>(&self, key: K, work: F) -> V
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let mut work = Some(work);
        loop {
            let (slot, leader) = self.join(&key);
            if leader {
                let lead = Lead { group: self, key: &key, slot, finished: false };
                let value = (work.take().expect("a caller leads at most once"))().await;
                lead.finish(&value);
                return value;
            }
            if let Seen::Value(value) = slot.wait().await {
                return value;
            }
        }
    }

    /// [`work`](Self::work) for plain threads: followers park.
    pub fn work_blocking(&self, key: K, work: impl FnOnce() -> V) -> V {
        let mut work = Some(work);
        loop {
            let (slot, leader) = self.join(&key);
            if leader {
                let lead = Lead { group: self, key: &key, slot, finished: false };
                let value = (work.take().expect("a caller leads at most once"))();
                lead.finish(&value);
                return value;
            }
            if let Seen::Value(value) = slot.wait_blocking() {
                return value;
            }
        }
    }

    /// How many keys have a flight in the air.
    pub fn in_flight(&self) -> usize {
        self.map.with(|map| map.len())
    }
}

impl<K: BenchKey, S: BenchHasher, L: Lock<Map<K, u64, S>>> Coalesce for MutexGroup<K, u64, S, L> {
    const NAME: &'static str = L::NAME;
    const HASHER: &'static str = S::LABEL;
    const DEFAULT_HASHER: bool = !S::COALESCER_DEFAULT;
    type Key = K;

    fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity(capacity)
    }

    fn call<F, Fut>(&self, key: K, work: F) -> impl Future<Output = u64> + Send + '_
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static,
    {
        self.work(key, work)
    }
}

impl<S: BenchHasher, L: Lock<Map<u64, u64, S>>> CoalesceBlocking for MutexGroup<u64, u64, S, L> {
    const NAME: &'static str = L::NAME;

    fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity(capacity)
    }

    fn call_blocking(&self, key: u64, work: impl FnOnce() -> u64) -> u64 {
        self.work_blocking(key, work)
    }
}
