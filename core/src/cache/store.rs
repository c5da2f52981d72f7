//! [`Inner`]: the cache's state, and every write to its map.
//!
//! # Locking
//!
//! The map is scc's [`HashCache`](scc::HashCache): per-bucket locks, a bucket evicting its
//! least recently written entry when full. A read takes its bucket's shared lock to clone the
//! slot's `Arc`; a write takes the exclusive lock to compare generations and swap the `Arc`.
//! No user code runs under a bucket lock except what scc itself runs there (the key's `Eq`),
//! and the key's `Hash` for an entry being evicted; values are cloned and dropped outside it.

use super::builder::Config;
use super::clock::{Clock, nanos};
use super::entry::{Slot, Stored, Ticket, Times};
use super::refresh::{BoxSleep, BoxSpawn};
use super::stats::{Count, Stats};
use crate::Group;
use crate::mode::Shared;
use scc::hash_cache::Entry;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// How many stripes of removal marks (see [`Inner::marks`]).
const MARKS: usize = 64;

/// The group's value: a load's result, its error shared behind an `Arc`.
pub(crate) type Loaded<V, E> = Result<V, Arc<E>>;

pub(crate) struct Inner<K, V, E, S: BuildHasher> {
    pub(crate) map: scc::HashCache<K, Arc<Slot<V, E>>, S>,
    /// Every load is a flight of this group (in an `Arc`: spawned refreshes outlive a call).
    pub(crate) group: Arc<Group<K, Loaded<V, E>, S, Shared>>,
    pub(crate) config: Config,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) random: Arc<dyn Fn() -> f64 + Send + Sync>,
    pub(crate) spawn: Option<BoxSpawn>,
    pub(crate) sleep: Option<BoxSleep>,
    pub(crate) stats: Stats,
    /// The last generation handed out (every write takes the next one).
    generations: AtomicU64,
    /// Per stripe of keys, the highest generation among the entries removed from the map
    /// (evicted, or an invalidation's tombstone cleared). A load that finds its key vacant
    /// writes back only if no entry newer than the load was removed from its stripe since:
    /// the removed entry might have been an `invalidate` or `insert` that must win.
    marks: Box<[AtomicU64]>,
    hasher: S,
}

impl<K, V, E, S> Inner<K, V, E, S>
where
    K: Hash + Eq + Clone,
    S: BuildHasher + Clone,
{
    #[allow(clippy::too_many_arguments)] // the builder's settings, handed over once
    pub(crate) fn new(
        capacity: usize,
        hasher: S,
        config: Config,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Fn() -> f64 + Send + Sync>,
        spawn: Option<BoxSpawn>,
        sleep: Option<BoxSleep>,
        name: Option<std::borrow::Cow<'static, str>>,
    ) -> Self {
        let mut group = Group::with_hasher(hasher.clone()).shared();
        if let Some(name) = &name {
            group = group.named(name.clone());
        }
        Self {
            map: scc::HashCache::with_capacity_and_hasher(capacity, capacity, hasher.clone()),
            group: Arc::new(group),
            config,
            clock,
            random,
            spawn,
            sleep,
            stats: Stats::named(name),
            generations: AtomicU64::new(0),
            marks: (0..MARKS).map(|_| AtomicU64::new(0)).collect(),
            hasher,
        }
    }

    /// The clock's reading, in nanoseconds.
    pub(crate) fn now(&self) -> u64 {
        nanos(self.clock.now())
    }

    /// The key's slot (a clone of its `Arc`, taken under the bucket's shared lock).
    pub(crate) fn slot(&self, key: &K) -> Option<Arc<Slot<V, E>>> {
        self.map.read_sync(key, |_, slot| slot.clone())
    }

    fn stripe(&self, key: &K) -> &AtomicU64 {
        &self.marks[(self.hasher.hash_one(key) % MARKS as u64) as usize]
    }

    /// The times of a value written at `now` by a load that took `load_nanos`.
    pub(crate) fn value_times(&self, now: u64, load_nanos: u64) -> Times {
        let c = &self.config;
        let jitter =
            if c.jitter == 0 { 0 } else { ((self.random)().clamp(0.0, 1.0) * c.jitter as f64) as u64 };
        let expires_at = now.saturating_add(c.ttl).saturating_add(jitter);
        let refresh_at = c.refresh_after.map_or(u64::MAX, |r| now.saturating_add(r).min(expires_at));
        Times { refresh_at, expires_at, stale_until: expires_at.saturating_add(c.max_stale), load_nanos }
    }

    /// Notes what a load starts from; counts the load.
    pub(crate) fn ticket(&self, key: &K) -> Ticket {
        self.stats.record(Count::Load);
        let epoch = self.generations.load(SeqCst);
        let seen = self.slot(key).map(|slot| slot.generation);
        Ticket { seen, epoch, started: self.now() }
    }

    /// Writes `stored` for `key` if `allowed` says so of the key's current slot (under the
    /// bucket lock). The slot's kept refresh, if `carry`, moves into the new slot. Returns the
    /// new generation, or gives `stored` back. Whatever is replaced or evicted is dropped
    /// after the lock is released.
    fn put(
        &self,
        key: K,
        stored: Stored<V, E>,
        times: Times,
        carry: bool,
        allowed: impl FnOnce(Option<&Slot<V, E>>) -> bool,
    ) -> Result<u64, Stored<V, E>> {
        let (replaced, evicted, result);
        match self.map.entry_sync(key) {
            scc::hash_cache::Entry::Occupied(mut entry) => {
                evicted = None;
                if allowed(Some(entry.get())) {
                    let generation = self.generations.fetch_add(1, SeqCst) + 1;
                    let new = Slot::new(stored, generation, times);
                    if carry {
                        if let Some(refresh) = entry.get().take_refresh() {
                            let _kept = new.keep(refresh);
                        }
                    }
                    replaced = Some(entry.put(Arc::new(new)));
                    result = Ok(generation);
                } else {
                    replaced = None;
                    result = Err(stored);
                }
            }
            Entry::Vacant(entry) => {
                replaced = None;
                if allowed(None) {
                    let generation = self.generations.fetch_add(1, SeqCst) + 1;
                    let (out, _occupied) = entry.put_entry(Arc::new(Slot::new(stored, generation, times)));
                    if let Some((key, slot)) = &out {
                        // Still under the bucket lock: a write-back for the evicted key waits.
                        self.stripe(key).fetch_max(slot.generation, SeqCst);
                    }
                    evicted = out;
                    result = Ok(generation);
                } else {
                    evicted = None;
                    result = Err(stored);
                }
            }
        }
        if evicted.is_some() {
            self.stats.record(Count::Eviction);
        }
        drop((replaced, evicted));
        result
    }

    /// A load's write-back: its value (or, with negative caching, its error) goes in only if
    /// nothing was written to the key since the load started. A failure without negative
    /// caching throttles the next load instead.
    pub(crate) fn write_back(&self, key: &K, ticket: Ticket, result: &Loaded<V, E>)
    where
        V: Clone,
    {
        let now = self.now();
        let load_nanos = now.saturating_sub(ticket.started);
        let (stored, times) = match result {
            Ok(value) => (Stored::Value(value.clone()), self.value_times(now, load_nanos)),
            Err(error) => match self.config.negative_ttl {
                Some(ttl) if !self.slot(key).is_some_and(|s| s.stale_usable(now)) => {
                    let expires_at = now.saturating_add(ttl);
                    let times =
                        Times { refresh_at: u64::MAX, expires_at, stale_until: expires_at, load_nanos };
                    (Stored::Negative(error.clone()), times)
                }
                _ => return self.throttle(key, ticket, now),
            },
        };
        let stripe = self.stripe(key);
        let allowed = |current: Option<&Slot<V, E>>| match current {
            Some(slot) => Some(slot.generation) == ticket.seen,
            None => stripe.load(SeqCst) <= ticket.epoch,
        };
        let rejected = self.put(key.clone(), stored, times, true, allowed).err();
        drop(rejected); // outside the lock
    }

    /// After a failed load: the next one waits `retry_after`, and a refresh may be tried again.
    fn throttle(&self, key: &K, ticket: Ticket, now: u64) {
        if let Some(slot) = self.slot(key).filter(|s| Some(s.generation) == ticket.seen) {
            slot.retry_at.store(now.saturating_add(self.config.retry_after), SeqCst);
            slot.refresh_claimed.store(false, SeqCst);
        }
    }

    /// `insert`: a value that wins over any load in the air.
    pub(crate) fn insert(&self, key: K, value: V) {
        let times = self.value_times(self.now(), 0);
        let forget = key.clone();
        let _ = self.put(key, Stored::Value(value), times, false, |_| true);
        self.group.forget(&forget);
    }

    /// `invalidate`: a tombstone keeps the value of a load in the air out; with no load in the
    /// air, the tombstone is removed at once (and marked, for loads detached earlier).
    pub(crate) fn invalidate(&self, key: &K) {
        let times = Times { refresh_at: u64::MAX, expires_at: 0, stale_until: 0, load_nanos: 0 };
        let Ok(tombstone) = self.put(key.clone(), Stored::Tombstone, times, false, |_| true) else {
            return;
        };
        if !self.group.forget(key) {
            let stripe = self.stripe(key);
            let removed = self.map.remove_if_sync(key, |slot| {
                let ours = slot.generation == tombstone;
                if ours {
                    stripe.fetch_max(tombstone, SeqCst);
                }
                ours
            });
            drop(removed);
        }
    }
}
