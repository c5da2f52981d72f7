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
//! | `coalescer detached (tokio)` | [`CoalescerDetached`] | `coalescer_tokio::GroupExt::work_spawned`: the work is a spawned task that outlives its callers |
//! | `std Mutex+HashMap` | [`StdMutexGroup`] | the baseline: `std::sync::Mutex<HashMap<K, Arc<Slot>>>` + `event-listener` |
//! | `parking_lot Mutex+HashMap` | [`ParkingLotGroup`] | the same with `parking_lot::Mutex` |
//! | `async_singleflight` | [`AsyncSingleflight`] | crate `async_singleflight`: tokio `Mutex<HashMap>` + `watch` channels |
//! | `singleflight-async` | [`SingleflightAsync`] | crate `singleflight-async`: `parking_lot` map + a tokio `Mutex` per flight |
//! | `moka get_with` | [`MokaGetWith`] | `moka::future::Cache::get_with`, invalidated after each call or round |
//!
//! Adding a competitor is one more impl of [`Coalesce`] and one more line in [`each_async`].

use core::future::Future;

mod coalescer_impl;
pub mod mutex;
mod published;
pub mod scenario;

pub use coalescer_impl::{CoalescerDetached, CoalescerShared, CoalescerWork};
pub use mutex::{MutexGroup, ParkingLotGroup, StdMutexGroup};
pub use published::{AsyncSingleflight, MokaGetWith, SingleflightAsync};

/// How many keys every competitor is sized for (where it can be sized at all): the same as
/// `coalescer::DEFAULT_CAPACITY`, so that no map grows or shrinks during a run.
pub const CAPACITY: usize = 128;

/// The async interface every competitor implements once.
///
/// The key and the value are `u64`: the scenarios measure the coalescing machinery, not hashing
/// or cloning. The work is `Send + 'static` because some competitors (shared work, moka's
/// `Send` futures) need it; the scenarios' work captures only `&'static` state.
pub trait Coalesce: Send + Sync + Sized + 'static {
    /// The competitor's name in benchmark ids and tables.
    const NAME: &'static str;

    /// A competitor sized for `capacity` keys in flight (ignored where it cannot be sized).
    fn with_capacity(capacity: usize) -> Self;

    /// Runs `work` once for all concurrent calls with `key`; every caller gets its value.
    ///
    /// The future does nothing until it is first polled (competitors that join eagerly are
    /// called from an `async fn`), so that a benchmark can create futures outside the measured
    /// section.
    fn call<F, Fut>(&self, key: u64, work: F) -> impl Future<Output = u64> + Send + '_
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = u64> + Send + 'static;

    /// Makes `key` start a new flight on the next call. A no-op for every coalescer; moka is a
    /// cache, so it invalidates the key (after each call in S1/S4, after each round in S2/S3).
    fn reset(&self, key: u64) -> impl Future<Output = ()> + Send + '_ {
        let _ = key;
        async {}
    }
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
    fn visit<C: Coalesce>(&mut self);
}

/// Something to do with every blocking competitor.
pub trait VisitBlocking {
    /// Called once per competitor, in the order of [`each_blocking`].
    fn visit<C: CoalesceBlocking>(&mut self);
}

/// Visits every async competitor, coalescer's modes first.
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

/// Visits every blocking competitor: coalescer's `work_blocking` and the two mutex designs.
pub fn each_blocking(v: &mut impl VisitBlocking) {
    v.visit::<CoalescerWork>();
    v.visit::<StdMutexGroup>();
    v.visit::<ParkingLotGroup>();
}
