//! Benchmarks of `coalescer` against mutex-based designs and published coalescers.
//!
//! Every async competitor implements [`Coalesce`] once, every blocking one [`CoalesceBlocking`];
//! each scenario in [`scenario`] is written once against those traits, and [`each_async`] /
//! [`each_blocking`] run a scenario for every competitor in the same benchmark group, in the
//! same process, so that ratios hold on a noisy machine (the flume/papaya pattern).
//!
//! | competitor | type | what it is |
//! |---|---|---|
//! | `coalescer work` | [`CoalescerWork`] | `Group::work`: the work runs in the leader's future; a dropped leader promotes a follower |
//! | `coalescer work_shared` | [`CoalescerShared`] | `Group::work_shared`: the flight owns the work, any waiter drives it |
//! | `coalescer detached (tokio)` | [`CoalescerDetached`] | a group made `.detached(coalescer_tokio::Tokio::detach())`: the work is a spawned task that outlives its callers |
//! | `std Mutex+HashMap` | [`StdMutexGroup`] | the baseline: `std::sync::Mutex<HashMap<K, Arc<Slot>>>` + `event-listener` |
//! | `parking_lot Mutex+HashMap` | [`ParkingLotGroup`] | the same with `parking_lot::Mutex` |
//! | `async_singleflight` | [`AsyncSingleflight`] | crate `async_singleflight`: tokio `Mutex<HashMap>` + `watch` channels |
//! | `singleflight-async` | [`SingleflightAsync`] | crate `singleflight-async`: `parking_lot` map + a tokio `Mutex` per flight |
//! | `moka get_with` | [`MokaGetWith`] | `moka::future::Cache::get_with`, invalidated after each call or round |
//!
//! Adding a competitor is one more impl of [`Coalesce`] and one more line in [`each_async`].

use core::future::Future;
use core::hash::{BuildHasher, Hash};

mod coalescer_impl;
pub mod counting;
pub mod mutex;
mod published;
pub mod scenario;

pub use coalescer_impl::{CoalescerDetached, CoalescerShared, CoalescerWork};
pub use mutex::{MutexGroup, ParkingLotGroup, StdMutexGroup};
pub use published::{AsyncSingleflight, MokaGetWith, SingleflightAsync};

/// How many keys every competitor is sized for (where it can be sized at all): the same as
/// `coalescer::DEFAULT_CAPACITY`, so that no map grows or shrinks during a run.
pub const CAPACITY: usize = 128;

/// A key type of the benchmarks: `u64` (the default: the scenarios measure the coalescing
/// machinery, not hashing or cloning) or `String` (what a service keys by: each call makes its
/// own `String` and lends it to the competitor).
pub trait BenchKey: Hash + Eq + Clone + Send + Sync + 'static {
    /// The key type's name in tables.
    const LABEL: &'static str;

    /// The key numbered `n` (distinct numbers give distinct keys).
    fn fresh(n: u64) -> Self;
}

impl BenchKey for u64 {
    const LABEL: &'static str = "u64";

    fn fresh(n: u64) -> Self {
        n
    }
}

impl BenchKey for String {
    const LABEL: &'static str = "String";

    /// `"key:"` and `n` in 16 hex digits: 20 bytes, one allocation, no formatting machinery.
    fn fresh(n: u64) -> Self {
        let mut key = String::with_capacity(20);
        key.push_str("key:");
        for shift in (0..16).rev() {
            let digit = ((n >> (shift * 4)) & 0xf) as u32;
            key.push(char::from_digit(digit, 16).unwrap_or('0'));
        }
        key
    }
}

/// A hasher the designs can be given, labelled for the tables: coalescer's default
/// (`foldhash::quality::RandomState`, "foldhash") and std's (`RandomState`, SipHash-1-3), so that
/// both designs are measured with the same hasher *and* each with its own default.
pub trait BenchHasher: BuildHasher + Default + Clone + Send + Sync + 'static {
    /// The hasher's name in tables.
    const LABEL: &'static str;
    /// Whether it is coalescer's default (otherwise it is std's, the mutex design's default).
    const COALESCER_DEFAULT: bool;
}

impl BenchHasher for coalescer::DefaultHashBuilder {
    const LABEL: &'static str = "foldhash";
    const COALESCER_DEFAULT: bool = true;
}

impl BenchHasher for std::collections::hash_map::RandomState {
    const LABEL: &'static str = "SipHash";
    const COALESCER_DEFAULT: bool = false;
}

/// std's default hasher (SipHash-1-3, randomly keyed): the mutex design's default.
pub type SipHash = std::collections::hash_map::RandomState;

/// coalescer's default hasher (`foldhash::quality::RandomState`).
pub type FoldHash = coalescer::DefaultHashBuilder;

/// The async interface every competitor implements once.
///
/// The value is `u64`; the key is [`Self::Key`] (`u64` in every timed scenario but S1's
/// `String` rows). The work is `Send + 'static` because some competitors (shared work, moka's
/// `Send` futures) need it; the scenarios' work captures only `&'static` state.
pub trait Coalesce: Send + Sync + Sized + 'static {
    /// The competitor's name in benchmark ids and tables.
    const NAME: &'static str;

    /// The hasher it runs with ([`BenchHasher::LABEL`]), or `"own"` for a crate that takes none.
    const HASHER: &'static str;

    /// Whether [`Self::HASHER`] is what the competitor uses by default.
    const DEFAULT_HASHER: bool;

    /// Whether [`Coalesce::reset`] does anything (moka only): the scenarios skip it otherwise,
    /// so that no key is cloned for it.
    const RESETS: bool = false;

    /// The key type.
    type Key: BenchKey;

    /// A competitor sized for `capacity` keys in flight (ignored where it cannot be sized).
    fn with_capacity(capacity: usize) -> Self;

    /// Runs `work` once for all concurrent calls with `key`; every caller gets its value.
    ///
    /// The future does nothing until it is first polled (competitors that join eagerly are
    /// called from an `async fn`), so that a benchmark can create futures outside the measured
    /// section.
    fn call<F, Fut>(&self, key: Self::Key, work: F) -> impl Future<Output = u64> + Send + '_
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static;

    /// Makes `key` start a new flight on the next call. A no-op for every coalescer; moka is a
    /// cache, so it invalidates the key (after each call in S1/S4, after each round in S2/S3).
    fn reset<'a>(&'a self, key: &'a Self::Key) -> impl Future<Output = ()> + Send + 'a {
        let _ = key;
        async {}
    }
}

/// The competitor's name with its key type and hasher, for the tables that vary them.
pub fn label<C: Coalesce>() -> String {
    let default = if C::DEFAULT_HASHER { ", its default" } else { "" };
    format!("{} [{} keys, {}{default}]", C::NAME, <C::Key as BenchKey>::LABEL, C::HASHER)
}

/// The blocking interface (plain threads park while they wait).
pub trait CoalesceBlocking: Send + Sync + Sized + 'static {
    /// The competitor's name in benchmark ids and tables.
    const NAME: &'static str;

    /// A competitor sized for `capacity` keys in flight.
    fn with_capacity(capacity: usize) -> Self;

    /// Runs `work` once for all concurrent calls with `key` on this thread or another.
    fn call_blocking(&self, key: u64, work: impl FnOnce() -> u64) -> u64;
}

/// Something to do with every async competitor (a generic closure, which Rust lacks).
pub trait Visit {
    /// Called once per competitor, in the order of [`each_async`].
    fn visit<C: Coalesce<Key = u64>>(&mut self);
}

/// Something to do with competitors of any key type and hasher ([`each_variant`],
/// [`each_string`]).
pub trait VisitAny {
    /// Called once per competitor.
    fn visit<C: Coalesce>(&mut self);
}

/// Something to do with every blocking competitor.
pub trait VisitBlocking {
    /// Called once per competitor, in the order of [`each_blocking`].
    fn visit<C: CoalesceBlocking>(&mut self);
}

/// Visits every async competitor with `u64` keys and its default hasher, coalescer's modes
/// first: the set of the timed scenarios.
pub fn each_async(v: &mut impl Visit) {
    v.visit::<CoalescerWork>();
    v.visit::<CoalescerShared>();
    v.visit::<CoalescerDetached>();
    v.visit::<StdMutexGroup>();
    v.visit::<ParkingLotGroup>();
    v.visit::<AsyncSingleflight>();
    v.visit::<SingleflightAsync>();
    v.visit::<MokaGetWith>();
}

/// Visits every async competitor with keys of type `K`: coalescer's modes and the mutex designs
/// each with both hashers (foldhash and SipHash), the published crates with their own: the set
/// of the instruction counts (`src/bin/instructions.rs`).
pub fn each_variant<K: BenchKey>(v: &mut impl VisitAny) {
    v.visit::<CoalescerWork<K, FoldHash>>();
    v.visit::<CoalescerWork<K, SipHash>>();
    v.visit::<CoalescerShared<K, FoldHash>>();
    v.visit::<CoalescerShared<K, SipHash>>();
    v.visit::<CoalescerDetached<K, FoldHash>>();
    v.visit::<CoalescerDetached<K, SipHash>>();
    v.visit::<StdMutexGroup<K, u64, SipHash>>();
    v.visit::<StdMutexGroup<K, u64, FoldHash>>();
    v.visit::<ParkingLotGroup<K, u64, SipHash>>();
    v.visit::<ParkingLotGroup<K, u64, FoldHash>>();
    v.visit::<AsyncSingleflight<K>>();
    v.visit::<SingleflightAsync<K>>();
    v.visit::<MokaGetWith<K>>();
}

/// Visits the competitors of S1's `String` rows (each with its default hasher): coalescer's
/// `work` and `work_shared` and the two mutex designs.
pub fn each_string(v: &mut impl VisitAny) {
    v.visit::<CoalescerWork<String>>();
    v.visit::<CoalescerShared<String>>();
    v.visit::<StdMutexGroup<String>>();
    v.visit::<ParkingLotGroup<String>>();
}

/// Visits every blocking competitor: coalescer's `work_blocking` and the two mutex designs.
pub fn each_blocking(v: &mut impl VisitBlocking) {
    v.visit::<CoalescerWork>();
    v.visit::<StdMutexGroup>();
    v.visit::<ParkingLotGroup>();
}
